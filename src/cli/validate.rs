//! `tributary validate CONFIG`: check a table config without touching any data.

use std::path::PathBuf;

use crate::config::TableConfig;
use crate::error::Result;

/// Arguments of `tributary validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Table config (YAML).
    pub config: PathBuf,
}

/// Validates the config and prints what it says.
///
/// # Errors
/// Those of [`TableConfig::load`].
pub async fn execute(args: ValidateArgs) -> Result<u8> {
    let c = TableConfig::load(&args.config)?;
    let table = &c.table;
    println!(
        "{}: ok ({} columns, {} key, {} ignored; {} extract; current {}, history {})",
        table.name,
        table.columns.len(),
        table.key_indices().len(),
        table.columns.iter().filter(|c| c.ignore).count(),
        c.snapshot.extract_type,
        table.lake.current_url,
        table.lake.history_url
    );
    Ok(0)
}
