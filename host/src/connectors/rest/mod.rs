//! REST: a JSON HTTP API as a source, read page by page into batches of the declared
//! columns (`config.rs` the manifest section, `client.rs` requests and pagination,
//! `types.rs` a response's records into portable values, `source.rs` the `Source`; the JSON
//! codec of a value is `connectors/json.rs`, shared with Kafka).
//!
//! Contract: memory stays at two pages (`concurrency` pages) plus one batch whatever the
//! number of pages, plus a fingerprint (8 or 16 bytes) per key seen where a read dedupes
//! (a record whose key came already in the same read is skipped, as pages shifting under
//! concurrent writes repeat records). The API filters only by the mapped incremental parameter; every
//! bound (cursor range, position, filter, limit) is also applied by the host, so a scan
//! returns exactly the rows within its bounds whatever the API did with the parameter.

pub mod client;
pub mod config;
mod source;
mod types;

pub use source::RestSource;
