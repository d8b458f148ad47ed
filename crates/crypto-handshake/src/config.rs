//! The tokio driver: [`SecureConfig`] and the `upgrade_*` functions.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use knotwork_core::{Keypair, PeerId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::handshake::{EarlyData, Established, Handshake, StaticIdentity};
use crate::{HandshakeError, KnownPeers, SecureStream, Suite};

/// Default limit for a whole handshake.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of messages after which each direction rekeys.
pub const DEFAULT_REKEY_INTERVAL: u64 = 1 << 16;
/// Default number of peers whose static keys are remembered.
pub const DEFAULT_KNOWN_PEERS: usize = 1024;

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

    /// Remembers the static keys of at most `peers` identities (a fresh,
    /// empty cache; the default holds [`DEFAULT_KNOWN_PEERS`]).
    pub fn with_known_capacity(mut self, peers: usize) -> Self {
        self.known = Arc::new(KnownPeers::new(peers));
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
        io: T,
        expected: Option<PeerId>,
    ) -> Result<SecureStream<T>, HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let (stream, _) = self.upgrade_outbound_with(io, expected, Vec::new()).await?;
        Ok(stream)
    }

    /// [`SecureConfig::upgrade_outbound`], sending `early` within the
    /// handshake (see [`Handshake::with_early_data`]; it may be chosen once
    /// the responder is authenticated, [`EarlyData::Chosen`]); returns the
    /// stream and the responder's early data (empty if it sent none). The
    /// responder's comes before ours, so a dialer has it when the call
    /// returns, with no round trip after the handshake.
    pub async fn upgrade_outbound_with<T>(
        &self,
        mut io: T,
        expected: Option<PeerId>,
        early: impl Into<EarlyData>,
    ) -> Result<(SecureStream<T>, Vec<u8>), HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let known = expected.and_then(|p| Some((p, self.known.get(&p)?)));
        let hs = match known {
            Some((peer, key)) => Handshake::ik_initiator(&self.local, self.suite, peer, &key)?,
            None => Handshake::xx_initiator(&self.local, self.suite, expected)?,
        }
        .with_known_peers(self.known.clone())
        .with_early_data(early)?;
        match self.drive(&mut io, hs).await {
            Ok((est, received)) => Ok(self.established(io, est, &received)),
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
    pub async fn upgrade_inbound<T>(&self, io: T) -> Result<SecureStream<T>, HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let (stream, _) = self.upgrade_inbound_with(io, Vec::new()).await?;
        Ok(stream)
    }

    /// [`SecureConfig::upgrade_inbound`], sending `early` within the
    /// handshake (in message 2: over XX before the dialer is authenticated,
    /// so send nothing there that only some peers may see; chosen data,
    /// [`EarlyData::Chosen`], is given the dialer over IK); returns the
    /// stream and the dialer's early data (empty if it sent none).
    pub async fn upgrade_inbound_with<T>(
        &self,
        mut io: T,
        early: impl Into<EarlyData>,
    ) -> Result<(SecureStream<T>, Vec<u8>), HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let hs = Handshake::responder(&self.local)
            .with_known_peers(self.known.clone())
            .with_early_data(early)?;
        let (est, received) = self.drive(&mut io, hs).await?;
        Ok(self.established(io, est, &received))
    }

    fn established<T>(
        &self,
        io: T,
        mut est: Established,
        received: &[u8],
    ) -> (SecureStream<T>, Vec<u8>) {
        self.known.insert(est.remote, est.remote_static);
        tracing::debug!(peer = %est.remote.short(), suite = ?est.suite, pattern = ?est.pattern, "handshake done");
        let early = std::mem::take(&mut est.early_data);
        let stream = SecureStream::with_received(io, est, self.rekey_interval, received);
        (stream, early)
    }

    async fn drive<T>(
        &self,
        io: &mut T,
        hs: Handshake,
    ) -> Result<(Established, Vec<u8>), HandshakeError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(self.timeout, drive(io, hs))
            .await
            .map_err(|_| HandshakeError::Timeout)?
    }
}

/// How much one handshake read takes at most: a message without early
/// data, or with a few hundred bytes of it, in one read (a longer one in
/// several: the machine gathers it).
const READ_CHUNK: usize = 1024;

/// Runs `hs` over `io` to completion. Each read takes what the connection
/// holds (up to [`READ_CHUNK`] bytes), not only what the current
/// message needs: a length prefix and its message, or a last message and
/// the peer's first frames after it, come in one system call instead of
/// two or three. The machine consumes nothing past the handshake's end;
/// what a read brought beyond it is returned with the outcome, for the
/// [`SecureStream`] to read first.
async fn drive<T>(io: &mut T, mut hs: Handshake) -> Result<(Established, Vec<u8>), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = [0u8; READ_CHUNK];
    let mut beyond = Vec::new();
    loop {
        let out = hs.take_output();
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
        }
        if hs.is_finished() {
            return Ok((hs.finish()?, beyond));
        }
        let n = io.read(&mut buf).await?;
        let input = buf.get(..n).unwrap_or_default();
        let result = if n == 0 {
            hs.handle_eof()
        } else {
            // The machine takes every byte until it is done, so bytes it
            // leaves are past the handshake's end.
            hs.read_input(input)
                .map(|used| beyond = input.get(used..).unwrap_or_default().to_vec())
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
