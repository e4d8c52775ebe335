//! The `tributary` binary: parses the command line and dispatches to [`tributary::cli`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tributary::cli::{
    self, capture, check, demo, generate, maintain, register, run, sql, sync, tables, validate,
};
use tributary::Result;

/// Change-data-capture into Delta Lake: snapshot diffs into current and history tables.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Threads of every parallel stage (readers, diff workers, writers, queries); default the
    /// cores this process may run on. Overrides a config's `threads`.
    #[arg(long, global = true, value_parser = threads)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Parses `--threads`.
fn threads(text: &str) -> std::result::Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a thread count"))?;
    tributary::core::threads::check(n)
}

#[derive(Subcommand)]
enum Command {
    /// Diff an extract against the current table and commit current + history for one business date.
    ///
    /// Exit code 6 when the run committed but the config's catalog registration failed.
    Run(run::RunArgs),
    /// Generate a two-day synthetic CDC dataset (the seed generator's arguments).
    Generate(generate::GenerateArgs),
    /// Read, cast and hash an extract without touching the lake: reports bad rows, and times
    /// the read-and-hash floor of a run.
    Check(check::CheckArgs),
    /// Check a table config without touching any data.
    Validate(validate::ValidateArgs),
    /// Generate the seed example and run both days into DIR (default ./tributary-demo).
    Demo(demo::DemoArgs),
    /// Load change files (AWS DMS CSV or Parquet, Debezium JSON or Avro) from a landing zone into
    /// lake tables.
    ///
    /// Exit code 5 when some tables failed (the others are still applied); 6 when every table
    /// synced but a catalog registration failed.
    Sync(sync::SyncArgs),
    /// Capture a PostgreSQL database from its WAL (logical replication, pgoutput): an initial
    /// copy of each published table, then every committed change, exactly once, with the
    /// slot position in the same commit. Runs until SIGINT/SIGTERM, or with --once drains and exits.
    ///
    /// Exit code 5 when some tables failed (the others are still captured); 6 when a catalog
    /// registration failed.
    Capture(capture::CaptureArgs),
    /// Query the lake's tables with SQL: time travel (version_as_of, timestamp_as_of), SCD2
    /// views (<table>_scd2), as-of (as_of) and incremental (changes) queries, run history
    /// (runs); an interactive shell without -e or -f.
    Sql(sql::SqlArgs),
    /// Compact the small data files of each table's current and history tables (a Delta
    /// OPTIMIZE, committed as the table's next run; time travel to earlier versions still works).
    Optimize(maintain::OptimizeArgs),
    /// List the data files of each table that no version within --retain needs (a dry run), or
    /// delete them with --delete (a Delta VACUUM; time travel past --retain ends).
    Vacuum(maintain::VacuumArgs),
    /// List the landing zone's tables and whether they are active; adds new folders to the
    /// tables file as inactive entries and (de)activates tables.
    Tables(tables::TablesArgs),
    /// Register tables in their catalog (AWS Glue) now, as each run does after it commits: a
    /// snapshot config's (--config) or a lake's active tables (--lake with --tables).
    ///
    /// Exit code 6 when a registration failed.
    Register(register::RegisterArgs),
}

async fn execute(command: Command) -> Result<u8> {
    match command {
        Command::Run(args) => run::execute(args).await,
        Command::Generate(args) => generate::execute(args).await,
        Command::Check(args) => check::execute(args).await,
        Command::Validate(args) => validate::execute(args).await,
        Command::Demo(args) => demo::execute(args).await,
        Command::Sync(args) => sync::execute(args).await,
        Command::Capture(args) => capture::execute(args).await,
        Command::Sql(args) => sql::execute(args).await,
        Command::Optimize(args) => maintain::optimize(args).await,
        Command::Vacuum(args) => maintain::vacuum(args).await,
        Command::Tables(args) => tables::execute(args).await,
        Command::Register(args) => register::execute(args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.command {
        Command::Run(args) => Some(args.config.as_path()),
        Command::Check(args) => Some(args.config.as_path()),
        _ => None,
    };
    // a bad --memory-limit is left for the command to report
    let memory_limit = match &cli.command {
        Command::Sync(args) => cli::parse_memory_limit(&args.memory_limit).ok(),
        Command::Capture(args) => cli::parse_memory_limit(&args.memory_limit).ok(),
        _ => None,
    };
    let arenas = cli::run::process_settings(cli.threads, config, memory_limit);
    // Before any other thread starts (clap and the log filter start none): glibc fixes its
    // arena limit the first time a thread needs a new arena.
    let allocator_tuned = cli::allocator::tune(arenas);
    let filter = cli::logs::filter(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| {
            eprintln!("warning: RUST_LOG `{filter}` is not a log filter; using the default");
            EnvFilter::new(cli::logs::DEFAULT_FILTER)
        }))
        .with_ansi(cli::logs::colour())
        .with_writer(std::io::stderr)
        .init();
    if !allocator_tuned {
        tracing::debug!("allocator settings not applied (not glibc, or refused)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(tributary::core::threads::get())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    cli::panics::quiet();
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(execute(cli.command))
    }));
    // Tasks still running as the runtime shuts down may panic ("already shut down"): not news.
    cli::panics::shutting_down();
    let done = match done {
        Ok(done) => done,
        Err(_) => Err(tributary::Error::Internal(cli::panics::last())),
    };
    match done {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprint!("{}", cli::logs::error_text(&err));
            ExitCode::from(err.exit_code() as u8)
        }
    }
}
