//! Live-credentials benchmark.
//!
//! 1. **Rotation delay**: the real (release-built) proxy binary follows a temporary DC/OS
//!    directory while a client sends requests back to back; the config is rewritten in
//!    place (as `dcos auth login` does) `BENCH_REWRITES` times (default 50). For each
//!    rewrite it measures the time from the end of the write to the first request that
//!    reaches the master with the new token, and reports the median, 90th percentile and
//!    worst. Target: median under 100 ms, worst under 250 ms.
//! 2. **Per-request cost of the snapshot**: small-GET throughput of an in-process proxy
//!    without a watcher, with an idle watcher, and with a watcher while the file is
//!    rewritten with a new token every 50 ms (`BENCH_REQUESTS` per run, default 20000; 3 rounds each,
//!    interleaved, best of 3 reported).
//!
//! Run: `cargo bench --bench reload`.

#[path = "../tests/common/mod.rs"]
mod common;

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use dcos_token_proxy::Proxy;
use dcos_token_proxy::dcos::config::discover;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::source::watch::Follow;
use support::{ProxyProcess, env_num, get_ok, small_requests};
use tokio::sync::oneshot;

fn dcos_toml(url: &str, token: &str) -> String {
    format!(
        "[core]\ndcos_url = \"{url}\"\ndcos_acs_token = \"{token}\"\nssl_verify = \"true\"\n\n\
         [cluster]\nname = \"bench\"\n"
    )
}

/// A DC/OS directory with one attached cluster; returns its `dcos.toml`.
fn dcos_dir(root: &Path, url: &str, token: &str) -> PathBuf {
    let dir = root.join("clusters/bench-1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("attached"), "").unwrap();
    let file = dir.join("dcos.toml");
    std::fs::write(&file, dcos_toml(url, token)).unwrap();
    file
}

fn spawn_proxy(root: &Path) -> (ProxyProcess, String) {
    support::spawn_proxy(
        &[OsStr::new("--dcos-dir"), root.as_os_str()],
        &[("HOME", root.as_os_str())],
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Send GETs back to back until `stop`.
fn busy_client(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let c = client();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            get_ok(&c, &url, None).await;
            n += 1;
        }
        n
    })
}

async fn rotation_delay(rewrites: usize) {
    let master = FakeMaster::start().await;
    let tokens: Vec<String> = (0..=rewrites)
        .map(|i| jwt_with(&format!("bench-{i}"), None))
        .collect();
    for t in &tokens {
        master.accept(t);
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(".dcos");
    let file = dcos_dir(&root, &master.url, &tokens[0]);
    let (_proxy, url) = spawn_proxy(&root);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = busy_client(format!("{url}/service/marathon/v2/apps"), stop.clone());
    master.wait_count(100).await;

    let mut delays = Vec::with_capacity(rewrites);
    for token in &tokens[1..] {
        let want = format!("token={token}");
        let from = master.count();
        std::fs::write(&file, dcos_toml(&master.url, token)).unwrap();
        let written = Instant::now();
        let mut checked = from;
        let arrived = loop {
            master.wait_count(checked + 1).await;
            let seen = master.seen();
            if let Some(r) = seen[checked..]
                .iter()
                .find(|r| r.authorization() == Some(want.as_str()))
            {
                break r.at;
            }
            checked = seen.len();
        };
        delays.push(arrived.saturating_duration_since(written));
        // Let the rotation settle before the next one.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = busy.await.unwrap();
    delays.sort();
    println!(
        "rotation delay: end of an in-place write -> first request with the new token \
         ({rewrites} rewrites, {sent} requests)"
    );
    println!("  median {:>8.1?}", percentile(&delays, 0.5));
    println!("  p90    {:>8.1?}", percentile(&delays, 0.9));
    println!("  worst  {:>8.1?}", delays[delays.len() - 1]);
    println!("  best   {:>8.1?}", delays[0]);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    NoWatcher,
    IdleWatcher,
    Rewriting,
}

async fn throughput(mode: Mode, requests: usize) -> f64 {
    let master = FakeMaster::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(".dcos");
    let file = dcos_dir(&root, &master.url, VALID);
    let mut settings = test_settings();
    settings.discover.dcos_dir = Some(root.clone());
    let env = Env::default();
    let cluster = discover(&settings.discover, &env).unwrap();
    let mut proxy = Proxy::bind(&settings, &cluster).await.unwrap();
    if mode != Mode::NoWatcher {
        proxy = proxy.follow(Follow::new(&settings, env));
    }
    let addr = proxy.local_addr().expect("a TCP proxy");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.serve(async move {
        let _ = rx.await;
    }));
    let _running = RunningProxy::new(addr, tx, task);

    let stop_writer = Arc::new(AtomicBool::new(false));
    // Two tokens the master accepts, swapped on every rewrite: each one is published.
    let other = jwt_with("bench-other", None);
    master.accept(&other);
    let writer = (mode == Mode::Rewriting).then(|| {
        let (stop, url) = (stop_writer.clone(), master.url.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let token = if n % 2 == 0 { other.as_str() } else { VALID };
                std::fs::write(&file, dcos_toml(&url, token)).unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            n
        })
    });

    let url = format!("http://{addr}/service/marathon/v2/apps");
    let rate = small_requests(&url, requests / 4, 4, None).await;
    stop_writer.store(true, Ordering::Relaxed);
    if let Some(w) = writer {
        w.await.unwrap();
    }
    rate
}

#[tokio::main]
async fn main() {
    let rewrites = env_num("BENCH_REWRITES", 50) as usize;
    let requests = env_num("BENCH_REQUESTS", 20_000) as usize;
    rotation_delay(rewrites).await;

    let modes = [Mode::NoWatcher, Mode::IdleWatcher, Mode::Rewriting];
    let mut best = [0f64; 3];
    for _round in 0..3 {
        for (i, mode) in modes.iter().enumerate() {
            best[i] = best[i].max(throughput(*mode, requests).await);
        }
    }
    println!(
        "small GETs through an in-process proxy, 4 keep-alive clients, best of 3 x {requests}"
    );
    println!(
        "  no watcher                           {:>8.0} req/s",
        best[0]
    );
    println!(
        "  watcher running, file unchanged      {:>8.0} req/s",
        best[1]
    );
    println!(
        "  watcher running, rewrite every 50 ms {:>8.0} req/s",
        best[2]
    );
}
