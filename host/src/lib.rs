//! dpone-host: runs load-strategy WebAssembly components against source and sink
//! connectors. See the repository README and docs/architecture.md.

pub mod connectors;
pub mod error;
pub mod manifest;
pub mod model;
pub mod runner;
pub mod runtime;
pub mod state;

pub use error::{Error, Kind, Result};
