//! The Delta Lake sink: the current, history, rejects and applied-files Delta tables of one
//! configured table, through delta-rs, and the commit protocol of the sink contract
//! (`sink/mod.rs`).
//!
//! What a diff reads of the current table: its join columns (`keyhash`, `nonkeyhash`,
//! `eff_start_date`) with each row's position, partitioned by keyhash (see
//! `core::spill`); then whole rows only for the keys that left the extract (see
//! [`current`]).

pub mod applied;
pub mod change_feed;
mod commit;
pub mod current;
pub mod deletion_vectors;
pub mod log;
pub mod maintain;
pub mod rejects;
mod shared;
mod table;
pub(crate) use commit::crash_point;
pub use table::{add_columns, stored_table};
pub mod tombstones;
mod transaction;
mod write;
mod writers;

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::DeltaTable;

pub use commit::Planned;
pub use log::{CommitEntry, RunRecord};
pub use table::CreatedTables;
pub use transaction::{RunCommit, RunTransaction};
pub use write::{
    skip_incompressible, write_files, writer_properties, CODEC_SAMPLE_BYTES, DICTIONARY_PAGE_BYTES,
    MIN_CODEC_SAVING, TARGET_FILE_BYTES,
};
pub use writers::{Senders, TableWriters};

use log::{find_run, txn_version, CommitActions};

use super::{Sink, TableRole, Versions};
use crate::config::TableSpec;
use crate::core::checkpoint::{Committed, SlotPosition};
use crate::core::schema::{EFF_START_DATE, SOURCE_POSITION};
use crate::error::{Error, Result};

/// The open Delta tables of one configured table.
pub struct DeltaLake {
    /// The current table: one row per live key (plus X rows in delta mode).
    pub current: DeltaTable,
    /// The history table: every I/U/D, partitioned by `eff_start_date`.
    pub history: DeltaTable,
    app_id: String,
    spec: TableSpec,
    /// Local table folders this open created (see [`DeltaLake::open`]); a run that fails before
    /// its commit removes them again.
    created: CreatedTables,
    /// The run the tables recorded when opened (after completing an interrupted one; 0: none).
    opened_run: i64,
}

/// What [`DeltaLake::open`] found and did about an interrupted run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recovery {
    /// Sequence number of the run whose commits were completed.
    pub completed_run: i64,
    /// Business date of that run (`YYYY-MM-DD`).
    pub business_date: String,
}

impl DeltaLake {
    /// Opens the current and history tables (creating them if absent when `create` is set),
    /// checks that they were written under this config's hash spec and schema, and completes
    /// an interrupted run. Returns None when the tables do not exist and `create` is not set.
    ///
    /// With `create`, the local table folders it makes are remembered: if the first run fails
    /// before any table exists in them (a create that failed), they are removed again. A table
    /// that exists is never removed: another process may have opened it (two first runs at
    /// once), so a first run that fails after creating its tables leaves them empty.
    ///
    /// # Errors
    /// [`Error::Lake`] for a table of another schema or hash spec, or tables out of step that
    /// cannot be completed; Delta and object-store errors.
    pub async fn open(
        spec: &TableSpec,
        create: bool,
    ) -> Result<Option<(DeltaLake, Option<Recovery>)>> {
        let mut created = CreatedTables::default();
        let opened = Self::open_tables(spec, create.then_some(&mut created)).await;
        let (current, history) = match opened {
            Ok(Some(tables)) => tables,
            Ok(None) => return Ok(None),
            Err(e) => {
                created.remove();
                return Err(e);
            }
        };
        let mut lake = DeltaLake {
            current,
            history,
            app_id: spec.app_id(),
            spec: spec.clone(),
            created,
            opened_run: 0,
        };
        // The run the reads reflect at the least: history's as opened (the commit point). The
        // followers, completed up to it by `recover`, may have moved on since (another writer
        // commits after this open); a run based on the older number then conflicts at its
        // commit and plans again, never builds on state it did not read. The change data feed
        // is enabled first: that may load newer versions of the tables, which `recover` then
        // completes and the run number is read from. So are deletion vectors.
        let recovered = match lake.enable_change_feed().await {
            Ok(()) => lake.recover().await,
            Err(e) => Err(e),
        };
        let recovered = match recovered {
            Ok(recovery) => txn_version(&lake.history, &lake.app_id)
                .await
                .map(|run| (recovery, run.unwrap_or(0))),
            Err(e) => Err(e),
        };
        match recovered {
            Ok((recovery, run)) => {
                lake.opened_run = run;
                Ok(Some((lake, recovery)))
            }
            Err(e) => {
                lake.created.remove();
                Err(e)
            }
        }
    }

    async fn open_tables(
        spec: &TableSpec,
        mut create: Option<&mut CreatedTables>,
    ) -> Result<Option<(DeltaTable, DeltaTable)>> {
        let schema = spec.table_schema();
        let partition_by: Vec<&str> = spec.lake.partition_by.iter().map(String::as_str).collect();
        let current = table::open_or_create(
            spec,
            &spec.lake.current_url,
            schema.clone(),
            &partition_by,
            TableRole::Current,
            create.as_deref_mut(),
        )
        .await?;
        let history = table::open_or_create(
            spec,
            &spec.lake.history_url,
            schema,
            &[EFF_START_DATE],
            TableRole::History,
            create,
        )
        .await?;
        Ok(current.zip(history))
    }

    /// Sets the change data feed property on current and history, and the deletion vectors
    /// property on current, where the config asks for them and a table lacks them (tables made
    /// before the setting was turned on). A table that would get the feed while a data file of
    /// it has a deletion vector is refused at the version the property would be committed
    /// against, before that commit ([`change_feed::refuse_enabling_over_vectors`]). Current,
    /// where Tributary writes vectors, is enabled first: its refusal commits nothing.
    async fn enable_change_feed(&mut self) -> Result<()> {
        if self.spec.lake.change_data_feed {
            // a table with deletion vectors is refused before the property's commit
            let current = change_feed::enable(&mut self.current, TableRole::Current.as_str());
            if current.await? {
                // Current loaded later than history: history is loaded again (the newest run
                // it records must be one current has, or has pending in history's commit).
                self.history.update_state().await?;
            }
            change_feed::enable(&mut self.history, TableRole::History.as_str()).await?;
        }
        if self.spec.lake.deletion_vectors {
            let role = TableRole::Current.as_str();
            let current = table::enable_property(
                &mut self.current,
                role,
                deletion_vectors::PROPERTY,
                deletion_vectors::enabled,
                |_, _| Ok(()),
                "deletion vectors",
            );
            if current.await? {
                self.history.update_state().await?;
            }
        }
        Ok(())
    }

    /// Opens the tables, creating those that are absent ([`DeltaLake::open`] with `create`).
    ///
    /// # Errors
    /// See [`DeltaLake::open`].
    pub async fn create(spec: &TableSpec) -> Result<(DeltaLake, Option<Recovery>)> {
        Self::open(spec, true)
            .await?
            .ok_or_else(|| Error::Internal("tables not created".into()))
    }

    /// The run the tables recorded when they were opened (0: none): what a run that reads
    /// them reads, and the base its sequence number follows ([`Sink::begin`]).
    pub fn opened_run(&self) -> i64 {
        self.opened_run
    }

    /// The table configuration the tables were opened with.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// Whether current and history both keep `source_position` (change-log tables made
    /// before it was kept do not: their rows are written without it and no change is stale).
    pub fn keeps_positions(&self) -> bool {
        let has = |t: &DeltaTable| {
            t.snapshot().is_ok_and(|s| {
                s.snapshot()
                    .arrow_schema()
                    .field_with_name(SOURCE_POSITION)
                    .is_ok()
            })
        };
        self.spec.source_positions && has(&self.current) && has(&self.history)
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

    /// The newest run both tables have recorded that applied input (not a compaction, which
    /// repeats the date and fingerprint of the run before it), if any.
    ///
    /// # Errors
    /// Delta errors reading the log.
    pub async fn last_applied_run(&self) -> Result<Option<RunRecord>> {
        Ok(log::last_applied_run(&self.current)
            .await?
            .map(|(_, e)| e.run))
    }

    /// Completes the newest run's follower commits (current, rejects, applied) that a crash or
    /// a failed commit left out ([`complete_pending`]).
    async fn recover(&mut self) -> Result<Option<Recovery>> {
        let spec = &self.spec;
        let open = |role: TableRole| {
            let spec = spec.clone();
            async move {
                let (url, schema) = match role {
                    TableRole::Rejects => (&spec.lake.rejects_url, rejects::schema()),
                    TableRole::Applied => (&spec.lake.applied_url, applied::schema()),
                    TableRole::Tombstones => (&spec.lake.tombstones_url, tombstones::schema()),
                    TableRole::Current | TableRole::History => {
                        return Err(Error::Internal("not a follower table".into()))
                    }
                };
                table::open_or_create(&spec, url, schema, &[], role, None).await
            }
        };
        complete_pending(
            &spec.name,
            &self.app_id,
            &self.history,
            &mut self.current,
            open,
        )
        .await
    }

    /// Opens the applied-files table if it exists (change-log tables only).
    ///
    /// # Errors
    /// [`Error::Lake`] for a table of another schema; Delta errors.
    pub async fn applied_table(&self) -> Result<Option<DeltaTable>> {
        self.open_follower(TableRole::Applied, None).await
    }

    /// Opens a follower table (current, rejects, applied); with `create`, creates it when
    /// absent and records that there.
    ///
    /// # Errors
    /// [`Error::Internal`] for history, which is no follower; [`Error::Lake`] for a table of
    /// another schema; Delta errors.
    pub(crate) async fn open_follower(
        &self,
        role: TableRole,
        create: Option<&mut CreatedTables>,
    ) -> Result<Option<DeltaTable>> {
        let (url, schema) = match role {
            TableRole::Current => return Ok(Some(self.current.clone())),
            TableRole::History => {
                return Err(Error::Internal("history is not a follower table".into()))
            }
            TableRole::Rejects => (&self.spec.lake.rejects_url, rejects::schema()),
            TableRole::Applied => (&self.spec.lake.applied_url, applied::schema()),
            TableRole::Tombstones => (&self.spec.lake.tombstones_url, tombstones::schema()),
        };
        table::open_or_create(&self.spec, url, schema, &[], role, create).await
    }

    /// Commits a planned run (see `commit::commit_run`).
    pub(crate) async fn commit_run(
        &mut self,
        run: RunRecord,
        history: Planned,
        followers: Vec<(TableRole, DeltaTable, Planned)>,
        created: &mut CreatedTables,
    ) -> Result<Versions> {
        commit::commit_run(
            &self.app_id,
            (&mut self.history, &mut self.current),
            run,
            history,
            followers,
            created,
        )
        .await
    }
}

impl Sink for DeltaLake {
    type Run = RunTransaction;

    async fn last_run(&self) -> Result<Option<RunRecord>> {
        DeltaLake::last_run(self).await
    }

    async fn committed(&self) -> Result<Committed> {
        let table = self.applied_table().await?;
        let position = self
            .last_run()
            .await?
            .and_then(|run| Some((run.seq, run.source_lsn?)))
            .map(|(seq, text)| {
                SlotPosition::parse(&text).ok_or_else(|| Error::Lake {
                    table: self.spec.name.clone(),
                    reason: format!("run {seq} records source_lsn `{text}`, not a slot position"),
                })
            })
            .transpose()?;
        Ok(Committed {
            files: applied::read(table.as_ref()).await?,
            position,
        })
    }

    async fn begin(
        &mut self,
        base_run: i64,
        properties: WriterProperties,
        writer_tasks: usize,
    ) -> Result<RunTransaction> {
        Ok(RunTransaction::begin(
            self,
            base_run,
            properties,
            writer_tasks,
        ))
    }

    async fn commit(&mut self, run: RunTransaction, commit: RunCommit) -> Result<Versions> {
        run.commit(self, commit).await
    }

    async fn abandon(&mut self, run: RunTransaction) {
        run.abandon().await
    }
}

/// Completes the newest run's follower commits (current, rejects, applied) that a crash or a
/// failed commit left out: history's commit is the run's commit point, and it lists what each
/// follower still needs. `open` opens a follower other than current (None: it is gone).
///
/// # Errors
/// [`Error::Lake`] for tables out of step that cannot be completed (see `commit::complete`);
/// Delta errors.
pub(crate) async fn complete_pending<F>(
    name: &str,
    app_id: &str,
    history: &DeltaTable,
    current: &mut DeltaTable,
    open: impl Fn(TableRole) -> F,
) -> Result<Option<Recovery>>
where
    F: std::future::Future<Output = Result<Option<DeltaTable>>> + Send,
{
    let h = txn_version(history, app_id).await?.unwrap_or(0);
    let mut c = txn_version(current, app_id).await?.unwrap_or(0);
    if h == 0 {
        return Ok(None);
    }
    if h > c + 1 {
        // Current was opened before history: other writers may have committed whole runs
        // in between. Read it again.
        current.update_state().await?;
        c = txn_version(current, app_id).await?.unwrap_or(0);
    }
    if h != c && h != c + 1 {
        return Err(Error::Lake {
            table: name.to_string(),
            reason: format!(
                "history records run {h} but current records run {c}; the tables were changed \
                 outside Tributary"
            ),
        });
    }
    let (history_version, entry) = if h == c + 1 {
        // current is behind: the run's history commit must be found
        let (version, actions) = find_run(history, h, TableRole::History.as_str()).await?;
        let entry = actions
            .entry
            .ok_or_else(|| Error::Internal("run commit without entry".into()))?;
        (version, entry)
    } else {
        // Level: only another follower (rejects, applied) can be behind. Current's last
        // commit names the run's history version; a log cleaned since means nothing to do.
        let Some(version) = log::last_run(current)
            .await?
            .and_then(|(_, e)| e.run.history_version)
        else {
            return Ok(None);
        };
        match log::read_commit(history, version).await? {
            Some(CommitActions {
                entry: Some(entry), ..
            }) if entry.run.seq == h => (version, entry),
            _ => return Ok(None),
        }
    };
    let mut run = entry.run.clone();
    run.history_version = Some(history_version);
    let mut completed = false;
    let mut roles = entry
        .pending
        .keys()
        .map(|name| {
            TableRole::follower(name).ok_or_else(|| Error::Lake {
                table: TableRole::History.as_str().into(),
                reason: format!("run {h} lists actions for an unknown table `{name}`"),
            })
        })
        .collect::<Result<Vec<TableRole>>>()?;
    // current first: the order of the original commits
    roles.sort_by_key(|r| (*r != TableRole::Current, r.as_str()));
    for role in roles {
        // Followers are created before the history commit: one that is gone was removed by
        // hand, and is not made again to receive files that may be gone too.
        let opened = match role {
            TableRole::Current => Some(current.clone()),
            _ => open(role).await?,
        };
        let Some(mut table) = opened else {
            tracing::warn!(run = h, table = %role.as_str(), "a table of the newest run is missing; not completed");
            continue;
        };
        let pending = &entry.pending[role.as_str()];
        let done = commit::complete(&mut table, role.as_str(), app_id, &run, pending).await?;
        if matches!(done, commit::Completed::Now(_)) {
            tracing::warn!(run = h, table = %role.as_str(), date = %run.business_date, "completed a run interrupted between its commits");
            completed = true;
        }
        if role == TableRole::Current {
            *current = table;
        }
    }
    Ok(completed.then_some(Recovery {
        completed_run: h,
        business_date: run.business_date,
    }))
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

/// The DataFusion settings Tributary reads its tables with: plain Utf8/Binary arrays, as the
/// table schema has them (view types would be cast back, a copy of every string and digest
/// scanned).
pub fn session_config() -> deltalake::datafusion::prelude::SessionConfig {
    let mut config = deltalake::datafusion::prelude::SessionConfig::new()
        .with_target_partitions(crate::core::threads::get());
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config
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
    let ctx = SessionContext::new_with_config(session_config());
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
/// hold: the text is cast, a missing value is NULL); a nullable column neither read nor a
/// partition value is NULL (a file written before the column was added, `add_columns`).
///
/// # Errors
/// [`Error::Lake`] for a non-nullable column neither read nor a partition value; Arrow cast
/// errors.
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
                // a file written before the column was added (Delta: read as NULL)
                (None, None) if field.is_nullable() => new_null_array(field.data_type(), rows),
                (None, None) => {
                    return Err(Error::Lake {
                        table: TableRole::Current.as_str().into(),
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

/// Remove actions for the live data files of `table` at `paths` (as the log names them), with
/// `dataChange` as given (false: a compaction, whose rows stay in other files).
///
/// # Errors
/// Delta errors reading the snapshot.
pub fn files_removed(
    table: &DeltaTable,
    paths: &std::collections::HashSet<String>,
    data_change: bool,
) -> Result<Vec<deltalake::kernel::Remove>> {
    Ok(table
        .snapshot()?
        .log_data()
        .iter()
        .filter(|f| paths.contains(f.path().as_ref()))
        .map(|f| f.remove_action(data_change))
        .collect())
}

/// Remove actions for every data file of `table` (a reload replaces them all).
///
/// # Errors
/// Delta errors reading the snapshot.
pub fn all_files_removed(table: &DeltaTable) -> Result<Vec<deltalake::kernel::Remove>> {
    Ok(table
        .snapshot()?
        .log_data()
        .iter()
        .map(|f| f.remove_action(true))
        .collect())
}
