//! Writing Parquet data files into a table's folder without committing them: the writer
//! settings of Tributary's files, the channel writer tasks take batches from, and deleting files
//! a run will not commit.

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, GenericByteArray, RecordBatch};
use deltalake::arrow::datatypes::{ByteArrayType, DataType};
use deltalake::kernel::Add;
use deltalake::parquet::basic::Compression as Codec;
use deltalake::parquet::basic::Compression::UNCOMPRESSED;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::task::JoinHandle;

use crate::config::Compression;
use crate::core::schema::{KEYHASH, NONKEYHASH};
use crate::error::{Error, Result};

/// Writes `batches` as Parquet data files into `table`'s folder without committing them;
/// returns their `add` actions (with statistics and partition values).
///
/// # Errors
/// [`Error::Storage`] for a full device; Delta, Parquet and object-store errors.
pub async fn write_files(
    table: &DeltaTable,
    batches: Vec<RecordBatch>,
    properties: WriterProperties,
) -> Result<Vec<Add>> {
    let mut writer = RecordBatchWriter::for_table(table)?.with_writer_properties(properties);
    for batch in batches {
        if batch.num_rows() > 0 {
            writer
                .write(batch)
                .await
                .map_err(|e| write_error(table, e))?;
        }
    }
    writer.flush().await.map_err(|e| write_error(table, e))
}

/// Size at which a data file is finished and the next one started, in Parquet bytes.
pub const TARGET_FILE_BYTES: u64 = 256 << 20;

/// Largest dictionary of a column chunk, bytes; past it the column falls back to plain
/// encoding. The Parquet default (1 MiB) holds 128Ki doubles, all of a 16 MiB row group of the
/// seed shape: unique values were interned, dictionary-encoded and then written plain
/// anyway (8% of a run's CPU time). 128 KiB still dictionary-encodes columns of up to 16Ki
/// distinct doubles per row group.
pub const DICTIONARY_PAGE_BYTES: usize = 128 << 10;

/// Parquet writer settings of Tributary's data files: the configured codec, row groups of at
/// most 1Mi rows and `row_group_bytes` (a row group is buffered while written, and read whole
/// by the next run's scan), and no dictionary for the digest columns nor for `unique_columns`
/// (every value is distinct: a dictionary is built, overflows and is dropped for nothing).
/// The digest columns are stored uncompressed and without statistics: their bytes are
/// uniformly random by construction, so a codec finds nothing and min/max skip nothing.
pub fn writer_properties(
    compression: Compression,
    row_group_bytes: usize,
    unique_columns: &[&str],
) -> WriterProperties {
    let codec = match compression {
        Compression::Snappy => Codec::SNAPPY,
        Compression::Zstd => Codec::ZSTD(Default::default()),
        Compression::None => UNCOMPRESSED,
    };
    let mut builder = WriterProperties::builder();
    for column in unique_columns {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(*column), false);
    }
    builder
        .set_created_by(format!("tributary {}", env!("CARGO_PKG_VERSION")))
        .set_compression(codec)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_max_row_group_bytes(Some(row_group_bytes.max(1 << 20)))
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .set_column_dictionary_enabled(ColumnPath::from(KEYHASH), false)
        .set_column_dictionary_enabled(ColumnPath::from(NONKEYHASH), false)
        .set_column_compression(ColumnPath::from(KEYHASH), UNCOMPRESSED)
        .set_column_compression(ColumnPath::from(NONKEYHASH), UNCOMPRESSED)
        .set_column_statistics_enabled(ColumnPath::from(KEYHASH), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from(NONKEYHASH), EnabledStatistics::None)
        .build()
}

/// Least share of a column's bytes that its codec must save on a sample of them; a column
/// that saves less is stored uncompressed (see [`skip_incompressible`]).
pub const MIN_CODEC_SAVING: f64 = 0.1;
/// Most bytes of a column's values compressed to decide on its codec.
pub const CODEC_SAMPLE_BYTES: usize = 256 << 10;
/// Fewest sampled bytes on which a column's codec is decided; below, it keeps its codec.
const MIN_CODEC_SAMPLE_BYTES: usize = 4 << 10;

/// `properties` with the codec turned off for the columns of `sample` whose values do not
/// compress: the column's own codec (zstd at its level, or snappy) saves less than
/// [`MIN_CODEC_SAVING`] of their first [`CODEC_SAMPLE_BYTES`] (for strings and binaries, their
/// bytes without the offsets). Random doubles (about 6% saved by zstd, less by snappy) are such
/// columns, and so, under snappy alone, are hex text keys such as UUIDs: snappy only finds
/// repeats, while zstd also entropy-codes the 16 symbols (about half saved). Compressing such
/// columns costs the writer and every reader time for next to no space. Columns already
/// uncompressed (the digests), columns of other types (booleans, dictionaries, nested), columns
/// of other codecs (Tributary writes none) and those with fewer than 4 KiB of values in
/// `sample` keep their settings.
pub fn skip_incompressible(properties: WriterProperties, sample: &RecordBatch) -> WriterProperties {
    let mut builder = None;
    for (field, array) in sample.schema().fields().iter().zip(sample.columns()) {
        let path = ColumnPath::from(field.name().as_str());
        let codec = properties.compression(&path);
        let Some((compressed, sampled)) = sample_compression(array.as_ref(), codec) else {
            continue;
        };
        if compressed as f64 > sampled as f64 * (1.0 - MIN_CODEC_SAVING) {
            tracing::debug!(column = %field.name(), compressed, sampled, "stored uncompressed");
            builder = Some(
                builder
                    .unwrap_or_else(|| properties.clone().into_builder())
                    .set_column_compression(path, UNCOMPRESSED),
            );
        }
    }
    builder.map_or(properties, |b| b.build())
}

/// Size under `codec` and length of the first [`CODEC_SAMPLE_BYTES`] of an array's values
/// (None: a codec other than zstd and snappy, not a fixed-width primitive, string or binary
/// array, or under 4 KiB of values).
fn sample_compression(array: &dyn Array, codec: Codec) -> Option<(usize, usize)> {
    if !matches!(codec, Codec::ZSTD(_) | Codec::SNAPPY) {
        return None;
    }
    let data = array.to_data();
    let values: &[u8] = match array.data_type() {
        DataType::Utf8 => byte_values(array.as_string::<i32>()),
        DataType::Binary => byte_values(array.as_binary::<i32>()),
        ty if ty.is_primitive() => {
            let width = ty.primitive_width()?;
            let buffer = data.buffers().first()?;
            buffer
                .as_slice()
                .get(data.offset() * width..(data.offset() + data.len()) * width)?
        }
        _ => return None,
    };
    let sample = &values[..values.len().min(CODEC_SAMPLE_BYTES)];
    if sample.len() < MIN_CODEC_SAMPLE_BYTES {
        return None;
    }
    let compressed = match codec {
        Codec::ZSTD(level) => zstd::bulk::compress(sample, level.compression_level()),
        _ => snap::raw::Encoder::new()
            .compress_vec(sample)
            .map_err(std::io::Error::other),
    };
    Some((compressed.map_or(sample.len(), |c| c.len()), sample.len()))
}

/// The value bytes of a string or binary array, without offsets (a slice's own only).
fn byte_values<T: ByteArrayType<Offset = i32>>(array: &GenericByteArray<T>) -> &[u8] {
    let offsets = array.value_offsets();
    &array.value_data()[offsets[0] as usize..offsets[offsets.len() - 1] as usize]
}

/// The receiving end of a writer channel, shared by the writer tasks of one table: each task
/// takes the next batch when it is ready for one.
#[derive(Clone)]
pub(crate) struct Batches(Arc<tokio::sync::Mutex<Receiver<RecordBatch>>>);

impl Batches {
    /// A channel taking up to two batches ahead, and its shared receiving end.
    pub(super) fn channel() -> (Sender<RecordBatch>, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        (tx, Batches(Arc::new(tokio::sync::Mutex::new(rx))))
    }

    /// A channel and `tasks` (at least one) spawned from `task`, each given the shared
    /// receiving end.
    pub(super) fn pool<T, F>(
        tasks: usize,
        task: impl Fn(Batches) -> F,
    ) -> (Sender<RecordBatch>, Vec<JoinHandle<T>>)
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = Self::channel();
        let handles = (0..tasks.max(1))
            .map(|_| tokio::spawn(task(rx.clone())))
            .collect();
        (tx, handles)
    }

    /// The next batch; None once every sender is dropped or the channel is closed (and the
    /// batches already in it are taken).
    pub(super) async fn next(&self) -> Option<RecordBatch> {
        self.0.lock().await.recv().await
    }

    /// Closes the channel after a writer task's error, so that later sends fail instead of
    /// feeding the table's other tasks (their files are deleted anyway). It waits for the lock:
    /// a sibling task waiting in [`Batches::next`] holds it until a batch comes or every sender
    /// is dropped (at the latest in [`TableWriters::finish`]).
    pub(super) async fn close(&self) {
        self.0.lock().await.close();
    }
}

/// The body of [`write_stream`]: each finished file's `add` goes to `adds` as it is rolled (once
/// its writer holds `target_bytes`); each batch is first passed to `check`, whose error stops
/// the writer.
pub(super) async fn stream_into(
    table: &DeltaTable,
    rx: &Batches,
    properties: WriterProperties,
    adds: &mut Vec<Add>,
    check: &mut (dyn FnMut(&RecordBatch) -> Result<()> + Send),
    target_bytes: u64,
) -> Result<()> {
    // Files are rolled here rather than with the writer's target file size, which makes it
    // write in 1,024-row slices (several times slower on wide rows).
    let mut writer: Option<RecordBatchWriter> = None;
    while let Some(batch) = rx.next().await {
        if batch.num_rows() == 0 {
            continue;
        }
        check(&batch)?;
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(
                RecordBatchWriter::for_table(table)?
                    .with_writer_properties(skip_incompressible(properties.clone(), &batch)),
            ),
        };
        if let Err(e) = writer.write(batch).await {
            writer.reset();
            return Err(write_error(table, e));
        }
        if writer.buffer_len() as u64 >= target_bytes {
            adds.extend(writer.flush().await.map_err(|e| write_error(table, e))?);
        }
    }
    if let Some(mut writer) = writer {
        adds.extend(writer.flush().await.map_err(|e| write_error(table, e))?);
    }
    Ok(())
}

/// A data-file write error of `table`: a full device is [`Error::Storage`] naming the table (the
/// library's own words would be "Failed to parse parquet"); others stay delta-rs errors.
pub(super) fn write_error(table: &DeltaTable, err: deltalake::DeltaTableError) -> Error {
    if !crate::error::chain_has_no_space(&err) {
        return err.into();
    }
    // The innermost error says it best ("No space left on device (os error 28)").
    let mut innermost: &dyn std::error::Error = &err;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    let url = table.table_url();
    Error::Storage {
        action: "cannot write data files of".into(),
        path: url
            .to_file_path()
            .unwrap_or_else(|_| std::path::PathBuf::from(url.as_str())),
        source: std::io::Error::new(std::io::ErrorKind::StorageFull, innermost.to_string()),
    }
}

/// The object-store path of a data file as an `add` action names it (relative to the table
/// root, partition values already percent-encoded): parsed as it is, not encoded a second time
/// (`region=North%20America/...`).
pub(crate) fn file_path(path: &str) -> deltalake::Path {
    deltalake::Path::parse(path).unwrap_or_else(|_| deltalake::Path::from(path))
}

/// Deletes data files that were written but will not be committed (a refused or failed run),
/// then, in a local table, the partition folders (`eff_start_date=.../`) they leave empty.
/// Best effort: a file that cannot be deleted is only unreferenced, and `VACUUM` removes it.
/// An `add` that carries a deletion vector adds a committed data file again with the run's
/// new vector: its vector's file is deleted, never the data file.
pub async fn discard_files(table: &DeltaTable, adds: &[Add]) {
    use futures::StreamExt;
    let mut written: Vec<String> = adds
        .iter()
        .filter_map(|a| match &a.deletion_vector {
            None => Some(a.path.clone()),
            Some(_) => super::deletion_vectors::vector_file(a),
        })
        .collect();
    written.sort();
    written.dedup();
    let paths: Vec<std::result::Result<deltalake::Path, deltalake::ObjectStoreError>> =
        written.iter().map(|p| Ok(file_path(p))).collect();
    let mut results = table
        .object_store()
        .delete_stream(futures::stream::iter(paths).boxed());
    while let Some(result) = results.next().await {
        if let Err(e) = result {
            tracing::warn!("could not delete an uncommitted data file: {e}");
        }
    }
    if let Ok(root) = table.table_url().to_file_path() {
        remove_empty_folders(&root, &written);
    }
}

/// Removes the folders between `root` and each of `files` (paths relative to it, as `add`
/// actions name them) that are empty, deepest first;
/// `root` itself stays. A folder another writer has put a file in since is not empty, and
/// stays too.
fn remove_empty_folders(root: &std::path::Path, files: &[String]) {
    let mut folders = std::collections::BTreeSet::new();
    for file in files {
        let relative = percent_encoding::percent_decode_str(file).decode_utf8_lossy();
        let mut folder = std::path::Path::new(relative.as_ref()).parent();
        while let Some(f) = folder.filter(|f| !f.as_os_str().is_empty()) {
            folders.insert(root.join(f));
            folder = f.parent();
        }
    }
    // Deepest first: a child sorts after its parent.
    for folder in folders.iter().rev() {
        if std::fs::read_dir(folder).is_ok_and(|mut d| d.next().is_none()) {
            let _ = std::fs::remove_dir(folder);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, BinaryArray, Float64Array, StringArray};
    use rand::{Rng, SeedableRng};

    use super::*;

    fn codec(properties: &WriterProperties, column: &str) -> Codec {
        properties.compression(&ColumnPath::from(column))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_go_each_to_one_of_the_writer_tasks() {
        let (tx, rx) = Batches::channel();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut taken = Vec::new();
                    while let Some(batch) = rx.next().await {
                        taken.push(batch.num_rows());
                        // A writer busy encoding: the other task takes the next batch.
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    taken
                })
            })
            .collect();
        drop(rx);
        for rows in 1..=20 {
            let column: ArrayRef = Arc::new(Float64Array::from(vec![0.0; rows]));
            tx.send(RecordBatch::try_from_iter([("v", column)]).unwrap())
                .await
                .unwrap();
        }
        drop(tx);
        let mut all = Vec::new();
        for task in tasks {
            let taken = task.await.unwrap();
            assert!(!taken.is_empty(), "each task took some batches");
            all.extend(taken);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_closed_batch_channel_refuses_senders() {
        let (tx, rx) = Batches::channel();
        rx.close().await;
        let column: ArrayRef = Arc::new(Float64Array::from(vec![0.0]));
        let batch = RecordBatch::try_from_iter([("v", column)]).unwrap();
        assert!(tx.send(batch).await.is_err());
        assert!(rx.next().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_beside_a_waiting_task_ends_the_channel_after_the_next_batch() {
        use std::time::Duration;
        let (tx, rx) = Batches::channel();
        let waiting = tokio::spawn({
            let rx = rx.clone();
            async move {
                let mut taken = 0;
                while rx.next().await.is_some() {
                    taken += 1;
                }
                taken
            }
        });
        // Until the waiting task holds the lock.
        while rx.0.try_lock().is_ok() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The close waits for the next batch.
        let closing = tokio::spawn({
            let rx = rx.clone();
            async move { rx.close().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished());
        let column: ArrayRef = Arc::new(Float64Array::from(vec![0.0]));
        let batch = RecordBatch::try_from_iter([("v", column)]).unwrap();
        tx.send(batch.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("the close ends once the batch is taken")
            .unwrap();
        assert!(
            tx.send(batch).await.is_err(),
            "a send after the close fails"
        );
        let taken = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting task ends with the channel")
            .unwrap();
        assert_eq!(taken, 1);
    }

    #[test]
    fn incompressible_columns_are_stored_uncompressed() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let rows = 8192;
        let random: Vec<f64> = (0..rows).map(|_| rng.gen::<f64>()).collect();
        let prices: Vec<f64> = (0..rows).map(|i| (i % 500) as f64 + 0.99).collect();
        let words: Vec<String> = (0..rows).map(|i| format!("customer-{}", i % 40)).collect();
        let digests: Vec<[u8; 16]> = (0..rows).map(|_| rng.gen()).collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("random", Arc::new(Float64Array::from(random))),
            ("prices", Arc::new(Float64Array::from(prices))),
            ("words", Arc::new(StringArray::from(words))),
            (
                "blob",
                Arc::new(BinaryArray::from_iter_values(digests.iter())),
            ),
            ("small", Arc::new(Float64Array::from(vec![0.5f64; 100]))),
        ];
        let small = RecordBatch::try_from_iter(columns[4..].to_vec()).unwrap();
        let batch = RecordBatch::try_from_iter(columns[..4].to_vec()).unwrap();
        let zstd = writer_properties(Compression::Zstd, 1 << 20, &[]);
        let chosen = skip_incompressible(zstd.clone(), &batch);
        assert_eq!(codec(&chosen, "random"), UNCOMPRESSED);
        assert_eq!(codec(&chosen, "prices"), codec(&zstd, "prices"));
        assert_eq!(codec(&chosen, "words"), codec(&zstd, "words"));
        assert_eq!(codec(&chosen, "blob"), UNCOMPRESSED);
        assert!(matches!(codec(&chosen, "prices"), Codec::ZSTD(_)));
        // A slice is judged on its own values: random bytes, then zeros.
        let halves: Vec<Vec<u8>> = (0..2 * rows)
            .map(|i| match i < rows {
                true => (0..32).map(|_| rng.gen()).collect(),
                false => vec![0; 32],
            })
            .collect();
        let halves: ArrayRef = Arc::new(BinaryArray::from_iter_values(halves.iter()));
        for (from, compressed) in [(0, false), (rows, true)] {
            let slice = RecordBatch::try_from_iter([("half", halves.slice(from, rows))]).unwrap();
            let chosen = skip_incompressible(zstd.clone(), &slice);
            assert_eq!(
                codec(&chosen, "half") != UNCOMPRESSED,
                compressed,
                "from {from}"
            );
        }
        // Empty arrays and empty slices keep their codec (and do not panic).
        let empty = RecordBatch::try_from_iter([("half", halves.slice(rows, 0))]).unwrap();
        let kept = skip_incompressible(zstd.clone(), &empty);
        assert_eq!(codec(&kept, "half"), codec(&zstd, "half"));
        let none_yet: ArrayRef = Arc::new(Float64Array::from(Vec::<f64>::new()));
        let empty = RecordBatch::try_from_iter([("random", none_yet)]).unwrap();
        let kept = skip_incompressible(zstd.clone(), &empty);
        assert_eq!(codec(&kept, "random"), codec(&zstd, "random"));
        // Too few bytes to judge: the codec stays.
        let kept = skip_incompressible(zstd.clone(), &small);
        assert_eq!(codec(&kept, "small"), codec(&zstd, "small"));
        // Snappy columns are judged by snappy; no codec stays none.
        let snappy = writer_properties(Compression::Snappy, 1 << 20, &[]);
        let chosen = skip_incompressible(snappy, &batch);
        assert_eq!(codec(&chosen, "random"), UNCOMPRESSED);
        assert_eq!(codec(&chosen, "words"), Codec::SNAPPY);
        let none = writer_properties(Compression::None, 1 << 20, &[]);
        assert_eq!(
            codec(&skip_incompressible(none, &batch), "words"),
            UNCOMPRESSED
        );
    }

    /// Hex text (UUID keys) is judged by the column's own codec: zstd entropy-codes its 16
    /// symbols and keeps it, snappy finds no repeats in it and leaves it uncompressed.
    #[test]
    fn hex_keys_keep_zstd_and_drop_snappy() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        let keys: Vec<String> = (0..4096)
            .map(|_| {
                uuid::Builder::from_random_bytes(rng.gen())
                    .into_uuid()
                    .to_string()
            })
            .collect();
        let batch =
            RecordBatch::try_from_iter([("key", Arc::new(StringArray::from(keys)) as ArrayRef)])
                .unwrap();
        let zstd = writer_properties(Compression::Zstd, 1 << 20, &[]);
        assert!(matches!(
            codec(&skip_incompressible(zstd, &batch), "key"),
            Codec::ZSTD(_)
        ));
        let snappy = writer_properties(Compression::Snappy, 1 << 20, &[]);
        assert_eq!(
            codec(&skip_incompressible(snappy, &batch), "key"),
            UNCOMPRESSED
        );
        // The level configured is the level sampled (a higher level saves at least as much).
        let level = deltalake::parquet::basic::ZstdLevel::try_new(9).unwrap();
        let zstd9 = WriterProperties::builder()
            .set_compression(Codec::ZSTD(level))
            .build();
        assert_eq!(
            codec(&skip_incompressible(zstd9, &batch), "key"),
            Codec::ZSTD(level)
        );
    }
}
