//! [`RestSource`]: the `Source` of a REST API, page by page (see the module's contract).

use std::collections::{HashSet, VecDeque};
use std::hash::Hasher;
use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::client::{self, RestClient};
use super::config::RestConfig;
use super::types::row_of;
use crate::connectors::json;
use crate::connectors::{ChangeFeed, Source, declared_schema};
use crate::error::{Error, Kind, Result};
use crate::model::{self, BATCH_ROWS, Column, ScanBounds, Schema, Term, Value, batch_of};

/// How a REST position starts: `rest:<cursor column>=<the column's value as JSON>`.
const POSITION_PREFIX: &str = "rest:";

/// A REST endpoint as a source.
#[derive(Debug)]
pub struct RestSource {
    config: RestConfig,
    /// Shared with the page fetches in flight.
    client: Arc<RestClient>,
    schema: Schema,
    /// Each declared column with its path in a record: what page fetches convert cells by.
    columns: Arc<Vec<(Column, String)>>,
    /// Where the columns a read deduplicates by are in a row; empty: it keeps every record.
    dedupe_by: Vec<usize>,
    /// The largest `incremental.cursor_column` value the last read returned.
    read_up_to: Option<Value>,
}

impl RestSource {
    /// A source of `config`'s declared columns. Where `config` dedupes, a read keeps the
    /// first record of each `unique_key` (the strategy's key of the target), or of each
    /// `primary_key` when the strategy names none.
    pub fn new(config: &RestConfig, unique_key: &[String]) -> Result<Self> {
        let schema = declared_schema(&config.columns, &config.primary_key)?;
        let (key, field) = match unique_key {
            [] => (config.primary_key.as_slice(), "source.primary_key"),
            key => (key, "sink.strategy.unique_key"),
        };
        if config.dedupe == Some(true) && key.is_empty() {
            return Err(Error::config(
                "source.dedupe",
                "needs a key: the strategy's unique_key or the source's primary_key",
            ));
        }
        let dedupe_by = match config.dedupes() {
            true => schema.positions(key, field)?,
            false => Vec::new(),
        };
        let columns = config
            .columns
            .iter()
            .zip(&schema.columns)
            .map(|(declared, column)| {
                let path = declared
                    .path
                    .clone()
                    .unwrap_or_else(|| declared.name.clone());
                (column.clone(), path)
            })
            .collect();
        Ok(RestSource {
            client: Arc::new(RestClient::new(config)?),
            columns: Arc::new(columns),
            schema,
            dedupe_by,
            read_up_to: None,
            config: config.clone(),
        })
    }

    /// The pages of a read within `bounds`, in order.
    fn pages<'a>(&'a self, bounds: &'a ScanBounds) -> Result<Pages<'a>> {
        let first = self.client.first_request(self.server_filter(bounds)?)?;
        let at = |column: &str| self.schema.columns.iter().position(|c| c.name == column);
        let positions = Positions {
            cursor: bounds.cursor.as_ref().and_then(|c| at(&c.column)),
            terms: bounds
                .filter
                .iter()
                .map(|t| t.column().and_then(at))
                .collect(),
            since: self.since(bounds)?,
        };
        Ok(Pages {
            source: self,
            bounds,
            positions,
            next: Some(first.clone()),
            ahead: None,
            first,
            inflight: VecDeque::new(),
            scheduled: 0,
            exhausted: false,
            pages: 0,
            fetched: 0,
            seen: Seen::default(),
        })
    }

    /// The incremental parameter of a scan: the larger of its lower cursor bound on
    /// `incremental.cursor_column` and its `since` position, when the manifest maps one.
    fn server_filter(&self, bounds: &ScanBounds) -> Result<Option<(String, String)>> {
        let Some(inc) = &self.config.incremental else {
            return Ok(None);
        };
        let after = bounds
            .cursor
            .as_ref()
            .filter(|c| c.column == inc.cursor_column)
            .and_then(|c| c.after.clone());
        let since = self.since(bounds)?.map(|(_, v)| v);
        let lowest = match (after, since) {
            (Some(a), Some(s)) => match model::compare_values(&a, &s) {
                Some(std::cmp::Ordering::Less) => Some(s),
                _ => Some(a),
            },
            (a, s) => a.or(s),
        };
        Ok(lowest.map(|v| (inc.param.clone(), json::param_text(&v))))
    }

    /// The value part of a `since` position of this source's `incremental.cursor_column`;
    /// `None` for a position of another column or source (stored before the manifest
    /// changed), which a read ignores.
    fn own_position<'a>(&self, text: &'a str) -> Option<&'a str> {
        let inc = self.config.incremental.as_ref()?;
        text.strip_prefix(POSITION_PREFIX)?
            .strip_prefix(inc.cursor_column.as_str())?
            .strip_prefix('=')
    }

    /// A scan's `since` position: where its cursor column is in a row, and the value the
    /// rows must lie after.
    fn since(&self, bounds: &ScanBounds) -> Result<Option<(usize, Value)>> {
        let Some(text) = &bounds.since else {
            return Ok(None);
        };
        let Some(inc) = &self.config.incremental else {
            return Err(Error::new(
                Kind::Unsupported,
                "a REST source resumes from a position only with source.incremental",
            ));
        };
        let Some(value) = self.own_position(text) else {
            return Ok(None);
        };
        let bad = |why: String| {
            Error::source(format!(
                "`{}` is not a position of this REST source: {why}",
                crate::text::clean(text, 80)
            ))
        };
        let at = self
            .schema
            .columns
            .iter()
            .position(|c| c.name == inc.cursor_column)
            .ok_or_else(|| bad("its column is not declared".into()))?;
        let parsed: serde_json::Value =
            serde_json::from_str(value).map_err(|e| bad(format!("not JSON: {e}")))?;
        match json::value_of(&parsed, &self.schema.columns[at].data_type).map_err(bad)? {
            Value::Null => Err(bad("its value is null".into())),
            v => Ok(Some((at, v))),
        }
    }
}

/// A page's records as rows of the source schema: converted by the task that fetched it,
/// so conversion runs beside the caller's work on the page before.
type Rows = Vec<Vec<Value>>;

fn rows_of(page: client::Page, columns: &[(Column, String)]) -> Result<Rows> {
    page.records
        .iter()
        .enumerate()
        .map(|(i, cells)| row_of(cells, columns, page.number, i))
        .collect()
}

/// A page fetched ahead, and whether it is the read's last.
type Fetch = tokio::task::JoinHandle<Result<(Rows, bool)>>;

/// The next page fetched (and converted) while the caller takes the current one, and the
/// request after it.
type Ahead = tokio::task::JoinHandle<Result<(Rows, Option<client::Request>)>>;

/// A read in progress: what comes next, and the fingerprints of the keys seen so far.
struct Pages<'a> {
    source: &'a RestSource,
    bounds: &'a ScanBounds,
    /// Where the columns `bounds` compare are in a row, found once per read.
    positions: Positions,
    first: client::Request,
    /// One page at a time: the request of the next page, until it is fetched ahead.
    next: Option<client::Request>,
    ahead: Option<Ahead>,
    /// `concurrency` pages at a time: the fetches in flight, in page order.
    inflight: VecDeque<Fetch>,
    scheduled: u64,
    exhausted: bool,
    pages: u64,
    fetched: u64,
    /// The keys seen, where the source dedupes.
    seen: Seen,
}

/// The keys a read has seen, each kept as a fingerprint: 8 bytes for a key of one integer
/// column (most APIs' ids), 16 for any other.
#[derive(Debug, Default)]
struct Seen {
    ints: HashSet<u64, Spread>,
    others: HashSet<u128, Spread>,
}

impl Seen {
    /// Whether the `key` columns of `row` are new to the read (and now seen).
    fn insert(&mut self, row: &[Value], key: &[usize]) -> bool {
        match (key, row) {
            (&[k], row) if let Value::Int(i) = row[k] => self.ints.insert(mix(i)),
            _ => self.others.insert(fingerprint(row, key)),
        }
    }
}

/// The set of fingerprints hashes each by its own bits: they are spread evenly already, so
/// hashing them again would only cost time.
#[derive(Debug, Default, Clone, Copy)]
struct Spread;

impl std::hash::BuildHasher for Spread {
    type Hasher = SpreadHasher;

    fn build_hasher(&self) -> SpreadHasher {
        SpreadHasher(0)
    }
}

#[derive(Debug)]
struct SpreadHasher(u64);

impl Hasher for SpreadHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

impl Drop for Pages<'_> {
    /// A read stopped early (a limit, an error) leaves no fetch running.
    fn drop(&mut self) {
        for fetch in &self.inflight {
            fetch.abort();
        }
        if let Some(fetch) = &self.ahead {
            fetch.abort();
        }
    }
}

impl Pages<'_> {
    /// The rows of the next page that lie within the bounds and whose key did not come
    /// already (rows of the source schema); `None` after the last page.
    async fn next(&mut self) -> Result<Option<Vec<Vec<Value>>>> {
        let concurrent = self.source.config.concurrency > 1;
        let page = match self.source.client.page_size().filter(|_| concurrent) {
            Some(size) => self.next_concurrent(size).await?,
            None => self.next_sequential().await?,
        };
        let Some(page) = page else {
            return Ok(None);
        };
        self.fetched += page.len() as u64;
        let mut rows = Vec::with_capacity(page.len());
        for row in page {
            if !within(self.bounds, &self.positions, &row) {
                continue;
            }
            let key = &self.source.dedupe_by;
            if !key.is_empty() && !self.seen.insert(&row, key) {
                continue;
            }
            rows.push(row);
        }
        Ok(Some(rows))
    }

    /// Counts a page; more than `max_pages` is an error.
    fn count_page(&mut self) -> Result<()> {
        self.pages += 1;
        let max_pages = self.source.config.max_pages;
        if self.pages > max_pages {
            return Err(Error::config(
                "source.max_pages",
                format!(
                    "the API has more than {max_pages} pages: raise source.max_pages if that is expected"
                ),
            ));
        }
        Ok(())
    }

    /// Each page's request depends on the page before, so one page is fetched at a time;
    /// but it is fetched while the caller converts the page before it, so the API's time
    /// and the host's overlap.
    async fn next_sequential(&mut self) -> Result<Option<Rows>> {
        if self.ahead.is_none() && self.next.is_none() {
            return Ok(None);
        }
        self.count_page()?;
        if let Some(request) = self.next.take() {
            self.ahead = Some(self.fetch(request, self.pages, self.fetched));
        }
        // Awaited in place: a read dropped meanwhile leaves the fetch for `drop` to abort.
        let fetched = self.ahead.as_mut().expect("set above").await;
        self.ahead = None;
        let (page, after) =
            fetched.map_err(|e| Error::internal(format!("a page fetch stopped: {e}")))??;
        self.next = after;
        // Not past max_pages: a read that has to fail there asks for no page it cannot take.
        if self.pages < self.source.config.max_pages
            && let Some(request) = self.next.take()
        {
            let fetched = self.fetched + page.len() as u64;
            self.ahead = Some(self.fetch(request, self.pages + 1, fetched));
        }
        Ok(Some(page))
    }

    /// Starts fetching and converting page `number`, `fetched` records into the read.
    fn fetch(&self, request: client::Request, number: u64, fetched: u64) -> Ahead {
        let client = self.source.client.clone();
        let columns = self.source.columns.clone();
        tokio::spawn(async move {
            let (page, after) = client.page(&request, number, fetched).await?;
            Ok((rows_of(page, &columns)?, after))
        })
    }

    /// Keeps `concurrency` pages in flight ahead of the one it returns. Pages fetched at
    /// once cannot wait for each other's answer, so a page shorter than the page size (or
    /// empty, or reaching `total_path`) is the last, and the pages fetched past it are
    /// dropped.
    async fn next_concurrent(&mut self, size: u64) -> Result<Option<Rows>> {
        let at_once = self.source.config.concurrency as usize;
        // One page past max_pages, so a read that needs it fails as a sequential one does.
        while !self.exhausted
            && self.inflight.len() < at_once
            && self.scheduled <= self.source.config.max_pages
        {
            let index = self.scheduled;
            self.scheduled += 1;
            let client = self.source.client.clone();
            let columns = self.source.columns.clone();
            let request = client.nth_page(&self.first, index);
            self.inflight.push_back(tokio::spawn(async move {
                let (page, after) = client.page(&request, index + 1, index * size).await?;
                let last = after.is_none() || (page.records.len() as u64) < size;
                Ok((rows_of(page, &columns)?, last))
            }));
        }
        let Some(fetch) = self.inflight.pop_front() else {
            return Ok(None);
        };
        self.count_page()?;
        let (page, last) = fetch
            .await
            .map_err(|e| Error::internal(format!("a page fetch stopped: {e}")))??;
        if last {
            self.exhausted = true;
            for fetch in self.inflight.drain(..) {
                fetch.abort();
            }
        }
        Ok(Some(page))
    }
}

#[async_trait]
impl Source for RestSource {
    fn name(&self) -> String {
        self.config
            .table
            .clone()
            .unwrap_or_else(|| self.client.shown(&self.config.url))
    }

    async fn schema(&mut self) -> Result<Schema> {
        Ok(self.schema.clone())
    }

    fn check_bounds(&self, schema: &Schema, bounds: &ScanBounds) -> Result<()> {
        model::check_terms(schema, &bounds.filter, "sink.strategy")?;
        if let Some(c) = &bounds.cursor {
            schema.require(&c.column, "sink.strategy.cursor_column")?;
        }
        let refused = if bounds.filter.contains(&Term::ManifestPredicate) {
            Some("sink.strategy.predicate_sql is SQL: a REST source cannot apply it")
        } else if bounds.row_versions.is_some() {
            Some("a REST source has no row versions")
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(Error::new(Kind::Unsupported, why));
        }
        if let Some(text) = &bounds.since
            && self.config.incremental.is_some()
            && self.own_position(text).is_none()
        {
            tracing::warn!(
                "the stored position `{}` is not one of source.incremental.cursor_column (the manifest changed since it was stored): this read starts without it",
                crate::text::clean(text, 80)
            );
        }
        self.since(bounds).map(|_| ())
    }

    async fn read(
        &mut self,
        columns: &Schema,
        bounds: &ScanBounds,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let picks: Vec<usize> = columns
            .columns
            .iter()
            .map(|c| {
                self.schema
                    .columns
                    .iter()
                    .position(|s| s.name == c.name)
                    .ok_or_else(|| Error::source(format!("no declared column `{}`", c.name)))
            })
            .collect::<Result<_>>()?;
        let mut left = bounds.limit.unwrap_or(u64::MAX);
        let mut rows: Vec<Vec<Value>> = Vec::with_capacity(BATCH_ROWS);
        // Every declared column in order: rows pass as they are, no value copied.
        let all = picks.iter().copied().eq(0..self.schema.columns.len());
        let cursor_at = self.config.incremental.as_ref().and_then(|inc| {
            self.schema
                .columns
                .iter()
                .position(|c| c.name == inc.cursor_column)
        });
        let mut up_to: Option<Value> = None;
        self.read_up_to = None;
        let mut pages = self.pages(bounds)?;
        while left > 0
            && let Some(page) = pages.next().await?
        {
            for row in page {
                if left == 0 {
                    break;
                }
                left -= 1;
                if let Some(at) = cursor_at {
                    model::keep_max(&mut up_to, &row[at]);
                }
                rows.push(if all {
                    row
                } else {
                    picks.iter().map(|&i| row[i].clone()).collect()
                });
                if rows.len() == BATCH_ROWS {
                    let full = std::mem::replace(&mut rows, Vec::with_capacity(BATCH_ROWS));
                    if tx.send(batch_of(columns, &full)?).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        drop(pages);
        if !rows.is_empty() && tx.send(batch_of(columns, &rows)?).await.is_err() {
            return Ok(());
        }
        self.read_up_to = up_to;
        Ok(())
    }

    fn describe_scan(&self, columns: &Schema, bounds: &ScanBounds) -> Result<String> {
        let names: Vec<&str> = columns.columns.iter().map(|c| c.name.as_str()).collect();
        let filter = match self.server_filter(bounds)? {
            Some((param, value)) => format!(" with {param}={value}"),
            None => String::new(),
        };
        Ok(format!(
            "GET {}{filter}, {:?} pagination, records at `{}`, columns {}; the host applies the bounds",
            self.client.shown(&self.config.url),
            self.config.pagination,
            self.config.records_path.as_deref().unwrap_or(""),
            names.join(", ")
        ))
    }

    async fn max_value(&mut self, column: &str, bounds: &ScanBounds) -> Result<Value> {
        let at = self
            .schema
            .columns
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| Error::config("sink.strategy", format!("no column `{column}`")))?;
        let mut max = None;
        let mut pages = self.pages(bounds)?;
        while let Some(page) = pages.next().await? {
            for row in page {
                model::keep_max(&mut max, &row[at]);
            }
        }
        Ok(max.unwrap_or(Value::Null))
    }

    async fn row_count(&mut self, bounds: &ScanBounds) -> Result<u64> {
        let limit = bounds.limit.unwrap_or(u64::MAX);
        let mut n = 0u64;
        let mut pages = self.pages(bounds)?;
        while n < limit
            && let Some(page) = pages.next().await?
        {
            n += page.len() as u64;
        }
        Ok(n.min(limit))
    }

    async fn row_version_horizon(&mut self) -> Result<String> {
        Err(Error::new(
            Kind::Unsupported,
            "a REST source has no row versions",
        ))
    }

    fn change_feed(&mut self) -> Option<&mut dyn ChangeFeed> {
        None
    }

    /// After a read: the largest `incremental.cursor_column` value it returned, else the
    /// scan's own `since` (nothing new came).
    fn resume(&self, bounds: &ScanBounds) -> Option<String> {
        let inc = self.config.incremental.as_ref()?;
        match &self.read_up_to {
            Some(v) => Some(format!(
                "{POSITION_PREFIX}{}={}",
                inc.cursor_column,
                json::json_of(v)
            )),
            None => bounds.since.clone(),
        }
    }
}

/// An integer key, its bits spread for the set's hashing by splitmix64's finalizer: each
/// step is invertible, so two keys never share a fingerprint.
fn mix(i: i64) -> u64 {
    let mut x = i as u64;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A 128-bit fingerprint of a row's `key` columns: two SipHash sums with fixed keys, so two
/// distinct keys of one read collide with a chance of about n²/2¹²⁹ (for n = 10⁹ keys,
/// 10⁻²¹).
fn fingerprint(row: &[Value], key: &[usize]) -> u128 {
    let sum = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        h.write_u8(salt);
        for &k in key {
            match &row[k] {
                Value::Null => h.write_u8(0),
                Value::Int(i) => {
                    h.write_u8(1);
                    h.write_i64(*i);
                }
                Value::Text(s) | Value::Uuid(s) | Value::Json(s) => {
                    h.write_u8(2);
                    h.write(s.as_bytes());
                    // Never in UTF-8: ends the text, so ("ab", "c") and ("a", "bc") differ.
                    h.write_u8(0xff);
                }
                other => {
                    h.write_u8(3);
                    h.write(model::canonical_text(other).unwrap_or_default().as_bytes());
                    h.write_u8(0xff);
                }
            }
        }
        h.finish()
    };
    (u128::from(sum(0)) << 64) | u128::from(sum(1))
}

/// The row positions of the columns a scan's bounds compare: the cursor's, and each filter
/// term's (in order); `None` for a column the row does not have.
#[derive(Debug)]
struct Positions {
    cursor: Option<usize>,
    terms: Vec<Option<usize>>,
    /// The `since` position's column and the value a row's must exceed.
    since: Option<(usize, Value)>,
}

/// Whether a row lies within `bounds` (cursor range and filter; the limit is the caller's),
/// its compared columns at `positions`: SQL's semantics, so a NULL compares as nothing.
fn within(bounds: &ScanBounds, positions: &Positions, row: &[Value]) -> bool {
    let value = |at: Option<usize>| at.map(|i| &row[i]);
    let cmp = |v: &Value, bound: &Value| model::compare_values(v, bound);
    use std::cmp::Ordering::{Equal, Greater, Less};
    if let Some((at, after)) = &positions.since
        && cmp(&row[*at], after) != Some(Greater)
    {
        return false;
    }
    if let Some(c) = &bounds.cursor {
        let Some(v) = value(positions.cursor) else {
            return false;
        };
        if let Some(after) = &c.after
            && cmp(v, after) != Some(Greater)
        {
            return false;
        }
        if let Some(up_to) = &c.up_to
            && !matches!(cmp(v, up_to), Some(Less | Equal))
        {
            return false;
        }
        if *v == Value::Null {
            return false;
        }
    }
    bounds
        .filter
        .iter()
        .zip(&positions.terms)
        .all(|(term, at)| {
            let column = value(*at);
            match (term, column) {
                (Term::Compare(t), Some(v)) => {
                    let o = cmp(v, &t.value);
                    match t.op {
                        model::Comparison::Eq => o == Some(Equal),
                        model::Comparison::Ne => matches!(o, Some(Less | Greater)),
                        model::Comparison::Lt => o == Some(Less),
                        model::Comparison::Le => matches!(o, Some(Less | Equal)),
                        model::Comparison::Gt => o == Some(Greater),
                        model::Comparison::Ge => matches!(o, Some(Greater | Equal)),
                    }
                }
                (Term::Range(r), Some(v)) => {
                    matches!(cmp(v, &r.low), Some(Greater | Equal))
                        && match cmp(v, &r.high) {
                            Some(Less) => true,
                            Some(Equal) => r.high_inclusive,
                            _ => false,
                        }
                }
                (Term::InList(i), Some(v)) => i.values.iter().any(|x| cmp(v, x) == Some(Equal)),
                (Term::IsNull(_), Some(v)) => *v == Value::Null,
                (Term::IsNotNull(_), Some(v)) => *v != Value::Null,
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> RestSource {
        let config: RestConfig = serde_yaml_ng::from_str(&format!(
            "url: http://127.0.0.1:9/items\n{extra}columns:\n  - {{ name: id, type: int64 }}\n  - {{ name: at, type: timestamp }}\n"
        ))
        .unwrap();
        RestSource::new(&config, &[]).unwrap()
    }

    fn since(text: &str) -> ScanBounds {
        ScanBounds {
            cursor: None,
            filter: Vec::new(),
            limit: None,
            row_versions: None,
            since: Some(text.into()),
        }
    }

    #[test]
    fn a_position_names_the_cursor_column_and_a_value_of_its_type() {
        let rest = source("incremental: { cursor_column: at, param: since }\n");
        let (at, value) = rest
            .since(&since(r#"rest:at="2024-01-02T03:04:05""#))
            .unwrap()
            .unwrap();
        assert_eq!(at, 1);
        assert_eq!(json::param_text(&value), "2024-01-02T03:04:05.000000");
        assert_eq!(
            rest.server_filter(&since(r#"rest:at="2024-01-02T03:04:05""#))
                .unwrap(),
            Some(("since".into(), "2024-01-02T03:04:05.000000".into()))
        );
        for foreign in ["kafka:0=1", "rest:id=4"] {
            assert_eq!(rest.since(&since(foreign)).unwrap(), None, "{foreign}");
        }
        for bad in [
            r#"rest:at=2024-01-02"#,
            r#"rest:at="yesterday""#,
            "rest:at=null",
        ] {
            let e = rest.since(&since(bad)).unwrap_err();
            assert_eq!(e.kind, Kind::Source, "{bad}: {e}");
            assert!(e.message.contains("is not a position"), "{bad}: {e}");
        }
        let without = source("").since(&since(r#"rest:at="2024-01-02""#));
        assert_eq!(without.unwrap_err().kind, Kind::Unsupported);
    }

    #[test]
    fn key_fingerprints_tell_apart_keys_that_concatenate_alike() {
        let row = |a: &str, b: &str| vec![Value::Text(a.into()), Value::Text(b.into())];
        let key = [0, 1];
        assert_ne!(
            fingerprint(&row("ab", "c"), &key),
            fingerprint(&row("a", "bc"), &key)
        );
        assert_eq!(
            fingerprint(&row("a", "bc"), &key),
            fingerprint(&row("a", "bc"), &key)
        );
        let ints: HashSet<u64> = (-1000..1000).map(mix).collect();
        assert_eq!(ints.len(), 2000, "integer keys are exact");
        let mut seen = Seen::default();
        assert!(seen.insert(&[Value::Int(7)], &[0]));
        assert!(!seen.insert(&[Value::Int(7)], &[0]));
        assert!(seen.insert(&[Value::Null], &[0]));
        assert!(!seen.insert(&[Value::Null], &[0]));
        let nulls = [
            vec![Value::Null, Value::Int(1)],
            vec![Value::Int(1), Value::Null],
        ];
        assert_ne!(fingerprint(&nulls[0], &key), fingerprint(&nulls[1], &key));
    }

    #[test]
    fn a_read_dedupes_by_its_key_unless_told_not_to() {
        assert_eq!(source("primary_key: [id]\n").dedupe_by, vec![0]);
        assert!(source("").dedupe_by.is_empty());
        assert!(
            source("primary_key: [id]\ndedupe: false\n")
                .dedupe_by
                .is_empty()
        );
        let config: RestConfig = serde_yaml_ng::from_str(
            "url: http://127.0.0.1:9/items\ndedupe: true\ncolumns: [{ name: id, type: int64 }]\n",
        )
        .unwrap();
        let keyless = RestSource::new(&config, &[]).unwrap_err();
        assert_eq!(keyless.field.as_deref(), Some("source.dedupe"), "{keyless}");
        let by_unique_key = RestSource::new(&config, &["id".into()]).unwrap();
        assert_eq!(by_unique_key.dedupe_by, vec![0]);
    }
}
