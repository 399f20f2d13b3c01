//! How bytes reach the master: directly, through an HTTP CONNECT proxy, through a SOCKS5
//! proxy, or through a command's stdin and stdout ([`super::command`]).
//!
//! [`RouteOptions`] is the validated setting (`upstream.proxy` / `--upstream-proxy`, the
//! proxy variables, `upstream.proxy_command`, `upstream.tls_server_name`); [`Route`] is
//! what it means for one master URL, decided when the [`super::Upstream`] is built; and
//! [`RouteConnector`] is the `tower::Service<Uri>` that hyper-rustls wraps, so TLS to the
//! master always runs end to end over whichever route was chosen.
//!
//! The proxy variables are read as curl and Python requests read them: `https_proxy`
//! for an `https://` master, `http_proxy` for an `http://` one, `all_proxy` for either,
//! `no_proxy` to skip the proxy for some hosts, each in lower case first and then in upper
//! case. hyper-util's [`Matcher`] does the matching (`NO_PROXY` domain suffixes, IPs,
//! CIDR ranges, `*`) and its [`Tunnel`] and [`SocksV5`] connectors do the handshakes
//! (RFC 9110 §9.3.6 CONNECT; RFC 1928 SOCKS5 with RFC 1929 user/password).
//!
//! Credentials in a proxy URL (`http://user:pass@proxy:3128`) are sent as
//! `Proxy-Authorization: Basic …` (or as SOCKS5 user/password) and nowhere else: every
//! `Debug` and `Display` here shows the proxy as `scheme://host:port`, and no error
//! message includes them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tower_service::Service;

use super::command::{CommandConnector, CommandStream, ProxyCommand};

/// The port of a proxy URL that names none, as curl assumes.
pub const DEFAULT_PROXY_PORT: u16 = 1080;
/// The `upstream.proxy` value that ignores the proxy variables.
pub const PROXY_NONE: &str = "none";

/// The proxy variables, each in the order curl and Python requests try them.
const VARS_HTTPS: [&str; 2] = ["https_proxy", "HTTPS_PROXY"];
const VARS_HTTP: [&str; 2] = ["http_proxy", "HTTP_PROXY"];
const VARS_ALL: [&str; 2] = ["all_proxy", "ALL_PROXY"];
const VARS_NO: [&str; 2] = ["no_proxy", "NO_PROXY"];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A proxy URL as written, which may hold a password: its `Debug` shows only the scheme,
/// host and port.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct ProxyText(String);

impl ProxyText {
    /// Wrap a value (clap's `value_parser` for `--upstream-proxy`).
    pub fn new(text: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Debug for ProxyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", shown(&self.0))
    }
}

/// A validated proxy URL: the URL as hyper-util's matcher reads it (with the credentials
/// and an explicit port), the setting it came from, and what may be shown of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// `scheme://[user:pass@]host:port`: never shown.
    full: String,
    /// `scheme://host:port`.
    shown: String,
    /// The variable, flag or key it came from (for messages).
    origin: String,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.shown, self.origin)
    }
}

impl ProxyUrl {
    /// Validate `text` from `origin`. Like curl, a URL without a scheme is an HTTP proxy
    /// and one without a port uses [`DEFAULT_PROXY_PORT`]. The error message never
    /// includes the text itself (it may hold a password), only what is wrong with it.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let text = text.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((s, rest)) => (s.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), text),
        };
        match scheme.as_str() {
            "http" | "socks5" | "socks5h" => {}
            "https" => {
                return Err(
                    "https:// proxies (TLS to the proxy itself) are not supported; most \
                     corporate proxies take http://host:port even for https:// sites"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "the proxy scheme {other}:// is not supported; use http://host:port (an \
                     HTTP CONNECT proxy), socks5://host:port or socks5h://host:port"
                ));
            }
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let with_port = |hp: &str| -> Result<(String, String), String> {
            let parsed: http::uri::Authority = hp
                .parse()
                .map_err(|_| "its host and port cannot be read".to_owned())?;
            if parsed.host().is_empty() {
                return Err("it names no host; write scheme://host:port".into());
            }
            let port = parsed.port_u16().unwrap_or(DEFAULT_PROXY_PORT);
            Ok((parsed.host().to_owned(), port.to_string()))
        };
        let (host, port) = with_port(host_port)?;
        let shown = format!("{scheme}://{host}:{port}");
        let full = match userinfo {
            Some(u) => format!("{scheme}://{u}@{host}:{port}"),
            None => shown.clone(),
        };
        if full.parse::<Uri>().is_err() {
            return Err(
                "it is not a valid URL; percent-encode special characters in the user name \
                 and password (@ is %40, : is %3A)"
                    .into(),
            );
        }
        Ok(Self {
            full,
            shown,
            origin: origin.to_owned(),
        })
    }

    /// `scheme://host:port`, without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// Where the proxy to use comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxySetting {
    /// The proxy variables (as read at startup). All `None`: connect directly.
    Env {
        /// `https_proxy` / `HTTPS_PROXY`.
        https: Option<ProxyUrl>,
        /// `http_proxy` / `HTTP_PROXY`.
        http: Option<ProxyUrl>,
        /// `all_proxy` / `ALL_PROXY`.
        all: Option<ProxyUrl>,
        /// `no_proxy` / `NO_PROXY`, as written.
        no: String,
    },
    /// `upstream.proxy = URL`: every master is reached through it.
    Url(ProxyUrl),
    /// `upstream.proxy = "none"`, or no setting and no variables: connect directly.
    #[default]
    None,
}

/// The route settings, validated: part of [`super::ClientOptions`], so a change builds a
/// new connection pool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteOptions {
    /// The proxy (ignored when `command` is set).
    pub proxy: ProxySetting,
    /// A command whose stdin/stdout carry each connection.
    pub command: Option<ProxyCommand>,
    /// Verify the master's certificate against this name, and send it as SNI.
    pub tls_server_name: Option<TlsServerName>,
}

/// A validated `upstream.tls_server_name`: a DNS name or an IP address.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsServerName(ServerName<'static>, String);

impl TlsServerName {
    /// Validate `name`.
    pub fn new(name: &str) -> Result<Self, String> {
        let name = name.trim();
        let trimmed = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        ServerName::try_from(trimmed.to_owned())
            .map(|n| Self(n, trimmed.to_owned()))
            .map_err(|_| {
                "is not a DNS name or IP address; give the name the master's certificate \
                 was issued for, e.g. master.mesos"
                    .to_owned()
            })
    }

    /// The name for rustls.
    pub fn server_name(&self) -> ServerName<'static> {
        self.0.clone()
    }
}

impl fmt::Debug for TlsServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.1)
    }
}

impl fmt::Display for TlsServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.1)
    }
}

/// The raw route inputs, from flags and the settings file (flags first).
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteInputs<'a> {
    /// `--upstream-proxy` / `upstream.proxy`, with where it came from.
    pub proxy: Option<(&'a ProxyText, &'static str)>,
    /// `--proxy-command` / `upstream.proxy_command`, with where it came from.
    pub command: Option<(&'a str, &'static str)>,
    /// `--tls-server-name` / `upstream.tls_server_name`, with where it came from.
    pub tls_server_name: Option<(&'a str, &'static str)>,
}

/// A route setting that cannot be used: where it came from and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettingError {
    /// The flag, key or variable.
    pub origin: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl RouteOptions {
    /// Validate the inputs; the proxy variables come from `var` (the environment map).
    pub fn resolve<'e>(
        inputs: RouteInputs<'_>,
        var: impl Fn(&str) -> Option<&'e str>,
    ) -> Result<Self, RouteSettingError> {
        let bad = |origin: &str, message: String| RouteSettingError {
            origin: origin.to_owned(),
            message,
        };
        let command = match inputs.command {
            Some((text, origin)) => Some(ProxyCommand::new(text).map_err(|m| bad(origin, m))?),
            None => None,
        };
        if let (Some((_, c)), Some((p, o))) = (inputs.command, inputs.proxy)
            && p.0.trim() != PROXY_NONE
        {
            return Err(bad(
                c,
                format!(
                    "cannot be used together with {o}: the command is the whole route to \
                     the master; keep one of them"
                ),
            ));
        }
        let tls_server_name = match inputs.tls_server_name {
            Some((name, origin)) => {
                Some(TlsServerName::new(name).map_err(|m| bad(origin, format!("{name:?} {m}")))?)
            }
            None => None,
        };
        let from_var = |names: [&'static str; 2]| -> Result<Option<ProxyUrl>, RouteSettingError> {
            for name in names {
                if let Some(v) = var(name) {
                    return ProxyUrl::parse(v, name)
                        .map(Some)
                        .map_err(|m| bad(name, format!("{m}; fix it, or pass --upstream-proxy none to ignore the proxy variables")));
                }
            }
            Ok(None)
        };
        let proxy = match inputs.proxy {
            Some((p, _)) if p.0.trim() == PROXY_NONE => ProxySetting::None,
            Some((p, origin)) => ProxySetting::Url(ProxyUrl::parse(&p.0, origin).map_err(|m| {
                bad(
                    origin,
                    format!("{m} (use http://, socks5:// or socks5h://, or {PROXY_NONE})"),
                )
            })?),
            // A command replaces the proxy variables (they describe how to reach the
            // network, which the command now does).
            None if command.is_some() => ProxySetting::None,
            None => {
                let https = from_var(VARS_HTTPS)?;
                let http = from_var(VARS_HTTP)?;
                let all = from_var(VARS_ALL)?;
                let no = VARS_NO
                    .iter()
                    .find_map(|n| var(n))
                    .unwrap_or_default()
                    .to_owned();
                if https.is_none() && http.is_none() && all.is_none() {
                    ProxySetting::None
                } else {
                    ProxySetting::Env {
                        https,
                        http,
                        all,
                        no,
                    }
                }
            }
        };
        Ok(Self {
            proxy,
            command,
            tls_server_name,
        })
    }

    /// The route to the master at `master`.
    pub fn route_for(&self, master: &Uri) -> Route {
        if let Some(c) = &self.command {
            return Route::Command(c.clone());
        }
        let matcher = match &self.proxy {
            ProxySetting::None => return Route::Direct,
            ProxySetting::Url(p) => Matcher::builder().all(p.full.clone()).build(),
            ProxySetting::Env {
                https,
                http,
                all,
                no,
            } => {
                let text =
                    |p: &Option<ProxyUrl>| p.as_ref().map_or(String::new(), |p| p.full.clone());
                Matcher::builder()
                    .https(text(https))
                    .http(text(http))
                    .all(text(all))
                    .no(no.clone())
                    .build()
            }
        };
        let Some(intercept) = matcher.intercept(master) else {
            return Route::Direct;
        };
        let uri = intercept.uri().clone();
        let shown = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str())
        );
        let origin = match &self.proxy {
            ProxySetting::Url(p) => p.origin.clone(),
            ProxySetting::Env {
                https, http, all, ..
            } => {
                let specific = if master.scheme_str() == Some("https") {
                    https
                } else {
                    http
                };
                specific
                    .as_ref()
                    .or(all.as_ref())
                    .map_or_else(String::new, |p| p.origin.clone())
            }
            ProxySetting::None => String::new(),
        };
        let proxy = Proxy {
            shown: shown.into(),
            origin: origin.into(),
        };
        match uri.scheme_str() {
            Some(s @ ("socks5" | "socks5h")) => Route::Socks {
                proxy,
                remote_dns: s == "socks5h",
                uri,
                auth: intercept
                    .raw_auth()
                    .map(|(u, p)| Secret((u.to_owned(), p.to_owned()))),
            },
            _ => Route::Http {
                proxy,
                uri,
                auth: intercept.basic_auth().cloned().map(Secret),
            },
        }
    }
}

/// A credential: never shown.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// A proxy as it may be shown: `scheme://host:port` and the setting it came from.
#[derive(Debug, Clone)]
pub struct Proxy {
    shown: Arc<str>,
    origin: Arc<str>,
}

/// How connections to one master are made.
#[derive(Debug, Clone)]
pub enum Route {
    /// A TCP connection to the master's host and port.
    Direct,
    /// An HTTP CONNECT tunnel through a proxy.
    Http {
        /// The proxy, for messages.
        proxy: Proxy,
        /// The proxy's address (no credentials).
        uri: Uri,
        /// `Basic …` for `Proxy-Authorization`.
        auth: Option<Secret<http::HeaderValue>>,
    },
    /// A SOCKS5 tunnel.
    Socks {
        /// The proxy, for messages.
        proxy: Proxy,
        /// The proxy's address (no credentials).
        uri: Uri,
        /// `socks5h://`: the proxy resolves the master's name.
        remote_dns: bool,
        /// User and password (RFC 1929).
        auth: Option<Secret<(String, String)>>,
    },
    /// A command's stdin and stdout.
    Command(ProxyCommand),
}

impl fmt::Display for Route {
    /// `none`, the proxy's `scheme://host:port`, or `command "…"`: for the startup line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("none"),
            Route::Http { proxy, .. } | Route::Socks { proxy, .. } => f.write_str(&proxy.shown),
            Route::Command(c) => write!(f, "command {:?}", c.text()),
        }
    }
}

impl Route {
    /// The connector for this route; `http` is the configured TCP connector (used to
    /// reach the master or the proxy).
    pub(crate) fn connector(&self, http: HttpConnector) -> RouteConnector {
        match self {
            Route::Direct => RouteConnector::Direct(http),
            Route::Http { proxy, uri, auth } => {
                let mut tunnel = Tunnel::new(uri.clone(), http);
                if let Some(Secret(a)) = auth {
                    tunnel = tunnel.with_auth(a.clone());
                }
                RouteConnector::Http {
                    tunnel,
                    proxy: proxy.clone(),
                    with_auth: auth.is_some(),
                }
            }
            Route::Socks {
                proxy,
                uri,
                remote_dns,
                auth,
            } => {
                let mut socks = SocksV5::new(uri.clone(), http).local_dns(!remote_dns);
                if let Some(Secret((u, p))) = auth {
                    socks = socks.with_auth(u.clone(), p.clone());
                }
                RouteConnector::Socks {
                    socks,
                    proxy: proxy.clone(),
                }
            }
            Route::Command(c) => RouteConnector::Command(CommandConnector::new(c.clone())),
        }
    }
}

/// Why a connection to the master could not be made along its route. Messages name the
/// proxy as `scheme://host:port` and the setting it came from, never its credentials.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A direct connection failed (the cause is the TCP connector's error).
    #[error(transparent)]
    Direct(BoxError),
    /// The proxy itself could not be reached.
    #[error(
        "cannot connect to the proxy {proxy} (from {origin}): {cause}; is it running, and \
         is {origin} right?"
    )]
    ProxyUnreachable {
        /// The proxy.
        proxy: Arc<str>,
        /// Where it was set.
        origin: Arc<str>,
        /// The TCP error.
        cause: String,
    },
    /// The HTTP proxy answered 407.
    #[error(
        "the HTTP proxy {proxy} (from {origin}) wants credentials (407 Proxy Authentication \
         Required){}",
        if *.had_credentials {
            "; it did not accept the ones given: fix the user:password@ part of the proxy URL"
        } else {
            "; put them in the proxy URL: http://user:password@host:port \
             (percent-encode @ and : in them)"
        }
    )]
    ProxyAuth {
        /// The proxy.
        proxy: Arc<str>,
        /// Where it was set.
        origin: Arc<str>,
        /// Credentials were sent.
        had_credentials: bool,
    },
    /// The HTTP proxy answered CONNECT with something other than 200 or 407.
    #[error(
        "the HTTP proxy {proxy} (from {origin}) refused to CONNECT to {target}: ask its \
         administrators to allow it, or, if the master can be reached without the proxy, \
         add its host to NO_PROXY (or pass --upstream-proxy none)"
    )]
    ProxyRefused {
        /// The proxy.
        proxy: Arc<str>,
        /// Where it was set.
        origin: Arc<str>,
        /// `host:port` of the master.
        target: String,
    },
    /// The HTTP proxy broke the CONNECT exchange.
    #[error(
        "the HTTP proxy {proxy} (from {origin}) broke off the CONNECT to {target} ({cause}); \
         is it an HTTP proxy? (a SOCKS proxy needs socks5:// or socks5h://)"
    )]
    ProxyBroken {
        /// The proxy.
        proxy: Arc<str>,
        /// Where it was set.
        origin: Arc<str>,
        /// `host:port` of the master.
        target: String,
        /// What happened.
        cause: String,
    },
    /// The SOCKS5 handshake failed.
    #[error(
        "the SOCKS5 proxy {proxy} (from {origin}) could not connect to {target} ({cause}); \
         check that the tunnel (ssh -D) is up and can reach the master"
    )]
    Socks {
        /// The proxy.
        proxy: Arc<str>,
        /// Where it was set.
        origin: Arc<str>,
        /// `host:port` of the master.
        target: String,
        /// The SOCKS error.
        cause: String,
    },
    /// The SOCKS5 proxy refused the login (or wants one).
    #[error(
        "the SOCKS5 proxy {proxy} (from {origin}) did not accept the login ({cause}); fix \
         the user:password@ part of the proxy URL"
    )]
    SocksAuth {
        /// The proxy.
        proxy: Arc<str>,
        /// Where it was set.
        origin: Arc<str>,
        /// The SOCKS error.
        cause: String,
    },
    /// The proxy command could not be run at all.
    #[error(
        "the proxy command {command:?} could not start ({error}); check \
         upstream.proxy_command (--proxy-command)"
    )]
    CommandSpawn {
        /// The command as configured.
        command: String,
        /// The spawn error.
        error: std::io::Error,
    },
}

/// Connects along a [`Route`]; wrapped by hyper-rustls, which adds TLS to the master.
#[derive(Clone)]
pub enum RouteConnector {
    /// Straight to the master.
    Direct(HttpConnector),
    /// An HTTP CONNECT tunnel.
    Http {
        /// hyper-util's CONNECT connector.
        tunnel: Tunnel<HttpConnector>,
        /// For messages.
        proxy: Proxy,
        /// Credentials are sent.
        with_auth: bool,
    },
    /// A SOCKS5 tunnel.
    Socks {
        /// hyper-util's SOCKS5 connector (its `Debug` would show the password).
        socks: SocksV5<HttpConnector>,
        /// For messages.
        proxy: Proxy,
    },
    /// A command per connection.
    Command(CommandConnector),
}

impl fmt::Debug for RouteConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, shown) = match self {
            Self::Direct(_) => ("direct", ""),
            Self::Http { proxy, .. } => ("http", &*proxy.shown),
            Self::Socks { proxy, .. } => ("socks5", &*proxy.shown),
            Self::Command(_) => ("command", ""),
        };
        write!(f, "RouteConnector({kind} {shown})")
    }
}

/// hyper-util's CONNECT error (its type is not exported; its variants can be matched
/// through this alias).
type TunnelError = <Tunnel<HttpConnector> as Service<Uri>>::Error;
/// hyper-util's SOCKS error, likewise.
type SocksError = <SocksV5<HttpConnector> as Service<Uri>>::Error;

impl Service<Uri> for RouteConnector {
    type Response = RouteStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<RouteStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // All three TCP-based connectors are always ready (HttpConnector is).
        match self {
            Self::Direct(h) => h.poll_ready(cx).map_err(|e| ConnectError::Direct(e.into())),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let target = target_of(&dst);
        match self {
            Self::Direct(h) => {
                let fut = h.call(dst);
                Box::pin(async move {
                    fut.await
                        .map(RouteStream::Tcp)
                        .map_err(|e| ConnectError::Direct(e.into()))
                })
            }
            Self::Http {
                tunnel,
                proxy,
                with_auth,
            } => {
                let fut = tunnel.call(dst);
                let (proxy, with_auth) = (proxy.clone(), *with_auth);
                Box::pin(async move {
                    fut.await
                        .map(RouteStream::Tcp)
                        .map_err(|e| tunnel_error(e, proxy, with_auth, target))
                })
            }
            Self::Socks { socks, proxy } => {
                let fut = socks.call(dst);
                let proxy = proxy.clone();
                Box::pin(async move {
                    fut.await
                        .map(RouteStream::Tcp)
                        .map_err(|e| socks_error(e, proxy, target))
                })
            }
            Self::Command(c) => {
                let fut = c.call(dst);
                Box::pin(async move { fut.await.map(|s| RouteStream::Command(TokioIo::new(s))) })
            }
        }
    }
}

/// `host:port` of a destination, for messages.
fn target_of(dst: &Uri) -> String {
    let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    format!("{}:{port}", dst.host().unwrap_or_default())
}

/// hyper-util's CONNECT error as ours.
fn tunnel_error(e: TunnelError, proxy: Proxy, with_auth: bool, target: String) -> ConnectError {
    let Proxy { shown, origin } = proxy;
    match e {
        TunnelError::ProxyAuthRequired => ConnectError::ProxyAuth {
            proxy: shown,
            origin,
            had_credentials: with_auth,
        },
        TunnelError::ConnectFailed(inner) => ConnectError::ProxyUnreachable {
            proxy: shown,
            origin,
            cause: io_cause(&*inner),
        },
        TunnelError::TunnelUnsuccessful => ConnectError::ProxyRefused {
            proxy: shown,
            origin,
            target,
        },
        other => ConnectError::ProxyBroken {
            proxy: shown,
            origin,
            target,
            cause: match &other {
                TunnelError::Io(io) => io_cause(io),
                _ => other
                    .to_string()
                    .trim_start_matches("tunnel error: ")
                    .to_owned(),
            },
        },
    }
}

/// hyper-util's SOCKS error as ours.
fn socks_error(e: SocksError, proxy: Proxy, target: String) -> ConnectError {
    let Proxy { shown, origin } = proxy;
    match e {
        SocksError::Inner(inner) => ConnectError::ProxyUnreachable {
            proxy: shown,
            origin,
            cause: io_cause(&inner),
        },
        SocksError::Io(io) => ConnectError::Socks {
            proxy: shown,
            origin,
            target,
            cause: io_cause(&io),
        },
        // Authentication failures (method refused, or credentials rejected) get their
        // own advice; hyper-util's type for them is private, so its Debug tells them.
        SocksError::V5(v5) if format!("{v5:?}").starts_with("Auth(") => ConnectError::SocksAuth {
            proxy: shown,
            origin,
            cause: v5.to_string(),
        },
        other => ConnectError::Socks {
            proxy: shown,
            origin,
            target,
            cause: other
                .to_string()
                .trim_start_matches("SOCKS error: ")
                .to_owned(),
        },
    }
}

/// The innermost cause of `e`, in words.
fn io_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut next = Some(e);
    let mut last = e.to_string();
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => {
                    "connection timed out (upstream.connect_timeout)".into()
                }
                _ => io.to_string(),
            };
        }
        last = err.to_string();
        next = err.source();
    }
    last
}

/// A connection along a route: a TCP stream (direct or tunnelled) or a command's stdio.
#[derive(Debug)]
pub enum RouteStream {
    /// TCP to the master or to a proxy that tunnels to it.
    Tcp(TokioIo<TcpStream>),
    /// A proxy command's stdin and stdout.
    Command(TokioIo<CommandStream>),
}

impl Connection for RouteStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Tcp(t) => t.connected(),
            Self::Command(_) => Connected::new(),
        }
    }
}

impl Read for RouteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(t) => Pin::new(t).poll_read(cx, buf),
            Self::Command(c) => Pin::new(c).poll_read(cx, buf),
        }
    }
}

impl Write for RouteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(t) => Pin::new(t).poll_write(cx, buf),
            Self::Command(c) => Pin::new(c).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(t) => Pin::new(t).poll_flush(cx),
            Self::Command(c) => Pin::new(c).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(t) => Pin::new(t).poll_shutdown(cx),
            Self::Command(c) => Pin::new(c).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(t) => t.is_write_vectored(),
            Self::Command(c) => c.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            Self::Command(c) => Pin::new(c).poll_write_vectored(cx, bufs),
        }
    }
}

/// `scheme://host:port` of a proxy URL as written, for `Debug` (never the credentials).
fn shown(text: &str) -> String {
    ProxyUrl::parse(text, "").map_or_else(|_| "<unreadable proxy URL>".to_owned(), |p| p.shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    fn resolve(pairs: &[(&str, &str)]) -> RouteOptions {
        RouteOptions::resolve(RouteInputs::default(), env(pairs)).unwrap()
    }

    #[test]
    fn variables_pick_by_scheme_lower_case_first_and_no_proxy_skips() {
        let https: Uri = "https://m.example:443".parse().unwrap();
        let http: Uri = "http://m.example".parse().unwrap();
        let o = resolve(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "lower:2"),
            ("HTTP_PROXY", "socks5h://s:3"),
        ]);
        assert_eq!(o.route_for(&https).to_string(), "http://lower:2");
        assert_eq!(o.route_for(&http).to_string(), "socks5h://s:3");

        let o = resolve(&[("ALL_PROXY", "p"), ("NO_PROXY", ".example")]);
        assert!(matches!(o.route_for(&https), Route::Direct));
        let other: Uri = "https://m.other".parse().unwrap();
        assert_eq!(o.route_for(&other).to_string(), "http://p:1080");
    }

    #[test]
    fn credentials_never_show() {
        let o = resolve(&[("HTTPS_PROXY", "http://al%40ice:pa55word@p:3128")]);
        let master: Uri = "https://m".parse().unwrap();
        let route = o.route_for(&master);
        for text in [
            format!("{o:?}"),
            format!("{route:?}"),
            route.to_string(),
            format!("{:?}", ProxyText::new("socks5://u:pa55word@h").unwrap()),
        ] {
            assert!(!text.contains("pa55word"), "{text}");
            assert!(!text.contains("al%40ice"), "{text}");
        }
        let Route::Http {
            auth: Some(Secret(v)),
            ..
        } = route
        else {
            panic!("{route:?}")
        };
        // "al@ice:pa55word", percent-decoded, in Basic form.
        assert_eq!(v, "Basic YWxAaWNlOnBhNTV3b3Jk");
    }

    #[test]
    fn bad_values_name_the_variable_and_hide_the_value() {
        let e = RouteOptions::resolve(
            RouteInputs::default(),
            env(&[("https_proxy", "ftp://u:pa55word@h")]),
        )
        .unwrap_err();
        assert_eq!(e.origin, "https_proxy");
        assert!(e.message.contains("ftp://"), "{e:?}");
        assert!(!e.message.contains("pa55word"), "{e:?}");
    }
}
