//! Running the training runs of an experiment, spread over `--jobs` worker threads, with one
//! progress bar for the whole experiment and a line per run as it finishes.
//!
//! A run is a task and a complete [`TrainConfig`]; which runs an experiment consists of is
//! the business of its kind (`vanishing.rs`, `exploding/`). Each run is single-threaded and
//! fully determined by its spec, and results are stored by spec index, so the numbers do not
//! depend on how many workers there are or which finishes first. Workers take the most
//! expensive remaining run first, which keeps both cores busy until the end.

use crate::tasks::{Task, make_task};
use crate::train::{self, Event, Outcome, TrainConfig, TrainResult};
use anyhow::{Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One training run of an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub task: String,
    pub seq_len: usize,
    /// K of the copy task (ignored by the adding task).
    pub copy_len: usize,
    /// Everything else: model, initialisation, optimizer, clipping, seeds, steps, probes.
    pub train: TrainConfig,
    /// What distinguishes this run besides model, task, T and seed (e.g. "clip norm 1"),
    /// shown in its progress line; empty if nothing.
    pub variant: String,
}

/// The number of cores: the default of `--jobs` and `--threads`.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A thread-count flag (`--jobs`, `--threads`): its value, or `default()` when not given;
/// 0 is an error.
pub fn thread_count(
    flag: &str,
    value: Option<usize>,
    default: impl FnOnce() -> usize,
) -> anyhow::Result<usize> {
    let n = value.unwrap_or_else(default);
    anyhow::ensure!(n >= 1, "{flag} 0 is invalid: it must be at least 1");
    Ok(n)
}

impl RunSpec {
    /// Rough cost of one training step, for scheduling and the progress bar: timesteps ×
    /// gate blocks × H².
    fn step_cost(&self) -> u64 {
        let steps_len = if self.task == "copy" {
            self.seq_len + 2 * self.copy_len
        } else {
            self.seq_len
        };
        let h = self.train.hidden;
        (steps_len * (self.train.cell.gates() + 1) * h * h / 64).max(1) as u64
    }

    /// "lstm adding T=100 seed 0" (+ the variant).
    pub fn label(&self) -> String {
        let base = format!(
            "{:<4} {:<6} T={:<4} seed {}",
            self.train.cell.name(),
            self.task,
            self.seq_len,
            self.train.seed
        );
        if self.variant.is_empty() {
            base
        } else {
            format!("{base} {}", self.variant)
        }
    }
}

/// A finished run.
pub struct RunResult {
    pub spec: RunSpec,
    pub train: TrainResult,
    pub baseline_loss: f64,
    pub chance_accuracy: f64,
}

impl RunResult {
    /// The run's entry in `run.json` (the kind may add fields).
    pub fn json(&self) -> serde_json::Value {
        let (s, t) = (&self.spec, &self.train);
        serde_json::json!({
            "task": s.task, "seq_len": s.seq_len, "model": s.train.cell.name(),
            "variant": s.variant, "seed": s.train.seed, "init_seed": s.train.seed,
            "data_seed": s.train.data_seed, "max_steps": s.train.steps,
            "steps_run": t.losses.len(), "outcome": t.outcome,
            "final_accuracy": t.final_accuracy(), "seconds": t.seconds,
        })
    }
}

/// Runs every spec on `jobs` worker threads. Results come back in spec order.
pub fn run_all(specs: &[RunSpec], jobs: usize) -> Result<Vec<RunResult>> {
    let total: u64 = specs
        .iter()
        .map(|s| s.step_cost() * s.train.steps as u64)
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}%  {msg}  [{elapsed_precise} < {eta}]")
            .expect("valid template"),
    );
    bar.set_message(format!("0/{} runs", specs.len()));
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(specs[i].step_cost() * specs[i].train.steps as u64));
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
                    let r = run_one(spec, &bar);
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
fn run_one(spec: &RunSpec, bar: &ProgressBar) -> Result<RunResult> {
    let task: Box<dyn Task> = make_task(&spec.task, spec.seq_len, spec.copy_len)?;
    let cost = spec.step_cost();
    let model = train::new_model(task.as_ref(), &spec.train);
    // one thread per run: the runs themselves are spread over the cores
    let result = train::train(task.as_ref(), &spec.train, model, 1, &mut |e| {
        if let Event::Step { .. } = e {
            bar.inc(cost);
        }
    })
    .map_err(|e| anyhow!("{}: {e:#}", spec.label()))?;
    bar.inc(cost * (spec.train.steps - result.losses.len()) as u64); // stopped early
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
        Outcome::Finished => format!("not solved in {} steps", r.spec.train.steps),
        Outcome::Diverged { step, what } => format!("DIVERGED at step {step} ({what})"),
    };
    format!(
        "  {}: {what}, accuracy {:.3} ({:.1} s)",
        r.spec.label(),
        r.train.final_accuracy(),
        r.train.seconds
    )
}

/// Runs `job` on every item on `jobs` threads, results in item order (for the cheap
/// measurements that are not training runs, e.g. probes at initialisation).
pub fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    job: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = job(item);
                    results.lock().expect("no worker panicked")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|r| r.expect("every item was run"))
        .collect()
}
