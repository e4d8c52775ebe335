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
//! the tables of that config and take precedence over the environment. Loading a config
//! records them for the process by table URL ([`register`]); every open of a table ([`open`],
//! [`at`], [`open_as_of`]) takes the options registered for its URL. Values are never
//! printed: [`StorageOptions`]'s `Debug` shows the keys only.

use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

pub use crate::config::storage::{
    check_url, options_for, register, register_lake, StorageOptions, SCHEMES,
};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
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
}
