"""`snapshot_diff` in Python: the target converges to a complete snapshot of the source, by key.

The twin of the built-in Rust `snapshot_diff` (strategies/snapshot_diff), written against the
Python SDK; the behaviour tests hold both to the same target, row by row.

Stages the whole source with its canonical row hash (`row_hash_column`), fails on NULL or
duplicate keys before the target is touched, then in one transaction:
1. deletes target rows whose key is in staging with a different row hash (changed rows);
2. with `soft_delete`, also deletes soft-deleted target rows whose key is back;
3. inserts the staging rows whose key is not in the target (new, changed and revived);
4. applies `diff.delete_policy` to target keys missing from staging: `hard_delete` deletes
   them, `soft_delete` sets `deleted_column` to the run's time, `ignore` keeps them.

A re-run on an unchanged source changes nothing. State: `last_snapshot_at`.
"""

from dpone_strategy import (
    UNIQUE_KEY,
    Options,
    Strategy,
    check_keys,
    clock,
    export,
    finalize,
    info,
    invalid_config,
    optional,
    required,
    scratch,
    sink,
    stage,
    state,
    transactional_needs,
    types,
    whole_source,
)
from wit_world import OptionKind, StrategyInfo

COMPARE = "diff.compare"
DELETE_POLICY = "diff.delete_policy"
ROW_HASH_COLUMN = "row_hash_column"
DELETED_COLUMN = "deleted_column"
POLICIES = ("hard_delete", "soft_delete", "ignore")


def default(value, fallback):
    """`value` unless the option is absent: an empty text is refused later, as in Rust."""
    return fallback if value is None else value


class SnapshotDiff(Strategy):
    def describe(self) -> StrategyInfo:
        return StrategyInfo(
            name="snapshot_diff",
            version="0.2.0",
            description="Converges the target to a complete source snapshot by key and row hash (Python).",
            options=[
                required(
                    UNIQUE_KEY,
                    OptionKind.TEXT_LIST,
                    "Key columns: non-NULL and unique in the snapshot; the primary key of a created target.",
                ),
                optional(COMPARE, OptionKind.TEXT, "How rows are compared: row_hash (the only method, the default)."),
                optional(
                    DELETE_POLICY,
                    OptionKind.TEXT,
                    "Target keys missing from the snapshot: hard_delete (default), soft_delete or ignore.",
                ),
                optional(
                    ROW_HASH_COLUMN,
                    OptionKind.TEXT,
                    "Column holding the row hash in staging and target (default __dpone__row_hash).",
                ),
                optional(
                    DELETED_COLUMN,
                    OptionKind.TEXT,
                    "soft_delete: timestamp column set when a key vanishes (default __dpone__deleted_at).",
                ),
            ],
            needs=transactional_needs(True),
            chunked=False,
        )

    def run(self, ctx):
        options = Options(ctx.options)
        key = options.required_text_list(UNIQUE_KEY)
        compare = options.text(COMPARE)
        if compare not in (None, "row_hash"):
            raise invalid_config(COMPARE, f"`{compare}` is not a comparison method (use row_hash)")
        policy = default(options.text(DELETE_POLICY), "hard_delete")
        if policy not in POLICIES:
            raise invalid_config(DELETE_POLICY, f"`{policy}` is not hard_delete, soft_delete or ignore")
        row_hash = default(options.text(ROW_HASH_COLUMN), "__dpone__row_hash")
        deleted = default(options.text(DELETED_COLUMN), "__dpone__deleted_at")

        staged = stage(whole_source(), scratch(row_hash))
        check_keys(staged.staging, key)
        now = types.Value_TimestampTz(clock.now())

        columns = list(staged.schema.columns)
        columns.append(types.Column(row_hash, types.DataType_Text(), True))
        if policy == "soft_delete":
            columns.append(types.Column(deleted, types.DataType_TimestampTz(), True))
        target = types.Schema(columns, staged.schema.primary_key)

        def set_deleted(value):
            return [sink.Assignment(deleted, value)]

        def steps():
            staging = staged.staging
            sink.ensure_target(target, key)
            sink.delete_rows(staging, key, sink.KeyMatch_InStagingDiffering(row_hash), [])
            extra = []
            if policy == "soft_delete":
                sink.delete_rows(staging, key, sink.KeyMatch_InStaging(), [types.Term_IsNotNull(deleted)])
                extra = set_deleted(types.Value_Null())
            inserted = sink.insert_new_rows(staging, key, [], extra)
            if policy == "hard_delete":
                removed = sink.delete_rows(staging, key, sink.KeyMatch_NotInStaging(), [])
            elif policy == "soft_delete":
                removed = sink.update_rows(
                    staging, key, sink.KeyMatch_NotInStaging(), [types.Term_IsNull(deleted)], set_deleted(now)
                )
            else:
                removed = 0
            state.put("last_snapshot_at", now)
            return inserted, removed

        inserted, removed = finalize(steps)
        info(f"snapshot applied: {inserted} rows inserted or replaced, {removed} keys removed")
        fate = {"hard_delete": "deleted", "soft_delete": "soft-deleted", "ignore": "kept"}[policy]
        return staged.finish(inserted, removed, f"{inserted} rows inserted or replaced, {removed} vanished keys {fate}")


WitWorld = export(SnapshotDiff)
