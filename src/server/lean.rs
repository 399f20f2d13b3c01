//! The server's own HTTP/1.1 path for the requests that make up nearly all of the
//! proxy's traffic: `GET`s with no body, framing or connection fields. It reads the
//! head straight from the connection's buffer, calls the connection's service, and
//! writes the answer's head and first body frame in one system call, with no dispatcher
//! state machine, `Incoming` body channel or per-request buffer bookkeeping in between.
//!
//! Why, measured with `scripts/ir-per-request` (instructions per small keep-alive `GET`):
//! 30,885 with hyper's server; 30,026 with this path alone; 28,790 once the request's
//! header map has room for the fields the request path adds (hyper sizes it exactly, so
//! the guard's loop marker reallocated it on every request); 27,354 once the smuggling
//! byte scan runs only on hyper's part of a connection (this path takes no request with
//! framing fields). Holding 2,000 idle connections also takes about 7 MiB less.
//!
//! Every connection starts here. A request this path does not take is handed over,
//! with the connection and every byte read so far, to hyper's server, which serves the
//! rest of the connection as before ([`Served::HandOver`]). This path takes a request
//! only when its head is complete within [`HEAD_LIMIT`] and httparse (with hyper's
//! settings) accepts it, and it is:
//! - `GET`, HTTP/1.1, in origin form (the target starts with `/`);
//! - without `Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`, `Expect`
//!   or `TE` (so: no body, no upgrade, no trailers, keep-alive);
//! - with a method, target, names and values that `http` accepts.
//!
//! Anything else (uploads, `HEAD`, tunnels, HTTP/1.0, a malformed or oversized head, a
//! smuggling shape) is hyper's, whose answers (400, 431, 414) and rules stay those of
//! the rest of the server. The head a request came in is still scanned by the
//! connection's `ScanIo`, and the request is tagged and counted by the same
//! `Connection` service as hyper's.
//!
//! The answer is written as hyper's server writes it ([`encode_head`], checked against
//! hyper byte for byte in the tests): lower-case names in the map's order, `date` added
//! when absent, `content-length` from the body's exact size, else chunked encoding, no
//! body for 204 and 304, `connection: close` when draining, and the connection closed
//! after an answer that asks for it. As with hyper, a client that closes its end while
//! its request is in flight (or its answer streams) drops the request, and bytes of a
//! next request that arrive meanwhile wait in the buffer.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{Connection, turn};
use crate::h1::{Field, content_length, has_token, is_chunked, range};
use crate::head_timeout::Answerable;
use crate::upstream::{ClientBody, IdleBody};

/// The largest request head (and read-ahead) this path holds; a head not complete
/// within it is handed to hyper, whose limit (`HYPER_BUF_FACTOR` times
/// `max_header_bytes`, at least 16 KiB) is never below it.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// The first read of a connection; later reads grow up to [`HEAD_LIMIT`] while they
/// fill the room.
const FIRST_READ: usize = 4 * 1024;
/// The least room a read is made into (when less is left, the buffer is reserved
/// again).
const MIN_ROOM: usize = 1024;
/// At most this many header fields (hyper's limit; more is hyper's 431).
const MAX_HEADERS: usize = 100;
/// Fields that take a request off this path: they frame a body, ask for an upgrade,
/// a `100 Continue` or trailers. (`Connection` does too, unless it only says
/// `keep-alive`, which HTTP/1.1 means anyway: [`only_keep_alive`].)
const HANDED_OVER: [HeaderName; 5] = [
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::EXPECT,
    http::header::TE,
];
/// A body frame this small is copied next to the head (one write, no vector).
const COPY_BELOW: usize = 1024;

/// How a connection left this path.
pub(super) enum Served<I, S> {
    /// It is over: closed by either side, drained, or failed (`Err`, to be logged).
    Closed(io::Result<()>),
    /// A request this path does not take: hyper serves the rest of the connection,
    /// starting with the bytes already read.
    HandOver {
        io: I,
        read: Bytes,
        service: Connection<S>,
    },
}

/// Serve `io` until it closes or a request needs hyper. `closing` is set at shutdown;
/// the caller re-polls this future when the drain signal arrives.
pub(super) async fn serve<I, S, B>(
    mut io: I,
    service: Connection<S>,
    closing: &AtomicBool,
    head_limit: usize,
) -> Served<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: tower::Service<Request<IdleBody<ClientBody>>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Answerable,
{
    let mut read = BytesMut::new();
    let mut reader = Reader { size: FIRST_READ };
    let mut head = Vec::new();
    loop {
        // A request head.
        let request = loop {
            if !read.is_empty() {
                match parse(&mut read, head_limit) {
                    Parsed::Request(request) => break request,
                    Parsed::Partial if read.len() < HEAD_LIMIT => {}
                    Parsed::Partial | Parsed::Hyper => {
                        return Served::HandOver {
                            io,
                            read: read.freeze(),
                            service,
                        };
                    }
                }
            }
            let filled = poll_fn(|cx| {
                if closing.load(Ordering::Relaxed) {
                    return Poll::Ready(None);
                }
                reader.poll_fill(&mut io, &mut read, cx).map(Some)
            })
            .await;
            match filled {
                // Drained while waiting (a partial head is dropped, as hyper does), or
                // the client closed.
                None | Some(Ok(0)) => return Served::Closed(Ok(())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Served::Closed(Err(e)),
            }
        };

        // Its answer, dropped if the client goes away meanwhile.
        let answer = {
            let mut called = pin!(service.call_with(request));
            let mut watch = Watch::new(&read);
            poll_fn(|cx| {
                if let Poll::Ready(answer) = called.as_mut().poll(cx) {
                    return Poll::Ready(Some(answer));
                }
                match watch.poll(&mut reader, &mut io, &mut read, cx) {
                    Poll::Ready(()) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await
        };
        let response = match answer {
            Some(Ok(response)) => response,
            // Gone (EOF or a read error), or the stack was not ready.
            _ => return Served::Closed(Ok(())),
        };

        // Written.
        let (mut parts, body) = response.into_parts();
        head.clear();
        let draining = closing.load(Ordering::Relaxed);
        let Ok(framing) = encode_head(&mut parts, &body, draining, &mut head) else {
            // A field hyper would refuse too (conflicting lengths): no answer, closed.
            return Served::Closed(Ok(()));
        };
        // The body is dropped at the end of the block: the answer is counted as over
        // (the head timeout starts).
        let written = {
            let mut body = pin!(body);
            write_body(
                &mut io,
                &mut read,
                &mut reader,
                &mut head,
                framing,
                body.as_mut(),
            )
            .await
        };
        match written {
            Ok(true) if !framing.last => {}
            Ok(_) => {
                let _ = io.shutdown().await;
                return Served::Closed(Ok(()));
            }
            Err(e) => return Served::Closed(Err(e)),
        }
        if head.capacity() > HEAD_LIMIT {
            head = Vec::new();
        }
        turn::answered();
    }
}

/// Reads into the connection's buffer, sizing reads as hyper does.
struct Reader {
    size: usize,
}

impl Reader {
    /// Read what has arrived, at most up to [`HEAD_LIMIT`] buffered bytes; `Ok(0)` is the
    /// end of the stream (or a full buffer, which callers never read into).
    fn poll_fill<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let want = self.size.min(HEAD_LIMIT - buf.len().min(HEAD_LIMIT));
        if want == 0 {
            return Poll::Ready(Ok(0));
        }
        // Read into the room left after the heads taken out so far while it is not too
        // small; `reserve` (which moves what is left to the front once the old heads
        // are dropped) only then.
        if buf.capacity() - buf.len() < want.min(MIN_ROOM) {
            buf.reserve(want);
        }
        let room = (buf.capacity() - buf.len()).min(want);
        let spare = &mut buf.spare_capacity_mut()[..room];
        let mut into = ReadBuf::uninit(spare);
        ready!(Pin::new(io).poll_read(cx, &mut into))?;
        let n = into.filled().len();
        // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity
        // (`ReadBuf::filled`), which directly follow the buffer's length.
        unsafe { buf.set_len(buf.len() + n) };
        if n == room && room == want && self.size < HEAD_LIMIT {
            self.size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// Watches a connection whose request is in flight for the client going away (hyper's
/// `mid_message_detect_eof`): while nothing is buffered, a read; its end (or failure)
/// is the client gone, and bytes (a pipelined request) are kept, ending the watch.
struct Watch {
    on: bool,
}

impl Watch {
    fn new(read: &BytesMut) -> Self {
        Self {
            on: read.is_empty(),
        }
    }

    /// Ready when the client is gone.
    fn poll<I: AsyncRead + Unpin>(
        &mut self,
        reader: &mut Reader,
        io: &mut I,
        read: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if !self.on {
            return Poll::Pending;
        }
        match reader.poll_fill(io, read, cx) {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.on = false;
                Poll::Pending
            }
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What [`parse`] found at the front of the buffer. (Not boxed: one is made per
/// request and moved once; a box would be an allocation per request.)
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A request this path takes (its head taken out of the buffer).
    Request(Request<ClientBody>),
    /// Not a whole head yet.
    Partial,
    /// A request (or bytes) for hyper; the buffer is as it was.
    Hyper,
}

/// Parse the request head at the front of `buf`, taking it out if this path serves it
/// (a head over `head_limit` bytes is hyper's: answered 431 by the guard).
fn parse(buf: &mut BytesMut, head_limit: usize) -> Parsed {
    // Left uninitialised (3 KiB): only the first `count` are written and read.
    let mut fields = [const { MaybeUninit::<Field>::uninit() }; MAX_HEADERS];
    let (len, target, count) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let bytes = &buf[..];
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            bytes,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => {
                let (Some("GET"), Some(1), Some(path)) =
                    (request.method, request.version, request.path)
                else {
                    return Parsed::Hyper;
                };
                if !path.starts_with('/') || len > head_limit {
                    return Parsed::Hyper;
                }
                for (field, header) in fields.iter_mut().zip(request.headers.iter()) {
                    let name = header.name;
                    if HANDED_OVER
                        .iter()
                        .any(|h| h.as_str().eq_ignore_ascii_case(name))
                        || (CONNECTION.as_str().eq_ignore_ascii_case(name)
                            && !only_keep_alive(header.value))
                    {
                        return Parsed::Hyper;
                    }
                    field.write(Field {
                        name: range(bytes, header.name.as_bytes()),
                        value: range(bytes, header.value),
                    });
                }
                (len, range(bytes, path.as_bytes()), request.headers.len())
            }
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Hyper,
        }
    };
    // Checked on the buffer before the head is taken out, so that a refusal leaves it
    // whole for hyper. The head's bytes are shared by the target and the values.
    let head = buf.split_to(len).freeze();
    let built = (|| {
        let uri = http::Uri::from_maybe_shared(head.slice(target.0..target.1)).ok()?;
        // Room for the fields the request path adds (the loop marker, the master's
        // `Host` when absent): a full map reallocates on any insert.
        let mut headers = HeaderMap::with_capacity(count + 2);
        for field in &fields[..count] {
            // SAFETY: the loop above wrote the first `count` (the number parsed).
            let field = unsafe { field.assume_init_ref() };
            let name = HeaderName::from_bytes(&head[field.name.0..field.name.1]).ok()?;
            let value =
                HeaderValue::from_maybe_shared(head.slice(field.value.0..field.value.1)).ok()?;
            headers.append(name, value);
        }
        let mut request = Request::new(ClientBody::Empty);
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        Some(request)
    })();
    match built {
        Some(request) => Parsed::Request(request),
        None => {
            // Put the head back in front of the rest (rare: hyper answers 400).
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Hyper
        }
    }
}

/// Whether a `Connection` value lists `keep-alive` and nothing else (what Python's
/// `requests`, browsers and `ab -k` send).
fn only_keep_alive(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .all(|t| t.trim_ascii().eq_ignore_ascii_case(b"keep-alive"))
}

/// How an answer's body is framed, and whether the connection ends after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Framing {
    body: Encoding,
    last: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Exactly this many bytes (0: none written, the body is not polled).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A field value hyper's encoder cannot send (`Content-Length` values that differ or do
/// not parse, framing fields after the length is set): the answer is not sent.
#[derive(Debug)]
struct Unsendable;

/// Write the answer's head to `out` as hyper's server does for a `GET` over HTTP/1.1
/// (`hyper::proto::h1::role::Server::encode`), and say how its body is framed.
/// `draining`: keep-alive is off (`connection: close` is added).
fn encode_head<B: Body>(
    parts: &mut http::response::Parts,
    body: &B,
    draining: bool,
    out: &mut Vec<u8>,
) -> Result<Framing, Unsendable> {
    let status = parts.status;
    // The body as hyper sees it: none when it is already over, else its exact length
    // if known.
    let length = if body.is_end_stream() {
        None
    } else {
        Some(body.size_hint().exact())
    };
    let mut last = status == StatusCode::SWITCHING_PROTOCOLS || draining;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        // hyper sends no 1xx answers from a service: a bare 500, and the connection ends.
        out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
        finish_head(out, false);
        return Ok(Framing {
            body: Encoding::Length(0),
            last: true,
        });
    }
    if draining {
        match parts.headers.entry(CONNECTION) {
            http::header::Entry::Occupied(mut e) => {
                if !e.iter().any(|v| has_token(v, "close")) {
                    e.append(HeaderValue::from_static("close"));
                }
            }
            http::header::Entry::Vacant(e) => {
                e.insert(HeaderValue::from_static("close"));
            }
        }
    }
    let can_body = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        && status != StatusCode::SWITCHING_PROTOCOLS;

    out.reserve(30 + parts.headers.len() * 32);
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match reason {
            Some(reason) => out.extend_from_slice(reason.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }

    let mut encoding = Encoding::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut prev_len = None;
    // A field whose values are joined on one line (the framing ones), and whether its
    // last value named `chunked`.
    let mut open: Option<HeaderName> = None;
    let mut must_chunk = false;
    let close_line = |out: &mut Vec<u8>, open: &mut Option<HeaderName>, must_chunk: bool| {
        if open.take().is_some() {
            out.extend_from_slice(if must_chunk {
                b", chunked\r\n"
            } else {
                b"\r\n"
            });
        }
    };
    for (name, value) in &parts.headers {
        let continuing = open.as_ref() == Some(name);
        if !continuing {
            close_line(out, &mut open, must_chunk);
        }
        match *name {
            CONTENT_LENGTH => {
                if wrote_len && !continuing {
                    return Err(Unsendable);
                }
                match length {
                    Some(Some(known)) if !continuing => {
                        encoding = Encoding::Length(known);
                        line_start(out, "content-length: ", value);
                        open = Some(CONTENT_LENGTH);
                        must_chunk = false;
                        wrote_len = true;
                    }
                    Some(Some(_)) => {}
                    Some(None) => {
                        let len = content_length(value).ok_or(Unsendable)?;
                        match prev_len {
                            Some(prev) if prev != len => return Err(Unsendable),
                            Some(_) => {}
                            None => {
                                encoding = Encoding::Length(len);
                                line_start(out, "content-length: ", value);
                                open = Some(CONTENT_LENGTH);
                                must_chunk = false;
                                wrote_len = true;
                                prev_len = Some(len);
                            }
                        }
                    }
                    // No body to send: the field is left out (`content-length: 0` below).
                    None => {}
                }
                continue;
            }
            TRANSFER_ENCODING => {
                if wrote_len && !continuing {
                    return Err(Unsendable);
                }
                if !can_body {
                    continue;
                }
                wrote_len = true;
                must_chunk = !is_chunked(value);
                if continuing {
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(value.as_bytes());
                } else {
                    encoding = Encoding::Chunked;
                    line_start(out, "transfer-encoding: ", value);
                    open = Some(TRANSFER_ENCODING);
                }
                continue;
            }
            CONNECTION | TRAILER => {
                if *name == TRAILER && !can_body {
                    continue;
                }
                if *name == CONNECTION && has_token(value, "close") {
                    last = true;
                }
                if continuing {
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(value.as_bytes());
                } else {
                    out.extend_from_slice(name.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value.as_bytes());
                    open = Some(name.clone());
                    must_chunk = false;
                }
                continue;
            }
            DATE => wrote_date = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    close_line(out, &mut open, must_chunk);

    if !wrote_len {
        encoding = match length {
            Some(None) if can_body => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Encoding::Chunked
            }
            Some(None) => Encoding::Length(0),
            None | Some(Some(0)) => {
                if can_body {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Encoding::Length(0)
            }
            Some(Some(len)) => {
                if can_body {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa(len, &mut [0; 20]));
                    out.extend_from_slice(b"\r\n");
                    Encoding::Length(len)
                } else {
                    Encoding::Length(0)
                }
            }
        };
    }
    if !can_body {
        encoding = Encoding::Length(0);
    }
    finish_head(out, !wrote_date);
    Ok(Framing {
        body: encoding,
        last,
    })
}

fn line_start(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// End the head, with the `date` field first when `date`.
fn finish_head(out: &mut Vec<u8>, date: bool) {
    if date {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n\r\n");
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The current time as an HTTP date, made once per second per thread (as hyper caches
/// it).
fn http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

/// Write `head`, then the body as `framing` says, watching for the client going away
/// while the body waits. `Ok(true)`: the answer went out whole and the connection may
/// carry another; `Ok(false)`: it must close (the body failed or did not match its
/// length, or the client went away).
async fn write_body<I, B>(
    io: &mut I,
    read: &mut BytesMut,
    reader: &mut Reader,
    head: &mut Vec<u8>,
    framing: Framing,
    mut body: Pin<&mut B>,
) -> io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
{
    let mut remaining = match framing.body {
        Encoding::Length(0) => {
            write_all(io, &mut [IoSlice::new(head)]).await?;
            return Ok(true);
        }
        Encoding::Length(n) => Some(n),
        Encoding::Chunked => None,
    };
    let mut pending = true;
    let mut watch = Watch::new(read);
    loop {
        // The next frame; while it is not there, the head goes out on its own.
        let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if std::mem::take(&mut pending) {
                    write_all(io, &mut [IoSlice::new(head)]).await?;
                }
                let next = poll_fn(|cx| {
                    if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                        return Poll::Ready(Some(frame));
                    }
                    match watch.poll(reader, io, read, cx) {
                        Poll::Ready(()) => Poll::Ready(None),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await;
                match next {
                    Some(frame) => frame,
                    None => return Ok(false),
                }
            }
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: not sent (hyper sends them only to a client that asked
                // with `TE: trailers`, which this path never serves).
                Err(_) => continue,
            },
            Some(Err(_)) | None => {
                // Over (or failed): a chunked body gets its last chunk; a body short of
                // its length, or one that failed, leaves the connection unusable.
                let whole = match remaining {
                    None => {
                        let failed = matches!(frame, Some(Err(_)));
                        if !failed {
                            write_with_head(io, head, &mut pending, &[b"0\r\n\r\n"]).await?;
                        }
                        !failed
                    }
                    Some(left) => {
                        write_with_head(io, head, &mut pending, &[]).await?;
                        left == 0
                    }
                };
                return Ok(whole);
            }
        };
        if data.is_empty() {
            continue;
        }
        match &mut remaining {
            Some(left) => {
                let take = (data.len() as u64).min(*left) as usize;
                write_with_head(io, head, &mut pending, &[&data[..take]]).await?;
                *left -= take as u64;
                if take < data.len() {
                    // More than its length: the rest is not sent, the connection ends.
                    return Ok(false);
                }
                if *left == 0 {
                    return Ok(true);
                }
                if body.is_end_stream() {
                    // Short of its length.
                    return Ok(false);
                }
            }
            None => {
                let mut size = [0u8; 18];
                let size = chunk_size(data.len(), &mut size);
                // The last chunk goes with the last data, when the body says so.
                let end = body.is_end_stream();
                let tail: &[u8] = if end { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                write_with_head(io, head, &mut pending, &[size, &data, tail]).await?;
                if end {
                    return Ok(true);
                }
            }
        }
    }
}

/// `len` as a chunk-size line (upper-case hex, as hyper writes it).
fn chunk_size(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut at = 16;
    let mut n = len;
    loop {
        at -= 1;
        buf[at] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[at..]
}

/// Write `parts`, after the head if it has not gone out yet (`pending`), in one
/// vectored write (when they are small, appended to the head instead).
async fn write_with_head<I: AsyncWrite + Unpin>(
    io: &mut I,
    head: &mut Vec<u8>,
    pending: &mut bool,
    parts: &[&[u8]],
) -> io::Result<()> {
    let with_head = std::mem::take(pending);
    let size: usize = parts.iter().map(|p| p.len()).sum();
    if with_head && size < COPY_BELOW {
        for p in parts {
            head.extend_from_slice(p);
        }
        return write_all(io, &mut [IoSlice::new(head)]).await;
    }
    let mut slices = [IoSlice::new(&[]); 4];
    let mut n = 0;
    let head: &[u8] = if with_head { head } else { &[] };
    for p in std::iter::once(head).chain(parts.iter().copied()) {
        if !p.is_empty() {
            slices[n] = IoSlice::new(p);
            n += 1;
        }
    }
    write_all(io, &mut slices[..n]).await
}

/// Write every byte of `bufs`.
async fn write_all<I: AsyncWrite + Unpin>(
    io: &mut I,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use http_body::{Frame, SizeHint};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::head_timeout::{AnswerMark, Exchanges};
    use crate::proxy::upgrade::Tunnels;
    use crate::server::BodyLimits;

    /// A response body: its frames, and whether it tells its exact size.
    struct Frames {
        frames: VecDeque<Bytes>,
        exact: bool,
        _mark: Option<AnswerMark>,
    }

    impl Frames {
        fn new(frames: &[&'static str], exact: bool) -> Self {
            Self {
                frames: frames
                    .iter()
                    .map(|f| Bytes::from_static(f.as_bytes()))
                    .collect(),
                exact,
                _mark: None,
            }
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.frames.pop_front().map(|f| Ok(Frame::data(f))))
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty()
        }

        fn size_hint(&self) -> SizeHint {
            if self.exact {
                SizeHint::with_exact(self.frames.iter().map(|f| f.len() as u64).sum())
            } else {
                SizeHint::default()
            }
        }
    }

    impl Answerable for Frames {
        fn carry(&mut self, mark: AnswerMark) {
            self._mark = Some(mark);
        }
    }

    type Make = Arc<dyn Fn() -> Response<Frames> + Send + Sync>;

    /// The answers the tests compare: one per shape hyper's encoder treats apart.
    fn shapes() -> Vec<(&'static str, Make)> {
        fn make(
            status: u16,
            headers: &'static [(&'static str, &'static str)],
            frames: &'static [&'static str],
            exact: bool,
        ) -> Make {
            Arc::new(move || {
                let mut r = Response::new(Frames::new(frames, exact));
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                for (n, v) in headers {
                    r.headers_mut().append(*n, HeaderValue::from_static(v));
                }
                r
            })
        }
        vec![
            (
                "exact body",
                make(200, &[("content-type", "text/plain")], &["okay"], true),
            ),
            (
                "length field",
                make(200, &[("content-length", "4")], &["ok", "ay"], false),
            ),
            (
                "length field, exact body",
                make(200, &[("content-length", "4")], &["okay"], true),
            ),
            (
                "streamed",
                make(
                    200,
                    &[("x-a", "1")],
                    &["ab", "", "cde", "twelve bytes"],
                    false,
                ),
            ),
            ("large frame", make(200, &[], large(), false)),
            ("empty", make(200, &[], &[], true)),
            ("no content", make(204, &[("x-a", "1")], &[], true)),
            (
                "not modified",
                make(
                    304,
                    &[("content-length", "10"), ("etag", "\"e\"")],
                    &[],
                    true,
                ),
            ),
            (
                "not found",
                make(
                    404,
                    &[("set-cookie", "a=1"), ("set-cookie", "b=2")],
                    &["gone"],
                    true,
                ),
            ),
            (
                "own date",
                make(
                    200,
                    &[("date", "Thu, 01 Jan 1970 00:00:00 GMT")],
                    &["x"],
                    true,
                ),
            ),
            (
                "connection close",
                make(502, &[("connection", "close")], &["bad"], true),
            ),
            (
                "chunked field",
                make(200, &[("transfer-encoding", "chunked")], &["a", "b"], false),
            ),
            ("teapot", make(418, &[], &["t"], true)),
            (
                "own reason",
                Arc::new(|| {
                    let mut r = make(503, &[], &["busy"], true)();
                    r.extensions_mut()
                        .insert(hyper::ext::ReasonPhrase::from_static(b"Gone Fishing"));
                    r
                }),
            ),
        ]
    }

    /// One frame larger than the head's buffer (not copied behind the head).
    fn large() -> &'static [&'static str] {
        let frame: &'static str = Box::leak("0123456789abcdef".repeat(70).into_boxed_str());
        Box::leak(vec![frame].into_boxed_slice())
    }

    fn connection<F, Fut>(
        answer: F,
    ) -> Connection<
        impl tower::Service<
            Request<IdleBody<ClientBody>>,
            Response = Response<Frames>,
            Error = Infallible,
            Future = Fut,
        >,
    >
    where
        F: Fn(Request<IdleBody<ClientBody>>) -> Fut,
        Fut: Future<Output = Result<Response<Frames>, Infallible>>,
    {
        let (drain, _) = tokio::sync::watch::channel(());
        Connection::new(
            tower::service_fn(answer),
            Exchanges::new(),
            BodyLimits {
                idle_timeout: std::time::Duration::from_secs(5),
                min_rate: 0,
                tunnels: Tunnels::new(drain),
            },
        )
    }

    /// Read one whole answer (framed by its head) from `client`; what follows it stays
    /// in `rest`.
    async fn next_answer(client: &mut DuplexStream, rest: &mut Vec<u8>) -> Vec<u8> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = response.parse(rest) {
                let field = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let code = response.code.unwrap();
                let end = if code == 204 || code == 304 {
                    Some(len)
                } else if let Some(n) = field("content-length") {
                    let end = len + n.parse::<usize>().unwrap();
                    (rest.len() >= end).then_some(end)
                } else {
                    rest[len..]
                        .windows(5)
                        .position(|w| w == b"0\r\n\r\n")
                        .map(|at| len + at + 5)
                };
                if let Some(end) = end {
                    let answer = rest[..end].to_vec();
                    rest.drain(..end);
                    return answer;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before the answer was whole: {:?}",
                String::from_utf8_lossy(rest)
            );
            rest.extend_from_slice(&chunk[..n]);
        }
    }

    async fn read_answer(client: &mut DuplexStream) -> Vec<u8> {
        let mut rest = Vec::new();
        let answer = next_answer(client, &mut rest).await;
        assert!(
            rest.is_empty(),
            "more than one answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
        answer
    }

    /// The date's value replaced, for comparing.
    fn undated(answer: &[u8]) -> String {
        let text = String::from_utf8_lossy(answer).into_owned();
        match text.find("\r\ndate: ") {
            Some(at) if !text[at..].starts_with("\r\ndate: Thu, 01 Jan 1970") => {
                format!("{}\r\ndate: <now>{}", &text[..at], &text[at + 8 + 29..])
            }
            _ => text,
        }
    }

    const GET: &[u8] = b"GET /v2/apps?x=1 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";

    /// Each answer, as hyper's server writes it and as this path writes it: the same
    /// bytes (the date's value aside), and the same decision to keep the connection.
    #[tokio::test]
    async fn answers_are_written_byte_for_byte_as_hyper_writes_them() {
        for (name, make) in shapes() {
            // hyper.
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let m = make.clone();
            let service = hyper::service::service_fn(move |_req| {
                let m = m.clone();
                async move { Ok::<_, Infallible>(m()) }
            });
            let served = tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), service),
            );
            client.write_all(GET).await.unwrap();
            let by_hyper = read_answer(&mut client).await;
            drop(client);
            let _ = served.await;

            // This path.
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let m = make.clone();
            let closing = AtomicBool::new(false);
            let conn = connection(move |_req| {
                let m = m.clone();
                async move { Ok::<_, Infallible>(m()) }
            });
            let serving = serve(server, conn, &closing, 8192);
            let mut serving = pin!(serving);
            client.write_all(GET).await.unwrap();
            let mut ended = None;
            let ours = {
                let mut read = pin!(read_answer(&mut client));
                loop {
                    tokio::select! {
                        answer = &mut read => break answer,
                        served = serving.as_mut(), if ended.is_none() => ended = Some(served),
                    }
                }
            };
            assert_eq!(undated(&ours), undated(&by_hyper), "{name}");
            assert!(undated(&ours).contains("date: "), "{name}: no date");
            // Kept open unless the answer said `close`.
            let closes = name == "connection close";
            if ended.is_none() {
                if let Poll::Ready(served) =
                    std::future::poll_fn(|cx| Poll::Ready(serving.as_mut().poll(cx))).await
                {
                    ended = Some(served);
                }
            }
            assert_eq!(
                ended.is_some(),
                closes,
                "{name}: closed or kept open wrongly"
            );
            let served = match ended {
                Some(served) => served,
                None => {
                    drop(client);
                    serving.await
                }
            };
            assert!(matches!(served, Served::Closed(Ok(()))), "{name}");
        }
    }

    /// Two requests in one write (the second with `Connection: keep-alive`, which this
    /// path takes too): both answered, in order, on the one connection.
    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let closing = AtomicBool::new(false);
        let conn = connection(|req: Request<IdleBody<ClientBody>>| async move {
            let path: &'static str = Box::leak(req.uri().path().to_owned().into_boxed_str());
            Ok::<_, Infallible>(Response::new(Frames::new(&[path], true)))
        });
        let served = serve(server, conn, &closing, 8192);
        let client_side = async {
            client
                .write_all(
                    b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
                      GET /two HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n",
                )
                .await
                .unwrap();
            let mut rest = Vec::new();
            let one = next_answer(&mut client, &mut rest).await;
            let two = next_answer(&mut client, &mut rest).await;
            drop(client);
            (one, two)
        };
        let mut served = pin!(served);
        let (one, two) = tokio::select! {
            answers = client_side => answers,
            left = served.as_mut() => panic!(
                "the connection left this path before both answers (handed over: {})",
                matches!(left, Served::HandOver { .. })
            ),
        };
        let served = served.await;
        assert!(String::from_utf8_lossy(&one).ends_with("\r\n\r\n/one"));
        assert!(String::from_utf8_lossy(&two).ends_with("\r\n\r\n/two"));
        assert!(matches!(served, Served::Closed(Ok(()))));
    }

    /// A request this path does not take goes to hyper with every byte the client sent
    /// (a request answered before it aside), and the stack never sees it here.
    #[tokio::test]
    async fn other_requests_are_handed_over_with_every_byte_read() {
        let big = format!(
            "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(9000)
        );
        let huge = format!(
            "GET /huge HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(20_000)
        );
        let cases: Vec<String> = vec![
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: x-h\r\n\r\n"
                .into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: \r\n\r\n".into(),
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nte: trailers\r\n\r\n".into(),
            "GET /x HTTP/1.0\r\nHost: a\r\n\r\n".into(),
            "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "GET http://elsewhere/x HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n".into(),
            "GET /x HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n".into(),
            "GET /x y HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "\u{1}garbage\r\n\r\n".into(),
            big,
            huge[..HEAD_LIMIT + 100].to_owned(),
        ];
        for case in cases {
            for behind_a_get in [false, true] {
                let (mut client, server) = tokio::io::duplex(64 * 1024);
                let closing = AtomicBool::new(false);
                let calls = Arc::new(AtomicUsize::new(0));
                let counted = calls.clone();
                let conn = connection(move |_req| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async { Ok::<_, Infallible>(Response::new(Frames::new(&["ok"], true))) }
                });
                let sent = if behind_a_get {
                    format!("GET /first HTTP/1.1\r\nHost: a\r\n\r\n{case}")
                } else {
                    case.clone()
                };
                let label = &case[..case.len().min(50)];
                let served = serve(server, conn, &closing, 8192);
                let client_side = async {
                    client.write_all(sent.as_bytes()).await.unwrap();
                    if behind_a_get {
                        read_answer(&mut client).await;
                    }
                    client
                };
                let (_client, served) = tokio::join!(client_side, served);
                let Served::HandOver { read, .. } = served else {
                    panic!("{label:?} (behind a GET: {behind_a_get}): not handed over");
                };
                // Every byte read (a head longer than the buffer: its start, the rest
                // still unread on the connection).
                if case.len() <= HEAD_LIMIT {
                    assert_eq!(read, case.as_bytes(), "{label:?}");
                } else {
                    assert!(
                        read.len() >= HEAD_LIMIT / 2,
                        "{label:?}: {} bytes",
                        read.len()
                    );
                    assert!(case.as_bytes().starts_with(&read), "{label:?}");
                }
                assert_eq!(
                    calls.load(Ordering::Relaxed),
                    usize::from(behind_a_get),
                    "{label:?}"
                );
            }
        }
    }

    /// A client that closes while its request is in flight: the request is dropped (as
    /// hyper drops it), not left running.
    #[tokio::test]
    async fn a_request_whose_client_goes_away_is_dropped() {
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let (called_tx, called_rx) = tokio::sync::oneshot::channel::<()>();
        let called_tx = std::sync::Mutex::new(Some(called_tx));
        let flag = dropped.clone();
        let conn = connection(move |_req| {
            if let Some(tx) = called_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            let guard = Dropped(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Frames::new(&[], true)))
            }
        });
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let closing = AtomicBool::new(false);
        client.write_all(GET).await.unwrap();
        let served = serve(server, conn, &closing, 8192);
        let client_side = async {
            called_rx.await.unwrap();
            drop(client);
        };
        let ((), served) = tokio::join!(client_side, served);
        assert!(matches!(served, Served::Closed(Ok(()))));
        assert!(
            dropped.load(Ordering::SeqCst),
            "the request was not dropped"
        );
    }

    /// Shutdown: an idle connection ends at once; a request in flight is answered with
    /// `connection: close`, then the connection ends.
    #[tokio::test]
    async fn draining_closes_idle_connections_and_ends_the_one_in_flight_after_its_answer() {
        let closing = AtomicBool::new(false);
        let (_client, server) = tokio::io::duplex(1024);
        let conn = connection(|_req| async {
            Ok::<_, Infallible>(Response::new(Frames::new(&["ok"], true)))
        });
        let mut idle = pin!(serve(server, conn, &closing, 8192));
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(idle.as_mut().poll(cx).is_ready())).await;
        assert!(!polled, "an idle connection ended before shutdown");
        closing.store(true, Ordering::Relaxed);
        assert!(matches!(idle.await, Served::Closed(Ok(()))));

        let closing = AtomicBool::new(false);
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let (called_tx, called_rx) = tokio::sync::oneshot::channel::<()>();
        let release_rx = std::sync::Mutex::new(Some((release_rx, called_tx)));
        let conn = connection(move |_req| {
            let (wait, called) = release_rx.lock().unwrap().take().unwrap();
            let _ = called.send(());
            async move {
                let _ = wait.await;
                Ok::<_, Infallible>(Response::new(Frames::new(&["ok"], true)))
            }
        });
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(GET).await.unwrap();
        let served = serve(server, conn, &closing, 8192);
        let client_side = async {
            // Shut down once the request is in flight (the stack has been called).
            called_rx.await.unwrap();
            closing.store(true, Ordering::Relaxed);
            release_tx.send(()).unwrap();
            let answer = read_answer(&mut client).await;
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            (answer, rest)
        };
        let ((answer, rest), served) = tokio::join!(client_side, served);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        assert!(rest.is_empty());
        assert!(matches!(served, Served::Closed(Ok(()))));
    }
}
