//! The 401 re-read and single retry. When the master refuses the proxy's token with 401,
//! the config on disk is re-read at once ([`Published::reread`], which recovers from a
//! missed file event); if a different token for the same master turns up, the request
//! is sent once more with it, and whatever the master answers then (a second 401
//! included) is the answer. Only replayable requests are retried: no body or a small
//! one held in memory, the proxy's own credentials, and a token source that a re-read
//! can renew (see [`super::prepare`]). A small body is copied before the first attempt;
//! a request without a body is not copied at all: the forwarding layer gives its head
//! back with the 401 ([`Routed::hand_back`], [`Answered::sent`]).
//!
//! Hand-written rather than `tower::retry`: that needs the request to be cloneable
//! before every attempt and its policy decides to retry before any re-read has
//! happened, while here the decision depends on what the re-read finds (no fresher
//! token: the first 401 is returned as is), the copy exists only for replayable
//! requests with a body and is made once, by the prepare layer, and the second attempt carries a
//! different snapshot. `tower::retry` also clones the whole inner stack per request.
//! Here the common path (no 401) is the inner future itself, unboxed; only the re-read,
//! an `async fn` of the source, is boxed, and only after a 401.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::StatusCode;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{Answered, Master, Replay, Retryable, Routed};
use crate::proxy::body::RequestBody;
use crate::proxy::error::ProxyError;
use crate::source::Published;

/// Retries a refused request once with a fresher token.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    source: Arc<Published>,
}

impl RetryLayer {
    /// Ask `source` for a re-read after a 401.
    pub fn new(source: Arc<Published>) -> Self {
        Self { source }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = RetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            source: self.source.clone(),
            inner,
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct RetryService<S> {
    source: Arc<Published>,
    inner: S,
}

impl<S, B, RB> Service<Retryable<B>> for RetryService<S>
where
    S: Service<Routed<RequestBody<B>>, Response = Answered<RB>, Error = ProxyError> + Clone,
{
    type Response = Answered<RB>;
    type Error = ProxyError;
    type Future = RetryFuture<S, B, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Retryable<B>) -> Self::Future {
        let hand_back = req.routed.hand_back;
        let future = self.inner.call(req.routed);
        match (req.replay, hand_back) {
            (None, false) => RetryFuture::Once { future },
            (replay, _) => RetryFuture::First {
                future,
                again: Some(Box::new(Again {
                    replay,
                    inner: self.inner.clone(),
                    source: self.source.clone(),
                })),
            },
        }
    }
}

/// What a second attempt needs.
#[derive(Debug)]
pub struct Again<S> {
    /// The copy, or `None` until a 401 gives the request's head back.
    replay: Option<Replay>,
    inner: S,
    source: Arc<Published>,
}

/// The re-read after a 401: a fresher snapshot for the same master, if one turned up.
type Reread = Pin<Box<dyn Future<Output = Option<Master>> + Send>>;

pin_project! {
    /// The future of [`RetryService`].
    #[project = RetryProj]
    pub enum RetryFuture<S, B, RB>
    where
        S: Service<Routed<RequestBody<B>>>,
    {
        /// Not replayable: the one attempt.
        Once { #[pin] future: S::Future },
        /// The first attempt of a replayable request.
        First { #[pin] future: S::Future, again: Option<Box<Again<S>>> },
        /// Refused with 401: re-reading, the first answer kept in case nothing changed.
        Rereading {
            reread: Reread,
            first: Option<Box<Answered<RB>>>,
            again: Option<Box<Again<S>>>,
        },
        /// Waiting for the inner service to be ready for the second attempt.
        Sending { inner: S, request: Option<Box<Routed<RequestBody<B>>>> },
        /// The second and last attempt.
        Second { #[pin] future: S::Future },
    }
}

impl<S, B, RB> Future for RetryFuture<S, B, RB>
where
    S: Service<Routed<RequestBody<B>>, Response = Answered<RB>, Error = ProxyError>,
{
    type Output = Result<Answered<RB>, ProxyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                RetryProj::Once { future } | RetryProj::Second { future } => {
                    return future.poll(cx);
                }
                RetryProj::First { future, again } => {
                    let mut answered = match ready!(future.poll(cx)) {
                        Ok(a) if a.response.status() == StatusCode::UNAUTHORIZED => a,
                        other => return Poll::Ready(other),
                    };
                    let Some(mut again) = again.take() else {
                        panic!("RetryFuture polled after it completed");
                    };
                    if again.replay.is_none() {
                        again.replay = answered.sent.take().map(|head| *head);
                    }
                    if again.replay.is_none() {
                        // Nothing to send again (no head came back).
                        return Poll::Ready(Ok(answered));
                    }
                    let reread = Box::pin(fresher(again.source.clone(), answered.master.clone()));
                    self.set(RetryFuture::Rereading {
                        reread,
                        first: Some(Box::new(answered)),
                        again: Some(again),
                    });
                }
                RetryProj::Rereading {
                    reread,
                    first,
                    again,
                } => {
                    let fresher = ready!(reread.as_mut().poll(cx));
                    let (Some(first), Some(again)) = (first.take(), again.take()) else {
                        panic!("RetryFuture polled after it completed");
                    };
                    let (Some(master), Some(replay)) = (fresher, again.replay) else {
                        return Poll::Ready(Ok(*first));
                    };
                    tracing::info!(
                        path = %replay.uri.path(),
                        "the master refused the old token; retrying once with the token \
                         just read from disk"
                    );
                    drop(first);
                    // The copy has the fresher token already.
                    let request = Routed::new(replay.into_request(master.upstream()), master);
                    self.set(RetryFuture::Sending {
                        inner: again.inner,
                        request: Some(Box::new(request)),
                    });
                }
                RetryProj::Sending { inner, request } => {
                    ready!(inner.poll_ready(cx))?;
                    let Some(request) = request.take() else {
                        panic!("RetryFuture polled after it completed");
                    };
                    let future = inner.call(*request);
                    self.set(RetryFuture::Second { future });
                }
            }
        }
    }
}

/// After the master refused the token `used` carried: re-read the config now, and
/// return the new snapshot (of the same cluster: the current one, or the one asked for
/// by name) if it has a different token for the same master.
async fn fresher(source: Arc<Published>, used: Master) -> Option<Master> {
    let current = source.reread().await?;
    let now = match used.cluster() {
        None => Master::new(current).ok()?,
        Some(id) => Master::named(source.named(id)?, id.clone()).ok()?,
    };
    let (up, old) = (now.upstream(), used.upstream());
    let fresher = up.url == old.url && up.auth.is_some() && up.auth != old.auth;
    fresher.then_some(now)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use http::{HeaderMap, Method, Request, Response, Uri, header};
    use http_body_util::{Either, Full};
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::layer::testing::{Mock, master, upstream};
    use crate::source::Snapshot;

    const URL: &str = "http://master.example";

    /// A source whose re-read publishes a master with `token` (counted in the result).
    fn source(token: &'static str) -> (Arc<Published>, Arc<Mutex<usize>>) {
        let (published, mut rereads) = Published::new(Snapshot::Ready(upstream(URL, Some("old"))));
        let published = Arc::new(published);
        let count = Arc::new(Mutex::new(0));
        let (p, c) = (published.clone(), count.clone());
        tokio::spawn(async move {
            while let Some(done) = rereads.recv().await {
                *c.lock().unwrap() += 1;
                p.store(Snapshot::Ready(upstream(URL, Some(token))));
                let _ = done.send(());
            }
        });
        (published, count)
    }

    type MasterMock = Mock<Routed<RequestBody<()>>, Answered<()>, ProxyError>;

    /// An inner service answering every attempt with `status`, recording the
    /// `Authorization` each carried; as the forwarding layer, it gives the request's
    /// head back with a 401 when asked to.
    fn master_answering(
        status: StatusCode,
    ) -> (MasterMock, mpsc::UnboundedReceiver<Option<String>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mock = Mock::new(move |r: Routed<RequestBody<()>>| {
            let auth = r.request.headers().get(header::AUTHORIZATION);
            let _ = tx.send(auth.and_then(|v| v.to_str().ok()).map(String::from));
            let mut response = Response::new(());
            *response.status_mut() = status;
            let sent = (r.hand_back && status == StatusCode::UNAUTHORIZED).then(|| {
                let (head, _) = r.request.into_parts();
                Box::new(Replay::of_head(head))
            });
            Ok(Answered {
                response,
                master: r.master,
                sent,
            })
        });
        (mock, rx)
    }

    fn replayable() -> Retryable<()> {
        let uri = Uri::from_static("http://master.example/v2/apps");
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "token=old".parse().unwrap());
        let mut request = Request::new(Either::Left(Full::new(Bytes::from_static(b"{}"))));
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        Retryable {
            routed: Routed::new(request, master(URL, Some("old"))),
            replay: Some(Replay {
                method: Method::POST,
                uri,
                headers,
                body: Bytes::from_static(b"{}"),
            }),
        }
    }

    #[tokio::test]
    async fn a_replayable_401_is_retried_exactly_once_and_a_second_401_stands() {
        let (published, rereads) = source("new");
        let (inner, mut seen) = master_answering(StatusCode::UNAUTHORIZED);
        let svc = RetryLayer::new(published).layer(inner.clone());
        let answered = svc.oneshot(replayable()).await.unwrap();
        assert_eq!(answered.response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(inner.calls(), 2, "one attempt and exactly one retry");
        assert_eq!(*rereads.lock().unwrap(), 1);
        assert_eq!(seen.recv().await.unwrap().as_deref(), Some("token=old"));
        assert_eq!(seen.recv().await.unwrap().as_deref(), Some("token=new"));
        // The answer says which snapshot it came from: the fresher one.
        let auth = answered.master.upstream().auth.clone();
        assert_eq!(auth.unwrap(), "token=new");
    }

    /// A request without a body is not copied: its head comes back with the 401, and
    /// the retry sends it with the fresher token (its own, stale one replaced).
    #[tokio::test]
    async fn a_bodiless_request_is_retried_from_the_head_its_401_gives_back() {
        let (published, rereads) = source("new");
        let (inner, mut seen) = master_answering(StatusCode::UNAUTHORIZED);
        let svc = RetryLayer::new(published).layer(inner.clone());
        let mut request = Request::new(Either::Left(Full::default()));
        *request.uri_mut() = Uri::from_static("/v2/apps");
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, "token=old".parse().unwrap());
        let mut routed = Routed::new(request, master(URL, Some("old")));
        routed.hand_back = true;
        let req = Retryable {
            routed,
            replay: None,
        };
        let answered = svc.oneshot(req).await.unwrap();
        assert_eq!(inner.calls(), 2, "one attempt and exactly one retry");
        assert_eq!(*rereads.lock().unwrap(), 1);
        assert_eq!(seen.recv().await.unwrap().as_deref(), Some("token=old"));
        assert_eq!(seen.recv().await.unwrap().as_deref(), Some("token=new"));
        assert_eq!(answered.response.status(), StatusCode::UNAUTHORIZED);
        assert!(answered.sent.is_none(), "the second 401 stands as is");
    }

    #[tokio::test]
    async fn a_streamed_request_is_not_retried() {
        let (published, rereads) = source("new");
        let (inner, _seen) = master_answering(StatusCode::UNAUTHORIZED);
        let svc = RetryLayer::new(published).layer(inner.clone());
        let mut req = replayable();
        req.replay = None;
        let answered = svc.oneshot(req).await.unwrap();
        assert_eq!(answered.response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(inner.calls(), 1);
        assert_eq!(
            *rereads.lock().unwrap(),
            0,
            "no re-read without a replay copy"
        );
    }

    #[tokio::test]
    async fn no_retry_when_the_reread_finds_the_same_token_or_the_first_answer_is_not_401() {
        let (published, rereads) = source("old");
        let (inner, _seen) = master_answering(StatusCode::UNAUTHORIZED);
        let svc = RetryLayer::new(published.clone()).layer(inner.clone());
        let answered = svc.oneshot(replayable()).await.unwrap();
        assert_eq!(answered.response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(inner.calls(), 1);
        assert_eq!(*rereads.lock().unwrap(), 1);

        let (inner, _seen) = master_answering(StatusCode::OK);
        let svc = RetryLayer::new(published).layer(inner.clone());
        let answered = svc.oneshot(replayable()).await.unwrap();
        assert_eq!(answered.response.status(), StatusCode::OK);
        assert_eq!(inner.calls(), 1);
        assert_eq!(*rereads.lock().unwrap(), 1, "no re-read after a 200");
    }
}
