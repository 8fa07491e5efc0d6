//! Small helpers for result files: CSV tables and number formatting shared by commands,
//! experiments and summaries.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// Writes `rows` as a CSV file with a header from the field names (atomically).
pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)
            .with_context(|| format!("cannot encode a row of {}", path.display()))?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// Writes a CSV from a header and rows of already formatted cells (atomically).
pub fn write_table(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header)?;
    for r in rows {
        w.write_record(r)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// Formats a float so that it round-trips exactly (shortest representation).
pub fn num(v: f64) -> String {
    format!("{v:e}")
}
