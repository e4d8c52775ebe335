//! `tributary sync`: the controller that loads change sources into lake tables.
//!
//! For each `<schema>/<table>` folder that is active in the tables file (see
//! `config::tables`), the controller opens the folder as a [`LandingZone`] and drives it like
//! any [`ChangeSource`] ([`run_source`]): it asks the source what is pending past the
//! checkpoint the lake has committed, reads the pending changes in source order and applies
//! them in one run (see `merge`), whose commit records the source's new checkpoint. What a
//! landing zone counts as pending (new files, reloads, superseded files) is told in
//! `source::changelog::landing`.
//!
//! Tables run in parallel, at most `jobs` at a time. A failing table does not stop the others;
//! its error is in its summary and [`SyncSummary::failed`] counts it. Re-running is always safe:
//! applied files are never applied again, and an interrupted run is completed first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::merge::{apply, ApplyRequest, ApplySummary};
use super::spill::{collect, RunChanges, RunMemory, Split};
use crate::config::tables::{TableEntry, TablesFile};
use crate::config::ChangelogTable;
use crate::core::change::ChangeBatch;
use crate::core::checkpoint::{Checkpoint, Committed};
use crate::core::time::epoch_days;
use crate::error::{Error, Result};
use crate::report::progress::stage_line;
use crate::sink::delta::DeltaLake;
use crate::sink::{conflict_pause, Sink, TableRole, CONFLICT_ATTEMPTS};
use crate::source::changelog::landing::{discover, LandingZone};
use crate::source::changelog::remote::StoreLanding;
use crate::source::{ChangeSource, Pending};

/// Flags of `tributary sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Landing root: one folder per `<schema>/<table>`.
    pub landing: PathBuf,
    /// Lake root (a folder or an object-store prefix): each table lands in
    /// `<lake>/<schema>/<table>/`. The tables file's `storage_options` are added to it.
    pub lake: crate::config::storage::LakeRoot,
    /// The tables file (see `config::tables`).
    pub tables_file: PathBuf,
    /// Tables loaded at the same time (at least 1).
    pub jobs: usize,
    /// Business date of the run: `eff_start_date` of changes without a commit time.
    pub run_date: NaiveDate,
    /// Draw a progress line per table on the terminal.
    pub progress: bool,
    /// Folder for the copies of a landing zone in an object store and for the changes a run
    /// spills (each pass and run makes and removes its own `tributary-spill-*` folder there);
    /// None: the system temporary folder.
    pub spill_dir: Option<PathBuf>,
    /// Bytes of changes the pass holds in memory, shared by the tables loaded at the same
    /// time (`--memory-limit`; see `changelog::spill`).
    pub memory_limit: u64,
}

/// What happened to one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableSync {
    /// `<schema>.<table>`.
    pub table: String,
    /// `applied`, `up-to-date` or `failed`.
    pub status: String,
    /// One line for people: what the run did, or why it failed.
    pub message: String,
    /// Files applied (or recorded as superseded) by this run.
    pub files: usize,
    /// The run began with a full load that replaced the current table.
    pub reload: bool,
    /// Under a reload: change files applied by earlier runs whose effect the new full load
    /// replaces (they are older than it).
    pub replaced_files: usize,
    /// Under a reload: change files older than the new full load, recorded as superseded
    /// without being applied.
    pub superseded_files: usize,
    /// Seconds spent reading (parsing, casting, hashing) the files; of a streamed full load,
    /// reading up to the point it streamed (the rest is in its apply's `merge_secs`).
    pub read_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why a full load streamed to the writers was read a second time, taking the last change
    /// per key (a key came twice): its files were read and written twice.
    pub stream_restarted: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// For a landing zone in an object store: the objects this pass copied from the store to
    /// read them (or to compare a `LOAD` file's content), and their bytes.
    pub copied: Option<CopiedFromStore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What the applied run did (None: nothing to apply, or failed).
    pub apply: Option<ApplySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The error that failed the table.
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The catalog registration after the run (the tables file's `catalog`); its error does
    /// not fail the table, whose run stays committed.
    pub catalog: Option<crate::sink::catalog::Registered>,
}

/// Objects a table's pass copied from an object-store landing zone.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CopiedFromStore {
    /// Objects copied.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// What one `sync` pass did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncSummary {
    /// One entry per table synced, in name order.
    pub tables: Vec<TableSync>,
    /// Landing folders not active in the tables file: set `active: true` to load them.
    pub inactive: Vec<String>,
    /// Active tables whose landing folder does not exist.
    pub missing: Vec<String>,
    /// Tables that failed (their error is in their entry).
    pub failed: usize,
    /// Tables synced whose catalog registration failed (the error is in their entry).
    pub catalog_failed: usize,
    /// Wall time of the pass, seconds.
    pub elapsed_secs: f64,
}

/// The URL of a landing root given as an object-store URL (`s3://bucket/landing`); None for
/// a local folder.
///
/// # Errors
/// [`Error::Usage`] for a URL that does not parse.
pub fn landing_url(landing: &std::path::Path) -> Result<Option<url::Url>> {
    match landing.to_str() {
        Some(text) if crate::source::extract::remote::is_url(text) => url::Url::parse(text)
            .map(Some)
            .map_err(|e| Error::Usage(format!("LANDING_ROOT {text}: not a URL: {e}"))),
        _ => Ok(None),
    }
}

/// Runs one sync pass over the landing zone.
///
/// # Errors
/// Only errors that concern the whole pass: an unreadable landing root or tables file. Errors
/// of one table are reported in its [`TableSync`].
pub async fn sync(options: &SyncOptions) -> Result<SyncSummary> {
    let started = Instant::now();
    let tables = TablesFile::load(&options.tables_file)?;
    // a landing zone in an object store: listed there, its files copied into a spill folder
    // of this pass (removed with it; by a later pass or run when the process is killed)
    let remote = match landing_url(&options.landing)? {
        Some(url) => {
            let spill_dir = options.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
            let owned = crate::core::spill::owned_folder(&spill_dir)?;
            Some(Arc::new(StoreLanding::open(
                &url,
                tables.storage_options.to_map(),
                owned,
            )?))
        }
        None => None,
    };
    let found = match &remote {
        Some(landing) => landing.discover()?,
        None => discover(&options.landing)?,
    };
    let inactive: Vec<String> = found
        .iter()
        .filter(|s| !tables.find(s).is_some_and(|e| e.active))
        .cloned()
        .collect();
    let active: Vec<(usize, TableEntry)> = tables
        .tables
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, e)| e.active)
        .collect();
    let missing: Vec<String> = active
        .iter()
        .filter(|(_, e)| {
            !found
                .iter()
                .any(|f| tables.find(f).is_some_and(|x| x.name() == e.name()))
        })
        .map(|(_, e)| e.source.clone())
        .collect();
    for name in &inactive {
        tracing::info!(table = %name, "landing folder is not active in the tables file; skipped");
    }
    let bars = MultiProgress::with_draw_target(if options.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{spinner} {prefix:<28} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let runnable: Vec<(usize, TableEntry)> = active
        .into_iter()
        .filter(|(_, e)| !missing.contains(&e.source))
        .collect();
    let mut shared = options.clone();
    if !tables.storage_options.is_empty() {
        shared.lake = shared.lake.with_options(tables.storage_options.clone());
    }
    let shared = Arc::new(shared);
    let catalog = tables.catalog.clone();
    // the limit is shared by the tables loaded at once
    let at_once = options.jobs.clamp(1, runnable.len().max(1)) as u64;
    let memory = Arc::new(RunMemory {
        limit: (options.memory_limit / at_once).max(1),
        spill_dir: options.spill_dir.clone().unwrap_or_else(std::env::temp_dir),
        spill: true,
    });
    let mut results: Vec<TableSync> = futures::stream::iter(runnable)
        .map(|(index, entry)| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(entry.name());
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            let options = shared.clone();
            let catalog = catalog.clone();
            let remote = remote.clone();
            let memory = memory.clone();
            async move {
                // Each table on its own task: the CPU-bound steps of one table do not hold up
                // the others.
                let task = {
                    let (entry, bar) = (entry.clone(), bar.clone());
                    tokio::spawn(async move {
                        let mut done =
                            sync_table(&options, remote, &memory, index, &entry, &bar).await?;
                        if let Some(catalog) = &catalog {
                            bar.set_message("registering in the catalog");
                            let spec = entry.changelog_table(index, &options.lake)?.table;
                            done.catalog = Some(
                                crate::sink::catalog::register_or_report(catalog, &spec).await,
                            );
                        }
                        Ok(done)
                    })
                };
                let outcome = task
                    .await
                    .unwrap_or_else(|e| Err(Error::Internal(format!("table task failed: {e}"))));
                let result = match outcome {
                    Ok(done) => done,
                    Err(e) => TableSync {
                        table: entry.name(),
                        status: "failed".into(),
                        message: e.to_string(),
                        files: 0,
                        reload: false,
                        replaced_files: 0,
                        superseded_files: 0,
                        read_secs: 0.0,
                        stream_restarted: None,
                        copied: None,
                        apply: None,
                        error: Some(e.to_string()),
                        catalog: None,
                    },
                };
                bar.finish_with_message(format!("{}: {}", result.status, result.message));
                if result.status == "failed" {
                    tracing::warn!(table = %result.table, "failed: {}", result.message);
                } else {
                    stage_line(
                        !bar.is_hidden(),
                        format_args!("{}: {}: {}", result.table, result.status, result.message),
                    );
                }
                result
            }
        })
        .buffer_unordered(options.jobs.max(1))
        .collect()
        .await;
    results.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(SyncSummary {
        failed: results.iter().filter(|r| r.status == "failed").count(),
        catalog_failed: results
            .iter()
            .filter(|r| r.catalog.as_ref().is_some_and(|c| c.error.is_some()))
            .count(),
        tables: results,
        inactive,
        missing,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// What [`run_source`] did: what the source had pending, how long reading took, and the
/// applied run (None: nothing was pending).
#[derive(Debug, Clone)]
pub struct SourceRun {
    /// What the source had pending.
    pub pending: Pending,
    /// Seconds spent reading (parsing, casting, hashing) the changes.
    pub read_secs: f64,
    /// The run, when one was applied.
    pub applied: Option<ApplySummary>,
    /// Why a streamed full load was read a second time (a key twice, say), when it was.
    pub restarted: Option<String>,
}

/// Runs one change source into its table once: asks `source` what is pending past the
/// checkpoint the lake has committed, streams the pending changes, applies them in one run
/// whose commit records the source's checkpoint, then confirms the checkpoint to the source.
/// The tables are created by the first run that has changes. `bar` shows the step.
///
/// A run that loses its commit to another writer of the table (two syncs at once) asks the
/// source again what is pending past the winner's checkpoint, up to
/// [`CONFLICT_ATTEMPTS`] times. A full load streamed to the writers that turns out not to be
/// one of distinct inserts ([`Error::Restart`], see `changelog::spill`) is planned and read
/// again, taking the last change per key (held, or split by key past half its memory); the
/// run says why ([`SourceRun::restarted`]).
///
/// # Errors
/// The source's errors (a bad row names its file, line and column), lake errors,
/// [`Error::Conflict`] after the last attempt; on any error nothing is committed (see
/// `merge::apply`).
pub async fn run_source<S: ChangeSource>(
    source: &mut S,
    config: &ChangelogTable,
    run_date: NaiveDate,
    memory: &RunMemory,
    bar: &ProgressBar,
) -> Result<SourceRun> {
    let (mut attempt, mut stream, mut restarted) = (1, true, None);
    loop {
        match run_source_once(source, config, run_date, memory, bar, stream).await {
            Ok(mut done) => {
                done.restarted = restarted;
                return Ok(done);
            }
            Err(Error::Conflict { table, seq, other }) if attempt < CONFLICT_ATTEMPTS => {
                tracing::warn!(%table, run = seq, %other, attempt, "another run committed first; re-planning on top of it");
                conflict_pause(attempt).await;
                attempt += 1;
            }
            Err(Error::Restart(reason)) if stream => {
                tracing::info!(table = %config.table.name, %reason, "the full load cannot be streamed: reading it again, taking the last change per key");
                stage_line(
                    !bar.is_hidden(),
                    format_args!(
                        "{}: the full load cannot be streamed ({reason}): reading it again, taking the last change per key",
                        config.table.name
                    ),
                );
                stream = false;
                restarted = Some(reason);
            }
            done => return done,
        }
    }
}

/// One attempt of [`run_source`]; `stream`: a full load may be streamed to the writers.
///
/// The source's stream is read by a future of its own, joined with the one that collects and
/// applies the changes: a streamed load is still being read while it is applied. That reader
/// hands on the source's checkpoint and history removes once the stream has ended.
async fn run_source_once<S: ChangeSource>(
    source: &mut S,
    config: &ChangelogTable,
    run_date: NaiveDate,
    memory: &RunMemory,
    bar: &ProgressBar,
    stream: bool,
) -> Result<SourceRun> {
    let existing = DeltaLake::open(&config.table, false).await?;
    let (committed, base_run) = match &existing {
        Some((lake, _)) => (lake.committed().await?, lake.opened_run()),
        None => (Committed::default(), 0),
    };
    let pending = source.plan(&committed)?;
    let mut done = SourceRun {
        pending,
        read_secs: 0.0,
        applied: None,
        restarted: None,
    };
    if pending.is_empty() {
        return Ok(done);
    }
    let unit = source.unit();
    bar.set_message(format!("reading {} {unit}(s)", pending.units));
    let reading = Instant::now();
    // A run splits its changes past half its memory limit and spills them
    // (`changelog::spill`): in read order where it takes no last change per key, else by key
    // (a merge into existing tables keeping the set of its changed keys, to read its impacted
    // files once; a first run reads none). A full load of `LOAD` files alone into tables
    // without tombstones (which could make a row stale) is streamed to the writers instead,
    // when `stream` and the run may spill.
    let split = match (pending.append || config.insert_only, pending.reload) {
        (true, _) => Split::InOrder,
        (false, true) => Split::ByKey,
        (false, false) if existing.is_none() => Split::ByKey,
        (false, false) => Split::Merge,
    };
    let streams = stream && memory.spill && pending.loads_only && split == Split::ByKey;
    let split = match &existing {
        None if streams => Split::Stream,
        Some((lake, _)) if streams && !keeps_tombstones(lake).await? => Split::Stream,
        _ => split,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChangeBatch>>(2);
    let (end_tx, end_rx) = tokio::sync::oneshot::channel();
    let reader_source = &mut *source;
    let reader = async move {
        let mut changes = reader_source.changes();
        loop {
            let batch = tokio::select! {
                batch = changes.next() => batch,
                // the consumer gone (its run failed): reading stops
                () = tx.closed() => return,
            };
            let Some(batch) = batch else { break };
            let failed = batch.is_err();
            // the consumer gone, or the error handed on: reading stops
            if tx.send(batch).await.is_err() || failed {
                return;
            }
        }
        drop(changes);
        let _ = end_tx.send((reader_source.checkpoint(), reader_source.history_removes()));
    };
    let applying = async {
        // the channel's end, owned: a streamed load keeps it past this borrow of the source
        let received = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        })
        .boxed();
        let changes = collect(received, memory, split).await?;
        done.read_secs = reading.elapsed().as_secs_f64();
        let rows = changes.rows();
        stage_line(
            !bar.is_hidden(),
            format_args!(
                "{}: read {} changes from {} {unit}(s) in {:.2} s{}",
                config.table.name,
                rows,
                pending.units,
                done.read_secs,
                match &changes {
                    RunChanges::Held(_) => String::new(),
                    RunChanges::Spilled(_) =>
                        "; split and spilled (over half of its memory)".into(),
                    RunChanges::Streamed(_) =>
                        "; a large full load: the rest streams to the writers as it is read".into(),
                }
            ),
        );
        // a streamed load's checkpoint is known once the apply has read the rest
        let (checkpoint, history_removes, source_end) = match changes {
            RunChanges::Streamed(_) => (Checkpoint::Files(Vec::new()), Vec::new(), Some(end_rx)),
            _ => {
                let (checkpoint, removes) = end_rx.await.map_err(|_| {
                    Error::Internal("the source's stream ended without its checkpoint".into())
                })?;
                (checkpoint, removes, None)
            }
        };
        bar.set_message(format!("applying {rows} changes"));
        let mut lake = match existing {
            Some((lake, _)) => lake,
            None => DeltaLake::create(&config.table).await?.0,
        };
        apply(
            &mut lake,
            ApplyRequest {
                config,
                changes,
                reload: pending.reload,
                append: pending.append,
                history_removes,
                checkpoint,
                input_bytes: pending.bytes,
                source_end,
                run_date,
                base_run,
                memory: memory.clone(),
                bar: Some(bar),
            },
        )
        .await
    };
    let ((), summary) = tokio::join!(reader, applying);
    let summary = summary?;
    // the reader has ended: the checkpoint the run committed
    source.confirm(&source.checkpoint()).await?;
    done.applied = Some(summary);
    Ok(done)
}

/// Whether `lake` has a tombstones table holding files (a streamed load could not tell a
/// stale row by them).
async fn keeps_tombstones(lake: &DeltaLake) -> Result<bool> {
    match lake.open_follower(TableRole::Tombstones, None).await? {
        Some(table) => Ok(table.snapshot()?.log_data().num_files() > 0),
        None => Ok(false),
    }
}

async fn sync_table(
    options: &SyncOptions,
    remote: Option<Arc<StoreLanding>>,
    memory: &RunMemory,
    index: usize,
    entry: &TableEntry,
    bar: &ProgressBar,
) -> Result<TableSync> {
    let config = entry.changelog_table(index, &options.lake)?;
    bar.set_message("listing files");
    let days = epoch_days(options.run_date);
    let mut source = match remote {
        Some(landing) => {
            LandingZone::open_remote(landing, &entry.source, &config, days, bar.clone())?
                .with_memory_limit(memory.limit)
        }
        None => LandingZone::open(
            &options.landing.join(&entry.source),
            &config,
            days,
            bar.clone(),
        )?
        .with_memory_limit(memory.limit),
    };
    let done = run_source(&mut source, &config, options.run_date, memory, bar).await?;
    let mut result = TableSync {
        table: entry.name(),
        status: "up-to-date".into(),
        message: "no new files".into(),
        files: 0,
        reload: done.pending.reload,
        replaced_files: done.pending.replaced,
        superseded_files: done.pending.skipped,
        read_secs: done.read_secs,
        stream_restarted: done.restarted.clone(),
        copied: source
            .copied_from_store()
            .map(|(objects, bytes)| CopiedFromStore { objects, bytes }),
        apply: None,
        error: None,
        catalog: None,
    };
    // what the pass downloaded, also when it applied nothing (a `LOAD` copied to compare its
    // content)
    let copied_note = match result.copied.filter(|c| c.objects > 0) {
        Some(copied) => format!(
            "; {} object(s), {}, copied from the store",
            copied.objects,
            crate::report::mib(copied.bytes)
        ),
        None => String::new(),
    };
    let Some(summary) = done.applied else {
        result.message.push_str(&copied_note);
        return Ok(result);
    };
    let files = done.pending.units + done.pending.skipped;
    result.status = "applied".into();
    result.files = files;
    result.message = format!(
        "run {}: {} files, {} changes: {} inserted, {} updated, {} deleted{}{}{}; {} of {} files rewritten{}",
        summary.run_seq,
        files,
        summary.changes_read,
        summary.inserted,
        summary.updated,
        summary.deleted,
        if summary.ignored_deletes > 0 {
            format!(", {} deletes of unknown keys ignored", summary.ignored_deletes)
        } else {
            String::new()
        },
        if summary.stale > 0 {
            format!(
                ", {} stale changes skipped (older than their key's stored row; by file: {})",
                summary.stale,
                summary
                    .stale_files
                    .iter()
                    .map(|(f, n)| format!("{f} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        },
        if config.insert_only {
            format!(
                " (no primary key: inserts only, {} updates/deletes skipped)",
                summary.skipped_without_key
            )
        } else {
            String::new()
        },
        summary.files_rewritten,
        summary.current_files,
        match summary.files_marked {
            0 => String::new(),
            n => format!(
                ", {n} given deletion vectors ({} replaced or deleted rows marked, none copied)",
                summary.rows_marked
            ),
        },
    );
    if done.pending.reload {
        result.message.push_str(" (full load: table replaced");
        if done.pending.replaced + done.pending.skipped > 0 {
            result.message.push_str(&format!(
                "; it supersedes {} change files applied before and {} not yet applied",
                done.pending.replaced, done.pending.skipped
            ));
        }
        result.message.push(')');
    }
    if summary.streamed {
        result.message.push_str(&format!(
            "; streamed to the writers as read (a full load of over 64 MiB, or half the table's share of --memory-limit), its keys checked distinct{}",
            match summary.spilled_bytes {
                0 => String::new(),
                n => format!(" ({} of key digests spilled)", crate::report::mib(n)),
            }
        ));
    } else if summary.spilled_bytes > 0 {
        result.message.push_str(&format!(
            "; applied in {} partitions of changes, {} spilled (over half of the table's share of --memory-limit)",
            summary.partitions,
            crate::report::mib(summary.spilled_bytes)
        ));
    }
    if let Some(reason) = &result.stream_restarted {
        result.message.push_str(&format!(
            "; the full load was streamed, then read again taking the last change per key ({reason})"
        ));
    }
    result.message.push_str(&copied_note);
    result.apply = Some(summary);
    Ok(result)
}
