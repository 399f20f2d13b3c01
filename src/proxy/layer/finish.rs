//! Finishing: the master's answer (or the failure to get one) becomes the client's
//! response. Hop-by-hop fields are stripped (RFC 9110 §7.6.1), a `Location` pointing at
//! the master is rewritten to point at the proxy as the client addressed it (RFC 9110
//! §10.2.2), the response takes the client's HTTP version, and after
//! `101 Switching Protocols` (RFC 9110 §15.2.2) a tunnel joins the two connections. A
//! 401 gets a hint to run `dcos auth login`, at most once per [`LOGIN_HINT_INTERVAL`].
//! A [`ProxyError`] from below (502, 504, a client body that broke) is logged and
//! answered with its one-line explanation.
//!
//! This layer sits above the 401 retry, not below it as a first sketch had it: it sees
//! only the answer the client actually gets, so a refused first attempt that the retry
//! then recovers from gives no login hint, and the retry needs no copy of what the
//! client sent (`Host`, version) for its second attempt. Hand-written: these are the
//! proxy's own rules. Tunnels hold a [`Tunnels`] handle from the server, so that a
//! graceful shutdown waits for them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Either;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{Answered, ClientSide, Prepared, Retryable};
use crate::census::{Census, Field};
use crate::proxy::body::{Answer, local};
use crate::proxy::error::ProxyError;
use crate::proxy::headers::{restore_upgrade, strip_hop_by_hop_counted};
use crate::proxy::upgrade::{Tunnels, tunnel};

/// The minimum time between two "run `dcos auth login`" hints after a master 401.
pub const LOGIN_HINT_INTERVAL: Duration = Duration::from_secs(60);

/// What finishing needs besides the answer; shared by every request.
#[derive(Debug)]
pub struct Finishing {
    /// The host to put in rewritten `Location`s when a client sent no `Host`.
    fallback_host: HeaderValue,
    /// What clients put before every path (`/<secret>`, or empty).
    client_prefix: String,
    login_hint: RateLimit,
    tunnels: Tunnels,
}

/// Finishes each answer for the client.
#[derive(Debug, Clone)]
pub struct FinishLayer {
    shared: Arc<Finishing>,
}

impl FinishLayer {
    /// Rewrite `Location`s to `fallback_host` when a client sent no `Host`, with
    /// `client_prefix` (the guard's, `/<secret>` or empty) before the path; tunnels hold
    /// `tunnels`.
    pub fn new(fallback_host: HeaderValue, client_prefix: &str, tunnels: Tunnels) -> Self {
        Self {
            shared: Arc::new(Finishing {
                fallback_host,
                client_prefix: client_prefix.to_owned(),
                login_hint: RateLimit::new(LOGIN_HINT_INTERVAL),
                tunnels,
            }),
        }
    }
}

impl<S> Layer<S> for FinishLayer {
    type Service = FinishService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FinishService {
            shared: self.shared.clone(),
            inner,
            not_ready: None,
        }
    }
}

/// The service of [`FinishLayer`].
#[derive(Debug)]
pub struct FinishService<S> {
    shared: Arc<Finishing>,
    inner: S,
    /// Why the inner service could not get ready, for the next call to answer.
    not_ready: Option<ProxyError>,
}

impl<S: Clone> Clone for FinishService<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S, B, RB> Service<Prepared<B>> for FinishService<S>
where
    S: Service<Retryable<B>, Response = Answered<RB>, Error = ProxyError>,
{
    type Response = Response<Answer<RB>>;
    type Error = Infallible;
    type Future = FinishFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A failure to get ready is answered like any other failure from below: by the
        // next call, with its explanation.
        if let Err(err) = ready!(self.inner.poll_ready(cx)) {
            self.not_ready = Some(err);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, prepared: Prepared<B>) -> Self::Future {
        let (inner, failed) = match self.not_ready.take() {
            None => (Some(self.inner.call(prepared.next)), None),
            Some(err) => (None, Some(err)),
        };
        FinishFuture {
            inner,
            failed,
            client: Some(prepared.client),
            shared: self.shared.clone(),
        }
    }
}

pin_project! {
    /// The future of [`FinishService`].
    #[derive(Debug)]
    pub struct FinishFuture<F> {
        #[pin]
        inner: Option<F>,
        failed: Option<ProxyError>,
        client: Option<ClientSide>,
        shared: Arc<Finishing>,
    }
}

impl<F, RB> Future for FinishFuture<F>
where
    F: Future<Output = Result<Answered<RB>, ProxyError>>,
{
    type Output = Result<Response<Answer<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = match (this.failed.take(), this.inner.as_pin_mut()) {
            (Some(err), _) => Err(err),
            (None, Some(inner)) => ready!(inner.poll(cx)),
            (None, None) => panic!("FinishFuture polled after it completed"),
        };
        let Some(client) = this.client.take() else {
            panic!("FinishFuture polled after it completed");
        };
        Poll::Ready(Ok(match answered {
            Ok(answered) => finish(this.shared, answered, client),
            Err(err) => {
                let path = client.target.path();
                match err {
                    ProxyError::ClientBody { .. } => tracing::debug!(%path, "{err}"),
                    _ => tracing::warn!(%path, "{err}"),
                }
                local(err.to_response())
            }
        }))
    }
}

/// Turn the master's response into the client's: tunnel a protocol switch, strip
/// hop-by-hop fields, rewrite a `Location` pointing at the master, and pass the body on.
fn finish<B>(shared: &Finishing, answered: Answered<B>, client: ClientSide) -> Response<Answer<B>> {
    let Answered {
        response: mut resp,
        master,
        ..
    } = answered;
    let up = master.upstream();
    let status = resp.status();

    if status == StatusCode::UNAUTHORIZED && shared.login_hint.allow() {
        tracing::warn!(
            path = %client.target.path(),
            logged_in = up.auth.is_some(),
            "the master answered 401 Unauthorized: {}",
            up.origins.token_refresh_hint()
        );
    }

    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client.upgrade else {
            let err = ProxyError::BadGateway {
                url: up.url.clone(),
                cause: "the master switched protocols without being asked".into(),
            };
            return local(err.to_response());
        };
        let Some(hold) = shared.tunnels.try_hold() else {
            // Dropping the master's response closes its switched connection.
            let err = ProxyError::TooManyTunnels(shared.tunnels.max());
            tracing::warn!(path = %client.target.path(), "{err}");
            return local(err.to_response());
        };
        let master_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(tunnel(client_upgrade, master_upgrade, hold, client.target));
    }

    let (mut parts, body) = resp.into_parts();
    // Each hop has its own HTTP version: an HTTP/1.0 master must not downgrade (and
    // so close) the client's HTTP/1.1 connection.
    parts.version = client.version;
    // Only a protocol switch keeps its `Upgrade` (no lookup for any other answer).
    let agreed = if status == StatusCode::SWITCHING_PROTOCOLS {
        parts.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // The fields looked at here, found in one pass over the master's names; only
    // `Upgrade` and `Connection` are inserted after it, and not looked at again.
    let census = Census::of(&parts.headers);
    strip_hop_by_hop_counted(&mut parts.headers, census);
    if let Some(proto) = agreed {
        restore_upgrade(&mut parts.headers, proto);
    }
    let location = if census.has(Field::Location) {
        parts.headers.get(header::LOCATION)
    } else {
        None
    };
    if let Some(loc) = location {
        let host = client
            .host
            .as_ref()
            .unwrap_or(&shared.fallback_host)
            .to_str()
            .ok();
        let prefix = shared.client_prefix.as_str();
        if let Some(new) = host.and_then(|h| up.origin.rewrite_location(loc, h, prefix)) {
            parts.headers.insert(header::LOCATION, new);
        }
    }
    Response::from_parts(parts, Either::Left(body))
}

/// A lock-free "at most once per interval" gate.
#[derive(Debug)]
struct RateLimit {
    interval: Duration,
    created: Instant,
    /// Seconds since `created` of the last pass, plus one (0 = never).
    last: AtomicU64,
}

impl RateLimit {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            created: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// True at most once per interval.
    fn allow(&self) -> bool {
        self.allow_at(self.created.elapsed())
    }

    /// [`Self::allow`] at `since_created` after creation.
    fn allow_at(&self, since_created: Duration) -> bool {
        let now = since_created.as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.interval.as_secs() {
            return false;
        }
        // Of racing callers, only one wins the exchange.
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Uri, Version};
    use http_body_util::BodyExt;
    use tokio::sync::watch;
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::layer::testing::{Mock, master};
    use crate::proxy::layer::{Master, Routed};

    #[test]
    fn the_login_hint_is_given_at_most_once_per_interval() {
        let gate = RateLimit::new(Duration::from_secs(60));
        assert!(gate.allow_at(Duration::from_secs(0)));
        assert!(!gate.allow_at(Duration::from_secs(1)));
        assert!(!gate.allow_at(Duration::from_secs(59)));
        assert!(gate.allow_at(Duration::from_secs(61)));
        assert!(!gate.allow_at(Duration::from_secs(62)));
    }

    const MASTER: &str = "https://master.example";

    /// The text of a local answer.
    async fn local_text<B>(resp: Response<Answer<B>>) -> String {
        let Either::Right(body) = resp.into_body() else {
            panic!("not a local answer")
        };
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn layer(prefix: &str) -> (FinishLayer, watch::Sender<()>) {
        let (drain, _) = watch::channel(());
        let tunnels = Tunnels::new(drain.clone());
        let layer = FinishLayer::new(HeaderValue::from_static("127.0.0.1:8079"), prefix, tunnels);
        (layer, drain)
    }

    fn prepared(host: Option<&'static str>, version: Version) -> Prepared<()> {
        let master = master(MASTER, Some("own-token"));
        Prepared {
            client: ClientSide {
                version,
                upgrade: None,
                host: host.map(HeaderValue::from_static),
                target: Uri::from_static("/v2/events"),
            },
            next: Retryable {
                routed: Routed::new(Request::new(Either::Right(())), master),
                replay: None,
            },
        }
    }

    /// An inner service answering each request with `response()`.
    fn answering(response: fn() -> Response<()>) -> Mock<Retryable<()>, Answered<()>, ProxyError> {
        Mock::new(move |r: Retryable<()>| {
            let master: Master = r.routed.master;
            Ok(Answered {
                response: response(),
                master,
                sent: None,
            })
        })
    }

    fn redirect() -> Response<()> {
        Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .version(Version::HTTP_10)
            .header(header::LOCATION, "https://master.example/v2/events?x=1")
            .header(header::CONNECTION, "close, x-hop")
            .header("x-hop", "1")
            .header(header::TRANSFER_ENCODING, "chunked")
            .header("keep-alive", "timeout=5")
            .header("x-end", "2")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn hop_by_hop_fields_go_and_location_points_at_the_proxy() {
        let (layer, _drain) = layer("");
        let inner = answering(redirect);
        let svc = layer.layer(inner.clone());
        let resp = svc
            .oneshot(prepared(Some("localhost:8079"), Version::HTTP_11))
            .await
            .unwrap();
        assert_eq!(inner.calls(), 1);
        assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(resp.version(), Version::HTTP_11, "the client's version");
        let h = resp.headers();
        assert_eq!(h[header::LOCATION], "http://localhost:8079/v2/events?x=1");
        assert_eq!(h["x-end"], "2");
        for gone in ["connection", "x-hop", "transfer-encoding", "keep-alive"] {
            assert!(!h.contains_key(gone), "{gone} reached the client");
        }
    }

    #[tokio::test]
    async fn location_uses_the_fallback_host_and_the_path_secret_prefix() {
        let (layer, _drain) = layer("/s3cret-prefix");
        let svc = layer.layer(answering(redirect));
        let resp = svc.oneshot(prepared(None, Version::HTTP_10)).await.unwrap();
        assert_eq!(
            resp.headers()[header::LOCATION],
            "http://127.0.0.1:8079/s3cret-prefix/v2/events?x=1"
        );
        assert_eq!(resp.version(), Version::HTTP_10);
    }

    #[tokio::test]
    async fn an_unasked_protocol_switch_and_errors_from_below_are_explained() {
        let (layer, _drain) = layer("");
        let svc = layer.clone().layer(answering(|| {
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::UPGRADE, "websocket")
                .body(())
                .unwrap()
        }));
        let resp = svc.oneshot(prepared(None, Version::HTTP_11)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let text = local_text(resp).await;
        assert!(
            text.contains("switched protocols without being asked"),
            "{text}"
        );

        let failing = Mock::new(|_: Retryable<()>| -> Result<Answered<()>, ProxyError> {
            Err(ProxyError::BadGateway {
                url: MASTER.into(),
                cause: "connection refused".into(),
            })
        });
        let resp = layer
            .layer(failing)
            .oneshot(prepared(None, Version::HTTP_11))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let text = local_text(resp).await;
        assert!(
            text.contains(MASTER) && text.contains("connection refused"),
            "{text}"
        );
    }
}
