//! `upstream.proxy_command`: a command whose stdin and stdout carry one connection to
//! the master, as ssh's `ProxyCommand` does (`ssh -W %h:%p bastion`).
//!
//! Each new pooled connection spawns the command once; the pool keeps it for the
//! following requests, as it would a TCP connection. `%h` and `%p` expand to the master's
//! host and port, `%%` to `%`. The expanded line runs under `sh -c`, like ssh runs its
//! `ProxyCommand` (so quotes, pipes and `~` work as typed); the expanded host and port
//! are single-quoted, so a master URL from a config file cannot inject shell syntax.
//!
//! The command's stderr is kept (the first [`MAX_STDERR`] bytes). When its stdout ends,
//! or writing to it fails, the exit status decides: 0 is an ordinary end of the
//! connection; anything else is an error naming the command, its status and its stderr,
//! which the request path answers with 502. When the connection is dropped (idle, or the
//! proxy shuts down) the command is killed and reaped.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Uri;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tower_service::Service;

use super::route::ConnectError;

/// The most bytes of a proxy command's stderr kept for an error message.
pub const MAX_STDERR: usize = 2048;
/// How long to wait, after a command's stdout ends, for it to exit and close stderr
/// before treating the end as an ordinary close.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);
/// The shell that runs the command (as ssh runs `ProxyCommand`).
const SHELL: &str = "/bin/sh";
/// `sh` exit statuses meaning "the command was not found / not executable".
const NOT_FOUND: [i32; 2] = [126, 127];

/// A validated proxy command template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyCommand(Arc<str>);

impl ProxyCommand {
    /// Validate `text`: not empty, and `%` only in `%h`, `%p` and `%%`.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("is empty; give a command such as 'ssh -W %h:%p bastion'".into());
        }
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some('h' | 'p' | '%') => {}
                    other => {
                        return Err(format!(
                            "has %{} but only %h (the master's host), %p (its port) and %% \
                             are expanded",
                            other.map(String::from).unwrap_or_default()
                        ));
                    }
                }
            }
        }
        Ok(Self(text.into()))
    }

    /// The command as configured.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The shell line for `host` and `port`: `%h`/`%p` replaced by single-quoted values.
    pub fn expand(&self, host: &str, port: u16) -> String {
        let mut out = String::with_capacity(self.0.len() + host.len());
        let mut chars = self.0.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('h') => out.push_str(&shell_quote(host)),
                Some('p') => out.push_str(&port.to_string()),
                Some('%') => out.push('%'),
                // `new` admits nothing else.
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }
}

/// `s` in single quotes for `sh` (a `'` becomes `'\''`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Spawns the command for each new connection.
#[derive(Debug, Clone)]
pub struct CommandConnector {
    command: ProxyCommand,
}

impl CommandConnector {
    /// A connector running `command`.
    pub fn new(command: ProxyCommand) -> Self {
        Self { command }
    }
}

impl Service<Uri> for CommandConnector {
    type Response = CommandStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<CommandStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let command = self.command.clone();
        Box::pin(async move {
            let host = dst.host().unwrap_or_default();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            CommandStream::spawn(&command, host, port)
        })
    }
}

/// What the command left behind when it ended.
#[derive(Debug)]
struct Exit {
    status: io::Result<ExitStatus>,
    stderr: String,
}

/// The command ended badly: this is the `io::Error` payload a read or write returns, so
/// the request path can show it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// `sh` could not find or run the command.
    #[error(
        "the proxy command {command:?} could not start ({stderr}); check \
         upstream.proxy_command (--proxy-command)"
    )]
    NotStarted {
        /// The command as configured.
        command: String,
        /// What the shell said.
        stderr: String,
    },
    /// The command exited with a failure status.
    #[error(
        "the proxy command {command:?} ended the connection ({status}){}{stderr}; run it by \
         hand to see why, or fix upstream.proxy_command (--proxy-command)",
        if .stderr.is_empty() { "" } else { ": " }
    )]
    Failed {
        /// The command as configured.
        command: String,
        /// Its exit status, in words.
        status: String,
        /// The start of its stderr.
        stderr: String,
    },
}

/// A running proxy command: reads come from its stdout, writes go to its stdin.
pub struct CommandStream {
    command: ProxyCommand,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// The exit report, once the command is done; sent by the task that owns the child.
    exit: Option<oneshot::Receiver<Exit>>,
    /// The bound on waiting for `exit` after the stdout ended.
    grace: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Dropping this kills the command (if it still runs).
    _kill: oneshot::Sender<()>,
    /// A write failed with this error; it is returned once the exit is known.
    write_error: Option<io::Error>,
}

impl fmt::Debug for CommandStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandStream")
            .field("command", &self.command.text())
            .finish_non_exhaustive()
    }
}

impl CommandStream {
    fn spawn(command: &ProxyCommand, host: &str, port: u16) -> Result<Self, ConnectError> {
        let line = command.expand(host, port);
        let mut child = Command::new(SHELL)
            .arg("-c")
            .arg(&line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| ConnectError::CommandSpawn {
                command: command.text().to_owned(),
                error,
            })?;
        let missing = || ConnectError::CommandSpawn {
            command: command.text().to_owned(),
            error: io::Error::other("its standard streams are not available"),
        };
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take().ok_or_else(missing)?;
        tracing::debug!(command = %command.text(), "started the proxy command");

        let (exit_tx, exit_rx) = oneshot::channel();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let keep = async move {
                let mut kept = Vec::new();
                let mut stderr = stderr.take(MAX_STDERR as u64);
                let _ = stderr.read_to_end(&mut kept).await;
                // Drain the rest so the command never blocks on a full pipe.
                let _ = tokio::io::copy(&mut stderr.into_inner(), &mut tokio::io::sink()).await;
                kept
            };
            tokio::select! {
                (status, kept) = async { tokio::join!(child.wait(), keep) } => {
                    let stderr = String::from_utf8_lossy(&kept).trim().to_owned();
                    let _ = exit_tx.send(Exit { status, stderr });
                }
                // The stream was dropped: the connection is done with.
                _ = kill_rx => {
                    let _ = child.kill().await;
                }
            }
        });
        Ok(Self {
            command: command.clone(),
            stdin,
            stdout,
            exit: Some(exit_rx),
            grace: None,
            _kill: kill_tx,
            write_error: None,
        })
    }

    /// Wait (up to [`EXIT_GRACE`]) for the exit report; `Some(error)` when the command
    /// failed, `None` when it exited cleanly or is still running.
    fn poll_failure(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Error>> {
        let Some(rx) = self.exit.as_mut() else {
            return Poll::Ready(None);
        };
        let grace = self
            .grace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(EXIT_GRACE)));
        let exit = match Pin::new(rx).poll(cx) {
            Poll::Ready(Ok(exit)) => exit,
            Poll::Ready(Err(_)) => {
                self.exit = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {
                ready!(grace.as_mut().poll(cx));
                self.exit = None;
                return Poll::Ready(None);
            }
        };
        self.exit = None;
        let command = self.command.text().to_owned();
        let error = match exit.status {
            Ok(s) if s.success() => return Poll::Ready(None),
            Ok(s) if s.code().is_some_and(|c| NOT_FOUND.contains(&c)) => CommandError::NotStarted {
                command,
                stderr: exit.stderr,
            },
            Ok(s) => CommandError::Failed {
                command,
                status: s.to_string(),
                stderr: exit.stderr,
            },
            Err(e) => CommandError::Failed {
                command,
                status: format!("cannot tell how it ended: {e}"),
                stderr: exit.stderr,
            },
        };
        Poll::Ready(Some(io::Error::other(error)))
    }
}

impl AsyncRead for CommandStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stdout).poll_read(cx, buf))?;
        if buf.filled().len() > before || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // End of stdout: an ordinary close unless the command failed.
        match ready!(this.poll_failure(cx)) {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for CommandStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_error.is_none() {
            match ready!(Pin::new(&mut this.stdin).poll_write(cx, buf)) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) => this.write_error = Some(e),
            }
        }
        let failure = ready!(this.poll_failure(cx));
        let original = this
            .write_error
            .take()
            .unwrap_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe));
        Poll::Ready(Err(failure.unwrap_or(original)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_quotes_the_host_and_keeps_the_rest() {
        let c = ProxyCommand::new("ssh -W %h:%p bastion # 100%%").unwrap();
        assert_eq!(
            c.expand("master.mesos", 443),
            "ssh -W 'master.mesos':443 bastion # 100%"
        );
        assert_eq!(
            c.expand("a'b;rm", 1),
            "ssh -W 'a'\\''b;rm':1 bastion # 100%"
        );
        assert!(ProxyCommand::new("nc %r").unwrap_err().contains("%r"));
        assert!(ProxyCommand::new("  ").is_err());
    }
}
