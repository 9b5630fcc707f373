//! The `kind: clickhouse` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Pushdown, SinkCapabilities, SourceCapabilities, TargetReads};
use crate::secret::Secret;

/// What ClickHouse can do, declared once for the run, the matrix and the docs. No server
/// transactions: begin..commit is a copy-on-write shadow of the target published by one RENAME,
/// atomic for readers; the primary key is a sort key, never unique.
pub const SOURCE_CAPABILITIES: SourceCapabilities = SourceCapabilities {
    pushdown: Pushdown::Full,
    cheap_aggregates: true,
    resumable: false,
    row_versions: false,
    change_feed: false,
};

pub const SINK_CAPABILITIES: SinkCapabilities = SinkCapabilities {
    transactions: true,
    keys_enforced: false,
    rename_swap: true,
    native_partitions: true,
    append_only_log: false,
    target_reads: TargetReads::Native,
    transaction_time_limit_ms: None,
};

/// A ClickHouse server, over its HTTP interface.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClickhouseConfig {
    /// `http(s)://[user[:password]@]host:port/database`; a secret, never printed.
    pub url: Secret,
    /// `database.table` or `table` (the URL's database).
    #[serde(default)]
    pub table: Option<String>,
    /// How insert bodies travel: `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: Compression,
}

/// The encoding of insert bodies (`Content-Encoding`); reads are never compressed.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip at its fastest level: RowBinary shrinks several times for little CPU, which
    /// pays off whenever the server is not on the same machine.
    #[default]
    Gzip,
    None,
}

impl ClickhouseConfig {
    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        let url = self.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::config(
                format!("{at}.url"),
                "must start with http:// or https:// (the HTTP interface, port 8123 by default)",
            ));
        }
        Ok(())
    }

    pub fn same_database(&self, other: &ClickhouseConfig) -> bool {
        self.url == other.url
    }
}
