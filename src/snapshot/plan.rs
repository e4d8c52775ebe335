//! Memory plan of a run: how many keyhash partitions the diff uses and how the configured
//! `memory_limit` is shared between holding partitions and diffing them.
//!
//! While the input and the current table are read, partitions are held in a
//! [`SpillStore`](crate::core::spill::SpillStore) of `store_budget` bytes ([`STORE_SHARE`] of the
//! limit); [`WORK_SHARE`] of the limit is for the diff workers, each holding about
//! [`WORKING_SET_FACTOR`] times one partition (its two sides concatenated, the join index and
//! the output rows in flight); the rest is headroom for memory the plan does not count. The
//! partition count is chosen so that `workers` partitions fit in the workers' share. A run
//! small enough to be held whole within both shares, beside what its workers hold beyond the
//! partitions they take from the store, is not spilled: it gets enough partitions for that
//! (at most twice what the workers' share needs, or [`MAX_IN_MEMORY_PARTITIONS`]), and the store gets
//! both shares less the workers' part. That plan leans on the estimate: a run larger than
//! estimated spills past the store's budget as any other, but its workers then hold more than
//! planned beside a full store. Sizes are
//! estimates made before reading: Arrow bytes per input byte differ by format, and the current
//! table is held as its join columns only: its row count (from the data files' footers) times
//! [`CURRENT_ROW_BYTES`].
//!
//! A later run whose current table and new keys fit in both shares as an in-memory index
//! ([`probe_fits`]) is not partitioned at all: each incoming batch probes the index as it is
//! read (`probe`), and the plan is marked `streamed` (no partitions, workers nor store).

use crate::config::InputFormat;

/// Share of the memory limit for holding partitions while reading. A spill being written
/// holds up to as much again (about half of it; see `spill`), out of [`WORK_SHARE`], which is
/// unused until the diff starts, once the last spill is written.
pub const STORE_SHARE: f64 = 0.35;
/// Share of the memory limit for the diff workers' partitions. The rest of the limit
/// (`1 - STORE_SHARE - WORK_SHARE`) is left for what the plan does not count: the reader's
/// chunks in flight, the scan's row groups, the table writers' encoders and uploads (three
/// writers, one task per core each), and
/// the allocator's slack (measured at 10M rows of the seed shape: about 600 MiB beyond a
/// 1 GiB plan that counted only the store and the workers).
pub const WORK_SHARE: f64 = 0.35;
/// Most of the limit that the table writers' open row groups may take, within the share the
/// plan leaves uncounted (`1 - STORE_SHARE - WORK_SHARE`): it bounds their task count
/// ([`MemoryPlan::writer_tasks`]).
pub const WRITER_SHARE: f64 = 0.2;
/// Memory of a diff worker, in multiples of one partition's Arrow size.
pub const WORKING_SET_FACTOR: f64 = 3.0;
/// Arrow bytes per CSV byte (text floats shrink to 8 bytes; digests and offsets are added).
pub const CSV_EXPANSION: f64 = 1.2;
/// Arrow bytes per Parquet byte of an input file (compressed, dictionary- and run-length-encoded).
pub const PARQUET_EXPANSION: f64 = 4.0;
/// Arrow bytes per current-table row held for the join: `keyhash` and `nonkeyhash` (16 bytes
/// and a 4-byte offset each), `eff_start_date` (4), the row's data file and row (4 each), and
/// validity and slack.
pub const CURRENT_ROW_BYTES: u64 = 64;
/// Row groups are at most this fraction of the limit (and [`MAX_ROW_GROUP_BYTES`]).
pub const ROW_GROUP_DIVISOR: u64 = 32;
/// Largest row group, bytes. A finished row group is gathered into one buffer grown by
/// doubling (Parquet's `ArrowWriter` under delta-rs's writer), freed once uploaded; at 32 MiB
/// it crossed glibc's largest mmap threshold (32 MiB), so every row group's buffer was freshly
/// mapped, page-faulted and unmapped again. At 16 MiB day 2 of 1M rows took 1.90 to 2.00 s
/// against 1.90 to 2.36 s, with less system time and about 80 MiB less peak RSS.
pub const MAX_ROW_GROUP_BYTES: u64 = 16 << 20;
pub use crate::config::MAX_PARTITIONS;
/// Most partitions planned to hold a run whole, unless twice what the workers' share needs is
/// more.
pub const MAX_IN_MEMORY_PARTITIONS: f64 = 16.0;
/// Most partitions the plan takes to give more diff workers their share of
/// [`WORK_SHARE`]: past it, fewer workers diff at once than there are threads (at least
/// [`MIN_DIFF_WORKERS`]), rather than the partitions growing with the threads. A partition
/// costs the reader a piece of every batch (64Ki rows over 661 partitions on 16 threads were
/// pieces of about 100 rows, whose array headers and allocations the plan does not count) and
/// the spill a segment per spill.
pub const MAX_SPREAD_PARTITIONS: f64 = 128.0;
/// Diff workers a run keeps however large it is against its limit (when it has that many
/// threads): the 2-core plan, whose figures `bench/RESULTS.md` holds.
pub const MIN_DIFF_WORKERS: usize = 2;

/// Bytes per entry of the in-memory index of a streamed run ([`probe::ENTRY_BYTES`]).
///
/// [`probe::ENTRY_BYTES`]: crate::snapshot::probe::ENTRY_BYTES
pub const PROBE_ENTRY_BYTES: u64 = crate::snapshot::probe::ENTRY_BYTES;

/// Whether a later run can be streamed past an in-memory index ([`crate::snapshot::probe`]) within
/// `limit` bytes: an entry for each of the `current_rows` and for each incoming row (each
/// could be a new key), the `incoming_rows` estimate taken twice over (it is sampled from a
/// file's first MiB), fits in both shares of the limit; the rest is left, as in a partitioned
/// run, for the batches in flight and the table writers.
pub fn probe_fits(limit: u64, current_rows: u64, incoming_rows: u64) -> bool {
    let entries = current_rows.saturating_add(incoming_rows.saturating_mul(2));
    entries.saturating_mul(PROBE_ENTRY_BYTES) as f64 <= limit as f64 * (STORE_SHARE + WORK_SHARE)
}

/// The plan of one run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MemoryPlan {
    /// The configured limit, bytes.
    pub limit_bytes: u64,
    /// Bytes of partitions held in memory while reading; past it they spill.
    pub store_budget_bytes: u64,
    /// Whether the run is streamed past an in-memory index of the current table
    /// ([`probe_fits`]): then it has no partitions, workers nor store.
    pub streamed: bool,
    /// Keyhash partitions of the diff.
    pub partitions: usize,
    /// Partitions diffed at once.
    pub workers: usize,
    /// The run's `threads` setting (`crate::core::threads`): its readers and writer tasks, and
    /// the most diff workers.
    pub threads: usize,
    /// Estimated Arrow bytes of the input and of the current table.
    pub estimated_bytes: u64,
    /// Largest Parquet row group written, bytes: one is buffered per writer task, and the
    /// next run's scan reads row groups whole.
    pub row_group_bytes: u64,
}

/// Estimated Arrow bytes of input files of a format.
pub fn input_estimate(format: InputFormat, file_bytes: u64) -> u64 {
    let factor = match format {
        InputFormat::Csv => CSV_EXPANSION,
        InputFormat::Parquet => PARQUET_EXPANSION,
    };
    (file_bytes as f64 * factor) as u64
}

impl MemoryPlan {
    /// Plans a run of `input_bytes` against a current table whose join columns take
    /// `current_bytes` (both estimated Arrow bytes; see [`CURRENT_ROW_BYTES`]), within `limit`
    /// bytes, on `threads` threads: up to that many diff workers, fewer where giving each its
    /// share would take more than [`MAX_SPREAD_PARTITIONS`] partitions.
    pub fn new(limit: u64, input_bytes: u64, current_bytes: u64, threads: usize) -> Self {
        Self::with_partitions(limit, input_bytes, current_bytes, threads, None)
    }

    /// As [`MemoryPlan::new`], with the partition count forced when `partitions` is set.
    pub fn with_partitions(
        limit: u64,
        input_bytes: u64,
        current_bytes: u64,
        threads: usize,
        partitions: Option<usize>,
    ) -> Self {
        let estimated = input_bytes + current_bytes;
        let work_budget = limit as f64 * WORK_SHARE;
        let shared = limit as f64 * (STORE_SHARE + WORK_SHARE);
        let threads = threads.max(1);
        // Partitions each worker needs for its share of the workers' budget.
        let per_worker = estimated as f64 * WORKING_SET_FACTOR / work_budget;
        // Workers whose shares `partitions` partitions give (MAX_SPREAD_PARTITIONS, or the
        // forced count): all threads, or fewer but at least MIN_DIFF_WORKERS. The room may be
        // infinite (an empty run) or past usize: compared as floats.
        let room = (partitions.map_or(MAX_SPREAD_PARTITIONS, |p| p as f64) / per_worker).floor();
        let workers = match room < threads as f64 {
            true => (room as usize).max(MIN_DIFF_WORKERS).min(threads),
            false => threads,
        };
        let needed = per_worker * workers as f64;
        // Partitions for holding the run whole (see the module docs), unless that takes more
        // than twice what the workers' share needs (or 16), or MAX_SPREAD_PARTITIONS: near the
        // shared budget it grows without bound.
        let beyond = (WORKING_SET_FACTOR - 1.0) * workers as f64;
        let in_memory = match shared - estimated as f64 {
            room if room > 0.0 => (beyond * estimated as f64 / room).ceil(),
            _ => f64::INFINITY,
        };
        let most = (2.0 * needed).clamp(MAX_IN_MEMORY_PARTITIONS, MAX_SPREAD_PARTITIONS);
        let in_memory = (in_memory <= most).then_some(in_memory);
        let partitions = partitions.unwrap_or_else(|| {
            (needed.max(in_memory.unwrap_or(0.0)).ceil() as usize).clamp(1, MAX_PARTITIONS)
        });
        let workers = workers.min(partitions);
        let beyond_bytes =
            (WORKING_SET_FACTOR - 1.0) * workers as f64 * estimated as f64 / partitions as f64;
        let store_budget = if in_memory.is_some() && estimated as f64 + beyond_bytes <= shared {
            shared - beyond_bytes
        } else {
            limit as f64 * STORE_SHARE
        };
        MemoryPlan {
            limit_bytes: limit,
            streamed: false,
            store_budget_bytes: store_budget as u64,
            partitions,
            workers,
            threads,
            estimated_bytes: estimated,
            row_group_bytes: (limit / ROW_GROUP_DIVISOR).clamp(1 << 20, MAX_ROW_GROUP_BYTES),
        }
    }
}

impl MemoryPlan {
    /// Tasks per table writer (see `sink::delta::TableWriters`): one per thread, as long as
    /// what the three writers' tasks hold stays within [`WRITER_SHARE`] of the limit: each an
    /// open row group (`row_group_bytes` of encoded pages) and as much again in its column
    /// encoders and the batches it was sent; at least one. At 1 GiB (16 MiB row groups) that
    /// is 2; 8 GiB gives 17. (Counting the row group once gave 4 at 1 GiB, and on 8 threads
    /// about 200 MiB more peak RSS than on 2.)
    pub fn writer_tasks(&self) -> usize {
        let fit = (self.limit_bytes as f64 * WRITER_SHARE) / (2 * 3 * self.row_group_bytes) as f64;
        (fit as usize).clamp(1, self.threads.max(1))
    }

    /// Row groups of the current table read at once: by the scan of its join columns (beside
    /// the store, as the workers' share is free until the diff) and by the read-back of the
    /// rows of keys that left the extract (after the diff, whose workers' share they take).
    /// Each holds its compressed column chunks, the batches decoded from them and the rows it
    /// sends on, counted as three times `row_group_bytes` (the largest row group's
    /// uncompressed size); one per thread, fewer where they do not fit [`WORK_SHARE`] of the
    /// limit, at least one.
    pub fn row_group_tasks(&self, row_group_bytes: u64) -> usize {
        let fit = self.limit_bytes as f64 * WORK_SHARE / (3.0 * row_group_bytes.max(1) as f64);
        (fit as usize).clamp(1, self.threads.max(1))
    }

    /// This plan for a streamed run: no partitions, workers nor store.
    pub fn streamed(self) -> Self {
        MemoryPlan {
            streamed: true,
            store_budget_bytes: 0,
            partitions: 0,
            workers: 0,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_tasks_are_bounded_by_the_limit_and_the_cores() {
        let plan = |limit: u64, threads| MemoryPlan::new(limit, 1 << 30, 1 << 30, threads);
        // 1 GiB: 16 MiB row groups, 3 writers x 2 tasks x 2 x 16 MiB = 192 MiB, under 20% of
        // the limit, on any thread count.
        assert_eq!(plan(1 << 30, 2).writer_tasks(), 2);
        assert_eq!(plan(1 << 30, 8).writer_tasks(), 2);
        assert_eq!(plan(1 << 30, 1).writer_tasks(), 1);
        // 512 MiB: 16 MiB row groups, 1 task (102 MiB fit).
        assert_eq!(plan(512 << 20, 8).writer_tasks(), 1);
        // 8 GiB: row groups stay 16 MiB, so every thread gets a task.
        assert_eq!(plan(8 << 30, 8).writer_tasks(), 8);
        // 16 MiB: 1 MiB row groups (the floor): 3.2 MiB fit, one task per writer.
        assert_eq!(plan(16 << 20, 4).writer_tasks(), 1);
        assert_eq!(plan(1 << 30, 0).writer_tasks(), 1);
    }

    #[test]
    fn row_group_tasks_are_bounded_by_the_limit_and_the_threads() {
        let plan = |limit: u64, threads| MemoryPlan::new(limit, 1 << 30, 1 << 30, threads);
        // 1 GiB: 358 MiB of the workers' share over 3 x 24 MiB row groups: 4 at once.
        assert_eq!(plan(1 << 30, 16).row_group_tasks(24 << 20), 4);
        assert_eq!(plan(1 << 30, 2).row_group_tasks(24 << 20), 2);
        // A Spark-sized 128 MiB row group at 1 GiB: one at a time.
        assert_eq!(plan(1 << 30, 16).row_group_tasks(128 << 20), 1);
        assert_eq!(plan(16 << 20, 16).row_group_tasks(24 << 20), 1);
        // No data files: one per thread.
        assert_eq!(plan(1 << 30, 8).row_group_tasks(0), 8);
    }

    #[test]
    fn runs_are_streamed_while_the_index_fits_both_shares() {
        let gib = 1u64 << 30;
        // 1M rows of the seed shape against 1M current rows: 3M entries, 504 MB.
        assert!(probe_fits(gib, 1_000_000, 1_000_000));
        // 10M rows against 10M: 5 GB.
        assert!(!probe_fits(gib, 10_000_000, 10_000_000));
        // The bound: entries * bytes within 70% of the limit.
        let entries = (gib as f64 * (STORE_SHARE + WORK_SHARE)) as u64 / PROBE_ENTRY_BYTES;
        assert!(probe_fits(gib, entries, 0));
        assert!(!probe_fits(gib, entries + 1, 0));
        assert!(!probe_fits(gib, entries - 1, 1));
        assert!(!probe_fits(gib, 0, u64::MAX));
    }

    #[test]
    fn small_runs_use_one_partition() {
        let plan = MemoryPlan::new(1 << 30, 10 << 20, 10 << 20, 2);
        assert_eq!((plan.partitions, plan.workers), (1, 1));
    }

    #[test]
    fn a_run_that_fits_both_shares_is_held_whole() {
        let gib = 1u64 << 30;
        let shared = gib as f64 * (STORE_SHARE + WORK_SHARE);
        // 1M rows of the seed shape: 432 MiB of input estimate (360 MiB of CSV), 61 MiB of
        // current join columns: 9 partitions would do for the workers alone, and do here.
        let fits = MemoryPlan::new(gib, 432 << 20, 61 << 20, 2);
        // Closer to both shares it takes more partitions (10 against 9).
        let tight = MemoryPlan::new(gib, 450 << 20, 61 << 20, 2);
        let alone = MemoryPlan::new(gib, 4 * gib, gib, 2);
        for plan in [fits, tight, alone] {
            // The store and what the workers hold beyond their partitions stay in both shares.
            let per_partition = plan.estimated_bytes as f64 / plan.partitions as f64;
            let beyond = per_partition * (WORKING_SET_FACTOR - 1.0) * plan.workers as f64;
            assert!(
                plan.store_budget_bytes as f64 + beyond <= shared * 1.0001,
                "{plan:?}"
            );
        }
        for plan in [fits, tight] {
            assert!(plan.store_budget_bytes >= plan.estimated_bytes, "{plan:?}");
        }
        assert_eq!(fits.partitions, 9, "{fits:?}");
        assert_eq!(tight.partitions, 10, "{tight:?}");
        assert_eq!(alone.store_budget_bytes, (gib as f64 * STORE_SHARE) as u64);
    }

    #[test]
    fn a_run_just_under_both_shares_keeps_the_spilling_plan() {
        // Holding it whole would take hundreds of partitions: the plan spills instead.
        let gib = 1u64 << 30;
        let estimated = (gib as f64 * (STORE_SHARE + WORK_SHARE) * 0.995) as u64;
        let plan = MemoryPlan::new(gib, estimated, 0, 2);
        let needed = (estimated as f64 * WORKING_SET_FACTOR * 2.0 / (gib as f64 * WORK_SHARE))
            .ceil() as usize;
        assert_eq!(plan.partitions, needed, "{plan:?}");
        assert_eq!(plan.store_budget_bytes, (gib as f64 * STORE_SHARE) as u64);
    }

    /// The estimate of 10M rows of the seed shape (day 2, `bench/snapshot_bench.sh`): 3.6 GB
    /// of CSV and a 10M-row current table (80 partitions on 2 threads).
    const TEN_MILLION: (u64, u64) = (4_320_000_000, 10_000_000 * CURRENT_ROW_BYTES);

    /// The memory the plan counts (the store, and what its workers hold beyond the partitions
    /// they take from it) stays within both shares, and each worker's partitions within its
    /// part of the workers' share.
    fn assert_within_limit(plan: &MemoryPlan) {
        let limit = plan.limit_bytes as f64;
        let per_partition = plan.estimated_bytes as f64 / plan.partitions as f64;
        let working = per_partition * WORKING_SET_FACTOR * plan.workers as f64;
        assert!(working <= limit * WORK_SHARE * 1.0001, "{plan:?}");
        let beyond = per_partition * (WORKING_SET_FACTOR - 1.0) * plan.workers as f64;
        assert!(
            plan.store_budget_bytes as f64 + beyond <= limit * (STORE_SHARE + WORK_SHARE) * 1.0001,
            "{plan:?}"
        );
    }

    #[test]
    fn more_threads_do_not_multiply_the_partitions() {
        let gib = 1u64 << 30;
        let (input, current) = TEN_MILLION;
        // 2 threads: the plan `bench/RESULTS.md` measured (2 workers; 83 partitions there, from
        // the measured file size).
        let two = MemoryPlan::new(gib, input, current, 2);
        let per_worker = (input + current) as f64 * WORKING_SET_FACTOR / (gib as f64 * WORK_SHARE);
        assert_eq!(
            two.partitions,
            (2.0 * per_worker).ceil() as usize,
            "{two:?}"
        );
        assert_eq!((two.workers, two.threads), (2, 2), "{two:?}");
        // 16 threads (the server of issue 22 took 661 partitions): the partitions stay within
        // MAX_SPREAD_PARTITIONS, so fewer workers diff at once, each with its full share.
        for threads in [4, 8, 16, 64, 1024] {
            let plan = MemoryPlan::new(gib, input, current, threads);
            assert_eq!(plan.threads, threads);
            assert!(plan.partitions as f64 <= MAX_SPREAD_PARTITIONS, "{plan:?}");
            assert_eq!(plan.workers, 3, "{plan:?}");
            assert_eq!(plan.store_budget_bytes, (gib as f64 * STORE_SHARE) as u64);
            assert_within_limit(&plan);
        }
        // A limit that gives every thread its share keeps them all.
        let roomy = MemoryPlan::new(16 * gib, input, current, 16);
        assert_eq!(roomy.workers, 16, "{roomy:?}");
        assert!(
            roomy.partitions as f64 <= MAX_SPREAD_PARTITIONS,
            "{roomy:?}"
        );
        assert_within_limit(&roomy);
    }

    #[test]
    fn a_forced_partition_count_takes_the_workers_its_shares_fit() {
        let gib = 1u64 << 30;
        let (input, current) = TEN_MILLION;
        // 400 partitions give about 10 workers their share; 16 threads take 10.
        let plan = MemoryPlan::with_partitions(gib, input, current, 16, Some(400));
        assert_eq!((plan.partitions, plan.workers), (400, 10), "{plan:?}");
        assert_within_limit(&plan);
        // 8 partitions fit no worker's share: MIN_DIFF_WORKERS still diff.
        let plan = MemoryPlan::with_partitions(gib, input, current, 16, Some(8));
        assert_eq!(plan.workers, MIN_DIFF_WORKERS, "{plan:?}");
        // A small run: every thread (up to the partitions).
        let plan = MemoryPlan::with_partitions(gib, 1 << 20, 0, 16, Some(8));
        assert_eq!(plan.workers, 8, "{plan:?}");
    }

    #[test]
    fn a_run_far_larger_than_its_limit_keeps_two_workers() {
        // 100M rows at 1 GiB: even one worker's share needs more than MAX_SPREAD_PARTITIONS;
        // the plan keeps MIN_DIFF_WORKERS, as on 2 cores, whatever the threads.
        let gib = 1u64 << 30;
        let (input, current) = (TEN_MILLION.0 * 10, TEN_MILLION.1 * 10);
        let two = MemoryPlan::new(gib, input, current, 2);
        for threads in [2, 16, 64] {
            let plan = MemoryPlan::new(gib, input, current, threads);
            assert_eq!(plan.workers, MIN_DIFF_WORKERS, "{plan:?}");
            assert_eq!(plan.partitions, two.partitions, "{plan:?}");
            assert_within_limit(&plan);
        }
        // One thread: one worker.
        assert_eq!(MemoryPlan::new(gib, input, current, 1).workers, 1);
    }

    #[test]
    fn every_plan_stays_within_its_limit_on_any_thread_count() {
        let mib = 1u64 << 20;
        for limit in [16 * mib, 256 * mib, 1024 * mib, 8192 * mib] {
            for input in [0, mib, 100 * mib, 1024 * mib, 50 * 1024 * mib] {
                for threads in [1, 2, 3, 8, 16, 128] {
                    let plan = MemoryPlan::new(limit, input, input / 8, threads);
                    assert!(plan.workers >= 1 && plan.workers <= threads, "{plan:?}");
                    assert!(plan.workers <= plan.partitions, "{plan:?}");
                    if plan.partitions == MAX_PARTITIONS {
                        // 50 GiB at 16 MiB: past what any partition count holds.
                        continue;
                    }
                    assert_within_limit(&plan);
                    // Past the spread, only a run too large for two workers' shares.
                    if plan.partitions as f64 > MAX_SPREAD_PARTITIONS {
                        assert!(plan.workers <= MIN_DIFF_WORKERS, "{plan:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn partitions_grow_with_the_data_and_shrink_with_the_limit() {
        let gib = 1u64 << 30;
        let small = MemoryPlan::new(gib, 4 * gib, gib, 2);
        let big = MemoryPlan::new(gib, 40 * gib, 10 * gib, 2);
        let roomy = MemoryPlan::new(8 * gib, 40 * gib, 10 * gib, 2);
        assert!(small.partitions > 1 && big.partitions > small.partitions);
        assert!(roomy.partitions < big.partitions);
        // The workers' partitions fit beside the store budget, leaving the headroom free.
        for plan in [small, big, roomy] {
            let per_partition = plan.estimated_bytes as f64 / plan.partitions as f64;
            let working = per_partition * WORKING_SET_FACTOR * plan.workers as f64;
            assert!(
                working + plan.store_budget_bytes as f64
                    <= plan.limit_bytes as f64 * (STORE_SHARE + WORK_SHARE) * 1.0001,
                "{plan:?}"
            );
        }
    }
}
