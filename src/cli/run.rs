//! `tributary run CONFIG INCOMING BUS_EFF_DATE`: one business day of snapshot CDC.

use std::path::PathBuf;

use super::{parse_date, print_json};
use crate::config::TableConfig;
use crate::error::Result;
use crate::snapshot::{run, RunOptions};

/// Arguments of `tributary run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Table config (YAML; the seed article's config.yaml works unchanged).
    pub config: PathBuf,
    /// An extract file, or a folder of *.csv or *.parquet files; or an object-store URL of one
    /// object or a prefix (s3://bucket/in/2024-01-02/), copied under spill_dir for the run.
    pub incoming: PathBuf,
    /// Business effective date, YYYY-MM-DD (eff_start_date of new and changed rows).
    pub bus_eff_date: String,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Apply a date older than the latest applied one, or a full extract that deletes more than max_delete_fraction.
    #[arg(long)]
    pub force: bool,
    /// Replace the latest run (same date, different input).
    #[arg(long)]
    pub replace: bool,
}

/// Sets the process's `threads` setting from `--threads` (`flag`), else from the table config
/// at `config` (`run` and `check`), else the cores; returns the allocator's arena count:
/// [`allocator::arenas_within`](crate::cli::allocator::arenas_within) the table config's
/// `memory_limit`, else `memory_limit` (`sync` and `capture`'s `--memory-limit`), else one per
/// thread. Called by the binary before its runtime starts (the
/// runtime's workers are the threads, and glibc fixes its arena limit the first time a thread
/// needs a new arena). A config that does not load is left for the command to report; one that
/// is not a regular file (a pipe, `/dev/stdin`) is not read here, as it can be read once only:
/// its `threads` then applies from the command ([`use_config_threads`]) to the stages but not to
/// the runtime's workers nor the arenas.
pub fn process_settings(
    flag: Option<usize>,
    config: Option<&std::path::Path>,
    memory_limit: Option<u64>,
) -> usize {
    use crate::cli::allocator;
    let config = config
        .filter(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file()))
        .and_then(|path| TableConfig::load(path).ok());
    let configured = config.as_ref().and_then(|c| c.snapshot.threads);
    if let Some(n) = flag.or(configured) {
        crate::core::threads::set(n);
    }
    let threads = crate::core::threads::get();
    match (config, memory_limit) {
        (Some(config), _) => allocator::arenas_within(threads, config.snapshot.memory_limit),
        (None, Some(limit)) => allocator::arenas_within(threads, limit),
        (None, None) => threads * allocator::ARENAS_PER_CORE,
    }
}

/// Makes a config's `threads` the process's setting unless `--threads` or
/// [`process_settings`] already set one.
pub fn use_config_threads(config: &TableConfig) {
    if let Some(n) = config.snapshot.threads {
        crate::core::threads::set_if_unset(n);
    }
}

/// Copies INCOMING into a folder under the config's `spill_dir` when it is an object-store URL
/// ([`remote::stage`](crate::source::extract::remote::stage), with the config's
/// `storage_options`); None for a local path.
///
/// # Errors
/// Those of [`remote::stage`](crate::source::extract::remote::stage); [`Error::Usage`] for a
/// URL that does not parse.
pub async fn stage_incoming(
    config: &TableConfig,
    incoming: &std::path::Path,
) -> Result<Option<crate::source::extract::remote::StagedInput>> {
    use crate::source::extract::remote;
    let Some(text) = incoming.to_str().filter(|t| remote::is_url(t)) else {
        return Ok(None);
    };
    let url = url::Url::parse(text)
        .map_err(|e| crate::error::Error::Usage(format!("INCOMING {text}: not a URL: {e}")))?;
    let options = config.table.lake.storage_options.to_map();
    // a spill folder of the run: a later run removes it if this one is killed
    let owned = crate::core::spill::owned_folder(&config.snapshot.spill_dir)?;
    let staged = remote::stage(&url, &options, owned).await?;
    tracing::info!(
        objects = staged.objects,
        bytes = staged.bytes,
        "copied the extract from {url}"
    );
    Ok(Some(staged))
}

/// `err` naming the files of a staged extract (`staged`) by their objects' URLs; as it is
/// without one.
pub fn renamed(
    staged: &Option<crate::source::extract::remote::StagedInput>,
    err: crate::error::Error,
) -> crate::error::Error {
    match staged {
        Some(staged) => staged.rename(err),
        None => err,
    }
}

/// Runs `tributary run` and prints its summary.
///
/// # Errors
/// Those of [`run`](crate::snapshot::run()).
pub async fn execute(args: RunArgs) -> Result<u8> {
    let date = parse_date("BUS_EFF_DATE", &args.bus_eff_date)?;
    let config = TableConfig::load(&args.config)?;
    use_config_threads(&config);
    let options = RunOptions {
        force: args.force,
        replace: args.replace,
    };
    let staged = stage_incoming(&config, &args.incoming).await?;
    let incoming = staged
        .as_ref()
        .map_or(args.incoming.as_path(), |s| s.path.as_path());
    let summary = run(&config, incoming, date, options)
        .await
        .map_err(|e| renamed(&staged, e))?;
    let catalog = match &config.table.lake.catalog {
        Some(catalog) => {
            Some(crate::sink::catalog::register_or_report(catalog, &config.table).await)
        }
        None => None,
    };
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        if let Some(catalog) = &catalog {
            value["catalog"] = serde_json::to_value(catalog)?;
        }
        print_json(&value)?;
    } else {
        println!("{summary}");
        if let Some(done) = catalog.as_ref().filter(|c| c.error.is_none()) {
            println!("catalog: registered {}", done.tables.join(", "));
        }
    }
    if let Some(error) = catalog.and_then(|c| c.error) {
        eprintln!(
            "warning: the run is committed, but {error}; the next run registers the tables again"
        );
        return Ok(crate::sink::catalog::EXIT_CATALOG_FAILED);
    }
    Ok(0)
}
