//! SQL Server: source, sink and state store through tiberius, with TDS bulk load into
//! staging.

pub mod client;
pub mod config;
pub mod dialect;
pub mod types;

pub use client::MssqlSession;
