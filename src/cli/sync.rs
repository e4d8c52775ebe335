//! `tributary sync LANDING_ROOT --lake LAKE`: load a landing zone of change files into lake
//! tables, once or every `--watch` interval.

use std::path::PathBuf;

use super::{parse_date, print_json};
use crate::changelog::sync::{sync, SyncOptions, SyncSummary};
use crate::error::{Error, Result};

/// Exit code of a sync pass in which some tables failed.
pub const EXIT_SOME_TABLES_FAILED: u8 = 5;

/// Arguments of `tributary sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Landing root: one folder per <schema>/<table>; a local folder, or an object-store prefix
    /// (s3://bucket/landing, with --tables).
    pub landing_root: PathBuf,
    /// Lake root, a folder or an object-store prefix (s3://bucket/lake): tables go to
    /// <lake>/<schema>/<table>/{current,history,applied}.
    #[arg(long)]
    pub lake: String,
    /// Tables file (default <landing_root>/tables.yaml); see `tributary tables`.
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Tables loaded at the same time.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Business date for changes without a commit time (default: today, UTC).
    #[arg(long)]
    pub date: Option<String>,
    /// Keep syncing every INTERVAL (e.g. 30s, 5m, 1h) until interrupted.
    #[arg(long)]
    pub watch: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Folder for the copies of an object-store landing zone's files read by a pass, and for
    /// the changes a run spills (default: the system temporary folder, TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Memory for the pass's changes (`512MiB`, `2GiB`), shared by the tables loaded at the
    /// same time: a full load of over 64 MiB of changes (or half a table's share, if less)
    /// streams to the writers as it is read (its keys checked distinct at its end; read again
    /// taking the last change per key when they are not); any other run whose changes take
    /// over half a table's share is split by key (in read order for an append or a table
    /// without a key) and spilled to --spill-dir; a merge's files that hold a changed key are
    /// still read once.
    #[arg(long, default_value = "1GiB")]
    pub memory_limit: String,
}

/// Parses an interval: seconds, or a number with `s`, `m` or `h`.
///
/// # Errors
/// [`Error::Usage`] naming the text.
pub fn parse_interval(text: &str) -> Result<std::time::Duration> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&text[..i], &text[i..]),
        None => (text, "s"),
    };
    let factor = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(Error::Usage(format!(
                "--watch `{text}`: use seconds, or 30s, 5m, 1h"
            )))
        }
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .and_then(|n| std::time::Duration::try_from_secs_f64(n * factor).ok())
        .ok_or_else(|| Error::Usage(format!("--watch `{text}`: use seconds, or 30s, 5m, 1h")))
}

fn print_sync(summary: &SyncSummary) {
    for t in &summary.tables {
        println!("{:<32} {:<10} {}", t.table, t.status, t.message);
        if let Some(error) = t.catalog.as_ref().and_then(|c| c.error.as_ref()) {
            println!("{:<32} {:<10} {error}", "", "catalog");
        }
    }
    if !summary.inactive.is_empty() {
        println!(
            "not active (enable with `tributary tables --activate`): {}",
            summary.inactive.join(", ")
        );
    }
    if !summary.missing.is_empty() {
        println!(
            "active but no landing folder: {}",
            summary.missing.join(", ")
        );
    }
    println!(
        "{} tables, {} failed, {:.2} s",
        summary.tables.len(),
        summary.failed,
        summary.elapsed_secs
    );
}

/// Runs `tributary sync`: one pass, or passes every `--watch` interval until interrupted
/// (a pass that fails as a whole is reported and retried). Returns
/// [`EXIT_SOME_TABLES_FAILED`] when a single pass had failed tables.
///
/// # Errors
/// Bad arguments; errors of a single pass that concern the whole pass.
pub async fn execute(args: SyncArgs) -> Result<u8> {
    let run_date = match args.date {
        Some(d) => parse_date("--date", &d)?,
        None => chrono::Utc::now().date_naive(),
    };
    let interval = args.watch.as_deref().map(parse_interval).transpose()?;
    let remote = crate::changelog::sync::landing_url(&args.landing_root)?.is_some();
    if remote && args.tables.is_none() {
        return Err(Error::Usage(format!(
            "{}: a landing zone in an object store needs --tables FILE (a local tables file)",
            args.landing_root.display()
        )));
    }
    let options = SyncOptions {
        tables_file: args
            .tables
            .unwrap_or_else(|| args.landing_root.join("tables.yaml")),
        landing: args.landing_root,
        lake: crate::config::storage::LakeRoot::parse(&args.lake)?,
        jobs: args.jobs,
        run_date,
        progress: !args.json,
        spill_dir: args.spill_dir,
        memory_limit: super::parse_memory_limit(&args.memory_limit)?,
    };
    loop {
        let pass = sync(&options).await;
        let Some(interval) = interval else {
            let summary = pass?;
            if args.json {
                print_json(&summary)?;
            } else {
                print_sync(&summary);
            }
            return Ok(if summary.failed > 0 {
                EXIT_SOME_TABLES_FAILED
            } else if summary.catalog_failed > 0 {
                crate::sink::catalog::EXIT_CATALOG_FAILED
            } else {
                0
            });
        };
        // Watching: a pass that fails as a whole (a bad edit of the tables file) is
        // reported and retried at the next interval.
        match pass {
            Ok(summary) if args.json => print_json(&summary)?,
            Ok(summary) => print_sync(&summary),
            Err(e) => eprintln!("{}  retrying in {interval:?}", super::logs::error_text(&e)),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}
