//! `dcos-token-proxy doctor`, the real binary against the fake master, in each failure
//! mode a newcomer meets: for each, the ✗ line and the fix text.
//!
//! Children start from an empty environment (plus `HOME` in a temporary directory and
//! what the test sets), so the developer's own `~/.dcos` and `DCOS_*` never leak in.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{FakeMaster, VALID, jwt_with, test_pki, unix_now};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_dcos-token-proxy");

/// What one run printed.
struct Doctor {
    code: Option<i32>,
    out: String,
}

impl Doctor {
    /// The line of step `n`.
    fn step(&self, n: u8) -> &str {
        let wanted = format!("{n}. ");
        self.out
            .lines()
            .find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, r)| r.starts_with(&wanted))
            })
            .unwrap_or_else(|| panic!("no step {n} in:\n{}", self.out))
    }

    /// The fix printed under step `n`.
    fn fix(&self, n: u8) -> &str {
        let line = self.step(n);
        let mut lines = self.out.lines().skip_while(|l| *l != line);
        lines.next();
        lines
            .next()
            .and_then(|l| l.trim().strip_prefix("fix: "))
            .unwrap_or_else(|| panic!("no fix under step {n} in:\n{}", self.out))
    }

    /// Step `n` failed, naming `detail`, with a fix naming `fix`.
    fn assert_fails(&self, n: u8, detail: &str, fix: &str) {
        let line = self.step(n);
        assert!(
            line.starts_with("✗"),
            "step {n} did not fail:\n{}",
            self.out
        );
        assert!(
            line.contains(detail),
            "step {n} lacks {detail:?}:\n{}",
            self.out
        );
        assert!(
            self.fix(n).contains(fix),
            "step {n}'s fix lacks {fix:?}:\n{}",
            self.out
        );
        assert_eq!(self.code, Some(1), "{}", self.out);
    }

    fn assert_passes(&self, n: u8, detail: &str) {
        let line = self.step(n);
        assert!(
            line.starts_with("✓"),
            "step {n} did not pass:\n{}",
            self.out
        );
        assert!(
            line.contains(detail),
            "step {n} lacks {detail:?}:\n{}",
            self.out
        );
    }
}

/// Run `doctor` (off the async threads, so the fake master keeps serving).
async fn doctor(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Doctor {
    let mut cmd = Command::new(BIN);
    cmd.arg("doctor")
        .args(args)
        .env_clear()
        .env("HOME", home)
        .envs(env.iter().copied())
        .current_dir(home)
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run doctor"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Doctor {
        code: out.status.code(),
        out: text,
    }
}

/// `<home>/.dcos/clusters/c1/dcos.toml`, attached, with what is given.
fn cluster(home: &Path, url: &str, token: Option<&str>, ssl_verify: Option<&Path>) -> PathBuf {
    let dir = home.join(".dcos/clusters/c1");
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = format!("[core]\ndcos_url = \"{url}\"\n");
    if let Some(t) = token {
        toml.push_str(&format!("dcos_acs_token = \"{t}\"\n"));
    }
    if let Some(ca) = ssl_verify {
        toml.push_str(&format!("ssl_verify = \"{}\"\n", ca.display()));
    }
    toml.push_str("\n[cluster]\nname = \"lab\"\n");
    let file = dir.join("dcos.toml");
    std::fs::write(&file, toml).unwrap();
    std::fs::write(dir.join("attached"), "").unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_fine_passes_all_eight_and_exits_0() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    let token = jwt_with("alice", Some(unix_now() + 3 * 3600));
    master.accept(&token);
    let file = cluster(home.path(), &master.url, Some(&token), None);
    let d = doctor(home.path(), &[], &[]).await;
    assert_eq!(d.code, Some(0), "{}", d.out);
    d.assert_passes(1, &file.display().to_string());
    d.assert_passes(1, "per-cluster layout");
    d.assert_passes(2, "the attached one");
    d.assert_passes(3, "uid alice, expires in 2h");
    d.assert_passes(3, "core.dcos_acs_token in");
    d.assert_passes(5, "TCP ok");
    d.assert_passes(6, "DC/OS 2.2.0");
    d.assert_passes(7, "401");
    d.assert_passes(8, "200");
    assert!(!d.out.contains(&token), "never the token:\n{}", d.out);
    assert!(!d.out.contains('✗'), "{}", d.out);

    // --json: one object, the same verdicts.
    let d = doctor(home.path(), &["--json"], &[]).await;
    let v: serde_json::Value = serde_json::from_str(d.out.trim()).unwrap();
    assert_eq!(v["ok"], true, "{}", d.out);
    assert_eq!(v["steps"].as_array().unwrap().len(), 8);
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "pass")
    );
    // --cluster after the subcommand works too, and is named as the reason.
    let d = doctor(home.path(), &["--cluster", "lab"], &[]).await;
    d.assert_passes(2, "picked by --cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_config() {
    let home = TempDir::new().unwrap();
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_fails(1, "no DC/OS CLI config", "dcos cluster setup");
    assert!(d.step(8).starts_with('-'), "{}", d.out);
    let v: serde_json::Value =
        serde_json::from_str(doctor(home.path(), &["--json"], &[]).await.out.trim()).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["steps"][0]["status"], "fail");
    assert!(
        v["steps"][0]["fix"]
            .as_str()
            .unwrap()
            .contains("dcos cluster setup")
    );
    assert_eq!(v["steps"][7]["status"], "skipped");
}

/// The DC/OS CLI writes an empty `~/.dcos/dcos.toml` the first time it runs, before
/// `dcos cluster setup`: that is "not set up yet", with the set-up command as the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_legacy_file() {
    let home = TempDir::new().unwrap();
    std::fs::create_dir_all(home.path().join(".dcos")).unwrap();
    std::fs::write(home.path().join(".dcos/dcos.toml"), "\n  \n").unwrap();
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_fails(1, "dcos.toml", "dcos cluster setup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    cluster(home.path(), &master.url, None, None);
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_fails(3, "not logged in", "dcos auth login");
    d.assert_passes(7, "401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    let token = jwt_with("alice", Some(unix_now() - 7200));
    cluster(home.path(), &master.url, Some(&token), None);
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_fails(3, "expired 2h", "dcos auth login");
    d.assert_fails(8, "401", "dcos auth login");
}

/// A stale `DCOS_ACS_TOKEN` beats the good token in the file: the fix is to unset the
/// variable, not `dcos auth login`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_token_that_beats_the_file() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    let file = cluster(home.path(), &master.url, Some(VALID), None);
    let stale = jwt_with("bob", Some(unix_now() + 3600));
    let d = doctor(home.path(), &[], &[("DCOS_ACS_TOKEN", &stale)]).await;
    d.assert_passes(3, "from DCOS_ACS_TOKEN in the environment, which beats");
    d.assert_passes(3, &file.display().to_string());
    d.assert_fails(8, "DCOS_ACS_TOKEN", "unset DCOS_ACS_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ca_file() {
    let pki = test_pki(&["localhost"]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let home = TempDir::new().unwrap();
    let ca = home.path().join("dcos_ca.crt");
    std::fs::write(&ca, "this is not PEM\n").unwrap();
    cluster(home.path(), &master.url, Some(VALID), Some(&ca));
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_fails(4, "holds no PEM certificate", "dcos_ca.crt");
    assert!(d.step(5).starts_with('-'), "{}", d.out);
}

/// A certificate made with `openssl req -x509` is a self-signed CA; used as the master's
/// own certificate, rustls refuses it (`CaUsedAsEndEntity`). Doctor says what it means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_used_as_the_masters_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let master = FakeMaster::start_tls(Arc::new(server)).await;
    let home = TempDir::new().unwrap();
    let ca = home.path().join("master.crt");
    std::fs::write(&ca, cert.pem()).unwrap();
    cluster(home.path(), &master.url, Some(VALID), Some(&ca));
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_fails(
        5,
        "this certificate is a CA, not the master's certificate",
        "TLS settings",
    );
    assert!(!d.out.contains("CaUsedAsEndEntity"), "{}", d.out);
    assert_eq!(master.count(), 0);
}

/// The right CA over TLS: every step passes, and step 5 names the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_cluster_ca_passes() {
    let pki = test_pki(&["localhost"]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let home = TempDir::new().unwrap();
    let ca = home.path().join("dcos_ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    cluster(home.path(), &master.url, Some(VALID), Some(&ca));
    let d = doctor(home.path(), &[], &[]).await;
    assert_eq!(d.code, Some(0), "{}", d.out);
    d.assert_passes(4, "dcos_ca.crt");
    d.assert_passes(5, "TLS handshake ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_master() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = TempDir::new().unwrap();
    cluster(
        home.path(),
        &format!("http://127.0.0.1:{port}"),
        Some(VALID),
        None,
    );
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_fails(5, "connection refused", "is the master up?");
    assert!(!d.out.contains("os error"), "{}", d.out);
    assert!(d.step(6).starts_with('-'), "{}", d.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_with_the_current_token() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    let token = jwt_with("alice", Some(unix_now() + 3600));
    // Not expired, but the master does not know it (revoked, or another cluster's).
    cluster(home.path(), &master.url, Some(&token), None);
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_passes(3, "uid alice");
    d.assert_fails(8, "refused the token (401)", "dcos auth login");
}

/// Step 5 reports the route it used: direct, or the HTTP proxy / SOCKS / command that
/// carries the connection (issue 12). Through a proxy the master's name need not resolve
/// here, so the check goes the way the proxy's requests go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_check_names_its_route() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    cluster(home.path(), &master.url, Some(VALID), None);
    let d = doctor(home.path(), &[], &[]).await;
    d.assert_passes(5, "(direct, no proxy)");

    // A proxy nothing listens on, for a master whose name only the proxy could resolve.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = TempDir::new().unwrap();
    cluster(home.path(), "http://dcos-master.invalid", Some(VALID), None);
    let proxy = format!("http://127.0.0.1:{port}");
    let d = doctor(
        home.path(),
        &[],
        &[("DCOS_TOKEN_PROXY_UPSTREAM_PROXY", proxy.as_str())],
    )
    .await;
    d.assert_fails(
        5,
        &format!("dcos-master.invalid:80 via the HTTP proxy {proxy}"),
        "--upstream-proxy",
    );
}
