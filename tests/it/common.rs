//! Shared fixtures: a temp folder with a config, input files, and table readers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::Date32Type;
use deltalake::arrow::util::display::array_value_to_string;
use tributary::config::TableConfig;
use tributary::snapshot::summary::RunSummary;
use tributary::snapshot::{run, RunOptions};
use tributary::Result;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Columns `id` (string key) and `v` (float) unless the caller gives others.
pub const SIMPLE_COLUMNS: &str =
    "- {name: id, type: string, key: true}\n- {name: v, type: float}\n";

impl Fixture {
    /// A config named `t` with tables under `lake/`, the given `columns:` list and extra lines.
    pub fn new(columns: &str, extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        let text = format!(
            "name: t\ncurrent_table_path: lake/current\nhistory_table_path: lake/history\n\
             delimiter: \",\"\n{extra}\ncolumns:\n{columns}"
        );
        let text = if text.contains("extract_type") {
            text
        } else {
            text.replace("delimiter", "extract_type: full\ndelimiter")
        };
        std::fs::write(&config_path, text).unwrap();
        Fixture { dir, config_path }
    }

    pub fn config(&self) -> TableConfig {
        TableConfig::load(&self.config_path).unwrap()
    }

    /// Writes `day/<name>` and returns the folder.
    pub fn input(&self, day: &str, name: &str, contents: &[u8]) -> PathBuf {
        let folder = self.dir.path().join("in").join(day);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(name), contents).unwrap();
        folder
    }

    pub async fn run(&self, input: &Path, date: &str) -> Result<RunSummary> {
        self.run_with(input, date, RunOptions::default()).await
    }

    pub async fn run_with(
        &self,
        input: &Path,
        date: &str,
        options: RunOptions,
    ) -> Result<RunSummary> {
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        run(&self.config(), input, date, options).await
    }

    /// Two days of [`SIMPLE_COLUMNS`] with every operation: day 1 (2024-01-01) inserts a, b
    /// and c; day 2 (2024-01-02) keeps a (N), updates b (U), deletes c (D), inserts d (I).
    pub async fn every_operation() -> Fixture {
        let fx = Fixture::new(SIMPLE_COLUMNS, "");
        fx.run(&fx.input("d1", "a.csv", b"a,1\nb,2\nc,3\n"), "2024-01-01")
            .await
            .unwrap();
        fx.run(&fx.input("d2", "a.csv", b"a,1\nb,5\nd,4\n"), "2024-01-02")
            .await
            .unwrap();
        fx
    }

    pub fn table_path(&self, role: &str) -> PathBuf {
        self.dir.path().join("lake").join(role)
    }

    /// Rows of a table as maps column -> displayed value ("" for NULL shown as "<null>").
    pub async fn rows(&self, role: &str) -> Vec<BTreeMap<String, String>> {
        table_rows(&self.table_path(role)).await
    }

    /// Latest Delta version of a table.
    pub async fn version(&self, role: &str) -> Option<i64> {
        let url = url::Url::from_directory_path(self.table_path(role)).unwrap();
        deltalake::open_table(url)
            .await
            .ok()
            .and_then(|t| t.version().map(|v| v as i64))
    }
}

pub async fn table_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let url = url::Url::from_directory_path(path).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    let batches = tributary::sink::delta::scan(&table).await.unwrap();
    batches.iter().flat_map(batch_rows).collect()
}

/// The rows of the table at `path` as of `version`.
pub async fn table_rows_at(path: &Path, version: i64) -> Vec<BTreeMap<String, String>> {
    let url = url::Url::from_directory_path(path).unwrap();
    let mut table = deltalake::open_table(url).await.unwrap();
    table.load_version(version as _).await.unwrap();
    let batches = tributary::sink::delta::scan(&table).await.unwrap();
    batches.iter().flat_map(batch_rows).collect()
}

/// Checks the Delta change data feed of the keyed table at `path`, as delta-rs's `load_cdf`
/// (the reader of other engines' `table_changes`) reads it, against the table's versions: for
/// every version v from `from` on,
/// - the rows of version v - 1 with v's feed applied (each `delete` and `update_preimage` row
///   taken out, whole row, and found there; each `insert` and `update_postimage` row put in)
///   are the rows of version v;
/// - v's commit has change files (`cdc` actions) exactly when it both removes and adds data
///   files (readers would otherwise take every replaced row as deleted and inserted);
/// - an update's pre- and post-image differ;
///
/// and every file under `_change_data/` is named by a `cdc` action of the log (none left by a
/// run that did not commit). Returns the feed's row count.
pub async fn assert_feed_replays(path: &Path, from: i64) -> usize {
    use deltalake::datafusion::prelude::SessionContext;
    let url = url::Url::from_directory_path(path).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    let latest = table.version().unwrap() as i64;
    let mut feed_rows = 0;
    // the rows as a multiset: row -> count
    let multiset = |rows: Vec<BTreeMap<String, String>>| {
        let mut out: BTreeMap<BTreeMap<String, String>, usize> = BTreeMap::new();
        for row in rows {
            *out.entry(row).or_default() += 1;
        }
        out
    };
    let mut state = multiset(table_rows_at(path, from - 1).await);
    for v in from..=latest {
        let scan = table
            .clone()
            .scan_cdf()
            .with_starting_version(v as _)
            .with_ending_version(v as _);
        let ctx = SessionContext::new();
        let plan = scan.build(&ctx.state(), None).await.unwrap();
        let batches = deltalake::datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        let commit =
            std::fs::read_to_string(path.join(format!("_delta_log/{v:020}.json"))).unwrap();
        let actions: Vec<serde_json::Value> = commit
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let changing = |kind: &str| {
            actions
                .iter()
                .filter(|a| a[kind]["dataChange"].as_bool() == Some(true))
                .count()
        };
        let cdc = actions.iter().filter(|a| a.get("cdc").is_some()).count();
        assert_eq!(
            cdc > 0,
            changing("add") > 0 && changing("remove") > 0,
            "version {v}: change files exactly when files are replaced: {commit}"
        );
        let mut updates: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        for row in batches.iter().flat_map(batch_rows) {
            if row["_change_type"].starts_with("update_") {
                let mut image = row.clone();
                image.remove("_change_type");
                updates
                    .entry(row["keyhash"].clone())
                    .or_default()
                    .push(image);
            }
        }
        for (key, images) in &updates {
            assert_eq!(images.len(), 2, "version {v}: key {key}: {images:?}");
            assert_ne!(
                images[0], images[1],
                "version {v}: an update that changes nothing"
            );
        }
        for mut row in batches.iter().flat_map(batch_rows) {
            feed_rows += 1;
            let kind = row.remove("_change_type").unwrap();
            assert_eq!(
                row.remove("_commit_version").as_deref(),
                Some(v.to_string().as_str())
            );
            row.remove("_commit_timestamp");
            match kind.as_str() {
                "insert" | "update_postimage" => *state.entry(row).or_default() += 1,
                "delete" | "update_preimage" => {
                    let Some(count) = state.get_mut(&row) else {
                        panic!(
                            "version {v}: the feed's {kind} row {row:?} is not in version {}",
                            v - 1
                        )
                    };
                    *count -= 1;
                    if *count == 0 {
                        state.remove(&row);
                    }
                }
                other => panic!("version {v}: change type {other}"),
            }
        }
        let want = multiset(table_rows_at(path, v).await);
        if state != want {
            let extra: Vec<_> = state
                .iter()
                .filter(|(r, n)| want.get(*r) != Some(n))
                .take(3)
                .collect();
            let missing: Vec<_> = want
                .iter()
                .filter(|(r, n)| state.get(*r) != Some(n))
                .take(3)
                .collect();
            panic!(
                "version {} with the feed of {v} applied differs from version {v}: \
                 rows (with their counts) only there {extra:?}, only in version {v} {missing:?}",
                v - 1
            );
        }
    }
    let mut named = std::collections::BTreeSet::new();
    for v in 0..=latest {
        let Ok(commit) = std::fs::read_to_string(path.join(format!("_delta_log/{v:020}.json")))
        else {
            continue;
        };
        for line in commit.lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(file) = action["cdc"]["path"].as_str() {
                let decoded = percent_encoding::percent_decode_str(file)
                    .decode_utf8()
                    .unwrap();
                named.insert(decoded.into_owned());
            }
        }
    }
    let mut stack = vec![path.join("_change_data")];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let file = entry.unwrap().path();
            if file.is_dir() {
                stack.push(file);
            } else {
                let relative = file
                    .strip_prefix(path)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                assert!(
                    named.contains(&relative),
                    "{relative} is in no cdc action: {named:?}"
                );
            }
        }
    }
    feed_rows
}

pub fn batch_rows(batch: &RecordBatch) -> Vec<BTreeMap<String, String>> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|i| {
            schema
                .fields()
                .iter()
                .enumerate()
                .map(|(c, f)| {
                    let col = batch.column(c);
                    let v = if col.is_null(i) {
                        "<null>".to_string()
                    } else if f.name() == "eff_start_date" {
                        let days = col.as_primitive::<Date32Type>().value(i);
                        (NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
                            + chrono::Duration::days(days as i64))
                        .to_string()
                    } else {
                        array_value_to_string(col, i).unwrap()
                    };
                    (f.name().clone(), v)
                })
                .collect()
        })
        .collect()
}

/// The rows of one Parquet data file (a path from [`data_files`]), as [`batch_rows`] gives them.
pub fn file_rows(path: &str) -> Vec<BTreeMap<String, String>> {
    let file = std::fs::File::open(path).unwrap();
    deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .flat_map(|b| batch_rows(&b.unwrap()))
        .collect()
}

/// Count of rows per (operation) in a table.
pub fn op_counts(rows: &[BTreeMap<String, String>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r["operation"].clone()).or_default() += 1;
    }
    out
}

pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The row with `col == value`.
pub fn find<'a>(
    rows: &'a [BTreeMap<String, String>],
    col: &str,
    value: &str,
) -> Vec<&'a BTreeMap<String, String>> {
    rows.iter().filter(|r| r[col] == value).collect()
}

/// A proptest runner seeded from PROPERTY_TEST_SEED (default `default_seed`) running
/// PROPTEST_CASES cases (default 16); prints both so that a failure can be replayed.
pub fn property_runner(default_seed: u64) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let seed: u64 = std::env::var("PROPERTY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    eprintln!("PROPERTY_TEST_SEED={seed} PROPTEST_CASES={cases}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    )
}

/// The JSON a process (`tributary --json`, a Python reader) printed on stdout; the process
/// must have succeeded (its stderr is shown otherwise).
pub fn json_stdout(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Parquet data files under a table folder (any depth), sorted.
pub fn data_files(table: &std::path::Path) -> Vec<String> {
    let mut found: Vec<String> = walk(table)
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    found.sort();
    found
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path()),
            _ => vec![e.path().display().to_string()],
        })
        .collect()
}

/// The commits of a table's log, in version order, each as its JSON actions (read as files:
/// independent of the code under test).
pub fn log_commits(table: &Path) -> Vec<Vec<serde_json::Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .collect()
}

/// Whether python3 has the `deltalake`, `pyarrow` and `duckdb` packages (the independent
/// readers). When it has not, `test` skips its reader checks with a `SKIPPED` line written
/// straight to stderr (the test harness does not capture it, so a skip shows in the output of
/// `cargo test`), unless TRIBUTARY_REQUIRE_READERS is set (by .ci/run, which installs them):
/// then it fails.
pub fn python_readers(test: &str) -> bool {
    python_has(test, &["deltalake", "pyarrow", "duckdb"])
}

/// Whether python3 can import every one of `modules`; the skip and the CI rule of
/// [`python_readers`].
pub fn python_has(test: &str, modules: &[&str]) -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    let list = modules.join(" ");
    assert!(
        std::env::var("TRIBUTARY_REQUIRE_READERS").is_err(),
        "python3 with {list} is required (TRIBUTARY_REQUIRE_READERS is set)"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: python3 lacks one of {list} (pip install {list})"
    );
    false
}

/// The binary under test, run in `dir` with `args`: stdout and stderr are pipes (not a
/// terminal), RUST_LOG and NO_COLOR unset. Callers add environment and run it.
pub fn tributary_command(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .args(args);
    command
}

/// Runs `command` with `input` on its stdin (closed after it).
pub fn output_with_stdin(mut command: std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The lines of `tributary sql SOURCE --format csv -e QUERY` run in `dir` (header first),
/// which must succeed; `source` names the tables (`--config FILE`, `--lake ROOT`).
pub fn sql_csv(dir: &Path, source: &[&str], query: &str) -> Vec<String> {
    let mut args = vec!["sql"];
    args.extend_from_slice(source);
    args.extend_from_slice(&["--format", "csv", "-e", query]);
    let out = tributary_command(dir, &args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs the binary in `dir` with `args` ([`tributary_command`]); it must exit 0: its stdout.
pub fn tributary_ok(dir: &Path, args: &[&str]) -> String {
    let out = tributary_command(dir, args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Live files of the Delta table at `path` that carry a deletion vector, and whether its
/// protocol lists the `deletionVectors` reader feature.
pub async fn deletion_vectors_of(path: &std::path::Path) -> (usize, bool) {
    let url = url::Url::from_directory_path(path).unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    let snapshot = table.snapshot().unwrap();
    let marked = snapshot
        .log_data()
        .iter()
        .filter(|f| f.deletion_vector_descriptor().is_some())
        .count();
    let listed = snapshot
        .snapshot()
        .protocol()
        .reader_features()
        .is_some_and(|f| f.iter().any(|f| f.to_string() == "deletionVectors"));
    (marked, listed)
}
