//! A change-log run's changes within its memory budget (`sync --memory-limit`).
//!
//! A run's changes are held in memory while they take at most half the budget
//! ([`RunChanges::Held`]: every small run). Past half the budget a run's changes are handled
//! a group at a time ([`Split`]):
//!
//! - A full load of a keyed table (DMS `LOAD` files alone, into tables without tombstones) is
//!   streamed ([`Split::Stream`], [`RunChanges::Streamed`]): past half the budget, or
//!   [`STREAM_AFTER_BYTES`] if less, its changes go to the table writers as they are read, each row written as an insert, while the first
//!   8 bytes of each key's digest are logged (`changelog::distinct`). A load that turns out
//!   not to be one of distinct inserts (a key twice, found at its end; a delete or a change
//!   that keeps stored values, found as read) is abandoned ([`Error::Restart`]) and `sync`
//!   reads it again taking the last change per key: held within half the budget, else split
//!   by keyhash as below.
//! - A full load that could not be streamed is split by keyhash into [`FIRST_PARTITIONS`]
//!   partitions held in a [`SpillStore`] of a quarter of the budget, whose largest partitions
//!   go to Arrow IPC files in a folder under the spill folder ([`RunChanges::Spilled`]). The
//!   run then takes one partition at a time: every change of a key is in its partition, so the
//!   last change per key and the rows written are those of the whole run. A partition that
//!   still holds more than a quarter of the budget is split again by the next four digest
//!   bytes (at most three times), one spilled segment at a time. This is the snapshot diff's
//!   grace-hash partitioning (`docs/memory.md`) applied to one side.
//! - An append (a later part of an initial copy) and a table without a key take no last
//!   change per key: they are spilled in read order, in parts of a quarter of the budget, and
//!   written part by part, so their files keep the read order.
//!
//! - A merge (changes into an existing table) is split by keyhash as a full load is, and keeps
//!   the set of its changed keys ([`RunChanges::take_merge_keys`]: 16-byte digests in a hash
//!   set, and a filter of them while the impacted files are read (2 to 4 bytes a key),
//!   outside the budget). Its impacted files are each read once with that set, before the
//!   first partition: their other rows are copied, and the stored rows of the changed keys are
//!   pushed into the same partitions as a second side of the store
//!   ([`RunChanges::keep_stored`], [`RunChanges::push_stored`]), split again with the changes.
//!   Each group then merges its changes with the stored rows of its own keys ([`Group`]).

use std::path::PathBuf;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    UInt32Array, UInt64Array, UInt8Array,
};
use deltalake::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, UInt32Type, UInt64Type, UInt8Type,
};
use futures::stream::BoxStream;
use futures::TryStreamExt;

use super::distinct::DigestLog;
use crate::core::batch::HashedBatch;
use crate::core::change::{ChangeBatch, ChangeOp, SourceOrder};
use crate::core::key::{key, DigestMap};
use crate::core::spill::{Partitioner, SpillStore};
use crate::error::{Error, Result};

/// Partitions of a run's changes once they spill. With the default 1 GiB limit a partition
/// reaches the quarter of the budget that it may hold at about 16 GiB of changes in memory
/// (some 100M narrow rows); past that a partition is split again.
pub const FIRST_PARTITIONS: usize = 64;

/// Bytes of changes after which a full load streams ([`Split::Stream`]) when half the budget
/// is more: streaming overlaps parsing with encoding and holds no de-duplication map, so it is
/// faster than holding the load (a 10M-row load: 3.6-4.1 s streamed against 5.2 s held, at
/// 0.3-0.4x the memory; bench/RESULTS.md). Smaller loads are held, and never read twice.
pub const STREAM_AFTER_BYTES: usize = 64 << 20;

/// Levels of partitioning at most: the first, and a split of a partition by each further four
/// bytes of the 16-byte digest.
const MAX_LEVELS: usize = 4;

/// Parts of changes spilled in read order ([`Split::InOrder`]), a quarter of the limit each:
/// 1 TiB of changes at the default limit; past that the last part takes the rest.
const IN_ORDER_PARTS: usize = 4096;

/// How a run's changes are split once they take over half its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Not at all: held whole (a run that may not spill).
    Never,
    /// By keyhash: a reload, whose last change per key is then taken partition by partition.
    ByKey,
    /// Streamed to the writers as read, keys logged to check they are distinct: a full load
    /// (see the module docs). Where the changes are not distinct inserts, the run stops with
    /// [`Error::Restart`] and is read again with [`Split::ByKey`].
    Stream,
    /// By keyhash, keeping the set of changed keys: a merge, whose impacted files are read
    /// once with every changed key, their stored rows split with the changes.
    Merge,
    /// In read order, a quarter of the limit at a time: an append or a table without a key,
    /// which take no last change per key (their files keep the read order).
    InOrder,
}

/// A run's memory budget and where its changes spill.
#[derive(Debug, Clone)]
pub struct RunMemory {
    /// Bytes of changes (Arrow buffers and per-row vectors) the run holds at most, about.
    pub limit: u64,
    /// Folder under which the run makes (and removes) its spill folder.
    pub spill_dir: PathBuf,
    /// Whether the run may spill its changes. `capture` may not: its buffer keeps the
    /// changes it hands to a run (and commits at half its limit).
    pub spill: bool,
}

impl RunMemory {
    /// Bytes of changes held before a run that may spill starts to: half the limit.
    fn held_limit(&self) -> usize {
        (self.limit / 2) as usize
    }

    /// Bytes the spill store holds in memory, and a partition at most before it is split
    /// again: a quarter of the limit.
    fn part_budget(&self) -> usize {
        ((self.limit / 4) as usize).max(1)
    }
}

/// What a run's changes were split into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChangeSpill {
    /// Partitions applied one after another (1: the changes were held in memory).
    pub partitions: u64,
    /// Bytes written to spill files (Arrow IPC).
    pub spilled_bytes: u64,
}

/// A group of a run's changes applied on its own: every change of its keys, and, in a spilled
/// merge, the stored rows of its keys.
#[derive(Debug, Default)]
pub struct Group {
    /// The changes, in read order per file.
    pub changes: Vec<ChangeBatch>,
    /// The stored rows (current table rows) of the group's changed keys, when a spilled merge
    /// read them ([`RunChanges::keep_stored`]); None: the merge reads them itself.
    pub stored: Option<Vec<RecordBatch>>,
}

/// A run's changes: held, partitioned by keyhash and partly on disk, or still being read.
pub enum RunChanges {
    /// Every change in memory, in read order.
    Held(Vec<ChangeBatch>),
    /// Changes partitioned by keyhash (see the module docs).
    Spilled(SpilledChanges),
    /// A full load streamed to the writers as it is read ([`Split::Stream`]).
    Streamed(StreamedLoad),
}

/// A full load passed on a batch at a time as it is read: the batches read before it streamed
/// (past [`STREAM_AFTER_BYTES`] or half the budget), then the rest of the stream. Every key's short digest is logged; the
/// stream's end is only reported once the log holds no key twice.
pub struct StreamedLoad {
    read: std::collections::VecDeque<ChangeBatch>,
    /// In a mutex only to be `Sync` (a run's request is shared by reference across awaits);
    /// taken by `&mut`, never locked.
    rest: std::sync::Mutex<BoxStream<'static, Result<ChangeBatch>>>,
    log: Option<DigestLog>,
    /// The stream ended and its keys were found distinct.
    ended: bool,
    rows: usize,
    spilled_bytes: u64,
}

impl StreamedLoad {
    /// The next batch, its keys logged; None once the stream has ended and its keys were
    /// found distinct (the check reads the log's spill files and sorts on a blocking thread).
    ///
    /// # Errors
    /// The stream's errors; [`Error::Restart`] when a key was logged twice; the log's
    /// [`Error::Storage`] errors.
    async fn next_batch(&mut self) -> Result<Option<ChangeBatch>> {
        // the log is taken once the stream has ended (it is not polled again), or failed
        let Some(mut log) = self.log.take() else {
            return match self.ended {
                true => Ok(None),
                false => Err(Error::Internal(
                    "a streamed load was read on after an error".into(),
                )),
            };
        };
        let batch = match self.read.pop_front() {
            Some(batch) => Some(batch),
            None => {
                let rest = self
                    .rest
                    .get_mut()
                    .map_err(|_| Error::Internal("a streamed load's reader failed".into()))?;
                rest.try_next().await?
            }
        };
        let Some(batch) = batch else {
            self.spilled_bytes = log.spilled_bytes();
            let threads = crate::core::threads::get();
            let repeat = tokio::task::spawn_blocking(move || log.has_repeat(threads))
                .await
                .map_err(|e| Error::Internal(format!("checking a load's keys: {e}")))??;
            self.ended = !repeat;
            return match repeat {
                true => Err(Error::Restart(
                    "a key comes more than once in the full load".into(),
                )),
                false => Ok(None),
            };
        };
        log.push(&batch.rows.keyhash)?;
        if log.full() {
            log = tokio::task::spawn_blocking(move || log.spill().map(|()| log))
                .await
                .map_err(|e| Error::Internal(format!("spilling a load's keys: {e}")))??;
        }
        self.log = Some(log);
        self.rows += batch.len();
        Ok(Some(batch))
    }
}

impl RunChanges {
    /// Change rows of the run.
    pub fn rows(&self) -> usize {
        match self {
            RunChanges::Held(batches) => batches.iter().map(ChangeBatch::len).sum(),
            RunChanges::Spilled(s) => s.rows,
            RunChanges::Streamed(s) => s.rows + s.read.iter().map(ChangeBatch::len).sum::<usize>(),
        }
    }

    /// Takes the next group of changes to apply: the held changes once, the next
    /// partition, read from its spill files on a blocking thread, or a streamed load's next
    /// batch (None: every group was taken). Every change of a key is in one group, but for a
    /// streamed load, whose keys are checked distinct at its end.
    ///
    /// # Errors
    /// I/O and Arrow IPC errors of the spill files; [`Error::Internal`] for a spill file that
    /// does not decode as changes; a streamed load's stream errors, and [`Error::Restart`]
    /// at its end when a key came twice. The changes left are dropped with the error.
    pub async fn next_group(&mut self) -> Result<Option<Group>> {
        match std::mem::replace(self, RunChanges::Held(Vec::new())) {
            RunChanges::Held(batches) => Ok((!batches.is_empty()).then_some(Group {
                changes: batches,
                stored: None,
            })),
            RunChanges::Spilled(s) => {
                let (s, group) = blocking(s, SpilledChanges::next_partition).await?;
                *self = RunChanges::Spilled(s);
                Ok(group)
            }
            RunChanges::Streamed(mut s) => {
                let batch = s.next_batch().await;
                *self = RunChanges::Streamed(s);
                Ok(batch?.map(|b| Group {
                    changes: vec![b],
                    stored: None,
                }))
            }
        }
    }

    /// Takes the changed keys of a merge that spilled ([`Split::Merge`]) out of the changes:
    /// None when held, or taken already.
    pub fn take_merge_keys(&mut self) -> Option<DigestMap<()>> {
        match self {
            RunChanges::Held(_) | RunChanges::Streamed(_) => None,
            RunChanges::Spilled(s) => s.keys.take(),
        }
    }

    /// Makes room for the stored rows of a spilled merge's changed keys, rows of `schema`
    /// whose keyhash is column `keyhash_at`: each group then carries the stored rows of its
    /// keys ([`Group::stored`], empty when none were pushed). Before the first group only.
    ///
    /// # Errors
    /// [`Error::Internal`] when the changes are held, or a group was taken already.
    pub fn keep_stored(&mut self, schema: SchemaRef, keyhash_at: usize) -> Result<()> {
        match self {
            RunChanges::Spilled(s) if s.taken == 0 && s.stack.len() == 1 => {
                s.stack[0].store.add_side(schema.clone());
                s.stored = Some((schema, keyhash_at));
                Ok(())
            }
            _ => Err(Error::Internal(
                "stored rows are kept beside spilled changes only, before the first group".into(),
            )),
        }
    }

    /// Splits stored rows of changed keys into the changes' partitions (on a blocking thread;
    /// see [`keep_stored`](Self::keep_stored)).
    ///
    /// # Errors
    /// I/O and Arrow IPC errors while spilling; [`Error::Internal`] when no room was made.
    pub async fn push_stored(&mut self, batch: RecordBatch) -> Result<()> {
        match std::mem::replace(self, RunChanges::Held(Vec::new())) {
            RunChanges::Spilled(s) => {
                let (s, ()) = blocking(s, move |s| s.push_stored(&batch)).await?;
                *self = RunChanges::Spilled(s);
                Ok(())
            }
            held => {
                *self = held;
                Err(Error::Internal(
                    "stored rows pushed beside held changes".into(),
                ))
            }
        }
    }

    /// What the changes were split into so far.
    pub fn spill(&self) -> ChangeSpill {
        match self {
            RunChanges::Held(_) => ChangeSpill {
                partitions: 1,
                spilled_bytes: 0,
            },
            RunChanges::Streamed(s) => ChangeSpill {
                partitions: 1,
                spilled_bytes: s.spilled_bytes + s.log.as_ref().map_or(0, DigestLog::spilled_bytes),
            },
            RunChanges::Spilled(s) => ChangeSpill {
                partitions: s.taken,
                spilled_bytes: s.spilled_bytes
                    + s.stack
                        .iter()
                        .map(|l| l.store.stats().spilled_bytes)
                        .sum::<u64>(),
            },
        }
    }
}

/// Reads a run's changes from `stream`: held while they fit in half of `memory`'s limit, and
/// whole when `split` is [`Split::Never`] or the run may not spill; else split as `split`
/// says and spilled, or, for [`Split::Stream`], handed on with the rest of the stream
/// unread ([`RunChanges::Streamed`]; see the module docs).
///
/// # Errors
/// The stream's errors; [`Error::Storage`] when the spill folder cannot be made or written.
pub async fn collect(
    mut stream: BoxStream<'static, Result<ChangeBatch>>,
    memory: &RunMemory,
    split: Split,
) -> Result<RunChanges> {
    let spillable = memory.spill && split != Split::Never;
    let mut held: Vec<ChangeBatch> = Vec::new();
    let mut held_bytes = 0usize;
    let mut spilled: Option<SpilledChanges> = None;
    while let Some(batch) = stream.try_next().await? {
        if let Some(s) = spilled.take() {
            spilled = Some(blocking(s, move |s| s.push(&batch)).await?.0);
            continue;
        }
        held_bytes += change_bytes(&batch);
        held.push(batch);
        let stream_after = memory.held_limit().min(STREAM_AFTER_BYTES);
        if spillable && split == Split::Stream && held_bytes > stream_after {
            tracing::info!(
                held_mib = held_bytes >> 20,
                limit_mib = memory.limit >> 20,
                "the full load is large: streaming it to the writers"
            );
            return Ok(RunChanges::Streamed(StreamedLoad {
                read: held.into(),
                rest: std::sync::Mutex::new(stream),
                log: Some(DigestLog::new(
                    memory.part_budget(),
                    memory.spill_dir.clone(),
                )),
                ended: false,
                rows: 0,
                spilled_bytes: 0,
            }));
        }
        if spillable && held_bytes > memory.held_limit() {
            tracing::info!(
                held_mib = held_bytes >> 20,
                limit_mib = memory.limit >> 20,
                ?split,
                "the run's changes take over half its memory limit: splitting and spilling them"
            );
            let batches = std::mem::take(&mut held);
            let memory = memory.clone();
            let s = tokio::task::spawn_blocking(move || {
                let mut s = SpilledChanges::new(&batches[0], &memory, split)?;
                for batch in batches {
                    s.push(&batch)?;
                }
                Ok::<_, Error>(s)
            })
            .await
            .map_err(|e| Error::Internal(format!("spilling changes failed: {e}")))??;
            spilled = Some(s);
        }
    }
    Ok(match spilled {
        Some(s) => RunChanges::Spilled(blocking(s, SpilledChanges::start).await?.0),
        None => RunChanges::Held(held),
    })
}

/// Runs `work` on `changes` on a blocking thread (splitting, encoding and spilling, waiting
/// for a spill's writes and reading spill files are no work for the async runtime's
/// threads), and hands the changes back with its result.
async fn blocking<T: Send + 'static>(
    mut changes: SpilledChanges,
    work: impl FnOnce(&mut SpilledChanges) -> Result<T> + Send + 'static,
) -> Result<(SpilledChanges, T)> {
    tokio::task::spawn_blocking(move || work(&mut changes).map(|t| (changes, t)))
        .await
        .map_err(|e| Error::Internal(format!("spilled changes: a blocking task failed: {e}")))?
}

/// Bytes a change batch holds: its Arrow buffers and its per-row vectors.
pub fn change_bytes(batch: &ChangeBatch) -> usize {
    let rows = &batch.rows;
    rows.payload.get_array_memory_size()
        + rows.keyhash.get_array_memory_size()
        + rows.nonkeyhash.get_array_memory_size()
        + rows.lines.capacity() * 8
        + batch.ops.capacity() * std::mem::size_of::<ChangeOp>()
        + batch.order.capacity() * std::mem::size_of::<SourceOrder>()
        + batch.commit_days.capacity() * std::mem::size_of::<Option<i32>>()
        + batch.positions.capacity() * std::mem::size_of::<Option<i64>>()
}

/// One level of partitions being taken: a store and the next partition to take.
struct Level {
    store: SpillStore,
    partitions: usize,
    /// Bytes pushed into each partition, of every side (Arrow sizes as pushed: a partition read
    /// back shares one buffer per segment, which its arrays would each count whole).
    bytes: Vec<usize>,
    next: usize,
    /// 0 for the first partitioning, 1 to 3 for splits of a partition.
    level: usize,
}

/// A run's changes partitioned by keyhash (or in read order) in spill stores (see the module
/// docs).
pub struct SpilledChanges {
    /// Parts in read order ([`Split::InOrder`]) instead of keyhash partitions.
    in_order: bool,
    /// The payload's schema (configured columns, typed).
    payload: SchemaRef,
    /// The payload's columns under positional names, then the change's fields.
    schema: SchemaRef,
    memory: RunMemory,
    /// Stores being taken from, the innermost last.
    stack: Vec<Level>,
    /// Change rows pushed.
    rows: usize,
    /// Partitions handed out.
    taken: u64,
    /// Bytes spilled by stores already emptied.
    spilled_bytes: u64,
    /// The changed keys ([`Split::Merge`]), until taken.
    keys: Option<DigestMap<()>>,
    /// The schema of the stored rows kept as side 1 of the stores, and their keyhash column
    /// ([`RunChanges::keep_stored`]).
    stored: Option<(SchemaRef, usize)>,
}

/// Names of the change fields after the payload columns in a spilled batch.
const FIELDS: [(&str, DataType, bool); 11] = [
    ("keyhash", DataType::Binary, false),
    ("nonkeyhash", DataType::Binary, false),
    ("op", DataType::UInt8, false),
    ("order_position", DataType::UInt64, false),
    ("order_file", DataType::UInt32, false),
    ("order_row", DataType::UInt64, false),
    ("line", DataType::UInt64, false),
    ("commit_day", DataType::Int32, true),
    ("source_position", DataType::Int64, true),
    ("keep_stored", DataType::Utf8, true),
    // the batch's input file: a partition's pieces of several batches are concatenated
    ("file", DataType::UInt64, false),
];

impl SpilledChanges {
    /// An empty set of partitions (or of parts in read order) for changes shaped like `first`.
    fn new(first: &ChangeBatch, memory: &RunMemory, split: Split) -> Result<Self> {
        let in_order = split == Split::InOrder;
        let payload = first.rows.payload.schema();
        let mut fields: Vec<Field> = payload
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().clone().with_name(format!("p{i}")))
            .collect();
        fields.extend(
            FIELDS
                .iter()
                .map(|(name, t, nullable)| Field::new(*name, t.clone(), *nullable)),
        );
        let schema = Arc::new(Schema::new(fields));
        let partitions = match in_order {
            true => IN_ORDER_PARTS,
            false => FIRST_PARTITIONS,
        };
        let store = SpillStore::new(
            vec![schema.clone()],
            partitions,
            memory.part_budget(),
            &memory.spill_dir,
        )?;
        Ok(SpilledChanges {
            in_order,
            payload,
            schema,
            memory: memory.clone(),
            stack: vec![Level {
                store,
                partitions,
                bytes: vec![0; partitions],
                next: 0,
                level: 0,
            }],
            rows: 0,
            taken: 0,
            spilled_bytes: 0,
            keys: (split == Split::Merge).then(DigestMap::default),
            stored: None,
        })
    }

    /// Splits stored rows into the first level's partitions, side 1.
    fn push_stored(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some((_, at)) = self.stored else {
            return Err(Error::Internal("stored rows pushed without room".into()));
        };
        let level = &mut self.stack[0];
        for (partition, piece) in Partitioner::new(level.partitions).split(batch, at)? {
            level.bytes[partition] += piece.get_array_memory_size();
            level.store.push(1, partition, piece)?;
        }
        Ok(())
    }

    /// The schemas of the stores' sides: the changes, then the stored rows if kept.
    fn sides(&self) -> Vec<SchemaRef> {
        let mut sides = vec![self.schema.clone()];
        sides.extend(self.stored.as_ref().map(|(s, _)| s.clone()));
        sides
    }

    /// Column of the keyhash in a spilled batch.
    fn keyhash_at(&self) -> usize {
        self.payload.fields().len()
    }

    /// Splits `batch` into the first level's partitions.
    fn push(&mut self, batch: &ChangeBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.rows += batch.len();
        if let Some(keys) = &mut self.keys {
            keys.extend(batch.rows.keyhash.iter().flatten().map(|k| (key(k), ())));
        }
        let encoded = self.encode(batch)?;
        let at = self.keyhash_at();
        let budget = self.memory.part_budget();
        let level = &mut self.stack[0];
        if self.in_order {
            // the part being filled: the first that is not full, the last at most
            let part = level.next;
            level.bytes[part] += encoded.get_array_memory_size();
            level.store.push(0, part, encoded)?;
            if level.bytes[part] >= budget && part + 1 < level.partitions {
                level.next += 1;
            }
            return Ok(());
        }
        for (partition, piece) in Partitioner::new(level.partitions).split(&encoded, at)? {
            level.bytes[partition] += piece.get_array_memory_size();
            level.store.push(0, partition, piece)?;
        }
        Ok(())
    }

    /// Done pushing: waits for the spill being written (and rewinds the parts in read order,
    /// whose `next` was the part being filled).
    fn start(&mut self) -> Result<()> {
        for level in &mut self.stack {
            level.next = 0;
            level.store.land()?;
        }
        Ok(())
    }

    /// The next partition's changes (and stored rows), splitting a partition over the budget
    /// again.
    fn next_partition(&mut self) -> Result<Option<Group>> {
        let budget = self.memory.part_budget();
        let sides = self.sides();
        // each side's keyhash column: the changes', then the stored rows' if kept
        let keyhash = [Some(self.keyhash_at()), self.stored.as_ref().map(|s| s.1)];
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            if top.next == top.partitions {
                let left: u64 = (0..sides.len()).map(|side| top.store.rows(side)).sum();
                if left > 0 {
                    return Err(Error::Internal(format!(
                        "{left} spilled rows were left in their partitions"
                    )));
                }
                self.spilled_bytes += top.store.stats().spilled_bytes;
                self.stack.pop();
                continue;
            }
            let partition = top.next;
            top.next += 1;
            let bytes = top.bytes[partition];
            if bytes == 0 {
                continue;
            }
            if bytes > budget && !self.in_order && top.level + 1 < MAX_LEVELS {
                let level = top.level + 1;
                let partitions = (2 * bytes / budget + 1).clamp(2, 1024);
                tracing::debug!(
                    partition,
                    level,
                    bytes,
                    partitions,
                    "a partition of changes is over its budget: split again"
                );
                let mut store =
                    SpillStore::new(sides.clone(), partitions, budget, &self.memory.spill_dir)?;
                let split = Partitioner::nested(partitions, level);
                let mut sizes = vec![0; partitions];
                // each side by its keyhash column, one spilled segment at a time: the
                // partition is never read whole
                for (side, at) in keyhash.iter().enumerate() {
                    let Some(at) = *at else { continue };
                    top.store.take_each(side, partition, |batch| {
                        for (p, piece) in split.split(&batch, at)? {
                            sizes[p] += piece.get_array_memory_size();
                            store.push(side, p, piece)?;
                        }
                        Ok(())
                    })?;
                }
                store.land()?;
                self.stack.push(Level {
                    store,
                    partitions,
                    bytes: sizes,
                    next: 0,
                    level,
                });
                continue;
            }
            let batches = top.store.take(0, partition)?;
            let stored = match self.stored.is_some() {
                true => Some(top.store.take(1, partition)?),
                false => None,
            };
            self.taken += 1;
            let mut changes = Vec::new();
            for batch in &batches {
                self.decode(batch, &mut changes)?;
            }
            return Ok(Some(Group { changes, stored }));
        }
    }

    /// `batch` as one record batch of the spill schema.
    fn encode(&self, batch: &ChangeBatch) -> Result<RecordBatch> {
        let rows = &batch.rows;
        let n = batch.len();
        let mut columns: Vec<ArrayRef> = rows.payload.columns().to_vec();
        columns.push(Arc::new(rows.keyhash.clone()));
        columns.push(Arc::new(rows.nonkeyhash.clone()));
        columns.push(Arc::new(UInt8Array::from_iter_values(
            batch.ops.iter().map(|op| op_code(*op)),
        )));
        columns.push(Arc::new(UInt64Array::from_iter_values(
            batch.order.iter().map(|o| o.position),
        )));
        columns.push(Arc::new(UInt32Array::from_iter_values(
            batch.order.iter().map(|o| o.file),
        )));
        columns.push(Arc::new(UInt64Array::from_iter_values(
            batch.order.iter().map(|o| o.row),
        )));
        columns.push(Arc::new(UInt64Array::from_iter_values(
            rows.lines.iter().copied(),
        )));
        columns.push(Arc::new(Int32Array::from(batch.commit_days.clone())));
        columns.push(Arc::new(Int64Array::from(batch.positions.clone())));
        columns.push(Arc::new(match batch.keep_stored.is_empty() {
            true => StringArray::new_null(n),
            false => StringArray::from_iter((0..n).map(|row| {
                batch.keep_stored.get(&row).map(|cols| {
                    cols.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                })
            })),
        }));
        columns.push(Arc::new(UInt64Array::from_value(rows.file as u64, n)));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Appends the change batches of spilled `batch` to `out`: one per run of rows of one file.
    fn decode(&self, batch: &RecordBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        let n = self.keyhash_at();
        let bad = || Error::Internal("a spill file does not hold changes".into());
        let column = |i: usize| batch.columns().get(n + i).ok_or_else(bad);
        let files = column(10)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        let mut start = 0;
        while start < batch.num_rows() {
            let file = files.value(start);
            let len = (start..batch.num_rows())
                .take_while(|&i| files.value(i) == file)
                .count();
            let part = batch.slice(start, len);
            out.push(self.decode_one(&part, usize::try_from(file).map_err(|_| bad())?)?);
            start += len;
        }
        Ok(())
    }

    /// The change batch of spilled rows of one file.
    fn decode_one(&self, batch: &RecordBatch, file: usize) -> Result<ChangeBatch> {
        let n = self.keyhash_at();
        let bad = || Error::Internal("a spill file does not hold changes".into());
        let column = |i: usize| batch.columns().get(n + i).ok_or_else(bad);
        let binary = |i: usize| -> Result<BinaryArray> {
            Ok(column(i)?.as_binary_opt::<i32>().ok_or_else(bad)?.clone())
        };
        let ops = column(2)?.as_primitive_opt::<UInt8Type>().ok_or_else(bad)?;
        let positions = column(3)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        let files = column(4)?
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(bad)?;
        let rows = column(5)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        let lines = column(6)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        let days = column(7)?.as_primitive_opt::<Int32Type>().ok_or_else(bad)?;
        let source = column(8)?.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
        let keep = column(9)?.as_string_opt::<i32>().ok_or_else(bad)?;
        let ops: Vec<ChangeOp> = ops
            .values()
            .iter()
            .map(|&c| op_of(c).ok_or_else(bad))
            .collect::<Result<_>>()?;
        let order = positions
            .values()
            .iter()
            .zip(files.values().iter())
            .zip(rows.values().iter())
            .map(|((&position, &file), &row)| SourceOrder {
                position,
                file,
                row,
            })
            .collect();
        let mut keep_stored = std::collections::HashMap::new();
        if keep.null_count() < keep.len() {
            for row in 0..keep.len() {
                if keep.is_valid(row) {
                    let cols = keep
                        .value(row)
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(|c| c.parse::<usize>().map_err(|_| bad()))
                        .collect::<Result<Vec<_>>>()?;
                    keep_stored.insert(row, cols);
                }
            }
        }
        let payload = RecordBatch::try_new(self.payload.clone(), batch.columns()[..n].to_vec())?;
        Ok(ChangeBatch {
            rows: HashedBatch {
                payload,
                keyhash: binary(0)?,
                nonkeyhash: binary(1)?,
                file,
                lines: lines.values().to_vec(),
            },
            ops,
            order,
            commit_days: days.iter().collect(),
            positions: source.iter().collect(),
            keep_stored,
        })
    }
}

fn op_code(op: ChangeOp) -> u8 {
    match op {
        ChangeOp::Insert => 0,
        ChangeOp::Update => 1,
        ChangeOp::Delete => 2,
    }
}

fn op_of(code: u8) -> Option<ChangeOp> {
    match code {
        0 => Some(ChangeOp::Insert),
        1 => Some(ChangeOp::Update),
        2 => Some(ChangeOp::Delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use deltalake::arrow::array::{BinaryArray, Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use proptest::prelude::*;

    use super::*;
    use crate::changelog::dedupe::last_per_key;

    /// A change as compared here: key, op code, order, line, day, position, kept columns,
    /// payload (amount, note), batch file.
    type Row = (
        u16,
        u8,
        (u64, u32, u64),
        u64,
        Option<i32>,
        Option<i64>,
        Option<Vec<usize>>,
        (Option<i64>, Option<String>),
        usize,
    );

    fn digest(k: u16) -> [u8; 16] {
        // spread the keys over every digest byte the partitioners read
        let mut d = [0u8; 16];
        let mut x = (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for chunk in d.chunks_mut(8) {
            x ^= x >> 29;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        d[14..].copy_from_slice(&k.to_le_bytes());
        d
    }

    fn key_of(d: &[u8]) -> u16 {
        u16::from_le_bytes([d[14], d[15]])
    }

    /// A batch of `file` with the changes (key, op, position, day, source position,
    /// kept columns, amount, note); rows are numbered from `first_row`.
    #[allow(clippy::type_complexity)]
    fn batch(
        file: usize,
        first_row: u64,
        changes: &[(
            u16,
            ChangeOp,
            u64,
            Option<i32>,
            Option<i64>,
            bool,
            Option<i64>,
        )],
    ) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("amount", DataType::Int64, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let amounts = Int64Array::from(changes.iter().map(|c| c.6).collect::<Vec<_>>());
        let notes = StringArray::from(
            changes
                .iter()
                .map(|c| c.6.map(|a| format!("note {a}")))
                .collect::<Vec<_>>(),
        );
        let payload =
            RecordBatch::try_new(schema, vec![Arc::new(amounts), Arc::new(notes)]).unwrap();
        let digests: Vec<[u8; 16]> = changes.iter().map(|c| digest(c.0)).collect();
        let keyhash = BinaryArray::from_iter_values(digests.iter());
        let nonkeyhash = BinaryArray::from_iter_values(
            digests
                .iter()
                .map(|d| d.iter().rev().copied().collect::<Vec<u8>>()),
        );
        let rows: Vec<u64> = (0..changes.len() as u64).map(|i| first_row + i).collect();
        ChangeBatch {
            rows: HashedBatch {
                payload,
                keyhash,
                nonkeyhash,
                file,
                lines: rows.iter().map(|r| r + 1).collect(),
            },
            ops: changes.iter().map(|c| c.1).collect(),
            order: changes
                .iter()
                .zip(&rows)
                .map(|(c, &row)| SourceOrder {
                    position: c.2,
                    file: file as u32,
                    row,
                })
                .collect(),
            commit_days: changes.iter().map(|c| c.3).collect(),
            positions: changes.iter().map(|c| c.4).collect(),
            keep_stored: changes
                .iter()
                .enumerate()
                .filter(|(_, c)| c.5)
                .map(|(i, _)| (i, vec![1, 0]))
                .collect(),
        }
    }

    fn rows_of(batches: &[ChangeBatch]) -> Vec<Row> {
        let mut out = Vec::new();
        for b in batches {
            let amounts = b.rows.payload.column(0).as_primitive::<Int64Type>();
            let notes = b.rows.payload.column(1).as_string::<i32>();
            for i in 0..b.len() {
                let o = b.order[i];
                out.push((
                    key_of(b.rows.keyhash.value(i)),
                    op_code(b.ops[i]),
                    (o.position, o.file, o.row),
                    b.rows.lines[i],
                    b.commit_days[i],
                    b.positions[i],
                    b.keep_stored.get(&i).cloned(),
                    (
                        amounts.is_valid(i).then(|| amounts.value(i)),
                        notes.is_valid(i).then(|| notes.value(i).to_string()),
                    ),
                    b.rows.file,
                ));
                assert_eq!(
                    b.rows.nonkeyhash.value(i),
                    b.rows
                        .keyhash
                        .value(i)
                        .iter()
                        .rev()
                        .copied()
                        .collect::<Vec<_>>()
                );
            }
        }
        out
    }

    /// `changes` collected at `limit` (`spill`: whether the run may spill) into a spill folder
    /// of their own: the folder, the runtime that drives them, and the run's changes.
    fn collected(
        changes: Vec<ChangeBatch>,
        limit: u64,
        spill: bool,
        split: Split,
    ) -> (tempfile::TempDir, tokio::runtime::Runtime, RunChanges) {
        let dir = tempfile::tempdir().unwrap();
        let memory = RunMemory {
            limit,
            spill_dir: dir.path().to_path_buf(),
            spill,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let stream = futures::stream::iter(changes.into_iter().map(Ok)).boxed();
        let run = runtime.block_on(collect(stream, &memory, split)).unwrap();
        (dir, runtime, run)
    }

    fn run(
        changes: Vec<ChangeBatch>,
        limit: u64,
        split: Split,
    ) -> (Vec<Vec<ChangeBatch>>, ChangeSpill) {
        let (dir, runtime, mut collected) = collected(changes, limit, true, split);
        let mut groups = Vec::new();
        while let Some(group) = runtime.block_on(collected.next_group()).unwrap() {
            assert!(group.stored.is_none(), "no stored rows were kept");
            groups.push(group.changes);
        }
        let spill = collected.spill();
        drop(collected);
        // the run's spill folder is gone with it
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (groups, spill)
    }

    use futures::StreamExt;

    /// Names of the files under `dir`, recursively.
    fn walkdir(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            match entry.file_type().unwrap().is_dir() {
                true => out.extend(walkdir(&entry.path())),
                false => out.push(entry.file_name().to_string_lossy().into_owned()),
            }
        }
        out
    }

    /// Changes of `files` files, `per_file` each, over `keys` keys.
    fn changes(files: usize, per_file: usize, keys: u16) -> Vec<ChangeBatch> {
        let mut out = Vec::new();
        let mut n = 0u64;
        for file in 0..files {
            let rows: Vec<_> = (0..per_file)
                .map(|_| {
                    n += 1;
                    let op = match n % 5 {
                        0 => ChangeOp::Delete,
                        1 | 2 => ChangeOp::Update,
                        _ => ChangeOp::Insert,
                    };
                    (
                        (n.wrapping_mul(7919) % keys as u64) as u16,
                        op,
                        n % 3,
                        (!n.is_multiple_of(4)).then_some(n as i32),
                        (!n.is_multiple_of(6)).then_some(n as i64 * 10),
                        n.is_multiple_of(11),
                        (!n.is_multiple_of(9)).then_some(n as i64),
                    )
                })
                .collect();
            // two batches per file, as a reader hands them out
            let half = rows.len() / 2;
            out.push(batch(file, 0, &rows[..half]));
            out.push(batch(file, half as u64, &rows[half..]));
        }
        out
    }

    /// Every group of a streamed load until the end or an error: the rows of each group (one
    /// batch each), and the error.
    fn streamed_groups(
        runtime: &tokio::runtime::Runtime,
        collected: &mut RunChanges,
    ) -> (Vec<Vec<Row>>, Option<Error>) {
        let mut groups = Vec::new();
        loop {
            match runtime.block_on(collected.next_group()) {
                Ok(Some(group)) => {
                    assert!(group.stored.is_none(), "no stored rows");
                    assert_eq!(group.changes.len(), 1, "a batch at a time");
                    groups.push(rows_of(&group.changes));
                }
                Ok(None) => return (groups, None),
                Err(e) => return (groups, Some(e)),
            }
        }
    }

    #[test]
    fn a_full_load_over_half_the_limit_streams_its_batches_in_read_order_once_its_keys_are_distinct(
    ) {
        // 12,000 changes of distinct keys (7919 is prime to 60,000)
        let input = changes(4, 3000, 60_000);
        let (expected, batches) = (rows_of(&input), input.len());
        let (dir, runtime, mut load) = collected(input, 64 << 10, true, Split::Stream);
        assert!(matches!(load, RunChanges::Streamed(_)));
        let (groups, error) = streamed_groups(&runtime, &mut load);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(groups.len(), batches);
        let got: Vec<Row> = groups.into_iter().flatten().collect();
        assert_eq!(got, expected, "every change once, in read order");
        assert_eq!(load.rows(), 12_000);
        let spill = load.spill();
        // a 16 KiB budget of digests (2,048) spilled most of the log's 96 KB
        assert_eq!(spill.partitions, 1);
        assert!(spill.spilled_bytes >= 8 * 8_000, "{spill:?}");
        assert!(spill.spilled_bytes <= 8 * 12_000, "{spill:?}");
        // the end is told once, and the log's spill folder went with the check
        assert!(runtime.block_on(load.next_group()).unwrap().is_none());
        assert!(walkdir(dir.path()).is_empty(), "{:?}", walkdir(dir.path()));
    }

    #[test]
    fn a_streamed_load_with_a_key_twice_ends_in_a_restart_after_its_last_batch() {
        // 600 changes over 500 keys: a repeat in another batch
        let input = changes(2, 300, 500);
        let batches = input.len();
        let (dir, runtime, mut load) = collected(input, 4 << 10, true, Split::Stream);
        let (groups, error) = streamed_groups(&runtime, &mut load);
        assert_eq!(
            groups.len(),
            batches,
            "the repeat is found once the stream has ended"
        );
        assert!(matches!(error, Some(Error::Restart(_))), "{error:?}");
        // never an end after a failure
        assert!(matches!(
            runtime.block_on(load.next_group()),
            Err(Error::Internal(_))
        ));
        drop(load);
        assert!(walkdir(dir.path()).is_empty());
        // within half the limit the load is held (its last change per key taken as ever)
        let (_, _, held) = collected(changes(2, 300, 500), 1 << 30, true, Split::Stream);
        assert!(matches!(held, RunChanges::Held(_)));
        // and a run that may not spill never streams
        let (_, _, held) = collected(changes(2, 300, 500), 4 << 10, false, Split::Stream);
        assert!(matches!(held, RunChanges::Held(_)));
    }

    #[test]
    fn a_run_within_half_the_limit_is_held_whole() {
        let input = changes(3, 100, 50);
        let expected = rows_of(&input);
        let (groups, spill) = run(input, 1 << 30, Split::ByKey);
        assert_eq!(groups.len(), 1);
        assert_eq!(rows_of(&groups[0]), expected, "held in read order");
        assert_eq!(
            spill,
            ChangeSpill {
                partitions: 1,
                spilled_bytes: 0
            }
        );
    }

    #[test]
    fn a_run_that_is_never_split_is_held_whatever_its_size() {
        let input = changes(3, 2000, 500);
        let expected = rows_of(&input);
        let (groups, spill) = run(input, 4096, Split::Never);
        assert_eq!(groups.len(), 1);
        assert_eq!(rows_of(&groups[0]), expected);
        assert_eq!(spill.spilled_bytes, 0);
    }

    #[test]
    fn a_spilled_merge_keeps_its_changed_keys_and_hands_each_group_the_stored_rows_of_its_keys() {
        let input = changes(4, 3000, 2000);
        let keys: std::collections::BTreeSet<u128> = input
            .iter()
            .flat_map(|b| b.rows.keyhash.iter().flatten().map(key).collect::<Vec<_>>())
            .collect();
        let expected = rows_of(&input);
        let (dir, runtime, mut collected) = collected(input, 64 << 10, true, Split::Merge);
        let kept: std::collections::BTreeSet<u128> = collected
            .take_merge_keys()
            .unwrap()
            .keys()
            .copied()
            .collect();
        assert_eq!(kept, keys, "every changed key, once");
        assert!(collected.take_merge_keys().is_none(), "taken once");
        // stored rows, one per key (as current holds them), beside the changes
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("keyhash", DataType::Binary, false),
        ]));
        collected.keep_stored(schema.clone(), 1).unwrap();
        let before = collected.spill().spilled_bytes;
        let ids: Vec<u16> = (0..2000).collect();
        for chunk in ids.chunks(300) {
            let digests: Vec<[u8; 16]> = chunk.iter().map(|&k| digest(k)).collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt64Array::from_iter_values(
                        chunk.iter().map(|&k| k as u64),
                    )),
                    Arc::new(BinaryArray::from_iter_values(digests.iter())),
                ],
            )
            .unwrap();
            runtime.block_on(collected.push_stored(batch)).unwrap();
        }
        let (mut got, mut stored_ids, mut groups) = (Vec::new(), Vec::new(), 0u64);
        while let Some(group) = runtime.block_on(collected.next_group()).unwrap() {
            groups += 1;
            if groups == 1 {
                // the stored rows of partitions not taken yet are in spill files of side 1
                let files: Vec<String> = walkdir(dir.path());
                assert!(
                    files.iter().any(|f| f.starts_with("s1-")),
                    "stored rows spilled: {files:?}"
                );
            }
            let group_keys: std::collections::HashSet<u16> =
                rows_of(&group.changes).iter().map(|r| r.0).collect();
            for batch in group
                .stored
                .expect("a merge's group carries its stored rows")
            {
                assert_eq!(batch.schema(), schema);
                let ids = batch.column(0).as_primitive::<UInt64Type>();
                for (i, k) in batch.column(1).as_binary::<i32>().iter().enumerate() {
                    assert_eq!(key_of(k.unwrap()) as u64, ids.value(i));
                    assert!(
                        group_keys.contains(&key_of(k.unwrap())),
                        "stored row of key {} in the group of its changes",
                        ids.value(i)
                    );
                    stored_ids.push(ids.value(i));
                }
            }
            got.extend(rows_of(&group.changes));
        }
        let spill = collected.spill();
        assert_eq!(spill.partitions, groups);
        assert!(
            groups > FIRST_PARTITIONS as u64,
            "partitions were split again, stored rows with their changes: {spill:?}"
        );
        assert!(spill.spilled_bytes > before);
        stored_ids.sort_unstable();
        assert_eq!(
            stored_ids,
            (0..2000).collect::<Vec<u64>>(),
            "every stored row in exactly one group"
        );
        let mut expected = expected;
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "every change once");
        drop(collected);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn changes_spilled_in_read_order_come_back_in_read_order() {
        let input = changes(4, 3000, 2000);
        let expected = rows_of(&input);
        let (groups, spill) = run(input, 64 << 10, Split::InOrder);
        assert!(spill.spilled_bytes > 0, "{spill:?}");
        assert!(
            groups.len() > 2,
            "parts of a quarter of the limit: {spill:?}"
        );
        assert_eq!(spill.partitions, groups.len() as u64);
        let got: Vec<Row> = groups.iter().flat_map(|g| rows_of(g)).collect();
        assert_eq!(got, expected, "every change once, in read order");
        // a run that may not spill (capture) is held
        let (_dir, _runtime, held) =
            collected(changes(2, 3000, 100), 64 << 10, false, Split::ByKey);
        assert!(matches!(held, RunChanges::Held(_)));
    }

    #[test]
    fn spilled_changes_come_back_whole_with_every_key_in_one_group() {
        let input = changes(4, 3000, 2000);
        let mut expected = rows_of(&input);
        // 64 KiB: far less than the changes, so they spill and partitions are split again
        let (groups, spill) = run(input, 64 << 10, Split::ByKey);
        assert!(spill.spilled_bytes > 0, "{spill:?}");
        assert!(
            spill.partitions > FIRST_PARTITIONS as u64,
            "partitions over the budget are split again: {spill:?}"
        );
        assert_eq!(spill.partitions, groups.len() as u64);
        let mut group_of: HashMap<u16, usize> = HashMap::new();
        let mut got = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let rows = rows_of(group);
            for r in &rows {
                assert_eq!(
                    *group_of.entry(r.0).or_insert(g),
                    g,
                    "key {} in two groups",
                    r.0
                );
                // a batch holds the rows of one file, as the source order says
                assert_eq!(r.2 .1 as usize, r.8);
            }
            // rows of one file keep their order within a group
            let mut last: BTreeMap<usize, u64> = BTreeMap::new();
            for r in &rows {
                let previous = last.insert(r.8, r.2 .2);
                assert!(
                    previous.is_none_or(|p| p < r.2 .2),
                    "order within file {}",
                    r.8
                );
            }
            got.extend(rows);
        }
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "every change once, every field kept");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// The last change per key taken group by group is the one taken over the held run.
        #[test]
        fn last_change_per_key_by_group_equals_the_whole_run(
            seed in any::<u64>(),
            files in 1usize..5,
            per_file in 1usize..400,
            keys in 1u16..300,
            limit in prop_oneof![Just(64u64 << 10), Just(1u64 << 20), Just(1u64 << 30)],
        ) {
            let mut input = changes(files, per_file, keys);
            // shuffle positions so that the order is not the read order
            let mut x = seed | 1;
            for b in &mut input {
                for o in &mut b.order {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    o.position = x % 4;
                }
            }
            let winners = |batches: &[ChangeBatch]| -> Vec<Row> {
                let rows: Vec<Vec<Row>> = batches.iter().map(|b| rows_of(std::slice::from_ref(b))).collect();
                let mut w: Vec<Row> = last_per_key(batches)
                    .into_iter()
                    .map(|p| rows[p.batch][p.row].clone())
                    .collect();
                w.sort();
                w
            };
            let expected = winners(&input);
            let (groups, _) = run(input, limit, Split::ByKey);
            let mut got: Vec<Row> = groups.iter().flat_map(|g| winners(g)).collect();
            got.sort();
            prop_assert_eq!(got, expected);
        }
    }
}
