//! Table config: the YAML file a run is driven by.
//!
//! A superset of the seed article's `config.yaml` (name, current/temp-current/history paths,
//! delimiter, extract_type, columns with name/type/key/ignore); the seed's file runs unchanged.
//! [`ConfigFile`] is what the YAML says; [`TableConfig`] is the validated runtime form.
//! Validation is pure: it touches no file system and no network.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::error::{Error, Result};
use crate::hash::HashAlgorithm;
use crate::schema::{ColumnType, SYSTEM_COLUMNS};

/// Default share of the current table a full extract may delete before the run is refused.
pub const DEFAULT_MAX_DELETE_FRACTION: f64 = 0.5;
/// Default Delta checkpoint interval, in commits (the Delta default).
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 100;
/// Default `memory_limit`: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;
/// Smallest accepted `memory_limit`: 16 MiB.
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

/// The YAML file as written. Unknown keys are an error that names the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub name: String,
    pub current_table_path: String,
    /// Accepted for seed compatibility; unused (Delta commits make a temp table unnecessary).
    pub temp_current_table_path: Option<String>,
    pub history_table_path: String,
    /// Where rejected rows go with `on_error: reject`; default `<current_table_path>_rejects`.
    pub rejects_table_path: Option<String>,
    pub delimiter: Option<String>,
    pub quote: Option<String>,
    pub header: Option<bool>,
    /// `Some(None)` when the YAML says `null_value: NULL` (or `~`) unquoted: YAML reads that as
    /// null, not as the text NULL, so it is refused with a hint to quote it.
    #[serde(default, deserialize_with = "explicit_null")]
    pub null_value: Option<Option<String>>,
    pub format: Option<InputFormat>,
    pub extract_type: ExtractType,
    pub hash: Option<HashAlgorithm>,
    pub max_delete_fraction: Option<f64>,
    pub on_error: Option<OnError>,
    pub checkpoint_interval: Option<u64>,
    /// Memory the diff may hold (e.g. `1GiB`, `512MiB`, or a byte count); past it, partitions
    /// spill to `spill_dir`. Default [`DEFAULT_MEMORY_LIMIT`].
    pub memory_limit: Option<ByteSizeText>,
    /// Folder for spill files; default the system temporary folder (`TMPDIR`).
    pub spill_dir: Option<String>,
    /// Keyhash partitions of the diff, overriding the memory plan's choice (tuning and tests);
    /// set, the run is never streamed past an in-memory index (docs/memory.md).
    pub partitions: Option<usize>,
    /// Parquet compression of the written data files: `zstd` (level 1, the default), `snappy`
    /// or `none`.
    pub compression: Option<Compression>,
    /// Columns the current table is partitioned by (hive-style folders, Delta partition
    /// columns); default none.
    pub partition_by: Option<Vec<String>>,
    /// Where a change-log table records the input files it applied; default
    /// `<current_table_path>_applied`.
    pub applied_table_path: Option<String>,
    pub columns: Vec<ColumnFile>,
}

/// A byte size as written: a number of bytes or a text such as `1GiB` or `500 MB`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSizeText {
    Bytes(u64),
    Text(String),
}

impl ByteSizeText {
    fn bytes(&self, field: &str) -> Result<u64> {
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
    Snappy,
    /// Level 1 (the default): on the seed shape at 1M rows, day 2 writes a current table 32%
    /// smaller than snappy (211 against 308 MiB), as hex keys entropy-code to about half under
    /// zstd and are left uncompressed under snappy, which finds no repeats in them; snappy
    /// runs took 1.4 to 1.9 s against 1.7 to 1.9 s (README, Performance).
    #[default]
    Zstd,
    None,
}

/// One entry of `columns:` as written.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub key: bool,
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
    Full,
    Delta,
}

/// Input file format; when absent it is taken from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Parquet,
}

/// What a bad row does: fail the run (default) or land in the rejects table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    Fail,
    Reject,
}

/// A validated column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub key: bool,
    /// Stored, never hashed: a change in this column alone is no change.
    pub ignore: bool,
}

/// The validated config a run uses.
#[derive(Debug, Clone)]
pub struct TableConfig {
    pub name: String,
    pub current_url: Url,
    pub history_url: Url,
    pub rejects_url: Url,
    /// The applied-files table of change-log tables (see `lake::applied`).
    pub applied_url: Url,
    /// Partition columns of the current table, in order.
    pub partition_by: Vec<String>,
    /// Set when the file named `temp_current_table_path` (logged once as unused).
    pub has_temp_current_path: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub header: bool,
    /// Field text read as NULL in every column. When unset, an empty field is NULL in non-string
    /// columns and the empty string in string columns.
    pub null_value: Option<String>,
    pub format: Option<InputFormat>,
    pub extract_type: ExtractType,
    pub hash: HashAlgorithm,
    /// Ratio in the `[0.0, 1.0]` interval.
    pub max_delete_fraction: f64,
    pub on_error: OnError,
    pub checkpoint_interval: u64,
    /// Bytes the diff may hold in memory before spilling (see `plan`).
    pub memory_limit: u64,
    /// Folder under which each run makes its own spill folder.
    pub spill_dir: PathBuf,
    /// Forced keyhash partition count (None: planned from `memory_limit`).
    pub partitions: Option<usize>,
    pub compression: Compression,
    pub columns: Vec<Column>,
}

impl TableConfig {
    /// Reads and validates a config file. Relative table paths are resolved against the config
    /// file's folder.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read, [`Error::ConfigParse`] for YAML errors and
    /// unknown keys, [`Error::InvalidFieldValue`] for values that fail validation.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Input {
            path: path.to_path_buf(),
            reason: format!("cannot read config: {e}"),
        })?;
        let file: ConfigFile =
            serde_yaml::from_str(&text).map_err(|source| Error::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        let base = config_folder(path)?;
        file.validate(&base)
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
    /// (written without a Parquet dictionary, see `lake::writer_properties`).
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

/// The absolute folder of a config file (a bare `config.yaml` has the empty path as parent).
fn config_folder(path: &Path) -> Result<PathBuf> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(std::path::absolute(parent)?)
}

/// Distinguishes a missing key (None) from an explicit YAML null (Some(None)).
fn explicit_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn invalid(field: impl Into<String>, constraint: impl Into<String>) -> Error {
    Error::InvalidFieldValue {
        field: field.into(),
        constraint: constraint.into(),
    }
}

fn single_byte(field: &str, value: Option<&str>, default: u8) -> Result<u8> {
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
/// [`Error::InvalidFieldValue`] naming `field` for an empty path or an unparsable URL.
pub fn table_url(field: &str, text: &str, base: &Path) -> Result<Url> {
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if text.contains("://") {
        let url = Url::parse(text).map_err(|e| invalid(field, format!("not a URL: {e}")))?;
        return Ok(url);
    }
    let path = base.join(text);
    Url::from_directory_path(&path).map_err(|_| invalid(field, "not an absolute path"))
}

/// The folder URL next to `url` whose name ends in `suffix` (`.../orders/` -> `.../orders_applied/`).
fn sibling_url(url: &Url, suffix: &str) -> Result<Url> {
    let mut s = url.as_str().trim_end_matches('/').to_string();
    s.push_str(suffix);
    s.push('/');
    Url::parse(&s).map_err(|e| invalid("current_table_path", e.to_string()))
}

impl ConfigFile {
    /// Checks every field and returns the runtime config. Pure: no I/O.
    ///
    /// # Errors
    /// [`Error::InvalidFieldValue`] naming the first field that fails.
    pub fn validate(self, base: &Path) -> Result<TableConfig> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if self.columns.is_empty() {
            return Err(invalid("columns", "must list at least one column"));
        }
        let mut columns = Vec::with_capacity(self.columns.len());
        for (i, c) in self.columns.iter().enumerate() {
            let field = format!("columns[{i}]");
            if c.name.trim().is_empty() {
                return Err(invalid(format!("{field}.name"), "must not be empty"));
            }
            if SYSTEM_COLUMNS.contains(&c.name.as_str()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("`{}` is a column Tributary adds; rename it", c.name),
                ));
            }
            if self.columns[..i].iter().any(|o| o.name == c.name) {
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
        let max_delete_fraction = self
            .max_delete_fraction
            .unwrap_or(DEFAULT_MAX_DELETE_FRACTION);
        if !(0.0..=1.0).contains(&max_delete_fraction) {
            return Err(invalid(
                "max_delete_fraction",
                "must be in the interval [0.0, 1.0]",
            ));
        }
        let checkpoint_interval = self
            .checkpoint_interval
            .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL);
        if checkpoint_interval == 0 {
            return Err(invalid("checkpoint_interval", "must be greater than 0"));
        }
        let memory_limit = match &self.memory_limit {
            Some(size) => size.bytes("memory_limit")?,
            None => DEFAULT_MEMORY_LIMIT,
        };
        if memory_limit < MIN_MEMORY_LIMIT {
            return Err(invalid("memory_limit", "must be at least 16MiB"));
        }
        let spill_dir = match &self.spill_dir {
            Some(dir) if dir.trim().is_empty() => {
                return Err(invalid("spill_dir", "must not be empty"))
            }
            Some(dir) => base.join(dir),
            None => std::env::temp_dir(),
        };
        if let Some(p) = self.partitions {
            if !(1..=crate::plan::MAX_PARTITIONS).contains(&p) {
                return Err(invalid(
                    "partitions",
                    format!("must be in 1..={}", crate::plan::MAX_PARTITIONS),
                ));
            }
        }
        let delimiter = single_byte("delimiter", self.delimiter.as_deref(), b',')?;
        let quote = single_byte("quote", self.quote.as_deref(), b'"')?;
        if delimiter == quote {
            return Err(invalid("quote", "must differ from the delimiter"));
        }
        let null_value = match self.null_value {
            Some(None) => {
                return Err(invalid(
                    "null_value",
                    "is YAML null; quote the text that marks NULL, e.g. null_value: \"NULL\"",
                ))
            }
            Some(Some(text)) => Some(text),
            None => None,
        };
        let current_url = table_url("current_table_path", &self.current_table_path, base)?;
        let history_url = table_url("history_table_path", &self.history_table_path, base)?;
        let rejects_url = match &self.rejects_table_path {
            Some(p) => table_url("rejects_table_path", p, base)?,
            None => sibling_url(&current_url, "_rejects")?,
        };
        let applied_url = match &self.applied_table_path {
            Some(p) => table_url("applied_table_path", p, base)?,
            None => sibling_url(&current_url, "_applied")?,
        };
        let urls = [&current_url, &history_url, &rejects_url, &applied_url];
        if (1..urls.len()).any(|i| urls[..i].contains(&urls[i])) {
            return Err(invalid(
                "history_table_path",
                "current, history, rejects and applied tables need different paths",
            ));
        }
        let partition_by = self.partition_by.unwrap_or_default();
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
        Ok(TableConfig {
            name: self.name,
            current_url,
            history_url,
            rejects_url,
            applied_url,
            partition_by,
            has_temp_current_path: self.temp_current_table_path.is_some(),
            delimiter,
            quote,
            header: self.header.unwrap_or(false),
            null_value,
            format: self.format,
            extract_type: self.extract_type,
            hash: self.hash.unwrap_or_default(),
            max_delete_fraction,
            on_error: self.on_error.unwrap_or(OnError::Fail),
            checkpoint_interval,
            memory_limit,
            spill_dir,
            partitions: self.partitions,
            compression: self.compression.unwrap_or_default(),
            columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed repository's config.yaml, byte for byte in structure (trailing spaces included).
    pub(crate) const SEED_CONFIG: &str = "---\nname: sample_data\ncurrent_table_path: file:///tmp/sample_data_current\ntemp_current_table_path: file:///tmp/sample_data_current_temp\nhistory_table_path: file:///tmp/sample_data_history\ndelimiter: \",\"\nextract_type: full\ncolumns:\n- name: keycol1\n  type: string\n  key: true\n  ignore: false\n- name: keycol2\n  type: string\n  key: true\n  ignore: false\n- name: keycol3\n  type: string\n  key: true\n  ignore: false\n- name: keycol4\n  type: string\n  key: true\n  ignore: false\n- name: keycol5\n  type: string\n  key: true\n  ignore: false  \n- name: nonkeycol1\n  type: float\n  key: false\n  ignore: false\n- name: nonkeycol2\n  type: float\n  key: false\n  ignore: false\n- name: nonkeycol10\n  type: float\n  key: false\n  ignore: false  \n  ";

    fn parse(text: &str) -> Result<TableConfig> {
        let file: ConfigFile = serde_yaml::from_str(text).map_err(|source| Error::ConfigParse {
            path: "t.yaml".into(),
            source,
        })?;
        file.validate(Path::new("/base"))
    }

    #[test]
    fn the_seed_config_validates_unchanged() {
        let cfg = parse(SEED_CONFIG).unwrap();
        assert_eq!(cfg.name, "sample_data");
        assert_eq!(cfg.current_url.as_str(), "file:///tmp/sample_data_current");
        assert_eq!(
            cfg.rejects_url.as_str(),
            "file:///tmp/sample_data_current_rejects/"
        );
        assert!(cfg.has_temp_current_path);
        assert_eq!(cfg.key_indices(), vec![0, 1, 2, 3, 4]);
        assert_eq!(cfg.nonkey_indices(), vec![5, 6, 7]);
        assert_eq!(cfg.columns[5].ty, ColumnType::Double);
        assert_eq!(cfg.extract_type, ExtractType::Full);
        assert_eq!(cfg.hash, HashAlgorithm::Xxh3);
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = SEED_CONFIG.replace("extract_type: full", "extract_type: full\nmax_delete: 1");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("max_delete"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases = [
            ("max_delete_fraction: 1.5", "max_delete_fraction"),
            ("checkpoint_interval: 0", "checkpoint_interval"),
            ("delimiter: \";;\"", "delimiter"),
            ("memory_limit: 1MiB", "memory_limit"),
            ("memory_limit: lots", "memory_limit"),
            ("compression: lz77", "compression"),
            ("partitions: 0", "partitions"),
        ];
        for (line, field) in cases {
            let text = SEED_CONFIG.replace("delimiter: \",\"", line);
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{line}: {err}");
        }
    }

    #[test]
    fn memory_limit_spill_dir_and_compression() {
        let cfg = parse(SEED_CONFIG).unwrap();
        assert_eq!(cfg.memory_limit, DEFAULT_MEMORY_LIMIT);
        assert_eq!(cfg.spill_dir, std::env::temp_dir());
        assert_eq!(cfg.compression, Compression::Zstd);
        for (text, bytes) in [
            ("1GiB", 1u64 << 30),
            ("512 MiB", 512 << 20),
            ("100000000", 100_000_000),
            ("2GB", 2_000_000_000),
        ] {
            let cfg = parse(&SEED_CONFIG.replace(
                "extract_type: full",
                &format!("extract_type: full\nmemory_limit: {text}"),
            ))
            .unwrap();
            assert_eq!(cfg.memory_limit, bytes, "{text}");
        }
        let cfg = parse(&SEED_CONFIG.replace(
            "extract_type: full",
            "extract_type: full\nspill_dir: spill\ncompression: snappy",
        ))
        .unwrap();
        assert_eq!(cfg.spill_dir, Path::new("/base/spill"));
        assert_eq!(cfg.compression, Compression::Snappy);
    }

    #[test]
    fn unquoted_yaml_null_as_null_value_is_refused() {
        let text =
            SEED_CONFIG.replace("extract_type: full", "extract_type: full\nnull_value: NULL");
        assert!(parse(&text).unwrap_err().to_string().contains("quote"));
        let text = SEED_CONFIG.replace(
            "extract_type: full",
            "extract_type: full\nnull_value: \"NULL\"",
        );
        assert_eq!(parse(&text).unwrap().null_value.as_deref(), Some("NULL"));
    }

    #[test]
    fn a_bare_config_file_name_resolves_against_the_working_folder() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(config_folder(Path::new("config.yaml")).unwrap(), cwd);
        assert_eq!(
            config_folder(Path::new("sub/config.yaml")).unwrap(),
            cwd.join("sub")
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let text = SEED_CONFIG.replace("file:///tmp/sample_data_history", "lake/history");
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.history_url.as_str(), "file:///base/lake/history/");
    }

    #[test]
    fn key_columns_are_required_and_cannot_be_ignored() {
        let no_key = SEED_CONFIG.replace("key: true", "key: false");
        assert!(parse(&no_key)
            .unwrap_err()
            .to_string()
            .contains("key: true"));
        let ignored_key =
            SEED_CONFIG.replacen("key: true\n  ignore: false", "key: true\n  ignore: true", 1);
        assert!(parse(&ignored_key)
            .unwrap_err()
            .to_string()
            .contains("columns[0].ignore"));
    }

    #[test]
    fn system_column_names_are_reserved() {
        let text = SEED_CONFIG.replace("name: nonkeycol1", "name: keyhash");
        assert!(parse(&text)
            .unwrap_err()
            .to_string()
            .contains("columns[5].name"));
    }
}
