//! PostgreSQL logical replication as a change source (`tributary capture`).
//!
//! - [`Server`]: a plain SQL session (tokio-postgres) for the checks before anything is
//!   created, the publication, the catalog of published tables and the slot's state.
//! - [`copy_tables`]: the initial copy of tables the lake does not hold yet, read inside the
//!   exported snapshot of a side slot (pg_walstream's managed snapshot), exact at that slot's
//!   consistent point.
//! - [`open_stream`] and [`decode_row`]: the slot's stream (pgoutput, protocol version 1, the
//!   "Logical Replication Message Formats" of the PostgreSQL documentation), decoded by
//!   pg_walstream into transactions in commit order.
//! - [`buffer`]: the changes of one table between two lake commits, as a
//!   [`ChangeSource`](crate::source::ChangeSource).
//! - [`types`]: how PostgreSQL types land in the lake.
//!
//! Connection URLs are never printed: messages name the server as `host:port/database`.

pub mod buffer;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use pg_walstream::{
    CancellationToken, ColumnValue, LogicalReplicationStream, ReplicationStreamConfig, RowData,
    SnapshotOutcome, StreamingMode,
};

use crate::error::{Error, Result};
use buffer::{CaptureTable, Values};

/// A published table as the catalog describes it.
#[derive(Debug, Clone)]
pub struct PgTable {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// `pg_class.relreplident`: `d` default (primary key), `f` full, `i` index, `n` nothing.
    pub replica_identity: char,
    /// Columns in `attnum` order (dropped ones left out).
    pub columns: Vec<PgColumn>,
}

impl PgTable {
    /// `<schema>.<table>`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A column of a published table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// `atttypmod` (-1: none).
    pub typmod: i32,
    /// `format_type` of the type without its modifier (`numeric`, `integer[]`).
    pub type_name: String,
    /// `pg_type.typtype` (`e`: enum).
    pub kind: String,
    /// `pg_type.typcategory` (`A`: array).
    pub category: String,
    /// Part of the primary key.
    pub key: bool,
}

/// A replication slot's state (`pg_replication_slots`).
#[derive(Debug, Clone)]
pub struct SlotState {
    /// A walsender is streaming from it now.
    pub active: bool,
    /// `wal_status`: `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Where a restart resumes.
    pub confirmed_flush: Option<u64>,
    /// `pgoutput`, for a slot this capture can read.
    pub plugin: Option<String>,
}

/// The server as messages name it: `host:port/database`, never the password.
pub fn server_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "the PostgreSQL server".into(),
    }
}

/// A tokio-postgres error as one line: the server's message, detail and hint where it sent
/// them.
fn pg_error(what: &str, e: tokio_postgres::Error) -> Error {
    let reason = match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", what, db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; {hint}"));
            }
            text
        }
        None => format!("{what}: {e}"),
    };
    Error::Source(reason)
}

/// A replication error as one of ours.
pub fn replication_error(what: &str, e: pg_walstream::ReplicationError) -> Error {
    Error::Source(format!("{what}: {e}"))
}

/// A plain SQL session with the source database.
pub struct Server {
    client: tokio_postgres::Client,
    name: String,
}

impl Server {
    /// Connects to `url` (`postgres://user@host:port/database`, without TLS).
    ///
    /// # Errors
    /// [`Error::Source`] when the server cannot be reached or refuses the login.
    pub async fn connect(url: &str) -> Result<Server> {
        let name = server_name(url);
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| pg_error(&format!("cannot connect to {name}"), e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL session ended: {e}");
            }
        });
        Ok(Server { client, name })
    }

    /// `host:port/database`.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn text(&self, sql: &str) -> Result<Option<String>> {
        let row = self
            .client
            .query_opt(sql, &[])
            .await
            .map_err(|e| pg_error(&format!("{}: `{sql}`", self.name), e))?;
        Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
    }

    /// Checks what capture needs before anything is created: PostgreSQL 14 or later,
    /// `wal_level = logical`, and a role with the `REPLICATION` attribute (or superuser).
    ///
    /// # Errors
    /// [`Error::SourceSetup`] naming the setting and the fix.
    pub async fn check(&self) -> Result<()> {
        let version: i32 = self
            .text("SELECT current_setting('server_version_num')")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if version < 140000 {
            return Err(Error::SourceSetup(format!(
                "{}: PostgreSQL {} is too old: capture needs 14 or later",
                self.name,
                version / 10000
            )));
        }
        let wal_level = self.text("SHOW wal_level").await?.unwrap_or_default();
        if wal_level != "logical" {
            return Err(Error::SourceSetup(format!(
                "{}: wal_level is `{wal_level}`; logical replication needs `wal_level = logical` \
                 (ALTER SYSTEM SET wal_level = logical; then restart the server)",
                self.name
            )));
        }
        let allowed = self
            .text("SELECT (rolreplication OR rolsuper)::text FROM pg_roles WHERE rolname = current_user")
            .await?;
        if allowed.as_deref() != Some("true") {
            let user = self
                .text("SELECT current_user::text")
                .await?
                .unwrap_or_default();
            return Err(Error::SourceSetup(format!(
                "{}: role `{user}` may not use replication (ALTER ROLE {user} REPLICATION)",
                self.name
            )));
        }
        Ok(())
    }

    /// Whether publication `name` exists.
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn publication_exists(&self, name: &str) -> Result<bool> {
        let row = self
            .client
            .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
            .await
            .map_err(|e| pg_error(&self.name, e))?;
        Ok(row.is_some())
    }

    /// Creates publication `name` `FOR TABLE` the `(schema, table)`s.
    ///
    /// # Errors
    /// [`Error::SourceSetup`] with the server's reason (a missing table, no privilege).
    pub async fn create_publication(&self, name: &str, tables: &[(String, String)]) -> Result<()> {
        let list = tables
            .iter()
            .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("CREATE PUBLICATION {} FOR TABLE {list}", quote_ident(name));
        self.client.batch_execute(&sql).await.map_err(|e| {
            match pg_error(
                &format!("{}: cannot create publication `{name}`", self.name),
                e,
            ) {
                Error::Source(reason) => Error::SourceSetup(reason),
                other => other,
            }
        })
    }

    /// The tables of publication `name`, with their columns, types and primary keys.
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn published_tables(&self, publication: &str) -> Result<Vec<PgTable>> {
        let sql =
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text, a.attname::text, \
                   a.atttypid::oid, a.atttypmod, format_type(a.atttypid, NULL), t.typtype::text, \
                   t.typcategory::text, \
                   coalesce(a.attnum = ANY (i.indkey::int2[]), false) \
            FROM pg_publication_tables pt \
            JOIN pg_namespace n ON n.nspname = pt.schemaname \
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
              AND a.attgenerated = '' \
            JOIN pg_type t ON t.oid = a.atttypid \
            LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
            WHERE pt.pubname = $1 \
            ORDER BY 1, 2, a.attnum";
        let rows = self.client.query(sql, &[&publication]).await.map_err(|e| {
            pg_error(
                &format!("{}: reading publication `{publication}`", self.name),
                e,
            )
        })?;
        let mut tables: Vec<PgTable> = Vec::new();
        for row in rows {
            let (schema, name): (String, String) = (row.get(0), row.get(1));
            if tables
                .last()
                .is_none_or(|t| t.schema != schema || t.name != name)
            {
                let identity: String = row.get(2);
                tables.push(PgTable {
                    schema,
                    name,
                    replica_identity: identity.chars().next().unwrap_or('d'),
                    columns: Vec::new(),
                });
            }
            let column = PgColumn {
                name: row.get(3),
                type_oid: row.get::<_, u32>(4),
                typmod: row.get(5),
                type_name: row.get(6),
                kind: row.get(7),
                category: row.get(8),
                key: row.get(9),
            };
            if let Some(table) = tables.last_mut() {
                table.columns.push(column);
            }
        }
        Ok(tables)
    }

    /// The state of slot `name` (None: no such slot).
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn slot(&self, name: &str) -> Result<Option<SlotState>> {
        let row = self
            .client
            .query_opt(
                "SELECT active, wal_status, confirmed_flush_lsn::text, plugin::text \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| pg_error(&self.name, e))?;
        Ok(row.map(|r| SlotState {
            active: r.get(0),
            wal_status: r.get(1),
            confirmed_flush: r
                .get::<_, Option<String>>(2)
                .and_then(|t| crate::core::checkpoint::parse_lsn(&t)),
            plugin: r.get(3),
        }))
    }

    /// The state of slot `name`, waiting up to `patience` for a walsender that still holds it
    /// to let go (a process killed a moment ago: its walsender notices the closed connection
    /// within a second or so).
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn slot_when_free(
        &self,
        name: &str,
        patience: std::time::Duration,
    ) -> Result<Option<SlotState>> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let slot = self.slot(name).await?;
            match &slot {
                Some(s) if s.active && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                _ => return Ok(slot),
            }
        }
    }

    /// Drops slot `name` if it exists and no walsender uses it.
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn drop_slot(&self, name: &str) -> Result<()> {
        self.client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND NOT active",
                &[&name],
            )
            .await
            .map_err(|e| pg_error(&format!("{}: dropping slot `{name}`", self.name), e))?;
        Ok(())
    }

    /// The side slots of slot `slot` that exist, by name: those of [`side_slot`] for every
    /// worker, and `<slot>_copy` (the one side slot of earlier versions), pgoutput slots of
    /// this database only.
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn side_slots(&self, slot: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = (0..MAX_COPY_WORKERS).map(|w| side_slot(slot, w)).collect();
        names.push(format!("{slot}_copy"));
        let rows = self
            .client
            .query(
                "SELECT slot_name::text FROM pg_replication_slots \
                 WHERE slot_name = ANY($1) AND plugin = 'pgoutput' \
                   AND database = current_database() ORDER BY 1",
                &[&names],
            )
            .await
            .map_err(|e| pg_error(&self.name, e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Drops the side slots of slot `slot` left by copies that stopped, waiting up to 15 s
    /// each for a killed process's walsender to let go.
    ///
    /// # Errors
    /// [`Error::Source`] when one is still in use (another capture copying tables?) or
    /// cannot be dropped.
    pub async fn drop_side_slots(&self, slot: &str) -> Result<()> {
        for side in self.side_slots(slot).await? {
            let patience = std::time::Duration::from_secs(15);
            if let Some(state) = self.slot_when_free(&side, patience).await? {
                if state.active {
                    return Err(Error::Source(format!(
                        "{}: slot `{side}` is in use: is another capture copying tables?",
                        self.name
                    )));
                }
                self.drop_slot(&side).await?;
            }
        }
        Ok(())
    }

    /// Replication slots and walsenders the server can still take:
    /// `max_replication_slots` less the slots that exist, `max_wal_senders` less the
    /// walsenders running (each copy worker takes one of each while it copies).
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn replication_capacity(&self) -> Result<(u64, u64)> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('max_replication_slots')::int8 \
                          - (SELECT count(*) FROM pg_replication_slots), \
                        current_setting('max_wal_senders')::int8 \
                          - (SELECT count(*) FROM pg_stat_replication)",
                &[],
            )
            .await
            .map_err(|e| pg_error(&self.name, e))?;
        let free = |i: usize| row.get::<_, i64>(i).max(0) as u64;
        Ok((free(0), free(1)))
    }

    /// The size on disk of each table of `tables` (schema, name), bytes, with its TOAST data
    /// (`pg_table_size`): how the copy spreads tables over its workers. A table gone since
    /// counts 0.
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn table_bytes(&self, tables: &[(String, String)]) -> Result<Vec<u64>> {
        let mut sizes = Vec::new();
        for (schema, name) in tables {
            let qualified = format!("{}.{}", quote_ident(schema), quote_ident(name));
            let row = self
                .client
                .query_one(
                    "SELECT coalesce(pg_table_size(to_regclass($1)), 0)::int8",
                    &[&qualified],
                )
                .await
                .map_err(|e| pg_error(&self.name, e))?;
            sizes.push(row.get::<_, i64>(0).max(0) as u64);
        }
        Ok(sizes)
    }

    /// How type `oid` is named and classed, as [`PgColumn`] holds it: `format_type` without a
    /// modifier, `pg_type.typtype`, `pg_type.typcategory` (for a column a Relation message
    /// names: its type OID is all the message says). A type dropped since reads as unknown.
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn type_info(&self, oid: u32) -> Result<(String, String, String)> {
        let row = self
            .client
            .query_opt(
                "SELECT format_type(oid, NULL), typtype::text, typcategory::text \
                 FROM pg_type WHERE oid = $1",
                &[&oid],
            )
            .await
            .map_err(|e| pg_error(&format!("{}: reading type {oid}", self.name), e))?;
        Ok(row.map_or_else(Default::default, |r| (r.get(0), r.get(1), r.get(2))))
    }

    /// The current WAL write position (`pg_current_wal_lsn()`).
    ///
    /// # Errors
    /// [`Error::Source`] for a failed query.
    pub async fn current_lsn(&self) -> Result<u64> {
        let text = self.text("SELECT pg_current_wal_lsn()::text").await?;
        text.as_deref()
            .and_then(crate::core::checkpoint::parse_lsn)
            .ok_or_else(|| Error::Source(format!("{}: no current WAL position", self.name)))
    }
}

/// `name` quoted as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `url` as a replication connection (`replication=database`).
fn replication_url(url: &str) -> String {
    match url.find('?') {
        Some(_) if url.ends_with('?') => format!("{url}replication=database"),
        Some(_) => format!("{url}&replication=database"),
        None => format!("{url}?replication=database"),
    }
}

fn stream_config(slot: &str, publication: &str) -> ReplicationStreamConfig {
    ReplicationStreamConfig::builder(slot, publication)
        .with_protocol_version(1)
        .with_streaming_mode(StreamingMode::Off)
        .with_feedback_interval(std::time::Duration::from_secs(1))
}

/// Creates the logical slot `slot` (pgoutput) if it does not exist, without exporting a
/// snapshot: tables are copied from side slots ([`copy_tables`]).
///
/// # Errors
/// [`Error::Source`] from the server.
pub async fn ensure_slot(url: &str, slot: &str, publication: &str) -> Result<()> {
    let mut stream =
        LogicalReplicationStream::new(&replication_url(url), stream_config(slot, publication))
            .await
            .map_err(|e| {
                replication_error(&format!("{}: replication connection", server_name(url)), e)
            })?;
    stream
        .ensure_replication_slot()
        .await
        .map_err(|e| replication_error(&format!("{}: creating slot `{slot}`", server_name(url)), e))
}

/// Opens the stream of slot `slot` for `publication`, from the slot's confirmed position.
/// (`--once` stops by itself rather than through pg_walstream's stop LSN, which ends the
/// replication mode before the last flush LSN can be confirmed.)
///
/// # Errors
/// [`Error::Source`] from the server (a slot in use by another walsender, say).
pub async fn open_stream(
    url: &str,
    slot: &str,
    publication: &str,
) -> Result<LogicalReplicationStream> {
    let config = stream_config(slot, publication);
    let mut stream = LogicalReplicationStream::new(&replication_url(url), config)
        .await
        .map_err(|e| {
            replication_error(&format!("{}: replication connection", server_name(url)), e)
        })?;
    stream.start(None).await.map_err(|e| {
        replication_error(
            &format!("{}: START_REPLICATION on slot `{slot}`", server_name(url)),
            e,
        )
    })?;
    Ok(stream)
}

/// One copied row: the index of its table in the `tables` given to [`copy_tables`], and its
/// values.
pub type CopiedRow = (usize, Values);

/// A copy in progress: rows of the requested tables, each table's rows together, exact at
/// [`consistent_point`](Copy::consistent_point).
pub struct Copy {
    rows: pg_walstream::SnapshotRows,
    consistent_point: u64,
    index: HashMap<(String, String), usize>,
    tables: Vec<Arc<CaptureTable>>,
    side_slot: String,
}

impl Copy {
    /// The side slot's consistent point: the copy holds every transaction committed before it
    /// and none at or after it.
    pub fn consistent_point(&self) -> u64 {
        self.consistent_point
    }

    /// The next row (None: every table copied).
    ///
    /// # Errors
    /// [`Error::Source`] from the server; the copy is then void (its side slot is dropped).
    pub async fn next(&mut self) -> Result<Option<CopiedRow>> {
        loop {
            let Some(row) = self
                .rows
                .next_row()
                .await
                .map_err(|e| replication_error("initial copy", e))?
            else {
                return Ok(None);
            };
            let key = (
                row.relation.namespace.to_string(),
                row.relation.relation_name.to_string(),
            );
            let Some(&i) = self.index.get(&key) else {
                continue;
            };
            let (values, _) = decode_row(&self.tables[i], &row.data, None);
            return Ok(Some((i, values)));
        }
    }

    /// Ends the copy and drops its side slot (a slot that cannot be dropped is left, with a
    /// warning, for the next start).
    ///
    /// # Errors
    /// [`Error::Source`] when the copy was not read to its end.
    pub async fn finish(self, server: &Server) -> Result<()> {
        let stream = self
            .rows
            .finish()
            .await
            .map_err(|e| replication_error("initial copy", e))?;
        drop(stream);
        // its walsender lets go of the slot a moment after the connection closes
        let patience = std::time::Duration::from_secs(15);
        // the copy is whole whatever happens to its slot: a slot left is dropped by the next
        // start (`Server::drop_side_slots`)
        let dropped = match server.slot_when_free(&self.side_slot, patience).await {
            Ok(Some(state)) if state.active => Err(Error::Source("still in use".into())),
            Ok(Some(_)) => server.drop_slot(&self.side_slot).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = dropped {
            tracing::warn!(slot = %self.side_slot, "the copy's slot is left for the next start to drop: {e}");
        }
        Ok(())
    }
}

/// Most copy workers (`--copy-workers`).
pub const MAX_COPY_WORKERS: usize = 64;

/// Longest `--slot` name: PostgreSQL's 63 bytes less the side slots' suffix (`__copy63`).
pub const MAX_SLOT_NAME: usize = 55;

/// The side slot of copy worker `worker` (0-based, below [`MAX_COPY_WORKERS`]) of slot
/// `slot`: `<slot>__copy0`, `<slot>__copy1`, ...
pub fn side_slot(slot: &str, worker: usize) -> String {
    format!("{slot}__copy{worker}")
}

/// Starts a copy of `tables` (published by `publication`) inside the exported snapshot of a
/// new side slot `side` (see [`side_slot`]; [`Server::drop_side_slots`] removes those of
/// copies that stopped). The slot of the stream is not touched: it started before the side
/// slot, so every transaction the copy misses is still in its stream, and each table applies
/// only the transactions committed at or after its copy's consistent point.
///
/// # Errors
/// [`Error::Source`] from the server.
pub async fn copy_tables(
    url: &str,
    server: &Server,
    side: &str,
    publication: &str,
    tables: Vec<Arc<CaptureTable>>,
) -> Result<Copy> {
    let side = side.to_string();
    let stream =
        LogicalReplicationStream::new(&replication_url(url), stream_config(&side, publication))
            .await
            .map_err(|e| {
                replication_error(&format!("{}: replication connection", server.name()), e)
            })?;
    let outcome = stream
        .snapshot()
        .await
        .map_err(|e| replication_error(&format!("{}: exporting a snapshot", server.name()), e))?;
    let SnapshotOutcome::Available(mut snapshot) = outcome else {
        return Err(Error::Source(format!(
            "{}: slot `{side}` exists and is in use: is another capture copying tables?",
            server.name()
        )));
    };
    let index: HashMap<(String, String), usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (t.source.clone(), i))
        .collect();
    snapshot.retain_tables(|t| {
        index.contains_key(&(
            t.relation().namespace.to_string(),
            t.relation().relation_name.to_string(),
        ))
    });
    let consistent_point = snapshot.consistent_point().value();
    Ok(Copy {
        rows: snapshot.with_cancellation(CancellationToken::new()).rows(),
        consistent_point,
        index,
        tables,
        side_slot: side,
    })
}

/// A row of `table` as values in configured column order, from pgoutput or `COPY` data. A
/// column the data does not carry is NULL, unless `relation` (the column names of the
/// table's latest Relation message) lists it: then the change left its TOASTed value unchanged
/// (`'u'`), and the column is returned in the second list (ascending).
pub fn decode_row(
    table: &CaptureTable,
    data: &RowData,
    relation: Option<&[String]>,
) -> (Values, Vec<usize>) {
    let mut unchanged = Vec::new();
    let values = table
        .config
        .table
        .columns
        .iter()
        .enumerate()
        .map(|(c, column)| match data.get(&column.name) {
            Some(ColumnValue::Null) => None,
            Some(ColumnValue::Text(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Some(ColumnValue::Binary(bytes)) => Some(format!(
                "\\x{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )),
            None => {
                if relation.is_some_and(|r| r.iter().any(|n| n == &column.name)) {
                    unchanged.push(c);
                }
                None
            }
        })
        .collect();
    (values, unchanged)
}
