//! Entry points for the `cargo fuzz` targets in `fuzz/` (docs/fuzzing.md): each takes arbitrary
//! bytes, runs one reader of untrusted input on them as a file, and returns whether it was
//! accepted. Errors are the expected outcome of most inputs; a panic or a hang is a bug.
//!
//! Not part of the supported API (hidden from the docs); compiled in every build and exercised
//! by the unit tests below, so the targets never fall behind the code.

use std::path::{Path, PathBuf};

use crate::config::{InputFormat, TableConfig, TableEntry, TablesFile};
use crate::report::progress::Progress;
use crate::source::changelog::{self, ChangeFile, ChangeFormat, FileKind};
use crate::source::extract::{self, InputFile};

/// Columns of every type, the key first (for the CSV and change-log targets).
const COLUMNS: &str = "\
- {name: id, type: long, key: true}
- {name: name, type: string}
- {name: amount, type: \"decimal(12,2)\"}
- {name: score, type: double}
- {name: day, type: date}
- {name: at, type: timestamp}
- {name: flag, type: boolean}
- {name: n, type: int}
";

/// A scratch folder that lives as long as the value.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().expect("a temporary folder"))
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, data).expect("a writable temporary folder");
        path
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Reads `data` as a CSV extract (the record splitter, strict quoting, typed parse, hashing);
/// `multiline` allows quoted line breaks.
pub fn csv_extract(data: &[u8], multiline: bool) -> bool {
    let dir = Scratch::new();
    let config = format!(
        "name: t\ncurrent_table_path: lake/current\nhistory_table_path: lake/history\n\
         extract_type: full\ndelimiter: \",\"\nmultiline: {multiline}\ncolumns:\n{COLUMNS}"
    );
    let config_path = dir.write("config.yaml", config.as_bytes());
    let Ok(config) = TableConfig::load(&config_path) else {
        return false;
    };
    let path = dir.write("part.csv", data);
    let file = InputFile {
        path,
        format: InputFormat::Csv,
        size: data.len() as u64,
        modified_ms: 0,
        file_id: None,
    };
    extract::read(&config, &[file], &Progress::hidden(), &mut |_| Ok(())).is_ok()
}

/// Reads `data` as a change file of a landing-zone table: a DMS CSV change file (with a
/// commit timestamp column) or Debezium JSON lines.
fn change_file(data: &[u8], layout: &str, name: &str, format: ChangeFormat) -> bool {
    let dir = Scratch::new();
    let timestamp = match layout {
        "dms" => "timestamp_column: ts\n",
        _ => "",
    };
    let entry = format!(
        "source: s/t\nlayout: {layout}\nprimary_key: [id]\n{timestamp}columns:\n{}",
        COLUMNS.replace(", key: true", "")
    );
    let Ok(entry) = serde_yaml::from_str::<TableEntry>(&entry) else {
        return false;
    };
    let Ok(config) = entry.changelog_table(
        0,
        &crate::config::storage::LakeRoot::local(&dir.path().join("lake")),
    ) else {
        return false;
    };
    let path = dir.write(name, data);
    let file = ChangeFile::new(path, name, FileKind::Change, format, data.len() as u64);
    let limit = crate::config::DEFAULT_MEMORY_LIMIT;
    changelog::read(&config, &file, 0, 0, limit, &mut |_| Ok(())).is_ok()
}

/// Reads `data` as a DMS CSV change file (`Op`, commit timestamp, then the columns).
pub fn dms_csv(data: &[u8]) -> bool {
    change_file(data, "dms", "20240101-000000000.csv", ChangeFormat::Csv)
}

/// Reads `data` as a file of Debezium JSON events (one per line).
pub fn debezium_json(data: &[u8]) -> bool {
    change_file(data, "debezium", "events.json", ChangeFormat::JsonLines)
}

/// Loads `data` as a table config (`tributary run`) and as a tables file (`tributary sync`).
pub fn config(data: &[u8]) -> (bool, bool) {
    let dir = Scratch::new();
    let path = dir.write("config.yaml", data);
    let table = TableConfig::load(&path).is_ok();
    let tables = TablesFile::load(&path).is_ok_and(|file| {
        file.tables.iter().enumerate().all(|(i, e)| {
            e.changelog_table(
                i,
                &crate::config::storage::LakeRoot::local(&dir.path().join("lake")),
            )
            .is_ok()
        })
    });
    (table, tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_accepts_good_input_and_refuses_bad_input() {
        let row = b"1,a,1.25,0.5,2024-01-01,2024-01-01 10:00:00,true,3\n";
        assert!(csv_extract(row, false));
        assert!(!csv_extract(b"1,\"open\n2,b\n", false));
        assert!(!csv_extract(&[0xff, 0xfe, b'\n'], true));
        assert!(dms_csv(
            b"I,2024-01-01 10:00:00.000000,1,a,1.25,0.5,2024-01-01,2024-01-01 10:00:00,true,3\n"
        ));
        assert!(!dms_csv(b"X,nope\n"));
        let event = br#"{"op":"c","ts_ms":1,"after":{"id":1,"name":"a","amount":"1.25","score":0.5,"day":19723,"at":1704103200000000,"flag":true,"n":3}}"#;
        assert!(debezium_json(event), "{}", String::from_utf8_lossy(event));
        assert!(!debezium_json(b"{\"op\":"));
        assert_eq!(config(b"::"), (false, false));
        let tables = format!(
            "tables:\n- source: s/t\n  primary_key: [id]\n  columns:\n{}",
            COLUMNS
                .replace(", key: true", "")
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        assert_eq!(config(tables.as_bytes()), (false, true));
    }
}
