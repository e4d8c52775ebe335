//! `tributary optimize` and `tributary vacuum`: table maintenance of a lake's tables (a
//! `sync`/`capture` lake root, or the tables of snapshot configs), one table after another.

use std::path::PathBuf;

use super::print_json;
use crate::error::{Error, Result};
use crate::query::catalog::{named_tables, LakeTable};
use crate::sink::delta::maintain::{self, OptimizeSummary, StoredLake, Vacuumed};
use crate::sink::delta::writer_properties;
use crate::sink::{conflict_pause, CONFLICT_ATTEMPTS};

/// Which tables a maintenance command acts on.
#[derive(Debug, clap::Args)]
pub struct TablesArgs {
    /// Lake root of `tributary sync` or `capture` (a folder or an object-store prefix): each
    /// of its `<schema>/<table>` tables.
    #[arg(long)]
    pub lake: Option<String>,
    /// The tables file of --lake, whose `storage_options` reach an object-store lake (default:
    /// the environment's settings).
    #[arg(long, requires = "lake", value_name = "FILE")]
    pub tables: Option<PathBuf>,
    /// A snapshot table config (repeatable): the tables it names.
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
    /// Only this table (repeatable): `schema.table` in a lake root, the config's `name`.
    #[arg(long = "table", value_name = "NAME")]
    pub only: Vec<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tributary optimize`.
#[derive(Debug, clap::Args)]
pub struct OptimizeArgs {
    /// The tables.
    #[command(flatten)]
    pub tables: TablesArgs,
    /// Target size of a compacted data file, bytes (`256MiB`, `64MB`, `1GiB`); smaller files
    /// of a partition are rewritten together.
    #[arg(long, default_value = "256MiB")]
    pub target_size: String,
}

/// Arguments of `tributary vacuum`.
#[derive(Debug, clap::Args)]
pub struct VacuumArgs {
    /// The tables.
    #[command(flatten)]
    pub tables: TablesArgs,
    /// Keep the files that the versions of this period need (time travel back that far):
    /// `168h` (the default, Delta's), `7d`, `30m`.
    #[arg(long, default_value = "168h")]
    pub retain: String,
    /// Delete the files; without it, a dry run lists them.
    #[arg(long)]
    pub delete: bool,
    /// Allow a retention below the table's `delta.deletedFileRetentionDuration` (7 days by
    /// default). Only with no run of the table writing: a run writing its files at that moment
    /// may lose them and then commit references to files that are gone.
    #[arg(long)]
    pub force: bool,
}

/// The tables `args` names, in order.
fn tables(args: &TablesArgs) -> Result<Vec<LakeTable>> {
    let mut tables = named_tables(
        super::lake_root(args.lake.as_deref(), args.tables.as_deref())?.as_ref(),
        &args.configs,
    )?;
    for name in &args.only {
        if !tables.iter().any(|t| t.qualified() == name.to_lowercase()) {
            let known: Vec<String> = tables.iter().map(LakeTable::qualified).collect();
            return Err(Error::Usage(format!(
                "--table {name}: no such table (the lake has {})",
                known.join(", ")
            )));
        }
    }
    if !args.only.is_empty() {
        let only: Vec<String> = args.only.iter().map(|n| n.to_lowercase()).collect();
        tables.retain(|t| only.contains(&t.qualified()));
    }
    Ok(tables)
}

/// Opens a table for maintenance; None (with a note) when it has no Tributary run yet.
async fn open(table: &LakeTable) -> Result<Option<StoredLake>> {
    let name = table.qualified();
    let lake = StoredLake::open(
        &name,
        &table.app_id,
        &table.current,
        &table.history,
        table.followers.clone(),
    )
    .await?;
    if lake.is_none() {
        eprintln!("{name}: no run committed yet; nothing to do");
    }
    Ok(lake)
}

/// Parses a size: bytes, or a number with a unit (`256MiB`, `64MB`, `1GiB`).
///
/// # Errors
/// [`Error::Usage`] naming the text.
pub fn parse_size(flag: &str, text: &str) -> Result<u64> {
    let bytes = text
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|e| Error::Usage(format!("{flag} `{text}`: not a size ({e}); e.g. 256MiB")))?
        .as_u64();
    if bytes < 1 << 20 {
        return Err(Error::Usage(format!(
            "{flag} `{text}`: at least 1MiB (data files are written in row groups of up to \
             that much)"
        )));
    }
    Ok(bytes)
}

/// Parses a retention: a number of hours, or a number with `s`, `m`, `h` or `d` (0 allowed).
///
/// # Errors
/// [`Error::Usage`] naming the text.
pub fn parse_retention(text: &str) -> Result<std::time::Duration> {
    let trimmed = text.trim();
    let (number, factor) = match trimmed.char_indices().last() {
        Some((i, 's')) => (&trimmed[..i], 1.0),
        Some((i, 'm')) => (&trimmed[..i], 60.0),
        Some((i, 'h')) => (&trimmed[..i], 3600.0),
        Some((i, 'd')) => (&trimmed[..i], 86400.0),
        _ => (trimmed, 3600.0),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n >= 0.0)
        .and_then(|n| std::time::Duration::try_from_secs_f64(n * factor).ok())
        .ok_or_else(|| Error::Usage(format!("--retain `{text}`: use 168h, 7d or 30m")))
}

/// Runs `tributary optimize`: compacts each table (see `maintain::optimize`), a run that loses
/// to another run of the table planning again, and prints what it did.
///
/// # Errors
/// Usage errors; the first table's error (the tables before it stay compacted).
pub async fn optimize(args: OptimizeArgs) -> Result<u8> {
    let target = parse_size("--target-size", &args.target_size)?;
    let mut done: Vec<OptimizeSummary> = Vec::new();
    for table in tables(&args.tables)? {
        let properties = writer_properties(table.compression, 32 << 20, &[]);
        let mut attempt = 1;
        let summary = loop {
            let Some(mut lake) = open(&table).await? else {
                break None;
            };
            match maintain::optimize(&mut lake, target, &properties).await {
                Err(Error::Conflict { table, seq, other }) if attempt < CONFLICT_ATTEMPTS => {
                    tracing::warn!(%table, run = seq, %other, attempt, "a run of the table committed first; compacting again on top of it");
                    conflict_pause(attempt).await;
                    attempt += 1;
                }
                done => break Some(done?),
            }
        };
        let Some(summary) = summary else { continue };
        if !args.tables.json {
            print_optimized(&summary);
        }
        done.push(summary);
    }
    if args.tables.json {
        print_json(&done)?;
    }
    Ok(0)
}

fn print_optimized(s: &OptimizeSummary) {
    if s.run.is_none() {
        println!(
            "{}: nothing to compact (current {} files, history {} files)",
            s.table, s.current.files_after, s.history.files_after
        );
        return;
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for (role, c) in [("current", &s.current), ("history", &s.history)] {
        println!(
            "{}: {role}: {} files ({:.1} MiB) in {} partitions rewritten as {} ({:.1} MiB); {} \
             files now",
            s.table,
            c.files_removed,
            mib(c.bytes_removed),
            c.partitions,
            c.files_added,
            mib(c.bytes_added),
            c.files_after
        );
    }
    let version = |v: Option<u64>| v.map_or("unchanged".to_string(), |v| v.to_string());
    println!(
        "{}: compacted as run {}, current version {}, history version {}, in {:.1} s",
        s.table,
        s.run.unwrap_or_default(),
        version(s.current_version),
        version(s.history_version),
        s.elapsed_secs
    );
}

/// What `tributary vacuum` reports for one table.
#[derive(Debug, serde::Serialize)]
struct VacuumReport {
    table: String,
    tables: Vec<Vacuumed>,
}

/// Runs `tributary vacuum`: lists (or with `--delete` removes) each table's files that no
/// version within the retention needs (see `maintain::vacuum`).
///
/// # Errors
/// Usage errors; [`Error::Refused`] for a retention below the table's minimum without
/// `--force`; the first table's error (the tables before it stay vacuumed).
pub async fn vacuum(args: VacuumArgs) -> Result<u8> {
    let retain = parse_retention(&args.retain)?;
    let mut reports = Vec::new();
    for table in tables(&args.tables)? {
        let Some(lake) = open(&table).await? else {
            continue;
        };
        let vacuumed = maintain::vacuum(&lake, retain, args.delete, args.force).await?;
        if !args.tables.json {
            for v in &vacuumed {
                let verb = match v.deleted {
                    true => "deleted",
                    false => "would delete (dry run; --delete deletes)",
                };
                println!(
                    "{}: {}: {verb} {} files",
                    lake.name(),
                    v.table,
                    v.files.len()
                );
                for file in &v.files {
                    println!("  {file}");
                }
            }
        }
        reports.push(VacuumReport {
            table: lake.name().to_string(),
            tables: vacuumed,
        });
    }
    if args.tables.json {
        print_json(&reports)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_and_sizes_parse_in_the_units_users_write() {
        let hours = |t: &str| parse_retention(t).unwrap().as_secs() / 3600;
        assert_eq!(hours("168h"), 168);
        assert_eq!(hours("7d"), 168);
        assert_eq!(hours("24"), 24);
        assert_eq!(parse_retention("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_retention("0h").unwrap().as_secs(), 0);
        assert!(parse_retention("a week").is_err());
        assert_eq!(parse_size("--target-size", "256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("--target-size", "1GiB").unwrap(), 1 << 30);
        assert!(parse_size("--target-size", "12").is_err());
        assert!(parse_size("--target-size", "big").is_err());
    }
}
