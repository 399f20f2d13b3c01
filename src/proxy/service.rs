//! The request pipeline, read top to bottom: load the current upstream snapshot, map the
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
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::body::{AccessLog, ResponseBody};
use super::error::ProxyError;
use super::headers::{apply_authorization, restore_upgrade, strip_hop_by_hop, upgrade_request};
use super::upgrade::tunnel;
use super::upstream::Upstream;
use crate::settings::ClientAuth;

/// The minimum time between two "run `dcos auth login`" hints after a master 401.
const LOGIN_HINT_INTERVAL: Duration = Duration::from_secs(60);

/// State shared by every request. Immutable but for the snapshot and two atomics.
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
    created: Instant,
    last_login_hint: AtomicU64,
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
            created: Instant::now(),
            last_login_hint: AtomicU64::new(0),
        }
    }

    /// True at most once per [`LOGIN_HINT_INTERVAL`]: lock-free rate limit for the
    /// login hint.
    fn take_login_hint(&self) -> bool {
        // Seconds since start, plus one so that 0 can mean "never".
        let now = self.created.elapsed().as_secs() + 1;
        let last = self.last_login_hint.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < LOGIN_HINT_INTERVAL.as_secs() {
            return false;
        }
        self.last_login_hint
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Handle one client request. Never fails: every problem becomes a response.
pub async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let up = shared.upstream.load_full();
    let access = AccessLog {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        status: StatusCode::OK,
        started,
        latency: Duration::ZERO,
    };

    let upgrade = upgrade_request(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let client_host = req
        .headers()
        .get(header::HOST)
        .cloned()
        .unwrap_or_else(|| shared.fallback_host.clone());

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
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    // The proxy answers `Expect: 100-continue` itself: hyper sends the 100 as soon as
    // the body is first read, which happens when the master connection is ready.
    headers.remove(header::EXPECT);
    if let Some(u) = &upgrade {
        restore_upgrade(headers, u.clone());
    }
    headers.insert(header::HOST, up.host.clone());
    apply_authorization(headers, shared.client_auth, up.auth.as_ref());

    let sent = up.client.request(Request::from_parts(parts, body));
    let mut resp = match tokio::time::timeout(shared.response_timeout, sent).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let err = ProxyError::upstream(&up.url, &e);
            tracing::warn!(path = %access.path, "{err}");
            return Ok(local_error(&err, access));
        }
        Err(_) => {
            let err = ProxyError::GatewayTimeout {
                url: up.url.clone(),
                after: shared.response_timeout,
            };
            tracing::warn!(path = %access.path, "{err}");
            return Ok(local_error(&err, access));
        }
    };
    let status = resp.status();
    let mut access = with_status(access, status);

    if status == StatusCode::UNAUTHORIZED && shared.take_login_hint() {
        tracing::warn!(
            path = %access.path,
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
        let agreed = resp.headers().get(header::UPGRADE).cloned();
        let (mut parts, _empty) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(proto) = agreed {
            restore_upgrade(&mut parts.headers, proto);
        }
        tokio::spawn(tunnel(
            client_upgrade,
            master_upgrade,
            shared.drain.subscribe(),
            access.path.clone(),
        ));
        access.latency = started.elapsed();
        return Ok(Response::from_parts(
            parts,
            ResponseBody::local(Bytes::new(), access),
        ));
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(loc) = parts.headers.get(header::LOCATION) {
        if let Some(new) = client_host
            .to_str()
            .ok()
            .and_then(|host| up.origin.rewrite_location(loc, host))
        {
            parts.headers.insert(header::LOCATION, new);
        }
    }
    access.latency = started.elapsed();
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, access),
    ))
}

fn with_status(mut log: AccessLog, status: StatusCode) -> AccessLog {
    log.status = status;
    log
}

fn local_error(err: &ProxyError, log: AccessLog) -> Response<ResponseBody> {
    let (parts, bytes) = err.to_response().into_parts();
    let log = AccessLog {
        status: parts.status,
        latency: log.started.elapsed(),
        ..log
    };
    Response::from_parts(parts, ResponseBody::local(bytes, log))
}
