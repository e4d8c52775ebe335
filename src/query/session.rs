//! The DataFusion session of `tributary sql`: the lake's tables registered by name, the SCD2
//! views, the time-travel functions, and statements run one after another.

use std::sync::Arc;

use futures::StreamExt;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::common::TableReference;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::sql::parser::DFParser;
use deltalake::DeltaTable;
use url::Url;

use super::catalog::LakeTable;
use super::functions::{Function, LakeFunction};
use crate::error::{Error, Result};
use crate::sink::delta::session_config;

/// A query session over a lake's tables.
pub struct Lake {
    ctx: SessionContext,
    tables: Vec<LakeTable>,
}

/// The rows of one statement.
#[derive(Debug)]
pub struct QueryResult {
    /// The statement's text, as written.
    pub statement: String,
    /// Its columns.
    pub schema: SchemaRef,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Rows returned.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A session configured as Tributary reads its tables ([`session_config`]), with
/// `information_schema` on (`SHOW TABLES`, `SHOW COLUMNS FROM t`).
pub(crate) fn context() -> SessionContext {
    SessionContext::new_with_config(session_config().with_information_schema(true))
}

/// Opens the Delta table at `url` for reading.
///
/// # Errors
/// [`Error::Usage`] naming the table when there is none at `url`; Delta errors.
pub(crate) async fn open(url: &Url, what: &str) -> Result<DeltaTable> {
    crate::sink::storage::open(url).await.map_err(|e| match e {
        deltalake::DeltaTableError::NotATable(_) => Error::Usage(format!(
            "{what}: no Delta table at {url} (has a run created it yet?)"
        )),
        other => Error::Delta(other),
    })
}

/// `name` as a SQL identifier (double-quoted, `"` doubled).
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn reference(table: &LakeTable, suffix: &str) -> TableReference {
    let name = format!("{}{suffix}", table.name);
    match &table.schema {
        Some(schema) => TableReference::partial(schema.as_str(), name),
        None => TableReference::bare(name),
    }
}

fn reference_sql(table: &LakeTable, suffix: &str) -> String {
    let name = ident(&format!("{}{suffix}", table.name));
    match &table.schema {
        Some(schema) => format!("{}.{name}", ident(schema)),
        None => name,
    }
}

impl Lake {
    /// Registers every table: current as `<name>`, history as `<name>_history`, and the view
    /// `<name>_scd2` (history with `eff_end_date`, the next version's `eff_start_date` of the
    /// same key, NULL for the latest, and `is_current`, true for the latest version of a key
    /// that is not a delete); plus the functions `version_as_of`, `timestamp_as_of`, `as_of`,
    /// `changes` and `runs` (see the module docs).
    ///
    /// # Errors
    /// [`Error::Usage`] for a table that is not there, or two tables registered under one
    /// name; Delta and DataFusion errors.
    pub async fn open(tables: Vec<LakeTable>) -> Result<Lake> {
        let mut names = std::collections::HashMap::new();
        for table in &tables {
            for suffix in ["", "_history", "_scd2"] {
                let name = format!("{}{suffix}", table.qualified());
                if let Some(other) = names.insert(name.clone(), table.qualified()) {
                    return Err(Error::Usage(format!(
                        "two tables would be registered as `{name}` (from `{other}` and `{}`): \
                         query them in separate sessions",
                        table.qualified()
                    )));
                }
            }
        }
        let ctx = context();
        for table in &tables {
            if let Some(schema) = &table.schema {
                ctx.sql(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema)))
                    .await?;
            }
            let current = open(&table.current, &format!("{}: current", table.qualified())).await?;
            current.update_datafusion_session(&ctx.state())?;
            let provider = current.table_provider().await?;
            ctx.register_table(reference(table, ""), provider)?;
            let history = open(&table.history, &format!("{}: history", table.qualified())).await?;
            history.update_datafusion_session(&ctx.state())?;
            let provider = history.table_provider().await?;
            let position = provider.schema().field_with_name("source_position").is_ok();
            ctx.register_table(reference(table, "_history"), provider)?;
            // A key's versions in order: by eff_start_date, then (change-log tables) by
            // source position, a change without one (a DMS full load) first.
            let (order, newest_first) = if position {
                (
                    "eff_start_date, source_position NULLS FIRST",
                    "eff_start_date DESC, source_position DESC NULLS LAST",
                )
            } else {
                ("eff_start_date", "eff_start_date DESC")
            };
            let view = format!(
                "CREATE VIEW {view} AS SELECT *, \
                 LEAD(eff_start_date) OVER (PARTITION BY keyhash ORDER BY {order}) AS eff_end_date, \
                 (ROW_NUMBER() OVER (PARTITION BY keyhash ORDER BY {newest_first}) = 1 \
                  AND operation <> 'D') AS is_current \
                 FROM {history}",
                view = reference_sql(table, "_scd2"),
                history = reference_sql(table, "_history"),
            );
            ctx.sql(&view).await?;
        }
        let shared = Arc::new(tables.clone());
        for function in Function::ALL {
            ctx.register_udtf(
                function.name(),
                Arc::new(LakeFunction::new(function, shared.clone())),
            );
        }
        Ok(Lake { ctx, tables })
    }

    /// The registered tables.
    pub fn tables(&self) -> &[LakeTable] {
        &self.tables
    }

    /// Runs the statements of `sql` (separated by `;`) one after another and returns the rows
    /// of each.
    ///
    /// # Errors
    /// [`Error::Usage`] for a statement that cannot be planned (a syntax error, an unknown
    /// table, column or function, a version that does not exist), naming the statement;
    /// other DataFusion and Delta errors as they are.
    pub async fn run(&self, sql: &str) -> Result<Vec<QueryResult>> {
        let statements = DFParser::parse_sql(sql).map_err(|e| usage(None, e))?;
        let mut out = Vec::new();
        for (i, statement) in statements.into_iter().enumerate() {
            let text = statement.to_string();
            let frame = self.plan(i, &text, statement).await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame
                .collect()
                .await
                .map_err(|e| usage(Some((i, &text)), e))?;
            out.push(QueryResult {
                statement: text,
                schema,
                batches,
            });
        }
        Ok(out)
    }

    /// Runs the statements of `sql` as [`Lake::run`] does, writing the rows of each to `out` in
    /// `format` as they are computed ([`output::write_stream`](super::output::write_stream)):
    /// a CSV or JSON result larger than memory is written whole. Rows of a statement are
    /// written before the next one is planned.
    ///
    /// # Errors
    /// As [`Lake::run`]; I/O errors writing `out`.
    pub async fn run_into(
        &self,
        sql: &str,
        format: super::output::Format,
        out: &mut dyn std::io::Write,
    ) -> Result<()> {
        let statements = DFParser::parse_sql(sql).map_err(|e| usage(None, e))?;
        for (i, statement) in statements.into_iter().enumerate() {
            let text = statement.to_string();
            let frame = self.plan(i, &text, statement).await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let rows = frame
                .execute_stream()
                .await
                .map_err(|e| usage(Some((i, &text)), e))?;
            let rows = rows.map(|batch| batch.map_err(|e| usage(Some((i, &text)), e)));
            super::output::write_stream(schema, rows, format, out).await?;
        }
        Ok(())
    }

    /// Plans statement `i` (its `text`): a query (INSERT, UPDATE, DELETE and COPY would change
    /// the lake, or write files, outside a run), as a data frame not yet run.
    async fn plan(
        &self,
        i: usize,
        text: &str,
        statement: deltalake::datafusion::sql::parser::Statement,
    ) -> Result<deltalake::datafusion::dataframe::DataFrame> {
        let state = self.ctx.state();
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| usage(Some((i, text)), e))?;
        SQLOptions::new()
            .with_allow_dml(false)
            .verify_plan(&plan)
            .map_err(|e| usage(Some((i, text)), e))?;
        self.ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| usage(Some((i, text)), e))
    }
}

/// A planning error (syntax, unknown name, bad function argument) as [`Error::Usage`] naming the
/// statement; execution errors stay [`Error::DataFusion`].
fn usage(statement: Option<(usize, &str)>, err: DataFusionError) -> Error {
    let root = err.find_root();
    let planning = matches!(
        root,
        DataFusionError::SQL(..)
            | DataFusionError::Plan(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(..)
    );
    if !planning {
        return Error::DataFusion(err);
    }
    let text = root.to_string();
    match statement {
        Some((i, sql)) => Error::Usage(format!("statement {} (`{sql}`): {text}", i + 1)),
        None => Error::Usage(format!("cannot parse the query: {text}")),
    }
}
