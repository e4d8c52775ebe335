//! What a long run tells its user while it works: progress bars on a terminal, and the memory
//! figures summaries report.

pub mod memory;
pub mod progress;
