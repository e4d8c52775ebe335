//! A landing zone in an object store (`tributary sync s3://bucket/landing --tables FILE`): the
//! DMS S3 target's and the Kafka Connect S3 sink's own layout, read where they write it.
//!
//! Object stores have no folders: a table's change files are the objects under
//! `<root>/<schema>/<table>/` (date partitions below it included), found by listing the prefix
//! (paginated, every page; `object_store` asks for 1,000 keys a page), and `<schema>/<table>`
//! folders are the common prefixes of two listings with `/` as the delimiter. Listing order
//! means nothing: files are ordered by the same rules as a local landing zone's
//! ([`super::landing::list`]: `LOAD` counter, then change-file name). An object's identity is
//! its key (the file name), its size, and its last-modified time or, for a `LOAD` file copied
//! again, its content digest, as a local file's is.
//!
//! Only the files a run reads (and a `LOAD` file whose digest decides whether it is a reload)
//! are copied, into a folder of the table's run under a spill folder of the sync (removed when
//! the run ends, or by a later run when the process was killed); errors name the object's URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::logstore::object_store::{path::Path as Key, ObjectStore, ObjectStoreExt};
use futures::StreamExt;
use url::Url;

use super::ChangeFile;
use crate::config::tables::Layout;
use crate::error::{Error, Result};

/// A landing root in an object store and the local folder its files are copied into.
pub struct StoreLanding {
    /// The root, ending in `/`.
    pub url: Url,
    store: Arc<dyn ObjectStore>,
    root: Key,
    owned: tempfile::TempDir,
}

impl std::fmt::Debug for StoreLanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLanding")
            .field("url", &self.url)
            .finish()
    }
}

/// Runs `future` to its end from synchronous code on the multi-thread runtime.
fn block<F: std::future::Future>(future: F) -> Result<F::Output> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Internal(format!("no async runtime: {e}")))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(Error::Internal(
            "an object-store landing zone needs the multi-thread runtime".into(),
        ));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(future)))
}

impl StoreLanding {
    /// The landing root at `url` (`options`: the tables file's `storage_options`), copying
    /// into `owned` (a spill folder of the sync).
    ///
    /// # Errors
    /// [`Error::Usage`] for a URL no store answers to.
    pub fn open(
        url: &Url,
        options: std::collections::HashMap<String, String>,
        owned: tempfile::TempDir,
    ) -> Result<StoreLanding> {
        crate::config::storage::check_url("LANDING_ROOT", url)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let mut url = url.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let mut bucket = url.clone();
        bucket.set_path("/");
        let store = deltalake::logstore::store_for(&bucket, options)
            .map_err(|e| Error::Usage(format!("landing {url}: {e}")))?;
        let root = Key::from_url_path(url.path())
            .map_err(|e| Error::Usage(format!("landing {url}: {e}")))?;
        Ok(StoreLanding {
            url,
            store,
            root,
            owned,
        })
    }

    /// A store error of `what` (a prefix or an object), explained where the store says why.
    fn error(&self, what: &Key, err: deltalake::ObjectStoreError) -> Error {
        let url = self.url_of(what);
        crate::error::explain_store_error("landing", &url, &err).unwrap_or_else(|| Error::Input {
            path: PathBuf::from(url.as_str()),
            reason: format!("cannot list or read: {err}"),
        })
    }

    /// The URL of `key`.
    fn url_of(&self, key: &Key) -> Url {
        let mut url = self.url.clone();
        url.set_path(&format!("/{}", key.as_ref()));
        url
    }

    /// The `<schema>/<table>` folders under the root, sorted (names starting with `.` or `_`
    /// left out, as locally).
    ///
    /// # Errors
    /// [`Error::Input`] (or an explained store error) when the root cannot be listed.
    pub fn discover(&self) -> Result<Vec<String>> {
        block(async {
            let folders = |at: Key| async move {
                let listed = self
                    .store
                    .list_with_delimiter(Some(&at))
                    .await
                    .map_err(|e| self.error(&at, e))?;
                let mut names: Vec<String> = listed
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(str::to_string))
                    .filter(|n| !n.starts_with(['.', '_']))
                    .collect();
                names.sort();
                Ok::<_, Error>(names)
            };
            let mut found = Vec::new();
            for schema in folders(self.root.clone()).await? {
                let at = self.root.clone().join(schema.as_str());
                for table in folders(at).await? {
                    found.push(format!("{schema}/{table}"));
                }
            }
            Ok(found)
        })?
    }

    /// The change files of table folder `source` (`<schema>/<table>`) in source order, each
    /// named by its key under the folder and given its local path under `staging` (copied by
    /// [`fetch`](Self::fetch)). Keys with a part starting with `.` or `_` are left out; keys
    /// that are no change file of `layout` are skipped with a warning, as locally.
    ///
    /// # Errors
    /// [`Error::Input`] (or an explained store error) when the folder cannot be listed.
    pub fn list(&self, source: &str, layout: Layout, staging: &Path) -> Result<Vec<ChangeFile>> {
        let prefix = source
            .split('/')
            .fold(self.root.clone(), |key, part| key.join(part));
        let objects = block(async {
            let mut listed = self.store.list(Some(&prefix));
            let mut out = Vec::new();
            while let Some(meta) = listed.next().await {
                out.push(meta.map_err(|e| self.error(&prefix, e))?);
            }
            Ok::<_, Error>(out)
        })??;
        let mut files = Vec::new();
        for meta in objects {
            let Some(name) = meta.location.prefix_match(&prefix).map(|parts| {
                parts
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            }) else {
                continue;
            };
            if name.is_empty() || name.split('/').any(|p| p.starts_with(['.', '_'])) {
                continue;
            }
            let file_name = name.rsplit('/').next().unwrap_or(&name);
            let Some((kind, format, _)) = super::landing::classify(file_name, layout) else {
                tracing::warn!(object = %self.url_of(&meta.location), %layout, "not a change file of this layout; skipped");
                continue;
            };
            let mut file = ChangeFile::new(staging.join(&name), &name, kind, format, meta.size);
            file.modified_ms = meta.last_modified.timestamp_millis();
            files.push(file);
        }
        super::landing::sort_files(&mut files);
        Ok(files)
    }

    /// Copies `files` of table folder `source` (from [`list`](Self::list)) to their local
    /// paths, unless a copy of the same size is there.
    ///
    /// # Errors
    /// [`Error::Input`] (or an explained store error) naming the object; local I/O errors.
    pub fn fetch(&self, source: &str, files: &[&ChangeFile]) -> Result<()> {
        block(async {
            for file in files {
                if std::fs::metadata(&file.path).is_ok_and(|m| m.len() == file.size) {
                    continue;
                }
                let key = source
                    .split('/')
                    .chain(file.name.split('/'))
                    .fold(self.root.clone(), |key, part| key.join(part));
                if let Some(parent) = file.path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut stream = self
                    .store
                    .get(&key)
                    .await
                    .map_err(|e| self.error(&key, e))?
                    .into_stream();
                let mut out = tokio::fs::File::create(&file.path).await?;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.error(&key, e))?;
                    tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
                }
                tokio::io::AsyncWriteExt::flush(&mut out).await?;
            }
            Ok::<_, Error>(())
        })?
    }

    /// A new folder for the copies of one table's run, under the sync's spill folder.
    ///
    /// # Errors
    /// I/O errors.
    pub fn staging(&self) -> Result<tempfile::TempDir> {
        Ok(tempfile::Builder::new()
            .prefix("table-")
            .tempdir_in(self.owned.path())?)
    }

    /// The URL of table folder `source`, for messages (`s3://bucket/landing/sales/orders/`).
    pub fn folder_url(&self, source: &str) -> Url {
        let mut url = self.url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(source.split('/')).push("");
        }
        url
    }
}

/// `err` with the files copied into `staging` that it names named by their URL under `folder`.
pub fn rename(err: Error, staging: &Path, folder: &Url) -> Error {
    crate::source::extract::remote::rename_under(err, staging, folder)
}
