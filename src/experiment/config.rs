//! Experiment files (`experiments/NAME.toml`): loading, `--quick`, overrides, validation.
//!
//! A file is plain TOML with a fixed schema, chosen by its top-level `kind`: `"vanishing"`
//! ([`VanishingConfig`], also when `kind` is absent) or `"exploding"`
//! ([`ExplodingConfig`], defined with its runner); unknown keys are errors (with the line,
//! from the TOML parser). `--quick` merges the file's `[quick]` table over the
//! rest; `--set key=value` and flags like `--seeds` override single values afterwards, and
//! each override is reported. The effective configuration is what gets saved in `run.json`.
//! The experiments shipped with rnnlab are also compiled into the binary, so they run from
//! any folder; a file in `./experiments/` takes precedence, so users can edit them.

pub use super::exploding::ExplodingConfig;
use crate::init::{Init, RecurrentInit};
use crate::optim::{Clip, OptimizerKind};
use crate::params::CellKind;
use crate::train::TrainConfig;
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The experiments shipped with rnnlab: (name, file contents).
pub const BUILTIN: [(&str, &str); 3] = [
    (
        "vanishing",
        include_str!("../../experiments/vanishing.toml"),
    ),
    (
        "exploding",
        include_str!("../../experiments/exploding.toml"),
    ),
    (
        "seed-classifier",
        include_str!("../../experiments/seed-classifier.toml"),
    ),
];

/// A loaded experiment definition, by the `kind` of its file. Serialises as the inner
/// schema (which includes `kind`), so the saved `config.toml` reads back with [`from_saved`].
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ExperimentConfig {
    Vanishing(VanishingConfig),
    Exploding(ExplodingConfig),
}

impl ExperimentConfig {
    /// The one-line description.
    pub fn description(&self) -> &str {
        match self {
            ExperimentConfig::Vanishing(c) => &c.description,
            ExperimentConfig::Exploding(c) => &c.description,
        }
    }

    /// Sets the number of seeds of everything seeded (`--seeds N`).
    pub fn set_seeds(&mut self, seeds: usize) {
        match self {
            ExperimentConfig::Vanishing(c) => c.set_seeds(seeds),
            ExperimentConfig::Exploding(c) => c.set_seeds(seeds),
        }
    }
}

/// The `kind` of an experiment file (`"vanishing"` when absent or unreadable: the parser
/// then reports what is wrong with the file).
pub fn kind_of(text: &str) -> String {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("kind").and_then(|k| k.as_str().map(String::from)))
        .unwrap_or_else(|| "vanishing".into())
}

fn vanishing_kind() -> String {
    "vanishing".into()
}

/// The vanishing-gradient experiment's file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VanishingConfig {
    /// `"vanishing"` (may be left out).
    #[serde(default = "vanishing_kind")]
    pub kind: String,
    /// One line shown by `experiment --list`.
    pub description: String,
    pub model: ModelSection,
    pub train: TrainSection,
    pub probe: ProbeSection,
    /// Accuracy sweeps, keyed by task name ("adding", "copy").
    pub sweep: BTreeMap<String, SweepSection>,
    /// Overrides applied by `--quick` (already merged in when loaded with quick = true).
    #[serde(default, skip_serializing)]
    pub quick: Option<toml::Table>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub hidden: usize,
    pub init: String,
    pub init_scale: f64,
    pub forget_bias: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub batch: usize,
    pub lr: f64,
    pub optimizer: String,
    pub clip: f64,
    pub eval_every: usize,
    pub eval_size: usize,
    pub target_accuracy: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    pub seq_len: usize,
    pub every: usize,
    pub batch: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    pub seq_lens: Vec<usize>,
    pub models: Vec<String>,
    pub seeds: usize,
    pub steps: usize,
    #[serde(default = "default_copy_len")]
    pub copy_len: usize,
}

fn default_copy_len() -> usize {
    10
}

/// Where an experiment definition came from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    Builtin(&'static str),
}

impl Source {
    /// "experiments/NAME.toml" or "built-in NAME.toml", for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Builtin(n) => format!("built-in {n}.toml"),
        }
    }
}

/// Finds experiment `name`: `experiments/NAME.toml` in the current folder, else the built-in.
pub fn find(name: &str) -> Result<(Source, String)> {
    let path = Path::new("experiments").join(format!("{name}.toml"));
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok((Source::File(path), text));
    }
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => Ok((Source::Builtin(n), text.to_string())),
        None => bail!(
            "unknown experiment `{name}`: expected one of {} (or a file experiments/{name}.toml)",
            list()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// All experiments: built-in ones and `experiments/*.toml`, with their descriptions.
pub fn list() -> Vec<(String, String)> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, text) in BUILTIN {
        out.insert(name.to_string(), describe(text));
    }
    if let Ok(dir) = std::fs::read_dir("experiments") {
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml")
                && let (Some(stem), Ok(text)) = (path.file_stem(), std::fs::read_to_string(&path))
            {
                out.insert(stem.to_string_lossy().into_owned(), describe(&text));
            }
        }
    }
    out.into_iter().collect()
}

fn describe(text: &str) -> String {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| {
            t.get("description")
                .and_then(|d| d.as_str().map(String::from))
        })
        .unwrap_or_else(|| "(no description)".into())
}

/// Parses an experiment file by its `kind`, applies `[quick]` if asked, then each
/// `key=value` override (reported through `on_override`), and validates the result.
pub fn load(
    text: &str,
    origin: &str,
    quick: bool,
    overrides: &[(String, String)],
    on_override: &mut dyn FnMut(&str),
) -> Result<ExperimentConfig> {
    let cfg = match kind_of(text).as_str() {
        "vanishing" => {
            ExperimentConfig::Vanishing(load_as(text, origin, quick, overrides, on_override)?)
        }
        "exploding" => {
            ExperimentConfig::Exploding(load_as(text, origin, quick, overrides, on_override)?)
        }
        other => bail!(
            "{origin}: kind = \"{other}\" is not an experiment kind: expected \"vanishing\" or \"exploding\""
        ),
    };
    let checked = match &cfg {
        ExperimentConfig::Vanishing(c) => c.validate(),
        ExperimentConfig::Exploding(c) => c.validate(),
    };
    checked.map_err(|e| anyhow!("{origin}: {e}"))?;
    Ok(cfg)
}

/// Reads the effective configuration a run saved (`config.toml` of a result folder).
pub fn from_saved(text: &str, origin: &str) -> Result<ExperimentConfig> {
    load(text, origin, false, &[], &mut |_| {})
}

/// [`load`] for any file schema `T` (unknown keys are errors when `T` denies them): parse,
/// `[quick]`, overrides; validation is the caller's.
pub fn load_as<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    quick: bool,
    overrides: &[(String, String)],
    on_override: &mut dyn FnMut(&str),
) -> Result<T> {
    // Parse once typed, for unknown keys with line numbers.
    let _: T =
        toml::from_str(text).map_err(|e| anyhow!("{origin}: {}", one_line(&e.to_string())))?;
    let mut table: toml::Table = toml::from_str(text)?;
    let quick_table = table.remove("quick");
    if quick {
        match quick_table {
            Some(toml::Value::Table(q)) => merge(&mut table, q),
            _ => bail!("{origin} has no [quick] table, so --quick is not available for it"),
        }
    }
    for (key, value) in overrides {
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .map(|mut t| t.remove("v").expect("just parsed"))
            .unwrap_or_else(|_| toml::Value::String(value.clone()));
        set(&mut table, key, parsed.clone()).with_context(|| format!("--set {key}={value}"))?;
        on_override(&format!("Overriding: {key} = {parsed}"));
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            anyhow!(
                "{origin} after --quick/overrides: {}",
                one_line(&e.to_string())
            )
        })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Deep-merges `over` into `base`.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets a dotted key (`sweep.adding.steps`) that must already exist.
fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split gives at least one part");
    let mut cur = table;
    for p in parts {
        cur = match cur.get_mut(p) {
            Some(toml::Value::Table(t)) => t,
            _ => bail!("unknown key `{key}`"),
        };
    }
    match cur.get(last) {
        Some(old)
            if old.type_str() == value.type_str() || (old.is_float() && value.is_integer()) =>
        {
            let value = if old.is_float() {
                toml::Value::Float(
                    value
                        .as_float()
                        .or(value.as_integer().map(|i| i as f64))
                        .expect("number"),
                )
            } else {
                value
            };
            cur.insert(last.to_string(), value);
            Ok(())
        }
        Some(old) => {
            let a = |t: &str| {
                let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                format!("{article} {t}")
            };
            bail!(
                "`{key}` is {}, not {}",
                a(old.type_str()),
                a(value.type_str())
            )
        }
        None => bail!("unknown key `{key}`"),
    }
}

impl VanishingConfig {
    /// Range checks; errors name the key, the value and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if self.kind != "vanishing" {
            bail!(
                "kind = \"{}\" is invalid here: this file follows the vanishing schema",
                self.kind
            );
        }
        let at_least_1 = [
            ("model.hidden", self.model.hidden),
            ("train.batch", self.train.batch),
            ("train.eval_every", self.train.eval_every),
            ("train.eval_size", self.train.eval_size),
            ("probe.seq_len", self.probe.seq_len),
            ("probe.every", self.probe.every),
            ("probe.batch", self.probe.batch),
        ];
        for (k, v) in at_least_1 {
            if v == 0 {
                bail!("{k} = 0 is invalid: it must be at least 1");
            }
        }
        if self.probe.seq_len < 2 {
            bail!(
                "probe.seq_len = {} is invalid: the adding task needs at least 2",
                self.probe.seq_len
            );
        }
        self.train_config(CellKind::Lstm, 1, 0)?;
        if self.sweep.is_empty() {
            bail!("the experiment has no [sweep.TASK] table");
        }
        for (task, s) in &self.sweep {
            if !crate::tasks::TASK_NAMES.contains(&task.as_str()) {
                bail!(
                    "[sweep.{task}]: unknown task `{task}`: expected one of {}",
                    crate::tasks::TASK_NAMES.join(", ")
                );
            }
            if s.seq_lens.is_empty() || s.models.is_empty() {
                bail!("sweep.{task}: seq_lens and models must not be empty");
            }
            if let Some(t) = s.seq_lens.iter().find(|&&t| !(2..=100_000).contains(&t)) {
                bail!(
                    "sweep.{task}.seq_lens contains {t}: sequence lengths must be between 2 and 100000"
                );
            }
            if let Some(m) = s.models.iter().find(|m| CellKind::parse(m).is_none()) {
                let names: Vec<&str> = CellKind::ALL.iter().map(|c| c.name()).collect();
                bail!(
                    "sweep.{task}.models contains `{m}`: expected one of {}",
                    names.join(", ")
                );
            }
            if s.seeds == 0 || s.steps == 0 || s.copy_len == 0 {
                bail!("sweep.{task}: seeds, steps and copy_len must be at least 1");
            }
        }
        if !self.sweep.contains_key("adding") {
            bail!(
                "the probes need a [sweep.adding] table (they reuse its runs at T = probe.seq_len)"
            );
        }
        Ok(())
    }

    /// Sets the number of seeds of every sweep (`--seeds N`).
    pub fn set_seeds(&mut self, seeds: usize) {
        for s in self.sweep.values_mut() {
            s.seeds = seeds;
        }
    }

    /// The training config of one run.
    pub fn train_config(&self, cell: CellKind, steps: usize, seed: u64) -> Result<TrainConfig> {
        let recurrent = match self.model.init.as_str() {
            "uniform" => RecurrentInit::Uniform,
            "orthogonal" => RecurrentInit::Orthogonal {
                gain: self.model.init_scale,
            },
            "identity" => RecurrentInit::Identity {
                scale: self.model.init_scale,
            },
            other => bail!(
                "model.init = \"{other}\" is invalid: expected \"uniform\", \"orthogonal\" or \"identity\""
            ),
        };
        let optimizer = OptimizerKind::by_name(&self.train.optimizer, 0.9).ok_or_else(|| {
            anyhow!(
                "train.optimizer = \"{}\" is invalid: expected {}",
                self.train.optimizer,
                OptimizerKind::NAMES.join(", ")
            )
        })?;
        let clip = if self.train.clip == 0.0 {
            Clip::None
        } else {
            Clip::Norm {
                max: self.train.clip,
            }
        };
        let cfg = TrainConfig {
            cell,
            hidden: self.model.hidden,
            batch: self.train.batch,
            steps,
            lr: self.train.lr,
            optimizer,
            clip,
            init: Init {
                recurrent,
                forget_bias: self.model.forget_bias,
                ..Init::default()
            },
            seed,
            data_seed: seed,
            eval_every: self.train.eval_every,
            eval_size: self.train.eval_size,
            target_accuracy: Some(self.train.target_accuracy),
            probe_every: None,
            probe_size: self.probe.batch,
        };
        cfg.validate().map_err(|e| {
            // Name the file's keys rather than the command-line flags.
            anyhow!(
                "{}",
                e.to_string()
                    .replace("--lr", "train.lr")
                    .replace("--clip", "train.clip")
                    .replace("--target-accuracy", "train.target_accuracy")
                    .replace("--forget-bias", "model.forget_bias")
            )
        })?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> &'static str {
        BUILTIN[0].1
    }

    fn vanishing(cfg: ExperimentConfig) -> VanishingConfig {
        match cfg {
            ExperimentConfig::Vanishing(c) => c,
            other => panic!("not a vanishing config: {other:?}"),
        }
    }

    fn load_vanishing(
        text: &str,
        origin: &str,
        quick: bool,
        overrides: &[(String, String)],
        on_override: &mut dyn FnMut(&str),
    ) -> Result<VanishingConfig> {
        load(text, origin, quick, overrides, on_override).map(vanishing)
    }

    #[test]
    fn builtin_loads_plain_and_quick() {
        let full = load_vanishing(builtin(), "vanishing.toml", false, &[], &mut |_| {}).unwrap();
        let quick = load_vanishing(builtin(), "vanishing.toml", true, &[], &mut |_| {}).unwrap();
        assert_eq!(full.model.hidden, 64);
        assert_eq!(quick.model.hidden, 32);
        assert_eq!(quick.train.lr, full.train.lr); // untouched keys survive the merge
        assert!(quick.sweep["adding"].steps < full.sweep["adding"].steps);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let bad = builtin().replace("hidden = 64", "hiden = 64");
        let err = load(&bad, "x.toml", false, &[], &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("hiden") && err.contains("x.toml"), "{err}");
        let bad = builtin().replace("lr = 0.01", "lr = -0.01");
        let err = load(&bad, "x.toml", false, &[], &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.lr -0.01 is invalid"), "{err}");
        let bad = builtin().replace("\"gru\"]", "\"gru2\"]");
        let err = load(&bad, "x.toml", false, &[], &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("gru2"), "{err}");
    }

    #[test]
    fn overrides_are_applied_and_reported() {
        let mut said = Vec::new();
        let cfg = load_vanishing(
            builtin(),
            "v",
            false,
            &[
                ("model.hidden".into(), "32".into()),
                ("train.lr".into(), "1".into()),
            ],
            &mut |s| said.push(s.to_string()),
        )
        .unwrap();
        assert_eq!(cfg.model.hidden, 32);
        assert_eq!(cfg.train.lr, 1.0);
        assert_eq!(said[0], "Overriding: model.hidden = 32");
        let err = load(
            builtin(),
            "v",
            false,
            &[("model.hidden_size".into(), "32".into())],
            &mut |_| {},
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("unknown key `model.hidden_size`"));
        let err = load(
            builtin(),
            "v",
            false,
            &[("model.hidden".into(), "\"big\"".into())],
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("is an integer, not a string"),
            "{err:#}"
        );
    }

    /// The saved configuration reads back as the same kind, and a file without `kind` is a
    /// vanishing experiment; an unknown kind is a clear error.
    #[test]
    fn kinds_round_trip_through_config_toml() {
        // (The classifier files have their own loader, in `seq`.)
        let ours = BUILTIN
            .iter()
            .filter(|(_, text)| ["vanishing", "exploding"].contains(&kind_of(text).as_str()));
        for (name, text) in ours {
            let cfg = load(text, name, true, &[], &mut |_| {}).unwrap();
            let saved = toml::to_string(&cfg).unwrap();
            assert_eq!(from_saved(&saved, name).unwrap(), cfg, "{name}");
        }
        let plain = builtin().replace("kind = \"vanishing\"", "");
        assert!(matches!(
            load(&plain, "v", false, &[], &mut |_| {}).unwrap(),
            ExperimentConfig::Vanishing(_)
        ));
        let bad = builtin().replace("kind = \"vanishing\"", "kind = \"imploding\"");
        let err = load(&bad, "v", false, &[], &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"imploding\" is not an experiment kind"),
            "{err}"
        );
    }
}
