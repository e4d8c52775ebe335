//! Parquet extracts: the configured columns are picked by name and cast to their types; row
//! groups are decoded in parallel.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::util::display::array_value_to_string;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder,
};
use deltalake::parquet::arrow::ProjectionMask;

use super::{
    drain_into, drop_rows, first_bad_row, join_workers, InputFile, ReadBudget, RowErrors,
    WorkerResult,
};
use crate::config::{SourceOptions, TableSpec};
use crate::core::batch::{HashedBatch, BATCH_ROWS};
use crate::core::schema::payload_schema;
use crate::error::{Error, Result};
use crate::report::progress::Progress;
use crate::source::cast::cast_column;
use crate::source::{hash_batch, invalid_cells};

/// Opens a Parquet file for reading in batches of [`BATCH_ROWS`] rows.
///
/// # Errors
/// [`Error::Input`] when the file cannot be opened; Parquet errors for a file that is not one.
pub(crate) fn open(path: &std::path::Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    Ok(ParquetRecordBatchReaderBuilder::try_new(open_file(path)?)?.with_batch_size(BATCH_ROWS))
}

/// Opens a file for reading, naming it in the error.
fn open_file(path: &std::path::Path) -> Result<File> {
    File::open(path).map_err(|e| Error::Input {
        path: path.to_path_buf(),
        reason: format!("cannot open: {e}"),
    })
}

/// The position of a column in a file schema, by name, ignoring ASCII case.
pub(crate) fn column_position(
    schema: &deltalake::arrow::datatypes::Schema,
    name: &str,
) -> Option<usize> {
    schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))
}

/// Reads one Parquet file: `workers` threads (one per thread of `budget`, fewer where two
/// decoded batches each do not fit it) decode, cast and hash one row group
/// at a time, and the calling thread hands the batches to `sink`. Rows are numbered from 1 in
/// file order for error messages. Returns the number of rows read (bad ones included).
///
/// Under `on_error: fail` the reported error is the first bad row in file order: a worker that
/// hits one stops the others from taking further row groups, and the row groups before it (all
/// taken earlier) are still finished, so the earliest error among them is the file's first.
#[allow(clippy::too_many_arguments)]
pub(super) fn read(
    config: &TableSpec,
    source: &SourceOptions,
    file: &InputFile,
    index: usize,
    budget: ReadBudget,
    errors: &mut RowErrors,
    progress: &Progress,
    sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
) -> Result<u64> {
    let input_err = |reason: String| Error::Input {
        path: file.path.clone(),
        reason,
    };
    let builder = open(&file.path)?;
    let file_schema = builder.schema().clone();
    let mut positions = Vec::with_capacity(config.columns.len());
    for column in &config.columns {
        let pos = column_position(&file_schema, &column.name)
            .ok_or_else(|| input_err(format!("has no column `{}`", column.name)))?;
        positions.push(pos);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), positions.clone());
    let metadata = ArrowReaderMetadata::try_new(builder.metadata().clone(), Default::default())?;
    // (row group, its first row's 0-based position in the file, its compressed bytes)
    let mut groups = Vec::new();
    let mut first_row = 0u64;
    let mut decoded_bytes = 0u64;
    for (g, rg) in builder.metadata().row_groups().iter().enumerate() {
        groups.push((g, first_row, rg.compressed_size().max(0) as u64));
        first_row += rg.num_rows().max(0) as u64;
        decoded_bytes += rg.total_byte_size().max(0) as u64;
    }
    let total_rows = first_row;
    // A worker holds a decoded batch and the cast and hashed one made from it; the channel
    // holds one per worker.
    let batch_bytes = decoded_bytes / total_rows.max(1) * BATCH_ROWS as u64;
    let workers = budget.threads.clamp(1, budget.slots(2 * batch_bytes, 1));
    drop(builder);
    let converter = Converter::new(config, file, index, &positions);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (next, stop, groups, converter) = (&next, &stop, &groups, &converter);
    let (mask, metadata) = (&mask, &metadata);
    std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = sync_channel::<HashedBatch>(workers);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let batch_tx = batch_tx.clone();
                scope.spawn(move || -> WorkerResult {
                    let mut local = RowErrors::new(source.on_error);
                    while !stop.load(Ordering::SeqCst) {
                        let Some(&(group, first_row, bytes)) =
                            groups.get(next.fetch_add(1, Ordering::SeqCst))
                        else {
                            break;
                        };
                        let result = converter
                            .read_group(metadata, mask, group, first_row, &mut local, &batch_tx);
                        progress.inc(bytes);
                        match result {
                            Ok(true) => {}
                            // The calling thread stopped taking batches (its sink failed).
                            Ok(false) => stop.store(true, Ordering::SeqCst),
                            Err(e) => {
                                stop.store(true, Ordering::SeqCst);
                                let line = match &e {
                                    Error::BadRow { line, .. } => *line,
                                    _ => first_row + 1,
                                };
                                return (local, Some((line, e)));
                            }
                        }
                    }
                    (local, None)
                })
            })
            .collect();
        drop(batch_tx);
        let sunk = drain_into(batch_rx, sink, stop);
        first_bad_row(join_workers(handles, errors, "Parquet"), sunk)?;
        // The footer and page headers: the rest of the file beyond its row groups' data.
        let data: u64 = groups.iter().map(|&(_, _, bytes)| bytes).sum();
        progress.inc(file.size.saturating_sub(data));
        Ok(total_rows)
    })
}

/// Casts the configured columns of decoded batches of one file and hashes them.
struct Converter<'a> {
    config: &'a TableSpec,
    file: &'a InputFile,
    index: usize,
    /// For each configured column, its place in the projected batch (which keeps file order).
    order: Vec<usize>,
    schema: deltalake::arrow::datatypes::SchemaRef,
}

impl<'a> Converter<'a> {
    fn new(config: &'a TableSpec, file: &'a InputFile, index: usize, positions: &[usize]) -> Self {
        let mut sorted = positions.to_vec();
        sorted.sort_unstable();
        let order = positions
            .iter()
            .map(|p| sorted.binary_search(p).unwrap_or(0))
            .collect();
        Converter {
            config,
            file,
            index,
            order,
            schema: payload_schema(&config.typed_columns()),
        }
    }

    /// Decodes, casts and hashes one row group (`mask` columns), whose first row is the file's
    /// row `first_row + 1`, sending its batches to `out`; bad rows go to `errors`. Returns false
    /// when `out`'s receiver is gone.
    fn read_group(
        &self,
        metadata: &ArrowReaderMetadata,
        mask: &ProjectionMask,
        group: usize,
        first_row: u64,
        errors: &mut RowErrors,
        out: &SyncSender<HashedBatch>,
    ) -> Result<bool> {
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            open_file(&self.file.path)?,
            metadata.clone(),
        )
        .with_batch_size(BATCH_ROWS)
        .with_projection(mask.clone())
        .with_row_groups(vec![group])
        .build()?;
        let mut row_offset = first_row;
        for raw in reader {
            let raw = raw?;
            let rows = raw.num_rows() as u64;
            if let Some(batch) = self.convert(&raw, row_offset, errors)? {
                if out.send(batch).is_err() {
                    return Ok(false);
                }
            }
            row_offset += rows;
        }
        Ok(true)
    }

    /// The typed, hashed rows of `raw`, whose first row is the file's row `row_offset + 1`;
    /// values that do not convert make bad rows (into `errors`).
    fn convert(
        &self,
        raw: &RecordBatch,
        row_offset: u64,
        errors: &mut RowErrors,
    ) -> Result<Option<HashedBatch>> {
        let config = self.config;
        let n = raw.num_rows();
        let mut typed = Vec::with_capacity(self.order.len());
        let mut bad: Vec<(usize, usize)> = Vec::new();
        for (c, &src) in self.order.iter().enumerate() {
            let (array, rows) = cast_column(raw.column(src), config.columns[c].ty)?;
            bad.extend(rows.into_iter().map(|r| (r, c)));
            typed.push(array);
        }
        let invalid = invalid_cells(config, &typed, &bad);
        bad.extend(invalid.keys());
        let mut lines: Vec<u64> = (1..=n as u64).map(|i| row_offset + i).collect();
        let mut batch = RecordBatch::try_new(self.schema.clone(), typed)?;
        if !bad.is_empty() {
            bad.sort_unstable();
            bad.dedup_by_key(|(row, _)| *row);
            let mut keep = vec![true; n];
            for &(row, c) in &bad {
                let source = raw.column(self.order[c]);
                let value = array_value_to_string(source, row).unwrap_or_default();
                let reason = match invalid.get(&(row, c)) {
                    Some(reason) => reason.to_string(),
                    None => format!("cannot convert `{value}` to {}", config.columns[c].ty),
                };
                let err = Error::bad_row(
                    self.file.display(),
                    lines[row],
                    Some(&config.columns[c].name),
                    reason,
                );
                let raw_row = || {
                    self.order
                        .iter()
                        .map(|&s| array_value_to_string(raw.column(s), row).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                errors.push(err, raw_row)?;
                keep[row] = false;
            }
            (batch, lines) = drop_rows(&batch, lines, keep)?;
        }
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        hash_batch(config, batch, self.index, lines).map(Some)
    }
}
