//! Change feeds on PostgreSQL: a publication for the source table and a logical replication
//! slot decoding it with `pgoutput`, read over plain SQL.
//!
//! Changes are peeked (`pg_logical_slot_peek_binary_changes`), never consumed by reading:
//! the slot moves only when `ack` advances it, which the strategy calls after the sink
//! committed. Positions are LSNs as `u64`. A window `(after, up_to]` holds the transactions
//! whose commit record ends in it; `up_to` comes from `open_feed` as a WAL record boundary
//! that is already flushed, so no transaction straddles it and acknowledging it never skips
//! one that was not read.
//!
//! Values arrive in their types' text output. Compacted rows go back through the server's
//! input functions (`jsonb_populate_recordset` over the source table's row type) and the
//! binary COPY reader, so every type reads exactly as a table scan would.

use std::collections::HashMap;
use std::time::Duration;

use arrow_array::{Array, BinaryArray, RecordBatch, StringArray};
use tokio::sync::mpsc;

use super::PostgresSession;
use super::config::ChangeFeedConfig;
use super::pgoutput::{self, Datum, Message};
use super::types::{lsn_position, parse_lsn_position};
use crate::connectors::ChangeFeed;
use crate::connectors::source::{ChangeRead, check_ack};
use crate::connectors::{SqlSession, Statement, TableName, render};
use crate::error::{Error, Kind, Result};
use crate::model::{ChangePart, ChangeWindow, DataType, RestartReason, Schema, Value};

/// The slot and publication of this pipeline's change feed (PostgreSQL), from the
/// manifest's `source.change_feed`. A guest never names a feed: it can only reach its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedNames {
    pub slot: String,
    pub publication: String,
    /// The publication is dpone's default one, which retiring the pipeline drops; a
    /// publication the manifest names may be the user's own and stays.
    pub own_publication: bool,
}

/// Names a feed: the manifest's (checked by the config), else `dpone_<pipeline>` folded to
/// a valid slot name. When folding changed the name (case, characters, length), a hash of
/// the pipeline name is appended, so `orders-eu` and `orders_eu` never share a slot.
pub fn feed_names(pipeline: &str, slot: Option<&str>, publication: Option<&str>) -> FeedNames {
    let slot = slot.map(str::to_string).unwrap_or_else(|| {
        let plain = format!("dpone_{pipeline}");
        let folded: String = plain
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if folded == plain && folded.len() <= 63 {
            folded
        } else {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(pipeline.as_bytes());
            let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
            let base: String = folded.chars().take(54).collect();
            format!("{base}_{hash}")
        }
    });
    FeedNames {
        publication: publication.map_or_else(|| slot.clone(), str::to_string),
        own_publication: publication.is_none(),
        slot,
    }
}

/// This pipeline's change feed on a PostgreSQL source, read over a connection of its own
/// (opened at the first use, so runs of other strategies open none).
pub struct PostgresFeed {
    url: crate::secret::Secret,
    table: TableName,
    names: FeedNames,
    session: Option<PostgresSession>,
    /// The window the last `open` gave this run, `(after, up_to]`: all it may acknowledge.
    opened: Option<(u64, u64)>,
    /// What this feed created on the server, for the run report.
    created: Vec<String>,
}

impl std::fmt::Debug for PostgresFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresFeed")
            .field("table", &self.table)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl PostgresFeed {
    /// The feed `config` names (or the default names) for `pipeline`'s source `table`.
    pub fn new(
        url: crate::secret::Secret,
        table: TableName,
        pipeline: &str,
        config: Option<&ChangeFeedConfig>,
    ) -> Self {
        let config = config.cloned().unwrap_or_default();
        PostgresFeed {
            url,
            table,
            names: feed_names(
                pipeline,
                config.slot.as_deref(),
                config.publication.as_deref(),
            ),
            session: None,
            opened: None,
            created: Vec::new(),
        }
    }

    async fn session(&mut self) -> Result<&mut PostgresSession> {
        if self.session.is_none() {
            self.session = Some(PostgresSession::connect(self.url.expose(), Kind::Source).await?);
        }
        Ok(self.session.as_mut().expect("connected above"))
    }
}

#[async_trait::async_trait]
impl ChangeFeed for PostgresFeed {
    async fn open(&mut self, stored: Option<&str>, create: bool) -> Result<ChangeWindow> {
        let (table, names) = (self.table.clone(), self.names.clone());
        let mut made = Vec::new();
        let window = open_window(
            self.session().await?,
            &table,
            &names,
            stored,
            create,
            &mut made,
        )
        .await?;
        self.created.extend(made);
        self.opened = Some((
            parse_lsn_position(&window.after)?,
            parse_lsn_position(&window.up_to)?,
        ));
        Ok(window)
    }

    fn check_read(&self, read: &ChangeRead) -> Result<()> {
        read.window(parse_lsn_position).map(drop)
    }

    async fn read(
        &mut self,
        columns: &Schema,
        read: &ChangeRead,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        let (table, names) = (self.table.clone(), self.names.clone());
        read_changes(self.session().await?, &table, &names, columns, read, tx).await
    }

    /// Acknowledges only a position of the window this run opened.
    async fn ack(&mut self, position: &str) -> Result<()> {
        let lsn = parse_lsn_position(position)?;
        check_ack(self.opened.as_ref(), position, &lsn, |l| lsn_position(*l))?;
        let names = self.names.clone();
        ack(self.session().await?, &names, lsn).await
    }

    fn created(&self) -> Vec<String> {
        self.created.clone()
    }

    /// Drops the slot and the default-named publication dpone created; a publication the
    /// manifest names may be the user's own and stays.
    async fn drop_feed(&mut self) -> Result<String> {
        let names = self.names.clone();
        let (slot, publication) =
            drop_feed(self.session().await?, &names, names.own_publication).await?;
        Ok(format!(
            "slot {}: {}; publication {}: {}",
            names.slot,
            if slot { "dropped" } else { "did not exist" },
            names.publication,
            match (names.own_publication, publication) {
                (false, _) => "kept (named in the manifest)",
                (true, true) => "dropped",
                (true, false) => "did not exist",
            }
        ))
    }
}

/// Where a slot stands.
#[derive(Debug, Clone, Copy)]
struct FeedPosition {
    /// This call created the feed: no change before `acknowledged` is in it.
    created: bool,
    /// Changes up to here are acknowledged; the slot holds the ones after it.
    acknowledged: u64,
    /// Every transaction that committed before the call lies at or before this LSN.
    horizon: u64,
    /// WAL the slot keeps on the server.
    retained_bytes: u64,
    /// This call created the publication.
    created_publication: bool,
}

/// A change read with its positions parsed, on this pipeline's feed.
#[derive(Debug)]
struct Window<'a> {
    names: &'a FeedNames,
    key: &'a [String],
    after: u64,
    up_to: u64,
    part: ChangePart,
}

/// Opens the feed (see [`open_feed`]) and applies PostgreSQL's gap rule: the slot holds
/// every change after its acknowledged LSN and none before, and this pipeline acknowledges
/// only what it stored, so a stored LSN behind the slot's means someone else moved the slot
/// and the changes in between are gone. A stored LSN ahead of it is a crash between the
/// sink commit and the acknowledgement: the window starts at the stored LSN.
async fn open_window(
    s: &mut dyn SqlSession,
    table: &TableName,
    names: &FeedNames,
    stored: Option<&str>,
    create: bool,
    made: &mut Vec<String>,
) -> Result<ChangeWindow> {
    let stored = stored.map(parse_lsn_position).transpose()?;
    let feed = open_feed(s, table, names, create).await?;
    if create {
        if feed.created_publication {
            made.push(format!("publication {}", names.publication));
        }
        if feed.created {
            made.push(format!("replication slot {}", names.slot));
        }
    }
    let restart = match stored {
        None => RestartReason::NoStoredPosition,
        Some(_) if feed.created => RestartReason::FeedCreated,
        Some(lsn) if lsn < feed.acknowledged => RestartReason::StoredPositionExpired,
        Some(_) => RestartReason::None,
    };
    let after = match (restart, stored) {
        (RestartReason::None, Some(lsn)) => lsn,
        _ => feed.acknowledged,
    };
    Ok(ChangeWindow {
        restart,
        after: lsn_position(after),
        up_to: lsn_position(feed.horizon.max(after)),
        retained_bytes: Some(feed.retained_bytes),
    })
}

/// Rows per statement when compacted changes are read back through the server.
const ROWS_PER_READ: usize = 5_000;

fn text(v: &str) -> Value {
    Value::Text(v.to_string())
}

async fn one_text(s: &mut dyn SqlSession, stmt: Statement) -> Result<Option<String>> {
    let rows = s.query(&stmt, &[DataType::Text]).await?;
    Ok(
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        },
    )
}

/// Parses `X/Y` as PostgreSQL prints an LSN.
pub fn parse_lsn(t: &str) -> Result<u64> {
    let bad = || Error::source(format!("`{t}` is not an LSN"));
    let (hi, lo) = t.split_once('/').ok_or_else(bad)?;
    let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
    let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
    Ok((hi << 32) | lo)
}

pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Creates the publication and the slot when missing (only when `create`: a dry run
/// reports a missing feed as one about to be created) and reports the feed's position.
async fn open_feed(
    s: &mut dyn SqlSession,
    table: &TableName,
    names: &FeedNames,
    create: bool,
) -> Result<FeedPosition> {
    let level = one_text(s, Statement::new("SELECT current_setting('wal_level')")).await?;
    if level.as_deref() != Some("logical") {
        return Err(Error::new(
            Kind::Unsupported,
            format!(
                "cdc needs wal_level = logical on the source (it is {}); set it in postgresql.conf and restart",
                level.unwrap_or_default()
            ),
        ));
    }
    let partitioned = check_replica_identity(s, table).await?;
    let relation = render::table_ref(table);
    let exists = Statement {
        sql: "SELECT pubname::text FROM pg_publication WHERE pubname = $1".into(),
        params: vec![text(&names.publication)],
    };
    let schema = table_schema(s, table).await?;
    let published = Statement {
        sql: "SELECT CAST(count(*) AS text) FROM pg_publication_tables WHERE pubname = $1 \
              AND schemaname = $2 AND tablename = $3"
            .into(),
        params: vec![text(&names.publication), text(&schema), text(&table.name)],
    };
    let missing = one_text(s, exists).await?.is_none();
    if missing && !create {
        return Ok(FeedPosition {
            created: true,
            acknowledged: 0,
            horizon: 0,
            retained_bytes: 0,
            created_publication: false,
        });
    }
    if missing {
        s.execute(&Statement::new(format!(
            // Partitions' changes under the partitioned table's name, as its scan reads them.
            "CREATE PUBLICATION {} FOR TABLE {relation} WITH (publish_via_partition_root = true)",
            render::quote_ident(&names.publication)
        )))
        .await?;
        tracing::info!("created publication {} for {table}", names.publication);
    } else if partitioned
        && one_text(
            s,
            Statement {
                sql: "SELECT CAST(pubviaroot AS text) FROM pg_publication WHERE pubname = $1"
                    .into(),
                params: vec![text(&names.publication)],
            },
        )
        .await?
        .as_deref()
            != Some("true")
    {
        return Err(Error::config(
            "source.change_feed.publication",
            format!(
                "publication `{}` publishes the partitions of {table} under their own names: create it WITH (publish_via_partition_root = true)",
                names.publication
            ),
        ));
    } else if one_text(s, published).await?.as_deref() != Some("1") {
        return Err(Error::config(
            "source.change_feed.publication",
            format!(
                "publication `{}` exists but does not publish {table}",
                names.publication
            ),
        ));
    }
    let slot = Statement {
        sql: "SELECT plugin::text, CAST(confirmed_flush_lsn AS text), \
              CAST(COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0) AS bigint), \
              CAST(database = current_database() AS text) \
              FROM pg_replication_slots WHERE slot_name = $1"
            .into(),
        params: vec![text(&names.slot)],
    };
    let types = [
        DataType::Text,
        DataType::Text,
        DataType::Int64,
        DataType::Text,
    ];
    let found = s.query(&slot, &types).await?.into_iter().next();
    let (created, acknowledged, retained) = match found {
        Some(row) => match row.as_slice() {
            [
                Value::Text(plugin),
                Value::Text(confirmed),
                Value::Int(retained),
                Value::Text(here),
            ] if plugin == "pgoutput" && here == "true" => {
                (false, parse_lsn(confirmed)?, (*retained).max(0) as u64)
            }
            _ => {
                return Err(Error::config(
                    "source.change_feed.slot",
                    format!(
                        "slot `{}` exists but is not a pgoutput slot of this database",
                        names.slot
                    ),
                ));
            }
        },
        None if !create => {
            return Ok(FeedPosition {
                created: true,
                acknowledged: 0,
                horizon: 0,
                retained_bytes: 0,
                created_publication: false,
            });
        }
        None => {
            let create = Statement {
                sql: "SELECT CAST(lsn AS text) FROM pg_create_logical_replication_slot($1, 'pgoutput')"
                    .into(),
                params: vec![text(&names.slot)],
            };
            let lsn = one_text(s, create)
                .await?
                .ok_or_else(|| Error::source("creating the replication slot returned no LSN"))?;
            tracing::info!("created replication slot {} at {lsn}", names.slot);
            (true, parse_lsn(&lsn)?, 0)
        }
    };
    Ok(FeedPosition {
        created,
        acknowledged,
        horizon: horizon(s).await?,
        retained_bytes: retained,
        created_publication: missing,
    })
}

/// The table's schema: the manifest's, else the session's current schema (where an
/// unqualified name resolves first for a table the connector created or found).
async fn table_schema(s: &mut dyn SqlSession, table: &TableName) -> Result<String> {
    match &table.schema {
        Some(schema) => Ok(schema.clone()),
        None => one_text(s, Statement::new("SELECT current_schema()::text"))
            .await?
            .ok_or_else(|| Error::source("no current schema")),
    }
}

/// Updates and deletes are replicated with the replica identity; without one PostgreSQL
/// refuses them on a published table, so say so before creating anything.
async fn check_replica_identity(s: &mut dyn SqlSession, table: &TableName) -> Result<bool> {
    let stmt = Statement {
        sql: "SELECT c.relreplident::text || CASE WHEN EXISTS (SELECT 1 FROM pg_index i \
              WHERE i.indrelid = c.oid AND i.indisprimary) THEN 'k' ELSE '' END, \
              c.relkind::text, CAST(c.relhassubclass AS text) \
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relname = $2"
            .into(),
        params: vec![text(&table_schema(s, table).await?), text(&table.name)],
    };
    let t = DataType::Text;
    let rows = s.query(&stmt, &[t, t, t]).await?;
    let Some(
        [
            Value::Text(identity),
            Value::Text(relkind),
            Value::Text(children),
        ],
    ) = rows.first().map(Vec::as_slice)
    else {
        return Err(Error::config(
            "source.table",
            format!("table `{table}` does not exist in the source"),
        ));
    };
    if !matches!(identity.as_str(), "f" | "fk" | "dk" | "ik" | "i") {
        return Err(Error::new(
            Kind::Unsupported,
            format!(
                "{table} has no replica identity for updates and deletes: give it a primary key or run ALTER TABLE {table} REPLICA IDENTITY FULL"
            ),
        ));
    }
    let partitioned = relkind == "p";
    // Inheritance children log their changes under their own names, which a table scan
    // of the parent includes but its feed would not.
    if !partitioned && children == "true" {
        return Err(Error::new(
            Kind::Unsupported,
            format!("{table} has inheritance children: their changes are not in its change feed"),
        ));
    }
    Ok(partitioned)
}

/// A WAL record boundary at or after every commit so far, once it is flushed (decoding
/// reads only flushed WAL). The insert position is a boundary; the WAL writer flushes it
/// within `wal_writer_delay`.
async fn horizon(s: &mut dyn SqlSession) -> Result<u64> {
    let insert = one_text(
        s,
        Statement::new("SELECT CAST(pg_current_wal_insert_lsn() AS text)"),
    )
    .await?
    .ok_or_else(|| Error::source("no WAL insert position"))?;
    let insert = parse_lsn(&insert)?;
    for _ in 0..200 {
        let flushed = one_text(
            s,
            Statement::new("SELECT CAST(pg_current_wal_flush_lsn() AS text)"),
        )
        .await?;
        if parse_lsn(&flushed.unwrap_or_default())? >= insert {
            return Ok(insert);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::source(format!(
        "WAL up to {} was not flushed within 10 s",
        lsn_text(insert)
    )))
}

/// Advances the slot to `position` (never backwards: a replayed window is acknowledged
/// already).
async fn ack(s: &mut dyn SqlSession, names: &FeedNames, position: u64) -> Result<()> {
    let current = Statement {
        sql: "SELECT CAST(confirmed_flush_lsn AS text) FROM pg_replication_slots WHERE slot_name = $1"
            .into(),
        params: vec![text(&names.slot)],
    };
    let confirmed = one_text(s, current)
        .await?
        .ok_or_else(|| Error::source(format!("replication slot `{}` is gone", names.slot)))?;
    if parse_lsn(&confirmed)? >= position {
        return Ok(());
    }
    let advance = Statement {
        sql:
            "SELECT CAST(end_lsn AS text) FROM pg_replication_slot_advance($1, CAST($2 AS pg_lsn))"
                .into(),
        params: vec![text(&names.slot), text(&lsn_text(position))],
    };
    one_text(s, advance).await?;
    Ok(())
}

/// Drops the slot and, when `publication`, the publication (`dpone-host cdc drop-slot`);
/// returns which of them existed and were dropped.
async fn drop_feed(
    s: &mut dyn SqlSession,
    names: &FeedNames,
    publication: bool,
) -> Result<(bool, bool)> {
    let slot = Statement {
        sql: "SELECT CAST(pg_drop_replication_slot(slot_name) AS text) FROM pg_replication_slots \
              WHERE slot_name = $1"
            .into(),
        params: vec![text(&names.slot)],
    };
    let dropped_slot = !s.query(&slot, &[DataType::Text]).await?.is_empty();
    let exists = Statement {
        sql: "SELECT pubname::text FROM pg_publication WHERE pubname = $1".into(),
        params: vec![text(&names.publication)],
    };
    let had_publication = publication && one_text(s, exists).await?.is_some();
    if had_publication {
        s.execute(&Statement::new(format!(
            "DROP PUBLICATION {}",
            render::quote_ident(&names.publication)
        )))
        .await?;
    }
    Ok((dropped_slot, had_publication))
}

/// A key's last change in the window: `None` for a delete, else the row in schema order.
type Compacted = HashMap<Vec<Option<Vec<u8>>>, Option<Vec<Datum>>>;

/// Streams the window's compacted changes of `part` as batches of `schema` into `tx`.
async fn read_changes(
    s: &mut dyn SqlSession,
    table: &TableName,
    names: &FeedNames,
    schema: &Schema,
    read: &ChangeRead,
    tx: mpsc::Sender<RecordBatch>,
) -> Result<()> {
    let (after, up_to) = read.window(parse_lsn_position)?;
    let window = &Window {
        names,
        key: &read.key,
        after,
        up_to,
        part: read.part,
    };
    let key_at = schema.positions(window.key, "sink.strategy.unique_key")?;
    let compacted = compact(s, table, schema, window, &key_at).await?;
    let mut rows = Vec::new();
    for (key, last) in compacted {
        match (window.part, last) {
            (ChangePart::Upserts, Some(row)) => {
                let fields: Vec<(usize, Datum)> = row.into_iter().enumerate().collect();
                rows.push(row_json(schema, fields)?);
            }
            (ChangePart::Deletes, None) => {
                let fields = key_at
                    .iter()
                    .zip(key)
                    .map(|(i, v)| (*i, v.map_or(Datum::Null, Datum::Text)))
                    .collect();
                rows.push(row_json(schema, fields)?);
            }
            _ => {}
        }
    }
    // Deleted keys come with every other column NULL, whatever the source declares.
    let relaxed;
    let schema = match window.part {
        ChangePart::Deletes => {
            relaxed = schema.all_nullable();
            &relaxed
        }
        ChangePart::Upserts => schema,
    };
    let columns: Vec<String> = schema.names();
    for part in rows.chunks(ROWS_PER_READ) {
        let json = Value::Json(format!("[{}]", part.join(",")));
        let stmt = Statement {
            sql: format!(
                "SELECT {} FROM jsonb_populate_recordset(NULL::{}, {})",
                render::column_list(&columns),
                render::table_ref(table),
                s.read_placeholder(1, &json)?
            ),
            params: vec![json],
        };
        s.read(&stmt, schema, tx.clone()).await?;
    }
    Ok(())
}

/// One JSON object of `jsonb_populate_recordset` input, written as text so json values
/// keep their exact numbers: `fields` are (column index in `schema`, datum).
fn row_json(schema: &Schema, fields: Vec<(usize, Datum)>) -> Result<String> {
    let mut parts = Vec::with_capacity(fields.len());
    for (i, datum) in fields {
        let column = &schema.columns[i];
        let value = match datum {
            Datum::Null => "null".to_string(),
            // json and jsonb text output is a JSON document: embedded as it is.
            Datum::Text(bytes) if column.data_type == DataType::Json => String::from_utf8(bytes)
                .map_err(|_| Error::source("a change carries json that is not UTF-8"))?,
            // Every other type as a string its input function parses.
            Datum::Text(bytes) => serde_json::Value::String(
                String::from_utf8(bytes)
                    .map_err(|_| Error::source("a change carries text that is not UTF-8"))?,
            )
            .to_string(),
            Datum::UnchangedToast => {
                return Err(Error::internal(
                    "unchanged TOAST value left after compaction",
                ));
            }
        };
        parts.push(format!(
            "{}:{value}",
            serde_json::Value::String(column.name.clone())
        ));
    }
    Ok(format!("{{{}}}", parts.join(",")))
}

/// Decodes the window and keeps each key's last change.
async fn compact(
    s: &mut dyn SqlSession,
    table: &TableName,
    schema: &Schema,
    window: &Window<'_>,
    key_at: &[usize],
) -> Result<Compacted> {
    let peek_schema = Schema {
        columns: vec![
            crate::model::Column {
                name: "lsn".into(),
                data_type: DataType::Text,
                nullable: false,
            },
            crate::model::Column {
                name: "data".into(),
                data_type: DataType::Bytes,
                nullable: false,
            },
        ],
        primary_key: Vec::new(),
    };
    let params = vec![
        text(&window.names.slot),
        text(&lsn_text(window.up_to)),
        text(&window.names.publication),
    ];
    let stmt = Statement {
        sql: format!(
            "SELECT CAST(lsn AS text), data FROM pg_logical_slot_peek_binary_changes({}, CAST({} AS pg_lsn), NULL, \
             'proto_version', '1', 'publication_names', {})",
            s.read_placeholder(1, &params[0])?,
            s.read_placeholder(2, &params[1])?,
            s.read_placeholder(3, &params[2])?,
        ),
        params,
    };
    let (batches_tx, mut batches) = mpsc::channel(crate::model::CHANNEL_BATCHES);
    let namespace = table_schema(s, table).await?;
    let mut decoder = Decoder::new(table, &namespace, schema, window, key_at);
    let consume = async {
        while let Some(batch) = batches.recv().await {
            let batch: RecordBatch = batch;
            let data = batch
                .column(1)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| Error::internal("peek data is not binary"))?;
            let _lsns = batch.column(0).as_any().downcast_ref::<StringArray>();
            for i in 0..data.len() {
                let message = pgoutput::decode(data.value(i))
                    .map_err(|e| Error::source(format!("change log: {e}")))?;
                decoder.apply(message)?;
            }
        }
        Ok::<(), Error>(())
    };
    let (read, consumed) = tokio::join!(s.read(&stmt, &peek_schema, batches_tx), consume);
    consumed?;
    read?;
    Ok(decoder.compacted)
}

/// Folds decoded messages into the compacted map, one transaction at a time.
struct Decoder<'a> {
    table: &'a TableName,
    namespace: &'a str,
    /// Positions of the key columns in `schema`.
    key_at: &'a [usize],
    schema: &'a Schema,
    window: &'a Window<'a>,
    /// Our relation's oid and, per column of the relation, its position in `schema`.
    relation: Option<(u32, Vec<Option<usize>>)>,
    /// The open transaction's changes: (old key if the key changed or the row went, new row).
    pending: Vec<Change>,
    compacted: Compacted,
}

enum Change {
    Upsert {
        /// The old row the update carries: the whole row (`full`, REPLICA IDENTITY FULL)
        /// or only its key columns, the rest NULL.
        old: Option<Vec<Datum>>,
        full: bool,
        new: Vec<Datum>,
    },
    Delete(Vec<Datum>),
}

impl<'a> Decoder<'a> {
    fn new(
        table: &'a TableName,
        namespace: &'a str,
        schema: &'a Schema,
        window: &'a Window<'a>,
        key_at: &'a [usize],
    ) -> Self {
        Decoder {
            table,
            namespace,
            key_at,
            schema,
            window,
            relation: None,
            pending: Vec::new(),
            compacted: HashMap::new(),
        }
    }

    fn apply(&mut self, message: Message) -> Result<()> {
        match message {
            Message::Begin { .. } => self.pending.clear(),
            Message::Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            } => {
                let ours = namespace == self.namespace && name == self.table.name;
                if ours {
                    // Updates and deletes carry the replica identity's columns only (all
                    // of them under FULL): applying by another key would miss or keep rows.
                    let mut identity: Vec<&str> = columns
                        .iter()
                        .filter(|c| c.key)
                        .map(|c| c.name.as_str())
                        .collect();
                    let mut key: Vec<&str> = self.window.key.iter().map(String::as_str).collect();
                    identity.sort_unstable();
                    key.sort_unstable();
                    if replica_identity != b'f' && identity != key {
                        return Err(Error::config(
                            "sink.strategy.unique_key",
                            format!(
                                "({}) is not the replica identity ({}) of {}: set unique_key to it, or ALTER TABLE {} REPLICA IDENTITY FULL",
                                key.join(", "),
                                identity.join(", "),
                                self.table,
                                self.table
                            ),
                        ));
                    }
                    let at = columns
                        .iter()
                        .map(|c| self.schema.columns.iter().position(|s| s.name == c.name))
                        .collect();
                    self.relation = Some((oid, at));
                }
            }
            Message::Insert { oid, new } if self.is_ours(oid) => {
                let new = self.in_schema_order(new)?;
                self.pending.push(Change::Upsert {
                    old: None,
                    full: false,
                    new,
                });
            }
            Message::Update {
                oid,
                old,
                old_is_key,
                new,
            } if self.is_ours(oid) => {
                let full = old.is_some() && !old_is_key;
                let old = old.map(|o| self.in_schema_order(o)).transpose()?;
                let new = self.in_schema_order(new)?;
                self.pending.push(Change::Upsert { old, full, new });
            }
            Message::Delete { oid, old, .. } if self.is_ours(oid) => {
                let old = self.in_schema_order(old)?;
                self.pending.push(Change::Delete(old));
            }
            Message::Truncate { oids, .. } if oids.iter().any(|o| self.is_ours(*o)) => {
                return Err(Error::source(format!(
                    "{} was truncated at the source; cdc cannot apply a TRUNCATE by key: drop the feed with `dpone-host cdc drop-slot` and run again, which takes a new snapshot",
                    self.table
                )));
            }
            Message::Commit { end_lsn, .. } => {
                let changes = std::mem::take(&mut self.pending);
                if end_lsn > self.window.after && end_lsn <= self.window.up_to {
                    for change in changes {
                        self.fold(change)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn is_ours(&self, oid: u32) -> bool {
        self.relation.as_ref().is_some_and(|(o, _)| *o == oid)
    }

    /// A replicated tuple in the order of `schema`; columns the schema lacks are dropped,
    /// columns the tuple lacks (added later) are NULL.
    fn in_schema_order(&self, tuple: Vec<Datum>) -> Result<Vec<Datum>> {
        let (_, at) = self
            .relation
            .as_ref()
            .ok_or_else(|| Error::source("a change arrived before its relation"))?;
        let mut row = vec![Datum::Null; self.schema.columns.len()];
        for (datum, position) in tuple.into_iter().zip(at) {
            if let Some(i) = position {
                row[*i] = datum;
            }
        }
        Ok(row)
    }

    fn key_of(&self, row: &[Datum]) -> Result<Vec<Option<Vec<u8>>>> {
        self.key_at
            .iter()
            .map(|&i| match &row[i] {
                Datum::Text(b) => Ok(Some(b.clone())),
                Datum::Null => Ok(None),
                Datum::UnchangedToast => Err(Error::source(format!(
                    "key column `{}` arrived as an unchanged TOAST value",
                    self.schema.columns[i].name
                ))),
            })
            .collect()
    }

    fn fold(&mut self, change: Change) -> Result<()> {
        match change {
            Change::Delete(old) => {
                let key = self.key_of(&old)?;
                if let Some(i) = key.iter().position(Option::is_none) {
                    return Err(Error::config(
                        "sink.strategy.unique_key",
                        format!(
                            "a delete on {} does not carry key column `{}`: unique_key must be the source's replica identity (its primary key), or set REPLICA IDENTITY FULL",
                            self.table, self.window.key[i]
                        ),
                    ));
                }
                self.compacted.insert(key, None);
            }
            Change::Upsert { old, full, mut new } => {
                let key = self.key_of(&new)?;
                // A key that changed is a delete of the old key.
                if let Some(old) = &old
                    && let Ok(old_key) = self.key_of(old)
                    && old_key != key
                {
                    self.compacted.insert(old_key, None);
                }
                let earlier = self.compacted.get(&key).and_then(Option::as_ref);
                for (i, datum) in new.iter_mut().enumerate() {
                    if *datum != Datum::UnchangedToast {
                        continue;
                    }
                    let from_window = earlier.map(|row| &row[i]);
                    // A key-only old row has NULL in every other column: no value there.
                    let from_old = old.as_ref().filter(|_| full).map(|row| &row[i]);
                    *datum = match (from_window, from_old) {
                        (Some(d), _) if *d != Datum::UnchangedToast => d.clone(),
                        (_, Some(d)) if *d != Datum::UnchangedToast => d.clone(),
                        _ => {
                            return Err(Error::source(format!(
                                "an update of {} left column `{}` unchanged and the change log does not carry its value (TOAST): run ALTER TABLE {} REPLICA IDENTITY FULL so later updates carry the whole old row, then `dpone-host cdc drop-slot` and run again for a new snapshot (this change cannot be applied)",
                                self.table, self.schema.columns[i].name, self.table
                            )));
                        }
                    };
                }
                self.compacted.insert(key, Some(new));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips() {
        for t in ["0/0", "0/16B3748", "1/0", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(lsn_text(parse_lsn(t).unwrap()), t);
        }
        assert!(parse_lsn("16B3748").is_err());
        assert!(parse_lsn("x/1").is_err());
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn feed_names_default_and_fold() {
        let n = feed_names("orders_eu", None, None);
        assert_eq!(n.slot, "dpone_orders_eu");
        assert_eq!(n.publication, n.slot);
        assert!(n.own_publication);
        let folded = feed_names("orders-eu", None, None).slot;
        assert!(
            folded.starts_with("dpone_orders_eu_") && folded != n.slot,
            "{folded}"
        );
        assert_ne!(folded, feed_names("Orders-EU", None, None).slot);
        let long = feed_names(&"x".repeat(80), None, None).slot;
        assert!(long.len() <= 63, "{long}");
        let named = feed_names("p", Some("s"), Some("pub"));
        assert_eq!(
            (named.slot.as_str(), named.publication.as_str()),
            ("s", "pub")
        );
        assert!(!named.own_publication);
    }
}
