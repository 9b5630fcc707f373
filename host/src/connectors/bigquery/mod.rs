//! BigQuery over its REST API: a sink (docs/connectors/bigquery.md).

pub mod client;
pub mod config;
pub mod dialect;
pub mod types;

pub use client::BigquerySession;
