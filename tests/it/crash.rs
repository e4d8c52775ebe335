//! Crashes (abort or SIGKILL) between or during commits never leave a half-applied day: the
//! next run completes or discards it, and the tables end up as an uninterrupted run leaves them.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::{data_files, json_stdout as json, Fixture, SIMPLE_COLUMNS};

fn tributary(fx: &Fixture, input: &Path, date: &str, crash_at: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args([
        "run",
        fx.config_path.to_str().unwrap(),
        input.to_str().unwrap(),
        date,
        "--json",
    ]);
    if let Some(point) = crash_at {
        cmd.env("TRIBUTARY_CRASH_AT", point);
    }
    cmd.output().unwrap()
}

/// Day `d` of a small changing table: keys drop out, come back and change value over the days.
fn day_csv(d: u32) -> String {
    (0..300u32)
        .filter(|i| !(i * 7 + d).is_multiple_of(10))
        .map(|i| format!("k{i},{}\n", if (i + d).is_multiple_of(3) { d } else { 0 }))
        .collect()
}

/// Writes day `d`'s input into `fx` and returns its folder and business date.
fn day(fx: &Fixture, d: u32) -> (std::path::PathBuf, String) {
    (
        fx.input(&format!("d{d}"), "a.csv", day_csv(d).as_bytes()),
        format!("2024-01-{d:02}"),
    )
}

/// Runs day `d` to completion.
fn apply_day(fx: &Fixture, d: u32) -> serde_json::Value {
    let (input, date) = day(fx, d);
    json(&tributary(fx, &input, &date, None))
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_between_the_commits_is_completed_by_the_next_run() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    apply_day(&fx, 1);
    let (day2, _) = day(&fx, 2);
    let crashed = tributary(&fx, &day2, "2024-01-02", Some("after-history-commit"));
    assert!(!crashed.status.success());
    assert_eq!(
        (fx.version("history").await, fx.version("current").await),
        (Some(2), Some(1))
    );
    let resumed = json(&tributary(&fx, &day2, "2024-01-02", None));
    assert_eq!(resumed["recovered"]["completed_run"], 2);
    assert_eq!(
        resumed["status"], "no-op",
        "the completed run is the same day and input"
    );
    assert_eq!(fx.version("current").await, Some(2));

    let reference = Fixture::new(SIMPLE_COLUMNS, "");
    apply_day(&reference, 1);
    apply_day(&reference, 2);
    assert_same_tables(&fx, &reference).await;
}

/// The change data feed turned on for a table made without it (a metadata commit at the next
/// open), then a crash between the commits: the run completed by the next open commits the
/// change files planned with it, and the feed replays the version.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_completed_after_a_crash_commits_its_change_data() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    apply_day(&fx, 1);
    let config = std::fs::read_to_string(&fx.config_path).unwrap();
    std::fs::write(&fx.config_path, format!("change_data_feed: true\n{config}")).unwrap();
    let (day2, _) = day(&fx, 2);
    let crashed = tributary(&fx, &day2, "2024-01-02", Some("after-history-commit"));
    assert!(!crashed.status.success());
    // current: 0 create, 1 day 1, 2 SET TBLPROPERTIES; day 2 pending in history's commit
    assert_eq!(fx.version("current").await, Some(2));
    let resumed = json(&tributary(&fx, &day2, "2024-01-02", None));
    assert_eq!(resumed["recovered"]["completed_run"], 2);
    assert_eq!(fx.version("current").await, Some(3));
    let log = fx.table_path("current").join("_delta_log");
    let commit = std::fs::read_to_string(log.join(format!("{:020}.json", 3))).unwrap();
    let cdc: Vec<&str> = commit
        .lines()
        .filter(|l| l.starts_with("{\"cdc\""))
        .collect();
    assert!(!cdc.is_empty(), "{commit}");
    for line in cdc {
        let path = serde_json::from_str::<serde_json::Value>(line).unwrap()["cdc"]["path"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(path.starts_with("_change_data/"), "{path}");
        assert!(fx.table_path("current").join(path).exists());
    }
    // day 2 changes about a third of the rows' values, and the feed says which
    let rows = crate::common::assert_feed_replays(&fx.table_path("current"), 3).await;
    assert!(rows > 100, "{rows} change rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_before_any_commit_leaves_the_tables_as_they_were() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    apply_day(&fx, 1);
    let (day2, _) = day(&fx, 2);
    assert!(
        !tributary(&fx, &day2, "2024-01-02", Some("before-history-commit"))
            .status
            .success()
    );
    assert_eq!(
        (fx.version("history").await, fx.version("current").await),
        (Some(1), Some(1))
    );
    let applied = json(&tributary(&fx, &day2, "2024-01-02", None));
    assert_eq!(applied["status"], "applied");
    assert!(applied["recovered"].is_null());
    let history = fx.rows("history").await;
    assert_eq!(
        history
            .iter()
            .filter(|r| r["eff_start_date"] == "2024-01-02")
            .count() as u64,
        applied["counts"]["I"].as_u64().unwrap()
            + applied["counts"]["U"].as_u64().unwrap()
            + applied["counts"]["D"].as_u64().unwrap()
    );
}

/// SIGKILL at random moments of runs over eight days with a checkpoint every two commits; each
/// killed day is re-run to completion. Replay with PROPERTY_TEST_SEED.
#[tokio::test(flavor = "multi_thread")]
async fn random_kills_with_checkpoints_converge_to_the_uninterrupted_tables() {
    let seed: u64 = std::env::var("PROPERTY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20240101);
    eprintln!("PROPERTY_TEST_SEED={seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let fx = Fixture::new(SIMPLE_COLUMNS, "checkpoint_interval: 2");
    let reference = Fixture::new(SIMPLE_COLUMNS, "checkpoint_interval: 2");
    let mut kills = 0;
    for d in 1..=8u32 {
        let (input, date) = day(&fx, d);
        apply_day(&reference, d);
        for _ in 0..2 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
                .args([
                    "run",
                    fx.config_path.to_str().unwrap(),
                    input.to_str().unwrap(),
                    &date,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
            child.wait().unwrap();
        }
        let done = json(&tributary(&fx, &input, &date, None));
        assert!(
            ["applied", "no-op"].contains(&done["status"].as_str().unwrap()),
            "{done}"
        );
    }
    eprintln!("{kills} runs killed");
    assert!(
        fx.table_path("history")
            .join("_delta_log/_last_checkpoint")
            .exists(),
        "checkpoints were written"
    );
    assert_same_tables(&fx, &reference).await;
}

async fn assert_same_tables(a: &Fixture, b: &Fixture) {
    for role in ["current", "history"] {
        let mut left = a.rows(role).await;
        let mut right = b.rows(role).await;
        left.sort();
        right.sort();
        assert_eq!(left.len(), right.len(), "{role} row count");
        assert!(left == right, "{role} differs");
    }
    assert!(
        !a.rows("current").await.is_empty(),
        "the comparison is over real rows"
    );
}

/// A history commit that does not land (here refused: both tables already record the run,
/// committed by a transaction begun beside it) deletes the data files the run wrote, in every
/// table, and leaves the tables as the other run left them.
#[tokio::test(flavor = "multi_thread")]
async fn a_history_commit_that_does_not_land_deletes_the_runs_files() {
    use std::collections::HashMap;
    use tributary::config::Compression;
    use tributary::sink::delta::{self, DeltaLake, RunCommit};
    use tributary::sink::{Sink, TableRole};

    let fx = Fixture::new(SIMPLE_COLUMNS, "");
    apply_day(&fx, 1);
    let tables = [fx.table_path("current"), fx.table_path("history")];
    let before = tables.each_ref().map(|t| data_files(t));
    let config = fx.config();
    let (mut lake, _) = DeltaLake::open(&config.table, false)
        .await
        .unwrap()
        .unwrap();
    let recorded = lake.last_run().await.unwrap().unwrap();
    let schema = tributary::core::schema::table_schema(&config.table.typed_columns());
    let rows: Vec<_> = delta::scan(&lake.current)
        .await
        .unwrap()
        .iter()
        .map(|b| delta::conform(b, &schema, &HashMap::new()).unwrap())
        .collect();
    let properties = delta::writer_properties(Compression::Zstd, 1 << 20, &[]);
    // Two runs begun on the same state take the same sequence number.
    let base = lake.opened_run();
    let mut winner = lake.begin(base, properties.clone(), 1).await.unwrap();
    let mut loser = lake.begin(base, properties, 1).await.unwrap();
    assert_eq!(winner.seq(), recorded.seq + 1);
    assert_eq!(loser.seq(), winner.seq());
    for run in [&mut winner, &mut loser] {
        let tx = run.senders().unwrap().clone();
        for batch in &rows {
            tx.current.send(batch.clone()).await.unwrap();
            tx.history.send(batch.clone()).await.unwrap();
        }
        drop(tx);
        run.finish_writes(Ok(())).await.unwrap();
    }
    let name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let lost: Vec<String> = [TableRole::Current, TableRole::History]
        .iter()
        .flat_map(|role| loser.written(*role).iter().map(|a| name(&a.path)))
        .collect();
    assert!(!lost.is_empty());
    let commit = |lake: &DeltaLake| RunCommit {
        business_date: recorded.business_date.clone(),
        fingerprint: "two runs of one date".into(),
        current_base_version: lake.current.version(),
        current_removes: delta::all_files_removed(&lake.current).unwrap(),
        current_marked: Vec::new(),
        ..Default::default()
    };
    let first = commit(&lake);
    lake.commit(winner, first).await.unwrap();
    let during = tables.each_ref().map(|t| data_files(t));
    assert!(during[0].len() > before[0].len() && during[1].len() > before[1].len());

    let second = commit(&lake);
    let refused = lake.commit(loser, second).await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("already records run"), "{message}");
    let after = tables.each_ref().map(|t| data_files(t));
    for (during, after) in during.iter().zip(&after) {
        let kept: Vec<&String> = during.iter().filter(|p| !lost.contains(&name(p))).collect();
        assert_eq!(after.iter().collect::<Vec<_>>(), kept);
    }
    assert_eq!(
        (fx.version("history").await, fx.version("current").await),
        (Some(2), Some(2))
    );
}
