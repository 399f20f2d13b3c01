//! Command-line flags (clap definitions only).
//!
//! Every flag can also be set through a `DCOS_TOKEN_PROXY_*` environment variable and a
//! key in the `--config` settings file; [`crate::settings::Settings::resolve`] merges
//! them (flags > environment > file > defaults) and validates the result.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::settings::{ClientAuth, LogFormat, WatchMode, parse_duration};

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
    /// Address to listen on, e.g. 127.0.0.1:8079 or 127.0.0.1:0 for any free port
    /// [default: 127.0.0.1:8079]
    #[arg(long, value_name = "ADDR", env = "DCOS_TOKEN_PROXY_LISTEN")]
    pub listen: Option<String>,

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

    /// Time a client may take to send request headers [default: 30s]
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
