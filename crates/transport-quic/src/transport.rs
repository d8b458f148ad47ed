//! [`QuicTransport`] and [`QuicListener`]: the [`Transport`] trait over quinn.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use knotwork_core::{Keypair, Listener, PeerAddr, PeerId, Substreams, Transport, TransportError};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Tls;
use crate::{QuicConfig, QuicConnection, QuicError};

/// The TLS server name a dial asks for. It is not sent (no SNI) and not
/// checked: the peer is identified by its key.
const SERVER_NAME: &str = "knotwork";

/// QUIC behind the [`Transport`] trait; see the crate docs. Cloning is
/// cheap and clones share listeners and dial sockets.
#[derive(Clone, Debug)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: QuicConfig,
    tls: Tls,
    endpoints: Mutex<Endpoints>,
}

/// The UDP sockets of one transport.
#[derive(Debug, Default)]
struct Endpoints {
    /// Listening endpoints by bound address; dials leave from them.
    listening: Vec<(SocketAddr, quinn::Endpoint)>,
    /// Dial-only endpoints on an ephemeral port, one per address family,
    /// for dials while nothing listens in that family.
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

fn lock(m: &Mutex<Endpoints>) -> std::sync::MutexGuard<'_, Endpoints> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn socket_addr(addr: &PeerAddr) -> Result<SocketAddr, QuicError> {
    match addr {
        PeerAddr::Quic(sa) => Ok(*sa),
        other => Err(QuicError::UnsupportedAddr(other.clone())),
    }
}

impl QuicTransport {
    /// A transport that proves `identity` in every handshake.
    pub fn new(identity: &Keypair, config: QuicConfig) -> Result<Self, QuicError> {
        let tls = Tls::new(identity, &config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                tls,
                endpoints: Mutex::default(),
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &QuicConfig {
        &self.inner.config
    }

    async fn listen_quic(&self, addr: &PeerAddr) -> Result<QuicListener, QuicError> {
        let sa = socket_addr(addr)?;
        let server = self.inner.tls.server_config(&self.inner.config)?;
        let endpoint = quinn::Endpoint::server(server, sa)?;
        let local = endpoint.local_addr()?;
        lock(&self.inner.endpoints)
            .listening
            .push((local, endpoint.clone()));
        let (ready, incoming) = mpsc::channel(self.inner.config.max_pending_handshakes.max(1));
        let stats = Arc::new(Counters::default());
        let task = tokio::spawn(serve(
            endpoint.clone(),
            self.inner.config.clone(),
            ready,
            stats.clone(),
        ));
        Ok(QuicListener {
            transport: self.clone(),
            endpoint,
            local,
            incoming,
            stats,
            task,
        })
    }

    /// Dials `addr`, and fails unless the peer proves `expected` (when
    /// given; [`QuicError::PeerIdMismatch`] inside
    /// [`TransportError::Handshake`]). The dial leaves from a listening
    /// socket of the same address family if there is one (so the peer sees
    /// the listen port, as a NAT maps it), otherwise from a dial-only
    /// socket on an ephemeral port.
    pub async fn dial_peer(
        &self,
        addr: &PeerAddr,
        expected: Option<PeerId>,
    ) -> Result<QuicConnection, TransportError> {
        let dial = async {
            let sa = socket_addr(addr)?;
            let endpoint = self.dial_endpoint(sa)?;
            self.connect(&endpoint, sa, expected).await
        };
        dial.await.map_err(|e| e.into_transport(addr))
    }

    /// Dials `addr` from the listening socket bound to `local`, for UDP
    /// hole punching: both peers dial each other from their listen sockets
    /// at once, each NAT maps the listen port outward and lets the other's
    /// packets in. Both dials may succeed, giving two connections (each
    /// side's dial and the other's, accepted by its listener); the node
    /// keeps one per PeerId. [`QuicError::NotListening`] if no listener of
    /// this transport is bound to `local`.
    pub async fn dial_from(
        &self,
        local: SocketAddr,
        addr: &PeerAddr,
        expected: Option<PeerId>,
    ) -> Result<QuicConnection, TransportError> {
        let dial = async {
            let sa = socket_addr(addr)?;
            let endpoint = lock(&self.inner.endpoints)
                .listening
                .iter()
                .find(|(bound, _)| *bound == local)
                .map(|(_, e)| e.clone())
                .ok_or(QuicError::NotListening(local))?;
            self.connect(&endpoint, sa, expected).await
        };
        dial.await.map_err(|e| e.into_transport(addr))
    }

    fn dial_endpoint(&self, to: SocketAddr) -> Result<quinn::Endpoint, QuicError> {
        let mut eps = lock(&self.inner.endpoints);
        if let Some((_, e)) = eps
            .listening
            .iter()
            .find(|(bound, _)| bound.is_ipv4() == to.is_ipv4())
        {
            return Ok(e.clone());
        }
        let slot = if to.is_ipv4() {
            &mut eps.v4
        } else {
            &mut eps.v6
        };
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let any = if to.is_ipv4() {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        };
        let e = quinn::Endpoint::client(any)?;
        *slot = Some(e.clone());
        Ok(e)
    }

    async fn connect(
        &self,
        endpoint: &quinn::Endpoint,
        to: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<QuicConnection, QuicError> {
        let (client, verifier) = self.inner.tls.client_config(expected)?;
        let connecting = endpoint.connect_with(client, to, SERVER_NAME)?;
        let linger = self.inner.config.idle_timeout;
        let handshake = async { QuicConnection::open(connecting.await?, linger).await };
        match tokio::time::timeout(self.inner.config.handshake_timeout, handshake).await {
            Ok(Ok(conn)) => Ok(conn),
            // A failed check of ours is the reason, not the alert it sent.
            Ok(Err(e)) => Err(verifier.take_failure().unwrap_or(e)),
            Err(_) => Err(QuicError::Timeout),
        }
    }
}

#[async_trait]
impl Transport for QuicTransport {
    type Connection = QuicConnection;
    type Listener = QuicListener;

    async fn listen(&self, addr: &PeerAddr) -> Result<QuicListener, TransportError> {
        self.listen_quic(addr)
            .await
            .map_err(|e| e.into_transport(addr))
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<QuicConnection, TransportError> {
        self.dial_peer(addr, None).await
    }

    fn authenticated_peer(conn: &QuicConnection) -> Option<PeerId> {
        Some(conn.peer_id())
    }

    fn substreams(conn: &QuicConnection) -> Option<Arc<dyn Substreams>> {
        Some(Arc::new(conn.handle().clone()))
    }
}

/// What a listener did with connection attempts so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Attempts from an unvalidated address, answered with a stateless
    /// Retry (no handshake, no state kept).
    pub retries: u64,
    /// Attempts refused: over a limit, or an invalid Retry token.
    pub refused: u64,
    /// Handshakes started from validated addresses.
    pub handshakes: u64,
    /// Handshakes that failed (identity, timeout, stream tag).
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    retries: AtomicU64,
    refused: AtomicU64,
    handshakes: AtomicU64,
    failed: AtomicU64,
}

/// Accepts inbound QUIC connections on one UDP socket, which
/// [`QuicTransport::dial_from`] can also dial from. Dropping it stops
/// accepting: a new connection attempt gets no answer (the dialer times
/// out, as at a port nobody listens on), while connections already made
/// go on on the socket, which closes with the last of them.
#[derive(Debug)]
pub struct QuicListener {
    transport: QuicTransport,
    endpoint: quinn::Endpoint,
    local: SocketAddr,
    incoming: mpsc::Receiver<QuicConnection>,
    stats: Arc<Counters>,
    task: JoinHandle<()>,
}

impl QuicListener {
    /// The bound UDP address.
    pub fn local_socket_addr(&self) -> SocketAddr {
        self.local
    }

    /// What this listener did with connection attempts so far.
    pub fn stats(&self) -> ListenerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStats {
            retries: get(&self.stats.retries),
            refused: get(&self.stats.refused),
            handshakes: get(&self.stats.handshakes),
            failed: get(&self.stats.failed),
        }
    }
}

impl Drop for QuicListener {
    fn drop(&mut self) {
        self.task.abort();
        self.endpoint.set_server_config(None);
        lock(&self.transport.inner.endpoints)
            .listening
            .retain(|(bound, _)| *bound != self.local);
    }
}

#[async_trait]
impl Listener for QuicListener {
    type Connection = QuicConnection;

    fn local_addr(&self) -> PeerAddr {
        PeerAddr::Quic(self.local)
    }

    async fn accept(&mut self) -> Result<(QuicConnection, PeerAddr), TransportError> {
        let conn = self
            .incoming
            .recv()
            .await
            .ok_or(TransportError::ListenerClosed)?;
        let from = PeerAddr::Quic(conn.handle().remote_addr());
        Ok((conn, from))
    }
}

/// The listener's driver: answers each connection attempt, runs the
/// handshakes of validated ones side by side, and queues finished
/// connections for [`QuicListener::accept`] (a full queue holds handshakes
/// back, and with them the pending limit).
///
/// An attempt from an address not yet validated gets a Retry: a stateless
/// packet smaller than the Initial that carries a token, so a spoofed
/// source costs one small packet and no handshake (no amplification). The
/// client repeats its Initial with the token, which validates the address.
/// A client with a token from an earlier connection (NEW_TOKEN) skips this.
async fn serve(
    endpoint: quinn::Endpoint,
    config: QuicConfig,
    ready: mpsc::Sender<QuicConnection>,
    stats: Arc<Counters>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        if !incoming.remote_address_validated() {
            match incoming.retry() {
                Ok(()) => stats.retries.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    e.into_incoming().refuse();
                    stats.refused.fetch_add(1, Ordering::Relaxed)
                }
            };
            continue;
        }
        if handshakes.len() >= config.max_pending_handshakes
            || endpoint.open_connections() >= config.max_connections
        {
            incoming.refuse();
            stats.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.handshakes.fetch_add(1, Ordering::Relaxed);
        let (ready, stats) = (ready.clone(), stats.clone());
        let (timeout, linger) = (config.handshake_timeout, config.idle_timeout);
        let remote = incoming.remote_address();
        handshakes.spawn(async move {
            let handshake =
                async { QuicConnection::accept(incoming.accept()?.await?, linger).await };
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(conn)) => {
                    // The listener is gone if this fails; the connection closes.
                    let _ = ready.send(conn).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(from = %remote, error = %e, "inbound quic handshake failed");
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    tracing::debug!(from = %remote, "inbound quic handshake timed out");
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn a_first_stream_without_the_tag_is_refused() {
        let server =
            QuicTransport::new(&Keypair::generate().unwrap(), QuicConfig::default()).unwrap();
        let listener = server
            .listen_quic(&"quic/127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        // A client with a valid identity that skips the tag.
        let client =
            QuicTransport::new(&Keypair::generate().unwrap(), QuicConfig::default()).unwrap();
        let (config, _) = client.inner.tls.client_config(None).unwrap();
        let endpoint = client.dial_endpoint(listener.local).unwrap();
        let conn = endpoint
            .connect_with(config, listener.local, SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(b"\x00hello").await.unwrap();
        match conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, quinn::VarInt::from_u32(1));
                assert_eq!(&c.reason[..], b"bad stream tag");
            }
            other => panic!("expected an application close, got {other:?}"),
        }
        assert_eq!(listener.stats().failed, 1);
    }
}
