//! The body of an answer on its way back up the stack ([`Answer`]: the master's, or a
//! short local one), and the response body handed to hyper ([`ResponseBody`]): the
//! answer counted as it passes, with the request's access-log line written when it ends,
//! fails, or is dropped because the client went away. (The request body sent to the
//! master, [`RequestBody`], is the upstream client's type and lives in
//! [`crate::upstream`].)
//!
//! Frames are passed on the moment they arrive; nothing is buffered, so an SSE event or
//! RecordIO record reaches the client as soon as the master sends it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

/// The error type of [`ResponseBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

use crate::head_timeout::{AnswerMark, Answerable};
use crate::logging::AccessLine;
pub use crate::upstream::RequestBody;
use crate::upstream::UpstreamBody;

/// The body of an answer on its way back through the stack: the master's body (`B`,
/// [`UpstreamBody`] in the proxy), streamed, or a short local one (a refusal, an
/// error).
pub type Answer<B = UpstreamBody> = Either<B, Full<Bytes>>;

/// A local answer (a refusal, an error) as a response of the stack.
pub fn local<B>(resp: Response<Bytes>) -> Response<Answer<B>> {
    resp.map(|bytes| Either::Right(Full::new(bytes)))
}

/// What the access-log line says about a request.
#[derive(Debug)]
pub struct AccessLog {
    /// Request method.
    pub method: Method,
    /// The client's request target. Only its path is ever logged: the query may hold
    /// secrets. (A clone of hyper's parsed target: reference-counted, no copy.)
    pub target: Uri,
    /// Response status.
    pub status: StatusCode,
    /// When the request arrived.
    pub started: Instant,
    /// Time until the response headers were ready.
    pub latency: Duration,
}

impl AccessLog {
    /// Write the access-log line for this request: `bytes` sent, ended by `outcome`.
    pub(crate) fn emit(&self, bytes: u64, outcome: &'static str) {
        crate::logging::access(|| self.line(bytes, outcome));
    }

    /// The line's values, the duration measured now.
    fn line(&self, bytes: u64, outcome: &'static str) -> AccessLine<'_> {
        AccessLine {
            method: self.method.as_str(),
            path: self.target.path(),
            status: self.status.as_u16(),
            latency_ms: millis(self.latency),
            duration_ms: millis(self.started.elapsed()),
            bytes,
            outcome,
        }
    }
}

/// `d` in milliseconds, rounded to a tenth.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// A streamed response body that logs the request once it is over.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Answer,
    bytes: u64,
    log: Option<AccessLog>,
    /// Dropped with the body: the server's count of answered requests.
    answered: Option<AnswerMark>,
}

impl ResponseBody {
    /// Stream `inner` (the master's body, or a short local one) to the client, and
    /// write `log` once it is over.
    pub fn new(inner: Answer, log: AccessLog) -> Self {
        Self {
            inner,
            bytes: 0,
            log: Some(log),
            answered: None,
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        if let Some(log) = self.log.take() {
            log.emit(self.bytes, outcome);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "response body from the master failed mid-stream");
                this.finish("upstream_error");
            }
            Poll::Ready(None) => this.finish("complete"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Answerable for ResponseBody {
    fn carry(&mut self, mark: AnswerMark) {
        self.answered = Some(mark);
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Still unlogged: the client went away before the body ended (or the body
        // was never polled, as for HEAD, 204 and 304).
        let outcome = if self.inner.is_end_stream() {
            "complete"
        } else {
            "client_closed"
        };
        self.finish(outcome);
    }
}
