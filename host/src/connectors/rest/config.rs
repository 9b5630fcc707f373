//! The `kind: rest` manifest section: a JSON API read page by page (source only).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::connectors::{DeclaredColumn, check_declared};
use crate::error::{Error, Result};
use crate::model::{Pushdown, SourceCapabilities};
use crate::secret::Secret;

/// How the API pages its records. Every style stops at an empty page; `total_path`, where
/// offered, also stops once that many records came.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One request returns everything.
    None,
    /// `?<param>=<first>,<first+1>,...` (and `<size_param>=<size>` when given).
    PageNumber {
        param: String,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u32>,
        #[serde(default = "first_page")]
        first: u64,
        #[serde(default)]
        total_path: Option<String>,
    },
    /// `?<offset_param>=0,<limit>,...&<limit_param>=<limit>`.
    Offset {
        offset_param: String,
        limit_param: String,
        limit: u32,
        #[serde(default)]
        total_path: Option<String>,
    },
    /// The token at `token_path` of a response goes in `<param>` of the next request; no
    /// token (absent, null or empty) ends the read.
    Cursor { param: String, token_path: String },
    /// Follows the `Link: <url>; rel="next"` response header until there is none.
    LinkHeader,
    /// Follows the URL at `next_path` of each response (absolute, or relative to the
    /// request) until it is absent or null.
    NextLink { next_path: String },
}

fn first_page() -> u64 {
    1
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyIn {
    #[default]
    Header,
    Query,
}

/// How requests authenticate; every secret comes from `${ENV}` and never prints.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// `Authorization: Basic base64(<username>:<password>)`.
    Basic { username: String, password: Secret },
    /// `<name>: <value>` as a header, or `?<name>=<value>`.
    ApiKey {
        name: String,
        value: Secret,
        #[serde(default, rename = "in")]
        location: KeyIn,
    },
}

/// A cursor column the API filters by: the scan's lower cursor bound goes in `param`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    pub cursor_column: String,
    pub param: String,
}

/// Retries of a request that failed with a connection error, a timeout, 429 or 5xx.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled each time, with jitter.
    pub initial_ms: u64,
    /// The longest wait, also for a `Retry-After` the server asks for.
    pub max_ms: u64,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 5,
            initial_ms: 500,
            max_ms: 30_000,
        }
    }
}

/// A REST endpoint returning JSON records.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// The endpoint, `http(s)://...`, with its path.
    pub url: String,
    /// A name for the records in logs and targets.
    #[serde(default)]
    pub table: Option<String>,
    /// Query parameters of every request.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers; values are secrets, never printed.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Dotted path of the record array in a response; default the response itself.
    #[serde(default)]
    pub records_path: Option<String>,
    #[serde(default = "no_pagination")]
    pub pagination: Pagination,
    /// The most pages one read may take; more is an error (never a silent cut).
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// Seconds one request may take, body included.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default)]
    pub retries: Retries,
    /// The most requests per second; default unlimited.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Pages fetched at once, for page-number (with a `size`) and offset pagination, whose
    /// pages do not depend on each other; default 1.
    #[serde(default = "one")]
    pub concurrency: u32,
    /// The records' columns: JSON carries no schema.
    pub columns: Vec<DeclaredColumn>,
    /// Columns that identify a record, the source's primary key: the key a read
    /// deduplicates by when the strategy names no `unique_key`.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Whether a read keeps only the first record of each key (pages that shift when the
    /// API's data changes between requests repeat records); default: when there is a key.
    #[serde(default)]
    pub dedupe: Option<bool>,
}

fn no_pagination() -> Pagination {
    Pagination::None
}

fn default_max_pages() -> u64 {
    100_000
}

fn default_timeout() -> u64 {
    30
}

fn one() -> u32 {
    1
}

/// The most pages a read fetches at once.
const MAX_CONCURRENCY: u32 = 32;

impl RestConfig {
    /// What this API can do as a source. It filters by nothing but the cursor parameter
    /// `incremental` maps (the host applies every bound itself as well); counts and maxima
    /// are whole reads; a read with `incremental` resumes after the largest cursor it read.
    pub fn source_capabilities(&self) -> SourceCapabilities {
        SourceCapabilities {
            pushdown: match self.incremental {
                Some(_) => Pushdown::CursorOnly,
                None => Pushdown::None,
            },
            cheap_aggregates: false,
            resumable: self.incremental.is_some(),
            row_versions: false,
            change_feed: false,
        }
    }

    /// Whether a read skips records whose key came already (see `dedupe`).
    pub fn dedupes(&self) -> bool {
        self.dedupe.unwrap_or(true)
    }

    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Error::config(
                format!("{at}.url"),
                "must start with http:// or https://",
            ));
        }
        if self.columns.is_empty() {
            return Err(Error::config(
                format!("{at}.columns"),
                "declare at least one column: JSON records carry no schema",
            ));
        }
        check_declared(&self.columns, &self.primary_key, at)?;
        if self.max_pages == 0 {
            return Err(Error::config(
                format!("{at}.max_pages"),
                "must be greater than 0",
            ));
        }
        if !(1..=3600).contains(&self.timeout_seconds) {
            return Err(Error::config(
                format!("{at}.timeout_seconds"),
                "must be between 1 and 3600",
            ));
        }
        if self.retries.attempts == 0 {
            return Err(Error::config(
                format!("{at}.retries.attempts"),
                "must be at least 1 (the first attempt)",
            ));
        }
        if let Some(rps) = self.requests_per_second
            && !(rps > 0.0 && rps.is_finite())
        {
            return Err(Error::config(
                format!("{at}.requests_per_second"),
                "must be a positive number",
            ));
        }
        match &self.pagination {
            Pagination::PageNumber { size: Some(0), .. } => {
                return Err(Error::config(
                    format!("{at}.pagination.size"),
                    "must be greater than 0",
                ));
            }
            Pagination::Offset { limit: 0, .. } => {
                return Err(Error::config(
                    format!("{at}.pagination.limit"),
                    "must be greater than 0",
                ));
            }
            _ => {}
        }
        let independent = matches!(
            self.pagination,
            Pagination::PageNumber { size: Some(_), .. } | Pagination::Offset { .. }
        );
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Error::config(
                format!("{at}.concurrency"),
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        if self.concurrency > 1 && !independent {
            return Err(Error::config(
                format!("{at}.concurrency"),
                "needs pages that do not depend on each other: page_number with a size, or offset pagination",
            ));
        }
        if let Some(inc) = &self.incremental
            && !self.columns.iter().any(|c| c.name == inc.cursor_column)
        {
            return Err(Error::config(
                format!("{at}.incremental.cursor_column"),
                format!("`{}` is not a declared column", inc.cursor_column),
            ));
        }
        Ok(())
    }
}
