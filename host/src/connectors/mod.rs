//! Connectors: where the SQL lives.
//!
//! Every connector is a folder with the same file roles:
//! - `config.rs`: its manifest section, serde with `deny_unknown_fields`, pure `validate()`,
//!   and the capabilities it declares;
//! - `client.rs`: the driver, implementing [`SqlSession`];
//! - `dialect.rs` (SQL connectors): its [`dialect::SqlDialect`], everything its SQL does
//!   differently;
//! - `types.rs`: native type <-> portable type mapping and value binding;
//! - `mod.rs`: declarations only.
//!
//! What is the same for every SQL dialect (rendering statements from structured bounds and
//! the finalize primitives) lives here once: [`render`] builds statements through the
//! dialect, [`source`] and [`sink`] implement the strategy-facing operations over any
//! [`SqlSession`].

pub mod dialect;
#[cfg(any(feature = "rest", feature = "kafka"))]
pub mod json;
pub mod render;
pub mod sink;
pub mod source;

#[cfg(feature = "bigquery")]
pub mod bigquery;
#[cfg(feature = "clickhouse")]
pub mod clickhouse;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mssql")]
pub mod mssql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rest")]
pub mod rest;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::model::{ChangeWindow, DataType, KeyCheck, ScanBounds, Schema, Term, Value};
use dialect::KeyMatch;
use sink::StagingKind;

/// A schema-qualified table name, as written in the manifest (`schema.table` or `table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Parses `schema.table` or `table`; `field` is the manifest path for the error.
    pub fn parse(text: &str, field: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split('.').collect();
        let bad = |p: &&str| p.is_empty() || p.chars().any(char::is_control);
        match parts.as_slice() {
            [name] if !bad(name) => Ok(TableName {
                schema: None,
                name: (*name).into(),
            }),
            [schema, name] if !bad(schema) && !bad(name) => Ok(TableName {
                schema: Some((*schema).into()),
                name: (*name).into(),
            }),
            _ => Err(Error::config(
                field,
                format!("`{text}` is not `table` or `schema.table`"),
            )),
        }
    }

    /// A sibling table in the same schema.
    pub fn sibling(&self, name: String) -> TableName {
        TableName {
            schema: self.schema.clone(),
            name,
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The sink statements a run keeps for its report and its plan: the first `cap` of them,
/// each cut to [`STATEMENT_CHARS`], then one line that counts the rest. A run may issue
/// any number of statements; what the host holds for the report stays bounded
/// (`limits.report_statements`).
#[derive(Debug, Clone)]
pub struct StatementLog {
    kept: Vec<String>,
    cap: usize,
    dropped: u64,
}

/// Characters of one statement kept in the report.
pub const STATEMENT_CHARS: usize = 65_536;

impl StatementLog {
    pub fn new(cap: u64) -> Self {
        StatementLog {
            kept: Vec::new(),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            dropped: 0,
        }
    }

    pub fn push(&mut self, sql: impl AsRef<str>) {
        if self.kept.len() < self.cap {
            self.kept
                .push(crate::text::clean(sql.as_ref(), STATEMENT_CHARS));
        } else {
            self.dropped += 1;
        }
    }

    /// The kept statements, and the count of the others when there were any.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.kept.clone();
        if self.dropped > 0 {
            lines.push(format!(
                "-- {} more statements not kept (limits.report_statements = {})",
                self.dropped, self.cap
            ));
        }
        lines
    }
}

/// SQL text with the dialect's placeholders and the values bound to them, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            params: Vec::new(),
        }
    }
}

impl From<String> for Statement {
    fn from(sql: String) -> Self {
        Statement::new(sql)
    }
}

/// Rows in a bulk wire format that a source and a sink share, passed from one to the
/// other without decoding ([`WireFormat`]): whole rows only, no stream header or trailer.
#[derive(Debug, Clone)]
pub struct WireRows {
    pub bytes: bytes::Bytes,
    pub rows: u64,
    /// The largest value of the scan's cursor column among these rows, decoded as the
    /// Arrow path decodes it; `None` without a cursor or when every value is NULL.
    pub max_cursor: Option<Value>,
}

/// An index left off a table for its bulk load: the statement that drops it (with the
/// constraint it backs) and those that build it again as it was, same name and definition.
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredIndex {
    pub drop: String,
    pub build: Vec<String>,
}

/// How a session's bulk path carries some columns: the format and, per column, its
/// encoding. Rows pass from a source to a staging table undecoded only when both describe
/// the columns alike, so a value reaches the sink exactly as the Arrow path would have
/// written it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFormat {
    /// The format, e.g. `postgres-binary-copy`.
    pub format: &'static str,
    /// Each column's encoding in that format, in order.
    pub columns: Vec<String>,
}

/// A table read split into shares ([`SqlSession::snapshot_split`]). Together the shares hold
/// every row of the table as of the split exactly once.
#[derive(Debug, Clone)]
pub struct SnapshotSplit {
    /// The snapshot every share's session joins ([`SqlSession::join_snapshot`]); `None` where
    /// each share's predicate alone keeps its read to the rows of the table at the split
    /// (ClickHouse: parts by block number), so the sessions share nothing.
    pub snapshot: Option<String>,
    pub shares: Vec<Share>,
}

/// One share of a [`SnapshotSplit`].
#[derive(Debug, Clone)]
pub struct Share {
    /// The condition selecting the share's rows, one more conjunct of the scan's own.
    pub predicate: String,
    /// Run on the share's session after it has read: the read fails unless it returns 1.
    pub check: Option<ShareCheck>,
}

/// Whether a share read what it was meant to, where the predicate alone cannot promise it.
#[derive(Debug, Clone)]
pub struct ShareCheck {
    /// One row, one integer: 1 when the rows the share read were exactly its rows at the
    /// split.
    pub query: Statement,
    /// The source error when it is not.
    pub failure: String,
}

/// One share of a split scan, on its own connection: the shares of one split read, together,
/// exactly the rows of the scan as of one moment ([`SnapshotSplit`]), or one of them fails.
#[async_trait]
pub trait ScanPart: Send {
    /// As [`Source::read`], for this share.
    async fn read(self: Box<Self>, columns: &Schema, tx: mpsc::Sender<RecordBatch>) -> Result<()>;

    /// As [`Source::read_wire`], for this share.
    async fn read_wire(
        self: Box<Self>,
        columns: &Schema,
        cursor: Option<usize>,
        tx: mpsc::Sender<WireRows>,
    ) -> Result<()>;
}

/// Another connection writing into the staging tables of a run, beside the sink's own
/// ([`Staging::writers`]).
#[async_trait]
pub trait StagingWriter: Send {
    /// As [`Staging::load`].
    async fn load(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64>;

    /// As [`Staging::load_wire`].
    async fn load_wire(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<WireRows>,
    ) -> Result<u64>;
}

/// One connection to a SQL database, as the generic source, sink and state store use it.
///
/// Contract: statements run in order on one connection, so `begin`/`commit` bracket every
/// statement issued between them. Implementations never splice values into SQL: parameters
/// are bound, bulk rows travel in the driver's bulk format.
#[async_trait]
pub trait SqlSession: Send {
    /// How this database's SQL is written.
    fn dialect(&self) -> &dyn dialect::SqlDialect;

    /// Whether `begin`/`commit`/`rollback` bracket an atomic transaction. Without them
    /// (ClickHouse) the sink publishes its finalization through shadow tables instead.
    fn transactional(&self) -> bool {
        true
    }

    /// The placeholder for parameter `n` (1-based) in a statement passed to [`read`]
    /// (`Self::read`): the dialect's by default. PostgreSQL's COPY cannot bind parameters,
    /// so its reader binds them through session settings instead.
    fn read_placeholder(&self, n: usize, value: &Value) -> Result<String> {
        self.dialect().placeholder(n, value)
    }

    /// Runs a statement; returns the rows it affected.
    async fn execute(&mut self, stmt: &Statement) -> Result<u64>;

    /// Runs a query and decodes each row as `types` (one value per column, in order).
    async fn query(
        &mut self,
        stmt: &Statement,
        types: &[crate::model::DataType],
    ) -> Result<Vec<Vec<Value>>>;

    /// The table's columns (in order) and primary key, or `None` when it does not exist.
    async fn table_schema(&mut self, table: &TableName) -> Result<Option<Schema>>;

    /// Streams the rows of a `SELECT` (rendered with [`Self::read_placeholder`]) as Arrow
    /// batches of `schema` into `tx`, at most [`crate::model::BATCH_ROWS`] rows each. Stops
    /// early without error when the receiver is gone.
    async fn read(
        &mut self,
        stmt: &Statement,
        schema: &Schema,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()>;

    /// Appends every batch from `rx` to `table` (columns of `schema`, in order) through the
    /// driver's bulk path; returns rows written.
    async fn bulk_insert(
        &mut self,
        table: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64>;

    /// Prepares a read of `table` in `streams` shares. With a shared snapshot, opens a
    /// transaction on this session whose snapshot the shares' sessions join
    /// ([`Self::join_snapshot`]); the caller commits it once every share has joined. `None`
    /// (the default), with no transaction left open, when the table cannot be split or
    /// `streams` (resolved against the table's size) is one.
    async fn snapshot_split(
        &mut self,
        _table: &TableName,
        _streams: crate::manifest::Parallelism,
    ) -> Result<Option<SnapshotSplit>> {
        Ok(None)
    }

    /// Makes this session read in `snapshot`, exported by [`Self::snapshot_split`] on another
    /// session, until [`Self::commit`].
    async fn join_snapshot(&mut self, _snapshot: &str) -> Result<()> {
        Err(Error::internal("this connector cannot share a snapshot"))
    }

    /// Whether several sessions may bulk-load one table at once, each in its own statement.
    fn concurrent_loads(&self) -> bool {
        false
    }

    /// The indexes of `table`, an empty table just created, that a bulk load is faster
    /// without (building an index once over the loaded rows beats maintaining it row by
    /// row). None by default.
    async fn deferrable_indexes(&mut self, _table: &TableName) -> Result<Vec<DeferredIndex>> {
        Ok(Vec::new())
    }

    /// The bulk wire format of `columns` of `table` when this session can read and write
    /// them without decoding ([`WireFormat`]); `None` (the default) when it cannot or the
    /// table or a column is missing (the Arrow path then reports it).
    async fn wire_format(
        &mut self,
        _table: &TableName,
        _columns: &[String],
    ) -> Result<Option<WireFormat>> {
        Ok(None)
    }

    /// As [`Self::read`], in the session's [`WireFormat`]: chunks of whole rows of
    /// `schema`, each with its count and the largest value of column `cursor`.
    async fn read_wire(
        &mut self,
        _stmt: &Statement,
        _schema: &Schema,
        _cursor: Option<usize>,
        _tx: mpsc::Sender<WireRows>,
    ) -> Result<()> {
        Err(no_wire_format())
    }

    /// As [`Self::bulk_insert`], of rows in the session's [`WireFormat`].
    async fn bulk_insert_wire(
        &mut self,
        _table: &TableName,
        _schema: &Schema,
        _rx: mpsc::Receiver<WireRows>,
    ) -> Result<u64> {
        Err(no_wire_format())
    }

    async fn begin(&mut self) -> Result<()>;
    async fn commit(&mut self) -> Result<()>;
    async fn rollback(&mut self) -> Result<()>;

    /// Waits for, then holds until the open transaction ends, the lock `name`: a fence so
    /// two sessions never finalize the same unit of work at once. SQLite serializes writing
    /// transactions anyway, so the default does nothing.
    async fn transaction_lock(&mut self, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Refuses an existing target (described as `schema`) that this session cannot
    /// finalize with `key` as the key, or load rows of `incoming` into; any target will do
    /// by default.
    async fn check_target(
        &mut self,
        _table: &TableName,
        _schema: &Schema,
        _incoming: &Schema,
        _key: &[String],
    ) -> Result<()> {
        Ok(())
    }

    /// Without transactions ([`Self::transactional`]): the statement that puts `shadow` in
    /// `target`'s place at once, and the table then holding the old rows (`old` names a
    /// free name for it), to drop after.
    async fn swap_statement(
        &mut self,
        _target: &TableName,
        _shadow: &TableName,
        _old: &TableName,
    ) -> Result<(String, TableName)> {
        Err(Error::new(
            crate::Kind::Unsupported,
            "this sink has transactions: it publishes inside one, not by swapping a shadow",
        ))
    }

    /// The safe upper row-version bound now, as a position: every transaction at or
    /// before it has finished. `unsupported` where rows carry no version.
    async fn row_version_horizon(&mut self) -> Result<String> {
        Err(Error::new(
            crate::Kind::Unsupported,
            "this source has no row versions (PostgreSQL has xmin; SQL Server reads a rowversion column: source.row_version_column)",
        ))
    }

    /// With transactions: replaces the target's native partitions holding the staged values
    /// of `column` inside the open transaction, noting each statement in `statements`;
    /// `None`, changing nothing, when the target is not natively partitioned so (the
    /// strategy then deletes and inserts). `suffix` names this run's swap tables. Returns
    /// (rows deleted, rows inserted).
    async fn replace_partitions(
        &mut self,
        _target: &TableName,
        _staging: &TableName,
        _columns: &[String],
        _column: &str,
        _suffix: &str,
        _statements: &mut StatementLog,
    ) -> Result<Option<(u64, u64)>> {
        Ok(None)
    }

    /// Without transactions: whether `table`'s partition key is exactly `column`, so the
    /// shadow can replace the partitions a copy loaded from staging has rows in.
    async fn partitioned_by(&mut self, _table: &TableName, _column: &str) -> Result<bool> {
        Ok(false)
    }

    /// Without transactions: the statements that replace the partitions of `target`
    /// which `copy` (created like it) has rows in, each atomic for its partition.
    async fn partition_replacements(
        &mut self,
        _target: &TableName,
        _copy: &TableName,
    ) -> Result<Vec<String>> {
        Err(Error::new(
            crate::Kind::Unsupported,
            "this sink has no native partitions",
        ))
    }

    /// A statement that, run on another session of the same server, ends this session's
    /// work there at once (its transaction rolls back, its locks go); `None` where
    /// closing the connection does that.
    fn terminate_statement(&self) -> Option<Statement> {
        None
    }

    /// Takes the advisory lock `name` for as long as this session lives (also across
    /// processes and machines sharing the database); `false` when another session holds
    /// it. Released when the session ends, including when its process dies.
    async fn try_lock(&mut self, name: &str) -> Result<bool>;
}

/// The source of a run, whatever its kind: what the `source` imports of the contract need.
/// [`source::SqlSource`] serves every SQL database over a [`SqlSession`].
#[async_trait]
pub trait Source: Send {
    /// The source object as configured, e.g. `public.orders`.
    fn name(&self) -> String;

    /// The source's columns and key; read once per run.
    async fn schema(&mut self) -> Result<Schema>;

    /// Checks a scan's bounds before it runs: every column exists and compares correctly.
    fn check_bounds(&self, schema: &Schema, bounds: &ScanBounds) -> Result<()>;

    /// Streams the rows within `bounds`, as batches of `columns` of at most
    /// [`crate::model::BATCH_ROWS`] rows, into `tx`; stops quietly when the receiver is gone.
    async fn read(
        &mut self,
        columns: &Schema,
        bounds: &ScanBounds,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()>;

    /// The wire format this source can stream `columns` in undecoded ([`WireFormat`]);
    /// `None` by default.
    async fn wire_format(&mut self, _columns: &Schema) -> Result<Option<WireFormat>> {
        Ok(None)
    }

    /// The shares of a read of `columns` within `bounds` over up to `streams` connections, as
    /// of one moment ([`ScanPart`]); empty (the default) when the read stays one stream.
    async fn split(
        &mut self,
        _columns: &Schema,
        _bounds: &ScanBounds,
        _streams: crate::manifest::Parallelism,
    ) -> Result<Vec<Box<dyn ScanPart>>> {
        Ok(Vec::new())
    }

    /// As [`Self::read`], undecoded in the source's [`WireFormat`], with the largest value
    /// of column `cursor` (an index into `columns`) in each chunk.
    async fn read_wire(
        &mut self,
        _columns: &Schema,
        _bounds: &ScanBounds,
        _cursor: Option<usize>,
        _tx: mpsc::Sender<WireRows>,
    ) -> Result<()> {
        Err(no_wire_format())
    }

    /// What a scan would run, for a dry run's plan.
    fn describe_scan(&self, columns: &Schema, bounds: &ScanBounds) -> Result<String>;

    /// Largest value of `column` among rows within `bounds`; NULL when none match.
    async fn max_value(&mut self, column: &str, bounds: &ScanBounds) -> Result<Value>;

    /// Rows within `bounds`.
    async fn row_count(&mut self, bounds: &ScanBounds) -> Result<u64>;

    /// The safe upper row-version bound now, as a position.
    async fn row_version_horizon(&mut self) -> Result<String>;

    /// This pipeline's change feed, when the source has one.
    fn change_feed(&mut self) -> Option<&mut dyn ChangeFeed>;

    /// Resumable sources: where a scan with `bounds` that has read continues (its
    /// `since` for the next run); `None` before it read and for other sources.
    fn resume(&self, _bounds: &ScanBounds) -> Option<String> {
        None
    }
}

/// Where a run stages rows: tables of this run next to the target. A sink that cannot
/// stage rows itself gets these from an embedded store.
#[async_trait]
pub trait Staging: Send {
    /// Creates an empty staging table with `schema`, named uniquely for this run.
    async fn create_staging(&mut self, schema: &Schema, kind: StagingKind) -> Result<TableName>;

    /// Appends every batch from `rx` to `staging`; returns rows written.
    async fn load(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64>;

    /// The wire format `staging` takes `columns` in undecoded ([`WireFormat`]); `None` by
    /// default.
    async fn wire_format(
        &mut self,
        _staging: &TableName,
        _columns: &Schema,
    ) -> Result<Option<WireFormat>> {
        Ok(None)
    }

    /// After every load into `staging`: builds what was left out for the load (indexes
    /// deferred when it was created); the statistics of scratch staging (joined to the
    /// target, never swapped in) are stale from here until the next join gathers them.
    /// Nothing by default.
    async fn loaded(&mut self, _staging: &TableName, _kind: StagingKind) -> Result<()> {
        Ok(())
    }

    /// Up to `extra` more connections loading into this run's staging tables beside this
    /// one; none (the default) where the sink cannot load one table from several at once.
    async fn writers(&mut self, _extra: usize) -> Result<Vec<Box<dyn StagingWriter>>> {
        Ok(Vec::new())
    }

    /// Appends every chunk of undecoded rows from `rx` to `staging`; returns rows written.
    async fn load_wire(
        &mut self,
        _staging: &TableName,
        _schema: &Schema,
        _rx: mpsc::Receiver<WireRows>,
    ) -> Result<u64> {
        Err(no_wire_format())
    }

    async fn staging_row_count(&mut self, staging: &TableName) -> Result<u64>;

    /// Up to `limit` distinct values of `column` (of type `t`) in staging, sorted.
    async fn distinct_values(
        &mut self,
        staging: &TableName,
        column: &str,
        t: &DataType,
        limit: u32,
    ) -> Result<Vec<Value>>;

    /// NULL key components and duplicate key groups in staging.
    async fn check_keys(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        key: &[String],
    ) -> Result<KeyCheck>;

    /// Drops a staging table.
    async fn drop_staging(&mut self, staging: &TableName) -> Result<()>;
}

/// The sink of a run, whatever its kind: the target, its finalization primitives and the
/// run's staging. Contract: nothing touches the target outside `begin`..`commit` except
/// `ensure_target` (creating a missing target); a failed run's leftovers go with
/// [`Sink::drop_leftovers`]. [`sink::SqlSink`] serves every SQL database over a
/// [`SqlSession`], with the copy-on-write shadow where the session has no transactions.
#[async_trait]
pub trait Sink: Staging {
    fn target(&self) -> &TableName;

    /// The target's schema, `None` when it does not exist.
    async fn describe(&mut self) -> Result<Option<Schema>>;

    /// Creates the target when missing; an existing one must suit `key`.
    async fn ensure_target(&mut self, schema: &Schema, key: &[String]) -> Result<()>;

    async fn begin(&mut self) -> Result<()>;

    /// Commits, running `also` (the colocated state store's writes) in the same transaction.
    async fn commit(&mut self, also: Vec<Statement>) -> Result<()>;

    async fn rollback(&mut self) -> Result<()>;

    fn in_transaction(&self) -> bool;

    /// Every transaction first takes the lock `fence` (a backfill chunk).
    fn set_fence(&mut self, fence: String);

    async fn insert_from_staging(&mut self, staging: &TableName, columns: &[String])
    -> Result<u64>;

    async fn delete_rows(
        &mut self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
    ) -> Result<u64>;

    async fn update_rows(
        &mut self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
        assignments: &[(String, Value)],
    ) -> Result<u64>;

    async fn insert_new_rows(
        &mut self,
        staging: &TableName,
        columns: &[String],
        key: &[String],
        filter: &[Term],
        extra: &[(String, Value)],
    ) -> Result<u64>;

    /// NULL key components and duplicate keys among the target rows matching `filter`.
    async fn check_target_keys(
        &mut self,
        schema: &Schema,
        key: &[String],
        filter: &[Term],
    ) -> Result<KeyCheck>;

    async fn delete_where(&mut self, filter: &[Term]) -> Result<u64>;

    /// Replaces the target's native partitions holding the staged values of `column`;
    /// `None`, changing nothing, when it cannot. Returns (deleted, inserted).
    async fn replace_partitions(
        &mut self,
        staging: &TableName,
        columns: &[String],
        column: &str,
    ) -> Result<Option<(u64, u64)>>;

    async fn truncate_and_insert(&mut self, staging: &TableName, columns: &[String])
    -> Result<u64>;

    /// Publishes staging as the target inside the open transaction.
    async fn swap(&mut self, staging: &TableName) -> Result<()>;

    fn is_dry_run(&self) -> bool;

    /// Notes a step the plan shows.
    fn note(&mut self, step: String);

    /// The statements issued (or, in a dry run, that would be issued), in order, as kept
    /// by the run's [`StatementLog`].
    fn statements(&self) -> Vec<String>;

    /// After a failed run: rolls back and drops the run's staging; whether all of it went.
    async fn drop_leftovers(&mut self) -> bool;

    /// Opens a new connection in place of one that died mid-run (the server rolled its
    /// transaction back), so [`Sink::drop_leftovers`] can still remove the run's staging.
    async fn reconnect(&mut self) -> Result<()>;

    /// Drops the staging tables that the runs `run_ids` left next to the target (they
    /// were killed before their cleanup); returns how many.
    async fn drop_staging_of(&mut self, run_ids: &[String]) -> Result<usize>;

    /// The run stopped in the middle of a call (deadline, signal): the session may be
    /// mid-statement. Ends its work on the server at once, so its transaction rolls back
    /// and its locks go without waiting for the statement, and opens a fresh session for
    /// [`Sink::drop_leftovers`].
    async fn abandon(&mut self) -> Result<()>;
}

/// A wire-format call on a connector without one: the host asks for a connector's
/// [`WireFormat`] before it uses these, so reaching this is a host bug.
fn no_wire_format() -> Error {
    Error::internal("this connector has no bulk wire format: rows take the Arrow path")
}

/// A source's change feed, opened for one pipeline: its names come from the manifest's
/// `source` section, never from a strategy. Positions are the source's own text.
#[async_trait]
pub trait ChangeFeed: Send {
    /// Opens the feed (creating it when missing, if `create`; a dry run does not) and
    /// applies the source's gap rule to `stored`.
    async fn open(&mut self, stored: Option<&str>, create: bool) -> Result<ChangeWindow>;

    /// Checks a change read's positions before the read is opened.
    fn check_read(&self, read: &source::ChangeRead) -> Result<()>;

    /// Streams the compacted changes of `read`, as batches of `columns`, into `tx`.
    async fn read(
        &mut self,
        columns: &Schema,
        read: &source::ChangeRead,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()>;

    /// Lets the feed discard every change up to `position`.
    async fn ack(&mut self, position: &str) -> Result<()>;

    /// What this feed created on the source so far (e.g. `replication slot dpone_orders`),
    /// for the run report: objects that hold server resources until `cdc drop-slot`.
    fn created(&self) -> Vec<String>;

    /// Drops the feed (retiring the pipeline); says what it dropped, for the operator.
    async fn drop_feed(&mut self) -> Result<String>;
}

/// The change feed of a manifest's source, when its connector has one (connected at its
/// first use).
pub fn manifest_feed(manifest: &crate::manifest::Manifest) -> Option<Box<dyn ChangeFeed>> {
    match &manifest.source {
        #[cfg(feature = "postgres")]
        crate::manifest::Connection::Postgres(c) => {
            Some(Box::new(postgres::feed::PostgresFeed::new(
                c.url.clone(),
                manifest.source_table(),
                &manifest.pipeline,
                c.change_feed.as_ref(),
            )))
        }
        #[cfg(feature = "mssql")]
        crate::manifest::Connection::Mssql(c) => Some(Box::new(mssql::feed::MssqlFeed::new(
            c,
            manifest.source_table(),
        ))),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The kind of a driver error in a session of `role`. A unique-key violation is a
/// [`crate::Kind::KeyViolation`] whatever the role: the database itself refused duplicate
/// keys (for example while loading staging shaped like a keyed target).
pub fn driver_error_kind(role: crate::Kind, e: &sqlx::Error) -> crate::Kind {
    if e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
    {
        crate::Kind::KeyViolation
    } else {
        role
    }
}

/// How [`connect`] may treat a database that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// It must exist (sources).
    Existing,
    /// Create an embedded database file when missing (sinks, state stores).
    Create,
    /// A dry run: never create anything; a missing embedded database reads as empty.
    Plan,
}

/// Opens a manifest's source for a run: its connection, the manifest predicate its
/// strategies may refer to, and its change feed.
pub async fn connect_source(manifest: &crate::manifest::Manifest) -> Result<Box<dyn Source>> {
    #[cfg(feature = "rest")]
    if let crate::manifest::Connection::Rest(c) = &manifest.source {
        return Ok(Box::new(rest::RestSource::new(
            c,
            &manifest.strategy.unique_key(),
        )?));
    }
    #[cfg(feature = "kafka")]
    if let crate::manifest::Connection::Kafka(c) = &manifest.source {
        return Ok(Box::new(kafka::KafkaSource::new(c)?));
    }
    let session = connect(&manifest.source, crate::Kind::Source, Open::Existing).await?;
    let source = source::SqlSource::new(
        session,
        manifest.source_table(),
        manifest.strategy.predicate_sql.clone(),
    )
    .with_feed(manifest_feed(manifest))
    .with_connection(manifest.source.clone());
    Ok(Box::new(source))
}

/// Opens a manifest's sink for run `run_id`; a dry run creates nothing and records what it
/// would do.
pub async fn connect_sink(
    manifest: &crate::manifest::Manifest,
    run_id: &str,
    dry_run: bool,
) -> Result<Box<dyn Sink>> {
    let statements = StatementLog::new(manifest.limits().report_statements);
    #[cfg(feature = "kafka")]
    if let crate::manifest::Connection::Kafka(c) = &manifest.sink {
        let sink =
            kafka::KafkaSink::connect(c, &manifest.pipeline, run_id, dry_run, statements).await?;
        return Ok(Box::new(sink));
    }
    let open = if dry_run { Open::Plan } else { Open::Create };
    let session = connect(&manifest.sink, crate::Kind::Sink, open).await?;
    Ok(Box::new(sink::SqlSink::new(
        session,
        manifest.sink.clone(),
        manifest.sink_table(),
        run_id,
        manifest.strategy.predicate_sql.clone(),
        dry_run,
        statements,
    )))
}

/// Opens one connection for a manifest section. `open` only matters for embedded
/// databases: dpone never creates a server database.
#[cfg_attr(not(feature = "sqlite"), allow(unused_variables))]
pub async fn connect(
    conn: &crate::manifest::Connection,
    role: crate::Kind,
    open: Open,
) -> Result<Box<dyn SqlSession>> {
    use crate::manifest::Connection;
    match conn {
        #[cfg(feature = "sqlite")]
        Connection::Sqlite(c) => {
            let missing = !std::path::Path::new(&c.path).exists();
            if open == Open::Plan && missing {
                return Ok(Box::new(
                    sqlite::SqliteSession::connect(":memory:", true, role).await?,
                ));
            }
            if open == Open::Create
                && missing
                && let Some(dir) = std::path::Path::new(&c.path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::new(role, format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            Ok(Box::new(
                sqlite::SqliteSession::connect(&c.path, open == Open::Create, role).await?,
            ))
        }
        #[cfg(feature = "postgres")]
        Connection::Postgres(c) => Ok(Box::new(
            postgres::PostgresSession::connect(c.url.expose(), role).await?,
        )),
        // Boxed: the TDS login's future is large, and every caller of `connect` would
        // carry it (debug-build tests run their futures on 2 MiB test-thread stacks).
        #[cfg(feature = "mssql")]
        Connection::Mssql(c) => Ok(Box::new(
            Box::pin(mssql::MssqlSession::connect(c, role)).await?,
        )),
        #[cfg(feature = "clickhouse")]
        Connection::Clickhouse(c) => Ok(Box::new(
            clickhouse::ClickhouseSession::connect(c.url.expose(), role)
                .await?
                .with_compression(c.compression),
        )),
        #[cfg(feature = "bigquery")]
        Connection::Bigquery(c) => Ok(Box::new(
            bigquery::BigquerySession::connect(c, role, open == Open::Create).await?,
        )),
        #[allow(unreachable_patterns)]
        other => Err(Error::new(
            crate::Kind::Unsupported,
            format!(
                "the `{}` connector is not built yet: this dpone-host validates its manifest section but cannot connect to it",
                other.kind()
            ),
        )),
    }
}

/// Portable type names a manifest may declare for schemaless sources (REST, Kafka).
const TYPE_NAMES: [&str; 10] = [
    "boolean",
    "int64",
    "float64",
    "text",
    "date",
    "timestamp",
    "timestamp_tz",
    "uuid",
    "json",
    "bytes",
];

/// A column a schemaless source (REST, Kafka) declares in its manifest section.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredColumn {
    pub name: String,
    /// A portable type name: one of [`TYPE_NAMES`] or `decimal(p,s)`.
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default = "nullable_by_default")]
    pub nullable: bool,
    /// Where the value is in a record (dotted), default the column name.
    #[serde(default)]
    pub path: Option<String>,
}

fn nullable_by_default() -> bool {
    true
}

impl DeclaredColumn {
    /// The declared type; `None` when it is not a portable type name (validation refuses
    /// the manifest then).
    pub fn portable_type(&self) -> Option<DataType> {
        let t = self.data_type.as_str();
        if let Some((p, s)) = t
            .strip_prefix("decimal(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|ps| ps.split_once(','))
        {
            return Some(DataType::Decimal(Some(crate::model::DecimalSpec {
                precision: p.trim().parse().ok()?,
                scale: s.trim().parse().ok()?,
            })));
        }
        Some(match t {
            "boolean" => DataType::Boolean,
            "int64" => DataType::Int64,
            "float64" => DataType::Float64,
            "text" => DataType::Text,
            "date" => DataType::Date,
            "timestamp" => DataType::Timestamp,
            "timestamp_tz" => DataType::TimestampTz,
            "uuid" => DataType::Uuid,
            "json" => DataType::Json,
            "bytes" => DataType::Bytes,
            _ => return None,
        })
    }
}

/// The schema a schemaless source declares in its manifest section.
pub fn declared_schema(columns: &[DeclaredColumn], primary_key: &[String]) -> Result<Schema> {
    Ok(Schema {
        columns: columns
            .iter()
            .map(|c| {
                Ok(crate::model::Column {
                    name: c.name.clone(),
                    data_type: c.portable_type().ok_or_else(|| {
                        Error::config("source.columns", format!("`{}` is not a type", c.data_type))
                    })?,
                    nullable: c.nullable,
                })
            })
            .collect::<Result<_>>()?,
        primary_key: primary_key.to_vec(),
    })
}

/// Checks declared columns and the primary key naming them; errors name the field under
/// `at`.
#[cfg_attr(not(any(feature = "rest", feature = "kafka")), allow(dead_code))]
pub(crate) fn check_declared(
    columns: &[DeclaredColumn],
    primary_key: &[String],
    at: &str,
) -> Result<()> {
    for (i, c) in columns.iter().enumerate() {
        let t = c.data_type.as_str();
        if c.portable_type().is_none() {
            return Err(Error::config(
                format!("{at}.columns[{i}].type"),
                format!(
                    "`{t}` is not one of {}, decimal(p,s)",
                    TYPE_NAMES.join(", ")
                ),
            ));
        }
    }
    for (i, k) in primary_key.iter().enumerate() {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(Error::config(
                format!("{at}.primary_key[{i}]"),
                format!("`{k}` is not a declared column"),
            ));
        }
    }
    Ok(())
}

/// Whether a sink of this kind finalizes by publishing a whole new copy of the target
/// (the shadow of sinks without transactions): two finalizations must then never overlap,
/// or the later one would drop the earlier one's rows.
pub fn publishes_whole_target(kind: &str) -> bool {
    matches!(kind, "clickhouse" | "bigquery")
}
