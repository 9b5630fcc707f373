//! The behaviour model against real databases, through the host's own connectors: seeding
//! a source generation, applying the next one, reading the target back and checking it
//! against the oracle. Works for any connector the host has, so a new connector is tested
//! by the same model the moment it exists.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::model::{self, ID, ModelConfig};
use super::oracle::{Expected, Key, Oracle, first_difference, key_of, sort_rows};
use crate::connectors::{self, Open, SqlSession, Statement, TableName, render};
use crate::error::{Error, Kind, Result};
use crate::manifest::{Connection, Manifest};
use crate::model::{BATCH_ROWS, Column, DataType, Schema, Value, batch_of, rows_of};

/// Waits until every PostgreSQL transaction that started before now has ended (the
/// cluster's snapshot xmin passed this moment's next transaction id), for up to a minute.
#[cfg(feature = "postgres")]
async fn wait_for_older_transactions(s: &mut dyn SqlSession) -> Result<()> {
    async fn xid(s: &mut dyn SqlSession, f: &str) -> Result<i64> {
        let sql = format!("SELECT {f}(pg_current_snapshot())::text::bigint");
        let rows = s.query(&Statement::new(sql), &[DataType::Int64]).await?;
        match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(x)) => Ok(*x),
            other => Err(Error::source(format!("{f} returned {other:?}"))),
        }
    }
    let next = xid(s, "pg_snapshot_xmax").await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while xid(s, "pg_snapshot_xmin").await? < next {
        if std::time::Instant::now() > deadline {
            return Err(Error::source(format!(
                "a PostgreSQL transaction older than xid {next} is still open after 60 s (see pg_stat_activity): an xmin run would not load the seeded rows"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Replaces the records of the mock API at `url` (`PUT`, see `xtask/src/rest_mock.rs`)
/// with `rows`, as the REST source reads them back.
#[cfg(feature = "rest")]
async fn publish(url: &str, schema: &Schema, rows: &[Vec<Value>]) -> Result<()> {
    use crate::connectors::json::json_of;
    let records: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            schema
                .columns
                .iter()
                .zip(row)
                .map(|(c, v)| (c.name.clone(), json_of(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    let body = serde_json::to_vec(&records).map_err(Error::internal)?;
    let base = url.split('?').next().unwrap_or(url);
    let sent = reqwest::Client::new()
        .put(base)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| Error::source(format!("seeding the mock API at {base}: {e}")))?;
    if !sent.status().is_success() {
        return Err(Error::source(format!(
            "seeding the mock API at {base}: HTTP {}",
            sent.status()
        )));
    }
    Ok(())
}

/// The model table of one pipeline: where its source and target live.
#[derive(Debug)]
pub struct Behaviour<'a> {
    pub cfg: ModelConfig,
    /// The model's columns the source carries.
    pub schema: Schema,
    /// Where each of them is in a model row.
    picks: Vec<usize>,
    /// Indexes of the key columns in `schema`.
    pub key: Vec<usize>,
    source: &'a Connection,
    source_table: TableName,
    sink: &'a Connection,
    sink_table: TableName,
}

impl<'a> Behaviour<'a> {
    /// The model over the manifest's source and sink tables.
    pub fn new(manifest: &'a Manifest, cfg: ModelConfig) -> Self {
        let mut schema = model::schema(&cfg);
        let all = schema.names();
        // A source that declares its columns (REST, Kafka) carries those of the model only.
        let declared = match &manifest.source {
            #[cfg(feature = "rest")]
            Connection::Rest(c) => Some(&c.columns),
            #[cfg(feature = "kafka")]
            Connection::Kafka(c) => Some(&c.columns),
            _ => None,
        };
        if let Some(declared) = declared {
            schema
                .columns
                .retain(|col| declared.iter().any(|d| d.name == col.name));
        }
        let picks = schema
            .columns
            .iter()
            .filter_map(|c| all.iter().position(|n| *n == c.name))
            .collect();
        let key = model::key(&cfg)
            .iter()
            .filter_map(|k| schema.columns.iter().position(|c| &c.name == k))
            .collect();
        Behaviour {
            cfg,
            schema,
            picks,
            key,
            source: &manifest.source,
            source_table: manifest.source_table(),
            sink: &manifest.sink,
            sink_table: manifest.sink_table(),
        }
    }

    /// Generation `number`'s rows, written to the source: generation 0 replaces the source
    /// table, later ones change it in place (deletes, then changed and new rows).
    /// On PostgreSQL it returns once every transaction older than the seeding has ended, so
    /// an xmin run sees all of it (xmin loads a transaction's rows only then).
    pub async fn seed(&self, number: u32) -> Result<Vec<Vec<Value>>> {
        let rows: Vec<Vec<Value>> = model::generation(&self.cfg, number)
            .into_iter()
            .map(|r| self.picks.iter().map(|&i| r[i].clone()).collect())
            .collect();
        #[cfg(feature = "rest")]
        if let Connection::Rest(c) = self.source {
            publish(&c.url, &self.schema, &rows).await?;
            return Ok(rows);
        }
        #[cfg(feature = "kafka")]
        if let Connection::Kafka(c) = self.source {
            let before: Vec<Vec<Value>> = match number {
                0 => Vec::new(),
                n => model::generation(&self.cfg, n - 1)
                    .into_iter()
                    .map(|r| self.picks.iter().map(|&i| r[i].clone()).collect())
                    .collect(),
            };
            Box::pin(kafka_topic::seed(c, &self.schema, number, &before, &rows)).await?;
            return Ok(rows);
        }
        let mut s = connectors::connect(self.source, Kind::Source, Open::Create).await?;
        #[cfg(feature = "mssql")]
        if let Connection::Mssql(c) = self.source
            && let Some(feed) = &c.change_feed
        {
            // Boxed: this rare path must not grow every caller's future.
            Box::pin(self.write_captured(s.as_mut(), number, &rows, feed)).await?;
            return Ok(rows);
        }
        self.write(s.as_mut(), number, &rows).await?;
        #[cfg(feature = "postgres")]
        if matches!(self.source, crate::manifest::Connection::Postgres(_)) {
            wait_for_older_transactions(s.as_mut()).await?;
        }
        Ok(rows)
    }

    /// Writes a generation of a SQL Server source whose changes the capture instance
    /// `feed` reads: enabled on the table the first generation creates, waited for after
    /// every later one.
    #[cfg(feature = "mssql")]
    async fn write_captured(
        &self,
        s: &mut dyn SqlSession,
        number: u32,
        rows: &[Vec<Value>],
        feed: &crate::connectors::mssql::config::ChangeFeedConfig,
    ) -> Result<()> {
        if number == 0 {
            self.write(s, number, rows).await?;
            return capture::enable(s, &self.source_table, feed).await;
        }
        let before = capture::max_lsn(s).await?;
        self.write(s, number, rows).await?;
        capture::wait(s, before).await
    }

    async fn write(&self, s: &mut dyn SqlSession, number: u32, rows: &[Vec<Value>]) -> Result<()> {
        let table = s.dialect().table_ref(&self.source_table);
        if number == 0 {
            if let Some(sql) = render::create_namespace(s.dialect(), &self.source_table) {
                s.execute(&Statement::new(sql)).await?;
            }
            s.execute(&Statement::new(format!("DROP TABLE IF EXISTS {table}")))
                .await?;
            s.execute(&Statement::new(s.dialect().create_table(
                &self.source_table,
                &self.schema,
                &self.schema.primary_key,
                crate::connectors::dialect::NewTable::Target,
            )))
            .await?;
            insert(s, &self.source_table, &self.schema, rows).await?;
            return Ok(());
        }
        let id = |r: &Vec<Value>| match r[ID] {
            Value::Int(i) => i,
            _ => 0,
        };
        let before: BTreeMap<i64, Vec<Value>> = model::generation(&self.cfg, number - 1)
            .into_iter()
            .map(|r| (id(&r), r))
            .collect();
        let after: BTreeMap<i64, &Vec<Value>> = rows.iter().map(|r| (id(r), r)).collect();
        // Deleted rows go, changed rows are UPDATEd in place (what change feeds and xmin
        // see in production), new rows are inserted. Without UPDATE (ClickHouse), changed
        // rows are deleted and inserted again, as people load such tables.
        let transactional = s.transactional();
        let changed = |r: &&Vec<Value>| before.get(&id(r)).is_some_and(|old| old != *r);
        let gone: Vec<String> = before
            .keys()
            .filter(|i| !after.contains_key(i))
            .copied()
            .chain(rows.iter().filter(|r| !transactional && changed(r)).map(id))
            .map(|i| i.to_string())
            .collect();
        let delete = if transactional {
            format!("DELETE FROM {table}")
        } else {
            format!("ALTER TABLE {table} DELETE")
        };
        for ids in gone.chunks(1_000) {
            s.execute(&Statement::new(format!(
                "{delete} WHERE id IN ({})",
                ids.join(", ")
            )))
            .await?;
        }
        if !transactional {
            let again: Vec<Vec<Value>> = rows
                .iter()
                .filter(|r| !before.contains_key(&id(r)) || changed(r))
                .cloned()
                .collect();
            insert(s, &self.source_table, &self.schema, &again).await?;
            return Ok(());
        }
        let names = self.schema.names();
        let set: Vec<String> = names
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, n)| format!("{} = ${}", s.dialect().quote_ident(n), i + 1))
            .collect();
        let update = format!("UPDATE {table} SET {} WHERE id = $1", set.join(", "));
        s.begin().await?;
        for row in rows.iter().filter(changed) {
            let stmt = render::with_placeholders(
                s.dialect(),
                Statement {
                    sql: update.clone(),
                    params: row.clone(),
                },
            )?;
            if let Err(e) = s.execute(&stmt).await {
                let _ = s.rollback().await;
                return Err(e);
            }
        }
        s.commit().await?;
        let fresh: Vec<Vec<Value>> = rows
            .iter()
            .filter(|r| !before.contains_key(&id(r)))
            .cloned()
            .collect();
        insert(s, &self.source_table, &self.schema, &fresh).await?;
        Ok(())
    }

    /// Reads the target's model columns (plus `extra`, appended) in no particular order.
    pub async fn target(&self, extra: &[Column]) -> Result<Vec<Vec<Value>>> {
        let mut columns = self.schema.clone();
        columns.columns.extend(extra.iter().cloned());
        #[cfg(feature = "kafka")]
        if let Connection::Kafka(c) = self.sink {
            let key: Vec<String> = if c.append_only {
                Vec::new()
            } else {
                self.key
                    .iter()
                    .map(|&i| columns.columns[i].name.clone())
                    .collect()
            };
            return Box::pin(kafka_topic::table(c, &columns, &key)).await;
        }
        let mut s = connectors::connect(self.sink, Kind::Sink, Open::Existing).await?;
        let stmt = Statement::new(format!(
            "SELECT {} FROM {}",
            s.dialect().column_list(&columns.names()),
            s.dialect().table_ref(&self.sink_table)
        ));
        let (tx, mut rx) = mpsc::channel(crate::model::CHANNEL_BATCHES);
        let collect = async {
            let mut batches = Vec::new();
            while let Some(b) = rx.recv().await {
                batches.push(b);
            }
            batches
        };
        let (read, batches) = tokio::join!(s.read(&stmt, &columns, tx), collect);
        read?;
        Ok(rows_of(&batches, &columns))
    }

    /// Compares the target with what `oracle` expects; the error names the first
    /// differing key and columns. Returns the target's row count.
    pub async fn check(&self, oracle: &Oracle, label: &str) -> Result<usize> {
        let mismatch = |what: String| Error::new(Kind::Internal, format!("{label}: {what}"));
        match oracle.expected() {
            Expected::Rows(expected) => {
                let mut actual = self.target(&[]).await?;
                sort_rows(&mut actual, &self.key);
                match first_difference(&actual, &expected, &self.schema.names(), &self.key) {
                    None => Ok(actual.len()),
                    Some(d) => Err(mismatch(d)),
                }
            }
            Expected::Versions(expected) => {
                let extra = [
                    column("__dpone__valid_from_at", DataType::TimestampTz),
                    column("__dpone__is_current", DataType::Boolean),
                ];
                let rows = self.target(&extra).await?;
                let n = self.schema.columns.len();
                let mut actual: BTreeMap<Key, Vec<(Value, Vec<Value>, bool)>> = BTreeMap::new();
                for r in &rows {
                    let key = key_of(r, &self.key);
                    let current = r[n + 1] == Value::Boolean(true);
                    actual
                        .entry(key)
                        .or_default()
                        .push((r[n].clone(), r[..n].to_vec(), current));
                }
                // By start; versions that started in the same instant (a sink that keeps
                // whole seconds, two runs in one second) put the current one last.
                for versions in actual.values_mut() {
                    versions.sort_by(|a, b| {
                        crate::model::compare_values(&a.0, &b.0)
                            .unwrap_or(std::cmp::Ordering::Equal)
                            .then(a.2.cmp(&b.2))
                    });
                }
                let columns = self.schema.names();
                for (key, want) in &expected {
                    let got = actual.get(key).map(Vec::as_slice).unwrap_or_default();
                    let got_rows: Vec<Vec<Value>> = got.iter().map(|v| v.1.clone()).collect();
                    let want_rows: Vec<Vec<Value>> = want.iter().map(|v| v.row.clone()).collect();
                    if let Some(d) = first_difference(&got_rows, &want_rows, &columns, &self.key) {
                        return Err(mismatch(format!("versions of key {key:?}: {d}")));
                    }
                    let flags: Vec<bool> = got.iter().map(|v| v.2).collect();
                    let want_flags: Vec<bool> = want.iter().map(|v| v.current).collect();
                    if flags != want_flags {
                        return Err(mismatch(format!(
                            "key {key:?}: current flags {flags:?}, expected {want_flags:?}"
                        )));
                    }
                }
                if let Some(extra) = actual.keys().find(|k| !expected.contains_key(*k)) {
                    return Err(mismatch(format!("unexpected key {extra:?} in the target")));
                }
                Ok(rows.len())
            }
        }
    }
}

fn column(name: &str, data_type: DataType) -> Column {
    Column {
        name: name.into(),
        data_type,
        nullable: true,
    }
}

async fn insert(
    s: &mut dyn SqlSession,
    table: &TableName,
    schema: &Schema,
    rows: &[Vec<Value>],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel(crate::model::CHANNEL_BATCHES);
    let send = async move {
        for chunk in rows.chunks(BATCH_ROWS) {
            let batch = batch_of(schema, chunk)?;
            if tx.send(batch).await.is_err() {
                break;
            }
        }
        Ok::<(), Error>(())
    };
    let (sent, written) = tokio::join!(send, s.bulk_insert(table, schema, rx));
    sent?;
    let written = written?;
    if written != rows.len() as u64 {
        return Err(Error::internal(format!(
            "seeding {table}: wrote {written} of {} rows",
            rows.len()
        )));
    }
    Ok(())
}

/// SQL Server cdc cases: the capture instance a case's manifest names, enabled on the model
/// table each first generation creates (its `DROP TABLE` removed the previous one), and
/// after each later generation a wait until the capture job has read it from the log.
#[cfg(feature = "mssql")]
mod capture {
    use crate::connectors::mssql::config::ChangeFeedConfig;
    use crate::connectors::{SqlSession, Statement, TableName};
    use crate::error::{Error, Result};
    use crate::model::{DataType, Value};

    /// How long the capture job may take to read a generation (it polls every 5 s).
    const CAPTURE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

    pub async fn max_lsn(s: &mut dyn SqlSession) -> Result<Value> {
        let rows = s
            .query(
                &Statement::new("SELECT sys.fn_cdc_get_max_lsn()"),
                &[DataType::Bytes],
            )
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or(Value::Null))
    }

    pub async fn enable(
        s: &mut dyn SqlSession,
        table: &TableName,
        feed: &ChangeFeedConfig,
    ) -> Result<()> {
        s.execute(&Statement::new(
            "IF NOT EXISTS (SELECT 1 FROM sys.databases WHERE database_id = DB_ID() AND is_cdc_enabled = 1) \
             EXEC sys.sp_cdc_enable_db",
        ))
        .await?;
        s.execute(&Statement {
            sql: "EXEC sys.sp_cdc_enable_table @source_schema = @P1, @source_name = @P2, \
                  @role_name = NULL, @capture_instance = @P3, @supports_net_changes = @P4"
                .into(),
            params: vec![
                Value::Text(table.schema.clone().unwrap_or_else(|| "dbo".into())),
                Value::Text(table.name.clone()),
                Value::Text(feed.capture_instance.clone()),
                Value::Boolean(feed.net_changes),
            ],
        })
        .await
        .map(drop)
    }

    /// Waits until the maximum LSN has moved past `before` and then held still for longer
    /// than the capture job's polling interval: the generation's changes are all captured.
    pub async fn wait(s: &mut dyn SqlSession, before: Value) -> Result<()> {
        let started = std::time::Instant::now();
        let mut last = before.clone();
        let mut still_since = std::time::Instant::now();
        loop {
            let now = max_lsn(s).await?;
            if now != last {
                last = now;
                still_since = std::time::Instant::now();
            } else if last != before && still_since.elapsed() > std::time::Duration::from_secs(6) {
                return Ok(());
            }
            if started.elapsed() > CAPTURE_WAIT {
                return Err(Error::source(format!(
                    "the SQL Server capture job did not read the generation within {} s (is SQL Server Agent running?)",
                    CAPTURE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

/// A Kafka topic as the model's source (one record per row change, keyed by `id`) and as a
/// target (its rows as a table: by key the last record wins).
#[cfg(feature = "kafka")]
mod kafka_topic {
    use std::collections::BTreeMap;

    use crate::connectors::kafka::client::{KafkaClient, TopicProducer};
    use crate::connectors::kafka::config::KafkaConfig;
    use crate::connectors::kafka::types::Codec;
    use crate::error::{Kind, Result};
    use crate::matrix::model::ID;
    use crate::model::{Schema, Value};

    /// Partitions of the model's source topic: more than one, so reads merge partitions.
    const PARTITIONS: i32 = 3;

    /// Generation 0 recreates the topic with every row; a later one produces its changed
    /// and new rows and a tombstone for each deleted one, as a change stream would.
    pub async fn seed(
        c: &KafkaConfig,
        schema: &Schema,
        number: u32,
        before: &[Vec<Value>],
        rows: &[Vec<Value>],
    ) -> Result<()> {
        let client = KafkaClient::new(c, Kind::Source);
        let key = vec![schema.columns[ID].name.clone()];
        let codec = Codec::new(schema, &key)?;
        let id = |r: &Vec<Value>| format!("{:?}", r[ID]);
        if number == 0 {
            client.delete_topic(&c.topic).await?;
            client
                .create_topic(&c.topic, PARTITIONS, None, true)
                .await?;
        }
        let before: BTreeMap<String, &Vec<Value>> = before.iter().map(|r| (id(r), r)).collect();
        let mut producer = TopicProducer::open(&client, &c.topic, None).await?;
        let after: BTreeMap<String, &Vec<Value>> = rows.iter().map(|r| (id(r), r)).collect();
        for (k, row) in &before {
            if !after.contains_key(k) {
                producer
                    .send(codec.encode_key(row)?.as_deref(), None)
                    .await?;
            }
        }
        for row in rows {
            if before.get(&id(row)) != Some(&row) {
                let value = codec.encode_value(row)?;
                producer
                    .send(codec.encode_key(row)?.as_deref(), Some(&value))
                    .await?;
            }
        }
        producer.commit().await
    }

    /// The rows the topic holds, as a table of `columns` keyed by `key` (none: every record).
    pub async fn table(
        c: &KafkaConfig,
        columns: &Schema,
        key: &[String],
    ) -> Result<Vec<Vec<Value>>> {
        let client = KafkaClient::new(c, Kind::Sink);
        if client.partitions(&c.topic).await?.is_none() {
            return Ok(Vec::new());
        }
        let codec = Codec::new(columns, key)?;
        crate::connectors::kafka::read_table(&client, &c.topic, &codec).await
    }
}
