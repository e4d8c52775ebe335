//! The operation codes of the current and history tables (I, U, D, X, N) and counts of rows
//! per operation.

use serde::Serialize;

/// Operation codes of the current and history tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// I: a key new to the table.
    Insert,
    /// U: a key whose non-key values changed.
    Update,
    /// D: a key gone from a full extract, or deleted by a change log.
    Delete,
    /// X: a key a delta extract did not supply (kept in current).
    NotSupplied,
    /// N: a key supplied unchanged (kept in current with its old `eff_start_date`).
    NoChange,
}

impl Op {
    /// The one-letter code stored in the `operation` column.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "I",
            Op::Update => "U",
            Op::Delete => "D",
            Op::NotSupplied => "X",
            Op::NoChange => "N",
        }
    }

    /// Whether rows with this operation are written to the history table.
    pub fn in_history(self) -> bool {
        matches!(self, Op::Insert | Op::Update | Op::Delete)
    }
}

/// Rows per operation (as JSON: `{"I": 1, "U": 0, "D": 0, "X": 0, "N": 5}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OpCounts {
    #[serde(rename = "I")]
    /// I rows.
    pub inserted: u64,
    #[serde(rename = "U")]
    /// U rows.
    pub updated: u64,
    #[serde(rename = "D")]
    /// D rows.
    pub deleted: u64,
    #[serde(rename = "X", default)]
    /// X rows.
    pub not_supplied: u64,
    #[serde(rename = "N", default)]
    /// N rows.
    pub unchanged: u64,
}

impl OpCounts {
    /// Adds another count (e.g. of another partition) to this one.
    pub fn merge(&mut self, other: &OpCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.not_supplied += other.not_supplied;
        self.unchanged += other.unchanged;
    }

    pub(crate) fn add(&mut self, op: Op, n: u64) {
        match op {
            Op::Insert => self.inserted += n,
            Op::Update => self.updated += n,
            Op::Delete => self.deleted += n,
            Op::NotSupplied => self.not_supplied += n,
            Op::NoChange => self.unchanged += n,
        }
    }
}
