//! `xmin`: incremental loads by row version (PostgreSQL: the transaction id `xmin`), merged
//! by key.
//!
//! Each run asks the source for its safe upper row-version bound (on PostgreSQL the oldest
//! transaction still running minus one, 64-bit, so wraparound needs no resync) and stages
//! the rows whose version lies after the stored bound and at or before the new one. A
//! transaction in flight during the run is above the bound, so its rows are loaded by a
//! later run once it commits. Staged rows are merged by `unique_key` (delete matching keys,
//! insert) in one transaction that also stores the new bound.
//!
//! Bounds are positions (opaque text such as `pgxid:743`): stored as they are, compared
//! only by the host. Deleted rows leave no row with a new version behind, so deletes are not
//! propagated: use `snapshot_diff` or `cdc` for that. State: `xmin` (the last loaded bound).
//! A bound stored by dpone 0.1 (an integer) is not a position: the run loads from the start
//! once, which the merge by key makes harmless.

use dpone_strategy_sdk::source::{self, RowVersionBound, ScanBounds};
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, UNIQUE_KEY,
    Value, check_keys, finalize, info, required, scratch, stage, state, transactional_needs, warn,
};

const BOUND_STATE_KEY: &str = "xmin";

struct Xmin;

impl Guest for Xmin {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "xmin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Loads rows changed by transactions since the last run (PostgreSQL xmin), merged by key."
                .into(),
            options: vec![required(
                UNIQUE_KEY,
                OptionKind::TextList,
                "Merge key columns: non-NULL and unique in every batch; the primary key of a created target.",
            )],
            needs: transactional_needs(true),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let key = Options::new(ctx.options).required_text_list(UNIQUE_KEY)?;
        if !source::describe()?.capabilities.row_versions {
            return Err(DponeError::Unsupported(
                "xmin needs a source with row versions (PostgreSQL xmin)".into(),
            ));
        }
        let after = match state::get(BOUND_STATE_KEY)? {
            None => None,
            Some(Value::Text(bound)) => Some(bound),
            Some(other) => {
                warn(&format!(
                    "state entry `{BOUND_STATE_KEY}` is {other:?}, not a position (stored by dpone 0.1?): loading from the start once"
                ));
                None
            }
        };
        let up_to = source::row_version_horizon()?;
        if after.as_ref() == Some(&up_to) {
            info(&format!(
                "no transaction finished since {up_to}: nothing to load"
            ));
            return Ok(RunSummary {
                rows_read: 0,
                rows_written: 0,
                rows_deleted: 0,
                message: "no new transactions".into(),
            });
        }
        info(&format!(
            "loading rows of transactions after {} up to {up_to}",
            after.as_deref().unwrap_or("the start")
        ));
        let bounds = ScanBounds {
            cursor: None,
            filter: Vec::new(),
            limit: None,
            row_versions: Some(RowVersionBound {
                after,
                up_to: up_to.clone(),
            }),
            since: None,
        };
        let staged = stage(&bounds, &scratch())?;
        check_keys(&staged.staging, &key)?;
        let bound = Value::Text(up_to.clone());
        let (rows_deleted, rows_written) = finalize(|| {
            // The bound advances even when no row changed: those transactions are done.
            state::put(BOUND_STATE_KEY, &bound)?;
            if staged.is_empty() {
                return Ok((0, 0));
            }
            let (deleted, inserted) = staged.merge_by_key(&key)?;
            Ok((deleted, inserted))
        })?;
        Ok(staged.finish(
            rows_written,
            rows_deleted,
            format!("merged {rows_written} rows of transactions up to {up_to}"),
        ))
    }
}

dpone_strategy_sdk::export_strategy!(Xmin);
