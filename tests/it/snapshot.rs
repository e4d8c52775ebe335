//! Snapshot CDC behaviour over real CSV/Parquet files and Delta tables.

use std::sync::Arc;

use deltalake::arrow::array::{Float64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use tributary::generate::{generate, GenerateSpec};
use tributary::snapshot::RunOptions;
use tributary::Error;

use crate::common::{counts, data_files, find, op_counts, Fixture, SIMPLE_COLUMNS};

/// The seed article's example: 10,000 records, 5 keys, 10 non-keys, 0.2/0.4/0.4, run with the
/// seed repository's config.yaml (only the table paths moved into a temp folder).
#[tokio::test(flavor = "multi_thread")]
async fn seed_example_day_two_counts() {
    let seed_config = include_str!("../fixtures/seed_config.yaml");
    let dir = tempfile::tempdir().unwrap();
    let root = url::Url::from_directory_path(dir.path()).unwrap();
    let text = seed_config.replace("file:///tmp/", root.as_str());
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, text).unwrap();
    let spec = GenerateSpec::seed_example(dir.path().join("day1"), dir.path().join("day2"), 1);
    generate(&spec).unwrap();
    let config = tributary::config::TableConfig::load(&config_path).unwrap();
    let date = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let day1 = tributary::snapshot::run(
        &config,
        &spec.initial_output,
        date("2019-06-18"),
        RunOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(day1.counts.inserted, 10_000);
    let day2 = tributary::snapshot::run(
        &config,
        &spec.incremental_output,
        date("2019-06-19"),
        RunOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            day2.counts.inserted,
            day2.counts.updated,
            day2.counts.deleted,
            day2.counts.unchanged
        ),
        (2000, 4000, 2000, 4000)
    );

    let history = crate::common::table_rows(&dir.path().join("sample_data_history")).await;
    let day2_history: Vec<_> = history
        .iter()
        .filter(|r| r["eff_start_date"] == "2019-06-19")
        .cloned()
        .collect();
    assert_eq!(
        op_counts(&day2_history),
        counts(&[("D", 2000), ("I", 2000), ("U", 4000)])
    );
    assert_eq!(history.len(), 18_000);
    let current = crate::common::table_rows(&dir.path().join("sample_data_current")).await;
    assert_eq!(
        op_counts(&current),
        counts(&[("I", 2000), ("N", 4000), ("U", 4000)])
    );
    // N rows keep their original effective date; I and U rows take the run date.
    assert!(current
        .iter()
        .filter(|r| r["operation"] == "N")
        .all(|r| r["eff_start_date"] == "2019-06-18"));
    assert!(current
        .iter()
        .filter(|r| r["operation"] != "N")
        .all(|r| r["eff_start_date"] == "2019-06-19"));
    // D rows in history carry the deleted row's last payload.
    let deleted = history.iter().find(|r| r["operation"] == "D").unwrap();
    let original = history
        .iter()
        .find(|r| r["operation"] == "I" && r["keycol1"] == deleted["keycol1"])
        .unwrap();
    assert_eq!(deleted["nonkeycol3"], original["nonkeycol3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_extract_keeps_missing_rows_as_x() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "extract_type: delta");
    fx.run(&fx.input("d1", "a.csv", b"a,1\nb,2\nc,3\n"), "2024-01-01")
        .await
        .unwrap();
    let s = fx
        .run(&fx.input("d2", "a.csv", b"a,10\nd,4\n"), "2024-01-02")
        .await
        .unwrap();
    assert_eq!(
        (
            s.counts.updated,
            s.counts.inserted,
            s.counts.not_supplied,
            s.counts.deleted
        ),
        (1, 1, 2, 0)
    );
    let current = fx.rows("current").await;
    assert_eq!(op_counts(&current), counts(&[("I", 1), ("U", 1), ("X", 2)]));
    let b = find(&current, "id", "b")[0];
    assert_eq!(
        (
            b["operation"].as_str(),
            b["v"].as_str(),
            b["eff_start_date"].as_str()
        ),
        ("X", "2.0", "2024-01-01")
    );
    let history = fx.rows("history").await;
    assert_eq!(history.len(), 5, "X rows are not history");
    // An X row that comes back unchanged is N, with its original date.
    let s = fx
        .run(&fx.input("d3", "a.csv", b"b,2\n"), "2024-01-03")
        .await
        .unwrap();
    assert_eq!(s.counts.unchanged, 1);
    let b = find(&fx.rows("current").await, "id", "b")[0].clone();
    assert_eq!(
        (b["operation"].as_str(), b["eff_start_date"].as_str()),
        ("N", "2024-01-01")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn null_and_empty_string_are_different_values() {
    let columns = "- {name: id, type: string, key: true}\n- {name: s, type: string}\n- {name: n, type: double}\n";
    let fx = Fixture::new(columns, "null_value: \"NULL\"");
    fx.run(
        &fx.input("d1", "a.csv", b"1,NULL,1\n2,,NULL\n"),
        "2024-01-01",
    )
    .await
    .unwrap();
    let rows = fx.rows("current").await;
    assert_eq!(find(&rows, "id", "1")[0]["s"], "<null>");
    assert_eq!(find(&rows, "id", "2")[0]["s"], "");
    assert_eq!(find(&rows, "id", "2")[0]["n"], "<null>");
    let s = fx
        .run(
            &fx.input("d2", "a.csv", b"1,,1\n2,NULL,NULL\n"),
            "2024-01-02",
        )
        .await
        .unwrap();
    assert_eq!(s.counts.updated, 2, "NULL <-> empty string is a change");
    let s = fx
        .run(
            &fx.input("d3", "a.csv", b"1,,1\n2,NULL,NULL\n"),
            "2024-01-03",
        )
        .await
        .unwrap();
    assert_eq!(s.counts.unchanged, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_null_value_empty_is_null_except_for_strings() {
    let columns = "- {name: id, type: string, key: true}\n- {name: s, type: string}\n- {name: n, type: int}\n";
    let fx = Fixture::new(columns, "");
    fx.run(&fx.input("d1", "a.csv", b"1,,\n"), "2024-01-01")
        .await
        .unwrap();
    let row = fx.rows("current").await[0].clone();
    assert_eq!((row["s"].as_str(), row["n"].as_str()), ("", "<null>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn quoted_fields_hold_delimiters_and_quotes() {
    let columns = "- {name: id, type: string, key: true}\n- {name: s, type: string}\n- {name: v, type: float}\n";
    let text = b"\"a,b\",\"say \"\"hi\"\"\",1.5\nc,\"multi\nline\",2\n";
    // A line break inside quotes is refused unless the config says fields hold them.
    let strict = Fixture::new(columns, "");
    let err = strict
        .run(&strict.input("d1", "a.csv", text), "2024-01-01")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("multiline"), "{err}");
    let fx = Fixture::new(columns, "multiline: true");
    fx.run(&fx.input("d1", "a.csv", text), "2024-01-01")
        .await
        .unwrap();
    let rows = fx.rows("current").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(find(&rows, "id", "a,b")[0]["s"], "say \"hi\"");
    assert_eq!(find(&rows, "id", "c")[0]["s"], "multi\nline");
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_columns_are_stored_but_never_a_change() {
    let columns = "- {name: id, type: string, key: true}\n- {name: v, type: float}\n- {name: loaded_at, type: string, ignore: true}\n";
    let fx = Fixture::new(columns, "");
    fx.run(&fx.input("d1", "a.csv", b"a,1,t1\nb,2,t1\n"), "2024-01-01")
        .await
        .unwrap();
    let s = fx
        .run(&fx.input("d2", "a.csv", b"a,1,t2\nb,3,t2\n"), "2024-01-02")
        .await
        .unwrap();
    assert_eq!((s.counts.unchanged, s.counts.updated), (1, 1));
    let a = find(&fx.rows("current").await, "id", "a")[0].clone();
    assert_eq!(
        (a["operation"].as_str(), a["loaded_at"].as_str()),
        ("N", "t2")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn composite_keys_whose_concatenations_collide_stay_distinct() {
    let columns = "- {name: k1, type: string, key: true}\n- {name: k2, type: string, key: true}\n- {name: v, type: string}\n";
    let fx = Fixture::new(columns, "");
    let s = fx
        .run(
            &fx.input("d1", "a.csv", b"ab,c,x\na,bc,x\n,abc,x\n"),
            "2024-01-01",
        )
        .await
        .unwrap();
    assert_eq!(s.counts.inserted, 3);
    // Non-key values that collide under plain concatenation are a change too.
    let columns2 = "- {name: k, type: string, key: true}\n- {name: a, type: string}\n- {name: b, type: string}\n";
    let fx2 = Fixture::new(columns2, "");
    fx2.run(&fx2.input("d1", "a.csv", b"1,ab,c\n"), "2024-01-01")
        .await
        .unwrap();
    let s = fx2
        .run(&fx2.input("d2", "a.csv", b"1,a,bc\n"), "2024-01-02")
        .await
        .unwrap();
    assert_eq!(s.counts.updated, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rerunning_the_same_day_is_a_no_op() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let input = fx.input("d1", "a.csv", b"a,1\nb,2\n");
    fx.run(&input, "2024-01-01").await.unwrap();
    let (cv, hv) = (fx.version("current").await, fx.version("history").await);
    let again = fx.run(&input, "2024-01-01").await.unwrap();
    assert_eq!(again.status, "no-op");
    assert!(again.message.contains("already applied"));
    assert_eq!(
        (fx.version("current").await, fx.version("history").await),
        (cv, hv)
    );
    assert_eq!(fx.rows("history").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn older_dates_and_changed_input_are_refused_unless_asked() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    fx.run(&fx.input("d1", "a.csv", b"a,1\nb,2\n"), "2024-01-02")
        .await
        .unwrap();
    let older = fx.input("d0", "a.csv", b"a,1\nb,3\n");
    let err = fx.run(&older, "2024-01-01").await.unwrap_err();
    assert!(
        matches!(err, Error::Refused(_)) && err.to_string().contains("older"),
        "{err}"
    );
    let changed = fx.input("d1b", "a.csv", b"a,1\nb,5\n");
    let err = fx.run(&changed, "2024-01-02").await.unwrap_err();
    assert!(err.to_string().contains("--replace"), "{err}");
    assert_eq!(fx.version("current").await, Some(1));
    let forced = fx
        .run_with(
            &older,
            "2024-01-01",
            RunOptions {
                force: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(forced.counts.updated, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_redoes_the_latest_day_from_its_base() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    fx.run(&fx.input("d1", "a.csv", b"a,1\nb,2\nc,3\n"), "2024-01-01")
        .await
        .unwrap();
    fx.run(&fx.input("d2", "a.csv", b"a,9\nb,2\n"), "2024-01-02")
        .await
        .unwrap();
    let redo = fx.input("d2b", "a.csv", b"a,1\nb,7\nc,3\nd,4\n");
    let s = fx
        .run_with(
            &redo,
            "2024-01-02",
            RunOptions {
                replace: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            s.counts.inserted,
            s.counts.updated,
            s.counts.deleted,
            s.counts.unchanged
        ),
        (1, 1, 0, 2)
    );
    let history = fx.rows("history").await;
    let day2: Vec<_> = history
        .iter()
        .filter(|r| r["eff_start_date"] == "2024-01-02")
        .cloned()
        .collect();
    assert_eq!(
        op_counts(&day2),
        counts(&[("I", 1), ("U", 1)]),
        "the replaced run's history is gone"
    );
    let current = fx.rows("current").await;
    assert_eq!(op_counts(&current), counts(&[("I", 1), ("N", 2), ("U", 1)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn mass_delete_guard_refuses_truncated_full_extracts() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let day1: String = (0..10).map(|i| format!("k{i},{i}\n")).collect();
    fx.run(&fx.input("d1", "a.csv", day1.as_bytes()), "2024-01-01")
        .await
        .unwrap();
    let truncated = fx.input("d2", "a.csv", b"k0,0\nk1,1\n");
    let err = fx.run(&truncated, "2024-01-02").await.unwrap_err();
    assert!(err.to_string().contains("max_delete_fraction"), "{err}");
    assert_eq!(fx.version("history").await, Some(1), "history untouched");
    let s = fx
        .run_with(
            &truncated,
            "2024-01-02",
            RunOptions {
                force: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.counts.deleted, 8);
    assert_eq!(fx.rows("current").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_input_gives_the_same_result_as_csv() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    fx.run(&fx.input("d1", "a.csv", b"a,1\nb,2\nc,3\n"), "2024-01-01")
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("v", DataType::Float64, true),
        Field::new("id", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from(vec![1.0, 5.0])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
    )
    .unwrap();
    let folder = fx.dir.path().join("in/d2");
    std::fs::create_dir_all(&folder).unwrap();
    let file = std::fs::File::create(folder.join("part-0.parquet")).unwrap();
    let mut writer = deltalake::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let s = fx.run(&folder, "2024-01-02").await.unwrap();
    assert_eq!(
        (s.counts.unchanged, s.counts.updated, s.counts.deleted),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_are_checked_against_the_config() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "header: true");
    let s = fx
        .run(&fx.input("d1", "a.csv", b"id,v\na,1\n"), "2024-01-01")
        .await
        .unwrap();
    assert_eq!(s.counts.inserted, 1);
    let err = fx
        .run(&fx.input("d2", "a.csv", b"id,value\na,1\n"), "2024-01-02")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("header"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_columns_round_trip() {
    let columns = "- {name: id, type: long, key: true}\n- {name: d, type: date}\n- {name: ts, type: timestamp}\n\
                   - {name: amount, type: 'decimal(10,2)'}\n- {name: ok, type: boolean}\n- {name: n, type: int}\n";
    let fx = Fixture::new(columns, "");
    fx.run(
        &fx.input(
            "d1",
            "a.csv",
            b"1,2024-02-29,2024-02-29 10:00:00,12.34,true,7\n",
        ),
        "2024-03-01",
    )
    .await
    .unwrap();
    let row = fx.rows("current").await[0].clone();
    assert_eq!(row["d"], "2024-02-29");
    assert_eq!(row["amount"], "12.34");
    assert_eq!(row["ok"], "true");
    assert!(
        row["ts"].starts_with("2024-02-29T10:00:00"),
        "{}",
        row["ts"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_hashed_under_another_spec_or_algorithm_are_refused() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    fx.run(&fx.input("d1", "a.csv", b"a,1\n"), "2024-01-01")
        .await
        .unwrap();
    // Another algorithm in the config: every row would look updated, so refuse.
    let text = std::fs::read_to_string(&fx.config_path)
        .unwrap()
        .replace("delimiter", "hash: md5\ndelimiter");
    std::fs::write(&fx.config_path, text).unwrap();
    let err = fx
        .run(&fx.input("d2", "a.csv", b"a,1\n"), "2024-01-02")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hashed with xxh3"), "{err}");
    // A table written under another hash spec version.
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    fx.run(&fx.input("d1", "a.csv", b"a,1\n"), "2024-01-01")
        .await
        .unwrap();
    let url = url::Url::from_directory_path(fx.table_path("current")).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    table
        .set_tbl_properties()
        .with_properties([("tributary.hash.spec".to_string(), "0".to_string())].into())
        .with_raise_if_not_exists(false)
        .await
        .unwrap();
    let err = fx
        .run(&fx.input("d2", "a.csv", b"a,1\n"), "2024-01-02")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("spec 0") && err.to_string().contains("refusing"),
        "{err}"
    );
}

/// A current table partitioned by two columns: their values are not in the data files (Delta
/// partition values), and the rows read back by position for D and X carry them, with the
/// payload of the right row of a file of several rows.
#[tokio::test(flavor = "multi_thread")]
async fn partitioned_current_tables_keep_partition_values_of_gone_rows() {
    let columns = "- {name: id, type: string, key: true}\n- {name: region, type: string}\n\
                   - {name: day, type: date}\n- {name: v, type: float}\n";
    for (extract, gone_op) in [("full", "D"), ("delta", "X")] {
        let fx = Fixture::new(
            columns,
            &format!("extract_type: {extract}\npartition_by: [region, day]"),
        );
        // Partitions (eu, 2024-01-02) and (us, 2024-01-02) hold several rows each.
        let day1 = b"a,eu,2024-01-01,1\nf,eu,2024-01-02,6\nb,eu,2024-01-02,2\ng,eu,2024-01-02,7\n\
                     h,eu,2024-01-02,8\nc,us,2024-01-01,3\nj,us,2024-01-02,9\nd,us,2024-01-02,4\n\
                     k,us,2024-01-02,11\ne,ap,2024-01-03,5\n";
        fx.run(&fx.input("d1", "a.csv", day1), "2024-01-01")
            .await
            .unwrap();
        // b and d leave the extract; a changes; e moves to another partition.
        let day2 = b"a,eu,2024-01-01,10\nc,us,2024-01-01,3\ne,eu,2024-01-03,5\n\
                     f,eu,2024-01-02,6\ng,eu,2024-01-02,7\nh,eu,2024-01-02,8\nj,us,2024-01-02,9\n\
                     k,us,2024-01-02,11\n";
        let s = fx
            .run_with(
                &fx.input("d2", "a.csv", day2),
                "2024-01-02",
                RunOptions {
                    force: true,
                    ..RunOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(s.counts.updated, 2, "{extract}");
        let gone_rows = if extract == "full" {
            assert_eq!(s.counts.deleted, 2);
            fx.rows("history").await
        } else {
            assert_eq!(s.counts.not_supplied, 2);
            fx.rows("current").await
        };
        let mut gone: Vec<String> = gone_rows
            .iter()
            .filter(|r| r["operation"] == gone_op)
            .map(|r| {
                ["id", "region", "day", "v", "eff_start_date"]
                    .map(|c| r[c].as_str())
                    .join(",")
            })
            .collect();
        gone.sort();
        let eff = if extract == "full" {
            "2024-01-02"
        } else {
            "2024-01-01"
        };
        let expected = [
            format!("b,eu,2024-01-02,2.0,{eff}"),
            format!("d,us,2024-01-02,4.0,{eff}"),
        ];
        assert_eq!(gone, expected, "{extract}");
        let current = fx.rows("current").await;
        let e = find(&current, "id", "e")[0];
        assert_eq!((e["region"].as_str(), e["operation"].as_str()), ("eu", "U"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_that_do_not_compress_are_written_uncompressed() {
    use deltalake::parquet::basic::Compression as Codec;
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
    use rand::{Rng, SeedableRng};
    // `v` holds random doubles (zstd saves about 6%); `id` repeats a long prefix.
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    let rows: String = (0..4000)
        .map(|i| format!("customer-account-{i:08},{}\n", rng.gen::<f64>()))
        .collect();
    let input = fx.input("d1", "day1.csv", rows.as_bytes());
    fx.run(&input, "2024-01-01").await.unwrap();
    for role in ["current", "history"] {
        let files = data_files(&fx.table_path(role));
        assert_eq!(files.len(), 1, "{role}: {files:?}");
        let reader = SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let codec = |name: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .map(|c| c.compression())
                .unwrap()
        };
        assert_eq!(codec("v"), Codec::UNCOMPRESSED, "{role}");
        assert!(matches!(codec("id"), Codec::ZSTD(_)), "{role}");
    }
}
