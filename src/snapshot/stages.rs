//! The read, scan and diff stages of a run, partitioned or streamed, and the table writers
//! they feed (see `run` for the whole run and `docs/memory.md` for both kinds).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use deltalake::arrow::array::RecordBatch;
use tracing::Instrument;

use crate::core::batch::{HashedBatch, Reject, BATCH_ROWS};
use crate::core::op::OpCounts;
use crate::core::schema::KEYHASH;
use crate::core::spill::{Partitioner, SharedStore, SpillStats, SpillStore};
use crate::error::{Error, Result};
use crate::report::progress::{stage_line, Progress, Stage};
use crate::sink::delta::current::{DataFiles, Picks};
use crate::sink::delta::Senders;
use crate::snapshot::join::{self, JoinContext, PartitionDiff};
use crate::snapshot::plan::MemoryPlan;
use crate::snapshot::probe::Probe;
use crate::snapshot::summary::StageTimes;
use crate::source::extract::{self, ReadStats, RowErrors};

/// Side indices of the run's [`SpillStore`].
pub(super) const INCOMING: usize = 0;
pub(super) const CURRENT_SIDE: usize = 1;

/// What the diff of either kind (partitioned or streamed) leaves for the rest of the run.
pub(super) struct Joined {
    /// Under a streamed run's failure: empty (the error is in `diffed`).
    pub(super) read_stats: ReadStats,
    pub(super) diffed: Result<Diffed>,
    /// Current rows of keys absent from the extract, to be read back whole.
    pub(super) picks: Picks,
    /// Rows of the current table scanned.
    pub(super) current_rows: u64,
    pub(super) spill: SpillStats,
    /// Read, scan and diff times.
    pub(super) times: StageTimes,
}

/// Both sides of a partitioned run, held in (or spilled from) the store.
pub(super) struct Partitioned {
    store: SpillStore,
    read_stats: ReadStats,
    current_rows: u64,
    times: StageTimes,
}

/// What the read, scan and diff stages of a run share.
pub(super) struct Stages<'a> {
    pub(super) context: &'a JoinContext<'a>,
    pub(super) progress: &'a Progress,
    pub(super) rows_per_file: &'a [u64],
    /// Row groups of the current table scanned at once ([`MemoryPlan::row_group_tasks`]).
    pub(super) scan_tasks: usize,
}

impl Stages<'_> {
    /// Reads the input (stage 1) and scans the current table's join columns and row positions
    /// (stage 2), both partitioned by keyhash into a store of `memory`'s plan.
    ///
    /// # Errors
    /// Input errors (bad rows under `on_error: fail`), lake and spill I/O errors.
    pub(super) async fn partition(
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
            &config.snapshot.spill_dir,
        )?;
        let mut times = StageTimes::default();
        let reading = Instant::now();
        let keyhash_at = context.incoming_schema.index_of(KEYHASH)?;
        let read_stats = self.read(false, &mut |batch| {
            let batch = join::incoming_batch(&context.incoming_schema, batch)?;
            for (p, piece) in partitioner.split(&batch, keyhash_at)? {
                store.push(INCOMING, p, piece)?;
            }
            Ok(())
        })?;
        times.read_secs = reading.elapsed().as_secs_f64();
        let scanning = Instant::now();
        let stage = Stage::start("scan");
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
        // The last spill is written before the diff workers take their share of the limit.
        store.land()?;
        times.scan_secs = scanning.elapsed().as_secs_f64();
        stage.done(format_args!(
            "{} rows of current into {} partition(s)",
            store.rows(CURRENT_SIDE),
            memory.partitions
        ));
        Ok(Partitioned {
            current_rows: store.rows(CURRENT_SIDE),
            store,
            read_stats,
            times,
        })
    }

    /// Stage 3 of a partitioned run: diffs the partitions, sending rows to `writers`.
    pub(super) fn diff(
        &self,
        partitioned: Partitioned,
        memory: MemoryPlan,
        writers: &Senders,
    ) -> Joined {
        let diffing = Instant::now();
        let stage = Stage::start("diff");
        let store = partitioned.store.into_shared();
        let picks = Mutex::new(Picks::new(self.rows_per_file));
        let diffed = {
            let _span = tracing::info_span!("diff", partitions = memory.partitions).entered();
            tokio::task::block_in_place(|| {
                diff_partitions(self.context, &store, memory, &picks, writers.clone())
            })
        };
        // Poisoned only by a panicked worker, whose error `diffed` already holds.
        let picks = picks
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut times = partitioned.times;
        times.diff_secs = diffing.elapsed().as_secs_f64();
        stage.done(format_args!("{} partition(s)", memory.partitions));
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
    pub(super) async fn streamed(&self, data_files: &DataFiles, writers: &Senders) -> Joined {
        let context = self.context;
        let config = context.config;
        let rows: u64 = self.rows_per_file.iter().sum();
        let mut times = StageTimes::default();
        let mut probe = Probe::new(
            config.snapshot.extract_type,
            context.run_date,
            rows as usize,
        );
        let scanning = Instant::now();
        let stage = Stage::start("scan");
        let scanned = self
            .scan(data_files, |batch| join::index_current(&mut probe, &batch))
            .await
            .map(|()| tokio::task::block_in_place(|| probe.build()));
        times.scan_secs = scanning.elapsed().as_secs_f64();
        stage.done(format_args!("{rows} rows of current indexed"));
        self.progress.restart();
        let reading = Instant::now();
        let mut diffed = Diffed::default();
        let mut errors = RowErrors::new(config.source.on_error);
        let read = scanned.and_then(|()| {
            self.read(true, &mut |batch| {
                let mut out = PartitionDiff::default();
                context.probe(&mut probe, batch, &mut errors, &mut out)?;
                diffed.send(writers, out)
            })
        });
        times.read_secs = reading.elapsed().as_secs_f64();
        let mut picks = Picks::new(self.rows_per_file);
        let (read_stats, diffed) = match read {
            Ok(read_stats) => {
                let finished = tokio::task::block_in_place(|| probe.finish());
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
            // The scan reads every row the footers count.
            current_rows: rows,
            spill: SpillStats::default(),
            times,
        }
    }

    /// Reads the run's input into `sink` (stage 1) under the `read` span, the progress bar
    /// finished after.
    ///
    /// # Errors
    /// Those of [`extract::read`].
    fn read(
        &self,
        streamed: bool,
        sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
    ) -> Result<ReadStats> {
        let (config, files) = (self.context.config, self.context.files);
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let count = files.len();
        let _span = tracing::info_span!("read", files = count, bytes, streamed).entered();
        let started = Instant::now();
        let read =
            tokio::task::block_in_place(|| extract::read(config, files, self.progress, sink));
        self.progress.finish();
        if let Ok(stats) = &read {
            let also = if streamed { " (and diffed)" } else { "" };
            let (rows, secs) = (stats.rows_read, started.elapsed().as_secs_f64());
            stage_line(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                format_args!("read: {rows} rows from {count} file(s){also} in {secs:.2} s"),
            );
        }
        read
    }

    /// Streams the current table's join columns and row positions
    /// ([`DataFiles::scan_keys`]) into `consume`, decoding `scan_tasks` row groups at once.
    ///
    /// # Errors
    /// Lake errors of the scan; errors of `consume`.
    async fn scan(
        &self,
        files: &DataFiles,
        mut consume: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2 * self.scan_tasks);
        let producer = files.scan_keys(self.context.current_schema.clone(), self.scan_tasks, tx);
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
pub(super) struct Diffed {
    pub(super) counts: OpCounts,
    pub(super) rejects: Vec<Reject>,
    pub(super) current_rows_written: u64,
    pub(super) history_rows_written: u64,
}

/// Diffs every partition on `plan.workers` threads, sending output rows to the writers and
/// marking the current rows of keys that left the extract in `picks`. The partitions come from
/// a read-ahead thread ([`SharedStore::read_ahead`]), so a worker's diff overlaps the reading
/// of the next partition's spill files: one partition read ahead at most, beside those being
/// diffed.
///
/// Under `on_error: fail`, a duplicate key stops the workers; the error of the earliest row
/// (file, line) among those found is returned.
pub(super) fn diff_partitions(
    context: &JoinContext<'_>,
    store: &SharedStore,
    plan: MemoryPlan,
    picks: &Mutex<Picks>,
    tx: Senders,
) -> Result<Diffed> {
    let stop = AtomicBool::new(false);
    let results: Vec<Result<Diffed>> = std::thread::scope(|scope| {
        // Each worker holds a clone: once all have ended, the read-ahead thread stops.
        let ahead = store.read_ahead(scope, plan.partitions);
        let handles: Vec<_> = (0..plan.workers)
            .map(|_| {
                let tx = tx.clone();
                let (ahead, stop) = (ahead.clone(), &stop);
                scope.spawn(move || -> Result<Diffed> {
                    let mut total = Diffed::default();
                    let result = (|| {
                        while !stop.load(Ordering::SeqCst) {
                            let Some(sides) = ahead.next() else { break };
                            let mut sides = sides?;
                            let current = std::mem::take(&mut sides[CURRENT_SIDE]);
                            let incoming = std::mem::take(&mut sides[INCOMING]);
                            let mut out = context.diff(incoming, current)?;
                            total.counts.merge(&out.counts);
                            total.rejects.extend(std::mem::take(&mut out.rejects));
                            if !out.gone.is_empty() {
                                let mut picks = picks.lock().map_err(|_| {
                                    Error::Internal("another diff worker panicked".into())
                                })?;
                                for &(file, row) in &out.gone {
                                    picks.pick(file, row)?;
                                }
                            }
                            total.send(&tx, out)?;
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
        drop(ahead);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("diff worker panicked".into())))
            })
            .collect()
    });
    drop(tx);
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

impl Diffed {
    /// Sends a diff's output rows to the writers ([`send`]) and counts them: the rows of
    /// both tables count in each.
    fn send(&mut self, tx: &Senders, out: PartitionDiff) -> Result<()> {
        self.current_rows_written += send(out.current, |slice| {
            tx.current
                .blocking_send(slice)
                .map_err(|_| Error::WriterGone)
        })?;
        let both = send(out.both, |slice| tx.blocking_send_both(slice))?;
        self.current_rows_written += both;
        self.history_rows_written += both;
        Ok(())
    }
}

/// Passes batches to a writer's `sink` in slices of at most [`BATCH_ROWS`] rows
/// (zero-copy), so the writer's own copies (partition split, encoding buffers) stay small.
/// Returns the rows sent.
fn send(batches: Vec<RecordBatch>, mut sink: impl FnMut(RecordBatch) -> Result<()>) -> Result<u64> {
    let mut rows = 0;
    for batch in batches {
        let n = batch.num_rows();
        rows += n as u64;
        for offset in (0..n).step_by(BATCH_ROWS) {
            sink(batch.slice(offset, BATCH_ROWS.min(n - offset)))?;
        }
    }
    Ok(rows)
}
