//! The interactive shell of `tributary sql`: line editing and history (rustyline, as
//! datafusion-cli), statements that may span lines and end with `;`, meta-commands, and the
//! time each statement took. An error is printed and the shell goes on.

use std::io::Write;
use std::time::Instant;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use super::logs::error_text;
use crate::error::{Error, Result};
use crate::query::output::{write, Format};
use crate::query::Lake;

const HELP: &str = "\
statements end with `;` and may span lines
  \\d          list the tables (current, _history, _scd2 views)
  \\d NAME     the columns of a table
  \\?          this help
  \\q          quit (or Ctrl-D)
functions: version_as_of('t', N), timestamp_as_of('t', 'YYYY-MM-DD HH:MM:SS'),
           as_of('t', DATE 'YYYY-MM-DD'), changes('t', FROM, TO), runs('t')";

/// Runs the shell until `\q` or end of input; history is kept in `~/.tributary_history`.
///
/// # Errors
/// [`Error::Usage`] when the terminal cannot be used; errors writing the output. Errors of
/// statements are printed, not returned.
pub async fn run(lake: &Lake, format: Format) -> Result<u8> {
    let mut editor =
        DefaultEditor::new().map_err(|e| Error::Usage(format!("cannot start the shell: {e}")))?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".tributary_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!(
        "tributary sql: {} table(s); \\d lists them, \\? helps, \\q quits",
        lake.tables().len()
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "tributary> "
        } else {
            "        -> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Usage(format!("cannot read the next line: {e}"))),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            if !meta(lake, trimmed, format).await? {
                break;
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let statement = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(statement.trim());
        statements(lake, &statement, format).await?;
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(0)
}

/// Runs statements and prints their rows and time, or the error.
async fn statements(lake: &Lake, sql: &str, format: Format) -> Result<()> {
    let started = Instant::now();
    match lake.run(sql).await {
        Ok(results) => {
            let mut out = std::io::stdout().lock();
            for result in &results {
                write(result, format, &mut out)?;
            }
            writeln!(out, "{:.3} s", started.elapsed().as_secs_f64())?;
        }
        Err(e) => eprint!("{}", error_text(&e)),
    }
    Ok(())
}

/// A meta-command; false: quit.
async fn meta(lake: &Lake, command: &str, format: Format) -> Result<bool> {
    let mut words = command.split_whitespace();
    match (words.next(), words.next()) {
        (Some("\\q"), _) => return Ok(false),
        (Some("\\?"), _) => println!("{HELP}"),
        (Some("\\d"), None) => {
            statements(
                lake,
                "SELECT table_schema, table_name, table_type FROM information_schema.tables \
                 WHERE table_schema <> 'information_schema' ORDER BY table_schema, table_name;",
                format,
            )
            .await?
        }
        (Some("\\d"), Some(name)) => {
            statements(lake, &format!("SHOW COLUMNS FROM {name};"), format).await?
        }
        _ => eprintln!("error: unknown command `{command}` (\\? lists them)"),
    }
    Ok(true)
}
