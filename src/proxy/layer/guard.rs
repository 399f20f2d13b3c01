//! The guard as a layer: [`Guard::check`] admits or refuses each request before anything
//! else looks at it. A refusal becomes the response right here and the inner service is
//! never called, so nothing refused is ever forwarded.
//!
//! Whatever the verdict, the answer carries the request target as the guard left it
//! ([`Checked`]): the path secret stripped, or the whole target redacted after a refusal
//! when a secret is configured. The access log takes its path from there and nowhere
//! else. Hand-written: tower-http has no policy layer of this shape, and the target has
//! to travel back up with the answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::guard::{Guard, HostMemo};
use crate::proxy::body::{Answer, local};

/// An answer and the request target as the guard left it: what the access log may show.
#[derive(Debug)]
pub struct Checked<R> {
    /// The target without the path secret (or redacted, after a refusal).
    pub target: Uri,
    /// The answer.
    pub response: R,
}

/// Admits or refuses requests with a [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardLayer {
    guard: Arc<Guard>,
}

impl GuardLayer {
    /// Check every request with `guard`.
    pub fn new(guard: Guard) -> Self {
        Self {
            guard: Arc::new(guard),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            guard: self.guard.clone(),
            host: HostMemo::default(),
            inner,
        }
    }
}

/// The service of [`GuardLayer`].
#[derive(Debug, Clone)]
pub struct GuardService<S> {
    guard: Arc<Guard>,
    /// The connection's last admitted `Host` (the stack is cloned per connection).
    host: HostMemo,
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for GuardService<S>
where
    S: Service<Request<B>, Response = Response<Answer<RB>>, Error = Infallible>,
{
    type Response = Checked<Response<Answer<RB>>>;
    type Error = Infallible;
    type Future = GuardFuture<S::Future, Response<Answer<RB>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let verdict = self.guard.check_remembering(&mut req, &mut self.host);
        // After the check: no path secret in it (and, on refusal, no guess at one).
        let target = req.uri().clone();
        match verdict {
            Ok(()) => GuardFuture::Admitted {
                inner: self.inner.call(req),
                target: Some(target),
            },
            Err(refusal) => {
                tracing::debug!(path = %target.path(), "refused: {refusal}");
                GuardFuture::Refused {
                    answer: Some(Checked {
                        target,
                        response: local(super::metrics::tag(
                            refusal.to_response(),
                            crate::metrics::ErrorKind::Refused,
                        )),
                    }),
                }
            }
        }
    }
}

pin_project! {
    /// The future of [`GuardService`].
    #[project = GuardProj]
    #[derive(Debug)]
    pub enum GuardFuture<F, R> {
        /// Refused: the answer is ready.
        Refused { answer: Option<Checked<R>> },
        /// Admitted: the inner service's answer, to be paired with the target.
        Admitted { #[pin] inner: F, target: Option<Uri> },
    }
}

impl<F, R> Future for GuardFuture<F, R>
where
    F: Future<Output = Result<R, Infallible>>,
{
    type Output = Result<Checked<R>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProj::Refused { answer } => match answer.take() {
                Some(a) => Poll::Ready(Ok(a)),
                None => panic!("GuardFuture polled after it completed"),
            },
            GuardProj::Admitted { inner, target } => {
                let Ok(response) = ready!(inner.poll(cx));
                Poll::Ready(Ok(Checked {
                    target: target.take().unwrap_or_default(),
                    response,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{StatusCode, header};
    use http_body_util::{BodyExt, Either};
    use tower::ServiceExt;

    use super::*;
    use crate::guard::{PathSecret, Policy};
    use crate::proxy::layer::testing::Mock;

    const SECRET: &str = "a-path-secret-0123456789abcdef";

    fn guard() -> Guard {
        let policy = Policy {
            path_secret: Some(PathSecret::new(SECRET, "test").unwrap()),
            ..Policy::default()
        };
        Guard::new(&policy, Some(8079))
    }

    fn ok() -> Mock<Request<()>, Response<Answer<()>>, Infallible> {
        Mock::new(|req: Request<()>| {
            assert_eq!(req.uri(), "/service/x?q=1", "the secret is stripped");
            Ok(Response::new(Either::Left(())))
        })
    }

    fn request(target: &str) -> Request<()> {
        Request::get(target)
            .header(header::HOST, "127.0.0.1:8079")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_refusal_is_answered_without_calling_the_inner_service() {
        let inner = ok();
        let svc = GuardLayer::new(guard()).layer(inner.clone());
        let guess = "/a-path-secret-0123456789abcdeX/service/x";
        let Checked { target, response } = svc.oneshot(request(guess)).await.unwrap();
        assert_eq!(
            inner.calls(),
            0,
            "a refused request reached the inner service"
        );
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let Either::Right(body) = response.into_body() else {
            panic!("a refusal has a local body")
        };
        let text = body.collect().await.unwrap().to_bytes();
        assert!(text.starts_with(b"dcos-token-proxy: "), "{text:?}");
        // What the access log gets: neither the secret nor the guess.
        assert_eq!(target, "/-redacted-");
        assert!(!String::from_utf8_lossy(&text).contains("0123456789"));
        let _: Bytes = text;
    }

    #[tokio::test]
    async fn an_admitted_request_goes_on_without_its_secret() {
        let inner = ok();
        let svc = GuardLayer::new(guard()).layer(inner.clone());
        let target = format!("/{SECRET}/service/x?q=1");
        let checked = svc.oneshot(request(&target)).await.unwrap();
        assert_eq!(inner.calls(), 1);
        assert_eq!(checked.response.status(), StatusCode::OK);
        assert_eq!(checked.target, "/service/x?q=1");
    }
}
