//! What each run recorded in the Delta log: a `txn` action (app id, run sequence number) and a
//! `tributary` entry in the commit's `commitInfo` (business date, input fingerprint, and in the
//! history commit, the actions still to be committed to the other tables).

use std::collections::HashMap;

use deltalake::kernel::{Add, Remove};
use deltalake::DeltaTable;
use serde::{Deserialize, Serialize};

use crate::core::op::OpCounts;
use crate::error::{Error, Result};

/// Key of Tributary's entry in a Delta `commitInfo`.
pub const COMMIT_INFO_KEY: &str = "tributary";

/// How far back [`last_run`] looks for a Tributary commit (other writers may commit too).
pub(super) const MAX_LOG_WALK: u64 = 1000;

/// What one run applied, stored in the commit info of each table it committed to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run sequence number: also the Delta `txn` version under the table's app id.
    pub seq: i64,
    /// This run's own id (a UUID): two runs that took the same sequence number from the same
    /// base (two writers at once) are told apart by it. Empty in runs of earlier versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// Business effective date (`YYYY-MM-DD`).
    pub business_date: String,
    /// Input fingerprint: of the extract files (snapshot runs), or of the checkpoint
    /// (change-log runs).
    pub fingerprint: String,
    /// Current table version the run diffed against (None: no earlier run).
    pub current_base_version: Option<u64>,
    /// History table version of this run's history commit (set in the other tables' commits).
    pub history_version: Option<u64>,
    /// The replication slot position the run's rows reach (`Checkpoint::Lsn`, written as
    /// `SlotPosition::text`: `16/B374D848`, or `16/B374D848+42` within a transaction); absent
    /// in runs of other sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_lsn: Option<String>,
    /// What the commit did when it applied no changes: [`OPTIMIZE`] for a compaction (`tributary
    /// optimize`: files rewritten, `dataChange: false`, the other fields those of the run
    /// before it). None: a run that applied its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// A compaction's target file size, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_file_bytes: Option<u64>,
    /// The run's rows by operation, I/U/D/X/N (absent in runs of earlier versions and in
    /// compactions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<OpCounts>,
    /// Milliseconds from the run's start to its history commit (absent in runs of earlier
    /// versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// [`RunRecord::operation`] of a compaction.
pub const OPTIMIZE: &str = "optimize";

impl RunRecord {
    /// Whether this commit applied input (a run), not only rewrote files (a compaction).
    pub fn applied_input(&self) -> bool {
        self.operation.is_none()
    }
}

/// Actions one table still needs, written into the history commit so that a crash between the
/// commits can be completed by the next run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingCommit {
    /// Table version the actions were planned against (None: planned against a new table).
    pub read_version: Option<u64>,
    /// Data files to add.
    pub adds: Vec<Add>,
    /// Data files to remove.
    pub removes: Vec<Remove>,
    /// Change data files to add (a table that records its change data feed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdc: Vec<deltalake::kernel::AddCDCFile>,
}

/// The `tributary` commit-info entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitEntry {
    #[serde(flatten)]
    /// The run.
    pub run: RunRecord,
    /// Follower table role (`current`, `rejects`) to its pending actions; history commits only.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub pending: HashMap<String, PendingCommit>,
}

/// The `commitInfo.operation` of a commit that only sets table properties (Delta's name, as
/// Spark and delta-rs write it).
pub const SET_TABLE_PROPERTIES: &str = "SET TBLPROPERTIES";

/// The actions of one commit, as read back from `_delta_log/<version>.json`.
#[derive(Debug, Default)]
pub struct CommitActions {
    /// Tributary's entry of the commit info, if any.
    pub entry: Option<CommitEntry>,
    /// The commit's `add` actions.
    pub adds: Vec<Add>,
    /// The deletion vectors that the commit's `remove` actions name.
    pub removed_vectors: Vec<deltalake::kernel::DeletionVectorDescriptor>,
    /// The commit's time (`commitInfo.timestamp`), milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// Number of `add` and `remove` actions.
    pub file_actions: usize,
    /// Whether the commit changes the table's `metaData` or `protocol`.
    pub changes_metadata: bool,
    /// `commitInfo.operation` (`WRITE`, `SET TBLPROPERTIES`, ...).
    pub operation: Option<String>,
    /// The `metaData` action's `schemaString` and `partitionColumns`, if it has one.
    pub metadata: Option<(String, Vec<String>)>,
}

impl CommitActions {
    /// Whether the commit leaves the table's files and schema as they were (commit info only,
    /// as the `VACUUM START`/`VACUUM END` commits of Delta writers, or `txn` only): actions
    /// planned against the version before it still apply after it.
    pub fn keeps_files(&self) -> bool {
        self.file_actions == 0 && !self.changes_metadata
    }

    /// Whether the commit is a `SET TBLPROPERTIES` that adds or removes no file (the change
    /// data feed enabled by another process while a run was between its commits); whether it
    /// kept the schema is [`CommitActions::keeps_schema`].
    pub fn sets_properties(&self) -> bool {
        self.file_actions == 0
            && self.metadata.is_some()
            && self.operation.as_deref() == Some(SET_TABLE_PROPERTIES)
    }

    /// Whether the commit's `metaData` has `schema` and `partitions` (a schema that does not
    /// parse has not). A protocol it raised past what delta-rs writes fails a later commit
    /// loudly.
    pub fn keeps_schema(
        &self,
        schema: &deltalake::kernel::StructType,
        partitions: &[String],
    ) -> bool {
        let Some((text, theirs)) = &self.metadata else {
            return false;
        };
        serde_json::from_str::<deltalake::kernel::StructType>(text).is_ok_and(|s| s == *schema)
            && theirs.as_slice() == partitions
    }
}

/// Reads and parses one commit file. Returns None when the file is gone (log clean-up).
///
/// # Errors
/// Object-store errors and malformed JSON.
pub async fn read_commit(table: &DeltaTable, version: u64) -> Result<Option<CommitActions>> {
    let Some(bytes) = table.log_store().read_commit_entry(version as _).await? else {
        return Ok(None);
    };
    let mut out = CommitActions::default();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let value: serde_json::Value = serde_json::from_slice(line)?;
        if let Some(info) = value.get("commitInfo") {
            out.timestamp_ms = info.get("timestamp").and_then(serde_json::Value::as_i64);
            out.operation = info
                .get("operation")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            if let Some(entry) = info.get(COMMIT_INFO_KEY) {
                out.entry = Some(serde_json::from_value(entry.clone())?);
            }
        } else if let Some(add) = value.get("add") {
            out.adds.push(serde_json::from_value(add.clone())?);
            out.file_actions += 1;
        } else if let Some(remove) = value.get("remove") {
            if let Some(dv) = remove.get("deletionVector").filter(|dv| !dv.is_null()) {
                out.removed_vectors
                    .push(serde_json::from_value(dv.clone())?);
            }
            out.file_actions += 1;
        } else if let Some(metadata) = value.get("metaData") {
            out.changes_metadata = true;
            let schema = metadata
                .get("schemaString")
                .and_then(serde_json::Value::as_str);
            let partitions = metadata.get("partitionColumns").cloned();
            let partitions: Vec<String> = match partitions {
                Some(p) => serde_json::from_value(p)?,
                None => Vec::new(),
            };
            out.metadata = schema.map(|s| (s.to_string(), partitions));
        } else if value.get("protocol").is_some() {
            out.changes_metadata = true;
        }
    }
    Ok(Some(out))
}

/// The paths of the files that the newest runs of `table` recording source position `position`
/// added (back to the newest run that records another position; at most `MAX_LOG_WALK`
/// versions): for capture, the parts of a copy that stopped (recorded at `0/0`).
///
/// # Errors
/// Object-store errors and malformed JSON.
pub async fn files_of_runs_at(table: &DeltaTable, position: &str) -> Result<Vec<String>> {
    let Some(latest) = table.version() else {
        return Ok(Vec::new());
    };
    let oldest = latest.saturating_sub(MAX_LOG_WALK);
    let mut paths = Vec::new();
    let mut version = latest;
    loop {
        match read_commit(table, version).await? {
            Some(CommitActions {
                entry: Some(entry),
                adds,
                ..
            }) => {
                if entry.run.source_lsn.as_deref() != Some(position) {
                    return Ok(paths);
                }
                paths.extend(adds.into_iter().map(|a| a.path));
            }
            Some(_) => {}
            None => return Ok(paths),
        }
        if version == oldest {
            return Ok(paths);
        }
        version -= 1;
    }
}

/// The newest Tributary commit of a table with its version, looking back at most
/// `MAX_LOG_WALK` (1,000) versions.
///
/// # Errors
/// See [`read_commit`].
pub async fn last_run(table: &DeltaTable) -> Result<Option<(u64, CommitEntry)>> {
    last_entry(table, |_| true).await
}

/// The newest Tributary commit of a table that applied input (a run, not a compaction), with
/// its version, looking back at most `MAX_LOG_WALK` (1,000) versions.
///
/// # Errors
/// See [`read_commit`].
pub async fn last_applied_run(table: &DeltaTable) -> Result<Option<(u64, CommitEntry)>> {
    last_entry(table, |e| e.run.applied_input()).await
}

/// The newest Tributary commit whose entry `wanted` accepts (see [`last_run`]).
async fn last_entry(
    table: &DeltaTable,
    wanted: impl Fn(&CommitEntry) -> bool,
) -> Result<Option<(u64, CommitEntry)>> {
    let Some(latest) = table.version() else {
        return Ok(None);
    };
    let oldest = latest.saturating_sub(MAX_LOG_WALK);
    let mut version = latest;
    loop {
        match read_commit(table, version).await? {
            Some(CommitActions {
                entry: Some(entry), ..
            }) if wanted(&entry) => return Ok(Some((version, entry))),
            Some(_) => {}
            None => return Ok(None),
        }
        if version == oldest {
            return Ok(None);
        }
        version -= 1;
    }
}

/// The newest commit of `table` whose entry has run sequence number `seq`.
///
/// # Errors
/// [`Error::Lake`] when no such commit is found.
pub async fn find_run(table: &DeltaTable, seq: i64, role: &str) -> Result<(u64, CommitActions)> {
    let latest = table.version().unwrap_or(0);
    let mut version = latest;
    loop {
        if let Some(actions) = read_commit(table, version).await? {
            if actions.entry.as_ref().is_some_and(|e| e.run.seq == seq) {
                return Ok((version, actions));
            }
        }
        if version == 0 || latest - version >= MAX_LOG_WALK {
            return Err(Error::Lake {
                table: role.to_string(),
                reason: format!("no commit of run {seq} found in the log"),
            });
        }
        version -= 1;
    }
}

/// The version of the first commit after `after` whose Tributary entry belongs to the run
/// `run_id` (its own commit, or another process completing it), if the log holds one.
///
/// # Errors
/// See [`read_commit`].
pub async fn find_run_id(
    table: &DeltaTable,
    after: Option<u64>,
    run_id: &str,
) -> Result<Option<u64>> {
    let Some(latest) = table.version() else {
        return Ok(None);
    };
    let first = after.map_or(0, |v| v + 1);
    for version in first..=latest {
        if let Some(CommitActions {
            entry: Some(entry), ..
        }) = read_commit(table, version).await?
        {
            if !run_id.is_empty() && entry.run.run_id == run_id {
                return Ok(Some(version));
            }
        }
    }
    Ok(None)
}

/// Whether every commit of `table` after version `after` (None: all) up to `to` leaves the
/// table's files and schema as they were at `after` ([`CommitActions::keeps_files`], or a
/// [`CommitActions::sets_properties`] commit that [`CommitActions::keeps_schema`]); false when
/// the log of one is gone.
///
/// # Errors
/// See [`read_commit`].
pub async fn files_kept_since(table: &DeltaTable, after: Option<u64>, to: u64) -> Result<bool> {
    let first = after.map_or(0, |v| v + 1);
    // the schema and partition columns at `after`, read once a property commit needs them
    let mut planned: Option<(deltalake::kernel::StructType, Vec<String>)> = None;
    for version in first..=to {
        match read_commit(table, version).await? {
            Some(commit) if commit.keeps_files() => {}
            Some(commit) if commit.sets_properties() => {
                let Some(after) = after else {
                    return Ok(false);
                };
                let (schema, partitions) = match &planned {
                    Some(planned) => planned,
                    None => {
                        let mut then = table.clone();
                        then.load_version(after as _).await?;
                        let state = then.snapshot()?;
                        let schema = state.snapshot().schema().as_ref().clone();
                        let partitions = state.metadata().partition_columns().to_vec();
                        planned.insert((schema, partitions))
                    }
                };
                if !commit.keeps_schema(schema, partitions) {
                    return Ok(false);
                }
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The run sequence number a table has recorded under `app_id` (its Delta `txn` version).
///
/// # Errors
/// Delta errors reading the log.
pub async fn txn_version(table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
    let Ok(state) = table.snapshot() else {
        return Ok(None);
    };
    Ok(state
        .transaction_version(table.log_store().as_ref(), app_id)
        .await?)
}
