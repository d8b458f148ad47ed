//! knotwork-transport-tcp: the [`Transport`] trait over tokio TCP.
//!
//! [`TcpTransport`] listens on IPv4 or IPv6 (`tcp/0.0.0.0:0`, `tcp/[::1]:4000`;
//! port 0 is replaced by the bound port in [`Listener::local_addr`]) and dials
//! with a timeout. Every stream, dialed or accepted, gets `TCP_NODELAY` (small
//! frames leave at once instead of waiting on delayed ACKs) and TCP keepalive
//! (a dead peer behind a silent NAT is noticed by the kernel).
//!
//! With [`TcpConfig::port_reuse`] the listener is bound with `SO_REUSEADDR`
//! and `SO_REUSEPORT`, and [`TcpTransport::dial_from`] opens a connection
//! from the listen port itself: a NAT then maps the listen port outward, and
//! two peers dialing each other from their listen ports at once meet in a
//! TCP simultaneous open (hole punching). Port reuse also lets a second
//! listener of the same user bind the same port, so it is off by default.
//!
//! With [`TcpConfig::local_ip`] every dial leaves from that source address
//! (bound with port 0 before connecting): a host with several addresses
//! picks which one its peers see.
//!
//! A DNS address (`tcp/seed.example.com:4000`, [`PeerAddr::TcpDns`]) is
//! resolved when dialed, with tokio's `lookup_host` (the system resolver,
//! `getaddrinfo`). Its answers (A and AAAA) are tried one after another in
//! the resolver's order (RFC 6724 on glibc: usually IPv6 first), and the
//! first connection made wins; resolving and every attempt together get
//! one [`TcpConfig::dial_timeout`]. Addresses that refuse fail fast, so a
//! dead IPv6 route costs little; an address that swallows SYNs holds the
//! rest back until the timeout (no Happy Eyeballs racing). Listening and
//! [`TcpTransport::dial_from`] take IP addresses only.
//!
//! Errors are the shared [`TransportError`]: `AddrInUse` and
//! `ConnectionRefused` are mapped from the I/O error kinds (a name whose
//! every answer refused is `ConnectionRefused`), a name that does not
//! resolve is `Unresolved`, a dial that takes longer than
//! [`TcpConfig::dial_timeout`] is `Timeout`, and any address other than
//! `tcp/…` (or a name given to listen) is `UnsupportedAddr`.
//!
//! # Example
//! ```
//! use knotwork_core::{Listener, Transport};
//! use knotwork_transport_tcp::TcpTransport;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tcp = TcpTransport::default();
//! let mut listener = tcp.listen(&"tcp/127.0.0.1:0".parse()?).await?;
//! let mut client = tcp.dial(&listener.local_addr()).await?;
//! let (mut server, from) = listener.accept().await?;
//! client.write_all(b"hi").await?;
//! let mut buf = [0u8; 2];
//! server.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hi");
//! println!("accepted from {from}");
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use knotwork_core::{Listener, PeerAddr, Transport, TransportError};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener as TokioListener, TcpSocket, TcpStream};

/// Settings of a [`TcpTransport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpConfig {
    /// How long a dial may take before it fails with [`TransportError::Timeout`].
    pub dial_timeout: Duration,
    /// Idle time before the kernel sends the first keepalive probe;
    /// `None` leaves keepalive off.
    pub keepalive: Option<Duration>,
    /// Bind listeners with `SO_REUSEADDR` + `SO_REUSEPORT` so that
    /// [`TcpTransport::dial_from`] can dial from a listen port.
    pub port_reuse: bool,
    /// The source address of every dial ([`TcpTransport::dial`]); `None`:
    /// the kernel picks it. Dials to the other IP family fail.
    pub local_ip: Option<IpAddr>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(10),
            keepalive: Some(Duration::from_secs(60)),
            port_reuse: false,
            local_ip: None,
        }
    }
}

impl TcpConfig {
    /// Sets [`TcpConfig::dial_timeout`].
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Sets [`TcpConfig::port_reuse`].
    pub fn with_port_reuse(mut self, on: bool) -> Self {
        self.port_reuse = on;
        self
    }

    /// Sets [`TcpConfig::local_ip`].
    pub fn with_local_ip(mut self, ip: IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }

    /// Sets [`TcpConfig::keepalive`].
    pub fn with_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }
}

/// TCP behind the [`Transport`] trait; see the crate docs.
#[derive(Clone, Debug, Default)]
pub struct TcpTransport {
    config: TcpConfig,
}

impl TcpTransport {
    /// A transport with the given settings.
    pub fn new(config: TcpConfig) -> Self {
        Self { config }
    }

    /// The settings in use.
    pub fn config(&self) -> &TcpConfig {
        &self.config
    }

    /// Dials `addr` from local address `local` (a listen address bound with
    /// [`TcpConfig::port_reuse`]), for hole punching; see the crate docs.
    pub async fn dial_from(
        &self,
        local: SocketAddr,
        addr: &PeerAddr,
    ) -> Result<TcpStream, TransportError> {
        let sa = socket_addr(addr)?;
        let socket = reusable_socket(local)?;
        socket.bind(local)?;
        let connect = async { socket.connect(sa).await.map_err(|e| connect_error(addr, e)) };
        self.finish_dial(addr, connect).await
    }

    async fn finish_dial(
        &self,
        addr: &PeerAddr,
        connect: impl std::future::Future<Output = Result<TcpStream, TransportError>>,
    ) -> Result<TcpStream, TransportError> {
        let stream = tokio::time::timeout(self.config.dial_timeout, connect)
            .await
            .map_err(|_| TransportError::Timeout(addr.clone()))??;
        tune(&stream, self.config.keepalive)?;
        Ok(stream)
    }
}

/// Maps a connect error of `addr`: refused is `ConnectionRefused`.
fn connect_error(addr: &PeerAddr, e: io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => TransportError::ConnectionRefused(addr.clone()),
        _ => TransportError::Io(e),
    }
}

/// Resolves `name` and connects to its answers in order; see the crate docs.
async fn connect_name(addr: &PeerAddr, name: &str, port: u16) -> Result<TcpStream, TransportError> {
    let answers: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|source| TransportError::Unresolved {
            addr: addr.clone(),
            source,
        })?
        .collect();
    connect_any(addr, &answers).await
}

/// Connects to the first of `answers` (the resolved forms of `addr`) that
/// accepts; the error of the last one otherwise.
async fn connect_any(addr: &PeerAddr, answers: &[SocketAddr]) -> Result<TcpStream, TransportError> {
    let mut last = TransportError::Unresolved {
        addr: addr.clone(),
        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
    };
    for sa in answers {
        match TcpStream::connect(sa).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = connect_error(addr, e),
        }
    }
    Err(last)
}

/// A socket for `local`'s family with `SO_REUSEADDR` and `SO_REUSEPORT` set.
fn reusable_socket(local: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    Ok(socket)
}

/// Accepts inbound TCP connections on one bound address.
#[derive(Debug)]
pub struct TcpListener {
    inner: TokioListener,
    local: SocketAddr,
    keepalive: Option<Duration>,
}

fn socket_addr(addr: &PeerAddr) -> Result<SocketAddr, TransportError> {
    match addr {
        PeerAddr::Tcp(sa) => Ok(*sa),
        other => Err(TransportError::UnsupportedAddr(other.clone())),
    }
}

/// Sets `TCP_NODELAY` and, if asked, keepalive on a connected stream.
fn tune(stream: &TcpStream, keepalive: Option<Duration>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(idle) = keepalive {
        let params = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle.div_f32(4.0).max(Duration::from_secs(1)));
        SockRef::from(stream).set_tcp_keepalive(&params)?;
    }
    Ok(())
}

#[async_trait]
impl Listener for TcpListener {
    type Connection = TcpStream;

    fn local_addr(&self) -> PeerAddr {
        PeerAddr::Tcp(self.local)
    }

    async fn accept(&mut self) -> Result<(TcpStream, PeerAddr), TransportError> {
        let (stream, from) = self.inner.accept().await?;
        tune(&stream, self.keepalive)?;
        Ok((stream, PeerAddr::Tcp(from)))
    }
}

#[async_trait]
impl Transport for TcpTransport {
    type Connection = TcpStream;
    type Listener = TcpListener;

    async fn listen(&self, addr: &PeerAddr) -> Result<TcpListener, TransportError> {
        let sa = socket_addr(addr)?;
        let bound = if self.config.port_reuse {
            reusable_socket(sa).and_then(|s| {
                s.bind(sa)?;
                s.listen(1024)
            })
        } else {
            TokioListener::bind(sa).await
        };
        let inner = bound.map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => TransportError::AddrInUse(addr.clone()),
            _ => TransportError::Io(e),
        })?;
        let local = inner.local_addr()?;
        Ok(TcpListener {
            inner,
            local,
            keepalive: self.config.keepalive,
        })
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<TcpStream, TransportError> {
        match addr {
            PeerAddr::TcpDns(name, port) => {
                self.finish_dial(addr, connect_name(addr, name.as_str(), *port))
                    .await
            }
            _ => {
                let sa = socket_addr(addr)?;
                let local_ip = self.config.local_ip;
                let connect = async {
                    let connected = match local_ip {
                        None => TcpStream::connect(sa).await,
                        Some(ip) => {
                            let socket = if ip.is_ipv4() {
                                TcpSocket::new_v4()?
                            } else {
                                TcpSocket::new_v6()?
                            };
                            socket.bind(SocketAddr::new(ip, 0))?;
                            socket.connect(sa).await
                        }
                    };
                    connected.map_err(|e| connect_error(addr, e))
                };
                self.finish_dial(addr, connect).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_are_tried_in_order_until_one_accepts() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let live_addr = live.local_addr().unwrap();
        let addr: PeerAddr = "tcp/seed.example:1".parse().unwrap();
        let stream = connect_any(&addr, &[dead, live_addr]).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live_addr);
        assert!(matches!(
            connect_any(&addr, &[dead, dead]).await,
            Err(TransportError::ConnectionRefused(ref a)) if *a == addr
        ));
        assert!(matches!(
            connect_any(&addr, &[]).await,
            Err(TransportError::Unresolved { addr: ref a, .. }) if *a == addr
        ));
    }
}
