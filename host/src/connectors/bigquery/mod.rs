//! BigQuery: the manifest section only. The client (and its type mapping) is not built yet:
//! a manifest naming this kind validates, and a run stops before connecting with an
//! `unsupported` error that says so.

pub mod config;
