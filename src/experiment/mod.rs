//! Named experiments: `rnnlab experiment NAME` runs the definition in `experiments/NAME.toml`
//! and leaves a folder of charts, the CSVs they were drawn from, `summary.md` and `run.json`.
//!
//! The flow is: load and validate the definition ([`config`]) → plan the runs and train them
//! in parallel ([`run`]) → write the CSVs ([`data`]) → draw every chart and the summary *from
//! those CSVs* ([`charts`], [`summary`]) — the same code `rnnlab plot DIR` calls, so a redraw
//! is exactly the original. Everything is written into a temporary folder that replaces the
//! output folder only when complete.

pub mod charts;
pub mod config;
pub mod data;
pub mod run;
pub mod summary;

use crate::fsutil::StagedDir;
use crate::report::write_csv;
use anyhow::{Context, Result};
use config::ExperimentConfig;
use data::{AccuracyRow, GradRow, HeatRow, LossRow, MemoryRow};
use run::RunResult;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to run an experiment (from the command line).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub quick: bool,
    /// Output folder (default `plots/NAME`).
    pub out: Option<PathBuf>,
    /// Worker threads (default: all cores).
    pub jobs: Option<usize>,
    /// Number of seeds for every sweep.
    pub seeds: Option<usize>,
    /// `key=value` overrides of the definition.
    pub sets: Vec<(String, String)>,
}

/// Loads experiment `name` with the options applied, printing what is overridden.
pub fn load(name: &str, opts: &Options) -> Result<(ExperimentConfig, config::Source)> {
    let (source, text) = config::find(name)?;
    let origin = match &source {
        config::Source::File(p) => p.display().to_string(),
        config::Source::Builtin(n) => format!("built-in {n}.toml"),
    };
    let mut cfg = config::load(&text, &origin, opts.quick, &opts.sets, &mut |line| {
        println!("{line}")
    })?;
    if let Some(seeds) = opts.seeds {
        anyhow::ensure!(seeds >= 1, "--seeds 0 is invalid: it must be at least 1");
        println!("Overriding: seeds = {seeds} (every sweep)");
        cfg.set_seeds(seeds);
    }
    Ok((cfg, source))
}

/// Runs a loaded experiment; returns the output folder.
pub fn execute(
    name: &str,
    cfg: &ExperimentConfig,
    source: &config::Source,
    opts: &Options,
) -> Result<PathBuf> {
    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(jobs >= 1, "--jobs 0 is invalid: it must be at least 1");
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| Path::new("plots").join(name));
    let staged = StagedDir::new(&out)?;
    let effective = toml::to_string(cfg)?;
    std::fs::write(staged.path().join("config.toml"), &effective)?;

    let specs = run::plan(cfg);
    println!(
        "rnnlab experiment {name}{}: {} runs on {jobs} worker(s) → {}",
        if opts.quick { " --quick" } else { "" },
        specs.len(),
        out.display()
    );
    let start = Instant::now();
    let results = run::run_all(cfg, &specs, jobs)?;
    let seconds = start.elapsed().as_secs_f64();

    write_data(staged.path(), cfg, &results)?;
    let runs: Vec<_> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "task": r.spec.task, "seq_len": r.spec.seq_len, "model": r.spec.cell.name(), "seed": r.spec.seed,
                "init_seed": r.spec.seed, "data_seed": r.spec.seed, "max_steps": r.spec.steps,
                "steps_run": r.train.losses.len(), "outcome": r.train.outcome,
                "final_accuracy": r.train.final_accuracy(), "seconds": r.train.seconds,
                "in_sweep": r.spec.in_sweep, "probed": r.spec.probe,
            })
        })
        .collect();
    let run_json = serde_json::json!({
        "experiment": name,
        "definition": match source { config::Source::File(p) => p.display().to_string(), config::Source::Builtin(n) => format!("built-in {n}") },
        "quick": opts.quick,
        "jobs": jobs,
        "rnnlab_version": env!("CARGO_PKG_VERSION"),
        "config": cfg,
        "total_seconds": seconds,
        "run_seconds_sum": results.iter().map(|r| r.train.seconds).sum::<f64>(),
        "runs": runs,
    });
    std::fs::write(
        staged.path().join("run.json"),
        serde_json::to_string_pretty(&run_json)?,
    )?;
    render(staged.path())?;
    let out = staged.commit()?;
    println!(
        "done in {seconds:.1} s: charts, CSVs and summary.md in {}",
        out.display()
    );
    Ok(out)
}

/// Draws every chart and writes summary.md from the CSVs (and run.json) in `dir`.
pub fn render(dir: &Path) -> Result<Vec<PathBuf>> {
    let cfg: ExperimentConfig = {
        let text = std::fs::read_to_string(dir.join("config.toml")).with_context(|| {
            format!(
                "{} is not an experiment folder: it has no config.toml",
                dir.display()
            )
        })?;
        toml::from_str(&text).with_context(|| format!("{}/config.toml", dir.display()))?
    };
    let charts = charts::draw_all(dir, &cfg)?;
    summary::write(dir, &cfg)?;
    Ok(charts)
}

/// Writes the CSVs every chart is drawn from.
fn write_data(dir: &Path, cfg: &ExperimentConfig, results: &[RunResult]) -> Result<()> {
    let (mut grad, mut memory) = (Vec::new(), Vec::new());
    for r in results.iter().filter(|r| r.spec.probe) {
        let model = r.spec.cell.name().to_string();
        let probes = &r.train.probes;
        let mut heat = Vec::new();
        for p in probes {
            for (t, &v) in p.probes.dh_norm.iter().enumerate() {
                heat.push(HeatRow {
                    model: model.clone(),
                    step: p.step,
                    t,
                    log10_dh_norm: v.log10(),
                });
            }
        }
        write_csv(&dir.join(format!("heatmap_{model}.csv")), &heat)?;
        let panels = match probes.len() {
            0 => vec![],
            1 => vec![("init", &probes[0])],
            n => vec![("init", &probes[0]), ("trained", &probes[n - 1])],
        };
        for (panel, p) in panels {
            let dh = &p.probes.dh_norm;
            let t_len = dh.len();
            for (t, &v) in dh.iter().enumerate() {
                let distance = t_len - 1 - t;
                let bound = p.sigma_max.map(|s| dh[t_len - 1] * s.powi(distance as i32));
                grad.push(GradRow {
                    panel: panel.into(),
                    model: model.clone(),
                    step: p.step,
                    t,
                    distance,
                    dh_norm: v,
                    pascanu_bound: bound,
                    sigma_max: p.sigma_max,
                    spectral_radius: p.spectral_radius,
                });
            }
            if let (Some(fg), Some(dc)) = (&p.forget_gate, &p.probes.dc_norm) {
                for t in 0..t_len {
                    memory.push(MemoryRow {
                        panel: panel.into(),
                        step: p.step,
                        t,
                        distance: t_len - 1 - t,
                        forget_gate: fg[t],
                        dc_norm: dc[t],
                        dh_norm: dh[t],
                    });
                }
            }
        }
    }
    write_csv(&dir.join("grad_vs_distance.csv"), &grad)?;
    if !memory.is_empty() {
        write_csv(&dir.join("lstm_memory.csv"), &memory)?;
    }
    for task in cfg.sweep.keys() {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.spec.in_sweep && &r.spec.task == task)
            .collect();
        let acc: Vec<AccuracyRow> = runs
            .iter()
            .map(|r| {
                let last = r.train.metrics.last();
                AccuracyRow {
                    task: task.clone(),
                    model: r.spec.cell.name().into(),
                    seq_len: r.spec.seq_len,
                    seed: r.spec.seed,
                    accuracy: last.map_or(0.0, |m| m.eval_accuracy),
                    eval_loss: last.map_or(f64::NAN, |m| m.eval_loss),
                    solved_step: match r.train.outcome {
                        crate::train::Outcome::Solved { step } => Some(step),
                        _ => None,
                    },
                    steps_run: r.train.losses.len(),
                    diverged_step: match r.train.outcome {
                        crate::train::Outcome::Diverged { step, .. } => Some(step),
                        _ => None,
                    },
                    baseline_loss: r.baseline_loss,
                    chance_accuracy: r.chance_accuracy,
                }
            })
            .collect();
        write_csv(&dir.join(format!("accuracy_{task}.csv")), &acc)?;
        let loss: Vec<LossRow> = runs
            .iter()
            .flat_map(|r| {
                r.train.metrics.iter().map(|m| LossRow {
                    task: task.clone(),
                    model: r.spec.cell.name().into(),
                    seq_len: r.spec.seq_len,
                    seed: r.spec.seed,
                    step: m.step,
                    train_loss: m.train_loss,
                    eval_loss: m.eval_loss,
                    eval_accuracy: m.eval_accuracy,
                })
            })
            .collect();
        write_csv(&dir.join(format!("loss_{task}.csv")), &loss)?;
    }
    Ok(())
}
