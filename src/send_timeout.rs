//! A client connection whose writes may not stall for ever: when a write (or flush)
//! cannot proceed because the client stopped reading and its socket buffer is full, a
//! timer starts; if no write gets through within the send timeout, the write fails with
//! `TimedOut` and hyper closes the connection. This is nginx's `send_timeout`: a client
//! that reads nothing cannot hold a connection slot (and a master connection) for as long
//! as it likes.
//!
//! Only a write that waits is timed. A stream on which the server sends rarely (SSE,
//! RecordIO, a quiet WebSocket) never waits on a write, so it is never cut. The wrapper
//! stays under upgraded connections too, so tunnels get the same rule. A write that goes
//! through costs nothing beyond a check that no timer is armed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose stalled writes fail after a timeout.
#[derive(Debug)]
pub struct SendTimeout<S> {
    inner: S,
    timeout: Duration,
    // Armed when a write first waits; disarmed when one goes through.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> SendTimeout<S> {
    /// `inner`, whose writes may wait at most `timeout` for the peer to read.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// What a poll of a write gave: progress disarms the timer; waiting arms it, and
    /// fails the write once it has waited for the whole timeout.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client read nothing for {}s (send_timeout); connection closed",
                            timeout.as_secs_f64()
                        ),
                    ))),
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_to_a_peer_that_never_reads_fails_after_the_timeout() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut ours = SendTimeout::new(ours, Duration::from_secs(60));
        let chunk = vec![b'x'; 512];
        let err = loop {
            if let Err(e) = ours.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("send_timeout"), "{err}");
        // The peer could still read what was written before.
        let mut got = vec![0; 1024];
        theirs.read_exact(&mut got).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_is_never_cut() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut ours = SendTimeout::new(ours, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0; 64];
            while total < 64 * 100 {
                // A read every 59 s: each stalled write waits just under the timeout.
                tokio::time::sleep(Duration::from_secs(59)).await;
                total += theirs.read(&mut buf).await.unwrap();
            }
            total
        });
        for _ in 0..100 {
            ours.write_all(&[b'y'; 64]).await.expect("never cut");
        }
        assert_eq!(reader.await.unwrap(), 6400);
    }
}
