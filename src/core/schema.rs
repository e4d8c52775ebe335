//! Column types of the table config and their Arrow and Delta equivalents.

use std::fmt;
use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// Name of the 16-byte key digest column.
pub const KEYHASH: &str = "keyhash";
/// Name of the 16-byte non-key digest column.
pub const NONKEYHASH: &str = "nonkeyhash";
/// Name of the one-letter operation column (I, U, D, X, N).
pub const OPERATION: &str = "operation";
/// Name of the business effective date column (Delta `date`).
pub const EFF_START_DATE: &str = "eff_start_date";
/// Columns Tributary adds after the configured ones, in this order.
pub const SYSTEM_COLUMNS: [&str; 4] = [KEYHASH, NONKEYHASH, OPERATION, EFF_START_DATE];
/// Name of the change-log tables' last column: each row's source position (`long`, NULL when
/// unknown; see `ChangeBatch::positions`).
pub const SOURCE_POSITION: &str = "source_position";
/// Names a configured column may not take: the [`SYSTEM_COLUMNS`] and [`SOURCE_POSITION`].
pub const RESERVED_COLUMNS: [&str; 5] = [
    KEYHASH,
    NONKEYHASH,
    OPERATION,
    EFF_START_DATE,
    SOURCE_POSITION,
];

/// A column type as written in the config (`type:`).
///
/// `float` is a 64-bit double, as in the seed article (its `gen_tgt_schema` maps `float` to Spark
/// `DoubleType`). Timestamps are microseconds since the Unix epoch in UTC (Delta `timestamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `string`: UTF-8 text.
    String,
    /// `int`: 32-bit integer.
    Int,
    /// `long`: 64-bit integer.
    Long,
    /// `double` (or `float`): 64-bit floating point.
    Double,
    /// `decimal(p,s)`: `precision` digits, `scale` of them after the point.
    Decimal {
        /// Digits in all (1 to 38).
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// `boolean`.
    Boolean,
    /// `date`: days since 1970-01-01.
    Date,
    /// `timestamp`: microseconds since the Unix epoch, UTC.
    Timestamp,
}

impl ColumnType {
    /// Parses a config type name: `string`, `int`/`integer`, `long`/`bigint`, `float`/`double`,
    /// `decimal(p,s)`, `boolean`/`bool`, `date`, `timestamp`.
    ///
    /// # Errors
    /// [`Error::InvalidFieldValue`] naming `field` when the name is unknown or the decimal
    /// precision/scale is out of range (1..=38, 0..=precision).
    pub fn parse(text: &str, field: &str) -> Result<Self> {
        let lower = text.trim().to_ascii_lowercase();
        let invalid = |constraint: String| Error::InvalidFieldValue {
            field: field.to_string(),
            constraint,
        };
        Ok(match lower.as_str() {
            "string" | "str" | "varchar" | "text" => ColumnType::String,
            "int" | "integer" => ColumnType::Int,
            "long" | "bigint" => ColumnType::Long,
            "float" | "double" => ColumnType::Double,
            "boolean" | "bool" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            other => {
                let inner = other
                    .strip_prefix("decimal(")
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(|| {
                        invalid(format!(
                            "unknown type `{text}`; expected string, int, long, float, double, \
                             decimal(p,s), boolean, date or timestamp"
                        ))
                    })?;
                let (p, s) = inner
                    .split_once(',')
                    .ok_or_else(|| invalid(format!("`{text}`: write decimal(precision,scale)")))?;
                let precision: u8 = p
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("`{text}`: precision is not a number")))?;
                let scale: i8 = s
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("`{text}`: scale is not a number")))?;
                if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
                    return Err(invalid(format!(
                        "`{text}`: precision must be 1..=38 and scale 0..=precision"
                    )));
                }
                ColumnType::Decimal { precision, scale }
            }
        })
    }

    /// The column type held in Arrow type `ty` ([`arrow_type`](Self::arrow_type) read back;
    /// None for a type no column type maps to).
    pub fn from_arrow(ty: &DataType) -> Option<Self> {
        Some(match ty {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
            DataType::Int32 => ColumnType::Int,
            DataType::Int64 => ColumnType::Long,
            DataType::Float64 => ColumnType::Double,
            DataType::Decimal128(precision, scale) => ColumnType::Decimal {
                precision: *precision,
                scale: *scale,
            },
            DataType::Boolean => ColumnType::Boolean,
            DataType::Date32 => ColumnType::Date,
            DataType::Timestamp(TimeUnit::Microsecond, _) => ColumnType::Timestamp,
            _ => return None,
        })
    }

    /// The Arrow type a column of this type is held in (and written to Parquet/Delta as).
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int => DataType::Int32,
            ColumnType::Long => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => write!(f, "string"),
            ColumnType::Int => write!(f, "int"),
            ColumnType::Long => write!(f, "long"),
            ColumnType::Double => write!(f, "double"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Boolean => write!(f, "boolean"),
            ColumnType::Date => write!(f, "date"),
            ColumnType::Timestamp => write!(f, "timestamp"),
        }
    }
}

/// Arrow schema of the configured columns only (all nullable), in config order.
pub fn payload_schema(columns: &[(String, ColumnType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, ty)| Field::new(name, ty.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Arrow schema of a current or history table: the configured columns, then `keyhash` and
/// `nonkeyhash` (binary, 16 bytes), `operation` (string, one letter) and `eff_start_date` (date).
pub fn table_schema(columns: &[(String, ColumnType)]) -> SchemaRef {
    hashed_schema(
        columns,
        [
            Field::new(OPERATION, DataType::Utf8, false),
            Field::new(EFF_START_DATE, DataType::Date32, false),
        ],
    )
}

/// Arrow schema of a change-log table's current or history table: [`table_schema`], then
/// `source_position` (long, nullable).
pub fn changelog_schema(columns: &[(String, ColumnType)]) -> SchemaRef {
    hashed_schema(
        columns,
        [
            Field::new(OPERATION, DataType::Utf8, false),
            Field::new(EFF_START_DATE, DataType::Date32, false),
            Field::new(SOURCE_POSITION, DataType::Int64, true),
        ],
    )
}

/// The configured columns, then `keyhash` and `nonkeyhash` (binary), then `trailing`.
pub fn hashed_schema(
    columns: &[(String, ColumnType)],
    trailing: impl IntoIterator<Item = Field>,
) -> SchemaRef {
    let mut fields: Vec<Field> = payload_schema(columns)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(KEYHASH, DataType::Binary, false));
    fields.push(Field::new(NONKEYHASH, DataType::Binary, false));
    fields.extend(trailing);
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_type() {
        let cases = [
            ("string", ColumnType::String),
            ("int", ColumnType::Int),
            ("long", ColumnType::Long),
            ("float", ColumnType::Double),
            ("double", ColumnType::Double),
            ("boolean", ColumnType::Boolean),
            ("date", ColumnType::Date),
            ("timestamp", ColumnType::Timestamp),
            (
                "decimal(10, 2)",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(ColumnType::parse(text, "t").unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn rejects_unknown_types_and_bad_decimals_naming_the_field() {
        for bad in [
            "varchar2",
            "decimal(0,0)",
            "decimal(5,6)",
            "decimal(39,1)",
            "decimal(5)",
        ] {
            let err = ColumnType::parse(bad, "columns[3].type")
                .unwrap_err()
                .to_string();
            assert!(err.contains("columns[3].type"), "{bad}: {err}");
        }
    }

    #[test]
    fn table_schema_appends_system_columns_in_order() {
        let schema = table_schema(&[("id".into(), ColumnType::Long)]);
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["id", KEYHASH, NONKEYHASH, OPERATION, EFF_START_DATE]
        );
    }
}
