//! How many threads the parallel stages of a process use: the `threads` setting.
//!
//! As DuckDB's `threads` and Spark's executor cores: by default the number of cores this
//! process may run on (`std::thread::available_parallelism`, which follows `taskset` and cgroup
//! CPU quotas); `tributary --threads N` sets it for the whole process (the async runtime's
//! workers, the allocator's arenas, every stage), and a snapshot config's `threads: N` for its
//! run. More threads than cores is allowed (oversubscribed): the stages then plan and run
//! `N` workers, which is how the plan for a many-core server is tested on a small machine.
//!
//! Every stage sized by the core count (readers, diff workers, table writer tasks, the change
//! feed's and `tributary sql`'s DataFusion partitions, `sync`'s de-duplication) asks [`get`],
//! or is given the run's value.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Most threads accepted (a setting past it is a typo, not a machine).
pub const MAX_THREADS: usize = 1024;

/// The process's setting; 0 while unset.
static SETTING: AtomicUsize = AtomicUsize::new(0);

/// The cores this process may run on (at least 1).
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The process's `threads` setting: what [`set`] last set, else [`available`].
pub fn get() -> usize {
    match SETTING.load(Ordering::Relaxed) {
        0 => available(),
        n => n,
    }
}

/// Sets the process's `threads` setting (clamped to `1..=`[`MAX_THREADS`]). The binary calls it
/// once, before its runtime starts; a library user may call it before a run.
pub fn set(threads: usize) {
    SETTING.store(threads.clamp(1, MAX_THREADS), Ordering::Relaxed);
}

/// Sets the process's `threads` setting as [`set`] does, unless it is set already.
pub fn set_if_unset(threads: usize) {
    let _ = SETTING.compare_exchange(
        0,
        threads.clamp(1, MAX_THREADS),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
}

/// Checks a `threads` value given by a user (`--threads`, a config's `threads`).
///
/// # Errors
/// A description of the accepted range when `threads` is 0 or past [`MAX_THREADS`].
pub fn check(threads: usize) -> std::result::Result<usize, String> {
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(threads)
    } else {
        Err(format!("must be in 1..={MAX_THREADS}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sensible_thread_counts_are_accepted() {
        assert_eq!(check(1), Ok(1));
        assert_eq!(check(16), Ok(16));
        assert_eq!(check(MAX_THREADS), Ok(MAX_THREADS));
        assert!(check(0).is_err());
        assert!(check(MAX_THREADS + 1).is_err());
        assert!(available() >= 1);
    }
}
