//! Listening, serving connections, and graceful shutdown.
//!
//! Each accepted connection (TCP or Unix socket) is served by hyper's HTTP/1.1 server
//! with upgrades enabled and these limits:
//! - a header read timeout, which hyper starts whenever a connection waits for a request
//!   head and does not extend while bytes trickle in (slowloris); it also closes idle
//!   keep-alive connections;
//! - a maximum request-head size (hyper answers 431 above it);
//! - a maximum number of connections served at once: the accept loop waits for a free
//!   slot (the kernel's backlog holds the rest), and stops waiting at shutdown.
//!
//! Shutdown stops accepting at once, asks every connection to finish its in-flight
//! request and close, waits up to the grace period (tunnels included), then returns.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::framing::{FramingConflict, ScanIo};
use crate::listener::{Listener, Peer};
use crate::proxy::service::{Shared, handle};

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connection limits and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to receive a request head; also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// The largest request head, in bytes (at least 8192).
    pub max_header_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time given to in-flight requests at shutdown.
    pub grace: Duration,
}

/// Serve `listener` until `shutdown` resolves, then drain for at most `limits.grace`.
pub async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let grace = limits.grace;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    let mut shutdown = pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut at_limit = false;

    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                at_limit = false;
                p
            }
            Err(_) => {
                if !at_limit {
                    at_limit = true;
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait until one closes \
                         (raise max_connections / --max-connections if this is expected)"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let mut drain = shared.drain.subscribe();
        let svc_shared = shared.clone();
        // The one smuggling shape hyper accepts is found in the raw bytes; the request
        // is tagged here and refused by the guard.
        let (stream, findings) = ScanIo::new(stream);
        let served = std::sync::atomic::AtomicUsize::new(0);
        let service = service_fn(move |mut req| {
            let index = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if findings.conflict(index) {
                req.extensions_mut().insert(FramingConflict);
            }
            handle(svc_shared.clone(), req)
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = drain.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                log_connection_error(peer, &e);
            }
            drop(permit);
        });
    }

    drop(listener);
    // Every connection (idle keep-alives included) and every tunnel holds a receiver.
    let open = shared.drain.receiver_count();
    tracing::info!(
        open_connections = open,
        grace_s = grace.as_secs_f64(),
        "shutting down: no longer accepting connections"
    );
    let _ = shared.drain.send(());
    match tokio::time::timeout(grace, shared.drain.closed()).await {
        Ok(()) => tracing::info!("all connections finished; exiting"),
        Err(_) => tracing::warn!(
            cut = shared.drain.receiver_count(),
            "grace period over; closing the remaining connections"
        ),
    }
}

fn log_connection_error(peer: Peer, e: &hyper::Error) {
    if e.is_timeout() {
        tracing::debug!(
            %peer,
            "client sent no complete request head within header_read_timeout; connection closed"
        );
    } else if e.is_parse() {
        tracing::debug!(%peer, error = %e, "malformed request; answered 400 and closed");
    } else {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Install the SIGINT/SIGTERM handlers now and return a future that resolves when
/// either arrives (Ctrl-C elsewhere).
///
/// Installing eagerly matters: a signal that arrives between "listening" and the first
/// poll of a lazily-installed handler would kill the process instead of draining it.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => tracing::info!("received SIGINT"),
                _ = term.recv() => tracing::info!("received SIGTERM"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// The bound address as a `Host` value, for `Location` rewrites when a client sent no
/// `Host` (HTTP/1.0).
pub fn host_value(addr: SocketAddr) -> http::HeaderValue {
    http::HeaderValue::from_str(&addr.to_string())
        .unwrap_or_else(|_| http::HeaderValue::from_static("127.0.0.1"))
}
