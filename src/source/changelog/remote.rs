//! A landing zone in an object store (`tributary sync s3://bucket/landing --tables FILE`): the
//! DMS S3 target's and the Kafka Connect S3 sink's own layout, read where they write it.
//!
//! Object stores have no folders: a table's change files are the objects under
//! `<root>/<schema>/<table>/` (date partitions below it included), found by listing the prefix
//! (paginated, every page; `object_store` asks for 1,000 keys a page), and `<schema>/<table>`
//! folders are the common prefixes of two listings with `/` as the delimiter. Listing order
//! means nothing: files are ordered by the same rules as a local landing zone's
//! ([`super::landing::list`]: `LOAD` counter, then change-file name). An object's identity is
//! its key (the file name) and its size, as a local file's is, and then its ETag, recorded in
//! the applied-files table: a `LOAD` object uploaded again (new last-modified time) with the
//! ETag it was applied with is the same load, known without reading it; one with another ETag
//! is compared by its content digest (the same bytes uploaded in other parts get another
//! ETag). A change file listed with another ETag than it was applied with is warned about, not
//! applied again.
//!
//! Only the files a run reads (and a `LOAD` file whose digest decides whether it is a reload)
//! are copied, into a folder of the table's run under a spill folder of the sync (removed when
//! the run ends, or by a later run when the process was killed); errors name the object's URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::logstore::object_store::{path::Path as Key, ObjectStore};
use futures::StreamExt;
use url::Url;

use super::ChangeFile;
use crate::config::tables::Layout;
use crate::core::store::{block_on, bucket_store, subfolders, under};
use crate::error::{Error, Result};

/// A landing root in an object store and the local folder its files are copied into.
pub struct StoreLanding {
    /// The root, ending in `/`.
    pub url: Url,
    store: Arc<dyn ObjectStore>,
    root: Key,
    owned: tempfile::TempDir,
    /// Each listed file's object, by local path: its exact key (as listed, never re-encoded)
    /// and its ETag, the version a copy must be of.
    listed: std::sync::Mutex<std::collections::HashMap<PathBuf, (Key, Option<String>)>>,
    /// The ETag of each local copy made, by local path.
    copied: std::sync::Mutex<std::collections::HashMap<PathBuf, Option<String>>>,
}

/// Objects copied at once.
const FETCHES_IN_FLIGHT: usize = 8;

impl std::fmt::Debug for StoreLanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLanding")
            .field("url", &self.url)
            .finish()
    }
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
        let (store, root) =
            bucket_store(&url, options).map_err(|e| Error::Usage(format!("landing {url}: {e}")))?;
        Ok(StoreLanding {
            url,
            store,
            root,
            owned,
            listed: Default::default(),
            copied: Default::default(),
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
        block_on(async {
            let folders = |at: Key| async move {
                let mut names = subfolders(self.store.as_ref(), &at)
                    .await
                    .map_err(|e| self.error(&at, e))?;
                names.retain(|n| !n.starts_with(['.', '_']));
                Ok::<_, Error>(names)
            };
            let mut found = Vec::new();
            for schema in folders(self.root.clone()).await? {
                let at = under(&self.root, &schema);
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
        let prefix = under(&self.root, source);
        let objects = block_on(async {
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
            file.etag = meta.e_tag.clone();
            self.listed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    file.path.clone(),
                    (meta.location.clone(), meta.e_tag.clone()),
                );
            files.push(file);
        }
        super::landing::sort_files(&mut files);
        Ok(files)
    }

    /// Copies `files` (from the last [`list`](Self::list)) to their local paths, a few at
    /// once, unless the copy there is of the object version listed (same ETag). A copy is of
    /// the version listed or the fetch fails: an object replaced since the listing is read at
    /// the next pass, never a mix. Returns the objects copied and their bytes.
    ///
    /// # Errors
    /// [`Error::Input`] (or an explained store error) naming the object; [`Error::Storage`]
    /// naming the local copy (a full disk).
    pub fn fetch(&self, files: &[&ChangeFile]) -> Result<(usize, u64)> {
        let wanted: Vec<(PathBuf, Key, Option<String>)> = {
            let listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
            let copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
            let mut wanted = Vec::new();
            for file in files {
                let (key, etag) = listed
                    .get(&file.path)
                    .cloned()
                    .ok_or_else(|| Error::Internal(format!("{} was not listed", file.name)))?;
                let fresh = etag.is_some()
                    && copied.get(&file.path) == Some(&etag)
                    && std::fs::metadata(&file.path).is_ok_and(|m| m.len() == file.size);
                if !fresh {
                    wanted.push((file.path.clone(), key, etag));
                }
            }
            wanted
        };
        let fetched: Vec<Result<(PathBuf, Option<String>, u64)>> = block_on(
            futures::stream::iter(wanted)
                .map(|(path, key, etag)| async move {
                    let bytes = self.fetch_one(&path, &key, etag.as_deref()).await?;
                    Ok((path, etag, bytes))
                })
                .buffer_unordered(FETCHES_IN_FLIGHT)
                .collect(),
        )?;
        let mut copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
        let (mut objects, mut total) = (0, 0);
        for result in fetched {
            let (path, etag, bytes) = result?;
            copied.insert(path, etag);
            (objects, total) = (objects + 1, total + bytes);
        }
        Ok((objects, total))
    }

    /// Copies the object `key` (of ETag `etag`, when the listing gave one) to `path`; returns
    /// the bytes copied.
    async fn fetch_one(&self, path: &Path, key: &Key, etag: Option<&str>) -> Result<u64> {
        let local = |source: std::io::Error| Error::Storage {
            action: format!("cannot copy {} to", self.url_of(key)),
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(local)?;
        }
        let options = deltalake::logstore::object_store::GetOptions {
            if_match: etag.map(str::to_string),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(key, options)
            .await
            .map_err(|e| match e {
                deltalake::ObjectStoreError::Precondition { .. } => Error::Input {
                    path: PathBuf::from(self.url_of(key).as_str()),
                    reason:
                        "replaced while this pass read the landing zone; the next pass reads it"
                            .into(),
                },
                e => self.error(key, e),
            })?;
        let mut stream = got.into_stream();
        let mut out = tokio::fs::File::create(path).await.map_err(local)?;
        let mut bytes = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(key, e))?;
            bytes += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                .await
                .map_err(local)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out)
            .await
            .map_err(local)?;
        Ok(bytes)
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
