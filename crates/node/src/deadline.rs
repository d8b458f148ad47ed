//! [`FirstByte`]: an inbound stream that must send its first byte within a
//! deadline. An honest dialer starts the handshake the moment it connects;
//! a connection that stays silent is a slowloris holding a pending slot, and
//! is cut long before the handshake timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::error::NodeError;
use crate::transport::BoxStream;

/// Called once, when the first byte arrives.
type Started = Box<dyn FnOnce() + Send>;

/// See the module docs.
pub(crate) struct FirstByte {
    inner: BoxStream,
    /// Until the first byte: the deadline and what to tell then.
    waiting: Option<(Pin<Box<Sleep>>, Started)>,
}

/// The error a read returns when the deadline passed (kind `TimedOut`).
#[derive(Debug, thiserror::Error)]
#[error("no byte within the first-byte deadline")]
struct Silent;

impl FirstByte {
    /// `inner`, cut if it sends nothing within `deadline`; `started` runs
    /// when its first byte arrives.
    pub(crate) fn new(inner: BoxStream, deadline: Duration, started: Started) -> Self {
        Self {
            inner,
            waiting: Some((Box::pin(tokio::time::sleep(deadline)), started)),
        }
    }

    /// Whether `e` is a connection cut by its first-byte deadline.
    pub(crate) fn timed_out(e: &NodeError) -> bool {
        let io = match e {
            NodeError::Io(io) => Some(io),
            NodeError::Handshake(knotwork_crypto_handshake::HandshakeError::Io(io)) => Some(io),
            _ => None,
        };
        io.and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<Silent>())
    }
}

impl AsyncRead for FirstByte {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.waiting.is_some() {
            let got = matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before;
            if got {
                if let Some((_, started)) = this.waiting.take() {
                    started();
                }
            } else if matches!(read, Poll::Pending)
                && let Some((deadline, _)) = this.waiting.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    Silent,
                )));
            }
        }
        read
    }
}

impl AsyncWrite for FirstByte {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_is_cut_at_the_deadline_and_a_talking_one_never() {
        let (silent, _peer) = tokio::io::duplex(64);
        let mut s = FirstByte::new(Box::new(silent), Duration::from_secs(1), Box::new(|| {}));
        let started = tokio::time::Instant::now();
        let err = s.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(FirstByte::timed_out(&NodeError::Io(err)));

        let (talking, mut peer) = tokio::io::duplex(64);
        let seen = Arc::new(AtomicBool::new(false));
        let flag = seen.clone();
        let mut s = FirstByte::new(
            Box::new(talking),
            Duration::from_secs(1),
            Box::new(move || flag.store(true, Ordering::SeqCst)),
        );
        peer.write_all(b"x").await.unwrap();
        assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 1);
        assert!(seen.load(Ordering::SeqCst));
        // Later silence is the handshake's business, not the deadline's.
        let late = tokio::time::timeout(Duration::from_secs(5), s.read(&mut [0u8; 8])).await;
        assert!(late.is_err(), "still waiting, not cut");
    }
}
