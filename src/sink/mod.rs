//! The sink: where every pipeline ends. A run's rows go to the sink's writers while the run
//! produces them, and the run commits them together with its checkpoint, or leaves no trace.
//!
//! [`Sink`] states the contract every sink keeps; [`delta`] keeps it with Delta Lake tables
//! through delta-rs ([`DeltaLake`]), and [`RunTransaction`] is the one type that owns a run of
//! `tributary run`, `sync` and (next) `capture`: its sequence number, its table writers, the
//! follower tables it writes, the cleanup of its files on any error, and its commit.

pub mod catalog;
pub mod delta;
pub mod storage;

use std::future::Future;

use deltalake::parquet::file::properties::WriterProperties;
use serde::Serialize;

pub use delta::{DeltaLake, RunCommit, RunRecord, RunTransaction, Senders};

use crate::core::checkpoint::Committed;
use crate::error::Result;

/// Attempts of a run that loses commit races to other writers before it gives up.
pub const CONFLICT_ATTEMPTS: u32 = 8;

/// Sleeps before attempt `attempt + 1` of a run that lost a commit race: 50 ms to 100 ms,
/// random, times the attempt, so that writers racing each other spread out.
pub async fn conflict_pause(attempt: u32) {
    use rand::Rng;
    let millis = rand::thread_rng().gen_range(50..100) * u64::from(attempt);
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}

/// The tables of one configured table. History is the run's commit point; the others follow it
/// (the "followers" of the commit protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableRole {
    /// One row per live key.
    Current,
    /// Every I/U/D a run produced, partitioned by `eff_start_date`.
    History,
    /// Rows set aside under `on_error: reject`.
    Rejects,
    /// The input files a change-log table has applied (its checkpoint).
    Applied,
    /// The source positions of keys a change-log table hard-deleted.
    Tombstones,
}

impl TableRole {
    /// The role's name in messages and in the pending actions of a history commit (`current`,
    /// `history`, `rejects`, `applied`, `tombstones`; stored in the Delta log, so never
    /// renamed).
    pub fn as_str(self) -> &'static str {
        match self {
            TableRole::Current => "current",
            TableRole::History => "history",
            TableRole::Rejects => "rejects",
            TableRole::Applied => "applied",
            TableRole::Tombstones => "tombstones",
        }
    }

    /// The follower table of a name written by [`TableRole::as_str`] (None: history, or a name
    /// this version does not know).
    pub fn follower(name: &str) -> Option<Self> {
        match name {
            "current" => Some(TableRole::Current),
            "rejects" => Some(TableRole::Rejects),
            "applied" => Some(TableRole::Applied),
            "tombstones" => Some(TableRole::Tombstones),
            _ => None,
        }
    }
}

/// The table versions a run's commits produced (None: the run did not commit to that table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Versions {
    /// Version of the current table after the run.
    pub current: Option<u64>,
    /// Version of the history table after the run: the run's commit point.
    pub history: Option<u64>,
    /// Version of the rejects table after the run.
    pub rejects: Option<u64>,
    /// Version of the applied-files table after the run.
    pub applied: Option<u64>,
    /// Version of the tombstones table after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tombstones: Option<u64>,
}

impl Versions {
    /// The version of one table.
    pub fn get(&self, role: TableRole) -> Option<u64> {
        match role {
            TableRole::Current => self.current,
            TableRole::History => self.history,
            TableRole::Rejects => self.rejects,
            TableRole::Applied => self.applied,
            TableRole::Tombstones => self.tombstones,
        }
    }

    pub(crate) fn set(&mut self, role: TableRole, version: u64) {
        let slot = match role {
            TableRole::Current => &mut self.current,
            TableRole::History => &mut self.history,
            TableRole::Rejects => &mut self.rejects,
            TableRole::Applied => &mut self.applied,
            TableRole::Tombstones => &mut self.tombstones,
        };
        *slot = Some(version);
    }
}

/// The lake side of every pipeline: the tables of one configured table, taking runs.
///
/// A run is [`begin`](Sink::begin)-ed, rows go to its writers as the run produces them, and it
/// is either [`commit`](Sink::commit)-ted with its checkpoint or [`abandon`](Sink::abandon)-ed.
///
/// # Contract
/// - **Atomic per run.** A run's data files are written first, uncommitted, and no reader sees
///   them. The run then commits to every table it touches (current, history, and the followers
///   it wrote: rejects, the applied-files checkpoint) or to none, as one step: the history
///   table is committed first and its commit carries every action the other tables still need,
///   so it is the run's commit point. A crash after it is completed by the next open of the
///   tables; a half-applied run is never what a later run reads or diffs against.
/// - **Checkpoint with the data.** The checkpoint a change source hands back (files applied;
///   next an LSN or a binlog position) is committed in the same run as the rows it produced, so
///   a crash never loses a change nor applies one twice: after a restart, [`Sink::committed`]
///   says where the source stands.
/// - **Idempotent.** Each run has a sequence number, recorded in every table it commits to (a
///   Delta `txn` action under the table's app id); a table that already records a run is never
///   committed to again for it, and a repeated commit is refused, never applied twice.
/// - **Nothing left behind, nothing of others touched.** A run that fails before its commit
///   point deletes the data files it wrote; a commit that fails and did not land does the same.
///   It never removes a table, even one it created (another process may have opened it): a
///   first run failing after its create leaves empty tables, which the next run uses. Only a
///   crash (SIGKILL) leaves unreferenced data files, which `VACUUM` removes.
/// - **Many writers.** Two runs of one table may start at once (an overlapping cron, a retried
///   task): both may take the same sequence number, but only one commit of it can land
///   (optimistic concurrency, the Delta protocol's: a table that records the number already, or
///   a commit in between with the same `txn` app id, fails the other). The loser commits
///   nothing, deletes its own files, never another run's, and gets [`Error::Conflict`]
///   naming the winner; each run has an id of its own, so a commit is counted as landed only
///   when the log holds it (or another process's completion of it), never because the log
///   holds the same number.
///
/// [`Error::Conflict`]: crate::Error::Conflict
pub trait Sink {
    /// A run in flight: its writers and the files they wrote.
    type Run;

    /// The newest run the tables record (business date, input fingerprint, base version), if
    /// any.
    ///
    /// # Errors
    /// Errors reading the tables' logs.
    fn last_run(&self) -> impl Future<Output = Result<Option<RunRecord>>> + Send;

    /// The checkpoints committed so far: what the table's change sources have delivered.
    ///
    /// # Errors
    /// Errors reading the checkpoint table.
    fn committed(&self) -> impl Future<Output = Result<Committed>> + Send;

    /// Starts a run whose reads reflect run `base_run` (what the tables recorded when the
    /// pipeline read them, 0 for none): its sequence number is `base_run + 1`, and a commit
    /// finding that number taken is a conflict. Starts `writer_tasks` writers per table (at
    /// least one) that write rows with `properties` as they arrive.
    ///
    /// # Errors
    /// Errors of the sink.
    fn begin(
        &mut self,
        base_run: i64,
        properties: WriterProperties,
        writer_tasks: usize,
    ) -> impl Future<Output = Result<Self::Run>> + Send;

    /// Commits a run whose writers have finished, with its checkpoint (see the contract).
    ///
    /// # Errors
    /// Errors writing the followers or committing; before the commit point the run's files
    /// are deleted.
    fn commit(
        &mut self,
        run: Self::Run,
        commit: RunCommit,
    ) -> impl Future<Output = Result<Versions>> + Send;

    /// Gives a run up: deletes the files it wrote (and folders it made that stayed empty).
    fn abandon(&mut self, run: Self::Run) -> impl Future<Output = ()> + Send;
}
