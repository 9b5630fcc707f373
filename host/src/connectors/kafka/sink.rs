//! A topic as a sink: the table it stands for lives in the embedded store as its view
//! (`view.rs`), where the strategy's finalize primitives run as SQL; the commit turns the
//! view's net change into records.
//!
//! Contract:
//! - the view of the target is `dpone_target` in `<DPONE_HOME>/kafka/<pipeline>.db`, kept
//!   between runs with the offset every partition was applied up to; each run first applies
//!   what the topic gained since (written by anyone), so a run compares against the topic,
//!   never against what dpone last wrote. A view whose columns or key changed, or whose topic
//!   lost records it had not applied (a recreated topic), is rebuilt from the whole topic;
//! - inside a transaction, triggers note the first value of every key the strategy touches;
//!   the commit produces, per key, only the net effect: an upsert for a new or changed row,
//!   a tombstone for a row that went, nothing for a row that ended as it was;
//! - the records go in one producer transaction (`exactly_once`, the default, with
//!   `transactional.id` `dpone.<pipeline>`: a zombie producer of a crashed run is fenced
//!   when the next one starts), and only then does the view commit. Without a transaction a
//!   run that dies while producing leaves part of its records; the next run's view holds
//!   them and the same comparison produces the rest;
//! - an `append_only` topic is an event log: the rows inserted from staging are produced as
//!   they are, one record each, and nothing is read from the topic.

use std::path::PathBuf;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::client::{KafkaClient, TopicProducer};
use super::config::KafkaConfig;
use super::types::{Codec, Offsets, format_position, parse_position};
use super::view::apply_topic;
use crate::connectors::dialect::KeyMatch;
use crate::connectors::sink::{SqlSink, StagingKind};
use crate::connectors::{Open, Sink, SqlSession, Staging, Statement, StatementLog, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{self, DataType, KeyCheck, Schema, Term, Value};

/// The view's table in the embedded store.
const VIEW: &str = "dpone_target";
/// The view's bookkeeping: its columns and key, and the position it reflects.
const VIEW_META: &str = "dpone_view_meta";
/// First values of the keys a transaction touched (`__present` 0: the key was absent).
const BEFORE: &str = "dpone_before";

/// A Kafka topic as the sink of one run.
pub struct KafkaSink {
    client: KafkaClient,
    config: KafkaConfig,
    /// The topic, as the run reports its target.
    target: TableName,
    /// The embedded store: the view (as its target) and the run's staging tables.
    store: SqlSink,
    transactional_id: String,
    dry_run: bool,
    /// The view's columns and key, once known (an earlier run's, or `ensure_target`'s).
    codec: Option<Codec>,
    /// The topic is missing: the commit creates it before producing.
    create_topic: bool,
    /// How the open transaction tracks the view's changes.
    tracking: Tracking,
    /// Append-only topics: staging tables inserted in the open transaction.
    appended: Vec<TableName>,
}

/// How the open transaction knows the view's net change at its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracking {
    Off,
    /// Triggers note the first value of every key the strategy touches.
    Triggers,
    /// The view was empty when the transaction began (a first load, a new topic): every
    /// row it holds at the commit is new, and nothing else changed. No triggers needed.
    FromEmpty,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.config.topic)
            .finish_non_exhaustive()
    }
}

/// A table of the embedded store.
fn local(name: &str) -> TableName {
    TableName {
        schema: None,
        name: name.into(),
    }
}

/// Where the views of a pipeline's topics are kept.
fn store_path(pipeline: &str) -> PathBuf {
    let home = std::env::var("DPONE_HOME").unwrap_or_else(|_| ".dpone".into());
    let name: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(home).join("kafka").join(format!("{name}.db"))
}

impl KafkaSink {
    /// Opens the embedded store of `pipeline`'s sink (created when missing, except in a dry
    /// run) and, when it holds a view, brings it up to the topic.
    pub async fn connect(
        config: &KafkaConfig,
        pipeline: &str,
        run_id: &str,
        dry_run: bool,
        statements: StatementLog,
    ) -> Result<Self> {
        let path = store_path(pipeline);
        let connection =
            crate::manifest::Connection::Sqlite(crate::connectors::sqlite::config::SqliteConfig {
                path: path.display().to_string(),
                table: None,
            });
        let open = if dry_run { Open::Plan } else { Open::Create };
        let session = Box::pin(crate::connectors::connect(&connection, Kind::Sink, open)).await?;
        let store = SqlSink::new(
            session,
            connection,
            local(VIEW),
            run_id,
            None,
            dry_run,
            statements,
        );
        let mut sink = KafkaSink {
            client: KafkaClient::new(config, Kind::Sink),
            config: config.clone(),
            target: TableName {
                schema: None,
                name: config.topic.clone(),
            },
            store,
            transactional_id: format!("dpone.{pipeline}"),
            dry_run,
            codec: None,
            create_topic: false,
            tracking: Tracking::Off,
            appended: Vec::new(),
        };
        sink.codec = sink.stored_codec().await?;
        Ok(sink)
    }

    fn session(&mut self) -> &mut dyn SqlSession {
        self.store.session()
    }

    async fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<u64> {
        self.session().execute(&Statement { sql, params }).await
    }

    /// The columns and key of the view an earlier run left for this topic.
    async fn stored_codec(&mut self) -> Result<Option<Codec>> {
        if self.config.append_only || self.stored_position().await?.is_none() {
            return Ok(None);
        }
        match self.session().table_schema(&local(VIEW)).await? {
            Some(schema) => Ok(Some(
                Codec::new(&schema, &schema.primary_key)?.in_format(&self.config, Kind::Sink)?,
            )),
            None => Ok(None),
        }
    }

    /// Whether the topic exists; a topic that exists must be compacted unless the
    /// manifest says it is an event log.
    async fn check_topic(&mut self) -> Result<bool> {
        let Some(_) = self.client.partitions(&self.config.topic).await? else {
            return Ok(false);
        };
        if !self.config.append_only {
            let policy = self.client.cleanup_policy(&self.config.topic).await?;
            if !policy.split(',').any(|p| p.trim() == "compact") {
                return Err(Error::config(
                    "sink.append_only",
                    format!(
                        "topic {} has cleanup.policy={policy}: a table needs a compacted topic (cleanup.policy=compact); set append_only: true to write it as an event log (incremental_append only)",
                        self.config.topic
                    ),
                ));
            }
        }
        Ok(true)
    }

    /// Brings the view up to the topic: applies what it gained since the stored position,
    /// or, when the view cannot continue (none yet, the topic lost records it had not
    /// applied), rebuilds it from the whole topic. Runs inside the open transaction, if any,
    /// before the transaction records anything.
    async fn catch_up(&mut self, codec: &Codec, rebuild: bool) -> Result<()> {
        let view = local(VIEW);
        let mut start = if rebuild {
            None
        } else {
            self.stored_position().await?
        };
        let topic_exists = self.client.partitions(&self.config.topic).await?.is_some();
        if !topic_exists {
            // No topic, no rows: the view starts empty (the commit creates the topic).
            start = None;
        } else if let Some(at) = &start {
            // Records the view has not applied are gone (below the first offset), or the
            // topic ends before the view's position (recreated): start over. A broker whose
            // high watermark lags the records it serves costs a rebuild, never a wrong view.
            let marks = self.client.watermarks(&self.config.topic).await?;
            let gap = marks
                .iter()
                .any(|(p, (low, high))| at.get(p).is_some_and(|o| o < low || o > high))
                || at.keys().any(|p| !marks.contains_key(p));
            if gap {
                tracing::warn!(
                    "kafka topic {}: records after the view's position are gone (the topic was recreated or cleaned): rebuilding the view from the whole topic",
                    self.config.topic
                );
                start = None;
            }
        }
        if start.is_none() {
            let d = self.store.dialect();
            let drop = format!("DROP TABLE IF EXISTS {}", d.table_ref(&view));
            let create = d.create_table(
                &view,
                codec.schema(),
                &codec.key_names(),
                crate::connectors::dialect::NewTable::Target,
            );
            self.execute(drop, vec![]).await?;
            self.execute(create, vec![]).await?;
        }
        if !topic_exists {
            return self.store_position(&Offsets::new()).await;
        }
        let topic = self.config.topic.clone();
        let client = self.client.clone();
        let from = start.clone().unwrap_or_default();
        let end = apply_topic(&client, &topic, &from, self.session(), &view, codec, None).await?;
        self.store_position(&end).await
    }

    /// The position the view reflects, when it is this topic's view.
    async fn stored_position(&mut self) -> Result<Option<Offsets>> {
        let exists = self
            .session()
            .table_schema(&local(VIEW_META))
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let rows = self
            .session()
            .query(
                &Statement::new(format!("SELECT topic, position FROM {VIEW_META}")),
                &[DataType::Text, DataType::Text],
            )
            .await?;
        match rows.first().map(|r| r.as_slice()) {
            Some([Value::Text(topic), Value::Text(position)]) if *topic == self.config.topic => {
                Ok(Some(parse_position(position)?))
            }
            _ => Ok(None),
        }
    }

    async fn store_position(&mut self, end: &Offsets) -> Result<()> {
        self.execute(
            format!("CREATE TABLE IF NOT EXISTS {VIEW_META} (topic TEXT NOT NULL, position TEXT NOT NULL)"),
            vec![],
        )
        .await?;
        self.execute(format!("DELETE FROM {VIEW_META}"), vec![])
            .await?;
        self.execute(
            format!("INSERT INTO {VIEW_META} (topic, position) VALUES ($1, $2)"),
            vec![
                Value::Text(self.config.topic.clone()),
                Value::Text(format_position(end)),
            ],
        )
        .await?;
        Ok(())
    }

    /// At the start of a transaction on an existing view: checks the topic, applies what
    /// it gained, then records what the transaction changes.
    async fn prepare(&mut self, codec: &Codec) -> Result<()> {
        let exists = self.check_topic().await?;
        self.create_topic = !exists;
        self.catch_up(codec, false).await?;
        self.arm(codec).await
    }

    /// From now until the transaction ends, notes the first value of every key the
    /// strategy touches in the view (nothing to note when the view is empty).
    async fn arm(&mut self, codec: &Codec) -> Result<()> {
        let view = self.store.dialect().quote_ident(VIEW);
        let any = self
            .session()
            .query(
                &Statement::new(format!("SELECT EXISTS (SELECT 1 FROM main.{view})")),
                &[DataType::Int64],
            )
            .await?;
        if matches!(any.first().map(Vec::as_slice), Some([Value::Int(0)])) {
            self.tracking = Tracking::FromEmpty;
            return Ok(());
        }
        let d = self.store.dialect();
        let q = |n: &str| d.quote_ident(n);
        let columns: Vec<String> = codec.schema().columns.iter().map(|c| q(&c.name)).collect();
        let keys: Vec<String> = codec.key_names().iter().map(|k| q(k)).collect();
        let old_row = columns
            .iter()
            .map(|c| format!("OLD.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nulls_but = |prefix: &str| {
            codec
                .schema()
                .columns
                .iter()
                .map(|c| {
                    if codec.key_names().contains(&c.name) {
                        format!("{prefix}.{}", q(&c.name))
                    } else {
                        "NULL".into()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all = columns.join(", ");
        let view = q(VIEW);
        let statements = [
            format!("DROP TABLE IF EXISTS temp.{BEFORE}"),
            format!(
                "CREATE TEMP TABLE {BEFORE} AS SELECT {all}, 1 AS __present FROM main.{view} WHERE 0"
            ),
            format!(
                "CREATE UNIQUE INDEX temp.{BEFORE}_key ON {BEFORE} ({})",
                keys.join(", ")
            ),
            format!(
                "CREATE TEMP TRIGGER {BEFORE}_del AFTER DELETE ON main.{view} BEGIN INSERT OR IGNORE INTO {BEFORE} ({all}, __present) VALUES ({old_row}, 1); END"
            ),
            format!(
                "CREATE TEMP TRIGGER {BEFORE}_upd AFTER UPDATE ON main.{view} BEGIN INSERT OR IGNORE INTO {BEFORE} ({all}, __present) VALUES ({old_row}, 1); INSERT OR IGNORE INTO {BEFORE} ({all}, __present) VALUES ({}, 0); END",
                nulls_but("NEW")
            ),
            format!(
                "CREATE TEMP TRIGGER {BEFORE}_ins AFTER INSERT ON main.{view} BEGIN INSERT OR IGNORE INTO {BEFORE} ({all}, __present) VALUES ({}, 0); END",
                nulls_but("NEW")
            ),
        ];
        for sql in statements {
            self.execute(sql, vec![]).await?;
        }
        self.tracking = Tracking::Triggers;
        Ok(())
    }

    async fn disarm(&mut self) -> Result<()> {
        let was = std::mem::replace(&mut self.tracking, Tracking::Off);
        if was != Tracking::Triggers {
            return Ok(());
        }
        for sql in [
            format!("DROP TRIGGER IF EXISTS temp.{BEFORE}_del"),
            format!("DROP TRIGGER IF EXISTS temp.{BEFORE}_upd"),
            format!("DROP TRIGGER IF EXISTS temp.{BEFORE}_ins"),
            format!("DROP TABLE IF EXISTS temp.{BEFORE}"),
        ] {
            self.execute(sql, vec![]).await?;
        }
        Ok(())
    }

    /// The statements whose rows the commit produces: upserts (every column) and
    /// tombstones (the key columns) of the keys whose net change is not nothing; or, for
    /// an event log, the rows appended.
    fn changes(&self, codec: &Codec) -> Vec<(Statement, Schema, bool)> {
        let d = self.store.dialect();
        let q = |n: &str| d.quote_ident(n);
        let schema = codec.schema();
        let columns: Vec<String> = schema.columns.iter().map(|c| q(&c.name)).collect();
        if self.tracking == Tracking::FromEmpty {
            let all = format!("SELECT {} FROM main.{}", columns.join(", "), q(VIEW));
            return vec![(Statement::new(all), schema.clone(), true)];
        }
        if self.config.append_only {
            return self
                .appended
                .iter()
                .map(|t| {
                    let sql = format!("SELECT {} FROM {}", columns.join(", "), d.table_ref(t));
                    (Statement::new(sql), schema.clone(), true)
                })
                .collect();
        }
        let keys = codec.key_names();
        let on = keys
            .iter()
            .map(|k| format!("t.{0} IS b.{0}", q(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let same = schema
            .columns
            .iter()
            .map(|c| format!("t.{0} IS b.{0}", q(&c.name)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let t_all = schema
            .columns
            .iter()
            .map(|c| format!("t.{}", q(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let b_keys = keys
            .iter()
            .map(|k| format!("b.{}", q(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let upserts = format!(
            "SELECT {t_all} FROM temp.{BEFORE} b JOIN main.{} t ON {on} WHERE b.__present = 0 OR NOT ({same})",
            q(VIEW)
        );
        let tombstones = format!(
            "SELECT {b_keys} FROM temp.{BEFORE} b WHERE b.__present = 1 AND NOT EXISTS (SELECT 1 FROM main.{} t WHERE {on})",
            q(VIEW)
        );
        vec![
            (Statement::new(upserts), schema.clone(), true),
            (Statement::new(tombstones), codec.key_schema(), false),
        ]
    }

    /// Creates the topic `ensure_target` found missing: partitions, replication factor and,
    /// for a table, `cleanup.policy=compact` from the manifest.
    async fn create_missing_topic(&mut self) -> Result<()> {
        if !self.create_topic {
            return Ok(());
        }
        let partitions = i32::try_from(self.config.partitions.unwrap_or(1)).unwrap_or(i32::MAX);
        self.client
            .create_topic(
                &self.config.topic,
                partitions,
                self.config.replication_factor,
                !self.config.append_only,
            )
            .await?;
        self.create_topic = false;
        Ok(())
    }

    /// Produces the net change of the open transaction; returns (upserts, tombstones).
    async fn produce(&mut self, codec: &Codec) -> Result<(u64, u64)> {
        codec.prepare_write().await?;
        self.create_missing_topic().await?;
        let id = self
            .config
            .exactly_once
            .then(|| self.transactional_id.clone());
        let mut producer = TopicProducer::open(&self.client, &self.config.topic, id).await?;
        let mut counts = (0, 0);
        for (stmt, schema, upserts) in self.changes(codec) {
            let sent = produce_rows(
                self.store.session(),
                &stmt,
                &schema,
                codec,
                upserts,
                &mut producer,
            )
            .await;
            match sent {
                Ok(n) if upserts => counts.0 += n,
                Ok(n) => counts.1 += n,
                Err(e) => {
                    if let Err(abort) = producer.abort().await {
                        tracing::warn!("kafka: aborting the transaction failed: {abort}");
                    }
                    return Err(e);
                }
            }
        }
        producer.commit().await?;
        Ok(counts)
    }

    fn codec(&self, what: &str) -> Result<Codec> {
        self.codec.clone().ok_or_else(|| {
            Error::new(
                Kind::Sink,
                format!(
                    "{what}: topic {} has no target yet: call ensure-target first",
                    self.config.topic
                ),
            )
        })
    }

    fn refuse_on_log(&self, what: &str) -> Result<()> {
        if self.config.append_only {
            return Err(Error::config(
                "sink.append_only",
                format!(
                    "{what}: topic {} is an event log (append_only: true); only rows inserted from staging are produced",
                    self.config.topic
                ),
            ));
        }
        Ok(())
    }
}

/// Streams the rows of `stmt` (of `schema`) out of the embedded store into `producer`:
/// upserts as key + value, tombstones as key only. Returns records queued.
async fn produce_rows(
    session: &mut dyn SqlSession,
    stmt: &Statement,
    schema: &Schema,
    codec: &Codec,
    upserts: bool,
    producer: &mut TopicProducer,
) -> Result<u64> {
    let (tx, mut rx) = mpsc::channel::<RecordBatch>(2);
    let read = session.read(stmt, schema, tx);
    let send = async {
        let mut sent = 0u64;
        while let Some(batch) = rx.recv().await {
            for row in 0..batch.num_rows() {
                let values: Vec<Value> = schema
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| model::value_at(batch.column(i), &c.data_type, row))
                    .collect();
                if upserts {
                    let key = codec.encode_key(&values)?;
                    let value = codec.encode_value(&values)?;
                    producer.send(key.as_deref(), Some(&value)).await?;
                } else {
                    // Tombstone rows hold the key columns only, in key order.
                    let key = codec.encode_key_values(&values)?;
                    producer.send(Some(&key), None).await?;
                }
                crate::failpoint("sink.mid_produce");
                sent += 1;
            }
        }
        Ok::<u64, Error>(sent)
    };
    let ((), sent) = tokio::try_join!(read, send)?;
    Ok(sent)
}

#[async_trait]
impl Staging for KafkaSink {
    async fn create_staging(&mut self, schema: &Schema, kind: StagingKind) -> Result<TableName> {
        self.store.create_staging(schema, kind).await
    }

    async fn load(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        self.store.load(staging, schema, rx).await
    }

    async fn loaded(&mut self, staging: &TableName, kind: StagingKind) -> Result<()> {
        self.store.loaded(staging, kind).await
    }

    async fn staging_row_count(&mut self, staging: &TableName) -> Result<u64> {
        self.store.staging_row_count(staging).await
    }

    async fn distinct_values(
        &mut self,
        staging: &TableName,
        column: &str,
        t: &DataType,
        limit: u32,
    ) -> Result<Vec<Value>> {
        self.store.distinct_values(staging, column, t, limit).await
    }

    async fn check_keys(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        key: &[String],
    ) -> Result<KeyCheck> {
        self.store.check_keys(staging, schema, key).await
    }

    async fn drop_staging(&mut self, staging: &TableName) -> Result<()> {
        if self.appended.contains(staging) {
            // Its rows are what the open transaction produces at commit.
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "staging {staging} is appended to the event log by the open transaction: drop it after the commit"
                ),
            ));
        }
        self.store.drop_staging(staging).await
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn target(&self) -> &TableName {
        &self.target
    }

    /// The view's schema once a run created it, `None` before (and for an event log).
    async fn describe(&mut self) -> Result<Option<Schema>> {
        Ok(self.codec.as_ref().map(|c| c.schema().clone()))
    }

    /// Checks the topic (compacted unless an event log), and makes the view hold `schema`
    /// keyed by `key`, rebuilt from the topic when it held something else. A missing topic
    /// is created by the commit, so a failed first run leaves none.
    async fn ensure_target(&mut self, schema: &Schema, key: &[String]) -> Result<()> {
        for k in key {
            schema.require(k, "sink.strategy.unique_key")?;
        }
        if !self.config.append_only && key.is_empty() {
            return Err(Error::config(
                "sink.strategy.unique_key",
                format!(
                    "topic {} is a table keyed by the unique key (a compacted topic): name the key columns, or set sink.append_only: true for an event log",
                    self.config.topic
                ),
            ));
        }
        let exists = self.check_topic().await?;
        self.create_topic = !exists;
        let wanted = Codec::new(schema, key)?.in_format(&self.config, Kind::Sink)?;
        if self.config.append_only {
            self.codec = Some(wanted);
            return Ok(());
        }
        let same = self.codec.as_ref().is_some_and(|c| {
            c.key_names() == key
                && c.schema().columns.len() == schema.columns.len()
                && c.schema()
                    .columns
                    .iter()
                    .zip(&schema.columns)
                    .all(|(a, b)| a.name == b.name && a.data_type == b.data_type)
        });
        if self.dry_run {
            self.store.note(format!(
                "read topic {} into its view {VIEW}",
                self.config.topic
            ));
            self.codec = Some(wanted);
            return Ok(());
        }
        if !same {
            self.disarm().await?;
            self.catch_up(&wanted, !same).await?;
            self.codec = Some(wanted.clone());
            if self.store.in_transaction() {
                self.arm(&wanted).await?;
            }
        }
        Ok(())
    }

    async fn begin(&mut self) -> Result<()> {
        self.store.begin().await?;
        let Some(codec) = self.codec.clone() else {
            return Ok(());
        };
        if self.dry_run || self.config.append_only {
            return Ok(());
        }
        if let Err(e) = self.prepare(&codec).await {
            self.tracking = Tracking::Off;
            let _ = self.store.rollback().await;
            return Err(e);
        }
        Ok(())
    }

    async fn commit(&mut self, also: Vec<Statement>) -> Result<()> {
        if !also.is_empty() {
            return Err(Error::new(
                Kind::State,
                "a Kafka sink cannot hold the state store",
            ));
        }
        if self.dry_run {
            self.store.note(format!(
                "produce the net change of the view to topic {} in one transaction",
                self.config.topic
            ));
            return self.store.commit(also).await;
        }
        if let Some(codec) = self.codec.clone()
            && (self.tracking != Tracking::Off || !self.appended.is_empty())
        {
            let (upserts, tombstones) = match self.produce(&codec).await {
                Ok(counts) => counts,
                Err(e) => {
                    let _ = self.disarm().await;
                    let _ = self.store.rollback().await;
                    self.appended.clear();
                    return Err(e);
                }
            };
            crate::failpoint("sink.after_publish");
            tracing::info!(
                "kafka: produced {upserts} upserts and {tombstones} tombstones to topic {}",
                self.config.topic
            );
            self.store.note(format!(
                "produced {upserts} upserts and {tombstones} tombstones to topic {}",
                self.config.topic
            ));
        } else if self.codec.is_some() {
            self.create_missing_topic().await?;
        }
        self.disarm().await?;
        self.appended.clear();
        // The records are out; a view that fails to commit now is caught up by the next run.
        self.store.commit(also).await
    }

    async fn rollback(&mut self) -> Result<()> {
        self.tracking = Tracking::Off;
        self.appended.clear();
        self.store.rollback().await
    }

    fn in_transaction(&self) -> bool {
        self.store.in_transaction()
    }

    fn set_fence(&mut self, fence: String) {
        self.store.set_fence(fence);
    }

    async fn insert_from_staging(
        &mut self,
        staging: &TableName,
        columns: &[String],
    ) -> Result<u64> {
        if self.config.append_only {
            let rows = self.store.staging_row_count(staging).await?;
            self.appended.push(staging.clone());
            return Ok(rows);
        }
        self.codec("insert")?;
        self.store.insert_from_staging(staging, columns).await
    }

    async fn delete_rows(
        &mut self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
    ) -> Result<u64> {
        self.refuse_on_log("delete")?;
        self.store
            .delete_rows(staging, key, key_match, filter)
            .await
    }

    async fn update_rows(
        &mut self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
        assignments: &[(String, Value)],
    ) -> Result<u64> {
        self.refuse_on_log("update")?;
        self.store
            .update_rows(staging, key, key_match, filter, assignments)
            .await
    }

    async fn insert_new_rows(
        &mut self,
        staging: &TableName,
        columns: &[String],
        key: &[String],
        filter: &[Term],
        extra: &[(String, Value)],
    ) -> Result<u64> {
        self.refuse_on_log("insert new rows")?;
        self.store
            .insert_new_rows(staging, columns, key, filter, extra)
            .await
    }

    async fn check_target_keys(
        &mut self,
        schema: &Schema,
        key: &[String],
        filter: &[Term],
    ) -> Result<KeyCheck> {
        self.refuse_on_log("check target keys")?;
        self.store.check_target_keys(schema, key, filter).await
    }

    async fn delete_where(&mut self, filter: &[Term]) -> Result<u64> {
        self.refuse_on_log("delete")?;
        self.store.delete_where(filter).await
    }

    async fn replace_partitions(
        &mut self,
        _staging: &TableName,
        _columns: &[String],
        _column: &str,
    ) -> Result<Option<(u64, u64)>> {
        Ok(None)
    }

    async fn truncate_and_insert(
        &mut self,
        staging: &TableName,
        columns: &[String],
    ) -> Result<u64> {
        self.refuse_on_log("truncate")?;
        self.store.truncate_and_insert(staging, columns).await
    }

    async fn swap(&mut self, _staging: &TableName) -> Result<()> {
        Err(Error::new(
            Kind::Unsupported,
            "a Kafka topic has no rename swap (rename-swap capability is false): replace its rows instead",
        ))
    }

    fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    fn note(&mut self, step: String) {
        self.store.note(step);
    }

    fn statements(&self) -> Vec<String> {
        self.store.statements()
    }

    async fn drop_leftovers(&mut self) -> bool {
        self.tracking = Tracking::Off;
        self.appended.clear();
        self.store.drop_leftovers().await
    }

    async fn reconnect(&mut self) -> Result<()> {
        self.tracking = Tracking::Off;
        self.store.reconnect().await
    }

    async fn drop_staging_of(&mut self, run_ids: &[String]) -> Result<usize> {
        self.store.drop_staging_of(run_ids).await
    }

    async fn abandon(&mut self) -> Result<()> {
        self.tracking = Tracking::Off;
        self.appended.clear();
        self.store.abandon().await
    }
}
