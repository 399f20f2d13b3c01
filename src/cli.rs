//! Command-line flags (clap definitions only).
//!
//! Every flag can also be set through a `DCOS_TOKEN_PROXY_*` environment variable and a
//! key in the `--config` settings file; [`crate::settings::Settings::resolve`] merges
//! them (flags > environment > file > defaults) and validates the result.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::types::{ClientAuth, LogFormat, WatchMode, parse_duration};
use crate::upstream::route::ProxyText;

const ABOUT: &str =
    "A localhost proxy that signs every request to a DC/OS cluster with your CLI login.";

const LONG_ABOUT: &str = "A localhost reverse proxy that authenticates every request to a DC/OS \
cluster with your DC/OS CLI login.

Point curl, the DC/OS CLI, an SDK or a dashboard at http://127.0.0.1:8079 and each request \
reaches the cluster master with `Authorization: token=<your token>`. A client's `Bearer` \
header is rewritten into the `token=` form every DC/OS version accepts. Bodies, SSE, RecordIO \
and WebSockets are streamed, never buffered.

The cluster and token come from the DC/OS CLI config (~/.dcos, or $DCOS_DIR): the attached \
cluster, or the one named by --cluster / $DCOS_CLUSTER. Log in with `dcos auth login`.";

const AFTER_SHORT_HELP: &str =
    "Flags can also be set as DCOS_TOKEN_PROXY_<FLAG> or in a --config file. More: --help";

const AFTER_HELP: &str = "Examples:
  dcos-token-proxy                         # proxy the attached cluster on 127.0.0.1:8079
  curl http://127.0.0.1:8079/service/marathon/v2/apps
  dcos-token-proxy --cluster prod-east --listen 127.0.0.1:0
  dcos-token-proxy --upstream https://master.example.com   # with DCOS_ACS_TOKEN set
  dcos-token-proxy --listen \"unix:${XDG_RUNTIME_DIR:?}/dcos.sock\"  # only you can connect
  dcos-token-proxy --path-secret           # clients must use the printed base URL
  dcos-token-proxy --listen 0.0.0.0:8079 --allow-remote --allowed-hosts dcos-proxy

  dcos-token-proxy config example > proxy.toml   # an annotated settings file

Every flag can also be set in the environment as DCOS_TOKEN_PROXY_<FLAG>, e.g.
DCOS_TOKEN_PROXY_LISTEN or DCOS_TOKEN_PROXY_ALLOW_REMOTE, or in a --config file.
Precedence: flags > environment > settings file > defaults.";

/// Help heading of the flags that choose the cluster and the credentials.
pub const HEADING_CLUSTER: &str = "Cluster and credentials";
/// Help heading of the flags about where and how the proxy listens.
pub const HEADING_LISTEN: &str = "Listening";
/// Help heading of the flags that decide who may use the proxy and for what.
pub const HEADING_SECURITY: &str = "Security";
/// Help heading of the timeouts.
pub const HEADING_TIMEOUTS: &str = "Timeouts";
/// Help heading of the logging flags.
pub const HEADING_LOGGING: &str = "Logging";

/// Parsed command line. Values that were not given are `None`, so that a settings file
/// can supply them; see `Settings::resolve`. Without a subcommand the binary serves the
/// proxy.
///
/// Each flag's first doc paragraph is its `-h` line; the rest shows only with `--help`.
/// Environment variable names are hidden from the listing (they all follow one rule,
/// `DCOS_TOKEN_PROXY_<FLAG>`, stated below it) so that `-h` fits on one screen.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dcos-token-proxy",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_SHORT_HELP,
    after_long_help = AFTER_HELP,
    disable_help_subcommand = true,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do instead of serving the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// DC/OS CLI directory [default: $DCOS_DIR, else ~/.dcos]
    #[arg(long, value_name = "DIR", env = "DCOS_TOKEN_PROXY_DCOS_DIR",
          help_heading = HEADING_CLUSTER, hide_env = true, global = true)]
    pub dcos_dir: Option<PathBuf>,

    /// Cluster to use, by name or ID [default: the attached one]
    ///
    /// $DCOS_CLUSTER also names one; this flag beats it.
    #[arg(long, value_name = "NAME|ID", env = "DCOS_TOKEN_PROXY_CLUSTER",
          help_heading = HEADING_CLUSTER, hide_env = true, global = true)]
    pub cluster: Option<String>,

    /// Master URL; overrides core.dcos_url and $DCOS_URL
    #[arg(long, value_name = "URL", env = "DCOS_TOKEN_PROXY_UPSTREAM",
          help_heading = HEADING_CLUSTER, hide_env = true, global = true)]
    pub upstream: Option<String>,

    /// Reach the master via an HTTP CONNECT or SOCKS5 proxy, or `none`
    ///
    /// http://[user:pass@]host:port (HTTP CONNECT), socks5://host:port or
    /// socks5h://host:port; `none` ignores the proxy variables
    /// [default: $https_proxy / $http_proxy / $all_proxy, minus $no_proxy]
    #[arg(long, value_name = "URL|none", value_parser = ProxyText::new,
          env = "DCOS_TOKEN_PROXY_UPSTREAM_PROXY", hide_env = true,
          help_heading = HEADING_CLUSTER)]
    pub upstream_proxy: Option<ProxyText>,

    /// Check the master's certificate against NAME (and send it as SNI)
    ///
    /// While connecting to the URL's host and port (e.g. through
    /// `ssh -L 8443:master.mesos:443 bastion`)
    #[arg(long, value_name = "NAME", env = "DCOS_TOKEN_PROXY_TLS_SERVER_NAME",
          help_heading = HEADING_CLUSTER, hide_env = true)]
    pub tls_server_name: Option<String>,

    /// Reach the master over a command's stdio: 'ssh -W %h:%p bastion'
    ///
    /// Run with sh -c for each pooled connection; %h and %p are the master's host and
    /// port
    #[arg(long, value_name = "COMMAND", env = "DCOS_TOKEN_PROXY_PROXY_COMMAND",
          help_heading = HEADING_CLUSTER, hide_env = true)]
    pub proxy_command: Option<String>,

    /// How to follow the DC/OS config for changes: auto or poll
    ///
    /// `auto` uses file events and falls back to polling; `poll` reads the files every
    /// second (network file systems) [default: auto]
    #[arg(long, value_enum, value_name = "MODE", env = "DCOS_TOKEN_PROXY_WATCH",
          help_heading = HEADING_CLUSTER, hide_env = true, hide_possible_values = true,
          hide_short_help = true)]
    pub watch: Option<WatchMode>,

    /// A client's own Authorization header: keep or replace
    ///
    /// `keep` passes `token=…`, turns `Bearer X` into `token=X` and replaces other
    /// schemes; `replace` always sends the proxy's token [default: keep]
    #[arg(long, value_enum, value_name = "MODE", env = "DCOS_TOKEN_PROXY_CLIENT_AUTH",
          help_heading = HEADING_CLUSTER, hide_env = true, hide_possible_values = true)]
    pub client_auth: Option<ClientAuth>,

    /// Log in as this service account (key: --private-key-file)
    ///
    /// The proxy stays logged in. Overrides DCOS_SERVICE_ACCOUNT_CREDENTIAL and the DC/OS
    /// CLI config
    #[arg(long, value_name = "ID", env = "DCOS_TOKEN_PROXY_SERVICE_ACCOUNT_UID",
          help_heading = HEADING_CLUSTER, hide_env = true)]
    pub service_account_uid: Option<String>,

    /// The service account's private key (PEM: PKCS#8 or PKCS#1 RSA)
    #[arg(long, value_name = "FILE", env = "DCOS_TOKEN_PROXY_PRIVATE_KEY_FILE",
          help_heading = HEADING_CLUSTER, hide_env = true, hide_short_help = true)]
    pub private_key_file: Option<PathBuf>,

    /// Log in as this user (password: --password-file or $DCOS_PASSWORD)
    ///
    /// Never a flag value: flags show in `ps`. The proxy stays logged in.
    #[arg(long, value_name = "USER", env = "DCOS_TOKEN_PROXY_UID",
          help_heading = HEADING_CLUSTER, hide_env = true)]
    pub uid: Option<String>,

    /// File holding the --uid user's password
    #[arg(long, value_name = "FILE", env = "DCOS_TOKEN_PROXY_PASSWORD_FILE",
          help_heading = HEADING_CLUSTER, hide_env = true, hide_short_help = true)]
    pub password_file: Option<PathBuf>,

    /// Use the token in FILE, kept fresh by something else
    ///
    /// For example a mounted secret. The file is watched; a bad version is ignored and the last good token stays in use
    #[arg(long, value_name = "FILE", env = "DCOS_TOKEN_PROXY_TOKEN_FILE",
          help_heading = HEADING_CLUSTER, hide_env = true)]
    pub token_file: Option<PathBuf>,

    /// The proxy's own TOML settings file (`config example` prints one)
    #[arg(long, value_name = "FILE", env = "DCOS_TOKEN_PROXY_CONFIG",
          help_heading = HEADING_CLUSTER, hide_env = true, global = true)]
    pub config: Option<PathBuf>,

    /// 127.0.0.1:8079, 127.0.0.1:0 (a free port) or unix:/path
    ///
    /// A Unix socket is created with mode 0600, only in a directory that no other user
    /// can write to (or a sticky one such as /tmp) [default: 127.0.0.1:8079]
    #[arg(long, value_name = "ADDR", env = "DCOS_TOKEN_PROXY_LISTEN",
          help_heading = HEADING_LISTEN, hide_env = true)]
    pub listen: Option<String>,

    /// Allow a non-loopback --listen address such as 0.0.0.0:8079
    ///
    /// For containers: anyone who can reach the address acts as you on the cluster
    /// [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", env = "DCOS_TOKEN_PROXY_ALLOW_REMOTE",
          help_heading = HEADING_LISTEN, hide_env = true, hide_possible_values = true)]
    pub allow_remote: Option<bool>,

    /// Serve /healthz, /readyz, /metrics, /quitquitquit on ADDR
    ///
    /// Off by default. Its own listener, with no Host allow-list (probes send the pod IP), e.g.
    /// 0.0.0.0:9079
    #[arg(long, value_name = "ADDR", env = "DCOS_TOKEN_PROXY_ADMIN_LISTEN",
          help_heading = HEADING_LISTEN, hide_env = true)]
    pub admin_listen: Option<SocketAddr>,

    /// Client connections served at once; more wait [default: 1024]
    ///
    /// A connection past the limit waits up to 1s for a slot, then gets 503 with
    /// Retry-After.
    #[arg(long, value_name = "N", env = "DCOS_TOKEN_PROXY_MAX_CONNECTIONS",
          help_heading = HEADING_LISTEN, hide_env = true)]
    pub max_connections: Option<usize>,

    /// Largest request head in bytes; larger gets 431 [default: 65536]
    #[arg(long, value_name = "BYTES", env = "DCOS_TOKEN_PROXY_MAX_HEADER_BYTES",
          help_heading = HEADING_LISTEN, hide_env = true, hide_short_help = true)]
    pub max_header_bytes: Option<usize>,

    /// WebSocket (and other upgraded) tunnels open at once; more get 503 [default: 512]
    ///
    /// Tunnels do not count as connections; 0 refuses every upgrade.
    #[arg(long, value_name = "N", env = "DCOS_TOKEN_PROXY_MAX_TUNNELS",
          help_heading = HEADING_LISTEN, hide_env = true, hide_short_help = true)]
    pub max_tunnels: Option<usize>,

    /// Serving threads [default: the number of cores]
    ///
    /// Each runs its own event loop and its own pool of master connections, so a request
    /// never leaves its thread.
    #[arg(long, value_name = "N", env = "DCOS_TOKEN_PROXY_WORKER_THREADS",
          help_heading = HEADING_LISTEN, hide_env = true, hide_short_help = true)]
    pub worker_threads: Option<usize>,

    /// Host header values accepted, comma-separated
    ///
    /// Exact names or *.domain, each optionally with :PORT; replaces the default
    /// [default: localhost,127.0.0.1,[::1],*.localhost]
    #[arg(long, value_name = "HOSTS", value_delimiter = ',',
          env = "DCOS_TOKEN_PROXY_ALLOWED_HOSTS", help_heading = HEADING_SECURITY,
          hide_env = true)]
    pub allowed_hosts: Vec<String>,

    /// Browser origins whose pages may use the proxy
    ///
    /// scheme://host:port, comma-separated [default: the proxy's own http://localhost:PORT,
    /// http://127.0.0.1:PORT and http://[::1]:PORT]
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',',
          env = "DCOS_TOKEN_PROXY_ALLOWED_ORIGINS", help_heading = HEADING_SECURITY,
          hide_env = true)]
    pub allowed_origins: Vec<String>,

    /// Require a random per-session secret at the start of every URL
    ///
    /// Clients must use the base URL printed at startup, http://127.0.0.1:8079/<secret>/
    /// (give your own in DCOS_TOKEN_PROXY_PATH_SECRET or --path-secret-file)
    #[arg(long, help_heading = HEADING_SECURITY)]
    pub path_secret: bool,

    /// Read the path secret from FILE
    ///
    /// At least 16 characters of A-Z a-z 0-9 - . _ ~
    #[arg(long, value_name = "FILE", env = "DCOS_TOKEN_PROXY_PATH_SECRET_FILE",
          help_heading = HEADING_SECURITY, hide_env = true, hide_short_help = true)]
    pub path_secret_file: Option<PathBuf>,

    /// Forward only GET, HEAD and OPTIONS [default: false]
    ///
    /// WebSocket and other upgrades are refused too: a tunnel can carry anything.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", env = "DCOS_TOKEN_PROXY_READ_ONLY",
          help_heading = HEADING_SECURITY, hide_env = true, hide_possible_values = true)]
    pub read_only: Option<bool>,

    /// Refuse paths matching this regular expression (repeat for more)
    ///
    /// Anchored at both ends, e.g. --deny-path '/mesos/.*'
    #[arg(long, value_name = "REGEX", env = "DCOS_TOKEN_PROXY_DENY_PATH",
          help_heading = HEADING_SECURITY, hide_env = true)]
    pub deny_path: Vec<String>,

    /// Refuse these methods, comma-separated, e.g. DELETE,PUT
    #[arg(long, value_name = "METHODS", value_delimiter = ',',
          env = "DCOS_TOKEN_PROXY_DENY_METHODS", help_heading = HEADING_SECURITY,
          hide_env = true)]
    pub deny_methods: Vec<String>,

    /// Protocols a client may switch to with Upgrade, comma-separated [default: websocket]
    ///
    /// Others get 403: a switched connection's content is not filtered.
    #[arg(long, value_name = "PROTOCOLS", value_delimiter = ',',
          env = "DCOS_TOKEN_PROXY_ALLOWED_UPGRADES", help_heading = HEADING_SECURITY,
          hide_env = true, hide_short_help = true)]
    pub allowed_upgrades: Vec<String>,

    /// Forward clients' Forwarded, X-Forwarded-* and X-Real-IP [default: false]
    ///
    /// Removed by default: to the master, the proxy is the client.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", env = "DCOS_TOKEN_PROXY_PASS_FORWARDING_HEADERS",
          help_heading = HEADING_SECURITY, hide_env = true, hide_possible_values = true,
          hide_short_help = true)]
    pub pass_forwarding_headers: Option<bool>,

    /// Forward clients' Cookie header [default: false]
    ///
    /// Removed by default: a browser sends every localhost cookie of every local app.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", env = "DCOS_TOKEN_PROXY_PASS_COOKIES",
          help_heading = HEADING_SECURITY, hide_env = true, hide_possible_values = true,
          hide_short_help = true)]
    pub pass_cookies: Option<bool>,

    /// Wait for the master's response headers [default: 60s]
    ///
    /// Then answer 504. Streams are not cut once headers arrive.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_RESPONSE_TIMEOUT", help_heading = HEADING_TIMEOUTS,
          hide_env = true)]
    pub response_timeout: Option<Duration>,

    /// Wait for a TCP connection to the master [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_CONNECT_TIMEOUT", help_heading = HEADING_TIMEOUTS,
          hide_env = true)]
    pub connect_timeout: Option<Duration>,

    /// Time a client may take to send its headers [default: 10s]
    ///
    /// Also how long an idle keep-alive connection stays open.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_HEADER_READ_TIMEOUT", help_heading = HEADING_TIMEOUTS,
          hide_env = true)]
    pub header_read_timeout: Option<Duration>,

    /// Time a request body may go without a byte [default: 60s]
    ///
    /// Then the client gets 408 and the request to the master is abandoned.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_BODY_IDLE_TIMEOUT", help_heading = HEADING_TIMEOUTS,
          hide_env = true, hide_short_help = true)]
    pub body_idle_timeout: Option<Duration>,

    /// Bytes per second a request body must keep after --body-idle-timeout [default: 1024]
    ///
    /// The deadline is the body idle timeout after the first read, plus one second per
    /// this many bytes; a body behind it gets 408. 0 turns the limit off. `dcos task exec`
    /// input streams are exempt while tunnel slots (--max-tunnels) last.
    #[arg(long, value_name = "BYTES", env = "DCOS_TOKEN_PROXY_BODY_MIN_RATE",
          help_heading = HEADING_TIMEOUTS, hide_env = true, hide_short_help = true)]
    pub body_min_rate: Option<u64>,

    /// Close a client connection that reads nothing for this long [default: 60s]
    ///
    /// Timed only while a write to the client cannot proceed (the client stopped
    /// reading); streams that are merely quiet are not affected.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_SEND_TIMEOUT", help_heading = HEADING_TIMEOUTS,
          hide_env = true, hide_short_help = true)]
    pub send_timeout: Option<Duration>,

    /// Close a tunnel with no byte either way for this long [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_TUNNEL_IDLE_TIMEOUT", help_heading = HEADING_TIMEOUTS,
          hide_env = true, hide_short_help = true)]
    pub tunnel_idle_timeout: Option<Duration>,

    /// Time given to open requests on Ctrl-C/SIGTERM [default: 30s]
    ///
    /// A second Ctrl-C exits at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_SHUTDOWN_GRACE", help_heading = HEADING_TIMEOUTS,
          hide_env = true)]
    pub shutdown_grace: Option<Duration>,

    /// Log format: text or json [default: text]
    #[arg(long, value_enum, value_name = "FORMAT", env = "DCOS_TOKEN_PROXY_LOG_FORMAT",
          help_heading = HEADING_LOGGING, hide_env = true, hide_possible_values = true)]
    pub log_format: Option<LogFormat>,

    /// More log detail (-v debug, -vv trace); overrides RUST_LOG
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet",
          help_heading = HEADING_LOGGING)]
    pub verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only)
    #[arg(short, long, action = ArgAction::Count, help_heading = HEADING_LOGGING)]
    pub quiet: u8,
}

/// The clap command behind [`Cli`], with each flag's environment variable written at
/// the end of its `--help` text (the `-h` listing leaves them out to fit one screen).
pub fn command() -> clap::Command {
    Cli::command().mut_args(|arg| {
        let Some(env) = arg.get_env().map(|e| e.to_string_lossy().into_owned()) else {
            return arg;
        };
        let text = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        arg.long_help(format!("{text}\n[env: {env}]"))
    })
}

/// Parse the process's arguments with [`command`]; on bad usage, print clap's message
/// and exit 2.
pub fn parse() -> Cli {
    Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit())
}

/// The subcommands. Running without one serves the proxy.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The proxy's own settings file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script
    ///
    /// For example: `dcos-token-proxy completions bash >
    /// ~/.local/share/bash-completion/completions/dcos-token-proxy`
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// List the DC/OS clusters and the local URL of each (<name>.localhost)
    ///
    /// One line per cluster of the DC/OS CLI's per-cluster layout: name, ID, master URL,
    /// whether it is attached, when its token expires, and the URL that reaches it
    /// through this proxy (`http://<name>.localhost:PORT/`, PORT from --listen). The
    /// plain address serves the attached cluster.
    Clusters {
        /// One JSON object for scripts instead of the table
        #[arg(long)]
        json: bool,
    },
    /// Check the config, the token, TLS and the master, step by step, with fixes
    ///
    /// Prints a checklist (✓ or ✗ per step, with the fix under each ✗) and exits 0 only
    /// if every step passed. Flags such as --cluster and --dcos-dir apply as when serving.
    Doctor {
        /// One JSON object for scripts instead of the checklist
        #[arg(long)]
        json: bool,
    },
    /// Run CMD with a private proxy: DCOS_URL points at it, its status is CMD's
    ///
    /// Like `aws-vault exec`: the proxy listens on a free loopback port, CMD gets
    /// DCOS_URL and DCOS_TOKEN_PROXY_URL set to it, signals are passed on to CMD, and the
    /// proxy ends when CMD does. For example: `dcos-token-proxy exec -- dcos marathon app
    /// list`.
    Exec {
        /// The command and its arguments
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Print the man page (roff)
    ///
    /// For example: `dcos-token-proxy man > ~/.local/share/man/man1/dcos-token-proxy.1`
    Man,
    /// Ask a running proxy's admin listener whether it is ready: exit 0 if so, else 1
    ///
    /// Ready means it holds a valid token. Needs no curl in the image: use it as a
    /// HEALTHCHECK, or in an app's entrypoint with --wait to wait for the proxy before
    /// the first call.
    Health {
        /// The admin listener's base URL
        #[arg(long, value_name = "URL", default_value = DEFAULT_HEALTH_URL)]
        url: String,
        /// Keep asking until ready, for at most this long (e.g. 60s); fail when the time
        /// runs out [default: ask once]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        wait: Option<Duration>,
    },
}

/// The default `health --url`: the admin listener as the container image sets it up.
pub const DEFAULT_HEALTH_URL: &str = "http://127.0.0.1:9079";

/// `dcos-token-proxy config …`
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Print the annotated settings file, every key with its default
    Example,
}

#[cfg(test)]
mod tests {
    use super::{Cli, command};
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
        command().debug_assert();
    }
}
