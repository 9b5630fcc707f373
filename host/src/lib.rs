//! dpone-host: runs load-strategy WebAssembly components against source and sink
//! connectors. See the repository README and docs/architecture.md.

pub mod backfill;
pub mod connectors;
pub mod error;
pub mod manifest;
pub mod matrix;
pub mod model;
pub mod runner;
pub mod runtime;
pub mod secret;
pub mod state;
pub mod stop;
pub mod text;

pub use error::{Error, Kind, Result};

/// Crash-test hook. `DPONE_FAILPOINT=<point>[@<n>]` makes the process abort, as a crash
/// or a `kill -9` would, the `n`-th time (default the first) it reaches `point`. The
/// points: `sink.before_commit` (a finalize transaction is about to commit) and
/// `cdc.before_ack` (the sink committed, the change feed is not yet acknowledged). Tests
/// use it to prove nothing is lost or applied twice; never set it in production.
pub fn failpoint(point: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("DPONE_FAILPOINT") else {
        return;
    };
    let (name, nth) = match spec.split_once('@') {
        Some((name, n)) => (name, n.parse().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    if name == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        eprintln!("failpoint {point}: aborting the process");
        std::process::abort();
    }
}
