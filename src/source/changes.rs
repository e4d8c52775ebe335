//! Change files of one landing-zone table: listing them in source order, and reading each into
//! a [`ChangeBatch`] (DMS CSV and Parquet in `dms`, Debezium JSON lines in `debezium`).
//!
//! A bad change row always fails the read, naming file, line and column: skipping one change of
//! a log would leave the table wrong with no trace, so `on_error: reject` does not apply here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray, StringBuilder};

use super::cast::cast_column;
use super::{hash_batch, BATCH_ROWS};
use crate::change::{ChangeBatch, ChangeOp, SourceOrder};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::schema::payload_schema;
use crate::tables::{Layout, TableEntry};

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
    Csv,
    Parquet,
    JsonLines,
    /// Avro container files (Kafka Connect S3 sink) of Debezium events.
    Avro,
}

/// One change file of a table's landing folder.
#[derive(Debug, Clone)]
pub struct ChangeFile {
    pub path: PathBuf,
    /// Path relative to the table folder, with `/` separators: the file's identity.
    pub name: String,
    pub kind: FileKind,
    pub format: ChangeFormat,
    pub size: u64,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// DMS `LOAD` counter (hexadecimal in the name).
    load_counter: u64,
}

/// Lists the change files under `folder` (sub-folders included, for DMS date partitions) in
/// source order: `LOAD` files by their hexadecimal counter (`LOAD00000009` before
/// `LOAD0000000A`), then change files by file name without its extension (DMS names them by
/// timestamp), then by path. Files that are not change files of the layout are skipped with a
/// warning (`.gz` files: compressed change files are not read); names starting with `.` or `_`
/// (`_SUCCESS`, `.crc`) silently.
///
/// # Errors
/// [`Error::Input`] when the folder cannot be listed.
pub fn list(folder: &Path, layout: Layout) -> Result<Vec<ChangeFile>> {
    let mut out = Vec::new();
    walk(folder, folder, layout, &mut out)?;
    out.sort_by(|a, b| {
        let file_name = |f: &ChangeFile| {
            let name = f.name.rsplit('/').next().unwrap_or("");
            name.rsplit_once('.')
                .map_or(name, |(stem, _)| stem)
                .to_string()
        };
        (a.kind, a.load_counter, file_name(a), &a.name).cmp(&(
            b.kind,
            b.load_counter,
            file_name(b),
            &b.name,
        ))
    });
    Ok(out)
}

fn walk(root: &Path, dir: &Path, layout: Layout, out: &mut Vec<ChangeFile>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Input {
        path: dir.to_path_buf(),
        reason: format!("cannot list: {e}"),
    })?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with(['.', '_']) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &path, layout, out)?;
            continue;
        }
        let Some((kind, format, load_counter)) = classify(&file_name, layout) else {
            tracing::warn!(file = %path.display(), ?layout, "not a change file of this layout (csv or parquet for dms, json, jsonl or avro for debezium; compressed files are not read); skipped");
            continue;
        };
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        out.push(ChangeFile {
            path,
            name,
            kind,
            format,
            size: meta.len(),
            modified_ms,
            load_counter,
        });
    }
    Ok(())
}

/// The layout a table folder's files suggest: Debezium when it holds JSON or Avro files.
pub fn guess_layout(folder: &Path) -> Layout {
    fn has_events(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let path = e.path();
            if path.is_dir() {
                return has_events(&path);
            }
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            [".json", ".jsonl", ".avro"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
    }
    if has_events(folder) {
        Layout::Debezium
    } else {
        Layout::Dms
    }
}

/// Kind, format and `LOAD` counter of a file name, or None when it is not a change file.
fn classify(file_name: &str, layout: Layout) -> Option<(FileKind, ChangeFormat, u64)> {
    let (stem, ext) = file_name.rsplit_once('.')?;
    let format = match (layout, ext.to_ascii_lowercase().as_str()) {
        (Layout::Dms, "csv") => ChangeFormat::Csv,
        (Layout::Dms, "parquet") => ChangeFormat::Parquet,
        (Layout::Debezium, "json" | "jsonl") => ChangeFormat::JsonLines,
        (Layout::Debezium, "avro") => ChangeFormat::Avro,
        _ => return None,
    };
    if layout == Layout::Dms {
        if let Some(hex) = stem.strip_prefix("LOAD") {
            let counter = u64::from_str_radix(hex, 16).ok()?;
            return Some((FileKind::Load, format, counter));
        }
    }
    Some((FileKind::Change, format, 0))
}

/// Reads one change file; `index` is its place in the run's file list (the source order).
///
/// # Errors
/// [`Error::BadRow`] naming file, line and column; [`Error::Input`] for unreadable files or
/// missing columns; Arrow, Parquet and JSON errors.
pub fn read(
    config: &TableConfig,
    entry: &TableEntry,
    file: &ChangeFile,
    index: usize,
    run_days: i32,
) -> Result<Vec<ChangeBatch>> {
    match file.format {
        ChangeFormat::Csv => super::dms::read_csv(config, entry, file, index),
        ChangeFormat::Parquet => super::dms::read_parquet(config, entry, file, index),
        ChangeFormat::JsonLines | ChangeFormat::Avro => {
            super::debezium::read(config, entry, file, index)
        }
    }
    .map_err(|e| match e {
        e @ (Error::BadRow { .. } | Error::Input { .. }) => e,
        // CSV, Parquet, I/O and Arrow errors: name the file
        other => Error::Input {
            path: file.path.clone(),
            reason: other.to_string(),
        },
    })
    .map(|batches| {
        batches
            .into_iter()
            .map(|mut b| {
                if entry.eff_start == crate::tables::EffStart::Run {
                    b.commit_days.iter_mut().for_each(|d| *d = Some(run_days));
                }
                b
            })
            .collect()
    })
}

/// Change rows gathered from one file as text per configured column, turned into typed,
/// hashed [`ChangeBatch`]es of at most [`BATCH_ROWS`] rows.
pub(super) struct RowsBuilder<'a> {
    config: &'a TableConfig,
    file: &'a ChangeFile,
    index: usize,
    /// One builder per configured column: append each row's values, then call [`Self::push`].
    pub columns: Vec<StringBuilder>,
    ops: Vec<ChangeOp>,
    order: Vec<SourceOrder>,
    days: Vec<Option<i32>>,
    lines: Vec<u64>,
    done: Vec<ChangeBatch>,
}

impl<'a> RowsBuilder<'a> {
    pub fn new(config: &'a TableConfig, file: &'a ChangeFile, index: usize) -> Self {
        RowsBuilder {
            config,
            file,
            index,
            columns: config
                .columns
                .iter()
                .map(|_| StringBuilder::new())
                .collect(),
            ops: Vec::new(),
            order: Vec::new(),
            days: Vec::new(),
            lines: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Records the operation, order position, commit day and line of the row whose values were
    /// just appended to [`Self::columns`].
    pub fn push(&mut self, op: ChangeOp, position: u64, day: Option<i32>, line: u64) -> Result<()> {
        self.ops.push(op);
        self.order.push(SourceOrder {
            position,
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

    fn flush(&mut self) -> Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let raw = self.columns.iter_mut().map(|b| b.finish()).collect();
        let lines = std::mem::take(&mut self.lines);
        self.done.push(ChangeBatch {
            rows: typed_batch(self.config, self.file, self.index, raw, lines)?,
            ops: std::mem::take(&mut self.ops),
            order: std::mem::take(&mut self.order),
            commit_days: std::mem::take(&mut self.days),
        });
        Ok(())
    }

    /// Every batch gathered.
    pub fn finish(mut self) -> Result<Vec<ChangeBatch>> {
        self.flush()?;
        Ok(self.done)
    }
}

/// Casts raw text columns (configured columns, config order) to their types and hashes them.
/// The first value that does not convert fails the read, naming its line and column.
pub(super) fn typed_batch(
    config: &TableConfig,
    file: &ChangeFile,
    index: usize,
    raw: Vec<StringArray>,
    lines: Vec<u64>,
) -> Result<crate::source::HashedBatch> {
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

/// Days since 1970-01-01 of a commit timestamp text (`2014-10-29 11:34:01.000000`, with a
/// space or `T`, optional fraction and zone suffix `Z`).
pub(super) fn timestamp_days(text: &str) -> Option<i32> {
    let text = text.trim().trim_end_matches('Z');
    let parsed = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()?;
    Some(crate::run::epoch_days(parsed.date()))
}

/// Days since 1970-01-01 of milliseconds since the Unix epoch.
pub(super) fn millis_days(ms: i64) -> i32 {
    ms.div_euclid(86_400_000) as i32
}

/// A change file entry for tests of the controller's bookkeeping (no file behind it).
#[cfg(test)]
pub(crate) fn test_file(name: &str, kind: FileKind) -> ChangeFile {
    ChangeFile {
        path: PathBuf::from(name),
        name: name.to_string(),
        kind,
        format: ChangeFormat::Csv,
        size: 0,
        modified_ms: 0,
        load_counter: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_files_order_by_hex_counter_then_changes_by_timestamp_name() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "20141029-1134010000.csv",
            "LOAD0000000A.csv",
            "LOAD00000009.csv",
            "2014/10/28/20141028-0900000000.csv",
            "20141029-1134010000-2.csv",
            "_SUCCESS",
            "notes.txt",
            "LOAD00000010.csv",
        ];
        for n in names {
            let p = dir.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let files = list(dir.path(), Layout::Dms).unwrap();
        let got: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            got,
            [
                "LOAD00000009.csv",
                "LOAD0000000A.csv",
                "LOAD00000010.csv",
                "2014/10/28/20141028-0900000000.csv",
                "20141029-1134010000.csv",
                "20141029-1134010000-2.csv",
            ]
        );
        assert_eq!(files[0].kind, FileKind::Load);
        assert_eq!(files[3].kind, FileKind::Change);
        assert!(list(dir.path(), Layout::Debezium).unwrap().is_empty());
    }

    #[test]
    fn parses_commit_timestamps_to_days() {
        assert_eq!(timestamp_days("1970-01-02 00:00:01.000000"), Some(1));
        assert_eq!(timestamp_days("2019-06-18T23:59:59Z"), Some(18065));
        assert_eq!(timestamp_days("yesterday"), None);
        assert_eq!(millis_days(86_400_000 * 3 + 5), 3);
        assert_eq!(millis_days(-1), -1);
    }
}
