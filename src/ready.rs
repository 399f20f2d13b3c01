//! What the binary says once it listens: a short banner for a person at a terminal (or
//! one structured line in JSON mode), and a check of the master that runs in the
//! background right after startup.
//!
//! The banner names the URL to use, the cluster and master, who is logged in and until
//! when, where the credentials come from, and a first command to paste. It never holds
//! the token. The check (`GET /dcos-metadata/dcos-version.json`, then one authenticated
//! request) never delays serving: it is spawned after the listener is bound, and only
//! logs what it finds, with the fix.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};

use dcos_token_proxy::dcos::token::human_duration;
use dcos_token_proxy::source::Snapshot;

use crate::commands::doctor::{AUTH_PROBE_PATH, VERSION_PATH, fetch, parse_version};

/// The request the banner suggests as a first try.
pub const EXAMPLE_PATH: &str = "/service/marathon/v2/apps";

/// What the banner and the ready line say.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The base URL clients use (with the path secret, if any), or `unix:/path`.
    pub base_url: String,
    /// `cluster.name`, if known.
    pub cluster: Option<String>,
    /// The master URL; `None` while no cluster is set up.
    pub master: Option<String>,
    /// The token's user, if readable.
    pub uid: Option<String>,
    /// Time to expiry in words: `3h12m`, `never`, `expired`, or `?`.
    pub expires_in: String,
    /// Where the token comes from; `None` when not logged in.
    pub token_from: Option<String>,
    /// Where the master URL comes from.
    pub url_from: Option<String>,
}

impl Facts {
    /// Gather the facts from the first snapshot.
    pub fn of(base_url: String, snapshot: &Snapshot) -> Self {
        let Some(up) = snapshot.upstream() else {
            return Self {
                base_url,
                cluster: None,
                master: None,
                uid: None,
                expires_in: "-".into(),
                token_from: None,
                url_from: None,
            };
        };
        let (uid, expires_in) = match &up.claims {
            Some(Ok(c)) => (
                c.uid.clone(),
                match c.remaining(SystemTime::now()) {
                    None => "never".to_owned(),
                    Some(Duration::ZERO) => "expired".to_owned(),
                    Some(d) => human_duration(d),
                },
            ),
            _ => (None, "?".to_owned()),
        };
        Self {
            base_url,
            cluster: up.cluster.clone(),
            master: Some(up.url.clone()),
            uid,
            expires_in,
            token_from: up.origins.token.as_ref().map(ToString::to_string),
            url_from: up.origins.url.as_ref().map(ToString::to_string),
        }
    }

    /// A command to paste.
    pub fn example(&self) -> String {
        match self.base_url.strip_prefix("unix:") {
            Some(rest) if !rest.contains(' ') => {
                format!("curl --unix-socket {rest} http://localhost{EXAMPLE_PATH}")
            }
            Some(_) => "curl --unix-socket PATH http://localhost/<secret>/...".to_owned(),
            None => format!("curl {}{EXAMPLE_PATH}", self.base_url.trim_end_matches('/')),
        }
    }
}

/// The banner for a person at a terminal (printed after the `listening on` line).
pub fn banner(f: &Facts) -> String {
    let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let mut out = String::new();
    match &f.master {
        Some(master) => {
            let name = f
                .cluster
                .as_deref()
                .map_or_else(|| "(unnamed)".to_owned(), clean);
            out.push_str(&format!("  cluster  {name} at {master}"));
            if let Some(from) = &f.url_from {
                out.push_str(&format!(" (from {from})"));
            }
            out.push('\n');
            match &f.token_from {
                Some(from) => out.push_str(&format!(
                    "  as       {}, token expires in {} (from {from})\n",
                    f.uid.as_deref().map_or_else(|| "?".to_owned(), clean),
                    f.expires_in
                )),
                None => out.push_str("  as       nobody: not logged in (run `dcos auth login`)\n"),
            }
        }
        None => out.push_str(
            "  cluster  none set up yet: requests get 503 until `dcos cluster setup <url>`\n",
        ),
    }
    out.push_str(&format!("  try      {}\n", f.example()));
    out.push_str("  check    dcos-token-proxy doctor\n");
    out.push_str("  stop     Ctrl-C (twice to stop at once)\n");
    out
}

/// The ready line in JSON mode: the same facts as fields.
pub fn log_ready(f: &Facts) {
    tracing::info!(
        url = %f.base_url,
        cluster = f.cluster.as_deref().unwrap_or("-"),
        master = f.master.as_deref().unwrap_or("-"),
        uid = f.uid.as_deref().unwrap_or("-"),
        expires_in = %f.expires_in,
        token_from = f.token_from.as_deref().unwrap_or("-"),
        url_from = f.url_from.as_deref().unwrap_or("-"),
        example = %f.example(),
        "ready"
    );
}

/// Check the master once, in the background: its DC/OS version, then one request with
/// the token. Logs the version, or exactly what is wrong with the fix.
pub async fn check(snapshot: Arc<Snapshot>, timeout: Duration) {
    let Some(up) = snapshot.upstream() else {
        return;
    };
    let doctor = "`dcos-token-proxy doctor` checks each step";
    let version = match fetch(up, Method::GET, VERSION_PATH, false, timeout).await {
        Ok((status, body)) => match parse_version(status, &body) {
            Ok(v) => v,
            Err(why) => {
                tracing::warn!(
                    master = %up.url,
                    "master check: GET {VERSION_PATH} gave {why}: is core.dcos_url the DC/OS \
                     master? {doctor}"
                );
                return;
            }
        },
        Err(why) => {
            tracing::warn!(
                master = %up.url,
                "master check: cannot reach the DC/OS master: {why}; requests will fail until \
                 this is fixed ({doctor})"
            );
            return;
        }
    };
    if up.auth.is_none() {
        tracing::info!(master = %up.url, "master check: DC/OS {version}; not logged in");
        return;
    }
    match fetch(up, Method::HEAD, AUTH_PROBE_PATH, true, timeout).await {
        Ok((status, _)) if status.is_success() => {
            tracing::info!(master = %up.url, "master check: DC/OS {version}; the token works");
        }
        Ok((StatusCode::UNAUTHORIZED, _)) => tracing::warn!(
            master = %up.url,
            "master check: DC/OS {version}, but the master refused the token (401): {}",
            up.origins.token_refresh_hint()
        ),
        Ok((status, _)) => tracing::warn!(
            master = %up.url,
            "master check: DC/OS {version}, but an authenticated request got {status} ({doctor})"
        ),
        Err(why) => tracing::warn!(
            master = %up.url,
            "master check: DC/OS {version}, but an authenticated request failed: {why}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            base_url: "http://127.0.0.1:8079".into(),
            cluster: Some("prod".into()),
            master: Some("https://m.example.com".into()),
            uid: Some("alice".into()),
            expires_in: "3h".into(),
            token_from: Some("DCOS_ACS_TOKEN".into()),
            url_from: Some("core.dcos_url in /h/.dcos/clusters/x/dcos.toml".into()),
        }
    }

    #[test]
    fn the_banner_names_everything_a_newcomer_needs() {
        let b = banner(&facts());
        for needle in [
            "prod at https://m.example.com",
            "alice, token expires in 3h (from DCOS_ACS_TOKEN)",
            "curl http://127.0.0.1:8079/service/marathon/v2/apps",
            "dcos-token-proxy doctor",
            "Ctrl-C",
        ] {
            assert!(b.contains(needle), "{needle}:\n{b}");
        }
        let secret = Facts {
            base_url: "http://127.0.0.1:8079/s3cr3t-s3cr3t-s3cr3t/".into(),
            ..facts()
        };
        assert!(
            banner(&secret)
                .contains("curl http://127.0.0.1:8079/s3cr3t-s3cr3t-s3cr3t/service/marathon")
        );
        let unix = Facts {
            base_url: "unix:/run/u/p.sock".into(),
            ..facts()
        };
        assert!(banner(&unix).contains("curl --unix-socket /run/u/p.sock http://localhost/"));
    }
}
