//! The frame: a fixed 16-byte header and a payload.
//!
//! # Format
//! See the byte table in the [crate docs](crate#frame-format). All integers
//! are big-endian.
//!
//! Header parsing is a pure function of the 16 header bytes and the length
//! limit ([`Header::parse`]); the codec calls it once per frame before it
//! allocates anything for the payload.

use bytes::Bytes;

use crate::WireError;

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"kw";
/// The header version this crate writes and accepts.
pub const VERSION: u8 = 1;
/// Length of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 16;
/// The payload limit [`FrameCodec::new`](crate::FrameCodec::new) uses: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;

/// The high nibble of byte 3: flag bits, all reserved (zero) in version 1.
const FLAGS_MASK: u8 = 0xf0;
/// The low nibble of byte 3: the [`FrameKind`].
const KIND_MASK: u8 = 0x0f;

/// What a frame is for; the low nibble of header byte 3.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A one-way message; its request id is 0.
    Message = 0,
    /// A request; the peer answers with a [`FrameKind::Response`] carrying
    /// the same request id.
    Request = 1,
    /// The answer to the request with the same request id.
    Response = 2,
}

impl TryFrom<u8> for FrameKind {
    type Error = WireError;

    /// Reads a kind nibble; anything but 0, 1, 2 is [`WireError::UnknownKind`].
    fn try_from(value: u8) -> Result<Self, WireError> {
        match value {
            0 => Ok(Self::Message),
            1 => Ok(Self::Request),
            2 => Ok(Self::Response),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

/// One frame: what the codec reads and writes.
///
/// The payload is a [`Bytes`]: a decoded frame's payload is a view into the
/// receive buffer, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is for.
    pub kind: FrameKind,
    /// Which message type the payload holds ([`Message::ID`](crate::Message::ID)).
    pub msg_id: u32,
    /// Pairs a response with its request; 0 for [`FrameKind::Message`].
    pub request_id: u32,
    /// The message bytes.
    pub payload: Bytes,
}

impl Frame {
    /// A one-way message frame.
    pub fn message(msg_id: u32, payload: impl Into<Bytes>) -> Self {
        Self {
            kind: FrameKind::Message,
            msg_id,
            request_id: 0,
            payload: payload.into(),
        }
    }

    /// A request frame; the answer carries the same `request_id`.
    pub fn request(msg_id: u32, request_id: u32, payload: impl Into<Bytes>) -> Self {
        Self {
            kind: FrameKind::Request,
            msg_id,
            request_id,
            payload: payload.into(),
        }
    }

    /// A response frame to the request with `request_id`.
    pub fn response(msg_id: u32, request_id: u32, payload: impl Into<Bytes>) -> Self {
        Self {
            kind: FrameKind::Response,
            msg_id,
            request_id,
            payload: payload.into(),
        }
    }

    /// Header plus payload length: the bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload.len())
    }

    /// The 16 header bytes of this frame, for a caller that writes header
    /// and payload separately (e.g. a vectored write) so the payload is never
    /// copied.
    ///
    /// Checks only what the header itself can represent: a payload longer
    /// than `u32::MAX` is [`WireError::FrameTooLarge`] and a
    /// [`FrameKind::Message`] with a non-zero request id is
    /// [`WireError::RequestIdOnMessage`]. A [`FrameCodec`](crate::FrameCodec)
    /// also applies its own, usually smaller, limit.
    pub fn encode_header(&self) -> Result<[u8; HEADER_LEN], WireError> {
        let len = u32::try_from(self.payload.len()).map_err(|_| WireError::FrameTooLarge {
            len: self.payload.len(),
            max: u32::MAX as usize,
        })?;
        header_bytes(self.kind, self.msg_id, self.request_id, len)
    }
}

/// The 16 header bytes of a frame with a payload of `len` bytes; a
/// [`FrameKind::Message`] with a non-zero request id is
/// [`WireError::RequestIdOnMessage`].
pub(crate) fn header_bytes(
    kind: FrameKind,
    msg_id: u32,
    request_id: u32,
    len: u32,
) -> Result<[u8; HEADER_LEN], WireError> {
    if kind == FrameKind::Message && request_id != 0 {
        return Err(WireError::RequestIdOnMessage(request_id));
    }
    let [m0, m1] = MAGIC;
    let [i0, i1, i2, i3] = msg_id.to_be_bytes();
    let [r0, r1, r2, r3] = request_id.to_be_bytes();
    let [l0, l1, l2, l3] = len.to_be_bytes();
    Ok([
        m0, m1, VERSION, kind as u8, i0, i1, i2, i3, r0, r1, r2, r3, l0, l1, l2, l3,
    ])
}

/// A frame still in the receive buffer: what
/// [`FrameCodec::decode_ref`](crate::FrameCodec::decode_ref) returns. The
/// payload borrows the buffer, so a reader that only needs to look at a
/// frame (decode a typed message from it) takes no reference count and
/// allocates nothing for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// What the frame is for.
    pub kind: FrameKind,
    /// Which message type the payload holds.
    pub msg_id: u32,
    /// Pairs a response with its request; 0 for [`FrameKind::Message`].
    pub request_id: u32,
    /// The message bytes.
    pub payload: &'a [u8],
}

impl FrameRef<'_> {
    /// Header plus payload length: the bytes this frame takes in the buffer.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload.len())
    }
}

/// A checked frame header: everything but the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// What the frame is for.
    pub kind: FrameKind,
    /// Which message type the payload holds.
    pub msg_id: u32,
    /// Pairs a response with its request; 0 for [`FrameKind::Message`].
    pub request_id: u32,
    /// Payload length in bytes, at most the limit given to [`Header::parse`].
    pub payload_len: usize,
}

impl Header {
    /// Checks and parses 16 header bytes, refusing a payload longer than
    /// `max_payload`.
    ///
    /// Checks in byte order: magic ([`WireError::BadMagic`]), version
    /// ([`WireError::UnsupportedVersion`]), flags
    /// ([`WireError::ReservedBitsSet`]), kind ([`WireError::UnknownKind`]),
    /// request id of a message ([`WireError::RequestIdOnMessage`]), length
    /// ([`WireError::FrameTooLarge`]).
    #[inline]
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN], max_payload: usize) -> Result<Self, WireError> {
        let [
            m0,
            m1,
            version,
            kind_flags,
            i0,
            i1,
            i2,
            i3,
            r0,
            r1,
            r2,
            r3,
            l0,
            l1,
            l2,
            l3,
        ] = *bytes;
        if [m0, m1] != MAGIC {
            return Err(WireError::BadMagic { found: [m0, m1] });
        }
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        if kind_flags & FLAGS_MASK != 0 {
            return Err(WireError::ReservedBitsSet(kind_flags & FLAGS_MASK));
        }
        let kind = FrameKind::try_from(kind_flags & KIND_MASK)?;
        let request_id = u32::from_be_bytes([r0, r1, r2, r3]);
        if kind == FrameKind::Message && request_id != 0 {
            return Err(WireError::RequestIdOnMessage(request_id));
        }
        // u32 -> usize is lossless on the 32- and 64-bit targets we build for;
        // saturate anyway so a 16-bit target would refuse instead of wrap.
        let payload_len =
            usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
        if payload_len > max_payload {
            return Err(WireError::FrameTooLarge {
                len: payload_len,
                max: max_payload,
            });
        }
        Ok(Self {
            kind,
            msg_id: u32::from_be_bytes([i0, i1, i2, i3]),
            request_id,
            payload_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(frame: &Frame) -> [u8; HEADER_LEN] {
        frame.encode_header().unwrap()
    }

    #[test]
    fn header_layout_matches_the_table() {
        let f = Frame::request(0x0102_0304, 0x0a0b_0c0d, &b"xyz"[..]);
        assert_eq!(
            header(&f),
            [
                b'k', b'w', 1, 1, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 3
            ]
        );
        let parsed = Header::parse(&header(&f), 3).unwrap();
        assert_eq!(
            parsed,
            Header {
                kind: FrameKind::Request,
                msg_id: 0x0102_0304,
                request_id: 0x0a0b_0c0d,
                payload_len: 3,
            }
        );
    }

    #[test]
    fn bad_magic() {
        let mut h = header(&Frame::message(1, Bytes::new()));
        h[0] = b'G';
        h[1] = b'E';
        assert!(matches!(
            Header::parse(&h, 10),
            Err(WireError::BadMagic {
                found: [b'G', b'E']
            })
        ));
    }

    #[test]
    fn unsupported_version() {
        let mut h = header(&Frame::message(1, Bytes::new()));
        h[2] = 2;
        assert!(matches!(
            Header::parse(&h, 10),
            Err(WireError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn reserved_bits_set() {
        let mut h = header(&Frame::message(1, Bytes::new()));
        h[3] = 0x80;
        assert!(matches!(
            Header::parse(&h, 10),
            Err(WireError::ReservedBitsSet(0x80))
        ));
    }

    #[test]
    fn unknown_kind() {
        let mut h = header(&Frame::message(1, Bytes::new()));
        h[3] = 3;
        assert!(matches!(
            Header::parse(&h, 10),
            Err(WireError::UnknownKind(3))
        ));
        assert!(matches!(
            FrameKind::try_from(15),
            Err(WireError::UnknownKind(15))
        ));
    }

    #[test]
    fn request_id_on_message() {
        let mut h = header(&Frame::message(1, Bytes::new()));
        h[11] = 7;
        assert!(matches!(
            Header::parse(&h, 10),
            Err(WireError::RequestIdOnMessage(7))
        ));
        let mut f = Frame::message(1, Bytes::new());
        f.request_id = 9;
        assert!(matches!(
            f.encode_header(),
            Err(WireError::RequestIdOnMessage(9))
        ));
    }

    #[test]
    fn frame_too_large_is_checked_against_the_limit() {
        let h = header(&Frame::response(1, 2, vec![0u8; 11]));
        assert!(matches!(
            Header::parse(&h, 10),
            Err(WireError::FrameTooLarge { len: 11, max: 10 })
        ));
        assert_eq!(Header::parse(&h, 11).unwrap().payload_len, 11);
    }

    #[test]
    fn kinds_round_trip_through_their_byte() {
        for kind in [FrameKind::Message, FrameKind::Request, FrameKind::Response] {
            assert_eq!(FrameKind::try_from(kind as u8).unwrap(), kind);
        }
    }
}
