//! The snapshot: one [`Published::load`] per admitted request (one atomic load, no lock),
//! kept with the request to its end ([`Routed`]), so a request in flight finishes on the
//! snapshot it started with. While no cluster is set up (`Snapshot::Waiting`), the
//! answer is 503 with the message that says how to set one up, and the inner service is
//! never called. Hand-written: it is the proxy's own state.
//!
//! It also routes by name: a request whose host is `<label>.localhost[:PORT]` is served
//! with the snapshot of the cluster whose name or ID is `<label>`
//! ([`crate::source::named`]), and an unknown label gets 404 with the list of clusters.
//! Any other host costs one suffix comparison on the `Host` bytes: no allocation, no
//! second load.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use tower::{Layer, Service};

use super::{Master, OrLocal, Routed};
use crate::proxy::body::{Answer, local};
use crate::proxy::error::ProxyError;
use crate::source::Published;
use crate::source::named::{NamedRoute, label_of};

/// Serves each request with the snapshot current when it arrives.
#[derive(Debug, Clone)]
pub struct SnapshotLayer {
    source: Arc<Published>,
}

impl SnapshotLayer {
    /// Load snapshots from `source`.
    pub fn new(source: Arc<Published>) -> Self {
        Self { source }
    }
}

impl<S> Layer<S> for SnapshotLayer {
    type Service = SnapshotService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SnapshotService {
            source: self.source.clone(),
            inner,
        }
    }
}

/// The service of [`SnapshotLayer`].
#[derive(Debug, Clone)]
pub struct SnapshotService<S> {
    source: Arc<Published>,
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for SnapshotService<S>
where
    S: Service<Routed<B>, Response = Response<Answer<RB>>, Error = Infallible>,
{
    type Response = Response<Answer<RB>>;
    type Error = Infallible;
    type Future = OrLocal<S::Future, Response<Answer<RB>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let master = match host_of(&request).and_then(label_of) {
            None => Master::new(self.source.load()),
            Some((label, port)) => match self.source.route(label, port) {
                NamedRoute::Plain => Master::new(self.source.load()),
                NamedRoute::Cluster(id, snapshot) => Master::named(snapshot, id),
                NamedRoute::Unknown(text) => {
                    return OrLocal::local(local(ProxyError::UnknownCluster(text).to_response()));
                }
            },
        };
        match master {
            Ok(master) => OrLocal::inner(self.inner.call(Routed::new(request, master))),
            Err(why) => OrLocal::local(local(ProxyError::Unconfigured(why).to_response())),
        }
    }
}

/// The host the client asked for: the absolute-form target's (RFC 9112 §3.2.2) or
/// HTTP/2's `:authority`, else `Host` (the guard has already checked it).
fn host_of<B>(request: &Request<B>) -> Option<&str> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request.headers().get(header::HOST)?.to_str().ok(),
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::{BodyExt, Either};
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::layer::testing::{Mock, upstream};
    use crate::source::Snapshot;

    fn inner() -> Mock<Routed<()>, Response<Answer<()>>, Infallible> {
        Mock::new(|routed: Routed<()>| {
            assert_eq!(routed.master.upstream().url, "http://master.example");
            Ok(Response::new(Either::Left(())))
        })
    }

    #[tokio::test]
    async fn waiting_for_a_cluster_is_503_and_the_inner_service_is_not_called() {
        let why = "no cluster set up: run `dcos cluster setup`";
        let (published, _rereads) = Published::new(Snapshot::Waiting(why.into()));
        let published = Arc::new(published);
        let inner = inner();
        let svc = SnapshotLayer::new(published.clone()).layer(inner.clone());
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(inner.calls(), 0);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let Either::Right(body) = resp.into_body() else {
            panic!("a local body")
        };
        let text = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains(why), "{text}");

        // Once a cluster is published, the same service forwards.
        published.store(Snapshot::Ready(upstream("http://master.example", None)));
        let svc = SnapshotLayer::new(published).layer(inner.clone());
        let resp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(inner.calls(), 1);
    }
}
