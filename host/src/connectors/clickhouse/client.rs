//! The ClickHouse driver: the HTTP interface through reqwest, RowBinary both ways.
//!
//! Every request is one POST. Statements go in the body; a bulk insert puts its
//! `INSERT ... FORMAT RowBinary` in the `query` parameter and streams the rows as the body.
//! Reads are `FORMAT RowBinary`, decoded as the bytes arrive, with the column types taken
//! from a `LIMIT 0` run of the same query (`TabSeparatedWithNamesAndTypes`; the server has no
//! RowBinary with types before 19.x). Small queries (`query`) ask the server to finish
//! before it answers (`wait_end_of_query`), so an error is an HTTP error; a streamed read
//! that fails after its first bytes ends with the server's exception text, which the
//! decoder finds at the end of the response. The servers dpone supports (18.16 and
//! later) bind no parameters over HTTP, so statements arrive with values written as the
//! dialect's audited literals (`dialect.rs`) and are sent as they are.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::config::Compression;
use super::dialect::{ClickhouseDialect, text_literal};
use super::types::{self, ChType, Reader};
use crate::connectors::dialect::SqlDialect;
use crate::connectors::{SnapshotSplit, SqlSession, Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::manifest::Parallelism;
use crate::model::{BATCH_ROWS, Column, DataType, Schema, Value, batch_of, value_at};

/// Bytes of RowBinary gathered before a chunk of the insert body is sent.
const INSERT_CHUNK: usize = 1 << 20;

/// How long a mutation (`ALTER TABLE ... DELETE/UPDATE`) may take before dpone gives up.
const MUTATION_TIMEOUT: Duration = Duration::from_secs(600);

/// One ClickHouse server and database, used as a source or a sink.
pub struct ClickhouseSession {
    http: reqwest::Client,
    /// `scheme://host:port/`.
    endpoint: reqwest::Url,
    user: String,
    password: String,
    database: String,
    role: Kind,
    /// How statements are written for this server (`DateTime64` from 20.1).
    dialect: ClickhouseDialect,
    version: String,
    /// Whether insert bodies are gzipped (the manifest's `compression`, resolved).
    gzip: bool,
}

impl fmt::Debug for ClickhouseSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickhouseSession")
            .field("endpoint", &self.endpoint.as_str())
            .field("database", &self.database)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl ClickhouseSession {
    /// Connects to `url` (`http(s)://[user[:password]@]host:port/database`) and reads the
    /// server version.
    pub async fn connect(url: &str, role: Kind) -> Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::new(role, format!("ClickHouse: the url does not parse: {e}")))?;
        let database = parsed.path().trim_matches('/').to_string();
        let user = match parsed.username() {
            "" => "default".to_string(),
            u => decode(u),
        };
        let password = parsed.password().map(decode).unwrap_or_default();
        let mut endpoint = parsed.clone();
        endpoint.set_path("/");
        endpoint.set_query(None);
        let _ = endpoint.set_username("");
        let _ = endpoint.set_password(None);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::new(role, format!("ClickHouse: {e}")))?;
        let mut session = ClickhouseSession {
            http,
            endpoint,
            user,
            password,
            database: if database.is_empty() {
                "default".into()
            } else {
                database
            },
            role,
            dialect: ClickhouseDialect { datetime64: false },
            version: String::new(),
            gzip: false,
        };
        let rows = session
            .query(&Statement::new("SELECT version()"), &[DataType::Text])
            .await?;
        if let Some(Value::Text(v)) = rows.first().and_then(|r| r.first()) {
            session.version = v.clone();
        }
        session.dialect.datetime64 = release(&session.version) >= (20, 0);
        Ok(session)
    }

    /// Sets how insert bodies are encoded (the manifest's `compression`).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.gzip = compression.gzips(self.endpoint.host_str().unwrap_or_default());
        self
    }

    fn fail(&self, what: &str, e: impl fmt::Display) -> Error {
        Error::new(self.role, format!("ClickHouse: {what}: {e}"))
    }

    /// A POST with the session's database and credentials and these URL parameters.
    fn request(&self, params: &[(&str, &str)]) -> reqwest::RequestBuilder {
        self.http
            .post(self.endpoint.clone())
            .query(&[("database", self.database.as_str())])
            .query(params)
            .basic_auth(&self.user, Some(&self.password))
    }

    /// Sends `req` and fails with the server's message when it answers with an error.
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
        let response = req
            .send()
            .await
            .map_err(|e| self.fail(what, crate::text::with_causes(&e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(self.fail(what, server_message(status, &body)))
    }

    /// Runs SQL that returns nothing.
    async fn run(&self, sql: String, what: &str) -> Result<()> {
        let response = self.send(self.request(&[]).body(sql), what).await?;
        response
            .bytes()
            .await
            .map_err(|e| self.fail(what, crate::text::with_causes(&e)))?;
        Ok(())
    }

    /// The column types a query returns, from a `LIMIT 0` run of it.
    async fn result_types(&self, sql: &str) -> Result<Vec<ChType>> {
        // On their own lines, so a comment at the end of `sql` cannot swallow the rest.
        let probe =
            format!("SELECT * FROM (\n{sql}\n) LIMIT 0 FORMAT TabSeparatedWithNamesAndTypes");
        let response = self
            .send(self.request(&[]).body(probe), "describe a query")
            .await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| self.fail("describe a query", e))?;
        let mut lines = body.split(|b| *b == b'\n');
        let _names = lines.next();
        let types = lines.next().unwrap_or_default();
        split_tsv(types)
            .map(|t| ChType::parse(&String::from_utf8_lossy(&types::unescape_tsv(t))))
            .collect()
    }

    /// Starts `sql` as a RowBinary read whose columns are read as `wanted`; `small` waits
    /// for the whole result on the server (errors come back as HTTP errors).
    async fn rows(&self, sql: &str, wanted: &[DataType], small: bool) -> Result<Rows> {
        let native = self.result_types(sql).await?;
        if native.len() != wanted.len() {
            return Err(self.fail(
                "read",
                format!(
                    "the query returns {} columns, {} expected",
                    native.len(),
                    wanted.len()
                ),
            ));
        }
        let wait: &[(&str, &str)] = if small {
            &[("wait_end_of_query", "1")]
        } else {
            &[]
        };
        let response = self
            .send(
                self.request(wait).body(format!("{sql}\nFORMAT RowBinary")),
                "read",
            )
            .await?;
        Ok(Rows {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            tail: Vec::new(),
            native,
            wanted: wanted.to_vec(),
            role: self.role,
        })
    }

    /// Waits until no mutation of `table` is still running, failing if one takes longer
    /// than [`MUTATION_TIMEOUT`].
    async fn wait_for_mutations(&mut self, table: &TableName) -> Result<()> {
        let pending = Statement::new(format!(
            "SELECT count() FROM system.mutations WHERE database = {} AND table = {} AND is_done = 0",
            text_literal(self.database_of(table)),
            text_literal(&table.name)
        ));
        let started = std::time::Instant::now();
        loop {
            let rows = self.query(&pending, &[DataType::Int64]).await?;
            if matches!(rows.first().and_then(|r| r.first()), Some(Value::Int(0))) {
                return Ok(());
            }
            if started.elapsed() > MUTATION_TIMEOUT {
                return Err(self.fail(
                    "mutation",
                    "still running after 10 minutes; see system.mutations",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The native types and comments of `table`'s columns, by name, in table order.
    async fn column_types(
        &mut self,
        table: &TableName,
    ) -> Result<Option<Vec<(String, ChType, String)>>> {
        let stmt = Statement::new(format!(
            "SELECT name, type, comment FROM system.columns WHERE database = {} AND table = {} \
             AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')",
            text_literal(self.database_of(table)),
            text_literal(&table.name)
        ));
        let rows = self.query(&stmt, &[DataType::Text; 3]).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.into_iter()
            .map(|r| match (&r[0], &r[1], &r[2]) {
                (Value::Text(n), Value::Text(t), Value::Text(comment)) => ChType::parse(t)
                    .map(|t| (n.clone(), t, comment.clone()))
                    .map_err(|e| Error::new(e.kind, format!("{table}.{n}: {}", e.message))),
                _ => Err(Error::internal("system.columns returned a non-text row")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn database_of<'t>(&'t self, table: &'t TableName) -> &'t str {
        table.schema.as_deref().unwrap_or(&self.database)
    }
}

/// A RowBinary response being decoded as it arrives.
struct Rows {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    /// The last bytes received, decoded or not: where the server's exception text is when
    /// it aborted the response (the text itself may have decoded as rows).
    tail: Vec<u8>,
    native: Vec<ChType>,
    wanted: Vec<DataType>,
    role: Kind,
}

/// Bytes of a response kept in [`Rows::tail`]: more than a server exception's text.
const TAIL: usize = 4096;

impl Rows {
    /// The rows of the next chunk of the response (possibly none); `None` at its end.
    async fn next(&mut self) -> Result<Option<Vec<Vec<Value>>>> {
        let Some(chunk) = self.body.next().await else {
            if !self.buf.is_empty() || self.server_exception().is_some() {
                return Err(self.broken("the response ended inside a row"));
            }
            return Ok(None);
        };
        let chunk = chunk.map_err(|e| {
            Error::new(
                self.role,
                format!("ClickHouse: read: {}", crate::text::with_causes(&e)),
            )
        })?;
        self.buf.extend_from_slice(&chunk);
        self.tail.extend_from_slice(&chunk);
        let excess = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..excess);
        let mut reader = Reader {
            buf: &self.buf,
            pos: 0,
        };
        let mut rows = Vec::new();
        'rows: loop {
            let start = reader.pos;
            let mut row = Vec::with_capacity(self.native.len());
            for (t, want) in self.native.iter().zip(&self.wanted) {
                let value = reader.value(t, want);
                match value.map_err(|e| self.broken(&e.message))? {
                    Some(v) => row.push(v),
                    None => {
                        reader.pos = start;
                        break 'rows;
                    }
                }
            }
            rows.push(row);
        }
        let consumed = reader.pos;
        self.buf.drain(..consumed);
        Ok(Some(rows))
    }
}

impl Rows {
    /// The exception text the server appends when it aborts a response it had started,
    /// if the response ends with one.
    fn server_exception(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.tail);
        let at = text.rfind("Code: ")?;
        text[at..]
            .contains("DB::Exception")
            .then(|| server_message(reqwest::StatusCode::OK, &text[at..]))
    }

    /// A read whose bytes stopped making rows: the server's exception when it appended
    /// one, else `why`.
    fn broken(&self, why: &str) -> Error {
        let message = self.server_exception().unwrap_or_else(|| why.to_string());
        Error::new(self.role, format!("ClickHouse: read: {message}"))
    }
}

/// An error with its causes (reqwest's own message leaves out why a connection failed).
/// Percent-decodes a URL's user or password.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The server's error text without its C++ decoration.
fn server_message(status: reqwest::StatusCode, body: &str) -> String {
    let text = body.trim();
    let text = text
        .split_once("e.displayText() = ")
        .map_or(text, |(_, rest)| rest);
    let text = text.split(", e.what()").next().unwrap_or(text);
    format!("{} (HTTP {})", text.trim(), status.as_u16())
}

fn split_tsv(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| *b == b'\t')
}

/// The table of `ALTER TABLE <table> DELETE|UPDATE ...`: a mutation, which the server runs
/// in the background; `None` for any other statement.
fn mutated_table(sql: &str) -> Option<TableName> {
    let sql = sql.trim_start();
    let words: Vec<String> = sql
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let mutation =
        words.windows(2).any(|w| w == ["DELETE", "WHERE"]) || words.iter().any(|w| w == "UPDATE");
    if !(words.first().is_some_and(|w| w == "ALTER")
        && words.get(1).is_some_and(|w| w == "TABLE")
        && mutation)
    {
        return None;
    }
    // Past `ALTER` and `TABLE`, whatever the spacing.
    let mut rest = sql["ALTER".len()..].trim_start()["TABLE".len()..].trim_start();
    let mut parts = Vec::new();
    loop {
        let (name, after) = match rest.strip_prefix('"') {
            Some(quoted) => {
                let mut name = String::new();
                let mut chars = quoted.char_indices();
                // Quoted by the dialect: `\` escapes the next character.
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => name.push(chars.next()?.1),
                        (i, '"') => break i + 1,
                        (_, c) => name.push(c),
                    }
                };
                (name, &quoted[end..])
            }
            None => {
                let end = rest.find(|c: char| c == '.' || c.is_whitespace())?;
                (rest[..end].to_string(), &rest[end..])
            }
        };
        parts.push(name);
        match after.strip_prefix('.') {
            Some(more) => rest = more,
            None => break,
        }
    }
    match parts.as_slice() {
        [name] => Some(TableName {
            schema: None,
            name: name.clone(),
        }),
        [schema, name] => Some(TableName {
            schema: Some(schema.clone()),
            name: name.clone(),
        }),
        _ => None,
    }
}

#[async_trait]
impl SqlSession for ClickhouseSession {
    fn dialect(&self) -> &dyn SqlDialect {
        &self.dialect
    }

    fn transactional(&self) -> bool {
        false
    }

    /// Runs a statement. Mutations are waited for, so their effect is visible when this
    /// returns. The HTTP interface reports no affected-row count: always 0.
    async fn execute(&mut self, stmt: &Statement) -> Result<u64> {
        self.run(stmt.sql.clone(), "statement").await?;
        if let Some(table) = mutated_table(&stmt.sql) {
            self.wait_for_mutations(&table).await?;
        }
        Ok(0)
    }

    async fn query(&mut self, stmt: &Statement, types: &[DataType]) -> Result<Vec<Vec<Value>>> {
        let mut rows = self.rows(&stmt.sql, types, true).await?;
        let mut out = Vec::new();
        while let Some(mut more) = rows.next().await? {
            out.append(&mut more);
        }
        Ok(out)
    }

    async fn table_schema(&mut self, table: &TableName) -> Result<Option<Schema>> {
        let Some(columns) = self.column_types(table).await? else {
            return Ok(None);
        };
        Ok(Some(Schema {
            columns: columns
                .into_iter()
                .map(|(name, t, comment)| Column {
                    data_type: types::portable_type(&t, &comment),
                    nullable: t.base().1,
                    name,
                })
                .collect(),
            // ClickHouse's primary key orders rows and enforces nothing: a table reports
            // none, so strategies check keys in staging themselves.
            primary_key: Vec::new(),
        }))
    }

    async fn read(
        &mut self,
        stmt: &Statement,
        schema: &Schema,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let wanted: Vec<DataType> = schema.columns.iter().map(|c| c.data_type).collect();
        let mut rows = self.rows(&stmt.sql, &wanted, false).await?;
        let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH_ROWS);
        while let Some(more) = rows.next().await? {
            for row in more {
                batch.push(row);
                if batch.len() == BATCH_ROWS {
                    let full = batch_of(schema, &std::mem::take(&mut batch))?;
                    if tx.send(full).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch_of(schema, &batch)?).await;
        }
        Ok(())
    }

    async fn bulk_insert(
        &mut self,
        table: &TableName,
        schema: &Schema,
        mut rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        let native = self
            .column_types(table)
            .await?
            .ok_or_else(|| self.fail("insert", format!("table {table} does not exist")))?;
        let targets: Vec<ChType> = schema
            .columns
            .iter()
            .map(|c| {
                native
                    .iter()
                    .find(|(n, _, _)| *n == c.name)
                    .map(|(_, t, _)| t.clone())
                    .ok_or_else(|| {
                        self.fail("insert", format!("{table} has no column `{}`", c.name))
                    })
            })
            .collect::<Result<_>>()?;
        let encoder = BodyEncoder {
            columns: schema.columns.clone(),
            targets,
            gzip: self.gzip,
        };
        let rows = Arc::new(AtomicU64::new(0));
        let encode_error: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let (chunks_tx, chunks_rx) = mpsc::channel(2);
        let (counter, failed) = (rows.clone(), encode_error.clone());
        tokio::spawn(async move {
            if let Err(e) = encoder.run(&mut rx, &chunks_tx, &counter).await {
                *failed.lock().expect("not poisoned") = Some(e);
                let _ = chunks_tx
                    .send(Err(std::io::Error::other("row encoding failed")))
                    .await;
            }
        });
        let body = futures_util::stream::unfold(chunks_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let query = format!(
            "INSERT INTO {} ({}) FORMAT RowBinary",
            self.dialect.table_ref(table),
            self.dialect.column_list(&schema.names())
        );
        let mut request = self.request(&[("query", &query)]);
        if self.gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        let sent = self
            .send(request.body(reqwest::Body::wrap_stream(body)), "insert")
            .await;
        if let Some(e) = encode_error.lock().expect("not poisoned").take() {
            return Err(e);
        }
        sent?.bytes().await.map_err(|e| self.fail("insert", e))?;
        Ok(rows.load(Ordering::Relaxed))
    }

    /// By partition, each share pinned to the split's moment by its parts' block numbers
    /// ([`super::partitions::split`]).
    async fn snapshot_split(
        &mut self,
        table: &TableName,
        streams: Parallelism,
    ) -> Result<Option<SnapshotSplit>> {
        // From 25.7 a lightweight UPDATE writes patch parts outside the partitions a
        // share's check looks at.
        if release(&self.version) >= PATCH_PARTS {
            return Ok(None);
        }
        super::partitions::split(self, table, streams).await
    }

    async fn begin(&mut self) -> Result<()> {
        Err(no_transactions())
    }

    async fn commit(&mut self) -> Result<()> {
        Err(no_transactions())
    }

    async fn rollback(&mut self) -> Result<()> {
        Err(no_transactions())
    }

    /// A shadow copy of the target must be able to stand in for it (a non-replicated
    /// MergeTree family table), and its key columns must not be Nullable: keys are matched
    /// with `IN`, where NULL never matches.
    async fn check_target(
        &mut self,
        table: &TableName,
        schema: &Schema,
        _incoming: &Schema,
        key: &[String],
    ) -> Result<()> {
        super::publish::check_engine(self, table).await?;
        match schema
            .columns
            .iter()
            .find(|c| c.nullable && key.contains(&c.name))
        {
            Some(c) => Err(Error::config(
                "sink.strategy.unique_key",
                format!(
                    "key column `{}` of the target {table} is Nullable: make it non-Nullable (ClickHouse matches keys with IN, where NULL never matches)",
                    c.name
                ),
            )),
            None => Ok(()),
        }
    }

    async fn swap_statement(
        &mut self,
        target: &TableName,
        shadow: &TableName,
        old: &TableName,
    ) -> Result<(String, TableName)> {
        super::publish::statement(self, target, shadow, old).await
    }

    async fn partitioned_by(&mut self, table: &TableName, column: &str) -> Result<bool> {
        super::partitions::partition_key_is(self, table, column).await
    }

    async fn partition_replacements(
        &mut self,
        target: &TableName,
        copy: &TableName,
    ) -> Result<Vec<String>> {
        let ids = super::partitions::partition_ids(self, copy).await?;
        Ok(ids
            .iter()
            .map(|id| super::partitions::replace_sql(target, copy, id))
            .collect())
    }

    async fn try_lock(&mut self, _name: &str) -> Result<bool> {
        Err(Error::new(
            Kind::Unsupported,
            "ClickHouse has no locks to hold a pipeline's run: keep the state store in SQLite or PostgreSQL",
        ))
    }
}

/// A server `version`'s (major, minor); (0, 0) when it does not say.
fn release(version: &str) -> (u32, u32) {
    let mut numbers = version.split('.').map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// The first release with lightweight `UPDATE` and its patch parts.
const PATCH_PARTS: (u32, u32) = (25, 7);

fn no_transactions() -> Error {
    Error::new(
        Kind::Unsupported,
        "ClickHouse has no multi-statement transactions (the sink publishes through a shadow table instead)",
    )
}

/// Encodes Arrow batches as a RowBinary insert body for the target's column types.
struct BodyEncoder {
    columns: Vec<Column>,
    targets: Vec<ChType>,
    gzip: bool,
}

type BodyChunk = std::result::Result<Vec<u8>, std::io::Error>;

impl BodyEncoder {
    /// Encodes every batch from `rx` into `out` in chunks of about [`INSERT_CHUNK`] bytes,
    /// counting rows in `rows`. Stops quietly when the request is gone.
    async fn run(
        self,
        rx: &mut mpsc::Receiver<RecordBatch>,
        out: &mpsc::Sender<BodyChunk>,
        rows: &AtomicU64,
    ) -> Result<()> {
        let mut body = BodyWriter::new(self.gzip);
        let mut row_bytes = Vec::with_capacity(INSERT_CHUNK);
        while let Some(batch) = rx.recv().await {
            for row in 0..batch.num_rows() {
                for (i, (c, t)) in self.columns.iter().zip(&self.targets).enumerate() {
                    let array = batch.column(i);
                    if !types::write_cell(&mut row_bytes, t, array, &c.data_type, row) {
                        let v = value_at(array, &c.data_type, row);
                        types::write_value(&mut row_bytes, t, &v, &c.name)?;
                    }
                }
            }
            rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            if row_bytes.len() >= INSERT_CHUNK {
                let chunk = body.write(&row_bytes)?;
                row_bytes.clear();
                if !chunk.is_empty() && out.send(Ok(chunk)).await.is_err() {
                    return Ok(());
                }
            }
        }
        let mut last = body.write(&row_bytes)?;
        last.extend(body.finish()?);
        if !last.is_empty() {
            let _ = out.send(Ok(last)).await;
        }
        Ok(())
    }
}

/// An insert body's encoding: RowBinary as is, or gzipped on the way.
enum BodyWriter {
    Plain,
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl BodyWriter {
    fn new(gzip: bool) -> Self {
        if gzip {
            BodyWriter::Gzip(flate2::write::GzEncoder::new(
                Vec::with_capacity(INSERT_CHUNK),
                flate2::Compression::fast(),
            ))
        } else {
            BodyWriter::Plain
        }
    }

    /// Takes `bytes`; returns what is ready to send (possibly nothing yet).
    fn write(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        use std::io::Write;
        match self {
            BodyWriter::Plain => Ok(bytes.to_vec()),
            BodyWriter::Gzip(gz) => {
                gz.write_all(bytes).map_err(gzip_error)?;
                Ok(std::mem::take(gz.get_mut()))
            }
        }
    }

    /// The encoding's trailer.
    fn finish(self) -> Result<Vec<u8>> {
        match self {
            BodyWriter::Plain => Ok(Vec::new()),
            BodyWriter::Gzip(gz) => gz.finish().map_err(gzip_error),
        }
    }
}

fn gzip_error(e: std::io::Error) -> Error {
    Error::new(Kind::Sink, format!("ClickHouse: gzip: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_the_server_aborted_reports_its_exception() {
        // One whole Int64 row, then the text 18.16 appends when a query fails mid-stream.
        let mut body = 7i64.to_le_bytes().to_vec();
        body.extend_from_slice(
            b"Code: 241, e.displayText() = DB::Exception: Memory limit exceeded, e.what() = DB::Exception\n",
        );
        let mut rows = Rows {
            body: Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from(body))])),
            buf: Vec::new(),
            tail: Vec::new(),
            native: vec![ChType::Int64],
            wanted: vec![DataType::Int64],
            role: Kind::Source,
        };
        let err = loop {
            match rows.next().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the aborted read ended cleanly"),
                Err(e) => break e,
            }
        };
        assert!(
            err.message.contains("DB::Exception: Memory limit exceeded"),
            "{err}"
        );
    }

    #[test]
    fn lightweight_updates_arrive_in_25_7() {
        assert!(release("18.16.1") < PATCH_PARTS);
        assert!(release("25.6.3.116") < PATCH_PARTS);
        assert!(release("25.7.1.3997") >= PATCH_PARTS);
        assert!(release("26.1") >= PATCH_PARTS);
        assert_eq!(release(""), (0, 0));
    }

    #[test]
    fn recognizes_mutations_and_server_errors() {
        assert_eq!(
            mutated_table("ALTER TABLE \"db\".\"a\\\"b\" DELETE WHERE id IN (1)"),
            Some(TableName {
                schema: Some("db".into()),
                name: "a\"b".into()
            })
        );
        assert_eq!(
            mutated_table("alter  table\n t UPDATE x = 1 WHERE 1").map(|t| t.name),
            Some("t".into())
        );
        assert_eq!(
            mutated_table("ALTER TABLE \"t\" REPLACE PARTITION 1 FROM s"),
            None
        );
        assert_eq!(
            server_message(
                reqwest::StatusCode::NOT_FOUND,
                "Code: 60, e.displayText() = DB::Exception: Table default.x doesn't exist., e.what() = DB::Exception\n"
            ),
            "DB::Exception: Table default.x doesn't exist. (HTTP 404)"
        );
    }
}
