//! The integration matrix's shared pieces: the deterministic behaviour model of the source,
//! the in-memory oracle of what each strategy's target must hold, and the runner that
//! drives both against real databases through the host's connectors.

pub mod catalog;
pub mod local;
pub mod model;
pub mod oracle;
pub mod runner;
