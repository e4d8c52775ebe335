//! The Delta change data feed of a run's current-table commit (Delta protocol, "Change Data
//! Files" and "Add CDC File"), so that other engines' `table_changes` (Spark, Databricks,
//! delta-rs's `load_cdf`) read the row-level changes of Tributary's commits.
//!
//! A table writes the feed when its metadata says `delta.enableChangeDataFeed = true` (and, at
//! writer version 7, its protocol lists the `changeDataFeed` feature): Tributary follows the
//! table, whoever enabled it (the `change_data_feed: true` setting enables it on Tributary's
//! tables). Readers take a commit's changes from its `cdc` actions when it has any, and
//! otherwise read its added files as inserts and its removed files as deletes. So:
//!
//! - a commit that only adds files (history, an append to current, an insert-only table)
//!   or only removes them needs no change files: that reading is exact;
//! - a commit that replaces files of a keyed current table (every snapshot run rewrites it; a
//!   change-log run rewrites the files that hold a changed key) gets change files, computed
//!   here by comparing the rows of the removed files with those of the added files by
//!   `keyhash` (one row per key in current): a key only in the added files is an `insert`, only
//!   in the removed files a `delete`, in both with any column different an `update_preimage`
//!   (the old row) and an `update_postimage` (the new one); rows equal in every column are no
//!   change. A commit whose comparison finds no change gets one empty change file, so that
//!   readers do not fall back to reading its files.
//!
//! The feed describes the table's rows, all columns: a row whose `operation` code changes from
//! one run to the next (`I` then `N` in a snapshot table) is an update of that row. The
//! business changes of a run are its history rows (`changes()` in `tributary sql`).
//!
//! Change files hold the table's columns (partition columns in the folder names and the
//! actions' `partitionValues`, as data files) plus `_change_type` (string), under
//! `_change_data/` in the table's folder. Cost: the removed and added files are read once
//! more and compared in DataFusion's sort-merge join, whose sorts spill past the run's memory
//! budget.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use deltalake::arrow::compute::{and, filter_record_batch, is_not_null, not};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::catalog::streaming::StreamingTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::TaskContext;
use deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deltalake::datafusion::physical_plan::streaming::PartitionStream;
use deltalake::datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::{Add, AddCDCFile, Remove};
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use futures::StreamExt;

use super::current::DataFiles;
use super::write::{file_path, TARGET_FILE_BYTES};
use crate::core::schema::KEYHASH;
use crate::error::{Error, Result};

/// The table property that enables the feed.
pub const PROPERTY: &str = "delta.enableChangeDataFeed";
/// The column of a change file that names the change.
pub const CHANGE_TYPE: &str = "_change_type";
/// The least memory the comparison is given, whatever the run's `memory_limit` (the smallest
/// allowed is 16 MiB): DataFusion's sort-merge join and exchanges hold some batches they cannot
/// spill, and its sorts fail rather than spill when those leave them too little.
pub const MIN_POOL_BYTES: u64 = 64 << 20;

/// The folder of change files, under the table's root.
pub const FOLDER: &str = "_change_data";

/// Whether `table` records its change data feed: its property is `true` and, at writer
/// version 7, its protocol lists the `changeDataFeed` writer feature (the protocol's rule).
///
/// # Errors
/// Delta errors reading the snapshot.
pub fn enabled(table: &DeltaTable) -> Result<bool> {
    let state = table.snapshot()?;
    let protocol = state.snapshot().protocol();
    if protocol.min_writer_version() == 7 {
        let listed = protocol
            .writer_features()
            .is_some_and(|features| features.iter().any(|f| f.to_string() == "changeDataFeed"));
        if !listed {
            return Ok(false);
        }
    }
    super::table::property_is_true(table, PROPERTY)
}

/// Sets [`PROPERTY`] on `table` unless it records its feed already (a metadata commit, as
/// `ALTER TABLE ... SET TBLPROPERTIES` does; delta-rs raises the protocol to writer version 4
/// where needed): see [`super::table::enable_property`]. A table with a data file that has a
/// deletion vector is refused first ([`refuse_enabling_over_vectors`], at the version the
/// property would be committed against).
///
/// # Errors
/// [`Error::Refused`] for a data file with a deletion vector; Delta errors of the commit after
/// three attempts.
pub async fn enable(table: &mut DeltaTable, role: &str) -> Result<bool> {
    let allowed = refuse_enabling_over_vectors;
    super::table::enable_property(table, role, PROPERTY, enabled, allowed, "change data feed").await
}

/// Whether a commit of `removes` and `adds` to `table` needs change files: the table records
/// its feed, has a key (`keyed`: one row per `keyhash`), and the commit replaces files (removes
/// some with `dataChange` and adds some).
///
/// # Errors
/// Delta errors reading the snapshot.
pub fn needed(table: &DeltaTable, keyed: bool, removes: &[Remove], adds: &[Add]) -> Result<bool> {
    Ok(keyed && !adds.is_empty() && removes.iter().any(|r| r.data_change) && enabled(table)?)
}

/// What the comparison of [`write`] may use.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// Row groups read at once (the `threads` setting), fewer where they do not fit an eighth
    /// of `memory` per side.
    pub workers: usize,
    /// Bytes the comparison's sorts hold before they spill (the run's `memory_limit`; at least
    /// [`MIN_POOL_BYTES`] are used).
    pub memory: u64,
    /// Folder the spill files go under (None: the system temporary folder).
    pub spill: Option<&'a std::path::Path>,
}

/// Refuses the removal of a file that has a deletion vector from a table that records its
/// feed: the vector marks rows that a whole-file comparison would count again (vectors of
/// runs made before the feed was turned on, or of another engine).
///
/// # Errors
/// [`Error::Refused`] naming the file, with the advice to run `tributary optimize` (it
/// rewrites the files that have a vector).
pub fn refuse_vectors<'a>(removes: impl IntoIterator<Item = &'a Remove>) -> Result<()> {
    match removes.into_iter().find(|r| r.deletion_vector.is_some()) {
        Some(marked) => Err(vector_refusal("current", &marked.path)),
        None => Ok(()),
    }
}

/// Refuses to turn the feed on for `table` (`role`: as messages name it) while a live data file
/// of it has a deletion vector: the table's merges of such files would be refused
/// ([`refuse_vectors`]), so the run stops before it commits anything, the property included
/// (Tributary writes vectors in current only).
///
/// # Errors
/// [`Error::Refused`] naming the first such file, with the advice to run `tributary optimize`;
/// Delta errors reading the snapshot.
pub fn refuse_enabling_over_vectors(table: &DeltaTable, role: &str) -> Result<()> {
    let state = table.snapshot()?;
    let marked = state
        .log_data()
        .iter()
        .find(|f| f.deletion_vector_descriptor().is_some())
        .map(|f| f.path().to_string());
    match marked {
        Some(path) => Err(vector_refusal(role, &path)),
        None => Ok(()),
    }
}

/// The refusal of data file `path` of table `role`, which has a deletion vector.
fn vector_refusal(role: &str, path: &str) -> Error {
    Error::Refused(format!(
        "{role}: data file {path} has a deletion vector, and the change data feed compares \
         whole files; run `tributary optimize` (it rewrites the files that have one), then run \
         again"
    ))
}

/// Writes the change files of a commit that replaces `removes` of `table` (its loaded version)
/// with `adds` (written, not committed), as the module docs say; returns their `cdc` actions.
/// Both sides are sorted by `keyhash` and merged (a sort-merge join), within `budget`'s memory:
/// past it, the sorts spill to disk.
///
/// # Errors
/// [`Error::Refused`] when a removed file has a deletion vector; [`Error::Lake`] naming a data
/// file that cannot be read; DataFusion, Parquet and object-store errors. On error the change
/// files written so far are deleted.
pub async fn write(
    table: &DeltaTable,
    removes: &[Remove],
    adds: &[Add],
    properties: WriterProperties,
    budget: Budget<'_>,
) -> Result<Vec<AddCDCFile>> {
    refuse_vectors(removes)?;
    let state = table.snapshot()?;
    let schema = state.snapshot().arrow_schema();
    let partitions = state.metadata().partition_columns().to_vec();
    let old = removes.iter().filter(|r| r.data_change).map(|r| {
        (
            file_path(&r.path),
            r.size.unwrap_or_default().max(0) as u64,
            r.partition_values.clone().unwrap_or_default(),
        )
    });
    // collected: iterators over borrowed actions are not held across an await
    let old: Vec<_> = old.collect();
    let new = adds.iter().map(|a| {
        (
            file_path(&a.path),
            a.size.max(0) as u64,
            a.partition_values.clone(),
        )
    });
    let new: Vec<_> = new.collect();
    let old = Arc::new(DataFiles::of(table, old).await?);
    let new = Arc::new(DataFiles::of(table, new).await?);
    let changes = compare(schema.clone(), old, new, budget).await?;
    let mut files = Vec::new();
    let written = write_changes(
        table,
        &schema,
        &partitions,
        changes,
        properties.clone(),
        &mut files,
    )
    .await;
    if let Err(e) = written {
        discard(table, &files).await;
        return Err(e);
    }
    if files.is_empty() {
        files.push(empty_file(table, &schema, &partitions, properties).await?);
    }
    Ok(files)
}

/// The schema of change rows: `schema` and [`CHANGE_TYPE`].
fn change_schema(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(CHANGE_TYPE, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The rows of `old` and `new` compared by key (see the module docs): a stream of change rows
/// in [`change_schema`].
async fn compare(
    schema: SchemaRef,
    old: Arc<DataFiles>,
    new: Arc<DataFiles>,
    budget: Budget<'_>,
) -> Result<SendableRecordBatchStream> {
    use deltalake::datafusion::execution::memory_pool::FairSpillPool;
    use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let workers = budget.workers;
    // A sort-merge join: its sorts spill past the budget, where a hash join would hold every
    // replaced row (a snapshot run replaces the whole table). DataFusion plans one only over 2
    // partitions or more; each sort first reserves memory it cannot spill, kept to an eighth
    // of its share of the budget. Its operators also hold some batches they cannot spill (the
    // merge's current key groups, the exchanges' buffers): below a floor of the pool its sorts
    // fail instead of spilling, hence at least MIN_POOL_BYTES.
    let memory = budget.memory.max(MIN_POOL_BYTES);
    let partitions = workers.clamp(2, ((memory >> 26) as usize).max(2));
    let mut config = super::session_config().with_target_partitions(partitions);
    let options = config.options_mut();
    options.optimizer.prefer_hash_join = false;
    options.optimizer.repartition_joins = true;
    options.execution.sort_spill_reservation_bytes =
        (memory as usize / (8 * 2 * partitions)).min(10 << 20);
    let mut runtime =
        RuntimeEnvBuilder::new().with_memory_pool(Arc::new(FairSpillPool::new(memory as usize)));
    if let Some(folder) = budget.spill {
        runtime = runtime.with_temp_file_path(folder);
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
    for (name, files) in [("old", old), ("new", new)] {
        // Each side decodes its row groups outside the pool (the compressed chunks and the
        // batches, about twice a row group's size): an eighth of the budget each.
        let fit = memory / 8 / files.largest_row_group_bytes().saturating_mul(2).max(1);
        let workers = usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .clamp(1, workers.max(1));
        let rows = Arc::new(FileRows {
            files,
            schema: schema.clone(),
            workers,
        });
        let table = StreamingTable::try_new(schema.clone(), vec![rows])?;
        ctx.register_table(name, Arc::new(table))?;
    }
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let names: Vec<String> = schema.fields().iter().map(|f| quoted(f.name())).collect();
    let select: Vec<String> = ["o", "n"]
        .iter()
        .flat_map(|side| {
            names
                .iter()
                .enumerate()
                .map(move |(i, c)| format!("{side}.{c} AS {side}_{i}"))
        })
        .collect();
    let differ: Vec<String> = names
        .iter()
        .map(|c| format!("(o.{c} IS DISTINCT FROM n.{c})"))
        .collect();
    let key = quoted(KEYHASH);
    let sql = format!(
        "SELECT {} FROM old o FULL OUTER JOIN new n ON o.{key} = n.{key} \
         WHERE o.{key} IS NULL OR n.{key} IS NULL OR {}",
        select.join(", "),
        differ.join(" OR ")
    );
    let joined = ctx.sql(&sql).await?.execute_stream().await?;
    let keyhash = schema.index_of(KEYHASH)?;
    let out = change_schema(&schema);
    let width = schema.fields().len();
    let changes = joined.flat_map(move |batch| {
        let split = batch
            .map_err(Error::from)
            .and_then(|b| split(&b, width, keyhash, &out));
        futures::stream::iter(match split {
            Ok(batches) => batches.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(DataFusionError::External(Box::new(e)))],
        })
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        change_schema(&schema),
        changes,
    )))
}

/// The change rows of one joined batch (the old row's `width` columns, then the new row's):
/// deletes and update pre-images from the old side, inserts and post-images from the new.
fn split(
    joined: &RecordBatch,
    width: usize,
    keyhash: usize,
    out: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    // Each side's columns, nullable (the outer join's missing side); the rows kept of a side
    // are the rows it has, whose columns are as the table declares them.
    let sides: SchemaRef = Arc::new(Schema::new(
        out.fields()[..width]
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let old_side = RecordBatch::try_new(sides.clone(), joined.columns()[..width].to_vec())?;
    let new_side = RecordBatch::try_new(sides, joined.columns()[width..2 * width].to_vec())?;
    let had = is_not_null(joined.column(keyhash))?;
    let has = is_not_null(joined.column(width + keyhash))?;
    let both = and(&had, &has)?;
    let parts: [(&RecordBatch, BooleanArray, &str); 4] = [
        (&old_side, and(&had, &not(&has)?)?, "delete"),
        (&old_side, both.clone(), "update_preimage"),
        (&new_side, both, "update_postimage"),
        (&new_side, and(&has, &not(&had)?)?, "insert"),
    ];
    let mut batches = Vec::new();
    for (side, mask, kind) in parts {
        let rows = filter_record_batch(side, &mask)?;
        if rows.num_rows() == 0 {
            continue;
        }
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![kind; rows.num_rows()])));
        batches.push(RecordBatch::try_new(out.clone(), columns)?);
    }
    Ok(batches)
}

/// Writes `changes` as change files under [`FOLDER`] (partitioned as the table, rolled at
/// [`TARGET_FILE_BYTES`]), pushing each file's `cdc` action to `files` as it is written.
async fn write_changes(
    table: &DeltaTable,
    schema: &SchemaRef,
    partitions: &[String],
    mut changes: SendableRecordBatchStream,
    properties: WriterProperties,
    files: &mut Vec<AddCDCFile>,
) -> Result<()> {
    let url = folder_url(table)?;
    let mut writer: Option<RecordBatchWriter> = None;
    let flush = |adds: Vec<Add>, files: &mut Vec<AddCDCFile>| {
        files.extend(adds.into_iter().map(|add| AddCDCFile {
            path: format!("{FOLDER}/{}", add.path),
            size: add.size,
            partition_values: add.partition_values,
            data_change: false,
            tags: None,
        }));
    };
    while let Some(batch) = changes.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(
                RecordBatchWriter::try_new(
                    url.as_str(),
                    change_schema(schema),
                    Some(partitions.to_vec()),
                    // the table's own storage options (credentials, endpoint of an object store)
                    Some(table.log_store().config().options().raw.clone()),
                )?
                .with_writer_properties(properties.clone()),
            ),
        };
        writer.write(batch).await?;
        if writer.buffer_len() as u64 >= TARGET_FILE_BYTES {
            flush(writer.flush().await?, files);
        }
    }
    if let Some(mut writer) = writer {
        flush(writer.flush().await?, files);
    }
    Ok(())
}

/// The URL of `table`'s [`FOLDER`] (created first in a local table: the writer's local store
/// needs its root to exist).
fn folder_url(table: &DeltaTable) -> Result<url::Url> {
    let root = table.table_url();
    if let Ok(path) = root.to_file_path() {
        std::fs::create_dir_all(path.join(FOLDER))?;
    }
    let mut url = root.clone();
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    url.join(&format!("{FOLDER}/"))
        .map_err(|e| Error::Internal(format!("the change-data folder of {root}: {e}")))
}

/// A change file without rows: the change data of a commit that replaced files but changed no
/// row (its partition values NULL).
async fn empty_file(
    table: &DeltaTable,
    schema: &SchemaRef,
    partitions: &[String],
    properties: WriterProperties,
) -> Result<AddCDCFile> {
    let fields: Vec<_> = change_schema(schema)
        .fields()
        .iter()
        .filter(|f| !partitions.contains(f.name()))
        .cloned()
        .collect();
    let file_schema = Arc::new(Schema::new(fields));
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, file_schema.clone(), Some(properties))?;
    writer.write(&RecordBatch::new_empty(file_schema))?;
    writer.close()?;
    let path = format!("{FOLDER}/cdc-00000-{}.c000.parquet", uuid::Uuid::new_v4());
    let size = bytes.len() as i64;
    use deltalake::logstore::object_store::ObjectStoreExt;
    table
        .object_store()
        .put(&file_path(&path), bytes.into())
        .await
        .map_err(deltalake::DeltaTableError::from)?;
    Ok(AddCDCFile {
        path,
        size,
        partition_values: partitions.iter().map(|p| (p.clone(), None)).collect(),
        data_change: false,
        tags: None,
    })
}

/// Deletes change files that will not be committed (best effort, as
/// [`discard_files`](super::write::discard_files)).
pub async fn discard(table: &DeltaTable, files: &[AddCDCFile]) {
    let adds: Vec<Add> = files
        .iter()
        .map(|f| Add {
            path: f.path.clone(),
            partition_values: f.partition_values.clone(),
            ..Default::default()
        })
        .collect();
    super::write::discard_files(table, &adds).await;
}

/// One side of the comparison as a DataFusion partition: the rows of its files, read when the
/// plan runs.
struct FileRows {
    files: Arc<DataFiles>,
    schema: SchemaRef,
    workers: usize,
}

impl std::fmt::Debug for FileRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRows").finish_non_exhaustive()
    }
}

impl PartitionStream for FileRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (files, schema, workers) = (self.files.clone(), self.schema.clone(), self.workers);
        let reading = tokio::spawn(async move { files.read_all(schema, workers, tx).await });
        // The rows, then the reading task's error if it had one.
        let rows = futures::stream::unfold((rx, Some(reading)), |(mut rx, reading)| async move {
            if let Some(batch) = rx.recv().await {
                return Some((Ok(batch), (rx, reading)));
            }
            let failed = match reading?.await {
                Ok(Ok(())) => return None,
                Ok(Err(e)) => DataFusionError::External(Box::new(e)),
                Err(e) => DataFusionError::External(Box::new(e)),
            };
            Some((Err(failed), (rx, None)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{AsArray, BinaryArray, Int64Array};

    fn side(keys: &[Option<&[u8]>], values: &[Option<i64>]) -> Vec<ArrayRef> {
        vec![
            Arc::new(BinaryArray::from(keys.to_vec())),
            Arc::new(Int64Array::from(values.to_vec())),
        ]
    }

    #[test]
    fn a_joined_batch_splits_into_deletes_updates_and_inserts() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new(KEYHASH, DataType::Binary, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let out = change_schema(&schema);
        // rows: a deleted (old only), b updated (both), c inserted (new only)
        let mut columns = side(&[Some(b"a"), Some(b"b"), None], &[Some(1), Some(2), None]);
        columns.extend(side(
            &[None, Some(b"b"), Some(b"c")],
            &[None, Some(5), Some(3)],
        ));
        let joined_schema = Arc::new(Schema::new(vec![
            Field::new("o_0", DataType::Binary, true),
            Field::new("o_1", DataType::Int64, true),
            Field::new("n_0", DataType::Binary, true),
            Field::new("n_1", DataType::Int64, true),
        ]));
        let joined = RecordBatch::try_new(joined_schema, columns).unwrap();
        let batches = split(&joined, 2, 0, &out).unwrap();
        let rows: Vec<(String, i64, String)> = batches
            .iter()
            .flat_map(|b| {
                let keys = b.column(0).as_binary::<i32>();
                let values = b
                    .column(1)
                    .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
                let kinds = b.column(2).as_string::<i32>();
                (0..b.num_rows()).map(move |i| {
                    (
                        String::from_utf8(keys.value(i).to_vec()).unwrap(),
                        values.value(i),
                        kinds.value(i).to_string(),
                    )
                })
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("a".into(), 1, "delete".into()),
                ("b".into(), 2, "update_preimage".into()),
                ("b".into(), 5, "update_postimage".into()),
                ("c".into(), 3, "insert".into()),
            ]
        );
        assert!(batches.iter().all(|b| b.schema() == out));
    }
}
