//! SQLite type mapping: declared column types <-> portable types, and value conversion.
//!
//! SQLite stores every value in one of five storage classes (NULL, INTEGER, REAL, TEXT,
//! BLOB) and gives each column a *type affinity* derived from the words in its declared
//! type. The DDL names dpone writes are chosen so that the affinity keeps every value
//! exactly as it was stored:
//!
//! | portable type    | DDL (`native_type`)  | affinity | stored as                          |
//! |------------------|----------------------|----------|------------------------------------|
//! | `boolean`        | `BOOLEAN`            | NUMERIC  | INTEGER `0` / `1`                  |
//! | `int16`          | `SMALLINT`           | INTEGER  | INTEGER                            |
//! | `int32`          | `INT4`               | INTEGER  | INTEGER                            |
//! | `int64`          | `BIGINT`             | INTEGER  | INTEGER                            |
//! | `float32`        | `FLOAT4`             | REAL     | REAL (the `f32` widened exactly)   |
//! | `float64`        | `DOUBLE`             | REAL     | REAL                               |
//! | `decimal(p,s)`   | `DECIMAL_TEXT(p,s)`  | TEXT     | TEXT, exact digits (`-12.50`)      |
//! | `decimal` (none) | `DECIMAL_TEXT`       | TEXT     | TEXT, exact digits                 |
//! | `text`           | `TEXT`               | TEXT     | TEXT                               |
//! | `bytes`          | `BLOB`               | BLOB     | BLOB                               |
//! | `date`           | `DATE`               | NUMERIC  | TEXT `YYYY-MM-DD`                  |
//! | `timestamp`      | `TIMESTAMP`          | NUMERIC  | TEXT `YYYY-MM-DD HH:MM:SS.ffffff`  |
//! | `timestamp-tz`   | `TIMESTAMPTZ`        | NUMERIC  | TEXT `YYYY-MM-DD HH:MM:SS.ffffffZ` |
//! | `uuid`           | `UUID_TEXT`          | TEXT     | TEXT, canonical lowercase          |
//! | `json`           | `JSON_TEXT`          | TEXT     | TEXT                               |
//!
//! `DECIMAL_TEXT` contains `TEXT`, so SQLite keeps decimal digits verbatim (a plain
//! `DECIMAL` column has NUMERIC affinity and would turn `12.50` into the REAL `12.5`).
//! Date and timestamp text is never a well-formed number, so NUMERIC affinity keeps it.
//!
//! Reading a declared type back ([`portable_type`], case-insensitive, `(...)` arguments
//! allowed) maps the names above to themselves and also accepts what people write:
//!
//! | declared type                                               | portable type          |
//! |-------------------------------------------------------------|------------------------|
//! | `BOOLEAN`, `BOOL`                                           | `boolean`              |
//! | `SMALLINT`, `INT2`, `TINYINT`                               | `int16`                |
//! | `INT4`, `MEDIUMINT`                                         | `int32`                |
//! | `INTEGER`, `INT`, `BIGINT`, `INT8`, `UNSIGNED BIG INT`      | `int64`                |
//! | `FLOAT4`                                                    | `float32`              |
//! | `DOUBLE`, `DOUBLE PRECISION`, `REAL`, `FLOAT`, `FLOAT8`     | `float64`              |
//! | `NUMERIC`, `DECIMAL`, `DECIMAL_TEXT` (with `(p[,s])`)       | `decimal(p,s)`         |
//! | the same without arguments, or with `p > 38`                | `decimal` (none)       |
//! | `TEXT`, `VARCHAR(n)`, `CHAR(n)`, `CHARACTER`, `NCHAR`, ...  | `text`                 |
//! | `BLOB`, `BYTEA`                                             | `bytes`                |
//! | `DATE`                                                      | `date`                 |
//! | `TIMESTAMP`, `DATETIME`                                     | `timestamp`            |
//! | `TIMESTAMPTZ`, `TIMESTAMP WITH TIME ZONE`                   | `timestamp-tz`         |
//! | `UUID`, `UUID_TEXT`                                         | `uuid`                 |
//! | `JSON`, `JSON_TEXT`                                         | `json`                 |
//! | empty (no declared type)                                    | `text`                 |
//!
//! Other names follow SQLite's affinity rules: containing `INT` -> `int64`; `CHAR`, `CLOB`
//! or `TEXT` -> `text`; `BLOB` -> `bytes`; `REAL`, `FLOA` or `DOUB` -> `float64`. Anything
//! else (NUMERIC affinity, e.g. `MONEY`) is unsupported.
//!
//! Comparisons: dates and timestamps are fixed-width text of one format, so `col > $1`
//! with a bound value from [`to_sqlite`] compares chronologically (lexicographic order is
//! chronological for years 0000 to 9999). Decimals stored as `DECIMAL_TEXT` compare as
//! *text*, which is not numeric order: a filter on such a column needs a `CAST`.
//!
//! Values are read leniently ([`decode`]): whatever storage class a value has, it is
//! accepted when it converts to the requested type without loss (a decimal from INTEGER,
//! REAL or TEXT, a boolean from an integer, a date or timestamp from text or from Unix
//! seconds, ...). SQLite itself turns a bound NaN into NULL.

use std::borrow::Cow;

use sqlx::sqlite::{SqliteArguments, SqliteValueRef};
use sqlx::{Arguments, Decode, Sqlite, TypeInfo, ValueRef};

use crate::error::{Error, Kind, Result};
use crate::model::{self, DataType, DecimalSpec, Value, time};

/// Largest precision an Arrow `Decimal128` holds.
const MAX_DECIMAL_PRECISION: u8 = 38;

const SECONDS_PER_DAY: i64 = 86_400;

/// The DDL type dpone declares for a portable type (see the module table).
pub fn native_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT4".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT4".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal(Some(d)) => format!("DECIMAL_TEXT({},{})", d.precision, d.scale),
        DataType::Decimal(None) => "DECIMAL_TEXT".into(),
        DataType::Text => "TEXT".into(),
        DataType::Bytes => "BLOB".into(),
        DataType::Date => "DATE".into(),
        DataType::Timestamp => "TIMESTAMP".into(),
        DataType::TimestampTz => "TIMESTAMPTZ".into(),
        DataType::Uuid => "UUID_TEXT".into(),
        DataType::Json => "JSON_TEXT".into(),
    }
}

/// The portable type of a column declared as `declared` (see the module table). `column`
/// names the column in the error for a type dpone cannot map.
pub fn portable_type(declared: &str, column: &str) -> Result<DataType> {
    let upper = declared.trim().to_ascii_uppercase();
    let unsupported = |why: &str| {
        Error::new(
            Kind::Unsupported,
            format!("SQLite column `{column}` has declared type `{declared}`: {why}"),
        )
    };
    let (base, args) = match upper.split_once('(') {
        Some((base, rest)) => {
            let args = rest
                .trim_end()
                .strip_suffix(')')
                .ok_or_else(|| unsupported("unbalanced parentheses"))?;
            (base, Some(args))
        }
        None => (upper.as_str(), None),
    };
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(match base.as_str() {
        "" => DataType::Text,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "SMALLINT" | "INT2" | "TINYINT" => DataType::Int16,
        "INT4" | "MEDIUMINT" => DataType::Int32,
        "INTEGER" | "INT" | "BIGINT" | "INT8" | "UNSIGNED BIG INT" => DataType::Int64,
        "FLOAT4" => DataType::Float32,
        "DOUBLE" | "DOUBLE PRECISION" | "REAL" | "FLOAT" | "FLOAT8" => DataType::Float64,
        "NUMERIC" | "DECIMAL" | "DECIMAL_TEXT" => {
            DataType::Decimal(decimal_args(args).map_err(|why| unsupported(&why))?)
        }
        "TEXT" | "VARCHAR" | "CHAR" | "CHARACTER" | "CHARACTER VARYING" | "VARYING CHARACTER"
        | "NCHAR" | "NATIVE CHARACTER" | "NVARCHAR" | "CLOB" => DataType::Text,
        "BLOB" | "BYTEA" => DataType::Bytes,
        "DATE" => DataType::Date,
        "TIMESTAMP" | "DATETIME" | "TIMESTAMP WITHOUT TIME ZONE" => DataType::Timestamp,
        "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => DataType::TimestampTz,
        "UUID" | "UUID_TEXT" => DataType::Uuid,
        "JSON" | "JSON_TEXT" => DataType::Json,
        // SQLite's own affinity rules, in its order of precedence.
        b if b.contains("INT") => DataType::Int64,
        b if b.contains("CHAR") || b.contains("CLOB") || b.contains("TEXT") => DataType::Text,
        b if b.contains("BLOB") => DataType::Bytes,
        b if b.contains("REAL") || b.contains("FLOA") || b.contains("DOUB") => DataType::Float64,
        _ => return Err(unsupported("no portable type for it")),
    })
}

/// `p[,s]` of a decimal type; `None` without arguments or when `p` exceeds Decimal128.
fn decimal_args(args: Option<&str>) -> std::result::Result<Option<DecimalSpec>, String> {
    let Some(args) = args else { return Ok(None) };
    let bad = || format!("`({args})` is not `(precision[, scale])`");
    let mut parts = args.split(',').map(str::trim);
    let precision: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let scale: i32 = match parts.next() {
        Some(s) => s.parse().map_err(|_| bad())?,
        None => 0,
    };
    if parts.next().is_some() || precision == 0 {
        return Err(bad());
    }
    if precision > u32::from(MAX_DECIMAL_PRECISION) {
        return Ok(None);
    }
    if scale < 0 || scale > precision as i32 {
        return Err(format!("scale {scale} is not within 0..={precision}"));
    }
    Ok(Some(DecimalSpec {
        precision: precision as u8,
        scale: scale as i8,
    }))
}

/// Stored text of a date: `YYYY-MM-DD`.
pub fn stored_date(days: i32) -> String {
    time::format_date(days)
}

/// Stored text of a timestamp without zone: `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn stored_timestamp(micros: i64) -> String {
    time::format_timestamp(micros)
}

/// Stored text of a UTC instant: `YYYY-MM-DD HH:MM:SS.ffffffZ`.
pub fn stored_timestamp_tz(micros: i64) -> String {
    let mut text = time::format_timestamp(micros);
    text.push('Z');
    text
}

/// A value in the form it is bound to a statement: one of SQLite's storage classes.
#[derive(Debug, Clone, PartialEq)]
pub enum SqliteParam<'a> {
    Null,
    Int(i64),
    Float(f64),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
}

impl<'a> SqliteParam<'a> {
    /// Appends this value to `args` (the next positional parameter).
    pub fn bind(self, args: &mut SqliteArguments<'a>) -> std::result::Result<(), String> {
        let added = match self {
            SqliteParam::Null => args.add(None::<i64>),
            SqliteParam::Int(i) => args.add(i),
            SqliteParam::Float(f) => args.add(f),
            SqliteParam::Text(Cow::Borrowed(s)) => args.add(s),
            SqliteParam::Text(Cow::Owned(s)) => args.add(s),
            SqliteParam::Blob(Cow::Borrowed(b)) => args.add(b),
            SqliteParam::Blob(Cow::Owned(b)) => args.add(b),
        };
        added.map_err(|e| format!("cannot bind parameter: {e}"))
    }
}

/// The stored representation of a value (see the module table).
pub fn to_sqlite(v: &Value) -> SqliteParam<'_> {
    match v {
        Value::Null => SqliteParam::Null,
        Value::Boolean(b) => SqliteParam::Int(i64::from(*b)),
        Value::Int(i) => SqliteParam::Int(*i),
        Value::Float(f) => SqliteParam::Float(*f),
        Value::Decimal(s) | Value::Text(s) | Value::Uuid(s) | Value::Json(s) => {
            SqliteParam::Text(Cow::Borrowed(s))
        }
        Value::Bytes(b) => SqliteParam::Blob(Cow::Borrowed(b)),
        Value::Date(d) => SqliteParam::Text(Cow::Owned(stored_date(*d))),
        Value::Timestamp(t) => SqliteParam::Text(Cow::Owned(stored_timestamp(*t))),
        Value::TimestampTz(t) => SqliteParam::Text(Cow::Owned(stored_timestamp_tz(*t))),
    }
}

/// Binds every value of `params` in order.
pub fn bind_all<'a>(params: &'a [Value]) -> std::result::Result<SqliteArguments<'a>, String> {
    let mut args = SqliteArguments::default();
    for v in params {
        to_sqlite(v).bind(&mut args)?;
    }
    Ok(args)
}

/// A value as a row holds it: one of SQLite's five storage classes, borrowed from the row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stored<'r> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'r str),
    Blob(&'r [u8]),
}

/// Conversion failures name the storage class and a short preview of the value.
type Conv<T> = std::result::Result<T, String>;

impl<'r> Stored<'r> {
    /// Reads a column value of a row (`row.try_get_raw(i)`) by its storage class.
    pub fn read(value: SqliteValueRef<'r>) -> Conv<Self> {
        if value.is_null() {
            return Ok(Stored::Null);
        }
        let class = value.type_info().name().to_owned();
        let failed = |e: sqlx::error::BoxDynError| format!("cannot read SQLite {class} value: {e}");
        Ok(match class.as_str() {
            "INTEGER" => Stored::Integer(<i64 as Decode<Sqlite>>::decode(value).map_err(failed)?),
            "REAL" => Stored::Real(<f64 as Decode<Sqlite>>::decode(value).map_err(failed)?),
            "TEXT" => Stored::Text(<&str as Decode<Sqlite>>::decode(value).map_err(failed)?),
            "BLOB" => Stored::Blob(<&[u8] as Decode<Sqlite>>::decode(value).map_err(failed)?),
            other => return Err(format!("unexpected SQLite storage class {other}")),
        })
    }

    /// The storage class name: `INTEGER`, `REAL`, `TEXT`, `BLOB` or `NULL`.
    pub fn class(&self) -> &'static str {
        match self {
            Stored::Null => "NULL",
            Stored::Integer(_) => "INTEGER",
            Stored::Real(_) => "REAL",
            Stored::Text(_) => "TEXT",
            Stored::Blob(_) => "BLOB",
        }
    }

    /// The error for a value that is not a `what`.
    fn mismatch(&self, what: &str) -> String {
        let preview = match self {
            Stored::Null => "NULL".to_owned(),
            Stored::Integer(i) => i.to_string(),
            Stored::Real(f) => f.to_string(),
            Stored::Text(s) => {
                let mut p: String = s.chars().take(40).collect();
                if p.len() < s.len() {
                    p.push_str("...");
                }
                format!("{p:?}")
            }
            Stored::Blob(b) => format!("<{} bytes>", b.len()),
        };
        format!(
            "SQLite {} value {preview} is not a valid {what}",
            self.class()
        )
    }

    pub fn as_bool(&self) -> Conv<bool> {
        match *self {
            Stored::Integer(i) => Ok(i != 0),
            Stored::Real(f) if f == 0.0 || f == 1.0 => Ok(f != 0.0),
            Stored::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "t" => Ok(true),
                "0" | "false" | "f" => Ok(false),
                _ => Err(self.mismatch("boolean")),
            },
            _ => Err(self.mismatch("boolean")),
        }
    }

    /// An integer within `T`'s range.
    pub fn as_int<T: TryFrom<i64>>(&self, what: &str) -> Conv<T> {
        let wide = match *self {
            Stored::Integer(i) => Some(i),
            // -2^63 and 2^63 are exact in f64; the cast saturates, so check the range.
            Stored::Real(f)
                if f.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) =>
            {
                Some(f as i64)
            }
            Stored::Text(s) => s.trim().parse().ok(),
            _ => None,
        };
        wide.and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| self.mismatch(what))
    }

    pub fn as_f64(&self) -> Conv<f64> {
        match *self {
            Stored::Real(f) => Ok(f),
            Stored::Integer(i) => Ok(i as f64),
            Stored::Text(s) => s.trim().parse().map_err(|_| self.mismatch("float")),
            _ => Err(self.mismatch("float")),
        }
    }

    /// Plain decimal text (`-12.50`): TEXT kept verbatim once validated, INTEGER and REAL
    /// rendered exactly (a REAL by its shortest round-tripping digits).
    pub fn decimal_text(&self) -> Conv<Cow<'r, str>> {
        match *self {
            Stored::Text(s) if is_decimal_text(s.trim()) => Ok(Cow::Borrowed(s.trim())),
            Stored::Integer(i) => Ok(Cow::Owned(i.to_string())),
            // Rust's `Display` for f64 is the shortest text that reads back to the same
            // value, and never uses exponent notation.
            Stored::Real(f) if f.is_finite() => Ok(Cow::Owned(f.to_string())),
            _ => Err(self.mismatch("decimal")),
        }
    }

    /// The decimal scaled by `spec.scale`, within `spec.precision` digits.
    pub fn decimal_scaled(&self, spec: &DecimalSpec) -> Conv<i128> {
        let what = || format!("decimal({},{})", spec.precision, spec.scale);
        let text = self.decimal_text().map_err(|_| self.mismatch(&what()))?;
        let v = model::parse_decimal(&text, spec.scale).ok_or_else(|| self.mismatch(&what()))?;
        let limit = 10u128.checked_pow(u32::from(spec.precision));
        if limit.is_some_and(|l| v.unsigned_abs() >= l) {
            return Err(self.mismatch(&what()));
        }
        Ok(v)
    }

    /// Text: TEXT as is, a UTF-8 BLOB, or the digits of a number.
    pub fn as_text(&self) -> Conv<Cow<'r, str>> {
        match *self {
            Stored::Text(s) => Ok(Cow::Borrowed(s)),
            Stored::Blob(b) => std::str::from_utf8(b)
                .map(Cow::Borrowed)
                .map_err(|_| self.mismatch("UTF-8 text")),
            Stored::Integer(i) => Ok(Cow::Owned(i.to_string())),
            Stored::Real(f) => Ok(Cow::Owned(f.to_string())),
            Stored::Null => Err(self.mismatch("text")),
        }
    }

    pub fn as_bytes(&self) -> Conv<&'r [u8]> {
        match *self {
            Stored::Blob(b) => Ok(b),
            Stored::Text(s) => Ok(s.as_bytes()),
            _ => Err(self.mismatch("bytes")),
        }
    }

    /// Days since the epoch, from `YYYY-MM-DD` text (or a timestamp text at midnight) or
    /// from Unix seconds.
    pub fn as_date(&self) -> Conv<i32> {
        let days = match *self {
            Stored::Text(s) => time::parse_date(s).map(i64::from).or_else(|| {
                let micros = time::parse_timestamp(s)?;
                let per_day = SECONDS_PER_DAY * 1_000_000;
                (micros.rem_euclid(per_day) == 0).then(|| micros.div_euclid(per_day))
            }),
            Stored::Integer(secs) => Some(secs.div_euclid(SECONDS_PER_DAY)),
            _ => None,
        };
        days.and_then(|d| i32::try_from(d).ok())
            .ok_or_else(|| self.mismatch("date"))
    }

    /// Microseconds since the epoch, from timestamp text (an offset, if any, is applied)
    /// or from Unix seconds.
    pub fn as_timestamp(&self) -> Conv<i64> {
        match *self {
            Stored::Text(s) => time::parse_timestamp(s),
            Stored::Integer(secs) => secs.checked_mul(1_000_000),
            _ => None,
        }
        .ok_or_else(|| self.mismatch("timestamp"))
    }

    /// The 16 bytes of a uuid, from its text or a 16-byte BLOB.
    pub fn as_uuid(&self) -> Conv<[u8; 16]> {
        match *self {
            Stored::Text(s) => model::parse_uuid(s.trim()),
            Stored::Blob(b) => b.try_into().ok(),
            _ => None,
        }
        .ok_or_else(|| self.mismatch("uuid"))
    }
}

/// `[+-]digits[.digits]` with at least one digit.
fn is_decimal_text(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// Decodes a stored value as portable type `t`. Decimals with a spec come back in the
/// canonical text of their scale (as [`model::value_at`] reads them from Arrow), uuids in
/// canonical lowercase.
pub fn decode(stored: Stored<'_>, t: &DataType) -> Conv<Value> {
    if stored == Stored::Null {
        return Ok(Value::Null);
    }
    Ok(match t {
        DataType::Boolean => Value::Boolean(stored.as_bool()?),
        DataType::Int16 => Value::Int(stored.as_int::<i16>("int16")?.into()),
        DataType::Int32 => Value::Int(stored.as_int::<i32>("int32")?.into()),
        DataType::Int64 => Value::Int(stored.as_int::<i64>("int64")?),
        DataType::Float32 => Value::Float(f64::from(stored.as_f64()? as f32)),
        DataType::Float64 => Value::Float(stored.as_f64()?),
        DataType::Decimal(Some(spec)) => Value::Decimal(model::decimal_text(
            stored.decimal_scaled(spec)?,
            spec.scale,
        )),
        DataType::Decimal(None) => Value::Decimal(stored.decimal_text()?.into_owned()),
        DataType::Text => Value::Text(stored.as_text()?.into_owned()),
        DataType::Json => Value::Json(stored.as_text()?.into_owned()),
        DataType::Bytes => Value::Bytes(stored.as_bytes()?.to_vec()),
        DataType::Date => Value::Date(stored.as_date()?),
        DataType::Timestamp => Value::Timestamp(stored.as_timestamp()?),
        DataType::TimestampTz => Value::TimestampTz(stored.as_timestamp()?),
        DataType::Uuid => Value::Uuid(model::uuid_text(&stored.as_uuid()?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_type() -> Vec<DataType> {
        vec![
            DataType::Boolean,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::Float32,
            DataType::Float64,
            DataType::Decimal(Some(DecimalSpec {
                precision: 18,
                scale: 4,
            })),
            DataType::Decimal(Some(DecimalSpec {
                precision: 38,
                scale: 0,
            })),
            DataType::Decimal(None),
            DataType::Text,
            DataType::Bytes,
            DataType::Date,
            DataType::Timestamp,
            DataType::TimestampTz,
            DataType::Uuid,
            DataType::Json,
        ]
    }

    #[test]
    fn native_types_map_back_to_themselves() {
        for t in every_type() {
            assert_eq!(
                portable_type(&native_type(&t), "c").unwrap(),
                t,
                "{}",
                native_type(&t)
            );
            let lower = native_type(&t).to_ascii_lowercase();
            assert_eq!(portable_type(&lower, "c").unwrap(), t);
        }
    }

    #[test]
    fn native_types_have_the_affinity_that_keeps_values() {
        // SQLite's affinity rules:
        // https://sqlite.org/datatype3.html#determination_of_column_affinity
        fn affinity(declared: &str) -> &'static str {
            let d = declared.to_ascii_uppercase();
            if d.contains("INT") {
                "INTEGER"
            } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
                "TEXT"
            } else if d.contains("BLOB") || d.is_empty() {
                "BLOB"
            } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
                "REAL"
            } else {
                "NUMERIC"
            }
        }
        for t in every_type() {
            let expected = match t {
                DataType::Int16 | DataType::Int32 | DataType::Int64 => "INTEGER",
                DataType::Float32 | DataType::Float64 => "REAL",
                DataType::Decimal(_) | DataType::Text | DataType::Uuid | DataType::Json => "TEXT",
                DataType::Bytes => "BLOB",
                DataType::Boolean
                | DataType::Date
                | DataType::Timestamp
                | DataType::TimestampTz => "NUMERIC",
            };
            assert_eq!(affinity(&native_type(&t)), expected, "{t:?}");
        }
    }

    #[test]
    fn common_declared_types() {
        let dec = |p, s| {
            DataType::Decimal(Some(DecimalSpec {
                precision: p,
                scale: s,
            }))
        };
        for (declared, t) in [
            ("", DataType::Text),
            ("  ", DataType::Text),
            ("int", DataType::Int64),
            ("INTEGER", DataType::Int64),
            ("bigint", DataType::Int64),
            ("INT8", DataType::Int64),
            ("unsigned big int", DataType::Int64),
            ("smallint", DataType::Int16),
            ("mediumint", DataType::Int32),
            ("real", DataType::Float64),
            ("float", DataType::Float64),
            ("double precision", DataType::Float64),
            ("numeric", DataType::Decimal(None)),
            ("DECIMAL(10, 2)", dec(10, 2)),
            ("numeric(12)", dec(12, 0)),
            ("decimal(60,10)", DataType::Decimal(None)),
            ("varchar(255)", DataType::Text),
            ("CHARACTER VARYING (10)", DataType::Text),
            ("nvarchar(5)", DataType::Text),
            ("char", DataType::Text),
            ("clob", DataType::Text),
            ("bool", DataType::Boolean),
            ("datetime", DataType::Timestamp),
            ("timestamp(6)", DataType::Timestamp),
            ("timestamp with time zone", DataType::TimestampTz),
            ("uuid", DataType::Uuid),
            ("json", DataType::Json),
            // SQLite's affinity fallbacks.
            ("BIGINTEGER", DataType::Int64),
            ("MEDIUMTEXT", DataType::Text),
            ("LONGBLOB", DataType::Bytes),
            ("DOUBLE_PRECISION_FLOAT", DataType::Float64),
        ] {
            assert_eq!(portable_type(declared, "c").unwrap(), t, "{declared}");
        }
        for bad in [
            "MONEY",
            "decimal(x)",
            "numeric(5,7)",
            "decimal(0)",
            "decimal(10,2",
            "GEOMETRY",
        ] {
            let e = portable_type(bad, "price").unwrap_err();
            assert_eq!(e.kind, Kind::Unsupported, "{bad}");
            assert!(e.message.contains("`price`"), "{}", e.message);
        }
    }

    #[test]
    fn values_take_their_stored_form() {
        let text = |s: &str| SqliteParam::Text(Cow::Owned(s.to_owned()));
        assert_eq!(to_sqlite(&Value::Null), SqliteParam::Null);
        assert_eq!(to_sqlite(&Value::Boolean(true)), SqliteParam::Int(1));
        assert_eq!(to_sqlite(&Value::Boolean(false)), SqliteParam::Int(0));
        assert_eq!(to_sqlite(&Value::Int(i64::MIN)), SqliteParam::Int(i64::MIN));
        assert_eq!(to_sqlite(&Value::Float(0.5)), SqliteParam::Float(0.5));
        assert_eq!(to_sqlite(&Value::Decimal("-12.50".into())), text("-12.50"));
        assert_eq!(
            to_sqlite(&Value::Bytes(vec![0, 255])),
            SqliteParam::Blob(Cow::Owned(vec![0, 255]))
        );
        assert_eq!(to_sqlite(&Value::Date(-1)), text("1969-12-31"));
        assert_eq!(
            to_sqlite(&Value::Timestamp(-1)),
            text("1969-12-31 23:59:59.999999")
        );
        assert_eq!(
            to_sqlite(&Value::TimestampTz(1_700_000_000_123_456)),
            text("2023-11-14 22:13:20.123456Z")
        );
        // Fixed-width text: lexicographic order is chronological.
        let mut stamps = [
            -86_400_000_001i64,
            -1,
            0,
            1,
            999_999,
            1_000_000,
            1_700_000_000_123_456,
        ];
        stamps.sort();
        let texts: Vec<String> = stamps.iter().map(|t| stored_timestamp(*t)).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
    }

    #[test]
    fn decoding_is_lenient_but_exact() {
        let dec = |p, s| {
            DataType::Decimal(Some(DecimalSpec {
                precision: p,
                scale: s,
            }))
        };
        let ok = |s: Stored<'_>, t: DataType| decode(s, &t).unwrap();
        assert_eq!(ok(Stored::Null, DataType::Int64), Value::Null);
        assert_eq!(
            ok(Stored::Integer(1), DataType::Boolean),
            Value::Boolean(true)
        );
        assert_eq!(
            ok(Stored::Integer(0), DataType::Boolean),
            Value::Boolean(false)
        );
        assert_eq!(
            ok(Stored::Integer(-32768), DataType::Int16),
            Value::Int(-32768)
        );
        assert_eq!(ok(Stored::Real(3.0), DataType::Int64), Value::Int(3));
        assert_eq!(ok(Stored::Text(" 42 "), DataType::Int32), Value::Int(42));
        assert_eq!(ok(Stored::Integer(2), DataType::Float64), Value::Float(2.0));
        assert_eq!(
            ok(Stored::Real(0.1), DataType::Float32),
            Value::Float(f64::from(0.1f32))
        );
        // Decimals keep exact digits from TEXT and read INTEGER / REAL exactly.
        assert_eq!(
            ok(Stored::Text("12.50"), DataType::Decimal(None)),
            Value::Decimal("12.50".into())
        );
        assert_eq!(
            ok(Stored::Integer(-7), DataType::Decimal(None)),
            Value::Decimal("-7".into())
        );
        assert_eq!(
            ok(Stored::Real(12.5), DataType::Decimal(None)),
            Value::Decimal("12.5".into())
        );
        assert_eq!(
            ok(Stored::Real(0.1), DataType::Decimal(None)),
            Value::Decimal("0.1".into())
        );
        assert_eq!(
            ok(Stored::Real(12.5), dec(10, 2)),
            Value::Decimal("12.50".into())
        );
        assert_eq!(
            ok(Stored::Integer(3), dec(10, 2)),
            Value::Decimal("3.00".into())
        );
        assert_eq!(
            ok(Stored::Text("1.5000"), dec(5, 1)),
            Value::Decimal("1.5".into())
        );
        // Dates and timestamps from text or Unix seconds.
        assert_eq!(
            ok(Stored::Text("1900-01-01"), DataType::Date),
            Value::Date(-25_567)
        );
        assert_eq!(
            ok(Stored::Text("1970-01-02 00:00:00"), DataType::Date),
            Value::Date(1)
        );
        assert_eq!(ok(Stored::Integer(86_399), DataType::Date), Value::Date(0));
        assert_eq!(ok(Stored::Integer(-1), DataType::Date), Value::Date(-1));
        assert_eq!(
            ok(
                Stored::Text("1969-12-31 23:59:59.999999"),
                DataType::Timestamp
            ),
            Value::Timestamp(-1)
        );
        assert_eq!(
            ok(
                Stored::Text("1970-01-01T01:00:00+01:00"),
                DataType::TimestampTz
            ),
            Value::TimestampTz(0)
        );
        assert_eq!(
            ok(Stored::Integer(2), DataType::Timestamp),
            Value::Timestamp(2_000_000)
        );
        let uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(
            ok(Stored::Text(&uuid.to_ascii_uppercase()), DataType::Uuid),
            Value::Uuid(uuid.into())
        );
        assert_eq!(
            ok(
                Stored::Blob(&model::parse_uuid(uuid).unwrap()),
                DataType::Uuid
            ),
            Value::Uuid(uuid.into())
        );
        assert_eq!(
            ok(Stored::Integer(5), DataType::Text),
            Value::Text("5".into())
        );
        assert_eq!(
            ok(Stored::Text(""), DataType::Text),
            Value::Text(String::new())
        );
        assert_eq!(
            ok(Stored::Blob(b""), DataType::Bytes),
            Value::Bytes(Vec::new())
        );

        for (stored, t) in [
            (Stored::Integer(40_000), DataType::Int16),
            (Stored::Real(1.5), DataType::Int64),
            (Stored::Real(1e19), DataType::Int64),
            (Stored::Text("abc"), DataType::Int64),
            (Stored::Text("maybe"), DataType::Boolean),
            (Stored::Text("1e5"), DataType::Decimal(None)),
            (Stored::Real(f64::NAN), DataType::Decimal(None)),
            (Stored::Text("1.234"), dec(10, 2)),
            (Stored::Text("1000.5"), dec(4, 1)),
            (Stored::Text("2024-02-30x"), DataType::Date),
            (Stored::Text("1970-01-01 00:00:01"), DataType::Date),
            (Stored::Real(2.5), DataType::Timestamp),
            (Stored::Blob(&[1, 2, 3]), DataType::Uuid),
            (Stored::Blob(&[0xff, 0xfe]), DataType::Text),
            (Stored::Integer(1), DataType::Bytes),
        ] {
            let e = decode(stored, &t).unwrap_err();
            assert!(e.contains(stored.class()), "{e}");
        }
    }
}
