//! Configuration: what the YAML files say, validated into the runtime types each part of the
//! pipeline takes.
//!
//! Two files are read: a snapshot table's config ([`table`]; a superset of the seed article's
//! `config.yaml`) and the tables file of `tributary sync` ([`tables`]). Both validate into the
//! same sections, so no pipeline sees options that are not its own:
//!
//! | section             | what it says                                      | used by           |
//! |---------------------|---------------------------------------------------|-------------------|
//! | [`TableSpec`]       | name, columns and key, hash algorithm             | every stage       |
//! | [`LakeConfig`]      | the Delta tables' URLs and storage options, partitioning, compression | the sink |
//! | [`SourceOptions`]   | how text and Parquet files are read, bad rows     | the readers       |
//! | [`SnapshotOptions`] | extract type, memory, spill, delete guard         | the snapshot diff |
//!
//! Validation is pure (Vector's `ValidatedSink` rule): it touches no file system and no network
//! (its one side effect: the tables' `storage_options` are recorded by URL for the process,
//! [`storage::register`], so that every later open of them takes them),
//! and an invalid value is an [`Error::InvalidFieldValue`] naming its field.

pub mod catalog;
pub mod storage;
pub mod table;
pub mod tables;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::core::hash::HashAlgorithm;
use crate::core::schema::{ColumnType, RESERVED_COLUMNS};
use crate::error::{Error, Result};

pub use table::{ConfigFile, TableConfig};
pub use tables::{ChangelogTable, TableEntry, TablesFile};

/// Default share of the current table a full extract may delete before the run is refused.
pub const DEFAULT_MAX_DELETE_FRACTION: f64 = 0.5;
/// Default Delta checkpoint interval, in commits (the Delta default).
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 100;
/// Default `memory_limit`: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;
/// Smallest accepted `memory_limit`: 16 MiB.
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

/// Most keyhash partitions a snapshot run uses (a few files per partition are kept while
/// spilling).
pub const MAX_PARTITIONS: usize = 1 << 14;

/// A byte size as written: a number of bytes or a text such as `1GiB` or `500 MB`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSizeText {
    /// A number of bytes.
    Bytes(u64),
    /// A size with a unit, such as `1GiB` or `500 MB`.
    Text(String),
}

impl ByteSizeText {
    pub(crate) fn bytes(&self, field: &str) -> Result<u64> {
        match self {
            ByteSizeText::Bytes(n) => Ok(*n),
            ByteSizeText::Text(t) => t
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|e| {
                    invalid(
                        field,
                        format!("`{t}` is not a size such as 1GiB or 512MiB: {e}"),
                    )
                }),
        }
    }
}

/// Parquet compression codec of written data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Snappy: fast, finds repeats only.
    Snappy,
    /// Level 1 (the default): on the seed shape at 1M rows, day 2 writes a current table 32%
    /// smaller than snappy (211 against 308 MiB), as hex keys entropy-code to about half under
    /// zstd and are left uncompressed under snappy, which finds no repeats in them; snappy
    /// runs took 1.4 to 1.9 s against 1.7 to 1.9 s (README, Performance).
    #[default]
    Zstd,
    /// Uncompressed.
    None,
}

/// One entry of `columns:` as written.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    /// Column name, as in the input files.
    pub name: String,
    /// Type name (`string`, `long`, `double`, `decimal(p,s)`, `date`, `timestamp`, ...; see
    /// [`ColumnType::parse`]).
    #[serde(rename = "type")]
    pub ty: String,
    /// Part of the key (`keyhash`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub key: bool,
    /// Stored, never hashed: a change in this column alone is no change.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `extract_type`: a full extract holds every live row (missing keys are deletes); a delta
/// extract holds only some rows (missing keys are kept as X).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractType {
    /// Every live row: a key missing from the extract is a delete (D).
    Full,
    /// Some rows: a key missing from the extract is kept, marked not supplied (X).
    Delta,
}

impl std::fmt::Display for ExtractType {
    /// The config's spelling: `full`, `delta`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExtractType::Full => "full",
            ExtractType::Delta => "delta",
        })
    }
}

/// Input file format; when absent it is taken from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Delimited text (`*.csv`, `*.txt`, `*.dat`).
    Csv,
    /// Apache Parquet (`*.parquet`, `*.parq`).
    Parquet,
}

/// What a bad row does: fail the run (default) or land in the rejects table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The first bad row fails the run, naming its file, line and column.
    Fail,
    /// Bad rows are set aside in the rejects table and the run goes on.
    Reject,
}

/// A validated column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Column type.
    pub ty: ColumnType,
    /// Part of the key (`keyhash`).
    pub key: bool,
    /// Stored, never hashed: a change in this column alone is no change.
    pub ignore: bool,
}

/// The table a pipeline writes, whatever its input: name, columns and key, how rows are hashed,
/// and where its lake tables are.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Table name: the Delta `txn` app id is `tributary:<name>`; messages name it.
    pub name: String,
    /// Columns in input order.
    pub columns: Vec<Column>,
    /// Digest of `keyhash` and `nonkeyhash` (docs/hashing.md).
    pub hash: HashAlgorithm,
    /// Whether a key column may hold NULL: only in change-log tables without a primary key,
    /// whose every column is hashed as the key. Elsewhere a NULL key part is a bad row.
    pub key_nullable: bool,
    /// The lake tables (the sink section).
    pub lake: LakeConfig,
    /// Whether current and history keep each row's `source_position` (change-log tables).
    pub source_positions: bool,
}

impl TableSpec {
    /// Arrow schema of the current and history tables: `core::schema::table_schema`, or
    /// `changelog_schema` with [`Self::source_positions`].
    pub fn table_schema(&self) -> deltalake::arrow::datatypes::SchemaRef {
        match self.source_positions {
            true => crate::core::schema::changelog_schema(&self.typed_columns()),
            false => crate::core::schema::table_schema(&self.typed_columns()),
        }
    }

    /// The configured columns as (name, type) pairs, in config order.
    pub fn typed_columns(&self) -> Vec<(String, ColumnType)> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), c.ty))
            .collect()
    }

    /// Indices of the key columns, in config order.
    pub fn key_indices(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&i| self.columns[i].key)
            .collect()
    }

    /// Indices of the hashed non-key columns (not key, not ignored), in config order.
    pub fn nonkey_indices(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|&i| !self.columns[i].key && !self.columns[i].ignore)
            .collect()
    }

    /// Columns whose every value is distinct in a table: the key when it is a single column
    /// (written without a Parquet dictionary, see `sink::delta::writer_properties`).
    pub fn unique_columns(&self) -> Vec<&str> {
        match self.key_indices().as_slice() {
            [only] => vec![self.columns[*only].name.as_str()],
            _ => Vec::new(),
        }
    }

    /// The Delta `txn` application id under which this table's runs are recorded.
    pub fn app_id(&self) -> String {
        format!("tributary:{}", self.name)
    }
}

/// Where a table's Delta tables are and how they are written: the sink section.
#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// The current table: one row per live key.
    pub current_url: Url,
    /// The history table: every I/U/D, partitioned by `eff_start_date`.
    pub history_url: Url,
    /// Rows set aside under `on_error: reject`.
    pub rejects_url: Url,
    /// The applied-files table of change-log tables (see `sink::delta::applied`).
    pub applied_url: Url,
    /// The tombstones of hard-deleted keys of change-log tables (see `sink::delta::tombstones`).
    pub tombstones_url: Url,
    /// Partition columns of the current table, in order.
    pub partition_by: Vec<String>,
    /// Parquet codec of written data files.
    pub compression: Compression,
    /// Delta checkpoint interval, in commits.
    pub checkpoint_interval: u64,
    /// Whether the current and history tables record the Delta change data feed
    /// (`delta.enableChangeDataFeed`, see `sink::delta::change_feed`): set on tables that lack
    /// it. Unset, a table that has it (enabled by another engine) still gets its feed.
    pub change_data_feed: bool,
    /// Whether merges into the current table mark replaced and deleted rows in Delta deletion
    /// vectors instead of rewriting their files (`delta.enableDeletionVectors`, see
    /// `sink::delta::deletion_vectors`): set on a current table that lacks it. Unset, a table
    /// that has it (enabled by another engine) still gets vectors.
    pub deletion_vectors: bool,
    /// Options of the store the tables are in (`storage_options`; see `sink::storage`).
    pub storage_options: storage::StorageOptions,
    /// The catalog the tables are registered in after each run (`catalog`; see
    /// `sink::catalog`).
    pub catalog: Option<catalog::CatalogConfig>,
}

/// How input files are read: the source section (CSV dialect, NULL text, bad rows).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOptions {
    /// Input format; None: taken from each file's extension.
    pub format: Option<InputFormat>,
    /// CSV field delimiter (one byte).
    pub delimiter: u8,
    /// CSV quote character (one byte).
    pub quote: u8,
    /// Whether CSV files start with a header line (checked against the columns, then skipped).
    pub header: bool,
    /// Whether a quoted CSV field may span lines (Spark's `multiLine`). Off, a line break
    /// inside quotes is a bad row at its line: an unclosed quote fails where it is.
    pub multiline: bool,
    /// Field text read as NULL in every column. When unset, an empty field is NULL in non-string
    /// columns and the empty string in string columns.
    pub null_value: Option<String>,
    /// What a bad row does.
    pub on_error: OnError,
}

/// The snapshot diff engine's section.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Full or delta extract.
    pub extract_type: ExtractType,
    /// Share of the current table a full extract may delete before the run is refused; a ratio
    /// in the `[0.0, 1.0]` interval.
    pub max_delete_fraction: f64,
    /// Bytes the diff may hold in memory before spilling (see `snapshot::plan`).
    pub memory_limit: u64,
    /// Folder under which each run makes its own spill folder.
    pub spill_dir: PathBuf,
    /// Forced keyhash partition count (None: planned from `memory_limit`).
    pub partitions: Option<usize>,
    /// The config's `threads` (1..=[`crate::core::threads::MAX_THREADS`]); `tributary run`
    /// makes it the process's setting ([`crate::core::threads::set`]) unless `--threads` is
    /// given. None: the process's setting.
    pub threads: Option<usize>,
}

pub(crate) fn invalid(field: impl Into<String>, constraint: impl Into<String>) -> Error {
    Error::InvalidFieldValue {
        field: field.into(),
        constraint: constraint.into(),
    }
}

pub(crate) fn single_byte(field: &str, value: Option<&str>, default: u8) -> Result<u8> {
    match value {
        None => Ok(default),
        Some(s) if s.len() == 1 => Ok(s.as_bytes()[0]),
        Some("\\t") => Ok(b'\t'),
        Some(_) => Err(invalid(field, "must be exactly one ASCII character")),
    }
}

/// Turns a config path (plain or `file://`, `s3://`, ...) into a table URL.
///
/// # Errors
/// [`Error::InvalidFieldValue`] naming `field` for an empty path, an unparsable URL, a scheme
/// no store answers to or an object-store URL without a bucket ([`storage::check_url`]).
pub fn table_url(field: &str, text: &str, base: &Path) -> Result<Url> {
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if text.contains("://") {
        let url = Url::parse(text).map_err(|e| invalid(field, format!("not a URL: {e}")))?;
        storage::check_url(field, &url)?;
        return Ok(url);
    }
    let path = base.join(text);
    Url::from_directory_path(&path).map_err(|_| invalid(field, "not an absolute path"))
}

/// The folder URL next to `url` whose name ends in `suffix` (`.../orders/` -> `.../orders_applied/`).
pub(crate) fn sibling_url(url: &Url, suffix: &str) -> Result<Url> {
    let mut s = url.as_str().trim_end_matches('/').to_string();
    s.push_str(suffix);
    s.push('/');
    Url::parse(&s).map_err(|e| invalid("current_table_path", e.to_string()))
}

/// Validates `columns:` (names, types, key and ignore flags); at least one column must be a key.
///
/// # Errors
/// [`Error::InvalidFieldValue`] naming `columns[i].<field>`.
pub(crate) fn validate_columns(files: &[ColumnFile]) -> Result<Vec<Column>> {
    if files.is_empty() {
        return Err(invalid("columns", "must list at least one column"));
    }
    let mut columns = Vec::with_capacity(files.len());
    for (i, c) in files.iter().enumerate() {
        let field = format!("columns[{i}]");
        if c.name.trim().is_empty() {
            return Err(invalid(format!("{field}.name"), "must not be empty"));
        }
        if RESERVED_COLUMNS.contains(&c.name.as_str()) {
            return Err(invalid(
                format!("{field}.name"),
                format!("`{}` is a column Tributary adds; rename it", c.name),
            ));
        }
        if files[..i].iter().any(|o| o.name == c.name) {
            return Err(invalid(
                format!("{field}.name"),
                format!("`{}` is listed twice", c.name),
            ));
        }
        if c.key && c.ignore {
            return Err(invalid(
                format!("{field}.ignore"),
                "a key column cannot be ignored",
            ));
        }
        columns.push(Column {
            name: c.name.clone(),
            ty: ColumnType::parse(&c.ty, &format!("{field}.type"))?,
            key: c.key,
            ignore: c.ignore,
        });
    }
    if !columns.iter().any(|c| c.key) {
        return Err(invalid(
            "columns",
            "at least one column must have `key: true`",
        ));
    }
    Ok(columns)
}

/// The paths of a table's lake tables as written (relative ones resolve against `base`).
pub(crate) struct LakePaths<'a> {
    pub current: &'a str,
    pub history: &'a str,
    /// Default `<current>_rejects`.
    pub rejects: Option<&'a str>,
    /// Default `<current>_applied`.
    pub applied: Option<&'a str>,
    /// Default `<current>_tombstones`.
    pub tombstones: Option<&'a str>,
}

impl LakeConfig {
    /// Validates the sink section: four distinct table URLs, partition columns among `columns`,
    /// a checkpoint interval above zero.
    ///
    /// # Errors
    /// [`Error::InvalidFieldValue`] naming the field.
    pub(crate) fn validate(
        paths: LakePaths<'_>,
        base: &Path,
        columns: &[Column],
        partition_by: Vec<String>,
        compression: Compression,
        checkpoint_interval: u64,
    ) -> Result<Self> {
        if checkpoint_interval == 0 {
            return Err(invalid("checkpoint_interval", "must be greater than 0"));
        }
        let current_url = table_url("current_table_path", paths.current, base)?;
        let history_url = table_url("history_table_path", paths.history, base)?;
        let rejects_url = match paths.rejects {
            Some(p) => table_url("rejects_table_path", p, base)?,
            None => sibling_url(&current_url, "_rejects")?,
        };
        let applied_url = match paths.applied {
            Some(p) => table_url("applied_table_path", p, base)?,
            None => sibling_url(&current_url, "_applied")?,
        };
        let tombstones_url = match paths.tombstones {
            Some(p) => table_url("tombstones_table_path", p, base)?,
            None => sibling_url(&current_url, "_tombstones")?,
        };
        let urls = [
            &current_url,
            &history_url,
            &rejects_url,
            &applied_url,
            &tombstones_url,
        ];
        if (1..urls.len()).any(|i| urls[..i].contains(&urls[i])) {
            return Err(invalid(
                "history_table_path",
                "current, history, rejects, applied and tombstones tables need different paths",
            ));
        }
        for (i, name) in partition_by.iter().enumerate() {
            if !columns.iter().any(|c| &c.name == name) {
                return Err(invalid(
                    format!("partition_by[{i}]"),
                    format!("`{name}` is not a configured column"),
                ));
            }
            if partition_by[..i].contains(name) {
                return Err(invalid(
                    format!("partition_by[{i}]"),
                    format!("`{name}` is listed twice"),
                ));
            }
        }
        Ok(LakeConfig {
            current_url,
            history_url,
            rejects_url,
            applied_url,
            tombstones_url,
            partition_by,
            compression,
            checkpoint_interval,
            change_data_feed: false,
            deletion_vectors: false,
            storage_options: storage::StorageOptions::default(),
            catalog: None,
        })
    }
}
