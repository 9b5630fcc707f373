//! `sandbox_probe`: a hostile component for the host's sandbox tests. Never use it in a
//! pipeline.
//!
//! Its `run` attempts what option `attack` names, against option `target` where one is
//! needed:
//! - `loop`: spins forever (fuel or epoch deadlines must stop it);
//! - `alloc`: allocates and touches 1 GiB in 1 MiB chunks (the memory cap must stop it);
//! - `env`: reads the environment variable `target` and counts all variables;
//! - `state_bytes`: stages 64 KiB state values under new keys until the host refuses;
//! - `state_entries`: stages tiny state values under new keys until the host refuses;
//! - `distinct_values`: asks staging for `u32::MAX` distinct values;
//! - `mistyped_staging`: stages the source with its first column declared `float64` whatever
//!   its type, then loads the source into it;
//! - `swap_scratch`: swaps a scratch staging table in for the target;
//! - `swap`: swaps a publishable staging table in, whatever the sink declares;
//! - `call_loop`: counts a scratch staging table's rows forever (fuel must count host
//!   work);
//! - `lock_loop`: creates the target, begins, `truncate-and-insert`s it, then loops on
//!   cheap host calls inside the open transaction (the deadline must end it and free the
//!   target's lock);
//! - `noisy`: logs, reports a progress phase and fails with text full of escape sequences
//!   and newlines, then floods the log with 4 KiB lines;
//! - `grow_host`: over and over, stages 30 MB state values, names a 1 MB column and logs
//!   1 MB lines (the host's memory must stay flat);
//! - `unknown_column`: creates the target, then `delete-where`s on a column it lacks;
//! - `bad_decimal`: creates the target, then `delete-where`s with malformed decimal text;
//! - `ack_beyond`: opens the change feed, then acknowledges a position far past its window.
//!
//! A successful `env` attack returns `ok` with a message saying what leaked (`LEAKED ...`);
//! a blocked one returns `unsupported("blocked: <error>")`; the host's own refusals come
//! back as they are. The first three attacks touch no source, sink or state; the others
//! create staging tables (the host drops them) and stage state that is never committed. Its sibling `sandbox_escape` tries files, sockets and the clock: those need WASI
//! imports that `limits.wasi: strict` refuses at load, so they live in a component of their
//! own.

use std::hint::black_box;

use dpone_strategy_sdk::sink::{StagingKind, StagingOptions};
use dpone_strategy_sdk::types::{CompareTerm, Comparison, DataType};
use dpone_strategy_sdk::{
    CapabilityNeeds, DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo,
    Term, Value, invalid_config, log, optional, required, scratch, sink, source, state,
    whole_source,
};

const ATTACK: &str = "attack";
const TARGET: &str = "target";
const MIB: usize = 1 << 20;

struct SandboxProbe;

impl Guest for SandboxProbe {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "sandbox_probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test-only hostile component that attempts to escape the sandbox.".into(),
            options: vec![
                required(
                    ATTACK,
                    OptionKind::Text,
                    "One of loop, alloc, env, state_bytes, state_entries, distinct_values, mistyped_staging, swap_scratch, swap, call_loop, lock_loop, noisy, grow_host, unknown_column, bad_decimal, ack_beyond.",
                ),
                optional(
                    TARGET,
                    OptionKind::Text,
                    "The environment variable the env attack reads.",
                ),
            ],
            needs: CapabilityNeeds {
                transactions: false,
                rename_swap: false,
                mutable_target: false,
            },
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let message = match options.required_text(ATTACK)?.as_str() {
            "loop" => spin(),
            "alloc" => alloc_gib(),
            "env" => read_env(&options.required_text(TARGET)?),
            "state_bytes" => flood_state(64 * 1024),
            "state_entries" => flood_state(1),
            "distinct_values" => all_distinct_values(),
            "mistyped_staging" => mistyped_staging(),
            "swap_scratch" => swap_in(StagingKind::Scratch),
            "swap" => swap_in(StagingKind::Publishable),
            "call_loop" => call_loop(),
            "lock_loop" => lock_loop(),
            "noisy" => noisy(),
            "grow_host" => grow_host(),
            "unknown_column" => delete_where(Term::IsNull("no_such_column".into())),
            "ack_beyond" => ack_beyond(),
            "bad_decimal" => delete_where(Term::Compare(CompareTerm {
                column: source::describe()?.schema.columns[0].name.clone(),
                op: Comparison::Eq,
                value: Value::Decimal("12;DROP TABLE t".into()),
            })),
            other => Err(invalid_config(ATTACK, &format!("unknown attack {other:?}"))),
        }?;
        Ok(RunSummary {
            rows_read: 0,
            rows_written: 0,
            rows_deleted: 0,
            message,
        })
    }
}

fn spin() -> ! {
    let mut turns = 0_u64;
    loop {
        // black_box keeps the optimizer from proving the loop has no effect.
        turns = black_box(turns.wrapping_add(1));
    }
}

fn alloc_gib() -> Result<String, DponeError> {
    let chunks: Vec<Vec<u8>> = (0..1024)
        // A non-zero fill writes every page, so the memory is really committed.
        .map(|_| black_box(vec![1_u8; MIB]))
        .collect();
    let total: usize = black_box(&chunks).iter().map(Vec::len).sum();
    Ok(format!("allocated {} MiB", total / MIB))
}

fn read_env(name: &str) -> Result<String, DponeError> {
    let count = std::env::vars().count();
    match std::env::var(name) {
        Ok(value) => Ok(format!(
            "LEAKED env: {name}={value} ({count} variables visible)"
        )),
        Err(_) if count > 0 => Ok(format!("LEAKED env: {count} variables visible")),
        Err(err) => Err(blocked_by(format!("{name}: {err}; no variables visible"))),
    }
}

/// Stages `size`-byte values under new keys; a host without a budget would keep them all.
fn flood_state(size: usize) -> Result<String, DponeError> {
    let value = Value::Text("x".repeat(size));
    for n in 0..1_000_000 {
        state::put(&format!("flood.{n}"), &value)?;
    }
    Ok("LEAKED state: a million entries staged".into())
}

fn all_distinct_values() -> Result<String, DponeError> {
    let schema = source::describe()?.schema;
    let staging = sink::create_staging(&schema, &scratch())?;
    let values = staging.distinct_values(&schema.columns[0].name, u32::MAX)?;
    Ok(format!("LEAKED distinct values: {} returned", values.len()))
}

fn mistyped_staging() -> Result<String, DponeError> {
    let mut schema = source::describe()?.schema;
    schema.columns[0].data_type = DataType::Float64;
    let staging = sink::create_staging(&schema, &scratch())?;
    let stats = sink::load(&staging, &source::open_scan(&whole_source())?)?;
    Ok(format!("LEAKED mistyped load: {} rows", stats.rows))
}

fn swap_in(kind: StagingKind) -> Result<String, DponeError> {
    let schema = source::describe()?.schema;
    sink::ensure_target(&schema, &[])?;
    let staging = sink::create_staging(
        &schema,
        &StagingOptions {
            kind,
            row_hash: None,
        },
    )?;
    sink::begin()?;
    sink::swap(staging)?;
    sink::commit()?;
    Ok(format!("LEAKED swap of a {kind:?} staging table"))
}

fn call_loop() -> Result<String, DponeError> {
    let staging = sink::create_staging(&source::describe()?.schema, &scratch())?;
    loop {
        staging.row_count()?;
    }
}

fn lock_loop() -> Result<String, DponeError> {
    let schema = source::describe()?.schema;
    sink::ensure_target(&schema, &[])?;
    let staging = sink::create_staging(&schema, &scratch())?;
    sink::load(&staging, &source::open_scan(&whole_source())?)?;
    sink::begin()?;
    sink::truncate_and_insert(&staging)?;
    loop {
        staging.row_count()?;
    }
}

/// Text a terminal would act on: clear screen, window title, colour, a forged log line.
const HOSTILE: &str = "\x1b[2J\x1b]0;owned\x07\u{9b}31m\nERROR forged line\r\u{202e}";

fn noisy() -> Result<String, DponeError> {
    log::log(log::Level::Warn, HOSTILE);
    log::progress(HOSTILE, 1, None);
    let line = format!("{HOSTILE}{}", "y".repeat(4096));
    for _ in 0..100_000 {
        log::log(log::Level::Info, &line);
    }
    Err(DponeError::Source(HOSTILE.repeat(10_000)))
}

fn grow_host() -> Result<String, DponeError> {
    let big = Value::Text("v".repeat(30 * MIB));
    let long_name = "c".repeat(MIB);
    let line = "l".repeat(MIB);
    let schema = source::describe()?.schema;
    for n in 0..100 {
        // Every one of these is refused; a host that kept a copy would grow by 32 MB a turn.
        let _ = state::put(&format!("big.{n}"), &big);
        let _ = sink::delete_where(&[Term::IsNull(long_name.clone())]);
        let mut named = schema.clone();
        named.columns[0].name = long_name.clone();
        let _ = sink::create_staging(&named, &scratch());
        log::log(log::Level::Info, &line);
    }
    Ok("done".into())
}

fn ack_beyond() -> Result<String, DponeError> {
    let window = source::open_feed(None)?;
    source::ack_feed("pg:FFFFFFFF/0")?;
    Ok(format!("LEAKED ack past {}", window.up_to))
}

fn delete_where(term: Term) -> Result<String, DponeError> {
    let schema = source::describe()?.schema;
    sink::ensure_target(&schema, &[])?;
    let deleted = sink::delete_where(&[term])?;
    Ok(format!("LEAKED delete-where: {deleted} rows deleted"))
}

fn blocked_by(err: impl std::fmt::Display) -> DponeError {
    DponeError::Unsupported(format!("blocked: {err}"))
}

dpone_strategy_sdk::export_strategy!(SandboxProbe);
