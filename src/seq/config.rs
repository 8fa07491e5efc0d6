//! Classifier files: a model description, training settings and the synthetic data, in TOML
//! (`presets/NAME.toml` for `rnnlab fit`, `experiments/NAME.toml` with an `[experiment]`
//! table for `rnnlab experiment`). `kind = "classifier"` tells them from the vanishing
//! experiment's files.
//!
//! Loading goes through [`crate::experiment::config::load_as`]: unknown keys are errors with
//! their line, `[quick]` is merged for `--quick`, `--set key=value` overrides are reported.
//! The presets shipped with rnnlab are compiled in; `presets/NAME.toml` in the current folder
//! takes precedence, and a path to a `.toml` file works too.

use super::data::synthetic::Synthetic;
use super::model::ModelSpec;
use crate::optim::{Clip, OptimizerKind};
use crate::params::CellKind;
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The presets shipped with rnnlab: (name, file contents).
pub const PRESETS: [(&str, &str); 1] =
    [("keras-lstm", include_str!("../../presets/keras-lstm.toml"))];

/// A classifier file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierFile {
    /// Always "classifier".
    pub kind: String,
    /// One line for listings.
    pub description: String,
    pub model: ModelSpec,
    pub fit: FitSection,
    /// The synthetic task.
    pub data: Synthetic,
    /// The seed-classifier experiment's own settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentSection>,
    /// Overrides applied by `--quick` (already merged in when loaded with quick = true).
    #[serde(default, skip_serializing)]
    pub quick: Option<toml::Table>,
}

/// How to train (Keras' `compile` + `fit` arguments).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitSection {
    pub batch: usize,
    pub epochs: usize,
    pub lr: f64,
    /// "adam", "rmsprop" or "sgd".
    pub optimizer: String,
    /// Global-norm clipping threshold (0 = off).
    pub clip: f64,
    /// Share of the data held out for validation.
    pub validation_split: f64,
    /// Early stopping: stop after this many epochs without a lower validation loss (0 = off).
    pub patience: usize,
    /// Seed of the initialisation, the split, the shuffles and dropout.
    pub seed: u64,
}

/// `[experiment]` of the seed-classifier experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSection {
    /// Cells compared in the same architecture.
    pub cells: Vec<CellKind>,
    /// Training runs per cell (seeds 0 … seeds−1).
    pub seeds: usize,
    /// Width of the distance bins of the accuracy chart (in tokens).
    pub bin_width: usize,
    /// Validation sequences on which ‖∂L/∂e_t‖ is measured.
    pub probe_batch: usize,
}

impl FitSection {
    /// The optimizer with its PyTorch/Keras default hyper-parameters.
    pub fn optimizer(&self) -> Result<OptimizerKind> {
        OptimizerKind::by_name(&self.optimizer, 0.9).ok_or_else(|| {
            anyhow!(
                "fit.optimizer = \"{}\" is invalid: expected {}",
                self.optimizer,
                OptimizerKind::NAMES.join(", ")
            )
        })
    }

    /// The training settings of one run with `seed` on `threads` threads.
    pub fn config(&self, seed: u64, threads: usize) -> Result<super::fit::FitConfig> {
        Ok(super::fit::FitConfig {
            batch: self.batch,
            epochs: self.epochs,
            lr: self.lr,
            optimizer: self.optimizer()?,
            clip: self.clip(),
            patience: self.patience,
            seed,
            threads,
        })
    }

    /// The clipping rule.
    pub fn clip(&self) -> Clip {
        if self.clip == 0.0 {
            Clip::None
        } else {
            Clip::Norm { max: self.clip }
        }
    }

    /// Range checks; errors name the key.
    pub fn validate(&self) -> Result<()> {
        for (k, v) in [("fit.batch", self.batch), ("fit.epochs", self.epochs)] {
            if v == 0 {
                bail!("{k} = 0 is invalid: it must be at least 1");
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!(
                "fit.lr = {} is invalid: it must be a positive finite number",
                self.lr
            );
        }
        if !(self.clip.is_finite() && self.clip >= 0.0) {
            bail!(
                "fit.clip = {} is invalid: it must be ≥ 0 (0 = no clipping)",
                self.clip
            );
        }
        if !(self.validation_split > 0.0 && self.validation_split < 1.0) {
            bail!(
                "fit.validation_split = {} is invalid: it must be between 0 and 1",
                self.validation_split
            );
        }
        self.optimizer()?;
        Ok(())
    }
}

impl ClassifierFile {
    /// Everything checked; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if self.kind != "classifier" {
            bail!(
                "kind = \"{}\" is invalid: classifier files have kind = \"classifier\"",
                self.kind
            );
        }
        self.model.validate()?;
        self.fit.validate()?;
        self.data.validate()?;
        if let Some(e) = &self.experiment
            && (e.cells.is_empty() || e.seeds == 0 || e.bin_width == 0 || e.probe_batch == 0)
        {
            bail!(
                "[experiment]: cells must not be empty, and seeds, bin_width and probe_batch must be at least 1"
            );
        }
        Ok(())
    }

    /// The model, sized for the synthetic data (vocabulary and classes from `[data]`).
    pub fn synthetic_model(&self) -> ModelSpec {
        self.model.with_sizes(self.data.vocab, self.data.classes)
    }
}

/// True if a file's text is a classifier file (`kind = "classifier"`).
pub fn is_classifier(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| {
            t.get("kind")
                .and_then(|k| k.as_str().map(|k| k == "classifier"))
        })
        .unwrap_or(false)
}

/// Finds preset `name`: a path to a `.toml` file, `presets/NAME.toml`, or a built-in.
/// Returns (where it came from, text).
pub fn find_preset(name: &str) -> Result<(String, String)> {
    let as_path = Path::new(name);
    let local = Path::new("presets").join(format!("{name}.toml"));
    for path in [as_path, local.as_path()] {
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return Ok((path.display().to_string(), text));
        }
    }
    match PRESETS.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => Ok((format!("built-in preset {n}"), text.to_string())),
        None => bail!(
            "unknown preset `{name}`: expected one of {} (or a file presets/{name}.toml, or a path to a .toml file)",
            PRESETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Parses and validates a classifier file, with `--quick` and `--set` overrides.
pub fn load(
    text: &str,
    origin: &str,
    quick: bool,
    overrides: &[(String, String)],
    on_override: &mut dyn FnMut(&str),
) -> Result<ClassifierFile> {
    let file: ClassifierFile =
        crate::experiment::config::load_as(text, origin, quick, overrides, on_override)?;
    file.validate().map_err(|e| anyhow!("{origin}: {e}"))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::model::LayerSpec;

    #[test]
    fn the_keras_preset_is_the_keras_model() {
        let (_, text) = find_preset("keras-lstm").unwrap();
        assert!(is_classifier(&text));
        let f = load(&text, "keras-lstm", false, &[], &mut |_| {}).unwrap();
        assert_eq!(
            f.model.describe(),
            "Embedding(10000, 256, mask_zero) → Bidirectional(LSTM(64, return_sequences)) → Dropout(0.5) → LSTM(32) → Dropout(0.5) → Dense(10, softmax)"
        );
        assert_eq!((f.fit.batch, f.fit.lr, f.data.seq_len), (32, 1e-3, 100));
        assert_eq!(f.fit.optimizer().unwrap().name(), "adam");
        // one setting swaps every recurrent layer
        let mut said = Vec::new();
        let rnn = load(
            &text,
            "k",
            false,
            &[("model.cell".into(), "\"rnn\"".into())],
            &mut |s| said.push(s.to_string()),
        )
        .unwrap();
        assert_eq!(rnn.model.cell, CellKind::Rnn);
        assert!(
            rnn.model
                .describe()
                .contains("Bidirectional(RNN(64, return_sequences))")
        );
        assert_eq!(said, vec!["Overriding: model.cell = \"rnn\""]);
        // sizes: the vocabulary and classes of the data
        let spec = f.model.with_sizes(500, 3);
        assert_eq!((spec.vocab(), spec.classes()), (500, 3));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let (_, text) = find_preset("keras-lstm").unwrap();
        let err = |t: &str| {
            format!(
                "{:#}",
                load(t, "p.toml", false, &[], &mut |_| {}).unwrap_err()
            )
        };
        let e = err(&text.replace("units = 32 }", "units = 32, bidirectionl = true }"));
        assert!(e.contains("bidirectionl") && e.contains("p.toml"), "{e}");
        let e = err(&text.replace(
            "units = 64, bidirectional = true, return_sequences = true",
            "units = 64, bidirectional = true",
        ));
        assert!(
            e.contains("model.layers[3]: a recurrent layer needs a sequence"),
            "{e}"
        );
        let e = err(&text.replace(
            "{ kind = \"recurrent\", units = 32 }",
            "{ kind = \"recurrent\", units = 32, return_sequences = true }",
        ));
        assert!(
            e.contains("model.layers[5]: the dense layer needs one vector per sequence"),
            "{e}"
        );
        let e = err(&text.replace("cell = \"lstm\"", "cell = \"lstn\""));
        assert!(e.contains("lstn"), "{e}");
        let e = err(&text.replace(
            "rate = 0.5 },\n  { kind = \"recurrent\"",
            "rate = 1.5 },\n  { kind = \"recurrent\"",
        ));
        assert!(e.contains("model.layers[2]: rate = 1.5 is invalid"), "{e}");
        let e = err(&text.replace("lr = 0.001", "lr = -1.0"));
        assert!(e.contains("fit.lr = -1 is invalid"), "{e}");
        assert!(
            format!("{:#}", find_preset("keras-gru2").unwrap_err())
                .contains("unknown preset `keras-gru2`")
        );
        let spec = ModelSpec {
            cell: CellKind::Lstm,
            forget_bias: 1.0,
            layers: vec![LayerSpec::Dropout { rate: 0.1 }],
        };
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("model.layers[0] must be an embedding")
        );
    }
}
