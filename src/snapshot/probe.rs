//! The diff of a run whose current table fits in memory as an index, probed by incoming rows as
//! they are read (no keyhash partitions): the rules of `classify` (same table), plus duplicate
//! keys, found here because the rows arrive in file and line order.
//!
//! The index maps each current `keyhash` to its `nonkeyhash`, `eff_start_date` and position
//! (data file, row). A probed key's entry becomes a record of where the key was first seen in
//! the extract, as does the entry of a new key: a later row with the same key is a duplicate
//! naming that place. What is left unprobed at the end is the current rows of keys absent from
//! the extract: D (full extract) or X (delta extract).

use std::collections::hash_map::Entry;

use deltalake::arrow::array::{Array, BinaryArray, Date32Array, UInt32Array};

use crate::config::ExtractType;
use crate::core::key::{key, DigestMap, Key};
use crate::core::op::{Op, OpCounts};
use crate::snapshot::classify::{gone_op, outcome};

/// Bytes of memory per index entry planned for: the map's key and [`Slot`] (48 bytes, and a
/// control byte) at the lowest load the map keeps after growing (7/16), 112 bytes, and half
/// again for the current rows staged before the shards are built (48 bytes each, and a few
/// percent of spare capacity), or the old table a shard (1/16 of the index) still holds while
/// it grows into a new one.
pub const ENTRY_BYTES: u64 = 168;

#[derive(Clone, Copy)]
enum Slot {
    /// A current row whose key the extract has not supplied (yet).
    Current {
        nonkey: Key,
        eff: i32,
        file: u32,
        row: u32,
    },
    /// A key supplied by the extract, first at this (file index, line).
    Seen { file: u32, line: u64 },
}

/// A key supplied again: the row (in its batch) and where the key was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    /// Row of the later occurrence in its batch.
    pub row: usize,
    /// File index of the first occurrence.
    pub first_file: u32,
    /// Line of the first occurrence.
    pub first_line: u64,
}

/// One incoming batch classified: the operation and `eff_start_date` of each row that is not a
/// duplicate, in row order, and the duplicates.
#[derive(Debug, Default, PartialEq)]
pub struct Probed {
    /// Operation and `eff_start_date` (days) of each row.
    pub ops: Vec<(Op, i32)>,
    /// Keys met before in the run (bad rows).
    pub duplicates: Vec<Duplicate>,
}

/// What is left when every incoming row has been probed.
#[derive(Debug, PartialEq)]
pub struct Finished {
    /// Rows per operation.
    pub counts: OpCounts,
    /// Positions (data file, row) of the current rows whose key is absent from the extract,
    /// ascending; all of them have operation `gone_op`.
    pub gone: Vec<(u32, u32)>,
    /// The operation of keys not in the extract (D or X).
    pub gone_op: Op,
}

/// Shards of the index, by the keyhash's top bits: each is built whole, on one of the cores,
/// small enough to stay in cache while it is filled (one map filled row by row in scan order
/// missed the cache on nearly every insert).
const SHARDS: usize = 16;

const _: () = assert!(SHARDS.is_power_of_two() && SHARDS > 1);

/// The shard of a key.
fn shard(key: Key) -> usize {
    (key >> (128 - SHARDS.trailing_zeros())) as usize
}

/// The index of the current table, probed by the extract's rows (see the module docs).
pub struct Probe {
    shards: Vec<DigestMap<Slot>>,
    /// Current rows added and not yet in `shards`, per shard, in the order added.
    pending: Vec<Vec<(Key, Slot)>>,
    extract: ExtractType,
    run_date: i32,
    counts: OpCounts,
}

impl Probe {
    /// An empty index for a run of `extract` on `run_date` (days since the Unix epoch), with
    /// room for `capacity` current rows.
    pub fn new(extract: ExtractType, run_date: i32, capacity: usize) -> Self {
        Probe {
            shards: (0..SHARDS).map(|_| DigestMap::default()).collect(),
            // Shards hold their share of the rows give or take a few hundred: 1/32 more
            // spares nearly every one a doubling.
            pending: (0..SHARDS)
                .map(|_| Vec::with_capacity(capacity.div_ceil(SHARDS) * 33 / 32 + 64))
                .collect(),
            extract,
            run_date,
            counts: OpCounts::default(),
        }
    }

    /// Adds scanned current rows: their `keyhash`, `nonkeyhash`, `eff_start_date` and position.
    /// Keys are unique in the current table; a repeated one keeps its last row.
    pub fn add_current(
        &mut self,
        keys: &BinaryArray,
        nonkeys: &BinaryArray,
        effs: &Date32Array,
        files: &UInt32Array,
        rows: &UInt32Array,
    ) {
        for i in 0..keys.len() {
            let slot = Slot::Current {
                nonkey: key(nonkeys.value(i)),
                eff: effs.value(i),
                file: files.value(i),
                row: rows.value(i),
            };
            let k = key(keys.value(i));
            self.pending[shard(k)].push((k, slot));
        }
    }

    /// Builds the index from the current rows added so far: each shard whole, a share of
    /// the shards per core. Probing builds it too, if need be (later rows added are built then).
    pub fn build(&mut self) {
        if self.pending.iter().all(Vec::is_empty) {
            return;
        }
        let cores = crate::core::threads::get();
        let per_thread = SHARDS.div_ceil(cores);
        std::thread::scope(|scope| {
            let shares = self.shards.chunks_mut(per_thread);
            for (maps, pending) in shares.zip(self.pending.chunks_mut(per_thread)) {
                scope.spawn(move || {
                    for (map, pending) in maps.iter_mut().zip(pending) {
                        map.reserve(pending.len());
                        map.extend(std::mem::take(pending));
                    }
                });
            }
        });
    }

    /// Classifies a batch of incoming rows of input file `file`, given in file and line order
    /// across calls, by their `keyhash` and `nonkeyhash`; `lines` holds each row's line.
    pub fn probe(
        &mut self,
        keys: &BinaryArray,
        nonkeys: &BinaryArray,
        file: u32,
        lines: &[u64],
    ) -> Probed {
        self.build();
        let mut probed = Probed {
            ops: Vec::with_capacity(keys.len()),
            duplicates: Vec::new(),
        };
        for (row, &line) in lines.iter().enumerate().take(keys.len()) {
            let seen = Slot::Seen { file, line };
            let k = key(keys.value(row));
            let (op, eff) = match self.shards[shard(k)].entry(k) {
                Entry::Vacant(vacant) => {
                    vacant.insert(seen);
                    outcome(None, 0, self.run_date)
                }
                Entry::Occupied(mut occupied) => match *occupied.get() {
                    Slot::Current { nonkey, eff, .. } => {
                        occupied.insert(seen);
                        let supplied = key(nonkeys.value(row));
                        outcome(Some((nonkey, eff)), supplied, self.run_date)
                    }
                    Slot::Seen {
                        file: first_file,
                        line: first_line,
                    } => {
                        probed.duplicates.push(Duplicate {
                            row,
                            first_file,
                            first_line,
                        });
                        continue;
                    }
                },
            };
            self.counts.add(op, 1);
            probed.ops.push((op, eff));
        }
        probed
    }

    /// The counts, and the current rows whose key the extract did not supply.
    pub fn finish(mut self) -> Finished {
        self.build();
        let mut gone: Vec<(u32, u32)> = self
            .shards
            .into_iter()
            .flat_map(|map| map.into_values())
            .filter_map(|slot| match slot {
                Slot::Current { file, row, .. } => Some((file, row)),
                Slot::Seen { .. } => None,
            })
            .collect();
        gone.sort_unstable();
        let gone_op = gone_op(self.extract);
        let mut counts = self.counts;
        counts.add(gone_op, gone.len() as u64);
        Finished {
            counts,
            gone,
            gone_op,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::classify::tests::digest;

    fn binary(values: impl IntoIterator<Item = u8>) -> BinaryArray {
        BinaryArray::from_iter_values(values.into_iter().map(digest))
    }

    /// Where each row stands in the model: its outcome, or the line its key was first seen at.
    #[derive(Debug, PartialEq)]
    enum Expected {
        Row(Op, i32),
        Duplicate(u64),
    }

    /// The rules as a plain model: rows in order, the first row of a key wins, a current key
    /// never supplied is gone.
    fn model(
        current: &BTreeMap<u8, (u8, i32)>,
        incoming: &[(u8, u8)],
        date: i32,
    ) -> (Vec<Expected>, Vec<u8>) {
        let mut first: BTreeMap<u8, u64> = BTreeMap::new();
        let mut rows = Vec::new();
        for (i, (k, nk)) in incoming.iter().enumerate() {
            let line = i as u64 + 1;
            if let Some(&at) = first.get(k) {
                rows.push(Expected::Duplicate(at));
                continue;
            }
            first.insert(*k, line);
            rows.push(match current.get(k) {
                None => Expected::Row(Op::Insert, date),
                Some((old, eff)) if old == nk => Expected::Row(Op::NoChange, *eff),
                Some(_) => Expected::Row(Op::Update, date),
            });
        }
        let gone = current
            .keys()
            .filter(|k| !first.contains_key(k))
            .copied()
            .collect();
        (rows, gone)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn probing_matches_the_reference_model(
            current in proptest::collection::btree_map(0u8..40, (0u8..3, 0i32..100), 0..30),
            incoming in proptest::collection::vec((0u8..40, 0u8..3), 0..40),
            full in any::<bool>(),
            split in 0usize..40,
        ) {
            let date = 1000;
            let extract = if full { ExtractType::Full } else { ExtractType::Delta };
            let mut probe = Probe::new(extract, date, current.len());
            // The current rows sit in two data files, in key order.
            let keys: Vec<u8> = current.keys().copied().collect();
            let position = |i: usize| ((i % 2) as u32, (i / 2) as u32);
            probe.add_current(
                &binary(keys.iter().copied()),
                &binary(current.values().map(|v| v.0)),
                &Date32Array::from(current.values().map(|v| v.1).collect::<Vec<_>>()),
                &UInt32Array::from((0..keys.len()).map(|i| position(i).0).collect::<Vec<_>>()),
                &UInt32Array::from((0..keys.len()).map(|i| position(i).1).collect::<Vec<_>>()),
            );
            // Two batches of one file, to cross a batch boundary.
            let split = split.min(incoming.len());
            let mut got = Vec::new();
            for (offset, part) in [(0, &incoming[..split]), (split, &incoming[split..])] {
                let lines: Vec<u64> = (0..part.len()).map(|i| (offset + i) as u64 + 1).collect();
                let probed = probe.probe(
                    &binary(part.iter().map(|r| r.0)),
                    &binary(part.iter().map(|r| r.1)),
                    3,
                    &lines,
                );
                let mut ops = probed.ops.into_iter();
                let mut duplicates = probed.duplicates.into_iter().peekable();
                for row in 0..part.len() {
                    match duplicates.next_if(|d| d.row == row) {
                        Some(d) => {
                            prop_assert_eq!(d.first_file, 3);
                            got.push(Expected::Duplicate(d.first_line));
                        }
                        None => {
                            let (op, eff) = ops.next().expect("an op per kept row");
                            got.push(Expected::Row(op, eff));
                        }
                    }
                }
                prop_assert!(ops.next().is_none() && duplicates.next().is_none());
            }
            let (expected, expected_gone) = model(&current, &incoming, date);
            prop_assert_eq!(&got, &expected);
            let finished = probe.finish();
            let mut gone_positions: Vec<(u32, u32)> = expected_gone
                .iter()
                .map(|k| position(keys.iter().position(|c| c == k).unwrap()))
                .collect();
            gone_positions.sort_unstable();
            prop_assert_eq!(&finished.gone, &gone_positions);
            prop_assert_eq!(finished.gone_op, if full { Op::Delete } else { Op::NotSupplied });
            let c = finished.counts;
            let kept = expected.iter().filter(|e| matches!(e, Expected::Row(..))).count() as u64;
            prop_assert_eq!(c.inserted + c.updated + c.unchanged, kept);
            prop_assert_eq!(c.inserted, expected.iter().filter(|e| matches!(e, Expected::Row(Op::Insert, _))).count() as u64);
            prop_assert_eq!(c.updated, expected.iter().filter(|e| matches!(e, Expected::Row(Op::Update, _))).count() as u64);
            prop_assert_eq!(c.deleted + c.not_supplied, expected_gone.len() as u64);
        }
    }

    #[test]
    fn a_repeated_key_names_its_first_place_even_across_files() {
        let mut probe = Probe::new(ExtractType::Full, 7, 0);
        let first = probe.probe(&binary([1, 2]), &binary([0, 0]), 0, &[5, 6]);
        assert_eq!(first.ops, vec![(Op::Insert, 7), (Op::Insert, 7)]);
        let again = probe.probe(&binary([3, 2, 2]), &binary([0, 1, 1]), 1, &[1, 2, 9]);
        assert_eq!(again.ops, vec![(Op::Insert, 7)]);
        let at_six = |row| Duplicate {
            row,
            first_file: 0,
            first_line: 6,
        };
        assert_eq!(again.duplicates, vec![at_six(1), at_six(2)]);
        let finished = probe.finish();
        assert_eq!(finished.counts.inserted, 3);
        assert!(finished.gone.is_empty());
    }
}
