//! Table maintenance on a table's Delta tables as stored, without its config: compaction
//! ([`optimize`], `tributary optimize`) and removal of files no version needs ([`vacuum`],
//! `tributary vacuum`).
//!
//! A compaction is a run of the commit protocol (`commit::commit_run`): it takes the table's
//! next run number, rewrites the small files of history and current into files of about the
//! target size (`add` and `remove` actions with `dataChange: false`, a Delta `OPTIMIZE`; a
//! file with a deletion vector is rewritten whatever its size, without its marked rows), and
//! commits history first with current's actions pending in that commit. So a run of the table
//! (`run`, `sync`, `capture`) that planned before the compaction committed conflicts at its
//! commit and plans again on top of it, and a compaction that loses to a run stops without
//! committing anything: no run is ever left with actions planned against files that are gone.
//! delta-rs's `OptimizeBuilder` commits each table on its own, which cannot carry current's
//! actions in history's commit; the files are written with delta-rs's writer, as every run's.
//!
//! Vacuum is delta-rs's `VacuumBuilder` in full mode (files removed before the retention, and
//! files no version references, such as those of an abandoned run), table by table, after the
//! open has completed an interrupted run, whose pending files no version references yet.

use std::collections::{BTreeMap, HashMap, HashSet};

use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::kernel::{Add, Remove};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::DeltaTable;
use futures::StreamExt;
use serde::Serialize;
use url::Url;

use super::commit::{commit_run, Planned};
use super::log::{self, RunRecord, OPTIMIZE};
use super::write::{discard_files, stream_into, Batches};
use super::{complete_pending, conform, dataframe, CreatedTables};
use crate::core::checkpoint::SlotPosition;
use crate::error::{Error, Result};
use crate::sink::TableRole;

/// A table's Delta tables opened as stored (a `sync`/`capture` lake root's table, or the paths
/// of a snapshot config), with an interrupted run completed.
pub struct StoredLake {
    name: String,
    app_id: String,
    current: DeltaTable,
    history: DeltaTable,
    /// The follower tables' URLs (rejects, applied, tombstones; absent ones are skipped).
    followers: Vec<(TableRole, Url)>,
}

impl StoredLake {
    /// Opens table `name`'s current and history tables, whose runs commit under `app_id`, and
    /// completes the follower commits of an interrupted run (as every run's open does).
    /// Returns None when either table is absent or records no run.
    ///
    /// # Errors
    /// [`Error::Lake`] for tables out of step that cannot be completed; Delta errors.
    pub async fn open(
        name: &str,
        app_id: &str,
        current: &Url,
        history: &Url,
        followers: Vec<(TableRole, Url)>,
    ) -> Result<Option<StoredLake>> {
        let (Some(mut current), Some(history)) = (
            super::stored_table(current).await?,
            super::stored_table(history).await?,
        ) else {
            return Ok(None);
        };
        if log::txn_version(&history, app_id).await?.unwrap_or(0) == 0 {
            return Ok(None);
        }
        let app_id = app_id.to_string();
        let open = |role: TableRole| {
            let url = followers
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, url)| url.clone());
            async move {
                match url {
                    Some(url) => super::stored_table(&url).await,
                    None => Ok(None),
                }
            }
        };
        complete_pending(name, &app_id, &history, &mut current, open).await?;
        Ok(Some(StoredLake {
            name: name.to_string(),
            app_id,
            current,
            history,
            followers,
        }))
    }

    /// The table's name, as the lake names it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What a compaction did to one Delta table.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Compacted {
    /// Partitions (history: `eff_start_date` days) with files rewritten.
    pub partitions: u64,
    /// Small files rewritten (removed from the table, `dataChange: false`).
    pub files_removed: u64,
    /// Their bytes.
    pub bytes_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
    /// Their bytes.
    pub bytes_added: u64,
    /// Data files of the table after the compaction.
    pub files_after: u64,
}

/// What [`optimize`] did to a table.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OptimizeSummary {
    /// The table's name.
    pub table: String,
    /// `compacted`, or `nothing to compact`.
    pub status: String,
    /// The run number the compaction committed as.
    pub run: Option<i64>,
    /// The current table.
    pub current: Compacted,
    /// The history table.
    pub history: Compacted,
    /// Versions after the commit.
    pub current_version: Option<u64>,
    /// See `current_version`.
    pub history_version: Option<u64>,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
}

/// Small files of one partition rewritten together into files of about the target size.
#[derive(Debug, Clone, PartialEq)]
struct Bin {
    partition: HashMap<String, Option<String>>,
    files: Vec<Add>,
}

/// Groups `files` (a table's live data files) by partition and packs the files smaller than
/// `target` bytes, and those with a deletion vector, that `keep` does not name into bins of at
/// least `target` bytes (the last of a partition smaller), in log order; a bin of one file is
/// left as it is unless that file has a deletion vector (rewriting it drops the marked rows).
fn plan_bins(files: Vec<Add>, target: u64, keep: &HashSet<String>) -> Vec<Bin> {
    let mut partitions: BTreeMap<Vec<(String, Option<String>)>, Vec<Add>> = BTreeMap::new();
    for add in files {
        let large = add.size as u64 >= target && add.deletion_vector.is_none();
        if large || keep.contains(&add.path) {
            continue;
        }
        let mut key: Vec<_> = add
            .partition_values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        key.sort();
        partitions.entry(key).or_default().push(add);
    }
    let mut bins: Vec<Vec<Add>> = Vec::new();
    for files in partitions.into_values() {
        let mut bin = Vec::new();
        let mut bytes = 0u64;
        for add in files {
            bytes += add.size as u64;
            bin.push(add);
            if bytes >= target {
                bins.push(std::mem::take(&mut bin));
                bytes = 0;
            }
        }
        bins.push(bin);
    }
    bins.into_iter()
        .filter(|files| files.len() > 1 || files.iter().any(|f| f.deletion_vector.is_some()))
        .map(|files| Bin {
            partition: files[0].partition_values.clone(),
            files,
        })
        .collect()
}

/// Rewrites each bin of `table` into new data files of about `target` bytes (not committed):
/// the bin's rows, read through DataFusion, in the table's schema (a column added after a file
/// was written is NULL, the Delta rule). Returns their `add` actions, `dataChange: false`.
///
/// # Errors
/// DataFusion, Delta and Parquet errors; the files written so far are deleted.
async fn rewrite(
    table: &DeltaTable,
    bins: &[Bin],
    target: u64,
    properties: &WriterProperties,
) -> Result<Vec<Add>> {
    let schema = table.snapshot()?.snapshot().arrow_schema();
    let mut adds = Vec::new();
    for bin in bins {
        let written = async {
            let frame = dataframe(table, |p| p.with_adds(bin.files.clone())).await?;
            let rows: SendableRecordBatchStream = frame.execute_stream().await?;
            let (tx, rx) = Batches::channel();
            let schema = &schema;
            let feed = async move {
                let mut rows = rows;
                while let Some(batch) = rows.next().await {
                    let batch = conform(&batch?, schema, &bin.partition)?;
                    if tx.send(batch).await.is_err() {
                        break; // the writer stopped: its error is the one returned
                    }
                }
                Ok::<_, Error>(())
            };
            let mut check = |_: &RecordBatch| Ok(());
            let props = properties.clone();
            let write = async {
                let wrote = stream_into(table, &rx, props, &mut adds, &mut check, target).await;
                if wrote.is_err() {
                    // The feed waiting for room fails now instead of waiting for ever.
                    rx.close().await;
                }
                wrote
            };
            let (fed, wrote) = futures::join!(feed, write);
            wrote.and(fed)
        }
        .await;
        if let Err(e) = written {
            discard_files(table, &adds).await;
            return Err(e);
        }
    }
    for add in &mut adds {
        add.data_change = false;
    }
    Ok(adds)
}

/// `remove` actions (`dataChange: false`) for the files of `bins`.
fn removes(table: &DeltaTable, bins: &[Bin]) -> Result<Vec<Remove>> {
    let paths: HashSet<String> = bins
        .iter()
        .flat_map(|b| b.files.iter().map(|a| a.path.clone()))
        .collect();
    super::files_removed(table, &paths, false)
}

/// The live data files of `table`.
fn live_files(table: &DeltaTable) -> Result<Vec<Add>> {
    Ok(table
        .snapshot()?
        .log_data()
        .iter()
        .map(|f| Add {
            path: f.path().to_string(),
            size: f.size(),
            partition_values: f.partition_values_map(),
            modification_time: f.modification_time(),
            data_change: true,
            stats: f.stats(),
            deletion_vector: f.deletion_vector_descriptor(),
            ..Default::default()
        })
        .collect())
}

/// Data files of `table` now.
fn file_count(table: &DeltaTable) -> Result<u64> {
    Ok(table.snapshot()?.log_data().num_files() as u64)
}

/// What a compaction of one table plans: its bins and the actions that commit them.
fn tally(bins: &[Bin], planned: &Planned) -> Compacted {
    let partitions: HashSet<Vec<(&String, &Option<String>)>> = bins
        .iter()
        .map(|b| {
            let mut key: Vec<_> = b.partition.iter().collect();
            key.sort();
            key
        })
        .collect();
    Compacted {
        partitions: partitions.len() as u64,
        files_removed: planned.removes.len() as u64,
        bytes_removed: planned.removes.iter().filter_map(|r| r.size).sum::<i64>() as u64,
        files_added: planned.adds.len() as u64,
        bytes_added: planned.bytes_added(),
        files_after: 0,
    }
}

/// Compacts `lake`'s current and history tables: in each partition, files smaller than
/// `target` bytes are rewritten together into files of about `target` bytes, committed as the
/// table's next run (see the module docs). History files that the newest run added are kept as
/// they are (`run --replace` replaces that run by its files). Nothing is committed when no
/// partition has two such files.
///
/// # Errors
/// [`Error::Refused`] while `capture`'s initial copy of the table is unfinished (its parts are
/// found by their runs' files); [`Error::Conflict`] when a run of the table committed first
/// (nothing committed, the files written are deleted: compact again); Delta, DataFusion and
/// Parquet errors.
pub async fn optimize(
    lake: &mut StoredLake,
    target: u64,
    properties: &WriterProperties,
) -> Result<OptimizeSummary> {
    let started = std::time::Instant::now();
    let mut summary = OptimizeSummary {
        table: lake.name.clone(),
        status: "nothing to compact".into(),
        ..Default::default()
    };
    // The run this one follows, as every run's begin takes it: history's `txn` version.
    let seq = log::txn_version(&lake.history, &lake.app_id)
        .await?
        .unwrap_or(0)
        + 1;
    let last = match log::last_run(&lake.history).await? {
        Some((_, entry)) if entry.run.seq == seq - 1 => entry.run,
        _ => {
            return Err(Error::Lake {
                table: format!("{} history", lake.name),
                reason: format!(
                    "the commit of run {} is not in the log (cleaned up); cannot compact",
                    seq - 1
                ),
            })
        }
    };
    if last.source_lsn.as_deref() == Some(SlotPosition::default().text().as_str()) {
        return Err(Error::Refused(format!(
            "{}: capture's initial copy of this table has not finished (run {} records \
             position 0/0); compact it after the copy",
            lake.name, last.seq
        )));
    }
    let keep: HashSet<String> = match log::last_applied_run(&lake.history).await? {
        Some((version, _)) => log::read_commit(&lake.history, version)
            .await?
            .map(|c| c.adds.into_iter().map(|a| a.path).collect())
            .unwrap_or_default(),
        None => HashSet::new(),
    };
    let history_bins = plan_bins(live_files(&lake.history)?, target, &keep);
    let current_bins = plan_bins(live_files(&lake.current)?, target, &HashSet::new());
    if history_bins.is_empty() && current_bins.is_empty() {
        summary.current.files_after = file_count(&lake.current)?;
        summary.history.files_after = file_count(&lake.history)?;
        summary.elapsed_secs = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let history_adds = rewrite(&lake.history, &history_bins, target, properties).await?;
    let current_adds = match rewrite(&lake.current, &current_bins, target, properties).await {
        Ok(adds) => adds,
        Err(e) => {
            discard_files(&lake.history, &history_adds).await;
            return Err(e);
        }
    };
    let planned = (|| {
        let history = Planned {
            removes: removes(&lake.history, &history_bins)?,
            adds: history_adds.clone(),
            // no row changes (dataChange false): no change data, with the feed on or off
            cdc: Vec::new(),
        };
        let current = Planned {
            removes: removes(&lake.current, &current_bins)?,
            adds: current_adds.clone(),
            cdc: Vec::new(),
        };
        Ok::<_, Error>((history, current))
    })();
    let (history_planned, current_planned) = match planned {
        Ok(planned) => planned,
        Err(e) => {
            discard_files(&lake.history, &history_adds).await;
            discard_files(&lake.current, &current_adds).await;
            return Err(e);
        }
    };
    summary.history = tally(&history_bins, &history_planned);
    summary.current = tally(&current_bins, &current_planned);
    let record = RunRecord {
        seq,
        run_id: uuid::Uuid::new_v4().to_string(),
        // What the table's last run applied, so that every source reads its position on as
        // before (a re-run of the same input is still a no-op).
        business_date: last.business_date,
        fingerprint: last.fingerprint,
        source_lsn: last.source_lsn,
        current_base_version: lake.current.version(),
        history_version: None,
        operation: Some(OPTIMIZE.to_string()),
        target_file_bytes: Some(target),
        counts: None,
        duration_ms: Some(started.elapsed().as_millis() as u64),
    };
    let followers = vec![(TableRole::Current, lake.current.clone(), current_planned)];
    let versions = commit_run(
        &lake.app_id,
        (&mut lake.history, &mut lake.current),
        record,
        history_planned,
        followers,
        &mut CreatedTables::default(),
    )
    .await?;
    summary.status = "compacted".into();
    summary.run = Some(seq);
    summary.current_version = versions.get(TableRole::Current);
    summary.history_version = versions.get(TableRole::History);
    summary.current.files_after = file_count(&lake.current)?;
    summary.history.files_after = file_count(&lake.history)?;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// What [`vacuum`] found (and, unless a dry run, deleted) in one Delta table.
#[derive(Debug, Clone, Serialize)]
pub struct Vacuumed {
    /// `current`, `history`, `rejects`, `applied` or `tombstones`.
    pub table: String,
    /// The files no version within the retention references, relative to the table's root.
    pub files: Vec<String>,
    /// Whether they were deleted (false: a dry run).
    pub deleted: bool,
}

/// Finds, and with `delete` removes, the files of each of `lake`'s Delta tables that no
/// version within `retain` references and that are older than it (delta-rs's full vacuum; a
/// table's own files only: a history file shared with current is a name of its own, see
/// `shared`), keeping the current version a snapshot table's newest run read (for `run
/// --replace`). Without
/// `delete` nothing is written (a dry run). With `force` a retention below the table's
/// `delta.deletedFileRetentionDuration` (7 days by default) is allowed: a run of the table
/// writing its files at that moment may then lose them and commit references to files that
/// are gone (as with Delta's `retentionDurationCheck.enabled = false`).
///
/// # Errors
/// [`Error::Refused`] for a retention below the table's minimum without `force`, and for a
/// table inside another one's folder; Delta and object-store errors (the tables vacuumed before
/// the error stay vacuumed).
pub async fn vacuum(
    lake: &StoredLake,
    retain: std::time::Duration,
    delete: bool,
    force: bool,
) -> Result<Vec<Vacuumed>> {
    let mut tables = vec![
        (TableRole::Current, lake.current.clone()),
        (TableRole::History, lake.history.clone()),
    ];
    for (role, url) in &lake.followers {
        if let Some(table) = super::stored_table(url).await? {
            tables.push((*role, table));
        }
    }
    // A full vacuum lists everything under a table's root: a table inside another's folder
    // would be taken for its orphans.
    let root = |t: &DeltaTable| {
        let mut url = t.table_url().to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        url
    };
    for (role, table) in &tables {
        for (inner, other) in &tables {
            if role != inner && root(other).starts_with(&root(table)) {
                return Err(Error::Refused(format!(
                    "{}: the {} table lies inside the {} table's folder ({}); vacuum would take \
                     its files for orphans. Move it out first",
                    lake.name,
                    inner.as_str(),
                    role.as_str(),
                    root(table)
                )));
            }
        }
    }
    // `run --replace` of a snapshot table's newest run reads current as that run read it
    // (change-log tables, which keep `source_position`, have no replace).
    let snapshot_table = lake
        .current
        .snapshot()?
        .snapshot()
        .arrow_schema()
        .field_with_name(crate::core::schema::SOURCE_POSITION)
        .is_err();
    let mut replace_base = match snapshot_table {
        true => log::last_applied_run(&lake.current)
            .await?
            .and_then(|(_, e)| e.run.current_base_version),
        false => None,
    };
    // A version whose log was cleaned up cannot be kept (nor read by `--replace`).
    if let Some(version) = replace_base {
        if log::read_commit(&lake.current, version).await?.is_none() {
            tracing::warn!(table = %lake.name, version, "the current version the newest run read is gone from the log; not kept");
            replace_base = None;
        }
    }
    let retention = chrono::Duration::from_std(retain)
        .map_err(|_| Error::Usage(format!("--retain {retain:?}: too long")))?;
    let mut out = Vec::new();
    for (role, table) in tables {
        let keep: Vec<_> = match role {
            TableRole::Current => replace_base.iter().map(|v| *v as _).collect(),
            _ => Vec::new(),
        };
        let vacuum = |table: DeltaTable, dry_run: bool| {
            table
                .vacuum()
                .with_keep_versions(&keep)
                .with_mode(VacuumMode::Full)
                .with_retention_period(retention)
                .with_enforce_retention_duration(!force)
                .with_dry_run(dry_run)
        };
        // Listed first: a Delta log among the files (a table of another config inside this
        // one's folder) refuses the vacuum before anything is deleted.
        let (_, listed) = vacuum(table.clone(), true)
            .await
            .map_err(|e| refused_retention(&lake.name, role, e))?;
        if let Some(log) = listed
            .files_deleted
            .iter()
            .find(|f| f.split('/').any(|part| part == "_delta_log"))
        {
            return Err(Error::Refused(format!(
                "{} {}: {log} is in another Delta table's log inside this table's folder; \
                 vacuum would delete that table. Move it out first",
                lake.name,
                role.as_str()
            )));
        }
        // Deletion vectors that versions within the retention read stay (see
        // `recent_vector_files`); the rest of the list is deleted here when it names one.
        let needed = recent_vector_files(&table, retention).await?;
        let kept = |file: &String| match &needed {
            Some(needed) => needed
                .iter()
                .any(|n| file == n || file.ends_with(&format!("/{n}"))),
            None => file
                .rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with("deletion_vector_")),
        };
        let files = match (delete, listed.files_deleted.iter().any(kept)) {
            (true, false) => {
                let done = vacuum(table, false).await;
                done.map_err(|e| refused_retention(&lake.name, role, e))?
                    .1
                    .files_deleted
            }
            (true, true) => {
                let files: Vec<String> = listed
                    .files_deleted
                    .into_iter()
                    .filter(|f| !kept(f))
                    .collect();
                use futures::StreamExt;
                let paths: Vec<_> = files
                    .iter()
                    .map(|f| Ok(super::write::file_path(f)))
                    .collect();
                let store = table.object_store();
                let mut deleted = store.delete_stream(futures::stream::iter(paths).boxed());
                while let Some(done) = deleted.next().await {
                    match done {
                        Ok(_) | Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
                        Err(e) => return Err(deltalake::DeltaTableError::from(e).into()),
                    }
                }
                drop(deleted);
                files
            }
            (false, _) => listed
                .files_deleted
                .into_iter()
                .filter(|f| !kept(f))
                .collect(),
        };
        out.push(Vacuumed {
            table: role.as_str().to_string(),
            files,
            deleted: delete,
        });
    }
    Ok(out)
}

/// Deletion-vector files that a version within `retention` of now may read: those named by
/// the `remove` actions of the commits made within it (the vector marked its file, live, in
/// the version before each such commit). delta-rs's full vacuum keeps the vectors of live
/// files only, so an older vector that a recent commit replaced would go, and time travel to
/// the versions before that commit with it. Walks back from the newest commit to the first one
/// older than the retention or gone from the log (nothing to walk for a table whose protocol
/// has no deletion vectors). Returns None when `MAX_LOG_WALK` commits all lie within the
/// retention: older ones may name more, so every vector file is kept.
///
/// # Errors
/// Object-store errors and malformed commits.
async fn recent_vector_files(
    table: &DeltaTable,
    retention: chrono::Duration,
) -> Result<Option<HashSet<String>>> {
    let mut files = HashSet::new();
    let Some(latest) = table.version() else {
        return Ok(Some(files));
    };
    if !super::deletion_vectors::listed(table)? {
        return Ok(Some(files));
    }
    let since = chrono::Utc::now().timestamp_millis() - retention.num_milliseconds();
    let oldest = latest.saturating_sub(log::MAX_LOG_WALK);
    for version in (oldest..=latest).rev() {
        let Some(commit) = log::read_commit(table, version).await? else {
            return Ok(Some(files));
        };
        if commit.timestamp_ms.is_some_and(|t| t < since) {
            return Ok(Some(files));
        }
        files.extend(
            commit
                .removed_vectors
                .iter()
                .filter_map(super::deletion_vectors::file_of),
        );
    }
    Ok((oldest == 0).then_some(files))
}

/// delta-rs's refusal of a retention below the table's minimum, as [`Error::Refused`].
fn refused_retention(name: &str, role: TableRole, err: deltalake::DeltaTableError) -> Error {
    let text = err.to_string();
    let text = text.trim_start_matches("Generic error: ").to_string();
    match text.contains("retention period") {
        true => Error::Refused(format!(
            "{name} {}: {text}; pass --force to go below it",
            role.as_str()
        )),
        false => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(path: &str, size: i64, day: &str) -> Add {
        Add {
            path: path.into(),
            size,
            partition_values: [("eff_start_date".to_string(), Some(day.to_string()))].into(),
            data_change: true,
            ..Default::default()
        }
    }

    fn paths(bins: &[Bin]) -> Vec<Vec<&str>> {
        bins.iter()
            .map(|b| b.files.iter().map(|a| a.path.as_str()).collect())
            .collect()
    }

    #[test]
    fn small_files_of_a_partition_are_packed_up_to_the_target() {
        let files = vec![
            add("a", 40, "2024-01-01"),
            add("b", 40, "2024-01-02"),
            add("c", 40, "2024-01-01"),
            add("big", 100, "2024-01-01"),
            add("d", 40, "2024-01-01"),
            add("e", 10, "2024-01-01"),
        ];
        let bins = plan_bins(files, 100, &HashSet::new());
        // a+c+d reach the target, and e alone is left; b is the only small file of its day; a
        // file of the target size or more is never rewritten.
        assert_eq!(paths(&bins), vec![vec!["a", "c", "d"]]);
        assert_eq!(
            bins[0].partition["eff_start_date"].as_deref(),
            Some("2024-01-01")
        );
    }

    #[test]
    fn kept_files_stay_and_single_files_are_not_rewritten() {
        let files = vec![
            add("a", 10, "2024-01-01"),
            add("b", 10, "2024-01-01"),
            add("c", 10, "2024-01-01"),
        ];
        let keep: HashSet<String> = ["b".to_string()].into();
        assert_eq!(
            paths(&plan_bins(files.clone(), 100, &keep)),
            vec![vec!["a", "c"]]
        );
        let keep: HashSet<String> = ["b".to_string(), "c".to_string()].into();
        assert!(plan_bins(files, 100, &keep).is_empty());
    }

    #[test]
    fn a_file_with_a_deletion_vector_is_rewritten_whatever_its_size() {
        let vector = |mut add: Add| {
            add.deletion_vector = Some(deltalake::kernel::DeletionVectorDescriptor {
                storage_type: deltalake::kernel::StorageType::UuidRelativePath,
                path_or_inline_dv: "vx{WF?c7#VTBa+6sDn1.".into(),
                offset: Some(1),
                size_in_bytes: 20,
                cardinality: 2,
            });
            add
        };
        let files = vec![
            vector(add("big", 500, "2024-01-01")),
            add("large", 500, "2024-01-01"),
            vector(add("alone", 500, "2024-01-02")),
            add("small", 10, "2024-01-03"),
        ];
        let none = HashSet::new();
        assert_eq!(
            paths(&plan_bins(files, 100, &none)),
            vec![vec!["big"], vec!["alone"]]
        );
    }
}
