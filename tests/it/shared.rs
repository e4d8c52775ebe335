//! A run's I and U rows are written once: data files of the current table that the history
//! table adds as well, under its partition folder (see `lake::shared`).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::{counts, data_files, op_counts, Fixture, SIMPLE_COLUMNS};

/// File name -> inode of a table's data files.
fn inodes(table: &Path) -> BTreeMap<String, u64> {
    data_files(table)
        .into_iter()
        .map(|f| {
            let name = Path::new(&f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::metadata(&f).unwrap().ino())
        })
        .collect()
}

/// Data files of the history partition `day`.
fn history_files(fx: &Fixture, day: &str) -> BTreeMap<String, u64> {
    inodes(
        &fx.table_path("history")
            .join(format!("eff_start_date={day}")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_rows_are_one_file_named_in_both_tables() {
    // Day 2: a kept (N), b updated (U), c deleted (D), d inserted (I).
    let fx = Fixture::every_operation().await;
    // Day 1 is all I: its one current file (no longer in the table, still in the folder) is
    // history's too.
    let day1 = history_files(&fx, "2024-01-01");
    let current = inodes(&fx.table_path("current"));
    assert_eq!(day1.len(), 1, "{day1:?}");
    assert!(
        day1.iter()
            .all(|(name, ino)| current.get(name) == Some(ino)),
        "{day1:?} / {current:?}"
    );
    let day2 = history_files(&fx, "2024-01-02");
    let shared: Vec<_> = day2
        .iter()
        .filter(|(name, ino)| current.get(*name) == Some(*ino))
        .collect();
    assert_eq!(shared.len(), 1, "one shared file: {day2:?} / {current:?}");
    // The history partition's other file is the D row, written for history alone.
    assert_eq!(day2.len(), 2, "{day2:?}");

    let history = fx.rows("history").await;
    let day2_rows: Vec<_> = history
        .iter()
        .filter(|r| r["eff_start_date"] == "2024-01-02")
        .map(|r| (r["id"].as_str(), r["v"].as_str(), r["operation"].as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        day2_rows,
        [("b", "5.0", "U"), ("c", "3.0", "D"), ("d", "4.0", "I")]
    );
    assert_eq!(op_counts(&history), counts(&[("D", 1), ("I", 4), ("U", 1)]));
    let current_rows = fx.rows("current").await;
    assert_eq!(
        op_counts(&current_rows),
        counts(&[("I", 1), ("N", 1), ("U", 1)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_keeps_shared_rows_after_current_is_vacuumed() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let days = [
        ("2024-01-01", &b"a,1\nb,2\n"[..]),
        ("2024-01-02", &b"a,1\nb,3\nc,4\n"[..]),
        ("2024-01-03", &b"a,2\nb,3\nc,4\n"[..]),
    ];
    for (day, rows) in days {
        fx.run(&fx.input(day, "a.csv", rows), day).await.unwrap();
    }
    let before = fx.rows("history").await;
    let url = url::Url::from_directory_path(fx.table_path("current")).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(chrono::Duration::zero())
        .with_enforce_retention_duration(false)
        .await
        .unwrap();
    // Days 1 and 2 wrote current files that day 3 replaced: their current names are gone.
    assert!(metrics.files_deleted.len() >= 2, "{metrics:?}");
    let after = fx.rows("history").await;
    // Day 1: I a, I b; day 2: U b, I c; day 3: U a.
    assert_eq!(after.len(), 5, "{after:?}");
    let sorted = |mut rows: Vec<BTreeMap<String, String>>| {
        rows.sort();
        rows
    };
    assert_eq!(sorted(after), sorted(before));
    assert_eq!(fx.rows("current").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_current_table_shares_no_file() {
    let fx = Fixture::new(
        "- {name: id, type: string, key: true}\n- {name: region, type: string}\n- {name: v, type: float}\n",
        "partition_by: [region]",
    );
    fx.run(&fx.input("d1", "a.csv", b"a,eu,1\nb,us,2\n"), "2024-01-01")
        .await
        .unwrap();
    fx.run(
        &fx.input("d2", "a.csv", b"a,eu,1\nb,us,5\nc,eu,4\n"),
        "2024-01-02",
    )
    .await
    .unwrap();
    let current: Vec<u64> = inodes(&fx.table_path("current")).into_values().collect();
    for day in ["2024-01-01", "2024-01-02"] {
        let history = history_files(&fx, day);
        assert!(!history.is_empty(), "{day}");
        assert!(
            history.values().all(|ino| !current.contains(ino)),
            "{day}: {history:?}"
        );
    }
    let history = fx.rows("history").await;
    assert_eq!(op_counts(&history), counts(&[("I", 3), ("U", 1)]));
    assert!(history
        .iter()
        .all(|r| !r["region"].is_empty() && r["region"] != "<null>"));
}

/// Values of the `operation` column in a Parquet data file, with their row counts.
fn operations_in(file: &str) -> BTreeMap<String, usize> {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut found = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ops = deltalake::arrow::compute::cast(
            batch.column_by_name("operation").unwrap(),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        for i in 0..ops.len() {
            *found
                .entry(ops.as_string::<i32>().value(i).to_string())
                .or_default() += 1;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn one_tables_rows_are_split_over_its_writer_tasks_without_loss() {
    // 300,000 rows arrive in several 64Ki-row batches; each table has a writer task per core,
    // each taking the next batch.
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let rows = 300_000;
    let day = |changed: fn(usize) -> bool| -> Vec<u8> {
        (0..rows)
            .map(|i| format!("k{i},{}\n", if changed(i) { i + 1 } else { i }))
            .collect::<String>()
            .into_bytes()
    };
    fx.run(&fx.input("d1", "a.csv", &day(|_| false)), "2024-01-01")
        .await
        .unwrap();
    let summary = fx
        .run(
            &fx.input("d2", "a.csv", &day(|i| i % 10 == 0)),
            "2024-01-02",
        )
        .await
        .unwrap();
    let current = fx.rows("current").await;
    assert_eq!(current.len(), rows);
    let ids: std::collections::BTreeSet<_> = current.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids.len(), rows);
    assert_eq!(
        op_counts(&current),
        counts(&[("N", rows - rows / 10), ("U", rows / 10)])
    );
    // The N rows (about four batches) went to the current table's writer tasks: on two or
    // more cores, to more than one file.
    let files: Vec<String> = data_files(&fx.table_path("current"))
        .into_iter()
        .filter(|f| operations_in(f).contains_key("N"))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(files.len() >= cores.min(2), "{files:?}");
    assert_eq!(summary.current.rows_written, rows as u64);
}
