//! Issue 9, "hardening": one test per finding of the outside attack run, each named
//! after its finding and each failing on the code before its fix. Every refused request
//! is also checked against the fake master: it must have seen nothing.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    FakeMaster, VALID, assert_refused, cluster, raw, raw_body, raw_exchange, settings_with, start,
};
use dcos_token_proxy::dcos::config::SslVerify;
use dcos_token_proxy::settings::ENV_PATH_SECRET;

const SECRET: &str = "hardening-secret-0123456789abcdef";

// ---------------------------------------------------------------------------------------
// Finding 3: encoded control characters
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn finding_03_encoded_control_characters_are_400_before_any_rule() {
    let (master, proxy) = start(&["--deny-path", "/mesos/.*"], &[]).await;
    for target in [
        "//mesos/master/state%0a",
        "/mesos/master/state%0A",
        "/mesos%00/master/state",
        "/%6desos/x%0d",
        "/x%7f/../mesos/state",
        "/service/marathon/v2/apps%09",
        "/ok%1F",
    ] {
        let answer = raw(
            proxy.addr,
            &format!("GET {target} HTTP/1.1\r\nHost: localhost"),
        )
        .await;
        assert_refused(&master, &answer, 400, "control character");
    }
    // A control character in the query is not in the path: the path rules decide.
    let (status, answer) = raw(proxy.addr, "GET /ok?a=%0a HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(master.wait_for(1).await[0].target, "/ok?a=%0a");
}

// ---------------------------------------------------------------------------------------
// Finding 4: `;` path parameters
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn finding_04_path_parameters_cannot_slip_past_deny_paths() {
    let (master, proxy) = start(&["--deny-path", "/service/marathon/v2/apps"], &[]).await;
    for target in [
        "/service/marathon/v2/apps;x",
        "/service/marathon/v2/apps/..;/apps",
        "/service/marathon/v2;jsessionid=1/apps",
        "/service;a=b/marathon;c/v2/apps;d",
        "/service/marathon/v2/x/..;y/apps",
        "/service/marathon/v2/.;/apps",
        "/service/marathon/x;/../v2/apps",
        "/service/marathon/v2/apps%3bx",
    ] {
        let answer = raw(
            proxy.addr,
            &format!("GET {target} HTTP/1.1\r\nHost: localhost"),
        )
        .await;
        assert_refused(&master, &answer, 403, "deny_paths");
    }
    // Other apps paths still pass, parameters and all.
    let (status, answer) = raw(
        proxy.addr,
        "GET /service/marathon/v2/apps/web;v=1 HTTP/1.1\r\nHost: localhost",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        master.wait_for(1).await[0].target,
        "/service/marathon/v2/apps/web;v=1",
        "forwarded byte for byte"
    );
}

// ---------------------------------------------------------------------------------------
// Finding 7: deny_methods and letter case
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn finding_07_deny_methods_match_case_insensitively() {
    let (master, proxy) = start(&["--deny-methods", "DELETE,put,Move"], &[]).await;
    for method in [
        "DELETE", "delete", "Delete", "PUT", "put", "pUt", "MOVE", "move",
    ] {
        let answer = raw(
            proxy.addr,
            &format!("{method} /v2/apps/web HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0"),
        )
        .await;
        assert_refused(&master, &answer, 403, "deny_methods");
    }
    // `connect` in lower case is no way around the CONNECT refusal either.
    let answer = raw(
        proxy.addr,
        "connect master.example:443 HTTP/1.1\r\nHost: localhost",
    )
    .await;
    assert_eq!(answer.0, 405, "{}", answer.1);
    assert!(master.seen().is_empty());
    let (status, _) = raw(proxy.addr, "get /ok HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 200, "a method not denied passes");
}

// ---------------------------------------------------------------------------------------
// Finding 8: the path secret in headers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn finding_08_no_occurrence_of_the_path_secret_reaches_the_master_in_a_header() {
    let (master, proxy) = start(&[], &[(ENV_PATH_SECRET, SECRET)]).await;
    let port = proxy.addr.port();
    let head = format!(
        "GET /{SECRET}/ui/ HTTP/1.1\r\nHost: localhost:{port}\r\n\
         Referer: http://localhost:{port}/{SECRET}/ui/?next=/{SECRET}/x&a={SECRET}\r\n\
         X-Return-To: http://localhost:{port}/{SECRET}/{SECRET}/y\r\n\
         X-Query: ?a={SECRET}&b=%2F{SECRET}\r\n\
         X-Encoded: /%68ardening-secret-0123456789abcdef/z\r\n\
         X-Nested: {}{SECRET}{}",
        &SECRET[..10],
        &SECRET[10..],
    );
    let (status, answer) = raw(proxy.addr, &head).await;
    assert_eq!(status, 200, "{answer}");
    let seen = master.wait_for(1).await;
    let seen = &seen[0];
    assert_eq!(seen.target, "/ui/");
    for (name, value) in &seen.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !v.contains(SECRET) && !v.contains("%68ardening-secret"),
            "{name}: {v}"
        );
    }
    assert_eq!(
        seen.headers["referer"],
        format!("http://localhost:{port}/ui/?next=/x&a=")
    );
    assert_eq!(seen.headers["x-query"], "?a=&b=%2F");
}

// ---------------------------------------------------------------------------------------
// Finding 11: browser edge cases
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn finding_11_same_site_fetches_without_an_allowed_origin_are_refused() {
    let (master, proxy) = start(&[], &[]).await;
    for site in ["same-site", "cross-site", "Same-Site", "something-new"] {
        let answer = raw(
            proxy.addr,
            &format!("GET /img HTTP/1.1\r\nHost: localhost\r\nSec-Fetch-Site: {site}"),
        )
        .await;
        assert_refused(&master, &answer, 403, "Sec-Fetch-Site");
    }
    for (i, site) in ["same-origin", "none", "None"].iter().enumerate() {
        let (status, answer) = raw(
            proxy.addr,
            &format!("GET /ok HTTP/1.1\r\nHost: localhost\r\nSec-Fetch-Site: {site}"),
        )
        .await;
        assert_eq!(status, 200, "{site}: {answer}");
        master.wait_for(i + 1).await;
    }
}

#[tokio::test]
async fn finding_11_client_forwarding_headers_are_stripped() {
    let (master, proxy) = start(&[], &[]).await;
    let (status, answer) = raw(
        proxy.addr,
        "GET /ok HTTP/1.1\r\nHost: localhost\r\nForwarded: for=10.0.0.1;proto=https\r\n\
         X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\
         X-Forwarded-Prefix: /x\r\nX-Real-IP: 10.0.0.1\r\nX-Keep: yes",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let seen = &master.wait_for(1).await[0];
    let mut names: Vec<&str> = seen.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    for name in &names {
        assert!(
            !name.starts_with("x-forwarded-") && *name != "forwarded" && *name != "x-real-ip",
            "{name} reached the master: {names:?}"
        );
    }
    assert_eq!(seen.headers["x-keep"], "yes", "other headers pass");
}

#[tokio::test]
async fn finding_11_cookies_are_not_forwarded_by_default() {
    let (master, proxy) = start(&[], &[]).await;
    let (status, answer) = raw(
        proxy.addr,
        "GET /ok HTTP/1.1\r\nHost: localhost\r\nCookie: other-app-session=abc\r\n\
         Cookie: dcos-acs-auth-cookie=xyz",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let seen = &master.wait_for(1).await[0];
    assert!(
        !seen.headers.contains_key("cookie"),
        "{:?}",
        seen.headers.get_all("cookie")
    );
}

#[tokio::test]
async fn finding_11_asterisk_form_is_400_but_for_options() {
    let (master, proxy) = start(&[], &[]).await;
    for method in ["GET", "POST", "DELETE", "options"] {
        let answer = raw(
            proxy.addr,
            &format!("{method} * HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0"),
        )
        .await;
        assert_refused(&master, &answer, 400, "OPTIONS");
    }
    // HEAD: the same refusal, without a body.
    let (status, answer) = raw(proxy.addr, "HEAD * HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 400, "{answer}");
    assert!(master.seen().is_empty());
    let (status, answer) = raw(proxy.addr, "OPTIONS * HTTP/1.1\r\nHost: localhost").await;
    assert_ne!(status, 400, "{answer}");
}

// ---------------------------------------------------------------------------------------
// The opt-ins that open finding 11's defaults deliberately
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn forwarding_headers_and_cookies_pass_when_opted_in() {
    let (master, proxy) = start(&["--pass-forwarding-headers", "--pass-cookies"], &[]).await;
    let (status, answer) = raw(
        proxy.addr,
        "GET /ok HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 10.0.0.1\r\n\
         Forwarded: for=10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\nCookie: a=1",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let seen = &master.wait_for(1).await[0];
    assert_eq!(seen.headers["x-forwarded-for"], "10.0.0.1");
    assert_eq!(seen.headers["forwarded"], "for=10.0.0.1");
    assert_eq!(seen.headers["x-real-ip"], "10.0.0.1");
    assert_eq!(seen.headers["cookie"], "a=1");
}

// ---------------------------------------------------------------------------------------
// Finding 10: self-loops, the runtime guard
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn finding_10_a_request_carrying_our_own_via_marker_gets_508() {
    let (master, proxy) = start(&[], &[]).await;
    let (status, answer) = raw(
        proxy.addr,
        "GET /first HTTP/1.1\r\nHost: localhost\r\nVia: 1.1 front.example",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let seen = master.wait_for(1).await;
    let via: Vec<String> = seen[0]
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    // The client's entry is kept, and ours comes after it.
    assert_eq!(via.len(), 2, "{via:?}");
    assert_eq!(via[0], "1.1 front.example");
    let ours = via[1].clone();
    assert!(ours.starts_with("1.1 dcos-token-proxy-"), "{ours}");

    // The same request coming round again, as through an alias of the proxy's address.
    for value in [
        ours.clone(),
        format!("1.1 front.example, {ours}, 1.1 other"),
    ] {
        let answer = raw(
            proxy.addr,
            &format!("GET /again HTTP/1.1\r\nHost: localhost\r\nVia: {value}"),
        )
        .await;
        assert_eq!(answer.0, 508, "{}", answer.1);
        assert!(
            raw_body(&answer.1).contains("loop detected"),
            "{}",
            answer.1
        );
        assert_eq!(master.count(), 1, "nothing more forwarded");
    }
}

#[tokio::test]
async fn finding_10_a_master_url_that_is_an_alias_of_the_listen_address_stops_startup() {
    for host in [
        "127.1",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "localhost",
    ] {
        // A port free a moment ago, for the proxy to listen on: the master URL must name
        // it before the proxy binds it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut settings = settings_with(&[], &[]);
        settings.listen =
            dcos_token_proxy::types::ListenAddr::Tcp(format!("127.0.0.1:{port}").parse().unwrap());
        let url = format!("http://{host}:{port}");
        let started = dcos_token_proxy::Proxy::bind(
            &settings,
            &cluster(&url, Some(VALID), SslVerify::System),
        )
        .await;
        let Err(e) = started else {
            panic!("{url} started although it is the proxy itself");
        };
        assert!(
            matches!(e, dcos_token_proxy::StartError::Loop { .. }),
            "{url}: {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Finding 5: upgrades other than WebSocket
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn finding_05_only_websocket_upgrades_are_forwarded_by_default() {
    let (master, proxy) = start(&[], &[]).await;
    for upgrade in ["h2c", "websocket, h2c", "TLS/1.0", "foo"] {
        let answer = raw(
            proxy.addr,
            &format!(
                "GET /ok HTTP/1.1\r\nHost: localhost\r\nUpgrade: {upgrade}\r\n\
                 Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"
            ),
        )
        .await;
        assert_refused(&master, &answer, 403, "allowed_upgrades");
    }
    // WebSocket (any letter case) still passes.
    assert_eq!(common::ws_echo(proxy.addr, "hi").await, "hi");
}

#[tokio::test]
async fn other_upgrades_pass_when_opted_in() {
    let (master, proxy) = start(&["--allowed-upgrades", "websocket,h2c"], &[]).await;
    let (status, answer) = raw(
        proxy.addr,
        "GET /ok HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nConnection: Upgrade",
    )
    .await;
    assert_eq!(status, 200, "the fake master does not switch: {answer}");
    assert_eq!(master.wait_for(1).await[0].headers["upgrade"], "h2c");
}

// ---------------------------------------------------------------------------------------
// Finding 6: max_header_bytes is exact
// ---------------------------------------------------------------------------------------

/// A head of exactly `size` bytes (request line, `Host`, filler headers of at most
/// `per_header` bytes each, `Connection: close`, the blank line).
fn head_of(size: usize, per_header: usize) -> String {
    let start = "GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    let mut head = start.to_owned();
    let mut i = 0;
    // Each filler line is `X-Fill-NN: aaa…\r\n`.
    while size - head.len() - 2 > 0 {
        let left = size - head.len() - 2;
        let name = format!("X-Fill-{i:02}: ");
        let room = left.min(per_header);
        if room < name.len() + 3 {
            // Too little room for another header: lengthen the previous one.
            head.insert_str(head.len() - 2, &"a".repeat(left));
            break;
        }
        head.push_str(&name);
        head.push_str(&"a".repeat(room - name.len() - 2));
        head.push_str("\r\n");
        i += 1;
    }
    head.push_str("\r\n");
    assert_eq!(head.len(), size);
    head
}

#[tokio::test]
async fn finding_06_a_head_one_byte_over_max_header_bytes_is_431() {
    // The default, 64 KiB.
    let (master, proxy) = start(&[], &[]).await;
    let limit = 64 * 1024;
    for (size, per_header) in [
        (70_000, 70_000),   // one big header
        (100_000, 4_000),   // 25 headers
        (limit + 1, 2_000), // one byte over
    ] {
        let answer = raw_exchange(proxy.addr, head_of(size, per_header).as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{size} bytes: {}",
            &answer[..answer.len().min(300)]
        );
        assert!(master.seen().is_empty(), "{size} bytes reached the master");
    }
    let answer = raw_exchange(proxy.addr, head_of(limit, 2_000).as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "exactly the limit passes: {answer}"
    );

    // A lowered limit.
    let (master, proxy) = start(&["--max-header-bytes", "9000"], &[]).await;
    let answer = raw_exchange(proxy.addr, head_of(9001, 9001).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(master.seen().is_empty());
    let answer = raw_exchange(proxy.addr, head_of(9000, 9000).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

// ---------------------------------------------------------------------------------------
// Finding 2: slow request bodies
// ---------------------------------------------------------------------------------------

/// Uploads that send their headers and one chunk, then nothing: each gets 408 once the
/// body idle timeout passes, the master's side of each is abandoned, and a fresh request
/// is answered meanwhile.
#[tokio::test]
async fn finding_02_a_stalled_request_body_gets_408_and_the_upstream_request_is_aborted() {
    const STALLED: usize = 20;
    let (master, proxy) = start(&["--body-idle-timeout", "1s"], &[]).await;
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let addr = proxy.addr;
        stalled.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(
                &mut s,
                b"POST /exec-input HTTP/1.1\r\nHost: localhost\r\n\
                  Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
            )
            .await
            .unwrap();
            // Nothing more is sent; the answer is read with the connection still open.
            tokio::time::timeout(Duration::from_secs(10), common::read_head(&mut s))
                .await
                .expect("a stalled upload is answered within 10 s")
        }));
    }
    master.wait_for(STALLED).await;
    let (status, answer) = raw(proxy.addr, "GET /fresh HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 200, "{answer}");
    for task in stalled {
        let head = task.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    }
    master.wait_inputs_aborted(STALLED).await;
}

/// Read an answer's head (through the blank line) from the read half of a connection.
async fn head_from(rd: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match rd.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Send `head`, then trickle the body one piece (`piece`, e.g. one byte or one chunk of
/// one byte) every 100 ms, until the proxy answers or the connection breaks; the head of
/// the answer, or what the test waited for in vain.
async fn trickle(addr: SocketAddr, head: &str, piece: &'static [u8], pieces: usize) -> String {
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let sending = tokio::spawn(async move {
        for _ in 0..pieces {
            if wr.write_all(piece).await.is_err() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
        Some(wr)
    });
    let answer = tokio::time::timeout(Duration::from_secs(10), head_from(&mut rd))
        .await
        .unwrap_or_else(|_| "no answer within 10 s".to_owned());
    sending.abort();
    answer
}

/// The exact shape: a body that sends a byte every 100 ms is never idle for the
/// body idle timeout (1 s here), but falls behind the minimum rate (100 bytes/s here)
/// and gets 408, with a `Content-Length` body and a chunked one; the master's side is
/// abandoned. Before the minimum rate, neither was ever cut.
#[tokio::test]
async fn finding_02_a_body_trickling_a_byte_at_a_time_falls_behind_the_minimum_rate() {
    let (master, proxy) = start(
        &["--body-idle-timeout", "1s", "--body-min-rate", "100"],
        &[],
    )
    .await;
    let sized = "POST /exec-input HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n";
    let chunked =
        "POST /exec-input HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (a, b) = tokio::join!(
        trickle(proxy.addr, sized, b"x", 100_000),
        trickle(proxy.addr, chunked, b"1\r\nx\r\n", 100_000),
    );
    for answer in [a, b] {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    master.wait_inputs_aborted(2).await;
}

/// `dcos task exec`'s input stream (chunked `application/recordio`, keystrokes and
/// heartbeats) keeps no rate: it is exempt while it holds a tunnel slot, so it lives past
/// the rate deadline and ends with the master's answer. A second one, with the only
/// tunnel slot taken, is cut like any trickle: the shape alone buys nothing.
#[tokio::test]
async fn finding_02_an_exec_input_stream_is_exempt_from_the_rate_while_tunnel_slots_last() {
    let (master, proxy) = start(
        &[
            "--body-idle-timeout",
            "1s",
            "--body-min-rate",
            "100",
            "--max-tunnels",
            "1",
        ],
        &[],
    )
    .await;
    let exec = "POST /exec-input HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
                Content-Type: application/recordio\r\nMessage-Content-Type: application/json\r\n\r\n";
    let mut chunks = master.chunk_events();
    // 30 one-byte records over 3 s: 10 bytes/s, three times past the rate deadline.
    let first = tokio::spawn(trickle(proxy.addr, exec, b"1\r\nk\r\n", 30));
    chunks
        .recv()
        .await
        .expect("the first stream reached the master");
    let second = trickle(proxy.addr, exec, b"1\r\nk\r\n", 100_000).await;
    assert!(second.starts_with("HTTP/1.1 408"), "{second}");
    let first = first.await.unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_eq!(master.inputs_aborted(), 1);
}

/// The master answers an input stream (`dcos task exec`) or an upload only once the
/// whole body is in, so the response timeout counts from the end of the body: a stream
/// that lasts longer than the timeout gets the master's answer, not 504. A master that
/// stays silent after the body has ended still gets the 504.
#[tokio::test]
async fn an_input_stream_longer_than_the_response_timeout_gets_the_masters_answer() {
    let (master, proxy) = start(&["--response-timeout", "1s"], &[]).await;
    let exec = "POST /exec-input HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
                Content-Type: application/recordio\r\n\r\n";
    // 25 records, one every 100 ms: 2.5 s, more than twice the response timeout.
    let answer = trickle(proxy.addr, exec, b"1\r\nk\r\n", 25).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(master.inputs_aborted(), 0);
    // A body that has ended, then silence: 504 naming the setting.
    let slow = "POST /slow HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    let answer = trickle(proxy.addr, slow, b"1\r\nk\r\n", 2).await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
}

/// With every connection slot held by stalled uploads, a new client is answered at once
/// (503, `Retry-After`, naming the limit) instead of waiting unanswered in the backlog;
/// once a slot frees, requests are served again.
#[tokio::test]
async fn finding_02_with_every_slot_taken_a_fresh_request_is_answered_503_at_once() {
    use tokio::io::AsyncWriteExt;
    let (master, proxy) = start(
        &["--max-connections", "2", "--body-idle-timeout", "30s"],
        &[],
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(
            b"POST /exec-input HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nx",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    master.wait_for(2).await;
    let (status, answer) = tokio::time::timeout(
        Duration::from_secs(5),
        raw(proxy.addr, "GET /fresh HTTP/1.1\r\nHost: localhost"),
    )
    .await
    .expect("a fresh request is answered while every slot is taken");
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(raw_body(&answer).contains("max_connections"), "{answer}");
    assert_eq!(master.count(), 2, "the turned-away request reached no one");
    // One upload gives up: its slot serves the next request.
    drop(stalled.pop());
    let (status, answer) = raw(proxy.addr, "GET /fresh HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 200, "{answer}");
}

/// A client that asks for a large download and stops reading: once the proxy has not
/// been able to write to it for the send timeout, the connection is closed and its slot
/// serves others. Before, it held the only slot for as long as it liked.
#[tokio::test]
async fn finding_02_a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    use tokio::io::AsyncWriteExt;
    let (_master, proxy) = start(&["--max-connections", "1", "--send-timeout", "1s"], &[]).await;
    let mut reader = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    reader
        .write_all(b"GET /download?bytes=4000000000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = common::read_head(&mut reader).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Nothing more is read. Each try is answered (503 while the slot is held, within a
    // second); the slot must come free.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, answer) = tokio::time::timeout(
            Duration::from_secs(5),
            raw(proxy.addr, "GET /fresh HTTP/1.1\r\nHost: localhost"),
        )
        .await
        .expect("every try is answered");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled reader still holds the only slot"
        );
    }
    drop(reader);
}

// ---------------------------------------------------------------------------------------
// Finding 1: tunnels and file descriptors
// ---------------------------------------------------------------------------------------

/// A WebSocket handshake for `/ws`.
const WS_HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Send a WebSocket handshake; the connection and the head of the answer.
async fn open_tunnel(addr: SocketAddr) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, WS_HANDSHAKE)
        .await
        .unwrap();
    let head = common::read_head(&mut s).await;
    (s, head)
}

/// The open-files limit the child gets: (128 - 64 reserved) / 2 = 32 slots, so at most
/// 16 tunnels and 16 connections.
const CHILD_NOFILE: u64 = 128;

/// The real binary with `RLIMIT_NOFILE` lowered to [`CHILD_NOFILE`] (soft and hard), in
/// front of `master`; its stderr goes to `stderr`.
fn spawn_with_low_nofile(master: &FakeMaster, home: &std::path::Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let stderr = std::fs::File::create(home.join("stderr")).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dcos-token-proxy"));
    cmd.args(["--upstream", &master.url, "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("HOME", home)
        .env("DCOS_ACS_TOKEN", VALID)
        .current_dir(home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr);
    // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: CHILD_NOFILE as libc::rlim_t,
                rlim_max: CHILD_NOFILE as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn dcos-token-proxy")
}

/// Kills the child when the test ends, however it ends.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn finding_01_tunnels_cannot_exhaust_file_descriptors() {
    const TUNNELS: usize = 60;
    let master = FakeMaster::start().await;
    let home = tempfile::TempDir::new().unwrap();
    let mut child = Reap(spawn_with_low_nofile(&master, home.path()));
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(10), line)
        .await
        .expect("the proxy starts within 10 s")
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("dcos-token-proxy listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .trim_end_matches('/')
        .parse()
        .unwrap();

    // Many more tunnels than the descriptors allow: the first ones open, the rest get a
    // clear 503 (and are closed by the client, as a browser would).
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..TUNNELS {
        let (s, head) = open_tunnel(addr).await;
        if head.starts_with("HTTP/1.1 101") {
            open.push(s);
        } else {
            assert!(head.starts_with("HTTP/1.1 503"), "{head}");
            refused += 1;
        }
    }
    assert_eq!(open.len(), 16, "{} open, {refused} refused", open.len());
    assert_eq!(refused, TUNNELS - 16);

    // A fresh request is still answered.
    let (status, answer) = raw(addr, "GET /fresh HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 200, "{answer}");

    // Once the tunnels close, new ones open again.
    drop(open);
    let reopened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (_s, head) = open_tunnel(addr).await;
            if head.starts_with("HTTP/1.1 101") {
                return;
            }
        }
    })
    .await;
    assert!(reopened.is_ok(), "no tunnel opened after the others closed");

    let _ = child.0.kill();
    let _ = child.0.wait();
    let stderr = std::fs::read_to_string(home.path().join("stderr")).unwrap();
    assert!(
        stderr.contains("open-files limit") && stderr.contains("max_tunnels=16"),
        "{stderr}"
    );
    assert!(stderr.contains("max_connections=16"), "{stderr}");
}

#[tokio::test]
async fn finding_01_an_idle_tunnel_is_closed_after_the_tunnel_idle_timeout() {
    let (_master, proxy) = start(&["--tunnel-idle-timeout", "1s"], &[]).await;
    let (mut s, head) = open_tunnel(proxy.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Nothing is sent either way: the proxy closes the tunnel (EOF on this side).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 64];
        loop {
            match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle tunnel was not closed");
}
