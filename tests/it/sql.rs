//! `tributary sql` over real tables: current, history, the SCD2 view, time travel and as-of
//! queries, against what the runs committed; errors as exit 2 with the statement named.

use std::process::Output;

use proptest::prelude::*;

use crate::common::{
    output_with_stdin, sql_csv, tributary_command, tributary_ok, Fixture, SIMPLE_COLUMNS,
};

fn sql(fx: &Fixture, query: &str) -> Output {
    let args = [
        "sql",
        "--config",
        "config.yaml",
        "--format",
        "csv",
        "-e",
        query,
    ];
    tributary_command(fx.dir.path(), &args).output().unwrap()
}

/// The CSV rows of a successful query (header included).
fn csv(fx: &Fixture, query: &str) -> Vec<String> {
    sql_csv(fx.dir.path(), &["--config", "config.yaml"], query)
}

/// Day 1 (2024-01-01) inserts a, b, c; day 2 keeps a, updates b, deletes c, inserts d.
#[tokio::test(flavor = "multi_thread")]
async fn current_history_and_the_scd2_view() {
    let fx = Fixture::every_operation().await;
    assert_eq!(
        csv(&fx, "SELECT id, v, operation FROM t ORDER BY id"),
        ["id,v,operation", "a,1.0,N", "b,5.0,U", "d,4.0,I"]
    );
    assert_eq!(
        csv(&fx, "SELECT count(*) AS n FROM t_history"),
        ["n", "6"],
        "3 inserts, then U, D and I"
    );
    assert_eq!(
        csv(
            &fx,
            "SELECT id, v, operation, eff_start_date, eff_end_date, is_current FROM t_scd2 \
             ORDER BY id, eff_start_date"
        ),
        [
            "id,v,operation,eff_start_date,eff_end_date,is_current",
            "a,1.0,I,2024-01-01,,true",
            "b,2.0,I,2024-01-01,2024-01-02,false",
            "b,5.0,U,2024-01-02,,true",
            "c,3.0,I,2024-01-01,2024-01-02,false",
            "c,3.0,D,2024-01-02,,false",
            "d,4.0,I,2024-01-02,,true",
        ]
    );
    // Binary digests print as hex.
    let keyhash = csv(&fx, "SELECT keyhash FROM t WHERE id = 'a'");
    assert_eq!(keyhash[1].len(), 32, "{keyhash:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn time_travel_by_version_and_time_and_as_of_a_business_date() {
    let fx = Fixture::every_operation().await;
    let day1 = ["id,v", "a,1.0", "b,2.0", "c,3.0"];
    let day2 = ["id,v", "a,1.0", "b,5.0", "d,4.0"];
    assert_eq!(
        csv(&fx, "SELECT id, v FROM version_as_of('t', 1) ORDER BY id"),
        day1
    );
    assert_eq!(
        csv(&fx, "SELECT id, v FROM version_as_of('t', 2) ORDER BY id"),
        day2
    );
    assert_eq!(
        csv(
            &fx,
            "SELECT count(*) AS n FROM version_as_of('t_history', 1)"
        ),
        ["n", "3"]
    );
    assert_eq!(
        csv(
            &fx,
            "SELECT id, v FROM timestamp_as_of('t', '2999-01-01 00:00:00') ORDER BY id"
        ),
        day2
    );
    assert_eq!(
        csv(
            &fx,
            "SELECT id, v FROM as_of('t', DATE '2024-01-01') ORDER BY id"
        ),
        day1
    );
    assert_eq!(
        csv(
            &fx,
            "SELECT id, v FROM as_of('t', '2024-01-05') ORDER BY id"
        ),
        day2
    );
    assert_eq!(
        csv(
            &fx,
            "SELECT count(*) AS n FROM as_of('t', DATE '2023-12-31')"
        ),
        ["n", "0"],
        "before the first run"
    );
    // A time between the two runs (delta-rs dates a version by its log file's modification
    // time, a few milliseconds after the commit's own timestamp): history as day 1 left it.
    let at = csv(&fx, "SELECT committed_at FROM runs('t') ORDER BY run");
    let time = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap();
    let between = time(&at[1]) + (time(&at[2]) - time(&at[1])) / 2;
    let query = format!(
        "SELECT count(*) AS n FROM timestamp_as_of('t_history', '{}')",
        between.to_rfc3339()
    );
    assert_eq!(csv(&fx, &query), ["n", "3"], "{at:?}");
    // Several statements: each one's rows, in order.
    assert_eq!(
        csv(&fx, "SELECT 1 AS x; SELECT 2 AS y"),
        ["x", "1", "y", "2"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_between_versions_and_the_runs_of_a_table() {
    let fx = Fixture::every_operation().await;
    assert_eq!(
        csv(
            &fx,
            "SELECT id, v, operation, commit_version FROM changes('t', 1, 2) ORDER BY id"
        ),
        [
            "id,v,operation,commit_version",
            "b,5.0,U,2",
            "c,3.0,D,2",
            "d,4.0,I,2"
        ]
    );
    assert_eq!(
        csv(
            &fx,
            "SELECT commit_version, count(*) AS n FROM changes('t', 0, 2) GROUP BY 1 ORDER BY 1"
        ),
        ["commit_version,n", "1,3", "2,3"]
    );
    assert_eq!(
        csv(&fx, "SELECT count(*) AS n FROM changes('t', 2, 2)"),
        ["n", "0"]
    );
    // Day 2 adds two history files: the U and I rows (shared with current), the D rows.
    assert_eq!(
        csv(
            &fx,
            "SELECT history_version, run, business_date, files_added, rows_added, \
             length(fingerprint) AS f, committed_at IS NOT NULL AS timed FROM runs('t') ORDER BY run"
        ),
        [
            "history_version,run,business_date,files_added,rows_added,f,timed",
            "1,1,2024-01-01,1,3,32,true",
            "2,2,2024-01-02,2,3,32,true"
        ]
    );
    // Each run's rows by operation (the seed's I/U/D/X/N) and how long it took.
    assert_eq!(
        csv(
            &fx,
            "SELECT run, operation, inserted, updated, deleted, not_supplied, unchanged, \
             duration_secs > 0 AS timed, source_lsn IS NULL AS no_lsn FROM runs('t') ORDER BY run"
        ),
        [
            "run,operation,inserted,updated,deleted,not_supplied,unchanged,timed,no_lsn",
            "1,apply,3,0,0,0,0,true,true",
            "2,apply,1,1,1,0,1,true,true"
        ]
    );
}

/// A table named `t_history` beside `t` would hide one of them: refused, naming both.
#[tokio::test(flavor = "multi_thread")]
async fn tables_whose_names_collide_are_refused() {
    let fx = Fixture::every_operation().await;
    let other = "name: t_history\ncurrent_table_path: other/current\n\
                 history_table_path: other/history\nextract_type: full\ncolumns:\n\
                 - {name: id, type: string, key: true}\n";
    std::fs::write(fx.dir.path().join("other.yaml"), other).unwrap();
    let args = [
        "sql",
        "--config",
        "config.yaml",
        "--config",
        "other.yaml",
        "-e",
        "SELECT 1",
    ];
    let out = tributary_command(fx.dir.path(), &args).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`t_history`") && stderr.contains("from `t` and `t_history`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_queries_exit_2_naming_the_statement() {
    let fx = Fixture::every_operation().await;
    for (query, says) in [
        ("SELECT * FROM nope", "nope"),
        ("SELECT nope FROM t", "nope"),
        ("SELEC 1", "SELEC"),
        (
            "SELECT * FROM version_as_of('t', 99)",
            "version_as_of('t', 99)",
        ),
        ("SELECT * FROM version_as_of('x', 1)", "no table `x`"),
        ("SELECT * FROM as_of('t', 'soon')", "not a date"),
        ("SELECT * FROM changes('t', 2, 1)", "is after the second"),
        ("SELECT * FROM changes('t', 1, 9)", "changes('t', 1, 9)"),
        ("SELECT * FROM runs('t', 1)", "runs('orders')"),
        (
            "SELECT * FROM table_changes('t', 1)",
            "does not record its change data feed at version 1",
        ),
        (
            "SELECT * FROM table_changes('t', 3)",
            "no version 3 (the latest is 2)",
        ),
        (
            "INSERT INTO t_history SELECT * FROM t_history",
            "DML not supported",
        ),
        ("COPY t TO 'out.parquet'", "statement 1"),
        (
            "SELECT * FROM timestamp_as_of('t', '1999-01-01 00:00:00')",
            "the table did not exist yet",
        ),
    ] {
        let out = sql(&fx, query);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{query}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{query}: {stderr}");
        assert!(errors[0].contains(says), "{query}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `-o FILE` gets every statement's rows once all of them succeeded; a statement that fails
/// leaves no file (and an earlier one as it was).
#[tokio::test(flavor = "multi_thread")]
async fn output_files_are_written_whole_or_not_at_all() {
    let fx = Fixture::every_operation().await;
    let run = |query: &str, format: &str| {
        let args = [
            "sql",
            "--config",
            "config.yaml",
            "--format",
            format,
            "-o",
            "out/rows",
            "-e",
            query,
        ];
        tributary_command(fx.dir.path(), &args).output().unwrap()
    };
    let file = fx.dir.path().join("out/rows");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let failed = run("SELECT id FROM t ORDER BY id; SELECT nope FROM t", "csv");
    assert_eq!(failed.status.code(), Some(2), "{failed:?}");
    assert!(
        !file.exists(),
        "the first statement's rows are not left behind"
    );
    let ok = run(
        "SELECT id FROM t ORDER BY id; SELECT count(*) AS n FROM t_history",
        "csv",
    );
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "id\na\nb\nd\nn\n6\n"
    );
    let failed = run("SELECT nope FROM t", "json");
    assert_eq!(failed.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "id\na\nb\nd\nn\n6\n"
    );
    let ok = run("SELECT id, keyhash FROM t WHERE id = 'b'", "json");
    assert!(ok.status.success(), "{ok:?}");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
    assert_eq!(line["id"], "b");
    assert_eq!(line["keyhash"].as_str().unwrap().len(), 32, "hex: {line}");
    // no temporary file left beside it
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// A `sync` lake: tables in their schema.
#[test]
fn a_sync_lake_is_queried_by_schema_and_table() {
    let tmp = tempfile::tempdir().unwrap();
    let landing = tmp.path().join("landing");
    std::fs::create_dir_all(landing.join("sales/orders")).unwrap();
    std::fs::write(landing.join("sales/orders/LOAD00000001.csv"), "1,a\n2,b\n").unwrap();
    std::fs::write(
        landing.join("tables.yaml"),
        "tables:\n- source: sales/orders\n  active: true\n  primary_key: [id]\n  columns:\n  \
         - {name: id, type: long}\n  - {name: name, type: string}\n",
    )
    .unwrap();
    let run = |args: &[&str]| tributary_command(tmp.path(), args).output().unwrap();
    // Two runs: the full load, then a change file.
    let out = run(&["sync", "landing", "--lake", "lake"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        landing.join("sales/orders/20240102-000000000.csv"),
        "U,1,c\nD,2,b\n",
    )
    .unwrap();
    let out = run(&["sync", "landing", "--lake", "lake"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "sql",
        "--lake",
        "lake",
        "--format",
        "json",
        "-e",
        "SELECT id, name, operation FROM sales.orders; SELECT count(*) AS n FROM sales.orders_history",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"id\":1,\"name\":\"c\",\"operation\":\"U\"}\n{\"n\":4}\n"
    );
}

/// For random multi-day histories (full and delta extracts), `as_of(t, day)` holds, for every
/// day, the rows current held after that day's run (payload and eff_start_date).
#[test]
fn as_of_every_day_equals_current_after_that_day() {
    let mut runner = crate::common::property_runner(11);
    let extract = proptest::collection::btree_map(0u8..8, proptest::option::of(0u8..3), 0..8);
    let strategy = (proptest::collection::vec(extract, 1..4), any::<bool>());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runner
        .run(&strategy, |(days, full)| {
            let extract_type = if full { "full" } else { "delta" };
            let fx = Fixture::new(
                SIMPLE_COLUMNS,
                &format!("extract_type: {extract_type}\nmax_delete_fraction: 1.0\n"),
            );
            let date = |d: usize| format!("2024-01-{:02}", d + 1);
            let mut after = Vec::new();
            runtime.block_on(async {
                for (d, extract) in days.iter().enumerate() {
                    let text: String = extract
                        .iter()
                        .map(|(k, v)| {
                            format!("k{k},{}\n", v.map(|v| v.to_string()).unwrap_or_default())
                        })
                        .collect();
                    let input = fx.input(&format!("d{d}"), "a.csv", text.as_bytes());
                    fx.run(&input, &date(d)).await.unwrap();
                    let mut rows: Vec<String> = fx
                        .rows("current")
                        .await
                        .into_iter()
                        .map(|r| format!("{},{},{}", r["id"], r["v"], r["eff_start_date"]))
                        .collect();
                    rows.sort();
                    after.push(rows);
                }
            });
            for (d, expected) in after.iter().enumerate() {
                let query = format!(
                    "SELECT id, v, eff_start_date FROM as_of('t', DATE '{}') ORDER BY id",
                    date(d)
                );
                let got: Vec<String> = csv(&fx, &query).into_iter().skip(1).collect();
                // NULL: `<null>` in the test readers, an empty field in CSV.
                let expected: Vec<String> =
                    expected.iter().map(|r| r.replace("<null>", "")).collect();
                prop_assert_eq!(&got, &expected, "day {}", d);
            }
            Ok(())
        })
        .unwrap();
}

/// The shell, fed through a pipe: meta-commands, a statement over two lines, an error that the
/// shell survives, and `\q`.
#[tokio::test(flavor = "multi_thread")]
async fn the_shell_runs_meta_commands_and_multi_line_statements() {
    let fx = Fixture::every_operation().await;
    let mut shell = tributary_command(fx.dir.path(), &["sql", "--config", "config.yaml"]);
    shell.env("HOME", fx.dir.path());
    let out = output_with_stdin(
        shell,
        b"\\d\nSELECT count(*)\n  AS live FROM t;\nSELECT nope FROM t;\n\\d t_scd2\n\\x\nSELECT 7 AS after_error;\n\\q\nSELECT 8 AS after_quit;\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Fed from a pipe, a failed statement makes the exit code 2 (after the rest ran).
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        !stdout.contains("tributary sql:"),
        "the banner goes to stderr: {stdout}"
    );
    for table in [
        "| public       | t          | BASE TABLE |",
        "| public       | t_history  | BASE TABLE |",
        "| public       | t_scd2     | VIEW       |",
    ] {
        assert!(stdout.contains(table), "{table} in {stdout}");
    }
    assert!(
        stdout.contains("| live |") && stdout.contains("| 3    |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| eff_end_date   | Date32"),
        "\\d t_scd2: {stdout}"
    );
    assert!(stdout.contains("| after_error |"), "{stdout}");
    assert!(!stdout.contains("after_quit"), "{stdout}");
    assert!(
        stderr.contains("error: statement 1 (`SELECT nope FROM t`)"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown command `\\x`"), "{stderr}");
    assert!(
        !fx.dir.path().join(".tributary_history").exists(),
        "no history for a script"
    );
    // A last statement without `;` runs; a `;` inside a string does not end a statement.
    let out = output_with_stdin(
        tributary_command(
            fx.dir.path(),
            &["sql", "--config", "config.yaml", "--format", "csv"],
        ),
        b"SELECT 'a;\nb' AS s;\nSELECT 9 AS tail",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "s\n\"a;\nb\"\ntail\n9\n"
    );
}

/// A change-log table (with `source_position`): the SCD2 view and `as_of` order a key's
/// versions by date, then source position, and a table named `*_history` is found by its own
/// name.
#[test]
fn a_change_log_table_has_its_versions_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let landing = tmp.path().join("landing");
    for table in ["s/orders", "s/order_history"] {
        std::fs::create_dir_all(landing.join(table)).unwrap();
    }
    let entry = |source: &str| {
        format!(
            "- source: {source}\n  active: true\n  primary_key: [id]\n  columns:\n  \
             - {{name: id, type: long}}\n  - {{name: name, type: string}}\n"
        )
    };
    std::fs::write(
        landing.join("tables.yaml"),
        format!("tables:\n{}{}", entry("s/orders"), entry("s/order_history")),
    )
    .unwrap();
    let run = |args: &[&str]| tributary_ok(tmp.path(), args);
    // Change files without a commit time: eff_start_date is the sync's --date; the last two
    // runs share a date, and their source positions (the file names' times) order them.
    for (file, rows, date) in [
        ("20240101-000000000.csv", "I,1,a\nI,2,x\n", "2024-01-01"),
        ("20240102-000000000.csv", "U,1,b\n", "2024-01-02"),
        ("20240103-000000000.csv", "U,1,c\nD,2,x\n", "2024-01-03"),
        ("20240104-000000000.csv", "U,1,d\n", "2024-01-03"),
    ] {
        std::fs::write(landing.join("s/orders").join(file), rows).unwrap();
        std::fs::write(landing.join("s/order_history").join(file), rows).unwrap();
        run(&["sync", "landing", "--lake", "lake", "--date", date]);
    }
    let sql = |query: &str| run(&["sql", "--lake", "lake", "--format", "csv", "-e", query]);
    assert_eq!(
        sql(
            "SELECT id, name, operation, eff_start_date, eff_end_date, is_current \
             FROM s.orders_scd2 ORDER BY id, eff_start_date, source_position"
        ),
        "id,name,operation,eff_start_date,eff_end_date,is_current\n\
         1,a,I,2024-01-01,2024-01-02,false\n\
         1,b,U,2024-01-02,2024-01-03,false\n\
         1,c,U,2024-01-03,2024-01-03,false\n\
         1,d,U,2024-01-03,,true\n\
         2,x,I,2024-01-01,2024-01-03,false\n\
         2,x,D,2024-01-03,,false\n"
    );
    assert_eq!(
        sql("SELECT id, name FROM as_of('s.orders', DATE '2024-01-02') ORDER BY id"),
        "id,name\n1,b\n2,x\n"
    );
    // `order_history` is a table of its own (not the history of a table `order`), and
    // `order_history_history` its history.
    assert_eq!(
        sql("SELECT id, name FROM as_of('order_history', DATE '2024-01-03')"),
        "id,name\n1,d\n"
    );
    assert_eq!(
        sql("SELECT count(*) AS n FROM version_as_of('s.order_history_history', 1)"),
        "n\n2\n"
    );
}

/// The shell on a terminal (a pseudo-terminal from `script`): `\d`, a statement over two
/// lines, an error that does not end the session, `\q`.
#[tokio::test(flavor = "multi_thread")]
async fn the_shell_on_a_terminal_lists_runs_multi_line_statements_and_goes_on_after_errors() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED the shell pty test: no `script` command (util-linux)");
        return;
    }
    let fx = Fixture::every_operation().await;
    let shell = format!(
        "{} sql --config config.yaml",
        env!("CARGO_BIN_EXE_tributary")
    );
    /// Kills the session when the test fails before it ends.
    struct Session(std::process::Child);
    impl Drop for Session {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut session = Session(
        Command::new("timeout")
            .args(["120", "script", "-qec", &shell, "/dev/null"])
            .current_dir(fx.dir.path())
            .env_remove("RUST_LOG")
            .env("HOME", fx.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let child = &mut session.0;
    // Typed line by line, each once the shell shows its prompt (input that arrives before the
    // terminal is set up is dropped by it, as it would be on a real terminal).
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |prompt: &str, count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while seen.matches(prompt).count() < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("no prompt `{prompt}` #{count}: {seen}"),
            }
        }
    };
    for (prompt, count, line) in [
        ("tributary> ", 1, "\\d\n"),
        ("tributary> ", 2, "SELECT count(*) AS n\n"),
        ("-> ", 1, "  FROM t_history;\n"),
        ("tributary> ", 3, "SELECT nope FROM t;\n"),
        ("tributary> ", 4, "\\q\n"),
    ] {
        wait_for(prompt, count);
        stdin.write_all(line.as_bytes()).unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    while let Ok(bytes) = rx.try_recv() {
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    let text = seen.replace('\r', "");
    assert!(status.success(), "{status:?}: {text}");
    // \d: the tables and the view.
    assert!(text.contains("| t_scd2") && text.contains("VIEW"), "{text}");
    // The statement over two lines: a continuation prompt, then history's 6 rows.
    assert!(text.contains("->"), "{text}");
    assert!(text.contains("| 6 |") && text.contains("(1 row)"), "{text}");
    // The error is printed and the shell goes on to \q.
    let error = text.find("No field named nope").expect(&text);
    assert!(text[error..].contains("\\q"), "{text}");
    // Each statement's time.
    assert!(text.matches(" s\n").count() >= 2, "{text}");
}
