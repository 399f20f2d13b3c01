//! The header read timeout (`header_read_timeout`): a client connection that waits for
//! its next request head, idle keep-alive or trickling a head in (slowloris), is closed
//! once it has waited that long. Bytes arriving do not extend it.
//!
//! hyper has the same timeout built in, but it makes a boxed timer for every request
//! head, registers it, and drops it once the head is parsed: about 1,900 of the ~46,700
//! instructions the proxy spent per small keep-alive request (`scripts/ir-per-request`
//! with hyper's timeout switched off: 44,776). Here each connection has one timer that
//! ticks four times per timeout ([`TICKS`]); per request there are only counter updates
//! and one reference count (46,684 to 45,210 instructions per request in all). A
//! connection is closed at the first tick after it has waited a full timeout: between 1
//! and 1.25 timeouts after the wait began. The first request's wait begins at the
//! accept.
//!
//! A connection *waits for a head* when every request its service was called with
//! ([`Exchanges::called`]) has been answered in full (hyper dropped the response body,
//! which carries an [`AnswerMark`]) and no request body is still being read ([`Upload`]), and no upgrade
//! (WebSocket, `CONNECT`) took the connection over ([`Exchanges::upgraded`]). This is when
//! hyper reads a head: it starts on the next request only once the last one is done.
//! A long-poll, a streamed response or an upload is never cut by this timeout; they have
//! their own limits (send timeout, body idle timeout).
//!
//! [`HeadTimeout`] wraps the connection's byte stream; the timer is looked at whenever
//! hyper reads (which it does whenever it waits for a head), and it wakes the
//! connection when it ticks. Running out is a read error, [`HeadTimedOut`]: hyper then
//! closes the connection without an answer, as with its own timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Ticks of the timer per timeout: a connection is closed between 1 and
/// `1 + 1/TICKS` timeouts after its wait began.
pub const TICKS: u32 = 4;

/// The shortest tick, whatever the timeout.
const MIN_TICK: Duration = Duration::from_millis(1);

/// One connection's exchanges, counted by its service and its bodies, read by its
/// [`HeadTimeout`]. Each counter has one writer at a time (the connection's task, or a
/// body on the upstream side); `Relaxed` is enough, since the timer only needs to see
/// them eventually and a late view can only delay a close by one tick.
#[derive(Debug, Default)]
pub struct Exchanges {
    calls: AtomicUsize,
    answered: AtomicUsize,
    uploads: AtomicUsize,
    upgraded: AtomicBool,
}

impl Exchanges {
    /// Counters for a new connection.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The service was called with a request: returns its index on the connection
    /// (0-based).
    pub fn called(&self) -> usize {
        let index = self.calls.load(Ordering::Relaxed);
        self.calls.store(index + 1, Ordering::Relaxed);
        index
    }

    /// The calls so far (the index the next one gets).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// The connection was taken over by an upgrade: it no longer reads heads.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Whether the connection waits for a head, and the calls so far.
    fn waiting(&self) -> (bool, usize) {
        let calls = self.calls.load(Ordering::Relaxed);
        let waiting = calls == self.answered.load(Ordering::Relaxed)
            && self.uploads.load(Ordering::Relaxed) == 0;
        (waiting, calls)
    }
}

/// Held by a request body that is being read: the connection does not wait for a head
/// until it is dropped.
#[derive(Debug)]
pub struct Upload(Arc<Exchanges>);

impl Upload {
    /// A request body of `exchanges`' connection is open.
    pub fn new(exchanges: &Arc<Exchanges>) -> Self {
        exchanges.uploads.fetch_add(1, Ordering::Relaxed);
        Self(exchanges.clone())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.0.uploads.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts its response as answered when dropped; carried by the response body
/// ([`Answerable`]), so that hyper's drop of the body, once sent in full or given up,
/// drops it.
#[derive(Debug)]
pub struct AnswerMark(Arc<Exchanges>);

impl AnswerMark {
    /// A mark for the response to the latest call on `exchanges`' connection.
    pub fn new(exchanges: Arc<Exchanges>) -> Self {
        Self(exchanges)
    }
}

impl Drop for AnswerMark {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that can carry an [`AnswerMark`] (set in place: the response is
/// not moved to wrap its body).
pub trait Answerable {
    /// Keep `mark` until this body is dropped.
    fn carry(&mut self, mark: AnswerMark);
}

/// The read error when a connection waited a whole `header_read_timeout` for a head.
#[derive(Debug, thiserror::Error)]
#[error(
    "client sent no complete request head within header_read_timeout ({after:?}); \
     connection closed"
)]
pub struct HeadTimedOut {
    /// The timeout.
    pub after: Duration,
}

/// The timer of one connection.
#[derive(Debug)]
struct Ticker {
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    tick: Duration,
    /// Whether `sleep` has been polled since it was last set (registered with the
    /// connection's waker).
    armed: bool,
    /// The calls counted at the last tick, and how many ticks in a row have seen the
    /// connection waiting with that count.
    calls: usize,
    ticks: u32,
}

/// What a tick decided.
enum Tick {
    Go,
    Off,
    Expired,
}

impl Ticker {
    fn new(timeout: Duration) -> Self {
        let tick = (timeout / TICKS).max(MIN_TICK);
        Self {
            sleep: Box::pin(tokio::time::sleep(tick)),
            timeout,
            tick,
            armed: false,
            calls: 0,
            ticks: 0,
        }
    }

    /// Look at the timer: cheap unless it has ticked.
    fn check(&mut self, cx: &mut Context<'_>, exchanges: &Exchanges) -> Tick {
        loop {
            if self.armed {
                if !self.sleep.is_elapsed() {
                    return Tick::Go;
                }
            } else if self.sleep.as_mut().poll(cx).is_pending() {
                // Registered with the connection's waker: it wakes the connection when
                // it ticks.
                self.armed = true;
                return Tick::Go;
            }
            // A tick.
            if exchanges.upgraded.load(Ordering::Relaxed) {
                return Tick::Off;
            }
            let (waiting, calls) = exchanges.waiting();
            if waiting && calls == self.calls {
                self.ticks += 1;
            } else {
                self.calls = calls;
                self.ticks = u32::from(waiting);
            }
            // The wait began after the tick before the first that saw it: `ticks - 1`
            // whole ticks ago at least.
            if self.ticks > TICKS {
                return Tick::Expired;
            }
            self.sleep.as_mut().reset(Instant::now() + self.tick);
            self.armed = false;
        }
    }
}

/// A client connection's byte stream, closed by a read error ([`HeadTimedOut`]) once it
/// has waited `header_read_timeout` for a request head.
#[derive(Debug)]
pub struct HeadTimeout<S> {
    inner: S,
    ticker: Option<Ticker>,
    exchanges: Arc<Exchanges>,
}

impl<S> HeadTimeout<S> {
    /// `inner`, whose exchanges are counted in `exchanges`, waiting at most `timeout`
    /// for each head (from now for the first).
    pub fn new(inner: S, timeout: Duration, exchanges: Arc<Exchanges>) -> Self {
        Self {
            inner,
            ticker: Some(Ticker::new(timeout)),
            exchanges,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(ticker) = &mut this.ticker {
            match ticker.check(cx, &this.exchanges) {
                Tick::Go => {}
                Tick::Off => this.ticker = None,
                Tick::Expired => {
                    let after = ticker.timeout;
                    this.ticker = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        HeadTimedOut { after },
                    )));
                }
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

crate::write_through::write_through!(HeadTimeout);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const T: Duration = Duration::from_millis(400);

    fn connection() -> (HeadTimeout<DuplexStream>, DuplexStream, Arc<Exchanges>) {
        let (ours, client) = tokio::io::duplex(1024);
        let exchanges = Exchanges::new();
        (
            HeadTimeout::new(ours, T, exchanges.clone()),
            client,
            exchanges,
        )
    }

    /// Reads until the stream fails; the time from `start` until then.
    async fn until_closed(io: &mut HeadTimeout<DuplexStream>, start: Instant) -> Duration {
        let mut buf = [0u8; 64];
        loop {
            match io.read(&mut buf).await {
                Ok(n) => assert!(n > 0, "the client does not close in these tests"),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                    let inner = e.get_ref().and_then(|e| e.downcast_ref::<HeadTimedOut>());
                    assert!(inner.is_some(), "{e}");
                    return start.elapsed();
                }
            }
        }
    }

    fn within_one_and_a_quarter(waited: Duration) {
        assert!(waited >= T, "closed after {waited:?}, before the timeout");
        assert!(waited <= T + T / TICKS, "closed after {waited:?}, too late");
    }

    /// Whether `io` is still open after `wait` (nothing to read, no error).
    async fn open_after(io: &mut HeadTimeout<DuplexStream>, wait: Duration) -> bool {
        let mut buf = [0u8; 64];
        tokio::time::timeout(wait, io.read(&mut buf)).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_waiting_for_its_first_head_is_closed_after_the_timeout() {
        let (mut io, _client, _) = connection();
        within_one_and_a_quarter(until_closed(&mut io, Instant::now()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn trickled_bytes_do_not_extend_the_wait() {
        let (mut io, mut client, _) = connection();
        let start = Instant::now();
        tokio::spawn(async move {
            loop {
                if client.write_all(b"G").await.is_err() {
                    return;
                }
                tokio::time::sleep(T / 10).await;
            }
        });
        within_one_and_a_quarter(until_closed(&mut io, start).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_is_never_cut_and_the_wait_starts_at_its_answer() {
        let (mut io, _client, exchanges) = connection();
        assert_eq!(exchanges.called(), 0);
        assert!(
            open_after(&mut io, T * 10).await,
            "cut while a request was in flight"
        );
        let mark = AnswerMark::new(exchanges.clone());
        assert!(
            open_after(&mut io, T * 10).await,
            "cut while its answer was sent"
        );
        drop(mark);
        within_one_and_a_quarter(until_closed(&mut io, Instant::now()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_body_still_being_read_keeps_the_connection() {
        let (mut io, _client, exchanges) = connection();
        exchanges.called();
        let upload = Upload::new(&exchanges);
        drop(AnswerMark::new(exchanges.clone()));
        assert!(
            open_after(&mut io, T * 10).await,
            "cut while a body was read"
        );
        drop(upload);
        within_one_and_a_quarter(until_closed(&mut io, Instant::now()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_is_never_cut() {
        let (mut io, mut client, exchanges) = connection();
        exchanges.called();
        exchanges.upgraded();
        drop(AnswerMark::new(exchanges.clone()));
        assert!(open_after(&mut io, T * 10).await, "a tunnel was cut");
        client.write_all(b"still here").await.unwrap();
        let mut buf = [0u8; 10];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still here");
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_starts_a_new_wait() {
        let (mut io, _client, exchanges) = connection();
        // Requests answered every 0.9 timeouts, ten times: never cut.
        for _ in 0..10 {
            assert!(
                open_after(&mut io, T * 9 / 10).await,
                "cut between requests"
            );
            exchanges.called();
            drop(AnswerMark::new(exchanges.clone()));
        }
        within_one_and_a_quarter(until_closed(&mut io, Instant::now()).await);
    }
}
