//! Metrics on the request path, without a lock: two small layers that only do relaxed
//! atomic additions into [`Metrics`].
//!
//! - [`MetricsLayer`] (at the top, under the sensitive-headers layer) counts every
//!   answer by method class and status class, and every answer the proxy made itself by
//!   its [`ErrorKind`] (found in the response's extensions, where local answers put it:
//!   see [`tag`]).
//! - [`UpstreamLatencyLayer`] (at the bottom, on the forwarding client) times the master
//!   until its response headers; a failure is not a latency and is not recorded.
//!
//! Each service holds an `Arc<Metrics>`; each future borrows nothing shared but a clone
//! of it (one reference-count increment) and an `Instant`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::Answered;
use crate::metrics::{ErrorKind, MethodClass, Metrics};

/// Mark `resp`, an answer the proxy made itself, with why (read by [`MetricsLayer`]).
pub fn tag<B>(mut resp: Response<B>, kind: ErrorKind) -> Response<B> {
    resp.extensions_mut().insert(kind);
    resp
}

/// Counts answers by method class, status class and (for local answers) error kind.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// Count into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        MetricsFuture {
            method: MethodClass::of(req.method()),
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project! {
    /// The future of [`MetricsService`].
    #[derive(Debug)]
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        method: MethodClass,
        metrics: Arc<Metrics>,
    }
}

impl<F, R, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(resp) = &result {
            this.metrics.request(*this.method, resp.status());
            if let Some(kind) = resp.extensions().get::<ErrorKind>() {
                this.metrics.error(*kind);
            }
        }
        Poll::Ready(result)
    }
}

/// Times the master until its response headers.
#[derive(Debug, Clone)]
pub struct UpstreamLatencyLayer {
    metrics: Arc<Metrics>,
}

impl UpstreamLatencyLayer {
    /// Record into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for UpstreamLatencyLayer {
    type Service = UpstreamLatency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UpstreamLatency {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`UpstreamLatencyLayer`].
#[derive(Debug, Clone)]
pub struct UpstreamLatency<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, Req, B> Service<Req> for UpstreamLatency<S>
where
    S: Service<Req, Response = Answered<B>>,
{
    type Response = Answered<B>;
    type Error = S::Error;
    type Future = LatencyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        LatencyFuture {
            inner: self.inner.call(req),
            started: Instant::now(),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project! {
    /// The future of [`UpstreamLatency`].
    #[derive(Debug)]
    pub struct LatencyFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        metrics: Arc<Metrics>,
    }
}

impl<F, B, E> Future for LatencyFuture<F>
where
    F: Future<Output = Result<Answered<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if result.is_ok() {
            this.metrics.upstream_latency(this.started.elapsed());
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Scrape;
    use crate::source::{Published, Snapshot};
    use http::StatusCode;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn answers_are_counted_by_class_and_local_ones_by_kind() {
        let metrics = Arc::new(Metrics::default());
        let svc = MetricsLayer::new(metrics.clone()).layer(tower::service_fn(
            |req: Request<()>| async move {
                let resp = if req.uri().path() == "/refused" {
                    let mut r = Response::new(());
                    *r.status_mut() = StatusCode::FORBIDDEN;
                    tag(r, ErrorKind::Refused)
                } else {
                    Response::new(())
                };
                Ok::<_, Infallible>(resp)
            },
        ));
        for (method, path) in [("GET", "/a"), ("DELETE", "/b"), ("GET", "/refused")] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            svc.clone().oneshot(req).await.unwrap();
        }
        let (published, _) = Published::new(Snapshot::Waiting("x".into()));
        let text = Scrape {
            metrics,
            source: Arc::new(published),
            logins: Arc::default(),
        }
        .render();
        for line in [
            r#"dcos_token_proxy_requests_total{method="read",status="2xx"} 1"#,
            r#"dcos_token_proxy_requests_total{method="write",status="2xx"} 1"#,
            r#"dcos_token_proxy_requests_total{method="read",status="4xx"} 1"#,
            r#"dcos_token_proxy_errors_total{kind="refused"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
    }
}
