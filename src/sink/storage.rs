//! Where the lake's tables are kept: a local folder or an object store, named by a URL.
//!
//! | scheme | store | credentials (environment, as each ecosystem reads them) |
//! |---|---|---|
//! | `file://` (or a plain path) | local file system | - |
//! | `s3://`, `s3a://` | Amazon S3 and S3-compatible stores (MinIO, Ceph, R2, SeaweedFS) | `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_PROFILE` with the shared config and credentials files, web identity, container and instance metadata (the AWS SDK's default chain, as delta-rs resolves it) |
//! | `gs://` | Google Cloud Storage | `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, instance metadata |
//! | `az://`, `abfs://`, `abfss://`, `azure://`, `adl://` | Azure Blob Storage, ADLS Gen2 | `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY`, a SAS token, a client secret or managed identity |
//!
//! Every table is read and written through delta-rs's storage crates (`deltalake-aws`,
//! `-gcp`, `-azure`) over `object_store`; no request is hand-written here. A Delta commit on S3
//! is a conditional PUT (`If-None-Match: *`) of the version's log file, which S3 and the
//! S3-compatible stores above honour: two writers of one table never both make a version, and
//! no lock table (DynamoDB) nor unsafe rename is used.
//!
//! A config's `storage_options` (the keys delta-rs's Python users pass: `AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ALLOW_HTTP`, `AWS_PROFILE`, `AZURE_STORAGE_ACCOUNT_NAME`, ...) apply to
//! the tables of that config and take precedence over the environment. [`register`] records
//! them for the process by table URL; every open of a table ([`open`], [`at`]) takes the
//! options registered for its URL. Values are never printed: [`StorageOptions`]'s `Debug`
//! shows the keys only.

use std::collections::HashMap;
use std::sync::RwLock;

use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

pub use crate::config::storage::{check_url, StorageOptions, SCHEMES};
use crate::error::Error;

/// The options registered for table URLs, by URL prefix.
static REGISTERED: RwLock<Vec<(String, StorageOptions)>> = RwLock::new(Vec::new());

/// Records `options` for the table at `url` and everything under it, for the rest of the
/// process (a later registration of the same URL replaces it). Empty options are not
/// recorded: the environment applies.
pub fn register(url: &Url, options: &StorageOptions) {
    if options.is_empty() {
        return;
    }
    let prefix = folder(url);
    let mut registered = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    registered.retain(|(p, _)| *p != prefix);
    registered.push((prefix, options.clone()));
}

/// Registers the `storage_options` of `lake` for each of its tables ([`register`]).
pub fn register_lake(lake: &crate::config::LakeConfig) {
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

/// `url` as a folder, ending in `/`.
fn folder(url: &Url) -> String {
    let text = url.as_str();
    if text.ends_with('/') {
        text.to_string()
    } else {
        format!("{text}/")
    }
}

/// Opens the Delta table at `url` with its registered options ([`options_for`]).
///
/// # Errors
/// Delta errors ([`DeltaTableError::NotATable`] when no table is there).
pub async fn open(url: &Url) -> std::result::Result<DeltaTable, DeltaTableError> {
    deltalake::open_table_with_storage_options(url.clone(), options_for(url)).await
}

/// The Delta table at `url` with its registered options, at the version committed at or
/// before `datetime` (RFC 3339).
///
/// # Errors
/// Delta errors (a time before the table's first version among them).
pub async fn open_as_of(
    url: &Url,
    datetime: &str,
) -> std::result::Result<DeltaTable, DeltaTableError> {
    deltalake::DeltaTableBuilder::from_url(url.clone())?
        .with_storage_options(options_for(url))
        .with_datestring(datetime)?
        .load()
        .await
}

/// The Delta table at `url` with its registered options, loaded when there is one (a table to
/// create otherwise).
///
/// # Errors
/// Delta errors other than "not a table".
pub async fn at(url: &Url) -> std::result::Result<DeltaTable, DeltaTableError> {
    DeltaTable::try_from_url_with_storage_options(url.clone(), options_for(url)).await
}

/// Whether `a` and `b` are in one namespace of one store, so that a file of one can be given
/// a second name in the other by the store's own copy (a hard link on a local disk, a
/// server-side copy in a bucket): both local, or both in the same bucket (container) of the
/// same kind of store with the same options.
pub fn same_store(a: &Url, b: &Url) -> bool {
    match (a.scheme(), b.scheme()) {
        ("file", "file") => true,
        // two `memory` tables are two stores
        ("memory", _) | (_, "memory") => false,
        (x, y) => {
            fn family(scheme: &str) -> &str {
                match scheme {
                    "s3a" => "s3",
                    other => other,
                }
            }
            family(x) == family(y)
                && a.host_str() == b.host_str()
                && a.username() == b.username()
                && options_for(a) == options_for(b)
        }
    }
}

/// Explains an object-store failure of the table `role` at `url` in the user's terms, when the
/// error says the bucket does not exist, access is denied or no credentials were found; None
/// for other errors (reported as they are). The explanation names the bucket and path, never
/// a credential.
pub fn explain(role: &str, url: &Url, err: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut text = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        text.push_str(&e.to_string());
        text.push('\n');
        next = e.source();
    }
    let bucket = url.host_str().unwrap_or_default();
    let reason = if text.contains("NoSuchBucket") || text.contains("bucket does not exist") {
        format!("the bucket `{bucket}` does not exist (or is not in the configured region and endpoint)")
    } else if text.contains("403 Forbidden")
        || text.contains("AccessDenied")
        || text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
    {
        format!(
            "access denied to {url}: the store refused the request (check that credentials \
             are set, in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             AWS_PROFILE, ...) or the config's `storage_options`, that the region is right, \
             and that they may read and write `{bucket}`)"
        )
    } else if text.contains("credential")
        && (text.contains("not load")
            || text.contains("no providers")
            || text.contains("Missing")
            || text.contains("provider"))
    {
        format!(
            "no credentials for {url}: set them in the environment (AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...) or in the config's `storage_options`"
        )
    } else {
        return None;
    };
    Some(Error::Lake {
        table: role.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
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
        // a sibling whose name only starts like a registered folder is not under it
        assert_eq!(region("s3://opts-test/lakehouse/t/"), None);
        assert_eq!(region("s3://other/lake/t/"), None);
        let shown = format!("{b:?}");
        assert!(
            shown.contains("AWS_SECRET_ACCESS_KEY") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn only_one_bucket_of_one_store_family_is_one_namespace() {
        let same = |a: &str, b: &str| same_store(&url(a), &url(b));
        assert!(same("file:///a/", "file:///b/"));
        assert!(same("s3://b1/cur/", "s3a://b1/hist/"));
        assert!(!same("s3://b1/cur/", "s3://b2/hist/"));
        assert!(!same("s3://b1/cur/", "gs://b1/hist/"));
        assert!(!same("memory:///a/", "memory:///b/"));
        assert!(!same("file:///a/", "s3://b1/a/"));
    }

    #[test]
    fn store_failures_are_explained_by_bucket_without_secrets() {
        let u = url("s3://missing-bucket/lake/t/");
        let e = std::io::Error::other(
            "Error performing GET: NoSuchBucket: The specified bucket does not exist",
        );
        let text = explain("current", &u, &e).unwrap().to_string();
        assert!(text.contains("`missing-bucket` does not exist"), "{text}");
        let e = std::io::Error::other("Client error with status 403 Forbidden: InvalidAccessKeyId");
        let text = explain("history", &u, &e).unwrap().to_string();
        assert!(
            text.contains("access denied to s3://missing-bucket/lake/t/"),
            "{text}"
        );
        let e = std::io::Error::other("connection reset");
        assert!(explain("current", &u, &e).is_none());
    }
}
