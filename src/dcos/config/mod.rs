//! Finding and parsing the DC/OS CLI's config (reference §1, §2, §4).
//!
//! This module owns the outside world's *config* format and turns it into one validated
//! [`ClusterConfig`] with [`discover`]. One idea per file:
//! - `layout`: the root directory, the per-cluster or legacy layout, and which cluster is
//!   the current one (`--cluster` / `DCOS_CLUSTER` by ID or name, the only one, the
//!   attached one);
//! - `read`: reading one config file as hostile input (bounded, a regular file, UTF-8),
//!   through the one seam every read goes through;
//! - `parse`: the `dcos.toml` format, one file's text to a [`DcosFile`];
//! - `env`: the `DCOS_*` and flag overrides and the validation after them
//!   ([`apply_overrides`]);
//! - `error`: [`ConfigError`] and [`ValueSource`].
//!
//! It holds no policy about watching: the watcher runs [`discover`] again on every change
//! it sees. One discovery reads one `dcos.toml`, the chosen one; the other clusters'
//! files are read only when a name must be matched (`--cluster` / `DCOS_CLUSTER` that is
//! no cluster's ID) or an error lists the clusters. No error message ever echoes a token
//! or a file's contents.

mod env;
mod error;
mod layout;
mod parse;
mod read;
#[cfg(test)]
mod test_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

pub use self::env::apply_overrides;
pub use self::error::{ConfigError, ValueSource};
pub use self::layout::MAX_NAMED_CLUSTERS;
pub(crate) use self::layout::{CLUSTERS_DIR, legacy_config_path, resolve_dcos_dir};
pub use self::parse::{DcosFile, FileToken, parse_file};

use self::env::url_override;
use self::layout::{
    CONFIG_FILE, Location, list_clusters, locate, read_cluster_name, wanted_cluster,
};
use self::read::{Disk, ReadConfig, read_config_text, read_optional};
use crate::dcos::token::Token;
use crate::env::Env;

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
    pub(crate) fn from_setting(value: &str) -> Self {
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
    /// The config file behind these settings, if any.
    pub(crate) fn file(&self) -> Option<&Path> {
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
    /// The master URL: absolute `http` or `https` with a host, no credentials, query or
    /// fragment. It may carry a path prefix, kept without its trailing `/`.
    pub dcos_url: Uri,
    /// `core.dcos_acs_token` or DCOS_ACS_TOKEN. None = not logged in (NOT an error).
    pub token: Option<Token>,
    /// How to verify the master's TLS certificate.
    pub ssl_verify: SslVerify,
    /// `core.timeout` / DCOS_TIMEOUT in seconds; 0 or absent = None.
    pub timeout: Option<Duration>,
    /// Where the master URL and the token came from, so that every message and hint
    /// names the real source (a flag, a variable, which file).
    pub origins: Origins,
}

#[cfg(test)]
impl ClusterConfig {
    /// A config for unit tests: the master at `url`, logged in with `token`, system
    /// trust store, no file behind it.
    pub(crate) fn for_test(url: &str, token: Option<&str>) -> Self {
        Self {
            origins: Default::default(),
            source: ConfigSource::EnvOnly,
            dcos_dir: std::env::temp_dir(),
            name: None,
            dcos_url: url.parse().expect("a test URL"),
            token: token.map(|t| Token::new(t).expect("a test token")),
            ssl_verify: SslVerify::System,
            timeout: None,
        }
    }
}

/// Where a [`ClusterConfig`]'s values came from. Empty for a config built in code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// Where `dcos_url` came from: `--upstream`, `DCOS_URL` or `core.dcos_url` in a file.
    pub url: Option<ValueSource>,
    /// Where the token came from: `DCOS_ACS_TOKEN` or `core.dcos_acs_token` in a file;
    /// `None` when not logged in.
    pub token: Option<ValueSource>,
    /// A file whose own `core.dcos_acs_token` is ignored because `DCOS_ACS_TOKEN` beats
    /// it (`dcos auth login` then cannot help).
    pub shadowed_file_token: Option<PathBuf>,
}

impl Origins {
    /// What to do when the master refuses the token (401), given where it came from.
    pub fn token_refresh_hint(&self) -> String {
        match &self.token {
            Some(ValueSource::Env(var)) => match &self.shadowed_file_token {
                Some(file) => format!(
                    "the token comes from {var}, which beats the one in {} (so `dcos auth \
                     login` cannot help): unset {var}, or export a fresh token in it",
                    file.display()
                ),
                None => format!("the token comes from {var}: export a fresh token in it"),
            },
            Some(ValueSource::File { file, .. }) => format!(
                "the token comes from {}: run `dcos auth login`",
                file.display()
            ),
            _ => "run `dcos auth login`".to_owned(),
        }
    }
}

/// Find, read and validate the DC/OS CLI config of the current cluster: the root
/// directory, the layout and the cluster (reading no file unless a name must be matched
/// or an error lists the clusters), then the chosen `dcos.toml`, then the overrides. With no config at all but a URL from `--upstream` or `DCOS_URL`, the result
/// is [`ConfigSource::EnvOnly`]. A missing token is not an error.
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
            let text = read_config_text(files, &path)?;
            if text.trim().is_empty() && url_override(opts, env).is_none() {
                return Err(ConfigError::LegacyEmpty { file: path });
            }
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

/// One cluster of the per-cluster layout, read on its own (see [`all_clusters`]).
#[derive(Debug)]
pub struct NamedCluster {
    /// The cluster ID: its directory name under `clusters/`.
    pub id: String,
    /// `cluster.name`, when the file names one (read even when the rest is unusable).
    pub name: Option<String>,
    /// Whether the directory holds the `attached` marker.
    pub attached: bool,
    /// The cluster's own settings, or why they cannot be used.
    pub config: Result<ClusterConfig, ConfigError>,
}

/// Every cluster of the per-cluster layout under the DC/OS directory, sorted by ID, each
/// with the settings of its own `dcos.toml` only: the overrides (`--upstream`,
/// `DCOS_URL`, `DCOS_ACS_TOKEN`, `DCOS_SSL_VERIFY`, `DCOS_TIMEOUT`) are for the one
/// cluster [`discover`] picks and apply to none of these. The legacy layout, or no
/// config at all, has no named clusters (an empty list). At most
/// [`MAX_NAMED_CLUSTERS`] are read. Each cluster's problem stays with that cluster.
pub fn all_clusters(opts: &DiscoverOptions, env: &Env) -> Result<Vec<NamedCluster>, ConfigError> {
    all_clusters_with(&Disk, opts, env)
}

fn all_clusters_with(
    files: &dyn ReadConfig,
    opts: &DiscoverOptions,
    env: &Env,
) -> Result<Vec<NamedCluster>, ConfigError> {
    let dcos_dir = resolve_dcos_dir(opts, env)?;
    let clusters_dir = dcos_dir.join(CLUSTERS_DIR);
    match std::fs::metadata(&clusters_dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(error::io_error(&clusters_dir, e)),
    }
    // Only the cluster's own file: no flag or variable meant for the current cluster.
    let own = DiscoverOptions {
        upstream: None,
        cluster: None,
        ..opts.clone()
    };
    let no_env = Env::default();
    let mut all = Vec::new();
    for c in list_clusters(&clusters_dir)?
        .into_iter()
        .take(MAX_NAMED_CLUSTERS)
    {
        let file = c.dir.join(CONFIG_FILE);
        let config = read_optional(files, &file).and_then(|text| {
            let parsed = parse_file(&file, &text.unwrap_or_default())?;
            let source = ConfigSource::Cluster {
                id: c.id.clone(),
                file: file.clone(),
            };
            apply_overrides(source, dcos_dir.clone(), &parsed, &own, &no_env)
        });
        let name = match &config {
            Ok(cfg) => cfg.name.clone(),
            Err(_) => read_cluster_name(files, &file),
        };
        all.push(NamedCluster {
            id: c.id,
            name,
            attached: c.attached,
            config,
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::env::ENV_DCOS_URL;
    use super::layout::list_clusters;
    use super::test_support::*;
    use super::*;

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

    /// The DC/OS CLI's first run leaves an empty `~/.dcos/dcos.toml`: that is "not set
    /// up yet" (wait, like no directory at all), and a URL override still works.
    #[test]
    fn an_empty_or_blank_legacy_file_means_not_set_up_yet() {
        for text in ["", " \n\t\n"] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("dcos.toml");
            std::fs::write(&file, text).unwrap();
            let o = DiscoverOptions {
                dcos_dir: Some(dir.path().to_owned()),
                ..Default::default()
            };
            let (err, msg) = discover_err(&o, &no_env());
            assert!(matches!(err, ConfigError::LegacyEmpty { .. }), "{err:?}");
            assert!(err.is_not_set_up(), "{msg}");
            assert!(msg.contains("dcos cluster setup"), "{msg}");
            assert!(msg.contains(&file.display().to_string()), "{msg}");
            let cfg = discover(&o, &env([(env::ENV_DCOS_URL, "https://m.example.com")])).unwrap();
            assert_eq!(cfg.dcos_url, "https://m.example.com/");
        }
    }
}
