//! Two writers at once: several `tributary run` and `tributary sync` processes on one table.
//!
//! Each test starts processes together, each running a list of jobs back to back, so that
//! their runs race. Afterwards every run number is in the log once, history and current record
//! the same run, every process's outcome is true (applied: its run id is in the log; no-op: the
//! run it names applied that date; refused: the rule or the other run it names is in the log),
//! and the tables equal a serial replay of the runs that applied, in run order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};

use crate::common::{log_commits, table_rows, Fixture, SIMPLE_COLUMNS};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// What one process's job ended with.
#[derive(Debug, Clone)]
struct Outcome {
    date: String,
    code: i32,
    json: Option<serde_json::Value>,
    stderr: String,
}

/// The Tributary entries of a table's log, in version order: (seq, run id, business date).
async fn log_runs(table: &Path) -> Vec<(i64, String, String)> {
    log_commits(table)
        .iter()
        .flatten()
        .filter_map(|action| action["commitInfo"]["tributary"].as_object())
        .map(|entry| {
            (
                entry["seq"].as_i64().unwrap(),
                entry
                    .get("run_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                entry["business_date"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The highest `txn` version a table's log records under `app_id`.
async fn recorded_run(table: &Path, app_id: &str) -> Option<i64> {
    log_commits(table)
        .iter()
        .flatten()
        .filter(|action| action["txn"]["appId"] == app_id)
        .filter_map(|action| action["txn"]["version"].as_i64())
        .max()
}

/// Runs `jobs[p]` in process slot `p`, all slots started together; returns each slot's
/// outcomes in job order.
fn race<J: Send + Clone + 'static>(
    jobs: Vec<Vec<J>>,
    command: impl Fn(&J) -> (String, Command) + Send + Sync + 'static,
) -> Vec<Vec<Outcome>> {
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let command = Arc::new(command);
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|list| {
            let (barrier, command) = (barrier.clone(), command.clone());
            std::thread::spawn(move || {
                barrier.wait();
                list.iter()
                    .map(|job| {
                        let (date, mut cmd) = command(job);
                        let out = cmd.output().unwrap();
                        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                        Outcome {
                            date,
                            code: out.status.code().unwrap_or(-1),
                            json: serde_json::from_str(&stdout).ok(),
                            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Day `k`'s full extract of 60 keys: a seventh of them missing (deleted), values moving.
fn day_input(fx: &Fixture, k: usize) -> PathBuf {
    let rows: String = (0..60)
        .filter(|i| !(i + k).is_multiple_of(7))
        .map(|i| format!("id{i},{}\n", (i * (k + 1)) % 5))
        .collect();
    fx.input(&format!("day{k}"), "part.csv", rows.as_bytes())
}

fn date(k: usize) -> String {
    format!("2024-01-{:02}", k + 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_runs_commit_each_run_once_and_equal_a_serial_replay() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    let inputs: Vec<PathBuf> = (0..5).map(|k| day_input(&fx, k)).collect();
    // 4 processes x 5 runs: first runs racing, the same date twice, dates out of order.
    let jobs = vec![
        vec![0, 1, 2, 3, 4],
        vec![0, 2, 1, 4, 3],
        vec![1, 0, 3, 2, 4],
        vec![0, 0, 4, 1, 2],
    ];
    let config = fx.config_path.clone();
    let days = inputs.clone();
    let outcomes = race(jobs, move |&k| {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg(&config)
            .arg(&days[k])
            .arg(date(k))
            .arg("--json");
        (date(k), cmd)
    });

    let history = log_runs(&fx.table_path("history")).await;
    let seqs: Vec<i64> = history.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "every run number once, in order: {history:?}"
    );
    let app_id = fx.config().table.app_id();
    let last = seqs.last().copied();
    assert_eq!(recorded_run(&fx.table_path("history"), &app_id).await, last);
    assert_eq!(recorded_run(&fx.table_path("current"), &app_id).await, last);

    let by_seq: BTreeMap<i64, (String, String)> = history
        .iter()
        .map(|(s, id, d)| (*s, (id.clone(), d.clone())))
        .collect();
    let applied_dates: BTreeSet<&String> = by_seq.values().map(|(_, d)| d).collect();
    let (mut applied, mut noops, mut refused) = (0, 0, 0);
    for outcome in outcomes.iter().flatten() {
        match (outcome.code, &outcome.json) {
            (0, Some(json)) => {
                let seq = json["run_seq"].as_i64().unwrap();
                let id = json["run_id"].as_str().unwrap_or_default();
                let (logged_id, logged_date) = &by_seq[&seq];
                assert_eq!(logged_date, &outcome.date, "{outcome:?}");
                match json["status"].as_str() {
                    Some("applied") => {
                        applied += 1;
                        assert_eq!(logged_id, id, "an applied run is in the log: {outcome:?}");
                    }
                    Some("no-op") => noops += 1,
                    other => panic!("status {other:?}: {outcome:?}"),
                }
            }
            (3, _) => {
                refused += 1;
                let named = applied_dates
                    .iter()
                    .any(|d| outcome.stderr.contains(d.as_str()));
                assert!(
                    outcome
                        .stderr
                        .contains("older than the latest applied date")
                        && named
                        || outcome.stderr.contains("conflict:"),
                    "a refusal names a rule that holds: {outcome:?}"
                );
            }
            _ => panic!("unexpected outcome {outcome:?}"),
        }
    }
    assert_eq!(
        applied,
        history.len(),
        "each logged run reported applied once: {history:?} {outcomes:#?}"
    );
    assert_eq!(applied + noops + refused, 20);

    // A serial replay of the applied runs, in run order, gives the same tables.
    let replay = Fixture::new(SIMPLE_COLUMNS, "");
    for (seq, (_, day)) in &by_seq {
        let k = (0..5).find(|k| &date(*k) == day).unwrap();
        let input = day_input(&replay, k);
        let s = replay.run(&input, day).await.unwrap();
        assert_eq!((s.status.as_str(), s.run_seq), ("applied", Some(*seq)));
    }
    for role in ["current", "history"] {
        let mut left = fx.rows(role).await;
        let mut right = replay.rows(role).await;
        left.sort();
        right.sort();
        let only_left: Vec<_> = left.iter().filter(|r| !right.contains(r)).collect();
        let only_right: Vec<_> = right.iter().filter(|r| !left.contains(r)).collect();
        assert!(
            left == right,
            "{role} equals the serial replay: only concurrent {only_left:?}, only serial \
             {only_right:?}; runs {history:?}"
        );
    }
}

pub(crate) const ORDERS: &str = "tables:
- source: sales/orders
  active: true
  primary_key: [id]
  partition_by: [region]
  change_data_feed: true
  columns:
  - {name: id, type: long}
  - {name: region, type: string}
  - {name: amount, type: double}
";

/// A DMS landing zone: a full load, then `changes` change files of inserts, updates (some of
/// the partition column) and deletes. Returns (relative path, contents) in delivery order.
pub(crate) fn dms_files(changes: usize) -> Vec<(String, String)> {
    let regions = ["east", "west"];
    let mut files = vec![(
        "sales/orders/LOAD00000001.csv".to_string(),
        (1..=80)
            .map(|i| format!("{i},{},{}\n", regions[i % 2], i * 10))
            .collect::<String>(),
    )];
    for f in 1..=changes {
        let text: String = (0..25)
            .map(|r| {
                let id = (f * 37 + r * 11) % 100 + 1;
                let op = ["I", "U", "U", "D"][(f + r) % 4];
                format!("{op},{id},{},{}\n", regions[(f + r) % 2], f * 100 + r)
            })
            .collect();
        files.push((format!("sales/orders/20240101-{f:09}.csv"), text));
    }
    files
}

/// Writes `rel` under `root` with modification time `secs` (the applied table records it).
pub(crate) fn deliver(root: &Path, rel: &str, text: &str, secs: u64) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

fn sync_command(landing: &Path, lake: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("sync")
        .arg(landing)
        .arg("--lake")
        .arg(lake)
        .args(["--date", "2024-02-01", "--json"]);
    cmd
}

/// A landing zone of `files` (the `ORDERS` tables file) and its lake under `dir`: the load and
/// the first change files are there from the start (first syncs race); a thread delivers the
/// others, one every `pause`, while the syncs run. Returns (landing, lake, the thread).
fn landing_fed(
    dir: &Path,
    files: &[(String, String)],
    pause: std::time::Duration,
) -> (PathBuf, PathBuf, std::thread::JoinHandle<()>) {
    let (landing, lake) = (dir.join("landing"), dir.join("lake"));
    std::fs::create_dir_all(&landing).unwrap();
    std::fs::write(landing.join("tables.yaml"), ORDERS).unwrap();
    for (i, (rel, text)) in files.iter().take(3).enumerate() {
        deliver(&landing, rel, text, 1_700_000_000 + i as u64);
    }
    let feeder = {
        let (landing, files) = (landing.clone(), files.to_vec());
        std::thread::spawn(move || {
            for (i, (rel, text)) in files.iter().enumerate().skip(3) {
                std::thread::sleep(pause);
                deliver(&landing, rel, text, 1_700_000_000 + i as u64);
            }
        })
    };
    (landing, lake, feeder)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_syncs_apply_every_file_once_and_equal_a_serial_replay() {
    let dir = tempfile::tempdir().unwrap();
    let files = dms_files(8);
    let pause = std::time::Duration::from_millis(300);
    let (landing, lake, feeder) = landing_fed(dir.path(), &files, pause);
    let (l, k) = (landing.clone(), lake.clone());
    let outcomes = race(vec![vec![(); 4]; 4], move |_| {
        ("2024-02-01".to_string(), sync_command(&l, &k))
    });
    feeder.join().unwrap();
    // A last sync takes what arrived after the others.
    let last = sync_command(&landing, &lake).output().unwrap();
    assert!(last.status.success());

    for outcome in outcomes.iter().flatten() {
        let json = outcome.json.as_ref().expect("a summary");
        for table in json["tables"].as_array().unwrap() {
            match table["status"].as_str() {
                Some("applied" | "up-to-date") => {}
                _ => assert!(
                    table["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("conflict:"),
                    "only a lost race may fail: {outcome:?}"
                ),
            }
        }
    }
    assert_replays_serially(&files, &lake).await;
}

/// Syncs on `lake` (of `landing`, fed from `files`) ended in a lake where every run number is
/// in the log once, current records the last run and applied the last sync run (a compaction
/// commits neither files nor the applied table), every file was applied once, and current and
/// history equal a serial replay of the same files in the same runs, in run order.
async fn assert_replays_serially(files: &[(String, String)], lake: &Path) {
    let table = lake.join("sales/orders");
    let history = log_runs(&table.join("history")).await;
    let seqs: Vec<i64> = history.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "{history:?}"
    );
    assert_eq!(
        recorded_run(&table.join("current"), "tributary:sales.orders").await,
        seqs.last().copied(),
        "current records the same run as history"
    );
    let applying = log_commits(&table.join("history"))
        .iter()
        .flatten()
        .filter_map(|action| action["commitInfo"]["tributary"].as_object())
        .filter(|entry| entry.get("operation").is_none())
        .filter_map(|entry| entry["seq"].as_i64())
        .max();
    assert_eq!(
        recorded_run(&table.join("applied"), "tributary:sales.orders").await,
        applying,
        "applied records history's last sync run"
    );
    // Every file applied once, none twice.
    let applied = table_rows(&table.join("applied")).await;
    let mut names: Vec<&str> = applied.iter().map(|r| r["file"].as_str()).collect();
    names.sort();
    let mut expected: Vec<String> = files
        .iter()
        .map(|(rel, _)| rel.trim_start_matches("sales/orders/").to_string())
        .collect();
    expected.sort();
    assert_eq!(names, expected);

    // A serial replay: the same files in the same runs (the applied table's `run`), in order.
    let mut runs: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for row in &applied {
        let run: i64 = row["run"].parse().unwrap();
        runs.entry(run).or_default().push(row["file"].clone());
    }
    let replay = tempfile::tempdir().unwrap();
    let (r_landing, r_lake) = (replay.path().join("landing"), replay.path().join("lake"));
    std::fs::create_dir_all(&r_landing).unwrap();
    std::fs::write(r_landing.join("tables.yaml"), ORDERS).unwrap();
    for run_files in runs.values() {
        for name in run_files {
            let i = files
                .iter()
                .position(|(rel, _)| rel.ends_with(name.as_str()))
                .unwrap();
            deliver(
                &r_landing,
                &files[i].0,
                &files[i].1,
                1_700_000_000 + i as u64,
            );
        }
        assert!(sync_command(&r_landing, &r_lake)
            .output()
            .unwrap()
            .status
            .success());
    }
    for role in ["current", "history"] {
        let mut left = table_rows(&table.join(role)).await;
        let mut right = table_rows(&r_lake.join("sales/orders").join(role)).await;
        left.sort();
        right.sort();
        assert_eq!(left.len(), right.len(), "{role} row count");
        assert!(left == right, "{role} equals the serial replay");
    }
    // The change data feed of the raced current table replays each of its versions (runs
    // that lost a race left no change file in the log).
    crate::common::assert_feed_replays(&table.join("current"), 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn syncs_racing_compactions_apply_every_file_once_and_equal_a_serial_replay() {
    let dir = tempfile::tempdir().unwrap();
    let files = dms_files(10);
    let pause = std::time::Duration::from_millis(250);
    let (landing, lake, feeder) = landing_fed(dir.path(), &files, pause);
    // Two processes syncing, one compacting, back to back.
    let jobs = vec![vec![false; 5], vec![false; 5], vec![true; 8]];
    let (l, k) = (landing.clone(), lake.clone());
    let outcomes = race(jobs, move |compact| {
        let command = match compact {
            // Paced, so that runs land between the compactions.
            true => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(r#"sleep 0.5 && exec "$0" optimize --lake "$1" --json"#)
                    .arg(BIN)
                    .arg(&k);
                cmd
            }
            false => sync_command(&l, &k),
        };
        (String::new(), command)
    });
    feeder.join().unwrap();
    let last = sync_command(&landing, &lake).output().unwrap();
    assert!(last.status.success());
    let mut compacted = 0;
    for outcome in outcomes.iter().flatten() {
        match &outcome.json {
            // optimize: a list of tables
            Some(serde_json::Value::Array(tables)) => {
                compacted += tables.iter().filter(|t| t["status"] == "compacted").count();
            }
            Some(json) => {
                for table in json["tables"].as_array().unwrap() {
                    let status = table["status"].as_str().unwrap_or("");
                    let message = table["message"].as_str().unwrap_or("");
                    assert!(
                        matches!(status, "applied" | "up-to-date") || message.contains("conflict:"),
                        "only a lost race may fail: {outcome:?}"
                    );
                }
            }
            // Before the first run made the lake, or a race lost every time: said plainly.
            None => assert!(
                outcome.stderr.contains("cannot list it")
                    || outcome.stderr.contains("no <schema>/<table>")
                    || outcome.stderr.contains("conflict"),
                "{outcome:?}"
            ),
        }
    }
    assert!(compacted > 0, "some compaction landed: {outcomes:?}");
    assert_replays_serially(&files, &lake).await;
}
