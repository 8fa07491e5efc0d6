//! `summary.md`: what was run, what each chart shows, and the measured numbers behind it,
//! written from the same CSVs the charts are drawn from.

use super::charts::{MODEL_ORDER, model_label, model_rank};
use super::config::VanishingConfig;
use super::data::{AccuracyRow, GradRow, HeatRow, MemoryRow, read};
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Writes `dir/summary.md`.
pub fn write(dir: &Path, cfg: &VanishingConfig) -> Result<()> {
    let mut md = String::new();
    let name = run_json(dir)["experiment"]
        .as_str()
        .unwrap_or("experiment")
        .to_string();
    writeln!(md, "# rnnlab experiment `{name}`\n")?;
    writeln!(md, "{}.\n", cfg.description)?;
    writeln!(
        md,
        "Models: hidden size {}, W_hh init `{}`, LSTM forget-gate bias {}. Training: batch {}, {} lr {}, global-norm clip {}, \
         held-out set of {} sequences evaluated every {} steps, early stop at accuracy {}. Seeds: run k uses init seed k and data seed k. {}\n",
        cfg.model.hidden,
        cfg.model.init,
        cfg.model.forget_bias,
        cfg.train.batch,
        cfg.train.optimizer,
        cfg.train.lr,
        cfg.train.clip,
        cfg.train.eval_size,
        cfg.train.eval_every,
        cfg.train.target_accuracy,
        run_line(dir)
    )?;

    if let Ok(rows) = read::<GradRow>(&dir.join("grad_vs_distance.csv")) {
        gradient_section(&mut md, cfg, &rows)?;
    }
    let heat: Vec<&str> = MODEL_ORDER
        .into_iter()
        .filter(|m| dir.join(format!("heatmap_{m}.csv")).exists())
        .collect();
    if !heat.is_empty() {
        let files: Vec<String> = heat.iter().map(|m| format!("`heatmap_{m}.png`")).collect();
        writeln!(
            md,
            "## How the picture changes during training: {}\n",
            files.join(", ")
        )?;
        for m in &heat {
            writeln!(md, "![{} heatmap](heatmap_{m}.png)", model_label(m))?;
        }
        writeln!(md)?;
        let rnn = read::<HeatRow>(&dir.join("heatmap_rnn.csv"))
            .map(|rows| rnn_rows_sentence(&rows))
            .unwrap_or_default();
        writeln!(
            md,
            "Each row is one probe (training step, bottom to top), each column a timestep; the colour is log10 ‖∂L/∂h_t‖ on one shared scale. \
             The loss sits at the right edge.{rnn} The LSTM's rows stay bright much further left.{}\n",
            if heat.contains(&"gru") {
                " The GRU starts out as dark as the RNN (its update gate z = σ(≈0) ≈ 0.5 halves the direct path h_{t−1} → h_t \
                 at every step) and brightens as training pushes z towards 1 where the task needs memory."
            } else {
                ""
            }
        )?;
    }
    if let Ok(rows) = read::<MemoryRow>(&dir.join("lstm_memory.csv")) {
        memory_section(&mut md, &rows)?;
    }
    for task in cfg.sweep.keys() {
        if let Ok(rows) = read::<AccuracyRow>(&dir.join(format!("accuracy_{task}.csv"))) {
            accuracy_section(&mut md, task, &rows)?;
        }
    }
    crate::fsutil::write_atomic(&dir.join("summary.md"), md.as_bytes())
}

/// Decades the gradient may lose over 50 steps back for a heatmap row to count as "reaching"
/// that far.
const REACH_DECADES: f64 = 6.0;

/// What the RNN's heatmap rows show, measured: in how many probes the gradient 50 steps back
/// (or half the sequence, if shorter) has fallen more than [`REACH_DECADES`] decades below its
/// value at the loss, and at which steps it did not. Empty without rows.
fn rnn_rows_sentence(rows: &[HeatRow]) -> String {
    let mut by_step: BTreeMap<usize, BTreeMap<usize, f64>> = BTreeMap::new();
    for r in rows {
        by_step
            .entry(r.step)
            .or_default()
            .insert(r.t, r.log10_dh_norm);
    }
    let reaching: Vec<usize> = by_step
        .iter()
        .filter(|(_, ts)| {
            let last = ts.keys().next_back().copied().unwrap_or(0);
            let back = last.saturating_sub(50.min(last.div_ceil(2)));
            ts[&last] - ts[&back] < REACH_DECADES
        })
        .map(|(&step, _)| step)
        .collect();
    let total = by_step.len();
    let early = "the error signal from the loss does not reach the early timesteps, where the first \
                 marker of the adding task lies";
    match reaching.len() {
        0 if total == 0 => String::new(),
        0 => format!(
            " For the RNN the colour darkens quickly towards the left in every row (more than \
             {REACH_DECADES} decades lost 50 steps back): whatever it learns, {early}."
        ),
        n => {
            let steps: Vec<String> = reaching.iter().map(|s| s.to_string()).collect();
            let last_dark = by_step.keys().next_back() != reaching.last();
            format!(
                " For the RNN the colour darkens quickly towards the left in {} of {total} rows \
                 (more than {REACH_DECADES} decades lost 50 steps back): in most of training {early}. \
                 In the probe{} at step{} {} the gradient reached further back{}.",
                total - n,
                if n == 1 { "" } else { "s" },
                if n == 1 { "" } else { "s" },
                steps.join(", "),
                if last_dark {
                    "; the later rows are dark again"
                } else {
                    ""
                }
            )
        }
    }
}

/// The `run.json` of a result folder (null if there is none).
fn run_json(dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// "Wall time 95 s on 2 worker(s); the full configuration is in `config.toml`, …" from
/// `run.json` (empty if there is none).
pub(crate) fn run_line(dir: &Path) -> String {
    let run = run_json(dir);
    match (
        run["total_seconds"].as_f64(),
        run["jobs"].as_u64(),
        run["quick"].as_bool(),
    ) {
        (Some(s), Some(j), q) => format!(
            "Wall time {s:.0} s on {j} worker(s){}; the full configuration is in `config.toml`, per-run timings in `run.json`.",
            if q == Some(true) {
                " (`--quick`: a tiny budget, the numbers are only indicative)"
            } else {
                ""
            }
        ),
        _ => String::new(),
    }
}

/// g(d) / g(0) for one model's probe.
fn ratio_at(rows: &[&GradRow], d: usize) -> Option<f64> {
    let g0 = rows.iter().find(|r| r.distance == 0)?.dh_norm;
    let gd = rows.iter().find(|r| r.distance == d)?.dh_norm;
    Some(gd / g0)
}

/// A number for prose: 3 decimals in [0.01, 1000), scientific notation outside.
pub(crate) fn sci(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if (1e-2..1e3).contains(&v.abs()) {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    }
}

fn gradient_section(md: &mut String, cfg: &VanishingConfig, rows: &[GradRow]) -> Result<()> {
    writeln!(md, "## The vanishing gradient: `grad_vs_distance.png`\n")?;
    writeln!(
        md,
        "![gradient norm against distance](grad_vs_distance.png)\n"
    )?;
    writeln!(
        md,
        "The probe is ‖∂L/∂h_t‖, the gradient of the adding task's loss (at the last step) with respect to the hidden state t steps earlier, \
         averaged over {} fixed sequences of length T = {}, computed in f64. Distance d = T − 1 − t is how far back the gradient has travelled.\n",
        cfg.probe.batch, cfg.probe.seq_len
    )?;
    let t_len = rows.iter().map(|r| r.distance).max().unwrap_or(0) + 1;
    let mid = (t_len / 2).min(50);
    for panel in ["init", "trained"] {
        let here: Vec<&GradRow> = rows.iter().filter(|r| r.panel == panel).collect();
        if here.is_empty() {
            continue;
        }
        let when = if panel == "init" {
            "At initialisation"
        } else {
            "After training"
        };
        let mut lines = Vec::new();
        for model in MODEL_ORDER {
            let mine: Vec<&GradRow> = here.iter().copied().filter(|r| r.model == model).collect();
            if let (Some(a), Some(b)) = (ratio_at(&mine, mid), ratio_at(&mine, t_len - 1)) {
                let step = mine[0].step;
                let per_step = b.powf(1.0 / (t_len - 1) as f64);
                let mut line = format!(
                    "{} (step {step}): {} of the gradient at the loss at distance {mid}, {} at distance {} \
                     (a factor {per_step:.3} per step on average).",
                    model_label(model),
                    sci(a),
                    sci(b),
                    t_len - 1
                );
                if let Some(sigma) = mine[0].sigma_max {
                    let verdict = if sigma < 1.0 {
                        "below 1: Pascanu et al.'s sufficient condition for vanishing holds, and the bound alone guarantees it"
                            .to_string()
                    } else {
                        format!(
                            "not below 1: Pascanu et al.'s sufficient condition for vanishing does not hold, and the bound (dashed; {} at d = {}) \
                             does not force vanishing by itself",
                            sci(sigma.powi(t_len as i32 - 1)),
                            t_len - 1
                        )
                    };
                    line.push_str(&format!(
                        " Its largest singular value σ_max(W_hh) = {sigma:.3}, so γσ_max (γ = 1 bounds |tanh'|) is {verdict}."
                    ));
                    if let Some(r) = mine[0].spectral_radius {
                        line.push_str(&format!(
                            " The spectral radius ρ(W_hh) = {r:.3} is the rate at which ‖W_hhᵏ‖ shrinks or grows in the long run, \
                             and tanh' = 1 − h² ≤ 1 shrinks each step further: the measured rate is {per_step:.3} per step."
                        ));
                    }
                }
                lines.push(line);
            }
        }
        if !lines.is_empty() {
            writeln!(md, "- {when}:")?;
            for line in lines {
                writeln!(md, "  - {line}")?;
            }
        }
    }
    writeln!(
        md,
        "\nRead the chart from left (the loss) to right (the start of the sequence): a straight falling line on the log axis is an exponential decay. \
         The dashed line is the Pascanu et al. (2013) upper bound ‖g_{{T−1}}‖·(γσ_max(W_hh))^d with γ = 1.\n"
    )?;
    Ok(())
}

fn memory_section(md: &mut String, rows: &[MemoryRow]) -> Result<()> {
    writeln!(
        md,
        "## Why the gated cells keep their gradient: `lstm_memory.png`\n"
    )?;
    writeln!(
        md,
        "![gates that keep the state, and the gradient along it](lstm_memory.png)\n"
    )?;
    let mut lines = Vec::new();
    for model in ["lstm", "gru"] {
        for panel in ["init", "trained"] {
            let mine: Vec<&MemoryRow> = rows
                .iter()
                .filter(|r| r.model == model && r.panel == panel)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let g_mean = mine.iter().map(|r| r.keep_gate).sum::<f64>() / mine.len() as f64;
            let dmax = mine.iter().map(|r| r.distance).max().unwrap_or(0);
            let at = |d: usize| {
                mine.iter()
                    .find(|r| r.distance == d)
                    .map(|r| r.dc_norm.unwrap_or(r.dh_norm))
                    .unwrap_or(f64::NAN)
            };
            let (gate, grad) = if model == "lstm" {
                ("forget gate", "‖∂L/∂c_t‖")
            } else {
                ("update gate", "‖∂L/∂h_t‖")
            };
            lines.push(format!(
                "- {} {} (step {}): mean {gate} {g_mean:.3}; {grad} at distance {dmax} is {} of its value at the loss.",
                model_label(model),
                if panel == "init" { "at initialisation" } else { "after training" },
                mine[0].step,
                sci(at(dmax) / at(0))
            ));
        }
    }
    writeln!(
        md,
        "Along the LSTM's cell state the backward step is ∂c_t/∂c_{{t−1}} = f_t (plus paths through the gates); along the GRU's state it \
         contains diag(z_t), from h_t = z ⊙ h_{{t−1}} + (1 − z) ⊙ n. With the gate near 1 the gradient passes back almost unchanged, \
         instead of being multiplied by W_hh and tanh' at every step as in the RNN. The chart shows the mean over units: a \
         mean well below 1 next to a flat gradient line means that a few units keep their gate near 1 (a gate of 0.6 at every \
         step would shrink the gradient by 0.6^99 ≈ 1e-22 over 99 steps) — those units carry the memory.\n"
    )?;
    writeln!(md, "{}\n", lines.join("\n"))?;
    Ok(())
}

fn accuracy_section(md: &mut String, task: &str, rows: &[AccuracyRow]) -> Result<()> {
    writeln!(
        md,
        "## Accuracy as sequences grow, {task} task: `accuracy_{task}.png`, `loss_{task}.png`\n"
    )?;
    writeln!(
        md,
        "![accuracy, {task}](accuracy_{task}.png)\n![loss, {task}](loss_{task}.png)\n"
    )?;
    let chance = rows.first().map_or(0.0, |r| r.chance_accuracy);
    writeln!(
        md,
        "Held-out accuracy at the end of each run ({}; chance/memoryless level {chance:.3}). \"solved\" counts the seeds that reached the target accuracy.\n",
        if task == "copy" {
            "share of recalled symbols that are right"
        } else {
            "share of sequences with |error| < 0.04"
        }
    )?;
    writeln!(
        md,
        "| model | T | mean accuracy | min | max | solved | median steps to solve | final loss (mean) | baseline loss |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    let mut groups: BTreeMap<(usize, String, usize), Vec<&AccuracyRow>> = BTreeMap::new();
    for r in rows {
        let key = (model_rank(&r.model), r.model.clone(), r.seq_len);
        groups.entry(key).or_default().push(r);
    }
    for rs in groups.values() {
        let acc: Vec<f64> = rs.iter().map(|r| r.accuracy).collect();
        let mean = acc.iter().sum::<f64>() / acc.len() as f64;
        let (lo, hi) = acc
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let mut solved: Vec<usize> = rs.iter().filter_map(|r| r.solved_step).collect();
        solved.sort_unstable();
        let median = solved
            .get(solved.len() / 2)
            .map_or("—".to_string(), |s| s.to_string());
        let loss = rs.iter().map(|r| r.eval_loss).sum::<f64>() / rs.len() as f64;
        let diverged = rs.iter().filter(|r| r.diverged_step.is_some()).count();
        writeln!(
            md,
            "| {} | {} | {mean:.3} | {lo:.3} | {hi:.3} | {}/{}{} | {median} | {} | {:.4} |",
            model_label(&rs[0].model),
            rs[0].seq_len,
            solved.len(),
            rs.len(),
            if diverged > 0 {
                format!(" ({diverged} diverged)")
            } else {
                String::new()
            },
            sci(loss),
            rs[0].baseline_loss
        )?;
    }
    writeln!(md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: usize, t: usize, v: f64) -> HeatRow {
        HeatRow {
            model: "rnn".into(),
            step,
            t,
            log10_dh_norm: v,
        }
    }

    /// Rows that lose 10 decades over 100 steps (0.1 a step), and one at step 600 that loses
    /// only 0.02 a step: the sentence counts and names them from the numbers.
    #[test]
    fn rnn_sentence_is_measured() {
        let probe = |step: usize, per_step: f64| -> Vec<HeatRow> {
            (0..100)
                .map(|t| row(step, t, -3.0 - per_step * (99 - t) as f64))
                .collect()
        };
        let mut rows: Vec<HeatRow> = [0, 200, 400, 800]
            .iter()
            .flat_map(|&s| probe(s, 0.2))
            .collect();
        assert!(rnn_rows_sentence(&rows).contains("in every row"));
        rows.extend(probe(600, 0.02));
        let s = rnn_rows_sentence(&rows);
        assert!(s.contains("in 4 of 5 rows"), "{s}");
        assert!(
            s.contains(
                "at step 600 the gradient reached further back; the later rows are dark again"
            ),
            "{s}"
        );
        assert_eq!(rnn_rows_sentence(&[]), "");
    }
}
