//! Keeping a logged-in token fresh: the service-account and password sources.
//!
//! The [`Refresher`] logs in at once, publishes the token as a new snapshot (sharing the
//! pooled client, see [`Upstream::next`]), and logs in again ahead of expiry
//! ([`refresh_delay`]: at 80 % of the lifetime or when 5 minutes remain, whichever comes
//! first). When the master answers 401, the request path asks for a re-read
//! ([`super::Published::reread`]); the refresher answers every request queued at that
//! moment, and every one that arrives while it logs in, with **one** login
//! (single-flight), and a login younger than [`RELOGIN_MIN_INTERVAL`] answers at once.
//!
//! A failed login is retried with exponential backoff and jitter ([`backoff`]); the old
//! token stays in use until it expires. Before the first login succeeds, requests get
//! 503 with the reason. No key, password or token is ever logged.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::login::{Login, LoginError};
use super::{Published, Reread, RereadRequests, Snapshot};
use crate::dcos::config::ClusterConfig;
use crate::dcos::token::{Token, human_duration};
use crate::upstream::{ClientOptions, Upstream, UpstreamError};

/// Log in again once this fraction of the token's lifetime has passed...
pub const REFRESH_FRACTION: f64 = 0.8;
/// ...or when this much of it is left, whichever comes first...
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// ...but never before this fraction has passed: a token that lives only minutes would
/// otherwise be renewed without pause.
pub const MIN_REFRESH_FRACTION: f64 = 0.5;
/// A 401 within this time of a successful login is answered with that login's token (it
/// is as fresh as a new one would be).
pub const RELOGIN_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The first retry after a failed login waits about this long...
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// ...doubling with each failure up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// When to log in again after getting a token that lives `lifetime`.
pub fn refresh_delay(lifetime: Duration) -> Duration {
    let at_fraction = lifetime.mul_f64(REFRESH_FRACTION);
    let at_margin = lifetime
        .saturating_sub(REFRESH_MARGIN)
        .max(lifetime.mul_f64(MIN_REFRESH_FRACTION));
    at_fraction.min(at_margin)
}

/// How long to wait after the `failures`-th failure in a row (1-based): exponential
/// from [`BACKOFF_START`] up to [`BACKOFF_MAX`], with "equal jitter" (half fixed, half
/// random; `jitter` in `0.0..=1.0`) so that many proxies do not retry in step.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_START.saturating_mul(1 << exp).min(BACKOFF_MAX);
    base / 2 + (base / 2).mul_f64(jitter.clamp(0.0, 1.0))
}

/// A random number in `0.0..=1.0` for [`backoff`].
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    // On failure (no entropy source) the jitter is 0: the backoff still works.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

/// Something that can log in: the real [`Login`], or a test double.
pub trait Authenticate: Send + Sync + 'static {
    /// Who logs in, for log lines.
    fn uid(&self) -> &str;
    /// Where, for log lines.
    fn endpoint(&self) -> String;
    /// Log in once.
    fn authenticate(&self) -> impl Future<Output = Result<Token, LoginError>> + Send;
}

impl Authenticate for Login {
    fn uid(&self) -> &str {
        Login::uid(self)
    }
    fn endpoint(&self) -> String {
        Login::endpoint(self).to_string()
    }
    fn authenticate(&self) -> impl Future<Output = Result<Token, LoginError>> + Send {
        self.login()
    }
}

/// Login counters, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct LoginStats {
    /// Successful logins.
    pub logins: AtomicU64,
    /// Failed logins.
    pub failures: AtomicU64,
}

/// Builds the snapshot for each new token of one master: the pooled client is made once
/// and shared by every token's [`Upstream`].
#[derive(Debug)]
pub struct TokenPublisher {
    published: Arc<Published>,
    cluster: ClusterConfig,
    base: Upstream,
    options: ClientOptions,
}

impl TokenPublisher {
    /// A publisher for `cluster`'s master (its `token` is ignored).
    pub fn new(
        published: Arc<Published>,
        cluster: &ClusterConfig,
        options: &ClientOptions,
    ) -> Result<Self, UpstreamError> {
        let mut cluster = cluster.clone();
        cluster.token = None;
        let base = Upstream::new(&cluster, options)?;
        Ok(Self {
            published,
            cluster,
            base,
            options: options.clone(),
        })
    }

    /// The master's pooled client (what a login uses too).
    pub fn client(&self) -> &crate::upstream::HttpsClient {
        self.base.client()
    }

    /// The master URL.
    pub fn dcos_url(&self) -> &http::Uri {
        &self.cluster.dcos_url
    }

    /// The published snapshots.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// Publish `token` for new requests.
    pub fn publish(&self, token: Token) {
        let mut cluster = self.cluster.clone();
        cluster.token = Some(token);
        match self.base.next(&cluster, &self.options) {
            Ok(mut up) => {
                // A new login or a rewritten token file brings the next token, whatever
                // the CLI config's origins say.
                up.renewable = true;
                self.published.store(Snapshot::Ready(up));
            }
            // Only a CA bundle that vanished since startup can fail here; the snapshot
            // in use stays.
            Err(e) => tracing::error!("cannot use the new token: {e}"),
        }
    }

    /// Publish "no token, because `why`": requests get 503 with it.
    pub fn waiting(&self, why: String) {
        self.published.store(Snapshot::Waiting(why.into()));
    }
}

/// The running login source.
pub struct Refresher<A> {
    auth: A,
    publisher: TokenPublisher,
    stats: Arc<LoginStats>,
    /// When the token in use expires (`None`: no token yet, or one that never expires).
    expires: Option<SystemTime>,
    have_token: bool,
    last_login: Option<Instant>,
    failures: u32,
}

impl<A> std::fmt::Debug for Refresher<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("have_token", &self.have_token)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl<A: Authenticate> Refresher<A> {
    /// A refresher that logs in with `auth` and publishes through `publisher`.
    pub fn new(auth: A, publisher: TokenPublisher, stats: Arc<LoginStats>) -> Self {
        Self {
            auth,
            publisher,
            stats,
            expires: None,
            have_token: false,
            last_login: None,
            failures: 0,
        }
    }

    /// Log in now, ahead of expiry, on each 401 and after each failure, until the task is
    /// dropped.
    pub async fn run(mut self, mut rereads: RereadRequests) {
        let mut next = Instant::now();
        let mut scheduled = true;
        loop {
            let mut waiting: Vec<Reread> = Vec::new();
            tokio::select! {
                () = tokio::time::sleep_until(next), if scheduled => {}
                Some(first) = rereads.recv() => {
                    waiting.push(first);
                    while let Ok(more) = rereads.try_recv() {
                        waiting.push(more);
                    }
                    let fresh = self
                        .last_login
                        .is_some_and(|t| t.elapsed() < RELOGIN_MIN_INTERVAL);
                    // While failing, the backoff decides: a 401 storm must not become a
                    // login storm.
                    if fresh || self.failures > 0 {
                        answer(waiting);
                        continue;
                    }
                    tracing::info!(uid = %super::printable(self.auth.uid()), "the master refused the token; logging in again now");
                }
            }
            let delay = self.login_once().await;
            // Requests that queued during the login are answered by it too.
            while let Ok(more) = rereads.try_recv() {
                waiting.push(more);
            }
            answer(waiting);
            match delay {
                Some(d) => {
                    next = Instant::now() + d;
                    scheduled = true;
                }
                None => scheduled = false,
            }
        }
    }

    /// One login attempt; returns when to try next (`None`: only on a 401).
    async fn login_once(&mut self) -> Option<Duration> {
        let uid = super::printable(self.auth.uid());
        match self.auth.authenticate().await {
            Ok(token) => {
                self.stats.logins.fetch_add(1, Ordering::Relaxed);
                self.failures = 0;
                self.last_login = Some(Instant::now());
                let now = SystemTime::now();
                let exp = token.claims().ok().and_then(|c| c.exp);
                self.expires = exp;
                self.have_token = true;
                self.publisher.publish(token);
                let Some(exp) = exp else {
                    tracing::info!(%uid, "logged in to DC/OS (the token never expires)");
                    return None;
                };
                let lifetime = exp.duration_since(now).unwrap_or(Duration::ZERO);
                let delay = refresh_delay(lifetime);
                tracing::info!(
                    %uid,
                    expires_in = %human_duration(lifetime),
                    next_login_in = %human_duration(delay),
                    "logged in to DC/OS"
                );
                Some(delay)
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.failures = self.failures.saturating_add(1);
                let retry = backoff(self.failures, jitter());
                let now = SystemTime::now();
                let held = match (self.have_token, self.expires) {
                    (false, _) => "no token yet (requests get 503)".to_owned(),
                    (true, None) => "the current token stays in use".to_owned(),
                    (true, Some(exp)) => match exp.duration_since(now) {
                        Ok(left) => format!(
                            "the current token stays in use (expires in {})",
                            human_duration(left)
                        ),
                        Err(_) => "the current token has expired".to_owned(),
                    },
                };
                let retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
                match &e {
                    LoginError::Rejected { .. } | LoginError::BadKey { .. } => {
                        tracing::error!(
                            attempt = self.failures,
                            retry_in_ms = retry_ms,
                            "login failed: {e}; {held}"
                        )
                    }
                    _ => {
                        tracing::warn!(
                            attempt = self.failures,
                            retry_in_ms = retry_ms,
                            "login failed: {e}; {held}"
                        )
                    }
                }
                if !self.have_token {
                    self.publisher.waiting(format!(
                        "not logged in yet: {e} (retrying; see the proxy's log)"
                    ));
                }
                Some(retry)
            }
        }
    }
}

fn answer(waiting: Vec<Reread>) {
    for w in waiting {
        let _ = w.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn refresh_comes_at_80_percent_or_5_minutes_before_expiry() {
        let day = Duration::from_secs(86_400);
        assert_eq!(refresh_delay(5 * day), (5 * day).mul_f64(0.8));
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_delay(hour), hour.mul_f64(0.8));
        // 20 min: 80 % is 16 min, 5 min left is 15 min: the earlier wins.
        let twenty = Duration::from_secs(20 * 60);
        assert_eq!(refresh_delay(twenty), Duration::from_secs(15 * 60));
        // A few seconds: never before half the lifetime.
        assert_eq!(
            refresh_delay(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(refresh_delay(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_with_jitter() {
        assert_eq!(backoff(1, 0.0), BACKOFF_START / 2);
        assert_eq!(backoff(1, 1.0), BACKOFF_START);
        assert_eq!(backoff(2, 1.0), BACKOFF_START * 2);
        assert_eq!(backoff(3, 0.5), (BACKOFF_START * 4).mul_f64(0.75));
        assert_eq!(backoff(100, 1.0), BACKOFF_MAX);
        assert!(backoff(100, 0.0) >= BACKOFF_MAX / 2);
        let j = jitter();
        assert!((0.0..=1.0).contains(&j));
    }

    /// Logs in with tokens living `lifetime`; fails while `fail` is set.
    struct FakeAuth {
        calls: Arc<AtomicUsize>,
        lifetime: Duration,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Authenticate for FakeAuth {
        fn uid(&self) -> &str {
            "sa"
        }
        fn endpoint(&self) -> String {
            "test".into()
        }
        async fn authenticate(&self) -> Result<Token, LoginError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(LoginError::Rejected {
                    uid: "sa".into(),
                    endpoint: "test".into(),
                    status: 401,
                    detail: "no".into(),
                });
            }
            let exp = (SystemTime::now() + self.lifetime)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            use base64::Engine;
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"uid":"sa","exp":{exp},"n":{n}}}"#));
            Ok(Token::new(&format!("e30.{payload}.c2ln")).unwrap())
        }
    }

    fn setup(
        lifetime: Duration,
    ) -> (
        Arc<Published>,
        RereadRequests,
        Refresher<FakeAuth>,
        Arc<AtomicUsize>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let (published, rereads) = Published::new(Snapshot::Waiting("logging in".into()));
        let published = Arc::new(published);
        let cluster = ClusterConfig::for_test("http://127.0.0.1:9", None);
        let publisher =
            TokenPublisher::new(published.clone(), &cluster, &ClientOptions::default()).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let auth = FakeAuth {
            calls: calls.clone(),
            lifetime,
            fail: fail.clone(),
        };
        let r = Refresher::new(auth, publisher, Arc::default());
        (published, rereads, r, calls, fail)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_401s_share_one_login() {
        let (published, rereads, r, calls, _) = setup(Duration::from_secs(3600));
        let mut changes = published.subscribe();
        tokio::spawn(r.run(rereads));
        changes.changed().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(published.load().upstream().is_some());
        tokio::time::sleep(RELOGIN_MIN_INTERVAL * 2).await;

        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let p = published.clone();
                tokio::spawn(async move { p.reread().await.is_some() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap(), "every request got an answer");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one shared login");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_login_keeps_the_old_token_and_backs_off() {
        let (published, rereads, r, calls, fail) = setup(Duration::from_secs(100));
        let mut changes = published.subscribe();
        tokio::spawn(r.run(rereads));
        changes.changed().await.unwrap();
        let first = published.load();
        fail.store(true, Ordering::SeqCst);
        // The refresh is due at 80 s; let a few backed-off retries happen.
        tokio::time::sleep(Duration::from_secs(85)).await;
        let tries = calls.load(Ordering::SeqCst);
        assert!(tries >= 3, "retried with backoff: {tries}");
        assert!(tries < 20, "but not in a tight loop: {tries}");
        assert!(
            Arc::ptr_eq(&first, &published.load()),
            "the old token stays"
        );
        // A 401 while failing is answered without another login.
        let before = calls.load(Ordering::SeqCst);
        assert!(published.reread().await.is_some());
        assert_eq!(calls.load(Ordering::SeqCst), before);
        fail.store(false, Ordering::SeqCst);
        changes.changed().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &published.load()), "a new token");
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_first_login_requests_are_told_why() {
        let (published, rereads, r, _, fail) = setup(Duration::from_secs(100));
        fail.store(true, Ordering::SeqCst);
        let mut changes = published.subscribe();
        tokio::spawn(r.run(rereads));
        changes.changed().await.unwrap();
        let Snapshot::Waiting(why) = &*published.load() else {
            panic!("no token yet")
        };
        assert!(why.contains("refused"), "{why}");
    }
}
