//! `tributary sync`: loads a landing zone of change files into lake tables.
//!
//! For each `<schema>/<table>` folder that is active in the tables file (see `tables`), the
//! controller lists the change files, subtracts those the table's applied-files table already
//! records (by name; `LOAD` files by name and modification time), reads the rest in source order
//! and applies them in one run (see `apply`). A `LOAD` file that was not applied (a new or
//! reloaded full load) replaces the current table. On a reload (a table that had applied a full
//! load before), change files not yet applied whose modification time is older than the new
//! load are recorded as superseded instead of applied: the load already holds their effect. A
//! first load applies every change file after it.
//!
//! Tables run in parallel, at most `jobs` at a time. A failing table does not stop the others;
//! its error is in its summary and [`SyncSummary::failed`] counts it. Re-running is always safe:
//! applied files are never applied again, and an interrupted run is completed first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::apply::{apply, ApplyRequest, ApplySummary};
use crate::change::ChangeBatch;
use crate::config::ColumnFile;
use crate::error::{Error, Result};
use crate::lake::applied::{self, AppliedFile};
use crate::lake::Lake;
use crate::source::changes::{self, ChangeFile, FileKind};
use crate::tables::{discover, Layout, TableEntry, TablesFile};

/// Flags of `tributary sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub landing: PathBuf,
    pub lake: PathBuf,
    pub tables_file: PathBuf,
    /// Tables loaded at the same time (at least 1).
    pub jobs: usize,
    /// Business date of the run: `eff_start_date` of changes without a commit time.
    pub run_date: NaiveDate,
    /// Draw a progress line per table on the terminal.
    pub progress: bool,
}

/// What happened to one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableSync {
    pub table: String,
    /// `applied`, `up-to-date` or `failed`.
    pub status: String,
    pub message: String,
    /// Files applied (or recorded as superseded) by this run.
    pub files: usize,
    pub reload: bool,
    /// Seconds spent reading (parsing, casting, hashing) the files.
    pub read_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply: Option<ApplySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one `sync` pass did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncSummary {
    pub tables: Vec<TableSync>,
    /// Landing folders not active in the tables file: set `active: true` to load them.
    pub inactive: Vec<String>,
    /// Active tables whose landing folder does not exist.
    pub missing: Vec<String>,
    pub failed: usize,
    pub elapsed_secs: f64,
}

/// Runs one sync pass over the landing zone.
///
/// # Errors
/// Only errors that concern the whole pass: an unreadable landing root or tables file. Errors
/// of one table are reported in its [`TableSync`].
pub async fn sync(options: &SyncOptions) -> Result<SyncSummary> {
    let started = Instant::now();
    let tables = TablesFile::load(&options.tables_file)?;
    let found = discover(&options.landing)?;
    let inactive: Vec<String> = found
        .iter()
        .filter(|s| !tables.find(s).is_some_and(|e| e.active))
        .cloned()
        .collect();
    let active: Vec<(usize, TableEntry)> = tables
        .tables
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, e)| e.active)
        .collect();
    let missing: Vec<String> = active
        .iter()
        .filter(|(_, e)| {
            !found
                .iter()
                .any(|f| tables.find(f).is_some_and(|x| x.name() == e.name()))
        })
        .map(|(_, e)| e.source.clone())
        .collect();
    for name in &inactive {
        tracing::info!(table = %name, "landing folder is not active in the tables file; skipped");
    }
    let bars = MultiProgress::with_draw_target(if options.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{spinner} {prefix:<28} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let runnable: Vec<(usize, TableEntry)> = active
        .into_iter()
        .filter(|(_, e)| !missing.contains(&e.source))
        .collect();
    let shared = Arc::new(options.clone());
    let mut results: Vec<TableSync> = futures::stream::iter(runnable)
        .map(|(index, entry)| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(entry.name());
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            let options = shared.clone();
            async move {
                // Each table on its own task: the CPU-bound steps of one table do not hold up
                // the others.
                let task = {
                    let (entry, bar) = (entry.clone(), bar.clone());
                    tokio::spawn(async move { sync_table(&options, index, &entry, &bar).await })
                };
                let outcome = task
                    .await
                    .unwrap_or_else(|e| Err(Error::Internal(format!("table task failed: {e}"))));
                let result = match outcome {
                    Ok(done) => done,
                    Err(e) => TableSync {
                        table: entry.name(),
                        status: "failed".into(),
                        message: e.to_string(),
                        files: 0,
                        reload: false,
                        read_secs: 0.0,
                        apply: None,
                        error: Some(e.to_string()),
                    },
                };
                bar.finish_with_message(format!("{}: {}", result.status, result.message));
                result
            }
        })
        .buffer_unordered(options.jobs.max(1))
        .collect()
        .await;
    results.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(SyncSummary {
        failed: results.iter().filter(|r| r.status == "failed").count(),
        tables: results,
        inactive,
        missing,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// The files a table still has to take, and whether they start with a full load.
#[derive(Debug, Default)]
struct Pending {
    reload: bool,
    /// Files to read, in source order.
    read: Vec<ChangeFile>,
    /// Change files older than the reload: recorded, not applied.
    superseded: Vec<ChangeFile>,
}

fn pending(files: Vec<ChangeFile>, done: &applied::AppliedSet) -> Pending {
    for f in &files {
        if let Some(&size) = done.change_sizes.get(&f.name) {
            if size != f.size as i64 {
                tracing::warn!(file = %f.path.display(), applied_bytes = size, now_bytes = f.size,
                    "a change file changed size after it was applied; its new rows are not applied \
                     (land files atomically: write, then rename)");
            }
        }
    }
    let (loads, changes): (Vec<ChangeFile>, Vec<ChangeFile>) =
        files.into_iter().partition(|f| f.kind == FileKind::Load);
    let is_new = |f: &ChangeFile| !done.loads.contains(&(f.name.clone(), f.modified_ms));
    let Some(load_time) = loads
        .iter()
        .filter(|f| is_new(f))
        .map(|f| f.modified_ms)
        .min()
    else {
        return Pending {
            reload: false,
            read: changes
                .into_iter()
                .filter(|f| !done.changes.contains(&f.name))
                .collect(),
            superseded: Vec::new(),
        };
    };
    // A full load: the LOAD files written with or after the first new one (older LOAD files
    // left from an earlier load are not part of it), then the change files from its time on,
    // applied before or not (the table is replaced, so their effect must be redone).
    let mut out = Pending {
        reload: true,
        read: loads
            .into_iter()
            .filter(|f| f.modified_ms >= load_time)
            .collect(),
        superseded: Vec::new(),
    };
    for f in changes {
        let applied = done.changes.contains(&f.name);
        if f.modified_ms >= load_time {
            out.read.push(f);
        } else if applied {
            // already applied, and older than the load: the load holds its effect
        } else if done.has_load() {
            // A reload: an older change file is in the new load already; applied after it,
            // it would bring back old values.
            out.superseded.push(f);
        } else {
            // A first load takes every change file after it.
            out.read.push(f);
        }
    }
    out
}

fn applied_record(file: &ChangeFile, kind: &'static str, rows: u64) -> AppliedFile {
    AppliedFile {
        file: file.name.clone(),
        kind,
        size_bytes: file.size as i64,
        modified_ms: file.modified_ms,
        rows: rows as i64,
    }
}

async fn sync_table(
    options: &SyncOptions,
    index: usize,
    entry: &TableEntry,
    bar: &ProgressBar,
) -> Result<TableSync> {
    let config = entry.table_config(index, &options.lake)?;
    let folder = options.landing.join(&entry.source);
    bar.set_message("listing files");
    let files = changes::list(&folder, entry.layout)?;
    let existing = Lake::open(&config, false).await?;
    let done = match &existing {
        Some((lake, _)) => applied::read(lake.applied_table().await?.as_ref()).await?,
        None => applied::AppliedSet::default(),
    };
    let todo = pending(files, &done);
    let mut result = TableSync {
        table: entry.name(),
        status: "up-to-date".into(),
        message: "no new files".into(),
        files: 0,
        reload: todo.reload,
        read_secs: 0.0,
        apply: None,
        error: None,
    };
    if todo.read.is_empty() && todo.superseded.is_empty() {
        return Ok(result);
    }
    let total = todo.read.len();
    bar.set_message(format!("reading {total} files"));
    let run_days = crate::run::epoch_days(options.run_date);
    let reading = Instant::now();
    let (batches, records) = {
        let (config, entry, bar) = (config.clone(), entry.clone(), bar.clone());
        let read = todo.read;
        tokio::task::spawn_blocking(move || -> Result<(Vec<ChangeBatch>, Vec<AppliedFile>)> {
            let mut batches = Vec::new();
            let mut records = Vec::new();
            for (i, file) in read.iter().enumerate() {
                bar.set_message(format!("reading {}/{total}: {}", i + 1, file.name));
                let got = changes::read(&config, &entry, file, i, run_days)?;
                let rows: u64 = got.iter().map(|b| b.len() as u64).sum();
                let kind = match file.kind {
                    FileKind::Load => applied::LOAD,
                    FileKind::Change => applied::CHANGE,
                };
                records.push(applied_record(file, kind, rows));
                batches.extend(got);
            }
            Ok((batches, records))
        })
        .await
        .map_err(|e| Error::Internal(format!("reader task failed: {e}")))??
    };
    result.read_secs = reading.elapsed().as_secs_f64();
    let mut records = records;
    records.extend(
        todo.superseded
            .iter()
            .map(|f| applied_record(f, applied::SUPERSEDED, 0)),
    );
    bar.set_message(format!(
        "applying {} changes",
        batches.iter().map(|b| b.len()).sum::<usize>()
    ));
    let created = match &existing {
        Some(_) => Vec::new(),
        None => crate::lake::missing_tables(&config),
    };
    let mut lake = match existing {
        Some((lake, _)) => lake,
        None => {
            Lake::open(&config, true)
                .await?
                .ok_or_else(|| Error::Internal("tables not created".into()))?
                .0
        }
    };
    let fingerprint = fingerprint(&records);
    let files = records.len();
    let summary = apply(
        &mut lake,
        ApplyRequest {
            config: &config,
            delete_mode: entry.delete_mode,
            insert_only: entry.insert_only(),
            changes: batches,
            reload: todo.reload,
            applied: records,
            run_date: options.run_date,
            fingerprint,
        },
    )
    .await
    .inspect_err(|_| crate::lake::remove_tables(&created))?;
    result.status = "applied".into();
    result.files = files;
    result.message = format!(
        "run {}: {} files, {} changes: {} inserted, {} updated, {} deleted{}{}; {} of {} files rewritten",
        summary.run_seq,
        files,
        summary.changes_read,
        summary.inserted,
        summary.updated,
        summary.deleted,
        if summary.ignored_deletes > 0 {
            format!(", {} deletes of unknown keys ignored", summary.ignored_deletes)
        } else {
            String::new()
        },
        if entry.insert_only() {
            format!(
                " (no primary key: inserts only, {} updates/deletes skipped)",
                summary.skipped_without_key
            )
        } else {
            String::new()
        },
        summary.files_rewritten,
        summary.current_files,
    );
    if todo.reload {
        result.message.push_str(" (full load: table replaced)");
    }
    result.apply = Some(summary);
    Ok(result)
}

/// A digest of the applied file list (names, sizes, times), for the run record.
fn fingerprint(records: &[AppliedFile]) -> String {
    let mut bytes = Vec::new();
    for r in records {
        for part in [
            r.file.as_bytes(),
            &r.size_bytes.to_le_bytes(),
            &r.modified_ms.to_le_bytes(),
        ] {
            bytes.extend_from_slice(&(part.len() as u32).to_le_bytes());
            bytes.extend_from_slice(part);
        }
    }
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
}

/// Adds the landing folders the tables file does not list yet, as inactive entries (columns
/// taken from a Parquet file when there is one), and applies `activate`/`deactivate`
/// (`<schema>/<table>` names). Returns the updated file and the sources it added.
///
/// # Errors
/// [`Error::Usage`] for an activate/deactivate name that is not listed; listing and Parquet
/// errors.
pub fn refresh_tables(
    landing: &Path,
    mut file: TablesFile,
    activate: &[String],
    deactivate: &[String],
) -> Result<(TablesFile, Vec<String>)> {
    let mut added = Vec::new();
    for source in discover(landing)? {
        if file.find(&source).is_some() {
            continue;
        }
        let folder = landing.join(&source);
        let layout = changes::guess_layout(&folder);
        let columns = infer_columns(&folder, layout).unwrap_or_default();
        file.tables
            .push(TableEntry::discovered(source.clone(), columns, layout));
        added.push(source);
    }
    for (names, value) in [(activate, true), (deactivate, false)] {
        for name in names {
            let wanted = crate::tables::table_name(name);
            let entry = file
                .tables
                .iter_mut()
                .find(|t| t.name() == wanted)
                .ok_or_else(|| Error::Usage(format!("`{name}` is not in the tables file")))?;
            entry.active = value;
        }
    }
    file.tables.sort_by(|a, b| a.source.cmp(&b.source));
    Ok((file, added))
}

/// Columns of the first Parquet change file of a DMS folder (without `Op`).
fn infer_columns(folder: &Path, layout: Layout) -> Option<Vec<ColumnFile>> {
    use deltalake::arrow::datatypes::DataType;
    if layout != Layout::Dms {
        return None;
    }
    let files = changes::list(folder, layout).ok()?;
    let parquet = files
        .iter()
        .find(|f| f.format == changes::ChangeFormat::Parquet)?;
    let handle = std::fs::File::open(&parquet.path).ok()?;
    let builder =
        deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(handle)
            .ok()?;
    let schema: Arc<deltalake::arrow::datatypes::Schema> = builder.schema().clone();
    Some(
        schema
            .fields()
            .iter()
            .filter(|f| !f.name().eq_ignore_ascii_case("Op"))
            .map(|f| {
                let ty = match f.data_type() {
                    DataType::Int8 | DataType::Int16 | DataType::Int32 => "int".to_string(),
                    DataType::Int64 | DataType::UInt32 => "long".into(),
                    DataType::Float32 | DataType::Float64 => "double".into(),
                    DataType::Boolean => "boolean".into(),
                    DataType::Date32 | DataType::Date64 => "date".into(),
                    DataType::Timestamp(_, _) => "timestamp".into(),
                    DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
                    _ => "string".into(),
                };
                ColumnFile {
                    name: f.name().clone(),
                    ty,
                    key: false,
                    ignore: false,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, kind: FileKind, modified_ms: i64) -> ChangeFile {
        let mut f = changes::test_file(name, kind);
        f.modified_ms = modified_ms;
        f
    }

    #[test]
    fn applied_files_are_skipped_by_name_not_by_time() {
        let mut done = applied::AppliedSet::default();
        done.loads.insert(("LOAD00000001.csv".into(), 10));
        done.changes.insert("20240101-0000000000.csv".into());
        let files = vec![
            file("LOAD00000001.csv", FileKind::Load, 10),
            file("20240101-0000000000.csv", FileKind::Change, 20),
            // same timestamp in the name as an applied file, older modification time
            file("20240101-0000000000-b.csv", FileKind::Change, 5),
        ];
        let p = pending(files, &done);
        assert!(!p.reload);
        let names: Vec<&str> = p.read.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["20240101-0000000000-b.csv"]);
    }

    #[test]
    fn a_reload_ignores_stale_load_files_and_redoes_newer_changes() {
        let mut done = applied::AppliedSet::default();
        for (name, t) in [
            ("LOAD00000001.csv", 10),
            ("LOAD00000002.csv", 10),
            ("LOAD00000003.csv", 10),
        ] {
            done.loads.insert((name.into(), t));
        }
        done.changes.insert("20240101-0000000000.csv".into());
        done.changes.insert("20240103-0000000000.csv".into());
        let files = vec![
            file("LOAD00000001.csv", FileKind::Load, 100),
            file("LOAD00000002.csv", FileKind::Load, 101),
            // left over from the earlier, larger load
            file("LOAD00000003.csv", FileKind::Load, 10),
            file("20240101-0000000000.csv", FileKind::Change, 50),
            file("20240102-0000000000.csv", FileKind::Change, 60),
            // applied before the reload was seen, but written after it started
            file("20240103-0000000000.csv", FileKind::Change, 120),
        ];
        let p = pending(files, &done);
        assert!(p.reload);
        let read: Vec<&str> = p.read.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            read,
            [
                "LOAD00000001.csv",
                "LOAD00000002.csv",
                "20240103-0000000000.csv"
            ]
        );
        let superseded: Vec<&str> = p.superseded.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(superseded, ["20240102-0000000000.csv"]);
    }

    #[test]
    fn a_first_load_applies_every_change_file_after_it() {
        let files = vec![
            file("LOAD00000001.csv", FileKind::Load, 100),
            file("20240101-0000000000.csv", FileKind::Change, 50),
        ];
        let p = pending(files, &applied::AppliedSet::default());
        assert!(p.reload);
        assert_eq!(p.read.len(), 2);
        assert!(p.superseded.is_empty());
    }

    #[test]
    fn a_rewritten_load_file_reloads_and_supersedes_older_changes() {
        let mut done = applied::AppliedSet::default();
        done.loads.insert(("LOAD00000001.csv".into(), 10));
        let files = vec![
            file("LOAD00000001.csv", FileKind::Load, 100),
            file("20240101-0000000000.csv", FileKind::Change, 50),
            file("20240102-0000000000.csv", FileKind::Change, 150),
        ];
        let p = pending(files, &done);
        assert!(p.reload);
        let read: Vec<&str> = p.read.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(read, ["LOAD00000001.csv", "20240102-0000000000.csv"]);
        assert_eq!(p.superseded.len(), 1);
    }
}
