//! The read and write halves of a channel's stream, with a third handle
//! that reaches the stream between reads to give idle buffers back.
//!
//! A channel's reader and writer each own one half; both lock the stream
//! for the length of one `poll_*` call (as `tokio::io::split` does). The
//! third handle, [`StreamBuffers`], takes the same lock to call
//! [`IdleBuffers::release_idle_buffers`]: the channel's idle job does that
//! when no frame has been read for [`crate::ChannelConfig::idle_release`],
//! so an idle connection does not keep the up to ~80 KiB read buffer of
//! its [`SecureStream`] from its last burst.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use knotwork_crypto_handshake::SecureStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose buffers can be given back while it is idle.
pub(crate) trait IdleBuffers {
    /// Frees buffers that hold nothing.
    fn release_idle_buffers(&mut self);
    /// Bytes held in buffers.
    fn buffer_capacity(&self) -> usize;
}

impl<T> IdleBuffers for SecureStream<T> {
    fn release_idle_buffers(&mut self) {
        SecureStream::release_idle_buffers(self);
    }

    fn buffer_capacity(&self) -> usize {
        SecureStream::buffer_capacity(self)
    }
}

/// The buffers of a split stream, reached from outside its two halves.
pub(crate) trait StreamBuffers: Send + Sync {
    /// See [`IdleBuffers::release_idle_buffers`].
    fn release_idle(&self);
    /// See [`IdleBuffers::buffer_capacity`].
    fn capacity(&self) -> usize;
}

struct Stream<S>(Mutex<S>);

impl<S> Stream<S> {
    fn lock(&self) -> MutexGuard<'_, S> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: IdleBuffers + Send> StreamBuffers for Stream<S> {
    fn release_idle(&self) {
        self.lock().release_idle_buffers();
    }

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
    S: IdleBuffers + Send + 'static,
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
