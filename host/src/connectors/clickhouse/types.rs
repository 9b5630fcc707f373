//! ClickHouse type mapping: native types <-> portable types, RowBinary values, literals.
//!
//! | portable type    | DDL ([`native_type`])                       | read back as              |
//! |------------------|---------------------------------------------|---------------------------|
//! | `boolean`        | `UInt8` (`0`/`1`; the server has no `Bool`) | `boolean` (by the comment) |
//! | `int16`          | `Int16`                                     | `int16`                   |
//! | `int32`          | `Int32`                                     | `int32`                   |
//! | `int64`          | `Int64`                                     | `int64`                   |
//! | `float32`        | `Float32`                                   | `float32`                 |
//! | `float64`        | `Float64`                                   | `float64`                 |
//! | `decimal(p,s)`   | `Decimal(p,s)` (`p` <= 38)                  | `decimal(p,s)`            |
//! | `decimal` (none) | `Decimal(38,10)`                            | `decimal(38,10)`          |
//! | `text`           | `String`                                    | `text`                    |
//! | `json`           | `String`                                    | `json` (by the comment)   |
//! | `bytes`          | `String` (any bytes)                        | `bytes` (by the comment)  |
//! | `date`           | `Date` (1970-01-01 to 2149-06-06)           | `date`                    |
//! | `timestamp`      | `DateTime` / `DateTime64(6)` (see below)    | `timestamp`               |
//! | `timestamp-tz`   | `DateTime('UTC')` / `DateTime64(6, 'UTC')`  | `timestamp-tz`            |
//! | `uuid`           | `UUID`                                      | `uuid`                    |
//!
//! ClickHouse has no boolean, binary or JSON type, so dpone marks the columns it creates
//! for them with the comment `dpone:boolean`, `dpone:bytes` or `dpone:json`
//! ([`type_comment`]); reading a table, a marked column maps back to that type, an
//! unmarked `UInt8` to `int16` and an unmarked `String` to `text`.
//!
//! A nullable column is `Nullable(T)`. Key columns of a target never are (ClickHouse cannot
//! sort by a Nullable column before 20.x). Timestamps: servers from 20.1 have `DateTime64`
//! and keep microseconds; older ones have `DateTime`, whole seconds from 1970 to 2106, and
//! dpone refuses a value with a fraction of a second instead of truncating it. A `DateTime`
//! without a time zone argument is a `timestamp` (wall clock), one with a time zone a
//! `timestamp-tz` (an instant); both hold seconds since the epoch, so the server's own time
//! zone never shifts a value.
//!
//! Also read: `Int8`, `UInt8` -> `int16`; `UInt16` -> `int32`; `UInt32` -> `int64`;
//! `UInt64` -> `decimal(20,0)`; `Decimal32/64/128(s)`; `FixedString(n)` -> `bytes`;
//! `Enum8/16` -> `text`; `LowCardinality(T)` as `T`. Arrays, maps, tuples and nested
//! columns are not mapped: a table with one is refused with the column named.

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};

use crate::error::{Error, Kind, Result};
use crate::model::{DataType, DecimalSpec, Value, decimal_text, parse_decimal, time, uuid_text};

const MICROS: i64 = 1_000_000;

/// A ClickHouse column type, as far as dpone maps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChType {
    Nullable(Box<ChType>),
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: u8,
    },
    String,
    FixedString(usize),
    Date,
    /// Seconds; `tz` when the type names a time zone.
    DateTime {
        tz: bool,
    },
    /// Ticks of 10^-precision seconds.
    DateTime64 {
        precision: u8,
        tz: bool,
    },
    Uuid,
    /// Enum8 (`wide` false) or Enum16, with its names by value.
    Enum {
        wide: bool,
        names: Vec<(i16, String)>,
    },
    /// The type of a bare `NULL`.
    Nothing,
}

impl ChType {
    /// Parses a type name as `system.columns` and result headers spell it.
    pub fn parse(name: &str) -> Result<ChType> {
        let name = name.trim();
        let unsupported = || {
            Error::new(
                Kind::Unsupported,
                format!("the ClickHouse type `{name}` is not mapped (docs/type-mapping.md)"),
            )
        };
        let (head, args) = match name.find('(') {
            Some(i) if name.ends_with(')') => (&name[..i], Some(&name[i + 1..name.len() - 1])),
            _ => (name, None),
        };
        let int_arg = |a: Option<&str>| a.and_then(|a| a.trim().parse::<u8>().ok());
        // Wider decimals are 32 bytes (Decimal256); DateTime64 counts at most nanoseconds.
        let at_most = |p: Option<u8>, max: u8| p.filter(|p| *p <= max);
        Ok(match (head, args) {
            ("Nullable", Some(inner)) => ChType::Nullable(Box::new(ChType::parse(inner)?)),
            ("LowCardinality", Some(inner)) => ChType::parse(inner)?,
            ("Int8", None) => ChType::Int8,
            ("Int16", None) => ChType::Int16,
            ("Int32", None) => ChType::Int32,
            ("Int64", None) => ChType::Int64,
            ("UInt8", None) => ChType::UInt8,
            ("UInt16", None) => ChType::UInt16,
            ("UInt32", None) => ChType::UInt32,
            ("UInt64", None) => ChType::UInt64,
            ("Float32", None) => ChType::Float32,
            ("Float64", None) => ChType::Float64,
            ("Decimal", Some(a)) => {
                let (p, s) = a.split_once(',').ok_or_else(unsupported)?;
                ChType::Decimal {
                    precision: at_most(int_arg(Some(p)), 38).ok_or_else(unsupported)?,
                    scale: int_arg(Some(s)).ok_or_else(unsupported)?,
                }
            }
            ("Decimal32" | "Decimal64" | "Decimal128", a) => ChType::Decimal {
                precision: match head {
                    "Decimal32" => 9,
                    "Decimal64" => 18,
                    _ => 38,
                },
                scale: int_arg(a).ok_or_else(unsupported)?,
            },
            ("String", None) => ChType::String,
            ("FixedString", a) => ChType::FixedString(
                a.and_then(|a| a.trim().parse().ok())
                    .ok_or_else(unsupported)?,
            ),
            ("Date", None) => ChType::Date,
            ("DateTime", a) => ChType::DateTime { tz: a.is_some() },
            ("DateTime64", Some(a)) => {
                let mut parts = a.splitn(2, ',');
                ChType::DateTime64 {
                    precision: at_most(int_arg(parts.next()), 9).ok_or_else(unsupported)?,
                    tz: parts.next().is_some(),
                }
            }
            ("UUID", None) => ChType::Uuid,
            ("Enum8" | "Enum16", Some(a)) => ChType::Enum {
                wide: head == "Enum16",
                names: parse_enum(a).ok_or_else(unsupported)?,
            },
            ("Nothing", None) => ChType::Nothing,
            _ => return Err(unsupported()),
        })
    }

    /// The type without `Nullable`, and whether it had it.
    pub fn base(&self) -> (&ChType, bool) {
        match self {
            ChType::Nullable(inner) => (inner, true),
            other => (other, false),
        }
    }

    /// The portable type of a column of this type (the module table).
    pub fn portable(&self) -> DataType {
        match self.base().0 {
            ChType::Int8 | ChType::Int16 | ChType::UInt8 => DataType::Int16,
            ChType::Int32 | ChType::UInt16 => DataType::Int32,
            ChType::Int64 | ChType::UInt32 => DataType::Int64,
            ChType::UInt64 => decimal(20, 0),
            ChType::Float32 => DataType::Float32,
            ChType::Float64 => DataType::Float64,
            ChType::Decimal { precision, scale } => decimal(*precision, *scale),
            ChType::String | ChType::Enum { .. } | ChType::Nothing => DataType::Text,
            ChType::FixedString(_) => DataType::Bytes,
            ChType::Date => DataType::Date,
            ChType::DateTime { tz } | ChType::DateTime64 { tz, .. } => {
                if *tz {
                    DataType::TimestampTz
                } else {
                    DataType::Timestamp
                }
            }
            ChType::Uuid => DataType::Uuid,
            ChType::Nullable(_) => DataType::Text,
        }
    }
}

fn decimal(precision: u8, scale: u8) -> DataType {
    DataType::Decimal(Some(DecimalSpec {
        precision,
        scale: scale as i8,
    }))
}

/// `'a' = 1, 'b' = 2` -> [(1, "a"), (2, "b")].
fn parse_enum(args: &str) -> Option<Vec<(i16, String)>> {
    let mut out = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        rest = rest.strip_prefix('\'')?;
        let mut name = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => name.push(chars.next()?.1),
                (i, '\'') => break i,
                (_, c) => name.push(c),
            }
        };
        rest = rest[end + 1..].trim_start().strip_prefix('=')?.trim_start();
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        out.push((rest[..digits].parse().ok()?, name));
        rest = rest[digits..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

/// The DDL type for a portable type; `datetime64` when the server has `DateTime64`.
pub fn native_type(t: &DataType, datetime64: bool) -> String {
    match t {
        DataType::Boolean => "UInt8".into(),
        DataType::Int16 => "Int16".into(),
        DataType::Int32 => "Int32".into(),
        DataType::Int64 => "Int64".into(),
        DataType::Float32 => "Float32".into(),
        DataType::Float64 => "Float64".into(),
        DataType::Decimal(Some(d)) => {
            let precision = d.precision.clamp(1, 38);
            format!(
                "Decimal({precision}, {})",
                d.scale.clamp(0, precision as i8)
            )
        }
        DataType::Decimal(None) => "Decimal(38, 10)".into(),
        DataType::Text | DataType::Json | DataType::Bytes => "String".into(),
        DataType::Date => "Date".into(),
        DataType::Timestamp if datetime64 => "DateTime64(6)".into(),
        DataType::Timestamp => "DateTime".into(),
        DataType::TimestampTz if datetime64 => "DateTime64(6, 'UTC')".into(),
        DataType::TimestampTz => "DateTime('UTC')".into(),
        DataType::Uuid => "UUID".into(),
    }
}

/// The column comment that marks a portable type ClickHouse has no type for.
pub fn type_comment(t: &DataType) -> Option<&'static str> {
    match t {
        DataType::Boolean => Some("dpone:boolean"),
        DataType::Bytes => Some("dpone:bytes"),
        DataType::Json => Some("dpone:json"),
        _ => None,
    }
}

/// The portable type of a column of type `t` with this comment (the module table).
pub fn portable_type(t: &ChType, comment: &str) -> DataType {
    match (t.base().0, comment) {
        (ChType::UInt8, "dpone:boolean") => DataType::Boolean,
        (ChType::String, "dpone:bytes") => DataType::Bytes,
        (ChType::String, "dpone:json") => DataType::Json,
        _ => t.portable(),
    }
}

/// A string literal: `'...'` with ClickHouse's backslash escapes.
pub fn quote_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('\'');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\0' => out.push_str("\\0"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out.push('\'');
    out
}

/// The SQL literal for a value. The server has no bound parameters before 19.x, so the
/// ClickHouse session renders every parameter as a literal of exactly this value. A
/// timestamp with a fraction of a second is a `DateTime64` where the server has it
/// (`datetime64`); before 20.1 it is rounded down to its second, the only thing a
/// `DateTime` can be compared with or set to (exact for the cursor bounds `>` and `<=`;
/// docs/connectors/clickhouse.md#types says where else it matters).
pub fn literal(v: &Value, datetime64: bool) -> Result<String> {
    Ok(match v {
        Value::Null => "NULL".into(),
        Value::Boolean(b) => u8::from(*b).to_string(),
        Value::Int(i) => format!("toInt64({i})"),
        Value::Float(f) if f.is_nan() => "nan".into(),
        Value::Float(f) if f.is_infinite() => if *f > 0.0 { "inf" } else { "-inf" }.into(),
        Value::Float(f) => format!("{f:?}"),
        Value::Decimal(d) => {
            let scale = check_decimal_text(d)?;
            format!("toDecimal128({}, {scale})", quote_string(d.as_bytes()))
        }
        Value::Text(s) | Value::Json(s) => quote_string(s.as_bytes()),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("unhex('{hex}')")
        }
        Value::Date(d) => format!("toDate('{}')", time::format_date(*d)),
        Value::Timestamp(us) | Value::TimestampTz(us) => {
            let zone = if matches!(v, Value::TimestampTz(_)) {
                ", 'UTC'"
            } else {
                ""
            };
            let seconds = decimal_text(i128::from(*us), 6);
            if datetime64 && us.rem_euclid(MICROS) != 0 {
                format!("toDateTime64(toDecimal64('{seconds}', 6), 6{zone})")
            } else {
                format!("toDateTime({}{zone})", us.div_euclid(MICROS))
            }
        }
        Value::Uuid(u) => {
            check_uuid_text(u)?;
            format!("toUUID('{u}')")
        }
    })
}

/// The scale of canonical decimal text (`-12.50`: an optional sign, digits, an optional
/// fraction); anything else is refused before it reaches SQL text.
fn check_decimal_text(d: &str) -> Result<usize> {
    let unsigned = d.strip_prefix('-').unwrap_or(d);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || (d.contains('.') && fraction.is_empty())
    {
        return Err(Error::new(
            Kind::InvalidHandle,
            format!("{d:?} is not decimal text (an optional -, digits, an optional .digits)"),
        ));
    }
    Ok(fraction.len())
}

/// Refuses text that is not a hyphenated UUID (8-4-4-4-12 hex digits).
fn check_uuid_text(u: &str) -> Result<()> {
    let groups: Vec<&str> = u.split('-').collect();
    let shaped = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if shaped {
        Ok(())
    } else {
        Err(Error::new(
            Kind::InvalidHandle,
            format!("{u:?} is not a UUID (8-4-4-4-12 hex digits)"),
        ))
    }
}

/// Reads RowBinary values from a buffer that may end mid-row.
#[derive(Debug)]
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|b| b.try_into().expect("N bytes"))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.take(1)?.first()?;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    /// One value of `t`, as the portable type `want` asks for; `Ok(None)` when the buffer
    /// ends first (read more and retry from the row's start).
    pub fn value(&mut self, t: &ChType, want: &DataType) -> Result<Option<Value>> {
        let (base, nullable) = t.base();
        if nullable {
            match self.take(1) {
                None => return Ok(None),
                Some([0]) => {}
                Some(_) => return Ok(Some(Value::Null)),
            }
        }
        macro_rules! le {
            ($ty:ty) => {
                match self.array() {
                    Some(b) => <$ty>::from_le_bytes(b),
                    None => return Ok(None),
                }
            };
        }
        let v = match base {
            ChType::Int8 => Value::Int(le!(i8).into()),
            ChType::Int16 => Value::Int(le!(i16).into()),
            ChType::Int32 => Value::Int(le!(i32).into()),
            ChType::Int64 => Value::Int(le!(i64)),
            ChType::UInt8 => Value::Int(le!(u8).into()),
            ChType::UInt16 => Value::Int(le!(u16).into()),
            ChType::UInt32 => Value::Int(le!(u32).into()),
            ChType::UInt64 => Value::Decimal(le!(u64).to_string()),
            ChType::Float32 => Value::Float(le!(f32).into()),
            ChType::Float64 => Value::Float(le!(f64)),
            ChType::Decimal { precision, scale } => {
                let unscaled = match precision {
                    0..=9 => i128::from(le!(i32)),
                    10..=18 => i128::from(le!(i64)),
                    _ => le!(i128),
                };
                Value::Decimal(decimal_text(unscaled, *scale as i8))
            }
            ChType::String | ChType::FixedString(_) => {
                let n = match base {
                    ChType::FixedString(n) => *n,
                    _ => match self.varint() {
                        Some(n) => n as usize,
                        None => return Ok(None),
                    },
                };
                match self.take(n) {
                    Some(b) => Value::Bytes(b.to_vec()),
                    None => return Ok(None),
                }
            }
            ChType::Date => Value::Date(le!(u16).into()),
            ChType::DateTime { .. } => Value::TimestampTz(i64::from(le!(u32)) * MICROS),
            ChType::DateTime64 { precision, .. } => {
                let ticks = le!(i64);
                let p = 10i64.pow(u32::from(*precision));
                Value::TimestampTz(if p >= MICROS {
                    ticks.div_euclid(p / MICROS)
                } else {
                    ticks * (MICROS / p)
                })
            }
            ChType::Uuid => {
                let hi = le!(u64);
                let lo = le!(u64);
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&hi.to_be_bytes());
                b[8..].copy_from_slice(&lo.to_be_bytes());
                Value::Uuid(uuid_text(&b))
            }
            ChType::Enum { wide, names } => {
                let n = if *wide { le!(i16) } else { le!(i8).into() };
                let name = names.iter().find(|(v, _)| *v == n).map(|(_, s)| s.clone());
                Value::Text(name.unwrap_or_else(|| n.to_string()))
            }
            ChType::Nothing => Value::Null,
            ChType::Nullable(_) => return Err(Error::internal("Nullable(Nullable)")),
        };
        coerce(v, want).map(Some)
    }
}

/// A value read from ClickHouse as the portable type the caller asked for: booleans from
/// `UInt8`, text from bytes, wall-clock timestamps from `DateTime`. Fails when the value
/// does not fit.
pub fn coerce(v: Value, want: &DataType) -> Result<Value> {
    let mismatch = |v: &Value| {
        Error::new(
            Kind::Unsupported,
            format!("ClickHouse value {v:?} cannot be read as {want:?}"),
        )
    };
    Ok(match (v, want) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), DataType::Boolean) if i == 0 || i == 1 => Value::Boolean(i == 1),
        (Value::Int(i), DataType::Int16 | DataType::Int32 | DataType::Int64) => Value::Int(i),
        (Value::Int(i), DataType::Decimal(_)) => Value::Decimal(i.to_string()),
        (Value::Int(i), DataType::Float32 | DataType::Float64) => Value::Float(i as f64),
        (Value::Decimal(d), DataType::Int64) => Value::Int(
            d.parse()
                .map_err(|_| mismatch(&Value::Decimal(d.clone())))?,
        ),
        (Value::Decimal(d), DataType::Decimal(Some(spec))) => {
            let unscaled = parse_decimal(&d, spec.scale)
                .ok_or_else(|| mismatch(&Value::Decimal(d.clone())))?;
            Value::Decimal(decimal_text(unscaled, spec.scale))
        }
        (Value::Bytes(b), DataType::Bytes) => Value::Bytes(b),
        (
            Value::Bytes(b),
            DataType::Text | DataType::Json | DataType::Decimal(None) | DataType::Uuid,
        ) => {
            let s = String::from_utf8(b).map_err(|e| {
                Error::new(
                    Kind::Unsupported,
                    format!("ClickHouse String is not UTF-8 text ({e}); map the column as bytes"),
                )
            })?;
            match want {
                DataType::Json => Value::Json(s),
                DataType::Decimal(None) => Value::Decimal(s),
                DataType::Uuid => Value::Uuid(s),
                _ => Value::Text(s),
            }
        }
        (Value::TimestampTz(us), DataType::Timestamp) => Value::Timestamp(us),
        (Value::Text(s), DataType::Text) => Value::Text(s),
        (
            v @ (Value::Float(_)
            | Value::Decimal(_)
            | Value::Date(_)
            | Value::TimestampTz(_)
            | Value::Uuid(_)),
            _,
        ) if same_kind(&v, want) => v,
        (v, _) => return Err(mismatch(&v)),
    })
}

fn same_kind(v: &Value, want: &DataType) -> bool {
    matches!(
        (v, want),
        (Value::Float(_), DataType::Float32 | DataType::Float64)
            | (Value::Decimal(_), DataType::Decimal(None))
            | (Value::Date(_), DataType::Date)
            | (Value::TimestampTz(_), DataType::TimestampTz)
            | (Value::Uuid(_), DataType::Uuid)
    )
}

/// Appends one value to a RowBinary body for a column of type `t`. `column` names the
/// column in errors.
pub fn write_value(out: &mut Vec<u8>, t: &ChType, v: &Value, column: &str) -> Result<()> {
    let (base, nullable) = t.base();
    if nullable {
        if *v == Value::Null {
            out.push(1);
            return Ok(());
        }
        out.push(0);
    }
    if *v == Value::Null {
        return Err(Error::new(
            Kind::Sink,
            format!("ClickHouse: column `{column}` is not Nullable and cannot take NULL"),
        ));
    }
    let bad = |why: &str| {
        Error::new(
            Kind::Sink,
            format!("ClickHouse: column `{column}` ({base:?}) cannot take {v:?}: {why}"),
        )
    };
    match base {
        ChType::Int8
        | ChType::Int16
        | ChType::Int32
        | ChType::Int64
        | ChType::UInt8
        | ChType::UInt16
        | ChType::UInt32
        | ChType::UInt64 => {
            let i = match v {
                Value::Int(i) => *i,
                Value::Boolean(b) => i64::from(*b),
                Value::Decimal(d) if *base == ChType::UInt64 => {
                    let u = d.parse::<u64>().map_err(|_| bad("out of range"))?;
                    out.extend_from_slice(&u.to_le_bytes());
                    return Ok(());
                }
                _ => return Err(bad("not an integer")),
            };
            put_int(out, base, i).ok_or_else(|| bad("out of range"))?;
        }
        ChType::Float32 | ChType::Float64 => match v {
            Value::Float(f) => put_float(out, base, *f),
            _ => return Err(bad("not a float")),
        },
        ChType::Decimal { precision, scale } => {
            let text = match v {
                Value::Decimal(d) => d.clone(),
                Value::Int(i) => i.to_string(),
                _ => return Err(bad("not a decimal")),
            };
            parse_decimal(&text, *scale as i8)
                .and_then(|unscaled| put_decimal(out, *precision, unscaled))
                .ok_or_else(|| bad("does not fit the precision and scale"))?;
        }
        ChType::String => match v {
            Value::Text(s) | Value::Json(s) | Value::Decimal(s) | Value::Uuid(s) => {
                put_string(out, s.as_bytes())
            }
            Value::Bytes(b) => put_string(out, b),
            _ => return Err(bad("not text")),
        },
        ChType::FixedString(n) => match v {
            Value::Bytes(b) if b.len() <= *n => {
                out.extend_from_slice(b);
                out.resize(out.len() + n - b.len(), 0);
            }
            _ => return Err(bad("not bytes of that length")),
        },
        ChType::Date => match v {
            Value::Date(d) => {
                put_date(out, *d).ok_or_else(|| bad("Date holds 1970-01-01 to 2149-06-06"))?
            }
            _ => return Err(bad("not a date")),
        },
        ChType::DateTime { .. } | ChType::DateTime64 { .. } => {
            let us = timestamp_micros(v).ok_or_else(|| bad("not a timestamp"))?;
            put_timestamp(out, base, us).map_err(bad)?;
        }
        ChType::Uuid => {
            let text = match v {
                Value::Uuid(u) | Value::Text(u) => u,
                _ => return Err(bad("not a uuid")),
            };
            put_uuid(
                out,
                &crate::model::parse_uuid(text).ok_or_else(|| bad("not a uuid"))?,
            );
        }
        ChType::Enum { wide, names } => {
            let Value::Text(s) = v else {
                return Err(bad("not text"));
            };
            let n = names
                .iter()
                .find(|(_, name)| name == s)
                .map(|(n, _)| *n)
                .ok_or_else(|| bad("not one of the enum's names"))?;
            if *wide {
                out.extend_from_slice(&n.to_le_bytes());
            } else {
                out.push(n as i8 as u8);
            }
        }
        ChType::Nothing | ChType::Nullable(_) => return Err(bad("no value fits")),
    }
    Ok(())
}

/// Appends row `row` of `array` (of portable type `t`) for a column of type `target`,
/// read straight from the Arrow array: no [`Value`] is built, so no text is allocated or
/// parsed. Covers the pairs of types dpone's own DDL maps to each other; for any other
/// pair, or a value that does not fit (whose error [`write_value`] words), it appends
/// nothing and returns `false`. Where it returns `true` it appended exactly what
/// [`write_value`] appends for [`crate::model::value_at`] of the same cell.
pub fn write_cell(
    out: &mut Vec<u8>,
    target: &ChType,
    array: &ArrayRef,
    t: &DataType,
    row: usize,
) -> bool {
    let (base, nullable) = target.base();
    let start = out.len();
    if array.is_null(row) {
        if nullable {
            out.push(1);
        }
        return nullable;
    }
    if nullable {
        out.push(0);
    }
    let written = write_present(out, base, array, t, row).is_some();
    if !written {
        out.truncate(start);
    }
    written
}

fn write_present(
    out: &mut Vec<u8>,
    base: &ChType,
    array: &ArrayRef,
    t: &DataType,
    row: usize,
) -> Option<()> {
    macro_rules! get {
        ($ty:ty) => {
            array.as_any().downcast_ref::<$ty>()?.value(row)
        };
    }
    match (t, base) {
        (DataType::Boolean, _) => put_int(out, base, i64::from(get!(BooleanArray))),
        (DataType::Int16, _) => put_int(out, base, get!(Int16Array).into()),
        (DataType::Int32, _) => put_int(out, base, get!(Int32Array).into()),
        (DataType::Int64, _) => put_int(out, base, get!(Int64Array)),
        (DataType::Float32, ChType::Float32 | ChType::Float64) => {
            put_float(out, base, get!(Float32Array).into());
            Some(())
        }
        (DataType::Float64, ChType::Float32 | ChType::Float64) => {
            put_float(out, base, get!(Float64Array));
            Some(())
        }
        (DataType::Decimal(Some(spec)), ChType::Decimal { precision, scale }) => {
            let unscaled = rescale(get!(Decimal128Array), spec.scale, *scale)?;
            put_decimal(out, *precision, unscaled)
        }
        (DataType::Text | DataType::Json | DataType::Decimal(None), ChType::String) => {
            put_string(out, get!(StringArray).as_bytes());
            Some(())
        }
        (DataType::Bytes, ChType::String) => {
            put_string(out, get!(BinaryArray));
            Some(())
        }
        (DataType::Date, ChType::Date) => put_date(out, get!(Date32Array)),
        (
            DataType::Timestamp | DataType::TimestampTz,
            ChType::DateTime { .. } | ChType::DateTime64 { .. },
        ) => put_timestamp(out, base, get!(TimestampMicrosecondArray)).ok(),
        (DataType::Uuid, ChType::Uuid) => {
            put_uuid(out, get!(FixedSizeBinaryArray).try_into().ok()?);
            Some(())
        }
        _ => None,
    }
}

/// `unscaled` at scale `from` as the same number at scale `to`; `None` when digits would
/// be lost or it overflows.
fn rescale(unscaled: i128, from: i8, to: u8) -> Option<i128> {
    let (from, to) = (u32::try_from(from).ok()?, u32::from(to));
    if to >= from {
        unscaled.checked_mul(10i128.checked_pow(to - from)?)
    } else {
        let d = 10i128.checked_pow(from - to)?;
        (unscaled % d == 0).then_some(unscaled / d)
    }
}

/// An integer column's bytes; `None` (nothing appended) when `i` is out of its range.
fn put_int(out: &mut Vec<u8>, base: &ChType, i: i64) -> Option<()> {
    macro_rules! put {
        ($ty:ty) => {
            out.extend_from_slice(&<$ty>::try_from(i).ok()?.to_le_bytes())
        };
    }
    match base {
        ChType::Int8 => put!(i8),
        ChType::Int16 => put!(i16),
        ChType::Int32 => put!(i32),
        ChType::Int64 => put!(i64),
        ChType::UInt8 => put!(u8),
        ChType::UInt16 => put!(u16),
        ChType::UInt32 => put!(u32),
        ChType::UInt64 => put!(u64),
        _ => return None,
    }
    Some(())
}

/// `Float32` narrows `f` as `as f32` does.
fn put_float(out: &mut Vec<u8>, base: &ChType, f: f64) {
    if *base == ChType::Float32 {
        out.extend_from_slice(&(f as f32).to_le_bytes());
    } else {
        out.extend_from_slice(&f.to_le_bytes());
    }
}

/// A decimal of `precision` digits, in the width the server stores it in; `None` when
/// `unscaled` has more digits.
fn put_decimal(out: &mut Vec<u8>, precision: u8, unscaled: i128) -> Option<()> {
    if unscaled.unsigned_abs() >= 10u128.checked_pow(u32::from(precision))? {
        return None;
    }
    match precision {
        0..=9 => out.extend_from_slice(&(unscaled as i32).to_le_bytes()),
        10..=18 => out.extend_from_slice(&(unscaled as i64).to_le_bytes()),
        _ => out.extend_from_slice(&unscaled.to_le_bytes()),
    }
    Some(())
}

/// A `String`: its length as a LEB128 varint, then its bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut n = bytes.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// Days since 1970-01-01 as `Date`'s `UInt16`; `None` outside it.
fn put_date(out: &mut Vec<u8>, days: i32) -> Option<()> {
    out.extend_from_slice(&u16::try_from(days).ok()?.to_le_bytes());
    Some(())
}

/// Microseconds since the epoch as a `DateTime` or `DateTime64`; the reason when the
/// column cannot hold them.
fn put_timestamp(
    out: &mut Vec<u8>,
    base: &ChType,
    us: i64,
) -> std::result::Result<(), &'static str> {
    match base {
        ChType::DateTime64 { precision, .. } => {
            let p = 10i64.pow(u32::from(*precision));
            let ticks = if p >= MICROS {
                us.checked_mul(p / MICROS).ok_or("out of range")?
            } else if us % (MICROS / p) == 0 {
                us / (MICROS / p)
            } else {
                return Err("finer than the column's precision");
            };
            out.extend_from_slice(&ticks.to_le_bytes());
        }
        _ => {
            if us.rem_euclid(MICROS) != 0 {
                return Err(
                    "DateTime holds whole seconds on this server (no DateTime64 before 20.1)",
                );
            }
            let secs = u32::try_from(us / MICROS)
                .map_err(|_| "DateTime holds 1970-01-01 to 2106-02-07")?;
            out.extend_from_slice(&secs.to_le_bytes());
        }
    }
    Ok(())
}

/// A `UUID`: its two 64-bit halves, each little-endian (what the server sends).
fn put_uuid(out: &mut Vec<u8>, b: &[u8; 16]) {
    let (hi, lo) = b.split_at(8);
    let hi = u64::from_be_bytes(hi.try_into().expect("8 bytes"));
    let lo = u64::from_be_bytes(lo.try_into().expect("8 bytes"));
    out.extend_from_slice(&hi.to_le_bytes());
    out.extend_from_slice(&lo.to_le_bytes());
}

fn timestamp_micros(v: &Value) -> Option<i64> {
    match v {
        Value::Timestamp(us) | Value::TimestampTz(us) => Some(*us),
        _ => None,
    }
}

/// Undoes TabSeparated escaping (`\t`, `\n`, `\\`, ...).
pub fn unescape_tsv(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'b') => out.push(8),
            Some(b'f') => out.push(12),
            Some(b'0') => out.push(0),
            Some(b'a') => out.push(7),
            Some(b'v') => out.push(11),
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_type_names_the_server_prints() {
        assert_eq!(
            ChType::parse("Nullable(Decimal(38, 10))").unwrap(),
            ChType::Nullable(Box::new(ChType::Decimal {
                precision: 38,
                scale: 10
            }))
        );
        assert_eq!(
            ChType::parse("DateTime('UTC')").unwrap(),
            ChType::DateTime { tz: true }
        );
        assert_eq!(
            ChType::parse("DateTime64(6, 'UTC')").unwrap().portable(),
            DataType::TimestampTz
        );
        assert_eq!(
            ChType::parse("DateTime").unwrap().portable(),
            DataType::Timestamp
        );
        assert_eq!(
            ChType::parse("LowCardinality(String)").unwrap(),
            ChType::String
        );
        assert_eq!(
            ChType::parse("Enum8('a' = 1, 'b\\'c' = -2)").unwrap(),
            ChType::Enum {
                wide: false,
                names: vec![(1, "a".into()), (-2, "b'c".into())]
            }
        );
        let err = ChType::parse("Array(Int32)").unwrap_err();
        assert!(err.message.contains("Array(Int32)"), "{err}");
    }

    #[test]
    fn row_binary_round_trips_every_mapped_type() {
        let cases = [
            ("Nullable(Int64)", Value::Int(i64::MIN + 1), DataType::Int64),
            ("Nullable(Int64)", Value::Null, DataType::Int64),
            ("UInt8", Value::Boolean(true), DataType::Boolean),
            (
                "Decimal(12, 3)",
                Value::Decimal("-12.500".into()),
                decimal(12, 3),
            ),
            (
                "Decimal(38, 4)",
                Value::Decimal("123456789012345.1200".into()),
                decimal(38, 4),
            ),
            (
                "String",
                Value::Text("žluť\t\n\u{1}'\\".into()),
                DataType::Text,
            ),
            ("String", Value::Bytes(vec![0, 255, 1]), DataType::Bytes),
            ("Date", Value::Date(19_723), DataType::Date),
            (
                "DateTime",
                Value::Timestamp(1_704_067_200 * MICROS),
                DataType::Timestamp,
            ),
            (
                "DateTime('UTC')",
                Value::TimestampTz(MICROS),
                DataType::TimestampTz,
            ),
            (
                "DateTime64(6, 'UTC')",
                Value::TimestampTz(1_234_567),
                DataType::TimestampTz,
            ),
            (
                "UUID",
                Value::Uuid("01234567-89ab-cdef-0123-456789abcdef".into()),
                DataType::Uuid,
            ),
        ];
        for (name, v, want) in cases {
            let t = ChType::parse(name).unwrap();
            let mut buf = Vec::new();
            write_value(&mut buf, &t, &v, "c").unwrap();
            let mut r = Reader { buf: &buf, pos: 0 };
            assert_eq!(r.value(&t, &want).unwrap(), Some(v.clone()), "{name}");
            assert_eq!(r.pos, buf.len());
            let mut short = Reader {
                buf: &buf[..buf.len() - 1],
                pos: 0,
            };
            assert_eq!(short.value(&t, &want).unwrap(), None, "{name} truncated");
        }
    }

    #[test]
    fn cells_read_straight_from_arrow_encode_as_their_values_do() {
        use crate::model::{Column, Schema, batch_of, value_at};
        // (target, portable type, values, whether every non-NULL value takes the typed path)
        let cases: Vec<(&str, DataType, Vec<Value>, bool)> = vec![
            ("Int16", DataType::Int16, vec![Value::Int(-7)], true),
            (
                "Int32",
                DataType::Int64,
                vec![Value::Int(7), Value::Int(1 << 40)],
                false,
            ),
            ("UInt8", DataType::Boolean, vec![Value::Boolean(true)], true),
            (
                "Nullable(Float32)",
                DataType::Float64,
                vec![Value::Float(0.1), Value::Null],
                true,
            ),
            ("Float64", DataType::Float32, vec![Value::Float(2.5)], true),
            (
                "Decimal(12, 2)",
                decimal(12, 2),
                vec![Value::Decimal("-12.50".into())],
                true,
            ),
            (
                "Decimal(12, 4)",
                decimal(12, 2),
                vec![Value::Decimal("99.01".into())],
                true,
            ),
            (
                "Decimal(5, 1)",
                decimal(12, 2),
                vec![
                    Value::Decimal("12.30".into()),
                    Value::Decimal("12.34".into()),
                ],
                false,
            ),
            (
                "Decimal(5, 2)",
                decimal(12, 2),
                vec![Value::Decimal("1234.50".into())],
                false,
            ),
            (
                "Decimal(38, 10)",
                DataType::Decimal(None),
                vec![Value::Decimal("1.5".into())],
                false,
            ),
            (
                "String",
                DataType::Decimal(None),
                vec![Value::Decimal("1.5".into())],
                true,
            ),
            (
                "Nullable(String)",
                DataType::Text,
                vec![Value::Text("ž".repeat(100)), Value::Null],
                true,
            ),
            (
                "String",
                DataType::Json,
                vec![Value::Json("{}".into())],
                true,
            ),
            (
                "String",
                DataType::Bytes,
                vec![Value::Bytes(vec![0, 255])],
                true,
            ),
            ("String", DataType::Text, vec![Value::Null], false),
            (
                "Date",
                DataType::Date,
                vec![Value::Date(19_723), Value::Date(-1)],
                false,
            ),
            (
                "DateTime('UTC')",
                DataType::TimestampTz,
                vec![Value::TimestampTz(MICROS)],
                true,
            ),
            (
                "DateTime",
                DataType::Timestamp,
                vec![Value::Timestamp(1)],
                false,
            ),
            (
                "DateTime64(3)",
                DataType::Timestamp,
                vec![Value::Timestamp(7_000)],
                true,
            ),
            (
                "Nullable(UUID)",
                DataType::Uuid,
                vec![
                    Value::Uuid("01234567-89ab-cdef-0123-456789abcdef".into()),
                    Value::Null,
                ],
                true,
            ),
            (
                "String",
                DataType::Uuid,
                vec![Value::Uuid("01234567-89ab-cdef-0123-456789abcdef".into())],
                false,
            ),
        ];
        for (name, portable, values, all_typed) in cases {
            let target = ChType::parse(name).unwrap();
            let schema = Schema {
                columns: vec![Column {
                    name: "c".into(),
                    data_type: portable,
                    nullable: true,
                }],
                primary_key: vec![],
            };
            let rows: Vec<Vec<Value>> = values.iter().map(|v| vec![v.clone()]).collect();
            let batch = batch_of(&schema, &rows).unwrap();
            let mut typed_all = true;
            for row in 0..batch.num_rows() {
                let mut fast = vec![9];
                let typed = write_cell(&mut fast, &target, batch.column(0), &portable, row);
                let mut slow = vec![9];
                let v = value_at(batch.column(0), &portable, row);
                let general = write_value(&mut slow, &target, &v, "c");
                if typed {
                    assert!(
                        general.is_ok(),
                        "{name} {v:?}: typed path took what the general one refuses"
                    );
                    assert_eq!(fast, slow, "{name} {v:?}");
                } else {
                    assert_eq!(fast, vec![9], "{name} {v:?}: appended although it declined");
                }
                typed_all &= typed;
            }
            assert_eq!(typed_all, all_typed, "{name} {portable:?}");
        }
    }

    #[test]
    fn the_uuid_layout_is_the_servers() {
        // What 18.16 sent for this UUID in RowBinary: two little-endian halves.
        let wire = [
            0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45,
            0x23, 0x01,
        ];
        let mut r = Reader { buf: &wire, pos: 0 };
        assert_eq!(
            r.value(&ChType::Uuid, &DataType::Uuid).unwrap(),
            Some(Value::Uuid("01234567-89ab-cdef-0123-456789abcdef".into()))
        );
    }

    #[test]
    fn refuses_values_the_column_cannot_hold_instead_of_changing_them() {
        let mut buf = Vec::new();
        let dt = ChType::DateTime { tz: false };
        let err =
            write_value(&mut buf, &dt, &Value::Timestamp(1_500_000), "updated_at").unwrap_err();
        assert!(
            err.message.contains("updated_at") && err.message.contains("whole seconds"),
            "{err}"
        );
        assert!(write_value(&mut buf, &ChType::Date, &Value::Date(-1), "day").is_err());
        let d = ChType::Decimal {
            precision: 5,
            scale: 2,
        };
        assert!(write_value(&mut buf, &d, &Value::Decimal("1234.5".into()), "x").is_err());
    }

    #[test]
    fn literals_escape_and_type_their_values() {
        let literal = |v: &Value, datetime64| literal(v, datetime64).unwrap();
        assert_eq!(
            literal(&Value::Text("a'b\\c\n".into()), false),
            "'a\\'b\\\\c\\n'"
        );
        assert_eq!(literal(&Value::Bytes(vec![0, 171]), false), "unhex('00AB')");
        assert_eq!(
            literal(&Value::Decimal("-1.50".into()), false),
            "toDecimal128('-1.50', 2)"
        );
        assert_eq!(literal(&Value::Date(0), false), "toDate('1970-01-01')");
        assert_eq!(
            literal(&Value::TimestampTz(86_400 * MICROS), false),
            "toDateTime(86400, 'UTC')"
        );
        // A fraction of a second is a DateTime64 where the server has it, else floored.
        assert_eq!(
            literal(&Value::Timestamp(-1_500_000), false),
            "toDateTime(-2)"
        );
        assert_eq!(
            literal(&Value::TimestampTz(1_500_000), true),
            "toDateTime64(toDecimal64('1.500000', 6), 6, 'UTC')"
        );
        assert_eq!(
            literal(
                &Value::Uuid("0e3c1d2a-0000-4000-8000-00000000abcd".into()),
                false
            ),
            "toUUID('0e3c1d2a-0000-4000-8000-00000000abcd')"
        );
        for bad in ["1e5", "1.", "-", "1.5'); DROP TABLE t; --", ""] {
            assert!(
                super::literal(&Value::Decimal(bad.into()), false).is_err(),
                "{bad}"
            );
        }
        for bad in [
            "0e3c1d2a",
            "0e3c1d2a-0000-4000-8000-00000000abc'",
            "zzzzzzzz-0000-4000-8000-000000000000",
        ] {
            assert!(
                super::literal(&Value::Uuid(bad.into()), false).is_err(),
                "{bad}"
            );
        }
        assert_eq!(native_type(&DataType::Timestamp, true), "DateTime64(6)");
        assert_eq!(
            native_type(&DataType::TimestampTz, false),
            "DateTime('UTC')"
        );
        assert!(
            ChType::parse("Decimal(76, 2)").is_err(),
            "Decimal256 is 32 bytes"
        );
        assert!(ChType::parse("DateTime64(18)").is_err());
        assert_eq!(unescape_tsv(b"a\\tb\\\\"), b"a\tb\\");
    }
}
