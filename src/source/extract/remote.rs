//! Extracts in an object store (`tributary run CONFIG s3://bucket/in/2024-01-02/ DATE`): the
//! objects are copied into a local folder of the run, then read as a local extract is.
//!
//! The readers split files by byte ranges and fingerprint their bytes, so they read local
//! files; a copy costs the extract's size on the local disk (under `spill_dir`) for the run's
//! length. It is in a spill folder of the run (`tributary-spill-*`, with its owner file):
//! removed when the run ends, or, when the process is killed, by the next run that spills or
//! stages in the same `spill_dir`. Errors that name a copied file name its object instead
//! ([`StagedInput::rename`]).

use std::path::{Path, PathBuf};

use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt};
use futures::StreamExt;
use url::Url;

use crate::error::{Error, Result};

/// An extract copied from an object store: the local file or folder to read, removed on drop.
#[derive(Debug)]
pub struct StagedInput {
    /// The local copy: a folder of the objects under a prefix, or one file.
    pub path: PathBuf,
    /// Objects copied.
    pub objects: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// The folder the objects were copied into, and the URL of the prefix they are under.
    copied: (PathBuf, Url),
    _folder: tempfile::TempDir,
}

/// The folders of the extracts copied so far and still held, with their prefix URLs: what
/// [`shown`] names their files by.
static STAGED: std::sync::RwLock<Vec<(PathBuf, Url)>> = std::sync::RwLock::new(Vec::new());

/// The object URL of `path` when it is a file of a copied extract (how messages, the run's
/// skipped files and the rejects table name it); None for any other path.
pub fn shown(path: &Path) -> Option<String> {
    let staged = STAGED.read().unwrap_or_else(|e| e.into_inner());
    staged
        .iter()
        .find_map(|(folder, prefix)| object_url(folder, prefix, path))
}

/// The URL under `prefix` of `path`, a file copied into `folder`; None when it is not in it.
fn object_url(folder: &Path, prefix: &Url, path: &Path) -> Option<String> {
    let name = path.strip_prefix(folder).ok()?.to_str()?;
    let mut url = prefix.clone();
    if !name.is_empty() {
        // segments, not `Url::join`: a `#` or `?` in a name is part of it
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(name.split('/'));
    }
    Some(url.to_string())
}

/// `err` with every file under `folder` that it names (a bad row's file, an input path) named
/// by its URL under `prefix` (the file `folder/a/b.csv` as `<prefix>a/b.csv`).
pub fn rename_under(err: Error, folder: &Path, prefix: &Url) -> Error {
    let object = |path: &Path| object_url(folder, prefix, path);
    match err {
        Error::BadRow {
            file,
            line,
            column,
            reason,
        } => Error::BadRow {
            file: object(Path::new(&file)).unwrap_or(file),
            line,
            column,
            reason,
        },
        Error::Input { path, reason } => Error::Input {
            path: object(&path).map_or(path, PathBuf::from),
            reason: reason.replace(&format!("{}/", folder.display()), prefix.as_str()),
        },
        other => other,
    }
}

impl Drop for StagedInput {
    fn drop(&mut self) {
        let mut staged = STAGED.write().unwrap_or_else(|e| e.into_inner());
        staged.retain(|(folder, _)| *folder != self.copied.0);
    }
}

impl StagedInput {
    /// `err` with every copied file it names (a bad row's file, an input path) named by its
    /// object's URL instead.
    pub fn rename(&self, err: Error) -> Error {
        let (folder, prefix) = &self.copied;
        rename_under(err, folder, prefix)
    }
}

/// Whether the INCOMING argument `text` names an object-store URL (`s3://...`) rather than a
/// local path.
pub fn is_url(text: &str) -> bool {
    text.contains("://") && !text.starts_with("file://")
}

/// Copies the extract at `url` into `owned` (a folder of the run, removed with it): the one
/// object it names, or, when it ends in `/` or names no object, every object directly under
/// it (not those of its sub-folders, as a local folder is read; a folder marker is none).
/// `options` are the store's options (the table config's `storage_options`).
///
/// # Errors
/// [`Error::Input`] naming the URL when nothing is there or the store refuses (explained by
/// bucket where the store says why); I/O errors of the local copy.
pub async fn stage(
    url: &Url,
    options: &std::collections::HashMap<String, String>,
    owned: tempfile::TempDir,
) -> Result<StagedInput> {
    crate::config::storage::check_url("INCOMING", url)?;
    let input_err = |reason: String| Error::Input {
        path: PathBuf::from(url.as_str()),
        reason,
    };
    let (store, key) = crate::core::store::bucket_store(url, options.clone())
        .map_err(|e| input_err(e.to_string()))?;
    let folder = owned.path().join("incoming");
    std::fs::create_dir_all(&folder)?;
    let mut objects = Vec::new();
    if !url.path().ends_with('/') {
        match store.head(&key).await {
            Ok(meta) => objects.push(meta),
            Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
            Err(e) => return Err(explained(url, e)),
        }
    }
    let single = !objects.is_empty();
    if !single {
        let listed = store
            .list_with_delimiter(Some(&key))
            .await
            .map_err(|e| explained(url, e))?;
        // a folder marker (the prefix itself, `in/d3/`) is no file
        objects = listed
            .objects
            .into_iter()
            .filter(|o| o.location != key && !o.location.as_ref().ends_with('/'))
            .collect();
        objects.sort_by(|a, b| a.location.cmp(&b.location));
    }
    if objects.is_empty() {
        return Err(input_err(
            "no object there, nor under it as a folder".into(),
        ));
    }
    let mut bytes = 0;
    let mut last = None;
    for meta in &objects {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        let local = folder.join(name);
        tracing::info!(object = %meta.location, bytes = meta.size, "copying the extract");
        let mut stream = store
            .get(&meta.location)
            .await
            .map_err(|e| explained(url, e))?
            .into_stream();
        let mut file = tokio::fs::File::create(&local).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| explained(url, e))?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        bytes += meta.size;
        last = Some(local);
    }
    let path = match (single, last) {
        (true, Some(file)) => file,
        _ => folder.clone(),
    };
    // the URL the copied names are relative to: the prefix, or the object's folder
    let mut prefix = url.clone();
    if single || !prefix.path().ends_with('/') {
        let parent = match (single, prefix.path().rsplit_once('/')) {
            (true, Some((parent, _))) => format!("{parent}/"),
            _ => format!("{}/", prefix.path()),
        };
        prefix.set_path(&parent);
    }
    STAGED
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push((folder.clone(), prefix.clone()));
    Ok(StagedInput {
        path,
        objects: objects.len(),
        bytes,
        copied: (folder, prefix),
        _folder: owned,
    })
}

/// A store error of the extract at `url`, explained where the store says why.
fn explained(url: &Url, err: deltalake::ObjectStoreError) -> Error {
    crate::error::explain_store_error("INCOMING", url, &err).unwrap_or_else(|| Error::Input {
        path: PathBuf::from(url.as_str()),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_object_store_urls_are_staged() {
        assert!(is_url("s3://bucket/in/"));
        assert!(is_url("gs://bucket/in/a.csv"));
        assert!(!is_url("file:///in/a.csv"));
        assert!(!is_url("/in/a.csv"));
        assert!(!is_url("in/day2"));
    }

    /// A local store stands in for a bucket: a prefix copies the objects directly under it,
    /// one key copies that object, the copy goes when dropped, and nothing there is an error
    /// naming the URL.
    #[tokio::test]
    async fn a_prefix_or_one_object_is_copied_and_removed_on_drop() {
        let bucket = tempfile::tempdir().unwrap();
        let day = bucket.path().join("in/d2");
        std::fs::create_dir_all(day.join("sub")).unwrap();
        std::fs::write(day.join("a.csv"), "a,1\n").unwrap();
        std::fs::write(day.join("b.csv"), "b,22\n").unwrap();
        std::fs::write(day.join("sub/c.csv"), "c,3\n").unwrap();
        let under = tempfile::tempdir().unwrap();
        let none = std::collections::HashMap::new();

        let prefix = Url::from_directory_path(&day).unwrap();
        let staged = stage(&prefix, &none, tempfile::tempdir_in(under.path()).unwrap())
            .await
            .unwrap();
        assert_eq!((staged.objects, staged.bytes), (2, 9));
        let mut names: Vec<_> = std::fs::read_dir(&staged.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.csv", "b.csv"]);
        assert_eq!(
            std::fs::read_to_string(staged.path.join("b.csv")).unwrap(),
            "b,22\n"
        );
        let err = staged.rename(Error::BadRow {
            file: staged.path.join("b.csv").display().to_string(),
            line: 1,
            column: None,
            reason: "bad".into(),
        });
        assert!(
            err.to_string()
                .starts_with(&format!("{prefix}b.csv, line 1")),
            "{err}"
        );
        // the run's messages and rejects name the object too, while the copy is held
        let file = staged.path.join("a.csv");
        assert_eq!(shown(&file), Some(format!("{prefix}a.csv")));
        let copy = staged.path.clone();
        drop(staged);
        assert!(!copy.exists());
        assert_eq!(shown(&file), None);

        let one = Url::from_file_path(day.join("b.csv")).unwrap();
        let staged = stage(&one, &none, tempfile::tempdir_in(under.path()).unwrap())
            .await
            .unwrap();
        assert_eq!(staged.objects, 1);
        assert_eq!(std::fs::read_to_string(&staged.path).unwrap(), "b,22\n");
        let err = staged.rename(Error::Input {
            path: staged.path.clone(),
            reason: "empty".into(),
        });
        assert_eq!(err.to_string(), format!("input {one}: empty"));

        let nothing = Url::from_directory_path(bucket.path().join("in/d3")).unwrap();
        let err = stage(&nothing, &none, tempfile::tempdir_in(under.path()).unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in/d3") && err.contains("no object there"),
            "{err}"
        );
    }
}
