//! `rnnlab experiment seed-classifier`: the Keras text classifier with LSTM cells against the
//! same architecture with vanilla RNN cells, on the synthetic key-token task.
//!
//! For every cell in `[experiment] cells` and every seed: generate the data, probe
//! ‖∂L/∂e_t‖ at initialisation, `fit`, probe again with the best epoch's weights, and measure
//! the validation accuracy per distance bin of the key token. The runs are independent and
//! single-threaded, spread over `--jobs` workers, stored by run index: the CSVs do not depend
//! on the number of workers. Then, as for the vanishing experiment, the charts and
//! `summary.md` are drawn from the CSVs only ([`render`], also what `rnnlab plot DIR` calls).
//!
//! The probe: L is the mean cross-entropy over `probe_batch` validation sequences (evaluation
//! mode, no dropout); e_t the embedding's output at step t. For a sequence whose last real
//! token is at step t_end, step t is at distance d = t_end − t from the end; the probe at d is
//! the mean over the sequences that have a real token there of ‖∂L/∂e_t‖ (summed in f64).

use super::config::{self, ClassifierFile};
use super::data::{Dataset, synthetic::Synthetic};
use super::embedding;
use super::fit::{self, EpochRow, FitEvent, FitResult};
use super::model::{Classifier, ModelSpec};
use crate::experiment::Options;
use crate::experiment::charts::{model_color, model_label};
use crate::experiment::data::read;
use crate::fsutil::StagedDir;
use crate::params::CellKind;
use crate::plot::{
    Band, BandChart, Color, HLine, LegendPos, LineChart, Series, band_chart, two_panel_line_chart,
};
use crate::report::write_csv;
use anyhow::{Context, Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// `accuracy_vs_distance.csv`: validation accuracy per distance bin, one row per run and bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccuracyRow {
    pub cell: String,
    pub seed: u64,
    /// Bin [distance_lo, distance_hi] of the key token's distance from the end.
    pub distance_lo: usize,
    pub distance_hi: usize,
    /// Validation sequences in the bin.
    pub sequences: usize,
    pub accuracy: f64,
    /// 1/C.
    pub chance: f64,
}

/// `embedding_grads.csv`: ‖∂L/∂e_t‖ against distance from the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradRow {
    pub cell: String,
    pub seed: u64,
    /// "init" or "trained".
    pub panel: String,
    /// Epoch of the weights (0 = initialisation).
    pub epoch: usize,
    /// "all": every real token at this distance; "key": the key token, in the sequences whose
    /// key is at this distance.
    pub tokens: String,
    pub distance: usize,
    /// Tokens averaged over.
    pub sequences: usize,
    pub grad_norm: f64,
}

/// `history.csv`: one row per epoch of every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub cell: String,
    pub seed: u64,
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// 1 for the epoch whose weights were kept (lowest validation loss).
    pub best: u8,
}

/// One run's results.
struct RunResult {
    cell: CellKind,
    seed: u64,
    fit: FitResult,
    accuracy: Vec<AccuracyRow>,
    grads: Vec<GradRow>,
}

/// Which tokens a probe row averages over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// Every real token at that distance from the end.
    All,
    /// The key token, in the sequences whose key is at that distance.
    Key,
}

impl Tokens {
    pub fn name(self) -> &'static str {
        match self {
            Tokens::All => "all",
            Tokens::Key => "key",
        }
    }
}

/// ‖∂L/∂e_t‖ by distance d from the end on `data` (evaluation mode), L = the mean loss over
/// all of `data` (computed 256 sequences at a time): rows (tokens, d, sequences, mean norm).
pub fn embedding_grad_profile(
    model: &Classifier<f32>,
    data: &Dataset,
) -> Vec<(Tokens, usize, usize, f64)> {
    let t_len = data.seq_len();
    let n = data.len();
    let keys = data.key_distance.as_ref();
    // [all, key] × distance: (sum of norms, count)
    let mut acc = vec![vec![(0.0f64, 0usize); t_len]; 2];
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(256) {
        let (ids, labels) = data.batch(chunk);
        let (_, _, grads) = model.loss_and_grad(ids.view(), labels.view(), None, 1);
        // the chunk's mean loss is (chunk / n) of the whole set's mean loss
        let scale = chunk.len() as f64 / n as f64;
        let de = grads.d_embedded; // (T, B, E)
        let norm = |t: usize, b: usize| {
            let sq: f64 = de
                .slice(ndarray::s![t, b, ..])
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum();
            scale * sq.sqrt()
        };
        let lasts = embedding::last_real_step(ids.view());
        for (b, (&i, last)) in chunk.iter().zip(lasts).enumerate() {
            let Some(last) = last else { continue };
            for t in (0..=last).filter(|&t| ids[[t, b]] != 0) {
                let e = &mut acc[0][last - t];
                (e.0, e.1) = (e.0 + norm(t, b), e.1 + 1);
            }
            if let Some(d) = keys.map(|k| k[i]).filter(|&d| d <= last) {
                let e = &mut acc[1][d];
                (e.0, e.1) = (e.0 + norm(last - d, b), e.1 + 1);
            }
        }
    }
    [Tokens::All, Tokens::Key]
        .into_iter()
        .zip(acc)
        .flat_map(|(tokens, per_d)| {
            per_d
                .into_iter()
                .enumerate()
                .filter(|(_, (_, c))| *c > 0)
                .map(move |(d, (sum, c))| (tokens, d, c, sum / c as f64))
        })
        .collect()
}

/// Validation accuracy of `model` per bin of `width` distances.
pub fn accuracy_by_distance(
    model: &Classifier<f32>,
    data: &Dataset,
    width: usize,
    threads: usize,
) -> Vec<(usize, usize, usize, f64)> {
    let logits = fit::predict(model, data, threads);
    let pred = super::dense::argmax(logits.view());
    let dist = data
        .key_distance
        .as_ref()
        .expect("synthetic data records the key's distance");
    let mut bins: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for ((&d, &p), &y) in dist.iter().zip(&pred).zip(&data.labels) {
        let e = bins.entry(d / width).or_default();
        e.0 += usize::from(p == y);
        e.1 += 1;
    }
    bins.into_iter()
        .map(|(k, (right, n))| (k * width, k * width + width - 1, n, right as f64 / n as f64))
        .collect()
}

/// The data of run `seed`: generated and split with that seed.
fn run_data(
    task: &Synthetic,
    fit: &super::config::FitSection,
    seed: u64,
) -> Result<(Dataset, Dataset)> {
    task.generate(seed).split(fit.validation_split, seed)
}

/// One run: probe, fit, probe, accuracy by distance.
fn run_one(
    file: &ClassifierFile,
    cell: CellKind,
    seed: u64,
    on_batch: &(dyn Fn() + Sync),
    on_epoch: &(dyn Fn(&str) + Sync),
) -> Result<RunResult> {
    let e = file.experiment.as_ref().expect("validated");
    let spec = ModelSpec {
        cell,
        ..file.synthetic_model()
    };
    spec.validate()?;
    let (train, val) = run_data(&file.data, &file.fit, seed)?;
    let probe_set = val.subset(&(0..e.probe_batch.min(val.len())).collect::<Vec<_>>());
    let model = Classifier::<f32>::new(spec, seed);
    let profile_rows = |m: &Classifier<f32>, panel: &str, epoch: usize| {
        embedding_grad_profile(m, &probe_set)
            .into_iter()
            .map(|(tokens, distance, sequences, grad_norm)| GradRow {
                tokens: tokens.name().into(),
                cell: cell.name().into(),
                seed,
                panel: panel.into(),
                epoch,
                distance,
                sequences,
                grad_norm,
            })
            .collect::<Vec<_>>()
    };
    let mut grads = profile_rows(&model, "init", 0);
    let cfg = file.fit.config(seed, 1)?;
    let label = format!("{:<4} seed {seed}", cell.name());
    let result = fit::fit(model, &train, &val, &cfg, &mut |ev| match ev {
        FitEvent::Batch { .. } => on_batch(),
        FitEvent::Epoch(r) => on_epoch(&format!(
            "  {label} epoch {}: loss {:.4} accuracy {:.4} | val_loss {:.4} val_accuracy {:.4} ({:.1} s)",
            r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.seconds
        )),
    });
    if let fit::FitOutcome::Diverged { epoch, what } = &result.outcome {
        return Err(anyhow!("{label} diverged in epoch {epoch} ({what})"));
    }
    grads.extend(profile_rows(&result.best, "trained", result.best_epoch));
    let chance = 1.0 / file.data.classes as f64;
    let accuracy = accuracy_by_distance(&result.best, &val, e.bin_width, 1)
        .into_iter()
        .map(|(lo, hi, n, acc)| AccuracyRow {
            cell: cell.name().into(),
            seed,
            distance_lo: lo,
            distance_hi: hi,
            sequences: n,
            accuracy: acc,
            chance,
        })
        .collect();
    Ok(RunResult {
        cell,
        seed,
        fit: result,
        accuracy,
        grads,
    })
}

/// Loads the experiment file `text` with the options applied (printing each override) and
/// checks it: errors here are the user's (usage errors).
pub fn load(origin: &str, text: &str, opts: &Options) -> Result<ClassifierFile> {
    let mut file = config::load(text, origin, opts.quick, &opts.sets, &mut |l| {
        println!("{l}")
    })?;
    let e = file.experiment.as_mut().ok_or_else(|| {
        anyhow!(
            "{origin} has no [experiment] table: it is a preset for `rnnlab fit`, not an experiment"
        )
    })?;
    if let Some(seeds) = opts.seeds {
        anyhow::ensure!(seeds >= 1, "--seeds 0 is invalid: it must be at least 1");
        println!("Overriding: experiment.seeds = {seeds}");
        e.seeds = seeds;
    }
    for &cell in &e.cells {
        ModelSpec {
            cell,
            ..file.model.clone()
        }
        .validate()
        .map_err(|err| anyhow!("{origin}: experiment.cells: {err}"))?;
    }
    Ok(file)
}

/// Runs a loaded experiment and writes its folder; returns it.
pub fn execute(name: &str, origin: &str, file: ClassifierFile, opts: &Options) -> Result<PathBuf> {
    let e = file.experiment.clone().expect("checked by load");
    let jobs = opts.jobs()?;
    let out = opts.out_dir(name);
    let staged = StagedDir::new(&out).map_err(crate::commands::usage)?;
    std::fs::write(staged.path().join("config.toml"), toml::to_string(&file)?)?;

    let runs: Vec<(CellKind, u64)> = e
        .cells
        .iter()
        .flat_map(|&c| (0..e.seeds as u64).map(move |s| (c, file.fit.seed + s)))
        .collect();
    println!(
        "rnnlab experiment {name}{}: {} runs ({}) on {jobs} worker(s) → {}",
        if opts.quick { " --quick" } else { "" },
        runs.len(),
        file.synthetic_model().describe(),
        out.display()
    );
    let n_train = file.data.size
        - ((file.data.size as f64 * file.fit.validation_split).round() as usize).max(1);
    let total = (runs.len() * file.fit.epochs * n_train.div_ceil(file.fit.batch)) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}%  {msg}  [{elapsed_precise} < {eta}]")
            .expect("valid template"),
    );
    let say = |line: &str| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RunResult>>>> =
        Mutex::new((0..runs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(runs.len()) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(cell, seed)) = runs.get(k) else {
                        break;
                    };
                    let r = run_one(&file, cell, seed, &|| bar.inc(1), &say);
                    results.lock().expect("no worker panicked")[k] = Some(r);
                }
            });
        }
    });
    bar.finish_and_clear();
    let results: Vec<RunResult> = results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|r| r.expect("every run ran"))
        .collect::<Result<_>>()?;
    let seconds = start.elapsed().as_secs_f64();

    let dir = staged.path();
    let acc: Vec<AccuracyRow> = results.iter().flat_map(|r| r.accuracy.clone()).collect();
    write_csv(&dir.join("accuracy_vs_distance.csv"), &acc)?;
    let grads: Vec<GradRow> = results.iter().flat_map(|r| r.grads.clone()).collect();
    write_csv(&dir.join("embedding_grads.csv"), &grads)?;
    let history: Vec<HistoryRow> = results
        .iter()
        .flat_map(|r| {
            r.fit.history.iter().map(|h: &EpochRow| HistoryRow {
                cell: r.cell.name().into(),
                seed: r.seed,
                epoch: h.epoch,
                loss: h.loss,
                accuracy: h.accuracy,
                val_loss: h.val_loss,
                val_accuracy: h.val_accuracy,
                best: u8::from(h.epoch == r.fit.best_epoch),
            })
        })
        .collect();
    write_csv(&dir.join("history.csv"), &history)?;
    let run_json = serde_json::json!({
        "experiment": name,
        "definition": origin,
        "quick": opts.quick,
        "jobs": jobs,
        "rnnlab_version": env!("CARGO_PKG_VERSION"),
        "config": file,
        "data": file.data.describe(),
        "total_seconds": seconds,
        "runs": results.iter().map(|r| serde_json::json!({
            "cell": r.cell.name(), "seed": r.seed, "best_epoch": r.fit.best_epoch,
            "epochs_run": r.fit.history.len(), "outcome": r.fit.outcome, "seconds": r.fit.seconds,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&run_json)?,
    )?;
    render(dir)?;
    let out = staged.commit()?;
    println!(
        "done in {seconds:.1} s: charts, CSVs and summary.md in {}",
        out.display()
    );
    Ok(out)
}

/// True if `dir` holds a seed-classifier result (its config.toml is a classifier file).
pub fn is_result(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.toml")).is_ok_and(|t| config::is_classifier(&t))
}

/// Draws every chart and writes summary.md from the CSVs in `dir`.
pub fn render(dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(dir.join("config.toml")).with_context(|| {
        format!(
            "{} is not an experiment folder: it has no config.toml",
            dir.display()
        )
    })?;
    let file: ClassifierFile =
        toml::from_str(&text).with_context(|| format!("{}/config.toml", dir.display()))?;
    let acc: Vec<AccuracyRow> = read(&dir.join("accuracy_vs_distance.csv"))?;
    let grads: Vec<GradRow> = read(&dir.join("embedding_grads.csv"))?;
    let history: Vec<HistoryRow> = read(&dir.join("history.csv"))?;
    let charts = vec![
        accuracy_chart(dir, &file, &acc)?,
        grad_chart(dir, &file, &grads)?,
        history_chart(dir, &history)?,
    ];
    summary(dir, &file, &acc, &grads, &history)?;
    Ok(charts)
}

/// Cells in the order rnn, lstm, others.
fn cells_in<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for n in names {
        if !v.iter().any(|m| m == n) {
            v.push(n.to_string());
        }
    }
    v.sort_by_key(|m| {
        (
            ["rnn", "lstm"].iter().position(|k| k == m).unwrap_or(9),
            m.clone(),
        )
    });
    v
}

/// Bin centre.
fn centre(r: &AccuracyRow) -> f64 {
    (r.distance_lo + r.distance_hi) as f64 / 2.0
}

/// `accuracy_vs_distance.png`.
fn accuracy_chart(dir: &Path, file: &ClassifierFile, rows: &[AccuracyRow]) -> Result<PathBuf> {
    let mut bands = Vec::new();
    for cell in cells_in(rows.iter().map(|r| r.cell.as_str())) {
        let mut by_bin: BTreeMap<usize, Vec<&AccuracyRow>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.cell == cell) {
            by_bin.entry(r.distance_lo).or_default().push(r);
        }
        let points = by_bin
            .values()
            .map(|rs| {
                let a: Vec<f64> = rs.iter().map(|r| r.accuracy).collect();
                let mean = a.iter().sum::<f64>() / a.len() as f64;
                let (lo, hi) = a
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                        (l.min(v), h.max(v))
                    });
                (centre(rs[0]), mean, lo, hi)
            })
            .collect();
        bands.push(Band {
            label: format!("{} cells", model_label(&cell)),
            color: model_color(&cell),
            points,
        });
    }
    let seeds = rows
        .iter()
        .map(|r| r.seed)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let chance = rows.first().map_or(0.0, |r| r.chance);
    let width = file.experiment.as_ref().map_or(0, |e| e.bin_width);
    let path = dir.join("accuracy_vs_distance.png");
    band_chart(
        &path,
        &BandChart {
            title: "Validation accuracy against the key token's distance from the end".into(),
            subtitle: Some(format!(
                "{}\nbins of {width} distances; line = mean over {seeds} seed(s), band = min…max; weights of the best epoch",
                short_description(&file.synthetic_model())
            )),
            x_label: "distance of the key token from the end of the sequence (tokens after it)"
                .into(),
            y_label: "validation accuracy".into(),
            log_x: false,
            bands,
            hlines: vec![HLine::new(
                format!("chance 1/{} = {chance:.2}", file.data.classes),
                chance,
                Color::GREY,
            )],
            y_range: Some((0.0, 1.02)),
            legend: LegendPos::Auto,
        },
    )?;
    Ok(path)
}

/// "Embedding(10000, 256) → Bidirectional(·, 64) → · (32) → Dense(10); dropout 0.5", the cell left open.
fn short_description(spec: &ModelSpec) -> String {
    use super::model::LayerSpec;
    let mut parts = Vec::new();
    let mut dropout = Vec::new();
    for l in &spec.layers {
        match l {
            LayerSpec::Embedding { vocab, dim, .. } => {
                parts.push(format!("Embedding({vocab}, {dim}, mask_zero)"))
            }
            LayerSpec::Recurrent {
                units,
                bidirectional,
                ..
            } => parts.push(if *bidirectional {
                format!("Bidirectional(cell {units})")
            } else {
                format!("cell {units}")
            }),
            LayerSpec::Dropout { rate } => dropout.push(format!("{rate}")),
            LayerSpec::Dense { units, .. } => parts.push(format!("Dense({units}, softmax)")),
        }
    }
    let mut s = parts.join(" → ");
    if !dropout.is_empty() {
        write!(s, ", dropout {}", dropout.join("/")).expect("a String");
    }
    s
}

/// The key-token rows of one cell and panel, averaged over bins of `width` distances
/// (weighted by the number of sequences): (bin centre, mean norm).
fn key_bins(rows: &[&GradRow], width: usize) -> Vec<(f64, f64)> {
    let mut bins: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for r in rows {
        let e = bins.entry(r.distance / width).or_default();
        (e.0, e.1) = (e.0 + r.grad_norm * r.sequences as f64, e.1 + r.sequences);
    }
    bins.into_iter()
        .map(|(k, (sum, n))| {
            (
                (k * width) as f64 + (width - 1) as f64 / 2.0,
                sum / n as f64,
            )
        })
        .collect()
}

/// `embedding_grads.png`: ‖∂L/∂e_t‖ against distance, init and trained, log y; solid = the
/// key token (binned), dashed = every token.
fn grad_chart(dir: &Path, file: &ClassifierFile, rows: &[GradRow]) -> Result<PathBuf> {
    let positive = rows
        .iter()
        .map(|r| r.grad_norm)
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    let y_range = (lo.is_finite() && hi > 0.0).then_some((lo / 3.0, hi * 3.0));
    let first_seed = rows.iter().map(|r| r.seed).min().unwrap_or(0);
    let width = file.experiment.as_ref().map_or(1, |e| e.bin_width);
    let probe = rows
        .iter()
        .filter(|r| r.tokens == "key" && r.seed == first_seed && r.panel == "init")
        .map(|r| r.sequences)
        .sum::<usize>()
        / cells_in(rows.iter().map(|r| r.cell.as_str())).len().max(1);
    let mut panels = Vec::new();
    for panel in ["init", "trained"] {
        let mut series = Vec::new();
        let here: Vec<&GradRow> = rows
            .iter()
            .filter(|r| r.panel == panel && r.seed == first_seed)
            .collect();
        let mut epochs = Vec::new();
        for cell in cells_in(here.iter().map(|r| r.cell.as_str())) {
            let mine = |tokens: &str| -> Vec<&GradRow> {
                here.iter()
                    .copied()
                    .filter(|r| r.cell == cell && r.tokens == tokens)
                    .collect()
            };
            let (key, all) = (mine("key"), mine("all"));
            let Some(first) = all.first() else { continue };
            epochs.push(format!("{} epoch {}", model_label(&cell), first.epoch));
            let (l, c) = (model_label(&cell), model_color(&cell));
            series.push(Series::new(
                format!("{l}: the key token"),
                key_bins(&key, width),
                c,
            ));
            series.push(
                Series::new(
                    format!("{l}: every token"),
                    all.iter()
                        .map(|r| (r.distance as f64, r.grad_norm))
                        .collect(),
                    c,
                )
                .dashed(),
            );
        }
        panels.push(LineChart {
            title: format!(
                "‖∂L/∂e_t‖ {}",
                if panel == "init" { "at initialisation" } else { "after training" }
            ),
            subtitle: Some(format!(
                "gradient of the mean loss over {probe} validation sequences at the embedding output of a token d steps from the end\nsolid: at the key token (mean per bin of {width} distances); dashed: every token ({}, seed {first_seed})",
                epochs.join(", ")
            )),
            x_label: "distance from the end of the sequence (tokens)".into(),
            y_label: "‖∂L/∂e_t‖ (log scale)".into(),
            log_y: true,
            series,
            y_range,
            legend: LegendPos::Auto,
            ..LineChart::default()
        });
    }
    let path = dir.join("embedding_grads.png");
    two_panel_line_chart(&path, &panels[0], &panels[1])?;
    Ok(path)
}

/// `history.png`: loss and accuracy per epoch, training (solid) and validation (dashed).
fn history_chart(dir: &Path, rows: &[HistoryRow]) -> Result<PathBuf> {
    let first_seed = rows.iter().map(|r| r.seed).min().unwrap_or(0);
    let rows: Vec<&HistoryRow> = rows.iter().filter(|r| r.seed == first_seed).collect();
    let mut loss = Vec::new();
    let mut acc = Vec::new();
    for cell in cells_in(rows.iter().map(|r| r.cell.as_str())) {
        let mine: Vec<&&HistoryRow> = rows.iter().filter(|r| r.cell == cell).collect();
        let pts = |f: fn(&HistoryRow) -> f64| {
            mine.iter()
                .map(|r| (r.epoch as f64, f(r)))
                .collect::<Vec<_>>()
        };
        let (c, l) = (model_color(&cell), model_label(&cell));
        loss.push(Series::new(format!("{l} training"), pts(|r| r.loss), c));
        loss.push(Series::new(format!("{l} validation"), pts(|r| r.val_loss), c).dashed());
        acc.push(Series::new(format!("{l} training"), pts(|r| r.accuracy), c));
        acc.push(Series::new(format!("{l} validation"), pts(|r| r.val_accuracy), c).dashed());
    }
    let sub = format!(
        "seed {first_seed}; training = mean over the epoch's batches (dropout on), validation after each epoch"
    );
    let left = LineChart {
        title: "Loss per epoch".into(),
        subtitle: Some(sub.clone()),
        x_label: "epoch".into(),
        y_label: "categorical cross-entropy".into(),
        series: loss,
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    let right = LineChart {
        title: "Accuracy per epoch".into(),
        subtitle: Some(sub),
        x_label: "epoch".into(),
        y_label: "accuracy".into(),
        series: acc,
        y_range: Some((0.0, 1.02)),
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    let path = dir.join("history.png");
    two_panel_line_chart(&path, &left, &right)?;
    Ok(path)
}

/// Mean accuracy of `cell` over the bins with lo ≥ `from` and hi ≤ `to`.
fn mean_acc(rows: &[AccuracyRow], cell: &str, from: usize, to: usize) -> Option<f64> {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| r.cell == cell && r.distance_lo >= from && r.distance_hi <= to)
        .map(|r| r.accuracy)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// `summary.md`.
fn summary(
    dir: &Path,
    file: &ClassifierFile,
    acc: &[AccuracyRow],
    grads: &[GradRow],
    history: &[HistoryRow],
) -> Result<()> {
    let run: serde_json::Value = std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut md = String::new();
    writeln!(
        md,
        "# rnnlab experiment `{}`\n",
        run["experiment"].as_str().unwrap_or("seed-classifier")
    )?;
    writeln!(md, "{}.\n", file.description)?;
    let f = &file.fit;
    writeln!(
        md,
        "Model: {} — the same architecture with each cell kind, nothing else changed. Data: {}; {} sequences, {:.0}% held out for validation. \
         Training: {} lr {}, batch {}, up to {} epochs, early stopping after {} epochs without a lower validation loss, the best epoch's weights kept. \
         Run k uses seed fit.seed + k for the model, the data, the shuffles and dropout.{}\n",
        short_description(&file.synthetic_model()),
        file.data.describe(),
        file.data.size,
        100.0 * f.validation_split,
        f.optimizer,
        f.lr,
        f.batch,
        f.epochs,
        f.patience,
        match (run["total_seconds"].as_f64(), run["quick"].as_bool()) {
            (Some(s), q) => format!(
                " Wall time {s:.0} s{}; the configuration is in `config.toml`, per-run timings in `run.json`.",
                if q == Some(true) {
                    " (`--quick`: a tiny model and budget, the numbers are only indicative)"
                } else {
                    ""
                }
            ),
            _ => String::new(),
        }
    )?;

    writeln!(
        md,
        "## Accuracy against the key's distance: `accuracy_vs_distance.png`\n"
    )?;
    writeln!(
        md,
        "![accuracy against distance](accuracy_vs_distance.png)\n"
    )?;
    let chance = acc.first().map_or(0.0, |r| r.chance);
    writeln!(
        md,
        "Validation accuracy of the best epoch's weights, per bin of the key token's distance from the end (chance {chance:.2}). \
         Only the key decides the class, so a model that cannot carry the key over d steps is at chance for keys d steps back.\n"
    )?;
    // the bins split into thirds: near, middle, far
    let los: Vec<usize> = acc
        .iter()
        .map(|r| r.distance_lo)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let his: Vec<usize> = acc
        .iter()
        .map(|r| r.distance_hi)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let third = |k: usize| {
        let (a, b) = (
            k * los.len() / 3,
            ((k + 1) * los.len() / 3)
                .max(k * los.len() / 3 + 1)
                .min(los.len()),
        );
        (
            los.get(a).copied().unwrap_or(0),
            his.get(b.saturating_sub(1)).copied().unwrap_or(0),
        )
    };
    let ranges = [third(0), third(1), third(2)];
    writeln!(
        md,
        "| cells | near: d = {}…{} | middle: d = {}…{} | far: d = {}…{} | best epoch | best val_accuracy |",
        ranges[0].0, ranges[0].1, ranges[1].0, ranges[1].1, ranges[2].0, ranges[2].1
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for cell in cells_in(acc.iter().map(|r| r.cell.as_str())) {
        let [near, mid, far] = ranges.map(|(lo, hi)| mean_acc(acc, &cell, lo, hi));
        let best: Vec<&HistoryRow> = history
            .iter()
            .filter(|h| h.cell == cell && h.best == 1)
            .collect();
        let f3 = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.3}"));
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            model_label(&cell),
            f3(near),
            f3(mid),
            f3(far),
            best.iter()
                .map(|h| h.epoch.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            best.iter()
                .map(|h| format!("{:.3}", h.val_accuracy))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    writeln!(
        md,
        "\n(Means over the bins and seeds in each range; the CSV has every bin.)\n"
    )?;

    writeln!(
        md,
        "## How much signal reaches each token: `embedding_grads.png`\n"
    )?;
    writeln!(md, "![gradient at the embedding](embedding_grads.png)\n")?;
    writeln!(
        md,
        "‖∂L/∂e_t‖ is the gradient of the validation loss (mean cross-entropy over {} sequences, no dropout) at the embedding output of the token d steps before the end, \
         computed in f64: every token (dashed; mean over the sequences that have a token there), and the key token (solid; mean over the sequences whose key is d steps \
         before the end, in bins of {} distances). It is all the learning signal the embedding of that token gets: when it has vanished at distance d, \
         nothing about a key d steps back can be learned. At initialisation the key is a token like any other; after training, a model that uses the key \
         keeps a large gradient at the key and may give the distractors far less.\n",
        file.experiment.as_ref().map_or(0, |e| e.probe_batch),
        file.experiment.as_ref().map_or(0, |e| e.bin_width)
    )?;
    let mut lines = Vec::new();
    let width = file.experiment.as_ref().map_or(1, |e| e.bin_width);
    for panel in ["init", "trained"] {
        for cell in cells_in(grads.iter().map(|r| r.cell.as_str())) {
            let mine = |tokens: &str| -> Vec<&GradRow> {
                grads
                    .iter()
                    .filter(|r| {
                        r.cell == cell
                            && r.panel == panel
                            && r.tokens == tokens
                            && r.seed == grads[0].seed
                    })
                    .collect()
            };
            let (all, key) = (mine("all"), mine("key"));
            let at = |d: usize| all.iter().find(|r| r.distance == d).map(|r| r.grad_norm);
            let dmax = all.iter().map(|r| r.distance).max().unwrap_or(0);
            let dmid = dmax / 2;
            let kb = key_bins(&key, width);
            if let (Some(g0), Some(gm), Some(gx), Some(k0), Some(kx)) =
                (at(0), at(dmid), at(dmax), kb.first(), kb.last())
            {
                lines.push(format!(
                    "- {} ({} cells, epoch {}): every token: {:.2e} at the last token, ×{:.2e} at distance {dmid}, ×{:.2e} at distance {dmax}; \
                     the key token: {:.2e} for keys at distances {}…{}, {:.2e} (×{:.2e}) for keys at {}…{}.",
                    if panel == "init" { "At initialisation" } else { "After training" },
                    model_label(&cell),
                    all[0].epoch,
                    g0,
                    gm / g0,
                    gx / g0,
                    k0.1,
                    0,
                    width - 1,
                    kx.1,
                    kx.1 / k0.1,
                    (kx.0 - (width - 1) as f64 / 2.0) as usize,
                    (kx.0 + (width - 1) as f64 / 2.0) as usize,
                ));
            }
        }
    }
    writeln!(md, "{}\n", lines.join("\n"))?;
    writeln!(md, "## Training curves: `history.png`\n")?;
    writeln!(md, "![loss and accuracy per epoch](history.png)\n")?;
    writeln!(
        md,
        "Solid: training (mean over each epoch's batches, dropout on); dashed: validation after the epoch. `history.csv` has every run.\n"
    )?;
    let mut lines = Vec::new();
    for cell in cells_in(history.iter().map(|r| r.cell.as_str())) {
        let mine: Vec<&HistoryRow> = history
            .iter()
            .filter(|h| h.cell == cell && h.seed == history[0].seed)
            .collect();
        let (Some(last), Some(best)) = (mine.last(), mine.iter().find(|h| h.best == 1)) else {
            continue;
        };
        lines.push(format!(
            "- {} cells (seed {}): {} epochs run; training accuracy {:.3} in the last epoch, validation accuracy {:.3} at the best epoch ({}){}.",
            model_label(&cell),
            last.seed,
            last.epoch,
            last.accuracy,
            best.val_accuracy,
            best.epoch,
            if last.accuracy > best.val_accuracy + 0.3 {
                " — far better on the training sequences than on new ones: it memorises the training set (its distractors) instead of finding the key"
            } else {
                ""
            }
        ));
    }
    writeln!(md, "{}\n", lines.join("\n"))?;
    crate::fsutil::write_atomic(&dir.join("summary.md"), md.as_bytes())
}
