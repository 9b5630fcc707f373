//! Guest SDK for dpone load strategies.
//!
//! Holds the only bindings of the `dpone:strategy/strategy` world (from `wit/` at the
//! repository root) and the flow every built-in strategy shares: read options, stage the
//! source, check keys, finalize in one sink transaction, then commit state.
//!
//! A strategy crate is a `cdylib` that implements [`Guest`] and exports it:
//!
//! ```ignore
//! struct FullRefresh;
//! impl dpone_strategy_sdk::Guest for FullRefresh { /* describe, run */ }
//! dpone_strategy_sdk::export_strategy!(FullRefresh);
//! ```

mod flow;
mod options;

/// Generated bindings of the `strategy` world.
///
/// Generated in a module rather than at the crate root because `pub_export_macro` places the
/// macros at the root as well, and the two definitions would clash.
#[allow(
    unsafe_code,
    reason = "the component ABI glue wit-bindgen generates is unsafe"
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "strategy",
        pub_export_macro: true,
        export_macro_name: "export_strategy",
        // The export macro expands in strategy crates, which reach the bindings through here.
        default_bindings_module: "dpone_strategy_sdk::bindings",
    });
}

pub use bindings::dpone::strategy::types::{Schema, Value};
pub use bindings::dpone::strategy::{clock, log, sink, source, state, types};
pub use bindings::{
    CapabilityNeeds, DponeError, Guest, OptionKind, OptionSpec, OptionValue, RunContext,
    RunSummary, StrategyInfo, Term, export_strategy,
};
pub use flow::{
    MAX_PARTITIONS, NATIVE_MODE, NativeMode, Staged, check_keys, drop_staging, finalize,
    native_mode, partition_options, partition_scope, replace_partitions, replace_scope, scratch,
    stage, stage_incremental, stage_scan, staged_partitions, whole_source,
};
pub use options::{CURSOR_COLUMN, Options, UNIQUE_KEY, invalid_config, optional, required};

/// Needs of a strategy that finalizes in one sink transaction; `mutable_target` when it
/// deletes or rewrites target rows.
pub const fn transactional_needs(mutable_target: bool) -> CapabilityNeeds {
    CapabilityNeeds {
        transactions: true,
        rename_swap: false,
        mutable_target,
    }
}

/// Logs `message` at info level.
pub fn info(message: &str) {
    log::log(log::Level::Info, message);
}

/// Logs `message` at warn level.
pub fn warn(message: &str) {
    log::log(log::Level::Warn, message);
}
