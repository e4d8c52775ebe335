//! Reaching an object store from synchronous code and from a URL: the store of a URL's bucket
//! and the key the URL names, keys extended by listed names, the sub-folders of a prefix, and
//! store futures run to their end on the multi-thread runtime. Shared by the readers of
//! extracts and landing zones in a bucket and by the lake listing of `tributary sql`.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::logstore::object_store::{path::Path as Key, ObjectStore};
use deltalake::{DeltaResult, ObjectStoreError};
use url::Url;

use crate::error::{Error, Result};

/// The store of `url`'s bucket (through delta-rs's factories: the credential chain of the
/// tables, and `options` over the environment) and the key `url` names in it.
///
/// # Errors
/// Delta errors for a scheme no store answers to or options it refuses; a path that is no key.
pub fn bucket_store(
    url: &Url,
    options: HashMap<String, String>,
) -> DeltaResult<(Arc<dyn ObjectStore>, Key)> {
    let mut bucket = url.clone();
    bucket.set_path("/");
    let store = deltalake::logstore::store_for(&bucket, options)?;
    let key = Key::from_url_path(url.path()).map_err(ObjectStoreError::from)?;
    Ok((store, key))
}

/// `root/part`, `part` taken as it is: a listed name (`Key::join` would percent-encode a `%`
/// or `#` in it, and so name another object).
pub fn under(root: &Key, part: &str) -> Key {
    match root.as_ref() {
        "" => Key::from_iter([part]),
        root => Key::parse(format!("{root}/{part}"))
            .unwrap_or_else(|_| Key::from(format!("{root}/{part}"))),
    }
}

/// The names of the "folders" directly under `at` (the common prefixes of a listing with `/`
/// as the delimiter, every page), sorted.
///
/// # Errors
/// Store errors of the listing.
pub async fn subfolders(
    store: &dyn ObjectStore,
    at: &Key,
) -> std::result::Result<Vec<String>, ObjectStoreError> {
    let mut names: Vec<String> = store
        .list_with_delimiter(Some(at))
        .await?
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// Runs `future` to its end from synchronous code (a `ChangeSource` plan, a catalog built
/// before a query, a table function's planning) on the multi-thread runtime, whose worker it
/// blocks meanwhile.
///
/// # Errors
/// [`Error::Internal`] outside a runtime or on a current-thread one (where blocking a worker
/// would stop it).
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Internal(format!("no async runtime: {e}")))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(Error::Internal(
            "blocking on a store or a table from here needs tokio's multi-thread runtime".into(),
        ));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(future)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names_are_joined_as_they_are() {
        let root = Key::from("landing");
        assert_eq!(
            under(&root, "dt=00%3A00 #2").as_ref(),
            "landing/dt=00%3A00 #2"
        );
        assert_eq!(under(&Key::default(), "sales").as_ref(), "sales");
        let (_, key) =
            bucket_store(&Url::parse("file:///tmp/a%20b/c/").unwrap(), HashMap::new()).unwrap();
        assert_eq!(key.as_ref(), "tmp/a b/c");
    }
}
