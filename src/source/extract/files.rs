//! Input discovery (a file or a folder of files) and the input fingerprint.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use crate::config::InputFormat;
use crate::error::{Error, Result};

/// One input file and its format.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    /// Where the file is.
    pub path: PathBuf,
    /// How it is read.
    pub format: InputFormat,
    /// Size in bytes.
    pub size: u64,
    /// Modification time when listed ([`modified_ms`]).
    pub modified_ms: i64,
    /// (device, inode) when listed ([`file_id`]; None for a file not listed).
    pub file_id: Option<FileId>,
}

impl InputFile {
    /// The path as shown in messages, the run's summary and the rejects table: the object's
    /// URL for a file of an extract copied from an object store ([`super::remote::shown`]).
    pub fn display(&self) -> String {
        super::remote::shown(&self.path).unwrap_or_else(|| self.path.display().to_string())
    }
}

/// A file's identity on its file system: (device, inode). A file replaced by a rename has
/// another.
pub type FileId = (u64, u64);

/// The (device, inode) of a file.
pub fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Milliseconds since the Unix epoch of a file's modification time (0 when it has none).
pub fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Refuses a local file whose size, modification time ([`modified_ms`]) or identity
/// ([`file_id`], when `listed` has one) is no longer the one listed when the run was planned
/// (`listed`: size in bytes, time, identity): it was written while the run read it (in place,
/// or replaced by a rename, even one that kept the size and time). Its rows may be a mix of
/// two versions, and what the run records of it (fingerprint, digest, size) may describe bytes
/// that were not the ones applied; the run fails before its commit and the next run reads the
/// file afresh. Called once a file is read and its digest taken.
///
/// # Errors
/// [`Error::Input`] naming the file: it changed, or it cannot be read any more.
pub fn as_listed(path: &Path, listed: (u64, i64, Option<FileId>)) -> Result<()> {
    let input = |reason: String| Error::Input {
        path: path.to_path_buf(),
        reason,
    };
    let (size, modified_ms, id) = listed;
    let meta = std::fs::metadata(path).map_err(|e| input(format!("cannot read: {e}")))?;
    let now = (meta.len(), self::modified_ms(&meta));
    let replaced = id.is_some_and(|id| id != file_id(&meta));
    if now == (size, modified_ms) && !replaced {
        return Ok(());
    }
    let how = match replaced {
        true => "replaced by another file",
        false => "written",
    };
    Err(input(format!(
        "{how} while the run read it ({size} bytes, modified at {modified_ms} ms when listed; \
         {} bytes, modified at {} ms now): nothing is applied; land files whole (write, then \
         rename) and run again",
        now.0, now.1
    )))
}

fn format_of(path: &Path) -> Option<InputFormat> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "csv" | "txt" | "dat" => Some(InputFormat::Csv),
        "parquet" | "parq" => Some(InputFormat::Parquet),
        _ => None,
    }
}

/// The compression extension of a file name (`gz`, `bz2`, `zst`, ...), if it has one. Such
/// files are not read (decompress them first); messages say so rather than "no input file".
pub fn compressed_extension(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    ["gz", "gzip", "bz2", "zst", "xz", "zip", "snappy", "lz4"]
        .into_iter()
        .find(|ext| lower.ends_with(&format!(".{ext}")))
}

/// The command that decompresses files with extension `ext` (from [`compressed_extension`]).
pub fn decompress_tool(ext: &str) -> &'static str {
    match ext {
        "gz" | "gzip" => "gunzip",
        "bz2" => "bunzip2",
        "zst" => "unzstd",
        "xz" => "unxz",
        "zip" => "unzip",
        "lz4" => "unlz4",
        _ => "the tool that wrote them",
    }
}

/// The reason given for a compressed file that is not read.
pub fn compressed_reason(ext: &str) -> String {
    format!(
        "compressed (.{ext}): Tributary reads uncompressed files; decompress it first (with {}), \
         or have the writer leave files uncompressed",
        decompress_tool(ext)
    )
}

/// A folder entry of an extract that is not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedFile {
    /// The entry's name in the folder.
    pub name: String,
    /// Why it is not read.
    pub reason: String,
}

/// The files of an extract to read, and the other entries of its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct InputListing {
    /// Files to read, sorted by name.
    pub files: Vec<InputFile>,
    /// Entries not read, sorted by name (reported in the run summary, never dropped silently).
    pub skipped: Vec<SkippedFile>,
}

/// Lists the files of `input`: the file itself, or every `*.csv` (or `*.parquet`) file of a folder,
/// sorted by name; names starting with `_` or `.` (Spark's `_SUCCESS`, `.crc` files) are skipped.
/// `format` forces the format; otherwise it is taken from the extension. Symbolic links are
/// followed (a linked part file is read like any other); every entry not read is listed in
/// [`InputListing::skipped`] with the reason.
///
/// # Errors
/// [`Error::Input`] when the input does not exist, a folder holds no input file or a mix of
/// formats, a single file's format cannot be told, or a link in the folder is broken.
pub fn list_input_files(input: &Path, format: Option<InputFormat>) -> Result<InputListing> {
    let err = |reason: String| Error::Input {
        path: input.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(input).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.is_file() {
        let name = input.file_name().unwrap_or_default().to_string_lossy();
        if let Some(ext) = compressed_extension(&name) {
            return Err(err(compressed_reason(ext)));
        }
        let format = format.or_else(|| format_of(input)).ok_or_else(|| {
            err("cannot tell the format from the extension; set `format:` in the config".into())
        })?;
        return Ok(InputListing {
            files: vec![InputFile {
                path: input.to_path_buf(),
                format,
                size: meta.len(),
                modified_ms: modified_ms(&meta),
                file_id: Some(file_id(&meta)),
            }],
            skipped: Vec::new(),
        });
    }
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(input)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        let mut skip = |reason: &str| {
            skipped.push(SkippedFile {
                name: name.clone(),
                reason: reason.to_string(),
            })
        };
        if name.starts_with('_') || name.starts_with('.') {
            skip("name starts with `_` or `.` (a marker or hidden file)");
            continue;
        }
        if let Some(ext) = compressed_extension(&name) {
            skip(&compressed_reason(ext));
            continue;
        }
        let Some(file_format) = format_of(&path) else {
            match entry.file_type()?.is_dir() {
                true => skip("a folder (sub-folders are not read)"),
                false => skip("not a .csv, .txt, .dat, .parquet or .parq file"),
            }
            continue;
        };
        if format.is_some_and(|f| f != file_format) {
            skip("its extension is not the configured `format:`");
            continue;
        }
        // Follows symbolic links: a linked part file is an input file, a broken one an error.
        let meta = std::fs::metadata(&path).map_err(|e| Error::Input {
            path: path.clone(),
            reason: format!("cannot read (a broken link?): {e}"),
        })?;
        if !meta.is_file() {
            skip("a folder (sub-folders are not read)");
            continue;
        }
        files.push(InputFile {
            size: meta.len(),
            modified_ms: modified_ms(&meta),
            file_id: Some(file_id(&meta)),
            path,
            format: file_format,
        });
    }
    if files.is_empty() {
        let compressed: Vec<&str> = skipped
            .iter()
            .filter(|s| compressed_extension(&s.name).is_some())
            .map(|s| s.name.as_str())
            .collect();
        return Err(err(match compressed.first() {
            None => "no *.csv or *.parquet file in this folder".into(),
            Some(first) => format!(
                "no *.csv or *.parquet file in this folder, but {} compressed file(s) such as \
                 `{first}`, which are not read: decompress them first (with {}), or write \
                 Parquet, which is compressed inside",
                compressed.len(),
                compressed_extension(first).map_or("their tool", decompress_tool),
            ),
        }));
    }
    if files.iter().any(|f| f.format != files[0].format) {
        return Err(err(
            "holds both CSV and Parquet files; set `format:` in the config".into(),
        ));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    skipped.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &skipped {
        tracing::info!(file = %input.join(&s.name).display(), reason = %s.reason, "not read");
    }
    Ok(InputListing { files, skipped })
}

/// A 128-bit fingerprint of the input: XXH3-128 over each file's name, size and content, in
/// listing order. The same files give the same fingerprint wherever they are stored.
///
/// # Errors
/// I/O errors reading the files.
pub fn fingerprint(files: &[InputFile]) -> Result<String> {
    fingerprint_unless(files, &AtomicBool::new(false))
}

/// The input's [`fingerprint`], computed on its own thread while the caller goes on (it reads
/// every byte of the input once more, which takes a core about 0.1 s per 400 MB). Dropping it
/// stops the thread at its next read.
pub struct PendingFingerprint {
    task: Option<std::thread::JoinHandle<Result<String>>>,
    value: Option<String>,
    cancel: Arc<AtomicBool>,
}

impl PendingFingerprint {
    /// Starts fingerprinting `files`.
    ///
    /// # Errors
    /// [`Error::Io`] when the thread cannot be started.
    pub fn start(files: &[InputFile]) -> Result<Self> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (files, stop) = (files.to_vec(), cancel.clone());
        let task = std::thread::Builder::new()
            .name("fingerprint".into())
            .spawn(move || fingerprint_unless(&files, &stop))?;
        Ok(PendingFingerprint {
            task: Some(task),
            value: None,
            cancel,
        })
    }

    /// The fingerprint, waiting for it the first time (the calling thread blocks: call it
    /// inside `block_in_place` on a tokio runtime).
    ///
    /// # Errors
    /// I/O errors reading the files; [`Error::Internal`] if the thread panicked.
    pub fn get(&mut self) -> Result<String> {
        if let Some(task) = self.task.take() {
            let value = task
                .join()
                .map_err(|_| Error::Internal("the fingerprint thread panicked".into()))??;
            self.value = Some(value);
        }
        self.value
            .clone()
            .ok_or_else(|| Error::Internal("fingerprint failed earlier".into()))
    }
}

impl Drop for PendingFingerprint {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// [`fingerprint`], giving up with [`Error::Internal`] once `cancel` is set.
fn fingerprint_unless(files: &[InputFile], cancel: &AtomicBool) -> Result<String> {
    let mut all = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    for file in files {
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        all.update(&(name.len() as u64).to_le_bytes());
        all.update(name.as_bytes());
        all.update(&file.size.to_le_bytes());
        let mut f = std::fs::File::open(&file.path)?;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Internal("fingerprint cancelled".into()));
            }
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            all.update(&buf[..n]);
        }
    }
    Ok(format!("{:032x}", all.digest128()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_fingerprint_is_the_fingerprint_and_io_errors_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), vec![b'x'; 3 << 20]).unwrap();
        std::fs::write(dir.path().join("b.csv"), "y").unwrap();
        let files = list_input_files(dir.path(), None).unwrap().files;
        let mut pending = PendingFingerprint::start(&files).unwrap();
        let expected = fingerprint(&files).unwrap();
        assert_eq!(pending.get().unwrap(), expected);
        assert_eq!(pending.get().unwrap(), expected, "asked twice");
        std::fs::remove_file(dir.path().join("b.csv")).unwrap();
        let mut gone = PendingFingerprint::start(&files).unwrap();
        assert!(
            matches!(gone.get(), Err(Error::Io(_))),
            "a missing file is an I/O error"
        );
    }

    #[test]
    fn folder_listing_skips_markers_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.csv", "a.csv", "_SUCCESS", ".a.csv.crc", "notes.md"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let listing = list_input_files(dir.path(), None).unwrap();
        let names: Vec<_> = listing
            .files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.csv", "b.csv"]);
        // Nothing is skipped silently: every other entry is listed with its reason.
        let skipped: Vec<&str> = listing.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, [".a.csv.crc", "_SUCCESS", "notes.md", "sub"]);
        assert!(listing.skipped[3].reason.contains("folder"));
    }

    #[test]
    fn symlinked_part_files_are_read_and_broken_links_are_errors() {
        let (dir, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(dir.path().join("part-0.csv"), "1,a\n").unwrap();
        std::fs::write(elsewhere.path().join("part-1.csv"), "2,b\n").unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("part-1.csv"),
            dir.path().join("part-1.csv"),
        )
        .unwrap();
        let listing = list_input_files(dir.path(), None).unwrap();
        assert_eq!(listing.files.len(), 2, "{listing:?}");
        assert_eq!(listing.files[1].size, 4, "the link's target size");
        // A broken link that is not an input file is only listed.
        std::os::unix::fs::symlink("/nonexistent/notes.md", dir.path().join("notes.md")).unwrap();
        let listing = list_input_files(dir.path(), None).unwrap();
        assert_eq!(listing.skipped[0].name, "notes.md");
        std::os::unix::fs::symlink("/nonexistent/part-2.csv", dir.path().join("part-2.csv"))
            .unwrap();
        let err = list_input_files(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("part-2.csv") && err.contains("broken link"),
            "{err}"
        );
    }

    #[test]
    fn a_file_is_as_listed_until_it_is_written_replaced_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0.csv");
        std::fs::write(&path, "1,a\n").unwrap();
        let file = list_input_files(&path, None).unwrap().files.remove(0);
        let listed = (file.size, file.modified_ms, file.file_id);
        assert_eq!(file.size, 4);
        as_listed(&path, listed).unwrap();
        let refused = |how: &str| {
            let err = as_listed(&path, listed).unwrap_err().to_string();
            assert!(
                err.contains("part-0.csv") && err.contains(&format!("{how} while the run read it")),
                "{err}"
            );
            err
        };
        let set_time = |path: &Path, time: std::time::SystemTime| {
            let file = std::fs::File::options().write(true).open(path).unwrap();
            file.set_modified(time).unwrap();
        };
        let listed_time =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(file.modified_ms as u64);
        // the same size, written later
        set_time(
            &path,
            std::time::SystemTime::now() + std::time::Duration::from_secs(5),
        );
        assert!(refused("written").contains("4 bytes"));
        // grown, with the time set back: the size tells
        std::fs::write(&path, "1,a\n2,b\n").unwrap();
        set_time(&path, listed_time);
        assert!(refused("written").contains("8 bytes"));
        // replaced by a rename with the listed size and time (`cp -p`, then `mv`): its
        // identity tells
        let other = dir.path().join("part-0.tmp");
        std::fs::write(&other, "9,z\n").unwrap();
        set_time(&other, listed_time);
        std::fs::rename(&other, &path).unwrap();
        refused("replaced by another file");
        std::fs::remove_file(&path).unwrap();
        let err = as_listed(&path, listed).unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn empty_or_mixed_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_input_files(dir.path(), None).is_err());
        std::fs::write(dir.path().join("a.csv"), "x").unwrap();
        std::fs::write(dir.path().join("b.parquet"), "x").unwrap();
        assert!(list_input_files(dir.path(), None)
            .unwrap_err()
            .to_string()
            .contains("both"));
        assert_eq!(
            list_input_files(dir.path(), Some(InputFormat::Csv))
                .unwrap()
                .files
                .len(),
            1
        );
    }

    #[test]
    fn fingerprint_follows_content_not_location() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(a.path().join("d.csv"), "1,2\n").unwrap();
        std::fs::write(b.path().join("d.csv"), "1,2\n").unwrap();
        let fa = fingerprint(&list_input_files(a.path(), None).unwrap().files).unwrap();
        let fb = fingerprint(&list_input_files(b.path(), None).unwrap().files).unwrap();
        assert_eq!(fa, fb);
        std::fs::write(b.path().join("d.csv"), "1,3\n").unwrap();
        let fc = fingerprint(&list_input_files(b.path(), None).unwrap().files).unwrap();
        assert_ne!(fa, fc);
    }
}
