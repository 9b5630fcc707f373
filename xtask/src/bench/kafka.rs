//! PostgreSQL -> Kafka full refresh into a compacted topic keyed by `id`, on the private broker
//! (`xtask/src/kafka.rs`): dpone against a raw librdkafka producer
//! (`host/examples/kafka_raw_client.rs`, the same librdkafka build, release) sending the
//! same records with dpone's producer settings (idempotent, lz4, `linger.ms` 20). The raw producer's records are the ones dpone produced on an untimed
//! first run, read back from the topic, so both send the same bytes; the limit does no
//! PostgreSQL read and no encoding, dpone does both. Every timed run writes a new topic;
//! a run counts when that topic holds exactly the first run's records (count and an
//! order-independent digest of every key and value), and the first run's records hold one
//! record per source row (count and sum of ids).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use super::contenders::{self, Contender, Measured};
use super::data::{Table, quote};
use super::report::{Outcome, RunRecord, Scenario, ScenarioResult};
use super::{Lab, SRC_DB, generate, rows_and_id_sum, turn_order};
use crate::output;

/// What a topic holds: records, and the wrapping sum of a hash of each `key\tvalue`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Digest {
    records: u64,
    sum: u64,
}

impl Digest {
    fn of_lines(lines: impl BufRead) -> Result<Self> {
        let mut digest = Digest { records: 0, sum: 0 };
        for line in lines.split(b'\n') {
            let line = line.context("could not read a record")?;
            digest.records += 1;
            digest.sum = digest.sum.wrapping_add(fnv1a(&line));
        }
        Ok(digest)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn scenario(lab: &Lab, runs: u32) -> Result<ScenarioResult> {
    let table = Table::records();
    let source = generate(lab, &table)?;
    let mut result = ScenarioResult::new(Scenario::Kafka, &table, lab, lab.rows, source.copy_bytes);
    for contender in [Contender::Sling, Contender::Dlt] {
        result.exclude(contender, "not benchmarked against Kafka");
    }
    result.relabel(
        Contender::Pipe,
        "raw librdkafka producer of the same records",
    );
    // The broker may be one that an earlier benchmark left running: new topic names.
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let payloads = lab.dirs.work.join("kafka_records.tsv");
    let expected = match first_run(lab, &table, &payloads, &format!("bench_kafka_{tag}_first")) {
        Ok(expected) => expected,
        Err(err) => {
            let failed = Outcome::Failed(format!("first load: {err:#}"));
            result.record(lab, Contender::Dpone, runs, RunRecord::new(1, failed, None));
            return Ok(result);
        }
    };
    for rep in 1..=runs {
        for contender in turn_order(rep) {
            if !matches!(contender, Contender::Dpone | Contender::Pipe) {
                continue;
            }
            let name = format!("kafka-r{rep}-{}", contender.key());
            let topic = format!("bench_kafka_{tag}_r{rep}_{}", contender.key());
            let measured = match contender {
                Contender::Dpone => dpone(lab, &topic, &name),
                _ => raw_producer(lab, &topic, &payloads, &name),
            };
            let record = match measured {
                Err(err) => RunRecord::new(rep, Outcome::Failed(format!("{err:#}")), None),
                Ok(measured) => {
                    let outcome = match read_topic(lab, &topic, None) {
                        Ok(actual) if actual == expected => Outcome::Valid,
                        Ok(actual) => Outcome::Invalid(format!(
                            "topic {topic} holds {} records (digest {:x}), the first run {} ({:x})",
                            actual.records, actual.sum, expected.records, expected.sum
                        )),
                        Err(err) => Outcome::Invalid(format!("could not read {topic}: {err:#}")),
                    };
                    RunRecord::new(rep, outcome, Some(measured))
                }
            };
            result.record(lab, contender, runs, record);
        }
    }
    Ok(result)
}

/// The untimed first dpone run: its records, read back into `payloads`, are what every
/// timed run must produce; they must be one per source row.
fn first_run(lab: &Lab, table: &Table, payloads: &Path, topic: &str) -> Result<Digest> {
    dpone(lab, topic, "kafka-first-dpone")?;
    let digest = read_topic(lab, topic, Some(payloads))?;
    let file = fs::File::open(payloads)
        .with_context(|| format!("could not open {}", payloads.display()))?;
    let mut ids = 0i128;
    for line in BufReader::new(file).lines() {
        let line = line?;
        let (key, _) = line
            .split_once('\t')
            .with_context(|| format!("a record without a key: {line}"))?;
        let key: serde_json::Value =
            serde_json::from_str(key).with_context(|| format!("a key that is not JSON: {key}"))?;
        ids += i128::from(
            key["id"]
                .as_i64()
                .with_context(|| format!("a key without an integer id: {key}"))?,
        );
    }
    let expected = rows_and_id_sum(lab, SRC_DB, &format!("public.{}", quote(table.name)))?;
    let actual = format!("{} {ids}", digest.records);
    ensure!(
        actual == expected,
        "dpone's first run produced (records, sum of ids) {actual}, the source has {expected}"
    );
    Ok(digest)
}

/// dpone full_refresh into a new compacted topic (its own pipeline, so its own view).
fn dpone(lab: &Lab, topic: &str, name: &str) -> Result<Measured> {
    let src = lab.server.url(SRC_DB);
    let manifest = format!(
        "pipeline: {topic}\n\
         source: {{ kind: postgres, url: \"{src}\", table: public.records }}\n\
         sink:\n  kind: kafka\n  brokers: \"{brokers}\"\n  topic: {topic}\n  \
           exactly_once: false\n  strategy: {{ mode: full_refresh, unique_key: [id] }}\n\
         state: {{ kind: postgres, url: \"{src}\" }}\n",
        brokers = lab.kafka.brokers(),
    );
    let path = lab.dirs.work.join(format!("{topic}.yaml"));
    fs::write(&path, manifest).with_context(|| format!("could not write {}", path.display()))?;
    contenders::run_dpone(lab, &path, name)
}

/// The raw producer of the records in `payloads` (records are key<TAB>value lines: JSON has
/// no raw tab or newline).
fn raw_producer(lab: &Lab, topic: &str, payloads: &Path, name: &str) -> Result<Measured> {
    let rss = lab.dirs.rss(name);
    let mut cmd = contenders::measured(&lab.kafka_client, &rss);
    cmd.args(["produce", &lab.kafka.brokers(), topic])
        .arg(payloads);
    contenders::run_measured(&mut cmd, &lab.dirs.log(name), &rss)
}

/// Every record of `topic` (to its end), digested, and kept in `save` when given.
fn read_topic(lab: &Lab, topic: &str, save: Option<&Path>) -> Result<Digest> {
    let scratch = lab.dirs.work.join("kafka_dump.tsv");
    let file = save.unwrap_or(&scratch);
    output(
        Command::new(&lab.kafka_client)
            .args(["dump", &lab.kafka.brokers(), topic])
            .arg(file),
    )
    .with_context(|| format!("could not read topic {topic}"))?;
    let digest = Digest::of_lines(BufReader::new(fs::File::open(file)?))?;
    if save.is_none() {
        fs::remove_file(file)?;
    }
    Ok(digest)
}
