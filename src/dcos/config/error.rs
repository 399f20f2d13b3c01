//! What can go wrong while finding and reading the DC/OS CLI config, and how it is told.
//!
//! [`ConfigError`] is the one error of the `config` module; [`ValueSource`] says where a
//! rejected value came from (a key in a file, a variable, a flag) so that every message
//! names it. Messages are short, lowercase, name the file, key or variable and the fix,
//! and never hold a token, a URL's credentials or a line of a file; other rejected values
//! (a URL, a timeout) are shown, shortened.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The longest piece of a rejected value an error message shows, in characters.
const MAX_SHOWN_CHARS: usize = 200;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// A key in a config file.
    File {
        /// The file.
        file: PathBuf,
        /// The dotted key, e.g. `core.dcos_url`.
        key: &'static str,
    },
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl ValueSource {
    /// A key in a config file.
    pub(super) fn file(file: &Path, key: &'static str) -> Self {
        Self::File {
            file: file.to_path_buf(),
            key,
        }
    }
}

impl fmt::Display for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { file, key } => write!(f, "{key} in {}", file.display()),
            Self::Env(var) => f.write_str(var),
            Self::Flag(flag) => f.write_str(flag),
        }
    }
}

/// Everything that can go wrong while finding and reading the DC/OS CLI config.
/// Messages name the file, key or variable involved and the fix; none holds a token.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `--dcos-dir`, no `DCOS_DIR` and no home directory.
    #[error(
        "cannot find the DC/OS CLI config: the home directory is unknown; pass --dcos-dir <dir> or set DCOS_DIR"
    )]
    NoHome,
    /// A relative path with no current directory to resolve it against.
    #[error(
        "cannot make the relative path {} (from {from}) absolute: the current directory is unknown; use an absolute path",
        path.display()
    )]
    RelativePath {
        /// The relative path.
        path: PathBuf,
        /// Where it came from (flag or variable).
        from: &'static str,
    },
    /// The DC/OS directory exists but is not a directory.
    #[error("the DC/OS directory {} is not a directory: fix --dcos-dir / DCOS_DIR", dir.display())]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// Neither layout exists and no URL was given.
    #[error(
        "no DC/OS CLI config in {}{}: run `dcos cluster setup <url>` first, point --dcos-dir / DCOS_DIR at the right directory, or pass --upstream <url> (and set DCOS_ACS_TOKEN)",
        dir.display(),
        if *missing { " (the directory does not exist)" } else { "" }
    )]
    NoConfig {
        /// The DC/OS directory looked in.
        dir: PathBuf,
        /// The directory was found not to exist (a typo in --dcos-dir is the usual cause).
        missing: bool,
    },
    /// `DCOS_CONFIG` names a file that does not exist (and no URL was given).
    #[error(
        "DCOS_CONFIG names {}, which does not exist: fix or unset DCOS_CONFIG, or pass --upstream <url> (and set DCOS_ACS_TOKEN)",
        file.display()
    )]
    NoConfigFile {
        /// The missing file.
        file: PathBuf,
    },
    /// `<root>/clusters` exists but holds no cluster (and no URL was given).
    #[error(
        "no clusters in {}: run `dcos cluster setup <url>` first, or pass --upstream <url> (and set DCOS_ACS_TOKEN)",
        clusters_dir.display()
    )]
    NoClusters {
        /// The `clusters` directory.
        clusters_dir: PathBuf,
    },
    /// A cluster was asked for, but there is no per-cluster layout at all.
    #[error(
        "cluster `{wanted}` (--cluster / DCOS_CLUSTER) not found: {} does not exist; run `dcos cluster setup <url>` first",
        clusters_dir.display()
    )]
    NoClustersDir {
        /// The requested ID or name.
        wanted: String,
        /// The missing `clusters` directory.
        clusters_dir: PathBuf,
    },
    /// The requested cluster matches no ID and no name.
    #[error(
        "no cluster with ID or name `{wanted}` (--cluster / DCOS_CLUSTER) in {} (available: {available}): pass one of those, or run `dcos cluster setup <url>`",
        clusters_dir.display()
    )]
    ClusterNotFound {
        /// The requested ID or name.
        wanted: String,
        /// The `clusters` directory.
        clusters_dir: PathBuf,
        /// The clusters there, as `id (name)`, comma-separated.
        available: String,
    },
    /// The requested name belongs to more than one cluster.
    #[error(
        "more than one cluster in {} is named `{name}` ({ids}): pass the cluster ID instead with --cluster / DCOS_CLUSTER",
        clusters_dir.display()
    )]
    AmbiguousClusterName {
        /// The requested name.
        name: String,
        /// The `clusters` directory.
        clusters_dir: PathBuf,
        /// The matching IDs, comma-separated.
        ids: String,
    },
    /// More than one cluster directory holds an `attached` file.
    #[error(
        "multiple clusters are attached in {} ({ids}): run `dcos cluster attach <name>` to pick one, or pass --cluster <name> / set DCOS_CLUSTER",
        clusters_dir.display()
    )]
    MultipleAttached {
        /// The `clusters` directory.
        clusters_dir: PathBuf,
        /// The attached clusters, as `id (name)`, comma-separated.
        ids: String,
    },
    /// Several clusters and none attached.
    #[error(
        "no cluster is attached in {} (available: {available}): run `dcos cluster attach <name>`, or pass --cluster <name> / set DCOS_CLUSTER",
        clusters_dir.display()
    )]
    NoneAttached {
        /// The `clusters` directory.
        clusters_dir: PathBuf,
        /// The clusters there, as `id (name)`, comma-separated.
        available: String,
    },
    /// An I/O error on a path (permission denied, not found where required, …).
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error (part of the message; not repeated as `source()`).
        error: io::Error,
    },
    /// The file is bigger than the 1 MiB limit on config files.
    #[error("{} is larger than 1 MiB: it is not a DC/OS CLI config", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The path is not a regular file (a directory, a FIFO, a device, …).
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is not UTF-8, so not TOML.
    #[error("{} is not valid UTF-8, so it is not a TOML file", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid TOML.
    #[error(
        "{}{}: {message}; fix the TOML there (or rewrite it with `dcos cluster setup <url>`)",
        path.display(),
        position_suffix(*position)
    )]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based (line, column) of the error, the column counted in characters, when
        /// the parser knows it.
        position: Option<(usize, usize)>,
        /// The parser's short message (never the offending line itself).
        message: String,
    },
    /// A key we use holds a value of the wrong TOML type.
    #[error("{at} must be {expected}")]
    WrongType {
        /// The file and key.
        at: ValueSource,
        /// What it must be.
        expected: &'static str,
    },
    /// The legacy `dcos.toml` is empty or only whitespace: the DC/OS CLI creates it so
    /// the first time it runs, before `dcos cluster setup`. Not set up yet, not a mistake.
    #[error(
        "{} is empty: the DC/OS CLI is installed but no cluster is set up yet; run \
         `dcos cluster setup <url>` (or pass --upstream <url>)",
        file.display()
    )]
    LegacyEmpty {
        /// The empty file.
        file: PathBuf,
    },
    /// No master URL anywhere.
    #[error(
        "{} has no core.dcos_url: run `dcos cluster setup <url>`, or pass --upstream <url>",
        file.display()
    )]
    MissingUrl {
        /// The config file in use.
        file: PathBuf,
    },
    /// The master URL is not an absolute http(s) URL we can use.
    #[error("{at} is not a usable DC/OS URL ({value:?}): {reason}")]
    InvalidUrl {
        /// Where it came from.
        at: ValueSource,
        /// The value (shortened if long).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The master URL carries `user:password@`; the value is not shown.
    #[error(
        "{at} holds credentials (user:password@ in the URL); remove them: the proxy authenticates with the DC/OS token"
    )]
    UrlHasCredentials {
        /// Where it came from.
        at: ValueSource,
    },
    /// The token holds characters that cannot go into an HTTP header. The value is not shown.
    #[error(
        "{at} holds characters that are not allowed in an HTTP header: log in again with `dcos auth login`, or fix the value"
    )]
    InvalidToken {
        /// Where it came from.
        at: ValueSource,
    },
    /// The timeout is not a whole, non-negative number of seconds.
    #[error("{at} must be a whole number of seconds (0 = none), not {value:?}")]
    InvalidTimeout {
        /// Where it came from.
        at: ValueSource,
        /// The value (shortened if long).
        value: String,
    },
}

impl ConfigError {
    /// Whether this only means "no cluster is set up yet" (no DC/OS directory, no
    /// clusters, or the empty legacy file the CLI creates on its first run): the proxy
    /// can start and wait for `dcos cluster setup`, rather than stop. Every other error
    /// is a mistake to fix now.
    pub fn is_not_set_up(&self) -> bool {
        matches!(
            self,
            Self::NoConfig { .. }
                | Self::NoClusters { .. }
                | Self::NoClustersDir { .. }
                | Self::LegacyEmpty { .. }
        )
    }
}

fn position_suffix(position: Option<(usize, usize)>) -> String {
    match position {
        Some((line, column)) => format!(" line {line}, column {column}"),
        None => String::new(),
    }
}

/// Shorten a rejected value for an error message.
pub(super) fn shown(value: &str) -> String {
    if value.chars().count() <= MAX_SHOWN_CHARS {
        value.to_owned()
    } else {
        let mut short: String = value.chars().take(MAX_SHOWN_CHARS).collect();
        short.push('…');
        short
    }
}

/// An I/O error on `path`.
pub(super) fn io_error(path: &Path, error: io::Error) -> ConfigError {
    ConfigError::Io {
        path: path.to_path_buf(),
        error,
    }
}
