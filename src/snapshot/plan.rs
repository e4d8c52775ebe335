//! Memory plan of a run: how many keyhash partitions the diff uses and how the configured
//! `memory_limit` is shared between holding partitions and diffing them.
//!
//! While the input and the current table are read, partitions are held in a
//! [`SpillStore`](crate::snapshot::spill::SpillStore) of `store_budget` bytes ([`STORE_SHARE`] of the
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
    /// bytes, with up to `cores` workers.
    pub fn new(limit: u64, input_bytes: u64, current_bytes: u64, cores: usize) -> Self {
        Self::with_partitions(limit, input_bytes, current_bytes, cores, None)
    }

    /// As [`MemoryPlan::new`], with the partition count forced when `partitions` is set.
    pub fn with_partitions(
        limit: u64,
        input_bytes: u64,
        current_bytes: u64,
        cores: usize,
        partitions: Option<usize>,
    ) -> Self {
        let estimated = input_bytes + current_bytes;
        let work_budget = limit as f64 * WORK_SHARE;
        let shared = limit as f64 * (STORE_SHARE + WORK_SHARE);
        let workers = cores.max(1);
        let needed = estimated as f64 * WORKING_SET_FACTOR * workers as f64 / work_budget;
        // Partitions for holding the run whole (see the module docs), unless that takes more
        // than twice what the workers' share needs (or 16): near the shared budget it grows
        // without bound.
        let beyond = (WORKING_SET_FACTOR - 1.0) * workers as f64;
        let in_memory = match shared - estimated as f64 {
            room if room > 0.0 => (beyond * estimated as f64 / room).ceil(),
            _ => f64::INFINITY,
        };
        let in_memory =
            (in_memory <= (2.0 * needed).max(MAX_IN_MEMORY_PARTITIONS)).then_some(in_memory);
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
            estimated_bytes: estimated,
            row_group_bytes: (limit / ROW_GROUP_DIVISOR).clamp(1 << 20, MAX_ROW_GROUP_BYTES),
        }
    }
}

impl MemoryPlan {
    /// Tasks per table writer (see `sink::delta::TableWriters`): one per core, as long as the row
    /// groups the three writers' tasks hold open (one each, `row_group_bytes`) stay within
    /// [`WRITER_SHARE`] of the limit; at least one. At 1 GiB (16 MiB row groups) that is 4.
    pub fn writer_tasks(&self, cores: usize) -> usize {
        let fit = (self.limit_bytes as f64 * WRITER_SHARE) / (3 * self.row_group_bytes) as f64;
        (fit as usize).clamp(1, cores.max(1))
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
        let plan = |limit: u64| MemoryPlan::new(limit, 1 << 30, 1 << 30, 2);
        // 1 GiB: 16 MiB row groups, 3 writers x 4 tasks = 192 MiB, under 20% of the limit.
        assert_eq!(plan(1 << 30).writer_tasks(2), 2);
        assert_eq!(plan(1 << 30).writer_tasks(8), 4);
        assert_eq!(plan(1 << 30).writer_tasks(1), 1);
        // 512 MiB: 16 MiB row groups, 2 tasks (102 MiB fit).
        assert_eq!(plan(512 << 20).writer_tasks(8), 2);
        // 8 GiB: row groups stay 16 MiB, so every core gets a task.
        assert_eq!(plan(8 << 30).writer_tasks(8), 8);
        // 16 MiB: 1 MiB row groups (the floor): 3.2 MiB fit, one task per writer.
        assert_eq!(plan(16 << 20).writer_tasks(4), 1);
        assert_eq!(plan(1 << 30).writer_tasks(0), 1);
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
