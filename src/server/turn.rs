//! A serving thread gives up its core once it has run 1 ms without sleeping.
//!
//! Why: on a machine whose cores are all busy (the load generator, the master and the
//! proxy side by side, or a laptop building something), a thread that the kernel wakes
//! (a client whose answer we just wrote, the master we just sent a request to) can be
//! queued on the core of the thread that woke it: Linux wakes a TCP reader with the
//! hint that the waker is about to sleep (a synchronous wake-up). A serving thread with
//! many connections does not sleep; it goes on to the next connection, and the woken
//! thread waits until the kernel preempts us, at the latest on its next tick (4 ms at
//! `CONFIG_HZ=250`), with every request of that client. That is the reading of the 4 ms
//! step in the proxy's latency distribution (README, Performance) that this module's
//! effect bears out; it was not traced wake-up by wake-up. HAProxy does not show the
//! step: answering wrk by itself, its threads took turns of 40–50 µs, while about 250
//! of ours a second lasted over 1 ms (`perf sched timehist`).
//!
//! So each serving thread keeps when its current turn began ([`Turn`]): a park of its
//! runtime (no task ready) that lasted at least [`SLEPT`] was a sleep and begins a new
//! turn; an answer written when the turn has lasted [`TURN`] or more is followed by
//! one `sched_yield` ([`std::thread::yield_now`]), and a new turn once it returns.
//! Answers are counted on the server's lean path (plain `GET`s: nearly all traffic);
//! requests on hyper's path (uploads, WebSockets) are not, which can only delay a
//! yield. With nothing else runnable on the core, the call returns at once.
//!
//! Measured with `scripts/bench` (README, Performance; 64 connections, five rounds of
//! 2 s per contender in turns): without it the proxy's p99 was 3.78 ms, its rounds
//! 2.95–5.73 ms, against HAProxy's 3.31 ms; with it 3.56 and 3.28 ms in two runs, its
//! rounds 2.85–3.69 ms, against HAProxy's 3.57 and 3.58 ms, and CPU per request 19.12
//! and 18.16 µs against 19.33 without. Shorter turns did worse (alternating wrk runs,
//! `-q`, six rounds each, median p99: 2.36 ms at 1 ms, 2.59 at 500 µs, 2.88 at 250 µs,
//! 3.76 without): each yield also puts this thread behind the others.
//!
//! The serving threads' runtimes get the park hooks from [`runtime`]; `exec`'s
//! multi-thread runtime installs the same two. A runtime without them (the in-process
//! tests') never begins a new turn after a sleep, so its threads yield at most once per
//! [`TURN`]. The clock is read once per answer and twice per park; nothing is shared
//! between threads.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a serving thread runs without sleeping before it yields its core once.
pub const TURN: Duration = Duration::from_millis(1);

/// A park of the runtime at least this long was a sleep, not a look at ready events.
pub const SLEPT: Duration = Duration::from_micros(30);

/// One thread's turn on its core: when it began, and when the runtime last parked.
#[derive(Debug, Default)]
pub struct Turn {
    began: Cell<Option<Instant>>,
    parked: Cell<Option<Instant>>,
}

impl Turn {
    /// The runtime is about to park (no task is ready).
    pub fn park(&self, now: Instant) {
        self.parked.set(Some(now));
    }

    /// The runtime is back from a park: a long one was a sleep, and a new turn begins.
    pub fn unpark(&self, now: Instant) {
        if let Some(parked) = self.parked.take()
            && now.saturating_duration_since(parked) >= SLEPT
        {
            self.began.set(Some(now));
        }
    }

    /// An answer was written (the clock says when): if the turn has lasted [`TURN`],
    /// yield the core with `yield_core` and begin a new turn when it returns (not
    /// before: the wait for the core would count against the new turn, and after a
    /// wait of a turn or more the next answer would yield again). Whether it yielded.
    pub fn answered(&self, clock: impl Fn() -> Instant, yield_core: impl FnOnce()) -> bool {
        let now = clock();
        match self.began.get() {
            None => {
                self.began.set(Some(now));
                false
            }
            Some(began) if now.saturating_duration_since(began) < TURN => false,
            Some(_) => {
                yield_core();
                self.began.set(Some(clock()));
                true
            }
        }
    }
}

thread_local! {
    static THIS_THREAD: Turn = Turn::default();
}

/// The runtime's `on_thread_park` hook.
pub fn park() {
    THIS_THREAD.with(|t| t.park(Instant::now()));
}

/// The runtime's `on_thread_unpark` hook.
pub fn unpark() {
    THIS_THREAD.with(|t| t.unpark(Instant::now()));
}

/// After an answer is written: yield the core if this thread's turn has been long.
pub fn answered() {
    THIS_THREAD.with(|t| t.answered(Instant::now, std::thread::yield_now));
}

/// Install the park hooks ([`park`], [`unpark`]) on a runtime whose threads serve
/// connections.
pub fn hooks(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder.on_thread_park(park).on_thread_unpark(unpark)
}

/// A runtime for a serving thread: current-thread, with the park hooks.
pub fn runtime() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    hooks(builder.enable_all());
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// A clock the test moves, and a yield that takes `wait` of it.
    struct Fake {
        at: Cell<Instant>,
        t0: Instant,
    }

    impl Fake {
        fn new() -> Self {
            let t0 = Instant::now();
            Fake {
                at: Cell::new(t0),
                t0,
            }
        }
        fn at(&self, micros: u64) -> Instant {
            self.t0 + us(micros)
        }
        fn set(&self, micros: u64) {
            self.at.set(self.at(micros));
        }
        /// The answer written at `micros`; a yield lasts `wait` µs.
        fn answer(&self, turn: &Turn, micros: u64, wait: u64) -> bool {
            self.set(micros);
            turn.answered(|| self.at.get(), || self.set(micros + wait))
        }
    }

    #[test]
    fn a_thread_yields_once_per_long_turn() {
        let clock = Fake::new();
        let turn = Turn::default();
        // The first answer begins the first turn.
        assert!(!clock.answer(&turn, 0, 0));
        assert!(!clock.answer(&turn, 400, 0));
        assert!(!clock.answer(&turn, 999, 0));
        assert!(clock.answer(&turn, 1000, 2000), "1 ms into the turn");
        // Back from the yield 2 ms later (at 3000): the new turn began then, not when
        // it yielded, so the next answers do not yield again at once.
        assert!(!clock.answer(&turn, 3100, 0));
        assert!(!clock.answer(&turn, 3999, 0));
        assert!(clock.answer(&turn, 4000, 0));
        assert!(!clock.answer(&turn, 4001, 0));
    }

    #[test]
    fn a_sleep_begins_a_new_turn_and_a_glance_at_ready_events_does_not() {
        let clock = Fake::new();
        let turn = Turn::default();
        assert!(!clock.answer(&turn, 0, 0));
        // Parks that came back at once (events were ready): still the same turn.
        turn.park(clock.at(300));
        turn.unpark(clock.at(305));
        turn.park(clock.at(800));
        turn.unpark(clock.at(829));
        assert!(clock.answer(&turn, 1000, 0));

        // A sleep of 30 µs or more: the turn begins when it ends.
        turn.park(clock.at(1200));
        turn.unpark(clock.at(1230));
        assert!(!clock.answer(&turn, 2100, 0), "0.87 ms into the new turn");
        assert!(clock.answer(&turn, 2230, 0));
    }

    #[test]
    fn an_unpark_without_a_park_changes_nothing() {
        let clock = Fake::new();
        let turn = Turn::default();
        assert!(!clock.answer(&turn, 0, 0));
        turn.unpark(clock.at(900));
        assert!(clock.answer(&turn, 1000, 0));
        // A park is used once: the second unpark (a sleep, had it followed a park) does
        // not begin another turn.
        turn.park(clock.at(1100));
        turn.unpark(clock.at(1200));
        turn.unpark(clock.at(2000));
        assert!(!clock.answer(&turn, 2100, 0));
        assert!(clock.answer(&turn, 2200, 0));
    }

    #[test]
    fn a_serving_runtime_tells_the_turn_when_it_slept() {
        // Each test runs on a thread of its own: no turn has begun on this one.
        THIS_THREAD.with(|t| assert_eq!(t.began.get(), None));
        let runtime = runtime().build().expect("a runtime");
        let before = Instant::now();
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(2)).await });
        let began = THIS_THREAD.with(|t| t.began.get()).expect("a turn began");
        assert!(began >= before + Duration::from_millis(2), "{began:?}");
    }
}
