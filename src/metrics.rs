//! The proxy's metrics: plain atomics written by the request path, read and encoded in
//! the Prometheus text format only when `/metrics` is scraped.
//!
//! The request path never takes a lock for a metric: every counter, gauge and histogram
//! bucket here is an [`AtomicU64`]/[`AtomicI64`] updated with a relaxed `fetch_add`.
//! (`prometheus-client`'s own `Family` and `Histogram` take an `RwLock`/`Mutex` per
//! update, so they are not used on the request path.) At scrape time a
//! `prometheus_client` [`Collector`] reads the atomics and encodes them; values read
//! while requests run may be a moment apart, which is what any scrape sees anyway.
//!
//! Families (all prefixed `dcos_token_proxy_`):
//! - `requests_total{method, status}`: by method class (`read`: GET HEAD OPTIONS;
//!   `write`: POST PUT PATCH DELETE; `other`) and status class (`1xx`…`5xx`);
//! - `upstream_latency_seconds`: time until the master's response headers;
//! - `open_connections`, `open_tunnels`;
//! - `thread_connections{thread}`: client connections open on each serving thread
//!   (they are spread evenly, [`crate::spread`]);
//! - `token_expiry_seconds`: seconds until the token in use expires (absent when there
//!   is none or it never expires);
//! - `logins_total`, `login_failures_total`;
//! - `config_reloads_total`: snapshots published since startup (a new login, a new
//!   token file or DC/OS config);
//! - `errors_total{kind}`: answers the proxy made itself, by why.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::source::Published;
use crate::source::refresh::LoginStats;
use crate::spread::Counts;

/// The prefix of every metric name.
pub const PREFIX: &str = "dcos_token_proxy";
/// The upper bounds (seconds) of the upstream latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A request's method class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodClass {
    /// GET, HEAD, OPTIONS.
    Read = 0,
    /// POST, PUT, PATCH, DELETE.
    Write = 1,
    /// Anything else.
    Other = 2,
}

impl MethodClass {
    const ALL: [Self; 3] = [Self::Read, Self::Write, Self::Other];

    /// The class of `method`.
    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => Self::Read,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => Self::Write,
            _ => Self::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Other => "other",
        }
    }
}

/// Why the proxy answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Refused by the guard (Host, Origin, path secret, filters).
    Refused = 0,
    /// No cluster or token set up yet (503).
    Unconfigured = 1,
    /// The master could not be reached or broke off (502).
    Upstream = 2,
    /// The master sent no response headers in time (504).
    Timeout = 3,
    /// The client's request could not be used (400, body errors).
    Client = 4,
}

impl ErrorKind {
    const ALL: [Self; 5] = [
        Self::Refused,
        Self::Unconfigured,
        Self::Upstream,
        Self::Timeout,
        Self::Client,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Unconfigured => "unconfigured",
            Self::Upstream => "upstream",
            Self::Timeout => "timeout",
            Self::Client => "client",
        }
    }
}

/// Status classes 1xx to 5xx (index 0 to 4); anything else counts as 5xx.
const STATUS_CLASSES: usize = 5;

/// The metrics, shared by the request path (writing) and `/metrics` (reading).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; STATUS_CLASSES]; 3],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Observations above the last bound.
    latency_overflow: AtomicU64,
    latency_sum_nanos: AtomicU64,
    open_connections: AtomicI64,
    open_tunnels: AtomicI64,
    errors: [AtomicU64; 5],
    /// Each serving thread's connections, once the server runs.
    threads: OnceLock<Arc<Counts>>,
}

impl Metrics {
    /// Count a request answered with `status`.
    pub fn request(&self, method: MethodClass, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100)
            .saturating_sub(1)
            .min(STATUS_CLASSES - 1);
        self.requests[method as usize][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Record the time the master took to send its response headers.
    pub fn upstream_latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        match LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.latency_buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.latency_overflow.fetch_add(1, Ordering::Relaxed),
        };
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Count an answer the proxy made itself.
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection opened; the guard closes it.
    pub fn connection(self: &Arc<Self>) -> OpenGuard {
        OpenGuard::new(self.clone(), |m| &m.open_connections)
    }

    /// Show each serving thread's open connections from `counts` (the first server's;
    /// later calls are ignored).
    pub fn watch_threads(&self, counts: Arc<Counts>) {
        let _ = self.threads.set(counts);
    }

    /// A tunnel opened; the guard closes it.
    pub fn tunnel(self: &Arc<Self>) -> OpenGuard {
        OpenGuard::new(self.clone(), |m| &m.open_tunnels)
    }
}

/// Keeps an "open" gauge up while alive.
#[derive(Debug)]
pub struct OpenGuard {
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicI64,
}

impl OpenGuard {
    fn new(metrics: Arc<Metrics>, gauge: fn(&Metrics) -> &AtomicI64) -> Self {
        gauge(&metrics).fetch_add(1, Ordering::Relaxed);
        Self { metrics, gauge }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything `/metrics` shows: the request-path metrics plus what is read from the
/// credential source at scrape time.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The request-path metrics.
    pub metrics: Arc<Metrics>,
    /// The published snapshots (token expiry, reload count).
    pub source: Arc<Published>,
    /// Login counters (zero unless a login source runs).
    pub logins: Arc<LoginStats>,
}

impl Scrape {
    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        let mut family = encoder.encode_descriptor(
            "requests",
            "Requests answered, by method class and status class",
            None,
            MetricType::Counter,
        )?;
        for method in MethodClass::ALL {
            for (i, count) in m.requests[method as usize].iter().enumerate() {
                let status = format!("{}xx", i + 1);
                let labels = [("method", method.label()), ("status", status.as_str())];
                ConstCounter::new(load(count)).encode(family.encode_family(&labels)?)?;
            }
        }

        // Per-bucket counts: the encoder makes them cumulative.
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(&m.latency_buckets)
            .map(|(bound, n)| (*bound, load(n)))
            .collect();
        buckets.push((f64::INFINITY, load(&m.latency_overflow)));
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = Duration::from_nanos(load(&m.latency_sum_nanos)).as_secs_f64();
        encoder
            .encode_descriptor(
                "upstream_latency_seconds",
                "Time until the master's response headers",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;

        gauge(
            &mut encoder,
            "open_connections",
            "Client connections open now",
            m.open_connections.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "open_tunnels",
            "Upgraded connections (WebSockets) open now",
            m.open_tunnels.load(Ordering::Relaxed),
        )?;

        if let Some(threads) = m.threads.get() {
            let mut family = encoder.encode_descriptor(
                "thread_connections",
                "Client connections open on each serving thread",
                None,
                MetricType::Gauge,
            )?;
            for (thread, open) in threads.open() {
                let thread = thread.to_string();
                let open = i64::try_from(open).unwrap_or(i64::MAX);
                ConstGauge::new(open)
                    .encode(family.encode_family(&[("thread", thread.as_str())])?)?;
            }
        }

        let snapshot = self.source.load();
        let exp = snapshot
            .upstream()
            .filter(|up| up.auth.is_some())
            .and_then(|up| up.claims.as_ref())
            .and_then(|c| c.as_ref().ok())
            .and_then(|c| c.exp);
        if let Some(exp) = exp {
            let left = match exp.duration_since(SystemTime::now()) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            };
            gauge(
                &mut encoder,
                "token_expiry_seconds",
                "Seconds until the token in use expires (negative: expired)",
                left,
            )?;
        }

        counter(
            &mut encoder,
            "logins",
            "Successful logins to DC/OS",
            self.logins.logins.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "login_failures",
            "Failed logins to DC/OS",
            self.logins.failures.load(Ordering::Relaxed),
        )?;
        let publications = *self.source.subscribe().borrow();
        counter(
            &mut encoder,
            "config_reloads",
            "New credentials or config published since startup",
            publications,
        )?;

        let mut family = encoder.encode_descriptor(
            "errors",
            "Answers the proxy made itself, by kind",
            None,
            MetricType::Counter,
        )?;
        for kind in ErrorKind::ALL {
            let labels = [("kind", kind.label())];
            ConstCounter::new(load(&m.errors[kind as usize]))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Snapshot;

    #[test]
    fn counters_buckets_and_gauges_reach_the_text() {
        let metrics = Arc::new(Metrics::default());
        metrics.request(MethodClass::of(&Method::GET), StatusCode::OK);
        metrics.request(MethodClass::of(&Method::POST), StatusCode::BAD_GATEWAY);
        metrics.upstream_latency(Duration::from_millis(3));
        metrics.upstream_latency(Duration::from_secs(60));
        metrics.error(ErrorKind::Timeout);
        let conn = metrics.connection();
        let (published, _) = Published::new(Snapshot::Waiting("x".into()));
        let scrape = Scrape {
            metrics: metrics.clone(),
            source: Arc::new(published),
            logins: Arc::default(),
        };
        let text = scrape.render();
        for line in [
            r#"dcos_token_proxy_requests_total{method="read",status="2xx"} 1"#,
            r#"dcos_token_proxy_requests_total{method="write",status="5xx"} 1"#,
            r#"dcos_token_proxy_upstream_latency_seconds_bucket{le="0.005"} 1"#,
            r#"dcos_token_proxy_upstream_latency_seconds_bucket{le="+Inf"} 2"#,
            "dcos_token_proxy_upstream_latency_seconds_count 2",
            "dcos_token_proxy_open_connections 1",
            r#"dcos_token_proxy_errors_total{kind="timeout"} 1"#,
            "dcos_token_proxy_config_reloads_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        drop(conn);
        assert!(
            scrape
                .render()
                .lines()
                .any(|l| l == "dcos_token_proxy_open_connections 0")
        );
    }
}
