//! Checkpoints: how far a change source has been consumed. A run commits its checkpoint in the
//! same Delta commit as the data it produced (the sink contract), so after a crash a source is
//! asked for what lies past the committed checkpoint and nothing is lost or repeated.
//!
//! A landing zone's checkpoint is a set of files ([`Checkpoint::Files`], rows of the
//! applied-files table); a replication slot's is an LSN ([`Checkpoint::Lsn`], in the run record
//! of the commit info); a binlog position is the next kind.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// Kind of an applied file: a DMS full-load file.
pub const LOAD: &str = "load";
/// Kind of an applied file: a change file (DMS change file, Debezium event file).
pub const CHANGE: &str = "change";
/// Kind of an applied file: a change file older than a reload, recorded without being applied.
pub const SUPERSEDED: &str = "superseded";

/// One applied file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct AppliedFile {
    /// Path relative to the table's landing folder, `/`-separated.
    pub file: String,
    /// [`LOAD`], [`CHANGE`] or [`SUPERSEDED`].
    pub kind: &'static str,
    /// File size when applied, bytes.
    pub size_bytes: i64,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// Change rows read from the file.
    pub rows: i64,
    /// Digest of the file's bytes ([`content_digest`]), recorded for `LOAD` files: a load
    /// copied again with new modification times is recognised by it (None: not recorded).
    pub digest: Option<String>,
    /// The object's ETag, for a file listed in an object store (None: a local file, or a
    /// store that gave none).
    pub etag: Option<String>,
}

/// The digest of a file's bytes: 32 hex digits of XXH3-128, read in 1 MiB blocks.
///
/// # Errors
/// I/O errors opening or reading the file.
pub fn content_digest(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

/// The source position a run's change batches reach: what the run consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Checkpoint {
    /// Files of a landing zone, each applied (or recorded as superseded) once; committed as
    /// rows of the table's applied-files table (`sink::delta::applied`).
    Files(Vec<AppliedFile>),
    /// A PostgreSQL replication slot (`tributary capture`): the first change the table does
    /// not hold ([`SlotPosition`]). Committed in the run record (`source_lsn`).
    Lsn(SlotPosition),
}

/// A place in a replication slot's stream: a transaction's commit LSN, and a change of it by
/// its number in the transaction (1-based; 0 is before its first change). As a checkpoint it
/// is the first change a table does not hold: the table holds a change at `(commit LSN,
/// number)` exactly when that pair is lower. The end LSN of the last transaction applied with
/// number 0 says "every transaction committed before it"; so does a copy's consistent point
/// (the copy holds every transaction committed before it); a transaction committed in parts
/// (a large one) records the number of its first change not yet held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct SlotPosition {
    /// Commit LSN of a transaction (or an end LSN, or a consistent point).
    pub lsn: u64,
    /// Change number within the transaction.
    pub seq: u64,
}

impl SlotPosition {
    /// The position before the first change of any transaction committed at or after `lsn`.
    pub fn at(lsn: u64) -> Self {
        SlotPosition { lsn, seq: 0 }
    }

    /// As PostgreSQL writes LSNs (`16/B374D848`), with the change number after a `+` when it
    /// is not 0 (`16/B374D848+42`).
    pub fn text(self) -> String {
        match self.seq {
            0 => lsn_text(self.lsn),
            seq => format!("{}+{seq}", lsn_text(self.lsn)),
        }
    }

    /// Parses [`text`](Self::text)'s form (None: not a position).
    pub fn parse(text: &str) -> Option<Self> {
        let (lsn, seq) = match text.trim().split_once('+') {
            Some((lsn, seq)) => (lsn, seq.parse().ok()?),
            None => (text, 0),
        };
        Some(SlotPosition {
            lsn: parse_lsn(lsn)?,
            seq,
        })
    }
}

/// An LSN as PostgreSQL writes it: two hexadecimal halves, `16/B374D848`.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses an LSN written as [`lsn_text`] does (None: not an LSN).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

impl Checkpoint {
    /// A digest of what the checkpoint consumed (for files: names, sizes, modification times),
    /// recorded as the run's input fingerprint: 32 hex digits of XXH3-128 over the
    /// length-prefixed fields.
    pub fn fingerprint(&self) -> String {
        let mut bytes = Vec::new();
        match self {
            Checkpoint::Files(files) => {
                for r in files {
                    for part in [
                        r.file.as_bytes(),
                        &r.size_bytes.to_le_bytes(),
                        &r.modified_ms.to_le_bytes(),
                    ] {
                        bytes.extend_from_slice(&(part.len() as u32).to_le_bytes());
                        bytes.extend_from_slice(part);
                    }
                }
            }
            Checkpoint::Lsn(position) => {
                bytes.extend_from_slice(b"lsn");
                bytes.extend_from_slice(&position.lsn.to_le_bytes());
                bytes.extend_from_slice(&position.seq.to_le_bytes());
            }
        }
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
    }

    /// Units consumed: files (one for an LSN).
    pub fn len(&self) -> usize {
        match self {
            Checkpoint::Files(files) => files.len(),
            Checkpoint::Lsn(_) => 1,
        }
    }

    /// The position of a replication slot's checkpoint (None: files).
    pub fn position(&self) -> Option<SlotPosition> {
        match self {
            Checkpoint::Files(_) => None,
            Checkpoint::Lsn(position) => Some(*position),
        }
    }

    /// Whether nothing was consumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a table has applied so far.
#[derive(Debug, Default, Clone)]
pub struct AppliedSet {
    /// Change files by name.
    pub changes: HashSet<String>,
    /// Size of each applied change file when it was applied, bytes.
    pub change_sizes: HashMap<String, i64>,
    /// ETag of each applied change file listed in an object store when it was applied.
    pub change_etags: HashMap<String, String>,
    /// Full-load files applied, by name (a reload applies a name again).
    pub loads: HashMap<String, Vec<AppliedLoad>>,
}

/// One applied full-load file, as the applied-files table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLoad {
    /// The run that applied it.
    pub run: i64,
    /// Size when applied, bytes.
    pub size_bytes: i64,
    /// Modification time when applied, milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// Digest of its bytes ([`content_digest`]; None in tables written before it was kept).
    pub digest: Option<String>,
    /// The object's ETag when it was applied (None: a local file, or not recorded).
    pub etag: Option<String>,
}

impl AppliedSet {
    /// Whether any full-load file was applied.
    pub fn has_load(&self) -> bool {
        !self.loads.is_empty()
    }

    /// Records an applied full-load file.
    pub fn add_load(&mut self, name: impl Into<String>, load: AppliedLoad) {
        self.loads.entry(name.into()).or_default().push(load);
    }

    /// The latest application of the full-load file `name` (None: never applied).
    pub fn last_load(&self, name: &str) -> Option<&AppliedLoad> {
        self.loads.get(name)?.iter().max_by_key(|l| l.run)
    }
}

/// What a table has committed of its sources, read back from the lake before a run asks its
/// source what is pending.
#[derive(Debug, Default, Clone)]
pub struct Committed {
    /// Landing-zone files applied so far.
    pub files: AppliedSet,
    /// The replication slot position the table holds up to ([`Checkpoint::Lsn`]; None: never
    /// captured).
    pub position: Option<SlotPosition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_digest_follows_the_bytes_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        // more than one 1 MiB block, differing only in the last byte
        let mut bytes = vec![7u8; (1 << 20) + 5];
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &bytes).unwrap();
        *bytes.last_mut().unwrap() = 8;
        std::fs::write(&c, &bytes).unwrap();
        let digest = |p| content_digest(p).unwrap();
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        assert_eq!(digest(&a).len(), 32);
        assert!(content_digest(&dir.path().join("missing")).is_err());
    }

    fn file(name: &str, size: i64, modified_ms: i64) -> AppliedFile {
        AppliedFile {
            file: name.into(),
            kind: CHANGE,
            size_bytes: size,
            modified_ms,
            rows: 1,
            digest: None,
            etag: None,
        }
    }

    #[test]
    fn lsns_read_and_write_as_postgresql_does() {
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(lsn_text(0), "0/0");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn(" 0/1A "), Some(0x1A));
        for bad in ["", "16", "x/1", "1/", "1/2/3", "100000000/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
        let at = |lsn, seq| Checkpoint::Lsn(SlotPosition { lsn, seq });
        assert_ne!(at(1, 0).fingerprint(), at(2, 0).fingerprint());
        assert_ne!(at(1, 0).fingerprint(), at(1, 1).fingerprint());
        assert_ne!(
            at(0, 0).fingerprint(),
            Checkpoint::Files(Vec::new()).fingerprint()
        );
        let position = SlotPosition {
            lsn: 0x16_B374_D848,
            seq: 42,
        };
        assert_eq!(position.text(), "16/B374D848+42");
        assert_eq!(SlotPosition::parse("16/B374D848+42"), Some(position));
        assert_eq!(
            SlotPosition::parse("16/B374D848"),
            Some(SlotPosition::at(0x16_B374_D848))
        );
        assert_eq!(SlotPosition::parse("16/B374D848+x"), None);
        // a transaction's changes come after its commit LSN's start, before the next one
        assert!(SlotPosition::at(5) < SlotPosition { lsn: 5, seq: 1 });
        assert!(SlotPosition { lsn: 5, seq: 9 } < SlotPosition::at(6));
    }

    #[test]
    fn the_fingerprint_follows_names_sizes_and_times_unambiguously() {
        let base = Checkpoint::Files(vec![file("a.csv", 10, 1), file("b.csv", 20, 2)]);
        let same = Checkpoint::Files(vec![file("a.csv", 10, 1), file("b.csv", 20, 2)]);
        assert_eq!(base.fingerprint(), same.fingerprint());
        assert_eq!(base.fingerprint().len(), 32);
        for other in [
            Checkpoint::Files(vec![file("a.csv", 10, 1), file("b.csv", 21, 2)]),
            Checkpoint::Files(vec![file("a.csv", 10, 1), file("b.csv", 20, 3)]),
            // the same bytes split differently between names
            Checkpoint::Files(vec![file("a.cs", 10, 1), file("vb.csv", 20, 2)]),
        ] {
            assert_ne!(base.fingerprint(), other.fingerprint());
        }
    }
}
