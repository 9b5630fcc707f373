//! Stopping runs from outside the process: SIGINT (Ctrl-C) and SIGTERM ask the run in
//! flight to stop at once. It rolls back, drops its staging and records its outcome
//! before the process exits 130 or 143; a second signal exits at once.
//!
//! Contract: [`requested`] resolves, for every run of the process, once a stop was asked;
//! the runner races it against the strategy call, as it does the run's deadline.

use std::sync::OnceLock;

use tokio::sync::watch;

use crate::error::{Error, Kind};

fn channel() -> &'static watch::Sender<Option<Kind>> {
    static STOP: OnceLock<watch::Sender<Option<Kind>>> = OnceLock::new();
    STOP.get_or_init(|| watch::channel(None).0)
}

/// Asks every run of this process to stop; `kind` is [`Kind::Interrupted`] or
/// [`Kind::Terminated`]. Returns whether a stop had already been asked.
pub fn request(kind: Kind) -> bool {
    channel().send_replace(Some(kind)).is_some()
}

/// Resolves once a stop was asked, with the error the run fails with.
pub async fn requested() -> Error {
    let mut asked = channel().subscribe();
    let kind = loop {
        if let Some(kind) = *asked.borrow_and_update() {
            break kind;
        }
        if asked.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let signal = if kind == Kind::Interrupted {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    Error::new(
        kind,
        format!("stopped by {signal}: the run rolled back and dropped its staging"),
    )
}

/// Turns SIGINT and SIGTERM into stop requests, for the rest of the process's life. Call
/// once, inside the runtime.
pub fn listen() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            let kind = tokio::select! {
                _ = interrupt.recv() => Kind::Interrupted,
                _ = terminate.recv() => Kind::Terminated,
            };
            if request(kind) {
                eprintln!("stopping at once: staging may be left for the next run to drop");
                std::process::exit(kind.exit_code());
            }
            eprintln!("stopping: rolling back and dropping staging (signal again to exit at once)");
        }
    });
    Ok(())
}
