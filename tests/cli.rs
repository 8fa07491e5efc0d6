//! The command line as a user meets it: every bad input gives one clear error line naming the
//! value, exit status 2, no panic and no file left behind; good commands write what they say.

mod common;
use common::rnnlab;

/// Asserts a usage error: exit 2, exactly one stderr line containing `expect`, nothing written.
/// Returns what the command printed on stdout.
fn assert_usage_error(args: &[&str], expect: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = rnnlab(args, tmp.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?}: expected one line, got:\n{err}"
    );
    assert!(err.contains(expect), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "{args:?} left files behind"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`assert_usage_error`] for a command that would work for minutes before it writes: it
/// must stop before doing anything, printing nothing on stdout either.
fn assert_rejected_up_front(args: &[&str], expect: &str) {
    let stdout = assert_usage_error(args, expect);
    assert!(stdout.is_empty(), "{args:?} started first:\n{stdout}");
}

const ADDING_LSTM: [&str; 5] = ["train", "--task", "adding", "--model", "lstm"];

fn train_with(extra: &[&str]) -> Vec<String> {
    ADDING_LSTM
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn bad_training_values_are_rejected() {
    for (extra, expect) in [
        (vec!["--seq-len", "0"], "--seq-len 0"),
        (
            vec!["--seq-len", "100", "--hidden", "0"],
            "--hidden 0 is invalid",
        ),
        (
            vec!["--seq-len", "100", "--batch", "0"],
            "--batch 0 is invalid",
        ),
        (vec!["--seq-len", "100", "--lr", "-1"], "--lr -1 is invalid"),
        (
            vec!["--seq-len", "100", "--threads", "0"],
            "--threads 0 is invalid",
        ),
        (
            vec!["--seq-len", "100", "--lr", "nan"],
            "--lr NaN is invalid",
        ),
        (
            vec!["--seq-len", "ten"],
            "invalid value 'ten' for '--seq-len <T>'",
        ),
        (vec![], "--seq-len T is required"),
    ] {
        let args = train_with(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_usage_error(&args, expect);
    }
    assert_usage_error(
        &[
            "train",
            "--task",
            "sorting",
            "--model",
            "lstm",
            "--seq-len",
            "10",
        ],
        "possible values: adding, copy",
    );
    assert_usage_error(
        &[
            "train",
            "--task",
            "adding",
            "--model",
            "transformer",
            "--seq-len",
            "10",
        ],
        "invalid value 'transformer'",
    );
    assert_usage_error(&["gradcheck", "--seq-len", "0"], "--seq-len 0 is invalid");
    for experiment in ["vanishing", "seed-classifier"] {
        assert_usage_error(
            &["experiment", experiment, "--quick", "--jobs", "0"],
            "--jobs 0 is invalid",
        );
    }
}

#[test]
fn unwritable_output_is_rejected_before_training() {
    assert_usage_error(
        &[
            "train",
            "--task",
            "adding",
            "--model",
            "rnn",
            "--seq-len",
            "10",
            "--out",
            "/proc/rnnlab/out",
        ],
        "cannot",
    );
    assert_usage_error(
        &[
            "train",
            "--task",
            "adding",
            "--model",
            "rnn",
            "--seq-len",
            "10",
            "--out",
            "o",
            "--save",
            "/proc/x/m.safetensors",
        ],
        "--save",
    );
}

/// An experiment whose output folder cannot be written stops before it prints or runs
/// anything, with the usage exit code like every other command.
#[test]
fn experiments_with_an_unwritable_out_are_rejected_before_running() {
    for name in ["vanishing", "exploding", "seed-classifier"] {
        let args = ["experiment", name, "--quick", "--out", "/proc/rnnlab-out"];
        assert_rejected_up_front(&args, "cannot write into /proc");
    }
}

/// `rnnlab fit` checks its output folder before it reads the data (which may be a large
/// CSV): here the data is missing too, and the folder is what it reports.
#[test]
fn fit_with_an_unwritable_out_is_rejected_before_reading_data() {
    let args = ["fit", "--data", "missing.csv", "--out", "/proc/rnnlab-out"];
    assert_rejected_up_front(&args, "cannot write into /proc");
}

/// `rnnlab bench` measures for minutes before it writes; a bad --sweep, --classifier or
/// --csv is reported before the first measurement (nothing printed on stdout), naming the flag.
#[test]
fn bad_bench_options_are_rejected_before_measuring() {
    let quick = [
        "bench",
        "--configs",
        "rnn:4:2:3",
        "--steps",
        "1",
        "--no-peak",
        "--no-memory",
    ];
    for (extra, expect) in [
        (["--sweep", "rnn:4"], "--sweep `rnn:4` is invalid"),
        (
            ["--classifier", "no-such-preset"],
            "--classifier: unknown preset",
        ),
        (
            ["--csv", "no/such/folder/b.csv"],
            "--csv: cannot write no/such/folder/b.csv",
        ),
    ] {
        let args: Vec<&str> = quick.iter().chain(&extra).copied().collect();
        assert_rejected_up_front(&args, expect);
    }
}

#[test]
fn checkpoints_round_trip_and_bad_checkpoints_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = rnnlab(
        &[
            "train",
            "--task",
            "adding",
            "--model",
            "lstm",
            "--seq-len",
            "12",
            "--hidden",
            "8",
            "--steps",
            "30",
            "--eval-every",
            "10",
            "--eval-size",
            "50",
            "--out",
            "run",
            "--save",
            "m.safetensors",
        ],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = std::fs::read_to_string(dir.join("run/metrics.csv")).unwrap();
    assert!(
        metrics.starts_with("step,train_loss,eval_loss,eval_accuracy"),
        "{metrics}"
    );
    assert_eq!(metrics.lines().count(), 4);

    // Probe from the checkpoint, dump the batch, and replay it: same numbers.
    let probe = |extra: &[&str], out_dir: &str| {
        let mut args = vec![
            "probe",
            "--task",
            "adding",
            "--model",
            "lstm",
            "--checkpoint",
            "m.safetensors",
            "--out",
            out_dir,
        ];
        args.extend_from_slice(extra);
        let o = rnnlab(&args, dir);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(dir.join(out_dir).join("grad_norms.csv")).unwrap()
    };
    let first = probe(&["--batch", "16", "--dump-batch", "b.safetensors"], "p1");
    let replay = probe(&["--batch-file", "b.safetensors", "--hidden", "8"], "p2"); // agrees
    assert_eq!(first, replay);
    assert!(
        first.starts_with("t,distance,dh_norm,dc_norm\n0,11,"),
        "{first}"
    );
    assert_eq!(first.lines().count(), 13);
    assert!(dir.join("p1/grads.safetensors").exists());

    // A truncated checkpoint, a missing one, a wrong-model one, a wrong hidden size, a batch
    // that does not fit.
    let bytes = std::fs::read(dir.join("m.safetensors")).unwrap();
    std::fs::write(dir.join("cut.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    for (args, expect) in [
        (
            vec!["--model", "lstm", "--checkpoint", "cut.safetensors"],
            "truncated",
        ),
        (
            vec!["--model", "lstm", "--checkpoint", "none.safetensors"],
            "cannot read checkpoint none.safetensors",
        ),
        (
            vec!["--model", "rnn", "--checkpoint", "m.safetensors"],
            "holds an lstm but --model is rnn",
        ),
        (
            vec![
                "--model",
                "lstm",
                "--hidden",
                "16",
                "--checkpoint",
                "m.safetensors",
            ],
            "has hidden size 8 but --hidden is 16",
        ),
    ] {
        let mut full = vec!["probe", "--task", "adding", "--out", "bad"];
        full.extend(args);
        let o = rnnlab(&full, dir);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(expect) && err.lines().count() == 1, "{err}");
        assert!(!dir.join("bad").exists());
    }
    let o = rnnlab(
        &[
            "probe",
            "--task",
            "copy",
            "--model",
            "lstm",
            "--hidden",
            "8",
            "--copy-len",
            "3",
            "--batch-file",
            "b.safetensors",
            "--out",
            "bad",
        ],
        dir,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("batch file b.safetensors") && err.contains("inputs per step"),
        "{err}"
    );
}

/// The shapes of a ReLU RNN are those of a tanh RNN: the checkpoint's metadata says which,
/// and `--model` must agree with it (`irnn` is the ReLU RNN with its initialisation).
#[test]
fn relu_rnn_checkpoints_record_their_activation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let train = [
        "train",
        "--task",
        "adding",
        "--model",
        "irnn",
        "--seq-len",
        "12",
        "--hidden",
        "8",
        "--steps",
        "5",
        "--eval-size",
        "20",
        "--out",
        "run",
        "--save",
        "i.safetensors",
    ];
    let out = rnnlab(&train, dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = |model: &str| {
        let args = [
            "probe",
            "--task",
            "adding",
            "--model",
            model,
            "--checkpoint",
            "i.safetensors",
            "--batch",
            "8",
            "--out",
            "p",
        ];
        rnnlab(&args, dir)
    };
    for ok in ["irnn", "rnn-relu"] {
        let o = probe(ok);
        assert!(
            o.status.success(),
            "{ok}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("ReLU RNN on adding"));
    }
    let o = probe("rnn");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds an rnn-relu but --model is rnn"),
        "{err}"
    );
}

#[test]
fn gradcheck_passes_and_prints_every_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let out = rnnlab(&["gradcheck"], tmp.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
        "head.weight",
        "head.bias",
        "x",
        "h0",
        "c0",
    ] {
        assert!(
            text.contains(&format!(" {name} ")),
            "{name} not checked:\n{text}"
        );
    }
    assert!(!text.contains("FAILED"));
}
