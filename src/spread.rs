//! Spreading accepted connections evenly over the serving threads.
//!
//! Every serving thread accepts on the same listening socket, and the kernel gives a
//! new connection to whichever thread asks first. A connection then stays on the thread
//! that accepted it (its master connections too). Under a burst of new connections (a
//! load generator, a dashboard opening its pool) the first thread awake can take most
//! or all of them, and then does that work for as long as they live while the other
//! threads idle. Measured on 2 threads under wrk with 64 connections (per-thread CPU
//! time from `/proc/PID/task/*/stat`): 61 % and 65 % of the CPU on one thread in two
//! runs, all of it in another; and 16 connections opened at once landed all on one
//! thread in four runs out of four
//! (`tests/sidecar_bin.rs::a_burst_of_connections_is_spread_over_the_serving_threads`
//! with this module switched off).
//!
//! So each thread counts the connections it serves ([`Resident`]), and a thread that
//! accepts a connection while it serves at least two more than the least busy thread
//! hands it to that thread's inbox ([`Spread::choose`], [`Spread::hand`]), as
//! HAProxy's listeners pick the least loaded thread. A moved connection costs one
//! cross-thread wake-up and moving its socket between two event loops, once, at
//! accept; a request never moves. The one-connection slack keeps short-lived
//! connections (one request each, a few open at a time) where they were accepted.
//! `/metrics` shows each thread's count (`thread_connections`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

/// The connections one thread serves, alone on its cache line: each thread writes its
/// own count at every accept and close, and reads the others'.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Count(AtomicUsize);

/// A thread whose inbox is gone (its runtime ended) looks this busy, so it is never
/// picked again.
const GONE: usize = usize::MAX / 2;

/// Every thread's open connections.
#[derive(Debug)]
pub struct Counts(Box<[Count]>);

impl Counts {
    /// Each serving thread's open connections now, by thread number (a thread that
    /// could not start is left out).
    pub fn open(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.0
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .enumerate()
            .filter(|&(_, n)| n < GONE)
    }
}

/// One connection counted on its thread until dropped (when the connection closes).
#[derive(Debug)]
pub struct Resident {
    counts: Arc<Counts>,
    thread: usize,
}

impl Drop for Resident {
    fn drop(&mut self) {
        self.counts.0[self.thread].0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where new connections go: the counts, and each thread's inbox for connections handed
/// to it. Shared by the accept loops; when the last accept loop drops it, every inbox
/// ends.
#[derive(Debug)]
pub struct Spread<T> {
    counts: Arc<Counts>,
    inboxes: Box<[mpsc::UnboundedSender<(T, Resident)>]>,
}

/// Connections handed to one thread, with their [`Resident`] (already counted there).
pub type Inbox<T> = mpsc::UnboundedReceiver<(T, Resident)>;

impl<T> Spread<T> {
    /// Spreading over `threads` threads (at least 1), and each thread's inbox, by index.
    pub fn new(threads: usize) -> (Self, Vec<Inbox<T>>) {
        let threads = threads.max(1);
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
        let counts = Counts((0..threads).map(|_| Count::default()).collect());
        let spread = Self {
            counts: Arc::new(counts),
            inboxes: inboxes.into_boxed_slice(),
        };
        (spread, receivers)
    }

    /// The counts, for `/metrics`.
    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    /// Count a connection on thread `thread`, which serves it.
    pub fn stay(&self, thread: usize) -> Resident {
        self.counts.0[thread].0.fetch_add(1, Ordering::Relaxed);
        Resident {
            counts: self.counts.clone(),
            thread,
        }
    }

    /// The thread that should serve a connection accepted on thread `me`: `me`, unless
    /// another thread serves at least two fewer (then the least busy one).
    pub fn choose(&self, me: usize) -> usize {
        let load = |i: usize| self.counts.0[i].0.load(Ordering::Relaxed);
        let own = load(me);
        let (least, fewest) = (0..self.inboxes.len())
            .map(|i| (i, load(i)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, own));
        if own > fewest.saturating_add(1) {
            least
        } else {
            me
        }
    }

    /// Hand `conn` to thread `to`'s inbox, counted there. `Err` gives it back when that
    /// thread's runtime has ended; the thread is not chosen again.
    pub fn hand(&self, to: usize, conn: T) -> Result<(), T> {
        let resident = self.stay(to);
        self.inboxes[to].send((conn, resident)).map_err(|back| {
            let (conn, resident) = back.0;
            drop(resident);
            self.counts.0[to].0.store(GONE, Ordering::Relaxed);
            conn
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections counted on `thread` now; `None` once it is marked gone.
    fn open(spread: &Spread<u32>, thread: usize) -> Option<usize> {
        spread
            .counts()
            .open()
            .find(|&(t, _)| t == thread)
            .map(|(_, n)| n)
    }

    /// What an accept loop on thread `me` does with `conn`: `Some` when it serves it.
    fn place(spread: &Spread<u32>, me: usize, conn: u32) -> Option<(u32, Resident)> {
        let to = spread.choose(me);
        if to != me && spread.hand(to, conn).is_ok() {
            return None;
        }
        Some((conn, spread.stay(me)))
    }

    #[test]
    fn a_burst_accepted_on_one_thread_ends_up_even() {
        let (spread, mut inboxes) = Spread::<u32>::new(2);
        let mut kept = Vec::new();
        for conn in 0..64 {
            if let Some(here) = place(&spread, 0, conn) {
                kept.push(here);
            }
        }
        let mut moved = Vec::new();
        while let Ok(m) = inboxes[1].try_recv() {
            moved.push(m);
        }
        assert_eq!(kept.len() + moved.len(), 64);
        assert!(
            kept.len().abs_diff(moved.len()) <= 2,
            "kept {} moved {}",
            kept.len(),
            moved.len()
        );
        assert_eq!(open(&spread, 0), Some(kept.len()));
        assert_eq!(open(&spread, 1), Some(moved.len()));
        // Closing connections counts them off their thread, wherever they were accepted.
        moved.truncate(10);
        assert_eq!(open(&spread, 1), Some(10));
        drop(kept);
        assert_eq!(open(&spread, 0), Some(0));
    }

    #[test]
    fn short_lived_connections_stay_where_they_were_accepted() {
        let (spread, mut inboxes) = Spread::<u32>::new(2);
        for conn in 0..100 {
            // One open at a time, or two.
            let first = place(&spread, 0, conn).expect("kept");
            let second = place(&spread, 0, conn).expect("kept");
            drop((first, second));
        }
        assert!(inboxes[1].try_recv().is_err());
        assert_eq!(open(&spread, 0), Some(0));
    }

    #[test]
    fn a_thread_whose_inbox_is_gone_is_not_picked_again() {
        let (spread, mut inboxes) = Spread::<u32>::new(3);
        drop(inboxes.remove(1));
        let mut kept = Vec::new();
        for conn in 0..30 {
            if let Some(here) = place(&spread, 0, conn) {
                kept.push(here);
            }
        }
        let to_two = std::iter::from_fn(|| inboxes[1].try_recv().ok()).count();
        assert_eq!(kept.len() + to_two, 30, "nothing is lost");
        assert!(
            kept.len().abs_diff(to_two) <= 2,
            "{} / {to_two}",
            kept.len()
        );
        assert_eq!(open(&spread, 1), None, "thread 1 is marked gone");
    }

    #[test]
    fn one_thread_keeps_everything() {
        let (spread, _inboxes) = Spread::<u32>::new(1);
        let kept: Vec<_> = (0..10).filter_map(|c| place(&spread, 0, c)).collect();
        assert_eq!(kept.len(), 10);
        assert_eq!(open(&spread, 0), Some(10));
    }
}
