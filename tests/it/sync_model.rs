//! Property test: random change logs (interleavings of I/U/D per key, re-inserted keys, several
//! files per run, several runs, partition moves, soft or hard deletes, a DMS full load first or
//! not, a partitioned current table or not: an unpartitioned one shares a full load's files with
//! history; runs held in memory or, at a 1 KiB limit, partitioned by key and spilled: full
//! loads, and merges with their stored rows; a current table that records the change data feed,
//! or one whose merges mark rows in deletion vectors) applied by `sync`,
//! against a small in-memory replay of the rules. Replay a failure
//! with PROPERTY_TEST_SEED and PROPTEST_CASES.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use proptest::prelude::*;
use tributary::changelog::sync::{sync, SyncOptions};

use crate::common::table_rows;

/// One change: key, op (0 insert, 1 update, 2 delete), amount, region.
type Change = (u8, u8, u8, bool);
/// Current row: id -> (amount, region, operation).
type State = BTreeMap<u8, (u8, &'static str, &'static str)>;

fn region(west: bool) -> &'static str {
    if west {
        "west"
    } else {
        "east"
    }
}

/// The rules, written as plainly as possible: per run, the last change of each key in file and
/// line order; an insert or update makes the key live with its values (I if it was not live, U
/// if it was); a delete of a live key removes it (soft: keeps it with D and its old values);
/// a delete of a key that is not live does nothing. Returns the state and history row count.
fn model(runs: &[Vec<Vec<Change>>], soft: bool) -> (State, usize) {
    let mut state = State::new();
    let mut history = 0;
    for run in runs {
        let mut last: BTreeMap<u8, Change> = BTreeMap::new();
        for c in run.iter().flatten() {
            last.insert(c.0, *c);
        }
        for (k, (_, op, amount, west)) in last {
            let live = state.get(&k).is_some_and(|s| s.2 != "D");
            match (op, live) {
                (0 | 1, false) => {
                    state.insert(k, (amount, region(west), "I"));
                    history += 1;
                }
                (0 | 1, true) => {
                    state.insert(k, (amount, region(west), "U"));
                    history += 1;
                }
                (_, true) => {
                    history += 1;
                    if soft {
                        state.get_mut(&k).unwrap().2 = "D";
                    } else {
                        state.remove(&k);
                    }
                }
                (_, false) => {}
            }
        }
    }
    (state, history)
}

fn csv(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|(k, op, amount, west)| {
            let op = ["I", "U", "D"][*op as usize];
            format!("{op},{k},{},{amount}\n", region(*west))
        })
        .collect()
}

async fn lake_state(lake: &Path) -> (State, usize) {
    let current = table_rows(&lake.join("m/t/current")).await;
    let mut state = State::new();
    for r in current {
        let op = match r["operation"].as_str() {
            "I" => "I",
            "U" => "U",
            "D" => "D",
            other => panic!("operation {other}"),
        };
        let reg = if r["region"] == "west" {
            "west"
        } else {
            "east"
        };
        let prev = state.insert(
            r["id"].parse().unwrap(),
            (r["amount"].parse().unwrap(), reg, op),
        );
        assert!(prev.is_none(), "key {} twice in current", r["id"]);
    }
    let history = table_rows(&lake.join("m/t/history")).await.len();
    (state, history)
}

#[test]
fn change_logs_match_the_reference_model() {
    let mut runner = crate::common::property_runner(11);
    let change = (0u8..8, 0u8..3, 0u8..50, any::<bool>());
    let file = proptest::collection::vec(change, 0..10);
    let run = proptest::collection::vec(file, 1..3);
    // a full load's rows: key, amount, region
    let load = proptest::option::of(proptest::collection::vec(
        (0u8..8, 0u8..50, any::<bool>()),
        1..10,
    ));
    let strategy = (
        proptest::collection::vec(run, 1..4),
        any::<bool>(),
        load,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runner
        .run(&strategy, |(runs, soft, load, partitioned, tiny_memory, load_alone, vectors)| {
            let dir = tempfile::tempdir().unwrap();
            let landing = dir.path().join("landing");
            let folder = landing.join("m/t");
            std::fs::create_dir_all(&folder).unwrap();
            let mode = if soft { "soft" } else { "hard" };
            let partition_by = if partitioned { "  partition_by: [region]\n" } else { "" };
            // the feed's comparison rewrites files: a table records it or uses vectors
            let table_option = if vectors { "deletion_vectors: true" } else { "change_data_feed: true" };
            std::fs::write(
                landing.join("tables.yaml"),
                format!(
                    "tables:\n- source: m/t\n  active: true\n  primary_key: [id]\n{partition_by}  \
                     {table_option}\n  delete_mode: {mode}\n  columns:\n  - {{name: id, type: int}}\n  - {{name: region, type: string}}\n  \
                     - {{name: amount, type: int}}\n"
                ),
            )
            .unwrap();
            let lake = dir.path().join("lake");
            let options = SyncOptions {
                landing: landing.clone(),
                lake: tributary::config::storage::LakeRoot::local(&lake),
                tables_file: landing.join("tables.yaml"),
                jobs: 1,
                run_date: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
                progress: false,
                spill_dir: None,
                // 1 KiB: full loads and merges are partitioned by key and spilled
                // (`changelog::spill`)
                memory_limit: if tiny_memory { 1 << 10 } else { 1 << 30 },
            };
            // The model takes a full load as the first run's first file, of inserts; a load
            // alone in the first run is streamed at 1 KiB (read again when a key repeats).
            let mut runs = runs;
            if let (Some(_), true) = (&load, load_alone) {
                runs[0].clear();
            }
            if let Some(rows) = &load {
                let text: String = rows
                    .iter()
                    .map(|(k, amount, west)| format!("{k},{},{amount}\n", region(*west)))
                    .collect();
                std::fs::write(folder.join("LOAD00000001.csv"), text).unwrap();
                let inserts = rows.iter().map(|&(k, amount, west)| (k, 0, amount, west));
                runs[0].insert(0, inserts.collect());
            }
            let mut n = 0;
            for (r, run) in runs.iter().enumerate() {
                let run = &run[usize::from(r == 0 && load.is_some())..];
                for changes in run {
                    n += 1;
                    std::fs::write(folder.join(format!("20240101-{n:010}.csv")), csv(changes)).unwrap();
                }
                let summary = runtime.block_on(sync(&options)).unwrap();
                prop_assert_eq!(summary.failed, 0, "{:?}", summary);
                if let Some(a) = summary.tables.first().and_then(|t| t.apply.as_ref()) {
                    // vectors mark rows and copy none; without them, nothing is marked
                    prop_assert!(vectors || a.files_marked == 0, "{:?}", a);
                    prop_assert!(!vectors || a.rows_copied == 0, "{:?}", a);
                }
                let (want, want_history) = model(&runs[..=r], soft);
                let (got, got_history) = runtime.block_on(lake_state(&lake));
                prop_assert_eq!(&got, &want, "after run {}", r);
                prop_assert_eq!(got_history, want_history, "history rows after run {}", r);
            }
            // the current table's change data feed replays its versions, one by one
            let current = lake.join("m/t/current");
            if !vectors {
                runtime.block_on(crate::common::assert_feed_replays(&current, 1));
            }
            Ok(())
        })
        .unwrap();
}
