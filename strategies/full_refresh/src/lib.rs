//! `full_refresh`: the target becomes exactly the source, published atomically.
//!
//! Stages the whole source and, when `unique_key` is given, fails on NULL or duplicate keys
//! before the target's rows are touched. Publishes by swapping staging in for the target
//! when the sink can rename-swap (the target is created first, empty, when missing, because
//! publishable staging is modelled on it), otherwise by truncate + insert; either way in one
//! transaction.
//!
//! State: `last_full_refresh_at` (timestamp-tz, the run's logical start), committed with
//! the publish.

use dpone_strategy_sdk::sink::StagingKind;
use dpone_strategy_sdk::source::{self, ScanBounds};
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, UNIQUE_KEY,
    Value, check_keys, clock, drop_staging, finalize, info, optional, sink, stage, state,
    transactional_needs,
};

const LAST_RUN_STATE_KEY: &str = "last_full_refresh_at";

struct FullRefresh;

impl Guest for FullRefresh {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "full_refresh".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Replaces the whole target with the source, atomically.".into(),
            options: vec![optional(
                UNIQUE_KEY,
                OptionKind::TextList,
                "Key columns that must be non-NULL and unique in the source; the primary key of a created target.",
            )],
            needs: transactional_needs(true),
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let key = Options::new(ctx.options).text_list(UNIQUE_KEY)?;
        let capabilities = sink::capabilities();
        // Checked before staging so an unsuitable sink costs no load.
        if !capabilities.transactions {
            return Err(DponeError::Unsupported(
                "full_refresh needs a sink with transactions to publish the target atomically"
                    .into(),
            ));
        }

        let kind = if capabilities.rename_swap {
            // Publishable staging is created like the target, so the target must exist first.
            sink::ensure_target(&source::describe()?.schema, &key)?;
            StagingKind::Publishable
        } else {
            StagingKind::Scratch
        };
        let whole_source = ScanBounds {
            cursor: None,
            filter: Vec::new(),
            limit: None,
        };
        let staged = stage(&whole_source, kind)?;
        check_keys(&staged.staging, &key)?;
        let rows_read = staged.stats.rows;
        let refreshed_at = Value::TimestampTz(clock::now());

        let (rows_written, how) = if capabilities.rename_swap {
            info("finalize: swapping staging in for the target");
            finalize(|| {
                sink::swap(staged.staging)?;
                state::put(LAST_RUN_STATE_KEY, &refreshed_at);
                Ok(())
            })?;
            (rows_read, "swapped in")
        } else {
            info("finalize: truncating the target and inserting staging");
            // Outside the transaction so the first run has a target to truncate, and only
            // now so a key violation leaves a missing target missing.
            sink::ensure_target(&staged.schema, &key)?;
            let written = finalize(|| {
                let written = sink::truncate_and_insert(&staged.staging)?;
                state::put(LAST_RUN_STATE_KEY, &refreshed_at);
                Ok(written)
            })?;
            drop_staging(staged.staging);
            (written, "truncated and reloaded")
        };

        Ok(RunSummary {
            rows_read,
            rows_written,
            // Neither swap nor truncate reports how many rows the old target had.
            rows_deleted: 0,
            message: format!("target {how} with {rows_written} rows"),
        })
    }
}

dpone_strategy_sdk::export_strategy!(FullRefresh);
