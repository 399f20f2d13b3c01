//! Which serving thread the code runs on. The binary serves with one thread per core,
//! each running its own current-thread runtime (`server::serve`): a request, the
//! upstream connection it uses and its response stay on one thread, with no cross-thread
//! wake-ups and no shared pool lock. Per-thread state, such as each thread's own pool of
//! master connections ([`crate::upstream::Clients`]), is indexed by [`index`].
//!
//! Index 0 is every thread that is not a serving worker thread: the main runtime (which
//! also serves, as worker 0), background tasks such as logins and readiness checks, and
//! the tests' runtimes. Worker threads are numbered from 1.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many per-thread slots to make: the serving threads the process will run.
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// The default number of serving threads: one per core the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Announce that the process serves with `n` threads, before anything that keeps
/// per-thread state is built (the binary does this first thing). Tests leave it at 1:
/// every thread then shares slot 0.
pub fn set_count(n: usize) {
    COUNT.store(n.max(1), Ordering::Relaxed);
}

/// The number of per-thread slots ([`set_count`]; at least 1).
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Mark the current thread as serving worker `index` (1 and up).
pub fn enter(index: usize) {
    INDEX.with(|i| i.set(index));
}

/// This thread's slot: its worker index when below [`count`], else 0.
pub fn index() -> usize {
    let i = INDEX.with(Cell::get);
    if i < count() { i } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_that_are_not_workers_use_slot_0_and_indices_stay_below_the_count() {
        assert_eq!(index(), 0);
        std::thread::spawn(|| {
            enter(1);
            // The count is 1 in tests unless set: an index past it falls back to 0.
            assert!(index() < count());
        })
        .join()
        .unwrap();
    }
}
