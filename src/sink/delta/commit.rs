//! Committing a run to the tables: the protocol of the sink's contract (`sink/mod.rs`), history
//! first, carrying what each follower table still needs, then each follower.

use std::collections::HashMap;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, AddCDCFile, Remove, Transaction};
use deltalake::protocol::{DeltaOperation, MergePredicate, SaveMode};
use deltalake::DeltaTable;

use super::log::{txn_version, CommitEntry, PendingCommit, RunRecord, COMMIT_INFO_KEY};
use super::write::discard_files;
use super::CreatedTables;
use crate::error::{Error, Result};
use crate::sink::{TableRole, Versions};

/// The file actions planned for one table.
#[derive(Debug, Default, Clone)]
pub struct Planned {
    /// Data files to add.
    pub adds: Vec<Add>,
    /// Data files to remove.
    pub removes: Vec<Remove>,
    /// Change data files ([`change_feed`](super::change_feed)): the rows the commit changes.
    pub cdc: Vec<AddCDCFile>,
}

impl Planned {
    /// Bytes of the added files.
    pub fn bytes_added(&self) -> u64 {
        self.adds.iter().map(|a| a.size as u64).sum()
    }

    /// Deletes the files this plan wrote (data and change files), which will not be
    /// committed. Best effort, as [`discard_files`].
    pub async fn discard(&self, table: &DeltaTable) {
        discard_files(table, &self.adds).await;
        super::change_feed::discard(table, &self.cdc).await;
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
    out.extend(planned.cdc.iter().cloned().map(Action::Cdc));
    out
}

/// A commit that failed, and whether it is known not to have landed.
enum Failed {
    /// Nothing of this run was committed: refused before the attempt, or the log after it holds
    /// no commit of this run (by its id).
    NotLanded(Error),
    /// The commit may have landed: the log could not be read after the attempt.
    Unknown(Error),
}

impl From<Failed> for Error {
    fn from(failed: Failed) -> Error {
        match failed {
            Failed::NotLanded(e) | Failed::Unknown(e) => e,
        }
    }
}

/// The conflict of run `seq` with the run the table records now (another writer's).
async fn conflict(table: &DeltaTable, role: &str, seq: i64) -> Error {
    let other = match super::log::last_run(table).await {
        Ok(Some((version, entry))) => {
            let run = entry.run;
            let id = match run.run_id.is_empty() {
                true => String::new(),
                false => format!(", id {}", run.run_id),
            };
            format!(
                "it already records run {}{id}, business date {}, at version {version}",
                run.seq, run.business_date
            )
        }
        _ => "it already records a later run".to_string(),
    };
    Error::Conflict {
        table: role.to_string(),
        seq,
        other,
    }
}

/// The `engineInfo` of Tributary's commits.
pub const ENGINE_INFO: &str = concat!("tributary/", env!("CARGO_PKG_VERSION"));

/// The operation a commit performs, named as Delta writers name it (`commitInfo.operation`):
/// adding files only is a `WRITE` append; replacing every file a `WRITE` overwrite (a snapshot
/// run's current table, a full reload); replacing some of the current table's files (a change-log
/// merge: rows updated, deleted, inserted) a `MERGE`; replacing some history files (`run
/// --replace`) a `WRITE` overwrite of those.
fn operation(role: &str, removes: usize, files: usize, partition_by: &[String]) -> DeltaOperation {
    let partition_by = (!partition_by.is_empty()).then(|| partition_by.to_vec());
    let write = |mode| DeltaOperation::Write {
        mode,
        partition_by: partition_by.clone(),
        predicate: None,
    };
    if removes == 0 {
        return write(SaveMode::Append);
    }
    if removes >= files || role != TableRole::Current.as_str() {
        return write(SaveMode::Overwrite);
    }
    let action = |kind: &str| MergePredicate {
        action_type: kind.to_string(),
        predicate: None,
    };
    DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some("target.keyhash = source.keyhash".to_string()),
        matched_predicates: vec![action("update"), action("delete")],
        not_matched_predicates: vec![action("insert")],
        not_matched_by_source_predicates: Vec::new(),
    }
}

/// Commits `actions` with `txn(app_id, seq)` and the run's commit-info entry, on the table's
/// latest state.
///
/// Optimistic concurrency (Delta protocol): a table that already records run `seq` or a later
/// one was committed by another writer that took the same or a later sequence number: a
/// [`Error::Conflict`], nothing committed. A writer that commits between this read and the
/// commit makes delta-rs's conflict check fail the commit (both commits carry the same `txn`
/// app id). After any error the log decides, not the error: the commit landed only if a
/// commit after the read carries this run's id (delta-rs can report an error for a commit
/// that landed, and another process may have completed this run meanwhile).
async fn commit_table(
    table: &mut DeltaTable,
    role: &str,
    app_id: &str,
    actions: Vec<Action>,
    entry: &CommitEntry,
) -> std::result::Result<u64, Failed> {
    let seq = entry.run.seq;
    let known = table.version();
    table
        .update_state()
        .await
        .map_err(|e| Failed::NotLanded(e.into()))?;
    if let Some(done) = txn_version(table, app_id)
        .await
        .map_err(Failed::NotLanded)?
    {
        if done >= seq {
            // Another process may have completed this very run since (a follower commit).
            let ours = super::log::find_run_id(table, known, &entry.run.run_id)
                .await
                .map_err(Failed::NotLanded)?;
            return match ours {
                Some(version) => Ok(version),
                None => Err(Failed::NotLanded(conflict(table, role, seq).await)),
            };
        }
    }
    let read_version = table.version();
    let metadata = serde_json::to_value(entry).map_err(|e| Failed::NotLanded(e.into()))?;
    let properties = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id, seq))
        .with_metadata([(COMMIT_INFO_KEY.to_string(), metadata)]);
    let snapshot = table.snapshot().map_err(|e| Failed::NotLanded(e.into()))?;
    let removes = actions
        .iter()
        .filter(|a| matches!(a, Action::Remove(_)))
        .count();
    let operation = match entry.run.operation.as_deref() {
        // A compaction (`tributary optimize`), named as Delta writers name theirs.
        Some(super::log::OPTIMIZE) => DeltaOperation::Optimize {
            predicate: None,
            target_size: entry.run.target_file_bytes.unwrap_or_default() as i64,
        },
        _ => operation(
            role,
            removes,
            snapshot.log_data().num_files(),
            snapshot.metadata().partition_columns(),
        ),
    };
    // Tributary's own commit info (a caller's CommitInfo action keeps its engineInfo).
    let mut info = operation.get_commit_info();
    info.timestamp = Some(chrono::Utc::now().timestamp_millis());
    info.engine_info = Some(ENGINE_INFO.to_string());
    let mut actions = actions;
    actions.insert(0, Action::CommitInfo(info));
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
            let landed = super::log::find_run_id(table, read_version, &entry.run.run_id)
                .await
                .map_err(Failed::Unknown)?;
            let recorded = txn_version(table, app_id).await.map_err(Failed::Unknown)?;
            match after_error(landed, recorded, seq) {
                AfterError::Landed(version) => {
                    tracing::warn!(table = role, run = seq, error = %err, "commit reported an error but landed");
                    Ok(version)
                }
                AfterError::Conflict => Err(Failed::NotLanded(conflict(table, role, seq).await)),
                AfterError::NotLanded => Err(Failed::NotLanded(err.into())),
            }
        }
    }
}

/// What a commit that reported an error did.
#[derive(Debug, PartialEq, Eq)]
enum AfterError {
    /// A commit of this run (by id) is in the log, at this version.
    Landed(u64),
    /// Not in the log, and the table records this run's number or a later one: another
    /// writer's run.
    Conflict,
    /// Not in the log; no other run either.
    NotLanded,
}

/// Decides [`AfterError`] from the log after a failed commit of run `seq`: the version of a
/// commit carrying this run's id (`landed`), and the run number the table records
/// (`recorded`).
fn after_error(landed: Option<u64>, recorded: Option<i64>, seq: i64) -> AfterError {
    match (landed, recorded) {
        (Some(version), _) => AfterError::Landed(version),
        (None, Some(done)) if done >= seq => AfterError::Conflict,
        (None, _) => AfterError::NotLanded,
    }
}

/// What [`complete`] did for a follower table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Completed {
    /// It committed the run's actions, at this version.
    Now(u64),
    /// The table records the run already (its own commit, or another process's completion),
    /// at this version when the log still holds that commit.
    Already(Option<u64>),
}

impl Completed {
    /// The version of the run's commit in the table, if known.
    pub(super) fn version(self) -> Option<u64> {
        match self {
            Completed::Now(v) => Some(v),
            Completed::Already(v) => v,
        }
    }
}

/// Commits a follower table's pending actions for `run`, unless it already records the run.
pub(super) async fn complete(
    table: &mut DeltaTable,
    role: &str,
    app_id: &str,
    run: &RunRecord,
    pending: &PendingCommit,
) -> Result<Completed> {
    // The latest state: another process may have completed the run since this one read it.
    let known = table.version();
    table.update_state().await?;
    if txn_version(table, app_id)
        .await?
        .is_some_and(|v| v >= run.seq)
    {
        let after = known.min(pending.read_version);
        let found = super::log::find_run_id(table, after, &run.run_id).await?;
        return Ok(Completed::Already(found));
    }
    if table.version() != pending.read_version {
        still_planned(table, role, run, pending).await?;
    }
    let replaces = pending.removes.iter().any(|r| r.data_change) && !pending.adds.is_empty();
    if pending.cdc.is_empty() && replaces && super::change_feed::enabled(table)? {
        // The feed was enabled after the run planned this commit (between its commits).
        tracing::warn!(
            table = role,
            run = run.seq,
            "completing a run planned before the change data feed was enabled: its commit \
             carries no change data, so feed readers see its removed files as deletes and \
             its added files as inserts"
        );
    }
    let entry = CommitEntry {
        run: run.clone(),
        pending: HashMap::new(),
    };
    let planned = Planned {
        adds: pending.adds.clone(),
        removes: pending.removes.clone(),
        cdc: pending.cdc.clone(),
    };
    Ok(Completed::Now(
        commit_table(table, role, app_id, actions(&planned), &entry).await?,
    ))
}

/// Checks that the actions `pending` planned against an earlier version of `table` still
/// apply: every commit since touches no file nor the schema (a `VACUUM START`/`END` of any
/// Delta writer), and the planned files are still there (a full vacuum, another engine's,
/// deletes files that no version references yet).
///
/// # Errors
/// [`Error::Lake`] naming the change or the missing file; object-store errors.
async fn still_planned(
    table: &DeltaTable,
    role: &str,
    run: &RunRecord,
    pending: &PendingCommit,
) -> Result<()> {
    let version = table.version();
    let kept = match version {
        Some(latest) => super::log::files_kept_since(table, pending.read_version, latest).await?,
        None => false,
    };
    if !kept {
        return Err(Error::Lake {
            table: role.to_string(),
            reason: format!(
                "changed since run {} planned its commit (version {}, planned against {}); \
                 cannot complete the run safely",
                run.seq,
                version.map_or("none".to_string(), |v| v.to_string()),
                pending
                    .read_version
                    .map_or("none".to_string(), |v| v.to_string())
            ),
        });
    }
    use deltalake::logstore::object_store::ObjectStoreExt;
    let store = table.object_store();
    // an add that carries a deletion vector re-adds a committed data file: its vector's file
    // is the run's own
    let files = pending.adds.iter().map(|a| match &a.deletion_vector {
        None => a.path.clone(),
        Some(_) => super::deletion_vectors::vector_file(a).unwrap_or_else(|| a.path.clone()),
    });
    let cdc = pending.cdc.iter().map(|c| c.path.clone());
    for file in files.chain(cdc) {
        let path = super::write::file_path(&file);
        if let Err(e @ deltalake::ObjectStoreError::NotFound { .. }) = store.head(&path).await {
            return Err(Error::Lake {
                table: role.to_string(),
                reason: format!(
                    "run {} cannot be completed: its data file {file} is gone ({e}); it was \
                     deleted after the run's history commit (a vacuum?)",
                    run.seq
                ),
            });
        }
    }
    Ok(())
}

/// Commits a planned run to `tables` (history, current) under `app_id`: history first, its
/// commit carrying every follower's pending actions, then each follower in the order given
/// (current first; `tables.1` becomes current's table after its commit). Returns the new
/// version of each table committed.
///
/// When the history commit fails and the log shows it did not land, the data files of every
/// table's planned `add` actions and the table folders of `created` (made for this run) are
/// deleted before the error returns (nothing refers to them).
/// Once history has committed they are kept: a follower's failed commit is completed by the
/// next open ([`DeltaLake::open`](super::DeltaLake::open)).
///
/// # Errors
/// [`Error::Lake`] when a table already records this run; Delta errors.
pub(super) async fn commit_run(
    app_id: &str,
    tables: (&mut DeltaTable, &mut DeltaTable),
    mut run: RunRecord,
    history: Planned,
    followers: Vec<(TableRole, DeltaTable, Planned)>,
    created: &mut CreatedTables,
) -> Result<Versions> {
    let (history_table, current) = tables;
    let pending: HashMap<String, PendingCommit> = followers
        .iter()
        .map(|(role, table, planned)| {
            let pending = PendingCommit {
                read_version: table.version(),
                adds: planned.adds.clone(),
                removes: planned.removes.clone(),
                cdc: planned.cdc.clone(),
            };
            (role.as_str().to_string(), pending)
        })
        .collect();
    crash_point("before-history-commit");
    let entry = CommitEntry {
        run: run.clone(),
        pending,
    };
    let committed = commit_table(
        history_table,
        TableRole::History.as_str(),
        app_id,
        actions(&history),
        &entry,
    )
    .await;
    let history_version = match committed {
        Ok(version) => version,
        // No table refers to the run's files: delete them. (Once history has committed, the
        // followers' files are its pending actions, which the next run completes.)
        Err(Failed::NotLanded(e)) => {
            history.discard(history_table).await;
            for (_, table, planned) in &followers {
                planned.discard(table).await;
            }
            created.remove();
            return Err(e);
        }
        Err(Failed::Unknown(e)) => return Err(e),
    };
    let mut versions = Versions::default();
    versions.set(TableRole::History, history_version);
    crash_point("after-history-commit");
    run.history_version = Some(history_version);
    for (i, (role, mut table, _)) in followers.into_iter().enumerate() {
        if i > 0 {
            crash_point("between-follower-commits");
        }
        let pending = &entry.pending[role.as_str()];
        // History has landed: the run is committed, and a follower's failure is the lake's
        // state to repair (the next open completes it), not a conflict to re-plan. A commit
        // that lost to another writer's commit that changed no file (a `SET TBLPROPERTIES` of
        // another process enabling the feed) is tried once more on top of it.
        let mut done = complete(&mut table, role.as_str(), app_id, &run, pending).await;
        if let Err(Error::Delta(e)) = &done {
            tracing::warn!(
                table = role.as_str(),
                run = run.seq,
                "completing the run again after: {e}"
            );
            done = complete(&mut table, role.as_str(), app_id, &run, pending).await;
        }
        let done = done.map_err(|e| match e {
            Error::Conflict { table, seq, other } => Error::Lake {
                table,
                reason: format!(
                    "run {seq} is committed in history, but completing this table failed: \
                         {other}; the next run completes it"
                ),
            },
            e => e,
        })?;
        if let Some(v) = done.version() {
            versions.set(role, v);
        }
        if role == TableRole::Current {
            *current = table;
        }
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_as_delta_writers_name_them() {
        let name =
            |role: &str, removes, files| operation(role, removes, files, &[]).name().to_string();
        assert_eq!(name("history", 0, 9), "WRITE");
        assert_eq!(name("current", 9, 9), "WRITE");
        assert_eq!(name("current", 2, 9), "MERGE");
        assert_eq!(name("history", 2, 9), "WRITE");
        let mode =
            |removes, files| match operation("current", removes, files, &["region".to_string()]) {
                DeltaOperation::Write {
                    mode, partition_by, ..
                } => {
                    assert_eq!(partition_by, Some(vec!["region".to_string()]));
                    Some(mode)
                }
                _ => None,
            };
        assert_eq!(mode(0, 3), Some(SaveMode::Append));
        assert_eq!(mode(3, 3), Some(SaveMode::Overwrite));
        assert_eq!(mode(1, 3), None);
    }

    #[test]
    fn a_failed_commit_landed_only_if_the_log_holds_its_run_id() {
        // Its own commit, or another process completing it (same id), landed.
        assert_eq!(after_error(Some(7), Some(5), 5), AfterError::Landed(7));
        assert_eq!(after_error(Some(7), Some(6), 5), AfterError::Landed(7));
        // The table records run 5 (or later) without this run's id: another writer's run.
        assert_eq!(after_error(None, Some(5), 5), AfterError::Conflict);
        assert_eq!(after_error(None, Some(6), 5), AfterError::Conflict);
        // Nothing of this run, nothing newer: the commit did not land.
        assert_eq!(after_error(None, Some(4), 5), AfterError::NotLanded);
        assert_eq!(after_error(None, None, 5), AfterError::NotLanded);
    }
}
