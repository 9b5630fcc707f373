//! The `kind: clickhouse` manifest section.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Pushdown, SinkCapabilities, SourceCapabilities, TargetReads};
use crate::secret::Secret;

/// What ClickHouse can do, declared once for the run, the matrix and the docs. No server
/// transactions: begin..commit is a copy-on-write shadow of the target published by one RENAME,
/// atomic for readers; the primary key is a sort key, never unique.
pub const SOURCE_CAPABILITIES: SourceCapabilities = SourceCapabilities {
    pushdown: Pushdown::Full,
    cheap_aggregates: true,
    resumable: false,
    row_versions: false,
    change_feed: false,
};

pub const SINK_CAPABILITIES: SinkCapabilities = SinkCapabilities {
    transactions: true,
    keys_enforced: false,
    rename_swap: true,
    native_partitions: true,
    append_only_log: false,
    target_reads: TargetReads::Native,
    transaction_time_limit_ms: None,
};

/// A ClickHouse server, over its HTTP interface.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClickhouseConfig {
    /// `http(s)://[user[:password]@]host:port/database`; a secret, never printed.
    pub url: Secret,
    /// `database.table` or `table` (the URL's database).
    #[serde(default)]
    pub table: Option<String>,
    /// How insert bodies travel: `auto` (default), `gzip` or `none`.
    #[serde(default)]
    pub compression: Compression,
}

/// The encoding of insert bodies (`Content-Encoding`); reads are never compressed.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `none` for a server on this machine (`localhost`, `127.0.0.0/8`, `::1`), where
    /// compressing costs CPU on both ends and saves no network; `gzip` otherwise.
    #[default]
    Auto,
    /// gzip at its fastest level: RowBinary shrinks several times for little CPU, which
    /// pays off whenever the server is not on the same machine.
    Gzip,
    None,
}

impl Compression {
    /// Whether insert bodies to a server at `host` (a URL's host: a name, an IPv4
    /// address or a bracketed IPv6 one) are gzipped.
    pub fn gzips(self, host: &str) -> bool {
        let loopback = || {
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || ip
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        match self {
            Compression::Gzip => true,
            Compression::None => false,
            Compression::Auto => !loopback(),
        }
    }
}

impl ClickhouseConfig {
    /// Pure checks; `at` is the dotted path of this section.
    pub fn validate(&self, at: &str) -> Result<()> {
        let url = self.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::config(
                format!("{at}.url"),
                "must start with http:// or https:// (the HTTP interface, port 8123 by default)",
            ));
        }
        Ok(())
    }

    pub fn same_database(&self, other: &ClickhouseConfig) -> bool {
        self.url == other.url
    }
}

#[cfg(test)]
mod tests {
    use super::Compression;

    #[test]
    fn auto_compression_skips_gzip_for_a_server_on_this_machine() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.8.0.2", "[::1]"] {
            assert!(!Compression::Auto.gzips(host), "{host}");
            assert!(Compression::Gzip.gzips(host), "{host}");
        }
        for host in ["clickhouse.internal", "10.0.0.7", "[2001:db8::1]", ""] {
            assert!(Compression::Auto.gzips(host), "{host}");
            assert!(!Compression::None.gzips(host), "{host}");
        }
    }
}
