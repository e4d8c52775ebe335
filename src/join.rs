//! The diff of one keyhash partition: duplicate keys, classification and the output rows.
//!
//! Input: the partition's incoming rows ([`incoming_schema`]: the typed payload, `keyhash`,
//! `nonkeyhash`, and the row's file index and line) and its current rows (the table schema).
//! Output: the partition's rows of the new current table (I, U, N and X rows) and of the
//! history table (I, U and D rows), in the table schema; see the table in `diff`.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use deltalake::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Date32Type, Field, SchemaRef, UInt32Type, UInt64Type};

use crate::config::TableConfig;
use crate::diff::{classify, key, CurrentIndex, DigestMap, Op, OpCounts};
use crate::error::{Error, Result};
use crate::schema::{hashed_schema, EFF_START_DATE, KEYHASH, NONKEYHASH, OPERATION};
use crate::source::{HashedBatch, InputFile, Reject, RowErrors};

/// Column holding the index of a row's input file (into the run's file list).
const FILE_INDEX: &str = "__tributary_file";
/// Column holding a row's 1-based line (CSV) or row (Parquet) number.
const LINE: &str = "__tributary_line";

/// Schema of incoming rows while partitioned: payload columns, `keyhash`, `nonkeyhash`, and
/// where each row came from.
pub fn incoming_schema(config: &TableConfig) -> SchemaRef {
    hashed_schema(
        &config.typed_columns(),
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
    pub current: Vec<RecordBatch>,
    pub history: Vec<RecordBatch>,
    pub counts: OpCounts,
    /// Duplicate-key rows set aside under `on_error: reject`.
    pub rejects: Vec<Reject>,
}

/// Inputs shared by every partition of a run.
pub struct JoinContext<'a> {
    pub config: &'a TableConfig,
    pub files: &'a [InputFile],
    pub incoming_schema: SchemaRef,
    pub table_schema: SchemaRef,
    /// The business date, in days since the Unix epoch.
    pub run_date: i32,
}

impl JoinContext<'_> {
    /// Diffs one partition.
    ///
    /// # Errors
    /// [`Error::BadRow`] for a duplicate key under `on_error: fail` (the later occurrence, in
    /// file and line order, is the bad row); Arrow errors.
    pub fn diff(&self, incoming: &[RecordBatch], current: &[RecordBatch]) -> Result<PartitionDiff> {
        let incoming = concat_batches(&self.incoming_schema, incoming)?;
        let current = concat_batches(&self.table_schema, current)?;
        let (incoming, rejects) = self.drop_duplicate_keys(incoming)?;
        let column = |batch: &RecordBatch, name: &str| -> Result<ArrayRef> {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("no column {name}")))
        };
        let (in_keys, in_nonkeys) = (column(&incoming, KEYHASH)?, column(&incoming, NONKEYHASH)?);
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
            [(in_keys.as_binary::<i32>(), in_nonkeys.as_binary::<i32>())],
            index,
            self.config.extract_type,
            self.run_date,
        );
        let ops = diff.incoming.into_iter().next().unwrap_or_default();

        let mut out = PartitionDiff {
            counts: diff.counts,
            rejects,
            ..PartitionDiff::default()
        };
        if incoming.num_rows() > 0 {
            let payload_width = self.table_schema.fields().len() - 4;
            let mut columns: Vec<ArrayRef> = incoming.columns()[..payload_width].to_vec();
            columns.push(in_keys);
            columns.push(in_nonkeys);
            columns.push(Arc::new(StringArray::from_iter_values(
                ops.iter().map(|(op, _)| op.code()),
            )));
            columns.push(Arc::new(Date32Array::from_iter_values(
                ops.iter().map(|(_, eff)| *eff),
            )));
            let full = RecordBatch::try_new(self.table_schema.clone(), columns)?;
            let changed: BooleanArray = ops.iter().map(|(op, _)| Some(op.in_history())).collect();
            match changed.true_count() {
                0 => {}
                n if n == full.num_rows() => out.history.push(full.clone()),
                _ => out.history.push(filter_record_batch(&full, &changed)?),
            }
            out.current.push(full);
        }
        if let (Some(op), false) = (diff.gone_op, diff.gone.is_empty()) {
            let gone = take_record_batch(&current, &UInt32Array::from(diff.gone))?;
            let n = gone.num_rows();
            let mut columns = gone.columns().to_vec();
            columns[self.table_schema.index_of(OPERATION)?] =
                Arc::new(StringArray::from(vec![op.code(); n]));
            if op == Op::Delete {
                columns[self.table_schema.index_of(EFF_START_DATE)?] =
                    Arc::new(Date32Array::from(vec![self.run_date; n]));
                out.history
                    .push(RecordBatch::try_new(self.table_schema.clone(), columns)?);
            } else {
                out.current
                    .push(RecordBatch::try_new(self.table_schema.clone(), columns)?);
            }
        }
        Ok(out)
    }

    /// Keeps the first row of each key in file and line order; the others are bad rows
    /// ("duplicate key"), failing the run or set aside as rejects.
    fn drop_duplicate_keys(&self, incoming: RecordBatch) -> Result<(RecordBatch, Vec<Reject>)> {
        let keys = incoming
            .column_by_name(KEYHASH)
            .ok_or_else(|| Error::Internal("no keyhash".into()))?
            .as_binary::<i32>()
            .clone();
        let file_of = incoming
            .column_by_name(FILE_INDEX)
            .ok_or_else(|| Error::Internal("no file index".into()))?
            .as_primitive::<UInt32Type>()
            .clone();
        let line_of = incoming
            .column_by_name(LINE)
            .ok_or_else(|| Error::Internal("no line".into()))?
            .as_primitive::<UInt64Type>()
            .clone();
        let place = |row: usize| (file_of.value(row), line_of.value(row));
        let mut first: DigestMap<usize> = DigestMap::default();
        first.reserve(keys.len());
        // Rows that are not their key's first occurrence.
        let mut duplicates: Vec<usize> = Vec::new();
        for row in 0..keys.len() {
            let k = key(keys.value(row));
            match first.get_mut(&k) {
                None => {
                    first.insert(k, row);
                }
                // Batches of one file can arrive out of order: the earlier place wins.
                Some(seen) if place(row) < place(*seen) => {
                    duplicates.push(*seen);
                    *seen = row;
                }
                Some(_) => duplicates.push(row),
            }
        }
        if duplicates.is_empty() {
            return Ok((incoming, Vec::new()));
        }
        let winner = |row: usize| first[&key(keys.value(row))];
        duplicates.sort_by_key(|row| place(*row));
        let mut errors = RowErrors::new(self.config.on_error);
        let mut keep = vec![true; incoming.num_rows()];
        let payload_width = self.table_schema.fields().len() - 4;
        for row in duplicates {
            let (file, line) = place(row);
            let (first_file, first_line) = place(winner(row));
            let err = Error::bad_row(
                self.files[file as usize].display(),
                line,
                None,
                format!(
                    "duplicate key: first seen at {}, line {first_line}",
                    self.files[first_file as usize].display()
                ),
            );
            errors.push(err, || {
                row_text(&incoming, payload_width, row, self.config.delimiter)
            })?;
            keep[row] = false;
        }
        let kept = filter_record_batch(&incoming, &BooleanArray::from(keep))?;
        Ok((kept, errors.rejects))
    }
}

/// A row's first `width` values as text, joined by `delimiter` (for rejects).
fn row_text(batch: &RecordBatch, width: usize, row: usize, delimiter: u8) -> String {
    batch.columns()[..width]
        .iter()
        .map(|c| deltalake::arrow::util::display::array_value_to_string(c, row).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(&(delimiter as char).to_string())
}
