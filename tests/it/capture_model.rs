//! Property test of capture's apply: random transactions of a PostgreSQL table (inserts,
//! updates that move partitions or leave a TOASTed value unchanged, deletes, TRUNCATE), cut
//! into runs at random commit boundaries, with random crash points at which the slot had not
//! been confirmed (the next start receives the transactions again from the confirmed point),
//! applied as `tributary capture` applies them (one `TableChanges` per run through
//! `run_source`, each transaction applied only from the table's committed LSN on), against a
//! replay of what PostgreSQL did. Current must equal the model's table, and history must hold
//! one row per committed change with the values it had (a delete: the last values). Replay a
//! failure with PROPERTY_TEST_SEED and PROPTEST_CASES.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use indicatif::ProgressBar;
use proptest::prelude::*;
use tributary::changelog::sync::run_source;
use tributary::config::tables::{DeleteMode, Layout, TableEntry};
use tributary::config::ColumnFile;
use tributary::core::change::ChangeOp;
use tributary::core::schema::ColumnType;
use tributary::sink::delta::DeltaLake;
use tributary::sink::Sink;
use tributary::source::postgres::buffer::{CaptureTable, TableChanges, Values};
use tributary::source::postgres::types::PgType;

use crate::common::table_rows;

/// A row: (amount, region, note).
type Row = (u8, &'static str, String);

/// One change as PostgreSQL logged it: key, op, values (an update may leave the note out).
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

/// Turns raw choices into valid transactions of a table with keys 0..6 (insert a key that is
/// not there, update or delete one that is, now and then a TRUNCATE), and replays them:
/// returns the transactions, and per transaction the table after it and the history rows it
/// adds: (key, commit LSN, operation, amount, region, note).
#[allow(clippy::type_complexity)]
fn replay(
    raw: &[Vec<(u8, u8, u8, bool, bool)>],
) -> (
    Vec<Vec<Logged>>,
    Vec<BTreeMap<u8, Row>>,
    Vec<Vec<(u8, u64, &'static str, Row)>>,
) {
    let mut table: BTreeMap<u8, Row> = BTreeMap::new();
    let (mut txns, mut states, mut history) = (Vec::new(), Vec::new(), Vec::new());
    let mut note_counter = 0;
    for (t, choices) in raw.iter().enumerate() {
        let lsn = lsn_of(t);
        let mut txn = Vec::new();
        let mut added = Vec::new();
        for &(k, what, amount, west, keep_note) in choices {
            if what == 9 {
                for (key, row) in std::mem::take(&mut table) {
                    added.push((key, lsn, "D", row));
                }
                txn.push(Logged::Truncate);
                continue;
            }
            note_counter += 1;
            // long enough to be stored out of line, as values that come back unchanged are
            let note = format!("note{note_counter}{}", "x".repeat(300));
            match table.get(&k).cloned() {
                None => {
                    let row = (amount, region(west), note);
                    table.insert(k, row.clone());
                    added.push((k, lsn, "I", row.clone()));
                    txn.push(Logged::Change(k, ChangeOp::Insert, row, false));
                }
                Some(old) if what < 6 => {
                    let note = if keep_note { old.2.clone() } else { note };
                    let row = (amount, region(west), note);
                    table.insert(k, row.clone());
                    added.push((k, lsn, "U", row.clone()));
                    txn.push(Logged::Change(k, ChangeOp::Update, row, keep_note));
                }
                Some(old) => {
                    table.remove(&k);
                    added.push((k, lsn, "D", old.clone()));
                    // REPLICA IDENTITY DEFAULT: a delete sends the key only
                    txn.push(Logged::Change(
                        k,
                        ChangeOp::Delete,
                        (0, "", String::new()),
                        true,
                    ));
                }
            }
        }
        txns.push(txn);
        states.push(table.clone());
        history.push(added);
    }
    (txns, states, history)
}

fn lsn_of(txn: usize) -> u64 {
    1000 + 100 * txn as u64
}

fn table(lake: &Path, soft: bool) -> Arc<CaptureTable> {
    let mut entry = TableEntry::discovered("m/t".into(), Vec::new(), Layout::Debezium);
    entry.primary_key = vec!["id".into()];
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
    let mut config = entry.changelog_table(0, lake).unwrap();
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

/// Applies transactions `from..to` as one capture run would after a start: those below the
/// table's committed LSN are skipped.
async fn apply(
    table: &Arc<CaptureTable>,
    txns: &[Vec<Logged>],
    from: usize,
    to: usize,
    lake: &Path,
) {
    let committed = match DeltaLake::open(&table.config.table, false).await.unwrap() {
        Some((lake, _)) => lake.committed().await.unwrap().lsn,
        None => None,
    };
    let mut buffer = TableChanges::new(table.clone(), false);
    for (t, txn) in txns.iter().enumerate().take(to).skip(from) {
        let lsn = lsn_of(t);
        if committed.is_some_and(|c| lsn < c) {
            continue;
        }
        for (seq, change) in txn.iter().enumerate() {
            let seq = seq as u64 + 1;
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
                        .push(*op, values, unchanged, lsn, seq, 19723)
                        .unwrap();
                }
                Logged::Truncate => {
                    let stored: Vec<Values> = live(lake)
                        .await
                        .into_keys()
                        .map(|k| vec![Some(k.to_string())])
                        .collect();
                    buffer.truncate(stored, lsn, seq, 19723).unwrap();
                }
            }
        }
        buffer.reach(lsn + 50);
    }
    if buffer.is_empty() {
        return;
    }
    buffer.finish().unwrap();
    let date = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    run_source(&mut buffer, &table.config, date, &ProgressBar::hidden())
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
        proptest::collection::vec((1usize..5, any::<bool>()), 1..8),
        any::<bool>(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runner
        .run(&strategy, |(raw, cuts, soft)| {
            let dir = tempfile::tempdir().unwrap();
            let lake = dir.path().join("lake");
            let table = table(&lake, soft);
            let (txns, states, added) = replay(&raw);
            // runs end at random transaction boundaries; after a "crash" the slot had not been
            // confirmed, so the next run receives every transaction since the last confirm again
            let (mut confirmed, mut end) = (0, 0);
            for (size, crash) in cuts.iter().chain(std::iter::once(&(txns.len(), false))) {
                let to = (end + size).min(txns.len());
                runtime.block_on(apply(&table, &txns, confirmed, to, &lake));
                end = to;
                if !crash {
                    confirmed = to;
                }
                if end == 0 {
                    continue;
                }
                let got = runtime.block_on(live(&lake));
                prop_assert_eq!(&got, &states[end - 1], "current after {} transactions", end);
                let mut want: Vec<(u8, u64, String, Row)> = added[..end]
                    .iter()
                    .flatten()
                    .map(|(k, lsn, op, row)| (*k, *lsn, op.to_string(), row.clone()))
                    .collect();
                want.sort();
                let got = runtime.block_on(history(&lake));
                prop_assert_eq!(got, want, "history after {} transactions", end);
                if end == txns.len() {
                    break;
                }
            }
            Ok(())
        })
        .unwrap();
}
