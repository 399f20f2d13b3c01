//! `101 Switching Protocols` tunnelling (RFC 9110 §7.8, §15.2.2).
//!
//! After the master agrees to switch protocols (WebSocket, in practice), both
//! connections stop being HTTP: the bytes are copied both ways until either side closes,
//! or until nothing has crossed in either direction for the tunnel idle timeout.
//!
//! Each open tunnel holds two file descriptors (the client's connection and the
//! master's) and one slot of its own ([`Tunnels::try_hold`]): a tunnel no longer counts
//! as a client connection once hyper hands it over, so without a limit of their own,
//! tunnels could take every descriptor the process has. With every tunnel slot taken, a
//! master's `101` is answered 503 instead (ordinary requests still have their own
//! connection slots). A tunnel also holds a drain receiver, so a graceful shutdown waits
//! for it within the grace period.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::metrics::{Metrics, OpenGuard};

/// The server's drain signal and the tunnel limits as the request path sees them: it can
/// only make holds for tunnels (one per tunnel, dropped when the tunnel closes), never
/// signal a shutdown. The server owns the signal and gives this to the stack when
/// building it.
#[derive(Debug, Clone)]
pub struct Tunnels {
    drain: watch::Sender<()>,
    slots: Arc<Semaphore>,
    max: usize,
    idle_timeout: Option<Duration>,
    metrics: Option<Arc<Metrics>>,
}

/// What one open tunnel holds: the drain receiver, its slot, and the open-tunnels gauge.
#[derive(Debug)]
pub struct TunnelHold {
    _drain: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
    _open: Option<OpenGuard>,
    idle_timeout: Option<Duration>,
}

impl Tunnels {
    /// Let tunnels hold `drain`, the server's drain signal, with no limit on their
    /// number and no idle timeout.
    pub fn new(drain: watch::Sender<()>) -> Self {
        Self::with_limits(drain, Semaphore::MAX_PERMITS, None)
    }

    /// Count open tunnels in `metrics` too.
    pub fn counted(self, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..self
        }
    }

    /// Let at most `max` tunnels be open at once, each closed after `idle_timeout` with
    /// no byte in either direction.
    pub fn with_limits(
        drain: watch::Sender<()>,
        max: usize,
        idle_timeout: Option<Duration>,
    ) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            drain,
            slots: Arc::new(Semaphore::new(max)),
            max,
            idle_timeout,
            metrics: None,
        }
    }

    /// A hold for one tunnel about to open, or `None` when `max` are open already.
    pub fn try_hold(&self) -> Option<TunnelHold> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        Some(TunnelHold {
            _drain: self.drain.subscribe(),
            _slot: slot,
            _open: self.metrics.as_ref().map(Metrics::tunnel),
            idle_timeout: self.idle_timeout,
        })
    }

    /// The most tunnels open at once.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Join the client's and the master's upgraded connections and copy bytes both ways,
/// until either side closes or the tunnel has been idle for its idle timeout.
pub async fn tunnel(client: OnUpgrade, master: OnUpgrade, hold: TunnelHold, target: Uri) {
    let path = target.path();
    let (client, master) = match tokio::try_join!(client, master) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(%path, error = %e, "protocol switch did not complete");
            return;
        }
    };
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Activity::new(TokioIo::new(client), started, last.clone());
    let mut master = Activity::new(TokioIo::new(master), started, last.clone());
    let copy = tokio::io::copy_bidirectional(&mut client, &mut master);
    let result = match hold.idle_timeout {
        None => copy.await,
        Some(timeout) => tokio::select! {
            r = copy => r,
            () = idle(started, &last, timeout) => {
                tracing::debug!(
                    %path,
                    idle_s = timeout.as_secs_f64(),
                    "tunnel closed: nothing crossed it within tunnel_idle_timeout"
                );
                drop(hold);
                return;
            }
        },
    };
    match result {
        Ok((up, down)) => {
            tracing::debug!(%path, bytes_to_master = up, bytes_to_client = down, "tunnel closed")
        }
        Err(e) => tracing::debug!(%path, error = %e, "tunnel ended with an error"),
    }
    drop(hold);
}

/// Resolves once `timeout` has passed since the last activity recorded in `last`
/// (milliseconds after `started`).
async fn idle(started: Instant, last: &AtomicU64, timeout: Duration) {
    loop {
        let at = started + Duration::from_millis(last.load(Ordering::Relaxed)) + timeout;
        tokio::time::sleep_until(at).await;
        let since = started
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
        if since >= timeout {
            return;
        }
    }
}

/// A stream that records when bytes last crossed it.
struct Activity<T> {
    inner: T,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Activity<T> {
    fn new(inner: T, started: Instant, last: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            started,
            last,
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_slots_are_limited_and_given_back() {
        let (drain, _) = watch::channel(());
        let tunnels = Tunnels::with_limits(drain.clone(), 2, None);
        let a = tunnels.try_hold().expect("first");
        let _b = tunnels.try_hold().expect("second");
        assert!(tunnels.try_hold().is_none(), "a third is over the limit");
        assert_eq!(drain.receiver_count(), 2, "each tunnel holds the drain");
        drop(a);
        assert!(
            tunnels.try_hold().is_some(),
            "a closed tunnel frees its slot"
        );
    }
}
