//! `full_refresh`: the target becomes exactly the source, published atomically.
//!
//! Stages the whole source and, when `unique_key` is given, fails on NULL or duplicate keys
//! before the target is touched. Publishes in one transaction, by one of two paths:
//! - swap: when the target exists, the sink can rename-swap and `publish` is not `reload`,
//!   staging is created like the target (keys, indexes) and swapped in for it;
//! - reload: otherwise the target is created if missing, emptied and refilled from staging.
//!   Keeps the table itself (grants, dependent views, triggers), at the cost of a second
//!   write.
//!
//! State: `last_full_refresh_at` (timestamp-tz, the run's logical start), committed with
//! the publish.

use dpone_strategy_sdk::sink::{StagingKind, StagingOptions};
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, UNIQUE_KEY,
    Value, check_keys, clock, drop_staging, finalize, info, invalid_config, optional, sink, stage,
    state, transactional_needs, whole_source,
};

const LAST_RUN_STATE_KEY: &str = "last_full_refresh_at";
const PUBLISH: &str = "publish";

struct FullRefresh;

impl Guest for FullRefresh {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "full_refresh".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Replaces the whole target with the source, atomically.".into(),
            options: vec![
                optional(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Key columns that must be non-NULL and unique in the source; the primary key of a created target.",
                ),
                optional(
                    PUBLISH,
                    OptionKind::Text,
                    "swap (default where the sink can) or reload (keeps the table, its grants and dependent views).",
                ),
            ],
            needs: transactional_needs(true),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let key = options.text_list(UNIQUE_KEY)?;
        let reload_asked = match options.text(PUBLISH)?.as_deref() {
            None | Some("swap") => false,
            Some("reload") => true,
            Some(other) => {
                return Err(invalid_config(
                    PUBLISH,
                    &format!("`{other}` is not swap or reload"),
                ));
            }
        };
        let capabilities = sink::capabilities();
        // Checked before staging so an unsuitable sink costs no load.
        if !capabilities.transactions {
            return Err(DponeError::Unsupported(
                "full_refresh needs a sink with transactions to publish the target atomically"
                    .into(),
            ));
        }
        // Swap needs an existing target to model staging on; a first run reloads, creating
        // the target inside the publish transaction, so a failed run leaves no table behind.
        let target = sink::describe()?;
        let swap = capabilities.rename_swap && !reload_asked && target.exists;
        // Publishable staging carries the target's primary key, so on a sink that enforces
        // keys the load itself refused NULL and duplicate keys when that key is
        // `unique_key`: checking again would only rescan staging. Where keys are
        // informational (BigQuery, ClickHouse) the check always runs.
        let enforced_by_load = swap
            && capabilities.keys_enforced
            && target
                .schema
                .is_some_and(|t| !key.is_empty() && t.primary_key == key);
        let kind = if swap {
            StagingKind::Publishable
        } else {
            StagingKind::Scratch
        };
        let staged = stage(
            &whole_source(),
            &StagingOptions {
                kind,
                row_hash: None,
            },
        )?;
        if !enforced_by_load {
            check_keys(&staged.staging, &key)?;
        }
        let rows_read = staged.stats.rows;
        let refreshed_at = Value::TimestampTz(clock::now());

        let (rows_written, how) = if swap {
            info("finalize: swapping staging in for the target");
            finalize(|| {
                sink::swap(staged.staging)?;
                state::put(LAST_RUN_STATE_KEY, &refreshed_at)?;
                Ok(())
            })?;
            (rows_read, "swapped in")
        } else {
            info("finalize: reloading the target from staging");
            let written = finalize(|| {
                sink::ensure_target(&staged.schema, &key)?;
                let written = sink::truncate_and_insert(&staged.staging)?;
                state::put(LAST_RUN_STATE_KEY, &refreshed_at)?;
                Ok(written)
            })?;
            drop_staging(staged.staging);
            (written, "reloaded")
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
