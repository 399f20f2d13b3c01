//! The proxy's own settings: defaults < settings file < environment < flags.
//!
//! Raw inputs ([`FileSettings`] from `--config`, [`crate::cli::Cli`] from flags and
//! `DCOS_TOKEN_PROXY_*` variables) are merged and validated once into [`Settings`]; the
//! rest of the program sees only that validated type. Unknown keys in the settings file
//! are errors, so a typo never silently falls back to a default. Every default is a named
//! constant below.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod credentials;
mod file;

pub use self::credentials::CredentialFlags;
pub use self::file::{DcosSection, DurationSetting, FileSettings, LogSection, UpstreamSection};
use crate::cli::Cli;
use crate::dcos::config::DiscoverOptions;
use crate::env::Env;
use crate::files::{ReadError, read_bounded};
use crate::guard::{
    DEFAULT_PASS_COOKIES, DEFAULT_PASS_FORWARDING_HEADERS, DenyPaths, PathSecret, Policy,
};
use crate::types::{ClientAuth, ListenAddr, LogFormat, WatchMode, parse_listen};
use crate::upstream::route::{RouteInputs, RouteOptions};
use crate::upstream::{ClientOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_IDLE_TIMEOUT};

/// Default listen address: loopback only, port 8079.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8079);
/// How long to wait for the master's response headers before answering 504. Streams are
/// not cut once the headers have arrived.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long in-flight requests may run on after SIGINT/SIGTERM before the proxy exits.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long a client may take to send a request's headers (slowloris defence). hyper
/// starts this timer whenever a connection waits for a request head, so it is also how
/// long an idle keep-alive connection stays open.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may go without a byte once its headers are in: past it, the
/// client gets 408 and the request to the master is abandoned. A streamed upload that
/// pauses longer than this (an interactive input stream with no keep-alive records)
/// needs a higher `body_idle_timeout`.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The least rate, in bytes per second, a request body must keep once its first
/// `body_idle_timeout` is over (the deadline moves on by one second per this many bytes),
/// so that a body trickling a byte at a time cannot hold a connection slot for long. Far
/// below any real upload; `dcos task exec` input streams are exempt while tunnel slots
/// last. 0 turns the rate limit off.
pub const DEFAULT_BODY_MIN_RATE: u64 = 1024;
/// How long the proxy may fail to write anything to a client that has stopped reading
/// (a full socket buffer) before it closes the connection; a slow reader cannot hold a
/// slot for ever. Streams where the server sends rarely are not affected: only a write
/// that cannot proceed is timed.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The most client connections served at once; a connection past it waits up to a second
/// for a slot, then gets 503 (`server::WAITING_ROOM_WAIT`). High for a local proxy:
/// browsers open 6 per host, dashboards a few more.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The most tunnels (WebSocket connections after `101 Switching Protocols`) open at
/// once; a master's `101` beyond it is answered 503. Each holds two file descriptors and
/// no longer counts as a client connection.
pub const DEFAULT_MAX_TUNNELS: usize = 512;
/// How long a tunnel may carry no byte in either direction before it is closed: long
/// enough for an interactive `dcos task exec` shell left alone for a while.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The largest request head (request line and headers) accepted; larger gets 431.
/// A DC/OS token is about 1 KiB, so this leaves room for big cookies.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// The smallest `max_header_bytes` hyper accepts.
pub const MIN_MAX_HEADER_BYTES: usize = 8192;
/// Environment variable that holds a path secret's value (never a flag: flags show in
/// `ps`).
pub const ENV_PATH_SECRET: &str = "DCOS_TOKEN_PROXY_PATH_SECRET";
/// The largest path-secret file read.
const MAX_SECRET_FILE: u64 = 4096;
/// Log filter used when neither `-v`, `RUST_LOG` nor `log.level` says otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings file could not be read.
    #[error("cannot read settings file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (part of the message, not repeated as `source()`).
        error: std::io::Error,
    },
    /// The settings file is too large to be a settings file.
    #[error("settings file {path} is larger than 1 MiB; is it the right file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The settings file is not valid TOML or has an unknown key or a bad value.
    #[error("settings file {path} line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters (what an editor shows).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is invalid.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the value came from: a flag, a variable or a file key.
        origin: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Validated settings: everything the proxy needs except the DC/OS config itself.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: ListenAddr,
    /// A non-loopback `listen` address was allowed deliberately.
    pub allow_remote: bool,
    /// Which requests may pass: Host, Origin, path secret, filters.
    pub policy: Policy,
    /// The most client connections served at once.
    pub max_connections: usize,
    /// The largest request head accepted.
    pub max_header_bytes: usize,
    /// The most tunnels open at once.
    pub max_tunnels: usize,
    /// Serving threads (one runtime and one upstream pool each).
    pub worker_threads: usize,
    /// Tunnel idle timeout.
    pub tunnel_idle_timeout: Duration,
    /// Client `Authorization` policy.
    pub client_auth: ClientAuth,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Client header read timeout.
    pub header_read_timeout: Duration,
    /// Request body idle timeout.
    pub body_idle_timeout: Duration,
    /// Request body minimum rate after the idle timeout, bytes per second (0: off).
    pub body_min_rate: u64,
    /// Time a write to a client that does not read may stall.
    pub send_timeout: Duration,
    /// Upstream response-header timeout.
    pub response_timeout: Duration,
    /// Upstream TCP connect timeout.
    pub connect_timeout: Duration,
    /// How connections reach the master: proxy, proxy command, TLS server name.
    pub route: RouteOptions,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_filter: String,
    /// How to find the DC/OS CLI config.
    pub discover: DiscoverOptions,
    /// How to follow it for changes.
    pub watch: WatchMode,
    /// The credential flags (service account, user, token file), if any.
    pub credentials: CredentialFlags,
    /// Where the admin listener (health, readiness, metrics) listens; `None`: off.
    pub admin_listen: Option<SocketAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: ListenAddr::Tcp(DEFAULT_LISTEN),
            allow_remote: false,
            policy: Policy::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_tunnels: DEFAULT_MAX_TUNNELS,
            worker_threads: default_worker_threads(),
            tunnel_idle_timeout: DEFAULT_TUNNEL_IDLE_TIMEOUT,
            client_auth: ClientAuth::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            route: RouteOptions::default(),
            log_format: LogFormat::default(),
            log_filter: DEFAULT_LOG_LEVEL.to_owned(),
            discover: DiscoverOptions::default(),
            watch: WatchMode::default(),
            credentials: CredentialFlags::default(),
            admin_listen: None,
        }
    }
}

/// The default number of serving threads: one per core the process may use.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Settings {
    /// What the connection pool to the master is built from.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            connect_timeout: self.connect_timeout,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            route: self.route.clone(),
        }
    }

    /// Merge defaults < `file` < environment/flags (`cli`, which clap already filled from
    /// `DCOS_TOKEN_PROXY_*`) and validate. `env` supplies `RUST_LOG` and `HOME`.
    pub fn resolve(cli: &Cli, file: &FileSettings, env: &Env) -> Result<Self, SettingsError> {
        let mut s = Settings::default();
        let home = env.get("HOME").map(PathBuf::from);

        // listen
        if let Some(text) = &cli.listen {
            s.listen = parse_listen(text).map_err(|m| invalid("--listen", m))?;
        } else if let Some(text) = &file.listen {
            s.listen = parse_listen(text).map_err(|m| invalid("settings key `listen`", m))?;
        }
        s.client_auth = cli.client_auth.or(file.client_auth).unwrap_or_default();
        s.log_format = cli.log_format.or(file.log.format).unwrap_or_default();
        s.watch = cli.watch.or(file.dcos.watch).unwrap_or_default();
        pick_duration(
            &mut s.shutdown_grace,
            cli.shutdown_grace,
            file.shutdown_grace,
        );
        pick_duration(
            &mut s.header_read_timeout,
            cli.header_read_timeout,
            file.header_read_timeout,
        );
        pick_duration(
            &mut s.body_idle_timeout,
            cli.body_idle_timeout,
            file.body_idle_timeout,
        );
        if s.body_idle_timeout.is_zero() {
            return Err(invalid(
                "body_idle_timeout",
                "must be greater than zero".into(),
            ));
        }
        s.body_min_rate = cli
            .body_min_rate
            .or(file.body_min_rate)
            .unwrap_or(DEFAULT_BODY_MIN_RATE);
        pick_duration(&mut s.send_timeout, cli.send_timeout, file.send_timeout);
        if s.send_timeout.is_zero() {
            return Err(invalid("send_timeout", "must be greater than zero".into()));
        }
        pick_duration(
            &mut s.response_timeout,
            cli.response_timeout,
            file.upstream.response_timeout,
        );
        pick_duration(
            &mut s.connect_timeout,
            cli.connect_timeout,
            file.upstream.connect_timeout,
        );
        if s.response_timeout.is_zero() {
            return Err(invalid(
                "upstream.response_timeout",
                "must be greater than zero".into(),
            ));
        }
        if s.connect_timeout.is_zero() {
            return Err(invalid(
                "upstream.connect_timeout",
                "must be greater than zero".into(),
            ));
        }

        s.route = resolve_route(cli, file, env)?;

        s.allow_remote = cli.allow_remote.or(file.allow_remote).unwrap_or(false);
        if !s.listen.is_local() && !s.allow_remote {
            let origin = if cli.listen.is_some() {
                "--listen"
            } else {
                "settings key `listen`"
            };
            return Err(invalid(
                origin,
                format!(
                    "{} is not a loopback address: anyone who can reach it would act as you \
                     on the cluster. Listen on 127.0.0.1 (the default) or a unix: socket, or \
                     pass --allow-remote (allow_remote = true) to allow it deliberately, and \
                     list the host names clients use with --allowed-hosts",
                    s.listen
                ),
            ));
        }
        s.policy = resolve_policy(cli, file, env)?;
        s.max_connections = cli
            .max_connections
            .or(file.max_connections)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if s.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        s.worker_threads = cli
            .worker_threads
            .or(file.worker_threads)
            .unwrap_or_else(default_worker_threads);
        if s.worker_threads == 0 {
            return Err(invalid("worker_threads", "must be at least 1".into()));
        }
        s.max_tunnels = cli
            .max_tunnels
            .or(file.max_tunnels)
            .unwrap_or(DEFAULT_MAX_TUNNELS);
        pick_duration(
            &mut s.tunnel_idle_timeout,
            cli.tunnel_idle_timeout,
            file.tunnel_idle_timeout,
        );
        if s.tunnel_idle_timeout.is_zero() {
            return Err(invalid(
                "tunnel_idle_timeout",
                "must be greater than zero".into(),
            ));
        }
        s.max_header_bytes = cli
            .max_header_bytes
            .or(file.max_header_bytes)
            .unwrap_or(DEFAULT_MAX_HEADER_BYTES);
        if s.max_header_bytes < MIN_MAX_HEADER_BYTES {
            return Err(invalid(
                "max_header_bytes",
                format!("must be at least {MIN_MAX_HEADER_BYTES}"),
            ));
        }
        if s.header_read_timeout.is_zero() {
            return Err(invalid(
                "header_read_timeout",
                "must be greater than zero".into(),
            ));
        }

        // Verbosity: -v/-q beat RUST_LOG, which beats log.level.
        s.log_filter = match (cli.verbose, cli.quiet) {
            (0, 0) => env
                .get("RUST_LOG")
                .map(str::to_owned)
                .or_else(|| file.log.level.clone())
                .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned()),
            (_, q) if q > 0 => if q == 1 { "warn" } else { "error" }.to_owned(),
            (1, _) => "info,dcos_token_proxy=debug".to_owned(),
            _ => "debug,dcos_token_proxy=trace".to_owned(),
        };

        s.discover = DiscoverOptions {
            dcos_dir: cli.dcos_dir.clone().or_else(|| {
                file.dcos
                    .dir
                    .as_deref()
                    .map(|p| expand_tilde(p, home.as_deref()))
            }),
            cluster: cli.cluster.clone().or_else(|| file.dcos.cluster.clone()),
            upstream: cli.upstream.clone().or_else(|| file.upstream.url.clone()),
            home,
            cwd: std::env::current_dir().ok(),
        };
        s.credentials = CredentialFlags::from_cli(cli)?;
        s.admin_listen = cli.admin_listen;
        Ok(s)
    }
}

/// The guard settings: lists replace the defaults (flags > file), the path secret comes
/// from `--path-secret-file`, else `DCOS_TOKEN_PROXY_PATH_SECRET`, else is generated with
/// `--path-secret` / `path_secret = true`.
fn resolve_policy(cli: &Cli, file: &FileSettings, env: &Env) -> Result<Policy, SettingsError> {
    let from_guard = |e: crate::guard::PolicyError| invalid(e.key, e.message);
    let mut p = Policy::default();
    if let Some(list) = pick_list(&cli.allowed_hosts, &file.allowed_hosts) {
        if list.is_empty() {
            return Err(invalid(
                "allowed_hosts",
                "the list is empty: no request could pass; leave it out for the loopback defaults"
                    .into(),
            ));
        }
        p.allowed_hosts = Policy::hosts(list).map_err(from_guard)?;
    }
    if let Some(list) = pick_list(&cli.allowed_origins, &file.allowed_origins) {
        p.allowed_origins = Some(Policy::origins(list).map_err(from_guard)?);
    }
    if let Some(list) = pick_list(&cli.deny_methods, &file.deny_methods) {
        p.deny_methods = Policy::methods(list).map_err(from_guard)?;
    }
    if let Some(list) = pick_list(&cli.deny_path, &file.deny_paths) {
        if !list.is_empty() {
            p.deny_paths = Some(DenyPaths::new(list).map_err(from_guard)?);
        }
    }
    p.read_only = cli.read_only.or(file.read_only).unwrap_or(false);
    if let Some(list) = pick_list(&cli.allowed_upgrades, &file.allowed_upgrades) {
        p.allowed_upgrades = Policy::upgrades(list).map_err(from_guard)?;
    }
    p.pass_forwarding_headers = cli
        .pass_forwarding_headers
        .or(file.pass_forwarding_headers)
        .unwrap_or(DEFAULT_PASS_FORWARDING_HEADERS);
    p.pass_cookies = cli
        .pass_cookies
        .or(file.pass_cookies)
        .unwrap_or(DEFAULT_PASS_COOKIES);

    let secret_file = cli
        .path_secret_file
        .as_ref()
        .map(|f| (f, "--path-secret-file"))
        .or(file
            .path_secret_file
            .as_ref()
            .map(|f| (f, "settings key `path_secret_file`")));
    p.path_secret = if let Some((path, origin)) = secret_file {
        Some(read_secret_file(path, origin)?)
    } else if let Some(value) = env.get(ENV_PATH_SECRET) {
        Some(PathSecret::new(value, ENV_PATH_SECRET).map_err(from_guard)?)
    } else if cli.path_secret || file.path_secret == Some(true) {
        Some(PathSecret::generate().map_err(from_guard)?)
    } else {
        None
    };
    Ok(p)
}

/// The route to the master: flags beat the settings file; the proxy variables apply only
/// when neither sets `proxy` or `proxy_command`.
fn resolve_route(cli: &Cli, file: &FileSettings, env: &Env) -> Result<RouteOptions, SettingsError> {
    let up = &file.upstream;
    let inputs = RouteInputs {
        proxy: cli
            .upstream_proxy
            .as_ref()
            .map(|p| (p, "--upstream-proxy"))
            .or(up
                .proxy
                .as_ref()
                .map(|p| (p, "settings key `upstream.proxy`"))),
        command: cli
            .proxy_command
            .as_deref()
            .map(|c| (c, "--proxy-command"))
            .or(up
                .proxy_command
                .as_deref()
                .map(|c| (c, "settings key `upstream.proxy_command`"))),
        tls_server_name: cli
            .tls_server_name
            .as_deref()
            .map(|n| (n, "--tls-server-name"))
            .or(up
                .tls_server_name
                .as_deref()
                .map(|n| (n, "settings key `upstream.tls_server_name`"))),
    };
    RouteOptions::resolve(inputs, |name| env.get(name)).map_err(|e| invalid(&e.origin, e.message))
}

fn pick_list<'a>(flag: &'a [String], file: &'a Option<Vec<String>>) -> Option<&'a [String]> {
    if flag.is_empty() {
        file.as_deref()
    } else {
        Some(flag)
    }
}

fn read_secret_file(path: &Path, origin: &'static str) -> Result<PathSecret, SettingsError> {
    let bytes = read_bounded(path, MAX_SECRET_FILE).map_err(|e| {
        let why = match e {
            ReadError::TooLarge => "it is larger than 4 KiB, so not a path secret".to_owned(),
            e => e.to_string(),
        };
        invalid(
            origin,
            format!(
                "cannot read the path secret file {}: {why}; fix the path, or use \
                 --path-secret to generate a secret",
                path.display()
            ),
        )
    })?;
    let text = String::from_utf8_lossy(&bytes);
    PathSecret::new(&text, origin)
        .map_err(|e| invalid(e.key, format!("{}: {}", path.display(), e.message)))
}

fn pick_duration(slot: &mut Duration, flag: Option<Duration>, file: Option<DurationSetting>) {
    if let Some(d) = flag.or(file.map(|d| d.0)) {
        *slot = d;
    }
}

fn invalid(origin: &str, message: String) -> SettingsError {
    SettingsError::Invalid {
        origin: origin.to_owned(),
        message,
    }
}

/// Expand a leading `~/` with the home directory, as a shell would.
fn expand_tilde(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["dcos-token-proxy"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap()
    }

    #[test]
    fn defaults_apply_without_file_or_flags() {
        let s = Settings::resolve(&cli(&[]), &FileSettings::default(), &Env::default()).unwrap();
        assert_eq!(s.listen, ListenAddr::Tcp(DEFAULT_LISTEN));
        assert_eq!(s.client_auth, ClientAuth::Keep);
        assert_eq!(s.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(s.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert!(!s.allow_remote);
        assert!(s.policy.path_secret.is_none());
        assert!(!s.policy.read_only);
        assert_eq!(s.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        assert_eq!(s.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_filter, "info");
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let file = FileSettings::parse(
            Path::new("t.toml"),
            r#"
            listen = "127.0.0.1:7000"
            client_auth = "replace"
            [upstream]
            url = "https://file.example"
            response_timeout = "5s"
            [log]
            format = "json"
            level = "warn"
            [dcos]
            dir = "~/custom"
            cluster = "file-cluster"
            "#,
        )
        .unwrap();
        let env = Env::from_pairs([("HOME", "/home/u")]);
        let s = Settings::resolve(&cli(&[]), &file, &env).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(s.client_auth, ClientAuth::Replace);
        assert_eq!(s.response_timeout, Duration::from_secs(5));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_filter, "warn");
        assert_eq!(s.discover.dcos_dir, Some(PathBuf::from("/home/u/custom")));
        assert_eq!(s.discover.cluster.as_deref(), Some("file-cluster"));
        assert_eq!(s.discover.upstream.as_deref(), Some("https://file.example"));

        let flags = cli(&[
            "--listen",
            "127.0.0.1:0",
            "--client-auth",
            "keep",
            "--upstream",
            "http://flag.example",
            "--response-timeout",
            "250ms",
            "--log-format",
            "text",
            "--cluster",
            "flag-cluster",
            "-v",
        ]);
        let env = Env::from_pairs([("HOME", "/home/u"), ("RUST_LOG", "error")]);
        let s = Settings::resolve(&flags, &file, &env).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:0");
        assert_eq!(s.client_auth, ClientAuth::Keep);
        assert_eq!(s.response_timeout, Duration::from_millis(250));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_filter, "info,dcos_token_proxy=debug");
        assert_eq!(s.discover.cluster.as_deref(), Some("flag-cluster"));
        assert_eq!(s.discover.upstream.as_deref(), Some("http://flag.example"));
    }

    #[test]
    fn rust_log_beats_file_level() {
        let file = FileSettings::parse(Path::new("t.toml"), "[log]\nlevel = \"warn\"\n").unwrap();
        let env = Env::from_pairs([("RUST_LOG", "debug")]);
        let s = Settings::resolve(&cli(&[]), &file, &env).unwrap();
        assert_eq!(s.log_filter, "debug");
    }

    #[test]
    fn unknown_keys_are_errors_with_line_numbers() {
        let err = FileSettings::parse(
            Path::new("/etc/p.toml"),
            "listen = \"127.0.0.1:1\"\nlisten_addr = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/p.toml line 2"), "{err}");
        assert!(err.contains("listen_addr"), "{err}");
        let err = FileSettings::parse(
            Path::new("p.toml"),
            "[upstream]\nresponse_timeout = \"5 years\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown unit"), "{err}");
        let err = FileSettings::parse(Path::new("p.toml"), "client_auth = \"steal\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn bad_listen_names_its_origin() {
        let file = FileSettings::parse(Path::new("t.toml"), "listen = \"nowhere\"\n").unwrap();
        let err = Settings::resolve(&cli(&[]), &file, &Env::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("settings key `listen`"), "{err}");
    }

    #[test]
    fn shipped_example_settings_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dcos-token-proxy.toml");
        let file = FileSettings::load(&path).unwrap();
        let s = Settings::resolve(&cli(&[]), &file, &Env::default()).unwrap();
        assert_eq!(s.listen, ListenAddr::Tcp(DEFAULT_LISTEN));
        assert_eq!(s.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        assert_eq!(s.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(s.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert_eq!(s.max_tunnels, DEFAULT_MAX_TUNNELS);
        assert_eq!(s.tunnel_idle_timeout, DEFAULT_TUNNEL_IDLE_TIMEOUT);
        assert_eq!(s.body_idle_timeout, DEFAULT_BODY_IDLE_TIMEOUT);
        assert_eq!(s.policy.allowed_upgrades, ["websocket"]);
        assert!(!s.policy.pass_cookies && !s.policy.pass_forwarding_headers);
        assert_eq!(
            s.policy.allowed_hosts,
            Policy::default().allowed_hosts,
            "the example lists the default hosts"
        );
    }

    #[test]
    fn a_non_loopback_listen_address_needs_allow_remote() {
        let err = Settings::resolve(
            &cli(&["--listen", "0.0.0.0:8079"]),
            &FileSettings::default(),
            &Env::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("--listen"), "{err}");
        assert!(err.contains("--allow-remote"), "{err}");
        let s = Settings::resolve(
            &cli(&["--listen", "0.0.0.0:8079", "--allow-remote"]),
            &FileSettings::default(),
            &Env::default(),
        )
        .unwrap();
        assert!(s.allow_remote);
        let file = FileSettings::parse(
            Path::new("t.toml"),
            "listen = \"[::]:1\"\nallow_remote = true\n",
        )
        .unwrap();
        assert!(Settings::resolve(&cli(&[]), &file, &Env::default()).is_ok());
        // The environment (clap fills the flag from it) beats the file.
        assert!(
            Settings::resolve(&cli(&["--allow-remote=false"]), &file, &Env::default()).is_err()
        );
    }

    #[test]
    fn guard_settings_are_validated_and_name_their_key() {
        let file = FileSettings::parse(
            Path::new("t.toml"),
            r#"
            allowed_hosts = ["proxy.internal", "*.svc"]
            allowed_origins = ["http://localhost:3000"]
            read_only = true
            deny_paths = ["/mesos/.*", "/a{1,3}"]
            deny_methods = ["delete"]
            max_connections = 10
            max_header_bytes = 9000
            pass_cookies = true
            "#,
        )
        .unwrap();
        let s = Settings::resolve(&cli(&[]), &file, &Env::default()).unwrap();
        assert!(s.policy.read_only);
        assert!(s.policy.pass_cookies);
        assert!(!s.policy.pass_forwarding_headers, "off by default");
        assert_eq!(s.policy.allowed_hosts.len(), 2);
        assert_eq!(s.policy.deny_methods, [http::Method::DELETE]);
        assert_eq!(s.max_connections, 10);
        assert_eq!(s.max_header_bytes, 9000);

        let bad = |text: &str, args: &[&str]| {
            let file = FileSettings::parse(Path::new("t.toml"), text).unwrap();
            Settings::resolve(&cli(args), &file, &Env::default())
                .unwrap_err()
                .to_string()
        };
        let e = bad("deny_paths = [\"/ok\", \"/bad(\"]\n", &[]);
        assert!(
            e.starts_with("deny_paths") && e.contains("\"/bad(\""),
            "{e}"
        );
        let e = bad("", &["--deny-path", "*"]);
        assert!(e.starts_with("deny_paths") && e.contains("\"*\""), "{e}");
        let e = bad("allowed_hosts = [\"*\"]\n", &[]);
        assert!(e.starts_with("allowed_hosts"), "{e}");
        let e = bad("allowed_hosts = []\n", &[]);
        assert!(e.starts_with("allowed_hosts"), "{e}");
        let e = bad("allowed_origins = [\"localhost\"]\n", &[]);
        assert!(e.starts_with("allowed_origins"), "{e}");
        let e = bad("max_header_bytes = 100\n", &[]);
        assert!(e.starts_with("max_header_bytes"), "{e}");
        let e = bad("max_connections = 0\n", &[]);
        assert!(e.starts_with("max_connections"), "{e}");
    }

    #[test]
    fn path_secret_sources() {
        let none = FileSettings::default();
        let s = Settings::resolve(&cli(&["--path-secret"]), &none, &Env::default()).unwrap();
        assert_eq!(s.policy.path_secret.unwrap().expose().len(), 64);

        let env = Env::from_pairs([(ENV_PATH_SECRET, "from-the-environment-1")]);
        let s = Settings::resolve(&cli(&[]), &none, &env).unwrap();
        assert_eq!(
            s.policy.path_secret.as_ref().unwrap().expose(),
            "from-the-environment-1"
        );
        assert!(!format!("{s:?}").contains("from-the-environment-1"));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "from-a-file-0123456789\n").unwrap();
        let s = Settings::resolve(
            &cli(&["--path-secret-file", f.to_str().unwrap()]),
            &none,
            &env,
        )
        .unwrap();
        assert_eq!(
            s.policy.path_secret.unwrap().expose(),
            "from-a-file-0123456789",
            "the file beats the environment"
        );

        let e = Settings::resolve(
            &cli(&[]),
            &none,
            &Env::from_pairs([(ENV_PATH_SECRET, "short")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with(ENV_PATH_SECRET), "{e}");
        assert!(!e.contains("short\""), "the value is not shown: {e}");

        // A missing file, or a directory: the file is named, with the fix.
        for path in [dir.path().join("missing"), dir.path().to_path_buf()] {
            let e = Settings::resolve(
                &cli(&["--path-secret-file", path.to_str().unwrap()]),
                &none,
                &Env::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("--path-secret-file"), "{e}");
            assert!(
                e.contains(&format!("path secret file {}", path.display())),
                "{e}"
            );
            assert!(e.contains("--path-secret to generate"), "{e}");
            assert!(!e.contains("settings file"), "{e}");
        }
    }

    #[test]
    fn a_settings_file_that_is_not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = FileSettings::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }
}
