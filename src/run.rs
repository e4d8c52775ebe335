//! `tributary run`: one business day of snapshot CDC, from extract files to committed tables.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, RecordBatch, StringArray,
};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;

use crate::config::{ExtractType, TableConfig};
use crate::diff::{classify, key, CurrentIndex, Diff, Op};
use crate::error::{Error, Result};
use crate::lake::{self, scan, write_files, Lake, Planned, RunRecord, CURRENT, HISTORY, REJECTS};
use crate::progress::Progress;
use crate::schema::{table_schema, EFF_START_DATE, KEYHASH, NONKEYHASH, OPERATION};
use crate::source::{self, fingerprint, list_input_files, reject_duplicate_keys, Incoming};
use crate::summary::{RunSummary, StageTimes, TableSummary};

/// Flags of `tributary run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Allow a date older than the latest applied one, and a full extract that deletes more
    /// than `max_delete_fraction` of the table.
    pub force: bool,
    /// Replace the latest run (same business date, different input).
    pub replace: bool,
}

/// Days since 1970-01-01 (Arrow `Date32`).
pub fn epoch_days(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
}

/// Runs one business day: reads `input`, diffs it against the current table, and commits the
/// current and history tables (see `lake` for the commit contract).
///
/// # Errors
/// [`Error::Refused`] for a repeated date with other input, an older date or a mass delete
/// (unless forced); [`Error::BadRow`] for bad input under `on_error: fail`; config, lake and I/O
/// errors. On any error no table has been changed (a crash between commits is completed by the
/// next run).
pub async fn run(
    config: &TableConfig,
    input: &Path,
    business_date: NaiveDate,
    options: RunOptions,
) -> Result<RunSummary> {
    let started = Instant::now();
    if config.has_temp_current_path {
        tracing::info!("temp_current_table_path is not used: Delta commits replace the current table atomically");
    }
    let date = epoch_days(business_date);
    let date_text = business_date.format("%Y-%m-%d").to_string();
    let files = list_input_files(input, config.format)?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let fingerprint = fingerprint(&files)?;
    // Open without creating: a run that fails on its input leaves no trace in the lake.
    let existing = Lake::open(config, false).await?;
    let recovered = existing.as_ref().and_then(|(_, r)| r.clone());
    let mut summary = RunSummary {
        table: config.name.clone(),
        business_date: date_text.clone(),
        recovered,
        input_files: files.len(),
        fingerprint: fingerprint.clone(),
        current: TableSummary {
            path: config.current_url.to_string(),
            ..Default::default()
        },
        history: TableSummary {
            path: config.history_url.to_string(),
            ..Default::default()
        },
        ..Default::default()
    };
    let (seq, last) = match &existing {
        Some((lake, _)) => (
            lake::log::txn_version(&lake.current, lake.app_id())
                .await?
                .unwrap_or(0)
                + 1,
            lake.last_run().await?,
        ),
        None => (1, None),
    };
    let mut replacing = None;
    if let Some(last) = &last {
        if date_text == last.business_date && last.fingerprint == fingerprint {
            summary.status = "no-op".into();
            summary.run_seq = Some(last.seq);
            summary.message = format!(
                "already applied from the same input (run {}); nothing to do",
                last.seq
            );
            summary.elapsed_secs = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        if date_text == last.business_date {
            if !options.replace {
                return Err(Error::Refused(format!(
                    "{date_text} was already applied (run {}) from different input; pass --replace to replace that run",
                    last.seq
                )));
            }
            replacing = Some(last.clone());
        } else if date_text < last.business_date && !options.force {
            return Err(Error::Refused(format!(
                "{date_text} is older than the latest applied date {}; pass --force to apply it anyway",
                last.business_date
            )));
        }
    }
    if options.replace && replacing.is_none() {
        return Err(Error::Refused(format!(
            "--replace: {date_text} is not the latest applied date, nothing to replace"
        )));
    }

    let progress = Progress::bytes("reading", total_bytes);
    let mut incoming = source::read_all(config, files, &progress)?;
    progress.finish();
    reject_duplicate_keys(config, &mut incoming)?;
    let read_secs = started.elapsed().as_secs_f64();

    let diffing = Instant::now();
    let mut lake = match existing {
        Some((lake, _)) => lake,
        None => {
            Lake::open(config, true)
                .await?
                .ok_or_else(|| Error::Internal("tables not created".into()))?
                .0
        }
    };
    let base = base_table(&lake, replacing.as_ref()).await?;
    let base_version = base.as_ref().and_then(|t| t.version()).map(|v| v as u64);
    let index = match &base {
        Some(table) => current_index(table).await?,
        None => CurrentIndex::default(),
    };
    let current_rows = index.len();
    let diff = classify(
        incoming.batches.iter().map(|b| (&b.keyhash, &b.nonkeyhash)),
        index,
        config.extract_type,
        date,
    );
    if config.extract_type == ExtractType::Full && current_rows > 0 && !options.force {
        let fraction = diff.counts.deleted as f64 / current_rows as f64;
        if fraction > config.max_delete_fraction {
            return Err(Error::Refused(format!(
                "this full extract deletes {} of {current_rows} rows ({:.1}%), more than max_delete_fraction {}; \
                 is the extract truncated? pass --force to apply it",
                diff.counts.deleted,
                fraction * 100.0,
                config.max_delete_fraction
            )));
        }
    }
    let schema = table_schema(&config.typed_columns());
    let gone = match (&base, diff.gone.is_empty()) {
        (Some(table), false) => gone_rows(table, &diff, &schema, date).await?,
        _ => Vec::new(),
    };
    let (current_batches, history_batches) = output_batches(&incoming, &diff, gone, &schema)?;
    let diff_secs = diffing.elapsed().as_secs_f64();

    let writing = Instant::now();
    let rejects_table = if incoming.rejects.is_empty() {
        None
    } else {
        Some(lake.follower(REJECTS).await?)
    };
    let current_rows_written: u64 = current_batches.iter().map(|b| b.num_rows() as u64).sum();
    let history_rows_written: u64 = history_batches.iter().map(|b| b.num_rows() as u64).sum();
    let (current_adds, history_adds) = tokio::try_join!(
        spawn_write(lake.current.clone(), current_batches),
        spawn_write(lake.history.clone(), history_batches),
    )?;
    let mut followers = vec![(
        CURRENT,
        lake.current.clone(),
        Planned {
            adds: current_adds,
            removes: all_files_removed(&lake.current)?,
        },
    )];
    if let Some(table) = rejects_table {
        let batch = crate::rejects::batch(&incoming.rejects, date, seq)?;
        let adds = write_files(&table, vec![batch]).await?;
        followers.push((
            REJECTS,
            table,
            Planned {
                adds,
                removes: Vec::new(),
            },
        ));
    }
    let history_removes = match &replacing {
        Some(run) => replaced_history_files(&lake.history, run).await?,
        None => Vec::new(),
    };
    let history_plan = Planned {
        adds: history_adds,
        removes: history_removes,
    };
    let write_secs = writing.elapsed().as_secs_f64();

    let committing = Instant::now();
    let record = RunRecord {
        seq,
        business_date: date_text.clone(),
        fingerprint,
        current_base_version: base_version,
        history_version: None,
    };
    fill_table_summary(&mut summary.current, &followers[0].2, current_rows_written);
    fill_table_summary(&mut summary.history, &history_plan, history_rows_written);
    if let Some((_, _, planned)) = followers.get(1) {
        let mut t = TableSummary {
            path: config.rejects_url.to_string(),
            ..Default::default()
        };
        fill_table_summary(&mut t, planned, incoming.rejects.len() as u64);
        summary.rejects = Some(t);
    }
    let versions = lake.commit_run(record, history_plan, followers).await?;
    summary.current.version = versions.get(CURRENT).copied();
    summary.history.version = versions.get(HISTORY).copied();
    if let Some(r) = summary.rejects.as_mut() {
        r.version = versions.get(REJECTS).copied();
    }
    let commit_secs = committing.elapsed().as_secs_f64();

    summary.status = "applied".into();
    summary.run_seq = Some(seq);
    summary.message = match &replacing {
        Some(r) => format!("applied as run {seq}, replacing run {}", r.seq),
        None => format!("applied as run {seq}"),
    };
    summary.rows_read = incoming.rows_read;
    summary.rows_rejected = incoming.rejects.len() as u64;
    summary.counts = diff.counts;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.rows_per_sec = incoming.rows_read as f64 / summary.elapsed_secs.max(1e-9);
    summary.stages = StageTimes {
        read_secs,
        diff_secs,
        write_secs,
        commit_secs,
    };
    Ok(summary)
}

fn fill_table_summary(t: &mut TableSummary, planned: &Planned, rows: u64) {
    t.rows_written = rows;
    t.bytes_written = planned.bytes_added();
    t.files_written = planned.adds.len() as u64;
}

async fn spawn_write(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
) -> Result<Vec<deltalake::kernel::Add>> {
    tokio::spawn(async move { write_files(&table, batches).await })
        .await
        .map_err(|e| Error::Internal(format!("writer task failed: {e}")))?
}

/// The current table state the diff runs against: the latest one, or for `--replace` the one
/// the replaced run diffed against (None: empty).
async fn base_table(lake: &Lake, replacing: Option<&RunRecord>) -> Result<Option<DeltaTable>> {
    let Some(run) = replacing else {
        return Ok(Some(lake.current.clone()));
    };
    let Some(version) = run.current_base_version else {
        return Ok(None);
    };
    let mut table = lake.current.clone();
    table.load_version(version as _).await?;
    Ok(Some(table))
}

/// Casts scanned columns to the table schema (readers may return view or dictionary types).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch
                .column_by_name(field.name())
                .ok_or_else(|| Error::Lake {
                    table: CURRENT.into(),
                    reason: format!("scan returned no column `{}`", field.name()),
                })?;
            Ok(if column.data_type() == field.data_type() {
                column.clone()
            } else {
                cast(column, field.data_type())?
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

async fn current_index(table: &DeltaTable) -> Result<CurrentIndex> {
    let projected = Arc::new(deltalake::arrow::datatypes::Schema::new(
        table_schema(&[])
            .fields()
            .iter()
            .filter(|f| [KEYHASH, NONKEYHASH, EFF_START_DATE].contains(&f.name().as_str()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ));
    let batches = scan(table, Some(&[KEYHASH, NONKEYHASH, EFF_START_DATE])).await?;
    let batches = batches
        .iter()
        .map(|b| conform(b, &projected))
        .collect::<Result<Vec<_>>>()?;
    Ok(CurrentIndex::build(batches.iter().map(|b| {
        (
            b.column(0).as_binary::<i32>(),
            b.column(1).as_binary::<i32>(),
            b.column(2)
                .as_primitive::<deltalake::arrow::datatypes::Date32Type>(),
        )
    })))
}

/// Full current rows of the keys that left the extract, marked D (dated `date`) or X (date kept).
async fn gone_rows(
    table: &DeltaTable,
    diff: &Diff,
    schema: &SchemaRef,
    date: i32,
) -> Result<Vec<RecordBatch>> {
    let op = diff.gone_op.unwrap_or(Op::Delete);
    let mut out = Vec::new();
    for batch in scan(table, None).await? {
        let batch = conform(&batch, schema)?;
        let keys = batch
            .column_by_name(KEYHASH)
            .map(|c| c.as_binary::<i32>().clone());
        let Some(keys) = keys else { continue };
        let mask: BooleanArray = (0..keys.len())
            .map(|i| Some(diff.gone.contains_key(&key(keys.value(i)))))
            .collect();
        let picked = filter_record_batch(&batch, &mask)?;
        if picked.num_rows() == 0 {
            continue;
        }
        let n = picked.num_rows();
        let mut columns = picked.columns().to_vec();
        let op_idx = schema.index_of(OPERATION)?;
        columns[op_idx] = Arc::new(StringArray::from(vec![op.code(); n]));
        if op == Op::Delete {
            columns[schema.index_of(EFF_START_DATE)?] = Arc::new(Date32Array::from(vec![date; n]));
        }
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(out)
}

/// The new current table (I, U, N rows and X rows) and the history rows (I, U, D).
fn output_batches(
    incoming: &Incoming,
    diff: &Diff,
    gone: Vec<RecordBatch>,
    schema: &SchemaRef,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let mut current = Vec::with_capacity(incoming.batches.len() + gone.len());
    let mut history = Vec::new();
    for (batch, ops) in incoming.batches.iter().zip(&diff.incoming) {
        let mut columns = batch.payload.columns().to_vec();
        columns.push(Arc::new(batch.keyhash.clone()) as ArrayRef);
        columns.push(Arc::new(batch.nonkeyhash.clone()) as ArrayRef);
        columns.push(Arc::new(StringArray::from_iter_values(
            ops.iter().map(|(op, _)| op.code()),
        )));
        columns.push(Arc::new(Date32Array::from_iter_values(
            ops.iter().map(|(_, eff)| *eff),
        )));
        let full = RecordBatch::try_new(schema.clone(), columns)?;
        let changed: BooleanArray = ops.iter().map(|(op, _)| Some(op.in_history())).collect();
        if changed.true_count() == full.num_rows() {
            history.push(full.clone());
        } else if changed.true_count() > 0 {
            history.push(filter_record_batch(&full, &changed)?);
        }
        current.push(full);
    }
    for batch in gone {
        if diff.gone_op == Some(Op::Delete) {
            history.push(batch);
        } else {
            current.push(batch);
        }
    }
    Ok((current, history))
}

fn all_files_removed(table: &DeltaTable) -> Result<Vec<deltalake::kernel::Remove>> {
    Ok(table
        .snapshot()?
        .log_data()
        .iter()
        .map(|f| f.remove_action(true))
        .collect())
}

/// Remove actions for the history files a replaced run added.
async fn replaced_history_files(
    history: &DeltaTable,
    run: &RunRecord,
) -> Result<Vec<deltalake::kernel::Remove>> {
    let version = run.history_version.ok_or_else(|| Error::Lake {
        table: HISTORY.into(),
        reason: format!(
            "run {} did not record its history version; cannot replace it",
            run.seq
        ),
    })?;
    let commit = lake::log::read_commit(history, version)
        .await?
        .ok_or_else(|| Error::Lake {
            table: HISTORY.into(),
            reason: format!(
                "the log of version {version} (run {}) is gone; cannot replace it",
                run.seq
            ),
        })?;
    let added: HashSet<String> = commit.adds.into_iter().map(|a| a.path).collect();
    Ok(history
        .snapshot()?
        .log_data()
        .iter()
        .filter(|f| added.contains(f.path().as_ref()))
        .map(|f| f.remove_action(true))
        .collect())
}
