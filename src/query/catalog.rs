//! Which Delta tables a query session sees: those of a `sync`/`capture` lake root, or those named
//! by snapshot table configs.

use std::path::Path;

use url::Url;

use crate::config::{table_url, Compression, TableConfig};
use crate::error::{Error, Result};
use crate::sink::TableRole;

/// One table of the lake: its current and history Delta tables, by SQL name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeTable {
    /// SQL schema (`sales` for a `sync` table `sales/orders`); None for snapshot tables,
    /// registered in the default schema.
    pub schema: Option<String>,
    /// SQL table name: the config's `name`, or the table folder's name.
    pub name: String,
    /// The current table.
    pub current: Url,
    /// The history table.
    pub history: Url,
    /// The follower tables (rejects, applied, tombstones), whether they exist or not: what
    /// maintenance completes and vacuums besides current and history.
    pub followers: Vec<(TableRole, Url)>,
    /// The codec of the table's data files (a lake root's tables: the default).
    pub compression: Compression,
    /// The Delta `txn` app id of the table's runs (`tributary:<name>`, the name as its config
    /// or folders spell it).
    pub app_id: String,
}

impl LakeTable {
    /// The name queries use: `schema.name` or `name`.
    pub fn qualified(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The tables of a lake root written by `tributary sync`: every `<schema>/<table>/` folder with a
/// `current/_delta_log` (and `history/`), sorted by name.
///
/// # Errors
/// [`Error::Usage`] when the root cannot be read or holds no table.
pub fn lake_tables(root: &Path) -> Result<Vec<LakeTable>> {
    let root = &std::path::absolute(root)?;
    let list = |dir: &Path| -> Result<Vec<std::path::PathBuf>> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Usage(format!("lake {}: cannot list it: {e}", dir.display())))?;
        let mut out: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        out.sort();
        Ok(out)
    };
    let mut tables = Vec::new();
    for schema in list(root)? {
        for table in list(&schema)? {
            if !table.join("current/_delta_log").is_dir() {
                continue;
            }
            let name = |p: &Path| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_lowercase()
            };
            tables.push(LakeTable {
                schema: Some(name(&schema)),
                name: name(&table),
                current: table_url("--lake", "current", &table)?,
                history: table_url("--lake", "history", &table)?,
                followers: vec![
                    (TableRole::Rejects, table_url("--lake", "rejects", &table)?),
                    (TableRole::Applied, table_url("--lake", "applied", &table)?),
                    (
                        TableRole::Tombstones,
                        table_url("--lake", "tombstones", &table)?,
                    ),
                ],
                compression: Compression::default(),
                app_id: format!(
                    "tributary:{}",
                    crate::config::tables::table_name(&format!(
                        "{}/{}",
                        schema.file_name().unwrap_or_default().to_string_lossy(),
                        table.file_name().unwrap_or_default().to_string_lossy()
                    ))
                ),
            });
        }
    }
    if tables.is_empty() {
        return Err(Error::Usage(format!(
            "lake {}: no <schema>/<table>/current Delta table in it (a sync lake root; for \
             snapshot tables pass --config FILE)",
            root.display()
        )));
    }
    Ok(tables)
}

/// The tables of a `sync`/`capture` lake root (`--lake`) and of snapshot configs (`--config`),
/// in that order: what `sql`, `optimize` and `vacuum` act on.
///
/// # Errors
/// [`Error::Usage`] for neither; those of [`lake_tables`] and [`config_table`].
pub fn named_tables(lake: Option<&Path>, configs: &[std::path::PathBuf]) -> Result<Vec<LakeTable>> {
    let mut tables = Vec::new();
    if let Some(root) = lake {
        tables.extend(lake_tables(root)?);
    }
    for config in configs {
        tables.push(config_table(config)?);
    }
    if tables.is_empty() {
        return Err(Error::Usage(
            "no tables: pass --lake LAKE_ROOT (a sync or capture lake) or --config FILE (a \
             table config)"
                .into(),
        ));
    }
    Ok(tables)
}

/// The table a snapshot config names (its `current_table_path` and `history_table_path`).
///
/// # Errors
/// Those of [`TableConfig::load`].
pub fn config_table(path: &Path) -> Result<LakeTable> {
    let config = TableConfig::load(path)?;
    Ok(LakeTable {
        schema: None,
        name: config.table.name.to_lowercase(),
        current: config.table.lake.current_url.clone(),
        history: config.table.lake.history_url.clone(),
        followers: vec![
            (TableRole::Rejects, config.table.lake.rejects_url.clone()),
            (TableRole::Applied, config.table.lake.applied_url.clone()),
            (
                TableRole::Tombstones,
                config.table.lake.tombstones_url.clone(),
            ),
        ],
        compression: config.table.lake.compression,
        app_id: config.table.app_id(),
    })
}
