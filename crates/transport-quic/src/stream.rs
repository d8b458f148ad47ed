//! [`QuicConnection`], [`QuicHandle`] and [`QuicStream`]: one authenticated
//! QUIC connection, the byte stream the node runs on, and further streams.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use knotwork_core::{BoxConnection, PeerId, Substreams, TransportError};
use quinn::rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::{QuicError, identity};

/// The first byte the dialer writes on the first stream of a connection.
///
/// A QUIC stream reaches the peer only with its first bytes, so the dialer
/// writes this tag at once: the listener can then hand out the connection
/// with its first stream open, whoever speaks first above.
pub const MAIN_STREAM_TAG: u8 = 0x6b;

/// Application error code of a connection closed normally.
const CLOSE_OK: u32 = 0;
/// Application error code of a connection closed for breaking the stream
/// convention ([`QuicError::MainStreamTag`]).
const CLOSE_PROTOCOL: u32 = 1;

/// One bidirectional QUIC stream as a byte stream (AsyncRead + AsyncWrite).
///
/// Shutting down the write half finishes the stream (the peer reads EOF);
/// dropping it finishes it too. As with a TCP socket, bytes written before
/// the drop are still delivered: the connection stays open until the peer
/// has acknowledged them, for at most
/// [`QuicConfig::idle_timeout`](crate::QuicConfig::idle_timeout) (without
/// this a QUIC connection closes at once when its last stream and handle
/// are dropped, and discards what is unsent).
#[derive(Debug)]
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    linger: Duration,
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        // The future holds the connection open; the SendStream's own drop,
        // right after this, finishes the stream. Outside a runtime (a
        // channel dropped after its runtime's work is done) nothing can
        // wait, and the timer must not even be made: it needs a runtime.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (linger, stopped) = (self.linger, self.send.stopped());
        rt.spawn(async move {
            let _ = tokio::time::timeout(linger, stopped).await;
        });
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

/// A cloneable handle on a QUIC connection: its authenticated peer, and
/// further streams beside the first one.
///
/// # Streams and the node's protocols
/// One QUIC connection carries independent streams: data lost or unread
/// on one never holds up another (no head-of-line blocking between them).
/// The node's channel (through [`Substreams`], which this implements) uses:
/// - the first stream (the [`QuicConnection`] itself): version exchange,
///   control (ping, disconnect), every request and response;
/// - one stream per one-way message type, opened by the sender on the
///   first message of that type, so a subscriber that stops reading stalls
///   only its own type (its stream's flow-control window fills).
///
/// The opener writes first (the peer learns of a stream from its first
/// bytes), so a stream starts with a header of the opener's protocol.
/// Streams are limited per connection by
/// [`QuicConfig::max_streams`](crate::QuicConfig::max_streams):
/// [`QuicHandle::open_stream`] waits while the peer's limit is reached.
#[derive(Clone, Debug)]
pub struct QuicHandle {
    conn: quinn::Connection,
    peer: PeerId,
    linger: Duration,
}

impl QuicHandle {
    /// The peer the TLS handshake authenticated.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The peer's current UDP address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Opens a new bidirectional stream; the peer's
    /// [`QuicHandle::accept_stream`] returns it once the first bytes are
    /// written on it.
    pub async fn open_stream(&self) -> Result<QuicStream, QuicError> {
        let (send, recv) = self.conn.open_bi().await?;
        Ok(self.stream(send, recv))
    }

    /// Waits for the next stream the peer opens (after the first one).
    pub async fn accept_stream(&self) -> Result<QuicStream, QuicError> {
        let (send, recv) = self.conn.accept_bi().await?;
        Ok(self.stream(send, recv))
    }

    fn stream(&self, send: quinn::SendStream, recv: quinn::RecvStream) -> QuicStream {
        QuicStream {
            send,
            recv,
            linger: self.linger,
        }
    }

    /// Closes the connection and all its streams at once; the peer sees
    /// [`quinn::ConnectionError::ApplicationClosed`].
    pub fn close(&self) {
        self.conn.close(CLOSE_OK.into(), b"");
    }
}

/// The streams of a connection, for the node: errors as
/// [`TransportError::Io`] with the [`QuicError`] inside.
#[async_trait::async_trait]
impl Substreams for QuicHandle {
    async fn open_stream(&self) -> Result<BoxConnection, TransportError> {
        match QuicHandle::open_stream(self).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => Err(TransportError::Io(io::Error::other(e))),
        }
    }

    async fn accept_stream(&self) -> Result<BoxConnection, TransportError> {
        match QuicHandle::accept_stream(self).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => Err(TransportError::Io(io::Error::other(e))),
        }
    }
}

/// An authenticated QUIC connection as one byte stream (its first stream),
/// what [`QuicTransport`](crate::QuicTransport) dials and accepts.
///
/// [`QuicConnection::handle`] opens and accepts further streams on the
/// same connection. The connection stays open while this value or any
/// handle lives; [`QuicHandle::close`] ends it at once.
#[derive(Debug)]
pub struct QuicConnection {
    handle: QuicHandle,
    main: QuicStream,
}

impl QuicConnection {
    /// The dialer's side: opens the first stream and writes the tag.
    pub(crate) async fn open(conn: quinn::Connection, linger: Duration) -> Result<Self, QuicError> {
        let handle = QuicHandle {
            peer: peer_of(&conn)?,
            conn,
            linger,
        };
        let mut main = handle.open_stream().await?;
        main.write_all(&[MAIN_STREAM_TAG]).await?;
        Ok(Self { handle, main })
    }

    /// The listener's side: accepts the first stream and checks its tag.
    pub(crate) async fn accept(
        conn: quinn::Connection,
        linger: Duration,
    ) -> Result<Self, QuicError> {
        let handle = QuicHandle {
            peer: peer_of(&conn)?,
            conn,
            linger,
        };
        let mut main = handle.accept_stream().await?;
        let tag = main.read_u8().await?;
        if tag != MAIN_STREAM_TAG {
            handle.conn.close(CLOSE_PROTOCOL.into(), b"bad stream tag");
            return Err(QuicError::MainStreamTag(tag));
        }
        Ok(Self { handle, main })
    }

    /// The peer the TLS handshake authenticated.
    pub fn peer_id(&self) -> PeerId {
        self.handle.peer
    }

    /// A handle for further streams on this connection; see [`QuicHandle`].
    pub fn handle(&self) -> &QuicHandle {
        &self.handle
    }
}

/// The peer's identity from a finished handshake.
fn peer_of(conn: &quinn::Connection) -> Result<PeerId, QuicError> {
    let certs = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(QuicError::CertificateCount(0))?;
    identity::peer_of(&certs)
}

impl AsyncRead for QuicConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.main).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.main).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.main).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.main).poll_shutdown(cx)
    }
}
