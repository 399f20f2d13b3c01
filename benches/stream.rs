//! Streaming and throughput benchmark: runs the real (release-built) proxy binary in
//! front of an in-process fake master and reports
//! - the proxy's resident memory before and after streaming 1 GiB up and 1 GiB down
//!   (peak RSS from /proc, Linux only), with throughput;
//! - small-request throughput through the proxy and directly to the master.
//!
//! Run: `cargo bench --bench stream` (size: `BENCH_BYTES=268435456`; requests:
//! `BENCH_REQUESTS=20000`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

struct ProxyProcess(Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_proxy(master_url: &str) -> (ProxyProcess, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dcos-token-proxy"))
        .args(["--listen", "127.0.0.1:0", "--upstream", master_url, "-q"])
        .env_clear()
        .env("HOME", std::env::temp_dir())
        .env("DCOS_ACS_TOKEN", VALID)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the proxy binary");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("listening line")
        .to_owned();
    (ProxyProcess(child), url)
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{:.0} MiB/s", bytes as f64 / 1048576.0 / d.as_secs_f64())
}

async fn upload(url: &str, size: u64) -> Duration {
    let start = Instant::now();
    let req = Request::post(format!("{url}/upload"))
        .body(PatternBody::new(size).boxed())
        .unwrap();
    let (parts, body) = send(req).await;
    let d = start.elapsed();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{size} {}", PatternBody::digest(size))
    );
    d
}

async fn download(url: &str, size: u64) -> Duration {
    let start = Instant::now();
    let resp = client()
        .request(
            Request::get(format!("{url}/download?bytes={size}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            n += d.len() as u64;
        }
    }
    assert_eq!(n, size);
    start.elapsed()
}

async fn small_requests(url: &str, total: usize, concurrency: usize) -> f64 {
    let start = Instant::now();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let url = format!("{url}/service/marathon/v2/apps");
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..per {
                let resp = c
                    .request(
                        Request::get(&url)
                            .header("authorization", format!("token={VALID}"))
                            .body(empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (per * concurrency) as f64 / start.elapsed().as_secs_f64()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful.
    let size = env_num("BENCH_BYTES", 1 << 30);
    let requests = env_num("BENCH_REQUESTS", 20_000) as usize;
    let master = FakeMaster::start().await;
    let (proxy, url) = spawn_proxy(&master.url);
    let pid = proxy.0.id();

    // Warm up: one request so the pool and allocator are in their steady state.
    small_requests(&url, 100, 4).await;
    let rss_idle = proc_kib(pid, "VmRSS");

    let up = upload(&url, size).await;
    let hwm_up = proc_kib(pid, "VmHWM");
    let down = download(&url, size).await;
    let hwm_down = proc_kib(pid, "VmHWM");

    println!("streaming {} MiB each way through the proxy", size >> 20);
    println!("  proxy RSS after warm-up         {}", mib(rss_idle));
    println!(
        "  upload   {:>8.2?}  {:>12}   proxy peak RSS {}",
        up,
        rate(size, up),
        mib(hwm_up)
    );
    println!(
        "  download {:>8.2?}  {:>12}   proxy peak RSS {}",
        down,
        rate(size, down),
        mib(hwm_down)
    );

    let direct = small_requests(&master.url, requests, 4).await;
    let proxied = small_requests(&url, requests, 4).await;
    println!("small GETs, 4 concurrent keep-alive clients, {requests} requests");
    println!("  direct to the fake master       {direct:>8.0} req/s");
    println!("  through the proxy               {proxied:>8.0} req/s");
    drop(proxy);
}
