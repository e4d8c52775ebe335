//! `tributary demo`: the seed article's example end to end (10,000 rows, 5 keys, 10 non-keys,
//! 20% deleted / 40% updated / 40% unchanged), run for 2019-06-18 and 2019-06-19.
//!
//! Every demo starts clean: a folder that an earlier demo made (it holds the demo's marker file,
//! `.tributary-demo`) is emptied of what the demo writes (`data/`, `lake/`, `config.yaml`)
//! first, so a second demo prints the same summaries as the first. Any other folder that is not
//! empty is refused, never emptied.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::generate::{config_yaml, generate, GenerateSpec, GenerateSummary};
use crate::snapshot::summary::RunSummary;
use crate::snapshot::{run, RunOptions};

/// Arguments of `tributary demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder for the data, config and lake (default ./tributary-demo). A folder an earlier demo
    /// made is started again from scratch; any other non-empty folder is refused.
    pub dir: Option<PathBuf>,
}

/// What the demo writes in its folder; all of it is removed when a demo starts again.
const DEMO_ENTRIES: [&str; 4] = ["data", "lake", "config.yaml", MARKER];

/// The file that marks a folder as a demo's.
const MARKER: &str = ".tributary-demo";

/// Runs `tributary demo` and prints what it did, then how to read the tables.
///
/// # Errors
/// Those of [`demo`].
pub async fn execute(args: DemoArgs) -> Result<u8> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("tributary-demo"));
    let demo = demo(&dir).await?;
    if demo.restarted {
        println!(
            "removed the previous demo's data and lake under {}; starting clean\n",
            dir.display()
        );
    }
    let generated = &demo.generated;
    println!(
        "generated {} rows (day 2: {} deleted, {} updated, {} unchanged, {} inserted) under {}\n",
        generated.initial_rows,
        generated.deleted,
        generated.updated,
        generated.unchanged,
        generated.inserted,
        dir.join("data").display()
    );
    for s in &demo.summaries {
        println!("{s}\n");
    }
    let lake = std::path::absolute(dir.join("lake")).unwrap_or(dir.join("lake"));
    println!(
        "tables: {0}/sample_data_current and {0}/sample_data_history (Delta Lake; config {1})",
        lake.display(),
        dir.join("config.yaml").display()
    );
    println!("query them (offline):");
    println!("  {}", sql_command(&dir.join("config.yaml")));
    println!("or with Python (once: pip install deltalake pyarrow):");
    println!("  {}", read_command(&lake));
    Ok(0)
}

/// A `tributary sql` command that counts each operation in the demo's history table. It names
/// this binary as the shell finds it: `tributary` when that is this binary on PATH, else its
/// path (`target/release/tributary` after `cargo run`).
pub fn sql_command(config: &Path) -> String {
    let config = std::path::absolute(config).unwrap_or(config.to_path_buf());
    format!(
        "{} sql --config {} -e \"SELECT operation, count(*) AS n FROM sample_data_history \
         GROUP BY 1 ORDER BY 1\"",
        shell_quote(&this_binary()),
        shell_quote(&config.to_string_lossy())
    )
}

/// How to call this binary from a shell: `tributary` when PATH finds this very file.
fn this_binary() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "tributary".into();
    };
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                dir.join("tributary")
                    .canonicalize()
                    .is_ok_and(|found| found == exe)
            })
        })
        .unwrap_or(false);
    if on_path {
        "tributary".into()
    } else {
        exe.to_string_lossy().into_owned()
    }
}

/// A shell command that prints the count of each operation in the demo's history table, with
/// the Python `deltalake` and `pyarrow` packages only (no download at run time). The table's
/// path is a shell-quoted argument, whatever characters it holds. It reads with one thread and
/// leaves with `os._exit` once the rows are printed: PyArrow's threads can abort the
/// interpreter at exit ("terminate called without an active exception", apache/arrow#34314),
/// which `to_pyarrow_table()` hits most times here and one thread alone still did under load.
pub fn read_command(lake: &Path) -> String {
    let table = lake.join("sample_data_history");
    format!(
        "python3 -c \"import os, sys; from deltalake import DeltaTable; \
         print(DeltaTable(sys.argv[1]).to_pyarrow_dataset().to_table(use_threads=False)\
         .group_by('operation', use_threads=False).aggregate([('operation', 'count')]).to_pylist()); \
         sys.stdout.flush(); os._exit(0)\" {}",
        shell_quote(&table.to_string_lossy())
    )
}

/// `text` as one POSIX shell word: as it is when it holds only characters the shell takes
/// literally, else in single quotes, each `'` written `'\''`.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c));
    if plain {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Business dates of the two demo days.
pub const DEMO_DATES: [&str; 2] = ["2019-06-18", "2019-06-19"];

/// What [`demo`] did.
#[derive(Debug)]
pub struct Demo {
    /// The generated data.
    pub generated: GenerateSummary,
    /// One summary per day.
    pub summaries: Vec<RunSummary>,
    /// Whether an earlier demo's files were removed first.
    pub restarted: bool,
}

/// Generates the demo data and config under `dir` and runs both days, after removing an
/// earlier demo's files from `dir` (the same seed gives the same files, so every demo prints
/// the same summaries).
///
/// # Errors
/// [`Error::Usage`] when `dir` is not empty and holds anything a demo does not write; any
/// error of [`generate`] or [`run`].
pub async fn demo(dir: &Path) -> Result<Demo> {
    let restarted = start_clean(dir)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "written by `tributary demo`: a later demo empties this folder\n",
    )?;
    let spec = GenerateSpec::seed_example(dir.join("data/day1"), dir.join("data/day2"), 20190618);
    let generated = generate(&spec)?;
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config_yaml("sample_data", 5, 10))?;
    let config = TableConfig::load(&config_path)?;
    let mut summaries = Vec::new();
    for (input, date) in [&spec.initial_output, &spec.incremental_output]
        .into_iter()
        .zip(DEMO_DATES)
    {
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|e| Error::Internal(e.to_string()))?;
        summaries.push(run(&config, input, date, RunOptions::default()).await?);
    }
    Ok(Demo {
        generated,
        summaries,
        restarted,
    })
}

/// Removes an earlier demo's files from `dir`; returns whether there were any. Only a folder
/// with the demo's marker file and nothing but what a demo writes is emptied; any other folder
/// that is not empty is refused and left as it is (a user's config, data or lake is never
/// taken for a demo's).
fn start_clean(dir: &Path) -> Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<String>>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(Error::Usage(format!(
                "demo folder {}: cannot read it: {e}",
                dir.display()
            )))
        }
    };
    if entries.is_empty() {
        return Ok(false);
    }
    let foreign: Vec<&String> = entries
        .iter()
        .filter(|e| !DEMO_ENTRIES.contains(&e.as_str()))
        .collect();
    let refuse = |why: String| {
        Error::Usage(format!(
            "demo folder {} {why}: pass a new or empty folder, e.g. `tributary demo \
             /tmp/tributary-demo`",
            dir.display()
        ))
    };
    if let Some(first) = foreign.first() {
        return Err(refuse(format!(
            "holds files the demo did not write (such as `{first}`)"
        )));
    }
    if !entries.iter().any(|e| e == MARKER) {
        return Err(refuse(format!(
            "is not empty and was not made by `tributary demo` (no {MARKER} file)"
        )));
    }
    for entry in &entries {
        let path = dir.join(entry);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|source| Error::Storage {
            action: "cannot remove the previous demo's".into(),
            path: path.clone(),
            source,
        })?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_demo_folder_is_emptied() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        assert!(!start_clean(&dir).unwrap(), "a missing folder");
        // A user's config and lake, named as the demo names its own: refused, kept.
        std::fs::create_dir_all(dir.join("lake/t")).unwrap();
        std::fs::write(dir.join("config.yaml"), "x").unwrap();
        let err = start_clean(&dir).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("no .tributary-demo file"), "{err}");
        assert!(dir.join("lake/t").is_dir() && dir.join("config.yaml").is_file());
        // With the marker: a demo's, emptied.
        std::fs::write(dir.join(MARKER), "").unwrap();
        assert!(start_clean(&dir).unwrap());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(!start_clean(&dir).unwrap(), "an empty folder");
        std::fs::create_dir_all(dir.join("lake")).unwrap();
        std::fs::write(dir.join(MARKER), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = start_clean(&dir).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("`notes.txt`"), "{err}");
        assert!(dir.join("notes.txt").exists() && dir.join("lake").exists());
    }

    #[test]
    fn the_read_command_quotes_the_path() {
        let command = read_command(Path::new("/tmp/it's $HOME/lake"));
        assert!(
            command.ends_with(" '/tmp/it'\\''s $HOME/lake/sample_data_history'"),
            "{command}"
        );
    }
}
