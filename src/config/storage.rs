//! The `storage_options` of a config and the table URLs it accepts; the stores themselves are
//! reached in `crate::sink::storage`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};

/// The URL schemes a table may be named by (those delta-rs's storage crates register, and
/// `memory` for tests).
pub const SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "adl", "memory",
];

/// Options of an object store, key to value (`AWS_ENDPOINT_URL: http://127.0.0.1:9000`).
/// Keys are those of delta-rs and `object_store` (upper or lower case); values are text.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct StorageOptions(BTreeMap<String, String>);

impl StorageOptions {
    /// Options from key-value pairs.
    pub fn new(options: impl IntoIterator<Item = (String, String)>) -> StorageOptions {
        StorageOptions(options.into_iter().collect())
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The options as delta-rs takes them.
    pub fn to_map(&self) -> HashMap<String, String> {
        self.0.clone().into_iter().collect()
    }

    /// Checks the keys: none empty.
    ///
    /// # Errors
    /// [`Error::InvalidFieldValue`] naming `storage_options`.
    pub fn validate(&self) -> Result<()> {
        if self.0.keys().any(|k| k.trim().is_empty()) {
            return Err(super::invalid("storage_options", "a key must not be empty"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for StorageOptions {
    /// The keys only: values may be secrets (`AWS_SECRET_ACCESS_KEY`, SAS tokens).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Checks that `url` names a store Tributary can reach: a supported scheme, and a bucket (or
/// container) for an object store.
///
/// # Errors
/// [`Error::InvalidFieldValue`] naming `field`.
pub fn check_url(field: &str, url: &Url) -> Result<()> {
    let scheme = url.scheme();
    if !SCHEMES.contains(&scheme) {
        return Err(super::invalid(
            field,
            format!(
                "`{scheme}://` is not a supported store; use a path or one of {}",
                SCHEMES[..SCHEMES.len() - 1]
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if !matches!(scheme, "file" | "memory") && url.host_str().is_none_or(str::is_empty) {
        return Err(super::invalid(
            field,
            format!("{url} names no bucket (expected {scheme}://BUCKET/PATH)"),
        ));
    }
    Ok(())
}

/// The options registered for table URLs, by URL prefix.
static REGISTERED: RwLock<Vec<(String, StorageOptions)>> = RwLock::new(Vec::new());

/// Records `options` for the table at `url` and everything under it, for the rest of the
/// process; a later registration of the same URL replaces it (empty options: the environment
/// applies again). Called when a table config, a tables file with its lake root, or a lake
/// root is loaded; pure bookkeeping, no store is reached.
pub fn register(url: &Url, options: &StorageOptions) {
    let prefix = folder(url);
    let mut registered = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    registered.retain(|(p, _)| *p != prefix);
    if !options.is_empty() {
        registered.push((prefix, options.clone()));
    }
}

/// Registers the `storage_options` of `lake` for each of its tables ([`register`]).
pub fn register_lake(lake: &super::LakeConfig) {
    for url in [
        &lake.current_url,
        &lake.history_url,
        &lake.rejects_url,
        &lake.applied_url,
        &lake.tombstones_url,
    ] {
        register(url, &lake.storage_options);
    }
}

/// The options registered for `url` ([`register`]): those of the longest registered prefix of
/// it; none when no prefix matches.
pub fn options_for(url: &Url) -> HashMap<String, String> {
    let wanted = folder(url);
    let registered = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    registered
        .iter()
        .filter(|(prefix, _)| wanted.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, options)| options.to_map())
        .unwrap_or_default()
}

/// `url` as a folder, ending in `/`, with `s3a://` spelled `s3://` (one store).
fn folder(url: &Url) -> String {
    let text = url.as_str();
    let text = match text.strip_prefix("s3a://") {
        Some(rest) => format!("s3://{rest}"),
        None => text.to_string(),
    };
    if text.ends_with('/') {
        text
    } else {
        format!("{text}/")
    }
}

/// A lake root (`--lake` of `sync`, `capture`, `sql`, `optimize`, `vacuum`): a local folder or
/// an object-store prefix (`s3://bucket/lake/`), under which each table lands in
/// `<schema>/<table>/<role>/`, with the options of its store.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeRoot {
    /// The root as a folder URL (ending in `/`).
    pub url: Url,
    /// Options of the store (a tables file's `storage_options`); none: the environment's.
    pub storage_options: StorageOptions,
}

impl LakeRoot {
    /// The lake root a `--lake` argument names: a URL (`s3://bucket/lake`) or a path, relative
    /// ones resolved against the working folder.
    ///
    /// # Errors
    /// [`Error::Usage`] naming `--lake` for a URL that does not parse, a scheme no store answers
    /// to or a URL without a bucket.
    pub fn parse(text: &str) -> Result<LakeRoot> {
        let usage = |reason: String| Error::Usage(format!("--lake {text}: {reason}"));
        if text.contains("://") {
            let mut url = Url::parse(text).map_err(|e| usage(format!("not a URL: {e}")))?;
            check_url("--lake", &url).map_err(|e| usage(e.to_string()))?;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            return Ok(LakeRoot {
                url,
                storage_options: StorageOptions::default(),
            });
        }
        Ok(LakeRoot::local(&std::path::absolute(text)?))
    }

    /// The local folder `path` as a lake root (a relative path is taken from the working
    /// folder).
    pub fn local(path: &Path) -> LakeRoot {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let url = Url::from_directory_path(&absolute)
            .unwrap_or_else(|()| Url::parse("file:///").expect("a valid URL"));
        LakeRoot {
            url,
            storage_options: StorageOptions::default(),
        }
    }

    /// The same root with the store options `options`.
    pub fn with_options(mut self, options: StorageOptions) -> LakeRoot {
        self.storage_options = options;
        self
    }

    /// The local folder of a `file://` root; None for an object store.
    pub fn folder(&self) -> Option<PathBuf> {
        (self.url.scheme() == "file")
            .then(|| self.url.to_file_path().ok())
            .flatten()
    }

    /// The path (local root) or URL (object store) of table `role` of `<schema>/<table>`, as
    /// `LakeConfig::validate` takes it.
    pub(crate) fn table_path(&self, schema: &str, table: &str, role: &str) -> String {
        match self.folder() {
            Some(folder) => folder
                .join(schema)
                .join(table)
                .join(role)
                .to_string_lossy()
                .into_owned(),
            None => {
                let mut url = self.url.clone();
                url.path_segments_mut()
                    .expect("an object-store URL has a path")
                    .pop_if_empty()
                    .extend([schema, table, role, ""]);
                url.to_string()
            }
        }
    }
}

impl std::fmt::Display for LakeRoot {
    /// The local folder, or the URL.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.folder() {
            Some(folder) => write!(f, "{}", folder.display()),
            None => write!(f, "{}", self.url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn unknown_schemes_and_bucketless_urls_are_refused() {
        assert!(check_url("t", &url("s3://bucket/lake/t/")).is_ok());
        assert!(check_url("t", &url("file:///lake/t/")).is_ok());
        assert!(check_url("t", &url("abfss://c@acct.dfs.core.windows.net/t/")).is_ok());
        let err = check_url("current_table_path", &url("ftp://host/t/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("current_table_path") && err.contains("`ftp://`"),
            "{err}"
        );
        assert!(err.contains("s3://") && !err.contains("memory"), "{err}");
        let err = check_url("t", &url("s3:///t/")).unwrap_err().to_string();
        assert!(err.contains("names no bucket"), "{err}");
    }

    #[test]
    fn a_lake_root_is_a_folder_or_an_object_store_prefix() {
        let s3 = LakeRoot::parse("s3://bucket/lake").unwrap();
        assert_eq!(s3.url.as_str(), "s3://bucket/lake/");
        assert_eq!(s3.folder(), None);
        assert_eq!(
            s3.table_path("sales", "order lines", "current"),
            "s3://bucket/lake/sales/order%20lines/current/"
        );
        assert_eq!(s3.to_string(), "s3://bucket/lake/");
        let local = LakeRoot::parse("/data/lake").unwrap();
        assert_eq!(local.folder(), Some(PathBuf::from("/data/lake")));
        assert_eq!(
            local.table_path("sales", "orders", "history"),
            "/data/lake/sales/orders/history"
        );
        let err = LakeRoot::parse("ftp://host/lake").unwrap_err().to_string();
        assert!(
            err.contains("--lake ftp://host/lake") && err.contains("not a supported store"),
            "{err}"
        );
        assert!(LakeRoot::parse("s3:///lake").is_err());
    }

    #[test]
    fn options_follow_the_longest_registered_prefix_and_never_print_values() {
        let a = StorageOptions::new([("AWS_REGION".into(), "eu-west-1".into())]);
        let b = StorageOptions::new([
            ("AWS_REGION".into(), "us-east-2".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "s3cr3t".into()),
        ]);
        register(&url("s3://opts-test/lake"), &a);
        register(&url("s3://opts-test/lake/sales/"), &b);
        let region = |u: &str| options_for(&url(u)).get("AWS_REGION").cloned();
        assert_eq!(
            region("s3://opts-test/lake/t/").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region("s3://opts-test/lake/sales/orders/").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(
            region("s3a://opts-test/lake/sales/x/").as_deref(),
            Some("us-east-2"),
            "s3a is s3"
        );
        // a sibling whose name only starts like a registered folder is not under it
        assert_eq!(region("s3://opts-test/lakehouse/t/"), None);
        assert_eq!(region("s3://other/lake/t/"), None);
        let shown = format!("{b:?}");
        assert!(
            shown.contains("AWS_SECRET_ACCESS_KEY") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        register(
            &url("s3://opts-test/lake/sales/"),
            &StorageOptions::default(),
        );
        assert_eq!(
            region("s3://opts-test/lake/sales/orders/").as_deref(),
            Some("eu-west-1"),
            "empty options clear a registration"
        );
    }
}
