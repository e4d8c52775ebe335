//! `tributary sql`: queries over the lake's tables (DataFusion SQL), with time travel, SCD2
//! views and as-of queries (`query`).

use std::io::{IsTerminal, Read, Write};

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::query::catalog::named_tables;
use crate::query::output::Format;
use crate::query::Lake;

/// Arguments of `tributary sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// Lake root of `tributary sync` (a folder or an object-store prefix, s3://bucket/lake):
    /// its `<schema>/<table>` tables are registered as
    /// `schema.table`, `schema.table_history` and `schema.table_scd2`.
    #[arg(long)]
    pub lake: Option<String>,
    /// The tables file of --lake, whose `storage_options` reach an object-store lake (default:
    /// the environment's settings).
    #[arg(long, requires = "lake", value_name = "FILE")]
    pub tables: Option<PathBuf>,
    /// A snapshot table config (repeatable): its tables are registered as `<name>`,
    /// `<name>_history` and `<name>_scd2`.
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
    /// Statements to run, separated by `;`.
    #[arg(
        short = 'e',
        long = "execute",
        value_name = "SQL",
        conflicts_with = "file"
    )]
    pub execute: Option<String>,
    /// A file of statements separated by `;` (`-` for standard input). Without -e or -f, an
    /// interactive shell (`\?` for help).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the rows here instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs the statements and prints the rows of each.
///
/// # Errors
/// [`Error::Usage`] without tables or statements, and for statements that cannot be planned
/// (exit 2); those of [`Lake::open`] and [`Lake::run`].
pub async fn execute(args: SqlArgs) -> Result<u8> {
    let tables = named_tables(
        super::lake_root(args.lake.as_deref(), args.tables.as_deref())?.as_ref(),
        &args.configs,
    )?;
    let sql = match (&args.execute, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => read_stdin()?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            Error::Usage(format!(
                "-f {}: cannot read the statements: {e}",
                path.display()
            ))
        })?,
        (None, None) => {
            if args.output.is_some() {
                return Err(Error::Usage(
                    "-o writes the rows of -e or -f statements; the shell prints them".into(),
                ));
            }
            let lake = Lake::open(tables).await?;
            return super::repl::run(&lake, args.format).await;
        }
    };
    let lake = Lake::open(tables).await?;
    let started = Instant::now();
    // Rows are written as they are computed (CSV, JSON lines): an export larger than memory.
    // `-o FILE` is written beside FILE and renamed to it once every statement succeeded: a
    // failed statement leaves no half-written FILE (nor replaces an earlier one). A FILE that
    // exists and is not a regular file (a device, a pipe, `/dev/stdout`) is written directly.
    match &args.output {
        Some(path) => {
            let storage = |source| Error::Storage {
                action: "cannot write the query output to".into(),
                path: path.clone(),
                source,
            };
            let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
            if special {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(storage)?;
                let mut out = std::io::BufWriter::new(file);
                lake.run_into(&sql, args.format, &mut out).await?;
                out.flush().map_err(storage)?;
            } else {
                write_whole(&lake, &sql, args.format, path).await?;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            lake.run_into(&sql, args.format, &mut out).await?;
            out.flush()?;
        }
    }
    if args.format == Format::Table && std::io::stderr().is_terminal() {
        eprintln!("{:.3} s", started.elapsed().as_secs_f64());
    }
    Ok(0)
}

/// Writes the rows of `sql` to a temporary file beside `path` (the file a link names), then
/// renames it to that file once every statement succeeded.
async fn write_whole(lake: &Lake, sql: &str, format: Format, path: &std::path::Path) -> Result<()> {
    let storage = |source| Error::Storage {
        action: "cannot write the query output to".into(),
        path: path.to_path_buf(),
        source,
    };
    // a link is written through: the file it names is replaced
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let folder = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    use std::os::unix::fs::PermissionsExt;
    let file = tempfile::Builder::new()
        .prefix(".tributary-sql-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(folder)
        .map_err(storage)?;
    let mut out = std::io::BufWriter::new(file);
    lake.run_into(sql, format, &mut out).await?;
    let file = out.into_inner().map_err(|e| storage(e.into_error()))?;
    file.as_file().sync_all().map_err(storage)?;
    file.persist(&target).map_err(|e| storage(e.error))?;
    Ok(())
}

fn read_stdin() -> Result<String> {
    let mut sql = String::new();
    std::io::stdin().read_to_string(&mut sql)?;
    Ok(sql)
}
