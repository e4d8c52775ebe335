//! Sources: everything that turns input into typed, hashed Arrow batches.
//!
//! - [`extract`]: full or delta extracts (CSV, Parquet) of a snapshot run, read into
//!   [`HashedBatch`]es for the diff.
//! - [`changelog`]: change logs (AWS DMS files, Debezium events) read into [`ChangeBatch`]es; a
//!   landing-zone folder is one [`ChangeSource`].
//! - [`postgres`]: a PostgreSQL replication slot (pgoutput) and the initial copy of its
//!   tables; each table's changes between two lake commits are one [`ChangeSource`].
//!
//! Every row is cast to its configured type and hashed once, on arrival (the seed article's
//! stage 1). Bad rows fail the read with file, line and column named, or, for extracts under
//! `on_error: reject`, are set aside as [`Reject`](crate::core::batch::Reject)s; none is dropped
//! silently.

mod cast;
pub mod changelog;
pub mod extract;
pub mod postgres;

use std::future::Future;

use deltalake::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use futures::stream::BoxStream;

use crate::config::TableSpec;
use crate::core::batch::HashedBatch;
use crate::core::change::ChangeBatch;
use crate::core::checkpoint::{Checkpoint, Committed};
use crate::core::hash::hash_columns;
use crate::error::Result;

/// A source of changes for one table: a landing-zone folder today
/// ([`changelog::LandingZone`]), a replication slot or a binlog next.
///
/// The controller (`changelog::sync::run_source`) drives every source the same way, one run at
/// a time:
/// 1. [`plan`](ChangeSource::plan), given what the lake has committed ([`Committed`], read
///    from the sink): what is pending past it.
/// 2. [`changes`](ChangeSource::changes): the pending changes as a stream of
///    [`ChangeBatch`]es in source order, each change carrying its [`SourceOrder`].
/// 3. [`checkpoint`](ChangeSource::checkpoint), once the stream has ended: the source
///    position its batches reach. The run commits it in the same Delta commit as the data
///    (the sink contract), so after a crash step 1 starts exactly past it.
/// 4. [`confirm`](ChangeSource::confirm), after the commit: the source may let go of what the
///    lake now holds (a replication slot confirms its flush LSN; files need nothing).
///
/// [`SourceOrder`]: crate::core::change::SourceOrder
pub trait ChangeSource: Send {
    /// Works out what is pending past `committed`.
    ///
    /// # Errors
    /// Errors of the source (a listing, a connection).
    fn plan(&mut self, committed: &Committed) -> Result<Pending>;

    /// Streams the planned changes in source order. A bad row or an unreadable input ends the
    /// stream with its error (naming file, line and column).
    fn changes(&mut self) -> BoxStream<'_, Result<ChangeBatch>>;

    /// The position the streamed batches reach: what a run that applied them has consumed.
    fn checkpoint(&self) -> Checkpoint;

    /// History files the run replaces (a copy that starts over removes the history rows of
    /// the parts of the copy that stopped); none by default.
    fn history_removes(&self) -> Vec<deltalake::kernel::Remove> {
        Vec::new()
    }

    /// What [`Pending::units`] counts, for messages: `file` (a transaction for a slot).
    fn unit(&self) -> &'static str {
        "file"
    }

    /// Tells the source that the lake holds everything up to `checkpoint`.
    ///
    /// # Errors
    /// Errors of the source.
    fn confirm(&mut self, checkpoint: &Checkpoint) -> impl Future<Output = Result<()>> + Send {
        let _ = checkpoint;
        async { Ok(()) }
    }
}

/// What a [`ChangeSource`] has pending for a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// The changes start with a full load that replaces the current table (DMS `LOAD` files;
    /// a table's initial snapshot).
    pub reload: bool,
    /// The changes are inserts of keys the table does not hold (a later part of a table's
    /// initial copy): appended without reading the table.
    pub append: bool,
    /// Units to read: files, or transactions of a replication slot.
    pub units: usize,
    /// Units recorded as consumed without being read (change files older than a reload).
    pub skipped: usize,
    /// Units applied by earlier runs whose effect the reload replaces (change files older
    /// than a new full load); 0 without a reload.
    pub replaced: usize,
    /// Every unit to read is a full load's (DMS `LOAD` files and no change files): past
    /// 64 MiB of changes, or half its memory if less, the run may stream it to the writers
    /// (`changelog::spill`).
    pub loads_only: bool,
    /// Bytes of the files to read (0: unknown, or not files): how many writers a streamed
    /// load gets.
    pub bytes: u64,
}

impl Pending {
    /// Whether the run has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.units == 0 && self.skipped == 0
    }
}

/// Why a row with a NULL key part is bad (a key identifies a row: every part needs a value).
pub(crate) const NULL_KEY: &str = "NULL in a key column (every key column needs a value)";

/// Why a row with an empty string in a `partition_by` column is bad: the Delta protocol keeps
/// partition values as text in the log and reads an empty one as NULL, so readers would not
/// agree on it and could not tell it from NULL.
pub(crate) const EMPTY_PARTITION: &str = "empty string in a partition_by column (Delta \
    reads an empty partition value as NULL, so it cannot be stored as ''; set null_value: \
    \"\" to load empty fields as NULL, or partition by another column)";

/// The values of typed `columns` (configured columns, config order) that a table cannot
/// store: a NULL in a key column (unless the table's keys may be NULL,
/// [`TableSpec::key_nullable`]: [`NULL_KEY`]) and an empty string in a `partition_by` column
/// ([`EMPTY_PARTITION`]). (row, column index, reason) of the first such column of each row, in
/// row order.
pub(crate) fn invalid_values(
    table: &TableSpec,
    columns: &[ArrayRef],
) -> Vec<(usize, usize, &'static str)> {
    let mut out = Vec::new();
    if !table.key_nullable {
        for c in table.key_indices() {
            if columns[c].null_count() > 0 {
                out.extend(
                    (0..columns[c].len())
                        .filter(|&r| columns[c].is_null(r))
                        .map(|r| (r, c, NULL_KEY)),
                );
            }
        }
    }
    for name in &table.lake.partition_by {
        let Some(c) = table.columns.iter().position(|col| &col.name == name) else {
            continue;
        };
        if let Some(text) = columns[c].as_any().downcast_ref::<StringArray>() {
            out.extend(
                (0..text.len())
                    .filter(|&r| text.is_valid(r) && text.value(r).is_empty())
                    .map(|r| (r, c, EMPTY_PARTITION)),
            );
        }
    }
    out.sort_unstable();
    out.dedup_by_key(|(row, _, _)| *row);
    out
}

/// [`invalid_values`] by (row, column), without the cells in `unparsed` (values that did not
/// parse are NULL in `columns` too: their parse error is the one to say).
pub(crate) fn invalid_cells(
    table: &TableSpec,
    columns: &[ArrayRef],
    unparsed: &[(usize, usize)],
) -> std::collections::HashMap<(usize, usize), &'static str> {
    let unparsed: std::collections::HashSet<&(usize, usize)> = unparsed.iter().collect();
    invalid_values(table, columns)
        .into_iter()
        .filter(|(row, c, _)| !unparsed.contains(&(*row, *c)))
        .map(|(row, c, reason)| ((row, c), reason))
        .collect()
}

/// Hashes a typed payload batch into a [`HashedBatch`].
pub(crate) fn hash_batch(
    config: &TableSpec,
    payload: RecordBatch,
    file: usize,
    lines: Vec<u64>,
) -> Result<HashedBatch> {
    let cols: &[ArrayRef] = payload.columns();
    let pick = |idx: Vec<usize>| idx.into_iter().map(|i| &cols[i]).collect::<Vec<_>>();
    let rows = payload.num_rows();
    let keyhash = hash_columns(&pick(config.key_indices()), rows, config.hash)?;
    let nonkeyhash = hash_columns(&pick(config.nonkey_indices()), rows, config.hash)?;
    Ok(HashedBatch {
        payload,
        keyhash,
        nonkeyhash,
        file,
        lines,
    })
}
