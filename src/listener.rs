//! Where the proxy listens: a TCP address or a Unix socket, behind one type.
//!
//! A Unix socket is created with mode 0600 and never exists with looser permissions:
//! it is bound inside a fresh 0700 directory next to the final path, restricted to
//! 0600, then renamed into place (which also replaces a stale socket atomically). A
//! path that is not a socket, or a socket something still answers on, is refused. The
//! socket file is removed when the listener is dropped, if it is still ours.
//!
//! The directory must be one other users cannot use to swap the socket for their own:
//! not writable by group or others unless sticky (`/tmp`, where only the owner of a file
//! may rename or remove it), and owned by us or root. In a sticky directory the socket
//! must end up ours. Without that, `unix:$XDG_RUNTIME_DIR/x.sock` with the variable unset
//! would quietly become `/x.sock`, or a socket in a shared directory could be replaced.
//!
//! A TCP listener has a queue of [`BACKLOG`] connections, not the 128 that the standard
//! library, mio and tokio ask for; a Unix one already gets the kernel's most from the
//! standard library on Linux and the BSDs (`listen(fd, -1)`; `ss -lx` shows 4096 here).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};

/// How many new connections the kernel may hold for the proxy until it accepts them.
/// With the 128 that the standard library, mio and tokio ask for, 2,000 connections
/// opened at once overflowed the queue (`nstat`: 1,273 `ListenOverflows` in one
/// 3 s wrk run at 2,000 connections, none for HAProxy beside it): a connection that
/// does not fit waits for its SYN to be sent again, a second or more, and can fail. nginx
/// asks for 511, HAProxy for its `maxconn`. The kernel caps the figure at
/// `net.core.somaxconn` (4096 by default since Linux 5.4).
pub const BACKLOG: u32 = 4096;

/// Bind a TCP listener on `addr` with a queue of [`BACKLOG`] connections (and
/// `SO_REUSEADDR` on Unix, as `TcpListener::bind` sets it). Call within a runtime.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Why a Unix socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    /// The path exists and is not a socket: never delete someone's file.
    #[error(
        "cannot listen on unix:{}: the path exists and is not a socket; remove it or pick another path",
        path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Something still accepts connections on the socket.
    #[error(
        "cannot listen on unix:{}: another process is listening on it; stop it or pick another path",
        path.display()
    )]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// Another user could replace the socket: its directory is writable by others and
    /// not sticky, or it is owned by someone else.
    #[error(
        "cannot listen on unix:{}: {} {why}, so another user could replace the socket with \
         their own; use a directory only you can write to, such as $XDG_RUNTIME_DIR \
         (or a sticky one such as /tmp)",
        path.display(), dir.display()
    )]
    SharedDirectory {
        /// The socket path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// What makes the directory unsafe, e.g. "can be written by other users (mode 0777)".
        why: String,
    },
    /// The socket at the path (in a sticky directory) belongs to another user.
    #[error(
        "cannot listen on unix:{}: the socket there belongs to another user; pick another path",
        path.display()
    )]
    NotOurs {
        /// The path.
        path: PathBuf,
    },
    /// An I/O error while creating the socket.
    #[error("cannot listen on unix:{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error (part of the message, not repeated as `source()`).
        error: io::Error,
    },
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket and the file it owns.
    #[cfg(unix)]
    Unix(UnixListener, SocketFile),
    /// A duplicate of a Unix listener on another thread (the original owns the file).
    #[cfg(unix)]
    UnixDup(UnixListener),
}

/// Who connected, for logs.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix-socket peer (unnamed).
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => a.fmt(f),
            Self::Unix => f.write_str("unix"),
        }
    }
}

impl Listener {
    /// Accept one connection.
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Self::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Peer::Tcp(peer)))
            }
            #[cfg(unix)]
            Self::Unix(l, _) | Self::UnixDup(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), Peer::Unix))
            }
        }
    }
}

/// A duplicate of a bound listener's socket (the same socket, another descriptor), to
/// be accepted on from another thread's runtime ([`Self::register`]). The kernel hands
/// each new connection to one of the threads waiting on it.
#[derive(Debug)]
pub enum DupListener {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A Unix socket (the socket file stays owned by the original listener).
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    /// A duplicate of this listener's socket for another thread.
    pub fn dup(&self) -> io::Result<DupListener> {
        use std::os::fd::AsFd;
        Ok(match self {
            Self::Tcp(l) => DupListener::Tcp(l.as_fd().try_clone_to_owned()?.into()),
            #[cfg(unix)]
            Self::Unix(l, _) | Self::UnixDup(l) => {
                DupListener::Unix(l.as_fd().try_clone_to_owned()?.into())
            }
        })
    }
}

impl DupListener {
    /// Register the socket with the current thread's runtime.
    pub fn register(self) -> io::Result<Listener> {
        Ok(match self {
            Self::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listener::Tcp(TcpListener::from_std(l)?)
            }
            #[cfg(unix)]
            Self::Unix(l) => {
                l.set_nonblocking(true)?;
                Listener::UnixDup(UnixListener::from_std(l)?)
            }
        })
    }
}

/// The socket file of a Unix listener, removed on drop if it is still the one we
/// created (same device and inode).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket file");
                }
            }
            // Replaced or removed by someone else: not ours to delete.
            _ => {}
        }
    }
}

/// Bind a Unix socket at `path` with mode 0600 (see the module docs).
#[cfg(unix)]
pub fn bind_unix(path: &Path) -> Result<Listener, UnixSocketError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};

    let io_err = |error| UnixSocketError::Io {
        path: path.to_owned(),
        error,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(UnixSocketError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(UnixSocketError::InUse {
                    path: path.to_owned(),
                });
            }
            // Nobody listens: a stale socket from a previous run, replaced below.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(io_err(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }

    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir_meta = std::fs::metadata(parent).map_err(io_err)?;
    let shared = |why: String| UnixSocketError::SharedDirectory {
        path: path.to_owned(),
        dir: parent.to_owned(),
        why,
    };
    let mode = dir_meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(shared(format!(
            "can be written by other users (mode {mode:04o}) and is not sticky"
        )));
    }
    let name = path
        .file_name()
        .ok_or_else(|| io_err(io::Error::other("the path has no file name")))?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let staging = parent.join(format!(
        ".{}.{}.{nonce:x}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // `create` fails if the directory exists: nobody else can have prepared it.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_err)?;
    // The staging directory was just created by this process: its owner is us.
    let owner_check = std::fs::symlink_metadata(&staging)
        .map_err(io_err)
        .and_then(|m| check_owners(path, parent, &dir_meta, m.uid()));
    if let Err(e) = owner_check {
        let _ = std::fs::remove_dir(&staging);
        return Err(e);
    }
    let inner = staging.join("s");
    let bound = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        let meta = std::fs::symlink_metadata(path)?;
        listener.set_nonblocking(true)?;
        Ok::<_, io::Error>((listener, (meta.dev(), meta.ino())))
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&staging);
    let (listener, id) = bound.map_err(io_err)?;
    let file = SocketFile {
        path: path.to_owned(),
        id,
    };
    let listener = UnixListener::from_std(listener).map_err(io_err)?;
    Ok(Listener::Unix(listener, file))
}

/// The directory must belong to us or root, and a socket already at `path` to us: in a
/// sticky directory another user's socket could not be replaced anyway, and in a
/// directory someone else owns they could swap ours.
#[cfg(unix)]
fn check_owners(
    path: &Path,
    dir: &Path,
    dir_meta: &std::fs::Metadata,
    me: u32,
) -> Result<(), UnixSocketError> {
    use std::os::unix::fs::MetadataExt;
    if dir_meta.uid() != me && dir_meta.uid() != 0 {
        return Err(UnixSocketError::SharedDirectory {
            path: path.to_owned(),
            dir: dir.to_owned(),
            why: format!("belongs to another user (uid {})", dir_meta.uid()),
        });
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.uid() != me => Err(UnixSocketError::NotOurs {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// An accepted connection.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Stream {
    /// Take the socket off this thread's runtime, to be served on another thread's
    /// ([`MovingStream::register`]).
    pub fn into_moving(self) -> io::Result<MovingStream> {
        Ok(match self {
            Self::Tcp(s) => MovingStream::Tcp(s.into_std()?),
            #[cfg(unix)]
            Self::Unix(s) => MovingStream::Unix(s.into_std()?),
        })
    }
}

/// An accepted connection between two threads' runtimes (still non-blocking).
#[derive(Debug)]
pub enum MovingStream {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// Unix socket.
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

impl MovingStream {
    /// Register the socket with the current thread's runtime.
    pub fn register(self) -> io::Result<Stream> {
        Ok(match self {
            Self::Tcp(s) => Stream::Tcp(TcpStream::from_std(s)?),
            #[cfg(unix)]
            Self::Unix(s) => Stream::Unix(UnixStream::from_std(s)?),
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Self::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Far longer than connecting over loopback takes; a connection left out of a full
    /// queue waits for its SYN to be sent again (1 s, 3 s, 7 s…) and hits this.
    const NEVER: Duration = Duration::from_secs(10);

    /// How many connections a burst test opens: beyond the 128 that the old queue held,
    /// within what the kernel allows (`net.core.somaxconn`; on a kernel that allows no
    /// more than 128 the tests cannot tell the queues apart, and pass).
    fn burst() -> usize {
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        300.min(cap)
    }

    #[tokio::test]
    async fn a_burst_of_tcp_connections_waits_in_the_queue_until_accepted() {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let n = burst();
        // Nothing accepts: every connection must fit in the kernel's queue.
        let opened = tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|i| {
                    std::net::TcpStream::connect_timeout(&addr, NEVER)
                        .map_err(|e| format!("connection {i} of {n}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(opened.len(), n);
        // And they are there to accept.
        let (_first, _) = listener.accept().await.unwrap();
    }

    #[tokio::test]
    async fn a_burst_of_unix_connections_waits_in_the_queue_until_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let listener = bind_unix(&path).unwrap();
        let n = burst();
        let (done, opened) = mpsc::channel();
        let to = path.clone();
        // A connection that does not fit blocks in connect: on a thread of its own.
        std::thread::spawn(move || {
            let all: Result<Vec<_>, _> = (0..n)
                .map(|_| std::os::unix::net::UnixStream::connect(&to))
                .collect();
            let _ = done.send(all.map(|v| v.len()));
        });
        let count = opened
            .recv_timeout(NEVER)
            .expect("a connection did not fit in the queue")
            .unwrap();
        assert_eq!(count, n);
        let Listener::Unix(listener, _) = listener else {
            panic!("not a Unix listener")
        };
        let (_first, _) = listener.accept().await.unwrap();
    }

    #[tokio::test]
    async fn socket_is_0600_replaces_a_stale_one_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        // A stale socket: bound, then its listener dropped (the file stays).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let l = bind_unix(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Nothing left behind in the directory but the socket.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // A second proxy on the same path is refused while the first listens.
        let err = bind_unix(&path).unwrap_err();
        assert!(matches!(err, UnixSocketError::InUse { .. }), "{err}");

        drop(l);
        assert!(!path.exists(), "removed on drop");
    }

    #[tokio::test]
    async fn a_directory_others_can_write_to_is_refused_unless_sticky() {
        for (mode, refused) in [(0o777, true), (0o775, true), (0o757, true), (0o1777, false)] {
            let dir = tempfile::tempdir().unwrap();
            let shared = dir.path().join("shared");
            std::fs::create_dir(&shared).unwrap();
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
            let path = shared.join("p.sock");
            let result = bind_unix(&path);
            match (refused, result) {
                (true, Err(e)) => {
                    assert!(matches!(e, UnixSocketError::SharedDirectory { .. }), "{e}");
                    let text = e.to_string();
                    assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
                    assert!(text.contains("XDG_RUNTIME_DIR"), "{text}");
                    assert!(!path.exists(), "nothing created");
                    // Nothing left behind either.
                    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
                }
                (false, Ok(l)) => drop(l),
                (true, Ok(_)) => panic!("mode {mode:o}: listened in a shared directory"),
                (false, Err(e)) => panic!("mode {mode:o}: {e}"),
            }
        }
    }

    #[test]
    fn a_regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "keep me").unwrap();
        let err = bind_unix(&path).unwrap_err();
        assert!(matches!(err, UnixSocketError::NotASocket { .. }), "{err}");
        assert!(err.to_string().contains("not a socket"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }
}
