//! Opening and creating the Delta tables, and checking they are Tributary's.

use std::collections::HashMap;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
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

fn lake_err(role: &str, reason: String) -> Error {
    Error::Lake {
        table: role.to_string(),
        reason,
    }
}

/// Opens the table at `url` and checks its hash properties and schema. Returns None when no
/// table is there; with `create`, creates it instead (with `schema`, `partitions` and
/// Tributary's properties).
///
/// # Errors
/// [`Error::Lake`] for a table of another hash spec, algorithm or schema; Delta errors.
pub async fn open_or_create(
    config: &TableSpec,
    url: &Url,
    schema: SchemaRef,
    partitions: &[&str],
    role: TableRole,
    create: bool,
) -> Result<Option<DeltaTable>> {
    let role = role.as_str();
    if url.scheme() == "file" {
        let path = url
            .to_file_path()
            .map_err(|_| lake_err(role, format!("bad file URL {url}")))?;
        if !path.join("_delta_log").exists() {
            if !create {
                return Ok(None);
            }
            std::fs::create_dir_all(&path)?;
        }
    }
    let table = match deltalake::open_table(url.clone()).await {
        Ok(table) => table,
        Err(DeltaTableError::NotATable(_)) if !create => return Ok(None),
        Err(DeltaTableError::NotATable(_)) => {
            let fields: StructType = schema.clone().try_into_kernel()?;
            let mut props: HashMap<String, Option<String>> = HashMap::new();
            props.insert(PROP_HASH_SPEC.into(), Some(HASH_SPEC_VERSION.to_string()));
            props.insert(
                PROP_HASH_ALGORITHM.into(),
                Some(config.hash.as_str().into()),
            );
            props.insert(
                "delta.checkpointInterval".into(),
                Some(config.lake.checkpoint_interval.to_string()),
            );
            tracing::info!(table = role, %url, "creating Delta table");
            DeltaTable::try_from_url(url.clone())
                .await?
                .create()
                .with_table_name(format!("{}_{role}", config.name))
                .with_columns(fields.fields().cloned())
                .with_partition_columns(partitions.iter().map(|p| p.to_string()))
                .with_configuration(props)
                .with_raise_if_key_not_exists(false)
                .await?
        }
        Err(e) => return Err(e.into()),
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
    let found = state.snapshot().arrow_schema();
    let same = found.fields().len() == schema.fields().len()
        && found
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(f, e)| f.name() == e.name() && f.data_type() == e.data_type());
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
