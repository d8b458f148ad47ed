//! [`HandshakeError`]: every way a handshake or a secure stream can fail.

use knotwork_core::PeerId;

/// Errors of the handshake and of [`SecureStream`](crate::SecureStream),
/// grouped by fault: the peer misbehaved, the peer is incompatible, the
/// peer's identity is wrong, or the connection/local side failed.
///
/// Inside a `SecureStream` (which speaks `std::io`), these travel as the
/// inner error of an [`std::io::Error`]; get them back with
/// [`HandshakeError::from_io`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    // --- the peer misbehaved (malformed or forged bytes) ---
    /// The connection ended in the middle of a handshake message or of a
    /// transport frame.
    #[error("connection closed mid-message")]
    Truncated,
    /// A handshake message's length prefix exceeds the handshake limit.
    #[error("handshake message of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A transport frame is shorter than the AEAD tag.
    #[error("frame of {0} bytes is shorter than the authentication tag")]
    FrameTooShort(usize),
    /// The first bytes are not a knotwork handshake (wrong magic).
    #[error("not a knotwork handshake")]
    NotAHandshake,
    /// The preamble has the right magic but an invalid field.
    #[error("malformed preamble")]
    BadPreamble,
    /// A handshake message failed to decrypt/authenticate (tampered, replayed
    /// or produced with different keys or prologue).
    #[error("handshake message failed to authenticate")]
    HandshakeDecrypt,
    /// A handshake message has a wrong size or structure for its pattern.
    #[error("malformed handshake message")]
    MalformedMessage,
    /// Early data longer than [`MAX_EARLY_DATA`](crate::handshake::MAX_EARLY_DATA)
    /// (ours, when set; the peer's, when received).
    #[error("early data of {len} bytes exceeds the limit of {max}")]
    EarlyDataTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The identity payload has the wrong length.
    #[error("identity payload has {0} bytes, expected {expected}", expected = crate::payload::PAYLOAD_LEN)]
    BadPayload(usize),
    /// A transport message failed to decrypt (tampered or out of order).
    #[error("decryption failed")]
    Decrypt,
    /// The responder said it could not complete IK (its static key changed);
    /// redial with XX.
    #[error("responder rejected ik")]
    IkRejected,

    // --- the peer is incompatible ---
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours {ours}, theirs {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u8,
        /// The version the peer sent.
        theirs: u8,
    },
    /// The suite the responder answered with differs from the one we asked
    /// for: someone rewrote the preamble.
    #[error("suite downgrade: sent {sent:?}, peer saw {seen:?}")]
    SuiteDowngrade {
        /// The suite we announced.
        sent: crate::Suite,
        /// The suite the responder says it received.
        seen: crate::Suite,
    },
    /// The suite byte names no suite we know.
    #[error("unsupported suite {0}")]
    UnsupportedSuite(u8),
    /// The pattern byte names no pattern we know.
    #[error("unsupported handshake pattern {0}")]
    UnsupportedPattern(u8),

    // --- identity ---
    /// The identity signature over the Noise static key does not verify.
    #[error("identity signature does not verify")]
    BadSignature,
    /// The Noise static key signed in the payload is not the one used in the
    /// handshake.
    #[error("signed static key does not match the handshake static key")]
    StaticKeyMismatch,
    /// The peer is not the one the dialer expected.
    #[error("expected peer {expected}, got {got}")]
    PeerIdMismatch {
        /// The peer the dialer asked for.
        expected: PeerId,
        /// The peer that answered.
        got: PeerId,
    },

    // --- local / connection ---
    /// The handshake did not finish within the configured time.
    #[error("handshake timed out")]
    Timeout,
    /// A nonce counter reached its maximum (2^64 - 1 messages).
    #[error("nonce exhausted")]
    NonceExhausted,
    /// The handshake state machine was used out of order (a caller bug).
    #[error("handshake used out of order")]
    OutOfOrder,
    /// The Noise library failed locally (key generation, RNG).
    #[error("noise: {0}")]
    Noise(String),
    /// The underlying connection failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Errors through `SecureStream`'s `io::Error`s.
#[cfg(feature = "tokio")]
impl HandshakeError {
    /// The `HandshakeError` carried inside an `io::Error` returned by a
    /// [`SecureStream`](crate::SecureStream), if any.
    pub fn from_io(err: &std::io::Error) -> Option<&HandshakeError> {
        err.get_ref()?.downcast_ref::<HandshakeError>()
    }

    /// Wraps this error into an `io::Error` (kind `InvalidData`, or
    /// `UnexpectedEof` for [`HandshakeError::Truncated`]).
    pub(crate) fn into_io(self) -> std::io::Error {
        match self {
            HandshakeError::Io(e) => e,
            HandshakeError::Truncated => {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, self)
            }
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }

    /// A copy of this error for sticky reporting; `Io` errors become a
    /// fresh `Io` error of the same kind.
    pub(crate) fn duplicate(&self) -> HandshakeError {
        match self {
            HandshakeError::Truncated => HandshakeError::Truncated,
            HandshakeError::FrameTooShort(n) => HandshakeError::FrameTooShort(*n),
            HandshakeError::Decrypt => HandshakeError::Decrypt,
            HandshakeError::NonceExhausted => HandshakeError::NonceExhausted,
            HandshakeError::Io(e) => {
                HandshakeError::Io(std::io::Error::new(e.kind(), e.to_string()))
            }
            other => HandshakeError::Noise(other.to_string()),
        }
    }
}
