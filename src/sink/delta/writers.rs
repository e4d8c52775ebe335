//! The table writers of a run: tasks that take the rows a run produces from channels and write
//! them as uncommitted data files of the current and history tables (files shared by both where
//! the tables can share, see [`shared`](super::shared)).

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::Add;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::DeltaTable;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;

use super::shared::{write_shared, SharedFiles};
use super::write::{discard_files, stream_into, Batches, TARGET_FILE_BYTES};
use super::DeltaLake;
use crate::error::{Error, Result};

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
        sent.then_some(()).ok_or(Error::WriterGone)
    }

    /// Sends a batch of rows of both tables, all of one `eff_start_date` (see
    /// [`Senders::both`]), waiting while the writers are busy; an empty batch is not sent.
    ///
    /// # Errors
    /// [`Error::WriterGone`] when a writer has stopped (its own error explains why).
    pub async fn send_both(&self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let sent = match &self.both {
            Some(both) => both.send(batch).await.is_ok(),
            None => {
                self.current.send(batch.clone()).await.is_ok()
                    && self.history.send(batch).await.is_ok()
            }
        };
        sent.then_some(()).ok_or(Error::WriterGone)
    }

    /// Whether rows sent to both tables are written once and shared (an unpartitioned current
    /// table), not encoded once per table.
    pub fn shares(&self) -> bool {
        self.both.is_some()
    }

    /// Ends the channel of the rows of both tables and, with `current`, the current table's:
    /// their writers take the batches already sent, then finish their last files while the
    /// run goes on (reading back the gone rows, say) instead of in [`TableWriters::finish`].
    /// A later send to an ended channel fails ([`Error::WriterGone`]). The channels end once every
    /// clone of these senders is dropped too.
    pub fn end(&mut self, current: bool) {
        self.both = None;
        if current {
            // A sender whose receiver is gone: the writers' channel loses this sender.
            self.current = tokio::sync::mpsc::channel(1).0;
        }
    }
}

/// The writers of a run's current and history tables: `per_table` tasks each
/// ([`write_stream`]), and as many for the rows of both ([`write_shared`]) when the tables can
/// share files. The tasks of a table take batches from one channel ([`Batches`]), each writing
/// its own files, so one table's rows are encoded on several cores.
pub struct TableWriters {
    /// The channels into the writers.
    pub tx: Senders,
    tables: (DeltaTable, DeltaTable),
    current: Vec<JoinHandle<Result<Vec<Add>>>>,
    history: Vec<JoinHandle<Result<Vec<Add>>>>,
    shared: Vec<JoinHandle<Result<SharedFiles>>>,
}

impl TableWriters {
    /// Starts the writers, `per_table` (at least one) for each channel.
    pub fn start(lake: &DeltaLake, properties: WriterProperties, per_table: usize) -> Self {
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
    match stream_into(
        &table,
        &rx,
        properties,
        &mut adds,
        &mut |_| Ok(()),
        TARGET_FILE_BYTES,
    )
    .await
    {
        Ok(()) => Ok(adds),
        Err(e) => {
            rx.close().await;
            // Files already rolled are this writer's to delete: its caller never sees them.
            discard_files(&table, &adds).await;
            Err(e)
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
