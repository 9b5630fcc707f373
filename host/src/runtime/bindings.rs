//! The one `bindgen!` of the host, over `wit/strategy.wit`.
//!
//! Imports are async (they do I/O) and trappable: a host function returns
//! `Result<T, crate::Error>`, and `types::Host::convert_dpone_error` decides whether the error
//! becomes the guest-visible `dpone-error` or a trap (host bugs only).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "strategy",
    imports: { default: async | trappable },
    exports: { default: async },
    trappable_error_type: {
        "dpone:strategy/types.dpone-error" => crate::error::Error,
    },
    with: {
        "dpone:strategy/source.scan": crate::runtime::host::ScanHandle,
        "dpone:strategy/sink.staging": crate::runtime::host::StagingHandle,
    },
    additional_derives: [PartialEq],
});
