//! `tributary check`: read, cast and hash an extract without touching the lake.
//!
//! It runs a run's first stage alone (the same readers and workers), so it reports bad rows
//! before a run would, and its time is the read-and-hash floor of a run over the same files.
//! Duplicate keys are not looked for: that takes the partitioned diff.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::config::TableConfig;
use crate::core::batch::Reject;
use crate::error::Result;
use crate::report::memory::peak_rss_bytes;
use crate::report::progress::Progress;
use crate::source::extract::{self, list_input_files, SkippedFile};

/// The outcome of `tributary check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    /// Extract files read.
    pub input_files: usize,
    /// Their size, bytes.
    pub input_bytes: u64,
    /// Entries of the input folder not read, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<SkippedFile>,
    /// Rows read, rejected ones included.
    pub rows_read: u64,
    /// Bad rows (only under `on_error: reject`; under `fail` the first one is the error).
    pub rejects: Vec<Reject>,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
    /// Rows read per second of wall time.
    pub rows_per_sec: f64,
    /// Input bytes per second of wall time.
    pub bytes_per_sec: f64,
    /// Peak resident set size of the process (Linux `VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Reads, casts and hashes every file of `input`, keeping nothing.
///
/// # Errors
/// As [`source::read`]: the first bad row under `on_error: fail`, unreadable files.
pub fn check(config: &TableConfig, input: &Path) -> Result<CheckSummary> {
    let started = Instant::now();
    let listing = list_input_files(input, config.source.format)?;
    let files = listing.files;
    let input_bytes: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::bytes("checking", input_bytes);
    let stats = extract::read(config, &files, &progress, &mut |batch| {
        drop(batch);
        Ok(())
    })?;
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Ok(CheckSummary {
        input_files: files.len(),
        skipped_files: listing.skipped,
        input_bytes,
        rows_read: stats.rows_read,
        rejects: stats.rejects,
        elapsed_secs: elapsed,
        rows_per_sec: stats.rows_read as f64 / elapsed,
        bytes_per_sec: input_bytes as f64 / elapsed,
        peak_rss_bytes: peak_rss_bytes(),
    })
}
