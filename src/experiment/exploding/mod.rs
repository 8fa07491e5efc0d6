//! The exploding-gradient experiment (`kind = "exploding"`, `experiments/exploding.toml`):
//! its file schema, what it measures, and the CSVs it writes. The charts are drawn from those
//! CSVs in [`charts`], the words in [`summary`].
//!
//! What it measures, all on the adding task:
//! - **scales**: models whose W_hh is a matrix of spectral norm 1 (the identity, or a random
//!   orthogonal Q) times s, for each s of `scales.values`, probed at initialisation on a fixed
//!   batch: ‖∂L/∂h_t‖ against the distance from the loss, next to the Pascanu et al. (2013)
//!   bound ‖∂L/∂h_{T−1}‖·(γ σ_max)^d with γ = 1. For s·I and s·Q the largest singular value
//!   σ_max and the spectral radius ρ are both exactly s, so "scale" means either.
//! - **spectral sweep**: the same ratio at one distance against s, for every model of
//!   `sweep.models` (geometric mean over `probe.seeds` initialisations).
//! - **initialisation profiles**: the remedies at initialisation: the PyTorch-default RNN, the
//!   RNN with orthogonal W_hh, the IRNN, the LSTM and the GRU.
//! - **clipping**: a model whose gradient explodes, trained with plain SGD without clipping,
//!   with global-norm clipping (Pascanu et al. 2013, Algorithm 1) and with clipping by value:
//!   the loss and the raw gradient norm at every step, and the angle between the gradient and
//!   the step actually taken.
//!
//! The probes at initialisation are cheap (no training) and run in parallel over `--jobs`;
//! the clipping runs go through the shared runner ([`super::run`]).

pub mod charts;
pub mod summary;

use super::run::{self, RunResult, RunSpec};
use crate::init::{Init, RecurrentInit, init_params, spectral_norm, spectral_radius};
use crate::model::Model;
use crate::optim::{Clip, OptimizerKind};
use crate::params::CellKind;
use crate::report::write_csv;
use crate::tasks::{Task, make_task};
use crate::train::{self, Outcome, TrainConfig};
use anyhow::{Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

// ------------------------------------------------------------------------------ the file

/// The exploding-gradient experiment's file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExplodingConfig {
    /// Always `"exploding"`.
    pub kind: String,
    /// One line shown by `experiment --list`.
    pub description: String,
    pub model: ModelSection,
    pub probe: ProbeSection,
    pub scales: ScalesSection,
    pub sweep: SweepSection,
    pub clipping: ClippingSection,
    /// Overrides applied by `--quick` (already merged in when loaded with quick = true).
    #[serde(default, skip_serializing)]
    pub quick: Option<toml::Table>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Hidden size H of every model.
    pub hidden: usize,
}

/// The fixed adding-task batch every probe at initialisation uses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    pub seq_len: usize,
    pub batch: usize,
    /// Initialisations (seeds 0, 1, …) per point of the spectral sweep.
    pub seeds: usize,
}

/// (a) ‖∂L/∂h_t‖ against distance, one line per scale, one panel per model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScalesSection {
    pub models: Vec<String>,
    pub values: Vec<f64>,
}

/// (d) the gradient at one distance against the scale.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    pub models: Vec<String>,
    /// Scales from `min` to `max` in `points` even steps.
    pub min: f64,
    pub max: f64,
    pub points: usize,
    /// The distance d from the loss at which the gradient is read.
    pub distance: usize,
}

/// (b), (c) training with and without clipping.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClippingSection {
    /// One of the model families (see [`FAMILIES`]).
    pub model: String,
    /// Its scale s.
    pub scale: f64,
    pub seq_len: usize,
    pub batch: usize,
    pub optimizer: String,
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    pub steps: usize,
    pub eval_every: usize,
    pub eval_size: usize,
    pub seeds: usize,
    /// Threshold of global-norm clipping.
    pub norm: f64,
    /// Thresholds of clipping by value, one run each.
    pub values: Vec<f64>,
    /// Steps in the trailing mean of the loss curves.
    pub smooth: usize,
}

impl ExplodingConfig {
    /// Range checks; errors name the key, the value and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if self.kind != "exploding" {
            bail!(
                "kind = \"{}\" is invalid here: this file follows the exploding schema",
                self.kind
            );
        }
        let c = &self.clipping;
        let at_least_1 = [
            ("model.hidden", self.model.hidden),
            ("probe.batch", self.probe.batch),
            ("probe.seeds", self.probe.seeds),
            ("clipping.batch", c.batch),
            ("clipping.steps", c.steps),
            ("clipping.eval_every", c.eval_every),
            ("clipping.eval_size", c.eval_size),
            ("clipping.seeds", c.seeds),
            ("clipping.smooth", c.smooth),
        ];
        for (k, v) in at_least_1 {
            if v == 0 {
                bail!("{k} = 0 is invalid: it must be at least 1");
            }
        }
        for (k, t) in [
            ("probe.seq_len", self.probe.seq_len),
            ("clipping.seq_len", c.seq_len),
        ] {
            if !(2..=100_000).contains(&t) {
                bail!("{k} = {t} is invalid: the adding task needs 2 ≤ T ≤ 100000");
            }
        }
        if self.sweep.distance >= self.probe.seq_len {
            bail!(
                "sweep.distance = {} is invalid: it must be below probe.seq_len = {}",
                self.sweep.distance,
                self.probe.seq_len
            );
        }
        if self.sweep.points < 2 {
            bail!(
                "sweep.points = {} is invalid: it must be at least 2",
                self.sweep.points
            );
        }
        let positive = |k: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{k} = {v} is invalid: it must be a positive number"
                ))
            }
        };
        positive("sweep.min", self.sweep.min)?;
        positive("sweep.max", self.sweep.max)?;
        if self.sweep.max <= self.sweep.min {
            bail!(
                "sweep.max = {} must be above sweep.min = {}",
                self.sweep.max,
                self.sweep.min
            );
        }
        if self.scales.values.is_empty() {
            bail!("scales.values must not be empty");
        }
        for &v in &self.scales.values {
            positive("scales.values", v)?;
        }
        positive("clipping.scale", c.scale)?;
        positive("clipping.norm", c.norm)?;
        for &v in &c.values {
            positive("clipping.values", v)?;
        }
        let lists = [
            ("scales.models", &self.scales.models),
            ("sweep.models", &self.sweep.models),
        ];
        for (k, models) in lists {
            if models.is_empty() {
                bail!("{k} must not be empty");
            }
            for m in models {
                check_family(k, m)?;
            }
        }
        check_family("clipping.model", &c.model)?;
        self.clipping_config(Clip::None, 0).map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string()
                    .replace("--lr", "clipping.lr")
                    .replace("--momentum", "clipping.momentum")
            )
        })?;
        Ok(())
    }

    /// Sets the number of seeds (`--seeds N`): initialisations in the sweep, clipping runs.
    pub fn set_seeds(&mut self, seeds: usize) {
        self.probe.seeds = seeds;
        self.clipping.seeds = seeds;
    }

    /// The scales of the spectral sweep.
    pub fn sweep_scales(&self) -> Vec<f64> {
        let (lo, hi, n) = (self.sweep.min, self.sweep.max, self.sweep.points);
        (0..n)
            .map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64)
            .collect()
    }

    /// The clipping variants: none, by norm, by value (each threshold).
    pub fn clips(&self) -> Vec<Clip> {
        let c = &self.clipping;
        let mut v = vec![Clip::None, Clip::Norm { max: c.norm }];
        v.extend(c.values.iter().map(|&max| Clip::Value { max }));
        v
    }

    /// The training config of one clipping run.
    pub fn clipping_config(&self, clip: Clip, seed: u64) -> Result<TrainConfig> {
        let c = &self.clipping;
        let (cell, init) = family(&c.model, c.scale).expect("validated");
        let optimizer = OptimizerKind::by_name(&c.optimizer, c.momentum).ok_or_else(|| {
            anyhow::anyhow!(
                "clipping.optimizer = \"{}\" is invalid: expected {}",
                c.optimizer,
                OptimizerKind::NAMES.join(", ")
            )
        })?;
        if !(c.momentum.is_finite() && (0.0..1.0).contains(&c.momentum)) {
            bail!(
                "clipping.momentum = {} is invalid: it must be in [0, 1)",
                c.momentum
            );
        }
        let cfg = TrainConfig {
            cell,
            hidden: self.model.hidden,
            batch: c.batch,
            steps: c.steps,
            lr: c.lr,
            optimizer,
            clip,
            init,
            seed,
            data_seed: seed,
            eval_every: c.eval_every,
            eval_size: c.eval_size,
            target_accuracy: None,
            probe_every: None,
            probe_size: self.probe.batch,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

// ------------------------------------------------------------------------------ models

/// The model families whose recurrent matrix is scaled, by the names the file uses.
pub const FAMILIES: [&str; 5] = ["irnn", "rnn", "rnn-relu", "lstm", "gru"];

/// The cell and initialisation of family `name` at scale `s`:
/// - `irnn`: ReLU RNN, W_hh = s·I, W_ih ~ N(0, 0.001²), biases 0 (Le et al. 2015 at s = 1);
/// - `rnn`, `rnn-relu`: tanh / ReLU RNN, W_hh = s·Q with Q random orthogonal;
/// - `lstm`, `gru`: every gate block of W_hh is s·Q_g; everything else PyTorch's default
///   (LSTM forget-gate bias 1).
pub fn family(name: &str, s: f64) -> Option<(CellKind, Init)> {
    match name {
        "irnn" => Some((CellKind::RnnRelu, Init::irnn(s))),
        "rnn" | "rnn-relu" | "lstm" | "gru" => Some((
            CellKind::parse(name).expect("a cell name"),
            Init::with_recurrent(RecurrentInit::Orthogonal { gain: s }),
        )),
        _ => None,
    }
}

/// How a family is shown in charts: "RNN (tanh, W_hh = s·Q)".
pub fn family_label(name: &str) -> String {
    match name {
        "irnn" => "ReLU RNN, W_hh = s·I (IRNN at s = 1)".into(),
        "rnn" => "RNN (tanh, W_hh = s·Q)".into(),
        "rnn-relu" => "ReLU RNN (W_hh = s·Q)".into(),
        "lstm" => "LSTM (each block of W_hh = s·Q)".into(),
        "gru" => "GRU (each block of W_hh = s·Q)".into(),
        other => other.into(),
    }
}

fn check_family(key: &str, name: &str) -> Result<()> {
    if family(name, 1.0).is_none() {
        bail!(
            "{key} contains `{name}`: expected one of {}",
            FAMILIES.join(", ")
        );
    }
    Ok(())
}

/// The initialisations compared in the profiles chart: (key, label, cell, init).
pub fn profiles() -> Vec<(&'static str, &'static str, CellKind, Init)> {
    let orthogonal = Init::with_recurrent(RecurrentInit::Orthogonal { gain: 1.0 });
    vec![
        (
            "rnn",
            "RNN, PyTorch's default W_hh ~ U(±1/√H)",
            CellKind::Rnn,
            Init::default(),
        ),
        (
            "rnn-orthogonal",
            "RNN, orthogonal W_hh",
            CellKind::Rnn,
            orthogonal,
        ),
        (
            "irnn",
            "IRNN: ReLU, W_hh = I, W_ih ~ N(0, 0.001²)",
            CellKind::RnnRelu,
            Init::irnn(1.0),
        ),
        (
            "lstm",
            "LSTM (forget-gate bias 1)",
            CellKind::Lstm,
            Init::default(),
        ),
        ("gru", "GRU", CellKind::Gru, Init::default()),
    ]
}

// ------------------------------------------------------------------------------ the CSVs

/// `scales.csv`: ‖∂L/∂h_t‖ at initialisation, per model family and scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleRow {
    pub model: String,
    pub scale: f64,
    /// σ_max(W_hh) and ρ(W_hh) as measured on the initialised (f32) matrix.
    pub sigma_max: f64,
    pub spectral_radius: f64,
    pub t: usize,
    /// T−1−t: how many steps back from the loss.
    pub distance: usize,
    pub dh_norm: f64,
    /// dh_norm / (its value at distance 0).
    pub ratio: f64,
    /// The Pascanu et al. bound on `ratio`: (γ σ_max)^distance with γ = 1.
    pub bound: f64,
}

/// `spectral_sweep.csv`: the gradient at `distance` relative to the loss, per family, scale
/// and initialisation seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    pub model: String,
    pub scale: f64,
    pub seed: u64,
    pub distance: usize,
    /// ‖∂L/∂h_{T−1−d}‖ / ‖∂L/∂h_{T−1}‖.
    pub ratio: f64,
}

/// `init_profiles.csv`: ‖∂L/∂h_t‖ at initialisation for each initialisation compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileRow {
    pub model: String,
    pub label: String,
    pub t: usize,
    pub distance: usize,
    pub dh_norm: f64,
    pub ratio: f64,
}

/// `clipping_steps.csv`: every training step of every clipping run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    /// "no clipping", "clip norm 1", "clip value 0.1".
    pub variant: String,
    pub seed: u64,
    pub step: usize,
    pub loss: f64,
    /// Mean of the loss over the last `clipping.smooth` steps (fewer at the start).
    pub loss_mean: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Angle in degrees between the raw gradient and the clipped one that the optimizer used.
    pub angle_deg: f64,
}

/// `clipping_runs.csv`: one row per clipping run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipRunRow {
    pub variant: String,
    pub seed: u64,
    /// Step at which the loss or the gradient stopped being a number (empty: never).
    pub diverged_step: Option<usize>,
    pub steps_run: usize,
    /// The first step's gradient norm, and the largest of the run (before clipping).
    pub first_grad_norm: f64,
    pub max_grad_norm: f64,
    /// Mean training loss over the last `clipping.smooth` steps run.
    pub final_loss: f64,
    /// Held-out loss and accuracy at the last evaluation (empty: none happened).
    pub eval_loss: Option<f64>,
    pub eval_accuracy: Option<f64>,
    pub baseline_loss: f64,
    pub chance_accuracy: f64,
}

// ------------------------------------------------------------------------------ running

/// One probe at initialisation: family (or profile key), scale, seed, and the model.
struct ProbeJob {
    model: String,
    scale: f64,
    seed: u64,
    cell: CellKind,
    init: Init,
}

/// What a probe at initialisation measured.
struct ProbeOut {
    dh_norm: Vec<f64>,
    /// σ_max(W_hh), ρ(W_hh) of the vanilla RNNs (NaN for the gated cells).
    sigma_max: f64,
    spectral_radius: f64,
}

/// Probes every job on the fixed batch, in parallel.
fn probe_all(
    cfg: &ExplodingConfig,
    task: &dyn Task,
    jobs: &[ProbeJob],
    threads: usize,
) -> Result<Vec<ProbeOut>> {
    let batch = train::probe_batch(task, 0, cfg.probe.batch);
    run::map_parallel(jobs, threads, |j| {
        let mut rng = ChaCha8Rng::seed_from_u64(j.seed);
        let params = init_params::<f32>(
            j.cell,
            task.input_size(),
            cfg.model.hidden,
            task.output_size(),
            &j.init,
            &mut rng,
        );
        // (The gated cells' W_hh is a stack of blocks: no single matrix to measure.)
        let w_hh = params.layer.weight_hh.view();
        let (sigma_max, spectral_radius) = if j.cell.is_vanilla() {
            (spectral_norm(w_hh), spectral_radius(w_hh))
        } else {
            (f64::NAN, f64::NAN)
        };
        let model = Model {
            params,
            readout: task.readout(),
        };
        let report = crate::probe::run(&model, &batch);
        Ok(ProbeOut {
            dh_norm: report.probes.dh_norm,
            sigma_max,
            spectral_radius,
        })
    })
}

/// dh / dh[T−1] (the value at the loss).
fn ratios(dh: &[f64]) -> Vec<f64> {
    let at_loss = dh[dh.len() - 1];
    dh.iter().map(|v| v / at_loss).collect()
}

/// Measures everything, writes the CSVs into `dir`; returns the runs' entries for `run.json`.
pub fn run(cfg: &ExplodingConfig, dir: &Path, threads: usize) -> Result<Vec<serde_json::Value>> {
    let task = make_task("adding", cfg.probe.seq_len, 1)?;
    let t_len = cfg.probe.seq_len;

    // (a), (d), (e): probes at initialisation, all in one parallel batch.
    let mut jobs = Vec::new();
    for m in &cfg.scales.models {
        for &s in &cfg.scales.values {
            let (cell, init) = family(m, s).expect("validated");
            jobs.push(ProbeJob {
                model: m.clone(),
                scale: s,
                seed: 0,
                cell,
                init,
            });
        }
    }
    let n_scales = jobs.len();
    for m in &cfg.sweep.models {
        for s in cfg.sweep_scales() {
            for seed in 0..cfg.probe.seeds as u64 {
                let (cell, init) = family(m, s).expect("validated");
                jobs.push(ProbeJob {
                    model: m.clone(),
                    scale: s,
                    seed,
                    cell,
                    init,
                });
            }
        }
    }
    let n_sweep = jobs.len() - n_scales;
    for (key, _, cell, init) in profiles() {
        jobs.push(ProbeJob {
            model: key.into(),
            scale: 1.0,
            seed: 0,
            cell,
            init,
        });
    }
    println!(
        "{} probes at initialisation (adding task, T = {t_len}, {} sequences) on {threads} worker(s)",
        jobs.len(),
        cfg.probe.batch
    );
    let outs = probe_all(cfg, task.as_ref(), &jobs, threads)?;
    let (scale_part, rest) = outs.split_at(n_scales);
    let (sweep_part, profile_part) = rest.split_at(n_sweep);

    let mut scale_rows = Vec::new();
    for (j, o) in jobs[..n_scales].iter().zip(scale_part) {
        for (t, (&dh, r)) in o.dh_norm.iter().zip(ratios(&o.dh_norm)).enumerate() {
            let distance = t_len - 1 - t;
            scale_rows.push(ScaleRow {
                model: j.model.clone(),
                scale: j.scale,
                sigma_max: o.sigma_max,
                spectral_radius: o.spectral_radius,
                t,
                distance,
                dh_norm: dh,
                ratio: r,
                bound: o.sigma_max.powi(distance as i32),
            });
        }
    }
    write_csv(&dir.join("scales.csv"), &scale_rows)?;

    let d = cfg.sweep.distance;
    let sweep_rows: Vec<SweepRow> = jobs[n_scales..n_scales + n_sweep]
        .iter()
        .zip(sweep_part)
        .map(|(j, o)| SweepRow {
            model: j.model.clone(),
            scale: j.scale,
            seed: j.seed,
            distance: d,
            ratio: ratios(&o.dh_norm)[t_len - 1 - d],
        })
        .collect();
    write_csv(&dir.join("spectral_sweep.csv"), &sweep_rows)?;

    let labels = profiles();
    let mut profile_rows = Vec::new();
    for ((j, o), (_, label, _, _)) in jobs[n_scales + n_sweep..]
        .iter()
        .zip(profile_part)
        .zip(&labels)
    {
        for (t, (&dh, r)) in o.dh_norm.iter().zip(ratios(&o.dh_norm)).enumerate() {
            profile_rows.push(ProfileRow {
                model: j.model.clone(),
                label: label.to_string(),
                t,
                distance: t_len - 1 - t,
                dh_norm: dh,
                ratio: r,
            });
        }
    }
    write_csv(&dir.join("init_profiles.csv"), &profile_rows)?;

    // (b), (c): training with and without clipping.
    let mut specs = Vec::new();
    for seed in 0..cfg.clipping.seeds as u64 {
        for clip in cfg.clips() {
            specs.push(RunSpec {
                task: "adding".into(),
                seq_len: cfg.clipping.seq_len,
                copy_len: 1,
                train: cfg.clipping_config(clip, seed)?,
                variant: clip.to_string(),
            });
        }
    }
    println!("{} training runs on {threads} worker(s)", specs.len());
    let results = run::run_all(&specs, threads)?;
    write_clipping(dir, cfg, &results)?;
    Ok(results.iter().map(RunResult::json).collect())
}

/// Writes `clipping_steps.csv` and `clipping_runs.csv`.
fn write_clipping(dir: &Path, cfg: &ExplodingConfig, results: &[RunResult]) -> Result<()> {
    let window = cfg.clipping.smooth;
    let mut steps = Vec::new();
    let mut runs = Vec::new();
    for r in results {
        let t = &r.train;
        let variant = r.spec.variant.clone();
        let seed = r.spec.train.seed;
        let mean_to = |k: usize| {
            let from = (k + 1).saturating_sub(window);
            let part = &t.losses[from..=k];
            part.iter().sum::<f64>() / part.len() as f64
        };
        for k in 0..t.losses.len() {
            steps.push(StepRow {
                variant: variant.clone(),
                seed,
                step: k + 1,
                loss: t.losses[k],
                loss_mean: mean_to(k),
                grad_norm: t.grad_norms[k],
                angle_deg: t.clip_cosines[k].clamp(-1.0, 1.0).acos().to_degrees(),
            });
        }
        let last = t.metrics.last();
        runs.push(ClipRunRow {
            variant,
            seed,
            diverged_step: match t.outcome {
                Outcome::Diverged { step, .. } => Some(step),
                _ => None,
            },
            steps_run: t.losses.len(),
            first_grad_norm: t.grad_norms.first().copied().unwrap_or(f64::NAN),
            max_grad_norm: t.grad_norms.iter().copied().fold(f64::NAN, f64::max),
            final_loss: if t.losses.is_empty() {
                f64::NAN
            } else {
                mean_to(t.losses.len() - 1)
            },
            eval_loss: last.map(|m| m.eval_loss),
            eval_accuracy: last.map(|m| m.eval_accuracy),
            baseline_loss: r.baseline_loss,
            chance_accuracy: r.chance_accuracy,
        });
    }
    write_csv(&dir.join("clipping_steps.csv"), &steps)?;
    write_csv(&dir.join("clipping_runs.csv"), &runs)
}
