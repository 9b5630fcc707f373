//! The `kind: sqlite` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Pushdown, SinkCapabilities, SourceCapabilities, TargetReads};

/// What SQLite can do, declared once for the run, the matrix and the docs. Transactions and
/// enforced keys; no rename of a table with its full definition (it reloads in place) and no
/// partitions.
pub const SOURCE_CAPABILITIES: SourceCapabilities = SourceCapabilities {
    pushdown: Pushdown::Full,
    cheap_aggregates: true,
    resumable: false,
    row_versions: false,
    change_feed: false,
};

pub const SINK_CAPABILITIES: SinkCapabilities = SinkCapabilities {
    transactions: true,
    keys_enforced: true,
    rename_swap: false,
    native_partitions: false,
    append_only_log: false,
    target_reads: TargetReads::Native,
    transaction_time_limit_ms: None,
};

/// A SQLite database file: the embedded default source, sink and state store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Path of the database file, relative to the working directory. A sink or state
    /// database is created when missing; a source database must exist.
    pub path: String,
    /// The table (source and sink sections only).
    #[serde(default)]
    pub table: Option<String>,
}

impl SqliteConfig {
    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        if self.path.trim().is_empty() {
            return Err(Error::config(format!("{at}.path"), "must not be empty"));
        }
        Ok(())
    }

    /// Whether `other` is the same database, so state can commit with the sink.
    pub fn same_database(&self, other: &SqliteConfig) -> bool {
        // `./x.db` and `x.db` are one file: compare resolved paths.
        let resolve = |p: &str| {
            std::fs::canonicalize(p)
                .or_else(|_| std::path::absolute(p))
                .ok()
        };
        resolve(&self.path).is_some() && resolve(&self.path) == resolve(&other.path)
    }
}
