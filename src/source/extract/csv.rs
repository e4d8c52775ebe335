//! CSV extracts: the `csv` crate splits records (RFC 4180 quoting, checked against the strict
//! rule of [`strict`](super::strict)) on one thread while one worker per core validates, casts
//! and hashes chunks of them.
//!
//! Field counts are checked here, not by the parser: a row with too many or too few fields is a
//! bad row naming its line (arrow-csv pads short rows ambiguously; see arrow-rs #10577/#10578).

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use csv::ByteRecord;
use deltalake::arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, PrimitiveBuilder, RecordBatch,
    StringBuilder,
};
use deltalake::arrow::compute::kernels::cast_utils::Parser;

use super::strict::CsvFile;
use super::{
    drain_in_order, drop_rows, first_bad_row, join_workers, InputFile, ReadBudget, RowErrors,
    StopOnPanic, Window, WorkerResult,
};
use crate::config::{OnError, SourceOptions, TableSpec};
use crate::core::batch::{HashedBatch, BATCH_ROWS};
use crate::core::schema::{payload_schema, ColumnType};
use crate::error::{Error, Result};
use crate::report::progress::Progress;
use crate::source::cast::cast_column;
use crate::source::{hash_batch, invalid_cells};

/// The records of a chunk (by index, ascending) that break the quoting rule, and why.
type Quoting = Vec<(usize, &'static str)>;

/// Most field bytes in one chunk of records: with at most three chunks per worker in flight,
/// the reader holds a few tens of MiB whatever the row width.
const CHUNK_BYTES: usize = 4 << 20;

/// Memory of one chunk in flight, counted against the [`ReadBudget`]: its records (the field
/// bytes and a bound per field), the batch parsed from them with its digests, both held
/// while it is parsed.
const CHUNK_MEMORY_BYTES: u64 = 3 * CHUNK_BYTES as u64;

/// Bytes read from the start of a CSV file to estimate its rows ([`estimate_rows`]).
const ROW_SAMPLE_BYTES: usize = 1 << 20;

/// Estimated lines of a CSV file of `size` bytes: the size over the mean length of the lines
/// in its first MiB (a sample without a line break counts as one line).
///
/// # Errors
/// [`Error::Input`] when the file cannot be opened or read.
pub(super) fn estimate_rows(path: &std::path::Path, size: u64) -> Result<u64> {
    use std::io::Read;
    let input_err = |e: std::io::Error| Error::Input {
        path: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
    };
    let mut sample = Vec::with_capacity(ROW_SAMPLE_BYTES);
    File::open(path)
        .map_err(input_err)?
        .take(ROW_SAMPLE_BYTES as u64)
        .read_to_end(&mut sample)
        .map_err(input_err)?;
    if sample.is_empty() {
        return Ok(0);
    }
    let lines = sample.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
    Ok((size as u128 * lines as u128).div_ceil(sample.len() as u128) as u64)
}

/// Reads one CSV file: this thread's helper splits records, workers validate, cast and hash
/// chunks of them, and the calling thread hands the batches to `sink`. Returns the number of
/// data rows read (bad ones included).
///
/// Batches reach `sink` in file order (chunks are numbered as split), and the splitter stays
/// at most `3 * workers` chunks ahead of the last one handed over, and at most as many as
/// `budget` holds ([`CHUNK_MEMORY_BYTES`] each, at least 2): `workers` is the budget's
/// threads, or fewer when fewer chunks fit.
///
/// Under `on_error: fail` the reported error is the first bad row in file order: a worker that
/// hits one stops the reader, and the chunks before it (all taken earlier from the queue) are
/// still finished, so the earliest error among them is the file's first (or the sink's, when it
/// failed on an earlier row: a duplicate key of a streamed run).
#[allow(clippy::too_many_arguments)]
pub(crate) fn read(
    table: &TableSpec,
    source: &SourceOptions,
    file: &InputFile,
    index: usize,
    budget: ReadBudget,
    errors: &mut RowErrors,
    progress: &Progress,
    sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
) -> Result<u64> {
    let mut reader = CsvFile::open(source, &file.path)?;
    if source.header {
        check_header(table, file, &mut reader)?;
    } else {
        refuse_header_line(table, source, file)?;
    }
    let parser = ChunkParser {
        table,
        source,
        file_name: file.display(),
        index,
    };
    let slots = budget.slots(CHUNK_MEMORY_BYTES, 2);
    let workers = budget.threads.clamp(1, slots);
    let stop = AtomicBool::new(false);
    let stop = &stop;
    // Chunks are numbered in file order; their batches are handed to `sink` in that order.
    // Each chunk with the records (by index) that break the quoting rule, and why.
    let (chunk_tx, chunk_rx) = sync_channel::<(u64, Vec<ByteRecord>, Quoting)>(workers);
    // Parsed chunks go back to the splitter, whose records reuse their buffers (no allocation
    // per record).
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<ByteRecord>>((2 * workers + 1).min(slots));
    // Chunks split but not yet handed to `sink` (queued, parsing, or waiting for an earlier
    // one): as many as the queues and workers hold, so a slow chunk bounds the others.
    let window = &Window::new((3 * workers).min(slots) as u64);
    // The first chunk (in file order) a worker failed on.
    let failed_at = &AtomicU64::new(u64::MAX);
    let chunk_rx = Mutex::new(chunk_rx);
    let chunk_rx = &chunk_rx;
    let parser = &parser;
    std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = sync_channel::<(u64, Option<HashedBatch>)>(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let batch_tx = batch_tx.clone();
            let recycle_tx = recycle_tx.clone();
            handles.push(scope.spawn(move || -> WorkerResult {
                let _stop_on_panic = StopOnPanic(stop);
                let mut local = RowErrors::new(source.on_error);
                let mut failed = None;
                loop {
                    let next = chunk_rx.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some((seq, chunk, quoting)) = next else {
                        return (local, failed);
                    };
                    // After a worker's failure, chunks later in the file are only drained (an
                    // earlier one, taken before the failure, is still parsed: it may hold the
                    // file's first bad row); after the sink's, every chunk is.
                    let first_failed = failed_at.load(Ordering::SeqCst);
                    if seq > first_failed
                        || (first_failed == u64::MAX && stop.load(Ordering::SeqCst))
                    {
                        continue;
                    }
                    let parsed = parser.parse(&chunk, &quoting, &mut local);
                    let first_line = chunk
                        .first()
                        .and_then(|r| r.position())
                        .map_or(0, |p| p.line());
                    let _ = recycle_tx.try_send(chunk);
                    match parsed {
                        Ok(batch) => {
                            if batch_tx.send((seq, batch)).is_err() {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                        Err(e) => {
                            failed_at.fetch_min(seq, Ordering::SeqCst);
                            stop.store(true, Ordering::SeqCst);
                            let line = match &e {
                                Error::BadRow { line, .. } => *line,
                                _ => first_line,
                            };
                            failed = Some((line, e));
                        }
                    }
                }
            }));
        }
        drop((batch_tx, recycle_tx));
        let feeder = scope.spawn(move || -> Result<u64> {
            let mut rows = 0u64;
            let mut last_byte = 0u64;
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // A slow chunk holds up the ones after it: the splitter waits for it.
                window.wait_for(seq, stop);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut chunk = recycle_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BATCH_ROWS));
                let (mut filled, mut bytes) = (0, 0);
                let mut quoting = Quoting::new();
                while filled < BATCH_ROWS && bytes < CHUNK_BYTES {
                    if filled == chunk.len() {
                        chunk.push(ByteRecord::new());
                    }
                    let Some(bad) = reader.read(&mut chunk[filled])? else {
                        break;
                    };
                    if let Some(reason) = bad {
                        quoting.push((filled, reason));
                    }
                    bytes += chunk[filled].as_slice().len();
                    filled += 1;
                }
                chunk.truncate(filled);
                if chunk.is_empty() {
                    break;
                }
                rows += chunk.len() as u64;
                let byte = reader.position();
                progress.inc(byte - last_byte);
                last_byte = byte;
                if chunk_tx.send((seq, chunk, quoting)).is_err() {
                    break;
                }
                seq += 1;
            }
            Ok(rows)
        });
        let sunk = drain_in_order(batch_rx, sink, stop, window);
        let rows = feeder
            .join()
            .map_err(|_| Error::Internal("CSV reader thread panicked".into()))?;
        first_bad_row(join_workers(handles, errors, "CSV"), sunk)?;
        rows
    })
}

/// The first record's fields, trimmed, and whether they are the configured column names (in
/// order, case ignored). None for an empty file.
fn first_record_names(
    table: &TableSpec,
    reader: &mut CsvFile,
) -> Result<Option<(Vec<String>, bool)>> {
    let mut header = ByteRecord::new();
    if reader.read(&mut header)?.is_none() {
        return Ok(None);
    }
    let found: Vec<String> = header
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect();
    let same = found.len() == table.columns.len()
        && found
            .iter()
            .zip(&table.columns)
            .all(|(f, c)| f.eq_ignore_ascii_case(&c.name));
    Ok(Some((found, same)))
}

/// Under `header: false`, a first line that holds exactly the column names is a header the
/// config does not expect: loading it as a row (of an all-string table) would be silently
/// wrong, so the file is refused before anything is read.
fn refuse_header_line(table: &TableSpec, source: &SourceOptions, file: &InputFile) -> Result<()> {
    let mut reader = CsvFile::open(source, &file.path)?;
    if let Some((_, true)) = first_record_names(table, &mut reader)? {
        return Err(Error::bad_row(
            file.display(),
            1,
            None,
            "looks like a header (its fields are the column names), and the config says \
             `header: false`: set `header: true`, or remove the line",
        ));
    }
    Ok(())
}

/// A hint for a record of one field where `columns` were expected: the line splits into that
/// many fields at another common delimiter.
fn delimiter_hint(source: &SourceOptions, record: &ByteRecord, columns: usize) -> String {
    if record.len() != 1 || columns < 2 {
        return String::new();
    }
    let line = &record[0];
    [b';', b'\t', b'|', b',']
        .into_iter()
        .filter(|&d| d != source.delimiter)
        .find(|&d| line.iter().filter(|&&b| b == d).count() + 1 == columns)
        .map(|d| {
            let shown = if d == b'\t' { "\\t".to_string() } else { (d as char).to_string() };
            format!(
                "; the line has {columns} fields if split at `{shown}`: set `delimiter: \"{shown}\"` in the config"
            )
        })
        .unwrap_or_default()
}

fn check_header(table: &TableSpec, file: &InputFile, reader: &mut CsvFile) -> Result<()> {
    let Some((found, same)) = first_record_names(table, reader)? else {
        return Ok(());
    };
    let expected: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    if !same {
        return Err(Error::Input {
            path: file.path.clone(),
            reason: format!(
                "header is [{}], config expects [{}]",
                found.join(", "),
                expected.join(", ")
            ),
        });
    }
    Ok(())
}

/// Whether a CSV field is NULL: the config's `null_value`, or, without one, an empty field in a
/// non-string column.
pub(crate) fn is_null(source: &SourceOptions, field: &[u8], ty: ColumnType) -> bool {
    match &source.null_value {
        Some(nv) => field == nv.as_bytes(),
        None => field.is_empty() && ty != ColumnType::String,
    }
}

/// One column of a chunk being parsed: numbers are parsed as they are appended, with the
/// parsers Arrow's cast from text uses (so a value converts exactly as a cast would); other
/// types are kept as text and cast when the chunk is done ([`cast_column`]).
enum ColumnBuilder {
    Text(StringBuilder),
    Int(Int32Builder),
    Long(Int64Builder),
    Double(Float64Builder),
}

impl ColumnBuilder {
    fn new(ty: ColumnType, rows: usize) -> Self {
        match ty {
            ColumnType::Int => ColumnBuilder::Int(Int32Builder::with_capacity(rows)),
            ColumnType::Long => ColumnBuilder::Long(Int64Builder::with_capacity(rows)),
            ColumnType::Double => ColumnBuilder::Double(Float64Builder::with_capacity(rows)),
            _ => ColumnBuilder::Text(StringBuilder::with_capacity(rows, rows * 16)),
        }
    }

    /// Appends a value; false (and a NULL appended) when a number does not parse.
    fn append(&mut self, text: &str) -> bool {
        fn parsed<T: Parser>(builder: &mut PrimitiveBuilder<T>, text: &str) -> bool {
            let value = T::parse(text);
            builder.append_option(value);
            value.is_some()
        }
        match self {
            ColumnBuilder::Text(b) => {
                b.append_value(text);
                true
            }
            ColumnBuilder::Int(b) => parsed(b, text),
            ColumnBuilder::Long(b) => parsed(b, text),
            ColumnBuilder::Double(b) => parsed(b, text),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Text(b) => b.append_null(),
            ColumnBuilder::Int(b) => b.append_null(),
            ColumnBuilder::Long(b) => b.append_null(),
            ColumnBuilder::Double(b) => b.append_null(),
        }
    }

    /// The column as `ty`, and the rows whose text did not cast (numbers reported on
    /// [`Self::append`] already).
    fn finish(&mut self, ty: ColumnType) -> Result<(ArrayRef, Vec<usize>)> {
        Ok(match self {
            ColumnBuilder::Text(b) => return cast_column(&(Arc::new(b.finish()) as ArrayRef), ty),
            ColumnBuilder::Int(b) => (Arc::new(b.finish()), Vec::new()),
            ColumnBuilder::Long(b) => (Arc::new(b.finish()), Vec::new()),
            ColumnBuilder::Double(b) => (Arc::new(b.finish()), Vec::new()),
        })
    }
}

/// The fields of `record` as text, pushed to `fields`: the record's bytes are checked as UTF-8
/// once, and each field's ends as character boundaries (a field is valid UTF-8 exactly when
/// both hold). False, with `fields` partly filled, when a field is not valid UTF-8.
fn record_fields<'r>(record: &'r ByteRecord, fields: &mut Vec<&'r str>) -> bool {
    let Ok(text) = std::str::from_utf8(record.as_slice()) else {
        return false;
    };
    for i in 0..record.len() {
        let Some(range) = record.range(i) else {
            return false;
        };
        match text.get(range) {
            Some(field) => fields.push(field),
            None => return false,
        }
    }
    true
}

struct ChunkParser<'a> {
    table: &'a TableSpec,
    source: &'a SourceOptions,
    file_name: String,
    index: usize,
}

impl ChunkParser<'_> {
    fn bad_row(&self, line: u64, column: Option<&str>, reason: String) -> Error {
        Error::bad_row(&self.file_name, line, column, reason)
    }

    fn raw(&self, record: &ByteRecord) -> String {
        let parts: Vec<_> = record.iter().map(String::from_utf8_lossy).collect();
        parts.join(&(self.source.delimiter as char).to_string())
    }

    /// A record's values as read, NULLs empty (the raw text of a row with a bad value).
    fn raw_values(&self, record: &ByteRecord) -> String {
        let parts: Vec<_> = record
            .iter()
            .zip(&self.table.columns)
            .map(
                |(field, column)| match is_null(self.source, field, column.ty) {
                    true => "".into(),
                    false => String::from_utf8_lossy(field),
                },
            )
            .collect();
        parts.join(&(self.source.delimiter as char).to_string())
    }

    /// Validates, casts and hashes one chunk of records; bad rows go to `errors`. `quoting`
    /// names the records that break the quoting rule (checked as they were split).
    fn parse(
        &self,
        chunk: &[ByteRecord],
        quoting: &Quoting,
        errors: &mut RowErrors,
    ) -> Result<Option<HashedBatch>> {
        let columns = &self.table.columns;
        let mut builders: Vec<ColumnBuilder> = columns
            .iter()
            .map(|c| ColumnBuilder::new(c.ty, chunk.len()))
            .collect();
        let mut lines = Vec::with_capacity(chunk.len());
        // The record of each row of the batch (rows with a bad field count or bad UTF-8 have
        // none), for the text of bad values.
        let mut records = Vec::with_capacity(chunk.len());
        // (row, column index) of the first unconvertible value of each bad row
        let mut bad: Vec<(usize, usize)> = Vec::new();
        // One record's fields, checked as UTF-8 once (the buffer is reused across rows).
        let mut fields: Vec<&str> = Vec::with_capacity(columns.len());
        // Under `on_error: fail`, a record with a bad field count or bad UTF-8 ends the chunk:
        // a bad value on an earlier line, found once the columns are built, is the one reported.
        let fail = self.source.on_error == OnError::Fail;
        let mut ended = None;
        let mut quoting = quoting.iter().peekable();
        for (r, record) in chunk.iter().enumerate() {
            let line = record.position().map_or(0, |p| p.line());
            if let Some(&(_, reason)) = quoting.next_if(|(at, _)| *at == r) {
                let err = self.bad_row(line, None, reason.to_string());
                if fail {
                    ended = Some(err);
                    break;
                }
                errors.push(err, || self.raw(record))?;
                continue;
            }
            if record.len() != columns.len() {
                let reason = format!(
                    "expected {} fields, found {}{}",
                    columns.len(),
                    record.len(),
                    delimiter_hint(self.source, record, columns.len())
                );
                let err = self.bad_row(line, None, reason);
                if fail {
                    ended = Some(err);
                    break;
                }
                errors.push(err, || self.raw(record))?;
                continue;
            }
            fields.clear();
            let mut invalid = None;
            if !record_fields(record, &mut fields) {
                fields.clear();
                for (field, column) in record.iter().zip(columns) {
                    match std::str::from_utf8(field) {
                        Ok(text) => fields.push(text),
                        Err(_) => {
                            invalid = Some(column);
                            break;
                        }
                    }
                }
            }
            if let Some(column) = invalid {
                let err = self.bad_row(line, Some(&column.name), "invalid UTF-8".into());
                if fail {
                    ended = Some(err);
                    break;
                }
                errors.push(err, || self.raw(record))?;
                continue;
            }
            let row = lines.len();
            for (c, ((text, column), builder)) in
                fields.iter().zip(columns).zip(&mut builders).enumerate()
            {
                if is_null(self.source, text.as_bytes(), column.ty) {
                    builder.append_null();
                } else if !builder.append(text) {
                    bad.push((row, c));
                }
            }
            lines.push(line);
            records.push(r);
        }
        let mut typed = Vec::with_capacity(columns.len());
        for (c, (builder, column)) in builders.iter_mut().zip(columns).enumerate() {
            let (array, bad_rows) = builder.finish(column.ty)?;
            bad.extend(bad_rows.into_iter().map(|r| (r, c)));
            typed.push(array);
        }
        let invalid = invalid_cells(self.table, &typed, &bad);
        bad.extend(invalid.keys());
        let schema = payload_schema(&self.table.typed_columns());
        let mut batch = RecordBatch::try_new(schema, typed)?;
        if !bad.is_empty() {
            bad.sort_unstable();
            bad.dedup_by_key(|(row, _)| *row);
            let mut keep = vec![true; batch.num_rows()];
            for &(row, c) in &bad {
                let record = &chunk[records[row]];
                let value = String::from_utf8_lossy(&record[c]);
                let reason = match invalid.get(&(row, c)) {
                    Some(reason) => reason.to_string(),
                    None if lines[row] == 1 && !self.source.header => format!(
                        "cannot parse `{value}` as {} (is line 1 a header? A table config \
                         reads one with `header: true`; a change file's header must name the \
                         configured columns)",
                        columns[c].ty
                    ),
                    None => format!("cannot parse `{value}` as {}", columns[c].ty),
                };
                let err = self.bad_row(lines[row], Some(&columns[c].name), reason);
                errors.push(err, || self.raw_values(record))?;
                keep[row] = false;
            }
            (batch, lines) = drop_rows(&batch, lines, keep)?;
        }
        if let Some(err) = ended {
            return Err(err);
        }
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        hash_batch(self.table, batch, self.index, lines).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{Array, StringArray};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Checking the record's bytes once and the fields' ends as character boundaries
        /// accepts exactly the records whose every field is valid UTF-8 (a multi-byte character
        /// split between two fields is valid in the record's bytes, not in either field).
        #[test]
        fn record_fields_accepts_exactly_records_of_valid_fields(
            fields in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![Just(b'a'), Just(0xC3u8), Just(0xA9u8), Just(0xE2u8), Just(0x82u8), Just(0xACu8)],
                    0..6,
                ),
                0..5,
            )
        ) {
            let record = ByteRecord::from(fields.clone());
            let mut got = Vec::new();
            let accepted = record_fields(&record, &mut got);
            let each: Option<Vec<&str>> =
                fields.iter().map(|f| std::str::from_utf8(f).ok()).collect();
            prop_assert_eq!(accepted, each.is_some());
            if let Some(each) = each {
                prop_assert_eq!(got, each);
            }
        }
    }

    #[test]
    fn record_fields_refuses_a_character_split_between_fields() {
        let record = ByteRecord::from(vec![&b"caf\xC3"[..], &b"\xA9"[..]]);
        assert!(std::str::from_utf8(record.as_slice()).is_ok());
        assert!(!record_fields(&record, &mut Vec::new()));
    }

    /// Texts numbers are written as, or misspelt as.
    const SAMPLES: &[&str] = &[
        "0",
        "-0",
        "+1",
        "1.5",
        "-2.25e-3",
        "1e308",
        "1e309",
        "-1e309",
        ".5",
        "5.",
        "1_000",
        "0x10",
        " 1",
        "1 ",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "infinity",
        "2147483647",
        "2147483648",
        "-2147483649",
        "9223372036854775807",
        "9223372036854775808",
        "12abc",
        "",
        "-",
        "1e",
        "00042",
        "3.000000000000000000001",
    ];

    proptest! {
        #[test]
        fn numbers_parse_as_arrows_cast_from_text_would(
            picks in proptest::collection::vec(0..SAMPLES.len(), 0..40),
            ty in prop_oneof![Just(ColumnType::Int), Just(ColumnType::Long), Just(ColumnType::Double)],
        ) {
            let texts: Vec<&str> = picks.iter().map(|&i| SAMPLES[i]).collect();
            let mut builder = ColumnBuilder::new(ty, texts.len());
            let mut bad = Vec::new();
            for (row, text) in texts.iter().enumerate() {
                if !builder.append(text) {
                    bad.push(row);
                }
            }
            let (array, later) = builder.finish(ty).unwrap();
            bad.extend(later);
            let text: ArrayRef = Arc::new(StringArray::from(texts.clone()));
            let (expected, expected_bad) = cast_column(&text, ty).unwrap();
            prop_assert_eq!(array.to_data(), expected.to_data());
            prop_assert_eq!(bad, expected_bad);
        }
    }

    #[test]
    fn text_columns_are_cast_when_the_chunk_is_done() {
        let mut builder = ColumnBuilder::new(ColumnType::Date, 3);
        assert!(builder.append("2024-01-31"));
        builder.append_null();
        assert!(builder.append("2024-13-01"), "text is checked when cast");
        let (array, bad) = builder.finish(ColumnType::Date).unwrap();
        assert_eq!(array.data_type(), &ColumnType::Date.arrow_type());
        assert_eq!((array.null_count(), bad), (2, vec![2]));
    }
}
