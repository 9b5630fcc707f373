//! `xmin`: incremental loads from PostgreSQL by transaction id, merged by key.
//!
//! Each run reads the safe upper bound, the oldest transaction still running at the source
//! minus one (64-bit, from `pg_snapshot_xmin(pg_current_snapshot())`), and stages the rows
//! whose transaction id lies in `(stored bound, upper bound]`. A transaction in flight during
//! the run is above the bound, so its rows are loaded by a later run once it commits; the
//! 64-bit ids mean wraparound needs no resync. Staged rows are merged by `unique_key`
//! (delete matching keys, insert) in one transaction that also stores the new bound.
//!
//! Deleted rows leave no row with a new xmin behind, so deletes are not propagated: use
//! `snapshot_diff` or `cdc` for that. State: `xmin` (the last loaded upper bound).

use dpone_strategy_sdk::source::{self, ScanBounds, XminBound};
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, UNIQUE_KEY,
    Value, check_keys, finalize, info, required, scratch, stage, state, transactional_needs,
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
        if !source::describe()?.capabilities.xmin {
            return Err(DponeError::Unsupported(
                "xmin needs a source with transaction ids (PostgreSQL)".into(),
            ));
        }
        let after = match state::get(BOUND_STATE_KEY)? {
            None => None,
            Some(Value::Int(bound)) => Some(u64::try_from(bound).unwrap_or(0)),
            Some(other) => {
                return Err(DponeError::State(format!(
                    "state entry `xmin` is not an integer: {other:?}"
                )));
            }
        };
        let up_to = source::xmin_horizon()?;
        if after.is_some_and(|a| a >= up_to) {
            info(&format!(
                "no transaction finished since xid {up_to}: nothing to load"
            ));
            return Ok(RunSummary {
                rows_read: 0,
                rows_written: 0,
                rows_deleted: 0,
                message: "no new transactions".into(),
            });
        }
        info(&format!(
            "loading rows of transactions in ({}, {up_to}]",
            after.map_or("start".into(), |a| a.to_string())
        ));
        let bounds = ScanBounds {
            cursor: None,
            filter: Vec::new(),
            limit: None,
            xmin: Some(XminBound { after, up_to }),
        };
        let staged = stage(&bounds, &scratch())?;
        check_keys(&staged.staging, &key)?;
        let bound = Value::Int(
            i64::try_from(up_to)
                .map_err(|_| DponeError::Source(format!("xid {up_to} out of range")))?,
        );
        let (rows_deleted, rows_written) = finalize(|| {
            // The bound advances even when no row changed: those transactions are done.
            state::put(BOUND_STATE_KEY, &bound);
            if staged.is_empty() {
                return Ok((0, 0));
            }
            let (deleted, inserted) = staged.merge_by_key(&key)?;
            Ok((deleted, inserted))
        })?;
        Ok(staged.finish(
            rows_written,
            rows_deleted,
            format!("merged {rows_written} rows of transactions up to xid {up_to}"),
        ))
    }
}

dpone_strategy_sdk::export_strategy!(Xmin);
