//! A test double of the Confluent Schema Registry's REST API, for the Kafka Avro tests: no
//! registry server installs on this machine (none is on crates.io, PyPI or npm that runs
//! without a JVM), so this serves the subset dpone uses, on a loopback port, in memory:
//!
//! - `POST /subjects/{subject}/versions` registers an Avro schema: the same schema (by
//!   canonical form) keeps its id; a new one must pass the subject's compatibility rule
//!   against the latest version (else 409), then gets the next id;
//! - `POST /compatibility/subjects/{subject}/versions/latest`: `{"is_compatible": ..}`,
//!   404 (error code 40401) for a subject without versions;
//! - `GET /schemas/ids/{id}`: the schema text, 404 (40403) for an unknown id.
//!
//! Compatibility is BACKWARD, the registry's default (the new schema reads data written with
//! the latest one), checked by `apache-avro`. The real registry is needed for `kafka_live`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

use crate::rest_api::{read_request, reply};

#[derive(Debug, Default)]
struct State {
    /// Schema texts by id (ids from 1).
    schemas: Vec<String>,
    /// Ids per subject, oldest first.
    subjects: HashMap<String, Vec<usize>>,
}

/// A running double; it serves until the test's runtime ends.
#[derive(Debug)]
pub struct Registry {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Registry {
    pub async fn start() -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut socket).await else {
                        return;
                    };
                    let (status, body) =
                        answer(&state, &request.method, &request.target, &request.body);
                    reply(&mut socket, status, "", body.to_string().as_bytes(), false).await;
                });
            }
        });
        Registry { url, state }
    }

    /// Registers `schema` under `subject` as another producer would; returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        match register(&mut self.state.lock().unwrap(), subject, schema) {
            Ok(id) => id as u32,
            Err(why) => panic!("{why}"),
        }
    }

    /// The versions of `subject`.
    pub fn versions(&self, subject: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .subjects
            .get(subject)
            .map_or(0, Vec::len)
    }
}

fn error(code: u32, message: &str) -> Json {
    json!({ "error_code": code, "message": message })
}

fn answer(state: &Mutex<State>, method: &str, target: &str, body: &[u8]) -> (&'static str, Json) {
    let path = target.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let schema_of = |body: &[u8]| -> Option<String> {
        let json: Json = serde_json::from_slice(body).ok()?;
        let kind = json["schemaType"].as_str().unwrap_or("AVRO");
        (kind == "AVRO").then(|| json["schema"].as_str().map(str::to_string))?
    };
    let mut s = state.lock().unwrap();
    match (method, parts.as_slice()) {
        ("POST", ["subjects", subject, "versions"]) => {
            let Some(schema) = schema_of(body) else {
                return (
                    "422 Unprocessable Entity",
                    error(42201, "not an Avro schema"),
                );
            };
            match register(&mut s, subject, &schema) {
                Ok(id) => ("200 OK", json!({ "id": id })),
                Err(why) => ("409 Conflict", error(409, &why)),
            }
        }
        ("POST", ["compatibility", "subjects", subject, "versions", "latest"]) => {
            let Some(schema) = schema_of(body) else {
                return (
                    "422 Unprocessable Entity",
                    error(42201, "not an Avro schema"),
                );
            };
            match latest(&s, subject) {
                None => ("404 Not Found", error(40401, "Subject not found")),
                Some(old) => (
                    "200 OK",
                    json!({ "is_compatible": compatible(subject, &old, &schema).is_ok() }),
                ),
            }
        }
        ("GET", ["schemas", "ids", id]) => {
            match id
                .parse::<usize>()
                .ok()
                .and_then(|i| s.schemas.get(i.wrapping_sub(1)))
            {
                Some(schema) => ("200 OK", json!({ "schema": schema })),
                None => ("404 Not Found", error(40403, "Schema not found")),
            }
        }
        _ => ("404 Not Found", error(404, "not served by the test double")),
    }
}

fn latest(s: &State, subject: &str) -> Option<String> {
    let id = *s.subjects.get(subject)?.last()?;
    Some(s.schemas[id - 1].clone())
}

fn canonical(text: &str) -> Result<String, String> {
    Schema::parse_str(text)
        .map(|s| s.canonical_form())
        .map_err(|e| format!("not an Avro schema: {e}"))
}

/// BACKWARD: the new schema reads data written with the subject's latest version.
fn compatible(subject: &str, old: &str, new: &str) -> Result<(), String> {
    let parse = |t: &str| Schema::parse_str(t).map_err(|e| e.to_string());
    let (old, new) = (parse(old)?, parse(new)?);
    SchemaCompatibility::can_read(&old, &new).map_err(|e| format!("Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {e}"))
}

fn register(s: &mut State, subject: &str, schema: &str) -> Result<usize, String> {
    let form = canonical(schema)?;
    let ids = s.subjects.get(subject).cloned().unwrap_or_default();
    for &id in &ids {
        if canonical(&s.schemas[id - 1])? == form {
            return Ok(id);
        }
    }
    if let Some(old) = latest(s, subject) {
        compatible(subject, &old, schema)?;
    }
    let existing = s
        .schemas
        .iter()
        .position(|t| canonical(t).is_ok_and(|c| c == form));
    let id = match existing {
        Some(i) => i + 1,
        None => {
            s.schemas.push(schema.to_string());
            s.schemas.len()
        }
    };
    s.subjects.entry(subject.to_string()).or_default().push(id);
    Ok(id)
}
