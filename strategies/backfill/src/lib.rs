//! `backfill`: loads a range of the source chunk by chunk, each chunk with an inner strategy.
//!
//! The host plans the campaign from `backfill.chunk` (deterministic chunks: inclusive for
//! integers, half-open for dates and timestamps), keeps a ledger with leases in the state
//! store, runs chunks on `backfill.parallel_workers` workers and retries failed ones; see
//! `dpone-host backfill`. This component runs one chunk: it stages the source rows of the
//! chunk's range and finalizes them with `backfill.inner_mode`, in one transaction:
//!
//! - `replace`: the target rows of the chunk's range are replaced by the staged rows;
//! - `incremental_merge`: the staged rows are upserted by `unique_key`;
//! - `partition_replace`: the target partitions (`partition.column`) present in the chunk
//!   are replaced; chunks must hold whole partitions.
//!
//! Each inner mode reuses the finalization of the strategy of the same name (the shared
//! guest library), and each is idempotent per chunk, so a chunk that runs twice (its worker
//! died after the commit, before the ledger heard of it) leaves the same target.

use dpone_strategy_sdk::source::ScanBounds;
use dpone_strategy_sdk::{
    DponeError, Guest, MAX_PARTITIONS, NATIVE_MODE, OptionKind, Options, RunContext, RunSummary,
    StrategyInfo, Term, UNIQUE_KEY, check_keys, finalize, info, invalid_config, optional,
    partition_options, replace_partitions, replace_scope, required, scratch, stage,
    staged_partitions, transactional_needs,
};

const INNER_MODE: &str = "backfill.inner_mode";
const PARTITION_COLUMN: &str = "partition.column";

/// Options the host reads to plan and run the campaign; declared here so the manifest is
/// checked against them like any other option.
const CAMPAIGN_OPTIONS: [(&str, OptionKind, bool, &str); 8] = [
    (
        "backfill.chunk.column",
        OptionKind::Text,
        true,
        "The column the range is split on: an integer, date or timestamp column.",
    ),
    (
        "backfill.chunk.from",
        OptionKind::Text,
        true,
        "Start of the range (inclusive): an integer, YYYY-MM-DD or a timestamp.",
    ),
    (
        "backfill.chunk.to",
        OptionKind::Text,
        true,
        "End of the range: inclusive for integers, exclusive for dates and timestamps.",
    ),
    (
        "backfill.chunk.step",
        OptionKind::Text,
        true,
        "Chunk width: an integer for integer columns, `N days`, `N hours` or `N minutes` otherwise.",
    ),
    (
        "backfill.parallel_workers",
        OptionKind::Integer,
        false,
        "Chunks run at once by this process (default 1, at most 32).",
    ),
    (
        "backfill.max_chunks",
        OptionKind::Integer,
        false,
        "Most chunks one invocation runs (default: all); `backfill resume` continues.",
    ),
    (
        "backfill.retry_policy.max_attempts",
        OptionKind::Integer,
        false,
        "Attempts per chunk before it is marked failed (default 3); `backfill retry-failed` resets them.",
    ),
    (
        "backfill.retry_policy.lease_seconds",
        OptionKind::Integer,
        false,
        "How long a worker's claim on a chunk lasts without renewal (default 300): a dead worker's chunk is retried after it.",
    ),
];

struct Backfill;

impl Guest for Backfill {
    fn describe() -> StrategyInfo {
        let mut options = vec![
            required(
                INNER_MODE,
                OptionKind::Text,
                "How each chunk is finalized: replace, incremental_merge or partition_replace.",
            ),
            optional(
                UNIQUE_KEY,
                OptionKind::TextList,
                "Key columns: required by incremental_merge, checked (non-NULL, unique) per chunk otherwise; the primary key of a created target.",
            ),
            optional(
                PARTITION_COLUMN,
                OptionKind::Text,
                "partition_replace: the partition column.",
            ),
            optional(
                MAX_PARTITIONS,
                OptionKind::Integer,
                "partition_replace: most partitions one chunk may replace (default 100).",
            ),
            optional(
                NATIVE_MODE,
                OptionKind::Text,
                "partition_replace: auto (default), required or fallback, as for partition_replace.",
            ),
        ];
        options.extend(CAMPAIGN_OPTIONS.iter().map(|(name, kind, req, text)| {
            if *req {
                required(name, *kind, text)
            } else {
                optional(name, *kind, text)
            }
        }));
        StrategyInfo {
            name: "backfill".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Loads a range chunk by chunk (resumable, retryable, parallel), each chunk with an inner strategy.".into(),
            options,
            needs: transactional_needs(true),
            chunked: true,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let chunk = ctx.chunk.ok_or_else(|| {
            DponeError::Unsupported(
                "backfill runs one chunk per call; run it with `dpone-host backfill run`".into(),
            )
        })?;
        let options = Options::new(ctx.options);
        let mode = options.required_text(INNER_MODE)?;
        let key = options.text_list(UNIQUE_KEY)?;
        let range = vec![Term::Range(chunk.range.clone())];
        let label = format!("chunk {}/{}", chunk.index + 1, chunk.total);
        let partitions = match mode.as_str() {
            "replace" => None,
            "incremental_merge" if key.is_empty() => {
                return Err(invalid_config(
                    UNIQUE_KEY,
                    "required when backfill.inner_mode is incremental_merge",
                ));
            }
            "incremental_merge" => None,
            "partition_replace" => {
                let column = options.text(PARTITION_COLUMN)?.ok_or_else(|| {
                    invalid_config(
                        PARTITION_COLUMN,
                        "required when backfill.inner_mode is partition_replace",
                    )
                })?;
                let (max, mode) = partition_options(&options)?;
                Some((column, max, mode))
            }
            other => {
                return Err(invalid_config(
                    INNER_MODE,
                    &format!("`{other}` is not replace, incremental_merge or partition_replace"),
                ));
            }
        };

        let bounds = ScanBounds {
            cursor: None,
            filter: range.clone(),
            limit: None,
            row_versions: None,
            since: None,
        };
        let staged = stage(&bounds, &scratch())?;
        check_keys(&staged.staging, &key)?;
        let found = match &partitions {
            Some((column, max, native)) => {
                let found =
                    staged_partitions(&staged, column, *max, PARTITION_COLUMN, MAX_PARTITIONS)?;
                Some((column, found, *native))
            }
            None => None,
        };
        info(&format!("{label}: finalizing with {mode}"));
        let (rows_deleted, rows_written) = finalize(|| match (found.clone(), mode.as_str()) {
            (Some((column, values, native)), _) => {
                replace_partitions(&staged, column, values, &key, native)
            }
            (None, "incremental_merge") => staged.merge_by_key(&key),
            // replace: an empty chunk empties its range of the target, like `replace`.
            (None, _) => replace_scope(&staged, &range, &key),
        })?;
        Ok(staged.finish(
            rows_written,
            rows_deleted,
            format!("{label} ({mode}): {rows_deleted} rows out, {rows_written} in"),
        ))
    }
}

dpone_strategy_sdk::export_strategy!(Backfill);
