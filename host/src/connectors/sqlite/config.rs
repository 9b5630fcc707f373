//! The `kind: sqlite` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};

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
