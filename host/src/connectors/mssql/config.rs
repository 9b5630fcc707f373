//! The `kind: mssql` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Pushdown, SinkCapabilities, SourceCapabilities, TargetReads};
use crate::secret::Secret;

/// What SQL Server can do, declared once for the run, the matrix and the docs. sp_rename inside
/// a transaction; partition SWITCH; `rowversion` row versions; change tables are the change
/// feed.
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

/// A SQL Server database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MssqlConfig {
    /// `mssql://user:password@host[:port]/database`; a secret, never printed.
    pub url: Secret,
    /// `schema.table` or `table` (schema `dbo`).
    #[serde(default)]
    pub table: Option<String>,
    /// Accept the server's certificate without checking it (self-signed test servers).
    #[serde(default)]
    pub trust_server_certificate: bool,
}

impl MssqlConfig {
    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        if !self.url.expose().starts_with("mssql://") {
            return Err(Error::config(
                format!("{at}.url"),
                "must start with mssql://",
            ));
        }
        Ok(())
    }

    pub fn same_database(&self, other: &MssqlConfig) -> bool {
        self.url == other.url
    }
}
