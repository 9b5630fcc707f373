//! The pipeline manifest: YAML, `${ENV_VAR}` interpolation, strict parsing and pure
//! validation. Every error names the dotted manifest path it concerns.
//!
//! ```yaml
//! pipeline: orders
//! source: { kind: postgres, url: "${SOURCE_URL}", table: public.orders }
//! sink:
//!   kind: postgres
//!   url: ${SINK_URL}
//!   table: analytics.orders
//!   strategy: { mode: incremental_merge, unique_key: [id], cursor_column: updated_at }
//! state: { kind: sqlite, path: .dpone/state.db }
//! limits: { fuel: 20000000000, memory_mb: 64 }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use crate::connectors::TableName;
use crate::error::{Error, Result};
use crate::model::{SinkCapabilities, SourceCapabilities};
use crate::runtime::engine::{Limits, MAX_MEMORY_MB, Needs};
use crate::runtime::sandbox::WasiMode;

/// A connection to one database, selected by `kind`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Connection {
    #[cfg(feature = "sqlite")]
    Sqlite(crate::connectors::sqlite::config::SqliteConfig),
    #[cfg(feature = "postgres")]
    Postgres(crate::connectors::postgres::config::PostgresConfig),
    #[cfg(feature = "mssql")]
    Mssql(crate::connectors::mssql::config::MssqlConfig),
    #[cfg(feature = "clickhouse")]
    Clickhouse(crate::connectors::clickhouse::config::ClickhouseConfig),
    #[cfg(feature = "rest")]
    /// Boxed: the largest section by far.
    Rest(Box<crate::connectors::rest::config::RestConfig>),
    #[cfg(feature = "kafka")]
    Kafka(crate::connectors::kafka::config::KafkaConfig),
    #[cfg(feature = "bigquery")]
    Bigquery(crate::connectors::bigquery::config::BigqueryConfig),
}

/// What a connection can be used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
    State,
}

impl Connection {
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Connection::Postgres(_) => "postgres",
            #[cfg(feature = "mssql")]
            Connection::Mssql(_) => "mssql",
            #[cfg(feature = "clickhouse")]
            Connection::Clickhouse(_) => "clickhouse",
            #[cfg(feature = "rest")]
            Connection::Rest(_) => "rest",
            #[cfg(feature = "kafka")]
            Connection::Kafka(_) => "kafka",
            #[cfg(feature = "bigquery")]
            Connection::Bigquery(_) => "bigquery",
        }
    }

    pub fn table(&self) -> Option<&str> {
        match self {
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(c) => c.table.as_deref(),
            #[cfg(feature = "postgres")]
            Connection::Postgres(c) => c.table.as_deref(),
            #[cfg(feature = "mssql")]
            Connection::Mssql(c) => c.table.as_deref(),
            #[cfg(feature = "clickhouse")]
            Connection::Clickhouse(c) => c.table.as_deref(),
            #[cfg(feature = "rest")]
            Connection::Rest(c) => c.table.as_deref(),
            #[cfg(feature = "kafka")]
            Connection::Kafka(c) => c.table.as_deref().or(Some(c.topic.as_str())),
            #[cfg(feature = "bigquery")]
            Connection::Bigquery(c) => c.table.as_deref(),
        }
    }

    /// What this connector can do as a source, as it declares it; `None`: it is no source.
    pub fn source_capabilities(&self) -> Option<SourceCapabilities> {
        use crate::connectors as c;
        match self {
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(_) => Some(c::sqlite::config::SOURCE_CAPABILITIES),
            #[cfg(feature = "postgres")]
            Connection::Postgres(_) => Some(c::postgres::config::SOURCE_CAPABILITIES),
            #[cfg(feature = "mssql")]
            Connection::Mssql(_) => Some(c::mssql::config::SOURCE_CAPABILITIES),
            #[cfg(feature = "clickhouse")]
            Connection::Clickhouse(_) => Some(c::clickhouse::config::SOURCE_CAPABILITIES),
            #[cfg(feature = "rest")]
            Connection::Rest(rest) => Some(rest.source_capabilities()),
            #[cfg(feature = "kafka")]
            Connection::Kafka(_) => Some(c::kafka::config::SOURCE_CAPABILITIES),
            #[cfg(feature = "bigquery")]
            Connection::Bigquery(_) => None,
        }
    }

    /// What this connector can do as a sink, as it declares it; `None`: it is no sink.
    pub fn sink_capabilities(&self) -> Option<SinkCapabilities> {
        use crate::connectors as c;
        match self {
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(_) => Some(c::sqlite::config::SINK_CAPABILITIES),
            #[cfg(feature = "postgres")]
            Connection::Postgres(_) => Some(c::postgres::config::SINK_CAPABILITIES),
            #[cfg(feature = "mssql")]
            Connection::Mssql(_) => Some(c::mssql::config::SINK_CAPABILITIES),
            #[cfg(feature = "clickhouse")]
            Connection::Clickhouse(_) => Some(c::clickhouse::config::SINK_CAPABILITIES),
            #[cfg(feature = "rest")]
            Connection::Rest(_) => None,
            #[cfg(feature = "kafka")]
            Connection::Kafka(k) => Some(k.sink_capabilities()),
            #[cfg(feature = "bigquery")]
            Connection::Bigquery(_) => Some(c::bigquery::config::SINK_CAPABILITIES),
        }
    }

    /// The roles this kind of connection can play.
    pub fn roles(&self) -> Vec<Role> {
        let state = matches!(self.kind(), "sqlite" | "postgres" | "mssql");
        [
            (self.source_capabilities().is_some(), Role::Source),
            (self.sink_capabilities().is_some(), Role::Sink),
            (state, Role::State),
        ]
        .into_iter()
        .filter_map(|(has, role)| has.then_some(role))
        .collect()
    }

    fn validate(&self, at: &str) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Connection::Sqlite(c) => c.validate(at),
            #[cfg(feature = "postgres")]
            Connection::Postgres(c) => c.validate(at),
            #[cfg(feature = "mssql")]
            Connection::Mssql(c) => c.validate(at),
            #[cfg(feature = "clickhouse")]
            Connection::Clickhouse(c) => c.validate(at),
            #[cfg(feature = "rest")]
            Connection::Rest(c) => c.validate(at),
            #[cfg(feature = "kafka")]
            Connection::Kafka(c) => c.validate(at),
            #[cfg(feature = "bigquery")]
            Connection::Bigquery(c) => c.validate(at),
        }
    }

    /// Whether both name the same database.
    pub fn same_database(&self, other: &Connection) -> bool {
        match (self, other) {
            #[cfg(feature = "sqlite")]
            (Connection::Sqlite(a), Connection::Sqlite(b)) => a.same_database(b),
            #[cfg(feature = "postgres")]
            (Connection::Postgres(a), Connection::Postgres(b)) => a.same_database(b),
            #[cfg(feature = "mssql")]
            (Connection::Mssql(a), Connection::Mssql(b)) => a.same_database(b),
            #[cfg(feature = "clickhouse")]
            (Connection::Clickhouse(a), Connection::Clickhouse(b)) => a.same_database(b),
            #[cfg(feature = "kafka")]
            (Connection::Kafka(a), Connection::Kafka(b)) => a.brokers == b.brokers,
            #[cfg(feature = "bigquery")]
            (Connection::Bigquery(a), Connection::Bigquery(b)) => a.same_database(b),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The manifest's `sink.strategy` section: `mode` plus the strategy's own options, which
/// are checked against what the strategy component declares in `describe`.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategySection {
    /// A built-in strategy (`<components dir>/<mode>.wasm`); `--strategy` overrides it.
    pub mode: Option<String>,
    /// Raw SQL predicate: the documented escape hatch a strategy can refer to with the
    /// `manifest-predicate` filter term. Never built by a strategy.
    pub predicate_sql: Option<String>,
    /// Every other key, by name.
    pub options: BTreeMap<String, Yaml>,
}

impl StrategySection {
    /// The columns of the `unique_key` option, the key every built-in strategy keeps the
    /// target by (a list, or one name); empty when the strategy takes none.
    pub fn unique_key(&self) -> Vec<String> {
        match self.options.get("unique_key") {
            Some(Yaml::Sequence(names)) => names
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect(),
            Some(Yaml::String(name)) => vec![name.clone()],
            _ => Vec::new(),
        }
    }
}

/// The `transfer` section: how rows move from the source into staging. Its settings
/// change how fast a load runs, never what it writes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Transfer {
    /// Forward rows undecoded when the source and the staging table share a bulk wire
    /// format and column types (PostgreSQL -> PostgreSQL binary COPY). Default true;
    /// `false` sends every row through Arrow.
    pub pass_through: bool,
    /// How many streams read a whole-table scan at once, each on its own connection, all
    /// reading the table as of one moment (PostgreSQL: one exported snapshot; ClickHouse:
    /// parts pinned by block number), each with its own writer into staging.
    pub parallelism: Parallelism,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            pass_through: true,
            parallelism: Parallelism::Auto,
        }
    }
}

/// `transfer.parallelism`: `auto` or a number of streams, 1 to [`Parallelism::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parallelism {
    /// One stream per [`Parallelism::AUTO_BYTES`] of table, at most
    /// [`Parallelism::AUTO_MAX`]; one for ClickHouse, whose split reads fail when a table
    /// takes inserts while it is read.
    #[default]
    Auto,
    Streams(u32),
}

impl Parallelism {
    pub const MAX: u32 = 16;
    /// The table size each stream of `auto` reads: below twice this a scan is one stream.
    /// Streams pay off only where the servers have cores to spare: on a 2-core machine
    /// running dpone and PostgreSQL, a 1M-row table (334 MB as binary COPY) loaded in two
    /// streams in a median 5.23 s, against 5.00 s in one stream in an earlier run, so
    /// `auto` splits only large tables.
    pub const AUTO_BYTES: u64 = 1 << 30;
    /// `auto` streams at most: more only contend for the server's cores and disk.
    pub const AUTO_MAX: u32 = 4;

    /// The streams for a table of `bytes` on disk.
    pub fn streams(self, bytes: u64) -> u32 {
        match self {
            Parallelism::Streams(n) => n,
            Parallelism::Auto => u32::try_from(bytes / Self::AUTO_BYTES)
                .map_or(Self::AUTO_MAX, |n| n.clamp(1, Self::AUTO_MAX)),
        }
    }
}

impl<'de> Deserialize<'de> for Parallelism {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Streams(u64),
            Word(String),
        }
        let bad = || {
            serde::de::Error::custom(format!(
                "`auto` or a number of streams from 1 to {}",
                Parallelism::MAX
            ))
        };
        match Written::deserialize(d)? {
            Written::Word(w) if w == "auto" => Ok(Parallelism::Auto),
            Written::Streams(n) if (1..=u64::from(Parallelism::MAX)).contains(&n) => {
                Ok(Parallelism::Streams(n as u32))
            }
            _ => Err(bad()),
        }
    }
}

/// The `limits` section: the sandbox of the strategy component.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Guest fuel per run (instructions, roughly). Default 20e9.
    pub fuel: Option<u64>,
    /// Cap on the strategy's linear memory, MiB. Default 64.
    pub memory_mb: Option<u64>,
    /// State entries the pipeline may hold. Default 1000.
    pub state_entries: Option<u64>,
    /// Bytes of state keys and values the pipeline may hold. Default 1 MiB.
    pub state_bytes: Option<u64>,
    /// Wall-clock deadline of a run, seconds. Default 14400 (4 h).
    pub wall_seconds: Option<u64>,
    /// Bytes of strategy log lines a run prints. Default 1 MiB.
    pub log_bytes: Option<u64>,
    /// Characters kept of one strategy text (log line, phase, summary, error). Default 4096.
    pub message_chars: Option<u64>,
    /// Sink statements a run keeps for its report and plan. Default 1000.
    pub report_statements: Option<u64>,
    /// Which WASI interfaces the component may import: `virtual` (default) or `strict`.
    pub wasi: Option<WasiMode>,
}

impl LimitsSection {
    /// The limits of a component that declares `needs`: a value set here wins, then the
    /// component's declaration, then the default.
    fn resolve(&self, needs: &Needs) -> Limits {
        let d = Limits::default();
        Limits {
            fuel: self.fuel.or(needs.fuel).unwrap_or(d.fuel),
            memory_mb: self.memory_mb.or(needs.memory_mb).unwrap_or(d.memory_mb),
            state_entries: self.state_entries.unwrap_or(d.state_entries),
            state_bytes: self.state_bytes.unwrap_or(d.state_bytes),
            wall_seconds: self.wall_seconds.unwrap_or(d.wall_seconds),
            log_bytes: self.log_bytes.unwrap_or(d.log_bytes),
            message_chars: self.message_chars.unwrap_or(d.message_chars),
            report_statements: self.report_statements.unwrap_or(d.report_statements),
            wasi: self.wasi.unwrap_or(d.wasi),
        }
    }
}

/// A parsed and validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Names the pipeline: its state entries and run history are keyed by it.
    pub pipeline: String,
    pub source: Connection,
    pub sink: Connection,
    pub strategy: StrategySection,
    /// Where state lives; default: SQLite at `.dpone/state.db`.
    pub state: Connection,
    /// The `limits` section as written: [`Manifest::limits_for`] resolves it against a
    /// component's needs.
    limits: LimitsSection,
    pub transfer: Transfer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    pipeline: String,
    source: Connection,
    sink: Connection,
    #[serde(default)]
    state: Option<Connection>,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    transfer: Transfer,
}

/// The longest `limits.wall_seconds`: a deadline must be one a timer can hold.
const MAX_WALL_SECONDS: u64 = 30 * 24 * 3600;

/// Default state store of the embedded default.
pub const DEFAULT_STATE_PATH: &str = ".dpone/state.db";

impl Manifest {
    /// Parses manifest text, reading `${VAR}` from `env`. Pure apart from `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Manifest> {
        let mut doc: Yaml = serde_yaml_ng::from_str(text)
            .map_err(|e| Error::config(location(&e), e.to_string()))?;
        interpolate(&mut doc, "", env)?;
        let strategy = take_strategy(&mut doc)?;
        for section in ["source", "sink", "state"] {
            if let Some(fields) = doc.get(section) {
                check_connection(section, fields)?;
            }
        }
        let raw: RawManifest = serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            Error::config(
                if path == "." { String::new() } else { path },
                e.inner().to_string(),
            )
        })?;
        let state = match raw.state {
            Some(s) => s,
            #[cfg(feature = "sqlite")]
            None => Connection::Sqlite(crate::connectors::sqlite::config::SqliteConfig {
                path: DEFAULT_STATE_PATH.into(),
                table: None,
            }),
            #[cfg(not(feature = "sqlite"))]
            None => {
                return Err(Error::config(
                    "state",
                    "required: this build has no embedded SQLite store",
                ));
            }
        };
        let manifest = Manifest {
            pipeline: raw.pipeline,
            source: raw.source,
            sink: raw.sink,
            strategy,
            state,
            limits: raw.limits,
            transfer: raw.transfer,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// The limits of a component declaring `needs` under an empty `limits` section.
    pub fn default_limits_for(needs: &Needs) -> Limits {
        LimitsSection::default().resolve(needs)
    }

    /// The limits of a run of a component declaring `needs`.
    pub fn limits_for(&self, needs: &Needs) -> Limits {
        self.limits.resolve(needs)
    }

    /// The limits of a component that declares no needs: every limit but `fuel` and
    /// `memory_mb` is the same for any component.
    pub fn limits(&self) -> Limits {
        self.limits_for(&Needs::default())
    }

    /// Reads and parses a manifest file with the process environment.
    pub fn load(path: &std::path::Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config("", format!("cannot read manifest {}: {e}", path.display()))
        })?;
        Manifest::parse(&text, &|k| std::env::var(k).ok())
    }

    /// Pure checks of everything that does not need the strategy component.
    pub fn validate(&self) -> Result<()> {
        let name_ok = !self.pipeline.is_empty()
            && self
                .pipeline
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            return Err(Error::config(
                "pipeline",
                "use letters, digits, `_`, `-` or `.`",
            ));
        }
        for (at, conn, role) in [
            ("source", &self.source, Role::Source),
            ("sink", &self.sink, Role::Sink),
            ("state", &self.state, Role::State),
        ] {
            if !conn.roles().contains(&role) {
                return Err(Error::config(
                    format!("{at}.kind"),
                    format!("`{}` cannot be a {at}", conn.kind()),
                ));
            }
        }
        for (at, conn) in [("source", &self.source), ("sink", &self.sink)] {
            conn.validate(at)?;
            let table = conn
                .table()
                .ok_or_else(|| Error::config(format!("{at}.table"), "required"))?;
            TableName::parse(table, &format!("{at}.table"))?;
        }
        if self.source.same_database(&self.sink) && self.source.table() == self.sink.table() {
            return Err(Error::config(
                "sink.table",
                "is the source table itself: a pipeline cannot load a table into itself",
            ));
        }
        #[cfg(feature = "postgres")]
        for (at, conn) in [("sink", &self.sink), ("state", &self.state)] {
            if let Connection::Postgres(c) = conn
                && c.change_feed.is_some()
            {
                return Err(Error::config(
                    format!("{at}.change_feed"),
                    "only a source has a change feed; remove this key",
                ));
            }
        }
        for moved in ["slot", "publication"] {
            let options = &self.strategy.options;
            if options.contains_key(&format!("cdc.{moved}"))
                || options.get("cdc").and_then(|c| c.get(moved)).is_some()
            {
                return Err(Error::config(
                    format!("sink.strategy.cdc.{moved}"),
                    format!(
                        "moved to `source.change_feed.{moved}` in dpone 0.2 (the feed belongs to the source)"
                    ),
                ));
            }
        }
        self.state.validate("state")?;
        if self.state.table().is_some() {
            return Err(Error::config(
                "state.table",
                "the state store keeps its own tables; remove this key",
            ));
        }
        let l = &self.limits();
        for (field, value) in [
            ("limits.fuel", l.fuel),
            ("limits.state_entries", l.state_entries),
            ("limits.state_bytes", l.state_bytes),
            ("limits.wall_seconds", l.wall_seconds),
            ("limits.log_bytes", l.log_bytes),
            ("limits.message_chars", l.message_chars),
            ("limits.report_statements", l.report_statements),
        ] {
            if value == 0 {
                return Err(Error::config(field, "must be greater than 0"));
            }
        }
        if !(1..=MAX_MEMORY_MB).contains(&l.memory_mb) {
            return Err(Error::config(
                "limits.memory_mb",
                format!("must be between 1 and {MAX_MEMORY_MB}"),
            ));
        }
        if l.wall_seconds > MAX_WALL_SECONDS {
            return Err(Error::config(
                "limits.wall_seconds",
                format!("must be at most {MAX_WALL_SECONDS} (30 days)"),
            ));
        }
        if let Some(mode) = &self.strategy.mode
            && (mode.is_empty() || !mode.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(Error::config(
                "sink.strategy.mode",
                format!("`{mode}` is not a strategy name"),
            ));
        }
        Ok(())
    }

    pub fn source_table(&self) -> TableName {
        TableName::parse(self.source.table().unwrap_or_default(), "source.table")
            .expect("validated")
    }

    pub fn sink_table(&self) -> TableName {
        TableName::parse(self.sink.table().unwrap_or_default(), "sink.table").expect("validated")
    }

    /// Whether state commits in the sink's transaction (same database).
    pub fn state_colocated(&self) -> bool {
        self.state.same_database(&self.sink)
    }
}

fn location(e: &serde_yaml_ng::Error) -> String {
    e.location()
        .map(|l| format!("line {} column {}", l.line(), l.column()))
        .unwrap_or_default()
}

/// Replaces `${VAR}` in every string value; a missing variable is an error at its field.
/// `$${` escapes a literal `${`.
fn interpolate(node: &mut Yaml, path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    match node {
        Yaml::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                if rest[..i].ends_with('$') {
                    out.push_str(&rest[..i - 1]);
                    out.push_str("${");
                    rest = &rest[i + 2..];
                    continue;
                }
                out.push_str(&rest[..i]);
                let end = rest[i..]
                    .find('}')
                    .ok_or_else(|| Error::config(path, "unclosed `${`"))?;
                let name = &rest[i + 2..i + end];
                let value = env(name).ok_or_else(|| {
                    Error::config(path, format!("environment variable `{name}` is not set"))
                })?;
                out.push_str(&value);
                rest = &rest[i + end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Yaml::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                interpolate(v, &join(path, key), env)?;
            }
        }
        Yaml::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                interpolate(v, &format!("{path}[{i}]"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Deserializes one connection section as its `kind`'s config, so an error names the field
/// inside it (`sink.compression`): through the `kind`-tagged [`Connection`], serde only
/// knows the section. Sections that are not mappings or name no known kind are left to
/// the manifest's own deserialization, which says what is wrong with them.
fn check_connection(at: &str, section: &Yaml) -> Result<()> {
    fn fields<T: serde::de::DeserializeOwned>(at: &str, fields: Yaml) -> Result<()> {
        serde_path_to_error::deserialize::<_, T>(fields)
            .map(|_| ())
            .map_err(|e| {
                let field = match e.path().to_string() {
                    inner if inner == "." => at.to_string(),
                    inner => format!("{at}.{inner}"),
                };
                Error::config(field, e.inner().to_string())
            })
    }
    let Some(map) = section.as_mapping() else {
        return Ok(());
    };
    let mut rest = map.clone();
    let kind = rest.remove("kind");
    let rest = Yaml::Mapping(rest);
    match kind.as_ref().and_then(Yaml::as_str) {
        #[cfg(feature = "sqlite")]
        Some("sqlite") => fields::<crate::connectors::sqlite::config::SqliteConfig>(at, rest),
        #[cfg(feature = "postgres")]
        Some("postgres") => fields::<crate::connectors::postgres::config::PostgresConfig>(at, rest),
        #[cfg(feature = "mssql")]
        Some("mssql") => fields::<crate::connectors::mssql::config::MssqlConfig>(at, rest),
        #[cfg(feature = "clickhouse")]
        Some("clickhouse") => {
            fields::<crate::connectors::clickhouse::config::ClickhouseConfig>(at, rest)
        }
        #[cfg(feature = "rest")]
        Some("rest") => fields::<crate::connectors::rest::config::RestConfig>(at, rest),
        #[cfg(feature = "kafka")]
        Some("kafka") => fields::<crate::connectors::kafka::config::KafkaConfig>(at, rest),
        #[cfg(feature = "bigquery")]
        Some("bigquery") => fields::<crate::connectors::bigquery::config::BigqueryConfig>(at, rest),
        _ => Ok(()),
    }
}

/// Takes `sink.strategy` out of the document: its keys belong to the strategy component.
fn take_strategy(doc: &mut Yaml) -> Result<StrategySection> {
    let section = doc
        .get_mut("sink")
        .and_then(Yaml::as_mapping_mut)
        .and_then(|sink| sink.remove("strategy"))
        .ok_or_else(|| Error::config("sink.strategy", "required"))?;
    let Yaml::Mapping(map) = section else {
        return Err(Error::config(
            "sink.strategy",
            "must be a mapping with at least `mode`",
        ));
    };
    let mut out = StrategySection {
        mode: None,
        predicate_sql: None,
        options: BTreeMap::new(),
    };
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| Error::config("sink.strategy", "keys must be strings"))?
            .to_string();
        let text = |v: Yaml| match v {
            Yaml::String(s) => Ok(s),
            _ => Err(Error::config(
                format!("sink.strategy.{key}"),
                "must be a string",
            )),
        };
        match key.as_str() {
            "mode" => out.mode = Some(text(v)?),
            "predicate_sql" => out.predicate_sql = Some(text(v)?),
            _ => {
                out.options.insert(key, v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
pipeline: orders
source: { kind: sqlite, path: src.db, table: orders }
sink:
  kind: postgres
  url: ${PG_URL}
  table: analytics.orders
  strategy: { mode: incremental_merge, unique_key: [id], cursor_column: updated_at }
"#;

    fn env(k: &str) -> Option<String> {
        (k == "PG_URL").then(|| "postgres://u:hunter2@localhost/db".to_string())
    }

    fn field_of(text: &str) -> String {
        let err = Manifest::parse(text, &env).unwrap_err();
        assert_eq!(err.kind, crate::Kind::Config, "{err}");
        err.field.unwrap_or_default()
    }

    #[test]
    fn a_components_declared_needs_are_defaults_the_manifest_overrides() {
        let needs = Needs {
            memory_mb: Some(256),
            fuel: Some(7),
        };
        let m = Manifest::parse(GOOD, &env).unwrap();
        let l = m.limits_for(&needs);
        assert_eq!((l.memory_mb, l.fuel), (256, 7));
        assert_eq!(m.limits_for(&Needs::default()), Limits::default());
        let m = Manifest::parse(&format!("{GOOD}limits: {{ memory_mb: 100 }}\n"), &env).unwrap();
        let l = m.limits_for(&needs);
        assert_eq!((l.memory_mb, l.fuel), (100, 7));
    }

    #[test]
    fn the_wasi_mode_is_virtual_unless_strict_is_asked() {
        let m = Manifest::parse(GOOD, &env).unwrap();
        assert_eq!(m.limits().wasi, WasiMode::Virtual);
        let m = Manifest::parse(&format!("{GOOD}limits: {{ wasi: strict }}\n"), &env).unwrap();
        assert_eq!(m.limits().wasi, WasiMode::Strict);
        assert_eq!(
            field_of(&format!("{GOOD}limits: {{ wasi: open }}\n")),
            "limits.wasi"
        );
    }

    #[test]
    fn transfer_defaults_to_pass_through_and_auto_streams() {
        let m = Manifest::parse(GOOD, &env).unwrap();
        assert_eq!(m.transfer, Transfer::default());
        assert!(m.transfer.pass_through);
        assert_eq!(m.transfer.parallelism, Parallelism::Auto);
        let yaml = format!("{GOOD}transfer: {{ pass_through: false, parallelism: 3 }}\n");
        let m = Manifest::parse(&yaml, &env).unwrap();
        assert!(!m.transfer.pass_through);
        assert_eq!(m.transfer.parallelism, Parallelism::Streams(3));
        let m =
            Manifest::parse(&format!("{GOOD}transfer: {{ parallelism: auto }}\n"), &env).unwrap();
        assert_eq!(m.transfer.parallelism, Parallelism::Auto);
        for bad in ["0", "17", "-1", "many", "2.5"] {
            let yaml = format!("{GOOD}transfer: {{ parallelism: {bad} }}\n");
            assert_eq!(field_of(&yaml), "transfer.parallelism", "{bad}");
        }
        assert_eq!(
            field_of(&format!("{GOOD}transfer: {{ streams: 2 }}\n")),
            "transfer.streams"
        );
    }

    #[test]
    fn auto_parallelism_grows_with_the_table_up_to_its_cap() {
        let gib = 1 << 30;
        assert_eq!(Parallelism::Auto.streams(0), 1);
        assert_eq!(Parallelism::Auto.streams(2 * gib - 1), 1);
        assert_eq!(Parallelism::Auto.streams(2 * gib), 2);
        assert_eq!(Parallelism::Auto.streams(3 * gib), 3);
        assert_eq!(Parallelism::Auto.streams(1000 * gib), Parallelism::AUTO_MAX);
        assert_eq!(Parallelism::Streams(7).streams(0), 7);
    }

    #[test]
    fn parses_a_good_manifest_with_defaults() {
        let m = Manifest::parse(GOOD, &env).unwrap();
        assert_eq!(m.pipeline, "orders");
        assert_eq!(m.strategy.mode.as_deref(), Some("incremental_merge"));
        assert_eq!(m.strategy.options.len(), 2);
        assert_eq!(m.limits(), Limits::default());
        assert_eq!(m.sink_table().schema.as_deref(), Some("analytics"));
        assert!(!m.state_colocated());
        assert!(!format!("{m:?}").contains("hunter2"), "secrets never print");
    }

    #[test]
    fn each_bad_input_names_its_field() {
        let cases = [
            (GOOD.replace("pipeline: orders", "pipeline: orders\nextra: 1"), "extra"),
            (GOOD.replace("path: src.db, ", ""), "source"),
            (GOOD.replace("table: orders }", "table: orders, colour: red }"), "source.colour"),
            (
                GOOD.replace(
                    "kind: postgres\n  url: ${PG_URL}",
                    "kind: clickhouse\n  url: http://h:8123/db\n  compression: zstd",
                ),
                "sink.compression",
            ),
            (GOOD.replace("url: ${PG_URL}", "url: ${MISSING}"), "sink.url"),
            (GOOD.replace("url: ${PG_URL}", "url: mysql://x"), "sink.url"),
            (GOOD.replace("  table: analytics.orders\n", ""), "sink.table"),
            (GOOD.replace("analytics.orders", "a.b.c"), "sink.table"),
            (GOOD.replace("  strategy: { mode: incremental_merge, unique_key: [id], cursor_column: updated_at }\n", ""), "sink.strategy"),
            (GOOD.replace("mode: incremental_merge", "mode: [x]"), "sink.strategy.mode"),
            (GOOD.replace("mode: incremental_merge", "mode: ../evil"), "sink.strategy.mode"),
            (format!("{GOOD}limits: {{ memory_mb: 0 }}\n"), "limits.memory_mb"),
            (format!("{GOOD}limits: {{ fuel: lots }}\n"), "limits.fuel"),
            (format!("{GOOD}limits: {{ cpu: 1 }}\n"), "limits.cpu"),
            (format!("{GOOD}limits: {{ wall_seconds: 0 }}\n"), "limits.wall_seconds"),
            (format!("{GOOD}limits: {{ wall_seconds: 99999999999 }}\n"), "limits.wall_seconds"),
            (format!("{GOOD}limits: {{ log_bytes: 0 }}\n"), "limits.log_bytes"),
            (format!("{GOOD}limits: {{ message_chars: -1 }}\n"), "limits.message_chars"),
            (format!("{GOOD}limits: {{ report_statements: 0 }}\n"), "limits.report_statements"),
            (format!("{GOOD}state: {{ kind: sqlite, path: s.db, table: t }}\n"), "state.table"),
            (format!("{GOOD}state: {{ kind: oracle }}\n"), "state.kind"),
            (GOOD.replace("pipeline: orders", "pipeline: 'a b'"), "pipeline"),
        ];
        for (text, field) in cases {
            assert_eq!(field_of(&text), field, "for manifest:\n{text}");
        }
    }

    #[test]
    fn interpolation_escapes_and_reports_unclosed() {
        let mut doc: Yaml = serde_yaml_ng::from_str("a: 'x$${y}'\nb: '${PG_URL'").unwrap();
        let err = interpolate(&mut doc, "", &env).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("b"));
        let mut doc: Yaml = serde_yaml_ng::from_str("a: 'x$${y}'").unwrap();
        interpolate(&mut doc, "", &env).unwrap();
        assert_eq!(doc.get("a").and_then(Yaml::as_str), Some("x${y}"));
    }
}
