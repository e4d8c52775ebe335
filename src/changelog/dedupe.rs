//! The last change per key by source order: a run of change batches reduced to one change per
//! key (DESIGN.md: "last change per key by source order"), the order being [`SourceOrder`].

use crate::core::change::{ChangeBatch, SourceOrder};
use crate::core::key::{key, DigestMap};

/// A change picked by [`last_per_key`]: its batch and row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    /// Index of the batch in the run's batches.
    pub batch: usize,
    /// Row in that batch.
    pub row: usize,
}

/// Rows below which [`last_per_key`] runs on one thread.
const PARALLEL_ROWS: usize = 100_000;

/// The last change of each key by source order, returned in batch and row order. Two changes of
/// one key with equal [`SourceOrder`] cannot happen within one run (file and row differ); if
/// they do, the one in the later batch (or row) wins.
///
/// Large runs are split over the cores by key: each thread keeps the keys whose upper digest
/// bits select it, so no two threads see one key.
pub fn last_per_key(batches: &[ChangeBatch]) -> Vec<Picked> {
    let total: usize = batches.iter().map(ChangeBatch::len).sum();
    let threads = if total < PARALLEL_ROWS {
        1
    } else {
        crate::core::threads::get().min(8)
    };
    let winners: Vec<Vec<(u32, u32)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|part| scope.spawn(move || last_in_part(batches, part, threads, total / threads)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut marks: Vec<Vec<bool>> = batches.iter().map(|b| vec![false; b.len()]).collect();
    for (batch, row) in winners.into_iter().flatten() {
        marks[batch as usize][row as usize] = true;
    }
    marks
        .iter()
        .enumerate()
        .flat_map(|(batch, m)| {
            m.iter()
                .enumerate()
                .filter(|(_, won)| **won)
                .map(move |(row, _)| Picked { batch, row })
        })
        .collect()
}

/// The winning (batch, row) of each key of partition `part` of `parts`. The map holds only
/// where each key's best change is, not its [`SourceOrder`] as well (32 bytes a slot instead
/// of 48: for 10M keys about 250 MiB less); the order is looked up when the key comes again.
fn last_in_part(
    batches: &[ChangeBatch],
    part: usize,
    parts: usize,
    capacity: usize,
) -> Vec<(u32, u32)> {
    let mut best: DigestMap<(u32, u32)> =
        DigestMap::with_capacity_and_hasher(capacity, Default::default());
    let rank = |(b, row): (u32, u32)| -> (SourceOrder, u32, u32) {
        (batches[b as usize].order[row as usize], b, row)
    };
    for (b, batch) in batches.iter().enumerate() {
        for (row, order) in batch.order.iter().enumerate() {
            let k = key(batch.rows.keyhash.value(row));
            if parts > 1 && ((k >> 64) as u64 % parts as u64) as usize != part {
                continue;
            }
            let at = (b as u32, row as u32);
            best.entry(k)
                .and_modify(|slot| {
                    if (*order, at.0, at.1) >= rank(*slot) {
                        *slot = at;
                    }
                })
                .or_insert(at);
        }
    }
    best.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{BinaryArray, RecordBatch};
    use deltalake::arrow::datatypes::Schema;
    use proptest::prelude::*;

    use super::*;
    use crate::core::batch::HashedBatch;
    use crate::core::change::ChangeOp;

    fn digest(k: u8) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[0] = k;
        d[15] = k.wrapping_mul(31);
        d
    }

    /// A batch of changes of `keys`, with the given orders.
    fn batch(file: usize, changes: &[(u8, ChangeOp, SourceOrder)]) -> ChangeBatch {
        let digests: Vec<[u8; 16]> = changes.iter().map(|(k, _, _)| digest(*k)).collect();
        let keyhash = BinaryArray::from_iter_values(digests.iter());
        ChangeBatch {
            rows: HashedBatch {
                payload: RecordBatch::new_empty(Arc::new(Schema::empty())),
                keyhash: keyhash.clone(),
                nonkeyhash: keyhash,
                file,
                lines: changes.iter().map(|c| c.2.row).collect(),
            },
            ops: changes.iter().map(|c| c.1).collect(),
            order: changes.iter().map(|c| c.2).collect(),
            commit_days: vec![None; changes.len()],
            positions: vec![None; changes.len()],
            keep_stored: Default::default(),
        }
    }

    #[test]
    fn a_large_run_split_over_threads_keeps_the_last_change_of_every_key() {
        // 250,000 changes of 1,000 keys in 4 batches: above PARALLEL_ROWS.
        let o = |file: usize, row: u64| SourceOrder {
            position: 0,
            file: file as u32,
            row,
        };
        let batches: Vec<ChangeBatch> = (0..4usize)
            .map(|f| {
                let changes: Vec<(u8, ChangeOp, SourceOrder)> = (0..62_500u64)
                    .map(|r| ((r % 250) as u8, ChangeOp::Update, o(f, r + 1)))
                    .collect();
                batch(f, &changes)
            })
            .collect();
        let picked = last_per_key(&batches);
        // 250 distinct digests (u8 keys): each one's last change is in the last batch, at the
        // last of its rows.
        assert_eq!(picked.len(), 250);
        assert!(picked.iter().all(|p| p.batch == 3 && p.row >= 62_500 - 250));
    }

    #[test]
    fn a_later_position_wins_over_a_later_file() {
        let o = |position, file, row| SourceOrder {
            position,
            file,
            row,
        };
        let batches = [
            batch(0, &[(1, ChangeOp::Update, o(20, 0, 1))]),
            batch(1, &[(1, ChangeOp::Delete, o(10, 1, 1))]),
        ];
        let picked = last_per_key(&batches);
        assert_eq!(picked, vec![Picked { batch: 0, row: 0 }]);
    }

    fn op() -> impl Strategy<Value = ChangeOp> {
        prop_oneof![
            Just(ChangeOp::Insert),
            Just(ChangeOp::Update),
            Just(ChangeOp::Delete)
        ]
    }

    proptest! {
        /// Against a reference model: sort every change by its order and replay them into a map,
        /// so that the last write of each key stays. Positions are drawn from a small range so
        /// that ties (several events at one LSN) are common; file and row break them.
        #[test]
        fn last_per_key_matches_a_replay_in_source_order(
            changes in prop::collection::vec((0u8..12, op(), 0u64..4), 0..80),
            files in 1usize..4,
        ) {
            // Deal the changes over `files` files; each row gets its file and line.
            let mut per_file: Vec<Vec<(u8, ChangeOp, SourceOrder)>> = vec![Vec::new(); files];
            for (i, (k, op, position)) in changes.iter().enumerate() {
                let f = i % files;
                let row = per_file[f].len() as u64 + 1;
                per_file[f].push((*k, *op, SourceOrder { position: *position, file: f as u32, row }));
            }
            // Batches are handed over in reverse file order: the order must not come from it.
            let batches: Vec<ChangeBatch> =
                per_file.iter().enumerate().rev().map(|(f, c)| batch(f, c)).collect();
            let picked = last_per_key(&batches);

            let mut all: Vec<(u8, ChangeOp, SourceOrder)> = per_file.concat();
            all.sort_by_key(|c| c.2);
            let mut model: std::collections::BTreeMap<u8, (ChangeOp, SourceOrder)> = Default::default();
            for (k, op, order) in &all {
                model.insert(*k, (*op, *order));
            }
            let mut expected: Vec<(ChangeOp, SourceOrder)> = model.into_values().collect();
            expected.sort_by_key(|e| e.1);
            let mut got: Vec<(ChangeOp, SourceOrder)> = picked
                .iter()
                .map(|p| (batches[p.batch].ops[p.row], batches[p.batch].order[p.row]))
                .collect();
            // returned in batch and row order
            prop_assert!(picked.windows(2).all(|w| (w[0].batch, w[0].row) < (w[1].batch, w[1].row)));
            got.sort_by_key(|e| e.1);
            prop_assert_eq!(got, expected);
        }
    }
}
