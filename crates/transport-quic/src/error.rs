//! [`QuicError`]: every way the QUIC transport can fail.

use std::io;
use std::net::SocketAddr;

use knotwork_core::{PeerAddr, PeerId, TransportError};

/// Errors of the QUIC transport, grouped by fault: the peer's identity
/// binding is wrong, the peer broke the stream convention, the connection
/// failed, or the local side did.
///
/// Through the [`Transport`](knotwork_core::Transport) trait they travel
/// inside a [`TransportError`] (see [`QuicError::into_transport`]): identity
/// failures as [`TransportError::Handshake`], the rest as the matching
/// shared variant or [`TransportError::Io`]; get the `QuicError` back with
/// [`QuicError::from_transport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    // --- the peer's identity binding (its raw public key and signature) ---
    /// The peer sent other than exactly one raw public key.
    #[error("expected one raw public key, got {0} certificates")]
    CertificateCount(usize),
    /// The peer's SubjectPublicKeyInfo has the wrong length for Ed25519.
    #[error("subject public key info of {0} bytes, expected {len}", len = crate::identity::SPKI_LEN)]
    SpkiLength(usize),
    /// The peer's SubjectPublicKeyInfo is not an Ed25519 key.
    #[error("subject public key info is not an ed25519 key")]
    NotEd25519,
    /// The peer signed the handshake with a scheme other than Ed25519.
    #[error("handshake signed with scheme {0:#06x}, expected ed25519")]
    SignatureScheme(u16),
    /// The peer's handshake signature does not verify under its key.
    #[error("handshake signature does not verify")]
    BadSignature,
    /// The peer proved an identity other than the one dialed.
    #[error("expected peer {expected}, got {actual}")]
    PeerIdMismatch {
        /// The PeerId the dialer asked for.
        expected: PeerId,
        /// The PeerId the peer proved.
        actual: PeerId,
    },

    // --- the peer broke the stream convention ---
    /// The dialer's first stream did not start with [`MAIN_STREAM_TAG`](crate::MAIN_STREAM_TAG).
    #[error("first stream starts with {0:#04x}, not the knotwork tag")]
    MainStreamTag(u8),

    // --- the connection ---
    /// quinn refused to start the dial (bad address, endpoint stopping).
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed, during or after the handshake.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The handshake (QUIC, TLS and the first stream) took longer than
    /// [`QuicConfig::handshake_timeout`](crate::QuicConfig::handshake_timeout).
    #[error("handshake timed out")]
    Timeout,

    // --- the local side ---
    /// This transport only handles `quic/…` addresses.
    #[error("address {0} is not a quic address")]
    UnsupportedAddr(PeerAddr),
    /// [`QuicTransport::dial_from`](crate::QuicTransport::dial_from) named a
    /// local address this transport does not listen on.
    #[error("not listening on {0}")]
    NotListening(SocketAddr),
    /// Building the TLS configuration failed.
    #[error("tls configuration: {0}")]
    Tls(#[from] quinn::rustls::Error),
    /// A socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl QuicError {
    /// Whether the peer's identity binding failed (the first group).
    pub fn is_identity(&self) -> bool {
        matches!(
            self,
            QuicError::CertificateCount(_)
                | QuicError::SpkiLength(_)
                | QuicError::NotEd25519
                | QuicError::SignatureScheme(_)
                | QuicError::BadSignature
                | QuicError::PeerIdMismatch { .. }
        )
    }

    /// Converts to the shared [`TransportError`] for a dial to or listen on
    /// `addr`.
    pub fn into_transport(self, addr: &PeerAddr) -> TransportError {
        use quinn::ConnectionError as C;
        match self {
            QuicError::UnsupportedAddr(a) => TransportError::UnsupportedAddr(a),
            QuicError::Timeout | QuicError::Connection(C::TimedOut) => {
                TransportError::Timeout(addr.clone())
            }
            QuicError::Io(e) if e.kind() == io::ErrorKind::AddrInUse => {
                TransportError::AddrInUse(addr.clone())
            }
            QuicError::Connection(C::ConnectionClosed(ref close))
                if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                TransportError::ConnectionRefused(addr.clone())
            }
            e if e.is_identity() || e.is_tls_alert() => TransportError::Handshake(Box::new(e)),
            QuicError::Io(e) => TransportError::Io(e),
            e => TransportError::Io(io::Error::other(e)),
        }
    }

    /// The `QuicError` inside a [`TransportError`] made by
    /// [`QuicError::into_transport`], if there is one.
    pub fn from_transport(err: &TransportError) -> Option<&QuicError> {
        let inner: &(dyn std::error::Error + 'static) = match err {
            TransportError::Handshake(e) => e.as_ref(),
            TransportError::Io(e) => e.get_ref()?,
            _ => return None,
        };
        inner.downcast_ref()
    }

    /// Whether the connection ended with a TLS alert: the peer's TLS, or
    /// ours on a failure other than the identity checks, refused the
    /// handshake (for example the peer refused our identity).
    fn is_tls_alert(&self) -> bool {
        use quinn::ConnectionError as C;
        match self {
            QuicError::Connection(C::ConnectionClosed(close)) => is_crypto(close.error_code),
            QuicError::Connection(C::TransportError(e)) => is_crypto(e.code),
            _ => false,
        }
    }
}

/// QUIC carries TLS alerts as the error codes 0x100..=0x1ff.
fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..=0x1ff).contains(&u64::from(code))
}
