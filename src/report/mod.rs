//! What a long run tells its user while it works: progress bars on a terminal, and the memory
//! figures summaries report.

pub mod memory;
pub mod progress;

/// `bytes` in MiB with one decimal, for messages ("12.5 MiB").
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
