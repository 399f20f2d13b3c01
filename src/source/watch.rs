//! Following the DC/OS CLI's config as it changes: file watching, debounce, settle, and
//! keep-last-good.
//!
//! Both DC/OS CLIs rewrite `dcos.toml` in place (truncate, then write), so a reader can
//! see an empty or half-written file; editors write a temp file and rename it; `dcos
//! cluster attach` moves the `attached` marker between directories (reference §3). The
//! watcher therefore never trusts one read:
//!
//! 1. **Watch** the DC/OS directory, `clusters/`, and each cluster directory (not
//!    recursively: plugin trees under a cluster are not ours). A directory that does not
//!    exist yet is waited for by watching its nearest existing ancestor. The watch set is
//!    re-synced after every burst, so new and removed clusters are picked up.
//! 2. **Debounce**: wait until the burst has been quiet for [`DEBOUNCE`].
//! 3. **Settle**: run discovery; if the result differs from what is in use, run it again
//!    after [`SETTLE`] and act only when two reads agree. A truncated file read in the
//!    middle of a write never agrees with the finished one. Dropping the token waits
//!    longer ([`LOGOUT_SETTLE`]), so a file caught with its URL line written and its
//!    token line not yet never sends a request without a token.
//! 4. **Keep last good**: an invalid result is logged once (naming the file and line)
//!    and the last good snapshot stays in use. A valid one is published as one new
//!    snapshot; the pooled client is rebuilt only if the master or TLS set-up changed.
//!
//! The same burst also re-reads every cluster of the per-cluster layout on its own
//! ([`config::all_clusters`]) for the clusters served by name (`<name>.localhost`, see
//! [`super::named`]): the same two agreeing reads, keep-last-good per cluster, and each
//! cluster's pooled client kept across its token changes ([`Upstream::next`]). A change
//! in one cluster rebuilds nothing of the others.
//!
//! If the platform watcher cannot be used (no inotify, its limits, an unsupported file
//! system), the watcher says so once and polls every [`POLL_INTERVAL`] instead. Even with
//! a working watcher, discovery runs every [`RESCAN_INTERVAL`] to heal a missed event, and
//! at once when a request's token was refused ([`super::Published::reread`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::named::{ClusterEntry, Clusters, labels};
use super::{Change, Published, RereadRequests, Snapshot, announce};
use crate::dcos::config::{
    self, CLUSTERS_DIR, ClusterConfig, ConfigError, DiscoverOptions, NamedCluster,
    legacy_config_path, resolve_dcos_dir,
};
use crate::dcos::token::human_duration;
use crate::env::Env;
use crate::settings::Settings;
use crate::types::WatchMode;
use crate::upstream::Upstream;

/// Quiet time that ends a burst of file events.
pub const DEBOUNCE: Duration = Duration::from_millis(10);
/// The longest a continuous stream of events can delay a re-read.
pub const MAX_DEBOUNCE: Duration = Duration::from_millis(100);
/// Time between the two reads that must agree before a changed config is used.
pub const SETTLE: Duration = Duration::from_millis(20);
/// Time between the two reads that must agree before a token is dropped (a logout, or a
/// file caught mid-write with its URL line written and its token line not yet): a
/// logout is rare and never urgent, a request sent without a token by mistake fails.
pub const LOGOUT_SETTLE: Duration = Duration::from_millis(250);
/// How many times the settle check is repeated while the files keep changing.
const MAX_SETTLE_ROUNDS: usize = 10;
/// How often the files are read when the platform watcher cannot be used.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the files are read anyway, to heal an event the platform never delivered.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Warn when less than this is left before the token expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);
/// The longest the expiry check sleeps (wall-clock time jumps on suspend and resume).
const EXPIRY_RECHECK: Duration = Duration::from_secs(60);
/// The most cluster directories watched (a sanity bound against a hostile tree).
const MAX_WATCHED_CLUSTERS: usize = 256;

/// What to follow: the same discovery that ran at startup, repeated on every change.
#[derive(Debug, Clone)]
pub struct Follow {
    /// Where to look (`--dcos-dir`, `--cluster`, `--upstream`).
    pub discover: DiscoverOptions,
    /// The environment captured at startup (`DCOS_DIR`, `DCOS_CLUSTER`, `DCOS_URL`, …).
    pub env: Env,
    /// Platform file events (falling back to polling), or polling only.
    pub mode: WatchMode,
    /// The polling interval, when polling.
    pub poll_interval: Duration,
}

impl Follow {
    /// Follow what `settings` discovered, with the environment `env`.
    pub fn new(settings: &Settings, env: Env) -> Self {
        Self {
            discover: settings.discover.clone(),
            env,
            mode: settings.watch,
            poll_interval: POLL_INTERVAL,
        }
    }
}

/// The running follower: owns the platform watcher and the last good config.
pub struct Tracker {
    published: Arc<Published>,
    settings: Settings,
    follow: Arc<Follow>,
    local_addr: Option<SocketAddr>,
    /// The config behind the current snapshot; `None` while waiting for a first one.
    current: Option<ClusterConfig>,
    /// The last problem logged, so each is logged once per change.
    last_problem: Option<String>,
    expiry: Expiry,
    fs: Option<FsWatch>,
    events: mpsc::UnboundedReceiver<()>,
    /// The clusters served by name: what was read last, and what is in use per ID.
    named: Named,
}

/// One read of every cluster's own config, comparable with the next (errors by their
/// message).
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamedRead {
    id: String,
    name: Option<String>,
    config: Result<ClusterConfig, String>,
}

impl NamedRead {
    fn of(c: NamedCluster) -> Self {
        Self {
            id: c.id,
            name: c.name,
            config: c.config.map_err(|e| e.to_string()),
        }
    }
}

/// What is in use for one cluster served by name.
#[derive(Debug)]
struct NamedState {
    /// The config behind `snapshot`, when it holds a master.
    good: Option<ClusterConfig>,
    snapshot: Arc<Snapshot>,
    /// The problem logged last, so each is logged once.
    problem: Option<String>,
}

/// The clusters served by name, as the tracker keeps them.
#[derive(Debug, Default)]
struct Named {
    /// The read behind what is in use (`None` before the first).
    seen: Option<Result<Vec<NamedRead>, String>>,
    by_id: BTreeMap<String, NamedState>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("polling", &self.fs.is_none())
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// Start following: the platform watches are in place when this returns, so any
    /// change made afterwards is seen. `current` is the config behind the snapshot
    /// already published (`None` when waiting for one).
    pub fn start(
        published: Arc<Published>,
        settings: &Settings,
        follow: Follow,
        local_addr: Option<SocketAddr>,
        current: Option<ClusterConfig>,
    ) -> Self {
        Self::start_with(
            published,
            settings,
            follow,
            local_addr,
            current,
            FsWatch::new,
        )
    }

    /// [`Self::start`] with the platform watcher made by `watch` (tests make it fail).
    fn start_with(
        published: Arc<Published>,
        settings: &Settings,
        follow: Follow,
        local_addr: Option<SocketAddr>,
        current: Option<ClusterConfig>,
        watch: impl FnOnce(Paths, mpsc::UnboundedSender<()>) -> notify::Result<FsWatch>,
    ) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let fs = match follow.mode {
            WatchMode::Poll => None,
            WatchMode::Auto => match Paths::of(&follow) {
                Some(paths) => match watch(paths, tx) {
                    Ok(fs) => Some(fs),
                    Err(e) => {
                        poll_notice(&e, follow.poll_interval);
                        None
                    }
                },
                // No DC/OS directory can be named (no HOME): discovery fails the same way
                // on every poll, which is cheap.
                None => None,
            },
        };
        let (expiry, last_problem) = match &*published.load() {
            Snapshot::Ready(up) => (Expiry::of(up), None),
            // A startup that is waiting has already said why.
            Snapshot::Waiting(why) => (Expiry::default(), Some(why.to_string())),
        };
        let mut tracker = Self {
            published,
            settings: settings.clone(),
            follow: Arc::new(follow),
            local_addr,
            current,
            last_problem,
            expiry,
            fs,
            events,
            named: Named::default(),
        };
        // The clusters served by name are there from the first request on.
        // No DNS here: a name is checked for a loop at the next re-read (and the
        // runtime loop marker stops one meanwhile).
        let first = read_named(&tracker.follow);
        let loops = tracker.literal_loops(&first);
        tracker.apply_named(first, &loops, false);
        tracker
    }

    /// Follow until the task is dropped (the proxy aborts it at shutdown).
    pub async fn run(mut self, mut rereads: RereadRequests) {
        let mut period = Duration::ZERO;
        let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
        self.expiry.check(SystemTime::now());
        loop {
            // File events and a slow rescan, or (once the watcher has failed) polling.
            let want = if self.fs.is_some() {
                RESCAN_INTERVAL
            } else {
                self.follow.poll_interval
            };
            if want != period {
                period = want;
                rescan = tokio::time::interval_at(Instant::now() + period, period);
                rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            let expiry_in = self.expiry.next_check(SystemTime::now());
            tokio::select! {
                event = self.events.recv(), if self.fs.is_some() => {
                    if event.is_none() {
                        // The platform watcher's thread is gone.
                        poll_notice(&notify::Error::generic("the file watcher stopped"), self.follow.poll_interval);
                        self.fs = None;
                        continue;
                    }
                    self.debounce().await;
                    self.resync_watches();
                    self.reload().await;
                }
                Some(first) = rereads.recv() => {
                    // Every refused request queued so far is answered by this one read.
                    let mut waiting = vec![first];
                    while let Ok(more) = rereads.try_recv() {
                        waiting.push(more);
                    }
                    self.reload().await;
                    for w in waiting {
                        let _ = w.send(());
                    }
                }
                _ = rescan.tick() => {
                    self.resync_watches();
                    self.reload().await;
                }
                () = tokio::time::sleep(expiry_in) => self.expiry.check(SystemTime::now()),
            }
        }
    }

    /// Wait until no event has arrived for [`DEBOUNCE`] (at most [`MAX_DEBOUNCE`]).
    async fn debounce(&mut self) {
        let deadline = Instant::now() + MAX_DEBOUNCE;
        loop {
            let quiet_until = (Instant::now() + DEBOUNCE).min(deadline);
            match tokio::time::timeout_at(quiet_until, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn resync_watches(&mut self) {
        let Some(fs) = &mut self.fs else { return };
        if let Err(e) = fs.sync() {
            poll_notice(&e, self.follow.poll_interval);
            self.fs = None;
        }
    }

    /// Run discovery (off the async threads).
    async fn load(&self) -> Result<ClusterConfig, ConfigError> {
        let follow = self.follow.clone();
        tokio::task::spawn_blocking(move || config::discover(&follow.discover, &follow.env))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::Io {
                    path: PathBuf::from("<config reader>"),
                    error: std::io::Error::other(e.to_string()),
                })
            })
    }

    /// Whether `loaded` is what is already in use (or the problem already reported).
    fn unchanged(&self, loaded: &Result<ClusterConfig, ConfigError>) -> bool {
        match loaded {
            Ok(cfg) => self.current.as_ref() == Some(cfg),
            Err(e) => self.last_problem.as_deref() == Some(e.to_string().as_str()),
        }
    }

    /// Whether `loaded` would take the token away from the same master.
    fn drops_token(&self, loaded: &Result<ClusterConfig, ConfigError>) -> bool {
        match (loaded, &self.current) {
            (Ok(new), Some(cur)) => {
                new.token.is_none() && cur.token.is_some() && new.dcos_url == cur.dcos_url
            }
            _ => false,
        }
    }

    /// Read the config, the current cluster's and then every cluster's served by name;
    /// act on each once two reads [`SETTLE`] apart agree ([`LOGOUT_SETTLE`] when a token
    /// would go). While the files keep changing, nothing is done: the events of those
    /// changes bring the watcher back.
    pub async fn reload(&mut self) {
        self.reload_current().await;
        self.reload_named().await;
    }

    async fn reload_current(&mut self) {
        let mut seen = self.load().await;
        for _ in 0..MAX_SETTLE_ROUNDS {
            if self.unchanged(&seen) {
                return;
            }
            let pause = if self.drops_token(&seen) {
                LOGOUT_SETTLE
            } else {
                SETTLE
            };
            tokio::time::sleep(pause).await;
            let again = self.load().await;
            if same(&seen, &again) {
                match again {
                    Ok(cfg) => self.publish(cfg).await,
                    Err(e) => self.problem(e),
                }
                return;
            }
            seen = again;
        }
        tracing::debug!("the DC/OS config keeps changing; looking again at the next change");
    }

    /// Read every cluster's own config (off the async threads).
    async fn load_named(&self) -> Result<Vec<NamedRead>, String> {
        let follow = self.follow.clone();
        tokio::task::spawn_blocking(move || read_named(&follow))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }

    /// Whether `read` would take a token away from a cluster's master.
    fn named_drops_token(&self, read: &Result<Vec<NamedRead>, String>) -> bool {
        let Ok(read) = read else { return false };
        read.iter().any(|r| {
            let old = self.named.by_id.get(&r.id).and_then(|s| s.good.as_ref());
            match (&r.config, old) {
                (Ok(new), Some(old)) => {
                    new.token.is_none() && old.token.is_some() && new.dcos_url == old.dcos_url
                }
                _ => false,
            }
        })
    }

    /// [`Self::reload_current`] for the clusters served by name.
    async fn reload_named(&mut self) {
        let mut seen = self.load_named().await;
        for _ in 0..MAX_SETTLE_ROUNDS {
            if self.named.seen.as_ref() == Some(&seen) {
                return;
            }
            let pause = if self.named_drops_token(&seen) {
                LOGOUT_SETTLE
            } else {
                SETTLE
            };
            tokio::time::sleep(pause).await;
            let again = self.load_named().await;
            if again == seen {
                let loops = self.named_loops(&again).await;
                self.apply_named(again, &loops, true);
                return;
            }
            seen = again;
        }
    }

    /// The IDs of the clusters in `read` whose master URL resolves to this proxy.
    async fn named_loops(&self, read: &Result<Vec<NamedRead>, String>) -> BTreeSet<String> {
        let mut loops = BTreeSet::new();
        let (Some(local), Ok(read)) = (self.local_addr, read) else {
            return loops;
        };
        for r in read {
            if let Ok(cfg) = &r.config
                && crate::host::resolves_to_self(&cfg.dcos_url, local).await
            {
                loops.insert(r.id.clone());
            }
        }
        loops
    }

    /// [`Self::named_loops`] without DNS: IP literals and `localhost` only.
    fn literal_loops(&self, read: &Result<Vec<NamedRead>, String>) -> BTreeSet<String> {
        let (Some(local), Ok(read)) = (self.local_addr, read) else {
            return BTreeSet::new();
        };
        read.iter()
            .filter(|r| {
                r.config.as_ref().is_ok_and(|cfg| {
                    let url = &cfg.dcos_url;
                    let port = url
                        .port_u16()
                        .unwrap_or(if url.scheme_str() == Some("https") {
                            443
                        } else {
                            80
                        });
                    let host = url.host().unwrap_or_default();
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let ips: Vec<std::net::IpAddr> = if host.eq_ignore_ascii_case("localhost") {
                        vec![
                            std::net::Ipv4Addr::LOCALHOST.into(),
                            std::net::Ipv6Addr::LOCALHOST.into(),
                        ]
                    } else {
                        host.parse().into_iter().collect()
                    };
                    let addrs: Vec<SocketAddr> = ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect();
                    crate::host::reaches(&addrs, local)
                })
            })
            .map(|r| r.id.clone())
            .collect()
    }

    /// Build and publish the clusters served by name from `read`: a cluster whose config
    /// is unchanged keeps its snapshot; a changed one gets a new snapshot that shares its
    /// pooled client when the master and TLS are the same; a broken one keeps its last
    /// good snapshot (or, with none, answers 503 with the problem).
    fn apply_named(
        &mut self,
        read: Result<Vec<NamedRead>, String>,
        loops: &BTreeSet<String>,
        announce: bool,
    ) {
        let list = match &read {
            Ok(list) => list.clone(),
            Err(e) => {
                // The directory cannot be listed: keep every cluster as it is.
                if self.named.seen.as_ref() != Some(&read) {
                    tracing::warn!("cannot list the DC/OS clusters served by name: {e}");
                }
                self.named.seen = Some(read);
                return;
            }
        };
        let mut by_id = BTreeMap::new();
        for r in &list {
            let prev = self.named.by_id.remove(&r.id);
            let built = match &r.config {
                Ok(cfg) if prev.as_ref().and_then(|p| p.good.as_ref()) == Some(cfg) => Ok(None),
                Ok(cfg) if loops.contains(&r.id) => match self.local_addr {
                    Some(local) => Err(super::loop_message(cfg, local)),
                    None => Ok(None),
                },
                Ok(cfg) => self.named_upstream(cfg, prev.as_ref()).map(Some),
                Err(e) => Err(e.clone()),
            };
            let state = match (built, prev) {
                (Ok(None), Some(prev)) => prev,
                (Ok(Some((cfg, up))), prev) => {
                    if prev.is_some_and(|p| p.problem.is_some()) {
                        tracing::info!(cluster = %r.id, "the cluster's config is good again");
                    }
                    NamedState {
                        good: Some(cfg),
                        snapshot: Arc::new(Snapshot::Ready(up)),
                        problem: None,
                    }
                }
                (Err(problem), prev) => {
                    let kept = prev.filter(|p| p.good.is_some());
                    let repeated = kept
                        .as_ref()
                        .is_some_and(|p| p.problem.as_ref() == Some(&problem));
                    // The current cluster's problem is logged by its own reload.
                    let current = matches!(
                        self.current.as_ref().map(|c| &c.source),
                        Some(config::ConfigSource::Cluster { id, .. }) if *id == r.id
                    );
                    if !repeated && !current {
                        if kept.is_some() {
                            tracing::warn!(cluster = %r.id, "{problem}; requests to this cluster by name keep its last good config until this is fixed");
                        } else {
                            tracing::debug!(cluster = %r.id, "{problem}; requests to this cluster by name get 503 until this is fixed");
                        }
                    }
                    match kept {
                        Some(p) => NamedState {
                            problem: Some(problem),
                            ..p
                        },
                        None => NamedState {
                            good: None,
                            snapshot: Arc::new(Snapshot::Waiting(problem.as_str().into())),
                            problem: Some(problem),
                        },
                    }
                }
                // `Ok(None)` only when there is a previous state.
                (Ok(None), None) => continue,
            };
            by_id.insert(r.id.clone(), state);
        }
        let pairs: Vec<(&str, Option<&str>)> = list
            .iter()
            .map(|r| (r.id.as_str(), r.name.as_deref()))
            .collect();
        let entries = list
            .iter()
            .zip(labels(&pairs))
            .filter_map(|(r, label)| {
                let state = by_id.get(&r.id)?;
                Some(ClusterEntry {
                    id: r.id.as_str().into(),
                    name: r.name.clone(),
                    label,
                    snapshot: state.snapshot.clone(),
                })
            })
            .collect();
        self.named.by_id = by_id;
        self.named.seen = Some(read);
        self.published.store_clusters(
            Clusters {
                active: true,
                entries,
            },
            announce,
        );
    }

    /// The upstream for a cluster served by name, from its previous one when there is
    /// one (to keep its pooled client).
    fn named_upstream(
        &self,
        cfg: &ClusterConfig,
        prev: Option<&NamedState>,
    ) -> Result<(ClusterConfig, Upstream), String> {
        let options = self.settings.client_options();
        let built = match prev.map(|p| &*p.snapshot) {
            Some(Snapshot::Ready(up)) => up.next(cfg, &options),
            _ => Upstream::new(cfg, &options),
        };
        built.map(|up| (cfg.clone(), up)).map_err(|e| e.to_string())
    }

    async fn publish(&mut self, cfg: ClusterConfig) {
        if let Some(local_addr) = self.local_addr
            && crate::host::resolves_to_self(&cfg.dcos_url, local_addr).await
        {
            return self.problem_text(super::loop_message(&cfg, local_addr));
        }
        let snapshot = self.published.load();
        let previous = snapshot.upstream();
        let built = match previous {
            Some(up) => up.next(&cfg, &self.settings.client_options()),
            None => Upstream::new(&cfg, &self.settings.client_options()),
        };
        let upstream = match built {
            Ok(up) => up,
            Err(e) => return self.problem_text(e.to_string()),
        };
        let same_cluster = self
            .current
            .as_ref()
            .is_some_and(|cur| cur.source == cfg.source && cur.name == cfg.name);
        let change = match previous {
            None => Change::First,
            Some(prev) if prev.url != upstream.url && same_cluster => Change::Url,
            Some(prev) if prev.url != upstream.url => Change::Master,
            Some(_) => Change::Token,
        };
        let recovered = self.last_problem.is_some() && self.current.is_some();
        if let Some(prev) = previous
            && !prev.shares_client_with(&upstream)
        {
            tracing::debug!(master = %upstream.url, "new master or TLS settings: new connection pool");
        }
        drop(snapshot);
        self.expiry = Expiry::of(&upstream);
        // Publish first, then tell: whoever reads the log line finds the change in use.
        self.published.store(Snapshot::Ready(upstream));
        if let Some(up) = self.published.load().upstream() {
            announce(&cfg, up, change);
        }
        if recovered {
            tracing::info!("the DC/OS config is good again; the problem above is fixed");
        }
        self.expiry.check(SystemTime::now());
        self.current = Some(cfg);
        self.last_problem = None;
    }

    /// Report a config that cannot be used, once per distinct problem. With a good
    /// config in use, it stays in use; while waiting for a first one, the 503s say what
    /// is wrong now.
    fn problem(&mut self, e: ConfigError) {
        self.problem_text(e.to_string());
    }

    fn problem_text(&mut self, text: String) {
        if self.last_problem.as_deref() == Some(text.as_str()) {
            return;
        }
        if self.current.is_some() {
            tracing::warn!("{text}; keeping the last good config until this is fixed");
        } else {
            self.published
                .store(Snapshot::Waiting(text.as_str().into()));
            tracing::warn!("{text}; requests get 503 until this is fixed");
        }
        self.last_problem = Some(text);
    }
}

/// Every cluster's own config, for the clusters served by name.
fn read_named(follow: &Follow) -> Result<Vec<NamedRead>, String> {
    config::all_clusters(&follow.discover, &follow.env)
        .map(|all| all.into_iter().map(NamedRead::of).collect())
        .map_err(|e| e.to_string())
}

/// Whether two discovery results are the same (errors by their message).
fn same(a: &Result<ClusterConfig, ConfigError>, b: &Result<ClusterConfig, ConfigError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

fn poll_notice(e: &notify::Error, interval: Duration) {
    tracing::warn!(
        error = %e,
        "cannot watch the DC/OS config for changes; reading it every {} instead (on Linux, \
         raising fs.inotify.max_user_watches may help; --watch poll skips the attempt)",
        human_duration(interval)
    );
}

/// The paths that matter: the DC/OS directory and the legacy file, if any.
#[derive(Debug, Clone)]
struct Paths {
    root: PathBuf,
    legacy: Option<PathBuf>,
}

impl Paths {
    fn of(follow: &Follow) -> Option<Self> {
        let root = resolve_dcos_dir(&follow.discover, &follow.env).ok()?;
        let legacy = legacy_config_path(&follow.discover, &follow.env)
            .ok()
            .flatten();
        Some(Self { root, legacy })
    }

    /// The directories to watch now: the root, `clusters/` and each cluster directory
    /// that exist, or else the nearest existing ancestor (to see them appear).
    fn wanted(&self) -> BTreeSet<PathBuf> {
        let mut set = BTreeSet::new();
        if self.root.is_dir() {
            set.insert(self.root.clone());
            let clusters = self.root.join(CLUSTERS_DIR);
            if clusters.is_dir() {
                set.insert(clusters.clone());
                if let Ok(entries) = std::fs::read_dir(&clusters) {
                    let dirs = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .take(MAX_WATCHED_CLUSTERS);
                    set.extend(dirs);
                }
            }
        } else if let Some(up) = nearest_dir(&self.root) {
            set.insert(up);
        }
        if let Some(legacy) = &self.legacy
            && let Some(dir) = legacy.parent().and_then(nearest_dir_inclusive)
        {
            set.insert(dir);
        }
        set
    }

    /// Whether a file event may change what discovery finds.
    fn relevant(&self, event: &Event) -> bool {
        match event.kind {
            // Reads (ours included) change nothing; a finished write does.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        if event.need_rescan() || event.paths.is_empty() {
            return true;
        }
        event.paths.iter().any(|p| {
            p.starts_with(&self.root)
                || self.root.starts_with(p)
                || self
                    .legacy
                    .as_ref()
                    .is_some_and(|l| p == l || l.starts_with(p))
        })
    }
}

fn nearest_dir(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|p| p.is_dir())
        .map(Path::to_path_buf)
}

fn nearest_dir_inclusive(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.is_dir()).map(Path::to_path_buf)
}

/// The platform watcher and the directories it watches.
struct FsWatch {
    watcher: RecommendedWatcher,
    paths: Paths,
    watched: BTreeSet<PathBuf>,
}

impl FsWatch {
    fn new(paths: Paths, tx: mpsc::UnboundedSender<()>) -> notify::Result<Self> {
        let filter = paths.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
            let wanted = match &res {
                Ok(event) => filter.relevant(event),
                // An error from the watcher thread: look at the files to be safe.
                Err(_) => true,
            };
            if wanted {
                let _ = tx.send(());
            }
        })?;
        let mut fs = Self {
            watcher,
            paths,
            watched: BTreeSet::new(),
        };
        fs.sync()?;
        Ok(fs)
    }

    /// Bring the watch set in line with the directories that exist now.
    fn sync(&mut self) -> notify::Result<()> {
        let wanted = self.paths.wanted();
        for gone in self.watched.difference(&wanted) {
            // The directory may already be gone, and its watch with it.
            let _ = self.watcher.unwatch(gone);
        }
        self.watched.retain(|p| wanted.contains(p));
        for dir in wanted {
            if self.watched.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                // Removed between listing and watching: the next sync sees that.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn is_not_found(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound | notify::ErrorKind::WatchNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Warnings about the token running out, each given once per token.
#[derive(Debug, Default)]
struct Expiry {
    exp: Option<SystemTime>,
    warned_soon: bool,
    warned_expired: bool,
}

impl Expiry {
    /// The warnings for `up`'s token (none for a token without `exp`, or no token).
    fn of(up: &Upstream) -> Self {
        let exp = match &up.claims {
            Some(Ok(claims)) => claims.exp,
            _ => None,
        };
        Self {
            exp,
            ..Self::default()
        }
    }

    /// How long until the next warning may be due.
    fn next_check(&self, now: SystemTime) -> Duration {
        let Some(exp) = self.exp else {
            return EXPIRY_RECHECK;
        };
        let until = |t: SystemTime| t.duration_since(now).unwrap_or(Duration::ZERO);
        let next = if !self.warned_soon {
            until(exp.checked_sub(EXPIRY_WARNING).unwrap_or(exp))
        } else if !self.warned_expired {
            until(exp)
        } else {
            EXPIRY_RECHECK
        };
        next.min(EXPIRY_RECHECK)
    }

    /// Give the warnings that are due at `now`.
    fn check(&mut self, now: SystemTime) {
        let Some(exp) = self.exp else { return };
        match exp.duration_since(now) {
            Ok(left) if left > Duration::ZERO => {
                if left < EXPIRY_WARNING && !self.warned_soon {
                    self.warned_soon = true;
                    tracing::warn!(
                        expires_in = %human_duration(left),
                        "the DC/OS token expires in under 24 h: run `dcos auth login` to renew it"
                    );
                }
            }
            _ => {
                if !self.warned_expired {
                    self.warned_soon = true;
                    self.warned_expired = true;
                    tracing::warn!(
                        "the DC/OS token has expired: run `dcos auth login`; requests are still \
                         forwarded and the master will answer them with 401"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(root: &str) -> Paths {
        Paths {
            root: PathBuf::from(root),
            legacy: None,
        }
    }

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn reads_are_not_changes_but_finished_writes_are() {
        let p = paths("/h/.dcos");
        let f = "/h/.dcos/clusters/a/dcos.toml";
        assert!(!p.relevant(&event(
            EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)),
            f
        )));
        assert!(!p.relevant(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            f
        )));
        assert!(p.relevant(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            f
        )));
        assert!(p.relevant(&event(EventKind::Any, f)));
    }

    #[test]
    fn only_paths_on_the_way_to_the_config_matter() {
        let p = paths("/h/.dcos");
        let create = EventKind::Create(notify::event::CreateKind::Any);
        // The root itself appearing in a watched ancestor.
        assert!(p.relevant(&event(create, "/h/.dcos")));
        assert!(p.relevant(&event(create, "/h/.dcos/clusters/x")));
        // Unrelated files beside it.
        assert!(!p.relevant(&event(create, "/h/notes.txt")));
        assert!(!p.relevant(&event(create, "/h/.dcosx")));
        let mut with_legacy = paths("/h/.dcos");
        with_legacy.legacy = Some(PathBuf::from("/etc/dcos/dcos.toml"));
        assert!(with_legacy.relevant(&event(create, "/etc/dcos/dcos.toml")));
        assert!(!with_legacy.relevant(&event(create, "/etc/dcos/other.toml")));
    }

    #[test]
    fn watches_the_nearest_existing_ancestor_of_a_missing_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b/.dcos");
        let p = Paths {
            root: root.clone(),
            legacy: None,
        };
        assert_eq!(p.wanted(), BTreeSet::from([tmp.path().to_path_buf()]));
        std::fs::create_dir_all(root.join("clusters/c1")).unwrap();
        std::fs::create_dir_all(root.join("clusters/c2")).unwrap();
        std::fs::write(root.join("clusters/not-a-dir"), "").unwrap();
        assert_eq!(
            p.wanted(),
            BTreeSet::from([
                root.clone(),
                root.join("clusters"),
                root.join("clusters/c1"),
                root.join("clusters/c2"),
            ])
        );
    }

    #[test]
    fn expiry_warnings_come_once_each_in_order() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut e = Expiry {
            exp: Some(t0 + Duration::from_secs(48 * 3600)),
            ..Expiry::default()
        };
        // Far from expiry: nothing due, re-check within the cap.
        e.check(t0);
        assert!(!e.warned_soon);
        assert_eq!(e.next_check(t0), EXPIRY_RECHECK);
        let soon = t0 + Duration::from_secs(24 * 3600 - 30);
        assert_eq!(e.next_check(soon), Duration::from_secs(30));
        let day_left = t0 + Duration::from_secs(25 * 3600);
        e.check(day_left);
        assert!(e.warned_soon && !e.warned_expired);
        let after = t0 + Duration::from_secs(49 * 3600);
        assert_eq!(e.next_check(after), Duration::ZERO);
        e.check(after);
        assert!(e.warned_expired);
        // Nothing more to say.
        assert_eq!(e.next_check(after), EXPIRY_RECHECK);
    }

    #[tokio::test]
    async fn a_watcher_that_cannot_start_falls_back_to_polling() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(".dcos");
        let dir = root.join("clusters/c1");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("dcos.toml");
        let text = |token: &str| {
            format!("[core]\ndcos_url = \"http://127.0.0.1:9\"\ndcos_acs_token = \"{token}\"\n")
        };
        std::fs::write(&file, text("first.a.b")).unwrap();
        let mut settings = Settings::default();
        settings.discover.dcos_dir = Some(root);
        let mut follow = Follow::new(&settings, Env::default());
        follow.poll_interval = Duration::from_millis(20);
        let cfg = config::discover(&follow.discover, &follow.env).unwrap();
        let up = Upstream::new(&cfg, &settings.client_options()).unwrap();
        let (published, rereads) = Published::new(Snapshot::Ready(up));
        let published = Arc::new(published);

        // As when inotify's limits are reached.
        let tracker = Tracker::start_with(
            published.clone(),
            &settings,
            follow,
            None,
            Some(cfg),
            |_, _| Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)),
        );
        assert!(tracker.fs.is_none(), "fell back to polling");
        let mut changes = published.subscribe();
        let task = tokio::spawn(tracker.run(rereads));
        std::fs::write(&file, text("second.a.b")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("the poll saw the change")
            .unwrap();
        let now = published.load();
        assert_eq!(
            now.upstream().unwrap().auth.as_ref().unwrap(),
            "token=second.a.b"
        );
        task.abort();
    }

    #[test]
    fn a_token_without_exp_never_warns() {
        let mut e = Expiry::default();
        e.check(SystemTime::now());
        assert!(!e.warned_soon && !e.warned_expired);
    }
}
