//! Transports behind one object-safe face, so a node can run TCP, the
//! memory transport and others side by side without type parameters, and
//! [`BoxStream`]: any raw connection, boxed (what a
//! [`Dialer`](crate::Dialer) returns and [`NodeHandle::establish`](crate::NodeHandle::establish) takes).

use std::future::Future;
use std::pin::Pin;

use knotwork_core::{Listener, PeerAddr, Transport, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};

/// Any connection a transport gives, boxed.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed connection.
pub type BoxStream = Box<dyn Stream>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object-safe [`Transport`].
pub(crate) trait AnyTransport: Send + Sync {
    fn listen<'a>(
        &'a self,
        addr: &'a PeerAddr,
    ) -> BoxFuture<'a, Result<Box<dyn AnyListener>, TransportError>>;
    fn dial<'a>(&'a self, addr: &'a PeerAddr) -> BoxFuture<'a, Result<BoxStream, TransportError>>;
}

/// An object-safe [`Listener`].
pub(crate) trait AnyListener: Send {
    fn local_addr(&self) -> PeerAddr;
    fn accept(&mut self) -> BoxFuture<'_, Result<(BoxStream, PeerAddr), TransportError>>;
}

impl<L: Listener + 'static> AnyListener for L {
    fn local_addr(&self) -> PeerAddr {
        Listener::local_addr(self)
    }

    fn accept(&mut self) -> BoxFuture<'_, Result<(BoxStream, PeerAddr), TransportError>> {
        Box::pin(async move {
            let (conn, from) = Listener::accept(self).await?;
            Ok((Box::new(conn) as BoxStream, from))
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
            Ok(Box::new(l) as Box<dyn AnyListener>)
        })
    }

    fn dial<'a>(&'a self, addr: &'a PeerAddr) -> BoxFuture<'a, Result<BoxStream, TransportError>> {
        Box::pin(async move {
            let c = Transport::dial(self, addr).await?;
            Ok(Box::new(c) as BoxStream)
        })
    }
}
