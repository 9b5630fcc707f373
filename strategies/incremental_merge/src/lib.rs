//! `incremental_merge`: upserts the changed source rows into the target by `unique_key`.
//!
//! Stages the rows whose `cursor_column` is greater than the stored cursor (the whole source
//! when no cursor column is configured) and fails on NULL or duplicate keys among them before
//! the target is touched. Then, in one transaction, deletes the target rows whose key is in
//! staging and inserts staging. A run that finds no rows changes nothing.
//!
//! State: `cursor.<cursor_column>` (the largest `cursor_column` value merged; only with a
//! cursor column),
//! committed with the merge.

use dpone_strategy_sdk::{
    CURSOR_COLUMN, DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo,
    UNIQUE_KEY, check_keys, finalize, optional, required, stage_incremental, transactional_needs,
};

struct IncrementalMerge;

impl Guest for IncrementalMerge {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "incremental_merge".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Upserts the source rows past the stored cursor by unique key.".into(),
            options: vec![
                required(
                    UNIQUE_KEY,
                    OptionKind::TextList,
                    "Merge key columns: non-NULL and unique in every batch; the primary key of a created target.",
                ),
                optional(
                    CURSOR_COLUMN,
                    OptionKind::Text,
                    "Column that grows when a row changes; without it every run merges the whole source (of a resumable source, what followed the last run).",
                ),
            ],
            needs: transactional_needs(true),
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let key = options.required_text_list(UNIQUE_KEY)?;
        let cursor_column = options.text(CURSOR_COLUMN)?;

        let staged = stage_incremental(cursor_column.as_deref())?;
        if staged.is_empty() {
            return Ok(staged.finish_empty());
        }
        check_keys(&staged.staging, &key)?;
        let (rows_deleted, rows_written) = finalize(|| {
            let (deleted, inserted) = staged.merge_by_key(&key)?;
            staged.put_cursor()?;
            Ok((deleted, inserted))
        })?;
        Ok(staged.finish(
            rows_written,
            rows_deleted,
            format!("merged {rows_written} rows by key, replacing {rows_deleted} existing rows"),
        ))
    }
}

dpone_strategy_sdk::export_strategy!(IncrementalMerge);
