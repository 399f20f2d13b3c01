//! `--token-file FILE`: a token that something else keeps fresh (a mounted Kubernetes
//! or DC/OS secret, a cron job), followed live with the same rules as the DC/OS CLI
//! config ([`super::watch`]):
//!
//! - the file's **directory** is watched, not the file: a secret volume swaps a
//!   `..data` symlink and editors rename a temp file over the original, and both replace
//!   the inode a file watch would be holding;
//! - a burst of events is debounced, and a changed token is used only when two reads
//!   [`SETTLE`] apart agree, so a file caught half-written is never used;
//! - **keep last good**: a missing, empty or unusable file is logged once and the last
//!   good token stays in use;
//! - when the platform watcher cannot be used the file is polled every
//!   [`POLL_INTERVAL`]; it is re-read every [`RESCAN_INTERVAL`] anyway, and at once when
//!   the master refused the token ([`super::Published::reread`]).

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::refresh::TokenPublisher;
use super::watch::{DEBOUNCE, POLL_INTERVAL, RESCAN_INTERVAL, SETTLE};
use super::{RereadRequests, Snapshot};
use crate::dcos::token::{Token, TokenError};
use crate::files::{ReadError, read_bounded};

/// The largest token file read (a DC/OS token is about 1 KiB).
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Why the token file cannot be used. Never holds the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read.
    #[error("cannot read the token file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: ReadError,
    },
    /// It holds no usable token.
    #[error("the token file {path} holds no usable token: {error}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        error: TokenError,
    },
}

/// Read and check the token in `path`.
pub fn read_token(path: &Path) -> Result<Token, TokenFileError> {
    let bytes = read_bounded(path, MAX_TOKEN_FILE).map_err(|error| TokenFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    Token::new(&text).map_err(|error| TokenFileError::Token {
        path: path.to_owned(),
        error,
    })
}

/// The running token-file source.
pub struct TokenFile {
    path: PathBuf,
    publisher: TokenPublisher,
    current: Option<Token>,
    last_problem: Option<String>,
    events: mpsc::UnboundedReceiver<()>,
    _watcher: Option<RecommendedWatcher>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("polling", &self._watcher.is_none())
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Read `path` now and publish its token (or, when it cannot be used, say why and
    /// publish that: requests get 503 until a good token appears). The directory watch is
    /// in place when this returns.
    pub fn start(path: PathBuf, publisher: TokenPublisher) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = watch_dir(&path, tx)
            .map_err(|e| {
                tracing::warn!(
                    file = %path.display(),
                    "cannot watch the token file for changes ({e}); reading it every {}s instead",
                    POLL_INTERVAL.as_secs()
                )
            })
            .ok();
        let mut me = Self {
            path,
            publisher,
            current: None,
            last_problem: None,
            events,
            _watcher: watcher,
        };
        match read_token(&me.path) {
            Ok(token) => me.use_token(token),
            Err(e) => {
                tracing::warn!("{e}; waiting for it (requests get 503 until then)");
                me.last_problem = Some(e.to_string());
                me.publisher.waiting(e.to_string());
            }
        }
        me
    }

    /// Follow the file until the task is dropped.
    pub async fn run(mut self, mut rereads: RereadRequests) {
        let period = if self._watcher.is_some() {
            RESCAN_INTERVAL
        } else {
            POLL_INTERVAL
        };
        let mut rescan = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(()) = self.events.recv() => {
                    // Debounce: wait until the burst is quiet.
                    while let Ok(Some(())) =
                        tokio::time::timeout(DEBOUNCE, self.events.recv()).await
                    {}
                    self.check().await;
                }
                _ = rescan.tick() => self.check().await,
                Some(reply) = rereads.recv() => {
                    self.check().await;
                    let _ = reply.send(());
                    while let Ok(more) = rereads.try_recv() {
                        let _ = more.send(());
                    }
                }
            }
        }
    }

    /// Read the file; use a changed token once two reads agree; keep the last good one
    /// otherwise.
    async fn check(&mut self) {
        let first = read_token(&self.path);
        if let Ok(t) = &first
            && Some(t) == self.current.as_ref()
        {
            self.last_problem = None;
            return;
        }
        tokio::time::sleep(SETTLE).await;
        let second = read_token(&self.path);
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => {
                self.last_problem = None;
                self.use_token(b);
            }
            // Still changing: the next event (or rescan) looks again.
            (Ok(_), Ok(_)) => {}
            (_, Err(e)) | (Err(e), _) => {
                let msg = e.to_string();
                if self.last_problem.as_deref() != Some(&msg) {
                    let keep = if self.current.is_some() {
                        "the last good token stays in use"
                    } else {
                        "requests get 503 until it is fixed"
                    };
                    tracing::warn!("{msg}; {keep}");
                    self.last_problem = Some(msg);
                }
            }
        }
    }

    fn use_token(&mut self, token: Token) {
        let claims = token.claims().ok();
        let uid = claims
            .as_ref()
            .and_then(|c| c.uid.as_deref())
            .map_or_else(|| "?".to_owned(), super::printable);
        let expires_in = match claims.and_then(|c| c.remaining(std::time::SystemTime::now())) {
            None => "?".to_owned(),
            Some(d) => crate::dcos::token::human_duration(d),
        };
        let message = if self.current.is_some() {
            "token file changed; new requests use it"
        } else {
            "using the token file"
        };
        tracing::info!(file = %self.path.display(), %uid, %expires_in, "{message}");
        self.current = Some(token.clone());
        self.publisher.publish(token);
    }

    /// Whether a token is in use (tests).
    pub fn has_token(&self) -> bool {
        matches!(&*self.publisher.published().load(), Snapshot::Ready(_))
    }
}

/// Watch the directory holding `path`, non-recursively.
fn watch_dir(path: &Path, tx: mpsc::UnboundedSender<()>) -> notify::Result<RecommendedWatcher> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        // Any event in the directory, or a watcher error: look at the file.
        let _ = tx.send(());
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcos::config::ClusterConfig;
    use crate::source::Published;
    use crate::upstream::ClientOptions;
    use std::sync::Arc;
    use std::time::Duration;

    fn publisher() -> (Arc<Published>, RereadRequests, TokenPublisher) {
        let (published, rereads) = Published::new(Snapshot::Waiting("starting".into()));
        let published = Arc::new(published);
        let cluster = ClusterConfig::for_test("http://127.0.0.1:9", None);
        let p =
            TokenPublisher::new(published.clone(), &cluster, &ClientOptions::default()).unwrap();
        (published, rereads, p)
    }

    fn auth(published: &Published) -> Option<String> {
        published
            .load()
            .upstream()
            .and_then(|u| u.auth.as_ref())
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn rotation_is_followed_and_a_bad_version_keeps_the_last_good_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "one.a.b\n").unwrap();
        let (published, rereads, publisher) = publisher();
        let source = TokenFile::start(file.clone(), publisher);
        assert!(source.has_token());
        assert_eq!(auth(&published).as_deref(), Some("token=one.a.b"));
        let mut changes = published.subscribe();
        changes.borrow_and_update();
        tokio::spawn(source.run(rereads));

        // A rename over the file (as editors and secret volumes do).
        let tmp = dir.path().join(".token.tmp");
        std::fs::write(&tmp, "two.a.b").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(auth(&published).as_deref(), Some("token=two.a.b"));

        // Emptied, then removed: the last good token stays; a re-read confirms it.
        std::fs::write(&file, "").unwrap();
        assert!(published.reread().await.is_some());
        std::fs::remove_file(&file).unwrap();
        assert!(published.reread().await.is_some());
        assert_eq!(auth(&published).as_deref(), Some("token=two.a.b"));

        // Back, with a new token: used.
        std::fs::write(&file, "three.a.b").unwrap();
        assert!(published.reread().await.is_some());
        assert_eq!(auth(&published).as_deref(), Some("token=three.a.b"));
    }

    #[tokio::test]
    async fn a_missing_file_at_startup_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let (published, rereads, publisher) = publisher();
        let source = TokenFile::start(file.clone(), publisher);
        assert!(!source.has_token());
        let Snapshot::Waiting(why) = &*published.load() else {
            panic!()
        };
        assert!(why.contains("token file") && why.contains("token"), "{why}");
        tokio::spawn(source.run(rereads));
        std::fs::write(&file, "late.a.b").unwrap();
        assert!(published.reread().await.is_some());
        assert_eq!(auth(&published).as_deref(), Some("token=late.a.b"));
    }
}
