//! Whether a streamed full load's keys are distinct (`changelog::spill`'s [`Split::Stream`]).
//!
//! A streamed load writes its rows as it reads them, so it cannot take the last change per key
//! as it goes: it logs the first 8 bytes of each row's `keyhash` instead, and checks the log
//! once the stream has ended. The log is split into [`PARTITIONS`] by the digest's top bits;
//! past its budget every partition's digests are appended to a file of the run's spill
//! folder. The check sorts a partition at a time (1/64 of the log, for keys spread evenly) on
//! each of up to `threads` threads, as many as the budget holds partitions (at least one).
//! Two keys whose digests share their first 8 bytes read as a repeat: the load then runs again
//! the way that takes the last change per key, which is correct for any input (for 100M
//! distinct keys the chance is about 3 in 10,000).
//!
//! [`Split::Stream`]: super::spill::Split::Stream

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use deltalake::arrow::array::{Array, BinaryArray};

use crate::error::{Error, Result};

/// Partitions of the digest log.
pub const PARTITIONS: usize = 64;

/// Bytes of one logged digest.
const DIGEST_BYTES: usize = 8;

/// The logged key digests of a streamed load (see the module docs).
pub struct DigestLog {
    /// Digests not yet spilled, by partition.
    parts: Vec<Vec<u64>>,
    /// Digests logged per partition (held and spilled).
    counts: Vec<usize>,
    /// Digests held at most (room in `parts`) before they are spilled.
    budget: usize,
    /// Where spilled digests go: made at the first spill.
    spill_dir: PathBuf,
    folder: Option<tempfile::TempDir>,
    /// Bytes written to spill files.
    spilled_bytes: u64,
}

impl DigestLog {
    /// An empty log that holds at most `budget_bytes` of digests in memory, and spills into a
    /// folder of its own under `spill_dir` past that.
    pub fn new(budget_bytes: usize, spill_dir: PathBuf) -> Self {
        DigestLog {
            parts: vec![Vec::new(); PARTITIONS],
            counts: vec![0; PARTITIONS],
            budget: (budget_bytes / DIGEST_BYTES).max(PARTITIONS),
            spill_dir,
            folder: None,
            spilled_bytes: 0,
        }
    }

    /// Digests logged so far.
    pub fn rows(&self) -> u64 {
        self.counts.iter().sum::<usize>() as u64
    }

    /// Bytes of digests written to spill files so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Whether the digests held are over the budget, counted by the room their buffers take
    /// (which grow by doubling): [`spill`](Self::spill) is due.
    pub fn full(&self) -> bool {
        self.parts.iter().map(Vec::capacity).sum::<usize>() >= self.budget
    }

    /// Logs the digest of every key of a batch (`keyhash`: 16-byte digests).
    ///
    /// # Errors
    /// [`Error::Internal`] for a digest shorter than 8 bytes.
    pub fn push(&mut self, keyhash: &BinaryArray) -> Result<()> {
        for i in 0..keyhash.len() {
            let d = short(keyhash.value(i))?;
            let p = partition(d);
            self.parts[p].push(d);
            self.counts[p] += 1;
        }
        Ok(())
    }

    /// Appends every partition's held digests to its spill file (blocking I/O).
    ///
    /// # Errors
    /// [`Error::Storage`] when the folder or a file cannot be made or written.
    pub fn spill(&mut self) -> Result<()> {
        let folder = match self.folder.take() {
            Some(folder) => folder,
            None => crate::core::spill::owned_folder(&self.spill_dir)?,
        };
        let folder = self.folder.insert(folder).path().to_path_buf();
        for (p, part) in self.parts.iter_mut().enumerate() {
            if part.is_empty() {
                continue;
            }
            let path = part_file(&folder, p);
            let storage = |action: &str, e: std::io::Error| Error::Storage {
                action: format!("cannot {action} the key digests of a streamed load in"),
                path: path.clone(),
                source: e,
            };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| storage("open", e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            for d in part.iter() {
                out.write_all(&d.to_le_bytes())
                    .map_err(|e| storage("write", e))?;
            }
            out.flush().map_err(|e| storage("write", e))?;
            self.spilled_bytes += (part.len() * DIGEST_BYTES) as u64;
            part.clear();
            part.shrink_to_fit();
        }
        Ok(())
    }

    /// Whether two logged keys share a digest, checked a partition at a time on each of up to
    /// `threads` threads, no more than the budget holds of the largest partition (blocking:
    /// reads the spill files and sorts). The spill folder is removed afterwards.
    ///
    /// # Errors
    /// [`Error::Storage`] when a spill file cannot be read.
    pub fn has_repeat(mut self, threads: usize) -> Result<bool> {
        let folder = self.folder.take();
        let largest = self.counts.iter().copied().max().unwrap_or(0).max(1);
        let threads = threads.min(self.budget / largest).clamp(1, PARTITIONS);
        // partitions still to check: their held digests and spill file
        let queue: Vec<(Vec<u64>, Option<PathBuf>)> = std::mem::take(&mut self.parts)
            .into_iter()
            .enumerate()
            .map(|(p, held)| {
                let file = folder
                    .as_ref()
                    .map(|f| part_file(f.path(), p))
                    .filter(|f| f.exists());
                (held, file)
            })
            .collect();
        let queue = Mutex::new(queue);
        let found = AtomicBool::new(false);
        let checked: Vec<Result<()>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        while !found.load(Ordering::Relaxed) {
                            let next = queue
                                .lock()
                                .map_err(|_| Error::Internal("a key check thread failed".into()))?
                                .pop();
                            let Some((held, file)) = next else {
                                break;
                            };
                            if partition_repeats(held, file.as_deref())? {
                                found.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        checked.into_iter().collect::<Result<()>>()?;
        drop(folder);
        Ok(found.into_inner())
    }
}

/// Whether a partition's digests (`held`, and those of its spill `file`) hold one twice. The
/// file is read a MiB at a time into the partition's digests.
fn partition_repeats(mut held: Vec<u64>, file: Option<&std::path::Path>) -> Result<bool> {
    if let Some(path) = file {
        let read = |e: std::io::Error| Error::Storage {
            action: "cannot read the key digests of a streamed load from".into(),
            path: path.to_path_buf(),
            source: e,
        };
        let mut file = std::fs::File::open(path).map_err(read)?;
        let len = file.metadata().map_err(read)?.len() as usize;
        held.reserve(len / DIGEST_BYTES);
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            std::io::Read::read_exact(&mut file, &mut chunk[..n]).map_err(read)?;
            held.extend(
                chunk[..n]
                    .chunks_exact(DIGEST_BYTES)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
            );
            left -= n;
        }
    }
    held.sort_unstable();
    Ok(held.windows(2).any(|w| w[0] == w[1]))
}

/// The spill file of partition `p` in `folder`.
fn part_file(folder: &std::path::Path, p: usize) -> PathBuf {
    folder.join(format!("keys-{p:02}.bin"))
}

/// The first 8 bytes of a digest, as a number.
fn short(digest: &[u8]) -> Result<u64> {
    digest
        .get(..DIGEST_BYTES)
        .and_then(|d| d.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::Internal(format!("a key digest of {} bytes", digest.len())))
}

/// The partition of a digest: its top 6 bits.
fn partition(d: u64) -> usize {
    (d >> (64 - PARTITIONS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(keys: impl Iterator<Item = u64>) -> BinaryArray {
        // spread keys over the partitions as real digests are: a multiplicative hash
        let values: Vec<[u8; 16]> = keys
            .map(|k| {
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
                d
            })
            .collect();
        BinaryArray::from_iter_values(values.iter())
    }

    fn spill_files(root: &std::path::Path) -> usize {
        std::fs::read_dir(root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| std::fs::read_dir(e.path()).map_or(0, |f| f.count()))
                    .sum()
            })
            .unwrap_or(0)
    }

    #[test]
    fn distinct_keys_have_no_repeat_held_or_spilled() {
        let root = tempfile::tempdir().unwrap();
        for budget in [1 << 20, 1024] {
            let mut log = DigestLog::new(budget, root.path().to_path_buf());
            for start in (0..20_000u64).step_by(1000) {
                log.push(&digests(start..start + 1000)).unwrap();
                if log.full() {
                    log.spill().unwrap();
                }
            }
            assert_eq!(log.rows(), 20_000);
            assert_eq!(log.spilled_bytes() > 0, budget == 1024);
            if budget == 1024 {
                assert!(spill_files(root.path()) > PARTITIONS / 2);
            }
            assert!(!log.has_repeat(2).unwrap());
            // the spill folder went with the log
            assert_eq!(spill_files(root.path()), 0);
        }
    }

    #[test]
    fn a_key_logged_twice_is_a_repeat_whether_its_digests_were_held_or_spilled() {
        let root = tempfile::tempdir().unwrap();
        // the repeat in one batch, across batches, and one spilled and one held
        for (first, second, spill_between) in [
            (vec![5u64, 9, 5], vec![], false),
            (vec![1, 2, 3], vec![7, 3], false),
            (vec![1, 2, 3], vec![7, 3], true),
        ] {
            let mut log = DigestLog::new(1 << 20, root.path().to_path_buf());
            log.push(&digests(0..10_000u64)).unwrap();
            log.push(&digests(first.into_iter().map(|k| k + 100_000)))
                .unwrap();
            if spill_between {
                log.spill().unwrap();
            }
            log.push(&digests(second.into_iter().map(|k| k + 100_000)))
                .unwrap();
            assert!(log.has_repeat(2).unwrap());
        }
    }

    #[test]
    fn a_digest_shorter_than_eight_bytes_is_an_internal_error() {
        let mut log = DigestLog::new(1 << 20, std::env::temp_dir());
        let short = BinaryArray::from_iter_values([[1u8; 4]].iter());
        assert!(matches!(log.push(&short), Err(Error::Internal(_))));
    }
}
