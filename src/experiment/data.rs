//! The CSV files of an experiment: one row type per chart, written after the runs and read
//! back to draw the charts and the summary (so `rnnlab plot DIR` redraws exactly the same).
//!
//! Files hold only numbers that are the same on every run with the same seeds (no wall
//! times: those go to `run.json`), so the CSVs are byte-identical whatever `--jobs` is.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::Path;

/// `grad_vs_distance.csv`: ‖∂L/∂h_t‖ on the probe batch, at initialisation and after training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradRow {
    /// "init" or "trained".
    pub panel: String,
    pub model: String,
    /// Training step of the probe.
    pub step: usize,
    pub t: usize,
    /// T−1−t: how many steps back from the loss.
    pub distance: usize,
    pub dh_norm: f64,
    /// Pascanu et al. (2013) upper bound ‖g_{T−1}‖·(γ σ_max(W_hh))^distance with γ = 1 (RNN only).
    pub pascanu_bound: Option<f64>,
    /// σ_max(W_hh) used for the bound (RNN only).
    pub sigma_max: Option<f64>,
    /// Spectral radius ρ(W_hh) (RNN only): the asymptotic growth rate of W_hh's powers.
    pub spectral_radius: Option<f64>,
}

/// `heatmap_MODEL.csv`: log10 ‖∂L/∂h_t‖ for every probe step × timestep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeatRow {
    pub model: String,
    pub step: usize,
    pub t: usize,
    pub log10_dh_norm: f64,
}

/// `lstm_memory.csv`: what keeps the gated cells' gradient alive (LSTM and GRU).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryRow {
    /// "lstm" or "gru" (files written before the GRU have no such column: all LSTM).
    #[serde(default = "lstm")]
    pub model: String,
    /// "init" or "trained".
    pub panel: String,
    pub step: usize,
    pub t: usize,
    pub distance: usize,
    /// Mean over batch and units of the gate that keeps the state: the LSTM's forget gate
    /// f_t, the GRU's update gate z_t.
    #[serde(alias = "forget_gate")]
    pub keep_gate: f64,
    /// ‖∂L/∂c_t‖ (LSTM only).
    pub dc_norm: Option<f64>,
    pub dh_norm: f64,
}

fn lstm() -> String {
    "lstm".into()
}

/// `accuracy_TASK.csv`: one row per run of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccuracyRow {
    pub task: String,
    pub model: String,
    pub seq_len: usize,
    pub seed: u64,
    /// Held-out accuracy at the last evaluation.
    pub accuracy: f64,
    pub eval_loss: f64,
    /// Step at which the target accuracy was reached (empty: never).
    pub solved_step: Option<usize>,
    /// Steps actually run.
    pub steps_run: usize,
    /// Step at which the run diverged (empty: it did not).
    pub diverged_step: Option<usize>,
    pub baseline_loss: f64,
    pub chance_accuracy: f64,
}

/// `loss_TASK.csv`: training curves, one row per evaluation of every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossRow {
    pub task: String,
    pub model: String,
    pub seq_len: usize,
    pub seed: u64,
    pub step: usize,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    pub eval_loss: f64,
    pub eval_accuracy: f64,
}

/// Reads a CSV written by [`crate::report::write_csv`].
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    r.deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{}: bad row {}", path.display(), i + 2)))
        .collect()
}
