//! AWS DMS S3 target files (CSV, with a header line only when the endpoint sets
//! `AddColumnName=true`, and Parquet).
//!
//! Layout followed (AWS DMS "Using Amazon S3 as a target"): a change file's first column is `Op`
//! (`I`, `U`, `D`), followed by the commit timestamp column when the task sets
//! `TimestampColumnName`, then the table's columns in source order. Full-load (`LOAD*`) files
//! have the same columns, except that `Op` is absent unless the task sets
//! `includeOpForFullLoad`; every full-load row is an insert. Parquet files name their columns,
//! so `Op` and the timestamp column are found by name.

use deltalake::arrow::array::{Array, AsArray, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;

use super::{typed_batch, BatchSink, ChangeFile, FileKind, RowsBuilder};
use crate::config::{ChangelogTable, InputFormat};
use crate::core::batch::HashedBatch;
use crate::core::change::{ChangeBatch, ChangeOp, SourceOrder};
use crate::core::time::{micros_days, timestamp_micros};
use crate::error::{Error, Result};
use crate::report::progress::Progress;
use crate::source::extract::strict::CsvFile;
use crate::source::extract::{
    csv as extract_csv, parquet as extract_parquet, InputFile, RowErrors,
};

/// Where `Op` and the timestamp sit in a CSV record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CsvLayout {
    op: Option<usize>,
    timestamp: Option<usize>,
    first_data: usize,
}

/// Works out the layout of a record with `fields` fields for a table of `columns` columns.
fn csv_layout(
    fields: usize,
    columns: usize,
    has_timestamp: bool,
    first_field: &[u8],
    kind: FileKind,
) -> Option<CsvLayout> {
    let looks_like_op = std::str::from_utf8(first_field)
        .ok()
        .and_then(op_code)
        .is_some();
    let layout = |op, timestamp, first_data| {
        Some(CsvLayout {
            op,
            timestamp,
            first_data,
        })
    };
    if fields == columns + 2 && has_timestamp {
        layout(Some(0), Some(1), 2)
    } else if fields == columns + 1 && (looks_like_op || !has_timestamp) {
        layout(Some(0), None, 1)
    } else if fields == columns + 1 && kind == FileKind::Load {
        layout(None, Some(0), 1)
    } else if fields == columns && kind == FileKind::Load {
        layout(None, None, 0)
    } else {
        None
    }
}

fn bad_row(file: &ChangeFile, line: u64, column: Option<&str>, reason: String) -> Error {
    Error::bad_row(file.path.display(), line, column, reason)
}

/// Reads a DMS CSV file (a first line naming the columns is a header) into change batches of
/// at most [`BATCH_ROWS`] rows.
///
/// # Errors
/// [`Error::BadRow`] for the file's first bad row: a record that breaks the quoting rule or
/// has the wrong field count, an unknown `Op`, a bad timestamp or a value that does not
/// convert (values are cast a batch at a time: [`RowsBuilder::end`]); I/O and CSV
/// errors.
///
/// [`BATCH_ROWS`]: crate::core::batch::BATCH_ROWS
pub(super) fn read_csv(
    config: &ChangelogTable,
    file: &ChangeFile,
    index: usize,
    memory_limit: u64,
    sink: BatchSink<'_>,
) -> Result<()> {
    let mut reader = CsvFile::open(&config.source, &file.path)?;
    let columns = &config.table.columns;
    let timestamp_name = config.timestamp_column.as_deref();
    let mut first = csv::ByteRecord::new();
    let has_first = reader.read(&mut first)?.is_some();
    // DMS writes a header line when the endpoint sets `AddColumnName=true`.
    let header = has_first && is_header(&first, columns, timestamp_name);
    if header {
        tracing::info!(file = %file.path.display(), "line 1 names the columns: read as a header (DMS AddColumnName)");
    }
    if file.kind == FileKind::Load && has_first && first.len() == columns.len() {
        // A full load without Op and timestamp columns is a plain extract: parse it on every
        // core with the snapshot reader.
        return read_plain_load(config, file, index, header, memory_limit, sink);
    }
    let mut reader = CsvFile::open(&config.source, &file.path)?;
    let mut rows = RowsBuilder::new(config, file, index, sink);
    let mut record = csv::ByteRecord::new();
    let mut layout: Option<CsvLayout> = None;
    let mut skip_header = header;
    let read = (|| -> Result<()> {
        while let Some(quoting) = reader.read(&mut record)? {
            let line = record.position().map_or(0, |p| p.line());
            if let Some(reason) = quoting {
                return Err(bad_row(file, line, None, reason.into()));
            }
            if std::mem::take(&mut skip_header) {
                continue;
            }
            let found = csv_layout(
                record.len(),
                columns.len(),
                timestamp_name.is_some(),
                record.get(0).unwrap_or_default(),
                file.kind,
            );
            let this = match (found, layout) {
                (Some(f), None) => {
                    layout = Some(f);
                    f
                }
                (Some(f), Some(l)) if f == l => l,
                _ => {
                    let extra = match (file.kind, timestamp_name) {
                        (FileKind::Load, Some(_)) => "[Op,] [timestamp,] ",
                        (FileKind::Load, None) => "[Op,] ",
                        (FileKind::Change, Some(_)) => "Op, timestamp, ",
                        (FileKind::Change, None) => "Op, ",
                    };
                    let reason = format!(
                        "expected {extra}then {} table columns, found {} fields{}",
                        columns.len(),
                        record.len(),
                        if layout.is_some() {
                            " (or a layout that differs from the file's first row)"
                        } else {
                            ""
                        }
                    );
                    return Err(bad_row(file, line, None, reason));
                }
            };
            let text = |i: usize, name: &str| -> Result<&str> {
                std::str::from_utf8(&record[i])
                    .map_err(|_| bad_row(file, line, Some(name), "invalid UTF-8".into()))
            };
            let op = match this.op {
                Some(i) => {
                    let value = text(i, "Op")?;
                    op_code(value).ok_or_else(|| {
                        let hint = if timestamp_name.is_none() {
                            " (if the task writes a commit timestamp column, set timestamp_column)"
                        } else {
                            ""
                        };
                        bad_row(
                            file,
                            line,
                            Some("Op"),
                            format!("`{value}` is not an operation (I, U or D){hint}"),
                        )
                    })?
                }
                None => ChangeOp::Insert,
            };
            // Every full-load row is an insert, whatever its Op says.
            let op = if file.kind == FileKind::Load {
                ChangeOp::Insert
            } else {
                op
            };
            let micros = match (this.timestamp, timestamp_name) {
                (Some(i), Some(name)) => {
                    let value = text(i, name)?;
                    Some(timestamp_micros(value).ok_or_else(|| {
                        bad_row(
                            file,
                            line,
                            Some(name),
                            format!("cannot parse `{value}` as a commit timestamp"),
                        )
                    })?)
                }
                _ => None,
            };
            for (c, column) in columns.iter().enumerate() {
                let field = &record[this.first_data + c];
                if extract_csv::is_null(&config.source, field, column.ty) {
                    rows.columns[c].append_null();
                } else {
                    rows.columns[c].append_value(text(this.first_data + c, &column.name)?);
                }
            }
            rows.push(op, 0, micros, micros.map(micros_days), line)?;
        }
        Ok(())
    })();
    rows.end(read)
}

/// Whether a DMS CSV record is a header line (`AddColumnName=true`): its fields are the names,
/// case ignored, of what DMS writes before the table's columns (`Op`, then the commit timestamp
/// column when `timestamp_column` is set; either may be absent from a full load), then the
/// table's columns in order. A change row never reads so: its first field is an operation
/// (`I`, `U`, `D`), not `Op`.
fn is_header(
    record: &csv::ByteRecord,
    columns: &[crate::config::Column],
    timestamp: Option<&str>,
) -> bool {
    let fields: Vec<&str> = record
        .iter()
        .map(|f| std::str::from_utf8(f).map_or("", str::trim))
        .collect();
    let Some(extra) = fields.len().checked_sub(columns.len()) else {
        return false;
    };
    let leading: Vec<&str> = ["Op"].into_iter().chain(timestamp).collect();
    let prefix_ok = match extra {
        0 => true,
        1 => leading
            .iter()
            .any(|name| fields[0].eq_ignore_ascii_case(name)),
        2 => {
            leading.len() == 2
                && fields[0].eq_ignore_ascii_case(leading[0])
                && fields[1].eq_ignore_ascii_case(leading[1])
        }
        _ => false,
    };
    prefix_ok
        && fields[extra..]
            .iter()
            .zip(columns)
            .all(|(field, column)| field.eq_ignore_ascii_case(&column.name))
}

/// Reads a full-load CSV file that has only the table's columns (every row an insert) with the
/// parallel snapshot reader; `header`: its first line names the columns.
fn read_plain_load(
    config: &ChangelogTable,
    file: &ChangeFile,
    index: usize,
    header: bool,
    memory_limit: u64,
    out: BatchSink<'_>,
) -> Result<()> {
    let input = InputFile {
        path: file.path.clone(),
        format: InputFormat::Csv,
        size: file.size,
        // as listed (an object's time for a copy of one: `as_listed` is not called here)
        modified_ms: file.modified_ms,
        file_id: file.file_id,
    };
    // Tables-file configs never reject rows (`on_error` is always `fail` for change logs).
    let mut errors = RowErrors::new(config.source.on_error);
    let mut sink = |rows: HashedBatch| -> Result<()> {
        let n = rows.lines.len();
        out(ChangeBatch {
            ops: vec![ChangeOp::Insert; n],
            order: rows
                .lines
                .iter()
                .map(|&line| SourceOrder {
                    position: 0,
                    file: index as u32,
                    row: line,
                })
                .collect(),
            commit_days: vec![None; n],
            positions: vec![None; n],
            keep_stored: Default::default(),
            rows,
        })
    };
    let progress = Progress::hidden();
    let source = crate::config::SourceOptions {
        header,
        ..config.source.clone()
    };
    extract_csv::read(
        &config.table,
        &source,
        &input,
        index,
        // chunks in flight: the run limit's share (the changes themselves are bounded where
        // they are gathered, `changelog::spill`)
        crate::source::extract::ReadBudget::of_limit(memory_limit),
        &mut errors,
        &progress,
        &mut sink,
    )?;
    Ok(())
}

/// Reads a DMS Parquet file: the configured columns, `Op` and the timestamp column by name
/// (case-insensitive). Rows are numbered from 1.
///
/// # Errors
/// [`Error::Input`] for a missing column (or a change file without `Op`); [`Error::BadRow`] for
/// the file's first bad row: an unknown `Op`, a bad timestamp or a value that does not convert
/// (checked a record batch at a time); Parquet errors.
pub(super) fn read_parquet(
    config: &ChangelogTable,
    file: &ChangeFile,
    index: usize,
    sink: BatchSink<'_>,
) -> Result<()> {
    let input_err = |reason: String| Error::Input {
        path: file.path.clone(),
        reason,
    };
    let builder = extract_parquet::open(&file.path)?;
    let schema = builder.schema().clone();
    let find = |name: &str| extract_parquet::column_position(&schema, name);
    let op_at = find("Op");
    if op_at.is_none() && file.kind == FileKind::Change {
        return Err(input_err("a change file needs an `Op` column".into()));
    }
    let timestamp_at = match config.timestamp_column.as_deref() {
        Some(name) => find(name),
        None => None,
    };
    if timestamp_at.is_none() && file.kind == FileKind::Change {
        if let Some(name) = &config.timestamp_column {
            return Err(input_err(format!("has no timestamp column `{name}`")));
        }
    }
    let positions = config
        .table
        .columns
        .iter()
        .map(|c| find(&c.name).ok_or_else(|| input_err(format!("has no column `{}`", c.name))))
        .collect::<Result<Vec<usize>>>()?;
    let mut row = 0u64;
    for batch in builder.build()? {
        let batch = batch?;
        let n = batch.num_rows();
        let lines: Vec<u64> = (row + 1..=row + n as u64).collect();
        row += n as u64;
        let text = |at: usize| -> Result<StringArray> {
            Ok(cast(batch.column(at), &DataType::Utf8)?
                .as_string::<i32>()
                .clone())
        };
        let ops = match op_at {
            Some(at) if file.kind == FileKind::Change => {
                let values = text(at)?;
                (0..n)
                    .map(|i| {
                        let value = if values.is_null(i) {
                            ""
                        } else {
                            values.value(i)
                        };
                        op_code(value).ok_or_else(|| {
                            bad_row(
                                file,
                                lines[i],
                                Some("Op"),
                                format!("`{value}` is not an operation (I, U or D)"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            }
            _ => Ok(vec![ChangeOp::Insert; n]),
        };
        let micros = match timestamp_at {
            Some(at) => commit_column(batch.column(at), file, &lines, config),
            None => Ok(vec![None; n]),
        };
        let raw = positions
            .iter()
            .map(|&at| text(at))
            .collect::<Result<Vec<_>>>()?;
        let rows = typed_batch(config, file, index, raw, lines.clone());
        let (ops, micros, rows) = earliest_error(ops, micros, rows)?;
        let file_position = super::file_position(config, file);
        let positions: Vec<Option<i64>> = micros.iter().map(|m| m.or(file_position)).collect();
        sink(ChangeBatch {
            rows,
            ops,
            // by durable position first (see `RowsBuilder::push`), then file and row
            order: lines
                .iter()
                .zip(&positions)
                .map(|(&l, p)| SourceOrder {
                    position: p.and_then(|p| u64::try_from(p).ok()).unwrap_or(0),
                    file: index as u32,
                    row: l,
                })
                .collect(),
            commit_days: micros.iter().map(|m| m.map(micros_days)).collect(),
            positions,
            keep_stored: Default::default(),
        })?;
    }
    Ok(())
}

/// The three checks of a Parquet batch (`Op`, the commit time, the values), each stopped at
/// its own first bad row: their values, or the error of the batch's earliest bad row (the
/// first check's on the same row; an error that names no row, first of all).
fn earliest_error<A, B, C>(a: Result<A>, b: Result<B>, c: Result<C>) -> Result<(A, B, C)> {
    let (a, b, c) = match (a, b, c) {
        (Ok(a), Ok(b), Ok(c)) => return Ok((a, b, c)),
        (a, b, c) => (a.err(), b.err(), c.err()),
    };
    let line = |e: &Error| match e {
        Error::BadRow { line, .. } => *line,
        _ => 0,
    };
    Err([a, b, c]
        .into_iter()
        .flatten()
        .min_by_key(line)
        .unwrap_or_else(|| Error::Internal("a failed check without its error".into())))
}

/// Commit times (microseconds since the epoch) of a Parquet timestamp column (a timestamp type,
/// or text).
fn commit_column(
    column: &deltalake::arrow::array::ArrayRef,
    file: &ChangeFile,
    lines: &[u64],
    config: &ChangelogTable,
) -> Result<Vec<Option<i64>>> {
    let name = config.timestamp_column.as_deref().unwrap_or("timestamp");
    if let DataType::Timestamp(_, _) = column.data_type() {
        let micros = cast(
            column,
            &DataType::Timestamp(deltalake::arrow::datatypes::TimeUnit::Microsecond, None),
        )?;
        let micros = micros.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
        return Ok((0..micros.len())
            .map(|i| (!micros.is_null(i)).then(|| micros.value(i)))
            .collect());
    }
    let text = cast(column, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    (0..text.len())
        .map(|i| {
            if text.is_null(i) {
                return Ok(None);
            }
            timestamp_micros(text.value(i)).map(Some).ok_or_else(|| {
                bad_row(
                    file,
                    lines[i],
                    Some(name),
                    format!("cannot parse `{}` as a commit timestamp", text.value(i)),
                )
            })
        })
        .collect()
}

/// Parses a DMS `Op` value (`I`, `U`, `D`; case-insensitive).
fn op_code(text: &str) -> Option<ChangeOp> {
    match text.trim() {
        "I" | "i" => Some(ChangeOp::Insert),
        "U" | "u" => Some(ChangeOp::Update),
        "D" | "d" => Some(ChangeOp::Delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tables::Layout;
    use crate::core::batch::BATCH_ROWS;
    use crate::source::changelog::tests::test_config;
    use crate::source::changelog::ChangeFormat;
    use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use std::sync::Arc;

    /// A DMS table `bench/orders (id long key, note string)`.
    fn config() -> ChangelogTable {
        test_config(
            "bench/orders",
            Layout::Dms,
            &[("id", "long"), ("note", "string")],
        )
    }

    /// Change rows `1..=rows` (`U`, every third `D`), each `id` its line number (after a
    /// header line when `header`), with `bad` lines replaced.
    fn change_file(
        dir: &std::path::Path,
        rows: u64,
        header: bool,
        bad: &[(u64, &str)],
    ) -> ChangeFile {
        let mut body = String::new();
        if header {
            body.push_str("Op,id,note\n");
        }
        for i in 1..=rows {
            let line = i + u64::from(header);
            match bad.iter().find(|(at, _)| *at == line) {
                Some((_, text)) => body.push_str(text),
                None => {
                    let op = if i.is_multiple_of(3) { "D" } else { "U" };
                    body.push_str(&format!("{op},{line},n{i}"));
                }
            }
            body.push('\n');
        }
        let name = "20240301-0000000000.csv";
        let path = dir.join(name);
        std::fs::write(&path, &body).unwrap();
        ChangeFile::new(
            path,
            name,
            FileKind::Change,
            ChangeFormat::Csv,
            body.len() as u64,
        )
    }

    /// Each row's line, `id` and operation.
    type Rows = Vec<(u64, i64, ChangeOp)>;

    /// Reads a change file: its rows in the order the sink got them, and the size of each
    /// batch.
    fn read_batches(file: &ChangeFile) -> Result<(Rows, Vec<usize>)> {
        let mut rows = Vec::new();
        let mut sizes = Vec::new();
        read_csv(&config(), file, 0, 1 << 30, &mut |batch: ChangeBatch| {
            sizes.push(batch.len());
            let ids = batch
                .rows
                .payload
                .column(0)
                .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            let ids: &Int64Array = ids;
            for (r, order) in batch.order.iter().enumerate() {
                rows.push((order.row, ids.value(r), batch.ops[r]));
            }
            Ok(())
        })?;
        Ok((rows, sizes))
    }

    fn read(file: &ChangeFile) -> Result<Rows> {
        read_batches(file).map(|(rows, _)| rows)
    }

    /// A DMS Parquet change file of text columns `Op`, `ts` (the commit time), `id`, `note`:
    /// rows `1..=rows` (`U`, `id` its row number), with `bad` rows' `Op`, `ts` and `id`
    /// replaced.
    fn parquet_change_file(
        dir: &std::path::Path,
        rows: u64,
        bad: &[(u64, &str, &str, &str)],
    ) -> ChangeFile {
        let column = |value: &dyn Fn(u64) -> String| -> ArrayRef {
            Arc::new((1..=rows).map(value).map(Some).collect::<StringArray>())
        };
        let find = |row: u64| bad.iter().find(|b| b.0 == row);
        let batch = RecordBatch::try_from_iter([
            ("Op", column(&|r| find(r).map_or("U", |b| b.1).to_string())),
            (
                "ts",
                column(&|r| find(r).map_or(OK_TS, |b| b.2).to_string()),
            ),
            (
                "id",
                column(&|r| find(r).map_or(r.to_string(), |b| b.3.to_string())),
            ),
            ("note", column(&|r| format!("n{r}"))),
        ])
        .unwrap();
        let name = "20240301-0000000000.parquet";
        let path = dir.join(name);
        let out = std::fs::File::create(&path).unwrap();
        let mut writer =
            deltalake::parquet::arrow::ArrowWriter::try_new(out, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        ChangeFile::new(path, name, FileKind::Change, ChangeFormat::Parquet, size)
    }

    /// A commit time that parses.
    const OK_TS: &str = "2024-03-01 10:00:00";

    /// The rows of a DMS Parquet change file are checked a record batch at a time, one check
    /// after another (`Op`, the commit time, the values): the batch's earliest bad row is the
    /// one reported, whichever check finds it.
    #[test]
    fn the_first_bad_row_of_a_parquet_change_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.timestamp_column = Some("ts".into());
        let first_bad = |bad: &[(u64, &str, &str, &str)]| {
            let file = parquet_change_file(dir.path(), 100, bad);
            match read_parquet(&config, &file, 0, &mut |_| Ok(())) {
                Err(Error::BadRow { line, column, .. }) => (line, column.unwrap_or_default()),
                other => panic!("{bad:?}: {other:?}"),
            }
        };
        let ok = OK_TS;
        // a value that does not convert before an unknown `Op`, and after one
        let bad = [(3, "U", ok, "abc"), (7, "x", ok, "7")];
        assert_eq!(first_bad(&bad), (3, "id".into()));
        let bad = [(2, "x", ok, "2"), (5, "U", ok, "abc")];
        assert_eq!(first_bad(&bad), (2, "Op".into()));
        // a commit time before an unknown `Op`, and a value before a commit time
        let bad = [(3, "U", "noon", "3"), (6, "x", ok, "6")];
        assert_eq!(first_bad(&bad), (3, "ts".into()));
        let bad = [(2, "U", ok, "abc"), (4, "U", "noon", "4")];
        assert_eq!(first_bad(&bad), (2, "id".into()));
        // on one row: `Op`, then the commit time, then the values, as the CSV reader reports
        assert_eq!(first_bad(&[(4, "x", "noon", "abc")]), (4, "Op".into()));
        assert_eq!(first_bad(&[(4, "U", "noon", "abc")]), (4, "ts".into()));
        let file = parquet_change_file(dir.path(), 100, &[]);
        let mut rows = 0;
        read_parquet(&config, &file, 0, &mut |batch| {
            rows += batch.len();
            assert!(
                batch.positions.iter().all(Option::is_some),
                "commit times read"
            );
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, 100);
    }

    #[test]
    fn a_change_file_of_many_batches_reaches_the_sink_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        // 200,000 rows: four batches (at most BATCH_ROWS rows each), and a header or not
        for header in [false, true] {
            let (rows, sizes) =
                read_batches(&change_file(dir.path(), 200_000, header, &[])).unwrap();
            assert_eq!(rows.len(), 200_000);
            let full = 200_000 / BATCH_ROWS;
            assert!(full >= 2, "the file is to span batches");
            assert_eq!(sizes.len(), full + 1);
            assert!(sizes[..full].iter().all(|&n| n == BATCH_ROWS), "{sizes:?}");
            for (i, &(line, id, op)) in rows.iter().enumerate() {
                let n = i as u64 + 1;
                assert_eq!(line, n + u64::from(header));
                assert_eq!(id as u64, line);
                let expected = if n.is_multiple_of(3) {
                    ChangeOp::Delete
                } else {
                    ChangeOp::Update
                };
                assert_eq!(op, expected, "line {line}");
            }
        }
    }

    #[test]
    fn the_first_bad_row_of_a_change_file_is_reported_whichever_batch_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let bad_op = (150_000, "X,150000,n");
        let bad_id = (190_000, "U,abc,n");
        let other_layout = (170_000, "U,2024-03-01,170000,n");
        let stray_quote = (120_000, "U,120000,\"n\"x");
        // An unknown Op, another layout or a stray quote is found as its row is read; a value
        // that does not convert, when its batch is made (every BATCH_ROWS rows, and at the end).
        let id_before_op = (140_000, "U,abc,n");
        let id_in_first_batch = (60_000, "U,abc,n");
        let id_in_last_batch = (199_000, "U,abc,n");
        for (bad, line, says) in [
            (vec![bad_id, bad_op], 150_000, "is not an operation"),
            (vec![id_before_op, bad_op], 140_000, "cannot parse `abc`"),
            (
                vec![id_in_first_batch, bad_op],
                60_000,
                "cannot parse `abc`",
            ),
            (vec![id_in_last_batch], 199_000, "cannot parse `abc`"),
            (
                vec![id_before_op, stray_quote],
                120_000,
                "text after a closing quote",
            ),
            (vec![bad_id, other_layout], 170_000, "a layout that differs"),
            (vec![bad_id], 190_000, "cannot parse `abc`"),
            (
                vec![bad_id, bad_op, stray_quote],
                120_000,
                "text after a closing quote",
            ),
        ] {
            let err = read(&change_file(dir.path(), 200_000, false, &bad)).unwrap_err();
            match &err {
                Error::BadRow {
                    line: at, reason, ..
                } => {
                    assert_eq!(*at, line, "{err}");
                    assert!(reason.contains(says), "{err}");
                }
                other => panic!("not a bad row: {other}"),
            }
        }
        // the first data row sets the layout: when it has another field count, the error does
        // not mention a layout that differs
        let err = read(&change_file(dir.path(), 10, false, &[(1, "U,1")])).unwrap_err();
        let Error::BadRow { line, reason, .. } = &err else {
            panic!("not a bad row: {err}");
        };
        assert_eq!(*line, 1);
        assert!(reason.contains("found 2 fields"), "{err}");
        assert!(!reason.contains("differs"), "{err}");
    }

    #[test]
    fn parses_dms_op_codes() {
        assert_eq!(op_code("U"), Some(ChangeOp::Update));
        assert_eq!(op_code(" d"), Some(ChangeOp::Delete));
        assert_eq!(op_code("x"), None);
    }

    #[test]
    fn works_out_the_csv_layout_from_the_field_count() {
        let l = |op, timestamp, first_data| {
            Some(CsvLayout {
                op,
                timestamp,
                first_data,
            })
        };
        // change files: Op first, then the timestamp when configured
        assert_eq!(
            csv_layout(4, 3, false, b"U", FileKind::Change),
            l(Some(0), None, 1)
        );
        assert_eq!(
            csv_layout(5, 3, true, b"D", FileKind::Change),
            l(Some(0), Some(1), 2)
        );
        assert_eq!(csv_layout(3, 3, false, b"1", FileKind::Change), None);
        // full-load files: Op optional
        assert_eq!(
            csv_layout(3, 3, false, b"1", FileKind::Load),
            l(None, None, 0)
        );
        assert_eq!(
            csv_layout(4, 3, false, b"I", FileKind::Load),
            l(Some(0), None, 1)
        );
        assert_eq!(
            csv_layout(4, 3, true, b"2020-01-01 00:00:00", FileKind::Load),
            l(None, Some(0), 1)
        );
        assert_eq!(csv_layout(7, 3, true, b"I", FileKind::Load), None);
    }
}
