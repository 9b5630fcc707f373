//! `cdc`: applies the source's change log (PostgreSQL logical replication, `pgoutput`).
//!
//! The first run opens the feed (the host creates the publication and the slot when they do
//! not exist), stages a full snapshot of the source and replaces the target with it, storing
//! the feed position the slot started at. Every later run stages the changes of transactions
//! that committed between the stored position and the feed's horizon, compacted by key (a
//! key's last change wins), and applies them in one transaction: delete the keys whose last
//! change is a delete, delete and re-insert the upserted keys, store the new position. Only
//! then is the feed acknowledged, so a crash between the sink commit and the acknowledgement
//! replays changes the target already has; applied by key they change nothing.
//!
//! A snapshot and the changes it overlaps converge for the same reason: each key ends as its
//! last change in the log says. If the slot was dropped and recreated the log has a gap, and
//! the run takes a new snapshot. State: `cdc.position` (LSN of the last applied change).

use dpone_strategy_sdk::source::{self, ChangeFeed, ChangePart};
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, UNIQUE_KEY,
    Value, check_keys, finalize, info, invalid_config, optional, required, scratch, sink, stage,
    stage_scan, state, transactional_needs, whole_source,
};

const POSITION_STATE_KEY: &str = "cdc.position";
const SLOT: &str = "cdc.slot";
const PUBLICATION: &str = "cdc.publication";
const MAX_LAG_MB: &str = "cdc.max_lag_mb";
const DEFAULT_MAX_LAG_MB: i64 = 1024;

struct Cdc;

impl Guest for Cdc {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "cdc".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Applies inserts, updates and deletes from the source's change log (PostgreSQL pgoutput), in commit order.".into(),
            options: vec![
                required(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Key columns changes are applied by: the source's replica identity (its primary key); the primary key of a created target.",
                ),
                optional(
                    SLOT,
                    OptionKind::Text,
                    "Replication slot to read (created when missing); default dpone_<pipeline>.",
                ),
                optional(
                    PUBLICATION,
                    OptionKind::Text,
                    "Publication of the source table (created when missing); default the slot name.",
                ),
                optional(
                    MAX_LAG_MB,
                    OptionKind::Integer,
                    "Warn when the slot keeps more than this much log on the source (default 1024).",
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
        if !source::describe()?.capabilities.cdc {
            return Err(DponeError::Unsupported(
                "cdc needs a source with a change log (PostgreSQL)".into(),
            ));
        }
        let feed = ChangeFeed {
            slot: options.text(SLOT)?,
            publication: options.text(PUBLICATION)?,
        };
        let position = source::open_feed(&feed)?;
        let retained_mb = position.retained_bytes / (1024 * 1024);
        if retained_mb as i64 > max_lag_mb {
            dpone_strategy_sdk::log::log(
                dpone_strategy_sdk::log::Level::Warn,
                &format!(
                    "the replication slot keeps {retained_mb} MB of log on the source (more than {MAX_LAG_MB} = {max_lag_mb}): run more often, or drop the slot with `dpone-host cdc drop-slot` if this pipeline is retired"
                ),
            );
        }
        let stored = match state::get(POSITION_STATE_KEY)? {
            None => None,
            Some(Value::Int(p)) => Some(u64::try_from(p).unwrap_or(0)),
            Some(other) => {
                return Err(DponeError::State(format!(
                    "state entry `{POSITION_STATE_KEY}` is not an integer: {other:?}"
                )));
            }
        };
        match stored {
            Some(_) if position.created => {
                info(
                    "the replication slot was created anew, so the log has a gap: taking a new snapshot",
                );
                snapshot(&key, position.acknowledged)
            }
            // This pipeline acknowledges only what it stored; a slot past that was moved by
            // someone else, and the changes in between are gone.
            Some(stored) if stored < position.acknowledged => {
                info(
                    "the replication slot is past the stored position (someone else acknowledged changes): taking a new snapshot",
                );
                snapshot(&key, position.acknowledged)
            }
            Some(stored) => apply_changes(&feed, &key, stored, &position),
            None => snapshot(&key, position.acknowledged),
        }
    }
}

/// Replaces the target with the whole source and stores `start`, the feed position the
/// snapshot is consistent with or older than.
fn snapshot(key: &[String], start: u64) -> Result<RunSummary, DponeError> {
    info(&format!(
        "initial snapshot; changes after {} follow in later runs",
        lsn(start)
    ));
    let staged = stage(&whole_source(), &scratch())?;
    check_keys(&staged.staging, key)?;
    let rows_written = finalize(|| {
        sink::ensure_target(&staged.schema, key)?;
        let inserted = sink::truncate_and_insert(&staged.staging)?;
        state::put(POSITION_STATE_KEY, &position_value(start)?);
        Ok(inserted)
    })?;
    let rows_deleted = 0;
    Ok(staged.finish(
        rows_written,
        rows_deleted,
        format!(
            "snapshot of {rows_written} rows; change log from {}",
            lsn(start)
        ),
    ))
}

fn apply_changes(
    feed: &ChangeFeed,
    key: &[String],
    stored: u64,
    position: &source::FeedPosition,
) -> Result<RunSummary, DponeError> {
    // The slot can be behind the state (a crash before the last acknowledgement): changes up
    // to the stored position are already in the target.
    let after = stored;
    let up_to = position.horizon;
    if after >= up_to {
        source::ack_feed(feed, after)?;
        info(&format!("no change committed after {}", lsn(after)));
        return Ok(RunSummary {
            rows_read: 0,
            rows_written: 0,
            rows_deleted: 0,
            message: "no changes".into(),
        });
    }
    info(&format!(
        "applying changes in ({}, {}]",
        lsn(after),
        lsn(up_to)
    ));
    let upserts = stage_scan(
        &source::open_changes(feed, key, after, up_to, ChangePart::Upserts)?,
        &scratch(),
    )?;
    check_keys(&upserts.staging, key)?;
    let deletes = stage_scan(
        &source::open_changes(feed, key, after, up_to, ChangePart::Deletes)?,
        &scratch(),
    )?;
    let (rows_deleted, rows_written) = finalize(|| {
        sink::ensure_target(&upserts.schema, key)?;
        let gone = sink::delete_rows(&deletes.staging, key, &sink::KeyMatch::InStaging, &[])?;
        let (replaced, inserted) = upserts.merge_by_key(key)?;
        state::put(POSITION_STATE_KEY, &position_value(up_to)?);
        Ok((gone + replaced, inserted))
    })?;
    source::ack_feed(feed, up_to)?;
    let deleted_keys = deletes.stats.rows;
    let deletes_summary = deletes.finish(0, 0, String::new());
    let mut summary = upserts.finish(
        rows_written,
        rows_deleted,
        format!(
            "applied changes up to {}: {rows_written} keys upserted, {deleted_keys} deleted",
            lsn(up_to)
        ),
    );
    summary.rows_read += deletes_summary.rows_read;
    Ok(summary)
}

fn position_value(position: u64) -> Result<Value, DponeError> {
    i64::try_from(position)
        .map(Value::Int)
        .map_err(|_| DponeError::Source(format!("feed position {position} out of range")))
}

/// An LSN as PostgreSQL prints it.
fn lsn(position: u64) -> String {
    format!("{:X}/{:X}", position >> 32, position & 0xffff_ffff)
}

dpone_strategy_sdk::export_strategy!(Cdc);
