//! Secrets of manifest sections (connection URLs, tokens): they deserialize like strings
//! and never print. Its own module so connectors' config sections and the manifest both
//! depend on it, and on nothing of each other's.

use serde::Deserialize;

/// A string that never prints: connection URLs carry passwords.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}
