//! Extracts in an object store (`tributary run CONFIG s3://bucket/in/2024-01-02/ DATE`): the
//! objects are copied into a local folder of the run, then read as a local extract is.
//!
//! The readers split files by byte ranges and fingerprint their bytes, so they read local
//! files; a copy costs the extract's size on the local disk (under `spill_dir`) for the run's
//! length, and is removed when the run ends, whatever its outcome.

use std::path::{Path, PathBuf};

use deltalake::logstore::object_store::{path::Path as StorePath, ObjectStore, ObjectStoreExt};
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
    _folder: tempfile::TempDir,
}

/// Whether the INCOMING argument `text` names an object-store URL (`s3://...`) rather than a
/// local path.
pub fn is_url(text: &str) -> bool {
    text.contains("://") && !text.starts_with("file://")
}

/// Copies the extract at `url` into a new folder under `under`: the one object it names, or,
/// when it ends in `/` or names no object, every object directly under it (not those of its
/// sub-folders, as a local folder is read). `options` are the store's options (the table
/// config's `storage_options`).
///
/// # Errors
/// [`Error::Input`] naming the URL when nothing is there or the store refuses; I/O errors of
/// the local copy.
pub async fn stage(
    url: &Url,
    options: &std::collections::HashMap<String, String>,
    under: &Path,
) -> Result<StagedInput> {
    crate::config::storage::check_url("INCOMING", url)?;
    let input_err = |reason: String| Error::Input {
        path: PathBuf::from(url.as_str()),
        reason,
    };
    let (store, key) = root_store(url, options).map_err(|e| input_err(e.to_string()))?;
    let folder = tempfile::Builder::new()
        .prefix("tributary-incoming-")
        .tempdir_in(under)?;
    let mut objects = Vec::new();
    if !url.path().ends_with('/') {
        if let Ok(meta) = store.head(&key).await {
            objects.push(meta);
        }
    }
    let single = !objects.is_empty();
    if !single {
        let listed = store
            .list_with_delimiter(Some(&key))
            .await
            .map_err(|e| explained(url, e))?;
        objects = listed.objects;
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
        let local = folder.path().join(name);
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
        _ => folder.path().to_path_buf(),
    };
    Ok(StagedInput {
        path,
        objects: objects.len(),
        bytes,
        _folder: folder,
    })
}

/// The store of `url`'s bucket (through delta-rs's factories: the same credential chain as the
/// tables) and the key `url` names in it.
fn root_store(
    url: &Url,
    options: &std::collections::HashMap<String, String>,
) -> std::result::Result<(std::sync::Arc<dyn ObjectStore>, StorePath), Box<dyn std::error::Error>> {
    let mut root = url.clone();
    root.set_path("/");
    let store = deltalake::logstore::store_for(&root, options.clone())?;
    let key = StorePath::from_url_path(url.path())?;
    Ok((store, key))
}

/// A store error of the extract at `url`, explained where the store says why.
fn explained(url: &Url, err: deltalake::ObjectStoreError) -> Error {
    crate::sink::storage::explain("INCOMING", url, &err).unwrap_or_else(|| Error::Input {
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
        let staged = stage(&prefix, &none, under.path()).await.unwrap();
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
        let copy = staged.path.clone();
        drop(staged);
        assert!(!copy.exists());

        let one = Url::from_file_path(day.join("b.csv")).unwrap();
        let staged = stage(&one, &none, under.path()).await.unwrap();
        assert_eq!(staged.objects, 1);
        assert_eq!(std::fs::read_to_string(&staged.path).unwrap(), "b,22\n");

        let nothing = Url::from_directory_path(bucket.path().join("in/d3")).unwrap();
        let err = stage(&nothing, &none, under.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in/d3") && err.contains("no object there"),
            "{err}"
        );
    }
}
