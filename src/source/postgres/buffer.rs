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

use deltalake::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::types::{normalize, PgType};
use crate::config::ChangelogTable;
use crate::core::batch::BATCH_ROWS;
use crate::core::change::{ChangeBatch, ChangeOp, SourceOrder};
use crate::core::checkpoint::{Checkpoint, Committed, SlotPosition};
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
    /// Schema and table name in PostgreSQL (either may hold a `.`).
    pub source: (String, String),
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
        let source = match config.folder.split_once('/') {
            Some((schema, table)) => (schema.to_string(), table.to_string()),
            None => (String::new(), config.folder.clone()),
        };
        CaptureTable {
            config,
            types,
            key,
            input,
            source,
        }
    }

    /// `<schema>.<table>`.
    pub fn name(&self) -> &str {
        &self.config.table.name
    }
}

/// Rows whose values take fewer bytes of text than this are not remembered for unchanged
/// TOAST values: PostgreSQL stores values out of line only in rows over
/// `TOAST_TUPLE_THRESHOLD` (2,032 bytes on disk), and a row's text form is at most about four
/// times smaller than its binary form (`int[]` of one-digit numbers: two characters for four
/// bytes), so a row under 256 bytes of text holds no value that can come back unchanged.
const TOAST_WATCH_BYTES: usize = 256;

/// Memory one change of `text` bytes of values in `columns` columns takes through its run,
/// estimated: its text twice (gathered, then typed and in the merge's rows) plus 16 bytes a
/// column (offsets, validity, the typed copy) plus 300 bytes (source order, operation, day,
/// position, key and non-key hashes, the merge's row index and the writers' share). Measured
/// with `bench/capture_bench.sh` (A, A', A'': three columns, 41 bytes of text a change), peak
/// RSS grows by about 420 bytes per buffered change; this gives 430. The rest of the peak is
/// fixed: the process and the current table's files a run rewrites (about 320 MB there).
pub fn change_bytes(text: usize, columns: usize) -> u64 {
    (2 * text + 16 * columns + 300) as u64
}

/// Whether a table whose lake holds everything before `held` (None: nothing) holds the change
/// numbered `seq` (1-based) of the transaction committed at `commit_lsn`: the rule that makes
/// a change delivered again (after a crash, before the slot was confirmed) a no-op.
pub fn holds(held: Option<SlotPosition>, commit_lsn: u64, seq: u64) -> bool {
    held.is_some_and(|held| {
        SlotPosition {
            lsn: commit_lsn,
            seq,
        } < held
    })
}

/// The key of each row of typed `columns` (a table's key columns), as the values cast to text:
/// the one form in which keys read from the lake and from the buffer compare.
///
/// # Errors
/// Arrow errors casting to text (none expected for the lake's column types).
pub fn key_texts(columns: &[&ArrayRef]) -> Result<Vec<Values>> {
    let text = columns
        .iter()
        .map(|c| cast(c, &DataType::Utf8))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let rows = columns.first().map_or(0, |c| c.len());
    Ok((0..rows)
        .map(|row| {
            text.iter()
                .map(|c| {
                    c.is_valid(row)
                        .then(|| c.as_string::<i32>().value(row).to_string())
                })
                .collect()
        })
        .collect())
}

/// A row's values in configured column order: None is SQL NULL.
pub type Values = Vec<Option<String>>;

/// A 64-bit hash of `key` (values of key columns), NULL told apart from every text.
fn key_hash<'a>(key: impl IntoIterator<Item = &'a Option<String>>) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for value in key {
        match value {
            Some(text) => {
                hasher.update(&[1]);
                hasher.update(&(text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
            None => hasher.update(&[0]),
        }
    }
    hasher.digest()
}

/// The key of a row of `table` (`values` in configured column order, PostgreSQL's text) as
/// its typed key cast to text ([`key_texts`]): the form in which it compares with keys read
/// from the lake.
///
/// # Errors
/// A key value the table's types cannot hold.
pub fn typed_key(table: &Arc<CaptureTable>, values: &Values) -> Result<Values> {
    let mut one = TableChanges::new(table.clone(), false);
    one.push(ChangeOp::Insert, values.clone(), Vec::new(), 0, 1, 0)?;
    Ok(one.live_keys()?.pop().unwrap_or_default())
}

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
    /// Hashes of the keys with changes gathered ([`key_hash`]; tables with a key, not copies).
    touched: std::collections::HashSet<u64>,
    done: Vec<ChangeBatch>,
    /// Changes gathered.
    rows: u64,
    /// Memory the gathered changes take through their run, estimated ([`change_bytes`]).
    bytes: u64,
    /// The changes replace the table (an initial copy).
    reload: bool,
    /// The changes are a later part of a copy: inserts appended without reading the table.
    append: bool,
    /// History files of the parts of an earlier copy that stopped, replaced by this copy.
    history_removes: Vec<deltalake::kernel::Remove>,
    /// No changes: a run that records LSN 0/0, which says the table is to be copied again
    /// (`--resnapshot`).
    reset: bool,
    /// Position of the first change gathered.
    first: Option<SlotPosition>,
    /// The checkpoint: the first change the gathered ones do not reach (the end LSN of the
    /// last whole transaction gathered, the next change of one gathered in part, or a copy's
    /// consistent point).
    end: SlotPosition,
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
            touched: std::collections::HashSet::new(),
            done: Vec::new(),
            rows: 0,
            bytes: 0,
            reload,
            append: false,
            history_removes: Vec::new(),
            reset: false,
            first: None,
            end: SlotPosition::default(),
            transactions: 0,
            last_commit: None,
        }
    }

    /// A part of the initial copy of `table`: the first replaces the table, the later ones are
    /// appended. Every part but the last records LSN 0/0 (the table is still to be copied, so
    /// a copy that stops is redone from its start); the last records the copy's consistent
    /// point ([`reach`](Self::reach)).
    pub fn copy_part(table: Arc<CaptureTable>, first: bool) -> Self {
        let mut part = TableChanges::new(table, first);
        part.append = !first;
        part
    }

    /// The first part of a copy that starts over: it also removes `files` from history (the
    /// history rows of the parts of the copy that stopped).
    pub fn replacing_history(mut self, files: Vec<deltalake::kernel::Remove>) -> Self {
        self.history_removes = files;
        self
    }

    /// A run without changes that records LSN 0/0: the lake then says `table` is to be copied
    /// again, whatever happens to the slot (`--resnapshot`).
    pub fn reset(table: Arc<CaptureTable>) -> Self {
        let mut reset = TableChanges::new(table, false);
        reset.reset = true;
        reset
    }

    /// Fills the `unchanged` columns of `values` that the buffer knows for the key `key` (an
    /// update that moved a row to a new key keeps the old key's unchanged TOAST values); those
    /// filled leave `unchanged`.
    pub fn fill_from(&self, key: &Values, values: &mut Values, unchanged: &mut Vec<usize>) {
        if let Some(latest) = self.latest.get(key) {
            unchanged.retain(|&c| {
                let known = !latest.unknown.contains(&c);
                if known {
                    values[c] = latest.values[c].clone();
                }
                !known
            });
        }
    }

    /// Whether what the gathered changes do not say of key `key` (values of the key columns) is
    /// as the lake holds it: the key has no change gathered, or its changes are remembered
    /// (their unknown values, unchanged TOAST values, are those stored). False for a key whose
    /// changes were gathered but not remembered (a hash collision counts as gathered: the
    /// safe side).
    pub fn lake_holds(&self, key: &Values) -> bool {
        self.latest.contains_key(key) || !self.touched.contains(&key_hash(key))
    }

    /// The table.
    pub fn table(&self) -> &Arc<CaptureTable> {
        &self.table
    }

    /// Changes gathered.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Memory the gathered changes take through their run (buffered, then merged and
    /// written), estimated: the sum of [`change_bytes`].
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing is gathered (and no part of a copy is pending).
    pub fn is_empty(&self) -> bool {
        self.rows == 0 && !self.reload && !self.append
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
        }
        let position = SlotPosition {
            lsn: commit_lsn,
            seq,
        };
        self.first.get_or_insert(position);
        // a copy records its point only when it is whole (`reach`)
        if !self.reload && !self.append {
            self.end = self.end.max(SlotPosition {
                lsn: commit_lsn,
                seq: seq + 1,
            });
        }
        // A value can come back as unchanged only if it was stored out of line, which
        // PostgreSQL does only for a row over TOAST_TUPLE_THRESHOLD (about 2 kB): the values of
        // a smaller row (or a copy's) need not be remembered. A change that left values out is
        // remembered whatever its size.
        let text: usize = values.iter().flatten().map(String::len).sum();
        let remember = !unchanged.is_empty() || text >= TOAST_WATCH_BYTES;
        let tracked = !self.table.key.is_empty() && !self.reload && !self.append;
        if tracked {
            // hashed in place: no copy of the key for every change
            self.touched
                .insert(key_hash(self.table.key.iter().map(|&c| &values[c])));
        }
        if tracked && (remember || !self.latest.is_empty()) {
            let key: Values = self.table.key.iter().map(|&c| values[c].clone()).collect();
            match op {
                ChangeOp::Delete => {
                    self.latest.remove(&key);
                }
                _ if !remember => {
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
        self.bytes += change_bytes(text, values.len());
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
    /// `commit_lsn`, `seq`-th in it): `stored` are the keys the lake holds live (as their typed
    /// values cast to text, as [`live_keys`](Self::live_keys) gives them), and every key live in
    /// the buffer is deleted too. Returns the deletes added.
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
        keys.extend(self.live_keys()?);
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

    /// The keys whose last change in the buffer is not a delete, as their typed values cast to
    /// text.
    ///
    /// # Errors
    /// As [`push`](Self::push) (what is gathered as text is typed first).
    fn live_keys(&mut self) -> Result<Vec<Values>> {
        self.flush()?;
        let mut last: HashMap<Values, bool> = HashMap::new();
        for batch in &self.done {
            let columns: Vec<&ArrayRef> = self
                .table
                .key
                .iter()
                .map(|&c| batch.rows.payload.column(c))
                .collect();
            for (key, op) in key_texts(&columns)?.into_iter().zip(&batch.ops) {
                last.insert(key, *op != ChangeOp::Delete);
            }
        }
        Ok(last
            .into_iter()
            .filter(|(_, live)| *live)
            .map(|(k, _)| k)
            .collect())
    }

    /// Marks the end of the transaction ending at `end_lsn` (or of a copy at its consistent
    /// point): the checkpoint the gathered changes reach.
    pub fn reach(&mut self, end_lsn: u64) {
        self.end = self.end.max(SlotPosition::at(end_lsn));
    }

    /// The checkpoint the gathered changes reach.
    pub fn end(&self) -> SlotPosition {
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
        if self.reset {
            return Ok(match committed.position {
                Some(SlotPosition { lsn: 0, seq: 0 }) | None => Pending::default(),
                Some(_) => Pending {
                    units: 1,
                    ..Default::default()
                },
            });
        }
        let units = self
            .transactions
            .max(usize::from(self.reload || self.append));
        match (committed.position, self.reload) {
            (Some(held), _) if held >= self.end && self.end > SlotPosition::default() => {
                Ok(Pending::default())
            }
            (Some(held), false) if self.first.is_some_and(|first| held > first) => {
                Err(Error::Lake {
                    table: self.table.name().to_string(),
                    reason: format!(
                        "the lake holds changes up to {} but this capture read from {}: \
                         another capture process writes this table (run one per lake and slot)",
                        held.text(),
                        self.first.unwrap_or_default().text()
                    ),
                })
            }
            _ => Ok(Pending {
                reload: self.reload,
                append: self.append,
                units,
                skipped: 0,
                replaced: 0,
                loads_only: false,
                bytes: 0,
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

    fn history_removes(&self) -> Vec<deltalake::kernel::Remove> {
        self.history_removes.clone()
    }

    fn unit(&self) -> &'static str {
        match (self.reload || self.append, self.reset) {
            (true, _) => "copy",
            (false, true) => "reset",
            (false, false) => "transaction",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tables::Layout;
    use crate::core::schema::ColumnType;
    use deltalake::arrow::array::{Array, AsArray};

    /// A table `public.t (id long key, v string, note string)`.
    fn table() -> Arc<CaptureTable> {
        let config = crate::source::changelog::tests::test_config(
            "public/t",
            Layout::Debezium,
            &[("id", "long"), ("v", "string"), ("note", "string")],
        );
        let types = [ColumnType::Long, ColumnType::String, ColumnType::String]
            .map(|lake| PgType {
                lake,
                with_zone: false,
            })
            .to_vec();
        Arc::new(CaptureTable::new(config, types))
    }

    fn row(id: i64, v: &str, note: Option<&str>) -> Values {
        vec![
            Some(id.to_string()),
            Some(v.to_string()),
            note.map(str::to_string),
        ]
    }

    fn notes(batch: &ChangeBatch) -> Vec<Option<String>> {
        let column = batch.rows.payload.column(2).as_string::<i32>();
        (0..column.len())
            .map(|i| column.is_valid(i).then(|| column.value(i).to_string()))
            .collect()
    }

    #[test]
    fn the_lake_holds_what_the_run_does_not_say_of_untouched_or_remembered_keys() {
        let key = |id: i64| vec![Some(id.to_string())];
        let mut buffer = TableChanges::new(table(), false);
        // key 1: a small row, not remembered: what the run lacks of it is not the lake's
        buffer
            .push(
                ChangeOp::Insert,
                row(1, "a", Some("short")),
                vec![],
                100,
                1,
                0,
            )
            .unwrap();
        // key 2: only updates leaving the note unchanged: remembered, the note the lake's
        buffer
            .push(ChangeOp::Update, row(2, "c", None), vec![2], 200, 1, 0)
            .unwrap();
        assert!(!buffer.lake_holds(&key(1)));
        assert!(buffer.lake_holds(&key(2)));
        assert!(buffer.lake_holds(&key(3)));
        assert!(buffer.lake_holds(&vec![None]));
        // a NULL key and the text "" hash apart
        assert_ne!(key_hash(&vec![None]), key_hash(&vec![Some(String::new())]));
        // a copy tracks no key
        let mut copy = TableChanges::copy_part(table(), true);
        copy.push(ChangeOp::Insert, row(4, "a", None), vec![], 0, 1, 0)
            .unwrap();
        assert!(copy.lake_holds(&key(4)));
    }

    #[test]
    fn an_unchanged_value_comes_from_an_earlier_change_of_the_key_or_the_lake() {
        let big = "b".repeat(300);
        let new = "n".repeat(300);
        let mut buffer = TableChanges::new(table(), false);
        // key 1: inserted in this run, then updated without its TOASTed note
        buffer
            .push(ChangeOp::Insert, row(1, "a", Some(&big)), vec![], 100, 1, 0)
            .unwrap();
        buffer
            .push(ChangeOp::Update, row(1, "b", None), vec![2], 200, 1, 0)
            .unwrap();
        // key 2: only updates without the note: the stored one is kept, twice
        buffer
            .push(ChangeOp::Update, row(2, "c", None), vec![2], 200, 2, 0)
            .unwrap();
        buffer
            .push(ChangeOp::Update, row(2, "d", None), vec![2], 300, 1, 0)
            .unwrap();
        // key 3: the note is set again, then left unchanged: the new value
        buffer
            .push(ChangeOp::Update, row(3, "e", Some(&new)), vec![], 300, 2, 0)
            .unwrap();
        buffer
            .push(ChangeOp::Update, row(3, "f", None), vec![2], 400, 1, 0)
            .unwrap();
        // key 4: small rows are not remembered (no value of theirs can come back unchanged)
        buffer
            .push(
                ChangeOp::Insert,
                row(4, "g", Some("small")),
                vec![],
                400,
                2,
                0,
            )
            .unwrap();
        assert!(!buffer.latest.contains_key(&vec![Some("4".to_string())]));
        buffer.reach(450);
        buffer.finish().unwrap();
        let batch = &buffer.done[0];
        assert_eq!(
            notes(batch),
            vec![
                Some(big.clone()),
                Some(big),
                None,
                None,
                Some(new.clone()),
                Some(new),
                Some("small".into())
            ]
        );
        let mut keep: Vec<(usize, Vec<usize>)> = batch.keep_stored.clone().into_iter().collect();
        keep.sort();
        assert_eq!(keep, vec![(2, vec![2]), (3, vec![2])]);
        assert_eq!(buffer.transactions(), 4);
        assert_eq!(buffer.checkpoint(), Checkpoint::Lsn(SlotPosition::at(450)));
        // source order: commit LSN, then the change's place in its transaction
        assert_eq!(
            batch.order[1],
            SourceOrder {
                position: 200,
                file: 0,
                row: 1
            }
        );
        assert_eq!(batch.positions[5], Some(400));
    }

    #[test]
    fn a_truncate_deletes_each_live_key_once() {
        let mut buffer = TableChanges::new(table(), false);
        buffer
            .push(ChangeOp::Insert, row(1, "a", None), vec![], 100, 1, 0)
            .unwrap();
        buffer
            .push(ChangeOp::Insert, row(2, "b", None), vec![], 100, 2, 0)
            .unwrap();
        buffer
            .push(ChangeOp::Delete, row(2, "b", None), vec![], 100, 3, 0)
            .unwrap();
        let stored = vec![vec![Some("1".to_string())], vec![Some("3".to_string())]];
        let deleted = buffer.truncate(stored, 100, 4, 0).unwrap();
        // key 1 (stored and in the run) and key 3 (stored); key 2 is in the run's deletes
        assert_eq!(deleted, 2);
        buffer.finish().unwrap();
        // the three changes before the TRUNCATE, then its deletes
        let batch = &buffer.done[1];
        assert_eq!(buffer.done[0].len(), 3);
        assert_eq!(batch.ops, [ChangeOp::Delete, ChangeOp::Delete]);
        let ids = batch
            .rows
            .payload
            .column(0)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        assert_eq!((ids.value(0), ids.value(1)), (1, 3));
        assert!(batch.order.iter().all(|o| o.row == 4));
    }

    #[test]
    fn the_plan_skips_what_the_lake_holds_and_refuses_a_partial_overlap() {
        let mut buffer = TableChanges::new(table(), false);
        buffer
            .push(ChangeOp::Insert, row(1, "a", None), vec![], 100, 1, 0)
            .unwrap();
        buffer
            .push(ChangeOp::Insert, row(2, "b", None), vec![], 200, 1, 0)
            .unwrap();
        buffer.reach(250);
        let committed = |lsn: Option<u64>| Committed {
            position: lsn.map(SlotPosition::at),
            ..Default::default()
        };
        assert_eq!(buffer.plan(&committed(None)).unwrap().units, 2);
        assert_eq!(buffer.plan(&committed(Some(100))).unwrap().units, 2);
        assert!(buffer.plan(&committed(Some(250))).unwrap().is_empty());
        let err = buffer.plan(&committed(Some(150))).unwrap_err().to_string();
        assert!(err.contains("another capture process"), "{err}");
        // a copy: one unit, a reload
        let mut copy = TableChanges::new(table(), true);
        copy.reach(300);
        let pending = copy.plan(&committed(None)).unwrap();
        assert!(pending.reload && pending.units == 1);
    }

    #[test]
    fn a_value_the_type_cannot_hold_names_the_table_and_column() {
        let mut buffer = TableChanges::new(table(), false);
        buffer
            .push(
                ChangeOp::Insert,
                vec![Some("x".into()), None, None],
                vec![],
                100,
                1,
                0,
            )
            .unwrap();
        let err = buffer.finish().unwrap_err().to_string();
        assert!(
            err.contains("postgres:public.t") && err.contains("`id`"),
            "{err}"
        );
    }
}
