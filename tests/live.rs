//! Live credentials: the proxy follows the DC/OS CLI's config as `dcos auth login`,
//! `dcos cluster attach`, editors and `dcos cluster setup` change it, never sends a stale
//! or empty token, and recovers from a missed change when the master answers 401.
//!
//! The proxy runs in-process with a real file watcher on a temporary DC/OS directory, in
//! front of fake masters that accept only the tokens they "issued". Tests wait on events:
//! a published snapshot, a log line (captured from `tracing`), or a request arriving at
//! the master; never on a sleep.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use dcos_token_proxy::Proxy;
use dcos_token_proxy::dcos::config::discover;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::source::watch::Follow;
use dcos_token_proxy::source::{Published, Snapshot};
use dcos_token_proxy::types::WatchMode;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tempfile::TempDir;
use tokio::sync::{Notify, mpsc, oneshot};

/// How long any single awaited event may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A token for `uid` that expires in 2100.
fn jwt(uid: &str) -> String {
    jwt_with(uid, Some(4_102_444_800))
}

fn dcos_toml(url: &str, token: Option<&str>, name: &str) -> String {
    let mut t = format!("[core]\ndcos_url = \"{url}\"\n");
    if let Some(token) = token {
        t.push_str(&format!("dcos_acs_token = \"{token}\"\n"));
    }
    t.push_str(&format!(
        "ssl_verify = \"true\"\n\n[cluster]\nname = \"{name}\"\n"
    ));
    t
}

/// A temporary DC/OS CLI directory, written the way the CLIs write it.
struct DcosDir {
    _tmp: TempDir,
    root: PathBuf,
}

impl DcosDir {
    /// A root that does not exist yet.
    fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join(".dcos");
        Self { _tmp: tmp, root }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join("clusters").join(id)
    }

    fn file(&self, id: &str) -> PathBuf {
        self.dir(id).join("dcos.toml")
    }

    /// `dcos cluster setup`: the directory and its config, logged in with `token`.
    fn setup(&self, id: &str, url: &str, token: Option<&str>) {
        std::fs::create_dir_all(self.dir(id)).unwrap();
        self.rewrite(id, &dcos_toml(url, token, id));
    }

    /// `dcos auth login`: truncate and write in place (same inode), as both CLIs do.
    fn rewrite(&self, id: &str, text: &str) {
        std::fs::write(self.file(id), text).unwrap();
    }

    /// An editor's save: write a temp file beside it, then rename it over the original.
    fn rename_into_place(&self, id: &str, text: &str) {
        let tmp = self.dir(id).join(".dcos.toml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.file(id)).unwrap();
    }

    /// `dcos cluster attach` (Go CLI): move the `attached` marker into `id`'s directory.
    fn attach(&self, id: &str) {
        let to = self.dir(id).join("attached");
        for entry in std::fs::read_dir(self.root.join("clusters")).unwrap() {
            let from = entry.unwrap().path().join("attached");
            if from.exists() {
                std::fs::rename(&from, &to).unwrap();
                return;
            }
        }
        std::fs::write(&to, "").unwrap();
    }
}

/// A proxy following `dcos`, and what it publishes.
struct Following {
    proxy: RunningProxy,
    source: Arc<Published>,
}

impl Following {
    /// Start the proxy on `dcos` (optionally pinned to `cluster`), following it with
    /// file events, or by polling every `poll` when given.
    async fn start(dcos: &DcosDir, cluster: Option<&str>, poll: Option<Duration>) -> Self {
        let mut settings = test_settings();
        settings.discover.dcos_dir = Some(dcos.root.clone());
        settings.discover.cluster = cluster.map(str::to_owned);
        let env = Env::default();
        let proxy = match discover(&settings.discover, &env) {
            Ok(c) => Proxy::bind(&settings, &c).await,
            Err(e) => Proxy::bind_waiting(&settings, &e).await,
        }
        .expect("proxy starts");
        let mut follow = Follow::new(&settings, env);
        if let Some(every) = poll {
            follow.mode = WatchMode::Poll;
            follow.poll_interval = every;
        }
        let proxy = proxy.follow(follow);
        let source = proxy.source();
        let proxy = serve(proxy);
        Self { proxy, source }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.url)
    }

    /// The `Authorization` value new requests get, if any.
    fn auth(&self) -> Option<String> {
        let snapshot = self.source.load();
        snapshot
            .upstream()?
            .auth
            .as_ref()
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Wait until the published snapshot satisfies `pred`.
    async fn wait_until(&self, what: &str, pred: impl Fn(&Snapshot) -> bool) {
        let mut changes = self.source.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            changes.borrow_and_update();
            if pred(&self.source.load()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!("{what}: not published within {WAIT:?}");
            }
        }
    }

    /// Wait until new requests carry `token`.
    async fn wait_token(&self, token: &str) {
        let want = format!("token={token}");
        self.wait_until(&format!("token {}", &token[..24]), |s| {
            s.upstream()
                .and_then(|u| u.auth.as_ref())
                .is_some_and(|a| a.as_bytes() == want.as_bytes())
        })
        .await;
    }
}

/// Serve a bound proxy in the background.
fn serve(proxy: Proxy) -> RunningProxy {
    let addr = proxy.local_addr().expect("a TCP test proxy");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.serve(async move {
        let _ = rx.await;
    }));
    RunningProxy::new(addr, tx, task)
}

fn token_header(t: &str) -> String {
    format!("token={t}")
}

/// GET `path` through the proxy; returns the status.
async fn status_of(f: &Following, path: &str) -> StatusCode {
    get(&f.url(path), &[]).await.0.status
}

/// Assert that the last request the master received carried `token`.
#[track_caller]
fn assert_last_token(master: &FakeMaster, token: &str) {
    assert_eq!(
        master.last().authorization(),
        Some(token_header(token).as_str())
    );
}

/// The common start: a master that issued `uid`'s first and second tokens, a DC/OS
/// directory with one cluster `c1` logged in with the first, and a proxy following it
/// (polling every `poll`, when given).
struct OneCluster {
    master: FakeMaster,
    dcos: DcosDir,
    f: Following,
    first: String,
    second: String,
}

impl OneCluster {
    async fn start(uid: &str, poll: Option<Duration>) -> Self {
        let master = FakeMaster::start().await;
        let (first, second) = (jwt(uid), jwt(&format!("{uid}-again")));
        master.accept(&first);
        master.accept(&second);
        let dcos = DcosDir::new();
        dcos.setup("c1", &master.url, Some(&first));
        let f = Following::start(&dcos, None, poll).await;
        Self {
            master,
            dcos,
            f,
            first,
            second,
        }
    }

    /// Wait until new requests carry `token`, then check that one reaches the master
    /// with it and is accepted.
    async fn expect_used(&self, token: &str) {
        self.f.wait_token(token).await;
        assert_eq!(status_of(&self.f, "/x").await, 200);
        assert_last_token(&self.master, token);
    }

    /// `c1`'s config text, logged in with `token`.
    fn text(&self, token: &str) -> String {
        dcos_toml(&self.master.url, Some(token), "c1")
    }
}

// Log capture: every test's log lines go to one buffer; tests pick out their own by the
// unique temporary path the lines name.

struct Logs {
    text: Mutex<String>,
    grew: Notify,
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<&'static Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Logs = Box::leak(Box::new(Logs {
            text: Mutex::new(String::new()),
            grew: Notify::new(),
        }));
        let _ = tracing_subscriber::fmt()
            .with_writer(move || LogWriter(logs))
            .with_ansi(false)
            .with_env_filter("info")
            .try_init();
        logs
    })
}

struct LogWriter(&'static Logs);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .text
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        self.0.grew.notify_waiters();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lines logged so far that contain every one of `needles`.
fn log_lines(needles: &[&str]) -> Vec<String> {
    logs()
        .text
        .lock()
        .unwrap()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Wait for the `n`th log line containing every one of `needles`.
async fn wait_log(n: usize, needles: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let grew = logs().grew.notified();
        let lines = log_lines(needles);
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        if tokio::time::timeout_at(deadline, grew).await.is_err() {
            panic!("no log line #{n} with {needles:?} within {WAIT:?}");
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Following changes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_login_rewriting_the_file_in_place_is_used_without_a_restart() {
    logs();
    let c = OneCluster::start("alice", None).await;
    assert_eq!(status_of(&c.f, "/v2/apps").await, 200);
    assert_last_token(&c.master, &c.first);

    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&c.dcos.file("c1"));
    c.dcos.rewrite("c1", &c.text(&c.second));
    assert_eq!(
        inode(&c.dcos.file("c1")),
        before,
        "an in-place rewrite keeps the inode"
    );
    c.f.wait_token(&c.second).await;
    assert_eq!(status_of(&c.f, "/v2/apps").await, 200);
    assert_last_token(&c.master, &c.second);
    // The change is logged with who is logged in and for how long, never the token.
    let line = wait_log(1, &["config changed", s(&c.dcos.file("c1"))]).await;
    assert!(line.contains("uid=alice-again"), "{line}");
    assert!(line.contains("expires_in="), "{line}");
    assert!(!line.contains(&c.second[..30]), "{line}");
}

#[tokio::test]
async fn an_editor_saving_by_rename_is_followed() {
    let c = OneCluster::start("bob", None).await;
    c.dcos.rename_into_place("c1", &c.text(&c.second));
    c.expect_used(&c.second).await;
}

#[tokio::test]
async fn garbage_keeps_the_last_good_token_and_is_reported_once_with_its_line() {
    logs();
    let c = OneCluster::start("carol", None).await;
    let file = c.dcos.file("c1");
    let garbage = "[core]\ndcos_url = \"http://x\"\ndcos_acs_token = \"unterminated\n";

    c.dcos.rewrite("c1", garbage);
    let line = wait_log(1, &["keeping the last good config", s(&file)]).await;
    assert!(line.contains("line 3"), "names the line: {line}");
    assert!(
        !line.contains("unterminated"),
        "never echoes the line: {line}"
    );
    assert_eq!(c.f.auth(), Some(token_header(&c.first)));
    assert_eq!(status_of(&c.f, "/x").await, 200);
    assert_last_token(&c.master, &c.first);

    // Touching the same garbage again is not a new problem: no second report.
    c.dcos.rewrite("c1", garbage);
    // An empty file (a truncate seen mid-write) is another problem, reported once.
    c.dcos.rewrite("c1", "");
    wait_log(
        1,
        &["keeping the last good config", s(&file), "core.dcos_url"],
    )
    .await;
    c.dcos.rewrite("c1", &c.text(&c.second));
    c.f.wait_token(&c.second).await;
    assert_eq!(
        log_lines(&["keeping the last good config", s(&file), "line 3"]).len(),
        1
    );
    assert_eq!(status_of(&c.f, "/x").await, 200);
    assert_last_token(&c.master, &c.second);
}

#[tokio::test]
async fn a_deleted_file_keeps_the_last_good_config_until_it_is_recreated() {
    logs();
    let c = OneCluster::start("dave", None).await;
    std::fs::remove_file(c.dcos.file("c1")).unwrap();
    wait_log(1, &["keeping the last good config", s(&c.dcos.file("c1"))]).await;
    assert_eq!(status_of(&c.f, "/x").await, 200);
    assert_last_token(&c.master, &c.first);

    c.dcos.rewrite("c1", &c.text(&c.second));
    c.expect_used(&c.second).await;
}

#[tokio::test]
async fn attach_switches_masters_and_an_open_stream_finishes_on_the_old_one() {
    let (a, b) = (FakeMaster::start().await, FakeMaster::start().await);
    let (ta, tb) = (jwt("on-a"), jwt("on-b"));
    a.accept(&ta);
    b.accept(&tb);
    let dcos = DcosDir::new();
    dcos.setup("aaa", &a.url, Some(&ta));
    dcos.setup("bbb", &b.url, Some(&tb));
    dcos.attach("aaa");
    let f = Following::start(&dcos, None, None).await;
    assert_eq!(status_of(&f, "/x").await, 200);
    assert_eq!(a.seen().len(), 1);

    // An event stream open on the first master while the switch happens.
    let req = Request::get(f.url("/sse")).body(empty()).unwrap();
    let mut sse = client().request(req).await.unwrap().into_body();
    let first = sse.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: first\n\n");

    dcos.attach("bbb");
    f.wait_until("master b", |s| s.upstream().is_some_and(|u| u.url == b.url))
        .await;
    assert_eq!(status_of(&f, "/x").await, 200);
    let at_b = b.last();
    assert_eq!(at_b.target, "/x");
    assert_eq!(at_b.authorization(), Some(token_header(&tb).as_str()));
    // Master a's token never went to master b, and vice versa.
    assert!(
        b.seen()
            .iter()
            .all(|r| r.authorization() != Some(token_header(&ta).as_str()))
    );

    a.release();
    let second = tokio::time::timeout(WAIT, sse.frame())
        .await
        .expect("the old stream goes on")
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().unwrap(), "data: second\n\n");
}

#[tokio::test]
async fn a_pinned_cluster_ignores_attach() {
    let (a, b) = (FakeMaster::start().await, FakeMaster::start().await);
    let (ta, ta2, tb) = (jwt("pa"), jwt("pa-2"), jwt("pb"));
    a.accept(&ta);
    a.accept(&ta2);
    b.accept(&tb);
    let dcos = DcosDir::new();
    dcos.setup("aaa", &a.url, Some(&ta));
    dcos.setup("bbb", &b.url, Some(&tb));
    dcos.attach("bbb");
    let f = Following::start(&dcos, Some("aaa"), None).await;
    dcos.attach("aaa");
    dcos.attach("bbb");
    // A later login on the pinned cluster is followed; the attach moves were not.
    dcos.rewrite("aaa", &dcos_toml(&a.url, Some(&ta2), "aaa"));
    f.wait_token(&ta2).await;
    assert_eq!(status_of(&f, "/x").await, 200);
    assert!(b.seen().is_empty());
}

#[tokio::test]
async fn a_dcos_dir_that_appears_after_startup_is_used() {
    let master = FakeMaster::start().await;
    let t = jwt("late");
    master.accept(&t);
    let dcos = DcosDir::new();
    let f = Following::start(&dcos, None, None).await;
    let (parts, body) = get(&f.url("/x"), &[]).await;
    assert_eq!(parts.status, 503);
    assert!(String::from_utf8_lossy(&body).contains("dcos cluster setup"));

    // `dcos cluster setup` stages in clusters/setup/ first, then moves it into place.
    std::fs::create_dir_all(dcos.root.join("clusters/setup")).unwrap();
    std::fs::write(
        dcos.root.join("clusters/setup/dcos.toml"),
        dcos_toml(&master.url, Some(&t), "late"),
    )
    .unwrap();
    std::fs::rename(dcos.root.join("clusters/setup"), dcos.dir("c0ffee")).unwrap();
    f.wait_token(&t).await;
    assert_eq!(status_of(&f, "/x").await, 200);
    assert_last_token(&master, &t);
    assert!(master.seen().len() == 1, "the 503 never reached the master");
}

#[tokio::test]
async fn a_new_cluster_directory_and_a_removed_one_are_followed() {
    let (a, b) = (FakeMaster::start().await, FakeMaster::start().await);
    let (ta, tb) = (jwt("ra"), jwt("rb"));
    a.accept(&ta);
    b.accept(&tb);
    let dcos = DcosDir::new();
    dcos.setup("aaa", &a.url, Some(&ta));
    let f = Following::start(&dcos, None, None).await;
    // A second cluster, attached at setup: its directory is new to the watcher.
    dcos.setup("bbb", &b.url, Some(&tb));
    dcos.attach("bbb");
    f.wait_token(&tb).await;
    // `dcos cluster remove bbb`: the only cluster left is used again.
    std::fs::remove_dir_all(dcos.dir("bbb")).unwrap();
    f.wait_token(&ta).await;
    assert_eq!(status_of(&f, "/x").await, 200);
    assert_last_token(&a, &ta);
}

#[tokio::test]
async fn polling_follows_changes_too() {
    let c = OneCluster::start("poll", Some(Duration::from_millis(50))).await;
    c.dcos.rewrite("c1", &c.text(&c.second));
    c.expect_used(&c.second).await;
}

// ---------------------------------------------------------------------------------------
// Recovering from a missed change: the 401 re-read and single retry
// ---------------------------------------------------------------------------------------

/// A proxy that sees no file events (it polls once an hour), logged in with `old`, whose
/// file has since been rewritten with `new` (a missed event), in front of a master that
/// now accepts only `new`.
async fn missed_rotation() -> (FakeMaster, DcosDir, Following, String) {
    let master = FakeMaster::start().await;
    let (old, new) = (jwt("old"), jwt("new"));
    master.accept(&old);
    let dcos = DcosDir::new();
    dcos.setup("c1", &master.url, Some(&old));
    let f = Following::start(&dcos, None, Some(Duration::from_secs(3600))).await;
    dcos.rewrite("c1", &dcos_toml(&master.url, Some(&new), "c1"));
    master.revoke(&old);
    master.accept(&new);
    assert_eq!(f.auth(), Some(token_header(&old)), "the change went unseen");
    (master, dcos, f, new)
}

#[tokio::test]
async fn a_401_rereads_the_config_and_retries_once_with_the_new_token() {
    let (master, _dcos, f, new) = missed_rotation().await;
    assert_eq!(status_of(&f, "/v2/apps").await, 200);
    let seen = master.seen();
    assert_eq!(seen.len(), 2, "one refused, one retried");
    assert_ne!(seen[0].authorization(), Some(token_header(&new).as_str()));
    assert_eq!(seen[1].authorization(), Some(token_header(&new).as_str()));
    assert_eq!(seen[1].target, "/v2/apps");
    // And from now on the new token goes first time.
    assert_eq!(f.auth(), Some(token_header(&new)));
    assert_eq!(status_of(&f, "/v2/apps").await, 200);
    assert_eq!(master.seen().len(), 3);
}

#[tokio::test]
async fn a_small_post_is_replayed_with_its_body() {
    let (master, _dcos, f, new) = missed_rotation().await;
    let body = Bytes::from_static(b"{\"id\":\"/app\",\"cmd\":\"sleep 1000\"}");
    let req = Request::post(f.url("/upload"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body_of(body.clone()))
        .unwrap();
    let (parts, answer) = send(req).await;
    assert_eq!(parts.status, 200);
    // The master read the whole body on the retry.
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with(&format!("{} ", body.len())), "{answer}");
    let seen = master.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].authorization(), Some(token_header(&new).as_str()));
    assert_eq!(
        seen[1].headers[header::CONTENT_LENGTH],
        body.len().to_string()
    );
}

#[tokio::test]
async fn a_streamed_post_is_never_replayed() {
    let (master, _dcos, f, _new) = missed_rotation().await;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let req = Request::post(f.url("/exec-input"))
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(http_body_util::BodyExt::boxed(ChannelBody(rx)))
        .unwrap();
    let sending = tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"input 1")).await;
        // The sender stays open: the body is a stream with no end in sight.
        tx
    });
    let (parts, _) = send(req).await;
    assert_eq!(parts.status, 401, "the master's 401 is passed through");
    assert_eq!(master.seen().len(), 1, "not replayed");
    drop(sending.await);
}

#[tokio::test]
async fn a_large_upload_is_never_replayed() {
    let (master, _dcos, f, _new) = missed_rotation().await;
    let big = vec![b'x'; 64 * 1024 + 1];
    let req = Request::put(f.url("/upload")).body(body_of(big)).unwrap();
    let (parts, _) = send(req).await;
    assert_eq!(parts.status, 401);
    assert_eq!(master.seen().len(), 1);
}

#[tokio::test]
async fn a_401_with_an_unchanged_token_on_disk_passes_through_once() {
    let master = FakeMaster::start().await;
    let t = jwt("revoked");
    // The master never accepts it (revoked, or expired).
    let dcos = DcosDir::new();
    dcos.setup("c1", &master.url, Some(&t));
    let f = Following::start(&dcos, None, None).await;
    let (parts, _) = get(&f.url("/x"), &[]).await;
    assert_eq!(parts.status, 401);
    assert_eq!(parts.headers[header::WWW_AUTHENTICATE], "acsjwt");
    assert_eq!(master.seen().len(), 1);
}

#[tokio::test]
async fn a_clients_own_token_is_not_retried_with_the_proxys() {
    let (master, _dcos, f, _new) = missed_rotation().await;
    let (parts, _) = get(
        &f.url("/x"),
        &[("authorization", "Bearer client-own.jwt.x")],
    )
    .await;
    assert_eq!(parts.status, 401);
    assert_eq!(master.seen().len(), 1);
    assert_eq!(
        master.last().authorization(),
        Some("token=client-own.jwt.x")
    );
}

#[tokio::test]
async fn logging_out_stops_sending_the_token() {
    let master = FakeMaster::start().await;
    let t = jwt("leaving");
    master.accept(&t);
    let dcos = DcosDir::new();
    dcos.setup("c1", &master.url, Some(&t));
    let f = Following::start(&dcos, None, None).await;
    // `dcos config set core.dcos_url …` removes the token.
    dcos.rewrite("c1", &dcos_toml(&master.url, None, "c1"));
    f.wait_until("logged out", |s| {
        s.upstream().is_some_and(|u| u.auth.is_none())
    })
    .await;
    let (parts, _) = get(&f.url("/x"), &[]).await;
    assert_eq!(parts.status, 401);
    assert_eq!(master.last().authorization(), None);
}

// ---------------------------------------------------------------------------------------
// Load: rotation under traffic
// ---------------------------------------------------------------------------------------

/// Four clients send requests back to back while the config is rewritten in place 60
/// times; every other rewrite is a slow one, with the file left for a while holding its
/// URL line but not yet its token line, and two in three are waited for until requests
/// carry them. No request may fail, none may reach the master
/// without a token, and within a second of the last write every request carries the last
/// token. The test is bounded by count (60 rewrites) and by time (a minute at most).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_rewrites_under_four_busy_clients_fail_nothing() {
    const REWRITES: usize = 60;
    const CLIENTS: usize = 4;
    let master = Arc::new(FakeMaster::start().await);
    let tokens: Vec<String> = (0..=REWRITES).map(|i| jwt(&format!("load-{i}"))).collect();
    for t in &tokens {
        master.accept(t);
    }
    let dcos = DcosDir::new();
    dcos.setup("c1", &master.url, Some(&tokens[0]));
    let f = Following::start(&dcos, None, None).await;
    let url = f.url("/load");

    let run = async {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                tokio::spawn(async move {
                    let client = client();
                    let (mut ok, mut failed) = (0usize, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let req = Request::get(&url).body(empty()).unwrap();
                        match client.request(req).await {
                            Ok(resp) => {
                                let status = resp.status();
                                let _ = resp.into_body().collect().await;
                                if status == StatusCode::OK {
                                    ok += 1;
                                } else {
                                    failed.push(status.to_string());
                                }
                            }
                            Err(e) => failed.push(e.to_string()),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();

        // Pace the writes by traffic, not by the clock: each rewrite waits until the
        // master has seen more requests.
        let file = dcos.file("c1");
        for (i, token) in tokens.iter().enumerate().skip(1) {
            master.wait_count(master.count() + 8).await;
            let text = dcos_toml(&master.url, Some(token), "c1");
            if i % 2 == 0 {
                std::fs::write(&file, &text).unwrap();
            } else {
                use std::io::Write;
                let split = text.find("dcos_acs_token").unwrap();
                let mut w = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&file)
                    .unwrap();
                w.write_all(&text.as_bytes()[..split]).unwrap();
                w.flush().unwrap();
                // Requests go on while the file has a URL but no token.
                master.wait_count(master.count() + 2).await;
                w.write_all(&text.as_bytes()[split..]).unwrap();
            }
            // Two writes in three are seen through before the next: the rest come in quick
            // succession, and only the last of such a burst need ever be used.
            if i % 3 != 0 {
                let want = token_header(token);
                loop {
                    master.wait_count(master.count() + 1).await;
                    if master.last().authorization() == Some(want.as_str()) {
                        break;
                    }
                }
            }
        }
        let last_write = std::time::Instant::now();
        let last = tokens.last().unwrap();

        // Keep the clients going until requests arrive more than a second after the
        // last write, then a few more.
        loop {
            master.wait_count(master.count() + 1).await;
            if master.last().at > last_write + Duration::from_secs(1) {
                break;
            }
        }
        master.wait_count(master.count() + 20).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut ok = 0;
        for c in clients {
            let (n, failed) = c.await.unwrap();
            assert!(failed.is_empty(), "failed requests: {failed:?}");
            ok += n;
        }
        (ok, last_write, last.clone())
    };
    let (ok, last_write, last) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the load test finishes within a minute");

    let seen = master.seen();
    let valid: std::collections::HashSet<String> = tokens.iter().map(|t| token_header(t)).collect();
    for (i, r) in seen.iter().enumerate() {
        let auth = r
            .authorization()
            .unwrap_or_else(|| panic!("request {i} had no token"));
        assert!(valid.contains(auth), "request {i} had an unknown token");
    }
    // Equal counts also show that no request needed the 401 retry to succeed.
    assert_eq!(
        seen.len(),
        ok,
        "every request reached the master once and got 200"
    );
    let final_auth = token_header(&last);
    let late: Vec<_> = seen
        .iter()
        .filter(|r| r.at > last_write + Duration::from_secs(1))
        .collect();
    assert!(late.len() >= 20);
    assert!(
        late.iter()
            .all(|r| r.authorization() == Some(final_auth.as_str())),
        "a request more than a second after the last write carried an older token"
    );
    let distinct: std::collections::HashSet<_> =
        seen.iter().filter_map(|r| r.authorization()).collect();
    assert!(
        distinct.len() > REWRITES * 2 / 3,
        "{} tokens used",
        distinct.len()
    );
    eprintln!(
        "load: {} requests, 0 failed, {} distinct tokens used across {REWRITES} rewrites",
        seen.len(),
        distinct.len()
    );
}

// ---------------------------------------------------------------------------------------
// Issue 9, finding 10: self-loops through an alias of the proxy's address
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn finding_10_a_change_to_an_alias_of_the_proxys_own_address_is_refused() {
    logs();
    let c = OneCluster::start("loop", None).await;
    let port = c.f.proxy.addr.port();
    for (i, host) in [
        "127.1",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "localhost",
    ]
    .iter()
    .enumerate()
    {
        let alias = format!("http://{host}:{port}");
        let text = dcos_toml(&alias, Some(&c.first), "c1");
        c.dcos.rewrite("c1", &text);
        let line = wait_log(1, &["requests would loop", &format!("{host}:{port}")]).await;
        assert!(line.contains("keeping the last good config"), "{line}");
        // Still the real master, and nothing went round.
        assert_eq!(status_of(&c.f, &format!("/still-{i}")).await, 200);
        assert_eq!(c.master.last().target, format!("/still-{i}"));
    }
}
