//! The strategy runtime: wasmtime engine, sandbox limits, capability implementations.

pub mod bindings;
pub mod convert;
pub mod engine;
pub mod host;
pub mod report;
pub mod sandbox;
