//! SQL Server: source, sink and state store through tiberius, with TDS bulk load into
//! staging; its change feed reads CDC capture instances.

pub mod client;
pub mod config;
pub mod dialect;
pub mod feed;
pub mod partitions;
pub mod types;

pub use client::MssqlSession;
