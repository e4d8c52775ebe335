//! `tributary check CONFIG INCOMING`: read, cast and hash an extract without touching the lake.

use std::path::PathBuf;

use super::print_json;
use crate::config::TableConfig;
use crate::error::Result;
use crate::snapshot::check::check;

/// Arguments of `tributary check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Table config (YAML).
    pub config: PathBuf,
    /// An extract file, or a folder of *.csv or *.parquet files; or an object-store URL of one
    /// object or a prefix, copied under spill_dir first.
    pub incoming: PathBuf,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tributary check` and prints its summary (the first 20 bad rows).
///
/// # Errors
/// Those of [`check`].
pub async fn execute(args: CheckArgs) -> Result<u8> {
    let config = TableConfig::load(&args.config)?;
    super::run::use_config_threads(&config);
    let staged = super::run::stage_incoming(&config, &args.incoming).await?;
    let incoming = staged
        .as_ref()
        .map_or(args.incoming.as_path(), |s| s.path.as_path());
    let s = check(&config, incoming).map_err(|e| super::run::renamed(&staged, e))?;
    if args.json {
        print_json(&s)?;
        return Ok(0);
    }
    println!(
        "{}: {} rows in {} file(s), {} bad; {:.2} s ({:.0} rows/s, {:.1} MiB/s)",
        args.incoming.display(),
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
    Ok(0)
}
