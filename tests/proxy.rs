//! End-to-end behaviour of the proxy against a fake Admin Router: authorization rules,
//! byte-exact targets, header hygiene, streaming, upgrades, redirects and error paths.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use dcos_token_proxy::dcos::config::SslVerify;
use dcos_token_proxy::types::ClientAuth;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn token_header(t: &str) -> String {
    format!("token={t}")
}

#[tokio::test]
async fn injects_the_token_when_the_client_sends_none() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let (parts, body) = get(&format!("{}/service/marathon/v2/apps", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "ok /service/marathon/v2/apps");
    assert_eq!(
        master.last().authorization(),
        Some(token_header(VALID).as_str())
    );
}

#[tokio::test]
async fn keep_policy_rewrites_bearer_keeps_token_form_and_replaces_other_schemes() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let url = format!("{}/mesos/master/state.json", proxy.url);

    // Bearer X → token=X (scheme case-insensitive): the client's own valid token works.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (parts, _) = get(&url, &[("authorization", &format!("{scheme} {VALID}"))]).await;
        assert_eq!(parts.status, StatusCode::OK, "{scheme}");
        assert_eq!(
            master.last().authorization(),
            Some(token_header(VALID).as_str())
        );
    }
    // A client's Bearer with a bad token is rewritten, not replaced: the master says 401.
    let (parts, _) = get(&url, &[("authorization", &format!("Bearer {OTHER}"))]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        master.last().authorization(),
        Some(token_header(OTHER).as_str())
    );

    // token=X passes unchanged, so the master's 401 for it comes back unchanged.
    let (parts, body) = get(&url, &[("authorization", &token_header(OTHER))]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(parts.headers[header::WWW_AUTHENTICATE], "acsjwt");
    assert!(String::from_utf8_lossy(&body).contains("401 Unauthorized"));
    assert_eq!(
        master.last().authorization(),
        Some(token_header(OTHER).as_str())
    );

    // Any other scheme is replaced by the proxy's token.
    let (parts, _) = get(&url, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        master.last().authorization(),
        Some(token_header(VALID).as_str())
    );
}

#[tokio::test]
async fn replace_policy_always_sends_the_proxys_token() {
    let master = FakeMaster::start().await;
    let settings = dcos_token_proxy::settings::Settings {
        client_auth: ClientAuth::Replace,
        ..test_settings()
    };
    let proxy = start_proxy_with(
        cluster(&master.url, Some(VALID), SslVerify::System),
        settings,
    )
    .await;
    for sent in [
        token_header(OTHER),
        format!("Bearer {OTHER}"),
        "Basic x".into(),
    ] {
        let (parts, _) = get(&format!("{}/x", proxy.url), &[("authorization", &sent)]).await;
        assert_eq!(parts.status, StatusCode::OK, "{sent}");
        assert_eq!(
            master.last().authorization(),
            Some(token_header(VALID).as_str())
        );
    }
}

#[tokio::test]
async fn without_a_token_requests_are_forwarded_bare_and_the_401_passes_through() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy_with(
        cluster(&master.url, None, SslVerify::System),
        test_settings(),
    )
    .await;
    let (parts, _) = get(&format!("{}/service/marathon/v2/apps", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(parts.headers[header::WWW_AUTHENTICATE], "acsjwt");
    assert_eq!(master.last().authorization(), None);
    // Unauthenticated master paths still work.
    let (parts, _) = get(
        &format!("{}/dcos-metadata/dcos-version.json", proxy.url),
        &[],
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test]
async fn targets_are_forwarded_byte_for_byte_and_host_is_the_masters() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let target = "/service/x%2Fy/a%20b/%7e?q=%2F&r=a+b&s=%25&empty=&x=1;2";
    let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(proxy.addr, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = master.last();
    assert_eq!(seen.target, target);
    assert_eq!(seen.headers[header::HOST], master.addr.to_string().as_str());
}

#[tokio::test]
async fn targets_go_under_the_dcos_url_path_prefix() {
    let master = FakeMaster::start().await;
    let url = format!("{}/prefix/", master.url);
    let proxy = start_proxy_to(&url, SslVerify::System).await;
    let (parts, _) = get(&format!("{}/a%2Fb?c=%2F", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(master.last().target, "/prefix/a%2Fb?c=%2F");
    get(&format!("{}/", proxy.url), &[]).await;
    assert_eq!(master.last().target, "/prefix/");
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let req = "GET /hop HTTP/1.1\r\nHost: 127.0.0.1\r\n\
               Connection: close, X-Client-Hop\r\nX-Client-Hop: secret\r\n\
               Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
               Proxy-Authorization: Basic cHJveHk6cHc=\r\nTE: trailers\r\nTrailer: x-sum\r\n\
               Upgrade: h2c\r\nX-End-To-End: yes\r\n\r\n";
    let answer = raw_exchange(proxy.addr, req.as_bytes())
        .await
        .to_ascii_lowercase();
    let seen = master.last();
    for name in [
        "connection",
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the master"
        );
    }
    assert_eq!(seen.headers["x-end-to-end"], "yes");

    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    let head = answer.split("\r\n\r\n").next().unwrap();
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !head.contains(&format!("\n{name}:")),
            "{name} reached the client: {head}"
        );
    }
    assert!(head.contains("\nx-end-to-end: kept"), "{head}");
}

#[tokio::test]
async fn repeated_response_headers_survive() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let (parts, _) = get(&format!("{}/cookies", proxy.url), &[]).await;
    let cookies: Vec<_> = parts.headers.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
}

#[tokio::test]
async fn head_204_and_304_keep_their_headers_and_have_no_body() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let req = Request::head(format!("{}/head", proxy.url))
        .body(empty())
        .unwrap();
    let (parts, body) = send(req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers[header::CONTENT_LENGTH], "1234");
    assert!(body.is_empty());
    assert_eq!(master.last().method, Method::HEAD);

    for code in [204u16, 304] {
        let (parts, body) = get(&format!("{}/status?code={code}", proxy.url), &[]).await;
        assert_eq!(parts.status.as_u16(), code);
        assert_eq!(parts.headers[header::ETAG], "\"v1\"");
        assert!(body.is_empty());
    }
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_head(&mut s).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(b"hello").await.unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.unwrap();
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    let digest = hex(ring::digest::digest(&ring::digest::SHA256, b"hello").as_ref());
    assert!(rest.ends_with(&format!("5 {digest}")), "{rest}");
    assert!(!master.last().headers.contains_key(header::EXPECT));
}

#[tokio::test]
async fn informational_responses_from_the_master_are_skipped() {
    let addr = raw_master(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let proxy = start_proxy_to(&format!("http://{addr}"), SslVerify::System).await;
    let (parts, body) = get(&format!("{}/x", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn a_malformed_answer_from_the_master_is_a_502_that_says_why() {
    for (script, why) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy"[..],
            "Content-Length values differ",
        ),
        (
            &b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            "HTTP/1.0",
        ),
        (&b"NOT HTTP\r\n\r\n"[..], "malformed HTTP response"),
        (&b""[..], "closed the connection before answering"),
    ] {
        let addr = raw_master(script).await;
        let proxy = start_proxy_to(&format!("http://{addr}"), SslVerify::System).await;
        let (parts, body) = get(&format!("{}/x", proxy.url), &[]).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(body.contains(why), "{why}: {body}");
    }
}

#[tokio::test]
async fn an_http_1_0_master_does_not_downgrade_the_client_connection() {
    let addr = raw_master(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let proxy = start_proxy_to(&format!("http://{addr}"), SslVerify::System).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..2 {
        // Two requests on one connection: the first answer kept it alive.
        s.write_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let mut body = [0u8; 2];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"ok");
    }
}

#[tokio::test]
async fn an_upload_cut_short_by_the_client_is_blamed_on_the_client() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await
    .unwrap();
    // Half-close: the promised 90 other bytes will never come.
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("the request body ended early"), "{answer}");
    assert!(
        !answer.contains("master at"),
        "not the master's fault: {answer}"
    );
}

const BIG: u64 = 256 * 1024 * 1024;

#[tokio::test]
async fn a_256_mib_upload_streams_through_intact() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let req = Request::post(format!("{}/upload", proxy.url))
        .body(PatternBody::new(BIG).boxed())
        .unwrap();
    let (parts, body) = send(req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{BIG} {}", PatternBody::digest(BIG))
    );
    // It went chunked end to end: no Content-Length was invented.
    assert!(!master.last().headers.contains_key(header::CONTENT_LENGTH));
}

/// An upload the way `curl -T` (and the bench) sends one: with `Content-Length`, of a
/// size that is no multiple of any buffer or frame size, several times larger than the
/// largest frame ([`dcos_token_proxy::upstream::UPSTREAM_MAX_BUF_SIZE`]).
#[tokio::test]
async fn an_upload_with_content_length_streams_through_intact() {
    const SIZE: u64 = 48 * 1024 * 1024 + 12_345;
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let req = Request::post(format!("{}/upload", proxy.url))
        .header(header::CONTENT_LENGTH, SIZE)
        .body(PatternBody::new(SIZE).boxed())
        .unwrap();
    let (parts, body) = send(req).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{SIZE} {}", PatternBody::digest(SIZE))
    );
    // The length went through as it came: not turned into chunks.
    assert_eq!(
        master.last().headers[header::CONTENT_LENGTH],
        SIZE.to_string()
    );
}

#[tokio::test]
async fn a_256_mib_download_streams_through_intact() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    for length in ["", "&length=1"] {
        let url = format!("{}/download?bytes={BIG}{length}", proxy.url);
        let resp = client()
            .request(Request::get(url).body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                n += data.len() as u64;
                hasher.update(&data);
            }
        }
        assert_eq!(n, BIG);
        assert_eq!(hex(hasher.finish().as_ref()), PatternBody::digest(BIG));
    }
}

#[tokio::test]
async fn sse_events_arrive_before_the_stream_ends() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let req = Request::get(format!("{}/sse", proxy.url))
        .header(header::ACCEPT, "text/event-stream")
        .body(empty())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    // The master holds the stream open until released: the first event must arrive now.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first event arrives while the stream is still open")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: first\n\n");
    master.release();
    let second = body.frame().await.unwrap().unwrap();
    assert_eq!(second.into_data().unwrap(), "data: second\n\n");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn task_exec_pattern_streams_request_and_response_at_once() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let mut chunks = master.chunk_events();

    // LAUNCH_NESTED_CONTAINER_SESSION: a long streamed response, kept open.
    let launch = client()
        .request(
            Request::post(format!("{}/sse", proxy.url))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut output = launch.into_body();
    let first = output.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "data: first\n\n");

    // ATTACH_CONTAINER_INPUT: a chunked request body that never says how long it is.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let input = tokio::spawn(
        client().request(
            Request::post(format!("{}/exec-input", proxy.url))
                .header(header::CONNECTION, "close")
                .body(ChannelBody(rx).boxed())
                .unwrap(),
        ),
    );
    for i in 0..3 {
        let msg = Bytes::from(format!("heartbeat {i}\n"));
        tx.send(msg.clone()).await.unwrap();
        // Each chunk reaches the master before the next is sent: nothing is buffered.
        let got = tokio::time::timeout(Duration::from_secs(10), chunks.recv())
            .await
            .expect("chunk forwarded while the request is still open")
            .unwrap();
        assert_eq!(got, msg);
    }
    drop(tx);
    let resp = input.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "received 36");
    assert!(
        master
            .last()
            .headers
            .get(header::TRANSFER_ENCODING)
            .is_some()
    );

    // The output stream was open all along.
    master.release();
    let second = output.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "data: second\n\n");
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_both_ways() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    assert_eq!(
        ws_echo(proxy.addr, "hello through the tunnel").await,
        "hello through the tunnel"
    );
    let seen = master.last();
    assert_eq!(seen.authorization(), Some(token_header(VALID).as_str()));
    assert_eq!(seen.headers[header::UPGRADE], "websocket");
    assert!(
        seen.headers[header::CONNECTION]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("upgrade")
    );
}

/// A plain GET (answered by the server's lean path) and then a WebSocket handshake on
/// the same connection (which that path hands to hyper's server with the connection):
/// both answered, the tunnel carries messages both ways.
#[tokio::test]
async fn a_websocket_after_a_plain_get_on_one_connection_is_tunnelled() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();

    let url = format!("ws://{}/ws", proxy.addr);
    let (mut ws, resp) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake on the same connection");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("after a GET")).await.unwrap();
    let reply = ws.next().await.expect("an echo").unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "after a GET");
    let _ = ws.close(None).await;
    let targets: Vec<String> = master.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(targets, ["/first", "/ws"]);
}

#[tokio::test]
async fn location_pointing_at_the_master_points_back_at_the_proxy() {
    let master = FakeMaster::start().await;
    let proxy = start_proxy(&master).await;
    // As the client addressed it: `localhost:PORT`, not the bound 127.0.0.1.
    let host = format!("localhost:{}", proxy.addr.port());
    let req = format!(
        "GET /redirect?to={} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        master.url
    );
    let answer = raw_exchange(proxy.addr, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 307"), "{answer}");
    assert!(
        answer.contains(&format!(
            "location: http://{host}/service/marathon/v2/events?x=%2F\r\n"
        )),
        "{answer}"
    );

    // An HTTP/1.0 client that sent no Host gets the proxy's bound address.
    let req = format!("GET /redirect?to={} HTTP/1.0\r\n\r\n", master.url);
    let answer = raw_exchange(proxy.addr, req.as_bytes()).await;
    assert!(
        answer.contains(&format!(
            "location: http://{}/service/marathon/v2/events?x=%2F\r\n",
            proxy.addr
        )),
        "{answer}"
    );

    // A redirect elsewhere is left alone.
    let (parts, _) = get(
        &format!("{}/redirect?to=https://example.com", proxy.url),
        &[],
    )
    .await;
    assert_eq!(
        parts.headers[header::LOCATION],
        "https://example.com/service/marathon/v2/events?x=%2F"
    );
}

#[tokio::test]
async fn unreachable_master_is_502_naming_the_url() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{dead}");
    let proxy = start_proxy_to(&url, SslVerify::System).await;
    let (parts, body) = get(&format!("{}/x", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("connection refused"), "{text}");
}

#[tokio::test]
async fn a_master_that_resets_the_connection_is_502() {
    let addr = raw_master(b"").await;
    let proxy = start_proxy_to(&format!("http://{addr}"), SslVerify::System).await;
    let (parts, body) = get(&format!("{}/x", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("closed the connection"), "{text}");
}

#[tokio::test]
async fn no_response_headers_in_time_is_504_but_open_streams_are_not_cut() {
    let master = FakeMaster::start().await;
    let settings = dcos_token_proxy::settings::Settings {
        response_timeout: Duration::from_millis(300),
        ..test_settings()
    };
    let proxy = start_proxy_with(
        cluster(&master.url, Some(VALID), SslVerify::System),
        settings,
    )
    .await;
    let (parts, body) = get(&format!("{}/slow", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(String::from_utf8_lossy(&body).contains("response_timeout"));

    // An SSE stream whose headers came in time stays open past the timeout.
    let resp = client()
        .request(
            Request::get(format!("{}/sse", proxy.url))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    // A second 504 proves a full timeout has passed since the stream's headers.
    let (parts, _) = get(&format!("{}/slow", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT);
    master.release();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "data: second\n\n");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let master = FakeMaster::start().await;
    let mut proxy = start_proxy(&master).await;
    let in_flight = tokio::spawn(get_owned(format!("{}/hold", proxy.url)));
    master.wait_for(1).await;

    proxy.shutdown();
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..1000 {
        if TcpStream::connect(proxy.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        refused,
        "the proxy still accepts connections after shutdown"
    );
    assert!(
        !proxy.task.is_finished(),
        "exited before the in-flight request finished"
    );

    master.release();
    let (parts, body) = in_flight.await.unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "released");
    tokio::time::timeout(Duration::from_secs(10), &mut proxy.task)
        .await
        .expect("serve returns after the drain")
        .unwrap();
}

/// An idle keep-alive connection (nothing in flight, so nothing wakes it) is closed at
/// once when shutdown begins, not left to its header read timeout.
#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let (_master, mut proxy) = start(&["--header-read-timeout", "300s"], &[]).await;
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    proxy.shutdown();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = idle.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection outlived the shutdown");
    tokio::time::timeout(Duration::from_secs(10), &mut proxy.task)
        .await
        .expect("serve returns once the idle connection is closed")
        .unwrap();
}

async fn get_owned(url: String) -> (http::response::Parts, Bytes) {
    get(&url, &[]).await
}
