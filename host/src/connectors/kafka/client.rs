//! The rdkafka clients of a `kind: kafka` section: topic administration, bounded reads of
//! partitions, and the producer of a sink's finalization.
//!
//! librdkafka's calls block (up to their timeouts): they run on tokio's blocking threads,
//! never on the runtime's workers. A consumer lives on the blocking thread that reads with
//! it and is unassigned and dropped there (an async consumer dropped mid-stream can hang).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::config::{KafkaConfig, TRANSACTION_TIMEOUT_MS};
use super::types::{Offsets, Record};
use crate::error::{Error, Kind, Result};

/// How long one metadata, admin or transaction call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A read that receives neither a record nor the end of a partition for this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Records handed from the reading thread at a time.
const RECORD_CHUNK: usize = 2_000;

/// The clients of one manifest section, in role `role` (errors are of that kind).
#[derive(Debug, Clone)]
pub struct KafkaClient {
    config: KafkaConfig,
    role: Kind,
}

impl KafkaClient {
    pub fn new(config: &KafkaConfig, role: Kind) -> Self {
        KafkaClient {
            config: config.clone(),
            role,
        }
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::new(
            self.role,
            format!("kafka {} ({what}): {e}", self.config.brokers),
        )
    }

    /// Brokers, TLS, SASL and the manifest's `properties`: what every client shares.
    fn client_config(&self) -> ClientConfig {
        let c = &self.config;
        let mut out = ClientConfig::new();
        out.set("bootstrap.servers", &c.brokers);
        let protocol = match (c.tls, c.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        out.set("security.protocol", protocol);
        if let Some(sasl) = &c.sasl {
            out.set("sasl.mechanism", &sasl.mechanism);
            out.set("sasl.username", sasl.username.expose());
            out.set("sasl.password", sasl.password.expose());
        }
        // Topics are created on purpose (ensure-target), never by a metadata request.
        out.set("allow.auto.create.topics", "false");
        for (k, v) in &c.properties {
            out.set(k, v);
        }
        out
    }

    /// Runs a blocking librdkafka call off the runtime's workers.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        call: impl FnOnce(KafkaClient) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || call(me))
            .await
            .map_err(|e| Error::internal(format!("kafka {what}: {e}")))?
    }

    fn consumer(&self) -> Result<BaseConsumer> {
        let mut config = self.client_config();
        config
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("group.id", "dpone-reader");
        config.create().map_err(|e| self.error("consumer", e))
    }

    /// The number of partitions of `topic`; `None` when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<i32>> {
        let topic = topic.to_string();
        self.blocking("metadata", move |me| {
            let consumer = me.consumer()?;
            let metadata = consumer
                .fetch_metadata(Some(&topic), CALL_TIMEOUT)
                .map_err(|e| me.error("metadata", e))?;
            let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Ok(None);
            };
            match t.error() {
                Some(e)
                    if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition =>
                {
                    Ok(None)
                }
                Some(e) => Err(me.error(
                    "metadata",
                    format!("topic {topic}: {:?}", RDKafkaErrorCode::from(e)),
                )),
                None if t.partitions().is_empty() => Ok(None),
                None => Ok(Some(t.partitions().len() as i32)),
            }
        })
        .await
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        self.client_config()
            .create()
            .map_err(|e| self.error("admin client", e))
    }

    fn admin_options() -> AdminOptions {
        AdminOptions::new().request_timeout(Some(CALL_TIMEOUT))
    }

    /// The topic's `cleanup.policy` as the broker reports it (`delete` when not set).
    pub async fn cleanup_policy(&self, topic: &str) -> Result<String> {
        let admin = self.admin()?;
        let results = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &Self::admin_options())
            .await
            .map_err(|e| self.error("describe configs", e))?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| self.error("describe configs", "no result"))?
            .map_err(|e| self.error("describe configs", format!("topic {topic}: {e}")))?;
        Ok(resource
            .get("cleanup.policy")
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| "delete".into()))
    }

    /// Creates `topic` with `partitions`, the replication factor (`None`: the broker's)
    /// and `cleanup.policy=compact` when `compacted`. A topic that already exists (another
    /// run created it first) is not an error.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: Option<u16>,
        compacted: bool,
    ) -> Result<()> {
        let admin = self.admin()?;
        let replication = match replication {
            Some(n) => TopicReplication::Fixed(i32::from(n)),
            None => TopicReplication::Fixed(-1),
        };
        let mut new = NewTopic::new(topic, partitions, replication);
        if compacted {
            new = new.set("cleanup.policy", "compact");
        }
        let results = admin
            .create_topics(&[new], &Self::admin_options())
            .await
            .map_err(|e| self.error("create topic", e))?;
        match results.into_iter().next() {
            Some(Ok(_)) | None => Ok(()),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
            Some(Err((_, code))) => Err(self.error("create topic", format!("{topic}: {code}"))),
        }
    }

    /// Deletes `topic` (tests and the matrix start from no topic); a missing one is fine.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let admin = self.admin()?;
        let results = admin
            .delete_topics(&[topic], &Self::admin_options())
            .await
            .map_err(|e| self.error("delete topic", e))?;
        match results.into_iter().next() {
            Some(Ok(_)) | None => Ok(()),
            Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => Ok(()),
            Some(Err((_, code))) => Err(self.error("delete topic", format!("{topic}: {code}"))),
        }
    }

    /// Per partition of `topic`, the first offset it still holds and the offset after its
    /// last record (empty when the topic does not exist).
    pub async fn watermarks(
        &self,
        topic: &str,
    ) -> Result<std::collections::BTreeMap<i32, (i64, i64)>> {
        let Some(partitions) = self.partitions(topic).await? else {
            return Ok(std::collections::BTreeMap::new());
        };
        let topic = topic.to_string();
        self.blocking("watermarks", move |me| {
            let consumer = me.consumer()?;
            (0..partitions)
                .map(|p| {
                    let (low, high) = consumer
                        .fetch_watermarks(&topic, p, CALL_TIMEOUT)
                        .map_err(|e| me.error("watermarks", e))?;
                    Ok((p, (low.max(0), high.max(0))))
                })
                .collect()
        })
        .await
    }

    /// Reads every partition of `topic` from `start` (a partition not in it from its first
    /// offset) to the end it has when the read reaches it, with `isolation.level =
    /// read_committed`, handing records on in offset order per partition; returns the next
    /// offset of every partition (the position a later read continues from). Stops quietly
    /// when `tx` is gone.
    pub async fn read(
        &self,
        topic: &str,
        start: &Offsets,
        tx: mpsc::Sender<Vec<Record>>,
    ) -> Result<Offsets> {
        let Some(partitions) = self.partitions(topic).await? else {
            return Err(Error::new(
                self.role,
                format!("kafka topic {topic} does not exist"),
            ));
        };
        let topic = topic.to_string();
        let start = start.clone();
        self.blocking("read", move |me| {
            me.read_blocking(&topic, partitions, &start, &tx)
        })
        .await
    }

    fn read_blocking(
        &self,
        topic: &str,
        partitions: i32,
        start: &Offsets,
        tx: &mpsc::Sender<Vec<Record>>,
    ) -> Result<Offsets> {
        let consumer = self.consumer()?;
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let offset = start
                .get(&p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            assignment
                .add_partition_offset(topic, p, offset)
                .map_err(|e| self.error("assign", e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| self.error("assign", e))?;
        let mut next: Offsets = start.clone();
        let mut open: Vec<bool> = vec![true; partitions as usize];
        let mut chunk = Vec::with_capacity(RECORD_CHUNK);
        let mut progress = Instant::now();
        while open.iter().any(|o| *o) {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    progress = Instant::now();
                    let p = m.partition();
                    next.insert(p, m.offset() + 1);
                    chunk.push(Record {
                        partition: p,
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                    });
                    if chunk.len() >= RECORD_CHUNK
                        && tx.blocking_send(std::mem::take(&mut chunk)).is_err()
                    {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    progress = Instant::now();
                    if let Some(o) = open.get_mut(p as usize) {
                        *o = false;
                    }
                }
                Some(Err(e)) => return Err(self.error(&format!("read {topic}"), e)),
                None if progress.elapsed() > STALL_TIMEOUT => {
                    let waiting: Vec<String> = (0..partitions)
                        .filter(|p| open[*p as usize])
                        .map(|p| format!("{p} (at offset {})", next.get(&p).copied().unwrap_or(0)))
                        .collect();
                    return Err(self.error(
                        &format!("read {topic}"),
                        format!(
                            "no record and no end of partition for {} s on partitions {}",
                            STALL_TIMEOUT.as_secs(),
                            waiting.join(", ")
                        ),
                    ));
                }
                None => {}
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
        // A partition read from its beginning that held nothing continues from its first
        // offset; the consumer's position says where the others stand.
        let position = consumer.position().map_err(|e| self.error("position", e))?;
        for p in 0..partitions {
            if let Some(Offset::Offset(o)) = position.find_partition(topic, p).map(|e| e.offset()) {
                let at = next.entry(p).or_insert(o);
                *at = (*at).max(o);
            } else if let std::collections::btree_map::Entry::Vacant(v) = next.entry(p) {
                let (low, _) = consumer
                    .fetch_watermarks(topic, p, CALL_TIMEOUT)
                    .map_err(|e| self.error("watermarks", e))?;
                v.insert(low.max(0));
            }
        }
        let _ = consumer.unassign();
        Ok(next)
    }
}

/// Delivery reports of a producer: the first failure, which fails the finalization.
#[derive(Debug, Default)]
pub struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| format!("partition {}: {e}", m.partition()));
        }
    }
}

/// A producer to one topic: in a Kafka transaction (`transactional.id`: a zombie producer of
/// a crashed run with the same id is fenced when this one starts), or idempotent.
pub struct TopicProducer {
    client: KafkaClient,
    topic: String,
    inner: Arc<ThreadedProducer<Deliveries>>,
    transactional: bool,
    sent: u64,
}

impl std::fmt::Debug for TopicProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicProducer")
            .field("topic", &self.topic)
            .field("transactional", &self.transactional)
            .finish_non_exhaustive()
    }
}

impl TopicProducer {
    /// Opens the producer and, with `transactional_id`, begins its transaction.
    pub async fn open(
        client: &KafkaClient,
        topic: &str,
        transactional_id: Option<String>,
    ) -> Result<Self> {
        let mut config = client.client_config();
        config.set("enable.idempotence", "true");
        // Batching defaults a manifest's `properties` may tune.
        for (key, value) in [("linger.ms", "20"), ("compression.type", "lz4")] {
            if !client.config.properties.contains_key(key) {
                config.set(key, value);
            }
        }
        if let Some(id) = &transactional_id {
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string());
        }
        let inner: ThreadedProducer<Deliveries> = config
            .create_with_context(Deliveries::default())
            .map_err(|e| client.error("producer", e))?;
        let inner = Arc::new(inner);
        let producer = TopicProducer {
            client: client.clone(),
            topic: topic.to_string(),
            inner,
            transactional: transactional_id.is_some(),
            sent: 0,
        };
        if producer.transactional {
            producer
                .transaction_call("begin the transaction", |p| {
                    p.init_transactions(CALL_TIMEOUT)?;
                    p.begin_transaction()
                })
                .await?;
        }
        Ok(producer)
    }

    async fn transaction_call(
        &self,
        what: &'static str,
        call: impl FnOnce(&ThreadedProducer<Deliveries>) -> rdkafka::error::KafkaResult<()>
        + Send
        + 'static,
    ) -> Result<()> {
        let inner = self.inner.clone();
        self.client
            .blocking(what, move |me| call(&inner).map_err(|e| me.error(what, e)))
            .await
    }

    /// Queues one record (`value` `None`: a tombstone), waiting while the local queue is full.
    pub async fn send(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<()> {
        self.send_with(key, value, None).await
    }

    async fn send_with(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        loop {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic);
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(v) = value {
                record = record.payload(v);
            }
            match self.inner.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(self.client.error(&format!("produce to {}", self.topic), e));
                }
            }
        }
    }

    /// Queues a record that did not decode, as it was, with headers saying where it came
    /// from and why it was set aside.
    pub async fn send_dead_letter(
        &mut self,
        record: &Record,
        topic: &str,
        why: &str,
    ) -> Result<()> {
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "dpone.topic",
                value: Some(topic),
            })
            .insert(Header {
                key: "dpone.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "dpone.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "dpone.error",
                value: Some(why),
            });
        self.send_with(
            record.key.as_deref(),
            record.value.as_deref(),
            Some(headers),
        )
        .await
    }

    /// Records queued so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Delivers every queued record and commits the transaction (or, without one, waits
    /// for every delivery); fails when any record was not delivered.
    pub async fn commit(self) -> Result<()> {
        if self.transactional {
            self.transaction_call("commit the transaction", |p| {
                p.commit_transaction(CALL_TIMEOUT)
            })
            .await?;
        } else {
            self.transaction_call("flush", |p| p.flush(CALL_TIMEOUT))
                .await?;
        }
        let failed = self
            .inner
            .context()
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match failed {
            Some(why) => Err(self.client.error(
                &format!("deliver to {}", self.topic),
                format!("a record was not delivered: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// Aborts the transaction: none of its records become visible to read_committed
    /// consumers. Without a transaction, what was delivered stays.
    pub async fn abort(self) -> Result<()> {
        if self.transactional {
            self.transaction_call("abort the transaction", |p| {
                p.abort_transaction(CALL_TIMEOUT)
            })
            .await?;
        }
        Ok(())
    }
}
