//! Change-log CDC: runs of changes (from any [`ChangeSource`](crate::source::ChangeSource))
//! applied to a table's current and history tables.
//!
//! - [`dedupe`]: the last change per key by source order.
//! - [`merge`]: that change resolved against the current table and merged into it (only the
//!   data files that hold a changed key are rewritten), committed through the run transaction.
//! - [`spill`]: a run's changes within its memory budget (partitioned by key, spilled).
//! - [`distinct`]: whether a full load streamed to the writers had distinct keys.
//! - [`sync`]: the controller: one run per source, tables in parallel (`tributary sync`).
//! - [`capture`]: the controller of a PostgreSQL replication slot (`tributary capture`).

pub mod capture;
pub mod dedupe;
pub mod distinct;
pub mod merge;
pub mod spill;
pub mod sync;
