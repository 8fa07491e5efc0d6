//! The commands behind the command line: each turns parsed arguments into library calls,
//! prints what a user needs to see, and writes result files (always atomically).
//!
//! Errors caused by the user's input are wrapped in [`UsageError`] (exit status 2); anything
//! that goes wrong later (a diverged run, a full disk) is a plain error (exit status 1).

use crate::batch::{Batch, Target};
use crate::checkpoint;
use crate::cli::{ExperimentArgs, GradcheckArgs, PlotArgs, ProbeArgs, TaskModelArgs, TrainArgs};
use crate::fsutil::StagedDir;
use crate::gradcheck::{self, LossKind, Sizes, TOLERANCE};
use crate::head::Readout;
use crate::model::Model;
use crate::params::CellKind;
use crate::tasks::{Task, make_task};
use crate::train::{self, Event, Outcome, TrainConfig};
use anyhow::{Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// An error in what the user asked for (bad value, missing or malformed input file).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct UsageError(pub anyhow::Error);

/// Marks an error as the user's input being wrong.
pub fn usage(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(UsageError(e))
}

/// Builds the task and the model (fresh, or from `--checkpoint`) and checks that they fit.
fn task_and_model(
    args: &TaskModelArgs,
    init_cfg: &TrainConfig,
    seq_len: Option<usize>,
) -> Result<(Box<dyn Task>, Model<f32>)> {
    let task_name = args.task.name();
    let from_file = match &args.checkpoint {
        Some(path) => {
            let readout = if task_name == "adding" {
                Readout::Last
            } else {
                Readout::Every
            };
            Some(checkpoint::load(path, readout)?)
        }
        None => None,
    };
    let seq_len = seq_len
        .or(args.seq_len)
        .or_else(|| from_file.as_ref().and_then(|(_, info)| info.seq_len))
        .ok_or_else(|| anyhow!("--seq-len T is required (for example --seq-len 100)"))?;
    let task = make_task(task_name, seq_len, args.copy_len)?;
    let model = match from_file {
        Some((mut model, info)) => {
            let path = args.checkpoint.as_ref().expect("loaded").display();
            let wanted = CellKind::from(args.model);
            // A file without rnnlab metadata (e.g. from PyTorch) cannot tell a tanh RNN from a
            // ReLU RNN by its shapes: --model says which.
            if info.cell.is_none() && model.cell().gates() == wanted.gates() {
                model.params.cell = wanted;
            }
            if model.cell() != wanted {
                bail!(
                    "checkpoint {path} holds an {} but --model is {}",
                    model.cell(),
                    wanted
                );
            }
            let p = &model.params;
            if let Some(h) = args.hidden.filter(|&h| h != p.hidden_size()) {
                bail!(
                    "checkpoint {path} has hidden size {} but --hidden is {h} (leave --hidden out to use the checkpoint's)",
                    p.hidden_size()
                );
            }
            if p.input_size() != task.input_size() || p.output_size() != task.output_size() {
                bail!(
                    "checkpoint {path} has input size {} and output size {}, but the {} task needs {} and {}",
                    p.input_size(),
                    p.output_size(),
                    task.name(),
                    task.input_size(),
                    task.output_size()
                );
            }
            if model.readout != task.readout() {
                bail!(
                    "checkpoint {path} reads the {} step(s), but the {} task reads the {}",
                    model.readout.name(),
                    task.name(),
                    task.readout().name()
                );
            }
            model
        }
        None => train::new_model(task.as_ref(), init_cfg),
    };
    Ok((task, model))
}

/// Checks early that `path`'s folder exists and is writable, so a long run does not fail at the end.
fn check_writable_file(flag: &str, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::tempfile_in(dir).map(|_| ()).map_err(|e| {
        anyhow!(
            "{flag} {}: cannot write into {} ({e})",
            path.display(),
            dir.display()
        )
    })
}

/// `rnnlab train`.
pub fn train(args: &TrainArgs) -> Result<()> {
    let mut cfg = args.config().map_err(usage)?;
    let (task, model) = task_and_model(&args.common, &cfg, None).map_err(usage)?;
    cfg.hidden = model.params.hidden_size(); // a checkpoint's, if one was given
    use crate::experiment::run::{available_cores, thread_count};
    let threads = thread_count("--threads", args.threads, || {
        train::default_threads(task.as_ref(), &cfg, available_cores())
    })
    .map_err(usage)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "plots/train/{}-{}-T{}",
            task.name(),
            cfg.cell,
            task.seq_len()
        ))
    });
    let staged = StagedDir::new(&out).map_err(usage)?;
    if let Some(save) = &args.save {
        check_writable_file("--save", save).map_err(usage)?;
    }

    println!(
        "rnnlab train: {} on {} T = {} | H {}, B {}, {} lr {}, {} | seed {}, data seed {} | {threads} thread{}",
        cfg.cell.label(),
        task.name(),
        task.seq_len(),
        cfg.hidden,
        cfg.batch,
        cfg.optimizer.name(),
        cfg.lr,
        cfg.clip,
        cfg.seed,
        cfg.data_seed,
        if threads == 1 { "" } else { "s" }
    );
    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]",
        )
        .expect("valid template"),
    );
    let mut last_eval = String::from("eval: —");
    let result = train::train(
        task.as_ref(),
        &cfg,
        model,
        threads,
        &mut |event| match event {
            Event::Step { step, loss } => {
                bar.set_position(step as u64);
                if step % 10 == 0 {
                    bar.set_message(format!("loss {loss:.4}  {last_eval}"));
                }
            }
            Event::Eval(row) => {
                last_eval = format!(
                    "eval loss {:.4} acc {:.3}",
                    row.eval_loss, row.eval_accuracy
                );
            }
        },
    )?;
    bar.finish_and_clear();

    crate::report::write_csv(&staged.path().join("metrics.csv"), &result.metrics)?;
    let run = serde_json::json!({
        "command": "train",
        "task": task.name(),
        "task_definition": task.describe(),
        "seq_len": task.seq_len(),
        "config": cfg,
        "outcome": result.outcome,
        "seconds": result.seconds,
        "version": env!("CARGO_PKG_VERSION"),
    });
    std::fs::write(
        staged.path().join("run.json"),
        serde_json::to_string_pretty(&run)?,
    )?;
    let out = staged.commit()?;

    let last = result.metrics.last();
    let summary = last.map_or("no evaluation".to_string(), |r| {
        format!(
            "held-out accuracy {:.3}, loss {:.4}",
            r.eval_accuracy, r.eval_loss
        )
    });
    match &result.outcome {
        Outcome::Solved { step } => {
            println!("solved at step {step}: {summary} ({:.1} s)", result.seconds)
        }
        Outcome::Finished => println!(
            "not solved in {} steps: {summary} (baseline loss {:.4}, chance accuracy {:.3}) ({:.1} s)",
            cfg.steps,
            task.baseline_loss(),
            task.chance_accuracy(),
            result.seconds
        ),
        Outcome::Diverged { .. } => {}
    }
    println!("wrote {}/metrics.csv", out.display());
    if let Outcome::Diverged { step, what } = &result.outcome {
        bail!(
            "diverged at step {step} ({what}); the metrics up to then are in {}/metrics.csv",
            out.display()
        );
    }
    if let Some(save) = &args.save {
        checkpoint::save(save, &result.model, task.name(), task.seq_len())?;
        println!("wrote checkpoint {}", save.display());
    }
    Ok(())
}

/// `rnnlab probe`.
pub fn probe(args: &ProbeArgs) -> Result<()> {
    let init_cfg = TrainConfig {
        cell: args.common.model.into(),
        hidden: args.common.hidden(),
        init: args.common.init().map_err(usage)?,
        seed: args.common.seed,
        ..TrainConfig::default()
    };
    if args.common.hidden() == 0 || args.batch == 0 {
        return Err(usage(anyhow!("--hidden and --batch must be at least 1")));
    }
    let file_batch = match &args.batch_file {
        Some(path) => Some(Batch::load(path).map_err(usage)?),
        None => None,
    };
    // A batch file fixes T; for the copy task the file's length is T + 2K.
    let seq_len_from_file = match &file_batch {
        Some(b) if args.common.task.name() == "copy" => {
            let (steps, k) = (b.dim().0, args.common.copy_len);
            if steps <= 2 * k {
                let shown = args.batch_file.as_ref().expect("given").display();
                return Err(usage(anyhow!(
                    "batch file {shown} has {steps} steps, too few for the copy task with K = {k} (it needs T + 2K ≥ {} steps)",
                    2 * k + 1
                )));
            }
            Some(steps - 2 * k)
        }
        Some(b) => Some(b.dim().0),
        None => None,
    };
    let (task, model) =
        task_and_model(&args.common, &init_cfg, seq_len_from_file).map_err(usage)?;
    let batch = match file_batch {
        Some(b) => {
            check_batch_fits(&b, task.as_ref(), &model).map_err(|e| {
                usage(e.context(format!(
                    "batch file {}",
                    args.batch_file.as_ref().expect("given").display()
                )))
            })?;
            b
        }
        None => train::probe_batch(task.as_ref(), args.common.data_seed, args.batch),
    };
    let staged = StagedDir::new(&args.out).map_err(usage)?;
    if let Some(dump) = &args.dump_batch {
        check_writable_file("--dump-batch", dump).map_err(usage)?;
    }

    let report = crate::probe::run(&model, &batch);
    crate::probe::write(staged.path(), &report, &model, task.as_ref())?;
    let out = staged.commit()?;
    if let Some(dump) = &args.dump_batch {
        batch.save(dump)?;
        println!("wrote batch {}", dump.display());
    }
    let dh = &report.probes.dh_norm;
    let (first, last) = (dh[0], dh[dh.len() - 1]);
    println!(
        "{} on {}: loss {:.6}; ‖∂L/∂h_t‖ = {:.3e} at the loss (distance 0), {:.3e} at distance {} (ratio {:.2e})",
        model.cell().label(),
        task.name(),
        report.loss,
        last,
        first,
        dh.len() - 1,
        first / last
    );
    println!(
        "wrote {}/grad_norms.csv, grads.safetensors, grad_norms.png",
        out.display()
    );
    Ok(())
}

/// A batch file must match the model's input size and the task's kind of target.
fn check_batch_fits(batch: &Batch, task: &dyn Task, model: &Model<f32>) -> Result<()> {
    let (t, b, i) = batch.dim();
    if i != model.params.input_size() {
        bail!(
            "x has I = {i} inputs per step, but the model takes {}",
            model.params.input_size()
        );
    }
    match (&batch.target, task.readout()) {
        (Target::Values(v), Readout::Last) if v.dim() == (b, model.params.output_size()) => Ok(()),
        (Target::Classes(c), Readout::Every) if c.dim() == (t, b) => {
            let o = model.params.output_size() as i64;
            match c.iter().find(|&&k| k >= o || k < -1) {
                Some(k) => bail!(
                    "y holds class id {k}, but the model has {o} classes (ids 0…{}, −1 = none)",
                    o - 1
                ),
                None => Ok(()),
            }
        }
        _ => bail!(
            "y does not fit the {} task: it needs {}",
            task.name(),
            if task.readout() == Readout::Last {
                format!("f32 targets of shape (B, {})", model.params.output_size())
            } else {
                "i64 class ids of shape (B, T)".to_string()
            }
        ),
    }
}

/// `rnnlab gradcheck`: exits non-zero when any tensor is off.
pub fn gradcheck(args: &GradcheckArgs) -> Result<()> {
    if args.seq_len == 0 {
        return Err(usage(anyhow!(
            "--seq-len 0 is invalid: it must be at least 1"
        )));
    }
    let cells: Vec<CellKind> = match args.model {
        Some(m) => vec![m.into()],
        None => CellKind::ALL.to_vec(),
    };
    let sizes = Sizes {
        steps: args.seq_len,
        ..Sizes::default()
    };
    println!(
        "central differences in f64, δ = 1e-5; I = {}, H = {}, O = {}, B = {}, T = {}; pass: max rel error ≤ {TOLERANCE:e}",
        sizes.input, sizes.hidden, sizes.output, sizes.batch, sizes.steps
    );
    println!(
        "{:<8} {:<11} {:<14} {:<12} {:>14} {:>12}  result",
        "cell", "loss", "tensor", "shape", "max rel error", "max |grad|"
    );
    let mut failed = 0;
    for &cell in &cells {
        for loss in LossKind::ALL {
            for t in gradcheck::run(cell, loss, sizes, args.seed) {
                let ok = t.passed();
                failed += usize::from(!ok);
                println!(
                    "{:<8} {:<11} {:<14} {:<12} {:>14.3e} {:>12.3e}  {}",
                    cell.name(),
                    loss.name(),
                    t.name,
                    format!("{:?}", t.shape),
                    t.max_rel_error,
                    t.max_abs_grad,
                    if ok { "ok" } else { "FAILED" }
                );
            }
        }
    }
    // The text classifier (src/seq): each cell with masked steps (T = 7, holes at the start,
    // middle and end), then the whole Keras-style stack (embedding with mask, bidirectional
    // and plain recurrent layers, dropout, dense softmax).
    for &cell in &cells {
        let (masked, dx_masked) = crate::seq::gradcheck::masked_cell(cell, args.seed);
        let spec = crate::seq::gradcheck::small_spec(cell);
        let stack = crate::seq::gradcheck::classifier(&spec, args.seed);
        for (what, t) in masked
            .iter()
            .map(|t| ("masked", t))
            .chain(stack.iter().map(|t| ("classifier", t)))
        {
            let ok = t.passed();
            failed += usize::from(!ok);
            println!(
                "{:<6} {:<11} {:<14} {:<12} {:>14.3e} {:>12.3e}  {}",
                cell.name(),
                what,
                t.name,
                format!("{:?}", t.shape),
                t.max_rel_error,
                t.max_abs_grad,
                if ok { "ok" } else { "FAILED" }
            );
        }
        if dx_masked != 0.0 {
            failed += 1;
            println!(
                "{:<6} masked: ∂L/∂x at masked steps is {dx_masked:e}, expected 0  FAILED",
                cell.name()
            );
        }
    }
    if failed > 0 {
        bail!("gradient check failed for {failed} tensor(s)");
    }
    println!("all gradients match finite differences");
    Ok(())
}

/// `rnnlab experiment`.
pub fn experiment(args: &ExperimentArgs) -> Result<()> {
    if args.list {
        for (name, description) in crate::experiment::config::list() {
            println!("{name:<16} {description}");
        }
        return Ok(());
    }
    let name = args
        .name
        .as_deref()
        .expect("clap requires NAME unless --list");
    let opts = args.options();
    opts.jobs().map_err(usage)?; // a bad --jobs fails before any work
    let (source, text) = crate::experiment::config::find(name).map_err(usage)?;
    if crate::seq::config::is_classifier(&text) {
        let origin = source.describe();
        let file = crate::seq::experiment::load(&origin, &text, &opts).map_err(usage)?;
        crate::seq::experiment::execute(name, &origin, file, &opts)?;
        return Ok(());
    }
    let (cfg, source) = crate::experiment::load(name, &opts).map_err(usage)?;
    crate::experiment::execute(name, &cfg, &source, &opts)?;
    Ok(())
}

/// `rnnlab plot DIR`.
pub fn plot(args: &PlotArgs) -> Result<()> {
    if !args.dir.is_dir() {
        return Err(usage(anyhow!("{} is not a folder", args.dir.display())));
    }
    let charts = if crate::seq::experiment::is_result(&args.dir) {
        crate::seq::experiment::render(&args.dir).map_err(usage)?
    } else {
        crate::experiment::render(&args.dir).map_err(usage)?
    };
    for c in &charts {
        println!("drew {}", c.display());
    }
    println!("wrote {}", args.dir.join("summary.md").display());
    Ok(())
}
