//! The BigQuery driver: the REST API through reqwest.
//!
//! Statements are query jobs (`jobs.query`, then `getQueryResults` page by page until the
//! job is done and every row is read), with values bound as named parameters. Bulk rows
//! are a load job: a Parquet file streamed through a resumable upload in chunks of
//! [`UPLOAD_CHUNK`] bytes, so memory stays flat whatever the row count. BigQuery has no
//! transaction that spans queries on every endpoint (the emulator keeps one only inside a
//! script), so the session is not transactional: the sink builds its changes in a shadow
//! table and publishes it with one multi-statement transaction (`swap_statement`).
//!
//! A query that fails comes back either as an HTTP error (BigQuery) or as an answer with
//! an `errors` list (the emulator); both fail the call with the job id and the first error.

use std::fmt;
use std::time::Duration;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

use super::config::BigqueryConfig;
use super::dialect::BigqueryDialect;
use super::types;
use crate::connectors::dialect::SqlDialect;
use crate::connectors::{SqlSession, Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{BATCH_ROWS, DataType, Schema, Value, batch_of};

/// Bytes of Parquet sent per upload request: a multiple of 256 KiB, as resumable uploads
/// require of every chunk but the last.
const UPLOAD_CHUNK: usize = 8 << 20;

/// Rows a Parquet row group holds before it is written out (and its memory freed).
const ROW_GROUP_ROWS: usize = 8 * BATCH_ROWS;

/// Rows asked for per page of a query's results.
const PAGE_ROWS: usize = 10_000;

/// How long a job may run before dpone gives up waiting for it.
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// The OAuth scope of every request.
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// One BigQuery project and default dataset, used as a sink.
pub struct BigquerySession {
    http: reqwest::Client,
    /// Signs requests in with OAuth tokens (cached and renewed by the provider); `None`
    /// for an endpoint that takes requests without credentials (an emulator).
    auth: Option<std::sync::Arc<dyn gcp_auth::TokenProvider>>,
    /// The API's base URL, without a trailing `/`.
    endpoint: String,
    project: String,
    location: Option<String>,
    role: Kind,
    dialect: BigqueryDialect,
}

impl fmt::Debug for BigquerySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BigquerySession")
            .field("endpoint", &self.endpoint)
            .field("project", &self.project)
            .field("dataset", &self.dialect.dataset)
            .finish_non_exhaustive()
    }
}

/// Waiting for a job: pauses from 100 ms doubling to 5 s, for [`JOB_TIMEOUT`] at most.
struct Backoff {
    started: std::time::Instant,
    pause: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            started: std::time::Instant::now(),
            pause: Duration::from_millis(100),
        }
    }

    /// Sleeps before the next poll; an error (naming `job`) once the job ran too long.
    async fn wait(&mut self, session: &BigquerySession, job: &str) -> Result<()> {
        if self.started.elapsed() > JOB_TIMEOUT {
            return Err(session.fail(
                &format!("job {job}"),
                format!("not done after {} s", JOB_TIMEOUT.as_secs()),
            ));
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(5));
        Ok(())
    }
}

/// One page of a query's results.
struct Page {
    job_id: String,
    rows: Vec<Json>,
    next: Option<String>,
    affected: u64,
}

impl BigquerySession {
    /// Connects to the project of `c` and, when `create`, creates its dataset if missing
    /// (in `location`). Signs in with the service-account key of `credentials_json`, else
    /// on Google's endpoint with application default credentials.
    pub async fn connect(c: &BigqueryConfig, role: Kind, create: bool) -> Result<Self> {
        let auth: Option<std::sync::Arc<dyn gcp_auth::TokenProvider>> =
            match c.credentials() {
                Some(key) => Some(std::sync::Arc::new(
                    gcp_auth::CustomServiceAccount::from_json(key.expose()).map_err(|e| {
                        Error::config(
                            "sink.credentials_json",
                            format!("is not a service-account key: {e}"),
                        )
                    })?,
                )),
                None if c.is_google() => Some(gcp_auth::provider().await.map_err(|e| {
                    Error::new(
                        role,
                        format!(
                            "BigQuery: no credentials: sink.credentials_json is empty and no application default credentials were found ({e})"
                        ),
                    )
                })?),
                None => None,
            };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::new(role, format!("BigQuery: {e}")))?;
        let session = BigquerySession {
            http,
            auth,
            endpoint: c.endpoint().trim_end_matches('/').to_string(),
            project: c.project.clone(),
            location: c.location.clone(),
            role,
            dialect: BigqueryDialect {
                dataset: c.dataset.clone(),
                partition_by: c.partition_by.clone(),
                cluster_by: c.cluster_by.clone(),
            },
        };
        let dataset = session.api(&format!("datasets/{}", c.dataset));
        let found = session
            .call(session.http.get(&dataset), "read the dataset", true)
            .await?;
        if found.is_none() && create {
            let mut body = json!({
                "datasetReference": {"projectId": c.project, "datasetId": c.dataset},
            });
            if let Some(location) = &c.location {
                body["location"] = json!(location);
            }
            let insert = json_body(session.http.post(session.api("datasets")), &body);
            session.call(insert, "create the dataset", false).await?;
        }
        Ok(session)
    }

    fn fail(&self, what: &str, e: impl fmt::Display) -> Error {
        Error::new(self.role, format!("BigQuery: {what}: {e}"))
    }

    /// `<endpoint>/bigquery/v2/projects/<project>/<path>`.
    fn api(&self, path: &str) -> String {
        format!(
            "{}/bigquery/v2/projects/{}/{path}",
            self.endpoint, self.project
        )
    }

    /// `req` with the session's OAuth token, when it signs in.
    async fn signed(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::RequestBuilder> {
        match &self.auth {
            Some(provider) => {
                let token = provider
                    .token(&[SCOPE])
                    .await
                    .map_err(|e| self.fail(&format!("{what}: sign in"), e))?;
                Ok(req.bearer_auth(token.as_str()))
            }
            None => Ok(req),
        }
    }

    /// Sends `req`, signed in, and fails when it cannot be sent.
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
        self.signed(req, what)
            .await?
            .send()
            .await
            .map_err(|e| self.fail(what, crate::text::with_causes(&e)))
    }

    /// Sends `req` and returns the JSON it answers; `None` for a 404 when `missing_ok`.
    /// An error names what failed, the status and the API's message.
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
        missing_ok: bool,
    ) -> Result<Option<Json>> {
        let response = self.send(req, what).await?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.fail(what, crate::text::with_causes(&e)))?;
        if status == reqwest::StatusCode::NOT_FOUND && missing_ok {
            return Ok(None);
        }
        let parsed: Option<Json> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let message = parsed
                .as_ref()
                .and_then(|j| j["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(self.fail(
                what,
                format!("HTTP {status}: {}", crate::text::clean(&message, 400)),
            ));
        }
        parsed
            .map(Some)
            .ok_or_else(|| self.fail(what, "the answer is not JSON"))
    }

    /// The body of `jobs.query` for `stmt`.
    fn query_body(&self, stmt: &Statement) -> Json {
        let params: Vec<Json> = stmt
            .params
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != Value::Null)
            .map(|(i, v)| types::parameter(i + 1, v))
            .collect();
        let mut body = json!({
            "query": stmt.sql,
            "useLegacySql": false,
            "parameterMode": "NAMED",
            "queryParameters": params,
            "defaultDataset": {"projectId": self.project, "datasetId": self.dialect.dataset},
            "formatOptions": {"useInt64Timestamp": true},
            "maxResults": PAGE_ROWS,
            "timeoutMs": 10_000,
        });
        if let Some(location) = &self.location {
            body["location"] = json!(location);
        }
        body
    }

    /// Fails with the job's first error, if the answer carries one.
    fn job_errors(&self, answer: &Json, job_id: &str) -> Result<()> {
        match first_error(answer) {
            Some(message) => Err(self.fail(&format!("job {job_id}"), message)),
            None => Ok(()),
        }
    }

    /// Starts `stmt` and returns its first page once the job is done.
    async fn first_page(&self, stmt: &Statement) -> Result<Page> {
        let req = json_body(self.http.post(self.api("queries")), &self.query_body(stmt));
        let answer = self
            .call(req, "run a query", false)
            .await?
            .unwrap_or_default();
        let job_id = answer["jobReference"]["jobId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.job_errors(&answer, &job_id)?;
        if answer["jobComplete"].as_bool() == Some(true) {
            return Ok(page(job_id, answer));
        }
        self.results(&job_id, None).await
    }

    /// A page of the results of job `job_id` (`getQueryResults`), waiting with backoff
    /// while the job runs.
    async fn results(&self, job_id: &str, token: Option<&str>) -> Result<Page> {
        let mut backoff = Backoff::new();
        loop {
            let mut req = self
                .http
                .get(self.api(&format!("queries/{job_id}")))
                .query(&[
                    ("maxResults", PAGE_ROWS.to_string()),
                    ("timeoutMs", "10000".into()),
                    ("formatOptions.useInt64Timestamp", "true".into()),
                ]);
            if let Some(t) = token {
                req = req.query(&[("pageToken", t)]);
            }
            if let Some(l) = &self.location {
                req = req.query(&[("location", l)]);
            }
            let answer = self
                .call(req, &format!("read the results of job {job_id}"), false)
                .await?
                .unwrap_or_default();
            self.job_errors(&answer, job_id)?;
            if answer["jobComplete"].as_bool() != Some(false) {
                return Ok(page(job_id.to_string(), answer));
            }
            backoff.wait(self, job_id).await?;
        }
    }

    /// The rows of `page`, decoded as `types`.
    fn decode_page(&self, page: &Page, types: &[DataType]) -> Result<Vec<Vec<Value>>> {
        page.rows
            .iter()
            .enumerate()
            .map(|(r, row)| self.decode_row(row, types, &page.job_id, r))
            .collect()
    }

    /// The page after `page`, `None` after the last.
    async fn next_page(&self, page: &Page) -> Result<Option<Page>> {
        match &page.next {
            Some(token) => Ok(Some(self.results(&page.job_id, Some(token)).await?)),
            None => Ok(None),
        }
    }

    fn decode_row(
        &self,
        row: &Json,
        types: &[DataType],
        job_id: &str,
        r: usize,
    ) -> Result<Vec<Value>> {
        let cells = row["f"].as_array().map(Vec::as_slice).unwrap_or_default();
        if cells.len() != types.len() {
            return Err(self.fail(
                &format!("job {job_id}"),
                format!(
                    "a row has {} columns, {} expected",
                    cells.len(),
                    types.len()
                ),
            ));
        }
        cells
            .iter()
            .zip(types)
            .enumerate()
            .map(|(c, (cell, t))| {
                types::cell(&cell["v"], t)
                    .map_err(|e| self.fail(&format!("job {job_id}, row {r}, column {c}"), e))
            })
            .collect()
    }

    /// The table resource of `table`, `None` when it does not exist.
    async fn table(&self, table: &TableName) -> Result<Option<Json>> {
        let dataset = table.schema.as_deref().unwrap_or(&self.dialect.dataset);
        let url = self.api(&format!("datasets/{dataset}/tables/{}", table.name));
        self.call(self.http.get(url), &format!("describe {table}"), true)
            .await
    }

    /// Waits until job `job_id` is done; fails with its first error.
    async fn wait_job(&self, job_id: &str, mut job: Json) -> Result<Json> {
        let mut backoff = Backoff::new();
        loop {
            self.job_errors(&job, job_id)?;
            if job["status"]["state"].as_str() == Some("DONE") {
                return Ok(job);
            }
            backoff.wait(self, job_id).await?;
            let mut req = self.http.get(self.api(&format!("jobs/{job_id}")));
            if let Some(l) = &self.location {
                req = req.query(&[("location", l)]);
            }
            job = self
                .call(req, &format!("poll job {job_id}"), false)
                .await?
                .unwrap_or_default();
        }
    }

    /// Starts a resumable upload of a load job into `table`; returns the job id and the
    /// URL the file goes to.
    async fn start_load(&self, table: &TableName) -> Result<(String, String)> {
        let job_id = format!("dpone_load_{}", uuid::Uuid::new_v4().simple());
        let dataset = table.schema.as_deref().unwrap_or(&self.dialect.dataset);
        let mut reference = json!({"projectId": self.project, "jobId": job_id});
        if let Some(l) = &self.location {
            reference["location"] = json!(l);
        }
        let body = json!({
            "jobReference": reference,
            "configuration": {"load": {
                "destinationTable": {
                    "projectId": self.project, "datasetId": dataset, "tableId": table.name,
                },
                "sourceFormat": "PARQUET",
                "writeDisposition": "WRITE_APPEND",
                "createDisposition": "CREATE_NEVER",
                "decimalTargetTypes": ["NUMERIC", "BIGNUMERIC"],
            }},
        });
        let url = format!(
            "{}/upload/bigquery/v2/projects/{}/jobs?uploadType=resumable",
            self.endpoint, self.project
        );
        let response = self
            .send(json_body(self.http.post(url), &body), "start a load job")
            .await?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        match location {
            Some(l) if status.is_success() => Ok((job_id, l)),
            _ => {
                let text = response.text().await.unwrap_or_default();
                Err(self.fail(
                    &format!("start load job {job_id}"),
                    format!("HTTP {status}: {}", crate::text::clean(&text, 400)),
                ))
            }
        }
    }

    /// Sends `bytes` at `offset` of the upload; `total` on the last chunk. Returns the
    /// job resource the last chunk is answered with.
    async fn put_chunk(
        &self,
        url: &str,
        job_id: &str,
        bytes: Vec<u8>,
        offset: usize,
        total: Option<usize>,
    ) -> Result<Option<Json>> {
        let range = match (bytes.len(), total) {
            (0, Some(t)) => format!("bytes */{t}"),
            (n, Some(t)) => format!("bytes {offset}-{}/{t}", offset + n - 1),
            (n, None) => format!("bytes {offset}-{}/*", offset + n - 1),
        };
        let req = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_RANGE, range)
            .body(bytes);
        let response = self.send(req, &format!("load job {job_id}")).await?;
        let status = response.status();
        if status.as_u16() == 308 && total.is_none() {
            return Ok(None);
        }
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(self.fail(
                &format!("load job {job_id}"),
                format!("HTTP {status}: {}", crate::text::clean(&text, 400)),
            ));
        }
        Ok(serde_json::from_str(&text).ok())
    }
}

/// The first error of a query answer (`errors`, the emulator's way) or of a job resource
/// (`status.errorResult`), cleaned for a message.
fn first_error(answer: &Json) -> Option<String> {
    let first = answer["errors"]
        .as_array()
        .and_then(|e| e.first())
        .or_else(|| answer["status"].get("errorResult"))?;
    let reason = first["reason"].as_str().unwrap_or("error");
    let message = first["message"].as_str().unwrap_or("failed");
    Some(crate::text::clean(&format!("{reason}: {message}"), 400))
}

/// `req` with `body` as its JSON body.
fn json_body(req: reqwest::RequestBuilder, body: &Json) -> reqwest::RequestBuilder {
    req.header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

fn page(job_id: String, answer: Json) -> Page {
    Page {
        job_id,
        next: answer["pageToken"].as_str().map(str::to_string),
        affected: answer["numDmlAffectedRows"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        rows: match answer.get("rows") {
            Some(Json::Array(rows)) => rows.clone(),
            _ => Vec::new(),
        },
    }
}

fn no_transactions() -> Error {
    Error::new(
        Kind::Unsupported,
        "BigQuery keeps a transaction only within one script (the sink publishes through a shadow table instead)",
    )
}

#[async_trait]
impl SqlSession for BigquerySession {
    fn dialect(&self) -> &dyn SqlDialect {
        &self.dialect
    }

    fn transactional(&self) -> bool {
        false
    }

    /// The rows a DML statement changed as BigQuery counts them (`numDmlAffectedRows`);
    /// 0 where the endpoint does not say (the emulator, for scripts).
    async fn execute(&mut self, stmt: &Statement) -> Result<u64> {
        // Rows a statement returns (a script's last SELECT) are not read.
        Ok(self.first_page(stmt).await?.affected)
    }

    async fn query(&mut self, stmt: &Statement, types: &[DataType]) -> Result<Vec<Vec<Value>>> {
        let mut page = self.first_page(stmt).await?;
        let mut all = self.decode_page(&page, types)?;
        while let Some(next) = self.next_page(&page).await? {
            page = next;
            all.extend(self.decode_page(&page, types)?);
        }
        Ok(all)
    }

    async fn table_schema(&mut self, table: &TableName) -> Result<Option<Schema>> {
        let Some(resource) = self.table(table).await? else {
            return Ok(None);
        };
        let columns = resource["schema"]["fields"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(types::portable_type)
            .collect::<Result<Vec<_>>>()?;
        let primary_key = resource["tableConstraints"]["primaryKey"]["columns"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        Ok(Some(Schema {
            columns,
            primary_key,
        }))
    }

    async fn read(
        &mut self,
        stmt: &Statement,
        schema: &Schema,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let types: Vec<DataType> = schema.columns.iter().map(|c| c.data_type).collect();
        // One page at a time: a slow receiver holds the read at one page of rows.
        let mut page = Some(self.first_page(stmt).await?);
        while let Some(current) = page {
            for chunk in self.decode_page(&current, &types)?.chunks(BATCH_ROWS) {
                if tx.send(batch_of(schema, chunk)?).await.is_err() {
                    return Ok(());
                }
            }
            page = self.next_page(&current).await?;
        }
        Ok(())
    }

    /// A load job of Parquet through a resumable upload; returns the rows the job loaded,
    /// which must be the rows sent.
    async fn bulk_insert(
        &mut self,
        table: &TableName,
        schema: &Schema,
        mut rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        let load_schema = types::load_schema(&schema.columns);
        let props = WriterProperties::builder()
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .build();
        let mut writer = ArrowWriter::try_new(Vec::new(), load_schema.clone(), Some(props))
            .map_err(|e| self.fail("write Parquet", e))?;
        let mut upload: Option<(String, String)> = None;
        let (mut sent, mut rows) = (0usize, 0u64);
        while let Some(batch) = rx.recv().await {
            rows += batch.num_rows() as u64;
            let batch = types::load_batch(&batch, &schema.columns, &load_schema)?;
            writer
                .write(&batch)
                .map_err(|e| self.fail("write Parquet", e))?;
            let buffered = writer.inner_mut();
            if buffered.len() >= UPLOAD_CHUNK {
                let whole = buffered.len() / UPLOAD_CHUNK * UPLOAD_CHUNK;
                let chunk: Vec<u8> = buffered.drain(..whole).collect();
                if upload.is_none() {
                    upload = Some(self.start_load(table).await?);
                }
                let (job_id, url) = upload.as_ref().expect("started");
                self.put_chunk(url, job_id, chunk, sent, None).await?;
                sent += whole;
            }
        }
        if rows == 0 {
            return Ok(0);
        }
        let rest = writer
            .into_inner()
            .map_err(|e| self.fail("write Parquet", e))?;
        let (job_id, url) = match upload {
            Some(started) => started,
            None => self.start_load(table).await?,
        };
        let total = sent + rest.len();
        let job = self
            .put_chunk(&url, &job_id, rest, sent, Some(total))
            .await?
            .ok_or_else(|| self.fail(&format!("load job {job_id}"), "no job in the answer"))?;
        // The emulator names the job itself: poll the id the answer gives.
        let job_id = job["jobReference"]["jobId"]
            .as_str()
            .map_or(job_id, str::to_string);
        let job = self.wait_job(&job_id, job).await?;
        let loaded: u64 = job["statistics"]["load"]["outputRows"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(rows);
        if loaded != rows {
            return Err(self.fail(
                &format!("load job {job_id}"),
                format!("loaded {loaded} rows of the {rows} sent"),
            ));
        }
        Ok(rows)
    }

    async fn begin(&mut self) -> Result<()> {
        Err(no_transactions())
    }

    async fn commit(&mut self) -> Result<()> {
        Err(no_transactions())
    }

    async fn rollback(&mut self) -> Result<()> {
        Err(no_transactions())
    }

    /// Refuses a target that is not a plain table (a view, an external table or a
    /// snapshot cannot take the shadow's rows), or whose columns cannot hold the incoming
    /// ones: a missing column, or one of another BigQuery type, fails before any load.
    async fn check_target(
        &mut self,
        table: &TableName,
        schema: &Schema,
        incoming: &Schema,
        _key: &[String],
    ) -> Result<()> {
        let kind = self
            .table(table)
            .await?
            .and_then(|t| t["type"].as_str().map(str::to_string));
        if let Some(other) = kind.as_deref().filter(|k| *k != "TABLE") {
            return Err(Error::config(
                "sink.table",
                format!("{table} is a BigQuery {other}: dpone loads into tables only"),
            ));
        }
        for c in &incoming.columns {
            let wanted = types::type_family(&c.data_type);
            let found = schema
                .column(&c.name)
                .map(|t| types::type_family(&t.data_type));
            if found != Some(wanted) {
                return Err(Error::config(
                    "sink.table",
                    format!(
                        "{table} cannot take column `{}` ({}, {wanted} in BigQuery): the table {}",
                        crate::text::name(&c.name),
                        crate::model::type_name(&c.data_type),
                        found.map_or("has no such column".into(), |f| format!("has it as {f}"))
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One multi-statement transaction that replaces the target's rows with the shadow's
    /// (the target keeps its definition: partitioning, clustering, descriptions, access);
    /// the shadow is dropped after.
    async fn swap_statement(
        &mut self,
        target: &TableName,
        shadow: &TableName,
        _old: &TableName,
    ) -> Result<(String, TableName)> {
        let columns = self
            .table_schema(target)
            .await?
            .ok_or_else(|| self.fail("publish", format!("the target {target} is gone")))?
            .names();
        let d = &self.dialect;
        let cols = d.column_list(&columns);
        let sql = format!(
            "BEGIN TRANSACTION;\nDELETE FROM {t} WHERE TRUE;\nINSERT INTO {t} ({cols}) SELECT {cols} FROM {s};\nCOMMIT TRANSACTION;",
            t = d.table_ref(target),
            s = d.table_ref(shadow)
        );
        Ok((sql, shadow.clone()))
    }

    async fn partitioned_by(&mut self, table: &TableName, column: &str) -> Result<bool> {
        Ok(self
            .table(table)
            .await?
            .is_some_and(|t| t["timePartitioning"]["field"].as_str() == Some(column)))
    }

    /// One multi-statement transaction that deletes the target's rows in every partition
    /// `copy` has rows in and inserts `copy`'s rows.
    async fn partition_replacements(
        &mut self,
        target: &TableName,
        copy: &TableName,
    ) -> Result<Vec<String>> {
        let resource = self.table(target).await?.ok_or_else(|| {
            self.fail("replace partitions", format!("the target {target} is gone"))
        })?;
        let partitioning = &resource["timePartitioning"];
        let (Some(column), unit) = (
            partitioning["field"].as_str(),
            partitioning["type"].as_str().unwrap_or("DAY"),
        ) else {
            return Err(self.fail(
                "replace partitions",
                format!("{target} is not partitioned by a column"),
            ));
        };
        let schema = self.table_schema(target).await?.unwrap_or_else(|| Schema {
            columns: Vec::new(),
            primary_key: Vec::new(),
        });
        let d = &self.dialect;
        let q = d.quote_ident(column);
        let t = schema.column(column).map(|c| c.data_type);
        let expr = match (unit, t) {
            ("DAY", Some(DataType::Date)) => q,
            ("DAY", _) => format!("DATE({q})"),
            (unit, Some(DataType::Date)) => format!("DATE_TRUNC({q}, {unit})"),
            (unit, Some(DataType::Timestamp)) => format!("DATETIME_TRUNC({q}, {unit})"),
            (unit, _) => format!("TIMESTAMP_TRUNC({q}, {unit})"),
        };
        let cols = d.column_list(&schema.names());
        Ok(vec![format!(
            "BEGIN TRANSACTION;\nDELETE FROM {t} WHERE {expr} IN (SELECT DISTINCT {expr} FROM {c});\nINSERT INTO {t} ({cols}) SELECT {cols} FROM {c};\nCOMMIT TRANSACTION;",
            t = d.table_ref(target),
            c = d.table_ref(copy)
        )])
    }

    async fn try_lock(&mut self, _name: &str) -> Result<bool> {
        Err(Error::new(
            Kind::Unsupported,
            "BigQuery has no locks to hold a pipeline's run: keep the state store in SQLite or PostgreSQL",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_says_its_first_error() {
        let load = json!({"status": {"state": "DONE", "errorResult": {
            "reason": "invalid", "message": "Error while reading data"}, "errors": [{}]}});
        assert_eq!(
            first_error(&load).as_deref(),
            Some("invalid: Error while reading data")
        );
        let query = json!({"jobComplete": true, "errors": [
            {"reason": "invalidQuery", "message": "Syntax error\nat 1"},
            {"reason": "other", "message": "second"}]});
        assert_eq!(
            first_error(&query).as_deref(),
            Some("invalidQuery: Syntax error\\nat 1")
        );
        assert_eq!(first_error(&json!({"status": {"state": "DONE"}})), None);
    }
}
