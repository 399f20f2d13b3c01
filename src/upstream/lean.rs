//! The request path's own HTTP/1.1 exchange for a request without a body: the head
//! written straight to a pooled master connection, and the response read from that
//! connection by whoever polls the response (the client connection's task), with no
//! connection task, channel or extra wake-up in between.
//!
//! Why: a request sent on hyper's client connection (`hyper::client::conn::http1`) goes
//! through a channel to that connection's own task, which writes it, reads the answer,
//! and hands the head and every body chunk back through channels of their own. For a
//! small keep-alive GET that task was about a third of the proxy's instructions
//! (`scripts/ir-per-request` under callgrind: 14,400 of 40,800 per request, inclusive,
//! in the pool's connection task). Here the request's task does that work itself:
//! 40,800 to 33,100 instructions per request in all (same harness, `-q`).
//!
//! Only requests with no body, in origin form, over HTTP/1.1, asking for no upgrade
//! take this path ([`eligible`]); everything else (uploads, WebSockets, `CONNECT`)
//! stays on hyper's client, whose connections are pooled apart. The response is read
//! as hyper's client reads it (RFC 9112 section 6.3, and hyper's own limits):
//! - `1xx` heads other than 101 are skipped; a 101 ends the connection's reuse;
//! - `HEAD` answers, 204 and 304 have no body;
//! - `Transfer-Encoding` whose last coding is `chunked` is decoded (trailers kept);
//!   any other `Transfer-Encoding` is read to the connection's end, and one in an
//!   HTTP/1.0 answer is refused; it wins over `Content-Length` (and an answer with
//!   both does not leave its connection for reuse: stricter than hyper);
//! - `Content-Length` values (every line, every comma-separated item) must agree;
//! - with neither, the body runs to the connection's end;
//! - at most 100 header fields, and a head of at most `UPSTREAM_MAX_BUF_SIZE`;
//! - chunk extensions and trailers of at most 16 KiB.
//!
//! A connection goes back to the pool only when its answer has been read to the end,
//! the master did not ask to close it, and nothing was left over after the answer.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::UPSTREAM_MAX_BUF_SIZE;
use super::route::RouteStream;
use crate::h1::{Field, content_length, has_token, is_chunked, range};

/// A connection to the master, as the connector makes it.
pub(super) type Io = TokioIo<MaybeHttpsStream<RouteStream>>;

/// At most this many header fields in an answer (hyper's limit).
const MAX_HEADERS: usize = 100;
/// The first read of an answer; later reads grow while they fill the buffer.
const FIRST_READ: usize = 8 * 1024;
/// The most read buffer an idle connection keeps.
const IDLE_BUFFER: usize = 64 * 1024;
/// Trailer fields of a chunked body, in bytes (hyper's limit).
const TRAILER_LIMIT: usize = 16 * 1024;
/// Chunk extensions of one body, in bytes (hyper's limit).
const EXTENSIONS_LIMIT: u64 = 16 * 1024;

/// Why an exchange on a lean connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection ended before a byte of the answer arrived.
    #[error("the master closed the connection before answering")]
    Closed,
    /// The connection ended in the middle of the answer's body.
    #[error("the master closed the connection before the response body ended")]
    IncompleteBody,
    /// The answer breaks HTTP/1.1's rules.
    #[error("the master sent a malformed HTTP response ({0})")]
    Malformed(&'static str),
    /// Reading or writing failed.
    #[error("the connection to the master failed")]
    Io(#[source] io::Error),
}

/// Whether `request` can be sent on a lean connection: no body, origin form, HTTP/1.1,
/// no upgrade and no framing header of its own.
pub(super) fn eligible<B: Body>(request: &Request<B>) -> bool {
    let uri = request.uri();
    request.body().is_end_stream()
        && request.version() == Version::HTTP_11
        && request.method() != Method::CONNECT
        && uri.scheme().is_none()
        && uri.authority().is_none()
        && !request.headers().contains_key(TRANSFER_ENCODING)
        && !request.headers().contains_key(UPGRADE)
}

/// A connection to the master used without hyper: its stream, the bytes read from it
/// and not used yet, and the buffer its request heads are written from.
pub(super) struct LeanConn {
    io: Io,
    buf: BytesMut,
    head: Vec<u8>,
    written: usize,
    read_size: usize,
    /// Set by the pool's sweeper when it finds the connection idle; cleared when the
    /// connection goes back to the pool after a request. Found set at the next sweep:
    /// idle a whole sweep period (no clock read per request).
    pub(super) swept: bool,
}

impl LeanConn {
    /// A connection over `io`, boxed: the stream holds a TLS session, over a kilobyte,
    /// and a connection moves several times per request (pool, request, body, pool).
    pub(super) fn new(io: Io) -> Box<Self> {
        Box::new(Self {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            written: 0,
            read_size: FIRST_READ,
            swept: false,
        })
    }

    /// Whether an idle connection can carry another request: nothing arrived on it
    /// while it waited (the master closing it, or stray bytes). For plain TCP this asks
    /// the runtime's readiness, with no system call unless the socket became readable.
    pub(super) fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if let MaybeHttpsStream::Http(RouteStream::Tcp(tcp)) = self.io.inner() {
            if tcp.inner().poll_read_ready(&mut cx).is_pending() {
                return true;
            }
        }
        // Readable (or TLS, or a command's pipe): look. Nothing to read is fine (TLS
        // session tickets are taken in here); an end, an error or bytes are not.
        self.poll_fill(&mut cx).is_pending()
    }

    /// Lay out `request`'s head for [`Self::poll_write_head`] as hyper's client writes
    /// it: request line, then every field as `name: value`; then `Authorization:
    /// authorization` when given (the request has none of its own then).
    pub(super) fn encode(&mut self, request: &Parts, authorization: Option<&HeaderValue>) {
        let head = &mut self.head;
        head.clear();
        self.written = 0;
        head.extend_from_slice(request.method.as_str().as_bytes());
        head.push(b' ');
        let target = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &request.headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if let Some(value) = authorization {
            head.extend_from_slice(b"authorization: ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
    }

    /// Write the encoded head and flush it. On failure, whether no byte went out.
    pub(super) fn poll_write_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), (Error, bool)>> {
        while self.written < self.head.len() {
            let nothing_sent = self.written == 0;
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.head[self.written..])) {
                Ok(0) => return Poll::Ready(Err((Error::Closed, nothing_sent))),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err((Error::Io(e), nothing_sent))),
            }
        }
        Pin::new(&mut self.io)
            .poll_flush(cx)
            .map_err(|e| (Error::Io(e), false))
    }

    /// Read more bytes into the buffer: how many (0 at the connection's end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size {
            self.buf.reserve(self.read_size);
        }
        let spare = self.buf.spare_capacity_mut();
        let room = spare.len();
        let mut read = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity
        // (`ReadBuf::filled`), which directly follow the buffer's length.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        // Adapt the next read, as hyper does: larger while reads fill the room.
        if n == room && self.read_size < UPSTREAM_MAX_BUF_SIZE {
            self.read_size *= 2;
        } else if n < self.read_size / 4 && self.read_size > FIRST_READ {
            self.read_size /= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Read the answer's head (skipping `1xx` heads other than 101).
    pub(super) fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<Head, Error>> {
        loop {
            let started = !self.buf.is_empty();
            if started {
                match parse(&mut self.buf, head_request)? {
                    Parsed::Head(head) => return Poll::Ready(Ok(head)),
                    Parsed::Skipped => continue,
                    Parsed::Partial if self.buf.len() >= UPSTREAM_MAX_BUF_SIZE => {
                        return Poll::Ready(Err(Error::Malformed(
                            "the response head is too large",
                        )));
                    }
                    Parsed::Partial => {}
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if started => {
                    return Poll::Ready(Err(Error::Malformed("the response head was cut off")));
                }
                Ok(0) => return Poll::Ready(Err(Error::Closed)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
    }
}

/// Whether `error`, from [`LeanConn::poll_head`] on `conn`, came before any answer: the
/// connection ended, or was reset, with no head read or pending (an interim `1xx` head
/// may have been skipped).
pub(super) fn unanswered(error: &Error, conn: &LeanConn) -> bool {
    match error {
        Error::Closed => true,
        Error::Io(e) => e.kind() == io::ErrorKind::ConnectionReset && conn.buf.is_empty(),
        Error::IncompleteBody | Error::Malformed(_) => false,
    }
}

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes (zero: no body).
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection ends.
    Close,
}

/// A parsed answer head.
pub(super) struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// The reason phrase when it is not the status code's usual one.
    pub reason: Option<Bytes>,
    pub framing: Framing,
    /// Whether the connection may carry another request after this answer.
    pub keep_alive: bool,
}

/// What [`parse`] found at the front of the buffer.
enum Parsed {
    Head(Head),
    /// A `1xx` head, taken out and dropped.
    Skipped,
    /// Not a whole head yet (nothing taken).
    Partial,
}

/// Parse one answer head from the front of `buf`, taking it out.
fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, Error> {
    // Left uninitialised (it is 3 KiB): only the first `count` are written and read.
    let mut fields = [const { MaybeUninit::<Field>::uninit() }; MAX_HEADERS];
    let (len, code, version, reason, count) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let bytes = &buf[..];
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            bytes,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => {
                for (field, header) in fields.iter_mut().zip(response.headers.iter()) {
                    field.write(Field {
                        name: range(bytes, header.name.as_bytes()),
                        value: range(bytes, header.value),
                    });
                }
                let reason = response.reason.map(|r| range(bytes, r.as_bytes()));
                (
                    len,
                    response.code.unwrap_or(0),
                    response.version.unwrap_or(1),
                    reason,
                    response.headers.len(),
                )
            }
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Malformed("more than 100 header fields"));
            }
            Err(_) => return Err(Error::Malformed("not an HTTP/1 response head")),
        }
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("bad status code"))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Skipped);
    }
    let version = if version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut headers = HeaderMap::with_capacity(count);
    let mut keep_alive = version == Version::HTTP_11;
    let mut close = false;
    for field in &fields[..count] {
        // SAFETY: the loop above wrote the first `count` (the number of headers parsed).
        let field = unsafe { field.assume_init_ref() };
        let name = HeaderName::from_bytes(&head[field.name.0..field.name.1])
            .map_err(|_| Error::Malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(field.value.0..field.value.1))
            .map_err(|_| Error::Malformed("bad header value"))?;
        if name == CONNECTION {
            if close || has_token(&value, "close") {
                close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(&value, "keep-alive");
            }
        }
        headers.append(name, value);
    }
    let reason = reason
        .map(|(a, b)| &head[a..b])
        .filter(|r| Some(*r) != status.canonical_reason().map(str::as_bytes))
        .map(|r| head.slice_ref(r));
    let framing = match status.as_u16() {
        101 | 204 | 304 => Framing::Length(0),
        _ if head_request => Framing::Length(0),
        _ => framing(&headers, version)?,
    };
    // A 101 hands the connection over; a close-delimited body ends it; and an answer
    // framed both ways (`Transfer-Encoding` and `Content-Length`) may have been read
    // differently by something on the way, so its connection is not trusted again
    // (RFC 9112 section 6.3, item 3).
    if status == StatusCode::SWITCHING_PROTOCOLS
        || framing == Framing::Close
        || (framing == Framing::Chunked && headers.contains_key(CONTENT_LENGTH))
    {
        keep_alive = false;
    }
    Ok(Parsed::Head(Head {
        status,
        version,
        headers,
        reason,
        framing,
        keep_alive,
    }))
}

/// The body's framing from its head's fields (RFC 9112 section 6.3).
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, Error> {
    if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        if version == Version::HTTP_10 {
            return Err(Error::Malformed(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        return Ok(if is_chunked(last) {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let n = content_length(value).ok_or(Error::Malformed("bad Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::Malformed("Content-Length values differ"));
        }
        length = Some(n);
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk's size.
    Start,
    /// Within the size's hex digits.
    Size(u64),
    /// Blanks after the size.
    SizeBlank(u64),
    /// Within an extension (ignored).
    Extension(u64),
    /// After the size line's CR.
    SizeLf(u64),
    /// Within a chunk's data: what is left of it.
    Data(u64),
    /// After a chunk's data.
    DataCr,
    DataLf,
    /// After the last chunk: the start of a trailer line, or the final CRLF.
    EndCr,
    /// Within a trailer line.
    Trailer,
    TrailerLf,
    /// After the final CR.
    EndLf,
}

/// What one step of the chunked decoder gives.
enum Step {
    Data(Bytes),
    /// The body ended, with these trailer lines (maybe none).
    End(Vec<u8>),
    /// The buffer is used up.
    More,
}

/// The decoder's state, and the byte counts its limits watch.
struct Chunked {
    state: Chunk,
    extensions: u64,
    trailers: Vec<u8>,
}

impl Chunked {
    fn new() -> Self {
        Self {
            state: Chunk::Start,
            extensions: 0,
            trailers: Vec::new(),
        }
    }

    /// Decode from the front of `buf` until data, the end, or the buffer's end.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        use Chunk::*;
        loop {
            if let Data(left) = self.state {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                self.state = if left == 0 { DataCr } else { Data(left) };
                return Ok(Step::Data(data));
            }
            let Some(&b) = buf.first() else {
                return Ok(Step::More);
            };
            buf.advance(1);
            self.state = match (self.state, b) {
                (Start, _) => match hex(b) {
                    Some(d) => Size(d),
                    None => return Err(Error::Malformed("bad chunk size")),
                },
                (Size(n), _) if hex(b).is_some() => Size(
                    n.checked_mul(16)
                        .and_then(|n| n.checked_add(hex(b).unwrap_or(0)))
                        .ok_or(Error::Malformed("chunk size too large"))?,
                ),
                (Size(n) | SizeBlank(n), b' ' | b'\t') => SizeBlank(n),
                (Size(n) | SizeBlank(n), b';') => Extension(n),
                (Size(n) | SizeBlank(n) | Extension(n), b'\r') => SizeLf(n),
                (Extension(_), b'\n') => {
                    return Err(Error::Malformed("a newline in a chunk extension"));
                }
                (Extension(n), _) => {
                    self.extensions += 1;
                    if self.extensions >= EXTENSIONS_LIMIT {
                        return Err(Error::Malformed("chunk extensions over 16 KiB"));
                    }
                    Extension(n)
                }
                (SizeLf(0), b'\n') => EndCr,
                (SizeLf(n), b'\n') => Data(n),
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Start,
                (EndCr, b'\r') => EndLf,
                (EndCr | Trailer, _) => {
                    self.push_trailer(b)?;
                    if b == b'\r' { TrailerLf } else { Trailer }
                }
                (TrailerLf, b'\n') => {
                    self.push_trailer(b)?;
                    EndCr
                }
                (EndLf, b'\n') => return Ok(Step::End(std::mem::take(&mut self.trailers))),
                _ => return Err(Error::Malformed("bad chunked framing")),
            };
        }
    }

    fn push_trailer(&mut self, b: u8) -> Result<(), Error> {
        if self.trailers.len() >= TRAILER_LIMIT {
            return Err(Error::Malformed("trailers over 16 KiB"));
        }
        self.trailers.push(b);
        Ok(())
    }
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

/// Trailer lines (each ending in CRLF) as fields.
fn trailer_fields(mut lines: Vec<u8>) -> Result<HeaderMap, Error> {
    lines.extend_from_slice(b"\r\n");
    let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = match httparse::parse_headers(&lines, &mut parsed) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        _ => return Err(Error::Malformed("bad trailer fields")),
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Error::Malformed("bad trailer name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| Error::Malformed("bad trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Where a lean answer's body is.
enum Reading {
    /// This many bytes left.
    Length(u64),
    Chunked(Box<Chunked>),
    /// Until the connection's end.
    Close,
    /// Ended (or failed).
    Done,
}

/// What a lean body does with its connection once the body has ended.
pub(super) trait Return: Send + Sync {
    fn give_back(&self, conn: Box<LeanConn>);
}

/// The body of an answer read on a lean connection, read from the connection as it is
/// polled. Its connection goes back to the pool (`back`) when it ends, reusable; if it
/// is dropped unfinished or fails, the connection is closed.
pub(super) struct LeanBody<R> {
    conn: Option<Box<LeanConn>>,
    reading: Reading,
    keep_alive: bool,
    back: Option<R>,
}

impl<R: Return> LeanBody<R> {
    /// The body of `head`, read from `conn`; `back` takes the connection after it.
    pub(super) fn new(conn: Box<LeanConn>, head: &Head, back: R) -> Self {
        let reading = match head.framing {
            Framing::Length(0) => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(Box::new(Chunked::new())),
            Framing::Close => Reading::Close,
        };
        let mut body = Self {
            conn: Some(conn),
            reading,
            keep_alive: head.keep_alive,
            back: Some(back),
        };
        if matches!(body.reading, Reading::Done) {
            body.ended();
        }
        body
    }

    /// The body is over: the connection goes back if it can carry another request.
    fn ended(&mut self) {
        self.reading = Reading::Done;
        if let (Some(mut conn), Some(back)) = (self.conn.take(), self.back.take()) {
            if self.keep_alive && conn.buf.is_empty() {
                // An idle connection keeps no large buffer from a download.
                if conn.buf.capacity() > IDLE_BUFFER {
                    conn.buf = BytesMut::new();
                }
                conn.read_size = FIRST_READ;
                back.give_back(conn);
            }
        }
    }

    fn failed(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.reading = Reading::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl<R: Return + Unpin> Body for LeanBody<R> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // Serve from what has been read; `None`: the buffer is used up.
            let served = match &mut this.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(left) if !conn.buf.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(conn.buf.len());
                    *left -= n as u64;
                    Some(Ok(Step::Data(conn.buf.split_to(n).freeze())))
                }
                Reading::Close if !conn.buf.is_empty() => {
                    Some(Ok(Step::Data(conn.buf.split().freeze())))
                }
                Reading::Length(_) | Reading::Close => None,
                Reading::Chunked(decoder) => match decoder.step(&mut conn.buf) {
                    Ok(Step::More) => None,
                    other => Some(other),
                },
            };
            match served {
                Some(Ok(Step::Data(data))) => {
                    if matches!(this.reading, Reading::Length(0)) {
                        this.ended();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Ok(Step::End(trailers))) => {
                    this.ended();
                    if trailers.is_empty() {
                        return Poll::Ready(None);
                    }
                    return match trailer_fields(trailers) {
                        Ok(map) => Poll::Ready(Some(Ok(Frame::trailers(map)))),
                        Err(e) => this.failed(e),
                    };
                }
                Some(Ok(Step::More)) | None => {}
                Some(Err(e)) => return this.failed(e),
            }
            // The buffer is used up: read more.
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.reading, Reading::Close) => {
                    // The end of a close-delimited body: the connection is not reused.
                    this.keep_alive = false;
                    this.ended();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.failed(Error::IncompleteBody),
                Ok(_) => {}
                Err(e) => return this.failed(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Done => SizeHint::with_exact(0),
            Reading::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl<R> std::fmt::Debug for LeanBody<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanBody")
            .field("open", &self.conn.is_some())
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn head_of(text: &[u8], head_request: bool) -> Result<Head, Error> {
        let mut buf = BytesMut::from(text);
        loop {
            match parse(&mut buf, head_request)? {
                Parsed::Head(head) => return Ok(head),
                Parsed::Skipped => continue,
                Parsed::Partial => panic!("a partial head: {:?}", String::from_utf8_lossy(text)),
            }
        }
    }

    fn framing_of(text: &str) -> Result<Framing, Error> {
        head_of(text.as_bytes(), false).map(|h| h.framing)
    }

    #[test]
    fn the_body_is_framed_as_rfc_9112_says() {
        let ok = |t: &str| framing_of(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n"),
            Framing::Chunked
        );
        // Transfer-Encoding wins over Content-Length.
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            Framing::Close
        );
        assert_eq!(ok("HTTP/1.1 200 OK\r\n\r\n"), Framing::Close);
        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
            Framing::Length(0)
        );
        assert_eq!(
            ok("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
            Framing::Length(0)
        );
        let head = head_of(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true).unwrap();
        assert_eq!(head.framing, Framing::Length(0), "an answer to HEAD");
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: folded\r\n  line\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(matches!(framing_of(bad), Err(Error::Malformed(_))), "{bad}");
        }
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "x: y\r\n".repeat(101));
        assert!(matches!(framing_of(&many), Err(Error::Malformed(_))));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let alive = |t: &str| head_of(t.as_bytes(), false).unwrap().keep_alive;
        assert!(alive("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!alive(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!alive(
            "HTTP/1.1 200 OK\r\nconnection: close\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!alive("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(alive(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!alive("HTTP/1.1 200 OK\r\n\r\n"), "a close-delimited body");
        assert!(
            !alive("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"),
            "framed both ways"
        );
        assert!(!alive("HTTP/1.1 101 Switching Protocols\r\n\r\n"));
    }

    #[test]
    fn informational_heads_are_skipped_and_a_partial_head_is_left_alone() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nx-a: 1\r\n"[..],
        );
        assert!(matches!(parse(&mut buf, false), Ok(Parsed::Skipped)));
        let before = buf.clone();
        assert!(matches!(parse(&mut buf, false), Ok(Parsed::Partial)));
        assert_eq!(buf, before);
        buf.extend_from_slice(b"content-length: 2\r\n\r\nok");
        let Ok(Parsed::Head(head)) = parse(&mut buf, false) else {
            panic!("a head");
        };
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers["x-a"], "1");
        assert!(head.reason.is_none(), "the usual reason is not kept");
        assert_eq!(&buf[..], b"ok", "the body's bytes stay in the buffer");
        let head = head_of(
            b"HTTP/1.1 404 Gone Fishing\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(head.reason.as_deref(), Some(&b"Gone Fishing"[..]));
    }

    /// Decode `wire` fed in pieces of `step` bytes: the data, the trailers, or the error.
    fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let mut decoder = Chunked::new();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.step(&mut buf)? {
                    Step::Data(d) => data.extend_from_slice(&d),
                    Step::End(trailers) => {
                        assert!(buf.is_empty(), "bytes after the body");
                        return Ok((data, trailers));
                    }
                    Step::More => break,
                }
            }
        }
        panic!("the body did not end")
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let wire = b"4;name=\"v\"\r\nWiki\r\n5 \t\r\npedia\r\nA\r\n in chunks\r\n0\r\nExpires: never\r\nX-Sum: 9\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers) = dechunk(wire, step).unwrap();
            assert_eq!(&data[..], b"Wikipedia in chunks", "pieces of {step}");
            let fields = trailer_fields(trailers).unwrap();
            assert_eq!(fields["expires"], "never");
            assert_eq!(fields["x-sum"], "9");
        }
        let (data, trailers) = dechunk(b"0\r\n\r\n", 1).unwrap();
        assert!(data.is_empty() && trailers.is_empty());
    }

    #[test]
    fn bad_chunked_framing_is_refused() {
        for bad in [
            &b"4\nWiki\r\n0\r\n\r\n"[..],
            b"zz\r\n",
            b"\r\n",
            b"4 4\r\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n0\r\n\r\n",
            b"4;ext\nmore\r\nWiki\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            let result = dechunk(bad, 1).and_then(|(_, t)| trailer_fields(t).map(|_| ()));
            assert!(result.is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = [b"1;".as_slice(), &[b'x'; 17 * 1024]].concat();
        assert!(dechunk(&long, 1024).is_err(), "extensions over the limit");
        let trailers = [b"0\r\nx: ".as_slice(), &[b'y'; 17 * 1024], b"\r\n\r\n"].concat();
        assert!(dechunk(&trailers, 1024).is_err(), "trailers over the limit");
    }

    /// Records the connections a body gives back (their buffers' capacity).
    #[derive(Clone, Default)]
    struct Returned(Arc<Mutex<Vec<usize>>>);

    impl Return for Returned {
        fn give_back(&self, conn: Box<LeanConn>) {
            self.0.lock().unwrap().push(conn.buf.capacity());
        }
    }

    impl Returned {
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    #[tokio::test]
    async fn a_connection_back_from_a_download_keeps_no_large_buffer() {
        let size = 4 * 1024 * 1024;
        let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").into_bytes();
        answer.resize(answer.len() + size, b'x');
        let (head, conn) = exchange(answer.leak()).await;
        let returned = Returned::default();
        let mut body = LeanBody::new(conn, &head, returned.clone());
        let mut read = 0;
        let mut largest = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            read += data.len();
            largest = largest.max(data.len());
        }
        assert_eq!(read, size);
        assert!(largest > IDLE_BUFFER, "reads grew to {largest} bytes");
        let kept = returned.0.lock().unwrap().clone();
        assert_eq!(kept.len(), 1);
        assert!(
            kept[0] <= IDLE_BUFFER,
            "an idle buffer of {} bytes",
            kept[0]
        );
    }

    /// A lean connection to a master that answers the first request (a GET with a
    /// `Host` and the proxy's token) with `answer`, written in two halves, then keeps
    /// the connection open.
    async fn exchange(answer: &'static [u8]) -> (Head, Box<LeanConn>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            while !seen.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1024];
                let n = tokio::io::AsyncReadExt::read(&mut s, &mut b).await.unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&b[..n]);
            }
            // The request's own fields, then the token the proxy adds as it sends.
            assert_eq!(
                String::from_utf8_lossy(&seen),
                "GET /a?b=c HTTP/1.1\r\nhost: master\r\nauthorization: token=t\r\n\r\n"
            );
            let (one, two) = answer.split_at(answer.len() / 2);
            s.write_all(one).await.unwrap();
            s.flush().await.unwrap();
            tokio::task::yield_now().await;
            s.write_all(two).await.unwrap();
            // Hold the connection until the other side closes it.
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut [0u8; 16]).await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let io = TokioIo::new(MaybeHttpsStream::Http(RouteStream::Tcp(TokioIo::new(tcp))));
        let mut conn = LeanConn::new(io);
        let request = Request::get("/a?b=c")
            .header("host", "master")
            .body(())
            .unwrap();
        let token = HeaderValue::from_static("token=t");
        conn.encode(&request.into_parts().0, Some(&token));
        std::future::poll_fn(|cx| conn.poll_write_head(cx))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let head = std::future::poll_fn(|cx| conn.poll_head(cx, false))
            .await
            .unwrap();
        (head, conn)
    }

    async fn read_body(
        answer: &'static [u8],
    ) -> (Result<Vec<u8>, Error>, Option<HeaderMap>, usize) {
        let (head, conn) = exchange(answer).await;
        let returned = Returned::default();
        let body = LeanBody::new(conn, &head, returned.clone());
        let result = body.collect().await;
        let count = returned.count();
        match result {
            Ok(collected) => {
                let trailers = collected.trailers().cloned();
                (Ok(collected.to_bytes().to_vec()), trailers, count)
            }
            Err(e) => (Err(e), None, count),
        }
    }

    #[tokio::test]
    async fn a_whole_answer_gives_its_connection_back() {
        let (data, _, back) =
            read_body(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world").await;
        assert_eq!(data.unwrap(), b"hello world");
        assert_eq!(back, 1);
        let (data, trailers, back) =
            read_body(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n").await;
        assert_eq!(data.unwrap(), b"hello");
        assert_eq!(trailers.unwrap()["x-t"], "1");
        assert_eq!(back, 1);
    }

    #[tokio::test]
    async fn a_connection_that_cannot_carry_another_request_is_closed() {
        // The master asked to close it.
        let (data, _, back) =
            read_body(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok").await;
        assert_eq!(data.unwrap(), b"ok");
        assert_eq!(back, 0);
        // Bytes after the answer: the connection is out of step.
        let (data, _, back) =
            read_body(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n")
                .await;
        assert_eq!(data.unwrap(), b"ok");
        assert_eq!(back, 0);
        // A broken chunked body fails, and its connection is dropped.
        let (data, _, back) =
            read_body(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX").await;
        assert!(matches!(data, Err(Error::Malformed(_))), "{data:?}");
        assert_eq!(back, 0);
    }

    #[tokio::test]
    async fn a_body_dropped_unfinished_does_not_give_its_connection_back() {
        let (head, conn) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart").await;
        let returned = Returned::default();
        let mut body = LeanBody::new(conn, &head, returned.clone());
        assert_eq!(body.size_hint().exact(), Some(100));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(b"part".starts_with(&first), "{first:?}");
        drop(body);
        assert_eq!(returned.count(), 0);
    }
}
