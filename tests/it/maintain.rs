//! `tributary optimize` and `tributary vacuum` on real lakes: a compaction changes no row of
//! any table, query or later run (each lake is compared with the same runs made without it),
//! survives a crash between its commits, and vacuum deletes only what no version within the
//! retention needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{data_files, json_stdout, sql_csv, table_rows, tributary_command, Fixture};
use crate::concurrency::ORDERS;
use deltalake::operations::vacuum::VacuumMode;

/// One sync pass of the lake, without `--json`.
const SYNC: [&str; 6] = ["sync", "landing", "--lake", "lake", "--date", "2024-02-01"];

type Row = BTreeMap<String, String>;

/// A landing zone and its lake, synced through the binary.
struct SyncLake {
    dir: tempfile::TempDir,
}

impl SyncLake {
    fn new() -> SyncLake {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("landing")).unwrap();
        std::fs::write(dir.path().join("landing/tables.yaml"), ORDERS).unwrap();
        SyncLake { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn table(&self, role: &str) -> PathBuf {
        self.path("lake/sales/orders").join(role)
    }

    fn deliver(&self, name: &str, text: &str) {
        std::fs::write(self.path("landing/sales/orders").join(name), text).unwrap_or_else(|_| {
            std::fs::create_dir_all(self.path("landing/sales/orders")).unwrap();
            std::fs::write(self.path("landing/sales/orders").join(name), text).unwrap()
        });
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        tributary_command(self.dir.path(), args)
    }

    fn sync(&self) -> serde_json::Value {
        let args = [
            "sync",
            "landing",
            "--lake",
            "lake",
            "--date",
            "2024-02-01",
            "--json",
        ];
        let json = json_stdout(&self.command(&args).output().unwrap());
        assert_eq!(json["tables"][0]["status"], "applied", "{json}");
        json
    }

    fn optimize(&self) -> Output {
        self.command(&["optimize", "--lake", "lake", "--json"])
            .output()
            .unwrap()
    }

    fn sql(&self, query: &str) -> Vec<String> {
        sql_csv(self.dir.path(), &["--lake", "lake"], query)
    }

    /// Runs `args`, aborted by the crash hook right after its history commit.
    fn killed_after_history_commit(&self, args: &[&str]) {
        let killed = self
            .command(args)
            .env("TRIBUTARY_CRASH_AT", "after-history-commit")
            .output()
            .unwrap();
        assert!(!killed.status.success(), "the crash hook aborts");
    }

    /// delta-rs's own vacuum of current with no retention, as another engine would run it.
    /// Returns the table after it, its version before, and the files deleted.
    async fn vacuum_current(&self, mode: VacuumMode) -> (deltalake::DeltaTable, u64, usize) {
        let url = url::Url::from_directory_path(self.table("current")).unwrap();
        let table = deltalake::open_table(url).await.unwrap();
        let before = table.version().unwrap();
        let (table, metrics) = table
            .vacuum()
            .with_mode(mode)
            .with_retention_period(chrono::Duration::hours(0))
            .with_enforce_retention_duration(false)
            .await
            .unwrap();
        (table, before, metrics.files_deleted.len())
    }

    /// Rows of a table, sorted (the order of files is not the tables' content); the applied
    /// table without the files' modification times (each lake's own copies) and run numbers
    /// (a compaction takes one).
    async fn rows(&self, role: &str) -> Vec<Row> {
        let mut rows = table_rows(&self.table(role)).await;
        if role == "applied" {
            for row in &mut rows {
                row.remove("modified_ms");
                row.remove("run");
            }
        }
        rows.sort();
        rows
    }
}

/// The full load: ids 1 to 80 in two regions.
fn load() -> String {
    (1..=80)
        .map(|i| format!("{i},{},{}\n", ["east", "west"][i % 2], i * 10))
        .collect()
}

/// Change file `f`: five new keys (a new small current file each run), an update of a loaded
/// key and a delete of another.
fn changes(f: usize) -> String {
    let mut text: String = (0..5)
        .map(|k| {
            let id = 1000 + f * 10 + k;
            format!("I,{id},{},{}\n", ["east", "west"][k % 2], id)
        })
        .collect();
    text.push_str(&format!("U,{f},{},{}\n", ["east", "west"][f % 2], f * 1000));
    text.push_str(&format!("D,{},{},0\n", 40 + f, ["east", "west"][f % 2]));
    text
}

fn change_name(f: usize) -> String {
    format!("20240101-{f:09}.csv")
}

/// Data files a table's latest version references.
fn live_files(table: &Path) -> usize {
    crate::common::log_commits(table)
        .iter()
        .flatten()
        .fold(std::collections::BTreeSet::new(), |mut live, action| {
            if let Some(path) = action["add"]["path"].as_str() {
                live.insert(path.to_string());
            }
            if let Some(path) = action["remove"]["path"].as_str() {
                live.remove(path);
            }
            live
        })
        .len()
}

/// The queries whose answers a compaction must not change.
const QUERIES: [&str; 4] = [
    "SELECT id, region, amount, operation FROM sales.orders ORDER BY id",
    "SELECT id, amount, operation, eff_start_date, eff_end_date, is_current FROM \
     sales.orders_scd2 ORDER BY id, source_position",
    "SELECT id, amount FROM as_of('sales.orders', DATE '2024-02-01') ORDER BY id",
    "SELECT operation, business_date, inserted, updated, deleted, files_added FROM \
     runs('sales.orders') WHERE operation = 'apply' ORDER BY run",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_changes_no_row_no_query_and_no_later_run() {
    // The same files, in the same runs, into two lakes; `compacted` is optimized twice on the
    // way.
    let (compacted, plain) = (SyncLake::new(), SyncLake::new());
    for lake in [&compacted, &plain] {
        lake.deliver("LOAD00000001.csv", &load());
        lake.sync();
    }
    for f in 1..=8 {
        for lake in [&compacted, &plain] {
            lake.deliver(&change_name(f), &changes(f));
            lake.sync();
        }
        if f == 5 {
            let latest =
                compacted.sql("SELECT max(history_version) AS v FROM runs('sales.orders')");
            let latest: u64 = latest[1].parse().unwrap();
            let history_before = live_files(&compacted.table("history"));
            let current_before = live_files(&compacted.table("current"));
            let version_before = compacted.sql("SELECT count(*) AS n FROM sales.orders_history");
            let json = json_stdout(&compacted.optimize());
            let summary = &json[0];
            assert_eq!(summary["status"], "compacted", "{json}");
            assert_eq!(summary["run"], 7, "the next run number: {json}");
            // History: one file per run, all but the last run's rewritten together.
            assert_eq!(history_before, 6, "{json}");
            assert_eq!(live_files(&compacted.table("history")), 2, "{json}");
            assert_eq!(summary["history"]["files_removed"], 5, "{json}");
            // Current: the new keys' files of each region, rewritten per region.
            let current_after = live_files(&compacted.table("current"));
            assert!(
                current_after < current_before,
                "{current_before} -> {current_after}: {json}"
            );
            assert_eq!(current_after as u64, summary["current"]["files_after"]);
            // Time travel to the version before the compaction reads the same rows.
            assert_eq!(
                compacted.sql(&format!(
                    "SELECT count(*) AS n FROM version_as_of('sales.orders_history', {latest})"
                )),
                version_before
            );
            // A compaction adds no change: `changes` across it is what the runs added.
            assert_eq!(
                compacted.sql(&format!(
                    "SELECT count(*) AS n FROM changes('sales.orders', 0, {})",
                    latest + 1
                )),
                version_before
            );
        }
    }
    let json = json_stdout(&compacted.optimize());
    assert_eq!(json[0]["status"], "compacted", "{json}");
    for role in ["current", "history", "applied"] {
        assert_eq!(
            compacted.rows(role).await,
            plain.rows(role).await,
            "{role} equals the lake never compacted"
        );
    }
    for query in QUERIES {
        assert_eq!(compacted.sql(query), plain.sql(query), "{query}");
    }
    let runs = compacted.sql("SELECT run, operation FROM runs('sales.orders') ORDER BY run");
    assert_eq!(runs.len(), 1 + 11, "9 runs and 2 compactions: {runs:?}");
    assert_eq!(runs[7], "7,optimize");
    assert_eq!(runs[11], "11,optimize");
    // Every change file was applied once; the next sync finds nothing new.
    let out = compacted
        .command(&[
            "sync",
            "landing",
            "--lake",
            "lake",
            "--date",
            "2024-02-01",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(json_stdout(&out)["tables"][0]["status"], "up-to-date");
    // Nothing left to compact: a second optimize commits nothing.
    let json = json_stdout(&compacted.optimize());
    assert_eq!(json[0]["status"], "nothing to compact", "{json}");
    // The change data feed (ORDERS enables it) reads through the compactions: they change no
    // row, and each run's feed still replays its version.
    let feed = crate::common::assert_feed_replays(&compacted.table("current"), 1).await;
    let plain_feed = crate::common::assert_feed_replays(&plain.table("current"), 1).await;
    assert_eq!(
        feed, plain_feed,
        "the same change rows as the lake never compacted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_killed_between_its_commits_is_completed_by_the_next_run() {
    let (compacted, plain) = (SyncLake::new(), SyncLake::new());
    for lake in [&compacted, &plain] {
        lake.deliver("LOAD00000001.csv", &load());
        lake.sync();
        for f in 1..=4 {
            lake.deliver(&change_name(f), &changes(f));
            lake.sync();
        }
    }
    compacted.killed_after_history_commit(&["optimize", "--lake", "lake"]);
    // History holds the compaction (run 6), current does not yet.
    let runs = compacted.sql("SELECT run, operation FROM runs('sales.orders') ORDER BY run");
    assert_eq!(runs.last().unwrap(), "6,optimize", "{runs:?}");
    let current_files = live_files(&compacted.table("current"));
    for lake in [&compacted, &plain] {
        lake.deliver(&change_name(5), &changes(5));
        let json = lake.sync();
        assert_eq!(json["tables"][0]["status"], "applied");
    }
    // The sync completed the compaction's current commit (run 6) before its own run.
    let optimized: Vec<i64> = crate::common::log_commits(&compacted.table("current"))
        .iter()
        .flatten()
        .filter(|a| a["commitInfo"]["operation"] == "OPTIMIZE")
        .filter_map(|a| a["commitInfo"]["tributary"]["seq"].as_i64())
        .collect();
    assert_eq!(optimized, [6]);
    assert!(
        live_files(&compacted.table("current")) < current_files + 2,
        "the completed compaction's files replaced the small ones"
    );
    for role in ["current", "history", "applied"] {
        assert_eq!(
            compacted.rows(role).await,
            plain.rows(role).await,
            "{role} equals the lake never compacted"
        );
    }
}

/// Three snapshot days and one applied late (`--force`), so that history's day 1 holds two
/// files: a compaction between them, then a re-run of the last day (a no-op) and its
/// replacement (`--replace`), equal the same runs without the compaction.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_table_compacted_still_re_runs_and_replaces_its_last_day() {
    use tributary::snapshot::RunOptions;
    let columns = crate::common::SIMPLE_COLUMNS;
    let (compacted, plain) = (Fixture::new(columns, ""), Fixture::new(columns, ""));
    let force = RunOptions {
        force: true,
        ..Default::default()
    };
    let replace = RunOptions {
        replace: true,
        ..Default::default()
    };
    for fx in [&compacted, &plain] {
        fx.run(&fx.input("d1", "a.csv", b"a,1\nb,2\n"), "2024-01-01")
            .await
            .unwrap();
        fx.run(&fx.input("d2", "a.csv", b"a,1\nb,3\n"), "2024-01-02")
            .await
            .unwrap();
        // Day 1 again, late: a second file in history's 2024-01-01 partition.
        fx.run_with(
            &fx.input("d1b", "a.csv", b"a,1\nc,9\n"),
            "2024-01-01",
            force,
        )
        .await
        .unwrap();
        fx.run(&fx.input("d3", "a.csv", b"a,2\nc,9\n"), "2024-01-03")
            .await
            .unwrap();
    }
    let out = tributary_command(
        compacted.dir.path(),
        &["optimize", "--config", "config.yaml", "--json"],
    )
    .output()
    .unwrap();
    let json = json_stdout(&out);
    assert_eq!(json[0]["status"], "compacted", "{json}");
    // Day 1's files (the late run's two among them); day 3's, the last run's, are kept.
    assert!(
        json[0]["history"]["files_removed"].as_u64() >= Some(2),
        "{json}"
    );
    assert_eq!(json[0]["history"]["files_added"], 1, "{json}");
    for fx in [&compacted, &plain] {
        let d3 = fx.input("d3", "a.csv", b"a,2\nc,9\n");
        assert_eq!(fx.run(&d3, "2024-01-03").await.unwrap().status, "no-op");
        let d3b = fx.input("d3b", "a.csv", b"a,7\nd,1\n");
        let replaced = fx.run_with(&d3b, "2024-01-03", replace).await.unwrap();
        assert_eq!(replaced.status, "applied");
    }
    for role in ["current", "history"] {
        let mut left = compacted.rows(role).await;
        let mut right = plain.rows(role).await;
        left.sort();
        right.sort();
        assert_eq!(left, right, "{role} equals the table never compacted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vacuum_lists_by_default_and_deletes_only_what_no_version_needs() {
    let lake = SyncLake::new();
    lake.deliver("LOAD00000001.csv", &load());
    lake.sync();
    for f in 1..=3 {
        lake.deliver(&change_name(f), &changes(f));
        lake.sync();
    }
    assert!(lake.optimize().status.success());
    let on_disk = |role: &str| {
        let files = data_files(&lake.table(role));
        files.iter().filter(|f| !f.contains("_delta_log")).count()
    };
    let before: Vec<usize> = ["current", "history"].iter().map(|r| on_disk(r)).collect();
    let rows: Vec<Vec<Row>> = vec![lake.rows("current").await, lake.rows("history").await];

    // Below the table's retention (7 days) without --force: refused, exit 3.
    let refused = lake
        .command(&["vacuum", "--lake", "lake", "--retain", "0h"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--force") && !stderr.contains("panick"),
        "{stderr}"
    );

    // A dry run lists the files each table no longer references, and deletes none.
    let args = [
        "vacuum", "--lake", "lake", "--retain", "0h", "--force", "--json",
    ];
    let dry = json_stdout(&lake.command(&args).output().unwrap());
    let listed = |json: &serde_json::Value, role: &str| -> usize {
        json[0]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == role)
            .map_or(0, |t| t["files"].as_array().unwrap().len())
    };
    for (i, role) in ["current", "history"].iter().enumerate() {
        let unreferenced = before[i] - live_files(&lake.table(role));
        assert!(
            unreferenced > 0,
            "{role}: the runs and the compaction removed files"
        );
        assert_eq!(listed(&dry, role), unreferenced, "{role}: {dry}");
        assert_eq!(
            on_disk(role),
            before[i],
            "{role}: a dry run deletes nothing"
        );
    }
    // The default retention keeps everything this young.
    let kept = json_stdout(
        &lake
            .command(&["vacuum", "--lake", "lake", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(listed(&kept, "history"), 0, "{kept}");

    let args = [
        "vacuum", "--lake", "lake", "--retain", "0h", "--force", "--delete",
    ];
    let out = lake.command(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for role in ["current", "history"] {
        assert_eq!(on_disk(role), live_files(&lake.table(role)), "{role}");
    }
    assert_eq!(
        vec![lake.rows("current").await, lake.rows("history").await],
        rows,
        "the tables read the same"
    );
    // The next run builds on the vacuumed tables.
    lake.deliver(&change_name(4), &changes(4));
    lake.sync();
}

/// A history file shared with current is a name of its own: vacuuming current's old files
/// leaves history whole; the current version the newest run read is kept for `--replace`.
#[tokio::test(flavor = "multi_thread")]
async fn vacuum_of_current_leaves_the_history_files_it_shared() {
    use tributary::snapshot::RunOptions;
    let fx = Fixture::every_operation().await;
    // The file day 1's run added to current (version 1), removed by day 2's.
    let day1_file = crate::common::log_commits(&fx.table_path("current"))[1]
        .iter()
        .find_map(|a| a["add"]["path"].as_str())
        .map(|p| fx.table_path("current").join(p).display().to_string())
        .unwrap();
    assert!(data_files(&fx.table_path("current")).contains(&day1_file));
    let d3 = fx.input("d3", "a.csv", b"a,1\nb,5\nd,4\ne,6\n");
    fx.run(&d3, "2024-01-03").await.unwrap();
    let before = data_files(&fx.table_path("current"));
    let args = [
        "vacuum",
        "--config",
        "config.yaml",
        "--retain",
        "0h",
        "--force",
        "--delete",
    ];
    let out = tributary_command(fx.dir.path(), &args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = data_files(&fx.table_path("current"));
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert!(
        !after.contains(&day1_file),
        "day 1's current file is deleted"
    );
    assert_eq!(
        fx.rows("history").await.len(),
        7,
        "3 inserts; U, D and I; I"
    );
    // Day 3 replaced: it reads current as day 2 left it, which vacuum kept.
    let d3b = fx.input("d3b", "a.csv", b"a,2\nb,5\nd,4\n");
    let replace = RunOptions {
        replace: true,
        ..Default::default()
    };
    let replaced = fx.run_with(&d3b, "2024-01-03", replace).await.unwrap();
    assert_eq!(replaced.status, "applied");
    let mut current: Vec<String> = fx
        .rows("current")
        .await
        .iter()
        .map(|r| format!("{}={}:{}", r["id"], r["v"], r["operation"]))
        .collect();
    current.sort();
    assert_eq!(current, ["a=2.0:U", "b=5.0:N", "d=4.0:N"]);
}

/// Commits that touch no file (another engine's `VACUUM START`/`END`) between a run's history
/// and current commits leave the run completable.
#[tokio::test(flavor = "multi_thread")]
async fn a_vacuum_commit_between_a_runs_two_commits_does_not_strand_it() {
    let (lake, plain) = (SyncLake::new(), SyncLake::new());
    for l in [&lake, &plain] {
        l.deliver("LOAD00000001.csv", &load());
        l.sync();
        // Run 2 replaces current files: tombstones for a vacuum to expire.
        l.deliver(&change_name(1), &changes(1));
        l.sync();
        l.deliver(&change_name(2), &changes(2));
    }
    plain.sync();
    lake.killed_after_history_commit(&SYNC);
    // Lite mode (removed files only): two commits of commit info only.
    let (table, before, deleted) = lake.vacuum_current(VacuumMode::Lite).await;
    assert!(deleted > 0);
    assert_eq!(table.version().unwrap(), before + 2, "VACUUM START and END");
    for l in [&lake, &plain] {
        l.deliver(&change_name(3), &changes(3));
        l.sync();
    }
    for role in ["current", "history", "applied"] {
        assert_eq!(lake.rows(role).await, plain.rows(role).await, "{role}");
    }
}

/// A full vacuum by another engine between a run's two commits deletes the run's pending files
/// (no version references them yet): the next run stops with a clear error instead of
/// committing references to files that are gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_pending_files_were_vacuumed_is_not_completed() {
    let lake = SyncLake::new();
    lake.deliver("LOAD00000001.csv", &load());
    lake.sync();
    lake.deliver(&change_name(1), &changes(1));
    lake.killed_after_history_commit(&SYNC);
    let (_, _, deleted) = lake.vacuum_current(VacuumMode::Full).await;
    assert!(deleted > 0, "the run's current files");
    let rows = lake.rows("current").await;
    let out = lake.command(&SYNC).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "the table failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot be completed") && stderr.contains("is gone"),
        "{stderr}"
    );
    assert_eq!(
        lake.rows("current").await,
        rows,
        "current is left as it was"
    );
}
