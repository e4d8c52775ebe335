//! Property test of capture's apply: random transactions of a PostgreSQL table (inserts,
//! updates that move partitions or leave a TOASTed value unchanged, deletes, TRUNCATE), cut
//! into runs at random changes (a transaction committed in parts), with random crash points at which the slot had not
//! been confirmed (the next start receives the transactions again from the confirmed point),
//! applied as `tributary capture` applies them (one `TableChanges` per run through
//! `run_source`, each transaction applied only from the table's committed LSN on), against a
//! replay of what PostgreSQL did, into a current table that is rewritten or given deletion
//! vectors. Current must equal the model's table, and history must hold
//! one row per committed change with the values it had (a delete: the last values). Replay a
//! failure with PROPERTY_TEST_SEED and PROPTEST_CASES.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use indicatif::ProgressBar;
use proptest::prelude::*;
use tributary::changelog::spill::RunMemory;
use tributary::changelog::sync::run_source;
use tributary::config::tables::{DeleteMode, Layout, TableEntry};
use tributary::config::ColumnFile;
use tributary::core::change::ChangeOp;
use tributary::core::schema::ColumnType;
use tributary::sink::delta::DeltaLake;
use tributary::sink::Sink;
use tributary::source::postgres::buffer::{holds, CaptureTable, TableChanges, Values};
use tributary::source::postgres::types::PgType;

use crate::common::table_rows;

/// A row: (amount, region, note).
type Row = (u8, &'static str, String);

/// One change as PostgreSQL logged it: key, op, values, whether the note was left out (an
/// update), or a TRUNCATE.
#[derive(Debug, Clone)]
enum Logged {
    Change(u8, ChangeOp, Row, bool),
    Truncate,
}

fn region(west: bool) -> &'static str {
    if west {
        "west"
    } else {
        "east"
    }
}

/// A change in the stream: its transaction, its number in it (1-based), what it did.
type Delivered = (usize, u64, Logged);
/// Raw choices of one change: key, what (<6 update, else delete, 9 TRUNCATE), amount, west,
/// keep the note.
type Choice = (u8, u8, u8, bool, bool);
/// History rows: (key, commit LSN, operation, values).
type HistoryRows = Vec<(u8, u64, &'static str, Row)>;

/// Turns raw choices into valid transactions of a table with keys 0..6 (insert a key that is
/// not there, update or delete one that is, now and then a TRUNCATE), and replays them:
/// returns the stream of changes, and after each change the table and the history rows it
/// adds. Notes are long (stored out of line, so an update may leave them out) or short.
fn replay(raw: &[Vec<Choice>]) -> (Vec<Delivered>, Vec<BTreeMap<u8, Row>>, Vec<HistoryRows>) {
    let mut table: BTreeMap<u8, Row> = BTreeMap::new();
    let (mut stream, mut states, mut history) = (Vec::new(), Vec::new(), Vec::new());
    let mut note_counter = 0;
    for (t, choices) in raw.iter().enumerate() {
        let lsn = lsn_of(t);
        for (i, &(k, what, amount, west, keep_note)) in choices.iter().enumerate() {
            let seq = i as u64 + 1;
            let mut added = Vec::new();
            let logged = if what == 9 {
                for (key, row) in std::mem::take(&mut table) {
                    added.push((key, lsn, "D", row));
                }
                Logged::Truncate
            } else {
                note_counter += 1;
                let pad = if amount % 2 == 0 {
                    "x".repeat(300)
                } else {
                    String::new()
                };
                let note = format!("note{note_counter}{pad}");
                match table.get(&k).cloned() {
                    None => {
                        let row = (amount, region(west), note);
                        table.insert(k, row.clone());
                        added.push((k, lsn, "I", row.clone()));
                        Logged::Change(k, ChangeOp::Insert, row, false)
                    }
                    Some(old) if what < 6 => {
                        // a value left out: stored out of line; short ones too, as the worst case
                        // (the buffer remembers only long rows, the merge must still find it)
                        let keep = keep_note;
                        let note = if keep { old.2.clone() } else { note };
                        let row = (amount, region(west), note);
                        table.insert(k, row.clone());
                        added.push((k, lsn, "U", row.clone()));
                        Logged::Change(k, ChangeOp::Update, row, keep)
                    }
                    Some(old) => {
                        table.remove(&k);
                        added.push((k, lsn, "D", old.clone()));
                        // REPLICA IDENTITY DEFAULT: a delete sends the key only
                        Logged::Change(k, ChangeOp::Delete, (0, "", String::new()), true)
                    }
                }
            };
            stream.push((t, seq, logged));
            states.push(table.clone());
            history.push(added);
        }
    }
    (stream, states, history)
}

fn lsn_of(txn: usize) -> u64 {
    1000 + 100 * txn as u64
}

/// The captured table; with `vectors`, merges mark rows in deletion vectors (whole stored rows
/// read only for deletes, kept TOAST values and stale changes).
fn table(lake: &Path, soft: bool, vectors: bool) -> Arc<CaptureTable> {
    let mut entry = TableEntry::discovered("m/t".into(), Vec::new(), Layout::Debezium);
    entry.primary_key = vec!["id".into()];
    entry.deletion_vectors = Some(vectors);
    entry.partition_by = vec!["region".into()];
    entry.delete_mode = if soft {
        DeleteMode::Soft
    } else {
        DeleteMode::Hard
    };
    entry.columns = [
        ("id", "int"),
        ("region", "string"),
        ("amount", "int"),
        ("note", "string"),
    ]
    .iter()
    .map(|(n, t)| ColumnFile {
        name: n.to_string(),
        ty: t.to_string(),
        key: false,
        ignore: false,
    })
    .collect();
    let mut config = entry
        .changelog_table(0, &tributary::config::storage::LakeRoot::local(lake))
        .unwrap();
    config.history_every_change = true;
    let types = [
        ColumnType::Int,
        ColumnType::String,
        ColumnType::Int,
        ColumnType::String,
    ]
    .map(|lake| PgType {
        lake,
        with_zone: false,
    })
    .to_vec();
    Arc::new(CaptureTable::new(config, types))
}

/// Delivers changes `from..to` of the stream as one capture run would after a start: a
/// change the table holds (below its committed position) is skipped; a transaction whose
/// last change is delivered is marked whole (its end LSN), one cut short records the number
/// of its next change.
async fn apply(
    table: &Arc<CaptureTable>,
    stream: &[Delivered],
    from: usize,
    to: usize,
    lake: &Path,
) {
    let committed = match DeltaLake::open(&table.config.table, false).await.unwrap() {
        Some((lake, _)) => lake.committed().await.unwrap().position,
        None => None,
    };
    let mut buffer = TableChanges::new(table.clone(), false);
    for (i, (t, seq, change)) in stream.iter().enumerate().take(to).skip(from) {
        let lsn = lsn_of(*t);
        if !holds(committed, lsn, *seq) {
            match change {
                Logged::Change(k, op, (amount, region, note), partial) => {
                    let values: Values = match (op, partial) {
                        (ChangeOp::Delete, _) => vec![Some(k.to_string()), None, None, None],
                        (_, true) => vec![
                            Some(k.to_string()),
                            Some(region.to_string()),
                            Some(amount.to_string()),
                            None,
                        ],
                        _ => vec![
                            Some(k.to_string()),
                            Some(region.to_string()),
                            Some(amount.to_string()),
                            Some(note.clone()),
                        ],
                    };
                    let unchanged = match (op, partial) {
                        (ChangeOp::Update, true) => vec![3],
                        _ => vec![],
                    };
                    buffer
                        .push(*op, values, unchanged, lsn, *seq, 19723)
                        .unwrap();
                }
                Logged::Truncate => {
                    let stored: Vec<Values> = live(lake)
                        .await
                        .into_keys()
                        .map(|k| vec![Some(k.to_string())])
                        .collect();
                    buffer.truncate(stored, lsn, *seq, 19723).unwrap();
                }
            }
        }
        let last_of_txn = stream.get(i + 1).is_none_or(|next| next.0 != *t);
        if last_of_txn && !buffer.is_empty() {
            buffer.reach(lsn + 50);
        }
    }
    if buffer.is_empty() {
        return;
    }
    buffer.finish().unwrap();
    let date = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let memory = RunMemory {
        limit: 1 << 30,
        spill_dir: std::env::temp_dir(),
        spill: false,
    };
    run_source(
        &mut buffer,
        &table.config,
        date,
        &memory,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
}

/// The live rows of the current table: id -> (amount, region, note).
async fn live(lake: &Path) -> BTreeMap<u8, Row> {
    let path = lake.join("m/t/current");
    if !path.join("_delta_log").exists() {
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    for r in table_rows(&path).await {
        if r["operation"] == "D" {
            continue;
        }
        let region = if r["region"] == "west" {
            "west"
        } else {
            "east"
        };
        let prev = out.insert(
            r["id"].parse().unwrap(),
            (r["amount"].parse().unwrap(), region, r["note"].clone()),
        );
        assert!(prev.is_none(), "key {} twice in current", r["id"]);
    }
    out
}

/// History rows: (key, source position, operation, amount, region, note), sorted.
async fn history(lake: &Path) -> Vec<(u8, u64, String, Row)> {
    let path = lake.join("m/t/history");
    if !path.join("_delta_log").exists() {
        return Vec::new();
    }
    let mut out: Vec<(u8, u64, String, Row)> = table_rows(&path)
        .await
        .into_iter()
        .map(|r| {
            let region = if r["region"] == "west" {
                "west"
            } else {
                "east"
            };
            (
                r["id"].parse().unwrap(),
                r["source_position"].parse().unwrap(),
                r["operation"].clone(),
                (r["amount"].parse().unwrap(), region, r["note"].clone()),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn captured_transactions_match_a_replay_across_runs_and_crashes() {
    let mut runner = crate::common::property_runner(21);
    // (key, what: <6 update, else delete for a live key; 9 TRUNCATE), amount, west, keep note
    let change = (
        0u8..6,
        prop_oneof![9 => 0u8..9, 1 => Just(9u8)],
        0u8..50,
        any::<bool>(),
        any::<bool>(),
    );
    let txn = proptest::collection::vec(change, 1..5);
    let strategy = (
        proptest::collection::vec(txn, 1..14),
        proptest::collection::vec((1usize..9, any::<bool>()), 1..10),
        any::<bool>(),
        any::<bool>(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runner
        .run(&strategy, |(raw, cuts, soft, vectors)| {
            let dir = tempfile::tempdir().unwrap();
            let lake = dir.path().join("lake");
            let table = table(&lake, soft, vectors);
            let (stream, states, added) = replay(&raw);
            // runs end at random changes, within transactions too (a large transaction is
            // committed in parts); after a "crash" the slot had not been confirmed, so the next
            // run receives every transaction since the last confirm again. The slot is only
            // confirmed at the end of a whole transaction.
            let (mut confirmed, mut end) = (0, 0);
            for (size, crash) in cuts.iter().chain(std::iter::once(&(stream.len(), false))) {
                let to = (end + size).min(stream.len());
                runtime.block_on(apply(&table, &stream, confirmed, to, &lake));
                end = to;
                if !crash {
                    // the first change of the transaction cut short, or `to`
                    confirmed = match (to, stream.get(to)) {
                        (0, _) | (_, None) => to,
                        (_, Some(next)) => (0..to)
                            .rev()
                            .take_while(|&i| stream[i].0 == next.0)
                            .last()
                            .unwrap_or(to),
                    };
                }
                if end == 0 {
                    continue;
                }
                let got = runtime.block_on(live(&lake));
                prop_assert_eq!(&got, &states[end - 1], "current after {} changes", end);
                let mut want: Vec<(u8, u64, String, Row)> = added[..end]
                    .iter()
                    .flatten()
                    .map(|(k, lsn, op, row)| (*k, *lsn, op.to_string(), row.clone()))
                    .collect();
                want.sort();
                let got = runtime.block_on(history(&lake));
                prop_assert_eq!(got, want, "history after {} changes", end);
                if end == stream.len() {
                    break;
                }
            }
            Ok(())
        })
        .unwrap();
}
