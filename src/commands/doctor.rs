//! `dcos-token-proxy doctor`: check the whole chain from the DC/OS CLI config to an
//! authenticated answer from the master, one step at a time, and print a checklist with
//! the fix for every step that fails.
//!
//! The steps, in order (a step that needs an earlier one that failed is skipped):
//! 1. the config is found and parsed (which layout, which file);
//! 2. which cluster is chosen, and why (`--cluster`, `DCOS_CLUSTER`, the only one, the
//!    attached one);
//! 3. the token: present, its `uid`, its expiry and where it comes from;
//! 4. the TLS settings are usable (a readable CA bundle holding PEM certificates);
//! 5. the master is reachable: DNS, TCP, then the TLS handshake (made by step 6's
//!    request, through the same client the proxy uses);
//! 6. `GET /dcos-metadata/dcos-version.json` returns the DC/OS version;
//! 7. the cluster uses authentication: the DC/OS CLI's own probe,
//!    `HEAD /pkgpanda/active.buildinfo.full.json` without a token, answers 401 with
//!    `WWW-Authenticate`;
//! 8. the same request with the current token succeeds.
//!
//! The token itself is never printed. The exit status is 0 only if every step passed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited};

use dcos_token_proxy::dcos::config::{
    self, ClusterConfig, ConfigError, ConfigSource, SslVerify, ValueSource,
};
use dcos_token_proxy::dcos::token::human_duration;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::proxy::describe;
use dcos_token_proxy::settings::Settings;
use dcos_token_proxy::upstream::{Route, Upstream, UpstreamError};

/// The public endpoint that names the DC/OS version (no token needed).
pub const VERSION_PATH: &str = "/dcos-metadata/dcos-version.json";
/// The DC/OS CLI's own "does this cluster use auth" probe.
pub const AUTH_PROBE_PATH: &str = "/pkgpanda/active.buildinfo.full.json";
/// The most of a response body doctor reads (the version document is tiny).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// `User-Agent` of every request doctor and the startup check make, so a master's log
/// (and the test master) can tell them from clients' requests.
pub const CHECK_USER_AGENT: &str = concat!("dcos-token-proxy-check/", env!("CARGO_PKG_VERSION"));
/// The environment variable that beats `core.dcos_acs_token`.
const ENV_TOKEN: &str = "DCOS_ACS_TOKEN";

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It works.
    Pass,
    /// It does not; `fix` says what to do.
    Fail,
    /// Not checked: an earlier step it needs failed.
    Skipped,
}

/// One line of the checklist.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// 1 to 8.
    pub number: u8,
    /// What was checked, e.g. "config".
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, for a failed step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The whole checklist.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// True when every step passed.
    pub ok: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

struct Checklist(Vec<Step>);

impl Checklist {
    fn pass(&mut self, number: u8, name: &'static str, detail: impl Into<String>) {
        self.push(number, name, Status::Pass, detail.into(), None);
    }

    fn fail(
        &mut self,
        number: u8,
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(number, name, Status::Fail, detail.into(), Some(fix.into()));
    }

    fn skip_from(&mut self, first: u8, why: &str) {
        for (number, name) in STEP_NAMES.iter().copied().filter(|(n, _)| *n >= first) {
            if self.0.iter().all(|s| s.number != number) {
                self.push(
                    number,
                    name,
                    Status::Skipped,
                    format!("not checked: {why}"),
                    None,
                );
            }
        }
    }

    fn push(
        &mut self,
        number: u8,
        name: &'static str,
        status: Status,
        detail: String,
        fix: Option<String>,
    ) {
        self.0.push(Step {
            number,
            name,
            status,
            detail,
            fix,
        });
    }

    fn finish(mut self) -> Report {
        self.0.sort_by_key(|s| s.number);
        Report {
            ok: self.0.len() == STEP_NAMES.len() && self.0.iter().all(|s| s.status == Status::Pass),
            steps: self.0,
        }
    }
}

const STEP_NAMES: [(u8, &str); 8] = [
    (1, "config"),
    (2, "cluster"),
    (3, "token"),
    (4, "TLS settings"),
    (5, "master reachable"),
    (6, "DC/OS version"),
    (7, "cluster uses auth"),
    (8, "authenticated request"),
];

/// Run every step.
pub async fn run(settings: &Settings, env: &Env) -> Report {
    let mut list = Checklist(Vec::new());
    let cluster = match config::discover(&settings.discover, env) {
        Ok(c) => c,
        Err(e) => {
            list.fail(1, "config", e.to_string(), config_fix(&e));
            list.skip_from(2, "no usable DC/OS config");
            return list.finish();
        }
    };
    list.pass(1, "config", layout(&cluster));
    list.pass(2, "cluster", chosen(&cluster, settings, env));

    let token_source = token_source(&cluster);
    check_token(&mut list, &cluster, &token_source);

    if let Err(e) = check_tls(&cluster) {
        list.fail(4, "TLS settings", e.to_string(), tls_fix(&e));
        list.skip_from(5, "the TLS settings are unusable");
        return list.finish();
    }
    list.pass(4, "TLS settings", tls_detail(&cluster.ssl_verify));
    let upstream = match Upstream::new(&cluster, &settings.client_options()) {
        Ok(u) => u,
        Err(e) => {
            list.fail(4, "TLS settings", e.to_string(), tls_fix(&e));
            list.skip_from(5, "the TLS settings are unusable");
            return list.finish();
        }
    };

    if !check_reachable(&mut list, &cluster, &upstream, settings.connect_timeout).await {
        list.skip_from(6, "the master cannot be reached");
        return list.finish();
    }
    check_auth(
        &mut list,
        &upstream,
        &token_source,
        settings.response_timeout,
    )
    .await;
    list.finish()
}

/// Print the checklist for people: `✓`/`✗`/`-` per step, the fix under each `✗`.
pub fn render(report: &Report) -> String {
    let mut out = String::from("dcos-token-proxy doctor\n");
    for s in &report.steps {
        let mark = match s.status {
            Status::Pass => "✓",
            Status::Fail => "✗",
            Status::Skipped => "-",
        };
        out.push_str(&format!("{mark} {}. {}: {}\n", s.number, s.name, s.detail));
        if let Some(fix) = &s.fix {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    let failed = report
        .steps
        .iter()
        .filter(|s| s.status == Status::Fail)
        .count();
    if report.ok {
        out.push_str("all 8 checks passed: `dcos-token-proxy` will work for this cluster\n");
    } else {
        out.push_str(&format!("{failed} check(s) failed\n"));
    }
    out
}

fn config_fix(e: &ConfigError) -> String {
    if e.is_not_set_up() {
        "run `dcos cluster setup <master-url>` and `dcos auth login`, or pass --upstream <url> \
         with DCOS_ACS_TOKEN set"
            .into()
    } else {
        "fix the file or setting named above (the message says which)".into()
    }
}

fn layout(cluster: &ClusterConfig) -> String {
    match &cluster.source {
        ConfigSource::Cluster { file, .. } => {
            format!(
                "{} (per-cluster layout, clusters/<id>/dcos.toml)",
                file.display()
            )
        }
        ConfigSource::Legacy { file } => format!("{} (legacy single-file layout)", file.display()),
        ConfigSource::EnvOnly => {
            "no DC/OS CLI config; the master comes from --upstream / DCOS_URL".into()
        }
    }
}

/// Which cluster, and why that one.
fn chosen(cluster: &ClusterConfig, settings: &Settings, env: &Env) -> String {
    let name = cluster.name.as_deref().unwrap_or("(unnamed)");
    let master = cluster.dcos_url.to_string();
    let master = master.trim_end_matches('/');
    let why = match &cluster.source {
        ConfigSource::Cluster { id, file } => {
            let dir = file.parent().unwrap_or(Path::new("."));
            if settings.discover.cluster.is_some() {
                format!("cluster {id}, picked by --cluster")
            } else if env
                .get("DCOS_CLUSTER")
                .is_some_and(|v| !v.trim().is_empty())
            {
                format!("cluster {id}, picked by DCOS_CLUSTER")
            } else if dir.join("attached").exists() {
                format!("cluster {id}, the attached one")
            } else {
                format!("cluster {id}, the only one")
            }
        }
        ConfigSource::Legacy { .. } => "the legacy file's cluster".into(),
        ConfigSource::EnvOnly => "the URL given".into(),
    };
    let url_from = if settings.discover.upstream.is_some() {
        " (master from --upstream)"
    } else if env.get("DCOS_URL").is_some_and(|v| !v.trim().is_empty()) {
        " (master from DCOS_URL, which beats core.dcos_url)"
    } else {
        ""
    };
    format!("{name} at {master}: {why}{url_from}")
}

/// Where the token came from.
enum TokenSource {
    /// `DCOS_ACS_TOKEN`; `shadows` is the file whose own token it beats.
    Env { shadows: Option<PathBuf> },
    /// `core.dcos_acs_token` in this file.
    File(PathBuf),
    /// No token anywhere.
    None,
}

impl TokenSource {
    fn describe(&self) -> String {
        match self {
            Self::Env {
                shadows: Some(file),
            } => format!(
                "from {ENV_TOKEN} in the environment, which beats core.dcos_acs_token in {}",
                file.display()
            ),
            Self::Env { shadows: None } => format!("from {ENV_TOKEN} in the environment"),
            Self::File(file) => format!("from core.dcos_acs_token in {}", file.display()),
            Self::None => "none".into(),
        }
    }

    /// How to get a fresh token into the place it really comes from.
    fn refresh_fix(&self) -> String {
        match self {
            Self::Env { .. } => format!(
                "unset {ENV_TOKEN} (it beats the CLI's login, so `dcos auth login` alone cannot \
                 help) or export a fresh token in it"
            ),
            _ => "run `dcos auth login`".into(),
        }
    }
}

fn token_source(cluster: &ClusterConfig) -> TokenSource {
    match &cluster.origins.token {
        Some(ValueSource::Env(_)) => TokenSource::Env {
            shadows: cluster.origins.shadowed_file_token.clone(),
        },
        Some(ValueSource::File { file, .. }) => TokenSource::File(file.clone()),
        _ => TokenSource::None,
    }
}

fn check_token(list: &mut Checklist, cluster: &ClusterConfig, source: &TokenSource) {
    let Some(token) = &cluster.token else {
        let fix = match &cluster.source {
            ConfigSource::EnvOnly => {
                format!("set {ENV_TOKEN}, or run `dcos cluster setup` and `dcos auth login`")
            }
            _ => "run `dcos auth login`".into(),
        };
        list.fail(
            3,
            "token",
            "not logged in: no core.dcos_acs_token and no DCOS_ACS_TOKEN",
            fix,
        );
        return;
    };
    let from = source.describe();
    match token.claims() {
        Ok(claims) => {
            let uid = claims.uid.as_deref().unwrap_or("?").to_owned();
            match claims.exp {
                Some(exp) if exp <= SystemTime::now() => {
                    let ago = SystemTime::now()
                        .duration_since(exp)
                        .unwrap_or(Duration::ZERO);
                    list.fail(
                        3,
                        "token",
                        format!("expired {} ago (uid {uid}, {from})", human_duration(ago)),
                        source.refresh_fix(),
                    );
                }
                Some(exp) => {
                    let left = exp
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    list.pass(
                        3,
                        "token",
                        format!("uid {uid}, expires in {}, {from}", human_duration(left)),
                    );
                }
                None => list.pass(3, "token", format!("uid {uid}, no expiry, {from}")),
            }
        }
        // Not a JWT we can read: the master decides (step 8).
        Err(e) => list.pass(3, "token", format!("present ({e}), {from}")),
    }
}

fn check_tls(cluster: &ClusterConfig) -> Result<(), UpstreamError> {
    Upstream::new(cluster, &Default::default()).map(drop)
}

fn tls_detail(v: &SslVerify) -> String {
    match v {
        SslVerify::System => "verify the master against the system's trust store".into(),
        SslVerify::Insecure => "verification is off (ssl_verify = false): anyone on the path can \
                                 impersonate the master"
            .into(),
        SslVerify::CaBundle(p) => {
            format!("verify the master against the CA bundle {}", p.display())
        }
    }
}

fn tls_fix(e: &UpstreamError) -> String {
    match e {
        UpstreamError::CaRead { .. } | UpstreamError::CaEmpty { .. } => {
            "point core.ssl_verify (or DCOS_SSL_VERIFY) at the cluster's CA certificate in PEM \
             form, e.g. ~/.dcos/clusters/<id>/dcos_ca.crt, or run `dcos cluster setup` again"
                .into()
        }
        _ => "check core.ssl_verify and core.dcos_url".into(),
    }
}

/// DNS, TCP, then the version request (whose TLS handshake is step 5's last part).
/// Records steps 5 and 6; false when the master cannot be reached.
async fn check_reachable(
    list: &mut Checklist,
    cluster: &ClusterConfig,
    upstream: &Upstream,
    connect_timeout: Duration,
) -> bool {
    let host = cluster
        .dcos_url
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let https = cluster.dcos_url.scheme_str() == Some("https");
    let port = cluster
        .dcos_url
        .port_u16()
        .unwrap_or(if https { 443 } else { 80 });
    let url_fix = "check core.dcos_url (or DCOS_URL / --upstream), your VPN and network";
    let tls = if https {
        ", TLS handshake ok"
    } else {
        " (plain HTTP)"
    };
    // Through an HTTP proxy, SOCKS or a command, the master's name may not resolve here
    // at all: the route reaches it, so check it the way the proxy will.
    let via = match &upstream.route {
        Route::Direct => None,
        Route::Http { .. } => Some(format!("the HTTP proxy {}", upstream.route)),
        Route::Socks { .. } => Some(format!("the SOCKS proxy {}", upstream.route)),
        Route::Command(_) => Some(format!("the proxy {}", upstream.route)),
    };
    if let Some(via) = via {
        let version = fetch(
            upstream,
            Method::GET,
            VERSION_PATH,
            false,
            connect_timeout * 3,
        )
        .await;
        return match version {
            Ok((status, body)) => {
                list.pass(
                    5,
                    "master reachable",
                    format!("{host}:{port} via {via}{tls}"),
                );
                version_step(list, status, &body);
                true
            }
            Err(why) => {
                list.fail(
                    5,
                    "master reachable",
                    format!("{host}:{port} via {via}: {why}"),
                    "check the route: --upstream-proxy / the proxy variables, or --proxy-command",
                );
                false
            }
        };
    }
    let addrs: Vec<_> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(a) => a.collect(),
        Err(e) => {
            list.fail(
                5,
                "master reachable",
                format!("cannot resolve {host}: {e}"),
                url_fix,
            );
            return false;
        }
    };
    let mut connected = None;
    let mut last_error = String::from("no address");
    for addr in &addrs {
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {
                connected = Some(*addr);
                break;
            }
            Ok(Err(e)) => last_error = format!("{addr}: {}", io_text(&e)),
            Err(_) => {
                last_error = format!(
                    "{addr}: no answer within {}",
                    human_duration(connect_timeout)
                )
            }
        }
    }
    let Some(addr) = connected else {
        list.fail(
            5,
            "master reachable",
            format!("cannot connect to {host}:{port} ({last_error})"),
            format!("is the master up? {url_fix}"),
        );
        return false;
    };
    let version = fetch(
        upstream,
        Method::GET,
        VERSION_PATH,
        false,
        connect_timeout * 3,
    )
    .await;
    let (status, body) = match version {
        Ok(r) => r,
        Err(why) => {
            let fix = if why.contains("certificate") || why.contains("TLS") {
                "fix the TLS settings as the message says: core.ssl_verify (or DCOS_SSL_VERIFY) must \
                 name the CA that signed the master's certificate, e.g. the cluster's dcos_ca.crt"
                    .to_owned()
            } else {
                url_fix.to_owned()
            };
            list.fail(
                5,
                "master reachable",
                format!("{host} ({addr}) answers TCP, but the request failed: {why}"),
                fix,
            );
            return false;
        }
    };
    list.pass(
        5,
        "master reachable",
        format!("{host} resolves to {addr}, TCP ok{tls} (direct, no proxy)"),
    );
    version_step(list, status, &body);
    true
}

/// Step 6 from the version document's answer.
fn version_step(list: &mut Checklist, status: StatusCode, body: &[u8]) {
    match parse_version(status, body) {
        Ok(v) => list.pass(6, "DC/OS version", format!("DC/OS {v}")),
        Err(why) => list.fail(
            6,
            "DC/OS version",
            format!("GET {VERSION_PATH}: {why}"),
            "check that core.dcos_url is the DC/OS master (Admin Router), not another server",
        ),
    }
}

/// An I/O error in words, without the `(os error N)` tail.
fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused: nothing listens there".into(),
        TimedOut => "timed out".into(),
        HostUnreachable | NetworkUnreachable => "the host or network is unreachable".into(),
        _ => e.to_string(),
    }
}

pub(crate) fn parse_version(status: StatusCode, body: &[u8]) -> Result<String, String> {
    if status != StatusCode::OK {
        return Err(format!("status {status}"));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_owned())?;
    doc.get("version")
        .and_then(|v| v.as_str())
        .map(|v| v.chars().filter(|c| !c.is_control()).take(40).collect())
        .ok_or_else(|| "the answer has no \"version\"".to_owned())
}

/// Steps 7 and 8.
async fn check_auth(
    list: &mut Checklist,
    upstream: &Upstream,
    source: &TokenSource,
    timeout: Duration,
) {
    match fetch(upstream, Method::HEAD, AUTH_PROBE_PATH, false, timeout).await {
        Ok((StatusCode::UNAUTHORIZED, _)) => list.pass(
            7,
            "cluster uses auth",
            format!("HEAD {AUTH_PROBE_PATH} without a token: 401 (WWW-Authenticate)"),
        ),
        Ok((status, _)) if status.is_success() => {
            list.pass(
                7,
                "cluster uses auth",
                "no: the master answers without a token (no token needed)",
            );
        }
        Ok((status, _)) => list.fail(
            7,
            "cluster uses auth",
            format!("HEAD {AUTH_PROBE_PATH}: unexpected status {status}"),
            "check that core.dcos_url is the DC/OS master",
        ),
        Err(why) => list.fail(7, "cluster uses auth", why, "try again; check the master"),
    }
    if upstream.auth.is_none() {
        list.skip_from(8, "no token");
        return;
    }
    match fetch(upstream, Method::HEAD, AUTH_PROBE_PATH, true, timeout).await {
        Ok((status, _)) if status.is_success() => list.pass(
            8,
            "authenticated request",
            format!("HEAD {AUTH_PROBE_PATH} with the token: {status}"),
        ),
        Ok((StatusCode::UNAUTHORIZED, _)) => list.fail(
            8,
            "authenticated request",
            format!(
                "the master refused the token (401); the token is {}",
                source.describe()
            ),
            source.refresh_fix(),
        ),
        Ok((StatusCode::FORBIDDEN, _)) => list.fail(
            8,
            "authenticated request",
            "the master accepted the token but refused access (403)",
            "ask a cluster administrator for permissions, or log in as another user",
        ),
        Ok((status, _)) => list.fail(
            8,
            "authenticated request",
            format!("unexpected status {status}"),
            "check the master",
        ),
        Err(why) => list.fail(
            8,
            "authenticated request",
            why,
            "try again; check the master",
        ),
    }
}

/// One request to the master through the proxy's own client: the status and up to
/// [`MAX_BODY_BYTES`] of the body, or the cause of a failure in words.
pub(crate) async fn fetch(
    upstream: &Upstream,
    method: Method,
    path: &'static str,
    with_token: bool,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let uri = upstream
        .target(Some(&PathAndQuery::from_static(path)))
        .map_err(|e| e.to_string())?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, upstream.host.clone())
        .header(header::USER_AGENT, CHECK_USER_AGENT)
        .body(Either::Left(Full::new(Bytes::new())))
        .map_err(|e| e.to_string())?;
    if let Some(auth) = upstream.auth.clone().filter(|_| with_token) {
        req.headers_mut().insert(header::AUTHORIZATION, auth);
    }
    let resp = tokio::time::timeout(timeout, upstream.client().request(req))
        .await
        .map_err(|_| format!("no answer within {}", human_duration(timeout)))?
        .map_err(|e| describe(&e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_document_is_read_carefully() {
        assert_eq!(
            parse_version(
                StatusCode::OK,
                br#"{"version":"2.2.0","dcos-variant":"open"}"#
            ),
            Ok("2.2.0".to_owned())
        );
        assert!(parse_version(StatusCode::OK, b"<html>").is_err());
        assert!(parse_version(StatusCode::NOT_FOUND, b"").is_err());
        assert_eq!(
            parse_version(StatusCode::OK, b"{\"version\":\"1\\u001b[31m\"}").unwrap(),
            "1[31m"
        );
    }
}
