//! A topic as a table in the embedded SQLite store: its records applied in offset order,
//! by key the last value wins and a tombstone deletes (a topic without key columns keeps
//! every record). The sink keeps its target's view between runs (`sink.rs`); the source
//! builds the view of the window a scan reads (`source.rs`).

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::client::{KafkaClient, TopicProducer};
use super::types::{Change, Codec, Offsets, Record};
use crate::connectors::dialect::NewTable;
use crate::connectors::{SqlSession, Statement, TableName};
use crate::error::Result;
use crate::model::{Schema, Value, batch_of};

/// Where records that do not decode go, when not failing the read.
pub struct DeadLetters {
    pub producer: TopicProducer,
    pub count: u64,
}

/// Reads `topic` from `start` to its end and applies every record to `table` (created by
/// the caller with `codec`'s schema, keyed by its key columns). A record that does not
/// decode fails the read, naming its partition and offset, or goes to `dead_letters`.
/// Returns where the read stopped. Runs inside the caller's transaction, if any.
pub async fn apply_topic(
    client: &KafkaClient,
    topic: &str,
    start: &Offsets,
    session: &mut dyn SqlSession,
    table: &TableName,
    codec: &Codec,
    mut dead_letters: Option<&mut DeadLetters>,
) -> Result<Offsets> {
    let scratch = Scratch::create(session, table, codec).await?;
    let (tx, mut rx) = mpsc::channel::<Vec<Record>>(2);
    let read = client.read(topic, start, tx);
    let apply = async {
        while let Some(records) = rx.recv().await {
            codec.prepare_read(&records).await?;
            let mut changes = Vec::with_capacity(records.len());
            for record in &records {
                match codec.decode(record, topic) {
                    Ok(change) => changes.push(change),
                    Err(e) => match dead_letters.as_deref_mut() {
                        Some(dl) => {
                            dl.producer
                                .send_dead_letter(record, topic, &e.message)
                                .await?;
                            dl.count += 1;
                        }
                        None => return Err(e),
                    },
                }
            }
            scratch.apply(session, table, codec, changes).await?;
        }
        Ok(())
    };
    let (end, ()) = tokio::try_join!(read, apply)?;
    scratch.drop(session).await?;
    Ok(end)
}

/// The rows `topic` holds as a table of `codec`'s schema (keyed by its key columns: the
/// last record of a key wins; without key columns every record), read into a private
/// in-memory store: what the integration matrix compares with its oracle.
pub async fn read_table(
    client: &KafkaClient,
    topic: &str,
    codec: &Codec,
) -> Result<Vec<Vec<Value>>> {
    let mut session =
        crate::connectors::sqlite::SqliteSession::connect(":memory:", true, crate::Kind::Source)
            .await?;
    let table = TableName {
        schema: None,
        name: "dpone_read".into(),
    };
    let create = session.dialect().create_table(
        &table,
        codec.schema(),
        &codec.key_names(),
        NewTable::Target,
    );
    session.execute(&Statement::new(create)).await?;
    apply_topic(
        client,
        topic,
        &Offsets::new(),
        &mut session,
        &table,
        codec,
        None,
    )
    .await?;
    let types: Vec<_> = codec.schema().columns.iter().map(|c| c.data_type).collect();
    let columns = session.dialect().column_list(&codec.schema().names());
    session
        .query(
            &Statement::new(format!("SELECT {columns} FROM dpone_read")),
            &types,
        )
        .await
}

/// The embedded store's tables one chunk of changes passes through.
struct Scratch {
    rows: TableName,
    keys: TableName,
    key_schema: Schema,
}

impl Scratch {
    async fn create(session: &mut dyn SqlSession, near: &TableName, codec: &Codec) -> Result<Self> {
        let schema = codec.schema();
        let scratch = Scratch {
            rows: near.sibling(format!("{}__in_rows", near.name)),
            keys: near.sibling(format!("{}__in_keys", near.name)),
            key_schema: codec.key_schema(),
        };
        // Without key columns every record is a row: no keys to collect.
        let tables = [
            (&scratch.rows, schema),
            (&scratch.keys, &scratch.key_schema),
        ];
        for (table, schema) in tables.into_iter().filter(|(_, s)| !s.columns.is_empty()) {
            let d = session.dialect();
            let drop = format!("DROP TABLE IF EXISTS {}", d.table_ref(table));
            let create = d.create_table(table, &schema.all_nullable(), &[], NewTable::Scratch);
            session.execute(&Statement::new(drop)).await?;
            session.execute(&Statement::new(create)).await?;
        }
        Ok(scratch)
    }

    /// Applies one chunk of changes, in order, to `table`.
    async fn apply(
        &self,
        session: &mut dyn SqlSession,
        table: &TableName,
        codec: &Codec,
        changes: Vec<Change>,
    ) -> Result<()> {
        if !codec.keyed() {
            let rows: Vec<Vec<Value>> = changes
                .into_iter()
                .filter_map(|c| match c {
                    Change::Upsert(row) => Some(row),
                    Change::Delete(_) => None,
                })
                .collect();
            return insert(session, table, codec.schema(), rows).await;
        }
        // The last change of each key in the chunk decides; its key leaves the table first.
        let mut last: HashMap<String, usize> = HashMap::with_capacity(changes.len());
        let mut keys = Vec::with_capacity(changes.len());
        for (i, change) in changes.iter().enumerate() {
            let key = match change {
                Change::Upsert(row) => codec.key_of(row),
                Change::Delete(key) => key.clone(),
            };
            let text = format!("{key:?}");
            if last.insert(text, i).is_none() {
                keys.push(key);
            }
        }
        let winners: std::collections::HashSet<usize> = last.into_values().collect();
        let rows: Vec<Vec<Value>> = changes
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Change::Upsert(row) if winners.contains(&i) => Some(row),
                _ => None,
            })
            .collect();
        let d = session.dialect();
        let (t, in_rows, in_keys) = (
            d.table_ref(table),
            d.table_ref(&self.rows),
            d.table_ref(&self.keys),
        );
        let key_list = codec
            .key_names()
            .iter()
            .map(|k| d.quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        let columns = codec
            .schema()
            .columns
            .iter()
            .map(|c| d.quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let statements = [
            format!("DELETE FROM {in_rows}"),
            format!("DELETE FROM {in_keys}"),
        ];
        for sql in statements {
            session.execute(&Statement::new(sql)).await?;
        }
        insert(session, &self.keys, &self.key_schema, keys).await?;
        insert(session, &self.rows, codec.schema(), rows).await?;
        let statements = [
            format!("DELETE FROM {t} WHERE ({key_list}) IN (SELECT {key_list} FROM {in_keys})"),
            format!("INSERT INTO {t} ({columns}) SELECT {columns} FROM {in_rows}"),
        ];
        for sql in statements {
            session.execute(&Statement::new(sql)).await?;
        }
        Ok(())
    }

    async fn drop(self, session: &mut dyn SqlSession) -> Result<()> {
        for table in [&self.rows, &self.keys] {
            let sql = format!(
                "DROP TABLE IF EXISTS {}",
                session.dialect().table_ref(table)
            );
            session.execute(&Statement::new(sql)).await?;
        }
        Ok(())
    }
}

/// Bulk-inserts `rows` (of `schema`) into `table`.
async fn insert(
    session: &mut dyn SqlSession,
    table: &TableName,
    schema: &Schema,
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel(1);
    tx.send(batch_of(schema, &rows)?)
        .await
        .map_err(|_| crate::Error::internal("bulk insert channel closed"))?;
    drop(tx);
    session.bulk_insert(table, schema, rx).await?;
    Ok(())
}
