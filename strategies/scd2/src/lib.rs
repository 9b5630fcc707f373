//! `scd2`: a slowly changing dimension of type 2, keeping every version of every key.
//!
//! Stages the whole source (a complete snapshot) with its canonical row hash, fails on NULL
//! or duplicate keys before the target is touched, then in one transaction:
//! 1. expires the current rows whose key is in staging with a different row hash
//!    (`valid_to_column` = the run's time, `current_column` = false);
//! 2. with `delete_policy: expire` (the default), expires the current rows whose key is
//!    missing from staging;
//! 3. inserts a current version (`valid_from_column` = the run's time, `valid_to_column`
//!    NULL) of every staging row whose key has no current row: new keys, changed keys and
//!    keys that come back after a delete;
//! 4. checks the invariant, exactly one current row per key, and fails the run (rolling
//!    everything back) if it would break.
//!
//! Keys match column by column, so compound keys whose parts contain separators never
//! collide. The target's primary key is `unique_key` + `valid_from_column`. A re-run on an
//! unchanged source changes nothing. State: `last_scd2_at`.

use dpone_strategy_sdk::sink::{Assignment, KeyMatch, StagingKind, StagingOptions};
use dpone_strategy_sdk::source;
use dpone_strategy_sdk::types::{Column, CompareTerm, Comparison, DataType};
use dpone_strategy_sdk::{
    DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo, Term, UNIQUE_KEY,
    Value, check_keys, clock, finalize, info, invalid_config, optional, required, sink, stage,
    state, transactional_needs, whole_source,
};

/// Option name and default of each history column.
const VALID_FROM: (&str, &str) = ("valid_from_column", "__dpone__valid_from_at");
const VALID_TO: (&str, &str) = ("valid_to_column", "__dpone__valid_to_at");
const CURRENT: (&str, &str) = ("current_column", "__dpone__is_current");
const ROW_HASH: (&str, &str) = ("row_hash_column", "__dpone__row_hash");
const DELETE_POLICY: &str = "delete_policy";

struct Scd2;

impl Guest for Scd2 {
    fn describe() -> StrategyInfo {
        let column = |(name, default): (&str, &str), what: &str| {
            optional(
                name,
                OptionKind::Text,
                &format!("{what} (default {default})."),
            )
        };
        StrategyInfo {
            name: "scd2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps every version of every key, exactly one current row per key."
                .into(),
            options: vec![
                required(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Business key columns: non-NULL and unique in the snapshot.",
                ),
                column(VALID_FROM, "Timestamp from which a version is valid"),
                column(
                    VALID_TO,
                    "Timestamp at which a version was superseded, NULL while current",
                ),
                column(CURRENT, "Boolean, true on the one current version of a key"),
                column(ROW_HASH, "Canonical row hash of a version's source columns"),
                optional(
                    DELETE_POLICY,
                    OptionKind::Text,
                    "Keys missing from the snapshot: expire (default) or ignore.",
                ),
            ],
            needs: transactional_needs(true),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let key = options.required_text_list(UNIQUE_KEY)?;
        let name = |(option, default): (&str, &str)| -> Result<String, DponeError> {
            Ok(options.text(option)?.unwrap_or_else(|| default.into()))
        };
        let (valid_from, valid_to, current, hash) = (
            name(VALID_FROM)?,
            name(VALID_TO)?,
            name(CURRENT)?,
            name(ROW_HASH)?,
        );
        let expire_deleted = match options.text(DELETE_POLICY)?.as_deref() {
            None | Some("expire") => true,
            Some("ignore") => false,
            Some(other) => {
                return Err(invalid_config(
                    DELETE_POLICY,
                    &format!("`{other}` is not expire or ignore"),
                ));
            }
        };

        // The target is the source plus the history columns; a clash is a config error,
        // found before anything is staged.
        let mut target = source::describe()?.schema;
        for ((option, _), column, data_type, nullable) in [
            (ROW_HASH, &hash, DataType::Text, true),
            (VALID_FROM, &valid_from, DataType::TimestampTz, false),
            (VALID_TO, &valid_to, DataType::TimestampTz, true),
            (CURRENT, &current, DataType::Boolean, false),
        ] {
            if target.columns.iter().any(|c| &c.name == column) {
                return Err(invalid_config(
                    option,
                    &format!("`{column}` is already a source column"),
                ));
            }
            target.columns.push(Column {
                name: column.clone(),
                data_type,
                nullable,
            });
        }

        let staged = stage(
            &whole_source(),
            &StagingOptions {
                kind: StagingKind::Scratch,
                row_hash: Some(hash.clone()),
            },
        )?;
        check_keys(&staged.staging, &key)?;
        let now = Value::TimestampTz(clock::now());

        let mut target_key = key.clone();
        target_key.push(valid_from.clone());
        let is_current = [Term::Compare(CompareTerm {
            column: current.clone(),
            op: Comparison::Eq,
            value: Value::Boolean(true),
        })];
        let expire = [
            Assignment {
                column: valid_to.clone(),
                value: now.clone(),
            },
            Assignment {
                column: current.clone(),
                value: Value::Boolean(false),
            },
        ];
        let open_version = [
            Assignment {
                column: valid_from.clone(),
                value: now.clone(),
            },
            Assignment {
                column: valid_to.clone(),
                value: Value::Null,
            },
            Assignment {
                column: current.clone(),
                value: Value::Boolean(true),
            },
        ];
        let staging = &staged.staging;

        let (expired, inserted) = finalize(|| {
            sink::ensure_target(&target, &target_key)?;
            let mut expired = sink::update_rows(
                staging,
                &key,
                &KeyMatch::InStagingDiffering(hash.clone()),
                &is_current,
                &expire,
            )?;
            if expire_deleted {
                expired += sink::update_rows(
                    staging,
                    &key,
                    &KeyMatch::NotInStaging,
                    &is_current,
                    &expire,
                )?;
            }
            let inserted = sink::insert_new_rows(staging, &key, &is_current, &open_version)?;
            let check = sink::check_target_keys(&key, &is_current)?;
            if check.duplicate_groups > 0 || check.null_key_rows > 0 {
                return Err(DponeError::KeyViolation(format!(
                    "scd2 invariant: {} keys would have more than one current row and {} current rows a NULL key; rolled back",
                    check.duplicate_groups, check.null_key_rows
                )));
            }
            state::put("last_scd2_at", &now)?;
            Ok((expired, inserted))
        })?;
        info(&format!(
            "scd2: {expired} versions expired, {inserted} versions opened"
        ));
        Ok(staged.finish(
            inserted,
            0,
            format!("{expired} versions expired, {inserted} current versions inserted"),
        ))
    }
}

dpone_strategy_sdk::export_strategy!(Scd2);
