//! BigQuery types <-> portable types: the DDL type of a column, the portable type of a
//! table field, query parameters, the cells of query results, and the Parquet columns a
//! load job reads.
//!
//! Loads travel as Parquet because it keeps every type exact: decimals as fixed-point
//! integers at their scale, timestamps as microseconds (with and without a zone: TIMESTAMP
//! and DATETIME), bytes as raw bytes. NDJSON would carry decimals as text (exact) but bytes
//! as base64, which the emulator loads as the base64 text itself.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Decimal256Array, FixedSizeBinaryArray, RecordBatch, StringArray,
};
use arrow_buffer::i256;
use arrow_schema::{DataType as ArrowType, Field, Schema as ArrowSchema, SchemaRef};
use base64::Engine;

use crate::error::{Error, Kind, Result};
use crate::model::{self, Column, DataType, DecimalSpec, Value, time};

/// NUMERIC: 38 digits, 9 after the point.
const NUMERIC: DecimalSpec = DecimalSpec {
    precision: 38,
    scale: 9,
};

/// BIGNUMERIC's scale, and what an unconstrained decimal loads at.
const BIGNUMERIC_SCALE: i8 = 38;

/// Whether a `decimal(p, s)` fits NUMERIC (29 integer digits, 9 fraction digits).
fn fits_numeric(spec: &DecimalSpec) -> bool {
    spec.scale >= 0 && spec.scale <= 9 && i16::from(spec.precision) - i16::from(spec.scale) <= 29
}

/// The DDL type of a portable type. Integers are INT64, floats FLOAT64; a decimal is
/// NUMERIC(p, s) where it fits, else BIGNUMERIC(p, s); an unconstrained one BIGNUMERIC;
/// a timestamp without a zone DATETIME, with one TIMESTAMP; a uuid its text.
pub fn native_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOL".into(),
        DataType::Int16 | DataType::Int32 | DataType::Int64 => "INT64".into(),
        DataType::Float32 | DataType::Float64 => "FLOAT64".into(),
        DataType::Decimal(Some(spec)) if fits_numeric(spec) => {
            format!("NUMERIC({}, {})", spec.precision, spec.scale)
        }
        DataType::Decimal(Some(spec)) => format!("BIGNUMERIC({}, {})", spec.precision, spec.scale),
        DataType::Decimal(None) => "BIGNUMERIC".into(),
        DataType::Text | DataType::Uuid => "STRING".into(),
        DataType::Bytes => "BYTES".into(),
        DataType::Date => "DATE".into(),
        DataType::Timestamp => "DATETIME".into(),
        DataType::TimestampTz => "TIMESTAMP".into(),
        DataType::Json => "JSON".into(),
    }
}

/// The BigQuery type a column of type `t` is loaded into, without its parameters: what an
/// existing target's column must be to take it.
pub fn type_family(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "BOOL",
        DataType::Int16 | DataType::Int32 | DataType::Int64 => "INT64",
        DataType::Float32 | DataType::Float64 => "FLOAT64",
        DataType::Decimal(_) => "NUMERIC or BIGNUMERIC",
        DataType::Text | DataType::Uuid => "STRING",
        DataType::Bytes => "BYTES",
        DataType::Date => "DATE",
        DataType::Timestamp => "DATETIME",
        DataType::TimestampTz => "TIMESTAMP",
        DataType::Json => "JSON",
    }
}

/// The portable type of a table field (`type`, with `precision` and `scale` where the
/// API gives them); `unsupported` for REPEATED, RECORD and other types dpone does not load.
pub fn portable_type(field: &serde_json::Value) -> Result<Column> {
    let text = |k: &str| field.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let name = text("name").to_string();
    let number = |k: &str| text(k).parse::<u8>().ok();
    let unsupported = |what: &str| {
        Error::new(
            Kind::Unsupported,
            format!(
                "column `{}` is {what}: dpone loads scalar columns only",
                crate::text::name(&name)
            ),
        )
    };
    if text("mode") == "REPEATED" {
        return Err(unsupported("REPEATED"));
    }
    let decimal = |default: DecimalSpec| {
        DataType::Decimal(Some(DecimalSpec {
            precision: number("precision").unwrap_or(default.precision),
            scale: number("scale").map_or(default.scale, |s| s as i8),
        }))
    };
    let data_type = match text("type") {
        "BOOL" | "BOOLEAN" => DataType::Boolean,
        "INT64" | "INTEGER" => DataType::Int64,
        "FLOAT64" | "FLOAT" => DataType::Float64,
        "NUMERIC" => decimal(NUMERIC),
        "BIGNUMERIC" => decimal(DecimalSpec {
            precision: 76,
            scale: BIGNUMERIC_SCALE,
        }),
        "STRING" => DataType::Text,
        "BYTES" => DataType::Bytes,
        "DATE" => DataType::Date,
        "DATETIME" => DataType::Timestamp,
        "TIMESTAMP" => DataType::TimestampTz,
        "JSON" => DataType::Json,
        other => return Err(unsupported(other)),
    };
    Ok(Column {
        name,
        data_type,
        nullable: text("mode") != "REQUIRED",
    })
}

/// A value as a named query parameter `p{n}`: its type and its text.
pub fn parameter(n: usize, value: &Value) -> serde_json::Value {
    let (t, v) = match value {
        Value::Null => ("STRING", serde_json::Value::Null),
        Value::Boolean(b) => ("BOOL", b.to_string().into()),
        Value::Int(i) => ("INT64", i.to_string().into()),
        Value::Float(f) => ("FLOAT64", float_text(*f).into()),
        Value::Decimal(d) => {
            let (int, frac) = d
                .trim_start_matches(['-', '+'])
                .split_once('.')
                .unwrap_or((d, ""));
            let numeric = int.trim_start_matches('0').len() <= 29 && frac.len() <= 9;
            (
                if numeric { "NUMERIC" } else { "BIGNUMERIC" },
                d.clone().into(),
            )
        }
        Value::Text(s) | Value::Uuid(s) => ("STRING", s.clone().into()),
        Value::Json(s) => ("JSON", s.clone().into()),
        Value::Bytes(b) => (
            "BYTES",
            base64::engine::general_purpose::STANDARD.encode(b).into(),
        ),
        Value::Date(d) => ("DATE", time::format_date(*d).into()),
        Value::Timestamp(m) => ("DATETIME", time::format_timestamp(*m).into()),
        Value::TimestampTz(m) => (
            "TIMESTAMP",
            format!("{}+00:00", time::format_timestamp(*m)).into(),
        ),
    };
    serde_json::json!({
        "name": format!("p{n}"),
        "parameterType": {"type": t},
        "parameterValue": {"value": v},
    })
}

/// A float as BigQuery reads it in text: `NaN`, `Infinity`, `-Infinity` or the number.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        f.to_string()
    }
}

/// A cell of a query result (`{"v": ...}` of the REST row format, timestamps as int64
/// microseconds) as a value of type `t`; the error says what did not fit.
pub fn cell(v: &serde_json::Value, t: &DataType) -> std::result::Result<Value, String> {
    let Some(text) = v.as_str() else {
        return if v.is_null() {
            Ok(Value::Null)
        } else {
            Err(format!("expected a scalar cell, found {v}"))
        };
    };
    let bad = |what: &str| format!("`{}` is not {what}", crate::text::clean(text, 80));
    Ok(match t {
        DataType::Boolean => match text {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => return Err(bad("a boolean")),
        },
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            Value::Int(text.parse().map_err(|_| bad("an integer"))?)
        }
        DataType::Float32 | DataType::Float64 => Value::Float(match text {
            "NaN" | "nan" => f64::NAN,
            "Infinity" | "inf" => f64::INFINITY,
            "-Infinity" | "-inf" => f64::NEG_INFINITY,
            _ => text.parse().map_err(|_| bad("a number"))?,
        }),
        DataType::Decimal(Some(spec)) => {
            match plain_decimal(text).and_then(|t| model::parse_decimal(&t, spec.scale)) {
                Some(unscaled) => Value::Decimal(model::decimal_text(unscaled, spec.scale)),
                None => return Err(bad(&format!("a decimal of scale {}", spec.scale))),
            }
        }
        DataType::Decimal(None) => {
            Value::Decimal(plain_decimal(text).ok_or_else(|| bad("a decimal"))?)
        }
        DataType::Text => Value::Text(text.into()),
        DataType::Json => Value::Json(text.into()),
        DataType::Uuid => match model::parse_uuid(text) {
            Some(bytes) => Value::Uuid(model::uuid_text(&bytes)),
            None => return Err(bad("a uuid")),
        },
        DataType::Bytes => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| bad("base64"))?,
        ),
        DataType::Date => Value::Date(time::parse_date(text).ok_or_else(|| bad("a date"))?),
        DataType::Timestamp => {
            Value::Timestamp(time::parse_timestamp(text).ok_or_else(|| bad("a datetime"))?)
        }
        DataType::TimestampTz => Value::TimestampTz(match text.parse::<i64>() {
            Ok(micros) => micros,
            Err(_) => time::parse_timestamp(text).ok_or_else(|| bad("a timestamp"))?,
        }),
    })
}

/// A decimal's text without an exponent (`1E-9` is `0.000000001`: the emulator writes
/// small and large values so); `None` when it is not a decimal number.
fn plain_decimal(text: &str) -> Option<String> {
    let Some((mantissa, exponent)) = text.split_once(['e', 'E']) else {
        return Some(text.to_string());
    };
    let exponent: i32 = exponent.parse().ok()?;
    let (sign, body) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa.trim_start_matches('+')),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) || exponent.abs() > 1000 {
        return None;
    }
    let digits = format!("{int}{frac}");
    // Where the point goes, counted in digits from the left of `digits`.
    let point = int.len() as i32 + exponent;
    let (int, frac) = if point <= 0 {
        (
            "0".to_string(),
            format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        let (i, f) = digits.split_at(point as usize);
        (i.to_string(), f.to_string())
    };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// The Arrow schema of the Parquet file a load job reads for `columns`: the portable
/// Arrow types, except a uuid as its text and an unconstrained decimal as
/// BIGNUMERIC's `decimal(76, 38)`.
pub fn load_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(ArrowSchema::new(
        columns
            .iter()
            .map(|c| {
                let t = match &c.data_type {
                    DataType::Uuid => ArrowType::Utf8,
                    DataType::Decimal(None) => ArrowType::Decimal256(76, BIGNUMERIC_SCALE),
                    other => model::arrow_type(other),
                };
                Field::new(&c.name, t, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// `batch` (of the portable Arrow types of `columns`) in the shape of [`load_schema`].
pub fn load_batch(
    batch: &RecordBatch,
    columns: &[Column],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let arrays = batch
        .columns()
        .iter()
        .zip(columns)
        .map(|(array, c)| match &c.data_type {
            DataType::Uuid => {
                let bytes = array
                    .as_any()
                    .downcast_ref::<FixedSizeBinaryArray>()
                    .ok_or_else(|| shape_error(c))?;
                let text: StringArray = (0..bytes.len())
                    .map(|i| (!bytes.is_null(i)).then(|| model::uuid_text(bytes.value(i))))
                    .collect();
                Ok(Arc::new(text) as ArrayRef)
            }
            DataType::Decimal(None) => {
                let text = array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| shape_error(c))?;
                let values = text
                    .iter()
                    .map(|v| v.map(|s| bignumeric(s, &c.name)).transpose())
                    .collect::<Result<Decimal256Array>>()?
                    .with_precision_and_scale(76, BIGNUMERIC_SCALE)
                    .map_err(|e| Error::new(Kind::Sink, e.to_string()))?;
                Ok(Arc::new(values) as ArrayRef)
            }
            _ => Ok(array.clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| Error::new(Kind::Internal, format!("BigQuery load batch: {e}")))
}

fn shape_error(c: &Column) -> Error {
    Error::new(
        Kind::Internal,
        format!(
            "column `{}` does not hold its portable type",
            crate::text::name(&c.name)
        ),
    )
}

/// An unconstrained decimal's text as BIGNUMERIC's unscaled integer; more than 38
/// fraction digits or 38 integer digits is an error naming the column.
fn bignumeric(text: &str, column: &str) -> Result<i256> {
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.trim_start_matches('+')),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let int = int.trim_start_matches('0');
    let fits = frac.len() <= BIGNUMERIC_SCALE as usize && int.len() <= 38;
    let digits = format!("{sign}{int}{frac:0<38}");
    fits.then(|| i256::from_string(&digits))
        .flatten()
        .ok_or_else(|| {
            Error::new(
                Kind::Sink,
                format!(
                    "column `{}`: {} does not fit BIGNUMERIC (38 digits before the point, 38 after)",
                    crate::text::name(column),
                    crate::text::clean(text, 80)
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_take_numeric_where_they_fit() {
        let d = |p, s| {
            DataType::Decimal(Some(DecimalSpec {
                precision: p,
                scale: s,
            }))
        };
        assert_eq!(native_type(&d(38, 9)), "NUMERIC(38, 9)");
        assert_eq!(native_type(&d(12, 2)), "NUMERIC(12, 2)");
        assert_eq!(native_type(&d(38, 10)), "BIGNUMERIC(38, 10)");
        assert_eq!(native_type(&d(31, 0)), "BIGNUMERIC(31, 0)");
        assert_eq!(native_type(&DataType::Decimal(None)), "BIGNUMERIC");
    }

    #[test]
    fn cells_decode_exactly() {
        let s = |t: &str| serde_json::Value::String(t.into());
        assert_eq!(
            cell(&s("1704164645123456"), &DataType::TimestampTz),
            Ok(Value::TimestampTz(1_704_164_645_123_456))
        );
        assert_eq!(
            cell(&s("2024-01-02T03:04:05.654321"), &DataType::Timestamp),
            Ok(Value::Timestamp(1_704_164_645_654_321))
        );
        let spec = DataType::Decimal(Some(DecimalSpec {
            precision: 38,
            scale: 9,
        }));
        assert_eq!(
            cell(&s("99999999999999999999999999999.999999999"), &spec),
            Ok(Value::Decimal(
                "99999999999999999999999999999.999999999".into()
            ))
        );
        assert_eq!(
            cell(&s("AP8="), &DataType::Bytes),
            Ok(Value::Bytes(vec![0, 255]))
        );
        assert_eq!(
            cell(&serde_json::Value::Null, &DataType::Int64),
            Ok(Value::Null)
        );
        assert!(cell(&s("x"), &DataType::Int64).is_err());
    }

    #[test]
    fn exponents_become_plain_decimals() {
        assert_eq!(plain_decimal("1E-9").as_deref(), Some("0.000000001"));
        assert_eq!(plain_decimal("-1.25E+3").as_deref(), Some("-1250"));
        assert_eq!(plain_decimal("12.5E1").as_deref(), Some("125"));
        assert_eq!(plain_decimal("12.345").as_deref(), Some("12.345"));
        assert_eq!(plain_decimal("1Ex"), None);
    }

    #[test]
    fn unconstrained_decimals_load_at_bignumeric_scale() {
        assert_eq!(
            bignumeric("-1.5", "c").unwrap(),
            i256::from_string(&format!("-15{}", "0".repeat(37))).unwrap()
        );
        assert!(bignumeric(&format!("0.{}", "1".repeat(39)), "c").is_err());
        assert!(bignumeric(&"9".repeat(39), "c").is_err());
    }

    #[test]
    fn parameters_carry_their_type() {
        let p = parameter(1, &Value::Decimal("123.45".into()));
        assert_eq!(p["parameterType"]["type"], "NUMERIC");
        let p = parameter(2, &Value::Decimal(format!("1.{}", "1".repeat(20))));
        assert_eq!(p["parameterType"]["type"], "BIGNUMERIC");
        let p = parameter(3, &Value::TimestampTz(0));
        assert_eq!(
            p["parameterValue"]["value"],
            "1970-01-01 00:00:00.000000+00:00"
        );
    }
}
