//! The request path's layers, one concern each, composed by [`super::stack::build`]; and
//! the typed requests and answers that pass between them.
//!
//! Each layer is a [`tower::Layer`] plus the [`tower::Service`] it wraps around the next
//! one, and can be tested alone against a mock inner service. The types change on the
//! way down, so that each layer gets what the one above has worked out without a map
//! lookup or a second copy:
//!
//! ```text
//! Request<B>                     sensitive headers, access log, guard
//!   -> Routed<B>                 snapshot: the request and the master it goes to
//!   -> Prepared<B>               prepare: the master-bound request, what the client
//!                                asked (ClientSide), and the replay copy if any
//!   -> Retryable<B>              finish: the master-bound request and its replay copy
//!   -> Routed<RequestBody<B>>    retry, timeout, forward
//! ```
//!
//! On the way back up, the forwarding client's answer carries the snapshot it was sent
//! with ([`Answered`]) down to the finishing layer, which turns it (or a failure,
//! [`ProxyError`]) into the client's response. Everything above the finishing layer
//! answers `Response<Answer<B>>` and never fails; the guard adds the request target as
//! it left it ([`guard::Checked`]) for the access log.
//!
//! Every service here is ready at all times (`poll_ready` only asks the layer below):
//! none of them limits concurrency; the server's accept loop does.
//!
//! [`ProxyError`]: super::error::ProxyError
//! [`RequestBody`]: super::body::RequestBody

pub mod access;
pub mod finish;
pub mod forward;
pub mod guard;
pub mod metrics;
pub mod prepare;
pub mod retry;
pub mod sensitive;
pub mod snapshot;
pub mod timeout;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::{Either, Full};
use hyper::upgrade::OnUpgrade;
use pin_project_lite::pin_project;

use super::body::RequestBody;
use crate::source::Snapshot;
use crate::upstream::Upstream;

/// A loaded snapshot known to hold a master: what a request admitted past the snapshot
/// layer is served with, from start to end, even if a newer one is published meanwhile;
/// and, for a request to a cluster by name (`<name>.localhost`), that cluster's ID (so a
/// 401 re-read looks for that cluster's fresher token). Moving it between layers is
/// free; cloning it is one or two reference-count increments.
#[derive(Debug, Clone)]
pub struct Master {
    snapshot: Arc<Snapshot>,
    cluster: Option<Arc<str>>,
}

impl Master {
    /// `snapshot` (the current cluster's) if it holds a master; else why there is none
    /// yet.
    pub fn new(snapshot: Arc<Snapshot>) -> Result<Self, Arc<str>> {
        Self::of(snapshot, None)
    }

    /// The snapshot of the cluster served by name with ID `id`, if it holds a master;
    /// else why there is none.
    pub fn named(snapshot: Arc<Snapshot>, id: Arc<str>) -> Result<Self, Arc<str>> {
        Self::of(snapshot, Some(id))
    }

    fn of(snapshot: Arc<Snapshot>, cluster: Option<Arc<str>>) -> Result<Self, Arc<str>> {
        match &*snapshot {
            Snapshot::Ready(_) => Ok(Self { snapshot, cluster }),
            Snapshot::Waiting(why) => Err(why.clone()),
        }
    }

    /// The master and its pooled client.
    pub fn upstream(&self) -> &Upstream {
        match &*self.snapshot {
            Snapshot::Ready(up) => up,
            // `of` admits `Ready` snapshots only, and a snapshot never changes.
            Snapshot::Waiting(_) => unreachable!("a Master always holds a Ready snapshot"),
        }
    }

    /// The ID of the cluster asked for by name; `None` for the current cluster.
    pub fn cluster(&self) -> Option<&Arc<str>> {
        self.cluster.as_ref()
    }
}

/// A request and the master it goes to: first the client's request (the snapshot
/// layer's output), later the master-bound one (the retry layer's output).
#[derive(Debug)]
pub struct Routed<B> {
    /// The request.
    pub request: Request<B>,
    /// The snapshot it is served with.
    pub master: Master,
    /// The request is to carry the proxy's own token (the snapshot's, when logged in),
    /// which the forwarding layer adds as it sends it, not before: see
    /// [`crate::proxy::headers::authorize_on_send_counted`]. Any `Authorization` in
    /// `request` is then already gone. `false` for the client's request, and for a
    /// master-bound one that carries the client's credentials or its token already.
    pub own_token: bool,
    /// A 401 may be retried with a fresher token, and the request has no body: the
    /// forwarding layer gives its head back with the 401 ([`Answered::sent`]) instead
    /// of a copy being made up front, for every request, in case one arrives.
    pub hand_back: bool,
}

impl<B> Routed<B> {
    /// `request`, with no token to add.
    pub fn new(request: Request<B>, master: Master) -> Self {
        Self {
            request,
            master,
            own_token: false,
            hand_back: false,
        }
    }

    /// The `Authorization` value to add as the request is sent, if any.
    pub fn token_to_add(&self) -> Option<&HeaderValue> {
        if self.own_token {
            self.master.upstream().auth.as_ref()
        } else {
            None
        }
    }
}

/// What the response side needs to know about the client's request once it has been
/// turned into the master's.
#[derive(Debug)]
pub struct ClientSide {
    /// The client's HTTP version: each hop has its own.
    pub version: Version,
    /// The client's connection, to tunnel after `101 Switching Protocols`; `Some` only
    /// when the client asked to switch protocols.
    pub upgrade: Option<OnUpgrade>,
    /// The client's `Host`, for rewriting `Location`s.
    pub host: Option<HeaderValue>,
    /// The client's request target as the guard left it (no path secret): for log
    /// lines. Only its path is ever logged; the query may hold secrets.
    pub target: Uri,
}

/// A request turned into the master's (the prepare layer's output).
#[derive(Debug)]
pub struct Prepared<B> {
    /// What the client asked, for the finishing layer.
    pub client: ClientSide,
    /// The master-bound request and its replay copy, for the layers below.
    pub next: Retryable<B>,
}

/// A master-bound request and, when it may be sent again after a 401, its copy.
#[derive(Debug)]
pub struct Retryable<B> {
    /// The request with the body to send.
    pub routed: Routed<RequestBody<B>>,
    /// The copy to send with a fresher token; `None` when the request must not be
    /// replayed (streamed body, upgrade, the client's own credentials), or when it has
    /// no body and is marked [`Routed::hand_back`] instead.
    pub replay: Option<Replay>,
}

/// What is needed to send a request again.
#[derive(Debug)]
pub struct Replay {
    /// Method.
    pub method: Method,
    /// The master-bound target.
    pub uri: Uri,
    /// The master-bound headers.
    pub headers: HeaderMap,
    /// The whole body, held in memory.
    pub body: Bytes,
}

impl Replay {
    /// The same request with `up`'s token (same master, so same target and `Host`).
    pub fn into_request<B>(mut self, up: &Upstream) -> Request<RequestBody<B>> {
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

/// The master's response and the snapshot the request was sent with (the forwarding
/// client's answer, passed up through the retry and timeout layers).
#[derive(Debug)]
pub struct Answered<B> {
    /// The master's response.
    pub response: Response<B>,
    /// The snapshot whose master answered: after a retry, the fresher one.
    pub master: Master,
    /// With a 401 to a request sent with [`Routed::hand_back`]: that request, to send
    /// again (an empty body).
    pub sent: Option<Box<Replay>>,
}

impl Replay {
    /// A bodiless request's head, given back with its 401.
    pub fn of_head(head: http::request::Parts) -> Self {
        Self {
            method: head.method,
            uri: head.uri,
            headers: head.headers,
            body: Bytes::new(),
        }
    }
}

pin_project! {
    /// An answer given right away by a layer (a refusal, an error), or the inner
    /// service's future. No allocation either way.
    #[project = OrLocalProj]
    #[derive(Debug)]
    pub enum OrLocal<F, R> {
        /// The layer answered itself; the inner service was never called.
        Local { response: Option<R> },
        /// The inner service's answer.
        Inner { #[pin] future: F },
    }
}

impl<F, R> OrLocal<F, R> {
    /// The layer's own answer.
    pub fn local(response: R) -> Self {
        Self::Local {
            response: Some(response),
        }
    }

    /// The inner service's answer.
    pub fn inner(future: F) -> Self {
        Self::Inner { future }
    }
}

impl<F, R> Future for OrLocal<F, R>
where
    F: Future<Output = Result<R, Infallible>>,
{
    type Output = Result<R, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OrLocalProj::Local { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => panic!("OrLocal polled after it completed"),
            },
            OrLocalProj::Inner { future } => future.poll(cx),
        }
    }
}

/// Tests' shared pieces: a master to route to, and mock inner services.
#[cfg(test)]
pub(crate) mod testing {
    use std::future::{Ready, ready};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use crate::dcos::config::{ClusterConfig, ConfigSource, SslVerify};
    use crate::dcos::token::Token;
    use crate::source::Snapshot;
    use crate::upstream::ClientOptions;

    use super::{Master, Upstream};

    /// The upstream for `url`, logged in with `token` (nothing is ever connected).
    pub(crate) fn upstream(url: &str, token: Option<&str>) -> Upstream {
        let cluster = ClusterConfig {
            source: ConfigSource::EnvOnly,
            dcos_dir: std::env::temp_dir(),
            name: Some("unit".into()),
            dcos_url: url.parse().expect("a test URL"),
            token: token.map(|t| Token::new(t).expect("a test token")),
            ssl_verify: SslVerify::System,
            timeout: None,
            origins: Default::default(),
        };
        Upstream::new(&cluster, &ClientOptions::default()).expect("a plain-HTTP upstream")
    }

    /// A master at `url`, logged in with `token`.
    pub(crate) fn master(url: &str, token: Option<&str>) -> Master {
        Master::new(Arc::new(Snapshot::Ready(upstream(url, token)))).expect("ready")
    }

    /// The answer function of a [`Mock`].
    type Answer<Req, Resp, E> = dyn FnMut(Req) -> Result<Resp, E> + Send;

    /// A mock inner service: counts its calls and answers each with `answer(request)`.
    pub(crate) struct Mock<Req, Resp, E> {
        calls: Arc<AtomicUsize>,
        answer: Arc<Mutex<Answer<Req, Resp, E>>>,
    }

    impl<Req, Resp, E> Clone for Mock<Req, Resp, E> {
        fn clone(&self) -> Self {
            Self {
                calls: self.calls.clone(),
                answer: self.answer.clone(),
            }
        }
    }

    impl<Req, Resp, E> Mock<Req, Resp, E> {
        pub(crate) fn new(answer: impl FnMut(Req) -> Result<Resp, E> + Send + 'static) -> Self {
            Self {
                calls: Arc::new(AtomicUsize::new(0)),
                answer: Arc::new(Mutex::new(answer)),
            }
        }

        pub(crate) fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl<Req, Resp, E> tower::Service<Req> for Mock<Req, Resp, E> {
        type Response = Resp;
        type Error = E;
        type Future = Ready<Result<Resp, E>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Req) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut answer = self.answer.lock().expect("a mock's answer panicked");
            ready(answer(req))
        }
    }
}
