//! The diff of one keyhash partition: duplicate keys, classification and the output rows; and of
//! one incoming batch of a run streamed past an in-memory index of the current table
//! ([`JoinContext::probe`], [`index_current`]).
//!
//! Input: the partition's incoming rows ([`incoming_schema`]: the typed payload, `keyhash`,
//! `nonkeyhash`, and the row's file index and line) and its current rows ([`current_schema`]:
//! the join columns and each row's position in the table's data files).
//! Output: the partition's I, U and N rows for the new current table and its I and U rows for
//! the history table, in the table schema, and the positions of the current rows whose key left
//! the extract, which the run reads back whole as D (history) or X (current) rows
//! ([`gone_rows`]); see the table in `classify`.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use deltalake::arrow::compute::{concat_batches, filter, filter_record_batch, not, BatchCoalescer};
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Field, Schema, SchemaRef, UInt32Type, UInt64Type,
};

use crate::config::TableConfig;
use crate::core::batch::{HashedBatch, Reject, BATCH_ROWS};
use crate::core::key::{key, DigestMap};
use crate::core::op::{Op, OpCounts};
use crate::core::schema::{hashed_schema, EFF_START_DATE, KEYHASH, NONKEYHASH, OPERATION};
use crate::error::{Error, Result};
use crate::snapshot::classify::{classify, CurrentIndex};
use crate::snapshot::probe::Probe;
use crate::source::extract::{InputFile, RowErrors};

/// Column holding the index of a row's input file (into the run's file list).
const FILE_INDEX: &str = "__tributary_file";
/// Column holding a row's 1-based line (CSV) or row (Parquet) number.
const LINE: &str = "__tributary_line";
/// Column holding a current row's data file (index into the run's
/// [`DataFiles`](crate::sink::delta::current::DataFiles)).
const CURRENT_FILE: &str = "__tributary_data_file";
/// Column holding a current row's 0-based row in its data file.
const CURRENT_ROW: &str = "__tributary_data_row";

/// Schema of current rows while partitioned: the join columns of the table schema (`keyhash`,
/// `nonkeyhash`, `eff_start_date`, in this order, as
/// [`DataFiles::scan_keys`](crate::sink::delta::current::DataFiles::scan_keys) expects) and the
/// row's position, `UInt32` data file index and row in that file.
///
/// # Errors
/// [`Error::Arrow`] when `table_schema` lacks a join column.
pub fn current_schema(table_schema: &SchemaRef) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for name in [KEYHASH, NONKEYHASH, EFF_START_DATE] {
        fields.push(table_schema.field_with_name(name)?.clone());
    }
    fields.push(Field::new(CURRENT_FILE, DataType::UInt32, false));
    fields.push(Field::new(CURRENT_ROW, DataType::UInt32, false));
    Ok(Arc::new(Schema::new(fields)))
}

/// Whole current rows of keys absent from the extract (read back by position) as output rows:
/// `operation` set to `op` (D or X) and, for D, `eff_start_date` set to `run_date`.
///
/// # Errors
/// [`Error::Arrow`] when `batch` lacks the system columns.
pub fn gone_rows(batch: RecordBatch, op: Op, run_date: i32) -> Result<RecordBatch> {
    let schema = batch.schema();
    let n = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    columns[schema.index_of(OPERATION)?] = Arc::new(StringArray::from(vec![op.code(); n]));
    if op == Op::Delete {
        columns[schema.index_of(EFF_START_DATE)?] = Arc::new(Date32Array::from(vec![run_date; n]));
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Adds scanned current rows ([`current_schema`]) to the in-memory index of a streamed run.
///
/// # Errors
/// [`Error::Arrow`] when `batch` lacks a column of [`current_schema`].
pub fn index_current(probe: &mut Probe, batch: &RecordBatch) -> Result<()> {
    let (keys, nonkeys, effs) = (
        column(batch, KEYHASH)?,
        column(batch, NONKEYHASH)?,
        column(batch, EFF_START_DATE)?,
    );
    let (files, rows) = (column(batch, CURRENT_FILE)?, column(batch, CURRENT_ROW)?);
    probe.add_current(
        keys.as_binary::<i32>(),
        nonkeys.as_binary::<i32>(),
        effs.as_primitive::<Date32Type>(),
        files.as_primitive::<UInt32Type>(),
        rows.as_primitive::<UInt32Type>(),
    );
    Ok(())
}

/// Schema of incoming rows while partitioned: payload columns, `keyhash`, `nonkeyhash`, and
/// where each row came from.
pub fn incoming_schema(config: &TableConfig) -> SchemaRef {
    hashed_schema(
        &config.table.typed_columns(),
        [
            Field::new(FILE_INDEX, DataType::UInt32, false),
            Field::new(LINE, DataType::UInt64, false),
        ],
    )
}

/// A hashed source batch as one record batch of [`incoming_schema`].
///
/// # Errors
/// Arrow errors (none expected).
pub fn incoming_batch(schema: &SchemaRef, batch: HashedBatch) -> Result<RecordBatch> {
    let rows = batch.payload.num_rows();
    let mut columns = batch.payload.columns().to_vec();
    columns.push(Arc::new(batch.keyhash));
    columns.push(Arc::new(batch.nonkeyhash));
    columns.push(Arc::new(UInt32Array::from(vec![batch.file as u32; rows])));
    columns.push(Arc::new(UInt64Array::from(batch.lines)));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// What diffing one partition produced.
#[derive(Debug, Default)]
pub struct PartitionDiff {
    /// Rows of the current table alone (N).
    pub current: Vec<RecordBatch>,
    /// Rows of both tables (I, U), written once and shared (see `sink::delta::Senders`).
    pub both: Vec<RecordBatch>,
    /// Rows per operation.
    pub counts: OpCounts,
    /// Duplicate-key rows set aside under `on_error: reject`.
    pub rejects: Vec<Reject>,
    /// Positions (data file, row) of the current rows whose key is absent from the extract:
    /// D rows of a full extract, X rows of a delta extract; read back whole by the run.
    pub gone: Vec<(u32, u32)>,
}

/// Inputs shared by every partition of a run.
pub struct JoinContext<'a> {
    /// The run's config.
    pub config: &'a TableConfig,
    /// The run's input files, in order.
    pub files: &'a [InputFile],
    /// Schema of incoming rows (payload and digests).
    pub incoming_schema: SchemaRef,
    /// Schema of both tables.
    pub table_schema: SchemaRef,
    /// Schema of the current side ([`current_schema`]).
    pub current_schema: SchemaRef,
    /// The business date, in days since the Unix epoch.
    pub run_date: i32,
}

impl JoinContext<'_> {
    /// Diffs one partition. The incoming batches are not concatenated: large ones go out to the
    /// writers as they are, runs of small ones are merged first (`coalesce`); the current
    /// side, join columns only, is concatenated.
    ///
    /// # Errors
    /// [`Error::BadRow`] for a duplicate key under `on_error: fail` (the later occurrence, in
    /// file and line order, is the bad row); Arrow errors.
    pub fn diff(
        &self,
        incoming: Vec<RecordBatch>,
        current: Vec<RecordBatch>,
    ) -> Result<PartitionDiff> {
        let current = concat_batches(&self.current_schema, &current)?;
        let incoming = coalesce(&self.incoming_schema, incoming)?;
        let (incoming, rejects) = self.drop_duplicate_keys(incoming)?;
        let in_digests = incoming
            .iter()
            .map(|b| Ok((column(b, KEYHASH)?, column(b, NONKEYHASH)?)))
            .collect::<Result<Vec<_>>>()?;
        let (cur_keys, cur_nonkeys, cur_effs) = (
            column(&current, KEYHASH)?,
            column(&current, NONKEYHASH)?,
            column(&current, EFF_START_DATE)?,
        );
        let index = CurrentIndex::build([(
            cur_keys.as_binary::<i32>(),
            cur_nonkeys.as_binary::<i32>(),
            cur_effs.as_primitive::<Date32Type>(),
        )]);
        let diff = classify(
            in_digests
                .iter()
                .map(|(k, n)| (k.as_binary::<i32>(), n.as_binary::<i32>())),
            index,
            self.config.snapshot.extract_type,
            self.run_date,
        );
        let mut out = PartitionDiff {
            counts: diff.counts,
            rejects,
            ..PartitionDiff::default()
        };
        let payload_width = self.table_schema.fields().len() - 4;
        for ((batch, (keys, nonkeys)), ops) in incoming.iter().zip(in_digests).zip(diff.incoming) {
            let payload = &batch.columns()[..payload_width];
            self.output(payload, keys, nonkeys, &ops, &mut out)?;
        }
        if !diff.gone.is_empty() {
            let files = column(&current, CURRENT_FILE)?;
            let rows = column(&current, CURRENT_ROW)?;
            let (files, rows) = (
                files.as_primitive::<UInt32Type>(),
                rows.as_primitive::<UInt32Type>(),
            );
            out.gone = diff
                .gone
                .iter()
                .map(|&i| (files.value(i as usize), rows.value(i as usize)))
                .collect();
        }
        Ok(out)
    }

    /// Adds classified incoming rows (payload columns, digests, and each row's operation and
    /// `eff_start_date`) to `out` in the table schema: the changed ones (I, U) to both tables,
    /// the others (N) to the current table alone.
    fn output(
        &self,
        payload: &[ArrayRef],
        keys: ArrayRef,
        nonkeys: ArrayRef,
        ops: &[(Op, i32)],
        out: &mut PartitionDiff,
    ) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = payload.to_vec();
        columns.push(keys);
        columns.push(nonkeys);
        columns.push(Arc::new(StringArray::from_iter_values(
            ops.iter().map(|(op, _)| op.code()),
        )));
        columns.push(Arc::new(Date32Array::from_iter_values(
            ops.iter().map(|(_, eff)| *eff),
        )));
        let full = RecordBatch::try_new(self.table_schema.clone(), columns)?;
        let changed: BooleanArray = ops.iter().map(|(op, _)| Some(op.in_history())).collect();
        match changed.true_count() {
            0 => out.current.push(full),
            n if n == full.num_rows() => out.both.push(full),
            _ => {
                out.both.push(filter_record_batch(&full, &changed)?);
                out.current
                    .push(filter_record_batch(&full, &not(&changed)?)?);
            }
        }
        Ok(())
    }

    /// Diffs one incoming batch, read in file and line order, against the in-memory index of
    /// the current table: its rows classified, a key already supplied set aside as a
    /// duplicate (a bad row naming the first), output rows in `out` ([`Self::output`]).
    ///
    /// # Errors
    /// [`Error::BadRow`] for a duplicate key under `on_error: fail`; Arrow errors.
    pub(crate) fn probe(
        &self,
        probe: &mut Probe,
        batch: HashedBatch,
        errors: &mut RowErrors,
        out: &mut PartitionDiff,
    ) -> Result<()> {
        let file = u32::try_from(batch.file)
            .map_err(|_| Error::Internal("more than 2^32 input files".into()))?;
        let probed = probe.probe(&batch.keyhash, &batch.nonkeyhash, file, &batch.lines);
        let (mut payload, mut keys, mut nonkeys) = (batch.payload, batch.keyhash, batch.nonkeyhash);
        if !probed.duplicates.is_empty() {
            let mut keep = vec![true; payload.num_rows()];
            for d in &probed.duplicates {
                let at = (file, batch.lines[d.row]);
                self.duplicate(errors, at, (d.first_file, d.first_line), &payload, d.row)?;
                keep[d.row] = false;
            }
            let keep = BooleanArray::from(keep);
            payload = filter_record_batch(&payload, &keep)?;
            keys = filter(&keys, &keep)?.as_binary::<i32>().clone();
            nonkeys = filter(&nonkeys, &keep)?.as_binary::<i32>().clone();
        }
        self.output(
            payload.columns(),
            Arc::new(keys),
            Arc::new(nonkeys),
            &probed.ops,
            out,
        )
    }

    /// Records the duplicate key of row `row` of `batch` (payload first), at (file index,
    /// line) `at`, first seen at `first`: a bad row failing the run or set aside as a reject.
    ///
    /// # Errors
    /// [`Error::BadRow`] under `on_error: fail`.
    fn duplicate(
        &self,
        errors: &mut RowErrors,
        (file, line): (u32, u64),
        (first_file, first_line): (u32, u64),
        batch: &RecordBatch,
        row: usize,
    ) -> Result<()> {
        let err = Error::bad_row(
            self.files[file as usize].display(),
            line,
            None,
            format!(
                "duplicate key: first seen at {}, line {first_line}",
                self.files[first_file as usize].display()
            ),
        );
        let payload_width = self.table_schema.fields().len() - 4;
        errors.push(err, || {
            row_text(batch, payload_width, row, self.config.source.delimiter)
        })
    }

    /// Keeps the first row of each key in file and line order; the others are bad rows
    /// ("duplicate key"), failing the run or set aside as rejects.
    fn drop_duplicate_keys(
        &self,
        batches: Vec<RecordBatch>,
    ) -> Result<(Vec<RecordBatch>, Vec<Reject>)> {
        let mut keys = Vec::with_capacity(batches.len());
        let mut places = Vec::with_capacity(batches.len());
        for batch in &batches {
            keys.push(column(batch, KEYHASH)?.as_binary::<i32>().clone());
            places.push((
                column(batch, FILE_INDEX)?
                    .as_primitive::<UInt32Type>()
                    .clone(),
                column(batch, LINE)?.as_primitive::<UInt64Type>().clone(),
            ));
        }
        // A row is (batch, row in batch); its place is (file index, line).
        let place = |(b, row): (usize, usize)| (places[b].0.value(row), places[b].1.value(row));
        let mut first: DigestMap<(usize, usize)> = DigestMap::default();
        first.reserve(keys.iter().map(Array::len).sum());
        // Rows that are not their key's first occurrence.
        let mut duplicates: Vec<(usize, usize)> = Vec::new();
        for (b, batch_keys) in keys.iter().enumerate() {
            for row in 0..batch_keys.len() {
                let at = (b, row);
                match first.get_mut(&key(batch_keys.value(row))) {
                    None => {
                        first.insert(key(batch_keys.value(row)), at);
                    }
                    // Batches of one file can arrive out of order: the earlier place wins.
                    Some(seen) if place(at) < place(*seen) => {
                        duplicates.push(*seen);
                        *seen = at;
                    }
                    Some(_) => duplicates.push(at),
                }
            }
        }
        if duplicates.is_empty() {
            return Ok((batches, Vec::new()));
        }
        let winner = |(b, row): (usize, usize)| first[&key(keys[b].value(row))];
        duplicates.sort_by_key(|at| place(*at));
        let mut errors = RowErrors::new(self.config.source.on_error);
        let mut keep: Vec<Vec<bool>> = batches.iter().map(|b| vec![true; b.num_rows()]).collect();
        for at in duplicates {
            self.duplicate(
                &mut errors,
                place(at),
                place(winner(at)),
                &batches[at.0],
                at.1,
            )?;
            keep[at.0][at.1] = false;
        }
        let kept = batches
            .iter()
            .zip(keep)
            .map(|(batch, keep)| {
                if keep.iter().all(|&k| k) {
                    Ok(batch.clone())
                } else {
                    Ok(filter_record_batch(batch, &BooleanArray::from(keep))?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((kept, errors.rejects))
    }
}

/// Merges runs of small batches (under an eighth of [`BATCH_ROWS`]: the pieces a batch leaves in
/// each of many partitions) into batches of up to [`BATCH_ROWS`] rows (arrow's
/// `BatchCoalescer`); a larger batch arriving with no small rows pending passes through
/// uncopied. The writers downstream pay per batch.
fn coalesce(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    if batches.len() < 2 {
        return Ok(batches);
    }
    let mut coalescer = BatchCoalescer::new(schema.clone(), BATCH_ROWS)
        .with_biggest_coalesce_batch_size(Some(BATCH_ROWS / 8));
    let mut out = Vec::new();
    for batch in batches {
        coalescer.push_batch(batch)?;
        while let Some(done) = coalescer.next_completed_batch() {
            out.push(done);
        }
    }
    coalescer.finish_buffered_batch()?;
    while let Some(done) = coalescer.next_completed_batch() {
        out.push(done);
    }
    Ok(out)
}

/// A column of `batch` by name.
fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| Error::Internal(format!("no column {name}")))
}

/// A row's first `width` values as text, joined by `delimiter` (for rejects).
fn row_text(batch: &RecordBatch, width: usize, row: usize, delimiter: u8) -> String {
    batch.columns()[..width]
        .iter()
        .map(|c| deltalake::arrow::util::display::array_value_to_string(c, row).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(&(delimiter as char).to_string())
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::Int64Array;
    use deltalake::arrow::datatypes::Int64Type;

    use super::*;

    fn batch(schema: &SchemaRef, from: i64, rows: i64) -> RecordBatch {
        let values = Int64Array::from_iter_values(from..from + rows);
        RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap()
    }

    #[test]
    fn coalesce_merges_small_pieces_in_order_and_passes_large_batches_through() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let big = BATCH_ROWS as i64 / 4;
        let mut batches = Vec::new();
        let mut next = 0;
        for rows in [big, 10, 20, 30, 5] {
            batches.push(batch(&schema, next, rows));
            next += rows;
        }
        let big_buffer = batches[0].column(0).to_data().buffers()[0].as_ptr();
        let out = coalesce(&schema, batches).unwrap();
        let sizes: Vec<usize> = out.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, vec![big as usize, 65]);
        // The large batch is the same memory, not a copy.
        assert_eq!(out[0].column(0).to_data().buffers()[0].as_ptr(), big_buffer);
        let values: Vec<i64> = out
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(values, (0..next).collect::<Vec<_>>());
        // Many small pieces become full batches.
        let pieces: Vec<RecordBatch> = (0..100).map(|i| batch(&schema, i * 1000, 1000)).collect();
        let sizes: Vec<usize> = coalesce(&schema, pieces)
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .collect();
        assert_eq!(sizes, vec![BATCH_ROWS, 100_000 - BATCH_ROWS]);
    }
}
