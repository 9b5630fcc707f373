//! The `kind: kafka` manifest section: a topic, read as a bounded range of offsets (source)
//! or written as keyed messages (sink), in JSON or in Avro with a Confluent Schema Registry.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::connectors::{DeclaredColumn, check_declared};
use crate::error::{Error, Result};
use crate::model::{Pushdown, SinkCapabilities, SourceCapabilities, TargetReads};
use crate::secret::Secret;

/// What Kafka can do, declared once for the run, the matrix and the docs. A compacted topic
/// keyed by the unique key: a changed row is an upsert, a deleted one a tombstone, finalized in
/// one producer transaction (bounded by its `transaction.timeout.ms`, 60 s); reads of the
/// target copy the topic up to its high watermarks. As a source: offsets resume, nothing is
/// pushed down.
pub const SOURCE_CAPABILITIES: SourceCapabilities = SourceCapabilities {
    pushdown: Pushdown::None,
    cheap_aggregates: false,
    resumable: true,
    row_versions: false,
    change_feed: false,
};

pub const SINK_CAPABILITIES: SinkCapabilities = SinkCapabilities {
    transactions: true,
    keys_enforced: false,
    rename_swap: false,
    native_partitions: false,
    append_only_log: false,
    target_reads: TargetReads::StagedCopy,
    transaction_time_limit_ms: Some(60_000),
};

/// The producer transaction's timeout: the broker aborts a transaction open longer.
pub const TRANSACTION_TIMEOUT_MS: u64 = 60_000;

/// librdkafka settings dpone sets itself: a manifest's `properties` may not override them.
const OWN_PROPERTIES: [&str; 8] = [
    "bootstrap.servers",
    "security.protocol",
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "isolation.level",
    "enable.auto.commit",
    "group.id",
];

/// SASL credentials.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub mechanism: String,
    pub username: Secret,
    pub password: Secret,
}

/// How record keys and values are encoded.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON objects (`connectors/json.rs`).
    #[default]
    Json,
    /// Avro in the Confluent wire format, schemas in `schema_registry`.
    Avro,
}

/// A Confluent Schema Registry (or one that speaks its REST API).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `http(s)://host:port[/path]`.
    pub url: String,
    /// HTTP basic auth (Confluent Cloud: the API key and secret).
    #[serde(default)]
    pub username: Option<Secret>,
    #[serde(default)]
    pub password: Option<Secret>,
}

/// A Kafka topic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// Logical table name for logs; default the topic.
    #[serde(default)]
    pub table: Option<String>,
    /// Keys and values as JSON (default) or Avro.
    #[serde(default)]
    pub format: Format,
    /// The registry of the Avro schemas (`format: avro`).
    #[serde(default)]
    pub schema_registry: Option<RegistryConfig>,
    /// Source: the columns of the message values.
    #[serde(default)]
    pub columns: Vec<DeclaredColumn>,
    /// Source: columns that identify a record (the message key), the source's primary key.
    #[serde(default)]
    pub primary_key: Vec<String>,
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
    #[serde(default)]
    pub tls: bool,
    /// Source: where undecodable messages go (with headers naming their topic, partition,
    /// offset and error) instead of failing the run.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Sink: the topic is an event log (not compacted): only `incremental_append` writes
    /// it, one message per row.
    #[serde(default)]
    pub append_only: bool,
    /// Sink: finalize in one Kafka producer transaction (default). `false` produces
    /// idempotently without one, for brokers without transactions: a run that dies while
    /// producing leaves part of its events, which the next run completes.
    #[serde(default = "exactly_once_by_default", deserialize_with = "flag")]
    pub exactly_once: bool,
    /// Sink: partitions of a topic dpone creates; default 1.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Sink: replication factor of a topic dpone creates; default the broker's.
    #[serde(default)]
    pub replication_factor: Option<u16>,
    /// Further librdkafka client settings (e.g. `ssl.ca.location`), for every client of
    /// this section.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn exactly_once_by_default() -> bool {
    true
}

/// A boolean written as YAML `true`/`false` or, from a `${VAR}`, as the text `true`/`false`.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(t) if t == "true" => Ok(true),
        Flag::Text(t) if t == "false" => Ok(false),
        Flag::Text(t) => Err(serde::de::Error::custom(format!(
            "expected true or false, found `{t}`"
        ))),
    }
}

/// A topic name: 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'.
fn topic_name_ok(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl KafkaConfig {
    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        let brokers_ok = !self.brokers.trim().is_empty()
            && self.brokers.split(',').all(|b| {
                b.trim()
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            });
        if !brokers_ok {
            return Err(Error::config(
                format!("{at}.brokers"),
                "must be host:port[,host:port...]",
            ));
        }
        let topics = [
            ("topic", Some(&self.topic)),
            ("dead_letter_topic", self.dead_letter_topic.as_ref()),
        ];
        for (field, topic) in topics {
            if let Some(topic) = topic
                && !topic_name_ok(topic)
            {
                return Err(Error::config(
                    format!("{at}.{field}"),
                    "must be 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'",
                ));
            }
        }
        if self.dead_letter_topic.as_ref() == Some(&self.topic) {
            return Err(Error::config(
                format!("{at}.dead_letter_topic"),
                "must not be the topic itself",
            ));
        }
        if self.partitions == Some(0) {
            return Err(Error::config(
                format!("{at}.partitions"),
                "must be at least 1",
            ));
        }
        if self.replication_factor == Some(0) {
            return Err(Error::config(
                format!("{at}.replication_factor"),
                "must be at least 1",
            ));
        }
        if let Some(own) = self
            .properties
            .keys()
            .find(|k| OWN_PROPERTIES.contains(&k.as_str()) || k.starts_with("sasl."))
        {
            return Err(Error::config(
                format!("{at}.properties.{own}"),
                "is set by dpone (from brokers, tls, sasl and the pipeline): remove it",
            ));
        }
        match (&self.format, &self.schema_registry) {
            (Format::Avro, None) => {
                return Err(Error::config(
                    format!("{at}.schema_registry"),
                    "is required with format: avro (the registry that holds the records' schemas)",
                ));
            }
            (Format::Json, Some(_)) => {
                return Err(Error::config(
                    format!("{at}.schema_registry"),
                    "is only used with format: avro: remove it or set format: avro",
                ));
            }
            (_, Some(registry)) => {
                if !(registry.url.starts_with("http://") || registry.url.starts_with("https://")) {
                    return Err(Error::config(
                        format!("{at}.schema_registry.url"),
                        "must be an http:// or https:// URL",
                    ));
                }
                if registry.password.is_some() != registry.username.is_some() {
                    return Err(Error::config(
                        format!("{at}.schema_registry.username"),
                        "username and password go together",
                    ));
                }
            }
            (Format::Json, None) => {}
        }
        if let Some(sasl) = &self.sasl
            && !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&sasl.mechanism.as_str())
        {
            return Err(Error::config(
                format!("{at}.sasl.mechanism"),
                "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            ));
        }
        check_declared(&self.columns, &self.primary_key, at)
    }

    /// What this topic can do as a sink: an `append_only` topic is an event log.
    pub fn sink_capabilities(&self) -> SinkCapabilities {
        SinkCapabilities {
            append_only_log: self.append_only,
            ..SINK_CAPABILITIES
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> std::result::Result<(), Option<String>> {
        let config: KafkaConfig = serde_yaml_ng::from_str(yaml).map_err(|_| None)?;
        config.validate("sink").map_err(|e| e.field)
    }

    #[test]
    fn sections_are_checked_naming_the_field() {
        let base = "brokers: \"b:9092\"\ntopic: t\n";
        assert_eq!(check(base), Ok(()));
        let cases = [
            ("brokers: \"b\"\ntopic: t\n", "sink.brokers"),
            ("brokers: \"b:1\"\ntopic: \"a b\"\n", "sink.topic"),
            (
                &format!("{base}dead_letter_topic: t\n"),
                "sink.dead_letter_topic",
            ),
            (&format!("{base}partitions: 0\n"), "sink.partitions"),
            (
                &format!("{base}properties: {{ transactional.id: x }}\n"),
                "sink.properties.transactional.id",
            ),
            (&format!("{base}format: avro\n"), "sink.schema_registry"),
            (
                &format!("{base}schema_registry: {{ url: \"http://r:8081\" }}\n"),
                "sink.schema_registry",
            ),
            (
                &format!("{base}format: avro\nschema_registry: {{ url: \"r:8081\" }}\n"),
                "sink.schema_registry.url",
            ),
            (
                &format!(
                    "{base}format: avro\nschema_registry: {{ url: \"https://r\", username: u }}\n"
                ),
                "sink.schema_registry.username",
            ),
        ];
        for (yaml, field) in cases {
            assert_eq!(check(yaml), Err(Some(field.to_string())), "{yaml}");
        }
        let avro = format!(
            "{base}format: avro\nschema_registry: {{ url: \"https://r:8081\", username: u, password: p }}\n"
        );
        assert_eq!(check(&avro), Ok(()));
    }
}
