//! The read and write halves of a channel's stream, with a third handle
//! ([`StreamHandle`]) that reads how many bytes the stream holds in its
//! buffers ([`crate::Channel::buffered_bytes`]) and lets a sender write its
//! frame itself when the writer is idle (see `crate::outbox`).
//!
//! A channel's reader and writer each own one half; both lock the stream
//! for the length of one `poll_*` call (as `tokio::io::split` does). The
//! third handle takes the same lock, for as long as one call. The
//! [`SecureStream`] frees its read buffer by itself whenever a read finds
//! the connection empty, so nothing here needs to release anything.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use knotwork_crypto_handshake::SecureStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that can say how much its buffers hold.
pub(crate) trait BufferedBytes {
    /// Bytes held in buffers.
    fn buffer_capacity(&self) -> usize;
}

impl<T> BufferedBytes for SecureStream<T> {
    fn buffer_capacity(&self) -> usize {
        SecureStream::buffer_capacity(self)
    }
}

/// A split stream, reached from outside its two halves.
pub(crate) trait StreamHandle: Send + Sync {
    /// See [`BufferedBytes::buffer_capacity`].
    fn capacity(&self) -> usize;

    /// Writes `bytes`, then flushes, without waiting: with a waker that
    /// does nothing, so whatever would wait is left for the writer (which
    /// polls again with its own waker and so registers it).
    fn write_now(&self, bytes: &[u8]) -> WriteNow;
}

/// How far [`StreamHandle::write_now`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteNow {
    /// Bytes the stream took (the rest is the caller's to hand on).
    pub(crate) taken: usize,
    /// All taken and flushed, no error: nothing is left to do.
    pub(crate) done: bool,
}

struct Stream<S>(Mutex<S>);

impl<S> Stream<S> {
    fn lock(&self) -> MutexGuard<'_, S> {
        knotwork_core::lock(&self.0)
    }
}

impl<S: BufferedBytes + AsyncWrite + Unpin + Send> StreamHandle for Stream<S> {
    fn capacity(&self) -> usize {
        self.lock().buffer_capacity()
    }

    fn write_now(&self, bytes: &[u8]) -> WriteNow {
        let mut cx = Context::from_waker(Waker::noop());
        let mut stream = self.lock();
        let mut taken = 0;
        while let Some(rest) = bytes.get(taken..).filter(|r| !r.is_empty()) {
            match Pin::new(&mut *stream).poll_write(&mut cx, rest) {
                Poll::Ready(Ok(n)) if n > 0 => taken += n,
                // Full, broken or refusing: the writer finds out.
                _ => return WriteNow { taken, done: false },
            }
        }
        let done = matches!(
            Pin::new(&mut *stream).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        );
        WriteNow { taken, done }
    }
}

/// The reading half of [`split`].
pub(crate) struct ReadHalf<S>(Arc<Stream<S>>);

/// The writing half of [`split`].
pub(crate) struct WriteHalf<S>(Arc<Stream<S>>);

/// Splits `stream` into its halves and a handle to the whole.
pub(crate) fn split<S>(stream: S) -> (ReadHalf<S>, WriteHalf<S>, Arc<dyn StreamHandle>)
where
    S: BufferedBytes + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Stream(Mutex::new(stream)));
    (ReadHalf(shared.clone()), WriteHalf(shared.clone()), shared)
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadHalf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.lock()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteHalf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.lock()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.lock()).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.lock()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.lock().is_write_vectored()
    }
}

/// A stream without a buffer the node can see: a transport that encrypts
/// itself (QUIC) keeps its buffers inside.
impl BufferedBytes for crate::transport::BoxStream {
    fn buffer_capacity(&self) -> usize {
        0
    }
}
