//! `tributary sync` over landing folders in the DMS layout (CSV and Parquet) and Debezium JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use chrono::NaiveDate;
use tributary::changelog::sync::{sync, SyncOptions, SyncSummary, TableSync};

use crate::common::table_rows;

type Row = BTreeMap<String, String>;

struct Landing {
    dir: tempfile::TempDir,
}

const ORDERS: &str = "\
- source: sales/orders
  active: true
  primary_key: [id]
  partition_by: [region]
  timestamp_column: ts
  columns:
  - {name: id, type: long}
  - {name: region, type: string}
  - {name: amount, type: double}
";

impl Landing {
    fn new(tables: &str) -> Landing {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("landing")).unwrap();
        let l = Landing { dir };
        std::fs::write(l.root().join("tables.yaml"), format!("tables:\n{tables}")).unwrap();
        l
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("landing")
    }

    fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    fn file(&self, table: &str, name: &str, contents: &str) -> PathBuf {
        let path = self.root().join(table).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn options(&self) -> SyncOptions {
        SyncOptions {
            landing: self.root(),
            lake: tributary::config::storage::LakeRoot::local(&self.lake()),
            tables_file: self.root().join("tables.yaml"),
            jobs: 2,
            run_date: NaiveDate::from_ymd_opt(2024, 3, 9).unwrap(),
            progress: false,
            spill_dir: None,
            memory_limit: 1 << 30,
        }
    }

    /// Options with a memory limit of `limit` bytes and a spill folder of their own.
    fn limited(&self, limit: u64) -> (SyncOptions, tempfile::TempDir) {
        let spill = tempfile::tempdir().unwrap();
        let mut options = self.options();
        options.memory_limit = limit;
        options.spill_dir = Some(spill.path().to_path_buf());
        (options, spill)
    }

    async fn sync(&self) -> SyncSummary {
        sync(&self.options()).await.unwrap()
    }

    /// Syncs and returns the one table's result, which must not have failed.
    async fn sync_one(&self) -> TableSync {
        let s = self.sync().await;
        assert_eq!(s.tables.len(), 1, "{s:?}");
        let t = s.tables[0].clone();
        assert_ne!(t.status, "failed", "{t:?}");
        t
    }

    async fn table(&self, table: &str, role: &str) -> Vec<Row> {
        table_rows(&self.lake().join(table).join(role)).await
    }

    /// The latest Delta versions of `table`'s current and history tables.
    async fn versions(&self, table: &str) -> (Option<u64>, Option<u64>) {
        let version = |role: &str| {
            let url = url::Url::from_directory_path(self.lake().join(table).join(role)).unwrap();
            async move { deltalake::open_table(url).await.unwrap().version() }
        };
        (version("current").await, version("history").await)
    }

    /// Current rows by `id`.
    async fn current(&self, table: &str) -> BTreeMap<String, Row> {
        let rows = self.table(table, "current").await;
        let by_id: BTreeMap<String, Row> =
            rows.iter().map(|r| (r["id"].clone(), r.clone())).collect();
        assert_eq!(
            by_id.len(),
            rows.len(),
            "a key is in current twice: {rows:?}"
        );
        by_id
    }
}

/// Current rows as (id, region, amount, operation, eff_start_date), by id.
type Shape = Vec<(String, String, String, String, String)>;

/// (id, region, amount, operation, eff_start_date) of current rows.
fn shape(current: &BTreeMap<String, Row>) -> Shape {
    current
        .values()
        .map(|r| {
            (
                r["id"].clone(),
                r["region"].clone(),
                r["amount"].clone(),
                r["operation"].clone(),
                r["eff_start_date"].clone(),
            )
        })
        .collect()
}

fn s(v: &[(&str, &str, &str, &str, &str)]) -> Vec<(String, String, String, String, String)> {
    v.iter()
        .map(|(a, b, c, d, e)| {
            (
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.to_string(),
                e.to_string(),
            )
        })
        .collect()
}

/// The first DMS day of `sales/orders`: a full load and one change file.
fn orders_day1(l: &Landing) {
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n2,east,20\n");
    l.file("sales/orders", "LOAD00000002.csv", "3,west,30\n");
    l.file(
        "sales/orders",
        "20240301-1000000000.csv",
        "U,2024-03-01 10:00:00.000000,2,west,21\n\
         D,2024-03-01 10:00:01.000000,3,west,30\n\
         I,2024-03-01 10:00:02.000000,4,east,40\n\
         U,2024-03-01 10:00:03.000000,4,east,41\n\
         I,2024-03-01 10:00:04.000000,9,east,1\n\
         D,2024-03-01 10:00:05.000000,9,east,1\n\
         D,2024-03-01 10:00:06.000000,99,east,0\n",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dms_load_and_changes_upsert_delete_and_move_partitions() {
    let l = Landing::new(ORDERS);
    orders_day1(&l);
    let t = l.sync_one().await;
    let a = t.apply.clone().unwrap();
    assert_eq!((t.status.as_str(), t.files, t.reload), ("applied", 3, true));
    assert_eq!(a.changes_read, 10);
    // Within one run only the last change per key counts, resolved against the table before
    // the run (empty): 1, 2 and 4 are inserted; the deletes of 3, 9 and 99 find no live key.
    assert_eq!(
        (a.inserted, a.updated, a.deleted, a.ignored_deletes),
        (3, 0, 0, 3)
    );
    assert_eq!(
        shape(&l.current("sales/orders").await),
        s(&[
            ("1", "east", "10.0", "I", "2024-03-09"),
            ("2", "west", "21.0", "I", "2024-03-01"),
            ("4", "east", "41.0", "I", "2024-03-01"),
        ])
    );

    // Day 2: key 3 comes back (a re-insert after a delete), key 2 moves back east, 1 is deleted.
    l.file(
        "sales/orders",
        "20240302-0900000000.csv",
        "I,2024-03-02 09:00:00.000000,3,east,33\n\
         U,2024-03-02 09:00:01.000000,2,east,22\n\
         D,2024-03-02 09:00:02.000000,1,east,10\n",
    );
    let t = l.sync_one().await;
    let a = t.apply.clone().unwrap();
    assert!(!t.reload);
    assert_eq!(
        (a.inserted, a.updated, a.deleted, a.ignored_deletes),
        (1, 1, 1, 0)
    );
    assert_eq!(
        shape(&l.current("sales/orders").await),
        s(&[
            ("2", "east", "22.0", "U", "2024-03-02"),
            ("3", "east", "33.0", "I", "2024-03-02"),
            ("4", "east", "41.0", "I", "2024-03-01"),
        ])
    );
    // The row of key 2 left the region=west partition: no data file is left there.
    let west = l.lake().join("sales/orders/current/region=west");
    let live_west: Vec<Row> = l
        .table("sales/orders", "current")
        .await
        .into_iter()
        .filter(|r| r["region"] == "west")
        .collect();
    assert!(
        live_west.is_empty(),
        "{live_west:?} (folder {})",
        west.display()
    );

    // History: every applied change; the deleted key's D row carries its last stored values.
    let history = l.table("sales/orders", "history").await;
    let mut h: Vec<(String, String, String)> = history
        .iter()
        .map(|r| (r["id"].clone(), r["operation"].clone(), r["amount"].clone()))
        .collect();
    h.sort();
    let expected: Vec<(String, String, String)> = [
        ("1", "D", "10.0"),
        ("1", "I", "10.0"),
        ("2", "I", "21.0"),
        ("2", "U", "22.0"),
        ("3", "I", "33.0"),
        ("4", "I", "41.0"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(h, expected);

    // Re-running applies nothing and commits nothing.
    let version = l.table("sales/orders", "history").await.len();
    let t = l.sync_one().await;
    assert_eq!(t.status, "up-to-date");
    assert_eq!(l.table("sales/orders", "history").await.len(), version);
}

/// The data files under `table` (a folder, partitions included): file name -> inode.
fn inodes(table: &std::path::Path) -> BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    crate::common::data_files(table)
        .into_iter()
        .map(|f| {
            let ino = std::fs::metadata(&f).unwrap().ino();
            (f.rsplit('/').next().unwrap().to_string(), ino)
        })
        .collect()
}

/// A full load's upserts are written once: files of current that history names as well (a
/// hard link under its partition of the day most rows have); rows of other days are written
/// to each table on its own. A rewriting merge's upserts are not shared (they go with the rows
/// it copies).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_load_writes_its_rows_once_for_both_tables() {
    let l = Landing::new(&ORDERS.replace("  partition_by: [region]\n", ""));
    orders_day1(&l);
    let t = l.sync_one().await;
    assert!(t.reload, "{t:?}");
    let expected = s(&[
        ("1", "east", "10.0", "I", "2024-03-09"),
        ("2", "west", "21.0", "I", "2024-03-01"),
        ("4", "east", "41.0", "I", "2024-03-01"),
    ]);
    assert_eq!(shape(&l.current("sales/orders").await), expected);
    let mut history: Vec<_> = l
        .table("sales/orders", "history")
        .await
        .into_iter()
        .map(|r| {
            let row: BTreeMap<String, Row> = [(r["id"].clone(), r)].into();
            shape(&row).remove(0)
        })
        .collect();
    history.sort();
    assert_eq!(history, expected);
    let lake = l.lake().join("sales/orders");
    let current = inodes(&lake.join("current"));
    let shared_day = inodes(&lake.join("history/eff_start_date=2024-03-01"));
    let other_day = inodes(&lake.join("history/eff_start_date=2024-03-09"));
    assert!(
        !shared_day.is_empty()
            && shared_day
                .iter()
                .all(|(name, ino)| current.get(name) == Some(ino)),
        "2024-03-01 (2 of 3 rows) shared: {shared_day:?} / {current:?}"
    );
    assert!(
        !other_day.is_empty() && other_day.keys().all(|name| !current.contains_key(name)),
        "2024-03-09 written for history alone: {other_day:?} / {current:?}"
    );
    // a merge: its upserts are current's own files
    l.file(
        "sales/orders",
        "20240302-0900000000.csv",
        "U,2024-03-02 09:00:01.000000,2,east,22\n",
    );
    assert!(!l.sync_one().await.reload);
    let merged = inodes(&lake.join("history/eff_start_date=2024-03-02"));
    let current = inodes(&lake.join("current"));
    assert!(
        !merged.is_empty() && merged.keys().all(|name| !current.contains_key(name)),
        "{merged:?} / {current:?}"
    );
}

/// A merge into a table with deletion vectors copies no row, so its upserts are written once
/// and shared with history as a full load's are; its D rows are history's alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_merge_with_deletion_vectors_writes_its_upserts_once_for_both_tables() {
    let tables = ORDERS.replace("  partition_by: [region]\n", "").replace(
        "  primary_key: [id]\n",
        "  primary_key: [id]\n  deletion_vectors: true\n",
    );
    let l = Landing::new(&tables);
    orders_day1(&l);
    assert!(l.sync_one().await.reload);
    l.file(
        "sales/orders",
        "20240302-0900000000.csv",
        "U,2024-03-02 09:00:01.000000,2,east,22\n\
         I,2024-03-02 09:00:02.000000,5,west,50\n\
         D,2024-03-02 09:00:03.000000,4,east,41\n",
    );
    let t = l.sync_one().await;
    let a = t.apply.as_ref().unwrap();
    assert_eq!((a.files_marked > 0, a.rows_copied), (true, 0), "{a:?}");
    let lake = l.lake().join("sales/orders");
    let (merged, current) = (
        inodes(&lake.join("history/eff_start_date=2024-03-02")),
        inodes(&lake.join("current")),
    );
    let (shared, own): (Vec<_>, Vec<_>) = merged
        .iter()
        .partition(|(name, ino)| current.get(*name) == Some(*ino));
    assert_eq!(
        (shared.len(), own.len()),
        (1, 1),
        "{merged:?} / {current:?}"
    );
    let rows = |file: &str| {
        let path = crate::common::data_files(&lake.join("history"))
            .into_iter()
            .find(|f| f.ends_with(file))
            .unwrap();
        let mut ops: Vec<String> = crate::common::file_rows(&path)
            .iter()
            .map(|r| format!("{}{}", r["operation"], r["id"]))
            .collect();
        ops.sort();
        ops
    };
    assert_eq!(rows(shared[0].0), ["I5", "U2"]);
    assert_eq!(rows(own[0].0), ["D4"]);
    let current = l.current("sales/orders").await;
    let amounts: BTreeMap<&str, &str> = current
        .iter()
        .map(|(id, r)| (id.as_str(), r["amount"].as_str()))
        .collect();
    assert_eq!(
        amounts,
        BTreeMap::from([("1", "10.0"), ("2", "22.0"), ("5", "50.0")])
    );
}

/// A merge of more upserts than one slice to the writers (65,536: they are sent as they are
/// resolved) over two commit days, rewriting files or marking rows in deletion vectors:
/// current holds each key once with its last change, and history each change of the run once,
/// on its commit day.
#[tokio::test(flavor = "multi_thread")]
async fn a_merge_of_more_upserts_than_one_slice_writes_each_once() {
    let (keys, new) = (100_000usize, 1_000usize);
    let load: String = (0..keys).map(|i| format!("{i},east,{i}\n")).collect();
    let day = |i: usize| if i < keys / 2 { "02" } else { "03" };
    let mut changes: String = (0..keys)
        .map(|i| {
            let ts = format!("2024-03-{} 09:00:00.{:06}", day(i), i % 1_000_000);
            match i % 10 {
                0 => format!("D,{ts},{i},east,{i}\n"),
                _ => format!("U,{ts},{i},west,{i}.5\n"),
            }
        })
        .collect();
    changes
        .extend((0..new).map(|i| format!("I,2024-03-03 10:00:00.000000,{},north,1\n", keys + i)));
    for vectors in [false, true] {
        let mut tables = ORDERS.replace("  partition_by: [region]\n", "");
        if vectors {
            tables = tables.replace(
                "  primary_key: [id]\n",
                "  primary_key: [id]\n  deletion_vectors: true\n",
            );
        }
        let l = Landing::new(&tables);
        l.file("sales/orders", "LOAD00000001.csv", &load);
        l.sync_one().await;
        l.file("sales/orders", "20240303-0900000000.csv", &changes);
        let t = l.sync_one().await;
        let a = t.apply.as_ref().unwrap();
        let (deleted, updated) = (keys / 10, keys - keys / 10);
        assert!(updated > 65_536, "more upserts than one slice");
        assert_eq!(
            (a.inserted, a.updated, a.deleted),
            (new as u64, updated as u64, deleted as u64),
            "vectors {vectors}: {a:?}"
        );
        assert_eq!(a.files_marked > 0, vectors, "{a:?}");
        let current = l.current("sales/orders").await;
        assert_eq!(current.len(), updated + new, "vectors {vectors}");
        for (id, row) in &current {
            let i: usize = id.parse().unwrap();
            let (region, amount, date) = match i < keys {
                true => ("west", format!("{i}.5"), format!("2024-03-{}", day(i))),
                false => ("north", "1.0".to_string(), "2024-03-03".to_string()),
            };
            assert_eq!(
                (
                    row["region"].as_str(),
                    row["amount"].as_str(),
                    row["operation"].as_str()
                ),
                (region, amount.as_str(), if i < keys { "U" } else { "I" }),
                "vectors {vectors}: {row:?}"
            );
            assert_eq!(row["eff_start_date"], date, "vectors {vectors}: {row:?}");
        }
        // the run's history rows: each change once, on its commit day
        let mut run: BTreeMap<(String, String), usize> = BTreeMap::new();
        for row in l.table("sales/orders", "history").await {
            if row["eff_start_date"] != "2024-03-09" {
                *run.entry((row["id"].clone(), row["operation"].clone()))
                    .or_default() += 1;
                let i: usize = row["id"].parse().unwrap();
                let date = match i < keys {
                    true => format!("2024-03-{}", day(i)),
                    false => "2024-03-03".to_string(),
                };
                assert_eq!(row["eff_start_date"], date, "vectors {vectors}: {row:?}");
            }
        }
        assert_eq!(run.len(), keys + new, "vectors {vectors}");
        assert!(run.values().all(|&n| n == 1), "a change in history twice");
        let count = |op: &str| run.keys().filter(|(_, o)| o == op).count();
        assert_eq!(
            (count("I"), count("U"), count("D")),
            (new, updated, deleted)
        );
    }
}

/// A full load over half the memory limit is partitioned by key and spilled: both tables hold
/// what a held run writes (the last change per key over two overlapping LOAD files and a change
/// file, deletes, partitions or not), the summary says so, and the run's spill folder is gone.
/// Then a reload over the tombstones the first run's hard deletes left, with late changes
/// (stale: older than their key's delete) and new ones: every counter of the run, and the
/// tombstones, are those of a held run.
#[tokio::test(flavor = "multi_thread")]
async fn full_loads_and_merges_over_the_memory_limit_spill_and_write_what_held_ones_do() {
    let region = |i: usize| ["east", "west", "north"][i % 3];
    let load1: String = (0..3000)
        .map(|i| format!("{i},{},{i}\n", region(i)))
        .collect();
    let load2: String = (2000..5000)
        .map(|i| format!("{i},{},{i}.5\n", region(i + 1)))
        .collect();
    let changes: String = (0..5000)
        .step_by(7)
        .enumerate()
        .map(|(n, i)| {
            let ts = format!("2024-03-01 10:{:02}:{:02}.{:06}", n / 60 % 60, n % 60, n);
            match i % 3 {
                0 => format!("D,{ts},{i},{},0\n", region(i)),
                1 => format!("U,{ts},{i},{},{}.25\n", region(i + 2), i),
                _ => format!("I,{ts},{},{},1\n", i + 10_000, region(i)),
            }
        })
        .collect();
    // the model: ids left after the load files (the later wins) and the changes
    let mut ids: std::collections::BTreeSet<usize> = (0..5000).collect();
    for i in (0..5000).step_by(7) {
        match i % 3 {
            0 => {
                ids.remove(&i);
            }
            1 => {}
            _ => {
                ids.insert(i + 10_000);
            }
        }
    }
    // run 3, a merge: updates (some move partition), deletes, late (stale) updates, deletes of
    // keys the table does not hold, inserts, a delete then a re-insert of one key, and keys
    // changed twice
    let merge: String = (0..4000)
        .step_by(5)
        .enumerate()
        .map(|(n, i)| {
            let ts = format!("2024-03-06 09:{:02}:{:02}.{n:06}", n / 60 % 60, n % 60);
            match i % 4 {
                0 => format!("D,{ts},{i},{},0\n", region(i)),
                1 => format!("U,{ts},{i},{},{i}.5\n", region(i + 1)),
                2 => format!("U,{ts},{i},{},{i}.25\n", region(i)),
                _ => format!("U,2024-01-15 07:00:00.{n:06},{i},{},7\n", region(i)),
            }
        })
        .chain((0..200).map(|n| format!("D,2024-03-06 10:00:00.{n:06},{},east,0\n", 50_000 + n)))
        .chain((0..300).map(|n| {
            format!(
                "I,2024-03-06 10:00:01.{n:06},{},{},3\n",
                30_000 + n,
                region(n)
            )
        }))
        .chain((0..4000).step_by(40).map(|i| {
            format!(
                "I,2024-03-06 11:00:00.{i:06},{i},{},{i}.125\n",
                region(i + 2)
            )
        }))
        .collect();
    for tables in [
        ORDERS.to_string(),
        ORDERS.replace("  partition_by: [region]\n", ""),
        ORDERS.replace(
            "  timestamp_column: ts\n",
            "  timestamp_column: ts\n  delete_mode: soft\n",
        ),
    ] {
        let (mut lakes, mut merges) = (Vec::new(), Vec::new());
        for limit in [1u64 << 30, 64 << 10] {
            let l = Landing::new(&tables);
            l.file("sales/orders", "LOAD00000001.csv", &load1);
            l.file("sales/orders", "LOAD00000002.csv", &load2);
            l.file("sales/orders", "20240301-1000000000.csv", &changes);
            let (options, spill) = l.limited(limit);
            let s = sync(&options).await.unwrap();
            let t = &s.tables[0];
            assert_eq!((t.status.as_str(), t.reload), ("applied", true), "{t:?}");
            let a = t.apply.as_ref().unwrap();
            match limit > 1 << 20 {
                true => assert_eq!((a.partitions, a.spilled_bytes), (1, 0), "{a:?}"),
                false => {
                    assert!(a.partitions > 1 && a.spilled_bytes > 0, "{a:?}");
                    assert!(t.message.contains("partitions of changes"), "{}", t.message);
                    // its load files repeat keys, and its change file deletes: not streamed
                    assert!(!a.streamed, "{a:?}");
                }
            }
            assert_eq!(a.changes_read, 6000 + 715);
            assert_eq!(
                std::fs::read_dir(spill.path()).unwrap().count(),
                0,
                "the spill folder is removed"
            );
            let current = l.current("sales/orders").await;
            let got: std::collections::BTreeSet<usize> = current
                .iter()
                .filter(|(_, r)| r["operation"] != "D")
                .map(|(k, _)| k.parse().unwrap())
                .collect();
            assert_eq!(got, ids, "live keys");
            let mut history: Vec<Row> = l.table("sales/orders", "history").await;
            history.sort();
            let first = (shape(&current), history, a.inserted, a.updated, a.deleted);
            // a new full load (another size), then late and new changes
            let reload: String = (0..4000)
                .map(|i| format!("{i},{},{i}.75\n", region(i)))
                .collect();
            l.file("sales/orders", "LOAD00000001.csv", &reload);
            std::thread::sleep(std::time::Duration::from_millis(20));
            let late: String = (0..5000)
                .step_by(7)
                .filter(|i| i % 3 == 0)
                .enumerate()
                .map(|(n, i)| {
                    let ts = format!("2024-02-01 08:00:{:02}.{n:06}", n % 60);
                    match n % 2 {
                        0 => format!("D,{ts},{i},{},0\n", region(i)),
                        _ => format!("U,{ts},{i},{},9\n", region(i)),
                    }
                })
                .chain((0..300).map(|n| {
                    format!(
                        "I,2024-03-05 08:00:00.{n:06},{},{},2\n",
                        20_000 + n,
                        region(n)
                    )
                }))
                .collect();
            l.file("sales/orders", "20240305-0800000000.csv", &late);
            let s = sync(&options).await.unwrap();
            let t = &s.tables[0];
            assert_eq!((t.status.as_str(), t.reload), ("applied", true), "{t:?}");
            let a = t.apply.as_ref().unwrap();
            assert!(a.stale > 0 && a.inserted > 4000, "{a:?}");
            assert_eq!(a.spilled_bytes > 0, limit < 1 << 20, "{a:?}");
            let mut history: Vec<Row> = l.table("sales/orders", "history").await;
            history.sort();
            let mut tombstones: Vec<Row> = l.table("sales/orders", "tombstones").await;
            tombstones.sort();
            assert!(!tombstones.is_empty());
            let counters = (
                a.changes_read,
                a.keys_changed,
                (a.inserted, a.updated, a.deleted),
                (a.ignored_deletes, a.stale, a.stale_files.clone()),
                (a.tombstones_written, a.files_rewritten),
            );
            let current = shape(&l.current("sales/orders").await);
            let second = (current, history, tombstones, format!("{counters:?}"));
            if limit > 1 << 20 {
                merges.push(merge_copies(&l, &merge).await);
            }
            lakes.push((first, second));
        }
        assert_eq!(
            lakes[0], lakes[1],
            "spilled and held runs write the same rows"
        );
    }
}

/// A full load of distinct keys past half the memory limit streams to the writers as it is
/// read (its keys checked distinct at its end) and writes what a held load writes: current
/// and history (every column), counters, and a checkpoint after which nothing is pending. A
/// reload whose files repeat a key is found out at its end and read again split by key; a
/// reload of distinct keys streams again.
#[tokio::test(flavor = "multi_thread")]
async fn full_loads_of_distinct_keys_stream_and_a_repeated_key_reads_the_load_again_by_key() {
    let region = |i: usize| ["east", "west", "north"][i % 3];
    let rows = |ids: std::ops::Range<usize>, amount: &str| -> String {
        ids.map(|i| format!("{i},{},{i}.{amount}\n", region(i)))
            .collect()
    };
    for tables in [
        ORDERS.to_string(),
        ORDERS.replace("  partition_by: [region]\n", ""),
    ] {
        let mut lakes = Vec::new();
        for limit in [1u64 << 30, 64 << 10] {
            let small = limit < 1 << 20;
            let l = Landing::new(&tables);
            let (options, spill) = l.limited(limit);
            let mut runs = Vec::new();
            // a first load, a reload repeating keys 2500..3000 of the first file in the second
            // (the later file wins), and a reload of distinct keys again
            for (step, (first, second)) in [
                (rows(0..3000, "5"), rows(3000..6000, "5")),
                (rows(0..3000, "25"), rows(2500..5000, "75")),
                (rows(0..2000, "125"), rows(2000..4500, "375")),
            ]
            .into_iter()
            .enumerate()
            {
                l.file("sales/orders", "LOAD00000001.csv", &first);
                l.file("sales/orders", "LOAD00000002.csv", &second);
                std::thread::sleep(std::time::Duration::from_millis(20));
                let s = sync(&options).await.unwrap();
                let t = &s.tables[0];
                assert_eq!(t.status, "applied", "step {step}: {t:?}");
                assert!(t.reload, "a full load: {t:?}");
                let a = t.apply.as_ref().unwrap();
                let repeats = step == 1;
                assert_eq!(a.streamed, small && !repeats, "step {step}: {a:?}");
                // a streamed load read again says why
                assert_eq!(t.stream_restarted.is_some(), small && repeats, "{t:?}");
                if small && repeats {
                    assert!(t.message.contains("read again"), "{}", t.message);
                }
                match (small, repeats) {
                    (false, _) => assert_eq!((a.partitions, a.spilled_bytes), (1, 0), "{a:?}"),
                    // read again split by key and spilled
                    (true, true) => assert!(a.partitions > 1 && a.spilled_bytes > 0, "{a:?}"),
                    // the key digests' log spilled past its 16 KiB (8 bytes a row, the last
                    // ones checked in memory)
                    (true, false) => {
                        assert_eq!(a.partitions, 1, "{a:?}");
                        assert!(a.spilled_bytes > 16 << 10, "{a:?}");
                        assert!(a.spilled_bytes <= a.changes_read * 8, "{a:?}");
                        assert!(
                            t.message.contains("streamed to the writers"),
                            "{}",
                            t.message
                        );
                    }
                }
                assert_eq!(
                    (a.changes_read, a.keys_changed),
                    match step {
                        0 => (6000, 6000),
                        1 => (5500, 5000),
                        _ => (4500, 4500),
                    },
                    "{a:?}"
                );
                assert_eq!(a.inserted, a.keys_changed, "{a:?}");
                assert_eq!(
                    std::fs::read_dir(spill.path()).unwrap().count(),
                    0,
                    "the spill folder is removed"
                );
                // the checkpoint holds both files: nothing is pending
                let again = sync(&options).await.unwrap();
                assert_eq!(
                    again.tables[0].status, "up-to-date",
                    "{:?}",
                    again.tables[0]
                );
                let mut current: Vec<Row> = l.table("sales/orders", "current").await;
                current.sort();
                let live = current.len();
                assert_eq!(live as u64, a.keys_changed);
                let mut history: Vec<Row> = l.table("sales/orders", "history").await;
                history.sort();
                let counters = format!(
                    "{:?}",
                    (a.inserted, a.updated, a.deleted, a.ignored_deletes, a.stale)
                );
                runs.push((current, history, counters));
            }
            // the repeated keys hold the second file's values
            let second = &runs[1].0;
            let amount_of = |id: &str| {
                second
                    .iter()
                    .find(|r| r["id"] == id)
                    .map(|r| r["amount"].clone())
            };
            assert_eq!(amount_of("2700").as_deref(), Some("2700.75"));
            assert_eq!(amount_of("100").as_deref(), Some("100.25"));
            lakes.push(runs);
        }
        assert_eq!(
            lakes[0], lakes[1],
            "held and streamed (or read again) loads write the same rows"
        );
    }
}

/// Merges the change file `merge` into three copies of `l`'s landing and lake: held (1 GiB),
/// spilled (64 KiB), and spilled with its partitions split again (4 KiB); asserts that the
/// three write the same current rows (every column), history, tombstones and counters.
async fn merge_copies(l: &Landing, merge: &str) -> usize {
    let mut results = Vec::new();
    for limit in [1u64 << 30, 64 << 10, 4 << 10] {
        let c = Landing {
            dir: tempfile::tempdir().unwrap(),
        };
        copy_tree(&l.root(), &c.root());
        copy_tree(&l.lake(), &c.lake());
        c.file("sales/orders", "20240306-0900000000.csv", merge);
        let (options, spill) = c.limited(limit);
        let s = sync(&options).await.unwrap();
        let t = &s.tables[0];
        assert_eq!((t.status.as_str(), t.reload), ("applied", false), "{t:?}");
        let a = t.apply.as_ref().unwrap();
        assert!(
            a.stale > 0 && a.ignored_deletes > 0 && a.deleted > 0 && a.files_rewritten > 0,
            "{a:?}"
        );
        match limit {
            l if l > 1 << 20 => assert_eq!((a.partitions, a.spilled_bytes), (1, 0), "{a:?}"),
            l if l > 16 << 10 => assert!(a.partitions > 1 && a.spilled_bytes > 0, "{a:?}"),
            _ => assert!(a.partitions > 64, "partitions split again: {a:?}"),
        }
        assert_eq!(
            std::fs::read_dir(spill.path()).unwrap().count(),
            0,
            "the spill folder is removed"
        );
        let mut current: Vec<Row> = c.table("sales/orders", "current").await;
        current.sort();
        let mut history: Vec<Row> = c.table("sales/orders", "history").await;
        history.sort();
        let mut tombstones: Vec<Row> = c.table("sales/orders", "tombstones").await;
        tombstones.sort();
        let counters = format!(
            "{:?}",
            (
                a.changes_read,
                a.keys_changed,
                (a.inserted, a.updated, a.deleted),
                (a.ignored_deletes, a.stale, a.stale_files.clone()),
                (a.tombstones_written, a.files_rewritten, a.rows_copied),
            )
        );
        results.push((current, history, tombstones, counters));
    }
    assert_eq!(
        results[0], results[1],
        "held and spilled merges write the same"
    );
    assert_eq!(
        results[0], results[2],
        "held and split-again merges write the same"
    );
    results[0].0.len()
}

/// Copies the folder `from` into `to`, recursively (new modification times).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_tree(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
}

/// A lake made by an earlier Tributary (f8469d3: its applied-files table has `digest` but no
/// `etag` column; `tests/fixtures/upgrade_applied_without_etag`, a full load and one change
/// file) syncs on. Copied here, the landing zone's files have new modification times: the load
/// is recognised by its digest (no reload), the change file by its name; the next change file
/// is applied once; the applied table keeps its own layout.
#[tokio::test(flavor = "multi_thread")]
async fn a_lake_from_before_etags_were_kept_syncs_on() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upgrade_applied_without_etag");
    let l = Landing {
        dir: tempfile::tempdir().unwrap(),
    };
    copy_tree(&fixture.join("landing"), &l.root());
    copy_tree(&fixture.join("lake"), &l.lake());
    let before = l.table("sales/orders", "applied").await;
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|r| !r.contains_key("etag")), "{before:?}");
    l.file("sales/orders", "20240302-1000000000.csv", "I,4,east,40\n");
    let t = l.sync_one().await;
    assert_eq!(
        (t.status.as_str(), t.files, t.reload),
        ("applied", 1, false),
        "{t:?}"
    );
    let current = l.current("sales/orders").await;
    let rows: Vec<(&str, &str, &str)> = current
        .values()
        .map(|r| (r["id"].as_str(), r["region"].as_str(), r["amount"].as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("1", "east", "10.0"),
            ("2", "west", "21.0"),
            ("4", "east", "40.0")
        ]
    );
    let applied = l.table("sales/orders", "applied").await;
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert!(
        applied.iter().all(|r| !r.contains_key("etag")),
        "{applied:?}"
    );
    assert_eq!(l.sync_one().await.status, "up-to-date");
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_deletes_keep_the_key_with_operation_d_until_it_returns() {
    let l = Landing::new(&ORDERS.replace("  timestamp_column: ts\n", "  delete_mode: soft\n"));
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n2,east,20\n");
    l.sync_one().await;
    l.file("sales/orders", "20240301-1000000000.csv", "D,1,east,10\n");
    l.sync_one().await;
    let current = l.current("sales/orders").await;
    assert_eq!(current["1"]["operation"], "D");
    assert_eq!(current["1"]["amount"], "10.0");
    // A second delete of a soft-deleted key is ignored and keeps the row.
    l.file("sales/orders", "20240302-1000000000.csv", "D,1,east,10\n");
    let t = l.sync_one().await;
    assert_eq!(t.apply.unwrap().ignored_deletes, 1);
    assert_eq!(l.current("sales/orders").await["1"]["operation"], "D");
    l.file("sales/orders", "20240303-1000000000.csv", "I,1,west,11\n");
    let t = l.sync_one().await;
    assert_eq!(
        t.apply.unwrap().inserted,
        1,
        "a soft-deleted key is not live"
    );
    let current = l.current("sales/orders").await;
    assert_eq!(current["1"]["operation"], "I");
    assert_eq!(current["1"]["region"], "west");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_files_holding_a_changed_key_are_rewritten() {
    let tables = ORDERS
        .replace("  partition_by: [region]\n", "")
        .replace("  timestamp_column: ts\n", "");
    let l = Landing::new(&tables);
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n2,east,20\n");
    l.sync_one().await;
    l.file(
        "sales/orders",
        "20240301-1000000000.csv",
        "I,3,east,30\nI,4,east,40\n",
    );
    let t = l.sync_one().await.apply.unwrap();
    assert_eq!(
        (t.current_files, t.files_rewritten),
        (1, 0),
        "inserts of new keys rewrite nothing"
    );
    l.file("sales/orders", "20240302-1000000000.csv", "U,4,east,41\n");
    let t = l.sync_one().await.apply.unwrap();
    assert_eq!(
        (t.current_files, t.files_rewritten, t.rows_copied),
        (2, 1, 1)
    );
    let current = l.current("sales/orders").await;
    assert_eq!(current.len(), 4);
    assert_eq!(current["4"]["amount"], "41.0");
    assert_eq!(current["1"]["amount"], "10.0");
}

/// Merges into a current table with `deletion_vectors: true` mark the rows they replace or
/// delete in deletion vectors (a file marked again keeps its earlier rows marked) and copy no
/// row, held or spilled, and leave what rewriting merges leave: current and history rows and
/// counters equal run by run, over updates that move partitions, deletes, stale updates,
/// inserts and re-inserts of deleted keys, with hard and soft deletes. The key turns vectors on
/// for a table made without them (the partitioned one: at its second run). `tributary optimize`
/// then rewrites the marked files without their marked rows.
#[tokio::test(flavor = "multi_thread")]
async fn merges_with_deletion_vectors_mark_rows_and_end_where_rewrites_end() {
    let region = |i: usize| ["east", "west", "north"][i % 3];
    let load: String = (0..3000)
        .map(|i| format!("{i},{},{i}\n", region(i)))
        .collect();
    let changes = |day: u32, step: usize| -> String {
        (0..4000)
            .step_by(step)
            .enumerate()
            .map(|(n, i)| {
                let ts = format!(
                    "2024-03-{day:02} 09:{:02}:{:02}.{n:06}",
                    n / 60 % 60,
                    n % 60
                );
                match i % 5 {
                    0 => format!("D,{ts},{i},{},0\n", region(i)),
                    1 => format!("U,{ts},{i},{},{i}.5\n", region(i + 1)),
                    2 => format!("U,{ts},{i},{},{i}.25\n", region(i)),
                    3 => format!("U,2024-01-15 07:00:00.{n:06},{i},{},7\n", region(i)),
                    _ => format!("I,{ts},{},{},3\n", i + 10_000, region(i)),
                }
            })
            .chain((0..4000).step_by(15).map(move |i| {
                format!(
                    "I,2024-03-{day:02} 11:00:00.{i:06},{i},{},{day}\n",
                    region(i + 2)
                )
            }))
            .collect()
    };
    for (n, tables) in [
        ORDERS.to_string(),
        ORDERS.replace("  partition_by: [region]\n", ""),
        ORDERS.replace(
            "  timestamp_column: ts\n",
            "  timestamp_column: ts\n  delete_mode: soft\n",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for limit in [1u64 << 30, 64 << 10] {
            let mut lakes = Vec::new();
            for vectors in [false, true] {
                let spec = match vectors {
                    true => tables.replace(
                        "  primary_key: [id]\n",
                        "  primary_key: [id]\n  deletion_vectors: true\n",
                    ),
                    false => tables.clone(),
                };
                let late = vectors && n == 0;
                let l = Landing::new(if late { &tables } else { &spec });
                l.file("sales/orders", "LOAD00000001.csv", &load);
                let (options, _spill) = l.limited(limit);
                let mut runs = Vec::new();
                for day in [0, 6, 7] {
                    if late && day == 6 {
                        let file = l.root().join("tables.yaml");
                        std::fs::write(file, format!("tables:\n{spec}")).unwrap();
                    }
                    if day > 0 {
                        let name = format!("202403{day:02}-0900000000.csv");
                        l.file("sales/orders", &name, &changes(day, 3 + day as usize % 2));
                    }
                    let s = sync(&options).await.unwrap();
                    let t = &s.tables[0];
                    assert_eq!(t.status, "applied", "{t:?}");
                    let a = t.apply.as_ref().unwrap();
                    if day > 0 {
                        assert_eq!(a.partitions > 1, limit < 1 << 20, "{a:?}");
                        match vectors {
                            true => {
                                assert_eq!((a.files_rewritten, a.rows_copied), (0, 0), "{a:?}");
                                assert!(a.files_marked > 0 && a.rows_marked > 0, "{a:?}");
                                assert!(
                                    t.message.contains("given deletion vectors"),
                                    "{}",
                                    t.message
                                );
                            }
                            false => {
                                assert!(a.files_rewritten > 0 && a.rows_copied > 0, "{a:?}");
                                assert_eq!((a.files_marked, a.rows_marked), (0, 0), "{a:?}");
                            }
                        }
                    }
                    let current = shape(&l.current("sales/orders").await);
                    let mut history: Vec<Row> = l.table("sales/orders", "history").await;
                    history.sort();
                    let counters = (
                        a.changes_read,
                        a.keys_changed,
                        (a.inserted, a.updated, a.deleted),
                        (a.ignored_deletes, a.stale),
                    );
                    runs.push((current, history, format!("{counters:?}")));
                }
                let current = l.lake().join("sales/orders/current");
                let (marked, listed) = crate::common::deletion_vectors_of(&current).await;
                assert_eq!((marked > 0, listed), (vectors, vectors), "{spec}");
                if vectors {
                    // the marked files are rewritten without their marked rows
                    let before = shape(&l.current("sales/orders").await);
                    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
                        .args(["optimize", "--lake"])
                        .arg(l.lake())
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{out:?}");
                    assert_eq!(crate::common::deletion_vectors_of(&current).await.0, 0);
                    assert_eq!(shape(&l.current("sales/orders").await), before);
                }
                lakes.push(runs);
            }
            assert_eq!(lakes[0], lakes[1], "{tables} at {limit} bytes");
        }
    }
}

/// ORDERS without a primary key, partitions or commit timestamps: an inserts-only table.
fn keyless_orders() -> String {
    ORDERS
        .replace("  primary_key: [id]\n", "")
        .replace("  partition_by: [region]\n", "")
        .replace("  timestamp_column: ts\n", "")
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_primary_key_only_inserts_are_loaded() {
    let tables = keyless_orders();
    let l = Landing::new(&tables);
    l.file(
        "sales/orders",
        "20240301-1000000000.csv",
        "I,1,east,10\nI,1,east,10\nU,1,east,11\nD,1,east,10\n",
    );
    let t = l.sync_one().await;
    let a = t.apply.clone().unwrap();
    assert_eq!((a.inserted, a.skipped_without_key), (2, 2));
    assert!(t.message.contains("inserts only"), "{}", t.message);
    assert_eq!(
        l.table("sales/orders", "current").await.len(),
        2,
        "identical inserts are both kept"
    );
}

/// A table without a primary key whose full load is over half the memory limit spills it in
/// read order (it takes no last change per key): current holds every row, duplicates too, in
/// the order of the file, as a held run writes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_full_load_over_the_memory_limit_spills_in_read_order() {
    let tables = keyless_orders();
    let load: String = (0..6000)
        .map(|i| format!("{},{},{i}\n", i % 1000, ["east", "west"][i % 2]))
        .collect();
    let mut lakes = Vec::new();
    for limit in [1u64 << 30, 64 << 10] {
        let l = Landing::new(&tables);
        l.file("sales/orders", "LOAD00000001.csv", &load);
        let mut options = l.options();
        options.memory_limit = limit;
        let s = sync(&options).await.unwrap();
        let t = &s.tables[0];
        assert_eq!(t.status, "applied", "{t:?}");
        let a = t.apply.as_ref().unwrap();
        assert_eq!(a.spilled_bytes > 0, limit < 1 << 20, "{a:?}");
        assert_eq!(a.inserted, 6000);
        // data files in commit order, rows in file order: the load's order
        let rows: Vec<String> = l
            .table("sales/orders", "current")
            .await
            .iter()
            .map(|r| r["amount"].clone())
            .collect();
        let mut amounts: Vec<f64> = rows.iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(amounts.len(), 6000);
        amounts.sort_by(f64::total_cmp);
        assert_eq!(amounts, (0..6000).map(f64::from).collect::<Vec<_>>());
        lakes.push(rows);
    }
    let (mut held, mut spilled) = (lakes[0].clone(), lakes[1].clone());
    held.sort();
    spilled.sort();
    assert_eq!(held, spilled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewritten_full_load_replaces_the_table() {
    let tables = ORDERS.replace("  timestamp_column: ts\n", "");
    let l = Landing::new(&tables);
    let load = l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n2,east,20\n");
    l.sync_one().await;
    l.file("sales/orders", "20240301-1000000000.csv", "U,1,east,11\n");
    l.sync_one().await;
    // DMS with includeOpForFullLoad: the reload's rows carry Op = I
    std::fs::write(&load, "I,1,east,12\nI,5,west,50\n").unwrap();
    touch(&load, 60);
    let t = l.sync_one().await;
    assert!(t.reload, "{t:?}");
    // the change file applied before is older than the new load: its effect is replaced
    assert_eq!((t.replaced_files, t.superseded_files), (1, 0), "{t:?}");
    assert!(
        t.message
            .contains("supersedes 1 change files applied before"),
        "{t:?}"
    );
    let current = l.current("sales/orders").await;
    assert_eq!(current.keys().collect::<Vec<_>>(), ["1", "5"]);
    assert_eq!(current["1"]["amount"], "12.0");
}

/// Sets a file's modification time `secs` seconds from now.
fn touch(path: &std::path::Path, secs: u64) {
    let at = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_landing_zone_copied_again_is_not_a_reload() {
    let l = Landing::new(ORDERS);
    orders_day1(&l);
    l.sync_one().await;
    l.file(
        "sales/orders",
        "20240302-1000000000.csv",
        "U,2024-03-02 10:00:00.000000,1,east,15\n",
    );
    l.sync_one().await;
    let before = shape(&l.current("sales/orders").await);
    let history = l.table("sales/orders", "history").await.len();
    // `cp -r` or `aws s3 sync` of the same files: every modification time is new, the change
    // files (copied first, in name order) older than the LOAD files
    let folder = l.root().join("sales/orders");
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        touch(&path, if name.starts_with("LOAD") { 120 } else { 60 });
    }
    let t = l.sync_one().await;
    assert_eq!(
        (t.status.as_str(), t.reload),
        ("up-to-date", false),
        "{t:?}"
    );
    assert_eq!(shape(&l.current("sales/orders").await), before);
    assert_eq!(l.table("sales/orders", "history").await.len(), history);
    // A LOAD file with the same name and size but other bytes is a real reload.
    l.file("sales/orders", "LOAD00000002.csv", "3,west,31\n");
    touch(&folder.join("LOAD00000002.csv"), 180);
    let t = l.sync_one().await;
    assert!(t.reload, "{t:?}");
    // The load is every LOAD file written since it was applied, the unchanged one included;
    // the change files older than it are replaced by it.
    let current = l.current("sales/orders").await;
    assert_eq!(current.keys().collect::<Vec<_>>(), ["1", "2", "3"], "{t:?}");
    assert_eq!(current["3"]["amount"], "31.0");
    assert_eq!(current["1"]["amount"], "10.0");
    assert_eq!(t.replaced_files, 2, "{t:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_envelope_wrapped_and_flattened_events_apply_in_lsn_order() {
    let tables = "\
- source: inventory/customers
  active: true
  layout: debezium
  primary_key: [id]
  columns:
  - {name: id, type: long}
  - {name: name, type: string}
  - {name: born, type: date}
";
    let l = Landing::new(tables);
    let day = 19_783i64 * 86_400_000; // 2024-03-01 in ms
    let events = [
        // line order differs from LSN order: the LSN decides
        format!(
            r#"{{"before":{{"id":1,"name":"a","born":0}},"after":{{"id":1,"name":"b","born":0}},"source":{{"lsn":200,"ts_ms":{day}}},"op":"u","ts_ms":{day}}}"#
        ),
        format!(
            r#"{{"before":null,"after":{{"id":1,"name":"a","born":0}},"source":{{"lsn":100,"ts_ms":{day}}},"op":"c","ts_ms":{day}}}"#
        ),
        "null".to_string(),
        format!(
            r#"{{"schema":{{"type":"struct"}},"payload":{{"before":null,"after":{{"id":2,"name":"x","born":19783}},"source":{{"lsn":150,"ts_ms":{day}}},"op":"r"}}}}"#
        ),
        r#"{"schema":{"type":"struct"},"payload":null}"#.to_string(),
        format!(
            r#"{{"id":3,"name":"z","born":null,"__op":"c","__lsn":160,"__source_ts_ms":{day}}}"#
        ),
        format!(
            r#"{{"id":3,"name":null,"born":null,"__op":"d","__deleted":"true","__lsn":170,"__source_ts_ms":{}}}"#,
            day + 86_400_000
        ),
        format!(
            r#"{{"id":4,"name":"w","born":null,"__op":"c","__deleted":"false","__lsn":180,"__source_ts_ms":{day}}}"#
        ),
    ];
    l.file(
        "inventory/customers",
        "events-0001.json",
        &(events.join("\n") + "\n"),
    );
    let t = l.sync_one().await;
    let a = t.apply.unwrap();
    assert_eq!(a.changes_read, 6, "two tombstones skipped");
    let current = l.current("inventory/customers").await;
    assert_eq!(current.keys().collect::<Vec<_>>(), ["1", "2", "4"]);
    assert_eq!(current["1"]["name"], "b");
    assert_eq!(current["2"]["born"], "2024-03-01");
    assert_eq!(current["1"]["eff_start_date"], "2024-03-01");

    // Key 3 is live after a later file; its delete event (flattened, NULL non-keys) removes it and
    // history keeps its last stored name.
    l.file(
        "inventory/customers",
        "events-0002.json",
        &format!(
            "{}\n",
            r#"{"id":3,"name":"z","born":null,"__op":"c","__lsn":300}"#
        ),
    );
    l.sync_one().await;
    l.file(
        "inventory/customers",
        "events-0003.json",
        &format!("{}\n", r#"{"id":3,"name":null,"born":null,"__op":"d","__deleted":"true","__lsn":400,"__source_ts_ms":1710000000000}"#),
    );
    l.sync_one().await;
    assert!(!l.current("inventory/customers").await.contains_key("3"));
    let history = l.table("inventory/customers", "history").await;
    let d: Vec<&Row> = history
        .iter()
        .filter(|r| r["id"] == "3" && r["operation"] == "D")
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["name"], "z");
    assert_eq!(d[0]["eff_start_date"], "2024-03-09");
}

#[tokio::test(flavor = "multi_thread")]
async fn dms_parquet_files_are_read_by_column_name() {
    use deltalake::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    let tables = ORDERS.replace("  partition_by: [region]\n", "");
    let l = Landing::new(&tables);
    let write = |name: &str, ops: Option<Vec<&str>>, ids: Vec<i64>, amounts: Vec<f64>| {
        let mut fields = Vec::new();
        let mut columns: Vec<Arc<dyn deltalake::arrow::array::Array>> = Vec::new();
        if let Some(ops) = ops {
            fields.push(Field::new("Op", DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from(ops)));
            fields.push(Field::new("ts", DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from(vec![
                "2024-03-05 01:02:03";
                ids.len()
            ])));
        }
        // columns in another order than the config: matched by name
        fields.push(Field::new("amount", DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from(amounts)));
        fields.push(Field::new("id", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(ids.clone())));
        fields.push(Field::new("region", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(vec!["east"; ids.len()])));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let path = l.root().join("sales/orders").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w = deltalake::parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    };
    write("LOAD00000001.parquet", None, vec![1, 2], vec![10.0, 20.0]);
    write(
        "20240305-0102030000.parquet",
        Some(vec!["U", "D"]),
        vec![1, 2],
        vec![11.0, 20.0],
    );
    let t = l.sync_one().await;
    assert_eq!(t.files, 2);
    let current = l.current("sales/orders").await;
    assert_eq!(current.keys().collect::<Vec<_>>(), ["1"]);
    assert_eq!(current["1"]["amount"], "11.0");
    assert_eq!(current["1"]["eff_start_date"], "2024-03-05");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_table_does_not_stop_the_others_and_creates_nothing() {
    let tables = format!(
        "{}{}",
        ORDERS.replace("  timestamp_column: ts\n", ""),
        ORDERS
            .replace("sales/orders", "sales/returns")
            .replace("  timestamp_column: ts\n", "")
    );
    let l = Landing::new(&tables);
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n");
    l.file(
        "sales/returns",
        "LOAD00000001.csv",
        "1,east,10\n2,east,lots\n",
    );
    l.file("hr/people", "LOAD00000001.csv", "1\n");
    let s = l.sync().await;
    assert_eq!(s.failed, 1);
    assert_eq!(s.inactive, vec!["hr/people".to_string()]);
    let failed = s
        .tables
        .iter()
        .find(|t| t.table == "sales.returns")
        .unwrap();
    let err = failed.error.clone().unwrap();
    assert!(
        err.contains("LOAD00000001.csv") && err.contains("line 2") && err.contains("amount"),
        "{err}"
    );
    assert!(
        !l.lake().join("sales/returns/current").exists(),
        "a failed first run leaves no table"
    );
    let ok = s.tables.iter().find(|t| t.table == "sales.orders").unwrap();
    assert_eq!(ok.status, "applied");

    l.file("sales/returns", "LOAD00000001.csv", "1,east,10\n2,east,5\n");
    let s = l.sync().await;
    assert_eq!(s.failed, 0, "{s:?}");
    assert_eq!(l.current("sales/returns").await.len(), 2);
}

/// Runs `tributary sync` as a process, optionally aborting at a crash point.
fn sync_process(l: &Landing, crash_at: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args([
        "sync",
        l.root().to_str().unwrap(),
        "--lake",
        l.lake().to_str().unwrap(),
        "--date",
        "2024-03-09",
        "--json",
    ]);
    if let Some(point) = crash_at {
        cmd.env("TRIBUTARY_CRASH_AT", point);
    }
    cmd.output().unwrap()
}

/// ORDERS with `deletion_vectors: true`.
fn orders_with_vectors() -> String {
    with_vectors(ORDERS, true)
}

/// `tables` (a tables file of one table keyed by `id`) with `deletion_vectors: true` where
/// `on`.
fn with_vectors(tables: &str, on: bool) -> String {
    match on {
        true => tables.replace(
            "  primary_key: [id]\n",
            "  primary_key: [id]\n  deletion_vectors: true\n",
        ),
        false => tables.to_string(),
    }
}

/// A landing zone of [`orders_with_vectors`] with the first DMS day synced (current: keys 1
/// and 4 in the east file, 2 in the west one).
async fn vectors_after_day1() -> Landing {
    let l = Landing::new(&orders_with_vectors());
    orders_day1(&l);
    l.sync_one().await;
    l
}

/// A change file of March `day` that updates key `id` (east) to `amount`.
fn update_east(l: &Landing, day: u32, id: u32, amount: u32) {
    l.file(
        "sales/orders",
        &format!("202403{day:02}-1000000000.csv"),
        &format!("U,2024-03-{day:02} 10:00:00.000000,{id},east,{amount}\n"),
    );
}

/// Turning the change data feed on for a table whose files have deletion vectors: the run is
/// refused with the advice to optimize (the feed compares whole files) before it commits
/// anything, the feed's property included, and after `tributary optimize` the merge applies,
/// feed and all.
#[tokio::test(flavor = "multi_thread")]
async fn the_change_data_feed_waits_for_optimize_on_files_with_deletion_vectors() {
    let vectors = orders_with_vectors();
    let l = vectors_after_day1().await;
    update_east(&l, 2, 1, 11);
    assert_eq!(l.sync_one().await.apply.unwrap().files_marked, 1);
    let feed = vectors.replace(
        "  deletion_vectors: true\n",
        "  deletion_vectors: true\n  change_data_feed: true\n",
    );
    std::fs::write(l.root().join("tables.yaml"), format!("tables:\n{feed}")).unwrap();
    update_east(&l, 3, 4, 42);
    let before = shape(&l.current("sales/orders").await);
    let current = l.lake().join("sales/orders/current");
    let url = url::Url::from_directory_path(&current).unwrap();
    let feed_on = || async {
        let table = deltalake::open_table(url.clone()).await.unwrap();
        let config = table.snapshot().unwrap().metadata().configuration().clone();
        config.contains_key("delta.enableChangeDataFeed")
    };
    let committed = l.versions("sales/orders").await;
    assert!(!feed_on().await, "the feed was on before the setting");
    let s = l.sync().await;
    let t = &s.tables[0];
    assert_eq!(t.status, "failed", "{t:?}");
    assert!(t.message.contains("tributary optimize"), "{}", t.message);
    assert!(t.message.contains("has a deletion vector"), "{}", t.message);
    assert_eq!(shape(&l.current("sales/orders").await), before);
    // nothing committed: neither table's version moved, and the property is not set
    assert_eq!(l.versions("sales/orders").await, committed);
    assert!(!feed_on().await, "the feed's property was committed");
    let out = cli(&["optimize", "--lake", l.lake().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let optimized = deltalake::open_table(url).await.unwrap().version().unwrap();
    let a = l.sync_one().await.apply.unwrap();
    assert_eq!((a.updated, a.files_marked), (1, 0), "{a:?}");
    assert_eq!(l.current("sales/orders").await["4"]["amount"], "42.0");
    assert!(crate::common::assert_feed_replays(&current, optimized as i64 + 1).await > 0);
}

/// A table that records the feed and has deletion vectors all the same (the property set by
/// another writer after Tributary's runs marked rows): a merge that would rewrite a file that
/// has a vector is refused before it reads the rows, with the advice to optimize, and
/// commits nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_merge_rewriting_a_file_with_a_deletion_vector_is_refused_where_the_feed_is_on() {
    let l = vectors_after_day1().await;
    update_east(&l, 2, 1, 11);
    assert_eq!(l.sync_one().await.apply.unwrap().files_marked, 1);
    let url = url::Url::from_directory_path(l.lake().join("sales/orders/current")).unwrap();
    deltalake::open_table(url)
        .await
        .unwrap()
        .set_tbl_properties()
        .with_properties(std::collections::HashMap::from([(
            "delta.enableChangeDataFeed".to_string(),
            "true".to_string(),
        )]))
        .await
        .unwrap();
    update_east(&l, 3, 4, 42);
    let versions = || l.versions("sales/orders");
    let before = (shape(&l.current("sales/orders").await), versions().await);
    let s = l.sync().await;
    let t = &s.tables[0];
    assert_eq!(t.status, "failed", "{t:?}");
    assert!(t.message.contains("has a deletion vector"), "{}", t.message);
    assert!(t.message.contains("tributary optimize"), "{}", t.message);
    let after = (shape(&l.current("sales/orders").await), versions().await);
    assert_eq!(after, before);
}

/// `tributary vacuum` keeps a deletion vector that a version within the retention reads,
/// though no live file names it any more and it is older than the retention (delta-rs's full
/// vacuum alone would take it for an orphan), and still deletes a stray one.
#[tokio::test(flavor = "multi_thread")]
async fn vacuum_keeps_the_deletion_vectors_that_versions_within_the_retention_read() {
    let l = vectors_after_day1().await;
    let current = l.lake().join("sales/orders/current");
    let vectors = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(&current)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("deletion_vector_"))
            .collect()
    };
    // keys 1 and 4 share the east file: marked once, then again (a new vector replaces it)
    update_east(&l, 2, 1, 11);
    assert_eq!(l.sync_one().await.apply.unwrap().files_marked, 1);
    let first = vectors();
    let url = url::Url::from_directory_path(&current).unwrap();
    let version = deltalake::open_table(url).await.unwrap().version().unwrap();
    let mut before = crate::common::table_rows_at(&current, version as i64).await;
    before.sort();
    update_east(&l, 3, 4, 42);
    assert_eq!(l.sync_one().await.apply.unwrap().files_marked, 1);
    assert_eq!(vectors().len(), 2);
    // the replaced vector and a stray one, both written ten days ago
    let stray = current.join("deletion_vector_00000000-0000-0000-0000-000000000000.bin");
    std::fs::write(&stray, b"stray").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86_400);
    for file in first.iter().map(|f| current.join(f)).chain([stray.clone()]) {
        let handle = std::fs::File::options().write(true).open(&file).unwrap();
        handle.set_modified(old).unwrap();
    }
    let out = cli(&[
        "vacuum",
        "--lake",
        l.lake().to_str().unwrap(),
        "--retain",
        "168h",
        "--delete",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!stray.exists(), "a vector no version names is deleted");
    assert!(first.iter().all(|f| current.join(f).exists()), "{out:?}");
    let mut again = crate::common::table_rows_at(&current, version as i64).await;
    again.sort();
    assert_eq!(
        again, before,
        "time travel to the version the vector belongs to"
    );
}

/// Kills a sync of the landing zone `setup` makes at each commit point, then syncs again: the
/// second sync applies the run (killed before history's commit) or finds it completed by the
/// open (`up-to-date`), current and history end as `expected` (current's shape, history's row
/// count), and a third sync has nothing to do. Returns each landing zone with its point.
async fn killed_at_each_commit_point_then_synced(
    setup: impl Fn() -> Landing,
    expected: &(Shape, usize),
) -> Vec<(&'static str, Landing)> {
    let mut done = Vec::new();
    for point in [
        "before-history-commit",
        "after-history-commit",
        "between-follower-commits",
    ] {
        let l = setup();
        let out = sync_process(&l, Some(point));
        assert!(
            !out.status.success(),
            "{point}: the process should have aborted"
        );
        let summary = crate::common::json_stdout(&sync_process(&l, None));
        let status = summary["tables"][0]["status"].as_str().unwrap().to_string();
        let want = if point == "before-history-commit" {
            "applied"
        } else {
            "up-to-date"
        };
        assert_eq!(status, want, "{point}: {summary}");
        assert_eq!(
            shape(&l.current("sales/orders").await),
            expected.0,
            "{point}"
        );
        assert_eq!(
            l.table("sales/orders", "history").await.len(),
            expected.1,
            "{point}"
        );
        // and once more: nothing left to do
        let again: serde_json::Value =
            serde_json::from_slice(&sync_process(&l, None).stdout).unwrap();
        assert_eq!(again["tables"][0]["status"], "up-to-date", "{point}");
        done.push((point, l));
    }
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_at_any_commit_point_ends_like_an_uninterrupted_one() {
    let clean = Landing::new(ORDERS);
    orders_day1(&clean);
    clean.sync_one().await;
    let expected = (
        shape(&clean.current("sales/orders").await),
        clean.table("sales/orders", "history").await.len(),
    );
    let setup = || {
        let l = Landing::new(ORDERS);
        orders_day1(&l);
        l
    };
    killed_at_each_commit_point_then_synced(setup, &expected).await;
}

/// A merge that marks rows in deletion vectors, killed at each commit point, is completed (or
/// redone) by the next sync: the tables end as an uninterrupted merge leaves them, every live
/// file's vector is there, and the vector a killed run wrote but never committed is named by
/// no version.
#[tokio::test(flavor = "multi_thread")]
async fn a_merge_with_deletion_vectors_killed_at_any_commit_point_ends_like_an_uninterrupted_one() {
    let day2 = "U,2024-03-02 10:00:00.000000,1,west,11\n\
                D,2024-03-02 10:00:01.000000,4,east,0\n\
                I,2024-03-02 10:00:02.000000,5,east,50\n";
    let clean = vectors_after_day1().await;
    clean.file("sales/orders", "20240302-1000000000.csv", day2);
    let a = clean.sync_one().await.apply.unwrap();
    assert!(a.files_marked > 0 && a.files_rewritten == 0, "{a:?}");
    let expected = (
        shape(&clean.current("sales/orders").await),
        clean.table("sales/orders", "history").await.len(),
    );
    let setup = || {
        let l = Landing::new(&orders_with_vectors());
        orders_day1(&l);
        assert!(sync_process(&l, None).status.success());
        l.file("sales/orders", "20240302-1000000000.csv", day2);
        l
    };
    for (point, l) in killed_at_each_commit_point_then_synced(setup, &expected).await {
        // every vector a live file names is there; a killed run's own is named by none
        let current = l.lake().join("sales/orders/current");
        let url = url::Url::from_directory_path(&current).unwrap();
        let table = deltalake::open_table(url).await.unwrap();
        let named: std::collections::BTreeSet<String> = table
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .filter_map(|f| {
                let dv = f.deletion_vector_descriptor()?;
                tributary::sink::delta::deletion_vectors::file_of(&dv)
            })
            .collect();
        assert!(!named.is_empty(), "{point}");
        for file in &named {
            assert!(current.join(file).exists(), "{point}: {file} is gone");
        }
        let on_disk = std::fs::read_dir(&current)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("deletion_vector_"))
            .count();
        let orphans = usize::from(point == "before-history-commit");
        assert_eq!(on_disk, named.len() + orphans, "{point}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_files_of_the_kafka_connect_s3_sink_are_read() {
    use apache_avro::types::{Record, Value};
    let tables = "\
- source: inventory/customers
  active: true
  layout: debezium
  primary_key: [id]
  columns:
  - {name: id, type: long}
  - {name: name, type: string}
";
    let l = Landing::new(tables);
    let schema = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"customers","fields":[
            {"name":"id","type":"long"},
            {"name":"name","type":["null","string"]},
            {"name":"__op","type":"string"},
            {"name":"__deleted","type":"string"},
            {"name":"__lsn","type":"long"}]}"#,
    )
    .unwrap();
    let mut writer = apache_avro::Writer::new(&schema, Vec::new()).unwrap();
    for (id, name, op, lsn) in [
        (1i64, Some("a"), "c", 10i64),
        (2, Some("b"), "c", 11),
        (1, Some("c"), "u", 12),
        (2, None, "d", 13),
    ] {
        let mut r = Record::new(writer.schema()).unwrap();
        r.put("id", id);
        r.put(
            "name",
            match name {
                Some(n) => Value::Union(1, Box::new(Value::String(n.into()))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        );
        r.put("__op", op);
        r.put("__deleted", if op == "d" { "true" } else { "false" });
        r.put("__lsn", lsn);
        writer.append_value(r).unwrap();
    }
    let bytes = writer.into_inner().unwrap();
    let path = l
        .root()
        .join("inventory/customers/customers+0+0000000000.avro");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let t = l.sync_one().await;
    assert_eq!(t.apply.unwrap().changes_read, 4);
    let current = l.current("inventory/customers").await;
    assert_eq!(current.keys().collect::<Vec<_>>(), ["1"]);
    assert_eq!(current["1"]["name"], "c");

    std::fs::write(
        l.root().join("inventory/customers/broken.avro"),
        b"not avro",
    )
    .unwrap();
    let s = l.sync().await;
    let err = s.tables[0].error.clone().unwrap_or_default();
    assert!(err.contains("broken.avro") && err.contains("Avro"), "{s:?}");
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tables_lists_new_folders_as_inactive_and_activates_them() {
    let l = Landing::new(ORDERS);
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n");
    l.file("hr/people", "20240101-0000000000.csv", "I,1\n");
    l.file("app/events", "e-1.json", "null\n");
    let root = l.root();
    let root = root.to_str().unwrap();
    let out = cli(&["tables", root]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hr/people") && text.contains("inactive") && text.contains("(new)"),
        "{text}"
    );
    let file = tributary::config::tables::TablesFile::load(&l.root().join("tables.yaml")).unwrap();
    assert!(
        file.find("sales/orders").unwrap().active,
        "existing entries are kept"
    );
    assert!(!file.find("hr/people").unwrap().active);
    assert_eq!(
        file.find("app/events").unwrap().layout,
        tributary::config::tables::Layout::Debezium
    );

    // hr/people has no columns (a DMS CSV has no header): `sync` would reject it, so it is not
    // activated, and nothing changes.
    let out = cli(&[
        "tables",
        root,
        "--activate",
        "hr/people",
        "--deactivate",
        "sales/orders",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(hr/people).columns"), "{stderr}");
    let file = tributary::config::tables::TablesFile::load(&l.root().join("tables.yaml")).unwrap();
    assert!(!file.find("hr/people").unwrap().active);
    assert!(file.find("sales/orders").unwrap().active);
    let out = cli(&["tables", root, "--deactivate", "sales/orders"]);
    assert!(out.status.success());
    let file = tributary::config::tables::TablesFile::load(&l.root().join("tables.yaml")).unwrap();
    assert!(!file.find("sales/orders").unwrap().active);
    let out = cli(&["tables", root, "--activate", "no/such"]);
    assert_eq!(out.status.code(), Some(2));

    // hr/people made active by hand, without columns: sync says which field to fill, and exits
    // 5, while sales/orders loads (into a --lake given relative to the working folder).
    let path = l.root().join("tables.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen(
        "- source: hr/people\n  active: false",
        "- source: hr/people\n  active: true",
        1,
    );
    assert_ne!(edited, text, "the entry is made active: {text}");
    std::fs::write(&path, edited).unwrap();
    assert!(cli(&["tables", root, "--activate", "sales/orders"])
        .status
        .success());
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["sync", root, "--lake", "lake"])
        .current_dir(l.dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hr.people") && text.contains("columns"),
        "{text}"
    );
    assert!(
        text.contains("sales.orders") && text.contains("applied"),
        "{text}"
    );
    assert!(l.lake().join("sales/orders/current/_delta_log").exists());
}

#[test]
fn watch_picks_up_files_as_they_land() {
    let l = Landing::new(&ORDERS.replace("  timestamp_column: ts\n", ""));
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args([
            "sync",
            l.root().to_str().unwrap(),
            "--lake",
            l.lake().to_str().unwrap(),
            "--watch",
            "0.2s",
            "--json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let current = |l: &Landing| runtime.block_on(async { l.current("sales/orders").await });
    let wait_for = |want: usize| {
        for _ in 0..150 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if l.lake().join("sales/orders/current/_delta_log").exists()
                && current(&l).len() == want
            {
                return true;
            }
        }
        false
    };
    let first = wait_for(1);
    l.file("sales/orders", "20240301-1000000000.csv", "I,2,west,20\n");
    let second = first && wait_for(2);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        first && second,
        "the watching sync did not load the files in 30 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_composite_primary_key_keeps_one_row_per_key_pair() {
    let tables = "\
- source: sales/lines
  active: true
  primary_key: [order_id, line]
  columns:
  - {name: order_id, type: long}
  - {name: line, type: int}
  - {name: qty, type: int}
";
    let l = Landing::new(tables);
    // (1,1) and (1,2) share an order id, (11,1) and (1,11) would collide if the key parts were
    // concatenated without a separator.
    l.file(
        "sales/lines",
        "20240301-0000000000.csv",
        "I,1,1,5\nI,1,2,6\nI,11,1,7\nI,1,11,8\nU,1,2,9\nD,11,1,7\n",
    );
    let t = l.sync_one().await.apply.unwrap();
    assert_eq!((t.keys_changed, t.inserted, t.ignored_deletes), (4, 3, 1));
    let mut rows: Vec<(String, String, String)> = l
        .table("sales/lines", "current")
        .await
        .into_iter()
        .map(|r| (r["order_id"].clone(), r["line"].clone(), r["qty"].clone()))
        .collect();
    rows.sort();
    let want: Vec<(String, String, String)> = [("1", "1", "5"), ("1", "11", "8"), ("1", "2", "9")]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(rows, want);
}

/// With deletion vectors, the stale change's stored row is read whole and written again (it
/// was marked with the other changed keys' rows).
#[tokio::test(flavor = "multi_thread")]
async fn a_late_change_file_never_overwrites_a_newer_change() {
    for vectors in [false, true] {
        a_late_change_file_never_overwrites_a_newer_change_in(vectors).await;
    }
}

async fn a_late_change_file_never_overwrites_a_newer_change_in(vectors: bool) {
    // No timestamp column: a change's position is its DMS file name's timestamp.
    let tables = ORDERS.replace("  timestamp_column: ts\n", "");
    let l = Landing::new(&with_vectors(&tables, vectors));
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n2,east,20\n");
    l.sync_one().await;
    l.file("sales/orders", "20240302-1000000000.csv", "U,1,east,15\n");
    l.sync_one().await;
    let history = l.table("sales/orders", "history").await.len();
    // a slow upload: written at 09:00 on March 1st, landing after the March 2nd file
    l.file(
        "sales/orders",
        "20240301-0900000000.csv",
        "U,1,east,11\nU,2,east,21\n",
    );
    let t = l.sync_one().await;
    let a = t.apply.clone().unwrap();
    assert_eq!((a.stale, a.updated), (1, 1), "{t:?}");
    assert_eq!(a.files_marked > 0, vectors, "{t:?}");
    assert_eq!(
        a.stale_files,
        [("20240301-0900000000.csv".to_string(), 1)].into(),
        "{t:?}"
    );
    assert!(t.message.contains("1 stale"), "{t:?}");
    let current = l.current("sales/orders").await;
    assert_eq!(current["1"]["amount"], "15.0", "the newer change stays");
    assert_eq!(
        current["2"]["amount"], "21.0",
        "a full-load row has no position"
    );
    let march_2 = "1709373600000000"; // 2024-03-02 10:00:00 UTC, microseconds
    assert_eq!(current["1"]["source_position"], march_2);
    assert_eq!(
        l.table("sales/orders", "history").await.len(),
        history + 1,
        "no history row for the stale change"
    );
}

/// With deletion vectors as without (stale and ignored changes write their stored rows
/// again).
#[tokio::test(flavor = "multi_thread")]
async fn a_late_change_cannot_bring_back_a_key_a_newer_delete_removed() {
    for vectors in [false, true] {
        a_late_change_cannot_bring_back_a_key_a_newer_delete_removed_in(vectors).await;
    }
}

async fn a_late_change_cannot_bring_back_a_key_a_newer_delete_removed_in(vectors: bool) {
    // Positions from the DMS commit timestamp column; soft deletes keep the delete's position.
    let tables = ORDERS.replace(
        "  timestamp_column: ts\n",
        "  timestamp_column: ts\n  delete_mode: soft\n",
    );
    let l = Landing::new(&with_vectors(&tables, vectors));
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n2,east,20\n");
    l.sync_one().await;
    l.file(
        "sales/orders",
        "20240302-1000000000.csv",
        "D,2024-03-02 10:00:00.000000,2,east,20\n",
    );
    l.sync_one().await;
    // re-sent by the source with an older commit time, under a newer file name
    l.file(
        "sales/orders",
        "20240303-1000000000.csv",
        "U,2024-03-01 08:00:00.000000,2,east,22\nU,2024-03-03 08:00:00.000000,1,east,12\n",
    );
    let t = l.sync_one().await;
    let a = t.apply.unwrap();
    assert_eq!((a.stale, a.inserted, a.updated), (1, 0, 1));
    assert_eq!(a.files_marked > 0, vectors, "{a:?}");
    let current = l.current("sales/orders").await;
    assert_eq!(
        current["2"]["operation"], "D",
        "the deleted key stays deleted"
    );
    assert_eq!(current["2"]["amount"], "20.0");
    assert_eq!(current["1"]["amount"], "12.0");
    // a later insert of the key is applied
    l.file(
        "sales/orders",
        "20240304-1000000000.csv",
        "I,2024-03-04 08:00:00.000000,2,west,23\n",
    );
    let a = l.sync_one().await.apply.unwrap();
    assert_eq!((a.stale, a.inserted), (0, 1));
    assert_eq!(l.current("sales/orders").await["2"]["region"], "west");
    // Deleted again; then a run whose last change of the key is a newer delete of the
    // soft-deleted row: the row takes that delete's position, so a change between the two
    // deletes, landing late, is stale.
    l.file(
        "sales/orders",
        "20240305-1000000000.csv",
        "D,2024-03-05 08:00:00.000000,2,west,23\n",
    );
    l.sync_one().await;
    l.file(
        "sales/orders",
        "20240306-1000000000.csv",
        "I,2024-03-06 08:00:00.000000,2,east,24\nD,2024-03-07 08:00:00.000000,2,east,24\n",
    );
    let a = l.sync_one().await.apply.unwrap();
    assert_eq!(a.ignored_deletes, 1);
    l.file(
        "sales/orders",
        "20240308-1000000000.csv",
        "U,2024-03-06 12:00:00.000000,2,east,25\n",
    );
    let a = l.sync_one().await.apply.unwrap();
    assert_eq!((a.stale, a.inserted), (1, 0));
    assert_eq!(l.current("sales/orders").await["2"]["operation"], "D");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_changes_of_one_run_are_ordered_by_position_before_file_name() {
    let l = Landing::new(ORDERS);
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n");
    l.sync_one().await;
    l.file(
        "sales/orders",
        "20240302-1000000000.csv",
        "U,2024-03-02 10:00:00.000000,1,east,12\n",
    );
    l.sync_one().await;
    // both land before the next sync: the newer change (March 5th) in the earlier-named file,
    // a re-sent older one (March 1st) in the later-named file
    l.file(
        "sales/orders",
        "20240303-1000000000.csv",
        "U,2024-03-05 10:00:00.000000,1,east,15\n",
    );
    l.file(
        "sales/orders",
        "20240304-1000000000.csv",
        "U,2024-03-01 10:00:00.000000,1,east,11\n",
    );
    let t = l.sync_one().await;
    let a = t.apply.clone().unwrap();
    assert_eq!((a.stale, a.updated), (0, 1), "{t:?}");
    assert_eq!(l.current("sales/orders").await["1"]["amount"], "15.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn hard_deletes_keep_tombstones_so_a_late_change_cannot_bring_a_key_back() {
    // Hard deletes, positions from the DMS file names.
    let l = Landing::new(&ORDERS.replace("  timestamp_column: ts\n", ""));
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n2,east,20\n");
    l.sync_one().await;
    // key 7 is deleted before its (late) insert has arrived: an ignored delete
    l.file(
        "sales/orders",
        "20240302-1000000000.csv",
        "D,2,east,20\nD,7,east,0\n",
    );
    let a = l.sync_one().await.apply.unwrap();
    assert_eq!(
        (a.deleted, a.ignored_deletes, a.tombstones_written),
        (1, 1, 2)
    );
    let tombstones = l.table("sales/orders", "tombstones").await;
    assert_eq!(tombstones.len(), 2, "{tombstones:?}");
    l.file(
        "sales/orders",
        "20240301-0900000000.csv",
        "U,2,east,21\nI,7,east,70\nU,1,east,11\n",
    );
    let t = l.sync_one().await;
    let a = t.apply.clone().unwrap();
    assert_eq!((a.stale, a.inserted, a.updated), (2, 0, 1), "{t:?}");
    let current = l.current("sales/orders").await;
    assert_eq!(
        current.keys().collect::<Vec<_>>(),
        ["1"],
        "deleted keys stay deleted"
    );
    assert_eq!(current["1"]["amount"], "11.0");
    // a change newer than the delete brings the key back
    l.file("sales/orders", "20240303-1000000000.csv", "I,2,west,22\n");
    let a = l.sync_one().await.apply.unwrap();
    assert_eq!((a.stale, a.inserted), (0, 1));
    assert_eq!(l.current("sales/orders").await["2"]["region"], "west");
}

/// Data files of a table's latest version, from its log (adds less removes).
fn active_files(table: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut files = std::collections::BTreeSet::new();
    for commit in crate::common::log_commits(table) {
        for action in commit {
            if let Some(path) = action["add"]["path"].as_str() {
                files.insert(path.to_string());
            }
            if let Some(path) = action["remove"]["path"].as_str() {
                files.remove(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tombstones_table_is_compacted_and_keeps_what_its_retention_says() {
    let tables = ORDERS.replace(
        "  timestamp_column: ts\n",
        "  tombstone_retention_days: 3\n",
    );
    let l = Landing::new(&tables);
    // one delete per sync of a key that was never loaded: 16 runs, 16 tombstones
    for i in 0..16 {
        l.file(
            "sales/orders",
            &format!("20240301-10{i:02}000000.csv"),
            &format!("D,{},east,0\n", 100 + i),
        );
        let a = l.sync_one().await.apply.unwrap();
        assert_eq!(a.tombstones_compacted, i == 15, "run {i}: {a:?}");
    }
    let folder = l.lake().join("sales/orders/tombstones");
    assert_eq!(active_files(&folder).len(), 1);
    assert_eq!(l.table("sales/orders", "tombstones").await.len(), 16);
    // A compaction drops tombstones older than the retention: deletes dated by their run
    // (2024-03-09 here), compacted by a run dated 2024-03-13 (4 days later).
    let mut options = l.options();
    options.run_date = chrono::NaiveDate::from_ymd_opt(2024, 3, 13).unwrap();
    for i in 16..31 {
        l.file(
            "sales/orders",
            &format!("20240301-11{i:02}000000.csv"),
            &format!("D,{},east,0\n", 100 + i),
        );
        let s = sync(&options).await.unwrap();
        let a = s.tables[0].apply.clone().unwrap();
        assert_eq!(a.tombstones_compacted, i == 30, "run {i}: {a:?}");
    }
    // the 15 tombstones of the later runs stay, the first 16 are past the retention
    assert_eq!(active_files(&folder).len(), 1);
    assert_eq!(l.table("sales/orders", "tombstones").await.len(), 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_partition_value_is_a_bad_row_and_null_reads_as_null_everywhere() {
    let tables = ORDERS.replace("  timestamp_column: ts\n", "");
    let l = Landing::new(&tables);
    l.file("sales/orders", "LOAD00000001.csv", "1,east,10\n2,,20\n");
    let s = l.sync().await;
    let t = &s.tables[0];
    assert_eq!(t.status, "failed", "{t:?}");
    let err = t.error.clone().unwrap();
    assert!(
        err.contains("LOAD00000001.csv")
            && err.contains("line 2")
            && err.contains("`region`")
            && err.contains("partition"),
        "{err}"
    );
    // With null_value "" the empty field is NULL: stored as a NULL partition value, which
    // every reader reads as NULL.
    let tables = tables.replace("  active: true\n", "  active: true\n  null_value: \"\"\n");
    std::fs::write(l.root().join("tables.yaml"), format!("tables:\n{tables}")).unwrap();
    l.sync_one().await;
    let current = l.current("sales/orders").await;
    assert_eq!(current["2"]["region"], "<null>");
    let folder = l.lake().join("sales/orders/current");
    let values: Vec<serde_json::Value> = crate::common::log_commits(&folder)
        .into_iter()
        .flatten()
        .filter_map(|a| a["add"]["partitionValues"].get("region").cloned())
        .collect();
    assert!(values.contains(&serde_json::Value::Null), "{values:?}");
    assert!(!values.contains(&serde_json::json!("")), "{values:?}");
    // Independent readers: the Python deltalake package and DuckDB over its dataset.
    if !crate::common::python_readers(
        "sync::an_empty_partition_value_is_a_bad_row_and_null_reads_as_null_everywhere",
    ) {
        return;
    }
    let script = r#"
import os, sys, json, deltalake, duckdb
t = deltalake.DeltaTable(sys.argv[1])
rows = t.to_pyarrow_table().to_pylist()
ds = t.to_pyarrow_dataset()
print(json.dumps({
  "deltalake": sorted([r["id"], r["region"]] for r in rows),
  "duckdb": duckdb.sql("select id, region from ds order by id").fetchall(),
}), flush=True)
# leave without the interpreter's teardown: deltalake's runtime threads could abort it
# ("terminate called without an active exception"), as in object_store.rs
os._exit(0)
"#;
    let out = Command::new("python3")
        .args(["-c", script, folder.to_str().unwrap()])
        .output()
        .unwrap();
    let seen = crate::common::json_stdout(&out);
    let expected = serde_json::json!([[1, "east"], [2, null]]);
    assert_eq!(seen["deltalake"], expected);
    assert_eq!(seen["duckdb"], expected);
}
