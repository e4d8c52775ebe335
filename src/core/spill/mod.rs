//! Partitioning by keyhash and spilling to disk: the build side of a grace hash join.
//!
//! Both sides of the diff (incoming rows and current rows) are split into the same `P`
//! partitions by their keyhash, so every key meets its counterpart in one partition and each
//! partition is diffed on its own, within the memory limit. Partitions are held in memory
//! while the [`SpillStore`] stays under its byte budget; past it, the largest in-memory
//! partitions are appended to files in a temporary folder as Arrow IPC streams (one file per
//! side and partition, one stream segment per spill), and read back when the partition is
//! diffed. The folder is removed when the store is dropped. Spill files bypass the page cache
//! (direct I/O) where the folder's file system allows it ([`segment`]).
//!
//! A spill is written on a thread of its own while the store goes on taking batches, so the
//! reader feeding the store does not wait for the disk: the batches of one spill (about half
//! the budget) stay in memory until written, and a store over budget again first waits for
//! them. The store therefore holds about one and a half times its budget at once, at most
//! twice (a spill of partitions larger than half the budget), plus the one segment being
//! encoded; `plan` gives the share of the memory limit that covers it.

mod segment;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Scope};

use deltalake::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::take_record_batch;
use deltalake::arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};

pub use segment::SpillIo;
use segment::{Scratch, Segment};

/// Maps keyhash digests to partitions.
///
/// Uses the first four bytes of the digest (uniformly distributed) with a multiply-shift, so
/// any partition count works. The diff's hash map mixes both 8-byte halves of the digest, so
/// keys that share a partition still spread over the whole map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioner {
    partitions: usize,
    /// First of the four digest bytes used (0; 4, 8, 12 for partitions of a partition).
    offset: usize,
}

impl Partitioner {
    /// A partitioner into `partitions` parts (at least 1).
    pub fn new(partitions: usize) -> Self {
        Partitioner {
            partitions: partitions.max(1),
            offset: 0,
        }
    }

    /// A partitioner into `partitions` parts of one partition of a partitioner `level` levels
    /// up (1 to 3): it uses the digest's bytes `4 * level` to `4 * level + 3`, which are
    /// independent of the bytes that made that partition.
    pub fn nested(partitions: usize, level: usize) -> Self {
        Partitioner {
            partitions: partitions.max(1),
            offset: 4 * level.min(3),
        }
    }

    /// The partition of one digest.
    pub fn of(&self, digest: &[u8]) -> usize {
        let mut b = [0u8; 4];
        let digest = digest.get(self.offset..).unwrap_or_default();
        let n = digest.len().min(4);
        b[..n].copy_from_slice(&digest[..n]);
        ((u32::from_be_bytes(b) as u64 * self.partitions as u64) >> 32) as usize
    }

    /// Splits `batch` by the digest in column `keyhash_index` into (partition, rows) pieces,
    /// each partition's rows in their original order.
    ///
    /// # Errors
    /// Arrow errors from `take`; [`Error::Internal`] if the column is not binary.
    pub fn split(
        &self,
        batch: &RecordBatch,
        keyhash_index: usize,
    ) -> Result<Vec<(usize, RecordBatch)>> {
        if self.partitions == 1 {
            return Ok(vec![(0, batch.clone())]);
        }
        let keys = batch
            .column(keyhash_index)
            .as_binary_opt::<i32>()
            .ok_or_else(|| Error::Internal("keyhash column is not binary".into()))?;
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); self.partitions];
        for row in 0..keys.len() {
            indices[self.of(keys.value(row))].push(row as u32);
        }
        let mut out = Vec::new();
        for (p, rows) in indices.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let rows = UInt32Array::from(rows);
            out.push((p, take_record_batch(batch, &rows)?));
        }
        Ok(out)
    }
}

/// One side's partition: batches in memory plus segments spilled to a file.
#[derive(Debug, Default)]
struct Part {
    memory: Vec<RecordBatch>,
    memory_bytes: usize,
    rows: u64,
    /// The spilled IPC stream segments, and the file's length.
    segments: Vec<Segment>,
    file_len: u64,
}

/// A partition's batches (`bytes` of them) handed to a spill thread, to be appended to `path`.
struct SpillJob {
    side: usize,
    partition: usize,
    path: PathBuf,
    batches: Vec<RecordBatch>,
    bytes: usize,
}

/// The thread writing a spill: it returns, per job, (side, partition, the segment's IPC length,
/// the bytes appended). Each segment starts at its partition's `file_len`, which only landing
/// a spill moves.
type Flight = JoinHandle<Result<Vec<(usize, usize, u64, u64)>>>;

/// Counters of a store, for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpillStats {
    /// Bytes written to spill files (Arrow IPC, with direct I/O's padding).
    pub spilled_bytes: u64,
    /// Whether spill files bypass the page cache (direct I/O; see [`SpillIo`]).
    pub direct_io: bool,
    /// Times the store spilled to get back under its budget.
    pub spills: u64,
    /// Largest number of bytes the store held in memory at once (Arrow buffer sizes), the
    /// batches of a spill still being written included.
    pub peak_memory_bytes: u64,
}

/// Partitioned batches of several sides (e.g. incoming and current) under one memory budget.
pub struct SpillStore {
    schemas: Vec<SchemaRef>,
    /// `parts[side][partition]`
    parts: Vec<Vec<Part>>,
    budget: usize,
    /// Bytes of the batches held in partitions (not handed to a spill).
    memory_bytes: usize,
    /// The spill being written, if any.
    flight: Option<Flight>,
    /// Bytes of its batches not yet written (its thread counts them down).
    in_flight: Arc<AtomicUsize>,
    /// Whether a spill failed: its partitions lost rows, so nothing more is taken.
    spill_failed: bool,
    io: SpillIo,
    dir: tempfile::TempDir,
    stats: SpillStats,
}

/// Name prefix of each run's spill folder.
const SPILL_PREFIX: &str = "tributary-spill-";

/// A new spill folder of this run under `spill_dir` (made if absent), with its owner file: a
/// later run removes it if this process is killed before it does ([`reclaim_abandoned`], run
/// here first). Removed when dropped.
///
/// # Errors
/// [`Error::Storage`] when a folder cannot be created.
pub fn owned_folder(spill_dir: &Path) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(spill_dir).map_err(|e| Error::Storage {
        action: "cannot create the spill folder".into(),
        path: spill_dir.to_path_buf(),
        source: e,
    })?;
    reclaim_abandoned(spill_dir);
    let dir = tempfile::Builder::new()
        .prefix(SPILL_PREFIX)
        .tempdir_in(spill_dir)
        .map_err(|e| Error::Storage {
            action: "cannot create a spill folder in".into(),
            path: spill_dir.to_path_buf(),
            source: e,
        })?;
    // Which process this folder is: a later run removes it once that process is gone.
    if let Some(owner) = owner::current() {
        let _ = std::fs::write(dir.path().join(owner::FILE), owner);
    }
    Ok(dir)
}

/// Removes the spill folders under `spill_dir` that a process left when it was killed
/// (SIGKILL, a crash: its destructor never ran): those whose owner file names a process that
/// is gone. Folders of live processes, and folders without an owner file (of other programs,
/// or of versions before owner files), are left alone. Best effort: failures are logged.
pub fn reclaim_abandoned(spill_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(spill_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(SPILL_PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(path.join(owner::FILE)) else {
            continue;
        };
        if owner::is_gone(&text) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed the spill folder of a run that is gone")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot remove the spill folder of a run that is gone: {e}")
                }
            }
        }
    }
}

/// The process that owns a spill folder: its pid and start time (since boot, in clock ticks,
/// from Linux `/proc/<pid>/stat`: a reused pid is not mistaken for the owner), the boot it ran
/// in and its pid namespace. Only an owner of this boot and namespace can be judged gone: a
/// process of another container, host or boot sharing the folder is left alone.
mod owner {
    /// The owner file in each spill folder.
    pub(super) const FILE: &str = "owner";

    /// This process, as written in the owner file (None where `/proc` is missing).
    pub(super) fn current() -> Option<String> {
        let pid = std::process::id();
        Some(format!("{pid} {} {}", start_time(pid)?, world()?))
    }

    /// This boot and pid namespace, as one word.
    fn world() -> Option<String> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
        Some(format!("{}/{}", boot.trim(), namespace.display()).replace(' ', "_"))
    }

    /// Whether the owner `text` names a process of this boot and namespace that no longer
    /// runs. An owner file that does not parse, of an older format, or of another boot or
    /// namespace, counts as alive.
    pub(super) fn is_gone(text: &str) -> bool {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [pid, started, their_world] = parts[..] else {
            return false;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            return false;
        };
        if world().as_deref() != Some(their_world) {
            return false;
        }
        start_time(pid).is_none_or(|now| now != started)
    }

    /// Field 22 of `/proc/<pid>/stat` (after the command name, which may hold spaces).
    fn start_time(pid: u32) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name = &stat[stat.rfind(')')? + 1..];
        after_name.split_whitespace().nth(19).map(str::to_string)
    }
}

impl SpillStore {
    /// A store with one schema per side, `partitions` partitions each, holding at most
    /// `budget` bytes in memory; spill files go to a new folder under `spill_dir`, with direct
    /// I/O if a probe file there takes it ([`SpillIo::probe`]).
    ///
    /// # Errors
    /// [`Error::Storage`] when the temporary folder cannot be created.
    pub fn new(
        schemas: Vec<SchemaRef>,
        partitions: usize,
        budget: usize,
        spill_dir: &Path,
    ) -> Result<Self> {
        let dir = owned_folder(spill_dir)?;
        let parts = schemas
            .iter()
            .map(|_| (0..partitions.max(1)).map(|_| Part::default()).collect())
            .collect();
        let io = SpillIo::probe(dir.path());
        Ok(SpillStore {
            schemas,
            parts,
            budget,
            memory_bytes: 0,
            flight: None,
            in_flight: Arc::default(),
            spill_failed: false,
            io,
            dir,
            stats: SpillStats {
                direct_io: io == SpillIo::Direct,
                ..SpillStats::default()
            },
        })
    }

    /// Adds a side of rows of `schema` (every partition empty); returns its index.
    pub fn add_side(&mut self, schema: SchemaRef) -> usize {
        let partitions = self.parts.first().map_or(1, Vec::len);
        self.schemas.push(schema);
        self.parts
            .push((0..partitions).map(|_| Part::default()).collect());
        self.parts.len() - 1
    }

    /// Counters so far.
    pub fn stats(&self) -> SpillStats {
        self.stats
    }

    /// Rows held by one side, over all partitions.
    pub fn rows(&self, side: usize) -> u64 {
        self.parts[side].iter().map(|p| p.rows).sum()
    }

    fn path(&self, side: usize, partition: usize) -> PathBuf {
        self.dir.path().join(format!("s{side}-p{partition}.arrows"))
    }

    /// Adds a batch to a partition of a side, spilling when over budget.
    ///
    /// # Errors
    /// I/O and Arrow IPC errors while spilling.
    pub fn push(&mut self, side: usize, partition: usize, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let bytes = batch.get_array_memory_size();
        let part = &mut self.parts[side][partition];
        part.rows += batch.num_rows() as u64;
        part.memory_bytes += bytes;
        part.memory.push(batch);
        self.memory_bytes += bytes;
        let held = self.memory_bytes + self.in_flight.load(Ordering::Relaxed);
        self.stats.peak_memory_bytes = self.stats.peak_memory_bytes.max(held as u64);
        if self.memory_bytes > self.budget {
            self.spill_until(self.budget / 2)?;
        }
        Ok(())
    }

    /// Waits for the spill being written, if any, and records its segments.
    ///
    /// # Errors
    /// The spill's I/O and Arrow IPC errors; [`Error::Internal`] once a spill has failed.
    pub fn land(&mut self) -> Result<()> {
        if self.spill_failed {
            return Err(Error::Internal("a spill failed earlier".into()));
        }
        let Some(flight) = self.flight.take() else {
            return Ok(());
        };
        let written = flight.join();
        // A failed spill leaves its unwritten batches uncounted down; they are gone now.
        self.in_flight.store(0, Ordering::Relaxed);
        let written = written
            .map_err(|_| Error::Internal("spill thread panicked".into()))
            .and_then(|w| w)
            .inspect_err(|_| self.spill_failed = true)?;
        for (side, partition, len, appended) in written {
            let part = &mut self.parts[side][partition];
            part.segments.push(Segment {
                start: part.file_len,
                len,
            });
            self.stats.spilled_bytes += appended;
            part.file_len += appended;
        }
        Ok(())
    }

    /// Hands the largest in-memory partitions to a spill thread until at most `target` bytes
    /// stay in memory, once the spill before (if any) is written.
    fn spill_until(&mut self, target: usize) -> Result<()> {
        self.land()?;
        self.stats.spills += 1;
        let mut sizes: Vec<(usize, usize, usize)> = self
            .parts
            .iter()
            .enumerate()
            .flat_map(|(s, parts)| {
                parts
                    .iter()
                    .enumerate()
                    .map(move |(p, part)| (part.memory_bytes, s, p))
            })
            .filter(|(bytes, _, _)| *bytes > 0)
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let mut jobs = Vec::new();
        for (_, side, partition) in sizes {
            if self.memory_bytes <= target {
                break;
            }
            let path = self.path(side, partition);
            let part = &mut self.parts[side][partition];
            let freed = std::mem::take(&mut part.memory_bytes);
            self.memory_bytes -= freed;
            self.in_flight.fetch_add(freed, Ordering::Relaxed);
            jobs.push(SpillJob {
                side,
                partition,
                path,
                batches: std::mem::take(&mut part.memory),
                bytes: freed,
            });
        }
        let (schemas, io) = (self.schemas.clone(), self.io);
        let in_flight = self.in_flight.clone();
        let flight = std::thread::Builder::new()
            .name("spill".into())
            .spawn(move || {
                let mut scratch = Scratch::default();
                jobs.into_iter()
                    .map(|job| {
                        let schema = &schemas[job.side];
                        let (len, appended) =
                            segment::append(io, &job.path, schema, job.batches, &mut scratch)?;
                        in_flight.fetch_sub(job.bytes, Ordering::Relaxed);
                        Ok((job.side, job.partition, len, appended))
                    })
                    .collect()
            })
            .map_err(|e| Error::Internal(format!("cannot start a spill thread: {e}")))?;
        self.flight = Some(flight);
        Ok(())
    }

    /// Takes one partition's batches of one side out of the store (spilled segments first,
    /// then what stayed in memory, so arrival order is kept).
    ///
    /// # Errors
    /// I/O and Arrow IPC errors reading spill files.
    pub fn take(&mut self, side: usize, partition: usize) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        self.take_each(side, partition, |batch| {
            out.push(batch);
            Ok(())
        })?;
        Ok(out)
    }

    /// Takes one partition's batches of one side out of the store as [`take`](Self::take)
    /// does, handing them to `each` one spilled segment at a time: a partition larger than
    /// memory can be split again without being read whole.
    ///
    /// # Errors
    /// I/O and Arrow IPC errors reading spill files; `each`'s errors.
    pub fn take_each(
        &mut self,
        side: usize,
        partition: usize,
        mut each: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.land()?;
        let path = self.path(side, partition);
        let part = std::mem::take(&mut self.parts[side][partition]);
        self.memory_bytes -= part.memory_bytes;
        for segment in &part.segments {
            for batch in segment::read(self.io, &path, std::slice::from_ref(segment))? {
                each(batch)?;
            }
        }
        if !part.segments.is_empty() {
            let _ = std::fs::remove_file(&path);
        }
        part.memory.into_iter().try_for_each(each)
    }

    /// Moves the store into a shareable form whose partitions can be taken from several
    /// threads.
    pub fn into_shared(self) -> SharedStore {
        SharedStore {
            inner: std::sync::Mutex::new(self),
        }
    }
}

impl Drop for SpillStore {
    /// Waits for a spill being written, so its thread is done with the folder before it is
    /// removed (its result is of no use by now).
    fn drop(&mut self) {
        if let Some(flight) = self.flight.take() {
            let _ = flight.join();
        }
    }
}

/// A [`SpillStore`] behind a lock, for diffing partitions on several threads.
pub struct SharedStore {
    inner: std::sync::Mutex<SpillStore>,
}

impl SharedStore {
    /// Takes one partition of every side. File reads happen under the lock, one at a time,
    /// which keeps the disk reading sequentially.
    ///
    /// # Errors
    /// As [`SpillStore::take`].
    pub fn take_all(&self, partition: usize) -> Result<Vec<Vec<RecordBatch>>> {
        let mut store = self
            .inner
            .lock()
            .map_err(|_| Error::Internal("spill store lock poisoned".into()))?;
        (0..store.parts.len())
            .map(|side| store.take(side, partition))
            .collect()
    }

    /// Counters of the store.
    pub fn stats(&self) -> SpillStats {
        self.inner.lock().map(|s| s.stats()).unwrap_or_default()
    }

    /// Starts a thread in `scope` that takes partitions `0..partitions` out of the store in
    /// order ([`SharedStore::take_all`]) and hands each to the next caller of
    /// [`ReadAhead::next`] on the returned handle, holding at most one partition read ahead.
    /// Reading a partition's spill files thus overlaps the work on the one before. The thread
    /// ends after the last partition, after a failed take (handed out as the error), or once
    /// every clone of the handle is dropped.
    pub fn read_ahead<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        partitions: usize,
    ) -> Arc<ReadAhead> {
        // A rendezvous channel: the thread holds one partition until it is asked for.
        let (ahead, taken) = sync_channel(0);
        let ended = Arc::new(AtomicBool::new(false));
        let thread_ended = ended.clone();
        scope.spawn(move || {
            // A panic ends the thread without `ended` set (the callers get an error), not the
            // scope: `std::thread::scope` would panic on joining a panicked thread.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                for partition in 0..partitions {
                    let sides = self.take_all(partition);
                    let failed = sides.is_err();
                    if ahead.send(sides).is_err() || failed {
                        break;
                    }
                }
                thread_ended.store(true, Ordering::SeqCst);
            }));
        });
        Arc::new(ReadAhead {
            taken: Mutex::new(taken),
            ended,
        })
    }
}

/// Every side of one partition, as taken from the store.
pub type Sides = Vec<Vec<RecordBatch>>;

/// The handle of a read-ahead thread ([`SharedStore::read_ahead`]), shared by the threads
/// that ask it for partitions.
pub struct ReadAhead {
    taken: Mutex<Receiver<Result<Sides>>>,
    /// Set by the thread when it ends other than by a panic.
    ended: Arc<AtomicBool>,
}

impl ReadAhead {
    /// The next partition's sides, waiting for it to be read; `None` once every partition
    /// has been handed out (or a failed take, to its caller).
    ///
    /// # Errors
    /// Those of [`SharedStore::take_all`]; [`Error::Internal`] when the read-ahead thread
    /// panicked (its partitions are not all handed out) or a caller panicked while waiting.
    pub fn next(&self) -> Option<Result<Sides>> {
        let Ok(taken) = self.taken.lock() else {
            return Some(Err(Error::Internal(
                "a thread waiting for a partition panicked".into(),
            )));
        };
        match taken.recv() {
            Ok(sides) => Some(sides),
            Err(_) if self.ended.load(Ordering::SeqCst) => None,
            Err(_) => Some(Err(Error::Internal(
                "the thread reading partitions ahead panicked".into(),
            ))),
        }
    }
}

#[cfg(test)]
mod owner_tests {
    use super::*;

    #[test]
    fn folders_of_processes_that_are_gone_are_removed_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let folder = |name: &str, owner: Option<String>| {
            let path = root.path().join(name);
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("p0.arrow"), b"spilled").unwrap();
            if let Some(owner) = owner {
                std::fs::write(path.join(owner::FILE), owner).unwrap();
            }
            path
        };
        let me = owner::current().unwrap();
        let world = me.split_whitespace().nth(2).unwrap().to_string();
        let mine = folder("tributary-spill-live", Some(me.clone()));
        // A pid that exists (this one) but started at another time: a reused pid.
        let reused = folder(
            "tributary-spill-reused",
            Some(format!("{} 1 {world}", std::process::id())),
        );
        let gone = folder(
            "tributary-spill-gone",
            Some(format!("4194303 12345 {world}")),
        );
        // Another container or boot: not ours to judge.
        let elsewhere = folder(
            "tributary-spill-elsewhere",
            Some("4194303 12345 x/y".into()),
        );
        let older = folder("tributary-spill-2-fields", Some("4194303 12345".into()));
        let old = folder("tributary-spill-old", None);
        let other = folder("not-ours", Some(format!("4194303 12345 {world}")));
        reclaim_abandoned(root.path());
        assert!(mine.exists() && old.exists() && other.exists());
        assert!(elsewhere.exists() && older.exists());
        assert!(!gone.exists() && !reused.exists());
        // A store writes its owner file.
        let schema = Arc::new(deltalake::arrow::datatypes::Schema::empty());
        let store = SpillStore::new(vec![schema], 1, 1 << 20, root.path()).unwrap();
        let text = std::fs::read_to_string(store.dir.path().join(owner::FILE)).unwrap();
        assert!(!owner::is_gone(&text), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{BinaryArray, Int64Array};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("keyhash", DataType::Binary, false),
            Field::new("n", DataType::Int64, false),
        ]))
    }

    fn batch(from: i64, to: i64) -> RecordBatch {
        let keys: Vec<[u8; 16]> = (from..to)
            .map(|i| {
                let mut d = [0u8; 16];
                d[..8]
                    .copy_from_slice(&(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
                d
            })
            .collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(BinaryArray::from_iter_values(keys)),
                Arc::new(Int64Array::from_iter_values(from..to)),
            ],
        )
        .unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn partitioner_covers_every_partition_and_is_stable() {
        let p = Partitioner::new(7);
        let pieces = p.split(&batch(0, 10_000), 0).unwrap();
        assert_eq!(pieces.len(), 7, "every partition gets rows");
        let total: usize = pieces.iter().map(|(_, b)| b.num_rows()).sum();
        assert_eq!(total, 10_000);
        for (part, piece) in &pieces {
            let keys = piece.column(0).as_binary::<i32>();
            assert!((0..keys.len()).all(|i| p.of(keys.value(i)) == *part));
            let v = values(std::slice::from_ref(piece));
            assert!(v.windows(2).all(|w| w[0] < w[1]), "row order kept");
        }
        assert_eq!(Partitioner::new(1).of(&[0xff; 16]), 0);
        assert_eq!(Partitioner::new(256).of(&[0xff; 16]), 255);
        assert_eq!(Partitioner::new(256).of(&[0x00; 16]), 0);
    }

    #[test]
    fn a_nested_partitioner_spreads_the_keys_of_one_partition() {
        // every digest here has the same first four bytes: one partition at level 0
        let digests: Vec<[u8; 16]> = (0..4096u32)
            .map(|i| {
                let mut d = [0u8; 16];
                d[..4].copy_from_slice(&[0xab; 4]);
                d[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
                d[8..12].copy_from_slice(&[0x11; 4]);
                d
            })
            .collect();
        let top = Partitioner::new(16);
        assert!(digests.iter().all(|d| top.of(d) == top.of(&digests[0])));
        let nested = Partitioner::nested(8, 1);
        let mut counts = [0usize; 8];
        for d in &digests {
            counts[nested.of(d)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 300), "{counts:?}");
        // level 2 reads bytes 8..12, the same for all: one partition again
        let level2 = Partitioner::nested(8, 2);
        assert!(digests
            .iter()
            .all(|d| level2.of(d) == level2.of(&digests[0])));
        // a short digest does not panic
        assert_eq!(Partitioner::nested(8, 3).of(&[1, 2]), 0);
    }

    #[test]
    fn store_spills_over_budget_and_returns_rows_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(0, 1000).get_array_memory_size();
        let mut store = SpillStore::new(vec![schema(), schema()], 2, one * 3, dir.path()).unwrap();
        for i in 0..10 {
            store
                .push(i % 2, 0, batch(i as i64 * 1000, i as i64 * 1000 + 1000))
                .unwrap();
        }
        store.push(1, 1, batch(50_000, 50_010)).unwrap();
        store.land().unwrap();
        let stats = store.stats();
        assert!(stats.spills > 0 && stats.spilled_bytes > 0, "{stats:?}");
        // While a spill is written: its batches (at most the budget and the batch that went
        // over it) and as much again.
        assert!(
            stats.peak_memory_bytes <= (2 * (one * 3 + one)) as u64,
            "{stats:?}"
        );
        assert_eq!(store.rows(0), 5000);
        assert_eq!(store.rows(1), 5010);
        // side 1 one batch at a time: the same rows in the same order, then its file is gone
        let mut pieces = Vec::new();
        store
            .take_each(1, 0, |b| {
                pieces.push(b);
                Ok(())
            })
            .unwrap();
        let expected1: Vec<i64> = (1..10)
            .step_by(2)
            .flat_map(|i| i * 1000..i * 1000 + 1000)
            .collect();
        assert_eq!(values(&pieces), expected1);
        assert!(pieces.len() > 1, "handed out a segment at a time");
        assert!(!store.path(1, 0).exists());
        assert!(store.take(1, 0).unwrap().is_empty(), "taken once");
        let side0 = values(&store.take(0, 0).unwrap());
        let expected: Vec<i64> = (0..10)
            .step_by(2)
            .flat_map(|i| i * 1000..i * 1000 + 1000)
            .collect();
        assert_eq!(side0, expected);
        let shared = store.into_shared();
        let all = shared.take_all(1).unwrap();
        assert_eq!(values(&all[1]), (50_000..50_010).collect::<Vec<_>>());
        assert!(all[0].is_empty());
        // Taken partitions are gone.
        assert!(shared.take_all(0).unwrap()[0].is_empty());
    }

    #[test]
    fn a_spill_that_cannot_be_written_fails_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(0, 1000).get_array_memory_size();
        let mut store = SpillStore::new(vec![schema()], 2, one, dir.path()).unwrap();
        // The spill thread finds its folder gone.
        std::fs::remove_dir_all(store.dir.path()).unwrap();
        store.push(0, 0, batch(0, 1000)).unwrap();
        store.push(0, 1, batch(1000, 2000)).unwrap();
        assert_eq!(store.stats().spills, 1);
        let err = store.take(0, 0).unwrap_err().to_string();
        assert!(err.contains("cannot write spill file"), "{err}");
        // The partitions of the failed spill lost rows: nothing more is taken.
        let err = store.take(0, 1).unwrap_err().to_string();
        assert!(err.contains("a spill failed earlier"), "{err}");
    }

    #[test]
    fn batches_pushed_while_a_spill_is_written_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch(0, 100).get_array_memory_size();
        // Every other push spills: spills are in flight while the next batches arrive.
        let mut store = SpillStore::new(vec![schema()], 1, one, dir.path()).unwrap();
        for i in 0..50 {
            store.push(0, 0, batch(i * 100, i * 100 + 100)).unwrap();
        }
        assert!(store.stats().spills >= 20, "{:?}", store.stats());
        assert_eq!(
            values(&store.take(0, 0).unwrap()),
            (0..5000).collect::<Vec<_>>()
        );
    }

    /// A store of `partitions` partitions of one side, 1,000 rows each (partition `p` holds
    /// `p * 1000..p * 1000 + 1000`), spilled past a budget of two of them.
    fn spilled_store(dir: &Path, partitions: usize) -> SpillStore {
        let one = batch(0, 1000).get_array_memory_size();
        let mut store = SpillStore::new(vec![schema()], partitions, 2 * one, dir).unwrap();
        for p in 0..partitions {
            let from = p as i64 * 1000;
            store.push(0, p, batch(from, from + 1000)).unwrap();
        }
        store.land().unwrap();
        assert!(store.stats().spills > 0, "{:?}", store.stats());
        store
    }

    #[test]
    fn read_ahead_hands_out_every_partition_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = spilled_store(dir.path(), 5).into_shared();
        std::thread::scope(|scope| {
            let ahead = store.read_ahead(scope, 5);
            // Two threads ask at once; each partition reaches exactly one of them.
            let askers: Vec<_> = (0..2)
                .map(|_| {
                    let ahead = ahead.clone();
                    scope.spawn(move || {
                        let mut got = Vec::new();
                        while let Some(sides) = ahead.next() {
                            got.push(values(&sides.unwrap()[0]));
                        }
                        got
                    })
                })
                .collect();
            let mut got: Vec<Vec<i64>> =
                askers.into_iter().flat_map(|a| a.join().unwrap()).collect();
            got.sort();
            let want: Vec<Vec<i64>> = (0..5)
                .map(|p| (p * 1000..p * 1000 + 1000).collect())
                .collect();
            assert_eq!(got, want);
            assert!(ahead.next().is_none(), "nothing after the last partition");
        });
    }

    #[test]
    fn read_ahead_stops_once_its_handles_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = spilled_store(dir.path(), 6).into_shared();
        // The scope ends only if the thread does: it must not wait on a partition nobody takes.
        std::thread::scope(|scope| {
            let ahead = store.read_ahead(scope, 6);
            assert_eq!(
                values(&ahead.next().unwrap().unwrap()[0]),
                (0..1000).collect::<Vec<_>>()
            );
        });
        // The thread took the next partition (read ahead) at most: the rest are still there.
        let left = (2..6)
            .filter(|&p| !store.take_all(p).unwrap()[0].is_empty())
            .count();
        assert_eq!(left, 4);
    }

    #[test]
    fn a_failed_take_is_handed_out_and_ends_the_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let store = spilled_store(dir.path(), 3);
        // Spill files gone from under the store: the first take fails.
        std::fs::remove_dir_all(store.dir.path()).unwrap();
        let store = store.into_shared();
        std::thread::scope(|scope| {
            let ahead = store.read_ahead(scope, 3);
            // Partition 0 stayed in memory; the next one's spill file is gone.
            assert_eq!(
                values(&ahead.next().unwrap().unwrap()[0]),
                (0..1000).collect::<Vec<_>>()
            );
            let err = ahead.next().unwrap().unwrap_err().to_string();
            assert!(err.contains("cannot read spill file"), "{err}");
            assert!(ahead.next().is_none(), "no partition after a failed take");
        });
    }

    #[test]
    fn the_store_uses_direct_io_where_the_probe_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = spilled_store(dir.path(), 3);
        let direct = SpillIo::probe(dir.path()) == SpillIo::Direct;
        let stats = store.stats();
        assert_eq!(stats.direct_io, direct, "{stats:?}");
        if direct {
            // Every segment is padded to whole blocks.
            assert_eq!(stats.spilled_bytes % segment::BLOCK as u64, 0, "{stats:?}");
        }
    }

    #[test]
    fn store_under_budget_never_touches_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SpillStore::new(vec![schema()], 4, usize::MAX, dir.path()).unwrap();
        for (p, piece) in Partitioner::new(4).split(&batch(0, 5000), 0).unwrap() {
            store.push(0, p, piece).unwrap();
        }
        assert_eq!(store.stats().spilled_bytes, 0);
        let spill_files = std::fs::read_dir(store.dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != owner::FILE)
            .count();
        assert_eq!(spill_files, 0, "no spill file besides the owner file");
        let mut all: Vec<i64> = (0..4)
            .flat_map(|p| values(&store.take(0, p).unwrap()))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..5000).collect::<Vec<_>>());
    }
}
