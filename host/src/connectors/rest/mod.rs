//! REST: a JSON HTTP API as a source, read page by page into batches of the declared
//! columns (`config.rs` the manifest section, `client.rs` requests and pagination,
//! `source.rs` the `Source`; JSON into portable values is `connectors/json.rs`, shared
//! with Kafka).
//!
//! Contract: memory stays at one page (`concurrency` pages) plus one batch whatever the
//! number of pages, plus the keys seen when the source declares a `primary_key` (a record
//! whose key came already in the same read is skipped, as offset pages shifting under
//! concurrent writes repeat records). The API filters only by the mapped incremental
//! parameter; every bound (cursor range, filter, limit) is also applied by the host, so a
//! scan returns exactly the rows within its bounds whatever the API did with the parameter.

pub mod client;
pub mod config;
mod source;

pub use source::RestSource;
