//! The Delta change data feed of the current table (`change_data_feed: true`), beyond the
//! property tests that replay it (`model`, `sync_model`): edge cases of the comparison that
//! writes it.

use crate::common::{assert_feed_replays, sql_csv, Fixture, SIMPLE_COLUMNS};

/// A run that rewrites current but changes no row (the same full extract a third time: every
/// row was `N` and stays `N`) commits one empty change file: the feed of that version is empty,
/// not every row deleted and inserted again.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_changes_no_row_has_an_empty_feed() {
    let fx = Fixture::new(SIMPLE_COLUMNS, "change_data_feed: true");
    for (d, date) in ["2024-01-01", "2024-01-02", "2024-01-03"]
        .iter()
        .enumerate()
    {
        let input = fx.input(&format!("d{d}"), "a.csv", b"a,1\nb,2\n");
        fx.run(&input, date).await.unwrap();
    }
    assert_eq!(
        sql_csv(
            fx.dir.path(),
            &["--config", "config.yaml"],
            "SELECT _commit_version AS v, _change_type AS c, count(*) AS n \
             FROM table_changes('t', 1) GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        [
            "v,c,n",
            "1,insert,2",
            "2,update_postimage,2",
            "2,update_preimage,2"
        ]
    );
    let rows = assert_feed_replays(&fx.table_path("current"), 1).await;
    assert_eq!(rows, 6);
}

/// A run with the smallest `memory_limit` (16 MiB) over tables larger than that: the
/// comparison runs in its floor (`change_feed::MIN_POOL_BYTES`; below it DataFusion's sorts
/// failed with "Not enough memory to continue external sort"), and the feed replays each
/// version.
#[tokio::test(flavor = "multi_thread")]
async fn the_feed_of_a_table_larger_than_memory_limit_is_exact() {
    let fx = Fixture::new(
        SIMPLE_COLUMNS,
        "change_data_feed: true\nmemory_limit: 16MiB\nmax_delete_fraction: 1.0",
    );
    let day = |d: u32| -> String {
        (0..100_000u32)
            .filter(|i| !(i + d).is_multiple_of(7))
            .map(|i| {
                format!(
                    "key-{i:08}-{},{}\n",
                    "x".repeat(40),
                    if (i + d).is_multiple_of(5) { d } else { 0 }
                )
            })
            .collect()
    };
    for d in 1..=3u32 {
        let input = fx.input(&format!("d{d}"), "a.csv", day(d).as_bytes());
        fx.run(&input, &format!("2024-01-0{d}")).await.unwrap();
    }
    let rows = assert_feed_replays(&fx.table_path("current"), 1).await;
    assert!(rows > 150_000, "{rows} change rows");
}
