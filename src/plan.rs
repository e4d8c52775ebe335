//! Memory plan of a run: how many keyhash partitions the diff uses and how the configured
//! `memory_limit` is shared between holding partitions and diffing them.
//!
//! While the input and the current table are read, partitions are held in a
//! [`SpillStore`](crate::spill::SpillStore) of `store_budget` bytes; the rest of the limit is
//! for the diff workers, each holding about [`WORKING_SET_FACTOR`] times one partition (both
//! sides, their concatenation and the output rows in flight). The partition count is chosen
//! so that `workers` partitions fit in that rest. Sizes are estimates made before reading:
//! Arrow bytes per input byte differ by format, and the current table's size is the sum of
//! its Parquet files' sizes from the Delta log, times [`CURRENT_EXPANSION`].

use crate::config::InputFormat;

/// Share of the memory limit for holding partitions while reading (the rest is for diffing).
pub const STORE_SHARE: f64 = 0.5;
/// Memory of a diff worker, in multiples of one partition's Arrow size.
pub const WORKING_SET_FACTOR: f64 = 3.0;
/// Arrow bytes per CSV byte (text floats shrink to 8 bytes; digests and offsets are added).
pub const CSV_EXPANSION: f64 = 1.2;
/// Arrow bytes per Parquet byte of an input file (compressed, dictionary- and run-length-encoded).
pub const PARQUET_EXPANSION: f64 = 4.0;
/// Arrow bytes per Parquet byte of the current table (Tributary's files: the digests and most
/// keys are unique and compress little; measured about 1.1 on the seed shape).
pub const CURRENT_EXPANSION: f64 = 1.5;
/// Row groups are at most this fraction of the limit (and 32 MiB).
pub const ROW_GROUP_DIVISOR: u64 = 32;
/// Most partitions a run uses (a few files per partition are kept while spilling).
pub const MAX_PARTITIONS: usize = 1 << 14;

/// The plan of one run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MemoryPlan {
    /// The configured limit, bytes.
    pub limit_bytes: u64,
    /// Bytes of partitions held in memory while reading; past it they spill.
    pub store_budget_bytes: u64,
    /// Keyhash partitions of the diff.
    pub partitions: usize,
    /// Partitions diffed at once.
    pub workers: usize,
    /// Estimated Arrow bytes of the input and of the current table.
    pub estimated_bytes: u64,
    /// Largest Parquet row group written, bytes: one is buffered per table writer, and the
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
    /// Plans a run of `input_bytes` (estimated Arrow bytes) against a current table of
    /// `current_parquet_bytes`, within `limit` bytes, with up to `cores` workers.
    pub fn new(limit: u64, input_bytes: u64, current_parquet_bytes: u64, cores: usize) -> Self {
        Self::with_partitions(limit, input_bytes, current_parquet_bytes, cores, None)
    }

    /// As [`MemoryPlan::new`], with the partition count forced when `partitions` is set.
    pub fn with_partitions(
        limit: u64,
        input_bytes: u64,
        current_parquet_bytes: u64,
        cores: usize,
        partitions: Option<usize>,
    ) -> Self {
        let estimated = input_bytes + (current_parquet_bytes as f64 * CURRENT_EXPANSION) as u64;
        let store_budget = (limit as f64 * STORE_SHARE) as u64;
        let work_budget = (limit - store_budget) as f64;
        let workers = cores.max(1);
        let needed = estimated as f64 * WORKING_SET_FACTOR * workers as f64 / work_budget;
        let partitions = partitions.unwrap_or((needed.ceil() as usize).clamp(1, MAX_PARTITIONS));
        MemoryPlan {
            limit_bytes: limit,
            store_budget_bytes: store_budget,
            partitions,
            workers: workers.min(partitions),
            estimated_bytes: estimated,
            row_group_bytes: (limit / ROW_GROUP_DIVISOR).clamp(1 << 20, 32 << 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_use_one_partition() {
        let plan = MemoryPlan::new(1 << 30, 10 << 20, 10 << 20, 2);
        assert_eq!((plan.partitions, plan.workers), (1, 1));
    }

    #[test]
    fn partitions_grow_with_the_data_and_shrink_with_the_limit() {
        let gib = 1u64 << 30;
        let small = MemoryPlan::new(gib, 4 * gib, gib, 2);
        let big = MemoryPlan::new(gib, 40 * gib, 10 * gib, 2);
        let roomy = MemoryPlan::new(8 * gib, 40 * gib, 10 * gib, 2);
        assert!(small.partitions > 1 && big.partitions > small.partitions);
        assert!(roomy.partitions < big.partitions);
        // Each worker's share of one partition fits beside the store budget.
        for plan in [small, big, roomy] {
            let per_partition = plan.estimated_bytes as f64 / plan.partitions as f64;
            let working = per_partition * WORKING_SET_FACTOR * plan.workers as f64;
            assert!(
                working + plan.store_budget_bytes as f64 <= plan.limit_bytes as f64 * 1.0001,
                "{plan:?}"
            );
        }
    }
}
