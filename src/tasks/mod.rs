//! Synthetic long-range-dependency tasks: what the models are asked to remember.
//!
//! A task is an interface ([`Task`]): sample a seeded batch, say how big inputs and outputs
//! are and where the head reads, score an output (accuracy, with the task's own mask), and
//! state the baseline a memoryless model reaches. Tasks know nothing about models; models
//! know nothing about tasks; `train` and the experiments are where they meet.

pub mod adding;
pub mod copy;

use crate::batch::Batch;
use crate::head::Readout;
use anyhow::{Result, bail};
use ndarray::ArrayView3;
use rand_chacha::ChaCha8Rng;

pub use adding::Adding;
pub use copy::Copy;

/// A sequence task with a fixed length.
pub trait Task: Send + Sync {
    /// Command-line name ("adding", "copy").
    fn name(&self) -> &'static str;
    /// The task's length parameter T (as given with `--seq-len`).
    fn seq_len(&self) -> usize;
    /// Number of timesteps actually fed to the model (T for adding, T + 2K for copy).
    fn steps(&self) -> usize;
    /// Input features per step, I.
    fn input_size(&self) -> usize;
    /// Head outputs, O.
    fn output_size(&self) -> usize;
    /// Where the head reads (last step or every step).
    fn readout(&self) -> Readout;
    /// B fresh sequences; the same generator state gives the same batch on every machine.
    fn sample(&self, rng: &mut ChaCha8Rng, batch: usize) -> Batch;
    /// Share of correct answers in `batch` for head outputs `y` (T_out, B, O).
    fn accuracy(&self, y: ArrayView3<f32>, batch: &Batch) -> f64;
    /// The loss of the best memoryless model (what "learned nothing" looks like).
    fn baseline_loss(&self) -> f64;
    /// Accuracy of guessing (what "learned nothing" looks like on the accuracy axis).
    fn chance_accuracy(&self) -> f64;
    /// One line: the exact definition, for logs and summaries.
    fn describe(&self) -> String;
}

/// The task names `--task` accepts.
pub const TASK_NAMES: [&str; 2] = ["adding", "copy"];

/// Builds a task by name. `copy_len` is K for the copy task (ignored by the others).
pub fn make_task(name: &str, seq_len: usize, copy_len: usize) -> Result<Box<dyn Task>> {
    match name {
        "adding" => {
            if seq_len < 2 {
                bail!(
                    "--seq-len {seq_len} is too short for the adding task: it needs T ≥ 2 (one marker in each half)"
                );
            }
            Ok(Box::new(Adding { seq_len }))
        }
        "copy" => {
            if seq_len < 1 {
                bail!("--seq-len {seq_len} is too short for the copy task: it needs T ≥ 1");
            }
            if copy_len < 1 {
                bail!("--copy-len {copy_len} is invalid: the copy task needs K ≥ 1 symbols");
            }
            Ok(Box::new(Copy {
                seq_len,
                symbols: copy_len,
            }))
        }
        other => bail!(
            "unknown task `{other}`: expected one of {}",
            TASK_NAMES.join(", ")
        ),
    }
}
