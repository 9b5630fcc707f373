//! The source operations strategies call, over any [`SqlSession`].

use arrow_array::RecordBatch;
use tokio::sync::mpsc;

use super::{SqlSession, TableName, render};
use crate::error::{Error, Result};
use crate::model::{ChangeFeed, ChangePart, DataType, FeedPosition, ScanBounds, Schema, Value};

/// The slot and publication of a feed, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedNames {
    pub slot: String,
    pub publication: String,
}

/// Names a feed: the manifest's, else `dpone_<pipeline>` folded to a valid slot name. When
/// folding changed the name (case, characters, length), a hash of the pipeline name is
/// appended, so `orders-eu` and `orders_eu` never share a slot.
pub fn feed_names(pipeline: &str, feed: &ChangeFeed) -> Result<FeedNames> {
    let slot = match &feed.slot {
        Some(s) => check_name(s, "sink.strategy.cdc.slot")?,
        None => {
            let plain = format!("dpone_{pipeline}");
            let folded: String = plain
                .chars()
                .map(|c| {
                    let c = c.to_ascii_lowercase();
                    if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if folded == plain && folded.len() <= 63 {
                folded
            } else {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(pipeline.as_bytes());
                let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
                let base: String = folded.chars().take(54).collect();
                format!("{base}_{hash}")
            }
        }
    };
    let publication = match &feed.publication {
        Some(p) => check_name(p, "sink.strategy.cdc.publication")?,
        None => slot.clone(),
    };
    Ok(FeedNames { slot, publication })
}

fn check_name(name: &str, field: &str) -> Result<String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(name.to_string())
    } else {
        Err(Error::config(
            field,
            format!("`{name}` must be 1-63 characters of a-z, 0-9 and _ (a replication slot name)"),
        ))
    }
}

/// What a change window asks for.
#[derive(Debug, Clone)]
pub struct ChangeWindow {
    pub names: FeedNames,
    pub key: Vec<String>,
    pub after: u64,
    pub up_to: u64,
    pub part: ChangePart,
}

/// What a scan reads.
#[derive(Debug, Clone)]
pub enum ScanKind {
    /// Rows of the source table within bounds.
    Table(ScanBounds),
    /// A window of the change feed, compacted by key.
    Changes(ChangeWindow),
}

fn no_feed() -> Error {
    Error::new(
        crate::Kind::Unsupported,
        "change feeds need a PostgreSQL source (SQL Server change tables come with its connector)",
    )
}

/// A source table on one connection. The schema is read once per run.
pub struct SqlSource {
    session: Box<dyn SqlSession>,
    table: TableName,
    schema: Option<Schema>,
    manifest_predicate: Option<String>,
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
        }
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    pub fn dialect(&self) -> super::Dialect {
        self.session.dialect()
    }

    /// The source table's schema; a config error at `source.table` when it does not exist.
    pub async fn schema(&mut self) -> Result<Schema> {
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

    /// Streams rows matching `bounds`, with the columns of `columns`, into `tx`.
    pub async fn read(
        &mut self,
        columns: &Schema,
        bounds: &ScanBounds,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let stmt = self.select(columns, bounds, true)?;
        self.session.read(&stmt, columns, tx).await
    }

    /// Checks a scan's bounds before it runs: every column exists, and the cursor compares
    /// correctly in this dialect.
    pub fn check_bounds(&self, schema: &Schema, bounds: &ScanBounds) -> Result<()> {
        render::check_bound_columns(schema, bounds)?;
        #[cfg(feature = "sqlite")]
        if self.dialect() == super::Dialect::Sqlite
            && let Some(c) = &bounds.cursor
            && matches!(
                schema.column(&c.column).map(|c| c.data_type),
                Some(DataType::Decimal(_))
            )
        {
            return Err(crate::Error::config(
                "sink.strategy.cursor_column",
                format!(
                    "`{}` is a decimal, which SQLite keeps as text and would compare as text; use an integer or timestamp cursor",
                    c.column
                ),
            ));
        }
        Ok(())
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
        let placeholder: render::Placeholder<'_> = if for_read { &reader } else { &render::dollar };
        render::select(
            self.dialect(),
            &self.table,
            columns,
            bounds,
            self.manifest_predicate.as_deref(),
            placeholder,
        )
    }

    /// Largest value of `column` among rows matching `bounds`; NULL when none match.
    pub async fn max_value(&mut self, column: &str, bounds: &ScanBounds) -> Result<Value> {
        let schema = self.schema().await?;
        let t = schema.require(column, "sink.strategy")?.data_type;
        let stmt = render::aggregate(
            self.dialect(),
            &self.table,
            &schema,
            bounds,
            self.manifest_predicate.as_deref(),
            &render::max_of(self.dialect(), column),
        )?;
        let rows = self.session.query(&stmt, &[t]).await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or(Value::Null))
    }

    /// Whether scans can be bounded by transaction id (PostgreSQL).
    pub fn has_xmin(&self) -> bool {
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The safe upper xmin bound: the oldest running transaction id (64-bit) minus one.
    pub async fn xmin_horizon(&mut self) -> Result<u64> {
        if !self.has_xmin() {
            return Err(crate::Error::new(
                crate::Kind::Unsupported,
                "xmin bounds need a PostgreSQL source",
            ));
        }
        let stmt =
            super::Statement::new("SELECT CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT)");
        let rows = self.session.query(&stmt, &[DataType::Text]).await?;
        match rows.first().and_then(|r| r.first()) {
            Some(Value::Text(t)) => t
                .parse::<u64>()
                .map(|xmin| xmin.saturating_sub(1))
                .map_err(|e| crate::Error::source(format!("snapshot xmin `{t}`: {e}"))),
            other => Err(crate::Error::source(format!(
                "snapshot xmin query returned {other:?}"
            ))),
        }
    }

    /// Whether the source has a change feed (PostgreSQL logical replication).
    pub fn has_cdc(&self) -> bool {
        self.has_xmin()
    }

    /// Creates the feed's publication and slot when missing (if `create`); where the feed
    /// stands.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn open_feed(&mut self, names: &FeedNames, create: bool) -> Result<FeedPosition> {
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                super::postgres::cdc::open_feed(self.session.as_mut(), &self.table, names, create)
                    .await
            }
            #[allow(unreachable_patterns)]
            _ => Err(no_feed()),
        }
    }

    /// Streams the compacted changes of `window`, with the columns of `columns`, into `tx`.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn read_changes(
        &mut self,
        columns: &Schema,
        window: &ChangeWindow,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                super::postgres::cdc::read_changes(
                    self.session.as_mut(),
                    &self.table,
                    columns,
                    window,
                    tx,
                )
                .await
            }
            #[allow(unreachable_patterns)]
            _ => Err(no_feed()),
        }
    }

    /// Lets the feed discard the changes up to `position`.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn ack_feed(&mut self, names: &FeedNames, position: u64) -> Result<()> {
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                super::postgres::cdc::ack(self.session.as_mut(), names, position).await
            }
            #[allow(unreachable_patterns)]
            _ => Err(no_feed()),
        }
    }

    /// Drops the feed's slot and, when `publication`, its publication; says which of the
    /// two existed.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn drop_feed(
        &mut self,
        names: &FeedNames,
        publication: bool,
    ) -> Result<(bool, bool)> {
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                super::postgres::cdc::drop_feed(self.session.as_mut(), names, publication).await
            }
            #[allow(unreachable_patterns)]
            _ => Err(no_feed()),
        }
    }

    /// Rows matching `bounds`.
    pub async fn row_count(&mut self, bounds: &ScanBounds) -> Result<u64> {
        let schema = self.schema().await?;
        let stmt = render::aggregate(
            self.dialect(),
            &self.table,
            &schema,
            bounds,
            self.manifest_predicate.as_deref(),
            "COUNT(*)",
        )?;
        let rows = self.session.query(&stmt, &[DataType::Int64]).await?;
        match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(n)) => Ok((*n).max(0) as u64),
            other => Err(crate::Error::source(format!("COUNT(*) returned {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_names_default_and_check() {
        let none = ChangeFeed {
            slot: None,
            publication: None,
        };
        let n = feed_names("orders_eu", &none).unwrap();
        assert_eq!(n.slot, "dpone_orders_eu");
        assert_eq!(n.publication, n.slot);
        let folded = feed_names("orders-eu", &none).unwrap().slot;
        assert!(
            folded.starts_with("dpone_orders_eu_") && folded != n.slot,
            "{folded}"
        );
        assert_ne!(folded, feed_names("Orders-EU", &none).unwrap().slot);
        let long = feed_names(&"x".repeat(80), &none).unwrap().slot;
        assert!(long.len() <= 63, "{long}");
        let bad = ChangeFeed {
            slot: Some("Bad-Name".into()),
            publication: None,
        };
        let e = feed_names("p", &bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sink.strategy.cdc.slot"));
    }
}
