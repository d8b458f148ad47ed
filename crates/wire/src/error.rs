//! [`WireError`]: everything that can go wrong framing or parsing bytes.

/// Errors of the frame codec and the typed message layer.
///
/// Grouped by fault. The first group means the peer sent bytes that are not a
/// knotwork frame (or not one we accept): drop the connection. The second
/// group is about the payload of one message. [`WireError::Io`] comes from the
/// local stream under a `tokio_util::codec::Framed`.
///
/// After the decoder returns an error it leaves the buffer untouched, so
/// calling it again returns the same error: a framing error is final for the
/// connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    // --- The peer does not speak this frame format -------------------------
    /// The frame does not start with [`MAGIC`](crate::MAGIC).
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The two bytes found where the magic belongs.
        found: [u8; 2],
    },
    /// The frame header carries a version this crate does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The kind nibble is not a [`FrameKind`](crate::FrameKind).
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A flag bit reserved by this version is set (the high nibble of byte 3).
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedBitsSet(u8),
    /// A one-way message frame carries a non-zero request id.
    #[error("message frame with request id {0}")]
    RequestIdOnMessage(u32),

    // --- The peer sends more or less than allowed --------------------------
    /// The payload length exceeds the codec's limit (checked before any
    /// allocation), or the 32-bit length field when encoding.
    #[error("frame of {len} bytes exceeds limit of {max}")]
    FrameTooLarge {
        /// The payload length announced (decoding) or given (encoding).
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended mid-frame: have {have} of {need} bytes")]
    Truncated {
        /// Bytes of the unfinished frame that arrived.
        have: usize,
        /// Bytes needed to finish it: the header, or the header and payload
        /// once the header arrived.
        need: usize,
    },

    // --- One typed message's payload ---------------------------------------
    /// An encoded message is larger than its type's [`Message::MAX_BYTES`](crate::Message::MAX_BYTES).
    #[error("{name}: {len} bytes exceeds limit of {max}")]
    MessageTooLarge {
        /// The message type's [`Message::NAME`](crate::Message::NAME).
        name: &'static str,
        /// The encoded length.
        len: usize,
        /// The type's limit.
        max: usize,
    },
    /// The payload is not a valid postcard encoding of the message type.
    #[error("{name}: malformed payload: {source}")]
    Malformed {
        /// The message type's [`Message::NAME`](crate::Message::NAME).
        name: &'static str,
        /// What postcard found wrong.
        source: postcard::Error,
    },
    /// The payload holds a whole message and then more bytes.
    #[error("{name}: {count} trailing bytes after the message")]
    TrailingBytes {
        /// The message type's [`Message::NAME`](crate::Message::NAME).
        name: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A local value could not be serialized (its `Serialize` impl failed,
    /// e.g. a sequence of unknown length). Never caused by a peer.
    #[error("{name}: cannot serialize: {source}")]
    Serialize {
        /// The message type's [`Message::NAME`](crate::Message::NAME).
        name: &'static str,
        /// What postcard reported.
        source: postcard::Error,
    },

    // --- The local stream ---------------------------------------------------
    /// Reading or writing the underlying stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
