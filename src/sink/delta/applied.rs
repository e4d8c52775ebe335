//! The applied-files table of a change-log table: one row per input file a sync applied.
//!
//! Its rows are committed as a follower of the run's history commit (see the sink contract, `sink/mod.rs`), so the
//! data and the record of the files that produced it land together: a crash never applies a
//! file twice nor loses one. Files are remembered by name (and, for DMS `LOAD` files, which a
//! reload rewrites under the same names, by size, modification time and content digest), not by
//! a high-water mark, so files that share a timestamp are never skipped.
//!
//! | column        | type   | meaning                                                        |
//! |---------------|--------|----------------------------------------------------------------|
//! | `file`        | string | path relative to the table's landing folder                    |
//! | `kind`        | string | `load` (DMS full load), `change`, or `superseded` (a change    |
//! |               |        | file older than a reload, recorded without being applied)      |
//! | `size_bytes`  | long   | file size when applied, bytes                                  |
//! | `modified_ms` | long   | file modification time, milliseconds since the Unix epoch      |
//! | `rows`        | long   | change rows read from the file                                 |
//! | `run`         | long   | run sequence number that applied it                            |
//! | `digest`      | string | XXH3-128 of the file's bytes, 32 hex digits (`load` files;     |
//! |               |        | NULL otherwise, and absent in tables made before it was kept)  |
//! | `etag`        | string | the object's ETag, for a landing zone in an object store (NULL |
//! |               |        | for local files, and absent in tables made before it was kept) |

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::DeltaTable;

use crate::core::checkpoint::{AppliedFile, AppliedLoad, AppliedSet, CHANGE, LOAD};
use crate::error::Result;

/// Arrow schema of the applied-files table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("size_bytes", DataType::Int64, false),
        Field::new("modified_ms", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("run", DataType::Int64, false),
        Field::new("digest", DataType::Utf8, true),
        Field::new("etag", DataType::Utf8, true),
    ]))
}

/// The rows of `files`, applied by run `run`.
///
/// # Errors
/// Arrow errors (none expected: the columns match the schema).
pub fn batch(files: &[AppliedFile], run: i64) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|f| f.file.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(files.iter().map(|f| f.kind))),
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|f| f.size_bytes),
            )),
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|f| f.modified_ms),
            )),
            Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.rows))),
            Arc::new(Int64Array::from_iter_values(files.iter().map(|_| run))),
            Arc::new(StringArray::from_iter(
                files.iter().map(|f| f.digest.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                files.iter().map(|f| f.etag.as_deref()),
            )),
        ],
    )?)
}

/// Reads the applied-files table (an absent table: nothing applied).
///
/// # Errors
/// Delta and DataFusion errors.
pub async fn read(table: Option<&DeltaTable>) -> Result<AppliedSet> {
    let mut set = AppliedSet::default();
    let Some(table) = table else {
        return Ok(set);
    };
    for batch in super::scan(table).await? {
        let text = |name: &str| -> Result<StringArray> {
            let column = batch.column_by_name(name).ok_or_else(|| missing(name))?;
            Ok(cast(column, &DataType::Utf8)?.as_string::<i32>().clone())
        };
        let file = text("file")?;
        let kind = text("kind")?;
        let modified = batch
            .column_by_name("modified_ms")
            .ok_or_else(|| missing("modified_ms"))?;
        let modified = modified.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let size = batch
            .column_by_name("size_bytes")
            .ok_or_else(|| missing("size_bytes"))?;
        let size = size.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let run = batch.column_by_name("run").ok_or_else(|| missing("run"))?;
        let run = run.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        // absent in tables written before digests (ETags) were kept
        let optional = |name: &str| match batch.column_by_name(name) {
            Some(_) => text(name).map(Some),
            None => Ok(None),
        };
        let (digest, etag) = (optional("digest")?, optional("etag")?);
        let at = |column: &Option<StringArray>, i: usize| {
            column
                .as_ref()
                .filter(|c| c.is_valid(i))
                .map(|c| c.value(i).to_string())
        };
        for i in 0..batch.num_rows() {
            if file.is_null(i) {
                continue;
            }
            let name = file.value(i).to_string();
            match kind.value(i) {
                LOAD => set.add_load(
                    name,
                    AppliedLoad {
                        run: run.value(i),
                        size_bytes: size.value(i),
                        modified_ms: modified.value(i),
                        digest: at(&digest, i),
                        etag: at(&etag, i),
                    },
                ),
                CHANGE => {
                    set.change_sizes.insert(name.clone(), size.value(i));
                    if let Some(etag) = at(&etag, i) {
                        set.change_etags.insert(name.clone(), etag);
                    }
                    set.changes.insert(name);
                }
                _ => {
                    set.changes.insert(name);
                }
            }
        }
    }
    Ok(set)
}

fn missing(name: &str) -> crate::Error {
    crate::Error::Lake {
        table: crate::sink::TableRole::Applied.as_str().into(),
        reason: format!("has no column `{name}`"),
    }
}
