//! The limit of the PostgreSQL -> Kafka benchmark (`cargo xtask bench --only kafka`): a raw
//! librdkafka client with nothing of dpone in it, linked to the same librdkafka build.
//!
//! - `produce <brokers> <topic> <file>`: creates `topic` (1 partition, compacted, as dpone's
//!   first run does), then produces each line `key<TAB>value` of `file` as one record with
//!   dpone's producer settings (idempotent, lz4, `linger.ms` 20) and waits for every
//!   delivery; fails if any record was not delivered;
//! - `dump <brokers> <topic> <file>`: writes every record of `topic` (read_committed, from the
//!   start to the end of each partition) to `file` as `key<TAB>value` lines.
//!
//! Debian's `kcat` would be the obvious tool, but its librdkafka (2.0) cannot negotiate API
//! versions with the local broker.

use std::error::Error;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["produce", brokers, topic, file] => produce(brokers, topic, file),
        ["dump", brokers, topic, file] => dump(brokers, topic, file),
        _ => Err("usage: kafka_raw_client produce|dump <brokers> <topic> <file>".into()),
    }
}

/// Counts records the broker did not take.
#[derive(Debug, Default)]
struct Failures(AtomicU64);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn produce(brokers: &str, topic: &str, file: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let created = runtime.block_on(admin.create_topics([&new], &AdminOptions::new()))?;
    for result in created {
        result.map_err(|(t, code)| format!("create topic {t}: {code}"))?;
    }

    let producer: BaseProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create_with_context(Failures::default())?;
    let lines = BufReader::with_capacity(1 << 20, File::open(file)?);
    for line in lines.split(b'\n') {
        let line = line?;
        let tab = line
            .iter()
            .position(|b| *b == b'\t')
            .ok_or("a line without a tab")?;
        let (key, value) = (&line[..tab], &line[tab + 1..]);
        loop {
            match producer.send(BaseRecord::to(topic).key(key).payload(value)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(TIMEOUT)?;
    match producer.context().0.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => Err(format!("{n} records were not delivered").into()),
    }
}

fn dump(brokers: &str, topic: &str, file: &str) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kafka_raw_client")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("topic {topic} does not exist"))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, i32::try_from(p)?, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut out = BufWriter::with_capacity(1 << 20, File::create(file)?);
    let mut open = partitions;
    let mut idle = Duration::ZERO;
    while open > 0 {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = Duration::ZERO;
                out.write_all(m.key().unwrap_or_default())?;
                out.write_all(b"\t")?;
                out.write_all(m.payload().unwrap_or_default())?;
                out.write_all(b"\n")?;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e.into()),
            None => {
                idle += Duration::from_millis(200);
                if idle > TIMEOUT {
                    return Err(format!("no record and no end of partition for {TIMEOUT:?}").into());
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
