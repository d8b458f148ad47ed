//! The tokio driver: [`SecureConfig`], [`KnownPeers`] and the
//! `upgrade_*` functions.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use knotwork_core::{Keypair, PeerId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::handshake::{Established, Handshake, MAX_HANDSHAKE_MESSAGE, StaticIdentity};
use crate::payload::{PAYLOAD_LEN, STATIC_KEY_LEN};
use crate::{HandshakeError, SecureStream, Suite};

/// Default limit for a whole handshake.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of messages after which each direction rekeys.
pub const DEFAULT_REKEY_INTERVAL: u64 = 1 << 16;
/// Default number of peers whose static keys are remembered.
pub const DEFAULT_KNOWN_PEERS: usize = 1024;

/// A bounded cache of remote Noise static keys, filled after successful
/// handshakes (or from discovery records) so the next dial can use IK.
/// When full, the oldest entry goes.
///
/// It also remembers the last identity payload whose signature checked out
/// for each peer (as many peers, oldest out first): when a peer reconnects
/// with the very same payload bytes, the handshake skips the Ed25519 check
/// (same bytes, same verdict) but still checks that the payload names the
/// Noise static key the handshake authenticated.
#[derive(Debug)]
pub struct KnownPeers {
    capacity: usize,
    inner: Mutex<KnownInner>,
}

#[derive(Debug, Default)]
struct KnownInner {
    keys: Bounded<[u8; STATIC_KEY_LEN]>,
    /// Identity payloads whose signature was checked, by the peer they name.
    payloads: Bounded<[u8; PAYLOAD_LEN]>,
}

/// A map by peer that drops its oldest entry when over capacity.
#[derive(Debug)]
struct Bounded<V> {
    map: HashMap<PeerId, V>,
    order: VecDeque<PeerId>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Bounded<V> {
    fn insert(&mut self, peer: PeerId, value: V, capacity: usize) {
        if self.map.insert(peer, value).is_none() {
            self.order.push_back(peer);
            while self.order.len() > capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn remove(&mut self, peer: &PeerId) {
        if self.map.remove(peer).is_some() {
            self.order.retain(|p| p != peer);
        }
    }
}

impl KnownPeers {
    /// An empty cache holding at most `capacity` peers.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(KnownInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, KnownInner> {
        // The map stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `peer`'s static key.
    pub fn insert(&self, peer: PeerId, static_key: [u8; STATIC_KEY_LEN]) {
        self.lock().keys.insert(peer, static_key, self.capacity);
    }

    /// `peer`'s static key, if known.
    pub fn get(&self, peer: &PeerId) -> Option<[u8; STATIC_KEY_LEN]> {
        self.lock().keys.map.get(peer).copied()
    }

    /// Forgets `peer`.
    pub fn remove(&self, peer: &PeerId) {
        let mut g = self.lock();
        g.keys.remove(peer);
        g.payloads.remove(peer);
    }

    /// Remembers that `payload` (whose first 32 bytes name `peer`) carries
    /// a valid signature.
    pub(crate) fn remember_payload(&self, peer: PeerId, payload: &[u8]) {
        let Ok(bytes) = <[u8; PAYLOAD_LEN]>::try_from(payload) else {
            return;
        };
        self.lock().payloads.insert(peer, bytes, self.capacity);
    }

    /// True if exactly these payload bytes were checked for `peer` before.
    pub(crate) fn payload_checked(&self, peer: &PeerId, payload: &[u8]) -> bool {
        self.lock()
            .payloads
            .map
            .get(peer)
            .is_some_and(|p| p.as_slice() == payload)
    }

    /// Number of peers remembered.
    pub fn len(&self) -> usize {
        self.lock().keys.map.len()
    }

    /// True if no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a node needs to secure its connections: its identity, a
/// Noise static key (generated per config), the [`KnownPeers`] cache,
/// the suite it proposes, the handshake timeout and the rekey interval.
/// Cheap to clone; clones share the cache and the counters.
#[derive(Debug, Clone)]
pub struct SecureConfig {
    local: Arc<StaticIdentity>,
    known: Arc<KnownPeers>,
    ik_fallbacks: Arc<AtomicU64>,
    suite: Suite,
    timeout: Duration,
    rekey_interval: u64,
}

impl SecureConfig {
    /// A config for `keypair` with a fresh X25519 static key, the CPU's
    /// preferred suite ([`Suite::preferred`]) and the defaults above.
    pub fn new(keypair: Keypair) -> Result<Self, HandshakeError> {
        Ok(Self {
            local: Arc::new(StaticIdentity::generate(keypair)?),
            known: Arc::new(KnownPeers::new(DEFAULT_KNOWN_PEERS)),
            ik_fallbacks: Arc::new(AtomicU64::new(0)),
            suite: Suite::preferred(),
            timeout: DEFAULT_TIMEOUT,
            rekey_interval: DEFAULT_REKEY_INTERVAL,
        })
    }

    /// Proposes `suite` when dialing (responders accept either).
    pub fn with_suite(mut self, suite: Suite) -> Self {
        self.suite = suite;
        self
    }

    /// Limits each handshake to `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Rekeys each direction after every `messages` messages (0: never).
    /// Both peers must use the same value.
    pub fn with_rekey_interval(mut self, messages: u64) -> Self {
        self.rekey_interval = messages;
        self
    }

    /// Our keys.
    pub fn local(&self) -> &StaticIdentity {
        &self.local
    }

    /// The cache of remote static keys used to dial with IK.
    pub fn known_peers(&self) -> &KnownPeers {
        &self.known
    }

    /// How many times an IK dial was rejected and fell back to XX.
    pub fn ik_fallbacks(&self) -> u64 {
        self.ik_fallbacks.load(Ordering::Relaxed)
    }

    /// Secures an outbound connection. With `expected`, the handshake fails
    /// with [`HandshakeError::PeerIdMismatch`] unless that peer answers;
    /// if its static key is in [`KnownPeers`], IK is used. If the peer
    /// rejects IK, the key is forgotten, the fallback counted, and
    /// [`HandshakeError::IkRejected`] returned: dial again and XX is used
    /// (or let [`SecureConfig::connect`] do that).
    pub async fn upgrade_outbound<T>(
        &self,
        mut io: T,
        expected: Option<PeerId>,
    ) -> Result<SecureStream<T>, HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let known = expected.and_then(|p| Some((p, self.known.get(&p)?)));
        let hs = match known {
            Some((peer, key)) => Handshake::ik_initiator(&self.local, self.suite, peer, &key)?,
            None => Handshake::xx_initiator(&self.local, self.suite, expected)?,
        }
        .with_known_peers(self.known.clone());
        match self.drive(&mut io, hs).await {
            Ok(est) => Ok(self.established(io, est)),
            Err(HandshakeError::IkRejected) => {
                if let Some((peer, _)) = known {
                    self.known.remove(&peer);
                    self.ik_fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %peer.short(), "ik rejected, next dial uses xx");
                }
                Err(HandshakeError::IkRejected)
            }
            Err(e) => Err(e),
        }
    }

    /// Dials `expected` with `dial` and secures the connection; if the peer
    /// rejects IK, dials again and uses XX, transparently.
    pub async fn connect<T, F, Fut>(
        &self,
        expected: PeerId,
        mut dial: F,
    ) -> Result<SecureStream<T>, HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<T>>,
    {
        let io = dial().await?;
        match self.upgrade_outbound(io, Some(expected)).await {
            Err(HandshakeError::IkRejected) => {
                let io = dial().await?;
                self.upgrade_outbound(io, Some(expected)).await
            }
            other => other,
        }
    }

    /// Secures an inbound connection (either pattern, either suite).
    pub async fn upgrade_inbound<T>(&self, mut io: T) -> Result<SecureStream<T>, HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let hs = Handshake::responder(&self.local).with_known_peers(self.known.clone());
        let est = self.drive(&mut io, hs).await?;
        Ok(self.established(io, est))
    }

    fn established<T>(&self, io: T, est: Established) -> SecureStream<T> {
        self.known.insert(est.remote, est.remote_static);
        tracing::debug!(peer = %est.remote.short(), suite = ?est.suite, pattern = ?est.pattern, "handshake done");
        SecureStream::new(io, est, self.rekey_interval)
    }

    async fn drive<T>(&self, io: &mut T, hs: Handshake) -> Result<Established, HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(self.timeout, drive(io, hs))
            .await
            .map_err(|_| HandshakeError::Timeout)?
    }
}

/// Runs `hs` over `io` to completion, reading exactly the bytes it asks
/// for, so nothing past the handshake is read.
async fn drive<T>(io: &mut T, mut hs: Handshake) -> Result<Established, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
    loop {
        let out = hs.take_output();
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
        }
        if hs.is_finished() {
            return hs.finish();
        }
        let want = hs.bytes_wanted().min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = io.read(chunk).await?;
        let result = if n == 0 {
            hs.handle_eof()
        } else {
            hs.read_input(chunk.get(..n).unwrap_or_default()).map(drop)
        };
        if let Err(e) = result {
            // Tell the peer why, if the machine has a reply for it.
            let out = hs.take_output();
            if !out.is_empty() {
                let _ = io.write_all(&out).await;
                let _ = io.flush().await;
            }
            return Err(e);
        }
    }
}

/// Secures an outbound connection with a one-off [`SecureConfig`] for
/// `keypair`; see [`SecureConfig::upgrade_outbound`]. A node should keep one
/// `SecureConfig` instead.
pub async fn upgrade_outbound<T>(
    io: T,
    keypair: &Keypair,
    expected: Option<PeerId>,
) -> Result<SecureStream<T>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    SecureConfig::new(keypair.clone())?
        .upgrade_outbound(io, expected)
        .await
}

/// Secures an inbound connection with a one-off [`SecureConfig`] for
/// `keypair`; see [`SecureConfig::upgrade_inbound`].
pub async fn upgrade_inbound<T>(io: T, keypair: &Keypair) -> Result<SecureStream<T>, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    SecureConfig::new(keypair.clone())?
        .upgrade_inbound(io)
        .await
}
