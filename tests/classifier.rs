//! The text classifier as a user meets it, through the real binary: `rnnlab fit` on the CSV
//! shipped in tests/data (it learns, and writes what it says), malformed CSV files (one clear
//! line with the line number, exit status 2, nothing written), and
//! `rnnlab experiment seed-classifier --quick` (every chart and CSV, the LSTM beats the RNN,
//! the CSVs do not depend on --jobs, `rnnlab plot` redraws the same summary).

mod common;
use common::rnnlab;

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A small version of the Keras stack for the 180-review CSV.
const SMALL_MODEL: &str = "model.layers=[{kind=\"embedding\",vocab=100,dim=16},{kind=\"recurrent\",units=16,bidirectional=true,return_sequences=true},{kind=\"dropout\",rate=0.2},{kind=\"recurrent\",units=8},{kind=\"dense\",units=3}]";

#[test]
fn fit_learns_the_shipped_csv_and_writes_history_and_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let csv = data("reviews.csv");
    let args = [
        "fit",
        "--data",
        &csv,
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--vocab",
        "100",
        "--seq-len",
        "30",
        "--epochs",
        "14",
        "--threads",
        "1",
        "--set",
        SMALL_MODEL,
        "--set",
        "fit.lr=0.01",
        "--set",
        "fit.patience=0",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = rnnlab(&args, tmp.path());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("Overriding: fit.epochs = 14"), "{stdout}");
    assert!(stdout.contains("Epoch 14/14"), "{stdout}");
    for f in [
        "history.csv",
        "history.png",
        "best.safetensors",
        "vocab.txt",
        "run.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let mut r = csv::Reader::from_path(out.join("history.csv")).unwrap();
    let rows: Vec<Vec<f64>> = r
        .records()
        .map(|rec| rec.unwrap().iter().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 14);
    let best_val_acc = rows.iter().map(|r| r[4]).fold(0.0, f64::max);
    assert!(
        best_val_acc >= 0.8,
        "validation accuracy only {best_val_acc} (chance ~0.33)"
    );
    assert!(rows[13][1] < rows[0][1], "training loss should fall");
    let vocab = std::fs::read_to_string(out.join("vocab.txt")).unwrap();
    assert!(vocab.starts_with("<pad>\n<unk>\n") && vocab.lines().count() <= 100);
    // the checkpoint rebuilds the model alone
    let m = rnnlab::seq::checkpoint::load(&out.join("best.safetensors")).unwrap();
    assert_eq!(m.spec.classes(), 3);
    // same seed, same numbers
    let again = tmp.path().join("again");
    let mut args2 = args.to_vec();
    let last = args2.len() - 1;
    args2[last] = again.to_str().unwrap();
    assert!(rnnlab(&args2, tmp.path()).status.success());
    let m2 = rnnlab::seq::checkpoint::load(&again.join("best.safetensors")).unwrap();
    assert!(m == m2, "the same seed must give the same weights");
}

#[test]
fn malformed_csv_files_get_one_line_with_the_line_number() {
    let cases: [(&str, &str); 6] = [
        ("", "is empty"),
        ("text,label\n", "has a header but no rows"),
        (
            "words,label\nfine film,0\n",
            "line 1: no column `text` (given by --text-column); the header has `words`, `label`",
        ),
        (
            "text,label\ngood,1\nbad,0\nmeh,two\n",
            "line 4: label `two` is not a class id",
        ),
        ("text,label\ngood,1\nbad,\n", "line 3: the label is empty"),
        (
            "text,label\ngood,1\nbad, sad,0\n",
            "line 3: this row has 3 field(s) but the header has 2",
        ),
    ];
    for (content, expect) in cases {
        let inputs = tempfile::tempdir().unwrap();
        let file = inputs.path().join("bad.csv");
        std::fs::write(&file, content).unwrap();
        let cwd = tempfile::tempdir().unwrap();
        let out = rnnlab(&["fit", "--data", file.to_str().unwrap()], cwd.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{content:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{content:?}: {err}");
        assert!(
            err.contains(expect) && err.contains("bad.csv"),
            "{content:?}: {err}"
        );
        assert_eq!(
            std::fs::read_dir(cwd.path()).unwrap().count(),
            0,
            "files left behind"
        );
    }
    // other bad requests
    let cwd = tempfile::tempdir().unwrap();
    for (args, expect) in [
        (
            vec!["fit", "--preset", "keras-gru2"],
            "unknown preset `keras-gru2`",
        ),
        (vec!["fit", "--epochs", "0"], "fit.epochs = 0 is invalid"),
        (vec!["fit", "--data", "nope.csv"], "cannot read nope.csv"),
        (vec!["fit", "--cell", "lstn"], "invalid value 'lstn'"),
        (vec!["fit", "--threads", "0"], "--threads 0 is invalid"),
    ] {
        let out = rnnlab(&args, cwd.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[test]
fn quick_seed_classifier_shows_the_lstm_carrying_the_key_and_the_rnn_not() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |jobs: &str, out: &str| {
        let o = rnnlab(
            &[
                "experiment",
                "seed-classifier",
                "--quick",
                "--jobs",
                jobs,
                "--out",
                out,
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        tmp.path().join(out)
    };
    let a = run("1", "a");
    let charts = ["accuracy_vs_distance", "embedding_grads", "history"];
    common::assert_charts(&a, &charts);
    for chart in charts {
        assert!(a.join(format!("{chart}.csv")).exists(), "{chart}.csv");
    }
    for f in ["summary.md", "run.json", "config.toml"] {
        assert!(a.join(f).exists(), "{f} missing");
    }
    // far keys (the last third of the distances): the LSTM finds them, the RNN is near chance
    let mut r = csv::Reader::from_path(a.join("accuracy_vs_distance.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|c| c == n).unwrap();
    let (cell, lo, acc) = (col("cell"), col("distance_lo"), col("accuracy"));
    let far = |which: &str| {
        let v: Vec<f64> = csv::Reader::from_path(a.join("accuracy_vs_distance.csv"))
            .unwrap()
            .records()
            .map(|rec| rec.unwrap())
            .filter(|rec| &rec[cell] == which && rec[lo].parse::<usize>().unwrap() >= 20)
            .map(|rec| rec[acc].parse().unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (lstm, rnn) = (far("lstm"), far("rnn"));
    assert!(
        lstm > 0.8 && rnn < 0.5,
        "far-key accuracy: LSTM {lstm}, RNN {rnn} (chance 0.25)"
    );
    // the CSVs do not depend on the number of workers; plot redraws the same summary
    let b = run("2", "b");
    for f in [
        "accuracy_vs_distance.csv",
        "embedding_grads.csv",
        "history.csv",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let before = std::fs::read_to_string(a.join("summary.md")).unwrap();
    let o = rnnlab(&["plot", a.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(a.join("summary.md")).unwrap(),
        before
    );
}
