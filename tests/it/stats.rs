//! Every data file's statistics in the Delta log (min, max, null count: what readers skip files
//! by) equal the values computed from the file itself, in both tables, shared files included.

use std::path::Path;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Date32Type, Float64Type, Int32Type, Int64Type};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use tributary::generate::{config_yaml, generate, GenerateSpec};

/// The (min, max) of a column as JSON values the way Delta writes them, and its null count.
fn column_stats(batches: &[RecordBatch], name: &str) -> Option<(Value, Value, u64)> {
    let mut values: Vec<Value> = Vec::new();
    let mut nulls = 0u64;
    for batch in batches {
        let column = batch.column_by_name(name)?;
        nulls += column.null_count() as u64;
        for i in (0..column.len()).filter(|&i| column.is_valid(i)) {
            values.push(match column.data_type() {
                DataType::Float64 => Value::from(column.as_primitive::<Float64Type>().value(i)),
                DataType::Int64 => Value::from(column.as_primitive::<Int64Type>().value(i)),
                DataType::Int32 => Value::from(column.as_primitive::<Int32Type>().value(i)),
                DataType::Utf8 => Value::from(column.as_string::<i32>().value(i)),
                DataType::Date32 => {
                    let days = column.as_primitive::<Date32Type>().value(i);
                    let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
                        + chrono::Duration::days(days.into());
                    Value::from(date.format("%Y-%m-%d").to_string())
                }
                _ => return None,
            });
        }
    }
    let cmp = |a: &&Value, b: &&Value| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if !a.is_string() => x.total_cmp(&y),
        _ => a.as_str().cmp(&b.as_str()),
    };
    let min = values.iter().min_by(cmp)?.clone();
    let max = values.iter().max_by(cmp)?.clone();
    Some((min, max, nulls))
}

/// Checks every `add` of a table's log against its file; returns the number of values checked.
fn check_table(table: &Path) -> usize {
    let mut checked = 0;
    for commit in crate::common::log_commits(table) {
        for action in commit {
            let Some(add) = action.get("add") else {
                continue;
            };
            let path = percent_encoding::percent_decode_str(add["path"].as_str().unwrap())
                .decode_utf8_lossy()
                .into_owned();
            let stats: Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
            let file = std::fs::File::open(table.join(&path)).unwrap();
            let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(stats["numRecords"].as_u64(), Some(rows as u64), "{path}");
            for (name, logged_min) in stats["minValues"].as_object().unwrap() {
                let Some((min, max, nulls)) = column_stats(&batches, name) else {
                    continue;
                };
                assert_eq!(logged_min, &min, "{path} {name} min");
                assert_eq!(&stats["maxValues"][name], &max, "{path} {name} max");
                assert_eq!(
                    stats["nullCount"][name].as_u64(),
                    Some(nulls),
                    "{path} {name}"
                );
                checked += 1;
            }
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread")]
async fn log_statistics_equal_the_data_files_values() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GenerateSpec {
        init_rows: 20_000,
        incr_rows: 20_000,
        keys: 1,
        nonkeys: 4,
        pct_del: 0.1,
        pct_upd: 0.5,
        pct_unchanged: 0.4,
        initial_output: dir.path().join("day1"),
        incremental_output: dir.path().join("day2"),
        seed: Some(3),
    };
    generate(&spec).unwrap();
    let config_path = dir.path().join("config.yaml");
    let text = config_yaml("stats", 1, 4).replace("file:///tmp/", "lake/");
    std::fs::write(&config_path, text).unwrap();
    let config = tributary::config::TableConfig::load(&config_path).unwrap();
    for (input, date) in [
        (&spec.initial_output, "2019-06-18"),
        (&spec.incremental_output, "2019-06-19"),
    ] {
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        tributary::snapshot::run(&config, input, date, Default::default())
            .await
            .unwrap();
    }
    let lake = dir.path().join("lake");
    for table in ["stats_current", "stats_history"] {
        let checked = check_table(&lake.join(table));
        // 20,000 random doubles per file: min and max of 4 columns with 16-17 digits each.
        assert!(checked >= 4, "{table}: {checked} columns checked");
    }
}

/// The `commitInfo` of a table's last commit.
fn last_commit_info(table: &Path) -> Value {
    let commits = crate::common::log_commits(table);
    commits
        .last()
        .unwrap()
        .iter()
        .find_map(|a| a.get("commitInfo").cloned())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_name_their_operation_and_engine() {
    let engine = format!("tributary/{}", env!("CARGO_PKG_VERSION"));
    // A snapshot run replaces current (WRITE overwrite) and appends to history.
    let fx = crate::common::Fixture::every_operation().await;
    let current = last_commit_info(&fx.table_path("current"));
    let history = last_commit_info(&fx.table_path("history"));
    assert_eq!(current["operation"], "WRITE");
    assert_eq!(current["operationParameters"]["mode"], "Overwrite");
    assert_eq!(history["operation"], "WRITE");
    assert_eq!(history["operationParameters"]["mode"], "Append");
    assert_eq!(current["engineInfo"], engine.as_str());
    assert_eq!(history["engineInfo"], engine.as_str());
    // A change log that rewrites one of current's two files merges (MERGE).
    let dir = tempfile::tempdir().unwrap();
    let (landing, lake) = (dir.path().join("landing"), dir.path().join("lake"));
    let folder = landing.join("s/t");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        landing.join("tables.yaml"),
        "tables:\n- source: s/t\n  active: true\n  primary_key: [id]\n  partition_by: [p]\n  \
         columns:\n  - {name: id, type: long}\n  - {name: p, type: string}\n",
    )
    .unwrap();
    std::fs::write(folder.join("LOAD00000001.csv"), "1,a\n2,b\n").unwrap();
    let sync = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg("sync")
            .arg(&landing)
            .arg("--lake")
            .arg(&lake)
            .args(["--date", "2024-01-01"])
            .output()
            .unwrap()
    };
    assert!(sync().status.success());
    std::fs::write(folder.join("20240102-000000000.csv"), "U,1,a\n").unwrap();
    assert!(sync().status.success());
    let current = last_commit_info(&lake.join("s/t/current"));
    assert_eq!(current["operation"], "MERGE", "{current}");
    assert_eq!(current["engineInfo"], engine.as_str());
    let applied = last_commit_info(&lake.join("s/t/applied"));
    assert_eq!(applied["operation"], "WRITE");
    assert_eq!(applied["operationParameters"]["mode"], "Append");
}
