//! Kafka records <-> rows: a record's key is an object of the key columns, its value an
//! object of every column, a tombstone has no value; objects in JSON (the values as
//! `connectors/json.rs` writes and reads them) or Avro records with a registry
//! (`avro.rs`). Positions are `kafka:<partition>=<next offset>,...`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::avro::AvroFormat;
use super::config::{Format, KafkaConfig};
use crate::connectors::DeclaredColumn;
use crate::connectors::json::{at_path, json_of, value_of};
use crate::error::{Error, Kind, Result};
use crate::model::{Column, Schema, Value};

/// The next offset to read per partition: where a read stopped, as a 0.2.0 position.
pub type Offsets = BTreeMap<i32, i64>;

const POSITION_PREFIX: &str = "kafka:";

/// `kafka:0=12,1=40`: partitions in order.
pub fn format_position(offsets: &Offsets) -> String {
    let parts: Vec<String> = offsets.iter().map(|(p, o)| format!("{p}={o}")).collect();
    format!("{POSITION_PREFIX}{}", parts.join(","))
}

/// Inverse of [`format_position`]; a source error naming the text otherwise.
pub fn parse_position(text: &str) -> Result<Offsets> {
    let bad = || {
        Error::source(format!(
            "`{}` is not a Kafka position (kafka:<partition>=<offset>,...)",
            crate::text::clean(text, 80)
        ))
    };
    let body = text.strip_prefix(POSITION_PREFIX).ok_or_else(bad)?;
    if body.is_empty() {
        return Ok(Offsets::new());
    }
    body.split(',')
        .map(|part| {
            let (p, o) = part.split_once('=').ok_or_else(bad)?;
            let p: i32 = p.parse().map_err(|_| bad())?;
            let o: i64 = o.parse().map_err(|_| bad())?;
            if p < 0 || o < 0 {
                return Err(bad());
            }
            Ok((p, o))
        })
        .collect()
}

/// One record as read from a partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// Where the record is, for errors.
    pub fn at(&self, topic: &str) -> String {
        format!(
            "topic {topic} partition {} offset {}",
            self.partition, self.offset
        )
    }
}

/// What a record means for a table keyed by the key columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The row as it stands now (all columns of the schema, in order).
    Upsert(Vec<Value>),
    /// The key (the key columns, in key order) was deleted.
    Delete(Vec<Value>),
}

/// How records decode into rows of `schema`: each column from a (dotted) path of the value
/// object, the key columns also from the key object.
#[derive(Debug, Clone)]
pub struct Codec {
    schema: Schema,
    /// Per column, where its value is in a value object.
    paths: Vec<String>,
    /// Indexes of the key columns in `schema`.
    key: Vec<usize>,
    /// The key columns, in key order.
    key_columns: Vec<Column>,
    /// Avro records (JSON without).
    avro: Option<Arc<AvroFormat>>,
}

impl Codec {
    /// Records whose values carry `schema`'s columns by name, keyed by `key`.
    pub fn new(schema: &Schema, key: &[String]) -> Result<Self> {
        let paths = schema.columns.iter().map(|c| c.name.clone()).collect();
        Self::with_paths(schema, paths, key)
    }

    /// A source's declared columns, each at its `path` (default its name).
    pub fn declared(schema: &Schema, declared: &[DeclaredColumn]) -> Result<Self> {
        let paths = declared
            .iter()
            .map(|c| c.path.clone().unwrap_or_else(|| c.name.clone()))
            .collect();
        Self::with_paths(schema, paths, &schema.primary_key)
    }

    fn with_paths(schema: &Schema, paths: Vec<String>, key: &[String]) -> Result<Self> {
        let key: Vec<usize> = key
            .iter()
            .map(|k| {
                schema
                    .columns
                    .iter()
                    .position(|c| &c.name == k)
                    .ok_or_else(|| Error::internal(format!("key column {k} is not in the schema")))
            })
            .collect::<Result<_>>()?;
        let key_columns = key.iter().map(|&i| schema.columns[i].clone()).collect();
        Ok(Codec {
            schema: schema.clone(),
            paths,
            key,
            key_columns,
            avro: None,
        })
    }

    /// The same codec in the record format `config` names, for its `role` (a sink writes
    /// records, a source only reads them).
    pub fn in_format(mut self, config: &KafkaConfig, role: Kind) -> Result<Self> {
        if let (Format::Avro, Some(registry)) = (config.format, &config.schema_registry) {
            let avro = match role {
                Kind::Sink => AvroFormat::writer(
                    registry,
                    &config.topic,
                    &self.schema.columns,
                    &self.key,
                    "sink",
                )?,
                _ => AvroFormat::reader(registry, "source", Kind::Source)?,
            };
            self.avro = Some(Arc::new(avro));
        }
        Ok(self)
    }

    /// Before writing: registers the record schemas (Avro), failing when the registry
    /// finds them incompatible with the subjects' latest versions.
    pub async fn prepare_write(&self) -> Result<()> {
        match &self.avro {
            Some(avro) => avro.register().await,
            None => Ok(()),
        }
    }

    /// Before decoding `records`: fetches the schemas they were written with (Avro).
    pub async fn prepare_read(&self, records: &[Record]) -> Result<()> {
        match &self.avro {
            Some(avro) => avro.learn(records).await,
            None => Ok(()),
        }
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn keyed(&self) -> bool {
        !self.key.is_empty()
    }

    /// Indexes of the key columns in the schema, in key order.
    pub fn key_indexes(&self) -> &[usize] {
        &self.key
    }

    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&i| self.schema.columns[i].name.clone())
            .collect()
    }

    /// The key columns alone, in key order (no key of their own).
    pub fn key_schema(&self) -> Schema {
        Schema {
            columns: self.key_columns.clone(),
            primary_key: Vec::new(),
        }
    }

    /// The key columns of a row, in key order.
    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.key.iter().map(|&i| row[i].clone()).collect()
    }

    /// The message key of a row: `{"k1": .., "k2": ..}` in key order; `None` without key
    /// columns.
    pub fn encode_key(&self, row: &[Value]) -> Result<Option<Vec<u8>>> {
        if self.key.is_empty() {
            return Ok(None);
        }
        self.encode_key_values(&self.key_of(row)).map(Some)
    }

    /// The message key of the key columns' values, in key order (a tombstone's key).
    pub fn encode_key_values(&self, key: &[Value]) -> Result<Vec<u8>> {
        self.encode_object(true, &self.key_columns, key)
    }

    /// The message value of a row: every column by name.
    pub fn encode_value(&self, row: &[Value]) -> Result<Vec<u8>> {
        self.encode_object(false, &self.schema.columns, row)
    }

    /// `values` of `columns` as one object: an Avro record of the key (`key`) or value
    /// schema, or a JSON object by column name.
    fn encode_object(&self, key: bool, columns: &[Column], values: &[Value]) -> Result<Vec<u8>> {
        if let Some(avro) = &self.avro {
            return avro.encode(key, columns, values);
        }
        let map: Map<String, Json> = columns
            .iter()
            .zip(values)
            .map(|(c, v)| (c.name.clone(), json_of(v)))
            .collect();
        Ok(Json::Object(map).to_string().into_bytes())
    }

    /// What `record` of `topic` means; a source error naming its partition and offset when
    /// it does not decode (not JSON, a value that does not fit its column, a key that does
    /// not match the value's key columns, a tombstone without a key).
    pub fn decode(&self, record: &Record, topic: &str) -> Result<Change> {
        let fail = |why: String| Error::new(Kind::Source, format!("{}: {why}", record.at(topic)));
        let key = match &record.key {
            Some(bytes) if self.keyed() => Some(self.decode_key(bytes).map_err(fail)?),
            _ => None,
        };
        let Some(bytes) = &record.value else {
            return match key {
                Some(key) => Ok(Change::Delete(key)),
                None => Err(fail(
                    "a tombstone (no value) without a key of the key columns".into(),
                )),
            };
        };
        let row = self.decode_value(bytes).map_err(fail)?;
        if let Some(i) = self.key.iter().find(|&&i| row[i] == Value::Null) {
            return Err(fail(format!(
                "key column {} is null in the value",
                self.schema.columns[*i].name
            )));
        }
        if let Some(key) = key {
            let in_value: Vec<&Value> = self.key.iter().map(|&i| &row[i]).collect();
            if key.iter().collect::<Vec<_>>() != in_value {
                return Err(fail(format!(
                    "the key {} does not match the key columns of the value",
                    shown(bytes_text(record.key.as_deref()))
                )));
            }
        }
        Ok(Change::Upsert(row))
    }

    /// The key columns of a key object (or, for one key column, a bare value).
    fn decode_key(&self, bytes: &[u8]) -> std::result::Result<Vec<Value>, String> {
        let key = match &self.avro {
            Some(avro) => {
                let columns: Vec<&Column> = self.key_columns.iter().collect();
                let paths: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                avro.decode(bytes, &columns, &paths)
                    .map_err(|e| format!("the key: {e}"))?
            }
            None => self.decode_json_key(bytes)?,
        };
        match self
            .key_columns
            .iter()
            .zip(&key)
            .find(|(_, v)| **v == Value::Null)
        {
            Some((c, _)) => Err(format!("the key has no value for key column {}", c.name)),
            None => Ok(key),
        }
    }

    fn decode_json_key(&self, bytes: &[u8]) -> std::result::Result<Vec<Value>, String> {
        let json: Json =
            serde_json::from_slice(bytes).map_err(|e| format!("the key is not JSON: {e}"))?;
        self.key_columns
            .iter()
            .map(|c| {
                let found = match &json {
                    Json::Object(map) => map.get(&c.name).unwrap_or(&Json::Null),
                    scalar if self.key.len() == 1 => scalar,
                    _ => &Json::Null,
                };
                value_of(found, &c.data_type).map_err(|e| format!("key column {}: {e}", c.name))
            })
            .collect()
    }

    fn decode_value(&self, bytes: &[u8]) -> std::result::Result<Vec<Value>, String> {
        let row = match &self.avro {
            Some(avro) => {
                let columns: Vec<&Column> = self.schema.columns.iter().collect();
                let paths: Vec<&str> = self.paths.iter().map(String::as_str).collect();
                avro.decode(bytes, &columns, &paths)?
            }
            None => self.decode_json_value(bytes)?,
        };
        match self
            .schema
            .columns
            .iter()
            .zip(&row)
            .find(|(c, v)| !c.nullable && **v == Value::Null)
        {
            Some((c, _)) => Err(format!(
                "column {} is declared not nullable but is null",
                c.name
            )),
            None => Ok(row),
        }
    }

    fn decode_json_value(&self, bytes: &[u8]) -> std::result::Result<Vec<Value>, String> {
        let json: Json =
            serde_json::from_slice(bytes).map_err(|e| format!("the value is not JSON: {e}"))?;
        if !json.is_object() {
            return Err(format!(
                "the value is not a JSON object: {}",
                shown(json.to_string())
            ));
        }
        self.schema
            .columns
            .iter()
            .zip(&self.paths)
            .map(|(c, path)| {
                let found = at_path(&json, path).unwrap_or(&Json::Null);
                value_of(found, &c.data_type).map_err(|e| format!("column {}: {e}", c.name))
            })
            .collect()
    }
}

fn bytes_text(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

fn shown(text: impl AsRef<str>) -> String {
    crate::text::clean(text.as_ref(), 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, DataType};

    fn schema() -> Schema {
        let col = |name: &str, data_type, nullable| Column {
            name: name.into(),
            data_type,
            nullable,
        };
        Schema {
            columns: vec![
                col("id", DataType::Int64, false),
                col("label", DataType::Text, true),
                col("day", DataType::Date, true),
            ],
            primary_key: vec!["id".into()],
        }
    }

    fn record(key: Option<&str>, value: Option<&str>) -> Record {
        Record {
            partition: 2,
            offset: 17,
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn positions_round_trip_and_refuse_other_text() {
        let offsets = Offsets::from([(0, 12), (1, 40)]);
        assert_eq!(format_position(&offsets), "kafka:0=12,1=40");
        assert_eq!(parse_position("kafka:0=12,1=40").unwrap(), offsets);
        assert_eq!(parse_position("kafka:").unwrap(), Offsets::new());
        for bad in ["pg:0/1", "kafka:0=x", "kafka:-1=3", "kafka:0"] {
            assert!(parse_position(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_encode_and_decode_as_json_records() {
        let codec = Codec::new(&schema(), &["id".into()]).unwrap();
        let row = vec![
            Value::Int(7),
            Value::Text("a\"b".into()),
            Value::Date(19_000),
        ];
        let key = codec.encode_key(&row).unwrap().unwrap();
        assert_eq!(String::from_utf8(key.clone()).unwrap(), r#"{"id":7}"#);
        let value = codec.encode_value(&row).unwrap();
        let back = Record {
            key: Some(key.clone()),
            value: Some(value),
            ..record(None, None)
        };
        assert_eq!(codec.decode(&back, "t").unwrap(), Change::Upsert(row));
        let tombstone = Record {
            key: Some(key),
            ..record(None, None)
        };
        assert_eq!(
            codec.decode(&tombstone, "t").unwrap(),
            Change::Delete(vec![Value::Int(7)])
        );
    }

    #[test]
    fn bad_records_name_their_partition_and_offset() {
        let codec = Codec::new(&schema(), &["id".into()]).unwrap();
        let cases = [
            (
                Some(r#"{"id":1}"#),
                Some("not json"),
                "the value is not JSON",
            ),
            (Some(r#"{"id":1}"#), Some(r#"{"id":"x"}"#), "column id"),
            (
                Some(r#"{"id":1}"#),
                Some(r#"{"label":"a"}"#),
                "not nullable",
            ),
            (Some(r#"{"id":2}"#), Some(r#"{"id":1}"#), "does not match"),
            (None, None, "tombstone"),
        ];
        for (key, value, why) in cases {
            let e = codec.decode(&record(key, value), "orders").unwrap_err();
            assert_eq!(e.kind, Kind::Source);
            assert!(
                e.message.contains("topic orders partition 2 offset 17"),
                "{e}"
            );
            assert!(e.message.contains(why), "{why}: {e}");
        }
        // A bare key value is the one key column.
        assert_eq!(
            codec.decode(&record(Some("5"), None), "t").unwrap(),
            Change::Delete(vec![Value::Int(5)])
        );
    }
}
