//! Where the DC/OS CLI keeps its config and which cluster is the current one
//! (reference §1).
//!
//! The root directory is `--dcos-dir`, else `DCOS_DIR`, else `~/.dcos`. Under it, the
//! per-cluster layout `clusters/<id>/dcos.toml` wins when `clusters/` exists; else the
//! legacy single file (`$DCOS_CONFIG`, else `<root>/dcos.toml`). In the per-cluster
//! layout the current cluster is the one asked for (`--cluster` / `DCOS_CLUSTER`, by ID,
//! else by `cluster.name`), else the only one, else the one with an `attached` marker.
//!
//! Choosing reads no `dcos.toml` unless it must: listing the clusters looks only at
//! directories and markers, and the clusters' names are read only to match a name that
//! is no cluster's ID or to list the clusters in an error. So a discovery that picks by
//! ID, the only cluster or the attached one (the watcher runs one on every change) reads
//! one file: the chosen cluster's.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::DiscoverOptions;
use super::error::{ConfigError, io_error};
use super::parse::{cluster_name, parse_table};
use super::read::{ReadConfig, read_optional};
use crate::env::Env;

/// Environment variable naming the DC/OS CLI's root directory.
const ENV_DCOS_DIR: &str = "DCOS_DIR";
/// Environment variable picking a cluster by ID or `cluster.name`.
const ENV_DCOS_CLUSTER: &str = "DCOS_CLUSTER";
/// Environment variable naming the legacy single config file.
const ENV_DCOS_CONFIG: &str = "DCOS_CONFIG";
/// The command-line flag naming the DC/OS directory.
const FLAG_DCOS_DIR: &str = "--dcos-dir";

/// The default root directory's name under the user's home: `~/.dcos`.
const DEFAULT_DIR_NAME: &str = ".dcos";
/// The per-cluster layout's directory under the root.
pub(crate) const CLUSTERS_DIR: &str = "clusters";
/// The staging directory inside `clusters/` used by `dcos cluster setup`; never a cluster.
const SETUP_DIR: &str = "setup";
/// The marker file that makes a cluster directory the current one.
const ATTACHED_FILE: &str = "attached";
/// The config file's name, in each cluster directory and in the legacy root.
pub(super) const CONFIG_FILE: &str = "dcos.toml";

/// One cluster directory under `<root>/clusters/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterCandidate {
    /// The directory name: the cluster ID.
    pub id: String,
    /// The directory's path.
    pub dir: PathBuf,
    /// Whether the directory holds a regular file named `attached`.
    pub attached: bool,
    /// `cluster.name` from its `dcos.toml`: None until [`read_names`] runs, and after it
    /// when absent or when the file cannot be read or parsed (such a cluster can still be
    /// picked by ID).
    pub name: Option<String>,
}

/// The cluster chosen by [`choose_cluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Selected {
    /// The cluster ID (directory name).
    pub id: String,
    /// The cluster directory.
    pub dir: PathBuf,
    /// `<dir>/dcos.toml`, which may not exist (it then reads as an empty file).
    pub file: PathBuf,
}

/// Which config layout is present under a DC/OS directory.
#[derive(Debug)]
pub(super) enum Location {
    /// The per-cluster layout, with the current cluster chosen.
    Cluster(Selected),
    /// The legacy single file (`<root>/dcos.toml` or `$DCOS_CONFIG`), which exists.
    Legacy {
        /// The file's path.
        file: PathBuf,
    },
    /// No config at all. Fine when the URL comes from `--upstream` or `DCOS_URL`
    /// ([`super::ConfigSource::EnvOnly`]); otherwise this is the error to report.
    Unconfigured(ConfigError),
}

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
pub(crate) fn resolve_dcos_dir(opts: &DiscoverOptions, env: &Env) -> Result<PathBuf, ConfigError> {
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
pub(super) fn wanted_cluster<'a>(opts: &'a DiscoverOptions, env: &'a Env) -> Option<&'a str> {
    opts.cluster
        .as_deref()
        .filter(|c| !c.is_empty())
        .or_else(|| env.get(ENV_DCOS_CLUSTER))
}

/// The legacy file named by `DCOS_CONFIG`, made absolute against `opts.cwd`.
pub(crate) fn legacy_config_path(
    opts: &DiscoverOptions,
    env: &Env,
) -> Result<Option<PathBuf>, ConfigError> {
    env.get(ENV_DCOS_CONFIG)
        .map(|p| absolute(Path::new(p), opts.cwd.as_deref(), ENV_DCOS_CONFIG))
        .transpose()
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
pub(super) fn list_clusters(clusters_dir: &Path) -> Result<Vec<ClusterCandidate>, ConfigError> {
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
fn choose_cluster(
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
    // A success without names is the success with them: names matter only once `wanted`
    // matched no ID, and that path fails without them. So every failure is tried again
    // with the names, which may match `wanted` or else are listed in the error.
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
pub(super) fn locate(
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::dcos::config::env::ENV_DCOS_URL;
    use crate::dcos::config::read::Disk;
    use crate::dcos::config::test_support::*;
    use crate::dcos::config::{ClusterConfig, ConfigSource, SslVerify, discover, discover_with};
    use crate::files::ReadError;

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
    fn dcos_dir_that_is_a_file_is_an_error() {
        let o = DiscoverOptions {
            dcos_dir: Some(fixture("legacy").join(CONFIG_FILE)),
            ..DiscoverOptions::default()
        };
        let (err, msg) = discover_err(&o, &no_env());
        assert!(matches!(err, ConfigError::NotADirectory { .. }), "{err:?}");
        assert!(msg.contains("is not a directory"), "{msg}");
    }
}
