//! The real `dcos-token-proxy` binary, run as a user would: flags, environment, DC/OS CLI
//! config trees in temporary directories, the "listening on" line, signals, exit codes,
//! error messages and the log output.
//!
//! Every child starts from an empty environment (plus `HOME` pointing at a temporary
//! directory and whatever the test sets), so the developer's own `~/.dcos` and `DCOS_*`
//! variables never leak in. Tests wait on events (a line of output, the end of the
//! output), each with a 10 s guard, never on sleeps; a child is killed when its guard is
//! dropped, so a failing test leaves no process behind.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{FakeMaster, VALID, get, jwt_with, unix_now, ws_echo_under};
use http::{StatusCode, header};
use tempfile::TempDir;
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_dcos-token-proxy");
/// Failure guard for every wait; a healthy run needs a small fraction of it.
const WAIT: Duration = Duration::from_secs(10);
const LISTENING: &str = "dcos-token-proxy listening on http://";
const ERROR_PREFIX: &str = "dcos-token-proxy: error: ";

/// A token a client sends itself: well-formed, distinct from `VALID`, rejected by the
/// fake master.
const CLIENT_TOKEN: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJ1aWQiOiJjbGllbnQtb3duLXVzZXIifQ.Y2xpZW50LXNpZ25hdHVyZS14eXo";
/// A secret carried in a query string.
const QUERY_SECRET: &str = "q5ecret-in-the-query-7f3a";

// ---------------------------------------------------------------------------------------
// Harness: the child process
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
struct Line {
    stream: Stream,
    /// The line without its end and without ANSI colour codes.
    text: String,
    /// The raw line held an escape character (colour codes).
    escape: bool,
}

/// A running `dcos-token-proxy`; killed (and reaped) on drop.
struct Proxy {
    child: Child,
    rx: mpsc::UnboundedReceiver<Line>,
    /// Every line received so far, in arrival order.
    lines: Vec<Line>,
    /// Indexes of lines already returned by [`Proxy::wait_line`].
    taken: HashSet<usize>,
}

/// Everything a finished child left behind.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// Some line held an escape character.
    escapes: bool,
}

impl Finished {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn show(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A `dcos-token-proxy` command with an empty environment but for `HOME` (and the working
/// directory) set to `home`.
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

impl Proxy {
    fn spawn(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = command(home, args, env)
            .spawn()
            .expect("spawn dcos-token-proxy");
        let (tx, rx) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        pump(stdout, Stream::Stdout, tx.clone());
        pump(stderr, Stream::Stderr, tx);
        Self {
            child,
            rx,
            lines: Vec::new(),
            taken: HashSet::new(),
        }
    }

    fn transcript(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("[{:?}] {}\n", l.stream, l.text))
            .collect()
    }

    /// Wait for the first line not returned before that satisfies `pred` (lines that
    /// arrived earlier count too) and return its text.
    async fn wait_line(&mut self, what: &str, pred: impl Fn(&Line) -> bool) -> String {
        let found =
            (0..self.lines.len()).find(|i| !self.taken.contains(i) && pred(&self.lines[*i]));
        if let Some(i) = found {
            self.taken.insert(i);
            return self.lines[i].text.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(line)) => {
                    let hit = pred(&line);
                    self.lines.push(line);
                    if hit {
                        self.taken.insert(self.lines.len() - 1);
                        return self.lines[self.lines.len() - 1].text.clone();
                    }
                }
                Ok(None) => panic!(
                    "the proxy ended its output before {what}:\n{}",
                    self.transcript()
                ),
                Err(_) => panic!("no {what} within {WAIT:?}:\n{}", self.transcript()),
            }
        }
    }

    /// Wait for a stderr line containing every one of `needles`.
    async fn wait_stderr(&mut self, needles: &[&str]) -> String {
        let what = format!("stderr line with {needles:?}");
        self.wait_line(&what, |l| {
            l.stream == Stream::Stderr && needles.iter().all(|n| l.text.contains(n))
        })
        .await
    }

    /// Wait for the "listening on" line and return the base URL it names, without a
    /// trailing `/` (`http://ADDR`, or `http://ADDR/<secret>` with a path secret).
    async fn base(&mut self) -> String {
        let line = self
            .wait_line("the `listening on` line on stdout", |l| {
                l.stream == Stream::Stdout && l.text.starts_with(LISTENING)
            })
            .await;
        format!("http://{}", line[LISTENING.len()..].trim_end_matches('/'))
    }

    /// Wait for the "listening on" line and return the address it names.
    async fn addr(&mut self) -> SocketAddr {
        addr_of(&self.base().await)
    }

    /// Start and return the proxy's base URL.
    async fn url(&mut self) -> String {
        format!("http://{}", self.addr().await)
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Wait for the end of the output (the process closes its pipes when it exits), then
    /// reap the process.
    async fn finish(mut self) -> Finished {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(line)) => self.lines.push(line),
                Ok(None) => break,
                Err(_) => panic!(
                    "the proxy did not exit within {WAIT:?}:\n{}",
                    self.transcript()
                ),
            }
        }
        let status = self.child.wait().expect("wait for dcos-token-proxy");
        let text = |stream| {
            self.lines
                .iter()
                .filter(|l| l.stream == stream)
                .map(|l| format!("{}\n", l.text))
                .collect::<String>()
        };
        Finished {
            status,
            stdout: text(Stream::Stdout),
            stderr: text(Stream::Stderr),
            escapes: self.lines.iter().any(|l| l.escape),
        }
    }

    /// SIGTERM, then wait for a clean exit (status 0).
    async fn stop(self) -> Finished {
        self.sigterm();
        let out = self.finish().await;
        assert_eq!(out.status.code(), Some(0), "{}", out.show());
        out
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Already reaped after `finish`: then `kill` fails harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forward `r` line by line into `tx`, from a thread, until EOF.
fn pump(r: impl Read + Send + 'static, stream: Stream, tx: mpsc::UnboundedSender<Line>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let raw = String::from_utf8_lossy(&buf);
                    let line = Line {
                        stream,
                        text: strip_ansi(raw.trim_end_matches(['\n', '\r'])),
                        escape: buf.contains(&0x1b),
                    };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Remove ANSI escape sequences (`ESC [ … final-byte`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address in a base URL `http://ADDR[/…]`.
fn addr_of(base: &str) -> SocketAddr {
    let rest = base.strip_prefix("http://").expect("an http:// base URL");
    let addr = rest.split('/').next().unwrap_or_default();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address in {base:?}: {e}"))
}

/// Run the binary to its end.
async fn run(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    Proxy::spawn(home, args, env).finish().await
}

// ---------------------------------------------------------------------------------------
// Harness: DC/OS CLI config trees
// ---------------------------------------------------------------------------------------

/// Write `<root>/clusters/<id>/dcos.toml` (and `attached` if asked); returns the file.
fn write_cluster(
    root: &Path,
    id: &str,
    name: &str,
    url: &str,
    token: Option<&str>,
    attached: bool,
) -> PathBuf {
    let dir = root.join("clusters").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = format!("[core]\ndcos_url = \"{url}\"\n");
    if let Some(token) = token {
        toml.push_str(&format!("dcos_acs_token = \"{token}\"\n"));
    }
    toml.push_str(&format!("\n[cluster]\nname = \"{name}\"\n"));
    let file = dir.join("dcos.toml");
    std::fs::write(&file, toml).unwrap();
    if attached {
        std::fs::write(dir.join("attached"), "").unwrap();
    }
    file
}

/// A home directory with a single logged-in cluster at `<home>/dcos` pointing at `url`.
fn home_with_cluster(url: &str, token: Option<&str>) -> (TempDir, PathBuf) {
    let home = TempDir::new().unwrap();
    let root = home.path().join("dcos");
    write_cluster(&root, "c0ffee-1", "test-cluster", url, token, true);
    (home, root)
}

/// What [`start_on_cluster`] starts: keep `_home` alive as long as the proxy runs.
struct OnCluster {
    master: FakeMaster,
    _home: TempDir,
    proxy: Proxy,
    /// The proxy's address and base URL (with the path secret, if any; no trailing
    /// `/`), known once it listens.
    addr: SocketAddr,
    url: String,
}

/// A fake master, a home with one cluster pointing at it (logged in with `token`), and
/// the proxy started with `--dcos-dir` on it, `--listen 127.0.0.1:0` and `extra` flags.
async fn start_on_cluster(token: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> OnCluster {
    let master = FakeMaster::start().await;
    let (home, root) = home_with_cluster(&master.url, token);
    let mut args = vec!["--dcos-dir", s(&root), "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut proxy = Proxy::spawn(home.path(), &args, env);
    let url = proxy.base().await;
    OnCluster {
        master,
        _home: home,
        proxy,
        addr: addr_of(&url),
        url,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn token_header(t: &str) -> String {
    format!("token={t}")
}

// ---------------------------------------------------------------------------------------
// --help and --version
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn help_lists_every_flag_and_its_environment_variable() {
    let home = TempDir::new().unwrap();
    let out = run(home.path(), &["--help"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.show());
    for needle in [
        "--listen",
        "--dcos-dir",
        "--cluster",
        "--upstream",
        "--config",
        "--log-format",
        "--client-auth",
        "--response-timeout",
        "--shutdown-grace",
        "--allow-remote",
        "--allowed-hosts",
        "--allowed-origins",
        "--path-secret",
        "--path-secret-file",
        "--read-only",
        "--deny-path",
        "--deny-methods",
        "--max-connections",
        "--max-header-bytes",
        "--upstream-proxy",
        "--tls-server-name",
        "--proxy-command",
        "DCOS_TOKEN_PROXY_UPSTREAM_PROXY",
        "unix:",
        "DCOS_TOKEN_PROXY_ALLOW_REMOTE",
        "DCOS_TOKEN_PROXY_ALLOWED_HOSTS",
        "DCOS_TOKEN_PROXY_PATH_SECRET",
        "DCOS_TOKEN_PROXY_LISTEN",
        "DCOS_TOKEN_PROXY_DCOS_DIR",
        "DCOS_TOKEN_PROXY_CLUSTER",
        "DCOS_TOKEN_PROXY_UPSTREAM",
        "DCOS_TOKEN_PROXY_CONFIG",
        "DCOS_TOKEN_PROXY_LOG_FORMAT",
        "DCOS_DIR",
        "DCOS_CLUSTER",
        "dcos auth login",
    ] {
        assert!(
            out.stdout.contains(needle),
            "--help lacks {needle}:\n{}",
            out.show()
        );
    }
    assert!(out.stderr.is_empty(), "{}", out.show());
}

#[tokio::test]
async fn version_prints_the_crate_version() {
    let home = TempDir::new().unwrap();
    let out = run(home.path(), &["--version"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.show());
    assert_eq!(
        out.stdout.trim(),
        format!("dcos-token-proxy {}", env!("CARGO_PKG_VERSION"))
    );
}

// ---------------------------------------------------------------------------------------
// Starting, serving, stopping
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn serves_with_the_token_from_dcos_dir_and_exits_0_on_sigterm() {
    let OnCluster {
        master,
        mut proxy,
        url,
        ..
    } = start_on_cluster(Some(VALID), &[], &[]).await;
    proxy
        .wait_stderr(&["using DC/OS cluster", "test-cluster", &master.url])
        .await;

    let (parts, body) = get(&format!("{url}/service/marathon/v2/apps"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "ok /service/marathon/v2/apps");
    assert_eq!(
        master.last().authorization(),
        Some(token_header(VALID).as_str())
    );

    let out = proxy.stop().await;
    assert!(out.stderr.contains("received SIGTERM"), "{}", out.show());
    assert!(!out.all().contains("panicked"), "{}", out.show());
}

/// "listening on" tells scripts and supervisors the proxy is ready, so a SIGTERM sent
/// right after it must shut the proxy down cleanly (exit 0), not kill it. The signal
/// comes from a shell's builtin `kill`, started beforehand, to be as quick as a
/// supervisor; several tries, because the window is short.
#[tokio::test]
async fn sigterm_right_after_the_listening_line_exits_0() {
    use std::io::Write;
    let home = TempDir::new().unwrap();
    let mut shell = Command::new("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let mut to_shell = shell.stdin.take().expect("piped stdin");
    let mut failures = Vec::new();
    for attempt in 0..30 {
        let mut proxy = Proxy::spawn(
            home.path(),
            &[
                "--upstream",
                "http://127.0.0.1:9",
                "--listen",
                "127.0.0.1:0",
            ],
            &[("DCOS_ACS_TOKEN", VALID)],
        );
        proxy.addr().await;
        writeln!(to_shell, "kill -TERM {}", proxy.child.id()).expect("write to sh");
        to_shell.flush().expect("write to sh");
        let out = proxy.finish().await;
        if out.status.code() != Some(0) {
            failures.push(format!("attempt {attempt}: {}", out.status));
        }
    }
    drop(to_shell);
    let _ = shell.wait();
    assert!(
        failures.is_empty(),
        "killed instead of shut down: {failures:?}"
    );
}

#[tokio::test]
async fn dcos_dir_and_dcos_cluster_come_from_the_environment() {
    let attached = FakeMaster::start().await;
    let wanted = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    // Not `~/.dcos`: only DCOS_DIR can lead the proxy there.
    let root = home.path().join("elsewhere");
    write_cluster(&root, "aaaa-1111", "dev", &attached.url, Some(VALID), true);
    write_cluster(&root, "bbbb-2222", "prod", &wanted.url, Some(VALID), false);

    let mut proxy = Proxy::spawn(
        home.path(),
        &[],
        &[
            ("DCOS_DIR", s(&root)),
            ("DCOS_CLUSTER", "prod"),
            ("DCOS_TOKEN_PROXY_LISTEN", "127.0.0.1:0"),
        ],
    );
    let url = proxy.url().await;
    proxy
        .wait_stderr(&["using DC/OS cluster", "prod", &wanted.url])
        .await;

    let (parts, body) = get(&format!("{url}/mesos/master/state.json"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "ok /mesos/master/state.json");
    assert_eq!(
        wanted.last().authorization(),
        Some(token_header(VALID).as_str())
    );
    assert!(
        attached.seen().is_empty(),
        "the attached cluster was used although DCOS_CLUSTER named another"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn not_logged_in_starts_anyway_and_passes_the_masters_401_through() {
    let OnCluster {
        master,
        mut proxy,
        url,
        ..
    } = start_on_cluster(None, &[], &[]).await;
    let warning = proxy
        .wait_stderr(&["not logged in: run `dcos auth login`"])
        .await;
    assert!(warning.contains("dcos.toml"), "names the file: {warning}");

    let (parts, body) = get(&format!("{url}/service/marathon/v2/apps"), &[]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(parts.headers[header::WWW_AUTHENTICATE], "acsjwt");
    assert!(String::from_utf8_lossy(&body).contains("401 Unauthorized"));
    assert_eq!(master.last().authorization(), None);
    proxy
        .wait_stderr(&["401 Unauthorized", "dcos auth login"])
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn env_only_upstream_flag_and_dcos_acs_token() {
    let master = FakeMaster::start().await;
    // An empty home: no ~/.dcos at all.
    let home = TempDir::new().unwrap();
    let mut proxy = Proxy::spawn(
        home.path(),
        &["--upstream", &master.url, "--listen", "127.0.0.1:0"],
        &[("DCOS_ACS_TOKEN", VALID)],
    );
    let url = proxy.url().await;
    proxy
        .wait_stderr(&["using DC/OS cluster", "environment"])
        .await;
    let (parts, _) = get(&format!("{url}/system/health/v1"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        master.last().authorization(),
        Some(token_header(VALID).as_str())
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------
// Errors at startup: one line, exit code 1, no panic, no backtrace
// ---------------------------------------------------------------------------------------

/// Assert a failed start: exit code 1, nothing on stdout, exactly one line on stderr,
/// which is the error; no panic and no backtrace anywhere. Returns that line.
fn error_line(out: &Finished) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", out.show());
    assert!(out.stdout.is_empty(), "{}", out.show());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{}", out.show());
    let line = lines[0];
    assert!(line.starts_with(ERROR_PREFIX), "{}", out.show());
    // Covers `RUST_BACKTRACE` and "stack backtrace:" too.
    let lower = out.all().to_lowercase();
    for bad in ["panicked", "backtrace"] {
        assert!(
            !lower.contains(bad),
            "{bad:?} in the output:\n{}",
            out.show()
        );
    }
    line.to_owned()
}

/// [`error_line`], which must also contain every one of `needles` and say nothing twice
/// (an error printed both in its message and as its `source()` would).
fn assert_error_exit(out: &Finished, needles: &[&str]) -> String {
    let line = error_line(out);
    for needle in needles {
        assert!(line.contains(needle), "error lacks {needle:?}: {line}");
    }
    let body = &line[ERROR_PREFIX.len()..];
    let mut clauses = HashSet::new();
    for clause in body
        .split([':', ';'])
        .map(str::trim)
        .filter(|c| c.len() >= 12)
    {
        assert!(clauses.insert(clause), "{clause:?} said twice: {line}");
    }
    line
}

/// Environment for the error tests: backtraces on, so that a panic or an error printed
/// with `{:?}` would show one.
const BACKTRACE_ON: (&str, &str) = ("RUST_BACKTRACE", "1");

#[tokio::test]
async fn startup_says_who_is_logged_in_and_warns_before_expiry() {
    let token = jwt_with("soon-gone", Some(unix_now() + 2 * 3600));
    let mut on = start_on_cluster(Some(&token), &[], &[]).await;
    let line = on
        .proxy
        .wait_stderr(&["using DC/OS cluster", "uid=soon-gone"])
        .await;
    assert!(
        line.contains("expires_in=1h59m") || line.contains("expires_in=2h0m"),
        "{line}"
    );
    assert!(line.contains("test-cluster"), "{line}");
    on.proxy
        .wait_stderr(&["expires in under 24 h", "dcos auth login"])
        .await;
    let out = on.proxy.stop().await;
    assert!(!out.all().contains(&token), "{}", out.show());
}

#[tokio::test]
async fn an_expired_token_is_reported_and_still_forwarded() {
    let token = jwt_with("gone", Some(unix_now() - 60));
    let mut on = start_on_cluster(Some(&token), &[], &[]).await;
    on.proxy
        .wait_stderr(&["using DC/OS cluster", "uid=gone", "expires_in=expired"])
        .await;
    on.proxy
        .wait_stderr(&["token has expired", "dcos auth login", "401"])
        .await;
    // The master decides: its 401 reaches the client.
    let (parts, _) = get(&format!("{}/x", on.url), &[]).await;
    assert_eq!(parts.status, 401);
    assert_eq!(
        on.master.last().authorization(),
        Some(token_header(&token).as_str())
    );
    on.proxy.stop().await;
}

#[tokio::test]
async fn a_missing_dcos_dir_is_reported_answered_with_503_and_used_once_it_appears() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    let missing = home.path().join("no-such-dcos-dir");
    let mut proxy = Proxy::spawn(
        home.path(),
        &["--dcos-dir", s(&missing), "--listen", "127.0.0.1:0"],
        &[BACKTRACE_ON],
    );
    let url = proxy.url().await;
    proxy
        .wait_stderr(&[s(&missing), "does not exist", "dcos cluster setup", "503"])
        .await;
    let (parts, body) = get(&format!("{url}/service/marathon/v2/apps"), &[]).await;
    assert_eq!(parts.status, 503);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("dcos cluster setup"), "{body}");
    assert!(master.seen().is_empty());

    // `dcos cluster setup` creates the directory tree and logs in.
    write_cluster(&missing, "c0ffee-1", "late", &master.url, Some(VALID), true);
    proxy.wait_stderr(&["using DC/OS cluster", "late"]).await;
    let (parts, _) = get(&format!("{url}/service/marathon/v2/apps"), &[]).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        master.last().authorization(),
        Some(token_header(VALID).as_str())
    );
    let out = proxy.stop().await;
    assert!(!out.all().contains("panicked"), "{}", out.show());
}

#[tokio::test]
async fn error_two_attached_clusters() {
    let home = TempDir::new().unwrap();
    let root = home.path().join(".dcos");
    write_cluster(
        &root,
        "aaaa-1111",
        "dev",
        "http://127.0.0.1:9",
        Some(VALID),
        true,
    );
    write_cluster(
        &root,
        "bbbb-2222",
        "prod",
        "http://127.0.0.1:9",
        Some(VALID),
        true,
    );
    // No --dcos-dir: found through HOME.
    let out = run(home.path(), &["--listen", "127.0.0.1:0"], &[BACKTRACE_ON]).await;
    assert_error_exit(
        &out,
        &[
            "multiple clusters are attached",
            s(&root.join("clusters")),
            "aaaa-1111 (dev)",
            "bbbb-2222 (prod)",
            "dcos cluster attach",
            "--cluster",
        ],
    );
    assert!(!out.all().contains(VALID));
}

#[tokio::test]
async fn error_unknown_cluster_lists_the_available_ones() {
    let home = TempDir::new().unwrap();
    let root = home.path().join(".dcos");
    write_cluster(
        &root,
        "aaaa-1111",
        "dev",
        "http://127.0.0.1:9",
        Some(VALID),
        true,
    );
    let out = run(
        home.path(),
        &["--cluster", "staging", "--listen", "127.0.0.1:0"],
        &[BACKTRACE_ON],
    )
    .await;
    assert_error_exit(&out, &["`staging`", "aaaa-1111 (dev)", "--cluster"]);
}

#[tokio::test]
async fn error_bad_toml_names_the_file_and_line() {
    let home = TempDir::new().unwrap();
    let root = home.path().join("dcos");
    let file = root.join("clusters/c0ffee-1/dcos.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        format!("[core]\ndcos_acs_token = \"{VALID}\"\ndcos_url = \"http://127.0.0.1:9\n"),
    )
    .unwrap();
    let out = run(
        home.path(),
        &["--dcos-dir", s(&root), "--listen", "127.0.0.1:0"],
        &[BACKTRACE_ON],
    )
    .await;
    assert_error_exit(&out, &[s(&file), "line 3"]);
    assert!(!out.all().contains(VALID), "{}", out.show());
}

#[tokio::test]
async fn error_missing_dcos_url_names_the_key_and_the_fix() {
    let home = TempDir::new().unwrap();
    let root = home.path().join("dcos");
    let file = root.join("clusters/c0ffee-1/dcos.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, format!("[core]\ndcos_acs_token = \"{VALID}\"\n")).unwrap();
    let out = run(
        home.path(),
        &["--dcos-dir", s(&root), "--listen", "127.0.0.1:0"],
        &[BACKTRACE_ON],
    )
    .await;
    assert_error_exit(
        &out,
        &[
            s(&file),
            "core.dcos_url",
            "dcos cluster setup",
            "--upstream",
        ],
    );
    assert!(!out.all().contains(VALID), "{}", out.show());
}

#[tokio::test]
async fn error_unknown_key_in_the_settings_file() {
    let home = TempDir::new().unwrap();
    let settings = home.path().join("proxy.toml");
    std::fs::write(
        &settings,
        "# settings\nclient_auth = \"keep\"\nlisten_addr = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = run(
        home.path(),
        &["--config", s(&settings), "--upstream", "http://127.0.0.1:9"],
        &[BACKTRACE_ON],
    )
    .await;
    assert_error_exit(&out, &[s(&settings), "line 3", "listen_addr"]);
}

#[tokio::test]
async fn error_bad_listen_value() {
    let home = TempDir::new().unwrap();
    let out = run(
        home.path(),
        &["--listen", "localhost", "--upstream", "http://127.0.0.1:9"],
        &[BACKTRACE_ON],
    )
    .await;
    assert_error_exit(&out, &["--listen", "\"localhost\"", "127.0.0.1:8079"]);
}

#[tokio::test]
async fn error_port_in_use_says_how_to_pick_another_and_the_os_error_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let home = TempDir::new().unwrap();
    let out = run(
        home.path(),
        &["--listen", &addr, "--upstream", "http://127.0.0.1:9"],
        &[BACKTRACE_ON, ("DCOS_ACS_TOKEN", VALID)],
    )
    .await;
    assert_error_exit(
        &out,
        &[addr.as_str(), "already in use", "--listen", "127.0.0.1:0"],
    );
    assert!(!out.all().contains(VALID), "{}", out.show());
    drop(taken);
}

#[tokio::test]
async fn a_non_loopback_listen_address_is_refused_without_allow_remote() {
    let home = TempDir::new().unwrap();
    for (args, env) in [
        (vec!["--listen", "0.0.0.0:0"], vec![]),
        (vec![], vec![("DCOS_TOKEN_PROXY_LISTEN", "[::]:0")]),
    ] {
        let mut args = args;
        args.extend(["--upstream", "http://127.0.0.1:9"]);
        let mut env = env;
        env.extend([BACKTRACE_ON, ("DCOS_ACS_TOKEN", VALID)]);
        let out = run(home.path(), &args, &env).await;
        assert_error_exit(
            &out,
            &["--listen", "not a loopback address", "--allow-remote"],
        );
        assert!(!out.all().contains(VALID), "{}", out.show());
    }
}

#[tokio::test]
async fn allow_remote_listens_beyond_loopback_with_a_warning() {
    let master = FakeMaster::start().await;
    let home = TempDir::new().unwrap();
    let mut proxy = Proxy::spawn(
        home.path(),
        &[
            "--upstream",
            &master.url,
            "--listen",
            "0.0.0.0:0",
            "--allow-remote",
        ],
        &[("DCOS_ACS_TOKEN", VALID)],
    );
    let addr = proxy.addr().await;
    assert!(addr.ip().is_unspecified(), "{addr}");
    proxy
        .wait_stderr(&["WARN", "listening beyond loopback", "allowed_hosts"])
        .await;
    let (parts, _) = get(&format!("http://127.0.0.1:{}/x", addr.port()), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    proxy.stop().await;
}

#[cfg(unix)]
mod unix_socket {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const UNIX_LISTENING: &str = "dcos-token-proxy listening on unix:";

    async fn wait_unix_line(proxy: &mut Proxy) -> String {
        proxy
            .wait_line("the `listening on unix:` line", |l| {
                l.stream == Stream::Stdout && l.text.starts_with(UNIX_LISTENING)
            })
            .await
    }

    async fn get_over(path: &Path, target: &str) -> String {
        let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut out))
            .await
            .expect("an answer over the socket")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn a_unix_socket_is_0600_replaces_a_stale_one_and_is_removed_on_exit() {
        let master = FakeMaster::start().await;
        let home = TempDir::new().unwrap();
        let sock = home.path().join("proxy.sock");
        // A stale socket from a crashed run: nobody listens on it.
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let listen = format!("unix:{}", s(&sock));
        let mut proxy = Proxy::spawn(
            home.path(),
            &["--upstream", &master.url, "--listen", &listen],
            &[("DCOS_ACS_TOKEN", VALID)],
        );
        let line = wait_unix_line(&mut proxy).await;
        assert_eq!(line, format!("{UNIX_LISTENING}{}", s(&sock)));

        let meta = std::fs::symlink_metadata(&sock).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        let answer = get_over(&sock, "/over-unix").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok /over-unix"), "{answer}");
        assert_eq!(
            master.last().authorization(),
            Some(token_header(VALID).as_str())
        );

        // A second proxy on the same path is refused: the first still answers there.
        let out = run(
            home.path(),
            &["--upstream", &master.url, "--listen", &listen],
            &[("DCOS_ACS_TOKEN", VALID)],
        )
        .await;
        assert_error_exit(&out, &[s(&sock), "another process is listening"]);

        proxy.stop().await;
        assert!(!sock.exists(), "the socket file is removed on exit");
    }

    #[tokio::test]
    async fn a_unix_socket_with_a_path_secret_prints_the_base_url_to_use() {
        let master = FakeMaster::start().await;
        let home = TempDir::new().unwrap();
        let sock = home.path().join("p.sock");
        let listen = format!("unix:{}", s(&sock));
        let secret = "unix-secret-0123456789abcdef";
        let mut proxy = Proxy::spawn(
            home.path(),
            &["--upstream", &master.url, "--listen", &listen],
            &[
                ("DCOS_ACS_TOKEN", VALID),
                ("DCOS_TOKEN_PROXY_PATH_SECRET", secret),
            ],
        );
        let line = wait_unix_line(&mut proxy).await;
        assert!(
            line.ends_with(&format!("(base URL http://localhost/{secret}/)")),
            "{line}"
        );
        assert!(get_over(&sock, "/x").await.starts_with("HTTP/1.1 403"));
        let answer = get_over(&sock, &format!("/{secret}/x")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(master.seen().len(), 1);
        proxy.stop().await;
    }

    #[tokio::test]
    async fn a_path_that_is_not_a_socket_is_never_replaced() {
        let home = TempDir::new().unwrap();
        let file = home.path().join("important.txt");
        std::fs::write(&file, "keep").unwrap();
        let listen = format!("unix:{}", s(&file));
        let out = run(
            home.path(),
            &["--upstream", "http://127.0.0.1:9", "--listen", &listen],
            &[BACKTRACE_ON],
        )
        .await;
        assert_error_exit(&out, &[s(&file), "not a socket"]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    }
}

#[tokio::test]
async fn bad_usage_is_exit_code_2() {
    let home = TempDir::new().unwrap();
    let out = run(home.path(), &["--log-format", "xml"], &[BACKTRACE_ON]).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.show());
    assert!(out.stderr.contains("--log-format"), "{}", out.show());
    assert!(
        out.stderr.contains("json"),
        "lists the values: {}",
        out.show()
    );
    assert!(!out.all().contains("panicked"), "{}", out.show());
}

// ---------------------------------------------------------------------------------------
// Secrets never reach the output, at the most verbose levels
// ---------------------------------------------------------------------------------------

/// Everything in `token` that identifies it: the whole, each JWT part but the shared
/// header, and the header.payload prefix.
fn secret_parts(token: &str) -> Vec<String> {
    let mut parts: Vec<String> = vec![token.to_owned()];
    let split: Vec<&str> = token.split('.').collect();
    parts.extend(split[1..].iter().map(|p| (*p).to_owned()));
    parts.push(format!("{}.{}", split[0], split[1]));
    parts
}

/// A cookie value a browser or tool might send.
const COOKIE_SECRET: &str = "c00kie-session-value-5e1f";

/// Run with `args` and `env`, which must turn on `level` (`TRACE`, `DEBUG`), plus a
/// generated path secret; send requests carrying tokens, cookies and the path secret
/// (right, and guessed wrong) and check that none reaches the output, but for the path
/// secret's one appearance in the `listening on` line.
async fn assert_secrets_never_logged(args: &[&str], env: &[(&str, &str)], level: &str) {
    let mut args = args.to_vec();
    args.push("--path-secret");
    let OnCluster {
        master,
        mut proxy,
        addr,
        url,
        ..
    } = start_on_cluster(Some(VALID), &args, env).await;
    let secret = url.rsplit('/').next().expect("a path secret").to_owned();
    assert_eq!(secret.len(), 64, "{url}");
    let cookie = format!("dcos-acs-auth-cookie={COOKIE_SECRET}; other={QUERY_SECRET}");

    // No header: the proxy's token is injected.
    let (parts, _) = get(
        &format!("{url}/secret/none?token={QUERY_SECRET}"),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        master.last().authorization(),
        Some(token_header(VALID).as_str())
    );
    assert_eq!(
        master.last().target,
        format!("/secret/none?token={QUERY_SECRET}")
    );
    proxy
        .wait_stderr(&["path=/secret/none", "status=200"])
        .await;

    // The client's own Bearer: rewritten to token=, rejected by the master.
    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let (parts, _) = get(
        &format!("{url}/secret/bearer"),
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        master.last().authorization(),
        Some(token_header(CLIENT_TOKEN).as_str())
    );
    proxy
        .wait_stderr(&["path=/secret/bearer", "status=401"])
        .await;

    // The client's own token=: passed as is.
    let own = token_header(CLIENT_TOKEN);
    let (parts, _) = get(
        &format!("{url}/secret/token"),
        &[("authorization", own.as_str()), ("cookie", own.as_str())],
    )
    .await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    proxy
        .wait_stderr(&["path=/secret/token", "status=401"])
        .await;

    // Refused: no secret, and a wrong guess that shares most of the secret.
    let base = format!("http://{addr}");
    let last = if secret.ends_with('0') { '1' } else { '0' };
    let guess = format!("{}{last}", &secret[..63]);
    for target in [
        format!("{base}/secret/refused"),
        format!("{base}/{guess}/x"),
    ] {
        let (parts, body) = get(
            &target,
            &[
                ("authorization", bearer.as_str()),
                ("cookie", cookie.as_str()),
            ],
        )
        .await;
        assert_eq!(parts.status, StatusCode::FORBIDDEN, "{target}: {body:?}");
        assert!(!String::from_utf8_lossy(&body).contains(&secret[..16]));
        proxy.wait_stderr(&["status=403"]).await;
    }

    // A WebSocket upgrade with the injected token.
    let prefix = format!("/{secret}");
    assert_eq!(ws_echo_under(addr, &prefix, "hello").await, "hello");
    assert_eq!(
        master.last().authorization(),
        Some(token_header(VALID).as_str())
    );
    proxy.wait_stderr(&["path=/ws", "status=101"]).await;

    let out = proxy.stop().await;
    let all = out.all();
    for secret in secret_parts(VALID)
        .into_iter()
        .chain(secret_parts(CLIENT_TOKEN))
        .chain([QUERY_SECRET.to_owned(), COOKIE_SECRET.to_owned()])
    {
        assert!(
            !all.contains(&secret),
            "{secret:?} appears in the output:\n{}",
            out.show()
        );
    }
    // Every JWT starts with `eyJ` (base64 of `{"`): none may appear at all.
    assert!(
        !all.contains("eyJ"),
        "a JWT part in the output:\n{}",
        out.show()
    );
    // The path secret (or any 16 characters of it, or the wrong guess) appears once:
    // in the `listening on` line on stdout.
    assert_eq!(all.matches(&secret[..16]).count(), 1, "{}", out.show());
    assert_eq!(out.stdout.matches(&secret).count(), 1, "{}", out.show());
    assert!(!out.stderr.contains(&guess[..16]), "{}", out.show());
    // The output was not trivially empty: the check above could have failed.
    assert!(all.contains("method=GET"), "{}", out.show());
    assert!(all.contains("using DC/OS cluster"), "{}", out.show());
    assert!(
        all.contains(&format!(" {level} ")),
        "{level} lines expected:\n{}",
        out.show()
    );
}

/// Over TLS, where rustls logs too (through the `log` bridge) at trace level.
#[tokio::test]
async fn secrets_are_never_logged_over_tls_with_rust_log_trace() {
    let pki = common::test_pki(&["localhost"]);
    let master = FakeMaster::start_tls(pki.server_config.clone()).await;
    let home = TempDir::new().unwrap();
    let ca = home.path().join("dcos_ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let mut proxy = Proxy::spawn(
        home.path(),
        &[
            "--upstream",
            &master.url,
            "--listen",
            "127.0.0.1:0",
            "--path-secret",
        ],
        &[
            ("RUST_LOG", "trace"),
            ("DCOS_ACS_TOKEN", VALID),
            ("DCOS_SSL_VERIFY", s(&ca)),
        ],
    );
    let url = proxy.base().await;
    let secret = url.rsplit('/').next().expect("a path secret").to_owned();
    let cookie = format!("dcos-acs-auth-cookie={COOKIE_SECRET}");
    let (parts, _) = get(
        &format!("{url}/tls/injected"),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let (parts, _) = get(
        &format!("{url}/tls/bearer"),
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        master.last().authorization(),
        Some(token_header(CLIENT_TOKEN).as_str())
    );
    proxy.wait_stderr(&["path=/tls/bearer", "status=401"]).await;

    let out = proxy.stop().await;
    let all = out.all();
    for needle in secret_parts(VALID)
        .into_iter()
        .chain(secret_parts(CLIENT_TOKEN))
        .chain([COOKIE_SECRET.to_owned()])
    {
        assert!(
            !all.contains(&needle),
            "{needle:?} in the output:\n{}",
            out.show()
        );
    }
    assert!(!all.contains("eyJ"), "{}", out.show());
    assert_eq!(all.matches(&secret[..16]).count(), 1, "{}", out.show());
    // The check could have failed: rustls did log the handshake.
    assert!(
        all.contains("ClientHello"),
        "no rustls trace lines:\n{}",
        out.show()
    );
}

#[tokio::test]
async fn secrets_are_never_logged_with_rust_log_trace() {
    assert_secrets_never_logged(&[], &[("RUST_LOG", "trace")], "TRACE").await;
}

#[tokio::test]
async fn secrets_are_never_logged_with_vv() {
    assert_secrets_never_logged(&["-vv"], &[], "DEBUG").await;
}

// ---------------------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------------------

/// The value of `key=` in a text log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split_whitespace().next()
}

#[tokio::test]
async fn access_log_has_one_line_per_request_with_method_path_status_latency_bytes() {
    let OnCluster { mut proxy, url, .. } = start_on_cluster(Some(VALID), &[], &[]).await;

    let (parts, body) = get(&format!("{url}/x"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let line = proxy.wait_stderr(&["method=GET", "path=/x "]).await;
    assert_eq!(field(&line, "status"), Some("200"), "{line}");
    assert_eq!(
        field(&line, "bytes"),
        Some(body.len().to_string().as_str()),
        "{line}"
    );
    for key in ["latency_ms", "duration_ms"] {
        let v = field(&line, key).unwrap_or_else(|| panic!("no {key} in {line}"));
        assert!(
            v.parse::<f64>().is_ok_and(|ms| ms >= 0.0),
            "{key}={v} in {line}"
        );
    }

    let (parts, _) = get(&format!("{url}/status?code=404"), &[]).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let line = proxy.wait_stderr(&["method=GET", "path=/status "]).await;
    assert_eq!(field(&line, "status"), Some("404"), "{line}");

    let out = proxy.stop().await;
    let access: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(" method="))
        .collect();
    assert_eq!(access.len(), 2, "one line per request:\n{}", out.show());
    // Output to a pipe (a file, journald) carries no colour codes.
    assert!(!out.escapes, "ANSI escapes in piped output");
}

#[tokio::test]
async fn access_log_leaves_out_the_query_string() {
    let OnCluster {
        master,
        mut proxy,
        url,
        ..
    } = start_on_cluster(Some(VALID), &[], &[]).await;
    let target = format!("/service/app/login?token=abc-{QUERY_SECRET}&user=me");
    let (parts, _) = get(&format!("{url}{target}"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    // The master got the query byte for byte.
    assert_eq!(master.last().target, target);
    let line = proxy.wait_stderr(&["path=/service/app/login"]).await;
    assert_eq!(field(&line, "path"), Some("/service/app/login"), "{line}");
    let out = proxy.stop().await;
    assert!(!out.all().contains(QUERY_SECRET), "{}", out.show());
    assert!(!out.all().contains("token=abc"), "{}", out.show());
}

/// The access log obeys the log filter like any other line: switched off by its target,
/// it is gone while the rest of the log stays.
#[tokio::test]
async fn access_log_switched_off_by_its_target_writes_no_line() {
    let OnCluster { proxy, url, .. } = start_on_cluster(
        Some(VALID),
        &[],
        &[("RUST_LOG", "info,dcos_token_proxy::access=off")],
    )
    .await;
    let (parts, _) = get(&format!("{url}/quiet-path"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let out = proxy.stop().await;
    assert!(out.stderr.contains("using DC/OS cluster"), "{}", out.show());
    assert!(!out.stderr.contains("quiet-path"), "{}", out.show());
    assert!(!out.stderr.contains("method="), "{}", out.show());
}

#[tokio::test]
async fn json_log_format_writes_one_object_per_line() {
    let OnCluster { mut proxy, url, .. } =
        start_on_cluster(Some(VALID), &["--log-format", "json"], &[]).await;
    let (parts, _) = get(&format!("{url}/json-path"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let line = proxy
        .wait_stderr(&["\"path\":\"/json-path\"", "\"status\":200"])
        .await;
    assert!(line.contains("\"method\":\"GET\""), "{line}");
    assert!(line.contains("\"bytes\":"), "{line}");
    assert!(line.contains("\"latency_ms\":"), "{line}");

    let out = proxy.stop().await;
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(lines.len() >= 3, "{}", out.show());
    for l in lines {
        assert!(
            l.starts_with('{') && l.ends_with('}'),
            "not a JSON object: {l}\n{}",
            out.show()
        );
    }
    // stdout still carries the plain "listening on" line for scripts.
    assert!(out.stdout.starts_with(LISTENING), "{}", out.show());
}

/// Issue 9, finding 9: a client that repeats the path secret (`/<S>/<S>/echo`), or puts
/// it in the query, or sends it where a refusal is logged, never gets it into a log
/// line, at the most verbose level; its one appearance is the `listening on` line.
#[tokio::test]
async fn finding_09_the_path_secret_is_never_logged_whatever_the_path_holds() {
    let OnCluster {
        master,
        mut proxy,
        url,
        ..
    } = start_on_cluster(Some(VALID), &["--path-secret"], &[("RUST_LOG", "trace")]).await;
    let secret = url.rsplit('/').next().expect("a path secret").to_owned();
    assert_eq!(secret.len(), 64, "{url}");

    let (parts, _) = get(&format!("{url}/{secret}/echo"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(
        !master.last().target.contains(&secret),
        "{}",
        master.last().target
    );
    proxy.wait_stderr(&["status=200", "path=/echo"]).await;

    let (parts, _) = get(&format!("{url}/next?to=/{secret}/x&s={secret}"), &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(
        !master.last().target.contains(&secret),
        "{}",
        master.last().target
    );
    proxy.wait_stderr(&["status=200", "path=/next"]).await;

    // Refused (a bad Host): logged, but not with the target.
    let (parts, _) = get(
        &format!("{url}/{secret}/refused"),
        &[("host", "evil.example")],
    )
    .await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    proxy.wait_stderr(&["status=403"]).await;

    let out = proxy.stop().await;
    let all = out.all();
    assert_eq!(all.matches(&secret[..16]).count(), 1, "{}", out.show());
    assert_eq!(out.stdout.matches(&secret).count(), 1, "{}", out.show());
    assert!(
        all.contains(" TRACE "),
        "trace lines expected:\n{}",
        out.show()
    );
}
