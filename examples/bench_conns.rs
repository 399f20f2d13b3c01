//! Connection helpers for `scripts/bench`, the one-command comparison with nginx and
//! HAProxy. Plain blocking sockets on loopback; nothing here is part of the proxy.
//!
//! - `free-port`: print a TCP port on 127.0.0.1 that was free a moment ago.
//! - `hold ADDR N PATH [AUTHORIZATION]`: open `N` keep-alive connections to `ADDR`, send
//!   one `GET PATH` on each and read its response, then keep them all open, idle, until
//!   standard input closes. Prints `holding OK N` once all are open (OK = the number that
//!   got a 200).
//! - `startup RUNS PATH -- CMD ARGS...`: start `CMD` `RUNS` times (the text `{port}` in
//!   `ARGS` becomes a free port) and time each start until `GET PATH` on that port is
//!   answered with 200. Prints `startup_ms MIN MEDIAN MAX`.
//! - `sink PORT AUTHORIZATION`: an upstream for upload runs on 127.0.0.1:`PORT` that reads
//!   each request body to the end (by `Content-Length` or chunked; it answers
//!   `Expect: 100-continue` at once), discards it, and
//!   answers 200 with the byte count, or 401 when `Authorization` is not exactly
//!   `AUTHORIZATION`. One thread per connection, keep-alive, until killed.
//! - `relay PORT UPSTREAM AUTHORIZATION`: the floor for any proxy on this machine, not a
//!   proxy. On 127.0.0.1:`PORT`, one event loop per core (each a current-thread tokio
//!   runtime accepting from the same listener); each client connection gets its own
//!   upstream connection to `UPSTREAM`, and the relay does only the four system calls
//!   that every proxy of a request and its answer must do: one read of the request, one
//!   write of it to the upstream with `Authorization: AUTHORIZATION` put in after the
//!   request line, one read of the answer, one write of it back. No parsing, no pool, no
//!   log, no timeouts: it assumes that each request and each answer arrives in one read,
//!   which holds for wrk's small GETs and the upstream's 4-byte answers, and nothing else.
//!   With `turn` last, its loops are the proxy's own serving runtimes
//!   (`server::turn::runtime`), which yield the core after a long turn.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long `startup` waits for one start before giving up.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);

/// The pause between two attempts while waiting for a process to serve.
const POLL_PAUSE: Duration = Duration::from_micros(200);

/// The largest response head `read_response` accepts.
const MAX_HEAD: usize = 64 * 1024;

/// The sink's read buffer: large, so that the sink spends little CPU per byte and the
/// contender in front of it is what the upload run measures.
const SINK_BUF: usize = 256 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("free-port") => free_port().map(|p| println!("{p}")),
        Some("hold") => hold(&args[1..]),
        Some("startup") => startup(&args[1..]),
        Some("sink") => sink(&args[1..]),
        Some("relay") => relay(&args[1..]),
        _ => Err(
            "usage: bench_conns free-port | hold ADDR N PATH [AUTHORIZATION] | \
             startup RUNS PATH -- CMD ARGS... | sink PORT AUTHORIZATION | \
             relay PORT UPSTREAM AUTHORIZATION [turn]"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_conns: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Send `GET path` on `stream` and read the whole response; returns its status.
fn get(stream: &mut TcpStream, host: &str, path: &str, auth: Option<&str>) -> Result<u16> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(auth) = auth {
        req.push_str(&format!("Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    read_response(stream)
}

/// Read one response with a `Content-Length` body; returns its status.
fn read_response(stream: &mut TcpStream) -> Result<u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err("response head too large".into());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .ok_or("no status in the response")?
        .parse()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or("the response has no Content-Length")?;
    let mut left = (head_end + length).saturating_sub(buf.len());
    while left > 0 {
        let n = stream.read(&mut chunk[..left.min(4096)])?;
        if n == 0 {
            return Err("connection closed inside the response body".into());
        }
        left -= n;
    }
    Ok(status)
}

fn hold(args: &[String]) -> Result<()> {
    let [addr, n, path, rest @ ..] = args else {
        return Err("usage: hold ADDR N PATH [AUTHORIZATION]".into());
    };
    let addr: SocketAddr = addr.parse()?;
    let n: usize = n.parse()?;
    let auth = rest.first().map(String::as_str);
    let host = addr.to_string();
    let mut open = Vec::with_capacity(n);
    let mut ok = 0;
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        if get(&mut stream, &host, path, auth)? == 200 {
            ok += 1;
        }
        open.push(stream);
    }
    println!("holding {ok} {n}");
    std::io::stdout().flush()?;
    // Idle until the caller closes our standard input.
    let mut sink = String::new();
    while std::io::stdin().lock().read_line(&mut sink)? > 0 {
        sink.clear();
    }
    drop(open);
    Ok(())
}

fn startup(args: &[String]) -> Result<()> {
    let [runs, path, dashes, cmd, cmd_args @ ..] = args else {
        return Err("usage: startup RUNS PATH -- CMD ARGS...".into());
    };
    if dashes != "--" {
        return Err("startup: expected -- before the command".into());
    }
    let runs: usize = runs.parse()?;
    if runs == 0 {
        return Err("startup: RUNS must be at least 1".into());
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let host = addr.to_string();
        let start = Instant::now();
        let mut child = Command::new(cmd)
            .args(
                cmd_args
                    .iter()
                    .map(|a| a.replace("{port}", &port.to_string())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let served = loop {
            if start.elapsed() > STARTUP_LIMIT {
                break None;
            }
            if let Ok(mut stream) = TcpStream::connect(addr)
                && matches!(get(&mut stream, &host, path, None), Ok(200))
            {
                break Some(start.elapsed());
            }
            std::thread::sleep(POLL_PAUSE);
        };
        let _ = child.kill();
        let _ = child.wait();
        times.push(served.ok_or("the command did not serve within 10 s")?);
    }
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "startup_ms {:.1} {:.1} {:.1}",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    Ok(())
}

fn sink(args: &[String]) -> Result<()> {
    let [port, auth] = args else {
        return Err("usage: sink PORT AUTHORIZATION".into());
    };
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>()?))?;
    for stream in listener.incoming() {
        let stream = stream?;
        let auth = auth.clone();
        std::thread::spawn(move || {
            if let Err(e) = sink_connection(stream, &auth) {
                eprintln!("bench_conns sink: {e}");
            }
        });
    }
    Ok(())
}

/// Serve one keep-alive connection of the sink until the peer closes it.
fn sink_connection(stream: TcpStream, auth: &str) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = std::io::BufReader::with_capacity(SINK_BUF, stream);
    let mut line = String::new();
    loop {
        // The head: request line, then fields up to the blank line.
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut length, mut chunked, mut authorized, mut expect) = (0u64, false, false, false);
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                return Err("connection closed inside a request head".into());
            }
            let field = line.trim_end();
            if field.is_empty() {
                break;
            }
            let Some((name, value)) = field.split_once(':') else {
                return Err("a request head line without a colon".into());
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse()?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("authorization") {
                authorized = value == auth;
            } else if name.eq_ignore_ascii_case("expect") {
                expect = value.eq_ignore_ascii_case("100-continue");
            }
        }
        if expect {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let got = if chunked {
            let mut total = 0;
            loop {
                line.clear();
                input.read_line(&mut line)?;
                let size = line.trim_end().split(';').next().unwrap_or("");
                let size = u64::from_str_radix(size, 16)?;
                if size == 0 {
                    // Trailers (none expected) up to the blank line.
                    loop {
                        line.clear();
                        if input.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break total;
                }
                total += discard(&mut input, size)?;
                line.clear();
                input.read_line(&mut line)?;
            }
        } else {
            discard(&mut input, length)?
        };
        let (status, body) = if authorized {
            ("200 OK", got.to_string())
        } else {
            ("401 Unauthorized", String::new())
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
}

/// Read and drop exactly `n` bytes of `input` (straight from its buffer, no copy).
fn discard(input: &mut impl BufRead, n: u64) -> Result<u64> {
    let mut left = n;
    while left > 0 {
        let available = input.fill_buf()?.len();
        if available == 0 {
            return Err("connection closed inside a request body".into());
        }
        let take = available.min(usize::try_from(left).unwrap_or(usize::MAX));
        input.consume(take);
        left -= take as u64;
    }
    Ok(n)
}

/// The relay's buffers: larger than any request or answer it is meant for.
const RELAY_BUF: usize = 16 * 1024;

fn relay(args: &[String]) -> Result<()> {
    let (turn, args) = match args {
        [rest @ .., last] if last == "turn" => (true, rest),
        _ => (false, args),
    };
    let [port, upstream, auth] = args else {
        return Err("usage: relay PORT UPSTREAM AUTHORIZATION [turn]".into());
    };
    let upstream: SocketAddr = upstream.parse()?;
    let header: &'static [u8] = format!("Authorization: {auth}\r\n").leak().as_bytes();
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>()?))?;
    listener.set_nonblocking(true)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loops: Vec<_> = (0..cores)
        .map(|_| {
            let listener = listener.try_clone()?;
            Ok(std::thread::spawn(move || {
                relay_loop(listener, upstream, header, turn)
            }))
        })
        .collect::<Result<_>>()?;
    for l in loops {
        l.join().map_err(|_| "a relay loop panicked")??;
    }
    Ok(())
}

fn relay_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    header: &'static [u8],
    turn: bool,
) -> std::io::Result<()> {
    let rt = if turn {
        dcos_token_proxy::server::turn::runtime().build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(async move {
                // A connection that fails just ends; wrk counts it as an error.
                let _ = relay_connection(client, upstream, header, turn).await;
            });
        }
    })
}

async fn relay_connection(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    header: &[u8],
    turn: bool,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    client.set_nodelay(true)?;
    let mut up = tokio::net::TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut request = vec![0u8; RELAY_BUF];
    let mut out = Vec::with_capacity(RELAY_BUF + header.len());
    let mut answer = vec![0u8; RELAY_BUF];
    loop {
        let n = client.read(&mut request).await?;
        if n == 0 {
            return Ok(());
        }
        let line = request[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(n, |i| i + 1);
        out.clear();
        out.extend_from_slice(&request[..line]);
        out.extend_from_slice(header);
        out.extend_from_slice(&request[line..n]);
        up.write_all(&out).await?;
        let m = up.read(&mut answer).await?;
        if m == 0 {
            return Ok(());
        }
        client.write_all(&answer[..m]).await?;
        if turn {
            dcos_token_proxy::server::turn::answered();
        }
    }
}
