//! What the benchmarks share: the release binary as a child process, small-GET loops and
//! numeric settings from the environment.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::common::{TestBody, client, empty};

/// The proxy binary, killed when dropped.
pub struct ProxyProcess(pub Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the release-built proxy with `args` on `127.0.0.1:0`, in an environment holding
/// only `env`; returns it and the base URL from its `listening on` line.
pub fn spawn_proxy<A: AsRef<OsStr>>(args: &[A], env: &[(&str, &OsStr)]) -> (ProxyProcess, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dcos-token-proxy"))
        .args(["--listen", "127.0.0.1:0", "-q"])
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
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

/// One GET on a keep-alive client (with `Authorization: auth` if given), which must
/// answer 200; the body is read in full.
pub async fn get_ok<C>(
    c: &hyper_util::client::legacy::Client<C, TestBody>,
    url: &str,
    auth: Option<&str>,
) where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut req = Request::get(url);
    if let Some(auth) = auth {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let resp = c.request(req.body(empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
}

/// `per` GETs of `url` on each of `concurrency` keep-alive clients (with
/// `Authorization: auth` if given); returns requests per second.
pub async fn small_requests(
    url: &str,
    per: usize,
    concurrency: usize,
    auth: Option<String>,
) -> f64 {
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (url, auth) = (url.to_owned(), auth.clone());
            tokio::spawn(async move {
                let c = client();
                for _ in 0..per {
                    get_ok(&c, &url, auth.as_deref()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (per * concurrency) as f64 / start.elapsed().as_secs_f64()
}

/// A number from the environment, or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
