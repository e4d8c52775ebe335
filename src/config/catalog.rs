//! The `catalog:` section of a table config and of a tables file: where the lake's tables are
//! registered after each run (see `sink::catalog`).
//!
//! ```yaml
//! catalog:
//!   type: glue                 # the AWS Glue Data Catalog (the one kind so far)
//!   database: sales_lake       # created when absent
//!   region: eu-west-1          # default: the AWS SDK's (AWS_REGION, profile)
//!   endpoint: http://127.0.0.1:5000   # default: AWS's; for a local or private endpoint
//! ```

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::Result;

/// Which catalog the tables are registered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// The AWS Glue Data Catalog (Athena, EMR Spark, Trino's Glue metastore).
    Glue,
}

/// A `catalog:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// The catalog's kind (`type: glue`).
    #[serde(rename = "type")]
    pub kind: CatalogKind,
    /// The database the tables are registered in; created when absent. Lower-case letters,
    /// digits and `_`, at most 255 characters (Glue's rule).
    pub database: String,
    /// The AWS region; default the SDK's (`AWS_REGION`, the profile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The endpoint URL (a local or VPC endpoint); default AWS's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl CatalogConfig {
    /// Checks the database name and the endpoint.
    ///
    /// # Errors
    /// [`crate::Error::InvalidFieldValue`] naming `catalog.database` or `catalog.endpoint`.
    pub fn validate(&self) -> Result<()> {
        if !valid_name(&self.database) {
            return Err(invalid(
                "catalog.database",
                "must be 1 to 255 lower-case letters, digits or `_`",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let url = url::Url::parse(endpoint)
                .map_err(|e| invalid("catalog.endpoint", format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("catalog.endpoint", "must be an http(s) URL"));
            }
        }
        Ok(())
    }
}

/// Whether `name` is a catalog name Glue keeps as it is: lower-case letters, digits and `_`,
/// 1 to 255 of them.
pub fn valid_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The catalog name of a table named `name` (a config's `name`, `sales.orders` of a tables
/// file): lower case, every character other than a letter, digit or `_` made `_`, at most
/// 247 characters, so that `<name>_history` fits Glue's 255 (Glue lower-cases names, and
/// Athena reads only those characters unquoted).
pub fn table_name(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(255 - "_history".len())
        .collect()
}

/// Checks that the tables named `names` (each registering `<name>` and `<name>_history`) get
/// catalog names of their own: `sales/orders_history` would be `sales/orders`'s history, and
/// `a_b/c` the same table as `a/b_c`.
///
/// # Errors
/// [`crate::Error::InvalidFieldValue`] naming both tables.
pub fn check_unique<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for name in names {
        let base = table_name(name);
        for registered in [base.clone(), format!("{base}_history")] {
            if let Some(other) = seen.insert(registered.clone(), name) {
                if other != name {
                    return Err(invalid(
                        "catalog",
                        format!(
                            "`{other}` and `{name}` would both register the catalog table \
                             `{registered}`; rename one, or register them in another database"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<CatalogConfig> {
        let config: CatalogConfig =
            serde_yaml::from_str(yaml).map_err(|e| invalid("catalog", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn a_glue_section_is_checked() {
        let ok =
            parse("{type: glue, database: sales_lake, endpoint: 'http://127.0.0.1:5000'}").unwrap();
        assert_eq!(
            (ok.kind, ok.database.as_str()),
            (CatalogKind::Glue, "sales_lake")
        );
        let err = parse("{type: glue, database: Sales-Lake}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("catalog.database"), "{err}");
        let err = parse("{type: glue, database: x, endpoint: 'ftp://h'}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("catalog.endpoint"), "{err}");
        assert!(parse("{type: hive, database: x}").is_err());
        assert!(parse("{type: glue, database: x, table: y}").is_err());
    }

    #[test]
    fn table_names_are_made_catalog_names() {
        assert_eq!(table_name("sales.Orders"), "sales_orders");
        assert_eq!(table_name("sample_data"), "sample_data");
        assert_eq!(table_name("t-1 é"), "t_1__");
        assert!(valid_name(&format!(
            "{}_history",
            table_name(&"x".repeat(300))
        )));
    }

    #[test]
    fn two_tables_may_not_share_a_catalog_name() {
        assert!(check_unique(["sales.orders", "sales.customers"]).is_ok());
        let err = check_unique(["sales.orders", "sales.orders_history"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`sales_orders_history`"), "{err}");
        assert!(check_unique(["a_b.c", "a.b_c"]).is_err());
    }
}
