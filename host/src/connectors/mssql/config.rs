//! The `kind: mssql` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Pushdown, SinkCapabilities, SourceCapabilities, TargetReads};
use crate::secret::Secret;

/// What SQL Server can do, declared once for the run, the matrix and the docs. sp_rename inside
/// a transaction; partition SWITCH; `rowversion` row versions; change tables are the change
/// feed.
pub const SOURCE_CAPABILITIES: SourceCapabilities = SourceCapabilities {
    pushdown: Pushdown::Full,
    cheap_aggregates: true,
    resumable: false,
    row_versions: true,
    change_feed: true,
};

pub const SINK_CAPABILITIES: SinkCapabilities = SinkCapabilities {
    transactions: true,
    keys_enforced: true,
    rename_swap: true,
    native_partitions: true,
    append_only_log: false,
    target_reads: TargetReads::Native,
    transaction_time_limit_ms: None,
};

/// The port SQL Server listens on unless the URL names another.
pub const DEFAULT_PORT: u16 = 1433;

/// A SQL Server database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MssqlConfig {
    /// `mssql://user:password@host[:port]/database` (user and password percent-encoded
    /// where they hold `:@/%`); a secret, never printed.
    pub url: Secret,
    /// `schema.table` or `table` (the login's default schema, usually `dbo`).
    #[serde(default)]
    pub table: Option<String>,
    /// TLS: `on` (default: the login and every packet after it encrypted), `strict` (TDS
    /// 8.0: TLS before the first packet; SQL Server 2022 and later), `off` (only the login
    /// packet encrypted, the data in clear: a trusted network), `none` (no TLS at all, the
    /// password in clear too: servers without TLS, such as test doubles).
    #[serde(default)]
    pub encrypt: Encrypt,
    /// Accept the server's certificate without checking it (self-signed test servers).
    #[serde(default)]
    pub trust_server_certificate: bool,
    /// An Azure AD (Entra ID) access token used instead of the URL's SQL login, usually
    /// `${ENV_VAR}`; a secret, never printed.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// The source table's `rowversion` column: the row versions the `xmin` strategy reads
    /// (bounded by `MIN_ACTIVE_ROWVERSION()`).
    #[serde(default)]
    pub row_version_column: Option<String>,
    /// The source table's change data capture (the `cdc` strategy reads it).
    #[serde(default)]
    pub change_feed: Option<ChangeFeedConfig>,
}

/// How the connection is encrypted (`encrypt`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encrypt {
    #[default]
    On,
    Strict,
    Off,
    #[serde(rename = "none")]
    Plaintext,
}

/// The `change_feed` of a SQL Server source section: a capture instance of the source
/// table, enabled by `sys.sp_cdc_enable_table` (dpone never enables CDC itself: it needs
/// `db_owner` and SQL Server Agent).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChangeFeedConfig {
    /// The capture instance, e.g. `dbo_orders` (the default SQL Server gives one).
    pub capture_instance: String,
    /// The instance was enabled with `@supports_net_changes = 1`: the window is read
    /// with `fn_cdc_get_net_changes_<instance>`; otherwise all changes are read and
    /// compacted per key by (`__$start_lsn`, `__$seqval`).
    #[serde(default)]
    pub net_changes: bool,
}

/// The parts of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl MssqlConfig {
    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        self.address(at)?;
        if let Some(c) = &self.row_version_column
            && c.trim().is_empty()
        {
            return Err(Error::config(
                format!("{at}.row_version_column"),
                "must name the table's rowversion column",
            ));
        }
        if let Some(f) = &self.change_feed {
            let ok = !f.capture_instance.is_empty()
                && f.capture_instance
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(Error::config(
                    format!("{at}.change_feed.capture_instance"),
                    format!(
                        "`{}` is not a capture instance name (letters, digits and `_`, as sys.sp_cdc_enable_table makes them)",
                        f.capture_instance
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The URL's parts; errors name `<at>.url` and never print the URL.
    pub fn address(&self, at: &str) -> Result<Address> {
        parse_url(self.url.expose()).map_err(|why| Error::config(format!("{at}.url"), why))
    }

    pub fn same_database(&self, other: &MssqlConfig) -> bool {
        match (self.address("url"), other.address("url")) {
            (Ok(a), Ok(b)) => {
                a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port && a.database == b.database
            }
            _ => self.url == other.url,
        }
    }
}

/// Parses `mssql://user:password@host[:port]/database`; the error never holds the URL.
fn parse_url(url: &str) -> std::result::Result<Address, String> {
    let rest = url
        .strip_prefix("mssql://")
        .ok_or("must start with mssql://")?;
    let (authority, database) = rest
        .split_once('/')
        .ok_or("must name the database: mssql://user:password@host[:port]/database")?;
    if database.is_empty() || database.contains(['/', '?', '#']) {
        return Err(
            "the path must be one database name (no query string: settings are manifest fields)"
                .into(),
        );
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", authority),
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 host must be in [...]")?;
            match after {
                "" => (h, None),
                _ => (
                    h,
                    Some(after.strip_prefix(':').ok_or("`]` must end the host")?),
                ),
            }
        }
        None => match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("the port must be a number from 1 to 65535")?,
        None => DEFAULT_PORT,
    };
    if host.is_empty() {
        return Err("must name the host: mssql://user:password@host[:port]/database".into());
    }
    Ok(Address {
        host: host.into(),
        port,
        user: percent_decode(user)?,
        password: percent_decode(password)?,
        database: percent_decode(database)?,
    })
}

/// Decodes `%XX` escapes (UTF-8).
fn percent_decode(text: &str) -> std::result::Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a `%` not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-escapes must decode to UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> MssqlConfig {
        MssqlConfig {
            url: Secret::new(url),
            table: None,
            encrypt: Encrypt::On,
            trust_server_certificate: false,
            access_token: None,
            row_version_column: None,
            change_feed: None,
        }
    }

    #[test]
    fn urls_parse_with_escapes_default_port_and_errors_that_hide_the_secret() {
        let a = config("mssql://sa:p%40ss%3Aword@db.example:14330/sales")
            .address("sink")
            .unwrap();
        assert_eq!(
            a,
            Address {
                host: "db.example".into(),
                port: 14330,
                user: "sa".into(),
                password: "p@ss:word".into(),
                database: "sales".into(),
            }
        );
        let b = config("mssql://u:x@[::1]/db").address("sink").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", DEFAULT_PORT));
        for bad in [
            "postgres://u:secretpw@h/db",
            "mssql://u:secretpw@h",
            "mssql://u:secretpw@h:99999/db",
            "mssql://u:secretpw@h/db?encrypt=true",
            "mssql://u:secret%zz@h/db",
        ] {
            let err = config(bad).validate("sink").unwrap_err();
            assert_eq!(err.field.as_deref(), Some("sink.url"), "{bad}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn capture_instances_are_plain_names() {
        let mut c = config("mssql://u:p@h/db");
        c.change_feed = Some(ChangeFeedConfig {
            capture_instance: "dbo_orders; DROP".into(),
            net_changes: false,
        });
        let err = c.validate("source").unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("source.change_feed.capture_instance")
        );
    }
}
