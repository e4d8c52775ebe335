//! Snapshot CDC (`tributary run`): a business day's full or delta extract diffed against the
//! current table (the seed article's stages), written as the new current table and appended to
//! history in one run transaction.
//!
//! - [`run`]: the run: idempotence and date rules, the memory plan, the stages, the commit.
//! - `stages`: reading and partitioning both sides, then diffing partition by partition (or
//!   streaming each batch past an in-memory index).
//! - [`classify`]: the I/U/D/X/N rules of one partition; [`join`]: its output rows;
//!   [`probe`]: the streamed form; [`plan`]: the memory plan; partitions on disk are
//!   [`core::spill`](crate::core::spill).
//! - [`check`]: the read-and-hash stage alone (`tributary check`); [`summary`]: what a run
//!   reports.

pub mod check;
pub mod classify;
pub mod join;
pub mod plan;
pub mod probe;
pub mod run;
mod stages;
pub mod summary;

pub use run::{run, RunOptions};
