//! What hyper lets through but the proxy refuses, found in the raw bytes of each
//! connection: a request head with both `Content-Length` and `Transfer-Encoding` (a
//! request-smuggling shape), and a request head larger than `max_header_bytes`.
//!
//! The head size: hyper's `max_buf_size` is a limit on its read buffer, not on a head
//! (heads well past it were parsed, and 431 came only at about twice the setting). The
//! scanner counts every byte of each head, request line to blank line, and notes the
//! first head over the limit ([`OversizedHead`]); the guard answers it 431.
//!
//! RFC 9112 §6.3 allows a server to process such a request by `Transfer-Encoding` alone
//! (and close the connection afterwards), and hyper does exactly that, removing
//! `Content-Length` before the request is seen; it already answers 400 to the other
//! shapes (differing `Content-Length`s, obs-fold, a final coding other than chunked,
//! `Transfer-Encoding` in HTTP/1.0). Such a message "might indicate an attempt to
//! perform request smuggling" (same section), so the proxy refuses it with 400. Since
//! the parsed request no longer shows the `Content-Length`, [`ScanIo`] watches the raw
//! bytes of each connection: it reads request heads line by line, skips bodies by their
//! framing (`Content-Length` bytes, or chunk by chunk) without looking into them, and
//! notes the index of the first head that carries both fields. The server tags that
//! request with [`FramingConflict`], and the guard refuses it.
//!
//! The scan costs a little work per head and per chunk-size line, nothing per body
//! byte. It stops on anything hyper itself rejects or after an upgrade request, since
//! hyper ends the HTTP exchange there.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A request extension: this request's head carried both `Content-Length` and
/// `Transfer-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingConflict;

/// A request extension: this request's head (request line through the blank line) was
/// larger than `max_header_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OversizedHead;

/// The most bytes of one head line kept while scanning (enough for any field name and
/// the values that matter); longer lines are judged by their start.
const MAX_LINE: usize = 256;

/// What one connection's scan has found, shared with the connection's service.
#[derive(Debug)]
pub struct Findings {
    /// Index (0-based, in arrival order) of the first request head with both fields;
    /// `usize::MAX` for none.
    conflict_at: AtomicUsize,
    /// Index of the first request head over the head limit; `usize::MAX` for none.
    oversized_at: AtomicUsize,
}

impl Findings {
    /// Whether the head of the `index`-th request on this connection was larger than
    /// the head limit.
    pub fn oversized(&self, index: usize) -> bool {
        self.oversized_at.load(Ordering::Acquire) == index
    }

    /// Whether the head of the `index`-th request on this connection had both fields.
    pub fn conflict(&self, index: usize) -> bool {
        self.conflict_at.load(Ordering::Acquire) == index
    }
}

#[derive(Debug)]
enum State {
    /// In a request head; `started` once the request line has begun.
    Head { started: bool },
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading trailer lines until the empty one.
    Trailers,
    /// Nothing more to learn on this connection.
    Off,
}

/// The scanner: a state machine fed with every byte read from the client.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    line_len: usize,
    head_index: usize,
    content_length: Option<Option<u64>>,
    transfer_encoding: Option<bool>,
    upgrade: bool,
    /// Bytes of the current head so far (from its request line).
    head_bytes: usize,
    /// The largest head allowed, in bytes.
    head_limit: usize,
    findings: Arc<Findings>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// A scanner at the start of a connection, with no head limit.
    pub fn new() -> Self {
        Self::with_head_limit(usize::MAX)
    }

    /// A scanner that also notes the first head larger than `head_limit` bytes.
    pub fn with_head_limit(head_limit: usize) -> Self {
        Self {
            state: State::Head { started: false },
            line: Vec::new(),
            line_len: 0,
            head_index: 0,
            content_length: None,
            transfer_encoding: None,
            upgrade: false,
            head_bytes: 0,
            head_limit,
            findings: Arc::new(Findings {
                conflict_at: AtomicUsize::new(usize::MAX),
                oversized_at: AtomicUsize::new(usize::MAX),
            }),
        }
    }

    /// The findings, for the connection's service.
    pub fn findings(&self) -> Arc<Findings> {
        self.findings.clone()
    }

    /// Feed bytes as they were read.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(n) | State::ChunkData(n) if *n > 0 => {
                    let skip = (*n).min(data.len() as u64);
                    *n -= skip;
                    data = &data[skip as usize..];
                    if let State::Body(0) = self.state {
                        self.state = State::Head { started: false };
                    }
                }
                State::Body(_) => self.state = State::Head { started: false },
                // Chunk data done: its CRLF and the next size line read as one line
                // (the first, empty, is skipped by `size_line`).
                State::ChunkData(_) => self.state = State::ChunkSize,
                State::Head { .. } | State::ChunkSize | State::Trailers => {
                    let Some(end) = memchr::memchr(b'\n', data) else {
                        self.push_line(data);
                        return;
                    };
                    let part = &data[..end];
                    data = &data[end + 1..];
                    if self.line_len == 0 {
                        // The whole line is in `data`: judged in place, not copied.
                        if let State::Head { started: true } = self.state {
                            self.count_head(part.len() + 1);
                        }
                        self.end_line(part, part.len());
                    } else {
                        // The line's end of one that began in an earlier read.
                        self.push_line(part);
                        if let State::Head { started: true } = self.state {
                            self.count_head(1);
                        }
                        let line = std::mem::take(&mut self.line);
                        self.end_line(&line, self.line_len);
                        self.line = line;
                        self.line.clear();
                    }
                }
            }
        }
    }

    /// Keeps the start of a line that does not end in this read (up to [`MAX_LINE`]
    /// bytes), counting a head line's bytes as they arrive, so a head that never ends
    /// is caught too.
    fn push_line(&mut self, part: &[u8]) {
        self.line_len += part.len();
        if let State::Head { started: true } = self.state {
            self.count_head(part.len());
        }
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    /// Judges a complete line of `len` bytes (without its `\n`) by its first
    /// [`MAX_LINE`] bytes, `start`. A head line's bytes are already counted, except a
    /// request line's, counted here once known to be one.
    fn end_line(&mut self, start: &[u8], len: usize) {
        let start = &start[..start.len().min(MAX_LINE)];
        let line = start.strip_suffix(b"\r").unwrap_or(start);
        let truncated = len > MAX_LINE;
        if let State::Head { started: false } = self.state
            && !line.is_empty()
        {
            self.head_bytes = 0;
            self.count_head(len + 1);
        }
        self.line_len = 0;
        match self.state {
            State::Head { started } => self.head_line(line, started, truncated),
            State::ChunkSize => self.size_line(line),
            State::Trailers if line.is_empty() => self.next_head(),
            _ => {}
        }
    }

    fn head_line(&mut self, line: &[u8], started: bool, truncated: bool) {
        if !started {
            // Empty lines before a request line are skipped (RFC 9112 §2.2).
            if !line.is_empty() {
                let connect = line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"CONNECT ");
                self.state = if connect {
                    State::Off
                } else {
                    State::Head { started: true }
                };
            }
            return;
        }
        if line.is_empty() {
            return self.end_head();
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // obs-fold: hyper answers 400 and closes.
            self.state = State::Off;
            return;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            self.state = State::Off;
            return;
        };
        // Only three names matter; the name's length rules out nearly every other
        // field before any comparison.
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        match colon {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let parsed = std::str::from_utf8(value.trim_ascii())
                    .ok()
                    .filter(|_| !truncated)
                    .and_then(|v| v.parse::<u64>().ok());
                self.content_length = Some(parsed);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                let value = value.trim_ascii();
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                let chunked = !truncated && last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                self.transfer_encoding = Some(chunked);
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade = true,
            _ => {}
        }
    }

    fn count_head(&mut self, n: usize) {
        self.head_bytes = self.head_bytes.saturating_add(n);
        if self.head_bytes > self.head_limit {
            let _ = self.findings.oversized_at.compare_exchange(
                usize::MAX,
                self.head_index,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    fn end_head(&mut self) {
        let index = self.head_index;
        self.head_index += 1;
        let (cl, te, upgrade) = (
            self.content_length.take(),
            self.transfer_encoding.take(),
            std::mem::take(&mut self.upgrade),
        );
        self.state = match (cl, te) {
            (Some(_), Some(_)) => {
                let _ = self.findings.conflict_at.compare_exchange(
                    usize::MAX,
                    index,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                // hyper closes the connection after this request.
                State::Off
            }
            // After an upgrade the bytes may stop being HTTP.
            _ if upgrade => State::Off,
            (None, Some(true)) => State::ChunkSize,
            (Some(Some(n)), None) => State::Body(n),
            (None, None) => State::Head { started: false },
            // A coding other than chunked, or an unparsable length: hyper answers 400.
            _ => State::Off,
        };
    }

    fn size_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            return; // the CRLF that ends chunk data
        }
        let mut digits = line.iter().take_while(|b| b.is_ascii_hexdigit());
        let size = digits.try_fold(0u64, |acc, &b| {
            let d = (b as char).to_digit(16).map(u64::from)?;
            acc.checked_mul(16)?.checked_add(d)
        });
        let size = size.filter(|_| line[0].is_ascii_hexdigit());
        self.state = match size {
            Some(0) => State::Trailers,
            Some(n) => State::ChunkData(n),
            None => State::Off,
        };
    }

    fn next_head(&mut self) {
        self.state = State::Head { started: false };
    }
}

/// A connection's byte stream with a [`Scanner`] watching what the client sends.
#[derive(Debug)]
pub struct ScanIo<S> {
    inner: S,
    scanner: Scanner,
}

impl<S> ScanIo<S> {
    /// Watch `inner`; returns the stream and the findings for its service.
    pub fn new(inner: S) -> (Self, Arc<Findings>) {
        Self::with_head_limit(inner, usize::MAX)
    }

    /// Watch `inner`, noting also the first head larger than `head_limit` bytes.
    pub fn with_head_limit(inner: S, head_limit: usize) -> (Self, Arc<Findings>) {
        let scanner = Scanner::with_head_limit(head_limit);
        let findings = scanner.findings();
        (Self { inner, scanner }, findings)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ScanIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.scanner.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ScanIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `input` in pieces of `step` bytes; return the conflicting head's index.
    fn scan(input: &str, step: usize) -> Option<usize> {
        let mut s = Scanner::new();
        for piece in input.as_bytes().chunks(step) {
            s.feed(piece);
        }
        let at = s.findings.conflict_at.load(Ordering::Acquire);
        (at != usize::MAX).then_some(at)
    }

    fn all_steps(input: &str) -> Option<usize> {
        let whole = scan(input, input.len().max(1));
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(scan(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn finds_cl_and_te_in_either_order_at_the_right_index() {
        let bad = "POST /b HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(all_steps(bad), Some(0));
        let bad2 = "POST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n";
        assert_eq!(all_steps(bad2), Some(0));
        // After a clean request with a body that looks like a head.
        let fake = "GET /fake HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        let input = format!(
            "\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{fake}{bad}",
            fake.len()
        );
        assert_eq!(all_steps(&input), Some(1));
        // After a chunked upload whose data looks like a head.
        let input = format!(
            "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x};ext=1\r\n{fake}\r\n0\r\nX-Trailer: 1\r\n\r\n\
             GET /d HTTP/1.1\r\n\r\n{bad}",
            fake.len()
        );
        assert_eq!(all_steps(&input), Some(2));
    }

    #[test]
    fn counts_every_byte_of_each_head() {
        let oversized = |input: &str, limit: usize, step: usize| {
            let mut s = Scanner::with_head_limit(limit);
            for piece in input.as_bytes().chunks(step) {
                s.feed(piece);
            }
            let at = s.findings.oversized_at.load(Ordering::Acquire);
            (at != usize::MAX).then_some(at)
        };
        let head = "GET /x HTTP/1.1\r\nHost: a\r\nX: 123\r\n\r\n";
        for step in [1, 2, 5, head.len()] {
            assert_eq!(oversized(head, head.len(), step), None, "step {step}");
            assert_eq!(
                oversized(head, head.len() - 1, step),
                Some(0),
                "step {step}"
            );
            // Leading empty lines are not part of the head; a body is not either.
            let two = format!(
                "\r\n\r\nPOST /u HTTP/1.1\r\nContent-Length: 40\r\n\r\n{}{head}",
                "b".repeat(40)
            );
            // (The POST head is 40 bytes, the GET one 36.)
            assert_eq!(oversized(&two, 40, step), None, "step {step}");
            assert_eq!(oversized(&two, 39, step), Some(0), "step {step}");
            let bigger = format!("{head}GET /y HTTP/1.1\r\nHost: a\r\nX: 1234\r\n\r\n");
            assert_eq!(oversized(&bigger, head.len(), step), Some(1), "step {step}");
        }
        // A head that never ends is caught as it grows.
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100));
        assert_eq!(oversized(&endless, 50, 7), Some(0));
    }

    #[test]
    fn clean_traffic_has_no_finding() {
        let input = "GET / HTTP/1.1\r\nHost: x\r\n\r\n\
                     POST /u HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
                     POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(all_steps(input), None);
        // Bodies are not looked into.
        let body = "X\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let input = format!(
            "POST /u HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(all_steps(&input), None);
    }

    #[test]
    fn stops_after_upgrades_connect_and_what_hyper_rejects() {
        let bad = "POST /b HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        for before in [
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "CONNECT a:1 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        ] {
            assert_eq!(all_steps(&format!("{before}{bad}")), None, "{before:?}");
        }
        // Very long lines are judged by their start.
        let long = format!(
            "POST /b HTTP/1.1\r\nX-Long: {}\r\nContent-Length: 4\r\nTransfer-Encoding: {}chunked\r\n\r\n",
            "a".repeat(10_000),
            "x, ".repeat(200)
        );
        assert_eq!(all_steps(&long), Some(0));
    }

    /// The scanner as it was before lines were judged in place (every line copied into
    /// the line buffer, searched byte by byte), kept as the model the faster one must
    /// match after every read.
    mod reference {
        use super::super::{Findings, MAX_LINE, State};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        #[derive(Debug)]
        pub(super) struct OldScanner {
            pub(super) state: State,
            pub(super) line: Vec<u8>,
            pub(super) line_len: usize,
            pub(super) head_index: usize,
            pub(super) content_length: Option<Option<u64>>,
            pub(super) transfer_encoding: Option<bool>,
            pub(super) upgrade: bool,
            pub(super) head_bytes: usize,
            head_limit: usize,
            pub(super) findings: Arc<Findings>,
        }

        impl OldScanner {
            pub(super) fn with_head_limit(head_limit: usize) -> Self {
                Self {
                    state: State::Head { started: false },
                    line: Vec::with_capacity(64),
                    line_len: 0,
                    head_index: 0,
                    content_length: None,
                    transfer_encoding: None,
                    upgrade: false,
                    head_bytes: 0,
                    head_limit,
                    findings: Arc::new(Findings {
                        conflict_at: AtomicUsize::new(usize::MAX),
                        oversized_at: AtomicUsize::new(usize::MAX),
                    }),
                }
            }

            pub(super) fn feed(&mut self, mut data: &[u8]) {
                while !data.is_empty() {
                    match &mut self.state {
                        State::Off => return,
                        State::Body(n) | State::ChunkData(n) if *n > 0 => {
                            let skip = (*n).min(data.len() as u64);
                            *n -= skip;
                            data = &data[skip as usize..];
                            if let State::Body(0) = self.state {
                                self.state = State::Head { started: false };
                            }
                        }
                        State::Body(_) => self.state = State::Head { started: false },
                        State::ChunkData(_) => self.state = State::ChunkSize,
                        State::Head { .. } | State::ChunkSize | State::Trailers => {
                            let Some(end) = data.iter().position(|&b| b == b'\n') else {
                                self.push_line(data);
                                return;
                            };
                            self.push_line(&data[..end]);
                            data = &data[end + 1..];
                            self.end_line();
                        }
                    }
                }
            }

            fn push_line(&mut self, part: &[u8]) {
                self.line_len += part.len();
                if let State::Head { started: true } = self.state {
                    self.count_head(part.len());
                }
                let room = MAX_LINE.saturating_sub(self.line.len());
                self.line.extend_from_slice(&part[..part.len().min(room)]);
            }

            fn end_line(&mut self) {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let truncated = self.line_len > MAX_LINE;
                match self.state {
                    State::Head { started: true } => self.count_head(1),
                    State::Head { started: false } if !line.is_empty() => {
                        self.head_bytes = 0;
                        self.count_head(self.line_len + 1);
                    }
                    _ => {}
                }
                self.line_len = 0;
                match self.state {
                    State::Head { started } => self.head_line(&line, started, truncated),
                    State::ChunkSize => self.size_line(&line),
                    State::Trailers if line.is_empty() => {
                        self.state = State::Head { started: false }
                    }
                    _ => {}
                }
                line.clear();
                self.line = line;
            }

            fn head_line(&mut self, line: &[u8], started: bool, truncated: bool) {
                if !started {
                    if !line.is_empty() {
                        let connect =
                            line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"CONNECT ");
                        self.state = if connect {
                            State::Off
                        } else {
                            State::Head { started: true }
                        };
                    }
                    return;
                }
                if line.is_empty() {
                    return self.end_head();
                }
                if line[0] == b' ' || line[0] == b'\t' {
                    self.state = State::Off;
                    return;
                }
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    self.state = State::Off;
                    return;
                };
                let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
                if name.eq_ignore_ascii_case(b"content-length") {
                    let parsed = std::str::from_utf8(value)
                        .ok()
                        .filter(|_| !truncated)
                        .and_then(|v| v.parse::<u64>().ok());
                    self.content_length = Some(parsed);
                } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                    let chunked = !truncated && last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                    self.transfer_encoding = Some(chunked);
                } else if name.eq_ignore_ascii_case(b"upgrade") {
                    self.upgrade = true;
                }
            }

            fn count_head(&mut self, n: usize) {
                self.head_bytes = self.head_bytes.saturating_add(n);
                if self.head_bytes > self.head_limit {
                    let _ = self.findings.oversized_at.compare_exchange(
                        usize::MAX,
                        self.head_index,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
            }

            fn end_head(&mut self) {
                let index = self.head_index;
                self.head_index += 1;
                let (cl, te, upgrade) = (
                    self.content_length.take(),
                    self.transfer_encoding.take(),
                    std::mem::take(&mut self.upgrade),
                );
                self.state = match (cl, te) {
                    (Some(_), Some(_)) => {
                        let _ = self.findings.conflict_at.compare_exchange(
                            usize::MAX,
                            index,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        State::Off
                    }
                    _ if upgrade => State::Off,
                    (None, Some(true)) => State::ChunkSize,
                    (Some(Some(n)), None) => State::Body(n),
                    (None, None) => State::Head { started: false },
                    _ => State::Off,
                };
            }

            fn size_line(&mut self, line: &[u8]) {
                if line.is_empty() {
                    return;
                }
                let mut digits = line.iter().take_while(|b| b.is_ascii_hexdigit());
                let size = digits.try_fold(0u64, |acc, &b| {
                    let d = (b as char).to_digit(16).map(u64::from)?;
                    acc.checked_mul(16)?.checked_add(d)
                });
                let size = size.filter(|_| line[0].is_ascii_hexdigit());
                self.state = match size {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Off,
                };
            }
        }
    }

    /// Everything the two scanners know, to compare after each read.
    fn model_view(s: &reference::OldScanner) -> String {
        format!(
            "{:?} {:?} {} {} {:?} {:?} {} {} {:?}",
            s.state,
            s.line,
            s.line_len,
            s.head_index,
            s.content_length,
            s.transfer_encoding,
            s.upgrade,
            s.head_bytes,
            s.findings
        )
    }

    fn view(s: &Scanner) -> String {
        format!(
            "{:?} {:?} {} {} {:?} {:?} {} {} {:?}",
            s.state,
            s.line,
            s.line_len,
            s.head_index,
            s.content_length,
            s.transfer_encoding,
            s.upgrade,
            s.head_bytes,
            s.findings
        )
    }

    /// One piece of a connection's bytes: head lines with the fields that matter in
    /// any case and spacing, lines past [`MAX_LINE`], bare LFs, stray CRs, folds,
    /// chunk-size lines, bodies and noise.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just("Content-Length"),
            Just("content-length"),
            Just("CONTENT-LENGTH"),
            Just("Transfer-Encoding"),
            Just("transfer-encoding"),
            Just("TRANSFER-ENCODINg"),
            Just("Upgrade"),
            Just("UPGRADE"),
            Just("Content-Lengths"),
            Just("Content-Lengt"),
            Just("Transfer-Encodinx"),
            Just("Upgradf"),
            Just("Host"),
            Just("Accept-Encoding"),
            Just("Connection"),
            Just("Content-Type"),
            Just("Content-Length "),
            Just(" Content-Length"),
        ];
        let value = prop_oneof![
            Just("0".to_owned()),
            Just("4".to_owned()),
            Just("12".to_owned()),
            Just("chunked".to_owned()),
            Just(" Chunked ".to_owned()),
            Just("gzip, chunked".to_owned()),
            Just("chunked, gzip".to_owned()),
            Just("websocket".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("-1".to_owned()),
            "[0-9]{1,3}",
            "[ -~]{0,12}",
            (0usize..300).prop_map(|n| "9".repeat(n)),
            (0usize..300).prop_map(|n| format!("{}chunked", " ".repeat(n))),
        ];
        let eol = prop_oneof![Just("\r\n"), Just("\n"), Just("\r\r\n"), Just("")];
        prop_oneof![
            4 => (name, value, eol.clone())
                .prop_map(|(n, v, e)| format!("{n}:{v}{e}").into_bytes()),
            2 => (
                prop_oneof![Just("GET"), Just("POST"), Just("CONNECT"), Just("connect")],
                eol.clone(),
            )
                .prop_map(|(m, e)| format!("{m} /x HTTP/1.1{e}").into_bytes()),
            3 => eol.clone().prop_map(|e| e.as_bytes().to_vec()),
            1 => Just(b" folded\r\n".to_vec()),
            1 => Just(b"no colon here\r\n".to_vec()),
            2 => ("[0-9a-fA-F]{1,4}", prop_oneof![Just(""), Just(";ext=1")], eol.clone())
                .prop_map(|(s, x, e)| format!("{s}{x}{e}").into_bytes()),
            1 => Just(b"0\r\n".to_vec()),
            1 => (0usize..600, eol.clone())
                .prop_map(|(n, e)| format!("X-Long: {}{e}", "a".repeat(n)).into_bytes()),
            // A name whose colon may lie past MAX_LINE (such a line is judged to have
            // none), a chunk size whose digits may run past it.
            1 => (200usize..300, eol.clone())
                .prop_map(|(n, e)| format!("X{}: 1{e}", "a".repeat(n)).into_bytes()),
            1 => (200usize..300, eol)
                .prop_map(|(n, e)| format!("{}5{e}", "0".repeat(n)).into_bytes()),
            2 => prop::collection::vec(any::<u8>(), 0..24),
            1 => prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':')], 1..6),
        ]
    }

    /// A request as clients send it (leading empty lines, a request line, header lines
    /// from [`piece`]'s field lines mostly, the blank line) followed by a body that may
    /// or may not match its framing.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            3 => (
                prop_oneof![
                    Just("Content-Length: 4"),
                    Just("content-length:12"),
                    Just("Transfer-Encoding: chunked"),
                    Just("transfer-encoding: gzip, chunked"),
                    Just("Transfer-Encoding: gzip"),
                    Just("Upgrade: websocket"),
                    Just("Host: 127.0.0.1"),
                    Just("Accept-Encoding: identity"),
                    Just("Connection: keep-alive"),
                ],
                prop_oneof![4 => Just("\r\n"), 1 => Just("\n")],
            )
                .prop_map(|(f, e)| format!("{f}{e}").into_bytes()),
            1 => piece(),
        ];
        let body = prop_oneof![
            Just(Vec::new()),
            (0usize..20).prop_map(|n| vec![b'b'; n]),
            Just(b"4\r\nabcd\r\n0\r\n\r\n".to_vec()),
            Just(b"c;x=1\r\nGET / HTTP/1.1\r\n0\r\nT: 1\r\n\r\n".to_vec()),
        ];
        (
            prop_oneof![Just(""), Just("\r\n"), Just("\n\r\n")],
            prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
            prop::collection::vec(field, 0..6),
            prop_oneof![4 => Just("\r\n"), 1 => Just("\n")],
            body,
        )
            .prop_map(|(lead, method, fields, end, body)| {
                let mut r = format!("{lead}{method} /p HTTP/1.1\r\n").into_bytes();
                r.extend(fields.concat());
                r.extend(end.as_bytes());
                r.extend(body);
                r
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Random connections (requests, some malformed, and noise) split at random points: after every read the scanner
        /// knows exactly what the old one knew (state, line kept, counts, findings), and
        /// the findings equal those of feeding the bytes in one piece.
        #[test]
        fn matches_the_old_scanner_at_any_split(
            pieces in prop::collection::vec(prop_oneof![3 => request(), 1 => piece()], 0..12),
            splits in prop::collection::vec(1usize..80, 1..8),
            limit in prop_oneof![Just(usize::MAX), 0usize..400],
        ) {
            let bytes = pieces.concat();
            let mut new = Scanner::with_head_limit(limit);
            let mut old = reference::OldScanner::with_head_limit(limit);
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = splits[i % splits.len()].min(rest.len());
                new.feed(&rest[..n]);
                old.feed(&rest[..n]);
                prop_assert_eq!(view(&new), model_view(&old), "after {} reads", i + 1);
                rest = &rest[n..];
                i += 1;
            }
            let mut whole = Scanner::with_head_limit(limit);
            whole.feed(&bytes);
            prop_assert_eq!(format!("{:?}", whole.findings), format!("{:?}", new.findings));
        }
    }
}
