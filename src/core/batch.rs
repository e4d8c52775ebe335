//! Batches of typed, hashed rows as readers produce them, and rows set aside as bad.

use deltalake::arrow::array::{BinaryArray, RecordBatch};

use crate::error::{Error, Result};

/// Rows per batch produced by the readers.
pub const BATCH_ROWS: usize = 64 * 1024;

/// A batch of incoming rows: the typed payload (configured columns, config order), the row
/// digests, and where each row came from.
#[derive(Debug, Clone)]
pub struct HashedBatch {
    /// The configured columns, typed, in config order.
    pub payload: RecordBatch,
    /// 16-byte key digest of each row (docs/hashing.md).
    pub keyhash: BinaryArray,
    /// 16-byte digest of each row's hashed non-key columns.
    pub nonkeyhash: BinaryArray,
    /// Index into the run's list of input files.
    pub file: usize,
    /// 1-based line (CSV) or row (Parquet) number of each row in its file.
    pub lines: Vec<u64>,
}

/// A row set aside under `on_error: reject`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reject {
    /// The file, as shown in messages.
    pub file: String,
    /// 1-based line (CSV) or row (Parquet).
    pub line: u64,
    /// The column at fault, when one value is.
    pub column: Option<String>,
    /// What is wrong.
    pub reason: String,
    /// The raw line as read (lossy UTF-8); for a CSV value that does not convert, the row's
    /// values joined by the delimiter, NULLs empty; for Parquet, the row's values.
    pub raw: String,
}

impl Reject {
    pub(crate) fn from_error(err: Error, raw: String) -> Result<Self> {
        match err {
            Error::BadRow {
                file,
                line,
                column,
                reason,
            } => Ok(Reject {
                file,
                line,
                column,
                reason,
                raw,
            }),
            other => Err(other),
        }
    }
}
