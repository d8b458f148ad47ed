//! The read and write halves of a channel's stream, with a third handle
//! that reads how many bytes the stream holds in its buffers
//! ([`crate::Channel::buffered_bytes`]).
//!
//! A channel's reader and writer each own one half; both lock the stream
//! for the length of one `poll_*` call (as `tokio::io::split` does). The
//! third handle, [`StreamBuffers`], takes the same lock to ask. The
//! [`SecureStream`] frees its read buffer by itself whenever a read finds
//! the connection empty, so nothing here needs to release anything.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

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

/// The buffers of a split stream, reached from outside its two halves.
pub(crate) trait StreamBuffers: Send + Sync {
    /// See [`BufferedBytes::buffer_capacity`].
    fn capacity(&self) -> usize;
}

struct Stream<S>(Mutex<S>);

impl<S> Stream<S> {
    fn lock(&self) -> MutexGuard<'_, S> {
        knotwork_core::lock(&self.0)
    }
}

impl<S: BufferedBytes + Send> StreamBuffers for Stream<S> {
    fn capacity(&self) -> usize {
        self.lock().buffer_capacity()
    }
}

/// The reading half of [`split`].
pub(crate) struct ReadHalf<S>(Arc<Stream<S>>);

/// The writing half of [`split`].
pub(crate) struct WriteHalf<S>(Arc<Stream<S>>);

/// Splits `stream` into its halves and a handle to its buffers.
pub(crate) fn split<S>(stream: S) -> (ReadHalf<S>, WriteHalf<S>, Arc<dyn StreamBuffers>)
where
    S: BufferedBytes + Send + 'static,
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
