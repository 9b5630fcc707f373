// Guest SDK for dpone load strategies written in JavaScript.
//
// The JavaScript twin of the Rust SDK (strategies/sdk) and the Python one
// (strategies/python/sdk): the same shared flow (read options, stage the source, check
// keys, finalize in one sink transaction, then commit state), over the imports
// componentize-js generates from wit/strategy.wit. Copy this file next to your `app.js`
// (`cargo xtask build` does) and import it as './dpone_strategy.js'.
//
// WIT values in JavaScript: records are objects with camelCase fields, variants are
// `{ tag, val }` (`{ tag: 'text', val: 'a' }`, `{ tag: 'null' }`), enums are kebab-case
// strings, u64 and s64 are BigInts, an absent option is `undefined`.
//
// Errors: every import throws on failure, carrying the host's `dpone-error` as `payload`;
// `defineStrategy` lets it through to the host. Throw your own with `fail(...)` and
// `invalidConfig(...)`. Any other exception is a strategy bug: it is logged with its stack
// at error level, then rethrown (the host reports a sandbox error).

import * as clock from 'dpone:strategy/clock@0.2.0';
import * as log from 'dpone:strategy/log@0.2.0';
import * as sink from 'dpone:strategy/sink@0.2.0';
import * as source from 'dpone:strategy/source@0.2.0';
import * as state from 'dpone:strategy/state@0.2.0';

export { clock, log, sink, source, state };

// Option names shared with the Rust and Python strategies.
export const UNIQUE_KEY = 'unique_key';
export const CURSOR_COLUMN = 'cursor_column';

// State key of where a resumable source's last finalized scan stopped (Kafka offsets).
const POSITION_STATE_KEY = 'position.source';

// Keyed by the column, so pointing cursor_column elsewhere starts from the beginning.
const cursorStateKey = (column) => `cursor.${column}`;

/** A host error the strategy returns: `throw fail({ tag: 'source', val: '...' })`. */
export class DponeError extends Error {
  constructor(payload) {
    super(typeof payload.val === 'string' ? payload.val : JSON.stringify(payload.val));
    this.payload = payload;
  }
}

export const fail = (payload) => new DponeError(payload);

/** An `invalid-config` error for the option `name`, naming its manifest field. */
export const invalidConfig = (name, message) =>
  fail({ tag: 'invalid-config', val: { field: `sink.strategy.${name}`, message } });

export const info = (message) => log.log('info', message);
export const warn = (message) => log.log('warn', message);

/**
 * The `describe` and `run` exports of a strategy: `export const { describe, run } =
 * defineStrategy({ describe() {...}, run(ctx) {...} })`. A host error (thrown by an import
 * or by `fail`) becomes `run`'s error result; any other exception is logged with its stack.
 */
export function defineStrategy(strategy) {
  return {
    describe: () => strategy.describe(),
    run(ctx) {
      try {
        return strategy.run(ctx);
      } catch (err) {
        if (err && err.payload && err.payload.tag) {
          throw err.payload;
        }
        log.log('error', `${err && err.stack ? err.stack : err}`);
        throw err;
      }
    },
  };
}

/** A required option for `describe().options`; `kind` is 'text', 'text-list', ... */
export const required = (name, kind, description) => ({ name, kind, required: true, description });

/** An optional option for `describe().options`. */
export const optional = (name, kind, description) => ({ name, kind, required: false, description });

/** Needs of a strategy that finalizes in one sink transaction. */
export const transactionalNeeds = (mutableTarget) => ({
  transactions: true,
  renameSwap: false,
  mutableTarget,
});

/**
 * The manifest's `sink.strategy` options of a run. The host already checked names,
 * presence and kinds against `describe`; the accessors check again so a host bug surfaces
 * as a config error naming the field, not a wrong load.
 */
export class Options {
  constructor(options) {
    // The first value of a name wins, as in the Rust SDK.
    this.options = new Map();
    for (const [name, value] of options) {
      if (!this.options.has(name)) this.options.set(name, value);
    }
  }

  get(name, tag, kindName) {
    const value = this.options.get(name);
    if (value === undefined) return undefined;
    if (value.tag !== tag) throw invalidConfig(name, `must be a ${kindName}`);
    return value.val;
  }

  text(name) {
    return this.get(name, 'text', 'text');
  }

  requiredText(name) {
    const value = this.text(name);
    if (value === undefined) throw invalidConfig(name, 'is required');
    return value;
  }

  /** Empty when absent, which every caller treats as "not given". */
  textList(name) {
    return this.get(name, 'text-list', 'list of text') ?? [];
  }

  requiredTextList(name) {
    const value = this.textList(name);
    if (value.length === 0) throw invalidConfig(name, 'is required and must not be empty');
    return value;
  }

  integer(name) {
    return this.get(name, 'integer', 'integer');
  }

  boolean(name) {
    return this.get(name, 'boolean', 'boolean');
  }

  /** Empty (every row) when absent. */
  filter(name) {
    return this.get(name, 'filter', 'filter') ?? [];
  }
}

/** Bounds that read every source row. */
export const wholeSource = () => ({
  cursor: undefined,
  filter: [],
  limit: undefined,
  rowVersions: undefined,
  since: undefined,
});

/** Options of a scratch staging table, with the row hash column `rowHash` when given. */
export const scratch = (rowHash) => ({ kind: 'scratch', rowHash });

/** A source scan loaded into a staging table of this run. */
export class Staged {
  constructor(schema, staging, stats) {
    // The source schema: staging was created with it, and a missing target gets it too.
    this.schema = schema;
    this.staging = staging;
    this.stats = stats;
    // State entries (cursor, source position) to store once this run finalizes.
    this.nextCursor = [];
  }

  isEmpty() {
    return this.stats.rows === 0n;
  }

  /** Stages the new cursor (and source position), durable with the finalize transaction. */
  putCursor() {
    for (const [key, value] of this.nextCursor) state.put(key, value);
  }

  /**
   * Upserts staging into the target by `key` inside the open transaction: creates a
   * missing target, deletes the target rows whose key is in staging, inserts staging.
   * Returns [rows deleted, rows inserted].
   */
  mergeByKey(key) {
    sink.ensureTarget(this.schema, key);
    const deleted = sink.deleteRows(this.staging, key, { tag: 'in-staging' }, []);
    const inserted = sink.insertFromStaging(this.staging);
    return [deleted, inserted];
  }

  /** Ends a finalized run: drops staging and reports what the run did. */
  finish(rowsWritten, rowsDeleted, message) {
    dropStaging(this.staging);
    return { rowsRead: this.stats.rows, rowsWritten, rowsDeleted, message };
  }

  /** Ends a run that staged no rows: the target and the state stay as they are. */
  finishEmpty() {
    info('no new rows: target and state unchanged');
    dropStaging(this.staging);
    return { rowsRead: 0n, rowsWritten: 0n, rowsDeleted: 0n, message: 'no new rows' };
  }
}

/**
 * Creates a staging table with the source schema (plus the row hash column `options` asks
 * for) and loads the source rows within `bounds`.
 */
export function stage(bounds, options) {
  // The scan opens first, as in the Rust SDK: bad bounds fail before staging exists.
  const scan = source.openScan(bounds);
  log.progress('stage', 0n, undefined);
  const description = source.describe();
  const staging = sink.createStaging(description.schema, options);
  info(`stage: loading ${description.name} into ${staging.name()}`);
  const stats = sink.load(staging, scan);
  log.progress('stage', stats.rows, stats.rows);
  return new Staged(description.schema, staging, stats);
}

/**
 * Stages the source rows past the cursor the last finalized run stored for `cursorColumn`,
 * or the whole source without one. A resumable source also reads only what followed the
 * position the last finalized run stored.
 */
export function stageIncremental(cursorColumn) {
  const resumable = source.describe().capabilities.resumable;
  let since;
  if (resumable) {
    const position = state.get(POSITION_STATE_KEY);
    if (position && position.tag === 'text') since = position.val;
  }
  const cursor =
    cursorColumn === undefined
      ? undefined
      : { column: cursorColumn, after: state.get(cursorStateKey(cursorColumn)), upTo: undefined };
  const staged = stage({ ...wholeSource(), cursor, since }, scratch());
  if (resumable && staged.stats.resume !== undefined) {
    staged.nextCursor.push([POSITION_STATE_KEY, { tag: 'text', val: staged.stats.resume }]);
  }
  if (cursorColumn !== undefined && !staged.isEmpty()) {
    // Without the new position the next run would read these rows again, and an append
    // would duplicate them: fail now, before the target is touched.
    if (staged.stats.maxCursor === undefined) {
      throw fail({
        tag: 'source',
        val: `the scan returned ${staged.stats.rows} rows but no largest value of cursor column ${cursorColumn}`,
      });
    }
    staged.nextCursor.push([cursorStateKey(cursorColumn), staged.stats.maxCursor]);
  }
  return staged;
}

/**
 * Fails with `key-violation` when staging has rows with a NULL key component or duplicate
 * keys, so such rows never reach the target. Does nothing when `key` is empty.
 */
export function checkKeys(staging, key) {
  if (key.length === 0) return;
  const check = staging.checkKeys(key);
  log.progress('check', check.rows, check.rows);
  if (check.nullKeyRows === 0n && check.duplicateGroups === 0n) {
    info(`check: key (${key.join(', ')}) is unique`);
    return;
  }
  let message =
    `key (${key.join(', ')}) in staging: ${check.nullKeyRows} rows with a NULL key component, ` +
    `${check.duplicateGroups} duplicated keys`;
  if (check.sample.length > 0) {
    message += `; e.g. ${check.sample.map((row) => `(${row.map(display).join(', ')})`).join(', ')}`;
  }
  throw fail({ tag: 'key-violation', val: message });
}

/**
 * Runs `steps` in one sink transaction, then makes the staged state entries durable. On
 * any error the transaction is rolled back and the error rethrown, leaving target and
 * state as they were. State is committed only after the sink, so it never runs ahead of it.
 */
export function finalize(steps) {
  log.progress('finalize', 0n, 1n);
  sink.begin();
  let out;
  try {
    out = steps();
    sink.commit();
  } catch (err) {
    // The original error is the one worth reporting; the host rolls back anything still
    // open anyway.
    try {
      sink.rollback();
    } catch (rollback) {
      warn(`finalize: rollback failed: ${rollback}`);
    }
    throw err;
  }
  state.commit();
  log.progress('finalize', 1n, 1n);
  return out;
}

/**
 * Drops a staging table after the run finalized. A failure only warns: target and state
 * are final by then, and the host drops the staging tables a run leaves behind.
 */
export function dropStaging(staging) {
  const name = staging.name();
  try {
    sink.dropStaging(staging);
  } catch (err) {
    warn(`could not drop staging table ${name}: ${err}`);
  }
}

// A key value in an error message, written as the Rust SDK writes it.
function display(value) {
  switch (value.tag) {
    case 'null':
      return 'NULL';
    case 'bytes':
      return `<${value.val.length} bytes>`;
    case 'text':
    case 'json':
      return JSON.stringify(value.val);
    case 'date':
      return `${value.val} days after 1970-01-01`;
    case 'timestamp':
    case 'timestamp-tz':
      return `${value.val} us after 1970-01-01`;
    default:
      return `${value.val}`;
  }
}
