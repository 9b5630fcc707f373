//! The `kind: mssql` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::Secret;

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
