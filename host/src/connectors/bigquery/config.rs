//! The `kind: bigquery` manifest section (sink only).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{SinkCapabilities, TargetReads};
use crate::secret::Secret;

/// What BigQuery can do, declared once for the run, the matrix and the docs. begin..commit
/// is a copy-on-write shadow of the target published by one multi-statement transaction
/// (a session carries no transaction from one query to the next on the emulator); primary
/// keys are informational, never enforced.
pub const SINK_CAPABILITIES: SinkCapabilities = SinkCapabilities {
    transactions: true,
    keys_enforced: false,
    rename_swap: false,
    native_partitions: true,
    append_only_log: false,
    target_reads: TargetReads::Native,
    transaction_time_limit_ms: None,
};

/// Google's endpoint: the REST API and the upload API live under it.
pub const GOOGLE_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// A BigQuery dataset.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BigqueryConfig {
    pub project: String,
    /// The dataset of `table` when it names none; created when missing.
    pub dataset: String,
    /// `table` or `dataset.table`.
    #[serde(default)]
    pub table: Option<String>,
    /// Location of a dataset dpone creates, e.g. `EU` (BigQuery's default when absent).
    #[serde(default)]
    pub location: Option<String>,
    /// Where the API is, default Google's; set to an emulator's URL
    /// (`http://127.0.0.1:59050`) to test against one.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Service-account key JSON (usually `${GOOGLE_CREDENTIALS_JSON}`); a secret. Empty or
    /// absent: Google's endpoint signs in with application default credentials
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, or the metadata server); another endpoint
    /// (an emulator) gets requests without credentials.
    #[serde(default)]
    pub credentials_json: Option<Secret>,
    /// The column a target dpone creates is partitioned by: a DATE column by day, a
    /// TIMESTAMP or DATETIME column by the day of its value.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// Up to four columns a target dpone creates is clustered by.
    #[serde(default)]
    pub cluster_by: Vec<String>,
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
        if let Some(endpoint) = &self.endpoint {
            let ok = reqwest::Url::parse(endpoint)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(Error::config(
                    format!("{at}.endpoint"),
                    format!("`{endpoint}` is not an http(s) URL"),
                ));
            }
        }
        if let Some(column) = &self.partition_by
            && column.trim().is_empty()
        {
            return Err(Error::config(
                format!("{at}.partition_by"),
                "must name a column",
            ));
        }
        if self.cluster_by.len() > 4 {
            return Err(Error::config(
                format!("{at}.cluster_by"),
                format!(
                    "names {} columns; BigQuery clusters by at most 4",
                    self.cluster_by.len()
                ),
            ));
        }
        Ok(())
    }

    /// The API's base URL.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(GOOGLE_ENDPOINT)
    }

    /// Whether requests go to Google (and so must be signed in).
    pub fn is_google(&self) -> bool {
        self.endpoint().trim_end_matches('/') == GOOGLE_ENDPOINT
    }

    /// The service-account key, when one is given.
    pub fn credentials(&self) -> Option<&Secret> {
        self.credentials_json
            .as_ref()
            .filter(|s| !s.expose().trim().is_empty())
    }

    pub fn same_database(&self, other: &BigqueryConfig) -> bool {
        self.project == other.project && self.dataset == other.dataset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BigqueryConfig {
        BigqueryConfig {
            project: "p".into(),
            dataset: "d".into(),
            table: Some("t".into()),
            location: None,
            endpoint: Some("http://127.0.0.1:59050".into()),
            credentials_json: None,
            partition_by: None,
            cluster_by: Vec::new(),
        }
    }

    #[test]
    fn empty_credentials_are_none() {
        assert!(config().validate("sink").is_ok());
        let google = BigqueryConfig {
            endpoint: None,
            credentials_json: Some(Secret::new(" ")),
            ..config()
        };
        assert!(google.validate("sink").is_ok());
        assert!(google.credentials().is_none() && google.is_google());
    }

    #[test]
    fn fields_are_named_in_errors() {
        let bad = |c: BigqueryConfig| c.validate("sink").unwrap_err().to_string();
        assert!(
            bad(BigqueryConfig {
                endpoint: Some("ftp://x".into()),
                ..config()
            })
            .contains("sink.endpoint")
        );
        assert!(
            bad(BigqueryConfig {
                cluster_by: vec!["a".into(); 5],
                ..config()
            })
            .contains("sink.cluster_by")
        );
        assert!(
            bad(BigqueryConfig {
                dataset: "a.b".into(),
                ..config()
            })
            .contains("sink.dataset")
        );
    }
}
