//! PostgreSQL native types <-> portable types (docs/type-mapping.md), and how portable values
//! travel as statement parameters.
//!
//! | PostgreSQL                                   | portable                          |
//! |----------------------------------------------|-----------------------------------|
//! | `smallint` / `integer` / `bigint`            | `int16` / `int32` / `int64`       |
//! | `real` / `double precision`                  | `float32` / `float64`             |
//! | `numeric(p,s)`, `p <= 38`, `0 <= s <= p`     | `decimal(p,s)`                    |
//! | `numeric`, any other `numeric(p,s)`          | `decimal(none)` (exact text)      |
//! | `text`, `varchar`, `char(n)`, `name`, `citext` | `text`                          |
//! | `bytea`                                      | `bytes`                           |
//! | `boolean`                                    | `boolean`                         |
//! | `date`                                       | `date`                            |
//! | `timestamp` / `timestamptz`                  | `timestamp` / `timestamp-tz`      |
//! | `uuid`                                       | `uuid`                            |
//! | `json`, `jsonb`                              | `json` (created as `jsonb`)       |
//!
//! Domains map as their base type. Every other type is refused, naming the column.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::{Encode, Postgres, Type};

use super::copy::{self, CodecError};
use crate::error::{Error, Kind, Result};
use crate::model::{self, DataType, DecimalSpec, Value};

/// The native type families the connector reads and writes in binary form. Several
/// PostgreSQL types share one family because they share a binary wire format (every text
/// type is sent as its UTF-8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytea,
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    Uuid,
    Json,
    Jsonb,
}

impl PgType {
    /// The family of a `pg_type.typname` (SQL spellings are accepted too); `None` when the
    /// connector does not support the type.
    pub fn from_name(name: &str) -> Option<PgType> {
        Some(match name {
            "int2" | "smallint" => PgType::Int2,
            "int4" | "integer" | "int" => PgType::Int4,
            "int8" | "bigint" => PgType::Int8,
            "float4" | "real" => PgType::Float4,
            "float8" | "double precision" => PgType::Float8,
            "numeric" | "decimal" => PgType::Numeric,
            // `bpchar` is `char(n)`; `"char"` (one byte, internal) is not a text type.
            "text" | "varchar" | "character varying" | "bpchar" | "character" | "name"
            | "citext" => PgType::Text,
            "bytea" => PgType::Bytea,
            "bool" | "boolean" => PgType::Bool,
            "date" => PgType::Date,
            "timestamp" | "timestamp without time zone" => PgType::Timestamp,
            "timestamptz" | "timestamp with time zone" => PgType::TimestampTz,
            "uuid" => PgType::Uuid,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            _ => return None,
        })
    }

    /// The family of a built-in type OID, as result columns report it.
    pub fn from_oid(oid: u32) -> Option<PgType> {
        Some(match oid {
            16 => PgType::Bool,
            17 => PgType::Bytea,
            // name, text, unknown (untyped literals), bpchar, varchar
            19 | 25 | 705 | 1042 | 1043 => PgType::Text,
            20 => PgType::Int8,
            21 => PgType::Int2,
            23 => PgType::Int4,
            114 => PgType::Json,
            700 => PgType::Float4,
            701 => PgType::Float8,
            1082 => PgType::Date,
            1114 => PgType::Timestamp,
            1184 => PgType::TimestampTz,
            1700 => PgType::Numeric,
            2950 => PgType::Uuid,
            3802 => PgType::Jsonb,
            _ => return None,
        })
    }

    /// The built-in type OID of the family's canonical type.
    pub fn oid(self) -> u32 {
        match self {
            PgType::Bool => 16,
            PgType::Bytea => 17,
            PgType::Int8 => 20,
            PgType::Int2 => 21,
            PgType::Int4 => 23,
            PgType::Text => 25,
            PgType::Json => 114,
            PgType::Float4 => 700,
            PgType::Float8 => 701,
            PgType::Date => 1082,
            PgType::Timestamp => 1114,
            PgType::TimestampTz => 1184,
            PgType::Numeric => 1700,
            PgType::Uuid => 2950,
            PgType::Jsonb => 3802,
        }
    }

    /// The family a portable type is written as (and created as by DDL).
    pub fn for_portable(t: &DataType) -> PgType {
        match t {
            DataType::Boolean => PgType::Bool,
            DataType::Int16 => PgType::Int2,
            DataType::Int32 => PgType::Int4,
            DataType::Int64 => PgType::Int8,
            DataType::Float32 => PgType::Float4,
            DataType::Float64 => PgType::Float8,
            DataType::Decimal(_) => PgType::Numeric,
            DataType::Text => PgType::Text,
            DataType::Bytes => PgType::Bytea,
            DataType::Date => PgType::Date,
            DataType::Timestamp => PgType::Timestamp,
            DataType::TimestampTz => PgType::TimestampTz,
            DataType::Uuid => PgType::Uuid,
            DataType::Json => PgType::Jsonb,
        }
    }

    /// The portable type of a column of this family; `typmod` is `pg_attribute.atttypmod`.
    pub fn portable(self, typmod: i32) -> DataType {
        match self {
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric => DataType::Decimal(numeric_spec(typmod)),
            PgType::Text => DataType::Text,
            PgType::Bytea => DataType::Bytes,
            PgType::Bool => DataType::Boolean,
            PgType::Date => DataType::Date,
            PgType::Timestamp => DataType::Timestamp,
            PgType::TimestampTz => DataType::TimestampTz,
            PgType::Uuid => DataType::Uuid,
            PgType::Json | PgType::Jsonb => DataType::Json,
        }
    }

    /// SQL name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            PgType::Int2 => "smallint",
            PgType::Int4 => "integer",
            PgType::Int8 => "bigint",
            PgType::Float4 => "real",
            PgType::Float8 => "double precision",
            PgType::Numeric => "numeric",
            PgType::Text => "text",
            PgType::Bytea => "bytea",
            PgType::Bool => "boolean",
            PgType::Date => "date",
            PgType::Timestamp => "timestamp",
            PgType::TimestampTz => "timestamptz",
            PgType::Uuid => "uuid",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
        }
    }
}

/// Precision and scale of a `numeric` typmod, when they fit a 128-bit decimal.
///
/// A typmod is `((precision << 16) | (scale & 0x7ff)) + 4`, the scale an 11-bit signed
/// number (negative since PostgreSQL 15). Negative scales and scales above the precision
/// stay unconstrained: the portable decimal text has no form for them.
fn numeric_spec(typmod: i32) -> Option<DecimalSpec> {
    if typmod < 4 {
        return None;
    }
    let m = typmod - 4;
    let precision = (m >> 16) & 0xffff;
    let scale = ((m & 0x7ff) ^ 0x400) - 0x400;
    if !(1..=38).contains(&precision) || scale < 0 || scale > precision {
        return None;
    }
    Some(DecimalSpec {
        precision: precision as u8,
        scale: scale as i8,
    })
}

/// The portable type of a column from its `pg_type.typname` and `pg_attribute.atttypmod`;
/// a config error naming the column when the type is not supported.
pub fn portable_type(type_name: &str, typmod: i32, column: &str) -> Result<DataType> {
    PgType::from_name(type_name)
        .map(|t| t.portable(typmod))
        .ok_or_else(|| {
            Error::new(
                Kind::Unsupported,
                format!(
                    "column `{column}` has PostgreSQL type `{type_name}`, which dpone does not map"
                ),
            )
        })
}

/// The PostgreSQL type DDL creates for a portable type.
pub fn native_type(t: &DataType) -> String {
    match t {
        DataType::Decimal(Some(d)) => format!("numeric({},{})", d.precision, d.scale),
        DataType::Float64 => "double precision".into(),
        other => PgType::for_portable(other).name().into(),
    }
}

/// The PostgreSQL type a parameter of this value is cast to from its text form
/// ([`param_text`]).
pub fn param_cast(v: &Value) -> &'static str {
    match v {
        Value::Null | Value::Text(_) => "text",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "bigint",
        Value::Float(_) => "float8",
        Value::Decimal(_) => "numeric",
        Value::Bytes(_) => "bytea",
        Value::Date(_) => "date",
        Value::Timestamp(_) => "timestamp",
        Value::TimestampTz(_) => "timestamptz",
        Value::Uuid(_) => "uuid",
        Value::Json(_) => "jsonb",
    }
}

/// The text PostgreSQL's input function for [`param_cast`] parses back to exactly this
/// value (whatever the session's `DateStyle` or `TimeZone`); `None` for NULL.
pub fn param_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".into(),
        Value::Float(f) if f.is_infinite() => {
            if *f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            }
        }
        // Rust prints the shortest text that reads back to the same f64.
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::Text(s) | Value::Uuid(s) | Value::Json(s) => s.clone(),
        Value::Bytes(b) => {
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("\\x");
            for byte in b {
                s.push(HEX[usize::from(byte >> 4)] as char);
                s.push(HEX[usize::from(byte & 0xf)] as char);
            }
            s
        }
        Value::Date(d) => pg_date_text(i64::from(*d)),
        Value::Timestamp(t) => pg_timestamp_text(*t),
        Value::TimestampTz(t) => {
            let mut s = pg_timestamp_text(*t);
            // ISO date first: unambiguous under every DateStyle; the offset pins UTC.
            let at = s.find(" BC").unwrap_or(s.len());
            s.insert_str(at, "+00");
            s
        }
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// ISO date text; years before 1 are written `... BC`, the only form PostgreSQL reads.
fn pg_date_text(days: i64) -> String {
    let (y, m, d) = model::time::civil_from_days(days);
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

fn pg_timestamp_text(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rest = micros.rem_euclid(MICROS_PER_DAY);
    let (y, _, _) = model::time::civil_from_days(days);
    let secs = rest / 1_000_000;
    let clock = format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rest % 1_000_000
    );
    let date = pg_date_text(days);
    match date.strip_suffix(" BC") {
        Some(date) if y <= 0 => format!("{date} {clock} BC"),
        _ => format!("{date} {clock}"),
    }
}

/// A [`Value`] bound as a statement parameter in PostgreSQL's binary format.
///
/// sqlx sends every parameter in binary, so a value must be declared with the type whose
/// binary form it is written in (an `unknown`-typed text parameter would be read by the
/// inferred type's binary receiver). Each variant is declared as its natural type
/// ([`param_cast`]); PostgreSQL's implicit and assignment casts then fit it to the column
/// (`bigint` into `integer`, `numeric` against `integer`, ...). NULL is declared `unknown`,
/// so the server infers its type from the context.
#[derive(Debug)]
pub struct Param<'a>(pub &'a Value);

impl Type<Postgres> for Param<'_> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(705))
    }
}

impl Encode<'_, Postgres> for Param<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        let out: &mut Vec<u8> = buf;
        match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Boolean(b) => out.push(u8::from(*b)),
            Value::Int(i) => out.extend_from_slice(&i.to_be_bytes()),
            Value::Float(f) => out.extend_from_slice(&f.to_be_bytes()),
            Value::Decimal(s) => {
                let mut groups = Vec::new();
                copy::numeric_from_text(s, &mut groups, out).map_err(Box::new)?;
            }
            Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            Value::Bytes(b) => out.extend_from_slice(b),
            Value::Date(d) => {
                out.extend_from_slice(&copy::date_to_pg(*d).map_err(Box::new)?.to_be_bytes())
            }
            Value::Timestamp(t) | Value::TimestampTz(t) => {
                out.extend_from_slice(&copy::timestamp_to_pg(*t).map_err(Box::new)?.to_be_bytes())
            }
            Value::Uuid(s) => {
                let bytes = model::parse_uuid(s)
                    .ok_or_else(|| Box::new(CodecError(format!("`{s}` is not a uuid"))))?;
                out.extend_from_slice(&bytes);
            }
            Value::Json(s) => {
                out.push(copy::JSONB_VERSION);
                out.extend_from_slice(s.as_bytes());
            }
        }
        Ok(IsNull::No)
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        let t = match self.0 {
            Value::Null => return None,
            Value::Boolean(_) => PgType::Bool,
            Value::Int(_) => PgType::Int8,
            Value::Float(_) => PgType::Float8,
            Value::Decimal(_) => PgType::Numeric,
            Value::Text(_) => PgType::Text,
            Value::Bytes(_) => PgType::Bytea,
            Value::Date(_) => PgType::Date,
            Value::Timestamp(_) => PgType::Timestamp,
            Value::TimestampTz(_) => PgType::TimestampTz,
            Value::Uuid(_) => PgType::Uuid,
            Value::Json(_) => PgType::Jsonb,
        };
        Some(PgTypeInfo::with_oid(Oid(t.oid())))
    }
}

/// Decodes one binary result value into a value of portable type `want`.
///
/// `oid` is the column's type; the value is decoded as that type, then converted to `want`
/// where the conversion is exact (an `integer` read as `int64`, a `bigint` as `decimal`,
/// `json` as `text`, ...). A type this connector does not know is decoded as `want`'s own
/// wire format.
pub fn decode_value(
    oid: Option<u32>,
    bytes: Option<&[u8]>,
    want: &DataType,
) -> std::result::Result<Value, CodecError> {
    let Some(b) = bytes else {
        return Ok(Value::Null);
    };
    let wire = oid
        .and_then(PgType::from_oid)
        .unwrap_or_else(|| match want {
            // Lenient families: their decoders accept every width.
            DataType::Json => PgType::Json,
            other => PgType::for_portable(other),
        });
    let natural = match wire {
        PgType::Int2 | PgType::Int4 | PgType::Int8 => Value::Int(copy::int_from_pg(b)?),
        PgType::Float4 | PgType::Float8 => Value::Float(copy::float_from_pg(b)?),
        PgType::Numeric => {
            let mut s = String::new();
            copy::numeric_to_text(b, &mut s)?;
            Value::Decimal(s)
        }
        PgType::Text => Value::Text(copy::text_from_pg(b)?.to_owned()),
        PgType::Bytea => Value::Bytes(b.to_vec()),
        PgType::Bool => Value::Boolean(copy::bool_from_pg(b)?),
        PgType::Date => Value::Date(copy::date_from_pg(b)?),
        PgType::Timestamp => Value::Timestamp(copy::timestamp_from_pg(b)?),
        PgType::TimestampTz => Value::TimestampTz(copy::timestamp_from_pg(b)?),
        PgType::Uuid => Value::Uuid(model::uuid_text(copy::uuid_from_pg(b)?)),
        PgType::Json | PgType::Jsonb => Value::Json(copy::json_from_pg(b)?.to_owned()),
    };
    coerce(natural, want, wire)
}

/// Converts a decoded value to the portable type the caller asked for, when exact.
fn coerce(v: Value, want: &DataType, wire: PgType) -> std::result::Result<Value, CodecError> {
    use DataType as T;
    let fail = |v: &Value| {
        CodecError(format!(
            "a PostgreSQL {} value ({}) cannot be read as {want:?}",
            wire.name(),
            model::value_display(v)
        ))
    };
    Ok(match (v, want) {
        (v @ Value::Boolean(_), T::Boolean)
        | (v @ Value::Int(_), T::Int16 | T::Int32 | T::Int64)
        | (v @ Value::Float(_), T::Float32 | T::Float64)
        | (v @ Value::Decimal(_), T::Decimal(_))
        | (v @ Value::Text(_), T::Text)
        | (v @ Value::Bytes(_), T::Bytes)
        | (v @ Value::Date(_), T::Date)
        | (v @ Value::Timestamp(_), T::Timestamp)
        | (v @ Value::TimestampTz(_), T::TimestampTz)
        | (v @ Value::Uuid(_), T::Uuid)
        | (v @ Value::Json(_), T::Json) => v,
        (Value::Int(i), T::Float32 | T::Float64) => Value::Float(i as f64),
        (Value::Int(i), T::Decimal(_)) => Value::Decimal(i.to_string()),
        (Value::Decimal(s), T::Int16 | T::Int32 | T::Int64) => {
            match model::parse_decimal(&s, 0).and_then(|i| i64::try_from(i).ok()) {
                Some(i) => Value::Int(i),
                None => return Err(fail(&Value::Decimal(s))),
            }
        }
        (Value::Decimal(s), T::Float32 | T::Float64) => match s.parse::<f64>() {
            Ok(f) => Value::Float(f),
            Err(_) => return Err(fail(&Value::Decimal(s))),
        },
        (Value::Text(s), T::Json) => Value::Json(s),
        (Value::Text(s), T::Decimal(_))
            if copy::numeric_from_text(&s, &mut Vec::new(), &mut Vec::new()).is_ok() =>
        {
            Value::Decimal(s)
        }
        (Value::Text(s), T::Uuid) => match model::parse_uuid(&s) {
            Some(b) => Value::Uuid(model::uuid_text(&b)),
            None => return Err(fail(&Value::Text(s))),
        },
        (Value::Timestamp(t), T::TimestampTz) => Value::TimestampTz(t),
        (Value::TimestampTz(t), T::Timestamp) => Value::Timestamp(t),
        (Value::Date(d), T::Timestamp) => Value::Timestamp(i64::from(d) * MICROS_PER_DAY),
        (Value::Date(d), T::TimestampTz) => Value::TimestampTz(i64::from(d) * MICROS_PER_DAY),
        // Every value has a text form; `param_text` is the one PostgreSQL reads back.
        (v, T::Text) => Value::Text(param_text(&v).unwrap_or_default()),
        (v, _) => return Err(fail(&v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typmod(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    #[test]
    fn maps_every_documented_type() {
        let cases = [
            ("int2", -1, DataType::Int16),
            ("int4", -1, DataType::Int32),
            ("int8", -1, DataType::Int64),
            ("float4", -1, DataType::Float32),
            ("float8", -1, DataType::Float64),
            ("numeric", -1, DataType::Decimal(None)),
            (
                "numeric",
                typmod(12, 3),
                DataType::Decimal(Some(DecimalSpec {
                    precision: 12,
                    scale: 3,
                })),
            ),
            (
                "numeric",
                typmod(38, 0),
                DataType::Decimal(Some(DecimalSpec {
                    precision: 38,
                    scale: 0,
                })),
            ),
            ("numeric", typmod(39, 2), DataType::Decimal(None)),
            ("numeric", typmod(5, -2), DataType::Decimal(None)),
            ("numeric", typmod(2, 5), DataType::Decimal(None)),
            ("text", -1, DataType::Text),
            ("varchar", 14, DataType::Text),
            ("bpchar", 9, DataType::Text),
            ("name", -1, DataType::Text),
            ("citext", -1, DataType::Text),
            ("bytea", -1, DataType::Bytes),
            ("bool", -1, DataType::Boolean),
            ("date", -1, DataType::Date),
            ("timestamp", 6, DataType::Timestamp),
            ("timestamptz", -1, DataType::TimestampTz),
            ("uuid", -1, DataType::Uuid),
            ("json", -1, DataType::Json),
            ("jsonb", -1, DataType::Json),
        ];
        for (name, tm, want) in cases {
            assert_eq!(portable_type(name, tm, "c").unwrap(), want, "{name} {tm}");
        }
    }

    #[test]
    fn refuses_unmapped_types_naming_the_column() {
        for name in ["char", "interval", "_int4", "point", "money", "xml"] {
            let err = portable_type(name, -1, "amount").unwrap_err();
            assert!(
                err.message.contains("`amount`") && err.message.contains(name),
                "{err}"
            );
        }
    }

    #[test]
    fn native_types_map_back_to_the_same_portable_type() {
        let all = [
            DataType::Boolean,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::Float32,
            DataType::Float64,
            DataType::Decimal(Some(DecimalSpec {
                precision: 10,
                scale: 2,
            })),
            DataType::Decimal(None),
            DataType::Text,
            DataType::Bytes,
            DataType::Date,
            DataType::Timestamp,
            DataType::TimestampTz,
            DataType::Uuid,
            DataType::Json,
        ];
        for t in all {
            let native = native_type(&t);
            let (name, tm) = match native.split_once('(') {
                Some((n, rest)) => {
                    let (p, s) = rest.trim_end_matches(')').split_once(',').unwrap();
                    (n.to_owned(), typmod(p.parse().unwrap(), s.parse().unwrap()))
                }
                None => (native.clone(), -1),
            };
            assert_eq!(portable_type(&name, tm, "c").unwrap(), t, "{native}");
        }
        assert_eq!(native_type(&DataType::Json), "jsonb");
        assert_eq!(native_type(&DataType::Decimal(None)), "numeric");
        assert_eq!(native_type(&DataType::Float64), "double precision");
    }

    #[test]
    fn param_text_is_what_postgres_reads() {
        let cases = [
            (Value::Int(-5), "bigint", "-5"),
            (Value::Float(0.1), "float8", "0.1"),
            (Value::Float(f64::NEG_INFINITY), "float8", "-Infinity"),
            (Value::Decimal("-12.50".into()), "numeric", "-12.50"),
            (Value::Bytes(vec![0, 0xab, 0x10]), "bytea", "\\x00ab10"),
            (Value::Date(0), "date", "1970-01-01"),
            (Value::Date(-719_163), "date", "0001-12-31 BC"),
            (
                Value::Timestamp(1_500),
                "timestamp",
                "1970-01-01 00:00:00.001500",
            ),
            (
                Value::TimestampTz(-1),
                "timestamptz",
                "1969-12-31 23:59:59.999999+00",
            ),
            (Value::Boolean(true), "boolean", "true"),
            (Value::Json("{}".into()), "jsonb", "{}"),
        ];
        for (v, cast, text) in cases {
            assert_eq!(param_cast(&v), cast);
            assert_eq!(param_text(&v).as_deref(), Some(text));
        }
        assert_eq!(param_text(&Value::Null), None);
    }

    #[test]
    fn decodes_result_values_and_converts_exactly() {
        let int4 = 7i32.to_be_bytes();
        assert_eq!(
            decode_value(Some(23), Some(&int4), &DataType::Int64).unwrap(),
            Value::Int(7)
        );
        assert_eq!(
            decode_value(Some(23), Some(&int4), &DataType::Decimal(None)).unwrap(),
            Value::Decimal("7".into())
        );
        assert_eq!(
            decode_value(Some(23), None, &DataType::Int64).unwrap(),
            Value::Null
        );
        let jsonb = b"\x01{\"a\": 1}";
        assert_eq!(
            decode_value(Some(3802), Some(jsonb), &DataType::Json).unwrap(),
            Value::Json("{\"a\": 1}".into())
        );
        // An unknown OID (an extension type such as citext) is read as the wanted type.
        assert_eq!(
            decode_value(Some(99_999), Some(b"Abc"), &DataType::Text).unwrap(),
            Value::Text("Abc".into())
        );
        assert!(decode_value(Some(16), Some(&[1]), &DataType::Date).is_err());
        assert_eq!(
            decode_value(
                Some(25),
                Some(b"123456789012345678901"),
                &DataType::Decimal(None)
            )
            .unwrap(),
            Value::Decimal("123456789012345678901".into())
        );
        assert!(decode_value(Some(25), Some(b"12x"), &DataType::Decimal(None)).is_err());
    }
}

/// Source positions (WIT `position`): LSNs of the change feed as `pg:<hi>/<lo>` (the way
/// PostgreSQL prints an LSN, behind a prefix), 64-bit transaction ids of row versions as
/// `pgxid:<decimal>`. Only this module reads them; strategies store them as text.
pub fn lsn_position(lsn: u64) -> String {
    format!("pg:{}", super::feed::lsn_text(lsn))
}

/// The LSN of a `pg:` position; a state error naming the text otherwise.
pub fn parse_lsn_position(position: &str) -> Result<u64> {
    position
        .strip_prefix("pg:")
        .and_then(|lsn| super::feed::parse_lsn(lsn).ok())
        .ok_or_else(|| {
            Error::new(
                Kind::State,
                format!(
                    "`{position}` is not a change-feed position of a PostgreSQL source (pg:<LSN>, e.g. pg:16/B374D848)"
                ),
            )
        })
}

pub fn xid_position(xid: u64) -> String {
    format!("pgxid:{xid}")
}

/// The transaction id of a `pgxid:` position, as the `bigint` it is compared with.
pub fn parse_xid_position(position: &str) -> Result<i64> {
    position
        .strip_prefix("pgxid:")
        .and_then(|xid| xid.parse::<i64>().ok())
        .filter(|xid| *xid >= 0)
        .ok_or_else(|| {
            Error::new(
                Kind::State,
                format!(
                    "`{position}` is not a row-version position of a PostgreSQL source (pgxid:<transaction id>)"
                ),
            )
        })
}

#[cfg(test)]
mod position_tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_refuse_foreign_text() {
        let lsn = (0x16 << 32) | 0xB374_D848;
        assert_eq!(lsn_position(lsn), "pg:16/B374D848");
        assert_eq!(parse_lsn_position("pg:16/B374D848").unwrap(), lsn);
        assert_eq!(xid_position(743), "pgxid:743");
        assert_eq!(parse_xid_position("pgxid:743").unwrap(), 743);
        for bad in [
            "16/B374D848",
            "mssql:0x0000002A000001F80003",
            "pg:zz",
            "pgxid:743",
        ] {
            let e = parse_lsn_position(bad).unwrap_err();
            assert_eq!(e.kind, Kind::State, "{bad}");
        }
        for bad in ["743", "pgxid:-1", "pg:16/B374D848", "pgxid:"] {
            assert!(parse_xid_position(bad).is_err(), "{bad}");
        }
    }
}
