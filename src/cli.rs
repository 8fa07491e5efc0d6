//! The command line: clap types, each flag's `///` doc is its help text, and their
//! conversion into the library's plain configs (no clap beyond this file).
//!
//! Values are checked here or in the configs' `validate`; a bad value becomes one error line
//! naming the value and what is allowed (exit status 2, see `main.rs`).

use crate::init::{Init, RecurrentInit};
use crate::optim::{Clip, OptimizerKind};
use crate::params::CellKind;
use crate::train::TrainConfig;
use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// rnnlab: watch the vanishing gradient happen. Hand-written BPTT for a vanilla RNN and an
/// LSTM, synthetic long-range tasks, per-timestep gradient probes and charts.
#[derive(Parser, Debug)]
#[command(name = "rnnlab", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train one model on one task; writes metrics.csv (and a checkpoint with --save).
    Train(TrainArgs),
    /// Per-timestep gradient norms ‖∂L/∂h_t‖ of one model on one batch: CSV, gradients, chart.
    Probe(ProbeArgs),
    /// Finite-difference check of every parameter, input and initial-state gradient (f64).
    Gradcheck(GradcheckArgs),
    /// Run a named experiment (experiments/NAME.toml): charts, CSVs and summary.md in plots/NAME.
    Experiment(ExperimentArgs),
    /// Redraw the charts and summary.md of a finished experiment from its CSV files.
    Plot(PlotArgs),
    /// Training-step throughput for the standard configurations (ms/step, sequences/s, GFLOP/s).
    Bench(crate::bench::BenchArgs),
    /// Train a text classifier like Keras' model.fit (default: the Keras example on the
    /// synthetic key-token task); history.csv, charts and the best epoch's checkpoint.
    Fit(crate::seq::cli::FitArgs),
}

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// Experiment name, e.g. `vanishing` (see --list).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// List the available experiments, one line each.
    #[arg(long)]
    pub list: bool,
    /// A small version with the same charts that finishes in seconds (the file's table named quick).
    #[arg(long)]
    pub quick: bool,
    /// Output folder [default: plots/NAME].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Number of seeds per sweep point (overrides the file).
    #[arg(long, value_name = "N")]
    pub seeds: Option<usize>,
    /// Runs trained in parallel [default: all cores].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Override one value of the experiment file, e.g. --set sweep.adding.steps=3000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub sets: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (for example model.hidden=32)"
        )),
    }
}

impl ExperimentArgs {
    /// The library's options.
    pub fn options(&self) -> crate::experiment::Options {
        crate::experiment::Options {
            quick: self.quick,
            out: self.out.clone(),
            jobs: self.jobs,
            seeds: self.seeds,
            sets: self.sets.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Folder of a finished experiment (e.g. plots/vanishing).
    pub dir: PathBuf,
}

/// Task names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TaskName {
    /// The adding problem: sum the two marked values (MSE on the last step).
    Adding,
    /// The copying-memory task: recall K symbols after a gap (cross-entropy at every step).
    Copy,
}

impl TaskName {
    pub fn name(self) -> &'static str {
        match self {
            TaskName::Adding => "adding",
            TaskName::Copy => "copy",
        }
    }
}

/// Model names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelName {
    /// Vanilla tanh RNN.
    Rnn,
    /// LSTM with forget gate.
    Lstm,
    /// GRU (PyTorch's nn.GRU: gates r, z, n).
    Gru,
    /// Vanilla RNN with ReLU instead of tanh (nn.RNN(nonlinearity='relu')).
    RnnRelu,
    /// IRNN (Le et al. 2015): the ReLU RNN with W_hh = identity (× --init-scale), input
    /// weights ~ N(0, 0.001²) and zero biases.
    Irnn,
}

impl From<ModelName> for CellKind {
    fn from(m: ModelName) -> Self {
        match m {
            ModelName::Rnn => CellKind::Rnn,
            ModelName::Lstm => CellKind::Lstm,
            ModelName::Gru => CellKind::Gru,
            ModelName::RnnRelu | ModelName::Irnn => CellKind::RnnRelu,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    Sgd,
    Rmsprop,
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClipMode {
    /// Rescale all gradients when their global norm exceeds --clip.
    Norm,
    /// Clamp every gradient entry to [−clip, clip].
    Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InitName {
    /// PyTorch's default U(−1/√H, 1/√H).
    Uniform,
    /// Random orthogonal W_hh times --init-scale.
    Orthogonal,
    /// --init-scale × identity W_hh (IRNN-style).
    Identity,
}

/// The task and model, shared by `train` and `probe`.
#[derive(Args, Debug, Clone)]
pub struct TaskModelArgs {
    /// Task to run.
    #[arg(long, value_enum)]
    pub task: TaskName,
    /// Recurrent cell.
    #[arg(long, value_enum)]
    pub model: ModelName,
    /// Sequence length T (copy task: the gap; the input is T + 2K long).
    #[arg(long, value_name = "T")]
    pub seq_len: Option<usize>,
    /// Copy task: number of symbols K to remember.
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub copy_len: usize,
    /// Hidden size H [default: 64; with --checkpoint, the checkpoint's].
    #[arg(long, value_name = "H")]
    pub hidden: Option<usize>,
    /// Initialisation of the recurrent matrix W_hh [default: uniform; identity for irnn].
    #[arg(long, value_enum)]
    pub init: Option<InitName>,
    /// Gain of the orthogonal init / scale of the identity init.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub init_scale: f64,
    /// LSTM forget-gate bias at initialisation (0 makes the LSTM's gradient vanish too).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub forget_bias: f64,
    /// Initialisation seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data seed (training batches, held-out set, probe batch).
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,
    /// Start from this checkpoint (safetensors, PyTorch names) instead of a fresh model.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
}

impl TaskModelArgs {
    /// Hidden size of a fresh model: --hidden, or 64.
    pub fn hidden(&self) -> usize {
        self.hidden.unwrap_or(64)
    }

    /// The initialisation settings.
    pub fn init(&self) -> Result<Init> {
        if !self.init_scale.is_finite() {
            bail!(
                "--init-scale {} is invalid: it must be a finite number",
                self.init_scale
            );
        }
        if self.model == ModelName::Irnn {
            return match self.init {
                None | Some(InitName::Identity) => Ok(Init::irnn(self.init_scale)),
                Some(other) => bail!(
                    "--model irnn fixes the initialisation (identity W_hh); for the ReLU RNN with --init {} use --model rnn-relu",
                    other
                        .to_possible_value()
                        .expect("no skipped values")
                        .get_name()
                ),
            };
        }
        let recurrent = match self.init.unwrap_or(InitName::Uniform) {
            InitName::Uniform => RecurrentInit::Uniform,
            InitName::Orthogonal => RecurrentInit::Orthogonal {
                gain: self.init_scale,
            },
            InitName::Identity => RecurrentInit::Identity {
                scale: self.init_scale,
            },
        };
        Ok(Init {
            recurrent,
            forget_bias: self.forget_bias,
            ..Init::default()
        })
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: TaskModelArgs,
    /// Batch size B.
    #[arg(long, value_name = "B", default_value_t = 64)]
    pub batch: usize,
    /// Maximum number of training steps.
    #[arg(long, default_value_t = 4000)]
    pub steps: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-2, allow_negative_numbers = true)]
    pub lr: f64,
    /// Optimizer (PyTorch's update rules and default hyper-parameters).
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam)]
    pub optimizer: OptimizerName,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Gradient clipping threshold (0 = no clipping).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub clip: f64,
    /// Clip by global norm or by value.
    #[arg(long, value_enum, default_value_t = ClipMode::Norm)]
    pub clip_mode: ClipMode,
    /// Evaluate on the held-out set every N steps.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub eval_every: usize,
    /// Number of held-out sequences.
    #[arg(long, default_value_t = 1000)]
    pub eval_size: usize,
    /// Stop early once held-out accuracy reaches this.
    #[arg(long, default_value_t = 0.95)]
    pub target_accuracy: f64,
    /// Run every step even when solved.
    #[arg(long)]
    pub no_early_stop: bool,
    /// Threads each step's batch is split over; the numbers do not depend on it [default:
    /// all cores, or 1 for a step too small to gain from them].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Output folder for metrics.csv and run.json [default: plots/train/TASK-MODEL-T{T}, e.g. plots/train/adding-lstm-T100].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write the trained model to this checkpoint file (safetensors).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

impl TrainArgs {
    /// The library's training config.
    pub fn config(&self) -> Result<TrainConfig> {
        let c = &self.common;
        let optimizer = match self.optimizer {
            OptimizerName::Sgd => OptimizerKind::Sgd {
                momentum: self.momentum,
            },
            OptimizerName::Rmsprop => OptimizerKind::by_name("rmsprop", 0.0).expect("known"),
            OptimizerName::Adam => OptimizerKind::by_name("adam", 0.0).expect("known"),
        };
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            bail!(
                "--momentum {} is invalid: it must be in [0, 1)",
                self.momentum
            );
        }
        let clip = match (self.clip, self.clip_mode) {
            (0.0, _) => Clip::None,
            (max, ClipMode::Norm) => Clip::Norm { max },
            (max, ClipMode::Value) => Clip::Value { max },
        };
        let cfg = TrainConfig {
            cell: c.model.into(),
            hidden: c.hidden(),
            batch: self.batch,
            steps: self.steps,
            lr: self.lr,
            optimizer,
            clip,
            init: c.init()?,
            seed: c.seed,
            data_seed: c.data_seed,
            eval_every: self.eval_every,
            eval_size: self.eval_size,
            target_accuracy: (!self.no_early_stop).then_some(self.target_accuracy),
            probe_every: None,
            probe_size: 256,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub common: TaskModelArgs,
    /// Batch size B of the sampled probe batch.
    #[arg(long, value_name = "B", default_value_t = 256)]
    pub batch: usize,
    /// Read the batch from this safetensors file (x: (B, T, I) f32; y: (B, 1) f32 or (B, T) i64).
    #[arg(long, value_name = "FILE")]
    pub batch_file: Option<PathBuf>,
    /// Also write the batch used to this file, so another tool can replay it.
    #[arg(long, value_name = "FILE")]
    pub dump_batch: Option<PathBuf>,
    /// Output folder for grad_norms.csv, grads.safetensors and the chart.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct GradcheckArgs {
    /// Check only this cell (default: all).
    #[arg(long, value_enum)]
    pub model: Option<ModelName>,
    /// Seed of the random weights, inputs and initial states.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sequence length of the checked problem.
    #[arg(long, value_name = "T", default_value_t = 6)]
    pub seq_len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn train_config(args: &[&str]) -> Result<TrainConfig> {
        let cli = Cli::try_parse_from(["rnnlab", "train"].iter().chain(args))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Command::Train(t) = cli.command else {
            panic!("not train")
        };
        t.config()
    }

    #[test]
    fn train_defaults_and_overrides() {
        let cfg =
            train_config(&["--task", "adding", "--model", "lstm", "--seq-len", "100"]).unwrap();
        assert_eq!(cfg, TrainConfig::default());
        let cfg = train_config(&[
            "--task",
            "copy",
            "--model",
            "rnn",
            "--seq-len",
            "20",
            "--lr",
            "3e-3",
            "--clip",
            "0",
            "--optimizer",
            "sgd",
            "--no-early-stop",
        ])
        .unwrap();
        assert_eq!(cfg.cell, CellKind::Rnn);
        assert_eq!(cfg.lr, 3e-3);
        assert_eq!(cfg.clip, Clip::None);
        assert_eq!(cfg.optimizer, OptimizerKind::Sgd { momentum: 0.9 });
        assert_eq!(cfg.target_accuracy, None);
        let base = ["--task", "adding", "--seq-len", "50", "--model"];
        let cfg = train_config(&[&base[..], &["gru"]].concat()).unwrap();
        assert_eq!((cfg.cell, cfg.init), (CellKind::Gru, Init::default()));
        let cfg = train_config(&[&base[..], &["irnn"]].concat()).unwrap();
        assert_eq!((cfg.cell, cfg.init), (CellKind::RnnRelu, Init::irnn(1.0)));
        let cfg =
            train_config(&[&base[..], &["rnn-relu", "--init", "orthogonal"]].concat()).unwrap();
        assert_eq!(cfg.cell, CellKind::RnnRelu);
        assert_eq!(cfg.init.recurrent, RecurrentInit::Orthogonal { gain: 1.0 });
    }

    #[test]
    fn bad_values_are_rejected_with_the_value_named() {
        let base = ["--task", "adding", "--model", "lstm", "--seq-len", "10"];
        for (flag, value, expect) in [
            ("--lr", "-1", "--lr -1 is invalid"),
            ("--lr", "nan", "--lr NaN is invalid"),
            ("--hidden", "0", "--hidden 0 is invalid"),
            ("--batch", "0", "--batch 0 is invalid"),
            ("--clip", "-2", "--clip -2 is invalid"),
        ] {
            let args: Vec<&str> = base.iter().copied().chain([flag, value]).collect();
            let err = format!("{:#}", train_config(&args).unwrap_err());
            assert!(err.contains(expect), "{flag} {value}: {err}");
        }
        let err = train_config(&["--task", "sorting", "--model", "lstm"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid value 'sorting'") && err.contains("adding, copy"),
            "{err}"
        );
        let err = train_config(&["--task", "adding", "--model", "gru2"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid value 'gru2'"), "{err}");
        let err = train_config(&["--task", "adding", "--model", "irnn", "--init", "uniform"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("use --model rnn-relu"), "{err}");
    }
}
