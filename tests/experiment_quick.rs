//! `rnnlab experiment vanishing --quick`, run as a user would (the real binary), into a
//! temporary folder: every chart and its CSV are there, the numbers say what they should, and
//! the CSVs are byte-identical whatever `--jobs` is. `rnnlab plot` redraws from the CSVs.

mod common;
use common::rnnlab;

const CHARTS: [&str; 9] = [
    "grad_vs_distance",
    "heatmap_rnn",
    "heatmap_lstm",
    "heatmap_gru",
    "lstm_memory",
    "accuracy_adding",
    "loss_adding",
    "accuracy_copy",
    "loss_copy",
];

/// (distance, dh_norm) of one model in one panel of grad_vs_distance.csv.
fn profile(csv_text: &str, panel: &str, model: &str) -> Vec<(usize, f64)> {
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (p, m, d, g) = (col("panel"), col("model"), col("distance"), col("dh_norm"));
    r.records()
        .map(|rec| rec.unwrap())
        .filter(|rec| &rec[p] == panel && &rec[m] == model)
        .map(|rec| (rec[d].parse().unwrap(), rec[g].parse().unwrap()))
        .collect()
}

#[test]
fn quick_vanishing_writes_every_chart_and_shows_the_vanishing_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("v1");
    let run = rnnlab(
        &[
            "experiment",
            "vanishing",
            "--quick",
            "--jobs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    common::assert_charts(&out, &CHARTS);
    for chart in CHARTS {
        assert!(
            out.join(format!("{chart}.csv")).exists(),
            "{chart}.csv missing"
        );
    }
    for f in ["summary.md", "run.json", "config.toml"] {
        assert!(out.join(f).exists(), "{f} missing");
    }

    // The RNN's gradient falls by orders of magnitude over the sequence; the LSTM's by far less.
    let grads = std::fs::read_to_string(out.join("grad_vs_distance.csv")).unwrap();
    let decay = |model: &str| {
        let p = profile(&grads, "init", model);
        let at = |d: usize| p.iter().find(|(x, _)| *x == d).unwrap().1;
        let far = p.iter().map(|(d, _)| *d).max().unwrap();
        assert!(far >= 25, "probe sequence too short");
        at(far) / at(0)
    };
    let (rnn, lstm) = (decay("rnn"), decay("lstm"));
    assert!(rnn < 1e-6, "RNN gradient should vanish: ratio {rnn:e}");
    assert!(
        lstm > 1e3 * rnn,
        "LSTM gradient should survive far better: LSTM {lstm:e} vs RNN {rnn:e}"
    );
    // The GRU is probed too; after training its gradient reaches far back (its update gate
    // learns to keep the state).
    let gru = profile(&grads, "trained", "gru");
    let (near, far) = (gru.iter().find(|p| p.0 == 0).unwrap().1, gru[0].1);
    assert!(far / near > 1e-3, "trained GRU: ratio {:e}", far / near);
    // … because its update gate z (the share of h_{t−1} kept) rose from σ(≈0) ≈ 0.5.
    let memory = std::fs::read_to_string(out.join("lstm_memory.csv")).unwrap();
    let mean_z = |panel: &str| {
        let mut r = csv::Reader::from_reader(memory.as_bytes());
        let h = r.headers().unwrap().clone();
        let col = |name: &str| h.iter().position(|c| c == name).unwrap();
        let (m, p, g) = (col("model"), col("panel"), col("keep_gate"));
        let z: Vec<f64> = r
            .records()
            .map(|rec| rec.unwrap())
            .filter(|rec| &rec[m] == "gru" && &rec[p] == panel)
            .map(|rec| rec[g].parse().unwrap())
            .collect();
        z.iter().sum::<f64>() / z.len() as f64
    };
    let (z0, z1) = (mean_z("init"), mean_z("trained"));
    assert!(
        (z0 - 0.5).abs() < 0.05 && z1 > z0 + 0.1,
        "GRU update gate {z0} → {z1}"
    );
    // The saved checkpoints and probe batch reproduce the chart's numbers with `rnnlab probe`
    // (the same files load into PyTorch: tests/reference/torch_interop.py).
    let probes = tempfile::tempdir().unwrap();
    for model in ["rnn", "lstm", "gru"] {
        for panel in ["init", "trained"] {
            let ckpt = out.join(format!("checkpoints/{model}_{panel}.safetensors"));
            let probe_out = probes.path().join(format!("{model}_{panel}"));
            #[rustfmt::skip]
            let run = rnnlab(
                &["probe", "--task", "adding", "--model", model, "--seq-len", "30", "--hidden", "32",
                  "--checkpoint", ckpt.to_str().unwrap(),
                  "--batch-file", out.join("checkpoints/probe_batch.safetensors").to_str().unwrap(),
                  "--out", probe_out.to_str().unwrap()],
                tmp.path(),
            );
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            let csv_text = std::fs::read_to_string(probe_out.join("grad_norms.csv")).unwrap();
            let mut r = csv::Reader::from_reader(csv_text.as_bytes());
            let replayed: Vec<(usize, f64)> = r
                .records()
                .map(|rec| rec.unwrap())
                .map(|rec| (rec[1].parse().unwrap(), rec[2].parse().unwrap()))
                .collect();
            let mut charted = profile(&grads, panel, model);
            charted.sort_by_key(|p| std::cmp::Reverse(p.0));
            assert_eq!(replayed.len(), charted.len(), "{model} {panel}");
            for ((d1, a), (d2, b)) in replayed.iter().zip(&charted) {
                assert_eq!(d1, d2);
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs(),
                    "{model} {panel} d={d1}: {a} vs {b}"
                );
            }
        }
    }

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("grad_vs_distance.png")
            && summary.contains("| RNN |")
            && summary.contains("| GRU |"),
        "{summary}"
    );

    // Same seeds, two workers: byte-identical CSVs.
    let out2 = tmp.path().join("v2");
    let run = rnnlab(
        &[
            "experiment",
            "vanishing",
            "--quick",
            "--jobs",
            "2",
            "--out",
            out2.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(run.status.success());
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name();
        if name.to_string_lossy().ends_with(".csv") {
            assert_eq!(
                std::fs::read(out.join(&name)).unwrap(),
                std::fs::read(out2.join(&name)).unwrap(),
                "{name:?} differs with --jobs 2"
            );
        }
    }

    // `plot` redraws from the CSVs alone.
    for chart in CHARTS {
        std::fs::remove_file(out.join(format!("{chart}.png"))).unwrap();
    }
    let plot = rnnlab(&["plot", out.to_str().unwrap()], tmp.path());
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );
    for chart in CHARTS {
        assert!(
            out.join(format!("{chart}.png")).exists(),
            "plot did not redraw {chart}.png"
        );
    }
    // Nothing but the two result folders was written.
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["v1", "v2"]);
}

#[test]
fn experiment_list_and_bad_definitions() {
    let tmp = tempfile::tempdir().unwrap();
    let list = rnnlab(&["experiment", "--list"], tmp.path());
    assert!(list.status.success());
    let listed = String::from_utf8_lossy(&list.stdout);
    for name in ["vanishing", "exploding", "seed-classifier"] {
        assert!(listed.lines().any(|l| l.starts_with(name)), "{listed}");
    }

    let bad = rnnlab(&["experiment", "nosuch"], tmp.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown experiment `nosuch`"));

    std::fs::create_dir(tmp.path().join("experiments")).unwrap();
    let text = rnnlab::experiment::config::BUILTIN[0]
        .1
        .replace("hidden = 64", "hidden = 64\nwidth = 3");
    std::fs::write(tmp.path().join("experiments/mine.toml"), text).unwrap();
    let bad = rnnlab(&["experiment", "mine"], tmp.path());
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown field `width`") && err.lines().count() == 1,
        "{err}"
    );
    let bad = rnnlab(
        &["experiment", "vanishing", "--set", "model.hidden=0"],
        tmp.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("model.hidden = 0 is invalid"));
    assert!(
        !tmp.path().join("plots").exists(),
        "a rejected run must not write anything"
    );
}
