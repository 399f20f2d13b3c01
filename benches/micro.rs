//! Micro-benchmarks of the per-request work that does not touch the network: header
//! preparation (hop-by-hop removal and the `Authorization` policy), the snapshot load,
//! mapping a client's target onto the master, and the framing scan of a request head. divan's allocation profiler counts the
//! heap allocations of each, so "no per-request allocation" can be checked, not assumed.
//!
//! Run: `cargo bench --bench micro` (one benchmark: `cargo bench --bench micro -- load`).

use std::hint::black_box;

use dcos_token_proxy::dcos::config::{ClusterConfig, ConfigSource, SslVerify};
use dcos_token_proxy::dcos::token::Token;
use dcos_token_proxy::framing::Scanner;
use dcos_token_proxy::proxy::headers::{apply_authorization, strip_hop_by_hop};
use dcos_token_proxy::source::{Published, Snapshot};
use dcos_token_proxy::types::ClientAuth;
use dcos_token_proxy::upstream::{ClientOptions, Upstream};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

/// A JWT-shaped token of a realistic length (DC/OS tokens are about 400–900 bytes).
fn token() -> String {
    let claims = "eyJ1aWQiOiJib290c3RyYXB1c2VyIiwiZXhwIjo0MTAyNDQ0ODAwfQ";
    format!(
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.{claims}.{}",
        "s".repeat(342)
    )
}

fn cluster(url: &str) -> ClusterConfig {
    ClusterConfig {
        source: ConfigSource::EnvOnly,
        dcos_dir: std::env::temp_dir(),
        name: Some("bench".into()),
        dcos_url: url.parse().expect("a valid URL"),
        token: Some(Token::new(&token()).expect("a valid token")),
        ssl_verify: SslVerify::System,
        timeout: None,
        origins: Default::default(),
    }
}

fn upstream(url: &str) -> Upstream {
    Upstream::new(&cluster(url), &ClientOptions::default()).expect("an upstream")
}

/// The headers of a typical API GET from curl or the DC/OS CLI, plus `extra`.
fn request_headers(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    let base = [
        ("host", "127.0.0.1:8079"),
        ("user-agent", "dcos-cli/1.2 python-requests/2.31"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
    ];
    for (k, v) in base.iter().chain(extra) {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn main() {
    divan::main();
}

mod headers {
    use super::*;

    /// Header preparation for a request without `Connection`: strip, then inject the
    /// proxy's token.
    #[divan::bench]
    fn prepare_plain(bencher: divan::Bencher) {
        let own = upstream("http://127.0.0.1:1").auth;
        let headers = request_headers(&[]);
        bencher
            .with_inputs(|| headers.clone())
            .bench_local_values(|mut h| {
                strip_hop_by_hop(&mut h);
                apply_authorization(&mut h, ClientAuth::Keep, own.as_ref());
                h
            });
    }

    /// The same with `Connection: keep-alive`, as most HTTP/1.1 clients send.
    #[divan::bench]
    fn prepare_keep_alive(bencher: divan::Bencher) {
        let own = upstream("http://127.0.0.1:1").auth;
        let headers = request_headers(&[("connection", "keep-alive")]);
        bencher
            .with_inputs(|| headers.clone())
            .bench_local_values(|mut h| {
                strip_hop_by_hop(&mut h);
                apply_authorization(&mut h, ClientAuth::Keep, own.as_ref());
                h
            });
    }

    /// A client's `Bearer` token rewritten to `token=`.
    #[divan::bench]
    fn prepare_bearer(bencher: divan::Bencher) {
        let own = upstream("http://127.0.0.1:1").auth;
        let headers = request_headers(&[("authorization", "Bearer abc.def.ghi")]);
        bencher
            .with_inputs(|| headers.clone())
            .bench_local_values(|mut h| {
                strip_hop_by_hop(&mut h);
                apply_authorization(&mut h, ClientAuth::Keep, own.as_ref());
                h
            });
    }
}

mod snapshot {
    use super::*;

    /// The one shared-state access per request: loading the current snapshot.
    #[divan::bench]
    fn load(bencher: divan::Bencher) {
        let (published, _rereads) = Published::new(Snapshot::Ready(upstream("http://127.0.0.1:1")));
        bencher.bench_local(|| black_box(&published).load());
    }
}

mod target {
    use super::*;

    /// The master URI for a client's target, `dcos_url` without a path prefix.
    #[divan::bench]
    fn no_prefix(bencher: divan::Bencher) {
        let up = upstream("http://127.0.0.1:1");
        let pq = PathAndQuery::from_static("/service/marathon/v2/apps?embed=apps.tasks");
        bencher.bench_local(|| up.target(Some(black_box(&pq))));
    }

    /// The same with a `dcos_url` path prefix (`https://host/prefix`).
    #[divan::bench]
    fn with_prefix(bencher: divan::Bencher) {
        let up = upstream("http://127.0.0.1:1/dcos");
        let pq = PathAndQuery::from_static("/service/marathon/v2/apps?embed=apps.tasks");
        bencher.bench_local(|| up.target(Some(black_box(&pq))));
    }
}

mod framing {
    use super::*;

    /// A typical keep-alive API GET head from the DC/OS CLI, as the client sends it.
    const HEAD: &[u8] = b"GET /service/marathon/v2/apps?embed=apps.tasks HTTP/1.1\r\n\
        Host: 127.0.0.1:8079\r\n\
        User-Agent: dcos-cli/1.2 python-requests/2.31\r\n\
        Accept: application/json\r\n\
        Accept-Encoding: gzip, deflate\r\n\
        Connection: keep-alive\r\n\r\n";

    /// The scan of one head arriving in one read (the scanner is back at the start of
    /// the next head after each).
    #[divan::bench]
    fn scan_head(bencher: divan::Bencher) {
        let mut scanner = Scanner::new();
        bencher.bench_local(|| scanner.feed(black_box(HEAD)));
    }

    /// The same head arriving in two reads split inside a line (the slower path: that
    /// line's start is kept until its end arrives).
    #[divan::bench]
    fn scan_head_split(bencher: divan::Bencher) {
        let mut scanner = Scanner::new();
        let (a, b) = HEAD.split_at(70);
        bencher.bench_local(|| {
            scanner.feed(black_box(a));
            scanner.feed(black_box(b));
        });
    }
}
