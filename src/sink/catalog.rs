//! Catalog registration: a table's current and history Delta tables in the AWS Glue Data
//! Catalog, so that Athena, Spark with the Glue catalog and Trino find them by name, as the
//! DMS walkthrough's Glue jobs and DeltaStreamer's Hive sync do.
//!
//! After each run (applied or not), [`register`] makes the `catalog.database` when it is
//! absent, then creates, or updates, two tables:
//!
//! | table | location | columns | partition keys |
//! |---|---|---|---|
//! | `<name>` | `current_table_path` | the current table's, but its partition columns | `partition_by` |
//! | `<name>_history` | `history_table_path` | the history table's, but `eff_start_date` | `eff_start_date` (`date`) |
//!
//! `<name>` is the config's `name` (`sales.orders` for a tables file) made a catalog name
//! (`sales_orders`, see [`crate::config::catalog::table_name`]). Columns are those of the Delta
//! table's latest version, in Hive types (`string`, `bigint`, `double`, `decimal(p,s)`,
//! `date`, `timestamp`, `binary`, ...), so a column added at the source reaches the catalog at
//! the next run. Each table is an `EXTERNAL_TABLE` with the parameters engines read a Delta
//! table by: `table_type = DELTA` (Athena), `spark.sql.sources.provider = delta` and the
//! SerDe parameter `path` (Spark), the Parquet input and output formats, and
//! `tributary.delta.version` (the version registered).
//!
//! Credentials and region are the AWS SDK's default chain (environment, shared config and
//! credentials files, web identity, instance metadata); `catalog.region` and
//! `catalog.endpoint` override the region and the endpoint. A registration never changes the
//! lake: a failure is reported by the command (exit code 6 when the run itself succeeded),
//! and the next run registers again.

use aws_sdk_glue::types::{Column, DatabaseInput, SerDeInfo, StorageDescriptor, TableInput};
use deltalake::arrow::datatypes::{DataType, Schema};
use serde::Serialize;
use url::Url;

use crate::config::catalog::{table_name, CatalogConfig};
use crate::config::TableSpec;
use crate::core::schema::EFF_START_DATE;
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
    let client = client(catalog).await;
    let database = catalog.database.as_str();
    ensure_database(&client, database).await?;
    let name = table_name(&spec.name);
    let tables = [
        (
            name.clone(),
            &spec.lake.current_url,
            spec.lake.partition_by.clone(),
        ),
        (
            format!("{name}_history"),
            &spec.lake.history_url,
            vec![EFF_START_DATE.to_string()],
        ),
    ];
    let mut registered = Vec::new();
    for (table, url, partitions) in tables {
        let Some(delta) = crate::sink::delta::stored_table(url).await? else {
            continue;
        };
        let schema = delta.snapshot()?.snapshot().arrow_schema();
        let version = delta.version().unwrap_or_default();
        let input = table_input(&table, url, &schema, &partitions, version)
            .map_err(|e| glue_err(database, &table, &e))?;
        create_or_update(&client, database, input).await?;
        registered.push(format!("{database}.{table}"));
    }
    Ok(Registered {
        database: database.to_string(),
        tables: registered,
        error: None,
    })
}

/// A Glue client with the SDK's default credentials chain, and `catalog`'s region and endpoint
/// where it sets them.
async fn client(catalog: &CatalogConfig) -> aws_sdk_glue::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &catalog.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &catalog.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    aws_sdk_glue::Client::new(&loader.load().await)
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

/// Creates the table `input` names, or updates it when it exists.
async fn create_or_update(
    client: &aws_sdk_glue::Client,
    database: &str,
    input: TableInput,
) -> Result<()> {
    let table = input.name().to_string();
    let created = client
        .create_table()
        .database_name(database)
        .table_input(input.clone())
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_already_exists_exception()) =>
        {
            client
                .update_table()
                .database_name(database)
                .table_input(input)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| glue_err(database, &table, &e))
        }
        Err(e) => Err(glue_err(database, &table, &e)),
    }
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
    let location = url.as_str().trim_end_matches('/').to_string();
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
