//! `replace`: replaces exactly the target rows inside a window given by a predicate.
//!
//! Stages the source rows matching `predicate` and, when `unique_key` is given, fails on NULL
//! or duplicate keys among them before the target is touched. Then, in one transaction,
//! deletes the target rows matching `predicate` and inserts staging; rows outside the window
//! are never touched. An empty window empties that window of the target.
//!
//! State: `last_window_rows` (int, rows inserted into the window), committed with the replace.

use dpone_strategy_sdk::source::ScanBounds;
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, UNIQUE_KEY,
    Value, check_keys, finalize, optional, replace_scope, required, scratch, stage, state,
    transactional_needs,
};

const PREDICATE: &str = "predicate";
const WINDOW_ROWS_STATE_KEY: &str = "last_window_rows";

struct Replace;

impl Guest for Replace {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "replace".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Replaces the target rows matching a predicate with the matching source rows."
                    .into(),
            options: vec![
                required(
                    PREDICATE,
                    OptionKind::Filter,
                    "The window to replace, applied to both source and target; at least one term.",
                ),
                optional(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Key columns that must be non-NULL and unique in the window; the primary key of a created target.",
                ),
            ],
            needs: transactional_needs(true),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let predicate = options.required_filter(PREDICATE)?;
        let key = options.text_list(UNIQUE_KEY)?;

        let window = ScanBounds {
            cursor: None,
            filter: predicate.clone(),
            limit: None,
            row_versions: None,
            since: None,
        };
        let staged = stage(&window, &scratch())?;
        check_keys(&staged.staging, &key)?;
        let (rows_deleted, rows_written) = finalize(|| {
            let (deleted, inserted) = replace_scope(&staged, &predicate, &key)?;
            let window_rows = i64::try_from(inserted).unwrap_or(i64::MAX);
            state::put(WINDOW_ROWS_STATE_KEY, &Value::Int(window_rows))?;
            Ok((deleted, inserted))
        })?;
        Ok(staged.finish(
            rows_written,
            rows_deleted,
            format!("replaced {rows_deleted} rows of the window with {rows_written}"),
        ))
    }
}

dpone_strategy_sdk::export_strategy!(Replace);
