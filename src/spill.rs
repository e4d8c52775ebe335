//! Partitioning by keyhash and spilling to disk: the build side of a grace hash join.
//!
//! Both sides of the diff (incoming rows and current rows) are split into the same `P`
//! partitions by their keyhash, so every key meets its counterpart in one partition and each
//! partition is diffed on its own, within the memory limit. Partitions are held in memory
//! while the [`SpillStore`] stays under its byte budget; past it, the largest in-memory
//! partitions are appended to files in a temporary folder as Arrow IPC streams (one file per
//! side and partition, one stream segment per spill), and read back when the partition is
//! diffed. The folder is removed when the store is dropped.
//!
//! A spill is written on a thread of its own while the store goes on taking batches, so the
//! reader feeding the store does not wait for the disk: the batches of one spill (about half
//! the budget) stay in memory until written, and a store over budget again first waits for
//! them. The store therefore holds about one and a half times its budget at once, at most
//! twice (a spill of partitions larger than half the budget); `plan` gives the share of the
//! memory limit that covers it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use deltalake::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::buffer::Buffer;
use deltalake::arrow::compute::{concat_batches, take_record_batch};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::ipc::reader::StreamDecoder;
use deltalake::arrow::ipc::writer::StreamWriter;

use crate::error::{Error, Result};

/// Maps keyhash digests to partitions.
///
/// Uses the first four bytes of the digest (uniformly distributed) with a multiply-shift, so
/// any partition count works. The diff's hash map mixes both 8-byte halves of the digest, so
/// keys that share a partition still spread over the whole map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioner {
    partitions: usize,
}

impl Partitioner {
    /// A partitioner into `partitions` parts (at least 1).
    pub fn new(partitions: usize) -> Self {
        Partitioner {
            partitions: partitions.max(1),
        }
    }

    /// The partition of one digest.
    pub fn of(&self, digest: &[u8]) -> usize {
        let mut b = [0u8; 4];
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
    /// Byte offsets where each spilled IPC stream segment starts, and the file's length.
    segments: Vec<u64>,
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

/// The thread writing a spill: it returns, per job, (side, partition, the file's new length).
/// Each segment starts at its partition's `file_len`, which only landing a spill moves.
type Flight = JoinHandle<Result<Vec<(usize, usize, u64)>>>;

/// Counters of a store, for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpillStats {
    /// Bytes written to spill files (Arrow IPC).
    pub spilled_bytes: u64,
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
    dir: tempfile::TempDir,
    stats: SpillStats,
}

impl SpillStore {
    /// A store with one schema per side, `partitions` partitions each, holding at most
    /// `budget` bytes in memory; spill files go to a new folder under `spill_dir`.
    ///
    /// # Errors
    /// [`Error::Input`] when the temporary folder cannot be created.
    pub fn new(
        schemas: Vec<SchemaRef>,
        partitions: usize,
        budget: usize,
        spill_dir: &Path,
    ) -> Result<Self> {
        std::fs::create_dir_all(spill_dir).map_err(|e| Error::Input {
            path: spill_dir.to_path_buf(),
            reason: format!("cannot create the spill folder: {e}"),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("tributary-spill-")
            .tempdir_in(spill_dir)
            .map_err(|e| Error::Input {
                path: spill_dir.to_path_buf(),
                reason: format!("cannot create a spill folder: {e}"),
            })?;
        let parts = schemas
            .iter()
            .map(|_| (0..partitions.max(1)).map(|_| Part::default()).collect())
            .collect();
        Ok(SpillStore {
            schemas,
            parts,
            budget,
            memory_bytes: 0,
            flight: None,
            in_flight: Arc::default(),
            spill_failed: false,
            dir,
            stats: SpillStats::default(),
        })
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
        for (side, partition, end) in written {
            let part = &mut self.parts[side][partition];
            part.segments.push(part.file_len);
            self.stats.spilled_bytes += end - part.file_len;
            part.file_len = end;
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
        let schemas = self.schemas.clone();
        let in_flight = self.in_flight.clone();
        let flight = std::thread::Builder::new()
            .name("spill".into())
            .spawn(move || {
                jobs.into_iter()
                    .map(|job| {
                        let end = write_segment(&job.path, &schemas[job.side], job.batches)?;
                        in_flight.fetch_sub(job.bytes, Ordering::Relaxed);
                        Ok((job.side, job.partition, end))
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
        self.land()?;
        let path = self.path(side, partition);
        let part = std::mem::take(&mut self.parts[side][partition]);
        self.memory_bytes -= part.memory_bytes;
        let mut out = Vec::new();
        if !part.segments.is_empty() {
            let mut bytes = Vec::with_capacity(part.file_len as usize);
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| Error::Input {
                    path: path.clone(),
                    reason: format!("cannot read spill file: {e}"),
                })?;
            let _ = std::fs::remove_file(&path);
            // Decoded arrays point into the file's bytes (no second copy of the partition).
            let bytes = Buffer::from_vec(bytes);
            let mut bounds = part.segments.clone();
            bounds.push(part.file_len);
            for w in bounds.windows(2) {
                let mut segment = bytes.slice_with_length(w[0] as usize, (w[1] - w[0]) as usize);
                let mut decoder = StreamDecoder::new();
                while !segment.is_empty() {
                    if let Some(batch) = decoder.decode(&mut segment)? {
                        out.push(batch);
                    }
                }
                decoder.finish()?;
            }
        }
        out.extend(part.memory);
        Ok(out)
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

/// Appends `batches` to the file at `path` as one IPC stream segment (one batch: partitions
/// receive many small pieces) and returns the file's length after it.
fn write_segment(path: &Path, schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<u64> {
    let io_err = |e: std::io::Error| Error::Input {
        path: path.to_path_buf(),
        reason: format!("cannot write spill file: {e}"),
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err)?;
    let mut writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema)?;
    let merged = concat_batches(schema, &batches)?;
    drop(batches);
    writer.write(&merged)?;
    writer.finish()?;
    let mut file = writer
        .into_inner()?
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?;
    file.seek(SeekFrom::End(0)).map_err(io_err)
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

    #[test]
    fn store_under_budget_never_touches_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SpillStore::new(vec![schema()], 4, usize::MAX, dir.path()).unwrap();
        for (p, piece) in Partitioner::new(4).split(&batch(0, 5000), 0).unwrap() {
            store.push(0, p, piece).unwrap();
        }
        assert_eq!(store.stats().spilled_bytes, 0);
        let spill_files = std::fs::read_dir(store.dir.path()).unwrap().count();
        assert_eq!(spill_files, 0);
        let mut all: Vec<i64> = (0..4)
            .flat_map(|p| values(&store.take(0, p).unwrap()))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..5000).collect::<Vec<_>>());
    }
}
