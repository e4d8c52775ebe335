//! Sources: turn incoming extract files into typed, hashed Arrow batches.
//!
//! Every row is cast to its configured type and hashed once, on arrival (the seed article's
//! stage 1). Bad rows either fail the read with file, line and column named, or, with
//! `on_error: reject`, are set aside as [`Reject`]s; none is dropped silently.

mod cast;
pub mod changes;
mod csv;
mod debezium;
mod dms;
mod files;
mod parquet;

use deltalake::arrow::array::{ArrayRef, BinaryArray, RecordBatch};

pub use files::{fingerprint, list_input_files, InputFile, PendingFingerprint};

use crate::config::{InputFormat, OnError, TableConfig};
use crate::error::{Error, Result};
use crate::hash::hash_columns;
use crate::progress::Progress;

/// Rows per batch produced by the readers.
pub const BATCH_ROWS: usize = 64 * 1024;

/// A batch of incoming rows: the typed payload (configured columns, config order), the row
/// digests, and where each row came from.
#[derive(Debug, Clone)]
pub struct HashedBatch {
    pub payload: RecordBatch,
    pub keyhash: BinaryArray,
    pub nonkeyhash: BinaryArray,
    /// Index into the run's list of input files.
    pub file: usize,
    /// 1-based line (CSV) or row (Parquet) number of each row in its file.
    pub lines: Vec<u64>,
}

/// A row set aside under `on_error: reject`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reject {
    pub file: String,
    pub line: u64,
    pub column: Option<String>,
    pub reason: String,
    /// The raw line as read (lossy UTF-8), or the row's values for Parquet.
    pub raw: String,
}

impl Reject {
    fn from_error(err: Error, raw: String) -> Result<Self> {
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

/// What reading one run's input produced besides its batches.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Rows read, rejected ones included.
    pub rows_read: u64,
    /// Bad rows set aside under `on_error: reject`, in file and line order.
    pub rejects: Vec<Reject>,
}

/// Collects bad rows: the first one fails the read under `on_error: fail`.
pub(crate) struct RowErrors {
    policy: OnError,
    pub(crate) rejects: Vec<Reject>,
}

impl RowErrors {
    pub(crate) fn new(policy: OnError) -> Self {
        RowErrors {
            policy,
            rejects: Vec::new(),
        }
    }

    /// Records a bad row. `raw` is only called when the row is kept as a reject.
    pub(crate) fn push(&mut self, err: Error, raw: impl FnOnce() -> String) -> Result<()> {
        match self.policy {
            OnError::Fail => Err(err),
            OnError::Reject => {
                self.rejects.push(Reject::from_error(err, raw())?);
                Ok(())
            }
        }
    }
}

/// Hashes a typed payload batch into a [`HashedBatch`].
pub(crate) fn hash_batch(
    config: &TableConfig,
    payload: RecordBatch,
    file: usize,
    lines: Vec<u64>,
) -> Result<HashedBatch> {
    let cols: &[ArrayRef] = payload.columns();
    let pick = |idx: Vec<usize>| idx.into_iter().map(|i| &cols[i]).collect::<Vec<_>>();
    let rows = payload.num_rows();
    let keyhash = hash_columns(&pick(config.key_indices()), rows, config.hash)?;
    let nonkeyhash = hash_columns(&pick(config.nonkey_indices()), rows, config.hash)?;
    Ok(HashedBatch {
        payload,
        keyhash,
        nonkeyhash,
        file,
        lines,
    })
}

/// Reads every input file into typed, hashed batches, handing each to `sink` as it is ready
/// (batches of one file may arrive out of file order: each row carries its line).
///
/// # Errors
/// [`Error::BadRow`] for the first bad row under `on_error: fail`; [`Error::Input`] for files
/// that cannot be opened or have the wrong header/columns; I/O, CSV and Parquet errors; any
/// error of `sink`.
pub fn read(
    config: &TableConfig,
    files: &[InputFile],
    progress: &Progress,
    sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut errors = RowErrors::new(config.on_error);
    for (index, file) in files.iter().enumerate() {
        stats.rows_read += match file.format {
            InputFormat::Csv => csv::read(config, file, index, &mut errors, progress, sink)?,
            InputFormat::Parquet => {
                parquet::read(config, file, index, &mut errors, progress, sink)?
            }
        };
    }
    stats.rejects = errors.rejects;
    stats
        .rejects
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(stats)
}

/// What a reader's worker thread returns: its rejects, and the line and error that stopped it.
pub(crate) type WorkerResult = (RowErrors, Option<(u64, Error)>);

/// Hands every batch received to `sink` on the calling thread; after a sink error, sets `stop`
/// (so the workers take no more work) and only drains the channel until the workers are done.
pub(crate) fn drain_into(
    batches: std::sync::mpsc::Receiver<HashedBatch>,
    sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let mut result = Ok(());
    for batch in batches {
        if result.is_ok() {
            result = sink(batch);
            if result.is_err() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    result
}

/// Joins a reader's worker threads: their rejects go to `errors`, and the error of the earliest
/// line among those that stopped a worker is returned (the file's first bad row).
pub(crate) fn join_workers(
    handles: Vec<std::thread::ScopedJoinHandle<'_, WorkerResult>>,
    errors: &mut RowErrors,
    reader: &str,
) -> Result<()> {
    let mut first_error: Option<(u64, Error)> = None;
    for handle in handles {
        let (local, failed) = handle
            .join()
            .map_err(|_| Error::Internal(format!("{reader} reader thread panicked")))?;
        errors.rejects.extend(local.rejects);
        if let Some((line, e)) = failed {
            if first_error.as_ref().is_none_or(|(l, _)| line < *l) {
                first_error = Some((line, e));
            }
        }
    }
    first_error.map_or(Ok(()), |(_, e)| Err(e))
}

/// Drops the rows whose `keep` flag is false from a batch and its line numbers.
pub(crate) fn drop_rows(
    batch: &RecordBatch,
    lines: Vec<u64>,
    keep: Vec<bool>,
) -> Result<(RecordBatch, Vec<u64>)> {
    let mask = deltalake::arrow::array::BooleanArray::from(keep.clone());
    let batch = deltalake::arrow::compute::filter_record_batch(batch, &mask)?;
    let lines = lines
        .into_iter()
        .zip(keep)
        .filter_map(|(l, k)| k.then_some(l))
        .collect();
    Ok((batch, lines))
}
