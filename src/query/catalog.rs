//! Which Delta tables a query session sees: those of a `sync`/`capture` lake root, or those named
//! by snapshot table configs.

use std::path::Path;

use url::Url;

use crate::config::storage::LakeRoot;
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

/// The tables of a lake root written by `tributary sync` or `capture` (a local folder or an
/// object-store prefix): every `<schema>/<table>/` with a `current/_delta_log` (and
/// `history/`), sorted by name.
///
/// # Errors
/// [`Error::Usage`] when the root cannot be listed or holds no table.
pub fn lake_tables(root: &LakeRoot) -> Result<Vec<LakeTable>> {
    crate::sink::storage::register(&root.url, &root.storage_options);
    let found = match root.folder() {
        Some(folder) => local_tables(&folder)?,
        None => store_tables(root)?,
    };
    let mut tables = Vec::new();
    for (schema, table) in found {
        let url = |role: &str| {
            table_url(
                "--lake",
                &root.table_path(&schema, &table, role),
                Path::new("/"),
            )
        };
        tables.push(LakeTable {
            schema: Some(schema.to_lowercase()),
            name: table.to_lowercase(),
            current: url("current")?,
            history: url("history")?,
            followers: vec![
                (TableRole::Rejects, url("rejects")?),
                (TableRole::Applied, url("applied")?),
                (TableRole::Tombstones, url("tombstones")?),
            ],
            compression: Compression::default(),
            app_id: format!(
                "tributary:{}",
                crate::config::tables::table_name(&format!("{schema}/{table}"))
            ),
        });
    }
    if tables.is_empty() {
        return Err(Error::Usage(format!(
            "lake {root}: no <schema>/<table>/current Delta table in it (a sync lake root; for \
             snapshot tables pass --config FILE)"
        )));
    }
    Ok(tables)
}

/// The `(schema, table)` folder names of a local lake root that hold a current table, sorted.
fn local_tables(root: &Path) -> Result<Vec<(String, String)>> {
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
    let name = |p: &Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let mut found = Vec::new();
    for schema in list(root)? {
        for table in list(&schema)? {
            if table.join("current/_delta_log").is_dir() {
                found.push((name(&schema), name(&table)));
            }
        }
    }
    Ok(found)
}

/// The `(schema, table)` prefixes of an object-store lake root that hold a current table's
/// log, sorted: listed with `/` as the delimiter (two levels, then one probe per table).
fn store_tables(root: &LakeRoot) -> Result<Vec<(String, String)>> {
    use crate::core::store::{block_on, bucket_store, subfolders, under};
    use futures::StreamExt;
    let usage =
        |e: &dyn std::fmt::Display| Error::Usage(format!("lake {root}: cannot list it: {e}"));
    let (store, prefix) =
        bucket_store(&root.url, root.storage_options.to_map()).map_err(|e| usage(&e))?;
    let listed = block_on(async {
        let mut found = Vec::new();
        for schema in subfolders(store.as_ref(), &prefix).await? {
            let at = under(&prefix, &schema);
            for table in subfolders(store.as_ref(), &at).await? {
                let log = under(&under(&at, &table), "current/_delta_log");
                // one object of the log is enough: the first page only
                if let Some(first) = store.list(Some(&log)).next().await {
                    first?;
                    found.push((schema.clone(), table));
                }
            }
        }
        Ok::<_, deltalake::ObjectStoreError>(found)
    })?;
    listed.map_err(|e| {
        crate::error::explain_store_error("lake", &root.url, &e).unwrap_or_else(|| usage(&e))
    })
}

/// The tables of a `sync`/`capture` lake root (`--lake`) and of snapshot configs (`--config`),
/// in that order: what `sql`, `optimize` and `vacuum` act on.
///
/// # Errors
/// [`Error::Usage`] for neither; those of [`lake_tables`] and [`config_table`].
pub fn named_tables(
    lake: Option<&LakeRoot>,
    configs: &[std::path::PathBuf],
) -> Result<Vec<LakeTable>> {
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
