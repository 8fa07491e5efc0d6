//! What the integration tests share: running the real `rnnlab` binary as a user would, and
//! checking the charts it writes. Each test binary uses a part of it.
#![allow(dead_code)]

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

/// Asserts that `dir/NAME.png` is a real chart (a PNG of more than 10 kB) for every name.
pub fn assert_charts(dir: &Path, names: &[&str]) {
    for chart in names {
        let png = std::fs::read(dir.join(format!("{chart}.png")))
            .unwrap_or_else(|_| panic!("{chart}.png missing"));
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{chart}.png is not a real chart"
        );
    }
}
