//! The [`Transport`] trait: how raw byte streams are opened and accepted.
//!
//! A transport gives a raw, ordered, reliable byte stream ([`RawConnection`]).
//! Most transports know nothing about identity or encryption: the handshake
//! crate upgrades their streams into authenticated, encrypted ones. A
//! transport that authenticates the peer itself (QUIC, whose TLS handshake
//! proves the peer's Ed25519 identity) says so through
//! [`Transport::authenticated_peer`], and the node then skips its own
//! handshake on that connection. A transport that carries several
//! independent streams on one connection (QUIC) offers them through
//! [`Transport::substreams`], as an object-safe [`Substreams`], so the
//! node can use them without naming the transport.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{PeerAddr, PeerId};

/// A raw byte stream a transport gives: ordered, reliable, and
/// unauthenticated unless [`Transport::authenticated_peer`] says otherwise.
pub trait RawConnection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RawConnection for T {}

/// A boxed [`RawConnection`]: what [`Substreams`] opens and accepts.
pub type BoxConnection = Box<dyn RawConnection>;

/// Further streams on one connection, beside the byte stream the
/// transport dialed or accepted: for transports that multiplex (QUIC).
///
/// Streams are independent: bytes unread on one never hold up another.
/// A stream reaches the peer only with its first bytes, so the opener
/// writes first. Object-safe, so the node keeps it as
/// `Arc<dyn Substreams>` beside the connection.
#[async_trait]
pub trait Substreams: Send + Sync + 'static {
    /// Opens a new stream (waiting while the peer's limit of open streams
    /// is reached).
    async fn open_stream(&self) -> Result<BoxConnection, TransportError>;

    /// Waits for the next stream the peer opens; an error once the
    /// connection is closed.
    async fn accept_stream(&self) -> Result<BoxConnection, TransportError>;
}

/// Errors a transport reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Something already listens on this address.
    #[error("address in use: {0}")]
    AddrInUse(PeerAddr),
    /// Nobody listens on the dialed address.
    #[error("connection refused by {0}")]
    ConnectionRefused(PeerAddr),
    /// This transport does not handle that kind of address.
    #[error("address {0} is not supported by this transport")]
    UnsupportedAddr(PeerAddr),
    /// The dial did not complete in time.
    #[error("dial to {0} timed out")]
    Timeout(PeerAddr),
    /// A DNS name in the address did not resolve to any IP address.
    #[error("{addr} did not resolve: {source}")]
    Unresolved {
        /// The address whose name did not resolve.
        addr: PeerAddr,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The listener was closed.
    #[error("listener closed")]
    ListenerClosed,
    /// The transport's own handshake failed: a transport that authenticates
    /// (see [`Transport::authenticated_peer`]) found the peer's identity
    /// wrong, or the peer refused ours. The transport's own error is inside.
    #[error("transport handshake: {0}")]
    Handshake(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Any other I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Accepts inbound raw connections on one local address.
#[async_trait]
pub trait Listener: Send {
    /// The connection type accepted.
    type Connection: RawConnection;

    /// The address actually bound (a requested port 0 is replaced by the real one).
    fn local_addr(&self) -> PeerAddr;

    /// Waits for the next inbound connection and the address it came from.
    async fn accept(&mut self) -> Result<(Self::Connection, PeerAddr), TransportError>;
}

/// Opens and accepts raw byte streams to and from [`PeerAddr`]s.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The connection type dialed and accepted.
    type Connection: RawConnection;
    /// The listener type.
    type Listener: Listener<Connection = Self::Connection>;

    /// Starts listening on `addr`.
    async fn listen(&self, addr: &PeerAddr) -> Result<Self::Listener, TransportError>;

    /// Opens a connection to `addr`.
    async fn dial(&self, addr: &PeerAddr) -> Result<Self::Connection, TransportError>;

    /// The peer this transport authenticated on `conn`, if it does so.
    ///
    /// `Some(peer)` promises that the transport's own handshake proved
    /// that the other end holds `peer`'s Ed25519 key, and that the bytes of
    /// `conn` are encrypted and integrity-protected under keys bound to
    /// that proof: the node may then skip its Noise handshake and run only
    /// the version exchange. `None` (the default, and what TCP, BLE and
    /// the memory transport return) means the node must authenticate the
    /// connection itself.
    fn authenticated_peer(_conn: &Self::Connection) -> Option<PeerId> {
        None
    }

    /// Further streams on `conn`, if this transport carries several per
    /// connection. `None` (the default) means `conn` is the only one.
    fn substreams(_conn: &Self::Connection) -> Option<Arc<dyn Substreams>> {
        None
    }
}
