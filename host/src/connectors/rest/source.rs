//! [`RestSource`]: the `Source` of a REST API, page by page (see the module's contract).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;

use super::client::{self, RestClient};
use super::config::RestConfig;
use crate::connectors::json;
use crate::connectors::{ChangeFeed, Source, declared_schema};
use crate::error::{Error, Kind, Result};
use crate::model::{self, BATCH_ROWS, ScanBounds, Schema, Term, Value, batch_of};

/// A REST endpoint as a source.
#[derive(Debug)]
pub struct RestSource {
    config: RestConfig,
    /// Shared with the page fetches in flight.
    client: Arc<RestClient>,
    schema: Schema,
}

impl RestSource {
    pub fn new(config: &RestConfig) -> Result<Self> {
        Ok(RestSource {
            client: Arc::new(RestClient::new(config)?),
            schema: declared_schema(&config.columns, &config.primary_key)?,
            config: config.clone(),
        })
    }

    /// The pages of a read within `bounds`, in order.
    fn pages<'a>(&'a self, bounds: &'a ScanBounds) -> Result<Pages<'a>> {
        let first = self.client.first_request(self.server_filter(bounds))?;
        let key_at = self
            .schema
            .primary_key
            .iter()
            .filter_map(|k| self.schema.columns.iter().position(|c| &c.name == k))
            .collect();
        let at = |column: &str| self.schema.columns.iter().position(|c| c.name == column);
        let positions = Positions {
            cursor: bounds.cursor.as_ref().and_then(|c| at(&c.column)),
            terms: bounds
                .filter
                .iter()
                .map(|t| t.column().and_then(at))
                .collect(),
        };
        Ok(Pages {
            source: self,
            bounds,
            positions,
            next: Some(first.clone()),
            first,
            inflight: VecDeque::new(),
            scheduled: 0,
            exhausted: false,
            pages: 0,
            fetched: 0,
            key_at,
            seen: HashSet::new(),
        })
    }

    /// The incremental parameter for a scan's lower cursor bound, when the manifest maps one.
    fn server_filter(&self, bounds: &ScanBounds) -> Option<(String, String)> {
        let inc = self.config.incremental.as_ref()?;
        let cursor = bounds.cursor.as_ref()?;
        let after = cursor.after.as_ref()?;
        (cursor.column == inc.cursor_column).then(|| (inc.param.clone(), json::param_text(after)))
    }

    /// A record as a row of the source schema.
    fn row(&self, record: &serde_json::Value, page: u64, index: usize) -> Result<Vec<Value>> {
        self.config
            .columns
            .iter()
            .zip(&self.schema.columns)
            .map(|(declared, column)| {
                let path = declared.path.as_deref().unwrap_or(&declared.name);
                let found = json::at_path(record, path).unwrap_or(&serde_json::Value::Null);
                let fail = |why: String| {
                    Error::source(format!(
                        "page {page}, record {index}, column `{}` (path `{path}`): {why}",
                        column.name
                    ))
                };
                let value = json::value_of(found, &column.data_type).map_err(fail)?;
                if value == Value::Null && !column.nullable {
                    return Err(fail("null or missing, but declared nullable: false".into()));
                }
                Ok(value)
            })
            .collect()
    }
}

/// A page fetched ahead, and whether it is the read's last.
type Fetch = tokio::task::JoinHandle<Result<(client::Page, bool)>>;

/// A read in progress: what comes next, and the keys seen so far.
struct Pages<'a> {
    source: &'a RestSource,
    bounds: &'a ScanBounds,
    /// Where the columns `bounds` compare are in a row, found once per read.
    positions: Positions,
    first: client::Request,
    /// One page at a time: the request of the next page.
    next: Option<client::Request>,
    /// `concurrency` pages at a time: the fetches in flight, in page order.
    inflight: VecDeque<Fetch>,
    scheduled: u64,
    exhausted: bool,
    pages: u64,
    fetched: u64,
    /// Indexes of the primary key columns; empty: no deduplication.
    key_at: Vec<usize>,
    seen: HashSet<String>,
}

impl Drop for Pages<'_> {
    /// A read stopped early (a limit, an error) leaves no fetch running.
    fn drop(&mut self) {
        for fetch in &self.inflight {
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
        self.fetched += page.records.len() as u64;
        let mut rows = Vec::with_capacity(page.records.len());
        for (i, record) in page.records.iter().enumerate() {
            let row = self.source.row(record, page.number, i)?;
            if !within(self.bounds, &self.positions, &row) {
                continue;
            }
            if !self.key_at.is_empty() {
                let key: Vec<String> = self
                    .key_at
                    .iter()
                    .map(|&k| model::canonical_text(&row[k]).unwrap_or_default())
                    .collect();
                if !self.seen.insert(key.join("\u{1f}")) {
                    continue;
                }
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

    async fn next_sequential(&mut self) -> Result<Option<client::Page>> {
        let Some(request) = self.next.take() else {
            return Ok(None);
        };
        self.count_page()?;
        let (page, after) = self
            .source
            .client
            .page(&request, self.pages, self.fetched)
            .await?;
        self.next = after;
        Ok(Some(page))
    }

    /// Keeps `concurrency` pages in flight ahead of the one it returns. Pages fetched at
    /// once cannot wait for each other's answer, so a page shorter than the page size (or
    /// empty, or reaching `total_path`) is the last, and the pages fetched past it are
    /// dropped.
    async fn next_concurrent(&mut self, size: u64) -> Result<Option<client::Page>> {
        let at_once = self.source.config.concurrency as usize;
        // One page past max_pages, so a read that needs it fails as a sequential one does.
        while !self.exhausted
            && self.inflight.len() < at_once
            && self.scheduled <= self.source.config.max_pages
        {
            let index = self.scheduled;
            self.scheduled += 1;
            let client = self.source.client.clone();
            let request = client.nth_page(&self.first, index);
            self.inflight.push_back(tokio::spawn(async move {
                let (page, after) = client.page(&request, index + 1, index * size).await?;
                let last = after.is_none() || (page.records.len() as u64) < size;
                Ok((page, last))
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
        } else if bounds.since.is_some() {
            Some("a REST source resumes by a cursor column, not from a position")
        } else {
            None
        };
        match refused {
            Some(why) => Err(Error::new(Kind::Unsupported, why)),
            None => Ok(()),
        }
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
        let mut pages = self.pages(bounds)?;
        while left > 0
            && let Some(page) = pages.next().await?
        {
            for row in page {
                if left == 0 {
                    break;
                }
                left -= 1;
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
        if !rows.is_empty() {
            let _ = tx.send(batch_of(columns, &rows)?).await;
        }
        Ok(())
    }

    fn describe_scan(&self, columns: &Schema, bounds: &ScanBounds) -> Result<String> {
        let names: Vec<&str> = columns.columns.iter().map(|c| c.name.as_str()).collect();
        let filter = match self.server_filter(bounds) {
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
        let mut max = Value::Null;
        let mut pages = self.pages(bounds)?;
        while let Some(page) = pages.next().await? {
            for row in page {
                let v = &row[at];
                if max == Value::Null
                    || model::compare_values(v, &max) == Some(std::cmp::Ordering::Greater)
                {
                    max = v.clone();
                }
            }
        }
        Ok(max)
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
}

/// The row positions of the columns a scan's bounds compare: the cursor's, and each filter
/// term's (in order); `None` for a column the row does not have.
#[derive(Debug)]
struct Positions {
    cursor: Option<usize>,
    terms: Vec<Option<usize>>,
}

/// Whether a row lies within `bounds` (cursor range and filter; the limit is the caller's),
/// its compared columns at `positions`: SQL's semantics, so a NULL compares as nothing.
fn within(bounds: &ScanBounds, positions: &Positions, row: &[Value]) -> bool {
    let value = |at: Option<usize>| at.map(|i| &row[i]);
    let cmp = |v: &Value, bound: &Value| model::compare_values(v, bound);
    use std::cmp::Ordering::{Equal, Greater, Less};
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
