//! Log output: human-readable text or one JSON object per line, filtered by a tracing
//! `EnvFilter` (`-v`, `RUST_LOG` or `log.level`). Logs go to stderr; stdout carries only
//! the one "listening on" line scripts can wait for.
//!
//! Requests never wait for the log, and logging costs them no system call under load. A
//! line is formatted on the thread that logs it and appended to a bounded buffer in
//! memory ([`LOG_BUFFER_BYTES`]); one writer thread takes the whole buffer
//! [`LOG_FLUSH_INTERVAL`] after the first line it holds arrived (sooner once it is a
//! quarter full) and writes it to stderr with one `write`. With nothing to write, the
//! writer sleeps until a line arrives (the line that finds it asleep wakes it: one
//! system call per batch at most), so an idle proxy on a laptop does not wake up. When
//! stderr is slower than the log (a full pipe, a stopped terminal), new lines are
//! dropped and counted instead of blocking the request path; [`LogGuard`] writes what is
//! buffered and says how many lines were dropped when the process ends.
//! (Before, every access-log line was a blocking `write(2)` under the stderr lock, on the
//! request's own thread: the largest avoidable cost in a `perf` profile of the proxy
//! under load. A writer thread woken per line, as `tracing-appender` does, measured
//! worse than that: one wake-up per line.)

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::types::LogFormat;

mod access;
mod clock;

pub use access::{ACCESS_TARGET, AccessLine};
use access::{AccessFormat, Style};
use clock::CachedSystemTime;

/// How many bytes of formatted lines may wait for the writer thread. Beyond this, lines
/// are dropped (and counted), so a stalled stderr costs at most this much memory and
/// never a blocked request.
pub const LOG_BUFFER_BYTES: usize = 1024 * 1024;

/// How long a line may wait in the buffer before the writer thread writes it out.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Added to the filter unless it names `notify` or asks for debug/trace detail: the
/// file-watching library logs its own bookkeeping at info and warn level, in its Debug
/// form (`unable to remove watch descriptor from inotify: Os { code: 22, … }` after
/// `dcos cluster remove`), which is expected and needs nothing from the user. The proxy
/// reports every watcher problem that matters in its own words.
pub const QUIET_LIBRARIES: &str = "notify=error";

/// The filter actually installed: `filter`, plus [`QUIET_LIBRARIES`] unless the user
/// asked for library detail.
pub fn effective_filter(filter: &str) -> String {
    let detailed =
        filter.contains("notify") || filter.contains("debug") || filter.contains("trace");
    if detailed || filter.trim().is_empty() {
        filter.to_owned()
    } else {
        format!("{filter},{QUIET_LIBRARIES}")
    }
}

/// The log filter did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {filter:?} (from -v, RUST_LOG or log.level): {source}")]
pub struct LogFilterError {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// Logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log filter did not parse.
    #[error(transparent)]
    Filter(#[from] LogFilterError),
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Writer(std::io::Error),
}

/// The buffer shared by the logging threads and the writer thread.
#[derive(Debug)]
struct Buffer {
    lines: Mutex<Vec<u8>>,
    /// Wakes the writer: from its sleep (the first line), early (a quarter full), or for
    /// the last time (`closing`).
    wake: Condvar,
    /// The writer sleeps until a line arrives; the line that finds it so wakes it.
    /// Read and written with `lines` locked.
    asleep: AtomicBool,
    /// Set with `lines` locked, so that the writer cannot miss it between a look and a
    /// wait.
    closing: AtomicBool,
    dropped: AtomicUsize,
    capacity: usize,
}

/// Where each log line goes: [`std::io::Write`] for one formatted line at a time, as
/// `tracing-subscriber` writes them.
#[derive(Debug, Clone)]
struct Queue(Arc<Buffer>);

impl Write for Queue {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for &Buffer {
    /// Append the whole line, or drop it whole when it does not fit (never blocks on
    /// I/O; the lock is held only to copy the line).
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let buffer = *self;
        let mut lines = buffer.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() + line.len() > buffer.capacity {
            drop(lines);
            buffer.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        let before = lines.len();
        lines.extend_from_slice(line);
        let quarter = buffer.capacity / 4;
        let crossed = before < quarter && lines.len() >= quarter;
        let sleeping = before == 0 && buffer.asleep.load(Ordering::Relaxed);
        if sleeping {
            buffer.asleep.store(false, Ordering::Relaxed);
        }
        drop(lines);
        if crossed || sleeping {
            buffer.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Queue {
    /// A borrow of the buffer: a line costs no reference-count traffic.
    type Writer = &'a Buffer;

    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

/// Start the writer thread that empties a new buffer of `capacity` bytes into `out`.
fn queued<W: Write + Send + 'static>(
    out: W,
    capacity: usize,
) -> std::io::Result<(Queue, LogGuard)> {
    let buffer = Arc::new(Buffer {
        lines: Mutex::new(Vec::with_capacity(capacity / 4)),
        wake: Condvar::new(),
        asleep: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        dropped: AtomicUsize::new(0),
        capacity,
    });
    let shared = Arc::clone(&buffer);
    let writer = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_out(&shared, out))?;
    Ok((
        Queue(Arc::clone(&buffer)),
        LogGuard {
            buffer,
            writer: Some(writer),
        },
    ))
}

/// The writer thread: sleep until a line arrives, let lines gather for
/// [`LOG_FLUSH_INTERVAL`] (less once the buffer is a quarter full), swap the buffer for
/// an empty one and write what was in it with one call; after `closing`, write the rest
/// and stop.
fn write_out<W: Write>(buffer: &Buffer, mut out: W) {
    let mut spare = Vec::with_capacity(buffer.capacity / 4);
    let quarter = buffer.capacity / 4;
    let closed = || buffer.closing.load(Ordering::Acquire);
    loop {
        let closing = {
            let mut lines = buffer.lines.lock().unwrap_or_else(PoisonError::into_inner);
            // Nothing to write: sleep, without a timeout, until a line or the end.
            while lines.is_empty() && !closed() {
                buffer.asleep.store(true, Ordering::Relaxed);
                lines = buffer
                    .wake
                    .wait(lines)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            buffer.asleep.store(false, Ordering::Relaxed);
            let due = Instant::now() + LOG_FLUSH_INTERVAL;
            while lines.len() < quarter && !closed() {
                let left = due.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                lines = buffer
                    .wake
                    .wait_timeout(lines, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut *lines, &mut spare);
            closed()
        };
        if !spare.is_empty() {
            // Nowhere to report a failing stderr; the lines are lost either way.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        if closing
            && buffer
                .lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        {
            return;
        }
    }
}

/// Keeps the log writer thread; dropping it writes out the buffered lines and reports
/// any that were dropped. Hold it until the process is about to exit.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    buffer: Arc<Buffer>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl LogGuard {
    /// Lines dropped so far because the buffer was full.
    pub fn dropped_lines(&self) -> usize {
        self.buffer.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        {
            let _lines = self
                .buffer
                .lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.buffer.closing.store(true, Ordering::Release);
        }
        self.buffer.wake.notify_one();
        // Write out what is buffered first, so the count comes after the last line.
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let dropped = self.dropped_lines();
        if dropped > 0 {
            eprintln!(
                "dcos-token-proxy: {dropped} log lines were dropped because standard error \
                 could not keep up; send it to a file or a faster reader (or log less: -q)"
            );
        }
    }
}

/// Where [`access`] writes lines without a tracing event: set by [`init`] once its
/// subscriber is the process's.
#[derive(Debug)]
struct Direct {
    buffer: Arc<Buffer>,
    style: Style,
    ansi: bool,
    /// Whether the filter lets access lines through (fixed: the filter never changes,
    /// and the proxy logs within no span).
    enabled: bool,
}

static DIRECT: OnceLock<Direct> = OnceLock::new();

/// Log one access line. Once [`init`] has installed the process's subscriber, the line
/// goes straight into the log buffer, byte for byte as the subscriber would write the
/// event; otherwise (tests, an embedding program with its own subscriber) it is a
/// tracing event like any other.
///
/// `line` is called only when the line is to be written: a filtered-out access log
/// costs the request path no clock read.
pub fn access<'a>(line: impl FnOnce() -> AccessLine<'a>) {
    let Some(direct) = DIRECT.get() else {
        return line().trace();
    };
    if !direct.enabled {
        return;
    }
    let line = line();
    let written = access::with_access_line(&line, direct.style, direct.ansi, |text| {
        let _ = (&*direct.buffer).write(text.as_bytes());
    });
    if !written {
        line.trace();
    }
}

/// Install the global subscriber. Call once, from `main`, and keep the guard.
pub fn init(format: LogFormat, filter: &str) -> Result<LogGuard, LogError> {
    let env_filter =
        EnvFilter::try_new(effective_filter(filter)).map_err(|source| LogFilterError {
            filter: filter.to_owned(),
            source,
        })?;
    // Colour only for a person at a terminal, and never when NO_COLOR is set.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (writer, guard) = queued(std::io::stderr(), LOG_BUFFER_BYTES).map_err(LogError::Writer)?;
    let buffer = Arc::clone(&writer.0);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(ansi)
        .with_writer(writer);
    // Access-log lines are written by `AccessFormat` itself; the rest by the usual
    // formatter. Both use the cached clock.
    let general = tracing_subscriber::fmt::format().with_timer(CachedSystemTime);
    // A second init (tests embedding the library) is harmless: the first wins.
    let installed = match format {
        LogFormat::Text => builder
            .event_format(AccessFormat::new(general.with_target(false), Style::Text))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(AccessFormat::new(
                general.json().flatten_event(true),
                Style::Json,
            ))
            .try_init(),
    };
    if installed.is_ok() {
        let style = match format {
            LogFormat::Text => Style::Text,
            LogFormat::Json => Style::Json,
        };
        let enabled = tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO);
        let _ = DIRECT.set(Direct {
            buffer,
            style,
            ansi,
            enabled,
        });
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    type Writes = Arc<Mutex<Vec<Vec<u8>>>>;

    /// A sink that stalls on its first write until released, like a full pipe, and
    /// records every write it gets.
    struct Stalled {
        started: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
        writes: Writes,
        first: bool,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.first {
                self.first = false;
                let _ = self.started.send(());
                let _ = self.release.recv();
            }
            self.writes
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A queue of `capacity` bytes whose writer thread is stuck writing `line 0`; send on
    /// the returned channel to let it go on.
    fn stalled(capacity: usize) -> (Queue, LogGuard, mpsc::Sender<()>, Writes) {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let writes = Writes::default();
        let sink = Stalled {
            started: started_tx,
            release: release_rx,
            writes: Arc::clone(&writes),
            first: true,
        };
        let (mut queue, guard) = queued(sink, capacity).unwrap();
        queue.write_all(b"line 0\n").unwrap();
        started.recv().unwrap();
        (queue, guard, release, writes)
    }

    #[test]
    fn a_stalled_stderr_drops_and_counts_lines_instead_of_blocking() {
        let (mut queue, guard, release, writes) = stalled(16);
        // Two 7-byte lines fit in 16 bytes; the other seven are dropped, and none of
        // these writes waits (were they to block, this test would never finish).
        for i in 1..10 {
            queue.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert_eq!(guard.dropped_lines(), 7);
        release.send(()).unwrap();
        drop(guard);
        let out: Vec<u8> = writes.lock().unwrap().concat();
        assert_eq!(String::from_utf8(out).unwrap(), "line 0\nline 1\nline 2\n");
    }

    #[test]
    fn lines_that_arrive_together_leave_in_one_write() {
        let (mut queue, guard, release, writes) = stalled(64 * 1024);
        for i in 1..50 {
            queue.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        release.send(()).unwrap();
        drop(guard);
        let writes = writes.lock().unwrap();
        assert_eq!(
            writes.len(),
            2,
            "line 0, then the 49 buffered meanwhile in one write"
        );
        assert_eq!(writes[1].iter().filter(|&&b| b == b'\n').count(), 49);
    }

    /// A sink that sends each write on a channel.
    struct Told(mpsc::Sender<Vec<u8>>);

    impl Write for Told {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A queue whose writer has nothing to write and sleeps, and the channel of its
    /// writes.
    fn sleeping() -> (Queue, LogGuard, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let (queue, guard) = queued(Told(tx), 1024).unwrap();
        until_asleep(&queue);
        (queue, guard, rx)
    }

    /// Until the writer sleeps: it sets `asleep` just before it waits, with the lock
    /// held, so once the lock is free with the flag set, it waits.
    fn until_asleep(queue: &Queue) {
        let deadline = Instant::now() + NEVER;
        while !{
            let _lines = queue.0.lines.lock().unwrap();
            queue.0.asleep.load(Ordering::Relaxed)
        } {
            assert!(Instant::now() < deadline, "the writer never went to sleep");
            std::thread::yield_now();
        }
    }

    /// Far longer than the writer takes; only a writer that never wakes waits this long.
    const NEVER: Duration = Duration::from_secs(10);

    #[test]
    fn a_line_wakes_the_sleeping_writer() {
        let (mut queue, guard, rx) = sleeping();
        queue.write_all(b"wake up\n").unwrap();
        assert_eq!(rx.recv_timeout(NEVER).unwrap(), b"wake up\n");
        // And it sleeps again, then wakes for the next line.
        until_asleep(&queue);
        queue.write_all(b"again\n").unwrap();
        assert_eq!(rx.recv_timeout(NEVER).unwrap(), b"again\n");
        drop(guard);
    }

    #[test]
    fn dropping_the_guard_wakes_the_sleeping_writer_and_ends_it() {
        let (_queue, guard, _rx) = sleeping();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = done_tx.send(());
        });
        done.recv_timeout(NEVER)
            .expect("the writer thread did not end when the guard was dropped");
    }

    #[test]
    fn dropping_the_guard_writes_out_what_is_buffered() {
        let writes = Writes::default();
        let sink = Stalled {
            started: mpsc::channel().0,
            release: mpsc::channel().1,
            writes: Arc::clone(&writes),
            // Never stalls.
            first: false,
        };
        let (mut queue, guard) = queued(sink, 1024).unwrap();
        queue.write_all(b"last words\n").unwrap();
        drop(guard);
        assert_eq!(writes.lock().unwrap().concat(), b"last words\n");
        assert_eq!(queue.0.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn library_bookkeeping_is_quiet_unless_asked_for() {
        assert_eq!(effective_filter("info"), format!("info,{QUIET_LIBRARIES}"));
        assert_eq!(effective_filter("warn"), format!("warn,{QUIET_LIBRARIES}"));
        assert_eq!(effective_filter("debug"), "debug");
        assert_eq!(effective_filter("info,notify=info"), "info,notify=info");
        assert!(tracing_subscriber::EnvFilter::try_new(effective_filter("info")).is_ok());
    }
}
