//! The WASI a strategy sees: a deterministic, empty world.
//!
//! Components built with Rust's std for `wasm32-wasip2` import `wasi:cli` and `wasi:io`
//! even when unused; a Python or JavaScript component's runtime also imports clocks,
//! randomness, files and sockets. The host links all of WASI p2 with a context that shows
//! nothing of the machine:
//! - no arguments, no environment variables, stdin empty, stdout and stderr discarded;
//! - no preopened directory, so every path fails to open;
//! - no TCP, UDP or name lookup: every address is refused and every lookup fails;
//! - both clocks frozen at the run's logical time (`clock.now`), so a component reads the
//!   same time as the contract gives it;
//! - random bytes from a SHA-256 counter stream seeded by the run id: the same run id gives
//!   the same stream on any machine (how a component's reads split it is the component's).
//!
//! What a component may import at all is the mode's (`limits.wasi`, [`WasiMode`]): `virtual`
//! links the interfaces above, `strict` refuses a component that imports clocks, random,
//! files or sockets when it is loaded ([`super::engine`]).

use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// Which WASI interfaces a strategy may import (`limits.wasi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WasiMode {
    /// Clocks, random, files and sockets are linked, deterministic and empty (see the
    /// module docs): components of any language run, and still see only their inputs.
    #[default]
    Virtual,
    /// Only `wasi:cli` and `wasi:io` (served empty): a component importing anything else
    /// is refused before it runs, so a strategy provably never asks for the outside world.
    Strict,
}

impl WasiMode {
    /// Import namespaces a component may have in this mode.
    pub fn allowed_imports(self) -> &'static [&'static str] {
        const STRICT: &[&str] = &["dpone:strategy/", "wasi:io/", "wasi:cli/"];
        const VIRTUAL: &[&str] = &[
            "dpone:strategy/",
            "wasi:io/",
            "wasi:cli/",
            "wasi:clocks/",
            "wasi:random/",
            "wasi:filesystem/",
            "wasi:sockets/",
        ];
        match self {
            WasiMode::Virtual => VIRTUAL,
            WasiMode::Strict => STRICT,
        }
    }
}

/// The WASI context of one strategy instance: `run_id` seeds its randomness and
/// `now_micros` (the run's logical time) is what its clocks read. Describe-only
/// instances get an empty run id and time 0.
pub fn wasi_ctx(run_id: &str, now_micros: i64) -> WasiCtx {
    let clock = Frozen(now_micros);
    WasiCtxBuilder::new()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .wall_clock(clock)
        .monotonic_clock(clock)
        .secure_random(Stream::new(run_id, "random"))
        .insecure_random(Stream::new(run_id, "insecure"))
        .insecure_random_seed(u128::from_le_bytes(
            Stream::new(run_id, "insecure-seed").next_block()[..16]
                .try_into()
                .expect("a SHA-256 block has 32 bytes"),
        ))
        .build()
}

/// Both clocks, frozen at the run's logical time. Frozen rather than advancing with the
/// fuel spent: fuel counts the language runtime's instructions, so a clock tied to it would
/// move differently after a rebuild of the same strategy, and a run's decisions would depend
/// on the interpreter version. A loop that waits for time to pass spins until `limits.fuel`
/// stops it, which names the cause.
#[derive(Debug, Clone, Copy)]
struct Frozen(i64);

impl HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        Duration::from_micros(u64::try_from(self.0).unwrap_or(0))
    }
}

impl HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0).unwrap_or(0).saturating_mul(1_000)
    }
}

/// A deterministic byte stream: block `i` is SHA-256(seed, i), where the seed is SHA-256 of
/// the run id and the stream's label (secure and insecure randomness differ).
struct Stream {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl Stream {
    fn new(run_id: &str, label: &str) -> Self {
        let seed = Sha256::new()
            .chain_update(b"dpone wasi random\0")
            .chain_update(label)
            .chain_update(b"\0")
            .chain_update(run_id)
            .finalize()
            .into();
        Stream {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn next_block(&mut self) -> [u8; 32] {
        let block = Sha256::new()
            .chain_update(self.seed)
            .chain_update(self.counter.to_le_bytes())
            .finalize()
            .into();
        self.counter += 1;
        block
    }
}

impl rand_core::TryRng for Stream {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for byte in dst {
            if self.used == self.block.len() {
                self.block = self.next_block();
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand_core::Rng;

    use super::*;

    fn bytes(run_id: &str, label: &str, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        Stream::new(run_id, label).fill_bytes(&mut out);
        out
    }

    #[test]
    fn the_same_run_id_gives_the_same_bytes_and_another_differs() {
        assert_eq!(bytes("run-a", "random", 100), bytes("run-a", "random", 100));
        assert_ne!(bytes("run-a", "random", 100), bytes("run-b", "random", 100));
        assert_ne!(bytes("run-a", "random", 32), bytes("run-a", "insecure", 32));
    }

    #[test]
    fn reads_of_any_size_continue_one_stream() {
        let whole = bytes("run-a", "random", 70);
        let mut stream = Stream::new("run-a", "random");
        let mut parts = vec![0; 70];
        let (a, rest) = parts.split_at_mut(5);
        let (b, c) = rest.split_at_mut(40);
        stream.fill_bytes(a);
        stream.fill_bytes(b);
        stream.fill_bytes(c);
        assert_eq!(parts, whole);
    }

    #[test]
    fn clocks_read_the_logical_time() {
        let t = Frozen(1_700_000_000_123_456);
        assert_eq!(
            HostWallClock::now(&t),
            Duration::from_micros(1_700_000_000_123_456)
        );
        assert_eq!(HostMonotonicClock::now(&t), 1_700_000_000_123_456_000);
        assert_eq!(HostWallClock::now(&Frozen(-5)), Duration::ZERO);
    }
}
