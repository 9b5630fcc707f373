//! SQL Server types <-> portable types, and values <-> TDS column data.
//!
//! Dates and times travel as tiberius's raw TDS types (days since 0001-01-01, increments
//! since midnight), converted here without a date library: timestamps at microsecond
//! scale, `datetimeoffset` as its UTC date and time with offset 0.

use std::borrow::Cow;

use tiberius::ColumnData;
use tiberius::numeric::Numeric;
use tiberius::time::{Date, DateTime2, DateTimeOffset, Time};

use crate::error::{Error, Kind, Result};
use crate::model::time::MICROS_PER_DAY;
use crate::model::{DataType, DecimalSpec, Value, decimal_text, parse_decimal};

/// Days from 0001-01-01 (TDS dates) to 1970-01-01 (portable dates).
const UNIX_EPOCH_DAYS: i64 = 719_162;
/// Days from 1900-01-01 (legacy `datetime` and `smalldatetime`) to 1970-01-01.
const LEGACY_EPOCH_DAYS: i64 = 25_567;
/// The prefix of a row-version position: `mssqlrv:<rowversion as an unsigned integer>`.
const ROW_VERSION_PREFIX: &str = "mssqlrv:";

/// The DDL type of a portable type. Decimals without a declared precision (PostgreSQL's
/// `numeric`) get `decimal(38,10)`: a value with more decimal places is refused when
/// loaded ([`cell`]), never rounded.
pub fn native_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "bit".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "float".into(),
        DataType::Decimal(Some(d)) => {
            format!("decimal({},{})", d.precision.min(38), d.scale.clamp(0, 38))
        }
        DataType::Decimal(None) => "decimal(38,10)".into(),
        DataType::Text | DataType::Json => "nvarchar(max)".into(),
        DataType::Bytes => "varbinary(max)".into(),
        DataType::Date => "date".into(),
        DataType::Timestamp => "datetime2(7)".into(),
        DataType::TimestampTz => "datetimeoffset(7)".into(),
        DataType::Uuid => "uniqueidentifier".into(),
    }
}

/// The portable type of a column as `INFORMATION_SCHEMA.COLUMNS` describes it (`DATA_TYPE`,
/// `NUMERIC_PRECISION`, `NUMERIC_SCALE`); an error naming the column for types dpone does
/// not move (`sql_variant`, spatial types, `hierarchyid`, `time`).
pub fn portable_type(name: &str, precision: i64, scale: i64, column: &str) -> Result<DataType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "bit" => DataType::Boolean,
        "tinyint" | "smallint" => DataType::Int16,
        "int" => DataType::Int32,
        "bigint" => DataType::Int64,
        "real" => DataType::Float32,
        "float" => DataType::Float64,
        "decimal" | "numeric" | "money" | "smallmoney" => DataType::Decimal(Some(DecimalSpec {
            precision: u8::try_from(precision).unwrap_or(38),
            scale: i8::try_from(scale).unwrap_or(0),
        })),
        "char" | "varchar" | "nchar" | "nvarchar" | "text" | "ntext" | "xml" | "sysname" => {
            DataType::Text
        }
        "binary" | "varbinary" | "image" | "rowversion" | "timestamp" => DataType::Bytes,
        "date" => DataType::Date,
        "datetime" | "datetime2" | "smalldatetime" => DataType::Timestamp,
        "datetimeoffset" => DataType::TimestampTz,
        "uniqueidentifier" => DataType::Uuid,
        other => {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "column `{column}` is of SQL Server type `{other}`, which dpone does not move; select it cast to a supported type in a view"
                ),
            ));
        }
    })
}

/// A row-version position as the rowversion value it names.
pub fn parse_row_version(position: &str) -> Result<u64> {
    position
        .strip_prefix(ROW_VERSION_PREFIX)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::state(format!(
                "`{position}` is not a SQL Server row-version position (`{ROW_VERSION_PREFIX}<n>`)"
            ))
        })
}

/// The position of rowversion value `version`.
pub fn row_version_position(version: u64) -> String {
    format!("{ROW_VERSION_PREFIX}{version}")
}

fn date_of(days_since_epoch: i64) -> Result<Date> {
    u32::try_from(days_since_epoch + UNIX_EPOCH_DAYS)
        .ok()
        .filter(|d| d >> 24 == 0)
        .map(Date::new)
        .ok_or_else(|| Error::sink("a date before year 1 or after 9999 does not fit SQL Server"))
}

fn datetime2_of(micros: i64) -> Result<DateTime2> {
    let date = date_of(micros.div_euclid(MICROS_PER_DAY))?;
    let time = Time::new(micros.rem_euclid(MICROS_PER_DAY) as u64, 6);
    Ok(DateTime2::new(date, time))
}

fn micros_of(dt: DateTime2) -> i64 {
    let days = i64::from(dt.date().days()) - UNIX_EPOCH_DAYS;
    let t = dt.time();
    let increments = t.increments() as i64;
    // Scales above 6 (datetime2(7)) are cut to microseconds.
    let micros = match t.scale() {
        s @ 0..=6 => increments * 10i64.pow(6 - u32::from(s)),
        s => increments / 10i64.pow(u32::from(s) - 6),
    };
    days * MICROS_PER_DAY + micros
}

/// Digits after the point of decimal text, trailing zeros aside.
fn decimal_places(text: &str) -> usize {
    text.trim()
        .split_once('.')
        .map_or(0, |(_, f)| f.trim_end_matches('0').len())
}

/// A value as TDS column data: a bound parameter or a bulk-loaded cell (moved in, so text
/// and bytes are not copied). NULL travels as an `nvarchar` NULL, which the server converts
/// to any column type but binary ones.
pub fn to_column_data(v: Value) -> Result<ColumnData<'static>> {
    Ok(match v {
        Value::Null => ColumnData::String(None),
        Value::Boolean(b) => ColumnData::Bit(Some(b)),
        Value::Int(i) => ColumnData::I64(Some(i)),
        Value::Float(f) => ColumnData::F64(Some(f)),
        Value::Decimal(text) => {
            let scale = u8::try_from(decimal_places(&text))
                .ok()
                .filter(|s| *s <= 38);
            let unscaled = scale.and_then(|s| parse_decimal(&text, s as i8));
            match (scale, unscaled) {
                (Some(s), Some(u)) => ColumnData::Numeric(Some(Numeric::new_with_scale(u, s))),
                _ => {
                    return Err(Error::sink(format!(
                        "decimal `{text}` does not fit SQL Server's decimal(38)"
                    )));
                }
            }
        }
        Value::Text(s) | Value::Json(s) => ColumnData::String(Some(Cow::Owned(s))),
        Value::Bytes(b) => ColumnData::Binary(Some(Cow::Owned(b))),
        Value::Date(d) => ColumnData::Date(Some(date_of(i64::from(d))?)),
        Value::Timestamp(t) => ColumnData::DateTime2(Some(datetime2_of(t)?)),
        Value::TimestampTz(t) => {
            ColumnData::DateTimeOffset(Some(DateTimeOffset::new(datetime2_of(t)?, 0)))
        }
        Value::Uuid(u) => ColumnData::Guid(Some(
            uuid::Uuid::parse_str(&u).map_err(|_| Error::sink(format!("`{u}` is not a uuid")))?,
        )),
    })
}

/// A value as the bulk-load cell of a column the server declares as `sql_type` (e.g.
/// `int`, `decimal`) with `scale`: bulk load takes each cell in its column's exact TDS type
/// and converts nothing, so integers and floats are narrowed here (range-checked), and a
/// decimal or time with more fractional digits than the column holds is refused, never
/// rounded. `column` names it in errors.
pub fn cell(v: Value, sql_type: &str, scale: u8, column: &str) -> Result<ColumnData<'static>> {
    let misfit = |what: String| Error::sink(format!("column `{column}` ({sql_type}): {what}"));
    let finer = |v: Value| {
        misfit(format!(
            "{v:?} has more fractional digits than {sql_type}({scale})"
        ))
    };
    Ok(match (v, sql_type) {
        (Value::Null, t) => null_of(t),
        (Value::Int(i), "tinyint") => ColumnData::U8(Some(
            u8::try_from(i).map_err(|_| misfit(format!("{i} does not fit")))?,
        )),
        (Value::Int(i), "smallint") => ColumnData::I16(Some(
            i16::try_from(i).map_err(|_| misfit(format!("{i} does not fit")))?,
        )),
        (Value::Int(i), "int") => ColumnData::I32(Some(
            i32::try_from(i).map_err(|_| misfit(format!("{i} does not fit")))?,
        )),
        (Value::Float(f), "real") => ColumnData::F32(Some(f as f32)),
        (Value::Decimal(text), "decimal" | "numeric" | "money" | "smallmoney") => {
            if decimal_places(&text) > usize::from(scale) {
                return Err(misfit(format!(
                    "{text} has more than the column's {scale} decimal places (it would be rounded)"
                )));
            }
            to_column_data(Value::Decimal(text))?
        }
        (Value::Timestamp(micros), "datetime2") => {
            let dt2 = datetime2_of(micros)?;
            let time =
                at_scale(dt2.time(), scale).ok_or_else(|| finer(Value::Timestamp(micros)))?;
            ColumnData::DateTime2(Some(DateTime2::new(dt2.date(), time)))
        }
        (Value::TimestampTz(micros), "datetimeoffset") => {
            let dt2 = datetime2_of(micros)?;
            let time =
                at_scale(dt2.time(), scale).ok_or_else(|| finer(Value::TimestampTz(micros)))?;
            ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
                DateTime2::new(dt2.date(), time),
                0,
            )))
        }
        (v, _) => to_column_data(v)?,
    })
}

/// A time of day (microsecond scale) at `scale`; `None` when digits would be lost.
fn at_scale(time: Time, scale: u8) -> Option<Time> {
    let micros = time.increments();
    let increments = if scale >= 6 {
        micros * 10u64.pow(u32::from(scale - 6))
    } else {
        let unit = 10u64.pow(u32::from(6 - scale));
        micros.is_multiple_of(unit).then_some(micros / unit)?
    };
    Some(Time::new(increments, scale))
}

/// A NULL cell of a column the server declares as `sql_type`.
fn null_of(sql_type: &str) -> ColumnData<'static> {
    match sql_type {
        "bit" => ColumnData::Bit(None),
        "tinyint" => ColumnData::U8(None),
        "smallint" => ColumnData::I16(None),
        "int" => ColumnData::I32(None),
        "bigint" => ColumnData::I64(None),
        "real" => ColumnData::F32(None),
        "float" => ColumnData::F64(None),
        "decimal" | "numeric" | "money" | "smallmoney" => ColumnData::Numeric(None),
        "binary" | "varbinary" | "image" => ColumnData::Binary(None),
        "date" => ColumnData::Date(None),
        "datetime2" | "datetime" | "smalldatetime" => ColumnData::DateTime2(None),
        "datetimeoffset" => ColumnData::DateTimeOffset(None),
        "uniqueidentifier" => ColumnData::Guid(None),
        _ => ColumnData::String(None),
    }
}

/// TDS column data as a value of portable type `t`; `column` names it in errors.
pub fn from_column_data(data: ColumnData<'_>, t: &DataType, column: &str) -> Result<Value> {
    let mismatch = |what: &str| {
        Error::source(format!(
            "column `{column}`: SQL Server sent {what} where {} was expected",
            crate::model::type_name(t)
        ))
    };
    Ok(match data {
        ColumnData::U8(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I16(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I32(v) => v.map_or(Value::Null, |v| Value::Int(i64::from(v))),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::Int),
        ColumnData::F32(v) => v.map_or(Value::Null, |v| Value::Float(f64::from(v))),
        // tiberius reads money and smallmoney as floats: exact to their 4 decimal places
        // below 2^53 / 10^4 (about 9e11).
        ColumnData::F64(v) => match (v, t) {
            (None, _) => Value::Null,
            (Some(f), DataType::Decimal(spec)) => {
                let scale = spec.map_or(4, |s| s.scale.max(0) as usize);
                Value::Decimal(format!("{f:.scale$}"))
            }
            (Some(f), _) => Value::Float(f),
        },
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Boolean),
        ColumnData::String(v) => match v {
            None => Value::Null,
            Some(s) => match t {
                DataType::Json => Value::Json(s.into_owned()),
                DataType::Uuid => Value::Uuid(s.to_ascii_lowercase()),
                DataType::Decimal(_) => Value::Decimal(s.into_owned()),
                _ => Value::Text(s.into_owned()),
            },
        },
        ColumnData::Guid(v) => v.map_or(Value::Null, |u| {
            Value::Uuid(u.hyphenated().to_string().to_ascii_lowercase())
        }),
        ColumnData::Binary(v) => v.map_or(Value::Null, |b| Value::Bytes(b.into_owned())),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |n| {
            Value::Decimal(decimal_text(n.value(), n.scale() as i8))
        }),
        ColumnData::Xml(v) => v.map_or(Value::Null, |x| Value::Text(x.to_string())),
        ColumnData::Date(v) => v.map_or(Value::Null, |d| {
            Value::Date((i64::from(d.days()) - UNIX_EPOCH_DAYS) as i32)
        }),
        ColumnData::DateTime2(v) => v.map_or(Value::Null, |d| match t {
            DataType::TimestampTz => Value::TimestampTz(micros_of(d)),
            _ => Value::Timestamp(micros_of(d)),
        }),
        // The date and time of a datetimeoffset are UTC; the offset only says how to show it.
        ColumnData::DateTimeOffset(v) => v.map_or(Value::Null, |d| {
            Value::TimestampTz(micros_of(d.datetime2()))
        }),
        ColumnData::DateTime(v) => v.map_or(Value::Null, |d| {
            // 1/300 s ticks since 1900-01-01.
            let days = i64::from(d.days()) - LEGACY_EPOCH_DAYS;
            let micros = i64::from(d.seconds_fragments()) * 10_000 / 3;
            Value::Timestamp(days * MICROS_PER_DAY + micros)
        }),
        ColumnData::SmallDateTime(v) => v.map_or(Value::Null, |d| {
            let days = i64::from(d.days()) - LEGACY_EPOCH_DAYS;
            Value::Timestamp(days * MICROS_PER_DAY + i64::from(d.seconds_fragments()) * 60_000_000)
        }),
        ColumnData::Time(_) => return Err(mismatch("a time of day")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_column_data() {
        let cases = [
            (Value::Int(-7), DataType::Int64),
            (Value::Boolean(true), DataType::Boolean),
            (Value::Decimal("-12.50".into()), DataType::Decimal(None)),
            (Value::Decimal("0".into()), DataType::Decimal(None)),
            (Value::Text("é ✓".into()), DataType::Text),
            (Value::Bytes(vec![0, 255]), DataType::Bytes),
            (Value::Date(-719_162), DataType::Date),
            (Value::Date(19_000), DataType::Date),
            (Value::Timestamp(-1), DataType::Timestamp),
            (Value::Timestamp(1_700_000_000_123_456), DataType::Timestamp),
            (
                Value::TimestampTz(1_700_000_000_123_456),
                DataType::TimestampTz,
            ),
            (
                Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
                DataType::Uuid,
            ),
            (Value::Null, DataType::Text),
        ];
        for (v, t) in cases {
            let back = from_column_data(to_column_data(v.clone()).unwrap(), &t, "c").unwrap();
            let expected = match &v {
                Value::Decimal(d) if d == "-12.50" => Value::Decimal("-12.5".into()),
                other => other.clone(),
            };
            assert_eq!(back, expected);
        }
        assert!(to_column_data(Value::Date(-719_163)).is_err());
        for (v, sql_type, scale, t) in [
            (Value::Int(7), "smallint", 0, DataType::Int16),
            (Value::Int(200), "tinyint", 0, DataType::Int16),
            (Value::Int(-7), "int", 0, DataType::Int32),
            (
                Value::Decimal("1.25".into()),
                "decimal",
                2,
                DataType::Decimal(None),
            ),
            (
                Value::Timestamp(1_700_000_000_123_456),
                "datetime2",
                7,
                DataType::Timestamp,
            ),
            (
                Value::Timestamp(1_700_000_000_123_000),
                "datetime2",
                3,
                DataType::Timestamp,
            ),
            (
                Value::TimestampTz(1_700_000_000_123_456),
                "datetimeoffset",
                7,
                DataType::TimestampTz,
            ),
            (Value::Null, "varbinary", 0, DataType::Bytes),
        ] {
            let data = cell(v.clone(), sql_type, scale, "c").unwrap();
            assert_eq!(from_column_data(data, &t, "c").unwrap(), v, "{sql_type}");
        }
        assert!(matches!(
            cell(Value::Int(7), "smallint", 0, "c"),
            Ok(ColumnData::I16(Some(7)))
        ));
        assert!(matches!(
            cell(Value::Null, "int", 0, "c"),
            Ok(ColumnData::I32(None))
        ));
        let err = cell(Value::Int(70_000), "smallint", 0, "qty").unwrap_err();
        assert!(err.message.contains("`qty` (smallint)"), "{err}");
        assert!(cell(Value::Int(-1), "tinyint", 0, "c").is_err());
        assert!(cell(Value::Decimal("1.255".into()), "decimal", 2, "c").is_err());
        assert!(cell(Value::Decimal("1.2500".into()), "decimal", 2, "c").is_ok());
        assert!(cell(Value::Timestamp(1_700_000_000_123_456), "datetime2", 3, "c").is_err());
        let money = ColumnData::F64(Some(1234.5));
        let spec = DataType::Decimal(Some(DecimalSpec {
            precision: 19,
            scale: 4,
        }));
        assert_eq!(
            from_column_data(money, &spec, "c").unwrap(),
            Value::Decimal("1234.5000".into())
        );
        assert!(to_column_data(Value::Decimal("1e5".into())).is_err());
    }

    #[test]
    fn seven_digit_fractions_are_cut_to_microseconds() {
        let dt = DateTime2::new(Date::new(UNIX_EPOCH_DAYS as u32), Time::new(12_345_678, 7));
        assert_eq!(micros_of(dt), 1_234_567);
        let legacy = tiberius::time::DateTime::new(LEGACY_EPOCH_DAYS as i32, 300);
        assert_eq!(
            from_column_data(
                ColumnData::DateTime(Some(legacy)),
                &DataType::Timestamp,
                "c"
            )
            .unwrap(),
            Value::Timestamp(1_000_000)
        );
    }

    #[test]
    fn native_types_map_back_to_the_same_portable_type() {
        for t in [
            DataType::Boolean,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::Float32,
            DataType::Float64,
            DataType::Text,
            DataType::Bytes,
            DataType::Date,
            DataType::Timestamp,
            DataType::TimestampTz,
            DataType::Uuid,
        ] {
            let native = native_type(&t);
            let name = native.split('(').next().unwrap();
            assert_eq!(portable_type(name, 0, 0, "c").unwrap(), t, "{native}");
        }
        assert_eq!(
            portable_type("decimal", 12, 2, "c").unwrap(),
            DataType::Decimal(Some(DecimalSpec {
                precision: 12,
                scale: 2
            }))
        );
        let err = portable_type("geography", 0, 0, "shape").unwrap_err();
        assert!(err.message.contains("`shape`"), "{err}");
        assert_eq!(parse_row_version(&row_version_position(42)).unwrap(), 42);
        assert!(parse_row_version("pgxid:42").is_err());
    }
}
