//! Sources: turn incoming extract files into typed, hashed Arrow batches.
//!
//! Every row is cast to its configured type and hashed once, on arrival (the seed article's
//! stage 1). Bad rows either fail the read with file, line and column named, or, with
//! `on_error: reject`, are set aside as [`Reject`]s; none is dropped silently.

mod cast;
mod csv;
mod files;
mod parquet;

use deltalake::arrow::array::{ArrayRef, BinaryArray, RecordBatch};

pub use files::{fingerprint, list_input_files, InputFile};

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
    /// Index into [`Incoming::files`].
    pub file: usize,
    /// 1-based line (CSV) or row (Parquet) number of each row in its file.
    pub lines: Vec<u64>,
}

/// A row set aside under `on_error: reject`.
#[derive(Debug, Clone, PartialEq)]
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

/// Everything read from one run's input.
#[derive(Debug, Default)]
pub struct Incoming {
    pub files: Vec<InputFile>,
    pub batches: Vec<HashedBatch>,
    pub rejects: Vec<Reject>,
    /// Rows read, rejected ones included.
    pub rows_read: u64,
}

impl Incoming {
    /// Rows accepted (read minus rejected).
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(|b| b.payload.num_rows()).sum()
    }
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

/// Reads every input file into typed, hashed batches.
///
/// # Errors
/// [`Error::BadRow`] for the first bad row under `on_error: fail`; [`Error::Input`] for files
/// that cannot be opened or have the wrong header/columns; I/O, CSV and Parquet errors.
pub fn read_all(
    config: &TableConfig,
    files: Vec<InputFile>,
    progress: &Progress,
) -> Result<Incoming> {
    let mut incoming = Incoming::default();
    let mut errors = RowErrors::new(config.on_error);
    for (index, file) in files.iter().enumerate() {
        let (batches, rows) = match file.format {
            InputFormat::Csv => csv::read(config, file, index, &mut errors, progress)?,
            InputFormat::Parquet => parquet::read(config, file, index, &mut errors, progress)?,
        };
        incoming.batches.extend(batches);
        incoming.rows_read += rows;
    }
    incoming.rejects = errors.rejects;
    incoming.files = files;
    Ok(incoming)
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

impl HashedBatch {
    /// Keeps the rows whose flag is true.
    ///
    /// # Errors
    /// Arrow errors (none expected: `keep` has one flag per row).
    pub fn retain(&self, keep: &[bool]) -> Result<HashedBatch> {
        let mask = deltalake::arrow::array::BooleanArray::from(keep.to_vec());
        let filter = deltalake::arrow::compute::filter;
        let binary = |a: &BinaryArray| -> Result<BinaryArray> {
            let out = filter(a, &mask)?;
            Ok(out
                .as_any()
                .downcast_ref::<BinaryArray>()
                .cloned()
                .unwrap_or_else(|| BinaryArray::from_iter_values(Vec::<Vec<u8>>::new())))
        };
        Ok(HashedBatch {
            payload: deltalake::arrow::compute::filter_record_batch(&self.payload, &mask)?,
            keyhash: binary(&self.keyhash)?,
            nonkeyhash: binary(&self.nonkeyhash)?,
            file: self.file,
            lines: self
                .lines
                .iter()
                .zip(keep)
                .filter_map(|(l, k)| k.then_some(*l))
                .collect(),
        })
    }

    /// The row's values as text, joined by `delimiter` (for rejects).
    pub fn row_text(&self, row: usize, delimiter: u8) -> String {
        self.payload
            .columns()
            .iter()
            .map(|c| {
                deltalake::arrow::util::display::array_value_to_string(c, row).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(&(delimiter as char).to_string())
    }
}

/// Rejects (or, under `on_error: fail`, errors on) every row whose key was already seen in this
/// input; the first occurrence is kept.
///
/// # Errors
/// [`Error::BadRow`] naming both places under `on_error: fail`.
pub fn reject_duplicate_keys(config: &TableConfig, incoming: &mut Incoming) -> Result<()> {
    let mut seen: crate::diff::DigestMap<(usize, u64)> = Default::default();
    seen.reserve(incoming.row_count());
    let mut errors = RowErrors::new(config.on_error);
    for batch in incoming.batches.iter_mut() {
        let mut keep = vec![true; batch.payload.num_rows()];
        for (i, flag) in keep.iter_mut().enumerate() {
            let key = crate::diff::key(batch.keyhash.value(i));
            let here = (batch.file, batch.lines[i]);
            if let Some(&(file, line)) = seen.get(&key) {
                let first = incoming.files[file].display();
                let err = Error::BadRow {
                    file: incoming.files[batch.file].display(),
                    line: here.1,
                    column: None,
                    reason: format!("duplicate key: first seen at {first}, line {line}"),
                };
                errors.push(err, || batch.row_text(i, config.delimiter))?;
                *flag = false;
            } else {
                seen.insert(key, here);
            }
        }
        if keep.iter().any(|k| !k) {
            *batch = batch.retain(&keep)?;
        }
    }
    incoming.rejects.extend(errors.rejects);
    Ok(())
}
