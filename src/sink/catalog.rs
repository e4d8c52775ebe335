//! Catalog registration: a table's current and history Delta tables in the AWS Glue Data
//! Catalog, so that Athena, Spark with the Glue catalog and Trino find them by name, as the
//! DMS walkthrough's Glue jobs and DeltaStreamer's Hive sync do.
//!
//! After each run (applied or not), [`register`] makes the `catalog.database` when it is
//! absent, then creates two tables, or updates them when their definition changed (location,
//! columns, partition keys, the Delta parameters; what others added, such as descriptions,
//! other parameters and column comments, is kept, and a catalog that describes a later Delta
//! version is left alone), so that passes that change nothing make no catalog version:
//!
//! | table | location | columns | partition keys |
//! |---|---|---|---|
//! | `<name>` | `current_table_path` | the current table's, but its partition columns | the table's partition columns |
//! | `<name>_history` | `history_table_path` | the history table's, but `eff_start_date` | `eff_start_date` (`date`) |
//!
//! `<name>` is the config's `name` (`sales.orders` for a tables file) made a catalog name
//! (`sales_orders`, see [`crate::config::catalog::table_name`]). Columns are those of the Delta
//! table's latest version, in Hive types (`string`, `bigint`, `double`, `decimal(p,s)`,
//! `date`, `timestamp`, `binary`, ...), so a column added at the source reaches the catalog at
//! the next run. Each table is an `EXTERNAL_TABLE` with the parameters engines read a Delta
//! table by: `table_type = DELTA` (Athena), `spark.sql.sources.provider = delta` and the
//! SerDe parameter `path` (Spark), the Parquet input and output formats, and
//! `tributary.delta.version` (the Delta version its definition was last registered at).
//!
//! Credentials are the AWS SDK's default chain (environment, shared config and credentials
//! files, web identity, instance metadata); the region is `catalog.region`, else the tables'
//! `storage_options` `AWS_REGION`, else the SDK's; `catalog.endpoint` overrides the endpoint.
//! A request gives up after 60 s (20 s an attempt). Locations are written as engines read
//! them: the key decoded (`order lines/`), `s3a://` as `s3://`. A registration never changes the
//! lake: a failure is reported by the command (exit code 6 when the run itself succeeded),
//! and the next run registers again.

use aws_sdk_glue::types::{Column, DatabaseInput, SerDeInfo, StorageDescriptor, TableInput};
use deltalake::arrow::datatypes::{DataType, Schema};
use serde::Serialize;
use url::Url;

use crate::config::catalog::{table_name, CatalogConfig};
use crate::config::TableSpec;
use crate::error::{Error, Result};

/// Exit code of a command whose runs committed but whose catalog registration failed.
pub const EXIT_CATALOG_FAILED: u8 = 6;

/// What a registration did (the `catalog` entry of a run's or a synced table's summary).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Registered {
    /// The database.
    pub database: String,
    /// The tables created or updated, `database.table`.
    pub tables: Vec<String>,
    /// Why the registration failed (the lake is unchanged by it; the next run registers
    /// again); None when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`register`], its failure reported in the outcome instead of returned (a committed run
/// stays committed) and logged as a warning.
pub async fn register_or_report(catalog: &CatalogConfig, spec: &TableSpec) -> Registered {
    match register(catalog, spec).await {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(table = %spec.name, "catalog registration failed: {e}");
            Registered {
                database: catalog.database.clone(),
                tables: Vec::new(),
                error: Some(e.to_string()),
            }
        }
    }
}

/// Registers the current and history tables of `spec` in the catalog `catalog` (see the module
/// docs). A table not created yet (no run has committed) is left out.
///
/// # Errors
/// [`Error::Lake`] naming the catalog and the table for a refused request (credentials,
/// permissions, an endpoint that does not answer); Delta errors reading the tables' schemas.
pub async fn register(catalog: &CatalogConfig, spec: &TableSpec) -> Result<Registered> {
    let client = client(catalog, spec).await;
    let database = catalog.database.as_str();
    ensure_database(&client, database).await?;
    let name = table_name(&spec.name);
    let tables = [
        (name.clone(), &spec.lake.current_url),
        (format!("{name}_history"), &spec.lake.history_url),
    ];
    let mut registered = Vec::new();
    for (table, url) in tables {
        let Some(delta) = crate::sink::delta::stored_table(url).await? else {
            continue;
        };
        let snapshot = delta.snapshot()?;
        let schema = snapshot.snapshot().arrow_schema();
        // the table's own partition columns, whatever the config says now
        let partitions = snapshot.metadata().partition_columns().to_vec();
        let version = delta.version().unwrap_or_default();
        let input = table_input(&table, url, &schema, &partitions, version)
            .map_err(|e| glue_err(database, &table, &e))?;
        create_or_update(&client, database, input, version).await?;
        registered.push(format!("{database}.{table}"));
    }
    Ok(Registered {
        database: database.to_string(),
        tables: registered,
        error: None,
    })
}

/// Seconds a catalog request may take in all (retries included), and one attempt of it: a
/// catalog that does not answer fails the registration, never hangs a committed run.
const REQUEST_SECS: u64 = 60;
const ATTEMPT_SECS: u64 = 20;

/// The Glue client of `catalog`: the SDK's default credentials chain; the region of
/// `catalog.region`, else the tables' `storage_options` (`AWS_REGION`), else the SDK's; the
/// endpoint where `catalog.endpoint` sets one. One client per region and endpoint for the
/// process (the credentials chain is resolved once).
async fn client(catalog: &CatalogConfig, spec: &TableSpec) -> aws_sdk_glue::Client {
    use std::collections::HashMap;
    use std::sync::Mutex;
    /// Clients by (region, endpoint).
    type Clients = HashMap<(Option<String>, Option<String>), aws_sdk_glue::Client>;
    static CLIENTS: Mutex<Option<Clients>> = Mutex::new(None);
    let region = catalog.region.clone().or_else(|| {
        spec.lake
            .storage_options
            .to_map()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("AWS_REGION"))
            .map(|(_, v)| v)
    });
    let key = (region.clone(), catalog.endpoint.clone());
    let cached = CLIENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
        .cloned();
    if let Some(client) = cached {
        return client;
    }
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(ATTEMPT_SECS))
        .operation_timeout(std::time::Duration::from_secs(REQUEST_SECS))
        .build();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let Some(endpoint) = &catalog.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let client = aws_sdk_glue::Client::new(&loader.load().await);
    CLIENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, client.clone());
    client
}

/// Creates `database` unless it exists (another process creating it at once is no error).
async fn ensure_database(client: &aws_sdk_glue::Client, database: &str) -> Result<()> {
    match client.get_database().name(database).send().await {
        Ok(_) => return Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_entity_not_found_exception()) => {}
        Err(e) => return Err(glue_err(database, "", &e)),
    }
    let input = DatabaseInput::builder()
        .name(database)
        .description("Tables written by Tributary")
        .build()
        .map_err(|e| glue_err(database, "", &e))?;
    match client.create_database().database_input(input).send().await {
        Ok(_) => {
            tracing::info!(database, "created the catalog database");
            Ok(())
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_already_exists_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(glue_err(database, "", &e)),
    }
}

/// Parameter holding the Delta version a registration described.
const VERSION_PARAMETER: &str = "tributary.delta.version";

/// Creates the table `input` names, or updates it when it exists and differs: another
/// location, columns, partition keys or Delta parameters. An update keeps what others added
/// (the table's description and owner, its other parameters, column comments), and is skipped
/// when the catalog already describes `version` or a later one (a run that finished after a
/// later one does not take the catalog back).
async fn create_or_update(
    client: &aws_sdk_glue::Client,
    database: &str,
    input: TableInput,
    version: u64,
) -> Result<()> {
    let table = input.name().to_string();
    let found = match client
        .get_table()
        .database_name(database)
        .name(&table)
        .send()
        .await
    {
        Ok(out) => out.table,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_entity_not_found_exception()) =>
        {
            None
        }
        Err(e) => return Err(glue_err(database, &table, &e)),
    };
    let Some(found) = found else {
        let created = client
            .create_table()
            .database_name(database)
            .table_input(input.clone())
            .send()
            .await;
        return match created {
            Ok(_) => Ok(()),
            // another process created it meanwhile: compare with theirs next time
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(glue_err(database, &table, &e)),
        };
    };
    let described = found
        .parameters()
        .and_then(|p| p.get(VERSION_PARAMETER))
        .and_then(|v| v.parse::<u64>().ok());
    if described.is_some_and(|d| d > version) || same_definition(&found, &input) {
        return Ok(());
    }
    let merged = merge(&found, input);
    client
        .update_table()
        .database_name(database)
        .table_input(merged)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| glue_err(database, &table, &e))
}

/// Whether the catalog's table `found` already says what `input` says (location, columns,
/// partition keys, the Delta parameters other than the version).
fn same_definition(found: &aws_sdk_glue::types::Table, input: &TableInput) -> bool {
    let columns = |c: &[Column]| -> Vec<(String, Option<String>)> {
        c.iter()
            .map(|c| (c.name().to_string(), c.r#type().map(str::to_string)))
            .collect()
    };
    let (Some(a), Some(b)) = (found.storage_descriptor(), input.storage_descriptor()) else {
        return false;
    };
    let parameters_kept = input.parameters().is_some_and(|wanted| {
        wanted.iter().all(|(k, v)| {
            k == VERSION_PARAMETER || found.parameters().and_then(|p| p.get(k)) == Some(v)
        })
    });
    a.location() == b.location()
        && columns(a.columns()) == columns(b.columns())
        && columns(found.partition_keys()) == columns(input.partition_keys())
        && parameters_kept
}

/// `input` with what the catalog's table `found` has and `input` does not say: its
/// description and owner, its other parameters, and the comments of columns kept.
fn merge(found: &aws_sdk_glue::types::Table, input: TableInput) -> TableInput {
    let comment = |name: &str| -> Option<String> {
        found
            .storage_descriptor()
            .map(|s| s.columns())
            .unwrap_or_default()
            .iter()
            .chain(found.partition_keys())
            .find(|c| c.name() == name)
            .and_then(|c| c.comment().map(str::to_string))
    };
    let with_comments = |columns: &[Column]| -> Vec<Column> {
        columns
            .iter()
            .map(|c| match comment(c.name()) {
                Some(text) if c.comment().is_none() => {
                    let mut c = c.clone();
                    c.comment = Some(text);
                    c
                }
                _ => c.clone(),
            })
            .collect()
    };
    let mut parameters = found.parameters().cloned().unwrap_or_default();
    parameters.extend(input.parameters().cloned().unwrap_or_default());
    let mut storage = input.storage_descriptor().cloned();
    if let Some(s) = storage.as_mut() {
        s.columns = Some(with_comments(s.columns()));
    }
    let mut merged = input.clone();
    merged.partition_keys = Some(with_comments(input.partition_keys()));
    merged.storage_descriptor = storage;
    merged.parameters = Some(parameters);
    merged.description = found.description().map(str::to_string);
    merged.owner = found.owner().map(str::to_string);
    merged
}

/// The Glue table `name` of the Delta table at `url` with `schema` (its latest version,
/// `version`), partitioned by `partitions`.
fn table_input(
    name: &str,
    url: &Url,
    schema: &Schema,
    partitions: &[String],
    version: u64,
) -> std::result::Result<TableInput, aws_sdk_glue::error::BuildError> {
    let location = location(url);
    let column = |field: &deltalake::arrow::datatypes::Field| {
        Column::builder()
            .name(field.name().to_lowercase())
            .r#type(hive_type(field.data_type()))
            .build()
    };
    let mut columns = Vec::new();
    let mut keys = Vec::new();
    for partition in partitions {
        if let Ok(field) = schema.field_with_name(partition) {
            keys.push(column(field)?);
        }
    }
    for field in schema.fields() {
        if !partitions.contains(field.name()) {
            columns.push(column(field)?);
        }
    }
    let serde = SerDeInfo::builder()
        .serialization_library("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
        .parameters("path", &location)
        .parameters("serialization.format", "1")
        .build();
    let storage = StorageDescriptor::builder()
        .location(&location)
        .set_columns(Some(columns))
        .input_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        .serde_info(serde)
        .build();
    TableInput::builder()
        .name(name)
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(storage)
        .set_partition_keys(Some(keys))
        .parameters("EXTERNAL", "TRUE")
        .parameters("table_type", "DELTA")
        .parameters("classification", "delta")
        .parameters("spark.sql.sources.provider", "delta")
        .parameters("tributary.delta.version", version.to_string())
        .build()
}

/// The location engines read the table at: the URL with its path decoded (a key, as S3 names
/// it: `order lines/`, not `order%20lines/`), `s3a` spelled `s3` (Athena's), no trailing `/`.
fn location(url: &Url) -> String {
    let path = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy();
    let scheme = match url.scheme() {
        "s3a" => "s3",
        other => other,
    };
    let authority = match url.username() {
        "" => url.host_str().unwrap_or_default().to_string(),
        user => format!("{user}@{}", url.host_str().unwrap_or_default()),
    };
    format!("{scheme}://{authority}{}", path.trim_end_matches('/'))
}

/// The Hive type of an Arrow type, as Glue columns spell it.
fn hive_type(ty: &DataType) -> String {
    match ty {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 | DataType::UInt8 | DataType::UInt16 => "int".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "binary".into(),
        DataType::List(f) | DataType::LargeList(f) => {
            format!("array<{}>", hive_type(f.data_type()))
        }
        _ => "string".into(),
    }
}

/// A refused catalog request, naming the database and table (never a credential).
fn glue_err(database: &str, table: &str, err: &dyn std::error::Error) -> Error {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text = format!("{text}: {e}");
        next = e.source();
    }
    let what = match table {
        "" => format!("database {database}"),
        table => format!("table {database}.{table}"),
    };
    let reason = if text.contains("loading credentials") || text.contains("no providers in chain") {
        "no AWS credentials for the catalog: set them in the environment (AWS_ACCESS_KEY_ID \
         and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...) or an instance role"
            .to_string()
    } else {
        format!("Glue refused the registration: {text}")
    };
    Error::Lake {
        table: format!("catalog {what}"),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::datatypes::{Field, TimeUnit};

    #[test]
    fn locations_are_keys_as_engines_read_them() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            location(&url("s3a://lake/sales/order%20lines/current/")),
            "s3://lake/sales/order lines/current"
        );
        assert_eq!(
            location(&url("abfss://c@acct.dfs.core.windows.net/t/")),
            "abfss://c@acct.dfs.core.windows.net/t"
        );
    }

    #[test]
    fn an_update_keeps_what_others_added_and_a_same_definition_is_left_alone() {
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let url = Url::parse("s3://lake/t/").unwrap();
        let ours = table_input("t", &url, &schema, &[], 3).unwrap();
        let theirs = aws_sdk_glue::types::Table::builder()
            .name("t")
            .description("orders, by Tributary")
            .storage_descriptor(
                StorageDescriptor::builder()
                    .location("s3://lake/t")
                    .columns(
                        Column::builder()
                            .name("id")
                            .r#type("bigint")
                            .comment("the key")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .set_parameters(Some(ours.parameters().unwrap().clone()))
            .parameters("owner_team", "sales")
            .parameters(VERSION_PARAMETER, "1")
            .build()
            .unwrap();
        assert!(same_definition(&theirs, &ours), "only the version differs");
        let wider = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
        ]);
        let changed = table_input("t", &url, &wider, &[], 4).unwrap();
        assert!(!same_definition(&theirs, &changed));
        let merged = merge(&theirs, changed);
        assert_eq!(merged.description(), Some("orders, by Tributary"));
        let parameters = merged.parameters().unwrap();
        assert_eq!(
            (
                parameters["owner_team"].as_str(),
                parameters[VERSION_PARAMETER].as_str()
            ),
            ("sales", "4")
        );
        let columns = merged.storage_descriptor().unwrap().columns();
        assert_eq!(columns[0].comment(), Some("the key"));
        assert_eq!(columns[1].name(), "note");
    }

    #[test]
    fn the_glue_table_has_the_delta_parameters_columns_and_partition_keys() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("Amount", DataType::Decimal128(12, 2), true),
            Field::new("keyhash", DataType::FixedSizeBinary(16), false),
            Field::new("eff_start_date", DataType::Date32, false),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]);
        let url = Url::parse("s3://lake/sales/orders/history/").unwrap();
        let input = table_input(
            "orders_history",
            &url,
            &schema,
            &["eff_start_date".into()],
            7,
        )
        .unwrap();
        let storage = input.storage_descriptor().unwrap();
        assert_eq!(storage.location(), Some("s3://lake/sales/orders/history"));
        let columns: Vec<(&str, &str)> = storage
            .columns()
            .iter()
            .map(|c| (c.name(), c.r#type().unwrap()))
            .collect();
        assert_eq!(
            columns,
            [
                ("id", "bigint"),
                ("amount", "decimal(12,2)"),
                ("keyhash", "binary"),
                ("at", "timestamp")
            ]
        );
        let keys: Vec<(&str, &str)> = input
            .partition_keys()
            .iter()
            .map(|c| (c.name(), c.r#type().unwrap()))
            .collect();
        assert_eq!(keys, [("eff_start_date", "date")]);
        let parameters = input.parameters().unwrap();
        assert_eq!(parameters["table_type"], "DELTA");
        assert_eq!(parameters["spark.sql.sources.provider"], "delta");
        assert_eq!(parameters["tributary.delta.version"], "7");
        assert_eq!(
            storage.serde_info().unwrap().parameters().unwrap()["path"],
            "s3://lake/sales/orders/history"
        );
        assert_eq!(input.table_type(), Some("EXTERNAL_TABLE"));
    }
}
