//! The `tributary` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tributary::config::TableConfig;
use tributary::generate::{config_yaml, generate, GenerateSpec};
use tributary::run::{run, RunOptions};
use tributary::{Error, Result};

/// Change-data-capture into Delta Lake: snapshot diffs into current and history tables.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Diff an extract against the current table and commit current + history for one business date.
    Run {
        /// Table config (YAML; the seed article's config.yaml works unchanged).
        config: PathBuf,
        /// An extract file, or a folder of *.csv or *.parquet files.
        incoming: PathBuf,
        /// Business effective date, YYYY-MM-DD (eff_start_date of new and changed rows).
        bus_eff_date: String,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Apply a date older than the latest applied one, or a full extract that deletes more than max_delete_fraction.
        #[arg(long)]
        force: bool,
        /// Replace the latest run (same date, different input).
        #[arg(long)]
        replace: bool,
    },
    /// Generate a two-day synthetic CDC dataset (the seed generator's arguments).
    Generate {
        no_init_recs: u64,
        no_incr_recs: u64,
        no_keys: usize,
        no_nonkeys: usize,
        pct_del: f64,
        pct_upd: f64,
        pct_unchanged: f64,
        initial_output: PathBuf,
        incremental_output: PathBuf,
        /// Random seed for reproducible output.
        #[arg(long)]
        seed: Option<u64>,
        /// Write a matching table config here.
        #[arg(long)]
        config_out: Option<PathBuf>,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Read, cast and hash an extract without touching the lake: reports bad rows, and times
    /// the read-and-hash floor of a run.
    Check {
        config: PathBuf,
        /// An extract file, or a folder of *.csv or *.parquet files.
        incoming: PathBuf,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check a table config without touching any data.
    Validate { config: PathBuf },
    /// Generate the seed example and run both days into DIR (default ./tributary-demo).
    Demo { dir: Option<PathBuf> },
    /// Load change files (AWS DMS, Debezium JSON) from a landing zone into lake tables.
    ///
    /// Exit code 5 when some tables failed (the others are still applied).
    Sync {
        /// Landing root: one folder per <schema>/<table>.
        landing_root: PathBuf,
        /// Lake root: tables go to <lake>/<schema>/<table>/{current,history,applied}.
        #[arg(long)]
        lake: PathBuf,
        /// Tables file (default <landing_root>/tables.yaml); see `tributary tables`.
        #[arg(long)]
        tables: Option<PathBuf>,
        /// Tables loaded at the same time.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Business date for changes without a commit time (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
        /// Keep syncing every INTERVAL (e.g. 30s, 5m, 1h) until interrupted.
        #[arg(long)]
        watch: Option<String>,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List the landing zone's tables and whether they are active; adds new folders to the
    /// tables file as inactive entries and (de)activates tables.
    Tables {
        /// Landing root: one folder per <schema>/<table>.
        landing_root: PathBuf,
        /// Tables file (default <landing_root>/tables.yaml).
        #[arg(long)]
        tables: Option<PathBuf>,
        /// Set `active: true` for these <schema>/<table> names.
        #[arg(long)]
        activate: Vec<String>,
        /// Set `active: false` for these <schema>/<table> names.
        #[arg(long)]
        deactivate: Vec<String>,
    },
}

/// Exit code of a sync pass in which some tables failed.
const EXIT_SOME_TABLES_FAILED: u8 = 5;

/// Parses an interval: seconds, or a number with `s`, `m` or `h`.
fn parse_interval(text: &str) -> Result<std::time::Duration> {
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

fn print_sync(summary: &tributary::controller::SyncSummary) {
    for t in &summary.tables {
        println!("{:<32} {:<10} {}", t.table, t.status, t.message);
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

/// Logs when RUST_LOG is unset: Tributary at info; libraries only on errors (delta-kernel logs an
/// expected "no files in log segment" error while probing a new table, so it stays off).
const DEFAULT_LOG_FILTER: &str =
    "warn,tributary=info,deltalake_core=error,buoyant_kernel=off,delta_kernel=off";

fn parse_date(text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| {
        Error::Usage(format!(
            "BUS_EFF_DATE `{text}` is not a YYYY-MM-DD date: {e}"
        ))
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn execute(command: Command) -> Result<u8> {
    match command {
        Command::Run {
            config,
            incoming,
            bus_eff_date,
            json,
            force,
            replace,
        } => {
            let date = parse_date(&bus_eff_date)?;
            let config = TableConfig::load(&config)?;
            let summary = run(&config, &incoming, date, RunOptions { force, replace }).await?;
            if json {
                print_json(&summary)?;
            } else {
                println!("{summary}");
            }
        }
        Command::Generate {
            no_init_recs,
            no_incr_recs,
            no_keys,
            no_nonkeys,
            pct_del,
            pct_upd,
            pct_unchanged,
            initial_output,
            incremental_output,
            seed,
            config_out,
            json,
        } => {
            let spec = GenerateSpec {
                init_rows: no_init_recs,
                incr_rows: no_incr_recs,
                keys: no_keys,
                nonkeys: no_nonkeys,
                pct_del,
                pct_upd,
                pct_unchanged,
                initial_output,
                incremental_output,
                seed,
            };
            let s = generate(&spec)?;
            if let Some(path) = config_out {
                std::fs::write(&path, config_yaml("sample_data", no_keys, no_nonkeys))?;
            }
            if json {
                print_json(&s)?;
            } else {
                println!(
                    "day 1: {} rows -> {}\nday 2: deleted {}, updated {}, unchanged {}, inserted {} -> {}",
                    s.initial_rows,
                    s.initial_file.display(),
                    s.deleted,
                    s.updated,
                    s.unchanged,
                    s.inserted,
                    s.incremental_file.display()
                );
            }
        }
        Command::Check {
            config,
            incoming,
            json,
        } => {
            let config = TableConfig::load(&config)?;
            let s = tributary::check::check(&config, &incoming)?;
            if json {
                print_json(&s)?;
            } else {
                println!(
                    "{}: {} rows in {} file(s), {} bad; {:.2} s ({:.0} rows/s, {:.1} MiB/s)",
                    incoming.display(),
                    s.rows_read,
                    s.input_files,
                    s.rejects.len(),
                    s.elapsed_secs,
                    s.rows_per_sec,
                    s.bytes_per_sec / (1024.0 * 1024.0)
                );
                for r in s.rejects.iter().take(20) {
                    println!(
                        "  {}, line {}{}: {}",
                        r.file,
                        r.line,
                        r.column
                            .as_deref()
                            .map(|c| format!(", column {c}"))
                            .unwrap_or_default(),
                        r.reason
                    );
                }
            }
        }
        Command::Validate { config } => {
            let c = TableConfig::load(&config)?;
            println!(
                "{}: ok ({} columns, {} key, {} ignored; {:?} extract; current {}, history {})",
                c.name,
                c.columns.len(),
                c.key_indices().len(),
                c.columns.iter().filter(|c| c.ignore).count(),
                c.extract_type,
                c.current_url,
                c.history_url
            );
        }
        Command::Demo { dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("tributary-demo"));
            let (generated, summaries) = tributary::demo::demo(&dir).await?;
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
        }
        Command::Sync {
            landing_root,
            lake,
            tables,
            jobs,
            date,
            watch,
            json,
        } => {
            let run_date = match date {
                Some(d) => parse_date(&d)?,
                None => chrono::Utc::now().date_naive(),
            };
            let interval = watch.as_deref().map(parse_interval).transpose()?;
            let options = tributary::controller::SyncOptions {
                tables_file: tables.unwrap_or_else(|| landing_root.join("tables.yaml")),
                landing: landing_root,
                lake,
                jobs,
                run_date,
                progress: !json,
            };
            loop {
                let pass = tributary::controller::sync(&options).await;
                let Some(interval) = interval else {
                    let summary = pass?;
                    if json {
                        print_json(&summary)?;
                    } else {
                        print_sync(&summary);
                    }
                    return Ok(if summary.failed > 0 {
                        EXIT_SOME_TABLES_FAILED
                    } else {
                        0
                    });
                };
                // Watching: a pass that fails as a whole (a bad edit of the tables file) is
                // reported and retried at the next interval.
                match pass {
                    Ok(summary) if json => print_json(&summary)?,
                    Ok(summary) => print_sync(&summary),
                    Err(e) => eprintln!("error: {e} (retrying in {interval:?})"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(0),
                }
            }
        }
        Command::Tables {
            landing_root,
            tables,
            activate,
            deactivate,
        } => {
            let path = tables.unwrap_or_else(|| landing_root.join("tables.yaml"));
            let file = tributary::tables::TablesFile::load(&path)?;
            let (file, added) =
                tributary::controller::refresh_tables(&landing_root, file, &activate, &deactivate)?;
            file.save(&path)?;
            for t in &file.tables {
                let state = if t.active { "active" } else { "inactive" };
                let key = if t.primary_key.is_empty() {
                    "no primary key: inserts only".to_string()
                } else {
                    format!("primary key {}", t.primary_key.join(", "))
                };
                let new = if added.contains(&t.source) {
                    " (new)"
                } else {
                    ""
                };
                println!(
                    "{:<32} {:<8} {:?}, {} columns, {key}{new}",
                    t.source,
                    state,
                    t.layout,
                    t.columns.len()
                );
            }
            println!("tables file: {}", path.display());
        }
    }
    Ok(0)
}

fn main() -> ExitCode {
    let allocator_tuned = tributary::allocator::tune();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    if !allocator_tuned {
        tracing::debug!("allocator settings not applied (not glibc, or refused)");
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(err.exit_code() as u8)
        }
    }
}
