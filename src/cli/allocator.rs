//! Settings of glibc's allocator for Tributary's allocation pattern, applied once at start by
//! the `tributary` binary (see docs/memory.md, "Allocator").
//!
//! A run allocates and frees Arrow buffers of a few MiB on many threads (reader workers,
//! the spill store, diff workers, two table writers). Under glibc's defaults that costs the
//! kernel work of fresh pages: buffers past the dynamic mmap threshold are mapped and unmapped
//! each time, up to 8 arenas per core are trimmed back to the kernel as they empty, and every
//! page handed back is zero-filled again on its next use. Measured on 1M rows of the seed shape
//! (2 cores): day 2 took 2.65 to 3.03 s with 1.5 to 2.2 s of system time under the defaults,
//! and 2.43 to 2.45 s with about 1.0 s of system time with these settings.

/// Arenas per thread of the `threads` setting (glibc's default is 8 per core on 64-bit).
pub const ARENAS_PER_CORE: usize = 1;
/// Memory limit per arena of a run with a `memory_limit` ([`arenas_within`]): an arena keeps the
/// memory freed in it for its next allocations (up to [`TRIM_THRESHOLD_BYTES`] at its top), so
/// each arena may hold about the largest working set that passed through it. On 2 cores with
/// `--threads 16` (10M rows at 1 GiB) peak RSS was 2,272 MiB with 16 arenas, 1,736 with 4 and
/// 1,502 with 2, against 1,216 on 2 threads.
pub const LIMIT_PER_ARENA: u64 = 512 << 20;
/// Blocks of at least this many bytes are mapped on their own (glibc's largest static
/// `M_MMAP_THRESHOLD` on 64-bit; its default starts at 128 KiB and moves up as blocks are freed).
pub const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// Free memory at the top of an arena is given back to the kernel past this many bytes (the
/// default memory limit: a run's own peak is reused rather than returned and faulted in again).
pub const TRIM_THRESHOLD_BYTES: i32 = 1 << 30;

/// Applies the settings above with at most `arenas` arenas (glibc only; elsewhere the system
/// allocator is left as it is). Call it before any other thread starts: glibc fixes its arena
/// limit the first time a thread needs a new arena after the setting (or once more than 8
/// arenas exist), so a later `M_ARENA_MAX` does not take back arenas nor, once fixed, change
/// the limit. Returns whether every setting was accepted.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune(arenas: usize) -> bool {
    let arenas = i32::try_from(arenas.max(1)).unwrap_or(i32::MAX);
    let settings = [
        (libc::M_ARENA_MAX, arenas),
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
    ];
    // Every setting is applied, whether or not an earlier one was refused.
    let accepted = settings.map(|(parameter, value)| {
        // SAFETY: mallopt only sets a parameter of glibc's malloc (under its own lock); it
        // takes no pointers and touches no memory of ours.
        unsafe { libc::mallopt(parameter, value) == 1 }
    });
    accepted.into_iter().all(|ok| ok)
}

/// Applies the settings above (glibc only; elsewhere the system allocator is left as it is).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune(_arenas: usize) -> bool {
    false
}

/// Arenas of a run on `threads` threads within `limit` bytes: one per [`LIMIT_PER_ARENA`] of
/// the limit, at least 2 (the 2-core count) and at most one per thread. At the default 1 GiB
/// that is 2 on any core count; a many-core server given `memory_limit: 8GiB` gets 16.
pub fn arenas_within(threads: usize, limit: u64) -> usize {
    let by_limit = usize::try_from(limit / LIMIT_PER_ARENA).unwrap_or(usize::MAX);
    by_limit.max(2).min(threads.max(1) * ARENAS_PER_CORE)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_accepts_every_setting() {
        assert!(super::tune(2));
    }
}

#[cfg(test)]
mod limits {
    #[test]
    fn a_run_gets_one_arena_per_512_mib_of_its_limit_within_its_threads() {
        use super::arenas_within;
        let gib = 1u64 << 30;
        assert_eq!(arenas_within(16, gib), 2);
        assert_eq!(arenas_within(2, gib), 2);
        assert_eq!(arenas_within(1, gib), 1);
        assert_eq!(arenas_within(16, 16 << 20), 2);
        assert_eq!(arenas_within(16, 8 * gib), 16);
        assert_eq!(arenas_within(4, 8 * gib), 4);
    }
}
