//! The behaviour model: deterministic source generations for strategy tests and the matrix.
//!
//! Generation 0 has `rows` rows (10,000 by default, `DPONE_MATRIX_ROW_COUNT` overrides).
//! Generation 1 changes 20% of them (the cursor column moves on and values change), deletes
//! 5% and inserts 5% new keys. Every row has a key (`id`, or `region, id` as a compound key
//! whose text part holds separator characters), a cursor (`updated_at`), a partition
//! column (`day`, 12 days), a decimal and a label, then 120 sparse wide columns: NULL
//! except on every tenth row, where a third of them carry values of mixed types (integers
//! including the smallest and largest 64-bit ones, decimals with trailing zeros, text with
//! unicode and control characters, empty strings next to NULLs, dates, timestamps with a
//! time zone, booleans, bytes). The same seed gives the same rows; pairs with ClickHouse
//! keep to what its `Date` and `DateTime` hold ([`Domain`]).

use std::collections::BTreeMap;

use crate::model::{Column, DataType, DecimalSpec, Schema, Value, decimal_text, time};

/// Wide columns per row.
pub const WIDE_COLUMNS: usize = 120;
/// Rows of generation 0 unless configured.
pub const DEFAULT_ROWS: usize = 10_000;
/// Days the partition column spans.
pub const DAYS: i64 = 12;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    pub seed: u64,
    pub rows: usize,
    /// Key `(region, id)` instead of `(id)`.
    pub compound_key: bool,
    pub domain: Domain,
}

/// The values every connector of a pair can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Every portable value: dates and timestamps from the 1940s to far in the future,
    /// with microseconds (PostgreSQL, SQLite).
    Full,
    /// Dates from 1970 (to 2079), timestamps in whole seconds from 1970 (to 2096): what
    /// ClickHouse's `Date` and `DateTime` hold.
    Epoch,
    /// Dates as in `Full`, timestamps with microseconds from the 4th century to the 7th
    /// millennium: within BigQuery's years 1 to 9999.
    Calendar,
}

impl Domain {
    /// The domain of a pair of connection kinds.
    pub fn of(kinds: &[&str]) -> Domain {
        if kinds.contains(&"clickhouse") {
            Domain::Epoch
        } else if kinds.contains(&"bigquery") {
            Domain::Calendar
        } else {
            Domain::Full
        }
    }
}

/// Fewest rows the model generates: enough for every generation to change, delete and add.
pub const MIN_ROWS: usize = 100;

/// Rows of generation 0: `DPONE_MATRIX_ROW_COUNT` (digits only, at least [`MIN_ROWS`]), else
/// 10,000.
pub fn rows_from_env() -> crate::error::Result<usize> {
    match std::env::var("DPONE_MATRIX_ROW_COUNT") {
        Err(_) => Ok(DEFAULT_ROWS),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(rows) if rows >= MIN_ROWS => Ok(rows),
            _ => Err(crate::error::Error::config(
                "DPONE_MATRIX_ROW_COUNT",
                format!("`{text}` is not a whole number of rows of at least {MIN_ROWS}"),
            )),
        },
    }
}

impl ModelConfig {
    /// The model with `DPONE_MATRIX_ROW_COUNT` rows ([`rows_from_env`]).
    pub fn from_env(seed: u64, compound_key: bool, domain: Domain) -> crate::error::Result<Self> {
        Ok(ModelConfig {
            seed,
            rows: rows_from_env()?,
            compound_key,
            domain,
        })
    }
}

/// Indexes of the named columns in [`schema`].
pub const ID: usize = 0;
pub const REGION: usize = 1;
pub const UPDATED_AT: usize = 2;
pub const DAY: usize = 3;

/// The first day of the partition column.
pub fn first_day() -> i32 {
    time::parse_date("2024-01-01").unwrap_or_default()
}

fn wide_type(i: usize) -> DataType {
    match i % 8 {
        0 => DataType::Int64,
        1 => DataType::Decimal(Some(DecimalSpec {
            precision: 12,
            scale: 3,
        })),
        2 | 6 => DataType::Text,
        3 => DataType::Date,
        4 => DataType::TimestampTz,
        5 => DataType::Boolean,
        _ => DataType::Bytes,
    }
}

/// The model table's schema.
pub fn schema(cfg: &ModelConfig) -> Schema {
    let col = |name: &str, data_type, nullable| Column {
        name: name.into(),
        data_type,
        nullable,
    };
    let mut columns = vec![
        col("id", DataType::Int64, false),
        col("region", DataType::Text, false),
        col("updated_at", DataType::Timestamp, false),
        col("day", DataType::Date, false),
        col(
            "amount",
            DataType::Decimal(Some(DecimalSpec {
                precision: 18,
                scale: 4,
            })),
            true,
        ),
        col("label", DataType::Text, true),
    ];
    columns.extend((1..=WIDE_COLUMNS).map(|i| col(&format!("w{i:03}"), wide_type(i), true)));
    Schema {
        columns,
        primary_key: key(cfg),
    }
}

/// The key columns.
pub fn key(cfg: &ModelConfig) -> Vec<String> {
    if cfg.compound_key {
        vec!["region".into(), "id".into()]
    } else {
        vec!["id".into()]
    }
}

/// splitmix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const REGIONS: [&str; 6] = ["eu|north", "eu", "|north", "us,east", "ap\tsouth", "sa:1"];
const LABELS: [&str; 6] = [
    "plain",
    "",
    "žluťoučký kůň – 日本語 🚀",
    "line\nbreak\tand\u{1}control",
    "quote ' and \" and \\",
    "trailing space ",
];

/// One generated row; `version` 0 in generation 0, 1 for a row generation 1 changed.
fn row(cfg: &ModelConfig, id: i64, version: u64) -> Vec<Value> {
    let mut rng = Rng::new(cfg.seed, (id as u64) << 8 | version);
    let base = time::parse_timestamp("2024-01-01 00:00:00").unwrap_or_default();
    let updated_at = base + (version as i64) * 86_400_000_000 * 40 + id * 1_000_000;
    let mut out = vec![
        Value::Int(id),
        Value::Text(REGIONS[(id as usize) % REGIONS.len()].into()),
        Value::Timestamp(updated_at),
        Value::Date(first_day() + (id % DAYS) as i32),
        match rng.below(10) {
            0 => Value::Null,
            _ => Value::Decimal(decimal_text(
                i128::from(rng.below(2_000_000) as i64 - 1_000_000) * 100,
                4,
            )),
        },
        match rng.below(8) {
            0 => Value::Null,
            n => match LABELS[(n as usize) % LABELS.len()] {
                "" => Value::Text(String::new()),
                label => Value::Text(format!("{label} #{id}.{version}")),
            },
        },
    ];
    let sampled = id % 10 == 0;
    for i in 1..=WIDE_COLUMNS {
        if !sampled || rng.below(3) != 0 {
            out.push(Value::Null);
            continue;
        }
        let r = rng.next();
        out.push(match wide_type(i) {
            DataType::Int64 => Value::Int(match r % 7 {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => (r >> 1) as i64,
            }),
            DataType::Decimal(_) => Value::Decimal(decimal_text(
                i128::from((r % 2_000_000) as i64 - 1_000_000) * 10,
                3,
            )),
            DataType::Text => Value::Text(match r % 4 {
                0 => String::new(),
                1 => format!("w{i}\u{7}\r\n{version}"),
                2 => "ünïcödé ✓".into(),
                _ => format!("{r:x}"),
            }),
            DataType::Date => Value::Date(match cfg.domain {
                Domain::Full | Domain::Calendar => (r % 40_000) as i32 - 10_000,
                Domain::Epoch => (r % 40_000) as i32,
            }),
            DataType::TimestampTz => Value::TimestampTz(match cfg.domain {
                Domain::Full => (r % 4_000_000_000_000_000) as i64 - 1_000_000_000_000_000,
                Domain::Epoch => (r % 4_000_000_000) as i64 * 1_000_000,
                Domain::Calendar => (r % 200_000_000_000_000_000) as i64 - 50_000_000_000_000_000,
            }),
            DataType::Boolean => Value::Boolean(r.is_multiple_of(2)),
            _ => Value::Bytes(r.to_le_bytes()[..(r % 9) as usize].to_vec()),
        });
    }
    out
}

/// The source rows of a generation (0 or 1), sorted by id.
pub fn generation(cfg: &ModelConfig, number: u32) -> Vec<Vec<Value>> {
    let n = cfg.rows as i64;
    let mut rows = BTreeMap::new();
    for id in 1..=n {
        rows.insert(id, row(cfg, id, 0));
    }
    if number >= 1 {
        for id in 1..=n {
            match Rng::new(cfg.seed, id as u64 ^ 0xFFFF_0000).below(100) {
                0..20 => {
                    rows.insert(id, row(cfg, id, 1));
                }
                20..25 => {
                    rows.remove(&id);
                }
                _ => {}
            }
        }
        for id in n + 1..=n + n / 20 {
            rows.insert(id, row(cfg, id, 1));
        }
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_deterministic_and_shaped_as_documented() {
        let cfg = ModelConfig {
            seed: 7,
            rows: 2_000,
            compound_key: false,
            domain: Domain::Full,
        };
        let g0 = generation(&cfg, 0);
        assert_eq!(g0, generation(&cfg, 0));
        assert_eq!(g0.len(), 2_000);
        assert_eq!(g0[0].len(), 6 + WIDE_COLUMNS);
        let g1 = generation(&cfg, 1);
        let id = |r: &Vec<Value>| format!("{:?}", r[ID]);
        let old: BTreeMap<_, _> = g0.iter().map(|r| (id(r), r)).collect();
        let changed = g1
            .iter()
            .filter(|r| old.get(&id(r)).is_some_and(|o| *o != *r))
            .count();
        let new = g1.iter().filter(|r| !old.contains_key(&id(r))).count();
        let deleted = g0.len() + new - g1.len();
        assert!((300..=500).contains(&changed), "{changed} changed");
        assert!((60..=140).contains(&deleted), "{deleted} deleted");
        assert_eq!(new, 100);
        // Sparse wide columns: values only on sampled rows, of every type.
        let filled = |r: &Vec<Value>| r[6..].iter().filter(|v| **v != Value::Null).count();
        assert!(g0.iter().any(|r| filled(r) > 20));
        assert!(g0.iter().any(|r| filled(r) == 0));
        assert!(g0.iter().any(|r| r[5] == Value::Text(String::new())));
        assert!(g0.iter().any(|r| r[5] == Value::Null));
    }
}
