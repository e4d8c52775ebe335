//! Debezium change events: JSON lines (one event value per line), or Avro container files as
//! the Kafka Connect S3 sink writes them (read with the `apache-avro` crate).
//!
//! Accepted forms (Debezium documentation, "Change event values"):
//! - the **envelope**: `{"before": {...}, "after": {...}, "source": {...}, "op": "c|r|u|d",
//!   "ts_ms": ...}`;
//! - the same **wrapped** by the JSON converter with schemas enabled: `{"schema": {...},
//!   "payload": <envelope>}`;
//! - the **flattened** form of the `ExtractNewRecordState` transform: the row's columns plus
//!   `__op`, `__deleted` (`"true"` on deletes, whose non-key fields may be NULL), `__lsn`,
//!   `__source_ts_ms` (and `__ts_ms`).
//!
//! Tombstones (a `null` value, an empty line, or a wrapped `null` payload) are skipped.
//!
//! Order: `source.lsn` (PostgreSQL) when present; else the MySQL binlog position
//! (`source.file` sequence number and `source.pos`); else `source.ts_ms`. File and line break
//! ties. The commit date is `source.ts_ms` (else the event's `ts_ms`).
//!
//! Values: JSON strings, numbers and booleans are read as text and cast to the column type;
//! for `date` columns a number is days since the epoch (`io.debezium.time.Date`), for
//! `timestamp` columns microseconds (`io.debezium.time.MicroTimestamp`).

use std::fs::File;
use std::io::{BufRead, BufReader};

use serde_json::{Map, Value};

use super::{BatchSink, ChangeFile, ChangeFormat, RowsBuilder};
use crate::config::tables::TimestampPrecision;
use crate::config::ChangelogTable;
use crate::core::change::ChangeOp;
use crate::core::schema::ColumnType;
use crate::core::time::{date_text, millis_days};
use crate::error::{Error, Result};

/// One parsed event: operation, row values, source position and commit time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub op: ChangeOp,
    pub row: Map<String, Value>,
    pub position: u64,
    pub commit_ms: Option<i64>,
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The sequence number of a MySQL binlog file name (`mysql-bin.000003` -> 3).
fn binlog_sequence(name: &str) -> Option<u64> {
    name.rsplit('.').next()?.parse().ok()
}

/// Order position of an event from its `source` block (or the flattened `__` fields).
fn position(source: &Map<String, Value>, prefix: &str) -> u64 {
    let get = |k: &str| source.get(&format!("{prefix}{k}"));
    if let Some(lsn) = as_u64(get("lsn")) {
        return lsn;
    }
    if let (Some(file), Some(pos)) = (
        get("file")
            .and_then(Value::as_str)
            .and_then(binlog_sequence),
        as_u64(get("pos")),
    ) {
        return (file << 40) | (pos & ((1 << 40) - 1));
    }
    as_u64(get("source_ts_ms"))
        .or_else(|| as_u64(get("ts_ms")))
        .unwrap_or(0)
}

/// Parses one event value. Ok(None): a tombstone.
pub(crate) fn parse_event(value: Value) -> std::result::Result<Option<Event>, String> {
    let value = match value {
        Value::Null => return Ok(None),
        Value::Object(mut o) if o.contains_key("payload") && o.contains_key("schema") => {
            match o.remove("payload") {
                Some(Value::Null) | None => return Ok(None),
                Some(v) => v,
            }
        }
        v => v,
    };
    let Value::Object(mut object) = value else {
        return Err("an event must be a JSON object".into());
    };
    if let Some(op) = object.get("op").and_then(Value::as_str) {
        let op = op_code(op).ok_or_else(|| format!("`op` is `{op}`, expected c, r, u or d"))?;
        let source = match object.get("source") {
            Some(Value::Object(s)) => s.clone(),
            _ => Map::new(),
        };
        let image = if op == ChangeOp::Delete {
            "before"
        } else {
            "after"
        };
        let row = match object.remove(image) {
            Some(Value::Object(row)) => row,
            _ => return Err(format!("a `{}` event has no `{image}` row", op_letter(op))),
        };
        let commit_ms = as_i64(source.get("ts_ms")).or_else(|| as_i64(object.get("ts_ms")));
        return Ok(Some(Event {
            op,
            row,
            position: position(&source, ""),
            commit_ms,
        }));
    }
    if object.contains_key("__op") || object.contains_key("__deleted") {
        let deleted = matches!(object.get("__deleted"), Some(Value::Bool(true)))
            || matches!(object.get("__deleted"), Some(Value::String(s)) if s == "true");
        let op = match object.get("__op").and_then(Value::as_str) {
            _ if deleted => ChangeOp::Delete,
            Some(op) => {
                op_code(op).ok_or_else(|| format!("`__op` is `{op}`, expected c, r, u or d"))?
            }
            None => ChangeOp::Insert,
        };
        let position = position(&object, "__");
        let commit_ms =
            as_i64(object.get("__source_ts_ms")).or_else(|| as_i64(object.get("__ts_ms")));
        object.retain(|k, _| !k.starts_with("__"));
        return Ok(Some(Event {
            op,
            row: object,
            position,
            commit_ms,
        }));
    }
    Err("not a Debezium event: no `op` (envelope) nor `__op`/`__deleted` (flattened)".into())
}

fn op_letter(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::Insert => "c",
        ChangeOp::Update => "u",
        ChangeOp::Delete => "d",
    }
}

/// The text a JSON value is cast from, for a column of type `ty` (None: NULL).
fn value_text(
    value: &Value,
    ty: ColumnType,
    precision: TimestampPrecision,
) -> std::result::Result<Option<String>, String> {
    Ok(match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => match (ty, n.as_i64()) {
            (ColumnType::Date, Some(days)) => {
                Some(date_text(days).ok_or_else(|| format!("{days} days is out of range"))?)
            }
            (ColumnType::Timestamp, Some(n)) => {
                let ts = match precision {
                    TimestampPrecision::Micros => chrono::DateTime::from_timestamp_micros(n),
                    TimestampPrecision::Millis => chrono::DateTime::from_timestamp_millis(n),
                }
                .ok_or_else(|| {
                    let unit = match precision {
                        TimestampPrecision::Micros => "microseconds",
                        TimestampPrecision::Millis => "milliseconds",
                    };
                    format!("{n} is out of range as {unit} since the epoch")
                })?;
                Some(ts.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
            }
            _ => Some(n.to_string()),
        },
        Value::Array(_) | Value::Object(_) => {
            return Err("nested values are not supported; flatten them upstream".into())
        }
    })
}

/// Reads an event file (JSON lines, or an Avro container file as written by the Kafka Connect
/// S3 sink, whose records are converted to JSON values) into change batches. Rows are numbered
/// by line (JSON) or record (Avro), from 1.
///
/// # Errors
/// [`Error::BadRow`] naming file, line (and column) for malformed events and values;
/// [`Error::Input`] for a file that cannot be opened or is not an Avro container file.
pub(super) fn read(
    config: &ChangelogTable,
    file: &ChangeFile,
    index: usize,
    sink: BatchSink<'_>,
) -> Result<()> {
    let handle = File::open(&file.path).map_err(|e| Error::Input {
        path: file.path.clone(),
        reason: format!("cannot open: {e}"),
    })?;
    let bad = |line: u64, column: Option<&str>, reason: String| {
        Error::bad_row(file.path.display(), line, column, reason)
    };
    let reader = BufReader::with_capacity(1 << 20, handle);
    let values: Box<dyn Iterator<Item = Result<(u64, Value)>>> = match file.format {
        ChangeFormat::Avro => {
            let avro = apache_avro::Reader::new(reader).map_err(|e| Error::Input {
                path: file.path.clone(),
                reason: format!("not an Avro container file: {e}"),
            })?;
            Box::new(avro.enumerate().map(move |(i, record)| {
                let line = i as u64 + 1;
                let record =
                    record.map_err(|e| bad(line, None, format!("bad Avro record: {e}")))?;
                let value = Value::try_from(record)
                    .map_err(|e| bad(line, None, format!("Avro record not convertible: {e}")))?;
                Ok((line, value))
            }))
        }
        _ => Box::new(
            reader
                .lines()
                .enumerate()
                .map(|(i, line)| Ok::<_, Error>((i as u64 + 1, line?)))
                .filter(|l| !matches!(l, Ok((_, text)) if text.trim().is_empty()))
                .map(move |l| {
                    let (line, text) = l?;
                    let value = serde_json::from_str(&text)
                        .map_err(|e| bad(line, None, format!("not JSON: {e}")))?;
                    Ok((line, value))
                }),
        ),
    };
    let mut rows = RowsBuilder::new(config, file, index, sink);
    let read = (|| -> Result<()> {
        for next in values {
            let (line_no, value) = next?;
            let Some(event) = parse_event(value).map_err(|e| bad(line_no, None, e))? else {
                continue;
            };
            for (c, column) in config.table.columns.iter().enumerate() {
                let value = event.row.get(&column.name).unwrap_or(&Value::Null);
                match value_text(value, column.ty, config.timestamp_precision)
                    .map_err(|e| bad(line_no, Some(&column.name), e))?
                {
                    Some(text) => rows.columns[c].append_value(text),
                    None => rows.columns[c].append_null(),
                }
            }
            // LSN, binlog position or ts_ms: comparable across files and runs (0: none)
            let durable = i64::try_from(event.position).ok().filter(|p| *p > 0);
            rows.push(
                event.op,
                event.position,
                durable,
                event.commit_ms.map(millis_days),
                line_no,
            )?;
        }
        Ok(())
    })();
    rows.end(read)
}

/// Parses a Debezium `op` / `__op` value (`c`, `r`, `u`, `d`).
fn op_code(text: &str) -> Option<ChangeOp> {
    match text {
        "c" | "r" => Some(ChangeOp::Insert),
        "u" => Some(ChangeOp::Update),
        "d" => Some(ChangeOp::Delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_value_that_does_not_convert_before_an_unknown_op_is_the_error_reported() {
        let config = crate::source::changelog::tests::test_config(
            "public/t",
            crate::config::tables::Layout::Debezium,
            &[("id", "long"), ("note", "string")],
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        // line 2's id is cast only when its batch is made; line 3's op is refused as it is read
        let lines = [
            json!({"after": {"id": 1, "note": "a"}, "op": "c"}),
            json!({"after": {"id": "abc", "note": "b"}, "op": "c"}),
            json!({"after": {"id": 3, "note": "c"}, "op": "x"}),
        ];
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, body).unwrap();
        let file = ChangeFile::new(
            path,
            "events.json",
            super::super::FileKind::Change,
            ChangeFormat::JsonLines,
            0,
        );
        let err = read(&config, &file, 0, &mut |_| Ok(())).unwrap_err();
        let Error::BadRow {
            line,
            column,
            reason,
            ..
        } = &err
        else {
            panic!("not a bad row: {err}");
        };
        assert_eq!(*line, 2, "{err}");
        assert_eq!(column.as_deref(), Some("id"), "{err}");
        assert!(reason.contains("cannot parse `abc`"), "{err}");
    }

    #[test]
    fn parses_debezium_op_codes() {
        assert_eq!(op_code("r"), Some(ChangeOp::Insert));
        assert_eq!(op_code("d"), Some(ChangeOp::Delete));
        assert_eq!(op_code("t"), None, "truncate is not a row change");
    }

    fn parse(v: Value) -> Event {
        parse_event(v).unwrap().unwrap()
    }

    #[test]
    fn reads_the_envelope_and_its_wrapped_form_alike() {
        let envelope = json!({
            "before": null,
            "after": {"id": 1, "name": "a"},
            "source": {"lsn": 3000, "ts_ms": 1_700_000_000_000_i64, "txId": 7},
            "op": "c",
            "ts_ms": 1_700_000_000_500_i64
        });
        let plain = parse(envelope.clone());
        assert_eq!(plain.op, ChangeOp::Insert);
        assert_eq!(plain.position, 3000);
        assert_eq!(plain.commit_ms, Some(1_700_000_000_000));
        assert_eq!(plain.row["name"], json!("a"));
        let wrapped = parse(json!({"schema": {"type": "struct"}, "payload": envelope}));
        assert_eq!(wrapped, plain);
    }

    #[test]
    fn a_delete_envelope_takes_the_before_image() {
        let e = parse(json!({"before": {"id": 9}, "after": null, "op": "d", "source": {"lsn": 1}}));
        assert_eq!(e.op, ChangeOp::Delete);
        assert_eq!(e.row["id"], json!(9));
        assert!(parse_event(json!({"after": null, "op": "d"})).is_err());
    }

    #[test]
    fn reads_the_flattened_form_and_drops_its_metadata_fields() {
        let e = parse(
            json!({"id": 4, "name": null, "__op": "d", "__deleted": "true", "__lsn": 77, "__source_ts_ms": 86_400_000}),
        );
        assert_eq!(e.op, ChangeOp::Delete);
        assert_eq!(e.position, 77);
        assert_eq!(e.commit_ms, Some(86_400_000));
        assert_eq!(e.row.keys().collect::<Vec<_>>(), ["id", "name"]);
        let u = parse(json!({"id": 4, "__op": "u", "__deleted": "false"}));
        assert_eq!(u.op, ChangeOp::Update);
    }

    #[test]
    fn tombstones_are_skipped_and_unknown_shapes_refused() {
        assert_eq!(parse_event(Value::Null).unwrap(), None);
        assert_eq!(
            parse_event(json!({"schema": null, "payload": null})).unwrap(),
            None
        );
        assert!(parse_event(json!({"id": 1})).is_err());
        assert!(parse_event(json!({"op": "t", "after": {}})).is_err());
    }

    #[test]
    fn mysql_events_order_by_binlog_file_then_position() {
        let at = |file: &str, pos: u64| {
            parse(json!({"after": {"id": 1}, "op": "u", "source": {"file": file, "pos": pos, "ts_ms": 5}})).position
        };
        assert!(at("mysql-bin.000002", 10) > at("mysql-bin.000001", 900_000));
        assert!(at("mysql-bin.000002", 11) > at("mysql-bin.000002", 10));
    }

    #[test]
    fn dates_and_timestamps_arrive_as_epoch_numbers() {
        let micros = TimestampPrecision::Micros;
        let text = |v: Value, ty| value_text(&v, ty, micros);
        assert_eq!(
            text(json!(18065), ColumnType::Date).unwrap().as_deref(),
            Some("2019-06-18")
        );
        assert!(
            text(json!(i64::MAX), ColumnType::Date).is_err(),
            "out of range, no overflow"
        );
        assert_eq!(
            text(json!(1_000_001), ColumnType::Timestamp)
                .unwrap()
                .as_deref(),
            Some("1970-01-01T00:00:01.000001")
        );
        assert_eq!(
            value_text(
                &json!(1_500),
                ColumnType::Timestamp,
                TimestampPrecision::Millis
            )
            .unwrap()
            .as_deref(),
            Some("1970-01-01T00:00:01.500000")
        );
        assert_eq!(
            text(json!(2.5), ColumnType::Double).unwrap().as_deref(),
            Some("2.5")
        );
        assert!(text(json!([1]), ColumnType::String).is_err());
    }
}
