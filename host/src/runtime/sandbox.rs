//! The WASI a strategy sees: nothing. Components built with Rust's std for
//! `wasm32-wasip2` import WASI interfaces even when unused, so the host links WASI p2 but
//! with an empty context: no preopened directories (no file can be opened), no environment
//! variables or arguments, every socket use denied, and both clocks frozen at the run's
//! logical time (time comes from `dpone:strategy/clock`, so runs are reproducible).

use std::time::Duration;

use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// A wall clock stuck at the run's logical start.
struct FrozenWallClock(Duration);

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that never advances.
struct FrozenMonotonicClock;

impl HostMonotonicClock for FrozenMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// The locked-down WASI context of every strategy instance.
pub fn wasi_ctx(clock_micros: i64) -> WasiCtx {
    let since_epoch = Duration::from_micros(u64::try_from(clock_micros).unwrap_or(0));
    WasiCtxBuilder::new()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .wall_clock(FrozenWallClock(since_epoch))
        .monotonic_clock(FrozenMonotonicClock)
        .insecure_random_seed(0)
        .build()
}
