//! The interactive shell of `tributary sql`: line editing and history (rustyline, as
//! datafusion-cli), statements that may span lines and end with `;` (told by SQL tokens, so a
//! `;` in a string or a comment does not end one), meta-commands, and the time each statement
//! took. An error is printed and the shell goes on; Ctrl-C cancels the running statement.
//!
//! Fed from a pipe (a script), it prints only rows on stdout (the banner and times go to
//! stderr), runs a last statement that lacks its `;`, keeps no history, and exits 2 when a
//! statement failed.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
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
           as_of('t', DATE 'YYYY-MM-DD'), changes('t', FROM, TO), runs('t'),
           table_changes('t', FROM[, TO]) (the Delta change data feed)";

/// Whether `sql` ends a statement: its last token, past whitespace and comments, is `;`
/// (an unterminated string or comment does not).
pub fn complete(sql: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return false;
    };
    tokens
        .iter()
        .rev()
        .find(|t| !matches!(t, Token::Whitespace(_)))
        .is_some_and(|t| *t == Token::SemiColon)
}

/// Runs the shell until `\q` or end of input; on a terminal, history is kept in
/// `~/.tributary_history`. Returns the exit code: 2 when fed from a pipe and a statement
/// failed, else 0.
///
/// # Errors
/// [`Error::Usage`] when the input cannot be read; errors writing the output. Errors of
/// statements are printed, not returned.
pub async fn run(lake: &Lake, format: Format) -> Result<u8> {
    let interactive = std::io::stdin().is_terminal();
    let mut editor =
        DefaultEditor::new().map_err(|e| Error::Usage(format!("cannot start the shell: {e}")))?;
    let history = std::env::var_os("HOME")
        .filter(|_| interactive)
        .map(|h| std::path::Path::new(&h).join(".tributary_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    eprintln!(
        "tributary sql: {} table(s); \\d lists them, \\? helps, \\q quits",
        lake.tables().len()
    );
    let mut buffer = String::new();
    let mut failed = false;
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
            match meta(lake, trimmed, format).await? {
                Some(ok) => failed |= !ok,
                None => break,
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !complete(&buffer) {
            continue;
        }
        let statement = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(statement.trim());
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        failed |= !statements(lake, &statement, format).await?;
    }
    if !buffer.trim().is_empty() {
        // End of input inside a statement: run it rather than drop it.
        failed |= !statements(lake, &buffer, format).await?;
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(if failed && !interactive { 2 } else { 0 })
}

/// Runs statements and prints their rows (stdout) and time (stderr), or the error; Ctrl-C
/// cancels them. Returns whether they succeeded.
async fn statements(lake: &Lake, sql: &str, format: Format) -> Result<bool> {
    let started = Instant::now();
    let outcome = tokio::select! {
        outcome = lake.run(sql) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("cancelled");
            return Ok(false);
        }
    };
    match outcome {
        Ok(results) => {
            let mut out = std::io::stdout().lock();
            for result in &results {
                write(result, format, &mut out)?;
            }
            out.flush()?;
            eprintln!("{:.3} s", started.elapsed().as_secs_f64());
            Ok(true)
        }
        Err(e) => {
            eprint!("{}", error_text(&e));
            Ok(false)
        }
    }
}

/// A meta-command: None to quit, else whether it succeeded.
async fn meta(lake: &Lake, command: &str, format: Format) -> Result<Option<bool>> {
    let (word, rest) = command
        .split_once(char::is_whitespace)
        .map_or((command, ""), |(w, r)| (w, r.trim()));
    let ok = match (word, rest) {
        ("\\q", _) => return Ok(None),
        ("\\?", _) => {
            println!("{HELP}");
            true
        }
        ("\\d", "") => {
            statements(
                lake,
                "SELECT table_schema, table_name, table_type FROM information_schema.tables \
                 WHERE table_schema <> 'information_schema' ORDER BY table_schema, table_name",
                format,
            )
            .await?
        }
        ("\\d", name) => {
            // The name as a string literal: `schema.table` or `table`, quotes doubled.
            let (schema, table) = name
                .rsplit_once('.')
                .map_or((None, name), |(s, t)| (Some(s), t));
            let literal = |s: &str| format!("'{}'", s.trim_matches('"').replace('\'', "''"));
            let filter = match schema {
                Some(schema) => format!(
                    "table_schema = {} AND table_name = {}",
                    literal(schema),
                    literal(table)
                ),
                None => format!("table_name = {}", literal(table)),
            };
            statements(
                lake,
                &format!(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                     WHERE {filter} ORDER BY ordinal_position"
                ),
                format,
            )
            .await?
        }
        _ => {
            eprintln!("error: unknown command `{command}` (\\? lists them)");
            false
        }
    };
    Ok(Some(ok))
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn a_statement_ends_at_a_semicolon_token() {
        assert!(complete("SELECT 1;"));
        assert!(complete("SELECT 1;\n"));
        assert!(complete("SELECT 1; -- done\n"));
        assert!(!complete("SELECT 1"));
        assert!(!complete("SELECT 'a;\n"), "inside a string");
        assert!(!complete("SELECT 1 -- note;\n"), "inside a comment");
        assert!(complete("SELECT 'a;\nb';"));
    }
}
