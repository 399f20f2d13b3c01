//! Listening, serving connections, and graceful shutdown.
//!
//! Each accepted connection (TCP or Unix socket) is served by hyper's HTTP/1.1 server
//! with upgrades enabled and these limits:
//! - a header read timeout, which hyper starts whenever a connection waits for a request
//!   head and does not extend while bytes trickle in (slowloris); it also closes idle
//!   keep-alive connections;
//! - a maximum request-head size, exact: the connection's byte scan counts each head
//!   and the guard answers 431 to one over `max_header_bytes`; hyper's own buffer limit
//!   (which is not a head-size limit) is set to [`HYPER_BUF_FACTOR`] times that, so that
//!   it never cuts a head the scan would have let through;
//! - a maximum number of connections served at once: the accept loop waits for a free
//!   slot (the kernel's backlog holds the rest), and stops waiting at shutdown. This is a
//!   semaphore in the accept loop, not tower's `ConcurrencyLimit` layer, which limits
//!   requests in flight through one service clone (here: one connection's, which has
//!   one request at a time anyway) and cannot keep a connection from being accepted.
//!
//! Each connection gets its own clone of the request path ([`Stack`], built once by the
//! caller), adapted to hyper by `Connection`, which also tags the request that the
//! connection's byte scan found a smuggling shape or an oversized head in.
//!
//! Shutdown stops accepting at once, asks every connection to finish its in-flight
//! request and close, waits up to the grace period (tunnels included), then returns.
//! The drain signal is the server's: a `tokio::sync::watch` channel whose receivers are
//! held by every connection and every tunnel. The request path only gets a handle that
//! makes receivers for tunnels ([`Tunnels`]).
//!
//! Not hyper-util's `GracefulShutdown`: it can only watch connections that implement
//! its sealed `GracefulConnection` trait, and hyper-util (0.1.21) does not implement it
//! for `http1::UpgradeableConnection`, the connection type that `with_upgrades()` (needed
//! for WebSocket tunnels) returns; tunnels, which outlive their connection, would need
//! the watch channel anyway. Its mechanism is the same channel, so nothing would be
//! gained per connection either.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::sync::{Semaphore, watch};

use crate::framing::{Findings, FramingConflict, OversizedHead, ScanIo};
use crate::listener::{Listener, Peer};
use crate::metrics::Metrics;
use crate::proxy::stack::Stack;
use crate::proxy::upgrade::Tunnels;
use crate::upstream::IdleBody;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// hyper's read-buffer limit as a multiple of `max_header_bytes`: above the head limit,
/// so that heads up to it are always parsed (and those a little over it answered 431 by
/// the guard, naming the setting); hyper answers 431 itself only to far larger ones.
pub const HYPER_BUF_FACTOR: usize = 2;

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
    /// Time a request body may go without a byte once it is being read.
    pub body_idle_timeout: Duration,
    /// Tunnels open at once.
    pub max_tunnels: usize,
    /// Time a tunnel may carry nothing before it is closed.
    pub tunnel_idle_timeout: Duration,
}

/// Serve `listener` with the stack that `build` makes (given the handle tunnels hold)
/// until `shutdown` resolves, then drain for at most `limits.grace`. Open connections
/// and tunnels are counted in `metrics`.
pub async fn serve(
    listener: Listener,
    build: impl FnOnce(Tunnels) -> Stack,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let grace = limits.grace;
    // Shutdown signal and in-flight tracking: every connection and tunnel holds a
    // receiver; `send` asks them to wind down, `closed` waits until they have.
    let (drain, _) = watch::channel(());
    let tunnels = Tunnels::with_limits(
        drain.clone(),
        limits.max_tunnels,
        Some(limits.tunnel_idle_timeout),
    );
    let stack = build(tunnels.counted(metrics.clone()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.saturating_mul(HYPER_BUF_FACTOR))
        .keep_alive(true);
    let mut shutdown = pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut at_limit = false;
    // Within a run of failed accepts, only the first is logged.
    let mut accept_failing = false;

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
                Ok(pair) => {
                    if std::mem::take(&mut accept_failing) {
                        tracing::info!("accepting connections again");
                    }
                    pair
                }
                Err(e) => {
                    // EMFILE/ENFILE (out of file descriptors) and the like: the waiting
                    // connection stays in the backlog; back off, and keep serving the
                    // open ones, which free descriptors as they close.
                    if !std::mem::replace(&mut accept_failing, true) {
                        tracing::warn!(
                            error = %e,
                            "accept failed (out of file descriptors?); retrying every {} ms \
                             while serving the open connections (not logged again until it \
                             recovers)",
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let mut stop = drain.subscribe();
        // The one smuggling shape hyper accepts is found in the raw bytes; the request
        // is tagged by the connection's service and refused by the guard.
        let (stream, findings) = ScanIo::with_head_limit(stream, limits.max_header_bytes);
        let service = Connection::new(stack.clone(), findings, limits.body_idle_timeout);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let open = metrics.connection();
        tokio::spawn(async move {
            let _open = open;
            let mut conn = pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
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
    drop(stack);
    // Every connection (idle keep-alives included) and every tunnel holds a receiver.
    let open = drain.receiver_count();
    tracing::info!(
        open_connections = open,
        grace_s = grace.as_secs_f64(),
        "shutting down: no longer accepting connections"
    );
    let _ = drain.send(());
    match tokio::time::timeout(grace, drain.closed()).await {
        Ok(()) => tracing::info!("all connections finished; exiting"),
        Err(_) => tracing::warn!(
            cut = drain.receiver_count(),
            "grace period over; closing the remaining connections"
        ),
    }
}

/// One connection's service: hyper calls it with `&self`, one request at a time; a
/// tower service needs `&mut self`, so the connection's own clone of the stack sits in a
/// `RefCell` (borrowed only for the synchronous `call`, never across an await). No
/// per-request clone of the stack. Also tags the request whose head the connection's
/// byte scan found both `Content-Length` and `Transfer-Encoding` in, or found larger
/// than `max_header_bytes`.
struct Connection<S> {
    stack: RefCell<S>,
    findings: Arc<Findings>,
    /// Requests served so far on this connection.
    served: Cell<usize>,
    /// Each request body's idle limit ([`IdleBody`]).
    body_idle_timeout: Duration,
}

impl<S> Connection<S> {
    fn new(stack: S, findings: Arc<Findings>, body_idle_timeout: Duration) -> Self {
        Self {
            stack: RefCell::new(stack),
            findings,
            served: Cell::new(0),
            body_idle_timeout,
        }
    }
}

/// The request path was not ready for a request. Never happens with [`Stack`], whose
/// layers are always ready; hyper closes the connection if it does.
#[derive(Debug, thiserror::Error)]
#[error("the request path was not ready for a request; the connection is closed")]
pub struct NotReady;

impl<S, B> hyper::service::Service<Request<Incoming>> for Connection<S>
where
    S: tower::Service<Request<IdleBody<Incoming>>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<B>;
    type Error = NotReady;
    type Future = Called<S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let index = self.served.get();
        self.served.set(index + 1);
        if self.findings.conflict(index) {
            req.extensions_mut().insert(FramingConflict);
        }
        if self.findings.oversized(index) {
            req.extensions_mut().insert(OversizedHead);
        }
        let timeout = self.body_idle_timeout;
        let req = req.map(|body| IdleBody::new(body, timeout));
        let mut stack = self.stack.borrow_mut();
        // Every layer is always ready (none applies back-pressure), so one poll answers.
        match stack.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => Called::Inner {
                future: stack.call(req),
            },
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => {
                tracing::error!("{NotReady}");
                Called::NotReady
            }
        }
    }
}

pin_project! {
    /// The future of [`Connection`].
    #[project = CalledProj]
    enum Called<F> {
        NotReady,
        Inner { #[pin] future: F },
    }
}

impl<F, R> Future for Called<F>
where
    F: Future<Output = Result<R, Infallible>>,
{
    type Output = Result<R, NotReady>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CalledProj::NotReady => Poll::Ready(Err(NotReady)),
            CalledProj::Inner { future } => future.poll(cx).map(|Ok(r)| Ok(r)),
        }
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

/// The bound address as a `Host` value, for `Location` rewrites when a client sent no
/// `Host` (HTTP/1.0).
pub fn host_value(addr: SocketAddr) -> http::HeaderValue {
    http::HeaderValue::from_str(&addr.to_string())
        .unwrap_or_else(|_| http::HeaderValue::from_static("127.0.0.1"))
}
