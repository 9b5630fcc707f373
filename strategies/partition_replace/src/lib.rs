//! `partition_replace`: replaces exactly the target partitions present in staging.
//!
//! Stages the source rows (all of them, or those matching `predicate`), reads the distinct
//! values of `partition.column` in staging, and fails before the target is touched when
//! there are more than `partition.max_partitions_per_run` of them or one is NULL. Then, in
//! one transaction, deletes the target rows of those partitions and inserts staging:
//! partitions absent from staging are never touched.
//!
//! `partition.native_mode` chooses the path: `auto` (the default) swaps native partitions
//! where the sink and the target allow it (PostgreSQL: a target declaratively partitioned
//! by `partition.column` alone, each touched partition holding only staged values) and
//! deletes + inserts otherwise; `required` fails instead of falling back; `fallback` always
//! deletes + inserts. Append-only sinks are refused. State: `last_partitions` (how many partitions the last run replaced).

use dpone_strategy_sdk::source::ScanBounds;
use dpone_strategy_sdk::{
    DponeError, Guest, MAX_PARTITIONS, NATIVE_MODE, OptionKind, Options, RunContext, RunSummary,
    StrategyInfo, UNIQUE_KEY, Value, check_keys, finalize, info, optional, partition_options,
    replace_partitions, required, scratch, sink, stage, staged_partitions, state,
    transactional_needs,
};

const COLUMN: &str = "partition.column";
const PREDICATE: &str = "predicate";

struct PartitionReplace;

impl Guest for PartitionReplace {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "partition_replace".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Replaces exactly the target partitions present in the staged source rows.".into(),
            options: vec![
                required(
                    COLUMN,
                    OptionKind::Text,
                    "The partition column: its distinct staged values are the partitions replaced.",
                ),
                optional(
                    MAX_PARTITIONS,
                    OptionKind::Integer,
                    "Most partitions one run may replace (default 100); more fails the run before any change.",
                ),
                optional(
                    NATIVE_MODE,
                    OptionKind::Text,
                    "auto (default), required (fail without native partitions) or fallback (scoped delete + insert).",
                ),
                optional(
                    PREDICATE,
                    OptionKind::Filter,
                    "Which source rows to stage (default all): select complete partitions only.",
                ),
                optional(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Key columns that must be non-NULL and unique in staging; the primary key of a created target.",
                ),
            ],
            needs: transactional_needs(true),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let column = options.required_text(COLUMN)?;
        let (max, mode) = partition_options(&options)?;
        if sink::capabilities().append_only_log {
            return Err(DponeError::Unsupported(
                "partition_replace cannot run on an append-only log: it has no partitions to replace".into(),
            ));
        }
        let key = options.text_list(UNIQUE_KEY)?;
        let bounds = ScanBounds {
            cursor: None,
            filter: options.filter(PREDICATE)?,
            limit: None,
            row_versions: None,
            since: None,
        };

        let staged = stage(&bounds, &scratch())?;
        let partitions = staged_partitions(&staged, &column, max, COLUMN, MAX_PARTITIONS)?;
        check_keys(&staged.staging, &key)?;
        if partitions.is_empty() {
            return Ok(staged.finish_empty());
        }
        let count = partitions.len();
        info(&format!(
            "finalize: replacing {count} partitions of `{column}`"
        ));
        let (rows_deleted, rows_written) = finalize(|| {
            let replaced = replace_partitions(&staged, &column, partitions, &key, mode)?;
            state::put("last_partitions", &Value::Int(count as i64))?;
            Ok(replaced)
        })?;
        Ok(staged.finish(
            rows_written,
            rows_deleted,
            format!("replaced {count} partitions: {rows_deleted} rows out, {rows_written} in"),
        ))
    }
}

dpone_strategy_sdk::export_strategy!(PartitionReplace);
