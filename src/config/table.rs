//! A snapshot table's config: the YAML file `tributary run` is driven by.
//!
//! A superset of the seed article's `config.yaml` (name, current/temp-current/history paths,
//! delimiter, extract_type, columns with name/type/key/ignore); the seed's file runs unchanged.
//! [`ConfigFile`] is what the YAML says; [`TableConfig`] is the validated runtime form, in the
//! sections of [`crate::config`]. Validation is pure: it touches no file system and no network.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    invalid, single_byte, validate_columns, ByteSizeText, ColumnFile, Compression, ExtractType,
    InputFormat, LakeConfig, LakePaths, OnError, SnapshotOptions, SourceOptions, TableSpec,
    DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_MAX_DELETE_FRACTION, DEFAULT_MEMORY_LIMIT, MAX_PARTITIONS,
    MIN_MEMORY_LIMIT,
};
use crate::core::hash::HashAlgorithm;
use crate::error::{Error, Result};

/// The YAML file as written. Unknown keys are an error that names the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Table name: the Delta `txn` app id is `tributary:<name>`.
    pub name: String,
    /// The current table (a path relative to the config's folder, or a URL).
    pub current_table_path: String,
    /// Accepted for seed compatibility; unused (Delta commits make a temp table unnecessary).
    pub temp_current_table_path: Option<String>,
    /// The history table (a path relative to the config's folder, or a URL).
    pub history_table_path: String,
    /// Where rejected rows go with `on_error: reject`; default `<current_table_path>_rejects`.
    pub rejects_table_path: Option<String>,
    /// CSV field delimiter, one character (`\t` for a tab); default `,`.
    pub delimiter: Option<String>,
    /// CSV quote character; default `"`.
    pub quote: Option<String>,
    /// Whether CSV files start with a header line (checked, then skipped); default false.
    pub header: Option<bool>,
    /// Whether a quoted CSV field may hold line breaks; default false (a line break inside
    /// quotes is then a bad row: an unclosed quote).
    pub multiline: Option<bool>,
    /// `Some(None)` when the YAML says `null_value: NULL` (or `~`) unquoted: YAML reads that as
    /// null, not as the text NULL, so it is refused with a hint to quote it.
    #[serde(default, deserialize_with = "explicit_null")]
    pub null_value: Option<Option<String>>,
    /// `csv` or `parquet`; default: from each file's extension.
    pub format: Option<InputFormat>,
    /// `full` or `delta`.
    pub extract_type: ExtractType,
    /// `xxh3` (default) or `md5`.
    pub hash: Option<HashAlgorithm>,
    /// Share of the current table a full extract may delete before the run is refused; default 0.5.
    pub max_delete_fraction: Option<f64>,
    /// `fail` (default) or `reject`.
    pub on_error: Option<OnError>,
    /// Delta checkpoint interval, in commits; default 100.
    pub checkpoint_interval: Option<u64>,
    /// Whether the tables record the Delta change data feed (`delta.enableChangeDataFeed`);
    /// default false.
    pub change_data_feed: Option<bool>,
    /// Memory the diff may hold (e.g. `1GiB`, `512MiB`, or a byte count); past it, partitions
    /// spill to `spill_dir`. Default [`DEFAULT_MEMORY_LIMIT`].
    pub memory_limit: Option<ByteSizeText>,
    /// Folder for spill files; default the system temporary folder (`TMPDIR`).
    pub spill_dir: Option<String>,
    /// Threads of the run's parallel stages (`crate::core::threads`); default the cores
    /// `tributary` may run on. `--threads` overrides it.
    pub threads: Option<usize>,
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
    /// Options of the object store the tables are in (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ALLOW_HTTP`, ...: the keys delta-rs takes), over the environment's; see
    /// `sink::storage`. Default none.
    pub storage_options: Option<super::storage::StorageOptions>,
    /// Where the tables are registered after each run (`{type: glue, database: NAME}`); see
    /// `sink::catalog`. Default none.
    pub catalog: Option<super::catalog::CatalogConfig>,
    /// The columns in input order.
    pub columns: Vec<ColumnFile>,
}

/// The validated config of `tributary run`, in sections.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Name, columns, hashing and lake tables.
    pub table: TableSpec,
    /// How the extract files are read.
    pub source: SourceOptions,
    /// The diff engine's settings.
    pub snapshot: SnapshotOptions,
    /// Set when the file named `temp_current_table_path` (logged once as unused).
    pub has_temp_current_path: bool,
}

impl TableConfig {
    /// Reads and validates a config file. Relative table paths are resolved against the config
    /// file's folder.
    ///
    /// # Errors
    /// [`Error::ConfigRead`] if the file cannot be read, [`Error::ConfigParse`] for YAML errors and
    /// unknown keys, [`Error::InvalidFieldValue`] for values that fail validation.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let file: ConfigFile =
            serde_yaml::from_str(&text).map_err(|source| Error::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        let base = config_folder(path)?;
        file.validate(&base)
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

impl ConfigFile {
    /// Checks every field and returns the runtime config. Pure: no I/O.
    ///
    /// # Errors
    /// [`Error::InvalidFieldValue`] naming the first field that fails.
    pub fn validate(self, base: &Path) -> Result<TableConfig> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let columns = validate_columns(&self.columns)?;
        let max_delete_fraction = self
            .max_delete_fraction
            .unwrap_or(DEFAULT_MAX_DELETE_FRACTION);
        if !(0.0..=1.0).contains(&max_delete_fraction) {
            return Err(invalid(
                "max_delete_fraction",
                "must be in the interval [0.0, 1.0]",
            ));
        }
        if self.checkpoint_interval == Some(0) {
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
            if !(1..=MAX_PARTITIONS).contains(&p) {
                return Err(invalid(
                    "partitions",
                    format!("must be in 1..={MAX_PARTITIONS}"),
                ));
            }
        }
        if let Some(n) = self.threads {
            crate::core::threads::check(n).map_err(|e| invalid("threads", e))?;
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
        let mut lake = LakeConfig::validate(
            LakePaths {
                current: &self.current_table_path,
                history: &self.history_table_path,
                rejects: self.rejects_table_path.as_deref(),
                applied: self.applied_table_path.as_deref(),
                tombstones: None,
            },
            base,
            &columns,
            self.partition_by.unwrap_or_default(),
            self.compression.unwrap_or_default(),
            self.checkpoint_interval
                .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL),
        )?;
        lake.change_data_feed = self.change_data_feed.unwrap_or(false);
        if let Some(options) = self.storage_options {
            options.validate()?;
            lake.storage_options = options;
        }
        if let Some(catalog) = self.catalog {
            catalog.validate()?;
            lake.catalog = Some(catalog);
        }
        // every later open of these tables, whoever makes it, takes the config's options
        super::storage::register_lake(&lake);
        Ok(TableConfig {
            table: TableSpec {
                name: self.name,
                columns,
                hash: self.hash.unwrap_or_default(),
                key_nullable: false,
                lake,
                source_positions: false,
            },
            source: SourceOptions {
                format: self.format,
                delimiter,
                quote,
                header: self.header.unwrap_or(false),
                multiline: self.multiline.unwrap_or(false),
                null_value,
                on_error: self.on_error.unwrap_or(OnError::Fail),
            },
            snapshot: SnapshotOptions {
                extract_type: self.extract_type,
                max_delete_fraction,
                memory_limit,
                spill_dir,
                partitions: self.partitions,
                threads: self.threads,
            },
            has_temp_current_path: self.temp_current_table_path.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::schema::ColumnType;

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
        assert_eq!(cfg.table.name, "sample_data");
        assert_eq!(
            cfg.table.lake.current_url.as_str(),
            "file:///tmp/sample_data_current"
        );
        assert_eq!(
            cfg.table.lake.rejects_url.as_str(),
            "file:///tmp/sample_data_current_rejects/"
        );
        assert!(cfg.has_temp_current_path);
        assert_eq!(cfg.table.key_indices(), vec![0, 1, 2, 3, 4]);
        assert_eq!(cfg.table.nonkey_indices(), vec![5, 6, 7]);
        assert_eq!(cfg.table.columns[5].ty, ColumnType::Double);
        assert_eq!(cfg.snapshot.extract_type, ExtractType::Full);
        assert_eq!(cfg.table.hash, HashAlgorithm::Xxh3);
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
            ("threads: 0", "threads"),
            ("threads: 5000", "threads"),
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
        assert_eq!(cfg.snapshot.memory_limit, DEFAULT_MEMORY_LIMIT);
        assert_eq!(cfg.snapshot.spill_dir, std::env::temp_dir());
        assert_eq!(cfg.table.lake.compression, Compression::Zstd);
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
            assert_eq!(cfg.snapshot.memory_limit, bytes, "{text}");
        }
        let cfg = parse(&SEED_CONFIG.replace(
            "extract_type: full",
            "extract_type: full\nspill_dir: spill\ncompression: snappy",
        ))
        .unwrap();
        assert_eq!(cfg.snapshot.spill_dir, Path::new("/base/spill"));
        assert_eq!(cfg.table.lake.compression, Compression::Snappy);
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
        assert_eq!(
            parse(&text).unwrap().source.null_value.as_deref(),
            Some("NULL")
        );
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
        assert_eq!(
            cfg.table.lake.history_url.as_str(),
            "file:///base/lake/history/"
        );
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
