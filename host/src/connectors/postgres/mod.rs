//! PostgreSQL: source, sink and state store through sqlx, with binary COPY both ways.

pub mod client;
pub mod config;
mod copy;
pub mod dialect;
pub mod feed;
pub mod partitions;
mod pgoutput;
pub mod types;

pub use client::PostgresSession;
