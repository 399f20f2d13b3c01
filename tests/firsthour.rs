//! The first hour with the real binary: `-h`, `config example`, completions and the man
//! page, the service files in `config/`, and leaving with Ctrl-C while a stream is open.
//!
//! Children start from an empty environment (plus `HOME` in a temporary directory), so
//! the developer's own `~/.dcos` and `DCOS_*` variables never leak in. Every wait is on
//! an event (a line of output, the end of the output) under a 10 s guard, never a sleep;
//! a child is killed when its guard is dropped.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{FakeMaster, VALID};
use dcos_token_proxy::settings::FileSettings;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_dcos-token-proxy");
/// Failure guard for every wait; a healthy run needs a small fraction of it.
const WAIT: Duration = Duration::from_secs(10);
const LISTENING: &str = "dcos-token-proxy listening on http://";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// The binary with an empty environment but for `HOME` (also the working directory).
fn command(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("HOME", home)
        .envs(env.iter().copied())
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Run to the end; (status, stdout, stderr).
fn run(home: &Path, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = command(home, args, env)
        .output()
        .expect("run dcos-token-proxy");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running child whose stdout and stderr lines arrive on one channel.
struct Running {
    child: Child,
    rx: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = command(home, args, env).spawn().expect("spawn");
        let (tx, rx) = mpsc::unbounded_channel();
        pump(child.stdout.take().expect("stdout"), tx.clone());
        pump(child.stderr.take().expect("stderr"), tx);
        Self {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Wait for a line containing every one of `needles` (lines already seen count).
    async fn wait_line(&mut self, needles: &[&str]) -> String {
        if let Some(line) = self
            .seen
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Ok(None) => panic!("output ended before {needles:?}:\n{}", self.seen.join("\n")),
                Err(_) => panic!("no {needles:?} within {WAIT:?}:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The proxy's address, from its `listening on` line.
    async fn addr(&mut self) -> String {
        let line = self.wait_line(&[LISTENING]).await;
        line[LISTENING.len()..].trim_end_matches('/').to_owned()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Wait for the end of the output, then reap; returns the status and every line.
    async fn finish(mut self) -> (ExitStatus, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) => break,
                Err(_) => panic!("did not exit within {WAIT:?}:\n{}", self.seen.join("\n")),
            }
        }
        let status = self.child.wait().expect("wait");
        (status, self.seen.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(r: impl Read + Send + 'static, tx: mpsc::UnboundedSender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
}

/// A home with one logged-in cluster at `<home>/.dcos` pointing at `url`.
fn home_with_cluster(url: &str) -> TempDir {
    let home = TempDir::new().unwrap();
    let dir = home.path().join(".dcos/clusters/c1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dcos.toml"),
        format!("[core]\ndcos_url = \"{url}\"\ndcos_acs_token = \"{VALID}\"\n\n[cluster]\nname = \"one\"\n"),
    )
    .unwrap();
    home
}

// ---------------------------------------------------------------------------------------
// --help, config example, completions, man
// ---------------------------------------------------------------------------------------

/// `-h` fits on one screen (56 lines of at most 100 columns, one line per flag; it was
/// 87 lines of mixed order), and the groups come in the order a newcomer needs them:
/// cluster and credentials first, logging last.
#[test]
fn short_help_fits_one_screen_cluster_flags_first() {
    let home = TempDir::new().unwrap();
    let (status, help, _) = run(home.path(), &["-h"], &[]);
    assert!(status.success());
    let lines: Vec<&str> = help.lines().collect();
    assert!(lines.len() <= 56, "{} lines:\n{help}", lines.len());
    assert!(lines.iter().all(|l| l.chars().count() <= 100), "{help}");
    let at = |needle: &str| {
        help.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from:\n{help}"))
    };
    let order = [
        "Cluster and credentials:",
        "--dcos-dir",
        "--cluster",
        "--upstream",
        "Listening:",
        "--listen",
        "Security:",
        "--allowed-hosts",
        "Timeouts:",
        "--response-timeout",
        "Logging:",
        "--log-format",
    ];
    for pair in order.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{pair:?} out of order:\n{help}");
    }
    // The long form still documents every environment variable rule and the example.
    let (_, long, _) = run(home.path(), &["--help"], &[]);
    assert!(long.contains("DCOS_TOKEN_PROXY_<FLAG>"), "{long}");
    assert!(long.contains("config example"), "{long}");
    // The unix-socket example fails clearly when XDG_RUNTIME_DIR is unset.
    assert!(long.contains("${XDG_RUNTIME_DIR:?}"), "{long}");
}

/// `config example` prints the annotated settings file shipped in `config/`, and what it
/// prints is a valid settings file.
#[test]
fn config_example_prints_a_settings_file_that_parses() {
    let home = TempDir::new().unwrap();
    let (status, out, err) = run(home.path(), &["config", "example"], &[]);
    assert!(status.success(), "{err}");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dcos-token-proxy.toml"),
    )
    .unwrap();
    assert_eq!(out, shipped);
    FileSettings::parse(Path::new("config example"), &out).unwrap();
    // The binary accepts it as --config.
    let file = home.path().join("proxy.toml");
    std::fs::write(&file, &out).unwrap();
    let (status, _, err) = run(
        home.path(),
        &["--config", file.to_str().unwrap(), "config", "example"],
        &[],
    );
    assert!(status.success(), "{err}");
}

#[test]
fn completions_and_man_page_come_from_the_flag_definitions() {
    let home = TempDir::new().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let (status, out, err) = run(home.path(), &["completions", shell], &[]);
        assert!(status.success(), "{shell}: {err}");
        for flag in ["dcos-dir", "allowed-hosts", "shutdown-grace"] {
            assert!(
                out.contains(flag),
                "{shell} completions lack {flag}:\n{out}"
            );
        }
    }
    let (status, out, err) = run(home.path(), &["man"], &[]);
    assert!(status.success(), "{err}");
    assert!(out.contains(".TH dcos-token-proxy"), "{out}");
    assert!(out.contains(".SH \"CLUSTER AND CREDENTIALS\""), "{out}");
    assert!(out.contains("\\-\\-dcos\\-dir"), "{out}");
    let (status, _, err) = run(home.path(), &["completions", "cmd.exe"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
}

// ---------------------------------------------------------------------------------------
// Ctrl-C
// ---------------------------------------------------------------------------------------

/// With an SSE stream open, the first Ctrl-C says what the proxy waits for and that a
/// second one exits now; the process keeps draining. The second exits at once with 130.
#[tokio::test]
async fn second_ctrl_c_exits_at_once_while_a_stream_is_open() {
    let master = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    let mut proxy = Running::spawn(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    let addr = proxy.addr().await;

    // Open the stream and read its first event.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(format!("GET /sse HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data:") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("first event in time")
            .unwrap();
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }

    proxy.signal("INT");
    let line = proxy
        .wait_line(&["SIGINT", "press Ctrl-C again to exit now"])
        .await;
    assert!(line.contains("open requests and streams"), "{line}");
    assert!(line.contains("30s"), "names the grace period: {line}");
    // Still draining: the stream is open and the grace period is 30 s.
    assert!(proxy.child.try_wait().unwrap().is_none(), "{line}");

    proxy.signal("INT");
    let (status, all) = proxy.finish().await;
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("exiting now"), "{all}");
    drop(s);
}

// ---------------------------------------------------------------------------------------
// Plain messages
// ---------------------------------------------------------------------------------------

/// `dcos cluster remove` of a cluster the proxy is not using deletes its directory; the
/// file-watching library's Debug-form bookkeeping (`Os { code: 22, … }`,
/// `Error { kind: WatchNotFound, … }`) must not reach the log.
#[tokio::test]
async fn removing_a_cluster_logs_no_library_debug_text() {
    let master = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    let clusters = home.path().join(".dcos/clusters");
    std::fs::write(clusters.join("c1/attached"), "").unwrap();
    let other = clusters.join("c2");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("dcos.toml"),
        format!(
            "[core]\ndcos_url = \"{}\"\n\n[cluster]\nname = \"two\"\n",
            master.url
        ),
    )
    .unwrap();
    let mut proxy = Running::spawn(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    proxy.addr().await;
    proxy.wait_line(&["proxy ready"]).await;

    std::fs::remove_dir_all(&other).unwrap();
    // A later change the proxy does report: by then the removal has been handled.
    let token = common::jwt_with("alice", None);
    std::fs::write(
        clusters.join("c1/dcos.toml"),
        format!(
            "[core]\ndcos_url = \"{}\"\ndcos_acs_token = \"{token}\"\n\n[cluster]\nname = \"one\"\n",
            master.url
        ),
    )
    .unwrap();
    proxy.wait_line(&["DC/OS config changed"]).await;
    proxy.signal("TERM");
    let (status, all) = proxy.finish().await;
    assert_eq!(status.code(), Some(0), "{all}");
    for debug_form in ["Os {", "Error {", "kind:", "watch descriptor"] {
        assert!(!all.contains(debug_form), "{debug_form}:\n{all}");
    }
}

// ---------------------------------------------------------------------------------------
// Not set up yet
// ---------------------------------------------------------------------------------------

/// The DC/OS CLI creates an empty `~/.dcos/dcos.toml` the first time it runs, before
/// `dcos cluster setup`. The proxy starts, answers 503 with the set-up command, and
/// serves as soon as the file names a cluster.
#[tokio::test]
async fn an_empty_legacy_file_waits_for_setup_like_no_config() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    let dcos = home.path().join(".dcos");
    std::fs::create_dir_all(&dcos).unwrap();
    let legacy = dcos.join("dcos.toml");
    std::fs::write(&legacy, " \n\t\n").unwrap();
    let mut proxy = Running::spawn(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    let addr = proxy.addr().await;
    let warning = proxy.wait_line(&["requests get 503"]).await;
    assert!(warning.contains("no cluster is set up yet"), "{warning}");
    let url = format!("http://{addr}/service/marathon/v2/apps");
    let (parts, body) = common::get(&url, &[]).await;
    assert_eq!(parts.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&body).contains("dcos cluster setup"),
        "{body:?}"
    );

    // `dcos cluster setup` writes the file: served from then on.
    std::fs::write(
        &legacy,
        format!(
            "[core]\ndcos_url = \"{}\"\ndcos_acs_token = \"{VALID}\"\n",
            master.url
        ),
    )
    .unwrap();
    proxy.wait_line(&["using DC/OS cluster"]).await;
    let (parts, _) = common::get(&url, &[]).await;
    assert_eq!(parts.status, http::StatusCode::OK);
    assert_eq!(
        master.last().authorization(),
        Some(format!("token={VALID}").as_str())
    );
}

// ---------------------------------------------------------------------------------------
// Naming the real source of each value
// ---------------------------------------------------------------------------------------

/// `DCOS_URL` set to the proxy's own address makes every request loop: the error names
/// `DCOS_URL` as the cause and does not suggest setting it.
#[test]
fn a_loop_caused_by_dcos_url_names_dcos_url() {
    let home = TempDir::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own = format!("http://127.0.0.1:{port}");
    let (status, _, err) = run(
        home.path(),
        &["--listen", &format!("127.0.0.1:{port}")],
        &[("DCOS_URL", own.as_str()), ("DCOS_ACS_TOKEN", VALID)],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("from DCOS_URL"), "{err}");
    assert!(err.contains("unset DCOS_URL"), "{err}");
    assert!(!err.contains("core.dcos_url"), "blames the file: {err}");
}

/// A stale `DCOS_ACS_TOKEN` beats the file's token: the startup line names the variable
/// as the token's source, and the 401 hint says to unset or refresh it, not to run
/// `dcos auth login` (which cannot help).
#[tokio::test]
async fn an_environment_token_is_named_and_its_401_hint_fits() {
    let master = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    let stale = common::jwt_with("bob", Some(common::unix_now() + 3600));
    let mut proxy = Running::spawn(
        home.path(),
        &["--listen", "127.0.0.1:0"],
        &[("DCOS_ACS_TOKEN", stale.as_str())],
    );
    let addr = proxy.addr().await;
    let using = proxy.wait_line(&["using DC/OS cluster"]).await;
    assert!(using.contains("token_from=DCOS_ACS_TOKEN"), "{using}");
    assert!(using.contains("url_from=core.dcos_url in"), "{using}");
    let (parts, _) = common::get(&format!("http://{addr}/service/marathon/v2/apps"), &[]).await;
    assert_eq!(parts.status, http::StatusCode::UNAUTHORIZED);
    // Not just "401": a listening port such as 40149 would match that.
    let hint = proxy.wait_line(&["answered 401 Unauthorized"]).await;
    assert!(hint.contains("unset DCOS_ACS_TOKEN"), "{hint}");
    assert!(!hint.contains("run `dcos auth login`"), "{hint}");
    assert!(!hint.contains(&stale), "never the token: {hint}");
}

// ---------------------------------------------------------------------------------------
// Ready: the banner, the JSON ready line, the background master check
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn startup_checks_the_master_and_says_the_token_works() {
    let master = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    let mut proxy = Running::spawn(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    proxy.addr().await;
    let line = proxy.wait_line(&["master check"]).await;
    assert!(line.contains("DC/OS 2.2.0; the token works"), "{line}");
    let seen: Vec<String> = master.probes().iter().map(|s| s.target.clone()).collect();
    assert!(
        seen.contains(&"/dcos-metadata/dcos-version.json".to_owned()),
        "{seen:?}"
    );
}

#[tokio::test]
async fn startup_check_reports_a_refused_token_with_the_fix() {
    let master = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    master.revoke(VALID);
    let mut proxy = Running::spawn(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    proxy.addr().await;
    let line = proxy.wait_line(&["master check"]).await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("refused the token (401)"), "{line}");
    assert!(line.contains("dcos auth login"), "{line}");
}

/// A master that accepts connections and never answers: the check cannot finish, and
/// the proxy serves all the same (a refused Host is answered by the proxy itself).
#[tokio::test]
async fn startup_check_never_delays_serving() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let home = home_with_cluster(&url);
    let mut proxy = Running::spawn(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    let addr = proxy.addr().await;
    proxy.wait_line(&["proxy ready"]).await;
    let (parts, _) = common::get(&format!("http://{addr}/"), &[("host", "evil.example")]).await;
    assert_eq!(parts.status, http::StatusCode::FORBIDDEN);
    assert!(!proxy.seen.iter().any(|l| l.contains("master check")));
    held.abort();
}

#[tokio::test]
async fn json_mode_prints_one_ready_line_without_the_token() {
    let master = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    let mut proxy = Running::spawn(
        home.path(),
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        &[],
    );
    let addr = proxy.addr().await;
    let line = proxy.wait_line(&["\"message\":\"ready\""]).await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["url"], format!("http://{addr}"));
    assert_eq!(v["cluster"], "one");
    assert_eq!(v["uid"], "bootstrapuser");
    assert!(
        v["token_from"]
            .as_str()
            .unwrap()
            .starts_with("core.dcos_acs_token in ")
    );
    assert_eq!(
        v["example"],
        format!("curl http://{addr}/service/marathon/v2/apps")
    );
    assert!(!line.contains(VALID), "{line}");
}

/// Log wording: a new URL for the same cluster is not "another cluster", and a broken
/// file that is fixed says so.
#[tokio::test]
async fn log_wording_for_a_moved_master_and_a_fixed_file() {
    let master = FakeMaster::start().await;
    let other = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    let file = home.path().join(".dcos/clusters/c1/dcos.toml");
    let mut proxy = Running::spawn(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    proxy.addr().await;
    proxy.wait_line(&["using DC/OS cluster"]).await;

    let good = |url: &str| {
        format!(
            "[core]\ndcos_url = \"{url}\"\ndcos_acs_token = \"{VALID}\"\n\n[cluster]\nname = \"one\"\n"
        )
    };
    std::fs::write(&file, good(&other.url)).unwrap();
    let line = proxy.wait_line(&["master URL changed"]).await;
    assert!(line.contains(&other.url), "{line}");
    assert!(!proxy.seen.iter().any(|l| l.contains("switched to another")));

    std::fs::write(&file, "[core\nbroken").unwrap();
    proxy.wait_line(&["keeping the last good config"]).await;
    std::fs::write(&file, good(&master.url)).unwrap();
    proxy.wait_line(&["good again"]).await;
}
