//! One proxy for every cluster: `http://<name>.localhost:PORT/` reaches the DC/OS cluster
//! of that name (or ID) with its own token, followed live; the plain host stays on the
//! attached cluster; an unknown name gets 404 with the list of known clusters; and
//! `dcos-token-proxy clusters` prints them all.
//!
//! Two fake masters, each accepting only the tokens it "issued", behind one in-process
//! proxy that follows a temporary DC/OS directory with a real file watcher. Tests wait
//! on events (a publication, then a request's answer), never on a sleep.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dcos_token_proxy::Proxy;
use dcos_token_proxy::dcos::config::discover;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::source::Published;
use dcos_token_proxy::source::watch::Follow;
use dcos_token_proxy::types::WatchMode;
use http::StatusCode;
use tempfile::TempDir;
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_dcos-token-proxy");

/// How long any single awaited event may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// A token for `uid` that expires in 2100.
fn jwt(uid: &str) -> String {
    jwt_with(uid, Some(4_102_444_800))
}

fn dcos_toml(url: &str, token: &str, name: &str) -> String {
    format!(
        "[core]\ndcos_url = \"{url}\"\ndcos_acs_token = \"{token}\"\nssl_verify = \"true\"\n\n\
         [cluster]\nname = \"{name}\"\n"
    )
}

/// A DC/OS directory with two clusters: `prod` (attached) and `staging`, each in front of
/// its own fake master, logged in with its own token.
struct TwoClusters {
    _tmp: TempDir,
    root: PathBuf,
    prod: FakeMaster,
    staging: FakeMaster,
    prod_token: String,
    staging_token: String,
}

/// The cluster IDs (directory names), as `dcos cluster setup` makes them.
const PROD_ID: &str = "4a1c6f0e-prod";
const STAGING_ID: &str = "9b2d7e1f-staging";

impl TwoClusters {
    async fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join(".dcos");
        let (prod, staging) = (FakeMaster::start().await, FakeMaster::start().await);
        let (prod_token, staging_token) = (jwt("alice-prod"), jwt("alice-staging"));
        prod.accept(&prod_token);
        staging.accept(&staging_token);
        let me = Self {
            _tmp: tmp,
            root,
            prod,
            staging,
            prod_token,
            staging_token,
        };
        me.write(PROD_ID, &me.prod.url, &me.prod_token, "prod");
        me.write(STAGING_ID, &me.staging.url, &me.staging_token, "staging");
        std::fs::write(me.dir(PROD_ID).join("attached"), "").unwrap();
        me
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join("clusters").join(id)
    }

    /// `dcos cluster setup` / `dcos auth login`: write the file in place.
    fn write(&self, id: &str, url: &str, token: &str, name: &str) {
        std::fs::create_dir_all(self.dir(id)).unwrap();
        std::fs::write(self.dir(id).join("dcos.toml"), dcos_toml(url, token, name)).unwrap();
    }
}

/// A proxy following a DC/OS directory, served in the background.
struct Following {
    proxy: RunningProxy,
    source: Arc<Published>,
}

impl Following {
    async fn start(root: &Path) -> Self {
        Self::start_with(root, None).await
    }

    /// Start following `root` with file events, or by polling every `poll` when given.
    async fn start_with(root: &Path, poll: Option<Duration>) -> Self {
        let mut settings = test_settings();
        settings.discover.dcos_dir = Some(root.to_path_buf());
        let env = Env::default();
        let cfg = discover(&settings.discover, &env).expect("the attached cluster");
        let proxy = Proxy::bind(&settings, &cfg).await.expect("proxy starts");
        let mut follow = Follow::new(&settings, env);
        if let Some(every) = poll {
            follow.mode = WatchMode::Poll;
            follow.poll_interval = every;
        }
        let proxy = proxy.follow(follow);
        let source = proxy.source();
        let addr = proxy.local_addr().expect("a TCP test proxy");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy.serve(async move {
            let _ = rx.await;
        }));
        Self {
            proxy: RunningProxy::new(addr, tx, task),
            source,
        }
    }

    fn port(&self) -> u16 {
        self.proxy.addr.port()
    }

    /// GET `path` with `Host: <host>` (`<label>.localhost:PORT`, or the plain address).
    async fn get_as(&self, host: &str, path: &str) -> (StatusCode, String) {
        let (parts, body) = get(&format!("{}{path}", self.proxy.url), &[("host", host)]).await;
        (parts.status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `<label>.localhost:PORT`.
    fn named(&self, label: &str) -> String {
        format!("{label}.localhost:{}", self.port())
    }

    /// Send GET `path` as `host` until `done` holds for what `master` saw last (each new
    /// try waits for the next publication), and return the status of the last try.
    async fn until(
        &self,
        host: &str,
        path: &str,
        master: &FakeMaster,
        done: impl Fn(StatusCode, Option<&Seen>) -> bool,
    ) -> StatusCode {
        let mut changes = self.source.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            changes.borrow_and_update();
            let before = master.count();
            let (status, body) = self.get_as(host, path).await;
            let seen = master.seen();
            let last = (seen.len() > before).then(|| seen.last()).flatten();
            if done(status, last) {
                return status;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!(
                    "GET {path} as {host}: not as expected within {WAIT:?}; last answer \
                     {status}: {body}"
                );
            }
        }
    }
}

fn bearer(token: &str) -> String {
    format!("token={token}")
}

/// The request `master` saw last carries `token` and has `path`.
fn carries(seen: Option<&Seen>, path: &str, token: &str) -> bool {
    seen.is_some_and(|s| s.target == path && s.authorization() == Some(bearer(token).as_str()))
}

#[tokio::test]
async fn each_named_host_reaches_its_own_cluster_with_its_own_token() {
    let t = TwoClusters::new().await;
    let f = Following::start(&t.root).await;

    // The plain host stays on the attached cluster.
    let plain = f.proxy.addr.to_string();
    let (status, _) = f.get_as(&plain, "/plain").await;
    assert_eq!(status, 200);
    assert!(carries(t.prod.seen().last(), "/plain", &t.prod_token));

    // By name, case-insensitively, and by ID.
    for (label, master, token) in [
        ("staging", &t.staging, &t.staging_token),
        ("STAGING", &t.staging, &t.staging_token),
        (STAGING_ID, &t.staging, &t.staging_token),
        ("prod", &t.prod, &t.prod_token),
        ("Prod", &t.prod, &t.prod_token),
    ] {
        let path = format!("/by/{}", label.to_ascii_lowercase());
        let status = f
            .until(&f.named(label), &path, master, |_, seen| {
                carries(seen, &path, token)
            })
            .await;
        assert_eq!(status, 200, "{label}");
    }
    // Nothing crossed over: each master saw only its own token.
    for s in t.staging.seen() {
        assert_eq!(s.authorization(), Some(bearer(&t.staging_token).as_str()));
    }
    for s in t.prod.seen() {
        assert_eq!(s.authorization(), Some(bearer(&t.prod_token).as_str()));
    }
}

#[tokio::test]
async fn an_unknown_name_is_404_with_the_known_clusters() {
    let t = TwoClusters::new().await;
    let f = Following::start(&t.root).await;
    let before = (t.prod.count(), t.staging.count());
    let (status, body) = f.get_as(&f.named("nosuch"), "/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("nosuch"), "{body}");
    for name in ["prod", "staging"] {
        let url = format!("http://{name}.localhost:{}/", f.port());
        assert!(body.contains(&url), "{url} missing from:\n{body}");
    }
    assert!(
        body.contains(PROD_ID) && body.contains(STAGING_ID),
        "{body}"
    );
    for token in [&t.prod_token, &t.staging_token] {
        assert!(
            !body.contains(token.as_str()),
            "a token in the 404:\n{body}"
        );
    }
    assert_eq!(
        (t.prod.count(), t.staging.count()),
        before,
        "nothing forwarded"
    );
}

#[tokio::test]
async fn a_login_in_one_cluster_leaves_the_other_alone() {
    let t = TwoClusters::new().await;
    let f = Following::start(&t.root).await;
    let staging_host = f.named("staging");
    let prod_host = f.named("prod");
    f.until(&staging_host, "/s1", &t.staging, |_, seen| {
        carries(seen, "/s1", &t.staging_token)
    })
    .await;

    // `dcos auth login` against staging: a new token, written in place.
    let fresh = jwt("alice-staging-again");
    t.staging.accept(&fresh);
    t.write(STAGING_ID, &t.staging.url, &fresh, "staging");
    let status = f
        .until(&staging_host, "/s2", &t.staging, |_, seen| {
            carries(seen, "/s2", &fresh)
        })
        .await;
    assert_eq!(status, 200);

    // Prod, by name and on the plain host, still uses its own token.
    let (status, _) = f.get_as(&prod_host, "/p1").await;
    assert_eq!(status, 200);
    assert!(carries(t.prod.seen().last(), "/p1", &t.prod_token));
    let (status, _) = f.get_as(&f.proxy.addr.to_string(), "/p2").await;
    assert_eq!(status, 200);
    assert!(carries(t.prod.seen().last(), "/p2", &t.prod_token));
    for s in t.prod.seen() {
        assert_ne!(s.authorization(), Some(bearer(&fresh).as_str()));
    }
}

#[tokio::test]
async fn a_401_on_a_named_cluster_rereads_its_file_and_retries_with_its_new_token() {
    let t = TwoClusters::new().await;
    // Polling once an hour: the proxy sees no change unless a 401 makes it look.
    let f = Following::start_with(&t.root, Some(Duration::from_secs(3600))).await;
    let staging_host = f.named("staging");
    f.until(&staging_host, "/s1", &t.staging, |_, seen| {
        carries(seen, "/s1", &t.staging_token)
    })
    .await;

    // A `dcos auth login` against staging that the proxy missed: the master now accepts
    // only the new token.
    let fresh = jwt("alice-staging-again");
    t.write(STAGING_ID, &t.staging.url, &fresh, "staging");
    t.staging.revoke(&t.staging_token);
    t.staging.accept(&fresh);
    let before = t.staging.count();
    let (status, body) = f.get_as(&staging_host, "/s2").await;
    assert_eq!(status, 200, "{body}");
    let seen = t.staging.seen();
    assert_eq!(seen.len() - before, 2, "one refused, one retried: {seen:?}");
    assert!(carries(seen.last(), "/s2", &fresh));
    // The next request goes with the new token the first time.
    let (status, _) = f.get_as(&staging_host, "/s3").await;
    assert_eq!(status, 200);
    assert_eq!(t.staging.count(), before + 3);
    assert!(carries(t.staging.seen().last(), "/s3", &fresh));
    // Prod was not touched by staging's re-read.
    let (status, _) = f.get_as(&f.named("prod"), "/p1").await;
    assert_eq!(status, 200);
    assert!(carries(t.prod.seen().last(), "/p1", &t.prod_token));
}

/// Run `dcos-token-proxy clusters ARGS` on `root` (off the async threads).
fn clusters_command(root: &Path, args: &[&str]) -> (Option<i32>, String) {
    // --listen is a serving flag: it goes before the subcommand.
    let out = Command::new(BIN)
        .arg("--listen")
        .arg("127.0.0.1:18079")
        .arg("clusters")
        .args(args)
        .arg("--dcos-dir")
        .arg(root)
        .env_clear()
        .env("HOME", root)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .expect("run clusters");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_clusters_command_lists_every_cluster_as_a_table_and_as_json() {
    let t = TwoClusters::new().await;
    // A third cluster, not logged in, and one whose token expired.
    let expired = jwt_with("bob", Some(unix_now() - 3600));
    t.write("c3-old", "https://old.example.com", &expired, "old");

    let (code, text) = clusters_command(&t.root, &[]);
    assert_eq!(code, Some(0), "{text}");
    let header = text.lines().next().unwrap_or_default();
    for col in ["NAME", "ID", "URL", "ATTACHED", "TOKEN", "LOCAL URL"] {
        assert!(header.contains(col), "{col} missing from {header:?}");
    }
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
            .to_owned()
    };
    let prod = row("prod");
    assert!(
        prod.contains(PROD_ID) && prod.contains(&t.prod.url),
        "{prod}"
    );
    assert!(prod.contains("yes"), "{prod}");
    assert!(prod.contains("http://prod.localhost:18079/"), "{prod}");
    assert!(prod.contains("expires in"), "{prod}");
    let staging = row("staging");
    assert!(
        staging.contains("no") && !staging.contains("yes"),
        "{staging}"
    );
    assert!(
        staging.contains("http://staging.localhost:18079/"),
        "{staging}"
    );
    assert!(row("old").contains("expired"), "{text}");
    for token in [&t.prod_token, &t.staging_token, &expired] {
        assert!(!text.contains(token.as_str()), "a token in:\n{text}");
    }

    let (code, json) = clusters_command(&t.root, &["--json"]);
    assert_eq!(code, Some(0), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let list = v["clusters"].as_array().expect("a clusters array");
    assert_eq!(list.len(), 3, "{json}");
    let prod = list
        .iter()
        .find(|c| c["name"] == "prod")
        .expect("prod in the JSON");
    assert_eq!(prod["id"], PROD_ID);
    assert_eq!(prod["url"], t.prod.url.trim_end_matches('/'));
    assert_eq!(prod["attached"], true);
    assert_eq!(prod["local_url"], "http://prod.localhost:18079/");
    assert_eq!(prod["token"]["exp"], 4_102_444_800u64);
    assert_eq!(prod["token"]["uid"], "alice-prod");
    let old = list.iter().find(|c| c["name"] == "old").expect("old");
    assert_eq!(old["token"]["expired"], true);
    for token in [&t.prod_token, &t.staging_token, &expired] {
        assert!(!json.contains(token.as_str()), "a token in:\n{json}");
    }
}
