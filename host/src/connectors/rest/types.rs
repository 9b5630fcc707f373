//! A response's records as the declared columns, taken straight from the body: the parser
//! walks the response once and materializes only the values a read needs (each declared
//! cell of each record, and the few response fields pagination reads), never a tree of the
//! whole response. Then each cell becomes a portable value by its column's type
//! ([`crate::connectors::json::value_of`], the JSON codec every JSON source shares).
//!
//! Contract: a record's cell is what [`crate::connectors::json::at_path`] would find at the
//! column's path (JSON `null` where any step is missing; for a key a response repeats, its
//! last value); a value that does not fit its column is an error naming the page, the record
//! and the column, never a NULL.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use crate::connectors::json;
use crate::error::{Error, Result};
use crate::model::{Column, Value};

/// The dotted paths a read takes from JSON, as a tree with one level per step.
#[derive(Debug, Default)]
struct Node {
    /// The slots the value here goes to.
    slots: Vec<usize>,
    /// The record array is here (top level only).
    records: bool,
    /// The next steps.
    steps: Vec<Edge>,
    /// Every slot at or below this node, and whether the records are: what a key repeated
    /// in an object resets before its later value is walked, so the last value wins as in
    /// a parsed tree.
    below: Vec<usize>,
    records_below: bool,
}

/// A step: an object field by name, or (when the name is a number, as `at_path` reads
/// it) an array element by index.
#[derive(Debug)]
struct Edge {
    name: String,
    index: Option<usize>,
    node: Node,
}

impl Node {
    /// The node of `path` (`a.b.0`), created as needed; an empty path is this node.
    fn add(&mut self, path: &str) -> &mut Node {
        if path.is_empty() {
            return self;
        }
        path.split('.').fold(self, |node, step| {
            let at = match node.steps.iter().position(|e| e.name == step) {
                Some(at) => at,
                None => {
                    node.steps.push(Edge {
                        name: step.to_string(),
                        index: step.parse().ok(),
                        node: Node::default(),
                    });
                    node.steps.len() - 1
                }
            };
            &mut node.steps[at].node
        })
    }

    /// Fills in `below` and `records_below`, once every path is added.
    fn finish(&mut self) {
        self.below = self.slots.clone();
        self.records_below = self.records;
        for edge in &mut self.steps {
            edge.node.finish();
            self.below.extend_from_slice(&edge.node.below);
            self.records_below |= edge.node.records_below;
        }
    }

    fn step(&self, key: &str) -> Option<&Node> {
        self.steps.iter().find(|e| e.name == key).map(|e| &e.node)
    }

    fn element(&self, index: usize) -> Option<&Node> {
        self.steps
            .iter()
            .find(|e| e.index == Some(index))
            .map(|e| &e.node)
    }

    /// Whether a value here is taken whole, rather than only walked through.
    fn takes_value(&self) -> bool {
        !self.slots.is_empty() || self.records
    }
}

/// What a read takes from each response: the records at the records path, each record's
/// declared cells, and the value at each of the pagination's paths.
#[derive(Debug)]
pub struct Extract {
    top: Node,
    record: Node,
    columns: usize,
    extras: usize,
}

/// One response, taken apart.
#[derive(Debug)]
pub struct Taken {
    /// Each record as its cells, in declared column order (`Null` where a record has none);
    /// `None` when the records path holds no array.
    pub records: Option<Vec<Vec<Json>>>,
    /// The value at each extra path, in order (`Null` where missing).
    pub extras: Vec<Json>,
}

impl Extract {
    /// Records at `records_path` (empty: the response is the array), each column's cell at
    /// its path in `column_paths` inside a record, and `extra_paths` from the top.
    pub fn new(records_path: &str, column_paths: &[&str], extra_paths: &[&str]) -> Self {
        let mut top = Node::default();
        top.add(records_path).records = true;
        for (i, path) in extra_paths.iter().enumerate() {
            top.add(path).slots.push(i);
        }
        let mut record = Node::default();
        for (i, path) in column_paths.iter().enumerate() {
            record.add(path).slots.push(i);
        }
        top.finish();
        record.finish();
        Extract {
            top,
            record,
            columns: column_paths.len(),
            extras: extra_paths.len(),
        }
    }

    /// Takes `body` apart; an error when it is not JSON.
    pub fn parse(&self, body: &[u8]) -> serde_json::Result<Taken> {
        let mut taken = Taken {
            records: None,
            extras: vec![Json::Null; self.extras],
        };
        let mut de = serde_json::Deserializer::from_slice(body);
        At {
            node: &self.top,
            slots: &mut taken.extras,
            records: Some(RecordsOut {
                record: &self.record,
                columns: self.columns,
                out: &mut taken.records,
            }),
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(taken)
    }
}

/// Where the records go, at the top level.
struct RecordsOut<'n, 's> {
    record: &'n Node,
    columns: usize,
    out: &'s mut Option<Vec<Vec<Json>>>,
}

impl RecordsOut<'_, '_> {
    fn reborrow(&mut self) -> RecordsOut<'_, '_> {
        RecordsOut {
            record: self.record,
            columns: self.columns,
            out: &mut *self.out,
        }
    }

    /// A record's cells, from a value already materialized.
    fn row_of(&self, record: &Json) -> Vec<Json> {
        let mut row = vec![Json::Null; self.columns];
        fill(self.record, record, &mut row, None);
        row
    }
}

/// The value at `node`: taken into `slots` (and the records), or walked for the paths below.
struct At<'n, 's> {
    node: &'n Node,
    slots: &'s mut [Json],
    records: Option<RecordsOut<'n, 's>>,
}

impl At<'_, '_> {
    fn below<'c>(&'c mut self, node: &'c Node) -> At<'c, 'c> {
        At {
            node,
            slots: &mut *self.slots,
            records: self.records.as_mut().map(RecordsOut::reborrow),
        }
    }
}

/// Puts a materialized `value` at `node` into `slots` and `records`, and walks it for the
/// paths below: what the parse does where a value is taken whole.
fn fill(node: &Node, value: &Json, slots: &mut [Json], mut records: Option<&mut RecordsOut>) {
    for &slot in &node.slots {
        slots[slot] = value.clone();
    }
    if node.records
        && let Some(out) = records.as_deref_mut()
    {
        *out.out = match value {
            Json::Array(items) => Some(items.iter().map(|r| out.row_of(r)).collect()),
            _ => None,
        };
    }
    for edge in &node.steps {
        if let Some(next) = json::at_path(value, &edge.name) {
            fill(&edge.node, next, slots, records.as_deref_mut());
        }
    }
}

impl<'de> DeserializeSeed<'de> for At<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(mut self, d: D) -> std::result::Result<(), D::Error> {
        let node = self.node;
        // What an earlier value of a repeated key left here gives way to this one.
        for &slot in &node.below {
            self.slots[slot] = Json::Null;
        }
        if node.records_below
            && let Some(out) = self.records.as_mut()
        {
            *out.out = None;
        }
        let only_records = node.records && node.slots.is_empty() && node.steps.is_empty();
        if only_records && let Some(out) = self.records.take() {
            *out.out = d.deserialize_any(Records {
                record: out.record,
                columns: out.columns,
            })?;
            return Ok(());
        }
        if node.takes_value() {
            let value = <Json as de::Deserialize>::deserialize(d)?;
            match node.slots.as_slice() {
                // A cell and nothing else (the usual column): moved, not copied.
                &[slot] if !node.records && node.steps.is_empty() => self.slots[slot] = value,
                _ => fill(node, &value, self.slots, self.records.as_mut()),
            }
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(step) = map.next_key_seed(Step(self.node))? {
            match step {
                Some(child) => map.next_value_seed(self.below(child))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> std::result::Result<(), A::Error> {
        if self.node.steps.is_empty() {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            let more = match self.node.element(index) {
                Some(child) => seq.next_element_seed(self.below(child))?.is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    // A scalar has no paths below it: nothing to take.
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        Ok(())
    }
}

/// A field name, matched against the steps of a node without allocating.
struct Step<'n>(&'n Node);

impl<'de, 'n> DeserializeSeed<'de> for Step<'n> {
    type Value = Option<&'n Node>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'n> Visitor<'de> for Step<'n> {
    type Value = Option<&'n Node>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.0.step(key))
    }
}

/// The record array: each element's cells; `None` for anything but an array.
struct Records<'n> {
    record: &'n Node,
    columns: usize,
}

impl<'de> Visitor<'de> for Records<'_> {
    type Value = Option<Vec<Vec<Json>>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            let mut row = vec![Json::Null; self.columns];
            let seed = At {
                node: self.record,
                slots: &mut row,
                records: None,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(Some(rows));
            }
            rows.push(row);
        }
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
}

/// A record's cells as a row of `columns` (declared order, each with its path for errors):
/// each cell converted by its column's type; a value that does not fit, or a NULL in a
/// column declared `nullable: false`, fails naming the page, the record and the column.
pub fn row_of(
    cells: &[Json],
    columns: &[(Column, String)],
    page: u64,
    index: usize,
) -> Result<Vec<Value>> {
    cells
        .iter()
        .zip(columns)
        .map(|(cell, (column, path))| {
            let fail = |why: String| {
                Error::source(format!(
                    "page {page}, record {index}, column `{}` (path `{path}`): {why}",
                    column.name
                ))
            };
            let value = json::value_of(cell, &column.data_type).map_err(fail)?;
            if value == Value::Null && !column.nullable {
                return Err(fail("null or missing, but declared nullable: false".into()));
            }
            Ok(value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The parse takes what `at_path` finds on the whole tree, for every shape of path.
    #[test]
    fn a_parse_takes_what_the_paths_find() {
        let text = r#"{
            "meta": { "next": "/p?page=2", "total": 3, "pages": [10, 20] },
            "data": [
                { "id": 1, "name": "a", "tag": { "k": "x", "list": [5, 6] }, "skip": { "deep": [1, {"a": 2}] } },
                { "id": 2, "name": null, "tag": "flat", "na\u006de": "escaped key" },
                { "id": 3, "id": 4, "tag": { "k": "y\"z" } },
                { "id": 5, "tag": { "k": 1, "list": [7, 8] }, "tag": "flat" },
                "not an object",
                [1, 2]
            ]
        }"#;
        let body: Json = serde_json::from_str(text).unwrap();
        let columns = [
            "id",
            "name",
            "tag.k",
            "tag.list.1",
            "tag",
            "missing.x",
            "tag.list.01",
        ];
        let extras = ["meta.next", "meta.total", "meta.pages.1", "meta", "nope"];
        let extract = Extract::new("data", &columns, &extras);
        let taken = extract.parse(text.as_bytes()).unwrap();
        let expected: Vec<Vec<Json>> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .map(|p| json::at_path(r, p).cloned().unwrap_or(Json::Null))
                    .collect()
            })
            .collect();
        // serde_json keeps a repeated key's last value, as the parse does; an escaped key is
        // its unescaped text.
        assert_eq!(expected[2][0], json!(4));
        assert_eq!(expected[1][1], json!("escaped key"));
        assert_eq!(taken.records.unwrap(), expected);
        let extras_expected: Vec<Json> = extras
            .iter()
            .map(|p| json::at_path(&body, p).cloned().unwrap_or(Json::Null))
            .collect();
        assert_eq!(taken.extras, extras_expected);
    }

    #[test]
    fn records_are_the_response_itself_or_nothing_when_not_an_array() {
        let whole = Extract::new("", &["id"], &[]);
        let taken = whole.parse(br#"[{"id": 1}, {"id": 2}]"#).unwrap();
        assert_eq!(taken.records.unwrap(), vec![vec![json!(1)], vec![json!(2)]]);
        let nested = Extract::new("result.items", &["id"], &["result"]);
        for body in [
            &br#"{"result": {"items": {"id": 1}}}"#[..],
            br#"{"other": []}"#,
            b"42",
            br#"{"result": {"items": [{"id": 1}]}, "result": {}}"#,
        ] {
            assert_eq!(nested.parse(body).unwrap().records, None);
            let walked = Extract::new("result.items", &["id"], &[]);
            assert_eq!(walked.parse(body).unwrap().records, None);
        }
        // A records path under a value taken whole is read from that value.
        let taken = nested
            .parse(br#"{"result": {"items": [{"id": 7}]}}"#)
            .unwrap();
        assert_eq!(taken.records.unwrap(), vec![vec![json!(7)]]);
        assert_eq!(taken.extras, vec![json!({"items": [{"id": 7}]})]);
        assert!(nested.parse(b"{\"result\": ").is_err());
        assert!(nested.parse(b"[] []").is_err());
    }
}
