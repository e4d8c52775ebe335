//! Change batches: rows of source changes (insert, update, delete) with their source order and
//! commit date, as every change source yields them (`source::ChangeSource`).
//!
//! Source order (DESIGN.md, issue 4): the file order (hexadecimal counter of DMS `LOAD` files,
//! then the timestamp names of DMS change files, or the name order of event files), then the row
//! order inside a file; for Debezium events the LSN, or the source `ts_ms` when there is no LSN,
//! comes first, and file and row break ties (several events can share one LSN or millisecond).

use serde::Serialize;

use crate::core::batch::HashedBatch;

/// A source operation, mapped onto Tributary's by each reader (DMS `I`/`U`/`D`; Debezium `c`
/// and `r`, create and snapshot read, are inserts, `u` an update, `d` a delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ChangeOp {
    /// A row was inserted (or read by a snapshot).
    Insert,
    /// A row was updated: the change holds its new values.
    Update,
    /// A row was deleted: the change holds its key (and, where the source has them, its last
    /// values).
    Delete,
}

/// Where a change sits in its source. Compared field by field: `position` (LSN or `ts_ms`; 0
/// for sources ordered by file and row alone), then `file` (index in the run's ordered file
/// list), then `row` (1-based line or row in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct SourceOrder {
    /// LSN or source `ts_ms`; 0 for sources ordered by file and row alone.
    pub position: u64,
    /// Index of the file in the run's ordered file list.
    pub file: u32,
    /// 1-based line or row in the file.
    pub row: u64,
}

/// Changes read from one source file: typed, hashed rows with one operation, source order and
/// commit date per row.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    /// The changed rows, typed and hashed.
    pub rows: HashedBatch,
    /// Operation of each row.
    pub ops: Vec<ChangeOp>,
    /// Source order of each row.
    pub order: Vec<SourceOrder>,
    /// Commit date of each change (days since 1970-01-01), when the source carries one
    /// (DMS `TimestampColumnName`, Debezium `source.ts_ms`).
    pub commit_days: Vec<Option<i32>>,
    /// Source position of each change that stays comparable across runs: kept per key as
    /// `source_position` so that a change older than the key's stored one is skipped as stale
    /// (see `changelog::merge`). Debezium: the LSN, binlog position or `ts_ms` (as
    /// [`SourceOrder::position`]); DMS: the commit timestamp column in microseconds since the
    /// epoch, else the change file name's timestamp. None where the source gives none (a DMS
    /// full load without a timestamp column, files named otherwise).
    pub positions: Vec<Option<i64>>,
    /// Columns whose stored value a change keeps, by row (configured column indices): a
    /// PostgreSQL update that left a TOASTed value unchanged sends no value for it (pgoutput
    /// `'u'`), and the stored one stays. Empty for every other source.
    pub keep_stored: std::collections::HashMap<usize, Vec<usize>>,
}

impl ChangeBatch {
    /// Changes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
