//! The request pipeline, read top to bottom: let the [`Guard`] refuse or admit the
//! request (nothing refused is ever forwarded), load the current snapshot, map the target
//! onto the master, fix the headers, forward with a response-header timeout, and stream
//! the answer back (or tunnel it, after `101 Switching Protocols`).
//!
//! The only shared state touched per request is one atomic load of the snapshot
//! ([`crate::source::Published::load`]); no lock, no I/O and no config parsing happen
//! here. The one exception is off the normal path: when the master refuses the proxy's
//! token with 401, the request asks for an immediate re-read of the config, and if a
//! different token for the same master turns up, it is retried once with it. Only
//! requests that can be replayed are retried: no body, or a body of at most
//! [`MAX_REPLAY_BODY`] bytes announced by `Content-Length` (buffered before sending).
//! Streams, chunked uploads and upgrades are never replayed.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::body::{AccessLog, ResponseBody};
use super::error::ProxyError;
use super::headers::{
    Credentials, apply_authorization, restore_upgrade, strip_hop_by_hop, upgrade_request,
};
use super::upgrade::tunnel;
use crate::guard::Guard;
use crate::source::{Published, Snapshot};
use crate::types::ClientAuth;
use crate::upstream::{RequestBody, Upstream};

/// The minimum time between two "run `dcos auth login`" hints after a master 401.
const LOGIN_HINT_INTERVAL: Duration = Duration::from_secs(60);

/// The largest request body held in memory so that the request can be retried after a
/// 401 with a freshly read token. Larger or unsized bodies are streamed, never held.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// State shared by every request: immutable but for the snapshot, the drain signal and
/// the login-hint gate, all lock-free.
#[derive(Debug)]
pub struct Shared {
    /// The current snapshot: swapped whole when the config changes, loaded per request.
    pub source: Arc<Published>,
    /// The client `Authorization` policy.
    pub client_auth: ClientAuth,
    /// How long to wait for the master's response headers.
    pub response_timeout: Duration,
    /// Shutdown signal and in-flight tracking: every connection and tunnel holds a
    /// receiver; `send` asks them to wind down, `closed` waits until they have.
    pub drain: watch::Sender<()>,
    /// The host to put in rewritten `Location`s when a client sent no `Host`.
    pub fallback_host: HeaderValue,
    /// Which requests may pass (Host, Origin, path secret, filters).
    pub guard: Guard,
    login_hint: RateLimit,
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

impl Shared {
    /// Shared state serving the snapshots of `source` to the requests `guard` admits.
    pub fn new(
        source: Arc<Published>,
        guard: Guard,
        client_auth: ClientAuth,
        response_timeout: Duration,
        fallback_host: HeaderValue,
    ) -> Self {
        Self {
            source,
            client_auth,
            response_timeout,
            drain: watch::channel(()).0,
            fallback_host,
            guard,
            login_hint: RateLimit::new(LOGIN_HINT_INTERVAL),
        }
    }
}

/// Handle one client request. Never fails: every problem becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    // First, before anything is forwarded. Afterwards the target holds no path secret.
    let admitted = shared.guard.check(&mut req);
    let access = AccessLog {
        method: req.method().clone(),
        target: req.uri().clone(),
        status: StatusCode::OK,
        started,
        latency: Duration::ZERO,
    };
    if let Err(refusal) = admitted {
        tracing::debug!(path = %access.target.path(), "refused: {refusal}");
        return Ok(local_response(refusal.to_response(), access));
    }
    let snapshot = shared.source.load();
    let up = match &*snapshot {
        Snapshot::Ready(up) => up,
        Snapshot::Waiting(why) => {
            return Ok(local_error(&ProxyError::Unconfigured(why.clone()), access));
        }
    };

    let client_version = req.version();
    let upgrade = upgrade_request(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let client_host = req.headers().get(header::HOST).cloned();

    let target = match up.target(req.uri().path_and_query()) {
        Ok(t) => t,
        Err(e) => {
            let err = ProxyError::BadRequest(e.to_string());
            return Ok(local_error(&err, access));
        }
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = target;
    parts.version = Version::HTTP_11;
    let credentials = prepare_headers(&mut parts.headers, up, shared.client_auth, upgrade);
    let (body, replay) =
        match request_body(body, client_upgrade.is_some(), shared.response_timeout).await {
            Ok(b) => b,
            Err(err) => {
                tracing::debug!(path = %access.target.path(), "{err}");
                return Ok(local_error(&err, access));
            }
        };
    // Kept only for a request that may be retried with a fresh token after a 401.
    let retry = replay
        .filter(|_| credentials == Credentials::Proxy)
        .map(|body| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body,
        });

    let resp = match forward(&shared, up, Request::from_parts(parts, body), &access).await {
        Ok(resp) => resp,
        Err(err) => return Ok(local_error(&err, access)),
    };
    let client = ClientSide {
        version: client_version,
        upgrade: client_upgrade,
        host: client_host,
    };
    if resp.status() == StatusCode::UNAUTHORIZED
        && let Some(retry) = retry
        && let Some(fresher) = fresher_token(&shared, up).await
        && let Some(new_up) = fresher.upstream()
    {
        tracing::info!(
            path = %access.target.path(),
            "the master refused the old token; retrying once with the token just read from disk"
        );
        drop(resp);
        return Ok(
            match forward(&shared, new_up, retry.into_request(new_up), &access).await {
                Ok(resp) => finish(&shared, new_up, resp, client, access),
                Err(err) => local_error(&err, access),
            },
        );
    }
    Ok(finish(&shared, up, resp, client, access))
}

/// What the response side needs to know about the client's request.
struct ClientSide {
    version: Version,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    host: Option<HeaderValue>,
}

/// Turn the master's response into the client's: tunnel a protocol switch, strip
/// hop-by-hop fields, rewrite a `Location` pointing at the master, and stream the body.
fn finish(
    shared: &Shared,
    up: &Upstream,
    mut resp: Response<Incoming>,
    client: ClientSide,
    access: AccessLog,
) -> Response<ResponseBody> {
    let status = resp.status();
    let mut access = with_status(access, status);

    if status == StatusCode::UNAUTHORIZED && shared.login_hint.allow() {
        tracing::warn!(
            path = %access.target.path(),
            logged_in = up.auth.is_some(),
            "the master answered 401 Unauthorized: run `dcos auth login` to get a fresh token"
        );
    }

    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client.upgrade else {
            let err = ProxyError::BadGateway {
                url: up.url.clone(),
                cause: "the master switched protocols without being asked".into(),
            };
            return local_error(&err, access);
        };
        let master_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(tunnel(
            client_upgrade,
            master_upgrade,
            shared.drain.subscribe(),
            access.target.clone(),
        ));
    }

    let (mut parts, body) = resp.into_parts();
    // Each hop has its own HTTP version: an HTTP/1.0 master must not downgrade (and
    // so close) the client's HTTP/1.1 connection.
    parts.version = client.version;
    let agreed = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(proto)) = (status, agreed) {
        restore_upgrade(&mut parts.headers, proto);
    }
    if let Some(loc) = parts.headers.get(header::LOCATION) {
        let host = client
            .host
            .as_ref()
            .unwrap_or(&shared.fallback_host)
            .to_str()
            .ok();
        let prefix = shared.guard.client_prefix();
        if let Some(new) = host.and_then(|h| up.origin.rewrite_location(loc, h, prefix)) {
            parts.headers.insert(header::LOCATION, new);
        }
    }
    access.latency = access.started.elapsed();
    Response::from_parts(parts, ResponseBody::upstream(body, access))
}

/// Send `req` to the master, waiting at most the response timeout for its headers.
async fn forward(
    shared: &Shared,
    up: &Upstream,
    req: Request<RequestBody>,
    access: &AccessLog,
) -> Result<Response<Incoming>, ProxyError> {
    match tokio::time::timeout(shared.response_timeout, up.client.request(req)).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => {
            let err = ProxyError::upstream(&up.url, &e);
            match err {
                ProxyError::ClientBody { .. } => {
                    tracing::debug!(path = %access.target.path(), "{err}")
                }
                _ => tracing::warn!(path = %access.target.path(), "{err}"),
            }
            Err(err)
        }
        Err(_) => {
            let err = ProxyError::GatewayTimeout {
                url: up.url.clone(),
                after: shared.response_timeout,
            };
            tracing::warn!(path = %access.target.path(), "{err}");
            Err(err)
        }
    }
}

/// After the master refused the token `used` carried: re-read the config now, and
/// return the new snapshot if it has a different token for the same master.
async fn fresher_token(shared: &Shared, used: &Upstream) -> Option<Arc<Snapshot>> {
    let now = shared.source.reread().await?;
    let up = now.upstream()?;
    let fresher = up.url == used.url && up.auth.is_some() && up.auth != used.auth;
    fresher.then_some(now)
}

/// What is needed to send a request again.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    /// The same request with `up`'s token (same master, so same target and `Host`).
    fn into_request(mut self, up: &Upstream) -> Request<RequestBody> {
        if let Some(auth) = &up.auth {
            self.headers.insert(header::AUTHORIZATION, auth.clone());
        }
        let mut req = Request::new(Either::Left(Full::new(self.body)));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers;
        req
    }
}

/// The body to send, and its bytes when the request can be replayed: no body, or one
/// announced at no more than [`MAX_REPLAY_BODY`] bytes (read in full first, within
/// `timeout`). Everything else, and every upgrade, is streamed and not replayable.
async fn request_body(
    body: Incoming,
    upgrade: bool,
    timeout: Duration,
) -> Result<(RequestBody, Option<Bytes>), ProxyError> {
    if upgrade {
        return Ok((Either::Right(body), None));
    }
    if body.is_end_stream() {
        return Ok((Either::Left(Full::new(Bytes::new())), Some(Bytes::new())));
    }
    match body.size_hint().exact() {
        Some(n) if n <= MAX_REPLAY_BODY => {
            let bytes = match tokio::time::timeout(timeout, body.collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) => {
                    return Err(ProxyError::ClientBody {
                        cause: e.to_string(),
                    });
                }
                Err(_) => return Err(ProxyError::BodyTimeout(timeout)),
            };
            Ok((Either::Left(Full::new(bytes.clone())), Some(bytes)))
        }
        _ => Ok((Either::Right(body), None)),
    }
}

/// Turn the client's request headers into the master's: hop-by-hop fields out (but
/// the upgrade pair back in when switching protocols), `Expect` answered here, `Host`
/// set to the master, and the `Authorization` policy applied.
fn prepare_headers(
    headers: &mut HeaderMap,
    up: &Upstream,
    policy: ClientAuth,
    upgrade: Option<HeaderValue>,
) -> Credentials {
    strip_hop_by_hop(headers);
    // The proxy answers `Expect: 100-continue` itself: hyper sends the 100 as soon as
    // the body is first read, which happens once the master connection is ready.
    headers.remove(header::EXPECT);
    if let Some(u) = upgrade {
        restore_upgrade(headers, u);
    }
    headers.insert(header::HOST, up.host.clone());
    apply_authorization(headers, policy, up.auth.as_ref())
}

fn with_status(mut log: AccessLog, status: StatusCode) -> AccessLog {
    log.status = status;
    log
}

fn local_error(err: &ProxyError, log: AccessLog) -> Response<ResponseBody> {
    local_response(err.to_response(), log)
}

fn local_response(resp: Response<bytes::Bytes>, log: AccessLog) -> Response<ResponseBody> {
    let (parts, bytes) = resp.into_parts();
    let log = AccessLog {
        status: parts.status,
        latency: log.started.elapsed(),
        ..log
    };
    Response::from_parts(parts, ResponseBody::local(bytes, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_hint_is_given_at_most_once_per_interval() {
        let gate = RateLimit::new(Duration::from_secs(60));
        assert!(gate.allow_at(Duration::from_secs(0)));
        assert!(!gate.allow_at(Duration::from_secs(1)));
        assert!(!gate.allow_at(Duration::from_secs(59)));
        assert!(gate.allow_at(Duration::from_secs(61)));
        assert!(!gate.allow_at(Duration::from_secs(62)));
    }
}
