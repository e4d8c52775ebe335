//! `tributary run`: one business day of snapshot CDC, from extract files to committed tables.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use chrono::NaiveDate;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::Add;
use deltalake::DeltaTable;
use tokio::runtime::RuntimeFlavor;
use tracing::Instrument;

use super::join::{self, JoinContext};
use super::plan::{self, MemoryPlan};
use super::stages::{Diffed, Joined, Stages};
use super::summary::{MemorySummary, RunSummary, StageTimes, TableSummary};
use crate::config::{ExtractType, SnapshotOptions, TableConfig, TableSpec};
use crate::core::op::Op;
use crate::core::schema::table_schema;
use crate::core::spill::SpillStats;
use crate::core::time::epoch_days;
use crate::error::{Error, Result};
use crate::report::memory::peak_rss_bytes;
use crate::report::progress::{Progress, Stage};
use crate::sink::delta::current::{DataFiles, Picks};
use crate::sink::delta::{
    self, rejects, writer_properties, DeltaLake, RunCommit, RunRecord, RunTransaction, Senders,
};
use crate::sink::{conflict_pause, Sink, TableRole, CONFLICT_ATTEMPTS};
use crate::source::extract::{self, list_input_files, InputFile, PendingFingerprint, ReadStats};

/// Flags of `tributary run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Allow a date older than the latest applied one, and a full extract that deletes more
    /// than `max_delete_fraction` of the table.
    pub force: bool,
    /// Replace the latest run (same business date, different input).
    pub replace: bool,
}

/// Runs one business day: reads `input`, diffs it against the current table, and commits the
/// current and history tables through one run transaction (the sink contract, `sink/mod.rs`).
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
///
/// Two writers of one table at once (an overlapping cron): the one whose commit loses the race
/// re-plans on top of the winner, up to [`CONFLICT_ATTEMPTS`] times (re-reading the tables,
/// re-checking the date rules and idempotence: the same input already applied is then a
/// no-op), and otherwise fails with [`Error::Conflict`] naming the other run.
pub async fn run(
    config: &TableConfig,
    input: &Path,
    business_date: NaiveDate,
    options: RunOptions,
) -> Result<RunSummary> {
    if tokio::runtime::Handle::current().runtime_flavor() != RuntimeFlavor::MultiThread {
        return Err(Error::Internal(
            "tributary::run needs a multi-threaded tokio runtime (its writers run beside the diff)"
                .into(),
        ));
    }
    if config.has_temp_current_path {
        tracing::info!("temp_current_table_path is not used: Delta commits replace the current table atomically");
    }
    let mut attempt = 1;
    loop {
        match run_once(config, input, business_date, options).await {
            Err(Error::Conflict { table, seq, other }) if attempt < CONFLICT_ATTEMPTS => {
                tracing::warn!(%table, run = seq, %other, attempt, "another run committed first; re-planning on top of it");
                conflict_pause(attempt).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// One attempt of [`run`].
async fn run_once(
    config: &TableConfig,
    input: &Path,
    business_date: NaiveDate,
    options: RunOptions,
) -> Result<RunSummary> {
    let started = Instant::now();
    let spec = &config.table;
    let date = epoch_days(business_date);
    let date_text = business_date.format("%Y-%m-%d").to_string();
    let listing = list_input_files(input, config.source.format)?;
    let files = listing.files;
    // Read on its own thread beside the run; needed first when this date was applied before.
    let mut fingerprint = PendingFingerprint::start(&files)?;
    // Open without creating: a run that fails on its input leaves no trace in the lake.
    let existing = DeltaLake::open(spec, false).await?;
    let recovered = existing.as_ref().and_then(|(_, r)| r.clone());
    let mut summary = RunSummary::new(spec, &date_text, recovered, files.len());
    summary.skipped_files = listing.skipped;
    let last = match &existing {
        // The run a re-run repeats or `--replace` replaces: never a compaction.
        Some((lake, _)) => lake.last_applied_run().await?,
        None => None,
    };
    let mut input_fingerprint = || tokio::task::block_in_place(|| fingerprint.get());
    let replacing = match decide(last.as_ref(), &date_text, options, &mut input_fingerprint)? {
        Decision::NoOp { seq, fingerprint } => {
            summary.fingerprint = fingerprint;
            summary.run_id = last.map(|r| r.run_id).unwrap_or_default();
            summary.status = "no-op".into();
            summary.run_seq = Some(seq);
            summary.message =
                format!("already applied from the same input (run {seq}); nothing to do");
            summary.elapsed_secs = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        Decision::Apply { replacing } => replacing.map(|r| *r),
    };

    let day = Day {
        config,
        options,
        base_run: existing.as_ref().map_or(0, |(lake, _)| lake.opened_run()),
        files: &files,
        date,
        date_text,
        replacing,
        started,
        threads: crate::core::threads::get(),
    };
    day.apply(existing.map(|(lake, _)| lake), fingerprint, summary)
        .await
}

/// A business day to apply: what [`run`] decided, for the stages and the commit.
struct Day<'a> {
    config: &'a TableConfig,
    options: RunOptions,
    /// The run the tables recorded when opened (0: no tables): the run's base.
    base_run: i64,
    files: &'a [InputFile],
    /// Business date, days since 1970-01-01.
    date: i32,
    date_text: String,
    /// The run `--replace` replaces.
    replacing: Option<RunRecord>,
    started: Instant,
    threads: usize,
}

/// What the stages of a day leave for its commit.
struct Staged {
    diffed: Diffed,
    read_stats: ReadStats,
    spill: SpillStats,
    times: StageTimes,
    memory: MemoryPlan,
    base_version: Option<u64>,
}

impl Day<'_> {
    /// Diffs the input against the base (the current table, or the replaced run's) and sends
    /// the output rows to the run transaction's writers, then commits.
    async fn apply(
        self,
        lake: Option<DeltaLake>,
        fingerprint: PendingFingerprint,
        summary: RunSummary,
    ) -> Result<RunSummary> {
        let (config, files, date, threads) = (self.config, self.files, self.date, self.threads);
        let spec = &config.table;
        let snapshot = &config.snapshot;
        let (base, lake) = match lake {
            Some(lake) => (
                base_table(&lake, self.replacing.as_ref()).await?,
                Some(lake),
            ),
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
        let streamable = lake.is_some() && data_files.is_some();
        let memory = memory_plan(snapshot, files, base_rows, streamable, threads)?;
        let schema = table_schema(&spec.typed_columns());
        let context = JoinContext {
            config,
            files,
            incoming_schema: join::incoming_schema(config),
            table_schema: schema.clone(),
            current_schema: join::current_schema(&schema)?,
            run_date: date,
        };
        // A single key column is unique in both tables' files (history: per business date).
        let properties = writer_properties(
            spec.lake.compression,
            memory.row_group_bytes as usize,
            &spec.unique_columns(),
        );
        let total_bytes: u64 = files.iter().map(|f| f.size).sum();
        let progress = Progress::bytes("reading", total_bytes);
        let largest_row_group = data_files
            .as_ref()
            .map_or(0, DataFiles::largest_row_group_bytes);
        let stages = Stages {
            context: &context,
            progress: &progress,
            rows_per_file: &rows_per_file,
            scan_tasks: memory.row_group_tasks(largest_row_group),
        };
        let writer_tasks = memory.writer_tasks();
        let (lake, mut run, joined) = match (lake, &data_files) {
            (Some(mut lake), Some(data_files)) if memory.streamed => {
                let mut run = lake.begin(self.base_run, properties, writer_tasks).await?;
                let joined = stages.streamed(data_files, run.senders()?).await;
                (lake, run, joined)
            }
            (lake, data_files) => {
                // Read before the tables are created: a run failing on its input leaves no trace.
                let partitioned = stages.partition(data_files.as_ref(), memory).await?;
                let mut lake = match lake {
                    Some(lake) => lake,
                    None => DeltaLake::create(spec).await?.0,
                };
                let mut run = lake.begin(self.base_run, properties, writer_tasks).await?;
                let joined = stages.diff(partitioned, memory, run.senders()?);
                (lake, run, joined)
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
        let outcome = check_outcome(config, self.options, diffed, current_rows);
        // Only the gone rows are left to send: the writers of the tables they do not go to finish
        // their last files meanwhile.
        let senders = run.senders()?;
        senders.end(snapshot.extract_type == ExtractType::Full);
        let gone = Instant::now();
        let outcome = match (outcome, &data_files) {
            (Ok(diffed), Some(files)) if picks.count() > 0 => {
                let read_back = GoneRows {
                    files,
                    picks,
                    schema: &schema,
                    extract: snapshot.extract_type,
                    date,
                    tasks: memory.row_group_tasks(largest_row_group),
                };
                read_back.send(senders, diffed).await
            }
            (outcome, _) => outcome,
        };
        times.diff_secs += gone.elapsed().as_secs_f64();
        let flushing = Instant::now();
        let stage = Stage::start("write");
        let diffed = run.finish_writes(outcome).await?;
        times.write_secs = flushing.elapsed().as_secs_f64();
        stage.done("data files of current and history");
        let staged = Staged {
            diffed,
            read_stats,
            spill,
            times,
            memory,
            base_version,
        };
        self.commit(lake, run, fingerprint, staged, summary).await
    }

    /// Writes the rejects, then commits the run with its fingerprint and the files it replaces,
    /// and completes the summary.
    async fn commit(
        &self,
        mut lake: DeltaLake,
        mut run: RunTransaction,
        fingerprint: PendingFingerprint,
        staged: Staged,
        mut summary: RunSummary,
    ) -> Result<RunSummary> {
        let Staged {
            mut diffed,
            read_stats,
            spill,
            mut times,
            memory,
            base_version,
        } = staged;
        let (spec, date, seq) = (&self.config.table, self.date, run.seq());
        let run_id = run.id().to_string();
        let mut fingerprint = fingerprint;
        let mut rejects = read_stats.rejects;
        rejects.extend(std::mem::take(&mut diffed.rejects));
        rejects.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));

        let writing = Instant::now();
        // Everything before the commit that can still fail: its error abandons the run (the data
        // files written so far are deleted).
        let prepared = async {
            let fingerprint = tokio::task::block_in_place(|| fingerprint.get())?;
            // the files read, and fingerprinted, must still be the ones listed
            for file in self.files {
                let listed = (file.size, file.modified_ms, file.file_id);
                extract::files::as_listed(&file.path, listed)?;
            }
            let current_removes = delta::all_files_removed(&lake.current)?;
            let history_removes = match &self.replacing {
                Some(run) => replaced_history_files(&lake.history, run).await?,
                None => Vec::new(),
            };
            Ok::<_, Error>((fingerprint, current_removes, history_removes))
        }
        .await;
        let (fingerprint, current_removes, history_removes) = run.guard(prepared).await?;
        if !rejects.is_empty() {
            let batch = run.guard(rejects::batch(&rejects, date, seq)).await?;
            let properties =
                writer_properties(spec.lake.compression, memory.row_group_bytes as usize, &[]);
            run.write_follower(&lake, TableRole::Rejects, vec![batch], properties)
                .await?;
        }
        fill_table_summaries(&mut summary, &run, &diffed, rejects.len() as u64, spec);
        times.write_secs += writing.elapsed().as_secs_f64();

        let committing = Instant::now();
        let stage = Stage::start("commit");
        summary.fingerprint = fingerprint.clone();
        // The change data feed's comparison spills in a folder of this run, with its owner
        // file (removed by a later run if this one is killed).
        let feed_spill = match crate::sink::delta::change_feed::enabled(&lake.current) {
            Ok(true) => {
                let folder = crate::core::spill::owned_folder(&self.config.snapshot.spill_dir);
                Some(run.guard(folder).await?)
            }
            _ => None,
        };
        let commit = RunCommit {
            business_date: self.date_text.clone(),
            fingerprint,
            current_base_version: base_version,
            current_removes,
            current_marked: Vec::new(),
            history_removes,
            checkpoint: None,
            counts: Some(diffed.counts),
            change_feed_memory: feed_spill.as_ref().map(|folder| {
                (
                    self.config.snapshot.memory_limit,
                    folder.path().to_path_buf(),
                )
            }),
        };
        let versions = lake
            .commit(run, commit)
            .instrument(tracing::info_span!("commit", run = seq))
            .await?;
        summary.current.version = versions.current;
        summary.history.version = versions.history;
        if let Some(r) = summary.rejects.as_mut() {
            r.version = versions.rejects;
        }
        let commit_secs = committing.elapsed().as_secs_f64();
        let version = |v: Option<u64>| v.map_or("unchanged".to_string(), |v| v.to_string());
        stage.done(format_args!(
            "run {seq}, current version {}, history version {}",
            version(versions.current),
            version(versions.history)
        ));

        summary.status = "applied".into();
        summary.run_seq = Some(seq);
        summary.run_id = run_id;
        summary.message = match &self.replacing {
            Some(r) => format!("applied as run {seq}, replacing run {}", r.seq),
            None => format!("applied as run {seq}"),
        };
        summary.rows_read = read_stats.rows_read;
        summary.rows_rejected = rejects.len() as u64;
        summary.counts = diffed.counts;
        summary.elapsed_secs = self.started.elapsed().as_secs_f64();
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
}

/// What the date and idempotence rules decide for a run (DESIGN.md, "Idempotence").
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// The same input was applied for this date by run `seq`: nothing to do.
    NoOp { seq: i64, fingerprint: String },
    /// Apply the run, replacing the latest run (`--replace`) or not.
    Apply { replacing: Option<Box<RunRecord>> },
}

/// The date and idempotence rules: the same date with the same input (by `fingerprint`, read
/// only when the date is the latest one) is a no-op; the same date with other input needs
/// `--replace`; an older date needs `--force`; `--replace` needs the latest date.
///
/// # Errors
/// [`Error::Refused`] naming the rule; the fingerprint's errors.
fn decide(
    last: Option<&RunRecord>,
    date_text: &str,
    options: RunOptions,
    fingerprint: &mut dyn FnMut() -> Result<String>,
) -> Result<Decision> {
    let mut replacing = None;
    if let Some(last) = last {
        if date_text == last.business_date {
            let fingerprint = fingerprint()?;
            if last.fingerprint == fingerprint {
                return Ok(Decision::NoOp {
                    seq: last.seq,
                    fingerprint,
                });
            }
            if !options.replace {
                return Err(Error::Refused(format!(
                    "{date_text} was already applied (run {}) from different input; pass --replace to replace that run",
                    last.seq
                )));
            }
            replacing = Some(Box::new(last.clone()));
        } else if date_text < last.business_date.as_str() && !options.force {
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
    Ok(Decision::Apply { replacing })
}

/// The run's memory plan (see `plan`): partitions sized from the input and the base, or, for a
/// later run (`streamable`) of CSV input whose current table fits in memory as an index,
/// streamed past it.
///
/// # Errors
/// [`Error::Input`] when a file cannot be sampled.
fn memory_plan(
    snapshot: &SnapshotOptions,
    files: &[InputFile],
    base_rows: u64,
    streamable: bool,
    threads: usize,
) -> Result<MemoryPlan> {
    let input_estimate: u64 = files
        .iter()
        .map(|f| plan::input_estimate(f.format, f.size))
        .sum();
    let memory = MemoryPlan::with_partitions(
        snapshot.memory_limit,
        input_estimate,
        base_rows * plan::CURRENT_ROW_BYTES,
        threads,
        snapshot.partitions,
    );
    let incoming_rows = match (streamable, snapshot.partitions) {
        (true, None) => extract::estimate_csv_rows(files)?,
        _ => None,
    };
    let memory = match incoming_rows {
        Some(rows) if plan::probe_fits(snapshot.memory_limit, base_rows, rows) => memory.streamed(),
        _ => memory,
    };
    tracing::debug!(?memory, ?incoming_rows, "memory plan");
    Ok(memory)
}

/// The rows of keys that left the extract, read back whole by position from the base's data
/// files: D rows into history (full extract), X rows into current (delta extract).
struct GoneRows<'a> {
    files: &'a DataFiles,
    picks: Picks,
    schema: &'a SchemaRef,
    extract: ExtractType,
    /// The run's business date, days since 1970-01-01.
    date: i32,
    /// Row groups read at once ([`MemoryPlan::row_group_tasks`]).
    tasks: usize,
}

impl GoneRows<'_> {
    /// Sends the rows to their writer and counts them in `diffed`.
    async fn send(self, senders: &Senders, mut diffed: Diffed) -> Result<Diffed> {
        let (tx, op, written) = match self.extract {
            ExtractType::Full => (
                senders.history.clone(),
                Op::Delete,
                &mut diffed.history_rows_written,
            ),
            ExtractType::Delta => (
                senders.current.clone(),
                Op::NotSupplied,
                &mut diffed.current_rows_written,
            ),
        };
        *written += self.picks.count();
        let span = tracing::info_span!("gone", rows = self.picks.count());
        let date = self.date;
        self.files
            .read_picked(
                self.picks,
                self.schema.clone(),
                self.tasks,
                tx,
                move |batch| join::gone_rows(batch, op, date),
            )
            .instrument(span)
            .await?;
        Ok(diffed)
    }
}

/// Applies the mass-delete guard to a finished diff.
fn check_outcome(
    config: &TableConfig,
    options: RunOptions,
    joined: Result<Diffed>,
    current_rows: u64,
) -> Result<Diffed> {
    let diffed = joined?;
    let snapshot = &config.snapshot;
    if snapshot.extract_type == ExtractType::Full && current_rows > 0 && !options.force {
        let fraction = diffed.counts.deleted as f64 / current_rows as f64;
        if fraction > snapshot.max_delete_fraction {
            return Err(Error::Refused(format!(
                "this full extract deletes {} of {current_rows} rows ({:.1}%), more than max_delete_fraction {}; \
                 is the extract truncated? pass --force to apply it",
                diffed.counts.deleted,
                fraction * 100.0,
                snapshot.max_delete_fraction
            )));
        }
    }
    Ok(diffed)
}

/// The rows, files and bytes each table gets from the run.
fn fill_table_summaries(
    summary: &mut RunSummary,
    run: &RunTransaction,
    diffed: &Diffed,
    rejects: u64,
    spec: &TableSpec,
) {
    fill_table_summary(
        &mut summary.current,
        run.written(TableRole::Current),
        diffed.current_rows_written,
    );
    fill_table_summary(
        &mut summary.history,
        run.written(TableRole::History),
        diffed.history_rows_written,
    );
    if rejects > 0 {
        let mut t = TableSummary {
            path: spec.lake.rejects_url.to_string(),
            ..Default::default()
        };
        fill_table_summary(&mut t, run.written(TableRole::Rejects), rejects);
        summary.rejects = Some(t);
    }
}

fn fill_table_summary(t: &mut TableSummary, adds: &[Add], rows: u64) {
    t.rows_written = rows;
    t.bytes_written = adds.iter().map(|a| a.size as u64).sum();
    t.files_written = adds.len() as u64;
}

/// The current table state the diff runs against: the latest one, or for `--replace` the one
/// the replaced run diffed against (None: empty).
async fn base_table(lake: &DeltaLake, replacing: Option<&RunRecord>) -> Result<Option<DeltaTable>> {
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

/// Remove actions for the history files a replaced run added.
async fn replaced_history_files(
    history: &DeltaTable,
    run: &RunRecord,
) -> Result<Vec<deltalake::kernel::Remove>> {
    let version = run.history_version.ok_or_else(|| Error::Lake {
        table: TableRole::History.as_str().into(),
        reason: format!(
            "run {} did not record its history version; cannot replace it",
            run.seq
        ),
    })?;
    let commit = delta::log::read_commit(history, version)
        .await?
        .ok_or_else(|| Error::Lake {
            table: TableRole::History.as_str().into(),
            reason: format!(
                "the log of version {version} (run {}) is gone; cannot replace it",
                run.seq
            ),
        })?;
    let added: HashSet<String> = commit.adds.into_iter().map(|a| a.path).collect();
    delta::files_removed(history, &added, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, date: &str, fingerprint: &str) -> RunRecord {
        RunRecord {
            source_lsn: None,
            seq,
            run_id: String::new(),
            business_date: date.into(),
            fingerprint: fingerprint.into(),
            current_base_version: None,
            history_version: None,
            ..Default::default()
        }
    }

    fn options(force: bool, replace: bool) -> RunOptions {
        RunOptions { force, replace }
    }

    #[test]
    fn the_date_and_idempotence_rules() {
        let last = record(4, "2019-06-19", "abc");
        let mut reads = 0;
        let mut same = || {
            reads += 1;
            Ok("abc".to_string())
        };
        // The same date and input: a no-op naming the run that applied it.
        let d = decide(Some(&last), "2019-06-19", options(false, false), &mut same).unwrap();
        assert_eq!(
            d,
            Decision::NoOp {
                seq: 4,
                fingerprint: "abc".into()
            }
        );
        // A later date: applied; the input is not read for it.
        let d = decide(Some(&last), "2019-06-20", options(false, false), &mut same).unwrap();
        assert_eq!(d, Decision::Apply { replacing: None });
        assert_eq!(reads, 1);
        let mut other = || Ok("xyz".to_string());
        // The same date, other input: refused, or replaced with --replace.
        let err = decide(Some(&last), "2019-06-19", options(false, false), &mut other);
        assert!(matches!(err, Err(Error::Refused(m)) if m.contains("--replace")));
        let d = decide(Some(&last), "2019-06-19", options(false, true), &mut other).unwrap();
        assert_eq!(
            d,
            Decision::Apply {
                replacing: Some(Box::new(last.clone()))
            }
        );
        // An older date: refused unless forced.
        let err = decide(Some(&last), "2019-06-18", options(false, false), &mut other);
        assert!(matches!(err, Err(Error::Refused(m)) if m.contains("--force")));
        let d = decide(Some(&last), "2019-06-18", options(true, false), &mut other).unwrap();
        assert_eq!(d, Decision::Apply { replacing: None });
        // --replace needs the latest date; a first run has none.
        for last in [Some(&last), None] {
            let err = decide(last, "2019-06-20", options(false, true), &mut other);
            assert!(matches!(err, Err(Error::Refused(m)) if m.contains("nothing to replace")));
        }
        let d = decide(None, "2019-06-18", options(false, false), &mut other).unwrap();
        assert_eq!(d, Decision::Apply { replacing: None });
    }
}
