//! The `tributary` command line: one module per command, each with its arguments (clap), its
//! call into the library and its output (human text, or JSON with `--json`). `main.rs` parses
//! the command line and dispatches here.

pub mod allocator;
pub mod capture;
pub mod check;
pub mod demo;
pub mod generate;
pub mod logs;
pub mod maintain;
pub mod panics;
pub mod register;
pub mod repl;
pub mod run;
pub mod sql;
pub mod sync;
pub mod tables;
pub mod validate;

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// Parses `--memory-limit` (`512MiB`, `2GiB`): bytes, at least
/// [`MIN_MEMORY_LIMIT`](crate::config::MIN_MEMORY_LIMIT).
///
/// # Errors
/// [`Error::Usage`] naming the text.
pub fn parse_memory_limit(text: &str) -> Result<u64> {
    let bytes = crate::config::ByteSizeText::Text(text.to_string())
        .bytes("--memory-limit")
        .map_err(|_| {
            Error::Usage(format!(
                "--memory-limit `{text}`: use a size such as 512MiB or 2GiB"
            ))
        })?;
    if bytes < crate::config::MIN_MEMORY_LIMIT {
        return Err(Error::Usage(format!(
            "--memory-limit `{text}`: at least 16MiB"
        )));
    }
    Ok(bytes)
}

/// Parses a date argument, `YYYY-MM-DD`; `what` names it in the error (`BUS_EFF_DATE`,
/// `--date`).
///
/// # Errors
/// [`Error::Usage`] naming the argument and the text.
pub fn parse_date(what: &str, text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| Error::Usage(format!("{what} `{text}` is not a YYYY-MM-DD date: {e}")))
}

/// The lake root of `--lake` (None without it), with the `storage_options` of the tables file
/// `tables` when one is given.
///
/// # Errors
/// Those of [`LakeRoot::parse`](crate::config::storage::LakeRoot::parse) and of loading the
/// tables file.
pub fn lake_root(
    lake: Option<&str>,
    tables: Option<&std::path::Path>,
) -> Result<Option<crate::config::storage::LakeRoot>> {
    let Some(lake) = lake else {
        return Ok(None);
    };
    let root = crate::config::storage::LakeRoot::parse(lake)?;
    Ok(Some(match tables {
        Some(path) if !path.exists() => {
            return Err(Error::Usage(format!(
                "--tables {}: no such file",
                path.display()
            )))
        }
        Some(path) => {
            let file = crate::config::tables::TablesFile::load(path)?;
            root.with_options(file.storage_options)
        }
        None => root,
    }))
}

/// Prints a summary as pretty JSON on stdout.
///
/// # Errors
/// JSON errors (none expected).
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
