//! The SQL Server driver: one tiberius connection over TCP (TLS by rustls), statements
//! through `sp_executesql` with bound parameters, streamed reads, and TDS bulk load into
//! staging.

use std::fmt;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use futures_util::StreamExt;
use tiberius::{
    AuthMethod, Client, ColumnData, EncryptionLevel, SqlBulkCopyOption, ToSql, TokenRow,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::config::{Address, Encrypt, MssqlConfig};
use super::dialect::MssqlDialect;
use super::types::{cell, from_column_data, portable_type, row_version_position, to_column_data};
use crate::connectors::dialect::SqlDialect;
use crate::connectors::sink::first_texts;
use crate::connectors::{SqlSession, Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{BATCH_ROWS, Column, DataType, Schema, Value, batch_of, value_at};

type Tds = Client<Compat<TcpStream>>;

/// Server error numbers of a duplicate key: a PRIMARY KEY or UNIQUE constraint (2627), a
/// unique index (2601).
const DUPLICATE_KEY: [u32; 2] = [2627, 2601];

/// `sp_getapplock` resources are at most 255 characters; longer lock names are hashed.
const LOCK_NAME_CHARS: usize = 255;

// The connector's own statements. Catalog names are spelled as the catalog spells them
// (`INFORMATION_SCHEMA` upper case, `sys` lower case), so they resolve in databases with
// case-sensitive collations too.

const SPID_SQL: &str = "SELECT CAST(@@SPID AS BIGINT)";

/// A table's columns: name, type, precision, scale, nullable (1 or 0).
const COLUMNS_SQL: &str = "SELECT C.COLUMN_NAME, C.DATA_TYPE, CAST(COALESCE(C.NUMERIC_PRECISION, 0) AS BIGINT), \
     CAST(COALESCE(C.NUMERIC_SCALE, 0) AS BIGINT), CAST(CASE WHEN C.IS_NULLABLE = 'YES' THEN 1 ELSE 0 END AS BIGINT) \
     FROM INFORMATION_SCHEMA.COLUMNS AS C \
     WHERE C.TABLE_SCHEMA = COALESCE(@P1, SCHEMA_NAME()) AND C.TABLE_NAME = @P2 ORDER BY C.ORDINAL_POSITION";

const PRIMARY_KEY_SQL: &str = "SELECT K.COLUMN_NAME FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS T \
     JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS K \
     ON K.CONSTRAINT_SCHEMA = T.CONSTRAINT_SCHEMA AND K.CONSTRAINT_NAME = T.CONSTRAINT_NAME \
     WHERE T.CONSTRAINT_TYPE = 'PRIMARY KEY' AND T.TABLE_SCHEMA = COALESCE(@P1, SCHEMA_NAME()) \
     AND T.TABLE_NAME = @P2 ORDER BY K.ORDINAL_POSITION";

/// The columns of table `@P1` whose collation is not the database default.
const COLLATIONS_SQL: &str = "SELECT c.name, c.collation_name, \
     CAST(DATABASEPROPERTYEX(DB_NAME(), 'Collation') AS NVARCHAR(128)) FROM sys.columns AS c \
     WHERE c.object_id = OBJECT_ID(@P1) AND c.collation_name IS NOT NULL \
     AND c.collation_name <> CAST(DATABASEPROPERTYEX(DB_NAME(), 'Collation') AS NVARCHAR(128))";

const HORIZON_SQL: &str = "SELECT CAST(MIN_ACTIVE_ROWVERSION() AS BIGINT)";

/// `sp_getapplock` for `owner` (`Session` or `Transaction`) on resource `@P1`, waiting
/// `@P2` ms; selects its status.
fn applock_sql(owner: &str) -> String {
    format!(
        "DECLARE @r int; EXEC @r = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', \
         @LockOwner = '{owner}', @LockTimeout = @P2; SELECT CAST(@r AS bigint)"
    )
}

/// When the server logged this session in, as text; only the session itself can read it
/// without `VIEW SERVER STATE`.
const LOGIN_TIME_SQL: &str = "SELECT CONVERT(nvarchar(30), login_time, 126) FROM sys.dm_exec_sessions WHERE session_id = @@SPID";

/// The columns of table `@P1` as bulk load sees them: name, type, scale.
const BULK_COLUMNS_SQL: &str = "SELECT c.name, TYPE_NAME(c.system_type_id), CAST(c.scale AS BIGINT) \
     FROM sys.columns AS c WHERE c.object_id = OBJECT_ID(@P1)";

/// One SQL Server connection, used as a source, a sink or a state store.
///
/// The session runs with `XACT_ABORT ON`: a run-time error inside a transaction rolls the
/// whole transaction back on the server. From then on the session refuses every statement
/// until `rollback`, so nothing can run outside the transaction the caller believes open.
pub struct MssqlSession {
    client: Tds,
    role: Kind,
    /// The server session id, to end this session's work from another one (`KILL`).
    spid: i64,
    /// When the server logged this session in: a `KILL` checks it, so it never ends a
    /// later session that was given the same id.
    login_time: Option<String>,
    /// Between `begin` and `commit`/`rollback`.
    in_transaction: bool,
    /// A statement failed inside the transaction: the server rolled it back.
    doomed: bool,
    dialect: MssqlDialect,
}

impl fmt::Debug for MssqlSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MssqlSession")
            .field("role", &self.role)
            .field("spid", &self.spid)
            .finish_non_exhaustive()
    }
}

/// An error of kind `role` saying what failed: a server error as its message, number,
/// state and line (a duplicate key is a [`Kind::KeyViolation`]); parameter values are
/// never added.
fn fail(role: Kind, what: &str, e: tiberius::error::Error) -> Error {
    match &e {
        tiberius::error::Error::Server(t) => {
            let kind = if DUPLICATE_KEY.contains(&t.code()) {
                Kind::KeyViolation
            } else {
                role
            };
            Error::new(
                kind,
                format!(
                    "SQL Server: {what}: {} (error {}, state {}, line {})",
                    t.message(),
                    t.code(),
                    t.state(),
                    t.line()
                ),
            )
        }
        other => Error::new(role, format!("SQL Server: {what}: {other}")),
    }
}

/// The parameters of a statement as TDS data, in order.
fn parameters(params: &[Value]) -> Result<Vec<ColumnData<'static>>> {
    params.iter().cloned().map(to_column_data).collect()
}

impl MssqlSession {
    /// Opens one connection. Errors name the host and port and give the server's message;
    /// they never hold the password or the token.
    pub async fn connect(config: &MssqlConfig, role: Kind) -> Result<Self> {
        let address = config
            .address("url")
            .map_err(|e| Error::new(role, e.message))?;
        let mut tds = tiberius::Config::new();
        tds.host(&address.host);
        tds.port(address.port);
        tds.database(&address.database);
        tds.application_name("dpone");
        tds.authentication(match &config.access_token {
            Some(token) => AuthMethod::aad_token(token.expose()),
            None => AuthMethod::sql_server(&address.user, &address.password),
        });
        tds.encryption(match config.encrypt {
            Encrypt::On => EncryptionLevel::Required,
            Encrypt::Strict => EncryptionLevel::Strict,
            Encrypt::Off => EncryptionLevel::Off,
            Encrypt::Plaintext => EncryptionLevel::NotSupported,
        });
        // A merge or a swap may run for hours: no per-response timeout (the run's
        // `limits.wall_seconds` bounds it).
        tds.command_timeout(None);
        if config.trust_server_certificate {
            tds.trust_cert();
        }
        let mut client = open(tds, &address, role).await?;
        // A SQL batch, not sp_executesql: a SET there would end with the call.
        client
            .simple_query("SET XACT_ABORT ON")
            .await
            .map_err(|e| fail(role, "SET XACT_ABORT ON failed", e))?
            .into_results()
            .await
            .map_err(|e| fail(role, "SET XACT_ABORT ON failed", e))?;
        let mut session = MssqlSession {
            client,
            role,
            spid: 0,
            login_time: None,
            in_transaction: false,
            doomed: false,
            dialect: MssqlDialect {
                row_version_column: config.row_version_column.clone(),
            },
        };
        let rows = session
            .query(&Statement::new(SPID_SQL), &[DataType::Int64])
            .await?;
        session.spid = match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(spid)) => *spid,
            other => return Err(Error::new(role, format!("@@SPID returned {other:?}"))),
        };
        // Without it (an old server, a test double) the session is never killed: closing
        // the connection is what ends its work then.
        session.login_time = match session
            .query(&Statement::new(LOGIN_TIME_SQL), &[DataType::Text])
            .await
        {
            Ok(rows) => match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
                Some(Value::Text(t)) => Some(t),
                _ => None,
            },
            Err(e) => {
                tracing::debug!("reading the session's login time failed: {e}");
                None
            }
        };
        Ok(session)
    }

    /// Refuses a statement in a transaction the server already rolled back.
    fn usable(&self) -> Result<()> {
        if self.doomed {
            return Err(Error::new(
                self.role,
                "SQL Server rolled the transaction back after an earlier error in it: nothing more runs until it is rolled back",
            ));
        }
        Ok(())
    }

    /// Notes a failed request: inside a transaction, the server rolled it back.
    fn failed(&mut self, e: Error) -> Error {
        if self.in_transaction {
            self.doomed = true;
        }
        e
    }

    /// The columns of `table` as the server declares them: (type name, scale) by name.
    async fn bulk_columns(
        &mut self,
        table: &str,
    ) -> Result<std::collections::HashMap<String, (String, u8)>> {
        let rows = self
            .query(
                &Statement {
                    sql: BULK_COLUMNS_SQL.into(),
                    params: vec![Value::Text(table.into())],
                },
                &[DataType::Text, DataType::Text, DataType::Int64],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match r.as_slice() {
                [Value::Text(name), Value::Text(t), Value::Int(scale)] => Some((
                    name.clone(),
                    (t.to_ascii_lowercase(), u8::try_from(*scale).unwrap_or(0)),
                )),
                _ => None,
            })
            .collect())
    }

    /// Runs `sql` with `params`; the rows of its first result set.
    async fn rows(&mut self, stmt: &Statement) -> Result<Vec<tiberius::Row>> {
        self.usable()?;
        let data = parameters(&stmt.params)?;
        let refs: Vec<&dyn ToSql> = data.iter().map(|d| d as &dyn ToSql).collect();
        let role = self.role;
        let result = match self.client.query(stmt.sql.as_str(), &refs).await {
            Ok(stream) => stream
                .into_first_result()
                .await
                .map_err(|e| fail(role, "reading the result failed", e)),
            Err(e) => Err(fail(role, "query failed", e)),
        };
        result.map_err(|e| self.failed(e))
    }

    /// `sp_getapplock` on `name` for `owner` (`Session` or `Transaction`), waiting
    /// `timeout_ms` (-1: for ever); whether it was granted.
    async fn applock(&mut self, name: &str, owner: &str, timeout_ms: i64) -> Result<bool> {
        let resource = if name.chars().count() <= LOCK_NAME_CHARS {
            name.to_string()
        } else {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(name.as_bytes());
            format!("dpone:{}", crate::runtime::engine::hex(&digest))
        };
        let stmt = Statement {
            sql: applock_sql(owner),
            params: vec![Value::Text(resource), Value::Int(timeout_ms)],
        };
        let rows = self.query(&stmt, &[DataType::Int64]).await?;
        match rows.first().and_then(|r| r.first()) {
            // 0: granted at once, 1: granted after waiting.
            Some(Value::Int(0 | 1)) => Ok(true),
            // -1: timed out.
            Some(Value::Int(-1)) => Ok(false),
            other => Err(Error::new(
                self.role,
                format!(
                    "sp_getapplock on `{name}` failed with {other:?} (-2 cancelled, -3 deadlock victim, -999 bad call)"
                ),
            )),
        }
    }
    /// [`SqlSession::read`] without the transaction bookkeeping.
    async fn read_rows(
        &mut self,
        stmt: &Statement,
        schema: &Schema,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let role = self.role;
        let data = parameters(&stmt.params)?;
        let refs: Vec<&dyn ToSql> = data.iter().map(|d| d as &dyn ToSql).collect();
        let mut rows = self
            .client
            .query(stmt.sql.as_str(), &refs)
            .await
            .map_err(|e| fail(role, "query failed", e))?
            .into_row_stream();
        let types: Vec<&DataType> = schema.columns.iter().map(|c| &c.data_type).collect();
        let mut buffer: Vec<Vec<Value>> = Vec::with_capacity(BATCH_ROWS);
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| fail(role, "reading rows failed", e))?;
            let values = row
                .into_iter()
                .zip(&schema.columns)
                .zip(&types)
                .map(|((data, c), t)| from_column_data(data, t, &c.name))
                .collect::<Result<Vec<_>>>()?;
            buffer.push(values);
            if buffer.len() == BATCH_ROWS {
                let batch = batch_of(schema, &buffer)?;
                buffer.clear();
                if tx.send(batch).await.is_err() {
                    // The receiver is gone; the rest of the result is drained by the next
                    // request on this connection.
                    return Ok(());
                }
            }
        }
        if !buffer.is_empty() {
            let _ = tx.send(batch_of(schema, &buffer)?).await;
        }
        Ok(())
    }

    /// [`SqlSession::bulk_insert`] without the transaction bookkeeping.
    async fn bulk_load(
        &mut self,
        table: &TableName,
        schema: &Schema,
        mut rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        let role = self.role;
        let target = self.dialect.table_ref(table);
        let declared = self.bulk_columns(&target).await?;
        let kinds = schema
            .columns
            .iter()
            .map(|c| {
                declared.get(&c.name).cloned().ok_or_else(|| {
                    Error::new(role, format!("{target} has no column `{}` to load", c.name))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let quoted: Vec<String> = schema
            .columns
            .iter()
            .map(|c| self.dialect.quote_ident(&c.name))
            .collect();
        let columns: Vec<&str> = quoted.iter().map(String::as_str).collect();
        let mut request = self
            .client
            .bulk_insert_with_options(
                &target,
                &columns,
                SqlBulkCopyOption::KeepNulls | SqlBulkCopyOption::TableLock,
                &[],
            )
            .await
            .map_err(|e| fail(role, &format!("starting the bulk load of {target}"), e))?;
        while let Some(batch) = rx.recv().await {
            for row in 0..batch.num_rows() {
                let mut cells = TokenRow::with_capacity(schema.columns.len());
                for (i, (c, (sql_type, scale))) in schema.columns.iter().zip(&kinds).enumerate() {
                    let v = value_at(batch.column(i), &c.data_type, row);
                    cells.push(cell(v, sql_type, *scale, &c.name)?);
                }
                request
                    .send(cells)
                    .await
                    .map_err(|e| fail(role, &format!("bulk loading {target}"), e))?;
            }
        }
        request
            .finalize()
            .await
            .map(|r| r.total())
            .map_err(|e| fail(role, &format!("finishing the bulk load of {target}"), e))
    }
}

/// `KILL spid`, only while the id still names the session that logged in at `login_time`.
fn kill_sql(spid: i64, login_time: &str) -> String {
    format!(
        "IF EXISTS (SELECT 1 FROM sys.dm_exec_sessions WHERE session_id = {spid} \
         AND CONVERT(nvarchar(30), login_time, 126) = {}) KILL {spid}",
        super::dialect::nstring(login_time)
    )
}

/// Connects to `address`, following one routing redirect (Azure SQL gateways send one).
async fn open(mut tds: tiberius::Config, address: &Address, role: Kind) -> Result<Tds> {
    let mut target = (address.host.clone(), address.port);
    for _ in 0..2 {
        let (host, port) = &target;
        let cannot = |why: String| {
            Error::new(
                role,
                format!("cannot connect to SQL Server at {host}:{port}: {why}"),
            )
        };
        let tcp = TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| cannot(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| cannot(e.to_string()))?;
        match Client::connect(tds.clone(), tcp.compat_write()).await {
            Ok(client) => return Ok(client),
            Err(tiberius::error::Error::Routing { host, port }) => {
                tds.host(&host);
                tds.port(port);
                target = (host, port);
            }
            Err(tiberius::error::Error::Server(e)) => {
                return Err(cannot(format!("{} (error {})", e.message(), e.code())));
            }
            Err(e) => return Err(cannot(e.to_string())),
        }
    }
    Err(Error::new(
        role,
        format!(
            "cannot connect to SQL Server at {}:{}: the server redirected the connection more than once",
            address.host, address.port
        ),
    ))
}

#[async_trait]
impl SqlSession for MssqlSession {
    fn dialect(&self) -> &dyn SqlDialect {
        &self.dialect
    }

    /// `KILL` rolls the session's transaction back and frees its locks at once; it needs
    /// `ALTER ANY CONNECTION`, and `VIEW SERVER STATE` to see the session it checks
    /// (docs/connectors/mssql.md). It runs only while
    /// the id still names this session (same login time): a session id is reused.
    fn terminate_statement(&self) -> Option<Statement> {
        let login_time = self.login_time.as_deref()?;
        Some(Statement::new(kill_sql(self.spid, login_time)))
    }

    async fn execute(&mut self, stmt: &Statement) -> Result<u64> {
        self.usable()?;
        let data = parameters(&stmt.params)?;
        let refs: Vec<&dyn ToSql> = data.iter().map(|d| d as &dyn ToSql).collect();
        let result = self
            .client
            .execute(stmt.sql.as_str(), &refs)
            .await
            .map(|r| r.total())
            .map_err(|e| fail(self.role, "statement failed", e));
        result.map_err(|e| self.failed(e))
    }

    async fn query(&mut self, stmt: &Statement, types: &[DataType]) -> Result<Vec<Vec<Value>>> {
        let rows = self.rows(stmt).await?;
        // Every row of a result has the same columns: their names once, for errors.
        let names: Vec<String> = rows.first().map_or_else(Vec::new, |row| {
            row.columns().iter().map(|c| c.name().to_string()).collect()
        });
        rows.into_iter()
            .map(|row| {
                row.into_iter()
                    .zip(types)
                    .zip(&names)
                    .map(|((data, t), name)| from_column_data(data, t, name))
                    .collect()
            })
            .collect()
    }

    async fn table_schema(&mut self, table: &TableName) -> Result<Option<Schema>> {
        let names = vec![
            table.schema.clone().map_or(Value::Null, Value::Text),
            Value::Text(table.name.clone()),
        ];
        let columns = self
            .query(
                &Statement {
                    sql: COLUMNS_SQL.into(),
                    params: names.clone(),
                },
                &[
                    DataType::Text,
                    DataType::Text,
                    DataType::Int64,
                    DataType::Int64,
                    DataType::Int64,
                ],
            )
            .await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let columns = columns
            .into_iter()
            .map(|row| match row.as_slice() {
                [
                    Value::Text(name),
                    Value::Text(t),
                    Value::Int(precision),
                    Value::Int(scale),
                    Value::Int(nullable),
                ] => Ok(Column {
                    name: name.clone(),
                    data_type: portable_type(t, *precision, *scale, name)?,
                    nullable: *nullable == 1,
                }),
                other => Err(Error::new(
                    self.role,
                    format!("INFORMATION_SCHEMA.COLUMNS returned {other:?}"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let key = self
            .query(
                &Statement {
                    sql: PRIMARY_KEY_SQL.into(),
                    params: names,
                },
                &[DataType::Text],
            )
            .await?;
        let primary_key = first_texts(key);
        Ok(Some(Schema {
            columns,
            primary_key,
        }))
    }

    async fn read(
        &mut self,
        stmt: &Statement,
        schema: &Schema,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        self.usable()?;
        let result = self.read_rows(stmt, schema, tx).await;
        result.map_err(|e| self.failed(e))
    }

    /// TDS bulk load (`INSERT BULK`), a row at a time from each batch, so memory holds one
    /// batch whatever the row count. `TABLOCK`: staging is this run's own table. Each cell
    /// is sent in its column's exact type, as the server declares the column (bulk load
    /// converts nothing).
    async fn bulk_insert(
        &mut self,
        table: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        self.usable()?;
        let result = self.bulk_load(table, schema, rx).await;
        result.map_err(|e| self.failed(e))
    }

    async fn begin(&mut self) -> Result<()> {
        self.usable()?;
        self.client
            .begin_transaction()
            .await
            .map_err(|e| fail(self.role, "BEGIN TRANSACTION failed", e))?;
        self.in_transaction = true;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        self.usable()?;
        let result = self
            .client
            .commit_transaction()
            .await
            .map_err(|e| fail(self.role, "COMMIT failed", e));
        match result {
            Ok(()) => {
                self.in_transaction = false;
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Rolls back; after the server already did (a failed statement under `XACT_ABORT`),
    /// its answer that no transaction is open is no failure.
    async fn rollback(&mut self) -> Result<()> {
        let doomed = self.doomed;
        let result = self.client.rollback_transaction().await;
        self.in_transaction = false;
        self.doomed = false;
        match result {
            Err(e) if !doomed => Err(fail(self.role, "ROLLBACK failed", e)),
            _ => Ok(()),
        }
    }

    async fn transaction_lock(&mut self, name: &str) -> Result<()> {
        self.applock(name, "Transaction", -1).await.map(drop)
    }

    /// Refuses a target whose text key columns have another collation than the database
    /// default: staging takes the default, so key checks there would compare keys
    /// differently from the target's primary key.
    async fn check_target(
        &mut self,
        table: &TableName,
        _schema: &Schema,
        _incoming: &Schema,
        key: &[String],
    ) -> Result<()> {
        let stmt = Statement {
            sql: COLLATIONS_SQL.into(),
            params: vec![Value::Text(self.dialect.table_ref(table))],
        };
        let rows = self
            .query(&stmt, &[DataType::Text, DataType::Text, DataType::Text])
            .await?;
        for row in rows {
            if let [
                Value::Text(column),
                Value::Text(collation),
                Value::Text(default),
            ] = row.as_slice()
                && key.contains(column)
            {
                return Err(Error::config(
                    "sink.strategy.unique_key",
                    format!(
                        "key column `{column}` of {table} has collation {collation}, not the database's {default}: \
                         staging compares keys with the database collation, so keys equal under one and distinct \
                         under the other would be merged or duplicated; give the column the database collation"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `MIN_ACTIVE_ROWVERSION()` minus one: every transaction that wrote a lower
    /// rowversion has finished.
    async fn row_version_horizon(&mut self) -> Result<String> {
        let stmt = Statement::new(HORIZON_SQL);
        let rows = self.query(&stmt, &[DataType::Int64]).await?;
        match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(v)) => Ok(row_version_position(v.saturating_sub(1).max(0) as u64)),
            other => Err(Error::source(format!(
                "MIN_ACTIVE_ROWVERSION() returned {other:?}"
            ))),
        }
    }

    async fn replace_partitions(
        &mut self,
        target: &TableName,
        staging: &TableName,
        columns: &[String],
        column: &str,
        _suffix: &str,
        statements: &mut crate::connectors::StatementLog,
    ) -> Result<Option<(u64, u64)>> {
        super::partitions::replace(self, target, staging, columns, column, statements).await
    }

    async fn try_lock(&mut self, name: &str) -> Result<bool> {
        self.applock(name, "Session", 0).await
    }
}

#[cfg(test)]
mod tests {
    //! Wire-level tests against `mssql-mock-tds`, an in-process TDS server: login, server
    //! errors mapped to error kinds, transactions, the types it can return, a connection
    //! that dies mid-result. It cannot take a bulk load or return decimal, date, bit or
    //! float columns; those paths run against a real server in `vendor_live`.
    //!
    //! The mock matches a request by the upper-cased text it was registered with, so the
    //! statements sent here are upper case.

    use std::sync::Arc;
    use std::time::Duration;

    use mssql_mock_tds::{
        ColumnDefinition, ColumnValue, ConnectionStore, MockTdsServer, QueryRegistry,
        QueryResponse, Row as MockRow, SqlDataType, TerminalError,
    };

    use super::*;
    use crate::secret::Secret;

    /// Every test is bounded: a desynchronized connection must fail, not hang.
    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    fn config(addr: std::net::SocketAddr) -> MssqlConfig {
        MssqlConfig {
            url: Secret::new(format!("mssql://sa:pass%40word@{addr}/matrix")),
            table: None,
            encrypt: Encrypt::Plaintext,
            trust_server_certificate: false,
            access_token: None,
            row_version_column: None,
            change_feed: None,
        }
    }

    fn utf16(text: &str) -> ColumnValue {
        ColumnValue::NVarCharMax(vec![text.encode_utf16().collect()])
    }

    /// The answer to the session's `@@SPID` query.
    fn spid(id: i64) -> QueryResponse {
        QueryResponse::new(
            vec![ColumnDefinition::new("spid", SqlDataType::BigInt)],
            vec![MockRow::new(vec![ColumnValue::BigInt(id)])],
        )
    }

    /// A mock server answering `queries` and `@@SPID` (57); its address and the record of
    /// its connections.
    async fn server(
        queries: Vec<(&str, QueryResponse)>,
    ) -> (
        std::net::SocketAddr,
        Arc<tokio::sync::Mutex<ConnectionStore>>,
    ) {
        let server = MockTdsServer::new("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr();
        let store = server.connection_store();
        {
            let registry = server.query_registry();
            let mut r = registry.lock().await;
            r.register(SPID_SQL, spid(57));
            for (sql, response) in queries {
                r.register(sql, response);
            }
        }
        tokio::spawn(server.run());
        (addr, store)
    }

    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(TEST_TIMEOUT, f)
            .await
            .expect("the test timed out")
    }

    #[tokio::test]
    async fn logs_in_reads_its_session_id_and_maps_server_errors() {
        bounded(async {
            let (addr, _) = server(vec![
                (
                    "INSERT INTO T (ID) VALUES (@P1)",
                    QueryResponse::error_only(TerminalError::new(
                        2627,
                        14,
                        "Violation of PRIMARY KEY constraint 'PK_T'. Cannot insert duplicate key in object 'dbo.T'.",
                    )),
                ),
                (
                    "DELETE FROM MISSING",
                    QueryResponse::error_only(TerminalError::new(
                        208,
                        16,
                        "Invalid object name 'MISSING'.",
                    )),
                ),
            ])
            .await;
            let mut s = MssqlSession::connect(&config(addr), Kind::Sink).await.unwrap();
            // The mock cannot say when the session logged in: without that no KILL is
            // ever issued (an id may name another session by then).
            assert!(s.terminate_statement().is_none());
            let duplicate = s
                .execute(&Statement {
                    sql: "INSERT INTO T (ID) VALUES (@P1)".into(),
                    params: vec![Value::Int(5)],
                })
                .await
                .unwrap_err();
            assert_eq!(duplicate.kind, Kind::KeyViolation, "{duplicate}");
            assert!(duplicate.message.contains("error 2627"), "{duplicate}");
            let missing = s
                .execute(&Statement::new("DELETE FROM MISSING"))
                .await
                .unwrap_err();
            assert_eq!(missing.kind, Kind::Sink, "{missing}");
            assert!(
                missing.message.contains("Invalid object name 'MISSING'. (error 208"),
                "{missing}"
            );
            // The connection is still usable after server errors.
            s.begin().await.unwrap();
            s.rollback().await.unwrap();
        })
        .await;
    }

    /// Under XACT_ABORT the server rolls a transaction back at its first error: the
    /// session then refuses statements until the rollback, so none runs outside it.
    #[tokio::test]
    async fn a_failed_statement_dooms_its_transaction_until_rollback() {
        bounded(async {
            let (addr, _) = server(vec![(
                "INSERT INTO T (ID) VALUES (@P1)",
                QueryResponse::error_only(TerminalError::new(2627, 14, "duplicate key")),
            )])
            .await;
            let mut s = MssqlSession::connect(&config(addr), Kind::Sink)
                .await
                .unwrap();
            s.begin().await.unwrap();
            let insert = Statement {
                sql: "INSERT INTO T (ID) VALUES (@P1)".into(),
                params: vec![Value::Int(1)],
            };
            assert_eq!(
                s.execute(&insert).await.unwrap_err().kind,
                Kind::KeyViolation
            );
            let after = s
                .execute(&Statement::new("DELETE FROM T"))
                .await
                .unwrap_err();
            assert!(
                after.message.contains("rolled the transaction back"),
                "{after}"
            );
            assert!(s.commit().await.is_err());
            s.rollback().await.unwrap();
            s.execute(&Statement::new("DELETE FROM T")).await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn connection_errors_name_the_address_and_hide_the_password() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = bounded(MssqlSession::connect(&config(addr), Kind::Source))
            .await
            .unwrap_err();
        assert_eq!(err.kind, Kind::Source);
        assert!(
            err.message.starts_with(&format!(
                "cannot connect to SQL Server at 127.0.0.1:{}: ",
                addr.port()
            )),
            "{err}"
        );
        assert!(!err.message.contains("pass"), "{err}");
    }

    #[tokio::test]
    async fn transactions_carry_the_server_descriptor() {
        bounded(async {
            let (addr, store) = server(vec![]).await;
            let mut s = MssqlSession::connect(&config(addr), Kind::Sink)
                .await
                .unwrap();
            s.begin().await.unwrap();
            s.execute(&Statement::new("DELETE FROM T")).await.unwrap();
            s.commit().await.unwrap();
            s.execute(&Statement::new("DELETE FROM U")).await.unwrap();
            let store = store.lock().await;
            let headers: Vec<Vec<(u64, u32)>> = store
                .all()
                .values()
                .map(|c| c.transaction_descriptor_headers.clone())
                .collect();
            let headers = headers.concat();
            // @@SPID outside, DELETE FROM T inside (descriptor 1), DELETE FROM U outside.
            assert!(headers.iter().any(|(d, _)| *d == 1), "{headers:?}");
            assert_eq!(headers.last().map(|(d, _)| *d), Some(0), "{headers:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn reads_the_types_the_server_returns_into_batches() {
        bounded(async {
            let rows: Vec<MockRow> = (0..300)
                .map(|i| {
                    MockRow::new(vec![
                        ColumnValue::BigInt(i),
                        if i % 7 == 0 {
                            ColumnValue::Null
                        } else {
                            ColumnValue::Int(i as i32 * 2)
                        },
                        if i % 5 == 0 {
                            ColumnValue::NVarCharMaxNull
                        } else {
                            utf16(&format!("név {i} ✓"))
                        },
                        ColumnValue::VarBinaryMax(vec![vec![i as u8, 0xff]]),
                    ])
                })
                .collect();
            let (addr, _) = server(vec![(
                "SELECT [ID], [N], [NAME], [BLOB] FROM [DBO].[T]",
                QueryResponse::new(
                    vec![
                        ColumnDefinition::new("ID", SqlDataType::BigInt),
                        ColumnDefinition::new("N", SqlDataType::Int),
                        ColumnDefinition::new("NAME", SqlDataType::NVarCharMax),
                        ColumnDefinition::new("BLOB", SqlDataType::VarBinaryMax),
                    ],
                    rows,
                ),
            )])
            .await;
            let mut s = MssqlSession::connect(&config(addr), Kind::Source)
                .await
                .unwrap();
            let col = |n: &str, t| Column {
                name: n.into(),
                data_type: t,
                nullable: true,
            };
            let schema = Schema {
                columns: vec![
                    col("ID", DataType::Int64),
                    col("N", DataType::Int32),
                    col("NAME", DataType::Text),
                    col("BLOB", DataType::Bytes),
                ],
                primary_key: vec![],
            };
            let (tx, mut rx) = mpsc::channel(4);
            let stmt = Statement::new("SELECT [ID], [N], [NAME], [BLOB] FROM [DBO].[T]");
            let reader = async { s.read(&stmt, &schema, tx).await };
            let collect = async {
                let mut batches = Vec::new();
                while let Some(b) = rx.recv().await {
                    batches.push(b);
                }
                batches
            };
            let (read, batches) = tokio::join!(reader, collect);
            read.unwrap();
            let rows = crate::model::rows_of(&batches, &schema);
            assert_eq!(rows.len(), 300);
            assert_eq!(
                rows[14],
                vec![
                    Value::Int(14),
                    Value::Null,
                    Value::Text("név 14 ✓".into()),
                    Value::Bytes(vec![14, 0xff]),
                ]
            );
            assert_eq!(rows[10][2], Value::Null);
        })
        .await;
    }

    #[tokio::test]
    async fn table_schema_maps_the_catalog() {
        bounded(async {
            let column = |name: &str, t: &str, p: i64, s: i64, nullable: i64| {
                MockRow::new(vec![
                    utf16(name),
                    utf16(t),
                    ColumnValue::BigInt(p),
                    ColumnValue::BigInt(s),
                    ColumnValue::BigInt(nullable),
                ])
            };
            let text = |n: &str| ColumnDefinition::new(n, SqlDataType::NVarCharMax);
            let int = |n: &str| ColumnDefinition::new(n, SqlDataType::BigInt);
            let (addr, _) = server(vec![
                (
                    COLUMNS_SQL,
                    QueryResponse::new(
                        vec![text("a"), text("b"), int("c"), int("d"), int("e")],
                        vec![
                            column("id", "bigint", 19, 0, 0),
                            column("amount", "decimal", 12, 2, 1),
                            column("seen", "datetimeoffset", 0, 0, 1),
                            column("rv", "timestamp", 0, 0, 0),
                        ],
                    ),
                ),
                (
                    PRIMARY_KEY_SQL,
                    QueryResponse::new(vec![text("k")], vec![MockRow::new(vec![utf16("id")])]),
                ),
            ])
            .await;
            let mut s = MssqlSession::connect(&config(addr), Kind::Source)
                .await
                .unwrap();
            let schema = s
                .table_schema(&TableName {
                    schema: Some("dbo".into()),
                    name: "orders".into(),
                })
                .await
                .unwrap()
                .unwrap();
            let types: Vec<(String, DataType, bool)> = schema
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.data_type, c.nullable))
                .collect();
            assert_eq!(
                types,
                vec![
                    ("id".into(), DataType::Int64, false),
                    (
                        "amount".into(),
                        DataType::Decimal(Some(crate::model::DecimalSpec {
                            precision: 12,
                            scale: 2
                        })),
                        true
                    ),
                    ("seen".into(), DataType::TimestampTz, true),
                    ("rv".into(), DataType::Bytes, false),
                ]
            );
            assert_eq!(schema.primary_key, ["id"]);
        })
        .await;
    }

    /// A server that answers the session's setup, then dies halfway through the next
    /// response: the call fails with the session's kind, it does not hang.
    #[tokio::test]
    async fn a_connection_dropped_mid_result_fails_the_call() {
        use mssql_mock_tds::protocol::build_prelogin_response;
        use mssql_mock_tds::server::ConnectionProcessor;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        bounded(async {
            let registry = Arc::new(tokio::sync::Mutex::new(QueryRegistry::new()));
            {
                let mut r = registry.lock().await;
                r.register(SPID_SQL, spid(3));
                r.register(
                    "SELECT [ID] FROM [T]",
                    QueryResponse::new(
                        vec![ColumnDefinition::new("ID", SqlDataType::BigInt)],
                        (0..200)
                            .map(|i| MockRow::new(vec![ColumnValue::BigInt(i)]))
                            .collect(),
                    ),
                );
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut sock, peer) = listener.accept().await.unwrap();
                let mut prelogin = bytes::BytesMut::with_capacity(4096);
                sock.read_buf(&mut prelogin).await.unwrap();
                sock.write_all(&build_prelogin_response()).await.unwrap();
                let mut p = ConnectionProcessor::new(0, peer, registry, None);
                let mut responses = 0;
                loop {
                    if sock.read_buf(p.buffer_mut()).await.unwrap() == 0 {
                        return;
                    }
                    while let Some(response) = p.process_packet(&mut sock).await.unwrap() {
                        responses += 1;
                        // The login, SET XACT_ABORT, @@SPID and the login time, then half
                        // of the next answer.
                        if responses == 5 {
                            sock.write_all(&response[..response.len() / 2])
                                .await
                                .unwrap();
                            return;
                        }
                        sock.write_all(&response).await.unwrap();
                    }
                }
            });
            let mut s = MssqlSession::connect(&config(addr), Kind::Source)
                .await
                .unwrap();
            let err = s
                .query(&Statement::new("SELECT [ID] FROM [T]"), &[DataType::Int64])
                .await
                .unwrap_err();
            assert_eq!(err.kind, Kind::Source, "{err}");
            assert!(err.message.starts_with("SQL Server: "), "{err}");
        })
        .await;
    }

    #[test]
    fn own_statements_parse_as_t_sql() {
        for sql in [
            SPID_SQL,
            COLUMNS_SQL,
            PRIMARY_KEY_SQL,
            COLLATIONS_SQL,
            HORIZON_SQL,
            LOGIN_TIME_SQL,
            BULK_COLUMNS_SQL,
            &kill_sql(57, "2026-12-04T10:00:00.123"),
        ] {
            crate::connectors::mssql::assert_t_sql(sql);
        }
        assert_eq!(
            kill_sql(57, "2026-12-04T10:00:00.123"),
            "IF EXISTS (SELECT 1 FROM sys.dm_exec_sessions WHERE session_id = 57 \
             AND CONVERT(nvarchar(30), login_time, 126) = N'2026-12-04T10:00:00.123') KILL 57"
        );
        // `EXEC @status = procedure` is beyond sqlparser's T-SQL grammar: checked as text.
        assert_eq!(
            applock_sql("Session"),
            "DECLARE @r int; EXEC @r = sp_getapplock @Resource = @P1, @LockMode = 'Exclusive', \
             @LockOwner = 'Session', @LockTimeout = @P2; SELECT CAST(@r AS bigint)"
        );
    }
}
