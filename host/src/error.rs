//! The host's one error type. Every error carries a [`Kind`] that says whose fault it is;
//! the kind picks the process exit code and the WIT `dpone-error` case a guest sees.

use std::fmt;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The manifest or a CLI argument is wrong. Nothing was touched.
    Config,
    /// The source failed.
    Source,
    /// The sink failed.
    Sink,
    /// The state store failed.
    State,
    /// Staging failed a key check (NULL or duplicate keys). The target was not touched.
    KeyViolation,
    /// The pair or component cannot do what was asked.
    Unsupported,
    /// The strategy component broke a sandbox rule or limit (fuel, memory, imports).
    Sandbox,
    /// A guest used a handle it does not own, or a bounded table is full.
    InvalidHandle,
    /// The strategy made the host exceed a budget of the manifest's `limits` section; the
    /// error's field names it.
    Limit,
    /// The operator interrupted the run (SIGINT, Ctrl-C); it rolled back and dropped its
    /// staging first.
    Interrupted,
    /// The run was told to stop (SIGTERM); it rolled back and dropped its staging first.
    Terminated,
    /// A bug in the host.
    Internal,
}

impl Kind {
    /// Process exit code for a run that failed with this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Config | Kind::Unsupported => 2,
            Kind::Source => 3,
            Kind::Sink | Kind::KeyViolation => 4,
            Kind::State => 5,
            Kind::Sandbox | Kind::InvalidHandle | Kind::Limit => 6,
            Kind::Internal => 70,
            // The shell's convention: 128 + the signal's number.
            Kind::Interrupted => 130,
            Kind::Terminated => 143,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Config => "config error",
            Kind::Source => "source error",
            Kind::Sink => "sink error",
            Kind::State => "state error",
            Kind::KeyViolation => "key violation",
            Kind::Unsupported => "unsupported",
            Kind::Sandbox => "sandbox violation",
            Kind::InvalidHandle => "invalid handle",
            Kind::Limit => "limit exceeded",
            Kind::Internal => "internal error",
            Kind::Interrupted => "interrupted",
            Kind::Terminated => "terminated",
        }
    }
}

/// An error with a kind and, for config errors, the dotted manifest path it concerns.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    /// Dotted manifest path, e.g. `sink.strategy.unique_key`.
    pub field: Option<String>,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            field: None,
            message: message.into(),
        }
    }

    /// A config error about the manifest field at `field` (a dotted path).
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            kind: Kind::Config,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A budget of the manifest's `limits` section (`field`, e.g. `limits.state_bytes`) ran out.
    pub fn limit(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            kind: Kind::Limit,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn source(message: impl fmt::Display) -> Self {
        Error::new(Kind::Source, message.to_string())
    }

    pub fn sink(message: impl fmt::Display) -> Self {
        Error::new(Kind::Sink, message.to_string())
    }

    pub fn state(message: impl fmt::Display) -> Self {
        Error::new(Kind::State, message.to_string())
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Error::new(Kind::Internal, message.to_string())
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.as_deref().filter(|f| !f.is_empty()) {
            Some(field) => write!(f, "{}: {field}: {}", self.kind.label(), self.message),
            None => write!(f, "{}: {}", self.kind.label(), self.message),
        }
    }
}

impl std::error::Error for Error {}
