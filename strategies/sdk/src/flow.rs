use crate::sink::{self, KeyMatch, Staging, StagingKind, StagingOptions};
use crate::source::{self, CursorBound, ScanBounds, ScanStats};
use crate::types::InTerm;
use crate::{DponeError, RunSummary, Schema, Term, Value, info, invalid_config, log, state, warn};

/// State key of the largest value of `column` already loaded. Keyed by the column, so
/// pointing `cursor_column` at another column starts from the beginning instead of
/// comparing against a position of the old one.
fn cursor_state_key(column: &str) -> String {
    format!("cursor.{column}")
}

/// State key of where a resumable source's last finalized scan stopped (Kafka offsets).
const POSITION_STATE_KEY: &str = "position.source";

/// A source scan loaded into a staging table of this run.
#[derive(Debug)]
pub struct Staged {
    /// The source schema: staging was created with it, and a missing target gets it too.
    pub schema: Schema,
    pub staging: Staging,
    pub stats: ScanStats,
    /// The state entries (cursor, source position) to store once this run finalizes;
    /// empty when the scan had no cursor bound and the source does not resume.
    next_cursor: Vec<(String, Value)>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.stats.rows == 0
    }

    /// Stages the new cursor (and source position), so they become durable with the
    /// finalize transaction.
    pub fn put_cursor(&self) -> Result<(), DponeError> {
        for (key, value) in &self.next_cursor {
            state::put(key, value)?;
        }
        Ok(())
    }

    /// Ends a finalized run: drops staging and reports what the run did.
    pub fn finish(self, rows_written: u64, rows_deleted: u64, message: String) -> RunSummary {
        let rows_read = self.stats.rows;
        drop_staging(self.staging);
        RunSummary {
            rows_read,
            rows_written,
            rows_deleted,
            message,
        }
    }

    /// Upserts staging into the target by `key`, inside the open transaction: creates a
    /// missing target (so a failed first run leaves none behind), deletes the target rows
    /// whose key is in staging, inserts staging. Returns (rows deleted, rows inserted).
    pub fn merge_by_key(&self, key: &[String]) -> Result<(u64, u64), DponeError> {
        sink::ensure_target(&self.schema, key)?;
        let deleted = sink::delete_rows(&self.staging, key, &KeyMatch::InStaging, &[])?;
        let inserted = sink::insert_from_staging(&self.staging)?;
        Ok((deleted, inserted))
    }

    /// Ends a run that staged no rows: the target and the state stay as they are.
    pub fn finish_empty(self) -> RunSummary {
        info("no new rows: target and state unchanged");
        drop_staging(self.staging);
        RunSummary {
            rows_read: 0,
            rows_written: 0,
            rows_deleted: 0,
            message: "no new rows".into(),
        }
    }
}

/// Bounds that read every source row.
pub fn whole_source() -> ScanBounds {
    ScanBounds {
        cursor: None,
        filter: Vec::new(),
        limit: None,
        row_versions: None,
        since: None,
    }
}

/// Options of a plain scratch staging table: read by finalize, then dropped.
pub fn scratch() -> StagingOptions {
    StagingOptions {
        kind: StagingKind::Scratch,
        row_hash: None,
    }
}

/// Creates a staging table with the source schema (plus the row hash column `options` asks
/// for) and loads the source rows within `bounds`.
pub fn stage(bounds: &ScanBounds, options: &StagingOptions) -> Result<Staged, DponeError> {
    stage_scan(&source::open_scan(bounds)?, options)
}

/// Creates a staging table with the source schema (plus the row hash column `options` asks
/// for) and loads `scan` into it: a table scan or a change scan.
pub fn stage_scan(scan: &source::Scan, options: &StagingOptions) -> Result<Staged, DponeError> {
    log::progress("stage", 0, None);
    let description = source::describe()?;
    let staging = sink::create_staging(&description.schema, options)?;
    info(&format!(
        "stage: loading {} into {}",
        description.name,
        staging.name()
    ));
    let stats = sink::load(&staging, scan)?;
    log::progress("stage", stats.rows, Some(stats.rows));
    Ok(Staged {
        schema: description.schema,
        staging,
        stats,
        next_cursor: Vec::new(),
    })
}

/// Stages the source rows past the cursor the last finalized run stored for `cursor_column`,
/// or the whole source when there is no cursor column. A resumable source (a Kafka topic)
/// also reads only what followed the position the last finalized run stored.
pub fn stage_incremental(cursor_column: Option<&str>) -> Result<Staged, DponeError> {
    let resumable = source::describe()?.capabilities.resumable;
    let since = match resumable
        .then(|| state::get(POSITION_STATE_KEY))
        .transpose()?
        .flatten()
    {
        Some(Value::Text(position)) => Some(position),
        _ => None,
    };
    let cursor = match cursor_column {
        Some(column) => Some(CursorBound {
            column: column.into(),
            after: state::get(&cursor_state_key(column))?,
            up_to: None,
        }),
        None => None,
    };
    let bounds = ScanBounds {
        cursor,
        filter: Vec::new(),
        limit: None,
        row_versions: None,
        since,
    };
    let mut staged = stage(&bounds, &scratch())?;
    if resumable && let Some(resume) = staged.stats.resume.clone() {
        staged
            .next_cursor
            .push((POSITION_STATE_KEY.into(), Value::Text(resume)));
    }
    if let Some(column) = cursor_column
        && !staged.is_empty()
    {
        // Without the new position the next run would read these rows again, and an append
        // would duplicate them: fail now, before the target is touched.
        let max = staged.stats.max_cursor.clone().ok_or_else(|| {
            DponeError::Source(format!(
                "the scan returned {} rows but no largest value of cursor column {column}",
                staged.stats.rows
            ))
        })?;
        staged.next_cursor.push((cursor_state_key(column), max));
    }
    Ok(staged)
}

/// Replaces the target rows matching `scope` with staging, inside the open transaction:
/// creates a missing target (so a failed first run leaves none behind), deletes the rows in
/// scope, inserts staging. Running it twice with the same staging leaves the same target,
/// which is what makes a retried chunk or window harmless. Returns (rows deleted, inserted).
pub fn replace_scope(
    staged: &Staged,
    scope: &[Term],
    key: &[String],
) -> Result<(u64, u64), DponeError> {
    sink::ensure_target(&staged.schema, key)?;
    let deleted = sink::delete_where(scope)?;
    let inserted = sink::insert_from_staging(&staged.staging)?;
    Ok((deleted, inserted))
}

/// The partitions (distinct values of `column`) present in staging, checked before the
/// target is touched: `column` exists, there are at most `max` of them (a config error at
/// `max_field` otherwise) and none is NULL (a row of no partition).
pub fn staged_partitions(
    staged: &Staged,
    column: &str,
    max: i64,
    column_field: &str,
    max_field: &str,
) -> Result<Vec<Value>, DponeError> {
    if staged.schema.columns.iter().all(|c| c.name != column) {
        return Err(invalid_config(
            column_field,
            &format!("`{column}` is not a source column"),
        ));
    }
    // One more than allowed is enough to know the guard trips.
    let limit = u32::try_from(max.saturating_add(1)).unwrap_or(u32::MAX);
    let partitions = staged.staging.distinct_values(column, limit)?;
    if partitions.len() as i64 > max {
        return Err(invalid_config(
            max_field,
            &format!(
                "staging holds more than {max} partitions of `{column}`; nothing was replaced"
            ),
        ));
    }
    if partitions.iter().any(|v| matches!(v, Value::Null)) {
        return Err(DponeError::KeyViolation(format!(
            "staging has rows with a NULL `{column}`: they belong to no partition; nothing was replaced"
        )));
    }
    Ok(partitions)
}

/// How partitions are replaced: `partition.native_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeMode {
    /// Natively where the sink and the target allow it, else delete + insert.
    Auto,
    /// Natively or not at all.
    Required,
    /// Always delete + insert.
    Fallback,
}

/// Reads `partition.native_mode` (default `auto`); `required` on a sink without native
/// partitions is a config error before anything runs.
pub fn native_mode(text: Option<&str>) -> Result<NativeMode, DponeError> {
    let mode = match text {
        None | Some("auto") => NativeMode::Auto,
        Some("required") => NativeMode::Required,
        Some("fallback") => NativeMode::Fallback,
        Some(other) => {
            return Err(invalid_config(
                NATIVE_MODE,
                &format!("`{other}` is not auto, required or fallback"),
            ));
        }
    };
    if mode == NativeMode::Required && !sink::capabilities().native_partitions {
        return Err(invalid_config(
            NATIVE_MODE,
            "is required, but this sink cannot replace native partitions (use auto or fallback)",
        ));
    }
    Ok(mode)
}

/// The option naming how partitions are replaced.
pub const NATIVE_MODE: &str = "partition.native_mode";
/// The option limiting how many partitions one run (or backfill chunk) replaces.
pub const MAX_PARTITIONS: &str = "partition.max_partitions_per_run";

/// `partition.max_partitions_per_run` (default 100, 1..=10000) and `partition.native_mode`.
pub fn partition_options(options: &crate::Options) -> Result<(i64, NativeMode), DponeError> {
    let max = options.integer(MAX_PARTITIONS)?.unwrap_or(100);
    if !(1..=10_000).contains(&max) {
        return Err(invalid_config(
            MAX_PARTITIONS,
            "must be between 1 and 10000",
        ));
    }
    Ok((max, native_mode(options.text(NATIVE_MODE)?.as_deref())?))
}

/// Replaces the target partitions of `partitions` (values of `column`) with staging,
/// inside the open transaction: natively (a swap of each touched partition) when `mode`
/// and the target allow it, else by deleting the partitions' rows and inserting staging.
/// Returns (rows deleted, rows inserted).
pub fn replace_partitions(
    staged: &Staged,
    column: &str,
    partitions: Vec<Value>,
    key: &[String],
    mode: NativeMode,
) -> Result<(u64, u64), DponeError> {
    sink::ensure_target(&staged.schema, key)?;
    if mode != NativeMode::Fallback {
        match sink::replace_partitions(&staged.staging, column)? {
            Some(done) => {
                info(&format!(
                    "finalize: swapped the native partitions of `{column}` holding the staged rows"
                ));
                return Ok((done.deleted, done.inserted));
            }
            None if mode == NativeMode::Required => {
                return Err(invalid_config(
                    NATIVE_MODE,
                    &format!(
                        "is required, but the target is not natively partitioned by `{column}` alone, or a touched partition holds values that are not staged; nothing was replaced"
                    ),
                ));
            }
            None => {
                info("finalize: no native partition swap possible, replacing by delete + insert")
            }
        }
    }
    replace_scope(staged, &partition_scope(column, partitions), key)
}

/// The filter selecting exactly the target rows of `partitions`.
pub fn partition_scope(column: &str, partitions: Vec<Value>) -> Vec<Term> {
    vec![Term::InList(InTerm {
        column: column.into(),
        values: partitions,
    })]
}

/// Fails with `key-violation` when staging has rows with a NULL key component or duplicate
/// keys, so such rows never reach the target. Does nothing when `key` is empty.
pub fn check_keys(staging: &Staging, key: &[String]) -> Result<(), DponeError> {
    if key.is_empty() {
        return Ok(());
    }
    let check = staging.check_keys(key)?;
    log::progress("check", check.rows, Some(check.rows));
    if check.null_key_rows == 0 && check.duplicate_groups == 0 {
        info(&format!("check: key ({}) is unique", key.join(", ")));
        return Ok(());
    }
    let sample: Vec<String> = check
        .sample
        .iter()
        .map(|values| {
            let parts: Vec<String> = values.iter().map(display).collect();
            format!("({})", parts.join(", "))
        })
        .collect();
    let mut message = format!(
        "key ({}) in staging: {} rows with a NULL key component, {} duplicated keys",
        key.join(", "),
        check.null_key_rows,
        check.duplicate_groups
    );
    if !sample.is_empty() {
        message.push_str(&format!("; e.g. {}", sample.join(", ")));
    }
    Err(DponeError::KeyViolation(message))
}

/// Runs `steps` in one sink transaction, then makes the staged state entries durable.
///
/// On any error the transaction is rolled back and the error returned, leaving target and
/// state as they were. State is committed only after the sink, so it never runs ahead of it.
pub fn finalize<T>(steps: impl FnOnce() -> Result<T, DponeError>) -> Result<T, DponeError> {
    log::progress("finalize", 0, Some(1));
    sink::begin()?;
    match steps().and_then(|out| sink::commit().map(|()| out)) {
        Ok(out) => {
            state::commit()?;
            log::progress("finalize", 1, Some(1));
            Ok(out)
        }
        Err(err) => {
            // The original error is the one worth reporting; the host rolls back anything
            // still open anyway.
            if let Err(rollback) = sink::rollback() {
                warn(&format!("finalize: rollback failed: {rollback}"));
            }
            Err(err)
        }
    }
}

/// Drops a staging table after the run finalized. A failure only warns: target and state
/// are final by then, and the host drops the staging tables a run leaves behind.
pub fn drop_staging(staging: Staging) {
    let name = staging.name();
    if let Err(err) = sink::drop_staging(staging) {
        warn(&format!("could not drop staging table {name}: {err}"));
    }
}

fn display(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::Uuid(s) => s.clone(),
        Value::Text(s) | Value::Json(s) => format!("{s:?}"),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
        Value::Date(days) => format!("{days} days after 1970-01-01"),
        Value::Timestamp(us) | Value::TimestampTz(us) => format!("{us} us after 1970-01-01"),
    }
}
