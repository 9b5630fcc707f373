// `snapshot_diff` in JavaScript: the target converges to a complete snapshot of the source,
// by key.
//
// The twin of the built-in Rust `snapshot_diff` (strategies/snapshot_diff), written against
// the JavaScript SDK; the behaviour tests hold both to the same target, row by row.
//
// Stages the whole source with its canonical row hash (`row_hash_column`), fails on NULL or
// duplicate keys before the target is touched, then in one transaction:
// 1. deletes target rows whose key is in staging with a different row hash (changed rows);
// 2. with `soft_delete`, also deletes soft-deleted target rows whose key is back;
// 3. inserts the staging rows whose key is not in the target (new, changed and revived);
// 4. applies `diff.delete_policy` to target keys missing from staging: `hard_delete` deletes
//    them, `soft_delete` sets `deleted_column` to the run's time, `ignore` keeps them.
//
// A re-run on an unchanged source changes nothing. State: `last_snapshot_at`.

import {
  Options,
  UNIQUE_KEY,
  checkKeys,
  clock,
  defineStrategy,
  finalize,
  info,
  invalidConfig,
  optional,
  required,
  scratch,
  sink,
  stage,
  state,
  transactionalNeeds,
  wholeSource,
} from './dpone_strategy.js';

const COMPARE = 'diff.compare';
const DELETE_POLICY = 'diff.delete_policy';
const ROW_HASH_COLUMN = 'row_hash_column';
const DELETED_COLUMN = 'deleted_column';
const FATE = { hard_delete: 'deleted', soft_delete: 'soft-deleted', ignore: 'kept' };

export const { describe, run } = defineStrategy({
  describe() {
    return {
      name: 'snapshot_diff',
      version: '0.2.0',
      description: 'Converges the target to a complete source snapshot by key and row hash (JavaScript).',
      options: [
        required(
          UNIQUE_KEY,
          'text-list',
          'Key columns: non-NULL and unique in the snapshot; the primary key of a created target.',
        ),
        optional(COMPARE, 'text', 'How rows are compared: row_hash (the only method, the default).'),
        optional(
          DELETE_POLICY,
          'text',
          'Target keys missing from the snapshot: hard_delete (default), soft_delete or ignore.',
        ),
        optional(
          ROW_HASH_COLUMN,
          'text',
          'Column holding the row hash in staging and target (default __dpone__row_hash).',
        ),
        optional(
          DELETED_COLUMN,
          'text',
          'soft_delete: timestamp column set when a key vanishes (default __dpone__deleted_at).',
        ),
      ],
      needs: transactionalNeeds(true),
      chunked: false,
    };
  },

  run(ctx) {
    const options = new Options(ctx.options);
    const key = options.requiredTextList(UNIQUE_KEY);
    const compare = options.text(COMPARE);
    if (compare !== undefined && compare !== 'row_hash') {
      throw invalidConfig(COMPARE, `\`${compare}\` is not a comparison method (use row_hash)`);
    }
    const policy = options.text(DELETE_POLICY) ?? 'hard_delete';
    if (!Object.hasOwn(FATE, policy)) {
      throw invalidConfig(DELETE_POLICY, `\`${policy}\` is not hard_delete, soft_delete or ignore`);
    }
    const rowHash = options.text(ROW_HASH_COLUMN) ?? '__dpone__row_hash';
    const deleted = options.text(DELETED_COLUMN) ?? '__dpone__deleted_at';

    const staged = stage(wholeSource(), scratch(rowHash));
    checkKeys(staged.staging, key);
    const now = { tag: 'timestamp-tz', val: clock.now() };

    const columns = [...staged.schema.columns, { name: rowHash, dataType: { tag: 'text' }, nullable: true }];
    if (policy === 'soft_delete') {
      columns.push({ name: deleted, dataType: { tag: 'timestamp-tz' }, nullable: true });
    }
    const target = { columns, primaryKey: staged.schema.primaryKey };
    const setDeleted = (value) => [{ column: deleted, value }];
    const staging = staged.staging;

    const [inserted, removed] = finalize(() => {
      sink.ensureTarget(target, key);
      sink.deleteRows(staging, key, { tag: 'in-staging-differing', val: rowHash }, []);
      let extra = [];
      if (policy === 'soft_delete') {
        sink.deleteRows(staging, key, { tag: 'in-staging' }, [{ tag: 'is-not-null', val: deleted }]);
        extra = setDeleted({ tag: 'null' });
      }
      const inserted = sink.insertNewRows(staging, key, [], extra);
      let removed = 0n;
      if (policy === 'hard_delete') {
        removed = sink.deleteRows(staging, key, { tag: 'not-in-staging' }, []);
      } else if (policy === 'soft_delete') {
        removed = sink.updateRows(
          staging,
          key,
          { tag: 'not-in-staging' },
          [{ tag: 'is-null', val: deleted }],
          setDeleted(now),
        );
      }
      state.put('last_snapshot_at', now);
      return [inserted, removed];
    });
    info(`snapshot applied: ${inserted} rows inserted or replaced, ${removed} keys removed`);
    return staged.finish(
      inserted,
      removed,
      `${inserted} rows inserted or replaced, ${removed} vanished keys ${FATE[policy]}`,
    );
  },
});
