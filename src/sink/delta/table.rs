//! Opening and creating the Delta tables, and checking they are Tributary's.

use std::collections::HashMap;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::StructType;
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::config::TableSpec;
use crate::core::hash::HASH_SPEC_VERSION;
use crate::error::{Error, Result};
use crate::sink::TableRole;

/// Table property holding the hash spec version (`docs/hashing.md`).
pub const PROP_HASH_SPEC: &str = "tributary.hash.spec";
/// Table property holding the hash algorithm (`xxh3` or `md5`).
pub const PROP_HASH_ALGORITHM: &str = "tributary.hash.algorithm";
/// Table property holding the key columns, as a JSON array of names in config order: a
/// `keyhash` means nothing under other key columns, so a config with others is refused.
pub const PROP_KEY_COLUMNS: &str = "tributary.key.columns";

/// The key column names of `config` as [`PROP_KEY_COLUMNS`] stores them.
fn key_columns(config: &TableSpec) -> String {
    let names: Vec<&str> = config
        .key_indices()
        .iter()
        .map(|&i| config.columns[i].name.as_str())
        .collect();
    serde_json::to_string(&names).unwrap_or_default()
}

fn lake_err(role: &str, reason: String) -> Error {
    Error::Lake {
        table: role.to_string(),
        reason,
    }
}

/// Opens the table at `url` and checks its hash properties and schema. Returns None when no
/// table is there; with `create`, creates it instead (with `schema`, `partitions` and
/// Tributary's properties) and records the folder it made there. Two processes creating one
/// table at once: the one whose create fails opens the other's.
///
/// # Errors
/// [`Error::Lake`] for a table of another hash spec, algorithm or schema; Delta errors.
pub async fn open_or_create(
    config: &TableSpec,
    url: &Url,
    schema: SchemaRef,
    partitions: &[&str],
    role: TableRole,
    mut create: Option<&mut CreatedTables>,
) -> Result<Option<DeltaTable>> {
    let feed =
        config.lake.change_data_feed && matches!(role, TableRole::Current | TableRole::History);
    let vectors = config.lake.deletion_vectors && role == TableRole::Current;
    let role = role.as_str();
    if url.scheme() == "file" {
        let path = url
            .to_file_path()
            .map_err(|_| lake_err(role, format!("bad file URL {url}")))?;
        if !path.join("_delta_log").exists() {
            let Some(created) = create.as_deref_mut() else {
                return Ok(None);
            };
            if !path.exists() {
                std::fs::create_dir_all(&path)?;
                created.push(url);
            }
        }
    }
    let table = match open_table(url).await {
        Ok(table) => table,
        Err(DeltaTableError::NotATable(_)) => {
            if create.is_none() {
                return Ok(None);
            }
            let fields: StructType = schema.clone().try_into_kernel()?;
            let mut props: HashMap<String, Option<String>> = HashMap::new();
            props.insert(PROP_HASH_SPEC.into(), Some(HASH_SPEC_VERSION.to_string()));
            props.insert(
                PROP_HASH_ALGORITHM.into(),
                Some(config.hash.as_str().into()),
            );
            props.insert(PROP_KEY_COLUMNS.into(), Some(key_columns(config)));
            props.insert(
                "delta.checkpointInterval".into(),
                Some(config.lake.checkpoint_interval.to_string()),
            );
            if feed {
                // delta-rs raises the protocol to what the property needs (writer version 4)
                props.insert(
                    super::change_feed::PROPERTY.into(),
                    Some("true".to_string()),
                );
            }
            if vectors {
                // delta-rs raises the protocol to what the property needs (reader version 3
                // and writer version 7, with the `deletionVectors` feature)
                props.insert(
                    super::deletion_vectors::PROPERTY.into(),
                    Some("true".to_string()),
                );
            }
            tracing::info!(table = role, %url, "creating Delta table");
            // No retries: delta-rs would otherwise resolve a race with another creator by
            // committing a second CREATE TABLE on top of the first.
            let once = CommitProperties::default().with_max_retries(0);
            let made = crate::sink::storage::at(url)
                .await
                .map_err(|e| store_err(role, url, e))?
                .create()
                .with_table_name(format!("{}_{role}", config.name))
                .with_columns(fields.fields().cloned())
                .with_partition_columns(partitions.iter().map(|p| p.to_string()))
                .with_configuration(props)
                .with_raise_if_key_not_exists(false)
                .with_commit_properties(once)
                .await;
            match made {
                Ok(table) => table,
                // Another process created it meanwhile: use theirs.
                Err(e) => match open_table(url).await {
                    Ok(table) => {
                        tracing::info!(table = role, %url, "another process created the table first; using it");
                        table
                    }
                    Err(_) => return Err(store_err(role, url, e)),
                },
            }
        }
        Err(e) => return Err(store_err(role, url, e)),
    };
    check(&table, config, &schema, role)?;
    let found = table.snapshot()?.metadata().partition_columns().to_vec();
    if found
        .iter()
        .map(String::as_str)
        .ne(partitions.iter().copied())
    {
        return Err(lake_err(
            role,
            format!(
                "is partitioned by [{}], the config gives [{}]",
                found.join(", "),
                partitions.join(", ")
            ),
        ));
    }
    Ok(Some(table))
}

/// The Delta table at `url` as its log stores it, without checking it against any config
/// (None: no table there): for a table whose config may no longer match it.
///
/// # Errors
/// Delta errors other than "not a table".
pub async fn stored_table(url: &Url) -> crate::error::Result<Option<DeltaTable>> {
    if url
        .to_file_path()
        .is_ok_and(|p| !p.join("_delta_log").exists())
    {
        return Ok(None);
    }
    match open_table(url).await {
        Ok(table) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(store_err("table", url, e)),
    }
}

/// A failure to reach the table `role` at `url`: explained in the user's terms where the
/// store says why ([`crate::error::explain_store_error`]: no bucket, access denied, no
/// credentials), the delta-rs error otherwise.
fn store_err(role: &str, url: &Url, err: DeltaTableError) -> Error {
    crate::error::explain_store_error(role, url, &err).unwrap_or_else(|| err.into())
}

/// Adds to the Delta table at `url` the payload columns of `schema` (a current or history
/// table's schema, [`TableSpec::table_schema`]) that it lacks, as nullable columns in
/// `schema`'s place for them (before `keyhash`), in one commit that changes only the table's
/// metadata (Delta `ADD COLUMN`; no data file is written: readers take a column missing from
/// a data file as NULL, the Delta protocol's rule). Schema evolution for a column added at the
/// source (`capture`); nothing is backfilled. Returns the names added (none: nothing
/// committed, or no table at `url`).
///
/// A column the table has is never changed nor moved. Another writer adding the same columns
/// at once: the commit that loses finds them there and adds nothing. The commit makes no
/// checkpoint and cleans no log (a clean-up could remove the commit of the table's last run).
///
/// # Errors
/// [`Error::Lake`] when the table's columns are not among `schema`'s in the same order (a
/// column `schema` lacks, another order): nothing is committed; Delta errors.
pub async fn add_columns(url: &Url, schema: &SchemaRef, role: TableRole) -> Result<Vec<String>> {
    use deltalake::kernel::MetadataExt;
    let Some(mut table) = stored_table(url).await? else {
        return Ok(Vec::new());
    };
    for attempt in 0..3 {
        let snapshot = table.snapshot()?;
        let found = snapshot.snapshot().arrow_schema();
        let mut fields = Vec::new();
        let mut added = Vec::new();
        for field in schema.fields() {
            match found.field_with_name(field.name()) {
                Ok(kept) => fields.push(kept.clone()),
                Err(_)
                    if !crate::core::schema::RESERVED_COLUMNS.contains(&field.name().as_str()) =>
                {
                    let field = field.as_ref().clone().with_nullable(true);
                    added.push(field.clone());
                    fields.push(field);
                }
                // a trailing column the table was made before (`source_position`): not added
                Err(_) => {}
            }
        }
        let kept_in_order = fields
            .iter()
            .filter(|f| !added.iter().any(|a| a.name() == f.name()))
            .map(|f| f.name())
            .eq(found.fields().iter().map(|f| f.name()));
        if added.is_empty() {
            return Ok(Vec::new());
        }
        if !kept_in_order {
            let names = |fields: Vec<&String>| {
                fields
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(lake_err(
                role.as_str(),
                format!(
                    "has columns [{}]; cannot add [{}] to make them [{}]: a column of the table \
                     is not among them, or in another order",
                    names(found.fields().iter().map(|f| f.name()).collect()),
                    names(added.iter().map(|f| f.name()).collect()),
                    names(schema.fields().iter().map(|f| f.name()).collect()),
                ),
            ));
        }
        let arrow = |fields| SchemaRef::new(deltalake::arrow::datatypes::Schema::new(fields));
        let evolved: StructType = arrow(fields).try_into_kernel()?;
        let new_fields: StructType = arrow(added.clone()).try_into_kernel()?;
        let metadata = snapshot
            .metadata()
            .clone()
            .with_schema(&evolved)
            .map_err(DeltaTableError::from)?;
        let operation = deltalake::protocol::DeltaOperation::AddColumn {
            fields: new_fields.fields().cloned().collect(),
        };
        // no checkpoint nor log clean-up after it: the clean-up could remove the commit of
        // the table's last run, which holds its position (`log::last_run`)
        let properties = CommitProperties::default()
            .with_create_checkpoint(false)
            .with_cleanup_expired_logs(Some(false));
        let committed = deltalake::kernel::transaction::CommitBuilder::from(properties)
            .with_actions(vec![deltalake::kernel::Action::Metadata(metadata)])
            .build(Some(snapshot), table.log_store(), operation)
            .await;
        let names: Vec<String> = added.iter().map(|f| f.name().clone()).collect();
        match committed {
            Ok(_) => {
                tracing::info!(table = role.as_str(), %url, columns = ?names, "columns added");
                return Ok(names);
            }
            // another writer committed meanwhile (perhaps the same columns): read it again
            Err(e) if attempt < 2 => {
                tracing::debug!(
                    table = role.as_str(),
                    "adding columns: {e}; reading the table again"
                );
                table.update_state().await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Vec::new())
}

/// How often [`open_table`] tries a table whose log cannot be read, 100 ms apart.
const OPEN_ATTEMPTS: u32 = 5;

/// Opens the table at `url`. A log that cannot be read (another process creating the table:
/// its first commit is being written) is tried again, up to [`OPEN_ATTEMPTS`] times; "not a
/// table" is returned at once.
async fn open_table(url: &Url) -> std::result::Result<DeltaTable, DeltaTableError> {
    let mut attempt = 1;
    loop {
        match crate::sink::storage::open(url).await {
            Err(DeltaTableError::NotATable(m)) => return Err(DeltaTableError::NotATable(m)),
            Err(e) if attempt < OPEN_ATTEMPTS => {
                tracing::debug!(%url, attempt, "cannot read the table's log yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// The local table folders one process made for tables it was to create. A run that fails
/// removes those that hold no table (the create itself failed); a table that exists is never
/// removed, whoever created it: another process may have opened it and be writing into it
/// (two first runs at once). A failed first run thus leaves an empty table (version 0: no
/// data, no run), which the next run uses as it is.
#[derive(Debug, Clone, Default)]
pub struct CreatedTables {
    /// Folders made.
    pub paths: Vec<std::path::PathBuf>,
}

impl CreatedTables {
    /// Records the local folder of `url` (object stores have no folders to remove).
    pub fn push(&mut self, url: &Url) {
        if let Ok(path) = url.to_file_path() {
            self.paths.push(path);
        }
    }

    /// Takes the folders over (this record forgets them).
    pub fn take(&mut self) -> CreatedTables {
        CreatedTables {
            paths: std::mem::take(&mut self.paths),
        }
    }

    /// Removes the folders that are still empty. Best effort: failures are logged.
    pub fn remove(&mut self) {
        for path in std::mem::take(&mut self.paths) {
            let empty = std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
            if empty {
                if let Err(e) = std::fs::remove_dir(&path) {
                    tracing::warn!(path = %path.display(), "could not remove an empty table folder: {e}");
                }
            }
        }
    }
}

fn check(table: &DeltaTable, config: &TableSpec, schema: &SchemaRef, role: &str) -> Result<()> {
    let state = table.snapshot()?;
    let props = state.metadata().configuration();
    let spec = props.get(PROP_HASH_SPEC);
    if spec.map(String::as_str) != Some(HASH_SPEC_VERSION.to_string().as_str()) {
        return Err(lake_err(
            role,
            format!(
                "was hashed under spec {}, this Tributary uses spec {HASH_SPEC_VERSION}; refusing \
                 to diff (see docs/hashing.md)",
                spec.map_or("<none: not a Tributary table>", |s| s.as_str())
            ),
        ));
    }
    let algorithm = props
        .get(PROP_HASH_ALGORITHM)
        .map(String::as_str)
        .unwrap_or("?");
    if algorithm != config.hash.as_str() {
        return Err(lake_err(
            role,
            format!(
                "was hashed with {algorithm}, the config says `hash: {}`",
                config.hash.as_str()
            ),
        ));
    }
    // Tables created before the property was written do not hold it: not checked.
    if let Some(stored) = props.get(PROP_KEY_COLUMNS) {
        let wanted = key_columns(config);
        if *stored != wanted {
            return Err(Error::InvalidFieldValue {
                field: "columns".into(),
                constraint: format!(
                    "the key columns are {wanted}, but the {role} table at {} was created with \
                     key {stored}: its keyhash values mean nothing under another key. Keep the \
                     table's key, or start a new table (new current_table_path and \
                     history_table_path) and load it from a full extract",
                    table.table_url()
                ),
            });
        }
    }
    let found = state.snapshot().arrow_schema();
    let prefix = found
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(f, e)| f.name() == e.name() && f.data_type() == e.data_type());
    // A table made before its trailing nullable columns existed (the applied table's `digest`,
    // a change-log table's `source_position`) is written without them (see
    // `transaction::write_follower` and `DeltaLake::keeps_positions`).
    let legacy = found.fields().len() < schema.fields().len()
        && schema.fields()[found.fields().len()..]
            .iter()
            .all(|f| f.is_nullable());
    let same = prefix && (found.fields().len() == schema.fields().len() || legacy);
    if !same {
        let show = |s: &SchemaRef| {
            s.fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(lake_err(
            role,
            format!(
                "has columns [{}], the config gives [{}]",
                show(&found),
                show(schema)
            ),
        ));
    }
    Ok(())
}

/// Whether `table`'s metadata sets `property` to `true` (any case).
///
/// # Errors
/// Delta errors reading the snapshot.
pub(super) fn property_is_true(table: &DeltaTable, property: &str) -> Result<bool> {
    Ok(table
        .snapshot()?
        .metadata()
        .configuration()
        .get(property)
        .is_some_and(|v| v.eq_ignore_ascii_case("true")))
}

/// Sets the boolean table property `property` to `true` on `table` unless `is_set` says it is
/// in effect already (a metadata commit, as `ALTER TABLE ... SET TBLPROPERTIES` does; delta-rs
/// raises the protocol to what the property needs). Another writer's commit in between is
/// retried. A table where it is in effect is left as loaded; otherwise `table` ends at its
/// latest version, and this returns true (callers enable before they read the tables' runs,
/// and load the others again). `what` names the property in the log. `allowed` checks the
/// table at the version the commit is made against, each attempt; its error stops the
/// property's commit.
///
/// # Errors
/// `allowed`'s error; Delta errors of the commit after three attempts.
pub(super) async fn enable_property(
    table: &mut DeltaTable,
    role: &str,
    property: &str,
    is_set: fn(&DeltaTable) -> Result<bool>,
    allowed: fn(&DeltaTable, &str) -> Result<()>,
    what: &str,
) -> Result<bool> {
    if is_set(table)? {
        return Ok(false);
    }
    let mut attempt = 0;
    loop {
        table.update_state().await?;
        if is_set(table)? {
            return Ok(true);
        }
        allowed(table, role)?;
        // no checkpoint nor log clean-up after it (as `add_columns`): the clean-up could
        // remove the commit of the table's last run, which holds its position
        let properties = deltalake::kernel::transaction::CommitProperties::default()
            .with_create_checkpoint(false)
            .with_cleanup_expired_logs(Some(false));
        let set = table
            .clone()
            .set_tbl_properties()
            .with_properties(HashMap::from([(property.to_string(), "true".to_string())]))
            .with_commit_properties(properties)
            .await;
        match set {
            Ok(updated) => {
                *table = updated;
                tracing::info!(table = role, "{what} enabled ({property})");
                return Ok(true);
            }
            Err(e) if attempt < 2 => {
                attempt += 1;
                tracing::debug!(table = role, "enabling the {what}: {e}; retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::schema::{changelog_schema, ColumnType};

    fn columns(names: &[&str]) -> Vec<(String, ColumnType)> {
        names
            .iter()
            .map(|n| (n.to_string(), ColumnType::Int))
            .collect()
    }

    fn names(table: &DeltaTable) -> Vec<String> {
        let schema = table.snapshot().unwrap().snapshot().arrow_schema();
        schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    #[tokio::test]
    async fn added_columns_go_before_keyhash_once_and_never_reorder_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let before = changelog_schema(&columns(&["id", "v"]));
        let fields: StructType = before.clone().try_into_kernel().unwrap();
        DeltaTable::try_from_url(url.clone())
            .await
            .unwrap()
            .create()
            .with_columns(fields.fields().cloned())
            .await
            .unwrap();
        let role = TableRole::Current;
        let wanted = changelog_schema(&columns(&["id", "v", "n", "m"]));
        let added = add_columns(&url, &wanted, role).await.unwrap();
        assert_eq!(added, vec!["n", "m"]);
        let table = stored_table(&url).await.unwrap().unwrap();
        let expected: Vec<String> = wanted.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names(&table), expected);
        // nothing left to add: no commit
        let version = table.version();
        assert!(add_columns(&url, &wanted, role).await.unwrap().is_empty());
        let table = stored_table(&url).await.unwrap().unwrap();
        assert_eq!(table.version(), version);
        // a column of the table that the schema lacks: refused, nothing committed
        let other = changelog_schema(&columns(&["id", "n", "m", "w"]));
        let refused = add_columns(&url, &other, role).await.unwrap_err();
        assert!(refused.to_string().contains("cannot add [w]"), "{refused}");
        let table = stored_table(&url).await.unwrap().unwrap();
        assert_eq!(table.version(), version);
        // no table there: nothing to do
        let empty = tempfile::tempdir().unwrap();
        let nowhere = Url::from_directory_path(empty.path()).unwrap();
        assert!(add_columns(&nowhere, &wanted, role)
            .await
            .unwrap()
            .is_empty());
    }
}
