//! Reads of the current table's data files for a snapshot run, in two passes.
//!
//! 1. [`DataFiles::scan_keys`]: the join columns of every row (`keyhash`, `nonkeyhash`,
//!    `eff_start_date`) with each row's position (data file, row in file). Parquet column
//!    projection: the payload columns are not decoded.
//! 2. [`DataFiles::read_picked`]: whole rows, only those picked by position after the diff
//!    (the rows of keys that left a full extract, or were not supplied in a delta extract),
//!    through a Parquet row selection.
//!
//! The unit of work is one row group of one file; `workers` row groups are decoded at once.
//! Files are read through the table's object store, as delta-rs lays them out (the table's
//! partition columns are not in the files: they are filled from the `add` action's
//! `partitionValues`, Delta protocol "Partition Value Serialization").

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanArray, BooleanBufferBuilder, RecordBatch, UInt32Array,
};
use deltalake::arrow::buffer::BooleanBuffer;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelectionPolicy,
};
// Deprecated in parquet 59 in favour of each caller writing its own `AsyncFileReader` over
// object_store (arrow-rs #10308); this is that reader, kept by the library, until then.
#[allow(deprecated)]
use deltalake::parquet::arrow::async_reader::ParquetObjectReader;
use deltalake::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use deltalake::{DeltaTable, ObjectStore, Path};
use futures::StreamExt;
use tokio::sync::mpsc::Sender;

use super::conform;
use crate::core::batch::BATCH_ROWS;
use crate::error::{Error, Result};

/// One data file of the table's snapshot.
struct DataFile {
    path: Path,
    size: u64,
    partition_values: HashMap<String, Option<String>>,
    metadata: ArrowReaderMetadata,
}

/// One row group of one file: the unit of parallel reads.
#[derive(Debug, Clone, Copy)]
struct Unit {
    file: usize,
    row_group: usize,
    /// Position of the row group's first row in its file.
    first_row: u64,
    rows: u64,
}

/// The data files of one version of a table, with their Parquet footers read.
pub struct DataFiles {
    store: Arc<dyn ObjectStore>,
    files: Vec<DataFile>,
}

/// Rows picked by position in each data file (one bit per row).
pub struct Picks {
    files: Vec<BooleanBufferBuilder>,
    count: u64,
}

impl Picks {
    /// No row picked yet, for files of these row counts.
    pub fn new(rows_per_file: &[u64]) -> Self {
        let files = rows_per_file
            .iter()
            .map(|&rows| {
                let mut bits = BooleanBufferBuilder::new(rows as usize);
                bits.append_n(rows as usize, false);
                bits
            })
            .collect();
        Picks { files, count: 0 }
    }

    /// Picks `row` of `file` (positions from [`DataFiles::scan_keys`]).
    ///
    /// # Errors
    /// [`Error::Internal`] for a position outside the files.
    pub fn pick(&mut self, file: u32, row: u32) -> Result<()> {
        let bits = self
            .files
            .get_mut(file as usize)
            .filter(|bits| (row as usize) < bits.len())
            .ok_or_else(|| Error::Internal(format!("no row {row} in data file {file}")))?;
        if !bits.get_bit(row as usize) {
            bits.set_bit(row as usize, true);
            self.count += 1;
        }
        Ok(())
    }

    /// Rows picked.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The picked rows of each file, ascending.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.files
            .iter()
            .map(|bits| {
                let bits = bits.finish_cloned();
                bits.set_indices().map(|i| i as u64).collect()
            })
            .collect()
    }
}

#[allow(deprecated)] // ParquetObjectReader, see its import
impl DataFiles {
    /// The data files of `table`'s loaded version, with their footers (one read per file).
    ///
    /// # Errors
    /// [`Error::Lake`] naming a file whose footer cannot be read; Delta errors.
    pub async fn open(table: &DeltaTable) -> Result<Self> {
        let mut files = Vec::new();
        for view in table.snapshot()?.log_data().iter() {
            if view.deletion_vector_descriptor().is_some() {
                return Err(read_error(
                    &view.object_store_path(),
                    "has a deletion vector, which Tributary does not read",
                ));
            }
            files.push((
                view.object_store_path(),
                view.size() as u64,
                view.partition_values_map(),
            ));
        }
        Self::of(table, files).await
    }

    /// The data files `files` of `table` (object-store path, size in bytes, Delta partition
    /// values), committed or not (a run's new files), in that order, with their footers (one
    /// read per file, 16 at a time).
    ///
    /// # Errors
    /// [`Error::Lake`] naming a file whose footer cannot be read.
    pub async fn of(
        table: &DeltaTable,
        files: impl IntoIterator<Item = (Path, u64, HashMap<String, Option<String>>)>,
    ) -> Result<Self> {
        let store = table.object_store();
        let files: Vec<_> = files.into_iter().collect();
        let mut read = Vec::with_capacity(files.len());
        // footers 16 at a time (one request each: an object store answers them in parallel)
        for chunk in files.chunks(16) {
            let mut footers = Vec::with_capacity(chunk.len());
            for (path, size, partition_values) in chunk.iter().cloned() {
                let store = store.clone();
                footers.push(async move {
                    let mut reader =
                        ParquetObjectReader::new(store, path.clone()).with_file_size(size);
                    let options = ArrowReaderOptions::new();
                    let metadata = ArrowReaderMetadata::load_async(&mut reader, options)
                        .await
                        .map_err(|e| read_error(&path, e))?;
                    let groups = metadata.metadata().row_groups();
                    let rows: u64 = groups.iter().map(|rg| rg.num_rows().max(0) as u64).sum();
                    if rows > u64::from(u32::MAX) {
                        return Err(read_error(
                            &path,
                            "has 2^32 rows or more; row positions are 32-bit",
                        ));
                    }
                    Ok(DataFile {
                        path,
                        size,
                        partition_values,
                        metadata,
                    })
                });
            }
            read.extend(futures::future::try_join_all(footers).await?);
        }
        Ok(DataFiles { store, files: read })
    }

    /// Rows of each data file, in file order (the sum of its row groups' rows, as read; each
    /// under 2^32, checked by [`DataFiles::open`]).
    pub fn rows_per_file(&self) -> Vec<u64> {
        self.files
            .iter()
            .map(|f| {
                let groups = f.metadata.metadata().row_groups();
                groups.iter().map(|rg| rg.num_rows().max(0) as u64).sum()
            })
            .collect()
    }

    /// The largest row group's uncompressed bytes (its Parquet `total_byte_size`) among the
    /// data files: about what decoding it whole takes.
    pub fn largest_row_group_bytes(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|f| f.metadata.metadata().row_groups())
            .map(|rg| rg.total_byte_size().max(0) as u64)
            .max()
            .unwrap_or(0)
    }

    fn units(&self) -> Vec<Unit> {
        let mut units = Vec::new();
        for (file, f) in self.files.iter().enumerate() {
            let mut first_row = 0;
            for (row_group, rg) in f.metadata.metadata().row_groups().iter().enumerate() {
                let rows = rg.num_rows().max(0) as u64;
                units.push(Unit {
                    file,
                    row_group,
                    first_row,
                    rows,
                });
                first_row += rows;
            }
        }
        units
    }

    /// Sends the join columns of every row to `tx`, in `schema`: its columns but the last two
    /// read by name (a snapshot run's `keyhash`, `nonkeyhash`, `eff_start_date`; a merge's
    /// `keyhash`), then the row's file index and its row in that file, both `UInt32`. Decodes
    /// `workers` row groups at once. Batches arrive in no particular order.
    ///
    /// # Errors
    /// [`Error::Lake`] naming the file that cannot be read or lacks a column; a closed `tx`.
    pub async fn scan_keys(
        &self,
        schema: SchemaRef,
        workers: usize,
        tx: Sender<RecordBatch>,
    ) -> Result<()> {
        let every_row = None::<fn(RecordBatch) -> Result<RecordBatch>>;
        self.scan_positions(schema, workers, tx, every_row).await
    }

    /// [`DataFiles::scan_keys`], sending what `select` makes of each batch in `schema` (the
    /// rows it keeps, the columns it adds); `select` runs on the reading tasks.
    ///
    /// # Errors
    /// As [`DataFiles::scan_keys`]; errors of `select`.
    pub async fn scan_keys_where(
        &self,
        schema: SchemaRef,
        workers: usize,
        tx: Sender<RecordBatch>,
        select: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Result<()> {
        self.scan_positions(schema, workers, tx, Some(select)).await
    }

    /// The body of [`DataFiles::scan_keys`] and [`DataFiles::scan_keys_where`]: every row, or
    /// what `select` makes of them (a snapshot run's scan selects nothing).
    async fn scan_positions<K>(
        &self,
        schema: SchemaRef,
        workers: usize,
        tx: Sender<RecordBatch>,
        select: Option<K>,
    ) -> Result<()>
    where
        K: Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    {
        let read = schema.fields().len().saturating_sub(2);
        let join_schema: SchemaRef = Arc::new(Schema::new(schema.fields()[..read].to_vec()));
        let columns = join_schema.clone();
        let jobs = self.units().into_iter().map(|unit| (unit, None));
        let no_partition_values = HashMap::new();
        let map = Arc::new(move |unit: &Unit, offset: u64, batch: RecordBatch| {
            let n = batch.num_rows();
            // Below 2^32: checked per file by `open`.
            let first = (unit.first_row + offset) as u32;
            // By name, cast where the file's type differs (a file written by another tool).
            let joined = conform(&batch, &join_schema, &no_partition_values)?;
            let mut columns: Vec<ArrayRef> = joined.columns().to_vec();
            columns.push(Arc::new(UInt32Array::from(vec![unit.file as u32; n])));
            columns.push(Arc::new(UInt32Array::from_iter_values(
                first..first + n as u32,
            )));
            let batch = RecordBatch::try_new(schema.clone(), columns)?;
            match &select {
                None => Ok(batch),
                Some(select) => select(batch),
            }
        });
        self.read(jobs, Some(columns), workers, tx, map).await
    }

    /// Sends every column of the picked rows to `tx`, as batches of `schema` (the table schema;
    /// partition columns filled from the files' partition values) passed through `finish`.
    ///
    /// # Errors
    /// [`Error::Lake`] naming the file that cannot be read; errors of `finish`; a closed `tx`.
    pub async fn read_picked(
        &self,
        picks: Picks,
        schema: SchemaRef,
        workers: usize,
        tx: Sender<RecordBatch>,
        finish: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Result<()> {
        let bits: Vec<BooleanBuffer> = picks.files.into_iter().map(|mut b| b.finish()).collect();
        let mut jobs = Vec::new();
        for unit in self.units() {
            let filter = BooleanArray::from(
                bits[unit.file].slice(unit.first_row as usize, unit.rows as usize),
            );
            let picked = filter.true_count();
            if picked > 0 {
                // sparse picks skip the rows between them; dense ones are read as the
                // reader decides (it decodes nearly every row either way)
                let policy = match picked * 2 <= filter.len() {
                    true => SPARSE_SELECTION_POLICY,
                    false => RowSelectionPolicy::default(),
                };
                let selection = RowSelection::from_filters(&[filter]);
                jobs.push((unit, Some((selection, policy))));
            }
        }
        self.read_rows(jobs, schema, workers, tx, finish).await
    }

    /// Sends every row of every file to `tx`, as batches of `schema` (the table schema;
    /// partition columns filled from the files' partition values), decoding `workers` row
    /// groups at once. Batches arrive in no particular order.
    ///
    /// # Errors
    /// [`Error::Lake`] naming the file that cannot be read; a closed `tx`.
    pub async fn read_all(
        &self,
        schema: SchemaRef,
        workers: usize,
        tx: Sender<RecordBatch>,
    ) -> Result<()> {
        let jobs = self.units().into_iter().map(|unit| (unit, None)).collect();
        self.read_rows(jobs, schema, workers, tx, Ok).await
    }

    /// Every column of the rows `jobs` select, as batches of `schema` (partition columns
    /// filled from the files' partition values) passed through `finish`: the body of
    /// [`DataFiles::read_picked`] and [`DataFiles::read_all`].
    async fn read_rows(
        &self,
        jobs: Vec<(Unit, Option<Selection>)>,
        schema: SchemaRef,
        workers: usize,
        tx: Sender<RecordBatch>,
        finish: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Result<()> {
        let partition_values: Vec<HashMap<String, Option<String>>> = self
            .files
            .iter()
            .map(|f| f.partition_values.clone())
            .collect();
        let map = Arc::new(move |unit: &Unit, _offset: u64, batch: RecordBatch| {
            finish(conform(&batch, &schema, &partition_values[unit.file])?)
        });
        self.read(jobs.into_iter(), None, workers, tx, map).await
    }

    /// Reads the given units (the fields of `columns` by name, or all), `workers` at once, each
    /// on its own task, sending `map(unit, offset of the batch's first row in the unit, batch)`
    /// to `tx`.
    async fn read<M>(
        &self,
        jobs: impl Iterator<Item = (Unit, Option<Selection>)>,
        columns: Option<SchemaRef>,
        workers: usize,
        tx: Sender<RecordBatch>,
        map: Arc<M>,
    ) -> Result<()>
    where
        M: Fn(&Unit, u64, RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    {
        let mut tasks = jobs.map(|(unit, selection)| {
            let file = &self.files[unit.file];
            let path = file.path.clone();
            let reader = ParquetObjectReader::new(self.store.clone(), path.clone())
                .with_file_size(file.size);
            let mut builder =
                ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.metadata.clone())
                    .with_row_groups(vec![unit.row_group])
                    .with_batch_size(BATCH_ROWS);
            let projection = match &columns {
                None => Ok(None),
                Some(fields) => projection(&file.metadata, fields, &path).map(Some),
            };
            let (tx, map) = (tx.clone(), map.clone());
            async move {
                if let Some(mask) = projection? {
                    builder = builder.with_projection(mask);
                }
                if let Some((selection, policy)) = selection {
                    builder = builder
                        .with_row_selection(selection)
                        .with_row_selection_policy(policy);
                }
                let mut stream = builder.build().map_err(|e| read_error(&path, e))?;
                let mut offset = 0;
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(|e| read_error(&path, e))?;
                    let rows = batch.num_rows() as u64;
                    let out = map(&unit, offset, batch)?;
                    offset += rows;
                    if out.num_rows() > 0 {
                        tx.send(out).await.map_err(|_| Error::WriterGone)?;
                    }
                }
                Ok::<(), Error>(())
            }
        });
        // At most `workers` tasks at once; an error returns at once, and dropping the set
        // aborts the tasks still reading.
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < workers.max(1) {
                match tasks.next() {
                    Some(task) => {
                        running.spawn(task);
                    }
                    None => break,
                }
            }
            match running.join_next().await {
                None => return Ok(()),
                Some(joined) => joined.map_err(|e| {
                    Error::Internal(format!("current-table read task failed: {e}"))
                })??,
            }
        }
    }
}

/// The rows of a row group to read, and how the reader skips the others.
type Selection = (RowSelection, RowSelectionPolicy);

/// How a read that picks at most half of a row group's rows skips the others: runs of skipped
/// rows are skipped by the decoders (no value copied) unless the selection's runs (skipped and
/// picked) average under 8 rows, where every row is decoded and the others dropped by a mask.
/// The Parquet reader's default switches at 32, and stays the policy of denser picks (a delta
/// extract's rows not supplied), which decode nearly every row either way. The rows a merge
/// with deletes reads whole are about 1 in 55 of the table (runs of about 28): decoding every
/// row of every column (16-byte digests, strings checked as UTF-8) and dropping 54 of 55 made
/// the whole merge about 5% slower (bench/RESULTS.md, "a filter in front of the key set"). The
/// rows a full extract deletes (the seed: 1 in 5, runs of about 3) still take the mask.
const SPARSE_SELECTION_POLICY: RowSelectionPolicy = RowSelectionPolicy::Auto { threshold: 8 };

fn read_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Lake {
        table: crate::sink::TableRole::Current.as_str().into(),
        reason: format!("data file {path}: {reason}"),
    }
}

/// The projection of the root columns named by `fields` in a file. A nullable field the file
/// lacks is left out (`conform` fills it with NULL, as for a file written before the column
/// was added, or by a writer that leaves out all-NULL columns).
///
/// # Errors
/// [`Error::Lake`] naming the file when it lacks a field that is not nullable.
fn projection(
    metadata: &ArrowReaderMetadata,
    fields: &Schema,
    path: &Path,
) -> Result<ProjectionMask> {
    let schema = metadata.schema();
    let mut indices = Vec::with_capacity(fields.fields().len());
    for field in fields.fields() {
        match schema.index_of(field.name()) {
            Ok(at) => indices.push(at),
            Err(_) if field.is_nullable() => {}
            Err(_) => {
                return Err(read_error(
                    path,
                    format!("has no column `{}`", field.name()),
                ))
            }
        }
    }
    Ok(ProjectionMask::roots(metadata.parquet_schema(), indices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_count_each_row_once_and_refuse_positions_outside_the_files() {
        let mut picks = Picks::new(&[3, 0, 70]);
        picks.pick(0, 2).unwrap();
        picks.pick(2, 69).unwrap();
        picks.pick(2, 69).unwrap();
        assert_eq!(picks.count(), 2);
        let bits: Vec<Vec<bool>> = picks
            .files
            .iter()
            .map(|b| (0..b.len()).map(|i| b.get_bit(i)).collect())
            .collect();
        assert_eq!(bits[0], vec![false, false, true]);
        assert!(bits[1].is_empty());
        assert_eq!(bits[2].iter().filter(|&&b| b).count(), 1);
        assert!(bits[2][69]);
        assert!(picks.pick(0, 3).is_err());
        assert!(picks.pick(1, 0).is_err());
        assert!(picks.pick(3, 0).is_err());
    }

    #[test]
    fn a_scan_leaves_out_nullable_columns_a_file_lacks_and_refuses_required_ones() {
        use deltalake::arrow::array::{BinaryArray, Int64Array};
        use deltalake::arrow::datatypes::{DataType, Field};
        use deltalake::parquet::arrow::ArrowWriter;
        let written = Arc::new(Schema::new(vec![
            Field::new("keyhash", DataType::Binary, false),
            Field::new("amount", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            written.clone(),
            vec![
                Arc::new(BinaryArray::from_iter_values([b"k"])),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        let file = tempfile::tempfile().unwrap();
        let mut writer = ArrowWriter::try_new(file.try_clone().unwrap(), written, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).unwrap();
        let path = Path::from("part-0.parquet");
        let fields = |nullable: bool| {
            Schema::new(vec![
                Field::new("keyhash", DataType::Binary, false),
                Field::new("source_position", DataType::Int64, nullable),
                Field::new("amount", DataType::Int64, true),
            ])
        };
        let mask = projection(&metadata, &fields(true), &path).unwrap();
        assert!(mask.leaf_included(0) && mask.leaf_included(1));
        let err = projection(&metadata, &fields(false), &path).unwrap_err();
        assert!(
            err.to_string().contains("part-0.parquet")
                && err.to_string().contains("`source_position`"),
            "{err}"
        );
    }

    #[test]
    fn partition_columns_are_filled_from_partition_values_and_cast() {
        use deltalake::arrow::array::{AsArray, Float64Array};
        use deltalake::arrow::datatypes::{DataType, Date32Type, Field, Schema};
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Float64, true),
            Field::new("day", DataType::Date32, true),
            Field::new("region", DataType::Utf8, true),
        ]));
        let file_schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Float64, true)]));
        let batch = RecordBatch::try_new(
            file_schema,
            vec![Arc::new(Float64Array::from(vec![1.0, 2.0]))],
        )
        .unwrap();
        let values = HashMap::from([
            ("day".to_string(), Some("2024-01-02".to_string())),
            ("region".to_string(), None),
        ]);
        let out = conform(&batch, &schema, &values).unwrap();
        assert_eq!(out.schema(), schema);
        assert_eq!(out.column(1).as_primitive::<Date32Type>().value(1), 19724);
        assert_eq!(out.column(2).null_count(), 2);
        // a nullable column the file lacks (added to the table after it was written): NULL
        let added = conform(&batch, &schema, &HashMap::new()).unwrap();
        assert_eq!(added.column(1).null_count(), 2);
        let required: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Float64, true),
            Field::new("day", DataType::Date32, false),
        ]));
        let missing = conform(&batch, &required, &HashMap::new()).unwrap_err();
        assert!(missing.to_string().contains("no column `day`"), "{missing}");
    }
}
