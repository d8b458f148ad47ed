//! How connections are made: the pipeline from a raw connection to a
//! started [`Channel`], the accept loop with its limits, dialing through the
//! node's policy ([`crate::dial`]) and probes. Keeping connections (the
//! maintenance loop, reconnects) is in `maintain`.
//!
//! ```text
//! raw conn ─► limit checks ─► Noise handshake, versions inside ─► ban / limit checks ─► de-dup ─► Channel
//!   │         (a refusal is     (SecureStream, Hello both ways)      (refuse w/ reason)                + protocols
//!   │          the listener's hello)
//!   └─ transport-authenticated (QUIC): no Noise ─► ban / limit checks ─► version exchange ─┘
//! ```
//! A dialer's channel opens as its handshake ends (see [`crate::version`]);
//! the listener's as the dialer's last handshake message arrives.
//! The handshake and version exchange together must finish within
//! [`NodeConfig::handshake_timeout`](crate::NodeConfig::handshake_timeout).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use knotwork_core::{IpPrefix, PeerAddr, PeerId, Substreams, TransportError};
use knotwork_crypto_handshake::SecureStream;
use knotwork_wire::FrameCodec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::FramedParts;
use tokio_util::sync::CancellationToken;

use tokio::sync::watch;

use crate::admission::{Admit, Origin, host_of};
use crate::buffers::BufferedBytes;
use crate::channel::{Channel, ChannelInfo};
use crate::deadline::FirstByte;
use crate::dial::{Admission, DialOpts, Outcome};
use crate::error::{CloseReason, DisconnectReason, NodeError};
use crate::hosts::AddrScope;
use crate::node::{NodeEvent, NodeHandle, Shared, lock};
use crate::registry::SessionKind;
use crate::transport::{AnyListener, BoxStream, RawConn};
use crate::version::{self, Hello, Version};

/// Binds `addr` on the first transport that supports it.
pub(crate) async fn listen(
    shared: &Shared,
    addr: &PeerAddr,
) -> Result<Box<dyn AnyListener>, NodeError> {
    for t in &shared.transports {
        match t.listen(addr).await {
            Err(TransportError::UnsupportedAddr(_)) => continue,
            other => return Ok(other?),
        }
    }
    Err(TransportError::UnsupportedAddr(addr.clone()).into())
}

/// Opens a raw stream to `addr`: the first transport that supports it,
/// else the first service [`Dialer`](crate::Dialer) that handles it.
pub(crate) async fn raw_dial(shared: &Arc<Shared>, addr: &PeerAddr) -> Result<RawConn, NodeError> {
    for t in &shared.transports {
        match t.dial(addr).await {
            Err(TransportError::UnsupportedAddr(_)) => continue,
            other => return Ok(other?),
        }
    }
    if let Some(dialer) = shared.dialers.iter().find(|d| d.handles(addr)) {
        let node = NodeHandle {
            shared: shared.clone(),
        };
        return Ok(dialer.dial(&node, addr).await?.into());
    }
    Err(TransportError::UnsupportedAddr(addr.clone()).into())
}

/// Counts one inbound connection from a host (an IPv4 address, an IPv6
/// /64) and its subnet (/24, /48) for as long as it lives.
pub(crate) struct IpSlot {
    shared: Arc<Shared>,
    ip: Option<(IpPrefix, IpPrefix)>,
    over_limit: bool,
}

/// The host and subnet prefixes of an address with an IP.
fn prefixes(from: &PeerAddr) -> Option<(IpPrefix, IpPrefix)> {
    match from {
        PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) => {
            Some((IpPrefix::host(sa.ip()), IpPrefix::subnet(sa.ip())))
        }
        _ => None,
    }
}

impl IpSlot {
    /// True if one more connection from `from` would pass its host's or
    /// subnet's limit (a look, before the handshake: nothing is taken).
    fn would_exceed(shared: &Shared, from: &PeerAddr) -> bool {
        let Some((host, subnet)) = prefixes(from) else {
            return false;
        };
        let counts = lock(&shared.per_ip);
        let after = |key| counts.get(&key).copied().unwrap_or(0) + 1;
        after(host) > shared.config.max_per_ip || after(subnet) > shared.config.max_per_subnet
    }

    fn take(shared: &Arc<Shared>, from: &PeerAddr) -> Self {
        let ip = prefixes(from);
        let mut over_limit = false;
        if let Some((host, subnet)) = ip {
            let mut counts = lock(&shared.per_ip);
            let on_host = counts.entry(host).or_insert(0);
            *on_host += 1;
            over_limit = *on_host > shared.config.max_per_ip;
            let on_subnet = counts.entry(subnet).or_insert(0);
            *on_subnet += 1;
            over_limit |= *on_subnet > shared.config.max_per_subnet;
        }
        Self {
            shared: shared.clone(),
            ip,
            over_limit,
        }
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((host, subnet)) = self.ip {
            let mut counts = lock(&self.shared.per_ip);
            for key in [host, subnet] {
                if let Some(n) = counts.get_mut(&key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.remove(&key);
                    }
                }
            }
        }
    }
}

/// Replaces an unspecified listen IP (`0.0.0.0`, `::`) by the IP the
/// connection came from, so the address is dialable.
fn dialable(listen: PeerAddr, seen: &PeerAddr) -> PeerAddr {
    match (listen, seen) {
        (PeerAddr::Tcp(mut l), PeerAddr::Tcp(s) | PeerAddr::Quic(s)) if l.ip().is_unspecified() => {
            l.set_ip(s.ip());
            PeerAddr::Tcp(l)
        }
        (PeerAddr::Quic(mut l), PeerAddr::Tcp(s) | PeerAddr::Quic(s))
            if l.ip().is_unspecified() =>
        {
            l.set_ip(s.ip());
            PeerAddr::Quic(l)
        }
        (l, _) => l,
    }
}

fn inbound_count(shared: &Shared) -> usize {
    lock(&shared.peers)
        .values()
        .filter(|c| c.info().session == SessionKind::Inbound)
        .count()
}

/// The pipeline; see the module docs. A connection whose transport
/// authenticated the peer (QUIC) skips the Noise handshake: its bytes are
/// already encrypted under keys bound to the peer's identity, so the
/// version exchange is its first traffic. An inbound channel counts against
/// its host's and subnet's limits from its handshake until it closes (a
/// pending handshake does not count: those are bounded by the pending
/// table, so a slowloris cannot use up a subnet's share).
pub(crate) async fn establish(
    shared: &Arc<Shared>,
    conn: RawConn,
    addr: PeerAddr,
    session: SessionKind,
    expected: Option<PeerId>,
) -> Result<Channel, NodeError> {
    let RawConn {
        stream,
        peer,
        substreams,
    } = conn;
    let ours = our_version(shared, &addr);
    let Some(peer) = peer else {
        let (secure, theirs, claim) = if session == SessionKind::Inbound {
            let (secure, theirs) = handshake_inbound(shared, stream, &addr, ours).await?;
            (secure, theirs, None)
        } else {
            handshake_outbound(shared, stream, expected, ours).await?
        };
        let peer = secure.remote_peer_id();
        let versions = Versions::Exchanged(theirs);
        return admit(shared, secure, peer, addr, session, None, versions, claim).await;
    };
    check_expected(expected, peer)?;
    let versions = Versions::Exchange(ours);
    admit(
        shared, stream, peer, addr, session, substreams, versions, None,
    )
    .await
}

/// The listener's Noise handshake: our hello is our version, or a refusal
/// decided when the dialer's first message arrives (over IK it names the
/// dialer, so a banned one is refused there; over XX its ban is checked
/// after the handshake, in [`admit`]).
async fn handshake_inbound(
    shared: &Arc<Shared>,
    stream: BoxStream,
    addr: &PeerAddr,
    ours: Version,
) -> Result<(SecureStream<BoxStream>, Version), NodeError> {
    let over_ip = IpSlot::would_exceed(shared, addr);
    let node = shared.clone();
    let (early, refused) =
        version::chosen(move |dialer| match refusal(&node, dialer, over_ip, true) {
            Some(reason) => (Hello::Refuse(reason.clone()), Some(reason)),
            None => (Hello::Version(ours), None),
        });
    let (secure, theirs) = shared.secure.upgrade_inbound_with(stream, early).await?;
    if let Some(reason) = lock(&refused).take().flatten() {
        return Err(NodeError::Refused(reason));
    }
    Ok((secure, Hello::version_in(&theirs)?))
}

/// The dialer's Noise handshake: once the responder is authenticated our
/// hello is our version and this dial's claim on the peer
/// ([`Establishing`]), or a refusal (we banned it, are shutting down, or
/// have a channel to it already: dialed at another address, or by two dials
/// at once), so a listener never opens a channel we will not keep.
async fn handshake_outbound(
    shared: &Arc<Shared>,
    stream: BoxStream,
    expected: Option<PeerId>,
    ours: Version,
) -> Result<(SecureStream<BoxStream>, Version, Option<Establishing>), NodeError> {
    let node = shared.clone();
    let (early, decided) = version::chosen(move |responder| match responder {
        None => (Hello::Version(ours), None),
        Some(peer) => match dialer_claim(&node, *peer) {
            Ok(claim) => (Hello::Version(ours), Some(Ok(claim))),
            Err((reason, e)) => (Hello::Refuse(reason), Some(Err(e))),
        },
    });
    let (secure, theirs) = shared
        .secure
        .upgrade_outbound_with(stream, expected, early)
        .await?;
    let claim = lock(&decided).take().flatten().transpose()?;
    Ok((secure, Hello::version_in(&theirs)?, claim))
}

/// Whether a dial that reached `peer` goes on: its claim on the peer, or
/// why not (the reason the peer is told, and our error).
fn dialer_claim(
    shared: &Arc<Shared>,
    peer: PeerId,
) -> Result<Establishing, (DisconnectReason, NodeError)> {
    if let Some(reason) = refusal(shared, Some(&peer), false, false) {
        let e = dial_refused(&reason, peer);
        return Err((reason, e));
    }
    Establishing::claim(shared, peer).map_err(|e| (DisconnectReason::Duplicate, e))
}

/// A dial's error when we refuse the peer it reached for `reason`.
fn dial_refused(reason: &DisconnectReason, peer: PeerId) -> NodeError {
    match reason {
        DisconnectReason::Shutdown => NodeError::ShuttingDown,
        _ => NodeError::Banned(peer.to_string()),
    }
}

/// Our version for a connection with `addr`.
fn our_version(shared: &Shared, addr: &PeerAddr) -> Version {
    // Compression first: the version lists MAX_PROTOCOLS names at most.
    let offered = shared.channel_config.compression.offered().iter().copied();
    let names: Vec<&'static str> = offered.chain(shared.registry.names()).collect();
    Version::new(&names, &shared.addrs.advertised(), addr)
}

/// Where a connection is in the version exchange when it is admitted.
enum Versions {
    /// Done within the Noise handshake: the peer's version.
    Exchanged(Version),
    /// Still to do, over the stream (QUIC): our version.
    Exchange(Version),
}

/// Why the node will not take a connection now, if it will not: `peer`
/// banned, shutting down, and for an inbound one its IP over its limit
/// (`over_ip`) or the node at its inbound limit.
fn refusal(
    shared: &Shared,
    peer: Option<&PeerId>,
    over_ip: bool,
    inbound: bool,
) -> Option<DisconnectReason> {
    let now = Instant::now().into_std();
    if peer.is_some_and(|p| lock(&shared.bans).is_peer_banned(p, now)) {
        Some(DisconnectReason::Banned)
    } else if shared.shutdown.is_cancelled() {
        Some(DisconnectReason::Shutdown)
    } else if inbound && over_ip {
        Some(DisconnectReason::TooManyFromIp)
    } else if inbound && inbound_count(shared) >= shared.config.max_inbound {
        Some(DisconnectReason::TooManyPeers)
    } else {
        None
    }
}

/// A transport-authenticated `got` is the peer a dial expected, if it named one.
fn check_expected(expected: Option<PeerId>, got: PeerId) -> Result<(), NodeError> {
    match expected {
        Some(expected) if expected != got => Err(NodeError::WrongPeer { expected, got }),
        _ => Ok(()),
    }
}

/// Numbers the channels of this process for their log span.
static CHANNEL_IDS: AtomicU64 = AtomicU64::new(1);

/// The pipeline after the handshake: bans and limits, the version
/// exchange if the handshake did not carry it, the peer table, the channel.
/// A connection refused here is told why with a `Disconnect`. `claim`: a
/// dial's claim on the peer taken in the handshake (else taken here).
#[allow(clippy::too_many_arguments)]
async fn admit<S>(
    shared: &Arc<Shared>,
    secure: S,
    peer: PeerId,
    addr: PeerAddr,
    session: SessionKind,
    substreams: Option<Arc<dyn Substreams>>,
    versions: Versions,
    claim: Option<Establishing>,
) -> Result<Channel, NodeError>
where
    S: AsyncRead + AsyncWrite + BufferedBytes + Send + Unpin + 'static,
{
    let inbound = session == SessionKind::Inbound;
    if peer == shared.peer_id {
        return Err(NodeError::SelfDial(addr));
    }
    if let PeerAddr::Relay(r) = &addr
        && !inbound
        && r.target != peer
    {
        return Err(NodeError::WrongPeer {
            expected: r.target,
            got: peer,
        });
    }
    let slot = inbound.then(|| IpSlot::take(shared, &addr));
    let now = Instant::now().into_std();
    let over_ip = slot.as_ref().is_some_and(|s| s.over_limit);
    if let Some(reason) = refusal(shared, Some(&peer), over_ip, inbound) {
        tracing::info!(peer = %peer.short(), %addr, %reason, "refusing connection");
        let _ = version::refuse(secure, reason.clone()).await;
        if inbound {
            return Err(NodeError::Refused(reason));
        }
        return Err(dial_refused(&reason, peer));
    }
    let _establishing = match claim {
        _ if inbound => None,
        Some(claim) => Some(claim),
        None => match Establishing::claim(shared, peer) {
            Ok(claim) => Some(claim),
            Err(e) => {
                let _ = version::refuse(secure, DisconnectReason::Duplicate).await;
                return Err(e);
            }
        },
    };
    let (theirs, parts) = match versions {
        Versions::Exchanged(theirs) => (theirs, FramedParts::new(secure, FrameCodec::new())),
        Versions::Exchange(ours) => version::exchange(secure, &ours).await?,
    };
    let listen: Vec<PeerAddr> = theirs
        .parsed_listen_addrs()?
        .into_iter()
        .map(|a| dialable(a, &addr))
        .collect();
    let info = ChannelInfo {
        peer_id: peer,
        remote_addr: addr.clone(),
        session,
        version: theirs,
    };
    let (channel, io) = Channel::new(parts, info, shared.channel_config.clone(), substreams);
    if let Err(e) = insert(shared, &channel) {
        let reason = match &e {
            NodeError::Refused(reason) => reason.clone(),
            _ => DisconnectReason::Duplicate,
        };
        io.start(&channel);
        channel.close(reason).await;
        return Err(e);
    }
    // Host store: a dialed address is verified; an inbound peer's own
    // listen addresses (on the host it connects from) are only heard of.
    {
        let mut hosts = lock(&shared.hosts);
        if inbound {
            hosts.add_declared(listen, &addr, now);
        } else {
            hosts.promote(&addr, now);
        }
    }
    shared.registry.attach(&channel);
    // The reader and writer tasks run in this span (see `knotwork_log`).
    let span = tracing::info_span!(
        "channel",
        peer = %peer,
        channel = CHANNEL_IDS.fetch_add(1, Ordering::Relaxed),
        direction = if inbound { "inbound" } else { "outbound" },
    );
    span.in_scope(|| io.start(&channel));
    tracing::debug!(peer = %peer.short(), %addr, ?session, "channel open");
    shared.emit(NodeEvent::Connected {
        peer,
        addr,
        session,
    });
    // Weak: the channel is in the node's peer table, so a strong reference
    // here would be a cycle until the channel closes.
    let node = Arc::downgrade(shared);
    channel.on_closed(move |channel, reason| {
        if let Some(node) = node.upgrade() {
            closed(&node, channel, reason, slot);
        }
    });
    Ok(channel)
}

/// An outbound pipeline's claim on its peer, from the handshake until the
/// channel is in the peer table (or the pipeline fails). Two dials of one
/// peer at once (a manual connect while maintenance or discovery dials it)
/// used to both pass [`dial_may_proceed`] before either channel was
/// inserted, and the newer then closed the older as a duplicate; now the
/// second gives way ([`NodeError::AlreadyConnected`]) and `Node::connect`
/// waits for the first ([`existing_channel`]).
/// Taken as the handshake authenticates the peer ([`handshake_outbound`]), so
/// the loser of two dials that reached one peer at different addresses
/// declines inside its handshake.
struct Establishing {
    shared: Arc<Shared>,
    peer: PeerId,
}

impl Establishing {
    fn claim(shared: &Arc<Shared>, peer: PeerId) -> Result<Self, NodeError> {
        let mut establishing = lock(&shared.establishing);
        if establishing.contains(&peer) || !dial_may_proceed(shared, &peer) {
            return Err(NodeError::AlreadyConnected(peer));
        }
        establishing.insert(peer);
        Ok(Self {
            shared: shared.clone(),
            peer,
        })
    }
}

impl Drop for Establishing {
    fn drop(&mut self) {
        lock(&self.shared.establishing).remove(&self.peer);
        self.shared.established.notify_waiters();
    }
}

/// The channel to `peer`, waiting (at most the handshake timeout) for one
/// of our dials that is opening it; `AlreadyConnected` if none comes (the
/// other dial failed, or the peer's own dial to us won and is still
/// opening).
pub(crate) async fn existing_channel(shared: &Shared, peer: PeerId) -> Result<Channel, NodeError> {
    let wait = async {
        loop {
            let done = shared.established.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if let Some(channel) = lock(&shared.peers).get(&peer) {
                return Ok(channel.clone());
            }
            if !lock(&shared.establishing).contains(&peer) {
                return Err(NodeError::AlreadyConnected(peer));
            }
            done.await;
        }
    };
    tokio::time::timeout(shared.config.handshake_timeout, wait)
        .await
        .unwrap_or(Err(NodeError::AlreadyConnected(peer)))
}

/// Which side dialed `channel`.
fn dialer(shared: &Shared, channel: &Channel) -> PeerId {
    if channel.info().session == SessionKind::Inbound {
        channel.remote_peer_id()
    } else {
        shared.peer_id
    }
}

/// The peer of a channel this node dialed at `addr`, if it has one.
fn dialed_at(shared: &Shared, addr: &PeerAddr) -> Option<PeerId> {
    lock(&shared.peers)
        .values()
        .find(|c| c.info().session != SessionKind::Inbound && c.remote_addr() == addr)
        .map(Channel::remote_peer_id)
}

/// A dial that reached `peer` goes on only if the node has no channel to
/// it, or the one it has loses the de-duplication rule to ours.
fn dial_may_proceed(shared: &Shared, peer: &PeerId) -> bool {
    match lock(&shared.peers).get(peer) {
        None => true,
        Some(existing) if existing.remote_addr().is_relayed() => true,
        Some(existing) => {
            let winner = shared.peer_id.min(*peer);
            winner == shared.peer_id && dialer(shared, existing) != winner
        }
    }
}

/// Adds `channel` to the peer table. With two channels to one peer dialed
/// by different sides, both nodes keep the one dialed by the smaller
/// PeerId. With two dialed by the same side, the newer one stays: a dialer
/// only redials when it no longer has a live channel (see
/// `dial_may_proceed`), so the older one is stale (say, the peer restarted
/// and the old connection has not timed out yet). Before both rules, a
/// direct channel beats a relayed one (hole punching replaces the relayed
/// channel). The loser is closed with [`DisconnectReason::Duplicate`].
fn insert(shared: &Shared, channel: &Channel) -> Result<(), NodeError> {
    let peer = channel.remote_peer_id();
    let winner = shared.peer_id.min(peer);
    let mut peers = lock(&shared.peers);
    if let Some(existing) = peers.get(&peer) {
        let (new, old) = (dialer(shared, channel), dialer(shared, existing));
        let new_wins = match (
            channel.remote_addr().is_relayed(),
            existing.remote_addr().is_relayed(),
        ) {
            (false, true) => true,
            (true, false) => false,
            _ => new == old || new == winner,
        };
        if !new_wins {
            return Err(NodeError::AlreadyConnected(peer));
        }
        if let Some(old) = peers.insert(peer, channel.clone()) {
            tokio::spawn(async move { old.close(DisconnectReason::Duplicate).await });
        }
        return Ok(());
    }
    // Counted again under the lock: handshakes that passed the early check
    // together cannot push the node past its limit (review finding L9).
    if channel.info().session == SessionKind::Inbound
        && peers
            .values()
            .filter(|c| c.info().session == SessionKind::Inbound)
            .count()
            >= shared.config.max_inbound
    {
        return Err(NodeError::Refused(DisconnectReason::TooManyPeers));
    }
    peers.insert(peer, channel.clone());
    Ok(())
}

/// `channel` has closed for `reason`: frees its IP slot, removes it, bans
/// a misbehaving peer, forgets the address of a dialed one the peer
/// refused, and reports the event. (Run by the channel's reader
/// as it ends: an open channel costs no task waiting for this.)
fn closed(shared: &Shared, channel: &Channel, reason: CloseReason, slot: Option<IpSlot>) {
    drop(slot);
    let peer = channel.remote_peer_id();
    // A dial the peer refused once it knew us: as a dial that failed, its
    // address leaves the host store (the dial had just verified it), or the
    // outbound slots would dial it again at every tick.
    if channel.info().session != SessionKind::Inbound && reason.refused_after_handshake() {
        lock(&shared.hosts).forget(channel.remote_addr());
    }
    {
        let mut peers = lock(&shared.peers);
        if peers.get(&peer).is_some_and(|c| c.same(channel)) {
            peers.remove(&peer);
        }
    }
    if reason == CloseReason::Local(DisconnectReason::Misbehaviour) {
        let now = Instant::now().into_std();
        let until = now + shared.channel_config.meter.ban_duration;
        let addr = channel.remote_addr();
        {
            let mut bans = lock(&shared.bans);
            bans.ban_peer(peer, until);
            match ban_target(channel.info().session, addr) {
                BanTarget::Host(host) => bans.ban_host(host, until),
                BanTarget::Addr => {
                    bans.ban_addr(addr.clone(), until);
                    lock(&shared.hosts).blacklist(addr, now);
                }
                BanTarget::PeerOnly => {}
            }
        }
        shared.metrics.ban(channel.misbehaviour());
        tracing::info!(peer = %peer.short(), %addr, reason = channel.misbehaviour(), "banned for misbehaviour");
        shared.emit(NodeEvent::Banned { peer });
    }
    shared.emit(NodeEvent::Disconnected { peer, reason });
}

/// What a misbehaving peer's ban covers besides its identity.
#[derive(Debug, PartialEq, Eq)]
enum BanTarget {
    /// The host its inbound connection came from.
    Host(IpPrefix),
    /// The address we dialed it at.
    Addr,
    /// Nothing more: an inbound peer on this machine (banning the loopback
    /// host would ban every local process) or without an IP.
    PeerOnly,
}

/// What we saw, never what the peer claimed (a peer naming others' addresses
/// as its own must not get them banned, review finding M7): the host of an
/// inbound connection, the address of an outbound one.
fn ban_target(session: SessionKind, addr: &PeerAddr) -> BanTarget {
    if session != SessionKind::Inbound {
        return BanTarget::Addr;
    }
    match host_of(addr) {
        Some(host) if AddrScope::of(addr) != AddrScope::Loopback => BanTarget::Host(host),
        _ => BanTarget::PeerOnly,
    }
}

/// Marks one accept loop as running until dropped.
struct ListenerUp(Arc<std::sync::atomic::AtomicUsize>);

impl ListenerUp {
    fn new(shared: &Shared) -> Self {
        let up = shared.listeners_up.clone();
        up.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(up)
    }
}

impl Drop for ListenerUp {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Accepts inbound connections until shutdown.
pub(crate) async fn accept_loop(shared: Arc<Shared>, mut listener: Box<dyn AnyListener>) {
    let _up = ListenerUp::new(&shared);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (conn, from) = match accepted {
            Ok(c) => c,
            Err(TransportError::ListenerClosed) => return,
            Err(e) => {
                // E.g. out of file descriptors: back off briefly.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Before any crypto: a banned host, or one over its budget of
        // handshake starts, is dropped (see `crate::admission`).
        if let PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) = &from {
            let now = Instant::now().into_std();
            if lock(&shared.bans).is_host_banned(sa.ip(), now) {
                shared.metrics.dropped("banned");
                tracing::debug!(%from, "banned host; dropped");
                continue;
            }
            if !lock(&shared.starts).take(sa.ip(), now) {
                shared.metrics.dropped("rate");
                tracing::debug!(%from, "over its handshake start budget; dropped");
                continue;
            }
        }
        accept(&shared, conn, from);
    }
}

/// Runs the inbound pipeline on `conn` as a task of its own, in a pending
/// slot (evicting another when they are all taken, see `crate::admission`)
/// with a first-byte deadline.
pub(crate) fn accept(shared: &Arc<Shared>, conn: RawConn, from: PeerAddr) {
    let now = Instant::now().into_std();
    let (id, cut) = {
        let mut pending = lock(&shared.pending);
        let (id, evicted) = match pending.table.admit(Origin::of(&from), now) {
            Admit::Slot(id) => (id, None),
            Admit::Evict { id, evict } => (id, pending.cuts.remove(&evict)),
        };
        if let Some(evicted) = evicted {
            evicted.cancel();
            shared.metrics.dropped("evicted");
        }
        let cut = CancellationToken::new();
        pending.cuts.insert(id, cut.clone());
        (id, cut)
    };
    let node = shared.clone();
    let started = move || lock(&node.pending).table.started(id);
    let deadline = shared.config.first_byte_timeout;
    let conn = conn.map(|stream| Box::new(FirstByte::new(stream, deadline, Box::new(started))));
    let shared = shared.clone();
    tokio::spawn(async move {
        let timeout = shared.config.handshake_timeout;
        let pipeline = establish(&shared, conn, from.clone(), SessionKind::Inbound, None);
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, pipeline) => r.unwrap_or(Err(NodeError::HandshakeTimeout)),
            () = cut.cancelled() => Err(NodeError::TooManyPending),
        };
        {
            let mut pending = lock(&shared.pending);
            pending.table.remove(id);
            pending.cuts.remove(&id);
        }
        match &result {
            Err(NodeError::TooManyPending) => {
                tracing::debug!(%from, "evicted from its pending handshake slot");
            }
            Err(e) if FirstByte::timed_out(e) => {
                shared.metrics.dropped("first_byte");
                tracing::debug!(%from, "sent nothing within the first-byte deadline; dropped");
            }
            other => {
                shared.metrics.handshake("inbound", other.as_ref().err());
                if let Err(e) = other {
                    tracing::info!(%from, "inbound handshake failed: {e}");
                }
            }
        }
    });
}

/// The pipeline on a stream a service opened, within the handshake timeout.
pub(crate) async fn establish_within(
    shared: &Arc<Shared>,
    conn: RawConn,
    addr: PeerAddr,
    session: SessionKind,
) -> Result<Channel, NodeError> {
    let pipeline = establish(shared, conn, addr, session, None);
    tokio::time::timeout(shared.config.handshake_timeout, pipeline)
        .await
        .unwrap_or(Err(NodeError::HandshakeTimeout))
}

/// Dials `addr` and runs the pipeline for `opts`, without the policy.
async fn connect(
    shared: &Arc<Shared>,
    addr: &PeerAddr,
    opts: &DialOpts,
) -> Result<Channel, NodeError> {
    let conn = raw_dial(shared, addr).await?;
    let pipeline = establish(shared, conn, addr.clone(), opts.cause.session(), opts.peer);
    let result = tokio::time::timeout(shared.config.handshake_timeout, pipeline)
        .await
        .unwrap_or(Err(NodeError::HandshakeTimeout));
    shared.metrics.handshake("outbound", result.as_ref().err());
    result
}

/// Ends a leading dial in the gate however its future ends (a dropped dial
/// reaches nobody).
struct Leading<'a> {
    shared: &'a Shared,
    addr: &'a PeerAddr,
    tx: watch::Sender<Option<Outcome>>,
    outcome: Outcome,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        lock(&self.shared.dials).end(
            self.addr,
            &self.tx,
            std::mem::replace(&mut self.outcome, Outcome::Failed),
        );
    }
}

/// [`NodeHandle::dial`]: the policy, then the dial.
pub(crate) async fn dial(
    shared: &Arc<Shared>,
    addr: &PeerAddr,
    opts: DialOpts,
) -> Result<Channel, NodeError> {
    if shared.shutdown.is_cancelled() {
        return Err(NodeError::ShuttingDown);
    }
    let now = Instant::now().into_std();
    if lock(&shared.bans).is_addr_banned(addr, now) {
        return Err(NodeError::Banned(addr.to_string()));
    }
    if shared.own_addrs().contains(addr) {
        return Err(NodeError::SelfDial(addr.clone()));
    }
    // A peer we have (or are opening) a channel to is not dialed again: the
    // check after the handshake would come too late, as the listener opens
    // its channel on our last handshake message and a second channel from
    // the same dialer replaces the first there. The peer is the one the dial
    // names, or the one we dialed at this address before.
    if let Some(peer) = opts.peer.or_else(|| dialed_at(shared, addr))
        && (lock(&shared.establishing).contains(&peer) || !dial_may_proceed(shared, &peer))
    {
        return existing_channel(shared, peer).await;
    }
    let admission = lock(&shared.dials).begin(addr, &opts, now)?;
    let result = match admission {
        Admission::Follow(mut rx) => {
            let outcome = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|o| o.clone());
            match outcome {
                Some(Outcome::Reached(peer)) => Err(NodeError::AlreadyConnected(peer)),
                // The same refusal (a banned peer learns it is banned
                // whichever of its dials the other side refused).
                Some(Outcome::Refused(reason)) => Err(NodeError::Refused(reason)),
                Some(Outcome::Failed) | None => Err(NodeError::DialFailed(addr.clone())),
            }
        }
        Admission::Lead(tx) => {
            let mut leading = Leading {
                shared,
                addr,
                tx,
                outcome: Outcome::Failed,
            };
            let result = connect(shared, addr, &opts).await;
            leading.outcome = match &result {
                Ok(channel) => Outcome::Reached(channel.remote_peer_id()),
                Err(NodeError::AlreadyConnected(peer)) => Outcome::Reached(*peer),
                Err(NodeError::Refused(reason)) => Outcome::Refused(reason.clone()),
                Err(_) => Outcome::Failed,
            };
            result
        }
    };
    match result {
        Err(NodeError::AlreadyConnected(peer)) => existing_channel(shared, peer).await,
        other => other,
    }
}

/// [`NodeHandle::probe`].
pub(crate) async fn probe(
    shared: &Arc<Shared>,
    addr: &PeerAddr,
    expected: Option<PeerId>,
) -> Result<PeerId, NodeError> {
    let attempt = async {
        let conn = raw_dial(shared, addr).await?;
        // Say it was only a probe, so the peer counts it as one (not as a
        // failed inbound connection) and closes its side at once.
        if let Some(peer) = conn.peer {
            check_expected(expected, peer)?;
            let _ = version::refuse(conn.stream, DisconnectReason::Probe).await;
            return Ok(peer);
        }
        // The refusal rides in the handshake: the peer learns it at once.
        let early = Hello::Refuse(DisconnectReason::Probe).to_bytes()?;
        let (secure, _) = shared
            .secure
            .upgrade_outbound_with(conn.stream, expected, early)
            .await?;
        Ok(secure.remote_peer_id())
    };
    tokio::time::timeout(shared.config.handshake_timeout, attempt)
        .await
        .unwrap_or(Err(NodeError::HandshakeTimeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m7_a_ban_covers_what_the_node_saw_not_what_the_peer_claimed() {
        let inbound = "tcp/203.0.113.7:51000".parse().unwrap();
        assert_eq!(
            ban_target(SessionKind::Inbound, &inbound),
            BanTarget::Host(IpPrefix::host("203.0.113.7".parse().unwrap()))
        );
        let v6 = "tcp/[2001:db8::7]:51000".parse().unwrap();
        assert_eq!(
            ban_target(SessionKind::Inbound, &v6),
            BanTarget::Host(IpPrefix::host("2001:db8::1".parse().unwrap())),
            "the /64"
        );
        let local = "tcp/127.0.0.1:51000".parse().unwrap();
        assert_eq!(
            ban_target(SessionKind::Inbound, &local),
            BanTarget::PeerOnly
        );
        assert_eq!(
            ban_target(SessionKind::Inbound, &PeerAddr::Mem(3)),
            BanTarget::PeerOnly
        );
        let dialed = "tcp/198.51.100.2:4000".parse().unwrap();
        assert_eq!(ban_target(SessionKind::Outbound, &dialed), BanTarget::Addr);
        assert_eq!(ban_target(SessionKind::Seed, &dialed), BanTarget::Addr);
    }
}
