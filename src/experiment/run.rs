//! Running the runs of an experiment: which (task, T, model, seed) combinations, spread over
//! `--jobs` worker threads, with one progress bar for the whole experiment.
//!
//! Each run is single-threaded and fully determined by its spec, and results are stored by
//! spec index, so the numbers do not depend on how many workers there are or which finishes
//! first. Workers take the most expensive remaining run first, which keeps both cores busy
//! until the end.

use super::config::ExperimentConfig;
use crate::params::CellKind;
use crate::tasks::{Task, make_task};
use crate::train::{self, Event, Outcome, TrainResult};
use anyhow::{Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One training run of an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub task: String,
    pub seq_len: usize,
    pub copy_len: usize,
    pub cell: CellKind,
    pub seed: u64,
    pub steps: usize,
    /// Part of the accuracy sweep (counts in the accuracy table and charts).
    pub in_sweep: bool,
    /// Record gradient probes during training.
    pub probe: bool,
}

impl RunSpec {
    /// Rough cost of one training step, for scheduling and the progress bar: timesteps ×
    /// gate blocks × H².
    fn step_cost(&self, hidden: usize) -> u64 {
        let steps_len = if self.task == "copy" {
            self.seq_len + 2 * self.copy_len
        } else {
            self.seq_len
        };
        (steps_len * (self.cell.gates() + 1) * hidden * hidden / 64).max(1) as u64
    }

    /// "lstm adding T=100 seed 0".
    pub fn label(&self) -> String {
        format!(
            "{:<4} {:<6} T={:<4} seed {}",
            self.cell.name(),
            self.task,
            self.seq_len,
            self.seed
        )
    }
}

/// A finished run.
pub struct RunResult {
    pub spec: RunSpec,
    pub train: TrainResult,
    pub baseline_loss: f64,
    pub chance_accuracy: f64,
}

/// The runs an experiment consists of: every sweep combination, with the probed runs
/// (adding task, T = probe.seq_len, seed 0) marked or added.
pub fn plan(cfg: &ExperimentConfig) -> Vec<RunSpec> {
    let mut specs = Vec::new();
    for (task, s) in &cfg.sweep {
        for &seq_len in &s.seq_lens {
            for model in &s.models {
                for seed in 0..s.seeds as u64 {
                    let cell = CellKind::parse(model).expect("validated");
                    specs.push(RunSpec {
                        task: task.clone(),
                        seq_len,
                        copy_len: s.copy_len,
                        cell,
                        seed,
                        steps: s.steps,
                        in_sweep: true,
                        probe: false,
                    });
                }
            }
        }
    }
    let adding = &cfg.sweep["adding"];
    for model in &adding.models {
        let cell = CellKind::parse(model).expect("validated");
        let probed = |r: &RunSpec| {
            r.task == "adding" && r.seq_len == cfg.probe.seq_len && r.cell == cell && r.seed == 0
        };
        match specs.iter_mut().find(|r| probed(r)) {
            Some(r) => r.probe = true,
            None => specs.push(RunSpec {
                task: "adding".into(),
                seq_len: cfg.probe.seq_len,
                copy_len: adding.copy_len,
                cell,
                seed: 0,
                steps: adding.steps,
                in_sweep: false,
                probe: true,
            }),
        }
    }
    specs
}

/// Runs every spec on `jobs` worker threads. Results come back in spec order.
pub fn run_all(cfg: &ExperimentConfig, specs: &[RunSpec], jobs: usize) -> Result<Vec<RunResult>> {
    let hidden = cfg.model.hidden;
    let total: u64 = specs
        .iter()
        .map(|s| s.step_cost(hidden) * s.steps as u64)
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}%  {msg}  [{elapsed_precise} < {eta}]")
            .expect("valid template"),
    );
    bar.set_message(format!("0/{} runs", specs.len()));
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(specs[i].step_cost(hidden) * specs[i].steps as u64));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RunResult>>>> =
        Mutex::new((0..specs.len()).map(|_| None).collect());

    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(specs.len()) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&i) = order.get(k) else { break };
                    let spec = &specs[i];
                    let r = run_one(cfg, spec, &bar);
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    bar.set_message(format!("{n}/{} runs", specs.len()));
                    if let Ok(r) = &r {
                        // println on a hidden bar (not a terminal) prints nothing.
                        if bar.is_hidden() {
                            println!("{}", finished_line(r));
                        } else {
                            bar.println(finished_line(r));
                        }
                    }
                    results.lock().expect("no worker panicked")[i] = Some(r);
                }
            });
        }
    });
    bar.finish_and_clear();
    results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|r| r.expect("every spec was run"))
        .collect()
}

/// One run, advancing the shared bar as it trains.
fn run_one(cfg: &ExperimentConfig, spec: &RunSpec, bar: &ProgressBar) -> Result<RunResult> {
    let task: Box<dyn Task> = make_task(&spec.task, spec.seq_len, spec.copy_len)?;
    let mut tc = cfg.train_config(spec.cell, spec.steps, spec.seed)?;
    if spec.probe {
        tc.probe_every = Some(cfg.probe.every);
    }
    let cost = spec.step_cost(cfg.model.hidden);
    let model = train::new_model(task.as_ref(), &tc);
    let result = train::train(task.as_ref(), &tc, model, &mut |e| {
        if let Event::Step { .. } = e {
            bar.inc(cost);
        }
    })
    .map_err(|e| anyhow!("{}: {e:#}", spec.label()))?;
    bar.inc(cost * (spec.steps - result.losses.len()) as u64); // stopped early
    Ok(RunResult {
        spec: spec.clone(),
        baseline_loss: task.baseline_loss(),
        chance_accuracy: task.chance_accuracy(),
        train: result,
    })
}

/// "lstm adding T=100 seed 0: solved at step 1900, accuracy 0.950 (53.6 s)".
fn finished_line(r: &RunResult) -> String {
    let what = match &r.train.outcome {
        Outcome::Solved { step } => format!("solved at step {step}"),
        Outcome::Finished => format!("not solved in {} steps", r.spec.steps),
        Outcome::Diverged { step, what } => format!("DIVERGED at step {step} ({what})"),
    };
    format!(
        "  {}: {what}, accuracy {:.3} ({:.1} s)",
        r.spec.label(),
        r.train.final_accuracy(),
        r.train.seconds
    )
}
