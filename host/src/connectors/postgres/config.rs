//! The `kind: postgres` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::Secret;

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
        Ok(())
    }

    /// Whether `other` is the same database, so state can commit with the sink.
    pub fn same_database(&self, other: &PostgresConfig) -> bool {
        self.url == other.url
    }
}
