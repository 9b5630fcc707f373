//! `snapshot_diff`: the target converges to a complete snapshot of the source, by key.
//!
//! Stages the whole source with its canonical row hash (`row_hash_column`), fails on NULL or
//! duplicate keys before the target is touched, then in one transaction:
//! 1. deletes target rows whose key is in staging with a different row hash (changed rows);
//! 2. with `soft_delete`, also deletes soft-deleted target rows whose key is back;
//! 3. inserts the staging rows whose key is not in the target (new, changed and revived);
//! 4. applies `diff.delete_policy` to target keys missing from staging: `hard_delete` deletes
//!    them, `soft_delete` sets `deleted_column` to the run's time, `ignore` keeps them.
//!
//! A re-run on an unchanged source changes nothing. State: `last_snapshot_at`.

use dpone_strategy_sdk::sink::{Assignment, KeyMatch, StagingKind, StagingOptions};
use dpone_strategy_sdk::types::{Column, DataType};
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, Term, UNIQUE_KEY,
    Value, check_keys, clock, finalize, info, invalid_config, optional, required, sink, stage,
    state, transactional_needs, whole_source,
};

const COMPARE: &str = "diff.compare";
const DELETE_POLICY: &str = "diff.delete_policy";
const ROW_HASH_COLUMN: &str = "row_hash_column";
const DELETED_COLUMN: &str = "deleted_column";
const DEFAULT_ROW_HASH_COLUMN: &str = "__dpone__row_hash";
const DEFAULT_DELETED_COLUMN: &str = "__dpone__deleted_at";

/// What happens to target keys the snapshot no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeletePolicy {
    Hard,
    Soft,
    Ignore,
}

struct SnapshotDiff;

impl Guest for SnapshotDiff {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "snapshot_diff".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Converges the target to a complete source snapshot by key and row hash."
                .into(),
            options: vec![
                required(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Key columns: non-NULL and unique in the snapshot; the primary key of a created target.",
                ),
                optional(
                    COMPARE,
                    OptionKind::Text,
                    "How rows are compared: row_hash (the only method, the default).",
                ),
                optional(
                    DELETE_POLICY,
                    OptionKind::Text,
                    "Target keys missing from the snapshot: hard_delete (default), soft_delete or ignore.",
                ),
                optional(
                    ROW_HASH_COLUMN,
                    OptionKind::Text,
                    "Column holding the row hash in staging and target (default __dpone__row_hash).",
                ),
                optional(
                    DELETED_COLUMN,
                    OptionKind::Text,
                    "soft_delete: timestamp column set when a key vanishes (default __dpone__deleted_at).",
                ),
            ],
            needs: transactional_needs(true),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let key = options.required_text_list(UNIQUE_KEY)?;
        match options.text(COMPARE)?.as_deref() {
            None | Some("row_hash") => {}
            Some(other) => {
                return Err(invalid_config(
                    COMPARE,
                    &format!("`{other}` is not a comparison method (use row_hash)"),
                ));
            }
        }
        let policy = match options.text(DELETE_POLICY)?.as_deref() {
            None | Some("hard_delete") => DeletePolicy::Hard,
            Some("soft_delete") => DeletePolicy::Soft,
            Some("ignore") => DeletePolicy::Ignore,
            Some(other) => {
                return Err(invalid_config(
                    DELETE_POLICY,
                    &format!("`{other}` is not hard_delete, soft_delete or ignore"),
                ));
            }
        };
        let hash = options
            .text(ROW_HASH_COLUMN)?
            .unwrap_or_else(|| DEFAULT_ROW_HASH_COLUMN.into());
        let deleted = options
            .text(DELETED_COLUMN)?
            .unwrap_or_else(|| DEFAULT_DELETED_COLUMN.into());

        let staging_options = StagingOptions {
            kind: StagingKind::Scratch,
            row_hash: Some(hash.clone()),
        };
        let staged = stage(&whole_source(), &staging_options)?;
        check_keys(&staged.staging, &key)?;
        let now = Value::TimestampTz(clock::now());

        let mut target = staged.schema.clone();
        target.columns.push(Column {
            name: hash.clone(),
            data_type: DataType::Text,
            nullable: true,
        });
        if policy == DeletePolicy::Soft {
            target.columns.push(Column {
                name: deleted.clone(),
                data_type: DataType::TimestampTz,
                nullable: true,
            });
        }
        let set_deleted = |value: Value| {
            vec![Assignment {
                column: deleted.clone(),
                value,
            }]
        };
        let staging = &staged.staging;

        let (inserted, removed) = finalize(|| {
            sink::ensure_target(&target, &key)?;
            sink::delete_rows(
                staging,
                &key,
                &KeyMatch::InStagingDiffering(hash.clone()),
                &[],
            )?;
            let extra = if policy == DeletePolicy::Soft {
                sink::delete_rows(
                    staging,
                    &key,
                    &KeyMatch::InStaging,
                    &[Term::IsNotNull(deleted.clone())],
                )?;
                set_deleted(Value::Null)
            } else {
                Vec::new()
            };
            let inserted = sink::insert_new_rows(staging, &key, &[], &extra)?;
            let removed = match policy {
                DeletePolicy::Hard => {
                    sink::delete_rows(staging, &key, &KeyMatch::NotInStaging, &[])?
                }
                DeletePolicy::Soft => sink::update_rows(
                    staging,
                    &key,
                    &KeyMatch::NotInStaging,
                    &[Term::IsNull(deleted.clone())],
                    &set_deleted(now.clone()),
                )?,
                DeletePolicy::Ignore => 0,
            };
            state::put("last_snapshot_at", &now)?;
            Ok((inserted, removed))
        })?;
        info(&format!(
            "snapshot applied: {inserted} rows inserted or replaced, {removed} keys removed"
        ));
        let fate = match policy {
            DeletePolicy::Hard => "deleted",
            DeletePolicy::Soft => "soft-deleted",
            DeletePolicy::Ignore => "kept",
        };
        let message =
            format!("{inserted} rows inserted or replaced, {removed} vanished keys {fate}");
        Ok(staged.finish(inserted, removed, message))
    }
}

dpone_strategy_sdk::export_strategy!(SnapshotDiff);
