//! PostgreSQL's binary COPY format <-> Arrow record batches, and the per-value binary
//! codecs both the COPY paths and result decoding ([`super::types::decode_value`]) use, so
//! every type has exactly one decoder and one encoder.
//!
//! The format (<https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>): a
//! 19-byte header (`PGCOPY\n\xff\r\n\0`, i32 flags, i32 header-extension length), then per
//! row an i16 field count and per field an i32 length (-1 for NULL) and the value in the
//! type's binary send/receive format, then an i16 -1 trailer. All integers are big-endian.

use std::fmt;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::SchemaRef;
use bytes::{BufMut, BytesMut};

use super::types::PgType;
use crate::connectors::WireRows;
use crate::model::{self, BATCH_ROWS, DataType, Schema, arrow_type};

/// A value or stream that does not fit the binary format or the portable schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl CodecError {
    fn in_column(self, name: &str) -> CodecError {
        CodecError(format!("column `{name}`: {}", self.0))
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

type CResult<T> = std::result::Result<T, CodecError>;

fn err<T>(message: impl Into<String>) -> CResult<T> {
    Err(CodecError(message.into()))
}

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
const HEADER_LEN: usize = 19;
/// Header flag bit 16: every row carries an OID first (never for `COPY (query)`).
const FLAG_OIDS: u32 = 1 << 16;

/// PostgreSQL dates count days from 2000-01-01, portable dates from 1970-01-01.
pub const PG_EPOCH_DAYS: i32 = 10_957;
/// PostgreSQL timestamps count microseconds from 2000-01-01T00:00:00.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// The first byte of jsonb's binary form.
pub const JSONB_VERSION: u8 = 1;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// PostgreSQL's limit on a numeric's display scale.
const NUMERIC_DSCALE_MAX: usize = 0x3FFF;

// ---------------------------------------------------------------------------------------
// Per-value decoders (binary wire value -> Rust value).

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// `smallint`, `integer` or `bigint`, told apart by length.
pub fn int_from_pg(b: &[u8]) -> CResult<i64> {
    match b.len() {
        2 => Ok(be_i16(b).into()),
        4 => Ok(be_i32(b).into()),
        8 => Ok(i64::from_be_bytes(b.try_into().expect("length checked"))),
        n => err(format!("{n}-byte value is not an integer")),
    }
}

/// `real` or `double precision`, told apart by length.
pub fn float_from_pg(b: &[u8]) -> CResult<f64> {
    match b.len() {
        4 => Ok(f32::from_be_bytes(b.try_into().expect("length checked")).into()),
        8 => Ok(f64::from_be_bytes(b.try_into().expect("length checked"))),
        n => err(format!("{n}-byte value is not a float")),
    }
}

pub fn bool_from_pg(b: &[u8]) -> CResult<bool> {
    match b {
        [x] => Ok(*x != 0),
        _ => err(format!("{}-byte value is not a boolean", b.len())),
    }
}

pub fn text_from_pg(b: &[u8]) -> CResult<&str> {
    std::str::from_utf8(b).map_err(|e| CodecError(format!("text is not UTF-8: {e}")))
}

/// `json` (plain text) or `jsonb` (a version byte, then text). JSON text never starts with
/// byte 1, so the two are told apart without knowing the column's type.
pub fn json_from_pg(b: &[u8]) -> CResult<&str> {
    match b.split_first() {
        Some((&JSONB_VERSION, rest)) => text_from_pg(rest),
        _ => text_from_pg(b),
    }
}

pub fn uuid_from_pg(b: &[u8]) -> CResult<&[u8]> {
    if b.len() == 16 {
        Ok(b)
    } else {
        err(format!("{}-byte value is not a uuid", b.len()))
    }
}

/// Days since 1970-01-01.
pub fn date_from_pg(b: &[u8]) -> CResult<i32> {
    if b.len() != 4 {
        return err(format!("{}-byte value is not a date", b.len()));
    }
    match be_i32(b) {
        i32::MAX | i32::MIN => err("date `infinity` has no portable form"),
        d => d
            .checked_add(PG_EPOCH_DAYS)
            .ok_or_else(|| CodecError("date out of range".into())),
    }
}

/// Microseconds since 1970-01-01T00:00:00 (`timestamp`) or the Unix epoch (`timestamptz`).
pub fn timestamp_from_pg(b: &[u8]) -> CResult<i64> {
    if b.len() != 8 {
        return err(format!("{}-byte value is not a timestamp", b.len()));
    }
    match i64::from_be_bytes(b.try_into().expect("length checked")) {
        i64::MAX | i64::MIN => err("timestamp `infinity` has no portable form"),
        t => t
            .checked_add(PG_EPOCH_MICROS)
            .ok_or_else(|| CodecError("timestamp out of range".into())),
    }
}

pub fn date_to_pg(days: i32) -> CResult<i32> {
    days.checked_sub(PG_EPOCH_DAYS)
        .ok_or_else(|| CodecError(format!("date {days} out of range")))
}

pub fn timestamp_to_pg(micros: i64) -> CResult<i64> {
    micros
        .checked_sub(PG_EPOCH_MICROS)
        .ok_or_else(|| CodecError(format!("timestamp {micros} out of range")))
}

/// A binary numeric: i16 ndigits, i16 weight (of the first base-10000 digit), u16 sign,
/// u16 display scale, then ndigits base-10000 digits, most significant first.
struct Numeric<'a> {
    weight: i32,
    sign: u16,
    dscale: usize,
    digits: &'a [u8],
}

impl<'a> Numeric<'a> {
    fn parse(b: &'a [u8]) -> CResult<Self> {
        if b.len() < 8 {
            return err("truncated numeric");
        }
        let ndigits = usize::try_from(be_i16(b)).map_err(|_| CodecError("bad numeric".into()))?;
        let digits = &b[8..];
        if digits.len() != 2 * ndigits {
            return err("numeric length does not match its digit count");
        }
        Ok(Numeric {
            weight: be_i16(&b[2..]).into(),
            sign: be_u16(&b[4..]),
            dscale: be_u16(&b[6..]).into(),
            digits,
        })
    }

    fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }

    /// Digit `i` (0 = most significant); zero outside the stored digits.
    fn digit(&self, i: i64) -> u16 {
        match usize::try_from(i) {
            Ok(i) if i < self.ndigits() => be_u16(&self.digits[2 * i..]),
            _ => 0,
        }
    }

    fn special(&self) -> Option<&'static str> {
        match self.sign {
            NUMERIC_NAN => Some("NaN"),
            NUMERIC_PINF => Some("Infinity"),
            NUMERIC_NINF => Some("-Infinity"),
            _ => None,
        }
    }
}

fn push_digits(out: &mut String, d: u16, count: usize) {
    let all = [d / 1000, d / 100 % 10, d / 10 % 10, d % 10];
    for x in &all[..count] {
        out.push(char::from(b'0' + *x as u8));
    }
}

/// Appends PostgreSQL's own text for a binary numeric (`numeric_out`): the display scale
/// decides the fractional digits, so `12.500` stays `12.500`.
pub fn numeric_to_text(b: &[u8], out: &mut String) -> CResult<()> {
    let n = Numeric::parse(b)?;
    if let Some(text) = n.special() {
        out.push_str(text);
        return Ok(());
    }
    if n.sign != NUMERIC_POS && n.sign != NUMERIC_NEG {
        return err(format!("bad numeric sign {:#x}", n.sign));
    }
    if n.digits.chunks_exact(2).any(|d| be_u16(d) > 9999) {
        return err("bad numeric digit");
    }
    if n.sign == NUMERIC_NEG && n.ndigits() > 0 {
        out.push('-');
    }
    if n.weight < 0 {
        out.push('0');
    } else {
        let first = n.digit(0);
        let width = match first {
            0..=9 => 1,
            10..=99 => 2,
            100..=999 => 3,
            _ => 4,
        };
        let all = [first / 1000, first / 100 % 10, first / 10 % 10, first % 10];
        for x in &all[4 - width..] {
            out.push(char::from(b'0' + *x as u8));
        }
        for i in 1..=i64::from(n.weight) {
            push_digits(out, n.digit(i), 4);
        }
    }
    if n.dscale > 0 {
        out.push('.');
        let mut left = n.dscale;
        let mut i = i64::from(n.weight) + 1;
        while left > 0 {
            let take = left.min(4);
            push_digits(out, n.digit(i), take);
            left -= take;
            i += 1;
        }
    }
    Ok(())
}

/// 10^0 ..= 10^38, every power of ten an i128 holds.
const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// A binary numeric as an i128 scaled by `scale`; an error when it is NaN or infinite,
/// does not fit, or has non-zero digits past `scale`.
pub fn numeric_to_i128(b: &[u8], scale: i8) -> CResult<i128> {
    let n = Numeric::parse(b)?;
    if let Some(text) = n.special() {
        return err(format!("{text} does not fit a fixed-scale decimal"));
    }
    if n.ndigits() == 0 {
        return Ok(0);
    }
    let too_big = || CodecError("numeric value does not fit a 128-bit decimal".into());
    let mut acc: i128 = 0;
    for (g, d) in n.digits.chunks_exact(2).enumerate() {
        let d = i128::from(be_u16(d));
        if d == 0 {
            continue;
        }
        // The power of ten of this digit's last decimal place in the scaled integer.
        let e = 4 * (i64::from(n.weight) - g as i64) + i64::from(scale);
        let term = if e >= 0 {
            let f = usize::try_from(e)
                .ok()
                .and_then(|e| POW10.get(e))
                .ok_or_else(too_big)?;
            d.checked_mul(*f).ok_or_else(too_big)?
        } else {
            let f = POW10[e.unsigned_abs().min(4) as usize];
            if d % f != 0 {
                return err(format!(
                    "numeric value has more than {scale} fractional digits"
                ));
            }
            d / f
        };
        acc = acc.checked_add(term).ok_or_else(too_big)?;
    }
    Ok(if n.sign == NUMERIC_NEG { -acc } else { acc })
}

// ---------------------------------------------------------------------------------------
// Numeric encoding (text or scaled i128 -> binary numeric).

/// Header fields of a numeric being written; its base-10000 digits live in a scratch
/// vector the caller reuses, so encoding allocates nothing per value.
#[derive(Debug, Clone, Copy)]
struct NumericParts {
    weight: i16,
    sign: u16,
    dscale: u16,
}

fn ascii_value(digits: &[u8]) -> i16 {
    digits
        .iter()
        .fold(0i16, |v, d| v * 10 + i16::from(d - b'0'))
}

/// Base-10000 digits of `int.frac` (ASCII digits) into `groups`, normalized the way
/// PostgreSQL stores them: no leading or trailing zero digits, zero has none.
fn parts_from_digits(
    neg: bool,
    int: &[u8],
    frac: &[u8],
    dscale: usize,
    groups: &mut Vec<i16>,
) -> CResult<NumericParts> {
    groups.clear();
    let first = int.iter().position(|d| *d != b'0').unwrap_or(int.len());
    let int = &int[first..];
    let int_groups = int.len().div_ceil(4);
    if int_groups > 0 {
        let head = int.len() - (int_groups - 1) * 4;
        groups.push(ascii_value(&int[..head]));
        groups.extend(int[head..].chunks_exact(4).map(ascii_value));
    }
    let mut weight = int_groups as i64 - 1;
    for chunk in frac.chunks(4) {
        let mut v = ascii_value(chunk);
        for _ in chunk.len()..4 {
            v *= 10;
        }
        groups.push(v);
    }
    let lead = groups.iter().take_while(|g| **g == 0).count();
    if lead == groups.len() {
        groups.clear();
        weight = 0;
    } else {
        if lead > 0 {
            groups.drain(..lead);
            weight -= lead as i64;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
    }
    let weight =
        i16::try_from(weight).map_err(|_| CodecError("numeric value out of range".into()))?;
    if groups.len() > i16::MAX as usize || dscale > NUMERIC_DSCALE_MAX {
        return err("numeric value out of range");
    }
    let sign = if neg && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    };
    Ok(NumericParts {
        weight,
        sign,
        dscale: dscale as u16,
    })
}

/// Parses canonical decimal text (`-12.50`, `.5`, `7.`; `NaN`, `Infinity`, `-Infinity`).
fn parts_from_text(text: &str, groups: &mut Vec<i16>) -> CResult<NumericParts> {
    let t = text.trim();
    let mut special = |sign| {
        groups.clear();
        Ok(NumericParts {
            weight: 0,
            sign,
            dscale: 0,
        })
    };
    if t.eq_ignore_ascii_case("nan") {
        return special(NUMERIC_NAN);
    }
    if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("+infinity") {
        return special(NUMERIC_PINF);
    }
    if t.eq_ignore_ascii_case("-infinity") {
        return special(NUMERIC_NINF);
    }
    let (neg, body) = match t.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    let (int, frac) = match body.iter().position(|c| *c == b'.') {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, &[][..]),
    };
    if int.len() + frac.len() == 0 || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return err(format!("`{text}` is not a decimal number"));
    }
    parts_from_digits(neg, int, frac, frac.len(), groups)
}

/// Digits of an i128 scaled by `scale`. A stack buffer holds the digits and the zeros the
/// scale adds on either side (at most 39 digits + 127 zeros).
fn parts_from_i128(v: i128, scale: i8, groups: &mut Vec<i16>) -> NumericParts {
    const LEN: usize = 168;
    let mut buf = [b'0'; LEN];
    let mut u = v.unsigned_abs();
    let mut start = LEN;
    loop {
        start -= 1;
        buf[start] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    let result = if scale >= 0 {
        let frac_at = LEN - scale as usize;
        parts_from_digits(
            v < 0,
            &buf[start.min(frac_at)..frac_at],
            &buf[frac_at..],
            scale as usize,
            groups,
        )
    } else {
        // Negative scale: the digits are followed by -scale zeros.
        let n = LEN - start;
        buf.copy_within(start.., 0);
        buf[n..].fill(b'0');
        parts_from_digits(
            v < 0,
            &buf[..n + scale.unsigned_abs() as usize],
            &[],
            0,
            groups,
        )
    };
    result.expect("an i128 decimal is within numeric's range")
}

fn put_numeric(out: &mut impl BufMut, p: NumericParts, groups: &[i16]) {
    out.put_i16(groups.len() as i16);
    out.put_i16(p.weight);
    out.put_u16(p.sign);
    out.put_u16(p.dscale);
    for g in groups {
        out.put_i16(*g);
    }
}

fn put_numeric_field(out: &mut BytesMut, p: NumericParts, groups: &[i16]) {
    out.put_i32(8 + 2 * groups.len() as i32);
    put_numeric(out, p, groups);
}

/// Writes decimal text as a binary numeric (no length prefix); `groups` is scratch.
pub fn numeric_from_text(text: &str, groups: &mut Vec<i16>, out: &mut impl BufMut) -> CResult<()> {
    let p = parts_from_text(text, groups)?;
    put_numeric(out, p, groups);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Decoder: binary COPY stream -> Arrow batches.

/// 10^precision: the magnitude every value of a decimal of that precision stays below.
fn decimal_bound(precision: u8) -> i128 {
    POW10
        .get(usize::from(precision))
        .copied()
        .unwrap_or(i128::MAX)
}

/// A binary numeric as an i128 at `scale`, refused when its magnitude reaches `bound`
/// (see [`decimal_bound`]); `scratch` holds its text for the error.
fn fixed_decimal(v: &[u8], scale: i8, bound: i128, scratch: &mut String) -> CResult<i128> {
    let x = numeric_to_i128(v, scale)?;
    if x.unsigned_abs() >= bound.unsigned_abs() {
        scratch.clear();
        numeric_to_text(v, scratch)?;
        return err(format!(
            "{scratch} does not fit the column's decimal precision"
        ));
    }
    Ok(x)
}

/// One column's Arrow builder, chosen from its portable type.
#[derive(Debug)]
enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    /// `bound` is 10^precision: every value's magnitude must stay below it.
    Decimal {
        b: Decimal128Builder,
        scale: i8,
        bound: i128,
    },
    /// Unconstrained numerics keep their exact text.
    DecimalText(StringBuilder),
    Text(StringBuilder),
    Json(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Uuid(FixedSizeBinaryBuilder),
}

impl Builder {
    fn new(t: &DataType) -> Builder {
        let n = BATCH_ROWS;
        match t {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(n)),
            DataType::Int16 => Builder::I16(Int16Builder::with_capacity(n)),
            DataType::Int32 => Builder::I32(Int32Builder::with_capacity(n)),
            DataType::Int64 => Builder::I64(Int64Builder::with_capacity(n)),
            DataType::Float32 => Builder::F32(Float32Builder::with_capacity(n)),
            DataType::Float64 => Builder::F64(Float64Builder::with_capacity(n)),
            DataType::Decimal(Some(d)) => Builder::Decimal {
                b: Decimal128Builder::with_capacity(n).with_data_type(arrow_type(t)),
                scale: d.scale,
                bound: decimal_bound(d.precision),
            },
            DataType::Decimal(None) => Builder::DecimalText(StringBuilder::with_capacity(n, n * 8)),
            DataType::Text => Builder::Text(StringBuilder::with_capacity(n, n * 16)),
            DataType::Json => Builder::Json(StringBuilder::with_capacity(n, n * 32)),
            DataType::Bytes => Builder::Bytes(BinaryBuilder::with_capacity(n, n * 16)),
            DataType::Date => Builder::Date(Date32Builder::with_capacity(n)),
            DataType::Timestamp | DataType::TimestampTz => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(n).with_data_type(arrow_type(t)),
            ),
            DataType::Uuid => Builder::Uuid(FixedSizeBinaryBuilder::with_capacity(n, 16)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Decimal { b, .. } => b.append_null(),
            Builder::DecimalText(b) | Builder::Text(b) | Builder::Json(b) => b.append_null(),
            Builder::Bytes(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Uuid(b) => b.append_null(),
        }
    }

    /// Appends one binary value. Integer and float columns accept every width of their
    /// family (range-checked), so a query that yields `integer` where the schema says
    /// `int64` still reads.
    fn append(&mut self, v: &[u8], scratch: &mut String) -> CResult<()> {
        let range = |what: &str| CodecError(format!("value out of range for {what}"));
        match self {
            Builder::Bool(b) => b.append_value(bool_from_pg(v)?),
            Builder::I16(b) => {
                b.append_value(i16::try_from(int_from_pg(v)?).map_err(|_| range("int16"))?)
            }
            Builder::I32(b) => {
                b.append_value(i32::try_from(int_from_pg(v)?).map_err(|_| range("int32"))?)
            }
            Builder::I64(b) => b.append_value(int_from_pg(v)?),
            Builder::F32(b) => match v.len() {
                4 => b.append_value(f32::from_be_bytes(v.try_into().expect("length checked"))),
                _ => return err(format!("{}-byte value is not a real", v.len())),
            },
            Builder::F64(b) => b.append_value(float_from_pg(v)?),
            Builder::Decimal { b, scale, bound } => {
                b.append_value(fixed_decimal(v, *scale, *bound, scratch)?)
            }
            Builder::DecimalText(b) => {
                scratch.clear();
                numeric_to_text(v, scratch)?;
                b.append_value(scratch.as_str());
            }
            Builder::Text(b) => b.append_value(text_from_pg(v)?),
            Builder::Json(b) => b.append_value(json_from_pg(v)?),
            Builder::Bytes(b) => b.append_value(v),
            Builder::Date(b) => b.append_value(date_from_pg(v)?),
            Builder::Timestamp(b) => b.append_value(timestamp_from_pg(v)?),
            Builder::Uuid(b) => b
                .append_value(uuid_from_pg(v)?)
                .map_err(|e| CodecError(e.to_string()))?,
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Decimal { b, .. } => Arc::new(b.finish()),
            Builder::DecimalText(b) | Builder::Text(b) | Builder::Json(b) => Arc::new(b.finish()),
            Builder::Bytes(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Uuid(b) => Arc::new(b.finish()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Rows,
    Done,
}

/// Incremental decoder of a binary COPY stream into batches of a portable schema.
///
/// Input may arrive in chunks of any size; a row split across chunks is kept until it is
/// complete. Batches hold [`BATCH_ROWS`] rows, the last one the remainder.
#[derive(Debug)]
pub struct CopyDecoder {
    schema: SchemaRef,
    types: Vec<DataType>,
    names: Vec<String>,
    builders: Vec<Builder>,
    /// (offset in the row, length or -1) of each field of the row being decoded.
    fields: Vec<(usize, i32)>,
    /// Bytes of an incomplete header or row.
    pending: Vec<u8>,
    state: State,
    rows: usize,
    scratch: String,
}

impl CopyDecoder {
    pub fn new(schema: &Schema) -> CopyDecoder {
        let types: Vec<DataType> = schema.columns.iter().map(|c| c.data_type).collect();
        CopyDecoder {
            schema: schema.to_arrow(),
            builders: types.iter().map(Builder::new).collect(),
            types,
            names: schema.names(),
            fields: Vec::with_capacity(schema.columns.len()),
            pending: Vec::new(),
            state: State::Header,
            rows: 0,
            scratch: String::new(),
        }
    }

    /// Consumes the next chunk of the stream, pushing every batch it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<RecordBatch>) -> CResult<()> {
        let mut pending = std::mem::take(&mut self.pending);
        let fed = feed_units(&mut pending, chunk, |buf| self.parse(buf, out));
        self.pending = pending;
        fed
    }

    /// Ends the stream: the last, partial batch, if any rows remain. An error when the
    /// stream stopped before its trailer.
    pub fn finish(mut self) -> CResult<Option<RecordBatch>> {
        if self.state != State::Done || !self.pending.is_empty() {
            return err("COPY data ended in the middle of the stream");
        }
        if self.rows == 0 {
            Ok(None)
        } else {
            self.flush().map(Some)
        }
    }

    fn flush(&mut self) -> CResult<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        // A finished builder starts again without capacity: size it for the next batch.
        self.builders = self.types.iter().map(Builder::new).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| CodecError(e.to_string()))
    }

    /// Decodes every complete unit in `buf`; returns the bytes consumed.
    fn parse(&mut self, buf: &[u8], out: &mut Vec<RecordBatch>) -> CResult<usize> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match next_unit(&mut self.state, rest, self.builders.len(), &mut self.fields)? {
                Unit::Incomplete => return Ok(pos),
                Unit::Framing(n) => pos += n,
                Unit::Row(n) => {
                    for (i, &(off, len)) in self.fields.iter().enumerate() {
                        let b = &mut self.builders[i];
                        if len < 0 {
                            b.append_null();
                        } else {
                            b.append(&rest[off..off + len as usize], &mut self.scratch)
                                .map_err(|e| e.in_column(&self.names[i]))?;
                        }
                    }
                    pos += n;
                    self.rows += 1;
                    if self.rows == BATCH_ROWS {
                        out.push(self.flush()?);
                    }
                }
            }
        }
    }
}

/// Passes `chunk` to `parse` (which returns the bytes of the whole units it used) after
/// the incomplete unit `pending` kept from earlier chunks, and keeps the new remainder.
fn feed_units(
    pending: &mut Vec<u8>,
    chunk: &[u8],
    mut parse: impl FnMut(&[u8]) -> CResult<usize>,
) -> CResult<()> {
    if pending.is_empty() {
        // The usual case (the server sends one message per row): no copying.
        let used = parse(chunk)?;
        pending.extend_from_slice(&chunk[used..]);
    } else {
        pending.extend_from_slice(chunk);
        let used = parse(pending)?;
        pending.drain(..used);
    }
    Ok(())
}

/// What starts a buffer of a binary COPY stream.
enum Unit {
    /// Not enough bytes for the next unit yet.
    Incomplete,
    /// The header or the trailer, this many bytes.
    Framing(usize),
    /// A complete row of this many bytes; its fields are in the `fields` passed.
    Row(usize),
}

/// Finds the unit at the start of `rest` and advances `state` past a header or trailer.
/// For a row of `columns` fields, `fields` receives the (offset in the row, length or -1)
/// of each. The decoder and the forwarder share it, so both read the same framing.
fn next_unit(
    state: &mut State,
    rest: &[u8],
    columns: usize,
    fields: &mut Vec<(usize, i32)>,
) -> CResult<Unit> {
    match state {
        State::Header => {
            if rest.len() < HEADER_LEN {
                return Ok(Unit::Incomplete);
            }
            if &rest[..11] != SIGNATURE {
                return err("not a binary COPY stream");
            }
            if be_i32(&rest[11..]) as u32 & FLAG_OIDS != 0 {
                return err("COPY rows with OIDs are not supported");
            }
            let ext = usize::try_from(be_i32(&rest[15..]))
                .map_err(|_| CodecError("bad COPY header".into()))?;
            if rest.len() < HEADER_LEN + ext {
                return Ok(Unit::Incomplete);
            }
            *state = State::Rows;
            Ok(Unit::Framing(HEADER_LEN + ext))
        }
        State::Rows => {
            if rest.len() < 2 {
                return Ok(Unit::Incomplete);
            }
            let count = be_i16(rest);
            if count == -1 {
                *state = State::Done;
                return Ok(Unit::Framing(2));
            }
            if count as usize != columns {
                return err(format!(
                    "COPY row has {count} fields, the schema has {columns} columns"
                ));
            }
            // Find every field first: a row is used only once it is complete.
            fields.clear();
            let mut at = 2;
            for _ in 0..count {
                if rest.len() < at + 4 {
                    return Ok(Unit::Incomplete);
                }
                let len = be_i32(&rest[at..]);
                at += 4;
                if len >= 0 {
                    if rest.len() < at + len as usize {
                        return Ok(Unit::Incomplete);
                    }
                    fields.push((at, len));
                    at += len as usize;
                } else if len == -1 {
                    fields.push((at, -1));
                } else {
                    return err(format!("bad COPY field length {len}"));
                }
            }
            Ok(Unit::Row(at))
        }
        State::Done if rest.is_empty() => Ok(Unit::Incomplete),
        State::Done => err("data after the COPY trailer"),
    }
}

// ---------------------------------------------------------------------------------------
// Forwarder: binary COPY stream -> the same rows, undecoded.

/// Passes the rows of a binary COPY stream through without decoding them, for a staging
/// table whose columns have the source's types: chunks of whole rows (no header, no
/// trailer) of about `chunk_bytes`, each with its row count and the largest value of the
/// cursor column.
///
/// Contract: a forwarded stream fails where [`CopyDecoder`] would on the same rows. The
/// values a column of the source's own type holds that have no portable form are checked
/// ([`check_forwarded`]); the cursor column is decoded as the decoder decodes it, so its
/// maximum is the same value.
#[derive(Debug)]
pub struct CopyForwarder {
    names: Vec<String>,
    /// The columns whose values may lack a portable form, and their types.
    checked: Vec<(usize, DataType)>,
    /// The cursor column's index, type and builder.
    cursor: Option<(usize, DataType, Builder)>,
    chunk_bytes: usize,
    state: State,
    fields: Vec<(usize, i32)>,
    pending: Vec<u8>,
    out: BytesMut,
    rows: u64,
    scratch: String,
}

impl CopyForwarder {
    /// Rows of `schema`; `cursor` is the index of the column whose maximum each chunk
    /// reports.
    pub fn new(schema: &Schema, cursor: Option<usize>, chunk_bytes: usize) -> CopyForwarder {
        let types: Vec<DataType> = schema.columns.iter().map(|c| c.data_type).collect();
        CopyForwarder {
            names: schema.names(),
            checked: types
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    matches!(
                        t,
                        DataType::Date
                            | DataType::Timestamp
                            | DataType::TimestampTz
                            | DataType::Decimal(Some(_))
                    )
                })
                .map(|(i, t)| (i, *t))
                .collect(),
            cursor: cursor.map(|i| (i, types[i], Builder::new(&types[i]))),
            chunk_bytes,
            state: State::Header,
            fields: Vec::with_capacity(types.len()),
            pending: Vec::new(),
            out: BytesMut::with_capacity(chunk_bytes + chunk_bytes / 4),
            rows: 0,
            scratch: String::new(),
        }
    }

    /// Consumes the next chunk of the stream, pushing every full chunk of rows to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<WireRows>) -> CResult<()> {
        let mut pending = std::mem::take(&mut self.pending);
        let fed = feed_units(&mut pending, chunk, |buf| self.parse(buf, out));
        self.pending = pending;
        fed
    }

    /// Ends the stream: the last rows, if any. An error when the stream stopped before
    /// its trailer.
    pub fn finish(mut self) -> CResult<Option<WireRows>> {
        if self.state != State::Done || !self.pending.is_empty() {
            return err("COPY data ended in the middle of the stream");
        }
        Ok((self.rows > 0).then(|| self.take()))
    }

    fn take(&mut self) -> WireRows {
        let mut max_cursor = None;
        if let Some((_, t, builder)) = &mut self.cursor {
            let values = builder.finish();
            *builder = Builder::new(t);
            for row in 0..values.len() {
                model::keep_max(&mut max_cursor, &model::value_at(&values, t, row));
            }
        }
        let rows = std::mem::take(&mut self.rows);
        WireRows {
            bytes: self.out.split().freeze(),
            rows,
            max_cursor,
        }
    }

    fn parse(&mut self, buf: &[u8], out: &mut Vec<WireRows>) -> CResult<usize> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match next_unit(&mut self.state, rest, self.names.len(), &mut self.fields)? {
                Unit::Incomplete => return Ok(pos),
                Unit::Framing(n) => pos += n,
                Unit::Row(n) => {
                    let field = |i: usize| {
                        let (off, len) = self.fields[i];
                        (len >= 0).then(|| &rest[off..off + len as usize])
                    };
                    for &(i, t) in &self.checked {
                        if let Some(v) = field(i) {
                            check_forwarded(&t, v, &mut self.scratch)
                                .map_err(|e| e.in_column(&self.names[i]))?;
                        }
                    }
                    if let Some((i, _, builder)) = &mut self.cursor {
                        match field(*i) {
                            Some(v) => builder
                                .append(v, &mut self.scratch)
                                .map_err(|e| e.in_column(&self.names[*i]))?,
                            None => builder.append_null(),
                        }
                    }
                    self.out.extend_from_slice(&rest[..n]);
                    pos += n;
                    self.rows += 1;
                    if self.out.len() >= self.chunk_bytes {
                        out.push(self.take());
                    }
                }
            }
        }
    }
}

/// Refuses a value, held by a PostgreSQL column of portable type `t`, that has no
/// portable form and so fails [`CopyDecoder`]: an infinite date or timestamp, a special
/// numeric or one past the precision of a fixed-scale decimal. Every other type's values
/// all have one.
fn check_forwarded(t: &DataType, v: &[u8], scratch: &mut String) -> CResult<()> {
    match t {
        DataType::Date => date_from_pg(v).map(drop),
        DataType::Timestamp | DataType::TimestampTz => timestamp_from_pg(v).map(drop),
        DataType::Decimal(Some(d)) => {
            fixed_decimal(v, d.scale, decimal_bound(d.precision), scratch).map(drop)
        }
        _ => Ok(()),
    }
}

/// Appends the header of a binary COPY stream.
pub fn put_header(out: &mut BytesMut) {
    out.put_slice(SIGNATURE);
    out.put_i32(0);
    out.put_i32(0);
}

/// Appends the trailer of a binary COPY stream.
pub fn put_trailer(out: &mut BytesMut) {
    out.put_i16(-1);
}

// ---------------------------------------------------------------------------------------
// Encoder: Arrow batches -> binary COPY stream.

/// Whether values of portable type `from` can be written into a column of family `to`
/// exactly (integers and float narrowing are range-checked per value).
fn writable(from: &DataType, to: PgType) -> bool {
    use PgType as P;
    matches!(
        (from, to),
        (DataType::Boolean, P::Bool)
            | (
                DataType::Int16 | DataType::Int32 | DataType::Int64,
                P::Int2 | P::Int4 | P::Int8 | P::Numeric
            )
            | (DataType::Float32 | DataType::Float64, P::Float4 | P::Float8)
            | (DataType::Decimal(_), P::Numeric)
            | (DataType::Text, P::Text | P::Json | P::Jsonb)
            | (DataType::Json, P::Json | P::Jsonb | P::Text)
            | (DataType::Bytes, P::Bytea)
            | (DataType::Date, P::Date)
            | (
                DataType::Timestamp | DataType::TimestampTz,
                P::Timestamp | P::TimestampTz
            )
            | (DataType::Uuid, P::Uuid)
    )
}

#[derive(Debug)]
struct EncodeColumn {
    name: String,
    portable: DataType,
    target: PgType,
}

/// Encodes batches of a portable schema as a binary COPY stream for a table whose columns
/// have the given native types.
///
/// The target types matter because binary COPY is strict: a `bigint` value cannot be sent
/// to an `integer` column, and `jsonb` expects a version byte `json` does not. A naive
/// `timestamp` written to a `timestamptz` column (or the reverse) is taken as UTC.
#[derive(Debug)]
pub struct CopyEncoder {
    columns: Vec<EncodeColumn>,
    header_written: bool,
    groups: Vec<i16>,
}

/// One batch column, downcast once per batch.
enum Source<'a> {
    Bool(&'a BooleanArray),
    I16(&'a Int16Array, PgType),
    I32(&'a Int32Array, PgType),
    I64(&'a Int64Array, PgType),
    F32(&'a Float32Array, PgType),
    F64(&'a Float64Array, PgType),
    Decimal(&'a Decimal128Array, i8),
    DecimalText(&'a StringArray),
    /// `true` when the target is `jsonb`.
    Text(&'a StringArray, bool),
    Bytes(&'a BinaryArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray),
    Uuid(&'a FixedSizeBinaryArray),
}

impl CopyEncoder {
    /// `targets[i]` is the native type of the target column written from `schema`'s
    /// column `i`.
    pub fn new(schema: &Schema, targets: &[PgType]) -> CResult<CopyEncoder> {
        if targets.len() != schema.columns.len() {
            return err("target column count differs from the schema");
        }
        let mut columns = Vec::with_capacity(targets.len());
        for (c, &target) in schema.columns.iter().zip(targets) {
            if !writable(&c.data_type, target) {
                return err(format!(
                    "column `{}`: cannot write {:?} values into a PostgreSQL {} column",
                    c.name,
                    c.data_type,
                    target.name()
                ));
            }
            columns.push(EncodeColumn {
                name: c.name.clone(),
                portable: c.data_type,
                target,
            });
        }
        Ok(CopyEncoder {
            columns,
            header_written: false,
            groups: Vec::new(),
        })
    }

    fn header(&mut self, out: &mut BytesMut) {
        if !self.header_written {
            put_header(out);
            self.header_written = true;
        }
    }

    /// Appends the rows of `batch` (the stream header first, once).
    pub fn encode(&mut self, batch: &RecordBatch, out: &mut BytesMut) -> CResult<()> {
        self.header(out);
        if batch.num_columns() != self.columns.len() {
            return err(format!(
                "batch has {} columns, the schema has {}",
                batch.num_columns(),
                self.columns.len()
            ));
        }
        let rows = batch.num_rows();
        let mut sources = Vec::with_capacity(self.columns.len());
        let mut estimate = rows * (2 + 4 * self.columns.len());
        for (c, array) in self.columns.iter().zip(batch.columns()) {
            let (source, bytes) =
                downcast(c, array.as_ref(), rows).map_err(|e| e.in_column(&c.name))?;
            sources.push(source);
            estimate += bytes;
        }
        out.reserve(estimate);
        let groups = &mut self.groups;
        for row in 0..rows {
            out.put_i16(sources.len() as i16);
            for (i, source) in sources.iter().enumerate() {
                put_value(source, row, out, groups)
                    .map_err(|e| e.in_column(&self.columns[i].name))?;
            }
        }
        Ok(())
    }

    /// Ends the stream with its trailer.
    pub fn finish(&mut self, out: &mut BytesMut) {
        self.header(out);
        put_trailer(out);
    }
}

/// The typed view of one batch column, and about how many bytes its values take.
fn downcast<'a>(
    c: &EncodeColumn,
    array: &'a dyn Array,
    rows: usize,
) -> CResult<(Source<'a>, usize)> {
    fn get<'a, T: 'static>(array: &'a dyn Array, c: &EncodeColumn) -> CResult<&'a T> {
        array.as_any().downcast_ref::<T>().ok_or_else(|| {
            CodecError(format!(
                "batch column is {}, the schema says {:?}",
                array.data_type(),
                c.portable
            ))
        })
    }
    let text_bytes = |a: &StringArray| {
        let o = a.value_offsets();
        (o[o.len() - 1] - o[0]) as usize
    };
    let t = c.target;
    Ok(match &c.portable {
        DataType::Boolean => (Source::Bool(get(array, c)?), rows),
        DataType::Int16 => (Source::I16(get(array, c)?, t), rows * 8),
        DataType::Int32 => (Source::I32(get(array, c)?, t), rows * 8),
        DataType::Int64 => (Source::I64(get(array, c)?, t), rows * 8),
        DataType::Float32 => (Source::F32(get(array, c)?, t), rows * 8),
        DataType::Float64 => (Source::F64(get(array, c)?, t), rows * 8),
        DataType::Decimal(Some(_)) => {
            let a: &Decimal128Array = get(array, c)?;
            (Source::Decimal(a, a.scale()), rows * 24)
        }
        DataType::Decimal(None) => {
            let a: &StringArray = get(array, c)?;
            (Source::DecimalText(a), rows * 8 + text_bytes(a))
        }
        DataType::Text | DataType::Json => {
            let a: &StringArray = get(array, c)?;
            (Source::Text(a, t == PgType::Jsonb), rows + text_bytes(a))
        }
        DataType::Bytes => {
            let a: &BinaryArray = get(array, c)?;
            let o = a.value_offsets();
            (Source::Bytes(a), (o[o.len() - 1] - o[0]) as usize)
        }
        DataType::Date => (Source::Date(get(array, c)?), rows * 4),
        DataType::Timestamp | DataType::TimestampTz => {
            (Source::Timestamp(get(array, c)?), rows * 8)
        }
        DataType::Uuid => {
            let a: &FixedSizeBinaryArray = get(array, c)?;
            if a.value_length() != 16 {
                return err(format!("batch column is {}, not a uuid", a.data_type()));
            }
            (Source::Uuid(a), rows * 16)
        }
    })
}

fn put_int(v: i64, target: PgType, out: &mut BytesMut, groups: &mut Vec<i16>) -> CResult<()> {
    let range = || CodecError(format!("{v} is out of range for {}", target.name()));
    match target {
        PgType::Int2 => {
            out.put_i32(2);
            out.put_i16(i16::try_from(v).map_err(|_| range())?);
        }
        PgType::Int4 => {
            out.put_i32(4);
            out.put_i32(i32::try_from(v).map_err(|_| range())?);
        }
        PgType::Numeric => {
            let p = parts_from_i128(v.into(), 0, groups);
            put_numeric_field(out, p, groups);
        }
        _ => {
            out.put_i32(8);
            out.put_i64(v);
        }
    }
    Ok(())
}

fn put_float(v: f64, target: PgType, out: &mut BytesMut) -> CResult<()> {
    if target == PgType::Float4 {
        let f = v as f32;
        if f.is_infinite() && v.is_finite() {
            return err(format!("{v} is out of range for real"));
        }
        out.put_i32(4);
        out.put_f32(f);
    } else {
        out.put_i32(8);
        out.put_f64(v);
    }
    Ok(())
}

#[inline]
fn put_value(
    source: &Source<'_>,
    row: usize,
    out: &mut BytesMut,
    groups: &mut Vec<i16>,
) -> CResult<()> {
    macro_rules! null_check {
        ($a:expr) => {
            if $a.is_null(row) {
                out.put_i32(-1);
                return Ok(());
            }
        };
    }
    match source {
        Source::Bool(a) => {
            null_check!(a);
            out.put_i32(1);
            out.put_u8(u8::from(a.value(row)));
        }
        Source::I16(a, t) => {
            null_check!(a);
            put_int(a.value(row).into(), *t, out, groups)?;
        }
        Source::I32(a, t) => {
            null_check!(a);
            put_int(a.value(row).into(), *t, out, groups)?;
        }
        Source::I64(a, t) => {
            null_check!(a);
            put_int(a.value(row), *t, out, groups)?;
        }
        Source::F32(a, t) => {
            null_check!(a);
            put_float(a.value(row).into(), *t, out)?;
        }
        Source::F64(a, t) => {
            null_check!(a);
            put_float(a.value(row), *t, out)?;
        }
        Source::Decimal(a, scale) => {
            null_check!(a);
            let p = parts_from_i128(a.value(row), *scale, groups);
            put_numeric_field(out, p, groups);
        }
        Source::DecimalText(a) => {
            null_check!(a);
            let p = parts_from_text(a.value(row), groups)?;
            put_numeric_field(out, p, groups);
        }
        Source::Text(a, jsonb) => {
            null_check!(a);
            let v = a.value(row).as_bytes();
            if *jsonb {
                out.put_i32(v.len() as i32 + 1);
                out.put_u8(JSONB_VERSION);
            } else {
                out.put_i32(v.len() as i32);
            }
            out.put_slice(v);
        }
        Source::Bytes(a) => {
            null_check!(a);
            let v = a.value(row);
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
        Source::Date(a) => {
            null_check!(a);
            out.put_i32(4);
            out.put_i32(date_to_pg(a.value(row))?);
        }
        Source::Timestamp(a) => {
            null_check!(a);
            out.put_i32(8);
            out.put_i64(timestamp_to_pg(a.value(row))?);
        }
        Source::Uuid(a) => {
            null_check!(a);
            out.put_i32(16);
            out.put_slice(a.value(row));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, DecimalSpec, Value, rows_of};

    fn col(name: &str, data_type: DataType) -> Column {
        Column {
            name: name.into(),
            data_type,
            nullable: true,
        }
    }

    fn numeric_bytes(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        numeric_from_text(text, &mut Vec::new(), &mut out).unwrap();
        out
    }

    fn numeric_text(b: &[u8]) -> String {
        let mut s = String::new();
        numeric_to_text(b, &mut s).unwrap();
        s
    }

    #[test]
    fn numeric_binary_matches_postgres_layout() {
        // (text, ndigits, weight, sign, dscale, digits) as `numeric_send` writes them.
        type Case = (&'static str, i16, i16, u16, u16, &'static [i16]);
        let cases: [Case; 8] = [
            ("12.500", 2, 0, 0, 3, &[12, 5000]),
            ("0.005", 1, -1, 0, 3, &[50]),
            ("-0.00001", 1, -2, 0x4000, 5, &[1000]),
            ("0", 0, 0, 0, 0, &[]),
            ("-0.00", 0, 0, 0, 2, &[]),
            ("100000000", 1, 2, 0, 0, &[1]),
            ("12345.6789", 3, 1, 0, 4, &[1, 2345, 6789]),
            ("NaN", 0, 0, 0xC000, 0, &[]),
        ];
        for (text, nd, weight, sign, dscale, digits) in cases {
            let b = numeric_bytes(text);
            let n = Numeric::parse(&b).unwrap();
            let got: Vec<i16> = n.digits.chunks_exact(2).map(be_i16).collect();
            assert_eq!(got.len() as i16, nd, "{text}");
            assert_eq!(
                (n.weight as i16, n.sign, n.dscale as u16),
                (weight, sign, dscale),
                "{text}"
            );
            assert_eq!(got, digits, "{text}");
        }
    }

    #[test]
    fn numeric_text_round_trips() {
        for text in [
            "0",
            "0.0",
            "12.500",
            "-12.500",
            "0.005",
            "0.0001",
            "-0.0001",
            "1",
            "10000",
            "9999",
            "99999999999999999999999999999999999999",
            "-1234567890123456789.0123456789012345678",
            "1.5",
            "123456789.000000001",
            "NaN",
            "Infinity",
            "-Infinity",
            "0.00000000000001",
        ] {
            assert_eq!(numeric_text(&numeric_bytes(text)), text);
        }
        assert_eq!(numeric_text(&numeric_bytes("-0.000")), "0.000");
        assert_eq!(numeric_text(&numeric_bytes("+007.50")), "7.50");
        assert_eq!(numeric_text(&numeric_bytes(".5")), "0.5");
        for bad in ["", "-", ".", "1e5", "1.2.3", "abc", "1 2"] {
            assert!(parts_from_text(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numeric_to_i128_rescales() {
        assert_eq!(numeric_to_i128(&numeric_bytes("12.5"), 3), Ok(12_500));
        assert_eq!(numeric_to_i128(&numeric_bytes("-0.005"), 3), Ok(-5));
        assert_eq!(numeric_to_i128(&numeric_bytes("12.500"), 1), Ok(125));
        assert_eq!(numeric_to_i128(&numeric_bytes("0"), 38), Ok(0));
        assert_eq!(
            numeric_to_i128(&numeric_bytes("100000000"), 0),
            Ok(100_000_000)
        );
        let max = "99999999999999999999999999999999999999";
        assert_eq!(
            numeric_to_i128(&numeric_bytes(max), 0),
            Ok(max.parse().unwrap())
        );
        assert!(numeric_to_i128(&numeric_bytes("12.55"), 1).is_err());
        assert!(numeric_to_i128(&numeric_bytes("NaN"), 1).is_err());
        assert!(numeric_to_i128(&numeric_bytes("1000"), 37).is_err());
    }

    #[test]
    fn i128_numerics_match_their_text() {
        let mut groups = Vec::new();
        for (v, scale) in [
            (0i128, 0i8),
            (0, 3),
            (12_500, 3),
            (-12_500, 3),
            (5, 3),
            (1, 4),
            (-1, 10),
            (i128::from(i64::MAX), 0),
            (10i128.pow(38) - 1, 0),
            (-(10i128.pow(38) - 1), 38),
            (10i128.pow(38) - 1, 19),
            (42, -3),
        ] {
            let p = parts_from_i128(v, scale, &mut groups);
            let mut b = Vec::new();
            put_numeric(&mut b, p, &groups);
            let text = if scale < 0 {
                format!("{v}{}", "0".repeat(scale.unsigned_abs() as usize))
            } else {
                crate::model::decimal_text(v, scale)
            };
            assert_eq!(numeric_text(&b), text, "{v} scale {scale}");
            if scale >= 0 {
                assert_eq!(numeric_to_i128(&b, scale), Ok(v));
            }
        }
    }

    fn all_types_schema() -> Schema {
        let dec = |precision, scale| DataType::Decimal(Some(DecimalSpec { precision, scale }));
        Schema {
            columns: vec![
                col("b", DataType::Boolean),
                col("i16", DataType::Int16),
                col("i32", DataType::Int32),
                col("i64", DataType::Int64),
                col("f32", DataType::Float32),
                col("f64", DataType::Float64),
                col("d", dec(12, 3)),
                col("d38", dec(38, 0)),
                col("dn", DataType::Decimal(None)),
                col("t", DataType::Text),
                col("by", DataType::Bytes),
                col("dt", DataType::Date),
                col("ts", DataType::Timestamp),
                col("tz", DataType::TimestampTz),
                col("u", DataType::Uuid),
                col("j", DataType::Json),
            ],
            primary_key: vec![],
        }
    }

    /// Rows of edge values, one `Vec<Value>` per row, for `all_types_schema`.
    fn edge_rows() -> Vec<Vec<Value>> {
        let text = |s: &str| Value::Text(s.into());
        let dec = |s: &str| Value::Decimal(s.into());
        let big = "99999999999999999999999999999999999999";
        vec![
            vec![
                Value::Boolean(true),
                Value::Int(i16::MIN.into()),
                Value::Int(i32::MIN.into()),
                Value::Int(i64::MIN),
                Value::Float(-1.5),
                Value::Float(f64::MIN_POSITIVE),
                dec("-12.500"),
                dec(big),
                dec("-0.0001"),
                text("héllo ✓ \u{1F600}"),
                Value::Bytes(vec![0, 1, 2, 255]),
                Value::Date(-719_162),
                Value::Timestamp(-1),
                Value::TimestampTz(1_700_000_000_123_456),
                Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
                Value::Json(r#"{"a": [1, "x"]}"#.into()),
            ],
            vec![
                Value::Boolean(false),
                Value::Int(i16::MAX.into()),
                Value::Int(i32::MAX.into()),
                Value::Int(i64::MAX),
                Value::Float(f64::from(f32::MAX)),
                Value::Float(f64::INFINITY),
                dec("0.000"),
                dec(&format!("-{big}")),
                dec("123456789012345678901234567890123456789012345.000100"),
                text(""),
                Value::Bytes(vec![]),
                Value::Date(-1),
                Value::Timestamp(-946_684_800_000_001),
                Value::TimestampTz(0),
                Value::Uuid("00000000-0000-0000-0000-000000000000".into()),
                Value::Json("null".into()),
            ],
            vec![Value::Null; 16],
            vec![
                Value::Boolean(true),
                Value::Int(0),
                Value::Int(0),
                Value::Int(0),
                Value::Float(0.0),
                Value::Float(-0.0),
                dec("0.005"),
                dec("0"),
                dec("NaN"),
                text("tab\tnl\ncr\r\u{0}\u{1}\\ \"q\" 'q'"),
                Value::Bytes(b"\\x00".to_vec()),
                Value::Date(10_957),
                Value::Timestamp(946_684_800_000_000),
                Value::TimestampTz(-62_135_596_800_000_000),
                Value::Uuid("ffffffff-ffff-ffff-ffff-ffffffffffff".into()),
                Value::Json("\"\\u0000 ✓\"".into()),
            ],
        ]
    }

    /// Builds a batch from rows by COPY-encoding them through `Param`-style binary values:
    /// decoding a hand-written stream, so the encoder is tested against independent input.
    fn stream_of(rows: &[Vec<Value>], schema: &Schema) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_slice(SIGNATURE);
        out.put_i32(0);
        out.put_i32(0);
        for row in rows {
            out.put_i16(row.len() as i16);
            for (v, c) in row.iter().zip(&schema.columns) {
                let mut b: Vec<u8> = Vec::new();
                match (v, &c.data_type) {
                    (Value::Null, _) => {
                        out.put_i32(-1);
                        continue;
                    }
                    (Value::Boolean(x), _) => b.push(u8::from(*x)),
                    (Value::Int(i), DataType::Int16) => b.put_i16(*i as i16),
                    (Value::Int(i), DataType::Int32) => b.put_i32(*i as i32),
                    (Value::Int(i), _) => b.put_i64(*i),
                    (Value::Float(f), DataType::Float32) => b.put_f32(*f as f32),
                    (Value::Float(f), _) => b.put_f64(*f),
                    (Value::Decimal(s), _) => {
                        numeric_from_text(s, &mut Vec::new(), &mut b).unwrap()
                    }
                    (Value::Text(s), _) => b.put_slice(s.as_bytes()),
                    (Value::Json(s), _) => {
                        b.push(JSONB_VERSION);
                        b.put_slice(s.as_bytes());
                    }
                    (Value::Bytes(x), _) => b.put_slice(x),
                    (Value::Date(d), _) => b.put_i32(d - PG_EPOCH_DAYS),
                    (Value::Timestamp(t) | Value::TimestampTz(t), _) => {
                        b.put_i64(t - PG_EPOCH_MICROS)
                    }
                    (Value::Uuid(s), _) => b.put_slice(&crate::model::parse_uuid(s).unwrap()),
                }
                out.put_i32(b.len() as i32);
                out.put_slice(&b);
            }
        }
        out.put_i16(-1);
        out.to_vec()
    }

    fn decode_all(stream: &[u8], schema: &Schema, chunk: usize) -> Vec<RecordBatch> {
        let mut d = CopyDecoder::new(schema);
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            d.feed(c, &mut out).unwrap();
        }
        out.extend(d.finish().unwrap());
        out
    }

    /// What a value reads back as: decimals at the column's scale, NaN kept as text.
    fn expected(rows: &[Vec<Value>], schema: &Schema) -> Vec<Vec<Value>> {
        rows.iter()
            .map(|row| {
                row.iter()
                    .zip(&schema.columns)
                    .map(|(v, c)| match (v, &c.data_type) {
                        (Value::Decimal(s), DataType::Decimal(Some(d))) => {
                            Value::Decimal(crate::model::decimal_text(
                                crate::model::parse_decimal(s, d.scale).unwrap(),
                                d.scale,
                            ))
                        }
                        (v, _) => v.clone(),
                    })
                    .collect()
            })
            .collect()
    }

    fn targets(schema: &Schema) -> Vec<PgType> {
        schema
            .columns
            .iter()
            .map(|c| PgType::for_portable(&c.data_type))
            .collect()
    }

    fn encode_all(batches: &[RecordBatch], schema: &Schema, targets: &[PgType]) -> Vec<u8> {
        let mut e = CopyEncoder::new(schema, targets).unwrap();
        let mut out = BytesMut::new();
        for b in batches {
            e.encode(b, &mut out).unwrap();
        }
        e.finish(&mut out);
        out.to_vec()
    }

    #[test]
    fn decodes_every_type_and_round_trips_through_the_encoder() {
        let schema = all_types_schema();
        let rows = edge_rows();
        // Decimal(12,3) and (38,0) columns must hold their values: drop the too-long one.
        let stream = stream_of(&rows, &schema);
        let batches = decode_all(&stream, &schema, 1 << 20);
        assert_eq!(rows_of(&batches, &schema), expected(&rows, &schema));

        let encoded = encode_all(&batches, &schema, &targets(&schema));
        // jsonb targets get the version byte, like the hand-written stream: identical bytes,
        // except numerics of fixed-scale columns, which are written at the column's scale.
        let again = decode_all(&encoded, &schema, 1 << 20);
        assert_eq!(rows_of(&again, &schema), expected(&rows, &schema));
    }

    #[test]
    fn decoder_accepts_one_byte_at_a_time() {
        let schema = all_types_schema();
        let rows = edge_rows();
        let stream = stream_of(&rows, &schema);
        let batches = decode_all(&stream, &schema, 1);
        assert_eq!(rows_of(&batches, &schema), expected(&rows, &schema));
        for chunk in [2, 3, 7, 19, 20, 64] {
            assert_eq!(
                rows_of(&decode_all(&stream, &schema, chunk), &schema),
                expected(&rows, &schema)
            );
        }
    }

    #[test]
    fn batches_hold_batch_rows() {
        let schema = Schema {
            columns: vec![col("id", DataType::Int64), col("s", DataType::Text)],
            primary_key: vec![],
        };
        let n = 2 * BATCH_ROWS + 5;
        let rows: Vec<Vec<Value>> = (0..n as i64)
            .map(|i| vec![Value::Int(i), Value::Text(format!("r{i}"))])
            .collect();
        let batches = decode_all(&stream_of(&rows, &schema), &schema, 4096);
        let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [BATCH_ROWS, BATCH_ROWS, 5]);
        assert_eq!(rows_of(&batches, &schema), rows);
        let encoded = encode_all(&batches, &schema, &targets(&schema));
        assert_eq!(encoded, stream_of(&rows, &schema));
    }

    #[test]
    fn empty_stream_and_truncation() {
        let schema = Schema {
            columns: vec![col("id", DataType::Int64)],
            primary_key: vec![],
        };
        let stream = encode_all(&[], &schema, &[PgType::Int8]);
        assert_eq!(stream.len(), HEADER_LEN + 2);
        assert!(decode_all(&stream, &schema, 5).is_empty());

        let mut d = CopyDecoder::new(&schema);
        d.feed(&stream[..HEADER_LEN + 1], &mut Vec::new()).unwrap();
        assert!(d.finish().is_err());
        let mut d = CopyDecoder::new(&schema);
        assert!(
            d.feed(b"PGCOPY\nXXXXXXXXXXXXXXXXXXX", &mut Vec::new())
                .is_err()
        );
        let mut junk = stream.clone();
        junk.push(0);
        let mut d = CopyDecoder::new(&schema);
        assert!(d.feed(&junk, &mut Vec::new()).is_err());
    }

    #[test]
    fn encoder_fits_values_to_the_target_columns() {
        let schema = Schema {
            columns: vec![
                col("i", DataType::Int64),
                col("j", DataType::Json),
                col("f", DataType::Float64),
            ],
            primary_key: vec![],
        };
        let rows = vec![vec![
            Value::Int(7),
            Value::Json("[1]".into()),
            Value::Float(0.5),
        ]];
        let batches = decode_all(&stream_of(&rows, &schema), &schema, 64);
        let out = encode_all(
            &batches,
            &schema,
            &[PgType::Int4, PgType::Json, PgType::Float4],
        );
        let row = &out[HEADER_LEN..];
        assert_eq!(&row[..2], &[0, 3]);
        assert_eq!(&row[2..10], &[0, 0, 0, 4, 0, 0, 0, 7]);
        assert_eq!(&row[10..17], b"\0\0\0\x03[1]");
        assert_eq!(&row[17..25], &[0, 0, 0, 4, 0x3f, 0, 0, 0]);
        let numeric = encode_all(
            &batches,
            &schema,
            &[PgType::Numeric, PgType::Jsonb, PgType::Float8],
        );
        assert_eq!(
            numeric_text(&numeric[HEADER_LEN + 6..HEADER_LEN + 6 + 10]),
            "7"
        );

        let big = vec![vec![Value::Int(1 << 40), Value::Null, Value::Null]];
        let batches = decode_all(&stream_of(&big, &schema), &schema, 64);
        let mut e =
            CopyEncoder::new(&schema, &[PgType::Int4, PgType::Json, PgType::Float8]).unwrap();
        let error = e.encode(&batches[0], &mut BytesMut::new()).unwrap_err();
        assert!(
            error.0.contains("`i`") && error.0.contains("out of range"),
            "{error}"
        );

        let error =
            CopyEncoder::new(&schema, &[PgType::Uuid, PgType::Json, PgType::Float8]).unwrap_err();
        assert!(error.0.contains("`i`"), "{error}");
    }

    #[test]
    fn decoder_reports_bad_values_with_their_column() {
        let schema = Schema {
            columns: vec![col(
                "d",
                DataType::Decimal(Some(DecimalSpec {
                    precision: 4,
                    scale: 1,
                })),
            )],
            primary_key: vec![],
        };
        let rows = vec![vec![Value::Decimal("12345".into())]];
        let mut d = CopyDecoder::new(&schema);
        let error = d
            .feed(&stream_of(&rows, &schema), &mut Vec::new())
            .unwrap_err();
        assert!(
            error.0.contains("`d`") && error.0.contains("12345"),
            "{error}"
        );
    }

    /// Every chunk of a forwarded stream fed `chunk` bytes at a time, then the rest.
    fn forward_all(
        stream: &[u8],
        schema: &Schema,
        cursor: Option<usize>,
        chunk: usize,
    ) -> Vec<WireRows> {
        let mut f = CopyForwarder::new(schema, cursor, 64);
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            f.feed(c, &mut out).unwrap();
        }
        out.extend(f.finish().unwrap());
        out
    }

    #[test]
    fn forwarder_passes_rows_through_and_reports_what_the_decoder_would() {
        let schema = all_types_schema();
        let rows = edge_rows();
        let stream = stream_of(&rows, &schema);
        let body = &stream[HEADER_LEN..stream.len() - 2];
        let cursor = schema.columns.iter().position(|c| c.name == "tz");
        let decoded = decode_all(&stream, &schema, 1 << 20);
        let mut want_max = None;
        for b in &decoded {
            if let Some(m) = model::column_max(b, cursor.unwrap(), &DataType::TimestampTz) {
                model::keep_max(&mut want_max, &m);
            }
        }
        for chunk in [1, 2, 7, 19, 64, 1 << 20] {
            let forwarded = forward_all(&stream, &schema, cursor, chunk);
            let bytes: Vec<u8> = forwarded.iter().flat_map(|w| w.bytes.to_vec()).collect();
            assert_eq!(bytes, body, "chunk {chunk}");
            assert_eq!(
                forwarded.iter().map(|w| w.rows).sum::<u64>(),
                rows.len() as u64
            );
            let mut max = None;
            for m in forwarded.iter().filter_map(|w| w.max_cursor.as_ref()) {
                model::keep_max(&mut max, m);
            }
            assert_eq!(max, want_max, "chunk {chunk}");
        }
        // A 64-byte chunk target: every chunk but the last holds at least that much.
        let forwarded = forward_all(&stream, &schema, None, 1 << 20);
        assert!(forwarded.len() > 1);
        assert!(
            forwarded[..forwarded.len() - 1]
                .iter()
                .all(|w| w.bytes.len() >= 64)
        );
        assert!(forwarded.iter().all(|w| w.max_cursor.is_none()));
    }

    #[test]
    fn forwarder_fails_where_the_decoder_fails() {
        let dec = DataType::Decimal(Some(DecimalSpec {
            precision: 4,
            scale: 1,
        }));
        let cases = [
            (dec, Value::Decimal("12345".into())),
            (dec, Value::Decimal("NaN".into())),
            (DataType::Date, Value::Date(i32::MAX)),
            (DataType::Timestamp, Value::Timestamp(i64::MAX)),
        ];
        for (t, v) in cases {
            let schema = Schema {
                columns: vec![col("x", t)],
                primary_key: vec![],
            };
            // Infinity sits at the PostgreSQL epoch's extremes, which `stream_of` shifts to.
            let mut stream = stream_of(&[vec![v.clone()]], &schema);
            if let Value::Date(_) = v {
                stream[HEADER_LEN + 6..HEADER_LEN + 10].copy_from_slice(&i32::MAX.to_be_bytes());
            }
            if let Value::Timestamp(_) = v {
                stream[HEADER_LEN + 6..HEADER_LEN + 14].copy_from_slice(&i64::MAX.to_be_bytes());
            }
            let decoded = CopyDecoder::new(&schema).feed(&stream, &mut Vec::new());
            let forwarded = CopyForwarder::new(&schema, None, 64).feed(&stream, &mut Vec::new());
            let (Err(d), Err(f)) = (decoded, forwarded) else {
                panic!("{v:?} as {t:?}: both must fail");
            };
            assert_eq!(d, f, "{v:?}");
        }
        // Empty and truncated streams.
        let schema = Schema {
            columns: vec![col("id", DataType::Int64)],
            primary_key: vec![],
        };
        let empty = encode_all(&[], &schema, &[PgType::Int8]);
        assert!(forward_all(&empty, &schema, Some(0), 3).is_empty());
        let mut f = CopyForwarder::new(&schema, None, 64);
        f.feed(&empty[..HEADER_LEN + 1], &mut Vec::new()).unwrap();
        assert!(f.finish().is_err());
    }
}
