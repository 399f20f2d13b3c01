//! Sidecar mode end to end: the real binary, started as a container would start it,
//! against the fake master whose login endpoint checks RS256 login tokens and mints
//! tokens that live a few seconds. Covers the admin listener (`/readyz`, `/metrics`,
//! `/quitquitquit`), the `health` subcommand, SIGTERM draining and `--token-file`.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_dcos-token-proxy");
/// Failure guard for every wait; a healthy run needs a fraction of it.
const WAIT: Duration = Duration::from_secs(20);
const SA: &str = "proxy-sa";
const LISTENING: &str = "dcos-token-proxy listening on http://";

/// The service-account credential JSON for the test key, as DC/OS would inject it.
fn credential(master: &FakeMaster) -> String {
    serde_json::json!({
        "scheme": "RS256",
        "uid": SA,
        "private_key": SA_KEY_PKCS8,
        "login_endpoint": format!("{}/acs/api/v1/auth/login", master.url),
    })
    .to_string()
}

/// A running proxy process; killed on drop.
struct Sidecar {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    url: String,
    admin: String,
    _home: tempfile::TempDir,
}

impl Sidecar {
    /// Start the binary with `args` (plus listeners on free ports) and `env`, and wait
    /// until both listeners are up.
    async fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("DCOS_DIR", home.path().join("dcos"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        let mut me = Self {
            child,
            lines,
            seen: Vec::new(),
            url: String::new(),
            admin: String::new(),
            _home: home,
        };
        let line = me.wait_line(&[LISTENING]).await;
        me.url = line
            .trim_start_matches("dcos-token-proxy listening on ")
            .trim_end_matches('/')
            .to_owned();
        let line = me.wait_line(&["admin endpoints ready"]).await;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .unwrap_or_else(|| panic!("no listen= in {line}"));
        me.admin = format!("http://{addr}");
        me
    }

    /// Wait for an output line holding every one of `needles`.
    async fn wait_line(&mut self, needles: &[&str]) -> String {
        if let Some(l) = self
            .seen
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return l.clone();
        }
        loop {
            match tokio::time::timeout(WAIT, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                _ => panic!(
                    "no line with {needles:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    async fn readyz(&self) -> (StatusCode, String) {
        let (parts, body) = get(&format!("{}/readyz", self.admin), &[]).await;
        (parts.status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Wait until `/readyz` answers 200.
    async fn ready(&mut self) {
        let url = self.admin.clone();
        let out = health(&url, "20s").await;
        assert!(
            out.status.success(),
            "never ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn sigterm(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the process to exit; its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the proxy did not exit")
            .unwrap();
        status.code()
    }
}

/// Run `dcos-token-proxy health --url URL --wait WAIT`.
async fn health(url: &str, wait: &str) -> std::process::Output {
    let run = Command::new(BIN)
        .args(["health", "--url", url, "--wait", wait])
        .env_clear()
        .output();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("health ran too long")
        .unwrap()
}

fn service_account_master_env(master: &FakeMaster) -> Vec<(&'static str, String)> {
    vec![
        ("DCOS_URL", master.url.clone()),
        ("DCOS_SERVICE_ACCOUNT_CREDENTIAL", credential(master)),
    ]
}

/// A fake master where the service account `SA` logs in for tokens that live `lifetime`,
/// and a ready sidecar (started with `args`) logged in as that account.
async fn logged_in_sidecar(lifetime: Duration, args: &[&str]) -> (FakeMaster, Sidecar) {
    let master = FakeMaster::start().await;
    master.enable_login(LoginAccount::service_account(SA, SA_KEY_PKCS8, lifetime));
    let mut proxy = Sidecar::start(args, &service_account_master_env(&master)).await;
    proxy.ready().await;
    (master, proxy)
}

#[tokio::test]
async fn four_busy_clients_never_see_a_401_over_several_token_lifetimes() {
    let (master, mut proxy) = logged_in_sidecar(Duration::from_secs(3), &[]).await;
    let line = proxy.wait_line(&["logged in to DC/OS"]).await;
    assert!(line.contains(SA), "{line}");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (url, stop, done) = (proxy.url.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (parts, _) = get(&format!("{url}/client/{i}"), &[]).await;
                    statuses.push(parts.status);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                statuses
            })
        })
        .collect();
    // Several lifetimes: until the master has minted 4 more tokens.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while master.successful_logins() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh: {:?}",
            master.logins()
        );
        master.wait_count(master.count() + 1).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let statuses = c.await.unwrap();
        total += statuses.len();
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
    }
    assert!(total > 20, "the clients were busy: {total}");
    let logins = master.logins();
    assert!(logins.iter().all(|l| l.ok), "{logins:?}");
    for l in &logins[1..] {
        assert!(
            l.at < l.previous_expiry.unwrap(),
            "a login came after expiry: {logins:?}"
        );
    }
    let unauthorized = master
        .seen()
        .iter()
        .filter(|s| s.target.starts_with("/client/"))
        .filter(|s| s.authorization().is_none())
        .count();
    assert_eq!(unauthorized, 0);
}

#[tokio::test]
async fn a_rejected_login_keeps_readyz_at_503_and_says_why() {
    let master = FakeMaster::start().await;
    let mut account = LoginAccount::service_account(SA, OTHER_KEY, Duration::from_secs(60));
    account.refuse = true;
    master.enable_login(account);
    let mut proxy = Sidecar::start(&[], &service_account_master_env(&master)).await;
    let line = proxy
        .wait_line(&["login failed", "ERR_INVALID_CREDENTIALS"])
        .await;
    assert!(line.contains(SA), "the line names the account: {line}");
    let (status, body) = proxy.readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("refused") && body.contains("ERR_INVALID_CREDENTIALS"),
        "{body}"
    );
    let (parts, _) = get(&format!("{}/x", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    let out = health(&proxy.admin, "1s").await;
    assert_eq!(out.status.code(), Some(1), "health fails when never ready");
    // No secret in the output.
    let all = proxy.seen.join("\n");
    assert!(
        !all.contains("PRIVATE KEY") && !all.contains("MII"),
        "{all}"
    );
}

#[tokio::test]
async fn a_401_makes_20_concurrent_requests_share_one_login() {
    let (master, proxy) = logged_in_sidecar(Duration::from_secs(600), &[]).await;
    assert_eq!(master.successful_logins(), 1);
    // A login younger than a second answers a 401 by itself; let that pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    master.revoke_minted();
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let url = format!("{}/after-revoke/{i}", proxy.url);
            tokio::spawn(async move { get(&url, &[]).await.0.status })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        master.successful_logins(),
        2,
        "one shared login: {:?}",
        master.logins()
    );
}

/// The parsed `/metrics` text.
async fn metrics(proxy: &Sidecar) -> prometheus_parse::Scrape {
    let (parts, body) = get(&format!("{}/metrics", proxy.admin), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap()
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a number"),
        })
}

/// A burst of connections is served by both threads, whichever accepted them: the
/// kernel hands a burst to the first thread awake, which would otherwise serve all of
/// them while the other idles.
#[tokio::test]
async fn a_burst_of_connections_is_spread_over_the_serving_threads() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CONNECTIONS: usize = 16;
    let (_master, proxy) =
        logged_in_sidecar(Duration::from_secs(600), &["--worker-threads", "2"]).await;
    let authority = proxy.url.trim_start_matches("http://").to_owned();
    // Connected all at once (the kernel completes each handshake before the proxy
    // accepts), then one request each, the connections kept open.
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        conns.push(tokio::net::TcpStream::connect(&authority).await.unwrap());
    }
    let request = format!("GET /spread HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    for conn in &mut conns {
        conn.write_all(request.as_bytes()).await.unwrap();
    }
    for conn in &mut conns {
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(
            seen.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
    }
    let scrape = metrics(&proxy).await;
    let on = |thread: &str| {
        value(
            &scrape,
            "dcos_token_proxy_thread_connections",
            &[("thread", thread)],
        )
        .unwrap()
    };
    let (zero, one) = (on("0"), on("1"));
    assert_eq!(zero + one, CONNECTIONS as f64);
    assert!(zero.min(one) >= 6.0, "{zero} and {one} connections");
    drop(conns);
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests() {
    let (_master, proxy) = logged_in_sidecar(Duration::from_secs(600), &[]).await;
    let reads = [("method", "read"), ("status", "2xx")];
    let before = metrics(&proxy).await;
    let base = value(&before, "dcos_token_proxy_requests_total", &reads).unwrap();
    assert_eq!(
        value(&before, "dcos_token_proxy_logins_total", &[]),
        Some(1.0)
    );
    let left = value(&before, "dcos_token_proxy_token_expiry_seconds", &[]).unwrap();
    assert!(left > 500.0 && left <= 600.0, "{left}");
    for i in 0..3 {
        get(&format!("{}/m/{i}", proxy.url), &[]).await;
    }
    let (parts, _) = get(&format!("{}/status?code=404", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let after = metrics(&proxy).await;
    assert_eq!(
        value(&after, "dcos_token_proxy_requests_total", &reads),
        Some(base + 3.0)
    );
    assert_eq!(
        value(
            &after,
            "dcos_token_proxy_requests_total",
            &[("method", "read"), ("status", "4xx")]
        ),
        Some(1.0)
    );
    let count = value(
        &after,
        "dcos_token_proxy_upstream_latency_seconds_count",
        &[],
    );
    assert!(count.is_some_and(|c| c >= 4.0), "{count:?}");
    assert!(value(&after, "dcos_token_proxy_open_connections", &[]).is_some());
    assert!(value(&after, "dcos_token_proxy_open_tunnels", &[]).is_some());
    assert_eq!(
        value(&after, "dcos_token_proxy_login_failures_total", &[]),
        Some(0.0)
    );
    assert!(value(&after, "dcos_token_proxy_config_reloads_total", &[]).is_some());
    assert!(
        value(
            &after,
            "dcos_token_proxy_errors_total",
            &[("kind", "timeout")]
        )
        .is_some()
    );
}

#[tokio::test]
async fn sigterm_lets_10_slow_requests_finish_then_exits_0() {
    let (master, mut proxy) = logged_in_sidecar(Duration::from_secs(600), &[]).await;
    let seen = master.count();
    let slow: Vec<_> = (0..10)
        .map(|_| {
            let url = format!("{}/hold", proxy.url);
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    master.wait_count(seen + 10).await;
    proxy.sigterm();
    proxy.wait_line(&["shutting down"]).await;
    for _ in 0..10 {
        master.release();
    }
    for s in slow {
        let (parts, body) = s.await.unwrap();
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(&body[..], b"released");
    }
    assert_eq!(proxy.exit_code().await, Some(0));
}

#[tokio::test]
async fn quitquitquit_waits_for_the_request_in_flight_then_exits_0() {
    let (master, mut proxy) = logged_in_sidecar(Duration::from_secs(600), &[]).await;
    let seen = master.count();
    let url = format!("{}/hold", proxy.url);
    let slow = tokio::spawn(async move { get(&url, &[]).await });
    master.wait_count(seen + 1).await;
    let quit = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>()
        .request(
            http::Request::post(format!("{}/quitquitquit", proxy.admin))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(quit.status(), StatusCode::OK);
    proxy.wait_line(&["shutting down"]).await;
    assert!(proxy.child.try_wait().unwrap().is_none(), "still draining");
    master.release();
    let (parts, body) = slow.await.unwrap();
    assert_eq!(
        (parts.status, &body[..]),
        (StatusCode::OK, &b"released"[..])
    );
    assert_eq!(proxy.exit_code().await, Some(0));
}

#[tokio::test]
async fn health_wait_returns_once_a_slow_first_login_succeeds() {
    let master = FakeMaster::start().await;
    let mut account = LoginAccount::service_account(SA, SA_KEY_PKCS8, Duration::from_secs(600));
    account.delay = Duration::from_millis(1500);
    master.enable_login(account);
    let proxy = Sidecar::start(&[], &service_account_master_env(&master)).await;
    let (status, body) = proxy.readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let out = health(&proxy.admin, "20s").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(master.successful_logins(), 1);
    assert_eq!(proxy.readyz().await.0, StatusCode::OK);
}

#[tokio::test]
async fn health_fails_at_once_without_wait_and_when_nothing_listens() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = health(&url, "300ms").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&url));
}

#[tokio::test]
async fn a_token_file_is_followed_as_it_rotates() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let first = jwt_with("rotating", Some(unix_now() + 3600));
    master.accept(&first);
    std::fs::write(&file, &first).unwrap();
    let args = ["--token-file", file.to_str().unwrap()];
    let mut proxy = Sidecar::start(&args, &[("DCOS_URL", master.url.clone())]).await;
    proxy.ready().await;
    proxy.wait_line(&["using the token file"]).await;
    get(&format!("{}/one", proxy.url), &[]).await;
    assert_eq!(
        master.last().authorization(),
        Some(format!("token={first}").as_str())
    );

    let second = jwt_with("rotated", Some(unix_now() + 7200));
    master.accept(&second);
    rotate(&file, &second);
    proxy.wait_line(&["token file changed"]).await;
    let (parts, _) = get(&format!("{}/two", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        master.last().authorization(),
        Some(format!("token={second}").as_str())
    );
}

/// Replace `file` as a secret volume does: write a new file, rename it over the old.
fn rotate(file: &Path, token: &str) {
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

#[tokio::test]
async fn no_key_login_token_or_token_is_logged_at_trace_level() {
    let (master, mut proxy) = logged_in_sidecar(Duration::from_secs(600), &["-vv"]).await;
    let (parts, _) = get(&format!("{}/traced", proxy.url), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    proxy.sigterm();
    assert_eq!(proxy.exit_code().await, Some(0));
    while let Ok(Some(line)) = tokio::time::timeout(WAIT, proxy.lines.recv()).await {
        proxy.seen.push(line);
    }
    let all = proxy.seen.join("\n");
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "verbose: {all}"
    );
    let minted = master
        .last()
        .authorization()
        .unwrap()
        .trim_start_matches("token=")
        .to_owned();
    let login = master
        .seen()
        .into_iter()
        .find(|s| s.target == "/acs/api/v1/auth/login")
        .expect("a login");
    assert!(
        login.authorization().is_none(),
        "the login carries no token header"
    );
    let key_line = SA_KEY_PKCS8.lines().nth(1).unwrap();
    for secret in [
        minted.as_str(),
        key_line,
        "PRIVATE KEY",
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9",
    ] {
        assert!(!all.contains(secret), "{secret} was logged:\n{all}");
    }
}

/// Thread-per-core: SIGTERM stops every worker's accept loop, lets the requests in
/// flight on all of them finish, then exits 0.
async fn sigterm_drains_every_worker(worker_threads: &str) {
    let (master, mut proxy) = logged_in_sidecar(
        Duration::from_secs(600),
        &["--worker-threads", worker_threads],
    )
    .await;
    let seen = master.count();
    // Eight connections at once: the kernel hands them to whichever workers wait.
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let url = format!("{}/hold", proxy.url);
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    master.wait_count(seen + 8).await;
    proxy.sigterm();
    let line = proxy.wait_line(&["shutting down"]).await;
    assert!(line.contains("open_connections=8"), "{line}");
    for _ in 0..8 {
        master.release();
    }
    for s in slow {
        let (parts, body) = s.await.unwrap();
        assert_eq!(
            (parts.status, &body[..]),
            (StatusCode::OK, &b"released"[..])
        );
    }
    proxy.wait_line(&["all connections finished"]).await;
    assert_eq!(proxy.exit_code().await, Some(0));
}

#[tokio::test]
async fn sigterm_drains_every_worker_with_2_worker_threads() {
    sigterm_drains_every_worker("2").await;
}

#[tokio::test]
async fn sigterm_drains_the_worker_with_1_worker_thread() {
    sigterm_drains_every_worker("1").await;
}

/// Thread-per-core: `max_connections` counts the connections of every worker together
/// (one shared set of slots), not per worker.
async fn max_connections_holds_across_workers(worker_threads: &str) {
    use tokio::io::AsyncWriteExt;
    let (_master, proxy) = logged_in_sidecar(
        Duration::from_secs(600),
        &["--worker-threads", worker_threads, "--max-connections", "2"],
    )
    .await;
    let addr: std::net::SocketAddr = proxy.url.trim_start_matches("http://").parse().unwrap();
    // Two keep-alive connections, each served once, hold both slots. Both are served
    // whichever threads the kernel hands them to (no thread may keep a slot to itself
    // while it waits for a connection); several rounds, as that choice is the kernel's.
    let mut held = Vec::new();
    for round in 0..5 {
        held.clear();
        for i in 0..2 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET /held/{round}/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let head = read_head(&mut s).await;
            assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
            held.push(s);
        }
    }
    // Whichever worker takes the third, no slot is free: it waits, then hears 503.
    let (status, answer) = raw(addr, "GET /third HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("max_connections"), "{answer}");
    drop(held);
    let (status, answer) = raw(addr, "GET /after HTTP/1.1\r\nHost: localhost").await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn max_connections_holds_across_2_worker_threads() {
    max_connections_holds_across_workers("2").await;
}

#[tokio::test]
async fn max_connections_holds_with_1_worker_thread() {
    max_connections_holds_across_workers("1").await;
}
