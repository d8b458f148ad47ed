//! Transports behind one object-safe face, so a node can run TCP, QUIC,
//! the memory transport and others side by side without type parameters;
//! [`BoxStream`]: any raw connection, boxed (what a
//! [`Dialer`](crate::Dialer) returns); and [`RawConn`]: a raw connection
//! with what its transport proved about it (what
//! [`NodeHandle::establish`](crate::NodeHandle::establish) takes).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use knotwork_core::{Listener, PeerAddr, PeerId, Substreams, Transport, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};

/// Any connection a transport gives, boxed.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed connection.
pub type BoxStream = Box<dyn Stream>;

/// A raw connection and what its transport says of it: the peer it
/// authenticated ([`Transport::authenticated_peer`]; the node then skips
/// its Noise handshake) and its further streams
/// ([`Transport::substreams`]; the channel then gives one-way message
/// types streams of their own). A bare stream (a [`BoxStream`], a boxed
/// `TcpStream`) converts into one that has neither.
pub struct RawConn {
    pub(crate) stream: BoxStream,
    pub(crate) peer: Option<PeerId>,
    pub(crate) substreams: Option<Arc<dyn Substreams>>,
}

impl RawConn {
    /// A connection of transport `T`, with what `T` says of it.
    pub fn of<T: Transport>(conn: T::Connection) -> Self {
        let peer = T::authenticated_peer(&conn);
        let substreams = T::substreams(&conn);
        Self {
            stream: Box::new(conn),
            peer,
            substreams,
        }
    }

    /// The peer the transport authenticated, if it does.
    pub fn authenticated_peer(&self) -> Option<PeerId> {
        self.peer
    }

    /// The same connection with its byte stream replaced by `wrap`'s
    /// result (a deadline, a tap).
    pub(crate) fn map(self, wrap: impl FnOnce(BoxStream) -> BoxStream) -> Self {
        Self {
            stream: wrap(self.stream),
            ..self
        }
    }
}

impl From<BoxStream> for RawConn {
    fn from(stream: BoxStream) -> Self {
        Self {
            stream,
            peer: None,
            substreams: None,
        }
    }
}

impl<S: Stream> From<Box<S>> for RawConn {
    fn from(stream: Box<S>) -> Self {
        Self::from(stream as BoxStream)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object-safe [`Transport`].
pub(crate) trait AnyTransport: Send + Sync {
    fn listen<'a>(
        &'a self,
        addr: &'a PeerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn AnyListener>, TransportError>>;
    fn dial<'a>(&'a self, addr: &'a PeerAddr) -> BoxFuture<'a, Result<RawConn, TransportError>>;
}

/// An object-safe [`Listener`].
pub(crate) trait AnyListener: Send {
    fn local_addr(&self) -> PeerAddr;
    fn accept(&mut self) -> BoxFuture<'_, Result<(RawConn, PeerAddr), TransportError>>;
}

/// A listener of transport `T`, which knows what `T` says of its connections.
struct Listening<T: Transport>(T::Listener);

impl<T: Transport + 'static> AnyListener for Listening<T> {
    fn local_addr(&self) -> PeerAddr {
        Listener::local_addr(&self.0)
    }

    fn accept(&mut self) -> BoxFuture<'_, Result<(RawConn, PeerAddr), TransportError>> {
        Box::pin(async move {
            let (conn, from) = Listener::accept(&mut self.0).await?;
            Ok((RawConn::of::<T>(conn), from))
        })
    }
}

impl<T: Transport + 'static> AnyTransport for T {
    fn listen<'a>(
        &'a self,
        addr: &'a PeerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn AnyListener>, TransportError>> {
        Box::pin(async move {
            let l = Transport::listen(self, addr).await?;
            Ok(Box::new(Listening::<T>(l)) as Box<dyn AnyListener>)
        })
    }

    fn dial<'a>(&'a self, addr: &'a PeerAddr) -> BoxFuture<'a, Result<RawConn, TransportError>> {
        Box::pin(async move {
            let c = Transport::dial(self, addr).await?;
            Ok(RawConn::of::<T>(c))
        })
    }
}
