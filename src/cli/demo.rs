//! `tributary demo`: the seed article's example end to end (10,000 rows, 5 keys, 10 non-keys,
//! 20% deleted / 40% updated / 40% unchanged), run for 2019-06-18 and 2019-06-19.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::config::TableConfig;
use crate::error::Result;
use crate::generate::{config_yaml, generate, GenerateSpec, GenerateSummary};
use crate::snapshot::summary::RunSummary;
use crate::snapshot::{run, RunOptions};

/// Arguments of `tributary demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder for the data, config and lake (default ./tributary-demo).
    pub dir: Option<PathBuf>,
}

/// Runs `tributary demo` and prints what it did.
///
/// # Errors
/// Those of [`demo`].
pub async fn execute(args: DemoArgs) -> Result<u8> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("tributary-demo"));
    let (generated, summaries) = demo(&dir).await?;
    println!(
        "generated {} rows (day 2: {} deleted, {} updated, {} unchanged, {} inserted) under {}\n",
        generated.initial_rows,
        generated.deleted,
        generated.updated,
        generated.unchanged,
        generated.inserted,
        dir.join("data").display()
    );
    for s in &summaries {
        println!("{s}\n");
    }
    println!(
        "tables: {}/lake (Delta Lake; config {}/config.yaml)",
        dir.display(),
        dir.display()
    );
    println!(
        "query:  python3 -c \"import duckdb; print(duckdb.sql(\\\"select operation, count(*) from delta_scan('{}/lake/sample_data_history') group by 1\\\"))\"",
        std::path::absolute(&dir).unwrap_or(dir.clone()).display()
    );
    Ok(0)
}

/// Business dates of the two demo days.
pub const DEMO_DATES: [&str; 2] = ["2019-06-18", "2019-06-19"];

/// Generates the demo data and config under `dir` (idempotent: the same seed gives the same
/// files, so a second demo is a no-op run) and runs both days.
///
/// # Errors
/// Any error of [`generate`] or [`run`].
pub async fn demo(dir: &Path) -> Result<(GenerateSummary, Vec<RunSummary>)> {
    let spec = GenerateSpec::seed_example(dir.join("data/day1"), dir.join("data/day2"), 20190618);
    let generated = generate(&spec)?;
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config_yaml("sample_data", 5, 10))?;
    let config = TableConfig::load(&config_path)?;
    let mut summaries = Vec::new();
    for (input, date) in [&spec.initial_output, &spec.incremental_output]
        .into_iter()
        .zip(DEMO_DATES)
    {
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|e| crate::Error::Internal(e.to_string()))?;
        summaries.push(run(&config, input, date, RunOptions::default()).await?);
    }
    Ok((generated, summaries))
}
