//! The [`Transport`] trait: how raw byte streams are opened and accepted.
//!
//! A transport knows nothing about identity or encryption: it gives a raw,
//! ordered, reliable byte stream ([`RawConnection`]). The handshake crate
//! upgrades any such stream into an authenticated, encrypted one.

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::PeerAddr;

/// A raw byte stream a transport gives: ordered, reliable, unauthenticated.
pub trait RawConnection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RawConnection for T {}

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
}
