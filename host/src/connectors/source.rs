//! The source operations strategies call, over any [`SqlSession`].

use arrow_array::RecordBatch;
use tokio::sync::mpsc;

use super::{SqlSession, TableName, render};
use crate::error::{Error, Result};
use crate::model::{ChangePart, ChangeWindow, DataType, ScanBounds, Schema, Value};

/// The slot and publication of this pipeline's change feed (PostgreSQL), from the
/// manifest's `source.change_feed`. A guest never names a feed: it can only reach its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedNames {
    pub slot: String,
    pub publication: String,
    /// The publication is dpone's default one, which retiring the pipeline drops; a
    /// publication the manifest names may be the user's own and stays.
    pub own_publication: bool,
}

/// Names a feed: the manifest's (checked by the config), else `dpone_<pipeline>` folded to
/// a valid slot name. When folding changed the name (case, characters, length), a hash of
/// the pipeline name is appended, so `orders-eu` and `orders_eu` never share a slot.
pub fn feed_names(pipeline: &str, slot: Option<&str>, publication: Option<&str>) -> FeedNames {
    let slot = slot.map(str::to_string).unwrap_or_else(|| {
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
    });
    FeedNames {
        publication: publication.map_or_else(|| slot.clone(), str::to_string),
        own_publication: publication.is_none(),
        slot,
    }
}

/// The change feed of a manifest's source, when its connector has one.
pub fn manifest_feed(manifest: &crate::manifest::Manifest) -> Option<FeedNames> {
    match &manifest.source {
        #[cfg(feature = "postgres")]
        crate::manifest::Connection::Postgres(c) => {
            let feed = c.change_feed.clone().unwrap_or_default();
            Some(feed_names(
                &manifest.pipeline,
                feed.slot.as_deref(),
                feed.publication.as_deref(),
            ))
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// What a change scan asks for: positions as the guest passed them, checked at open.
#[derive(Debug, Clone)]
pub struct ChangeRead {
    pub key: Vec<String>,
    pub after: String,
    pub up_to: String,
    pub part: ChangePart,
}

/// What a scan reads.
#[derive(Debug, Clone)]
pub enum ScanKind {
    /// Rows of the source table within bounds.
    Table(ScanBounds),
    /// A window of the change feed, compacted by key.
    Changes(ChangeRead),
}

fn no_feed() -> Error {
    Error::new(
        crate::Kind::Unsupported,
        "this source has no change feed (PostgreSQL sources have one; SQL Server change tables come with its connector)",
    )
}

fn no_row_versions() -> Error {
    Error::new(
        crate::Kind::Unsupported,
        "this source has no row versions (PostgreSQL has xmin; SQL Server rowversion comes with its connector)",
    )
}

/// A source table on one connection. The schema is read once per run.
pub struct SqlSource {
    session: Box<dyn SqlSession>,
    table: TableName,
    schema: Option<Schema>,
    manifest_predicate: Option<String>,
    feed: Option<FeedNames>,
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
        }
    }

    /// This pipeline's change feed: the only one the source's feed operations reach.
    pub fn with_feed(mut self, feed: Option<FeedNames>) -> Self {
        self.feed = feed;
        self
    }

    fn feed(&self) -> Result<&FeedNames> {
        self.feed.as_ref().ok_or_else(no_feed)
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
        if bounds.since.is_some() {
            return Err(Error::new(
                crate::Kind::Unsupported,
                "scans `since` a position need a resumable source (Kafka, REST); a table resumes by a cursor column",
            ));
        }
        if bounds.row_versions.is_some() && !self.has_row_versions() {
            return Err(no_row_versions());
        }
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

    /// Whether rows carry versions (PostgreSQL: `xmin`).
    pub fn has_row_versions(&self) -> bool {
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The safe upper row-version bound (PostgreSQL: the oldest running transaction id,
    /// 64-bit, minus one) as a position.
    pub async fn row_version_horizon(&mut self) -> Result<String> {
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                let stmt = super::Statement::new(
                    "SELECT CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT)",
                );
                let rows = self.session.query(&stmt, &[DataType::Text]).await?;
                match rows.first().and_then(|r| r.first()) {
                    Some(Value::Text(t)) => t
                        .parse::<u64>()
                        .map(|xmin| super::postgres::types::xid_position(xmin.saturating_sub(1)))
                        .map_err(|e| crate::Error::source(format!("snapshot xmin `{t}`: {e}"))),
                    other => Err(crate::Error::source(format!(
                        "snapshot xmin query returned {other:?}"
                    ))),
                }
            }
            #[allow(unreachable_patterns)]
            _ => Err(no_row_versions()),
        }
    }

    /// Opens this pipeline's feed (creating it when missing, if `create`) and applies the
    /// source's gap rule to `stored`.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn open_feed(&mut self, stored: Option<&str>, create: bool) -> Result<ChangeWindow> {
        let names = self.feed()?.clone();
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                super::postgres::cdc::open_window(
                    self.session.as_mut(),
                    &self.table,
                    &names,
                    stored,
                    create,
                )
                .await
            }
            #[allow(unreachable_patterns)]
            _ => Err(no_feed()),
        }
    }

    /// Checks the positions of a change read before it is opened.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub fn check_change_read(&self, read: &ChangeRead) -> Result<()> {
        self.feed()?;
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => super::postgres::cdc::check_window(read),
            #[allow(unreachable_patterns)]
            _ => Err(no_feed()),
        }
    }

    /// Streams the compacted changes of `read`, with the columns of `columns`, into `tx`.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn read_changes(
        &mut self,
        columns: &Schema,
        read: &ChangeRead,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let names = self.feed()?.clone();
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                super::postgres::cdc::read_changes(
                    self.session.as_mut(),
                    &self.table,
                    &names,
                    columns,
                    read,
                    tx,
                )
                .await
            }
            #[allow(unreachable_patterns)]
            _ => Err(no_feed()),
        }
    }

    /// Lets this pipeline's feed discard the changes up to `position`.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn ack_feed(&mut self, position: &str) -> Result<()> {
        let names = self.feed()?.clone();
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                let lsn = super::postgres::types::parse_lsn_position(position)?;
                super::postgres::cdc::ack(self.session.as_mut(), &names, lsn).await
            }
            #[allow(unreachable_patterns)]
            _ => Err(no_feed()),
        }
    }

    /// Drops this pipeline's feed: the slot and, when dpone named it, the publication; says
    /// which of the two existed.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn drop_feed(&mut self) -> Result<(bool, bool)> {
        let names = self.feed()?.clone();
        match self.dialect() {
            #[cfg(feature = "postgres")]
            super::Dialect::Postgres => {
                super::postgres::cdc::drop_feed(
                    self.session.as_mut(),
                    &names,
                    names.own_publication,
                )
                .await
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
    fn feed_names_default_and_fold() {
        let n = feed_names("orders_eu", None, None);
        assert_eq!(n.slot, "dpone_orders_eu");
        assert_eq!(n.publication, n.slot);
        assert!(n.own_publication);
        let folded = feed_names("orders-eu", None, None).slot;
        assert!(
            folded.starts_with("dpone_orders_eu_") && folded != n.slot,
            "{folded}"
        );
        assert_ne!(folded, feed_names("Orders-EU", None, None).slot);
        let long = feed_names(&"x".repeat(80), None, None).slot;
        assert!(long.len() <= 63, "{long}");
        let named = feed_names("p", Some("s"), Some("pub"));
        assert_eq!(
            (named.slot.as_str(), named.publication.as_str()),
            ("s", "pub")
        );
        assert!(!named.own_publication);
    }
}
