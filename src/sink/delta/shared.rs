//! Data files shared by the current and history tables.
//!
//! A run's changed rows (I and U of a snapshot diff) are the same rows, column for column, in
//! both tables. They are encoded once, as data files of the current table, and the history
//! table adds each of those files as well, under its own `eff_start_date=YYYY-MM-DD/` folder:
//! a second name for the same bytes (a hard link; a copy of the bytes when the tables are on
//! different file systems or in other stores, see [`copy_file`]). The two names are
//! independent: deleting one (`VACUUM` of current after a later run) leaves the other whole.
//!
//! The history table is partitioned by `eff_start_date`, so its other files do not hold that
//! column; a shared file does, as a current file must. The Delta protocol allows a data file to
//! hold its partition columns (the `materializePartitionColumns` writer feature makes it a
//! writer's duty; readers take the value from the `add` action's `partitionValues` either way),
//! and the `add` written to history carries the partition value and no statistics for it.
//!
//! Only an unpartitioned current table can share: a partitioned one leaves its own partition
//! columns out of its files, and history needs them. [`TableWriters`](super::TableWriters)
//! then writes such rows to each table on its own.

use std::collections::HashMap;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Date32Type};
use deltalake::kernel::Add;
use deltalake::logstore::object_store::{ObjectStoreExt, WriteMultipart};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::{DeltaTable, DeltaTableError, ObjectStoreError, Path};
use futures::StreamExt;

use super::write::{discard_files, stream_into, Batches, TARGET_FILE_BYTES};
use crate::core::schema::EFF_START_DATE;
use crate::core::time::date_text;
use crate::error::{Error, Result};

/// The files written by [`write_shared`]: their `add` actions in the current table and in the
/// history table, in the same order.
#[derive(Debug, Default)]
pub struct SharedFiles {
    pub current: Vec<Add>,
    pub history: Vec<Add>,
}

/// Streams the rows it takes from `rx` (beside the other shared writer tasks; each batch of one
/// `eff_start_date`, the same for all) into data files of `current`, then adds each file to
/// `history` as well ([`share`]).
///
/// # Errors
/// [`Error::Internal`] for batches of several `eff_start_date`s or a null one; Delta, Parquet
/// and object-store errors. On error, `rx` is closed and the files and links made so far are
/// deleted again.
pub async fn write_shared(
    current: DeltaTable,
    history: DeltaTable,
    rx: Batches,
    properties: WriterProperties,
) -> Result<SharedFiles> {
    let mut day = None;
    let mut files = Vec::new();
    let mut check = |batch: &RecordBatch| one_day(batch, &mut day);
    let written = stream_into(
        &current,
        &rx,
        properties,
        &mut files,
        &mut check,
        TARGET_FILE_BYTES,
    )
    .await;
    let shared = match (written, day) {
        (Ok(()), Some(day)) => share(&current, &history, &files, day).await,
        (Ok(()), None) => Ok(Vec::new()),
        (Err(e), _) => Err(e),
    };
    match shared {
        Ok(links) => Ok(SharedFiles {
            current: files,
            history: links,
        }),
        Err(e) => {
            // Closed: a sender waiting for room fails now instead of waiting for the deletes.
            rx.close().await;
            discard_files(&current, &files).await;
            Err(e)
        }
    }
}

/// Checks that every row of `batch` has the `eff_start_date` of the rows before (`day`, set by
/// the first batch): a shared file belongs to one history partition.
fn one_day(batch: &RecordBatch, day: &mut Option<i32>) -> Result<()> {
    let column = batch
        .column_by_name(EFF_START_DATE)
        .filter(|c| c.data_type() == &DataType::Date32)
        .ok_or_else(|| Error::Internal(format!("shared rows without a date {EFF_START_DATE}")))?;
    let days = column.as_primitive::<Date32Type>();
    if days.is_empty() {
        return Ok(());
    }
    if days.null_count() > 0 {
        return Err(Error::Internal(format!(
            "shared rows with a null {EFF_START_DATE}"
        )));
    }
    let first = *day.get_or_insert(days.value(0));
    if days.values().iter().any(|&d| d != first) {
        return Err(Error::Internal(format!(
            "shared rows of several {EFF_START_DATE}s"
        )));
    }
    Ok(())
}

/// Adds each of `files` (data files of `current`, every row dated `day`) to `history`: a second
/// name under `eff_start_date=<day>/`, and its `add` action.
///
/// # Errors
/// Object-store errors; the names made so far are deleted again.
async fn share(
    current: &DeltaTable,
    history: &DeltaTable,
    files: &[Add],
    day: i32,
) -> Result<Vec<Add>> {
    let value = date_text(i64::from(day))
        .ok_or_else(|| Error::Internal(format!("{EFF_START_DATE} {day} out of range")))?;
    let mut links = Vec::with_capacity(files.len());
    for add in files {
        let name = add.path.rsplit('/').next().unwrap_or(&add.path);
        let link = history_add(add, format!("{EFF_START_DATE}={value}/{name}"), &value)?;
        if let Err(e) = copy_file(current, &add.path, history, &link.path).await {
            discard_files(history, &links).await;
            return Err(e);
        }
        links.push(link);
    }
    Ok(links)
}

/// The history table's `add` of a current data file `add`, named `path`: partition value
/// `eff_start_date = value`, and the file's statistics without that column (a partition
/// column has none in Delta).
fn history_add(add: &Add, path: String, value: &str) -> Result<Add> {
    let stats = match &add.stats {
        Some(stats) => {
            let mut stats: serde_json::Value = serde_json::from_str(stats)?;
            for key in ["minValues", "maxValues", "nullCount"] {
                if let Some(values) = stats.get_mut(key).and_then(|v| v.as_object_mut()) {
                    values.remove(EFF_START_DATE);
                }
            }
            Some(serde_json::to_string(&stats)?)
        }
        None => None,
    };
    Ok(Add {
        path,
        partition_values: HashMap::from([(EFF_START_DATE.to_string(), Some(value.to_string()))]),
        stats,
        ..add.clone()
    })
}

/// Most 5 MiB parts of a streamed copy ([`copy_file`]) uploading at once.
const COPY_PARTS_IN_FLIGHT: usize = 4;

/// Gives the data file `from` of table `source` the second name `to` in table `target` (paths
/// relative to each table's root). Tables in one namespace of one store
/// ([`crate::sink::storage::same_store`]) use the store's own copy: a hard link on the local
/// file system (no bytes written), a server-side copy in a bucket (S3 `CopyObject`, no bytes
/// through this process). Otherwise, or when that fails (the tables are on different file
/// systems), the bytes are streamed from one store into the other, at most
/// [`COPY_PARTS_IN_FLIGHT`] parts buffered.
///
/// # Errors
/// Object-store errors.
pub async fn copy_file(
    source: &DeltaTable,
    from: &str,
    target: &DeltaTable,
    to: &str,
) -> Result<()> {
    let (source_url, target_url) = (source.table_url(), target.table_url());
    if crate::sink::storage::same_store(source_url, target_url) {
        let store = source.log_store().root_object_store(None);
        let (root_from, root_to) = (in_store(source_url, from)?, in_store(target_url, to)?);
        match store.copy(&root_from, &root_to).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(%root_from, %root_to, "store copy failed, copying bytes: {e}")
            }
        }
    }
    let mut bytes = source
        .object_store()
        .get(&Path::from(from))
        .await
        .map_err(store_error)?
        .into_stream();
    let upload = target
        .object_store()
        .put_multipart(&Path::from(to))
        .await
        .map_err(store_error)?;
    let mut writer = WriteMultipart::new(upload);
    let copied = async {
        while let Some(chunk) = bytes.next().await {
            writer.wait_for_capacity(COPY_PARTS_IN_FLIGHT).await?;
            writer.put(chunk?);
        }
        Ok::<(), ObjectStoreError>(())
    }
    .await;
    match copied {
        Ok(()) => writer.finish().await.map(|_| ()).map_err(store_error),
        Err(e) => {
            writer.abort().await.ok();
            Err(store_error(e))
        }
    }
}

fn store_error(e: ObjectStoreError) -> Error {
    DeltaTableError::from(e).into()
}

/// The path in a table's root store of `path`, relative to the table at `url`.
fn in_store(url: &url::Url, path: &str) -> Result<Path> {
    let root = Path::from_url_path(url.path())
        .map_err(|e| Error::Internal(format!("table path {url}: {e}")))?;
    Ok(Path::from_iter(
        root.parts().chain(Path::from(path).parts()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Date32Array, Int32Array};
    use deltalake::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn dated(days: Vec<Option<i32>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new(EFF_START_DATE, DataType::Date32, true),
        ]));
        let ids = Int32Array::from_iter_values(0..days.len() as i32);
        RecordBatch::try_new(
            schema,
            vec![Arc::new(ids), Arc::new(Date32Array::from(days))],
        )
        .unwrap()
    }

    #[test]
    fn one_day_takes_the_first_batch_date_and_refuses_others() {
        let mut day = None;
        one_day(&dated(vec![]), &mut day).unwrap();
        assert_eq!(day, None);
        one_day(&dated(vec![Some(7), Some(7)]), &mut day).unwrap();
        assert_eq!(day, Some(7));
        one_day(&dated(vec![Some(7)]), &mut day).unwrap();
        assert!(one_day(&dated(vec![Some(7), Some(8)]), &mut day).is_err());
        assert!(one_day(&dated(vec![Some(8)]), &mut day).is_err());
        assert!(one_day(&dated(vec![Some(7), None]), &mut day).is_err());
        assert!(one_day(&dated(vec![None]), &mut None).is_err());
    }

    #[test]
    fn history_add_moves_the_date_from_the_stats_to_the_partition_value() {
        let add = Add {
            path: "part-00000-x-c000.zstd.parquet".into(),
            size: 123,
            stats: Some(
                r#"{"numRecords":2,"minValues":{"id":1,"eff_start_date":"2019-06-19"},"maxValues":{"id":2,"eff_start_date":"2019-06-19"},"nullCount":{"id":0,"eff_start_date":0}}"#
                    .into(),
            ),
            ..Add::default()
        };
        let link = history_add(
            &add,
            "eff_start_date=2019-06-19/p.parquet".into(),
            "2019-06-19",
        )
        .unwrap();
        assert_eq!(link.path, "eff_start_date=2019-06-19/p.parquet");
        assert_eq!(link.size, 123);
        assert_eq!(
            link.partition_values,
            HashMap::from([(EFF_START_DATE.to_string(), Some("2019-06-19".to_string()))])
        );
        let stats: serde_json::Value =
            serde_json::from_str(link.stats.as_deref().unwrap()).unwrap();
        assert_eq!(
            stats,
            serde_json::json!({"numRecords":2,"minValues":{"id":1},"maxValues":{"id":2},"nullCount":{"id":0}})
        );
    }

    /// Statistics keep every digit: `0.9988592456160441` parsed without serde_json's
    /// `float_roundtrip` came back as `0.998859245616044`, a max below the real one, and readers
    /// skipping files by it lost the row.
    #[test]
    fn history_add_keeps_float_statistics_exact() {
        let text = r#"{"numRecords":1,"minValues":{"v":0.9988592456160441,"w":1.0000000000000002e-300},"maxValues":{"v":0.9988592456160441,"w":5.000000000000001},"nullCount":{"v":0,"w":0}}"#;
        let add = Add {
            path: "p.parquet".into(),
            stats: Some(text.into()),
            ..Add::default()
        };
        let link = history_add(
            &add,
            "eff_start_date=2019-06-19/p.parquet".into(),
            "2019-06-19",
        )
        .unwrap();
        let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
        let kept = parse(link.stats.as_deref().unwrap());
        assert_eq!(kept, parse(text));
        assert_eq!(kept["maxValues"]["v"].as_f64(), Some(0.9988592456160441));
        assert!(link.stats.unwrap().contains("0.9988592456160441"));
    }

    #[tokio::test]
    async fn copy_file_streams_between_stores_in_parts() {
        use deltalake::logstore::object_store::PutPayload;
        // Two `memory` tables are two stores: the bytes must land in history's.
        let table = |name: &str| {
            let url = url::Url::parse(&format!("memory:///lake/{name}/")).unwrap();
            DeltaTable::try_from_url(url)
        };
        let (current, history) = (
            table("current").await.unwrap(),
            table("history").await.unwrap(),
        );
        // 12 MiB and a bit: three 5 MiB parts.
        let bytes: Vec<u8> = (0..(12 << 20) + 7).map(|i: u32| (i % 251) as u8).collect();
        current
            .object_store()
            .put(
                &Path::from("part-1.parquet"),
                PutPayload::from(bytes.clone()),
            )
            .await
            .unwrap();
        let to = "eff_start_date=2024-01-01/part-1.parquet";
        copy_file(&current, "part-1.parquet", &history, to)
            .await
            .unwrap();
        let copied = history
            .object_store()
            .get(&Path::from(to))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(copied.as_ref(), bytes.as_slice());
        let missing = copy_file(&current, "part-2.parquet", &history, "x/part-2.parquet").await;
        assert!(missing.is_err());
    }

    #[test]
    fn in_store_joins_the_table_root_and_the_relative_path() {
        let url = url::Url::parse("file:///tmp/lake/t%20history/").unwrap();
        let path = in_store(&url, "eff_start_date=2019-06-19/p.parquet").unwrap();
        assert_eq!(
            path.as_ref(),
            "tmp/lake/t history/eff_start_date=2019-06-19/p.parquet"
        );
    }
}
