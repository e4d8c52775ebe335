//! `tributary run`: one business day of snapshot CDC, from extract files to committed tables.

mod stages;

use stages::{Diffed, Joined, Stages};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::NaiveDate;
use deltalake::DeltaTable;
use tokio::runtime::RuntimeFlavor;
use tracing::Instrument;

use crate::config::{ExtractType, TableConfig};
use crate::diff::Op;
use crate::error::{Error, Result};
use crate::join::{self, JoinContext};
use crate::lake::current::{self, DataFiles};
use crate::lake::{
    self, write_files, writer_properties, Lake, Planned, RunRecord, TableWriters, CURRENT, HISTORY,
    REJECTS,
};
use crate::plan::{self, MemoryPlan};
use crate::progress::Progress;
use crate::schema::table_schema;
use crate::source::{self, list_input_files, PendingFingerprint};
use crate::summary::{MemorySummary, RunSummary, TableSummary};

/// Flags of `tributary run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Allow a date older than the latest applied one, and a full extract that deletes more
    /// than `max_delete_fraction` of the table.
    pub force: bool,
    /// Replace the latest run (same business date, different input).
    pub replace: bool,
}

/// Days since 1970-01-01 (Arrow `Date32`).
pub fn epoch_days(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
}

/// Runs one business day: reads `input`, diffs it against the current table, and commits the
/// current and history tables (see `lake` for the commit contract).
///
/// Memory stays within about `memory_limit` (see `plan`): both sides are partitioned by
/// keyhash, partitions past the budget spill to `spill_dir`, and data files are written as the
/// diff produces rows. A later run of CSV input whose current table fits in memory as an index
/// (`plan::probe_fits`; no `partitions` in the config) is streamed instead: each batch is
/// diffed as it is read, in file order (`probe`). Needs a multi-threaded tokio runtime.
///
/// # Errors
/// [`Error::Refused`] for a repeated date with other input, an older date or a mass delete
/// (unless forced); [`Error::BadRow`] for bad input under `on_error: fail`; config, lake and I/O
/// errors. On any error no table has been changed (a crash between commits is completed by the
/// next run).
pub async fn run(
    config: &TableConfig,
    input: &Path,
    business_date: NaiveDate,
    options: RunOptions,
) -> Result<RunSummary> {
    let started = Instant::now();
    if tokio::runtime::Handle::current().runtime_flavor() != RuntimeFlavor::MultiThread {
        return Err(Error::Internal(
            "tributary::run needs a multi-threaded tokio runtime (its writers run beside the diff)"
                .into(),
        ));
    }
    if config.has_temp_current_path {
        tracing::info!("temp_current_table_path is not used: Delta commits replace the current table atomically");
    }
    let date = epoch_days(business_date);
    let date_text = business_date.format("%Y-%m-%d").to_string();
    let files = list_input_files(input, config.format)?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    // Read on its own thread beside the run; needed first when this date was applied before.
    let mut fingerprint = PendingFingerprint::start(&files)?;
    // Open without creating: a run that fails on its input leaves no trace in the lake.
    let existing = Lake::open(config, false).await?;
    let recovered = existing.as_ref().and_then(|(_, r)| r.clone());
    let mut summary = RunSummary {
        table: config.name.clone(),
        business_date: date_text.clone(),
        recovered,
        input_files: files.len(),
        current: TableSummary {
            path: config.current_url.to_string(),
            ..Default::default()
        },
        history: TableSummary {
            path: config.history_url.to_string(),
            ..Default::default()
        },
        ..Default::default()
    };
    let (seq, last) = match &existing {
        Some((lake, _)) => (
            lake::log::txn_version(&lake.current, lake.app_id())
                .await?
                .unwrap_or(0)
                + 1,
            lake.last_run().await?,
        ),
        None => (1, None),
    };
    let mut replacing = None;
    if let Some(last) = &last {
        let same_input = date_text == last.business_date && {
            summary.fingerprint = tokio::task::block_in_place(|| fingerprint.get())?;
            last.fingerprint == summary.fingerprint
        };
        if same_input {
            summary.status = "no-op".into();
            summary.run_seq = Some(last.seq);
            summary.message = format!(
                "already applied from the same input (run {}); nothing to do",
                last.seq
            );
            summary.elapsed_secs = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        if date_text == last.business_date {
            if !options.replace {
                return Err(Error::Refused(format!(
                    "{date_text} was already applied (run {}) from different input; pass --replace to replace that run",
                    last.seq
                )));
            }
            replacing = Some(last.clone());
        } else if date_text < last.business_date && !options.force {
            return Err(Error::Refused(format!(
                "{date_text} is older than the latest applied date {}; pass --force to apply it anyway",
                last.business_date
            )));
        }
    }
    if options.replace && replacing.is_none() {
        return Err(Error::Refused(format!(
            "--replace: {date_text} is not the latest applied date, nothing to replace"
        )));
    }

    let (base, lake) = match existing {
        Some((lake, _)) => (base_table(&lake, replacing.as_ref()).await?, Some(lake)),
        None => (None, None),
    };
    let base_version = base.as_ref().and_then(|t| t.version());
    // The base's data files, footers read: their row counts size the plan.
    let data_files = match &base {
        Some(table) => Some(DataFiles::open(table).await?),
        None => None,
    };
    let rows_per_file = data_files
        .as_ref()
        .map_or_else(Vec::new, DataFiles::rows_per_file);
    let base_rows: u64 = rows_per_file.iter().sum();
    let input_estimate: u64 = files
        .iter()
        .map(|f| plan::input_estimate(f.format, f.size))
        .sum();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let memory = MemoryPlan::with_partitions(
        config.memory_limit,
        input_estimate,
        base_rows * plan::CURRENT_ROW_BYTES,
        cores,
        config.partitions,
    );
    // A later run whose current table fits in memory as an index is streamed past it.
    let incoming_rows = match (&lake, &data_files, config.partitions) {
        (Some(_), Some(_), None) => source::estimate_csv_rows(&files)?,
        _ => None,
    };
    let memory = match incoming_rows {
        Some(rows) if plan::probe_fits(config.memory_limit, base_rows, rows) => memory.streamed(),
        _ => memory,
    };
    tracing::debug!(?memory, ?incoming_rows, "memory plan");
    let schema = table_schema(&config.typed_columns());
    let context = JoinContext {
        config,
        files: &files,
        incoming_schema: join::incoming_schema(config),
        table_schema: schema.clone(),
        current_schema: join::current_schema(&schema)?,
        run_date: date,
    };
    // A single key column is unique in both tables' files (history: per business date).
    let properties = writer_properties(
        config.compression,
        memory.row_group_bytes as usize,
        &config.unique_columns(),
    );
    let progress = Progress::bytes("reading", total_bytes);
    let stages = Stages {
        context: &context,
        progress: &progress,
        rows_per_file: &rows_per_file,
        cores,
    };
    // Tables this run creates (and removes again if it fails): those of a first run here,
    // a new rejects table just before it is created.
    let mut created = Vec::new();
    let (mut lake, mut writers, joined) = match (lake, &data_files) {
        (Some(lake), Some(data_files)) if memory.streamed => {
            let writers = TableWriters::start(&lake, properties, memory.writer_tasks(cores));
            let joined = stages.streamed(data_files, &writers).await;
            (lake, writers, joined)
        }
        (lake, data_files) => {
            // Read before the tables are created: a run failing on its input leaves no trace.
            let partitioned = stages.partition(data_files.as_ref(), memory).await?;
            let lake = match lake {
                Some(lake) => lake,
                None => {
                    created = lake::missing_tables(config);
                    Lake::open(config, true)
                        .await
                        .inspect_err(|_| lake::remove_tables(&created))?
                        .ok_or_else(|| Error::Internal("tables not created".into()))?
                        .0
                }
            };
            let writers = TableWriters::start(&lake, properties, memory.writer_tasks(cores));
            let joined = stages.diff(partitioned, memory, &writers);
            (lake, writers, joined)
        }
    };
    let Joined {
        read_stats,
        diffed,
        picks,
        current_rows,
        spill,
        mut times,
    } = joined;
    let outcome = check_outcome(config, options, diffed, current_rows);
    // Only the gone rows are left to send: the writers of the tables they do not go to finish
    // their last files meanwhile.
    writers.tx.end(config.extract_type == ExtractType::Full);
    // Whole rows of the keys that left the extract, read back by position: D rows into
    // history (full extract), X rows into current (delta extract).
    let gone = Instant::now();
    let outcome = match (outcome, &data_files) {
        (Ok(mut diffed), Some(files)) if picks.count() > 0 => {
            let (tx, op, written) = match config.extract_type {
                ExtractType::Full => (
                    writers.tx.history.clone(),
                    Op::Delete,
                    &mut diffed.history_rows_written,
                ),
                ExtractType::Delta => (
                    writers.tx.current.clone(),
                    Op::NotSupplied,
                    &mut diffed.current_rows_written,
                ),
            };
            *written += picks.count();
            let span = tracing::info_span!("gone", rows = picks.count());
            files
                .read_picked(picks, schema.clone(), cores, tx, move |batch| {
                    join::gone_rows(batch, op, date)
                })
                .instrument(span)
                .await
                .map_err(|e| match e {
                    Error::Internal(m) if m == current::RECEIVER_GONE => lake::writer_gone(),
                    e => e,
                })
                .map(|()| diffed)
        }
        (outcome, _) => outcome,
    };
    times.diff_secs += gone.elapsed().as_secs_f64();
    let flushing = Instant::now();
    let (current_adds, history_adds) = writers.finish().await;
    times.write_secs = flushing.elapsed().as_secs_f64();
    let (diffed, current_adds, history_adds) = match (outcome, current_adds, history_adds) {
        (Ok(d), Ok(c), Ok(h)) => (d, c, h),
        (outcome, c, h) => {
            let written = [c.as_deref(), h.as_deref()].map(|adds| adds.unwrap_or_default());
            abandon(&lake, written, &created).await;
            // The diff's own error first, unless it only saw a writer stop: then the writer's.
            if let Err(e) = outcome {
                if !matches!(&e, Error::Internal(m) if m == lake::WRITER_GONE) {
                    return Err(e);
                }
                c?;
                h?;
                return Err(e);
            }
            c?;
            h?;
            return Err(Error::Internal("run failed without an error".into()));
        }
    };
    let mut rejects = read_stats.rejects;
    rejects.extend(diffed.rejects);
    rejects.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));

    let writing = Instant::now();
    if !rejects.is_empty() {
        let path = config.rejects_url.to_file_path().ok();
        created.extend(path.filter(|p| !p.exists()));
    }
    // Everything before the commit that can still fail: its error discards the data files
    // written so far (none of them is referenced yet) and the tables a first run created.
    let prepared = async {
        let fingerprint = tokio::task::block_in_place(|| fingerprint.get())?;
        let current_removes = lake::all_files_removed(&lake.current)?;
        let history_removes = match &replacing {
            Some(run) => replaced_history_files(&lake.history, run).await?,
            None => Vec::new(),
        };
        let rejects_written = match rejects.is_empty() {
            true => None,
            false => {
                let table = lake.follower(REJECTS).await?;
                let batch = crate::rejects::batch(&rejects, date, seq)?;
                let properties =
                    writer_properties(config.compression, memory.row_group_bytes as usize, &[]);
                let adds = write_files(&table, vec![batch], properties).await?;
                Some((table, adds))
            }
        };
        Ok::<_, Error>((
            fingerprint,
            current_removes,
            history_removes,
            rejects_written,
        ))
    }
    .await;
    let (fingerprint, current_removes, history_removes, rejects_written) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            abandon(&lake, [&current_adds, &history_adds], &created).await;
            return Err(e);
        }
    };
    let mut followers = vec![(
        CURRENT,
        lake.current.clone(),
        Planned {
            adds: current_adds,
            removes: current_removes,
        },
    )];
    if let Some((table, adds)) = rejects_written {
        let planned = Planned {
            adds,
            removes: Vec::new(),
        };
        followers.push((REJECTS, table, planned));
    }
    let history_plan = Planned {
        adds: history_adds,
        removes: history_removes,
    };
    times.write_secs += writing.elapsed().as_secs_f64();

    let committing = Instant::now();
    summary.fingerprint = fingerprint.clone();
    let record = RunRecord {
        seq,
        business_date: date_text.clone(),
        fingerprint,
        current_base_version: base_version,
        history_version: None,
    };
    fill_table_summary(
        &mut summary.current,
        &followers[0].2,
        diffed.current_rows_written,
    );
    fill_table_summary(
        &mut summary.history,
        &history_plan,
        diffed.history_rows_written,
    );
    if let Some((_, _, planned)) = followers.get(1) {
        let mut t = TableSummary {
            path: config.rejects_url.to_string(),
            ..Default::default()
        };
        fill_table_summary(&mut t, planned, rejects.len() as u64);
        summary.rejects = Some(t);
    }
    let versions = lake
        .commit_run(record, history_plan, followers)
        .instrument(tracing::info_span!("commit", run = seq))
        .await?;
    summary.current.version = versions.get(CURRENT).copied();
    summary.history.version = versions.get(HISTORY).copied();
    if let Some(r) = summary.rejects.as_mut() {
        r.version = versions.get(REJECTS).copied();
    }
    let commit_secs = committing.elapsed().as_secs_f64();

    summary.status = "applied".into();
    summary.run_seq = Some(seq);
    summary.message = match &replacing {
        Some(r) => format!("applied as run {seq}, replacing run {}", r.seq),
        None => format!("applied as run {seq}"),
    };
    summary.rows_read = read_stats.rows_read;
    summary.rows_rejected = rejects.len() as u64;
    summary.counts = diffed.counts;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.rows_per_sec = read_stats.rows_read as f64 / summary.elapsed_secs.max(1e-9);
    times.commit_secs = commit_secs;
    summary.stages = times;
    summary.memory = Some(MemorySummary {
        plan: memory,
        spill,
        peak_rss_bytes: peak_rss_bytes(),
    });
    Ok(summary)
}

/// Applies the mass-delete guard to a finished diff.
fn check_outcome(
    config: &TableConfig,
    options: RunOptions,
    joined: Result<Diffed>,
    current_rows: u64,
) -> Result<Diffed> {
    let diffed = joined?;
    if config.extract_type == ExtractType::Full && current_rows > 0 && !options.force {
        let fraction = diffed.counts.deleted as f64 / current_rows as f64;
        if fraction > config.max_delete_fraction {
            return Err(Error::Refused(format!(
                "this full extract deletes {} of {current_rows} rows ({:.1}%), more than max_delete_fraction {}; \
                 is the extract truncated? pass --force to apply it",
                diffed.counts.deleted,
                fraction * 100.0,
                config.max_delete_fraction
            )));
        }
    }
    Ok(diffed)
}

/// Peak resident set size of this process (Linux `VmHWM`), bytes; None elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn fill_table_summary(t: &mut TableSummary, planned: &Planned, rows: u64) {
    t.rows_written = rows;
    t.bytes_written = planned.bytes_added();
    t.files_written = planned.adds.len() as u64;
}

/// The current table state the diff runs against: the latest one, or for `--replace` the one
/// the replaced run diffed against (None: empty).
async fn base_table(lake: &Lake, replacing: Option<&RunRecord>) -> Result<Option<DeltaTable>> {
    let Some(run) = replacing else {
        return Ok(Some(lake.current.clone()));
    };
    let Some(version) = run.current_base_version else {
        return Ok(None);
    };
    let mut table = lake.current.clone();
    table.load_version(version as _).await?;
    Ok(Some(table))
}

/// Undoes a run that failed before its commit: deletes the data files its current and
/// history writers finished (none is referenced yet) and the tables it created.
async fn abandon(lake: &Lake, written: [&[deltalake::kernel::Add]; 2], created: &[PathBuf]) {
    lake::discard_files(&lake.current, written[0]).await;
    lake::discard_files(&lake.history, written[1]).await;
    lake::remove_tables(created);
}

/// Remove actions for the history files a replaced run added.
async fn replaced_history_files(
    history: &DeltaTable,
    run: &RunRecord,
) -> Result<Vec<deltalake::kernel::Remove>> {
    let version = run.history_version.ok_or_else(|| Error::Lake {
        table: HISTORY.into(),
        reason: format!(
            "run {} did not record its history version; cannot replace it",
            run.seq
        ),
    })?;
    let commit = lake::log::read_commit(history, version)
        .await?
        .ok_or_else(|| Error::Lake {
            table: HISTORY.into(),
            reason: format!(
                "the log of version {version} (run {}) is gone; cannot replace it",
                run.seq
            ),
        })?;
    let added: HashSet<String> = commit.adds.into_iter().map(|a| a.path).collect();
    Ok(history
        .snapshot()?
        .log_data()
        .iter()
        .filter(|f| added.contains(f.path().as_ref()))
        .map(|f| f.remove_action(true))
        .collect())
}
