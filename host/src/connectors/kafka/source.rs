//! A bounded topic as a source: a scan reads every partition from its `since` position
//! (from the first offset without one) to the end the partition has when the read reaches
//! it, applies the records to a table of the embedded store (`view.rs`: by key the last
//! value wins and a tombstone deletes) and serves the scan's bounds from that table with
//! SQL. The scan's `resume` is where the read stopped: stored by the strategy with its
//! state, the next run reads only what came after.

use std::path::PathBuf;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::client::{KafkaClient, TopicProducer};
use super::config::KafkaConfig;
use super::types::{Codec, Offsets, format_position, parse_position};
use super::view::{DeadLetters, apply_topic};
use crate::connectors::dialect::NewTable;
use crate::connectors::source::SqlSource;
use crate::connectors::{ChangeFeed, Source, Statement, TableName, declared_schema};
use crate::error::{Error, Kind, Result};
use crate::model::{ScanBounds, Schema, Value};

const WINDOW: &str = "dpone_window";

/// The records a scan reads, as a table.
struct Window {
    since: Option<String>,
    table: SqlSource,
    end: Offsets,
}

pub struct KafkaSource {
    client: KafkaClient,
    config: KafkaConfig,
    schema: Schema,
    codec: Codec,
    /// The embedded store of this run's windows; removed when the source goes.
    path: PathBuf,
    window: Option<Window>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.config.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// A source of `config`'s declared columns; its store is a file of its own under
    /// `<DPONE_HOME>/kafka`.
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        let schema = declared_schema(&config.columns, &config.primary_key)?;
        let codec = Codec::declared(&schema, &config.columns)?.in_format(config, Kind::Source)?;
        let home = std::env::var("DPONE_HOME").unwrap_or_else(|_| ".dpone".into());
        let path = PathBuf::from(home)
            .join("kafka")
            .join(format!("source-{}.db", uuid::Uuid::new_v4().simple()));
        Ok(KafkaSource {
            client: KafkaClient::new(config, Kind::Source),
            config: config.clone(),
            schema,
            codec,
            path,
            window: None,
        })
    }

    /// The window of a scan `since` (`None`: the whole topic), read on first use.
    async fn window(&mut self, since: &Option<String>) -> Result<&mut SqlSource> {
        let current = self.window.as_ref().is_some_and(|w| &w.since == since);
        if !current {
            self.window = None;
            let window = self.load(since).await?;
            self.window = Some(window);
        }
        Ok(&mut self.window.as_mut().expect("loaded above").table)
    }

    async fn load(&mut self, since: &Option<String>) -> Result<Window> {
        let start = match since {
            Some(text) => parse_position(text)?,
            None => Offsets::new(),
        };
        self.remove_store();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::source(format!("cannot create {}: {e}", dir.display())))?;
        }
        let path = self.path.display().to_string();
        let mut session: Box<dyn crate::connectors::SqlSession> = Box::new(
            Box::pin(crate::connectors::sqlite::SqliteSession::connect(
                &path,
                true,
                Kind::Source,
            ))
            .await?,
        );
        let table = TableName {
            schema: None,
            name: WINDOW.into(),
        };
        let create = session.dialect().create_table(
            &table,
            &self.schema,
            &self.config.primary_key,
            NewTable::Target,
        );
        session.execute(&Statement::new(create)).await?;
        let mut dead_letters = match &self.config.dead_letter_topic {
            Some(topic) => Some(DeadLetters {
                producer: TopicProducer::open(&self.client, topic, None).await?,
                count: 0,
            }),
            None => None,
        };
        let end = apply_topic(
            &self.client,
            &self.config.topic,
            &start,
            session.as_mut(),
            &table,
            &self.codec,
            dead_letters.as_mut(),
        )
        .await?;
        if let Some(dl) = dead_letters {
            let count = dl.count;
            dl.producer.commit().await?;
            if count > 0 {
                tracing::warn!(
                    "kafka topic {}: {count} records did not decode and went to dead-letter topic {}",
                    self.config.topic,
                    self.config.dead_letter_topic.as_deref().unwrap_or_default()
                );
            }
        }
        tracing::info!(
            "kafka topic {}: read up to {}",
            self.config.topic,
            format_position(&end)
        );
        Ok(Window {
            since: since.clone(),
            table: SqlSource::new(session, table, None),
            end,
        })
    }

    fn remove_store(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }

    /// The bounds the window's table applies: everything but `since`, which chose it.
    fn table_bounds(bounds: &ScanBounds) -> ScanBounds {
        ScanBounds {
            since: None,
            ..bounds.clone()
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.window = None;
        self.remove_store();
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn name(&self) -> String {
        self.config
            .table
            .clone()
            .unwrap_or_else(|| self.config.topic.clone())
    }

    async fn schema(&mut self) -> Result<Schema> {
        Ok(self.schema.clone())
    }

    fn check_bounds(&self, schema: &Schema, bounds: &ScanBounds) -> Result<()> {
        if bounds.row_versions.is_some() {
            return Err(Error::new(
                Kind::Unsupported,
                "a Kafka topic has no row versions: it resumes from positions (scan `since`)",
            ));
        }
        if let Some(since) = &bounds.since {
            parse_position(since)?;
        }
        if bounds
            .filter
            .iter()
            .any(|t| matches!(t, crate::model::Term::ManifestPredicate))
        {
            return Err(Error::config(
                "sink.strategy.predicate_sql",
                "a Kafka source has no SQL: use structured predicates",
            ));
        }
        crate::connectors::render::check_bound_columns(
            &crate::connectors::sqlite::dialect::SqliteDialect,
            schema,
            &Self::table_bounds(bounds),
        )
    }

    async fn read(
        &mut self,
        columns: &Schema,
        bounds: &ScanBounds,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let table_bounds = Self::table_bounds(bounds);
        self.window(&bounds.since)
            .await?
            .read(columns, &table_bounds, tx)
            .await
    }

    fn describe_scan(&self, columns: &Schema, bounds: &ScanBounds) -> Result<String> {
        self.check_bounds(columns, bounds)?;
        let from = bounds.since.as_deref().unwrap_or("the first offsets");
        Ok(format!(
            "read topic {} from {from} to the end of every partition, by key the last record wins, then keep the rows within the scan's bounds",
            self.config.topic
        ))
    }

    async fn max_value(&mut self, column: &str, bounds: &ScanBounds) -> Result<Value> {
        let table_bounds = Self::table_bounds(bounds);
        self.window(&bounds.since)
            .await?
            .max_value(column, &table_bounds)
            .await
    }

    async fn row_count(&mut self, bounds: &ScanBounds) -> Result<u64> {
        let table_bounds = Self::table_bounds(bounds);
        self.window(&bounds.since)
            .await?
            .row_count(&table_bounds)
            .await
    }

    async fn row_version_horizon(&mut self) -> Result<String> {
        Err(Error::new(
            Kind::Unsupported,
            "a Kafka topic has no row versions: it resumes from positions (scan `since`)",
        ))
    }

    /// Where a scan `since` the bounds' position stopped, once it read.
    fn resume(&self, bounds: &ScanBounds) -> Option<String> {
        self.window
            .as_ref()
            .filter(|w| w.since == bounds.since)
            .map(|w| format_position(&w.end))
    }

    fn change_feed(&mut self) -> Option<&mut dyn ChangeFeed> {
        None
    }
}
