//! The SQLite driver: one connection, used as a source, a sink or the state store.
//!
//! Statements bind `$n` parameters (sqlx-sqlite resolves `$NNN` names to the n-th bound
//! value). Values are stored as [`super::types`] describes; bulk loads are multi-row
//! `INSERT`s with as many rows per statement as SQLite's parameter limit allows.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
use sqlx::{Arguments, Column as _, ConnectOptions, Executor, Row};
use tokio::sync::mpsc;

use super::dialect::SqliteDialect;
use super::types::{self, Stored, bind_all, stored_date, stored_timestamp, stored_timestamp_tz};
use crate::connectors::dialect::SqlDialect;
use crate::connectors::render::{column_list, quote_ident};
use crate::connectors::{SqlSession, Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{self, BATCH_ROWS, Column, DataType, DecimalSpec, Schema, Value, arrow_type};

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` (since 3.32; the bundled library is 3.46).
const MAX_PARAMS: usize = 32_766;

/// Rows per bulk `INSERT` statement, at most (fewer for wide tables).
const MAX_ROWS_PER_INSERT: usize = 500;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// One SQLite connection. `role` is the error kind its failures carry (source, sink or
/// state store).
#[derive(Debug)]
pub struct SqliteSession {
    conn: SqliteConnection,
    role: Kind,
    /// Whether `begin` opened a transaction that is not yet committed or rolled back.
    in_transaction: bool,
    /// The database file, for lock files next to it.
    path: String,
    /// Advisory locks held: open files with an exclusive OS lock, released on drop or exit.
    locks: Vec<std::fs::File>,
}

/// Maps a sqlx error to an error about `what` (the database's own text when it has one).
fn fail(role: Kind, what: impl Display) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        let kind = super::super::driver_error_kind(role, &e);
        match &e {
            sqlx::Error::Database(db) => Error::new(kind, format!("{what}: {}", db.message())),
            other => Error::new(kind, format!("{what}: {other}")),
        }
    }
}

/// The first line of a statement, shortened, for error messages.
fn excerpt(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    let mut short: String = line.chars().take(120).collect();
    if short.len() < sql.trim().len() {
        short.push_str(" ...");
    }
    short
}

impl SqliteSession {
    /// Opens the database file at `path` (creating it when `create` is set) in WAL mode,
    /// with a 30 s busy timeout and foreign keys enforced.
    pub async fn connect(path: &str, create: bool, role: Kind) -> Result<Self> {
        let conn = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // The host logs what it runs; sqlx would also warn about every long bulk read.
            .disable_statement_logging()
            .connect()
            .await
            .map_err(fail(role, format!("cannot open SQLite database `{path}`")))?;
        Ok(SqliteSession {
            conn,
            role,
            in_transaction: false,
            path: path.to_string(),
            locks: Vec::new(),
        })
    }

    /// The error kind this session's failures carry.
    pub fn role(&self) -> Kind {
        self.role
    }

    /// Whether a transaction opened by [`SqlSession::begin`] is still open.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    fn error(&self, message: impl Display) -> Error {
        Error::new(self.role, message.to_string())
    }

    /// `"main"."t"` or `"t"`; SQLite connectors only use the `main` schema.
    fn table_sql(&self, table: &TableName) -> Result<String> {
        match &table.schema {
            None => Ok(quote_ident(&table.name)),
            Some(s) if s.eq_ignore_ascii_case("main") => {
                Ok(format!("{}.{}", quote_ident(s), quote_ident(&table.name)))
            }
            Some(s) => Err(self.error(format!(
                "table `{table}`: a SQLite database has only the schema `main`, not `{s}`"
            ))),
        }
    }

    async fn run_plain(&mut self, sql: &'static str) -> Result<()> {
        let role = self.role;
        // A `&str` query is not prepared for reuse and binds nothing.
        Executor::execute(&mut self.conn, sql)
            .await
            .map_err(fail(role, sql))?;
        Ok(())
    }

    /// Inserts every batch from `rx`; the caller owns the transaction.
    async fn insert_batches(
        &mut self,
        table: &TableName,
        schema: &Schema,
        rx: &mut mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        let role = self.role;
        let target = self.table_sql(table)?;
        let width = schema.columns.len();
        if width == 0 {
            return Err(self.error(format!("cannot insert into `{table}`: no columns")));
        }
        let prefix = format!(
            "INSERT INTO {target} ({}) VALUES ",
            column_list(&schema.names())
        );
        let per_statement = (MAX_PARAMS / width).clamp(1, MAX_ROWS_PER_INSERT);
        let full_sql = insert_sql(&prefix, width, per_statement);
        let mut written = 0u64;
        while let Some(batch) = rx.recv().await {
            if batch.num_columns() != width {
                return Err(self.error(format!(
                    "inserting into `{table}`: a batch has {} columns, the schema {width}",
                    batch.num_columns()
                )));
            }
            let views = batch
                .columns()
                .iter()
                .zip(&schema.columns)
                .map(|(array, column)| ColumnView::new(array, column, role))
                .collect::<Result<Vec<_>>>()?;
            let rows = batch.num_rows();
            let mut start = 0;
            while start < rows {
                let count = per_statement.min(rows - start);
                let mut args = SqliteArguments::default();
                args.reserve(count * width, 0);
                for row in start..start + count {
                    for view in &views {
                        view.bind(row, &mut args).map_err(|e| {
                            Error::new(role, format!("column `{}`: {e}", view.name))
                        })?;
                    }
                }
                let sql = if count == per_statement {
                    Cow::Borrowed(full_sql.as_str())
                } else {
                    Cow::Owned(insert_sql(&prefix, width, count))
                };
                let done = sqlx::query_with(&sql, args)
                    .execute(&mut self.conn)
                    .await
                    .map_err(|e| fail(role, format!("inserting into `{table}`"))(e))?;
                written += done.rows_affected();
                start += count;
            }
        }
        Ok(written)
    }
}

/// `prefix` followed by `rows` groups of `width` positional parameters.
fn insert_sql(prefix: &str, width: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; width].join(","));
    let mut sql = String::with_capacity(prefix.len() + rows * (group.len() + 1));
    sql.push_str(prefix);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&group);
    }
    sql
}

/// One column of an Arrow batch, downcast once, bound value by value.
struct ColumnView<'a> {
    name: &'a str,
    nulls: Option<&'a NullBuffer>,
    values: Values<'a>,
}

enum Values<'a> {
    Boolean(&'a BooleanArray),
    Int16(&'a Int16Array),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    Decimal(&'a Decimal128Array),
    /// Text, JSON and unconstrained decimals.
    Text(&'a StringArray),
    Bytes(&'a BinaryArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray),
    TimestampTz(&'a TimestampMicrosecondArray),
    Uuid(&'a FixedSizeBinaryArray),
}

impl<'a> ColumnView<'a> {
    fn new(array: &'a ArrayRef, column: &'a Column, role: Kind) -> Result<Self> {
        fn cast<T: 'static>(array: &ArrayRef) -> Option<&T> {
            array.as_any().downcast_ref::<T>()
        }
        let values = match &column.data_type {
            DataType::Boolean => cast(array).map(Values::Boolean),
            DataType::Int16 => cast(array).map(Values::Int16),
            DataType::Int32 => cast(array).map(Values::Int32),
            DataType::Int64 => cast(array).map(Values::Int64),
            DataType::Float32 => cast(array).map(Values::Float32),
            DataType::Float64 => cast(array).map(Values::Float64),
            DataType::Decimal(Some(_)) => cast(array).map(Values::Decimal),
            DataType::Decimal(None) | DataType::Text | DataType::Json => {
                cast(array).map(Values::Text)
            }
            DataType::Bytes => cast(array).map(Values::Bytes),
            DataType::Date => cast(array).map(Values::Date),
            DataType::Timestamp => cast(array).map(Values::Timestamp),
            DataType::TimestampTz => cast(array).map(Values::TimestampTz),
            DataType::Uuid => match cast::<FixedSizeBinaryArray>(array) {
                Some(a) if a.value_length() == 16 => Some(Values::Uuid(a)),
                _ => None,
            },
        };
        let values = values.ok_or_else(|| {
            Error::new(
                role,
                format!(
                    "column `{}`: batch carries {}, expected {} for {}",
                    column.name,
                    array.data_type(),
                    arrow_type(&column.data_type),
                    crate::model::type_name(&column.data_type)
                ),
            )
        })?;
        Ok(ColumnView {
            name: &column.name,
            nulls: array.nulls(),
            values,
        })
    }

    /// Appends the value at `row` to `args` in its stored form.
    fn bind(
        &self,
        row: usize,
        args: &mut SqliteArguments<'a>,
    ) -> Result<(), sqlx::error::BoxDynError> {
        if self.nulls.is_some_and(|n| n.is_null(row)) {
            return args.add(None::<i64>);
        }
        match self.values {
            Values::Boolean(a) => args.add(i64::from(a.value(row))),
            Values::Int16(a) => args.add(i64::from(a.value(row))),
            Values::Int32(a) => args.add(i64::from(a.value(row))),
            Values::Int64(a) => args.add(a.value(row)),
            Values::Float32(a) => args.add(f64::from(a.value(row))),
            Values::Float64(a) => args.add(a.value(row)),
            Values::Decimal(a) => args.add(model::decimal_text(a.value(row), a.scale())),
            Values::Text(a) => args.add(a.value(row)),
            Values::Bytes(a) => args.add(a.value(row)),
            Values::Date(a) => args.add(stored_date(a.value(row))),
            Values::Timestamp(a) => args.add(stored_timestamp(a.value(row))),
            Values::TimestampTz(a) => args.add(stored_timestamp_tz(a.value(row))),
            Values::Uuid(a) => args.add(model::uuid_text(a.value(row))),
        }
    }
}

/// Builds one column of the Arrow batches [`SqlSession::read`] emits.
enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, DecimalSpec),
    DecimalText(StringBuilder),
    /// Text and JSON.
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    /// Timestamps with or without zone (the zone is in the builder's data type).
    Timestamp(TimestampMicrosecondBuilder),
    Uuid(FixedSizeBinaryBuilder),
}

impl ColumnBuilder {
    fn new(t: &DataType) -> Self {
        let n = BATCH_ROWS;
        match t {
            DataType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(n)),
            DataType::Int16 => ColumnBuilder::Int16(Int16Builder::with_capacity(n)),
            DataType::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(n)),
            DataType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(n)),
            DataType::Float32 => ColumnBuilder::Float32(Float32Builder::with_capacity(n)),
            DataType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(n)),
            DataType::Decimal(Some(spec)) => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(n).with_data_type(arrow_type(t)),
                *spec,
            ),
            DataType::Decimal(None) => ColumnBuilder::DecimalText(StringBuilder::new()),
            DataType::Text | DataType::Json => ColumnBuilder::Text(StringBuilder::new()),
            DataType::Bytes => ColumnBuilder::Bytes(BinaryBuilder::new()),
            DataType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(n)),
            DataType::Timestamp | DataType::TimestampTz => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(n).with_data_type(arrow_type(t)),
            ),
            DataType::Uuid => ColumnBuilder::Uuid(FixedSizeBinaryBuilder::with_capacity(n, 16)),
        }
    }

    fn append(&mut self, v: Stored<'_>) -> Result<(), String> {
        use ColumnBuilder as B;
        if matches!(v, Stored::Null) {
            match self {
                B::Boolean(b) => b.append_null(),
                B::Int16(b) => b.append_null(),
                B::Int32(b) => b.append_null(),
                B::Int64(b) => b.append_null(),
                B::Float32(b) => b.append_null(),
                B::Float64(b) => b.append_null(),
                B::Decimal(b, _) => b.append_null(),
                B::DecimalText(b) | B::Text(b) => b.append_null(),
                B::Bytes(b) => b.append_null(),
                B::Date(b) => b.append_null(),
                B::Timestamp(b) => b.append_null(),
                B::Uuid(b) => b.append_null(),
            }
            return Ok(());
        }
        match self {
            B::Boolean(b) => b.append_value(v.as_bool()?),
            B::Int16(b) => b.append_value(v.as_int("int16")?),
            B::Int32(b) => b.append_value(v.as_int("int32")?),
            B::Int64(b) => b.append_value(v.as_int("int64")?),
            B::Float32(b) => b.append_value(v.as_f64()? as f32),
            B::Float64(b) => b.append_value(v.as_f64()?),
            B::Decimal(b, spec) => b.append_value(v.decimal_scaled(spec)?),
            B::DecimalText(b) => b.append_value(v.decimal_text()?),
            B::Text(b) => b.append_value(v.as_text()?),
            B::Bytes(b) => b.append_value(v.as_bytes()?),
            B::Date(b) => b.append_value(v.as_date()?),
            B::Timestamp(b) => b.append_value(v.as_timestamp()?),
            B::Uuid(b) => b.append_value(v.as_uuid()?).map_err(|e| e.to_string())?,
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        use ColumnBuilder as B;
        match self {
            B::Boolean(b) => Arc::new(b.finish()),
            B::Int16(b) => Arc::new(b.finish()),
            B::Int32(b) => Arc::new(b.finish()),
            B::Int64(b) => Arc::new(b.finish()),
            B::Float32(b) => Arc::new(b.finish()),
            B::Float64(b) => Arc::new(b.finish()),
            B::Decimal(b, _) => Arc::new(b.finish()),
            B::DecimalText(b) | B::Text(b) => Arc::new(b.finish()),
            B::Bytes(b) => Arc::new(b.finish()),
            B::Date(b) => Arc::new(b.finish()),
            B::Timestamp(b) => Arc::new(b.finish()),
            B::Uuid(b) => Arc::new(b.finish()),
        }
    }
}

/// The batch of everything appended to `builders` since the last one.
fn finish_batch(
    role: Kind,
    schema: &SchemaRef,
    builders: &mut [ColumnBuilder],
) -> Result<RecordBatch> {
    let arrays = builders.iter_mut().map(ColumnBuilder::finish).collect();
    RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| Error::new(role, format!("building a batch: {e}")))
}

#[async_trait]
impl SqlSession for SqliteSession {
    fn dialect(&self) -> &dyn SqlDialect {
        &SqliteDialect
    }

    async fn execute(&mut self, stmt: &Statement) -> Result<u64> {
        let role = self.role;
        let args = bind_all(&stmt.params).map_err(|e| Error::new(role, e))?;
        let done = sqlx::query_with(&stmt.sql, args)
            .execute(&mut self.conn)
            .await
            .map_err(fail(
                role,
                format!("statement failed ({})", excerpt(&stmt.sql)),
            ))?;
        Ok(done.rows_affected())
    }

    async fn query(&mut self, stmt: &Statement, types: &[DataType]) -> Result<Vec<Vec<Value>>> {
        let role = self.role;
        let args = bind_all(&stmt.params).map_err(|e| Error::new(role, e))?;
        let rows = sqlx::query_with(&stmt.sql, args)
            .fetch_all(&mut self.conn)
            .await
            .map_err(fail(role, format!("query failed ({})", excerpt(&stmt.sql))))?;
        let mut out = Vec::with_capacity(rows.len());
        for (r, row) in rows.iter().enumerate() {
            if row.len() != types.len() {
                return Err(self.error(format!(
                    "query returned {} columns, expected {} ({})",
                    row.len(),
                    types.len(),
                    excerpt(&stmt.sql)
                )));
            }
            let mut values = Vec::with_capacity(types.len());
            for (i, t) in types.iter().enumerate() {
                let value = row
                    .try_get_raw(i)
                    .map_err(|e| e.to_string())
                    .and_then(Stored::read)
                    .and_then(|s| types::decode(s, t))
                    .map_err(|e| {
                        let name = row.columns()[i].name();
                        self.error(format!("column `{name}`, row {}: {e}", r + 1))
                    })?;
                values.push(value);
            }
            out.push(values);
        }
        Ok(out)
    }

    async fn table_schema(&mut self, table: &TableName) -> Result<Option<Schema>> {
        let role = self.role;
        self.table_sql(table)?;
        let rows = sqlx::query(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info($1, 'main') ORDER BY cid",
        )
        .bind(table.name.as_str())
        .fetch_all(&mut self.conn)
        .await
        .map_err(fail(role, format!("reading the columns of `{table}`")))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(rows.len());
        let mut key: Vec<(i64, String)> = Vec::new();
        let mut declared_types = Vec::with_capacity(rows.len());
        let bad = |e| fail(role, format!("reading the columns of `{table}`"))(e);
        for row in &rows {
            let name: String = row.try_get(0).map_err(bad)?;
            let declared: Option<String> = row.try_get(1).map_err(bad)?;
            let declared = declared.unwrap_or_default();
            let not_null: i64 = row.try_get(2).map_err(bad)?;
            let pk: i64 = row.try_get(3).map_err(bad)?;
            let data_type = types::portable_type(&declared, &name)
                .map_err(|e| e.context(format!("table `{table}`")))?;
            if pk > 0 {
                key.push((pk, name.clone()));
            }
            declared_types.push(declared);
            columns.push(Column {
                name,
                data_type,
                nullable: not_null == 0,
            });
        }
        key.sort();
        // A lone `INTEGER PRIMARY KEY` column is the rowid: never NULL.
        if let [(_, only)] = key.as_slice() {
            let i = columns.iter().position(|c| &c.name == only);
            if let Some(i) = i.filter(|i| declared_types[*i].trim().eq_ignore_ascii_case("INTEGER"))
            {
                columns[i].nullable = false;
            }
        }
        let primary_key = key.into_iter().map(|(_, name)| name).collect();
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
        let role = self.role;
        if tx.is_closed() {
            return Ok(());
        }
        let arrow_schema = schema.to_arrow();
        let mut builders: Vec<ColumnBuilder> = schema
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(&c.data_type))
            .collect();
        let args = bind_all(&stmt.params).map_err(|e| Error::new(role, e))?;
        let what = || format!("reading ({})", excerpt(&stmt.sql));
        let mut stream = sqlx::query_with(&stmt.sql, args).fetch(&mut self.conn);
        let mut pending = 0usize;
        let mut row_number = 0u64;
        while let Some(row) = stream.try_next().await.map_err(|e| fail(role, what())(e))? {
            row_number += 1;
            if row.len() != builders.len() {
                return Err(Error::new(
                    role,
                    format!(
                        "{}: the query returns {} columns, the schema has {}",
                        what(),
                        row.len(),
                        builders.len()
                    ),
                ));
            }
            for (i, (builder, column)) in builders.iter_mut().zip(&schema.columns).enumerate() {
                row.try_get_raw(i)
                    .map_err(|e| e.to_string())
                    .and_then(Stored::read)
                    .and_then(|v| builder.append(v))
                    .map_err(|e| {
                        Error::new(
                            role,
                            format!("column `{}`, row {row_number}: {e}", column.name),
                        )
                    })?;
            }
            pending += 1;
            if pending == BATCH_ROWS {
                pending = 0;
                let batch = finish_batch(role, &arrow_schema, &mut builders)?;
                if tx.send(batch).await.is_err() {
                    return Ok(());
                }
            }
        }
        if pending > 0 {
            let batch = finish_batch(role, &arrow_schema, &mut builders)?;
            // A receiver that is gone no longer wants the rows: not an error.
            let _ = tx.send(batch).await;
        }
        Ok(())
    }

    async fn bulk_insert(
        &mut self,
        table: &TableName,
        schema: &Schema,
        mut rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        if self.in_transaction {
            return self.insert_batches(table, schema, &mut rx).await;
        }
        self.begin().await?;
        let result = self.insert_batches(table, schema, &mut rx).await;
        match result {
            Ok(rows) => match self.commit().await {
                Ok(()) => Ok(rows),
                Err(e) => {
                    let _ = self.rollback().await;
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.rollback().await;
                Err(e)
            }
        }
    }

    async fn begin(&mut self) -> Result<()> {
        if self.in_transaction {
            return Err(self.error("BEGIN: a transaction is already open"));
        }
        // IMMEDIATE takes the write lock now, so a later write cannot fail on a lock
        // another writer took after our first read.
        self.run_plain("BEGIN IMMEDIATE").await?;
        self.in_transaction = true;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        // On failure (e.g. a deferred foreign key) the transaction stays open for rollback.
        self.run_plain("COMMIT").await?;
        self.in_transaction = false;
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        if !self.in_transaction {
            return Ok(());
        }
        let result = self.run_plain("ROLLBACK").await;
        self.in_transaction = false;
        match result {
            // SQLite already rolled back on its own (after an I/O or full-disk error).
            Err(e) if e.message.contains("no transaction is active") => Ok(()),
            other => other,
        }
    }

    /// SQLite has no advisory locks: an OS file lock on `<database>.<name>.lock` stands in,
    /// so it holds across processes on this machine (the only ones that can share the file).
    async fn try_lock(&mut self, name: &str) -> Result<bool> {
        if self.path == ":memory:" {
            return Ok(true);
        }
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let lock_path = format!("{}.{safe}.lock", self.path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.error(format!("cannot open lock file `{lock_path}`: {e}")))?;
        match file.try_lock() {
            Ok(()) => {
                self.locks.push(file);
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(self.error(format!("cannot lock `{lock_path}`: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::connectors::sqlite::types::native_type;
    use crate::model::{CHANNEL_BATCHES, rows_of};

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "dpone-sqlite-{name}-{}-{nanos}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn db(&self) -> String {
            self.0.join("test.db").to_str().unwrap().to_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn col(name: &str, data_type: DataType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type,
            nullable,
        }
    }

    const PRICE: DecimalSpec = DecimalSpec {
        precision: 18,
        scale: 4,
    };

    fn all_types_schema() -> Schema {
        Schema {
            columns: vec![
                col("id", DataType::Int64, false),
                col("grp", DataType::Text, false),
                col("flag", DataType::Boolean, true),
                col("small", DataType::Int16, true),
                col("medium", DataType::Int32, true),
                col("big", DataType::Int64, true),
                col("f32", DataType::Float32, true),
                col("f64", DataType::Float64, true),
                col("price", DataType::Decimal(Some(PRICE)), true),
                col("exact", DataType::Decimal(None), true),
                col("note", DataType::Text, true),
                col("odd \"name\"", DataType::Text, true),
                col("blob", DataType::Bytes, true),
                col("day", DataType::Date, true),
                col("at", DataType::Timestamp, true),
                col("at_tz", DataType::TimestampTz, true),
                col("uid", DataType::Uuid, true),
                col("doc", DataType::Json, true),
            ],
            primary_key: vec!["grp".into(), "id".into()],
        }
    }

    fn create_sql(table: &str, schema: &Schema) -> String {
        let mut parts: Vec<String> = schema
            .columns
            .iter()
            .map(|c| {
                let null = if c.nullable { "" } else { " NOT NULL" };
                format!(
                    "{} {}{null}",
                    quote_ident(&c.name),
                    native_type(&c.data_type)
                )
            })
            .collect();
        parts.push(format!(
            "PRIMARY KEY ({})",
            column_list(&schema.primary_key)
        ));
        format!("CREATE TABLE {} ({})", quote_ident(table), parts.join(", "))
    }

    /// Row `i` of the test data: every type, with edge values and NULLs.
    fn row(i: usize) -> Vec<Value> {
        let n = i as i64;
        let null_if = |cond: bool, v: Value| if cond { Value::Null } else { v };
        let f32_value: f32 = match i {
            2 => f32::MAX,
            3 => f32::MIN_POSITIVE,
            _ => n as f32 * 0.25 - 1000.5,
        };
        let f64_value = match i {
            2 => f64::MAX,
            3 => 5e-324,
            _ => n as f64 / 3.0 - 17.0,
        };
        let unscaled: i128 = match i {
            4 => 999_999_999_999_999_999,
            5 => -999_999_999_999_999_999,
            _ => i128::from(n) * 12_345 - 99_990_000,
        };
        let exact = match i % 4 {
            0 => "1.10".to_owned(),
            1 => "-123456789012345678901234567890.5000".to_owned(),
            2 => "0.000".to_owned(),
            _ => format!("{n}.{:03}0", i % 1000),
        };
        let note = match i % 5 {
            0 => Value::Text(String::new()),
            1 => Value::Null,
            _ => Value::Text(format!("héllo ✓ 𝄞 \t\n\r\u{1}\u{0} {i} 'q' \"dq\" \\")),
        };
        let blob = match i % 6 {
            0 => Value::Bytes(Vec::new()),
            1 => Value::Null,
            _ => Value::Bytes((0..=255u8).cycle().skip(i % 256).take(i % 40 + 1).collect()),
        };
        let day = match i {
            0 => -719_162,  // 0001-01-01
            1 => 2_932_896, // 9999-12-31
            _ => n as i32 * 3 - 30_000,
        };
        let at = match i {
            0 => -62_135_596_800_000_000, // 0001-01-01 00:00:00
            1 => 253_402_300_799_999_999, // 9999-12-31 23:59:59.999999
            _ => (n - 10_000) * 86_400_123_457,
        };
        let uuid = u128::from(i as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            .to_be_bytes();
        vec![
            Value::Int(n),
            Value::Text(format!("g{}", i % 7)),
            null_if(i.is_multiple_of(3), Value::Boolean(i.is_multiple_of(2))),
            null_if(
                i % 11 == 5,
                Value::Int(match i {
                    0 => i16::MIN.into(),
                    1 => i16::MAX.into(),
                    _ => n % 30_000 - 15_000,
                }),
            ),
            Value::Int(match i {
                0 => i32::MIN.into(),
                1 => i32::MAX.into(),
                _ => (n * 104_729) % i64::from(i32::MAX),
            }),
            Value::Int(match i {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => n * 1_000_000_007 - 5_000_000_000_000,
            }),
            Value::Float(f64::from(f32_value)),
            null_if(i.is_multiple_of(13), Value::Float(f64_value)),
            Value::Decimal(model::decimal_text(unscaled, PRICE.scale)),
            null_if(i.is_multiple_of(9), Value::Decimal(exact)),
            note,
            Value::Text(n.to_string()),
            blob,
            Value::Date(day),
            Value::Timestamp(at),
            null_if(i % 10 == 3, Value::TimestampTz(at - 7)),
            Value::Uuid(model::uuid_text(&uuid)),
            Value::Json(format!(r#"{{"i": {i}, "s": "x\"y", "u": "é"}}"#)),
        ]
    }

    /// An Arrow array of portable type `t`, built independently of the code under test.
    fn array_of(t: &DataType, values: &[&Value]) -> ArrayRef {
        let int = |v: &&Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let text = |v: &&Value| match v {
            Value::Decimal(s) | Value::Text(s) | Value::Json(s) => Some(s.clone()),
            _ => None,
        };
        let micros = |v: &&Value| match v {
            Value::Timestamp(t) | Value::TimestampTz(t) => Some(*t),
            _ => None,
        };
        match t {
            DataType::Boolean => Arc::new(BooleanArray::from(
                values
                    .iter()
                    .map(|v| {
                        if let Value::Boolean(b) = v {
                            Some(*b)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            )),
            DataType::Int16 => Arc::new(Int16Array::from(
                values
                    .iter()
                    .map(|v| int(v).map(|i| i16::try_from(i).unwrap()))
                    .collect::<Vec<_>>(),
            )),
            DataType::Int32 => Arc::new(Int32Array::from(
                values
                    .iter()
                    .map(|v| int(v).map(|i| i32::try_from(i).unwrap()))
                    .collect::<Vec<_>>(),
            )),
            DataType::Int64 => {
                Arc::new(Int64Array::from(values.iter().map(int).collect::<Vec<_>>()))
            }
            DataType::Float32 => Arc::new(Float32Array::from(
                values
                    .iter()
                    .map(|v| {
                        if let Value::Float(f) = v {
                            Some(*f as f32)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            )),
            DataType::Float64 => Arc::new(Float64Array::from(
                values
                    .iter()
                    .map(|v| {
                        if let Value::Float(f) = v {
                            Some(*f)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            )),
            DataType::Decimal(Some(d)) => Arc::new(
                Decimal128Array::from(
                    values
                        .iter()
                        .map(|v| text(v).map(|s| model::parse_decimal(&s, d.scale).unwrap()))
                        .collect::<Vec<_>>(),
                )
                .with_precision_and_scale(d.precision, d.scale)
                .unwrap(),
            ),
            DataType::Decimal(None) | DataType::Text | DataType::Json => Arc::new(
                StringArray::from(values.iter().map(text).collect::<Vec<_>>()),
            ),
            DataType::Bytes => Arc::new(BinaryArray::from_opt_vec(
                values
                    .iter()
                    .map(|v| {
                        if let Value::Bytes(b) = v {
                            Some(b.as_slice())
                        } else {
                            None
                        }
                    })
                    .collect(),
            )),
            DataType::Date => Arc::new(Date32Array::from(
                values
                    .iter()
                    .map(|v| {
                        if let Value::Date(d) = v {
                            Some(*d)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            )),
            DataType::Timestamp => Arc::new(TimestampMicrosecondArray::from(
                values.iter().map(micros).collect::<Vec<_>>(),
            )),
            DataType::TimestampTz => Arc::new(
                TimestampMicrosecondArray::from(values.iter().map(micros).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            DataType::Uuid => {
                let mut b = FixedSizeBinaryBuilder::new(16);
                for v in values {
                    match v {
                        Value::Uuid(s) => b.append_value(model::parse_uuid(s).unwrap()).unwrap(),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
        }
    }

    fn batch_of(schema: &Schema, rows: &[Vec<Value>]) -> RecordBatch {
        let arrays = schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                array_of(
                    &c.data_type,
                    &rows.iter().map(|r| &r[i]).collect::<Vec<_>>(),
                )
            })
            .collect();
        RecordBatch::try_new(schema.to_arrow(), arrays).unwrap()
    }

    /// Sends `batches` through a closed channel, as the pipeline hands them to a sink.
    fn channel_of(batches: Vec<RecordBatch>) -> mpsc::Receiver<RecordBatch> {
        let (tx, rx) = mpsc::channel(batches.len().max(1));
        for b in batches {
            tx.try_send(b).unwrap();
        }
        rx
    }

    async fn read_all(
        session: &mut SqliteSession,
        stmt: &Statement,
        schema: &Schema,
    ) -> Result<Vec<RecordBatch>> {
        let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
        let collect = async move {
            let mut batches = Vec::new();
            while let Some(b) = rx.recv().await {
                batches.push(b);
            }
            batches
        };
        let (result, batches) = tokio::join!(session.read(stmt, schema, tx), collect);
        result.map(|()| batches)
    }

    async fn count(session: &mut SqliteSession, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {}", quote_ident(table));
        match session
            .query(&Statement::new(sql), &[DataType::Int64])
            .await
            .unwrap()[0][0]
        {
            Value::Int(n) => n,
            ref other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn every_type_round_trips_through_bulk_insert_and_read() {
        let dir = TempDir::new("round-trip");
        let mut s = SqliteSession::connect(&dir.db(), true, Kind::Sink)
            .await
            .unwrap();
        let schema = all_types_schema();
        let table_name = "all \"types\"";
        let table = TableName {
            schema: None,
            name: table_name.into(),
        };
        s.execute(&Statement::new(create_sql(table_name, &schema)))
            .await
            .unwrap();

        // The declared types map back to the portable schema, key in key order.
        assert_eq!(s.table_schema(&table).await.unwrap(), Some(schema.clone()));
        let in_main = TableName {
            schema: Some("main".into()),
            name: table_name.into(),
        };
        assert_eq!(
            s.table_schema(&in_main).await.unwrap(),
            Some(schema.clone())
        );
        let missing = TableName {
            schema: None,
            name: "nope".into(),
        };
        assert_eq!(s.table_schema(&missing).await.unwrap(), None);
        let elsewhere = TableName {
            schema: Some("other".into()),
            name: table_name.into(),
        };
        assert_eq!(
            s.table_schema(&elsewhere).await.unwrap_err().kind,
            Kind::Sink
        );

        // 20k rows in batches that do not line up with statement or read batch sizes.
        let rows: Vec<Vec<Value>> = (0..20_000).map(row).collect();
        let mut batches = Vec::new();
        let mut start = 0;
        for size in [1, 4_999, 8_192, 6_807, 1] {
            batches.push(batch_of(&schema, &rows[start..start + size]));
            start += size;
        }
        assert_eq!(start, rows.len());
        let written = s
            .bulk_insert(&table, &schema, channel_of(batches))
            .await
            .unwrap();
        assert_eq!(written, 20_000);
        assert!(!s.in_transaction());

        let select = format!(
            "SELECT {} FROM {} ORDER BY \"id\"",
            column_list(&schema.names()),
            quote_ident(table_name)
        );
        let batches = read_all(&mut s, &Statement::new(select), &schema)
            .await
            .unwrap();
        let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, vec![BATCH_ROWS, BATCH_ROWS, 20_000 - 2 * BATCH_ROWS]);
        let mut back = Vec::new();
        for b in &batches {
            assert_eq!(b.schema(), schema.to_arrow());
            back.extend(rows_of(std::slice::from_ref(b), &schema));
        }
        for (i, (got, want)) in back.iter().zip(&rows).enumerate() {
            assert_eq!(got, want, "row {i}");
        }
        assert_eq!(back.len(), rows.len());

        // Stored forms, as other SQLite tools see them.
        let stored = s
            .query(
                &Statement {
                    sql: format!(
                        "SELECT typeof(\"flag\"), \"flag\", \"price\", \"exact\", \"day\", \"at\", \
                         \"at_tz\", typeof(\"note\"), typeof(\"blob\") FROM {} WHERE \"id\" = $1",
                        quote_ident(table_name)
                    ),
                    params: vec![Value::Int(10)],
                },
                &[DataType::Text; 9],
            )
            .await
            .unwrap();
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(
            stored,
            vec![vec![
                text("integer"),
                text("1"),
                text("-9986.6550"),
                text("0.000"),
                text("1887-12-12"),
                text("1942-08-25 23:39:26.664570"),
                text("1942-08-25 23:39:26.664563Z"),
                text("text"),
                text("blob"),
            ]]
        );

        // query() decodes per requested type, like read().
        let types: Vec<DataType> = schema.columns.iter().map(|c| c.data_type).collect();
        let some = s
            .query(
                &Statement {
                    sql: format!(
                        "SELECT {} FROM {} WHERE \"id\" IN ($1, $2, $3) ORDER BY \"id\"",
                        column_list(&schema.names()),
                        quote_ident(table_name)
                    ),
                    params: vec![Value::Int(0), Value::Int(1), Value::Int(19_999)],
                },
                &types,
            )
            .await
            .unwrap();
        assert_eq!(
            some,
            vec![rows[0].clone(), rows[1].clone(), rows[19_999].clone()]
        );
    }

    #[tokio::test]
    async fn read_binds_filter_parameters() {
        let dir = TempDir::new("filter");
        let mut s = SqliteSession::connect(&dir.db(), true, Kind::Source)
            .await
            .unwrap();
        let schema = all_types_schema();
        let table = TableName {
            schema: None,
            name: "t".into(),
        };
        s.execute(&Statement::new(create_sql("t", &schema)))
            .await
            .unwrap();
        let rows: Vec<Vec<Value>> = (0..3_000).map(row).collect();
        s.bulk_insert(&table, &schema, channel_of(vec![batch_of(&schema, &rows)]))
            .await
            .unwrap();

        // Rows 1500..=2000 (all before 1970) pass the three range filters.
        let cutoff_at = (1_000 - 10_000) * 86_400_123_457;
        let cutoff_day = 2_000 * 3 - 30_000;
        let cutoff_tz = (1_500 - 10_000) * 86_400_123_457;
        let p = |n: usize, v: &Value| s.read_placeholder(n, v).unwrap();
        let params = vec![
            Value::Timestamp(cutoff_at),
            Value::Text("g3".into()),
            Value::Date(cutoff_day),
            Value::TimestampTz(cutoff_tz),
        ];
        let sql = format!(
            "SELECT \"id\" FROM \"t\" WHERE \"at\" > {} AND \"grp\" = {} AND \"day\" <= {} \
             AND \"at_tz\" >= {} ORDER BY \"id\"",
            p(1, &params[0]),
            p(2, &params[1]),
            p(3, &params[2]),
            p(4, &params[3])
        );
        assert!(sql.contains("$1") && sql.contains("$4"));
        let id_schema = Schema {
            columns: vec![col("id", DataType::Int64, false)],
            primary_key: vec![],
        };
        let batches = read_all(&mut s, &Statement { sql, params }, &id_schema)
            .await
            .unwrap();
        let got: Vec<Value> = batches
            .iter()
            .flat_map(|b| rows_of(std::slice::from_ref(b), &id_schema))
            .flatten()
            .collect();
        let want: Vec<Value> = rows
            .iter()
            .filter(|r| {
                matches!(r[14], Value::Timestamp(t) if t > cutoff_at)
                    && r[1] == Value::Text("g3".into())
                    && matches!(r[13], Value::Date(d) if d <= cutoff_day)
                    && matches!(r[15], Value::TimestampTz(t) if t >= cutoff_tz)
            })
            .map(|r| r[0].clone())
            .collect();
        assert!(
            want.len() > 10,
            "the filter should select some rows, got {}",
            want.len()
        );
        assert!(want.len() < 400);
        assert_eq!(got, want);

        // A receiver that goes away stops the read quietly.
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let all = Statement::new("SELECT \"id\" FROM \"t\"");
        s.read(&all, &id_schema, tx).await.unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let all_ids = Statement::new(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10) \
             SELECT \"id\" FROM \"t\", n",
        );
        let reader = s.read(&all_ids, &id_schema, tx);
        let first = async move { rx.recv().await.map(|b| b.num_rows()) };
        let (result, first) = tokio::join!(reader, first);
        result.unwrap();
        assert_eq!(first, Some(BATCH_ROWS));
        // The connection is usable afterwards.
        assert_eq!(count(&mut s, "t").await, 3_000);
    }

    #[tokio::test]
    async fn transactions_bracket_bulk_inserts() {
        let dir = TempDir::new("tx");
        let mut s = SqliteSession::connect(&dir.db(), true, Kind::Sink)
            .await
            .unwrap();
        let schema = Schema {
            columns: vec![
                col("id", DataType::Int64, false),
                col("v", DataType::Text, true),
            ],
            primary_key: vec!["id".into()],
        };
        let table = TableName {
            schema: Some("main".into()),
            name: "t".into(),
        };
        s.execute(&Statement::new(create_sql("t", &schema)))
            .await
            .unwrap();
        let rows = |ids: std::ops::Range<i64>| -> Vec<Vec<Value>> {
            ids.map(|i| vec![Value::Int(i), Value::Text(format!("v{i}"))])
                .collect()
        };

        // Inside the caller's transaction: rollback discards it.
        s.begin().await.unwrap();
        assert!(s.begin().await.is_err());
        let n = s
            .bulk_insert(
                &table,
                &schema,
                channel_of(vec![batch_of(&schema, &rows(0..100))]),
            )
            .await
            .unwrap();
        assert_eq!(n, 100);
        assert!(s.in_transaction());
        assert_eq!(count(&mut s, "t").await, 100);
        s.rollback().await.unwrap();
        assert!(!s.in_transaction());
        assert_eq!(count(&mut s, "t").await, 0);
        // Rolling back with nothing open is harmless.
        s.rollback().await.unwrap();

        // Commit keeps it.
        s.begin().await.unwrap();
        s.bulk_insert(
            &table,
            &schema,
            channel_of(vec![batch_of(&schema, &rows(0..50))]),
        )
        .await
        .unwrap();
        s.commit().await.unwrap();
        assert_eq!(count(&mut s, "t").await, 50);

        // Without a transaction, bulk_insert runs in its own: all or nothing.
        let batches = vec![
            batch_of(&schema, &rows(50..1_050)),
            batch_of(&schema, &rows(1_049..1_051)),
        ];
        let e = s
            .bulk_insert(&table, &schema, channel_of(batches))
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::KeyViolation);
        assert!(e.message.contains("UNIQUE"), "{e}");
        assert!(!s.in_transaction());
        assert_eq!(count(&mut s, "t").await, 50);
        let n = s
            .bulk_insert(
                &table,
                &schema,
                channel_of(vec![batch_of(&schema, &rows(50..1_050))]),
            )
            .await
            .unwrap();
        assert_eq!(n, 1_000);
        assert_eq!(count(&mut s, "t").await, 1_050);

        // A second connection sees only committed rows (WAL).
        let mut other = SqliteSession::connect(&dir.db(), false, Kind::Source)
            .await
            .unwrap();
        assert_eq!(count(&mut other, "t").await, 1_050);

        // A batch that does not match the schema is refused.
        let wrong = RecordBatch::try_new(
            Arc::new(arrow_schema::Schema::new(vec![
                arrow_schema::Field::new("id", arrow_schema::DataType::Utf8, false),
                arrow_schema::Field::new("v", arrow_schema::DataType::Utf8, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
                Arc::new(StringArray::from(vec![Some("y")])) as ArrayRef,
            ],
        )
        .unwrap();
        let e = s
            .bulk_insert(&table, &schema, channel_of(vec![wrong]))
            .await
            .unwrap_err();
        assert!(e.message.contains("column `id`"), "{e}");
        assert_eq!(count(&mut s, "t").await, 1_050);
    }

    #[tokio::test]
    async fn user_tables_read_leniently() {
        let dir = TempDir::new("lenient");
        let mut s = SqliteSession::connect(&dir.db(), true, Kind::Source)
            .await
            .unwrap();
        s.execute(&Statement::new(
            "CREATE TABLE u (a INTEGER PRIMARY KEY, b NUMERIC, c DATETIME, d VARCHAR(10), e, \
             f BOOL)",
        ))
        .await
        .unwrap();
        let inserted = s
            .execute(&Statement {
                sql: "INSERT INTO u VALUES (1, 12.50, '2024-01-02 03:04:05', 'x', 42, 1), \
                      ($1, '7', 1700000000, NULL, $2, 0)"
                    .into(),
                params: vec![Value::Int(2), Value::Text("y".into())],
            })
            .await
            .unwrap();
        assert_eq!(inserted, 2);
        let table = TableName {
            schema: None,
            name: "u".into(),
        };
        let schema = s.table_schema(&table).await.unwrap().unwrap();
        assert_eq!(
            schema,
            Schema {
                columns: vec![
                    col("a", DataType::Int64, false),
                    col("b", DataType::Decimal(None), true),
                    col("c", DataType::Timestamp, true),
                    col("d", DataType::Text, true),
                    col("e", DataType::Text, true),
                    col("f", DataType::Boolean, true),
                ],
                primary_key: vec!["a".into()],
            }
        );
        let batches = read_all(
            &mut s,
            &Statement::new("SELECT * FROM u ORDER BY a"),
            &schema,
        )
        .await
        .unwrap();
        let rows = rows_of(&batches[..1], &schema);
        assert_eq!(
            rows,
            vec![
                vec![
                    Value::Int(1),
                    Value::Decimal("12.5".into()),
                    Value::Timestamp(1_704_164_645_000_000),
                    Value::Text("x".into()),
                    Value::Text("42".into()),
                    Value::Boolean(true),
                ],
                vec![
                    Value::Int(2),
                    Value::Decimal("7".into()),
                    Value::Timestamp(1_700_000_000_000_000),
                    Value::Null,
                    Value::Text("y".into()),
                    Value::Boolean(false),
                ],
            ]
        );

        // An undecodable value names the column, the row and the storage class.
        s.execute(&Statement::new("INSERT INTO u (a, c) VALUES (3, 'soon')"))
            .await
            .unwrap();
        let e = read_all(
            &mut s,
            &Statement::new("SELECT * FROM u ORDER BY a"),
            &schema,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, Kind::Source);
        assert!(
            e.message.contains("column `c`, row 3") && e.message.contains("TEXT"),
            "{e}"
        );
        let e = s
            .query(
                &Statement::new("SELECT c FROM u WHERE a = 3"),
                &[DataType::Timestamp],
            )
            .await
            .unwrap_err();
        assert!(
            e.message.contains("column `c`") && e.message.contains("\"soon\""),
            "{e}"
        );

        // A declared type without a portable type is reported with its column.
        s.execute(&Statement::new("CREATE TABLE m (x MONEY)"))
            .await
            .unwrap();
        let m = TableName {
            schema: None,
            name: "m".into(),
        };
        let e = s.table_schema(&m).await.unwrap_err();
        assert_eq!(e.kind, Kind::Unsupported);
        assert!(
            e.message.contains("`x`") && e.message.contains("MONEY"),
            "{e}"
        );

        // A failing statement says which one.
        let e = s
            .execute(&Statement::new("SELECT * FROM missing"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::Source);
        assert!(
            e.message.contains("no such table") && e.message.contains("missing"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn connect_without_create_needs_the_file() {
        let dir = TempDir::new("connect");
        let e = SqliteSession::connect(&dir.db(), false, Kind::State)
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::State);
        assert!(e.message.contains("test.db"), "{e}");
        SqliteSession::connect(&dir.db(), true, Kind::State)
            .await
            .unwrap();
        let mut s = SqliteSession::connect(&dir.db(), false, Kind::State)
            .await
            .unwrap();
        let mode = s
            .query(&Statement::new("PRAGMA journal_mode"), &[DataType::Text])
            .await
            .unwrap();
        assert_eq!(mode, vec![vec![Value::Text("wal".into())]]);
        let fk = s
            .query(&Statement::new("PRAGMA foreign_keys"), &[DataType::Boolean])
            .await
            .unwrap();
        assert_eq!(fk, vec![vec![Value::Boolean(true)]]);
    }
}
