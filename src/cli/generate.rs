//! `tributary generate`: the seed generator's two-day synthetic dataset.

use std::path::PathBuf;

use super::print_json;
use crate::error::Result;
use crate::generate::{config_yaml, generate, GenerateSpec};

/// Arguments of `tributary generate` (the seed generator's, in its order).
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Rows of day 1 (the initial full extract).
    pub no_init_recs: u64,
    /// Rows of day 2: the day-1 rows kept plus inserts.
    pub no_incr_recs: u64,
    /// Key columns.
    pub no_keys: usize,
    /// Non-key columns.
    pub no_nonkeys: usize,
    /// Share of day-1 rows deleted on day 2 (0.2 = 20%).
    pub pct_del: f64,
    /// Share of day-1 rows updated on day 2.
    pub pct_upd: f64,
    /// Share of day-1 rows unchanged on day 2 (the three shares sum to 1).
    pub pct_unchanged: f64,
    /// Folder for day 1's extract (part-00000.csv).
    pub initial_output: PathBuf,
    /// Folder for day 2's extract (part-00000.csv).
    pub incremental_output: PathBuf,
    /// Random seed for reproducible output.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write a matching table config here.
    #[arg(long)]
    pub config_out: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tributary generate` and prints what it wrote.
///
/// # Errors
/// Those of [`generate`]; I/O errors writing the config.
pub async fn execute(args: GenerateArgs) -> Result<u8> {
    let spec = GenerateSpec {
        init_rows: args.no_init_recs,
        incr_rows: args.no_incr_recs,
        keys: args.no_keys,
        nonkeys: args.no_nonkeys,
        pct_del: args.pct_del,
        pct_upd: args.pct_upd,
        pct_unchanged: args.pct_unchanged,
        initial_output: args.initial_output,
        incremental_output: args.incremental_output,
        seed: args.seed,
    };
    let s = generate(&spec)?;
    if let Some(path) = args.config_out {
        std::fs::write(
            &path,
            config_yaml("sample_data", args.no_keys, args.no_nonkeys),
        )?;
    }
    if args.json {
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
    Ok(0)
}
