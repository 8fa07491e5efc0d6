//! `rnnlab experiment exploding --quick`, run as a user would (the real binary), into a
//! temporary folder: every chart and its CSV are there, and the numbers say what they should:
//! below scale 1 the gradient vanishes, above it explodes, by the Pascanu et al. bound for the
//! ReLU RNN; without clipping, training diverges; with clipping by norm it trains; clipping by
//! value turns the step, clipping by norm does not. `rnnlab plot` redraws from the CSVs.

use std::path::Path;

mod common;
use common::rnnlab;

const CHARTS: [&str; 5] = [
    "scales",
    "spectral_sweep",
    "init_profiles",
    "clipping",
    "clip_norm_vs_value",
];

/// The rows of a CSV as maps from column name to text.
fn rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, col: &str) -> f64 {
    row[col].parse().unwrap_or(f64::NAN)
}

#[test]
fn quick_exploding_shows_explosion_bound_and_clipping() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("e");
    let run = rnnlab(
        &[
            "experiment",
            "exploding",
            "--quick",
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
    for f in [
        "scales.csv",
        "spectral_sweep.csv",
        "init_profiles.csv",
        "clipping_steps.csv",
        "clipping_runs.csv",
        "summary.md",
        "run.json",
        "config.toml",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }

    // Scales: at the far end, the ReLU RNN with W_hh = s·I is within a factor 3 below its bound
    // s^d (inactive units only lose gradient), so below 1 it vanishes and above 1 it explodes.
    let scales = rows(&out.join("scales.csv"));
    let far = scales
        .iter()
        .map(|r| num(r, "distance") as usize)
        .max()
        .unwrap();
    assert!(far >= 50, "probe sequence too short");
    for r in scales.iter().filter(|r| num(r, "distance") as usize == far) {
        let (s, ratio, bound) = (num(r, "scale"), num(r, "ratio"), num(r, "bound"));
        assert!(
            (num(r, "sigma_max") - s).abs() < 1e-3,
            "σ_max of s·I or s·Q is s"
        );
        assert!(
            ratio <= bound * 1.0001,
            "{}: bound violated at s = {s}",
            r["model"]
        );
        if r["model"] == "irnn" {
            assert!(
                ratio > bound / 3.0,
                "ReLU, s = {s}: {ratio:e} far below {bound:e}"
            );
            if s < 1.0 {
                assert!(ratio < 1e-2, "s = {s} should vanish: {ratio:e}");
            }
            if s > 1.0 {
                assert!(ratio > 1e2, "s = {s} should explode: {ratio:e}");
            }
        }
    }
    // The spectral sweep rises with the scale for the vanilla RNNs.
    let sweep = rows(&out.join("spectral_sweep.csv"));
    let irnn: Vec<f64> = sweep
        .iter()
        .filter(|r| r["model"] == "irnn")
        .map(|r| num(r, "ratio"))
        .collect();
    assert!(irnn.windows(2).all(|w| w[1] > w[0]), "{irnn:?}");
    assert!(irnn[0] < 1e-6 && *irnn.last().unwrap() > 1e6, "{irnn:?}");

    // Clipping: without it training diverges; with global-norm clipping it trains.
    let runs = rows(&out.join("clipping_runs.csv"));
    let run_of = |v: &str| runs.iter().find(|r| r["variant"] == v).unwrap();
    let none = run_of("no clipping");
    assert!(
        !none["diverged_step"].is_empty(),
        "unclipped run did not diverge"
    );
    assert!(num(none, "max_grad_norm") > 1e6);
    let norm = run_of("clip norm 1");
    assert!(norm["diverged_step"].is_empty(), "clipped run diverged");
    assert!(num(norm, "max_grad_norm") < 1e3);
    let steps = rows(&out.join("clipping_steps.csv"));
    let first = steps
        .iter()
        .find(|s| s["variant"] == "clip norm 1")
        .map(|s| num(s, "loss"))
        .unwrap();
    assert!(
        num(norm, "final_loss") < 0.6 * first,
        "clipped run did not train: {first} → {}",
        num(norm, "final_loss")
    );
    // Clipping by norm keeps the direction; clipping by value turns it.
    let mean_angle = |v: &str| {
        let a: Vec<f64> = steps
            .iter()
            .filter(|s| s["variant"] == v)
            .map(|s| num(s, "angle_deg"))
            .collect();
        a.iter().sum::<f64>() / a.len() as f64
    };
    assert_eq!(mean_angle("clip norm 1"), 0.0);
    assert!(mean_angle("clip value 0.01") > 10.0);

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("**diverged at step"), "{summary}");
    assert!(summary.contains("scales.png") && summary.contains("clipping.png"));

    // `plot` redraws every chart from the CSVs alone.
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
            "{chart}.png not redrawn"
        );
    }
}
