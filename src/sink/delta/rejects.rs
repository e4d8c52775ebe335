//! The rejects table: rows set aside under `on_error: reject`, one Delta table per config.
//!
//! Columns: `file` (string), `line` (long, 1-based line or Parquet row), `column` (string,
//! NULL when the whole row is bad), `reason` (string), `raw` (string: the row as read),
//! `business_date` (date), `run_seq` (long).

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::core::batch::Reject;
use crate::error::Result;

/// Arrow schema of the rejects table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("business_date", DataType::Date32, false),
        Field::new("run_seq", DataType::Int64, false),
    ]))
}

/// One batch of rejected rows for a run.
///
/// # Errors
/// Arrow errors (none expected: the columns are built to the schema).
pub fn batch(rejects: &[Reject], business_date: i32, run_seq: i64) -> Result<RecordBatch> {
    let n = rejects.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.file.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rejects.iter().map(|r| r.line as i64),
        )),
        Arc::new(StringArray::from(
            rejects.iter().map(|r| r.column.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.raw.as_str()),
        )),
        Arc::new(Date32Array::from(vec![business_date; n])),
        Arc::new(Int64Array::from(vec![run_seq; n])),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}
