//! `tributary capture` against the local PostgreSQL (wal_level = logical: scripts/pg_logical.sh,
//! run by .ci/run). Each test works in a database and a slot of its own, dropped at the end.
//!
//! Without a reachable server with logical replication the tests are skipped with a SKIPPED
//! line on stderr, unless TRIBUTARY_REQUIRE_POSTGRES is set (by .ci/run): then they fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use super::common::{tributary_command, tributary_ok};

const HOST: &str = "127.0.0.1";
const PORT: &str = "5432";
const USER: &str = "postgres";

/// Runs `sql` in database `db` with psql (stop at the first error); its output as CSV lines
/// without header.
fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-q", "-h", HOST, "-p", PORT, "-U", USER, "-d", db])
        .args(["-v", "ON_ERROR_STOP=1", "--csv", "-t"])
        .args(["-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A database of its own for one test (and its slot, named after it); None when there is no
/// server with logical replication (see the module docs).
struct Db {
    name: String,
}

impl Db {
    fn new(test: &str) -> Option<Db> {
        let probe = Command::new("psql")
            .args([
                "-X",
                "-h",
                HOST,
                "-p",
                PORT,
                "-U",
                USER,
                "-d",
                "postgres",
                "-Atc",
                "SHOW wal_level",
            ])
            .output();
        let logical = probe.is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "logical"
        });
        if !logical {
            assert!(
                std::env::var("TRIBUTARY_REQUIRE_POSTGRES").is_err(),
                "PostgreSQL with wal_level = logical is required (TRIBUTARY_REQUIRE_POSTGRES is set)"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no PostgreSQL with wal_level = logical at {HOST}:{PORT} (scripts/pg_logical.sh)"
            );
            return None;
        }
        let name = format!("cap_{test}");
        let db = Db { name };
        db.drop_all();
        psql("postgres", &format!("CREATE DATABASE {}", db.name));
        Some(db)
    }

    fn url(&self) -> String {
        format!("postgres://{USER}@{HOST}:{PORT}/{}", self.name)
    }

    fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    fn confirmed_flush(&self) -> String {
        psql(
            "postgres",
            &format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                self.name
            ),
        )
        .trim()
        .to_string()
    }

    fn drop_all(&self) {
        // the test's slot and its copies' side slots (`<slot>__copy0`, `<slot>__copy1`, ...)
        let slots = psql(
            "postgres",
            &format!(
                "SELECT slot_name FROM pg_replication_slots WHERE slot_name ~ '^{}(__copy[0-9]+)?$'",
                self.name
            ),
        );
        for slot in slots.lines() {
            drop_slot(slot);
        }
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Drops replication slot `slot`, ending the walsender that holds it (one of a capture that
/// just exited may hold it a moment longer).
fn drop_slot(slot: &str) {
    psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = '{slot}' AND active"
        ),
    );
    for _ in 0..50 {
        let out = psql(
            "postgres",
            &format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = '{slot}' AND NOT active; \
                 SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
        );
        if out.trim().ends_with('0') {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("slot {slot} could not be dropped");
}

impl Drop for Db {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.drop_all();
        }
    }
}

/// The command `tributary capture URL --lake LAKE --slot S [extra]`, run in `dir`.
fn capture_command(dir: &Path, db: &Db, lake: &Path, extra: &[&str]) -> Command {
    let (url, lake) = (db.url(), lake.display().to_string());
    let mut command =
        tributary_command(dir, &["capture", &url, "--lake", &lake, "--slot", &db.name]);
    command.args(extra);
    command
}

/// [`capture_command`] with `--once` and `extra`, run to its end.
fn capture_output(dir: &Path, db: &Db, lake: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--once"];
    args.extend(extra);
    capture_command(dir, db, lake, &args).output().unwrap()
}

/// [`capture_output`], which must exit 0: its stdout.
fn capture_once(dir: &Path, db: &Db, lake: &Path, extra: &[&str]) -> String {
    let out = capture_output(dir, db, lake, extra);
    assert_eq!(
        out.status.code(),
        Some(0),
        "capture {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`capture_command`] running continuously (`--commit-interval 1s`, then `extra`), its
/// stdout and stderr piped.
fn capture_running(dir: &Path, db: &Db, lake: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["--commit-interval", "1s"];
    args.extend(extra);
    capture_command(dir, db, lake, &args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The line of `table` (`public.t`) in capture's summary `stdout` (empty: none).
fn table_line<'a>(stdout: &'a str, table: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(table))
        .unwrap_or_default()
}

/// The runs committed to `table` as capture's summary `stdout` gives them (`... in 4 runs`).
fn runs_of(stdout: &str, table: &str) -> Option<u32> {
    let line = table_line(stdout, table);
    let runs = line.split(" in ").nth(1)?;
    runs.split(' ').next()?.parse().ok()
}

/// The `id` column as comparable text ([`assert_same`]).
const ID: (&str, &str) = ("id::text", "CAST(id AS VARCHAR)");

/// Rows of `query` over the lake (`tributary sql --format csv`), header left out, sorted.
fn lake_rows(dir: &Path, lake: &Path, query: &str) -> Vec<String> {
    let out = tributary_ok(
        dir,
        &[
            "sql",
            "--lake",
            &lake.display().to_string(),
            "--format",
            "csv",
            "-e",
            query,
        ],
    );
    let mut rows: Vec<String> = out.lines().skip(1).map(str::to_string).collect();
    rows.sort();
    rows
}

/// Rows of `query` in the database, sorted.
fn db_rows(db: &Db, query: &str) -> Vec<String> {
    let mut rows: Vec<String> = db.sql(query).lines().map(str::to_string).collect();
    rows.sort();
    rows
}

/// The same rows in both: `columns` is a list of (PostgreSQL expression, DataFusion
/// expression) producing the same text for the same value.
fn assert_same(dir: &Path, db: &Db, lake: &Path, table: &str, columns: &[(&str, &str)]) {
    let pg: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let df: Vec<&str> = columns.iter().map(|c| c.1).collect();
    let expected = db_rows(db, &format!("SELECT {} FROM {table}", pg.join(", ")));
    let actual = lake_rows(
        dir,
        lake,
        &format!("SELECT {} FROM public.{table}", df.join(", ")),
    );
    assert_eq!(actual.len(), expected.len(), "{table}: row counts");
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e, "{table}: first differing row");
    }
}

/// Text of a nullable column, the same in both engines: its value, or `~` for NULL.
fn both(pg: &str, df: &str) -> (String, String) {
    (
        format!("coalesce(({pg})::text, '~')"),
        format!("coalesce(CAST({df} AS VARCHAR), '~')"),
    )
}

/// The items table's columns as comparable text.
fn item_columns() -> Vec<(String, String)> {
    vec![
        ("id::text".into(), "CAST(id AS VARCHAR)".into()),
        both("grp", "grp"),
        both("name", "name"),
        both("md5(note)", "md5(note)"),
        both("price", "price"),
        both("qty", "qty"),
        both("ok", "ok"),
        both("d", "d"),
        both(
            "to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US')",
            "to_char(ts, '%Y-%m-%d %H:%M:%S%.6f')",
        ),
        both(
            "to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
            "to_char(tz, '%Y-%m-%d %H:%M:%S%.6f')",
        ),
        both("data", "data"),
        both("u", "u"),
        both("tags", "tags"),
        both("raw", "raw"),
        // float text differs (PostgreSQL `2`, Arrow `2.0`): compared in thousandths
        both(
            "round(f::numeric * 1000)::bigint",
            "CAST(round(f * 1000) AS BIGINT)",
        ),
        both("exact", "exact"),
        both("small", "small"),
        both("feeling", "feeling"),
    ]
}

fn as_refs(columns: &[(String, String)]) -> Vec<(&str, &str)> {
    columns
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

/// History rows per key of `table` (key column `id`): operations in order.
fn history_ops(dir: &Path, lake: &Path, table: &str) -> BTreeMap<i64, String> {
    let rows = lake_rows(
        dir,
        lake,
        &format!("SELECT id, operation, source_position FROM public.{table}_history"),
    );
    let mut parsed: Vec<(i64, i64, String)> = rows
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[2].parse().unwrap(),
                f[1].to_string(),
            )
        })
        .collect();
    parsed.sort();
    let mut out: BTreeMap<i64, String> = BTreeMap::new();
    for (id, _, op) in parsed {
        out.entry(id).or_default().push_str(&op);
    }
    out
}

const TABLES_FILE: &str = "tables:
- source: public/items
  active: true
  partition_by: [grp]
  change_data_feed: true
- source: public/keyonly
  active: true
  deletion_vectors: true
- source: public/events
  active: true
- source: public/trunc
  active: true
  delete_mode: soft
  change_data_feed: true
- source: public/big
  active: true
  deletion_vectors: true
";

/// Text PostgreSQL stores out of line (TOAST) and cannot compress: `kb` KiB of hex digits.
fn toasted(kb: usize, seed: &str) -> String {
    format!(
        "(SELECT string_agg(md5('{seed}' || g::text), '') FROM generate_series(1, {}) g)",
        kb * 1024 / 32
    )
}

#[test]
fn the_lake_equals_the_database_after_a_scripted_workload() {
    let Some(db) = Db::new("workload") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    std::fs::write(dir.path().join("tables.yaml"), TABLES_FILE).unwrap();
    db.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE TABLE items (id int PRIMARY KEY, grp text NOT NULL DEFAULT 'a', name text,
           note text, price numeric(10,2), qty bigint, ok boolean, d date, ts timestamp,
           tz timestamptz, data jsonb, u uuid, tags text[], raw bytea, f float8,
           exact numeric, small smallint, feeling mood);
         CREATE TABLE keyonly (id int PRIMARY KEY, v text, v2 text);
         CREATE TABLE events (at int, what text);
         ALTER TABLE events REPLICA IDENTITY FULL;
         CREATE TABLE trunc (id int PRIMARY KEY, v text);
         CREATE TABLE big (id int PRIMARY KEY, v int);
         INSERT INTO items SELECT g, 'a', 'n' || g, 'note ' || g, g * 1.25, g * 1000000000::bigint,
           g % 2 = 0, DATE '2024-01-01' + g, TIMESTAMP '2024-01-01 10:00:00.123456' + g * interval '1 hour',
           TIMESTAMPTZ '2024-01-01 10:00:00+05:30' + g * interval '1 minute', jsonb_build_object('g', g),
           md5(g::text)::uuid, ARRAY['x', g::text], decode(md5(g::text), 'hex'), g / 8.0,
           g * 1000000000000000000000.001, g, 'happy'
           FROM generate_series(1, 50) g;
         UPDATE items SET name = NULL, note = NULL, price = NULL, qty = NULL, ok = NULL, d = NULL,
           ts = NULL, tz = NULL, data = NULL, u = NULL, tags = NULL, raw = NULL, f = NULL,
           exact = NULL, small = NULL, feeling = NULL WHERE id % 7 = 0;
         INSERT INTO keyonly SELECT g, 'v' || g, 'w' || g FROM generate_series(1, 10) g;
         INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 5) g;
         INSERT INTO trunc SELECT g, 't' || g FROM generate_series(1, 20) g;",
    );
    let tables = dir.path().join("tables.yaml").display().to_string();
    // the copy in parts of 7 rows (the first replaces the table, the others are appended)
    let first = capture_once(
        dir.path(),
        &db,
        &lake,
        &["--tables", &tables, "--max-buffered-changes", "7"],
    );
    assert!(
        first.contains("public.items") && first.contains("50 copied"),
        "{first}"
    );
    assert_same(dir.path(), &db, &lake, "items", &as_refs(&item_columns()));

    // Phase 1: updates, deletes, re-inserts, a partition-column update, a TOASTed value, a
    // TRUNCATE, a 200,000-row transaction.
    db.sql(&format!(
        "UPDATE items SET name = coalesce(name, '') || '!' WHERE id % 3 = 0;
         DELETE FROM items WHERE id % 5 = 0;
         INSERT INTO items (id, grp, name) SELECT g, 'b', 'again' FROM generate_series(5, 50, 10) g;
         UPDATE items SET grp = 'z' WHERE id IN (1, 2);
         UPDATE items SET note = {} WHERE id = 4;
         DELETE FROM keyonly WHERE id <= 3;
         INSERT INTO events VALUES (6, 'e6'), (7, NULL);
         DELETE FROM trunc WHERE id = 1;
         TRUNCATE trunc;
         INSERT INTO trunc VALUES (100, 'after');
         INSERT INTO big SELECT g, g FROM generate_series(1, 200000) g;",
        toasted(200, "four")
    ));
    // the 200,000-row transaction is committed in parts of 50,000 changes
    let second = capture_once(
        dir.path(),
        &db,
        &lake,
        &["--tables", &tables, "--max-buffered-changes", "50000"],
    );
    let big_runs = runs_of(&second, "public.big");
    assert!(big_runs.is_some_and(|n| n >= 4), "{second}");
    assert!(second.contains("0 failed"), "{second}");
    assert_same(dir.path(), &db, &lake, "items", &as_refs(&item_columns()));

    // Phase 2: updates that leave a TOASTed value unchanged (pgoutput 'u'): one whose value
    // is in the lake, one whose value came earlier in the same run; a dropped column.
    db.sql(&format!(
        "UPDATE items SET qty = 41 WHERE id = 4;
         UPDATE items SET qty = 42 WHERE id = 4;
         UPDATE items SET id = 3004 WHERE id = 4;
         UPDATE items SET id = 1003 WHERE id = 3;
         BEGIN;
         UPDATE items SET note = {} WHERE id = 6;
         UPDATE items SET qty = 7 WHERE id = 6;
         COMMIT;
         UPDATE items SET id = 2006 WHERE id = 6;
         ALTER TABLE keyonly DROP COLUMN v2;
         INSERT INTO keyonly VALUES (50, 'post-drop');
         UPDATE keyonly SET v = 'changed' WHERE id = 4;
         ALTER TABLE keyonly ADD COLUMN v3 bigint;
         INSERT INTO keyonly VALUES (51, 'post-add', 51);
         UPDATE keyonly SET v3 = 7 WHERE id = 7;
         UPDATE big SET v = -v WHERE id % 1000 = 0;",
        toasted(100, "six")
    ));
    let third = capture_once(dir.path(), &db, &lake, &["--tables", &tables]);
    assert!(third.contains("0 failed"), "{third}");

    assert_same(dir.path(), &db, &lake, "items", &as_refs(&item_columns()));
    let note_length = lake_rows(
        dir.path(),
        &lake,
        "SELECT length(note) FROM public.items WHERE id IN (3004, 2006)",
    );
    assert_eq!(
        note_length,
        vec!["102400".to_string(), "204800".to_string()]
    );
    // the added column: NULL in the rows the source had before (as there), its values after
    let v3 = both("v3", "v3");
    assert_same(
        dir.path(),
        &db,
        &lake,
        "keyonly",
        &[ID, ("coalesce(v, '~')", "coalesce(v, '~')"), (&v3.0, &v3.1)],
    );
    let v2 = lake_rows(
        dir.path(),
        &lake,
        "SELECT id, coalesce(v2, '~') FROM public.keyonly",
    );
    // the dropped column stays: rows written after the drop hold NULL, the others their value
    for row in ["50,~", "4,~", "5,w5"] {
        assert!(v2.contains(&row.to_string()), "{v2:?}");
    }
    assert_same(
        dir.path(),
        &db,
        &lake,
        "events",
        &[
            ("at::text", "CAST(at AS VARCHAR)"),
            ("coalesce(what, '~')", "coalesce(what, '~')"),
        ],
    );
    // soft deletes: current keeps every deleted key as a D row, the one deleted before the
    // TRUNCATE too
    let live = lake_rows(
        dir.path(),
        &lake,
        "SELECT id, v FROM public.trunc WHERE operation <> 'D'",
    );
    assert_eq!(live, db_rows(&db, "SELECT id, v FROM trunc"));
    let soft = lake_rows(
        dir.path(),
        &lake,
        "SELECT count(*) FROM public.trunc WHERE operation = 'D'",
    );
    assert_eq!(soft, vec!["20"]);
    assert_same(
        dir.path(),
        &db,
        &lake,
        "big",
        &[ID, ("v::text", "CAST(v AS VARCHAR)")],
    );

    // History: the copy, then the changes; deletes carry the last stored values (the delete
    // sent only the key); the TRUNCATE deleted every row.
    let items = history_ops(dir.path(), &lake, "items");
    assert_eq!(items[&1], "IU");
    assert_eq!(items[&5], "IDI");
    // updated twice keeping its TOASTed note, then moved to a new key: the run knew the note
    // only as unchanged, so the new key takes it from the lake (the three changes share one
    // transaction, so one position: history_ops lists their letters sorted, D before U)
    assert_eq!(items[&4], "IUDUU");
    assert_eq!(items[&3004], "I");
    // a key update: the old key deleted, the new one inserted
    assert_eq!(items[&3], "IUD");
    assert_eq!(items[&1003], "I");
    assert_eq!(items[&10], "ID");
    let deleted = lake_rows(
        dir.path(),
        &lake,
        "SELECT id, v FROM public.keyonly_history WHERE operation = 'D'",
    );
    assert_eq!(deleted, vec!["1,v1", "2,v2", "3,v3"]);
    let truncated = lake_rows(
        dir.path(),
        &lake,
        "SELECT count(*) FROM public.trunc_history WHERE operation = 'D'",
    );
    assert_eq!(truncated, vec!["20"]);

    // A key update of a row whose TOASTed value only the lake holds (no change of it in the
    // run): the new key keeps the value.
    // moved twice in one run: the second move takes the value the first one found
    db.sql(
        "UPDATE items SET id = 4006 WHERE id = 2006; UPDATE items SET id = 5006 WHERE id = 4006;",
    );
    let fourth = capture_once(dir.path(), &db, &lake, &["--tables", &tables]);
    assert!(fourth.contains("0 failed"), "{fourth}");
    let moved = lake_rows(
        dir.path(),
        &lake,
        "SELECT id, length(note) FROM public.items WHERE id IN (2006, 4006, 5006)",
    );
    assert_eq!(moved, vec!["5006,102400"]);
    assert_same(dir.path(), &db, &lake, "items", &as_refs(&item_columns()));

    // A re-run with nothing new changes nothing.
    let again = capture_once(dir.path(), &db, &lake, &["--tables", &tables]);
    assert!(
        again.contains("0 transactions") || again.contains("up-to-date"),
        "{again}"
    );
    assert_same(dir.path(), &db, &lake, "items", &as_refs(&item_columns()));
    // The change data feed of the tables that record it (every lake type, a partition column
    // updated, soft deletes and a TRUNCATE) replays each of their versions.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for table in ["items", "trunc"] {
        let current = lake.join("public").join(table).join("current");
        let rows = runtime.block_on(crate::common::assert_feed_replays(&current, 1));
        assert!(rows > 0, "{table}");
    }
    // keyonly's merges (deletes, updates across dropped and added columns) marked rows in
    // deletion vectors (`deletion_vectors: true`) and rewrote no file
    let current = lake.join("public/keyonly/current");
    let url = url::Url::from_directory_path(&current).unwrap();
    let table = runtime.block_on(deltalake::open_table(url)).unwrap();
    let marked = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .filter(|f| f.deletion_vector_descriptor().is_some())
        .count();
    assert!(marked > 0, "keyonly's files have no deletion vector");
}

#[test]
fn bad_setups_stop_before_anything_is_created() {
    let Some(db) = Db::new("setup") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake_arg = lake.display().to_string();
    let run = |args: &[&str]| capture_output(dir.path(), &db, &lake, args);
    // no publication and no tables file
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("publication `tributary` does not exist") && err.contains("--tables"),
        "{err}"
    );
    // a table without primary key nor REPLICA IDENTITY FULL
    db.sql("CREATE TABLE nokey (a int); CREATE PUBLICATION tributary FOR TABLE nokey;");
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("public.nokey") && err.contains("REPLICA IDENTITY FULL"),
        "{err}"
    );
    assert!(
        !err.contains("postgres://"),
        "the URL is never printed: {err}"
    );
    assert!(db.confirmed_flush().is_empty(), "no slot was created");
    assert!(!lake.exists(), "no lake table was created");
    // a password in the URL never shows, even when the login fails
    let secret = format!("postgres://{USER}:s3cret@{HOST}:1/{}", db.name);
    let out = tributary_command(
        dir.path(),
        &["capture", &secret, "--lake", &lake_arg, "--once"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn a_lost_slot_is_refused_until_the_tables_are_copied_again() {
    let Some(db) = Db::new("lost") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;
         CREATE PUBLICATION tributary FOR TABLE t;",
    );
    capture_once(dir.path(), &db, &lake, &[]);
    drop_slot(&db.name);
    db.sql("UPDATE t SET v = 'missed' WHERE id = 1; INSERT INTO t VALUES (11, 'new');");
    let out = capture_output(dir.path(), &db, &lake, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--resnapshot"), "{err}");
    capture_once(dir.path(), &db, &lake, &["--resnapshot"]);
    assert_same(dir.path(), &db, &lake, "t", &[ID, ("v", "v")]);
}

#[test]
fn an_idle_slot_is_confirmed_past_unrelated_writes_and_sigterm_commits() {
    let Some(db) = Db::new("idle") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE TABLE other (id int);
         CREATE PUBLICATION tributary FOR TABLE t;",
    );
    capture_once(dir.path(), &db, &lake, &[]);
    let child = capture_running(dir.path(), &db, &lake, &[]);
    db.sql("INSERT INTO t VALUES (1, 'one');");
    // unrelated writes only: the slot's position must still move past them
    db.sql("INSERT INTO other SELECT generate_series(1, 1000);");
    let target = db.sql("SELECT pg_current_wal_lsn()").trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let confirmed = db.sql(&format!(
            "SELECT confirmed_flush_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
            db.name
        ));
        if confirmed.trim() == "t" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was not confirmed past {target}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    db.sql("INSERT INTO t VALUES (2, 'two');");
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: commits what it has and exits 0
    send_signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    capture_once(dir.path(), &db, &lake, &[]);
    assert_same(dir.path(), &db, &lake, "t", &[ID, ("v", "v")]);
}

/// Sends signal `name` to process `pid` with kill(1).
fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A number from the environment variable `name`, else `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// pgbench writes while capture runs continuously and is SIGKILLed at random moments (the
/// initial copy, committed in parts of 20,000 rows, a commit, a confirm, between them) and started again; after pgbench ends and
/// a last `--once`, the lake equals the database row for row, nothing doubled: pgbench's
/// accounts, branches and tellers, and its insert-only history (no primary key, REPLICA
/// IDENTITY FULL). Sizes: TRIBUTARY_PGBENCH_SCALE (1), _SECONDS (15), _KILLS (8), _SEED.
#[test]
fn killed_captures_under_pgbench_lose_and_double_nothing() {
    let Some(db) = Db::new("pgbench") else {
        return;
    };
    let scale = env_or("TRIBUTARY_PGBENCH_SCALE", 1);
    let seconds = env_or("TRIBUTARY_PGBENCH_SECONDS", 15);
    let kills = env_or("TRIBUTARY_PGBENCH_KILLS", 8);
    let mut seed = env_or(
        "TRIBUTARY_PGBENCH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    eprintln!("pgbench crash test: scale {scale}, {seconds} s, {kills} kills, seed {seed}");
    let mut next = move |below: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % below
    };
    let init = Command::new("pgbench")
        .args([
            "-h",
            HOST,
            "-p",
            PORT,
            "-U",
            USER,
            "-i",
            "-q",
            "-s",
            &scale.to_string(),
            &db.name,
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    db.sql(
        "ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
         CREATE PUBLICATION tributary FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history;",
    );
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let bench = Command::new("pgbench")
        .args([
            "-h",
            HOST,
            "-p",
            PORT,
            "-U",
            USER,
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-n",
            &db.name,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // two large transactions into the insert-only history meanwhile: committed in parts, a kill
    // between parts must neither lose nor double a row of them
    let big = {
        let name = db.name.clone();
        std::thread::spawn(move || {
            for pause in [1500, 4000] {
                std::thread::sleep(Duration::from_millis(pause));
                psql(
                    &name,
                    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                     SELECT 1, 1, g, g, now() FROM generate_series(1, 60000) g",
                );
            }
        })
    };
    let started = Instant::now();
    let mut killed = 0;
    while killed < kills {
        let mut child =
            capture_running(dir.path(), &db, &lake, &["--max-buffered-changes", "20000"]);
        std::thread::sleep(Duration::from_millis(300 + next(2500)));
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "capture exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
        killed += 1;
    }
    big.join().unwrap();
    let bench = bench.wait_with_output().unwrap();
    assert!(
        bench.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&bench.stderr)
    );
    eprintln!("{killed} kills in {:.1} s", started.elapsed().as_secs_f64());
    let last = capture_once(dir.path(), &db, &lake, &[]);
    assert!(last.contains("0 failed"), "{last}");
    assert_same(
        dir.path(),
        &db,
        &lake,
        "pgbench_accounts",
        &[
            ("aid::text", "CAST(aid AS VARCHAR)"),
            ("bid::text", "CAST(bid AS VARCHAR)"),
            ("abalance::text", "CAST(abalance AS VARCHAR)"),
        ],
    );
    for table in ["pgbench_branches", "pgbench_tellers"] {
        let id = if table == "pgbench_branches" {
            "bid"
        } else {
            "tid"
        };
        let balance = if table == "pgbench_branches" {
            "bbalance"
        } else {
            "tbalance"
        };
        assert_same(
            dir.path(),
            &db,
            &lake,
            table,
            &[
                (&format!("{id}::text"), &format!("CAST({id} AS VARCHAR)")),
                (
                    &format!("{balance}::text"),
                    &format!("CAST({balance} AS VARCHAR)"),
                ),
            ],
        );
    }
    let history = [
        ("tid::text", "CAST(tid AS VARCHAR)"),
        ("bid::text", "CAST(bid AS VARCHAR)"),
        ("aid::text", "CAST(aid AS VARCHAR)"),
        ("delta::text", "CAST(delta AS VARCHAR)"),
        (
            "to_char(mtime, 'YYYY-MM-DD HH24:MI:SS.US')",
            "to_char(mtime, '%Y-%m-%d %H:%M:%S%.6f')",
        ),
    ];
    let rows = db.sql("SELECT count(*) FROM pgbench_history");
    assert!(
        rows.trim().parse::<u64>().unwrap() > 100,
        "pgbench wrote too little: {rows}"
    );
    assert_same(dir.path(), &db, &lake, "pgbench_history", &history);
}

#[test]
fn a_table_added_to_the_publication_is_copied_while_capture_runs() {
    let Some(db) = Db::new("added") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    db.sql(
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO b SELECT g, 'before' FROM generate_series(1, 100) g;
         CREATE PUBLICATION tributary FOR TABLE a;",
    );
    capture_once(dir.path(), &db, &lake, &[]);
    let child = capture_running(dir.path(), &db, &lake, &[]);
    db.sql("INSERT INTO a VALUES (1, 'one');");
    std::thread::sleep(Duration::from_millis(1500));
    // b joins the publication while capture runs; changes to it before and after
    db.sql("UPDATE b SET v = 'changed' WHERE id <= 10;");
    db.sql("ALTER PUBLICATION tributary ADD TABLE b;");
    db.sql("UPDATE b SET v = 'after' WHERE id > 90; DELETE FROM b WHERE id = 50; INSERT INTO a VALUES (2, 'two');");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lake.join("public/b/current/_delta_log").exists()
        || lake_rows(
            dir.path(),
            &lake,
            "SELECT count(*) FROM public.b WHERE v = 'after'",
        ) != vec!["10"]
    {
        assert!(Instant::now() < deadline, "table b was not captured");
        std::thread::sleep(Duration::from_millis(300));
    }
    send_signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("public.b: added to the publication"),
        "{stderr}"
    );
    for table in ["a", "b"] {
        assert_same(dir.path(), &db, &lake, table, &[ID, ("v", "v")]);
    }
}

#[test]
fn a_transaction_committed_in_parts_survives_a_crash_between_parts() {
    let Some(db) = Db::new("parts") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         CREATE TABLE log (n int, what text);
         ALTER TABLE log REPLICA IDENTITY FULL;
         CREATE PUBLICATION tributary FOR TABLE t, log;",
    );
    capture_once(dir.path(), &db, &lake, &[]);
    db.sql(
        "BEGIN;
         INSERT INTO t SELECT g, g FROM generate_series(1, 30000) g;
         INSERT INTO log SELECT g, 'row ' || g FROM generate_series(1, 30000) g;
         UPDATE t SET v = -v WHERE id % 3 = 0;
         COMMIT;",
    );
    let out = capture_command(
        dir.path(),
        &db,
        &lake,
        &["--once", "--max-buffered-changes", "10000"],
    )
    .env("TRIBUTARY_CRASH_AT", "capture-after-part")
    .output()
    .unwrap();
    assert!(!out.status.success(), "the process should have aborted");
    let held = lake_rows(dir.path(), &lake, "SELECT count(*) FROM public.t");
    assert!(
        held != vec!["0"] && held != vec!["30000"],
        "a part, not all: {held:?}"
    );
    // the slot sends the whole transaction again; the parts the lake holds are skipped
    capture_once(dir.path(), &db, &lake, &["--max-buffered-changes", "10000"]);
    assert_same(
        dir.path(),
        &db,
        &lake,
        "t",
        &[ID, ("v::text", "CAST(v AS VARCHAR)")],
    );
    assert_same(
        dir.path(),
        &db,
        &lake,
        "log",
        &[("n::text", "CAST(n AS VARCHAR)"), ("what", "what")],
    );
    let history = lake_rows(
        dir.path(),
        &lake,
        "SELECT operation, count(*) FROM public.t_history GROUP BY operation",
    );
    assert_eq!(history, vec!["I,30000", "U,10000"]);
}

/// Three tables copied at once (three side slots), in parts of 10 rows; the copy crashes
/// after its first part and starts over: each table equals the database, its history holds
/// one I per key (the stopped parts' rows replaced), and no side slot is left.
#[test]
fn a_copy_that_stops_between_parts_starts_over_without_doubling_history() {
    let Some(db) = Db::new("copyparts") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE TABLE u (id int PRIMARY KEY, v text);
         CREATE TABLE w (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 35) g;
         INSERT INTO u SELECT g, 'u' || g FROM generate_series(1, 20) g;
         INSERT INTO w SELECT g, repeat('w', g) FROM generate_series(1, 50) g;
         CREATE PUBLICATION tributary FOR TABLE t, u, w;",
    );
    let parts = ["--max-buffered-changes", "10", "--copy-workers", "3"];
    let mut args = vec!["--once"];
    args.extend(parts);
    let out = capture_command(dir.path(), &db, &lake, &args)
        .env("TRIBUTARY_CRASH_AT", "capture-after-copy-part")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the process should have aborted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("copying 3 table(s), 3 at once"), "{stderr}");
    db.sql("UPDATE t SET v = 'changed' WHERE id = 1; UPDATE w SET v = 'x' WHERE id = 50;");
    capture_once(dir.path(), &db, &lake, &parts);
    for (table, rows) in [("t", 35), ("u", 20), ("w", 50)] {
        assert_same(dir.path(), &db, &lake, table, &[ID, ("v", "v")]);
        let history = lake_rows(
            dir.path(),
            &lake,
            &format!("SELECT operation, count(*) FROM public.{table}_history GROUP BY operation"),
        );
        // one I per key, from the copy that finished; the updates committed before it are
        // in the copy
        assert_eq!(history, vec![format!("I,{rows}")], "{table}");
    }
    let side = db.sql(&format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '{}\\_\\_copy%'",
        db.name
    ));
    assert_eq!(side.trim(), "0", "side slots left");
}

#[test]
fn a_type_change_or_a_column_added_to_an_inserts_only_table_stops_it_and_the_others_go_on() {
    let Some(db) = Db::new("retype") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    db.sql(
        "CREATE TABLE a (id int PRIMARY KEY, v int);
         CREATE TABLE b (id int PRIMARY KEY, v int);
         CREATE TABLE c (at int, what text);
         ALTER TABLE c REPLICA IDENTITY FULL;
         INSERT INTO a VALUES (1, 1);
         INSERT INTO c VALUES (1, 'one');
         CREATE PUBLICATION tributary FOR TABLE a, b, c;",
    );
    capture_once(dir.path(), &db, &lake, &[]);
    db.sql(
        "ALTER TABLE a ALTER COLUMN v TYPE bigint;
         INSERT INTO a VALUES (2, 5000000000);
         INSERT INTO b VALUES (1, 1);
         ALTER TABLE c ADD COLUMN extra int;
         INSERT INTO c VALUES (2, 'two', 2);",
    );
    let run = || capture_output(dir.path(), &db, &lake, &[]);
    for attempt in ["mid-stream", "at the next start"] {
        let out = run();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(5), "{attempt}: {stdout}");
        let line = table_line(&stdout, "public.a");
        assert!(
            line.contains("failed") && line.contains("`v`") && line.contains("long"),
            "{attempt}: {line}"
        );
        assert_same(
            dir.path(),
            &db,
            &lake,
            "b",
            &[ID, ("v::text", "CAST(v AS VARCHAR)")],
        );
        // the slot is held at a's position: its change is still there
        let a = lake_rows(dir.path(), &lake, "SELECT id FROM public.a");
        assert_eq!(a, vec!["1"], "{attempt}");
        // a table loaded inserts-only (keyed by all its columns) takes no new column
        let c = table_line(&stdout, "public.c");
        assert!(
            c.contains("failed") && c.contains("`extra`") && c.contains("inserts-only"),
            "{attempt}: {c}"
        );
        let columns = delta_fields(&lake.join("public/c/current"));
        assert!(
            !columns.iter().any(|(name, _, _)| name == "extra"),
            "{columns:?}"
        );
    }
}

/// Columns added at the source reach both lake tables as nullable columns, whether capture is
/// running (a Relation message mid-transaction: the changes before it are committed first)
/// or stopped (seen in the catalog at the next start); nothing is backfilled, so rows the
/// source had before keep NULL there (a DEFAULT is not written back).
#[test]
fn columns_added_at_the_source_reach_the_lake_tables() {
    let Some(db) = Db::new("addcol") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    db.sql(
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO a VALUES (1, 'one');
         INSERT INTO b VALUES (1, 'b1');
         CREATE PUBLICATION tributary FOR TABLE a, b;",
    );
    capture_once(dir.path(), &db, &lake, &[]);
    let child = capture_running(dir.path(), &db, &lake, &[]);
    db.sql("INSERT INTO a VALUES (2, 'two');");
    std::thread::sleep(Duration::from_millis(1500));
    // one transaction: a change, the new columns, changes carrying them, another table
    db.sql(
        "BEGIN;
         UPDATE a SET v = 'pre' WHERE id = 1;
         ALTER TABLE a ADD COLUMN n int, ADD COLUMN note text DEFAULT 'dflt';
         UPDATE a SET n = 7 WHERE id = 1;
         INSERT INTO a VALUES (3, 'three', 3, 'x');
         INSERT INTO b VALUES (2, 'b2');
         COMMIT;",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while lake_rows(
        dir.path(),
        &lake,
        "SELECT count(*) FROM public.a WHERE id = 3",
    ) != vec!["1"]
    {
        assert!(
            Instant::now() < deadline,
            "the row with new columns did not arrive"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    send_signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("public.a: column(s) `n`, `note` added to the lake tables"),
        "{stderr}"
    );
    assert!(stdout.contains("columns added: n, note"), "{stdout}");
    // b, captured meanwhile, is untouched by a's new columns
    assert_same(dir.path(), &db, &lake, "b", &[ID, ("v", "v")]);

    // added while capture is stopped: taken from the catalog at the next start
    db.sql(
        "ALTER TABLE b ADD COLUMN w bigint;
         UPDATE b SET w = 10000000000 WHERE id = 2;
         INSERT INTO b VALUES (3, 'b3', 3);
         UPDATE a SET note = 'later' WHERE id = 2;",
    );
    let second = capture_once(dir.path(), &db, &lake, &[]);
    assert!(second.contains("0 failed"), "{second}");
    assert!(second.contains("columns added: w"), "{second}");

    let a = lake_rows(
        dir.path(),
        &lake,
        "SELECT id, v, coalesce(CAST(n AS VARCHAR), '~'), coalesce(note, '~') FROM public.a",
    );
    // row 1 was updated after the ADD COLUMN (its new row carries the default); row 2 only
    // later, by the second start
    assert_eq!(a, vec!["1,pre,7,dflt", "2,two,~,later", "3,three,3,x"]);
    let w = both("w", "w");
    assert_same(dir.path(), &db, &lake, "b", &[ID, ("v", "v"), (&w.0, &w.1)]);
    // history: the change before the new columns has them NULL, the ones after carry them
    let history = lake_rows(
        dir.path(),
        &lake,
        "SELECT id, operation, v, coalesce(CAST(n AS VARCHAR), '~') FROM public.a_history WHERE id = 1",
    );
    assert_eq!(history, vec!["1,I,one,~", "1,U,pre,7", "1,U,pre,~"]);
    // the Delta schemas: the new columns after the others, before Tributary's own, nullable
    for role in ["current", "history"] {
        let fields = delta_fields(&lake.join("public/a").join(role));
        assert_eq!(
            fields[..5],
            [
                ("id", "integer", true),
                ("v", "string", true),
                ("n", "integer", true),
                ("note", "string", true),
                ("keyhash", "binary", false)
            ]
            .map(|(n, t, null)| (n.to_string(), t.to_string(), null)),
            "{role}"
        );
    }
    let again = capture_once(dir.path(), &db, &lake, &[]);
    assert!(
        again.contains("0 failed") && !again.contains("columns added"),
        "{again}"
    );
}

/// The columns of the Delta table at `table` as its newest `metaData` action gives them:
/// (name, Delta type, nullable), in order.
fn delta_fields(table: &Path) -> Vec<(String, String, bool)> {
    let schema = super::common::log_commits(table)
        .into_iter()
        .flatten()
        .filter_map(|action| {
            action["metaData"]["schemaString"]
                .as_str()
                .map(str::to_string)
        })
        .next_back()
        .expect("a metaData action");
    let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
    schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap_or("?").to_string(),
                f["nullable"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A transaction of wide rows (300 rows of 100 KB) is committed in parts once the buffered
/// changes take half of `--memory-limit` (16 MiB: parts of about 40 rows), far below
/// `--max-buffered-changes`; the lake equals the database.
#[test]
fn wide_rows_are_committed_in_parts_within_the_memory_limit() {
    let Some(db) = Db::new("memlimit") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    db.sql(
        "CREATE TABLE wide (id int PRIMARY KEY, body text);
         CREATE PUBLICATION tributary FOR TABLE wide;",
    );
    capture_once(dir.path(), &db, &lake, &[]);
    db.sql("INSERT INTO wide SELECT g, repeat(md5(g::text), 3200) FROM generate_series(1, 300) g;");
    let out = capture_once(dir.path(), &db, &lake, &["--memory-limit", "16MiB"]);
    let runs = runs_of(&out, "public.wide");
    assert!(runs.is_some_and(|n| (5..=15).contains(&n)), "{out}");
    assert_same(
        dir.path(),
        &db,
        &lake,
        "wide",
        &[ID, ("md5(body)", "md5(body)")],
    );
    let bad = capture_output(dir.path(), &db, &lake, &["--memory-limit", "lots"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--memory-limit `lots`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// The tables file's `catalog` (AWS Glue, moto's Glue API): capture registers each table
/// after its initial copy, and a column added at the source reaches the catalog at the table's
/// next commit.
#[test]
fn captured_tables_are_registered_in_glue_with_columns_added_at_the_source() {
    let Some(db) = Db::new("glue") else {
        return;
    };
    let Some(endpoint) = crate::object_store::endpoint(
        "capture::captured_tables_are_registered_in_glue_with_columns_added_at_the_source",
    ) else {
        return;
    };
    if std::env::var("TRIBUTARY_S3_ENDPOINT").is_ok() {
        return; // a given server (SeaweedFS) serves no Glue API
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let database = format!("capture_{}", db.name.replace('-', "_"));
    let tables = dir.path().join("tables.yaml");
    std::fs::write(
        &tables,
        format!(
            "catalog: {{type: glue, database: {database}, region: us-east-1, endpoint: '{endpoint}'}}\ntables: []\n"
        ),
    )
    .unwrap();
    db.sql(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items VALUES (1, 'one');
         CREATE PUBLICATION tributary FOR TABLE items;",
    );
    let glue_columns = || {
        let script = format!(
            "import boto3, json\n\
             g = boto3.client('glue', endpoint_url='{endpoint}', region_name='us-east-1',\n\
                 aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             t = g.get_table(DatabaseName='{database}', Name='public_items')['Table']\n\
             print(json.dumps([c['Name'] for c in t['StorageDescriptor']['Columns']]))"
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<String>>(&out.stdout).unwrap()
    };
    let run = |db: &Db| {
        let mut command = capture_command(dir.path(), db, &lake, &["--once", "--tables"]);
        command
            .arg(&tables)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        let out = command.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&db);
    let columns = glue_columns();
    assert!(
        columns.starts_with(&["id".to_string(), "v".to_string()]),
        "{columns:?}"
    );
    db.sql(
        "ALTER TABLE items ADD COLUMN note text;
         INSERT INTO items VALUES (2, 'two', 'new');",
    );
    run(&db);
    assert!(glue_columns().contains(&"note".to_string()));
}
