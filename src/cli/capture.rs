//! `tributary capture postgres://USER@HOST:PORT/DB --lake LAKE`: land a PostgreSQL replication
//! slot in lake tables (see `changelog::capture` and docs/capture.md).

use std::path::PathBuf;

use pg_walstream::CancellationToken;

use super::print_json;
use super::sync::{parse_interval, EXIT_SOME_TABLES_FAILED};
use crate::changelog::capture::{capture, CaptureOptions, CaptureSummary};
use crate::error::{Error, Result};

/// Arguments of `tributary capture`.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// The database: postgres://USER[:PASSWORD]@HOST:PORT/DATABASE (never printed).
    pub url: String,
    /// Lake root, a folder or an object-store prefix (s3://bucket/lake): tables go to
    /// <lake>/<schema>/<table>/{current,history,tombstones}.
    #[arg(long)]
    pub lake: String,
    /// Tables file (sync's format): partition_by, delete_mode, eff_start per <schema>/<table>;
    /// its active entries make the publication when it does not exist.
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Publication to read.
    #[arg(long, default_value = "tributary")]
    pub publication: String,
    /// Replication slot (created when absent).
    #[arg(long, default_value = "tributary")]
    pub slot: String,
    /// How often changes are committed to the lake (e.g. 10s, 1m).
    #[arg(long, default_value = "10s")]
    pub commit_interval: String,
    /// Changes buffered (all tables) past which a commit is made before the interval, whatever
    /// their size (see --memory-limit); the initial copy commits in parts past this many rows.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_buffered_changes: u64,
    /// Tables copied at once by the initial copy, each in a side slot's snapshot (a
    /// replication slot and a walsender each while it runs).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub copy_workers: u16,
    /// Memory the buffers and runs stay within, about (`512MiB`, `2GiB`): a commit is made
    /// when the buffered changes take half of it.
    #[arg(long, default_value = "1GiB")]
    pub memory_limit: String,
    /// Drain the slot up to the server's current WAL position, commit, confirm and exit.
    #[arg(long)]
    pub once: bool,
    /// Copy every table again (after the slot was lost or dropped); history records the copy.
    #[arg(long)]
    pub resnapshot: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn print_capture(summary: &CaptureSummary) {
    for t in &summary.tables {
        let detail = match &t.error {
            Some(e) => e.clone(),
            None => format!(
                "{} copied, {} changes: {} inserted, {} updated, {} deleted in {} runs; at LSN {}",
                t.copied_rows,
                t.changes,
                t.inserted,
                t.updated,
                t.deleted,
                t.runs,
                t.lsn.as_deref().unwrap_or("-")
            ),
        };
        let detail = match t.columns_added.is_empty() {
            true => detail,
            false => format!("{detail}; columns added: {}", t.columns_added.join(", ")),
        };
        println!("{:<32} {:<10} {}", t.table, t.status, detail);
        if let Some(error) = t.catalog.as_ref().and_then(|c| c.error.as_ref()) {
            println!("{:<32} {:<10} {error}", "", "catalog");
        }
    }
    let lag = match (summary.lag.p50_secs, summary.lag.p99_secs) {
        (Some(p50), Some(p99)) => format!(", lag p50 {p50:.2} s, p99 {p99:.2} s"),
        _ => String::new(),
    };
    println!(
        "{} tables, {} failed, {} transactions, confirmed LSN {}{lag}, {:.2} s",
        summary.tables.len(),
        summary.failed,
        summary.transactions,
        summary.confirmed_lsn.as_deref().unwrap_or("-"),
        summary.elapsed_secs
    );
}

/// Runs `tributary capture`. Returns [`EXIT_SOME_TABLES_FAILED`] when some tables failed.
///
/// # Errors
/// Bad arguments ([`Error::Usage`]), set-up and source errors (see `changelog::capture`).
pub async fn execute(args: CaptureArgs) -> Result<u8> {
    let commit_interval = parse_interval(&args.commit_interval).map_err(|_| {
        Error::Usage(format!(
            "--commit-interval `{}`: use seconds, or 10s, 1m",
            args.commit_interval
        ))
    })?;
    if !(args.url.starts_with("postgres://") || args.url.starts_with("postgresql://")) {
        return Err(Error::Usage(
            "the database is a URL: postgres://USER@HOST:PORT/DATABASE".into(),
        ));
    }
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let max = crate::source::postgres::MAX_SLOT_NAME;
    if args.slot.is_empty() || args.slot.len() > max || !args.slot.chars().all(valid) {
        return Err(Error::Usage(format!(
            "--slot `{}`: a slot name is 1 to {max} lower-case letters, digits and underscores",
            args.slot
        )));
    }
    let memory_limit = super::parse_memory_limit(&args.memory_limit)?;
    let options = CaptureOptions {
        url: args.url,
        lake: crate::config::storage::LakeRoot::parse(&args.lake)?,
        tables_file: args.tables,
        publication: args.publication,
        slot: args.slot,
        commit_interval,
        once: args.once,
        resnapshot: args.resnapshot,
        max_buffered: args.max_buffered_changes.max(1),
        copy_workers: usize::from(args.copy_workers),
        memory_limit,
        progress: !args.json,
    };
    let stop = CancellationToken::new();
    let signals = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            for signal in 0..2 {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async {
                        match terminate.as_mut() {
                            Some(s) => { s.recv().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => {}
                }
                if signal == 0 {
                    tracing::info!(
                        "stopping: committing what is buffered (signal again to stop at once)"
                    );
                    stop.cancel();
                }
            }
            // a second signal stops at once: the lake keeps its last commit, the slot resends
            eprintln!("stopped before the last commit; the next start resumes from the lake");
            std::process::exit(130);
        })
    };
    let summary = capture(&options, stop).await;
    signals.abort();
    let summary = summary?;
    if args.json {
        print_json(&summary)?;
    } else {
        print_capture(&summary);
    }
    Ok(if summary.failed > 0 {
        EXIT_SOME_TABLES_FAILED
    } else if summary.catalog_failed > 0 {
        crate::sink::catalog::EXIT_CATALOG_FAILED
    } else {
        0
    })
}
