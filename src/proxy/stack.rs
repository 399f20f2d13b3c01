//! The request path, composed once and read top to bottom in [`build`]. Each layer is
//! its own module under [`super::layer`], with its own tests.
//!
//! Per request, the shared state touched is one atomic load of the snapshot
//! ([`crate::source::Published::load`]) and a few reference counts: the snapshot's
//! (taken by the load, and once more by the timeout layer for its message), the
//! finishing layer's settings, the master connection pool's, and for a replayable
//! request the source's (for a re-read). The master connection comes from the serving
//! thread's own idle list, with no lock ([`crate::upstream::Pool`]). One lock is taken
//! on the normal path, not for credentials: the access-log line is copied into the
//! log buffer under its mutex ([`crate::logging`]; never held during I/O). No I/O
//! besides the two connections, and no config parsing, happen here. Off the normal path, a 401 to the proxy's token
//! asks for an immediate re-read of the config and may send the request once more (see
//! [`super::layer::retry`]).
//!
//! The layers' futures are concrete types nested in one another, so the server polls one
//! state machine per request. Two boxes: the pool's send future (hyper's, which cannot
//! be named) and, off the normal path, the re-read after a 401.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tower::ServiceBuilder;

use super::layer::access::{AccessLogLayer, AccessLogService};
use super::layer::finish::{FinishLayer, FinishService};
use super::layer::forward::Forward;
use super::layer::guard::{GuardLayer, GuardService};
use super::layer::metrics::{MetricsLayer, MetricsService, UpstreamLatency, UpstreamLatencyLayer};
use super::layer::prepare::{PrepareLayer, PrepareService};
use super::layer::retry::{RetryLayer, RetryService};
use super::layer::sensitive::{SensitiveLayer, SensitiveService};
use super::layer::snapshot::{SnapshotLayer, SnapshotService};
use super::layer::timeout::{ResponseTimeout, ResponseTimeoutLayer};
use super::upgrade::Tunnels;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::source::Published;
use crate::types::ClientAuth;

/// What the stack is built from, besides the server's drain handle.
#[derive(Debug)]
pub struct StackConfig {
    /// The current snapshot: swapped whole when the config changes, loaded per request.
    pub source: Arc<Published>,
    /// Which requests may pass (Host, Origin, path secret, filters).
    pub guard: Guard,
    /// The client `Authorization` policy.
    pub client_auth: ClientAuth,
    /// How long to wait for the master's response headers (and for a small request
    /// body that is read before sending).
    pub response_timeout: Duration,
    /// The host to put in rewritten `Location`s when a client sent no `Host`.
    pub fallback_host: HeaderValue,
    /// Where the metrics layers count (lock-free atomics).
    pub metrics: Arc<Metrics>,
}

/// The composed request path: a `tower::Service<Request<Incoming>>` answering
/// `Response<ResponseBody>` and never failing. Cloning it (once per connection) costs a
/// few reference-count increments.
///
/// [`ResponseBody`]: super::body::ResponseBody
pub type Stack = SensitiveService<
    MetricsService<
        AccessLogService<
            GuardService<
                SnapshotService<
                    PrepareService<
                        FinishService<RetryService<ResponseTimeout<UpstreamLatency<Forward>>>>,
                    >,
                >,
            >,
        >,
    >,
>;

/// Build the request path. Tunnels (after `101 Switching Protocols`) hold `tunnels`, so
/// that the server's graceful shutdown waits for them.
///
/// The order differs from the first sketch in two places, each for a reason: the
/// sensitive-headers layer comes before the access log (marking the credentials
/// before anything else sees the request is the safest place; it was also where
/// tower-http's layer, used at first, had to be), and finishing comes before the 401 retry (so that only the answer the
/// client gets is finished: no login hint for a 401 the retry recovers from).
pub fn build(config: StackConfig, tunnels: Tunnels) -> Stack {
    let client_prefix = config.guard.client_prefix().to_owned();
    ServiceBuilder::new()
        // Authorization, Cookie, Proxy-Authorization: never printed.
        .layer(SensitiveLayer)
        // Requests by method and status class, local answers by kind; atomics only.
        .layer(MetricsLayer::new(config.metrics.clone()))
        // One line per request, once its response is over; never a secret.
        .layer(AccessLogLayer)
        // A refusal is a response; nothing refused goes further.
        .layer(GuardLayer::new(config.guard))
        // One snapshot per request; 503 while no cluster is set up.
        .layer(SnapshotLayer::new(config.source.clone()))
        // The master's target and headers, the Authorization policy, the body decision.
        .layer(PrepareLayer::new(
            config.client_auth,
            config.response_timeout,
        ))
        // The client's response: hop-by-hop, Location, the tunnel, the login hint, and
        // the explanation of a failure.
        .layer(FinishLayer::new(
            config.fallback_host,
            &client_prefix,
            tunnels,
        ))
        // A 401 to the proxy's token: re-read, and one replay if replayable.
        .layer(RetryLayer::new(config.source))
        // 504 when the master sends no response headers in time.
        .layer(ResponseTimeoutLayer::new(config.response_timeout))
        // Time until the master's response headers.
        .layer(UpstreamLatencyLayer::new(config.metrics))
        // The snapshot's pooled client.
        .service(Forward)
}
