//! The tables file of `tributary sync`: which landing-zone tables are loaded, and how.
//!
//! The DMS walkthrough keeps one DynamoDB item per table (`ActiveFlag`, `PrimaryKey`,
//! `PartitionKey`); Tributary keeps one YAML entry per `<schema>/<table>` folder:
//!
//! ```yaml
//! tables:
//! - source: sales/orders        # folder under the landing root
//!   active: true                # loaded only when true
//!   layout: dms                 # dms (LOAD*/timestamped csv|parquet) or debezium (json[l], avro)
//!   primary_key: [id]           # empty: only inserts are loaded
//!   partition_by: [region]      # partition columns of the current table
//!   delete_mode: hard           # hard, or soft (keeps the key with operation D)
//!   timestamp_column: commit_ts # DMS TimestampColumnName, if the task sets one
//!   eff_start: commit           # history date: commit (the change's commit time) or run
//!   timestamp_precision: micros # debezium: numbers in timestamp columns (micros or millis)
//!   tombstone_retention_days: 7 # how long a deleted key's position is kept (late files)
//!   columns:
//!   - {name: id, type: long}
//!   - {name: region, type: string}
//! ```
//!
//! Each table lands in `<lake>/<schema>/<table>/{current,history,applied,rejects,tombstones}`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::storage::{LakeRoot, StorageOptions};
use super::{
    invalid, single_byte, validate_columns, ColumnFile, Compression, LakeConfig, LakePaths,
    OnError, SourceOptions, TableSpec, DEFAULT_CHECKPOINT_INTERVAL,
};
use crate::error::{Error, Result};

/// The tables file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TablesFile {
    /// Options of the store the lake is in (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...: the keys
    /// delta-rs takes), over the environment's, for every table; see `sink::storage`.
    #[serde(default, skip_serializing_if = "StorageOptions::is_empty")]
    pub storage_options: StorageOptions,
    /// Where every table is registered after each sync (`{type: glue, database: NAME}`); see
    /// `sink::catalog`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<super::catalog::CatalogConfig>,
    #[serde(default)]
    /// One entry per landing-zone table.
    pub tables: Vec<TableEntry>,
}

/// How a table's change files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// AWS DMS S3 target: `LOAD<hex>.csv|parquet` full-load files and
    /// `<yyyymmdd-hhmmssfff>.csv|parquet` change files with an `Op` column.
    #[default]
    Dms,
    /// Debezium change events as JSON lines (`*.json`, `*.jsonl`) or Avro container files
    /// (`*.avro`, Kafka Connect S3 sink): envelope, wrapped in `schema`/`payload`, or flattened
    /// by `ExtractNewRecordState`.
    Debezium,
}

impl std::fmt::Display for Layout {
    /// The tables file's spelling: `dms`, `debezium`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Dms => "dms",
            Layout::Debezium => "debezium",
        })
    }
}

/// What a delete does to the current table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// The row is removed.
    #[default]
    Hard,
    /// The row stays, with `operation = D` and the delete's date.
    Soft,
}

/// Which date a change is recorded under in `eff_start_date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EffStart {
    /// The change's commit time (DMS timestamp column, Debezium `source.ts_ms`), or the run's
    /// date when the source has none.
    #[default]
    Commit,
    /// Always the run's date.
    Run,
}

/// Unit of numbers in `timestamp` columns of Debezium events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampPrecision {
    /// Microseconds since the epoch (`io.debezium.time.MicroTimestamp`, Avro `timestamp-micros`).
    #[default]
    Micros,
    /// Milliseconds since the epoch (`io.debezium.time.Timestamp`, MySQL `DATETIME` in the
    /// default adaptive mode, Avro `timestamp-millis`).
    Millis,
}

/// One table of the tables file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableEntry {
    /// `<schema>/<table>`: the folder under the landing root.
    pub source: String,
    #[serde(default)]
    /// Loaded only when true.
    pub active: bool,
    #[serde(default)]
    /// How the change files are laid out.
    pub layout: Layout,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Key columns; empty: only inserts are loaded.
    pub primary_key: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Partition columns of the current table.
    pub partition_by: Vec<String>,
    #[serde(default)]
    /// What a delete does to the current table.
    pub delete_mode: DeleteMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// DMS `TimestampColumnName`, if the task sets one.
    pub timestamp_column: Option<String>,
    #[serde(default)]
    /// Which date a change is recorded under in `eff_start_date`.
    pub eff_start: EffStart,
    /// Debezium only: unit of numbers in `timestamp` columns.
    #[serde(default)]
    pub timestamp_precision: TimestampPrecision,
    /// CSV field delimiter (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// CSV text read as NULL (default: an empty field is NULL in non-string columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_value: Option<String>,
    /// Whether a quoted CSV field may hold line breaks (default true: DMS quotes values that
    /// hold them). `false` makes a line break inside quotes a bad row (an unclosed quote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<bool>,
    /// Days a deleted key's source position is kept after its delete (default 7): a late
    /// change file older than the delete cannot bring the key back within them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone_retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Parquet codec of the written data files (default zstd).
    pub compression: Option<Compression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Whether the tables record the Delta change data feed (`delta.enableChangeDataFeed`;
    /// default false).
    pub change_data_feed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Whether merges mark replaced and deleted rows of the current table in Delta deletion
    /// vectors instead of rewriting its files (`delta.enableDeletionVectors`; default false).
    pub deletion_vectors: Option<bool>,
    /// Columns in source order (CSV files have no header). `key` and `ignore` are not used
    /// here: keys come from `primary_key`.
    #[serde(default)]
    pub columns: Vec<ColumnFile>,
}

impl TableEntry {
    /// An inactive entry for a newly discovered folder.
    pub fn discovered(source: String, columns: Vec<ColumnFile>, layout: Layout) -> Self {
        TableEntry {
            source,
            active: false,
            layout,
            primary_key: Vec::new(),
            partition_by: Vec::new(),
            delete_mode: DeleteMode::Hard,
            timestamp_column: None,
            eff_start: EffStart::Commit,
            timestamp_precision: TimestampPrecision::Micros,
            delimiter: None,
            null_value: None,
            multiline: None,
            tombstone_retention_days: None,
            compression: None,
            change_data_feed: None,
            deletion_vectors: None,
            columns,
        }
    }

    /// The table's name in the lake and in messages: `<schema>.<table>`.
    pub fn name(&self) -> String {
        table_name(&self.source)
    }

    /// Checks the entry as `sync` will (columns listed, primary key among them, types and
    /// options valid), without touching any file.
    ///
    /// # Errors
    /// [`Error::InvalidFieldValue`] naming the entry and the field, as `sync` reports it.
    pub fn check(&self) -> Result<()> {
        self.changelog_table(0, &LakeRoot::local(Path::new("/")))
            .map(drop)
            .map_err(|e| match e {
                Error::InvalidFieldValue { field, constraint } => Error::InvalidFieldValue {
                    field: field.replacen("tables[0] (", "tables (", 1),
                    constraint,
                },
                other => other,
            })
    }

    /// Whether only inserts are loaded (no primary key configured).
    pub fn insert_only(&self) -> bool {
        self.primary_key.is_empty()
    }

    /// The validated change-log table of this entry, with its tables under
    /// `lake/<schema>/<table>/{current,history,applied,rejects}`.
    ///
    /// Without a primary key every column is hashed as the key (rows are only appended). CSV
    /// change files are read with the entry's delimiter and NULL text, without a header (DMS
    /// writes none), and a bad row always fails the read: skipping one change of a log would
    /// leave the table wrong with no trace.
    ///
    /// # Errors
    /// [`Error::InvalidFieldValue`] naming `tables[i]` and the field.
    pub fn changelog_table(&self, index: usize, lake: &LakeRoot) -> Result<ChangelogTable> {
        let field = |name: &str| format!("tables[{index}] ({}).{name}", self.source);
        let parts: Vec<&str> = self.source.trim_matches('/').split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty() || *p == "..") {
            return Err(Error::InvalidFieldValue {
                field: field("source"),
                constraint: "must be <schema>/<table>".into(),
            });
        }
        if self.columns.is_empty() {
            return Err(Error::InvalidFieldValue {
                field: field("columns"),
                constraint: "list the table's columns in source order".into(),
            });
        }
        for (i, name) in self.primary_key.iter().enumerate() {
            if !self.columns.iter().any(|c| &c.name == name) {
                return Err(Error::InvalidFieldValue {
                    field: field(&format!("primary_key[{i}]")),
                    constraint: format!("`{name}` is not a listed column"),
                });
            }
        }
        let insert_only = self.insert_only();
        let columns: Vec<ColumnFile> = self
            .columns
            .iter()
            .map(|c| ColumnFile {
                name: c.name.clone(),
                ty: c.ty.clone(),
                key: insert_only || self.primary_key.contains(&c.name),
                ignore: false,
            })
            .collect();
        let root = lake;
        let path = |name: &str| root.table_path(parts[0], parts[1], name);
        let base = root.folder().unwrap_or_default();
        let (current, history, rejects, applied, tombstones) = (
            path("current"),
            path("history"),
            path("rejects"),
            path("applied"),
            path("tombstones"),
        );
        let validated = (|| {
            let columns = validate_columns(&columns)?;
            let delimiter = single_byte("delimiter", self.delimiter.as_deref(), b',')?;
            if delimiter == b'"' {
                return Err(invalid("quote", "must differ from the delimiter"));
            }
            let mut lake = LakeConfig::validate(
                LakePaths {
                    current: &current,
                    history: &history,
                    rejects: Some(&rejects),
                    applied: Some(&applied),
                    tombstones: Some(&tombstones),
                },
                &base,
                &columns,
                self.partition_by.clone(),
                self.compression.unwrap_or_default(),
                DEFAULT_CHECKPOINT_INTERVAL,
            )?;
            lake.change_data_feed = self.change_data_feed.unwrap_or(false);
            lake.deletion_vectors = self.deletion_vectors.unwrap_or(false);
            root.storage_options.validate()?;
            lake.storage_options = root.storage_options.clone();
            // every later open of these tables, whoever makes it, takes the root's options
            super::storage::register_lake(&lake);
            Ok((columns, delimiter, lake))
        })();
        let (columns, delimiter, lake) = validated.map_err(|e| match e {
            Error::InvalidFieldValue {
                field: f,
                constraint,
            } => Error::InvalidFieldValue {
                field: field(&f),
                constraint,
            },
            other => other,
        })?;
        Ok(ChangelogTable {
            folder: self.source.clone(),
            table: TableSpec {
                name: self.name(),
                columns,
                hash: Default::default(),
                key_nullable: insert_only,
                lake,
                source_positions: true,
            },
            source: SourceOptions {
                format: None,
                delimiter,
                quote: b'"',
                header: false,
                multiline: self.multiline.unwrap_or(true),
                null_value: self.null_value.clone(),
                on_error: OnError::Fail,
            },
            layout: self.layout,
            delete_mode: self.delete_mode,
            insert_only,
            timestamp_column: self.timestamp_column.clone(),
            eff_start: self.eff_start,
            timestamp_precision: self.timestamp_precision,
            tombstone_retention_days: self
                .tombstone_retention_days
                .unwrap_or(DEFAULT_TOMBSTONE_RETENTION_DAYS),
            history_every_change: false,
        })
    }
}

/// Default days a deleted key's tombstone is kept ([`ChangelogTable::tombstone_retention_days`]);
/// the same as Delta's default `delta.deletedFileRetentionDuration`.
pub const DEFAULT_TOMBSTONE_RETENTION_DAYS: u32 = 7;

/// A tables-file entry, validated: how `sync` reads one landing folder and writes its tables.
#[derive(Debug, Clone)]
pub struct ChangelogTable {
    /// `<schema>/<table>`: the folder under the landing root.
    pub folder: String,
    /// Name (`<schema>.<table>`), columns and key, lake tables.
    pub table: TableSpec,
    /// How CSV and Parquet change files are read.
    pub source: SourceOptions,
    /// DMS or Debezium files.
    pub layout: Layout,
    /// What a delete does to the current table.
    pub delete_mode: DeleteMode,
    /// No primary key: only inserts are loaded.
    pub insert_only: bool,
    /// DMS `TimestampColumnName`, if the task sets one.
    pub timestamp_column: Option<String>,
    /// Which date a change is recorded under.
    pub eff_start: EffStart,
    /// Debezium: unit of numbers in `timestamp` columns.
    pub timestamp_precision: TimestampPrecision,
    /// Days a deleted key's tombstone (its delete's source position) is kept, counted from the
    /// delete's date to the run's (see `sink::delta::tombstones`).
    pub tombstone_retention_days: u32,
    /// History keeps every change of a run, not only each key's last (`capture`: one version
    /// per committed change; `sync` keeps the DMS walkthrough's last change per key).
    pub history_every_change: bool,
}

impl TablesFile {
    /// Reads a tables file; a missing file is an empty list.
    ///
    /// # Errors
    /// [`Error::ConfigRead`] when it cannot be read, [`Error::ConfigParse`] for bad YAML and unknown
    /// keys.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(Error::ConfigRead {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let file: TablesFile =
            serde_yaml::from_str(&text).map_err(|source| Error::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        if let Some(catalog) = &file.catalog {
            catalog.validate()?;
            let names: Vec<String> = file.tables.iter().map(TableEntry::name).collect();
            super::catalog::check_unique(names.iter().map(String::as_str))?;
        }
        file.storage_options.validate()?;
        let mut seen = std::collections::HashSet::new();
        for entry in &file.tables {
            if !seen.insert(entry.name()) {
                return Err(Error::InvalidFieldValue {
                    field: format!("tables ({})", entry.source),
                    constraint: "is listed twice".into(),
                });
            }
        }
        Ok(file)
    }

    /// Writes the file (atomically: a temporary file renamed over it).
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self)
            .map_err(|e| Error::Internal(format!("cannot serialise the tables file: {e}")))?;
        let header = "# Tributary sync tables: set `active: true`, `primary_key` and `columns` to \
                      load a table (see docs/sync.md).\n";
        let tmp = path.with_extension("yaml.tmp");
        // The file may hold secrets (`storage_options`): the new one is made readable by its
        // owner only, then given the permissions the old one had.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        std::io::Write::write_all(&mut file, format!("{header}{text}").as_bytes())?;
        if let Ok(old) = std::fs::metadata(path) {
            file.set_permissions(old.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The entry of `source` (`<schema>/<table>`), if listed.
    pub fn find(&self, source: &str) -> Option<&TableEntry> {
        let name = table_name(source);
        self.tables.iter().find(|t| t.name() == name)
    }
}

/// The name of a `<schema>/<table>` source: `<schema>.<table>`.
pub fn table_name(source: &str) -> String {
    source.trim_matches('/').replace('/', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(yaml: &str) -> TableEntry {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_table_entry_becomes_a_config_under_the_lake() {
        let e = entry(
            "source: sales/orders\nactive: true\nprimary_key: [id]\npartition_by: [region]\n\
             columns:\n- {name: id, type: long}\n- {name: region, type: string}\n",
        );
        let config = e
            .changelog_table(0, &LakeRoot::local(Path::new("/lake")))
            .unwrap();
        assert_eq!(config.table.name, "sales.orders");
        assert_eq!(
            config.table.lake.current_url.as_str(),
            "file:///lake/sales/orders/current/"
        );
        assert_eq!(
            config.table.lake.applied_url.as_str(),
            "file:///lake/sales/orders/applied/"
        );
        assert_eq!(config.table.key_indices(), vec![0]);
        assert_eq!(config.table.lake.partition_by, vec!["region".to_string()]);
    }

    #[test]
    fn without_a_primary_key_every_column_is_the_key() {
        let e =
            entry("source: s/t\ncolumns:\n- {name: a, type: long}\n- {name: b, type: string}\n");
        assert!(e.insert_only());
        let config = e
            .changelog_table(0, &LakeRoot::local(Path::new("/lake")))
            .unwrap();
        assert_eq!(config.table.key_indices(), vec![0, 1]);
    }

    #[test]
    fn bad_entries_name_the_table_and_field() {
        let cases = [
            (
                "source: onlyone\ncolumns:\n- {name: a, type: long}\n",
                "source",
            ),
            ("source: s/t\n", "columns"),
            (
                "source: s/t\nprimary_key: [b]\ncolumns:\n- {name: a, type: long}\n",
                "primary_key[0]",
            ),
            (
                "source: s/t\npartition_by: [b]\ncolumns:\n- {name: a, type: long}\n",
                "partition_by[0]",
            ),
        ];
        for (yaml, field) in cases {
            let err = entry(yaml)
                .changelog_table(3, &LakeRoot::local(Path::new("/lake")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("tables[3]") && err.contains(field),
                "{yaml}: {err}"
            );
        }
    }

    #[test]
    fn the_tables_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tables.yaml");
        assert!(TablesFile::load(&path).unwrap().tables.is_empty());
        let file = TablesFile {
            storage_options: StorageOptions::new([("AWS_REGION".into(), "eu-west-1".into())]),
            catalog: None,
            tables: vec![TableEntry::discovered(
                "hr/people".into(),
                Vec::new(),
                Layout::Dms,
            )],
        };
        file.save(&path).unwrap();
        let back = TablesFile::load(&path).unwrap();
        assert_eq!(back.storage_options, file.storage_options);
        #[cfg(unix)]
        {
            // saved again, the file keeps the owner-only permissions it was given
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600, "a new file is the owner's only");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            back.save(&path).unwrap();
            assert_eq!(mode(&path), 0o640);
        }
        assert_eq!(back.tables.len(), 1);
        assert!(!back.tables[0].active);
        assert!(back.find("hr/people").is_some());
    }
}
