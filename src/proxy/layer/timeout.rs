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
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};
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
            timer: None,
        }
    }
}

/// The service of [`ResponseTimeoutLayer`].
#[derive(Debug)]
pub struct ResponseTimeout<S> {
    after: Duration,
    inner: S,
    /// This clone's timer (one clone per client connection), made at its first call.
    timer: Option<Arc<TimerSlot>>,
}

impl<S: Clone> Clone for ResponseTimeout<S> {
    /// A clone with a timer of its own (made at its first call): clones serve different
    /// connections, whose attempts may overlap.
    fn clone(&self) -> Self {
        Self {
            after: self.after,
            inner: self.inner.clone(),
            timer: None,
        }
    }
}

/// One connection's response timer, kept between its requests: a tokio `Sleep` made
/// once and moved forward for each attempt. Moving a registered timer's deadline later
/// is one atomic operation in tokio; a new `Sleep` per request took the time driver's
/// lock twice (registered at its first poll, removed when dropped). Measured with
/// `scripts/ir-per-request`: 27,552 to 27,075 instructions per request.
///
/// The attempt in flight holds the timer (taken out of the slot), and puts it back when
/// it ends; the attempts of one connection follow one another, so the slot is empty only
/// while one is in flight. A timer left registered fires at most once per timeout while
/// its connection is idle (by tokio's design), waking that connection's task for
/// nothing.
#[derive(Debug, Default)]
struct TimerSlot(AtomicPtr<Sleep>);

impl TimerSlot {
    /// The timer, if it is here.
    fn take(&self) -> Option<Pin<Box<Sleep>>> {
        let taken = self.0.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a non-null pointer here came from `Box::into_raw` in `put`, and the
        // swap gave this caller sole ownership of it. The `Sleep` was pinned in that
        // box and never left it (only the box's pointer moved).
        (!taken.is_null()).then(|| unsafe { Pin::new_unchecked(Box::from_raw(taken)) })
    }

    /// Keep `timer` for the next attempt.
    fn put(&self, timer: Pin<Box<Sleep>>) {
        // SAFETY: the `Sleep` stays where it is (in its box); only the box's pointer is
        // kept, and `take` (or `drop`) turns it back into the pinned box.
        let raw = Box::into_raw(unsafe { Pin::into_inner_unchecked(timer) });
        let before = self.0.swap(raw, Ordering::AcqRel);
        if !before.is_null() {
            // SAFETY: as in `take`: sole ownership of a pointer from `Box::into_raw`.
            drop(unsafe { Box::from_raw(before) });
        }
    }
}

impl Drop for TimerSlot {
    fn drop(&mut self) {
        drop(self.take());
    }
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
        let slot = self.timer.get_or_insert_with(Arc::default).clone();
        let due = Instant::now() + self.after;
        let sleep = match slot.take() {
            Some(mut sleep) => {
                sleep.as_mut().reset(due);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(due)),
        };
        TimeoutFuture {
            inner: self.inner.call(routed),
            sleep: Some(sleep),
            slot,
            sent,
            master,
            after: self.after,
        }
    }
}

pin_project! {
    /// The future of [`ResponseTimeout`]. Its timer goes back to the connection's slot
    /// when it is dropped.
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        // Always `Some` until dropped.
        sleep: Option<Pin<Box<Sleep>>>,
        slot: Arc<TimerSlot>,
        // The request body's end, when it was streamed.
        sent: Option<BodySent>,
        master: Master,
        after: Duration,
    }

    impl<F> PinnedDrop for TimeoutFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(sleep) = this.sleep.take() {
                this.slot.put(sleep);
            }
        }
    }
}

impl<F, R> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<R, ProxyError>>,
{
    type Output = Result<R, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        loop {
            ready!(sleep.as_mut().poll(cx));
            let due = match this.sent.as_ref().map(BodySent::at) {
                // Still sending the body: its own limits apply; look again later.
                Some(None) => Instant::now() + *this.after,
                Some(Some(end)) => end + *this.after,
                None => sleep.deadline(),
            };
            if Instant::now() >= due {
                return Poll::Ready(Err(ProxyError::GatewayTimeout {
                    url: this.master.upstream().url.clone(),
                    after: *this.after,
                }));
            }
            sleep.as_mut().reset(due);
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

    /// Answers its first call at once and never its second.
    #[derive(Clone)]
    struct FirstOnly(usize);

    impl Service<Routed<()>> for FirstOnly {
        type Response = ();
        type Error = ProxyError;
        type Future = Pin<Box<dyn Future<Output = Result<(), ProxyError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Routed<()>) -> Self::Future {
            self.0 += 1;
            if self.0 == 1 {
                Box::pin(async { Ok(()) })
            } else {
                Box::pin(pending())
            }
        }
    }

    fn slot_timer(svc: &ResponseTimeout<FirstOnly>) -> *mut Sleep {
        svc.timer
            .as_ref()
            .expect("a timer slot")
            .0
            .load(Ordering::Acquire)
    }

    /// One connection's timer is made once, held by the attempt in flight, given back
    /// after it, moved forward for the next attempt, and still runs out on time; a clone
    /// (another connection) gets its own.
    #[tokio::test]
    async fn the_timer_is_reused_between_attempts_and_still_runs_out() {
        let mut svc = ResponseTimeoutLayer::new(Duration::from_millis(20)).layer(FirstOnly(0));
        svc.call(routed()).await.unwrap();
        let first = slot_timer(&svc);
        assert!(!first.is_null(), "the timer was not given back");

        let second = svc.call(routed());
        assert!(
            slot_timer(&svc).is_null(),
            "the attempt in flight holds the timer"
        );
        let started = Instant::now();
        let err = second.await.unwrap_err();
        assert!(matches!(err, ProxyError::GatewayTimeout { .. }), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(slot_timer(&svc), first, "the same timer, given back again");

        let clone = svc.clone();
        assert!(clone.timer.is_none(), "a clone shares no timer");
    }

    #[tokio::test]
    async fn a_timely_answer_passes_through() {
        let inner = Mock::new(|_: Routed<()>| Ok::<_, ProxyError>(7));
        let svc = ResponseTimeoutLayer::new(Duration::from_secs(60)).layer(inner.clone());
        assert_eq!(svc.oneshot(routed()).await.unwrap(), 7);
        assert_eq!(inner.calls(), 1);
    }
}
