//! Command-line flags (clap definitions only).
//!
//! Every flag can also be set through a `DCOS_TOKEN_PROXY_*` environment variable and a
//! key in the `--config` settings file; [`crate::settings::Settings::resolve`] merges
//! them (flags > environment > file > defaults) and validates the result.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::types::{ClientAuth, LogFormat, WatchMode, parse_duration};
use crate::upstream::route::ProxyText;

const ABOUT: &str = "A localhost reverse proxy that authenticates every request to a DC/OS \
cluster with your DC/OS CLI login.";

const LONG_ABOUT: &str = "A localhost reverse proxy that authenticates every request to a DC/OS \
cluster with your DC/OS CLI login.

Point curl, the DC/OS CLI, an SDK or a dashboard at http://127.0.0.1:8079 and each request \
reaches the cluster master with `Authorization: token=<your token>`. A client's `Bearer` \
header is rewritten into the `token=` form every DC/OS version accepts. Bodies, SSE, RecordIO \
and WebSockets are streamed, never buffered.

The cluster and token come from the DC/OS CLI config (~/.dcos, or $DCOS_DIR): the attached \
cluster, or the one named by --cluster / $DCOS_CLUSTER. Log in with `dcos auth login`.";

const AFTER_HELP: &str = "Examples:
  dcos-token-proxy                         # proxy the attached cluster on 127.0.0.1:8079
  curl http://127.0.0.1:8079/service/marathon/v2/apps
  dcos-token-proxy --cluster prod-east --listen 127.0.0.1:0
  dcos-token-proxy --upstream https://master.example.com   # with DCOS_ACS_TOKEN set
  dcos-token-proxy --listen unix:$XDG_RUNTIME_DIR/dcos.sock  # only you can connect
  dcos-token-proxy --path-secret           # clients must use the printed base URL
  dcos-token-proxy --listen 0.0.0.0:8079 --allow-remote --allowed-hosts dcos-proxy

Each flag can also be set in the environment (shown as [env: …]) or in a --config file.";

/// Parsed command line. Values that were not given are `None`, so that a settings file
/// can supply them; see `Settings::resolve`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dcos-token-proxy",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// Address to listen on: 127.0.0.1:8079, 127.0.0.1:0 for any free port, or
    /// unix:/path/to/socket (created with mode 0600) [default: 127.0.0.1:8079]
    #[arg(long, value_name = "ADDR", env = "DCOS_TOKEN_PROXY_LISTEN")]
    pub listen: Option<String>,

    /// Allow a non-loopback --listen address such as 0.0.0.0:8079 (e.g. in a container):
    /// anyone who can reach it acts as you on the cluster [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", env = "DCOS_TOKEN_PROXY_ALLOW_REMOTE")]
    pub allow_remote: Option<bool>,

    /// Host header values accepted, comma-separated: exact names or *.domain, each
    /// optionally with :PORT; replaces the default
    /// [default: localhost,127.0.0.1,[::1],*.localhost]
    #[arg(
        long,
        value_name = "HOSTS",
        value_delimiter = ',',
        env = "DCOS_TOKEN_PROXY_ALLOWED_HOSTS"
    )]
    pub allowed_hosts: Vec<String>,

    /// Browser origins (scheme://host:port) whose pages may use the proxy,
    /// comma-separated [default: the proxy's own http://localhost:PORT,
    /// http://127.0.0.1:PORT and http://[::1]:PORT]
    #[arg(
        long,
        value_name = "ORIGINS",
        value_delimiter = ',',
        env = "DCOS_TOKEN_PROXY_ALLOWED_ORIGINS"
    )]
    pub allowed_origins: Vec<String>,

    /// Require a random per-session path secret: clients must use the base URL printed
    /// at startup, http://127.0.0.1:8079/<secret>/ (give your own in
    /// DCOS_TOKEN_PROXY_PATH_SECRET or --path-secret-file)
    #[arg(long)]
    pub path_secret: bool,

    /// Read the path secret from FILE (at least 16 of A-Z a-z 0-9 - . _ ~)
    #[arg(long, value_name = "FILE", env = "DCOS_TOKEN_PROXY_PATH_SECRET_FILE")]
    pub path_secret_file: Option<PathBuf>,

    /// Forward only GET, HEAD and OPTIONS (no WebSocket upgrades) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", env = "DCOS_TOKEN_PROXY_READ_ONLY")]
    pub read_only: Option<bool>,

    /// Refuse paths matching this regular expression, anchored at both ends (repeat
    /// for more), e.g. --deny-path '/mesos/.*'
    #[arg(long, value_name = "REGEX", env = "DCOS_TOKEN_PROXY_DENY_PATH")]
    pub deny_path: Vec<String>,

    /// Refuse these methods, comma-separated, e.g. DELETE,PUT
    #[arg(
        long,
        value_name = "METHODS",
        value_delimiter = ',',
        env = "DCOS_TOKEN_PROXY_DENY_METHODS"
    )]
    pub deny_methods: Vec<String>,

    /// The most client connections served at once; more wait [default: 1024]
    #[arg(long, value_name = "N", env = "DCOS_TOKEN_PROXY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// The largest request head (request line + headers) in bytes; larger gets 431
    /// [default: 65536]
    #[arg(long, value_name = "BYTES", env = "DCOS_TOKEN_PROXY_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,

    /// DC/OS CLI directory [default: $DCOS_DIR, else ~/.dcos]
    #[arg(long, value_name = "DIR", env = "DCOS_TOKEN_PROXY_DCOS_DIR")]
    pub dcos_dir: Option<PathBuf>,

    /// Cluster to use, by name or ID [default: $DCOS_CLUSTER, else the attached cluster]
    #[arg(long, value_name = "NAME|ID", env = "DCOS_TOKEN_PROXY_CLUSTER")]
    pub cluster: Option<String>,

    /// How to follow the DC/OS config for changes: `auto` uses file events and falls back
    /// to polling; `poll` reads the files every second (network file systems)
    /// [default: auto]
    #[arg(long, value_enum, value_name = "MODE", env = "DCOS_TOKEN_PROXY_WATCH")]
    pub watch: Option<WatchMode>,

    /// Master URL; overrides core.dcos_url and $DCOS_URL
    #[arg(long, value_name = "URL", env = "DCOS_TOKEN_PROXY_UPSTREAM")]
    pub upstream: Option<String>,

    /// Reach the master through this proxy: http://[user:pass@]host:port (HTTP CONNECT),
    /// socks5://host:port or socks5h://host:port; `none` ignores the proxy variables
    /// [default: $https_proxy / $http_proxy / $all_proxy, minus $no_proxy]
    #[arg(long, value_name = "URL|none", value_parser = ProxyText::new,
          env = "DCOS_TOKEN_PROXY_UPSTREAM_PROXY", hide_env_values = true)]
    pub upstream_proxy: Option<ProxyText>,

    /// Check the master's certificate against NAME and send it as SNI, while connecting
    /// to the URL's host and port (e.g. through `ssh -L 8443:master.mesos:443 bastion`)
    #[arg(long, value_name = "NAME", env = "DCOS_TOKEN_PROXY_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,

    /// Reach the master through a command's stdin/stdout, run with sh -c for each pooled
    /// connection; %h and %p are the master's host and port, e.g. 'ssh -W %h:%p bastion'
    #[arg(long, value_name = "COMMAND", env = "DCOS_TOKEN_PROXY_PROXY_COMMAND")]
    pub proxy_command: Option<String>,

    /// The proxy's own TOML settings file (see config/dcos-token-proxy.toml)
    #[arg(long, value_name = "FILE", env = "DCOS_TOKEN_PROXY_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do with a client's own Authorization header: `keep` passes `token=…`,
    /// turns `Bearer X` into `token=X` and replaces other schemes; `replace` always sends
    /// the proxy's token [default: keep]
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        env = "DCOS_TOKEN_PROXY_CLIENT_AUTH"
    )]
    pub client_auth: Option<ClientAuth>,

    /// Time to wait for the master's response headers before answering 504 (streams are
    /// not cut once headers arrive) [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_RESPONSE_TIMEOUT")]
    pub response_timeout: Option<Duration>,

    /// Time to wait for a TCP connection to the master [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<Duration>,

    /// Time a client may take to send request headers; also how long an idle keep-alive
    /// connection stays open [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<Duration>,

    /// On SIGINT/SIGTERM, time given to in-flight requests before exiting [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          env = "DCOS_TOKEN_PROXY_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<Duration>,

    /// Log format [default: text]
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "DCOS_TOKEN_PROXY_LOG_FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// More log detail (-v debug, -vv trace); overrides RUST_LOG
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only)
    #[arg(short, long, action = ArgAction::Count)]
    pub quiet: u8,
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
