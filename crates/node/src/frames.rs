//! [`FrameReader`]: decodes frames from a channel's read half, and holds no
//! buffer while the connection is idle.
//!
//! `tokio_util`'s `FramedRead` keeps an 8 KiB buffer for the life of the
//! connection, a third of what an idle connection cost. This reader
//! reserves [`READ_CHUNK`] when it reads and frees the buffer when a read
//! finds the stream empty with no partial frame left in it, unless the
//! reads since the last such time brought at least [`BUSY_BURST`] bytes (a
//! busy channel keeps it for the next burst; its next quiet exchange, a
//! ping, frees it). The secure stream below does the same with its own
//! buffer, so an idle channel holds neither.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures::Stream;
use knotwork_crypto_handshake::BUSY_BURST;
use knotwork_wire::{Frame, FrameCodec, WireError};
use tokio::io::AsyncRead;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

/// Free room below which a read first reserves [`READ_CHUNK`] more.
const MIN_ROOM: usize = 1024;
/// Bytes reserved for a read.
const READ_CHUNK: usize = 8 * 1024;

/// A stream of frames read from `R`; see the module docs.
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

    /// The next frame already in the buffer, without reading.
    pub(crate) fn next_buffered(&mut self) -> Option<Result<Frame, WireError>> {
        if self.eof {
            return None;
        }
        self.codec.decode(&mut self.buf).transpose()
    }

    /// Bytes the reader holds in its buffer now.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<Frame, WireError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.eof {
                return Poll::Ready(this.codec.decode_eof(&mut this.buf).transpose());
            }
            if let Some(frame) = this.codec.decode(&mut this.buf).transpose() {
                return Poll::Ready(Some(frame));
            }
            if this.buf.capacity() - this.buf.len() < MIN_ROOM {
                this.buf.reserve(READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Pending => {
                    if this.buf.is_empty() && this.burst < BUSY_BURST {
                        this.buf = BytesMut::new();
                    }
                    this.burst = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(n)) => this.burst = this.burst.saturating_add(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(WireError::Io(e)))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::{FutureExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

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
        assert_eq!(reader.next_buffered().unwrap().unwrap(), frames[0]);
        a.write_all(&bytes[first_len..first_len + 10])
            .await
            .unwrap();
        assert!(reader.next().now_or_never().is_none(), "half a frame");
        assert!(reader.capacity() > 0, "a partial frame stays buffered");
        a.write_all(&bytes[first_len + 10..]).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), frames[1]);
        assert_eq!(reader.next_buffered().unwrap().unwrap(), frames[2]);
        assert!(reader.next().now_or_never().is_none(), "nothing more yet");
        assert_eq!(reader.capacity(), 0, "idle: buffer freed");
        drop(a);
        assert!(reader.next().await.is_none(), "clean end");
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
            assert_eq!(reader.next().await.unwrap().unwrap(), *f);
        }
        assert!(reader.next().now_or_never().is_none());
        assert!(reader.capacity() > 0, "busy: kept for the next burst");
        // One small frame (a ping, say): the next empty read frees it.
        let ping = Frame::message(7, Bytes::from_static(b"ping"));
        a.write_all(&encoded(std::slice::from_ref(&ping)))
            .await
            .unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), ping);
        assert!(reader.next().now_or_never().is_none());
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
            reader.next().await,
            Some(Err(WireError::Truncated { have: 50, .. }))
        ));
    }
}
