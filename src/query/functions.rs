//! The table functions of `tributary sql`: `version_as_of`, `timestamp_as_of` (Delta time
//! travel, through delta-rs's versioned loading), `as_of` (a table's state on a business date,
//! from its history), `changes` (the rows history gained between two versions), `runs` (the
//! runs recorded in a table's log) and `table_changes` (the Delta change data feed, through
//! delta-rs's reader).

use std::future::Future;
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::error::{DataFusionError, Result as DfResult};
use deltalake::datafusion::logical_expr::Expr;

use super::catalog::LakeTable;
use super::session::{context, ident};

/// The table functions of `tributary sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `version_as_of('t', N)`: table `t` (or `t_history`) at Delta version N.
    VersionAsOf,
    /// `timestamp_as_of('t', 'YYYY-MM-DD HH:MM:SS')`: the latest version committed at or
    /// before that time (UTC, RFC 3339 accepted).
    TimestampAsOf,
    /// `as_of('t', DATE 'YYYY-MM-DD')`: the state of table `t` after the run of that business
    /// date.
    AsOf,
    /// `changes('t', FROM, TO)`: see [`changes`].
    Changes,
    /// `runs('t')`: see [`runs`].
    Runs,
    /// `table_changes('t', FROM[, TO])`: see [`table_changes`].
    TableChanges,
}

impl Function {
    /// Every function, to register.
    pub const ALL: [Function; 6] = [
        Function::VersionAsOf,
        Function::TimestampAsOf,
        Function::AsOf,
        Function::Changes,
        Function::Runs,
        Function::TableChanges,
    ];

    /// Its name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Function::VersionAsOf => "version_as_of",
            Function::TimestampAsOf => "timestamp_as_of",
            Function::AsOf => "as_of",
            Function::Changes => "changes",
            Function::Runs => "runs",
            Function::TableChanges => "table_changes",
        }
    }
}

/// One [`Function`] over the lake's tables, as DataFusion calls it.
#[derive(Debug)]
pub struct LakeFunction {
    function: Function,
    tables: Arc<Vec<LakeTable>>,
}

impl LakeFunction {
    /// `function` over `tables`.
    pub fn new(function: Function, tables: Arc<Vec<LakeTable>>) -> Self {
        LakeFunction { function, tables }
    }
}

impl TableFunctionImpl for LakeFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        match self.function {
            Function::VersionAsOf | Function::TimestampAsOf => {
                time_travel(self.function, &self.tables, args)
            }
            Function::AsOf => as_of(&self.tables, args),
            Function::Changes => changes(&self.tables, args),
            Function::Runs => runs(&self.tables, args),
            Function::TableChanges => table_changes(&self.tables, args),
        }
    }
}

fn plan_err(text: String) -> DataFusionError {
    DataFusionError::Plan(text)
}

/// A delta-rs error of a table function: a version or table that does not exist is the
/// query's fault (a planning error: exit 2); anything else (I/O, a corrupt log) is not.
fn delta_err(call: &str, err: deltalake::DeltaTableError) -> DataFusionError {
    use deltalake::DeltaTableError as E;
    match err {
        E::InvalidVersion(_) | E::NotATable(_) => plan_err(format!("{call}: {err}")),
        other => DataFusionError::External(format!("{call}: {other}").into()),
    }
}

/// [`delta_err`] for Tributary's errors: a missing version or table, or a log entry cleaned
/// up, is a planning error; the rest are not.
fn crate_err(call: &str, err: crate::Error) -> DataFusionError {
    match err {
        crate::Error::Delta(e) => delta_err(call, e),
        crate::Error::Lake { .. } => plan_err(format!("{call}: {err}")),
        other => DataFusionError::External(format!("{call}: {other}").into()),
    }
}

/// Runs `future` to completion from inside DataFusion's (synchronous) planning of a table
/// function, on the multi-threaded runtime the binary runs on ([`crate::core::store::block_on`]).
fn block_on<F: Future>(future: F) -> DfResult<F::Output> {
    crate::core::store::block_on(future).map_err(|e| DataFusionError::Internal(e.to_string()))
}

/// The text of a literal argument (a string, a number, `DATE '...'`), through casts.
fn literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
            v if v.is_null() => None,
            v => Some(v.to_string()),
        },
        Expr::Cast(cast) => literal(&cast.expr),
        Expr::TryCast(cast) => literal(&cast.expr),
        Expr::Alias(alias) => literal(&alias.expr),
        _ => None,
    }
}

/// The literal arguments of `function('table', ...)`: `shape` says what they are, e.g.
/// `('orders', 3, 5)`. The table name is lowercased.
fn literals(function: &str, args: &TableFunctionArgs, shape: &str) -> DfResult<Vec<String>> {
    let exprs = args.exprs();
    let count = shape.split(',').count();
    let usage = || {
        plan_err(format!(
            "{function} takes {count} literal argument(s), the table's name in quotes first: \
             {function}{shape}"
        ))
    };
    if exprs.len() != count {
        return Err(usage());
    }
    let mut values = exprs
        .iter()
        .map(|e| literal(e).ok_or_else(usage))
        .collect::<DfResult<Vec<String>>>()?;
    values[0] = values[0].to_lowercase();
    Ok(values)
}

/// The two literal arguments of `function('table', value)`.
fn arguments(function: &str, args: &TableFunctionArgs) -> DfResult<(String, String)> {
    let mut values = literals(function, args, "('orders', ...)")?;
    let value = values.pop().unwrap_or_default();
    Ok((values.pop().unwrap_or_default(), value))
}

/// The table at `url` as of `version`: the latest is loaded, so that a version past it is a
/// planning error naming it (delta-rs reports it as a kernel error), then `version` from it.
fn open_at(url: &url::Url, call: &str, version: i64) -> DfResult<deltalake::DeltaTable> {
    at_version(&open_latest(url, call)?, call, version)
}

/// The latest version of the table at `url`.
fn open_latest(url: &url::Url, call: &str) -> DfResult<deltalake::DeltaTable> {
    block_on(crate::sink::storage::open(url))?.map_err(|e| delta_err(call, e))
}

/// `latest` (a table at its latest version) as of `version`; a version past it is a planning
/// error naming both.
fn at_version(
    latest: &deltalake::DeltaTable,
    call: &str,
    version: i64,
) -> DfResult<deltalake::DeltaTable> {
    let last = latest.version().unwrap_or(0);
    if version as u64 > last {
        return Err(plan_err(format!(
            "{call}: no version {version} (the latest is {last})"
        )));
    }
    let mut table = latest.clone();
    if version as u64 != last {
        block_on(table.load_version(version as _))?.map_err(|e| delta_err(call, e))?;
    }
    Ok(table)
}

/// A version number argument.
fn version(function: &str, text: &str) -> DfResult<i64> {
    match text.parse::<i64>() {
        Ok(v) if v >= 0 => Ok(v),
        _ => Err(plan_err(format!(
            "{function}: `{text}` is not a version number (0 or more)"
        ))),
    }
}

/// The table named `name` (`t`, `schema.t`, with `_history` for the history table): the lake
/// table and whether the history table is meant.
fn find<'a>(
    tables: &'a [LakeTable],
    function: &str,
    name: &str,
) -> DfResult<(&'a LakeTable, bool)> {
    // By its own name first: a table may be named `order_history`.
    let named = |base: &str| {
        tables.iter().find(|t| t.qualified() == base).or_else(|| {
            let mut same = tables.iter().filter(|t| t.name == base);
            match (same.next(), same.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
    };
    if let Some(table) = named(name) {
        return Ok((table, false));
    }
    let (base, history) = match name.strip_suffix("_history") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let found = named(base).ok_or_else(|| {
        let known: Vec<String> = tables.iter().map(LakeTable::qualified).collect();
        plan_err(format!(
            "{function}: no table `{name}` (tables: {}; add `_history` for a history table)",
            known.join(", ")
        ))
    })?;
    Ok((found, history))
}

/// `version_as_of` and `timestamp_as_of`: a table (`t` for current, `t_history`) as it was.
fn time_travel(
    travel: Function,
    tables: &[LakeTable],
    args: TableFunctionArgs,
) -> DfResult<Arc<dyn TableProvider>> {
    let function = travel.name();
    let (name, value) = arguments(function, &args)?;
    let (table, history) = find(tables, function, &name)?;
    let url = if history {
        &table.history
    } else {
        &table.current
    };
    let call = format!("{function}('{name}', {value})");
    let table = if travel == Function::VersionAsOf {
        open_at(url, &call, version(function, &value)?)?
    } else {
        let at = timestamp(&value).ok_or_else(|| {
            plan_err(format!(
                "{function}: `{value}` is not a time (YYYY-MM-DD HH:MM:SS, UTC, or RFC 3339)"
            ))
        })?;
        let table = block_on(crate::sink::storage::open_as_of(url, &at.to_rfc3339()))?
            .map_err(|e| delta_err(&call, e))?;
        // delta-rs loads the first version for a time before it: no table existed then.
        let first = table
            .version()
            .and_then(|v| table.snapshot().ok()?.version_timestamp(v as _));
        if let Some(first) = first.filter(|&first| first > at.timestamp_millis()) {
            let at = chrono::DateTime::from_timestamp_millis(first)
                .map_or(first.to_string(), |t| t.to_rfc3339());
            return Err(plan_err(format!(
                "{function}('{name}', '{value}'): the table did not exist yet (its \
                 first version was committed at {at})"
            )));
        }
        table
    };
    table.update_datafusion_session(args.session())?;
    block_on(async { table.table_provider().await })?
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.f]` (UTC) or RFC 3339.
fn timestamp(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t);
    }
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d"]
        .iter()
        .find_map(|f| {
            chrono::NaiveDateTime::parse_from_str(text, f)
                .ok()
                .or_else(|| {
                    NaiveDate::parse_from_str(text, f)
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                })
        })?;
    Some(naive.and_utc().fixed_offset())
}

/// `as_of('t', DATE 'YYYY-MM-DD')`: the state of table `t` after the run of that business date.
fn as_of(tables: &[LakeTable], args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
    let (name, value) = arguments("as_of", &args)?;
    let (table, history) = find(tables, "as_of", &name)?;
    if history {
        return Err(plan_err(
            "as_of: name the table (`orders`), not its history".into(),
        ));
    }
    let date = NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| {
        plan_err(format!(
            "as_of: `{value}` is not a date (DATE 'YYYY-MM-DD')"
        ))
    })?;
    let url = table.history.clone();
    let inner = context();
    let frame = block_on(async move {
        let history = crate::sink::storage::open(&url).await?;
        history.update_datafusion_session(&inner.state())?;
        let provider = history.table_provider().await?;
        let schema = provider.schema();
        let position = schema.field_with_name("source_position").is_ok();
        inner.register_table("history", provider)?;
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| n != "operation")
            .map(|n| ident(&n))
            .collect();
        let sql = if position {
            // Change-log tables: several versions of a key may share a date, ordered by
            // source position (a change without one first).
            format!(
                "SELECT {columns} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY keyhash \
                 ORDER BY eff_start_date DESC, source_position DESC NULLS LAST) \
                 AS tributary_rank FROM history WHERE eff_start_date <= DATE '{date}') \
                 WHERE tributary_rank = 1 AND operation <> 'D'",
                columns = columns.join(", "),
            )
        } else {
            // Snapshot tables: one version per key and date, so the latest date picks it;
            // an aggregate and a hash join, about 8x faster than the window at 10M rows.
            let columns: Vec<String> = columns.iter().map(|c| format!("h.{c}")).collect();
            format!(
                "SELECT {columns} FROM history h JOIN (SELECT keyhash, \
                 max(eff_start_date) AS latest FROM history \
                 WHERE eff_start_date <= DATE '{date}' GROUP BY keyhash) l \
                 ON h.keyhash = l.keyhash AND h.eff_start_date = l.latest \
                 WHERE h.operation <> 'D'",
                columns = columns.join(", "),
            )
        };
        Ok::<_, crate::Error>(inner.sql(&sql).await?)
    })?
    .map_err(|e| crate_err(&format!("as_of('{name}', {date})"), e))?;
    Ok(frame.into_view())
}

/// `changes('t', FROM, TO)`: the rows the history table of `t` gained from version FROM
/// (exclusive) to TO (inclusive), with the `commit_version` that added each: the I, U and D
/// rows of the runs in between (history is append-only), as Delta's change data feed and Hudi's
/// incremental query give them. Only the new version of an updated key is there; `t_scd2`
/// joins the one before.
pub fn changes(tables: &[LakeTable], args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
    let values = literals("changes", &args, "('orders', 3, 5)")?;
    let (table, _) = find(tables, "changes", &values[0])?;
    let (from, to) = (
        version("changes", &values[1])?,
        version("changes", &values[2])?,
    );
    if from > to {
        return Err(plan_err(format!(
            "changes: the first version ({from}) is after the second ({to})"
        )));
    }
    let call = format!("changes('{}', {from}, {to})", values[0]);
    let history = open_at(&table.history, &call, to)?;
    let name = values[0].clone();
    let inner = context();
    let frame = block_on(async move {
        history.update_datafusion_session(&inner.state())?;
        let session = Arc::new(inner.state());
        // A file a compaction has replaced since is read in the version that added it.
        let live: std::collections::HashSet<String> = history
            .snapshot()?
            .log_data()
            .iter()
            .map(|f| f.path().to_string())
            .collect();
        let mut selects = Vec::new();
        for v in from + 1..=to {
            let commit = crate::sink::delta::log::read_commit(&history, v as u64)
                .await?
                .ok_or_else(|| crate::Error::Lake {
                    table: format!("{name} history"),
                    reason: format!("the log of version {v} is gone (log clean-up)"),
                })?;
            // A compaction's files hold rows committed before (`dataChange: false`).
            let adds: Vec<_> = commit.adds.into_iter().filter(|a| a.data_change).collect();
            if adds.is_empty() {
                continue;
            }
            let at_version = match adds.iter().all(|a| live.contains(&a.path)) {
                true => history.clone(),
                false => {
                    let mut table = history.clone();
                    table.load_version(v as _).await?;
                    table
                }
            };
            let provider = at_version
                .table_provider()
                .with_session(session.clone())
                .with_adds(adds)
                .await?;
            inner.register_table(format!("v{v}"), provider)?;
            selects.push(format!(
                "SELECT *, CAST({v} AS BIGINT) AS commit_version FROM v{v}"
            ));
        }
        if selects.is_empty() {
            let provider = history.table_provider().with_session(session).await?;
            inner.register_table("history", provider)?;
            selects.push(
                "SELECT *, CAST(NULL AS BIGINT) AS commit_version FROM history WHERE false".into(),
            );
        }
        Ok::<_, crate::Error>(inner.sql(&selects.join(" UNION ALL ")).await?)
    })?
    .map_err(|e| crate_err(&call, e))?;
    Ok(frame.into_view())
}

/// `table_changes('t', FROM[, TO])`: the Delta change data feed of table `t` (current;
/// `t_history` for history) from version FROM to TO (both included; default the latest), as
/// Databricks' `table_changes` and delta-rs's `load_cdf` read it: the table's columns, then
/// `_change_type` (`insert`, `update_preimage`, `update_postimage`, `delete`),
/// `_commit_version` and `_commit_timestamp`. The table must record its feed from FROM on
/// (`change_data_feed: true`; see `sink::delta::change_feed`).
///
/// # Errors
/// A planning error for a table without the feed at FROM, a version past the latest, FROM
/// after TO.
pub fn table_changes(
    tables: &[LakeTable],
    args: TableFunctionArgs,
) -> DfResult<Arc<dyn TableProvider>> {
    const FUNCTION: &str = "table_changes";
    let values = match args.exprs().len() {
        2 => literals(FUNCTION, &args, "('orders', 3)")?,
        3 => literals(FUNCTION, &args, "('orders', 3, 5)")?,
        _ => {
            return Err(plan_err(format!(
                "{FUNCTION} takes 2 or 3 literal arguments, the table's name in quotes first: \
                 {FUNCTION}('orders', 3[, 5])"
            )))
        }
    };
    let (table, history) = find(tables, FUNCTION, &values[0])?;
    let from = version(FUNCTION, &values[1])?;
    let to = match values.get(2) {
        Some(text) => Some(version(FUNCTION, text)?),
        None => None,
    };
    if let Some(to) = to.filter(|&to| from > to) {
        return Err(plan_err(format!(
            "{FUNCTION}: the first version ({from}) is after the second ({to})"
        )));
    }
    let call = format!("{FUNCTION}('{}', {})", values[0], values[1..].join(", "));
    let url = if history {
        &table.history
    } else {
        &table.current
    };
    // The log is read once; the range's ends are loaded from it.
    let latest = open_latest(url, &call)?;
    let last = latest.version().unwrap_or(0) as i64;
    let end = at_version(&latest, &call, to.unwrap_or(last))?;
    // delta-rs refuses a start version whose commit says the feed is off, but reads a version
    // without a metadata action as its files (adds as inserts, removes as deletes) whether the
    // table recorded its feed then or not: checked here, at both ends of the range (a feed
    // turned off on the way, the property removed).
    let first = at_version(&latest, &call, from)?;
    let recorded = |table: &deltalake::DeltaTable| {
        crate::sink::delta::change_feed::enabled(table).map_err(|e| crate_err(&call, e))
    };
    if !recorded(&first)? {
        return Err(plan_err(format!(
            "{call}: the table does not record its change data feed at version {from} \
             (delta.enableChangeDataFeed; `change_data_feed: true` turns it on from the next run)"
        )));
    }
    if !recorded(&end)? {
        return Err(plan_err(format!(
            "{call}: the table does not record its change data feed at version {} \
             (delta.enableChangeDataFeed is off there)",
            end.version().unwrap_or(0)
        )));
    }
    let mut scan = end.scan_cdf().with_starting_version(from as _);
    if let Some(to) = to {
        scan = scan.with_ending_version(to as _);
    }
    let provider = deltalake::delta_datafusion::DeltaCdfTableProvider::try_new(scan)
        .map_err(|e| delta_err(&call, e))?;
    let provider = Arc::new(Feed(provider));
    // The feed's checks (recorded at FROM) run when the scan is planned: planned here once, so
    // that a table without the feed is this statement's planning error.
    let probe = provider.clone();
    block_on(async move {
        let state = context().state();
        probe.scan(&state, None, &[], Some(0)).await.map(|_| ())
    })?
    .map_err(|e| match e {
        DataFusionError::External(inner) => match inner.downcast::<deltalake::DeltaTableError>() {
            Ok(delta) => cdf_err(&call, *delta),
            Err(other) => DataFusionError::External(format!("{call}: {other}").into()),
        },
        other => other,
    })?;
    Ok(provider)
}

/// delta-rs's change data feed provider, with each scan of no files in its plan (a version
/// range without removed files, say) replaced by an empty plan of one partition: DataFusion 55
/// cannot sort or aggregate over a scan of zero partitions ("does not satisfy distribution
/// requirements").
#[derive(Debug)]
struct Feed(deltalake::delta_datafusion::DeltaCdfTableProvider);

#[async_trait::async_trait]
impl TableProvider for Feed {
    fn schema(&self) -> deltalake::arrow::datatypes::SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> deltalake::datafusion::datasource::TableType {
        self.0.table_type()
    }

    async fn scan(
        &self,
        session: &dyn deltalake::datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn deltalake::datafusion::physical_plan::ExecutionPlan>> {
        use deltalake::datafusion::common::tree_node::{Transformed, TreeNode};
        use deltalake::datafusion::physical_plan::empty::EmptyExec;
        use deltalake::datafusion::physical_plan::ExecutionPlanProperties;
        let plan = self.0.scan(session, projection, filters, limit).await?;
        let plan = plan.transform_up(|node| {
            let empty =
                node.children().is_empty() && node.output_partitioning().partition_count() == 0;
            Ok(match empty {
                true => Transformed::yes(Arc::new(EmptyExec::new(node.schema())) as _),
                false => Transformed::no(node),
            })
        })?;
        Ok(plan.data)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<deltalake::datafusion::logical_expr::TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }
}

/// A delta-rs error of `table_changes`: the feed not recorded, a bad version range.
fn cdf_err(call: &str, err: deltalake::DeltaTableError) -> DataFusionError {
    use deltalake::DeltaTableError as E;
    match err {
        E::ChangeDataNotEnabled { .. }
        | E::ChangeDataNotRecorded { .. }
        | E::ChangeDataInvalidVersionRange { .. } => plan_err(format!("{call}: {err}")),
        other => delta_err(call, other),
    }
}

/// `runs('t')`: the runs recorded in the history table's log, one row per Tributary commit:
/// `history_version`, `committed_at` (UTC), `run`, `run_id`, `operation` (`apply`, or
/// `optimize` for a compaction), `business_date`, `fingerprint` (of the input files or the
/// change-log checkpoint), `source_lsn` (capture), the run's rows by operation `inserted`,
/// `updated`, `deleted`, `not_supplied`, `unchanged` (NULL for runs of earlier versions and for
/// compactions), `duration_secs` (from the run's start to its history commit), and the data
/// the commit added to history: `files_added`, `rows_added`, `bytes_added` (0 for a compaction,
/// whose files hold rows added before). Delta's `DESCRIBE HISTORY` told in Tributary's terms.
pub fn runs(tables: &[LakeTable], args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
    let values = literals("runs", &args, "('orders')")?;
    let (table, _) = find(tables, "runs", &values[0])?;
    let url = table.history.clone();
    let batch = block_on(async move {
        let history = crate::sink::storage::open(&url).await?;
        runs_batch(&history).await
    })?
    .map_err(|e| crate_err(&format!("runs('{}')", values[0]), e))?;
    let table =
        deltalake::datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    Ok(Arc::new(table))
}

/// One row per Tributary commit of `history` (see [`runs`]).
async fn runs_batch(
    history: &deltalake::DeltaTable,
) -> crate::Result<deltalake::arrow::record_batch::RecordBatch> {
    use deltalake::arrow::array::{
        ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let latest = history.version().unwrap_or(0);
    let (mut version, mut at, mut run, mut run_id, mut operation) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut date, mut fingerprint, mut lsn, mut duration) = (vec![], vec![], vec![], vec![]);
    let mut counts: [Vec<Option<i64>>; 5] = Default::default();
    let (mut files, mut rows, mut bytes) = (vec![], vec![], vec![]);
    for v in 0..=latest {
        let Some(commit) = crate::sink::delta::log::read_commit(history, v).await? else {
            continue;
        };
        let Some(entry) = commit.entry else {
            continue;
        };
        let r = entry.run;
        version.push(v as i64);
        at.push(commit.timestamp_ms);
        run.push(r.seq);
        run_id.push(r.run_id);
        operation.push(r.operation.unwrap_or_else(|| "apply".to_string()));
        date.push(r.business_date);
        fingerprint.push(r.fingerprint);
        lsn.push(r.source_lsn);
        duration.push(r.duration_ms.map(|ms| ms as f64 / 1000.0));
        let c = r.counts;
        let by_op = [
            c.map(|c| c.inserted),
            c.map(|c| c.updated),
            c.map(|c| c.deleted),
            c.map(|c| c.not_supplied),
            c.map(|c| c.unchanged),
        ];
        for (column, n) in counts.iter_mut().zip(by_op) {
            column.push(n.map(|n| n as i64));
        }
        // Data added: a compaction's files (`dataChange: false`) hold rows counted before.
        let adds: Vec<_> = commit.adds.iter().filter(|a| a.data_change).collect();
        files.push(adds.len() as i64);
        bytes.push(adds.iter().map(|a| a.size).sum::<i64>());
        let counted: Option<i64> = adds
            .iter()
            .map(|a| {
                let stats: serde_json::Value = serde_json::from_str(a.stats.as_deref()?).ok()?;
                stats.get("numRecords")?.as_i64()
            })
            .sum();
        rows.push(counted);
    }
    let int = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let mut fields = vec![
        int("history_version", false),
        Field::new(
            "committed_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        int("run", false),
        text("run_id", false),
        text("operation", false),
        text("business_date", false),
        text("fingerprint", false),
        text("source_lsn", true),
    ];
    let count_names = [
        "inserted",
        "updated",
        "deleted",
        "not_supplied",
        "unchanged",
    ];
    fields.extend(count_names.iter().map(|n| int(n, true)));
    fields.extend([
        Field::new("duration_secs", DataType::Float64, true),
        int("files_added", false),
        int("rows_added", true),
        int("bytes_added", false),
    ]);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(version)),
        Arc::new(TimestampMillisecondArray::from(at).with_timezone("UTC")),
        Arc::new(Int64Array::from(run)),
        Arc::new(StringArray::from(run_id)),
        Arc::new(StringArray::from(operation)),
        Arc::new(StringArray::from(date)),
        Arc::new(StringArray::from(fingerprint)),
        Arc::new(StringArray::from(lsn)),
    ];
    columns.extend(
        counts
            .into_iter()
            .map(|c| Arc::new(Int64Array::from(c)) as ArrayRef),
    );
    columns.extend([
        Arc::new(Float64Array::from(duration)) as ArrayRef,
        Arc::new(Int64Array::from(files)),
        Arc::new(Int64Array::from(rows)),
        Arc::new(Int64Array::from(bytes)),
    ]);
    Ok(deltalake::arrow::record_batch::RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_utc() {
        let timestamp = |text: &str| super::timestamp(text).map(|t| t.to_rfc3339());
        assert_eq!(
            timestamp("2021-12-30 14:00:00").as_deref(),
            Some("2021-12-30T14:00:00+00:00")
        );
        assert_eq!(
            timestamp("2021-12-30").as_deref(),
            Some("2021-12-30T00:00:00+00:00")
        );
        assert_eq!(
            timestamp("2021-12-30T14:00:00+02:00").as_deref(),
            Some("2021-12-30T14:00:00+02:00")
        );
        assert_eq!(timestamp("yesterday"), None);
    }

    #[test]
    fn names_resolve_to_tables_and_history() {
        let url = url::Url::parse("file:///x/").unwrap();
        let table = |schema: Option<&str>, name: &str| LakeTable {
            schema: schema.map(str::to_string),
            name: name.into(),
            current: url.clone(),
            history: url.clone(),
            followers: Vec::new(),
            compression: Default::default(),
            app_id: String::new(),
        };
        let tables = vec![table(Some("sales"), "orders"), table(None, "customers")];
        assert!(matches!(find(&tables, "f", "orders"), Ok((t, false)) if t.name == "orders"));
        assert!(matches!(
            find(&tables, "f", "sales.orders_history"),
            Ok((_, true))
        ));
        assert!(matches!(find(&tables, "f", "customers"), Ok((t, false)) if t.schema.is_none()));
        let err = find(&tables, "f", "nope").unwrap_err().to_string();
        assert!(
            err.contains("no table `nope`") && err.contains("sales.orders"),
            "{err}"
        );
    }
}
