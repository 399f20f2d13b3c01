//! Test harness: a fake DC/OS master that behaves like Admin Router, helpers to start
//! the proxy in-process on `127.0.0.1:0`, and small HTTP clients.
//!
//! The fake master answers 401 with `WWW-Authenticate: acsjwt` unless the request carries
//! `Authorization: token=<T>` for a token it accepts ([`VALID`], plus any given to
//! [`FakeMaster::accept`]), and records every request that reaches it so tests
//! can assert what was (or was not) forwarded.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dcos_token_proxy::Proxy;
use dcos_token_proxy::dcos::config::{ClusterConfig, ConfigSource, SslVerify};
use dcos_token_proxy::dcos::token::Token;
use dcos_token_proxy::settings::Settings;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The token every fake master accepts from the start.
pub const VALID: &str = "eyJhbGciOiJIUzI1NiJ9.eyJ1aWQiOiJib290c3RyYXB1c2VyIn0.c2lnbmF0dXJl";
/// A well-formed token the fake master rejects.
pub const OTHER: &str = "eyJhbGciOiJIUzI1NiJ9.eyJ1aWQiOiJtYWxsb3J5In0.b3RoZXI";

/// A JWT-shaped token for `uid`, expiring at `exp` (seconds since 1970) if given. Its
/// signature is never checked by anyone here.
pub fn jwt_with(uid: &str, exp: Option<u64>) -> String {
    use base64::Engine;
    let exp = exp.map(|e| format!(",\"exp\":{e}")).unwrap_or_default();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{{\"uid\":\"{uid}\"{exp}}}"));
    format!("eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln")
}

/// Seconds since 1970, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// One request as the master saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: std::time::Instant,
    pub method: Method,
    /// The request target exactly as received.
    pub target: String,
    pub headers: HeaderMap,
}

impl Seen {
    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    /// Requests from the proxy's own checks (startup check, `doctor`), which identify
    /// themselves by [`CHECK_USER_AGENT`]; kept apart so they never count as a client's.
    probes: Mutex<Vec<Seen>>,
    /// The tokens this master accepts (it "issued" them).
    accepted: Mutex<std::collections::HashSet<String>>,
    arrived: Notify,
    /// Released by the test: lets `/sse` send its second event and `/hold` answer.
    release: Notify,
    /// Sizes of request-body chunks as `/exec-input` (and `/agent/<id>/api/v1`) receives them.
    chunks: Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
    /// `/exec-input` bodies that ended in an error (the proxy abandoned the request).
    inputs_aborted: std::sync::atomic::AtomicUsize,
    /// The login endpoint's account, when enabled ([`FakeMaster::enable_login`]).
    login: Mutex<Option<LoginAccount>>,
    /// Every login attempt, in order.
    logins: Mutex<Vec<LoginRecord>>,
    /// When each token this master minted stops being accepted.
    expiry: Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// The one account the fake master's login endpoint knows (reference §7).
#[derive(Debug, Clone)]
pub struct LoginAccount {
    pub uid: String,
    /// The service account's RSA public key (PKCS#1 `RSAPublicKey` DER), if it has one.
    pub public_key: Option<Vec<u8>>,
    /// The user's password, if it has one.
    pub password: Option<String>,
    /// How long minted tokens live.
    pub lifetime: Duration,
    /// How long the endpoint takes to answer.
    pub delay: Duration,
    /// Refuse every login (as for an unknown account).
    pub refuse: bool,
}

impl LoginAccount {
    /// A service account whose public key is that of the PEM private key `pem`.
    pub fn service_account(uid: &str, pem: &str, lifetime: Duration) -> Self {
        Self {
            uid: uid.to_owned(),
            public_key: Some(public_key_of(pem)),
            password: None,
            lifetime,
            delay: Duration::ZERO,
            refuse: false,
        }
    }
}

/// One login attempt as the fake master saw it.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub at: std::time::Instant,
    /// Whether a token was minted.
    pub ok: bool,
    /// When the token minted by the previous successful login expired(s).
    pub previous_expiry: Option<std::time::Instant>,
}

/// The PKCS#1 DER public key of a PEM (PKCS#8 or PKCS#1) RSA private key.
pub fn public_key_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let pair = match &der {
        PrivateKeyDer::Pkcs8(k) => ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => panic!("not an RSA key"),
    }
    .unwrap();
    pair.public().as_ref().to_vec()
}

/// The test service account's key (PKCS#8), its PKCS#1 form, and a stranger's key.
pub const SA_KEY_PKCS8: &str = include_str!("../fixtures/keys/sa_pkcs8.pem");
pub const SA_KEY_PKCS1: &str = include_str!("../fixtures/keys/sa_pkcs1.pem");
pub const OTHER_KEY: &str = include_str!("../fixtures/keys/other_pkcs8.pem");

/// How the proxy's own checks (startup check, `doctor`) name themselves in `User-Agent`.
pub const CHECK_USER_AGENT: &str = "dcos-token-proxy-check/";

/// The fake master.
pub struct FakeMaster {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub url: String,
    state: Arc<State>,
}

impl FakeMaster {
    /// A plain-HTTP master on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// An HTTPS master on `127.0.0.1:0`, reached as `https://localhost:PORT`.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        state.accepted.lock().unwrap().insert(VALID.to_owned());
        let st = state.clone();
        let is_tls = tls.is_some();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve_master(s, st).await
                            }
                        }
                        None => serve_master(stream, st).await,
                    }
                });
            }
        });
        let url = if is_tls {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        Self { addr, url, state }
    }

    /// Accept `token` from now on, as a master that issued it would.
    pub fn accept(&self, token: &str) {
        self.state.accepted.lock().unwrap().insert(token.to_owned());
    }

    /// Stop accepting `token` (it expired, or was never this master's).
    pub fn revoke(&self, token: &str) {
        self.state.accepted.lock().unwrap().remove(token);
    }

    /// Everything the master has received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The requests the proxy's own checks made (see [`CHECK_USER_AGENT`]).
    pub fn probes(&self) -> Vec<Seen> {
        self.state.probes.lock().unwrap().clone()
    }

    /// How many requests the master has received.
    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// Wait until the master has received at least `n` requests, without copying them.
    pub async fn wait_count(&self, n: usize) {
        loop {
            let notified = self.state.arrived.notified();
            if self.count() >= n {
                return;
            }
            tokio::time::timeout(Duration::from_secs(10), notified)
                .await
                .expect("master did not receive the expected request within 10 s");
        }
    }

    /// Wait until the master has received at least `n` requests.
    pub async fn wait_for(&self, n: usize) -> Vec<Seen> {
        loop {
            let notified = self.state.arrived.notified();
            {
                let seen = self.state.seen.lock().unwrap();
                if seen.len() >= n {
                    return seen.clone();
                }
            }
            tokio::time::timeout(Duration::from_secs(10), notified)
                .await
                .expect("master did not receive the expected request within 10 s");
        }
    }

    /// The last request the master received.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the master saw no request")
    }

    /// Let `/sse` send its second event and `/hold` answer.
    pub fn release(&self) {
        self.state.release.notify_one();
    }

    /// Serve `POST /acs/api/v1/auth/login` for `account` from now on.
    pub fn enable_login(&self, account: LoginAccount) {
        *self.state.login.lock().unwrap() = Some(account);
    }

    /// Change the login account (refuse, delay...) in place.
    pub fn update_login(&self, f: impl FnOnce(&mut LoginAccount)) {
        if let Some(a) = self.state.login.lock().unwrap().as_mut() {
            f(a);
        }
    }

    /// Every login attempt so far.
    pub fn logins(&self) -> Vec<LoginRecord> {
        self.state.logins.lock().unwrap().clone()
    }

    /// Successful logins so far.
    pub fn successful_logins(&self) -> usize {
        self.logins().iter().filter(|l| l.ok).count()
    }

    /// Stop accepting every token the login endpoint minted (as after a key rotation on
    /// the master): the next request with one gets 401.
    pub fn revoke_minted(&self) {
        let minted: Vec<String> = self.state.expiry.lock().unwrap().keys().cloned().collect();
        let mut accepted = self.state.accepted.lock().unwrap();
        for t in minted {
            accepted.remove(&t);
        }
    }

    /// Receive each `/exec-input` request-body chunk as the master reads it.
    /// How many `/exec-input` request bodies ended in an error rather than their end.
    pub fn inputs_aborted(&self) -> usize {
        self.state
            .inputs_aborted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wait until at least `n` `/exec-input` bodies were abandoned.
    pub async fn wait_inputs_aborted(&self, n: usize) {
        loop {
            let notified = self.state.arrived.notified();
            if self.inputs_aborted() >= n {
                return;
            }
            tokio::time::timeout(Duration::from_secs(10), notified)
                .await
                .expect("the abandoned uploads did not end at the master within 10 s");
        }
    }

    pub fn chunk_events(&self) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.state.chunks.lock().unwrap() = Some(tx);
        rx
    }
}

async fn serve_master<I>(io: I, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| master_route(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn respond(status: u16, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

/// Paths Admin Router serves without a token (reference §5).
fn unauthenticated(path: &str) -> bool {
    path == "/dcos-metadata/dcos-version.json" || path.starts_with("/acs/api/v1/auth/")
}

async fn master_route(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let seen = Seen {
        at: std::time::Instant::now(),
        method: req.method().clone(),
        target: target.clone(),
        headers: req.headers().clone(),
    };
    let is_probe = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with(CHECK_USER_AGENT));
    if is_probe {
        state.probes.lock().unwrap().push(seen);
    } else {
        state.seen.lock().unwrap().push(seen);
        state.arrived.notify_waiters();
    }

    let path = req.uri().path().to_owned();
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token="))
        .is_some_and(|t| {
            state.accepted.lock().unwrap().contains(t)
                && state
                    .expiry
                    .lock()
                    .unwrap()
                    .get(t)
                    .is_none_or(|exp| std::time::Instant::now() < *exp)
        });
    if path == "/acs/api/v1/auth/login"
        && req.method() == Method::POST
        && state.login.lock().unwrap().is_some()
    {
        return Ok(login_route(&state, req).await);
    }
    if !authorized && !unauthenticated(&path) {
        // As Admin Router (nginx discards the body of a request it refuses): a sized body
        // is read to its end before the answer, so closing the connection cannot reset
        // it under the answer. A body of unknown length (a stream) is not waited for.
        if req.headers().contains_key(header::CONTENT_LENGTH) {
            let mut body = req.into_body();
            let drain = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        }
        let mut r = respond(401, "<html><body><h1>401 Unauthorized</h1></body></html>\n");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("acsjwt"));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        return Ok(r);
    }

    // The agent operator API (`dcos task exec`'s input stream) behaves as `/exec-input`.
    let agent_api =
        (path.starts_with("/agent/") || path.starts_with("/slave/")) && path.ends_with("/api/v1");
    let route = if agent_api {
        "/exec-input"
    } else {
        path.as_str()
    };
    let resp = match route {
        "/upload" => {
            let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
            let mut n: u64 = 0;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return Ok(respond(400, "body error"));
                };
                if let Some(d) = frame.data_ref() {
                    n += d.len() as u64;
                    hasher.update(d);
                }
            }
            respond(200, format!("{n} {}", hex(hasher.finish().as_ref())))
        }
        "/download" => {
            let size: u64 = query_value(&target, "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut r = Response::new(PatternBody::new(size).boxed());
            if query_value(&target, "length").is_some() {
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            }
            r
        }
        "/sse" => {
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            let st = state.clone();
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"data: first\n\n")).await;
                st.release.notified().await;
                let _ = tx.send(Bytes::from_static(b"data: second\n\n")).await;
            });
            let mut r = Response::new(ChannelBody(rx).boxed());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            r
        }
        "/exec-input" => {
            // `ATTACH_CONTAINER_INPUT`: a streaming request body, acknowledged chunk by
            // chunk as it is read.
            let tx = state.chunks.lock().unwrap().clone();
            let mut body = req.into_body();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    state
                        .inputs_aborted
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    state.arrived.notify_waiters();
                    break;
                };
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    if let Some(tx) = &tx {
                        let _ = tx.send(data);
                    }
                }
            }
            respond(200, format!("received {total}"))
        }
        "/hold" => {
            state.release.notified().await;
            respond(200, "released")
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            respond(200, "never")
        }
        "/redirect" => {
            let mut r = respond(307, "");
            let loc = format!(
                "{}/service/marathon/v2/events?x=%2F",
                query_value(&target, "to").unwrap_or("http://unused")
            );
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&loc).unwrap());
            r
        }
        "/dcos-metadata/dcos-version.json" => {
            let mut r = respond(
                200,
                r#"{"version": "2.2.0", "dcos-variant": "open", "dcos-image-commit": "test"}"#,
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        "/status" => {
            let code: u16 = query_value(&target, "code")
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            let mut r = Response::new(Empty::new().map_err(|e| match e {}).boxed());
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r.headers_mut()
                .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            r
        }
        "/head" => {
            let mut r = respond(
                200,
                if req.method() == Method::HEAD {
                    ""
                } else {
                    "x"
                },
            );
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1234"));
            r
        }
        "/cookies" => {
            let mut r = respond(200, "cookies");
            r.headers_mut()
                .append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
            r.headers_mut()
                .append(header::SET_COOKIE, HeaderValue::from_static("b=2; Path=/"));
            r
        }
        "/hop" => {
            let mut r = respond(200, "hop");
            let h = r.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("x-hop-secret"));
            h.insert("x-hop-secret", HeaderValue::from_static("1"));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic"),
            );
            h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
            h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
            h.insert("x-end-to-end", HeaderValue::from_static("kept"));
            r
        }
        "/ws" => {
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                return Ok(respond(400, "not a websocket request"));
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
            let mut r = respond(101, "");
            let h = r.headers_mut();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(
                header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&derive_accept_key(key.as_bytes())).unwrap(),
            );
            r
        }
        _ => respond(200, format!("ok {target}")),
    };
    Ok(resp)
}

/// `POST /acs/api/v1/auth/login` (reference §7): checks the RS256 login token's
/// signature with the account's public key (or the password), and mints a token that
/// lives `lifetime`.
async fn login_route(state: &Arc<State>, req: Request<Incoming>) -> Response<TestBody> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Some(account) = state.login.lock().unwrap().clone() else {
        return respond(404, "no login");
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return respond(400, "body error"),
    };
    tokio::time::sleep(account.delay).await;
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return respond(400, r#"{"code":"ERR_MALFORMED"}"#),
    };
    let now_unix = unix_now();
    let verified = || -> bool {
        if account.refuse || request["uid"] != account.uid.as_str() {
            return false;
        }
        if let (Some(pw), Some(given)) = (&account.password, request["password"].as_str()) {
            return pw == given;
        }
        let (Some(key), Some(jwt)) = (&account.public_key, request["token"].as_str()) else {
            return false;
        };
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header, payload, sig] = parts[..] else {
            return false;
        };
        let decode = |p: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
        };
        let (Some(h), Some(claims), Ok(sig)) =
            (decode(header), decode(payload), URL_SAFE_NO_PAD.decode(sig))
        else {
            return false;
        };
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key,
        );
        let exp = claims["exp"].as_u64().unwrap_or(0);
        h["alg"] == "RS256"
            && claims["uid"] == account.uid.as_str()
            && exp > now_unix
            && exp <= now_unix + 600
            && public
                .verify(format!("{header}.{payload}").as_bytes(), &sig)
                .is_ok()
    }();
    let mut logins = state.logins.lock().unwrap();
    let previous_expiry = logins
        .iter()
        .rev()
        .find(|l| l.ok)
        .and_then(|_| state.expiry.lock().unwrap().values().max().copied());
    logins.push(LoginRecord {
        at: std::time::Instant::now(),
        ok: verified,
        previous_expiry,
    });
    let n = logins.len();
    drop(logins);
    if !verified {
        let mut r = respond(
            401,
            r#"{"title":"Bad credentials","description":"Login token signature cannot be verified.","code":"ERR_INVALID_CREDENTIALS"}"#,
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("acsjwt"));
        return r;
    }
    // Whole seconds, rounded down: the proxy never thinks a token lives longer than it does.
    let exp = now_unix + account.lifetime.as_secs();
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"uid":"{}","exp":{exp},"n":{n}}}"#,
        account.uid
    ));
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.bWludGVk");
    state
        .expiry
        .lock()
        .unwrap()
        .insert(token.clone(), std::time::Instant::now() + account.lifetime);
    state.accepted.lock().unwrap().insert(token.clone());
    respond(200, serde_json::json!({ "token": token }).to_string())
}

fn query_value<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A deterministic byte pattern, streamed in 64 KiB frames without allocating per frame.
pub struct PatternBody {
    remaining: u64,
    block: Bytes,
}

/// Frame size of [`PatternBody`].
pub const BLOCK: usize = 64 * 1024;

fn pattern_block() -> Bytes {
    // xorshift: incompressible, and position-dependent within a block.
    let mut x: u32 = 0x9E37_79B9;
    (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

impl PatternBody {
    pub fn new(size: u64) -> Self {
        Self {
            remaining: size,
            block: pattern_block(),
        }
    }

    /// The SHA-256 of `size` bytes of the pattern, hex.
    pub fn digest(size: u64) -> String {
        let block = pattern_block();
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        let mut left = size;
        while left > 0 {
            let n = left.min(BLOCK as u64) as usize;
            h.update(&block[..n]);
            left -= n as u64;
        }
        hex(h.finish().as_ref())
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(BLOCK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.block.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }
}

/// A body fed from a channel: each message is one frame, sent as soon as it is queued.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// A cluster config pointing at `url`, as discovery would produce it.
pub fn cluster(url: &str, token: Option<&str>, ssl_verify: SslVerify) -> ClusterConfig {
    ClusterConfig {
        source: ConfigSource::EnvOnly,
        dcos_dir: std::env::temp_dir(),
        name: Some("test-cluster".into()),
        dcos_url: url.parse().unwrap(),
        token: token.map(|t| Token::new(t).unwrap()),
        ssl_verify,
        timeout: None,
        origins: Default::default(),
    }
}

/// Settings for a test proxy: `127.0.0.1:0`, short grace.
pub fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        shutdown_grace: Duration::from_secs(5),
        ..Settings::default()
    }
}

/// A proxy running in-process.
pub struct RunningProxy {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl RunningProxy {
    /// A proxy served by `task` on `addr` that stops when `stop` is sent.
    pub fn new(addr: SocketAddr, stop: oneshot::Sender<()>, task: JoinHandle<()>) -> Self {
        Self {
            addr,
            url: format!("http://{addr}"),
            stop: Some(stop),
            task,
        }
    }

    /// Ask the proxy to shut down (as SIGTERM would).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings as the command line `args` (and environment `env`) would give them, on
/// `127.0.0.1:0`.
pub fn settings_with(args: &[&str], env: &[(&str, &str)]) -> Settings {
    let mut full = vec!["dcos-token-proxy", "--listen", "127.0.0.1:0"];
    full.extend_from_slice(args);
    let cli = <dcos_token_proxy::cli::Cli as clap::Parser>::try_parse_from(full)
        .expect("valid test flags");
    let mut s = Settings::resolve(
        &cli,
        &dcos_token_proxy::settings::FileSettings::default(),
        &dcos_token_proxy::env::Env::from_pairs(env.iter().copied()),
    )
    .expect("valid test settings");
    s.shutdown_grace = Duration::from_secs(5);
    s
}

/// A fake master and a proxy in front of it started with `args` and `env`.
pub async fn start(args: &[&str], env: &[(&str, &str)]) -> (FakeMaster, RunningProxy) {
    let master = FakeMaster::start().await;
    let proxy = start_proxy_with(
        cluster(&master.url, Some(VALID), SslVerify::System),
        settings_with(args, env),
    )
    .await;
    (master, proxy)
}

/// Start the proxy for `cluster` with `settings`.
pub async fn start_proxy_with(cluster: ClusterConfig, settings: Settings) -> RunningProxy {
    let proxy = Proxy::bind(&settings, &cluster)
        .await
        .expect("proxy starts");
    let addr = proxy.local_addr().expect("a TCP test proxy");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.serve(async move {
        let _ = rx.await;
    }));
    RunningProxy::new(addr, tx, task)
}

/// Start the proxy in front of the master at `url` with the valid token and `ssl_verify`.
pub async fn start_proxy_to(url: &str, ssl_verify: SslVerify) -> RunningProxy {
    start_proxy_with(cluster(url, Some(VALID), ssl_verify), test_settings()).await
}

/// Start the proxy in front of `master` with the valid token.
pub async fn start_proxy(master: &FakeMaster) -> RunningProxy {
    start_proxy_to(&master.url, SslVerify::System).await
}

/// A plain-HTTP client for talking to the proxy.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn body_of(b: impl Into<Bytes>) -> TestBody {
    full(b)
}

/// Send a request and collect the response body.
pub async fn send(req: Request<TestBody>) -> (http::response::Parts, Bytes) {
    let resp = client()
        .request(req)
        .await
        .expect("request through the proxy");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("response body").to_bytes();
    (parts, bytes)
}

/// GET `url` with optional headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (http::response::Parts, Bytes) {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(empty()).unwrap()).await
}

/// Write raw bytes to `addr` and read the whole answer until the server closes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("raw exchange finished")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Read from `s` until the end of a header block (`\r\n\r\n`), returning it.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("header block within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before a full header block: {buf:?}"
        );
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A one-shot raw TCP "master" that reads one request head and answers with `script`
/// (or just closes the connection when `script` is empty).
pub async fn raw_master(script: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = read_head(&mut s).await;
            if !script.is_empty() {
                let _ = s.write_all(script).await;
            }
            let _ = s.shutdown().await;
        }
    });
    addr
}

/// A WebSocket round trip through `proxy_addr` to the master's `/ws`.
pub async fn ws_echo(proxy_addr: SocketAddr, text: &str) -> String {
    ws_echo_under(proxy_addr, "", text).await
}

/// [`ws_echo`] with the path under `prefix` (a path secret: `/<secret>`).
pub async fn ws_echo_under(proxy_addr: SocketAddr, prefix: &str, text: &str) -> String {
    let stream = TcpStream::connect(proxy_addr).await.unwrap();
    let url = format!("ws://{proxy_addr}{prefix}/ws");
    let (mut ws, resp) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text(text)).await.unwrap();
    let reply = ws.next().await.expect("an echo").unwrap();
    let _ = ws.close(None).await;
    reply.into_text().unwrap().to_string()
}

/// Test TLS material: a CA and a server certificate it signed.
pub struct TestPki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Make a CA and a server certificate for `names` (DNS names or IPs).
pub fn test_pki(names: &[&str]) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test DC/OS CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(server_config),
    }
}

/// Send `head` (a request head without its final blank line; `Connection: close` is
/// added) and return the status code and the whole answer.
pub async fn raw(addr: SocketAddr, head: &str) -> (u16, String) {
    let req = format!("{head}\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(addr, req.as_bytes()).await;
    (status_of(&answer), answer)
}

/// The status code of a raw answer.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// The status codes of every answer in `answers` (several on one connection), in order.
pub fn statuses_of(answers: &str) -> Vec<u16> {
    answers
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| answers[at + 9..].get(..3)?.parse().ok())
        .collect()
}

/// The body of a raw answer.
pub fn raw_body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Assert a refusal: the status, the body names `needle`, and the master saw nothing.
pub fn assert_refused(
    master: &FakeMaster,
    (status, answer): &(u16, String),
    want: u16,
    needle: &str,
) {
    assert_eq!(*status, want, "{answer}");
    let body = raw_body(answer);
    assert!(body.starts_with("dcos-token-proxy: "), "{answer}");
    assert!(body.contains(needle), "{needle:?} not in {answer}");
    assert!(
        master.seen().is_empty(),
        "the master saw a refused request: {:?}",
        master.seen()
    );
}
