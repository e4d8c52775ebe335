//! `tributary run`: one business day of snapshot CDC, from extract files to committed tables.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use chrono::NaiveDate;
use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::Add;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::DeltaTable;
use tokio::runtime::RuntimeFlavor;
use tokio::sync::mpsc::Sender;
use tracing::Instrument;

use crate::config::{ExtractType, TableConfig};
use crate::diff::{Op, OpCounts};
use crate::error::{Error, Result};
use crate::join::{self, JoinContext, PartitionDiff};
use crate::lake::current::{self, DataFiles, Picks};
use crate::lake::{
    self, write_files, write_stream, writer_properties, Lake, Planned, RunRecord, CURRENT, HISTORY,
    REJECTS,
};
use crate::plan::{self, MemoryPlan};
use crate::probe::Probe;
use crate::progress::Progress;
use crate::schema::{table_schema, KEYHASH};
use crate::source::{self, list_input_files, PendingFingerprint, ReadStats, Reject, RowErrors};
use crate::spill::{Partitioner, SharedStore, SpillStats, SpillStore};
use crate::summary::{MemorySummary, RunSummary, StageTimes, TableSummary};

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
    let (mut lake, writers, joined) = match (lake, &data_files) {
        (Some(lake), Some(data_files)) if memory.streamed => {
            let writers = Writers::start(&lake, properties);
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
            let writers = Writers::start(&lake, properties);
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
    // Whole rows of the keys that left the extract, read back by position: D rows into
    // history (full extract), X rows into current (delta extract).
    let gone = Instant::now();
    let outcome = match (outcome, &data_files) {
        (Ok(mut diffed), Some(files)) if picks.count() > 0 => {
            let (tx, op, written) = match config.extract_type {
                ExtractType::Full => (
                    writers.history_tx.clone(),
                    Op::Delete,
                    &mut diffed.history_rows_written,
                ),
                ExtractType::Delta => (
                    writers.current_tx.clone(),
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
                    Error::Internal(m) if m == current::RECEIVER_GONE => writer_gone(),
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
                if !matches!(&e, Error::Internal(m) if m == WRITER_GONE) {
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

/// Side indices of the run's [`SpillStore`].
const INCOMING: usize = 0;
const CURRENT_SIDE: usize = 1;

/// The two table writers of a run: the channel into each and its task ([`write_stream`]).
struct Writers {
    current_tx: Sender<RecordBatch>,
    history_tx: Sender<RecordBatch>,
    current: tokio::task::JoinHandle<Result<Vec<Add>>>,
    history: tokio::task::JoinHandle<Result<Vec<Add>>>,
}

impl Writers {
    fn start(lake: &Lake, properties: WriterProperties) -> Self {
        let (current_tx, current_rx) = tokio::sync::mpsc::channel(2);
        let (history_tx, history_rx) = tokio::sync::mpsc::channel(2);
        let current = tokio::spawn(write_stream(
            lake.current.clone(),
            current_rx,
            properties.clone(),
        ));
        let history = tokio::spawn(write_stream(lake.history.clone(), history_rx, properties));
        Writers {
            current_tx,
            history_tx,
            current,
            history,
        }
    }

    /// Closes both channels and waits for the writers: the `add` actions of their files.
    async fn finish(self) -> (Result<Vec<Add>>, Result<Vec<Add>>) {
        drop((self.current_tx, self.history_tx));
        (
            lake::join_writer(self.current).await,
            lake::join_writer(self.history).await,
        )
    }
}

/// What the diff of either kind (partitioned or streamed) leaves for the rest of the run.
struct Joined {
    /// Under a streamed run's failure: empty (the error is in `diffed`).
    read_stats: ReadStats,
    diffed: Result<Diffed>,
    /// Current rows of keys absent from the extract, to be read back whole.
    picks: Picks,
    /// Rows of the current table scanned.
    current_rows: u64,
    spill: SpillStats,
    /// Read, scan and diff times.
    times: StageTimes,
}

/// Both sides of a partitioned run, held in (or spilled from) the store.
struct Partitioned {
    store: SpillStore,
    read_stats: ReadStats,
    current_rows: u64,
    times: StageTimes,
}

/// What the read, scan and diff stages of a run share.
struct Stages<'a> {
    context: &'a JoinContext<'a>,
    progress: &'a Progress,
    rows_per_file: &'a [u64],
    cores: usize,
}

impl Stages<'_> {
    /// Reads the input (stage 1) and scans the current table's join columns and row positions
    /// (stage 2), both partitioned by keyhash into a store of `memory`'s plan.
    ///
    /// # Errors
    /// Input errors (bad rows under `on_error: fail`), lake and spill I/O errors.
    async fn partition(
        &self,
        data_files: Option<&DataFiles>,
        memory: MemoryPlan,
    ) -> Result<Partitioned> {
        let context = self.context;
        let config = context.config;
        let partitioner = Partitioner::new(memory.partitions);
        let mut store = SpillStore::new(
            vec![
                context.incoming_schema.clone(),
                context.current_schema.clone(),
            ],
            memory.partitions,
            memory.store_budget_bytes as usize,
            &config.spill_dir,
        )?;
        let mut times = StageTimes::default();
        let reading = Instant::now();
        let read_stats = {
            let bytes: u64 = context.files.iter().map(|f| f.size).sum();
            let files = context.files.len();
            let _span = tracing::info_span!("read", files, bytes).entered();
            let keyhash_at = context.incoming_schema.index_of(KEYHASH)?;
            let mut sink = |batch| -> Result<()> {
                let batch = join::incoming_batch(&context.incoming_schema, batch)?;
                for (p, piece) in partitioner.split(&batch, keyhash_at)? {
                    store.push(INCOMING, p, piece)?;
                }
                Ok(())
            };
            tokio::task::block_in_place(|| {
                source::read(config, context.files, self.progress, &mut sink)
            })?
        };
        self.progress.finish();
        times.read_secs = reading.elapsed().as_secs_f64();
        let scanning = Instant::now();
        if let Some(files) = data_files {
            let keyhash_at = context.current_schema.index_of(KEYHASH)?;
            self.scan(files, |batch| {
                for (p, piece) in partitioner.split(&batch, keyhash_at)? {
                    store.push(CURRENT_SIDE, p, piece)?;
                }
                Ok(())
            })
            .await?;
        }
        times.scan_secs = scanning.elapsed().as_secs_f64();
        Ok(Partitioned {
            current_rows: store.rows(CURRENT_SIDE),
            store,
            read_stats,
            times,
        })
    }

    /// Stage 3 of a partitioned run: diffs the partitions, sending rows to `writers`.
    fn diff(&self, partitioned: Partitioned, memory: MemoryPlan, writers: &Writers) -> Joined {
        let diffing = Instant::now();
        let store = partitioned.store.into_shared();
        let picks = Mutex::new(Picks::new(self.rows_per_file));
        let diffed = {
            let _span = tracing::info_span!("diff", partitions = memory.partitions).entered();
            tokio::task::block_in_place(|| {
                diff_partitions(
                    self.context,
                    &store,
                    memory,
                    &picks,
                    writers.current_tx.clone(),
                    writers.history_tx.clone(),
                )
            })
        };
        // Poisoned only by a panicked worker, whose error `diffed` already holds.
        let picks = picks
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut times = partitioned.times;
        times.diff_secs = diffing.elapsed().as_secs_f64();
        Joined {
            read_stats: partitioned.read_stats,
            diffed,
            picks,
            current_rows: partitioned.current_rows,
            spill: store.stats(),
            times,
        }
    }

    /// A streamed run's stages: the current table's join columns and row positions into an
    /// in-memory index (the scan), then each incoming batch, as it is read in file order,
    /// probed against it and its rows sent to `writers` (read and diff at once: the diff time
    /// is the gone rows' alone). A failure of either is in the result's `diffed`.
    async fn streamed(&self, data_files: &DataFiles, writers: &Writers) -> Joined {
        let context = self.context;
        let config = context.config;
        let rows: u64 = self.rows_per_file.iter().sum();
        let mut times = StageTimes::default();
        let mut probe = Probe::new(config.extract_type, context.run_date, rows as usize);
        let mut current_rows = 0u64;
        let scanning = Instant::now();
        let scanned = self
            .scan(data_files, |batch| {
                current_rows += batch.num_rows() as u64;
                join::index_current(&mut probe, &batch)
            })
            .await;
        times.scan_secs = scanning.elapsed().as_secs_f64();
        let reading = Instant::now();
        let mut diffed = Diffed::default();
        let mut errors = RowErrors::new(config.on_error);
        let read = scanned.and_then(|()| {
            let bytes: u64 = context.files.iter().map(|f| f.size).sum();
            let files = context.files.len();
            let _span = tracing::info_span!("read", files, bytes, streamed = true).entered();
            let mut sink = |batch| -> Result<()> {
                let mut out = PartitionDiff::default();
                context.probe(&mut probe, batch, &mut errors, &mut out)?;
                diffed.current_rows_written += send(&writers.current_tx, out.current)?;
                diffed.history_rows_written += send(&writers.history_tx, out.history)?;
                Ok(())
            };
            tokio::task::block_in_place(|| {
                source::read(config, context.files, self.progress, &mut sink)
            })
        });
        self.progress.finish();
        times.read_secs = reading.elapsed().as_secs_f64();
        let mut picks = Picks::new(self.rows_per_file);
        let (read_stats, diffed) = match read {
            Ok(read_stats) => {
                let finished = probe.finish();
                diffed.counts = finished.counts;
                diffed.rejects = errors.rejects;
                let picked = finished
                    .gone
                    .iter()
                    .try_for_each(|&(file, row)| picks.pick(file, row));
                (read_stats, picked.map(|()| diffed))
            }
            Err(e) => (ReadStats::default(), Err(e)),
        };
        Joined {
            read_stats,
            diffed,
            picks,
            current_rows,
            spill: SpillStats::default(),
            times,
        }
    }

    /// Streams the current table's join columns and row positions
    /// ([`DataFiles::scan_keys`]) into `consume`, decoding a row group per core.
    ///
    /// # Errors
    /// Lake errors of the scan; errors of `consume`.
    async fn scan(
        &self,
        files: &DataFiles,
        mut consume: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2 * self.cores);
        let producer = files.scan_keys(self.context.current_schema.clone(), self.cores, tx);
        let consumer = async {
            while let Some(batch) = rx.recv().await {
                tokio::task::block_in_place(|| consume(batch))?;
            }
            Ok::<(), Error>(())
        };
        let rows: u64 = self.rows_per_file.iter().sum();
        let (produced, consumed) = async { tokio::join!(producer, consumer) }
            .instrument(tracing::info_span!("scan", rows))
            .await;
        // The consumer's error first: the producer only sees its receiver gone.
        consumed?;
        produced
    }
}

/// Totals of a run's diff over all partitions.
#[derive(Debug, Default)]
struct Diffed {
    counts: OpCounts,
    rejects: Vec<Reject>,
    current_rows_written: u64,
    history_rows_written: u64,
}

/// Diffs every partition on `plan.workers` threads, sending output rows to the writers and
/// marking the current rows of keys that left the extract in `picks`.
///
/// Under `on_error: fail`, a duplicate key stops the workers; the error of the earliest row
/// (file, line) among those found is returned.
fn diff_partitions(
    context: &JoinContext<'_>,
    store: &SharedStore,
    plan: MemoryPlan,
    picks: &Mutex<Picks>,
    current_tx: Sender<RecordBatch>,
    history_tx: Sender<RecordBatch>,
) -> Result<Diffed> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Result<Diffed>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..plan.workers)
            .map(|_| {
                let (current_tx, history_tx) = (current_tx.clone(), history_tx.clone());
                let (next, stop) = (&next, &stop);
                scope.spawn(move || -> Result<Diffed> {
                    let mut total = Diffed::default();
                    let result = (|| {
                        while !stop.load(Ordering::SeqCst) {
                            let p = next.fetch_add(1, Ordering::SeqCst);
                            if p >= plan.partitions {
                                break;
                            }
                            let mut sides = store.take_all(p)?;
                            let current = std::mem::take(&mut sides[CURRENT_SIDE]);
                            let incoming = std::mem::take(&mut sides[INCOMING]);
                            let out = context.diff(incoming, current)?;
                            total.counts.merge(&out.counts);
                            total.rejects.extend(out.rejects);
                            if !out.gone.is_empty() {
                                let mut picks = picks.lock().map_err(|_| {
                                    Error::Internal("another diff worker panicked".into())
                                })?;
                                for &(file, row) in &out.gone {
                                    picks.pick(file, row)?;
                                }
                            }
                            total.current_rows_written += send(&current_tx, out.current)?;
                            total.history_rows_written += send(&history_tx, out.history)?;
                        }
                        Ok(())
                    })();
                    if result.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    result.map(|()| total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("diff worker panicked".into())))
            })
            .collect()
    });
    drop((current_tx, history_tx));
    let mut total = Diffed::default();
    let mut first_error: Option<Error> = None;
    for result in results {
        match result {
            Ok(part) => {
                total.counts.merge(&part.counts);
                total.rejects.extend(part.rejects);
                total.current_rows_written += part.current_rows_written;
                total.history_rows_written += part.history_rows_written;
            }
            Err(e) => {
                let earlier = match (&first_error, &e) {
                    (None, _) => true,
                    (
                        Some(Error::BadRow {
                            file: f0, line: l0, ..
                        }),
                        Error::BadRow { file, line, .. },
                    ) => (file, line) < (f0, l0),
                    (Some(Error::BadRow { .. }), _) => false,
                    (Some(_), Error::BadRow { .. }) => true,
                    (Some(_), _) => false,
                };
                if earlier {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Sends batches to a writer in slices of at most [`source::BATCH_ROWS`] rows (zero-copy), so
/// the writer's own copies (partition split, encoding buffers) stay small. Returns the rows sent.
fn send(tx: &Sender<RecordBatch>, batches: Vec<RecordBatch>) -> Result<u64> {
    let mut rows = 0;
    for batch in batches {
        let n = batch.num_rows();
        rows += n as u64;
        for offset in (0..n).step_by(source::BATCH_ROWS) {
            let slice = batch.slice(offset, source::BATCH_ROWS.min(n - offset));
            tx.blocking_send(slice).map_err(|_| writer_gone())?;
        }
    }
    Ok(rows)
}

const WRITER_GONE: &str = "a table writer stopped early";

fn writer_gone() -> Error {
    Error::Internal(WRITER_GONE.into())
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
