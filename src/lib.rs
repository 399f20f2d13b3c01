//! dcos-token-proxy: a localhost reverse proxy that authenticates every request to a
//! DC/OS cluster with the DC/OS CLI's current token.
//!
//! Where things are:
//! - [`settings`] and [`cli`]: the proxy's own settings (defaults < file < env < flags);
//! - [`dcos`]: the DC/OS CLI's config files and the token (where credentials come from);
//! - [`proxy`]: what happens to a request;
//! - [`server`]: listening, connections and graceful shutdown.
//!
//! [`Proxy`] is the in-process entry point used by `main` and by the integration tests:
//! [`Proxy::bind`] then [`Proxy::serve`].

pub mod cli;
pub mod dcos;
pub mod env;
pub mod listener;
pub mod logging;
pub mod proxy;
pub mod server;
pub mod settings;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::dcos::config::{ClusterConfig, ConfigSource, SslVerify};
use crate::listener::{Listener, UnixSocketError};
use crate::proxy::guard::Guard;
use crate::proxy::service::Shared;
use crate::proxy::upstream::{Upstream, UpstreamError};
use crate::settings::{ListenAddr, Settings};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {error}; is another proxy already running there? \
         Pick another address with --listen (127.0.0.1:0 picks a free port)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error (part of the message, not repeated as `source()`).
        error: std::io::Error,
    },
    /// The master URL is the proxy's own address: every request would loop.
    #[error(
        "the master URL {url} is this proxy's own address {addr}: requests would loop \
         forever. Keep core.dcos_url pointing at the cluster, and give the proxy's address \
         only to your tools (e.g. DCOS_URL=http://{addr} for one command)"
    )]
    Loop {
        /// The configured master URL.
        url: String,
        /// The bound address.
        addr: SocketAddr,
    },
    /// The Unix socket could not be created.
    #[error(transparent)]
    Unix(#[from] UnixSocketError),
    /// The upstream (TLS, CA bundle) could not be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// A bound, ready-to-serve proxy.
#[derive(Debug)]
pub struct Proxy {
    listener: Listener,
    /// The TCP address actually bound; `None` on a Unix socket.
    local_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    settings: Settings,
}

impl Proxy {
    /// Set up the upstream for `cluster` and bind the listen address.
    pub async fn bind(settings: &Settings, cluster: &ClusterConfig) -> Result<Self, StartError> {
        let upstream = Upstream::new(cluster, settings)?;
        let (listener, local_addr) = match &settings.listen {
            ListenAddr::Tcp(addr) => {
                let addr = *addr;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|error| StartError::Bind { addr, error })?;
                let local = listener
                    .local_addr()
                    .map_err(|error| StartError::Bind { addr, error })?;
                if points_at(&cluster.dcos_url, local) {
                    return Err(StartError::Loop {
                        url: upstream.url.clone(),
                        addr: local,
                    });
                }
                (Listener::Tcp(listener), Some(local))
            }
            #[cfg(unix)]
            ListenAddr::Unix(path) => (listener::bind_unix(path)?, None),
            #[cfg(not(unix))]
            ListenAddr::Unix(path) => {
                return Err(StartError::Unix(UnixSocketError::Io {
                    path: path.clone(),
                    error: std::io::Error::other("Unix sockets need a Unix system"),
                }));
            }
        };
        announce(cluster, &upstream);
        if let Some(addr) = local_addr.filter(|a| !a.ip().to_canonical().is_loopback()) {
            tracing::warn!(
                listen = %addr,
                allowed_hosts = %settings.policy.allowed_hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                "listening beyond loopback (--allow-remote): anyone who can reach this address \
                 acts as you on the cluster; clients must use a host name in allowed_hosts"
            );
        }
        let fallback_host = match local_addr {
            Some(a) => server::host_value(a),
            None => http::HeaderValue::from_static("localhost"),
        };
        let guard = Guard::new(&settings.policy, local_addr.map(|a| a.port()));
        let shared = Shared::new(
            upstream,
            settings.client_auth,
            settings.response_timeout,
            fallback_host,
        )
        .with_guard(guard);
        Ok(Self {
            listener,
            local_addr,
            shared: Arc::new(shared),
            settings: settings.clone(),
        })
    }

    /// The TCP address actually bound (useful with port 0); `None` on a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// What to tell the user once, at startup: `http://ADDR` (plus `/<secret>/` with a
    /// path secret), or `unix:/path` (plus the base URL to use over it). This is the
    /// only place the path secret is ever printed.
    pub fn base_url(&self) -> String {
        let secret = self
            .settings
            .policy
            .path_secret
            .as_ref()
            .map(|s| format!("/{}/", s.expose()));
        match (self.local_addr, &self.settings.listen) {
            (Some(addr), _) => format!("http://{addr}{}", secret.unwrap_or_default()),
            (None, listen) => match secret {
                Some(secret) => format!("{listen} (base URL http://localhost{secret})"),
                None => listen.to_string(),
            },
        }
    }

    /// Serve until `shutdown` resolves, then let in-flight requests finish within the
    /// grace period. A Unix socket file is removed on return.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let listen = match self.local_addr {
            Some(a) => a.to_string(),
            None => self.settings.listen.to_string(),
        };
        tracing::info!(%listen, "proxy ready");
        let limits = server::Limits {
            header_read_timeout: self.settings.header_read_timeout,
            max_header_bytes: self.settings.max_header_bytes,
            max_connections: self.settings.max_connections,
            grace: self.settings.shutdown_grace,
        };
        server::serve(self.listener, self.shared, limits, shutdown).await;
    }
}

/// What the host part of a URL names, as far as loopback checks care.
#[derive(Debug, PartialEq, Eq)]
enum HostKind {
    /// `localhost`: resolves to loopback.
    Localhost,
    /// An IP literal (IPv6 without its brackets).
    Ip(IpAddr),
    /// Any other name.
    Name,
}

impl HostKind {
    fn of(url: &http::Uri) -> Option<Self> {
        let host = url.host()?.trim_start_matches('[').trim_end_matches(']');
        Some(if host.eq_ignore_ascii_case("localhost") {
            Self::Localhost
        } else if let Ok(ip) = host.parse() {
            Self::Ip(ip)
        } else {
            Self::Name
        })
    }

    fn is_loopback(&self) -> bool {
        match self {
            Self::Localhost => true,
            Self::Ip(ip) => ip.is_loopback(),
            Self::Name => false,
        }
    }
}

/// Whether `url` would reach the listener bound at `local`.
fn points_at(url: &http::Uri, local: SocketAddr) -> bool {
    let default_port = if url.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    if url.port_u16().unwrap_or(default_port) != local.port() {
        return false;
    }
    let any = local.ip().is_unspecified();
    match HostKind::of(url) {
        Some(HostKind::Localhost) => any || local.ip().is_loopback(),
        Some(HostKind::Ip(ip)) => any || ip == local.ip(),
        Some(HostKind::Name) | None => false,
    }
}

/// Say once, at startup, which cluster is in use and whether anything needs doing.
fn announce(cluster: &ClusterConfig, upstream: &Upstream) {
    let source = match &cluster.source {
        ConfigSource::Cluster { file, .. } | ConfigSource::Legacy { file } => {
            file.display().to_string()
        }
        ConfigSource::EnvOnly => "environment (DCOS_URL / --upstream)".to_owned(),
    };
    tracing::info!(
        cluster = cluster.name.as_deref().unwrap_or("-"),
        master = %upstream.url,
        config = %source,
        "using DC/OS cluster"
    );
    if cluster.token.is_none() {
        tracing::warn!(
            config = %source,
            "not logged in: run `dcos auth login`; forwarding requests without a token until then"
        );
    }
    let plain_remote = cluster.dcos_url.scheme_str() == Some("http")
        && HostKind::of(&cluster.dcos_url).is_some_and(|h| !h.is_loopback());
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
    use super::{HostKind, points_at};

    #[test]
    fn detects_a_master_url_that_is_the_proxy_itself() {
        let local = "127.0.0.1:8079".parse().unwrap();
        for url in ["http://127.0.0.1:8079", "http://localhost:8079/"] {
            assert!(points_at(&url.parse().unwrap(), local), "{url}");
        }
        for url in [
            "http://127.0.0.1:8080",
            "https://master.example:8079",
            "http://10.0.0.1:8079",
            "http://127.0.0.2:8079",
            "https://127.0.0.1",
        ] {
            assert!(!points_at(&url.parse().unwrap(), local), "{url}");
        }
        let any = "0.0.0.0:80".parse().unwrap();
        assert!(points_at(&"http://localhost".parse().unwrap(), any));
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://localhost:1",
            "http://127.0.0.1",
            "http://[::1]:8080",
        ] {
            assert!(
                HostKind::of(&url.parse().unwrap()).unwrap().is_loopback(),
                "{url}"
            );
        }
        for url in [
            "http://10.0.0.1",
            "http://master.example",
            "http://[2001:db8::1]",
        ] {
            assert!(
                !HostKind::of(&url.parse().unwrap()).unwrap().is_loopback(),
                "{url}"
            );
        }
    }
}
