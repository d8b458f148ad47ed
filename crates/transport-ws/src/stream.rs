//! [`WsStream`]: a WebSocket connection as a byte stream.
//!
//! Reads hand out the payloads of binary messages in order, so message
//! boundaries carry no meaning. Pings are answered by tungstenite while
//! reading; pongs are skipped; a close frame is the end of the stream (EOF,
//! and tungstenite answers it); a text message is refused with
//! [`WsError::TextMessage`]. Writes collect bytes into one binary message of
//! at most [`WsConfig::write_message`](crate::WsConfig::write_message) bytes,
//! sent when full or on flush; shutdown sends a close frame.
//!
//! WebSocket has no half-close: the end that receives a close frame answers
//! it and may then send nothing more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::{Error as TungError, Message};

use crate::WsError;

/// A WebSocket connection carrying a byte stream; see the module docs.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message read.
    unread: Bytes,
    /// Bytes written and not yet sent as a message.
    unsent: BytesMut,
    /// Largest message this end sends.
    write_message: usize,
    /// A close frame or the end of the connection was read.
    eof: bool,
}

impl<S> std::fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("unread", &self.unread.len())
            .field("unsent", &self.unsent.len())
            .field("eof", &self.eof)
            .finish()
    }
}

/// An I/O error carrying a [`WsError`].
fn io_error(kind: io::ErrorKind, e: WsError) -> io::Error {
    io::Error::new(kind, e)
}

/// Maps a tungstenite error met while reading or writing.
fn map_error(e: TungError) -> io::Error {
    match e {
        TungError::Io(e) => e,
        TungError::Capacity(CapacityError::MessageTooLong { size, max_size }) => io_error(
            io::ErrorKind::InvalidData,
            WsError::TooLarge {
                size,
                max: max_size,
            },
        ),
        TungError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => io_error(
            io::ErrorKind::UnexpectedEof,
            WsError::ClosedWithoutHandshake,
        ),
        TungError::ConnectionClosed | TungError::AlreadyClosed => {
            io_error(io::ErrorKind::NotConnected, WsError::Closed)
        }
        other => io_error(io::ErrorKind::InvalidData, WsError::Protocol(other)),
    }
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps an upgraded WebSocket; sent messages hold at most
    /// `write_message` bytes.
    pub(crate) fn new(ws: WebSocketStream<S>, write_message: usize) -> Self {
        Self {
            ws,
            unread: Bytes::new(),
            unsent: BytesMut::new(),
            write_message: write_message.max(1),
            eof: false,
        }
    }

    /// The underlying stream (a TCP stream for a plain `ws` connection).
    pub fn get_ref(&self) -> &S {
        self.ws.get_ref()
    }

    /// Sends the collected bytes as one binary message (not flushed).
    fn poll_send_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unsent.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(map_error)?;
        let message = Message::Binary(self.unsent.split().freeze());
        ws.start_send(message).map_err(map_error)?;
        Poll::Ready(Ok(()))
    }
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.unread.is_empty() {
                let n = this.unread.len().min(buf.remaining());
                buf.put_slice(this.unread.get(..n).unwrap_or_default());
                this.unread.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.unread = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io_error(
                        io::ErrorKind::InvalidData,
                        WsError::TextMessage,
                    )));
                }
                Some(Ok(Message::Close(_))) | None => {
                    this.eof = true;
                    // Send tungstenite's answer to the close now if the
                    // socket takes it; otherwise the next write, flush or
                    // shutdown does.
                    let _ = Pin::new(&mut this.ws).poll_flush(cx);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(TungError::ConnectionClosed)) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(map_error(e))),
            }
        }
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.unsent.len() >= this.write_message {
            ready!(this.poll_send_unsent(cx))?;
        }
        let n = buf.len().min(this.write_message - this.unsent.len());
        this.unsent
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_unsent(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(map_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_unsent(cx))?;
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(TungError::ConnectionClosed | TungError::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(map_error(e))),
        }
    }
}
