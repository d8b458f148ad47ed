//! [`FrameReader`]: decodes frames from a channel's read half, and holds no
//! buffer while the connection is idle.
//!
//! `tokio_util`'s `FramedRead` keeps an 8 KiB buffer for the life of the
//! connection, a third of what an idle connection cost. This reader
//! reserves [`FIRST_READ`] when it reads into an empty buffer, [`READ_CHUNK`]
//! more while a burst goes on, and frees the buffer when a read
//! finds the stream empty with no partial frame left in it, unless the
//! reads since the last such time brought at least [`BUSY_BURST`] bytes (a
//! busy channel keeps it for the next burst; its next quiet exchange, a
//! ping, frees it). The secure stream below does the same with its own
//! buffer, so an idle channel holds neither.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use knotwork_crypto_handshake::BUSY_BURST;
use knotwork_wire::{Frame, FrameCodec, FrameRef, WireError};
use tokio::io::AsyncRead;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

/// Free room below which a read first reserves [`READ_CHUNK`] more.
const MIN_ROOM: usize = 1024;
/// Bytes reserved for a read that continues a burst.
const READ_CHUNK: usize = 8 * 1024;
/// Bytes reserved for a read into an empty buffer: one small allocation
/// (glibc serves up to 1,032 bytes from a per-thread cache) where a
/// request/response exchange would otherwise take an 8 KiB one per message.
const FIRST_READ: usize = 1024;

/// Frames read from `R`; see the module docs.
///
/// A frame is looked at in place ([`FrameReader::peek`], then
/// [`FrameReader::consume`]): decoding a typed message from it needs no
/// `Bytes` of its own (which would cost a reference count up and down per
/// frame). [`FrameReader::take`] hands out an owned frame where one must
/// outlive the buffer (a response travelling to its requester).
pub(crate) struct FrameReader<R> {
    io: R,
    codec: FrameCodec,
    buf: BytesMut,
    eof: bool,
    /// Bytes read since a read last found the stream empty.
    burst: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames from `io`, after those in `buffered` (bytes that came
    /// with the version exchange).
    pub(crate) fn new(io: R, codec: FrameCodec, buffered: &[u8]) -> Self {
        Self {
            io,
            codec,
            buf: BytesMut::from(buffered),
            eof: false,
            burst: 0,
        }
    }

    /// The next frame if it is wholly buffered (or the framing error in
    /// its header), without reading or consuming it.
    pub(crate) fn peek(&self) -> Option<Result<FrameRef<'_>, WireError>> {
        self.codec.decode_ref(&self.buf).transpose()
    }

    /// Drops the first `len` buffered bytes: the frame [`Self::peek`]
    /// returned, `len` being its `encoded_len`.
    pub(crate) fn consume(&mut self, len: usize) {
        self.buf.advance(len.min(self.buf.len()));
    }

    /// Takes the next frame if it is wholly buffered, as an owned frame
    /// whose payload is a view of the buffer.
    pub(crate) fn take(&mut self) -> Option<Result<Frame, WireError>> {
        self.codec.decode(&mut self.buf).transpose()
    }

    /// Reads until a frame (or a framing error) is buffered: `Ok(true)`;
    /// `Ok(false)` at a clean end of the stream; an error for a broken
    /// read or a stream cut mid-frame. Cancel-safe.
    pub(crate) async fn fill(&mut self) -> Result<bool, WireError> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// [`FrameReader::fill`] as a poll function.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, WireError>> {
        loop {
            if self.peek().is_some() {
                return Poll::Ready(Ok(true));
            }
            if self.eof {
                // No whole frame left: a clean end, or a cut one.
                return Poll::Ready(self.codec.decode_eof(&mut self.buf).map(|f| f.is_some()));
            }
            if self.buf.capacity() == 0 {
                // Room for a burst of small frames; freed while quiet, so
                // small enough for the allocator's per-thread cache. (A
                // fresh buffer, not `reserve`: that takes the growth path,
                // a hundred instructions more on every quiet read.)
                self.buf = BytesMut::with_capacity(FIRST_READ);
            } else if self.buf.is_empty() {
                self.buf.reserve(FIRST_READ);
            } else if self.buf.capacity() - self.buf.len() < MIN_ROOM {
                self.buf.reserve(READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
                Poll::Pending => {
                    if self.buf.is_empty() && self.burst < BUSY_BURST {
                        self.buf = BytesMut::new();
                    }
                    self.burst = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(n)) => self.burst = self.burst.saturating_add(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(WireError::Io(e))),
            }
        }
    }

    /// Bytes the reader holds in its buffer now.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::FutureExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

    /// The next frame, reading as needed; `None` at a clean end.
    async fn next<R: AsyncRead + Unpin>(
        r: &mut FrameReader<R>,
    ) -> Option<Result<Frame, WireError>> {
        match r.fill().await {
            Ok(true) => r.take(),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The next frame seen in place, then consumed, as an owned copy.
    fn peek_and_consume<R: AsyncRead + Unpin>(r: &mut FrameReader<R>) -> Option<Frame> {
        let f = r.peek()?.unwrap();
        let (frame, len) = (
            Frame {
                kind: f.kind,
                msg_id: f.msg_id,
                request_id: f.request_id,
                payload: Bytes::copy_from_slice(f.payload),
            },
            f.encoded_len(),
        );
        r.consume(len);
        Some(frame)
    }

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut out = BytesMut::new();
        for f in frames {
            FrameCodec::new().encode(f.clone(), &mut out).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn frames_come_out_whole_and_an_idle_reader_holds_no_buffer() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame::message(7, Bytes::from(vec![i; 100])))
            .collect();
        let bytes = encoded(&frames);
        // The first frame arrived with the version exchange, the second
        // in two pieces.
        let first_len = bytes.len() / 3;
        let mut reader = FrameReader::new(b, FrameCodec::new(), &bytes[..first_len]);
        assert_eq!(peek_and_consume(&mut reader).unwrap(), frames[0]);
        a.write_all(&bytes[first_len..first_len + 10])
            .await
            .unwrap();
        assert!(next(&mut reader).now_or_never().is_none(), "half a frame");
        assert!(reader.capacity() > 0, "a partial frame stays buffered");
        a.write_all(&bytes[first_len + 10..]).await.unwrap();
        assert_eq!(next(&mut reader).await.unwrap().unwrap(), frames[1]);
        assert_eq!(peek_and_consume(&mut reader).unwrap(), frames[2]);
        assert!(reader.peek().is_none());
        assert!(
            next(&mut reader).now_or_never().is_none(),
            "nothing more yet"
        );
        assert_eq!(reader.capacity(), 0, "idle: buffer freed");
        drop(a);
        assert!(next(&mut reader).await.is_none(), "clean end");
    }

    #[tokio::test]
    async fn a_busy_reader_keeps_its_buffer_until_a_quiet_read() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(b, FrameCodec::new(), &[]);
        // A burst of 64 frames of 100 bytes: more than BUSY_BURST.
        let burst: Vec<Frame> = (0..64)
            .map(|i| Frame::message(7, Bytes::from(vec![i; 100])))
            .collect();
        a.write_all(&encoded(&burst)).await.unwrap();
        for f in &burst {
            assert_eq!(next(&mut reader).await.unwrap().unwrap(), *f);
        }
        assert!(next(&mut reader).now_or_never().is_none());
        assert!(reader.capacity() > 0, "busy: kept for the next burst");
        // One small frame (a ping, say): the next empty read frees it.
        let ping = Frame::message(7, Bytes::from_static(b"ping"));
        a.write_all(&encoded(std::slice::from_ref(&ping)))
            .await
            .unwrap();
        assert_eq!(next(&mut reader).await.unwrap().unwrap(), ping);
        assert!(next(&mut reader).now_or_never().is_none());
        assert_eq!(reader.capacity(), 0, "quiet: freed");
    }

    #[tokio::test]
    async fn a_connection_cut_mid_frame_is_truncated() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let bytes = encoded(&[Frame::message(7, Bytes::from(vec![1; 100]))]);
        let mut reader = FrameReader::new(b, FrameCodec::new(), &[]);
        a.write_all(&bytes[..50]).await.unwrap();
        drop(a);
        assert!(matches!(
            next(&mut reader).await,
            Some(Err(WireError::Truncated { have: 50, .. }))
        ));
    }
}
