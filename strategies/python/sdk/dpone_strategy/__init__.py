"""Guest SDK for dpone load strategies written in Python.

The Python twin of the Rust SDK (`strategies/sdk`): the same shared flow (read options,
stage the source, check keys, finalize in one sink transaction, then commit state), over
the bindings componentize-py generates from `wit/strategy.wit` (the `wit_world` package).

A strategy is a module defining `WitWorld`, the class componentize-py exports:

    from dpone_strategy import Strategy, export

    class SnapshotDiff(Strategy):
        def describe(self): ...
        def run(self, ctx): ...

    WitWorld = export(SnapshotDiff)

Errors: every capability raises `componentize_py_types.Err(DponeError_...)` on failure,
which `run` lets through, so the host sees the host's own error. Raise your own with
`fail(...)` and `invalid_config(...)`. Any other exception is a strategy bug: `export`
logs its traceback at error level, then lets it trap (the host reports a sandbox error).
"""

import json
import traceback
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, TypeVar

import wit_world
from componentize_py_types import Err
from wit_world import (
    CapabilityNeeds,
    OptionKind,
    OptionSpec,
    OptionValue_Boolean,
    OptionValue_Filter,
    OptionValue_Integer,
    OptionValue_Text,
    OptionValue_TextList,
    RunSummary,
)
from wit_world.imports import clock, log, sink, source, state, types

__all__ = [
    "CURSOR_COLUMN",
    "UNIQUE_KEY",
    "Options",
    "Staged",
    "Strategy",
    "check_keys",
    "clock",
    "drop_staging",
    "export",
    "fail",
    "finalize",
    "info",
    "invalid_config",
    "log",
    "optional",
    "required",
    "scratch",
    "sink",
    "source",
    "stage",
    "stage_incremental",
    "state",
    "transactional_needs",
    "types",
    "warn",
    "whole_source",
]

# Option names shared with the Rust strategies, so every strategy spells them the same way.
UNIQUE_KEY = "unique_key"
CURSOR_COLUMN = "cursor_column"

# State key of where a resumable source's last finalized scan stopped (Kafka offsets).
_POSITION_STATE_KEY = "position.source"


def _cursor_state_key(column: str) -> str:
    # Keyed by the column, so pointing cursor_column elsewhere starts from the beginning.
    return f"cursor.{column}"


class Strategy:
    """A load strategy: override `describe` (pure) and `run`."""

    def describe(self) -> wit_world.StrategyInfo:
        raise NotImplementedError

    def run(self, ctx: wit_world.RunContext) -> RunSummary:
        raise NotImplementedError


def export(strategy: type) -> type:
    """The `WitWorld` class componentize-py exports, running `strategy`.

    An exception other than a dpone error is logged with its traceback before it
    propagates (and traps): the host then reports where the strategy failed.
    """

    class Exported(wit_world.WitWorld):
        def describe(self) -> wit_world.StrategyInfo:
            return strategy().describe()

        def run(self, ctx: wit_world.RunContext) -> RunSummary:
            try:
                return strategy().run(ctx)
            except Err:
                raise
            except BaseException:
                log.log(log.Level.ERROR, traceback.format_exc())
                raise

    return Exported


def required(name: str, kind: OptionKind, description: str) -> OptionSpec:
    """A required option for `StrategyInfo.options`."""
    return OptionSpec(name, kind, True, description)


def optional(name: str, kind: OptionKind, description: str) -> OptionSpec:
    """An optional option for `StrategyInfo.options`."""
    return OptionSpec(name, kind, False, description)


def transactional_needs(mutable_target: bool) -> CapabilityNeeds:
    """Needs of a strategy that finalizes in one sink transaction; `mutable_target` when it
    deletes or rewrites target rows."""
    return CapabilityNeeds(transactions=True, rename_swap=False, mutable_target=mutable_target)


def fail(error: types.DponeError) -> Err:
    """The exception that makes `run` return `error` to the host: `raise fail(...)`."""
    return Err(error)


def invalid_config(name: str, message: str) -> Err:
    """An `invalid-config` error for the option `name`, naming its manifest field."""
    return fail(types.DponeError_InvalidConfig(types.FieldError(f"sink.strategy.{name}", message)))


def info(message: str) -> None:
    log.log(log.Level.INFO, message)


def warn(message: str) -> None:
    log.log(log.Level.WARN, message)


class Options:
    """The manifest's `sink.strategy` options of a run.

    The host already checked names, presence and kinds against `describe`; the accessors
    check again so a host bug surfaces as a config error naming the field, not a wrong load.
    """

    def __init__(self, options: List[Tuple[str, wit_world.OptionValue]]):
        # The first value of a name wins, as in the Rust SDK.
        self._options = {}
        for name, value in options:
            self._options.setdefault(name, value)

    def _get(self, name: str, kind: type, kind_name: str):
        value = self._options.get(name)
        if value is None:
            return None
        if not isinstance(value, kind):
            raise invalid_config(name, f"must be a {kind_name}")
        return value.value

    def text(self, name: str) -> Optional[str]:
        return self._get(name, OptionValue_Text, "text")

    def required_text(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise invalid_config(name, "is required")
        return value

    def text_list(self, name: str) -> List[str]:
        """Empty when absent, which every caller treats as "not given"."""
        return self._get(name, OptionValue_TextList, "list of text") or []

    def required_text_list(self, name: str) -> List[str]:
        value = self.text_list(name)
        if not value:
            raise invalid_config(name, "is required and must not be empty")
        return value

    def integer(self, name: str) -> Optional[int]:
        return self._get(name, OptionValue_Integer, "integer")

    def boolean(self, name: str) -> Optional[bool]:
        return self._get(name, OptionValue_Boolean, "boolean")

    def filter(self, name: str) -> List[types.Term]:
        """Empty (every row) when absent."""
        return self._get(name, OptionValue_Filter, "filter") or []


def whole_source() -> source.ScanBounds:
    """Bounds that read every source row."""
    return source.ScanBounds(cursor=None, filter=[], limit=None, row_versions=None, since=None)


def scratch(row_hash: Optional[str] = None) -> sink.StagingOptions:
    """Options of a scratch staging table (read by finalize, then dropped), with the row
    hash column `row_hash` when given."""
    return sink.StagingOptions(kind=sink.StagingKind.SCRATCH, row_hash=row_hash)


@dataclass
class Staged:
    """A source scan loaded into a staging table of this run."""

    # The source schema: staging was created with it, and a missing target gets it too.
    schema: types.Schema
    staging: sink.Staging
    stats: source.ScanStats
    # State entries (cursor, source position) to store once this run finalizes.
    next_cursor: List[Tuple[str, types.Value]] = field(default_factory=list)

    def is_empty(self) -> bool:
        return self.stats.rows == 0

    def put_cursor(self) -> None:
        """Stages the new cursor (and source position), durable with the finalize
        transaction."""
        for key, value in self.next_cursor:
            state.put(key, value)

    def merge_by_key(self, key: List[str]) -> Tuple[int, int]:
        """Upserts staging into the target by `key` inside the open transaction: creates a
        missing target, deletes the target rows whose key is in staging, inserts staging.
        Returns (rows deleted, rows inserted)."""
        sink.ensure_target(self.schema, key)
        deleted = sink.delete_rows(self.staging, key, sink.KeyMatch_InStaging(), [])
        inserted = sink.insert_from_staging(self.staging)
        return deleted, inserted

    def finish(self, rows_written: int, rows_deleted: int, message: str) -> RunSummary:
        """Ends a finalized run: drops staging and reports what the run did."""
        drop_staging(self.staging)
        return RunSummary(self.stats.rows, rows_written, rows_deleted, message)

    def finish_empty(self) -> RunSummary:
        """Ends a run that staged no rows: the target and the state stay as they are."""
        info("no new rows: target and state unchanged")
        drop_staging(self.staging)
        return RunSummary(0, 0, 0, "no new rows")


def stage(bounds: source.ScanBounds, options: sink.StagingOptions) -> Staged:
    """Creates a staging table with the source schema (plus the row hash column `options`
    asks for) and loads the source rows within `bounds`."""
    # The scan opens first, as in the Rust SDK: bad bounds fail before staging exists.
    scan = source.open_scan(bounds)
    log.progress("stage", 0, None)
    description = source.describe()
    staging = sink.create_staging(description.schema, options)
    info(f"stage: loading {description.name} into {staging.name()}")
    stats = sink.load(staging, scan)
    log.progress("stage", stats.rows, stats.rows)
    return Staged(description.schema, staging, stats)


def stage_incremental(cursor_column: Optional[str]) -> Staged:
    """Stages the source rows past the cursor the last finalized run stored for
    `cursor_column`, or the whole source without one. A resumable source also reads only
    what followed the position the last finalized run stored."""
    resumable = source.describe().capabilities.resumable
    since = None
    if resumable:
        position = state.get(_POSITION_STATE_KEY)
        if isinstance(position, types.Value_Text):
            since = position.value
    cursor = None
    if cursor_column is not None:
        cursor = source.CursorBound(cursor_column, state.get(_cursor_state_key(cursor_column)), None)
    bounds = source.ScanBounds(cursor=cursor, filter=[], limit=None, row_versions=None, since=since)
    staged = stage(bounds, scratch())
    if resumable and staged.stats.resume is not None:
        staged.next_cursor.append((_POSITION_STATE_KEY, types.Value_Text(staged.stats.resume)))
    if cursor_column is not None and not staged.is_empty():
        # Without the new position the next run would read these rows again, and an append
        # would duplicate them: fail now, before the target is touched.
        if staged.stats.max_cursor is None:
            raise fail(
                types.DponeError_Source(
                    f"the scan returned {staged.stats.rows} rows but no largest value of cursor column {cursor_column}"
                )
            )
        staged.next_cursor.append((_cursor_state_key(cursor_column), staged.stats.max_cursor))
    return staged


def check_keys(staging: sink.Staging, key: List[str]) -> None:
    """Fails with `key-violation` when staging has rows with a NULL key component or
    duplicate keys, so such rows never reach the target. Does nothing when `key` is empty."""
    if not key:
        return
    check = staging.check_keys(key)
    log.progress("check", check.rows, check.rows)
    if check.null_key_rows == 0 and check.duplicate_groups == 0:
        info(f"check: key ({', '.join(key)}) is unique")
        return
    message = (
        f"key ({', '.join(key)}) in staging: {check.null_key_rows} rows with a NULL key component, "
        f"{check.duplicate_groups} duplicated keys"
    )
    if check.sample:
        shown = ", ".join("(" + ", ".join(_display(v) for v in row) + ")" for row in check.sample)
        message += f"; e.g. {shown}"
    raise fail(types.DponeError_KeyViolation(message))


T = TypeVar("T")


def finalize(steps: Callable[[], T]) -> T:
    """Runs `steps` in one sink transaction, then makes the staged state entries durable.

    On any error the transaction is rolled back and the error re-raised, leaving target
    and state as they were. State is committed only after the sink, so it never runs ahead
    of it.
    """
    log.progress("finalize", 0, 1)
    sink.begin()
    try:
        out = steps()
        sink.commit()
    except BaseException:
        # The original error is the one worth reporting; the host rolls back anything still
        # open anyway.
        try:
            sink.rollback()
        except Err as rollback:
            warn(f"finalize: rollback failed: {rollback.value}")
        raise
    state.commit()
    log.progress("finalize", 1, 1)
    return out


def drop_staging(staging: sink.Staging) -> None:
    """Drops a staging table after the run finalized. A failure only warns: target and
    state are final by then, and the host drops the staging tables a run leaves behind."""
    name = staging.name()
    try:
        sink.drop_staging(staging)
    except Err as err:
        warn(f"could not drop staging table {name}: {err.value}")


def _display(value: types.Value) -> str:
    """A key value in an error message, written as the Rust SDK writes it."""
    if isinstance(value, types.Value_Null):
        return "NULL"
    if isinstance(value, types.Value_Boolean):
        return "true" if value.value else "false"
    if isinstance(value, types.Value_Float):
        integral = value.value.is_integer() and abs(value.value) < 1e16
        return str(int(value.value)) if integral else repr(value.value)
    if isinstance(value, (types.Value_Text, types.Value_Json)):
        return json.dumps(value.value, ensure_ascii=False)
    if isinstance(value, types.Value_Bytes):
        return f"<{len(value.value)} bytes>"
    if isinstance(value, types.Value_Date):
        return f"{value.value} days after 1970-01-01"
    if isinstance(value, (types.Value_Timestamp, types.Value_TimestampTz)):
        return f"{value.value} us after 1970-01-01"
    return str(value.value)
