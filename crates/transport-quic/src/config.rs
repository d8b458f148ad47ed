//! [`QuicConfig`]: timeouts and limits, and the quinn/rustls configurations
//! built from them.

use std::sync::Arc;
use std::time::Duration;

use knotwork_core::{Keypair, PeerId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls::{self, crypto::CryptoProvider, sign::CertifiedKey};
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::QuicError;
use crate::identity::{self, PeerVerifier};

/// The ALPN protocol both sides must offer: a QUIC client of another
/// protocol (HTTP/3, say) fails the handshake instead of reaching a stream.
pub const ALPN: &[u8] = b"knotwork/1";

/// Settings of a [`QuicTransport`](crate::QuicTransport).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicConfig {
    /// How long a dial or an inbound connection may take from the first
    /// packet to an open first stream (QUIC and TLS handshakes, a Retry).
    pub handshake_timeout: Duration,
    /// A connection with no packet from the peer for this long is closed.
    pub idle_timeout: Duration,
    /// Send a keep-alive after this much silence (below `idle_timeout`,
    /// and below a NAT's UDP mapping timeout, often 30 s); `None` for none.
    pub keep_alive: Option<Duration>,
    /// Bidirectional streams the peer may have open at once on one
    /// connection, the first stream included.
    pub max_streams: u32,
    /// Bytes the peer may send on one stream beyond what we have read
    /// (flow control): a reader that stalls holds at most this much of
    /// that stream. At least the path's bandwidth times its round trip,
    /// or one stream cannot fill the path.
    pub stream_window: u32,
    /// Bytes the peer may send on all streams of a connection beyond what
    /// we have read: the most one peer can make us buffer. While fewer
    /// than `receive_window / stream_window` streams are stalled, the
    /// others still flow.
    pub receive_window: u32,
    /// Connections one endpoint (a listener and the dials from it) keeps at
    /// once; a connection attempt beyond it is refused.
    pub max_connections: usize,
    /// Inbound handshakes a listener runs at once (address-validated ones:
    /// an unvalidated source only gets a stateless Retry); beyond it a
    /// connection attempt is refused.
    pub max_pending_handshakes: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            max_streams: 64,
            stream_window: 1 << 20,
            receive_window: 8 << 20,
            max_connections: 4096,
            max_pending_handshakes: 256,
        }
    }
}

impl QuicConfig {
    /// Sets [`QuicConfig::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`QuicConfig::idle_timeout`] and [`QuicConfig::keep_alive`].
    pub fn with_idle(mut self, timeout: Duration, keep_alive: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self.keep_alive = keep_alive;
        self
    }

    /// Sets [`QuicConfig::max_streams`].
    pub fn with_max_streams(mut self, n: u32) -> Self {
        self.max_streams = n;
        self
    }

    /// Sets [`QuicConfig::stream_window`] and [`QuicConfig::receive_window`].
    pub fn with_windows(mut self, stream: u32, connection: u32) -> Self {
        self.stream_window = stream;
        self.receive_window = connection;
        self
    }

    /// Sets [`QuicConfig::max_connections`] and
    /// [`QuicConfig::max_pending_handshakes`].
    pub fn with_max_connections(mut self, connections: usize, pending: usize) -> Self {
        self.max_connections = connections;
        self.max_pending_handshakes = pending;
        self
    }
}

/// The rustls pieces every connection of one transport shares.
pub(crate) struct Tls {
    provider: Arc<CryptoProvider>,
    key: Arc<CertifiedKey>,
    transport: Arc<TransportConfig>,
    /// Address validation tokens (NEW_TOKEN) from servers, shared by all
    /// dials: a returning client skips the server's Retry round trip.
    tokens: Arc<dyn quinn::TokenStore>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    pub(crate) fn new(identity: &Keypair, config: &QuicConfig) -> Result<Self, QuicError> {
        let provider = identity::provider();
        let key = identity::certified_key(identity, &provider)?;
        Ok(Self {
            provider,
            key,
            transport: Arc::new(transport_config(config)),
            tokens: Arc::new(quinn::TokenMemoryCache::default()),
        })
    }

    /// The server side: any peer that proves an Ed25519 identity.
    pub(crate) fn server_config(
        &self,
        config: &QuicConfig,
    ) -> Result<quinn::ServerConfig, QuicError> {
        let verifier = Arc::new(PeerVerifier::listener(&self.provider));
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(
                rustls::server::AlwaysResolvesServerRawPublicKeys::new(self.key.clone()),
            ));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        // Each dial has its own client config, so a ticket would never be used.
        tls.send_tls13_tickets = 0;
        let crypto = QuicServerConfig::try_from(tls)
            .map_err(|e| QuicError::Tls(rustls::Error::General(e.to_string())))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        // Attempts waiting for the listener's verdict (Retry, refuse or
        // handshake): a few packets each, no 0-RTT, so small buffers.
        server
            .transport_config(self.transport.clone())
            .max_incoming(config.max_pending_handshakes)
            .incoming_buffer_size(64 << 10)
            .incoming_buffer_size_total(4 << 20);
        Ok(server)
    }

    /// The client side of one dial, expecting `expected` if given; the
    /// verifier is returned to read its failure after a failed dial.
    pub(crate) fn client_config(
        &self,
        expected: Option<PeerId>,
    ) -> Result<(quinn::ClientConfig, Arc<PeerVerifier>), QuicError> {
        let verifier = Arc::new(PeerVerifier::dialer(expected, &self.provider));
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(Arc::new(
                rustls::client::AlwaysResolvesClientRawPublicKeys::new(self.key.clone()),
            ));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        // The server name is a placeholder: do not send it.
        tls.enable_sni = false;
        let crypto = QuicClientConfig::try_from(tls)
            .map_err(|e| QuicError::Tls(rustls::Error::General(e.to_string())))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client
            .transport_config(self.transport.clone())
            .token_store(self.tokens.clone());
        Ok((client, verifier))
    }
}

fn transport_config(config: &QuicConfig) -> TransportConfig {
    let millis = u64::try_from(config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let idle = IdleTimeout::from(VarInt::from_u64(millis).unwrap_or(VarInt::MAX));
    let mut t = TransportConfig::default();
    // The first stream needs one.
    t.max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams.max(1)))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.stream_window))
        .receive_window(VarInt::from_u32(config.receive_window))
        // No unreliable datagrams: nothing a peer could fill a buffer with.
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(config.keep_alive);
    t
}
