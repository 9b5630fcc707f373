//! The `kind: postgres` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Pushdown, SinkCapabilities, SourceCapabilities, TargetReads};
use crate::secret::Secret;

/// What PostgreSQL can do, declared once for the run, the matrix and the docs. Transactional
/// DDL: a rename swap commits with the rest; declarative partitions; rows carry `xmin`; logical
/// replication is the change feed.
pub const SOURCE_CAPABILITIES: SourceCapabilities = SourceCapabilities {
    pushdown: Pushdown::Full,
    cheap_aggregates: true,
    resumable: false,
    row_versions: true,
    change_feed: true,
};

pub const SINK_CAPABILITIES: SinkCapabilities = SinkCapabilities {
    transactions: true,
    keys_enforced: true,
    rename_swap: true,
    native_partitions: true,
    append_only_log: false,
    target_reads: TargetReads::Native,
    transaction_time_limit_ms: None,
};

/// A PostgreSQL database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, `postgres://user[:password]@host[:port]/database`. Usually
    /// `${ENV_VAR}`: it is a secret and never printed.
    pub url: Secret,
    /// The table, `schema.table` or `table` (source and sink sections only).
    #[serde(default)]
    pub table: Option<String>,
    /// The change feed of a source table (the `cdc` strategy reads it): a logical
    /// replication slot decoding a publication with `pgoutput`. Both are created when
    /// missing; by default both are named `dpone_<pipeline>`.
    #[serde(default)]
    pub change_feed: Option<ChangeFeedConfig>,
}

/// The `change_feed` of a PostgreSQL source section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChangeFeedConfig {
    /// Replication slot; default `dpone_<pipeline>`, folded to a valid slot name.
    #[serde(default)]
    pub slot: Option<String>,
    /// Publication of the source table; default the slot's name.
    #[serde(default)]
    pub publication: Option<String>,
}

impl PostgresConfig {
    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        let url = self.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::config(
                format!("{at}.url"),
                "must start with postgres:// or postgresql://",
            ));
        }
        if let Some(feed) = &self.change_feed {
            for (name, value) in [("slot", &feed.slot), ("publication", &feed.publication)] {
                if let Some(v) = value {
                    check_feed_name(v, &format!("{at}.change_feed.{name}"))?;
                }
            }
        }
        Ok(())
    }

    /// Whether `other` is the same database, so state can commit with the sink.
    pub fn same_database(&self, other: &PostgresConfig) -> bool {
        self.url == other.url
    }
}

/// A slot or publication name dpone may create: 1-63 characters of `a-z`, `0-9` and `_`.
pub fn check_feed_name(name: &str, field: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("`{name}` must be 1-63 characters of a-z, 0-9 and _ (a replication slot name)"),
        ))
    }
}
