//! The client's request body on its way to the master, with two limits that keep a slow
//! client from holding a connection slot (and a master connection) for as long as it
//! likes once its headers are in (the header read timeout no longer applies then):
//!
//! - **idle**: once the body has started to be read, each frame must follow the last
//!   within the body idle timeout;
//! - **rate**: by any moment, the body must have sent at least `min_rate` bytes per
//!   second beyond a grace equal to the idle timeout (`mod_reqtimeout`'s `MinRate`): the
//!   deadline starts at the idle timeout after the first read and moves on by one second
//!   per `min_rate` bytes received. A body that trickles one byte every few seconds is
//!   never idle, but falls behind.
//!
//! A body that breaks either limit ends in a [`BodyCut`] error. hyper's client then
//! abandons the request to the master (its connection is closed mid-body, so the master
//! never takes a truncated upload for a whole one), and the proxy answers the client 408.
//!
//! Long-lived input streams (`dcos task exec`'s `ATTACH_CONTAINER_INPUT`: keystrokes and
//! a heartbeat every 30 s) cannot keep any rate; the server exempts them from the rate
//! (not from the idle limit) while they hold a tunnel slot ([`IdleBody::exempt`]), so
//! that they, too, can never take every connection slot.
//!
//! Per frame this costs one clock read and an addition: the idle timer is not reset per
//! frame, it is re-armed only when it fires early.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::census::{Census, Field};

/// The error type of [`IdleBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyCut {
    /// No byte of the body arrived within the idle timeout.
    #[error(
        "no byte of the request body arrived for {}s (body_idle_timeout)",
        .0.as_secs_f64()
    )]
    Idle(Duration),
    /// The body fell behind the minimum rate.
    #[error(
        "the request body arrived slower than {min_rate} bytes/s after its first {}s \
         (body_min_rate); send it faster, or lower body_min_rate (0 turns the rate limit \
         off)",
        .grace.as_secs_f64()
    )]
    TooSlow {
        /// The minimum rate, in bytes per second.
        min_rate: u64,
        /// The grace before the rate applies (the idle timeout).
        grace: Duration,
    },
}

/// What an exempt body holds for as long as it lives (a tunnel slot).
pub type Hold = Box<dyn std::any::Any + Send + Sync>;

/// When a streamed request body was sent in full, shared with the response timeout:
/// the master's answer is only due once the whole request is in (an exec input stream
/// or a long upload is answered at its end), so the response timeout counts from then.
#[derive(Debug, Clone, Default)]
pub struct BodySent(Arc<OnceLock<Instant>>);

impl BodySent {
    /// When the body ended, if it has.
    pub fn at(&self) -> Option<Instant> {
        self.0.get().copied()
    }

    fn mark(&self) {
        let _ = self.0.set(Instant::now());
    }
}

pin_project! {
    /// A request body that fails with [`BodyCut`] when it stalls or trickles.
    pub struct IdleBody<B> {
        #[pin]
        inner: B,
        // Made at the first read (a body never read, e.g. an empty one, costs nothing);
        // boxed because the upstream client needs an `Unpin` body.
        timer: Option<Pin<Box<Sleep>>>,
        // When the last frame arrived, and when the first read happened.
        last: Option<Instant>,
        started: Option<Instant>,
        timeout: Duration,
        // Bytes per second, 0 for no rate limit.
        min_rate: u64,
        received: u64,
        // What the body keeps until it is dropped: the tunnel slot of an exempt body,
        // the server's count of bodies being read (`guard`), or both. One field, so
        // that the body (moved through every layer) stays small.
        hold: Option<Hold>,
        exempt: bool,
        sent: Option<BodySent>,
    }
}

impl<B> std::fmt::Debug for IdleBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleBody")
            .field("timeout", &self.timeout)
            .field("min_rate", &self.min_rate)
            .field("received", &self.received)
            .field("exempt", &self.exempt)
            .finish_non_exhaustive()
    }
}

impl<B> IdleBody<B> {
    /// `inner`, allowed to pause at most `timeout` between frames once read, and to
    /// send fewer than `min_rate` bytes per second (0: no rate limit) only within its
    /// first `timeout`.
    pub fn new(inner: B, timeout: Duration, min_rate: u64) -> Self {
        Self {
            inner,
            timer: None,
            last: None,
            started: None,
            timeout,
            min_rate,
            received: 0,
            hold: None,
            exempt: false,
            sent: None,
        }
    }

    /// The handle that tells when this body has been sent in full.
    pub fn sent(&mut self) -> BodySent
    where
        B: Body,
    {
        let sent = self.sent.get_or_insert_with(BodySent::default).clone();
        if self.inner.is_end_stream() {
            sent.mark();
        }
        sent
    }

    /// No rate limit for this body (the idle limit stays), for as long as it keeps
    /// `hold`.
    pub fn exempt(mut self, hold: Hold) -> Self {
        self.min_rate = 0;
        self.exempt = true;
        self.keep(hold);
        self
    }

    /// Keep `guard` until this body is dropped (the server counts bodies still being
    /// read this way).
    pub fn guard(mut self, guard: Hold) -> Self {
        self.keep(guard);
        self
    }

    fn keep(&mut self, hold: Hold) {
        self.hold = Some(match self.hold.take() {
            None => hold,
            Some(kept) => Box::new((kept, hold)),
        });
    }

    /// Whether this body is exempt from the rate limit.
    pub fn is_exempt(&self) -> bool {
        self.exempt
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let timeout = *this.timeout;
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                let now = Instant::now();
                let started = *this.started.get_or_insert(now);
                *this.last = Some(now);
                if let Some(Ok(f)) = &frame
                    && let Some(data) = f.data_ref()
                {
                    *this.received += data.remaining() as u64;
                    if *this.min_rate > 0 {
                        let allowed =
                            timeout.as_secs_f64() + *this.received as f64 / *this.min_rate as f64;
                        if now.duration_since(started).as_secs_f64() > allowed {
                            return Poll::Ready(Some(Err(Box::new(BodyCut::TooSlow {
                                min_rate: *this.min_rate,
                                grace: timeout,
                            }))));
                        }
                    }
                }
                if let Some(sent) = this.sent.as_ref()
                    && (frame.is_none() || this.inner.is_end_stream())
                {
                    sent.mark();
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = Instant::now();
                let last = *this.last.get_or_insert(now);
                this.started.get_or_insert(now);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last + timeout)));
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The timer fired: a real stall, or frames came since it was armed.
                    let due = this.last.unwrap_or(last) + timeout;
                    if Instant::now() >= due {
                        return Poll::Ready(Some(Err(Box::new(BodyCut::Idle(timeout)))));
                    }
                    timer.as_mut().reset(due);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's request body as the server hands it on: hyper's [`Incoming`], or none at
/// all for a request the server's own HTTP/1.1 path read (`crate::server`'s lean path
/// takes only requests that have no body), which costs no channel and no allocation.
#[derive(Debug)]
pub enum ClientBody {
    /// No body: nothing to read.
    Empty,
    /// The body hyper's server reads from the connection.
    Hyper(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Hyper(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Hyper(body) => body.size_hint(),
        }
    }
}

/// Whether a request to `path` with `headers` is a long-lived input stream, the shape
/// of `dcos task exec`'s `ATTACH_CONTAINER_INPUT` (reference §8): a chunked body (no
/// `Content-Length`) of `application/recordio` records sent to an agent's operator API,
/// `/agent/<id>/api/v1` (or the older `/slave/<id>/api/v1`; `path` may carry a prefix,
/// such as a path secret, before it). Such a body may be exempted from the rate limit;
/// anyone can send this shape, so the exemption is bounded by the tunnel slots it holds.
pub fn is_input_stream(path: &str, headers: &http::HeaderMap) -> bool {
    // Called for every request: the cheapest test that fails for a GET comes first (one
    // pass over the names for the three fields, no lookup of an absent one), and
    // nothing after a failed test is looked at.
    let census = Census::of(headers);
    census.has(Field::TransferEncoding)
        && !census.has(Field::ContentLength)
        && census.has(Field::ContentType)
        && headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
        && headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.as_bytes().get(..RECORDIO.len()))
            .is_some_and(|t| t.eq_ignore_ascii_case(RECORDIO.as_bytes()))
        && is_agent_api(path)
}

/// Whether `path` ends in `/agent/<id>/api/v1` or `/slave/<id>/api/v1` (one trailing
/// `/` allowed), the Mesos agent operator API as Admin Router exposes it.
fn is_agent_api(path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut back = path.rsplit('/');
    matches!(
        (back.next(), back.next(), back.next(), back.next()),
        (Some("v1"), Some("api"), Some(id), Some("agent" | "slave")) if !id.is_empty()
    )
}

/// Set on a request that has the shape of an input stream ([`is_input_stream`]) when
/// every tunnel slot is taken: it is answered 503 naming `max_tunnels` rather than
/// forwarded (it could only be cut later for falling behind the rate). Holds the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputStreamsFull(pub usize);

/// The content type of Mesos' streamed API calls.
const RECORDIO: &str = "application/recordio";

/// The [`BodyCut`] in `err`'s chain of sources, if any.
pub fn body_cut(err: &(dyn std::error::Error + 'static)) -> Option<BodyCut> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(cut) = e.downcast_ref::<BodyCut>() {
            return Some(*cut);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    use super::*;

    type Sender = mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>;

    fn channel_body(
        timeout: Duration,
        min_rate: u64,
    ) -> (Sender, IdleBody<impl Body<Data = Bytes, Error = BoxError>>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Result<Frame<Bytes>, BoxError>>();
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (
            tx,
            IdleBody::new(StreamBody::new(stream), timeout, min_rate),
        )
    }

    fn byte(i: u8) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from(vec![i])))
    }

    #[tokio::test]
    async fn a_body_that_stops_sending_fails_with_idle() {
        let timeout = Duration::from_millis(200);
        let (tx, mut body) = channel_body(timeout, 0);
        for i in 0..3 {
            tx.send(byte(i)).unwrap();
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from(vec![i]));
        }
        // Then nothing (the sender is still open): the body fails with Idle.
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(body_cut(&*err), Some(BodyCut::Idle(timeout)));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_that_is_never_idle_falls_behind_the_rate() {
        // One byte every 2 s never leaves the body idle for 10 s, but at 100 bytes/s it
        // is behind after 10 s and a few bytes.
        let timeout = Duration::from_secs(10);
        let (tx, mut body) = channel_body(timeout, 100);
        let mut seconds = 0;
        let err = loop {
            tx.send(byte(b'x')).unwrap();
            match body.frame().await.unwrap() {
                Ok(_) => {}
                Err(e) => break e,
            }
            tokio::time::advance(Duration::from_secs(2)).await;
            seconds += 2;
            assert!(seconds < 30, "never cut");
        };
        assert_eq!(
            body_cut(&*err),
            Some(BodyCut::TooSlow {
                min_rate: 100,
                grace: timeout
            })
        );
        assert!((10..=12).contains(&seconds), "cut after {seconds} s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_exempt_trickle_lives_on_but_still_dies_idle() {
        let timeout = Duration::from_secs(10);
        let (tx, body) = channel_body(timeout, 100);
        let mut body = body.exempt(Box::new(()));
        assert!(body.is_exempt());
        for _ in 0..30 {
            tx.send(byte(b'k')).unwrap();
            body.frame().await.unwrap().unwrap();
            tokio::time::advance(Duration::from_secs(9)).await;
        }
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(body_cut(&*err), Some(BodyCut::Idle(timeout)));
        drop(tx);
    }

    #[test]
    fn only_chunked_recordio_bodies_to_the_agent_api_are_input_streams() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        const AGENT: &str = "/agent/a1-S0/api/v1";
        let exec = [
            ("transfer-encoding", "chunked"),
            ("content-type", "application/recordio"),
            ("message-content-type", "application/json"),
        ];
        assert!(is_input_stream(AGENT, &headers(&exec)));
        assert!(is_input_stream(
            AGENT,
            &headers(&[
                ("transfer-encoding", "Chunked"),
                ("content-type", "Application/RecordIO; charset=x"),
            ])
        ));
        assert!(!is_input_stream(
            AGENT,
            &headers(&[("transfer-encoding", "chunked")])
        ));
        assert!(!is_input_stream(
            AGENT,
            &headers(&[
                ("content-length", "10"),
                ("content-type", "application/recordio"),
            ])
        ));
        assert!(!is_input_stream(
            AGENT,
            &headers(&[
                ("transfer-encoding", "chunked"),
                ("content-type", "application/json"),
            ])
        ));
        assert!(!is_input_stream(
            AGENT,
            &headers(&[
                ("transfer-encoding", "gzip"),
                ("content-type", "application/recordio"),
            ])
        ));
        // The agent operator API, under either name and behind a prefix; nothing else.
        for path in [
            "/slave/a1-S0/api/v1",
            "/agent/a1-S0/api/v1/",
            "/s3cret/agent/a1-S0/api/v1",
        ] {
            assert!(is_input_stream(path, &headers(&exec)), "{path}");
        }
        for path in [
            "/exec-input",
            "/mesos/api/v1",
            "/agent//api/v1",
            "/agent/a1/api/v1/x",
            "/agents/a1/api/v1",
            "/package/add",
            "/",
        ] {
            assert!(!is_input_stream(path, &headers(&exec)), "{path}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_body_is_never_cut() {
        let timeout = Duration::from_secs(1);
        let (tx, mut body) = channel_body(timeout, 1000);
        for _ in 0..100 {
            tx.send(Ok(Frame::data(Bytes::from(vec![0; 2000]))))
                .unwrap();
            body.frame().await.unwrap().unwrap();
            tokio::time::advance(Duration::from_millis(500)).await;
        }
        drop(tx);
        assert!(body.frame().await.is_none());
    }
}
