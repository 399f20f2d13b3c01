//! Issue 12, "the laptop tunnel": the master reached through an HTTP CONNECT proxy (from
//! the proxy variables or `--upstream-proxy`), a SOCKS5 proxy, an `ssh -L`-style forward
//! with `--tls-server-name`, and a `--proxy-command` transport. Every piece runs for real
//! on `127.0.0.1:0`: the proxies and the relay are small servers written here (the relay
//! is a python3 script), and the master is the fake master of `common`.
//!
//! Masters that must only be reachable through a proxy are named `*.invalid` (RFC 6761:
//! such names never resolve), so a request that went around the proxy fails.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use common::{
    FakeMaster, RunningProxy, VALID, cluster, get, read_head, start_proxy_with, test_pki, ws_echo,
};
use dcos_token_proxy::cli::Cli;
use dcos_token_proxy::dcos::config::SslVerify;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::settings::{FileSettings, Settings};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Failure guard for every wait; a healthy run needs a small fraction of it.
const WAIT: Duration = Duration::from_secs(10);
/// A proxy password that must never appear anywhere.
const PROXY_PASSWORD: &str = "pr0xy-pa55w0rd-9c1e";
/// `Basic base64("alice:pr0xy-pa55w0rd-9c1e")`.
const PROXY_BASIC: &str = "Basic YWxpY2U6cHIweHktcGE1NXcwcmQtOWMxZQ==";
/// A master name that never resolves (RFC 6761): only a proxy can reach it.
const HIDDEN: &str = "dcos-master.invalid";

/// Settings as `args` and `env` would give them, on `127.0.0.1:0`.
fn settings_with(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, String> {
    let mut full = vec!["dcos-token-proxy", "--listen", "127.0.0.1:0"];
    full.extend_from_slice(args);
    let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
    let mut s = Settings::resolve(
        &cli,
        &FileSettings::default(),
        &Env::from_pairs(env.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    s.shutdown_grace = Duration::from_secs(5);
    Ok(s)
}

/// A proxy in front of the master at `url` with `args` and `env`.
async fn proxy_to(
    url: &str,
    ssl_verify: SslVerify,
    args: &[&str],
    env: &[(&str, &str)],
) -> RunningProxy {
    let settings = settings_with(args, env).expect("valid test settings");
    start_proxy_with(cluster(url, Some(VALID), ssl_verify), settings).await
}

fn write_ca(dir: &Path, pem: &str) -> std::path::PathBuf {
    let path = dir.join("dcos_ca.crt");
    std::fs::write(&path, pem).unwrap();
    path
}

fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

// ---------------------------------------------------------------------------------------
// An HTTP CONNECT proxy (RFC 9110 §9.3.6)
// ---------------------------------------------------------------------------------------

/// What the CONNECT proxy does with a tunnel request.
#[derive(Clone, Copy)]
enum Answer {
    /// Tunnel to the master when the credentials match.
    Tunnel,
    /// Refuse every CONNECT with 403.
    Forbid,
}

/// One CONNECT request as the proxy saw it.
#[derive(Debug, Clone)]
struct ConnectSeen {
    /// `host:port` from the request line.
    target: String,
    /// The `Proxy-Authorization` value, if any.
    auth: Option<String>,
}

/// A CONNECT proxy on `127.0.0.1:0` that requires `Proxy-Authorization: <auth>` (when
/// given) and tunnels every accepted CONNECT to `master`, whatever host it names.
struct ConnectProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<ConnectSeen>>>,
    /// TCP connections accepted (tunnel or not).
    connections: Arc<Mutex<usize>>,
}

impl ConnectProxy {
    async fn start(master: SocketAddr, auth: Option<&'static str>, answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (seen2, conns2) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                *conns2.lock().unwrap() += 1;
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let head = read_head(&mut client).await;
                    let mut lines = head.split("\r\n");
                    let request = lines.next().unwrap_or_default().to_owned();
                    let got = lines.find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("proxy-authorization")
                            .then(|| v.trim().to_owned())
                    });
                    let mut parts = request.split(' ');
                    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
                    seen.lock().unwrap().push(ConnectSeen {
                        target: target.to_owned(),
                        auth: got.clone(),
                    });
                    let reply: &[u8] = if method != Some("CONNECT") {
                        b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n"
                    } else if matches!(answer, Answer::Forbid) {
                        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"
                    } else if auth.is_some() && got.as_deref() != auth {
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                          proxy-authenticate: Basic realm=\"corp\"\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 Connection established\r\n\r\n"
                    };
                    let _ = client.write_all(reply).await;
                    if !reply.starts_with(b"HTTP/1.1 200") {
                        return;
                    }
                    if let Ok(mut upstream) = TcpStream::connect(master).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<ConnectSeen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

#[tokio::test]
async fn https_proxy_with_credentials_carries_requests_and_no_password_is_in_the_output() {
    let pki = test_pki(&[HIDDEN]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let proxy = ConnectProxy::start(master.addr, Some(PROXY_BASIC), Answer::Tunnel).await;
    let home = tempfile::tempdir().unwrap();
    let ca = write_ca(home.path(), &pki.ca_pem);
    let url = format!("https://{HIDDEN}:{}", master.addr.port());
    let proxy_url = format!("http://alice:{PROXY_PASSWORD}@{}", proxy.addr);
    let mut child = Child::spawn(
        home.path(),
        &["--upstream", &url, "--listen", "127.0.0.1:0"],
        &[
            ("RUST_LOG", "trace"),
            ("DCOS_ACS_TOKEN", VALID),
            ("DCOS_SSL_VERIFY", ca.to_str().unwrap()),
            ("HTTPS_PROXY", &proxy_url),
        ],
    );
    let base = child.base().await;
    for path in ["/one", "/two"] {
        let (parts, body) = get(&format!("{base}{path}"), &[]).await;
        assert_eq!(parts.status, StatusCode::OK, "{}", text(&body));
    }
    // A WebSocket through the tunnel as well.
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    assert_eq!(ws_echo(addr, "via proxy").await, "via proxy");
    assert_eq!(
        master.last().authorization(),
        Some(format!("token={VALID}").as_str())
    );
    let seen = proxy.seen();
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!(s.target, format!("{HIDDEN}:{}", master.addr.port()));
        assert_eq!(s.auth.as_deref(), Some(PROXY_BASIC));
    }
    let out = child.stop().await;
    // The startup line names the proxy, without its credentials.
    assert!(
        out.contains(&format!("proxy=http://{}", proxy.addr)),
        "no proxy in the identity line:\n{out}"
    );
    for needle in [PROXY_PASSWORD, "YWxpY2U6cHIweHk", "alice:"] {
        assert!(!out.contains(needle), "{needle:?} in the output:\n{out}");
    }
    // The check could have failed: this was trace-level output of a TLS session.
    assert!(out.contains("ClientHello"), "no trace lines:\n{out}");
}

#[tokio::test]
async fn lower_case_and_explicit_proxy_settings_are_honoured_and_none_ignores_them() {
    let master = FakeMaster::start().await;
    let proxy = ConnectProxy::start(master.addr, None, Answer::Tunnel).await;
    let hidden = format!("http://{HIDDEN}:{}", master.addr.port());
    let via = format!("http://{}", proxy.addr);

    // `http_proxy` (lower case) for an http:// master.
    let p = proxy_to(&hidden, SslVerify::System, &[], &[("http_proxy", &via)]).await;
    let (parts, body) = get(&format!("{}/lower", p.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{}", text(&body));
    assert_eq!(master.last().target, "/lower");

    // `--upstream-proxy URL` with no variables at all; `ALL_PROXY` is overridden.
    let p = proxy_to(
        &hidden,
        SslVerify::System,
        &["--upstream-proxy", &via],
        &[("ALL_PROXY", "http://127.0.0.1:9")],
    )
    .await;
    let (parts, body) = get(&format!("{}/flag", p.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{}", text(&body));
    assert_eq!(master.last().target, "/flag");
    let before = proxy.connections();

    // `--upstream-proxy none`: the variables are ignored and the master is reached directly.
    let p = proxy_to(
        &master.url,
        SslVerify::System,
        &["--upstream-proxy", "none"],
        &[("HTTP_PROXY", &via)],
    )
    .await;
    let (parts, _) = get(&format!("{}/direct", p.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(master.last().target, "/direct");
    assert_eq!(
        proxy.connections(),
        before,
        "--upstream-proxy none used the proxy"
    );
}

#[tokio::test]
async fn no_proxy_matching_the_master_skips_the_proxy() {
    let master = FakeMaster::start().await;
    let proxy = ConnectProxy::start(master.addr, None, Answer::Tunnel).await;
    let via = format!("http://{}", proxy.addr);

    // Without NO_PROXY the request goes through the proxy (so the check below can fail).
    let p = proxy_to(&master.url, SslVerify::System, &[], &[("HTTP_PROXY", &via)]).await;
    let (parts, _) = get(&format!("{}/proxied", p.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(proxy.connections(), 1);

    for no_proxy in [
        ("NO_PROXY", "example.com,127.0.0.1"),
        ("no_proxy", "127.0.0.0/8"),
    ] {
        let p = proxy_to(
            &master.url,
            SslVerify::System,
            &[],
            &[("HTTP_PROXY", &via), no_proxy],
        )
        .await;
        let (parts, _) = get(&format!("{}/direct", p.url), &[]).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(master.last().target, "/direct");
        assert_eq!(
            proxy.connections(),
            1,
            "{no_proxy:?} did not skip the proxy"
        );
    }
}

#[tokio::test]
async fn a_proxy_that_refuses_connect_or_wants_credentials_gets_its_own_502() {
    let master = FakeMaster::start().await;
    let hidden = format!("http://{HIDDEN}:{}", master.addr.port());

    // Wrong credentials: 407.
    let proxy = ConnectProxy::start(master.addr, Some(PROXY_BASIC), Answer::Tunnel).await;
    let wrong = format!("http://alice:wrong-{PROXY_PASSWORD}@{}", proxy.addr);
    let p = proxy_to(&hidden, SslVerify::System, &[], &[("HTTP_PROXY", &wrong)]).await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    let body = text(&body);
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("407"), "{body}");
    assert!(body.contains("credentials"), "{body}");
    assert!(body.contains(&format!("http://{}", proxy.addr)), "{body}");
    assert!(!body.contains(PROXY_PASSWORD), "{body}");
    assert_eq!(proxy.seen().len(), 1);

    // No credentials at all: 407 says to add them.
    let bare = format!("http://{}", proxy.addr);
    let p = proxy_to(&hidden, SslVerify::System, &[], &[("HTTP_PROXY", &bare)]).await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    let body = text(&body);
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("user:password@"), "{body}");

    // A proxy that refuses the tunnel.
    let forbid = ConnectProxy::start(master.addr, None, Answer::Forbid).await;
    let via = format!("http://alice:{PROXY_PASSWORD}@{}", forbid.addr);
    let p = proxy_to(&hidden, SslVerify::System, &["--upstream-proxy", &via], &[]).await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    let body = text(&body);
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("refused to CONNECT"), "{body}");
    assert!(body.contains("NO_PROXY"), "{body}");
    assert!(!body.contains(PROXY_PASSWORD), "{body}");
    assert!(master.seen().is_empty());
}

#[test]
fn unusable_proxy_settings_are_refused_with_the_setting_named() {
    for (args, env, needles) in [
        (
            vec!["--upstream-proxy", "ftp://proxy.example:21"],
            vec![],
            vec!["--upstream-proxy", "ftp", "socks5h://"],
        ),
        (
            vec![],
            vec![("HTTPS_PROXY", "gopher://x:70")],
            vec!["HTTPS_PROXY", "gopher"],
        ),
        (
            vec!["--upstream-proxy", &*format!("http://u:{PROXY_PASSWORD}@")],
            vec![],
            vec!["--upstream-proxy", "host"],
        ),
        (
            vec![
                "--proxy-command",
                "ssh -W %h:%p bastion",
                "--upstream-proxy",
                "http://p:3128",
            ],
            vec![],
            vec!["--proxy-command", "--upstream-proxy"],
        ),
        (
            vec!["--tls-server-name", "not a name"],
            vec![],
            vec!["--tls-server-name"],
        ),
    ] {
        let err = settings_with(&args, &env).expect_err("refused");
        for n in needles {
            assert!(err.contains(n), "{n:?} missing from: {err}");
        }
        assert!(!err.contains(PROXY_PASSWORD), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// SOCKS5 (RFC 1928)
// ---------------------------------------------------------------------------------------

/// A SOCKS5 server on `127.0.0.1:0` that connects every CONNECT request to `master` and
/// records the address it was asked for. With `login`, it requires that user and
/// password (RFC 1929); with `refuse`, it answers every request with "connection
/// refused" (REP 0x05).
async fn socks5(
    master: SocketAddr,
    login: Option<(&'static str, &'static str)>,
    refuse: bool,
) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                // Greeting: VER NMETHODS METHODS...; choose "no authentication" or
                // "user/password".
                let mut head = [0u8; 2];
                c.read_exact(&mut head).await.ok()?;
                let mut methods = vec![0u8; head[1] as usize];
                c.read_exact(&mut methods).await.ok()?;
                if let Some((user, pass)) = login {
                    if !methods.contains(&2) {
                        c.write_all(&[5, 0xff]).await.ok()?;
                        return None;
                    }
                    c.write_all(&[5, 2]).await.ok()?;
                    // VER ULEN UNAME PLEN PASSWD
                    let mut ver_len = [0u8; 2];
                    c.read_exact(&mut ver_len).await.ok()?;
                    let mut u = vec![0u8; ver_len[1] as usize];
                    c.read_exact(&mut u).await.ok()?;
                    let mut plen = [0u8; 1];
                    c.read_exact(&mut plen).await.ok()?;
                    let mut p = vec![0u8; plen[0] as usize];
                    c.read_exact(&mut p).await.ok()?;
                    let ok = u == user.as_bytes() && p == pass.as_bytes();
                    c.write_all(&[1, if ok { 0 } else { 1 }]).await.ok()?;
                    if !ok {
                        return None;
                    }
                } else {
                    c.write_all(&[5, 0]).await.ok()?;
                }
                // Request: VER CMD RSV ATYP DST.ADDR DST.PORT.
                let mut req = [0u8; 4];
                c.read_exact(&mut req).await.ok()?;
                let host = match req[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        c.read_exact(&mut ip).await.ok()?;
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    3 => {
                        let mut len = [0u8; 1];
                        c.read_exact(&mut len).await.ok()?;
                        let mut name = vec![0u8; len[0] as usize];
                        c.read_exact(&mut name).await.ok()?;
                        String::from_utf8_lossy(&name).into_owned()
                    }
                    _ => return None,
                };
                let mut port = [0u8; 2];
                c.read_exact(&mut port).await.ok()?;
                let _ = tx.send(format!("{host}:{}", u16::from_be_bytes(port)));
                let rep = if refuse { 5 } else { 0 };
                c.write_all(&[5, rep, 0, 1, 0, 0, 0, 0, 0, 0]).await.ok()?;
                if refuse {
                    return None;
                }
                let mut up = TcpStream::connect(master).await.ok()?;
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
                Some(())
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn socks5h_carries_requests_with_the_name_resolved_by_the_proxy() {
    let master = FakeMaster::start().await;
    let (socks, mut asked) = socks5(master.addr, Some(("alice", PROXY_PASSWORD)), false).await;
    let hidden = format!("http://{HIDDEN}:{}", master.addr.port());
    let via = format!("socks5h://alice:{PROXY_PASSWORD}@{socks}");
    let p = proxy_to(&hidden, SslVerify::System, &[], &[("ALL_PROXY", &via)]).await;
    let (parts, body) = get(&format!("{}/socks", p.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{}", text(&body));
    assert_eq!(master.last().target, "/socks");
    assert_eq!(
        asked.recv().await.unwrap(),
        format!("{HIDDEN}:{}", master.addr.port())
    );
    // And a WebSocket through it.
    assert_eq!(ws_echo(p.addr, "socks").await, "socks");

    // Wrong credentials: the SOCKS failure is named, the password is not.
    let wrong = format!("socks5h://alice:not-{PROXY_PASSWORD}@{socks}");
    let p = proxy_to(
        &hidden,
        SslVerify::System,
        &["--upstream-proxy", &wrong],
        &[],
    )
    .await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    let body = text(&body);
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("SOCKS5 proxy"), "{body}");
    assert!(body.contains("did not accept the login"), "{body}");
    assert!(body.contains("user:password@"), "{body}");
    assert!(!body.contains(PROXY_PASSWORD), "{body}");
}

#[tokio::test]
async fn a_socks_handshake_failure_gets_its_own_502() {
    let master = FakeMaster::start().await;
    let (socks, _asked) = socks5(master.addr, None, true).await;
    let via = format!("socks5://{socks}");
    let p = proxy_to(
        &master.url,
        SslVerify::System,
        &["--upstream-proxy", &via],
        &[],
    )
    .await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    let body = text(&body);
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("SOCKS5 proxy"), "{body}");
    assert!(body.contains(&via), "{body}");
    assert!(body.contains("refused"), "{body}");
    assert!(master.seen().is_empty());
}

// ---------------------------------------------------------------------------------------
// --tls-server-name (an `ssh -L` forward)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_server_name_verifies_a_forwarded_master_and_its_absence_is_explained() {
    let pki = test_pki(&["master.mesos"]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), &pki.ca_pem);
    let url = format!("https://127.0.0.1:{}", master.addr.port());

    let p = proxy_to(&url, SslVerify::CaBundle(ca.clone()), &[], &[]).await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    let body = text(&body);
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("--tls-server-name master.mesos"), "{body}");
    assert!(body.contains("upstream.tls_server_name"), "{body}");
    assert!(master.seen().is_empty());

    let p = proxy_to(
        &url,
        SslVerify::CaBundle(ca),
        &["--tls-server-name", "master.mesos"],
        &[],
    )
    .await;
    let (parts, body) = get(&format!("{}/forwarded", p.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{}", text(&body));
    assert_eq!(master.last().target, "/forwarded");
    assert_eq!(ws_echo(p.addr, "forwarded").await, "forwarded");
}

// ---------------------------------------------------------------------------------------
// --proxy-command
// ---------------------------------------------------------------------------------------

/// A stdio relay, as `ssh -W host:port` is: connects to argv[1]:argv[2] and copies bytes
/// both ways; appends one line to argv[3] per start so the test can count spawns.
const RELAY: &str = r#"
import os, socket, sys, threading
host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(log, "a") as f:
    f.write("spawned\n")
s = socket.create_connection(("127.0.0.1" if host.endswith(".invalid") else host, port))
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(b)
threading.Thread(target=up, daemon=True).start()
while True:
    b = s.recv(65536)
    if not b:
        break
    os.write(1, b)
"#;

fn spawns(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_proxy_command_carries_requests_streams_and_websockets_one_spawn_per_connection() {
    let pki = test_pki(&[HIDDEN]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), &pki.ca_pem);
    let relay = dir.path().join("relay.py");
    std::fs::write(&relay, RELAY).unwrap();
    let log = dir.path().join("spawns.log");
    let command = format!("python3 {} %h %p {}", relay.display(), log.display());
    let url = format!("https://{HIDDEN}:{}", master.addr.port());
    let p = proxy_to(
        &url,
        SslVerify::CaBundle(ca),
        // One serving thread: each thread keeps its own idle master connections.
        &["--proxy-command", &command, "--worker-threads", "1"],
        &[("HTTPS_PROXY", "http://127.0.0.1:9")],
    )
    .await;

    // Sequential requests share one pooled connection, so one spawn.
    for i in 0..3 {
        let (parts, body) = get(&format!("{}/seq/{i}", p.url), &[]).await;
        assert_eq!(parts.status, StatusCode::OK, "{}", text(&body));
    }
    assert_eq!(master.last().target, "/seq/2");
    assert_eq!(spawns(&log), 1, "pooled connections were not reused");

    // A streaming response: the first event arrives before the master sends the second.
    let resp = common::client()
        .request(
            http::Request::get(format!("{}/sse", p.url))
                .body(common::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("first event")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    master.release();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("rest of the stream")
        .unwrap()
        .to_bytes();
    assert_eq!(&rest[..], b"data: second\n\n");

    // A WebSocket through the command.
    assert_eq!(ws_echo(p.addr, "over stdio").await, "over stdio");
    assert_eq!(master.last().target, "/ws");
}

#[tokio::test]
async fn a_proxy_command_that_exits_or_cannot_start_gives_a_clear_502() {
    let master = FakeMaster::start().await;
    let failing = "echo 'ssh: connect to host bastion port 22: Connection refused' >&2; exit 255";
    let p = proxy_to(
        &master.url,
        SslVerify::System,
        &["--proxy-command", failing],
        &[],
    )
    .await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    let body = text(&body);
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains(failing), "the command is not named: {body}");
    assert!(
        body.contains("ssh: connect to host bastion port 22: Connection refused"),
        "its stderr is not shown: {body}"
    );
    assert!(body.contains("255"), "{body}");

    // Long stderr is cut.
    let chatty = "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1";
    let p = proxy_to(
        &master.url,
        SslVerify::System,
        &["--proxy-command", chatty],
        &[],
    )
    .await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    assert!(body.len() < 8192, "{} bytes", body.len());

    let missing = "no-such-command-7f2e %h %p";
    let p = proxy_to(
        &master.url,
        SslVerify::System,
        &["--proxy-command", missing],
        &[],
    )
    .await;
    let (parts, body) = get(&format!("{}/x", p.url), &[]).await;
    let body = text(&body);
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("could not start"), "{body}");
    assert!(body.contains("no-such-command-7f2e"), "{body}");
    assert!(body.contains("upstream.proxy_command"), "{body}");
    assert!(master.seen().is_empty());
}

// ---------------------------------------------------------------------------------------
// The binary, for the trace-level output check
// ---------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_dcos-token-proxy");
const LISTENING: &str = "dcos-token-proxy listening on http://";

/// The real binary with an empty environment but for `HOME` and `env`; its stdout and
/// stderr lines arrive on one channel. Killed on drop.
struct Child {
    child: std::process::Child,
    rx: mpsc::UnboundedReceiver<String>,
    lines: Vec<String>,
}

impl Child {
    fn spawn(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env_clear()
            .env("HOME", home)
            .envs(env.iter().copied())
            .current_dir(home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dcos-token-proxy");
        let (tx, rx) = mpsc::unbounded_channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            rx,
            lines: Vec::new(),
        }
    }

    /// Wait for the `listening on` line; the base URL without a trailing `/`.
    async fn base(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.rx.recv()).await {
                Ok(Some(line)) => {
                    let found = line
                        .strip_prefix(LISTENING)
                        .map(|rest| format!("http://{}", rest.trim_end_matches('/')));
                    self.lines.push(line);
                    if let Some(base) = found {
                        return base;
                    }
                }
                _ => panic!("no `listening on` line:\n{}", self.lines.join("\n")),
            }
        }
    }

    /// SIGTERM, then all the output until the process closes its pipes.
    async fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        loop {
            match tokio::time::timeout(WAIT, self.rx.recv()).await {
                Ok(Some(line)) => self.lines.push(line),
                Ok(None) => break,
                Err(_) => panic!("the proxy did not exit:\n{}", self.lines.join("\n")),
            }
        }
        self.lines.join("\n")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
