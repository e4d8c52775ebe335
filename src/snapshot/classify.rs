//! Snapshot diff: classify incoming rows against the current table by keyhash and nonkeyhash
//! (the seed article's stages 2-4, as one hash join per keyhash partition; see `join`).
//!
//! | key in incoming | key in current | nonkeyhash | operation | eff_start_date | goes to          |
//! |-----------------|----------------|------------|-----------|----------------|------------------|
//! | yes             | no             | -          | I         | run date       | current, history |
//! | yes             | yes            | differs    | U         | run date       | current, history |
//! | yes             | yes            | same       | N         | kept           | current          |
//! | no              | yes (full)     | -          | D         | run date       | history          |
//! | no              | yes (delta)    | -          | X         | kept           | current          |

use deltalake::arrow::array::{Array, BinaryArray, Date32Array};

use crate::config::ExtractType;
use crate::core::key::{key, DigestMap, Key};
use crate::core::op::{Op, OpCounts};

/// One partition of the current table, indexed by keyhash: (nonkeyhash, eff_start_date as days
/// since the epoch, row number). Rows are numbered in the order they are given, across parts.
#[derive(Debug, Default)]
pub struct CurrentIndex {
    map: DigestMap<(Key, i32, u32)>,
}

impl CurrentIndex {
    /// Builds the index from scanned `keyhash`, `nonkeyhash`, `eff_start_date` columns.
    pub fn build<'a>(
        parts: impl IntoIterator<Item = (&'a BinaryArray, &'a BinaryArray, &'a Date32Array)>,
    ) -> Self {
        let mut map = DigestMap::default();
        let mut row = 0u32;
        for (keys, nonkeys, effs) in parts {
            map.reserve(keys.len());
            for i in 0..keys.len() {
                map.insert(
                    key(keys.value(i)),
                    (key(nonkeys.value(i)), effs.value(i), row),
                );
                row += 1;
            }
        }
        CurrentIndex { map }
    }

    /// Rows in the index.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The diff of one partition.
#[derive(Debug, Default)]
pub struct Diff {
    /// Per incoming batch, per row: operation and eff_start_date (days since epoch).
    pub incoming: Vec<Vec<(Op, i32)>>,
    /// Current rows (numbered as in [`CurrentIndex::build`]) whose key is absent from the
    /// incoming extract, ascending; they become D (full extract, dated the run date) or X (delta
    /// extract, date kept).
    pub gone: Vec<u32>,
    /// Operation of the gone rows.
    pub gone_op: Option<Op>,
    /// Rows per operation.
    pub counts: OpCounts,
}

/// The operation and `eff_start_date` of an incoming row with nonkeyhash `supplied`, given the
/// current row of its key (nonkeyhash, eff_start_date), if any: the first three rows of the
/// table in the module docs.
pub fn outcome(current: Option<(Key, i32)>, supplied: Key, run_date: i32) -> (Op, i32) {
    match current {
        None => (Op::Insert, run_date),
        Some((old, eff)) if old == supplied => (Op::NoChange, eff),
        Some(_) => (Op::Update, run_date),
    }
}

/// The operation of current rows whose key an extract does not supply: D for a full extract,
/// X for a delta extract (the last two rows of the table in the module docs).
pub fn gone_op(extract: ExtractType) -> Op {
    match extract {
        ExtractType::Full => Op::Delete,
        ExtractType::Delta => Op::NotSupplied,
    }
}

/// Classifies incoming rows (given as per-batch keyhash/nonkeyhash columns, keys unique) against
/// the current index. `run_date` is the business date in days since the Unix epoch.
pub fn classify<'a>(
    incoming: impl IntoIterator<Item = (&'a BinaryArray, &'a BinaryArray)>,
    current: CurrentIndex,
    extract: ExtractType,
    run_date: i32,
) -> Diff {
    let mut map = current.map;
    let mut diff = Diff::default();
    for (keys, nonkeys) in incoming {
        let mut ops = Vec::with_capacity(keys.len());
        for i in 0..keys.len() {
            let found = map
                .remove(&key(keys.value(i)))
                .map(|(old, eff, _)| (old, eff));
            let (op, eff) = outcome(found, key(nonkeys.value(i)), run_date);
            diff.counts.add(op, 1);
            ops.push((op, eff));
        }
        diff.incoming.push(ops);
    }
    let gone_op = gone_op(extract);
    diff.counts.add(gone_op, map.len() as u64);
    diff.gone_op = (!map.is_empty()).then_some(gone_op);
    diff.gone = map.into_values().map(|(_, _, row)| row).collect();
    diff.gone.sort_unstable();
    diff
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A 16-byte digest standing for `n`: distinct for distinct `n`, with varied first and
    /// last bytes (map buckets, index shards).
    pub(crate) fn digest(n: u8) -> Vec<u8> {
        let mut d = vec![0u8; 16];
        d[0] = n;
        d[15] = n.wrapping_mul(7);
        d
    }

    fn binary(values: &[u8]) -> BinaryArray {
        let owned: Vec<Vec<u8>> = values.iter().map(|&v| digest(v)).collect();
        BinaryArray::from_iter_values(owned)
    }

    /// The rules as a plain reference model over ordered maps.
    fn model(
        current: &BTreeMap<u8, (u8, i32)>,
        incoming: &[(u8, u8)],
        date: i32,
    ) -> (Vec<(Op, i32)>, BTreeMap<u8, i32>) {
        let mut ops = Vec::new();
        for (k, nk) in incoming {
            ops.push(match current.get(k) {
                None => (Op::Insert, date),
                Some((old, eff)) if old == nk => (Op::NoChange, *eff),
                Some(_) => (Op::Update, date),
            });
        }
        let gone = current
            .iter()
            .filter(|(k, _)| !incoming.iter().any(|(ik, _)| ik == *k))
            .map(|(k, (_, eff))| (*k, *eff))
            .collect();
        (ops, gone)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn classify_matches_the_reference_model(
            current in proptest::collection::btree_map(0u8..40, (0u8..3, 0i32..100), 0..30),
            incoming_keys in proptest::collection::btree_set(0u8..40, 0..30),
            nonkeys in proptest::collection::vec(0u8..3, 30),
            full in any::<bool>(),
            split in 0usize..30,
        ) {
            let incoming: Vec<(u8, u8)> = incoming_keys.iter().zip(&nonkeys).map(|(k, n)| (*k, *n)).collect();
            let (ck, cn): (Vec<u8>, Vec<(u8, i32)>) = current.iter().map(|(k, v)| (*k, *v)).unzip();
            let effs = Date32Array::from(cn.iter().map(|(_, e)| *e).collect::<Vec<_>>());
            let index = CurrentIndex::build([(&binary(&ck), &binary(&cn.iter().map(|(n, _)| *n).collect::<Vec<_>>()), &effs)]);
            // Split the incoming rows over two batches to exercise batch boundaries.
            let split = split.min(incoming.len());
            let (a, b) = incoming.split_at(split);
            let batches: Vec<(BinaryArray, BinaryArray)> = [a, b]
                .iter()
                .map(|part| (binary(&part.iter().map(|r| r.0).collect::<Vec<_>>()), binary(&part.iter().map(|r| r.1).collect::<Vec<_>>())))
                .collect();
            let extract = if full { ExtractType::Full } else { ExtractType::Delta };
            let diff = classify(batches.iter().map(|(k, n)| (k, n)), index, extract, 1000);
            let (expected_ops, expected_gone) = model(&current, &incoming, 1000);
            let got_ops: Vec<(Op, i32)> = diff.incoming.concat();
            prop_assert_eq!(got_ops, expected_ops);
            // Gone rows are numbered in the current index's order: the BTreeMap's key order.
            let got_gone: BTreeMap<u8, i32> = diff.gone.iter().map(|&row| (ck[row as usize], cn[row as usize].1)).collect();
            prop_assert!(diff.gone.windows(2).all(|w| w[0] < w[1]), "gone rows ascending");
            prop_assert_eq!(&got_gone, &expected_gone);
            let gone_op = if full { Op::Delete } else { Op::NotSupplied };
            prop_assert_eq!(diff.gone_op, (!expected_gone.is_empty()).then_some(gone_op));
            let counts = diff.counts;
            prop_assert_eq!(counts.inserted + counts.updated + counts.unchanged, incoming.len() as u64);
            prop_assert_eq!(counts.deleted + counts.not_supplied, expected_gone.len() as u64);
        }
    }

    #[test]
    fn first_run_is_all_inserts() {
        let keys = binary(&[1, 2, 3]);
        let diff = classify(
            [(&keys, &keys)],
            CurrentIndex::default(),
            ExtractType::Full,
            5,
        );
        assert_eq!(
            diff.counts,
            OpCounts {
                inserted: 3,
                ..OpCounts::default()
            }
        );
        assert!(diff.gone.is_empty() && diff.gone_op.is_none());
    }
}
