//! Where the current credentials come from, and how the request path sees them.
//!
//! The token source is the only moving part of the proxy. It publishes one immutable
//! [`Snapshot`] at a time through [`Published`]: the master, its pooled client, the
//! ready-made `Authorization` value and the token's claims. A request does one atomic
//! load ([`Published::load`]) and keeps that `Arc` to its end, so a request or stream in
//! flight finishes on the snapshot it started with while new requests get the new one.
//!
//! [`watch`] follows the DC/OS CLI's config files and publishes each change. A request
//! whose token the master refused can ask for an immediate re-read
//! ([`Published::reread`]), which recovers from a missed file event.

pub mod credential;
pub mod login;
pub mod refresh;
pub mod token_file;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::dcos::config::{ClusterConfig, ConfigSource, SslVerify, ValueSource};
use crate::dcos::token::human_duration;
use crate::upstream::Upstream;

/// How long a request that got a 401 waits for the re-read it asked for.
pub const REREAD_WAIT: Duration = Duration::from_secs(2);

/// How many re-read requests may queue before further ones are dropped (they would all
/// be answered by the same re-read anyway).
const REREAD_QUEUE: usize = 256;

/// What the request path uses: a master to forward to, or why there is none yet.
// One per config change, always behind an `Arc`: boxing `Upstream` would only add a
// pointer hop per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Snapshot {
    /// A configured master.
    Ready(Upstream),
    /// No DC/OS cluster is set up yet: requests get 503 with this message (which says
    /// what to do).
    Waiting(Arc<str>),
}

impl Snapshot {
    /// The upstream, when configured.
    pub fn upstream(&self) -> Option<&Upstream> {
        match self {
            Self::Ready(up) => Some(up),
            Self::Waiting(_) => None,
        }
    }
}

/// A request for a re-read, answered once the config on disk has been looked at.
pub type Reread = oneshot::Sender<()>;

/// The receiving end of [`Published::reread`], served by the watcher.
pub type RereadRequests = mpsc::Receiver<Reread>;

/// The current snapshot, swapped whole and loaded lock-free.
#[derive(Debug)]
pub struct Published {
    current: ArcSwap<Snapshot>,
    /// Counts publications; tests and the admin side wait on it.
    changes: tokio::sync::watch::Sender<u64>,
    reread: mpsc::Sender<Reread>,
}

impl Published {
    /// Publish `initial`. The returned receiver is for the watcher; if it is dropped,
    /// [`Self::reread`] returns at once.
    pub fn new(initial: Snapshot) -> (Self, RereadRequests) {
        let (reread, requests) = mpsc::channel(REREAD_QUEUE);
        let published = Self {
            current: ArcSwap::from_pointee(initial),
            changes: tokio::sync::watch::channel(0).0,
            reread,
        };
        (published, requests)
    }

    /// The current snapshot: one atomic load, no lock.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replace the current snapshot. Requests already holding the old one keep it.
    pub fn store(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that sees the number of publications so far, and each new one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Ask the watcher to look at the config on disk now, and wait (at most
    /// [`REREAD_WAIT`]) until it has. Returns the snapshot current afterwards, or `None`
    /// when nothing follows the config (no watcher, queue full, or too slow).
    pub async fn reread(&self) -> Option<Arc<Snapshot>> {
        let (tx, rx) = oneshot::channel();
        self.reread.try_send(tx).ok()?;
        match tokio::time::timeout(REREAD_WAIT, rx).await {
            Ok(Ok(())) => Some(self.load()),
            _ => None,
        }
    }
}

/// What changed, for the log line that reports a new snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The first config: at startup, or once a cluster is set up.
    First,
    /// Another cluster (a switch with `dcos cluster attach`, or another `--cluster`).
    Master,
    /// The same cluster (same config file and name) at a new master URL.
    Url,
    /// The same master with a new token or other settings.
    Token,
}

/// `text` from a file, safe to put in a log line: control characters (a newline that
/// would forge a log line, a terminal escape) are shown escaped.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Say which cluster is in use, who is logged in and for how long, and whether anything
/// needs doing. Never logs the token.
/// Why a master URL that is the proxy's own address loops, and the fix for where that
/// URL came from: a `DCOS_URL` meant for tools, an `--upstream` typo, or `core.dcos_url`
/// set to the proxy (`dcos config set core.dcos_url http://127.0.0.1:8079`).
pub fn loop_message(cluster: &ClusterConfig, addr: std::net::SocketAddr) -> String {
    let url = cluster.dcos_url.to_string();
    let url = url.trim_end_matches('/');
    let (from, fix) = match &cluster.origins.url {
        Some(ValueSource::Env(var)) => (
            (*var).to_owned(),
            format!(
                "unset {var} where the proxy starts (it is for your tools: \
                 `{var}=http://{addr} dcos …` for one command); the proxy then reads \
                 the master from the DC/OS CLI config, or pass it with --upstream"
            ),
        ),
        Some(ValueSource::Flag(flag)) => (
            (*flag).to_owned(),
            format!("pass the master's URL to {flag}, not the proxy's"),
        ),
        Some(at @ ValueSource::File { .. }) => (
            at.to_string(),
            format!(
                "set core.dcos_url back to the master (`dcos cluster setup` again) and give \
                 the proxy's address only to your tools (e.g. DCOS_URL=http://{addr} for one \
                 command)"
            ),
        ),
        None => (
            "the configured URL".to_owned(),
            "point it at the master".to_owned(),
        ),
    };
    format!(
        "the master URL {url} (from {from}) is this proxy's own address {addr}: requests would \
         loop forever; {fix}"
    )
}

pub fn announce(cluster: &ClusterConfig, upstream: &Upstream, change: Change) {
    let source = match &cluster.source {
        ConfigSource::Cluster { file, .. } | ConfigSource::Legacy { file } => {
            file.display().to_string()
        }
        ConfigSource::EnvOnly => "environment (DCOS_URL / --upstream)".to_owned(),
    };
    let (uid, expires_in) = match &upstream.claims {
        None => ("-".to_owned(), "-".to_owned()),
        Some(Ok(claims)) if claims.uid.is_none() && claims.exp.is_none() => {
            ("?".to_owned(), "never".to_owned())
        }
        Some(Err(e)) => {
            tracing::warn!(config = %source, "cannot tell who is logged in or until when: {e}");
            ("?".to_owned(), "?".to_owned())
        }
        Some(Ok(claims)) => (
            claims
                .uid
                .as_deref()
                .map_or_else(|| "?".to_owned(), printable),
            match claims.remaining(SystemTime::now()) {
                None => "never".to_owned(),
                Some(Duration::ZERO) => "expired".to_owned(),
                Some(d) => human_duration(d),
            },
        ),
    };
    let message = match change {
        Change::First => "using DC/OS cluster",
        Change::Master => "switched to another DC/OS cluster",
        Change::Url => "the cluster's master URL changed; new requests go there",
        Change::Token => "DC/OS config changed; new requests use it",
    };
    let from = |v: &Option<ValueSource>| {
        v.as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    };
    tracing::info!(
        cluster = %cluster.name.as_deref().map_or_else(|| "-".to_owned(), printable),
        master = %upstream.url,
        proxy = %upstream.route,
        uid = %uid,
        expires_in = %expires_in,
        config = %source,
        url_from = %from(&cluster.origins.url),
        token_from = %from(&cluster.origins.token),
        "{message}"
    );
    if let Some(file) = &cluster.origins.shadowed_file_token {
        tracing::info!(
            "the token comes from DCOS_ACS_TOKEN, which beats the one in {}; unset it to use \
             the CLI's login",
            file.display()
        );
    }
    if cluster.token.is_none() {
        tracing::warn!(
            config = %source,
            "not logged in: run `dcos auth login`; forwarding requests without a token until then"
        );
    }
    if change == Change::Token {
        // The master has not changed, so neither have the transport warnings.
        return;
    }
    let plain_remote = cluster.dcos_url.scheme_str() == Some("http")
        && crate::host::HostKind::of(&cluster.dcos_url).is_some_and(|h| !h.is_loopback());
    if plain_remote {
        tracing::warn!(
            master = %upstream.url,
            "the master URL is plain http://: your token crosses the network unencrypted; \
             use https:// in core.dcos_url if the cluster offers it"
        );
    } else if cluster.dcos_url.scheme_str() == Some("https")
        && cluster.ssl_verify == SslVerify::Insecure
    {
        tracing::warn!(
            master = %upstream.url,
            "TLS verification is off (core.ssl_verify = false): anyone on the path to the \
             master can read your token; set core.ssl_verify to the cluster CA (dcos_ca.crt)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn names_from_files_cannot_forge_log_lines() {
        assert_eq!(printable("alice@example.com"), "alice@example.com");
        assert_eq!(printable("prod-\u{e9}ast"), "prod-\u{e9}ast");
        assert_eq!(printable("a\nlevel=ERROR fake"), "a\\nlevel=ERROR fake");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
    }
}
