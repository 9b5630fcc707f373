//! The `kind: bigquery` manifest section (sink only).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{SinkCapabilities, TargetReads};
use crate::secret::Secret;

/// What BigQuery can do, declared once for the run, the matrix and the docs. Multi-statement
/// transactions; no rename inside one; primary keys are informational, never enforced.
pub const SINK_CAPABILITIES: SinkCapabilities = SinkCapabilities {
    transactions: true,
    keys_enforced: false,
    rename_swap: false,
    native_partitions: true,
    append_only_log: false,
    target_reads: TargetReads::Native,
    transaction_time_limit_ms: None,
};

/// A BigQuery dataset.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BigqueryConfig {
    pub project: String,
    pub dataset: String,
    #[serde(default)]
    pub table: Option<String>,
    /// Dataset location, e.g. `EU`.
    #[serde(default)]
    pub location: Option<String>,
    /// Service-account key JSON (usually `${GOOGLE_CREDENTIALS_JSON}`); a secret.
    pub credentials_json: Secret,
}

impl BigqueryConfig {
    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !ident(&self.project) {
            return Err(Error::config(
                format!("{at}.project"),
                "must be a project id",
            ));
        }
        if !ident(&self.dataset) {
            return Err(Error::config(
                format!("{at}.dataset"),
                "must be letters, digits, _ and -",
            ));
        }
        if self.credentials_json.expose().trim().is_empty() {
            return Err(Error::config(
                format!("{at}.credentials_json"),
                "must not be empty",
            ));
        }
        Ok(())
    }

    pub fn same_database(&self, other: &BigqueryConfig) -> bool {
        self.project == other.project && self.dataset == other.dataset
    }
}
