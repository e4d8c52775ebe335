//! The crate's error type: one enum, structured variants that name the file, line and column.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Tributary.
///
/// Variants carry the location of bad input (file, 1-based line, column name) so that a user can
/// find and fix it. Library errors are chained as sources, never flattened into strings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file (or tables file) could not be read: missing, a folder, no permission.
    #[error("config {}: cannot read it: {source}", path.display())]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file could not be parsed as YAML.
    #[error("config {path}: {source}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The YAML error (line and column).
        #[source]
        source: serde_yaml::Error,
    },
    /// A config field has a value that is not allowed.
    #[error("config field `{field}`: {constraint}")]
    InvalidFieldValue {
        /// The field, as a path (`columns[2].type`, `tables[0] (s/t).primary_key[0]`).
        field: String,
        /// What its value must be.
        constraint: String,
    },
    /// A row of input is malformed.
    #[error("{file}, line {line}{}: {reason}", column.as_ref().map(|c| format!(", column `{c}`")).unwrap_or_default())]
    BadRow {
        /// The file, as shown in messages.
        file: String,
        /// 1-based line (CSV) or row (Parquet, JSON lines).
        line: u64,
        /// The column at fault, when one value is.
        column: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// The input location holds nothing Tributary can read.
    #[error("input {path}: {reason}")]
    Input {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A run was refused by a safety rule (date order, changed input, mass delete).
    #[error("refused: {0}")]
    Refused(String),
    /// Another run committed to the table first (two writers at once): this run committed
    /// nothing and deleted its files. Re-running re-plans on top of the other run.
    #[error("conflict: {table} was committed by another run first ({other}); this run (run {seq}) committed nothing")]
    Conflict {
        /// The table whose commit lost.
        table: String,
        /// The sequence number this run had taken.
        seq: i64,
        /// The other run: its sequence number, id and business date.
        other: String,
    },
    /// A file or folder could not be written or read (a full disk, a missing folder, no
    /// permission): the environment, not the input. Names the path; a full disk says so.
    #[error("{action} {}: {source}{}", path.display(), if is_no_space(source) { "; the device is full: free some space, or point `spill_dir` or the tables elsewhere" } else { "" })]
    Storage {
        /// What was being done (`cannot write spill file`, `cannot write data files of`).
        action: String,
        /// The file, folder or table being written or read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The lake tables are in a state Tributary cannot continue from.
    #[error("lake table {table}: {reason}")]
    Lake {
        /// The table (its role or name).
        table: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Command-line arguments that parse but make no sense (e.g. generator percentages).
    #[error("{0}")]
    Usage(String),

    /// A change source (a PostgreSQL server) failed: cannot connect, a query or the
    /// replication stream failed. The message names the server as `host:port/database`.
    #[error("source {0}")]
    Source(String),

    /// A change source is not set up for capture (`wal_level`, privileges, a table without
    /// primary key, a lost slot): nothing was created; the message names the fix.
    #[error("source {0}")]
    SourceSetup(String),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A CSV reader error.
    #[error(transparent)]
    Csv(#[from] csv::Error),
    /// An Arrow error.
    #[error(transparent)]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    /// A Parquet error.
    #[error(transparent)]
    Parquet(#[from] deltalake::parquet::errors::ParquetError),
    /// A delta-rs error.
    #[error(transparent)]
    Delta(#[from] deltalake::DeltaTableError),
    /// A DataFusion error.
    #[error(transparent)]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),
    /// A JSON error.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A table writer of a run stopped before the run sent its last rows: its own error (disk
    /// full, say) is the one to report, and the run transaction reports it instead
    /// (`sink::RunTransaction::finish_writes`).
    #[error("internal error (please report): a table writer stopped early")]
    WriterGone,
    /// A streamed full load met what it cannot stream (a key twice, a delete): the run is
    /// abandoned and `sync` reads it again taking the last change per key
    /// (`changelog::spill`). Never reported to a user.
    #[error("internal error (please report): a streamed load was not restarted: {0}")]
    Restart(String),
    /// A bug in Tributary: an invariant did not hold.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

/// Whether an I/O error is a full device (`ENOSPC`).
pub fn is_no_space(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::StorageFull || err.raw_os_error() == Some(28)
}

/// Whether an error or one of its sources says the device is full (`ENOSPC`, or the text
/// "No space left on device" that libraries wrapping it keep).
pub fn chain_has_no_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>().is_some_and(is_no_space)
            || e.to_string().contains("No space left on device")
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl Error {
    /// A [`Error::BadRow`]: `file` as shown in messages, 1-based `line` (or row), the column
    /// when one value is at fault.
    pub fn bad_row(
        file: impl std::fmt::Display,
        line: u64,
        column: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        Error::BadRow {
            file: file.to_string(),
            line,
            column: column.map(str::to_string),
            reason: reason.into(),
        }
    }

    /// Process exit code for this error: 2 for bad usage/config, 3 for refused runs (a safety
    /// rule, or a conflict with another writer), 4 for bad input rows, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ConfigRead { .. }
            | Error::ConfigParse { .. }
            | Error::InvalidFieldValue { .. }
            | Error::Usage(_)
            | Error::SourceSetup(_) => 2,
            Error::Refused(_) | Error::Conflict { .. } => 3,
            Error::BadRow { .. } | Error::Input { .. } => 4,
            _ => 1,
        }
    }
}

/// Explains an object-store failure of the table `role` at `url` in the user's terms, when the
/// error says the bucket does not exist, access is denied or no credentials were found; None
/// for other errors (reported as they are). The explanation names the bucket and path, never
/// a credential.
pub fn explain_store_error(
    role: &str,
    url: &url::Url,
    err: &(dyn std::error::Error + 'static),
) -> Option<Error> {
    let mut text = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        text.push_str(&e.to_string());
        text.push('\n');
        next = e.source();
    }
    // Azure's `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/`: the container is the user
    let bucket = match url.username() {
        "" => url.host_str().unwrap_or_default(),
        container => container,
    };
    let reason = if text.contains("NoSuchBucket")
        || text.contains("bucket does not exist")
        || text.contains("ContainerNotFound")
        || text.contains("container does not exist")
    {
        format!("the bucket `{bucket}` does not exist (or is not in the configured region and endpoint)")
    } else if text.contains("403 Forbidden")
        || text.contains("AccessDenied")
        || text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
    {
        format!(
            "access denied to {url}: the store refused the request (check that credentials \
             are set, in the environment ({}) or the config's `storage_options`, that the \
             region is right, and that they may read and write `{bucket}`)",
            credential_variables(url)
        )
    } else if text.contains("credential")
        && (text.contains("not load")
            || text.contains("no providers")
            || text.contains("Missing")
            || text.contains("provider"))
    {
        format!(
            "no credentials for {url}: set them in the environment ({}) or in the config's \
             `storage_options`",
            credential_variables(url)
        )
    } else if text.contains("Connection refused")
        || text.contains("dns error")
        || text.contains("failed to lookup address")
        // delta-rs passes some store errors on as text, without their cause: a request that
        // got no answer, unless the text says why (a certificate, a reset)
        || (text.contains("error sending request")
            && !text.contains("certificate")
            && !text.contains("reset"))
    {
        let mut cause = err;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!(
            "cannot reach the store of {url} ({cause}; retried): check the endpoint set in \
             the environment or the config's `storage_options`, that this machine's network \
             reaches it, and for https its certificate"
        )
    } else {
        return None;
    };
    Some(Error::Lake {
        table: role.to_string(),
        reason,
    })
}

/// The environment variables that hold credentials for the store of `url`.
fn credential_variables(url: &url::Url) -> &'static str {
    match url.scheme() {
        "gs" => "GOOGLE_SERVICE_ACCOUNT, GOOGLE_APPLICATION_CREDENTIALS, ...",
        "az" | "abfs" | "abfss" | "azure" | "adl" => {
            "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY, ..."
        }
        _ => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_explained_by_bucket_without_secrets() {
        let u = url::Url::parse("s3://missing-bucket/lake/t/").unwrap();
        let e = std::io::Error::other(
            "Error performing GET: NoSuchBucket: The specified bucket does not exist",
        );
        let text = explain_store_error("current", &u, &e).unwrap().to_string();
        assert!(text.contains("`missing-bucket` does not exist"), "{text}");
        let e = std::io::Error::other("Client error with status 403 Forbidden: InvalidAccessKeyId");
        let text = explain_store_error("history", &u, &e).unwrap().to_string();
        assert!(
            text.contains("access denied to s3://missing-bucket/lake/t/"),
            "{text}"
        );
        let azure = url::Url::parse("abfss://landing@acct.dfs.core.windows.net/lake/t/").unwrap();
        let e = std::io::Error::other("ContainerNotFound: The specified container does not exist.");
        let text = explain_store_error("current", &azure, &e)
            .unwrap()
            .to_string();
        assert!(text.contains("`landing` does not exist"), "{text}");
        let e = std::io::Error::other("403 Forbidden: AuthorizationFailure");
        let text = explain_store_error("current", &azure, &e)
            .unwrap()
            .to_string();
        assert!(
            text.contains("AZURE_STORAGE_ACCOUNT_NAME") && !text.contains("AWS_"),
            "{text}"
        );
        let refused = std::io::Error::other("tcp connect error: Connection refused (os error 111)");
        let e = std::io::Error::other(Wrapped(
            "Error performing GET http://127.0.0.1:1/b/k, after 10 retries - HTTP error: error \
             sending request",
            refused,
        ));
        let text = explain_store_error("current", &u, &e).unwrap().to_string();
        assert!(
            text.contains(
                "cannot reach the store of s3://missing-bucket/lake/t/ (tcp connect error: \
                 Connection refused (os error 111); retried)"
            ),
            "{text}"
        );
        // without its cause (delta-rs's text): still explained, with the text
        let e = std::io::Error::other(
            "Kernel error: Generic GCS error: Error performing GET http://127.0.0.1:1/b/k after \
             10 retries - HTTP error: error sending request",
        );
        let text = explain_store_error("current", &u, &e).unwrap().to_string();
        assert!(
            text.contains("cannot reach the store of s3://missing-bucket/lake/t/ (Kernel error")
                && text.contains("error sending request; retried)"),
            "{text}"
        );
        // other transport failures (TLS, resets) keep the store's own words
        for other in [
            "HTTP error: error sending request: connection error: Connection reset by peer",
            "HTTP error: error sending request: invalid peer certificate: UnknownIssuer",
        ] {
            let e = std::io::Error::other(other);
            assert!(explain_store_error("current", &u, &e).is_none(), "{other}");
        }
    }

    /// An error with a message and a source, as store errors nest.
    #[derive(Debug)]
    struct Wrapped(&'static str, std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    /// A library's error wrapping `ENOSPC` (delta-rs: "Failed to parse parquet: ... No space
    /// left on device") is recognised through the chain, or by its text.
    #[test]
    fn a_full_device_is_found_in_an_error_chain() {
        let full = std::io::Error::from_raw_os_error(28);
        assert!(is_no_space(&full));
        let wrapped = Error::Storage {
            action: "cannot write".into(),
            path: "/x".into(),
            source: full,
        };
        assert!(chain_has_no_space(&wrapped));
        assert!(wrapped.to_string().contains("the device is full"));
        let text =
            std::io::Error::other("Failed to parse parquet: No space left on device (os error 28)");
        assert!(chain_has_no_space(&text));
        let other = std::io::Error::from_raw_os_error(13);
        assert!(!chain_has_no_space(&other));
        let denied = Error::Storage {
            action: "cannot write".into(),
            path: "/x".into(),
            source: other,
        };
        assert!(!denied.to_string().contains("no space"), "{denied}");
    }
}
