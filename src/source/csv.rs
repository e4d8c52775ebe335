//! CSV extracts: the `csv` crate splits records (RFC 4180 quoting) on one thread while one
//! worker per core validates, casts and hashes chunks of them.
//!
//! Field counts are checked here, not by the parser: a row with too many or too few fields is a
//! bad row naming its line (arrow-csv pads short rows ambiguously; see arrow-rs #10577/#10578).

use std::fs::File;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use csv::ByteRecord;
use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray, StringBuilder};

use super::cast::cast_column;
use super::{
    drain_in_order, drop_rows, first_bad_row, hash_batch, join_workers, HashedBatch, InputFile,
    RowErrors, Window, WorkerResult, BATCH_ROWS,
};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::schema::{payload_schema, ColumnType};

/// Most field bytes in one chunk of records: with at most two chunks per worker in flight,
/// the reader holds a few tens of MiB whatever the row width.
const CHUNK_BYTES: usize = 4 << 20;

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

/// Opens a CSV file with the config's delimiter and quote; records of any length are returned
/// (their field count is checked by the caller, which can name the line).
///
/// # Errors
/// [`Error::Input`] when the file cannot be opened.
pub(super) fn open(
    config: &TableConfig,
    path: &std::path::Path,
) -> Result<csv::Reader<BufReader<File>>> {
    let handle = File::open(path).map_err(|e| Error::Input {
        path: path.to_path_buf(),
        reason: format!("cannot open: {e}"),
    })?;
    Ok(csv::ReaderBuilder::new()
        .delimiter(config.delimiter)
        .quote(config.quote)
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, handle)))
}

/// Reads one CSV file: this thread's helper splits records, `workers` threads validate, cast and
/// hash chunks of them, and the calling thread hands the batches to `sink`. Returns the number
/// of data rows read (bad ones included).
///
/// Batches reach `sink` in file order (chunks are numbered as split), and the splitter stays
/// at most `3 * workers` chunks ahead of the last one handed over.
///
/// Under `on_error: fail` the reported error is the first bad row in file order: a worker that
/// hits one stops the reader, and the chunks before it (all taken earlier from the queue) are
/// still finished, so the earliest error among them is the file's first (or the sink's, when it
/// failed on an earlier row: a duplicate key of a streamed run).
pub(super) fn read(
    config: &TableConfig,
    file: &InputFile,
    index: usize,
    errors: &mut RowErrors,
    progress: &Progress,
    sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
) -> Result<u64> {
    let mut reader = open(config, &file.path)?;
    if config.header {
        check_header(config, file, &mut reader)?;
    }
    let parser = ChunkParser {
        config,
        file_name: file.display(),
        index,
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let stop = AtomicBool::new(false);
    let stop = &stop;
    // Chunks are numbered in file order; their batches are handed to `sink` in that order.
    let (chunk_tx, chunk_rx) = sync_channel::<(u64, Vec<ByteRecord>)>(workers);
    // Parsed chunks go back to the splitter, whose records reuse their buffers (no allocation
    // per record).
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<ByteRecord>>(2 * workers + 1);
    // Chunks split but not yet handed to `sink` (queued, parsing, or waiting for an earlier
    // one): as many as the queues and workers hold, so a slow chunk bounds the others.
    let window = &Window::new(3 * workers as u64);
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
                let mut local = RowErrors::new(config.on_error);
                let mut failed = None;
                loop {
                    let next = chunk_rx.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some((seq, chunk)) = next else {
                        return (local, failed);
                    };
                    // After a failure, queued chunks (all later in the file) are only drained.
                    if stop.load(Ordering::SeqCst) {
                        continue;
                    }
                    let parsed = parser.parse(&chunk, &mut local);
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
                let mut chunk = recycle_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BATCH_ROWS));
                let (mut filled, mut bytes) = (0, 0);
                while filled < BATCH_ROWS && bytes < CHUNK_BYTES {
                    if filled == chunk.len() {
                        chunk.push(ByteRecord::new());
                    }
                    if !reader.read_byte_record(&mut chunk[filled])? {
                        break;
                    }
                    bytes += chunk[filled].as_slice().len();
                    filled += 1;
                }
                chunk.truncate(filled);
                if chunk.is_empty() {
                    break;
                }
                rows += chunk.len() as u64;
                let byte = reader.position().byte();
                progress.inc(byte - last_byte);
                last_byte = byte;
                if chunk_tx.send((seq, chunk)).is_err() {
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

fn check_header(
    config: &TableConfig,
    file: &InputFile,
    reader: &mut csv::Reader<BufReader<File>>,
) -> Result<()> {
    let mut header = ByteRecord::new();
    if !reader.read_byte_record(&mut header)? {
        return Ok(());
    }
    let found: Vec<String> = header
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect();
    let expected: Vec<&str> = config.columns.iter().map(|c| c.name.as_str()).collect();
    let same = found.len() == expected.len()
        && found
            .iter()
            .zip(&expected)
            .all(|(f, e)| f.eq_ignore_ascii_case(e));
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
pub(super) fn is_null(config: &TableConfig, field: &[u8], ty: ColumnType) -> bool {
    match &config.null_value {
        Some(nv) => field == nv.as_bytes(),
        None => field.is_empty() && ty != ColumnType::String,
    }
}

struct ChunkParser<'a> {
    config: &'a TableConfig,
    file_name: String,
    index: usize,
}

impl ChunkParser<'_> {
    fn bad_row(&self, line: u64, column: Option<&str>, reason: String) -> Error {
        Error::bad_row(&self.file_name, line, column, reason)
    }

    fn raw(&self, record: &ByteRecord) -> String {
        let parts: Vec<_> = record.iter().map(String::from_utf8_lossy).collect();
        parts.join(&(self.config.delimiter as char).to_string())
    }

    /// Validates, casts and hashes one chunk of records; bad rows go to `errors`.
    fn parse(&self, chunk: &[ByteRecord], errors: &mut RowErrors) -> Result<Option<HashedBatch>> {
        let columns = &self.config.columns;
        let mut builders: Vec<StringBuilder> = columns
            .iter()
            .map(|_| StringBuilder::with_capacity(chunk.len(), chunk.len() * 16))
            .collect();
        let mut lines = Vec::with_capacity(chunk.len());
        // One record's fields, each checked as UTF-8 once (the buffer is reused across rows).
        let mut fields: Vec<&str> = Vec::with_capacity(columns.len());
        for record in chunk {
            let line = record.position().map_or(0, |p| p.line());
            if record.len() != columns.len() {
                let reason = format!("expected {} fields, found {}", columns.len(), record.len());
                errors.push(self.bad_row(line, None, reason), || self.raw(record))?;
                continue;
            }
            fields.clear();
            let mut invalid = None;
            for (field, column) in record.iter().zip(columns) {
                match std::str::from_utf8(field) {
                    Ok(text) => fields.push(text),
                    Err(_) => {
                        invalid = Some(column);
                        break;
                    }
                }
            }
            if let Some(column) = invalid {
                let err = self.bad_row(line, Some(&column.name), "invalid UTF-8".into());
                errors.push(err, || self.raw(record))?;
                continue;
            }
            for ((text, column), builder) in fields.iter().zip(columns).zip(&mut builders) {
                if is_null(self.config, text.as_bytes(), column.ty) {
                    builder.append_null();
                } else {
                    builder.append_value(text);
                }
            }
            lines.push(line);
        }
        let raw_columns: Vec<ArrayRef> = builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let mut typed = Vec::with_capacity(columns.len());
        // (row, column index) of the first unconvertible value of each bad row
        let mut bad: Vec<(usize, usize)> = Vec::new();
        for (c, (raw, column)) in raw_columns.iter().zip(columns).enumerate() {
            let (array, bad_rows) = cast_column(raw, column.ty)?;
            bad.extend(bad_rows.into_iter().map(|r| (r, c)));
            typed.push(array);
        }
        let schema = payload_schema(&self.config.typed_columns());
        let mut batch = RecordBatch::try_new(schema, typed)?;
        if !bad.is_empty() {
            bad.sort_unstable();
            bad.dedup_by_key(|(row, _)| *row);
            let mut keep = vec![true; batch.num_rows()];
            for &(row, c) in &bad {
                let value = raw_columns[c]
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .map(|a| a.value(row).to_string())
                    .unwrap_or_default();
                let reason = format!("cannot parse `{value}` as {}", columns[c].ty);
                let err = self.bad_row(lines[row], Some(&columns[c].name), reason);
                let raw = || {
                    raw_columns
                        .iter()
                        .map(|a| {
                            let a = a.as_any().downcast_ref::<StringArray>();
                            a.map(|a| a.value(row).to_string()).unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                        .join(&(self.config.delimiter as char).to_string())
                };
                errors.push(err, raw)?;
                keep[row] = false;
            }
            (batch, lines) = drop_rows(&batch, lines, keep)?;
        }
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        hash_batch(self.config, batch, self.index, lines).map(Some)
    }
}
