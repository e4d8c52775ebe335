//! A landing zone: the change files of one `<schema>/<table>` folder, as a [`ChangeSource`].
//!
//! Files are listed in source order ([`list`]), the ones the table's checkpoint (the
//! applied-files table) already records are left out by name, and the rest are read in order
//! into change batches. A `LOAD` file is the one applied before when its name and size are the
//! same and either its modification time or its content digest (XXH3-128 of its bytes, recorded
//! when it was applied) is: a landing zone copied again (`cp`, `aws s3 sync`) is not a new
//! load. A `LOAD` file that is new by that rule (a new or reloaded full load) makes the run a
//! reload that replaces the current table. On a reload (a table that had applied a full load
//! before), change files not yet applied whose modification time is older than the new load
//! are recorded as superseded instead of applied, and those applied before are counted as
//! replaced: the load already holds their effect. A first load applies every change file after
//! it. A local file must still have the size, modification time and identity (device, inode)
//! it was listed with once it is read (`extract::files::as_listed`): one written or replaced
//! meanwhile fails the run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use indicatif::ProgressBar;

use super::{read, ChangeFile, ChangeFormat, FileKind};
use crate::config::tables::{table_name, Layout, TableEntry, TablesFile};
use crate::config::{ChangelogTable, ColumnFile};
use crate::core::change::ChangeBatch;
use crate::core::checkpoint::{
    content_digest, AppliedFile, AppliedSet, Checkpoint, Committed, CHANGE, LOAD, SUPERSEDED,
};
use crate::error::{Error, Result};
use crate::source::extract::files::{as_listed, file_id, modified_ms, FileId};
use crate::source::{ChangeSource, Pending};

/// Batches read ahead of the consumer.
const READ_AHEAD_BATCHES: usize = 4;

/// The change files of one landing-zone table folder, read in source order.
pub struct LandingZone {
    config: ChangelogTable,
    folder: PathBuf,
    run_days: i32,
    bar: ProgressBar,
    /// The run's memory limit: a reader's share of it is in flight (see
    /// [`with_memory_limit`](Self::with_memory_limit)).
    memory_limit: u64,
    /// Planned by [`ChangeSource::plan`]: the files to read, and those only recorded.
    read: Vec<ChangeFile>,
    superseded: Vec<ChangeFile>,
    /// Checkpoint records of the files read so far, in order.
    done: Vec<AppliedFile>,
    /// For a landing zone in an object store: the store, the table's folder in it
    /// (`<schema>/<table>`), and the folder its files are copied into for the run.
    remote: Option<RemoteFolder>,
}

/// A table folder of a landing zone in an object store.
struct RemoteFolder {
    landing: Arc<super::remote::StoreLanding>,
    source: String,
    staging: tempfile::TempDir,
    /// Objects copied from the store so far, and their bytes.
    copied: (AtomicUsize, AtomicU64),
}

impl LandingZone {
    /// The change files of `folder` for the table `config`. `run_days` is the run's business
    /// date (days since 1970-01-01) for changes that carry no commit time (or all of them,
    /// with `eff_start: run`); `bar` shows which file is being read. Each
    /// [`plan`](ChangeSource::plan) lists the folder afresh.
    ///
    /// # Errors
    /// [`Error::Input`] when the folder cannot be listed or its links are refused (see
    /// [`list`]).
    pub fn open(
        folder: &Path,
        config: &ChangelogTable,
        run_days: i32,
        bar: ProgressBar,
    ) -> Result<Self> {
        list(folder, config.layout)?;
        Ok(LandingZone {
            config: config.clone(),
            folder: folder.to_path_buf(),
            run_days,
            bar,
            memory_limit: crate::config::DEFAULT_MEMORY_LIMIT,
            read: Vec::new(),
            superseded: Vec::new(),
            done: Vec::new(),
            remote: None,
        })
    }

    /// The zone with the run's memory limit (default
    /// [`DEFAULT_MEMORY_LIMIT`](crate::config::DEFAULT_MEMORY_LIMIT)): the parallel CSV reader
    /// of a full load keeps its share of it in flight.
    pub fn with_memory_limit(mut self, limit: u64) -> Self {
        self.memory_limit = limit;
        self
    }

    /// The change files of table folder `source` (`<schema>/<table>`) of a landing zone in an
    /// object store (see [`super::remote`]); otherwise as [`open`](Self::open), except that the
    /// folder is first listed by [`plan`](ChangeSource::plan) (a listing of a large folder is
    /// not made twice).
    ///
    /// # Errors
    /// I/O errors making the folder the run's files are copied into.
    pub fn open_remote(
        landing: Arc<super::remote::StoreLanding>,
        source: &str,
        config: &ChangelogTable,
        run_days: i32,
        bar: ProgressBar,
    ) -> Result<Self> {
        let staging = landing.staging()?;
        Ok(LandingZone {
            config: config.clone(),
            folder: staging.path().to_path_buf(),
            run_days,
            bar,
            memory_limit: crate::config::DEFAULT_MEMORY_LIMIT,
            read: Vec::new(),
            superseded: Vec::new(),
            done: Vec::new(),
            remote: Some(RemoteFolder {
                landing,
                source: source.to_string(),
                staging,
                copied: Default::default(),
            }),
        })
    }

    /// The change files of the folder, in source order.
    fn files(&self) -> Result<Vec<ChangeFile>> {
        match &self.remote {
            Some(r) => r
                .landing
                .list(&r.source, self.config.layout, r.staging.path()),
            None => list(&self.folder, self.config.layout),
        }
    }

    /// What names an object store's files in an error by their URL, not their local copy
    /// (errors as they are for a local landing zone); owned, for the reader thread.
    fn renamer(&self) -> impl Fn(Error) -> Error + Send + 'static {
        let renamed = self.remote.as_ref().map(|r| {
            (
                r.staging.path().to_path_buf(),
                r.landing.folder_url(&r.source),
            )
        });
        move |e: Error| match &renamed {
            Some((staging, url)) => super::remote::rename(e, staging, url),
            None => e,
        }
    }

    /// Copies `files` from the object store (nothing for a local landing zone).
    fn fetch(&self, files: &[&ChangeFile]) -> Result<()> {
        match &self.remote {
            Some(r) => {
                if !files.is_empty() {
                    self.bar
                        .set_message(format!("copying {} file(s) from the store", files.len()));
                }
                let (objects, bytes) = r.landing.fetch(files)?;
                r.copied.0.fetch_add(objects, Ordering::Relaxed);
                r.copied.1.fetch_add(bytes, Ordering::Relaxed);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// For a landing zone in an object store, the objects copied from the store so far (by
    /// every plan), and their bytes: a copy kept from an earlier plan of the same object
    /// version is not counted again. None for a local landing zone.
    pub fn copied_from_store(&self) -> Option<(usize, u64)> {
        self.remote.as_ref().map(|r| {
            (
                r.copied.0.load(Ordering::Relaxed),
                r.copied.1.load(Ordering::Relaxed),
            )
        })
    }
}

/// What a reader thread hands the stream: a batch, a file finished, or the end.
enum Read {
    Batch(Box<ChangeBatch>),
    File(AppliedFile),
    End,
}

impl ChangeSource for LandingZone {
    /// Lists the folder and leaves out what `committed` records (see the module docs). Every
    /// call plans afresh: a run that lost its commit to another writer plans again.
    fn plan(&mut self, committed: &Committed) -> Result<Pending> {
        let files = self.files()?;
        let todo = {
            let rename = self.renamer();
            let mut digest = |f: &ChangeFile| {
                self.fetch(&[f])?;
                load_digest(f).map_err(&rename)
            };
            pending(files, &committed.files, &mut digest)?
        };
        // an object store's files are read from local copies
        self.fetch(&todo.read.iter().collect::<Vec<_>>())?;
        self.read = todo.read;
        self.superseded = todo.superseded;
        self.done.clear();
        Ok(Pending {
            reload: todo.reload,
            append: false,
            units: self.read.len(),
            skipped: self.superseded.len(),
            replaced: todo.replaced,
            loads_only: self.read.iter().all(|f| f.kind == FileKind::Load),
            bytes: self.read.iter().map(|f| f.size).sum(),
        })
    }

    /// Reads the planned files on a thread of their own (parsing is CPU-bound), a few batches
    /// ahead of the consumer, in file order. A file's error ends the stream with it. The plan
    /// is streamed once: a second call without a new plan streams nothing.
    fn changes(&mut self) -> BoxStream<'_, Result<ChangeBatch>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Read>>(READ_AHEAD_BATCHES);
        let files = std::mem::take(&mut self.read);
        let (config, bar, run_days) = (
            Arc::new(self.config.clone()),
            self.bar.clone(),
            self.run_days,
        );
        let memory_limit = self.memory_limit;
        // an object store's files are read from copies of the version listed
        let local = self.remote.is_none();
        // errors name an object store's files by their URL, not their local copy
        let rename = self.renamer();
        let total = files.len();
        let reader = tokio::task::spawn_blocking(move || {
            for (i, file) in files.iter().enumerate() {
                bar.set_message(format!("reading {}/{total}: {}", i + 1, file.name));
                // each batch goes on as it is made: a file is not held whole
                let mut send = |batch: ChangeBatch| -> Result<()> {
                    tx.blocking_send(Ok(Read::Batch(Box::new(batch))))
                        .map_err(|_| Error::Internal("the run stopped reading".into()))
                };
                let rows = match read(&config, file, i, run_days, memory_limit, &mut send) {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(rename(e)));
                        return;
                    }
                };
                let mut record = match file.kind {
                    FileKind::Load => applied_record(file, LOAD, rows),
                    FileKind::Change => applied_record(file, CHANGE, rows),
                };
                if file.kind == FileKind::Load {
                    match load_digest(file) {
                        Ok(d) => record.digest = Some(d),
                        Err(e) => {
                            let _ = tx.blocking_send(Err(rename(e)));
                            return;
                        }
                    }
                }
                // a local file is read in place: it must still be the one listed, or the rows
                // read and the record (size, time, digest) may be of other bytes
                let listed = (file.size, file.modified_ms, file.file_id);
                if let Some(Err(e)) = local.then(|| as_listed(&file.path, listed)) {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
                if tx.blocking_send(Ok(Read::File(record))).is_err() {
                    return;
                }
            }
            let _ = tx.blocking_send(Ok(Read::End));
        });
        let done = &mut self.done;
        futures::stream::unfold(
            (rx, Some(reader), done),
            |(mut rx, reader, done)| async move {
                reader.as_ref()?;
                loop {
                    match rx.recv().await {
                        Some(Ok(Read::Batch(batch))) => {
                            return Some((Ok(*batch), (rx, reader, done)))
                        }
                        Some(Ok(Read::File(record))) => done.push(record),
                        Some(Ok(Read::End)) => return None,
                        Some(Err(e)) => return Some((Err(e), (rx, None, done))),
                        // The reader ended without `End`: it panicked.
                        None => {
                            let e = match reader?.await {
                                Err(e) => Error::Internal(format!("reader task failed: {e}")),
                                Ok(()) => Error::Internal("reader stopped early".into()),
                            };
                            return Some((Err(e), (rx, None, done)));
                        }
                    }
                }
            },
        )
        .boxed()
    }

    fn checkpoint(&self) -> Checkpoint {
        let mut files = self.done.clone();
        files.extend(
            self.superseded
                .iter()
                .map(|f| applied_record(f, SUPERSEDED, 0)),
        );
        Checkpoint::Files(files)
    }
}

/// Lists the change files under `folder` (sub-folders included, for DMS date partitions) in
/// source order: `LOAD` files by their hexadecimal counter (`LOAD00000009` before
/// `LOAD0000000A`), then change files by file name without its extension (DMS names them by
/// timestamp), then by path. Files that are not change files of the layout are skipped with a
/// warning (`.gz` files: compressed change files are not read); names starting with `.` or `_`
/// (`_SUCCESS`, `.crc`) silently. Symbolic links are followed: a linked file is listed under
/// its link's name with its target's size and modification time, and a linked folder is walked
/// like any other; a link to a path inside `folder` is skipped with a warning (its target is
/// read where it is). An entry gone since the folder was listed is left out.
///
/// # Errors
/// [`Error::Input`] when a folder cannot be listed, a link named like a change file or like a
/// folder (no extension) is broken, a link leads back to a folder above it (a loop), or one
/// file is reached under two names (two links to it from outside, or a hard link: a file is
/// applied once, by name).
pub fn list(folder: &Path, layout: Layout) -> Result<Vec<ChangeFile>> {
    let resolved_root = std::fs::canonicalize(folder).map_err(|e| Error::Input {
        path: folder.to_path_buf(),
        reason: format!("cannot list: {e}"),
    })?;
    let mut walk = Walk {
        root: folder,
        resolved_root,
        layout,
        above: Vec::new(),
        files: HashMap::new(),
        out: Vec::new(),
    };
    walk.folder(folder)?;
    let mut out = walk.out;
    sort_files(&mut out);
    Ok(out)
}

/// Puts `files` in source order (see [`list`]).
pub(super) fn sort_files(files: &mut [ChangeFile]) {
    files.sort_by(|a, b| {
        let file_name = |f: &ChangeFile| {
            let name = f.name.rsplit('/').next().unwrap_or("");
            name.rsplit_once('.')
                .map_or(name, |(stem, _)| stem)
                .to_string()
        };
        (a.kind, a.load_counter, file_name(a), &a.name).cmp(&(
            b.kind,
            b.load_counter,
            file_name(b),
            &b.name,
        ))
    });
}

/// One listing of a landing folder ([`list`]).
struct Walk<'a> {
    root: &'a Path,
    /// The root with every link resolved: a link to a path under it is not followed.
    resolved_root: PathBuf,
    layout: Layout,
    /// The folders from the root down to the one being listed: a link back to one of them is
    /// a loop.
    above: Vec<FileId>,
    /// The change files listed so far, by identity: the name each was listed under.
    files: HashMap<FileId, String>,
    out: Vec<ChangeFile>,
}

impl Walk<'_> {
    fn folder(&mut self, dir: &Path) -> Result<()> {
        let input = |path: &Path, reason: String| Error::Input {
            path: path.to_path_buf(),
            reason,
        };
        let id = std::fs::metadata(dir)
            .map(|m| file_id(&m))
            .map_err(|e| input(dir, format!("cannot list: {e}")))?;
        if self.above.contains(&id) {
            return Err(input(
                dir,
                "a symbolic link leads back to a folder above it (a loop): remove the link".into(),
            ));
        }
        self.above.push(id);
        let entries =
            std::fs::read_dir(dir).map_err(|e| input(dir, format!("cannot list: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| input(dir, format!("cannot list: {e}")))?;
            let path = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with(['.', '_']) {
                continue;
            }
            let classified = classify(&file_name, self.layout);
            let link = entry.file_type().is_ok_and(|t| t.is_symlink());
            // the target's metadata: a link is followed
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                // a broken link named like a change file, or like a folder (no extension: a
                // linked date folder on a volume not mounted), would drop files from the plan
                Err(e) if link && (classified.is_some() || !file_name.contains('.')) => {
                    return Err(input(&path, format!("broken link: {e}")));
                }
                Err(_) if link => {
                    tracing::warn!(file = %path.display(), "a broken link that is not a change file; skipped");
                    continue;
                }
                // gone since the folder was listed (a writer's temporary file renamed)
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(input(&path, format!("cannot read: {e}"))),
            };
            if link {
                if let Ok(target) = std::fs::canonicalize(&path) {
                    if target.starts_with(&self.resolved_root) {
                        tracing::warn!(file = %path.display(), target = %target.display(), "a link into the table folder itself; skipped (its target is read where it is)");
                        continue;
                    }
                }
            }
            if meta.is_dir() {
                self.folder(&path)?;
                continue;
            }
            let Some((kind, format, load_counter)) = classified else {
                match crate::source::extract::files::compressed_extension(&file_name) {
                    Some(ext) => tracing::warn!(
                        file = %path.display(),
                        "not read: {}",
                        crate::source::extract::files::compressed_reason(ext)
                    ),
                    None => {
                        tracing::warn!(file = %path.display(), layout = %self.layout, "not a change file of this layout (csv or parquet for dms, json, jsonl or avro for debezium); skipped")
                    }
                }
                continue;
            };
            let name = path
                .strip_prefix(self.root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if let Some(first) = self.files.insert(file_id(&meta), name.clone()) {
                return Err(input(
                    &path,
                    format!(
                        "the same file as {first} (a link to it, or a hard link): a change file \
                         is applied once, by name; remove one of the two"
                    ),
                ));
            }
            self.out.push(ChangeFile {
                path,
                name,
                kind,
                format,
                size: meta.len(),
                modified_ms: modified_ms(&meta),
                file_id: Some(file_id(&meta)),
                etag: None,
                load_counter,
            });
        }
        self.above.pop();
        Ok(())
    }
}

/// The layout a table folder's files suggest: Debezium when it holds JSON or Avro files.
pub fn guess_layout(folder: &Path) -> Layout {
    // `above`: the folders on the way down (a linked folder that loops is not walked again)
    fn has_events(dir: &Path, above: &mut Vec<FileId>) -> bool {
        let Ok(id) = std::fs::metadata(dir).map(|m| file_id(&m)) else {
            return false;
        };
        if above.contains(&id) {
            return false;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        above.push(id);
        let found = entries.flatten().any(|e| {
            let path = e.path();
            if path.is_dir() {
                return has_events(&path, above);
            }
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            [".json", ".jsonl", ".avro"]
                .iter()
                .any(|ext| name.ends_with(ext))
        });
        above.pop();
        found
    }
    if has_events(folder, &mut Vec::new()) {
        Layout::Debezium
    } else {
        Layout::Dms
    }
}

/// Kind, format and `LOAD` counter of a file name, or None when it is not a change file.
pub(super) fn classify(file_name: &str, layout: Layout) -> Option<(FileKind, ChangeFormat, u64)> {
    let (stem, ext) = file_name.rsplit_once('.')?;
    let format = match (layout, ext.to_ascii_lowercase().as_str()) {
        (Layout::Dms, "csv") => ChangeFormat::Csv,
        (Layout::Dms, "parquet") => ChangeFormat::Parquet,
        (Layout::Debezium, "json" | "jsonl") => ChangeFormat::JsonLines,
        (Layout::Debezium, "avro") => ChangeFormat::Avro,
        _ => return None,
    };
    if layout == Layout::Dms {
        if let Some(hex) = stem.strip_prefix("LOAD") {
            let counter = u64::from_str_radix(hex, 16).ok()?;
            return Some((FileKind::Load, format, counter));
        }
    }
    Some((FileKind::Change, format, 0))
}

/// The files a table still has to take, and whether they start with a full load.
#[derive(Debug, Default)]
struct PendingFiles {
    reload: bool,
    /// Files to read, in source order.
    read: Vec<ChangeFile>,
    /// Change files older than the reload: recorded, not applied.
    superseded: Vec<ChangeFile>,
    /// Change files applied before, older than the reload: the new load replaces their effect.
    replaced: usize,
}

/// Whether a `LOAD` file is not the one the table applied last under its name: a new name, or
/// another size, or (same size, other modification time: a touch or a copy) other bytes. An
/// object listed with the ETag recorded when it was applied is the same bytes, known without
/// reading it: an ETag names one version of an object's content (S3 and GCS give the same
/// bytes uploaded again in the same parts the same one). `digest` is asked only in the last
/// case, and only where the table recorded a digest: another ETag may still be the same bytes
/// (uploaded in other parts, encrypted with SSE-KMS, or on Azure, which gives every write a new
/// ETag).
fn is_new_load(
    f: &ChangeFile,
    done: &AppliedSet,
    digest: &mut dyn FnMut(&ChangeFile) -> Result<String>,
) -> Result<bool> {
    let Some(last) = done.last_load(&f.name) else {
        return Ok(true);
    };
    if last.size_bytes != f.size as i64 {
        return Ok(true);
    }
    if last.modified_ms == f.modified_ms {
        return Ok(false);
    }
    if last.etag.is_some() && last.etag == f.etag {
        return Ok(false);
    }
    match &last.digest {
        Some(recorded) => Ok(*recorded != digest(f)?),
        // tables written before digests were kept: by modification time, as then
        None => Ok(true),
    }
}

/// Plans the files a table still has to take (see the module docs). `digest` reads a file's
/// content digest ([`content_digest`]) for `LOAD` files whose modification time changed.
///
/// # Errors
/// Errors of `digest` (a `LOAD` file that cannot be read).
fn pending(
    files: Vec<ChangeFile>,
    done: &AppliedSet,
    digest: &mut dyn FnMut(&ChangeFile) -> Result<String>,
) -> Result<PendingFiles> {
    let mut other_etags = Vec::new();
    for f in &files {
        if let Some(&size) = done.change_sizes.get(&f.name) {
            if size != f.size as i64 {
                tracing::warn!(file = %f.path.display(), applied_bytes = size, now_bytes = f.size,
                    "a change file changed size after it was applied; its new rows are not applied \
                     (land files atomically: write, then rename)");
            } else if let (Some(applied), Some(now)) = (done.change_etags.get(&f.name), &f.etag) {
                if applied != now {
                    other_etags.push(f.name.as_str());
                }
            }
        }
    }
    if let Some(first) = other_etags.first() {
        // one line a pass, not one per file (a store that gives every copy a new ETag, Azure's)
        tracing::warn!(files = other_etags.len(), first = %first,
            "change files applied before are listed with another ETag (uploaded again, perhaps \
             with other rows); they are not applied again: a change file is applied once, by name");
    }
    let (loads, changes): (Vec<ChangeFile>, Vec<ChangeFile>) =
        files.into_iter().partition(|f| f.kind == FileKind::Load);
    let mut reload = false;
    for f in &loads {
        if is_new_load(f, done, digest)? {
            reload = true;
            break;
        }
    }
    // The load starts at the earliest LOAD file written since the table applied it (new
    // bytes, or the same bytes written again with the others: a DMS reload rewrites every
    // file, some of them unchanged).
    let rewritten = |f: &&ChangeFile| {
        done.last_load(&f.name).is_none_or(|last| {
            last.modified_ms != f.modified_ms || last.size_bytes != f.size as i64
        })
    };
    let load_time = match reload {
        true => loads.iter().filter(rewritten).map(|f| f.modified_ms).min(),
        false => None,
    };
    let Some(load_time) = load_time else {
        return Ok(PendingFiles {
            read: changes
                .into_iter()
                .filter(|f| !done.changes.contains(&f.name))
                .collect(),
            ..Default::default()
        });
    };
    // A full load: the LOAD files written with or after the first new one (older LOAD files
    // left from an earlier load are not part of it), then the change files from its time on,
    // applied before or not (the table is replaced, so their effect must be redone).
    let mut out = PendingFiles {
        reload: true,
        read: loads
            .into_iter()
            .filter(|f| f.modified_ms >= load_time)
            .collect(),
        ..Default::default()
    };
    for f in changes {
        let applied = done.changes.contains(&f.name);
        if f.modified_ms >= load_time {
            out.read.push(f);
        } else if applied {
            // already applied, and older than the load: the load holds its effect
            out.replaced += 1;
        } else if done.has_load() {
            // A reload: an older change file is in the new load already; applied after it,
            // it would bring back old values.
            out.superseded.push(f);
        } else {
            // A first load takes every change file after it.
            out.read.push(f);
        }
    }
    if done.has_load() {
        tracing::warn!(
            replaced = out.replaced,
            superseded = out.superseded.len(),
            "a new full load replaces the current table: change files applied before it are \
             superseded by it, and older pending ones are recorded without being applied"
        );
    }
    Ok(out)
}

/// The checkpoint record of a file read (or superseded) with `rows` change rows.
fn applied_record(file: &ChangeFile, kind: &'static str, rows: u64) -> AppliedFile {
    AppliedFile {
        file: file.name.clone(),
        kind,
        size_bytes: file.size as i64,
        modified_ms: file.modified_ms,
        rows: rows as i64,
        digest: None,
        etag: file.etag.clone(),
    }
}

/// The content digest of a `LOAD` file, naming the file when it cannot be read.
fn load_digest(file: &ChangeFile) -> Result<String> {
    content_digest(&file.path).map_err(|e| Error::Input {
        path: file.path.clone(),
        reason: format!("cannot read: {e}"),
    })
}

/// The `<schema>/<table>` folders under a landing root, sorted.
///
/// # Errors
/// [`Error::Input`] when the root cannot be listed.
pub fn discover(landing: &Path) -> Result<Vec<String>> {
    let list = |dir: &Path| -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Input {
            path: dir.to_path_buf(),
            reason: format!("cannot list: {e}"),
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(['.', '_']));
            if path.is_dir() && !hidden {
                out.push(path);
            }
        }
        Ok(out)
    };
    let mut found = Vec::new();
    for schema in list(landing)? {
        for table in list(&schema)? {
            let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
            if let (Some(s), Some(t)) = (name(&schema), name(&table)) {
                found.push(format!("{s}/{t}"));
            }
        }
    }
    found.sort();
    Ok(found)
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
        let layout = guess_layout(&folder);
        let columns = infer_columns(&folder, layout).unwrap_or_default();
        file.tables
            .push(TableEntry::discovered(source.clone(), columns, layout));
        added.push(source);
    }
    for (names, value) in [(activate, true), (deactivate, false)] {
        for name in names {
            let wanted = table_name(name);
            let entry = file
                .tables
                .iter_mut()
                .find(|t| t.name() == wanted)
                .ok_or_else(|| Error::Usage(format!("`{name}` is not in the tables file")))?;
            if value {
                // `sync` would reject the entry: say what is missing now, not at the next sync.
                entry.check()?;
            }
            entry.active = value;
        }
    }
    file.tables.sort_by(|a, b| a.source.cmp(&b.source));
    Ok((file, added))
}

/// Columns of a new folder's tables-file entry: those of the first Parquet change file of a DMS
/// folder (without `Op`), or the row of the first Debezium JSON event (types guessed from its
/// values: `long`, `double`, `boolean`, else `string`; review them before activating). None
/// when no file tells them (DMS CSV files have no header).
fn infer_columns(folder: &Path, layout: Layout) -> Option<Vec<ColumnFile>> {
    use deltalake::arrow::datatypes::DataType;
    let files = match list(folder, layout) {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(folder = %folder.display(), "columns not inferred: {e}");
            return None;
        }
    };
    if layout == Layout::Debezium {
        return debezium_columns(&files);
    }
    let parquet = files.iter().find(|f| f.format == ChangeFormat::Parquet)?;
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

/// The columns of the events of the first Debezium JSON-lines file (its first 1,000 lines): every
/// column an event's row has, by name (Debezium rows are matched by name), typed by the first
/// non-NULL value seen: `long`, `double`, `boolean`, else `string` (a column NULL throughout is
/// `string`). Debezium's logical types (dates and timestamps as numbers, decimals as base64
/// text) are not told apart: the types are a draft to review (see [`infer_columns`]).
fn debezium_columns(files: &[ChangeFile]) -> Option<Vec<ColumnFile>> {
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::io::BufRead;
    let file = files.iter().find(|f| f.format == ChangeFormat::JsonLines)?;
    let reader = std::io::BufReader::new(std::fs::File::open(&file.path).ok()?);
    let mut types: BTreeMap<String, Option<&'static str>> = BTreeMap::new();
    for line in reader.lines().take(1000) {
        let Ok(value) = serde_json::from_str::<Value>(&line.ok()?) else {
            continue;
        };
        let Ok(Some(event)) = super::debezium::parse_event(value) else {
            continue;
        };
        for (name, value) in &event.row {
            let ty = match value {
                Value::Null => None,
                Value::Number(n) if n.is_i64() || n.is_u64() => Some("long"),
                Value::Number(_) => Some("double"),
                Value::Bool(_) => Some("boolean"),
                _ => Some("string"),
            };
            let known = types.entry(name.clone()).or_insert(None);
            if known.is_none() {
                *known = ty;
            }
        }
    }
    if types.is_empty() {
        return None;
    }
    let columns = types
        .into_iter()
        .map(|(name, ty)| ColumnFile {
            name,
            ty: ty.unwrap_or("string").to_string(),
            key: false,
            ignore: false,
        })
        .collect();
    Some(columns)
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::core::change::ChangeOp;
    use crate::source::changelog::tests::test_file;

    fn file(name: &str, kind: FileKind, modified_ms: i64) -> ChangeFile {
        let mut f = test_file(name, kind);
        f.modified_ms = modified_ms;
        f
    }

    /// Records an applied `LOAD` file of size 0 (as [`test_file`]s are) at `modified_ms`.
    fn applied_load(done: &mut AppliedSet, name: &str, modified_ms: i64, digest: Option<&str>) {
        let load = crate::core::checkpoint::AppliedLoad {
            run: 1,
            size_bytes: 0,
            modified_ms,
            digest: digest.map(String::from),
            etag: None,
        };
        done.add_load(name, load);
    }

    /// Plans with a digest that is the file name (so every file's content is "unchanged").
    fn plan(files: Vec<ChangeFile>, done: &AppliedSet) -> PendingFiles {
        pending(files, done, &mut |f| Ok(format!("digest of {}", f.name))).unwrap()
    }

    #[test]
    fn applied_files_are_skipped_by_name_not_by_time() {
        let mut done = AppliedSet::default();
        applied_load(&mut done, "LOAD00000001.csv", 10, None);
        done.changes.insert("20240101-0000000000.csv".into());
        let files = vec![
            file("LOAD00000001.csv", FileKind::Load, 10),
            file("20240101-0000000000.csv", FileKind::Change, 20),
            // same timestamp in the name as an applied file, older modification time
            file("20240101-0000000000-b.csv", FileKind::Change, 5),
        ];
        let p = plan(files, &done);
        assert!(!p.reload);
        let names: Vec<&str> = p.read.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["20240101-0000000000-b.csv"]);
    }

    #[test]
    fn a_reload_ignores_stale_load_files_and_redoes_newer_changes() {
        let mut done = AppliedSet::default();
        for (name, t) in [
            ("LOAD00000001.csv", 10),
            ("LOAD00000002.csv", 10),
            ("LOAD00000003.csv", 10),
        ] {
            applied_load(&mut done, name, t, None);
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
        let p = plan(files, &done);
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
        let p = plan(files, &AppliedSet::default());
        assert!(p.reload);
        assert_eq!(p.read.len(), 2);
        assert!(p.superseded.is_empty());
    }

    #[test]
    fn a_rewritten_load_file_reloads_and_supersedes_older_changes() {
        let mut done = AppliedSet::default();
        applied_load(&mut done, "LOAD00000001.csv", 10, None);
        let files = vec![
            file("LOAD00000001.csv", FileKind::Load, 100),
            file("20240101-0000000000.csv", FileKind::Change, 50),
            file("20240102-0000000000.csv", FileKind::Change, 150),
        ];
        let p = plan(files, &done);
        assert!(p.reload);
        let read: Vec<&str> = p.read.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(read, ["LOAD00000001.csv", "20240102-0000000000.csv"]);
        assert_eq!(p.superseded.len(), 1);
    }

    #[test]
    fn a_load_copied_again_with_the_same_bytes_is_not_a_reload() {
        let mut done = AppliedSet::default();
        applied_load(
            &mut done,
            "LOAD00000001.csv",
            10,
            Some("digest of LOAD00000001.csv"),
        );
        done.changes.insert("20240101-0000000000.csv".into());
        // `cp -r` of the landing zone: every modification time is new
        let files = vec![
            file("LOAD00000001.csv", FileKind::Load, 500),
            file("20240101-0000000000.csv", FileKind::Change, 501),
            file("20240102-0000000000.csv", FileKind::Change, 502),
        ];
        let mut asked = Vec::new();
        let p = pending(files.clone(), &done, &mut |f| {
            asked.push(f.name.clone());
            Ok(format!("digest of {}", f.name))
        })
        .unwrap();
        assert!(!p.reload);
        assert_eq!(asked, ["LOAD00000001.csv"]);
        let read: Vec<&str> = p.read.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(read, ["20240102-0000000000.csv"]);
        // the same name and size with other bytes is a reload that replaces the applied file
        let p = pending(files.clone(), &done, &mut |_| Ok("other bytes".into())).unwrap();
        assert!(p.reload);
        // the applied change file was written after the new load: redone on top of it
        assert_eq!((p.replaced, p.read.len()), (0, 3));
        // another size is a reload without reading the file
        let mut bigger = files;
        bigger[0].size = 7;
        let p = pending(bigger, &done, &mut |_| panic!("not read")).unwrap();
        assert!(p.reload);
        // unchanged modification time: not read either
        let same = vec![file("LOAD00000001.csv", FileKind::Load, 10)];
        assert!(
            !pending(same, &done, &mut |_| panic!("not read"))
                .unwrap()
                .reload
        );
    }

    #[test]
    fn an_object_uploaded_again_is_known_by_its_etag_without_reading_it() {
        let mut done = AppliedSet::default();
        let load = crate::core::checkpoint::AppliedLoad {
            run: 1,
            size_bytes: 0,
            modified_ms: 10,
            digest: Some("applied bytes".into()),
            etag: Some("\"e1\"".into()),
        };
        done.add_load("LOAD00000001.csv", load);
        let uploaded = |etag: &str| {
            let mut f = file("LOAD00000001.csv", FileKind::Load, 500);
            f.etag = Some(etag.into());
            vec![f]
        };
        // the same ETag, a new last-modified time: the same load, never read
        let p = pending(uploaded("\"e1\""), &done, &mut |_| panic!("not read")).unwrap();
        assert!(!p.reload && p.read.is_empty());
        // another ETag (the same bytes uploaded in other parts): compared by content digest
        let mut asked = 0;
        let p = pending(uploaded("\"e1-2\""), &done, &mut |_| {
            asked += 1;
            Ok("applied bytes".into())
        })
        .unwrap();
        assert!(!p.reload);
        assert_eq!(asked, 1);
        let p = pending(uploaded("\"e2\""), &done, &mut |_| Ok("new bytes".into())).unwrap();
        assert!(p.reload);
        // another size needs no ETag; a local file (no ETag) goes by the digest
        let mut bigger = uploaded("\"e1\"");
        bigger[0].size = 7;
        assert!(
            pending(bigger, &done, &mut |_| panic!("not read"))
                .unwrap()
                .reload
        );
        let mut local = uploaded("\"e1\"");
        local[0].etag = None;
        assert!(
            !pending(local, &done, &mut |_| Ok("applied bytes".into()))
                .unwrap()
                .reload
        );
        // a table that recorded no ETag goes by the digest too
        let mut before = AppliedSet::default();
        let mut old = done.last_load("LOAD00000001.csv").unwrap().clone();
        old.etag = None;
        before.add_load("LOAD00000001.csv", old);
        let p = pending(uploaded("\"e1\""), &before, &mut |_| Ok("new bytes".into())).unwrap();
        assert!(p.reload);
    }

    #[test]
    fn a_reload_counts_the_applied_change_files_it_replaces() {
        let mut done = AppliedSet::default();
        applied_load(&mut done, "LOAD00000001.csv", 10, Some("old"));
        done.changes.insert("20240101-0000000000.csv".into());
        let files = vec![
            file("LOAD00000001.csv", FileKind::Load, 100),
            file("20240101-0000000000.csv", FileKind::Change, 50),
            file("20240102-0000000000.csv", FileKind::Change, 60),
        ];
        let p = plan(files, &done);
        assert!(p.reload);
        assert_eq!((p.replaced, p.superseded.len()), (1, 1));
    }

    #[test]
    fn the_latest_application_of_a_load_name_decides() {
        let mut done = AppliedSet::default();
        applied_load(&mut done, "LOAD00000001.csv", 10, Some("first"));
        let mut second = done.loads["LOAD00000001.csv"][0].clone();
        (second.run, second.modified_ms, second.digest) = (2, 20, Some("second".into()));
        done.add_load("LOAD00000001.csv", second);
        let files = || vec![file("LOAD00000001.csv", FileKind::Load, 30)];
        // the first load's bytes copied back are a reload: the table holds the second
        assert!(
            pending(files(), &done, &mut |_| Ok("first".into()))
                .unwrap()
                .reload
        );
        assert!(
            !pending(files(), &done, &mut |_| Ok("second".into()))
                .unwrap()
                .reload
        );
    }

    #[test]
    fn load_files_order_by_hex_counter_then_changes_by_timestamp_name() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "20141029-1134010000.csv",
            "LOAD0000000A.csv",
            "LOAD00000009.csv",
            "2014/10/28/20141028-0900000000.csv",
            "20141029-1134010000-2.csv",
            "_SUCCESS",
            "notes.txt",
            "LOAD00000010.csv",
        ];
        for n in names {
            let p = dir.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let files = list(dir.path(), Layout::Dms).unwrap();
        let got: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            got,
            [
                "LOAD00000009.csv",
                "LOAD0000000A.csv",
                "LOAD00000010.csv",
                "2014/10/28/20141028-0900000000.csv",
                "20141029-1134010000.csv",
                "20141029-1134010000-2.csv",
            ]
        );
        assert_eq!(files[0].kind, FileKind::Load);
        assert_eq!(files[3].kind, FileKind::Change);
        assert!(list(dir.path(), Layout::Debezium).unwrap().is_empty());
    }

    #[test]
    fn discovers_schema_table_folders() {
        let dir = tempfile::tempdir().unwrap();
        for p in ["sales/orders", "sales/items", "hr/people", "_tmp/x"] {
            std::fs::create_dir_all(dir.path().join(p)).unwrap();
        }
        std::fs::write(dir.path().join("sales/README"), "not a table").unwrap();
        assert_eq!(
            discover(dir.path()).unwrap(),
            vec!["hr/people", "sales/items", "sales/orders"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_landing_zone_streams_every_pending_file_and_checkpoints_them() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("sales/orders");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("LOAD00000001.csv"), "1,a\n2,b\n").unwrap();
        std::fs::write(folder.join("20240101-000000000.csv"), "U,1,c\nD,2,b\n").unwrap();
        let entry: crate::config::TableEntry = serde_yaml::from_str(
            "source: sales/orders\nprimary_key: [id]\ncolumns:\n- {name: id, type: long}\n- {name: v, type: string}\n",
        )
        .unwrap();
        let config = entry
            .changelog_table(
                0,
                &crate::config::storage::LakeRoot::local(&dir.path().join("lake")),
            )
            .unwrap();
        let mut zone = LandingZone::open(&folder, &config, 0, ProgressBar::hidden()).unwrap();
        let pending = zone.plan(&Committed::default()).unwrap();
        assert!(pending.reload);
        assert_eq!((pending.units, pending.skipped), (2, 0));
        let batches: Vec<ChangeBatch> = zone.changes().try_collect().await.unwrap();
        let ops: Vec<ChangeOp> = batches.iter().flat_map(|b| b.ops.clone()).collect();
        use ChangeOp::*;
        assert_eq!(ops, [Insert, Insert, Update, Delete]);
        let Checkpoint::Files(files) = zone.checkpoint() else {
            panic!("a landing zone's checkpoint is files");
        };
        // A run that lost its commit to another writer plans again: the same files.
        assert_eq!(zone.plan(&Committed::default()).unwrap(), pending);
        let names: Vec<(&str, &str, i64)> = files
            .iter()
            .map(|f| (f.file.as_str(), f.kind, f.rows))
            .collect();
        assert_eq!(
            names,
            [
                ("LOAD00000001.csv", LOAD, 2),
                ("20240101-000000000.csv", CHANGE, 2)
            ]
        );
        // Everything applied: nothing pending.
        let mut committed = Committed::default();
        committed.files.add_load(
            "LOAD00000001.csv",
            crate::core::checkpoint::AppliedLoad {
                run: 1,
                size_bytes: files[0].size_bytes,
                modified_ms: files[0].modified_ms,
                digest: files[0].digest.clone(),
                etag: None,
            },
        );
        assert!(files[0].digest.is_some() && files[1].digest.is_none());
        committed
            .files
            .changes
            .insert("20240101-000000000.csv".into());
        let mut zone = LandingZone::open(&folder, &config, 0, ProgressBar::hidden()).unwrap();
        assert!(zone.plan(&committed).unwrap().is_empty());
    }

    #[test]
    fn links_are_followed_and_loops_broken_links_and_files_listed_twice_are_errors() {
        use std::os::unix::fs::symlink;
        let (dir, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (root, other) = (dir.path(), elsewhere.path());
        std::fs::write(other.join("LOAD00000001.csv"), "1,a\n2,b\n").unwrap();
        std::fs::create_dir_all(other.join("2014/10/28")).unwrap();
        std::fs::write(other.join("2014/10/28/20141028-0900000000.csv"), "I,3,c\n").unwrap();
        std::fs::create_dir_all(root.join("2015/01/01")).unwrap();
        std::fs::write(root.join("2015/01/01/20150101-0000000000.csv"), "I,4,d\n").unwrap();
        symlink(
            other.join("LOAD00000001.csv"),
            root.join("LOAD00000001.csv"),
        )
        .unwrap();
        symlink(other.join("2014"), root.join("2014")).unwrap();
        // links into the table folder itself: skipped, their targets read where they are
        symlink(root.join("2015/01/01"), root.join("latest")).unwrap();
        symlink(
            root.join("2015/01/01/20150101-0000000000.csv"),
            root.join("20991231-0000000000.csv"),
        )
        .unwrap();
        let files = list(root, Layout::Dms).unwrap();
        let got: Vec<(&str, u64)> = files.iter().map(|f| (f.name.as_str(), f.size)).collect();
        // a linked file by its link's name, with its target's size; a linked folder walked
        assert_eq!(
            got,
            [
                ("LOAD00000001.csv", 8),
                ("2014/10/28/20141028-0900000000.csv", 6),
                ("2015/01/01/20150101-0000000000.csv", 6)
            ]
        );
        let target = std::fs::metadata(other.join("LOAD00000001.csv")).unwrap();
        assert_eq!(
            files[0].modified_ms,
            modified_ms(&target),
            "the target's time"
        );
        assert_eq!(files[0].file_id, Some(file_id(&target)));
        let refused = |what: &str| {
            let err = list(root, Layout::Dms).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
            err
        };
        // a link back to the table folder is one into it: skipped
        symlink(root, other.join("2014/10/root")).unwrap();
        assert_eq!(list(root, Layout::Dms).unwrap().len(), 3);
        // links back to a linked folder above (two: unguarded, a walk would go 2^40 deep)
        symlink(other.join("2014"), other.join("2014/10/up")).unwrap();
        symlink(other.join("2014"), other.join("2014/10/28/up")).unwrap();
        refused("loop");
        assert_eq!(guess_layout(root), Layout::Dms, "no endless walk");
        std::fs::remove_file(other.join("2014/10/up")).unwrap();
        std::fs::remove_file(other.join("2014/10/28/up")).unwrap();
        // one file under two names, both from outside the table folder
        symlink(
            other.join("LOAD00000001.csv"),
            root.join("20141029-1134010000.csv"),
        )
        .unwrap();
        let err = refused("the same file as");
        assert!(
            err.contains("20141029-1134010000.csv") && err.contains("LOAD00000001.csv"),
            "{err}"
        );
        std::fs::remove_file(root.join("20141029-1134010000.csv")).unwrap();
        // a broken link: an error where it is named like a change file or like a folder,
        // skipped otherwise
        symlink("/nonexistent/notes.txt", root.join("notes.txt")).unwrap();
        assert_eq!(list(root, Layout::Dms).unwrap().len(), 3);
        symlink("/nonexistent/2016", root.join("2016")).unwrap();
        assert!(refused("broken link").contains("2016"));
        std::fs::remove_file(root.join("2016")).unwrap();
        symlink("/nonexistent/x.csv", root.join("20141030-0000000000.csv")).unwrap();
        assert!(refused("broken link").contains("20141030-0000000000.csv"));
    }

    /// Streams `name` (a DMS file of 10 batches' rows of `id,v`, `op` first when given) from a
    /// fresh landing zone, calls `change` on its path once the first batch is taken (the
    /// reader, a few batches ahead, is then still reading), and returns the stream's outcome.
    async fn read_while(
        name: &str,
        op: bool,
        change: impl FnOnce(&Path),
    ) -> Result<Vec<ChangeBatch>> {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("s/t");
        std::fs::create_dir_all(&folder).unwrap();
        let rows = 10 * crate::core::batch::BATCH_ROWS;
        let prefix = if op { "I," } else { "" };
        let text: String = (0..rows).map(|i| format!("{prefix}{i},a\n")).collect();
        let path = folder.join(name);
        std::fs::write(&path, &text).unwrap();
        let entry: crate::config::TableEntry = serde_yaml::from_str(
            "source: s/t\nprimary_key: [id]\ncolumns:\n- {name: id, type: long}\n- {name: v, type: string}\n",
        )
        .unwrap();
        let lake = crate::config::storage::LakeRoot::local(&dir.path().join("lake"));
        let config = entry.changelog_table(0, &lake).unwrap();
        let mut zone = LandingZone::open(&folder, &config, 0, ProgressBar::hidden()).unwrap();
        zone.plan(&Committed::default()).unwrap();
        let mut stream = zone.changes();
        let mut batches = vec![stream.try_next().await?.expect("a first batch")];
        change(&path);
        while let Some(batch) = stream.try_next().await? {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// [`read_while`] fails, naming the file as changed.
    async fn refused_while(name: &str, op: bool, change: impl FnOnce(&Path), how: &str) {
        let err = read_while(name, op, change).await.unwrap_err().to_string();
        assert!(
            err.contains(name) && err.contains(&format!("{how} while the run read it")),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_written_while_the_run_reads_it_fails_the_run() {
        // Untouched: every row, no error.
        let rows = 10 * crate::core::batch::BATCH_ROWS;
        let batches = read_while("LOAD00000001.csv", false, |_| {}).await.unwrap();
        assert_eq!(batches.iter().map(ChangeBatch::len).sum::<usize>(), rows);
        // A LOAD file replaced by a rename with other bytes of the same size: before, its rows
        // were applied from the old bytes and its digest taken from the new ones, so the next
        // run took the new load for the one applied.
        let replaced = |path: &Path| {
            let text = std::fs::read_to_string(path)
                .unwrap()
                .replace(",a\n", ",b\n");
            let new = path.with_extension("tmp");
            std::fs::write(&new, text).unwrap();
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
            std::fs::File::options()
                .write(true)
                .open(&new)
                .unwrap()
                .set_modified(later)
                .unwrap();
            std::fs::rename(&new, path).unwrap();
        };
        refused_while(
            "LOAD00000001.csv",
            false,
            replaced,
            "replaced by another file",
        )
        .await;
        // A change file still being written (rows appended in place).
        let appended = |path: &Path| {
            use std::io::Write;
            let mut file = std::fs::File::options().append(true).open(path).unwrap();
            file.write_all(b"I,-1,late\n").unwrap();
        };
        refused_while("20240101-000000000.csv", true, appended, "written").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_file_ends_the_stream_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("s/t");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("20240101-000000000.csv"), "I,1\nI,x\n").unwrap();
        let entry: crate::config::TableEntry = serde_yaml::from_str(
            "source: s/t\nprimary_key: [id]\ncolumns:\n- {name: id, type: long}\n",
        )
        .unwrap();
        let config = entry
            .changelog_table(
                0,
                &crate::config::storage::LakeRoot::local(&dir.path().join("lake")),
            )
            .unwrap();
        let mut zone = LandingZone::open(&folder, &config, 0, ProgressBar::hidden()).unwrap();
        zone.plan(&Committed::default()).unwrap();
        let err = zone
            .changes()
            .try_collect::<Vec<ChangeBatch>>()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("`id`"), "{err}");
    }
}
