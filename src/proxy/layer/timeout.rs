//! The response-header timeout: how long one attempt may wait for the master's response
//! headers (`upstream.response_timeout`). Once the headers are in, a streamed body takes
//! as long as it takes. Running out is [`ProxyError::GatewayTimeout`], whose 504 body
//! names the master, the setting and the likely cause.
//!
//! Hand-written: tower's `Timeout` answers with a boxed `Elapsed` error that says
//! nothing about the master, and tower-http's `TimeoutLayer` with an empty-bodied
//! status; this one is `tokio::time::timeout` around the inner future, unboxed. It sits
//! below the retry layer, so each attempt has its own timeout, as before.
//!
//! The time counts from the end of the request body, not from the start of the
//! attempt: a master answers an upload, or `dcos task exec`'s input stream
//! (`ATTACH_CONTAINER_INPUT`), only once the whole body is in, and that may take far
//! longer than the timeout. A body in flight has its own limits (idle timeout and
//! minimum rate, [`crate::upstream::IdleBody`]); while it flows the timer is re-armed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use http::Request;
use http_body_util::Either;
use tokio::time::{Instant, Sleep};

use super::{Master, Routed};
use crate::proxy::error::ProxyError;
use crate::upstream::idle::{BodySent, IdleBody};

/// A request body that may still be streaming when the attempt starts.
pub trait Streamed {
    /// When the body has been sent in full, or `None` for a body already in memory.
    fn sent(&mut self) -> Option<BodySent>;
}

impl<F, B: http_body::Body> Streamed for Either<F, IdleBody<B>> {
    fn sent(&mut self) -> Option<BodySent> {
        match self {
            Either::Left(_) => None,
            Either::Right(body) => Some(body.sent()),
        }
    }
}

impl Streamed for () {
    fn sent(&mut self) -> Option<BodySent> {
        None
    }
}

/// Bounds the wait for the master's response headers.
#[derive(Debug, Clone, Copy)]
pub struct ResponseTimeoutLayer {
    after: Duration,
}

impl ResponseTimeoutLayer {
    /// Give up on an attempt after `after` without response headers.
    pub fn new(after: Duration) -> Self {
        Self { after }
    }
}

impl<S> Layer<S> for ResponseTimeoutLayer {
    type Service = ResponseTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseTimeout {
            after: self.after,
            inner,
        }
    }
}

/// The service of [`ResponseTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct ResponseTimeout<S> {
    after: Duration,
    inner: S,
}

impl<S, B> Service<Routed<B>> for ResponseTimeout<S>
where
    S: Service<Routed<B>, Error = ProxyError>,
    B: Streamed,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut routed: Routed<B>) -> Self::Future {
        // For the message, should the time run out.
        let master = routed.master.clone();
        let sent = Request::body_mut(&mut routed.request).sent();
        TimeoutFuture {
            inner: self.inner.call(routed),
            sleep: tokio::time::sleep(self.after),
            sent,
            master,
            after: self.after,
        }
    }
}

pin_project! {
    /// The future of [`ResponseTimeout`].
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        // The request body's end, when it was streamed.
        sent: Option<BodySent>,
        master: Master,
        after: Duration,
    }
}

impl<F, R> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<R, ProxyError>>,
{
    type Output = Result<R, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        loop {
            ready!(this.sleep.as_mut().poll(cx));
            let due = match this.sent.as_ref().map(BodySent::at) {
                // Still sending the body: its own limits apply; look again later.
                Some(None) => Instant::now() + *this.after,
                Some(Some(end)) => end + *this.after,
                None => this.sleep.deadline(),
            };
            if Instant::now() >= due {
                return Poll::Ready(Err(ProxyError::GatewayTimeout {
                    url: this.master.upstream().url.clone(),
                    after: *this.after,
                }));
            }
            this.sleep.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::{Pending, pending};

    use http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::layer::testing::{Mock, master};

    /// A master that never answers.
    struct Silent;

    impl Service<Routed<()>> for Silent {
        type Response = ();
        type Error = ProxyError;
        type Future = Pending<Result<(), ProxyError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Routed<()>) -> Self::Future {
            pending()
        }
    }

    fn routed() -> Routed<()> {
        Routed::new(Request::new(()), master("https://master.example", None))
    }

    #[tokio::test]
    async fn no_response_headers_in_time_is_the_explanatory_504() {
        let svc = ResponseTimeoutLayer::new(Duration::from_millis(20)).layer(Silent);
        let err = svc.oneshot(routed()).await.unwrap_err();
        let resp = err.to_response();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        let text = String::from_utf8_lossy(resp.body());
        assert!(text.contains("https://master.example"), "{text}");
        assert!(text.contains("0.02s"), "{text}");
        assert!(text.contains("upstream.response_timeout"), "{text}");
    }

    #[tokio::test]
    async fn a_timely_answer_passes_through() {
        let inner = Mock::new(|_: Routed<()>| Ok::<_, ProxyError>(7));
        let svc = ResponseTimeoutLayer::new(Duration::from_secs(60)).layer(inner.clone());
        assert_eq!(svc.oneshot(routed()).await.unwrap(), 7);
        assert_eq!(inner.calls(), 1);
    }
}
