//! `101 Switching Protocols` tunnelling (RFC 9110 §7.8, §15.2.2).
//!
//! After the master agrees to switch protocols (WebSocket, in practice), both
//! connections stop being HTTP: the bytes are copied both ways until either side closes.
//! The tunnel holds a drain receiver ([`Tunnels::hold`]) so a graceful shutdown waits
//! for it within the grace period.

use http::Uri;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::metrics::{Metrics, OpenGuard};
use std::sync::Arc;

/// The server's drain signal as the request path sees it: it can only make receivers
/// for tunnels to hold (one per tunnel, dropped when the tunnel closes), never signal a
/// shutdown. The server owns the signal and gives this to the stack when building it.
#[derive(Debug, Clone)]
pub struct Tunnels(watch::Sender<()>, Option<Arc<Metrics>>);

impl Tunnels {
    /// Let tunnels hold `drain`, the server's drain signal.
    pub fn new(drain: watch::Sender<()>) -> Self {
        Self(drain, None)
    }

    /// Count open tunnels in `metrics` too.
    pub fn counted(self, metrics: Arc<Metrics>) -> Self {
        Self(self.0, Some(metrics))
    }

    /// A receiver for one tunnel to hold while it is open.
    pub fn hold(&self) -> watch::Receiver<()> {
        self.0.subscribe()
    }

    /// Keeps the open-tunnels gauge up while one tunnel is open.
    pub fn open(&self) -> Option<OpenGuard> {
        self.1.as_ref().map(Metrics::tunnel)
    }
}

/// Join the client's and the master's upgraded connections and copy bytes both ways.
pub async fn tunnel(client: OnUpgrade, master: OnUpgrade, drain: watch::Receiver<()>, target: Uri) {
    let path = target.path();
    let (client, master) = match tokio::try_join!(client, master) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(%path, error = %e, "protocol switch did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut master = TokioIo::new(master);
    match tokio::io::copy_bidirectional(&mut client, &mut master).await {
        Ok((up, down)) => {
            tracing::debug!(%path, bytes_to_master = up, bytes_to_client = down, "tunnel closed")
        }
        Err(e) => tracing::debug!(%path, error = %e, "tunnel ended with an error"),
    }
    drop(drain);
}
