//! The `rnnlab` binary: parse, dispatch, map errors to exit codes. All work is in the library.

use clap::Parser;
use rnnlab::cli::{Cli, Command};
use rnnlab::commands::{self, UsageError};
use std::process::ExitCode;

/// Counts live heap bytes so `rnnlab bench` can report peak memory (two relaxed atomic
/// additions per allocation; the training loop does not allocate per timestep).
#[global_allocator]
static ALLOC: rnnlab::bench::CountingAlloc = rnnlab::bench::CountingAlloc;

/// glibc serves every allocation of 128 KiB or more with a fresh `mmap` and unmaps it again
/// on free: a training step's gradient arrays (256 KiB – 1 MiB) then cost page faults, and
/// unmapping them a TLB shootdown on the other core, every step — ~1.7% of a two-thread LSTM
/// H = 128 step, all of it on the calling thread while the other waits (perf, BENCHMARKS.md).
/// Serving them from the heap, and keeping freed memory for the next step, removes that.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's largest allowed value
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::{
                DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand, DisplayVersion,
            };
            if matches!(
                e.kind(),
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(if e.kind() == DisplayHelpOnMissingArgumentOrSubcommand {
                    2
                } else {
                    0
                });
            }
            // One line: clap's first line ("error: invalid value 'x' for '--task <TASK>'"),
            // with the allowed values when clap lists them on a line of their own.
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("error: bad arguments");
            let allowed = lines
                .find(|l| l.starts_with("[possible values"))
                .unwrap_or("");
            eprintln!("rnnlab: {first} {allowed}");
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Train(args) => commands::train(args),
        Command::Probe(args) => commands::probe(args),
        Command::Gradcheck(args) => commands::gradcheck(args),
        Command::Experiment(args) => commands::experiment(args),
        Command::Plot(args) => commands::plot(args),
        Command::Bench(args) => rnnlab::bench::run(args),
        Command::Fit(args) => rnnlab::seq::command::fit(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rnnlab: error: {e:#}");
            ExitCode::from(if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            })
        }
    }
}
