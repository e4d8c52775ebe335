//! Bad input fails the run naming file, line and column, and leaves the tables untouched;
//! with `on_error: reject` it lands in the rejects table instead.

use std::process::Command;

use tributary::Error;

use crate::common::{data_files, Fixture, SIMPLE_COLUMNS};

const TYPED: &str =
    "- {name: id, type: string, key: true}\n- {name: n, type: int}\n- {name: d, type: date}\n";

/// Runs a good day 1, then `bad` as day 2; returns the error and checks nothing changed.
async fn fails_on(bad: &[u8]) -> Error {
    let fx = Fixture::new(TYPED, "");
    fx.run(
        &fx.input("d1", "good.csv", b"a,1,2024-01-01\n"),
        "2024-01-01",
    )
    .await
    .unwrap();
    // Day 2 is streamed (it fails before its summary would say so; the next test checks).
    let state = || async {
        (
            fx.version("current").await,
            fx.version("history").await,
            data_files(&fx.table_path("current")),
            data_files(&fx.table_path("history")),
        )
    };
    let before = state().await;
    let err = fx
        .run(&fx.input("d2", "bad.csv", bad), "2024-01-02")
        .await
        .unwrap_err();
    assert_eq!(state().await, before, "tables and their files untouched");
    let rejects = fx.dir.path().join("lake/current_rejects/_delta_log");
    assert!(!rejects.exists(), "no rejects table under on_error: fail");
    err
}

/// The (line, column, raw) of each rejects-table row, sorted.
fn line_column_raw(
    rejects: &[std::collections::BTreeMap<String, String>],
) -> Vec<(String, String, String)> {
    let mut seen: Vec<(String, String, String)> = rejects
        .iter()
        .map(|r| (r["line"].clone(), r["column"].clone(), r["raw"].clone()))
        .collect();
    seen.sort();
    seen
}

fn assert_names(err: &Error, line: u64, column: Option<&str>) {
    let text = err.to_string();
    match err {
        Error::BadRow {
            file,
            line: l,
            column: c,
            ..
        } => {
            assert!(file.ends_with("bad.csv"), "{text}");
            assert_eq!(*l, line, "{text}");
            assert_eq!(c.as_deref(), column, "{text}");
        }
        other => panic!("expected a bad-row error, got {other}"),
    }
    assert!(
        text.contains("bad.csv") && text.contains(&format!("line {line}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_fields() {
    let err = fails_on(b"a,1,2024-01-01\nb,2,2024-01-01,extra\n").await;
    assert_names(&err, 2, None);
    assert!(err.to_string().contains("expected 3 fields, found 4"));
}

#[tokio::test(flavor = "multi_thread")]
async fn too_few_fields() {
    let err = fails_on(b"a,1,2024-01-01\nb,2\n").await;
    assert_names(&err, 2, None);
    assert!(err.to_string().contains("found 2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unparsable_number() {
    let err = fails_on(b"a,1,2024-01-01\nb,2,2024-01-01\nc,x7,2024-01-01\n").await;
    assert_names(&err, 3, Some("n"));
    assert!(err.to_string().contains("`x7`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unparsable_date() {
    let err = fails_on(b"a,1,2024-02-30\n").await;
    assert_names(&err, 1, Some("d"));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8() {
    let err = fails_on(b"a,1,2024-01-01\n\xff\xfe,1,2024-01-01\n").await;
    assert_names(&err, 2, Some("id"));
    assert!(err.to_string().contains("UTF-8"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_bad_row_is_reported_whatever_its_kind() {
    // A bad number (line 2) before a row with too few fields (line 3), in one chunk.
    let err = fails_on(b"a,1,2024-01-01\nb,x,2024-01-01\nc,3\n").await;
    assert_names(&err, 2, Some("n"));
    // A bad date (line 2) before a row of invalid UTF-8 (line 3).
    let err = fails_on(b"a,1,2024-01-01\nb,1,2024-13-01\n\xff,1,2024-01-01\n").await;
    assert_names(&err, 2, Some("d"));
    // The row of too few fields first: it is the one.
    let err = fails_on(b"a,1\nb,x,2024-01-01\n").await;
    assert_names(&err, 1, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_key_names_both_lines() {
    let err = fails_on(b"a,1,2024-01-01\nb,1,2024-01-01\na,2,2024-01-01\n").await;
    assert_names(&err, 3, None);
    assert!(
        err.to_string().contains("first seen at") && err.to_string().contains("line 1"),
        "{err}"
    );
}

/// Asserts that current and history were created and hold no commit and no data file.
async fn assert_created_empty(fx: &Fixture) {
    for role in ["current", "history"] {
        assert_eq!(
            fx.version(role).await,
            Some(0),
            "{role}: created, nothing committed"
        );
        assert!(data_files(&fx.table_path(role)).is_empty(), "{role}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_run_failing_in_the_diff_leaves_empty_tables() {
    // Duplicate keys are found while diffing, after the tables were created for the writers.
    // The tables stay, empty (another process may have opened them; nothing is deleted that
    // another process could be using), and hold no run.
    let fx = Fixture::new(TYPED, "");
    let input = fx.input(
        "d1",
        "dup.csv",
        b"a,1,2024-01-01
a,2,2024-01-01
",
    );
    fx.run(&input, "2024-01-01").await.unwrap_err();
    assert_created_empty(&fx).await;
    // The next, good run starts from nothing.
    let good = fx.input(
        "d2",
        "ok.csv",
        b"a,1,2024-01-01
",
    );
    assert_eq!(fx.run(&good, "2024-01-01").await.unwrap().run_seq, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_first_run_creates_no_table() {
    let fx = Fixture::new(TYPED, "");
    fx.run(
        &fx.input("d1", "bad.csv", b"a,zz,2024-01-01\n"),
        "2024-01-01",
    )
    .await
    .unwrap_err();
    assert!(!fx.table_path("current").join("_delta_log").exists());
    assert!(!fx.table_path("history").join("_delta_log").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_failing_after_its_writers_leaves_no_data_files_behind() {
    // A plain file where the rejects table goes: the run fails when it opens that table, after
    // the current and history data files were written and before the commit.
    let fx = Fixture::new(TYPED, "on_error: reject\nrejects_table_path: lake/blocked");
    std::fs::create_dir_all(fx.dir.path().join("lake")).unwrap();
    std::fs::write(fx.dir.path().join("lake/blocked"), b"not a table").unwrap();
    let bad = b"a,1,2024-01-01\nb,x,2024-01-01\n";
    // A first run: the tables it created hold no data file and no run, not even an empty
    // partition folder (another process may have opened them: they are not removed).
    fx.run(&fx.input("d1", "bad.csv", bad), "2024-01-01")
        .await
        .unwrap_err();
    assert_created_empty(&fx).await;
    for role in ["current", "history"] {
        let entries: Vec<String> = std::fs::read_dir(fx.table_path(role))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries, ["_delta_log"], "{role}");
    }
    // A later run: the tables keep their versions and exactly their committed files.
    let good = fx.input("d2", "good.csv", b"a,1,2024-01-01\nc,2,2024-01-01\n");
    fx.run(&good, "2024-01-01").await.unwrap();
    let before = [
        (
            fx.version("current").await,
            data_files(&fx.table_path("current")),
        ),
        (
            fx.version("history").await,
            data_files(&fx.table_path("history")),
        ),
    ];
    assert!(before.iter().all(|(_, files)| !files.is_empty()));
    let err = fx
        .run(&fx.input("d3", "bad.csv", bad), "2024-01-02")
        .await
        .unwrap_err();
    let after = [
        (
            fx.version("current").await,
            data_files(&fx.table_path("current")),
        ),
        (
            fx.version("history").await,
            data_files(&fx.table_path("history")),
        ),
    ];
    assert_eq!(after, before, "{err}");
}

/// `rows` good lines `k<i>,<i>,2024-01-01` from `from` on, as CSV.
fn good_lines(from: usize, rows: usize) -> String {
    (from..from + rows)
        .map(|i| format!("k{i},{i},2024-01-01\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_run_failing_mid_read_leaves_no_data_files_behind() {
    let fx = Fixture::new(TYPED, "");
    let day1 = fx.input("d1", "good.csv", good_lines(0, 100).as_bytes());
    fx.run(&day1, "2024-01-01").await.unwrap();
    let committed = || ["current", "history"].map(|role| data_files(&fx.table_path(role)));
    let before = committed();
    // The first chunk of rows (64Ki) reaches the writers before the next one, holding the bad
    // row, fails.
    let bad = format!("{}k-bad,x,2024-01-01\n", good_lines(0, 80_000));
    let err = fx
        .run(&fx.input("d2", "bad.csv", bad.as_bytes()), "2024-01-02")
        .await
        .unwrap_err();
    assert_names(&err, 80_001, Some("n"));
    assert_eq!(committed(), before, "{err}");
    // The same day without the bad row is streamed, and its files are committed.
    let good = fx.input("d3", "good.csv", good_lines(0, 80_000).as_bytes());
    let s = fx.run(&good, "2024-01-02").await.unwrap();
    assert!(s.memory.unwrap().plan.streamed);
    assert_eq!((s.counts.unchanged, s.counts.inserted), (100, 79_900));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_run_keeps_the_first_row_of_a_key_in_file_order() {
    for on_error in ["reject", "fail"] {
        let fx = Fixture::new(TYPED, &format!("on_error: {on_error}"));
        let day1 = fx.input("d1", "good.csv", good_lines(0, 10).as_bytes());
        fx.run(&day1, "2024-01-01").await.unwrap();
        // k5 again at the end, in the next chunk; x (new) twice within the first chunk.
        let rows = format!(
            "x,1,2024-01-02\nx,2,2024-01-02\n{}k5,77,2024-01-02\n",
            good_lines(0, 70_000)
        );
        let result = fx
            .run(&fx.input("d2", "bad.csv", rows.as_bytes()), "2024-01-02")
            .await;
        if on_error == "fail" {
            // The first duplicate in file order is reported: line 2.
            assert_names(&result.unwrap_err(), 2, None);
            continue;
        }
        let s = result.unwrap();
        assert!(s.memory.unwrap().plan.streamed);
        assert_eq!(s.rows_rejected, 2);
        let rejects = crate::common::table_rows(&fx.dir.path().join("lake/current_rejects")).await;
        let mut seen: Vec<(String, String)> = rejects
            .iter()
            .map(|r| (r["line"].clone(), r["reason"].clone()))
            .collect();
        seen.sort();
        let reason = |line| format!("/bad.csv, line {line}");
        assert!(seen
            .iter()
            .all(|(_, r)| r.starts_with("duplicate key: first seen at ")));
        assert_eq!(seen.len(), 2);
        assert!(
            seen[0].0 == "2" && seen[0].1.ends_with(&reason(1)),
            "{seen:?}"
        );
        // k5 is first at line 8 (after the two x lines).
        assert!(
            seen[1].0 == "70003" && seen[1].1.ends_with(&reason(8)),
            "{seen:?}"
        );
        let current = fx.rows("current").await;
        let value = |id: &str| {
            let row = current.iter().find(|r| r["id"] == id).unwrap();
            (row["n"].clone(), row["operation"].clone())
        };
        assert_eq!(value("x"), ("1".into(), "I".into()));
        assert_eq!(value("k5"), ("5".into(), "N".into()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_key_before_an_unparsable_value_is_the_error_reported() {
    // The duplicate (line 2) is found by the streamed diff, the bad value (line 70,002, in the
    // next chunk) by a reader worker, possibly first: the earlier line is reported either way.
    let bad = format!(
        "a,1,2024-01-01\na,2,2024-01-01\n{}k-bad,x,2024-01-01\n",
        good_lines(0, 69_999)
    );
    let err = fails_on(bad.as_bytes()).await;
    assert_names(&err, 2, None);
    assert!(err.to_string().contains("duplicate key"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_run_finds_a_key_repeated_in_a_later_file() {
    let fx = Fixture::new(TYPED, "on_error: reject");
    let day1 = fx.input("d1", "a.csv", b"a,1,2024-01-01\nb,2,2024-01-01\n");
    fx.run(&day1, "2024-01-01").await.unwrap();
    // Files are read in name order: a.csv, then b.csv.
    fx.input("d2", "a.csv", b"a,1,2024-01-01\nc,3,2024-01-02\n");
    let day2 = fx.input(
        "d2",
        "b.csv",
        b"d,4,2024-01-02\nc,9,2024-01-02\nb,5,2024-01-02\n",
    );
    let s = fx.run(&day2, "2024-01-02").await.unwrap();
    assert!(s.memory.unwrap().plan.streamed);
    assert_eq!((s.input_files, s.rows_read, s.rows_rejected), (2, 5, 1));
    let c = s.counts;
    let counts = (c.inserted, c.updated, c.unchanged, c.deleted);
    assert_eq!(counts, (2, 1, 1, 0), "c and d new, b updated, a unchanged");
    let rejects = crate::common::table_rows(&fx.dir.path().join("lake/current_rejects")).await;
    assert_eq!(rejects.len(), 1);
    assert!(rejects[0]["file"].ends_with("b.csv") && rejects[0]["line"] == "2");
    assert!(
        rejects[0]["reason"].ends_with("/a.csv, line 2"),
        "{rejects:?}"
    );
    let current = fx.rows("current").await;
    let c = current.iter().find(|r| r["id"] == "c").unwrap();
    assert_eq!(c["n"], "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_mode_lands_every_bad_row_in_the_rejects_table() {
    let fx = Fixture::new(TYPED, "on_error: reject");
    let input = fx.input(
        "d1",
        "bad.csv",
        b"a,1,2024-01-01\nb,x,2024-01-01\nc,3\nd,4,2024-13-01\na,5,2024-01-01\ne,6,2024-01-06\n",
    );
    let s = fx.run(&input, "2024-01-01").await.unwrap();
    assert_eq!(s.rows_read, 6);
    assert_eq!(s.rows_rejected, 4);
    assert_eq!(s.counts.inserted, 2);
    let rejects = crate::common::table_rows(&fx.dir.path().join("lake/current_rejects")).await;
    let seen = line_column_raw(&rejects);
    assert_eq!(
        seen,
        vec![
            ("2".into(), "n".into(), "b,x,2024-01-01".into()),
            ("3".into(), "<null>".into(), "c,3".into()),
            ("4".into(), "d".into(), "d,4,2024-13-01".into()),
            ("5".into(), "<null>".into(), "a,5,2024-01-01".into()),
        ]
    );
    assert!(rejects
        .iter()
        .all(|r| r["file"].ends_with("bad.csv") && r["run_seq"] == "1"));
}

#[test]
fn the_cli_exits_non_zero_with_the_location() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let input = fx.input("d1", "bad.csv", b"a,1\nb,one\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args([
            "run",
            fx.config_path.to_str().unwrap(),
            input.to_str().unwrap(),
            "2024-01-01",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.csv, line 2, column `v`"), "{stderr}");
}

/// A Parquet extract of 40 row groups of 50 rows, decoded in parallel, with unconvertible `n`
/// values at rows 1,234 and 1,260 (1-based; adjacent row groups, so two workers can fail at
/// once): under `on_error: fail` the error names row 1,234 every time; under
/// `on_error: reject` both rows are rejected with their file row numbers.
#[tokio::test(flavor = "multi_thread")]
async fn parquet_row_groups_read_in_parallel_keep_file_row_numbers() {
    use std::sync::Arc;

    use deltalake::arrow::array::{RecordBatch, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::parquet::file::properties::WriterProperties;

    let write = |folder: &std::path::Path| {
        std::fs::create_dir_all(folder).unwrap();
        let schema = Arc::new(Schema::new(
            ["id", "n", "d"]
                .map(|c| Field::new(c, DataType::Utf8, false))
                .to_vec(),
        ));
        let ids: Vec<String> = (1..=2_000).map(|i| format!("k{i}")).collect();
        let ns: Vec<String> = (1..=2_000)
            .map(|i| {
                if i == 1_234 || i == 1_260 {
                    "x".into()
                } else {
                    i.to_string()
                }
            })
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(ns)),
                Arc::new(StringArray::from(vec!["2024-01-01"; 2_000])),
            ],
        )
        .unwrap();
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(50))
            .build();
        let file = std::fs::File::create(folder.join("bad.parquet")).unwrap();
        let mut writer =
            deltalake::parquet::arrow::ArrowWriter::try_new(file, schema, Some(properties))
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    };
    let fx = Fixture::new(TYPED, "");
    let input = fx.dir.path().join("in/d1");
    write(&input);
    for _ in 0..10 {
        let err = fx.run(&input, "2024-01-01").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bad.parquet, line 1234, column `n`"),
            "{text}"
        );
        assert!(
            fx.version("current").await.is_none(),
            "no table after a failed first run"
        );
    }
    let fx = Fixture::new(TYPED, "on_error: reject");
    let input = fx.dir.path().join("in/d1");
    write(&input);
    let s = fx.run(&input, "2024-01-01").await.unwrap();
    assert_eq!(
        (s.rows_read, s.rows_rejected, s.counts.inserted),
        (2_000, 2, 1_998)
    );
    let rejects = crate::common::table_rows(&fx.dir.path().join("lake/current_rejects")).await;
    let lines = line_column_raw(&rejects);
    assert_eq!(
        lines,
        vec![
            ("1234".into(), "n".into(), "k1234,x,2024-01-01".into()),
            ("1260".into(), "n".into(), "k1260,x,2024-01-01".into()),
        ]
    );
}
