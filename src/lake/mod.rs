//! The lake: the current, history and rejects Delta tables of one configured table.
//!
//! # Contract of the applier
//! - **Atomic per run.** A run's data files are written first, uncommitted. The history table is
//!   committed first; its commit carries, in `commitInfo.tributary.pending`, every action the
//!   current (and rejects) table still needs. The other tables are committed next, each with the
//!   same Delta `txn` version (the run's sequence number). A crash between the commits is
//!   completed by the next [`Lake::open`] from the pending actions, so a half-applied day is
//!   never what Tributary reads or diffs against.
//! - **Idempotent.** Each commit carries `txn(app_id = "tributary:<name>", version = seq)`; a
//!   table that already records `seq` is never committed to again (delta-rs does not reject a
//!   repeated `txn` itself). After a commit error the log is re-read to learn whether the commit
//!   landed (delta-rs can report an error for a commit that landed). A history commit that
//!   did not land deletes the run's data files, so a failed commit leaves no unreferenced files.
//! - **What is read.** A diff reads the current table's join columns (`keyhash`, `nonkeyhash`,
//!   `eff_start_date`) with each row's position, partitioned by keyhash (see `spill`); then
//!   whole rows only for the keys that left the extract (see [`current`]).

pub mod applied;
mod commit;
pub mod current;
pub mod log;
mod shared;
mod table;

use std::collections::HashMap;

use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

pub use commit::{
    discard_files, discard_written, write_files, writer_gone, writer_properties, Planned, Senders,
    TableWriters, TARGET_FILE_BYTES, WRITER_GONE,
};
use log::{find_run, txn_version, CommitActions};
pub use log::{CommitEntry, RunRecord};

use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::schema::{table_schema, EFF_START_DATE};

/// Table role names used in messages and in pending-commit records.
pub const CURRENT: &str = "current";
pub const HISTORY: &str = "history";
pub const REJECTS: &str = "rejects";
pub const APPLIED: &str = "applied";

/// The open tables of one configured table.
pub struct Lake {
    pub current: DeltaTable,
    pub history: DeltaTable,
    app_id: String,
    config: TableConfig,
}

/// What [`Lake::open`] found and did about an interrupted run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recovery {
    /// Sequence number of the run whose commits were completed.
    pub completed_run: i64,
    pub business_date: String,
}

impl Lake {
    /// Opens the current and history tables (creating them if absent when `create` is set),
    /// checks that they were written under this config's hash spec and schema, and completes
    /// an interrupted run. Returns None when the tables do not exist and `create` is not set.
    ///
    /// # Errors
    /// [`Error::Lake`] for a table of another schema or hash spec, or tables out of step that
    /// cannot be completed; Delta and object-store errors.
    pub async fn open(
        config: &TableConfig,
        create: bool,
    ) -> Result<Option<(Lake, Option<Recovery>)>> {
        let schema = table_schema(&config.typed_columns());
        let partition_by: Vec<&str> = config.partition_by.iter().map(String::as_str).collect();
        let current = table::open_or_create(
            config,
            &config.current_url,
            schema.clone(),
            &partition_by,
            CURRENT,
            create,
        )
        .await?;
        let history = table::open_or_create(
            config,
            &config.history_url,
            schema,
            &[EFF_START_DATE],
            HISTORY,
            create,
        )
        .await?;
        let (Some(current), Some(history)) = (current, history) else {
            return Ok(None);
        };
        let mut lake = Lake {
            current,
            history,
            app_id: config.app_id(),
            config: config.clone(),
        };
        let recovery = lake.recover().await?;
        Ok(Some((lake, recovery)))
    }

    /// The Delta `txn` app id of this table's runs.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The newest run both tables have recorded, if any.
    ///
    /// # Errors
    /// Delta errors reading the log.
    pub async fn last_run(&self) -> Result<Option<RunRecord>> {
        Ok(log::last_run(&self.current).await?.map(|(_, e)| e.run))
    }

    /// Completes the newest run's follower commits (current, rejects, applied) that a crash or
    /// a failed commit left out: history's commit is the run's commit point, and it lists what
    /// each follower still needs.
    async fn recover(&mut self) -> Result<Option<Recovery>> {
        let h = txn_version(&self.history, &self.app_id).await?.unwrap_or(0);
        let c = txn_version(&self.current, &self.app_id).await?.unwrap_or(0);
        if h == 0 {
            return Ok(None);
        }
        if h != c && h != c + 1 {
            return Err(Error::Lake {
                table: self.config.name.clone(),
                reason: format!(
                    "history records run {h} but current records run {c}; the tables were changed \
                     outside Tributary"
                ),
            });
        }
        let (history_version, entry) = if h == c + 1 {
            // current is behind: the run's history commit must be found
            let (version, actions) = find_run(&self.history, h, HISTORY).await?;
            let entry = actions
                .entry
                .ok_or_else(|| Error::Internal("run commit without entry".into()))?;
            (version, entry)
        } else {
            // Level: only another follower (rejects, applied) can be behind. Current's last
            // commit names the run's history version; a log cleaned since means nothing to do.
            let Some(version) = self.last_run().await?.and_then(|r| r.history_version) else {
                return Ok(None);
            };
            match log::read_commit(&self.history, version).await? {
                Some(CommitActions {
                    entry: Some(entry), ..
                }) if entry.run.seq == h => (version, entry),
                _ => return Ok(None),
            }
        };
        let mut run = entry.run.clone();
        run.history_version = Some(history_version);
        let mut completed = false;
        let mut roles: Vec<&String> = entry.pending.keys().collect();
        // current first: the order of the original commits
        roles.sort_by_key(|r| (r.as_str() != CURRENT, r.as_str()));
        for role in roles {
            // Followers are created before the history commit: one that is gone was removed by
            // hand, and is not made again to receive files that may be gone too.
            let Some(mut table) = self.open_follower(role, false).await? else {
                tracing::warn!(run = h, table = %role, "a table of the newest run is missing; not completed");
                continue;
            };
            let done = commit::complete(&mut table, role, &self.app_id, &run, &entry.pending[role])
                .await?;
            if done.is_some() {
                tracing::warn!(run = h, table = %role, date = %run.business_date, "completed a run interrupted between its commits");
                completed = true;
            }
            if role == CURRENT {
                self.current = table;
            }
        }
        Ok(completed.then_some(Recovery {
            completed_run: h,
            business_date: run.business_date,
        }))
    }

    /// Opens the applied-files table if it exists (change-log tables only).
    ///
    /// # Errors
    /// [`Error::Lake`] for a table of another schema; Delta errors.
    pub async fn applied_table(&self) -> Result<Option<DeltaTable>> {
        self.open_applied(false).await
    }

    async fn open_applied(&self, create: bool) -> Result<Option<DeltaTable>> {
        table::open_or_create(
            &self.config,
            &self.config.applied_url,
            applied::schema(),
            &[],
            APPLIED,
            create,
        )
        .await
    }

    /// Opens (or creates) a follower table by role.
    pub(crate) async fn follower(&self, role: &str) -> Result<DeltaTable> {
        self.open_follower(role, true)
            .await?
            .ok_or_else(|| Error::Internal(format!("{role} table not created")))
    }

    /// Opens a follower table by role; with `create`, creates it when absent.
    async fn open_follower(&self, role: &str, create: bool) -> Result<Option<DeltaTable>> {
        match role {
            CURRENT => Ok(Some(self.current.clone())),
            REJECTS => {
                table::open_or_create(
                    &self.config,
                    &self.config.rejects_url,
                    crate::rejects::schema(),
                    &[],
                    REJECTS,
                    create,
                )
                .await
            }
            APPLIED => self.open_applied(create).await,
            other => Err(Error::Internal(format!("unknown follower table `{other}`"))),
        }
    }

    /// Commits a planned run: history first (carrying the followers' pending actions), then each
    /// follower. Returns the new version of each table by role.
    ///
    /// When the history commit fails and the log shows it did not land, the data files of
    /// every table's planned `add` actions are deleted before the error returns (nothing refers
    /// to them). Once history has committed they are kept: a follower's failed commit is
    /// completed by the next run ([`Lake::open`]).
    ///
    /// # Errors
    /// [`Error::Lake`] when a table already records this run; Delta errors.
    pub async fn commit_run(
        &mut self,
        run: RunRecord,
        history: Planned,
        followers: Vec<(&'static str, DeltaTable, Planned)>,
    ) -> Result<HashMap<&'static str, u64>> {
        commit::commit_run(self, run, history, followers).await
    }
}

/// The local folders of the current, history and applied-files tables that do not exist yet.
/// Folders that exist (even without a table) and tables elsewhere are not listed: a failed first
/// run leaves an empty table there, which the next run uses as it is.
pub fn missing_tables(config: &TableConfig) -> Vec<std::path::PathBuf> {
    [
        &config.current_url,
        &config.history_url,
        &config.applied_url,
    ]
    .into_iter()
    .filter_map(|url| url.to_file_path().ok())
    .filter(|path| !path.exists())
    .collect()
}

/// Removes table folders listed by [`missing_tables`] before a failed first run created them
/// (those it did not get to create are skipped).
pub fn remove_tables(paths: &[std::path::PathBuf]) {
    for path in paths.iter().filter(|p| p.exists()) {
        if let Err(e) = std::fs::remove_dir_all(path) {
            tracing::warn!(path = %path.display(), "could not remove a table created by a failed first run: {e}");
        }
    }
}

/// Streams a table's rows through DataFusion (None: the table has no data files).
///
/// # Errors
/// DataFusion and Delta errors.
pub async fn scan_stream(
    table: &DeltaTable,
) -> Result<Option<deltalake::datafusion::physical_plan::SendableRecordBatchStream>> {
    if table.snapshot()?.log_data().num_files() == 0 {
        return Ok(None);
    }
    Ok(Some(dataframe(table, |p| p).await?.execute_stream().await?))
}

/// A DataFusion data frame over `table`, with its provider adjusted by `provider` (a file
/// column, a file selection).
///
/// # Errors
/// DataFusion and Delta errors.
pub async fn dataframe(
    table: &DeltaTable,
    provider: impl FnOnce(
        deltalake::delta_datafusion::TableProviderBuilder,
    ) -> deltalake::delta_datafusion::TableProviderBuilder,
) -> Result<deltalake::datafusion::dataframe::DataFrame> {
    // Plain Utf8/Binary arrays, as the table schema has them: view types would be cast back,
    // a copy of every string and digest scanned.
    let mut config = deltalake::datafusion::prelude::SessionConfig::new();
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let ctx = SessionContext::new_with_config(config);
    table.update_datafusion_session(&ctx.state())?;
    let session = std::sync::Arc::new(ctx.state());
    let provider = provider(table.table_provider().with_session(session)).await?;
    Ok(ctx.read_table(provider)?)
}

/// Reads a whole table through DataFusion ([`scan_stream`], collected).
///
/// # Errors
/// DataFusion and Delta errors.
pub async fn scan(table: &DeltaTable) -> Result<Vec<RecordBatch>> {
    use futures::TryStreamExt;
    match scan_stream(table).await? {
        Some(stream) => Ok(stream.try_collect().await?),
        None => Ok(Vec::new()),
    }
}

/// Puts read columns in `schema`: found by name and cast where their type differs (readers
/// may return view or dictionary types). A column absent from the batch is taken from
/// `partition_values` (a data file's Delta `partitionValues`, which the file itself does not
/// hold: the text is cast, a missing value is NULL).
///
/// # Errors
/// [`Error::Lake`] for a column neither read nor a partition value; Arrow cast errors.
pub fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    partition_values: &HashMap<String, Option<String>>,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = match (
                batch.column_by_name(field.name()),
                partition_values.get(field.name()),
            ) {
                (Some(column), _) => column.clone(),
                (None, Some(Some(value))) => {
                    Arc::new(StringArray::from(vec![value.as_str(); rows])) as ArrayRef
                }
                (None, Some(None)) => new_null_array(field.data_type(), rows),
                (None, None) => {
                    return Err(Error::Lake {
                        table: CURRENT.into(),
                        reason: format!("scan returned no column `{}`", field.name()),
                    })
                }
            };
            Ok(if column.data_type() == field.data_type() {
                column
            } else {
                cast(&column, field.data_type())?
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Remove actions for every data file of a table (a whole-table rewrite).
pub fn all_files_removed(table: &DeltaTable) -> Result<Vec<deltalake::kernel::Remove>> {
    Ok(table
        .snapshot()?
        .log_data()
        .iter()
        .map(|f| f.remove_action(true))
        .collect())
}
