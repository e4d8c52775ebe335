//! Deletion vectors of the current table (`deletion_vectors: true`; Delta protocol "Deletion
//! Vectors": reader version 3 and writer version 7 with the `deletionVectors` feature, and the
//! `delta.enableDeletionVectors` property).
//!
//! A merge into a table that uses them marks the rows it replaces or deletes in a deletion
//! vector of their data file instead of copying the file's other rows into a new file: the
//! file is removed and added again, in the run's commit, with a vector that holds its earlier
//! one and the run's rows (row positions in the file, from 0). Readers that implement the
//! feature skip the marked rows (delta-rs, tested here; Spark's Delta Lake, Databricks and
//! DuckDB's `delta` extension by their documentation).
//!
//! The vectors of one commit go to one file at the table's root, `deletion_vector_<uuid>.bin`
//! (storage type `u`, the UUID written in Z85 in the descriptor), in the protocol's
//! "Deletion Vector Format": a version byte, then per vector its size, the RoaringBitmapArray
//! magic and 64-bit roaring bitmap, and a CRC-32. delta-rs's kernel writes that format (and
//! reads inline and absolute-path vectors); this module reads a file's vector by its byte
//! range (checking size, magic and CRC), chooses what to mark and builds the actions.
//!
//! A table that also records the change data feed is merged by rewriting files (the feed's
//! comparison reads whole files): [`in_use`] is false there.

use delta_kernel::actions::deletion_vector_writer::{
    KernelDeletionVector, StreamingDeletionVectorWriter,
};
use deltalake::kernel::{Add, DeletionVectorDescriptor, Remove, StorageType};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{DeltaTable, Path};
use roaring::RoaringTreemap;

use crate::error::{Error, Result};

/// The table property that turns deletion vectors on.
pub const PROPERTY: &str = "delta.enableDeletionVectors";

/// The protocol's name of the table feature.
const FEATURE: &str = "deletionVectors";

/// Whether `table` may have deletion vectors written: its property is `true` and its protocol
/// lists the `deletionVectors` reader and writer features (the protocol's rule).
///
/// # Errors
/// Delta errors reading the snapshot.
pub fn enabled(table: &DeltaTable) -> Result<bool> {
    let state = table.snapshot()?;
    let reads = state
        .snapshot()
        .protocol()
        .reader_features()
        .is_some_and(|f| f.iter().any(|f| f.to_string() == FEATURE));
    Ok(reads && listed(table)? && super::table::property_is_true(table, PROPERTY)?)
}

/// Whether `table`'s protocol lists the `deletionVectors` writer feature: whether any of its
/// versions may have vectors (the feature stays once added).
///
/// # Errors
/// Delta errors reading the snapshot.
pub fn listed(table: &DeltaTable) -> Result<bool> {
    Ok(table
        .snapshot()?
        .snapshot()
        .protocol()
        .writer_features()
        .is_some_and(|f| f.iter().any(|f| f.to_string() == FEATURE)))
}

/// Whether a merge into `table` marks rows in deletion vectors ([`enabled`], and no change
/// data feed: see the module docs).
///
/// # Errors
/// Delta errors reading the snapshot.
pub fn in_use(table: &DeltaTable) -> Result<bool> {
    Ok(enabled(table)? && !super::change_feed::enabled(table)?)
}

/// Rows of one data file a run marks deleted.
#[derive(Debug, Clone)]
pub struct Marked {
    /// The file as the table holds it now (its earlier vector, if any).
    pub add: Add,
    /// Rows in the data file, marked or not (its statistics' `numRecords`).
    pub file_rows: u64,
    /// Every deleted row of the file: its earlier vector's and the run's.
    pub rows: RoaringTreemap,
}

/// The RoaringBitmapArray magic number that starts a serialized vector (little-endian).
const MAGIC: u32 = 1681511377;

/// The rows `dv` marks deleted in its data file. A vector in a file named by UUID (`u`, as
/// Tributary writes them) is read by its byte range alone (its size, magic, bitmap and CRC-32,
/// and the file's version byte), so that the vectors of many data files that share one vector
/// file are not each read with the whole file; other vectors (inline, absolute paths) are read
/// by delta-rs's kernel.
///
/// # Errors
/// [`Error::Lake`] for a vector that cannot be read, has another layout or fails its checksum.
pub async fn read(table: &DeltaTable, dv: &DeletionVectorDescriptor) -> Result<RoaringTreemap> {
    let unreadable = |reason: String| Error::Lake {
        table: crate::sink::TableRole::Current.as_str().into(),
        reason: format!("deletion vector {}: {reason}", dv.path_or_inline_dv),
    };
    if let (Some(file), Some(offset)) = (file_of(dv), dv.offset) {
        let start = u64::try_from(offset).map_err(|_| unreadable("negative offset".into()))?;
        let size = u64::try_from(dv.size_in_bytes).map_err(|_| unreadable("bad size".into()))?;
        let ranges = [0..1, start..start + 4 + size + 4];
        let read = table
            .object_store()
            .get_ranges(&Path::from(file), &ranges)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        return parse(&read[0], &read[1], dv.size_in_bytes).map_err(unreadable);
    }
    let kernel =
        delta_kernel::actions::deletion_vector::DeletionVectorDescriptor::try_from(dv.clone())
            .map_err(|e| unreadable(e.to_string()))?;
    let engine = table.log_store().engine(None);
    let root = table.table_url().clone();
    // the kernel reads through the engine's blocking interface
    tokio::task::spawn_blocking(move || kernel.read(engine.storage_handler(), &root))
        .await
        .map_err(|e| Error::Internal(format!("reading a deletion vector: {e}")))?
        .map_err(|e| unreadable(e.to_string()))
}

/// A vector's bytes in the protocol's "Deletion Vector Format": `version` is the file's first
/// byte (1); `bytes` its size (big-endian, of the magic and bitmap), the magic (little-endian),
/// the 64-bit roaring bitmap (portable format) and the CRC-32 of magic and bitmap (big-endian).
fn parse(version: &[u8], bytes: &[u8], size: i32) -> std::result::Result<RoaringTreemap, String> {
    if version != [1] {
        return Err(format!("format version {version:?}, not 1"));
    }
    let size = usize::try_from(size).map_err(|_| "negative size".to_string())?;
    let word = |at: usize| -> std::result::Result<[u8; 4], String> {
        bytes
            .get(at..at + 4)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(|| format!("{} bytes, cut short", bytes.len()))
    };
    let stored = u32::from_be_bytes(word(0)?) as usize;
    if stored != size || size < 4 {
        return Err(format!("size {stored} in the file, {size} in the log"));
    }
    if u32::from_le_bytes(word(4)?) != MAGIC {
        return Err("not a RoaringBitmapArray (magic)".into());
    }
    let crc = u32::from_be_bytes(word(4 + size)?);
    if crc32fast::hash(&bytes[4..4 + size]) != crc {
        return Err("checksum mismatch".into());
    }
    RoaringTreemap::deserialize_from(&bytes[8..4 + size]).map_err(|e| e.to_string())
}

/// Writes the vectors of `marked` to one new file of `table` and returns the actions that put
/// them in place: each file's `remove` (with its earlier vector) and `add` (the same data
/// file, size, partition values and tags, with its new vector, and its statistics marked wide:
/// `tightBounds: false`, with `numRecords` the file's rows, as the protocol asks of a file with
/// a vector).
///
/// # Errors
/// Object-store errors writing the file; a vector over the format's 2 GiB.
pub async fn write(table: &DeltaTable, marked: Vec<Marked>) -> Result<(Vec<Remove>, Vec<Add>)> {
    if marked.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let uuid = uuid::Uuid::new_v4();
    let mut bytes = Vec::new();
    let mut written = Vec::with_capacity(marked.len());
    {
        let mut writer = StreamingDeletionVectorWriter::new(&mut bytes);
        for m in &marked {
            let mut dv = KernelDeletionVector::new();
            dv.add_deleted_row_indexes(m.rows.iter());
            let result = writer
                .write_deletion_vector(dv)
                .map_err(|e| Error::Internal(format!("writing a deletion vector: {e}")))?;
            written.push(result);
        }
        writer
            .finalize()
            .map_err(|e| Error::Internal(format!("writing a deletion vector: {e}")))?;
    }
    let path = Path::from(file_name(&uuid));
    table
        .object_store()
        .put(&path, bytes.into())
        .await
        .map_err(deltalake::DeltaTableError::from)?;
    let encoded = z85::encode(uuid.as_bytes());
    let mut removes = Vec::with_capacity(marked.len());
    let mut adds = Vec::with_capacity(marked.len());
    for (m, result) in marked.into_iter().zip(written) {
        removes.push(remove_of(&m.add));
        let mut add = m.add;
        add.deletion_vector = Some(DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: encoded.clone(),
            offset: Some(result.offset),
            size_in_bytes: result.size_in_bytes,
            cardinality: result.cardinality,
        });
        add.stats = Some(wide_bounds(add.stats.as_deref(), m.file_rows));
        add.data_change = true;
        adds.push(add);
    }
    Ok((removes, adds))
}

/// The file name of the deletion vectors written under `uuid` (the protocol's derived path).
fn file_name(uuid: &uuid::Uuid) -> String {
    format!("deletion_vector_{uuid}.bin")
}

/// The `remove` action of the live file `add` (with its vector, which names the logical file).
fn remove_of(add: &Add) -> Remove {
    Remove {
        path: add.path.clone(),
        data_change: true,
        deletion_timestamp: Some(chrono::Utc::now().timestamp_millis()),
        extended_file_metadata: Some(true),
        size: Some(add.size),
        partition_values: Some(add.partition_values.clone()),
        deletion_vector: add.deletion_vector.clone(),
        tags: None,
        base_row_id: None,
        default_row_commit_version: None,
    }
}

/// Statistics JSON with `tightBounds: false`, and `numRecords: rows` where it lacks one (none,
/// or text that does not parse, become just those two).
fn wide_bounds(stats: Option<&str>, rows: u64) -> String {
    let parsed = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
    let mut object = match parsed {
        Some(serde_json::Value::Object(object)) => object,
        _ => serde_json::Map::new(),
    };
    object.insert("tightBounds".into(), serde_json::Value::Bool(false));
    object
        .entry("numRecords")
        .or_insert(serde_json::Value::from(rows));
    serde_json::Value::Object(object).to_string()
}

/// The file, relative to the table's root, that holds the vector `add` carries, for a vector
/// stored in a file named by UUID (`u`); None for no vector, an inline one or an absolute path.
pub fn vector_file(add: &Add) -> Option<String> {
    file_of(add.deletion_vector.as_ref()?)
}

/// The file, relative to the table's root, that holds the vector `dv` (see [`vector_file`]).
pub fn file_of(dv: &DeletionVectorDescriptor) -> Option<String> {
    let text = &dv.path_or_inline_dv;
    let at = text.len().checked_sub(20)?;
    if dv.storage_type != StorageType::UuidRelativePath || !text.is_char_boundary(at) {
        return None;
    }
    let (prefix, encoded) = text.split_at(at);
    let bytes: [u8; 16] = z85::decode(encoded).ok()?.try_into().ok()?;
    let name = file_name(&uuid::Uuid::from_bytes(bytes));
    Some(match prefix {
        "" => name,
        prefix => format!("{prefix}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_of_another_shape_names_no_file() {
        let dv = |text: &str| DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: text.into(),
            offset: Some(1),
            size_in_bytes: 10,
            cardinality: 1,
        };
        assert_eq!(file_of(&dv("short")), None);
        // the split would fall inside a character: no panic
        assert_eq!(file_of(&dv("é0123456789012345678")), None);
        assert_eq!(file_of(&dv("not z85 text at all!")), None);
    }

    #[tokio::test]
    async fn vectors_are_written_to_one_file_as_the_protocol_lays_them_out_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let table = deltalake::operations::create::CreateBuilder::new()
            .with_location(dir.path().to_str().unwrap())
            .with_columns([deltalake::kernel::StructField::new(
                "id",
                deltalake::kernel::DataType::LONG,
                false,
            )])
            .with_configuration_property(
                deltalake::TableProperty::EnableDeletionVectors,
                Some("true"),
            )
            .await
            .unwrap();
        assert!(enabled(&table).unwrap() && in_use(&table).unwrap());
        let a: RoaringTreemap = [0u64, 5, 6, 7, 1 << 33].into_iter().collect();
        let b: RoaringTreemap = (100..200u64).collect();
        let file = |path: &str| Add {
            path: path.into(),
            size: 10,
            stats: Some(r#"{"numRecords":9}"#.into()),
            ..Default::default()
        };
        let marked = vec![
            Marked {
                add: file("a.parquet"),
                file_rows: 9,
                rows: a.clone(),
            },
            Marked {
                add: file("b.parquet"),
                file_rows: 300,
                rows: b.clone(),
            },
        ];
        let (removes, adds) = write(&table, marked).await.unwrap();
        let paths: Vec<&str> = removes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["a.parquet", "b.parquet"]);
        assert!(removes.iter().all(|r| r.deletion_vector.is_none()));
        let name = vector_file(&adds[0]).unwrap();
        assert_eq!(
            vector_file(&adds[1]).as_ref(),
            Some(&name),
            "one file per commit"
        );
        let bytes = std::fs::read(dir.path().join(&name)).unwrap();
        assert_eq!(bytes[0], 1, "format version");
        for (add, rows) in adds.iter().zip([&a, &b]) {
            let dv = add.deletion_vector.as_ref().unwrap();
            assert_eq!(dv.cardinality, rows.len() as i64);
            assert_eq!(read(&table, dv).await.unwrap(), *rows);
            // by hand: size (big-endian, magic and bitmap), magic (little-endian), 64-bit
            // roaring bitmap in the portable format, then a CRC-32
            let at = dv.offset.unwrap() as usize;
            let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert_eq!(size, dv.size_in_bytes as usize);
            let magic = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            assert_eq!(magic, 1681511377);
            let parsed = RoaringTreemap::deserialize_from(&bytes[at + 8..at + 4 + size]).unwrap();
            assert_eq!(parsed, *rows);
            let stats: serde_json::Value =
                serde_json::from_str(add.stats.as_deref().unwrap()).unwrap();
            assert_eq!(stats["tightBounds"], serde_json::Value::Bool(false));
            assert!(add.data_change);
        }
        let last = adds[1].deletion_vector.as_ref().unwrap();
        let end = last.offset.unwrap() as usize + 4 + last.size_in_bytes as usize + 4;
        assert_eq!(
            bytes.len(),
            end,
            "the last vector's size, data and CRC end the file"
        );
        // marked again: the remove names the file with its earlier vector, the add the union
        let mut more = a.clone();
        more.insert(9);
        let again = vec![Marked {
            add: adds[0].clone(),
            file_rows: 9,
            rows: more.clone(),
        }];
        let (removes, readded) = write(&table, again).await.unwrap();
        assert_eq!(removes[0].deletion_vector, adds[0].deletion_vector);
        let dv = readded[0].deletion_vector.as_ref().unwrap();
        assert_ne!(Some(dv), adds[0].deletion_vector.as_ref());
        assert_eq!(read(&table, dv).await.unwrap(), more);
        std::fs::remove_file(dir.path().join(vector_file(&readded[0]).unwrap())).unwrap();
        // discarding the adds deletes the vectors' file, never the data files they name
        std::fs::write(dir.path().join("a.parquet"), b"data").unwrap();
        super::super::write::discard_files(&table, &adds).await;
        assert!(!dir.path().join(&name).exists());
        assert!(dir.path().join("a.parquet").exists());
    }

    #[test]
    fn stats_are_marked_wide_and_other_fields_kept() {
        let wide = wide_bounds(Some(r#"{"numRecords":3,"minValues":{"id":1}}"#), 9);
        let value: serde_json::Value = serde_json::from_str(&wide).unwrap();
        assert_eq!(value["tightBounds"], serde_json::Value::Bool(false));
        assert_eq!(value["numRecords"], 3, "the file's own count is kept");
        assert_eq!(value["minValues"]["id"], 1);
        for stats in [None, Some("not json")] {
            let value: serde_json::Value = serde_json::from_str(&wide_bounds(stats, 9)).unwrap();
            assert_eq!(
                value,
                serde_json::json!({"numRecords": 9, "tightBounds": false})
            );
        }
    }

    #[test]
    fn a_vector_of_another_layout_or_checksum_is_refused() {
        let rows: RoaringTreemap = [1u64, 3].into_iter().collect();
        let mut bitmap = Vec::new();
        rows.serialize_into(&mut bitmap).unwrap();
        let size = bitmap.len() + 4;
        let mut bytes = (size as u32).to_be_bytes().to_vec();
        bytes.extend(MAGIC.to_le_bytes());
        bytes.extend(&bitmap);
        bytes.extend(crc32fast::hash(&bytes[4..]).to_be_bytes());
        assert_eq!(parse(&[1], &bytes, size as i32), Ok(rows));
        assert!(parse(&[2], &bytes, size as i32)
            .unwrap_err()
            .contains("version"));
        assert!(parse(&[1], &bytes, size as i32 + 1)
            .unwrap_err()
            .contains("size"));
        assert!(parse(&[1], &bytes[..bytes.len() - 1], size as i32).is_err());
        let mut flipped = bytes.clone();
        flipped[9] ^= 1;
        assert!(parse(&[1], &flipped, size as i32)
            .unwrap_err()
            .contains("checksum"));
        let mut magic = bytes;
        magic[4] ^= 1;
        assert!(parse(&[1], &magic, size as i32)
            .unwrap_err()
            .contains("magic"));
    }

    #[test]
    fn the_vector_file_is_named_from_the_descriptors_uuid() {
        let uuid = uuid::Uuid::new_v4();
        let mut add = Add {
            path: "part-1.parquet".into(),
            ..Default::default()
        };
        assert_eq!(vector_file(&add), None);
        let dv = DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: z85::encode(uuid.as_bytes()),
            offset: Some(1),
            size_in_bytes: 10,
            cardinality: 1,
        };
        add.deletion_vector = Some(dv.clone());
        assert_eq!(
            vector_file(&add),
            Some(format!("deletion_vector_{uuid}.bin"))
        );
        let mut prefixed = dv.clone();
        prefixed.path_or_inline_dv = format!("ab{}", dv.path_or_inline_dv);
        add.deletion_vector = Some(prefixed);
        assert_eq!(
            vector_file(&add),
            Some(format!("ab/deletion_vector_{uuid}.bin"))
        );
        let mut inline = dv;
        inline.storage_type = StorageType::Inline;
        add.deletion_vector = Some(inline);
        assert_eq!(vector_file(&add), None);
    }
}
