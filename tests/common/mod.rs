//! What every integration test shares: running the real `rnnlab` binary as a user would.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `rnnlab ARGS` in `cwd` and returns its exit status and output.
pub fn rnnlab(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rnnlab"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}
