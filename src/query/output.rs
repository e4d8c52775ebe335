//! How `tributary sql` prints rows: an aligned table (the default), CSV with a header, or JSON
//! lines. Binary columns (`keyhash`, `nonkeyhash`) are shown as lowercase hex.

use std::io::Write;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;

use super::session::QueryResult;
use crate::error::Result;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table with a header and a row count.
    Table,
    /// CSV with a header line (RFC 4180 quoting).
    Csv,
    /// One JSON object per row (JSON lines); NULL columns are left out.
    Json,
}

/// `batches` with every binary column as lowercase hex text.
fn hex_binaries(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let is_binary = |t: &DataType| {
        matches!(
            t,
            DataType::Binary
                | DataType::LargeBinary
                | DataType::FixedSizeBinary(_)
                | DataType::BinaryView
        )
    };
    if !schema.fields().iter().any(|f| is_binary(f.data_type())) {
        return Ok((schema.clone(), batches.to_vec()));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match is_binary(f.data_type()) {
            true => Field::new(f.name(), DataType::Utf8, f.is_nullable()),
            false => f.as_ref().clone(),
        })
        .collect();
    let out_schema = Arc::new(Schema::new(fields));
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| {
                let value = |i: usize| -> Option<String> {
                    if c.is_null(i) {
                        return None;
                    }
                    let bytes: &[u8] = match c.data_type() {
                        DataType::Binary => c.as_binary::<i32>().value(i),
                        DataType::LargeBinary => c.as_binary::<i64>().value(i),
                        DataType::FixedSizeBinary(_) => c.as_fixed_size_binary().value(i),
                        DataType::BinaryView => c.as_binary_view().value(i),
                        _ => return None,
                    };
                    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
                };
                match is_binary(c.data_type()) {
                    true => Arc::new((0..c.len()).map(value).collect::<StringArray>()) as ArrayRef,
                    false => c.clone(),
                }
            })
            .collect();
        out.push(RecordBatch::try_new(out_schema.clone(), columns)?);
    }
    Ok((out_schema, out))
}

/// Writes the rows of `rows` (of `schema`) to `out` in `format` as they come: CSV and JSON lines
/// batch by batch, so that a result larger than memory is written whole; the table format
/// collects them first (its columns are as wide as their widest value).
///
/// # Errors
/// The first error of `rows`; Arrow errors formatting values; I/O errors writing `out`.
pub async fn write_stream(
    schema: SchemaRef,
    mut rows: impl futures::Stream<Item = Result<RecordBatch>> + Unpin,
    format: Format,
    out: &mut dyn Write,
) -> Result<()> {
    use futures::StreamExt;
    match format {
        Format::Table => {
            let mut batches = Vec::new();
            while let Some(batch) = rows.next().await {
                batches.push(batch?);
            }
            let result = QueryResult {
                statement: String::new(),
                schema,
                batches,
            };
            write(&result, format, out)
        }
        Format::Csv => {
            let (shown, _) = hex_binaries(&schema, &[])?;
            let mut writer = deltalake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            // the header, also for no rows
            writer.write(&RecordBatch::new_empty(shown))?;
            while let Some(batch) = rows.next().await {
                let (_, batches) = hex_binaries(&schema, &[batch?])?;
                for batch in &batches {
                    writer.write(batch)?;
                }
            }
            Ok(())
        }
        Format::Json => {
            let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(&mut *out);
            while let Some(batch) = rows.next().await {
                let (_, batches) = hex_binaries(&schema, &[batch?])?;
                for batch in &batches {
                    writer.write(batch)?;
                }
            }
            writer.finish()?;
            Ok(())
        }
    }
}

/// Writes `result` to `out` in `format`.
///
/// # Errors
/// Arrow errors formatting values; I/O errors writing `out`.
pub fn write(result: &QueryResult, format: Format, out: &mut dyn Write) -> Result<()> {
    let (schema, batches) = hex_binaries(&result.schema, &result.batches)?;
    match format {
        Format::Table => {
            if schema.fields().is_empty() {
                return Ok(());
            }
            let shown = if batches.is_empty() {
                vec![RecordBatch::new_empty(schema.clone())]
            } else {
                batches
            };
            let text = deltalake::arrow::util::pretty::pretty_format_batches(&shown)?;
            writeln!(out, "{text}")?;
            let rows = result.rows();
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut writer = deltalake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema))?;
            }
            for batch in &batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = deltalake::arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in &batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}
