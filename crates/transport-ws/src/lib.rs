//! knotwork-transport-ws: the [`Transport`] trait over WebSocket, for
//! networks that pass only HTTP.
//!
//! A connection is one WebSocket whose binary messages carry the byte
//! stream ([`WsStream`]): the Noise handshake, the version exchange and the
//! channel run over it unchanged, and message boundaries mean nothing.
//!
//! # Layout
//! - [`upgrade`]: the server's opening handshake as functions on bytes: a
//!   request head in, an upgrade or an HTTP refusal out.
//! - [`stream`]: [`WsStream`], a WebSocket as AsyncRead + AsyncWrite.
//! - here: [`WsTransport`], [`WsListener`], [`WsConfig`], [`WsError`].
//!
//! # Addresses
//! `ws/<host>:<port>/<path>` ([`WsAddr`]); the host is an IP literal or a
//! DNS name (resolved when dialing; each answer is tried in turn). A
//! listener binds an IP address and answers upgrades at its path only.
//!
//! `wss/…` addresses name a TLS-terminating front (a reverse proxy or load
//! balancer holding the certificate) that forwards to a node listening on
//! plain `ws` behind it: the node advertises the `wss` address and listens
//! on the `ws` one. This crate has no TLS of its own, so listening on or
//! dialing a `wss` address is [`TransportError::UnsupportedAddr`].
//!
//! # Limits
//! - Frames and messages from the peer are checked against
//!   [`WsConfig::max_message`] from their headers, before anything is
//!   allocated for them ([`WsError::TooLarge`]).
//! - An inbound upgrade must complete within [`WsConfig::handshake_timeout`];
//!   at most [`WsConfig::max_pending`] run at once (further TCP connections
//!   wait in the kernel's backlog). A request that is not an upgrade gets an
//!   HTTP refusal ([`upgrade::Refusal`]: `426 Upgrade Required` for a plain
//!   GET, `404` for another path) and is closed; it never reaches `accept`.
//!
//! # Example
//! ```
//! use knotwork_core::{Listener, Transport};
//! use knotwork_transport_ws::WsTransport;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ws = WsTransport::default();
//! let mut listener = ws.listen(&"ws/127.0.0.1:0/knot".parse()?).await?;
//! let addr = listener.local_addr(); // ws/127.0.0.1:<port>/knot
//! let (client, server) = tokio::join!(ws.dial(&addr), listener.accept());
//! let (mut client, (mut server, _from)) = (client?, server?);
//! client.write_all(b"hi").await?;
//! client.flush().await?; // bytes leave as a binary message on flush
//! let mut buf = [0u8; 2];
//! server.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hi");
//! # Ok(()) }
//! ```

pub mod stream;
pub mod upgrade;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use knotwork_core::{Host, Listener, PeerAddr, Transport, TransportError, WsAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

pub use stream::WsStream;
use upgrade::{MAX_REQUEST_HEAD, check_request};

/// Errors of this transport, carried inside [`io::Error`]s (reads and
/// writes) or [`TransportError::Io`] (dials).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    // The peer broke the rules of this transport.
    /// The peer sent a text message; only binary messages carry bytes.
    #[error("text message refused: only binary messages carry the stream")]
    TextMessage,
    /// A frame or message larger than [`WsConfig::max_message`].
    #[error("websocket frame or message of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// Its size, from its header.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Any other violation of RFC 6455 (masking, opcodes, fragmentation, …).
    #[error("websocket protocol: {0}")]
    Protocol(tokio_tungstenite::tungstenite::Error),
    /// A peer's upgrade request was refused (and answered with this status).
    #[error("upgrade request refused: {0}")]
    Refused(upgrade::Refusal),
    /// The server refused our upgrade request.
    #[error("upgrade refused: {0}")]
    Upgrade(tokio_tungstenite::tungstenite::Error),

    // The connection ended.
    /// The TCP connection ended without a close frame.
    #[error("connection closed without a websocket close")]
    ClosedWithoutHandshake,
    /// The WebSocket is closed; nothing more can be sent.
    #[error("websocket closed")]
    Closed,
}

/// Bytes of one message this end sends, by default.
pub const DEFAULT_WRITE_MESSAGE: usize = 64 * 1024;
/// Largest frame or message accepted from a peer, by default.
pub const DEFAULT_MAX_MESSAGE: usize = 256 * 1024;

/// Most bytes tungstenite reads from the socket at once. It zero-fills
/// that much before every read (0.30's `read_in`), so its default of 128 KiB
/// cost ~2 µs per small message: pinned 64 B round trips took 1.45× raw
/// TCP's time with it and 1.14× with 16 KiB (perf harness, `--only
/// transports`), bulk unchanged within the noise.
const READ_CHUNK: usize = 16 * 1024;

/// Settings of a [`WsTransport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsConfig {
    /// Largest frame, and largest message, accepted from a peer.
    pub max_message: usize,
    /// Largest message this end sends (bytes are collected up to it).
    pub write_message: usize,
    /// How long a dial (TCP connect and upgrade) may take.
    pub dial_timeout: Duration,
    /// How long an inbound upgrade may take.
    pub handshake_timeout: Duration,
    /// Inbound upgrades in progress at once, at most.
    pub max_pending: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            write_message: DEFAULT_WRITE_MESSAGE,
            dial_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_pending: 64,
        }
    }
}

impl WsConfig {
    /// Sets [`WsConfig::max_message`].
    pub fn with_max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Sets [`WsConfig::write_message`].
    pub fn with_write_message(mut self, bytes: usize) -> Self {
        self.write_message = bytes;
        self
    }

    /// Sets [`WsConfig::dial_timeout`].
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Sets [`WsConfig::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// tungstenite's settings: the peer's frames and messages are limited
    /// before they are read.
    fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK)
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
    }
}

/// WebSocket behind the [`Transport`] trait; see the crate docs.
#[derive(Clone, Debug, Default)]
pub struct WsTransport {
    config: WsConfig,
}

impl WsTransport {
    /// A transport with the given settings.
    pub fn new(config: WsConfig) -> Self {
        Self { config }
    }

    /// The settings in use.
    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    async fn connect(&self, addr: &PeerAddr, ws: &WsAddr) -> Result<Conn, TransportError> {
        let targets: Vec<SocketAddr> = match ws.host() {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, ws.port())],
            Host::Dns(name) => tokio::net::lookup_host((name.as_str(), ws.port()))
                .await
                .map_err(|source| TransportError::Unresolved {
                    addr: addr.clone(),
                    source,
                })?
                .collect(),
        };
        // Tries each resolved address in turn; the last error otherwise.
        let tcp = TcpStream::connect(targets.as_slice())
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionRefused => TransportError::ConnectionRefused(addr.clone()),
                _ => TransportError::Io(e),
            })?;
        tcp.set_nodelay(true)?;
        let (socket, _response) = tokio_tungstenite::client_async_with_config(
            ws.url(),
            tcp,
            Some(self.config.websocket()),
        )
        .await
        .map_err(|e| {
            TransportError::Io(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                WsError::Upgrade(e),
            ))
        })?;
        Ok(WsStream::new(socket, self.config.write_message))
    }
}

/// The connection type: a WebSocket over TCP.
pub type Conn = WsStream<TcpStream>;

/// The plain `ws` address of `addr`, or `UnsupportedAddr`.
fn ws_addr(addr: &PeerAddr) -> Result<&WsAddr, TransportError> {
    match addr {
        PeerAddr::Ws(ws) if !ws.tls() => Ok(ws),
        other => Err(TransportError::UnsupportedAddr(other.clone())),
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<(Conn, PeerAddr), io::Error>> + Send>>;

/// Accepts WebSocket connections on one TCP port and path.
pub struct WsListener {
    tcp: TcpListener,
    local: PeerAddr,
    path: String,
    config: WsConfig,
    /// Inbound upgrades in progress; they advance while `accept` is polled.
    pending: FuturesUnordered<Pending>,
}

impl std::fmt::Debug for WsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsListener")
            .field("local", &self.local)
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Reads a request head and answers it: `101` and the upgraded stream, or
/// an HTTP refusal and an error.
async fn serve_upgrade(
    mut tcp: TcpStream,
    from: SocketAddr,
    path: String,
    config: WsConfig,
) -> io::Result<(Conn, PeerAddr)> {
    tcp.set_nodelay(true)?;
    let mut head = Vec::with_capacity(1024);
    let verdict = loop {
        let mut chunk = [0u8; 1024];
        let room = MAX_REQUEST_HEAD.saturating_sub(head.len()).min(chunk.len());
        let n = tcp.read(chunk.get_mut(..room).unwrap_or_default()).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(verdict) = check_request(&head, &path).transpose() {
            break verdict;
        }
    };
    match verdict {
        Ok(up) => {
            tcp.write_all(up.response().as_bytes()).await?;
            let socket =
                WebSocketStream::from_raw_socket(tcp, Role::Server, Some(config.websocket())).await;
            let peer = WsAddr::new(false, Host::Ip(from.ip()), from.port(), "")
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Ok((WsStream::new(socket, config.write_message), peer.into()))
        }
        Err(refusal) => {
            tcp.write_all(refusal.response().as_bytes()).await?;
            tcp.shutdown().await?;
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                WsError::Refused(refusal),
            ))
        }
    }
}

#[async_trait]
impl Listener for WsListener {
    type Connection = Conn;

    fn local_addr(&self) -> PeerAddr {
        self.local.clone()
    }

    /// The next upgraded connection and its peer (`ws/<ip>:<port>`). Failed
    /// upgrades are answered and dropped here, never returned.
    async fn accept(&mut self) -> Result<(Conn, PeerAddr), TransportError> {
        loop {
            let room = self.pending.len() < self.config.max_pending.max(1);
            tokio::select! {
                accepted = self.tcp.accept(), if room => {
                    let (tcp, from) = accepted?;
                    let timeout = self.config.handshake_timeout;
                    let upgrade = serve_upgrade(tcp, from, self.path.clone(), self.config.clone());
                    self.pending.push(Box::pin(async move {
                        tokio::time::timeout(timeout, upgrade)
                            .await
                            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                    }));
                }
                Some(done) = self.pending.next() => match done {
                    Ok(conn) => return Ok(conn),
                    Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                },
            }
        }
    }
}

#[async_trait]
impl Transport for WsTransport {
    type Connection = Conn;
    type Listener = WsListener;

    async fn listen(&self, addr: &PeerAddr) -> Result<WsListener, TransportError> {
        let ws = ws_addr(addr)?;
        let Host::Ip(ip) = ws.host() else {
            return Err(TransportError::UnsupportedAddr(addr.clone()));
        };
        let tcp = TcpListener::bind(SocketAddr::new(*ip, ws.port()))
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::AddrInUse => TransportError::AddrInUse(addr.clone()),
                _ => TransportError::Io(e),
            })?;
        let bound = tcp.local_addr()?;
        let local = WsAddr::new(false, Host::Ip(bound.ip()), bound.port(), ws.path())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(WsListener {
            tcp,
            local: local.into(),
            path: ws.path().to_string(),
            config: self.config.clone(),
            pending: FuturesUnordered::new(),
        })
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<Conn, TransportError> {
        let ws = ws_addr(addr)?;
        tokio::time::timeout(self.config.dial_timeout, self.connect(addr, ws))
            .await
            .map_err(|_| TransportError::Timeout(addr.clone()))?
    }
}
