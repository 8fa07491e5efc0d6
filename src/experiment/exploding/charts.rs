//! The charts of the exploding-gradient experiment, each drawn from the CSV beside it (never
//! from memory), so `rnnlab plot DIR` reproduces them exactly. Titles and subtitles say what is
//! shown, on what data, and how to read it.

use super::{ClipRunRow, ExplodingConfig, ProfileRow, ScaleRow, StepRow, SweepRow, family_label};
use crate::experiment::charts::{dedup_str, model_color};
use crate::experiment::data::read;
use crate::plot::{
    Color, HLine, LegendPos, LineChart, Series, VLine, line_chart, palette, panel_line_chart,
};
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Draws every chart whose CSV exists in `dir`; returns the PNG paths.
pub fn draw_all(dir: &Path, cfg: &ExplodingConfig) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if dir.join("scales.csv").exists() {
        out.push(scales(dir, cfg)?);
    }
    if dir.join("spectral_sweep.csv").exists() {
        out.push(spectral_sweep(dir, cfg)?);
    }
    if dir.join("init_profiles.csv").exists() {
        out.push(init_profiles(dir, cfg)?);
    }
    if dir.join("clipping_steps.csv").exists() {
        out.push(clipping(dir, cfg)?);
        out.push(clip_norm_vs_value(dir, cfg)?);
    }
    Ok(out)
}

/// Colour of a clipping variant, the same in both clipping charts.
pub fn variant_color(variant: &str, all: &[String]) -> Color {
    if variant == "no clipping" {
        return Color::VERMILLION;
    }
    if variant.starts_with("clip norm") {
        return Color::BLUE;
    }
    let values: Vec<&String> = all.iter().filter(|v| v.starts_with("clip value")).collect();
    let k = values.iter().position(|v| *v == variant).unwrap_or(0);
    [Color::GREEN, Color::PURPLE, Color::ORANGE, Color::SKY_BLUE][k % 4]
}

/// Colour of an initialisation profile.
fn profile_color(key: &str) -> Color {
    match key {
        "rnn-orthogonal" => Color::SKY_BLUE,
        "irnn" => Color::PURPLE,
        other => model_color(other),
    }
}

/// `scales.png`: ‖∂L/∂h_t‖ relative to its value at the loss, against distance, one line per
/// scale with its bound dashed, one panel per model family.
fn scales(dir: &Path, cfg: &ExplodingConfig) -> Result<PathBuf> {
    let rows: Vec<ScaleRow> = read(&dir.join("scales.csv"))?;
    let t_len = rows.iter().map(|r| r.distance).max().unwrap_or(0) + 1;
    // One y range for all panels: the measured ratios and the bounds.
    let values = rows.iter().flat_map(|r| [r.ratio, r.bound]);
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let mut panels = Vec::new();
    for model in dedup_str(rows.iter().map(|r| r.model.clone())) {
        let mine: Vec<&ScaleRow> = rows.iter().filter(|r| r.model == model).collect();
        let mut scales: Vec<f64> = Vec::new();
        for r in &mine {
            if !scales.contains(&r.scale) {
                scales.push(r.scale);
            }
        }
        let mut series = Vec::new();
        for (k, &s) in scales.iter().enumerate() {
            let line: Vec<&&ScaleRow> = mine.iter().filter(|r| r.scale == s).collect();
            let color = palette(k);
            series.push(Series::new(
                format!(
                    "s = {s}  (σ_max = {:.2}, ρ = {:.2})",
                    line[0].sigma_max, line[0].spectral_radius
                ),
                line.iter().map(|r| (r.distance as f64, r.ratio)).collect(),
                color,
            ));
            series.push(
                Series::new(
                    "",
                    line.iter().map(|r| (r.distance as f64, r.bound)).collect(),
                    color,
                )
                .dashed(),
            );
        }
        let why = if model == "irnn" || model == "rnn-relu" {
            "ReLU: on every active unit φ' = 1 exactly, so the gradient follows s^d"
        } else if model == "rnn" {
            "tanh: |φ'| ≤ 1 and smaller where the state saturates, so the bound is not reached"
        } else {
            "gated cell: gates multiply the recurrent path"
        };
        panels.push(LineChart {
            title: family_label(&model),
            subtitle: Some(format!(
                "‖∂L/∂h_t‖ relative to its value at the loss, at initialisation; adding task, T = {t_len}, {} probe sequences\nsolid: measured; dashed, same colour: the Pascanu et al. bound (γ σ_max)^d with γ = 1\n{why}",
                cfg.probe.batch
            )),
            x_label: "distance from the loss  d = T − 1 − t".into(),
            y_label: "gradient norm relative to the loss's (log)".into(),
            log_y: true,
            series,
            hlines: vec![HLine::new("", 1.0, Color::GREY)],
            y_range: Some((lo / 10.0, hi * 10.0)),
            legend: LegendPos::UpperLeft,
            ..LineChart::default()
        });
    }
    let path = dir.join("scales.png");
    draw_panels(&path, &panels, "scales.csv")?;
    Ok(path)
}

/// `spectral_sweep.png`: the gradient at one distance against the scale of W_hh, one line per
/// model family (geometric mean over initialisations), with the bound s^d.
fn spectral_sweep(dir: &Path, cfg: &ExplodingConfig) -> Result<PathBuf> {
    let rows: Vec<SweepRow> = read(&dir.join("spectral_sweep.csv"))?;
    let d = rows.first().map_or(cfg.sweep.distance, |r| r.distance);
    let seeds = dedup_str(rows.iter().map(|r| r.seed.to_string())).len();
    let mut series = Vec::new();
    let mut all_scales: Vec<f64> = Vec::new();
    for model in dedup_str(rows.iter().map(|r| r.model.clone())) {
        let mut by_scale: BTreeMap<i64, (f64, Vec<f64>)> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.model == model) {
            let key = (r.scale * 1e9).round() as i64;
            by_scale
                .entry(key)
                .or_insert((r.scale, Vec::new()))
                .1
                .push(r.ratio);
        }
        let points: Vec<(f64, f64)> = by_scale
            .values()
            .map(|(s, v)| (*s, geometric_mean(v)))
            .collect();
        all_scales.extend(points.iter().map(|p| p.0));
        let color = match model.as_str() {
            "irnn" => Color::PURPLE,
            m => model_color(m),
        };
        series.push(Series::new(family_label(&model), points, color));
    }
    all_scales.sort_by(f64::total_cmp);
    all_scales.dedup();
    series.push(
        Series::new(
            format!("bound s^{d} (Pascanu et al., γ = 1; RNNs only)"),
            all_scales.iter().map(|&s| (s, s.powi(d as i32))).collect(),
            Color::BLACK,
        )
        .dashed(),
    );
    let path = dir.join("spectral_sweep.png");
    line_chart(
        &path,
        &LineChart {
            title: format!("The gradient {d} steps back against the scale of W_hh"),
            subtitle: Some(format!(
                "‖∂L/∂h_t‖ at distance d = {d} relative to its value at the loss, at initialisation; adding task, T = {}, {} probe sequences;\ngeometric mean over {seeds} initialisation(s). W_hh = s × (identity or random orthogonal): σ_max = ρ = s.\nBelow the line at 1 the gradient vanishes on its way back, above it it explodes; the ReLU RNN with s·I lies on the bound.",
                cfg.probe.seq_len, cfg.probe.batch
            )),
            x_label: "scale s of W_hh (σ_max = spectral radius = s)".into(),
            y_label: format!("‖∂L/∂h‖ at d = {d} relative to d = 0 (log)"),
            log_y: true,
            series,
            hlines: vec![HLine::new("", 1.0, Color::GREY)],
            vlines: vec![VLine::new("s = 1", 1.0, Color::GREY)],
            legend: LegendPos::LowerRight,
            ..LineChart::default()
        },
    )?;
    Ok(path)
}

/// `init_profiles.png`: the remedies at initialisation.
fn init_profiles(dir: &Path, cfg: &ExplodingConfig) -> Result<PathBuf> {
    let rows: Vec<ProfileRow> = read(&dir.join("init_profiles.csv"))?;
    let t_len = rows.iter().map(|r| r.distance).max().unwrap_or(0) + 1;
    let series = dedup_str(rows.iter().map(|r| r.model.clone()))
        .into_iter()
        .map(|key| {
            let mine: Vec<&ProfileRow> = rows.iter().filter(|r| r.model == key).collect();
            Series::new(
                mine[0].label.clone(),
                mine.iter().map(|r| (r.distance as f64, r.ratio)).collect(),
                profile_color(&key),
            )
        })
        .collect();
    let path = dir.join("init_profiles.png");
    line_chart(
        &path,
        &LineChart {
            title: "What the remedies do at initialisation".into(),
            subtitle: Some(format!(
                "‖∂L/∂h_t‖ relative to its value at the loss, before any training; adding task, T = {t_len}, {} probe sequences, H = {}\nthe loss is at distance 0; a flat line means the error signal reaches the start of the sequence intact",
                cfg.probe.batch, cfg.model.hidden
            )),
            x_label: "distance from the loss  d = T − 1 − t".into(),
            y_label: "gradient norm relative to the loss's (log)".into(),
            log_y: true,
            series,
            hlines: vec![HLine::new("", 1.0, Color::GREY)],
            legend: LegendPos::LowerLeft,
            ..LineChart::default()
        },
    )?;
    Ok(path)
}

/// The steps and runs of the first seed, grouped by variant in file order.
struct ClipData {
    seed: u64,
    variants: Vec<String>,
    steps: Vec<StepRow>,
    runs: Vec<ClipRunRow>,
}

impl ClipData {
    fn read(dir: &Path) -> Result<ClipData> {
        let steps: Vec<StepRow> = read(&dir.join("clipping_steps.csv"))?;
        let runs: Vec<ClipRunRow> = read(&dir.join("clipping_runs.csv"))?;
        let seed = runs.iter().map(|r| r.seed).min().unwrap_or(0);
        let variants = dedup_str(runs.iter().map(|r| r.variant.clone()));
        Ok(ClipData {
            seed,
            variants,
            steps: steps.into_iter().filter(|s| s.seed == seed).collect(),
            runs: runs.into_iter().filter(|r| r.seed == seed).collect(),
        })
    }

    fn points(&self, variant: &str, value: impl Fn(&StepRow) -> f64) -> Vec<(f64, f64)> {
        self.steps
            .iter()
            .filter(|s| s.variant == variant)
            .map(|s| (s.step as f64, value(s)))
            .collect()
    }

    fn run(&self, variant: &str) -> Option<&ClipRunRow> {
        self.runs.iter().find(|r| r.variant == variant)
    }

    /// A dashed vertical line where `variant` diverged, if it did.
    fn divergence(&self, variant: &str) -> Option<VLine> {
        let step = self.run(variant)?.diverged_step?;
        Some(VLine::new(
            format!("{variant}: diverged at step {step}"),
            step as f64,
            variant_color(variant, &self.variants),
        ))
    }
}

fn setup_line(cfg: &ExplodingConfig) -> String {
    let c = &cfg.clipping;
    format!(
        "{}, s = {}, adding task T = {}, H = {}, {} lr {} momentum {}, batch {}",
        family_label(&c.model),
        c.scale,
        c.seq_len,
        cfg.model.hidden,
        c.optimizer,
        c.lr,
        c.momentum,
        c.batch
    )
}

/// `clipping.png`: no clipping against global-norm clipping: the loss and the raw gradient
/// norm at every step, the divergence marked.
fn clipping(dir: &Path, cfg: &ExplodingConfig) -> Result<PathBuf> {
    let data = ClipData::read(dir)?;
    let shown: Vec<String> = data
        .variants
        .iter()
        .filter(|v| *v == "no clipping" || v.starts_with("clip norm"))
        .cloned()
        .collect();
    let baseline = data.runs.first().map_or(f64::NAN, |r| r.baseline_loss);
    let vlines: Vec<VLine> = shown.iter().filter_map(|v| data.divergence(v)).collect();
    // The loss axis covers the runs that kept going: a diverged run's loss (up to 1e39 and
    // beyond) would flatten everything else, so it leaves the chart at the top instead.
    let kept: Vec<f64> = shown
        .iter()
        .filter(|v| data.run(v).is_some_and(|r| r.diverged_step.is_none()))
        .flat_map(|v| data.points(v, |s| s.loss_mean))
        .map(|p| p.1)
        .chain([baseline])
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let loss_range = (!kept.is_empty()).then(|| {
        let lo = kept.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = kept.iter().copied().fold(0.0, f64::max);
        (lo / 1.5, hi * 30.0)
    });
    let off_chart: Vec<String> = shown
        .iter()
        .filter_map(|v| {
            let top = data
                .points(v, |s| s.loss_mean)
                .iter()
                .map(|p| p.1)
                .fold(f64::NAN, f64::max);
            let (_, hi) = loss_range?;
            (top > hi)
                .then(|| format!("{v}: the loss leaves the chart at the top and reaches {top:.0e}"))
        })
        .collect();
    let loss_series = shown
        .iter()
        .map(|v| {
            Series::new(
                v.clone(),
                data.points(v, |s| s.loss_mean),
                variant_color(v, &data.variants),
            )
        })
        .collect();
    let grad_series = shown
        .iter()
        .map(|v| {
            Series::new(
                v.clone(),
                data.points(v, |s| s.grad_norm),
                variant_color(v, &data.variants),
            )
            .thin()
        })
        .collect();
    let left = LineChart {
        title: "Training loss with and without clipping".into(),
        subtitle: Some(format!(
            "{}\nseed {}; mean over the last {} steps; below the baseline = the model learned something{}",
            setup_line(cfg),
            data.seed,
            cfg.clipping.smooth,
            off_chart
                .iter()
                .map(|s| format!("\n{s}"))
                .collect::<String>()
        )),
        x_label: "training step".into(),
        y_label: "MSE (log scale)".into(),
        log_y: true,
        series: loss_series,
        y_range: loss_range,
        hlines: vec![HLine::new(
            format!("baseline (answer 1): {baseline:.3}"),
            baseline,
            Color::GREY,
        )],
        vlines: vlines.clone(),
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    let right = LineChart {
        title: "Gradient norm at every step, before clipping".into(),
        subtitle: Some(format!(
            "global L2 norm ‖g‖ of all parameter gradients; clipping by norm (Pascanu et al. 2013, Algorithm 1):\nif ‖g‖ > {0}, the step uses g·{0}/‖g‖ instead of g — same direction, bounded length",
            cfg.clipping.norm
        )),
        x_label: "training step".into(),
        y_label: "‖g‖ (log scale)".into(),
        log_y: true,
        series: grad_series,
        hlines: vec![HLine::new(
            format!("clipping threshold {}", cfg.clipping.norm),
            cfg.clipping.norm,
            Color::BLUE,
        )],
        vlines,
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    let path = dir.join("clipping.png");
    draw_panels(&path, &[left, right], "clipping_steps.csv")?;
    Ok(path)
}

/// `clip_norm_vs_value.png`: clipping by norm against clipping by value: the loss, and the
/// angle between the gradient and the step taken.
fn clip_norm_vs_value(dir: &Path, cfg: &ExplodingConfig) -> Result<PathBuf> {
    let data = ClipData::read(dir)?;
    let shown: Vec<String> = data
        .variants
        .iter()
        .filter(|v| v.starts_with("clip "))
        .cloned()
        .collect();
    let baseline = data.runs.first().map_or(f64::NAN, |r| r.baseline_loss);
    let series = |value: &dyn Fn(&StepRow) -> f64, thin: bool| -> Vec<Series> {
        shown
            .iter()
            .map(|v| {
                let s = Series::new(
                    v.clone(),
                    data.points(v, value),
                    variant_color(v, &data.variants),
                );
                if thin { s.thin() } else { s }
            })
            .collect()
    };
    let vlines: Vec<VLine> = shown.iter().filter_map(|v| data.divergence(v)).collect();
    let left = LineChart {
        title: "Training loss: clipping by norm or by value".into(),
        subtitle: Some(format!(
            "{}\nseed {}; mean over the last {} steps",
            setup_line(cfg),
            data.seed,
            cfg.clipping.smooth
        )),
        x_label: "training step".into(),
        y_label: "MSE (log scale)".into(),
        log_y: true,
        series: series(&|s| s.loss_mean, false),
        hlines: vec![HLine::new(
            format!("baseline (answer 1): {baseline:.3}"),
            baseline,
            Color::GREY,
        )],
        vlines: vlines.clone(),
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    let right = LineChart {
        title: "How far the step turns away from the gradient".into(),
        subtitle: Some(
            "angle between the raw gradient g and the clipped gradient the optimizer used, every step\nby norm: g is only shortened (0°); by value: each entry is cut to [−c, c] separately, which turns g\n(0° also when no entry exceeded c)"
                .into(),
        ),
        x_label: "training step".into(),
        y_label: "angle (degrees)".into(),
        series: series(&|s| s.angle_deg, true),
        vlines,
        y_range: Some((-3.0, 90.0)),
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    let path = dir.join("clip_norm_vs_value.png");
    draw_panels(&path, &[left, right], "clipping_steps.csv")?;
    Ok(path)
}

/// One panel as a plain chart, several side by side.
fn draw_panels(path: &Path, panels: &[LineChart], csv: &str) -> Result<()> {
    match panels {
        [] => bail!("{csv}: no rows"),
        [one] => line_chart(path, one),
        many => panel_line_chart(path, many),
    }
}

/// exp(mean(ln v)) over the positive finite values (NaN if none).
fn geometric_mean(v: &[f64]) -> f64 {
    let logs: Vec<f64> = v
        .iter()
        .filter(|x| x.is_finite() && **x > 0.0)
        .map(|x| x.ln())
        .collect();
    if logs.is_empty() {
        f64::NAN
    } else {
        (logs.iter().sum::<f64>() / logs.len() as f64).exp()
    }
}
