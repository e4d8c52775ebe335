//! The `tributary` command line: one module per command, each with its arguments (clap), its
//! call into the library and its output (human text, or JSON with `--json`). `main.rs` parses
//! the command line and dispatches here.

pub mod allocator;
pub mod check;
pub mod demo;
pub mod generate;
pub mod panics;
pub mod run;
pub mod sync;
pub mod tables;
pub mod validate;

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// Logs when RUST_LOG is unset: Tributary at info; libraries only on errors (delta-kernel logs an
/// expected "no files in log segment" error while probing a new table, so it stays off).
pub const DEFAULT_LOG_FILTER: &str =
    "warn,tributary=info,deltalake_core=error,buoyant_kernel=off,delta_kernel=off";

/// Parses a business date, `YYYY-MM-DD`.
///
/// # Errors
/// [`Error::Usage`] naming the text.
pub fn parse_date(text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| {
        Error::Usage(format!(
            "BUS_EFF_DATE `{text}` is not a YYYY-MM-DD date: {e}"
        ))
    })
}

/// Prints a summary as pretty JSON on stdout.
///
/// # Errors
/// JSON errors (none expected).
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
