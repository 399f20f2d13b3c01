//! The admin listener (`--admin-listen ADDR`, off by default): health, readiness,
//! metrics and a way to stop, on its own port.
//!
//! It has **no Host allow-list** (container probes send the pod IP as `Host`) and it
//! never forwards anything to the master, so it carries no credential: it only reads
//! the published snapshot.
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 only while a token is held that has not expired ([`readiness`]);
//!   503 with the reason otherwise (no cluster yet, not logged in, expired, draining).
//! - `GET /metrics`: the Prometheus text exposition ([`crate::metrics::Scrape`]).
//! - `POST` or `GET /quitquitquit`: drain the proxy and exit 0 (for batch jobs whose main
//!   container is done).
//!
//! [`health`] is the client side, used by `dcos-token-proxy health`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::dcos::token::human_duration;
use crate::metrics::Scrape;
use crate::source::Snapshot;

/// How long an admin client may take to send its request head.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of `/metrics` (what `prometheus-client` writes).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} for the admin endpoints (--admin-listen): {error}; pick another \
     address or leave the flag out"
)]
pub struct AdminError {
    /// The address.
    pub addr: SocketAddr,
    /// The I/O error.
    pub error: std::io::Error,
}

/// Whether the proxy is ready: `Ok` (what it holds) while a token is held that has not
/// expired at `now`, `Err` (why not) otherwise.
pub fn readiness(snapshot: &Snapshot, now: SystemTime) -> Result<String, String> {
    let up = match snapshot {
        Snapshot::Waiting(why) => return Err(why.to_string()),
        Snapshot::Ready(up) => up,
    };
    if up.auth.is_none() {
        return Err(format!("not logged in to {}", up.url));
    }
    match &up.claims {
        Some(Ok(claims)) => match claims.remaining(now) {
            None => Ok(format!("token for {} (never expires)", up.url)),
            Some(Duration::ZERO) => Err(format!(
                "the token for {} has expired; waiting for a new one",
                up.url
            )),
            Some(left) => Ok(format!(
                "token for {} expires in {}",
                up.url,
                human_duration(left)
            )),
        },
        // Not a readable JWT: the master decides; it is held.
        _ => Ok(format!("token for {} (expiry unknown)", up.url)),
    }
}

/// What the admin endpoints read and signal.
#[derive(Debug)]
pub struct AdminState {
    /// Metrics and the published snapshot.
    pub scrape: Scrape,
    /// Notified once by `/quitquitquit`.
    pub quit: Arc<Notify>,
    /// Set when the proxy drains: `/readyz` answers 503.
    pub draining: AtomicBool,
}

impl AdminState {
    /// State for `scrape`, with a fresh quit signal.
    pub fn new(scrape: Scrape) -> Self {
        Self {
            scrape,
            quit: Arc::new(Notify::new()),
            draining: AtomicBool::new(false),
        }
    }
}

/// A bound admin listener.
#[derive(Debug)]
pub struct Admin {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Admin {
    /// Bind `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<Self, AdminError> {
        let listener =
            crate::listener::bind_tcp(addr).map_err(|error| AdminError { addr, error })?;
        let addr = listener
            .local_addr()
            .map_err(|error| AdminError { addr, error })?;
        Ok(Self { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until the task is dropped.
    pub async fn serve(self, state: Arc<AdminState>) {
        tracing::info!(listen = %self.addr, "admin endpoints ready (/healthz /readyz /metrics /quitquitquit)");
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!("admin accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| route(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn route(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match (req.uri().path(), read) {
        ("/healthz", true) => text(StatusCode::OK, "ok\n"),
        ("/readyz", true) => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n")
            } else {
                match readiness(&state.scrape.source.load(), SystemTime::now()) {
                    Ok(what) => text(StatusCode::OK, format!("ready: {what}\n")),
                    Err(why) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                }
            }
        }
        ("/metrics", true) => {
            let mut r = text(StatusCode::OK, state.scrape.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            r
        }
        ("/quitquitquit", _) if read || req.method() == Method::POST => {
            tracing::info!("/quitquitquit: draining and exiting");
            state.draining.store(true, Ordering::Relaxed);
            state.quit.notify_one();
            text(StatusCode::OK, "draining\n")
        }
        ("/healthz" | "/readyz" | "/metrics", false) => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /healthz /readyz /metrics /quitquitquit\n",
        ),
    })
}

pub mod health {
    //! `dcos-token-proxy health`: ask a proxy's `/readyz` once, or until it is ready.

    use std::time::Duration;

    use bytes::Bytes;
    use http::Uri;
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::time::Instant;

    /// How long one probe may take.
    pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
    /// The pause between two probes with `--wait`.
    pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
    /// The most of the answer read.
    const MAX_ANSWER: usize = 4096;

    /// Why the proxy is not (yet) ready.
    #[derive(Debug, thiserror::Error)]
    pub enum HealthError {
        /// `--url` is not an http:// URL.
        #[error("--url {0}: expected the admin listener's http://HOST:PORT")]
        BadUrl(String),
        /// No answer.
        #[error("{url}: {cause}")]
        Unreachable {
            /// The probed URL.
            url: String,
            /// Why.
            cause: String,
        },
        /// An answer other than 200.
        #[error("{url}: {status} {body}")]
        NotReady {
            /// The probed URL.
            url: String,
            /// Its status.
            status: u16,
            /// Its body (the reason).
            body: String,
        },
    }

    /// Probe `<base>/readyz` once; `Ok` with the proxy's answer when it is ready.
    pub async fn probe(base: &str) -> Result<String, HealthError> {
        let url = format!("{}/readyz", base.trim_end_matches('/'));
        let uri: Uri = url
            .parse()
            .map_err(|_| HealthError::BadUrl(base.to_owned()))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(HealthError::BadUrl(base.to_owned()));
        }
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let unreachable = |cause: String| HealthError::Unreachable {
            url: url.clone(),
            cause,
        };
        let exchange = async {
            let resp = client
                .get(uri)
                .await
                .map_err(|e| unreachable(format!("{e}")))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
                .unwrap_or_default();
            Ok::<_, HealthError>((status, body))
        };
        let (status, body) = tokio::time::timeout(PROBE_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())))??;
        if status.is_success() {
            Ok(body)
        } else {
            Err(HealthError::NotReady {
                url,
                status: status.as_u16(),
                body,
            })
        }
    }

    /// Probe until ready or until `wait` has passed (once without `wait`); the last
    /// error when it never was.
    pub async fn check(base: &str, wait: Option<Duration>) -> Result<String, HealthError> {
        let deadline = Instant::now() + wait.unwrap_or(Duration::ZERO);
        loop {
            match probe(base).await {
                Ok(answer) => return Ok(answer),
                Err(e @ HealthError::BadUrl(_)) => return Err(e),
                Err(e) if Instant::now() + PROBE_INTERVAL > deadline => return Err(e),
                Err(_) => tokio::time::sleep(PROBE_INTERVAL).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcos::config::ClusterConfig;
    use crate::upstream::{ClientOptions, Upstream};
    use base64::Engine;

    fn upstream(token: Option<String>) -> Upstream {
        let cluster = ClusterConfig::for_test("http://127.0.0.1:9", token.as_deref());
        Upstream::new(&cluster, &ClientOptions::default()).unwrap()
    }

    fn jwt(exp: u64) -> String {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"uid":"sa","exp":{exp}}}"#));
        format!("e30.{p}.c2ln")
    }

    #[test]
    fn ready_only_with_a_token_that_has_not_expired() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let waiting = Snapshot::Waiting("no cluster set up: run `dcos cluster setup`".into());
        assert!(
            readiness(&waiting, at(0))
                .unwrap_err()
                .contains("dcos cluster setup")
        );
        let none = Snapshot::Ready(upstream(None));
        assert!(
            readiness(&none, at(0))
                .unwrap_err()
                .contains("not logged in")
        );
        let held = Snapshot::Ready(upstream(Some(jwt(1000))));
        assert!(
            readiness(&held, at(900))
                .unwrap()
                .contains("expires in 1m40s")
        );
        assert!(readiness(&held, at(1000)).unwrap_err().contains("expired"));
        let forever = Snapshot::Ready(upstream(Some("a.b.c".into())));
        assert!(readiness(&forever, at(0)).is_ok());
    }
}
