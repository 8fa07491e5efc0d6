//! The charts of an experiment, each drawn from the CSV beside it (never from memory), so
//! `rnnlab plot DIR` reproduces them exactly. Titles and subtitles say what is shown, on what
//! data, and how to read it.

use super::config::VanishingConfig;
use super::data::{AccuracyRow, GradRow, HeatRow, LossRow, MemoryRow, read};
use crate::plot::{
    Band, BandChart, Color, HLine, Heatmap, LegendPos, LineChart, Series, band_chart, heatmap,
    line_chart, palette, panel_line_chart, two_panel_line_chart,
};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The models in the order charts, legends and tables list them.
pub const MODEL_ORDER: [&str; 4] = ["rnn", "lstm", "gru", "rnn-relu"];

/// Colour of a model's lines, the same in every chart.
pub fn model_color(model: &str) -> Color {
    match model {
        "rnn" => Color::BLUE,
        "lstm" => Color::VERMILLION,
        "gru" => Color::GREEN,
        _ => Color::PURPLE,
    }
}

/// Display name of a model ("RNN", "LSTM", "GRU", "ReLU RNN").
pub fn model_label(model: &str) -> String {
    crate::params::CellKind::parse(model).map_or_else(|| model.to_uppercase(), |c| c.label().into())
}

/// Draws every chart whose CSV exists in `dir`; returns the PNG paths.
pub fn draw_all(dir: &Path, cfg: &VanishingConfig) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if dir.join("grad_vs_distance.csv").exists() {
        out.push(grad_vs_distance(dir, cfg)?);
    }
    let heat_files: Vec<String> = MODEL_ORDER
        .iter()
        .map(|m| format!("heatmap_{m}.csv"))
        .filter(|f| dir.join(f).exists())
        .collect();
    out.extend(heatmaps(dir, &heat_files)?);
    if dir.join("lstm_memory.csv").exists() {
        out.push(lstm_memory(dir)?);
    }
    for task in cfg.sweep.keys() {
        if dir.join(format!("accuracy_{task}.csv")).exists() {
            out.push(accuracy(dir, task)?);
        }
        if dir.join(format!("loss_{task}.csv")).exists() {
            out.push(losses(dir, task)?);
        }
    }
    Ok(out)
}

/// `grad_vs_distance.png`: ‖∂L/∂h_t‖ against distance from the loss, log y, at
/// initialisation and after training, with the Pascanu et al. bound for the RNN.
fn grad_vs_distance(dir: &Path, cfg: &VanishingConfig) -> Result<PathBuf> {
    let rows: Vec<GradRow> = read(&dir.join("grad_vs_distance.csv"))?;
    let mut panels = Vec::new();
    // Both panels share the y range: the measured values, and the bound up to 100× above them.
    let measured = rows
        .iter()
        .map(|r| r.dh_norm)
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = measured.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let y_range = (lo / 3.0, hi * 100.0);
    for panel in ["init", "trained"] {
        let here: Vec<&GradRow> = rows.iter().filter(|r| r.panel == panel).collect();
        if here.is_empty() {
            continue;
        }
        let mut series = Vec::new();
        let mut steps = Vec::new();
        for model in models_in(here.iter().map(|r| r.model.as_str())) {
            let mine: Vec<&&GradRow> = here.iter().filter(|r| r.model == model).collect();
            steps.push(format!("{} step {}", model_label(&model), mine[0].step));
            series.push(Series::new(
                model_label(&model),
                mine.iter()
                    .map(|r| (r.distance as f64, r.dh_norm))
                    .collect(),
                model_color(&model),
            ));
            if let Some(sigma) = mine[0].sigma_max {
                let bound = mine
                    .iter()
                    .filter_map(|r| r.pascanu_bound.map(|b| (r.distance as f64, b)))
                    .collect();
                series.push(
                    Series::new(
                        format!(
                            "{} bound ‖g_T‖·σ_max^d, σ_max = {sigma:.2}",
                            model_label(&model)
                        ),
                        bound,
                        model_color(&model),
                    )
                    .dashed(),
                );
            }
        }
        let when = if panel == "init" {
            "at initialisation"
        } else {
            "after training"
        };
        panels.push(LineChart {
            title: format!("‖∂L/∂h_t‖ {when}"),
            subtitle: Some(format!(
                "adding task, T = {}, mean over {} probe sequences ({})\nthe loss is at distance 0; read right-to-left as the gradient travels back in time",
                cfg.probe.seq_len,
                cfg.probe.batch,
                steps.join(", ")
            )),
            x_label: "distance from the loss  d = T − 1 − t".into(),
            y_label: "gradient norm ‖∂L/∂h_t‖ (log scale)".into(),
            log_y: true,
            series,
            y_range: Some(y_range),
            legend: LegendPos::LowerLeft,
            ..LineChart::default()
        });
    }
    let path = dir.join("grad_vs_distance.png");
    match panels.as_slice() {
        [one] => line_chart(&path, one)?,
        [left, right] => two_panel_line_chart(&path, left, right)?,
        _ => anyhow::bail!(
            "{}: no probe data",
            dir.join("grad_vs_distance.csv").display()
        ),
    }
    Ok(path)
}

/// `heatmap_MODEL.png`: training step × timestep → log10 ‖∂L/∂h_t‖, one colour scale for all.
fn heatmaps(dir: &Path, files: &[String]) -> Result<Vec<PathBuf>> {
    let all: Vec<Vec<HeatRow>> = files
        .iter()
        .map(|f| read(&dir.join(f)))
        .collect::<Result<_>>()?;
    let finite = all
        .iter()
        .flatten()
        .map(|r| r.log10_dh_norm)
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    // One scale for all models, spanning at most DECADES below the largest value: the RNN's
    // gradient falls by 30+ decades, and a scale that wide would flatten the LSTM's structure.
    // Everything below the window is drawn in the darkest colour (the chart says so).
    const DECADES: f64 = 12.0;
    let clipped = lo < hi - DECADES;
    let lo = lo.max(hi - DECADES);
    let mut out = Vec::new();
    for rows in &all {
        let Some(first) = rows.first() else { continue };
        let model = first.model.clone();
        let steps: Vec<usize> = dedup(rows.iter().map(|r| r.step));
        let ts: Vec<usize> = dedup(rows.iter().map(|r| r.t));
        let mut values = vec![vec![f64::NAN; ts.len()]; steps.len()];
        for r in rows {
            let i = steps.binary_search(&r.step).expect("from the same rows");
            values[i][r.t] = r.log10_dh_norm;
        }
        let path = dir.join(format!("heatmap_{model}.png"));
        heatmap(
            &path,
            &Heatmap {
                title: format!("{}: log10 ‖∂L/∂h_t‖ during training", model_label(&model)),
                subtitle: Some(format!(
                    "adding task, T = {}; each row is one probe of the fixed probe batch; the loss is at the right edge (t = {})\ndark = the gradient no longer reaches that timestep; one colour scale for every model{}",
                    ts.len(),
                    ts.len() - 1,
                    if clipped {
                        format!(", darkest = {DECADES} or more decades below the largest value")
                    } else {
                        String::new()
                    }
                )),
                x_label: "timestep t".into(),
                y_label: "training step".into(),
                colorbar_label: "log10 ‖∂L/∂h_t‖".into(),
                x_values: ts.iter().map(|&t| t as f64).collect(),
                y_values: steps.iter().map(|&s| s as f64).collect(),
                values,
                value_range: (lo.is_finite() && hi > lo).then_some((lo, hi)),
            },
        )?;
        out.push(path);
    }
    Ok(out)
}

/// `lstm_memory.png`: the gate that keeps the state (LSTM forget gate, GRU update gate) and
/// the gradient along that state — why the gated cells keep their gradient.
fn lstm_memory(dir: &Path) -> Result<PathBuf> {
    let rows: Vec<MemoryRow> = read(&dir.join("lstm_memory.csv"))?;
    let mut gate = Vec::new();
    let mut grads = Vec::new();
    for model in models_in(rows.iter().map(|r| r.model.as_str())) {
        let (gate_name, grad_name) = if model == "lstm" {
            ("f_t", "‖∂L/∂c_t‖")
        } else {
            ("z_t", "‖∂L/∂h_t‖")
        };
        for panel in dedup_str(
            rows.iter()
                .filter(|r| r.model == model)
                .map(|r| r.panel.clone()),
        ) {
            let mine: Vec<&MemoryRow> = rows
                .iter()
                .filter(|r| r.model == model && r.panel == panel)
                .collect();
            let init = panel == "init";
            let when = format!(
                "{} (step {})",
                if init { "at init" } else { "trained" },
                mine[0].step
            );
            let color = model_color(&model);
            let styled = |s: Series| if init { s.dashed() } else { s };
            gate.push(styled(Series::new(
                format!("{} {gate_name}, {when}", model_label(&model)),
                mine.iter()
                    .map(|r| (r.distance as f64, r.keep_gate))
                    .collect(),
                color,
            )));
            // The LSTM's gradient travels along c_t; the GRU has only h_t.
            grads.push(styled(Series::new(
                format!("{} {grad_name}, {when}", model_label(&model)),
                mine.iter()
                    .map(|r| (r.distance as f64, r.dc_norm.unwrap_or(r.dh_norm)))
                    .collect(),
                color,
            )));
        }
    }
    let left = LineChart {
        title: "The gate that keeps the state".into(),
        subtitle: Some("mean over probe sequences and units; dashed: at initialisation\nLSTM: c_t = f ⊙ c_{t−1} + i ⊙ g      GRU: h_t = z ⊙ h_{t−1} + (1 − z) ⊙ n\na gate near 1 passes the state, and its gradient, back almost unchanged".into()),
        x_label: "distance from the loss  d = T − 1 − t".into(),
        y_label: "mean gate activation".into(),
        series: gate,
        y_range: Some((0.0, 1.0)),
        legend: LegendPos::LowerRight,
        ..LineChart::default()
    };
    let right = LineChart {
        title: "The gradient along the kept state".into(),
        subtitle: Some("LSTM: through the cell state c_t; GRU: through h_t, its only state\ndashed: at initialisation; solid: after training".into()),
        x_label: "distance from the loss  d = T − 1 − t".into(),
        y_label: "gradient norm (log scale)".into(),
        log_y: true,
        series: grads,
        legend: LegendPos::LowerLeft,
        ..LineChart::default()
    };
    let path = dir.join("lstm_memory.png");
    two_panel_line_chart(&path, &left, &right)?;
    Ok(path)
}

/// `accuracy_TASK.png`: held-out accuracy against T, mean and min–max over seeds.
fn accuracy(dir: &Path, task: &str) -> Result<PathBuf> {
    let rows: Vec<AccuracyRow> = read(&dir.join(format!("accuracy_{task}.csv")))?;
    let mut bands = Vec::new();
    for model in models_in(rows.iter().map(|r| r.model.as_str())) {
        let mut by_t: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.model == model) {
            by_t.entry(r.seq_len).or_default().push(r.accuracy);
        }
        let points = by_t
            .iter()
            .map(|(&t, a)| {
                let mean = a.iter().sum::<f64>() / a.len() as f64;
                let (lo, hi) = a
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    });
                (t as f64, mean, lo, hi)
            })
            .collect();
        bands.push(Band {
            label: model_label(&model),
            color: model_color(&model),
            points,
        });
    }
    let seeds = dedup(rows.iter().map(|r| r.seed as usize)).len();
    let steps = rows.iter().map(|r| r.steps_run).max().unwrap_or(0);
    let chance = rows.first().map_or(0.0, |r| r.chance_accuracy);
    let (what, chance_label) = if task == "copy" {
        (
            "share of the K recalled symbols that are right",
            format!("chance 1/8 = {chance:.3}"),
        )
    } else {
        (
            "share of sequences with |error| < 0.04",
            format!("always answering 1: {chance:.3}"),
        )
    };
    let path = dir.join(format!("accuracy_{task}.png"));
    band_chart(
        &path,
        &BandChart {
            title: format!("{task} task: held-out accuracy as sequences grow"),
            subtitle: Some(format!(
                "line = mean over {seeds} seed(s), band = min…max; at most {steps} training steps per run, stopped early once solved\naccuracy = {what}"
            )),
            x_label: "sequence length T (log scale)".into(),
            y_label: "held-out accuracy".into(),
            log_x: true,
            bands,
            hlines: vec![HLine::new(chance_label, chance, Color::GREY)],
            y_range: Some((0.0, 1.02)),
            legend: LegendPos::Auto,
        },
    )?;
    Ok(path)
}

/// `loss_TASK.png`: training loss against step, one panel per model, one line per T
/// (first seed), with the memoryless baseline.
fn losses(dir: &Path, task: &str) -> Result<PathBuf> {
    let rows: Vec<LossRow> = read(&dir.join(format!("loss_{task}.csv")))?;
    let acc: Vec<AccuracyRow> = read(&dir.join(format!("accuracy_{task}.csv"))).unwrap_or_default();
    let first_seed = rows.iter().map(|r| r.seed).min().unwrap_or(0);
    let rows: Vec<&LossRow> = rows.iter().filter(|r| r.seed == first_seed).collect();
    // The y range covers the curves and the baselines drawn with them.
    let baselines = acc.iter().map(|a| a.baseline_loss);
    let positive = rows
        .iter()
        .map(|r| r.train_loss)
        .chain(baselines)
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let seq_lens: Vec<usize> = dedup(rows.iter().map(|r| r.seq_len));
    let mut panels = Vec::new();
    for model in models_in(rows.iter().map(|r| r.model.as_str())) {
        let mut series = Vec::new();
        let mut hlines = Vec::new();
        for (k, &t) in seq_lens.iter().enumerate() {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.model == model && r.seq_len == t)
                .map(|r| (r.step as f64, r.train_loss))
                .collect();
            if !points.is_empty() {
                series.push(Series::new(format!("T = {t}"), points, palette(k)));
            }
            // The copy baseline depends on T; the adding baseline does not.
            if let Some(a) = acc.iter().find(|a| a.seq_len == t)
                && (task == "copy" || k == 0)
            {
                let label = if task == "copy" {
                    format!("baseline T = {t}: {:.3}", a.baseline_loss)
                } else {
                    format!("baseline (answer 1): {:.3}", a.baseline_loss)
                };
                hlines.push(HLine::new(
                    label,
                    a.baseline_loss,
                    if task == "copy" {
                        palette(k)
                    } else {
                        Color::GREY
                    },
                ));
            }
        }
        panels.push(LineChart {
            title: format!("{}: training loss, {task} task", model_label(&model)),
            subtitle: Some(format!(
                "mean training loss between evaluations, seed {first_seed}; dashed = what a model without memory reaches\nbelow the baseline = the model uses information from far back"
            )),
            x_label: "training step".into(),
            y_label: if task == "copy" { "cross-entropy (log scale)".into() } else { "MSE (log scale)".into() },
            log_y: true,
            series,
            hlines,
            y_range: (lo.is_finite() && hi > 0.0).then_some((lo / 1.5, hi * 1.5)),
            legend: LegendPos::Auto,
            ..LineChart::default()
        });
    }
    let path = dir.join(format!("loss_{task}.png"));
    match panels.as_slice() {
        [] => anyhow::bail!(
            "{}: no rows",
            dir.join(format!("loss_{task}.csv")).display()
        ),
        [one] => line_chart(&path, one)?,
        many => panel_line_chart(&path, many)?,
    }
    Ok(path)
}

/// Model names in a fixed order ([`MODEL_ORDER`], then others alphabetically).
pub fn models_in<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v = dedup_str(names.map(String::from));
    v.sort_by_key(|m| (model_rank(m), m.clone()));
    v
}

/// Position of a model in [`MODEL_ORDER`] (unknown names last).
pub fn model_rank(model: &str) -> usize {
    MODEL_ORDER
        .iter()
        .position(|k| *k == model)
        .unwrap_or(MODEL_ORDER.len())
}

/// The distinct values, sorted.
pub fn dedup(it: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The distinct strings, in order of first appearance.
pub fn dedup_str(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in it {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}
