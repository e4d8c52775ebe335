//! The run transaction: the one type that owns a run of `run`, `sync` and `capture` from its
//! first row to its commit (the contract is on [`Sink`](crate::sink::Sink)).
//!
//! 1. [`RunTransaction::begin`]: the run's sequence number (the next Delta `txn` version of the
//!    table's app id) and its table writers.
//! 2. The pipeline sends rows to [`RunTransaction::senders`] as it produces them.
//! 3. [`RunTransaction::finish_writes`]: the writers finish their files; the pipeline's own
//!    result and the writers' decide together whether the run goes on.
//! 4. Follower tables are written ([`RunTransaction::write_follower`]: rejects), then
//!    [`RunTransaction::commit`] writes the checkpoint (applied files) and commits every table,
//!    history first.
//!
//! Any error on the way abandons the run: the files its writers finished are deleted (tables
//! are never removed, see [`CreatedTables`]), and the error is returned
//! ([`RunTransaction::guard`] does this for the pipeline's own steps). Error precedence: the pipeline's error, unless it only saw a
//! writer stop ([`Error::WriterGone`]): then the writer's own error (disk full, say).

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::{Add, Remove};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::DeltaTable;

use super::log::RunRecord;
use super::write::{discard_files, write_files};
use super::{
    applied, change_feed, deletion_vectors, CreatedTables, DeltaLake, Planned, Senders,
    TableWriters,
};
use crate::core::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::sink::{TableRole, Versions};

/// What a run commits besides its rows.
#[derive(Debug, Clone, Default)]
pub struct RunCommit {
    /// Business effective date, `YYYY-MM-DD`.
    pub business_date: String,
    /// Input fingerprint (snapshot runs: of the extract files; change-log runs: of the
    /// checkpoint, [`Checkpoint::fingerprint`]).
    pub fingerprint: String,
    /// Current table version the run read as its base (None: no earlier run).
    pub current_base_version: Option<u64>,
    /// Current table files the run replaces.
    pub current_removes: Vec<Remove>,
    /// Current table files whose rows the run marks deleted in deletion vectors, written
    /// at the commit ([`deletion_vectors::write`]).
    pub current_marked: Vec<deletion_vectors::Marked>,
    /// History table files the run replaces (`run --replace`).
    pub history_removes: Vec<Remove>,
    /// The source position the run's rows reach, committed with them.
    pub checkpoint: Option<Checkpoint>,
    /// The run's rows by operation, recorded in the log ([`RunRecord::counts`]).
    pub counts: Option<crate::core::op::OpCounts>,
    /// Memory the change data feed's comparison may hold before it spills, and the folder it
    /// spills under (None: [`DEFAULT_MEMORY_LIMIT`](crate::config::DEFAULT_MEMORY_LIMIT) and
    /// the system temporary folder). Used only by tables that record the feed.
    pub change_feed_memory: Option<(u64, std::path::PathBuf)>,
}

/// A run in flight: its sequence number, its table writers, the files written so far and the
/// tables created for it (see the module docs).
pub struct RunTransaction {
    seq: i64,
    /// This run's id (a UUID), recorded in every commit: told apart from another writer's run
    /// of the same sequence number.
    id: String,
    current: DeltaTable,
    history: DeltaTable,
    properties: WriterProperties,
    writers: Option<TableWriters>,
    current_adds: Vec<Add>,
    history_adds: Vec<Add>,
    followers: Vec<(TableRole, DeltaTable, Vec<Add>)>,
    /// Files of follower tables that the run's files replace.
    follower_removes: Vec<(TableRole, Vec<Remove>)>,
    created: CreatedTables,
    /// Committed or abandoned: nothing is left for [`Drop`] to report.
    ended: bool,
    /// When the run began ([`RunRecord::duration_ms`]).
    started: std::time::Instant,
}

impl RunTransaction {
    /// Begins a run on `lake` whose reads reflect run `base_run` (0: an empty lake): its
    /// sequence number is `base_run + 1`, which only one run can commit (a run that finds it
    /// taken at its commit is a conflict). Starts `writer_tasks` writers per table (at least
    /// one) and takes over the folders `lake`'s open made.
    pub(super) fn begin(
        lake: &mut DeltaLake,
        base_run: i64,
        properties: WriterProperties,
        writer_tasks: usize,
    ) -> Self {
        let created = lake.created.take();
        let seq = base_run + 1;
        let writers = TableWriters::start(lake, properties.clone(), writer_tasks);
        RunTransaction {
            seq,
            id: uuid::Uuid::new_v4().to_string(),
            current: lake.current.clone(),
            history: lake.history.clone(),
            properties,
            writers: Some(writers),
            current_adds: Vec::new(),
            history_adds: Vec::new(),
            followers: Vec::new(),
            follower_removes: Vec::new(),
            created,
            ended: false,
            started: std::time::Instant::now(),
        }
    }

    /// The run's sequence number.
    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// The run's id (a UUID).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The writers' channels, until [`RunTransaction::finish_writes`].
    ///
    /// # Errors
    /// [`Error::WriterGone`] once the writers have finished.
    pub fn senders(&mut self) -> Result<&mut Senders> {
        self.writers
            .as_mut()
            .map(|w| &mut w.tx)
            .ok_or(Error::WriterGone)
    }

    /// The data files written so far for a table (current and history: once the writers have
    /// finished; followers: once written).
    pub fn written(&self, role: TableRole) -> &[Add] {
        match role {
            TableRole::Current => &self.current_adds,
            TableRole::History => &self.history_adds,
            TableRole::Rejects | TableRole::Applied | TableRole::Tombstones => self
                .followers
                .iter()
                .find(|(r, _, _)| *r == role)
                .map_or(&[], |(_, _, adds)| adds.as_slice()),
        }
    }

    /// Closes the writers' channels and waits for their files. `produced` is the pipeline's
    /// result: when it or a writer failed, the run is abandoned and the error returned (the
    /// pipeline's own, unless it is [`Error::WriterGone`]: then the writer's).
    ///
    /// # Errors
    /// As said; [`Error::Internal`] when called twice.
    pub async fn finish_writes<T>(&mut self, produced: Result<T>) -> Result<T> {
        let Some(writers) = self.writers.take() else {
            return Err(Error::Internal("the run's writers finished twice".into()));
        };
        let (current, history) = writers.finish().await;
        if let Ok(adds) = &current {
            self.current_adds.extend(adds.iter().cloned());
        }
        if let Ok(adds) = &history {
            self.history_adds.extend(adds.iter().cloned());
        }
        let writer_error = current.err().or(history.err());
        match (produced, writer_error) {
            (Ok(done), None) => Ok(done),
            (produced, writer_error) => {
                self.abandon_files().await;
                Err(match (produced, writer_error) {
                    (Err(Error::WriterGone), Some(e)) => e,
                    (Err(e), _) => e,
                    (Ok(_), Some(e)) => e,
                    (Ok(_), None) => Error::Internal("run failed without an error".into()),
                })
            }
        }
    }

    /// Passes a step's result through; on its error the run is abandoned first.
    ///
    /// # Errors
    /// The step's error.
    pub async fn guard<T>(&mut self, step: Result<T>) -> Result<T> {
        if step.is_err() {
            self.abandon_files().await;
        }
        step
    }

    /// Writes `batches` as data files of a follower table (rejects, applied), creating the
    /// table if it is absent (a table is never removed again: see [`CreatedTables`]).
    ///
    /// # Errors
    /// [`Error::Internal`] for current and history (written through the writers); Delta and
    /// Parquet errors. The run is abandoned.
    pub async fn write_follower(
        &mut self,
        lake: &DeltaLake,
        role: TableRole,
        batches: Vec<RecordBatch>,
        properties: WriterProperties,
    ) -> Result<()> {
        if matches!(role, TableRole::Current | TableRole::History) {
            let e = Error::Internal(format!("{} is not written as a follower", role.as_str()));
            return self.guard(Err(e)).await;
        }
        let opened = match lake.open_follower(role, Some(&mut self.created)).await {
            Ok(Some(table)) => Ok(table),
            Ok(None) => Err(Error::Internal(format!(
                "{} table not created",
                role.as_str()
            ))),
            Err(e) => Err(e),
        };
        let table = self.guard(opened).await?;
        // A table of an older layout (fewer trailing columns, accepted by `table::check`) is
        // written in its own layout.
        let columns = match table.snapshot() {
            Ok(state) => state.snapshot().arrow_schema().fields().len(),
            Err(e) => return self.guard(Err(e.into())).await,
        };
        let projected: std::result::Result<Vec<RecordBatch>, _> = batches
            .into_iter()
            .map(|b| match b.num_columns() > columns {
                true => b.project(&(0..columns).collect::<Vec<_>>()),
                false => Ok(b),
            })
            .collect();
        let batches = self.guard(projected.map_err(Error::from)).await?;
        let written = write_files(&table, batches, properties)
            .await
            .map(|adds| (table, adds));
        let (table, adds) = self.guard(written).await?;
        self.followers.push((role, table, adds));
        Ok(())
    }

    /// Writes `batches` as data files of a follower table that replace its files `removes` (a
    /// rewrite of the table: compaction), as [`RunTransaction::write_follower`].
    ///
    /// # Errors
    /// As [`RunTransaction::write_follower`].
    pub async fn replace_follower(
        &mut self,
        lake: &DeltaLake,
        role: TableRole,
        batches: Vec<RecordBatch>,
        properties: WriterProperties,
        removes: Vec<Remove>,
    ) -> Result<()> {
        self.write_follower(lake, role, batches, properties).await?;
        self.follower_removes.push((role, removes));
        Ok(())
    }

    /// Commits the run: writes its checkpoint, then commits history (the commit point) and
    /// every follower (current first), each with the run's `txn`. Returns the new versions.
    ///
    /// # Errors
    /// [`Error::Internal`] when the writers have not finished; errors writing the checkpoint;
    /// commit errors (see `commit::commit_run`: before the commit point the run's files and
    /// the empty folders it made are deleted, after it the next open completes the run).
    pub async fn commit(mut self, lake: &mut DeltaLake, commit: RunCommit) -> Result<Versions> {
        if self.writers.is_some() {
            let e = Error::Internal("a run committed before its writers finished".into());
            return self.guard(Err(e)).await;
        }
        match &commit.checkpoint {
            Some(Checkpoint::Files(files)) => {
                let batch = applied::batch(files, self.seq);
                let batch = self.guard(batch).await?;
                let properties = self.properties.clone();
                self.write_follower(lake, TableRole::Applied, vec![batch], properties)
                    .await?;
            }
            Some(Checkpoint::Lsn(_)) | None => {}
        }
        let record = RunRecord {
            source_lsn: commit
                .checkpoint
                .as_ref()
                .and_then(Checkpoint::position)
                .map(crate::core::checkpoint::SlotPosition::text),
            seq: self.seq,
            run_id: self.id.clone(),
            business_date: commit.business_date,
            fingerprint: commit.fingerprint,
            current_base_version: commit.current_base_version,
            history_version: None,
            operation: None,
            target_file_bytes: None,
            counts: commit.counts,
            duration_ms: Some(self.started.elapsed().as_millis() as u64),
        };
        // The current table's change data feed, where it records one (history's commits add
        // files only: readers take its added rows as inserts).
        let keyed = !lake.spec.key_nullable;
        let cdc = match change_feed::needed(
            &self.current,
            keyed,
            &commit.current_removes,
            &self.current_adds,
        ) {
            Ok(true) => {
                let (memory, spill) = match &commit.change_feed_memory {
                    Some((memory, spill)) => (*memory, Some(spill.as_path())),
                    None => (crate::config::DEFAULT_MEMORY_LIMIT, None),
                };
                let written = change_feed::write(
                    &self.current,
                    &commit.current_removes,
                    &self.current_adds,
                    self.properties.clone(),
                    change_feed::Budget {
                        workers: crate::core::threads::get(),
                        memory,
                        spill,
                    },
                );
                self.guard(written.await).await?
            }
            Ok(false) => Vec::new(),
            Err(e) => return self.guard(Err(e)).await,
        };
        // The deletion vectors go to their file last: a failure before it leaves nothing of
        // them to delete, and from here the commit protocol discards them with the run's
        // files (`discard_files` deletes the vectors' file, never the data files they mark).
        let mut current_removes = commit.current_removes;
        let mut current_adds = std::mem::take(&mut self.current_adds);
        if !commit.current_marked.is_empty() {
            let written = deletion_vectors::write(&self.current, commit.current_marked);
            let (removes, adds) = match written.await {
                Ok(actions) => actions,
                Err(e) => {
                    self.current_adds = current_adds;
                    return self.guard(Err(e)).await;
                }
            };
            current_removes.extend(removes);
            current_adds.extend(adds);
        }
        let history = Planned {
            adds: std::mem::take(&mut self.history_adds),
            removes: commit.history_removes,
            cdc: Vec::new(),
        };
        let mut followers = vec![(
            TableRole::Current,
            self.current.clone(),
            Planned {
                adds: current_adds,
                removes: current_removes,
                cdc,
            },
        )];
        let mut removes = std::mem::take(&mut self.follower_removes);
        for (role, table, adds) in std::mem::take(&mut self.followers) {
            let planned = Planned {
                adds,
                cdc: Vec::new(),
                removes: removes
                    .iter_mut()
                    .filter(|(r, _)| *r == role)
                    .flat_map(|(_, files)| std::mem::take(files))
                    .collect(),
            };
            followers.push((role, table, planned));
        }
        // From here the commit protocol owns the files (and deletes them if nothing lands).
        self.ended = true;
        let mut created = self.created.take();
        lake.commit_run(record, history, followers, &mut created)
            .await
    }

    /// Gives the run up: deletes its files and the tables created for it.
    pub async fn abandon(mut self) {
        self.abandon_files().await;
    }

    /// Waits for writers still running, then deletes every file written and the folders made
    /// that stayed empty. Best effort: a file that cannot be deleted is only unreferenced
    /// (`VACUUM`).
    async fn abandon_files(&mut self) {
        if let Some(writers) = self.writers.take() {
            let (current, history) = writers.finish().await;
            self.current_adds.extend(current.unwrap_or_default());
            self.history_adds.extend(history.unwrap_or_default());
        }
        discard_files(&self.current, &std::mem::take(&mut self.current_adds)).await;
        discard_files(&self.history, &std::mem::take(&mut self.history_adds)).await;
        for (_, table, adds) in std::mem::take(&mut self.followers) {
            discard_files(&table, &adds).await;
        }
        self.created.remove();
        self.ended = true;
    }
}

impl Drop for RunTransaction {
    fn drop(&mut self) {
        let files = self.current_adds.len()
            + self.history_adds.len()
            + self
                .followers
                .iter()
                .map(|(_, _, a)| a.len())
                .sum::<usize>();
        if !self.ended && (files > 0 || self.writers.is_some()) {
            tracing::warn!(
                run = self.seq,
                files,
                "a run was dropped before its commit; its data files are unreferenced (VACUUM removes them)"
            );
        }
    }
}
