//! `tributary register`: register tables in their catalog now (a snapshot config's, or those of
//! a `sync`/`capture` lake with its tables file), as each run does after it commits: for tables
//! written before the `catalog` section was added, or after a registration failed.

use std::path::PathBuf;

use super::print_json;
use crate::config::storage::LakeRoot;
use crate::config::tables::TablesFile;
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::sink::catalog::{register_or_report, Registered, EXIT_CATALOG_FAILED};

/// Arguments of `tributary register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Snapshot table configs (repeatable) whose `catalog` registers their tables.
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
    /// Lake root of `tributary sync` or `capture` (a folder or an object-store prefix); with
    /// --tables, whose `catalog` and active tables are registered.
    #[arg(long, requires = "tables")]
    pub lake: Option<String>,
    /// The tables file of --lake.
    #[arg(long, requires = "lake")]
    pub tables: Option<PathBuf>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Registers every table the arguments name; returns [`EXIT_CATALOG_FAILED`] when one failed.
///
/// # Errors
/// [`Error::Usage`] when nothing is named or a config has no `catalog`; config errors.
pub async fn execute(args: RegisterArgs) -> Result<u8> {
    let mut specs = Vec::new();
    for path in &args.configs {
        let config = TableConfig::load(path)?;
        let catalog = config.table.lake.catalog.clone().ok_or_else(|| {
            Error::Usage(format!(
                "config {}: it has no `catalog` section",
                path.display()
            ))
        })?;
        specs.push((catalog, config.table));
    }
    if let (Some(lake), Some(tables)) = (&args.lake, &args.tables) {
        if !tables.exists() {
            return Err(Error::Usage(format!(
                "--tables {}: no such file",
                tables.display()
            )));
        }
        let file = TablesFile::load(tables)?;
        let catalog = file.catalog.clone().ok_or_else(|| {
            Error::Usage(format!(
                "tables file {}: it has no `catalog` section",
                tables.display()
            ))
        })?;
        let root = LakeRoot::parse(lake)?.with_options(file.storage_options.clone());
        for (index, entry) in file.tables.iter().enumerate().filter(|(_, e)| e.active) {
            specs.push((catalog.clone(), entry.changelog_table(index, &root)?.table));
        }
    }
    if specs.is_empty() {
        return Err(Error::Usage(
            "nothing to register: pass --config FILE, or --lake LAKE with --tables FILE".into(),
        ));
    }
    let mut outcomes: Vec<Registered> = Vec::new();
    for (catalog, spec) in &specs {
        let done = register_or_report(catalog, spec).await;
        if !args.json {
            match &done.error {
                None if done.tables.is_empty() => {
                    println!("{}: no table yet (no run has committed)", spec.name)
                }
                None => println!("{}: registered {}", spec.name, done.tables.join(", ")),
                Some(error) => println!("{}: failed: {error}", spec.name),
            }
        }
        outcomes.push(done);
    }
    if args.json {
        print_json(&outcomes)?;
    }
    Ok(if outcomes.iter().any(|o| o.error.is_some()) {
        EXIT_CATALOG_FAILED
    } else {
        0
    })
}
