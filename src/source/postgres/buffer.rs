//! The changes of one captured table between two commits to the lake: rows of committed
//! transactions as PostgreSQL's text, gathered into typed, hashed [`ChangeBatch`]es, handed to
//! the run like any other [`ChangeSource`] (`changelog::sync::run_source`).
//!
//! Source order is the transaction's commit LSN, then the change's place in its transaction, so
//! several changes of one transaction (one commit LSN) keep their order; the durable position
//! kept per key (`source_position`) is the commit LSN.
//!
//! An update that left a TOASTed value unchanged carries no value for it (pgoutput `'u'`). The
//! value is taken from an earlier change of the same key in the buffer where there is one;
//! otherwise the change keeps the stored value ([`ChangeBatch::keep_stored`]) and the merge
//! copies it from the lake. NULL is never written in its place.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::StringBuilder;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::types::{normalize, PgType};
use crate::config::ChangelogTable;
use crate::core::batch::BATCH_ROWS;
use crate::core::change::{ChangeBatch, ChangeOp, SourceOrder};
use crate::core::checkpoint::{lsn_text, Checkpoint, Committed};
use crate::error::{Error, Result};
use crate::source::changelog::{typed_batch, ChangeFile, ChangeFormat, FileKind};
use crate::source::{ChangeSource, Pending};

/// A published table as capture lands it.
#[derive(Debug)]
pub struct CaptureTable {
    /// Columns and key (from the catalog), lake tables, delete mode and partitioning (from
    /// the tables file, where it lists the table).
    pub config: ChangelogTable,
    /// How each configured column's text is read (configured column order).
    pub types: Vec<PgType>,
    /// Indices of the key columns (empty: no primary key, inserts only).
    pub key: Vec<usize>,
    /// What errors name as the input: `postgres:<schema>.<table>`.
    pub input: ChangeFile,
}

impl CaptureTable {
    /// A table of `config`, whose columns are read as `types`.
    pub fn new(config: ChangelogTable, types: Vec<PgType>) -> Self {
        let key = match config.insert_only {
            true => Vec::new(),
            false => config.table.key_indices(),
        };
        let name = format!("postgres:{}", config.table.name);
        let input = ChangeFile::new(
            name.clone().into(),
            &name,
            FileKind::Change,
            ChangeFormat::JsonLines,
            0,
        );
        CaptureTable {
            config,
            types,
            key,
            input,
        }
    }

    /// `<schema>.<table>`.
    pub fn name(&self) -> &str {
        &self.config.table.name
    }
}

/// A row's values in configured column order: None is SQL NULL.
pub type Values = Vec<Option<String>>;

/// The last values of a key seen in the buffer, and the columns among them still unknown
/// (unchanged TOAST values not seen in the buffer).
struct Latest {
    values: Values,
    unknown: Vec<usize>,
}

/// Committed changes of one table not yet in the lake (see the module docs).
pub struct TableChanges {
    table: Arc<CaptureTable>,
    columns: Vec<StringBuilder>,
    ops: Vec<ChangeOp>,
    order: Vec<SourceOrder>,
    days: Vec<Option<i32>>,
    positions: Vec<Option<i64>>,
    keep: HashMap<usize, Vec<usize>>,
    lines: Vec<u64>,
    latest: HashMap<Values, Latest>,
    done: Vec<ChangeBatch>,
    /// Changes gathered.
    rows: u64,
    /// The changes replace the table (an initial copy).
    reload: bool,
    /// Commit LSN of the first transaction gathered.
    first_commit: Option<u64>,
    /// The checkpoint: the end LSN of the last transaction gathered (or the copy's consistent
    /// point).
    end: u64,
    /// Transactions gathered.
    transactions: usize,
    last_commit: Option<u64>,
}

impl TableChanges {
    /// An empty buffer of `table`; `reload` for an initial copy.
    pub fn new(table: Arc<CaptureTable>, reload: bool) -> Self {
        let columns = table.types.iter().map(|_| StringBuilder::new()).collect();
        TableChanges {
            table,
            columns,
            ops: Vec::new(),
            order: Vec::new(),
            days: Vec::new(),
            positions: Vec::new(),
            keep: HashMap::new(),
            lines: Vec::new(),
            latest: HashMap::new(),
            done: Vec::new(),
            rows: 0,
            reload,
            first_commit: None,
            end: 0,
            transactions: 0,
            last_commit: None,
        }
    }

    /// The table.
    pub fn table(&self) -> &Arc<CaptureTable> {
        &self.table
    }

    /// Changes gathered.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether nothing is gathered (and no copy is pending).
    pub fn is_empty(&self) -> bool {
        self.rows == 0 && !self.reload
    }

    /// Adds one change of the transaction committed at `commit_lsn`, `seq`-th in it, committed
    /// on day `day` (days since 1970-01-01). `unchanged` lists the columns whose value the
    /// change did not carry (unchanged TOAST values; ascending).
    ///
    /// # Errors
    /// A value the table's type cannot hold, when the batch is typed (file named
    /// `postgres:<schema>.<table>`, line the change's number in the buffer).
    pub fn push(
        &mut self,
        op: ChangeOp,
        mut values: Values,
        mut unchanged: Vec<usize>,
        commit_lsn: u64,
        seq: u64,
        day: i32,
    ) -> Result<()> {
        if self.last_commit != Some(commit_lsn) {
            self.transactions += 1;
            self.last_commit = Some(commit_lsn);
            self.first_commit.get_or_insert(commit_lsn);
        }
        if !self.table.key.is_empty() {
            let key: Values = self.table.key.iter().map(|&c| values[c].clone()).collect();
            match op {
                ChangeOp::Delete => {
                    self.latest.remove(&key);
                }
                _ => {
                    if let Some(latest) = self.latest.get(&key) {
                        unchanged.retain(|&c| {
                            let known = !latest.unknown.contains(&c);
                            if known {
                                values[c] = latest.values[c].clone();
                            }
                            !known
                        });
                    }
                    self.latest.insert(
                        key,
                        Latest {
                            values: values.clone(),
                            unknown: unchanged.clone(),
                        },
                    );
                }
            }
        }
        for (c, value) in values.iter().enumerate() {
            match value {
                Some(text) => self.columns[c].append_value(normalize(self.table.types[c], text)),
                None => self.columns[c].append_null(),
            }
        }
        self.rows += 1;
        if !unchanged.is_empty() {
            self.keep.insert(self.ops.len(), unchanged);
        }
        self.ops.push(op);
        self.order.push(SourceOrder {
            position: commit_lsn,
            file: 0,
            row: seq,
        });
        self.days.push(Some(day));
        self.positions.push(i64::try_from(commit_lsn).ok());
        self.lines.push(self.rows);
        if self.ops.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Deletes every key of the table (a `TRUNCATE` in the transaction committed at
    /// `commit_lsn`, `seq`-th in it): `stored` are the keys the lake holds live, and every key
    /// live in the buffer is deleted too. Returns the deletes added.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn truncate(
        &mut self,
        stored: Vec<Values>,
        commit_lsn: u64,
        seq: u64,
        day: i32,
    ) -> Result<u64> {
        let mut keys: std::collections::HashSet<Values> = stored.into_iter().collect();
        keys.extend(self.latest.keys().cloned());
        let mut keys: Vec<Values> = keys.into_iter().collect();
        keys.sort();
        let width = self.table.types.len();
        let n = keys.len() as u64;
        for key in keys {
            let mut values: Values = vec![None; width];
            for (&c, v) in self.table.key.iter().zip(key) {
                values[c] = v;
            }
            self.push(ChangeOp::Delete, values, Vec::new(), commit_lsn, seq, day)?;
        }
        Ok(n)
    }

    /// Marks the end of the transaction ending at `end_lsn` (or of a copy at its consistent
    /// point): the checkpoint the gathered changes reach.
    pub fn reach(&mut self, end_lsn: u64) {
        self.end = self.end.max(end_lsn);
    }

    /// The checkpoint LSN the gathered changes reach.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Transactions gathered.
    pub fn transactions(&self) -> usize {
        self.transactions
    }

    fn flush(&mut self) -> Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let raw = self.columns.iter_mut().map(|b| b.finish()).collect();
        let lines = std::mem::take(&mut self.lines);
        let rows = typed_batch(&self.table.config, &self.table.input, 0, raw, lines)?;
        self.done.push(ChangeBatch {
            rows,
            ops: std::mem::take(&mut self.ops),
            order: std::mem::take(&mut self.order),
            commit_days: std::mem::take(&mut self.days),
            positions: std::mem::take(&mut self.positions),
            keep_stored: std::mem::take(&mut self.keep),
        });
        Ok(())
    }

    /// Types and hashes what is still gathered as text; after it the buffer is a
    /// [`ChangeSource`] of its batches.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

impl ChangeSource for TableChanges {
    /// One unit per transaction (one for a copy). Nothing is pending when the lake already
    /// holds the checkpoint (another run committed it); a lake past the first transaction but
    /// short of the checkpoint means another capture applied part of it, which is refused.
    fn plan(&mut self, committed: &Committed) -> Result<Pending> {
        let units = self.transactions.max(usize::from(self.reload));
        match (committed.lsn, self.reload) {
            (Some(lsn), _) if lsn >= self.end && self.end > 0 => Ok(Pending::default()),
            (Some(lsn), false) if self.first_commit.is_some_and(|first| lsn > first) => {
                Err(Error::Lake {
                    table: self.table.name().to_string(),
                    reason: format!(
                        "the lake holds changes up to LSN {} but this capture read from {}: \
                         another capture process writes this table (run one per lake and slot)",
                        lsn_text(lsn),
                        lsn_text(self.first_commit.unwrap_or(0))
                    ),
                })
            }
            _ => Ok(Pending {
                reload: self.reload,
                units,
                skipped: 0,
                replaced: 0,
            }),
        }
    }

    /// The gathered batches (clones: a run that lost its commit to another writer plans and
    /// reads again).
    fn changes(&mut self) -> BoxStream<'_, Result<ChangeBatch>> {
        futures::stream::iter(self.done.clone().into_iter().map(Ok)).boxed()
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint::Lsn(self.end)
    }

    fn unit(&self) -> &'static str {
        match self.reload {
            true => "copy",
            false => "transaction",
        }
    }
}
