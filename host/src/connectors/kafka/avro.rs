//! Avro records in the Confluent wire format (a zero byte, the 4-byte big-endian schema id,
//! the Avro binary datum), with their schemas in a Confluent Schema Registry (`schemreg`
//! for the registry's REST API, `apache-avro` for the datums).
//!
//! Contract:
//! - a sink writes under the subjects `<topic>-key` and `<topic>-value` (the registry's
//!   topic-name strategy) the schemas derived from its target: a record of the key
//!   columns and a record of every column, nullable columns as `["null", T]` with a null
//!   default. Before the first record is produced, each schema is checked against the
//!   subject's latest version with the registry's own compatibility rule: an incompatible
//!   schema fails the run with nothing produced;
//! - a reader takes the writer schema of every record from its id (fetched once per id),
//!   so records written by any producer under any schema version decode; a column is the
//!   field of its name (or dotted `path` in nested records); an id the registry does not
//!   know, a record that is not in the wire format, or a value that does not fit its
//!   column is a bad record (the caller names partition and offset).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value as Avro;
use schemreg::{CachedSchemaRegistry, ConfluentSchemaRegistry, SchemaId, SchemaType};
use serde_json::{Value as Json, json};

use super::config::RegistryConfig;
use super::types::Record;
use crate::connectors::json::value_of;
use crate::error::{Error, Kind, Result};
use crate::model::{self, Column, DataType, Value};

/// One schema a sink writes: derived from its columns, registered under `subject`.
#[derive(Debug)]
struct Written {
    subject: String,
    text: String,
    schema: AvroSchema,
    /// Set once the schema is registered.
    id: OnceLock<u32>,
}

/// The schemas a sink writes its keys and values with.
#[derive(Debug)]
struct Writes {
    key: Option<Written>,
    value: Written,
}

/// A topic's Avro records and the registry that holds their schemas.
pub struct AvroFormat {
    registry: CachedSchemaRegistry<ConfluentSchemaRegistry>,
    url: String,
    /// Whose errors the registry's are.
    role: Kind,
    /// A sink's (a source only reads).
    writes: Option<Writes>,
    /// Writer schemas by id, as records name them, or why an id names none (unknown to
    /// the registry, not an Avro schema).
    writers: Mutex<HashMap<u32, std::result::Result<Arc<AvroSchema>, String>>>,
}

impl std::fmt::Debug for AvroFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroFormat")
            .field("registry", &self.url)
            .field("writes", &self.writes.is_some())
            .finish_non_exhaustive()
    }
}

impl AvroFormat {
    /// How a source reads Avro records: by the schemas the registry at `registry` has.
    pub fn reader(registry: &RegistryConfig, at: &str, role: Kind) -> Result<Self> {
        let mut client = ConfluentSchemaRegistry::builder()
            .url(registry.url.clone())
            .request_timeout(std::time::Duration::from_secs(30));
        if let (Some(user), Some(password)) = (&registry.username, &registry.password) {
            client = client.basic_auth(user.expose(), password.expose());
        }
        let client = client
            .build()
            .map_err(|e| Error::config(format!("{at}.schema_registry.url"), format!("{e}")))?;
        Ok(AvroFormat {
            registry: CachedSchemaRegistry::new(client),
            url: registry.url.clone(),
            role,
            writes: None,
            writers: Mutex::new(HashMap::new()),
        })
    }

    /// How a sink writes `topic`'s records of `columns`, keyed by the columns at `key`
    /// (and reads them back).
    pub fn writer(
        registry: &RegistryConfig,
        topic: &str,
        columns: &[Column],
        key: &[usize],
        at: &str,
    ) -> Result<Self> {
        let record = |suffix: &str, fields: Vec<&Column>| -> Result<Written> {
            let text = record_schema(&format!("{}_{suffix}", avro_name(topic)), &fields, at)?;
            let schema = AvroSchema::parse_str(&text).map_err(|e| {
                Error::internal(format!(
                    "the derived Avro schema does not parse: {e}: {text}"
                ))
            })?;
            Ok(Written {
                subject: format!("{topic}-{suffix}"),
                text,
                schema,
                id: OnceLock::new(),
            })
        };
        let key = if key.is_empty() {
            None
        } else {
            Some(record("key", key.iter().map(|&i| &columns[i]).collect())?)
        };
        let value = record("value", columns.iter().collect())?;
        Ok(AvroFormat {
            writes: Some(Writes { key, value }),
            ..Self::reader(registry, at, Kind::Sink)?
        })
    }

    fn writes(&self) -> Result<&Writes> {
        self.writes
            .as_ref()
            .ok_or_else(|| Error::internal("an Avro source does not write records"))
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::new(
            self.role,
            format!("schema registry {} ({what}): {e}", self.url),
        )
    }

    /// Checks the key and value schemas against their subjects' latest versions and
    /// registers them (a schema already registered keeps its id). Fails, before anything
    /// is produced, when the registry finds a schema incompatible.
    pub async fn register(&self) -> Result<()> {
        let writes = self.writes()?;
        for written in writes.key.iter().chain([&writes.value]) {
            if written.id.get().is_some() {
                continue;
            }
            match self
                .registry
                .inner()
                .check_compatibility(&written.subject, &written.text, SchemaType::Avro, &[])
                .await
            {
                Ok(true) => {}
                Err(e) if e.is_not_found() => {}
                Ok(false) => {
                    return Err(Error::new(
                        Kind::Sink,
                        format!(
                            "schema registry {}: the schema dpone derives from the target is not compatible with the latest version of subject {} under the subject's compatibility rule, so nothing was produced; the schema: {}",
                            self.url, written.subject, written.text
                        ),
                    ));
                }
                Err(e) => {
                    return Err(self.error(&format!("check subject {}", written.subject), e));
                }
            }
            let id = self
                .registry
                .register_schema(&written.subject, &written.text, SchemaType::Avro, &[])
                .await
                .map_err(|e| self.error(&format!("register subject {}", written.subject), e))?;
            let _ = written.id.set(id.as_u32());
        }
        Ok(())
    }

    /// A record's key (`key` true: the key columns' values, in key order) or value (every
    /// column's), framed with the registered schema's id. [`AvroFormat::register`] must
    /// have run.
    pub fn encode(&self, key: bool, columns: &[Column], values: &[Value]) -> Result<Vec<u8>> {
        let writes = self.writes()?;
        let written = if key {
            writes
                .key
                .as_ref()
                .ok_or_else(|| Error::internal("a key record without key columns"))?
        } else {
            &writes.value
        };
        let id = *written
            .id
            .get()
            .ok_or_else(|| Error::internal(format!("{} is not registered", written.subject)))?;
        let fields = columns
            .iter()
            .zip(values)
            .map(|(c, v)| {
                let v = avro_of(v, c)
                    .map_err(|e| Error::new(Kind::Sink, format!("column {}: {e}", c.name)))?;
                Ok((c.name.clone(), v))
            })
            .collect::<Result<Vec<_>>>()?;
        let datum = apache_avro::to_avro_datum(&written.schema, Avro::Record(fields))
            .map_err(|e| Error::new(Kind::Sink, format!("Avro encoding: {e}")))?;
        Ok(schemreg::encode_wire_format(SchemaId::new(id), &datum).into())
    }

    /// Fetches the writer schemas `records` name that are not known yet. An id the
    /// registry does not have, or that names no Avro schema, is remembered as such (its
    /// records are bad records); a registry that cannot be reached fails the read.
    pub async fn learn(&self, records: &[Record]) -> Result<()> {
        let mut wanted: Vec<u32> = {
            let known = self.writers.lock().unwrap_or_else(|p| p.into_inner());
            records
                .iter()
                .flat_map(|r| [r.key.as_deref(), r.value.as_deref()])
                .filter_map(|b| b.and_then(|b| framed(b).ok()).map(|(id, _)| id))
                .filter(|id| !known.contains_key(id))
                .collect()
        };
        wanted.sort_unstable();
        wanted.dedup();
        for id in wanted {
            let schema = match self.registry.get_schema_by_id(SchemaId::new(id)).await {
                Ok(found) => AvroSchema::parse_str(&found.schema)
                    .map(Arc::new)
                    .map_err(|e| format!("schema id {id} is not an Avro schema: {e}")),
                Err(e) if e.is_not_found() => {
                    Err(format!("schema id {id} is unknown to the registry"))
                }
                Err(e) => return Err(self.error(&format!("fetch schema {id}"), e)),
            };
            self.writers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, schema);
        }
        Ok(())
    }

    /// The datum of a framed record and its writer schema, known from [`AvroFormat::learn`].
    fn datum(&self, bytes: &[u8]) -> std::result::Result<(Avro, Arc<AvroSchema>), String> {
        let (id, mut payload) = framed(bytes)?;
        let schema = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("schema id {id} was not fetched"))??;
        let datum = apache_avro::from_avro_datum(&schema, &mut payload, None)
            .map_err(|e| format!("not an Avro datum of schema {id}: {e}"))?;
        Ok((datum, schema))
    }

    /// The values at `paths` of a framed record, as `columns` (a datum that is no record,
    /// such as a key written as a bare `long`, is the one column's value).
    pub fn decode(
        &self,
        bytes: &[u8],
        columns: &[&Column],
        paths: &[&str],
    ) -> std::result::Result<Vec<Value>, String> {
        let (datum, schema) = self.datum(bytes)?;
        if let ([c], false) = (columns, matches!(plain(&datum), Avro::Record(_))) {
            return value_of_avro(&datum, scale_of(&schema), &c.data_type)
                .map(|v| vec![v])
                .map_err(|e| format!("column {}: {e}", c.name));
        }
        columns
            .iter()
            .zip(paths)
            .map(|(c, path)| {
                let found = at_path(&datum, path).unwrap_or(&Avro::Null);
                let scale = decimal_scale(&schema, path);
                value_of_avro(found, scale, &c.data_type)
                    .map_err(|e| format!("column {}: {e}", c.name))
            })
            .collect()
    }
}

/// The schema id and the datum of a record in the Confluent wire format.
fn framed(bytes: &[u8]) -> std::result::Result<(u32, &[u8]), String> {
    let not_framed = "not in the Confluent wire format (a zero byte and a 4-byte schema id)";
    match schemreg::decode_wire_format(bytes) {
        Ok((key, payload)) => match key.as_id() {
            Some(id) => Ok((id.as_u32(), payload)),
            None => Err(format!("{not_framed}: it names its schema by GUID")),
        },
        Err(_) => Err(not_framed.into()),
    }
}

/// A topic or column name as an Avro name: `[A-Za-z_][A-Za-z0-9_]*`.
fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Avro record schema of `fields` (JSON text).
fn record_schema(name: &str, fields: &[&Column], at: &str) -> Result<String> {
    let fields = fields
        .iter()
        .map(|c| {
            if avro_name(&c.name) != c.name {
                return Err(Error::config(
                    format!("{at}.format"),
                    format!(
                        "column {} is not an Avro field name ([A-Za-z_][A-Za-z0-9_]*): rename it, or use format: json",
                        c.name
                    ),
                ));
            }
            let t = avro_type(&c.data_type);
            Ok(if c.nullable {
                json!({ "name": c.name, "type": ["null", t], "default": null })
            } else {
                json!({ "name": c.name, "type": t })
            })
        })
        .collect::<Result<Vec<Json>>>()?;
    Ok(json!({ "type": "record", "name": name, "fields": fields }).to_string())
}

/// The Avro type of a column type: exact for every type (decimals as the `decimal`
/// logical type of their precision and scale, an unconstrained decimal as its text, JSON as
/// its text).
fn avro_type(t: &DataType) -> Json {
    match t {
        DataType::Boolean => json!("boolean"),
        DataType::Int16 | DataType::Int32 => json!("int"),
        DataType::Int64 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Decimal(Some(spec)) => json!({
            "type": "bytes", "logicalType": "decimal",
            "precision": spec.precision, "scale": spec.scale,
        }),
        DataType::Decimal(None) | DataType::Text | DataType::Json => json!("string"),
        DataType::Bytes => json!("bytes"),
        DataType::Date => json!({ "type": "int", "logicalType": "date" }),
        DataType::Timestamp => json!({ "type": "long", "logicalType": "local-timestamp-micros" }),
        DataType::TimestampTz => json!({ "type": "long", "logicalType": "timestamp-micros" }),
        DataType::Uuid => json!({ "type": "string", "logicalType": "uuid" }),
    }
}

/// A value as the Avro value of its column's type (a nullable column: the union branch).
fn avro_of(v: &Value, c: &Column) -> std::result::Result<Avro, String> {
    let plain = match (v, &c.data_type) {
        (Value::Null, _) if c.nullable => return Ok(Avro::Union(0, Box::new(Avro::Null))),
        (Value::Null, _) => return Err("null in a column that is not nullable".into()),
        (Value::Boolean(b), _) => Avro::Boolean(*b),
        (Value::Int(i), DataType::Int16 | DataType::Int32) => {
            Avro::Int(i32::try_from(*i).map_err(|_| format!("{i} does not fit a 32-bit int"))?)
        }
        (Value::Int(i), _) => Avro::Long(*i),
        (Value::Float(f), DataType::Float32) => Avro::Float(*f as f32),
        (Value::Float(f), _) => Avro::Double(*f),
        (Value::Decimal(text), DataType::Decimal(Some(spec))) => {
            let unscaled = model::parse_decimal(text, spec.scale)
                .ok_or_else(|| format!("{text} does not fit decimal scale {}", spec.scale))?;
            Avro::Decimal(apache_avro::Decimal::from(twos_complement(unscaled)))
        }
        (Value::Decimal(s) | Value::Text(s) | Value::Json(s), _) => Avro::String(s.clone()),
        (Value::Uuid(s), _) => Avro::Uuid(s.parse().map_err(|e| format!("uuid {s}: {e}"))?),
        (Value::Bytes(b), _) => Avro::Bytes(b.clone()),
        (Value::Date(d), _) => Avro::Date(*d),
        (Value::Timestamp(m), _) => Avro::LocalTimestampMicros(*m),
        (Value::TimestampTz(m), _) => Avro::TimestampMicros(*m),
    };
    Ok(if c.nullable {
        Avro::Union(1, Box::new(plain))
    } else {
        plain
    })
}

/// The shortest big-endian two's complement bytes of `v` (Avro's decimal encoding).
fn twos_complement(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let sign = if v < 0 { 0xff } else { 0 };
    let mut start = 0;
    // Drop leading sign bytes while the next byte still carries the sign bit.
    while start < 15 && bytes[start] == sign && (bytes[start + 1] & 0x80 == sign & 0x80) {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// The inverse of [`twos_complement`]; `None` past 128 bits.
fn from_twos_complement(bytes: &[u8]) -> Option<i128> {
    if bytes.len() > 16 {
        return None;
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(full))
}

/// The field at a dotted `path` of nested records (unions looked through).
fn at_path<'a>(datum: &'a Avro, path: &str) -> Option<&'a Avro> {
    path.split('.').try_fold(datum, |v, step| match plain(v) {
        Avro::Record(fields) => fields.iter().find(|(n, _)| n == step).map(|(_, v)| v),
        _ => None,
    })
}

/// The scale of the decimal at a dotted `path` of a record schema, if that is a decimal.
fn decimal_scale(schema: &AvroSchema, path: &str) -> Option<usize> {
    let field = path
        .split('.')
        .try_fold(schema, |s, step| match plain_schema(s) {
            AvroSchema::Record(r) => r.fields.iter().find(|f| f.name == step).map(|f| &f.schema),
            _ => None,
        })?;
    scale_of(field)
}

/// The scale of a decimal schema (or of a union's non-null decimal branch).
fn scale_of(schema: &AvroSchema) -> Option<usize> {
    match plain_schema(schema) {
        AvroSchema::Decimal(d) => Some(d.scale),
        _ => None,
    }
}

/// The non-null branch of a `["null", T]` union, any other schema itself.
fn plain_schema(s: &AvroSchema) -> &AvroSchema {
    match s {
        AvroSchema::Union(u) => u
            .variants()
            .iter()
            .find(|v| !matches!(v, AvroSchema::Null))
            .unwrap_or(s),
        other => other,
    }
}

/// A union's value, any other value itself.
fn plain(v: &Avro) -> &Avro {
    match v {
        Avro::Union(_, inner) => plain(inner),
        other => other,
    }
}

/// An Avro value as a value of column type `t`: exact or an error saying why (text goes
/// through the JSON rules, so a date, decimal or uuid written as a string reads as one). A
/// decimal's `scale` is its writer schema's; its value must fit the column's scale.
fn value_of_avro(
    v: &Avro,
    scale: Option<usize>,
    t: &DataType,
) -> std::result::Result<Value, String> {
    let v = plain(v);
    let mismatch = || Err(format!("Avro {} does not fit {t:?}", kind_of(v)));
    Ok(match (v, t) {
        (Avro::Null, _) => Value::Null,
        (Avro::Boolean(b), DataType::Boolean) => Value::Boolean(*b),
        (Avro::Int(i), DataType::Int16 | DataType::Int32 | DataType::Int64) => {
            Value::Int(i64::from(*i))
        }
        (Avro::Long(i), DataType::Int16 | DataType::Int32 | DataType::Int64) => Value::Int(*i),
        (Avro::Float(f), DataType::Float32 | DataType::Float64) => Value::Float(f64::from(*f)),
        (Avro::Double(f), DataType::Float32 | DataType::Float64) => Value::Float(*f),
        (Avro::Decimal(d), DataType::Decimal(_)) => {
            let bytes: Vec<u8> = d.try_into().map_err(|e| format!("decimal: {e}"))?;
            let unscaled = from_twos_complement(&bytes).ok_or("a decimal wider than 128 bits")?;
            let scale = i8::try_from(scale.unwrap_or(0)).map_err(|_| "a decimal scale past 127")?;
            value_of(&Json::String(model::decimal_text(unscaled, scale)), t)?
        }
        (Avro::Bytes(b) | Avro::Fixed(_, b), DataType::Bytes) => Value::Bytes(b.clone()),
        (Avro::Date(d) | Avro::Int(d), DataType::Date) => Value::Date(*d),
        (Avro::TimestampMicros(m) | Avro::LocalTimestampMicros(m), DataType::Timestamp) => {
            Value::Timestamp(*m)
        }
        (Avro::TimestampMicros(m) | Avro::LocalTimestampMicros(m), DataType::TimestampTz) => {
            Value::TimestampTz(*m)
        }
        (Avro::TimestampMillis(m) | Avro::LocalTimestampMillis(m), DataType::Timestamp) => {
            Value::Timestamp(m.checked_mul(1000).ok_or("a timestamp out of range")?)
        }
        (Avro::TimestampMillis(m) | Avro::LocalTimestampMillis(m), DataType::TimestampTz) => {
            Value::TimestampTz(m.checked_mul(1000).ok_or("a timestamp out of range")?)
        }
        (Avro::Uuid(u), DataType::Uuid) => Value::Uuid(u.to_string()),
        (Avro::String(s), DataType::Json) => {
            let parsed: Json =
                serde_json::from_str(s).map_err(|e| format!("a JSON column holds no JSON: {e}"))?;
            Value::Json(parsed.to_string())
        }
        (Avro::String(s), _) => value_of(&Json::String(s.clone()), t)?,
        _ => return mismatch(),
    })
}

fn kind_of(v: &Avro) -> &'static str {
    match v {
        Avro::Null => "null",
        Avro::Boolean(_) => "boolean",
        Avro::Int(_) => "int",
        Avro::Long(_) => "long",
        Avro::Float(_) => "float",
        Avro::Double(_) => "double",
        Avro::Bytes(_) => "bytes",
        Avro::String(_) => "string",
        Avro::Fixed(..) => "fixed",
        Avro::Enum(..) => "enum",
        Avro::Union(..) => "union",
        Avro::Array(_) => "array",
        Avro::Map(_) => "map",
        Avro::Record(_) => "record",
        Avro::Date(_) => "date",
        Avro::Decimal(_) | Avro::BigDecimal(_) => "decimal",
        Avro::TimeMillis(_) | Avro::TimeMicros(_) => "time",
        Avro::TimestampMillis(_) | Avro::TimestampMicros(_) | Avro::TimestampNanos(_) => {
            "timestamp"
        }
        Avro::LocalTimestampMillis(_)
        | Avro::LocalTimestampMicros(_)
        | Avro::LocalTimestampNanos(_) => "local-timestamp",
        Avro::Duration(_) => "duration",
        Avro::Uuid(_) => "uuid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DecimalSpec;

    fn col(name: &str, data_type: DataType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type,
            nullable,
        }
    }

    #[test]
    fn decimals_round_trip_through_twos_complement() {
        for v in [
            0i128,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            10i128.pow(38) - 1,
            -(10i128.pow(38) - 1),
        ] {
            let bytes = twos_complement(v);
            assert_eq!(from_twos_complement(&bytes), Some(v), "{v}");
        }
        assert_eq!(twos_complement(127), vec![0x7f]);
        assert_eq!(twos_complement(128), vec![0x00, 0x80]);
        assert_eq!(twos_complement(-128), vec![0x80]);
        assert_eq!(twos_complement(-129), vec![0xff, 0x7f]);
    }

    /// Every column type written and read back through its derived schema is the same
    /// value, at the limits of each type.
    #[test]
    fn every_type_round_trips_through_its_derived_schema() {
        let dec = DataType::Decimal(Some(DecimalSpec {
            precision: 38,
            scale: 9,
        }));
        let columns = vec![
            col("id", DataType::Int64, false),
            col("flag", DataType::Boolean, true),
            col("small", DataType::Int32, true),
            col("ratio", DataType::Float64, true),
            col("amount", dec, true),
            col("exact", DataType::Decimal(None), true),
            col("label", DataType::Text, true),
            col("blob", DataType::Bytes, true),
            col("day", DataType::Date, true),
            col("at", DataType::Timestamp, true),
            col("at_tz", DataType::TimestampTz, true),
            col("uid", DataType::Uuid, true),
            col("doc", DataType::Json, true),
        ];
        let row = vec![
            Value::Int(i64::MIN),
            Value::Boolean(true),
            Value::Int(i64::from(i32::MAX)),
            Value::Float(-1.5e300),
            Value::Decimal("-99999999999999999999999999999.999999999".into()),
            Value::Decimal("123456789012345678901234567890.123456789012".into()),
            Value::Text("naïve \"quoted\"".into()),
            Value::Bytes(vec![0, 255, 7]),
            Value::Date(-25_000),
            Value::Timestamp(-1_234_567_890_123_456),
            Value::TimestampTz(4_102_444_800_000_001),
            Value::Uuid("0191e2d4-5b7a-7c3e-9f10-123456789abc".into()),
            Value::Json(r#"{"a":[1,2]}"#.into()),
        ];
        let text = record_schema("t_value", &columns.iter().collect::<Vec<_>>(), "sink").unwrap();
        let schema = AvroSchema::parse_str(&text).unwrap();
        for row in [row.clone(), {
            let mut nulls = vec![Value::Int(0)];
            nulls.resize(columns.len(), Value::Null);
            nulls
        }] {
            let fields = columns
                .iter()
                .zip(&row)
                .map(|(c, v)| (c.name.clone(), avro_of(v, c).unwrap()))
                .collect();
            let datum = apache_avro::to_avro_datum(&schema, Avro::Record(fields)).unwrap();
            let back = apache_avro::from_avro_datum(&schema, &mut &datum[..], None).unwrap();
            let read: Vec<Value> = columns
                .iter()
                .map(|c| {
                    let v = at_path(&back, &c.name).unwrap();
                    value_of_avro(v, decimal_scale(&schema, &c.name), &c.data_type).unwrap()
                })
                .collect();
            assert_eq!(read, row);
        }
    }

    #[test]
    fn values_that_do_not_fit_say_why() {
        let int = col("n", DataType::Int32, false);
        assert!(
            avro_of(&Value::Int(1 << 40), &int)
                .unwrap_err()
                .contains("32-bit")
        );
        assert!(
            avro_of(&Value::Null, &int)
                .unwrap_err()
                .contains("not nullable")
        );
        assert!(
            value_of_avro(&Avro::String("x".into()), None, &DataType::Date)
                .unwrap_err()
                .contains("date")
        );
        assert!(
            value_of_avro(&Avro::Boolean(true), None, &DataType::Int64)
                .unwrap_err()
                .contains("boolean")
        );
        assert!(framed(&[1, 0, 0, 0, 1]).is_err());
        assert!(framed(&[0, 0, 0]).is_err());
        assert_eq!(framed(&[0, 0, 0, 1, 2, 9]).unwrap(), (258, &[9u8][..]));
    }

    #[test]
    fn columns_that_are_no_avro_names_are_refused_naming_the_field() {
        let e = record_schema("t", &[&col("bad-name", DataType::Text, true)], "sink").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sink.format"));
        assert_eq!(avro_name("9 lives.topic"), "_9_lives_topic");
    }
}
