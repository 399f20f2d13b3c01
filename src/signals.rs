//! Ctrl-C and SIGTERM for the binary: the first asks for a graceful shutdown, the second
//! exits at once.
//!
//! The handlers are installed before the proxy says it is listening, so an early SIGTERM
//! drains instead of killing. Once a handler is installed the operating system no longer
//! ends the process on Ctrl-C, so without a second-signal rule a user watching a 30 s
//! drain (an open SSE stream keeps its connection busy until `shutdown_grace` ends) would
//! have no way out. The first signal says what the proxy waits for and how to leave; the
//! second resolves [`Signals::force`], and `main` exits with `128 + signal number`.

use std::time::Duration;

use tokio::sync::oneshot;

/// Exit status after a second SIGINT: 128 + 2, as a shell reports a process killed by it.
pub const EXIT_FORCED_SIGINT: u8 = 130;
/// Exit status after a second SIGTERM: 128 + 15.
pub const EXIT_FORCED_SIGTERM: u8 = 143;

/// The two moments a user's signals mark.
pub struct Signals {
    /// Resolves at the first SIGINT or SIGTERM: start the graceful shutdown.
    pub shutdown: oneshot::Receiver<()>,
    /// Resolves at the second one with the exit status to use: leave now.
    pub force: oneshot::Receiver<u8>,
}

/// Which signal arrived, for messages and the exit status.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Term,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Int => "SIGINT (Ctrl-C)",
            Self::Term => "SIGTERM",
        }
    }

    /// How to leave now, in the words of the one who sent it.
    fn again(self) -> &'static str {
        match self {
            Self::Int => "press Ctrl-C again to exit now",
            Self::Term => "a second SIGTERM or Ctrl-C exits now",
        }
    }

    fn forced_status(self) -> u8 {
        match self {
            Self::Int => EXIT_FORCED_SIGINT,
            Self::Term => EXIT_FORCED_SIGTERM,
        }
    }
}

impl Signals {
    /// Install the handlers now (inside a Tokio runtime) and start the task that watches
    /// them. `grace` is only used in the first signal's message.
    pub fn install(grace: Duration) -> std::io::Result<Self> {
        let mut handlers = Handlers::install()?;
        let (shutdown_tx, shutdown) = oneshot::channel();
        let (force_tx, force) = oneshot::channel();
        tokio::spawn(async move {
            let first = handlers.next().await;
            tracing::info!(
                grace_s = grace.as_secs_f64(),
                "received {}: finishing open requests and streams (at most {}); {}",
                first.name(),
                humanize(grace),
                first.again(),
            );
            let _ = shutdown_tx.send(());
            let second = handlers.next().await;
            tracing::warn!(
                "received {} again: exiting now, open requests and streams are cut",
                second.name()
            );
            let _ = force_tx.send(second.forced_status());
        });
        Ok(Self { shutdown, force })
    }
}

/// `30s`, `1m30s`, `500ms`: a duration as people write it.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// The installed handlers.
struct Handlers {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Handlers {
    #[cfg(unix)]
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// The next signal.
    async fn next(&mut self) -> Kind {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => Kind::Int,
                _ = self.term.recv() => Kind::Term,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Kind::Int
        }
    }
}

#[cfg(test)]
mod tests {
    use super::humanize;
    use std::time::Duration;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(humanize(Duration::from_secs(30)), "30s");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_secs(120)), "2m");
        assert_eq!(humanize(Duration::from_millis(500)), "500ms");
    }
}
