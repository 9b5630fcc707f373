//! The WASI a strategy sees: nothing. Components built with Rust's std for
//! `wasm32-wasip2` import `wasi:cli` and `wasi:io` even when unused, so the host links
//! WASI p2 with an empty context: no arguments, no environment variables, no preopened
//! directories, stdin empty and stdout/stderr discarded. Every other WASI interface
//! (files, sockets, clocks, random) is refused when the component is loaded
//! ([`super::engine`]); the explicit network denial below is defense in depth.

use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// The locked-down WASI context of every strategy instance.
pub fn wasi_ctx() -> WasiCtx {
    WasiCtxBuilder::new()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}
