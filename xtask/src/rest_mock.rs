//! A mock JSON API for the REST source: an HTTP/1.1 server on a loopback port serving one
//! record set in every pagination style, behind either auth scheme, with a `since` filter
//! and switchable faults. `cargo xtask matrix --mode mock_local` runs it for the matrix's
//! REST cases; the component tests start it in-process (this file is their module too).
//! Plain tokio rather than a web framework: the faults (a body cut short, a page that
//! shifts) are easiest to produce at the socket.
//!
//! `PUT` on any path replaces the record set with the JSON array in the body (how the
//! matrix seeds a generation of its model). Paths (each answers `GET`, page size `limit`
//! or `per_page`, default 10):
//! - `/all`: every record, as a bare JSON array;
//! - `/page?page=N`: `{"data": [...], "total": T}`, pages from 1;
//! - `/offset?offset=O`: the same shape, by offset;
//! - `/cursor?cursor=C`: `{"data": [...], "next_cursor": "..." | null}`;
//! - `/link?page=N`: a bare array, the next page in a `Link: <...>; rel="next"` header;
//! - `/next?page=N`: `{"data": [...], "next": "/next?page=N+1" | null}`;
//! - `/model?page=N`: as `/page` (the path of the matrix's guides).
//!
//! `since=<timestamp>` keeps the records whose `updated_at` is later (compared as text, so
//! ISO 8601 in one format).
//!
//! Each record is rendered as JSON once, when it is set: a page is those texts joined, so
//! serving a page costs about its copy and the benchmark measures the clients, not this
//! server.

use std::sync::{Arc, Mutex};

use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the API requires of a request.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    /// username, password.
    Basic(String, String),
    /// `X-Api-Key` header.
    KeyHeader(String),
    /// `api_key` query parameter.
    KeyQuery(String),
}

/// Faults for the next requests, each counted down as it fires.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer 429 with `Retry-After: 0`.
    pub rate_limited: u32,
    /// Answer 500.
    pub server_errors: u32,
    /// Announce the whole body but send half of it.
    pub truncated: u32,
    /// Wait this long before answering (past a client's timeout).
    pub slow_ms: u64,
    pub slow: u32,
    /// Offset pages after the first begin one record early, as if a record had been
    /// inserted at the head between requests: every such page repeats a record.
    pub shifting_offsets: bool,
}

/// The record set, and each record rendered as JSON text.
#[derive(Debug, Default)]
struct Records {
    values: Vec<Json>,
    texts: Vec<String>,
}

impl Records {
    fn new(values: Vec<Json>) -> Self {
        let texts = values.iter().map(Json::to_string).collect();
        Records { values, texts }
    }
}

#[derive(Debug, Default)]
struct State {
    records: Records,
    auth: Auth,
    faults: Faults,
    /// Every request line served, with its headers' names (never values).
    log: Vec<String>,
}

/// A running mock API; it stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct MockApi {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl MockApi {
    pub async fn start(records: Vec<Json>) -> MockApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            records: Records::new(records),
            ..State::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone()));
            }
        });
        MockApi { base, state }
    }

    pub fn set_records(&self, records: Vec<Json>) {
        self.state.lock().unwrap().records = Records::new(records);
    }

    pub fn set_auth(&self, auth: Auth) {
        self.state.lock().unwrap().auth = auth;
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// The request lines served so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

/// One HTTP/1.1 request, as far as the mocks need it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    /// `Content-Length` bytes of body.
    pub body: Vec<u8>,
}

/// Reads one request from `socket`; `None` when it closes or sends more than 1 MiB of head.
pub async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 1 << 20 {
            return None;
        }
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
    let mut body = head.split_off(end);
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

/// Writes a response with `body` (JSON) and closes the connection; `cut` sends only the
/// first half of the body its `Content-Length` announces.
pub async fn reply(
    socket: &mut tokio::net::TcpStream,
    status: &str,
    extra_headers: &str,
    body: &[u8],
    cut: bool,
) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    );
    let sent = if cut { &body[..body.len() / 2] } else { body };
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(sent).await;
    let _ = socket.shutdown().await;
}

async fn serve(mut socket: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let Some(Request {
        method,
        target,
        headers,
        body,
    }) = read_request(&mut socket).await
    else {
        return;
    };
    if method == "PUT" {
        let status = match serde_json::from_slice::<Vec<Json>>(&body) {
            Ok(records) => {
                state.lock().unwrap().records = Records::new(records);
                "204 No Content"
            }
            Err(_) => "400 Bad Request",
        };
        reply(&mut socket, status, "", b"", false).await;
        return;
    }
    let (status, extra, body, cut, delay) = respond(&state, &target, &headers);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    reply(&mut socket, &status, &extra, &body, cut).await;
}

/// (status line, extra header lines, body, cut the body short, delay ms).
fn respond(
    state: &Mutex<State>,
    target: &str,
    headers: &[(String, String)],
) -> (String, String, Vec<u8>, bool, u64) {
    let mut s = state.lock().unwrap();
    let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    s.log.push(format!("GET {target} [{}]", names.join(",")));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let fail = |status: &str, why: &str| {
        (
            status.to_string(),
            String::new(),
            json!({ "error": why }).to_string().into_bytes(),
            false,
            0,
        )
    };
    let authorized = match &s.auth {
        Auth::None => true,
        Auth::Bearer(t) => header("authorization") == Some(format!("Bearer {t}")),
        Auth::Basic(u, p) => header("authorization") == Some(format!("Basic {}", basic(u, p))),
        Auth::KeyHeader(k) => header("x-api-key").as_deref() == Some(k.as_str()),
        Auth::KeyQuery(k) => param("api_key").as_deref() == Some(k.as_str()),
    };
    if !authorized {
        return fail("401 Unauthorized", "missing or wrong credentials");
    }
    let f = &mut s.faults;
    if f.server_errors > 0 {
        f.server_errors -= 1;
        return fail("500 Internal Server Error", "the mock failed on purpose");
    }
    if f.rate_limited > 0 {
        f.rate_limited -= 1;
        let (status, _, body, _, _) = fail("429 Too Many Requests", "slow down");
        return (status, "Retry-After: 0\r\n".into(), body, false, 0);
    }
    let cut = f.truncated > 0;
    f.truncated = f.truncated.saturating_sub(1);
    let delay = if f.slow > 0 {
        f.slow -= 1;
        f.slow_ms
    } else {
        0
    };
    let shifting = f.shifting_offsets;
    let since = param("since");
    // The records served, by index: those after `since`, when given.
    let chosen: Vec<usize> = match &since {
        Some(since) => (0..s.records.values.len())
            .filter(|&i| {
                s.records.values[i]["updated_at"]
                    .as_str()
                    .is_some_and(|u| u > since.as_str())
            })
            .collect(),
        None => (0..s.records.values.len()).collect(),
    };
    let limit: usize = param("limit")
        .or_else(|| param("per_page"))
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    let total = chosen.len();
    let texts = &s.records.texts;
    // The JSON array of the chosen records from `from`, `take` of them.
    let array = |from: usize, take: usize| -> String {
        let items: Vec<&str> = chosen
            .iter()
            .skip(from)
            .take(take)
            .map(|&i| texts[i].as_str())
            .collect();
        format!("[{}]", items.join(","))
    };
    let slice = |from: usize| array(from, limit);
    let number = |k: &str, default: usize| param(k).and_then(|v| v.parse().ok()).unwrap_or(default);
    let ok =
        |body: String, extra: String| ("200 OK".to_string(), extra, body.into_bytes(), cut, delay);
    let text = |v: Option<String>| Json::from(v).to_string();
    match path {
        "/all" => ok(array(0, total), String::new()),
        "/page" | "/model" => {
            let page = number("page", 1).max(1);
            ok(
                format!(
                    r#"{{"data":{},"total":{total}}}"#,
                    slice((page - 1) * limit)
                ),
                String::new(),
            )
        }
        "/offset" => {
            let offset = number("offset", 0);
            let from = if shifting && offset > 0 {
                offset - 1
            } else {
                offset
            };
            ok(
                format!(r#"{{"data":{},"total":{total}}}"#, slice(from)),
                String::new(),
            )
        }
        "/cursor" => {
            let from = number("cursor", 0);
            let next = (from + limit < total).then(|| (from + limit).to_string());
            ok(
                format!(r#"{{"data":{},"next_cursor":{}}}"#, slice(from), text(next)),
                String::new(),
            )
        }
        "/link" => {
            let page = number("page", 1).max(1);
            let more = page * limit < total;
            let link = if more {
                format!(
                    "Link: </link?page={}&limit={limit}>; rel=\"next\"\r\n",
                    page + 1
                )
            } else {
                String::new()
            };
            ok(slice((page - 1) * limit), link)
        }
        "/next" => {
            let page = number("page", 1).max(1);
            let next =
                (page * limit < total).then(|| format!("/next?page={}&limit={limit}", page + 1));
            ok(
                format!(
                    r#"{{"data":{},"next":{}}}"#,
                    slice((page - 1) * limit),
                    text(next)
                ),
                String::new(),
            )
        }
        _ => fail("404 Not Found", "no such path"),
    }
}

/// `%XX` and `+` decoding of a query value.
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// base64 of `user:password`, as a Basic `Authorization` carries it.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
