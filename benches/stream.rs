//! Streaming and throughput benchmark: runs the real (release-built) proxy binary in
//! front of an in-process fake master and reports
//! - the proxy's resident memory before and after streaming 1 GiB up and 1 GiB down
//!   (peak RSS from /proc, Linux only), with throughput;
//! - small-request throughput through the proxy and directly to the master, and the
//!   proxy's CPU time (user + system) per proxied request.
//!
//! Run: `cargo bench --bench stream` (size: `BENCH_BYTES=268435456`; requests:
//! `BENCH_REQUESTS=20000`).

#[path = "../tests/common/mod.rs"]
mod common;

mod support;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::{ProxyProcess, env_num, small_requests, spawn_proxy as spawn_proxy_with};

fn spawn_proxy(master_url: &str) -> (ProxyProcess, String) {
    let home = std::env::temp_dir();
    spawn_proxy_with(
        &["--upstream", master_url],
        &[
            ("HOME", home.as_os_str()),
            ("DCOS_ACS_TOKEN", OsStr::new(VALID)),
        ],
    )
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

/// The process's user + system CPU time so far (all threads, live and exited), from
/// /proc/PID/stat in clock ticks of 1/100 s (Linux's USER_HZ). Linux only.
fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; count fields after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
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

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful.
    let size = env_num("BENCH_BYTES", 1 << 30);
    let requests = env_num("BENCH_REQUESTS", 20_000) as usize;
    let master = FakeMaster::start().await;
    let (proxy, url) = spawn_proxy(&master.url);
    let pid = proxy.0.id();

    let apps = "/service/marathon/v2/apps";
    // Warm up: a few requests so the pool and allocator are in their steady state.
    small_requests(&format!("{url}{apps}"), 25, 4, None).await;
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

    let per = requests / 4;
    // The fake master needs the token; through the proxy, the proxy adds it.
    let token = Some(format!("token={VALID}"));
    let direct = small_requests(&format!("{}{apps}", master.url), per, 4, token).await;
    let cpu_before = proc_cpu(pid);
    let proxied = small_requests(&format!("{url}{apps}"), per, 4, None).await;
    let cpu = proc_cpu(pid)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    println!("small GETs, 4 concurrent keep-alive clients, {requests} requests");
    println!("  direct to the fake master       {direct:>8.0} req/s");
    println!("  through the proxy               {proxied:>8.0} req/s");
    match cpu {
        Some(cpu) => println!(
            "  proxy CPU per request           {:>8.2} µs (user + system, {:.2} s in all)",
            cpu.as_secs_f64() * 1e6 / (per * 4) as f64,
            cpu.as_secs_f64()
        ),
        None => println!("  proxy CPU per request           n/a (needs /proc)"),
    }
    drop(proxy);
}
