//! [`SqlSource`]: the [`Source`] of every SQL database, over any [`SqlSession`].

use arrow_array::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::dialect::SqlDialect;
use super::{
    ChangeFeed, ScanPart, ShareCheck, SnapshotSplit, Source, SqlSession, TableName, WireFormat,
    WireRows, render,
};
use crate::error::{Error, Result};
use crate::manifest::Parallelism;
use crate::model::{ChangePart, DataType, ScanBounds, Schema, Value};

/// What a change scan asks for: positions as the guest passed them, checked at open.
#[derive(Debug, Clone)]
pub struct ChangeRead {
    pub key: Vec<String>,
    pub after: String,
    pub up_to: String,
    pub part: ChangePart,
}

impl ChangeRead {
    /// The read's positions parsed by `parse`; an error unless `after` <= `up_to`.
    pub fn window<P: PartialOrd>(&self, parse: impl Fn(&str) -> Result<P>) -> Result<(P, P)> {
        let (after, up_to) = (parse(&self.after)?, parse(&self.up_to)?);
        if after > up_to {
            return Err(Error::new(
                crate::Kind::InvalidHandle,
                format!(
                    "a change window ends before it starts ({} after {}): pass the positions of one `open-feed` window",
                    self.after, self.up_to
                ),
            ));
        }
        Ok((after, up_to))
    }
}

/// Checks an acknowledgement of `position` (`at`, parsed) against `opened`, the window
/// this run opened (`None`: none yet), shown by `show`: a strategy cannot move a feed past
/// changes it never read, nor back.
pub fn check_ack<P: PartialOrd>(
    opened: Option<&(P, P)>,
    position: &str,
    at: &P,
    show: impl Fn(&P) -> String,
) -> Result<()> {
    match opened {
        Some((after, up_to)) if after <= at && at <= up_to => Ok(()),
        Some((after, up_to)) => Err(Error::new(
            crate::Kind::Sandbox,
            format!(
                "ack-feed: {position} lies outside the window this run opened ({} to {}): a run acknowledges only what its window holds",
                show(after),
                show(up_to)
            ),
        )),
        None => Err(Error::new(
            crate::Kind::Sandbox,
            "ack-feed before open-feed: a run acknowledges only positions of the window it opened",
        )),
    }
}

/// What a scan reads.
#[derive(Debug, Clone)]
pub enum ScanKind {
    /// Rows of the source table within bounds.
    Table(ScanBounds),
    /// A window of the change feed, compacted by key.
    Changes(ChangeRead),
}

/// A source table on one connection. The schema is read once per run.
pub struct SqlSource {
    session: Box<dyn SqlSession>,
    table: TableName,
    schema: Option<Schema>,
    manifest_predicate: Option<String>,
    /// This pipeline's change feed, when the source has one: the only feed a run reaches.
    feed: Option<Box<dyn ChangeFeed>>,
    /// The manifest section the session was opened from, to open the sessions of a split
    /// read; `None`: reads stay on the one session.
    connection: Option<crate::manifest::Connection>,
}

impl std::fmt::Debug for SqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSource")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl SqlSource {
    pub fn new(
        session: Box<dyn SqlSession>,
        table: TableName,
        manifest_predicate: Option<String>,
    ) -> Self {
        SqlSource {
            session,
            table,
            schema: None,
            manifest_predicate,
            feed: None,
            connection: None,
        }
    }

    /// The manifest section the session was opened from: reads may then be split over
    /// more sessions of it ([`Source::split`]).
    pub fn with_connection(mut self, connection: crate::manifest::Connection) -> Self {
        self.connection = Some(connection);
        self
    }

    /// This pipeline's change feed: the only one the source's feed operations reach.
    pub fn with_feed(mut self, feed: Option<Box<dyn ChangeFeed>>) -> Self {
        self.feed = feed;
        self
    }

    pub fn dialect(&self) -> &dyn SqlDialect {
        self.session.dialect()
    }

    /// The statement a scan runs (rendered for the session's reader when `for_read`).
    pub fn select(
        &self,
        columns: &Schema,
        bounds: &ScanBounds,
        for_read: bool,
    ) -> Result<super::Statement> {
        self.check_bounds(columns, bounds)?;
        let session = &self.session;
        let reader = |n: usize, v: &Value| session.read_placeholder(n, v);
        let dialect = |n: usize, v: &Value| session.dialect().placeholder(n, v);
        let placeholder: render::Placeholder<'_> = if for_read { &reader } else { &dialect };
        render::select(
            self.dialect(),
            &self.table,
            columns,
            bounds,
            self.manifest_predicate.as_deref(),
            placeholder,
        )
    }
}

/// A session of `connection` per share of `split`, each joined to its snapshot if it has
/// one, with the statement reading its share of `table`.
async fn join(
    connection: &crate::manifest::Connection,
    table: &TableName,
    manifest_predicate: Option<&str>,
    columns: &Schema,
    bounds: &ScanBounds,
    split: SnapshotSplit,
) -> Result<Vec<Box<dyn ScanPart>>> {
    let mut parts: Vec<Box<dyn ScanPart>> = Vec::with_capacity(split.shares.len());
    for share in split.shares {
        let mut session =
            super::connect(connection, crate::Kind::Source, super::Open::Existing).await?;
        if let Some(snapshot) = &split.snapshot {
            session.join_snapshot(snapshot).await?;
        }
        let reader = |n: usize, v: &Value| session.read_placeholder(n, v);
        let stmt = render::select_share(
            session.dialect(),
            table,
            columns,
            bounds,
            manifest_predicate,
            &reader,
            Some(&share.predicate),
        )?;
        parts.push(Box::new(SqlScanPart {
            session,
            stmt,
            check: share.check,
            joined: split.snapshot.is_some(),
        }));
    }
    Ok(parts)
}

/// A share of a split read: its session (in the split's snapshot when it has one), its
/// statement and the check that it read what it was meant to.
struct SqlScanPart {
    session: Box<dyn SqlSession>,
    stmt: super::Statement,
    check: Option<ShareCheck>,
    /// Whether the session joined a snapshot, in a transaction to end after the read.
    joined: bool,
}

impl SqlScanPart {
    /// Runs the share's check, then ends its snapshot's transaction.
    async fn finish(mut self: Box<Self>) -> Result<()> {
        if let Some(check) = &self.check {
            let rows = self.session.query(&check.query, &[DataType::Int64]).await?;
            if !matches!(rows.first().and_then(|r| r.first()), Some(Value::Int(1))) {
                return Err(Error::source(check.failure.clone()));
            }
        }
        if self.joined {
            self.session.commit().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ScanPart for SqlScanPart {
    async fn read(
        mut self: Box<Self>,
        columns: &Schema,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        self.session.read(&self.stmt, columns, tx).await?;
        self.finish().await
    }

    async fn read_wire(
        mut self: Box<Self>,
        columns: &Schema,
        cursor: Option<usize>,
        tx: mpsc::Sender<WireRows>,
    ) -> Result<()> {
        self.session
            .read_wire(&self.stmt, columns, cursor, tx)
            .await?;
        self.finish().await
    }
}

#[async_trait]
impl Source for SqlSource {
    fn name(&self) -> String {
        self.table.to_string()
    }

    /// The source table's schema; a config error at `source.table` when it does not exist.
    async fn schema(&mut self) -> Result<Schema> {
        if self.schema.is_none() {
            let found = self.session.table_schema(&self.table).await?;
            let schema = found.ok_or_else(|| {
                crate::Error::config(
                    "source.table",
                    format!("table `{}` does not exist in the source", self.table),
                )
            })?;
            self.schema = Some(schema);
        }
        Ok(self.schema.clone().expect("set above"))
    }

    /// Checks a scan's bounds before it runs: every column exists, and the cursor compares
    /// correctly in this dialect.
    fn check_bounds(&self, schema: &Schema, bounds: &ScanBounds) -> Result<()> {
        render::check_bound_columns(self.dialect(), schema, bounds)?;
        if bounds.since.is_some() {
            return Err(Error::new(
                crate::Kind::Unsupported,
                "scans `since` a position need a resumable source (Kafka, REST); a table resumes by a cursor column",
            ));
        }
        if let Some(x) = &bounds.row_versions {
            self.dialect().row_version(&x.up_to)?;
        }
        Ok(())
    }

    /// Streams rows matching `bounds`, with the columns of `columns`, into `tx`.
    async fn read(
        &mut self,
        columns: &Schema,
        bounds: &ScanBounds,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let stmt = self.select(columns, bounds, true)?;
        self.session.read(&stmt, columns, tx).await
    }

    /// Splits a whole-table read (no `limit`, no row-version window: those read in order or
    /// against the session's own snapshot) over sessions each reading its share: joined to
    /// one exported snapshot, or pinned to the split by their predicates and checked after
    /// (ClickHouse).
    async fn split(
        &mut self,
        columns: &Schema,
        bounds: &ScanBounds,
        streams: Parallelism,
    ) -> Result<Vec<Box<dyn ScanPart>>> {
        let Some(connection) = self.connection.clone() else {
            return Ok(Vec::new());
        };
        if bounds.limit.is_some() || bounds.row_versions.is_some() {
            return Ok(Vec::new());
        }
        self.check_bounds(columns, bounds)?;
        let Some(split) = self.session.snapshot_split(&self.table, streams).await? else {
            return Ok(Vec::new());
        };
        let exported = split.snapshot.is_some();
        let joined = join(
            &connection,
            &self.table,
            self.manifest_predicate.as_deref(),
            columns,
            bounds,
            split,
        )
        .await;
        if !exported {
            return joined;
        }
        // The exported snapshot lives only until every share has joined it.
        let ended = self.session.commit().await;
        let parts = joined?;
        ended?;
        Ok(parts)
    }

    async fn wire_format(&mut self, columns: &Schema) -> Result<Option<WireFormat>> {
        self.session
            .wire_format(&self.table, &columns.names())
            .await
    }

    async fn read_wire(
        &mut self,
        columns: &Schema,
        bounds: &ScanBounds,
        cursor: Option<usize>,
        tx: mpsc::Sender<WireRows>,
    ) -> Result<()> {
        let stmt = self.select(columns, bounds, true)?;
        self.session.read_wire(&stmt, columns, cursor, tx).await
    }

    fn describe_scan(&self, columns: &Schema, bounds: &ScanBounds) -> Result<String> {
        Ok(self.select(columns, bounds, false)?.sql)
    }

    /// Largest value of `column` among rows matching `bounds`; NULL when none match.
    async fn max_value(&mut self, column: &str, bounds: &ScanBounds) -> Result<Value> {
        let schema = self.schema().await?;
        let t = schema.require(column, "sink.strategy")?.data_type;
        let stmt = render::aggregate(
            self.dialect(),
            &self.table,
            &schema,
            bounds,
            self.manifest_predicate.as_deref(),
            &self.dialect().max_of(&self.dialect().quote_ident(column)),
        )?;
        let rows = self.session.query(&stmt, &[t]).await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or(Value::Null))
    }

    /// Rows matching `bounds`.
    async fn row_count(&mut self, bounds: &ScanBounds) -> Result<u64> {
        let schema = self.schema().await?;
        let stmt = render::aggregate(
            self.dialect(),
            &self.table,
            &schema,
            bounds,
            self.manifest_predicate.as_deref(),
            self.dialect().count_all(),
        )?;
        let rows = self.session.query(&stmt, &[DataType::Int64]).await?;
        match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(n)) => Ok((*n).max(0) as u64),
            other => Err(crate::Error::source(format!("COUNT(*) returned {other:?}"))),
        }
    }

    /// The safe upper row-version bound now, as a position.
    async fn row_version_horizon(&mut self) -> Result<String> {
        self.session.row_version_horizon().await
    }

    fn change_feed(&mut self) -> Option<&mut dyn ChangeFeed> {
        match self.feed.as_mut() {
            Some(feed) => Some(feed.as_mut()),
            None => None,
        }
    }
}
