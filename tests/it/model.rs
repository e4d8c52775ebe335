//! Property test: random multi-day histories against a small in-memory reference model of the
//! snapshot rules (I/U/N/D for full extracts, X for delta extracts, NULL values included).
//! Replay a failure with PROPERTY_TEST_SEED (printed) and PROPTEST_CASES.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::common::{assert_feed_replays, Fixture, SIMPLE_COLUMNS};

type Extract = BTreeMap<u8, Option<u8>>;
type Row = (String, String, String, String); // id, v, operation, eff_start_date

fn date(day: usize) -> String {
    format!("2024-01-{:02}", day + 1)
}

fn shown(v: Option<u8>) -> String {
    v.map_or("<null>".into(), |v| format!("{v}.0"))
}

/// The rules, written as plainly as possible.
fn model(days: &[Extract], full: bool) -> (Vec<Row>, Vec<Row>) {
    let mut state: BTreeMap<u8, (Option<u8>, &str, usize)> = BTreeMap::new();
    let mut history = Vec::new();
    for (d, extract) in days.iter().enumerate() {
        for (&k, &v) in extract {
            let next = match state.get(&k) {
                None => (v, "I", d),
                Some(&(old, _, eff)) if old == v => (v, "N", eff),
                Some(_) => (v, "U", d),
            };
            if next.1 != "N" {
                history.push((format!("k{k}"), shown(v), next.1.to_string(), date(d)));
            }
            state.insert(k, next);
        }
        let gone: Vec<u8> = state
            .keys()
            .filter(|k| !extract.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if full {
                let (v, _, _) = state.remove(&k).unwrap();
                history.push((format!("k{k}"), shown(v), "D".into(), date(d)));
            } else {
                state.get_mut(&k).unwrap().1 = "X";
            }
        }
    }
    let current = state
        .into_iter()
        .map(|(k, (v, op, eff))| (format!("k{k}"), shown(v), op.to_string(), date(eff)))
        .collect();
    (current, history)
}

fn rows(table: Vec<BTreeMap<String, String>>) -> Vec<Row> {
    let mut out: Vec<Row> = table
        .into_iter()
        .map(|r| {
            (
                r["id"].clone(),
                r["v"].clone(),
                r["operation"].clone(),
                r["eff_start_date"].clone(),
            )
        })
        .collect();
    out.sort();
    out
}

fn csv(extract: &Extract) -> String {
    extract
        .iter()
        .map(|(k, v)| format!("k{k},{}\n", v.map(|v| v.to_string()).unwrap_or_default()))
        .collect()
}

#[test]
fn multi_day_runs_match_the_reference_model() {
    let mut runner = crate::common::property_runner(7);
    let extract = proptest::collection::btree_map(0u8..12, proptest::option::of(0u8..3), 0..12);
    // Keyhash partitions: 1 (everything in one join) or several (the grace join's path); none
    // set: later runs are streamed past the in-memory index.
    let strategy = (
        proptest::collection::vec(extract, 1..5),
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(1usize)), Just(Some(3)), Just(Some(8))],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runner
        .run(&strategy, |(days, full, partitions)| {
            let extract_type = if full { "full" } else { "delta" };
            let partitions = partitions.map_or(String::new(), |p| format!("partitions: {p}"));
            let fx = Fixture::new(
                SIMPLE_COLUMNS,
                &format!(
                    "extract_type: {extract_type}\nmax_delete_fraction: 1.0\n{partitions}\n\
                     change_data_feed: true"
                ),
            );
            let (mut expected_current, mut expected_history) = model(&days, full);
            expected_current.sort();
            expected_history.sort();
            runtime.block_on(async {
                for (d, extract) in days.iter().enumerate() {
                    let input = fx.input(&format!("d{d}"), "a.csv", csv(extract).as_bytes());
                    let summary = fx.run(&input, &date(d)).await.unwrap();
                    let streamed = summary.memory.map(|m| m.plan.streamed);
                    prop_assert_eq!(streamed, Some(d > 0 && partitions.is_empty()), "day {}", d);
                }
                prop_assert_eq!(rows(fx.rows("current").await), expected_current);
                prop_assert_eq!(rows(fx.rows("history").await), expected_history);
                // the current table's change data feed replays its versions, one by one
                assert_feed_replays(&fx.table_path("current"), 1).await;
                Ok(())
            })
        })
        .unwrap();
}
