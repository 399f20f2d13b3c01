//! Turning the client's request into the master's: the target mapped onto the master
//! (its scheme, authority and `dcos_url` prefix, then the client's path and query byte
//! for byte), hop-by-hop fields out (but the upgrade pair back in when switching
//! protocols), `Expect` answered here, `Host` set to the master, the `Authorization`
//! policy applied; and the body decision.
//!
//! The body decision: a request that can be replayed after a 401 has no body, or one
//! announced by `Content-Length` at no more than [`MAX_REPLAY_BODY`] bytes, read in full
//! first (within the response timeout; 408 otherwise). Everything else, and every
//! upgrade, is streamed as it arrives and never replayed. Only a replayable request that
//! carries the proxy's own credentials gets a replay copy ([`Replay`]): a 401 to the
//! client's own token is the client's business. And only when the token's source can
//! renew it ([`Upstream::renewable`]): a token from `DCOS_ACS_TOKEN` is the same after
//! any re-read, so its 401 stands and no copy is made (the copy, a `HeaderMap`, `Uri`
//! and `Method` clone and their drop, was about 1,900 of some 42,900 instructions per
//! small GET). A replayable request without a body is not copied either: it is marked
//! [`Routed::hand_back`], and the forwarding layer gives its head back with a 401
//! (on the lean path, the request itself, which it holds until the answer's head has
//! arrived). With a token from the DC/OS CLI's config file that took a small GET from
//! 31,948 to 31,204 instructions (`IR_CONFIG=1 scripts/ir-per-request`).
//!
//! What the response side needs from the client's request (version, `Host`, the upgrade
//! handle, the target for log lines) is moved, not copied, into [`ClientSide`].
//! Hand-written: these are the proxy's own rules (see [`crate::proxy::headers`]).
//! Without a body to read, the inner service is called at once; reading a small body
//! first is a small state machine, not a boxed future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, Version, header};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, Either, Full};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{ClientSide, Master, OrLocal, Prepared, Replay, Retryable, Routed};
use crate::census::{Census, Field};
use crate::proxy::body::{Answer, RequestBody, local};
use crate::proxy::error::ProxyError;
use crate::proxy::headers::{
    Credentials, authorize_on_send_counted, restore_upgrade, set_in_place,
    strip_hop_by_hop_counted, upgrade_request_counted,
};
use crate::types::ClientAuth;
use crate::upstream::Upstream;
use crate::upstream::idle::InputStreamsFull;

/// The largest request body held in memory so that the request can be retried after a
/// 401 with a freshly read token. Larger or unsized bodies are streamed, never held.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Prepares each request for the master.
#[derive(Debug, Clone, Copy)]
pub struct PrepareLayer {
    client_auth: ClientAuth,
    body_timeout: Duration,
}

impl PrepareLayer {
    /// Apply the `client_auth` policy; give a small body `body_timeout` to arrive.
    pub fn new(client_auth: ClientAuth, body_timeout: Duration) -> Self {
        Self {
            client_auth,
            body_timeout,
        }
    }
}

impl<S> Layer<S> for PrepareLayer {
    type Service = PrepareService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PrepareService {
            client_auth: self.client_auth,
            body_timeout: self.body_timeout,
            inner,
        }
    }
}

/// The service of [`PrepareLayer`].
#[derive(Debug, Clone)]
pub struct PrepareService<S> {
    client_auth: ClientAuth,
    body_timeout: Duration,
    inner: S,
}

impl<S, B, RB> Service<Routed<B>> for PrepareService<S>
where
    S: Service<Prepared<B>, Response = Response<Answer<RB>>, Error = Infallible> + Clone,
    B: Body<Data = Bytes>,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    type Response = Response<Answer<RB>>;
    type Error = Infallible;
    type Future = PrepareFuture<S, B, Response<Answer<RB>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, routed: Routed<B>) -> Self::Future {
        let Routed {
            mut request,
            master,
            ..
        } = routed;
        if let Some(full) = request.extensions().get::<InputStreamsFull>() {
            let err = ProxyError::TooManyInputStreams(full.0);
            tracing::warn!(path = %request.uri().path(), "{err}");
            return PrepareFuture::Now {
                future: OrLocal::local(local(err.to_response())),
            };
        }
        let up = master.upstream();
        // The fields looked at below, found in one pass; no field is inserted before the
        // census's last use of it (only removed, which it allows; `Host` is replaced).
        let census = Census::of(request.headers());
        let upgrade = upgrade_request_counted(request.headers(), census);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let target = match up.origin_form(request.uri().path_and_query()) {
            Ok(t) => t,
            Err(e) => {
                let err = ProxyError::BadRequest(e.to_string());
                return PrepareFuture::Now {
                    future: OrLocal::local(local(err.to_response())),
                };
            }
        };
        let (mut parts, body) = request.into_parts();
        let client = ClientSide {
            version: std::mem::replace(&mut parts.version, Version::HTTP_11),
            upgrade: client_upgrade,
            host: None,
            target: std::mem::replace(&mut parts.uri, target),
        };
        let (credentials, host) =
            prepare_headers(&mut parts.headers, census, up, self.client_auth, upgrade);
        let client = ClientSide { host, ..client };
        // A replay copy only where a 401 can be retried: the proxy's own credentials,
        // from a source that a re-read can renew.
        let keep = credentials == Credentials::Proxy && up.renewable;
        // Where it goes, and whether with the proxy's token (added as it is sent).
        let to = (master, credentials == Credentials::Proxy);

        if client.upgrade.is_some() {
            let prepared = prepare(parts, Either::Right(body), None, to, client);
            return PrepareFuture::Now {
                future: OrLocal::inner(self.inner.call(prepared)),
            };
        }
        if body.is_end_stream() {
            // No copy: the head comes back with a 401 (`Routed::hand_back`).
            let mut prepared = prepare(parts, Either::Left(Full::default()), None, to, client);
            prepared.next.routed.hand_back = keep;
            return PrepareFuture::Now {
                future: OrLocal::inner(self.inner.call(prepared)),
            };
        }
        match body.size_hint().exact() {
            Some(n) if n <= MAX_REPLAY_BODY => {
                // Called once the body is in; the service here stays with the caller.
                let inner = self.inner.clone();
                PrepareFuture::Collecting {
                    body: Box::pin(tokio::time::timeout(self.body_timeout, body.collect())),
                    rest: Some(Box::new(Rest {
                        inner,
                        parts,
                        to,
                        client,
                        keep,
                        timeout: self.body_timeout,
                    })),
                }
            }
            _ => {
                let prepared = prepare(parts, Either::Right(body), None, to, client);
                PrepareFuture::Now {
                    future: OrLocal::inner(self.inner.call(prepared)),
                }
            }
        }
    }
}

/// Turn the client's request headers into the master's: hop-by-hop fields out (but
/// the upgrade pair back in when switching protocols), `Expect` answered here, `Host`
/// set to the master, and the `Authorization` policy applied. Returns whose credentials
/// the request now carries, and the client's `Host`. `census` is of `headers` as they
/// arrive: only the fields it found are looked up.
fn prepare_headers(
    headers: &mut HeaderMap,
    census: Census,
    up: &Upstream,
    policy: ClientAuth,
    upgrade: Option<HeaderValue>,
) -> (Credentials, Option<HeaderValue>) {
    // Replaced in place: a remove and an insert would make hyper's exactly sized map
    // grow. A client without `Host` (HTTP/1.0) has it added; one with several (which
    // the guard refuses before here) keeps none of its own.
    let client_host = set_in_place(headers, header::HOST, up.host.clone());
    strip_hop_by_hop_counted(headers, census);
    // `Connection` may have named `Host` itself.
    if census.has(Field::Connection) && !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, up.host.clone());
    }
    // The proxy answers `Expect: 100-continue` itself: hyper sends the 100 as soon as
    // the body is first read, which happens once the master connection is ready.
    if census.has(Field::Expect) {
        headers.remove(header::EXPECT);
    }
    if let Some(u) = upgrade {
        restore_upgrade(headers, u);
    }
    // `Upgrade`, `Connection` and `Host` may have been inserted, `Authorization` not.
    let credentials = authorize_on_send_counted(headers, census, policy, up.auth.as_ref());
    (credentials, client_host)
}

/// The prepared request; with a replay copy when `replay` holds the whole body.
fn prepare<B>(
    parts: Parts,
    body: RequestBody<B>,
    replay: Option<Bytes>,
    (master, own_token): (Master, bool),
    client: ClientSide,
) -> Prepared<B> {
    let replay = replay.map(|body| Replay {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body,
    });
    Prepared {
        client,
        next: Retryable {
            routed: Routed {
                request: Request::from_parts(parts, body),
                master,
                own_token,
                hand_back: false,
            },
            replay,
        },
    }
}

/// What waits for a small body to arrive.
#[derive(Debug)]
pub struct Rest<S> {
    inner: S,
    parts: Parts,
    to: (Master, bool),
    client: ClientSide,
    /// Whether a replay copy is wanted (the proxy's own credentials).
    keep: bool,
    timeout: Duration,
}

pin_project! {
    /// The future of [`PrepareService`].
    #[project = PrepareProj]
    pub enum PrepareFuture<S, B, R>
    where
        S: Service<Prepared<B>>,
        B: Body,
    {
        /// Called at once (or answered here).
        Now { #[pin] future: OrLocal<S::Future, R> },
        /// Reading a small body first.
        Collecting {
            body: Pin<Box<tokio::time::Timeout<Collect<B>>>>,
            rest: Option<Box<Rest<S>>>,
        },
        /// The body is in; waiting for the inner service to be ready.
        Sending { inner: S, prepared: Option<Box<Prepared<B>>> },
        /// The inner service's answer.
        Calling { #[pin] future: S::Future },
    }
}

impl<S, B, RB> Future for PrepareFuture<S, B, Response<Answer<RB>>>
where
    S: Service<Prepared<B>, Response = Response<Answer<RB>>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    type Output = Result<Response<Answer<RB>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                PrepareProj::Now { future } => return future.poll(cx),
                PrepareProj::Calling { future } => return future.poll(cx),
                PrepareProj::Collecting { body, rest } => {
                    let collected = ready!(body.as_mut().poll(cx));
                    let Some(rest) = rest.take() else {
                        panic!("PrepareFuture polled after it completed");
                    };
                    let err = match collected {
                        Ok(Ok(collected)) => {
                            let bytes = collected.to_bytes();
                            let replay = rest.keep.then(|| bytes.clone());
                            let body = Either::Left(Full::new(bytes));
                            let prepared = prepare(rest.parts, body, replay, rest.to, rest.client);
                            self.set(PrepareFuture::Sending {
                                inner: rest.inner,
                                prepared: Some(Box::new(prepared)),
                            });
                            continue;
                        }
                        Ok(Err(e)) => {
                            let e: crate::proxy::body::BoxError = e.into();
                            match crate::upstream::idle::body_cut(&*e) {
                                Some(cut) => ProxyError::BodyCut(cut),
                                None => ProxyError::ClientBody {
                                    cause: e.to_string(),
                                },
                            }
                        }
                        Err(_) => ProxyError::BodyTimeout(rest.timeout),
                    };
                    tracing::debug!(path = %rest.client.target.path(), "{err}");
                    return Poll::Ready(Ok(local(err.to_response())));
                }
                PrepareProj::Sending { inner, prepared } => {
                    let Ok(()) = ready!(inner.poll_ready(cx));
                    let Some(prepared) = prepared.take() else {
                        panic!("PrepareFuture polled after it completed");
                    };
                    let future = inner.call(*prepared);
                    self.set(PrepareFuture::Calling { future });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use http_body_util::{Empty, StreamBody};
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::layer::testing::{Mock, master};

    /// What the inner service saw, per call.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(Request<()>, ClientSide, Kept)>>>;

    /// What was kept for a retry after a 401.
    #[derive(Debug)]
    enum Kept {
        /// Nothing: a 401 is passed on.
        Nothing,
        /// A copy, made before sending.
        Copy(Box<Replay>),
        /// No copy: the head is to come back with a 401.
        HandBack,
    }

    impl Kept {
        fn any(&self) -> bool {
            !matches!(self, Kept::Nothing)
        }
    }

    fn recording<B: Send + 'static>(
        seen: Seen,
    ) -> Mock<Prepared<B>, Response<Answer<()>>, Infallible> {
        Mock::new(move |p: Prepared<B>| {
            // As the forwarding layer sends it.
            let token = p.next.routed.token_to_add().cloned();
            let (mut parts, _) = p.next.routed.request.into_parts();
            if let Some(token) = token {
                assert!(!parts.headers.contains_key(header::AUTHORIZATION));
                parts.headers.insert(header::AUTHORIZATION, token);
            }
            let req = Request::from_parts(parts, ());
            let kept = match (p.next.replay, p.next.routed.hand_back) {
                (Some(copy), false) => Kept::Copy(Box::new(copy)),
                (None, true) => Kept::HandBack,
                (None, false) => Kept::Nothing,
                (Some(_), true) => panic!("a copy and a hand-back both"),
            };
            seen.lock().unwrap().push((req, p.client, kept));
            Ok(Response::new(Either::Left(())))
        })
    }

    fn routed<B>(req: Request<B>) -> Routed<B> {
        Routed::new(
            req,
            master("http://master.example:8080/prefix", Some("own-token")),
        )
    }

    #[tokio::test]
    async fn headers_and_target_are_the_masters_and_the_clients_are_kept_aside() {
        let seen = Seen::default();
        let inner = recording::<Empty<Bytes>>(seen.clone());
        let svc = PrepareLayer::new(ClientAuth::Keep, Duration::from_secs(5)).layer(inner);
        let req = Request::get("/service/x?q=1")
            .header(header::HOST, "localhost:8079")
            .header(header::CONNECTION, "keep-alive, x-hop")
            .header("x-hop", "1")
            .header(header::EXPECT, "100-continue")
            .header("x-end", "2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = svc.oneshot(routed(req)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = seen.lock().unwrap();
        let (req, client, kept) = &seen[0];
        // Origin-form: the pool sends it on a connection to the master as is.
        assert_eq!(req.uri(), "/prefix/service/x?q=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()[header::HOST], "master.example:8080");
        assert_eq!(req.headers()[header::AUTHORIZATION], "token=own-token");
        assert_eq!(req.headers()["x-end"], "2");
        for gone in ["connection", "x-hop", "expect"] {
            assert!(!req.headers().contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(client.host.as_ref().unwrap(), "localhost:8079");
        assert_eq!(client.target, "/service/x?q=1");
        assert!(client.upgrade.is_none());
        // No body, own credentials: replayable, without a copy (the head comes back
        // with a 401).
        assert!(matches!(kept, Kept::HandBack), "{kept:?}");
    }

    /// Each field prepare reads, alone and in any letter case, is seen: the census that
    /// spares the lookups of absent fields must find it.
    #[tokio::test]
    async fn each_field_prepare_reads_is_seen_alone_in_any_case() {
        let run = |name: &'static str, value: &'static str| async move {
            let seen = Seen::default();
            let inner = recording::<Empty<Bytes>>(seen.clone());
            let svc = PrepareLayer::new(ClientAuth::Keep, Duration::from_secs(5)).layer(inner);
            let req = Request::get("/x")
                .header(name, value)
                .body(Empty::<Bytes>::new())
                .unwrap();
            svc.oneshot(routed(req)).await.unwrap();
            let (req, client, _) = seen.lock().unwrap().remove(0);
            (req, client)
        };
        for name in [
            "EXPECT",
            "Connection",
            "KEEP-ALIVE",
            "Proxy-Connection",
            "PROXY-Authorization",
            "Proxy-Authenticate",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
        ] {
            let (req, _) = run(name, "x").await;
            let mut left: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
            left.sort_unstable();
            assert_eq!(left, ["authorization", "host"], "{name}");
        }
        let (req, _) = run("AUTHORIZATION", "Bearer abc").await;
        assert_eq!(req.headers()[header::AUTHORIZATION], "token=abc");
        let (req, client) = run("HOST", "localhost:8079").await;
        assert_eq!(client.host.unwrap(), "localhost:8079");
        assert_eq!(req.headers()[header::HOST], "master.example:8080");
    }

    /// hyper gives a request a header map sized to its fields, and an insert into a
    /// full map reallocates it (even when the field is already there). Preparing the
    /// usual request (a `Host`, maybe the client's own token) inserts nothing: `Host`
    /// is replaced in place and the proxy's token goes on as the request is sent.
    #[test]
    fn preparing_headers_does_not_grow_an_exactly_sized_map() {
        use crate::proxy::layer::testing::upstream;
        let up = upstream("http://master.example:8080", Some("own-token"));
        let full = |fields: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::with_capacity(fields.len());
            while h.len() < h.capacity() {
                let (name, value) = fields[h.len() % fields.len()];
                h.append(name, HeaderValue::from_static(value));
            }
            h
        };
        type Fields = &'static [(&'static str, &'static str)];
        let cases: [(Fields, Credentials, Option<&str>); 4] = [
            (&[("host", "localhost:8079")], Credentials::Proxy, None),
            (
                &[("host", "localhost:8079"), ("authorization", "Basic eA==")],
                Credentials::Proxy,
                None,
            ),
            (
                &[("host", "localhost:8079"), ("authorization", "Bearer abc")],
                Credentials::Client,
                Some("token=abc"),
            ),
            (
                &[("host", "localhost:8079"), ("authorization", "token=abc")],
                Credentials::Client,
                Some("token=abc"),
            ),
        ];
        for (fields, whose, auth) in cases {
            let mut h = full(fields);
            let capacity = h.capacity();
            let census = Census::of(&h);
            let (credentials, host) = prepare_headers(&mut h, census, &up, ClientAuth::Keep, None);
            assert_eq!(h.capacity(), capacity, "{fields:?}: the map grew");
            assert_eq!(credentials, whose, "{fields:?}");
            assert_eq!(host.unwrap(), "localhost:8079");
            assert_eq!(h[header::HOST], "master.example:8080");
            assert_eq!(h.get_all(header::HOST).iter().count(), 1);
            let left = h.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap());
            assert_eq!(left, auth, "{fields:?}");
        }
        // `Connection` naming `Host` does not take the master's away; nor does a second
        // `Host` (refused by the guard before here) get through.
        for fields in [
            &[("host", "a"), ("connection", "host")][..],
            &[("host", "a"), ("host", "b")][..],
        ] {
            let mut h = HeaderMap::new();
            for (name, value) in fields {
                h.append(*name, HeaderValue::from_static(value));
            }
            let census = Census::of(&h);
            prepare_headers(&mut h, census, &up, ClientAuth::Keep, None);
            let hosts: Vec<_> = h.get_all(header::HOST).iter().collect();
            assert_eq!(hosts, ["master.example:8080"], "{fields:?}");
        }
    }

    #[tokio::test]
    async fn a_small_body_is_read_first_and_kept_for_a_replay() {
        let seen = Seen::default();
        let inner = recording::<Full<Bytes>>(seen.clone());
        let svc = PrepareLayer::new(ClientAuth::Keep, Duration::from_secs(5)).layer(inner);
        let req = Request::post("/v2/apps")
            .body(Full::new(Bytes::from_static(b"{\"id\":\"/a\"}")))
            .unwrap();
        svc.oneshot(routed(req)).await.unwrap();
        let seen = seen.lock().unwrap();
        let (req, _, kept) = &seen[0];
        assert_eq!(req.method(), Method::POST);
        let Kept::Copy(copy) = kept else {
            panic!("{kept:?}")
        };
        assert_eq!(copy.body, "{\"id\":\"/a\"}");
        assert_eq!(copy.uri, *req.uri());
    }

    /// A token from `DCOS_ACS_TOKEN` is the same after any re-read: its 401 cannot be
    /// retried, so no copy is kept. The same request with a token from the config file
    /// (which `dcos auth login` rewrites) keeps one.
    #[tokio::test]
    async fn a_token_from_the_environment_gets_no_replay_copy() {
        use crate::dcos::config::{ClusterConfig, ConfigSource, Origins, SslVerify, ValueSource};
        use crate::dcos::token::Token;
        use crate::proxy::layer::Master;
        use crate::source::Snapshot;
        use crate::upstream::ClientOptions;

        let replay_with = |from: ValueSource| async move {
            let cluster = ClusterConfig {
                source: ConfigSource::EnvOnly,
                dcos_dir: std::env::temp_dir(),
                name: None,
                dcos_url: "http://master.example".parse().unwrap(),
                token: Some(Token::new("own-token").unwrap()),
                ssl_verify: SslVerify::System,
                timeout: None,
                origins: Origins {
                    token: Some(from),
                    ..Origins::default()
                },
            };
            let up = Upstream::new(&cluster, &ClientOptions::default()).unwrap();
            let master = Master::new(std::sync::Arc::new(Snapshot::Ready(up))).unwrap();
            let seen = Seen::default();
            let inner = recording::<Empty<Bytes>>(seen.clone());
            let svc = PrepareLayer::new(ClientAuth::Keep, Duration::from_secs(5)).layer(inner);
            let request = Request::get("/x").body(Empty::<Bytes>::new()).unwrap();
            svc.oneshot(Routed::new(request, master)).await.unwrap();
            let (req, _, kept) = seen.lock().unwrap().remove(0);
            assert_eq!(req.headers()[header::AUTHORIZATION], "token=own-token");
            kept.any()
        };
        assert!(!replay_with(ValueSource::Env("DCOS_ACS_TOKEN")).await);
        let file = ValueSource::File {
            file: "/home/u/.dcos/clusters/c/dcos.toml".into(),
            key: "core.dcos_acs_token",
        };
        assert!(replay_with(file).await);
    }

    #[tokio::test]
    async fn the_clients_own_token_and_unsized_bodies_get_no_replay_copy() {
        // The client's own token: its 401 is not the proxy's to retry.
        let seen = Seen::default();
        let inner = recording::<Empty<Bytes>>(seen.clone());
        let svc = PrepareLayer::new(ClientAuth::Keep, Duration::from_secs(5)).layer(inner);
        let req = Request::get("/x")
            .header(header::AUTHORIZATION, "token=the-clients")
            .body(Empty::<Bytes>::new())
            .unwrap();
        svc.oneshot(routed(req)).await.unwrap();
        assert!(!seen.lock().unwrap()[0].2.any());

        // A body of unknown length is streamed, never held.
        type Chunks = StreamBody<
            futures_util::stream::Iter<
                std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>,
            >,
        >;
        let seen = Seen::default();
        let inner = recording::<Chunks>(seen.clone());
        let svc = PrepareLayer::new(ClientAuth::Keep, Duration::from_secs(5)).layer(inner);
        let frames = vec![Ok(http_body::Frame::data(Bytes::from_static(b"chunk")))];
        let body: Chunks = StreamBody::new(futures_util::stream::iter(frames));
        let req = Request::post("/x").body(body).unwrap();
        svc.oneshot(routed(req)).await.unwrap();
        assert!(!seen.lock().unwrap()[0].2.any());
    }
}
