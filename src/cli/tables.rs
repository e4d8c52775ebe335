//! `tributary tables LANDING_ROOT`: list the landing zone's tables, add new folders to the
//! tables file as inactive entries, and (de)activate tables.

use std::path::PathBuf;

use crate::config::TablesFile;
use crate::error::{Error, Result};
use crate::source::changelog::landing::refresh_tables;

/// Arguments of `tributary tables`.
#[derive(Debug, clap::Args)]
pub struct TablesArgs {
    /// Landing root: one folder per <schema>/<table>.
    pub landing_root: PathBuf,
    /// Tables file (default <landing_root>/tables.yaml).
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Set `active: true` for these <schema>/<table> names.
    #[arg(long)]
    pub activate: Vec<String>,
    /// Set `active: false` for these <schema>/<table> names.
    #[arg(long)]
    pub deactivate: Vec<String>,
}

/// Updates the tables file and prints every table with its state.
///
/// # Errors
/// Those of [`refresh_tables`] and of reading and writing the tables file.
pub async fn execute(args: TablesArgs) -> Result<u8> {
    if crate::changelog::sync::landing_url(&args.landing_root)?.is_some() {
        return Err(crate::error::Error::Usage(format!(
            "{}: `tributary tables` lists a local landing zone only; for one in an object store, \
             write the tables file by hand (docs/sync.md)",
            args.landing_root.display()
        )));
    }
    let path = args
        .tables
        .unwrap_or_else(|| args.landing_root.join("tables.yaml"));
    let file = TablesFile::load(&path)?;
    let (file, added) = refresh_tables(&args.landing_root, file, &args.activate, &args.deactivate)
        .map_err(|e| match e {
            Error::InvalidFieldValue { .. } => Error::Usage(format!(
                "cannot activate: {e}; edit {} and run again (nothing was changed)",
                path.display()
            )),
            other => other,
        })?;
    file.save(&path)?;
    for t in &file.tables {
        let state = if t.active { "active" } else { "inactive" };
        let key = if t.primary_key.is_empty() {
            "no primary key: inserts only".to_string()
        } else {
            format!("primary key {}", t.primary_key.join(", "))
        };
        // What `sync` would reject, said now.
        let key = match t.check() {
            Ok(()) => key,
            Err(Error::InvalidFieldValue { field, constraint }) => {
                let field = field.rsplit(").").next().unwrap_or(&field).to_string();
                format!("incomplete: `{field}` {constraint}")
            }
            Err(e) => format!("incomplete: {e}"),
        };
        let new = match (added.contains(&t.source), t.columns.is_empty()) {
            (true, false) => " (new; columns read from its files: review their types)",
            (true, true) => " (new)",
            (false, _) => "",
        };
        println!(
            "{:<32} {:<8} {} layout, {} columns, {key}{new}",
            t.source,
            state,
            t.layout,
            t.columns.len()
        );
    }
    println!("tables file: {}", path.display());
    Ok(0)
}
