//! `dcos-token-proxy clusters`: every cluster of the DC/OS CLI's per-cluster layout, as
//! the proxy serves them by name: name, ID, master URL, whether it is attached, its
//! token's expiry (from the token's `exp`, like the startup line) and its local URL
//! (`http://<name>.localhost:PORT/`, with the configured listen port). `--json` prints
//! one object for scripts. Reads the files only; no network, never a token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dcos_token_proxy::dcos::config::{self, NamedCluster};
use dcos_token_proxy::dcos::token::human_duration;
use dcos_token_proxy::env::Env;
use dcos_token_proxy::settings::Settings;
use dcos_token_proxy::source::named::{labels, local_url};
use dcos_token_proxy::types::ListenAddr;

/// One cluster's row.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    /// `cluster.name`, if any.
    pub name: Option<String>,
    /// The cluster ID (its directory name).
    pub id: String,
    /// The master URL, when the config is usable.
    pub url: Option<String>,
    /// Whether the cluster holds the `attached` marker.
    pub attached: bool,
    /// `http://<label>.localhost:PORT/`, when the proxy listens on TCP.
    pub local_url: Option<String>,
    /// Who is logged in and until when; `None` when not logged in (or the config is
    /// unusable).
    pub token: Option<TokenInfo>,
    /// Why the config cannot be used, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the token's claims say (never the token).
#[derive(Debug, serde::Serialize)]
pub struct TokenInfo {
    /// The `uid` claim.
    pub uid: Option<String>,
    /// The `exp` claim, seconds since 1970; `None` when it never expires or is unreadable.
    pub exp: Option<u64>,
    /// Seconds left; `None` when it never expires or is unreadable.
    pub expires_in_secs: Option<u64>,
    /// Whether `exp` has passed.
    pub expired: bool,
    /// Whether the token is a readable JWT (an unreadable one is still sent).
    pub readable: bool,
}

/// The whole list, for `--json`.
#[derive(Debug, serde::Serialize)]
pub struct Listing {
    /// The DC/OS clusters, sorted by ID.
    pub clusters: Vec<Row>,
}

/// Read every cluster with the serving settings' `--dcos-dir` and environment.
pub fn list(settings: &Settings, env: &Env) -> Result<Listing, config::ConfigError> {
    let all = config::all_clusters(&settings.discover, env)?;
    let port = match &settings.listen {
        ListenAddr::Tcp(addr) => Some(addr.port().to_string()),
        ListenAddr::Unix(_) => None,
    };
    let pairs: Vec<(&str, Option<&str>)> = all
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_deref()))
        .collect();
    let labels = labels(&pairs);
    let now = SystemTime::now();
    let clusters = all
        .into_iter()
        .zip(labels)
        .map(|(c, label)| row(c, port.as_deref().map(|p| local_url(&label, Some(p))), now))
        .collect();
    Ok(Listing { clusters })
}

fn row(c: NamedCluster, local_url: Option<String>, now: SystemTime) -> Row {
    let (url, token, error) = match &c.config {
        Ok(cfg) => {
            let token = cfg.token.as_ref().map(|t| match t.claims() {
                Ok(claims) => {
                    let left = claims.remaining(now);
                    TokenInfo {
                        uid: claims.uid.clone(),
                        exp: claims
                            .exp
                            .and_then(|e| e.duration_since(UNIX_EPOCH).ok())
                            .map(|d| d.as_secs()),
                        expires_in_secs: left.map(|d| d.as_secs()),
                        expired: left == Some(Duration::ZERO),
                        readable: true,
                    }
                }
                Err(_) => TokenInfo {
                    uid: None,
                    exp: None,
                    expires_in_secs: None,
                    expired: false,
                    readable: false,
                },
            });
            let url = cfg.dcos_url.to_string().trim_end_matches('/').to_owned();
            (Some(url), token, None)
        }
        Err(e) => (None, None, Some(e.to_string())),
    };
    Row {
        name: c.name,
        id: c.id,
        url,
        attached: c.attached,
        local_url,
        token,
        error,
    }
}

/// `text` safe for a terminal: control characters shown escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The token column.
fn expiry(row: &Row) -> String {
    if row.error.is_some() {
        return "(config unusable)".to_owned();
    }
    match &row.token {
        None => "not logged in".to_owned(),
        Some(t) if !t.readable => "unreadable token".to_owned(),
        Some(t) if t.expired => "expired".to_owned(),
        Some(TokenInfo {
            expires_in_secs: Some(secs),
            ..
        }) => format!("expires in {}", human_duration(Duration::from_secs(*secs))),
        Some(_) => "never expires".to_owned(),
    }
}

/// The table, one cluster a line, then each unusable config's problem.
pub fn render(listing: &Listing) -> String {
    if listing.clusters.is_empty() {
        return "no DC/OS clusters in the per-cluster layout: set one up with `dcos cluster \
                setup <URL>` (the plain address serves a legacy or --upstream config)\n"
            .to_owned();
    }
    let header = ["NAME", "ID", "URL", "ATTACHED", "TOKEN", "LOCAL URL"].map(str::to_owned);
    let rows: Vec<[String; 6]> = listing
        .clusters
        .iter()
        .map(|r| {
            [
                r.name.as_deref().map_or_else(|| "-".to_owned(), printable),
                printable(&r.id),
                r.url.clone().unwrap_or_else(|| "-".to_owned()),
                if r.attached { "yes" } else { "no" }.to_owned(),
                expiry(r),
                r.local_url.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for r in &listing.clusters {
        if let Some(e) = &r.error {
            out.push_str(&format!("\n{}: {}\n", printable(&r.id), printable(e)));
        }
    }
    out
}
