//! `dcos-token-proxy exec -- CMD…` with the real binary: the child sees the variables
//! and reaches the master through the proxy, its exit status comes back, signals reach
//! it, and the proxy is gone afterwards.
//!
//! The child is `bash`, which speaks HTTP through `/dev/tcp` (no other tool needed).
//! Children start from an empty environment plus `HOME` (a temporary directory) and
//! `PATH`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{FakeMaster, VALID};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_dcos-token-proxy");
const WAIT: Duration = Duration::from_secs(10);

/// A bash script that prints the variables, GETs `$DCOS_URL$1` and prints the response.
const GET_SCRIPT: &str = r#"
echo "DCOS_URL=$DCOS_URL"
echo "DCOS_TOKEN_PROXY_URL=$DCOS_TOKEN_PROXY_URL"
hostport=${DCOS_URL#http://}
exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" "$hostport" >&3
cat <&3
exit "$2"
"#;

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

fn exec(home: &TempDir, script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["exec", "--", "bash", "-c", script, "bash"])
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_reaches_the_master_through_the_proxy_and_its_status_comes_back() {
    let master = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    let mut cmd = exec(&home, GET_SCRIPT, &["/service/marathon/v2/apps", "7"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{stderr}");
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DCOS_URL="))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_ne!(
        url, master.url,
        "the child talks to the proxy, not the master"
    );
    assert!(
        stdout.contains(&format!("DCOS_TOKEN_PROXY_URL={url}")),
        "{stdout}"
    );
    assert!(stdout.contains(" 200 OK"), "{stdout}");
    assert!(stdout.contains("ok /service/marathon/v2/apps"), "{stdout}");
    // The proxy added the token the child never had.
    assert_eq!(
        master.last().authorization(),
        Some(format!("token={VALID}").as_str())
    );
    // Quiet by default: nothing but warnings from the proxy.
    assert!(!stderr.contains("INFO"), "{stderr}");
    // The proxy is gone with the command.
    let addr = url.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening on {addr}"
    );
}

/// SIGTERM to `exec` reaches the child, whose own status (here 42 from its trap) comes
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_passed_on_to_the_child() {
    let master = FakeMaster::start().await;
    let home = home_with_cluster(&master.url);
    let script = "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.05; done";
    let mut child = exec(&home, script, &[]).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let done = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(first.as_deref(), Some("ready"));
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        (child.wait().unwrap(), rest)
    });
    let (status, lines) = tokio::time::timeout(WAIT, done)
        .await
        .unwrap_or_else(|_| panic!("exec did not end within {WAIT:?}"))
        .unwrap();
    assert_eq!(lines, ["got TERM"]);
    assert_eq!(status.code(), Some(42));
}

#[test]
fn exec_without_a_command_is_a_usage_error() {
    let home = TempDir::new().unwrap();
    let out = Command::new(BIN)
        .args(["exec"])
        .env_clear()
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
