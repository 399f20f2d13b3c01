//! Finding and parsing the DC/OS CLI's config (reference §1, §2, §4).
//!
//! This module owns the outside world's *config* format: where the DC/OS CLI keeps its
//! `dcos.toml` (the per-cluster layout `<root>/clusters/<id>/dcos.toml` with its
//! `attached` marker, or the legacy single file), which cluster is the current one, what
//! the keys we use mean, and how the `DCOS_*` environment variables override them. It turns
//! all of that into one validated [`ClusterConfig`] with [`discover`], which the watcher
//! runs again on every change it sees. It holds no policy about watching. One discovery
//! reads one `dcos.toml`, the chosen one; the other clusters' files are read only when a
//! name must be matched (`--cluster` / `DCOS_CLUSTER` that is no cluster's ID) or an error
//! lists the clusters. Files are treated as hostile: bounded in size, checked for UTF-8,
//! and no error message ever echoes a token or the file's contents.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use crate::dcos::token::{Token, TokenError};
use crate::env::Env;
use crate::files::{ReadError, read_bounded};

/// Environment variable naming the DC/OS CLI's root directory.
pub const ENV_DCOS_DIR: &str = "DCOS_DIR";
/// Environment variable picking a cluster by ID or `cluster.name`.
pub const ENV_DCOS_CLUSTER: &str = "DCOS_CLUSTER";
/// Environment variable naming the legacy single config file.
pub const ENV_DCOS_CONFIG: &str = "DCOS_CONFIG";
/// Environment variable overriding `core.dcos_url`.
pub const ENV_DCOS_URL: &str = "DCOS_URL";
/// Environment variable overriding `core.dcos_acs_token`.
pub const ENV_DCOS_ACS_TOKEN: &str = "DCOS_ACS_TOKEN";
/// Environment variable overriding `core.ssl_verify`.
pub const ENV_DCOS_SSL_VERIFY: &str = "DCOS_SSL_VERIFY";
/// Environment variable overriding `core.timeout`.
pub const ENV_DCOS_TIMEOUT: &str = "DCOS_TIMEOUT";

/// The command-line flag that overrides every other source of the master URL.
pub const FLAG_UPSTREAM: &str = "--upstream";
/// The command-line flag naming the DC/OS directory.
pub const FLAG_DCOS_DIR: &str = "--dcos-dir";

/// The default root directory's name under the user's home: `~/.dcos`.
pub const DEFAULT_DIR_NAME: &str = ".dcos";
/// The per-cluster layout's directory under the root.
pub const CLUSTERS_DIR: &str = "clusters";
/// The staging directory inside `clusters/` used by `dcos cluster setup`; never a cluster.
pub const SETUP_DIR: &str = "setup";
/// The marker file that makes a cluster directory the current one.
pub const ATTACHED_FILE: &str = "attached";
/// The config file's name, in each cluster directory and in the legacy root.
pub const CONFIG_FILE: &str = "dcos.toml";
/// The largest config file we read, in bytes (1 MiB). Real files are well under 10 KiB;
/// anything bigger is not a DC/OS CLI config and is refused rather than read into memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The longest piece of a rejected value an error message shows, in characters.
const MAX_SHOWN_CHARS: usize = 200;

/// The `[core]` table.
pub const KEY_CORE: &str = "core";
/// The `[cluster]` table.
pub const KEY_CLUSTER: &str = "cluster";
/// The master URL key.
pub const KEY_DCOS_URL: &str = "core.dcos_url";
/// The token key.
pub const KEY_DCOS_ACS_TOKEN: &str = "core.dcos_acs_token";
/// The TLS verification key.
pub const KEY_SSL_VERIFY: &str = "core.ssl_verify";
/// The request timeout key.
pub const KEY_TIMEOUT: &str = "core.timeout";
/// The cluster's human name key.
pub const KEY_CLUSTER_NAME: &str = "cluster.name";

/// What the caller (flags/settings) asks for. All optional.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// --dcos-dir; when None: env DCOS_DIR, else `home`/.dcos. Relative values are made absolute against `cwd`.
    pub dcos_dir: Option<PathBuf>,
    /// --cluster (NAME or ID); when None: env DCOS_CLUSTER.
    pub cluster: Option<String>,
    /// --upstream URL; overrides DCOS_URL, which overrides core.dcos_url.
    pub upstream: Option<String>,
    /// The user's home directory (main passes the real one; tests a temp dir).
    pub home: Option<PathBuf>,
    /// Current directory for making relative paths absolute.
    pub cwd: Option<PathBuf>,
}

/// TLS verification mode, from `core.ssl_verify` / DCOS_SSL_VERIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslVerify {
    /// verify with the OS trust store ("true", TOML true, empty or absent)
    System,
    /// do not verify ("false", TOML false)
    Insecure,
    /// verify with exactly this PEM CA bundle (any other string is a path)
    CaBundle(PathBuf),
}

impl SslVerify {
    /// Interpret the string form used by the file and by `DCOS_SSL_VERIFY`: empty or
    /// `true` → [`SslVerify::System`], `false` → [`SslVerify::Insecure`] (both
    /// case-insensitive, as the Python CLI lower-cases them), anything else is the path of
    /// a PEM CA bundle. Surrounding whitespace is ignored. Never fails.
    pub fn from_setting(value: &str) -> Self {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("true") {
            Self::System
        } else if value.eq_ignore_ascii_case("false") {
            Self::Insecure
        } else {
            Self::CaBundle(PathBuf::from(value))
        }
    }
}

/// Where the active settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `<root>/clusters/<id>/dcos.toml`
    Cluster {
        /// The cluster's ID (its directory name).
        id: String,
        /// The absolute path of its `dcos.toml` (which may not exist yet).
        file: PathBuf,
    },
    /// `<root>/dcos.toml` or $DCOS_CONFIG
    Legacy {
        /// The absolute path of the file.
        file: PathBuf,
    },
    /// No DC/OS directory/file at all, but the URL came from --upstream or DCOS_URL.
    EnvOnly,
}

impl ConfigSource {
    /// The config file behind these settings, if any: what a watcher watches.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Cluster { file, .. } | Self::Legacy { file } => Some(file),
            Self::EnvOnly => None,
        }
    }
}

/// The validated view of the active cluster: everything the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where the settings came from.
    pub source: ConfigSource,
    /// The DC/OS directory in use (absolute), even if it does not exist (EnvOnly).
    pub dcos_dir: PathBuf,
    /// `cluster.name`, if any.
    pub name: Option<String>,
    /// The master URL: validated http::Uri with scheme http or https and an authority; may carry a path prefix (keep it; strip one trailing '/').
    pub dcos_url: Uri,
    /// `core.dcos_acs_token` or DCOS_ACS_TOKEN. None = not logged in (NOT an error).
    pub token: Option<Token>,
    /// How to verify the master's TLS certificate.
    pub ssl_verify: SslVerify,
    /// `core.timeout` / DCOS_TIMEOUT in seconds; 0 or absent = None.
    pub timeout: Option<Duration>,
}

/// The token as found in one file, kept apart from its validation so that a valid
/// `DCOS_ACS_TOKEN` can still override a file whose token is unusable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FileToken {
    /// No `core.dcos_acs_token`, or an empty one: not logged in.
    #[default]
    Absent,
    /// A usable token.
    Valid(Token),
    /// A token that holds characters not allowed in an HTTP header (the value is dropped).
    NotHeaderSafe,
}

/// The keys we use from one `dcos.toml`, parsed and type-checked but not yet merged with
/// the environment. Every other key in the file is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DcosFile {
    /// `core.dcos_url` as written (trimmed; empty counts as absent). Validated only after
    /// the overrides, because `DCOS_URL` or `--upstream` may replace it.
    pub dcos_url: Option<String>,
    /// `core.dcos_acs_token`.
    pub token: FileToken,
    /// `core.ssl_verify`; None when absent.
    pub ssl_verify: Option<SslVerify>,
    /// `core.timeout`; None when absent or 0.
    pub timeout: Option<Duration>,
    /// `cluster.name`; None when absent or empty.
    pub name: Option<String>,
}

/// One cluster directory under `<root>/clusters/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCandidate {
    /// The directory name: the cluster ID.
    pub id: String,
    /// The directory's path.
    pub dir: PathBuf,
    /// Whether the directory holds a regular file named `attached`.
    pub attached: bool,
    /// `cluster.name` from its `dcos.toml`; None when absent or when the file cannot be
    /// read or parsed (such a cluster can still be picked by ID).
    pub name: Option<String>,
}

/// The cluster chosen by [`choose_cluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The cluster ID (directory name).
    pub id: String,
    /// The cluster directory.
    pub dir: PathBuf,
    /// `<dir>/dcos.toml`, which may not exist (it then reads as an empty file).
    pub file: PathBuf,
}

/// Which config layout is present under a DC/OS directory.
#[derive(Debug)]
pub enum Location {
    /// The per-cluster layout, with the current cluster chosen.
    Cluster(Selected),
    /// The legacy single file (`<root>/dcos.toml` or `$DCOS_CONFIG`), which exists.
    Legacy {
        /// The file's path.
        file: PathBuf,
    },
    /// No config at all. Fine when the URL comes from `--upstream` or `DCOS_URL`
    /// ([`ConfigSource::EnvOnly`]); otherwise this is the error to report.
    Unconfigured(ConfigError),
}

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
    fn file(file: &Path, key: &'static str) -> Self {
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
    /// The file is bigger than [`MAX_CONFIG_BYTES`].
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
        /// 1-based (line, column) of the error, when the parser knows it.
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
    /// clusters): the proxy can start and wait for `dcos cluster setup`, rather than
    /// stop. Every other error is a mistake to fix now.
    pub fn is_not_set_up(&self) -> bool {
        matches!(
            self,
            Self::NoConfig { .. } | Self::NoClusters { .. } | Self::NoClustersDir { .. }
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
fn shown(value: &str) -> String {
    if value.chars().count() <= MAX_SHOWN_CHARS {
        value.to_owned()
    } else {
        let mut short: String = value.chars().take(MAX_SHOWN_CHARS).collect();
        short.push('…');
        short
    }
}

fn io_error(path: &Path, error: io::Error) -> ConfigError {
    ConfigError::Io {
        path: path.to_path_buf(),
        error,
    }
}

// ---------------------------------------------------------------------------------------
// Finding the directory and the file
// ---------------------------------------------------------------------------------------

/// Make `path` absolute against `cwd`; `from` names the flag or variable for the error.
fn absolute(path: &Path, cwd: Option<&Path>, from: &'static str) -> Result<PathBuf, ConfigError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    match cwd {
        Some(cwd) => Ok(cwd.join(path)),
        None => Err(ConfigError::RelativePath {
            path: path.to_path_buf(),
            from,
        }),
    }
}

/// The DC/OS CLI's root directory: `opts.dcos_dir`, else `DCOS_DIR`, else `<home>/.dcos`,
/// made absolute against `opts.cwd`. The directory need not exist.
pub fn resolve_dcos_dir(opts: &DiscoverOptions, env: &Env) -> Result<PathBuf, ConfigError> {
    let cwd = opts.cwd.as_deref();
    if let Some(dir) = opts
        .dcos_dir
        .as_deref()
        .filter(|d| !d.as_os_str().is_empty())
    {
        return absolute(dir, cwd, FLAG_DCOS_DIR);
    }
    if let Some(dir) = env.get(ENV_DCOS_DIR) {
        return absolute(Path::new(dir), cwd, ENV_DCOS_DIR);
    }
    match opts.home.as_deref().filter(|h| !h.as_os_str().is_empty()) {
        Some(home) => absolute(&home.join(DEFAULT_DIR_NAME), cwd, "the home directory"),
        None => Err(ConfigError::NoHome),
    }
}

/// The cluster asked for: `opts.cluster`, else `DCOS_CLUSTER` (empty counts as unset).
pub fn wanted_cluster<'a>(opts: &'a DiscoverOptions, env: &'a Env) -> Option<&'a str> {
    opts.cluster
        .as_deref()
        .filter(|c| !c.is_empty())
        .or_else(|| env.get(ENV_DCOS_CLUSTER))
}

/// The legacy file named by `DCOS_CONFIG`, made absolute against `opts.cwd`.
pub fn legacy_config_path(
    opts: &DiscoverOptions,
    env: &Env,
) -> Result<Option<PathBuf>, ConfigError> {
    env.get(ENV_DCOS_CONFIG)
        .map(|p| absolute(Path::new(p), opts.cwd.as_deref(), ENV_DCOS_CONFIG))
        .transpose()
}

/// The URL that overrides the file: `opts.upstream`, else `DCOS_URL`, with where it came
/// from. Not yet validated.
pub fn url_override<'a>(opts: &'a DiscoverOptions, env: &'a Env) -> Option<(&'a str, ValueSource)> {
    if let Some(url) = opts.upstream.as_deref().filter(|u| !u.trim().is_empty()) {
        return Some((url, ValueSource::Flag(FLAG_UPSTREAM)));
    }
    env.get(ENV_DCOS_URL)
        .filter(|u| !u.trim().is_empty())
        .map(|url| (url, ValueSource::Env(ENV_DCOS_URL)))
}

/// Whether `path` exists (following symlinks). Errors other than "not found" are reported.
fn exists(path: &Path) -> Result<bool, ConfigError> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, e)),
    }
}

/// The cluster directories under `clusters_dir`, sorted by ID: every sub-directory except
/// `setup` and hidden ones (plain files and names that are not UTF-8 are skipped), with
/// their `attached` marker. Reads no file: every `name` is `None` until [`read_names`].
pub(crate) fn list_clusters(clusters_dir: &Path) -> Result<Vec<ClusterCandidate>, ConfigError> {
    let entries = fs::read_dir(clusters_dir).map_err(|e| io_error(clusters_dir, e))?;
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(clusters_dir, e))?;
        let Ok(id) = entry.file_name().into_string() else {
            tracing::warn!(path = %entry.path().display(), "skipping a cluster directory whose name is not UTF-8");
            continue;
        };
        if id.starts_with('.') || id == SETUP_DIR {
            continue;
        }
        let dir = entry.path();
        if !fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let attached = fs::metadata(dir.join(ATTACHED_FILE)).is_ok_and(|m| m.is_file());
        candidates.push(ClusterCandidate {
            id,
            dir,
            attached,
            name: None,
        });
    }
    candidates.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(candidates)
}

/// Fill in each candidate's `cluster.name`, reading every cluster's `dcos.toml`; a file
/// that cannot be read or parsed only leaves the name unknown (it is reported if that
/// cluster is chosen).
fn read_names(files: &dyn ReadConfig, candidates: &mut [ClusterCandidate]) {
    for c in candidates {
        c.name = read_cluster_name(files, &c.dir.join(CONFIG_FILE));
    }
}

/// `cluster.name` of one cluster's file, or None (absent, empty or unreadable).
fn read_cluster_name(files: &dyn ReadConfig, file: &Path) -> Option<String> {
    let text = match read_optional(files, file) {
        Ok(text) => text?,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read a cluster's name");
            return None;
        }
    };
    match parse_table(file, &text).and_then(|t| cluster_name(file, &t)) {
        Ok(name) => name,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read a cluster's name");
            None
        }
    }
}

fn describe(candidates: &[&ClusterCandidate]) -> String {
    if candidates.is_empty() {
        return "none".to_owned();
    }
    candidates
        .iter()
        .map(|c| match &c.name {
            Some(name) => format!("{} ({name})", c.id),
            None => c.id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn selected(c: &ClusterCandidate) -> Selected {
    Selected {
        id: c.id.clone(),
        dir: c.dir.clone(),
        file: c.dir.join(CONFIG_FILE),
    }
}

/// Choose the current cluster among `candidates` (no I/O; reference §1):
/// 1. `wanted` matches a directory name (ID) exactly, else exactly one `cluster.name`;
///    more than one name match or no match is an error, with no fallback;
/// 2. else the only candidate;
/// 3. else the one that is attached; several or none attached is an error.
///
/// No candidates at all is [`ConfigError::NoClusters`] (or, with `wanted`,
/// [`ConfigError::ClusterNotFound`]).
pub fn choose_cluster(
    clusters_dir: &Path,
    candidates: &[ClusterCandidate],
    wanted: Option<&str>,
) -> Result<Selected, ConfigError> {
    let all: Vec<&ClusterCandidate> = candidates.iter().collect();
    if let Some(wanted) = wanted {
        if let Some(c) = candidates.iter().find(|c| c.id == wanted) {
            return Ok(selected(c));
        }
        let named: Vec<&ClusterCandidate> = candidates
            .iter()
            .filter(|c| c.name.as_deref() == Some(wanted))
            .collect();
        return match named.as_slice() {
            [one] => Ok(selected(one)),
            [] => Err(ConfigError::ClusterNotFound {
                wanted: wanted.to_owned(),
                clusters_dir: clusters_dir.to_path_buf(),
                available: describe(&all),
            }),
            many => Err(ConfigError::AmbiguousClusterName {
                name: wanted.to_owned(),
                clusters_dir: clusters_dir.to_path_buf(),
                ids: many
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    }
    match candidates {
        [] => {
            return Err(ConfigError::NoClusters {
                clusters_dir: clusters_dir.to_path_buf(),
            });
        }
        [one] => return Ok(selected(one)),
        _ => {}
    }
    let attached: Vec<&ClusterCandidate> = candidates.iter().filter(|c| c.attached).collect();
    match attached.as_slice() {
        [one] => Ok(selected(one)),
        [] => Err(ConfigError::NoneAttached {
            clusters_dir: clusters_dir.to_path_buf(),
            available: describe(&all),
        }),
        many => Err(ConfigError::MultipleAttached {
            clusters_dir: clusters_dir.to_path_buf(),
            ids: describe(many),
        }),
    }
}

/// Choose the current cluster among the `candidates` listed (without names) from
/// `clusters_dir`, reading their names only when they are needed: to match `wanted`
/// against `cluster.name` once no ID matched, or to list the clusters in an error.
/// Picking by ID, the only cluster or the attached one reads no file here, so discovery
/// reads just the chosen cluster's `dcos.toml` (it runs on every change the watcher sees).
fn select_cluster(
    files: &dyn ReadConfig,
    clusters_dir: &Path,
    mut candidates: Vec<ClusterCandidate>,
    wanted: Option<&str>,
) -> Result<Selected, ConfigError> {
    // Without names, a success is the same as with them: names only add matches for
    // `wanted` after every ID has failed to match, and only that path errs without them.
    choose_cluster(clusters_dir, &candidates, wanted).or_else(|_| {
        read_names(files, &mut candidates);
        choose_cluster(clusters_dir, &candidates, wanted)
    })
}

/// Find which layout `dcos_dir` uses (reference §1): the per-cluster layout when
/// `<dcos_dir>/clusters` exists (choosing the cluster), else the legacy file
/// (`dcos_config`, i.e. `$DCOS_CONFIG`, when given, else `<dcos_dir>/dcos.toml`) when it
/// exists, else [`Location::Unconfigured`]. An empty `clusters/` is also unconfigured.
/// Asking for a cluster (`wanted`) without a per-cluster layout is an error.
pub(crate) fn locate(
    files: &dyn ReadConfig,
    dcos_dir: &Path,
    wanted: Option<&str>,
    dcos_config: Option<&Path>,
) -> Result<Location, ConfigError> {
    let root_exists = match fs::metadata(dcos_dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(ConfigError::NotADirectory {
                dir: dcos_dir.to_path_buf(),
            });
        }
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_error(dcos_dir, e)),
    };
    let clusters_dir = dcos_dir.join(CLUSTERS_DIR);
    if root_exists && exists(&clusters_dir)? {
        let candidates = list_clusters(&clusters_dir)?;
        if wanted.is_none() && candidates.is_empty() {
            return Ok(Location::Unconfigured(ConfigError::NoClusters {
                clusters_dir,
            }));
        }
        return select_cluster(files, &clusters_dir, candidates, wanted).map(Location::Cluster);
    }
    if let Some(wanted) = wanted {
        return Err(ConfigError::NoClustersDir {
            wanted: wanted.to_owned(),
            clusters_dir,
        });
    }
    let legacy = match dcos_config {
        Some(file) => file.to_path_buf(),
        None => dcos_dir.join(CONFIG_FILE),
    };
    if exists(&legacy)? {
        return Ok(Location::Legacy { file: legacy });
    }
    Ok(Location::Unconfigured(match dcos_config {
        Some(file) => ConfigError::NoConfigFile {
            file: file.to_path_buf(),
        },
        None => ConfigError::NoConfig {
            dir: dcos_dir.to_path_buf(),
            missing: !root_exists,
        },
    }))
}

// ---------------------------------------------------------------------------------------
// Reading and parsing one file
// ---------------------------------------------------------------------------------------

/// How discovery reads a config file's bytes: [`Disk`] in the program, a recorder in
/// tests that count the reads.
pub(crate) trait ReadConfig {
    /// The bytes of the regular file at `path` (at most [`MAX_CONFIG_BYTES`]).
    fn read(&self, path: &Path) -> Result<Vec<u8>, ReadError>;
}

/// The real filesystem, through [`read_bounded`].
pub(crate) struct Disk;

impl ReadConfig for Disk {
    fn read(&self, path: &Path) -> Result<Vec<u8>, ReadError> {
        read_bounded(path, MAX_CONFIG_BYTES)
    }
}

/// Read a config file's text, treating it as hostile: it must be a regular file of at
/// most [`MAX_CONFIG_BYTES`] bytes and valid UTF-8.
pub fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    read_text(&Disk, path)
}

fn read_text(files: &dyn ReadConfig, path: &Path) -> Result<String, ConfigError> {
    let bytes = files.read(path).map_err(|e| match e {
        ReadError::Io(e) => io_error(path, e),
        ReadError::NotAFile => ConfigError::NotAFile {
            path: path.to_path_buf(),
        },
        ReadError::TooLarge => ConfigError::TooLarge {
            path: path.to_path_buf(),
        },
    })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Like [`read_config_text`], but a missing file is `Ok(None)`: a cluster directory
/// without `dcos.toml` reads as an empty file, as the Go CLI does.
pub(crate) fn read_optional(
    files: &dyn ReadConfig,
    path: &Path,
) -> Result<Option<String>, ConfigError> {
    match read_text(files, path) {
        Ok(text) => Ok(Some(text)),
        Err(ConfigError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Parse TOML into a table. The error is rebuilt from the parser's short message and
/// position, never from its `Display`, which quotes the offending line (maybe a token).
fn parse_table(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            position: e.span().map(|span| line_column(text, span.start)),
            message: e.message().replace(['\n', '\r'], " ").trim().to_owned(),
        })
}

fn sub_table<'a>(
    path: &Path,
    table: &'a toml::Table,
    key: &'static str,
) -> Result<Option<&'a toml::Table>, ConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t)),
        Some(_) => Err(ConfigError::WrongType {
            at: ValueSource::file(path, key),
            expected: "a table",
        }),
    }
}

/// The value of `full_key` (`table.short`) in an optional table.
fn value<'a>(table: Option<&'a toml::Table>, full_key: &str) -> Option<&'a toml::Value> {
    let short = full_key.rsplit('.').next().unwrap_or(full_key);
    table?.get(short)
}

fn string_value<'a>(
    path: &Path,
    table: Option<&'a toml::Table>,
    key: &'static str,
) -> Result<Option<&'a str>, ConfigError> {
    match value(table, key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ConfigError::WrongType {
            at: ValueSource::file(path, key),
            expected: "a string",
        }),
    }
}

fn cluster_name(path: &Path, table: &toml::Table) -> Result<Option<String>, ConfigError> {
    let cluster = sub_table(path, table, KEY_CLUSTER)?;
    Ok(string_value(path, cluster, KEY_CLUSTER_NAME)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

/// Parse a timeout in seconds from its string form (file or `DCOS_TIMEOUT`).
fn parse_timeout_str(
    value: &str,
    at: impl FnOnce() -> ValueSource,
) -> Result<Option<Duration>, ConfigError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    match trimmed.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(secs) => Ok(Some(Duration::from_secs(secs))),
        Err(_) => Err(ConfigError::InvalidTimeout {
            at: at(),
            value: shown(trimmed),
        }),
    }
}

/// Parse one `dcos.toml`'s text. `path` is only used in error messages. An empty text is
/// a valid, empty file. Unknown keys and sections are ignored; a wrong type for a key we
/// use, bad TOML, or an unusable `core.timeout` is an error naming the file and the key.
/// The URL is checked later, by [`apply_overrides`], since an override may replace it.
pub fn parse_file(path: &Path, text: &str) -> Result<DcosFile, ConfigError> {
    let table = parse_table(path, text)?;
    let core = sub_table(path, &table, KEY_CORE)?;

    let dcos_url = string_value(path, core, KEY_DCOS_URL)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);

    let token = match string_value(path, core, KEY_DCOS_ACS_TOKEN)? {
        None => FileToken::Absent,
        Some(raw) => match Token::new(raw) {
            Ok(token) => FileToken::Valid(token),
            Err(TokenError::Empty) => FileToken::Absent,
            Err(TokenError::NotHeaderSafe) => FileToken::NotHeaderSafe,
        },
    };

    let ssl_verify = match value(core, KEY_SSL_VERIFY) {
        None => None,
        Some(toml::Value::Boolean(true)) => Some(SslVerify::System),
        Some(toml::Value::Boolean(false)) => Some(SslVerify::Insecure),
        Some(toml::Value::String(s)) => Some(SslVerify::from_setting(s)),
        Some(_) => {
            return Err(ConfigError::WrongType {
                at: ValueSource::file(path, KEY_SSL_VERIFY),
                expected: "\"true\", \"false\", the path of a CA bundle, or a boolean",
            });
        }
    };

    let at_timeout = || ValueSource::file(path, KEY_TIMEOUT);
    let timeout = match value(core, KEY_TIMEOUT) {
        None => None,
        Some(toml::Value::Integer(0)) => None,
        Some(toml::Value::Integer(secs)) => match u64::try_from(*secs) {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                return Err(ConfigError::InvalidTimeout {
                    at: at_timeout(),
                    value: secs.to_string(),
                });
            }
        },
        Some(toml::Value::String(s)) => parse_timeout_str(s, at_timeout)?,
        Some(_) => {
            return Err(ConfigError::WrongType {
                at: at_timeout(),
                expected: "a whole number of seconds",
            });
        }
    };

    let name = cluster_name(path, &table)?;

    Ok(DcosFile {
        dcos_url,
        token,
        ssl_verify,
        timeout,
        name,
    })
}

// ---------------------------------------------------------------------------------------
// Validating: overrides, URL, token
// ---------------------------------------------------------------------------------------

/// Validate a master URL: an absolute `http`/`https` URL with a host, no credentials, no
/// query and no fragment. A path prefix is kept, minus one trailing `/`.
pub fn parse_dcos_url(raw: &str, at: &ValueSource) -> Result<Uri, ConfigError> {
    let value = raw.trim();
    let invalid = |reason: &str| ConfigError::InvalidUrl {
        at: at.clone(),
        value: shown(value),
        reason: reason.to_owned(),
    };
    let uri: Uri = value
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(authority)) => authority,
        (Some("http" | "https"), None) => return Err(invalid("it has no host")),
        (Some(_), _) => return Err(invalid("the scheme must be http or https")),
        (None, _) => {
            return Err(invalid(
                "it must be an absolute URL such as https://master.example.com",
            ));
        }
    };
    if authority.as_str().contains('@') {
        return Err(ConfigError::UrlHasCredentials { at: at.clone() });
    }
    if authority.host().is_empty() {
        return Err(invalid("it has no host"));
    }
    if uri.query().is_some() || value.contains('?') {
        return Err(invalid("it must not have a query (?…)"));
    }
    if value.contains('#') {
        return Err(invalid("it must not have a fragment (#…)"));
    }
    let path = uri.path();
    match path.strip_suffix('/') {
        Some(prefix) if !prefix.is_empty() => {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(
                prefix
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?,
            );
            Uri::from_parts(parts).map_err(|e| invalid(&e.to_string()))
        }
        _ => Ok(uri),
    }
}

/// Merge one parsed file with the overrides and validate the result (no I/O):
/// `--upstream` > `DCOS_URL` > `core.dcos_url`; `DCOS_ACS_TOKEN` > `core.dcos_acs_token`;
/// `DCOS_SSL_VERIFY` > `core.ssl_verify` > system roots; `DCOS_TIMEOUT` > `core.timeout`.
/// Empty variables count as unset. For [`ConfigSource::EnvOnly`] pass
/// `DcosFile::default()`.
pub fn apply_overrides(
    source: ConfigSource,
    dcos_dir: PathBuf,
    file: &DcosFile,
    opts: &DiscoverOptions,
    env: &Env,
) -> Result<ClusterConfig, ConfigError> {
    let file_path = source.file().map(Path::to_path_buf);

    let dcos_url = match (url_override(opts, env), &file.dcos_url, &file_path) {
        (Some((url, at)), _, _) => parse_dcos_url(url, &at)?,
        (None, Some(url), Some(path)) => {
            parse_dcos_url(url, &ValueSource::file(path, KEY_DCOS_URL))?
        }
        (None, _, Some(path)) => return Err(ConfigError::MissingUrl { file: path.clone() }),
        (None, _, None) => {
            return Err(ConfigError::NoConfig {
                dir: dcos_dir,
                missing: false,
            });
        }
    };

    let env_token = match env.get(ENV_DCOS_ACS_TOKEN).map(Token::new) {
        None | Some(Err(TokenError::Empty)) => None,
        Some(Ok(token)) => Some(token),
        Some(Err(TokenError::NotHeaderSafe)) => {
            return Err(ConfigError::InvalidToken {
                at: ValueSource::Env(ENV_DCOS_ACS_TOKEN),
            });
        }
    };
    let token = match (env_token, &file.token, &file_path) {
        (Some(token), _, _) => Some(token),
        (None, FileToken::Valid(token), _) => Some(token.clone()),
        (None, FileToken::Absent, _) => None,
        (None, FileToken::NotHeaderSafe, path) => {
            return Err(ConfigError::InvalidToken {
                at: match path {
                    Some(path) => ValueSource::file(path, KEY_DCOS_ACS_TOKEN),
                    None => ValueSource::Env(ENV_DCOS_ACS_TOKEN),
                },
            });
        }
    };

    let ssl_verify = match env.get(ENV_DCOS_SSL_VERIFY) {
        Some(value) => SslVerify::from_setting(value),
        None => file.ssl_verify.clone().unwrap_or(SslVerify::System),
    };

    let timeout = match env.get(ENV_DCOS_TIMEOUT) {
        Some(value) => parse_timeout_str(value, || ValueSource::Env(ENV_DCOS_TIMEOUT))?,
        None => file.timeout,
    };

    Ok(ClusterConfig {
        source,
        dcos_dir,
        name: file.name.clone(),
        dcos_url,
        token,
        ssl_verify,
        timeout,
    })
}

/// Find, read and validate the DC/OS CLI config of the current cluster, once:
/// [`resolve_dcos_dir`], [`locate`], [`read_config_text`], [`parse_file`],
/// [`apply_overrides`]. With no config at all but a URL from `--upstream` or `DCOS_URL`,
/// the result is [`ConfigSource::EnvOnly`]. A missing token is not an error.
pub fn discover(opts: &DiscoverOptions, env: &Env) -> Result<ClusterConfig, ConfigError> {
    discover_with(&Disk, opts, env)
}

/// [`discover`], reading the config files through `files`.
fn discover_with(
    files: &dyn ReadConfig,
    opts: &DiscoverOptions,
    env: &Env,
) -> Result<ClusterConfig, ConfigError> {
    let dcos_dir = resolve_dcos_dir(opts, env)?;
    let dcos_config = legacy_config_path(opts, env)?;
    let location = locate(
        files,
        &dcos_dir,
        wanted_cluster(opts, env),
        dcos_config.as_deref(),
    )?;
    let (source, file) = match location {
        Location::Cluster(selected) => {
            let text = read_optional(files, &selected.file)?.unwrap_or_default();
            let file = parse_file(&selected.file, &text)?;
            let source = ConfigSource::Cluster {
                id: selected.id,
                file: selected.file,
            };
            (source, file)
        }
        Location::Legacy { file: path } => {
            let text = read_text(files, &path)?;
            let file = parse_file(&path, &text)?;
            (ConfigSource::Legacy { file: path }, file)
        }
        Location::Unconfigured(error) => {
            if url_override(opts, env).is_none() {
                return Err(error);
            }
            (ConfigSource::EnvOnly, DcosFile::default())
        }
    };
    apply_overrides(source, dcos_dir, &file, opts, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fake token every fixture uses; it must never appear in an error.
    const TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJ1aWQiOiJhbGljZSJ9.sig";
    /// The start every fixture token shares (a JWT header), also never in an error.
    const TOKEN_MARK: &str = "eyJ";

    fn fixture(case: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dcos")
            .join(case)
    }

    fn opts(case: &str) -> DiscoverOptions {
        DiscoverOptions {
            dcos_dir: Some(fixture(case)),
            ..DiscoverOptions::default()
        }
    }

    fn with_cluster(case: &str, cluster: &str) -> DiscoverOptions {
        DiscoverOptions {
            cluster: Some(cluster.to_owned()),
            ..opts(case)
        }
    }

    fn env<const N: usize>(pairs: [(&str, &str); N]) -> Env {
        Env::from_pairs(pairs)
    }

    fn no_env() -> Env {
        Env::default()
    }

    fn token() -> Token {
        Token::new(TOKEN).unwrap()
    }

    /// Discover, expecting an error; check that neither its message nor its Debug form
    /// leaks a token, and return the message.
    fn discover_err(opts: &DiscoverOptions, env: &Env) -> (ConfigError, String) {
        let err = discover(opts, env).expect_err("discover should fail");
        let msg = err.to_string();
        assert_no_secret(&msg);
        assert_no_secret(&format!("{err:?}"));
        (err, msg)
    }

    fn assert_no_secret(text: &str) {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(!text.contains(TOKEN_MARK), "token leaked: {text}");
        assert!(!text.contains("hunter2"), "password leaked: {text}");
    }

    fn cluster_file(case: &str, id: &str) -> PathBuf {
        fixture(case).join("clusters").join(id).join(CONFIG_FILE)
    }

    // ---- the root directory ------------------------------------------------------------

    #[test]
    fn dcos_dir_flag_beats_env_beats_home() {
        let all = DiscoverOptions {
            dcos_dir: Some("/flag".into()),
            home: Some("/home/u".into()),
            ..DiscoverOptions::default()
        };
        let e = env([(ENV_DCOS_DIR, "/env")]);
        assert_eq!(resolve_dcos_dir(&all, &e).unwrap(), PathBuf::from("/flag"));
        let no_flag = DiscoverOptions {
            dcos_dir: None,
            ..all.clone()
        };
        assert_eq!(
            resolve_dcos_dir(&no_flag, &e).unwrap(),
            PathBuf::from("/env")
        );
        assert_eq!(
            resolve_dcos_dir(&no_flag, &no_env()).unwrap(),
            PathBuf::from("/home/u/.dcos")
        );
        // An empty DCOS_DIR is unset.
        assert_eq!(
            resolve_dcos_dir(&no_flag, &env([(ENV_DCOS_DIR, "")])).unwrap(),
            PathBuf::from("/home/u/.dcos")
        );
    }

    #[test]
    fn dcos_dir_without_home_is_an_error_naming_the_fix() {
        let err = resolve_dcos_dir(&DiscoverOptions::default(), &no_env()).unwrap_err();
        assert!(matches!(err, ConfigError::NoHome));
        let msg = err.to_string();
        assert!(
            msg.contains("--dcos-dir") && msg.contains("DCOS_DIR"),
            "{msg}"
        );
    }

    #[test]
    fn relative_dirs_are_made_absolute_against_cwd() {
        let o = DiscoverOptions {
            dcos_dir: Some("rel/dcos".into()),
            cwd: Some("/work".into()),
            ..DiscoverOptions::default()
        };
        assert_eq!(
            resolve_dcos_dir(&o, &no_env()).unwrap(),
            PathBuf::from("/work/rel/dcos")
        );
        let o = DiscoverOptions {
            cwd: Some("/work".into()),
            ..DiscoverOptions::default()
        };
        assert_eq!(
            resolve_dcos_dir(&o, &env([(ENV_DCOS_DIR, "x")])).unwrap(),
            PathBuf::from("/work/x")
        );
        // Without a cwd a relative path is refused rather than guessed.
        let o = DiscoverOptions::default();
        let err = resolve_dcos_dir(&o, &env([(ENV_DCOS_DIR, "x")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::RelativePath {
                    from: ENV_DCOS_DIR,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("DCOS_DIR"));
    }

    #[test]
    fn dcos_dir_from_home_is_used_by_discover() {
        let o = DiscoverOptions {
            home: Some(fixture("home_is_not_here")),
            upstream: Some("https://up.example.com".into()),
            ..DiscoverOptions::default()
        };
        let cfg = discover(&o, &no_env()).unwrap();
        assert_eq!(cfg.dcos_dir, fixture("home_is_not_here").join(".dcos"));
        assert_eq!(cfg.source, ConfigSource::EnvOnly);
    }

    // ---- choosing the cluster ----------------------------------------------------------

    #[test]
    fn single_cluster_is_used() {
        let id = "0f1e2d3c-0000-4000-8000-000000000001";
        let cfg = discover(&opts("single"), &no_env()).unwrap();
        assert_eq!(
            cfg.source,
            ConfigSource::Cluster {
                id: id.to_owned(),
                file: cluster_file("single", id),
            }
        );
        assert_eq!(cfg.dcos_dir, fixture("single"));
        assert_eq!(cfg.name.as_deref(), Some("single"));
        assert_eq!(cfg.dcos_url, "https://master.single.example.com/");
        assert_eq!(cfg.token, Some(token()));
        assert_eq!(cfg.ssl_verify, SslVerify::System);
        assert_eq!(cfg.timeout, Some(Duration::from_secs(180)));
        assert_eq!(
            cfg.source.file(),
            Some(cluster_file("single", id).as_path())
        );
    }

    #[test]
    fn the_attached_cluster_is_used_among_several() {
        let cfg = discover(&opts("attached"), &no_env()).unwrap();
        assert_eq!(
            cfg.source,
            ConfigSource::Cluster {
                id: "bbb2".into(),
                file: cluster_file("attached", "bbb2"),
            }
        );
        assert_eq!(cfg.name.as_deref(), Some("beta"));
        assert_eq!(cfg.dcos_url, "https://beta.example.com/");
    }

    #[test]
    fn two_attached_clusters_are_an_error() {
        let (err, msg) = discover_err(&opts("two_attached"), &no_env());
        assert!(
            matches!(err, ConfigError::MultipleAttached { .. }),
            "{err:?}"
        );
        assert!(
            msg.starts_with("multiple clusters are attached in "),
            "{msg}"
        );
        assert!(
            msg.contains(
                &fixture("two_attached")
                    .join("clusters")
                    .display()
                    .to_string()
            )
        );
        assert!(msg.contains("a1 (alpha), b2 (beta)"), "{msg}");
        assert!(!msg.contains("c3"), "{msg}");
        assert!(msg.contains("dcos cluster attach <name>") && msg.contains("--cluster"));
    }

    #[test]
    fn no_attached_cluster_is_an_error_listing_clusters() {
        let (err, msg) = discover_err(&opts("none_attached"), &no_env());
        assert!(matches!(err, ConfigError::NoneAttached { .. }), "{err:?}");
        assert!(msg.starts_with("no cluster is attached in "), "{msg}");
        assert!(msg.contains("a1 (alpha), b2 (beta)"), "{msg}");
        assert!(msg.contains("dcos cluster attach <name>"), "{msg}");
        assert!(
            msg.contains("--cluster") && msg.contains("DCOS_CLUSTER"),
            "{msg}"
        );
    }

    #[test]
    fn dcos_cluster_picks_by_id_and_by_name() {
        // By ID, overriding the attached one.
        let cfg = discover(&opts("by_name"), &env([(ENV_DCOS_CLUSTER, "1111-aaaa")])).unwrap();
        assert_eq!(cfg.dcos_url, "https://1111-aaaa.example.com/");
        // By name.
        let cfg = discover(&opts("by_name"), &env([(ENV_DCOS_CLUSTER, "prod-east")])).unwrap();
        assert_eq!(
            cfg.source,
            ConfigSource::Cluster {
                id: "1111-aaaa".into(),
                file: cluster_file("by_name", "1111-aaaa"),
            }
        );
        assert_eq!(cfg.name.as_deref(), Some("prod-east"));
        // An ID match wins over a cluster *named* like that ID (3333-cccc).
        let cfg = discover(&opts("by_name"), &env([(ENV_DCOS_CLUSTER, "1111-aaaa")])).unwrap();
        assert_eq!(cfg.name.as_deref(), Some("prod-east"));
        // Without DCOS_CLUSTER (or with an empty one) the attached cluster is used.
        for e in [no_env(), env([(ENV_DCOS_CLUSTER, "")])] {
            let cfg = discover(&opts("by_name"), &e).unwrap();
            assert_eq!(cfg.name.as_deref(), Some("staging"));
        }
    }

    #[test]
    fn cluster_option_beats_dcos_cluster() {
        let e = env([(ENV_DCOS_CLUSTER, "prod-east")]);
        let cfg = discover(&with_cluster("by_name", "3333-cccc"), &e).unwrap();
        assert_eq!(cfg.dcos_url, "https://3333-cccc.example.com/");
        // An empty --cluster counts as not given.
        let cfg = discover(&with_cluster("by_name", ""), &e).unwrap();
        assert_eq!(cfg.dcos_url, "https://1111-aaaa.example.com/");
    }

    #[test]
    fn unknown_cluster_is_an_error_without_fallback() {
        let (err, msg) = discover_err(&with_cluster("by_name", "nope"), &no_env());
        assert!(
            matches!(err, ConfigError::ClusterNotFound { .. }),
            "{err:?}"
        );
        assert!(msg.contains("`nope`"), "{msg}");
        assert!(
            msg.contains("1111-aaaa (prod-east), 2222-bbbb (staging), 3333-cccc (1111-aaaa)"),
            "{msg}"
        );
        // Also with a single cluster: no fallback to it.
        let (err, _) = discover_err(&with_cluster("single", "other"), &no_env());
        assert!(
            matches!(err, ConfigError::ClusterNotFound { .. }),
            "{err:?}"
        );
        // The setup staging directory cannot be picked.
        let (err, _) = discover_err(&with_cluster("setup_ignored", "setup"), &no_env());
        assert!(
            matches!(err, ConfigError::ClusterNotFound { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn ambiguous_name_is_an_error_but_ids_still_work() {
        let (err, msg) = discover_err(&with_cluster("ambiguous_name", "prod"), &no_env());
        assert!(
            matches!(err, ConfigError::AmbiguousClusterName { .. }),
            "{err:?}"
        );
        assert!(msg.contains("`prod`") && msg.contains("a1, b2"), "{msg}");
        assert!(msg.contains("cluster ID"), "{msg}");
        let cfg = discover(&with_cluster("ambiguous_name", "b2"), &no_env()).unwrap();
        assert_eq!(cfg.dcos_url, "https://b2.example.com/");
        let cfg = discover(&with_cluster("ambiguous_name", "dev"), &no_env()).unwrap();
        assert_eq!(cfg.dcos_url, "https://c3.example.com/");
    }

    #[test]
    fn setup_hidden_and_plain_files_are_not_clusters() {
        let candidates = list_clusters(&fixture("setup_ignored").join("clusters")).unwrap();
        let ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["real1"]);
        let cfg = discover(&opts("setup_ignored"), &no_env()).unwrap();
        assert_eq!(cfg.dcos_url, "https://real.example.com/");
        assert_eq!(cfg.name.as_deref(), Some("real"));
    }

    #[test]
    fn list_clusters_reads_attached_and_names() {
        let mut candidates = list_clusters(&fixture("attached").join("clusters")).unwrap();
        // Listing reads no file; the names come when asked for.
        assert!(candidates.iter().all(|c| c.name.is_none()));
        read_names(&Disk, &mut candidates);
        let seen: Vec<(&str, bool, Option<&str>)> = candidates
            .iter()
            .map(|c| (c.id.as_str(), c.attached, c.name.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("aaa1", false, Some("alpha")),
                ("bbb2", true, Some("beta")),
                ("ccc3", false, Some("gamma")),
            ]
        );
    }

    #[test]
    fn choose_cluster_is_pure() {
        let c = |id: &str, attached: bool, name: Option<&str>| ClusterCandidate {
            id: id.into(),
            dir: PathBuf::from("/x/clusters").join(id),
            attached,
            name: name.map(Into::into),
        };
        let dir = Path::new("/x/clusters");
        let list = [c("a", false, Some("n")), c("b", true, None)];
        assert_eq!(choose_cluster(dir, &list, None).unwrap().id, "b");
        assert_eq!(choose_cluster(dir, &list, Some("n")).unwrap().id, "a");
        assert_eq!(
            choose_cluster(dir, &list, Some("a")).unwrap().file,
            PathBuf::from("/x/clusters/a/dcos.toml")
        );
        assert!(matches!(
            choose_cluster(dir, &[], None),
            Err(ConfigError::NoClusters { .. })
        ));
        assert!(matches!(
            choose_cluster(dir, &[], Some("a")),
            Err(ConfigError::ClusterNotFound { .. })
        ));
        let err = choose_cluster(dir, &[], Some("a")).unwrap_err().to_string();
        assert!(err.contains("available: none"), "{err}");
    }

    #[test]
    fn empty_clusters_dir_is_an_error_or_env_only() {
        let (err, msg) = discover_err(&opts("no_clusters"), &no_env());
        assert!(matches!(err, ConfigError::NoClusters { .. }), "{err:?}");
        assert!(
            msg.contains(
                &fixture("no_clusters")
                    .join("clusters")
                    .display()
                    .to_string()
            ),
            "{msg}"
        );
        assert!(msg.contains("dcos cluster setup <url>"), "{msg}");
        // With a URL from the environment it is simply "no config".
        let cfg = discover(
            &opts("no_clusters"),
            &env([(ENV_DCOS_URL, "https://env.example.com")]),
        )
        .unwrap();
        assert_eq!(cfg.source, ConfigSource::EnvOnly);
        // But asking for a cluster there is still an error.
        let (err, _) = discover_err(
            &with_cluster("no_clusters", "a1"),
            &env([(ENV_DCOS_URL, "https://env.example.com")]),
        );
        assert!(
            matches!(err, ConfigError::ClusterNotFound { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn cluster_dir_without_dcos_toml_reads_as_empty() {
        let (err, msg) = discover_err(&opts("missing_toml"), &no_env());
        assert!(matches!(err, ConfigError::MissingUrl { .. }), "{err:?}");
        assert!(
            msg.contains(&cluster_file("missing_toml", "a1").display().to_string()),
            "{msg}"
        );
        let o = DiscoverOptions {
            upstream: Some("https://up.example.com".into()),
            ..opts("missing_toml")
        };
        let cfg = discover(&o, &no_env()).unwrap();
        assert_eq!(
            cfg.source,
            ConfigSource::Cluster {
                id: "a1".into(),
                file: cluster_file("missing_toml", "a1"),
            }
        );
        assert_eq!(cfg.token, None);
        assert!(
            !cluster_file("missing_toml", "a1").exists(),
            "we never create files"
        );
    }

    #[test]
    fn empty_file_is_valid_but_has_no_url() {
        assert_eq!(
            parse_file(Path::new("/x"), "").unwrap(),
            DcosFile::default()
        );
        let (err, _) = discover_err(&opts("empty_file"), &no_env());
        assert!(matches!(err, ConfigError::MissingUrl { .. }), "{err:?}");
        let cfg = discover(
            &opts("empty_file"),
            &env([(ENV_DCOS_URL, "http://e.example.com")]),
        )
        .unwrap();
        assert_eq!(cfg.dcos_url, "http://e.example.com/");
        assert_eq!(cfg.token, None);
        assert_eq!(cfg.name, None);
        assert_eq!(cfg.ssl_verify, SslVerify::System);
        assert_eq!(cfg.timeout, None);
    }

    // ---- how many files one discovery reads --------------------------------------------

    /// Reads through the real filesystem and records every path it is asked to read.
    #[derive(Default)]
    struct Recorder {
        reads: std::cell::RefCell<Vec<PathBuf>>,
    }

    impl ReadConfig for Recorder {
        fn read(&self, path: &Path) -> Result<Vec<u8>, ReadError> {
            self.reads.borrow_mut().push(path.to_path_buf());
            Disk.read(path)
        }
    }

    /// One discovery, and the files it read in order.
    fn recorded(
        o: &DiscoverOptions,
        e: &Env,
    ) -> (Result<ClusterConfig, ConfigError>, Vec<PathBuf>) {
        let files = Recorder::default();
        let result = discover_with(&files, o, e);
        (result, files.reads.into_inner())
    }

    #[test]
    fn picking_a_cluster_by_id_reads_only_its_file() {
        // Three clusters; one of them (3333-cccc) is *named* like another's ID.
        for id in ["1111-aaaa", "2222-bbbb", "3333-cccc"] {
            let (cfg, reads) = recorded(&with_cluster("by_name", id), &no_env());
            assert_eq!(
                cfg.unwrap().dcos_url,
                format!("https://{id}.example.com/").as_str()
            );
            assert_eq!(reads, [cluster_file("by_name", id)], "--cluster {id}");
            let (cfg, reads) = recorded(&opts("by_name"), &env([(ENV_DCOS_CLUSTER, id)]));
            assert_eq!(
                cfg.unwrap().dcos_url,
                format!("https://{id}.example.com/").as_str()
            );
            assert_eq!(reads, [cluster_file("by_name", id)], "DCOS_CLUSTER={id}");
        }
    }

    #[test]
    fn the_only_cluster_reads_one_file() {
        let id = "0f1e2d3c-0000-4000-8000-000000000001";
        let (cfg, reads) = recorded(&opts("single"), &no_env());
        assert_eq!(cfg.unwrap().name.as_deref(), Some("single"));
        assert_eq!(reads, [cluster_file("single", id)]);
    }

    #[test]
    fn the_attached_cluster_among_three_reads_one_file() {
        let (cfg, reads) = recorded(&opts("attached"), &no_env());
        assert_eq!(cfg.unwrap().name.as_deref(), Some("beta"));
        assert_eq!(reads, [cluster_file("attached", "bbb2")]);
        // The same through the `by_name` fixture, whose attached cluster is 2222-bbbb.
        let (cfg, reads) = recorded(&opts("by_name"), &no_env());
        assert_eq!(cfg.unwrap().name.as_deref(), Some("staging"));
        assert_eq!(reads, [cluster_file("by_name", "2222-bbbb")]);
    }

    #[test]
    fn the_legacy_file_is_read_once() {
        let (cfg, reads) = recorded(&opts("legacy"), &no_env());
        assert!(matches!(cfg.unwrap().source, ConfigSource::Legacy { .. }));
        assert_eq!(reads, [fixture("legacy").join(CONFIG_FILE)]);
    }

    #[test]
    fn picking_by_name_reads_every_name_then_the_chosen_file() {
        let (cfg, reads) = recorded(&with_cluster("by_name", "prod-east"), &no_env());
        assert_eq!(cfg.unwrap().name.as_deref(), Some("prod-east"));
        let all = ["1111-aaaa", "2222-bbbb", "3333-cccc"].map(|id| cluster_file("by_name", id));
        assert_eq!(reads[..3], all, "the names, in ID order");
        assert_eq!(reads[3..], [cluster_file("by_name", "1111-aaaa")]);
    }

    #[test]
    fn an_error_listing_the_clusters_reads_their_names() {
        // Several clusters, none attached: the message lists them with their names.
        let files = Recorder::default();
        let err = discover_with(&files, &opts("none_attached"), &no_env()).unwrap_err();
        assert!(matches!(err, ConfigError::NoneAttached { .. }), "{err:?}");
        assert!(err.to_string().contains("a1 (alpha), b2 (beta)"), "{err}");
        let reads = files.reads.into_inner();
        let want: Vec<PathBuf> = ["a1", "b2"]
            .iter()
            .map(|id| cluster_file("none_attached", id))
            .collect();
        assert_eq!(reads, want);
        // A cluster that matches no ID and no name: every name is read for the listing.
        let (cfg, reads) = recorded(&with_cluster("by_name", "nope"), &no_env());
        let err = cfg.unwrap_err();
        assert!(
            matches!(err, ConfigError::ClusterNotFound { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("2222-bbbb (staging)"), "{err}");
        let all = ["1111-aaaa", "2222-bbbb", "3333-cccc"].map(|id| cluster_file("by_name", id));
        assert_eq!(reads, all);
    }

    // ---- legacy layout -----------------------------------------------------------------

    #[test]
    fn legacy_file_is_used_without_clusters_dir() {
        let cfg = discover(&opts("legacy"), &no_env()).unwrap();
        assert_eq!(
            cfg.source,
            ConfigSource::Legacy {
                file: fixture("legacy").join(CONFIG_FILE),
            }
        );
        assert_eq!(cfg.dcos_url, "http://legacy.example.com/");
        assert_eq!(cfg.token, Some(token()));
        assert_eq!(cfg.ssl_verify, SslVerify::Insecure);
        assert_eq!(cfg.name, None);
    }

    #[test]
    fn dcos_config_names_the_legacy_file() {
        // Absolute DCOS_CONFIG, with a DC/OS directory that does not exist.
        let legacy = fixture("legacy").join(CONFIG_FILE);
        let e = env([(ENV_DCOS_CONFIG, legacy.to_str().unwrap())]);
        let cfg = discover(&opts("does_not_exist"), &e).unwrap();
        assert_eq!(
            cfg.source,
            ConfigSource::Legacy {
                file: legacy.clone()
            }
        );
        // Relative DCOS_CONFIG is resolved against cwd.
        let o = DiscoverOptions {
            cwd: Some(fixture("")),
            ..opts("does_not_exist")
        };
        let cfg = discover(&o, &env([(ENV_DCOS_CONFIG, "legacy/dcos.toml")])).unwrap();
        assert_eq!(
            cfg.source,
            ConfigSource::Legacy {
                file: legacy.clone()
            }
        );
        // DCOS_CONFIG is ignored when clusters/ exists.
        let cfg = discover(&opts("single"), &e).unwrap();
        assert!(matches!(cfg.source, ConfigSource::Cluster { .. }));
        // A DCOS_CONFIG that does not exist: an error naming it (no fallback to
        // <root>/dcos.toml), or EnvOnly with a URL.
        let missing = env([(ENV_DCOS_CONFIG, "/nonexistent/dcos.toml")]);
        let (err, msg) = discover_err(&opts("legacy"), &missing);
        assert!(matches!(err, ConfigError::NoConfigFile { .. }), "{err:?}");
        assert!(
            msg.contains("DCOS_CONFIG") && msg.contains("/nonexistent/dcos.toml"),
            "{msg}"
        );
        let o = DiscoverOptions {
            upstream: Some("https://up.example.com".into()),
            ..opts("legacy")
        };
        assert_eq!(
            discover(&o, &missing).unwrap().source,
            ConfigSource::EnvOnly
        );
    }

    #[test]
    fn cluster_wanted_without_per_cluster_layout_is_an_error() {
        let (err, msg) = discover_err(&with_cluster("legacy", "prod"), &no_env());
        assert!(matches!(err, ConfigError::NoClustersDir { .. }), "{err:?}");
        assert!(msg.contains("`prod`") && msg.contains("clusters"), "{msg}");
    }

    // ---- nothing at all ----------------------------------------------------------------

    #[test]
    fn no_config_is_an_error_naming_the_dir_and_the_fix() {
        let (err, msg) = discover_err(&opts("does_not_exist"), &no_env());
        assert!(matches!(err, ConfigError::NoConfig { .. }), "{err:?}");
        assert_eq!(
            msg,
            format!(
                "no DC/OS CLI config in {} (the directory does not exist): run \
                 `dcos cluster setup <url>` first, point --dcos-dir / DCOS_DIR at the right \
                 directory, or pass --upstream <url> (and set DCOS_ACS_TOKEN)",
                fixture("does_not_exist").display()
            )
        );
        // A root without clusters/ and without dcos.toml is the same.
        let tmp = tempfile::tempdir().unwrap();
        let o = DiscoverOptions {
            dcos_dir: Some(tmp.path().to_path_buf()),
            ..DiscoverOptions::default()
        };
        let (err, _) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::NoConfig { .. }), "{err:?}");
    }

    #[test]
    fn env_only_takes_everything_from_the_environment() {
        let e = env([
            (ENV_DCOS_URL, "https://env.example.com/prefix/"),
            (ENV_DCOS_ACS_TOKEN, TOKEN),
            (ENV_DCOS_SSL_VERIFY, "false"),
            (ENV_DCOS_TIMEOUT, "7"),
        ]);
        let cfg = discover(&opts("does_not_exist"), &e).unwrap();
        assert_eq!(
            cfg,
            ClusterConfig {
                source: ConfigSource::EnvOnly,
                dcos_dir: fixture("does_not_exist"),
                name: None,
                dcos_url: "https://env.example.com/prefix".parse().unwrap(),
                token: Some(token()),
                ssl_verify: SslVerify::Insecure,
                timeout: Some(Duration::from_secs(7)),
            }
        );
        // --upstream alone is enough; no token is "not logged in".
        let o = DiscoverOptions {
            upstream: Some("http://127.0.0.1:8080".into()),
            ..opts("does_not_exist")
        };
        let cfg = discover(&o, &no_env()).unwrap();
        assert_eq!(cfg.source, ConfigSource::EnvOnly);
        assert_eq!(cfg.dcos_url, "http://127.0.0.1:8080/");
        assert_eq!(cfg.token, None);
        assert_eq!(cfg.ssl_verify, SslVerify::System);
        // An empty DCOS_URL does not count.
        let (err, _) = discover_err(&opts("does_not_exist"), &env([(ENV_DCOS_URL, "")]));
        assert!(matches!(err, ConfigError::NoConfig { .. }), "{err:?}");
    }

    #[test]
    fn dcos_dir_that_is_a_file_is_an_error() {
        let o = DiscoverOptions {
            dcos_dir: Some(fixture("legacy").join(CONFIG_FILE)),
            ..DiscoverOptions::default()
        };
        let (err, msg) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::NotADirectory { .. }), "{err:?}");
        assert!(msg.contains("is not a directory"), "{msg}");
    }

    // ---- the file's keys ---------------------------------------------------------------

    #[test]
    fn bad_toml_names_file_line_and_column_but_not_the_line() {
        let (err, msg) = discover_err(&opts("bad_toml"), &no_env());
        let ConfigError::Syntax { path, position, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, &cluster_file("bad_toml", "a1"));
        assert_eq!(*position, Some((3, 63)));
        assert_eq!(
            msg,
            format!(
                "{} line 3, column 63: invalid basic string, expected `\"`; fix the TOML \
                 there (or rewrite it with `dcos cluster setup <url>`)",
                cluster_file("bad_toml", "a1").display()
            )
        );
    }

    #[test]
    fn line_column_counts_from_one_in_characters() {
        let text = "a = 1\nbé = \"x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(text, 9), (2, 3));
        // Offsets inside a character or past the end are clamped.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn syntax_errors_never_echo_the_source() {
        let secret_lines = [
            format!("[core]\ndcos_acs_token = \"{TOKEN}\" trailing"),
            format!("[core]\ndcos_acs_token = \"{TOKEN}\\q\""),
            format!("[core]\ndcos_acs_token = {TOKEN}"),
            format!("[core]\ndcos_acs_token = \"{TOKEN}\"\ndcos_acs_token = \"{TOKEN}\""),
        ];
        let wants = [
            "/x/dcos.toml line 2, column 65: unexpected key or value",
            "/x/dcos.toml line 2, column 64: missing escaped value",
            "/x/dcos.toml line 2, column 18: string values must be quoted",
            "/x/dcos.toml line 3, column 1: duplicate key",
        ];
        for (text, want) in secret_lines.iter().zip(wants) {
            let err = parse_file(Path::new("/x/dcos.toml"), text).unwrap_err();
            assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
            assert_no_secret(&err.to_string());
            assert_no_secret(&format!("{err:?}"));
            assert!(err.to_string().starts_with(want), "{err}");
        }
    }

    #[test]
    fn missing_url_names_the_file_and_the_fix() {
        let (err, msg) = discover_err(&opts("no_url"), &no_env());
        assert!(matches!(err, ConfigError::MissingUrl { .. }), "{err:?}");
        assert_eq!(
            msg,
            format!(
                "{} has no core.dcos_url: run `dcos cluster setup <url>`, or pass --upstream <url>",
                cluster_file("no_url", "a1").display()
            )
        );
        // Either override fills the gap; the file's token is still used.
        for (o, e) in [
            (
                opts("no_url"),
                env([(ENV_DCOS_URL, "https://env.example.com")]),
            ),
            (
                DiscoverOptions {
                    upstream: Some("https://env.example.com".into()),
                    ..opts("no_url")
                },
                no_env(),
            ),
        ] {
            let cfg = discover(&o, &e).unwrap();
            assert_eq!(cfg.dcos_url, "https://env.example.com/");
            assert_eq!(cfg.token, Some(token()));
            assert_eq!(cfg.name.as_deref(), Some("no-url"));
        }
    }

    #[test]
    fn no_token_means_not_logged_in() {
        let cfg = discover(&opts("no_token"), &no_env()).unwrap();
        assert_eq!(cfg.token, None);
        assert_eq!(cfg.dcos_url, "https://master.example.com/");
        assert_eq!(cfg.ssl_verify, SslVerify::Insecure);
        assert_eq!(cfg.name.as_deref(), Some("logged-out"));
        // Empty and whitespace-only tokens are the same.
        for text in [
            "[core]\ndcos_acs_token = \"\"",
            "[core]\ndcos_acs_token = \"  \"",
        ] {
            let file = parse_file(Path::new("/x"), text).unwrap();
            assert_eq!(file.token, FileToken::Absent);
        }
    }

    #[test]
    fn ssl_verify_variants() {
        let cases = [
            ("str_true", SslVerify::System),
            ("str_false", SslVerify::Insecure),
            ("upper_false", SslVerify::Insecure),
            ("bool_true", SslVerify::System),
            ("bool_false", SslVerify::Insecure),
            ("empty", SslVerify::System),
            ("absent", SslVerify::System),
            (
                "path",
                SslVerify::CaBundle("/home/u/.dcos/clusters/path/dcos_ca.crt".into()),
            ),
        ];
        for (id, want) in cases {
            let cfg = discover(&with_cluster("ssl_verify", id), &no_env()).unwrap();
            assert_eq!(cfg.ssl_verify, want, "cluster {id}");
        }
    }

    #[test]
    fn dcos_ssl_verify_overrides_the_file() {
        let o = with_cluster("ssl_verify", "path");
        let cases = [
            ("false", SslVerify::Insecure),
            ("true", SslVerify::System),
            ("/etc/ca.pem", SslVerify::CaBundle("/etc/ca.pem".into())),
            // Empty means unset: the file's value stays.
            (
                "",
                SslVerify::CaBundle("/home/u/.dcos/clusters/path/dcos_ca.crt".into()),
            ),
        ];
        for (value, want) in cases {
            let cfg = discover(&o, &env([(ENV_DCOS_SSL_VERIFY, value)])).unwrap();
            assert_eq!(cfg.ssl_verify, want, "DCOS_SSL_VERIFY={value:?}");
        }
        let cfg = discover(
            &with_cluster("ssl_verify", "str_false"),
            &env([(ENV_DCOS_SSL_VERIFY, "TRUE")]),
        )
        .unwrap();
        assert_eq!(cfg.ssl_verify, SslVerify::System);
    }

    #[test]
    fn unknown_keys_and_sections_are_ignored() {
        let cfg = discover(&opts("extra_keys"), &no_env()).unwrap();
        assert_eq!(cfg.dcos_url, "https://extra.example.com/");
        assert_eq!(cfg.token, Some(token()));
        assert_eq!(
            cfg.ssl_verify,
            SslVerify::CaBundle("/home/u/.dcos/clusters/x1/dcos_ca.crt".into())
        );
        assert_eq!(cfg.timeout, Some(Duration::from_secs(30)));
        assert_eq!(cfg.name.as_deref(), Some("extra"));
    }

    #[test]
    fn wrong_types_name_the_file_and_the_key() {
        let cases = [
            ("url_int", "core.dcos_url in ", "must be a string"),
            ("token_int", "core.dcos_acs_token in ", "must be a string"),
            ("ssl_int", "core.ssl_verify in ", "must be \"true\""),
            (
                "timeout_float",
                "core.timeout in ",
                "whole number of seconds",
            ),
            ("name_int", "cluster.name in ", "must be a string"),
            ("core_string", "core in ", "must be a table"),
            ("cluster_string", "cluster in ", "must be a table"),
        ];
        for (id, key, expected) in cases {
            let (err, msg) = discover_err(&with_cluster("wrong_types", id), &no_env());
            assert!(
                matches!(err, ConfigError::WrongType { .. }),
                "{id}: {err:?}"
            );
            let at = format!("{key}{}", cluster_file("wrong_types", id).display());
            assert!(msg.starts_with(&at), "{id}: {msg}");
            assert!(msg.contains(expected), "{id}: {msg}");
        }
        // The token's value is never shown, even when its type is wrong.
        let (_, msg) = discover_err(&with_cluster("wrong_types", "token_int"), &no_env());
        assert!(!msg.contains("12345"), "{msg}");
    }

    #[test]
    fn timeouts() {
        let (err, msg) = discover_err(&with_cluster("wrong_types", "timeout_negative"), &no_env());
        assert!(matches!(err, ConfigError::InvalidTimeout { .. }), "{err:?}");
        assert!(
            msg.starts_with("core.timeout in ") && msg.contains("\"-5\""),
            "{msg}"
        );
        let (err, msg) = discover_err(&with_cluster("wrong_types", "timeout_word"), &no_env());
        assert!(matches!(err, ConfigError::InvalidTimeout { .. }), "{err:?}");
        assert!(msg.contains("\"soon\""), "{msg}");
        // A numeric string is accepted; 0 means none.
        let cfg = discover(&opts("url_prefix"), &no_env()).unwrap();
        assert_eq!(cfg.timeout, Some(Duration::from_secs(60)));
        let parsed = |t: &str| parse_file(Path::new("/x"), &format!("[core]\ntimeout = {t}"));
        assert_eq!(parsed("0").unwrap().timeout, None);
        assert_eq!(parsed("\"0\"").unwrap().timeout, None);
        assert_eq!(
            parsed("\" 42 \"").unwrap().timeout,
            Some(Duration::from_secs(42))
        );
        // DCOS_TIMEOUT overrides, 0 clears, empty is unset, garbage is an error naming it.
        let o = opts("single");
        let t = |v: &str| discover(&o, &env([(ENV_DCOS_TIMEOUT, v)]));
        assert_eq!(t("5").unwrap().timeout, Some(Duration::from_secs(5)));
        assert_eq!(t("0").unwrap().timeout, None);
        assert_eq!(t("").unwrap().timeout, Some(Duration::from_secs(180)));
        let err = t("1m").unwrap_err();
        assert!(matches!(err, ConfigError::InvalidTimeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "DCOS_TIMEOUT must be a whole number of seconds (0 = none), not \"1m\""
        );
    }

    // ---- URL ---------------------------------------------------------------------------

    #[test]
    fn url_path_prefix_is_kept_without_trailing_slash() {
        let cfg = discover(&opts("url_prefix"), &no_env()).unwrap();
        assert_eq!(cfg.dcos_url.path(), "/dcos");
        assert_eq!(cfg.dcos_url, "https://gw.example.com/dcos");
        assert_eq!(cfg.dcos_url.host(), Some("gw.example.com"));
        let at = ValueSource::Flag(FLAG_UPSTREAM);
        let u = |s: &str| parse_dcos_url(s, &at).unwrap();
        assert_eq!(u("https://m.example.com/").path(), "/");
        assert_eq!(u("https://m.example.com").path(), "/");
        assert_eq!(u("https://m.example.com/a/b//").path(), "/a/b/");
        assert_eq!(
            u(" http://m.example.com:8080/x ").to_string(),
            "http://m.example.com:8080/x"
        );
        assert_eq!(u("HTTPS://m.example.com").scheme_str(), Some("https"));
    }

    #[test]
    fn dcos_url_then_upstream_override_the_file() {
        let e = env([(ENV_DCOS_URL, "https://env.example.com")]);
        let cfg = discover(&opts("single"), &e).unwrap();
        assert_eq!(cfg.dcos_url, "https://env.example.com/");
        let o = DiscoverOptions {
            upstream: Some("https://flag.example.com".into()),
            ..opts("single")
        };
        assert_eq!(
            discover(&o, &e).unwrap().dcos_url,
            "https://flag.example.com/"
        );
        // Empty DCOS_URL: the file's URL.
        let cfg = discover(&opts("single"), &env([(ENV_DCOS_URL, "")])).unwrap();
        assert_eq!(cfg.dcos_url, "https://master.single.example.com/");
        // A bad URL in the file does not matter when it is overridden.
        let cfg = discover(&with_cluster("bad_url", "ftp"), &e).unwrap();
        assert_eq!(cfg.dcos_url, "https://env.example.com/");
    }

    #[test]
    fn bad_urls_in_the_file_name_the_file_key_and_value() {
        let cases = [
            (
                "ftp",
                "ftp://master.example.com",
                "scheme must be http or https",
            ),
            ("relative", "master.example.com", "absolute URL"),
            ("query", "https://master.example.com/?x=1", "query"),
            ("fragment", "https://master.example.com/#top", "fragment"),
            ("spaces", "https://master example.com", ""),
        ];
        for (id, value, reason) in cases {
            let (err, msg) = discover_err(&with_cluster("bad_url", id), &no_env());
            assert!(
                matches!(err, ConfigError::InvalidUrl { .. }),
                "{id}: {err:?}"
            );
            let at = format!("core.dcos_url in {}", cluster_file("bad_url", id).display());
            assert!(msg.starts_with(&at), "{id}: {msg}");
            assert!(msg.contains(&format!("{value:?}")), "{id}: {msg}");
            assert!(msg.contains(reason), "{id}: {msg}");
        }
        let (err, msg) = discover_err(&with_cluster("bad_url", "userinfo"), &no_env());
        assert!(
            matches!(err, ConfigError::UrlHasCredentials { .. }),
            "{err:?}"
        );
        assert!(msg.starts_with("core.dcos_url in "), "{msg}");
    }

    #[test]
    fn bad_urls_from_env_and_flag_name_their_source() {
        let (err, msg) = discover_err(&opts("single"), &env([(ENV_DCOS_URL, "localhost:8080")]));
        assert!(matches!(err, ConfigError::InvalidUrl { .. }), "{err:?}");
        assert!(
            msg.starts_with("DCOS_URL is not a usable DC/OS URL (\"localhost:8080\")"),
            "{msg}"
        );
        let o = DiscoverOptions {
            upstream: Some("wss://m.example.com".into()),
            ..opts("single")
        };
        let (_, msg) = discover_err(&o, &no_env());
        assert!(
            msg.starts_with("--upstream is not a usable DC/OS URL (\"wss://m.example.com\")"),
            "{msg}"
        );
        let (_, msg) = discover_err(
            &opts("does_not_exist"),
            &env([(ENV_DCOS_URL, "https://u:hunter2@m.example.com")]),
        );
        assert!(msg.starts_with("DCOS_URL holds credentials"), "{msg}");
        for bad in [
            "https://",
            "http:///path",
            "/just/a/path",
            "https://m.example.com?",
        ] {
            let err = parse_dcos_url(bad, &ValueSource::Env(ENV_DCOS_URL)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidUrl { .. }),
                "{bad}: {err:?}"
            );
        }
        // Long values are shortened in the message.
        let long = format!("ftp://{}", "a".repeat(5000));
        let err = parse_dcos_url(&long, &ValueSource::Env(ENV_DCOS_URL)).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
    }

    // ---- token -------------------------------------------------------------------------

    #[test]
    fn dcos_acs_token_overrides_the_file() {
        let other = "eyJhbGciOiJub25lIn0.eyJ1aWQiOiJib2IifQ.sig";
        let cfg = discover(&opts("single"), &env([(ENV_DCOS_ACS_TOKEN, other)])).unwrap();
        assert_eq!(cfg.token, Some(Token::new(other).unwrap()));
        // Empty or blank: the file's token.
        for blank in ["", "   "] {
            let cfg = discover(&opts("single"), &env([(ENV_DCOS_ACS_TOKEN, blank)])).unwrap();
            assert_eq!(cfg.token, Some(token()));
        }
        // Logging in through the environment only.
        let cfg = discover(&opts("no_token"), &env([(ENV_DCOS_ACS_TOKEN, TOKEN)])).unwrap();
        assert_eq!(cfg.token, Some(token()));
    }

    #[test]
    fn unusable_token_is_an_error_that_never_shows_it() {
        let (err, msg) = discover_err(&opts("bad_token"), &no_env());
        assert!(matches!(err, ConfigError::InvalidToken { .. }), "{err:?}");
        assert!(
            msg.starts_with(&format!(
                "core.dcos_acs_token in {} holds characters",
                cluster_file("bad_token", "a1").display()
            )),
            "{msg}"
        );
        assert!(msg.contains("dcos auth login"), "{msg}");
        assert!(!msg.contains("Evil"), "{msg}");
        // A good DCOS_ACS_TOKEN overrides the unusable one in the file.
        let cfg = discover(&opts("bad_token"), &env([(ENV_DCOS_ACS_TOKEN, TOKEN)])).unwrap();
        assert_eq!(cfg.token, Some(token()));
        // A bad DCOS_ACS_TOKEN is named as such.
        let bad = format!("{TOKEN}\r\nX-Evil: 1");
        let (err, msg) = discover_err(&opts("single"), &env([(ENV_DCOS_ACS_TOKEN, bad.as_str())]));
        assert!(matches!(err, ConfigError::InvalidToken { .. }), "{err:?}");
        assert!(msg.starts_with("DCOS_ACS_TOKEN holds characters"), "{msg}");
    }

    #[test]
    fn config_debug_never_shows_the_token() {
        let cfg = discover(&opts("single"), &no_env()).unwrap();
        assert_no_secret(&format!("{cfg:?}"));
        let file = parse_file(
            Path::new("/x"),
            &format!("[core]\ndcos_acs_token = \"{TOKEN}\""),
        )
        .unwrap();
        assert_eq!(file.token, FileToken::Valid(token()));
        assert_no_secret(&format!("{file:?}"));
    }

    #[test]
    fn no_error_from_any_fixture_contains_the_token() {
        let mut errors = 0;
        let cases = [
            "single",
            "attached",
            "two_attached",
            "none_attached",
            "legacy",
            "bad_toml",
            "no_url",
            "no_token",
            "ssl_verify",
            "by_name",
            "ambiguous_name",
            "setup_ignored",
            "extra_keys",
            "no_clusters",
            "missing_toml",
            "bad_token",
            "wrong_types",
            "url_prefix",
            "bad_url",
            "empty_file",
        ];
        for case in cases {
            let clusters = fixture(case).join(CLUSTERS_DIR);
            let mut ids = vec![None, Some("nope".to_owned())];
            if let Ok(candidates) = list_clusters(&clusters) {
                ids.extend(candidates.into_iter().map(|c| Some(c.id)));
            }
            for id in ids {
                let o = DiscoverOptions {
                    cluster: id,
                    ..opts(case)
                };
                for e in [no_env(), env([(ENV_DCOS_URL, "ftp://x")])] {
                    if let Err(err) = discover(&o, &e) {
                        errors += 1;
                        assert_no_secret(&err.to_string());
                        assert_no_secret(&format!("{err:?}"));
                    }
                }
            }
        }
        assert!(errors > 40, "only {errors} errors exercised");
    }

    // ---- hostile files -----------------------------------------------------------------

    fn temp_cluster(contents: &[u8]) -> (tempfile::TempDir, DiscoverOptions, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("clusters").join("t1");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join(CONFIG_FILE);
        fs::write(&file, contents).unwrap();
        let o = DiscoverOptions {
            dcos_dir: Some(tmp.path().to_path_buf()),
            ..DiscoverOptions::default()
        };
        (tmp, o, file)
    }

    #[test]
    fn huge_file_is_refused() {
        let mut big = b"[core]\ndcos_url = \"https://m.example.com\"\n#".to_vec();
        big.resize(2 * 1024 * 1024, b'x');
        let (_tmp, o, file) = temp_cluster(&big);
        let (err, msg) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
        assert!(
            msg.contains(&file.display().to_string()) && msg.contains("1 MiB"),
            "{msg}"
        );
        // Exactly the limit is still read.
        let mut max = b"[core]\ndcos_url = \"https://m.example.com\"\n#".to_vec();
        max.resize(MAX_CONFIG_BYTES as usize, b'x');
        let (_tmp, o, _) = temp_cluster(&max);
        assert_eq!(
            discover(&o, &no_env()).unwrap().dcos_url,
            "https://m.example.com/"
        );
    }

    #[test]
    fn non_utf8_file_is_refused() {
        let (_tmp, o, file) =
            temp_cluster(b"[core]\ndcos_url = \"https://m.example.com\"\n\xff\xfe");
        let (err, msg) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::NotUtf8 { .. }), "{err:?}");
        assert_eq!(
            msg,
            format!(
                "{} is not valid UTF-8, so it is not a TOML file",
                file.display()
            )
        );
    }

    #[test]
    fn a_directory_named_dcos_toml_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join(CONFIG_FILE)).unwrap();
        let o = DiscoverOptions {
            dcos_dir: Some(tmp.path().to_path_buf()),
            ..DiscoverOptions::default()
        };
        let (err, _) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn io_errors_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain");
        fs::write(&plain, "x").unwrap();
        let below = plain.join("dcos.toml");
        let err = read_config_text(&below).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot read {}: ", below.display())),
            "{msg}"
        );
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, o, file) =
            temp_cluster(format!("[core]\ndcos_acs_token = \"{TOKEN}\"").as_bytes());
        fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
        if fs::File::open(&file).is_ok() {
            // Running as root: permissions do not apply; nothing to test here.
            return;
        }
        let (err, msg) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.to_lowercase().contains("permission denied"), "{msg}");
    }

    #[test]
    fn attached_must_be_a_regular_file() {
        let tmp = tempfile::tempdir().unwrap();
        for id in ["a1", "b2"] {
            let dir = tmp.path().join("clusters").join(id);
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join(CONFIG_FILE),
                format!("[core]\ndcos_url = \"https://{id}.example.com\""),
            )
            .unwrap();
        }
        // A directory named `attached` does not count; a file does.
        fs::create_dir(tmp.path().join("clusters/a1/attached")).unwrap();
        fs::write(tmp.path().join("clusters/b2/attached"), "ignored contents").unwrap();
        let o = DiscoverOptions {
            dcos_dir: Some(tmp.path().to_path_buf()),
            ..DiscoverOptions::default()
        };
        assert_eq!(
            discover(&o, &no_env()).unwrap().dcos_url,
            "https://b2.example.com/"
        );
    }

    #[test]
    fn a_broken_cluster_file_does_not_block_picking_another() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |id: &str, text: &[u8]| {
            let dir = tmp.path().join("clusters").join(id);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(CONFIG_FILE), text).unwrap();
        };
        write("a1", b"[core\n\xff");
        write(
            "b2",
            b"[core]\ndcos_url = \"https://b2.example.com\"\n[cluster]\nname = \"bee\"",
        );
        let o = DiscoverOptions {
            dcos_dir: Some(tmp.path().to_path_buf()),
            cluster: Some("bee".into()),
            ..DiscoverOptions::default()
        };
        assert_eq!(
            discover(&o, &no_env()).unwrap().dcos_url,
            "https://b2.example.com/"
        );
        // …but choosing the broken one reports its problem.
        let o = DiscoverOptions {
            cluster: Some("a1".into()),
            ..o
        };
        let (err, _) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::NotUtf8 { .. }), "{err:?}");
    }
}
