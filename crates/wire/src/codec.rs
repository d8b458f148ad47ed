//! [`FrameCodec`]: the tokio-util `Decoder`/`Encoder` for [`Frame`]s.
//!
//! # Decoding
//! Check, then parse, then advance: once the 16 header bytes are buffered the
//! header is checked (magic, version, flags, kind, length against the limit);
//! only then does the codec `reserve` room for the rest of the frame. An
//! incomplete frame is `Ok(None)` and consumes nothing. A complete frame is
//! split off the front of the buffer and frozen, so the payload is a view
//! into the receive buffer: no copy. At end of stream, leftover bytes are
//! [`WireError::Truncated`].
//!
//! # Encoding
//! Header and payload are appended to the destination buffer (one copy of
//! the payload, into the send buffer). To avoid even that copy, write
//! [`Frame::encode_header`] and the payload separately, or have
//! [`FrameCodec::encode_message`] serialize a typed message straight into
//! the send buffer (no payload of its own at all).

use bytes::{BufMut, BytesMut};
#[cfg(feature = "tokio")]
use {
    crate::Frame,
    bytes::Buf,
    tokio_util::codec::{Decoder, Encoder},
};

use crate::frame::{DEFAULT_MAX_FRAME_LEN, FrameKind, FrameRef, HEADER_LEN, Header, header_bytes};
use crate::{Message, WireError};

/// The largest payload limit a codec accepts: what the 32-bit length field
/// can express, and small enough that header + payload fits a `usize`.
const LIMIT_CEILING: usize = {
    let field = u32::MAX as usize;
    let room = usize::MAX - HEADER_LEN;
    if field < room { field } else { room }
};

/// Frames [`Frame`]s on a byte stream; use it with
/// `tokio_util::codec::Framed`.
///
/// The payload limit (default [`DEFAULT_MAX_FRAME_LEN`]) applies both ways:
/// the decoder refuses a longer frame from its header, before buffering it,
/// and the encoder refuses to send one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    /// A codec with the [`DEFAULT_MAX_FRAME_LEN`] payload limit.
    pub const fn new() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// A codec refusing payloads longer than `max_frame_len` bytes. Values
    /// above `u32::MAX` (what the length field holds) are lowered to it.
    pub const fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: if max_frame_len < LIMIT_CEILING {
                max_frame_len
            } else {
                LIMIT_CEILING
            },
        }
    }

    /// The payload limit in force.
    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Appends one frame of `kind` carrying `msg` to `dst`: the header,
    /// then `msg` serialized in place, with no payload buffer of its own.
    /// Returns the payload length.
    ///
    /// The same bytes as [`encode`](crate::encode) and then
    /// [`Encoder::encode`] of the frame, and the same refusals:
    /// [`WireError::MessageTooLarge`] over [`Message::MAX_BYTES`],
    /// [`WireError::FrameTooLarge`] over this codec's limit,
    /// [`WireError::RequestIdOnMessage`], [`WireError::Serialize`]. Never
    /// more than the smaller limit is written; on any refusal (or a panic
    /// in `msg`'s `Serialize`) `dst` is left as it was.
    #[inline]
    pub fn encode_message<M: Message>(
        &self,
        kind: FrameKind,
        request_id: u32,
        msg: &M,
        dst: &mut BytesMut,
    ) -> Result<usize, WireError> {
        // Checked before anything is written.
        header_bytes(kind, M::ID, request_id, 0)?;
        let limit = M::MAX_BYTES.min(self.max_frame_len);
        let out = Rollback::new(dst);
        // A constant-size copy the compiler writes inline (`put_bytes` calls
        // memset: 40 instructions for 16 bytes).
        out.buf.extend_from_slice(&[0u8; HEADER_LEN]);
        let body = Limited {
            buf: &mut *out.buf,
            left: limit,
        };
        let len = match postcard::serialize_with_flavor(msg, body) {
            Ok(()) => out.buf.len() - out.start - HEADER_LEN,
            Err(postcard::Error::SerializeBufferFull) => {
                // Over a limit: count the whole message to report it.
                let len =
                    postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
                        .unwrap_or(usize::MAX);
                return Err(if len > M::MAX_BYTES {
                    WireError::MessageTooLarge {
                        name: M::NAME,
                        len,
                        max: M::MAX_BYTES,
                    }
                } else {
                    WireError::FrameTooLarge {
                        len,
                        max: self.max_frame_len,
                    }
                });
            }
            Err(source) => {
                return Err(WireError::Serialize {
                    name: M::NAME,
                    source,
                });
            }
        };
        // `len <= limit <= max_frame_len`, which fits the 32-bit field.
        let header = header_bytes(
            kind,
            M::ID,
            request_id,
            u32::try_from(len).unwrap_or(u32::MAX),
        )?;
        if let Some(slot) = out.buf.get_mut(out.start..out.start + HEADER_LEN) {
            slot.copy_from_slice(&header);
        }
        out.keep();
        Ok(len)
    }

    /// The first frame in `src` if it is complete, as a view into `src`:
    /// the same checks and errors as [`Decoder::decode`], but nothing is
    /// consumed, reserved or allocated. `Ok(None)`: more bytes are needed.
    /// Drop the frame with `src.advance(frame.encoded_len())`.
    #[inline]
    pub fn decode_ref<'a>(&self, src: &'a [u8]) -> Result<Option<FrameRef<'a>>, WireError> {
        let Some(header_bytes) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(header_bytes, self.max_frame_len)?;
        // Cannot overflow: payload_len <= max_frame_len <= LIMIT_CEILING.
        let Some(payload) = src.get(HEADER_LEN..HEADER_LEN + header.payload_len) else {
            return Ok(None);
        };
        Ok(Some(FrameRef {
            kind: header.kind,
            msg_id: header.msg_id,
            request_id: header.request_id,
            payload,
        }))
    }
}

/// Truncates the buffer back to where it was, unless kept: a refused or
/// panicking serialization leaves no partial frame behind.
struct Rollback<'a> {
    buf: &'a mut BytesMut,
    start: usize,
    keep: bool,
}

impl<'a> Rollback<'a> {
    fn new(buf: &'a mut BytesMut) -> Self {
        let start = buf.len();
        Self {
            buf,
            start,
            keep: false,
        }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.buf.truncate(self.start);
        }
    }
}

/// A postcard flavor appending to a `BytesMut`, at most `left` bytes more.
struct Limited<'a> {
    buf: &'a mut BytesMut,
    left: usize,
}

impl postcard::ser_flavors::Flavor for Limited<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.left = self
            .left
            .checked_sub(data.len())
            .ok_or(postcard::Error::SerializeBufferFull)?;
        self.buf.put_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// What the tokio-util `Decoder` and `Encoder` below share.
#[cfg(feature = "tokio")]
impl FrameCodec {
    /// The bytes the first frame in `src` takes in all (its header alone
    /// while fewer than [`HEADER_LEN`] bytes are there); the header's
    /// framing error if it has one.
    fn needed(&self, src: &[u8]) -> Result<usize, WireError> {
        Ok(match src.first_chunk::<HEADER_LEN>() {
            // Cannot overflow: payload_len <= max_frame_len <= LIMIT_CEILING.
            Some(header) => HEADER_LEN + Header::parse(header, self.max_frame_len)?.payload_len,
            None => HEADER_LEN,
        })
    }

    /// Checks `frame` against this codec's limit and returns its header.
    fn checked_header(&self, frame: &Frame) -> Result<[u8; HEADER_LEN], WireError> {
        if frame.payload.len() > self.max_frame_len {
            return Err(WireError::FrameTooLarge {
                len: frame.payload.len(),
                max: self.max_frame_len,
            });
        }
        frame.encode_header()
    }
}

#[cfg(feature = "tokio")]
impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    #[inline]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let Some(f) = self.decode_ref(src)? else {
            // Room for the rest of the frame (or of its header).
            let need = self.needed(src)?;
            src.reserve(need.saturating_sub(src.len()));
            return Ok(None);
        };
        let (kind, msg_id, request_id, frame_len) =
            (f.kind, f.msg_id, f.request_id, f.encoded_len());
        let mut payload = src.split_to(frame_len).freeze();
        payload.advance(HEADER_LEN);
        Ok(Some(Frame {
            kind,
            msg_id,
            request_id,
            payload,
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        Err(WireError::Truncated {
            have: src.len(),
            need: self.needed(src)?,
        })
    }
}

/// Only owned frames: a second `Encoder<&Frame>` impl would make
/// `SinkExt::flush`/`close` on a `Framed` ambiguous for every caller. A frame
/// is cheap to clone (the payload is reference-counted).
#[cfg(feature = "tokio")]
impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    #[inline]
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        let header = self.checked_header(&frame)?;
        dst.reserve(frame.encoded_len());
        dst.put_slice(&header);
        dst.put_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
#[cfg(feature = "tokio")]
mod tests {
    use super::*;
    use bytes::Bytes;

    use crate::FrameKind;

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        for f in frames {
            codec.encode(f.clone(), &mut buf).unwrap();
        }
        buf
    }

    #[test]
    fn frames_round_trip_and_payload_is_not_copied() {
        let frames = [
            Frame::message(7, &b"hello"[..]),
            Frame::request(8, 1, Bytes::new()),
            Frame::response(8, 1, vec![1u8; 300]),
        ];
        let mut buf = encoded(&frames);
        let start = buf.as_ptr() as usize;
        let mut codec = FrameCodec::new();
        let first = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first, frames[0]);
        assert_eq!(
            first.payload.as_ptr() as usize,
            start + HEADER_LEN,
            "payload must point into the receive buffer"
        );
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), frames[1]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), frames[2]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn incomplete_frame_reserves_what_it_needs_and_consumes_nothing() {
        let full = encoded(&[Frame::message(1, vec![9u8; 1000])]);
        let mut codec = FrameCodec::new();

        let mut buf = BytesMut::from(&full[..5]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 5);
        assert!(buf.capacity() >= HEADER_LEN);

        let mut buf = BytesMut::from(&full[..HEADER_LEN + 10]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), HEADER_LEN + 10);
        assert!(buf.capacity() >= HEADER_LEN + 1000);
    }

    #[test]
    fn oversized_header_is_refused_before_reserving() {
        let mut codec = FrameCodec::with_max_frame_len(100);
        let header = Frame::message(1, vec![0u8; 101]).encode_header().unwrap();
        let mut buf = BytesMut::from(&header[..]);
        let cap = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(WireError::FrameTooLarge { len: 101, max: 100 })
        ));
        assert_eq!(buf.capacity(), cap, "no allocation for a refused frame");
    }

    #[test]
    fn encoder_refuses_frames_over_the_limit() {
        let mut codec = FrameCodec::with_max_frame_len(4);
        let mut buf = BytesMut::new();
        assert!(matches!(
            codec.encode(Frame::message(1, &b"12345"[..]), &mut buf),
            Err(WireError::FrameTooLarge { len: 5, max: 4 })
        ));
        assert!(buf.is_empty());
        codec
            .encode(Frame::message(1, &b"1234"[..]), &mut buf)
            .unwrap();
        assert_eq!(buf.len(), HEADER_LEN + 4);
    }

    #[test]
    fn limit_is_capped_to_the_length_field() {
        assert_eq!(FrameCodec::new().max_frame_len(), DEFAULT_MAX_FRAME_LEN);
        assert_eq!(FrameCodec::with_max_frame_len(10).max_frame_len(), 10);
        assert_eq!(
            FrameCodec::with_max_frame_len(usize::MAX).max_frame_len(),
            LIMIT_CEILING
        );
        assert!(LIMIT_CEILING <= u32::MAX as usize);
    }

    #[test]
    fn truncated_mid_header() {
        let full = encoded(&[Frame::message(1, &b"abc"[..])]);
        let mut buf = BytesMut::from(&full[..7]);
        assert!(matches!(
            FrameCodec::new().decode_eof(&mut buf),
            Err(WireError::Truncated {
                have: 7,
                need: HEADER_LEN
            })
        ));
    }

    #[test]
    fn truncated_mid_payload() {
        let full = encoded(&[
            Frame::message(1, &b"ok"[..]),
            Frame::request(2, 3, &b"abcdef"[..]),
        ]);
        let cut = full.len() - 2;
        let mut buf = BytesMut::from(&full[..cut]);
        let mut codec = FrameCodec::new();
        let first = codec.decode_eof(&mut buf).unwrap().unwrap();
        assert_eq!(first.kind, FrameKind::Message);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(WireError::Truncated { have: 20, need: 22 })
        ));
    }

    #[test]
    fn header_errors_surface_through_the_decoder_and_repeat() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        let mut codec = FrameCodec::new();
        for _ in 0..2 {
            assert!(matches!(
                codec.decode(&mut buf),
                Err(WireError::BadMagic {
                    found: [b'G', b'E']
                })
            ));
        }
    }

    #[test]
    fn io_errors_convert() {
        let err = WireError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(matches!(err, WireError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe));
    }
}
