//! Extracts: full or delta extract files (CSV, Parquet) read into typed, hashed Arrow batches
//! for a snapshot run.
//!
//! Every row is cast to its configured type and hashed once, on arrival (the seed article's
//! stage 1). Bad rows either fail the read with file, line and column named, or, with
//! `on_error: reject`, are set aside as [`Reject`]s; none is dropped silently.

pub(crate) mod csv;
pub(crate) mod files;
pub(crate) mod parquet;
pub mod remote;
pub(crate) mod strict;

use std::time::Duration;

use deltalake::arrow::array::RecordBatch;

pub use files::{
    fingerprint, list_input_files, InputFile, InputListing, PendingFingerprint, SkippedFile,
};

use crate::config::{InputFormat, OnError, TableConfig};
use crate::core::batch::{HashedBatch, Reject};
use crate::error::{Error, Result};
use crate::report::progress::Progress;

/// A reader's error with the file it was reading named: a file the CSV or Parquet reader
/// cannot read (a truncated or empty Parquet file: "corrupt footer") is bad input
/// ([`Error::Input`], exit 4). Row errors name their file already; errors of the sink (a full
/// spill disk, a duplicate key) are the sink's own: I/O and Arrow errors are not renamed.
fn name_the_file(err: Error, file: &InputFile) -> Error {
    match err {
        Error::Parquet(_) | Error::Csv(_) => Error::Input {
            path: file.path.clone(),
            reason: err.to_string(),
        },
        other => other,
    }
}

/// Estimated rows of a run's input when every file is CSV (sampled, see `csv::estimate_rows`);
/// None when some file is Parquet: its row groups reach the sink out of order, so the run
/// cannot be streamed past an in-memory index (`probe`) anyway.
///
/// # Errors
/// [`Error::Input`] when a file cannot be read.
pub fn estimate_csv_rows(files: &[InputFile]) -> Result<Option<u64>> {
    let mut rows = 0u64;
    for file in files {
        match file.format {
            InputFormat::Csv => rows += csv::estimate_rows(&file.path, file.size)?,
            InputFormat::Parquet => return Ok(None),
        }
    }
    Ok(Some(rows))
}

/// Share of a run's `memory_limit` for what its reader holds in flight: CSV chunks split,
/// parsed or waiting to be handed over in file order, or the Parquet batches being decoded.
/// Out of the part of the limit the memory plan leaves uncounted (`snapshot::plan`), so the
/// reader's threads are bounded by it rather than growing its memory with the core count.
pub const READ_SHARE: f64 = 0.1;

/// What a reader may use: threads, and bytes of batches in flight ([`READ_SHARE`] of a limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBudget {
    /// Most worker threads (the `threads` setting).
    pub threads: usize,
    /// Bytes of chunks or batches in flight.
    pub bytes: u64,
}

impl ReadBudget {
    /// The budget of a run with `limit` bytes of memory, on the process's `threads`.
    pub fn of_limit(limit: u64) -> Self {
        ReadBudget {
            threads: crate::core::threads::get(),
            bytes: (limit as f64 * READ_SHARE) as u64,
        }
    }

    /// How many pieces of `slot_bytes` each fit (at least `least`).
    pub(crate) fn slots(&self, slot_bytes: u64, least: usize) -> usize {
        usize::try_from(self.bytes / slot_bytes.max(1))
            .unwrap_or(usize::MAX)
            .max(least)
    }
}

/// What reading one run's input produced besides its batches.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Rows read, rejected ones included.
    pub rows_read: u64,
    /// Bad rows set aside under `on_error: reject`, in file and line order.
    pub rejects: Vec<Reject>,
}

/// Collects bad rows: the first one fails the read under `on_error: fail`.
pub(crate) struct RowErrors {
    policy: OnError,
    pub(crate) rejects: Vec<Reject>,
}

impl RowErrors {
    pub(crate) fn new(policy: OnError) -> Self {
        RowErrors {
            policy,
            rejects: Vec::new(),
        }
    }

    /// Records a bad row. `raw` is only called when the row is kept as a reject.
    pub(crate) fn push(&mut self, err: Error, raw: impl FnOnce() -> String) -> Result<()> {
        match self.policy {
            OnError::Fail => Err(err),
            OnError::Reject => {
                self.rejects.push(Reject::from_error(err, raw())?);
                Ok(())
            }
        }
    }
}

/// Reads every input file into typed, hashed batches, handing each to `sink` as it is ready:
/// CSV files in file order, Parquet files in any order of their row groups (each row carries
/// its line).
///
/// # Errors
/// [`Error::BadRow`] for the first bad row under `on_error: fail`; [`Error::Input`] for files
/// that cannot be opened or have the wrong header/columns; I/O, CSV and Parquet errors; any
/// error of `sink`.
pub fn read(
    config: &TableConfig,
    files: &[InputFile],
    progress: &Progress,
    sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut errors = RowErrors::new(config.source.on_error);
    let budget = ReadBudget::of_limit(config.snapshot.memory_limit);
    for (index, file) in files.iter().enumerate() {
        let read = match file.format {
            InputFormat::Csv => csv::read,
            InputFormat::Parquet => parquet::read,
        };
        let (table, source) = (&config.table, &config.source);
        stats.rows_read += read(
            table,
            source,
            file,
            index,
            budget,
            &mut errors,
            progress,
            sink,
        )
        .map_err(|e| name_the_file(e, file))?;
    }
    stats.rejects = errors.rejects;
    stats
        .rejects
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(stats)
}

/// What a reader's worker thread returns: its rejects, and the line and error that stopped it.
pub(crate) type WorkerResult = (RowErrors, Option<(u64, Error)>);

/// Hands every batch received to `sink` on the calling thread; after a sink error, sets `stop`
/// (so the workers take no more work) and only drains the channel until the workers are done.
pub(crate) fn drain_into(
    batches: std::sync::mpsc::Receiver<HashedBatch>,
    sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let mut result = Ok(());
    for batch in batches {
        if result.is_ok() {
            result = sink(batch);
            if result.is_err() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    result
}

/// How far a reader may split chunks ahead of the batches handed to its sink: chunk `seq` is
/// split only once fewer than `size` chunks lie between it and the next one to hand over, so
/// the batches waiting for a slow earlier one stay bounded.
pub(crate) struct Window {
    next: std::sync::Mutex<u64>,
    advanced: std::sync::Condvar,
    size: u64,
}

impl Window {
    pub(crate) fn new(size: u64) -> Self {
        Window {
            next: std::sync::Mutex::new(0),
            advanced: std::sync::Condvar::new(),
            size: size.max(1),
        }
    }

    /// Blocks until chunk `seq` is in the window or `stop` is set (checked every 10 ms: the
    /// workers that set it on failure do not signal).
    pub(crate) fn wait_for(&self, seq: u64, stop: &std::sync::atomic::AtomicBool) {
        let Ok(mut next) = self.next.lock() else {
            return;
        };
        while seq >= *next + self.size && !stop.load(std::sync::atomic::Ordering::SeqCst) {
            next = match self.advanced.wait_timeout(next, Duration::from_millis(10)) {
                Ok((next, _)) => next,
                Err(_) => return,
            };
        }
    }

    fn advance(&self, to: u64) {
        if let Ok(mut next) = self.next.lock() {
            *next = to;
        }
        self.advanced.notify_all();
    }
}

/// Sets a reader's `stop` flag when dropped by a thread unwinding from a panic, so that the
/// reader's other threads end (its splitter would otherwise wait for the window for ever).
pub(crate) struct StopOnPanic<'a>(pub(crate) &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// As [`drain_into`], for batches numbered in file order (a reader's chunks, each giving a batch
/// or none): they are handed to `sink` in that order, and `window` follows the next number to
/// hand over. Batches after a missing number (its worker failed, and the read with it) are
/// never handed over.
pub(crate) fn drain_in_order(
    batches: std::sync::mpsc::Receiver<(u64, Option<HashedBatch>)>,
    sink: &mut dyn FnMut(HashedBatch) -> Result<()>,
    stop: &std::sync::atomic::AtomicBool,
    window: &Window,
) -> Result<()> {
    let _stop_on_panic = StopOnPanic(stop);
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = 0u64;
    let mut result = Ok(());
    for (seq, batch) in batches {
        if result.is_err() {
            continue;
        }
        waiting.insert(seq, batch);
        while let Some(batch) = waiting.remove(&next) {
            next += 1;
            if let Some(batch) = batch {
                result = sink(batch);
                if result.is_err() {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    break;
                }
            }
        }
        window.advance(next);
    }
    result
}

/// The outcome of reading one file, from its workers' (`read`) and its sink's (`sunk`): when
/// both failed on a bad row, the one on the earlier line (a worker's unparsable value or the
/// sink's duplicate key), otherwise the workers' error first (a bad row the workers found is
/// reported over a sink's other error, a table writer's say).
pub(crate) fn first_bad_row(read: Result<()>, sunk: Result<()>) -> Result<()> {
    match (read, sunk) {
        (Err(read @ Error::BadRow { line: at, .. }), Err(sunk @ Error::BadRow { line, .. })) => {
            Err(if line < at { sunk } else { read })
        }
        (Err(read), _) => Err(read),
        (Ok(()), sunk) => sunk,
    }
}

/// Joins a reader's worker threads: their rejects go to `errors`, and the error of the earliest
/// line among those that stopped a worker is returned (the file's first bad row).
pub(crate) fn join_workers(
    handles: Vec<std::thread::ScopedJoinHandle<'_, WorkerResult>>,
    errors: &mut RowErrors,
    reader: &str,
) -> Result<()> {
    let mut first_error: Option<(u64, Error)> = None;
    for handle in handles {
        let (local, failed) = handle
            .join()
            .map_err(|_| Error::Internal(format!("{reader} reader thread panicked")))?;
        errors.rejects.extend(local.rejects);
        if let Some((line, e)) = failed {
            if first_error.as_ref().is_none_or(|(l, _)| line < *l) {
                first_error = Some((line, e));
            }
        }
    }
    first_error.map_or(Ok(()), |(_, e)| Err(e))
}

/// Drops the rows whose `keep` flag is false from a batch and its line numbers.
pub(crate) fn drop_rows(
    batch: &RecordBatch,
    lines: Vec<u64>,
    keep: Vec<bool>,
) -> Result<(RecordBatch, Vec<u64>)> {
    let mask = deltalake::arrow::array::BooleanArray::from(keep.clone());
    let batch = deltalake::arrow::compute::filter_record_batch(batch, &mask)?;
    let lines = lines
        .into_iter()
        .zip(keep)
        .filter_map(|(l, k)| k.then_some(l))
        .collect();
    Ok((batch, lines))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use deltalake::arrow::array::Int64Array;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use deltalake::arrow::array::BinaryArray;

    use super::*;

    fn batch(first_line: u64) -> HashedBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let payload =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        HashedBatch {
            payload,
            keyhash: BinaryArray::from_iter_values([[0u8; 16]]),
            nonkeyhash: BinaryArray::from_iter_values([[0u8; 16]]),
            file: 0,
            lines: vec![first_line],
        }
    }

    #[test]
    fn numbered_batches_reach_the_sink_in_order_and_none_past_a_gap() {
        let (tx, rx) = std::sync::mpsc::channel();
        // Chunk 2 gave no batch; chunk 6 never came (its worker failed).
        for (seq, line) in [(3, 30), (1, 10), (0, 0), (4, 40), (7, 70), (5, 50)] {
            tx.send((seq, Some(batch(line)))).unwrap();
        }
        tx.send((2, None)).unwrap();
        drop(tx);
        let mut seen = Vec::new();
        let stop = AtomicBool::new(false);
        let mut sink = |b: HashedBatch| {
            seen.push(b.lines[0]);
            Ok(())
        };
        let window = Window::new(4);
        drain_in_order(rx, &mut sink, &stop, &window).unwrap();
        assert_eq!(seen, vec![0, 10, 30, 40, 50]);
        // Chunks 0 to 5 were handed over (or gave nothing): 6 to 9 may be split.
        assert_eq!(*window.next.lock().unwrap(), 6);
        assert!(!stop.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn a_failing_sink_stops_the_workers_and_takes_no_more() {
        let (tx, rx) = std::sync::mpsc::channel();
        for seq in [1, 0, 2] {
            tx.send((seq, Some(batch(seq)))).unwrap();
        }
        drop(tx);
        let (mut calls, stop) = (0, AtomicBool::new(false));
        let result = drain_in_order(
            rx,
            &mut |_| {
                calls += 1;
                Err(Error::Internal("sink".into()))
            },
            &stop,
            &Window::new(4),
        );
        assert!(result.is_err() && calls == 1);
        assert!(stop.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn a_panicking_sink_stops_the_reader() {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send((0, Some(batch(1)))).unwrap();
        drop(tx);
        let stop = AtomicBool::new(false);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drain_in_order(rx, &mut |_| panic!("sink"), &stop, &Window::new(2))
        }));
        assert!(panicked.is_err());
        assert!(stop.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn the_splitter_waits_for_the_window_or_a_stop() {
        let window = Window::new(2);
        let stop = AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let (window, stop) = (&window, &stop);
            scope.spawn(move || {
                for seq in 0..5 {
                    window.wait_for(seq, stop);
                    tx.send(seq).unwrap();
                }
            });
            // Chunks 0 and 1 are in the window; 2 waits until chunk 0 is handed over.
            let wait = Duration::from_millis(200);
            assert_eq!((rx.recv().unwrap(), rx.recv().unwrap()), (0, 1));
            assert!(rx.recv_timeout(wait).is_err(), "split past the window");
            window.advance(1);
            assert_eq!(rx.recv().unwrap(), 2);
            assert!(rx.recv_timeout(wait).is_err(), "split past the window");
            // A failed read stops waiting without the window moving.
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!((rx.recv().unwrap(), rx.recv().unwrap()), (3, 4));
        });
    }

    #[test]
    fn a_sink_error_on_an_earlier_row_than_the_workers_is_reported() {
        let bad = |line| Error::bad_row("f.csv", line, None, "bad");
        let line = |r: Result<()>| match r {
            Err(Error::BadRow { line, .. }) => line,
            other => panic!("{other:?}"),
        };
        assert_eq!(line(first_bad_row(Err(bad(9)), Err(bad(2)))), 2);
        assert_eq!(line(first_bad_row(Err(bad(2)), Err(bad(9)))), 2);
        assert_eq!(line(first_bad_row(Ok(()), Err(bad(9)))), 9);
        assert_eq!(line(first_bad_row(Err(bad(4)), Ok(()))), 4);
        let io = Error::Internal("writer".into());
        assert_eq!(line(first_bad_row(Err(bad(4)), Err(io))), 4);
        assert!(first_bad_row(Ok(()), Ok(())).is_ok());
    }

    #[test]
    fn csv_rows_are_estimated_from_the_first_mib() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            InputFile {
                path,
                size: text.len() as u64,
                format: InputFormat::Csv,
                modified_ms: 0,
                file_id: None,
            }
        };
        // 3 MiB of 64-byte lines: 49,152 lines, estimated from the first MiB alone.
        let line = format!("{}\n", "x".repeat(63));
        let big = file("big.csv", &line.repeat(3 << 14));
        let one = file("one.csv", "no line break");
        let empty = file("empty.csv", "");
        assert_eq!(estimate_csv_rows(&[big]).unwrap(), Some(3 << 14));
        let both = [file("a.csv", "1\n2\n3\n"), file("b.csv", "1,2\n")];
        assert_eq!(estimate_csv_rows(&both).unwrap(), Some(4));
        assert_eq!(estimate_csv_rows(&[one, empty]).unwrap(), Some(1));
        let parquet = InputFile {
            format: InputFormat::Parquet,
            ..file("c.parquet", "PAR1")
        };
        assert_eq!(estimate_csv_rows(&[parquet]).unwrap(), None);
    }
}
