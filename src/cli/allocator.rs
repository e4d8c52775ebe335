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

/// Arenas per core (glibc's default is 8 per core on 64-bit).
pub const ARENAS_PER_CORE: usize = 1;
/// Blocks of at least this many bytes are mapped on their own (glibc's largest static
/// `M_MMAP_THRESHOLD` on 64-bit; its default starts at 128 KiB and moves up as blocks are freed).
pub const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// Free memory at the top of an arena is given back to the kernel past this many bytes (the
/// default memory limit: a run's own peak is reused rather than returned and faulted in again).
pub const TRIM_THRESHOLD_BYTES: i32 = 1 << 30;

/// Applies the settings above (glibc only; elsewhere the system allocator is left as it is).
/// Call it before any other thread starts. Returns whether every setting was accepted.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() -> bool {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = i32::try_from(cores * ARENAS_PER_CORE).unwrap_or(i32::MAX);
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
pub fn tune() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_accepts_every_setting() {
        assert!(super::tune());
    }
}
