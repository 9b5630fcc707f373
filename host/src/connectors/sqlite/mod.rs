//! SQLite: the embedded default source, sink and state store, through sqlx.

pub mod client;
pub mod config;
pub mod dialect;
pub mod types;

pub use client::SqliteSession;
