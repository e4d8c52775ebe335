//! `tributary capture`: the controller that lands a PostgreSQL replication slot in lake tables,
//! exactly once.
//!
//! 1. **Checks before anything is created** (`source::postgres::Server::check`): PostgreSQL 14+,
//!    `wal_level = logical`, a role that may replicate, a publication (created `FOR TABLE` the
//!    tables file's active entries when absent), every published table with a primary key or
//!    `REPLICA IDENTITY FULL` (loaded inserts-only, as `sync` loads tables without key), a slot
//!    that is not lost nor in use.
//! 2. **The slot first, then the copies.** The slot is created (no exported snapshot) before
//!    any table is copied. Each table the lake does not hold yet (or holds at position 0/0: a
//!    copy that stopped, a `--resnapshot`) is copied inside the exported snapshot of a side
//!    slot made after it (up to `--copy-workers` side slots at once, each copying its share of
//!    the tables), exact at that side slot's consistent point `C`, in parts when the copies'
//!    rows fill the buffers (`--memory-limit`, `--max-buffered-changes`): the first part
//!    replaces the table (and the history rows of parts that stopped), every part but the last
//!    records 0/0, the last records `C`. A table added to the publication while capture runs
//!    is copied the same way when its first Relation message arrives.
//! 3. **The stream.** Transactions arrive in commit order (pgoutput protocol 1: the server
//!    spills large ones to disk). Every change of a transaction has a number (its place among
//!    the transaction's changes, the same whenever the slot sends it again), and a table
//!    applies a change only when (commit LSN, number) is at or past its checkpoint
//!    (`SlotPosition`, `buffer::holds`): the copy holds everything committed before its `C`, a
//!    run's checkpoint is the end LSN of the last whole transaction it applied, or the number
//!    of the next change of one committed in part. After a crash nothing is applied twice and
//!    nothing is skipped.
//! 4. **Runs.** Every `--commit-interval` (and at the end of `--once`, on SIGINT/SIGTERM, and
//!    when the buffers are full, inside a transaction if need be) each table
//!    with changes commits one run through `sync::run_source`: the same de-duplication,
//!    ordering, stale-change rule, history (every change) and run transaction as `sync`, with
//!    the position in the same commit. Status updates keep the walsender alive meanwhile.
//! 5. **Confirming.** After the runs, the slot is told the lake holds everything up to the last
//!    whole transaction received (its flush LSN), never past a table that failed; when nothing
//!    is buffered and no transaction is being received, the server's own position (keepalive
//!    `wal_end`) is confirmed, so an idle or unrelated-write database does not pile up WAL.
//!
//! A column added at the source is added to the table's lake tables (nullable, nothing
//! backfilled) before the first run that carries it; other schema changes stop the table.
//!
//! A table that fails (a bad value, a schema change the lake cannot follow) stops; the others
//! go on, and the slot is not confirmed past the failed table's checkpoint, so its changes stay
//! in the slot for the next start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use deltalake::arrow::array::AsArray;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use futures::StreamExt;
use indicatif::ProgressBar;
use pg_walstream::{
    CancellationToken, ChangeEvent, EventType, LogicalReplicationStream, ReplicationError,
};
use serde::Serialize;

use super::sync::{run_source, SourceRun};
use crate::config::tables::{Layout, TableEntry, TablesFile};
use crate::config::ColumnFile;
use crate::core::change::ChangeOp;
use crate::core::checkpoint::{lsn_text, SlotPosition};
use crate::core::schema::{ColumnType, OPERATION, RESERVED_COLUMNS};
use crate::core::time::epoch_days;
use crate::error::{Error, Result};
use crate::report::progress::stage_line;
use crate::sink::delta::DeltaLake;
use crate::sink::Sink;
use crate::source::postgres::buffer::{holds, key_texts, CaptureTable, TableChanges, Values};
use crate::source::postgres::types::{map_type, PgType};
use crate::source::postgres::{
    copy_tables, decode_row, ensure_slot, open_stream, side_slot, PgTable, Server,
};

/// Flags of `tributary capture`.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// Lake root: each table lands in `<lake>/<schema>/<table>/`.
    pub lake: crate::config::storage::LakeRoot,
    /// Tables file (`sync`'s format): partitioning, delete mode and history date per table,
    /// and the tables of a publication to create.
    pub tables_file: Option<PathBuf>,
    /// Publication to read.
    pub publication: String,
    /// Replication slot.
    pub slot: String,
    /// How often buffered changes are committed.
    pub commit_interval: Duration,
    /// Drain to the server's current WAL position, commit, confirm and exit.
    pub once: bool,
    /// Copy every table again (after a lost slot).
    pub resnapshot: bool,
    /// Buffered changes (all tables) past which a commit is made before the interval; the
    /// initial copy commits a table in parts when its copies hold this many rows.
    pub max_buffered: u64,
    /// Tables copied at once (each copy takes a replication slot and a walsender while it
    /// runs: fewer when the server has fewer free).
    pub copy_workers: usize,
    /// Bytes capture's buffers and runs stay within, about: a commit is made when the buffered
    /// changes take half of it ([`change_bytes`](crate::source::postgres::buffer::change_bytes)
    /// estimates them), the other half being for the run that applies them.
    pub memory_limit: u64,
    /// Draw progress on the terminal.
    pub progress: bool,
}

impl CaptureOptions {
    /// Whether `rows` buffered changes taking `bytes` (estimated) must be committed now:
    /// `--max-buffered-changes`, or half of `--memory-limit`.
    fn full(&self, rows: u64, bytes: u64) -> bool {
        rows >= self.max_buffered || bytes >= self.memory_limit / 2
    }

    /// The memory of one table's run: the limit, without spilling (the buffer keeps the
    /// changes it hands to the run, and is committed at half the limit).
    fn run_memory(&self) -> super::spill::RunMemory {
        super::spill::RunMemory {
            limit: self.memory_limit,
            spill_dir: std::env::temp_dir(),
            spill: false,
        }
    }
}

/// What capture did to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableCapture {
    /// `<schema>.<table>`.
    pub table: String,
    /// `captured`, `up-to-date` or `failed`.
    pub status: String,
    /// Rows of its initial copy (0: none this time).
    pub copied_rows: u64,
    /// Changes applied from the stream.
    pub changes: u64,
    /// Keys inserted, updated, deleted (copy and stream).
    pub inserted: u64,
    /// Keys updated.
    pub updated: u64,
    /// Keys deleted.
    pub deleted: u64,
    /// Runs committed.
    pub runs: u64,
    /// The slot position the table holds at the end (`16/B374D848`, `16/B374D848+42`).
    pub lsn: Option<String>,
    /// Columns added to the lake tables (added at the source: schema evolution).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns_added: Vec<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last catalog registration (the tables file's `catalog`): after the initial copy,
    /// and after the first commit that follows columns added at the source. Its error does
    /// not fail the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<crate::sink::catalog::Registered>,
}

/// What one `capture` did.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureSummary {
    /// One entry per published table, in name order.
    pub tables: Vec<TableCapture>,
    /// Tables that failed.
    pub failed: usize,
    /// Tables whose last catalog registration failed.
    pub catalog_failed: usize,
    /// Transactions received from the slot.
    pub transactions: u64,
    /// Seconds from a transaction's commit in PostgreSQL to its commit in the lake.
    pub lag: Lag,
    /// The flush LSN last confirmed to the slot.
    pub confirmed_lsn: Option<String>,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
}

/// Seconds from each captured transaction's commit in PostgreSQL (its commit timestamp) to
/// the lake commit that holds it, over the transactions with changes of this capture.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lag {
    /// Transactions measured.
    pub transactions: u64,
    /// Median, seconds.
    pub p50_secs: Option<f64>,
    /// 99th percentile, seconds.
    pub p99_secs: Option<f64>,
    /// Largest, seconds.
    pub max_secs: Option<f64>,
}

/// One captured table: its config, what the lake holds, its buffer.
struct Captured {
    table: Arc<CaptureTable>,
    /// The first change the lake does not hold (None: not copied yet).
    position: Option<SlotPosition>,
    /// Changes not yet committed.
    buffer: TableChanges,
    /// Column names of the table's latest Relation message.
    relation: Option<Vec<String>>,
    failed: Option<String>,
    report: TableCapture,
    /// The lake tables exist and are to be given the columns they lack, then read for their
    /// position ([`Captured::settle`]).
    evolve: bool,
    /// The catalog describes the lake tables' columns (nothing to register until columns are
    /// added).
    registered: bool,
}

impl Captured {
    /// Whether the table is to be copied: not in the lake yet, or reset by `--resnapshot`
    /// (LSN 0/0), and not failed.
    fn needs_copy(&self) -> bool {
        self.failed.is_none() && self.position.is_none_or(|p| p == SlotPosition::default())
    }

    /// Whether the lake holds the change numbered `seq` of the transaction committed at
    /// `commit_lsn` (or the table failed: it takes no more changes).
    fn skips(&self, commit_lsn: u64, seq: u64) -> bool {
        self.failed.is_some() || holds(self.position, commit_lsn, seq)
    }
}

/// Runs `tributary capture` until `stop` is cancelled (SIGINT/SIGTERM), or, with `--once`,
/// until the slot is drained to the server's position at start.
///
/// # Errors
/// Set-up errors ([`Error::SourceSetup`], exit 2) before anything is created; connection and
/// stream errors ([`Error::Source`]). Errors of one table are in its [`TableCapture`].
pub async fn capture(options: &CaptureOptions, stop: CancellationToken) -> Result<CaptureSummary> {
    let started = Instant::now();
    // pg_walstream reads a stream cancelled through its token without losing frames only on
    // the multi-thread runtime (its inline driver)
    if tokio::runtime::Handle::current().runtime_flavor()
        != tokio::runtime::RuntimeFlavor::MultiThread
    {
        return Err(Error::Internal(
            "capture needs tokio's multi-thread runtime".into(),
        ));
    }
    let server = Server::connect(&options.url).await?;
    server.check().await?;
    let entries = match &options.tables_file {
        Some(path) => TablesFile::load(path)?,
        None => TablesFile::default(),
    };
    if !server.publication_exists(&options.publication).await? {
        let wanted: Vec<(String, String)> = entries
            .tables
            .iter()
            .filter(|e| e.active)
            .filter_map(|e| {
                let (s, t) = e.source.trim_matches('/').split_once('/')?;
                Some((s.to_string(), t.to_string()))
            })
            .collect();
        if wanted.is_empty() {
            return Err(Error::SourceSetup(format!(
                "{}: publication `{}` does not exist: create it (CREATE PUBLICATION {} FOR TABLE \
                 ...) or pass --tables with the tables to publish",
                server.name(),
                options.publication,
                options.publication
            )));
        }
        server
            .create_publication(&options.publication, &wanted)
            .await?;
        tracing::info!(publication = %options.publication, tables = wanted.len(), "publication created");
    }
    let published = server.published_tables(&options.publication).await?;
    if published.is_empty() {
        return Err(Error::SourceSetup(format!(
            "{}: publication `{}` has no tables",
            server.name(),
            options.publication
        )));
    }
    // the slot first: a start that is refused (another capture holds the slot) leaves the
    // lake as it is (opening the tables may add columns to them)
    let slot = server
        .slot_when_free(&options.slot, Duration::from_secs(15))
        .await?;
    match &slot {
        Some(s) if s.plugin.as_deref() != Some("pgoutput") => {
            return Err(Error::SourceSetup(format!(
                "{}: slot `{}` uses the output plugin `{}`, not pgoutput: choose another --slot",
                server.name(),
                options.slot,
                s.plugin.as_deref().unwrap_or("none")
            )))
        }
        Some(s) if s.active => {
            return Err(Error::Source(format!(
                "{}: slot `{}` is in use by another process (another capture?)",
                server.name(),
                options.slot
            )))
        }
        Some(s) if s.wal_status.as_deref() == Some("lost") && !options.resnapshot => {
            return Err(Error::SourceSetup(format!(
                "{}: slot `{}` has lost WAL it needs (wal_status = lost): changes were removed \
                 before the lake got them. Copy every table again with --resnapshot",
                server.name(),
                options.slot
            )))
        }
        _ => {}
    }
    // side slots of copies that stopped (or whose slot could not be dropped) hold WAL back
    server.drop_side_slots(&options.slot).await?;
    let mut tables = Vec::new();
    for (index, pg) in published.iter().enumerate() {
        tables.push(open_table(pg, &entries, index, &options.lake).await?);
    }
    if slot.is_none()
        && !options.resnapshot
        && tables.iter().any(|t| t.position.is_some_and(|p| p.lsn > 0))
    {
        return Err(Error::SourceSetup(format!(
            "{}: slot `{}` does not exist but the lake holds captured tables: the changes since \
             they were captured may be lost. Copy every table again with --resnapshot",
            server.name(),
            options.slot
        )));
    }
    for table in &mut tables {
        table.settle().await;
    }
    let run_date = chrono::Utc::now().date_naive();
    let bar = ProgressBar::hidden();
    if options.resnapshot {
        if let Some(t) = tables.iter().find(|t| t.failed.is_some()) {
            return Err(Error::SourceSetup(format!(
                "--resnapshot would drop the slot, but table {} cannot be captured now ({}); \
                 move its lake folder away (it is then copied again) or make the source match \
                 it, then run --resnapshot",
                t.table.name(),
                t.failed.as_deref().unwrap_or_default()
            )));
        }
        // First a run at LSN 0/0 in every captured table: the lake itself then says the table
        // is to be copied, so a copy that stops here is redone by the next start, whatever
        // happened to the slot.
        for t in tables
            .iter_mut()
            .filter(|t| t.failed.is_none() && t.position.is_some_and(|p| p.lsn > 0))
        {
            let mut reset = TableChanges::reset(t.table.clone());
            run_source(
                &mut reset,
                &t.table.config,
                run_date,
                &options.run_memory(),
                &bar,
            )
            .await?;
            t.position = Some(SlotPosition::default());
        }
        if slot.is_some() {
            server.drop_slot(&options.slot).await?;
        }
    }
    ensure_slot(&options.url, &options.slot, &options.publication).await?;
    let mut run = Run {
        options,
        entries,
        tables,
        run_date,
        bar,
        transactions: 0,
        confirmed: None,
        uncommitted: Vec::new(),
        lags: Vec::new(),
        catalog_retry_at: None,
    };
    run.copy(&server).await?;
    for t in 0..run.tables.len() {
        run.register(t).await;
    }
    let stop_at = match options.once {
        true => Some(server.current_lsn().await?),
        false => None,
    };
    let mut stream = open_stream(&options.url, &options.slot, &options.publication).await?;
    run.stream(&mut stream, &server, &stop, stop_at).await?;
    let _ = stream.stop().await;
    let mut lags = std::mem::take(&mut run.lags);
    lags.sort_unstable_by(f32::total_cmp);
    let quantile = |q: f64| -> Option<f64> {
        let last = lags.len().checked_sub(1)?;
        Some(f64::from(lags[(last as f64 * q).round() as usize]))
    };
    let lag = Lag {
        transactions: lags.len() as u64,
        p50_secs: quantile(0.5),
        p99_secs: quantile(0.99),
        max_secs: quantile(1.0),
    };
    let mut reports: Vec<TableCapture> = run
        .tables
        .into_iter()
        .map(|t| TableCapture {
            lsn: t.position.map(SlotPosition::text),
            ..t.report
        })
        .collect();
    reports.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(CaptureSummary {
        failed: reports.iter().filter(|r| r.status == "failed").count(),
        catalog_failed: reports
            .iter()
            .filter(|r| r.catalog.as_ref().is_some_and(|c| c.error.is_some()))
            .count(),
        tables: reports,
        lag,
        transactions: run.transactions,
        confirmed_lsn: run.confirmed.map(lsn_text),
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// A published table as capture takes it on, without writing to the lake: its lake table
/// (columns as the lake has them where it exists, then those added at the source, which
/// [`Captured::settle`] gives the lake tables), the position the lake's last run recorded, or
/// why it cannot be captured now (a column retyped at the source: it fails, and the slot is
/// held at its stored position).
///
/// # Errors
/// [`Error::SourceSetup`] for a table without primary key nor `REPLICA IDENTITY FULL`; errors
/// reading the lake's log.
async fn open_table(
    pg: &PgTable,
    entries: &TablesFile,
    index: usize,
    lake: &crate::config::storage::LakeRoot,
) -> Result<Captured> {
    let table = Arc::new(capture_table(pg, entries, index, lake, None)?);
    let mut failed = None;
    let mut evolve = false;
    let (table, position) = match lake_columns(&table).await? {
        None => (table, None),
        Some((stored, stored_position)) => {
            // the lake's columns, in its order: a column dropped at the source stays
            let table = match capture_table(pg, entries, index, lake, Some(&stored)) {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    failed = Some(e.to_string());
                    table
                }
            };
            // columns added at the source while capture was stopped (or added to one lake
            // table only, by a crash) are given to the lake tables, and the position is read
            // after an interrupted run is completed, by `settle`, once the start is not
            // refused; until then the last run's position (the slot is never confirmed past
            // what a failed table holds)
            evolve = failed.is_none();
            (table, stored_position)
        }
    };
    if let Some(e) = &failed {
        tracing::warn!(table = %table.name(), "failed: {e}");
    }
    Ok(Captured {
        buffer: TableChanges::new(table.clone(), false),
        report: TableCapture {
            table: table.name().to_string(),
            status: if failed.is_some() {
                "failed"
            } else {
                "up-to-date"
            }
            .into(),
            error: failed.clone(),
            ..Default::default()
        },
        table,
        position,
        relation: None,
        failed,
        evolve,
        registered: false,
    })
}

/// The position the lake tables of `table` hold, once an interrupted run is completed (None:
/// no tables).
///
/// # Errors
/// Lake errors (tables of another schema, out of step).
async fn lake_position(table: &CaptureTable) -> Result<Option<SlotPosition>> {
    match DeltaLake::open(&table.config.table, false).await? {
        Some((lake, _)) => Ok(lake.committed().await?.position),
        None => Ok(None),
    }
}

impl Captured {
    /// Gives the lake tables the columns they lack (added at the source while capture was
    /// stopped, see [`open_table`]), then reads the position they hold once an interrupted
    /// run is completed; a failure fails the table.
    async fn settle(&mut self) {
        if !std::mem::take(&mut self.evolve) || self.failed.is_some() {
            return;
        }
        let settled = match evolve(&self.table).await {
            Ok(added) => {
                self.report.columns_added = added;
                lake_position(&self.table).await
            }
            Err(e) => Err(e),
        };
        match settled {
            Ok(position) => self.position = position,
            Err(e) => {
                tracing::warn!(table = %self.table.name(), "failed: {e}");
                self.failed = Some(e.to_string());
                self.report.status = "failed".into();
                self.report.error = Some(e.to_string());
            }
        }
    }
}

/// `names` as `` `a`, `b` ``.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The payload columns of `table`'s lake tables, in order (current's, then any history has
/// that current lacks: a crash between the two tables' `ADD COLUMN` commits), and the LSN the
/// last run recorded (None: not created).
async fn lake_columns(table: &CaptureTable) -> Result<Option<StoredColumns>> {
    let lake = &table.config.table.lake;
    let Some(stored) = crate::sink::delta::stored_table(&lake.current_url).await? else {
        return Ok(None);
    };
    let lsn = crate::sink::delta::log::last_run(&stored)
        .await?
        .and_then(|(_, entry)| entry.run.source_lsn)
        .and_then(|text| SlotPosition::parse(&text));
    let mut fields: Vec<_> = stored
        .snapshot()?
        .snapshot()
        .arrow_schema()
        .fields()
        .to_vec();
    if let Some(history) = crate::sink::delta::stored_table(&lake.history_url).await? {
        for field in history.snapshot()?.snapshot().arrow_schema().fields() {
            if !fields.iter().any(|f| f.name() == field.name()) {
                fields.push(field.clone());
            }
        }
    }
    let columns = fields
        .iter()
        .filter(|f| !RESERVED_COLUMNS.contains(&f.name().as_str()))
        .map(|f| {
            let ty = ColumnType::from_arrow(f.data_type()).ok_or_else(|| Error::Lake {
                table: table.name().to_string(),
                reason: format!(
                    "column `{}` has type {}, which capture does not write",
                    f.name(),
                    f.data_type()
                ),
            })?;
            Ok((f.name().clone(), ty))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((columns, lsn)))
}

/// A lake table's payload columns (name, type) in order, and the LSN of its last run.
type StoredColumns = (Vec<(String, ColumnType)>, Option<SlotPosition>);

/// The lake table of published table `pg`: columns and key from the catalog, the rest from
/// its tables-file entry (`source: <schema>/<table>`) where there is one. With `stored` (the
/// lake's columns, when the table exists) the columns are the lake's, in its order (a column
/// the source dropped stays, NULL from then on), then those added at the source.
///
/// # Errors
/// [`Error::SourceSetup`] for a table without primary key nor `REPLICA IDENTITY FULL`;
/// [`Error::Source`] for a column whose type no longer maps to the lake's (the lake tables
/// cannot follow that). A column added at the source comes after the lake's columns.
fn capture_table(
    pg: &PgTable,
    entries: &TablesFile,
    index: usize,
    lake: &crate::config::storage::LakeRoot,
    stored: Option<&[(String, ColumnType)]>,
) -> Result<CaptureTable> {
    let primary_key: Vec<String> = pg
        .columns
        .iter()
        .filter(|c| c.key)
        .map(|c| c.name.clone())
        .collect();
    if primary_key.is_empty() && pg.replica_identity != 'f' {
        return Err(Error::SourceSetup(format!(
            "table {} has no primary key and its REPLICA IDENTITY is not FULL: PostgreSQL cannot \
             publish its updates and deletes. Add a primary key, or ALTER TABLE {} REPLICA \
             IDENTITY FULL to load it inserts-only",
            pg.qualified(),
            pg.qualified()
        )));
    }
    let mut mapped: Vec<(String, PgType)> = Vec::new();
    for c in &pg.columns {
        let (ty, known) = map_type(c.type_oid, c.typmod, &c.type_name, &c.kind, &c.category);
        if !known && stored.is_none() {
            tracing::warn!(table = %pg.qualified(), column = %c.name, "type `{}` is loaded as text", c.type_name);
        }
        mapped.push((c.name.clone(), ty));
    }
    if let Some(stored) = stored {
        let mut ordered = Vec::new();
        for (name, lake_type) in stored {
            let ty = match mapped.iter().find(|(n, _)| n == name) {
                Some((_, ty)) if ty.lake == *lake_type => *ty,
                Some((_, ty)) => {
                    return Err(Error::Source(format!(
                        "table {}: column `{name}` is now {} at the source but {lake_type} in the \
                         lake; the lake tables cannot change a column's type (its changes stay \
                         in the slot)",
                        pg.qualified(),
                        ty.lake
                    )))
                }
                None => PgType {
                    lake: *lake_type,
                    with_zone: false,
                },
            };
            ordered.push((name.clone(), ty));
        }
        // columns added at the source since: after the lake's, in the source's order (the
        // lake tables take them, `evolve`)
        for (name, ty) in &mapped {
            if !stored.iter().any(|(s, _)| s == name) {
                if primary_key.is_empty() {
                    return Err(inserts_only_column(&pg.qualified(), name));
                }
                ordered.push((name.clone(), *ty));
            }
        }
        mapped = ordered;
    }
    lake_table(
        (&pg.schema, &pg.name),
        primary_key,
        &mapped,
        entries,
        index,
        lake,
    )
}

/// Why a table loaded inserts-only cannot take column `column` added at the source: its key is
/// every column (`tributary.key.columns`), which a new column would change.
fn inserts_only_column(table: &str, column: &str) -> Error {
    Error::Source(format!(
        "table {table}: column `{column}` was added at the source, but the table has no primary \
         key and is loaded inserts-only, keyed by all its columns, which cannot change (its \
         changes stay in the slot: move the table's lake folder away to copy it again)"
    ))
}

/// The lake table of PostgreSQL table `source` (schema, name) with columns `mapped` (name,
/// how its text is read) in lake order and key `primary_key` (names; empty: inserts only),
/// the rest from its tables-file entry where there is one.
///
/// # Errors
/// [`Error::Config`]-family errors of the tables-file entry.
fn lake_table(
    source: (&str, &str),
    mut primary_key: Vec<String>,
    mapped: &[(String, PgType)],
    entries: &TablesFile,
    index: usize,
    lake: &crate::config::storage::LakeRoot,
) -> Result<CaptureTable> {
    let qualified = format!("{}.{}", source.0, source.1);
    let source_path = format!("{}/{}", source.0, source.1);
    let types: Vec<PgType> = mapped.iter().map(|(_, t)| *t).collect();
    let columns: Vec<ColumnFile> = mapped
        .iter()
        .map(|(name, ty)| ColumnFile {
            name: name.clone(),
            ty: ty.lake.to_string(),
            key: false,
            ignore: false,
        })
        .collect();
    let mut entry = match entries.find(&source_path) {
        Some(e) => e.clone(),
        None => TableEntry::discovered(source_path, Vec::new(), Layout::Debezium),
    };
    if !entry.primary_key.is_empty() && entry.primary_key != primary_key {
        tracing::warn!(table = %qualified, "primary_key of the tables file differs from the table's primary key; the table's is used");
    }
    std::mem::swap(&mut entry.primary_key, &mut primary_key);
    entry.active = true;
    entry.columns = columns;
    // the tables file's storage options, for a lake in an object store
    let root = match entries.storage_options.is_empty() {
        true => lake.clone(),
        false => lake.clone().with_options(entries.storage_options.clone()),
    };
    let mut config = entry.changelog_table(index, &root)?;
    config.history_every_change = true;
    let mut table = CaptureTable::new(config, types);
    table.source = (source.0.to_string(), source.1.to_string());
    Ok(table)
}

/// `table` with the columns `added` (name, how its text is read) after its own: a Relation
/// message named columns the lake tables lack.
///
/// # Errors
/// As [`lake_table`].
fn with_columns(
    table: &CaptureTable,
    added: &[(String, PgType)],
    entries: &TablesFile,
    index: usize,
    lake: &crate::config::storage::LakeRoot,
) -> Result<CaptureTable> {
    let columns = &table.config.table.columns;
    let mut mapped: Vec<(String, PgType)> = columns
        .iter()
        .zip(&table.types)
        .map(|(c, ty)| (c.name.clone(), *ty))
        .collect();
    mapped.extend(added.iter().cloned());
    let key = table.key.iter().map(|&c| columns[c].name.clone()).collect();
    let source = (table.source.0.as_str(), table.source.1.as_str());
    lake_table(source, key, &mapped, entries, index, lake)
}

/// Gives the lake tables of `table` its columns they lack (added at the source: nullable,
/// nothing backfilled, `sink::delta::add_columns`), history first, with a progress line.
/// Returns the names added.
///
/// # Errors
/// Delta errors.
async fn evolve(table: &CaptureTable) -> Result<Vec<String>> {
    let spec = &table.config.table;
    let schema = spec.table_schema();
    let mut added = crate::sink::delta::add_columns(
        &spec.lake.history_url,
        &schema,
        crate::sink::TableRole::History,
    )
    .await?;
    for name in crate::sink::delta::add_columns(
        &spec.lake.current_url,
        &schema,
        crate::sink::TableRole::Current,
    )
    .await?
    {
        if !added.contains(&name) {
            added.push(name);
        }
    }
    if !added.is_empty() {
        stage_line(
            false,
            format_args!(
                "{}: column(s) {} added to the lake tables",
                table.name(),
                quoted(&added)
            ),
        );
    }
    Ok(added)
}

/// A capture in progress.
struct Run<'a> {
    options: &'a CaptureOptions,
    /// The tables file (for tables added to the publication while capture runs).
    entries: TablesFile,
    tables: Vec<Captured>,
    run_date: NaiveDate,
    bar: ProgressBar,
    transactions: u64,
    confirmed: Option<u64>,
    /// Commit times (microseconds since the epoch) of the received transactions with changes
    /// not yet in the lake.
    uncommitted: Vec<i64>,
    /// Seconds from each transaction's commit in PostgreSQL to its commit in the lake.
    lags: Vec<f32>,
    /// When a catalog registration failed: no table tries again before this.
    catalog_retry_at: Option<Instant>,
}

/// How long capture waits after a failed catalog registration before any table tries again.
const CATALOG_RETRY: Duration = Duration::from_secs(300);

/// The transaction being received.
struct Txn {
    commit_lsn: u64,
    day: i32,
    seq: u64,
    commit_micros: i64,
    /// Changes of it buffered.
    changes: u64,
}

impl Run<'_> {
    /// Copies the tables the lake does not hold yet, each committed as a full load at its
    /// copy's consistent point: up to `--copy-workers` copies at once, each in the exported
    /// snapshot of a side slot of its own (its tables exact at that slot's consistent point,
    /// from which each applies the stream), the biggest tables spread first. The rows of
    /// all copies are committed table by table as they arrive, a table in parts when the
    /// rows buffered reach `--max-buffered-changes` (the biggest table's part first).
    async fn copy(&mut self, server: &Server) -> Result<()> {
        let needed: Vec<usize> = (0..self.tables.len())
            .filter(|&i| self.tables[i].needs_copy())
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        server.drop_side_slots(&self.options.slot).await?;
        let sources: Vec<(String, String)> = needed
            .iter()
            .map(|&i| self.tables[i].table.source.clone())
            .collect();
        let sizes = server.table_bytes(&sources).await?;
        let (free_slots, free_senders) = server.replication_capacity().await?;
        // the stream's walsender starts after the copies: one is left for it
        let workers = (self.options.copy_workers.max(1) as u64)
            .min(needed.len() as u64)
            .min(free_slots)
            .min(free_senders.saturating_sub(1))
            .max(1) as usize;
        stage_line(
            false,
            format_args!("copying {} table(s), {workers} at once", needed.len()),
        );
        // rows in flight: at most 4 chunks a worker, a chunk at most 1/16 of the limit a
        // worker (a quarter of the limit in all)
        let (tx, mut rx) = tokio::sync::mpsc::channel(workers * 4);
        let chunk_bytes = (self.options.memory_limit / (16 * workers as u64)).max(64 << 10);
        let mut running = tokio::task::JoinSet::new();
        for (w, group) in spread(&sizes, workers).into_iter().enumerate() {
            let tables = group
                .iter()
                .map(|&k| (k, self.tables[needed[k]].table.clone()))
                .collect();
            running.spawn(copy_worker(
                self.options.url.clone(),
                side_slot(&self.options.slot, w),
                self.options.publication.clone(),
                tables,
                chunk_bytes,
                tx.clone(),
            ));
        }
        drop(tx);
        let day = epoch_days(self.run_date);
        let mut buffers: Vec<Option<TableChanges>> = Vec::new();
        for &i in &needed {
            let first = TableChanges::copy_part(self.tables[i].table.clone(), true);
            // a copy that starts over replaces the history rows of the parts that stopped
            let first = match self.tables[i].position {
                Some(p) if p == SlotPosition::default() => {
                    first.replacing_history(stopped_copy_files(&self.tables[i].table).await?)
                }
                _ => first,
            };
            buffers.push(Some(first));
        }
        let mut seqs = vec![0u64; needed.len()];
        loop {
            let message = tokio::select! {
                Some(joined) = running.join_next() => {
                    // a copy that fails ends them all (dropping the set aborts the others;
                    // their side slots are dropped by the next start)
                    joined.map_err(|e| Error::Internal(format!("copy worker: {e}")))??;
                    continue;
                }
                message = rx.recv() => message,
            };
            match message {
                None => break,
                Some(Copied::Rows(k, point, rows)) => {
                    for values in rows {
                        seqs[k] += 1;
                        let Some(buffer) = buffers[k].as_mut() else {
                            break;
                        };
                        let pushed =
                            buffer.push(ChangeOp::Insert, values, Vec::new(), point, seqs[k], day);
                        if let Err(e) = pushed {
                            self.fail(needed[k], &e);
                            buffers[k] = None;
                        }
                    }
                    // parts of copies, committed at LSN 0/0 (memory stays bounded, and a copy
                    // that stops is redone from its start), the biggest first
                    loop {
                        let held: Vec<(u64, u64)> = buffers
                            .iter()
                            .map(|b| b.as_ref().map_or((0, 0), |b| (b.bytes(), b.rows())))
                            .collect();
                        let rows: u64 = held.iter().map(|h| h.1).sum();
                        let bytes: u64 = held.iter().map(|h| h.0).sum();
                        // with the stream's buffers (a table added while capture runs)
                        let streamed: u64 = self.tables.iter().map(|t| t.buffer.bytes()).sum();
                        let full = self.options.full(rows + self.buffered(), bytes + streamed);
                        if rows == 0 || !full {
                            break;
                        }
                        let biggest = (0..held.len()).max_by_key(|&b| held[b]).unwrap_or(k);
                        let table = self.tables[needed[biggest]].table.clone();
                        let next = TableChanges::copy_part(table, false);
                        let mut part = buffers[biggest].replace(next);
                        self.commit_copy(needed[biggest], &mut part, 0).await;
                        if self.tables[needed[biggest]].failed.is_some() {
                            buffers[biggest] = None;
                        }
                    }
                }
                Some(Copied::Done(k, point)) => {
                    self.commit_copy(needed[k], &mut buffers[k], point).await;
                }
            }
        }
        while let Some(joined) = running.join_next().await {
            joined.map_err(|e| Error::Internal(format!("copy worker: {e}")))??;
        }
        stage_line(
            false,
            format_args!(
                "copied {} table(s) in {:.2} s",
                needed.len(),
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    /// Commits the copy of table `t`, or a part of it (once: the buffer is taken); `point`: the
    /// LSN it records (the copy's consistent point for the last part, 0/0 for the others).
    async fn commit_copy(&mut self, t: usize, buffer: &mut Option<TableChanges>, point: u64) {
        let Some(mut buffer) = buffer.take() else {
            return;
        };
        buffer.reach(point);
        let rows = buffer.rows();
        match self.apply(t, &mut buffer).await {
            Ok(_) => {
                if point == 0 {
                    // test hook: a crash between the parts of a copy
                    crate::sink::delta::crash_point("capture-after-copy-part");
                }
                self.tables[t].report.copied_rows += rows;
                stage_line(
                    false,
                    format_args!("{}: copied {rows} rows", self.tables[t].table.name()),
                );
            }
            Err(e) => self.fail(t, &e),
        }
    }

    /// Registers table `t` in the tables file's catalog unless the catalog describes it
    /// already (or there is no catalog, or the table failed); a failure is reported and tried
    /// again at the table's next commit.
    async fn register(&mut self, t: usize) {
        let Some(catalog) = self.entries.catalog.clone() else {
            return;
        };
        // a catalog that failed is tried again after CATALOG_RETRY, not at every commit: each
        // try may wait out its timeouts, and the stream waits with it
        if self.catalog_retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let captured = &mut self.tables[t];
        if captured.registered || captured.failed.is_some() {
            return;
        }
        let spec = captured.table.config.table.clone();
        let done = crate::sink::catalog::register_or_report(&catalog, &spec).await;
        captured.registered = done.error.is_none();
        if !captured.registered {
            self.catalog_retry_at = Some(Instant::now() + CATALOG_RETRY);
        }
        captured.report.catalog = Some(done);
    }

    fn fail(&mut self, t: usize, e: &Error) {
        let table = &mut self.tables[t];
        tracing::warn!(table = %table.table.name(), "failed: {e}");
        table.failed = Some(e.to_string());
        table.report.status = "failed".into();
        table.report.error = Some(e.to_string());
        table.buffer = TableChanges::new(table.table.clone(), false);
    }

    /// Applies `buffer` to table `t` in one run and records what it did.
    async fn apply(&mut self, t: usize, buffer: &mut TableChanges) -> Result<()> {
        buffer.finish()?;
        let config = self.tables[t].table.config.clone();
        let memory = self.options.run_memory();
        let done: SourceRun =
            run_source(buffer, &config, self.run_date, &memory, &self.bar).await?;
        let table = &mut self.tables[t];
        table.position = Some(buffer.end());
        if let Some(summary) = done.applied {
            table.report.runs += 1;
            table.report.inserted += summary.inserted;
            table.report.updated += summary.updated;
            table.report.deleted += summary.deleted;
            if table.report.status != "failed" {
                table.report.status = "captured".into();
            }
        }
        Ok(())
    }

    /// Takes on a table added to the publication while capture runs: copies it (the stream
    /// waits, kept alive) at a side slot's consistent point, past the transactions received so
    /// far; its later changes then apply from that point on, like any table's.
    async fn add_table(
        &mut self,
        stream: &mut LogicalReplicationStream,
        server: &Server,
        schema: &str,
        name: &str,
        by_name: &mut HashMap<String, usize>,
    ) -> Result<()> {
        let published = server.published_tables(&self.options.publication).await?;
        let Some(pg) = published
            .iter()
            .find(|t| t.schema == schema && t.name == name)
        else {
            return Ok(());
        };
        let index = self.tables.len();
        let captured = match open_table(pg, &self.entries, index, &self.options.lake).await {
            Ok(mut captured) => {
                keep_alive(stream, captured.settle()).await;
                captured
            }
            Err(e) => {
                // a table capture cannot take (no key): reported, its changes not applied
                tracing::warn!(table = %pg.qualified(), "not captured: {e}");
                return Ok(());
            }
        };
        stage_line(
            false,
            format_args!("{}: added to the publication; copying it", pg.qualified()),
        );
        by_name.insert(pg.qualified(), index);
        let mut captured = captured;
        if captured.failed.is_none() && captured.position.is_some() {
            // back in the publication: its changes while it was out were not sent
            let mut reset = TableChanges::reset(captured.table.clone());
            let config = captured.table.config.clone();
            keep_alive(
                stream,
                run_source(
                    &mut reset,
                    &config,
                    self.run_date,
                    &self.options.run_memory(),
                    &self.bar,
                ),
            )
            .await?;
            captured.position = Some(SlotPosition::default());
        }
        self.tables.push(captured);
        keep_alive(stream, self.copy(server)).await
    }

    /// Buffered changes of all tables.
    fn buffered(&self) -> u64 {
        self.tables.iter().map(|t| t.buffer.rows()).sum()
    }

    /// Whether the buffers are full: a commit is due whatever the interval.
    fn full(&self) -> bool {
        let bytes = self.tables.iter().map(|t| t.buffer.bytes()).sum();
        self.options.full(self.buffered(), bytes)
    }

    /// Reads the stream until `stop` or, with a stop LSN, its end; commits and confirms as it
    /// goes (see the module docs).
    async fn stream(
        &mut self,
        stream: &mut LogicalReplicationStream,
        server: &Server,
        stop: &CancellationToken,
        stop_at: Option<u64>,
    ) -> Result<()> {
        let mut by_name: HashMap<String, usize> = self
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.table.name().to_string(), i))
            .collect();
        let mut relations: HashMap<u32, usize> = HashMap::new();
        let mut txn: Option<Txn> = None;
        let mut received: Option<u64> = None;
        let mut last_commit = Instant::now();
        let mut last_commit_micros: Option<i64> = None;
        let wait = self.options.commit_interval.min(Duration::from_secs(1));
        let mut reader = Reader::new(stop, wait);
        loop {
            let event = reader.next(stream).await;
            let event = match event {
                Ok(Some(event)) => Some(event),
                Ok(None) => {
                    // idle for a while: tell the server where we are (it answers with a
                    // keepalive carrying its position), and end `--once` at the stop LSN
                    if let Err(e) = stream.send_feedback().await {
                        tracing::debug!("status update failed: {e}");
                    }
                    if txn.is_none() && stop_at.is_some_and(|s| stream.current_lsn() >= s) {
                        self.commit(stream, received, true).await?;
                        return Ok(());
                    }
                    None
                }
                Err(ReplicationError::StreamStopped(_)) => {
                    self.commit(stream, received, txn.is_none()).await?;
                    return Ok(());
                }
                Err(ReplicationError::Cancelled(_)) if stop.is_cancelled() => {
                    // SIGINT/SIGTERM: what is buffered is committed, a transaction in flight
                    // in part (at the number of its next change); the slot is confirmed only up
                    // to the last whole one
                    let whole = txn.is_none();
                    self.commit(stream, received, whole).await?;
                    return Ok(());
                }
                Err(e) => {
                    return Err(crate::source::postgres::replication_error(
                        "replication stream",
                        e,
                    ))
                }
            };
            if let Some(event) = event {
                self.event(
                    stream,
                    server,
                    event,
                    &mut by_name,
                    &mut relations,
                    &mut txn,
                    &mut received,
                    &mut last_commit_micros,
                )
                .await?;
                if txn.is_none() && stop_at.is_some_and(|s| received.is_some_and(|r| r >= s)) {
                    self.commit(stream, received, true).await?;
                    return Ok(());
                }
            }
            let due = last_commit.elapsed() >= self.options.commit_interval || self.full();
            // a transaction larger than the buffer is committed in parts (each part records
            // the number of its next change), so memory stays bounded
            if (txn.is_none() && due) || self.full() {
                self.commit(stream, received, txn.is_none()).await?;
                if self.options.progress {
                    let lag = last_commit_micros
                        .map(|m| (chrono::Utc::now().timestamp_micros() - m) as f64 / 1e6)
                        .unwrap_or(0.0);
                    stage_line(
                        false,
                        format_args!(
                            "{} transactions received, confirmed {}, lag {lag:.1} s",
                            self.transactions,
                            self.confirmed.map(lsn_text).unwrap_or_else(|| "-".into())
                        ),
                    );
                }
                last_commit = Instant::now();
            }
        }
    }

    /// Handles one event of the stream.
    #[allow(clippy::too_many_arguments)]
    async fn event(
        &mut self,
        stream: &mut LogicalReplicationStream,
        server: &Server,
        event: ChangeEvent,
        by_name: &mut HashMap<String, usize>,
        relations: &mut HashMap<u32, usize>,
        txn: &mut Option<Txn>,
        received: &mut Option<u64>,
        last_commit_micros: &mut Option<i64>,
    ) -> Result<()> {
        match event.event_type {
            EventType::Begin {
                final_lsn,
                commit_timestamp,
                ..
            } => {
                *txn = Some(Txn {
                    commit_lsn: final_lsn.value(),
                    day: epoch_days(commit_timestamp.date_naive()),
                    seq: 0,
                    commit_micros: commit_timestamp.timestamp_micros(),
                    changes: 0,
                });
            }
            EventType::Commit { end_lsn, .. } => {
                let commit = txn.take();
                if let Some(done) = &commit {
                    *last_commit_micros = Some(done.commit_micros);
                    if done.changes > 0 {
                        self.uncommitted.push(done.commit_micros);
                    }
                }
                self.transactions += 1;
                *received = Some(end_lsn.value());
                for t in &mut self.tables {
                    if !t.buffer.is_empty() {
                        t.buffer.reach(end_lsn.value());
                    }
                }
            }
            EventType::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                replica_identity,
            } => {
                let name = format!("{namespace}.{relation_name}");
                if !by_name.contains_key(&name) {
                    // pgoutput sends only published tables: this one was added to the
                    // publication while capture runs
                    self.add_table(stream, server, &namespace, &relation_name, by_name)
                        .await?;
                }
                if let Some(&t) = by_name.get(&name) {
                    relations.insert(relation_id, t);
                    let names: Vec<String> = columns.iter().map(|c| c.name.to_string()).collect();
                    let by_default = replica_identity == pg_walstream::ReplicaIdentity::Default;
                    if let Some(reason) =
                        relation_change(&self.tables[t].table, &columns, by_default)
                    {
                        let e = Error::Source(format!(
                            "table {name}: {reason}; the lake tables cannot follow that yet (its \
                             changes stay in the slot: move the table's lake folder away to copy \
                             it again)"
                        ));
                        if self.tables[t].failed.is_none() {
                            self.fail(t, &e);
                        }
                    } else if self.tables[t].failed.is_none() {
                        let known = &self.tables[t].table.config.table.columns;
                        let added: Vec<(String, u32, i32)> = columns
                            .iter()
                            .filter(|c| !known.iter().any(|k| k.name == c.name.as_ref()))
                            .map(|c| (c.name.to_string(), c.type_id, c.type_modifier))
                            .collect();
                        if !added.is_empty() {
                            let between = txn.is_none();
                            if let Err(e) =
                                self.add_columns(stream, server, t, &added, between).await
                            {
                                if self.tables[t].failed.is_none() {
                                    self.fail(t, &e);
                                }
                            }
                        }
                    }
                    self.tables[t].relation = Some(names);
                }
            }
            EventType::Insert {
                relation_oid, data, ..
            } => {
                let change = Change {
                    relation: relation_oid,
                    op: ChangeOp::Insert,
                    old: None,
                    data: &data,
                };
                self.change(stream, relations, txn, change).await;
            }
            EventType::Update {
                relation_oid,
                old_data,
                new_data,
                ..
            } => {
                let change = Change {
                    relation: relation_oid,
                    op: ChangeOp::Update,
                    old: old_data.as_ref(),
                    data: &new_data,
                };
                self.change(stream, relations, txn, change).await;
            }
            EventType::Delete {
                relation_oid,
                old_data,
                ..
            } => {
                let change = Change {
                    relation: relation_oid,
                    op: ChangeOp::Delete,
                    old: None,
                    data: &old_data,
                };
                self.change(stream, relations, txn, change).await;
            }
            EventType::Truncate { tables, .. } => {
                let Some(current) = txn.as_mut() else {
                    return Ok(());
                };
                current.seq += 1;
                current.changes += 1;
                let (lsn, seq, day) = (current.commit_lsn, current.seq, current.day);
                for name in tables.iter() {
                    let Some(&t) = by_name.get(name.as_ref()) else {
                        continue;
                    };
                    if self.tables[t].skips(lsn, seq) {
                        continue;
                    }
                    let table = self.tables[t].table.clone();
                    if table.key.is_empty() {
                        // inserts only: a TRUNCATE, like a delete, is not applied
                        tracing::warn!(table = %table.name(), "TRUNCATE of a table loaded inserts-only: not applied");
                        continue;
                    }
                    let truncated = match keep_alive(stream, live_keys(&table)).await {
                        Ok(stored) => self.tables[t].buffer.truncate(stored, lsn, seq, day),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = truncated {
                        self.fail(t, &e);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Buffers one row change of the transaction being received, when its table takes it
    /// (not failed, and not held by the lake: see [`Captured::skips`]). An update that changed
    /// the key (`old`: the old key, which pgoutput sends then) deletes the old key first, with
    /// the same change number (another key); the new key keeps the old key's unchanged TOAST
    /// values, from the run where it has them, else from the lake (a scan of the current
    /// table, the stream kept alive meanwhile: key updates of rows with TOASTed values are
    /// rare).
    async fn change(
        &mut self,
        stream: &mut LogicalReplicationStream,
        relations: &HashMap<u32, usize>,
        txn: &mut Option<Txn>,
        change: Change<'_>,
    ) {
        let Some(current) = txn.as_mut() else {
            return;
        };
        // every change of the transaction takes a number, whichever table (captured or not)
        // it belongs to: the same numbers whenever the slot sends the transaction again
        current.seq += 1;
        let Some(&t) = relations.get(&change.relation) else {
            return;
        };
        let (lsn, seq, day) = (current.commit_lsn, current.seq, current.day);
        if self.tables[t].skips(lsn, seq) {
            return;
        }
        current.changes += 1;
        let op = change.op;
        let table = self.tables[t].table.clone();
        let relation_columns = match op {
            ChangeOp::Update => self.tables[t].relation.as_deref(),
            _ => None,
        };
        let (mut values, mut unchanged) = decode_row(&table, change.data, relation_columns);
        let mut pushed = Ok(());
        if let (Some(old), false) = (change.old, table.key.is_empty()) {
            let (old_values, _) = decode_row(&table, old, None);
            if table.key.iter().any(|&c| old_values[c] != values[c]) {
                let old_key: Values = table.key.iter().map(|&c| old_values[c].clone()).collect();
                self.tables[t]
                    .buffer
                    .fill_from(&old_key, &mut values, &mut unchanged);
                if !unchanged.is_empty() {
                    // not in the run, or only as unchanged: as the lake's last commit holds it
                    let found = match self.tables[t].buffer.lake_holds(&old_key) {
                        true => {
                            let scan = stored_values(&table, &old_values, &unchanged);
                            keep_alive(stream, scan).await
                        }
                        false => Ok(None),
                    };
                    match found {
                        Ok(Some(stored)) => {
                            for (&c, value) in unchanged.iter().zip(stored) {
                                values[c] = value;
                            }
                            unchanged.clear();
                        }
                        Ok(None) => {
                            let column = &table.config.table.columns[unchanged[0]].name;
                            let e = Error::Source(format!(
                                "table {}: an update moved key {} to a new key and left the \
                                 TOASTed value of column `{column}` unchanged, but neither this \
                                 run nor the lake holds the old row's value (its changes stay \
                                 in the slot: move the table's lake folder away to copy it again)",
                                table.name(),
                                key_text(&old_key)
                            ));
                            self.fail(t, &e);
                            return;
                        }
                        Err(e) => {
                            self.fail(t, &e);
                            return;
                        }
                    }
                }
                pushed = self.tables[t].buffer.push(
                    ChangeOp::Delete,
                    old_values,
                    Vec::new(),
                    lsn,
                    seq,
                    day,
                );
            }
        }
        let buffer = &mut self.tables[t].buffer;
        let pushed = pushed.and_then(|()| buffer.push(op, values, unchanged, lsn, seq, day));
        if let Err(e) = pushed {
            self.fail(t, &e);
        }
    }

    /// Commits the buffered changes of table `t` in one run (a failure fails the table);
    /// `between`: no transaction is being received.
    async fn commit_table(
        &mut self,
        stream: &mut LogicalReplicationStream,
        t: usize,
        between: bool,
    ) {
        let fresh = TableChanges::new(self.tables[t].table.clone(), false);
        let mut buffer = std::mem::replace(&mut self.tables[t].buffer, fresh);
        let changes = buffer.rows();
        let name = self.tables[t].table.name().to_string();
        let applied = keep_alive(stream, self.apply(t, &mut buffer)).await;
        match applied {
            Ok(()) => {
                self.tables[t].report.changes += changes;
                stage_line(
                    false,
                    format_args!(
                        "{name}: {changes} changes committed up to LSN {}",
                        buffer.end().text()
                    ),
                );
                if !between {
                    // test hook: a crash after a part of a transaction is in the lake
                    crate::sink::delta::crash_point("capture-after-part");
                }
                if !self.tables[t].registered {
                    // the status updates go on while the catalog answers
                    let register = self.register(t);
                    keep_alive(stream, register).await;
                }
            }
            Err(e) => self.fail(t, &e),
        }
    }

    /// Follows columns added at the source (`added`: name, type OID, type modifier, from a
    /// Relation message of table `t`): the changes buffered under the old columns are
    /// committed first, the lake tables get the new columns (nullable, nothing backfilled:
    /// rows the source had before keep NULL there), and the table's changes from here on
    /// carry them.
    ///
    /// # Errors
    /// [`Error::Source`] reading the types; Delta errors adding the columns.
    async fn add_columns(
        &mut self,
        stream: &mut LogicalReplicationStream,
        server: &Server,
        t: usize,
        added: &[(String, u32, i32)],
        between: bool,
    ) -> Result<()> {
        if self.tables[t].table.key.is_empty() {
            let (name, _, _) = &added[0];
            return Err(inserts_only_column(self.tables[t].table.name(), name));
        }
        if !self.tables[t].buffer.is_empty() {
            self.commit_table(stream, t, between).await;
            if self.tables[t].failed.is_some() {
                // failed by the commit, with its error
                return Ok(());
            }
        }
        let mut mapped = Vec::new();
        for (name, oid, typmod) in added {
            let (type_name, kind, category) = keep_alive(stream, server.type_info(*oid)).await?;
            let (ty, known) = map_type(*oid, *typmod, &type_name, &kind, &category);
            if !known {
                tracing::warn!(table = %self.tables[t].table.name(), column = %name, "type `{type_name}` is loaded as text");
            }
            mapped.push((name.clone(), ty));
        }
        let table = with_columns(
            &self.tables[t].table,
            &mapped,
            &self.entries,
            t,
            &self.options.lake,
        )?;
        let table = Arc::new(table);
        keep_alive(stream, evolve(&table)).await?;
        let names: Vec<String> = mapped.into_iter().map(|(name, _)| name).collect();
        let captured = &mut self.tables[t];
        captured.buffer = TableChanges::new(table.clone(), false);
        captured.table = table;
        // the catalog learns the new columns at the table's next commit
        captured.registered = false;
        for name in names {
            if !captured.report.columns_added.contains(&name) {
                captured.report.columns_added.push(name);
            }
        }
        Ok(())
    }

    /// Commits every table with buffered changes (one run each), then confirms to the slot
    /// what the lake holds. `received`: the end LSN of the last whole transaction received;
    /// `between`: no transaction is being received (then, with nothing buffered, the server's
    /// own position may be confirmed).
    async fn commit(
        &mut self,
        stream: &mut LogicalReplicationStream,
        received: Option<u64>,
        between: bool,
    ) -> Result<()> {
        let pending: Vec<usize> = (0..self.tables.len())
            .filter(|&t| !self.tables[t].buffer.is_empty() && self.tables[t].failed.is_none())
            .collect();
        for t in pending {
            self.commit_table(stream, t, between).await;
        }
        let now = chrono::Utc::now().timestamp_micros();
        self.lags.extend(
            self.uncommitted
                .drain(..)
                .map(|m| ((now - m).max(0) as f64 / 1e6) as f32),
        );
        // Confirm: the last received commit, or when nothing is buffered the server's own
        // position; never past a failed table's checkpoint.
        let idle = between && self.buffered() == 0;
        let mut confirm = match (idle, received) {
            (true, _) => Some(stream.current_lsn()).filter(|l| *l > 0).max(received),
            (false, r) => r,
        };
        for t in &self.tables {
            if t.failed.is_some() {
                confirm = match (confirm, t.position) {
                    // never copied, or to be copied again (0/0): copied at the next start,
                    // whatever is confirmed
                    (c, None) => c,
                    (c, Some(l)) if l == SlotPosition::default() => c,
                    (Some(c), Some(l)) => Some(c.min(l.lsn)),
                    (None, Some(_)) => None,
                };
            }
        }
        if let Some(lsn) = confirm {
            if self.confirmed.is_none_or(|c| lsn > c) {
                stream.shared_lsn_feedback.update_flushed_lsn(lsn);
                stream.shared_lsn_feedback.update_applied_lsn(lsn);
                stream.send_feedback().await.map_err(|e| {
                    crate::source::postgres::replication_error("confirming the flush LSN", e)
                })?;
                self.confirmed = Some(lsn);
            }
        }
        Ok(())
    }
}

/// What in a Relation message of `table` its lake tables cannot follow, in words naming the
/// column: a column whose type maps to another lake type, or (with the default replica
/// identity, whose key columns are the primary key) another primary key. (A column added is
/// followed: `Run::add_columns`.)
fn relation_change(
    table: &CaptureTable,
    columns: &[pg_walstream::RelationColumn],
    by_default: bool,
) -> Option<String> {
    let known = &table.config.table.columns;
    for column in columns {
        let Some(i) = known.iter().position(|k| k.name == column.name.as_ref()) else {
            continue;
        };
        let (now, _) = map_type(column.type_id, column.type_modifier, "", "", "");
        let lake = table.types[i].lake;
        // types outside the built-in list read as text whatever they are: only a change
        // between mapped types is seen here (the next start compares the catalog's)
        if now.lake != lake && now.lake != ColumnType::String {
            return Some(format!(
                "column `{}` is now {} at the source but {lake} in the lake",
                column.name, now.lake
            ));
        }
    }
    if by_default && !table.key.is_empty() {
        let keys: Vec<&str> = columns
            .iter()
            .filter(|c| c.is_key)
            .map(|c| c.name.as_ref())
            .collect();
        let lake_keys: Vec<&str> = table.key.iter().map(|&i| known[i].name.as_str()).collect();
        if keys != lake_keys {
            return Some(format!(
                "the primary key is now ({}) at the source but ({}) in the lake",
                keys.join(", "),
                lake_keys.join(", ")
            ));
        }
    }
    None
}

/// Runs `work` while sending the server a status update every second, so the walsender does
/// not time out (`wal_sender_timeout`) while the stream is not read: a long lake write, a scan.
async fn keep_alive<T>(
    stream: &mut LogicalReplicationStream,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick() => {
                if let Err(e) = stream.send_feedback().await {
                    tracing::debug!("status update failed: {e}");
                }
            }
        }
    }
}

/// What a copy worker sends the controller.
enum Copied {
    /// Rows of table `k` (its index among the tables copied), exact at LSN `point` (its
    /// copy's consistent point).
    Rows(usize, u64, Vec<Values>),
    /// Table `k` is copied whole, exact at LSN `point`.
    Done(usize, u64),
}

/// Rows sent to the controller at once by a copy worker.
const COPY_CHUNK_ROWS: usize = 1024;

/// Copies `tables` (their index among the tables copied, the table) in the exported snapshot
/// of a new side slot `side`, on connections of its own, sending their rows to `tx` in chunks
/// of at most [`COPY_CHUNK_ROWS`] rows and `chunk_bytes` bytes of text (each table's rows
/// together, then its [`Copied::Done`]; an empty table only its `Done`), then drops the side
/// slot.
///
/// # Errors
/// [`Error::Source`] from the server; [`Error::Internal`] when the controller stopped
/// listening.
async fn copy_worker(
    url: String,
    side: String,
    publication: String,
    tables: Vec<(usize, Arc<CaptureTable>)>,
    chunk_bytes: u64,
    tx: tokio::sync::mpsc::Sender<Copied>,
) -> Result<()> {
    let send = |message| {
        let tx = tx.clone();
        async move {
            tx.send(message)
                .await
                .map_err(|_| Error::Internal("the copy's controller stopped".into()))
        }
    };
    let server = Server::connect(&url).await?;
    let list = tables.iter().map(|(_, t)| t.clone()).collect();
    let mut copy = copy_tables(&url, &server, &side, &publication, list).await?;
    let point = copy.consistent_point();
    let names: Vec<&str> = tables.iter().map(|(_, t)| t.name()).collect();
    stage_line(
        false,
        format_args!("copying {} at LSN {}", names.join(", "), lsn_text(point)),
    );
    let mut done = vec![false; tables.len()];
    let mut chunk = Vec::new();
    let mut bytes = 0u64;
    let mut current: Option<usize> = None;
    while let Some((i, values)) = copy.next().await? {
        if let Some(c) = current.filter(|&c| c != i) {
            send(Copied::Rows(tables[c].0, point, std::mem::take(&mut chunk))).await?;
            send(Copied::Done(tables[c].0, point)).await?;
            done[c] = true;
            bytes = 0;
        }
        current = Some(i);
        bytes += values.iter().flatten().map(|v| v.len() as u64).sum::<u64>();
        chunk.push(values);
        if chunk.len() >= COPY_CHUNK_ROWS || bytes >= chunk_bytes {
            send(Copied::Rows(tables[i].0, point, std::mem::take(&mut chunk))).await?;
            bytes = 0;
        }
    }
    if let Some(c) = current {
        send(Copied::Rows(tables[c].0, point, std::mem::take(&mut chunk))).await?;
        send(Copied::Done(tables[c].0, point)).await?;
        done[c] = true;
    }
    for (c, _) in done.iter().enumerate().filter(|(_, d)| !**d) {
        send(Copied::Done(tables[c].0, point)).await?;
    }
    copy.finish(&server).await
}

/// Spreads tables of `sizes` (bytes) over `workers` groups of about the same size: the
/// biggest first, each to the group with the fewest bytes (longest processing time first).
/// Returns each group's table indices, ascending.
fn spread(sizes: &[u64], workers: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut groups: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); workers.max(1)];
    for i in order {
        if let Some(group) = groups.iter_mut().min_by_key(|(bytes, g)| (*bytes, g.len())) {
            group.0 += sizes[i];
            group.1.push(i);
        }
    }
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_unstable();
            g
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// A key's values as `(1, 'a')`.
fn key_text(key: &Values) -> String {
    let values: Vec<&str> = key.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
    format!("({})", values.join(", "))
}

/// One row change of a pgoutput message.
struct Change<'a> {
    /// The table's relation id.
    relation: u32,
    op: ChangeOp,
    /// The old key or row (an update that changed the key, or REPLICA IDENTITY FULL).
    old: Option<&'a pg_walstream::RowData>,
    /// The new row (the old one for a delete).
    data: &'a pg_walstream::RowData,
}

/// Reads the stream with a deadline: a read is ended through its cancellation token, not by
/// dropping it (pg_walstream's rule: then no frame is lost). One token serves every read until
/// its timer fires, so a busy stream costs one timer per `wait`, not one per event.
struct Reader {
    stop: CancellationToken,
    wait: Duration,
    token: CancellationToken,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Reader {
    fn new(stop: &CancellationToken, wait: Duration) -> Self {
        let token = stop.child_token();
        token.cancel();
        Reader {
            stop: stop.clone(),
            wait,
            token,
            timer: None,
        }
    }

    /// The next event, or None when the current `wait` period ends first.
    async fn next(
        &mut self,
        stream: &mut LogicalReplicationStream,
    ) -> std::result::Result<Option<ChangeEvent>, ReplicationError> {
        if self.token.is_cancelled() && !self.stop.is_cancelled() {
            self.token = self.stop.child_token();
            let (token, wait) = (self.token.clone(), self.wait);
            if let Some(old) = self.timer.replace(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                token.cancel();
            })) {
                old.abort();
            }
        }
        match stream.next_event(&self.token).await {
            Ok(event) => Ok(Some(event)),
            Err(ReplicationError::Cancelled(_)) if !self.stop.is_cancelled() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

/// The history files of `table` written by the parts of a copy that stopped (runs at 0/0
/// since its last run at another position).
async fn stopped_copy_files(table: &CaptureTable) -> Result<Vec<deltalake::kernel::Remove>> {
    let Some((lake, _)) = DeltaLake::open(&table.config.table, false).await? else {
        return Ok(Vec::new());
    };
    let text = SlotPosition::default().text();
    let paths: std::collections::HashSet<String> =
        crate::sink::delta::log::files_of_runs_at(&lake.history, &text)
            .await?
            .into_iter()
            .collect();
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    crate::sink::delta::files_removed(&lake.history, &paths, true)
}

/// The values of `columns` (configured column indices) of the live row of `table`'s current
/// table whose key is that of `row` (values in configured order, PostgreSQL's text), as text
/// (None: no live row). A scan of the table (for an update that moved a row to a new key and
/// left TOASTed values unchanged, which only the lake holds).
///
/// # Errors
/// Lake errors; a key value the table's types cannot hold.
async fn stored_values(
    table: &Arc<CaptureTable>,
    row: &Values,
    columns: &[usize],
) -> Result<Option<Values>> {
    let key = crate::source::postgres::buffer::typed_key(table, row)?;
    let Some((lake, _)) = DeltaLake::open(&table.config.table, false).await? else {
        return Ok(None);
    };
    let Some(mut rows) = crate::sink::delta::scan_stream(&lake.current).await? else {
        return Ok(None);
    };
    let names = &table.config.table.columns;
    let column = |batch: &deltalake::arrow::array::RecordBatch, c: usize| {
        batch
            .column_by_name(&names[c].name)
            .cloned()
            .ok_or_else(|| {
                Error::Internal(format!("current table without column {}", names[c].name))
            })
    };
    while let Some(batch) = rows.next().await {
        let batch = batch?;
        let keys = table
            .key
            .iter()
            .map(|&c| column(&batch, c))
            .collect::<Result<Vec<_>>>()?;
        let keys: Vec<&deltalake::arrow::array::ArrayRef> = keys.iter().collect();
        let ops = batch
            .column_by_name(OPERATION)
            .map(|c| cast(c, &DataType::Utf8))
            .transpose()?;
        for (r, k) in key_texts(&keys)?.into_iter().enumerate() {
            let deleted = ops
                .as_ref()
                .is_some_and(|o| o.as_string::<i32>().value(r) == "D");
            if k != key || deleted {
                continue;
            }
            let mut found = Vec::new();
            for &c in columns {
                let text = cast(&column(&batch, c)?, &DataType::Utf8)?;
                let valid = text.is_valid(r);
                found.push(valid.then(|| text.as_string::<i32>().value(r).to_string()));
            }
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The keys of `table` live in its current table, as text (for a TRUNCATE's deletes).
async fn live_keys(table: &CaptureTable) -> Result<Vec<Values>> {
    let Some((lake, _)) = DeltaLake::open(&table.config.table, false).await? else {
        return Ok(Vec::new());
    };
    let Some(mut rows) = crate::sink::delta::scan_stream(&lake.current).await? else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    while let Some(batch) = rows.next().await {
        let batch = batch?;
        let ops = batch
            .column_by_name(OPERATION)
            .map(|c| cast(c, &DataType::Utf8))
            .transpose()?;
        let columns = table
            .key
            .iter()
            .map(|&c| {
                let name = &table.config.table.columns[c].name;
                batch.column_by_name(name).ok_or_else(|| {
                    Error::Internal(format!("current table without key column {name}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for (row, key) in key_texts(&columns)?.into_iter().enumerate() {
            let deleted = ops
                .as_ref()
                .is_some_and(|o| o.as_string::<i32>().value(row) == "D");
            if !deleted {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_spread_biggest_first_over_the_lightest_worker() {
        // 100 alone; 60 + 30 + 10 against it
        let groups = spread(&[10, 100, 60, 30], 2);
        assert_eq!(groups, vec![vec![1], vec![0, 2, 3]]);
        // every table in exactly one group, none empty, never more groups than tables
        let sizes = [5, 5, 5, 0, 0];
        let groups = spread(&sizes, 8);
        assert_eq!(groups.len(), sizes.len());
        let mut all: Vec<usize> = groups.concat();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
        assert_eq!(spread(&[7, 7, 7, 7], 2), vec![vec![0, 2], vec![1, 3]]);
        assert_eq!(spread(&[], 3), Vec::<Vec<usize>>::new());
    }
}
