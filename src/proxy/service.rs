//! The request pipeline, read top to bottom: let the [`Guard`] refuse or admit the
//! request (nothing refused is ever forwarded), load the current upstream snapshot, map the
//! target onto the master, fix the headers, forward with a response-header timeout, and
//! stream the answer back (or tunnel it, after `101 Switching Protocols`).
//!
//! The only shared state touched per request is one atomic load of the snapshot
//! ([`arc_swap::ArcSwap`]); no lock, no I/O and no config parsing happen here.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::body::{AccessLog, ResponseBody};
use super::error::ProxyError;
use super::guard::Guard;
use super::headers::{apply_authorization, restore_upgrade, strip_hop_by_hop, upgrade_request};
use super::upgrade::tunnel;
use super::upstream::Upstream;
use crate::settings::ClientAuth;

/// The minimum time between two "run `dcos auth login`" hints after a master 401.
const LOGIN_HINT_INTERVAL: Duration = Duration::from_secs(60);

/// State shared by every request: immutable but for the snapshot, the drain signal and
/// the login-hint gate, all lock-free.
#[derive(Debug)]
pub struct Shared {
    /// The current master: swapped whole when the config changes, loaded per request.
    pub upstream: ArcSwap<Upstream>,
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
    /// Shared state serving `upstream`.
    pub fn new(
        upstream: Upstream,
        client_auth: ClientAuth,
        response_timeout: Duration,
        fallback_host: HeaderValue,
    ) -> Self {
        Self {
            upstream: ArcSwap::from_pointee(upstream),
            client_auth,
            response_timeout,
            drain: watch::channel(()).0,
            fallback_host,
            guard: Guard::default(),
            login_hint: RateLimit::new(LOGIN_HINT_INTERVAL),
        }
    }

    /// The same, admitting requests by `guard` (instead of the loopback default).
    pub fn with_guard(self, guard: Guard) -> Self {
        Self { guard, ..self }
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
    let up = shared.upstream.load_full();

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
    prepare_headers(&mut parts.headers, &up, shared.client_auth, upgrade);

    let sent = up.client.request(Request::from_parts(parts, body));
    let mut resp = match tokio::time::timeout(shared.response_timeout, sent).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let err = ProxyError::upstream(&up.url, &e);
            match err {
                ProxyError::ClientBody { .. } => {
                    tracing::debug!(path = %access.target.path(), "{err}")
                }
                _ => tracing::warn!(path = %access.target.path(), "{err}"),
            }
            return Ok(local_error(&err, access));
        }
        Err(_) => {
            let err = ProxyError::GatewayTimeout {
                url: up.url.clone(),
                after: shared.response_timeout,
            };
            tracing::warn!(path = %access.target.path(), "{err}");
            return Ok(local_error(&err, access));
        }
    };
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
        let Some(client_upgrade) = client_upgrade else {
            let err = ProxyError::BadGateway {
                url: up.url.clone(),
                cause: "the master switched protocols without being asked".into(),
            };
            return Ok(local_error(&err, access));
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
    parts.version = client_version;
    let agreed = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(proto)) = (status, agreed) {
        restore_upgrade(&mut parts.headers, proto);
    }
    if let Some(loc) = parts.headers.get(header::LOCATION) {
        let host = client_host
            .as_ref()
            .unwrap_or(&shared.fallback_host)
            .to_str()
            .ok();
        let prefix = shared.guard.client_prefix();
        if let Some(new) = host.and_then(|h| up.origin.rewrite_location_under(loc, h, prefix)) {
            parts.headers.insert(header::LOCATION, new);
        }
    }
    access.latency = started.elapsed();
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, access),
    ))
}

/// Turn the client's request headers into the master's: hop-by-hop fields out (but
/// the upgrade pair back in when switching protocols), `Expect` answered here, `Host`
/// set to the master, and the `Authorization` policy applied.
fn prepare_headers(
    headers: &mut HeaderMap,
    up: &Upstream,
    policy: ClientAuth,
    upgrade: Option<HeaderValue>,
) {
    strip_hop_by_hop(headers);
    // The proxy answers `Expect: 100-continue` itself: hyper sends the 100 as soon as
    // the body is first read, which happens once the master connection is ready.
    headers.remove(header::EXPECT);
    if let Some(u) = upgrade {
        restore_upgrade(headers, u);
    }
    headers.insert(header::HOST, up.host.clone());
    apply_authorization(headers, policy, up.auth.as_ref());
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
