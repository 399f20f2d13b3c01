//! The master as seen from the request path: one immutable [`Upstream`] per cluster
//! config, holding the pooled HTTP(S) client, the target URL parts, the ready-made
//! `Host` and `Authorization` values, and what the token says about itself.
//!
//! A new config that keeps the master URL and TLS settings (the usual token rotation)
//! gets a new [`Upstream`] that shares the old one's pooled client
//! ([`Upstream::next`]); only a change of master or TLS builds a new client.
//!
//! TLS is set up in the `tls` module; `Location` rewriting uses the master's [`origin`].
//! How bytes reach the master (directly, an HTTP or SOCKS5 proxy, or a command) is the
//! [`route`]; the route settings are part of [`ClientOptions`], so changing them builds a
//! new client.
//! [`Upstream::new`] takes only what it reads: the cluster config and the
//! [`ClientOptions`] of the connection pool.

pub mod command;
pub mod idle;
mod lean;
pub mod origin;
pub mod pool;
pub mod route;
pub(crate) mod tls;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};
use http_body_util::{Either, Full};
use hyper_rustls::FixedServerNameResolver;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use self::idle::{BodyCut, ClientBody, IdleBody};
pub use self::lean::Error as LeanError;
pub use self::origin::MasterOrigin;
pub use self::pool::{Pool, SendError, UpstreamBody};
use self::route::RouteConnector;
pub use self::route::{Route, RouteOptions};
use self::tls::{TlsKey, tls_config};
use crate::dcos::config::{ClusterConfig, Origins, ValueSource};
use crate::dcos::token::{Claims, ClaimsError};

/// How long an idle pooled connection to the master is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long to wait for a TCP connection to the master before answering 502.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper's read-buffer limit on connections to the master, which is also the largest
/// frame of a response body passed on to the client (hyper's default is 408 KiB). hyper
/// grows the buffer only while reads fill it, so small responses keep small buffers; a
/// streaming download holds at most this much per connection.
///
/// Measured on 2 shared cores, a 1 GiB download from nginx through the proxy to curl,
/// 3 downloads per run, alternating runs (`perf stat` on the proxy; system calls do not
/// depend on the machine's load): with 408 KiB, 8,173 and 7,895 system calls per GiB
/// (2,798 and 2,703 `recvfrom`); with 1 MiB, 4,235 and 4,258 (1,052 and 1,141
/// `recvfrom`), for about 4 MiB more peak RSS (9–10.5 MiB to 14–15 MiB). CPU time per
/// GiB moved too little to tell apart from the machine's noise (630, 553, 600 ms against
/// 640, 533, 486 ms). Before thread-per-core, the same change also halved the context
/// switches per GiB (about 6,000 to 3,300–4,300). A larger `SO_RCVBUF` (4 MiB) on the
/// same connection changed nothing measurable, and a fixed 64 KiB read size
/// (`http1_read_buf_exact_size`) cost 45 % more CPU, so neither is set.
pub const UPSTREAM_MAX_BUF_SIZE: usize = 1024 * 1024;

/// The request body sent to the master: the client's body (`B`: [`ClientBody`], hyper's
/// [`Incoming`](hyper::body::Incoming) or none, under an idle limit, [`IdleBody`], in the proxy) streamed as it arrives, or (when the
/// request may be replayed after a 401) the same bytes held in memory.
pub type RequestBody<B = IdleBody<ClientBody>> = Either<Full<Bytes>, B>;

/// The pooled client type used for every upstream request.
pub type HttpsClient = Client<HttpsConnector<RouteConnector>, RequestBody>;

/// The connector every client of one [`Upstream`] shares (TLS set-up and route).
type Connector = HttpsConnector<RouteConnector>;

/// The connections to one master: the request path's own keep-alive [`Pool`], and
/// hyper-util's pooled client for the few requests the proxy makes itself (a login, the
/// `doctor` command's checks), made on first use. Cloning shares both.
#[derive(Clone)]
pub struct Clients(Arc<ClientSet>);

struct ClientSet {
    connector: Connector,
    pool_idle_timeout: Duration,
    pool: Arc<Pool>,
    own: OnceLock<HttpsClient>,
}

impl Clients {
    fn new(connector: Connector, origin: Uri, pool_idle_timeout: Duration) -> Self {
        let pool = Arc::new(Pool::new(connector.clone(), origin, pool_idle_timeout));
        Self(Arc::new(ClientSet {
            connector,
            pool_idle_timeout,
            pool,
            own: OnceLock::new(),
        }))
    }

    /// The pooled client for the proxy's own requests (absolute-form targets).
    pub fn get(&self) -> &HttpsClient {
        let set = &*self.0;
        set.own.get_or_init(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(set.pool_idle_timeout)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http1_max_buf_size(UPSTREAM_MAX_BUF_SIZE)
                .build(set.connector.clone())
        })
    }

    /// The request path's pool (origin-form targets).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.0.pool
    }
}

/// How connections to the master are made and pooled: the part of the settings that an
/// [`Upstream`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Proxy, proxy command and TLS server name.
    pub route: RouteOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            route: RouteOptions::default(),
        }
    }
}

/// Why the upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The CA bundle named by `core.ssl_verify` could not be read.
    #[error(
        "cannot read the CA bundle {path} named by core.ssl_verify: {error}; \
         fix the path, or run `dcos cluster setup` again to fetch dcos_ca.crt"
    )]
    CaRead {
        /// The bundle path.
        path: PathBuf,
        /// The I/O error (part of the message, not repeated as `source()`).
        error: std::io::Error,
    },
    /// The CA bundle holds no usable certificate.
    #[error(
        "the CA bundle {path} named by core.ssl_verify holds no PEM certificate \
         (-----BEGIN CERTIFICATE-----); point it at the cluster's dcos_ca.crt"
    )]
    CaEmpty {
        /// The bundle path.
        path: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The master URL cannot be used as an upstream (discovery normally rules this out).
    #[error(
        "the master URL {url} cannot be used: {why}; set core.dcos_url (or --upstream) to https://<master>"
    )]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Everything the request path needs to reach one master. Built once per config
/// change; requests only read it.
pub struct Upstream {
    /// `dcos_url` as text, for messages.
    pub url: String,
    /// `cluster.name`, for messages.
    pub cluster: Option<String>,
    /// The token's claims: `None` when not logged in, an error when the token is not a
    /// readable JWT (it is still sent; the master decides).
    pub claims: Option<Result<Claims, ClaimsError>>,
    tls: TlsKey,
    /// What the client was built from (with `tls` and the URL: whether it can be kept).
    options: ClientOptions,
    /// How connections reach the master (for the startup line).
    pub route: Route,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix of `dcos_url` without a trailing slash; usually empty.
    prefix: String,
    /// `Host` for upstream requests: the master's authority.
    pub host: HeaderValue,
    /// `token=<jwt>`, or `None` when not logged in.
    pub auth: Option<HeaderValue>,
    /// Whether a re-read of the token's source can bring a different token for this
    /// master, and so a request refused with 401 can be worth sending again. False when
    /// the token comes from `DCOS_ACS_TOKEN`: the environment is read once and beats
    /// the config file's token, so every re-read finds the same one. Requests then keep
    /// no replay copy ([`crate::proxy::layer::prepare`]).
    pub renewable: bool,
    /// Where the master URL and the token came from, for hints.
    pub origins: Origins,
    /// For `Location` rewriting.
    pub origin: MasterOrigin,
    /// The pooled keep-alive clients, one per serving thread.
    pub clients: Clients,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("logged_in", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Build the upstream for `cluster`: TLS config, connector and pool.
    pub fn new(cluster: &ClusterConfig, options: &ClientOptions) -> Result<Self, UpstreamError> {
        Self::build(cluster, options, TlsKey::of(cluster)?, None)
    }

    /// The upstream for a changed `cluster`: it shares this one's pooled client when the
    /// master URL and the TLS set-up (CA bundle bytes included) are unchanged, and gets a
    /// new client otherwise.
    pub fn next(
        &self,
        cluster: &ClusterConfig,
        options: &ClientOptions,
    ) -> Result<Self, UpstreamError> {
        let tls = TlsKey::of(cluster)?;
        let same =
            tls == self.tls && url_text(&cluster.dcos_url) == self.url && *options == self.options;
        let client = same.then(|| self.clients.clone());
        Self::build(cluster, options, tls, client)
    }

    /// Whether `other` was built with this upstream's client (no reconnect, no new TLS).
    pub fn shares_client_with(&self, other: &Upstream) -> bool {
        self.url == other.url && self.tls == other.tls && self.options == other.options
    }

    fn build(
        cluster: &ClusterConfig,
        options: &ClientOptions,
        tls: TlsKey,
        client: Option<Clients>,
    ) -> Result<Self, UpstreamError> {
        let uri = &cluster.dcos_url;
        let bad = |why| UpstreamError::Url {
            url: uri.to_string(),
            why,
        };
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS || *s == Scheme::HTTP => s.clone(),
            _ => return Err(bad("the scheme must be http or https")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("it has no host"))?;
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad("its host is not a valid Host header"))?;

        let route = options.route.route_for(uri);
        let client = match client {
            Some(c) => c,
            None => new_client(&tls, options, &route, origin_uri(&scheme, &authority)?)?,
        };
        Ok(Self {
            url: url_text(uri),
            cluster: cluster.name.clone(),
            claims: cluster.token.as_ref().map(|t| t.claims()),
            tls,
            options: options.clone(),
            route,
            origin: MasterOrigin::new(scheme.clone(), &authority, &prefix),
            scheme,
            authority,
            prefix,
            host,
            auth: cluster.token.as_ref().map(|t| t.header_value()),
            renewable: !matches!(cluster.origins.token, Some(ValueSource::Env(_))),
            origins: cluster.origins.clone(),
            clients: client,
        })
    }

    /// The current thread's pooled client for this master.
    pub fn client(&self) -> &HttpsClient {
        self.clients.get()
    }

    /// The request target sent to the master on the request path's own connections
    /// (origin-form): the `dcos_url` prefix, then the client's path and query byte for
    /// byte (`%2F` stays `%2F`). Without a prefix, this is the client's own path and
    /// query, shared rather than copied.
    pub fn origin_form(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        Ok(Uri::from(self.path_and_query(path_and_query)?))
    }

    fn path_and_query(
        &self,
        path_and_query: Option<&PathAndQuery>,
    ) -> Result<PathAndQuery, http::Error> {
        Ok(match (self.prefix.is_empty(), path_and_query) {
            (true, Some(pq)) => pq.clone(),
            (true, None) => PathAndQuery::from_static("/"),
            (false, pq) => {
                let tail = pq.map_or("/", PathAndQuery::as_str);
                let tail = if tail.starts_with('/') { tail } else { "/" };
                PathAndQuery::try_from(format!("{}{}", self.prefix, tail))?
            }
        })
    }

    /// The upstream URI for a client's request target: the master's scheme and
    /// authority, the `dcos_url` prefix, then the client's path and query byte for byte
    /// (`%2F` stays `%2F`).
    pub fn target(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let pq = self.path_and_query(path_and_query)?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// What the connectors dial for a master: `scheme://authority/`.
fn origin_uri(scheme: &Scheme, authority: &Authority) -> Result<Uri, UpstreamError> {
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|_| UpstreamError::Url {
            url: format!("{scheme}://{authority}"),
            why: "its scheme and host do not make a URL",
        })
}

/// `dcos_url` as text without a trailing slash, for messages and comparisons.
fn url_text(uri: &Uri) -> String {
    uri.to_string().trim_end_matches('/').to_owned()
}

/// Pooled keep-alive clients with the TLS set-up `tls`, connecting along `route`.
fn new_client(
    tls: &TlsKey,
    options: &ClientOptions,
    route: &Route,
    origin: Uri,
) -> Result<Clients, UpstreamError> {
    let tls = tls_config(tls)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.connect_timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &options.route.tls_server_name {
        Some(name) => {
            builder.with_server_name_resolver(FixedServerNameResolver::new(name.server_name()))
        }
        None => builder,
    };
    let https = builder.enable_http1().wrap_connector(route.connector(http));
    Ok(Clients::new(https, origin, options.pool_idle_timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcos::config::{ConfigSource, SslVerify};

    /// A cluster config for `url` with no token (the pool's tests use it too).
    pub(super) fn cluster(url: &str) -> ClusterConfig {
        ClusterConfig {
            source: ConfigSource::EnvOnly,
            dcos_dir: std::env::temp_dir(),
            name: None,
            dcos_url: url.parse().unwrap(),
            token: None,
            ssl_verify: SslVerify::System,
            timeout: None,
            origins: Default::default(),
        }
    }

    #[test]
    fn targets_keep_bytes_and_go_under_the_prefix() {
        let options = ClientOptions::default();
        let up = Upstream::new(&cluster("https://m.example:8443"), &options).unwrap();
        let pq = PathAndQuery::from_static("/a%2Fb?c=%2F");
        assert_eq!(
            up.target(Some(&pq)).unwrap(),
            "https://m.example:8443/a%2Fb?c=%2F"
        );
        assert_eq!(up.host, "m.example:8443");

        let up = Upstream::new(&cluster("http://m.example/dcos/"), &options).unwrap();
        assert_eq!(
            up.target(Some(&pq)).unwrap(),
            "http://m.example/dcos/a%2Fb?c=%2F"
        );
        assert_eq!(up.target(None).unwrap(), "http://m.example/dcos/");
    }

    fn self_signed_pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_token_change_keeps_the_pool_and_a_master_or_tls_change_does_not() {
        use crate::dcos::token::Token;
        let options = ClientOptions::default();
        let mut c = cluster("https://m.example");
        c.ssl_verify = SslVerify::Insecure;
        c.token = Some(Token::new("a.b.c").unwrap());
        let up = Upstream::new(&c, &options).unwrap();

        c.token = Some(Token::new("d.e.f").unwrap());
        let rotated = up.next(&c, &options).unwrap();
        assert!(rotated.shares_client_with(&up));
        assert_ne!(rotated.auth, up.auth);
        assert_eq!(rotated.auth.as_ref().unwrap(), "token=d.e.f");

        let mut moved = c.clone();
        moved.dcos_url = "https://other.example".parse().unwrap();
        assert!(!up.next(&moved, &options).unwrap().shares_client_with(&up));

        // A CA bundle: the same bytes keep the pool, new bytes at the same path do not.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("dcos_ca.crt");
        std::fs::write(&ca, self_signed_pem("one")).unwrap();
        let mut bundled = c.clone();
        bundled.ssl_verify = SslVerify::CaBundle(ca.clone());
        let with_ca = up.next(&bundled, &options).unwrap();
        assert!(!with_ca.shares_client_with(&up), "TLS mode changed");
        assert!(
            with_ca
                .next(&bundled, &options)
                .unwrap()
                .shares_client_with(&with_ca)
        );
        std::fs::write(&ca, self_signed_pem("two")).unwrap();
        assert!(
            !with_ca
                .next(&bundled, &options)
                .unwrap()
                .shares_client_with(&with_ca)
        );
        // A bundle that went missing is an error (the caller keeps the last good one).
        std::fs::remove_file(&ca).unwrap();
        assert!(matches!(
            with_ca.next(&bundled, &options),
            Err(UpstreamError::CaRead { .. })
        ));
    }

    #[test]
    fn a_route_change_builds_a_new_pool() {
        use self::route::{RouteInputs, TlsServerName};
        let c = cluster("https://m.example");
        let options = ClientOptions::default();
        let up = Upstream::new(&c, &options).unwrap();
        assert_eq!(up.route.to_string(), "none");
        assert!(up.next(&c, &options).unwrap().shares_client_with(&up));

        let mut named = options.clone();
        named.route.tls_server_name = Some(TlsServerName::new("master.mesos").unwrap());
        assert!(!up.next(&c, &named).unwrap().shares_client_with(&up));

        let mut proxied = options.clone();
        proxied.route = RouteOptions::resolve(RouteInputs::default(), |k| {
            (k == "HTTPS_PROXY").then_some("http://p.example:3128")
        })
        .unwrap();
        let via = up.next(&c, &proxied).unwrap();
        assert!(!via.shares_client_with(&up));
        assert_eq!(via.route.to_string(), "http://p.example:3128");
        assert!(via.next(&c, &proxied).unwrap().shares_client_with(&via));
    }

    #[test]
    fn unusable_urls_are_errors_not_placeholders() {
        let err = Upstream::new(&cluster("/relative/only"), &ClientOptions::default()).unwrap_err();
        assert!(err.to_string().contains("/relative/only"), "{err}");
        assert!(err.to_string().contains("https://<master>"), "{err}");
    }
}
