//! The access log: one line per request with method, path, status, latency, bytes and
//! how the response ended (complete, client closed, upstream error).
//!
//! Hand-written rather than tower-http's `Trace`: the line is written when the response
//! *body* ends (with the bytes counted and whether the client went away), which
//! [`ResponseBody`] does; this layer only starts the clock and hands the body its
//! [`AccessLog`]. The path comes from the guard's answer ([`Checked`]), never from the
//! request as it arrived, so a path secret (stripped by the guard) or a wrong guess at
//! one (redacted by the guard) can never reach the log.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::guard::Checked;
use crate::proxy::body::{AccessLog, Answer, ResponseBody};

/// Logs every request once its response is over.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLogService { inner }
    }
}

/// The service of [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLogService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for AccessLogService<S>
where
    S: Service<Request<B>, Response = Checked<Response<Answer>>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        AccessFuture {
            inner: self.inner.call(req),
            method,
            started,
        }
    }
}

pin_project! {
    /// The future of [`AccessLogService`].
    #[derive(Debug)]
    pub struct AccessFuture<F> {
        #[pin]
        inner: F,
        method: Method,
        started: Instant,
    }
}

impl<F> Future for AccessFuture<F>
where
    F: Future<Output = Result<Checked<Response<Answer>>, Infallible>>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(Checked { target, response }) = ready!(this.inner.poll(cx));
        let (parts, body) = response.into_parts();
        let log = AccessLog {
            method: std::mem::take(this.method),
            target,
            status: parts.status,
            started: *this.started,
            latency: this.started.elapsed(),
        };
        Poll::Ready(Ok(Response::from_parts(
            parts,
            ResponseBody::new(body, log),
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{StatusCode, Uri};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::body::local;
    use crate::proxy::layer::testing::Mock;

    /// Log lines written while the test runs.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn one_line_with_the_guards_target_and_the_inner_status_and_bytes() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);

        // The guard's answer names the target without the secret.
        let inner = Mock::new(|req: Request<()>| {
            assert_eq!(req.uri(), "/s3cr3t/x?q=1");
            let mut resp = Response::new(Bytes::from_static(b"teapot"));
            *resp.status_mut() = StatusCode::IM_A_TEAPOT;
            Ok::<_, Infallible>(Checked {
                target: Uri::from_static("/x?q=1"),
                response: local(resp),
            })
        });
        let svc = AccessLogLayer.layer(inner.clone());
        let req = Request::post("/s3cr3t/x?q=1").body(()).unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "teapot");
        assert_eq!(inner.calls(), 1);

        let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let logged: Vec<&str> = out.lines().filter(|l| l.contains("method=")).collect();
        assert_eq!(logged.len(), 1, "{out}");
        let line = logged[0];
        for field in [
            "method=POST",
            "path=/x ",
            "status=418",
            "bytes=6",
            "outcome=\"complete\"",
        ] {
            assert!(line.contains(field), "{field} not in {line}");
        }
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(!out.contains("q=1"), "{out}");
    }
}
