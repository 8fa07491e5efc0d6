//! `rnnlab fit`: load a preset, the data (synthetic or a CSV file), train with a progress bar
//! per epoch, and write the results: `history.csv` (one row per epoch, Keras' History),
//! `history.png`, `best.safetensors` (the weights of the epoch with the lowest validation
//! loss), `vocab.txt` for CSV data (line k = the word of id k), and `run.json`. Everything goes
//! to a staged folder that appears only when complete.
//!
//! Errors in what the user asked for (bad flags, unknown preset, a malformed CSV) are usage
//! errors: one line, exit status 2, nothing written.

use super::cli::FitArgs;
use super::config::{self, ClassifierFile};
use super::data::Dataset;
use super::data::csv_text::{self, CsvOptions};
use super::fit::{self, EpochRow, FitConfig, FitEvent, FitOutcome};
use super::model::Classifier;
use crate::commands::usage;
use crate::fsutil::StagedDir;
use crate::plot::{Color, LegendPos, LineChart, Series, two_panel_line_chart};
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// The data a fit runs on.
struct Data {
    train: Dataset,
    validation: Dataset,
    /// One line for the log and run.json.
    describe: String,
    /// CSV only: the vocabulary's words (vocab.txt) and the class names.
    words: Option<Vec<String>>,
    class_names: Vec<String>,
}

/// Loads the preset with the flags applied (printing each override).
fn load_file(args: &FitArgs) -> Result<(String, ClassifierFile)> {
    let (origin, text) = config::find_preset(&args.preset)?;
    if !config::is_classifier(&text) {
        bail!("{origin} is not a classifier file (it has no kind = \"classifier\")");
    }
    let mut overrides = args.overrides();
    if let Some(t) = args.seq_len {
        // keep the synthetic task valid at a shorter length
        let plain = config::load(&text, &origin, false, &[], &mut |_| {})?;
        if plain.data.max_distance >= t && t > 0 {
            overrides.push(("data.max_distance".into(), (t - 1).to_string()));
        }
        if plain.data.min_len > t && t > 0 {
            overrides.push(("data.min_len".into(), t.to_string()));
        }
    }
    let file = config::load(&text, &origin, false, &overrides, &mut |line| {
        println!("{line}")
    })?;
    Ok((origin, file))
}

/// The synthetic task or the CSV file, split.
fn load_data(args: &FitArgs, file: &ClassifierFile) -> Result<Data> {
    if args.data == "synthetic" {
        let all = file.data.generate(file.fit.seed);
        let (train, validation) = all.split(file.fit.validation_split, file.fit.seed)?;
        return Ok(Data {
            train,
            validation,
            describe: file.data.describe(),
            words: None,
            class_names: (0..file.data.classes).map(|c| c.to_string()).collect(),
        });
    }
    let path = Path::new(&args.data);
    if path.extension().is_none_or(|e| e != "csv") && !path.is_file() {
        bail!(
            "--data {}: expected `synthetic` or a CSV file (FILE.csv)",
            args.data
        );
    }
    let opts = CsvOptions {
        text_column: args.text_column.clone(),
        label_column: args.label_column.clone(),
        vocab: args.vocab.unwrap_or_else(|| file.model.vocab()),
        seq_len: file.data.seq_len,
        padding: args.padding.into(),
        truncating: args.truncating.into(),
        validation_split: file.fit.validation_split,
        seed: file.fit.seed,
    };
    let d = csv_text::load(path, &opts)?;
    let describe = format!(
        "{}: {} texts ({} training, {} validation), {} classes, vocabulary of {} ids from the training texts ({} unknown words in validation), padded/truncated to {} ({}/{}; {} texts were longer)",
        path.display(),
        d.train.len() + d.validation.len(),
        d.train.len(),
        d.validation.len(),
        d.class_names.len(),
        d.vocabulary.len(),
        format_args!("{:.1}%", 100.0 * d.validation_unknown),
        opts.seq_len,
        opts.padding.name(),
        opts.truncating.name(),
        d.truncated
    );
    Ok(Data {
        train: d.train,
        validation: d.validation,
        describe,
        words: Some(d.vocabulary.words.clone()),
        class_names: d.class_names,
    })
}

/// `rnnlab fit`.
pub fn fit(args: &FitArgs) -> Result<()> {
    let (origin, file) = load_file(args).map_err(usage)?;
    use crate::experiment::run::{available_cores, thread_count};
    let threads = thread_count("--threads", args.threads, available_cores).map_err(usage)?;
    let data_name = if args.data == "synthetic" {
        "synthetic".to_string()
    } else {
        Path::new(&args.data)
            .file_stem()
            .map_or("csv".into(), |s| s.to_string_lossy().into_owned())
    };
    let preset_name = Path::new(&args.preset)
        .file_stem()
        .map_or(args.preset.clone(), |s| s.to_string_lossy().into_owned());
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "plots/fit/{preset_name}-{}-{data_name}",
            file.model.cell
        ))
    });
    // (before the data, which may be a large CSV: an unwritable --out fails at once)
    let staged = StagedDir::new(&out).map_err(usage)?;
    let data = load_data(args, &file).map_err(usage)?;
    // the model sized for the data: embedding rows = the data's vocabulary, dense = its classes
    let spec = file.model.with_sizes(data.train.vocab, data.train.classes);
    spec.validate().map_err(usage)?;

    let model = Classifier::<f32>::new(spec.clone(), file.fit.seed);
    let cfg = file.fit.config(file.fit.seed, threads)?;
    println!("rnnlab fit ({origin}): {}", spec.describe());
    println!(
        "{} parameters; {} lr {}, {}, batch {}, up to {} epochs, early stopping {}; seed {}, {threads} thread(s)",
        model.weights.len(&spec),
        cfg.optimizer.name(),
        cfg.lr,
        cfg.clip,
        cfg.batch,
        cfg.epochs,
        if cfg.patience == 0 {
            "off".to_string()
        } else {
            format!("after {} epochs without a lower val_loss", cfg.patience)
        },
        cfg.seed
    );
    println!("data: {}", data.describe);

    let result = run_with_progress(model, &data.train, &data.validation, &cfg);
    let best = &result.best;
    write_outputs(staged.path(), &result, &data, &spec, &file)?;
    let meta = [
        ("rnnlab.epoch", result.best_epoch.to_string()),
        ("rnnlab.data", data.describe.clone()),
        ("rnnlab.classes", data.class_names.join(",")),
    ];
    super::checkpoint::save(&staged.path().join("best.safetensors"), best, &meta)?;
    let out = staged.commit()?;

    match &result.outcome {
        FitOutcome::Finished => println!("finished {} epochs", cfg.epochs),
        FitOutcome::EarlyStopped { epoch } => println!(
            "early stop after epoch {epoch}: no lower val_loss for {} epochs",
            cfg.patience
        ),
        FitOutcome::Diverged { .. } => {}
    }
    if let Some(row) = result.history.iter().find(|r| r.epoch == result.best_epoch) {
        println!(
            "best epoch {}: val_loss {:.4}, val_accuracy {:.4} (chance {:.4}); {:.1} s in all",
            row.epoch,
            row.val_loss,
            row.val_accuracy,
            data.validation
                .class_shares()
                .iter()
                .cloned()
                .fold(0.0, f64::max),
            result.seconds
        );
    }
    println!(
        "wrote {}/history.csv, history.png, best.safetensors, run.json{}",
        out.display(),
        if data.words.is_some() {
            ", vocab.txt"
        } else {
            ""
        }
    );
    if let FitOutcome::Diverged { epoch, what } = &result.outcome {
        bail!(
            "diverged in epoch {epoch} ({what}); the history up to then is in {}",
            out.display()
        );
    }
    Ok(())
}

/// `fit` with a progress bar per epoch (hidden when stderr is not a terminal) and one line
/// per epoch on stdout.
pub fn run_with_progress(
    model: Classifier<f32>,
    train: &Dataset,
    validation: &Dataset,
    cfg: &FitConfig,
) -> fit::FitResult {
    let mut bar: Option<ProgressBar> = None;
    let mut best = f64::INFINITY;
    fit::fit(model, train, validation, cfg, &mut |event| match event {
        FitEvent::Batch {
            epoch,
            batch,
            batches,
            loss,
            accuracy,
        } => {
            let b = bar.get_or_insert_with(|| {
                let b = ProgressBar::new(batches as u64);
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {bar:30} {pos}/{len}  {msg}  [{elapsed_precise} < {eta}]",
                    )
                    .expect("valid template"),
                );
                b.set_prefix(format!("Epoch {epoch}/{}", cfg.epochs));
                b
            });
            b.set_position(batch as u64);
            b.set_message(format!("loss {loss:.4}  accuracy {accuracy:.4}"));
        }
        FitEvent::Epoch(row) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let better = row.val_loss < best;
            best = best.min(row.val_loss);
            println!(
                "Epoch {}/{}: loss {:.4}  accuracy {:.4} | val_loss {:.4}  val_accuracy {:.4}  ({:.1} s){}",
                row.epoch,
                cfg.epochs,
                row.loss,
                row.accuracy,
                row.val_loss,
                row.val_accuracy,
                row.seconds,
                if better { "  ← best so far" } else { "" }
            );
        }
    })
}

/// history.csv, history.png, vocab.txt, run.json.
fn write_outputs(
    dir: &Path,
    result: &fit::FitResult,
    data: &Data,
    spec: &super::model::ModelSpec,
    file: &ClassifierFile,
) -> Result<()> {
    crate::report::write_csv(&dir.join("history.csv"), &result.history)?;
    if !result.history.is_empty() {
        history_chart(&dir.join("history.png"), &result.history, &spec.describe())?;
    }
    if let Some(words) = &data.words {
        crate::fsutil::write_atomic(&dir.join("vocab.txt"), (words.join("\n") + "\n").as_bytes())?;
    }
    let run = serde_json::json!({
        "command": "fit",
        "model": spec,
        "model_description": spec.describe(),
        "fit": file.fit,
        "data": data.describe,
        "classes": data.class_names,
        "best_epoch": result.best_epoch,
        "outcome": result.outcome,
        "seconds": result.seconds,
        "version": env!("CARGO_PKG_VERSION"),
    });
    crate::fsutil::write_atomic(
        &dir.join("run.json"),
        serde_json::to_string_pretty(&run)?.as_bytes(),
    )
}

/// Loss and accuracy per epoch, training and validation.
pub fn history_chart(path: &Path, rows: &[EpochRow], title: &str) -> Result<()> {
    let pts = |f: fn(&EpochRow) -> f64| rows.iter().map(|r| (r.epoch as f64, f(r))).collect();
    // the model on two lines (it is too long for one at a readable size)
    let parts: Vec<&str> = title.split(" → ").collect();
    let mid = parts.len().div_ceil(2);
    let subtitle = Some(format!(
        "{} →\n{}\ntraining: mean over each epoch's batches, dropout on; validation: after each epoch",
        parts[..mid].join(" → "),
        parts[mid..].join(" → ")
    ));
    let left = LineChart {
        title: "Loss (categorical cross-entropy)".into(),
        subtitle: subtitle.clone(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        series: vec![
            Series::new("training", pts(|r| r.loss), Color::BLUE),
            Series::new("validation", pts(|r| r.val_loss), Color::VERMILLION),
        ],
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    let right = LineChart {
        title: "Accuracy".into(),
        subtitle,
        x_label: "epoch".into(),
        y_label: "accuracy".into(),
        series: vec![
            Series::new("training", pts(|r| r.accuracy), Color::BLUE),
            Series::new("validation", pts(|r| r.val_accuracy), Color::VERMILLION),
        ],
        y_range: Some((0.0, 1.02)),
        legend: LegendPos::Auto,
        ..LineChart::default()
    };
    two_panel_line_chart(path, &left, &right)
}
