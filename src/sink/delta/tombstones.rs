//! The tombstones table of a change-log table with hard deletes: the source position of each key
//! a run deleted, kept for `tombstone_retention_days` after the delete so that a late change file
//! (a slow upload, a re-sent file) holding an older change of the key cannot bring it back
//! (`changelog::merge`). A soft delete of a key current holds needs none: the deleted row stays
//! in current with the delete's position. A delete of a key current does not hold leaves one
//! under either delete mode (its insert may be the late change).
//!
//! Committed as a follower of the run's history commit (the sink contract, `sink/mod.rs`), like
//! the applied-files table. Runs append their tombstones (a key may then have several rows; the
//! highest position counts); a run whose file would be the [`COMPACT_AT_FILES`]th rewrites the
//! table as one file instead, without the tombstones past their retention and with one row per
//! key (the highest position).
//!
//! | column            | type   | meaning                                                    |
//! |-------------------|--------|------------------------------------------------------------|
//! | `keyhash`         | binary | the deleted key's digest (as in current and history)      |
//! | `source_position` | long   | the delete's source position (`ChangeBatch::positions`)    |
//! | `eff_start_date`  | date   | the delete's date (commit date, else the run's date)       |

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, BinaryArray, Date32Array, Int64Array, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Date32Type, Field, Int64Type, Schema, SchemaRef};
use deltalake::DeltaTable;

use crate::core::key::{key, DigestMap, Key};
use crate::core::schema::{EFF_START_DATE, KEYHASH, SOURCE_POSITION};
use crate::error::{Error, Result};
use crate::sink::TableRole;

/// Data files of the tombstones table at which a run rewrites it as one.
pub const COMPACT_AT_FILES: usize = 16;

/// A hard-deleted key's tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// The delete's source position.
    pub position: i64,
    /// The delete's date, days since 1970-01-01.
    pub days: i32,
}

/// Arrow schema of the tombstones table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(KEYHASH, DataType::Binary, false),
        Field::new(SOURCE_POSITION, DataType::Int64, false),
        Field::new(EFF_START_DATE, DataType::Date32, false),
    ]))
}

/// The rows of `tombstones`.
///
/// # Errors
/// Arrow errors (none expected: the columns match the schema).
pub fn batch(tombstones: &[(Key, Tombstone)]) -> Result<RecordBatch> {
    let digests: Vec<[u8; 16]> = tombstones.iter().map(|(k, _)| k.to_le_bytes()).collect();
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(BinaryArray::from_iter_values(digests.iter())),
            Arc::new(Int64Array::from_iter_values(
                tombstones.iter().map(|(_, t)| t.position),
            )),
            Arc::new(Date32Array::from_iter_values(
                tombstones.iter().map(|(_, t)| t.days),
            )),
        ],
    )?)
}

/// Adds a tombstone to `into`, keeping the higher position of a key (and its date).
pub fn keep_latest(into: &mut DigestMap<Tombstone>, k: Key, t: Tombstone) {
    into.entry(k)
        .and_modify(|old| {
            if t.position > old.position {
                *old = t;
            }
        })
        .or_insert(t);
}

/// Reads every tombstone of `table`: the highest position of each key.
///
/// # Errors
/// Delta and DataFusion errors; [`Error::Lake`] for a table without the columns.
pub async fn read(table: &DeltaTable) -> Result<DigestMap<Tombstone>> {
    let mut out = DigestMap::default();
    for batch in super::scan(table).await? {
        let column = |name: &str, ty: &DataType| -> Result<_> {
            let c = batch.column_by_name(name).ok_or_else(|| Error::Lake {
                table: TableRole::Tombstones.as_str().into(),
                reason: format!("has no column `{name}`"),
            })?;
            Ok(cast(c, ty)?)
        };
        let keys = column(KEYHASH, &DataType::Binary)?;
        let keys = keys.as_binary::<i32>();
        let positions = column(SOURCE_POSITION, &DataType::Int64)?;
        let positions = positions.as_primitive::<Int64Type>();
        let days = column(EFF_START_DATE, &DataType::Date32)?;
        let days = days.as_primitive::<Date32Type>();
        for i in 0..batch.num_rows() {
            if keys.is_null(i) || positions.is_null(i) || days.is_null(i) {
                continue;
            }
            let t = Tombstone {
                position: positions.value(i),
                days: days.value(i),
            };
            keep_latest(&mut out, key(keys.value(i)), t);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_tombstone_of_a_key_stays_and_rows_round_trip() {
        let mut map = DigestMap::default();
        let t = |position, days| Tombstone { position, days };
        keep_latest(&mut map, 7, t(10, 1));
        keep_latest(&mut map, 7, t(5, 2));
        keep_latest(&mut map, 9, t(1, 3));
        keep_latest(&mut map, 9, t(4, 4));
        assert_eq!(map[&7], t(10, 1));
        assert_eq!(map[&9], t(4, 4));
        let rows = batch(&[(7u128 << 100 | 3, t(10, 1))]).unwrap();
        let keys = rows.column(0).as_binary::<i32>();
        assert_eq!(key(keys.value(0)), 7u128 << 100 | 3);
        assert_eq!(rows.schema(), schema());
    }
}
