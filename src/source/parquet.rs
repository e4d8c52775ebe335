//! Parquet extracts: the configured columns are picked by name and cast to their types.

use std::fs::File;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::util::display::array_value_to_string;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ProjectionMask;

use super::cast::cast_column;
use super::{drop_rows, hash_batch, HashedBatch, InputFile, RowErrors, BATCH_ROWS};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::schema::payload_schema;

/// Opens a Parquet file for reading in batches of [`BATCH_ROWS`] rows.
///
/// # Errors
/// [`Error::Input`] when the file cannot be opened; Parquet errors for a file that is not one.
pub(super) fn open(path: &std::path::Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let handle = File::open(path).map_err(|e| Error::Input {
        path: path.to_path_buf(),
        reason: format!("cannot open: {e}"),
    })?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(handle)?.with_batch_size(BATCH_ROWS))
}

/// The position of a column in a file schema, by name, ignoring ASCII case.
pub(super) fn column_position(
    schema: &deltalake::arrow::datatypes::Schema,
    name: &str,
) -> Option<usize> {
    schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))
}

/// Reads one Parquet file. Rows are numbered from 1 in file order for error messages.
pub(super) fn read(
    config: &TableConfig,
    file: &InputFile,
    index: usize,
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
    let reader = builder.with_projection(mask).build()?;
    // The projected batch keeps file order; map each config column to its place in it.
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    let order: Vec<usize> = positions
        .iter()
        .map(|p| sorted.binary_search(p).unwrap_or(0))
        .collect();
    let schema = payload_schema(&config.typed_columns());
    let mut row_offset = 0u64;
    for raw in reader {
        let raw = raw?;
        let n = raw.num_rows();
        let mut typed = Vec::with_capacity(order.len());
        let mut bad: Vec<(usize, usize)> = Vec::new();
        for (c, &src) in order.iter().enumerate() {
            let (array, rows) = cast_column(raw.column(src), config.columns[c].ty)?;
            bad.extend(rows.into_iter().map(|r| (r, c)));
            typed.push(array);
        }
        let mut lines: Vec<u64> = (1..=n as u64).map(|i| row_offset + i).collect();
        let mut batch = RecordBatch::try_new(schema.clone(), typed)?;
        if !bad.is_empty() {
            bad.sort_unstable();
            bad.dedup_by_key(|(row, _)| *row);
            let mut keep = vec![true; n];
            for &(row, c) in &bad {
                let source = raw.column(order[c]);
                let value = array_value_to_string(source, row).unwrap_or_default();
                let err = Error::bad_row(
                    file.display(),
                    lines[row],
                    Some(&config.columns[c].name),
                    format!("cannot convert `{value}` to {}", config.columns[c].ty),
                );
                let raw_row = || {
                    order
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
        row_offset += n as u64;
        if batch.num_rows() > 0 {
            sink(hash_batch(config, batch, index, lines)?)?;
        }
    }
    progress.inc(file.size);
    Ok(row_offset)
}
