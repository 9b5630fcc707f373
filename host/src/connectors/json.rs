//! JSON values into portable values, by the column types the manifest declares, and back:
//! the one JSON codec of the connectors whose records are JSON (a REST API's pages, Kafka
//! messages); cursor values into request parameters.
//!
//! Contract: a JSON value that does not fit its column is an error, never a NULL; JSON
//! `null` or a missing field is NULL, refused for a column declared `nullable: false`.

use base64::Engine as _;
use serde_json::Value as Json;

use crate::model::{self, DataType, Value, time};

/// The value at a dotted `path` of `json` (`a.b.0.c`: object fields and array indexes);
/// `None` when any step is missing. An empty path is `json` itself.
pub fn at_path<'a>(json: &'a Json, path: &str) -> Option<&'a Json> {
    if path.is_empty() {
        return Some(json);
    }
    path.split('.').try_fold(json, |j, step| match j {
        Json::Object(map) => map.get(step),
        Json::Array(items) => items.get(step.parse::<usize>().ok()?),
        _ => None,
    })
}

/// [`at_path`], to change or take the value found.
pub fn at_path_mut<'a>(json: &'a mut Json, path: &str) -> Option<&'a mut Json> {
    if path.is_empty() {
        return Some(json);
    }
    path.split('.').try_fold(json, |j, step| match j {
        Json::Object(map) => map.get_mut(step),
        Json::Array(items) => items.get_mut(step.parse::<usize>().ok()?),
        _ => None,
    })
}

/// `json` as a value of type `t`; the error says what was expected (the caller adds where).
pub fn value_of(json: &Json, t: &DataType) -> std::result::Result<Value, String> {
    let want = |what: &str| Err(format!("expected {what}, found {}", shown(json)));
    if json.is_null() {
        return Ok(Value::Null);
    }
    Ok(match t {
        DataType::Boolean => match json {
            Json::Bool(b) => Value::Boolean(*b),
            _ => return want("true or false"),
        },
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let n = match json {
                Json::Number(n) => n.as_i64(),
                // Big integers often travel as strings, so JavaScript clients keep them exact.
                Json::String(s) => s.parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) => Value::Int(n),
                None => return want("a 64-bit integer"),
            }
        }
        DataType::Float32 | DataType::Float64 => match json {
            Json::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            _ => return want("a number"),
        },
        DataType::Decimal(spec) => {
            let text = match json {
                Json::Number(n) => n.to_string(),
                Json::String(s) => s.clone(),
                _ => return want("a decimal number or string"),
            };
            match spec {
                Some(spec) => match model::parse_decimal(&text, spec.scale) {
                    Some(unscaled) => Value::Decimal(model::decimal_text(unscaled, spec.scale)),
                    None => {
                        return want(&format!(
                            "a decimal with at most {} fraction digits",
                            spec.scale
                        ));
                    }
                },
                // Unconstrained: any precision and scale, kept as the exact text.
                None if decimal_syntax(text.trim()) => Value::Decimal(text.trim().to_string()),
                None => return want("a decimal number"),
            }
        }
        DataType::Text => match json {
            Json::String(s) => Value::Text(s.clone()),
            _ => return want("a string"),
        },
        DataType::Json => Value::Json(json.to_string()),
        DataType::Uuid => match json.as_str().and_then(model::parse_uuid) {
            Some(bytes) => Value::Uuid(model::uuid_text(&bytes)),
            None => return want("a uuid string"),
        },
        DataType::Bytes => match json
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        {
            Some(bytes) => Value::Bytes(bytes),
            None => return want("base64 text"),
        },
        DataType::Date => match json.as_str().and_then(time::parse_date) {
            Some(days) => Value::Date(days),
            None => return want("a date YYYY-MM-DD"),
        },
        DataType::Timestamp => match json.as_str().and_then(time::parse_timestamp) {
            Some(micros) => Value::Timestamp(micros),
            None => return want("a timestamp YYYY-MM-DDTHH:MM:SS[.ffffff]"),
        },
        DataType::TimestampTz => match json.as_str().and_then(time::parse_timestamp) {
            Some(micros) => Value::TimestampTz(micros),
            None => return want("a timestamp with a zone, e.g. 2024-01-02T03:04:05Z"),
        },
    })
}

/// A cursor value as a request parameter: ISO 8601 for dates and timestamps (`Z` for
/// those with a zone), the value's text otherwise.
pub fn param_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal(s) | Value::Text(s) | Value::Uuid(s) | Value::Json(s) => s.clone(),
        Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::Date(d) => time::format_date(*d),
        Value::Timestamp(m) => time::format_timestamp(*m).replacen(' ', "T", 1),
        Value::TimestampTz(m) => format!("{}Z", time::format_timestamp(*m).replacen(' ', "T", 1)),
    }
}

/// A value as an API would send it, the inverse of [`value_of`]: what the matrix seeds a
/// mock API with.
pub fn json_of(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => Json::from(*f),
        Value::Json(s) => serde_json::from_str(s).unwrap_or(Json::Null),
        other => Json::String(param_text(other)),
    }
}

/// `[-+]digits[.digits]` (or `.digits`): the text of an unconstrained decimal.
fn decimal_syntax(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    (!int.is_empty() || !frac.is_empty())
        && int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
}

/// At most 80 characters of a JSON value, for an error.
fn shown(json: &Json) -> String {
    let text = json.to_string();
    crate::text::clean(&text, 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DecimalSpec;

    #[test]
    fn values_fit_their_columns_or_fail_saying_why() {
        let j = |s: &str| serde_json::from_str::<Json>(s).unwrap();
        let dec = DataType::Decimal(Some(DecimalSpec {
            precision: 18,
            scale: 4,
        }));
        assert_eq!(
            value_of(&j("12.5"), &dec),
            Ok(Value::Decimal("12.5000".into()))
        );
        assert_eq!(
            value_of(&j("\"-0.0001\""), &dec),
            Ok(Value::Decimal("-0.0001".into()))
        );
        assert!(
            value_of(&j("1.00001"), &dec)
                .unwrap_err()
                .contains("4 fraction digits")
        );
        let unconstrained = DataType::Decimal(None);
        assert_eq!(
            value_of(
                &j("\"-123456789012345678901234567890.123456789012\""),
                &unconstrained
            ),
            Ok(Value::Decimal(
                "-123456789012345678901234567890.123456789012".into()
            ))
        );
        assert!(value_of(&j("\"1.2.3\""), &unconstrained).is_err());
        assert_eq!(
            value_of(&j("\"9007199254740993\""), &DataType::Int64),
            Ok(Value::Int(9_007_199_254_740_993))
        );
        assert!(
            value_of(&j("1.5"), &DataType::Int64)
                .unwrap_err()
                .contains("64-bit integer")
        );
        assert!(
            value_of(&j("12"), &DataType::Text)
                .unwrap_err()
                .contains("found 12")
        );
        assert_eq!(value_of(&j("null"), &DataType::Text), Ok(Value::Null));
        assert_eq!(
            value_of(
                &j("\"2024-01-02T03:04:05.000006+01:00\""),
                &DataType::TimestampTz
            ),
            Ok(Value::TimestampTz(
                time::parse_timestamp("2024-01-02 02:04:05.000006").unwrap()
            ))
        );
        assert_eq!(
            value_of(&j("\"AAEC\""), &DataType::Bytes),
            Ok(Value::Bytes(vec![0, 1, 2]))
        );
        assert_eq!(
            value_of(&j("{\"a\": [1]}"), &DataType::Json),
            Ok(Value::Json("{\"a\":[1]}".into()))
        );
    }

    #[test]
    fn paths_walk_objects_and_arrays() {
        let doc: Json = serde_json::from_str(r#"{"data": {"items": [{"id": 7}]}}"#).unwrap();
        assert_eq!(at_path(&doc, "data.items.0.id"), Some(&Json::from(7)));
        assert_eq!(at_path(&doc, "data.missing"), None);
        assert_eq!(at_path(&doc, ""), Some(&doc));
    }

    #[test]
    fn cursor_parameters_are_iso_8601() {
        let m = time::parse_timestamp("2024-01-02 03:04:05.5").unwrap();
        assert_eq!(
            param_text(&Value::Timestamp(m)),
            "2024-01-02T03:04:05.500000"
        );
        assert_eq!(
            param_text(&Value::TimestampTz(m)),
            "2024-01-02T03:04:05.500000Z"
        );
        assert_eq!(param_text(&Value::Int(5)), "5");
    }
}
