//! The REST driver: one HTTP client, requests carrying the manifest's query, headers and
//! auth, retries with exponential backoff and jitter, a request rate limit, and the
//! pagination styles of [`Pagination`].
//!
//! Contract: no secret (header value, token, password, API key) appears in an error or a
//! log line: URLs are shown with the API key parameter masked and every secret's text
//! replaced by `***`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value as Json;

use super::config::{Auth, KeyIn, Pagination, RestConfig};
use super::types::Extract;
use crate::error::{Error, Kind, Result};

/// One HTTP request of a read: a URL with its query.
#[derive(Debug, Clone)]
pub struct Request {
    url: Url,
}

/// A response's records, each as its declared cells, and the page's place in the read.
#[derive(Debug)]
pub struct Page {
    /// 1-based.
    pub number: u64,
    pub records: Vec<Vec<Json>>,
}

/// The client of one REST source.
pub struct RestClient {
    http: reqwest::Client,
    config: RestConfig,
    headers: HeaderMap,
    /// Query parameters every request carries (the API key, when it travels there).
    auth_query: Option<(String, String)>,
    /// Texts never to show.
    secrets: Vec<String>,
    /// When the next request may go (`requests_per_second`), shared by concurrent pages.
    next_slot: Mutex<Option<Instant>>,
    /// xorshift state for backoff jitter.
    jitter: AtomicU64,
    /// What a response gives: the records' cells, and the one value the pagination reads
    /// (`total_path`, `token_path` or `next_path`), if any.
    extract: Extract,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("url", &self.shown(&self.config.url))
            .finish_non_exhaustive()
    }
}

impl RestClient {
    pub fn new(config: &RestConfig) -> Result<Self> {
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            Error::config(format!("source.{field}"), e.to_string())
        };
        let mut headers = HeaderMap::new();
        let mut secrets = Vec::new();
        let mut auth_query = None;
        for (name, value) in &config.headers {
            let field = format!("headers.{name}");
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(&field, &e))?,
                sensitive(value.expose()).map_err(|e| bad(&field, &e))?,
            );
            secrets.push(value.expose().to_string());
        }
        match &config.auth {
            None => {}
            Some(Auth::Bearer { token }) => {
                headers.insert(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("Bearer {}", token.expose()))
                        .map_err(|e| bad("auth.token", &e))?,
                );
                secrets.push(token.expose().to_string());
            }
            Some(Auth::Basic { username, password }) => {
                let pair = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
                headers.insert(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("Basic {encoded}")).map_err(|e| bad("auth.password", &e))?,
                );
                secrets.extend([password.expose().to_string(), encoded]);
            }
            Some(Auth::ApiKey {
                name,
                value,
                location,
            }) => {
                match location {
                    KeyIn::Header => {
                        headers.insert(
                            HeaderName::from_bytes(name.as_bytes())
                                .map_err(|e| bad("auth.name", &e))?,
                            sensitive(value.expose()).map_err(|e| bad("auth.value", &e))?,
                        );
                    }
                    KeyIn::Query => auth_query = Some((name.clone(), value.expose().to_string())),
                }
                secrets.push(value.expose().to_string());
            }
        }
        secrets.retain(|s| !s.is_empty());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.timeout_seconds.min(30)))
            .build()
            .map_err(|e| Error::new(Kind::Source, format!("HTTP client: {e}")))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let cells: Vec<&str> = config
            .columns
            .iter()
            .map(|c| c.path.as_deref().unwrap_or(&c.name))
            .collect();
        let paged_by = match &config.pagination {
            Pagination::PageNumber { total_path, .. } | Pagination::Offset { total_path, .. } => {
                total_path.as_deref()
            }
            Pagination::Cursor { token_path, .. } => Some(token_path.as_str()),
            Pagination::NextLink { next_path } => Some(next_path.as_str()),
            Pagination::None | Pagination::LinkHeader => None,
        };
        let extract = Extract::new(
            config.records_path.as_deref().unwrap_or(""),
            &cells,
            paged_by.as_slice(),
        );
        Ok(RestClient {
            http,
            config: config.clone(),
            headers,
            auth_query,
            secrets,
            next_slot: Mutex::new(None),
            jitter: AtomicU64::new(seed),
            extract,
        })
    }

    /// The first request of a read; `filter` is the incremental parameter, if any.
    pub fn first_request(&self, filter: Option<(String, String)>) -> Result<Request> {
        let mut url = Url::parse(&self.config.url).map_err(|e| {
            Error::config(
                "source.url",
                format!("not a URL: {}", self.redact(&e.to_string())),
            )
        })?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &self.config.query {
                q.append_pair(k, v);
            }
            if let Some((k, v)) = filter {
                q.append_pair(&k, &v);
            }
        }
        Ok(self.paged(Request { url }, 0))
    }

    /// `base` with the page parameters of the page after `fetched` records, for the styles
    /// that page by number or offset.
    fn paged(&self, base: Request, fetched: u64) -> Request {
        let mut url = base.url;
        match &self.config.pagination {
            Pagination::PageNumber {
                param,
                size_param,
                size,
                first,
                ..
            } => {
                let page = match size {
                    Some(size) => first + fetched / u64::from(*size),
                    None => *first,
                };
                set_param(&mut url, param, &page.to_string());
                if let (Some(p), Some(size)) = (size_param, size) {
                    set_param(&mut url, p, &size.to_string());
                }
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                limit,
                ..
            } => {
                set_param(&mut url, offset_param, &fetched.to_string());
                set_param(&mut url, limit_param, &limit.to_string());
            }
            _ => {}
        }
        Request { url }
    }

    /// Fetches one page: its records, and the request of the next page (`None` at the end).
    /// `fetched` counts the records of the earlier pages; `page_number` is 1-based.
    pub async fn page(
        &self,
        req: &Request,
        page_number: u64,
        fetched: u64,
    ) -> Result<(Page, Option<Request>)> {
        let (body, headers) = self.fetch(req).await?;
        let shown = self.shown(req.url.as_str());
        let taken = self.extract.parse(&body).map_err(|e| {
            Error::source(format!(
                "page {page_number} ({shown}) is not JSON: {e}; it begins {}",
                self.excerpt(&body)
            ))
        })?;
        let path = self.config.records_path.as_deref().unwrap_or("");
        let Some(records) = taken.records else {
            return Err(Error::source(format!(
                "page {page_number} ({shown}) has no array at records_path `{path}`; it begins {}",
                self.excerpt(&body)
            )));
        };
        let got = records.len() as u64;
        let total = fetched + got;
        // The value at the pagination's one path: total, token or next URL.
        let paged_by = taken.extras.first();
        let next = if got == 0 {
            None
        } else {
            match &self.config.pagination {
                Pagination::None => None,
                Pagination::PageNumber { .. } | Pagination::Offset { .. } => {
                    let total_reached = paged_by
                        .and_then(Json::as_u64)
                        .is_some_and(|expected| total >= expected);
                    if total_reached {
                        None
                    } else {
                        Some(self.paged(self.without_paging(req), total))
                    }
                }
                Pagination::Cursor { param, .. } => match paged_by {
                    Some(Json::String(t)) if !t.is_empty() => {
                        let mut url = req.url.clone();
                        set_param(&mut url, param, t);
                        Some(Request { url })
                    }
                    Some(Json::Number(n)) => {
                        let mut url = req.url.clone();
                        set_param(&mut url, param, &n.to_string());
                        Some(Request { url })
                    }
                    _ => None,
                },
                Pagination::LinkHeader => headers
                    .get_all(reqwest::header::LINK)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(next_link)
                    .map(|target| self.follow(&req.url, &target))
                    .transpose()?,
                Pagination::NextLink { .. } => match paged_by {
                    Some(Json::String(target)) if !target.is_empty() => {
                        Some(self.follow(&req.url, target)?)
                    }
                    _ => None,
                },
            }
        };
        Ok((
            Page {
                number: page_number,
                records,
            },
            next,
        ))
    }

    /// A request minus the paging parameters it carried, to page again from it.
    fn without_paging(&self, req: &Request) -> Request {
        let drop: Vec<&str> = match &self.config.pagination {
            Pagination::PageNumber {
                param, size_param, ..
            } => [Some(param.as_str()), size_param.as_deref()]
                .into_iter()
                .flatten()
                .collect(),
            Pagination::Offset {
                offset_param,
                limit_param,
                ..
            } => vec![offset_param, limit_param],
            _ => Vec::new(),
        };
        let mut url = req.url.clone();
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| !drop.contains(&k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(kept);
        Request { url }
    }

    /// The request of a next-page URL the API gave, relative to the one it answered.
    fn follow(&self, from: &Url, target: &str) -> Result<Request> {
        let url = from.join(target).map_err(|e| {
            Error::source(format!(
                "the next page's URL `{}` is not a URL: {e}",
                self.shown(target)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::source(format!(
                "the next page's URL `{}` is not http(s)",
                self.shown(url.as_str())
            )));
        }
        Ok(Request { url })
    }

    /// Sends a GET, retrying connection errors, timeouts, 429 and 5xx with backoff
    /// (honouring `Retry-After`), up to `retries.attempts`; returns the whole body.
    async fn fetch(&self, req: &Request) -> Result<(bytes::Bytes, HeaderMap)> {
        let mut url = req.url.clone();
        if let Some((k, v)) = &self.auth_query {
            set_param(&mut url, k, v);
        }
        let shown = self.shown(url.as_str());
        let attempts = self.config.retries.attempts;
        let timeout = Duration::from_secs(self.config.timeout_seconds);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.pace().await;
            let sent = self
                .http
                .get(url.clone())
                .headers(self.headers.clone())
                .timeout(timeout)
                .send()
                .await;
            let (failure, retry_after) = match sent {
                Err(e) => (self.redact(&describe(&e)), None),
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let retry_after = headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    match resp.bytes().await {
                        Ok(body) if status.is_success() => return Ok((body, headers)),
                        Ok(body) => {
                            let said = format!("HTTP {status}: {}", self.excerpt(&body));
                            let transient = status.as_u16() == 429 || status.is_server_error();
                            if !transient {
                                return Err(Error::source(format!("GET {shown} failed: {said}")));
                            }
                            (said, retry_after)
                        }
                        Err(e) => (
                            format!(
                                "HTTP {status}, but the body broke off: {}",
                                self.redact(&describe(&e))
                            ),
                            None,
                        ),
                    }
                }
            };
            if attempt >= attempts {
                return Err(Error::source(format!(
                    "GET {shown} failed after {attempt} attempt(s): {failure} (source.retries.attempts = {attempts})"
                )));
            }
            let wait = self.backoff(attempt, retry_after);
            tracing::warn!(
                "GET {shown}: {failure}; retrying in {:.1}s ({attempt}/{attempts})",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The wait before retry `attempt` (1-based): the server's `Retry-After` when it gave
    /// one, else `initial_ms * 2^(attempt-1)` with jitter in [50%, 100%]; never past `max_ms`.
    fn backoff(&self, attempt: u32, retry_after: Option<u64>) -> Duration {
        let r = &self.config.retries;
        let ms = match retry_after {
            Some(secs) => secs.saturating_mul(1000),
            None => {
                let full = r.initial_ms.saturating_mul(1u64 << (attempt - 1).min(30));
                // xorshift64: jitter spreads the retries of parallel clients apart.
                let step = |mut x: u64| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^ (x << 17)
                };
                let x = self
                    .jitter
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x)))
                    .map_or(1, step);
                full / 2 + (x % (full / 2 + 1))
            }
        };
        Duration::from_millis(ms.min(r.max_ms))
    }

    /// Waits for this request's slot under `requests_per_second`: slots are handed out in
    /// turn under a lock and waited for outside it, so concurrent pages keep the rate too.
    async fn pace(&self) {
        let Some(rps) = self.config.requests_per_second else {
            return;
        };
        let due = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let due = next.map_or(now, |n| n.max(now));
            *next = Some(due + Duration::from_secs_f64(1.0 / rps));
            due
        };
        tokio::time::sleep_until(due.into()).await;
    }

    /// The records per page of the styles whose pages can be asked for in any order (page
    /// number with a size, offset); `None` for the others.
    pub fn page_size(&self) -> Option<u64> {
        match &self.config.pagination {
            Pagination::PageNumber { size: Some(s), .. } => Some(u64::from(*s)),
            Pagination::Offset { limit, .. } => Some(u64::from(*limit)),
            _ => None,
        }
    }

    /// The request of page `index` (0-based) of a read that began with `first`, for the
    /// styles of [`Self::page_size`].
    pub fn nth_page(&self, first: &Request, index: u64) -> Request {
        let size = self.page_size().unwrap_or(0);
        self.paged(self.without_paging(first), index * size)
    }

    /// `text` with every secret replaced by `***`.
    fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
    }

    /// A URL as errors show it: the API key parameter masked, secrets replaced.
    pub fn shown(&self, url: &str) -> String {
        let masked = match (&self.auth_query, Url::parse(url)) {
            (Some((key, _)), Ok(mut u)) => {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == key.as_str() {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
                u.to_string()
            }
            _ => url.to_string(),
        };
        self.redact(&masked)
    }

    /// The first bytes of a body, cleaned and redacted, for an error.
    fn excerpt(&self, body: &[u8]) -> String {
        let head = String::from_utf8_lossy(&body[..body.len().min(200)]);
        format!("{:?}", crate::text::clean(&self.redact(&head), 200))
    }
}

/// A header value marked sensitive, so the HTTP stack never logs it.
fn sensitive(value: &str) -> std::result::Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut v = HeaderValue::from_str(value)?;
    v.set_sensitive(true);
    Ok(v)
}

/// Sets query parameter `name` to `value`, replacing any earlier one.
fn set_param(url: &mut Url, name: &str, value: &str) {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .chain(std::iter::once((name.to_string(), value.to_string())))
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
}

/// The `rel="next"` target of a `Link` header value (RFC 8288).
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim().trim_matches('"').split(' ').any(|r| r == "next")
            })
            .then(|| target.to_string())
    })
}

/// A transport error with its causes (reqwest's own message is terse).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if e.is_timeout() {
        text.push_str(" (timed out: source.timeout_seconds)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_their_next_target() {
        assert_eq!(
            next_link(r#"<https://api/x?page=2>; rel="next", <https://api/x?page=9>; rel="last""#),
            Some("https://api/x?page=2".into())
        );
        assert_eq!(next_link(r#"<https://api/x?page=1>; rel="prev""#), None);
        assert_eq!(
            next_link(r#"</x?c=abc>; rel="next last""#),
            Some("/x?c=abc".into())
        );
    }

    #[test]
    fn secrets_never_show_in_urls_or_texts() {
        let config: RestConfig = serde_yaml_ng::from_str(
            "url: http://h/x\nauth: { type: api_key, name: key, value: s3cret, in: query }\n\
             headers: { X-Other: hunter2 }\ncolumns: [{ name: id, type: int64 }]\n",
        )
        .unwrap();
        let client = RestClient::new(&config).unwrap();
        let shown = client.shown("http://h/x?page=2&key=s3cret");
        assert_eq!(shown, "http://h/x?page=2&key=***");
        assert_eq!(
            client.redact("token hunter2 and s3cret"),
            "token *** and ***"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap() {
        let config: RestConfig = serde_yaml_ng::from_str(
            "url: http://h/x\nretries: { attempts: 5, initial_ms: 100, max_ms: 1000 }\ncolumns: [{ name: id, type: int64 }]\n",
        )
        .unwrap();
        let client = RestClient::new(&config).unwrap();
        for (attempt, low, high) in [(1, 50, 100), (2, 100, 200), (3, 200, 400)] {
            let ms = client.backoff(attempt, None).as_millis() as u64;
            assert!((low..=high).contains(&ms), "attempt {attempt}: {ms} ms");
        }
        assert_eq!(client.backoff(9, None), Duration::from_millis(1000));
        assert_eq!(client.backoff(1, Some(0)), Duration::ZERO);
        assert_eq!(client.backoff(1, Some(60)), Duration::from_millis(1000));
    }
}
