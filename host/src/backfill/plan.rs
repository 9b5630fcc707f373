//! Chunk planning: pure, deterministic, from the strategy's `backfill.*` options and the
//! source column's type.

use crate::error::{Error, Result};
use crate::model::{DataType, RangeTerm, Schema, Value, time};
use crate::runtime::bindings::OptionValue;

/// Most chunks one campaign may have: a typo in `step` should fail, not plan a million.
pub const MAX_PLANNED_CHUNKS: usize = 100_000;
const MAX_WORKERS: i64 = 32;

/// A campaign as the manifest describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignSpec {
    pub column: String,
    pub chunks: Vec<RangeTerm>,
    pub parallel_workers: usize,
    /// Most chunks one invocation runs; `None` for all.
    pub max_chunks: Option<usize>,
    pub max_attempts: u32,
    pub lease_seconds: u32,
}

fn field(name: &str) -> String {
    format!("sink.strategy.{name}")
}

fn text<'a>(options: &'a [(String, OptionValue)], name: &str) -> Result<&'a str> {
    match options.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
        Some(OptionValue::Text(t)) => Ok(t),
        _ => Err(Error::config(field(name), "required")),
    }
}

fn integer(
    options: &[(String, OptionValue)],
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64> {
    let value = match options.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
        None => default,
        Some(OptionValue::Integer(i)) => *i,
        Some(_) => return Err(Error::config(field(name), "must be an integer")),
    };
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Error::config(
            field(name),
            format!(
                "must be between {} and {} (got {value})",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// Reads the campaign options and plans its chunks over `schema`'s chunk column.
pub fn campaign_spec(options: &[(String, OptionValue)], schema: &Schema) -> Result<CampaignSpec> {
    let column = text(options, "backfill.chunk.column")?.to_string();
    let data_type = schema
        .require(&column, &field("backfill.chunk.column"))?
        .data_type;
    let chunks = plan_chunks(
        &column,
        &data_type,
        text(options, "backfill.chunk.from")?,
        text(options, "backfill.chunk.to")?,
        text(options, "backfill.chunk.step")?,
    )?;
    let max_chunks = match integer(options, "backfill.max_chunks", 0, 0..=i64::MAX)? {
        0 => None,
        n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    Ok(CampaignSpec {
        column,
        chunks,
        parallel_workers: integer(options, "backfill.parallel_workers", 1, 1..=MAX_WORKERS)?
            as usize,
        max_chunks,
        max_attempts: integer(options, "backfill.retry_policy.max_attempts", 3, 1..=100)? as u32,
        lease_seconds: integer(
            options,
            "backfill.retry_policy.lease_seconds",
            300,
            1..=86_400,
        )? as u32,
    })
}

/// Splits `[from, to]` (integers, inclusive chunks) or `[from, to)` (dates and timestamps,
/// half-open chunks) into chunks of `step`.
pub fn plan_chunks(
    column: &str,
    data_type: &DataType,
    from: &str,
    to: &str,
    step: &str,
) -> Result<Vec<RangeTerm>> {
    let from_field = field("backfill.chunk.from");
    let to_field = field("backfill.chunk.to");
    let step_field = field("backfill.chunk.step");
    let range = |low: Value, high: Value, high_inclusive: bool| RangeTerm {
        column: column.to_string(),
        low,
        high,
        high_inclusive,
    };
    let mut chunks = Vec::new();
    match data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let int = |t: &str, f: &str| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| Error::config(f, format!("`{t}` is not an integer")))
            };
            let (from, to) = (int(from, &from_field)?, int(to, &to_field)?);
            let step = int(step, &step_field)?;
            if step < 1 {
                return Err(Error::config(step_field, "must be at least 1"));
            }
            if from > to {
                return Err(Error::config(
                    to_field,
                    format!("must not be below from ({from})"),
                ));
            }
            let mut low = from;
            loop {
                let high = low.saturating_add(step - 1).min(to);
                chunks.push(range(Value::Int(low), Value::Int(high), true));
                if high >= to || chunks.len() > MAX_PLANNED_CHUNKS {
                    break;
                }
                low = high + 1;
            }
        }
        DataType::Date => {
            let date = |t: &str, f: &str| {
                time::parse_date(t.trim())
                    .ok_or_else(|| Error::config(f, format!("`{t}` is not a date YYYY-MM-DD")))
            };
            let (from, to) = (date(from, &from_field)?, date(to, &to_field)?);
            let micros = step_micros(step, &step_field)?;
            const DAY: i64 = 86_400_000_000;
            if micros % DAY != 0 {
                return Err(Error::config(
                    step_field,
                    "must be whole days for a date column",
                ));
            }
            let days = i32::try_from(micros / DAY)
                .map_err(|_| Error::config(&step_field, "is too large"))?;
            if from >= to {
                return Err(Error::config(
                    to_field,
                    "must be after from (the range is half-open)",
                ));
            }
            let mut low = from;
            while low < to && chunks.len() <= MAX_PLANNED_CHUNKS {
                let high = low.saturating_add(days).min(to);
                chunks.push(range(Value::Date(low), Value::Date(high), false));
                low = high;
            }
        }
        DataType::Timestamp | DataType::TimestampTz => {
            let stamp = |t: &str, f: &str| {
                time::parse_timestamp(t.trim())
                    .ok_or_else(|| Error::config(f, format!("`{t}` is not a timestamp")))
            };
            let (from, to) = (stamp(from, &from_field)?, stamp(to, &to_field)?);
            let micros = step_micros(step, &step_field)?;
            if from >= to {
                return Err(Error::config(
                    to_field,
                    "must be after from (the range is half-open)",
                ));
            }
            let wrap = |m: i64| {
                if *data_type == DataType::Timestamp {
                    Value::Timestamp(m)
                } else {
                    Value::TimestampTz(m)
                }
            };
            let mut low = from;
            while low < to && chunks.len() <= MAX_PLANNED_CHUNKS {
                let high = low.saturating_add(micros).min(to);
                chunks.push(range(wrap(low), wrap(high), false));
                low = high;
            }
        }
        other => {
            return Err(Error::config(
                field("backfill.chunk.column"),
                format!(
                    "`{column}` is {other:?}; chunks need an integer, date or timestamp column"
                ),
            ));
        }
    }
    if chunks.len() > MAX_PLANNED_CHUNKS {
        return Err(Error::config(
            step_field,
            format!("plans more than {MAX_PLANNED_CHUNKS} chunks; use a larger step"),
        ));
    }
    Ok(chunks)
}

/// `N days`, `N hours` or `N minutes` (singular too) in microseconds.
fn step_micros(step: &str, field: &str) -> Result<i64> {
    let bad = || {
        Error::config(
            field,
            format!("`{step}` is not `N days`, `N hours` or `N minutes` (N at least 1)"),
        )
    };
    let mut parts = step.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit: i64 = match unit.trim_end_matches('s') {
        "day" => 86_400_000_000,
        "hour" => 3_600_000_000,
        "minute" => 60_000_000,
        _ => return Err(bad()),
    };
    if n < 1 {
        return Err(bad());
    }
    n.checked_mul(unit).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lows_highs(chunks: &[RangeTerm]) -> Vec<(Value, Value)> {
        chunks
            .iter()
            .map(|c| (c.low.clone(), c.high.clone()))
            .collect()
    }

    #[test]
    fn integer_chunks_are_inclusive_and_cover_the_range() {
        let chunks = plan_chunks("id", &DataType::Int64, "1", "25", "10").unwrap();
        assert_eq!(
            lows_highs(&chunks),
            vec![
                (Value::Int(1), Value::Int(10)),
                (Value::Int(11), Value::Int(20)),
                (Value::Int(21), Value::Int(25)),
            ]
        );
        assert!(chunks.iter().all(|c| c.high_inclusive));
        let one = plan_chunks("id", &DataType::Int32, "5", "5", "100").unwrap();
        assert_eq!(lows_highs(&one), vec![(Value::Int(5), Value::Int(5))]);
    }

    #[test]
    fn date_and_timestamp_chunks_are_half_open() {
        let chunks =
            plan_chunks("d", &DataType::Date, "2024-01-01", "2024-01-20", "7 days").unwrap();
        let day = |s: &str| Value::Date(time::parse_date(s).unwrap());
        assert_eq!(
            lows_highs(&chunks),
            vec![
                (day("2024-01-01"), day("2024-01-08")),
                (day("2024-01-08"), day("2024-01-15")),
                (day("2024-01-15"), day("2024-01-20")),
            ]
        );
        assert!(chunks.iter().all(|c| !c.high_inclusive));
        let stamps = plan_chunks(
            "t",
            &DataType::TimestampTz,
            "2024-01-01 00:00:00",
            "2024-01-01 10:00:00",
            "6 hours",
        )
        .unwrap();
        assert_eq!(stamps.len(), 2);
        assert!(matches!(stamps[1].high, Value::TimestampTz(_)));
    }

    #[test]
    fn bad_plans_name_the_field() {
        let cases = [
            (
                DataType::Int64,
                "1",
                "10",
                "0",
                "sink.strategy.backfill.chunk.step",
            ),
            (
                DataType::Int64,
                "x",
                "10",
                "1",
                "sink.strategy.backfill.chunk.from",
            ),
            (
                DataType::Int64,
                "10",
                "1",
                "1",
                "sink.strategy.backfill.chunk.to",
            ),
            (
                DataType::Date,
                "2024-01-01",
                "2024-02-01",
                "5 hours",
                "sink.strategy.backfill.chunk.step",
            ),
            (
                DataType::Date,
                "2024-01-01",
                "2024-02-01",
                "weekly",
                "sink.strategy.backfill.chunk.step",
            ),
            (
                DataType::Timestamp,
                "2024-01-01",
                "2023-01-01",
                "1 day",
                "sink.strategy.backfill.chunk.to",
            ),
            (
                DataType::Text,
                "a",
                "b",
                "1",
                "sink.strategy.backfill.chunk.column",
            ),
            (
                DataType::Int64,
                "0",
                "10000000",
                "1",
                "sink.strategy.backfill.chunk.step",
            ),
        ];
        for (t, from, to, step, field) in cases {
            let e = plan_chunks("c", &t, from, to, step).unwrap_err();
            assert_eq!(
                e.field.as_deref(),
                Some(field),
                "{t:?} {from} {to} {step}: {e}"
            );
        }
    }
}
