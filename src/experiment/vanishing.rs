//! The vanishing-gradient experiment (`kind = "vanishing"`, `experiments/vanishing.toml`):
//! which runs it trains, and the CSVs it writes from them. The charts are drawn from those
//! CSVs in [`super::charts`], the words in [`super::summary`].
//!
//! Runs: every (task, T, model, seed) of the accuracy sweeps; the adding-task runs at
//! T = probe.seq_len with seed 0 are probed during training (and added if the sweep has no
//! such run).

use super::config::VanishingConfig;
use super::data::{AccuracyRow, GradRow, HeatRow, LossRow, MemoryRow};
use super::run::{self, RunResult, RunSpec};
use crate::params::CellKind;
use crate::report::write_csv;
use crate::tasks::make_task;
use crate::{checkpoint, train};
use anyhow::Result;
use std::path::Path;

/// What a run is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// Part of the accuracy sweep (counts in the accuracy table and charts).
    pub in_sweep: bool,
    /// Probed during training (the gradient charts).
    pub probe: bool,
}

/// A finished run with its role.
type Planned = (Role, RunResult);

/// The runs the experiment consists of: every sweep combination, with the probed runs
/// (adding task, T = probe.seq_len, seed 0) marked or added.
pub fn plan(cfg: &VanishingConfig) -> Result<Vec<(Role, RunSpec)>> {
    let mut specs = Vec::new();
    let spec = |task: &str, seq_len, copy_len, cell, seed, steps| -> Result<RunSpec> {
        Ok(RunSpec {
            task: task.to_string(),
            seq_len,
            copy_len,
            train: cfg.train_config(cell, steps, seed)?,
            variant: String::new(),
        })
    };
    for (task, s) in &cfg.sweep {
        for &seq_len in &s.seq_lens {
            for model in &s.models {
                for seed in 0..s.seeds as u64 {
                    let cell = CellKind::parse(model).expect("validated");
                    let role = Role {
                        in_sweep: true,
                        probe: false,
                    };
                    specs.push((role, spec(task, seq_len, s.copy_len, cell, seed, s.steps)?));
                }
            }
        }
    }
    let adding = &cfg.sweep["adding"];
    for model in &adding.models {
        let cell = CellKind::parse(model).expect("validated");
        let probed = |r: &RunSpec| {
            r.task == "adding"
                && r.seq_len == cfg.probe.seq_len
                && r.train.cell == cell
                && r.train.seed == 0
        };
        match specs.iter_mut().find(|(_, r)| probed(r)) {
            Some((role, _)) => role.probe = true,
            None => {
                let role = Role {
                    in_sweep: false,
                    probe: true,
                };
                let seq_len = cfg.probe.seq_len;
                specs.push((
                    role,
                    spec("adding", seq_len, adding.copy_len, cell, 0, adding.steps)?,
                ));
            }
        }
    }
    for (role, s) in &mut specs {
        if role.probe {
            s.train.probe_every = Some(cfg.probe.every);
        }
    }
    Ok(specs)
}

/// Trains every run on `jobs` workers and writes the CSVs into `dir`; returns the runs'
/// entries for `run.json`.
pub fn run(cfg: &VanishingConfig, dir: &Path, jobs: usize) -> Result<Vec<serde_json::Value>> {
    let planned = plan(cfg)?;
    let (roles, specs): (Vec<Role>, Vec<RunSpec>) = planned.into_iter().unzip();
    println!("{} training runs on {jobs} worker(s)", specs.len());
    let results = run::run_all(&specs, jobs)?;
    let runs: Vec<Planned> = roles.into_iter().zip(results).collect();
    write_data(dir, cfg, &runs)?;
    write_checkpoints(dir, &runs)?;
    Ok(runs
        .iter()
        .map(|(role, r)| {
            let mut j = r.json();
            j["in_sweep"] = role.in_sweep.into();
            j["probed"] = role.probe.into();
            j
        })
        .collect())
}

/// Writes what the gradient charts can be recomputed from, by `rnnlab probe` or by PyTorch
/// (`tests/reference/torch_interop.py`): in `checkpoints/`, the probe batch
/// (`probe_batch.safetensors`) and each probed model at initialisation and at its last probe
/// (`{model}_init.safetensors`, `{model}_trained.safetensors`, PyTorch names). Probing a
/// checkpoint on the batch gives the `init` / `trained` rows of `grad_vs_distance.csv`.
fn write_checkpoints(dir: &Path, runs: &[Planned]) -> Result<()> {
    let probed: Vec<&RunResult> = runs
        .iter()
        .filter(|(role, _)| role.probe)
        .map(|(_, r)| r)
        .collect();
    let Some(first) = probed.first() else {
        return Ok(());
    };
    let ckpt = dir.join("checkpoints");
    std::fs::create_dir_all(&ckpt)?;
    // Every probed run has the same task, T and data seed (see `plan`), so one batch.
    let task_of = |spec: &RunSpec| make_task(&spec.task, spec.seq_len, spec.copy_len);
    let t = &first.spec.train;
    train::probe_batch(task_of(&first.spec)?.as_ref(), t.data_seed, t.probe_size)
        .save(&ckpt.join("probe_batch.safetensors"))?;
    for r in probed {
        let spec = &r.spec;
        let save = |m: &crate::model::Model<f32>, which: &str| {
            let name = format!("{}_{which}.safetensors", spec.train.cell.name());
            checkpoint::save(&ckpt.join(name), m, &spec.task, spec.seq_len)
        };
        save(
            &train::new_model(task_of(spec)?.as_ref(), &spec.train),
            "init",
        )?;
        // The trained panel is the last probe; it is of the final model unless the run
        // diverged (then the last finite model was probed, and no checkpoint matches it).
        if r.train.probes.last().map(|p| p.step) == Some(r.train.losses.len()) {
            save(&r.train.model, "trained")?;
        }
    }
    Ok(())
}

/// Writes the CSVs every chart is drawn from.
fn write_data(dir: &Path, cfg: &VanishingConfig, runs: &[Planned]) -> Result<()> {
    let (mut grad, mut memory) = (Vec::new(), Vec::new());
    for (_, r) in runs.iter().filter(|(role, _)| role.probe) {
        let model = r.spec.train.cell.name().to_string();
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
            if let Some(gate) = &p.keep_gate {
                for t in 0..t_len {
                    memory.push(MemoryRow {
                        model: model.clone(),
                        panel: panel.into(),
                        step: p.step,
                        t,
                        distance: t_len - 1 - t,
                        keep_gate: gate[t],
                        dc_norm: p.probes.dc_norm.as_ref().map(|dc| dc[t]),
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
        let runs: Vec<&RunResult> = runs
            .iter()
            .filter(|(role, r)| role.in_sweep && &r.spec.task == task)
            .map(|(_, r)| r)
            .collect();
        let acc: Vec<AccuracyRow> = runs
            .iter()
            .map(|r| {
                let last = r.train.metrics.last();
                AccuracyRow {
                    task: task.clone(),
                    model: r.spec.train.cell.name().into(),
                    seq_len: r.spec.seq_len,
                    seed: r.spec.train.seed,
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
                    model: r.spec.train.cell.name().into(),
                    seq_len: r.spec.seq_len,
                    seed: r.spec.train.seed,
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
