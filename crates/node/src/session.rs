//! How connections are made and kept: the pipeline from a raw connection to
//! a started [`Channel`], the accept loop with its limits, dialing, the
//! maintenance loop (refinery and outbound slots) and reconnecting to
//! manual and seed peers.
//!
//! ```text
//! raw conn ─► Noise handshake ─► ban / limit checks ─► version exchange ─► de-dup ─► Channel
//!              (SecureStream)      (refuse w/ reason)    (Version both ways)            + protocols
//! ```
//! The handshake and version exchange together must finish within
//! [`NodeConfig::handshake_timeout`](crate::NodeConfig::handshake_timeout).

use std::net::IpAddr;
use std::sync::Arc;

use knotwork_core::{PeerAddr, PeerId, TransportError};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::channel::{Channel, ChannelInfo};
use crate::error::{CloseReason, DisconnectReason, NodeError};
use crate::hosts::AddrScope;
use crate::node::{NodeEvent, Shared, lock};
use crate::registry::SessionKind;
use crate::transport::{AnyListener, BoxStream};
use crate::version::{self, Version};

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

/// Dials `addr` on the first transport that supports it; a relay address
/// opens a circuit through the relay (connecting to it first if needed).
async fn dial(shared: &Arc<Shared>, addr: &PeerAddr) -> Result<BoxStream, NodeError> {
    if let PeerAddr::Relay(r) = addr {
        let existing = lock(&shared.peers).get(&r.relay_peer).cloned();
        let relay = match existing {
            Some(channel) => channel,
            None => match Box::pin(connect(shared, &r.relay, SessionKind::Manual)).await {
                Err(NodeError::AlreadyConnected(peer)) => existing_channel(shared, peer).await?,
                other => other?,
            },
        };
        if relay.remote_peer_id() != r.relay_peer {
            return Err(NodeError::WrongPeer {
                expected: r.relay_peer,
                got: relay.remote_peer_id(),
            });
        }
        let stream = crate::protocol::relay::dial(&shared.nat.client, &relay, r.target).await?;
        return Ok(Box::new(stream));
    }
    for t in &shared.transports {
        match t.dial(addr).await {
            Err(TransportError::UnsupportedAddr(_)) => continue,
            other => return Ok(other?),
        }
    }
    Err(TransportError::UnsupportedAddr(addr.clone()).into())
}

/// Counts one inbound connection from an IP for as long as it lives.
pub(crate) struct IpSlot {
    shared: Arc<Shared>,
    ip: Option<IpAddr>,
    over_limit: bool,
}

impl IpSlot {
    fn take(shared: &Arc<Shared>, from: &PeerAddr) -> Self {
        let ip = match from {
            PeerAddr::Tcp(sa) => Some(sa.ip()),
            _ => None,
        };
        let mut over_limit = false;
        if let Some(ip) = ip {
            let mut map = lock(&shared.per_ip);
            let n = map.entry(ip).or_insert(0);
            *n += 1;
            over_limit = *n > shared.config.max_per_ip;
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
        if let Some(ip) = self.ip {
            let mut map = lock(&self.shared.per_ip);
            if let Some(n) = map.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// Replaces an unspecified listen IP (`0.0.0.0`, `::`) by the IP the
/// connection came from, so the address is dialable.
fn dialable(listen: PeerAddr, seen: &PeerAddr) -> PeerAddr {
    match (listen, seen) {
        (PeerAddr::Tcp(mut l), PeerAddr::Tcp(s)) if l.ip().is_unspecified() => {
            l.set_ip(s.ip());
            PeerAddr::Tcp(l)
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

/// The pipeline; see the module docs. `slot` is the per-IP count of an
/// inbound connection, kept until the channel closes.
pub(crate) async fn establish(
    shared: &Arc<Shared>,
    conn: BoxStream,
    addr: PeerAddr,
    session: SessionKind,
    slot: Option<IpSlot>,
) -> Result<Channel, NodeError> {
    let inbound = session == SessionKind::Inbound;
    let secure = if inbound {
        shared.secure.upgrade_inbound(conn).await?
    } else {
        shared.secure.upgrade_outbound(conn, None).await?
    };
    let peer = secure.remote_peer_id();
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
    let now = Instant::now().into_std();
    let refusal = if lock(&shared.bans).is_peer_banned(&peer, now) {
        Some(DisconnectReason::Banned)
    } else if shared.shutdown.is_cancelled() {
        Some(DisconnectReason::Shutdown)
    } else if inbound && slot.as_ref().is_some_and(|s| s.over_limit) {
        Some(DisconnectReason::TooManyFromIp)
    } else if inbound && inbound_count(shared) >= shared.config.max_inbound {
        Some(DisconnectReason::TooManyPeers)
    } else {
        None
    };
    if let Some(reason) = refusal {
        tracing::debug!(peer = %peer.short(), %addr, %reason, "refusing connection");
        if inbound {
            let _ = version::refuse(secure, reason.clone()).await;
            return Err(NodeError::Refused(reason));
        }
        return Err(match reason {
            DisconnectReason::Shutdown => NodeError::ShuttingDown,
            _ => NodeError::Banned(peer.to_string()),
        });
    }
    let _establishing = if inbound {
        None
    } else {
        Some(Establishing::claim(shared, peer)?)
    };
    let names = shared.registry.names();
    let ours = Version::new(&names, &shared.advertised_addrs(), &addr);
    let (theirs, parts) = version::exchange(secure, &ours).await?;
    if !addr.is_relayed()
        && let Some(external) =
            shared
                .nat
                .observe(peer, &addr, &theirs.observed_addr, shared.own_addrs())
    {
        tracing::info!(%external, "external address confirmed by peers");
    }
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
    let (channel, io) = Channel::new(parts, info, shared.channel_config.clone());
    if let Err(e) = insert(shared, &channel) {
        io.start(&channel);
        channel.close(DisconnectReason::Duplicate).await;
        return Err(e);
    }
    // Host store: a dialed address is verified; an inbound peer's own
    // listen addresses are only heard of.
    {
        let mut hosts = lock(&shared.hosts);
        if inbound {
            let scope = AddrScope::of(&addr);
            hosts.add_grey(
                listen
                    .into_iter()
                    .filter(|a| AddrScope::of(a).shareable_with(scope)),
                now,
            );
        } else {
            hosts.promote(&addr, now);
        }
    }
    shared.registry.attach(&channel);
    io.start(&channel);
    tracing::debug!(peer = %peer.short(), %addr, ?session, "channel open");
    shared.emit(NodeEvent::Connected {
        peer,
        addr,
        session,
    });
    tokio::spawn(supervise(shared.clone(), channel.clone(), slot));
    Ok(channel)
}

/// An outbound pipeline's claim on its peer, from the handshake until the
/// channel is in the peer table (or the pipeline fails). Two dials of one
/// peer at once (a manual connect while maintenance or discovery dials it)
/// used to both pass [`dial_may_proceed`] before either channel was
/// inserted, and the newer then closed the older as a duplicate; now the
/// second gives way ([`NodeError::AlreadyConnected`]) and `Node::connect`
/// waits for the first ([`existing_channel`]).
struct Establishing<'a> {
    shared: &'a Shared,
    peer: PeerId,
}

impl<'a> Establishing<'a> {
    fn claim(shared: &'a Shared, peer: PeerId) -> Result<Self, NodeError> {
        let mut establishing = lock(&shared.establishing);
        if establishing.contains(&peer) || !dial_may_proceed(shared, &peer) {
            return Err(NodeError::AlreadyConnected(peer));
        }
        establishing.insert(peer);
        Ok(Self { shared, peer })
    }
}

impl Drop for Establishing<'_> {
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
    peers.insert(peer, channel.clone());
    Ok(())
}

/// Waits for `channel` to close; then removes it, bans a misbehaving peer
/// and reports the event.
async fn supervise(shared: Arc<Shared>, channel: Channel, slot: Option<IpSlot>) {
    let reason = channel.closed().await;
    drop(slot);
    let peer = channel.remote_peer_id();
    {
        let mut peers = lock(&shared.peers);
        if peers.get(&peer).is_some_and(|c| c.same(&channel)) {
            peers.remove(&peer);
        }
    }
    if reason == CloseReason::Local(DisconnectReason::Misbehaviour) {
        let now = Instant::now().into_std();
        let until = now + shared.channel_config.meter.ban_duration;
        let mut addrs = channel
            .info()
            .version
            .parsed_listen_addrs()
            .unwrap_or_default();
        if channel.info().session != SessionKind::Inbound {
            addrs.push(channel.remote_addr().clone());
        }
        {
            let mut hosts = lock(&shared.hosts);
            for a in &addrs {
                hosts.blacklist(a, now);
            }
        }
        lock(&shared.bans).ban(peer, addrs, until);
        shared.apps.metrics.ban(channel.misbehaviour());
        tracing::info!(peer = %peer.short(), "banned for misbehaviour");
        shared.emit(NodeEvent::Banned { peer });
    }
    shared.emit(NodeEvent::Disconnected { peer, reason });
}

/// Accepts inbound connections until shutdown.
pub(crate) async fn accept_loop(shared: Arc<Shared>, mut listener: Box<dyn AnyListener>) {
    let _up = shared.apps.health.listener_up();
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
        let slot = IpSlot::take(&shared, &from);
        // A connection over its IP's limit is refused after the handshake
        // anyway; it gets a handshake slot only while half of them are free,
        // so one IP (slowloris) cannot hold every slot and lock out others.
        if slot.over_limit
            && shared.pending_handshakes.available_permits()
                <= shared.config.max_pending_handshakes / 2
        {
            tracing::debug!(%from, "too many connections from this ip; dropped before the handshake");
            continue;
        }
        let Ok(permit) = shared.pending_handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%from, "too many pending handshakes; dropped");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let timeout = shared.config.handshake_timeout;
            let result = tokio::time::timeout(
                timeout,
                establish(
                    &shared,
                    conn,
                    from.clone(),
                    SessionKind::Inbound,
                    Some(slot),
                ),
            )
            .await;
            drop(permit);
            let failure = match &result {
                Ok(r) => r.as_ref().err(),
                Err(_) => Some(&NodeError::HandshakeTimeout),
            };
            shared.apps.metrics.handshake("inbound", failure);
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(%from, "inbound connection failed: {e}"),
                Err(_) => tracing::debug!(%from, "inbound handshake timed out"),
            }
        });
    }
}

/// Dials `addr` and runs the pipeline for session `kind`.
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    addr: &PeerAddr,
    kind: SessionKind,
) -> Result<Channel, NodeError> {
    if shared.shutdown.is_cancelled() {
        return Err(NodeError::ShuttingDown);
    }
    if lock(&shared.bans).is_addr_banned(addr, Instant::now().into_std()) {
        return Err(NodeError::Banned(addr.to_string()));
    }
    if shared.own_addrs().contains(addr) {
        return Err(NodeError::SelfDial(addr.clone()));
    }
    let conn = dial(shared, addr).await?;
    let result = tokio::time::timeout(
        shared.config.handshake_timeout,
        establish(shared, conn, addr.clone(), kind, None),
    )
    .await
    .unwrap_or(Err(NodeError::HandshakeTimeout));
    shared
        .apps
        .metrics
        .handshake("outbound", result.as_ref().err());
    result
}

/// Keeps a channel to `addr` open, reconnecting with backoff, until shutdown.
pub(crate) async fn keep_connected(shared: Arc<Shared>, addr: PeerAddr, kind: SessionKind) {
    let mut backoff = Backoff::new(shared.config.backoff);
    loop {
        let channel = match connect(&shared, &addr, kind).await {
            Ok(channel) => {
                backoff.on_success();
                Some(channel)
            }
            Err(NodeError::AlreadyConnected(peer)) => lock(&shared.peers).get(&peer).cloned(),
            Err(NodeError::ShuttingDown) => return,
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}");
                None
            }
        };
        if let Some(channel) = channel {
            tokio::select! {
                _ = channel.closed() => {}
                () = shared.shutdown.cancelled() => return,
            }
        }
        let at = backoff.on_failure(Instant::now().into_std(), fastrand::u64(..));
        tokio::select! {
            () = tokio::time::sleep_until(Instant::from_std(at)) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Every [`NodeConfig::maintenance_interval`](crate::NodeConfig::maintenance_interval):
/// expire bans, let the refinery verify one grey host, fill outbound slots.
pub(crate) async fn maintenance(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.shutdown.cancelled() => return,
        }
        lock(&shared.bans).expire(Instant::now().into_std());
        refine(&shared).await;
        fill_outbound(&shared);
    }
}

/// Addresses the node is connected to or dialing, and its own.
fn busy_addrs(shared: &Shared) -> Vec<PeerAddr> {
    let mut busy: Vec<PeerAddr> = shared.own_addrs().to_vec();
    for c in lock(&shared.peers).values() {
        busy.push(c.remote_addr().clone());
        busy.extend(c.info().version.parsed_listen_addrs().unwrap_or_default());
    }
    busy.extend(lock(&shared.dialing).iter().cloned());
    busy
}

/// The refinery: probes the oldest grey host with a handshake (no channel)
/// and whitelists it if a knotwork node answers, forgets it otherwise.
async fn refine(shared: &Arc<Shared>) {
    let Some(addr) = lock(&shared.hosts).next_grey() else {
        return;
    };
    let now = Instant::now().into_std();
    if busy_addrs(shared).contains(&addr) {
        // Already connected to it: verified.
        lock(&shared.hosts).promote(&addr, now);
        return;
    }
    let probe = async {
        let conn = dial(shared, &addr).await?;
        let secure = shared.secure.upgrade_outbound(conn, None).await?;
        Ok::<PeerId, NodeError>(secure.remote_peer_id())
    };
    let result = tokio::time::timeout(shared.config.handshake_timeout, probe).await;
    let mut hosts = lock(&shared.hosts);
    match result {
        Ok(Ok(peer)) if peer != shared.peer_id => {
            tracing::debug!(%addr, peer = %peer.short(), "refinery: whitelisted");
            hosts.promote(&addr, now);
        }
        _ => {
            tracing::debug!(%addr, "refinery: unreachable, forgotten");
            hosts.forget(&addr);
        }
    }
}

/// Dials white hosts until the outbound slots are full.
fn fill_outbound(shared: &Arc<Shared>) {
    let outbound = lock(&shared.peers)
        .values()
        .filter(|c| c.info().session == SessionKind::Outbound)
        .count();
    let dialing = lock(&shared.dialing).len();
    let free = shared
        .config
        .outbound_slots
        .saturating_sub(outbound + dialing);
    if free == 0 {
        return;
    }
    let busy = busy_addrs(shared);
    let now = Instant::now().into_std();
    let candidates: Vec<PeerAddr> = lock(&shared.hosts)
        .white()
        .into_iter()
        .filter(|a| !busy.contains(a) && !lock(&shared.bans).is_addr_banned(a, now))
        .take(free)
        .collect();
    for addr in candidates {
        lock(&shared.dialing).insert(addr.clone());
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connect(&shared, &addr, SessionKind::Outbound).await {
                tracing::debug!(%addr, "outbound dial failed: {e}");
                if !matches!(e, NodeError::AlreadyConnected(_)) {
                    lock(&shared.hosts).forget(&addr);
                }
            }
            lock(&shared.dialing).remove(&addr);
        });
    }
}
