//! Writing data files and committing a run to the tables (see the contract in `lake/mod.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, GenericByteArray, RecordBatch};
use deltalake::arrow::datatypes::{ByteArrayType, DataType};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;

use super::log::{txn_version, CommitEntry, PendingCommit, RunRecord, COMMIT_INFO_KEY};
use super::shared::{write_shared, SharedFiles};
use super::{Lake, HISTORY};
use crate::config::Compression;
use crate::error::{Error, Result};
use crate::schema::{KEYHASH, NONKEYHASH};
use deltalake::parquet::basic::Compression as Codec;
use deltalake::parquet::basic::Compression::UNCOMPRESSED;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::task::JoinHandle;

/// The file actions planned for one table.
#[derive(Debug, Default, Clone)]
pub struct Planned {
    pub adds: Vec<Add>,
    pub removes: Vec<Remove>,
}

impl Planned {
    /// Bytes of the added files.
    pub fn bytes_added(&self) -> u64 {
        self.adds.iter().map(|a| a.size as u64).sum()
    }
}

/// Writes `batches` as Parquet data files into `table`'s folder without committing them;
/// returns their `add` actions (with statistics and partition values).
///
/// # Errors
/// Delta, Parquet and object-store errors.
pub async fn write_files(
    table: &DeltaTable,
    batches: Vec<RecordBatch>,
    properties: WriterProperties,
) -> Result<Vec<Add>> {
    let mut writer = RecordBatchWriter::for_table(table)?.with_writer_properties(properties);
    for batch in batches {
        if batch.num_rows() > 0 {
            writer.write(batch).await?;
        }
    }
    Ok(writer.flush().await?)
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

/// The channels into a run's table writers ([`TableWriters`]), each taking up to two batches
/// ahead.
#[derive(Clone)]
pub struct Senders {
    /// Rows of the current table alone.
    pub current: Sender<RecordBatch>,
    /// Rows of the history table alone.
    pub history: Sender<RecordBatch>,
    /// Rows of both tables, all of one `eff_start_date` (a snapshot run's I and U rows):
    /// written once and shared ([`shared`](super::shared)). None when the tables cannot share
    /// files (a partitioned current table): such rows go to both channels above.
    both: Option<Sender<RecordBatch>>,
}

impl Senders {
    /// Sends a batch of rows of both tables (see [`Senders::both`]), blocking while the
    /// writers are busy.
    ///
    /// # Errors
    /// [`Error::Internal`] when a writer has stopped (its own error explains why).
    pub fn blocking_send_both(&self, batch: RecordBatch) -> Result<()> {
        let sent = match &self.both {
            Some(both) => both.blocking_send(batch).is_ok(),
            None => {
                self.current.blocking_send(batch.clone()).is_ok()
                    && self.history.blocking_send(batch).is_ok()
            }
        };
        sent.then_some(()).ok_or_else(writer_gone)
    }

    /// Ends the channel of the rows of both tables and, with `current`, the current table's:
    /// their writers take the batches already sent, then finish their last files while the
    /// run goes on (reading back the gone rows, say) instead of in [`TableWriters::finish`].
    /// A later send to an ended channel fails ([`writer_gone`]). The channels end once every
    /// clone of these senders is dropped too.
    pub fn end(&mut self, current: bool) {
        self.both = None;
        if current {
            // A sender whose receiver is gone: the writers' channel loses this sender.
            self.current = tokio::sync::mpsc::channel(1).0;
        }
    }
}

/// The message of [`writer_gone`].
pub const WRITER_GONE: &str = "a table writer stopped early";

/// The error of a send to a writer that has stopped (its own error explains why).
pub fn writer_gone() -> Error {
    Error::Internal(WRITER_GONE.into())
}

/// The writers of a run's current and history tables: `per_table` tasks each
/// ([`write_stream`]), and as many for the rows of both ([`write_shared`]) when the tables can
/// share files. The tasks of a table take batches from one channel ([`Batches`]), each writing
/// its own files, so one table's rows are encoded on several cores.
pub struct TableWriters {
    pub tx: Senders,
    tables: (DeltaTable, DeltaTable),
    current: Vec<JoinHandle<Result<Vec<Add>>>>,
    history: Vec<JoinHandle<Result<Vec<Add>>>>,
    shared: Vec<JoinHandle<Result<SharedFiles>>>,
}

impl TableWriters {
    /// Starts the writers, `per_table` (at least one) for each channel.
    pub fn start(lake: &Lake, properties: WriterProperties, per_table: usize) -> Self {
        let tables = (lake.current.clone(), lake.history.clone());
        let partitioned = lake
            .current
            .snapshot()
            .map_or(true, |s| !s.metadata().partition_columns().is_empty());
        let pool = |table: &DeltaTable| {
            Batches::pool(per_table, |rx| {
                write_stream(table.clone(), rx, properties.clone())
            })
        };
        let (current_tx, current) = pool(&tables.0);
        let (history_tx, history) = pool(&tables.1);
        let (both, shared) = match partitioned {
            true => (None, Vec::new()),
            false => {
                let (tx, tasks) = Batches::pool(per_table, |rx| {
                    write_shared(tables.0.clone(), tables.1.clone(), rx, properties.clone())
                });
                (Some(tx), tasks)
            }
        };
        TableWriters {
            tx: Senders {
                current: current_tx,
                history: history_tx,
                both,
            },
            tables,
            current,
            history,
            shared,
        }
    }

    /// Closes the channels and waits for the writers: the `add` actions of the files of each
    /// table (current, history), shared ones included. A writer task's error is its table's
    /// result; a shared writer task's is current's. Files written but not in a result (the
    /// other files of a table whose result is an error) are deleted, except those of a task
    /// that panicked (unreferenced: `VACUUM` removes them).
    pub async fn finish(self) -> (Result<Vec<Add>>, Result<Vec<Add>>) {
        drop(self.tx);
        let (current_table, history_table) = &self.tables;
        let current = join_pool(current_table, self.current).await;
        let history = join_pool(history_table, self.history).await;
        let (shared, shared_error) = join_all(self.shared).await;
        let (mut shared_current, mut shared_history) = (Vec::new(), Vec::new());
        for files in shared {
            shared_current.extend(files.current);
            shared_history.extend(files.history);
        }
        let current_shared = match shared_error {
            None => Ok(shared_current),
            Some(e) => {
                discard_files(current_table, &shared_current).await;
                discard_files(history_table, &shared_history).await;
                shared_history.clear();
                Err(e)
            }
        };
        (
            merge_files(current_table, current, current_shared).await,
            merge_files(history_table, history, Ok(shared_history)).await,
        )
    }
}

/// The receiving end of a writer channel, shared by the writer tasks of one table: each task
/// takes the next batch when it is ready for one.
#[derive(Clone)]
pub(super) struct Batches(Arc<tokio::sync::Mutex<Receiver<RecordBatch>>>);

impl Batches {
    /// A channel taking up to two batches ahead, and its shared receiving end.
    fn channel() -> (Sender<RecordBatch>, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        (tx, Batches(Arc::new(tokio::sync::Mutex::new(rx))))
    }

    /// A channel and `tasks` (at least one) spawned from `task`, each given the shared
    /// receiving end.
    fn pool<T, F>(
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

/// One table's written files from two sources: all of them, or the first error (the other
/// source's files deleted).
async fn merge_files(
    table: &DeltaTable,
    own: Result<Vec<Add>>,
    shared: Result<Vec<Add>>,
) -> Result<Vec<Add>> {
    match (own, shared) {
        (Ok(mut own), Ok(shared)) => {
            own.extend(shared);
            Ok(own)
        }
        (Err(e), Ok(written)) | (Ok(written), Err(e)) => {
            discard_files(table, &written).await;
            Err(e)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

/// The files of a table's writer tasks: all of them, or the first error (the files of the
/// tasks that finished deleted).
async fn join_pool(
    table: &DeltaTable,
    tasks: Vec<JoinHandle<Result<Vec<Add>>>>,
) -> Result<Vec<Add>> {
    let (files, error) = join_all(tasks).await;
    let adds = files.concat();
    match error {
        None => Ok(adds),
        Some(e) => {
            discard_files(table, &adds).await;
            Err(e)
        }
    }
}

/// Waits for every task ([`join_writer`]): the results of those that succeeded, and the
/// first error.
async fn join_all<T>(tasks: Vec<JoinHandle<Result<T>>>) -> (Vec<T>, Option<Error>) {
    let (mut done, mut error) = (Vec::new(), None);
    for task in tasks {
        match join_writer(task).await {
            Ok(t) => done.push(t),
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    (done, error)
}

/// Streams the batches it takes from `rx` (beside the table's other writer tasks) into Parquet
/// data files of `table` (files roll at [`TARGET_FILE_BYTES`]) without committing them;
/// returns their `add` actions once the channel ends (every sender dropped, or a sibling task
/// closed it after its error). Memory stays bounded: files are
/// written as batches arrive. The first batch decides which columns are stored uncompressed
/// ([`skip_incompressible`]).
///
/// # Errors
/// Delta, Parquet and object-store errors; `rx` is closed and the files finished so far are
/// deleted again.
async fn write_stream(
    table: DeltaTable,
    rx: Batches,
    properties: WriterProperties,
) -> Result<Vec<Add>> {
    let mut adds = Vec::new();
    match stream_into(&table, &rx, properties, &mut adds, &mut |_| Ok(())).await {
        Ok(()) => Ok(adds),
        Err(e) => {
            rx.close().await;
            // Files already rolled are this writer's to delete: its caller never sees them.
            discard_files(&table, &adds).await;
            Err(e)
        }
    }
}

/// The body of [`write_stream`]: each finished file's `add` goes to `adds` as it is rolled;
/// each batch is first passed to `check`, whose error stops the writer.
pub(super) async fn stream_into(
    table: &DeltaTable,
    rx: &Batches,
    properties: WriterProperties,
    adds: &mut Vec<Add>,
    check: &mut (dyn FnMut(&RecordBatch) -> Result<()> + Send),
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
            return Err(e.into());
        }
        if writer.buffer_len() as u64 >= TARGET_FILE_BYTES {
            adds.extend(writer.flush().await?);
        }
    }
    if let Some(mut writer) = writer {
        adds.extend(writer.flush().await?);
    }
    Ok(())
}

/// Deletes data files that were written but will not be committed (a refused or failed run).
/// Best effort: a file that cannot be deleted is only unreferenced, and `VACUUM` removes it.
pub async fn discard_files(table: &DeltaTable, adds: &[Add]) {
    use futures::StreamExt;
    let paths: Vec<std::result::Result<deltalake::Path, deltalake::ObjectStoreError>> = adds
        .iter()
        .map(|a| Ok(deltalake::Path::from(a.path.as_str())))
        .collect();
    let mut results = table
        .object_store()
        .delete_stream(futures::stream::iter(paths).boxed());
    while let Some(result) = results.next().await {
        if let Err(e) = result {
            tracing::warn!("could not delete an uncommitted data file: {e}");
        }
    }
}

/// Waits for a writer task.
///
/// # Errors
/// The writer's error, or [`Error::Internal`] when its task panicked.
async fn join_writer<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    handle
        .await
        .map_err(|e| Error::Internal(format!("writer task failed: {e}")))?
}

/// Deletes the files of every writer that finished ([`discard_files`]), after a failed run.
pub async fn discard_written(written: &[(&DeltaTable, &Result<Vec<Add>>)]) {
    for (table, adds) in written {
        if let Ok(adds) = adds {
            discard_files(table, adds).await;
        }
    }
}

/// Test hook: aborts the process at a named point (`TRIBUTARY_CRASH_AT`), to prove that an
/// interrupted run is completed by the next one. Unset in normal use.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("TRIBUTARY_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("TRIBUTARY_CRASH_AT={name}: aborting");
        std::process::abort();
    }
}

fn actions(planned: &Planned) -> Vec<Action> {
    let mut out: Vec<Action> = planned
        .removes
        .iter()
        .cloned()
        .map(Action::Remove)
        .collect();
    out.extend(planned.adds.iter().cloned().map(Action::Add));
    out
}

/// A commit that failed, and whether it is known not to have landed.
enum Failed {
    /// Nothing was committed: refused before the attempt, or the log shows an earlier run (or
    /// none) after it.
    NotLanded(Error),
    /// The commit may have landed: the log could not be read after the attempt, or it records
    /// a later run.
    Unknown(Error),
}

impl From<Failed> for Error {
    fn from(failed: Failed) -> Error {
        match failed {
            Failed::NotLanded(e) | Failed::Unknown(e) => e,
        }
    }
}

/// Commits `actions` with `txn(app_id, seq)` and the run's commit-info entry.
async fn commit_table(
    table: &mut DeltaTable,
    role: &str,
    app_id: &str,
    actions: Vec<Action>,
    entry: &CommitEntry,
    mode: SaveMode,
) -> std::result::Result<u64, Failed> {
    let seq = entry.run.seq;
    if let Some(done) = txn_version(table, app_id)
        .await
        .map_err(Failed::NotLanded)?
    {
        if done >= seq {
            return Err(Failed::NotLanded(Error::Lake {
                table: role.to_string(),
                reason: format!("already records run {done}; refusing to commit run {seq} again"),
            }));
        }
    }
    let metadata = serde_json::to_value(entry).map_err(|e| Failed::NotLanded(e.into()))?;
    let properties = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id, seq))
        .with_metadata([(COMMIT_INFO_KEY.to_string(), metadata)]);
    let snapshot = table.snapshot().map_err(|e| Failed::NotLanded(e.into()))?;
    let partition_by = snapshot.metadata().partition_columns().to_vec();
    let operation = DeltaOperation::Write {
        mode,
        partition_by: (!partition_by.is_empty()).then_some(partition_by),
        predicate: None,
    };
    let result = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await;
    table
        .update_state()
        .await
        .map_err(|e| Failed::Unknown(e.into()))?;
    match result {
        Ok(done) => Ok(done.version()),
        Err(err) => {
            // A commit can fail after it landed: believe the log, not the error.
            let recorded = txn_version(table, app_id).await.map_err(Failed::Unknown)?;
            match after_error(recorded, seq) {
                Some(true) => {
                    tracing::warn!(table = role, run = seq, error = %err, "commit reported an error but landed");
                    Ok(table.version().unwrap_or_default())
                }
                Some(false) => Err(Failed::NotLanded(err.into())),
                None => Err(Failed::Unknown(err.into())),
            }
        }
    }
}

/// Whether a commit of run `seq` that reported an error landed, from the run the table's log
/// records after it (`recorded`): yes when it records `seq`, no when it records an earlier run
/// or none, unknown (None) when it records a later one: another process may have completed
/// this run and committed the next since, so its files may be referenced.
fn after_error(recorded: Option<i64>, seq: i64) -> Option<bool> {
    match recorded {
        Some(done) if done == seq => Some(true),
        Some(done) if done > seq => None,
        _ => Some(false),
    }
}

/// Commits a follower table's pending actions for `run`, unless it already records the run.
pub(super) async fn complete(
    table: &mut DeltaTable,
    role: &str,
    app_id: &str,
    run: &RunRecord,
    pending: &PendingCommit,
) -> Result<Option<u64>> {
    if txn_version(table, app_id)
        .await?
        .is_some_and(|v| v >= run.seq)
    {
        return Ok(None);
    }
    let version = table.version();
    if version != pending.read_version {
        return Err(Error::Lake {
            table: role.to_string(),
            reason: format!(
                "changed since run {} planned its commit (version {:?}, planned against {:?}); \
                 cannot complete the run safely",
                run.seq, version, pending.read_version
            ),
        });
    }
    let entry = CommitEntry {
        run: run.clone(),
        pending: HashMap::new(),
    };
    let planned = Planned {
        adds: pending.adds.clone(),
        removes: pending.removes.clone(),
    };
    let mode = if planned.removes.is_empty() {
        SaveMode::Append
    } else {
        SaveMode::Overwrite
    };
    Ok(Some(
        commit_table(table, role, app_id, actions(&planned), &entry, mode).await?,
    ))
}

pub(super) async fn commit_run(
    lake: &mut Lake,
    mut run: RunRecord,
    history: Planned,
    followers: Vec<(&'static str, DeltaTable, Planned)>,
) -> Result<HashMap<&'static str, u64>> {
    let app_id = lake.app_id().to_string();
    let pending: HashMap<String, PendingCommit> = followers
        .iter()
        .map(|(role, table, planned)| {
            let pending = PendingCommit {
                read_version: table.version(),
                adds: planned.adds.clone(),
                removes: planned.removes.clone(),
            };
            (role.to_string(), pending)
        })
        .collect();
    crash_point("before-history-commit");
    let entry = CommitEntry {
        run: run.clone(),
        pending,
    };
    let mode = if history.removes.is_empty() {
        SaveMode::Append
    } else {
        SaveMode::Overwrite
    };
    let committed = commit_table(
        &mut lake.history,
        HISTORY,
        &app_id,
        actions(&history),
        &entry,
        mode,
    )
    .await;
    let history_version = match committed {
        Ok(version) => version,
        // No table refers to the run's files: delete them. (Once history has committed, the
        // followers' files are its pending actions, which the next run completes.)
        Err(Failed::NotLanded(e)) => {
            discard_files(&lake.history, &history.adds).await;
            for (_, table, planned) in &followers {
                discard_files(table, &planned.adds).await;
            }
            return Err(e);
        }
        Err(Failed::Unknown(e)) => return Err(e),
    };
    let mut versions = HashMap::from([(HISTORY, history_version)]);
    crash_point("after-history-commit");
    run.history_version = Some(history_version);
    for (i, (role, mut table, _)) in followers.into_iter().enumerate() {
        if i > 0 {
            crash_point("between-follower-commits");
        }
        let pending = &entry.pending[role];
        if let Some(v) = complete(&mut table, role, &app_id, &run, pending).await? {
            versions.insert(role, v);
        }
        if role == super::CURRENT {
            lake.current = table;
        }
    }
    Ok(versions)
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

    #[test]
    fn a_failed_commit_landed_only_if_the_log_records_its_run() {
        assert_eq!(after_error(Some(5), 5), Some(true));
        assert_eq!(after_error(Some(4), 5), Some(false));
        assert_eq!(after_error(None, 5), Some(false));
        // A later run recorded: this one may have landed and been built on; keep its files.
        assert_eq!(after_error(Some(6), 5), None);
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
