//! The client's request body on its way to the master, with an idle limit: once a body
//! has started to be read, each frame must follow the last within the body idle timeout,
//! or the body ends in a [`BodyIdle`] error. hyper's client then abandons the request to
//! the master (its connection is closed mid-body, so the master never takes a truncated
//! upload for a whole one), and the proxy answers the client 408.
//!
//! Why: once a request's headers are in, hyper's header read timeout no longer applies,
//! and a body that trickles or stops holds a connection slot (and a master connection)
//! for as long as the client likes. The timer starts at the first read, not at the
//! headers, because the body is first read once the master connection is ready.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// The error type of [`IdleBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// No byte of the request body arrived within the body idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no byte of the request body arrived for {}s (body_idle_timeout)",
    .0.as_secs_f64()
)]
pub struct BodyIdle(pub Duration);

pin_project! {
    /// A request body that fails with [`BodyIdle`] when it stalls.
    #[derive(Debug)]
    pub struct IdleBody<B> {
        #[pin]
        inner: B,
        // Made at the first read (a body never read, e.g. an empty one, costs nothing);
        // boxed because the upstream client needs an `Unpin` body.
        deadline: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
    }
}

impl<B> IdleBody<B> {
    /// `inner`, allowed to pause at most `timeout` between frames once read.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: None,
            timeout,
        }
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
        let this = self.project();
        let timeout = *this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                deadline.as_mut().reset(Instant::now() + timeout);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(BodyIdle(timeout)))))
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

/// The [`BodyIdle`] in `err`'s chain of sources, if any.
pub fn body_idle(err: &(dyn std::error::Error + 'static)) -> Option<BodyIdle> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(idle) = e.downcast_ref::<BodyIdle>() {
            return Some(*idle);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    #[tokio::test]
    async fn a_body_that_stops_sending_fails_with_body_idle() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Frame<Bytes>, BoxError>>();
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let timeout = Duration::from_millis(200);
        let mut body = IdleBody::new(StreamBody::new(stream), timeout);
        for i in 0..3 {
            tx.send(Ok(Frame::data(Bytes::from(vec![i])))).unwrap();
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from(vec![i]));
        }
        // Then nothing (the sender is still open): the body fails with BodyIdle.
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(body_idle(&*err), Some(BodyIdle(timeout)));
        drop(tx);
    }
}
