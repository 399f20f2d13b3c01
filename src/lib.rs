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
pub mod logging;
pub mod proxy;
pub mod server;
pub mod settings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::dcos::config::{ClusterConfig, ConfigSource, SslVerify};
use crate::proxy::service::Shared;
use crate::proxy::upstream::{Upstream, UpstreamError};
use crate::settings::Settings;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another proxy already running there? \
         Pick another address with --listen (127.0.0.1:0 picks a free port)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The upstream (TLS, CA bundle) could not be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// A bound, ready-to-serve proxy.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    settings: Settings,
}

impl Proxy {
    /// Set up the upstream for `cluster` and bind the listen address.
    pub async fn bind(settings: &Settings, cluster: &ClusterConfig) -> Result<Self, StartError> {
        let upstream = Upstream::new(cluster, settings)?;
        let addr = settings.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        announce(cluster, &upstream);
        let shared = Shared::new(
            upstream,
            settings.client_auth,
            settings.response_timeout,
            server::host_value(local_addr),
        );
        Ok(Self {
            listener,
            local_addr,
            shared: Arc::new(shared),
            settings: settings.clone(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until `shutdown` resolves, then let in-flight requests finish within the
    /// grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(listen = %self.local_addr, "proxy ready");
        server::serve(
            self.listener,
            self.shared,
            self.settings.header_read_timeout,
            self.settings.shutdown_grace,
            shutdown,
        )
        .await;
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
    if cluster.ssl_verify == SslVerify::Insecure {
        tracing::warn!(
            master = %upstream.url,
            "TLS verification is off (core.ssl_verify = false): anyone on the path to the \
             master can read your token; set core.ssl_verify to the cluster CA (dcos_ca.crt)"
        );
    }
}
