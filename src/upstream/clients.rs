//! One pooled client to the master per worker thread, so that a request, the
//! connection task of the pooled connection it uses, and its response all stay on the
//! thread that accepted the request (thread-per-core; see `server::Workers`).
//!
//! hyper-util's legacy client spawns each connection's task with `tokio::spawn`, on the
//! runtime where the connection was made. A client used from one worker's
//! current-thread runtime therefore keeps its connections there. [`Clients`] holds one
//! lazily built client per worker, indexed by a thread-local worker number that the
//! worker sets when it starts ([`enter_worker`]); every other thread (the main runtime:
//! health and readiness checks, logins, the tests' runtimes) uses slot 0. Picking a
//! client is a thread-local read and an atomic load (`OnceLock::get`): no lock on the
//! request path.

use std::cell::Cell;
use std::sync::OnceLock;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::HttpsClient;
use super::route::RouteConnector;

thread_local! {
    /// This thread's worker number (1..=N), or 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Mark the current thread as worker `index` (counted from 0) for the rest of its life:
/// upstream requests made on it use that worker's own pooled client.
pub fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(index.saturating_add(1)));
}

/// The slot of the current thread: its worker number, 0 off the workers.
fn slot() -> usize {
    WORKER.with(Cell::get)
}

/// The pooled clients of one master set-up (URL, TLS, route): slot 0 for threads that
/// are not workers, then one per worker, each built on first use.
pub struct Clients {
    connector: HttpsConnector<RouteConnector>,
    pool_idle_timeout: std::time::Duration,
    slots: Box<[OnceLock<HttpsClient>]>,
}

impl Clients {
    /// Clients for `workers` worker threads (plus the shared slot), all connecting with
    /// `connector`.
    pub(super) fn new(
        connector: HttpsConnector<RouteConnector>,
        pool_idle_timeout: std::time::Duration,
        workers: usize,
    ) -> Self {
        Self {
            connector,
            pool_idle_timeout,
            slots: (0..=workers).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The client for the current thread (its worker's; slot 0 off the workers, and for
    /// a worker number beyond the slots, which only a mismatched set-up would give).
    pub fn current(&self) -> &HttpsClient {
        let slot = self.slots.get(slot()).unwrap_or(&self.slots[0]);
        slot.get_or_init(|| self.build())
    }

    /// How many clients have been built so far (for tests).
    pub fn built(&self) -> usize {
        self.slots.iter().filter(|s| s.get().is_some()).count()
    }

    fn build(&self) -> HttpsClient {
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(self.connector.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_thread_gets_its_own_client_and_others_share_slot_zero() {
        let options = crate::upstream::ClientOptions {
            workers: 2,
            ..Default::default()
        };
        let cluster = crate::dcos::config::ClusterConfig::for_test("http://m.example", None);
        let up = crate::upstream::Upstream::new(&cluster, &options).unwrap();
        let clients = up.clients();
        assert_eq!(clients.built(), 0, "built lazily");
        let _ = clients.current();
        let _ = clients.current();
        assert_eq!(clients.built(), 1, "this thread is no worker: slot 0");
        std::thread::scope(|s| {
            for index in 0..2 {
                s.spawn(move || {
                    enter_worker(index);
                    let _ = clients.current();
                });
            }
        });
        assert_eq!(clients.built(), 3, "one per worker");
        // A worker number past the slots falls back to slot 0.
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_worker(7);
                let _ = clients.current();
            });
        });
        assert_eq!(clients.built(), 3);
    }
}
