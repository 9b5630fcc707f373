//! The `kind: rest` manifest section: a JSON API read page by page (source only).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::Secret;

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

/// One declared column of the records: JSON carries no schema.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestColumn {
    pub name: String,
    /// A portable type name: boolean, int64, float64, decimal(p,s), text, date, timestamp,
    /// timestamp_tz, uuid, json.
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Where the value is in a record (dotted), default the column name.
    #[serde(default)]
    pub path: Option<String>,
}

fn yes() -> bool {
    true
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
    pub columns: Vec<RestColumn>,
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
        for (i, c) in self.columns.iter().enumerate() {
            crate::connectors::check_type_name(&c.data_type, &format!("{at}.columns[{i}].type"))?;
        }
        for (i, k) in self.primary_key.iter().enumerate() {
            if !self.columns.iter().any(|c| &c.name == k) {
                return Err(Error::config(
                    format!("{at}.primary_key[{i}]"),
                    format!("`{k}` is not a declared column"),
                ));
            }
        }
        Ok(())
    }
}
