//! Kafka records <-> rows: a record's key is a JSON object of the key columns, its value a
//! JSON object of every column (the values as `connectors/json.rs` writes and reads them),
//! a tombstone has no value. Positions are `kafka:<partition>=<next offset>,...`.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use crate::connectors::DeclaredColumn;
use crate::connectors::json::{at_path, json_of, value_of};
use crate::error::{Error, Kind, Result};
use crate::model::{Schema, Value};

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
        let key = key
            .iter()
            .map(|k| {
                schema
                    .columns
                    .iter()
                    .position(|c| &c.name == k)
                    .ok_or_else(|| Error::internal(format!("key column {k} is not in the schema")))
            })
            .collect::<Result<_>>()?;
        Ok(Codec {
            schema: schema.clone(),
            paths,
            key,
        })
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
            columns: self
                .key
                .iter()
                .map(|&i| self.schema.columns[i].clone())
                .collect(),
            primary_key: Vec::new(),
        }
    }

    /// The key columns of a row, in key order.
    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.key.iter().map(|&i| row[i].clone()).collect()
    }

    /// The message key of a row: `{"k1": .., "k2": ..}` in key order; `None` without key
    /// columns.
    pub fn encode_key(&self, row: &[Value]) -> Option<Vec<u8>> {
        if self.key.is_empty() {
            return None;
        }
        let mut map = Map::new();
        for &i in &self.key {
            map.insert(self.schema.columns[i].name.clone(), json_of(&row[i]));
        }
        Some(Json::Object(map).to_string().into_bytes())
    }

    /// The message value of a row: every column by name.
    pub fn encode_value(&self, row: &[Value]) -> Vec<u8> {
        let map: Map<String, Json> = self
            .schema
            .columns
            .iter()
            .zip(row)
            .map(|(c, v)| (c.name.clone(), json_of(v)))
            .collect();
        Json::Object(map).to_string().into_bytes()
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

    /// The key columns of a key object (or, for one key column, a bare JSON value).
    fn decode_key(&self, bytes: &[u8]) -> std::result::Result<Vec<Value>, String> {
        let json: Json =
            serde_json::from_slice(bytes).map_err(|e| format!("the key is not JSON: {e}"))?;
        self.key
            .iter()
            .map(|&i| {
                let c = &self.schema.columns[i];
                let found = match &json {
                    Json::Object(map) => map.get(&c.name).unwrap_or(&Json::Null),
                    scalar if self.key.len() == 1 => scalar,
                    _ => &Json::Null,
                };
                if found.is_null() {
                    return Err(format!("the key has no value for key column {}", c.name));
                }
                value_of(found, &c.data_type).map_err(|e| format!("key column {}: {e}", c.name))
            })
            .collect()
    }

    fn decode_value(&self, bytes: &[u8]) -> std::result::Result<Vec<Value>, String> {
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
                let v =
                    value_of(found, &c.data_type).map_err(|e| format!("column {}: {e}", c.name))?;
                if v == Value::Null && !c.nullable {
                    return Err(format!(
                        "column {} is declared not nullable but is null",
                        c.name
                    ));
                }
                Ok(v)
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
        let key = codec.encode_key(&row).unwrap();
        assert_eq!(String::from_utf8(key.clone()).unwrap(), r#"{"id":7}"#);
        let value = codec.encode_value(&row);
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
