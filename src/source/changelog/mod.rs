//! Change logs: the files of one landing-zone table ([`landing`], a [`ChangeSource`]), each
//! read into [`ChangeBatch`]es by its format's reader (DMS CSV and Parquet in [`dms`], Debezium
//! JSON lines and Avro in [`debezium`]), with each reader's operation codes mapped onto
//! [`ChangeOp`].
//!
//! A bad change row always fails the read, naming file, line and column: skipping one change of
//! a log would leave the table wrong with no trace, so `on_error: reject` does not apply here.
//!
//! [`ChangeSource`]: super::ChangeSource

mod debezium;
mod dms;
pub mod landing;
pub mod remote;

use std::path::PathBuf;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray, StringBuilder};

use super::cast::cast_column;
use super::{hash_batch, invalid_values};
use crate::config::tables::EffStart;
use crate::config::ChangelogTable;
use crate::core::batch::{HashedBatch, BATCH_ROWS};
use crate::core::change::{ChangeBatch, ChangeOp, SourceOrder};
use crate::core::schema::payload_schema;
use crate::error::{Error, Result};

pub use landing::LandingZone;

/// Whether a file is part of a full load or a change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// DMS full load (`LOAD<hex counter>`): rows are inserts, `Op` may be absent.
    Load,
    /// DMS change file (timestamp name) or Debezium event file.
    Change,
}

/// File formats of change files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeFormat {
    /// DMS CSV (a header line only with `AddColumnName=true`).
    Csv,
    /// DMS Parquet.
    Parquet,
    /// Debezium events, one JSON object per line.
    JsonLines,
    /// Avro container files (Kafka Connect S3 sink) of Debezium events.
    Avro,
}

/// One change file of a table's landing folder.
#[derive(Debug, Clone)]
pub struct ChangeFile {
    /// Where the file is.
    pub path: PathBuf,
    /// Path relative to the table folder, with `/` separators: the file's identity.
    pub name: String,
    /// Full load or change log.
    pub kind: FileKind,
    /// How it is read.
    pub format: ChangeFormat,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// (device, inode) of a file of a local landing zone when listed (None: a copy of an
    /// object, or a file not listed).
    pub file_id: Option<crate::source::extract::files::FileId>,
    /// The object's ETag, for a file listed in an object store (None: a local file).
    pub etag: Option<String>,
    /// DMS `LOAD` counter (hexadecimal in the name).
    load_counter: u64,
}

impl ChangeFile {
    /// A change file at `path`, named `name` (relative to its table folder), of `size` bytes;
    /// a `LOAD` file's counter is taken from its name.
    pub fn new(path: PathBuf, name: &str, kind: FileKind, format: ChangeFormat, size: u64) -> Self {
        let stem = name.rsplit('/').next().unwrap_or(name);
        let load_counter = stem
            .strip_prefix("LOAD")
            .and_then(|s| s.split('.').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or(0);
        ChangeFile {
            path,
            name: name.to_string(),
            kind,
            format,
            size,
            modified_ms: 0,
            file_id: None,
            etag: None,
            load_counter,
        }
    }
}

/// Where a reader hands each [`ChangeBatch`] as soon as it is made: a file is not held whole
/// (a DMS full-load file may be gigabytes). An error stops the read.
pub type BatchSink<'a> = &'a mut dyn FnMut(ChangeBatch) -> Result<()>;

/// Reads one change file, handing its batches to `sink` in file order; `index` is its place in
/// the run's file list (the source order); `memory_limit` is the run's (a reader's share of it
/// is in flight). Returns the rows read.
///
/// # Errors
/// [`Error::BadRow`] naming file, line and column; [`Error::Input`] for unreadable files or
/// missing columns; Arrow, Parquet and JSON errors; the sink's errors. Batches handed over
/// before an error are of no use: the run fails with it.
pub fn read(
    config: &ChangelogTable,
    file: &ChangeFile,
    index: usize,
    run_days: i32,
    memory_limit: u64,
    sink: BatchSink<'_>,
) -> Result<u64> {
    let mut rows = 0u64;
    let mut each = |mut b: ChangeBatch| -> Result<()> {
        if config.eff_start == EffStart::Run {
            b.commit_days.iter_mut().for_each(|d| *d = Some(run_days));
        }
        rows += b.len() as u64;
        sink(b)
    };
    match file.format {
        ChangeFormat::Csv => dms::read_csv(config, file, index, memory_limit, &mut each),
        ChangeFormat::Parquet => dms::read_parquet(config, file, index, &mut each),
        ChangeFormat::JsonLines | ChangeFormat::Avro => {
            debezium::read(config, file, index, &mut each)
        }
    }
    .map_err(|e| match e {
        e @ (Error::BadRow { .. } | Error::Input { .. }) => e,
        // CSV, Parquet, I/O and Arrow errors: name the file
        other => Error::Input {
            path: file.path.clone(),
            reason: other.to_string(),
        },
    })?;
    Ok(rows)
}

/// Change rows gathered from one file as text per configured column, turned into typed,
/// hashed [`ChangeBatch`]es of at most [`BATCH_ROWS`] rows, each handed to the sink once made.
pub(super) struct RowsBuilder<'a> {
    config: &'a ChangelogTable,
    file: &'a ChangeFile,
    index: usize,
    /// One builder per configured column: append each row's values, then call [`Self::push`].
    pub columns: Vec<StringBuilder>,
    ops: Vec<ChangeOp>,
    order: Vec<SourceOrder>,
    days: Vec<Option<i32>>,
    positions: Vec<Option<i64>>,
    /// Position of the rows that carry none: a DMS change file's name timestamp.
    file_position: Option<i64>,
    lines: Vec<u64>,
    sink: BatchSink<'a>,
}

impl<'a> RowsBuilder<'a> {
    pub fn new(
        config: &'a ChangelogTable,
        file: &'a ChangeFile,
        index: usize,
        sink: BatchSink<'a>,
    ) -> Self {
        RowsBuilder {
            config,
            file,
            index,
            columns: config
                .table
                .columns
                .iter()
                .map(|_| StringBuilder::new())
                .collect(),
            ops: Vec::new(),
            order: Vec::new(),
            days: Vec::new(),
            positions: Vec::new(),
            file_position: file_position(config, file),
            lines: Vec::new(),
            sink,
        }
    }

    /// Records the operation, order position, durable source position (None: the file's, see
    /// [`ChangeBatch::positions`]), commit day and line of the row whose values were just
    /// appended to [`Self::columns`].
    pub fn push(
        &mut self,
        op: ChangeOp,
        position: u64,
        durable: Option<i64>,
        day: Option<i32>,
        line: u64,
    ) -> Result<()> {
        self.ops.push(op);
        let durable = durable.or(self.file_position);
        self.positions.push(durable);
        self.order.push(SourceOrder {
            // sources ordered by file and row (DMS) order by their durable position first
            position: match position {
                0 => durable.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
                p => p,
            },
            file: self.index as u32,
            row: line,
        });
        self.days.push(day);
        self.lines.push(line);
        if self.ops.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// The rows gathered, typed and hashed (their text taken from [`Self::columns`]).
    fn typed(&mut self) -> Result<HashedBatch> {
        let raw = self.columns.iter_mut().map(|b| b.finish()).collect();
        let lines = std::mem::take(&mut self.lines);
        typed_batch(self.config, self.file, self.index, raw, lines)
    }

    fn flush(&mut self) -> Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let batch = ChangeBatch {
            rows: self.typed()?,
            ops: std::mem::take(&mut self.ops),
            order: std::mem::take(&mut self.order),
            commit_days: std::mem::take(&mut self.days),
            positions: std::mem::take(&mut self.positions),
            keep_stored: Default::default(),
        };
        (self.sink)(batch)
    }

    /// Ends a read of the rows gathered: on success hands the last ones to the sink; on a
    /// failure `err` (a bad row found as it was read: an unknown operation, another layout)
    /// returns the error to report: the first value of the rows still held that does not
    /// convert, when there is one, else `err`. Held rows are cast only when their batch is
    /// made, so such a value lies earlier in the file than `err`'s row and is the file's first
    /// bad row (rows of batches already made were cast then).
    pub fn end(mut self, read: Result<()>) -> Result<()> {
        let Err(err) = read else {
            return self.flush();
        };
        if self.ops.is_empty() {
            return Err(err);
        }
        match self.typed() {
            Err(earlier @ Error::BadRow { .. }) => Err(earlier),
            _ => Err(err),
        }
    }
}

/// The source position of a file's rows that carry none of their own: the timestamp in a DMS
/// change file's name (`20141029-1134010000.csv`), in microseconds since the epoch. None for
/// full loads, Debezium files and other names.
pub(super) fn file_position(config: &ChangelogTable, file: &ChangeFile) -> Option<i64> {
    if config.layout != crate::config::tables::Layout::Dms || file.kind != FileKind::Change {
        return None;
    }
    let name = file.name.rsplit('/').next().unwrap_or("");
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    crate::core::time::dms_name_micros(stem)
}

/// Casts raw text columns (configured columns, config order) to their types and hashes them.
/// The first value that does not convert fails the read, naming its line and column.
pub(crate) fn typed_batch(
    config: &ChangelogTable,
    file: &ChangeFile,
    index: usize,
    raw: Vec<StringArray>,
    lines: Vec<u64>,
) -> Result<HashedBatch> {
    let config = &config.table;
    let mut typed: Vec<ArrayRef> = Vec::with_capacity(raw.len());
    let mut first_bad: Option<(usize, usize)> = None;
    for (c, column) in raw.into_iter().enumerate() {
        let column: ArrayRef = Arc::new(column);
        let (array, bad) = cast_column(&column, config.columns[c].ty)?;
        if let Some(&row) = bad.first() {
            if first_bad.is_none_or(|(r, _)| row < r) {
                first_bad = Some((row, c));
            }
        }
        typed.push(if first_bad.is_some() { column } else { array });
    }
    // A key needs a value (a table without a primary key hashes every column as its key,
    // NULLs included: its keys are nullable); a partition value cannot be ''.
    if let Some(&(row, c, reason)) = invalid_values(config, &typed).first() {
        if first_bad.is_none_or(|(r, _)| row < r) {
            return Err(Error::bad_row(
                file.path.display(),
                lines[row],
                Some(&config.columns[c].name),
                reason,
            ));
        }
    }
    if let Some((row, c)) = first_bad {
        let value = typed[c]
            .as_any()
            .downcast_ref::<StringArray>()
            .map(|a| a.value(row).to_string())
            .unwrap_or_default();
        return Err(Error::bad_row(
            file.path.display(),
            lines[row],
            Some(&config.columns[c].name),
            format!("cannot parse `{value}` as {}", config.columns[c].ty),
        ));
    }
    let batch = RecordBatch::try_new(payload_schema(&config.typed_columns()), typed)?;
    hash_batch(config, batch, index, lines)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The config of a table `source` (`schema/table`) of `layout` keyed by `id`, with
    /// `columns` (name, type), its lake under `/tmp/lake` (not written by readers' tests).
    pub(crate) fn test_config(
        source: &str,
        layout: crate::config::tables::Layout,
        columns: &[(&str, &str)],
    ) -> ChangelogTable {
        let mut entry =
            crate::config::tables::TableEntry::discovered(source.into(), Vec::new(), layout);
        entry.primary_key = vec!["id".into()];
        entry.columns = columns
            .iter()
            .map(|(n, t)| crate::config::ColumnFile {
                name: n.to_string(),
                ty: t.to_string(),
                key: false,
                ignore: false,
            })
            .collect();
        entry
            .changelog_table(
                0,
                &crate::config::storage::LakeRoot::local(std::path::Path::new("/tmp/lake")),
            )
            .unwrap()
    }

    /// A change file entry for tests of the controller's bookkeeping (no file behind it).
    pub(crate) fn test_file(name: &str, kind: FileKind) -> ChangeFile {
        ChangeFile {
            path: PathBuf::from(name),
            name: name.to_string(),
            kind,
            format: ChangeFormat::Csv,
            size: 0,
            modified_ms: 0,
            file_id: None,
            etag: None,
            load_counter: 0,
        }
    }
}
