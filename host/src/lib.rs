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

/// Crash-test hook. `DPONE_FAILPOINT=<point>[@<n>][+<ms>]` makes the process abort, as a
/// crash or a `kill -9` would, the `n`-th time (default the first) it reaches `point`,
/// after `ms` milliseconds in which its other threads go on (a Kafka producer delivers what
/// it had queued) while this one stops. The points: `sink.before_commit` (a finalize
/// transaction is about to commit), `sink.after_publish` (a sink without a transaction of
/// its own made the run's rows visible, the state is not written), `sink.partition_replaced`
/// (such a sink replaced one of several partitions), `sink.mid_produce` (a Kafka sink queued
/// a record of its commit) and `cdc.before_ack` (the sink committed, the change feed is not
/// yet acknowledged). Tests use it to prove nothing is lost or applied twice; never set it
/// in production. The variable is read once per process.
pub fn failpoint(point: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    struct Spec {
        point: String,
        nth: u64,
        delay_ms: u64,
    }
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let text = std::env::var("DPONE_FAILPOINT").ok()?;
        let (rest, delay_ms) = match text.split_once('+') {
            Some((rest, ms)) => (rest, ms.parse().unwrap_or(0)),
            None => (text.as_str(), 0),
        };
        let (point, nth) = match rest.split_once('@') {
            Some((point, n)) => (point, n.parse().unwrap_or(1)),
            None => (rest, 1),
        };
        Some(Spec {
            point: point.to_string(),
            nth,
            delay_ms,
        })
    });
    let Some(spec) = spec else {
        return;
    };
    if spec.point == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 == spec.nth {
        std::thread::sleep(std::time::Duration::from_millis(spec.delay_ms));
        eprintln!("failpoint {point}: aborting the process");
        std::process::abort();
    }
}
