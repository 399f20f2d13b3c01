//! dcos-token-proxy: a localhost reverse proxy that authenticates every request to a
//! DC/OS cluster with the DC/OS CLI's current token.
//!
//! Where things are (the modules form no import cycle; the README has the map):
//! - [`cli`], [`settings`] and [`types`]: the proxy's own settings (defaults < file < env
//!   < flags), validated once;
//! - [`dcos`]: the DC/OS CLI's config files and the token (their formats);
//! - [`source`]: where the current credentials come from, and how they stay fresh;
//! - [`proxy`]: what happens to a request, as a tower stack ([`proxy::stack`]);
//! - [`guard`]: which requests may use the proxy at all ([`census`]: which of the fields
//!   the rules look at a header map holds, in one pass);
//! - [`upstream`]: the master: its pooled client, TLS and origin;
//! - [`listener`] and [`server`]: listening (TCP or a Unix socket), connections, limits
//!   and graceful shutdown ([`spread`]: connections spread evenly over the threads);
//! - [`admin`] and [`metrics`]: the admin listener (health, readiness, metrics,
//!   quitquitquit) and the lock-free counters behind `/metrics`.
//!
//! [`Proxy`] is the in-process entry point used by `main` and by the integration tests:
//! [`Proxy::bind`] (or [`Proxy::bind_waiting`]), optionally [`Proxy::follow`], then
//! [`Proxy::serve`].

pub mod admin;
pub mod census;
pub mod cli;
pub mod dcos;
pub mod env;
pub mod fdlimit;
pub(crate) mod files;
pub mod framing;
pub mod guard;
mod h1;
pub mod head_timeout;
pub(crate) mod host;
pub(crate) mod listener;
pub mod logging;
pub mod metrics;
pub mod proxy;
mod send_timeout;
pub mod server;
pub mod settings;
pub mod source;
pub mod spread;
mod text;
pub mod types;
pub mod upstream;
mod write_through;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::admin::{Admin, AdminError, AdminState};
use crate::dcos::config::{ClusterConfig, ConfigError};
use crate::guard::Guard;
use crate::host::resolves_to_self;
use crate::listener::{Listener, UnixSocketError};
use crate::metrics::{Metrics, Scrape};
use crate::proxy::stack::{self, StackConfig};
use crate::settings::Settings;
use crate::source::credential::Credential;
use crate::source::login::{Login, LoginCredential};
use crate::source::refresh::{LoginStats, Refresher, TokenPublisher};
use crate::source::token_file::TokenFile;
use crate::source::watch::{Follow, Tracker};
use crate::source::{Change, Published, RereadRequests, Snapshot, announce};
use crate::types::ListenAddr;
use crate::upstream::{Upstream, UpstreamError};

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
    /// The master URL is the proxy's own address: every request would loop. The
    /// message names where the URL came from and the fix for that source.
    #[error("{message}")]
    Loop {
        /// The whole message (see [`source::loop_message`]).
        message: String,
    },
    /// The Unix socket could not be created.
    #[error(transparent)]
    Unix(#[from] UnixSocketError),
    /// The upstream (TLS, CA bundle) could not be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The admin listener could not be bound.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// A credential source that runs beside the proxy instead of the config tracker.
#[derive(Debug)]
enum Runner {
    /// Logs in and keeps the token fresh.
    Login(Box<Refresher<Login>>),
    /// Follows a token file.
    TokenFile(Box<TokenFile>),
}

/// A bound, ready-to-serve proxy.
#[derive(Debug)]
pub struct Proxy {
    listener: Listener,
    /// The TCP address actually bound; `None` on a Unix socket.
    local_addr: Option<SocketAddr>,
    /// What the request path is built from when serving starts.
    stack: StackConfig,
    published: Arc<Published>,
    rereads: RereadRequests,
    settings: Settings,
    /// The config behind the first snapshot (`None` while waiting for one).
    initial: Option<ClusterConfig>,
    tracker: Option<Tracker>,
    /// A login or token-file source (sidecar mode), instead of `tracker`.
    runner: Option<Runner>,
    /// The request path's counters.
    metrics: Arc<Metrics>,
    /// Login counters (zero without a login source).
    logins: Arc<LoginStats>,
    /// The bound admin listener, with `--admin-listen`.
    admin: Option<Admin>,
}

impl Proxy {
    /// Set up the upstream for `cluster` and bind the listen address.
    pub async fn bind(settings: &Settings, cluster: &ClusterConfig) -> Result<Self, StartError> {
        let upstream = Upstream::new(cluster, &settings.client_options())?;
        let master = Some(&cluster.dcos_url);
        let proxy = Self::bind_with(settings, Some(cluster), master, |local_addr, loops| {
            if let Some(local_addr) = local_addr
                && loops
            {
                return Err(StartError::Loop {
                    message: source::loop_message(cluster, local_addr),
                });
            }
            announce(cluster, &upstream, Change::First);
            Ok(Snapshot::Ready(upstream))
        })
        .await?;
        Ok(proxy)
    }

    /// Bind the listen address for `cluster`'s master with the token coming from
    /// `credential` (a login that refreshes itself, or a token file) instead of the DC/OS
    /// CLI config. Until the first token arrives, requests get 503 with the reason.
    pub async fn bind_credential(
        settings: &Settings,
        cluster: &ClusterConfig,
        credential: Credential,
    ) -> Result<Self, StartError> {
        let described = credential.describe();
        let master = Some(&cluster.dcos_url);
        let mut proxy = Self::bind_with(settings, None, master, |local_addr, loops| {
            if let Some(local_addr) = local_addr
                && loops
            {
                return Err(StartError::Loop {
                    message: source::loop_message(cluster, local_addr),
                });
            }
            Ok(Snapshot::Waiting(
                format!("no token yet: getting one from {described}").into(),
            ))
        })
        .await?;
        let publisher =
            TokenPublisher::new(proxy.published.clone(), cluster, &settings.client_options())?;
        tracing::info!(
            master = %cluster.dcos_url,
            credentials = %described,
            "using DC/OS cluster with credentials from {described}"
        );
        proxy.runner = Some(match LoginCredential::of(&credential) {
            Some(login) => {
                let endpoint = login.endpoint(&cluster.dcos_url);
                let login = Login::new(login, endpoint, publisher.client().clone());
                Runner::Login(Box::new(Refresher::new(
                    login,
                    publisher,
                    proxy.logins.clone(),
                )))
            }
            None => match credential {
                Credential::TokenFile(path) => {
                    Runner::TokenFile(Box::new(TokenFile::start(path, publisher)))
                }
                // LoginCredential::of covers every other kind.
                _ => return Ok(proxy),
            },
        });
        Ok(proxy)
    }

    /// Bind the listen address with no cluster set up yet (`why` says what is missing
    /// and how to fix it): requests get 503 until [`Proxy::follow`] finds a config.
    pub async fn bind_waiting(settings: &Settings, why: &ConfigError) -> Result<Self, StartError> {
        Self::bind_with(settings, None, None, |_, _| {
            tracing::warn!("{why}; waiting for it (requests get 503 until then)");
            Ok(Snapshot::Waiting(why.to_string().into()))
        })
        .await
    }

    /// Bind, and call `first` with the bound TCP address and whether `master` (the
    /// master URL, when known) leads back to it.
    async fn bind_with(
        settings: &Settings,
        initial: Option<&ClusterConfig>,
        master: Option<&http::Uri>,
        first: impl FnOnce(Option<SocketAddr>, bool) -> Result<Snapshot, StartError>,
    ) -> Result<Self, StartError> {
        let (listener, local_addr) = match &settings.listen {
            ListenAddr::Tcp(addr) => {
                let addr = *addr;
                let listener = crate::listener::bind_tcp(addr)
                    .map_err(|error| StartError::Bind { addr, error })?;
                let local = listener
                    .local_addr()
                    .map_err(|error| StartError::Bind { addr, error })?;
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
        let admin = match settings.admin_listen {
            Some(addr) => Some(Admin::bind(addr).await?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        // Whether the master URL leads back to the address just bound, by the addresses
        // its host resolves to (aliases such as 127.1 or 0.0.0.0 included).
        let loops = match (master, local_addr) {
            (Some(url), Some(addr)) => resolves_to_self(url, addr).await,
            _ => false,
        };
        let (published, rereads) = Published::new(first(local_addr, loops)?);
        let published = Arc::new(published);
        if let Some(addr) = local_addr.filter(|_| !settings.listen.is_local()) {
            let hosts: Vec<String> = settings
                .policy
                .allowed_hosts
                .iter()
                .map(ToString::to_string)
                .collect();
            tracing::warn!(
                listen = %addr,
                allowed_hosts = %hosts.join(","),
                "listening beyond loopback (--allow-remote): anyone who can reach this address \
                 acts as you on the cluster; clients must use a host name in allowed_hosts"
            );
        }
        let fallback_host = match local_addr {
            Some(a) => server::host_value(a),
            None => http::HeaderValue::from_static("localhost"),
        };
        let stack = StackConfig {
            source: published.clone(),
            guard: Guard::new(&settings.policy, local_addr.map(|a| a.port())),
            client_auth: settings.client_auth,
            response_timeout: settings.response_timeout,
            fallback_host,
            metrics: metrics.clone(),
        };
        Ok(Self {
            listener,
            local_addr,
            stack,
            published,
            rereads,
            settings: settings.clone(),
            initial: initial.cloned(),
            tracker: None,
            runner: None,
            metrics,
            logins: Arc::default(),
            admin,
        })
    }

    /// Follow the DC/OS CLI config from now on: new logins, cluster switches and new
    /// clusters take effect without a restart. The file watches are in place when this
    /// returns.
    pub fn follow(mut self, follow: Follow) -> Self {
        self.tracker = Some(Tracker::start(
            self.published.clone(),
            &self.settings,
            follow,
            self.local_addr,
            self.initial.take(),
        ));
        self
    }

    /// The published snapshots: the current one, and a way to wait for the next (for
    /// tests and monitoring).
    pub fn source(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// The admin listener's address, with `--admin-listen`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
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
        // Without a tracker or runner, `rereads` is dropped here and a 401 is passed
        // straight on.
        let follower = match (self.tracker, self.runner) {
            (Some(t), _) => Some(tokio::spawn(t.run(self.rereads))),
            (None, Some(Runner::Login(r))) => Some(tokio::spawn((*r).run(self.rereads))),
            (None, Some(Runner::TokenFile(f))) => Some(tokio::spawn((*f).run(self.rereads))),
            (None, None) => None,
        }
        .map(AbortOnDrop);
        // The admin listener runs until the process ends; `/quitquitquit` ends serving
        // like a signal does, and `/readyz` says "draining" from then on.
        let state = Arc::new(AdminState::new(Scrape {
            metrics: self.metrics.clone(),
            source: self.published.clone(),
            logins: self.logins.clone(),
        }));
        let admin = self
            .admin
            .map(|a| AbortOnDrop(tokio::spawn(a.serve(state.clone()))));
        let quit = state.quit.clone();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                () = quit.notified() => {}
            }
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let limits = server::Limits {
            header_read_timeout: self.settings.header_read_timeout,
            max_header_bytes: self.settings.max_header_bytes,
            max_connections: self.settings.max_connections,
            grace: self.settings.shutdown_grace,
            body_idle_timeout: self.settings.body_idle_timeout,
            body_min_rate: self.settings.body_min_rate,
            send_timeout: self.settings.send_timeout,
            max_tunnels: self.settings.max_tunnels,
            worker_threads: self.settings.worker_threads,
            tunnel_idle_timeout: self.settings.tunnel_idle_timeout,
        };
        // Built once; the server owns the drain signal and gives tunnels their handle.
        let config = self.stack;
        let build = move |tunnels| stack::build(config, tunnels);
        server::serve(self.listener, build, limits, self.metrics, shutdown).await;
        drop(follower);
        drop(admin);
    }
}

/// Stops a background task when dropped (also when `serve` itself is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
