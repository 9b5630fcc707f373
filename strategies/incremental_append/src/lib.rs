//! `incremental_append`: appends the source rows past a stored cursor; existing target rows
//! are never touched.
//!
//! Stages the rows whose `cursor_column` is greater than the stored cursor and, when
//! `unique_key` is given, fails on NULL or duplicate keys among them before the target is
//! touched. A run that finds no new rows changes nothing.
//!
//! State: `cursor.<cursor_column>` (the largest `cursor_column` value appended), committed
//! with the insert.

use dpone_strategy_sdk::{
    CURSOR_COLUMN, DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo,
    UNIQUE_KEY, check_keys, finalize, optional, required, sink, stage_incremental,
    transactional_needs,
};

struct IncrementalAppend;

impl Guest for IncrementalAppend {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "incremental_append".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Appends the source rows past the stored cursor.".into(),
            options: vec![
                required(
                    CURSOR_COLUMN,
                    OptionKind::Text,
                    "Monotonically increasing column; rows above the stored cursor are new.",
                ),
                optional(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Key columns that must be non-NULL and unique among new rows; the primary key of a created target.",
                ),
            ],
            needs: transactional_needs(false),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let cursor_column = options.required_text(CURSOR_COLUMN)?;
        let key = options.text_list(UNIQUE_KEY)?;

        let staged = stage_incremental(Some(&cursor_column))?;
        if staged.is_empty() {
            return Ok(staged.finish_empty());
        }
        check_keys(&staged.staging, &key)?;
        let rows_written = finalize(|| {
            // Inside the transaction: a failed first run leaves no target behind.
            sink::ensure_target(&staged.schema, &key)?;
            let written = sink::insert_from_staging(&staged.staging)?;
            staged.put_cursor()?;
            Ok(written)
        })?;
        Ok(staged.finish(rows_written, 0, format!("appended {rows_written} rows")))
    }
}

dpone_strategy_sdk::export_strategy!(IncrementalAppend);
