//! Named experiments: `rnnlab experiment NAME` runs the definition in `experiments/NAME.toml`
//! and leaves a folder of charts, the CSVs they were drawn from, `summary.md` and `run.json`.
//!
//! The flow is: load and validate the definition ([`config`]; its `kind` picks the schema) →
//! plan the runs and train them in parallel ([`run`]) → write the CSVs → draw every chart and
//! the summary *from those CSVs* — the same code `rnnlab plot DIR` calls, so a redraw is
//! exactly the original. Everything is written into a temporary folder that replaces the
//! output folder only when complete.
//!
//! Kinds: `vanishing` ([`vanishing`] plans and writes the data, [`data`] has its rows,
//! [`charts`] and [`summary`] draw and explain them) and `exploding` ([`exploding`], which
//! keeps its rows, charts and summary in its own folder). This file is the part they share.

pub mod charts;
pub mod config;
pub mod data;
pub mod exploding;
pub mod run;
pub mod summary;
pub mod vanishing;

use crate::fsutil::StagedDir;
use anyhow::{Context, Result};
use config::ExperimentConfig;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to run an experiment (from the command line).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub quick: bool,
    /// Output folder (default `plots/NAME`).
    pub out: Option<PathBuf>,
    /// Worker threads (default: all cores).
    pub jobs: Option<usize>,
    /// Number of seeds for every sweep.
    pub seeds: Option<usize>,
    /// `key=value` overrides of the definition.
    pub sets: Vec<(String, String)>,
}

impl Options {
    /// `--jobs`, or every core when not given; 0 is an error.
    pub fn jobs(&self) -> Result<usize> {
        run::thread_count("--jobs", self.jobs, run::available_cores)
    }

    /// `--out`, or `plots/NAME`.
    pub fn out_dir(&self, name: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| Path::new("plots").join(name))
    }
}

/// Loads experiment `name` with the options applied, printing what is overridden.
pub fn load(name: &str, opts: &Options) -> Result<(ExperimentConfig, config::Source)> {
    let (source, text) = config::find(name)?;
    let mut cfg = config::load(
        &text,
        &source.describe(),
        opts.quick,
        &opts.sets,
        &mut |line| println!("{line}"),
    )?;
    if let Some(seeds) = opts.seeds {
        anyhow::ensure!(seeds >= 1, "--seeds 0 is invalid: it must be at least 1");
        println!("Overriding: seeds = {seeds} (every sweep)");
        cfg.set_seeds(seeds);
    }
    Ok((cfg, source))
}

/// Runs a loaded experiment, printing its effective configuration once the output folder is
/// known to be writable; returns the output folder.
pub fn execute(
    name: &str,
    cfg: &ExperimentConfig,
    source: &config::Source,
    opts: &Options,
) -> Result<PathBuf> {
    let jobs = opts.jobs()?;
    let out = opts.out_dir(name);
    let staged = StagedDir::new(&out).map_err(crate::commands::usage)?;
    let effective = toml::to_string(cfg)?;
    println!(
        "effective configuration (saved as config.toml):\n{}",
        effective.trim_end()
    );
    std::fs::write(staged.path().join("config.toml"), &effective)?;

    println!(
        "rnnlab experiment {name}{} → {}",
        if opts.quick { " --quick" } else { "" },
        out.display()
    );
    let start = Instant::now();
    let runs = match cfg {
        ExperimentConfig::Vanishing(c) => vanishing::run(c, staged.path(), jobs)?,
        ExperimentConfig::Exploding(c) => exploding::run(c, staged.path(), jobs)?,
    };
    let seconds = start.elapsed().as_secs_f64();

    let run_json = serde_json::json!({
        "experiment": name,
        "definition": source.describe(),
        "quick": opts.quick,
        "jobs": jobs,
        "rnnlab_version": env!("CARGO_PKG_VERSION"),
        "config": cfg,
        "total_seconds": seconds,
        "run_seconds_sum": runs.iter().filter_map(|r| r["seconds"].as_f64()).sum::<f64>(),
        "runs": runs,
    });
    std::fs::write(
        staged.path().join("run.json"),
        serde_json::to_string_pretty(&run_json)?,
    )?;
    render(staged.path())?;
    let out = staged.commit()?;
    println!(
        "done in {seconds:.1} s: charts, CSVs and summary.md in {}",
        out.display()
    );
    Ok(out)
}

/// Draws every chart and writes summary.md from the CSVs (and run.json) in `dir`.
pub fn render(dir: &Path) -> Result<Vec<PathBuf>> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not an experiment folder: it has no config.toml",
            dir.display()
        )
    })?;
    match config::from_saved(&text, &path.display().to_string())? {
        ExperimentConfig::Vanishing(cfg) => {
            let charts = charts::draw_all(dir, &cfg)?;
            summary::write(dir, &cfg)?;
            Ok(charts)
        }
        ExperimentConfig::Exploding(cfg) => {
            let charts = exploding::charts::draw_all(dir, &cfg)?;
            exploding::summary::write(dir, &cfg)?;
            Ok(charts)
        }
    }
}
