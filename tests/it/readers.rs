//! The tables are plain Delta: an independent reader (the Python `deltalake` package, DuckDB
//! over its Arrow dataset) sees the same rows. Skipped with a message when Python lacks those
//! packages, unless TRIBUTARY_REQUIRE_READERS=1 (set by .ci/run, which installs them).

use std::process::Command;

use crate::common::Fixture;

const SCRIPT: &str = r#"
import os, sys, json, deltalake, duckdb
cur = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_dataset()
hist_table = deltalake.DeltaTable(sys.argv[2])
hist = hist_table.to_pyarrow_dataset()
out = {
  "current": duckdb.sql("select operation, count(*) from cur group by 1 order by 1").fetchall(),
  "history": duckdb.sql("select cast(eff_start_date as varchar), operation, count(*) from hist group by 1, 2 order by 1, 2").fetchall(),
  "keyhash_bytes": duckdb.sql("select distinct octet_length(keyhash) from cur").fetchall(),
  "partitions": hist_table.metadata().partition_columns,
}
print(json.dumps(out), flush=True)
# leave without the interpreter's teardown: deltalake's runtime threads could abort it
# ("terminate called without an active exception"), as in object_store.rs
os._exit(0)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_deltalake_and_duckdb_read_the_tables() {
    if !crate::common::python_readers("readers::python_deltalake_and_duckdb_read_the_tables") {
        return;
    }
    let fx = Fixture::every_operation().await;
    let out = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            fx.table_path("current").to_str().unwrap(),
            fx.table_path("history").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let seen = crate::common::json_stdout(&out);
    assert_eq!(
        seen["current"],
        serde_json::json!([["I", 1], ["N", 1], ["U", 1]])
    );
    assert_eq!(
        seen["history"],
        serde_json::json!([
            ["2024-01-01", "I", 3],
            ["2024-01-02", "D", 1],
            ["2024-01-02", "I", 1],
            ["2024-01-02", "U", 1]
        ])
    );
    assert_eq!(seen["keyhash_bytes"], serde_json::json!([[16]]));
    assert_eq!(seen["partitions"], serde_json::json!(["eff_start_date"]));
}

const FEED_SCRIPT: &str = r#"
import os, sys, json, deltalake
feed = deltalake.DeltaTable(sys.argv[1]).load_cdf(starting_version=1).read_all()
rows = sorted(zip(feed.column("_commit_version").to_pylist(), feed.column("id").to_pylist(),
                  feed.column("operation").to_pylist(), feed.column("_change_type").to_pylist()))
print(json.dumps(rows), flush=True)
# leave without the interpreter's teardown: deltalake's runtime threads could abort it
# ("terminate called without an active exception"), as in object_store.rs
os._exit(0)
"#;

/// The change data feed of a table with `change_data_feed: true`, read by the Python
/// `deltalake` package's `load_cdf` (delta-rs's reader, as other engines' `table_changes`).
#[tokio::test(flavor = "multi_thread")]
async fn python_deltalake_reads_the_change_data_feed() {
    if !crate::common::python_readers("readers::python_deltalake_reads_the_change_data_feed") {
        return;
    }
    let fx = Fixture::new(crate::common::SIMPLE_COLUMNS, "change_data_feed: true");
    let days = [
        ("2024-01-01", "a,1\nb,2\nc,3\n"),
        ("2024-01-02", "a,1\nb,5\nd,4\n"),
    ];
    for (date, rows) in days {
        let input = fx.input(date, "a.csv", rows.as_bytes());
        fx.run(&input, date).await.unwrap();
    }
    let out = Command::new("python3")
        .args([
            "-c",
            FEED_SCRIPT,
            fx.table_path("current").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let seen = crate::common::json_stdout(&out);
    assert_eq!(
        seen,
        serde_json::json!([
            [1, "a", "I", "insert"],
            [1, "b", "I", "insert"],
            [1, "c", "I", "insert"],
            [2, "a", "I", "update_preimage"],
            [2, "a", "N", "update_postimage"],
            [2, "b", "I", "update_preimage"],
            [2, "b", "U", "update_postimage"],
            [2, "c", "I", "delete"],
            [2, "d", "I", "insert"]
        ])
    );
}
