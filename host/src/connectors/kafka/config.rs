//! The `kind: kafka` manifest section: a topic, read as a bounded range of offsets (source)
//! or written as keyed JSON messages (sink).

use serde::Deserialize;

use crate::connectors::{DeclaredColumn, check_declared};
use crate::error::{Error, Result};
use crate::model::{Pushdown, SinkCapabilities, SourceCapabilities, TargetReads};
use crate::secret::Secret;

/// What Kafka can do, declared once for the run, the matrix and the docs. A compacted topic
/// keyed by the unique key: a changed row is an upsert, a deleted one a tombstone, finalized in
/// one producer transaction (bounded by the broker's default `transaction.timeout.ms`, 60 s);
/// reads of the target copy the topic up to its high watermarks. As a source: offsets resume,
/// nothing is pushed down.
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

/// SASL credentials.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub mechanism: String,
    pub username: Secret,
    pub password: Secret,
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
    /// Source: the columns of the message values (JSON objects).
    #[serde(default)]
    pub columns: Vec<DeclaredColumn>,
    /// Source: columns that identify a record (the message key), the source's primary key.
    #[serde(default)]
    pub primary_key: Vec<String>,
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
    #[serde(default)]
    pub tls: bool,
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
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self
                .topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !topic_ok {
            return Err(Error::config(
                format!("{at}.topic"),
                "must be 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'",
            ));
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
}
