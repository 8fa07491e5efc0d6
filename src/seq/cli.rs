//! The command-line arguments of `rnnlab fit` (clap types only; `command.rs` turns them into
//! the library's config). Every flag's `///` doc is its help text.
//!
//! Flags that set a value of the preset file are turned into `--set` overrides (and printed
//! as such), so a flag and the file can never disagree.

use super::data::Side;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Cell kinds `--cell` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CellName {
    /// Vanilla tanh RNN (Keras' SimpleRNN).
    Rnn,
    /// LSTM with forget gate.
    Lstm,
    /// Vanilla RNN with ReLU.
    RnnRelu,
    /// GRU (PyTorch's gate order r, z, n).
    Gru,
}

impl CellName {
    /// The name in files.
    pub fn name(self) -> &'static str {
        match self {
            CellName::Rnn => "rnn",
            CellName::Lstm => "lstm",
            CellName::RnnRelu => "rnn-relu",
            CellName::Gru => "gru",
        }
    }
}

/// Padding side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SideName {
    /// At the start (Keras' default).
    Pre,
    /// At the end.
    Post,
}

impl From<SideName> for Side {
    fn from(s: SideName) -> Side {
        match s {
            SideName::Pre => Side::Pre,
            SideName::Post => Side::Post,
        }
    }
}

/// `rnnlab fit`: train a text classifier like Keras' `model.fit`.
#[derive(Args, Debug, Clone)]
pub struct FitArgs {
    /// Model and training settings: a shipped preset (keras-lstm), presets/NAME.toml, or a path
    /// to a .toml file.
    #[arg(long, default_value = "keras-lstm", value_name = "NAME|FILE")]
    pub preset: String,
    /// Training data: `synthetic` (the key-token task of the preset's `[data]` table) or a CSV
    /// file with a header line.
    #[arg(long, default_value = "synthetic", value_name = "synthetic|FILE.csv")]
    pub data: String,
    /// Recurrent cell of every recurrent layer (overrides model.cell).
    #[arg(long, value_enum)]
    pub cell: Option<CellName>,
    /// Epochs (overrides fit.epochs).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Batch size (overrides fit.batch).
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// Learning rate (overrides fit.lr).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Early stopping patience in epochs, 0 = off (overrides fit.patience).
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// Share of the data held out for validation (overrides fit.validation_split).
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    pub validation_split: Option<f64>,
    /// Seed of initialisation, split, shuffles and dropout (overrides fit.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sequence length T: texts are padded/truncated to it (overrides data.seq_len).
    #[arg(long, value_name = "T")]
    pub seq_len: Option<usize>,
    /// CSV: name of the text column.
    #[arg(long, default_value = "text", value_name = "NAME")]
    pub text_column: String,
    /// CSV: name of the label column (integer class ids 0…C−1, or class names).
    #[arg(long, default_value = "label", value_name = "NAME")]
    pub label_column: String,
    /// CSV: vocabulary size V, ids 0 = padding and 1 = unknown included [default: the
    /// embedding's vocab in the preset].
    #[arg(long, value_name = "V")]
    pub vocab: Option<usize>,
    /// CSV: where short texts are padded.
    #[arg(long, value_enum, default_value_t = SideName::Pre)]
    pub padding: SideName,
    /// CSV: where long texts are cut.
    #[arg(long, value_enum, default_value_t = SideName::Pre)]
    pub truncating: SideName,
    /// Threads per training step [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Output folder for history.csv, history.png, best.safetensors, run.json (and vocab.txt for CSV data)
    /// [default: plots/fit/PRESET-CELL-DATA].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override one value of the preset, e.g. --set fit.patience=5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub sets: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE (for example fit.epochs=3)")),
    }
}

impl FitArgs {
    /// The flags that set values of the preset file, as `--set` overrides, then `--set`s.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        };
        add("model.cell", self.cell.map(|c| format!("\"{}\"", c.name())));
        add("fit.epochs", self.epochs.map(|v| v.to_string()));
        add("fit.batch", self.batch.map(|v| v.to_string()));
        add("fit.lr", self.lr.map(|v| format!("{v:?}")));
        add("fit.patience", self.patience.map(|v| v.to_string()));
        add(
            "fit.validation_split",
            self.validation_split.map(|v| format!("{v:?}")),
        );
        add("fit.seed", self.seed.map(|v| v.to_string()));
        add("data.seq_len", self.seq_len.map(|v| v.to_string()));
        out.extend(self.sets.iter().cloned());
        out
    }
}
