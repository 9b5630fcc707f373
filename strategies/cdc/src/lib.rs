//! `cdc`: applies the source's change feed (PostgreSQL logical replication; SQL Server
//! change tables with its connector), in commit order.
//!
//! The feed is the pipeline's own, configured in the manifest's `source` section; the host
//! creates it when missing. Each run asks for the window that follows the stored position.
//! When the host says the feed cannot continue from it (no stored position yet, the feed
//! was created anew, or the changes after the stored position are gone: each source's gap
//! rule lives in the host), the run stages a full snapshot of the source, replaces the
//! target with it and stores the window's start. Otherwise it stages the changes of the
//! window, compacted by key (a key's last change wins), and applies them in one
//! transaction: delete the keys whose last change is a delete, delete and re-insert the
//! upserted keys, store the window's end. Only then is the feed acknowledged, so a crash
//! between the sink commit and the acknowledgement replays changes the target already has;
//! applied by key they change nothing.
//!
//! A snapshot and the changes it overlaps converge for the same reason: each key ends as its
//! last change in the log says. Positions are opaque text (`pg:16/B374D848`): this
//! component stores and passes them, never computes with them. State: `cdc.position`. A
//! position stored by dpone 0.1 (an integer) reads as none: the run takes a new snapshot.

use dpone_strategy_sdk::source::{self, ChangePart, ChangeWindow, RestartReason};
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, UNIQUE_KEY,
    Value, check_keys, finalize, info, invalid_config, optional, required, scratch, sink, stage,
    stage_scan, state, transactional_needs, warn, whole_source,
};

const POSITION_STATE_KEY: &str = "cdc.position";
const MAX_LAG_MB: &str = "cdc.max_lag_mb";
const DEFAULT_MAX_LAG_MB: i64 = 1024;

struct Cdc;

impl Guest for Cdc {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "cdc".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Applies inserts, updates and deletes from the source's change feed, in commit order.".into(),
            options: vec![
                required(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Key columns changes are applied by: the source's replica identity (its primary key); the primary key of a created target.",
                ),
                optional(
                    MAX_LAG_MB,
                    OptionKind::Integer,
                    "Warn when the feed keeps more than this much log on the source (default 1024).",
                ),
            ],
            needs: transactional_needs(true),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let key = options.required_text_list(UNIQUE_KEY)?;
        let max_lag_mb = options.integer(MAX_LAG_MB)?.unwrap_or(DEFAULT_MAX_LAG_MB);
        if max_lag_mb < 1 {
            return Err(invalid_config(MAX_LAG_MB, "must be at least 1"));
        }
        if !source::describe()?.capabilities.change_feed {
            return Err(DponeError::Unsupported(
                "cdc needs a source with a change feed (PostgreSQL logical replication, SQL Server change data capture)".into(),
            ));
        }
        let stored = match state::get(POSITION_STATE_KEY)? {
            None => None,
            Some(Value::Text(position)) => Some(position),
            Some(other) => {
                warn(&format!(
                    "state entry `{POSITION_STATE_KEY}` is {other:?}, not a position (stored by dpone 0.1?): taking a new snapshot"
                ));
                None
            }
        };
        let window = source::open_feed(stored.as_deref())?;
        let retained_mb = window.retained_bytes.unwrap_or(0) / (1024 * 1024);
        if i64::try_from(retained_mb).unwrap_or(i64::MAX) > max_lag_mb {
            warn(&format!(
                "the change feed keeps {retained_mb} MB of log on the source (more than {MAX_LAG_MB} = {max_lag_mb}): run more often, or drop the feed with `dpone-host cdc drop-slot` if this pipeline is retired"
            ));
        }
        match window.restart {
            RestartReason::None => apply_changes(&key, &window),
            RestartReason::NoStoredPosition => snapshot(&key, &window.after),
            RestartReason::FeedCreated => {
                info(
                    "the change feed was created anew, so the log has a gap: taking a new snapshot",
                );
                snapshot(&key, &window.after)
            }
            RestartReason::StoredPositionExpired => {
                info(
                    "the change feed no longer holds the changes after the stored position (acknowledged by someone else, or aged out): taking a new snapshot",
                );
                snapshot(&key, &window.after)
            }
        }
    }
}

/// Replaces the target with the whole source and stores `start`, the feed position the
/// snapshot is consistent with or older than.
fn snapshot(key: &[String], start: &str) -> Result<RunSummary, DponeError> {
    info(&format!(
        "initial snapshot; changes after {start} follow in later runs"
    ));
    let staged = stage(&whole_source(), &scratch())?;
    check_keys(&staged.staging, key)?;
    let rows_written = finalize(|| {
        sink::ensure_target(&staged.schema, key)?;
        let inserted = sink::truncate_and_insert(&staged.staging)?;
        state::put(POSITION_STATE_KEY, &Value::Text(start.into()))?;
        Ok(inserted)
    })?;
    let rows_deleted = 0;
    Ok(staged.finish(
        rows_written,
        rows_deleted,
        format!("snapshot of {rows_written} rows; change log from {start}"),
    ))
}

fn apply_changes(key: &[String], window: &ChangeWindow) -> Result<RunSummary, DponeError> {
    let (after, up_to) = (&window.after, &window.up_to);
    if after == up_to {
        // The feed can be behind the state (a crash before the last acknowledgement).
        source::ack_feed(after)?;
        info(&format!("no change committed after {after}"));
        return Ok(RunSummary {
            rows_read: 0,
            rows_written: 0,
            rows_deleted: 0,
            message: "no changes".into(),
        });
    }
    info(&format!("applying changes after {after} up to {up_to}"));
    let upserts = stage_scan(
        &source::open_changes(key, after, up_to, ChangePart::Upserts)?,
        &scratch(),
    )?;
    check_keys(&upserts.staging, key)?;
    let deletes = stage_scan(
        &source::open_changes(key, after, up_to, ChangePart::Deletes)?,
        &scratch(),
    )?;
    let (rows_deleted, rows_written) = finalize(|| {
        sink::ensure_target(&upserts.schema, key)?;
        let gone = sink::delete_rows(&deletes.staging, key, &sink::KeyMatch::InStaging, &[])?;
        let (replaced, inserted) = upserts.merge_by_key(key)?;
        state::put(POSITION_STATE_KEY, &Value::Text(up_to.clone()))?;
        Ok((gone + replaced, inserted))
    })?;
    source::ack_feed(up_to)?;
    let deleted_keys = deletes.stats.rows;
    let deletes_summary = deletes.finish(0, 0, String::new());
    let mut summary = upserts.finish(
        rows_written,
        rows_deleted,
        format!(
            "applied changes up to {up_to}: {rows_written} keys upserted, {deleted_keys} deleted"
        ),
    );
    summary.rows_read += deletes_summary.rows_read;
    Ok(summary)
}

dpone_strategy_sdk::export_strategy!(Cdc);
