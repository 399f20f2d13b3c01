//! Listening, serving connections, and graceful shutdown.
//!
//! Each accepted connection (TCP or Unix socket) is served first by the server's own
//! path for plain `GET`s (`lean`: no body, no upgrade, keep-alive, which is nearly
//! all traffic), and from the first request that path does not take on, by hyper's
//! HTTP/1.1 server with upgrades enabled, which gets every byte read so far. Both have
//! these limits:
//! - a header read timeout, which runs whenever a connection waits for a request head
//!   and is not extended while bytes trickle in (slowloris); it also closes idle
//!   keep-alive connections. It is [`HeadTimeout`], one timer per connection, not
//!   hyper's, which makes a timer per request;
//! - a maximum request-head size, exact: the lean path hands a head over
//!   `max_header_bytes` to hyper, where the connection's byte scan counts each head
//!   and the guard answers 431 to one over the limit; hyper's own buffer limit (which
//!   is not a head-size limit) is set to [`HYPER_BUF_FACTOR`] times that, so that it
//!   never cuts a head the scan would have let through;
//! - request bodies with an idle timeout and a minimum rate ([`IdleBody`]; `dcos task
//!   exec` input streams are exempt from the rate while they hold a tunnel slot, and get
//!   503 when none is free), and
//!   writes to a client that stopped reading with a send timeout ([`SendTimeout`]), so
//!   that no client holds a slot by being slow;
//! - a maximum number of connections served at once: with every slot taken, a new
//!   connection waits in a small waiting room ([`WAITING_ROOM`]) for up to
//!   [`WAITING_ROOM_WAIT`], then is answered 503 with `Retry-After` naming the limit,
//!   rather than left unanswered; with the waiting room full too, the kernel's backlog
//!   holds the rest. The accept loop stops waiting at shutdown. This is a
//!   semaphore in the accept loop, not tower's `ConcurrencyLimit` layer, which limits
//!   requests in flight through one service clone (here: one connection's, which has
//!   one request at a time anyway) and cannot keep a connection from being accepted.
//!
//! [`serve`] serves thread-per-core: the caller's runtime is worker 0, and workers
//! 1..`worker_threads` each run their own current-thread runtime and accept loop on a
//! `dup` of the one listening socket ([`Listener::dup`]), so a connection and everything
//! it causes (its master connections too, see [`crate::upstream::Pool`]) stays on the
//! thread that accepted it. The limits, the waiting room and the drain signal are shared
//! by every thread.
//!
//! Each connection gets its own clone of the request path ([`Stack`], built once by the
//! caller), adapted to both paths by `Connection`, which also tags the request that the
//! connection's byte scan (on hyper's part of the connection: the lean path's requests
//! have no framing fields) found a smuggling shape or an oversized head in.
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

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

mod lean;
pub mod turn;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};

use crate::framing::{Findings, FramingConflict, OversizedHead, ScanIo};
use crate::head_timeout::{AnswerMark, Answerable, Exchanges, HeadTimedOut, HeadTimeout, Upload};
use crate::listener::{Listener, MovingStream, Peer, Stream};
use crate::metrics::Metrics;
use crate::proxy::stack::Stack;
use crate::proxy::upgrade::Tunnels;
use crate::send_timeout::SendTimeout;
use crate::spread::{Inbox, Resident, Spread};
use crate::upstream::idle::{InputStreamsFull, is_input_stream};
use crate::upstream::{ClientBody, IdleBody};

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
    /// The least rate, in bytes per second, a request body must keep after its first
    /// `body_idle_timeout` (0: no rate limit).
    pub body_min_rate: u64,
    /// Time a write to a client may stall (the client reads nothing) before the
    /// connection is closed.
    pub send_timeout: Duration,
    /// Tunnels open at once.
    pub max_tunnels: usize,
    /// Serving threads, each with its own runtime and accept loop; the caller's runtime
    /// is the first. 1 serves on the caller's runtime only.
    pub worker_threads: usize,
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
    let tunnels = tunnels.counted(metrics.clone());
    let stack = build(tunnels.clone());
    let bodies = BodyLimits {
        idle_timeout: limits.body_idle_timeout,
        min_rate: limits.body_min_rate,
        tunnels,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Kept per connection by `HeadTimeout` instead (hyper's costs a timer per request).
        .header_read_timeout(None::<Duration>)
        .max_buf_size(limits.max_header_bytes.saturating_mul(HYPER_BUF_FACTOR))
        .keep_alive(true);
    let serving = Arc::new(ServeOne {
        builder,
        stack,
        bodies,
        drain: drain.clone(),
        metrics,
        limits,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        waiting_room: Arc::new(Semaphore::new(WAITING_ROOM)),
        closing: AtomicBool::new(false),
    });

    // Worker threads 1..n, each with its own runtime and its own duplicate of the
    // listening socket; this runtime is worker 0. Each has an inbox for connections
    // another thread accepted and handed to it (`spread`).
    let (stop_accepting, stop_rx) = watch::channel(false);
    let (release, release_rx) = watch::channel(false);
    let (spread, inboxes) = Spread::new(limits.worker_threads);
    serving.metrics.watch_threads(spread.counts());
    let spread = Arc::new(spread);
    let mut inboxes = inboxes.into_iter();
    if let Some(inbox) = inboxes.next() {
        tokio::spawn(take_in(inbox, serving.clone()));
    }
    let mut threads = Vec::new();
    for index in 1..limits.worker_threads {
        let inbox = inboxes.next();
        let spawned = listener.dup().and_then(|dup| {
            let serving = serving.clone();
            let spread = spread.clone();
            let mut stop = stop_rx.clone();
            let mut released = release_rx.clone();
            std::thread::Builder::new()
                .name(format!("dcos-token-proxy-{index}"))
                .spawn(move || {
                    let runtime = turn::runtime().build()?;
                    runtime.block_on(async move {
                        let listener = dup.register()?;
                        if let Some(inbox) = inbox {
                            tokio::spawn(take_in(inbox, serving.clone()));
                        }
                        let stop = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        accept_loop(listener, &serving, spread, index, stop).await;
                        drop(serving);
                        // Keep driving this thread's connections until the drain ends.
                        let _ = released.wait_for(|r| *r).await;
                        std::io::Result::Ok(())
                    })
                })
        });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot start serving thread {index}; serving with {index}"
                );
                break;
            }
        }
    }
    // A thread that did not start has dropped its inbox: nothing is handed to it.
    drop(inboxes);
    accept_loop(listener, &serving, spread, 0, shutdown).await;
    let _ = stop_accepting.send(true);

    // Connections still in the waiting room are turned away from now on.
    serving.closing.store(true, Ordering::SeqCst);
    drop(serving);
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
    // The worker threads' runtimes end, dropping what is left on them.
    let _ = release.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            if let Ok(Err(e)) = thread.join() {
                tracing::warn!(error = %e, "a serving thread could not start");
            }
        }
    })
    .await;
}

/// A connection handed from one serving thread to another, with its slot.
type Moved = (MovingStream, Peer, OwnedSemaphorePermit);

/// Serve the connections other threads hand to this one, until every accept loop has
/// ended.
async fn take_in(mut inbox: Inbox<Moved>, serving: Arc<ServeOne>) {
    while let Some(((stream, peer, permit), resident)) = inbox.recv().await {
        match stream.register() {
            Ok(stream) => serving.clone().spawn(stream, peer, permit, resident),
            Err(e) => tracing::warn!(
                %peer,
                error = %e,
                "cannot take over a connection accepted by another serving thread; it is closed"
            ),
        }
    }
}

/// Accept connections on `listener` until `shutdown` resolves, serving each with a slot
/// of `serving` on this thread (number `me`) or on a less busy one (`spread`), or
/// waiting in its waiting room. One runs on each serving thread; the inboxes end when
/// every one has returned (and dropped its `spread`).
async fn accept_loop(
    listener: Listener,
    serving: &Arc<ServeOne>,
    spread: Arc<Spread<Moved>>,
    me: usize,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown);
    let limits = serving.limits;
    let (slots, waiting_room) = (&serving.slots, &serving.waiting_room);
    let mut at_limit = false;
    // Within a run of failed accepts, only the first is logged.
    let mut accept_failing = false;

    loop {
        // Accept only when a slot or a place in the waiting room is free; with both full,
        // wait for either (the kernel's backlog holds the new connections meanwhile).
        // Nothing is taken before the accept: a slot held by a thread waiting in
        // `accept` would be lost to the other threads, whose connections would then wait
        // and get 503 below the limit.
        if slots.available_permits() == 0 && waiting_room.available_permits() == 0 {
            warn_at_limit(&mut at_limit, limits.max_connections);
            tokio::select! {
                p = slots.acquire() => if p.is_err() { break },
                w = waiting_room.acquire() => if w.is_err() { break },
                () = &mut shutdown => break,
            }
        }
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
        // A slot, else a place in the waiting room. Another thread may have taken the
        // last of both since the check above: then this connection waits like one in
        // the waiting room, without a place.
        let ticket = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                at_limit = false;
                Ticket::Slot(p)
            }
            Err(_) => {
                warn_at_limit(&mut at_limit, limits.max_connections);
                Ticket::Waiting(waiting_room.clone().try_acquire_owned().ok())
            }
        };
        match ticket {
            Ticket::Slot(permit) => {
                let to = spread.choose(me);
                if to != me {
                    match hand(&spread, to, stream, peer, permit) {
                        Ok(()) => continue,
                        Err((stream, peer, permit)) => {
                            serving.clone().spawn(stream, peer, permit, spread.stay(me));
                        }
                    }
                } else {
                    serving.clone().spawn(stream, peer, permit, spread.stay(me));
                }
            }
            Ticket::Waiting(place) => {
                let serving = serving.clone();
                let slots = slots.clone();
                let max = limits.max_connections;
                let resident = spread.stay(me);
                tokio::spawn(async move {
                    let _place = place;
                    match tokio::time::timeout(WAITING_ROOM_WAIT, slots.acquire_owned()).await {
                        Ok(Ok(permit)) => serving.spawn(stream, peer, permit, resident),
                        _ => turn_away(stream, max).await,
                    }
                });
            }
        }
    }
}

/// Hand a connection to thread `to`; `Err` gives it back (registered on this thread
/// again) when that thread is gone, and `Ok` also when it cannot be taken off this
/// thread's runtime (it is closed, and logged).
fn hand(
    spread: &Spread<Moved>,
    to: usize,
    stream: Stream,
    peer: Peer,
    permit: OwnedSemaphorePermit,
) -> Result<(), (Stream, Peer, OwnedSemaphorePermit)> {
    let moving = match stream.into_moving() {
        Ok(moving) => moving,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot hand a connection to another serving thread; it is closed");
            return Ok(());
        }
    };
    match spread.hand(to, (moving, peer, permit)) {
        Ok(()) => Ok(()),
        Err((moving, peer, permit)) => match moving.register() {
            Ok(stream) => Err((stream, peer, permit)),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot serve a connection after a failed hand-off; it is closed");
                Ok(())
            }
        },
    }
}

/// Log, once each time the limit is reached, that connections now wait for a slot.
fn warn_at_limit(at_limit: &mut bool, max_connections: usize) {
    if !std::mem::replace(at_limit, true) {
        tracing::warn!(
            max_connections,
            "connection limit reached; a new connection waits up to {} ms for a slot, then \
             gets 503 (raise max_connections / --max-connections if this load is expected)",
            WAITING_ROOM_WAIT.as_millis()
        );
    }
}

/// How many accepted connections may wait for a slot at once when every slot is taken;
/// each holds one file descriptor (from the reserve `fdlimit` keeps) and no memory to
/// speak of. Past it, new connections stay in the kernel's backlog.
pub const WAITING_ROOM: usize = 32;

/// How long a connection in the waiting room waits for a slot before it is answered
/// 503 with `Retry-After`: long enough to absorb a burst, short enough that a client
/// behind a flood of slow connections hears at once why it is not served.
pub const WAITING_ROOM_WAIT: Duration = Duration::from_secs(1);

/// The longest a turned-away connection may take to receive its 503.
const TURN_AWAY_TIMEOUT: Duration = Duration::from_secs(1);

/// What an accepted connection gets.
enum Ticket {
    /// A connection slot: serve it.
    Slot(OwnedSemaphorePermit),
    /// A place in the waiting room (`None`: lost to another thread in a race): wait for
    /// a slot, or answer 503.
    Waiting(Option<OwnedSemaphorePermit>),
}

/// Everything needed to serve one accepted connection, shared by the accept loop and the
/// waiting room.
struct ServeOne {
    builder: http1::Builder,
    stack: Stack,
    bodies: BodyLimits,
    drain: watch::Sender<()>,
    metrics: Arc<Metrics>,
    limits: Limits,
    /// Connection slots (`max_connections`), shared by every serving thread.
    slots: Arc<Semaphore>,
    /// Places for connections waiting for a slot ([`WAITING_ROOM`]).
    waiting_room: Arc<Semaphore>,
    /// Set at shutdown: connections still waiting for a slot are turned away.
    closing: AtomicBool,
}

impl ServeOne {
    /// Serve `stream` in its own task, holding `permit` (its slot) and `resident` (its
    /// count on this thread) until it closes.
    fn spawn(
        self: Arc<Self>,
        stream: Stream,
        peer: Peer,
        permit: OwnedSemaphorePermit,
        resident: Resident,
    ) {
        // Subscribed before `closing` is read: shutdown sets `closing` before it sends
        // the drain signal, so either this connection is turned away or it sees the
        // signal.
        let mut stop = self.drain.subscribe();
        if self.closing.load(Ordering::SeqCst) {
            drop(permit);
            tokio::spawn(turn_away(stream, self.limits.max_connections));
            return;
        }
        let limits = &self.limits;
        let stream = SendTimeout::new(stream, limits.send_timeout);
        let exchanges = Exchanges::new();
        let stream = HeadTimeout::new(stream, limits.header_read_timeout, exchanges.clone());
        let service = Connection::new(self.stack.clone(), exchanges, self.bodies.clone());
        let head_limit = limits.max_header_bytes;
        let open = self.metrics.connection();
        tokio::spawn(async move {
            let _open = (open, resident);
            let closing = &self.closing;
            // The drain signal's waker is registered once, at the first poll; after
            // that a wake-up only reads `closing`, which shutdown sets before it sends
            // the signal. (Polling `changed()` on every wake-up, as `select!` would,
            // takes the watch's waiter lock, shared by every connection on every
            // thread, several times per request.)
            let mut drain = Drain {
                changed: pin!(stop.changed()),
                registered: false,
                seen: false,
            };
            // The lean path first; it sees `closing` itself. (In its own block, so that
            // the task reuses its space for hyper's connection.)
            let served = {
                let lean = pin!(lean::serve(stream, service, closing, head_limit));
                drain.run(closing, lean, |_| {}).await
            };
            let (io, read, service) = match served {
                lean::Served::Closed(result) => {
                    if let Err(e) = result {
                        log_io_error(peer, &e);
                    }
                    drop(permit);
                    return;
                }
                lean::Served::HandOver { io, read, service } => (io, read, service),
            };
            // From here on, the one smuggling shape hyper accepts is found in the raw
            // bytes (those the lean path read first included); the request is tagged
            // by the connection's service and refused by the guard.
            let (io, findings) = ScanIo::with_head_limit(Prefixed::new(read, io), head_limit);
            let service = service.scanned(findings);
            // Made in place inside the task: a connection made outside and pinned here
            // would be stored twice in the task (the captured value and the pinned
            // one), about 1 KiB more per open connection.
            let mut conn = pin!(
                self.builder
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades()
            );
            if drain.seen {
                conn.as_mut().graceful_shutdown();
            }
            let result = drain
                .run(closing, conn, |conn| conn.graceful_shutdown())
                .await;
            if let Err(e) = result {
                log_connection_error(peer, &e);
            }
            drop(permit);
        });
    }
}

/// A connection's watch on the drain signal.
struct Drain<C> {
    changed: Pin<C>,
    registered: bool,
    /// The signal has arrived.
    seen: bool,
}

impl<C: std::ops::DerefMut<Target: Future>> Drain<C> {
    /// Poll `work` until it is done; when the drain signal arrives, `on_drain` is
    /// called once and `work` polled again.
    async fn run<F: Future>(
        &mut self,
        closing: &AtomicBool,
        mut work: Pin<&mut F>,
        mut on_drain: impl FnMut(Pin<&mut F>),
    ) -> F::Output {
        std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(r) = work.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                if !self.seen && (!self.registered || closing.load(Ordering::Relaxed)) {
                    self.registered = true;
                    if self.changed.as_mut().poll(cx).is_ready() {
                        self.seen = true;
                        on_drain(work.as_mut());
                        continue;
                    }
                }
                return Poll::Pending;
            }
        })
        .await
    }
}

/// A connection handed over by the lean path: the bytes it read first, then the stream.
struct Prefixed<S> {
    read: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(read: Bytes, inner: S) -> Self {
        Self { read, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

crate::write_through::write_through!(Prefixed);

/// Answer a connection that found every slot taken: `503` with `Retry-After`, naming the
/// limit, then close. What the client sent is read first (as much as has arrived), so
/// that closing does not reset the connection before the client reads the answer.
async fn turn_away(mut stream: Stream, max_connections: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(
        "dcos-token-proxy: all {max_connections} connection slots are taken \
         (max_connections); retry shortly, or raise --max-connections\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(TURN_AWAY_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        // Whatever has arrived of the request (never waiting for more than a moment).
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Drain until the client closes, so our close is not a reset.
        while stream.read(&mut buf).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

/// One connection's service: hyper calls it with `&self`, one request at a time; a
/// tower service needs `&mut self`, so the connection's own clone of the stack sits in a
/// `RefCell` (borrowed only for the synchronous `call`, never across an await). No
/// per-request clone of the stack. Also tags the request whose head the connection's
/// byte scan found both `Content-Length` and `Transfer-Encoding` in, or found larger
/// than `max_header_bytes`.
struct Connection<S> {
    stack: RefCell<S>,
    /// The byte scan's findings, once hyper serves the connection, and the index of
    /// the first request it scanned (the lean path's requests come before it).
    scan: Option<(Arc<Findings>, usize)>,
    /// The requests so far and their answers, for the header read timeout.
    exchanges: Arc<Exchanges>,
    /// Each request body's limits ([`IdleBody`]).
    bodies: BodyLimits,
}

/// The limits every request body gets ([`IdleBody`]), and the tunnel slots that input
/// streams exempt from the rate hold.
#[derive(Clone)]
struct BodyLimits {
    idle_timeout: Duration,
    min_rate: u64,
    tunnels: Tunnels,
}

impl BodyLimits {
    /// `body` under these limits. An input stream (`dcos task exec`) is exempt from the
    /// rate while it holds a tunnel slot; with every slot taken, the request is marked
    /// [`InputStreamsFull`] (answered 503 naming `max_tunnels`).
    fn apply(&self, parts: &mut http::request::Parts, body: ClientBody) -> IdleBody<ClientBody> {
        let body = IdleBody::new(body, self.idle_timeout, self.min_rate);
        if self.min_rate > 0 && is_input_stream(parts.uri.path(), &parts.headers) {
            match self.tunnels.try_hold() {
                Some(hold) => return body.exempt(Box::new(hold)),
                None => {
                    parts
                        .extensions
                        .insert(InputStreamsFull(self.tunnels.max()));
                }
            }
        }
        body
    }
}

impl<S> Connection<S> {
    fn new(stack: S, exchanges: Arc<Exchanges>, bodies: BodyLimits) -> Self {
        Self {
            stack: RefCell::new(stack),
            scan: None,
            exchanges,
            bodies,
        }
    }

    /// This connection, its bytes scanned from its next request on.
    fn scanned(mut self, findings: Arc<Findings>) -> Self {
        self.scan = Some((findings, self.exchanges.calls()));
        self
    }
}

/// The request path was not ready for a request. Never happens with [`Stack`], whose
/// layers are always ready; hyper closes the connection if it does.
#[derive(Debug, thiserror::Error)]
#[error("the request path was not ready for a request; the connection is closed")]
pub struct NotReady;

impl<S, B> hyper::service::Service<Request<Incoming>> for Connection<S>
where
    S: tower::Service<Request<IdleBody<ClientBody>>, Response = Response<B>, Error = Infallible>,
    B: Answerable,
{
    type Response = Response<B>;
    type Error = NotReady;
    type Future = Called<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.call_with(req.map(ClientBody::Hyper))
    }
}

impl<S, B> Connection<S>
where
    S: tower::Service<Request<IdleBody<ClientBody>>, Response = Response<B>, Error = Infallible>,
    B: Answerable,
{
    /// Call the stack with the connection's next request, read by hyper or by the lean
    /// path ([`lean`]).
    fn call_with(&self, mut req: Request<ClientBody>) -> Called<S::Future> {
        let index = self.exchanges.called();
        if let Some((findings, first)) = &self.scan {
            let scanned = index.wrapping_sub(*first);
            if findings.conflict(scanned) {
                req.extensions_mut().insert(FramingConflict);
            }
            if findings.oversized(scanned) {
                req.extensions_mut().insert(OversizedHead);
            }
        }
        let connect = req.method() == http::Method::CONNECT;
        let (mut parts, body) = req.into_parts();
        let mut body = self.bodies.apply(&mut parts, body);
        if !hyper::body::Body::is_end_stream(&body) {
            body = body.guard(Box::new(Upload::new(&self.exchanges)));
        }
        let req = Request::from_parts(parts, body);
        let mut stack = self.stack.borrow_mut();
        // Every layer is always ready (none applies back-pressure), so one poll answers.
        match stack.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => Called::Inner {
                future: stack.call(req),
                exchanges: Some(self.exchanges.clone()),
                connect,
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
    /// The future of [`Connection`]: the stack's answer, whose body counts the request
    /// as answered once hyper has sent it (for the header read timeout). A `101`, or a
    /// `2xx` to `CONNECT`, hands the connection over to a tunnel.
    #[project = CalledProj]
    enum Called<F> {
        NotReady,
        Inner {
            #[pin]
            future: F,
            exchanges: Option<Arc<Exchanges>>,
            connect: bool,
        },
    }
}

impl<F, B> Future for Called<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: Answerable,
{
    type Output = Result<Response<B>, NotReady>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CalledProj::NotReady => Poll::Ready(Err(NotReady)),
            CalledProj::Inner {
                future,
                exchanges,
                connect,
            } => {
                let Ok(mut response) = ready!(future.poll(cx));
                // hyper does not poll a future again once it is ready.
                let Some(exchanges) = exchanges.take() else {
                    return Poll::Ready(Err(NotReady));
                };
                let status = response.status();
                if status == http::StatusCode::SWITCHING_PROTOCOLS
                    || (*connect && status.is_success())
                {
                    exchanges.upgraded();
                }
                response.body_mut().carry(AnswerMark::new(exchanges));
                Poll::Ready(Ok(response))
            }
        }
    }
}

fn log_connection_error(peer: Peer, e: &hyper::Error) {
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    if let Some(io) = io {
        log_io_error(peer, io);
    } else if e.is_parse() {
        tracing::debug!(%peer, error = %e, "malformed request; answered 400 and closed");
    } else {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

fn log_io_error(peer: Peer, io: &std::io::Error) {
    if let Some(timed_out) = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<HeadTimedOut>())
    {
        // From HeadTimeout: idle keep-alives end this way all the time.
        tracing::debug!(%peer, "{timed_out}");
    } else if io.kind() == std::io::ErrorKind::TimedOut {
        // From SendTimeout: the message names the setting.
        tracing::info!(%peer, "{io}");
    } else {
        tracing::debug!(%peer, error = %io, "connection ended with an error");
    }
}

/// The bound address as a `Host` value, for `Location` rewrites when a client sent no
/// `Host` (HTTP/1.0).
pub fn host_value(addr: SocketAddr) -> http::HeaderValue {
    http::HeaderValue::from_str(&addr.to_string())
        .unwrap_or_else(|_| http::HeaderValue::from_static("127.0.0.1"))
}
