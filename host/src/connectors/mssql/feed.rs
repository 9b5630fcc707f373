//! The change feed of a SQL Server source: a CDC capture instance of the source table,
//! read with `cdc.fn_cdc_get_net_changes_<instance>` or `fn_cdc_get_all_changes_<instance>`.
//!
//! dpone never enables CDC (that needs `sysadmin` for the database and `db_owner` for the
//! table): the manifest names the capture instance, and every missing piece is an error that
//! says what to run. Positions are LSNs, 80-bit values kept as `mssqllsn:<20 hex digits>`.
//! A window `(after, up_to]` ends at `sys.fn_cdc_get_max_lsn()` when it was opened: every
//! change the capture job had read from the log by then. Nothing is acknowledged on the
//! server: the change tables are emptied by the cleanup job's retention, not by readers, so
//! the stored position is the only acknowledgement, and a stored position below the
//! instance's low watermark means the cleanup removed changes this pipeline never read.

use arrow_array::RecordBatch;
use tokio::sync::mpsc;

use super::MssqlSession;
use super::config::{ChangeFeedConfig, MssqlConfig};
use super::dialect::MssqlDialect;
use crate::connectors::dialect::SqlDialect;
use crate::connectors::sink::first_texts;
use crate::connectors::source::{ChangeRead, check_ack};
use crate::connectors::{ChangeFeed, SqlSession, Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{ChangePart, ChangeWindow, DataType, RestartReason, Schema, Value};

/// An LSN: the 10 bytes of SQL Server's `binary(10)`, compared as a big-endian number.
pub type Lsn = [u8; 10];

const POSITION_PREFIX: &str = "mssqllsn:";

/// The position of `lsn`: fixed-width hex, so positions sort as LSNs do.
pub fn lsn_position(lsn: &Lsn) -> String {
    format!("{POSITION_PREFIX}{}", crate::runtime::engine::hex(lsn))
}

/// The LSN of a position.
pub fn parse_lsn_position(position: &str) -> Result<Lsn> {
    let bad = || {
        Error::new(
            Kind::InvalidHandle,
            format!(
                "`{position}` is not a SQL Server LSN position (`{POSITION_PREFIX}<20 hex digits>`)"
            ),
        )
    };
    let hex = position.strip_prefix(POSITION_PREFIX).ok_or_else(bad)?;
    if hex.len() != 20 {
        return Err(bad());
    }
    let mut lsn = [0u8; 10];
    for (i, byte) in lsn.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(lsn)
}

fn lsn_of(value: &Value, what: &str) -> Result<Lsn> {
    match value {
        Value::Bytes(b) if b.len() == 10 => Ok(b.as_slice().try_into().expect("10 bytes")),
        other => Err(Error::source(format!(
            "{what} returned {other:?}, not an LSN"
        ))),
    }
}

/// Where a capture instance stands, read when a window opens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    /// The highest LSN the capture job has written changes up to.
    max_lsn: Lsn,
    /// The LSN just before the instance's low watermark: changes after it are all kept.
    kept_after: Lsn,
}

/// The window a stored position opens on an instance (the gap rule): changes after a
/// stored LSN are all there while it is at or above `kept_after`; below it, the cleanup
/// job removed changes this pipeline never read, and without one there is nothing to
/// continue from: both restart from the current maximum, after a snapshot.
fn window(stored: Option<Lsn>, instance: &Instance) -> (RestartReason, Lsn, Lsn) {
    let restart_at = instance.max_lsn.max(instance.kept_after);
    match stored {
        None => (RestartReason::NoStoredPosition, restart_at, restart_at),
        Some(lsn) if lsn < instance.kept_after => {
            (RestartReason::StoredPositionExpired, restart_at, restart_at)
        }
        // A stored LSN past the maximum (the capture job's state was reset): nothing new.
        Some(lsn) => (RestartReason::None, lsn, instance.max_lsn.max(lsn)),
    }
}

/// This pipeline's change feed on a SQL Server source table, read over a connection of its
/// own (opened at its first use).
pub struct MssqlFeed {
    /// The source section; its `change_feed` names the capture instance.
    config: MssqlConfig,
    table: TableName,
    session: Option<MssqlSession>,
    /// The window the last `open` gave this run: all it may acknowledge.
    opened: Option<(Lsn, Lsn)>,
}

impl std::fmt::Debug for MssqlFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlFeed")
            .field("table", &self.table)
            .field("change_feed", &self.config.change_feed)
            .finish_non_exhaustive()
    }
}

impl MssqlFeed {
    /// The feed `source.change_feed` configures on the source `table`.
    pub fn new(config: &MssqlConfig, table: TableName) -> Self {
        MssqlFeed {
            config: config.clone(),
            table,
            session: None,
            opened: None,
        }
    }

    /// `source.change_feed`; without it, what to configure.
    fn feed(&self) -> Result<ChangeFeedConfig> {
        self.config.change_feed.clone().ok_or_else(|| {
            Error::config(
                "source.change_feed.capture_instance",
                "cdc on SQL Server reads a capture instance of the source table: name it (and net_changes: true where it supports net changes)",
            )
        })
    }

    async fn session(&mut self) -> Result<&mut MssqlSession> {
        if self.session.is_none() {
            self.session = Some(MssqlSession::connect(&self.config, Kind::Source).await?);
        }
        Ok(self.session.as_mut().expect("connected above"))
    }

    /// Checks that CDC can serve this table through the configured instance, and reads
    /// where the instance stands.
    async fn instance(&mut self) -> Result<Instance> {
        let ChangeFeedConfig {
            capture_instance: instance,
            net_changes: net,
        } = self.feed()?;
        let source = self.table.clone();
        let s = self.session().await?;
        let enabled = s
            .query(
                &Statement::new(CDC_ENABLED_SQL),
                &[DataType::Int64, DataType::Text],
            )
            .await?;
        let database = match enabled.first().map(Vec::as_slice) {
            Some([Value::Int(1), _]) => None,
            Some([_, Value::Text(db)]) => Some(db.clone()),
            _ => Some("this database".into()),
        };
        if let Some(db) = database {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "change data capture is not enabled on database {db}: run `EXEC sys.sp_cdc_enable_db` (as sysadmin), then enable the table"
                ),
            ));
        }
        let found = capture_instances(s, &source).await?;
        let Some(this) = found.iter().find(|c| c.name == instance) else {
            let schema = source.schema.clone().unwrap_or_else(|| "dbo".into());
            let others: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::config(
                "source.change_feed.capture_instance",
                format!(
                    "{source} has no capture instance `{instance}` this login may read (it has: {}): run `EXEC sys.sp_cdc_enable_table \
                     @source_schema = N'{schema}', @source_name = N'{}', @role_name = NULL, @capture_instance = N'{instance}'{}` (as db_owner)",
                    if others.is_empty() {
                        "none".to_string()
                    } else {
                        others.join(", ")
                    },
                    source.name,
                    if net {
                        ", @supports_net_changes = 1"
                    } else {
                        ""
                    }
                ),
            ));
        };
        if net && !this.supports_net {
            return Err(Error::config(
                "source.change_feed.net_changes",
                format!(
                    "capture instance `{instance}` was enabled without @supports_net_changes = 1: set net_changes: false, or re-enable the table with it"
                ),
            ));
        }
        let agent = s
            .query(&Statement::new(AGENT_SQL), &[DataType::Text])
            .await
            // Azure SQL Database has no Agent (and no sys.dm_server_services): its
            // scheduler captures changes; without VIEW SERVER STATE the check cannot run.
            // Neither is a finding.
            .unwrap_or_default();
        if let Some(Value::Text(status)) = agent.first().and_then(|r| r.first())
            && status != "Running"
        {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "SQL Server Agent is {status}: its capture job reads the log into the change tables, so no change would arrive; start the SQL Server Agent service"
                ),
            ));
        }
        let bounds = s
            .query(
                &Statement {
                    sql: BOUNDS_SQL.into(),
                    params: vec![Value::Text(instance)],
                },
                &[DataType::Bytes, DataType::Bytes],
            )
            .await?;
        // NULL: nothing captured yet (or no low watermark): the lowest LSN.
        let lsn_or_zero = |v: &Value, what: &str| match v {
            Value::Null => Ok([0; 10]),
            v => lsn_of(v, what),
        };
        match bounds.first().map(Vec::as_slice) {
            Some([max, kept_after]) => Ok(Instance {
                max_lsn: lsn_or_zero(max, "sys.fn_cdc_get_max_lsn()")?,
                kept_after: lsn_or_zero(kept_after, "sys.fn_cdc_get_min_lsn()")?,
            }),
            other => Err(Error::source(format!(
                "the LSN bounds query returned {other:?}"
            ))),
        }
    }

    /// Refuses a read whose columns the instance does not capture (or captures as NULL:
    /// computed columns), and net changes keyed otherwise than the read.
    async fn check_captured(&mut self, columns: &Schema, key: &[String]) -> Result<()> {
        let ChangeFeedConfig {
            capture_instance: instance,
            net_changes,
        } = self.feed()?;
        let source = self.table.clone();
        let s = self.session().await?;
        let found = capture_instances(s, &source).await?;
        let this = found
            .into_iter()
            .find(|c| c.name == instance)
            .ok_or_else(|| {
                Error::config(
                    "source.change_feed.capture_instance",
                    format!("capture instance `{instance}` of {source} is gone"),
                )
            })?;
        if net_changes {
            let mut index = this.index_columns.clone();
            let mut wanted = key.to_vec();
            index.sort();
            wanted.sort();
            if index != wanted {
                return Err(Error::config(
                    "source.change_feed.net_changes",
                    format!(
                        "net changes of `{instance}` are per its index ({}), not per the unique_key ({}): set net_changes: false to compact all changes by the key",
                        index.join(", "),
                        wanted.join(", ")
                    ),
                ));
            }
        }
        let computed = first_texts(
            s.query(
                &Statement {
                    sql: COMPUTED_SQL.into(),
                    params: vec![Value::Text(MssqlDialect::default().table_ref(&source))],
                },
                &[DataType::Text],
            )
            .await?,
        );
        for c in &columns.columns {
            if computed.contains(&c.name) {
                return Err(Error::config(
                    "source.change_feed.capture_instance",
                    format!(
                        "column `{}` is computed: change tables hold NULL for it; read a view without it, or make it a stored column",
                        c.name
                    ),
                ));
            }
            if !this.captured.contains(&c.name) {
                return Err(Error::config(
                    "source.change_feed.capture_instance",
                    format!(
                        "capture instance `{instance}` does not capture column `{}`: re-enable the table with it in @captured_column_list (or without a list: all columns)",
                        c.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A capture instance of the source table, as `sys.sp_cdc_help_change_data_capture`
/// reports it to this login (which needs no `db_owner`: it sees the instances whose gating
/// role it has).
#[derive(Debug)]
struct CaptureInstance {
    name: String,
    supports_net: bool,
    index_columns: Vec<String>,
    captured: Vec<String>,
}

async fn capture_instances(
    s: &mut MssqlSession,
    table: &TableName,
) -> Result<Vec<CaptureInstance>> {
    let schema = match &table.schema {
        Some(schema) => Value::Text(schema.clone()),
        None => s
            .query(&Statement::new("SELECT SCHEMA_NAME()"), &[DataType::Text])
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or(Value::Text("dbo".into())),
    };
    let t = DataType::Text;
    let i = DataType::Int64;
    let b = DataType::Bytes;
    let f = DataType::Boolean;
    let types = [
        t,
        t,
        t,
        i,
        i,
        b,
        b,
        f,
        f,
        t,
        t,
        t,
        DataType::Timestamp,
        t,
        t,
    ];
    let rows = s
        .query(
            &Statement {
                sql: HELP_SQL.into(),
                params: vec![schema, Value::Text(table.name.clone())],
            },
            &types,
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let text = |i: usize| match r.get(i) {
                Some(Value::Text(t)) => t.clone(),
                _ => String::new(),
            };
            (r.len() == types.len()).then(|| CaptureInstance {
                name: text(2),
                supports_net: r[7] == Value::Boolean(true),
                index_columns: bracketed_names(&text(13)),
                captured: bracketed_names(&text(14)),
            })
        })
        .collect())
}

/// The names of a column list as CDC reports it: `[a], [b]]c]` (QUOTENAME'd, `, `-joined).
fn bracketed_names(list: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '[' {
            continue;
        }
        let mut name = String::new();
        while let Some(c) = chars.next() {
            match c {
                ']' if chars.peek() == Some(&']') => {
                    chars.next();
                    name.push(']');
                }
                ']' => break,
                c => name.push(c),
            }
        }
        names.push(name);
    }
    names
}

// CDC's own catalog: whether the database has CDC, the table's capture instances (through
// the procedure any reader of an instance may call), computed columns, the Agent's state
// and the LSN bounds.
const CDC_ENABLED_SQL: &str =
    "SELECT CAST(is_cdc_enabled AS BIGINT), name FROM sys.databases WHERE database_id = DB_ID()";
const HELP_SQL: &str =
    "EXEC sys.sp_cdc_help_change_data_capture @source_schema = @P1, @source_name = @P2";
const COMPUTED_SQL: &str =
    "SELECT name FROM sys.columns WHERE object_id = OBJECT_ID(@P1) AND is_computed = 1";
const AGENT_SQL: &str =
    "SELECT status_desc FROM sys.dm_server_services WHERE servicename LIKE N'SQL Server Agent%'";
const BOUNDS_SQL: &str =
    "SELECT sys.fn_cdc_get_max_lsn(), sys.fn_cdc_decrement_lsn(sys.fn_cdc_get_min_lsn(@P1))";

/// The statement reading a window's compacted changes of `part` as `columns`: with net
/// changes the instance's own per-row net result, else every change ranked per `key` by
/// (`__$start_lsn`, `__$seqval`) and the last one kept. Deleted keys come with every other
/// column NULL. `after` is exclusive, `up_to` inclusive, as the window is.
pub fn changes_statement(
    instance: &str,
    net: bool,
    columns: &Schema,
    key: &[String],
    part: ChangePart,
    after: &Lsn,
    up_to: &Lsn,
) -> Statement {
    let d = MssqlDialect::default();
    let select: Vec<String> = columns
        .columns
        .iter()
        .map(|c| {
            let q = d.quote_ident(&c.name);
            if part == ChangePart::Deletes && !key.contains(&c.name) {
                format!("NULL AS {q}")
            } else {
                q
            }
        })
        .collect();
    let operations = match part {
        // 2 insert, 4 update (the values after it).
        ChangePart::Upserts => "(2, 4)",
        ChangePart::Deletes => "(1)",
    };
    // Instance names are checked to letters, digits and `_` (config.rs).
    let range = "sys.fn_cdc_increment_lsn(@P1), @P2, N'all'";
    let sql = if net {
        format!(
            "SELECT {} FROM cdc.fn_cdc_get_net_changes_{instance}({range}) AS c \
             WHERE c.__$operation IN {operations}",
            select.join(", ")
        )
    } else {
        format!(
            "SELECT {} FROM (SELECT c.*, ROW_NUMBER() OVER (PARTITION BY {} \
             ORDER BY c.__$start_lsn DESC, c.__$seqval DESC, c.__$operation DESC) AS __dpone_rank \
             FROM cdc.fn_cdc_get_all_changes_{instance}({range}) AS c) AS ranked \
             WHERE ranked.__dpone_rank = 1 AND ranked.__$operation IN {operations}",
            select.join(", "),
            key.iter()
                .map(|k| format!("c.{}", d.quote_ident(k)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Statement {
        sql,
        params: vec![Value::Bytes(after.to_vec()), Value::Bytes(up_to.to_vec())],
    }
}

#[async_trait::async_trait]
impl ChangeFeed for MssqlFeed {
    async fn open(&mut self, stored: Option<&str>, _create: bool) -> Result<ChangeWindow> {
        let stored = stored.map(parse_lsn_position).transpose()?;
        let instance = self.instance().await?;
        let (restart, after, up_to) = window(stored, &instance);
        if restart == RestartReason::StoredPositionExpired {
            tracing::warn!(
                "capture instance `{}` no longer holds the changes after the stored position (the cleanup job removed them): the table is loaded again from a snapshot",
                self.feed()?.capture_instance
            );
        }
        self.opened = Some((after, up_to));
        Ok(ChangeWindow {
            restart,
            after: lsn_position(&after),
            up_to: lsn_position(&up_to),
            retained_bytes: None,
        })
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
        let (after, up_to) = read.window(parse_lsn_position)?;
        if after == up_to {
            // An empty window: the change functions refuse a range that ends before it starts.
            return Ok(());
        }
        self.check_captured(columns, &read.key).await?;
        let feed = self.feed()?;
        let stmt = changes_statement(
            &feed.capture_instance,
            feed.net_changes,
            columns,
            &read.key,
            read.part,
            &after,
            &up_to,
        );
        // Deleted keys come with every other column NULL, whatever the source declares.
        let relaxed;
        let schema = match read.part {
            ChangePart::Deletes => {
                relaxed = columns.all_nullable();
                &relaxed
            }
            ChangePart::Upserts => columns,
        };
        self.session().await?.read(&stmt, schema, tx).await
    }

    /// Checks the position lies in the window this run opened; nothing moves on the server
    /// (the stored position is the acknowledgement).
    async fn ack(&mut self, position: &str) -> Result<()> {
        let lsn = parse_lsn_position(position)?;
        check_ack(self.opened.as_ref(), position, &lsn, lsn_position)
    }

    fn created(&self) -> Vec<String> {
        Vec::new()
    }

    async fn drop_feed(&mut self) -> Result<String> {
        Ok(format!(
            "capture instance {}: kept (dpone reads it but does not own it; `EXEC sys.sp_cdc_disable_table` removes it)",
            self.feed()?.capture_instance
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::mssql::assert_t_sql;
    use crate::model::Column;

    fn lsn(n: u8) -> Lsn {
        let mut l = [0u8; 10];
        l[9] = n;
        l
    }

    #[test]
    fn column_lists_unquote() {
        assert_eq!(bracketed_names("[id], [region]"), ["id", "region"]);
        assert_eq!(bracketed_names("[a]]b], [c, d]"), ["a]b", "c, d"]);
        assert!(bracketed_names("").is_empty());
    }

    #[test]
    fn positions_are_fixed_width_and_sort_as_lsns() {
        let big: Lsn = [0, 0, 0, 0x2a, 0, 0, 0x01, 0x10, 0, 0x03];
        assert_eq!(lsn_position(&big), "mssqllsn:0000002a000001100003");
        assert_eq!(parse_lsn_position(&lsn_position(&big)).unwrap(), big);
        assert!(lsn_position(&lsn(9)) < lsn_position(&big));
        for bad in ["pg:0/1", "mssqllsn:00", "mssqllsn:zz00002a000001100003"] {
            assert_eq!(
                parse_lsn_position(bad).unwrap_err().kind,
                Kind::InvalidHandle
            );
        }
    }

    #[test]
    fn the_gap_rule_restarts_below_the_low_watermark() {
        let instance = Instance {
            max_lsn: lsn(50),
            kept_after: lsn(10),
        };
        assert_eq!(
            window(None, &instance),
            (RestartReason::NoStoredPosition, lsn(50), lsn(50))
        );
        assert_eq!(
            window(Some(lsn(9)), &instance),
            (RestartReason::StoredPositionExpired, lsn(50), lsn(50))
        );
        assert_eq!(
            window(Some(lsn(10)), &instance),
            (RestartReason::None, lsn(10), lsn(50))
        );
        assert_eq!(
            window(Some(lsn(60)), &instance),
            (RestartReason::None, lsn(60), lsn(60))
        );
        // No change since the instance was enabled: the maximum is below the watermark,
        // and a restart starts at the watermark so the first change is not skipped.
        let fresh = Instance {
            max_lsn: lsn(3),
            kept_after: lsn(10),
        };
        assert_eq!(
            window(None, &fresh),
            (RestartReason::NoStoredPosition, lsn(10), lsn(10))
        );
    }

    /// Without `source.change_feed` the feed says what to configure, before connecting.
    #[tokio::test]
    async fn a_source_without_a_capture_instance_is_told_to_name_one() {
        let config = MssqlConfig {
            url: crate::secret::Secret::new("mssql://sa:pw@127.0.0.1:1/db"),
            table: Some("dbo.orders".into()),
            encrypt: super::super::config::Encrypt::Plaintext,
            trust_server_certificate: false,
            access_token: None,
            row_version_column: None,
            change_feed: None,
        };
        let table = TableName::parse("dbo.orders", "source.table").unwrap();
        let mut feed = MssqlFeed::new(&config, table);
        let err = feed.open(None, true).await.unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("source.change_feed.capture_instance"),
            "{err}"
        );
    }

    #[test]
    fn change_reads_compact_per_key_and_parse() {
        let col = |n: &str| Column {
            name: n.into(),
            data_type: DataType::Int64,
            nullable: false,
        };
        let columns = Schema {
            columns: vec![col("id"), col("qty")],
            primary_key: vec!["id".into()],
        };
        let key = ["id".to_string()];
        let all = changes_statement(
            "dbo_orders",
            false,
            &columns,
            &key,
            ChangePart::Upserts,
            &lsn(1),
            &lsn(5),
        );
        assert_eq!(
            all.sql,
            "SELECT [id], [qty] FROM (SELECT c.*, ROW_NUMBER() OVER (PARTITION BY c.[id] \
             ORDER BY c.__$start_lsn DESC, c.__$seqval DESC, c.__$operation DESC) AS __dpone_rank \
             FROM cdc.fn_cdc_get_all_changes_dbo_orders(sys.fn_cdc_increment_lsn(@P1), @P2, N'all') AS c) AS ranked \
             WHERE ranked.__dpone_rank = 1 AND ranked.__$operation IN (2, 4)"
        );
        assert_eq!(
            all.params,
            [Value::Bytes(lsn(1).to_vec()), Value::Bytes(lsn(5).to_vec())]
        );
        let net = changes_statement(
            "dbo_orders",
            true,
            &columns,
            &key,
            ChangePart::Deletes,
            &lsn(1),
            &lsn(5),
        );
        assert_eq!(
            net.sql,
            "SELECT [id], NULL AS [qty] FROM cdc.fn_cdc_get_net_changes_dbo_orders(sys.fn_cdc_increment_lsn(@P1), @P2, N'all') AS c \
             WHERE c.__$operation IN (1)"
        );
        for sql in [
            all.sql,
            net.sql,
            CDC_ENABLED_SQL.into(),
            HELP_SQL.into(),
            COMPUTED_SQL.into(),
            AGENT_SQL.into(),
            BOUNDS_SQL.into(),
        ] {
            assert_t_sql(&sql);
        }
    }
}
