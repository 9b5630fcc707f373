//! The PostgreSQL driver: one connection, statements with bound parameters, and binary
//! COPY for bulk reads and writes.

use std::fmt;
use std::str::FromStr;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::StreamExt;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgValueFormat};
use sqlx::{Arguments, Column as _, ConnectOptions, Connection, Executor, Row, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use super::copy::{CopyDecoder, CopyEncoder};
use super::types::{self, Param, PgType};
use crate::connectors::{Dialect, SqlSession, Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{Column, DataType, Schema, Value};

/// Bytes of COPY data gathered before they are sent: large enough to amortize the
/// per-message cost, small enough to bound memory.
const COPY_CHUNK: usize = 1 << 20;

/// One PostgreSQL connection, used as a source, a sink or a state store.
///
/// Failures are reported with the session's role ([`Kind::Source`], [`Kind::Sink`], ...),
/// since the driver cannot tell whose connection it is.
pub struct PostgresSession {
    conn: PgConnection,
    role: Kind,
}

impl fmt::Debug for PostgresSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSession").field("role", &self.role).finish_non_exhaustive()
    }
}

/// An error of kind `role` saying what failed; driver errors never carry parameter values.
fn fail(role: Kind, what: &str, e: impl fmt::Display) -> Error {
    Error::new(role, format!("PostgreSQL: {what}: {e}"))
}

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`, or `"table"` (resolved through `search_path`).
pub fn quote_table(table: &TableName) -> String {
    match &table.schema {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&table.name)),
        None => quote_ident(&table.name),
    }
}

/// Removes the URL and its password from a driver message: connection errors may echo
/// either, and the password must not reach logs.
fn redact(message: &str, url: &str) -> String {
    let mut out = message.replace(url, "<url>");
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            if !password.is_empty() {
                out = out.replace(password, "***");
            }
        }
    }
    out
}

/// A column as the catalog describes it.
#[derive(Debug)]
struct CatalogColumn {
    name: String,
    type_name: String,
    typmod: i32,
    not_null: bool,
}

/// The PostgreSQL arguments for `params`, each in its natural binary type ([`Param`]).
fn arguments(params: &[Value], role: Kind) -> Result<PgArguments> {
    let mut args = PgArguments::default();
    for (i, v) in params.iter().enumerate() {
        args.add(Param(v)).map_err(|e| fail(role, &format!("binding parameter ${}", i + 1), e))?;
    }
    Ok(args)
}

impl PostgresSession {
    /// Opens one connection. Errors never contain the URL, which may hold a password.
    pub async fn connect(url: &str, role: Kind) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::new(role, format!("invalid PostgreSQL URL: {}", redact(&e.to_string(), url))))?
            // The host logs what it runs; sqlx would also warn about every long COPY.
            .disable_statement_logging();
        let conn = PgConnection::connect_with(&options).await.map_err(|e| {
            Error::new(role, format!("cannot connect to PostgreSQL: {}", redact(&e.to_string(), url)))
        })?;
        Ok(PostgresSession { conn, role })
    }

    /// Runs a statement without parameters through the simple protocol (which also
    /// accepts several `;`-separated statements).
    async fn simple(&mut self, sql: &str) -> Result<u64> {
        // A `&str` executes through the simple protocol.
        Executor::execute(&mut self.conn, sql)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| fail(self.role, "statement failed", e))
    }

    /// The table's columns in order, or `None` when no such relation exists. Domains are
    /// described by their base type.
    async fn catalog(&mut self, table: &TableName) -> Result<Option<(Oid, Vec<CatalogColumn>)>> {
        let role = self.role;
        let oid: Option<Oid> = sqlx::query_scalar("SELECT to_regclass($1)::oid")
            .bind(quote_table(table))
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| fail(role, &format!("looking up table {table}"), e))?;
        let Some(oid) = oid else { return Ok(None) };
        let rows = sqlx::query(
            "SELECT a.attname::text, COALESCE(b.typname, t.typname)::text, \
                    CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, \
                    a.attnotnull \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(oid)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| fail(role, &format!("reading the columns of {table}"), e))?;
        let columns = rows
            .iter()
            .map(|r| {
                Ok(CatalogColumn {
                    name: r.try_get(0)?,
                    type_name: r.try_get(1)?,
                    typmod: r.try_get(2)?,
                    not_null: r.try_get(3)?,
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| fail(role, &format!("reading the columns of {table}"), e))?;
        Ok(Some((oid, columns)))
    }
}

#[async_trait]
impl SqlSession for PostgresSession {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    /// COPY cannot bind parameters, so [`Self::read`] stores each one as the session
    /// setting `dpone.p{n}` (bound as text, never spliced) and the statement reads it back
    /// cast to the value's type. A NULL needs no setting.
    fn read_placeholder(&self, n: usize, value: &Value) -> String {
        match value {
            Value::Null => "NULL".into(),
            v => format!("current_setting('dpone.p{n}')::{}", types::param_cast(v)),
        }
    }

    async fn execute(&mut self, stmt: &Statement) -> Result<u64> {
        if stmt.params.is_empty() {
            return self.simple(&stmt.sql).await;
        }
        let args = arguments(&stmt.params, self.role)?;
        // Not persistent: sqlx caches prepared statements by SQL text alone, and the same
        // text may come back with parameters of other types.
        sqlx::query_with(&stmt.sql, args)
            .persistent(false)
            .execute(&mut self.conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| fail(self.role, "statement failed", e))
    }

    async fn query(&mut self, stmt: &Statement, types: &[DataType]) -> Result<Vec<Vec<Value>>> {
        let role = self.role;
        let args = arguments(&stmt.params, role)?;
        // The extended protocol (even without parameters) returns binary values, the
        // format the shared decoders read.
        let rows = sqlx::query_with(&stmt.sql, args)
            .persistent(false)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| fail(role, "query failed", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.len() != types.len() {
                return Err(fail(
                    role,
                    "query failed",
                    format!("it returned {} columns, {} were expected", row.len(), types.len()),
                ));
            }
            let mut values = Vec::with_capacity(types.len());
            for (i, want) in types.iter().enumerate() {
                let raw = row.try_get_raw(i).map_err(|e| fail(role, "query failed", e))?;
                let name = row.columns()[i].name();
                let bad = |e: &dyn fmt::Display| {
                    fail(role, "query failed", format!("column `{name}`: {e}"))
                };
                let bytes = if raw.is_null() {
                    None
                } else if raw.format() != PgValueFormat::Binary {
                    return Err(bad(&"value is not in binary format"));
                } else {
                    Some(raw.as_bytes().map_err(|e| bad(&e))?)
                };
                let type_info = raw.type_info();
                let oid = type_info.oid().map(|o| o.0);
                let v = types::decode_value(oid, bytes, want)
                    .map_err(|e| bad(&format!("{e} (type {})", type_info.name())))?;
                values.push(v);
            }
            out.push(values);
        }
        Ok(out)
    }

    async fn table_schema(&mut self, table: &TableName) -> Result<Option<Schema>> {
        let role = self.role;
        let Some((oid, catalog)) = self.catalog(table).await? else { return Ok(None) };
        let mut columns = Vec::with_capacity(catalog.len());
        for c in catalog {
            let data_type = types::portable_type(&c.type_name, c.typmod, &c.name)
                .map_err(|e| e.context(format!("table {table}")))?;
            columns.push(Column { name: c.name, data_type, nullable: !c.not_null });
        }
        let primary_key: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text \
             FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary \
             ORDER BY k.ord",
        )
        .bind(oid)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| fail(role, &format!("reading the primary key of {table}"), e))?;
        Ok(Some(Schema { columns, primary_key }))
    }

    /// Runs `COPY (stmt) TO STDOUT (FORMAT binary)`. Parameters are first stored as session
    /// settings in one round trip (see [`Self::read_placeholder`]).
    ///
    /// The connection can only be used again once the COPY stream is read to its end, so
    /// when the receiver goes away or a value fails to decode, the rest of the stream is
    /// drained (not decoded) before returning.
    async fn read(
        &mut self,
        stmt: &Statement,
        schema: &Schema,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let role = self.role;
        let mut calls = Vec::new();
        let mut args = PgArguments::default();
        for (i, v) in stmt.params.iter().enumerate() {
            if let Some(text) = types::param_text(v) {
                calls.push(format!("set_config('dpone.p{}', ${}, false)", i + 1, calls.len() + 1));
                args.add(text).map_err(|e| fail(role, "binding parameters", e))?;
            }
        }
        if !calls.is_empty() {
            sqlx::query_with(&format!("SELECT {}", calls.join(", ")), args)
                .persistent(false)
                .execute(&mut self.conn)
                .await
                .map_err(|e| fail(role, "binding parameters", e))?;
        }

        let sql = format!("COPY ({}) TO STDOUT (FORMAT binary)", stmt.sql);
        let mut decoder = CopyDecoder::new(schema);
        let mut ready = Vec::new();
        let mut failure: Option<Error> = None;
        let mut receiver_gone = false;
        let mut stream =
            self.conn.copy_out_raw(&sql).await.map_err(|e| fail(role, "read failed", e))?;
        while let Some(chunk) = stream.next().await {
            // sqlx has already resynchronized the connection when the stream fails.
            let chunk = chunk.map_err(|e| fail(role, "read failed", e))?;
            if failure.is_some() || receiver_gone {
                continue;
            }
            if let Err(e) = decoder.feed(&chunk, &mut ready) {
                failure = Some(fail(role, "read failed", e));
                continue;
            }
            for batch in ready.drain(..) {
                if tx.send(batch).await.is_err() {
                    receiver_gone = true;
                    break;
                }
            }
        }
        drop(stream);
        if let Some(e) = failure {
            return Err(e);
        }
        if receiver_gone {
            return Ok(());
        }
        if let Some(batch) = decoder.finish().map_err(|e| fail(role, "read failed", e))? {
            // A closed receiver is not an error: the consumer decided it had enough.
            let _ = tx.send(batch).await;
        }
        Ok(())
    }

    /// Runs `COPY table (columns) FROM STDIN (FORMAT binary)`. The target's column types
    /// are read first: binary COPY needs values in exactly the target's format (see
    /// [`CopyEncoder`]). On any failure the COPY is aborted, so nothing is written.
    async fn bulk_insert(
        &mut self,
        table: &TableName,
        schema: &Schema,
        mut rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        let role = self.role;
        let Some((_, catalog)) = self.catalog(table).await? else {
            return Err(fail(role, "bulk insert failed", format!("table {table} does not exist")));
        };
        let mut targets = Vec::with_capacity(schema.columns.len());
        for c in &schema.columns {
            let Some(t) = catalog.iter().find(|t| t.name == c.name) else {
                return Err(fail(role, "bulk insert failed", format!("table {table} has no column `{}`", c.name)));
            };
            let native = PgType::from_name(&t.type_name).ok_or_else(|| {
                fail(
                    role,
                    "bulk insert failed",
                    format!("column `{}` of {table} has unsupported type `{}`", c.name, t.type_name),
                )
            })?;
            targets.push(native);
        }
        let mut encoder =
            CopyEncoder::new(schema, &targets).map_err(|e| fail(role, &format!("bulk insert into {table}"), e))?;
        let columns: Vec<String> = schema.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            quote_table(table),
            columns.join(", ")
        );

        let mut copy =
            self.conn.copy_in_raw(&sql).await.map_err(|e| fail(role, &format!("bulk insert into {table}"), e))?;
        let mut buf = BytesMut::with_capacity(COPY_CHUNK + COPY_CHUNK / 4);
        let sent: Result<()> = async {
            while let Some(batch) = rx.recv().await {
                encoder.encode(&batch, &mut buf).map_err(|e| fail(role, &format!("bulk insert into {table}"), e))?;
                if buf.len() >= COPY_CHUNK {
                    copy.send(&buf[..]).await.map_err(|e| fail(role, &format!("bulk insert into {table}"), e))?;
                    buf.clear();
                }
            }
            encoder.finish(&mut buf);
            copy.send(&buf[..]).await.map_err(|e| fail(role, &format!("bulk insert into {table}"), e))?;
            Ok(())
        }
        .await;
        match sent {
            Ok(()) => copy.finish().await.map_err(|e| fail(role, &format!("bulk insert into {table}"), e)),
            Err(e) => {
                // The abort's own outcome matters less than the error that caused it.
                if let Err(abort) = copy.abort("dpone: bulk insert failed").await {
                    tracing::debug!("aborting COPY: {abort}");
                }
                Err(e)
            }
        }
    }

    async fn begin(&mut self) -> Result<()> {
        self.simple("BEGIN").await.map(drop)
    }

    async fn commit(&mut self) -> Result<()> {
        self.simple("COMMIT").await.map(drop)
    }

    async fn rollback(&mut self) -> Result<()> {
        self.simple("ROLLBACK").await.map(drop)
    }
}
