//! ClickHouse over its HTTP interface: source and sink (docs/connectors/clickhouse.md).

pub mod client;
pub mod config;
pub mod dialect;
pub mod partitions;
pub mod publish;
pub mod types;

pub use client::ClickhouseSession;
