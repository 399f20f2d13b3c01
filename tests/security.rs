//! Issue 4, "lock the door": every rule of the guard and the listener, each shown with a
//! request that passes and one that is refused, and for every refused request the
//! proof that the fake master saw nothing.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    FakeMaster, assert_refused, get, raw, raw_body, raw_exchange, read_head, start, status_of,
    statuses_of, ws_echo,
};
use dcos_token_proxy::settings::ENV_PATH_SECRET;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "test-path-secret-0123456789abcdef";

// ---------------------------------------------------------------------------------------
// Host (DNS rebinding)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rebinding_host_is_refused_and_loopback_names_pass() {
    let (master, proxy) = start(&[], &[]).await;
    let port = proxy.addr.port();
    for host in [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
        "localhost.evil.example".to_owned(),
        format!("localhost.evil.example:{port}"),
        "127.0.0.1.nip.io".to_owned(),
    ] {
        let answer = raw(proxy.addr, &format!("GET /x HTTP/1.1\r\nHost: {host}")).await;
        assert_refused(&master, &answer, 403, "allowed_hosts");
    }
    for (i, host) in [
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("dashboard.localhost:{port}"),
        "localhost".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let (status, answer) = raw(proxy.addr, &format!("GET /ok HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(status, 200, "{host}: {answer}");
        assert_eq!(master.wait_for(i + 1).await.len(), i + 1);
    }
}

#[tokio::test]
async fn every_request_on_a_keep_alive_connection_is_judged_by_its_own_host() {
    // The guard remembers a connection's last admitted Host; a request with another
    // one on the same connection must still be judged afresh.
    let (master, proxy) = start(&[], &[]).await;
    let port = proxy.addr.port();
    let good = format!("localhost:{port}");
    let requests = [
        format!("GET /a HTTP/1.1\r\nHost: {good}\r\n\r\n"),
        "GET /x HTTP/1.1\r\nHost: attacker.example\r\n\r\n".to_owned(),
        format!("GET /b HTTP/1.1\r\nHost: {good}\r\n\r\n"),
        format!("GET /y HTTP/1.1\r\nHost: {good}:1\r\n\r\n"),
        format!("GET /c HTTP/1.1\r\nHost: {good}\r\n\r\n"),
        format!(
            "GET /z HTTP/1.1\r\nHost: {good}\r\nHost: attacker.example\r\nConnection: close\r\n\r\n"
        ),
    ];
    let answer = raw_exchange(proxy.addr, requests.concat().as_bytes()).await;
    let statuses = statuses_of(&answer);
    assert_eq!(statuses, [200, 403, 200, 403, 200, 400], "{answer}");
    let seen: Vec<String> = master.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(seen, ["/a", "/b", "/c"]);
}

#[tokio::test]
async fn allowed_hosts_replace_the_defaults() {
    let (master, proxy) = start(&["--allowed-hosts", "proxy.internal,*.svc.cluster"], &[]).await;
    let answer = raw(proxy.addr, "GET /x HTTP/1.1\r\nHost: localhost").await;
    assert_refused(&master, &answer, 403, "--allowed-hosts");
    let (status, _) = raw(proxy.addr, "GET /x HTTP/1.1\r\nHost: proxy.internal:8079").await;
    assert_eq!(status, 200);
    let (status, _) = raw(proxy.addr, "GET /x HTTP/1.1\r\nHost: a.svc.cluster").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn missing_or_repeated_host_is_400() {
    let (master, proxy) = start(&[], &[]).await;
    let answer = raw(proxy.addr, "GET /x HTTP/1.1").await;
    assert_refused(&master, &answer, 400, "Host");
    let answer = raw(
        proxy.addr,
        "GET /x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example",
    )
    .await;
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert!(master.seen().is_empty());
}

// ---------------------------------------------------------------------------------------
// Browsers: Origin and Sec-Fetch-Site
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_cross_site_origin_is_refused_and_the_proxys_own_origin_passes() {
    let (master, proxy) = start(&[], &[]).await;
    let port = proxy.addr.port();
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost:3000",
        "http://localhost.evil.example",
    ] {
        let answer = raw(
            proxy.addr,
            &format!("POST /v2/apps HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: {origin}\r\nContent-Length: 0"),
        )
        .await;
        assert_refused(&master, &answer, 403, "allowed_origins");
    }
    let answer = raw(
        proxy.addr,
        "GET /img HTTP/1.1\r\nHost: localhost\r\nSec-Fetch-Site: cross-site",
    )
    .await;
    assert_refused(&master, &answer, 403, "cross-site");

    let (status, answer) = raw(
        proxy.addr,
        &format!(
            "GET /ok HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: http://localhost:{port}\r\n\
             Sec-Fetch-Site: same-origin"
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(master.wait_for(1).await[0].target, "/ok");
}

#[tokio::test]
async fn allowed_origins_let_a_chosen_page_in() {
    let (master, proxy) = start(&["--allowed-origins", "http://localhost:3000"], &[]).await;
    let (status, answer) = raw(
        proxy.addr,
        "GET /ok HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost:3000\r\n\
         Sec-Fetch-Site: same-site",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    master.wait_for(1).await;
    let port = proxy.addr.port();
    let answer = raw(
        proxy.addr,
        &format!("GET /x HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost:{port}"),
    )
    .await;
    assert_eq!(answer.0, 403, "the list replaces the default: {}", answer.1);
    assert_eq!(master.seen().len(), 1);
}

/// The handshake a page on `origin` would send for `ws://localhost:PORT/ws`.
fn ws_handshake(host: &str, target: &str, origin: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: {origin}"
    )
}

#[tokio::test]
async fn a_cross_site_websocket_upgrade_is_refused() {
    let (master, proxy) = start(&[], &[]).await;
    let port = proxy.addr.port();
    let host = format!("localhost:{port}");
    let answer = raw(
        proxy.addr,
        &ws_handshake(&host, "/ws", "https://evil.example"),
    )
    .await;
    assert_refused(&master, &answer, 403, "Origin");
    // Same page origin: switched.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = ws_handshake(&host, "/ws", &format!("http://localhost:{port}"));
    s.write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_head(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    // A tool without an Origin (not a browser) is unaffected.
    assert_eq!(ws_echo(proxy.addr, "hi").await, "hi");
}

// ---------------------------------------------------------------------------------------
// Request targets
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn absolute_form_targets_never_choose_the_destination() {
    let (master, proxy) = start(&[], &[]).await;
    let evil = FakeMaster::start().await;
    let answer = raw(
        proxy.addr,
        &format!("GET {}/steal HTTP/1.1\r\nHost: localhost", evil.url),
    )
    .await;
    // 127.0.0.1 is an allowed host name, so this one passes the guard... but goes to
    // the master, not to the "evil" address it names.
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(master.wait_for(1).await[0].target, "/steal");
    assert!(evil.seen().is_empty());

    let answer = raw(
        proxy.addr,
        "GET http://evil.example/steal HTTP/1.1\r\nHost: localhost",
    )
    .await;
    assert_eq!(answer.0, 403, "{}", answer.1);
    assert!(
        raw_body(&answer.1).contains("allowed_hosts"),
        "{}",
        answer.1
    );
    assert_eq!(master.seen().len(), 1, "nothing more forwarded");
}

#[tokio::test]
async fn connect_is_405() {
    let (master, proxy) = start(&[], &[]).await;
    let answer = raw(
        proxy.addr,
        "CONNECT master.example:443 HTTP/1.1\r\nHost: master.example:443",
    )
    .await;
    assert_refused(&master, &answer, 405, "CONNECT");
    assert!(answer.1.contains("allow: GET"), "{}", answer.1);
}

// ---------------------------------------------------------------------------------------
// Path secret
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_path_secret_is_required_and_stripped() {
    let (master, proxy) = start(&[], &[(ENV_PATH_SECRET, SECRET)]).await;
    for target in [
        "/service/marathon/v2/apps".to_owned(),
        "/".to_owned(),
        format!("/{}/x", &SECRET[..SECRET.len() - 1]),
        format!("/{SECRET}x/x"),
        format!("/x/{SECRET}/x"),
    ] {
        let answer = raw(
            proxy.addr,
            &format!("GET {target} HTTP/1.1\r\nHost: localhost"),
        )
        .await;
        assert_refused(&master, &answer, 403, "path secret");
        assert!(!answer.1.contains(SECRET), "{}", answer.1);
    }
    let url = format!("{}/{SECRET}/a%2Fb/c?x=%2F&y", proxy.url);
    let referer = format!("{}/{SECRET}/ui/", proxy.url);
    let (parts, body) = get(&url, &[("referer", referer.as_str())]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "ok /a%2Fb/c?x=%2F&y");
    assert_eq!(master.last().target, "/a%2Fb/c?x=%2F&y");
    assert_eq!(
        master.last().headers["referer"],
        format!("{}/ui/", proxy.url)
    );
    assert!(!format!("{:?}", master.seen()).contains(SECRET));
    // The bare base URL works too.
    let (parts, _) = get(&format!("{}/{SECRET}/", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(master.last().target, "/");
}

#[tokio::test]
async fn redirects_and_websockets_keep_the_path_secret() {
    let (master, proxy) = start(&[], &[(ENV_PATH_SECRET, SECRET)]).await;
    let host = format!("localhost:{}", proxy.addr.port());
    let (status, answer) = raw(
        proxy.addr,
        &format!(
            "GET /{SECRET}/redirect?to={} HTTP/1.1\r\nHost: {host}",
            master.url
        ),
    )
    .await;
    assert_eq!(status, 307, "{answer}");
    assert!(
        answer.contains(&format!(
            "location: http://{host}/{SECRET}/service/marathon/v2/events?x=%2F"
        )),
        "{answer}"
    );

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = ws_handshake(&host, &format!("/{SECRET}/ws"), &format!("http://{host}"));
    s.write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 101"));
    assert_eq!(master.last().target, "/ws");
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn read_only_passes_get_head_options_only() {
    let (master, proxy) = start(&["--read-only"], &[]).await;
    for (i, m) in ["GET", "HEAD", "OPTIONS"].iter().enumerate() {
        let (status, answer) =
            raw(proxy.addr, &format!("{m} /x HTTP/1.1\r\nHost: localhost")).await;
        assert_eq!(status, 200, "{m}: {answer}");
        master.wait_for(i + 1).await;
    }
    let seen = master.seen().len();
    let master_saw_nothing_more = |m: &FakeMaster| assert_eq!(m.seen().len(), seen);
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let (status, answer) = raw(
            proxy.addr,
            &format!("{m} /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0"),
        )
        .await;
        assert_eq!(status, 403, "{m}: {answer}");
        assert!(raw_body(&answer).contains("read_only"), "{answer}");
        master_saw_nothing_more(&master);
    }
    let host = format!("localhost:{}", proxy.addr.port());
    let (status, answer) = raw(
        proxy.addr,
        &ws_handshake(&host, "/ws", &format!("http://{host}")),
    )
    .await;
    assert_eq!(status, 403, "a WebSocket upgrade is refused: {answer}");
    master_saw_nothing_more(&master);
}

#[tokio::test]
async fn deny_paths_and_deny_methods_name_the_rule() {
    let (master, proxy) = start(
        &[
            "--deny-path",
            "/mesos/.*",
            "--deny-path",
            "/service/[^/]+/v2/apps/.*/restart",
            "--deny-methods",
            "DELETE,put",
        ],
        &[],
    )
    .await;
    let answer = raw(
        proxy.addr,
        "GET /mesos/master/state HTTP/1.1\r\nHost: localhost",
    )
    .await;
    assert_refused(&master, &answer, 403, "\"/mesos/.*\"");
    for sneaky in ["/%6Desos/x", "//mesos/x", "/a/../mesos/x"] {
        let answer = raw(
            proxy.addr,
            &format!("GET {sneaky} HTTP/1.1\r\nHost: localhost"),
        )
        .await;
        assert_refused(&master, &answer, 403, "deny_paths");
    }
    let answer = raw(
        proxy.addr,
        "POST /service/marathon/v2/apps/web/restart HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0",
    )
    .await;
    assert_refused(&master, &answer, 403, "restart");
    let answer = raw(
        proxy.addr,
        "DELETE /v2/apps/web HTTP/1.1\r\nHost: localhost",
    )
    .await;
    assert_refused(&master, &answer, 403, "deny_methods");
    let answer = raw(
        proxy.addr,
        "PUT /v2/apps/web HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0",
    )
    .await;
    assert_refused(&master, &answer, 403, "PUT");

    // Anchored: the same words elsewhere pass.
    let (status, _) = raw(proxy.addr, "GET /x/mesos/y HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 200);
    let (status, _) = raw(
        proxy.addr,
        "POST /service/marathon/v2/apps/web HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(master.wait_for(2).await.len(), 2);
}

// ---------------------------------------------------------------------------------------
// Request smuggling shapes and limits
// ---------------------------------------------------------------------------------------

/// Send raw bytes and return the status of the answer (the connection must close).
async fn raw_status(addr: SocketAddr, bytes: &str) -> (u16, String) {
    let answer = raw_exchange(addr, bytes.as_bytes()).await;
    (status_of(&answer), answer)
}

/// Request smuggling shapes, each to be answered 400 without reaching the master.
const SMUGGLING_SHAPES: [&str; 7] = [
    // CL + TE (both orders).
    "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\
     Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
     Content-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
    // Two differing Content-Lengths.
    "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
    "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4, 40\r\n\r\nabcd",
    // obs-fold (a header continued on the next line).
    "GET /x HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n",
    // A transfer coding that is not chunked, and TE on HTTP/1.0.
    "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
    "POST /x HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
];

#[tokio::test]
async fn smuggling_shapes_are_400_and_never_reach_the_master() {
    let (master, proxy) = start(&[], &[]).await;
    let shapes = SMUGGLING_SHAPES;
    let mut passed = Vec::new();
    for shape in shapes {
        let (status, answer) = raw_status(proxy.addr, shape).await;
        if status != 400 || !master.seen().is_empty() {
            passed.push(format!(
                "{shape:?}:\n{answer}\nmaster saw {:?}",
                master.seen()
            ));
        }
    }
    assert!(passed.is_empty(), "{}", passed.join("\n\n"));
}

/// Every shape above (the CL + TE conflict on a GET too, and an oversized head, over
/// the limit and over the server's own first buffer) sent right behind a plain GET on one keep-alive connection: the GET,
/// which the server's lean path answers, is served; the shape, which that path hands
/// to hyper with the bytes it already read, is still refused and never reaches the
/// master.
#[tokio::test]
async fn smuggling_shapes_behind_a_plain_get_are_still_refused() {
    let (master, proxy) = start(&["--max-header-bytes", "8192"], &[]).await;
    let first = "GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let oversized = format!(
        "GET /big HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9_000)
    );
    let beyond_buffer = format!(
        "GET /bigger HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let mut shapes: Vec<(String, u16)> = SMUGGLING_SHAPES
        .iter()
        .map(|shape| ((*shape).to_owned(), 400))
        .collect();
    shapes.extend([
        // The same conflict on a GET, the method the lean path takes.
        (
            "GET /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
                .to_owned(),
            400,
        ),
        (oversized, 431),
        (beyond_buffer, 431),
    ]);
    let mut wrong = Vec::new();
    for (shape, want) in shapes {
        let before = master.seen().len();
        let answer = raw_exchange(proxy.addr, format!("{first}{shape}").as_bytes()).await;
        let statuses = statuses_of(&answer);
        let seen: Vec<String> = master.seen()[before..]
            .iter()
            .map(|s| s.target.clone())
            .collect();
        if statuses != [200, want] || seen != ["/first"] {
            wrong.push(format!(
                "{:?}: statuses {statuses:?}, master saw {seen:?}\n{answer}",
                &shape[..shape.len().min(60)]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[tokio::test]
async fn an_oversized_request_head_is_431() {
    let (master, proxy) = start(&["--max-header-bytes", "16384"], &[]).await;
    let big = "a".repeat(20_000);
    let (status, answer) = raw_status(
        proxy.addr,
        &format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431, "{answer}");
    assert!(master.seen().is_empty());
    let fits = "a".repeat(8_000);
    let (status, _) = raw(
        proxy.addr,
        &format!("GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {fits}"),
    )
    .await;
    assert_eq!(status, 200);
}

/// Slowloris: 300 connections trickle header bytes; a fresh request is still answered,
/// and the trickling connections are cut at the header read timeout although bytes
/// keep arriving.
#[tokio::test]
async fn slowloris_connections_do_not_block_a_fresh_request() {
    const CONNECTIONS: usize = 300;
    let (master, proxy) = start(&["--header-read-timeout", "2s"], &[]).await;
    let addr = proxy.addr;
    let (cut_tx, mut cut_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let cut_tx = cut_tx.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            let _ = s
                .write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Trickle: ")
                .await;
            let mut buf = [0u8; 512];
            // One byte every 200 ms, up to 60 s, until the proxy closes the connection.
            for _ in 0..300 {
                if s.write_all(b"a").await.is_err() {
                    break;
                }
                let read = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf));
                if read.await.is_ok() {
                    break; // closed (or answered): the proxy is done with it
                }
            }
            let _ = cut_tx.send(());
        }));
    }
    drop(cut_tx);

    let fresh = tokio::time::timeout(
        Duration::from_secs(10),
        get(&format!("{}/fresh", proxy.url), &[]),
    )
    .await
    .expect("a fresh request is answered while 300 connections trickle");
    assert_eq!(fresh.0.status, StatusCode::OK);

    let all_cut = tokio::time::timeout(Duration::from_secs(30), async {
        let mut n = 0;
        while cut_rx.recv().await.is_some() {
            n += 1;
        }
        n
    })
    .await
    .expect("every trickling connection is cut within the header read timeout");
    assert_eq!(all_cut, CONNECTIONS);
    assert!(
        master.seen().iter().all(|s| s.target == "/fresh"),
        "no trickled request reached the master"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let (_master, proxy) = start(&["--header-read-timeout", "300ms"], &[]).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Read the rest of the body, then wait for the close (EOF).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was not closed");
}

/// Read from `s` until what was read contains `needle` (within 10 s).
async fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, needle: &[u8]) {
    let mut buf = [0u8; 1024];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("data within 10 s")
            .unwrap();
        assert!(n > 0, "closed before {needle:?}: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Whether the proxy closes `s` within 10 s, reading (and discarding) what comes first.
async fn closed_within_10s(s: &mut TcpStream) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// The header read timeout runs only while a connection waits for a request head (the
/// proxy keeps it per connection, not hyper per request): an answer slower than it, a
/// streamed answer quiet for longer than it and a quiet WebSocket are not cut by it; a
/// connection whose answer is complete is closed by it.
#[tokio::test]
async fn the_header_read_timeout_cuts_only_a_wait_for_a_head() {
    let (master, proxy) = start(&["--header-read-timeout", "300ms"], &[]).await;
    // More than 1.25 timeouts, the longest the proxy may take to close a waiting one.
    let quiet = Duration::from_secs(1);

    // An answer that comes after `quiet`.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    master.wait_count(1).await;
    tokio::time::sleep(quiet).await;
    master.release();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"released").await;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    assert!(
        closed_within_10s(&mut s).await,
        "the idle connection stayed open"
    );

    // A streamed answer (SSE), quiet for `quiet` between its two events.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"data: first").await;
    tokio::time::sleep(quiet).await;
    master.release();
    read_until(&mut s, &mut got, b"data: second").await;
    read_until(&mut s, &mut got, b"0\r\n\r\n").await;
    assert!(
        closed_within_10s(&mut s).await,
        "the idle connection stayed open"
    );

    // A WebSocket, quiet for `quiet`, then busy for as long (a message every 100 ms).
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://{}/ws", proxy.addr);
    let (mut ws, resp) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    tokio::time::sleep(quiet).await;
    use futures_util::{SinkExt, StreamExt};
    for i in 0..10 {
        let text = format!("message {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let reply = ws.next().await.expect("an echo").unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), text);
        tokio::time::sleep(quiet / 10).await;
    }
}

/// A connection past the limit waits (in the waiting room, up to a second) and is served
/// once a slot frees; `tests/hardening.rs` covers the 503 when none frees in time.
#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let (_master, proxy) = start(&["--max-connections", "1"], &[]).await;
    let mut first = TcpStream::connect(proxy.addr).await.unwrap();
    first
        .write_all(b"GET /1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut first).await.starts_with("HTTP/1.1 200"));

    let second = tokio::spawn(raw_exchange(
        proxy.addr,
        b"GET /2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ));
    // Not served while the first connection holds the only slot (a bounded wait for
    // something that must not happen).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "served beyond max_connections");
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("served once the slot is free")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
