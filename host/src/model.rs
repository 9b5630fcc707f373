//! The portable data model: schema, values, filters, bounds and capabilities, and their
//! mapping onto Apache Arrow, the in-host batch format.
//!
//! The types mirror the records and variants of `wit/strategy.wit` (the docs there state
//! their contracts), but they are the host's own: connectors and the rest of the host use
//! them, and only the runtime converts them to and from the generated bindings
//! (`runtime/convert.rs`), at the WIT boundary.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType as ArrowType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// Fixed-point decimal precision and scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecimalSpec {
    pub precision: u8,
    pub scale: i8,
}

/// A portable column type (WIT `data-type`; docs/type-mapping.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Boolean,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// `None` when the source decimal is unconstrained (PostgreSQL `numeric`).
    Decimal(Option<DecimalSpec>),
    Text,
    Bytes,
    Date,
    Timestamp,
    TimestampTz,
    Uuid,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub columns: Vec<Column>,
    /// The primary key the connector found, empty when none is declared.
    pub primary_key: Vec<String>,
}

/// A typed scalar (WIT `value`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Int(i64),
    Float(f64),
    /// Canonical decimal text, e.g. `-12.50`.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00 (no time zone).
    Timestamp(i64),
    /// Microseconds since the Unix epoch, UTC.
    TimestampTz(i64),
    /// Canonical hyphenated lowercase text.
    Uuid(String),
    Json(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompareTerm {
    pub column: String,
    pub op: Comparison,
    pub value: Value,
}

/// `low <= column < high` when `high_inclusive` is false, `<=` when true.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeTerm {
    pub column: String,
    pub low: Value,
    pub high: Value,
    pub high_inclusive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InTerm {
    pub column: String,
    pub values: Vec<Value>,
}

/// One conjunct of a filter (WIT `term`).
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Compare(CompareTerm),
    Range(RangeTerm),
    InList(InTerm),
    IsNull(String),
    IsNotNull(String),
    /// The manifest's `sink.strategy.predicate_sql`.
    ManifestPredicate,
}

impl Term {
    /// The column the term constrains; `None` for the manifest predicate.
    pub fn column(&self) -> Option<&str> {
        match self {
            Term::Compare(c) => Some(&c.column),
            Term::Range(r) => Some(&r.column),
            Term::InList(i) => Some(&i.column),
            Term::IsNull(c) | Term::IsNotNull(c) => Some(c),
            Term::ManifestPredicate => None,
        }
    }

    /// The values the term compares with.
    pub fn values(&self) -> Vec<&Value> {
        match self {
            Term::Compare(c) => vec![&c.value],
            Term::Range(r) => vec![&r.low, &r.high],
            Term::InList(i) => i.values.iter().collect(),
            Term::IsNull(_) | Term::IsNotNull(_) | Term::ManifestPredicate => Vec::new(),
        }
    }
}

/// Checks a value a strategy passed before any connector binds or renders it: decimal,
/// uuid and json text must be well formed, so a typed column never stores text its later
/// reads cannot decode (SQLite and ClickHouse would store it as given). `field` is blamed.
pub fn check_value(value: &Value, field: &str) -> Result<()> {
    let malformed = |what: &str, text: &str| {
        Err(Error::config(
            field,
            format!("malformed {what} value `{}`", crate::text::name(text)),
        ))
    };
    match value {
        Value::Decimal(t) if !decimal_syntax(t) => malformed("decimal", t),
        Value::Uuid(t) if parse_uuid(t).is_none() => malformed("uuid", t),
        Value::Json(t) if serde_json::from_str::<serde::de::IgnoredAny>(t).is_err() => {
            malformed("json", t)
        }
        _ => Ok(()),
    }
}

/// `[+-]digits[.digits]`, with digits on at least one side of the point.
fn decimal_syntax(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

/// Checks that `terms` name columns of `schema` and carry well-formed values, before any
/// SQL is rendered from them; `field` is blamed.
pub fn check_terms(schema: &Schema, terms: &[Term], field: &str) -> Result<()> {
    for term in terms {
        if let Some(column) = term.column() {
            schema.require(column, field)?;
        }
        for v in term.values() {
            check_value(v, field)?;
        }
    }
    Ok(())
}

/// Rows with `after < column <= up_to`; either side may be open.
#[derive(Debug, Clone, PartialEq)]
pub struct CursorBound {
    pub column: String,
    pub after: Option<Value>,
    pub up_to: Option<Value>,
}

/// Rows whose version lies after `after` and at or before `up_to` (positions).
#[derive(Debug, Clone, PartialEq)]
pub struct RowVersionBound {
    pub after: Option<String>,
    pub up_to: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScanBounds {
    pub cursor: Option<CursorBound>,
    pub filter: Vec<Term>,
    pub limit: Option<u64>,
    pub row_versions: Option<RowVersionBound>,
    pub since: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScanStats {
    pub rows: u64,
    pub bytes: u64,
    pub max_cursor: Option<Value>,
    pub resume: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyCheck {
    pub rows: u64,
    pub null_key_rows: u64,
    pub duplicate_groups: u64,
    pub sample: Vec<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushdown {
    Full,
    CursorOnly,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceCapabilities {
    pub pushdown: Pushdown,
    pub cheap_aggregates: bool,
    pub resumable: bool,
    pub row_versions: bool,
    pub change_feed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetReads {
    Native,
    StagedCopy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkCapabilities {
    pub transactions: bool,
    pub keys_enforced: bool,
    pub rename_swap: bool,
    pub native_partitions: bool,
    pub append_only_log: bool,
    pub target_reads: TargetReads,
    pub transaction_time_limit_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangePart {
    Upserts,
    Deletes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    None,
    NoStoredPosition,
    FeedCreated,
    StoredPositionExpired,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChangeWindow {
    pub restart: RestartReason,
    pub after: String,
    pub up_to: String,
    pub retained_bytes: Option<u64>,
}

/// Rows per Arrow batch on the data plane. Bounds memory: at most a few batches per
/// pipeline are in flight between source and sink.
pub const BATCH_ROWS: usize = 8192;

/// Batches buffered between the source reader and the sink writer (back-pressure).
pub const CHANNEL_BATCHES: usize = 4;

impl Schema {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Where each of `names` is among the columns; an error naming `field` for one that is
    /// not, as [`Schema::require`] gives.
    pub fn positions(&self, names: &[String], field: &str) -> Result<Vec<usize>> {
        names
            .iter()
            .map(|name| {
                self.require(name, field)?;
                Ok(self
                    .columns
                    .iter()
                    .position(|c| &c.name == name)
                    .expect("required above"))
            })
            .collect()
    }

    /// The column called `name`, or a config error at `field`.
    pub fn require(&self, name: &str, field: &str) -> Result<&Column> {
        self.column(name).ok_or_else(|| {
            let known: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            Error::config(
                field,
                format!(
                    "no column `{}` (columns: {})",
                    crate::text::name(name),
                    known.join(", ")
                ),
            )
        })
    }

    /// This schema with every column nullable: the rows of a change feed's deletes carry
    /// only their key, every other column NULL.
    pub fn all_nullable(&self) -> Schema {
        Schema {
            columns: self
                .columns
                .iter()
                .map(|c| Column {
                    nullable: true,
                    ..c.clone()
                })
                .collect(),
            primary_key: self.primary_key.clone(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// The Arrow schema batches of this schema carry.
    pub fn to_arrow(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(&c.data_type), c.nullable))
            .collect();
        Arc::new(ArrowSchema::new(fields))
    }
}

/// A portable type as the WIT contract names it, e.g. `int64`, `decimal(12,2)`.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Decimal(Some(d)) => format!("decimal({},{})", d.precision, d.scale),
        DataType::Decimal(None) => "decimal".into(),
        DataType::Text => "text".into(),
        DataType::Bytes => "bytes".into(),
        DataType::Date => "date".into(),
        DataType::Timestamp => "timestamp".into(),
        DataType::TimestampTz => "timestamp-tz".into(),
        DataType::Uuid => "uuid".into(),
        DataType::Json => "json".into(),
    }
}

/// The Arrow type a portable type travels as (see docs/type-mapping.md).
pub fn arrow_type(t: &DataType) -> ArrowType {
    match t {
        DataType::Boolean => ArrowType::Boolean,
        DataType::Int16 => ArrowType::Int16,
        DataType::Int32 => ArrowType::Int32,
        DataType::Int64 => ArrowType::Int64,
        DataType::Float32 => ArrowType::Float32,
        DataType::Float64 => ArrowType::Float64,
        DataType::Decimal(Some(d)) => ArrowType::Decimal128(d.precision, d.scale),
        // Unconstrained decimals keep their exact text: no precision is lost.
        DataType::Decimal(None) | DataType::Text | DataType::Json => ArrowType::Utf8,
        DataType::Bytes => ArrowType::Binary,
        DataType::Date => ArrowType::Date32,
        DataType::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, None),
        DataType::TimestampTz => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Uuid => ArrowType::FixedSizeBinary(16),
    }
}

/// The value at `row` of an array built for portable type `t`.
pub fn value_at(array: &ArrayRef, t: &DataType, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    macro_rules! get {
        ($ty:ty) => {
            array
                .as_any()
                .downcast_ref::<$ty>()
                .expect("array type follows the schema")
                .value(row)
        };
    }
    match t {
        DataType::Boolean => Value::Boolean(get!(BooleanArray)),
        DataType::Int16 => Value::Int(get!(Int16Array).into()),
        DataType::Int32 => Value::Int(get!(Int32Array).into()),
        DataType::Int64 => Value::Int(get!(Int64Array)),
        DataType::Float32 => Value::Float(get!(Float32Array).into()),
        DataType::Float64 => Value::Float(get!(Float64Array)),
        DataType::Decimal(Some(d)) => Value::Decimal(decimal_text(get!(Decimal128Array), d.scale)),
        DataType::Decimal(None) => Value::Decimal(get!(StringArray).to_owned()),
        DataType::Text => Value::Text(get!(StringArray).to_owned()),
        DataType::Json => Value::Json(get!(StringArray).to_owned()),
        DataType::Bytes => Value::Bytes(get!(BinaryArray).to_vec()),
        DataType::Date => Value::Date(get!(Date32Array)),
        DataType::Timestamp => Value::Timestamp(get!(TimestampMicrosecondArray)),
        DataType::TimestampTz => Value::TimestampTz(get!(TimestampMicrosecondArray)),
        DataType::Uuid => Value::Uuid(uuid_text(get!(FixedSizeBinaryArray))),
    }
}

/// Builds one Arrow batch of `schema` from rows of values (the inverse of [`rows_of`]):
/// for seeding test sources, never on the data plane. Fails on a value of the wrong type.
pub fn batch_of(schema: &Schema, rows: &[Vec<Value>]) -> Result<arrow_array::RecordBatch> {
    use arrow_array::builder::*;
    let bad = |c: &Column, v: &Value| {
        Error::internal(format!(
            "column {} ({:?}) cannot hold {v:?}",
            c.name, c.data_type
        ))
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.columns.len());
    for (i, c) in schema.columns.iter().enumerate() {
        let values = rows.iter().map(|r| &r[i]);
        macro_rules! build {
            ($builder:expr, $($pat:pat => $val:expr),+) => {{
                let mut b = $builder;
                for v in values {
                    match v {
                        Value::Null => b.append_null(),
                        $($pat => b.append_value($val),)+
                        other => return Err(bad(c, other)),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let array = match &c.data_type {
            DataType::Boolean => build!(BooleanBuilder::new(), Value::Boolean(x) => *x),
            DataType::Int16 => {
                build!(Int16Builder::new(), Value::Int(x) => i16::try_from(*x).map_err(|_| bad(c, &Value::Int(*x)))?)
            }
            DataType::Int32 => {
                build!(Int32Builder::new(), Value::Int(x) => i32::try_from(*x).map_err(|_| bad(c, &Value::Int(*x)))?)
            }
            DataType::Int64 => build!(Int64Builder::new(), Value::Int(x) => *x),
            DataType::Float32 => build!(Float32Builder::new(), Value::Float(x) => *x as f32),
            DataType::Float64 => build!(Float64Builder::new(), Value::Float(x) => *x),
            DataType::Decimal(Some(d)) => build!(
                Decimal128Builder::new().with_data_type(arrow_type(&c.data_type)),
                Value::Decimal(x) => parse_decimal(x, d.scale).ok_or_else(|| bad(c, &Value::Decimal(x.clone())))?
            ),
            DataType::Decimal(None) => build!(StringBuilder::new(), Value::Decimal(x) => x),
            DataType::Text => build!(StringBuilder::new(), Value::Text(x) => x),
            DataType::Json => build!(StringBuilder::new(), Value::Json(x) => x),
            DataType::Bytes => build!(BinaryBuilder::new(), Value::Bytes(x) => x),
            DataType::Date => build!(Date32Builder::new(), Value::Date(x) => *x),
            DataType::Timestamp => {
                build!(TimestampMicrosecondBuilder::new(), Value::Timestamp(x) => *x)
            }
            DataType::TimestampTz => build!(
                TimestampMicrosecondBuilder::new().with_timezone("UTC"),
                Value::TimestampTz(x) => *x
            ),
            DataType::Uuid => {
                let mut b = FixedSizeBinaryBuilder::new(16);
                for v in values {
                    match v {
                        Value::Null => b.append_null(),
                        Value::Uuid(x) => {
                            let bytes = parse_uuid(x).ok_or_else(|| bad(c, v))?;
                            b.append_value(bytes).map_err(Error::internal)?;
                        }
                        other => return Err(bad(c, other)),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }
        };
        columns.push(array);
    }
    arrow_array::RecordBatch::try_new(schema.to_arrow(), columns).map_err(Error::internal)
}

/// Canonical text of a scaled i128 decimal: `-12.50` for (-1250, 2).
pub fn decimal_text(unscaled: i128, scale: i8) -> String {
    if unscaled == 0 && scale <= 0 {
        return "0".into();
    }
    let digits = unscaled.unsigned_abs().to_string();
    let zeros = usize::from(scale.unsigned_abs());
    let mut out = String::with_capacity(digits.len() + zeros + 3);
    if unscaled < 0 {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', zeros));
    } else if digits.len() <= zeros {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', zeros - digits.len()));
        out.push_str(&digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - zeros);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// Parses decimal text into an i128 scaled by `scale`; `None` when it does not fit or
/// has more fractional digits than `scale`.
pub fn parse_decimal(text: &str, scale: i8) -> Option<i128> {
    let text = text.trim();
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    let scale = usize::try_from(scale).ok()?;
    if frac.len() > scale || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut v: i128 = 0;
    for c in int.chars().chain(frac.chars()) {
        v = v.checked_mul(10)?.checked_add(i128::from(c as u8 - b'0'))?;
    }
    v = v.checked_mul(10i128.checked_pow((scale - frac.len()) as u32)?)?;
    Some(if neg { -v } else { v })
}

/// Canonical hyphenated lowercase text of 16 uuid bytes.
pub fn uuid_text(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The 16 bytes of uuid text (hyphens optional).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Orders two values of the same portable type; `None` across types or for NULL.
pub fn compare_values(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    use Value as V;
    match (a, b) {
        (V::Boolean(x), V::Boolean(y)) => x.partial_cmp(y),
        (V::Int(x), V::Int(y)) => x.partial_cmp(y),
        (V::Float(x), V::Float(y)) => x.partial_cmp(y),
        (V::Decimal(x), V::Decimal(y)) => {
            let frac = |s: &str| s.split_once('.').map_or(0, |(_, f)| f.len());
            let scale = i8::try_from(frac(x).max(frac(y))).ok()?;
            parse_decimal(x, scale)?.partial_cmp(&parse_decimal(y, scale)?)
        }
        (V::Text(x), V::Text(y)) | (V::Uuid(x), V::Uuid(y)) => x.partial_cmp(y),
        (V::Bytes(x), V::Bytes(y)) => x.partial_cmp(y),
        (V::Date(x), V::Date(y)) => x.partial_cmp(y),
        (V::Timestamp(x), V::Timestamp(y)) | (V::TimestampTz(x), V::TimestampTz(y)) => {
            x.partial_cmp(y)
        }
        _ => None,
    }
}

/// The largest non-NULL value of column `index` in `batch`.
pub fn column_max(batch: &arrow_array::RecordBatch, index: usize, t: &DataType) -> Option<Value> {
    let array = batch.column(index);
    let mut best: Option<Value> = None;
    for row in 0..batch.num_rows() {
        keep_max(&mut best, &value_at(array, t, row));
    }
    best
}

/// Makes `best` the larger of itself and `v`; a NULL `v` changes nothing.
pub fn keep_max(best: &mut Option<Value>, v: &Value) {
    if *v != Value::Null
        && best
            .as_ref()
            .is_none_or(|b| compare_values(v, b) == Some(std::cmp::Ordering::Greater))
    {
        *best = Some(v.clone());
    }
}

/// Every row of `batches` (built for `schema`) as values: for tests, the behaviour model
/// and diagnostics, never on the data plane.
pub fn rows_of(batches: &[arrow_array::RecordBatch], schema: &Schema) -> Vec<Vec<Value>> {
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                schema
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| value_at(b.column(i), &c.data_type, r))
                    .collect()
            })
        })
        .collect()
}

/// The canonical row hash of every row of `batch` (built for `schema`): 32 lowercase hex
/// digits, the first 16 bytes of a SHA-256 over the columns sorted by name, each encoded
/// as `len(name) name flag len(text) text` (lengths u32 little-endian, flag 0 for NULL,
/// 1 otherwise) where `text` is the value's canonical text ([`canonical_text`]). Sorting by
/// name and canonical text make the hash independent of column order, physical types and
/// the source system.
pub fn row_hashes(batch: &arrow_array::RecordBatch, schema: &Schema) -> arrow_array::StringArray {
    use sha2::{Digest, Sha256};
    let mut order: Vec<usize> = (0..schema.columns.len()).collect();
    order.sort_by(|a, b| schema.columns[*a].name.cmp(&schema.columns[*b].name));
    let mut out =
        arrow_array::builder::StringBuilder::with_capacity(batch.num_rows(), batch.num_rows() * 32);
    let mut hasher = Sha256::new();
    for row in 0..batch.num_rows() {
        for &i in &order {
            let column = &schema.columns[i];
            hasher.update((column.name.len() as u32).to_le_bytes());
            hasher.update(column.name.as_bytes());
            match canonical_text(&value_at(batch.column(i), &column.data_type, row)) {
                None => hasher.update([0u8]),
                Some(text) => {
                    hasher.update([1u8]);
                    hasher.update((text.len() as u32).to_le_bytes());
                    hasher.update(text.as_bytes());
                }
            }
        }
        let digest = hasher.finalize_reset();
        out.append_value(
            digest[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
    }
    out.finish()
}

/// A value's canonical text for hashing; `None` for NULL. Decimals drop trailing fraction
/// zeros (`12.50` and `12.5` are one number), floats use their shortest f64 text, dates are
/// `YYYY-MM-DD`, timestamps their microseconds, bytes lowercase hex.
pub fn canonical_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(d) => {
            let d = d.trim();
            let d = if d.contains('.') {
                d.trim_end_matches('0').trim_end_matches('.')
            } else {
                d
            };
            let zero = !d.is_empty() && d.trim_start_matches('-').chars().all(|c| c == '0');
            if zero { "0".into() } else { d.to_string() }
        }
        Value::Text(s) | Value::Json(s) | Value::Uuid(s) => s.clone(),
        Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Value::Date(d) => time::format_date(*d),
        Value::Timestamp(t) | Value::TimestampTz(t) => t.to_string(),
    })
}

/// A value as tagged JSON, the form the state store keeps: `{"int": 42}`.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => json!({ "boolean": b }),
        Value::Int(i) => json!({ "int": i }),
        Value::Float(f) => json!({ "float": f }),
        Value::Decimal(s) => json!({ "decimal": s }),
        Value::Text(s) => json!({ "text": s }),
        Value::Bytes(b) => json!({ "bytes": b }),
        Value::Date(d) => json!({ "date": d }),
        Value::Timestamp(t) => json!({ "timestamp": t }),
        Value::TimestampTz(t) => json!({ "timestamp_tz": t }),
        Value::Uuid(s) => json!({ "uuid": s }),
        Value::Json(s) => json!({ "json": s }),
    }
}

/// Inverse of [`value_to_json`].
pub fn value_from_json(j: &serde_json::Value) -> Result<Value> {
    let bad = || Error::state(format!("state entry is not a tagged value: {j}"));
    if j.is_null() {
        return Ok(Value::Null);
    }
    let (tag, v) = j
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(bad)?;
    let text = || v.as_str().map(str::to_owned).ok_or_else(bad);
    let int = || v.as_i64().ok_or_else(bad);
    Ok(match tag.as_str() {
        "boolean" => Value::Boolean(v.as_bool().ok_or_else(bad)?),
        "int" => Value::Int(int()?),
        "float" => Value::Float(v.as_f64().ok_or_else(bad)?),
        "decimal" => Value::Decimal(text()?),
        "text" => Value::Text(text()?),
        "bytes" => Value::Bytes(serde_json::from_value(v.clone()).map_err(|_| bad())?),
        "date" => Value::Date(i32::try_from(int()?).map_err(|_| bad())?),
        "timestamp" => Value::Timestamp(int()?),
        "timestamp_tz" => Value::TimestampTz(int()?),
        "uuid" => Value::Uuid(text()?),
        "json" => Value::Json(text()?),
        _ => return Err(bad()),
    })
}

/// The bytes a value takes in memory and in the state store, roughly: its payload.
pub fn value_size(v: &Value) -> usize {
    match v {
        Value::Decimal(s) | Value::Text(s) | Value::Uuid(s) | Value::Json(s) => s.len(),
        Value::Bytes(b) => b.len(),
        _ => 8,
    }
}

/// Human-readable value for logs, plans and `state show`.
pub fn value_display(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::Text(s) | Value::Uuid(s) | Value::Json(s) => format!("{s:?}"),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
        Value::Date(d) => format!("date({d})"),
        Value::Timestamp(t) => format!("timestamp({t}us)"),
        Value::TimestampTz(t) => format!("timestamptz({t}us)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_round_trips() {
        for (v, s, text) in [
            (-1250, 2, "-12.50"),
            (5, 3, "0.005"),
            (0, 2, "0.00"),
            (42, 0, "42"),
        ] {
            assert_eq!(decimal_text(v, s), text);
            assert_eq!(parse_decimal(text, s), Some(v));
        }
        assert_eq!(parse_decimal("1.234", 2), None);
        assert_eq!(parse_decimal("1.230", 2), Some(123));
        assert_eq!(parse_decimal("abc", 2), None);
    }

    #[test]
    fn row_hashes_ignore_column_order_and_decimal_form() {
        let col = |n: &str, t| Column {
            name: n.into(),
            data_type: t,
            nullable: true,
        };
        let ab = Schema {
            columns: vec![col("a", DataType::Int64), col("b", DataType::Decimal(None))],
            primary_key: vec![],
        };
        let ba = Schema {
            columns: vec![ab.columns[1].clone(), ab.columns[0].clone()],
            primary_key: vec![],
        };
        let batch = |schema: &Schema, a: Option<i64>, b: Option<&str>| {
            let a: ArrayRef = Arc::new(Int64Array::from(vec![a]));
            let b: ArrayRef = Arc::new(StringArray::from(vec![b]));
            let cols = if schema.columns[0].name == "a" {
                vec![a, b]
            } else {
                vec![b, a]
            };
            arrow_array::RecordBatch::try_new(schema.to_arrow(), cols).unwrap()
        };
        let hash = |schema: &Schema, a, b| {
            row_hashes(&batch(schema, a, b), schema)
                .value(0)
                .to_string()
        };
        let h = hash(&ab, Some(1), Some("12.50"));
        assert_eq!(h.len(), 32);
        assert_eq!(
            h,
            hash(&ba, Some(1), Some("12.5")),
            "column order and trailing zeros do not matter"
        );
        assert_ne!(h, hash(&ab, Some(1), Some("12.51")));
        assert_ne!(
            hash(&ab, Some(1), None),
            hash(&ab, Some(1), Some("")),
            "NULL is not an empty string"
        );
        assert_ne!(
            hash(&ab, None, Some("1")),
            hash(&ab, Some(1), None),
            "values stay in their columns"
        );
    }

    #[test]
    fn uuid_round_trips() {
        let text = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(uuid_text(&parse_uuid(text).unwrap()), text);
    }

    #[test]
    fn state_values_round_trip_through_json() {
        for v in [
            Value::Null,
            Value::Int(-3),
            Value::Text("x\u{1}é".into()),
            Value::TimestampTz(17),
        ] {
            assert_eq!(value_from_json(&value_to_json(&v)).unwrap(), v);
        }
    }
}

/// Calendar text for dates and timestamps, for dialects that keep them as text (SQLite)
/// or take them as text parameters (PostgreSQL's COPY reader).
pub mod time {
    pub const MICROS_PER_DAY: i64 = 86_400_000_000;

    /// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
    pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    /// (year, month, day) to days since 1970-01-01.
    pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = i64::from((m + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// `YYYY-MM-DD`.
    pub fn format_date(days: i32) -> String {
        let (y, m, d) = civil_from_days(days.into());
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff` (no zone).
    pub fn format_timestamp(micros: i64) -> String {
        let days = micros.div_euclid(MICROS_PER_DAY);
        let rest = micros.rem_euclid(MICROS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = rest / 1_000_000;
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            rest % 1_000_000
        )
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse_date(text: &str) -> Option<i32> {
        let mut it = text.trim().splitn(3, '-');
        let y: i64 = it.next()?.parse().ok()?;
        let m: u32 = it.next()?.parse().ok()?;
        let d: u32 = it.next()?.parse().ok()?;
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        i32::try_from(days_from_civil(y, m, d)).ok()
    }

    /// Parses `YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z|+HH[:MM]|-HH[:MM]]` (or a bare date) to
    /// microseconds since the epoch; an offset is applied so the result is UTC.
    pub fn parse_timestamp(text: &str) -> Option<i64> {
        let text = text.trim();
        if text.len() == 10 {
            return Some(i64::from(parse_date(text)?) * MICROS_PER_DAY);
        }
        let (date, time) = text.split_at_checked(10)?;
        let days = i64::from(parse_date(date)?);
        let time = time.strip_prefix(['T', ' '])?;
        let zone_at = time.find(['Z', 'z', '+', '-']).unwrap_or(time.len());
        let (clock, zone) = time.split_at(zone_at);
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut parts = hms.split(':');
        let h: i64 = parts.next()?.parse().ok()?;
        let mi: i64 = parts.next()?.parse().ok()?;
        let s: i64 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        if frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let micros: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
        let offset_secs = match zone {
            "" | "Z" | "z" => 0,
            _ => {
                let sign = if zone.starts_with('-') { -1 } else { 1 };
                let digits = zone[1..].replace(':', "");
                let (oh, om) = digits.split_at_checked(2)?;
                let om: i64 = if om.is_empty() { 0 } else { om.parse().ok()? };
                sign * (oh.parse::<i64>().ok()? * 3600 + om * 60)
            }
        };
        Some(days * MICROS_PER_DAY + ((h * 60 + mi) * 60 + s - offset_secs) * 1_000_000 + micros)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn dates_and_timestamps_round_trip() {
            for days in [-719_468, -1, 0, 1, 19_000, 2_932_896] {
                assert_eq!(parse_date(&format_date(days)), Some(days));
            }
            for micros in [-1, 0, 1_700_000_000_123_456, -62_135_596_800_000_000] {
                assert_eq!(parse_timestamp(&format_timestamp(micros)), Some(micros));
            }
            assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00"), Some(0));
            assert_eq!(parse_timestamp("1970-01-01 00:00:00.5Z"), Some(500_000));
            assert_eq!(parse_timestamp("2024-13-01 00:00"), None);
        }
    }
}
