//! Applying change-log batches to a table's current and history tables in one run.
//!
//! 1. Keep the last change per key by source order ([`last_per_key`]).
//! 2. Find the data files of the current table that hold a changed key: one scan of `keyhash`
//!    and the file path (the DMS walkthrough's "impacted files").
//! 3. Rewrite only those files: a second scan reads them whole; unchanged rows are copied, the
//!    stored rows of changed keys tell which keys are live (`operation` other than D), changed
//!    keys get their new row (upsert), deleted keys are dropped (hard) or kept with
//!    `operation = D` (soft). Rows that move to another `partition_by` value leave their old
//!    file, so no duplicate remains. Current and history rows stream to one writer per table.
//!    A change older than its key's stored row by source position (`source_position`: LSN,
//!    binlog position, commit time; see `ChangeBatch::positions`) is stale: a late file's
//!    change never overwrites a newer one, nor brings back a key soft-deleted by a newer
//!    delete. It is skipped, counted per file, and the stored row stays. Equal positions, and
//!    rows or changes without one, are applied in source order as before.
//! 4. History gets one row per applied change: I and U rows carry the change's values, D rows the
//!    last stored values of the deleted key; `eff_start_date` is the change's commit date, or the
//!    run date when the source has none.
//! 5. One run commit through the run transaction (`sink` contract): history first, then current
//!    and the applied-files table, which records the run's checkpoint.
//!
//! A current table with deletion vectors (`deletion_vectors: true`, see
//! `sink::delta::deletion_vectors`) is not rewritten in step 3. One scan reads `keyhash`,
//! `operation` and `source_position` of every row, and the rows of changed keys are marked in
//! vectors. Only those whose values are written again are read whole ([`Whole`]: a delete's D
//! row, values an update keeps, a row a stale change leaves in place); the others give only
//! their state ([`StoredRow`]).
//!
//! Every scan of current (step 2, step 3's copy, the deletion-vector scan) looks up each stored
//! row's `keyhash` in the changed keys behind a filter of them ([`FilteredMap`]): the rows of
//! unchanged keys, most of a table, seldom reach the hash map.
//!
//! Tables without a primary key only take inserts, appended without a scan (the DMS
//! walkthrough's rule); their updates and deletes are counted and skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, RecordBatch, StringArray,
};
use deltalake::arrow::compute::{cast, filter_record_batch, interleave_record_batch};
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use deltalake::kernel::Remove;
use deltalake::DeltaTable;
use futures::StreamExt;
use serde::Serialize;

use super::dedupe::{last_per_key, Picked};
use super::spill::{Group, RunChanges};
use crate::config::tables::DeleteMode;
use crate::config::ChangelogTable;
use crate::core::batch::BATCH_ROWS;
use crate::core::change::{ChangeBatch, ChangeOp, SourceOrder};
use crate::core::checkpoint::Checkpoint;
use crate::core::key::{key, DigestMap, FilteredMap, Key};
use crate::core::schema::{table_schema, EFF_START_DATE, KEYHASH, OPERATION, SOURCE_POSITION};
use crate::core::time::epoch_days;
use crate::error::{Error, Result};
use crate::sink::delta::current::{DataFiles, Picks};
use crate::sink::delta::deletion_vectors::{self, Marked};
use crate::sink::delta::tombstones::{self, Tombstone};
use crate::sink::delta::{self, writer_properties, DeltaLake, RunCommit, Senders};
use crate::sink::{Sink, TableRole};
use deltalake::arrow::array::Int64Array;
use deltalake::arrow::datatypes::Int64Type;

/// Rows of a run whose upserts are shared by current and history per writer task (see
/// [`apply`]): fewer rows get fewer tasks, and so fewer files.
const SHARED_ROWS_PER_WRITER: usize = 1 << 20;

/// Input bytes of a streamed full load per writer task (about 1M rows of a CSV file of four
/// columns; a load of unknown size gets the most).
const STREAMED_BYTES_PER_WRITER: u64 = 64 << 20;

/// Name of the file-path column of the impacted-files scan.
const FILE_COLUMN: &str = "__tributary_file";

/// One run of changes for [`apply`].
pub struct ApplyRequest<'a> {
    /// The table: columns and key, delete mode, lake tables.
    pub config: &'a ChangelogTable,
    /// The run's changes, in any batch order (each change carries its source order): held,
    /// or split (by keyhash, or in read order) and spilled past half the run's memory; see
    /// `changelog::spill`.
    pub changes: RunChanges,
    /// Replace the whole current table (a new DMS full load) instead of merging into it.
    pub reload: bool,
    /// The changes are inserts of keys the table does not hold: appended without a scan (a
    /// later part of an initial copy).
    pub append: bool,
    /// What the changes consumed of their source, committed with them.
    pub checkpoint: Checkpoint,
    /// Bytes of the run's input files (0: unknown): a streamed load, whose rows are not
    /// counted before it is written, gets a writer per [`STREAMED_BYTES_PER_WRITER`].
    pub input_bytes: u64,
    /// Where a streamed load's checkpoint and history removes come from once its source has
    /// ended (they replace `checkpoint` and `history_removes`); None for every other run.
    pub source_end: Option<tokio::sync::oneshot::Receiver<(Checkpoint, Vec<Remove>)>>,
    /// Business date of the run: `eff_start_date` of changes without a commit time.
    pub run_date: NaiveDate,
    /// The run the tables recorded when the source was planned against them (0: no tables).
    pub base_run: i64,
    /// History files the run replaces (see `ChangeSource::history_removes`).
    pub history_removes: Vec<Remove>,
    /// The run's memory limit and spill folder, also those of its change data feed's
    /// comparison (tables that record the feed).
    pub memory: super::spill::RunMemory,
    /// Where a run applied in partitions says how far it is (changes applied of all, and the
    /// partition).
    pub bar: Option<&'a indicatif::ProgressBar>,
}

/// What a run applied.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ApplySummary {
    /// The run's sequence number.
    pub run_seq: i64,
    /// The run's id (a UUID), recorded in its commits.
    pub run_id: String,
    /// Change rows read.
    pub changes_read: u64,
    /// Keys left after keeping the last change per key.
    pub keys_changed: u64,
    /// Keys inserted (I rows).
    pub inserted: u64,
    /// Keys updated (U rows).
    pub updated: u64,
    /// Keys deleted (D rows).
    pub deleted: u64,
    /// Deletes of keys that are not in the table.
    pub ignored_deletes: u64,
    /// Changes skipped as stale: older, by source position, than their key's stored row.
    pub stale: u64,
    /// Stale changes per change file (name relative to the table's landing folder).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stale_files: BTreeMap<String, u64>,
    /// Rows written to the tombstones table (the run's new tombstones, or every one kept by a
    /// compaction).
    pub tombstones_written: u64,
    /// Whether the run rewrote the tombstones table as one file.
    pub tombstones_compacted: bool,
    /// Updates and deletes of a table without primary key (not loaded).
    pub skipped_without_key: u64,
    /// Data files of the current table before the run.
    pub current_files: u64,
    /// Of those, the files rewritten because they hold a changed key.
    pub files_rewritten: u64,
    /// Unchanged rows copied from rewritten files.
    pub rows_copied: u64,
    /// Of the current files, those given a deletion vector instead of being rewritten
    /// (`deletion_vectors: true`; see `sink::delta::deletion_vectors`).
    pub files_marked: u64,
    /// Rows of changed keys marked deleted in those vectors (nothing copied).
    pub rows_marked: u64,
    /// Groups the changes were applied in, one after another: 1 when they were held in
    /// memory or streamed, else the keyhash partitions they were split into (see
    /// `changelog::spill`).
    pub partitions: u64,
    /// Bytes of changes, and of a merge's stored rows of changed keys, written to spill files
    /// (Arrow IPC; 0: held in memory); for a streamed load, of its logged key digests.
    pub spilled_bytes: u64,
    /// Whether the run was a full load streamed to the writers as it was read (its keys
    /// checked distinct at its end; see `changelog::spill`).
    pub streamed: bool,
    /// Current table version after the run.
    pub current_version: Option<u64>,
    /// History table version after the run.
    pub history_version: Option<u64>,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Seconds per stage.
    pub stages: ApplyStages,
}

/// Where a run's time went, in seconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ApplyStages {
    /// Last change per key.
    pub dedupe_secs: f64,
    /// Scan of `keyhash` and file paths for the impacted files (with deletion vectors: of
    /// `keyhash` and row positions for the rows to mark).
    pub impacted_scan_secs: f64,
    /// Re-reading the impacted files, resolving the changes and handing rows to the writers.
    pub merge_secs: f64,
    /// Waiting for the writers to finish after the last row.
    pub write_secs: f64,
    /// Writing the checkpoint and committing the tables.
    pub commit_secs: f64,
}

/// Applies one run of changes and commits it (see the module docs).
///
/// # Errors
/// Delta, DataFusion and Parquet errors; [`Error::Lake`] when the tables already record this
/// run. The run transaction deletes the data files written before a failure (and the tables a
/// first run created) and nothing is committed; when the commit itself fails after history
/// landed, the next open completes the run.
pub async fn apply(lake: &mut DeltaLake, mut request: ApplyRequest<'_>) -> Result<ApplySummary> {
    let started = Instant::now();
    let config = request.config;
    let spec = &config.table;
    let properties = writer_properties(spec.lake.compression, 32 << 20, &spec.unique_columns());
    let follower_properties = properties.clone();
    // A merge that rewrites files: one writer per table (more measured no faster on 2 cores,
    // and one keeps the rows of a file contiguous in input order: fewer files touched by later
    // changes). A run that writes current anew or only adds to it, and a merge that marks rows
    // in deletion vectors (it copies no row: its upserts are most of what current gets, the
    // rest being soft deletes, rows with kept TOAST values and rows a stale change leaves),
    // share their upserts' files with history (`Outputs::both`; not a partitioned current
    // table, whose files lack its partition columns). For a load, an append or a table
    // without a key, one writer per million rows and thread, up to 4, encodes them (each
    // writes its own files: small runs keep one); a marking merge keeps one writer per table
    // and one for the shared rows (its other rows are few, and history's writers each write a
    // file per day).
    let adds = request.reload || request.append || config.insert_only;
    let marks = !adds && deletion_vectors::in_use(&lake.current)?;
    let shares = adds || marks;
    let rows = request.changes.rows();
    // (a streamed load's rows are not counted yet: its input bytes say how large it is)
    let most = crate::core::threads::get().clamp(1, 4);
    let tasks = match (
        shares && !marks && spec.lake.partition_by.is_empty(),
        &request.changes,
    ) {
        (true, RunChanges::Streamed(_)) if request.input_bytes == 0 => most,
        (true, RunChanges::Streamed(_)) => {
            ((request.input_bytes / STREAMED_BYTES_PER_WRITER) as usize).clamp(1, most)
        }
        (true, _) => (rows / SHARED_ROWS_PER_WRITER).clamp(1, most),
        (false, _) => 1,
    };
    let mut run = lake.begin(request.base_run, properties, tasks).await?;
    let run_days = epoch_days(request.run_date);
    let schema = match lake.keeps_positions() {
        true => spec.table_schema(),
        false => {
            if spec.source_positions {
                tracing::warn!(table = %spec.name, "the tables were made before source positions were kept: late changes are applied, not skipped as stale (start new tables to keep them)");
            }
            table_schema(&spec.typed_columns())
        }
    };
    let current_files = lake
        .current
        .snapshot()
        .map(|s| s.log_data().num_files() as u64)
        .map_err(Error::from);
    let mut summary = ApplySummary {
        run_seq: run.seq(),
        run_id: run.id().to_string(),
        changes_read: rows as u64,
        current_files: run.guard(current_files).await?,
        ..Default::default()
    };
    let mut changes = std::mem::replace(&mut request.changes, RunChanges::Held(Vec::new()));
    // Rows go to the writers in slices of at most BATCH_ROWS picks, as they are resolved.
    let senders = run.senders()?.clone();
    let merging = Instant::now();
    let groups = Groups {
        lake,
        request: &request,
        schema: &schema,
        run_days,
        senders: &senders,
        share: shares && senders.shares(),
    };
    let merged = groups.run(&mut changes, &mut summary).await;
    // a streamed load's source has ended once its last group was taken
    let merged = match (merged, request.source_end.take()) {
        (Ok(merged), Some(end)) => match end.await {
            Ok((checkpoint, removes)) => {
                request.checkpoint = checkpoint;
                request.history_removes = removes;
                Ok(merged)
            }
            Err(_) => Err(Error::Internal(
                "the source's stream ended without its checkpoint".into(),
            )),
        },
        (merged, _) => merged,
    };
    if let RunChanges::Streamed(_) = changes {
        // its rows were counted as they were read
        summary.changes_read = changes.rows() as u64;
        summary.streamed = true;
    }
    let spill = changes.spill();
    (summary.partitions, summary.spilled_bytes) = (spill.partitions, spill.spilled_bytes);
    // what is left of spilled changes (after an error) waits for a spill being written and
    // removes its files: no work for the runtime's threads
    if matches!(changes, RunChanges::Spilled(_)) {
        let _ = tokio::task::spawn_blocking(move || drop(changes)).await;
    } else {
        drop(changes);
    }
    // The writers finish once every sender is dropped.
    drop(senders);
    let writing = Instant::now();
    summary.stages.merge_secs = (writing - merging).as_secs_f64()
        - summary.stages.dedupe_secs
        - summary.stages.impacted_scan_secs;
    let merged = run.finish_writes(merged).await?;
    if let Some(write) = merged.tombstones {
        summary.tombstones_written = write.rows.len() as u64;
        summary.tombstones_compacted = !write.removes.is_empty();
        let batch = run.guard(tombstones::batch(&write.rows)).await?;
        let role = TableRole::Tombstones;
        run.replace_follower(lake, role, vec![batch], follower_properties, write.removes)
            .await?;
    }
    let current = merged.current;
    summary.stages.write_secs = writing.elapsed().as_secs_f64();
    let committing = Instant::now();
    // the change data feed's comparison spills into a folder of the run's own (removed with
    // it, or by a later run after a kill), as `tributary run`'s does
    let feed_spill = match delta::change_feed::enabled(&lake.current) {
        Ok(true) => Some(
            run.guard(crate::core::spill::owned_folder(&request.memory.spill_dir))
                .await?,
        ),
        _ => None,
    };
    let commit = RunCommit {
        business_date: request.run_date.format("%Y-%m-%d").to_string(),
        fingerprint: request.checkpoint.fingerprint(),
        current_base_version: lake.current.version(),
        current_removes: current.removes,
        current_marked: current.marked,
        history_removes: request.history_removes,
        checkpoint: Some(request.checkpoint),
        counts: Some(crate::core::op::OpCounts {
            inserted: summary.inserted,
            updated: summary.updated,
            deleted: summary.deleted,
            ..Default::default()
        }),
        change_feed_memory: Some((
            request.memory.limit,
            feed_spill
                .as_ref()
                .map_or_else(std::env::temp_dir, |f| f.path().to_path_buf()),
        )),
    };
    let versions = lake.commit(run, commit).await?;
    summary.stages.commit_secs = committing.elapsed().as_secs_f64();
    summary.current_version = versions.current;
    summary.history_version = versions.history;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// A row among the stored batches of a run followed by its change batches: (batch, row).
type Loc = (usize, usize);

/// Where some columns of a row take their values from instead (unchanged TOAST values):
/// (configured column, the row that holds the value).
type Patch = Vec<(usize, Loc)>;

/// A key's live version within a run: the row that holds it (its stored row or a change of
/// the run), with the values that change kept from the version before it.
#[derive(Debug, Clone)]
struct Version {
    /// None: a stored row of which only the state was read ([`StoredRow`]).
    loc: Option<Loc>,
    patch: Patch,
    /// A change of the run (not the stored row).
    from_run: bool,
}

impl Version {
    /// The row that holds the version.
    ///
    /// # Errors
    /// [`Error::Internal`] for a stored row that was not read whole ([`Whole`] decides).
    fn loc(&self) -> Result<Loc> {
        self.loc.ok_or_else(not_read_whole)
    }
}

/// The D row of a delete within a run (history_every_change): the key's values before it
/// (`from`, with its `patch`), the delete's day and position, and which tables get it.
#[derive(Debug, Clone)]
struct RowDelete {
    from: Loc,
    patch: Patch,
    day: i32,
    position: Option<i64>,
    to_current: bool,
    to_history: bool,
}

/// A change that keeps values of some columns (unchanged TOAST values).
struct KeptValues {
    /// The change (batch, row in the run's changes).
    change: (usize, usize),
    /// Where the kept values are.
    patch: Patch,
    /// Its operation code.
    code: &'static str,
    /// Whether it is the key's last change (also written to current).
    to_current: bool,
}

/// What a merge does to the current files that hold its changed keys.
#[derive(Debug, Default)]
struct Replaced {
    /// Files removed: their other rows were copied to the run's files.
    removes: Vec<Remove>,
    /// Files whose rows of changed keys are marked deleted in deletion vectors (nothing
    /// copied; `sink::delta::deletion_vectors`).
    marked: Vec<Marked>,
}

impl Replaced {
    /// Adds `other`'s files; a file marked in both keeps the rows marked in either (one
    /// `remove` and `add` per file in a commit).
    fn extend(&mut self, other: Replaced) {
        self.removes.extend(other.removes);
        for marked in other.marked {
            match self
                .marked
                .iter_mut()
                .find(|m| m.add.path == marked.add.path)
            {
                Some(m) => m.rows |= marked.rows,
                None => self.marked.push(marked),
            }
        }
    }
}

/// What [`Merge::run`] hands to the commit besides the rows it sent.
struct Merged {
    /// Current table files the run replaces or marks rows of.
    current: Replaced,
    /// Tombstones to write (None: none).
    tombstones: Option<TombstoneWrite>,
}

/// Rows of the tombstones table a run writes, and the files they replace (a compaction).
struct TombstoneWrite {
    rows: Vec<(Key, Tombstone)>,
    removes: Vec<Remove>,
}

/// A changed key's stored row: its state, and where the whole row is.
#[derive(Debug, Clone, Copy)]
struct StoredRow {
    /// (batch, row) in [`Stored::rows`]; None where only the state was read (a merge into a
    /// table with deletion vectors reads whole only the rows [`Whole`] asks for).
    loc: Option<Loc>,
    /// Its `operation` is not D.
    live: bool,
    /// Its `source_position` (None: NULL, or the table has no such column).
    position: Option<i64>,
}

impl StoredRow {
    /// The whole row's place in [`Stored::rows`].
    ///
    /// # Errors
    /// [`Error::Internal`] for a row that was not read whole ([`Whole`] decides).
    fn whole(&self) -> Result<Loc> {
        self.loc.ok_or_else(not_read_whole)
    }
}

/// The error of a stored row needed whole but read as its state only: a defect of [`Whole`].
fn not_read_whole() -> Error {
    Error::Internal("the stored row of a changed key was not read whole".into())
}

/// The stored rows of the changed keys, read from the files that hold them.
#[derive(Default)]
struct Stored {
    /// Whole rows, in the table schema.
    rows: Vec<RecordBatch>,
    /// Each changed key's stored row.
    at: DigestMap<StoredRow>,
    /// The files read: removed (their unchanged rows copied to current), or given deletion
    /// vectors.
    replaced: Replaced,
}

impl Stored {
    /// Adds whole stored rows of changed keys (rows of the table schema; `source_position`
    /// at `position_at` where the schema has it).
    fn add(
        &mut self,
        old: RecordBatch,
        keyhash_at: usize,
        operation_at: usize,
        position_at: Option<usize>,
    ) {
        if old.num_rows() == 0 {
            return;
        }
        let batch = self.rows.len();
        let state = StateColumns::new(&old, keyhash_at, operation_at, position_at);
        for i in 0..old.num_rows() {
            let (k, row) = state.row(i, Some((batch, i)));
            self.put(k, row);
        }
        self.rows.push(old);
    }

    /// Records `row` as `k`'s stored row. A key current holds twice (a table another engine
    /// wrote) is live when any of its rows is; a row read whole keeps its place over a state
    /// read later.
    fn put(&mut self, k: Key, mut row: StoredRow) {
        match self.at.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut held) => {
                let before = held.get();
                row.live |= before.live;
                row.loc = row.loc.or(before.loc);
                held.insert(row);
            }
            std::collections::hash_map::Entry::Vacant(free) => {
                free.insert(row);
            }
        }
    }
}

/// The columns of stored rows that make their state ([`StoredRow`]).
struct StateColumns<'a> {
    keyhash: &'a BinaryArray,
    operation: &'a StringArray,
    /// None: the table has no `source_position`.
    position: Option<&'a Int64Array>,
}

impl<'a> StateColumns<'a> {
    /// `rows`' `keyhash`, `operation` and `source_position` at those columns.
    fn new(
        rows: &'a RecordBatch,
        keyhash_at: usize,
        operation_at: usize,
        position_at: Option<usize>,
    ) -> Self {
        StateColumns {
            keyhash: rows.column(keyhash_at).as_binary::<i32>(),
            operation: rows.column(operation_at).as_string::<i32>(),
            position: position_at.map(|at| rows.column(at).as_primitive::<Int64Type>()),
        }
    }

    /// Row `i`'s key and state, its whole row at `loc`.
    fn row(&self, i: usize, loc: Option<Loc>) -> (Key, StoredRow) {
        let row = StoredRow {
            loc,
            live: self.operation.value(i) != "D",
            position: self
                .position
                .and_then(|p| p.is_valid(i).then(|| p.value(i))),
        };
        (key(self.keyhash.value(i)), row)
    }
}

/// Whether a merge into a table with deletion vectors reads a changed key's stored row whole
/// ([`mark_impacted`]). An upsert replaces the row, and the vector hides it: its state
/// ([`StoredRow`]) is all the merge needs. The values are needed for a D row (history, soft
/// deletes), for values a change keeps (unchanged TOAST), and for a row a stale or ignored
/// change leaves in place (sent back to current).
#[derive(Debug, Clone, Copy)]
enum Whole {
    /// The key has a delete, or a change that keeps stored values, among the group's changes.
    Always,
    /// Only when the key's last change, at this source position, is stale against it.
    IfStale(Option<i64>),
}

/// The value of a changed key in the key set of a merge's scan of current: whether its stored
/// row is read whole ([`Whole`]; `()`: always).
trait ReadWhole: Copy + Send + Sync + 'static {
    /// Whether a stored row at source position `stored` is read whole.
    fn needed(self, stored: Option<i64>) -> bool;
}

impl ReadWhole for () {
    fn needed(self, _stored: Option<i64>) -> bool {
        true
    }
}

impl ReadWhole for Whole {
    fn needed(self, stored: Option<i64>) -> bool {
        match self {
            Whole::Always => true,
            Whole::IfStale(change) => is_stale(change, stored),
        }
    }
}

impl Whole {
    /// Of each changed key of `changes` (`winners`: the last change of each).
    fn of(changes: &[ChangeBatch], winners: &[Picked]) -> DigestMap<Whole> {
        let mut whole = DigestMap::default();
        whole.reserve(winners.len());
        for batch in changes {
            let deletes = batch
                .ops
                .iter()
                .enumerate()
                .filter(|(_, op)| **op == ChangeOp::Delete);
            let rows = deletes
                .map(|(row, _)| row)
                .chain(batch.keep_stored.keys().copied());
            for row in rows {
                whole.insert(key(batch.rows.keyhash.value(row)), Whole::Always);
            }
        }
        for p in winners {
            let batch = &changes[p.batch];
            whole
                .entry(key(batch.rows.keyhash.value(p.row)))
                .or_insert(Whole::IfStale(batch.positions[p.row]));
        }
        whole
    }
}

/// Where [`read_impacted`] puts the stored rows of changed keys.
enum StoredTo<'a> {
    /// In memory (a held merge); with deletion vectors, whole only where [`ReadWhole`] says.
    Held(&'a mut Stored),
    /// Into the partitions of the spilled changes (a spilled merge).
    Spilled(&'a mut RunChanges),
}

/// A run's groups of changes merged one after another into the same run: the held changes,
/// or each keyhash partition of spilled ones (`changelog::spill`).
struct Groups<'a> {
    lake: &'a DeltaLake,
    request: &'a ApplyRequest<'a>,
    schema: &'a SchemaRef,
    /// The run's business date, days since 1970-01-01.
    run_days: i32,
    senders: &'a Senders,
    /// Upserts are written once for both tables (see [`Outputs::both`]).
    share: bool,
}

impl Groups<'_> {
    /// A spilled merge (its changes kept their key set) reads its impacted files once, with
    /// every changed key, before the first group, and pushes their stored rows into the
    /// changes' partitions: each group then carries the stored rows of its keys. The key set
    /// is dropped after the read. Returns what becomes of the files read (nothing for any
    /// other run).
    async fn spilled_merge_read(
        &self,
        changes: &mut RunChanges,
        summary: &mut ApplySummary,
        keyed: bool,
    ) -> Result<Replaced> {
        let (request, schema) = (self.request, self.schema);
        let Some(keys) = changes.take_merge_keys() else {
            return Ok(Replaced::default());
        };
        if !keyed || request.reload {
            return Ok(Replaced::default());
        }
        changes.keep_stored(schema.clone(), schema.index_of(KEYHASH)?)?;
        if summary.current_files == 0 {
            return Ok(Replaced::default());
        }
        if let Some(bar) = request.bar {
            bar.set_message(format!(
                "reading the files that hold the {} changed keys",
                keys.len()
            ));
        }
        let to = StoredTo::Spilled(changes);
        let keys = Arc::new(FilteredMap::new(keys));
        read_impacted(self.lake, schema, &keys, &self.senders.current, summary, to).await
    }

    /// Merges every group and returns what becomes of the current files the run replaces or
    /// marks rows of, and the tombstones it writes. A group holds every change of its keys, so each
    /// group is resolved on its own; tombstones of earlier runs are read once, when a group
    /// first needs them.
    async fn run(&self, changes: &mut RunChanges, summary: &mut ApplySummary) -> Result<Merged> {
        let (request, schema) = (self.request, self.schema);
        let mut replaced = Replaced::default();
        if request.reload {
            replaced.removes = delta::all_files_removed(&self.lake.current)?;
            summary.files_rewritten = summary.current_files;
        }
        let positions = schema.index_of(SOURCE_POSITION).is_ok();
        let keyed = !(request.config.insert_only || request.append);
        let tomb_table = match positions && keyed {
            true => self.lake.open_follower(TableRole::Tombstones, None).await?,
            false => None,
        };
        let streamed = matches!(changes, RunChanges::Streamed(_));
        if let (true, Some(table)) = (streamed, &tomb_table) {
            // a streamed load writes every row: none may be stale against a tombstone
            if table.snapshot()?.log_data().num_files() > 0 {
                return Err(Error::Restart("the table keeps tombstones".into()));
            }
        }
        let mut known = None;
        let mut new = Vec::new();
        let (keyhash_at, operation_at) = (schema.index_of(KEYHASH)?, schema.index_of(OPERATION)?);
        let position_at = schema.index_of(SOURCE_POSITION).ok();
        replaced.extend(self.spilled_merge_read(changes, summary, keyed).await?);
        let shared_day = std::sync::OnceLock::new();
        let (total, mut applied, mut part) = (changes.rows(), 0usize, 0usize);
        let spilled = matches!(changes, RunChanges::Spilled(_));
        while let Some(Group {
            changes: group,
            stored,
        }) = changes.next_group().await?
        {
            part += 1;
            match request.bar {
                Some(bar) if spilled => bar.set_message(format!(
                    "applying partition {part}: {applied}/{total} changes"
                )),
                Some(bar) if streamed && part % 16 == 1 => bar.set_message(format!(
                    "streaming the full load to the writers: {applied} changes"
                )),
                _ => {}
            }
            applied += group.iter().map(ChangeBatch::len).sum::<usize>();
            let sources: Vec<RecordBatch> = group
                .iter()
                .map(|b| change_rows(schema, b, self.run_days))
                .collect::<Result<_>>()?;
            let out = Outputs {
                sources: &sources,
                current: &self.senders.current,
                history: &self.senders.history,
                both: self.share.then_some(self.senders),
                shared_day: &shared_day,
            };
            let merge = Merge {
                lake: self.lake,
                request,
                changes: &group,
                schema,
                run_days: self.run_days,
                out: &out,
            };
            // a spilled merge's stored rows of the group's keys, indexed on a blocking thread
            let given = match stored {
                Some(rows) => {
                    if group.is_empty() && rows.iter().any(|r| r.num_rows() > 0) {
                        return Err(Error::Internal(
                            "stored rows of changed keys came without their changes".into(),
                        ));
                    }
                    Some(
                        tokio::task::spawn_blocking(move || {
                            let mut stored = Stored::default();
                            for batch in rows {
                                stored.add(batch, keyhash_at, operation_at, position_at);
                            }
                            stored
                        })
                        .await
                        .map_err(|e| Error::Internal(format!("indexing stored rows: {e}")))?,
                    )
                }
                None => None,
            };
            if streamed {
                merge.streamed(summary).await?;
                continue;
            }
            let (group_replaced, tombstones) = merge
                .run(summary, tomb_table.as_ref(), &mut known, given.as_ref())
                .await?;
            replaced.extend(group_replaced);
            new.extend(tombstones);
        }
        let tombstones = match positions && !new.is_empty() {
            true => {
                let oldest = self.run_days - request.config.tombstone_retention_days as i32;
                Some(tombstone_write(tomb_table.as_ref(), &mut known, new, oldest).await?)
            }
            false => None,
        };
        summary.files_marked = replaced.marked.len() as u64;
        Ok(Merged {
            current: replaced,
            tombstones,
        })
    }
}

/// The tombstones a run writes: its `new` ones appended to the table, or, once the table
/// holds [`tombstones::COMPACT_AT_FILES`] files, the whole table rewritten as one file with
/// one tombstone per key and none older than day `oldest` (the retention).
async fn tombstone_write(
    table: Option<&DeltaTable>,
    known: &mut Option<DigestMap<Tombstone>>,
    new: Vec<(Key, Tombstone)>,
    oldest: i32,
) -> Result<TombstoneWrite> {
    let files = match table {
        Some(t) => t.snapshot()?.log_data().num_files(),
        None => 0,
    };
    let (Some(table), true) = (table, files + 1 >= tombstones::COMPACT_AT_FILES) else {
        return Ok(TombstoneWrite {
            rows: new,
            removes: Vec::new(),
        });
    };
    let mut all = match known.take() {
        Some(all) => all,
        None => tombstones::read(table).await?,
    };
    for (k, t) in new {
        tombstones::keep_latest(&mut all, k, t);
    }
    let mut rows: Vec<(Key, Tombstone)> =
        all.into_iter().filter(|(_, t)| t.days >= oldest).collect();
    rows.sort_unstable_by_key(|(k, _)| *k);
    Ok(TombstoneWrite {
        rows,
        removes: delta::all_files_removed(table)?,
    })
}

/// One merge of a group of a run's changes into the current table (steps 1 to 4 of the module
/// docs).
struct Merge<'a> {
    lake: &'a DeltaLake,
    request: &'a ApplyRequest<'a>,
    /// The group's changes: every change of its keys.
    changes: &'a [ChangeBatch],
    schema: &'a SchemaRef,
    /// The run's business date, days since 1970-01-01.
    run_days: i32,
    out: &'a Outputs<'a>,
}

impl Merge<'_> {
    /// The name of the run's file at `index` (its place in the checkpoint's file list).
    fn file_name(&self, index: usize) -> String {
        match &self.request.checkpoint {
            Checkpoint::Files(files) => files
                .get(index)
                .map_or_else(|| format!("file {index}"), |f| f.file.clone()),
            Checkpoint::Lsn(_) => "the replication slot".into(),
        }
    }

    /// Sends every output row of the group to the writers; returns what becomes of the current
    /// files that hold its keys (a merge), and the new tombstones of its keys. `known` are
    /// the tombstones of earlier runs, read from `tomb_table` when first needed. `given` are
    /// the stored rows of the group's keys when a spilled merge read them already (the
    /// group's files are then not read).
    async fn run(
        &self,
        summary: &mut ApplySummary,
        tomb_table: Option<&DeltaTable>,
        known: &mut Option<DigestMap<Tombstone>>,
        given: Option<&Stored>,
    ) -> Result<(Replaced, Vec<(Key, Tombstone)>)> {
        let request = self.request;
        if request.config.insert_only || request.append {
            self.inserts_only(summary).await?;
            return Ok((Replaced::default(), Vec::new()));
        }
        let dedupe = Instant::now();
        let winners = last_per_key(self.changes);
        summary.stages.dedupe_secs += dedupe.elapsed().as_secs_f64();
        summary.keys_changed += winners.len() as u64;
        // Stored rows of changed keys (for history D rows and ignored deletes); a reload
        // reads none.
        let mut read = Stored::default();
        if given.is_none() && !request.reload && summary.current_files > 0 {
            read = self.stored_rows(&winners, summary).await?;
        }
        let replaced = std::mem::take(&mut read.replaced);
        let stored = given.unwrap_or(&read);
        // Tombstones of keys that have no stored row, read when such a key's last change has a
        // position and is not a delete (a late change could bring a deleted key back; a
        // delete of a key current does not hold is ignored, stale or not). Only such changes
        // are checked against them, so reading them at the first group that has one is the
        // same as reading them per run.
        let needs_tombstones = winners.iter().any(|p| {
            let batch = &self.changes[p.batch];
            batch.ops[p.row] != ChangeOp::Delete
                && batch.positions[p.row].is_some()
                && !stored
                    .at
                    .contains_key(&key(batch.rows.keyhash.value(p.row)))
        });
        if let (Some(table), true, None) = (tomb_table, needs_tombstones, known.as_ref()) {
            *known = Some(tombstones::read(table).await?);
        }
        let new = self
            .resolve(winners, stored, known.as_ref(), summary)
            .await?;
        Ok((replaced, new))
    }

    /// A table without a primary key: its inserts are appended, its other changes counted
    /// and skipped.
    async fn inserts_only(&self, summary: &mut ApplySummary) -> Result<()> {
        let mut picked = Vec::new();
        for (b, batch) in self.changes.iter().enumerate() {
            for (row, op) in batch.ops.iter().enumerate() {
                if *op == ChangeOp::Insert {
                    picked.push((b, row));
                } else {
                    summary.skipped_without_key += 1;
                }
            }
        }
        summary.inserted += picked.len() as u64;
        summary.keys_changed += picked.len() as u64;
        let codes = vec!["I"; picked.len()];
        self.out.upserts(&picked, &codes).await
    }

    /// A batch of a streamed full load (`changelog::spill`): every change written as an
    /// insert, which is what the last change of a key that comes once makes of it in tables
    /// without rows or tombstones (an update of an unknown key is an insert). Its keys are
    /// checked distinct when the load has ended.
    ///
    /// # Errors
    /// [`Error::Restart`] for a delete, or a change that keeps stored values: the load is read
    /// again taking the last change per key.
    async fn streamed(&self, summary: &mut ApplySummary) -> Result<()> {
        if self.request.config.insert_only || self.request.append {
            return Err(Error::Internal(
                "a streamed load of a table without last change per key".into(),
            ));
        }
        let mut picked = Vec::new();
        for (b, batch) in self.changes.iter().enumerate() {
            if batch.ops.contains(&ChangeOp::Delete) {
                return Err(Error::Restart("the full load holds a delete".into()));
            }
            if !batch.keep_stored.is_empty() {
                return Err(Error::Restart(
                    "a change of the full load keeps stored values".into(),
                ));
            }
            picked.extend((0..batch.len()).map(|row| (b, row)));
        }
        summary.inserted += picked.len() as u64;
        summary.keys_changed += picked.len() as u64;
        let codes = vec!["I"; picked.len()];
        self.out.upserts(&picked, &codes).await
    }

    /// Reads the current files that hold a changed key: their other rows are copied to the
    /// current writer, the changed keys' rows are kept as [`Stored`].
    async fn stored_rows(&self, winners: &[Picked], summary: &mut ApplySummary) -> Result<Stored> {
        let changed = Whole::of(self.changes, winners);
        let mut stored = Stored::default();
        let to = StoredTo::Held(&mut stored);
        let replaced = read_impacted(
            self.lake,
            self.schema,
            &Arc::new(FilteredMap::new(changed)),
            self.out.current,
            summary,
            to,
        )
        .await?;
        stored.replaced = replaced;
        Ok(stored)
    }

    /// The changes of each key before its last (`winners`), in source order: what history
    /// keeps besides the last change under `history_every_change`.
    fn earlier_changes(&self, winners: &[Picked]) -> DigestMap<Vec<(usize, usize)>> {
        let won: HashSet<(usize, usize)> = winners.iter().map(|p| (p.batch, p.row)).collect();
        let mut by_key: DigestMap<Vec<(SourceOrder, usize, usize)>> = DigestMap::default();
        for (b, batch) in self.changes.iter().enumerate() {
            for row in 0..batch.len() {
                if !won.contains(&(b, row)) {
                    by_key
                        .entry(key(batch.rows.keyhash.value(row)))
                        .or_default()
                        .push((batch.order[row], b, row));
                }
            }
        }
        by_key
            .into_iter()
            .map(|(k, mut list)| {
                list.sort_unstable();
                (k, list.into_iter().map(|(_, b, r)| (b, r)).collect())
            })
            .collect()
    }

    /// Where a change that keeps `columns` (unchanged TOAST values) takes them from: the key's
    /// version before it (its row, or where that version took them from in turn).
    ///
    /// # Errors
    /// [`Error::Lake`] when the key has no live version: the value is unknown.
    fn kept_from(&self, version: Option<&Version>, columns: &[usize]) -> Result<Patch> {
        let Some(version) = version else {
            return Err(self.no_stored_row(columns));
        };
        columns
            .iter()
            .map(|&c| {
                let from = match version.patch.iter().find(|(kept, _)| *kept == c) {
                    Some((_, at)) => *at,
                    None => version.loc()?,
                };
                Ok((c, from))
            })
            .collect()
    }

    /// The error of a change that keeps stored values of `columns` (unchanged TOAST values)
    /// for a key the table does not hold.
    fn no_stored_row(&self, columns: &[usize]) -> Error {
        let names = columns
            .iter()
            .map(|&c| format!("`{}`", self.request.config.table.columns[c].name))
            .collect::<Vec<_>>()
            .join(", ");
        Error::Lake {
            table: self.request.config.table.name.clone(),
            reason: format!(
                "an update keeps the stored value of {names} (unchanged TOAST values), but the \
                 table holds no live row for its key: the lake is missing changes of this \
                 table; copy it again (`tributary capture --resnapshot`)"
            ),
        }
    }

    /// Resolves each key's last change against its stored state and sends the rows: upserts
    /// to both tables, D rows to history (and current, under soft deletes), the stored rows of
    /// ignored deletes back to current.
    /// Returns the tombstones of the keys it removes from current (hard deletes; deletes of
    /// keys current does not hold), where their position is known. `tombstones` are those of
    /// earlier runs (None: not read, as no change needs them).
    async fn resolve(
        &self,
        winners: Vec<Picked>,
        stored: &Stored,
        tombstones: Option<&DigestMap<Tombstone>>,
        summary: &mut ApplySummary,
    ) -> Result<Vec<(Key, Tombstone)>> {
        let hard = self.request.config.delete_mode == DeleteMode::Hard;
        let mut new_tombstones = Vec::new();
        let mut new_picks = Vec::new();
        let mut new_codes = Vec::new();
        let mut deleted = Vec::new();
        let mut kept_old = Vec::new();
        let mut redeleted: Vec<((usize, usize), i64)> = Vec::new();
        // updates that keep stored values: (change, stored row, columns kept, code, to current)
        let mut kept_values: Vec<KeptValues> = Vec::new();
        // history_every_change: the changes of a key before its last, for history only
        let earlier = match self.request.config.history_every_change {
            true => self.earlier_changes(&winners),
            false => DigestMap::default(),
        };
        let mut history_picks: Vec<(usize, usize)> = Vec::new();
        let mut history_codes: Vec<&str> = Vec::new();
        // deletes whose last values are a change of this run: (that change, day, position,
        // to current too)
        let mut row_deletes: Vec<RowDelete> = Vec::new();
        let soft = self.request.config.delete_mode == DeleteMode::Soft;
        // rows are found in `all` below: the stored batches, then the run's change batches
        let changes_at = stored.rows.len();
        let position_at = self.schema.index_of(SOURCE_POSITION).ok();
        for p in &winners {
            // upserts go to the writers as they are resolved: the writers encode them while
            // the rest of the keys are resolved
            if new_picks.len() >= BATCH_ROWS {
                self.out.upserts(&new_picks, &new_codes).await?;
                new_picks.clear();
                new_codes.clear();
            }
            let batch = &self.changes[p.batch];
            let k = key(batch.rows.keyhash.value(p.row));
            let position = batch.positions[p.row];
            // the key's stored row, looked up once for every use below
            let stored_row = stored.at.get(&k).copied();
            if position_at.is_some() {
                let stale = match stored_row {
                    Some(row) => {
                        let stale = is_stale(position, row.position);
                        if stale {
                            kept_old.push(row.whole()?);
                        }
                        stale
                    }
                    // a delete of a key current does not hold is ignored (below), stale or not
                    None if batch.ops[p.row] == ChangeOp::Delete => false,
                    None => tombstones
                        .and_then(|t| t.get(&k))
                        .is_some_and(|t| is_stale(position, Some(t.position))),
                };
                if stale {
                    summary.stale += 1;
                    *summary
                        .stale_files
                        .entry(self.file_name(batch.rows.file))
                        .or_default() += 1;
                    continue;
                }
            }
            let day = batch.commit_days[p.row].unwrap_or(self.run_days);
            let tombstone = position.map(|position| {
                (
                    k,
                    Tombstone {
                        position,
                        days: day,
                    },
                )
            });
            let keeps = batch.keep_stored.get(&p.row);
            // The key's state before its last change: as stored, then through its earlier
            // changes of this run (history_every_change; none otherwise).
            let mut live = stored_row.is_some_and(|row| row.live);
            // the key's live version: its stored row, then each change of the run; a change
            // that kept values (unchanged TOAST) takes them from the version before it
            let mut version: Option<Version> = match live {
                true => stored_row.map(|row| Version {
                    loc: row.loc,
                    patch: Vec::new(),
                    from_run: false,
                }),
                false => None,
            };
            let mut last_delete: Option<RowDelete> = None;
            let had_earlier = earlier.contains_key(&k);
            for &(b, r) in earlier.get(&k).into_iter().flatten() {
                let change = &self.changes[b];
                let day = change.commit_days[r].unwrap_or(self.run_days);
                if change.ops[r] == ChangeOp::Delete {
                    if let (true, Some(v)) = (live, version.take()) {
                        summary.deleted += 1;
                        let delete = RowDelete {
                            from: v.loc()?,
                            patch: v.patch,
                            day,
                            position: change.positions[r],
                            to_current: false,
                            to_history: true,
                        };
                        row_deletes.push(delete.clone());
                        last_delete = Some(delete);
                    }
                    live = false;
                    continue;
                }
                let code = if live { "U" } else { "I" };
                match live {
                    true => summary.updated += 1,
                    false => summary.inserted += 1,
                }
                let patch = match change.keep_stored.get(&r) {
                    Some(columns) => self.kept_from(version.as_ref(), columns)?,
                    None => Vec::new(),
                };
                match patch.is_empty() {
                    false => kept_values.push(KeptValues {
                        change: (b, r),
                        patch: patch.clone(),
                        code,
                        to_current: false,
                    }),
                    true => {
                        history_picks.push((b, r));
                        history_codes.push(code);
                    }
                }
                live = true;
                version = Some(Version {
                    loc: Some((changes_at + b, r)),
                    patch,
                    from_run: true,
                });
            }
            let op = batch.ops[p.row];
            if let (ChangeOp::Delete, Some(v)) = (op, version.as_ref().filter(|v| v.from_run)) {
                // the last change deletes a key this run inserted or changed: its D row holds
                // that change's values
                summary.deleted += 1;
                row_deletes.push(RowDelete {
                    from: v.loc()?,
                    patch: v.patch.clone(),
                    day,
                    position,
                    to_current: soft,
                    to_history: true,
                });
                if hard {
                    new_tombstones.extend(tombstone);
                }
                continue;
            }
            if had_earlier && !live && op == ChangeOp::Delete {
                // deleted earlier in this run already (a DELETE, then a TRUNCATE): current
                // keeps that delete (soft deletes), or its tombstone (hard)
                summary.ignored_deletes += 1;
                match (soft, last_delete) {
                    (true, Some(delete)) => row_deletes.push(RowDelete {
                        to_current: true,
                        to_history: false,
                        ..delete
                    }),
                    (true, None) => {}
                    (false, _) => new_tombstones.extend(tombstone),
                }
                continue;
            }
            match Outcome::resolve(op, live) {
                Outcome::Insert | Outcome::Update if keeps.is_some() => {
                    let columns = keeps.cloned().unwrap_or_default();
                    let patch = self.kept_from(version.as_ref(), &columns)?;
                    summary.updated += 1;
                    kept_values.push(KeptValues {
                        change: (p.batch, p.row),
                        patch,
                        code: "U",
                        to_current: true,
                    });
                }
                Outcome::Insert => {
                    summary.inserted += 1;
                    new_picks.push((p.batch, p.row));
                    new_codes.push("I");
                }
                Outcome::Update => {
                    summary.updated += 1;
                    new_picks.push((p.batch, p.row));
                    new_codes.push("U");
                }
                Outcome::Delete => {
                    summary.deleted += 1;
                    let row = stored_row
                        .ok_or_else(|| Error::Internal("a live key has no stored row".into()))?;
                    let at = row.whole()?;
                    // a delete without a position keeps the row's (never NULL over a known one)
                    let position = position.or(row.position);
                    let tombstone = position.map(|position| {
                        (
                            k,
                            Tombstone {
                                position,
                                days: day,
                            },
                        )
                    });
                    deleted.push((at, day, position));
                    if hard {
                        new_tombstones.extend(tombstone);
                    }
                }
                Outcome::IgnoredDelete => {
                    summary.ignored_deletes += 1;
                    match stored_row {
                        // a soft-deleted row takes the newer delete's position
                        Some(row) => match position {
                            Some(p) if row.position.is_none_or(|s| p > s) => {
                                redeleted.push((row.whole()?, p))
                            }
                            _ => kept_old.push(row.whole()?),
                        },
                        // the key may arrive late: its delete still holds
                        None => new_tombstones.extend(tombstone),
                    }
                }
            }
        }
        drop(winners);
        self.out.upserts(&new_picks, &new_codes).await?;
        let old: Vec<&RecordBatch> = stored.rows.iter().collect();
        let sources: Vec<&RecordBatch> = self.out.sources.iter().collect();
        // rows by `Loc`: the stored batches, then the run's change batches
        let all: Vec<&RecordBatch> = old.iter().copied().chain(sources.iter().copied()).collect();
        let spec = &self.request.config.table;
        for to_current in [true, false] {
            let group: Vec<&KeptValues> = kept_values
                .iter()
                .filter(|k| k.to_current == to_current)
                .collect();
            for chunk in group.chunks(BATCH_ROWS) {
                let picks: Vec<(usize, usize)> = chunk.iter().map(|c| c.change).collect();
                let codes: Vec<&str> = chunk.iter().map(|c| c.code).collect();
                let rows = with_operations(self.out.sources, &picks, &codes)?;
                let patches: Vec<&[(usize, Loc)]> =
                    chunk.iter().map(|c| c.patch.as_slice()).collect();
                let rows = patch_rows(&rows, &all, &patches, spec)?;
                if to_current {
                    send(self.out.current, rows.clone()).await?;
                }
                send(self.out.history, rows).await?;
            }
        }
        for (picks, codes) in history_picks
            .chunks(BATCH_ROWS)
            .zip(history_codes.chunks(BATCH_ROWS))
        {
            send(
                self.out.history,
                with_operations(self.out.sources, picks, codes)?,
            )
            .await?;
        }
        // D rows of in-run deletes: the key's last version (a stored row or a change of the
        // run, with the values it kept)
        for chunk in row_deletes.chunks(BATCH_ROWS) {
            let at: Vec<Loc> = chunk.iter().map(|d| d.from).collect();
            let rows = interleave_record_batch(&all, &at)?;
            let patches: Vec<&[(usize, Loc)]> = chunk.iter().map(|d| d.patch.as_slice()).collect();
            let rows = patch_rows(&rows, &all, &patches, spec)?;
            let days = Date32Array::from_iter_values(chunk.iter().map(|d| d.day));
            let rows = replace_columns(&rows, vec!["D"; rows.num_rows()], days)?;
            let rows = with_positions(&rows, position_at, chunk.iter().map(|d| d.position))?;
            let current: BooleanArray = chunk.iter().map(|d| Some(d.to_current)).collect();
            let history: BooleanArray = chunk.iter().map(|d| Some(d.to_history)).collect();
            send(self.out.current, filter_record_batch(&rows, &current)?).await?;
            send(self.out.history, filter_record_batch(&rows, &history)?).await?;
        }
        for chunk in kept_old.chunks(BATCH_ROWS) {
            send(self.out.current, interleave_record_batch(&old, chunk)?).await?;
        }
        for chunk in redeleted.chunks(BATCH_ROWS) {
            let at: Vec<(usize, usize)> = chunk.iter().map(|(a, _)| *a).collect();
            let rows = interleave_record_batch(&old, &at)?;
            let positions = chunk.iter().map(|(_, p)| Some(*p));
            send(
                self.out.current,
                with_positions(&rows, position_at, positions)?,
            )
            .await?;
        }
        for chunk in deleted.chunks(BATCH_ROWS) {
            let at: Vec<(usize, usize)> = chunk.iter().map(|(a, _, _)| *a).collect();
            let rows = interleave_record_batch(&old, &at)?;
            let days = Date32Array::from_iter_values(chunk.iter().map(|(_, d, _)| *d));
            let rows = replace_columns(&rows, vec!["D"; rows.num_rows()], days)?;
            // a D row holds the delete's position: a late, older change cannot undo it
            let rows = with_positions(&rows, position_at, chunk.iter().map(|(_, _, p)| *p))?;
            if self.request.config.delete_mode == DeleteMode::Soft {
                send(self.out.current, rows.clone()).await?;
            }
            send(self.out.history, rows).await?;
        }
        Ok(new_tombstones)
    }
}

/// Whether a change at source position `change` is older than its key's stored row at
/// `stored`: only when both are known and the change's is lower (equal positions are applied
/// in source order).
pub fn is_stale(change: Option<i64>, stored: Option<i64>) -> bool {
    matches!((change, stored), (Some(c), Some(s)) if c < s)
}

/// The rows of a change batch in the table schema: payload, digests, an `operation` column
/// (filled per output row later), `eff_start_date` (commit date, else the run date) and, where
/// the schema has it, `source_position`.
fn change_rows(schema: &SchemaRef, batch: &ChangeBatch, run_days: i32) -> Result<RecordBatch> {
    let rows = &batch.rows;
    let mut columns: Vec<ArrayRef> = rows.payload.columns().to_vec();
    columns.push(Arc::new(rows.keyhash.clone()));
    columns.push(Arc::new(rows.nonkeyhash.clone()));
    columns.push(Arc::new(StringArray::from_iter_values(
        batch.ops.iter().map(|_| "I"),
    )));
    columns.push(Arc::new(Date32Array::from_iter_values(
        batch.commit_days.iter().map(|d| d.unwrap_or(run_days)),
    )));
    if schema.index_of(SOURCE_POSITION).is_ok() {
        columns.push(Arc::new(Int64Array::from(batch.positions.clone())));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Where resolved rows go: the current and history table writers.
struct Outputs<'a> {
    sources: &'a [RecordBatch],
    current: &'a tokio::sync::mpsc::Sender<RecordBatch>,
    history: &'a tokio::sync::mpsc::Sender<RecordBatch>,
    /// Where the upserts of a run that writes all of current anew or only adds to it (a full
    /// load, an append, a table without a key) go: written once and shared by both tables
    /// (`sink::delta::shared`); and those of a merge into a table with deletion vectors, which
    /// copies no rows. None for a merge that rewrites files, whose upserts go with the rows it
    /// copies into one writer (files of current stay few and in input order).
    both: Option<&'a Senders>,
    /// The `eff_start_date` of the shared rows (a shared file is of one day): the day most of
    /// the first upserts sent have (a merge's first slice of at most [`BATCH_ROWS`], as it
    /// sends them while it resolves; an append's or a streamed load's first group); the others
    /// are written to each table.
    shared_day: &'a std::sync::OnceLock<i32>,
}

impl Outputs<'_> {
    /// Sends the picked change rows with their codes to both tables, a slice at a time.
    async fn upserts(&self, picks: &[(usize, usize)], codes: &[&str]) -> Result<()> {
        let Some(both) = self.both else {
            return self.to_each(picks, codes).await;
        };
        let dates: Vec<Option<&Date32Array>> = self
            .sources
            .iter()
            .map(|b| {
                b.column_by_name(EFF_START_DATE)
                    .and_then(|c| c.as_primitive_opt::<deltalake::arrow::datatypes::Date32Type>())
            })
            .collect();
        let day_of =
            |&(b, row): &(usize, usize)| dates[b].filter(|d| d.is_valid(row)).map(|d| d.value(row));
        if picks.is_empty() {
            // the shared day is the first upserts' (a group of deletes only has none)
            return Ok(());
        }
        let day = *self.shared_day.get_or_init(|| {
            let mut count: HashMap<i32, usize> = HashMap::new();
            for d in picks.iter().filter_map(day_of) {
                *count.entry(d).or_default() += 1;
            }
            count
                .into_iter()
                .max_by_key(|&(d, n)| (n, std::cmp::Reverse(d)))
                .map_or(i32::MIN, |(d, _)| d)
        });
        for range in by_batch(picks) {
            let (picks, codes) = (&picks[range.clone()], &codes[range]);
            let (shared, own): (Vec<usize>, Vec<usize>) =
                (0..picks.len()).partition(|&i| day_of(&picks[i]) == Some(day));
            if own.is_empty() {
                both.send_both(with_operations(self.sources, picks, codes)?)
                    .await?;
                continue;
            }
            let take = |at: &[usize]| -> (Vec<(usize, usize)>, Vec<&str>) {
                at.iter().map(|&i| (picks[i], codes[i])).unzip()
            };
            let (shared_picks, shared_codes) = take(&shared);
            both.send_both(with_operations(self.sources, &shared_picks, &shared_codes)?)
                .await?;
            let (own_picks, own_codes) = take(&own);
            self.to_each(&own_picks, &own_codes).await?;
        }
        Ok(())
    }

    /// Sends the picked change rows with their codes to each table's writer.
    async fn to_each(&self, picks: &[(usize, usize)], codes: &[&str]) -> Result<()> {
        for range in by_batch(picks) {
            let (picks, codes) = (&picks[range.clone()], &codes[range]);
            let rows = with_operations(self.sources, picks, codes)?;
            send(self.current, rows.clone()).await?;
            send(self.history, rows).await?;
        }
        Ok(())
    }
}

/// `picks` cut where the batch changes and after [`BATCH_ROWS`] picks: what is sent to the
/// writers at a time (picks in batch order make whole slices of their batch).
fn by_batch(picks: &[(usize, usize)]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let first = picks.get(start)?;
        let len = picks[start..]
            .iter()
            .take(BATCH_ROWS)
            .take_while(|p| p.0 == first.0)
            .count();
        let range = start..start + len;
        start += len;
        Some(range)
    })
}

/// The picked rows of `sources` (batch, row), with their `operation` codes. Consecutive rows
/// of one batch (a full load's rows, mostly) are a slice of it, not a copy.
fn with_operations(
    sources: &[RecordBatch],
    picks: &[(usize, usize)],
    codes: &[&str],
) -> Result<RecordBatch> {
    let run = picks.first().filter(|&&(batch, first)| {
        picks
            .iter()
            .enumerate()
            .all(|(i, &(b, row))| b == batch && row == first + i)
    });
    let rows = match run {
        Some(&(batch, first)) => sources[batch].slice(first, picks.len()),
        None => interleave_record_batch(&sources.iter().collect::<Vec<_>>(), picks)?,
    };
    let days = rows
        .column_by_name(EFF_START_DATE)
        .ok_or_else(|| Error::Internal("change rows without eff_start_date".into()))?
        .clone();
    replace_columns(&rows, codes.to_vec(), days)
}

/// `rows` (table schema) with, for each row, the columns of its patch taken from the rows of
/// `all` the patch names (same schema), and `nonkeyhash` computed again over the resulting
/// values: changes that left TOASTed values unchanged. Rows without patch are returned as
/// they are.
fn patch_rows(
    rows: &RecordBatch,
    all: &[&RecordBatch],
    patches: &[&[(usize, Loc)]],
    spec: &crate::config::TableSpec,
) -> Result<RecordBatch> {
    let mut touched: Vec<usize> = patches
        .iter()
        .flat_map(|p| p.iter().map(|(c, _)| *c))
        .collect();
    if touched.is_empty() {
        return Ok(rows.clone());
    }
    touched.sort_unstable();
    touched.dedup();
    let mut columns = rows.columns().to_vec();
    for c in touched {
        let from = |p: &[(usize, Loc)]| p.iter().find(|(kept, _)| *kept == c).map(|(_, at)| *at);
        let any = patches.iter().find_map(|p| from(p)).unwrap_or((0, 0));
        let at: Vec<Loc> = patches.iter().map(|p| from(p).unwrap_or(any)).collect();
        let arrays: Vec<&dyn Array> = all.iter().map(|b| b.column(c).as_ref()).collect();
        let values = deltalake::arrow::compute::interleave(&arrays, &at)?;
        let mask: BooleanArray = patches.iter().map(|p| Some(from(p).is_some())).collect();
        columns[c] = deltalake::arrow::compute::kernels::zip::zip(&mask, &values, rows.column(c))?;
    }
    let nonkey: Vec<&ArrayRef> = spec.nonkey_indices().iter().map(|&i| &columns[i]).collect();
    let hash = crate::core::hash::hash_columns(&nonkey, rows.num_rows(), spec.hash)?;
    let schema = rows.schema();
    columns[schema.index_of(crate::core::schema::NONKEYHASH)?] = Arc::new(hash);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `rows` with its `source_position` column (at `at`; None: no such column) replaced.
fn with_positions(
    rows: &RecordBatch,
    at: Option<usize>,
    positions: impl Iterator<Item = Option<i64>>,
) -> Result<RecordBatch> {
    let Some(i) = at else {
        return Ok(rows.clone());
    };
    let mut columns = rows.columns().to_vec();
    columns[i] = Arc::new(Int64Array::from_iter(positions));
    Ok(RecordBatch::try_new(rows.schema(), columns)?)
}

/// `rows` with its `operation` and `eff_start_date` columns replaced.
fn replace_columns(
    rows: &RecordBatch,
    codes: Vec<&str>,
    days: impl Array + 'static,
) -> Result<RecordBatch> {
    let schema = rows.schema();
    let mut columns = rows.columns().to_vec();
    columns[schema.index_of(OPERATION)?] = Arc::new(StringArray::from(codes));
    columns[schema.index_of(EFF_START_DATE)?] = Arc::new(days);
    Ok(RecordBatch::try_new(schema, columns)?)
}

async fn send(tx: &tokio::sync::mpsc::Sender<RecordBatch>, batch: RecordBatch) -> Result<()> {
    if batch.num_rows() == 0 {
        return Ok(());
    }
    tx.send(batch).await.map_err(|_| Error::WriterGone)
}

/// Reads the current files that hold a key of `changed` (once each): their other rows go to
/// `current`, the rows of changed keys to `to`. Returns the remove actions of the files read.
/// A table that uses deletion vectors marks the rows of changed keys instead
/// ([`mark_impacted`]).
async fn read_impacted<V: ReadWhole>(
    lake: &DeltaLake,
    schema: &SchemaRef,
    changed: &Arc<FilteredMap<V>>,
    current: &tokio::sync::mpsc::Sender<RecordBatch>,
    summary: &mut ApplySummary,
    mut to: StoredTo<'_>,
) -> Result<Replaced> {
    if deletion_vectors::in_use(&lake.current)? {
        return mark_impacted(&lake.current, schema, changed, summary, to).await;
    }
    let scan = Instant::now();
    let impacted = impacted_files(&lake.current, changed).await?;
    summary.stages.impacted_scan_secs += scan.elapsed().as_secs_f64();
    // refused before the merge, not at the commit: see `change_feed::refuse_vectors`
    if delta::change_feed::enabled(&lake.current)? {
        delta::change_feed::refuse_vectors(impacted.values())?;
    }
    summary.files_rewritten += impacted.len() as u64;
    if impacted.is_empty() {
        return Ok(Replaced::default());
    }
    // conformed batches have the table schema: columns by position
    let (keyhash_at, operation_at) = (schema.index_of(KEYHASH)?, schema.index_of(OPERATION)?);
    let position_at = schema.index_of(SOURCE_POSITION).ok();
    let mut stream = scan_files(&lake.current, impacted.keys().cloned()).await?;
    while let Some(batch) = stream.next().await {
        let batch = delta::conform(&batch?, schema, &HashMap::new())?;
        let keyhash = batch.column(keyhash_at).as_binary::<i32>();
        let hit: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(changed.contains_key(key(keyhash.value(i)))))
            .collect();
        let kept = filter_record_batch(&batch, &deltalake::arrow::compute::not(&hit)?)?;
        summary.rows_copied += kept.num_rows() as u64;
        send(current, kept).await?;
        let old = filter_record_batch(&batch, &hit)?;
        match &mut to {
            StoredTo::Held(stored) => stored.add(old, keyhash_at, operation_at, position_at),
            StoredTo::Spilled(changes) if old.num_rows() > 0 => changes.push_stored(old).await?,
            StoredTo::Spilled(_) => {}
        }
    }
    Ok(Replaced {
        removes: impacted.into_values().collect(),
        marked: Vec::new(),
    })
}

/// A merge into a table with deletion vectors: scans `keyhash` and the row positions of every
/// row of `table` (a held merge: also `operation` and `source_position`), keeping those of
/// keys of `changed` (on the scan's tasks), and leaves out the rows that earlier vectors mark
/// (reading only the vectors of files that hold such a row). A held merge keeps each live
/// row's state and reads whole only the rows [`Whole`] asks for; a spilled one reads them all
/// whole into its partitions. Returns the files with every row to mark (the earlier vector's
/// and these). No row is copied: the commit adds each file again with its new vector
/// (`sink::delta::deletion_vectors`).
///
/// # Errors
/// [`Error::Lake`] naming a data file or vector that cannot be read; a closed channel.
async fn mark_impacted<V: ReadWhole>(
    table: &DeltaTable,
    schema: &SchemaRef,
    changed: &Arc<FilteredMap<V>>,
    summary: &mut ApplySummary,
    mut to: StoredTo<'_>,
) -> Result<Replaced> {
    use deltalake::arrow::datatypes::{Field, Schema, UInt32Type};
    let scan = Instant::now();
    let mut adds = Vec::new();
    let mut located = Vec::new();
    for view in table.snapshot()?.log_data().iter() {
        located.push((
            view.object_store_path(),
            view.size() as u64,
            view.partition_values_map(),
        ));
        // the file's add as the log holds it (tags, vector and all), added again with its
        // new vector
        #[allow(deprecated)]
        adds.push(view.add_action());
    }
    let files = DataFiles::of(table, located).await?;
    let rows_per_file = files.rows_per_file();
    // the scanned columns: keyhash, [operation, source_position,] file, row
    let states = matches!(to, StoredTo::Held(..));
    let mut fields = vec![schema.field_with_name(KEYHASH)?.clone()];
    let mut state_position_at = None;
    if states {
        fields.push(schema.field_with_name(OPERATION)?.clone());
        if let Ok(position) = schema.field_with_name(SOURCE_POSITION) {
            state_position_at = Some(fields.len());
            fields.push(position.clone());
        }
    }
    let (file_at, row_at, whole_at) = (fields.len(), fields.len() + 1, fields.len() + 2);
    fields.push(Field::new("file", DataType::UInt32, false));
    fields.push(Field::new("row", DataType::UInt32, false));
    let positions: SchemaRef = Arc::new(Schema::new(fields.clone()));
    fields.push(Field::new("whole", DataType::Boolean, false));
    let selected: SchemaRef = Arc::new(Schema::new(fields));
    let workers = crate::core::threads::get();
    let mut picks = Picks::new(&rows_per_file);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
    // The scan's tasks keep the rows of changed keys, with whether each is read whole (the
    // lookups run on every thread).
    let keys = changed.clone();
    let select = move |batch: RecordBatch| -> Result<RecordBatch> {
        let keyhash = batch.column(0).as_binary::<i32>();
        let positions = state_position_at.map(|at| batch.column(at).as_primitive::<Int64Type>());
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut whole = Vec::new();
        for i in 0..batch.num_rows() {
            let found = keys.get(key(keyhash.value(i)));
            keep.push(found.is_some());
            if let Some(v) = found {
                let position = positions.and_then(|p| p.is_valid(i).then(|| p.value(i)));
                whole.push(v.needed(position));
            }
        }
        let kept = filter_record_batch(&batch, &BooleanArray::from(keep))?;
        let mut columns = kept.columns().to_vec();
        columns.push(Arc::new(BooleanArray::from(whole)));
        Ok(RecordBatch::try_new(selected.clone(), columns)?)
    };
    let scanning = files.scan_keys_where(positions, workers, tx, select);
    // a held merge's scanned rows, for their states once the earlier vectors are known
    let mut scanned = Vec::new();
    let picking = async {
        while let Some(batch) = rx.recv().await {
            {
                let file = batch.column(file_at).as_primitive::<UInt32Type>();
                let row = batch.column(row_at).as_primitive::<UInt32Type>();
                for i in 0..batch.num_rows() {
                    picks.pick(file.value(i), row.value(i))?;
                }
            }
            if states {
                scanned.push(batch);
            }
        }
        Ok::<_, Error>(())
    };
    let (scanned_all, picked) = tokio::join!(scanning, picking);
    // a failed pick closes the channel: its error, not the scan's, is the cause
    picked?;
    scanned_all?;
    // Rows an earlier vector marks are not live: left out (their key may be live in another
    // file). Only the vectors of files holding a changed key are read.
    let hits = picks.rows();
    let vectors_hit =
        (hits.iter().zip(&adds)).any(|(r, a)| !r.is_empty() && a.deletion_vector.is_some());
    let mut live = vectors_hit.then(|| Picks::new(&rows_per_file));
    // the earlier vectors of the files hit, read 16 at a time
    let mut earlier: Vec<Option<roaring::RoaringTreemap>> = vec![None; adds.len()];
    let mut hit_vectors = Vec::new();
    for (f, (rows, add)) in hits.iter().zip(&adds).enumerate() {
        if let (Some(dv), false) = (&add.deletion_vector, rows.is_empty()) {
            hit_vectors.push((f, dv));
        }
    }
    for chunk in hit_vectors.chunks(16) {
        let mut reads = Vec::with_capacity(chunk.len());
        for (_, dv) in chunk {
            reads.push(deletion_vectors::read(table, dv));
        }
        let read = futures::future::try_join_all(reads).await?;
        for ((f, _), rows) in chunk.iter().zip(read) {
            earlier[*f] = Some(rows);
        }
    }
    let mut marked = Vec::new();
    for (f, rows) in hits.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let (all, rows) = match &earlier[f] {
            None => {
                let all = roaring::RoaringTreemap::from_sorted_iter(rows.iter().copied())
                    .map_err(|e| Error::Internal(format!("row positions out of order: {e}")))?;
                (all, rows)
            }
            Some(before) => {
                let rows: Vec<u64> = rows.into_iter().filter(|r| !before.contains(*r)).collect();
                let mut all = before.clone();
                all.extend(rows.iter().copied());
                (all, rows)
            }
        };
        if let Some(live) = &mut live {
            for &row in &rows {
                live.pick(f as u32, row as u32)?;
            }
        }
        if !rows.is_empty() {
            marked.push(Marked {
                add: adds[f].clone(),
                file_rows: rows_per_file[f],
                rows: all,
            });
        }
    }
    let mut picks = live.unwrap_or(picks);
    summary.stages.impacted_scan_secs += scan.elapsed().as_secs_f64();
    summary.rows_marked += picks.count();
    if marked.is_empty() {
        return Ok(Replaced::default());
    }
    if let StoredTo::Held(stored) = &mut to {
        // each live row's state; whole only the rows `Whole` asks for
        let mut needed = Picks::new(&rows_per_file);
        stored
            .at
            .reserve(scanned.iter().map(RecordBatch::num_rows).sum());
        for batch in &scanned {
            let file = batch.column(file_at).as_primitive::<UInt32Type>();
            let row = batch.column(row_at).as_primitive::<UInt32Type>();
            let state = StateColumns::new(batch, 0, 1, state_position_at);
            let wanted = batch.column(whole_at).as_boolean();
            for i in 0..batch.num_rows() {
                let (f, r) = (file.value(i), row.value(i));
                if earlier[f as usize]
                    .as_ref()
                    .is_some_and(|before| before.contains(u64::from(r)))
                {
                    continue;
                }
                if wanted.value(i) {
                    needed.pick(f, r)?;
                }
                let (k, stored_row) = state.row(i, None);
                stored.put(k, stored_row);
            }
        }
        picks = needed;
    }
    drop(scanned);
    let (keyhash_at, operation_at) = (schema.index_of(KEYHASH)?, schema.index_of(OPERATION)?);
    let position_at = schema.index_of(SOURCE_POSITION).ok();
    let (reads, whole_rows) = (Instant::now(), picks.count());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
    let reading = files.read_picked(picks, schema.clone(), workers, tx, Ok);
    let storing = async {
        while let Some(old) = rx.recv().await {
            match &mut to {
                StoredTo::Held(stored) => stored.add(old, keyhash_at, operation_at, position_at),
                StoredTo::Spilled(changes) => changes.push_stored(old).await?,
            }
        }
        Ok::<_, Error>(())
    };
    let (read, stored) = tokio::join!(reading, storing);
    stored?;
    read?;
    tracing::debug!(
        files = marked.len(),
        rows = summary.rows_marked,
        whole_rows,
        secs = reads.elapsed().as_secs_f64(),
        "read the rows to mark"
    );
    Ok(Replaced {
        removes: Vec::new(),
        marked,
    })
}

/// The data files of `table` holding a key of `changed`, by file id (the scan's file URL),
/// with their remove actions.
async fn impacted_files<V>(
    table: &DeltaTable,
    changed: &FilteredMap<V>,
) -> Result<HashMap<String, Remove>> {
    let mut stream = delta::dataframe(table, |p| p.with_file_column(FILE_COLUMN))
        .await?
        .select_columns(&[KEYHASH, FILE_COLUMN])?
        .execute_stream()
        .await?;
    let mut hit: HashSet<String> = HashSet::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let keyhash = cast(batch.column(0), &DataType::Binary)?;
        let keyhash = keyhash.as_binary::<i32>();
        // the file column is dictionary-encoded (one value per file of the batch): look at
        // each file's name once, and not at the keys of a file already hit
        let (names, at) = match batch.column(1).as_any_dictionary_opt() {
            Some(dict) => (
                cast(dict.values(), &DataType::Utf8)?,
                dict.normalized_keys(),
            ),
            None => (
                cast(batch.column(1), &DataType::Utf8)?,
                (0..batch.num_rows()).collect(),
            ),
        };
        let names = names.as_string::<i32>();
        let mut known: Vec<bool> = (0..names.len())
            .map(|n| hit.contains(names.value(n)))
            .collect();
        for (i, &file) in at.iter().enumerate() {
            if !known[file] && changed.contains_key(key(keyhash.value(i))) {
                known[file] = true;
                hit.insert(names.value(file).to_string());
            }
        }
    }
    let root = table.table_url().clone();
    let mut by_path: HashMap<String, Remove> = HashMap::new();
    for file in table.snapshot()?.log_data().iter() {
        by_path.insert(file.path().into_owned(), file.remove_action(true));
    }
    hit.into_iter()
        .map(|id| {
            let path = relative_path(&id, &root);
            let remove = by_path.get(&path).cloned().ok_or_else(|| Error::Lake {
                table: TableRole::Current.as_str().into(),
                reason: format!("scanned file {id} is not in the table's log"),
            })?;
            Ok((id, remove))
        })
        .collect()
}

/// The decoded path of a file id (URL) relative to the table root.
fn relative_path(id: &str, root: &url::Url) -> String {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let root_path = decode(root.path().trim_end_matches('/'));
    let path = url::Url::parse(id).map_or_else(|_| decode(id), |u| decode(u.path()));
    path.strip_prefix(&root_path)
        .map(|p| p.trim_start_matches('/').to_string())
        .unwrap_or(path)
}

/// Streams every column of the given files of `table`.
async fn scan_files(
    table: &DeltaTable,
    files: impl Iterator<Item = String>,
) -> Result<deltalake::datafusion::physical_plan::SendableRecordBatchStream> {
    Ok(delta::dataframe(table, |p| p.with_file_paths(files))
        .await?
        .execute_stream()
        .await?)
}

/// What the last change of a key does to the current table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// The key is not live: the row is added (an update of an unknown key is an insert).
    Insert,
    /// The key is live: its row is replaced (an insert of a live key is an upsert).
    Update,
    /// The key is live: its row is removed (or kept with `operation = D` under soft deletes).
    Delete,
    /// A delete of a key that is not live: counted and ignored.
    IgnoredDelete,
}

impl Outcome {
    /// Resolves a change against whether its key is live in the current table (a soft-deleted
    /// key is not live).
    pub fn resolve(op: ChangeOp, live: bool) -> Self {
        match (op, live) {
            (ChangeOp::Insert | ChangeOp::Update, false) => Outcome::Insert,
            (ChangeOp::Insert | ChangeOp::Update, true) => Outcome::Update,
            (ChangeOp::Delete, true) => Outcome::Delete,
            (ChangeOp::Delete, false) => Outcome::IgnoredDelete,
        }
    }

    /// The `operation` code written for this outcome (None: nothing is written).
    pub fn code(self) -> Option<&'static str> {
        match self {
            Outcome::Insert => Some("I"),
            Outcome::Update => Some("U"),
            Outcome::Delete => Some("D"),
            Outcome::IgnoredDelete => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_stored_twice_is_live_when_any_row_is_and_keeps_its_whole_row() {
        let row = |loc: Option<Loc>, live: bool| StoredRow {
            loc,
            live,
            position: None,
        };
        let k = key(&[7; 16]);
        for (first, second) in [(true, false), (false, true)] {
            let mut stored = Stored::default();
            stored.put(k, row(Some((0, 0)), first));
            stored.put(k, row(None, second));
            assert!(stored.at[&k].live, "{first} {second}");
            assert_eq!(stored.at[&k].loc, Some((0, 0)));
        }
        let mut stored = Stored::default();
        stored.put(k, row(None, false));
        stored.put(k, row(Some((1, 2)), false));
        assert!(!stored.at[&k].live);
        assert_eq!(stored.at[&k].loc, Some((1, 2)));
    }

    #[test]
    fn stored_rows_are_read_whole_for_deletes_kept_values_and_stale_changes_only() {
        use crate::core::batch::HashedBatch;
        use deltalake::arrow::datatypes::Schema;
        let digest = |k: u8| [k; 16];
        // (key, operation, source position); key 2's update keeps a stored value
        let changes = [
            (1, ChangeOp::Update, 5),
            (3, ChangeOp::Delete, 6),
            (2, ChangeOp::Update, 7),
            (1, ChangeOp::Delete, 8),
            (3, ChangeOp::Insert, 9),
            (4, ChangeOp::Update, 10),
            (5, ChangeOp::Insert, 11),
        ];
        let keyhash = BinaryArray::from_iter_values(changes.iter().map(|c| digest(c.0)));
        let batch = ChangeBatch {
            rows: HashedBatch {
                payload: RecordBatch::new_empty(Arc::new(Schema::empty())),
                keyhash: keyhash.clone(),
                nonkeyhash: keyhash,
                file: 0,
                lines: (1..=changes.len() as u64).collect(),
            },
            ops: changes.iter().map(|c| c.1).collect(),
            order: (0..changes.len() as u64)
                .map(|row| SourceOrder {
                    position: 0,
                    file: 0,
                    row,
                })
                .collect(),
            commit_days: vec![None; changes.len()],
            positions: changes.iter().map(|c| Some(c.2)).collect(),
            keep_stored: [(2, vec![0])].into(),
        };
        let batches = [batch];
        let whole = Whole::of(&batches, &last_per_key(&batches));
        let needed = |k: u8, stored: Option<i64>| whole[&key(&digest(k))].needed(stored);
        // a delete (the last change or an earlier one) or a kept value: always
        for k in [1, 2, 3] {
            assert!(needed(k, None) && needed(k, Some(1)), "key {k}");
        }
        // an upsert: only when its change is older than the stored row
        assert!(needed(4, Some(11)));
        assert!(!needed(4, Some(10)) && !needed(4, Some(9)) && !needed(4, None));
        assert!(needed(5, Some(12)) && !needed(5, None));
        assert_eq!(whole.len(), 5);
    }

    #[test]
    fn a_file_marked_by_two_reads_is_marked_once_with_the_rows_of_both() {
        let file = |path: &str, rows: &[u64]| Marked {
            add: deltalake::kernel::Add {
                path: path.into(),
                ..Default::default()
            },
            file_rows: 10,
            rows: rows.iter().copied().collect(),
        };
        let mut replaced = Replaced {
            removes: Vec::new(),
            marked: vec![file("a", &[1, 2])],
        };
        replaced.extend(Replaced {
            removes: Vec::new(),
            marked: vec![file("a", &[2, 5]), file("b", &[0])],
        });
        let got: Vec<(&str, Vec<u64>)> = replaced
            .marked
            .iter()
            .map(|m| (m.add.path.as_str(), m.rows.iter().collect()))
            .collect();
        assert_eq!(got, [("a", vec![1, 2, 5]), ("b", vec![0])]);
    }

    #[test]
    fn resolves_changes_against_liveness() {
        use ChangeOp::*;
        assert_eq!(Outcome::resolve(Update, false), Outcome::Insert);
        assert_eq!(Outcome::resolve(Insert, true), Outcome::Update);
        assert_eq!(Outcome::resolve(Delete, true), Outcome::Delete);
        assert_eq!(Outcome::resolve(Delete, false), Outcome::IgnoredDelete);
        assert_eq!(Outcome::IgnoredDelete.code(), None);
    }

    #[test]
    fn picks_go_out_by_batch_and_consecutive_rows_as_slices() {
        use deltalake::arrow::datatypes::{Field, Schema};
        let picks = [(0, 0), (0, 1), (1, 0), (1, 5), (1, 6), (0, 2)];
        let ranges: Vec<_> = by_batch(&picks).collect();
        assert_eq!(ranges, [0..2, 2..5, 5..6]);
        let many: Vec<(usize, usize)> = (0..BATCH_ROWS + 3).map(|r| (0, r)).collect();
        let ranges: Vec<_> = by_batch(&many).collect();
        assert_eq!(ranges, [0..BATCH_ROWS, BATCH_ROWS..BATCH_ROWS + 3]);
        assert_eq!(by_batch(&[]).count(), 0);

        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new(OPERATION, DataType::Utf8, false),
            Field::new(EFF_START_DATE, DataType::Date32, false),
        ]));
        let batch = |values: Vec<i64>| {
            let n = values.len();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(values)),
                    Arc::new(StringArray::from(vec!["I"; n])),
                    Arc::new(Date32Array::from(vec![7; n])),
                ],
            )
            .unwrap()
        };
        let sources = [batch(vec![10, 11, 12, 13]), batch(vec![20, 21])];
        let values = |picks: &[(usize, usize)], codes: &[&str]| {
            let rows = with_operations(&sources, picks, codes).unwrap();
            let v = rows.column(0).as_primitive::<Int64Type>().values().to_vec();
            let ops = rows.column(1).as_string::<i32>();
            (
                v,
                (0..rows.num_rows())
                    .map(|i| ops.value(i).to_string())
                    .collect::<Vec<_>>(),
            )
        };
        // a slice of batch 0, rows 1..3
        assert_eq!(
            values(&[(0, 1), (0, 2)], &["U", "I"]),
            (vec![11, 12], vec!["U".into(), "I".into()])
        );
        // not consecutive, or of two batches: copied
        assert_eq!(values(&[(0, 3), (0, 1)], &["I", "I"]).0, vec![13, 11]);
        assert_eq!(values(&[(0, 3), (1, 0)], &["I", "U"]).0, vec![13, 20]);
        // the slice's values are the batch's own (no copy), the others' not
        let first = |b: &RecordBatch, at: usize| -> *const i64 {
            &b.column(0).as_primitive::<Int64Type>().values()[at]
        };
        let sliced = with_operations(&sources, &[(0, 1), (0, 2)], &["U", "I"]).unwrap();
        assert_eq!(first(&sliced, 0), first(&sources[0], 1));
        let copied = with_operations(&sources, &[(0, 3), (0, 1)], &["I", "I"]).unwrap();
        assert_ne!(first(&copied, 0), first(&sources[0], 3));
    }

    #[test]
    fn only_a_known_lower_position_is_stale() {
        assert!(is_stale(Some(1), Some(2)));
        assert!(
            !is_stale(Some(2), Some(2)),
            "equal: applied in source order"
        );
        assert!(!is_stale(Some(3), Some(2)));
        assert!(!is_stale(None, Some(2)));
        assert!(!is_stale(Some(1), None));
    }
}
