//! Kafka: a topic as a table. `config.rs` the manifest section, `client.rs` the rdkafka
//! clients (administration, bounded reads, the producer), `types.rs` records <-> rows and
//! positions, `avro.rs` Avro records and the Schema Registry, `view.rs` a topic applied to
//! a table of the embedded store, `sink.rs` and `source.rs` the `Sink` and `Source`.
//!
//! Contract: records are JSON or Avro (key: the key columns, value: every column, a
//! tombstone has no value); reads stop at the end each partition has when the read reaches it, with
//! `isolation.level = read_committed`; positions are `kafka:<partition>=<next offset>,...`.

mod avro;
pub mod client;
pub mod config;
mod sink;
mod source;
pub mod types;
mod view;

pub use sink::KafkaSink;
pub use source::KafkaSource;
pub use view::read_table;
