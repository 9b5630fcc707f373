//! The `kind: rest` manifest section: a JSON API read page by page (source only).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::connectors::{DeclaredColumn, check_declared};
use crate::error::{Error, Result};
use crate::model::{Pushdown, SourceCapabilities};
use crate::secret::Secret;

/// What a REST API can do, declared once for the run, the matrix and the docs. Pages resume
/// from a cursor; the API filters nothing the manifest does not map, so the host applies every
/// bound.
pub const SOURCE_CAPABILITIES: SourceCapabilities = SourceCapabilities {
    pushdown: Pushdown::None,
    cheap_aggregates: false,
    resumable: true,
    row_versions: false,
    change_feed: false,
};

/// How the API pages its records.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One request returns everything.
    None,
    /// `?<param>=1,2,...` until a page comes back empty.
    PageNumber {
        param: String,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u32>,
    },
    /// Follow the URL found at `next_path` in each response until it is absent.
    NextLink { next_path: String },
}

/// A REST endpoint returning JSON records.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// The endpoint, `http(s)://...`.
    pub url: String,
    /// A name for the records in logs and targets.
    #[serde(default)]
    pub table: Option<String>,
    /// Dotted path of the record array in a response; default the response itself.
    #[serde(default)]
    pub records_path: Option<String>,
    #[serde(default = "no_pagination")]
    pub pagination: Pagination,
    /// Request headers (`Authorization: Bearer ${TOKEN}`); secrets, never printed.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// The records' columns: JSON carries no schema.
    pub columns: Vec<DeclaredColumn>,
    /// Columns that identify a record, the source's primary key.
    #[serde(default)]
    pub primary_key: Vec<String>,
}

fn no_pagination() -> Pagination {
    Pagination::None
}

impl RestConfig {
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
        check_declared(&self.columns, &self.primary_key, at)
    }
}
