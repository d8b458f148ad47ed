//! The per-channel half of the DHT: a [`Link`] per channel, and what the
//! driver may believe of what comes over it.
//!
//! Each channel's DHT protocol registers one [`Link`] with the driver: the
//! channel, the address the peer is reached at ([`reachable`]), the scope of
//! the connection, and a small queue of messages for the peer, drained by
//! the channel's own writer job. The driver reads the channel's DHT
//! subscription itself, round robin with every other channel's, so a
//! channel that floods waits on its own subscription (its own reader stops)
//! and never on another's; and it only ever *tries* to queue for a peer, so
//! a peer that does not read loses its messages and stalls nobody.
//!
//! What a peer says is held to the scope of its connection ([`AddrScope`]):
//! the addresses a response lists are kept only if that peer may make us
//! dial them (a public peer never names loopback or private ones to us),
//! and those we list to a peer only if they may be shared with it.

use std::net::SocketAddr;
use std::sync::Arc;

use knotwork_core::{PeerAddr, PeerId};
use knotwork_discovery_dht::message::{WireAddr, WirePeer};
use knotwork_discovery_dht::{DhtMessage, Request, Response};
use knotwork_node::{AddrScope, Channel, ChannelInfo, SessionKind};
use tokio::sync::mpsc;

use crate::metrics::DhtMetrics;

/// Messages waiting for one peer's channel at most, beyond what its outbox
/// holds. With at most 32 KiB a message (`DhtMessage::MAX_BYTES`) that is at
/// most 512 KiB per peer; the responses and requests of an honest exchange
/// are a few KiB and wait here only while the outbox is full.
pub(crate) const QUEUE: usize = 16;

/// One channel as the driver sees it; see the module docs.
pub(crate) struct Link {
    /// The channel.
    pub(crate) channel: Channel,
    /// Where the peer is reached ([`reachable`]); empty if nowhere.
    pub(crate) addrs: Vec<PeerAddr>,
    /// The scope of the connection.
    pub(crate) scope: AddrScope,
    /// Whether the peer says it runs the DHT (its version lists it).
    pub(crate) serves: bool,
    queue: mpsc::Sender<DhtMessage>,
    metrics: DhtMetrics,
}

impl Link {
    /// A link for `channel` and the receiving end of its queue, for the
    /// channel's writer job ([`Link::write`]).
    pub(crate) fn new(
        channel: Channel,
        metrics: DhtMetrics,
    ) -> (Arc<Self>, mpsc::Receiver<DhtMessage>) {
        let info = channel.info();
        let addrs = reachable(info);
        let scope = AddrScope::of(channel.remote_addr());
        let serves = serves(info);
        let (queue, rx) = mpsc::channel(QUEUE);
        let link = Self {
            channel,
            addrs,
            scope,
            serves,
            queue,
            metrics,
        };
        (Arc::new(link), rx)
    }

    /// The peer.
    pub(crate) fn peer(&self) -> PeerId {
        self.channel.remote_peer_id()
    }

    /// The address to give the core for messages from this peer: where it
    /// is reached, else (it cannot be reached) the connection's own.
    pub(crate) fn addr(&self) -> PeerAddr {
        self.addrs
            .first()
            .cloned()
            .unwrap_or_else(|| self.channel.remote_addr().clone())
    }

    /// Whether the channel's writer is gone (the channel is closing).
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Queues `msg` for the peer without waiting; `false` (and `msg` is
    /// dropped) if the queue is full or the writer gone.
    pub(crate) fn try_send(&self, msg: DhtMessage) -> bool {
        // The slot first, then the count, then the message: the writer
        // cannot take it (and count it out) before it is counted in, and a
        // full queue is never counted one over its capacity.
        let Ok(slot) = self.queue.try_reserve() else {
            return false;
        };
        self.metrics.queued(1);
        slot.send(msg);
        true
    }

    /// The channel's writer job: sends what the driver queued, waiting on
    /// this channel's outbox only, until the driver drops the link or the
    /// channel closes (which aborts the job).
    pub(crate) async fn write(
        channel: Channel,
        rx: mpsc::Receiver<DhtMessage>,
        metrics: DhtMetrics,
    ) {
        let mut queue = Queue { rx, metrics };
        while let Some(msg) = queue.rx.recv().await {
            queue.metrics.queued(-1);
            if channel.send(&msg).await.is_err() {
                break;
            }
        }
    }
}

/// The receiving end of a link's queue; what is left in it when the writer
/// ends (or is aborted) goes uncounted.
struct Queue {
    rx: mpsc::Receiver<DhtMessage>,
    metrics: DhtMetrics,
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.rx.close();
        while self.rx.try_recv().is_ok() {
            self.metrics.queued(-1);
        }
    }
}

/// Whether the peer of a channel says it runs the DHT.
pub(crate) fn serves(info: &ChannelInfo) -> bool {
    info.version.protocols.iter().any(|p| p == crate::NAME)
}

/// Where the peer of a channel is reached, from what the node saw rather
/// than what the peer claims:
/// - a channel we dialed: the address we dialed;
/// - an inbound TCP connection: the IP it comes from, with each TCP port
///   the peer says it listens on (same IP family): at worst it makes us
///   dial its own IP;
/// - an inbound in-process memory connection: the memory ports it
///   declares (that network is this process);
/// - another inbound connection (relayed, BLE): the connection's address.
///
/// A peer that listens nowhere we can tell is reached nowhere (empty): it
/// is served as a client and never enters the routing table.
pub(crate) fn reachable(info: &ChannelInfo) -> Vec<PeerAddr> {
    if info.session != SessionKind::Inbound {
        return vec![info.remote_addr.clone()];
    }
    let declared = info.version.parsed_listen_addrs().unwrap_or_default();
    let mut out: Vec<PeerAddr> = Vec::new();
    match &info.remote_addr {
        PeerAddr::Tcp(seen) => {
            let ip = seen.ip().to_canonical();
            for addr in declared {
                if let PeerAddr::Tcp(l) = addr
                    && l.ip().to_canonical().is_ipv4() == ip.is_ipv4()
                {
                    out.push(PeerAddr::Tcp(SocketAddr::new(ip, l.port())));
                }
            }
        }
        PeerAddr::Mem(_) => out.extend(
            declared
                .into_iter()
                .filter(|a| matches!(a, PeerAddr::Mem(_))),
        ),
        other => out.push(other.clone()),
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(a.clone()));
    out
}

/// Whether a peer whose connection has scope `scope` may have us dial
/// `addr` (and be told it). Addresses that do not parse are kept, for the
/// core to refuse by name.
fn shareable(addr: &WireAddr, scope: AddrScope) -> bool {
    match addr.to_peer_addr() {
        Ok(a) => AddrScope::of(&a).shareable_with(scope),
        Err(_) => true,
    }
}

/// Keeps the addresses of `peers` that fit `scope`, and the peers that
/// still have one.
fn keep_in_scope(peers: &mut Vec<WirePeer>, scope: AddrScope) {
    for p in peers.iter_mut() {
        p.addrs.retain(|a| shareable(a, scope));
    }
    peers.retain(|p| !p.addrs.is_empty());
}

/// Holds the peers a message lists to `scope`: a response from a peer of
/// that scope (what it may make us dial), or one to it (what it may be
/// told).
pub(crate) fn hold_to_scope(msg: &mut DhtMessage, scope: AddrScope) {
    let DhtMessage::Response { body, .. } = msg else {
        return;
    };
    match body {
        Response::Nodes { closer } | Response::Value { closer, .. } => keep_in_scope(closer, scope),
        Response::Providers { providers, closer } => {
            keep_in_scope(providers, scope);
            keep_in_scope(closer, scope);
        }
        Response::Pong | Response::Stored => {}
    }
}

/// What the core gets of a message from `link`: the peers a response lists
/// held to the link's scope; a provider announced at the addresses the
/// link reaches it at, not those it claims; and a peer reached nowhere
/// treated as a client (answered, never put in the table).
pub(crate) fn inbound(link: &Link, mut msg: DhtMessage) -> DhtMessage {
    hold_to_scope(&mut msg, link.scope);
    if let DhtMessage::Request { client, body, .. } = &mut msg {
        *client |= link.addrs.is_empty();
        if let Request::AddProvider { addrs, .. } = body {
            *addrs = link
                .addrs
                .iter()
                .filter_map(WireAddr::from_peer_addr)
                .collect();
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;
    use knotwork_node::Version;

    fn a(s: &str) -> PeerAddr {
        s.parse().unwrap()
    }

    fn info(session: SessionKind, remote: &str, listen: &[&str]) -> ChannelInfo {
        let listen: Vec<PeerAddr> = listen.iter().map(|s| a(s)).collect();
        ChannelInfo {
            peer_id: Keypair::generate().unwrap().peer_id(),
            remote_addr: a(remote),
            session,
            version: Version::new(&[crate::NAME], &listen, &a("tcp/192.0.2.99:4000")),
        }
    }

    #[test]
    fn h3_a_peer_is_reached_at_what_we_saw_not_at_what_it_claims() {
        let listen = [
            "tcp/0.0.0.0:4000",
            "tcp/[::]:4001",
            "tcp/192.0.2.1:9",
            "mem/3",
        ];
        // Inbound over TCP: the IP it comes from, the ports it declares.
        let inbound = info(SessionKind::Inbound, "tcp/198.51.100.2:51234", &listen);
        assert_eq!(
            reachable(&inbound),
            vec![a("tcp/198.51.100.2:4000"), a("tcp/198.51.100.2:9")]
        );
        // An IPv4 peer seen by a dual-stack listener is an IPv4 peer.
        let mapped = info(SessionKind::Inbound, "tcp/[::ffff:198.51.100.2]:5", &listen);
        assert_eq!(reachable(&mapped), reachable(&inbound));
        // Dialed: where we dialed.
        let dialed = info(SessionKind::Outbound, "tcp/203.0.113.4:4000", &listen);
        assert_eq!(reachable(&dialed), vec![a("tcp/203.0.113.4:4000")]);
        // In-process: its memory ports. Listening nowhere: nowhere.
        let mem = info(SessionKind::Inbound, "mem/77", &listen);
        assert_eq!(reachable(&mem), vec![a("mem/3")]);
        let silent = info(SessionKind::Inbound, "tcp/198.51.100.2:51234", &[]);
        assert!(reachable(&silent).is_empty());
    }

    #[test]
    fn h3_a_public_peer_cannot_list_loopback_or_private_addresses() {
        let peer = |n: u8, addrs: &[&str]| WirePeer {
            id: [n; 32],
            addrs: addrs
                .iter()
                .map(|s| WireAddr::from_peer_addr(&a(s)).unwrap())
                .collect(),
        };
        let response = || DhtMessage::Response {
            id: 1,
            body: Response::Nodes {
                closer: vec![
                    peer(1, &["tcp/127.0.0.1:6379", "tcp/10.0.0.1:22"]),
                    peer(2, &["tcp/169.254.169.254:80", "tcp/198.51.100.7:4000"]),
                    peer(3, &["tcp/192.168.1.5:4000"]),
                ],
            },
        };
        let listed = |msg: DhtMessage| match msg {
            DhtMessage::Response {
                body: Response::Nodes { closer },
                ..
            } => closer,
            _ => panic!("not nodes"),
        };
        let mut msg = response();
        hold_to_scope(&mut msg, AddrScope::Public);
        assert_eq!(listed(msg), vec![peer(2, &["tcp/198.51.100.7:4000"])]);
        // A LAN peer may list LAN addresses, never loopback ones.
        let mut msg = response();
        hold_to_scope(&mut msg, AddrScope::Private);
        let kept = listed(msg);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[0], peer(1, &["tcp/10.0.0.1:22"]));
    }
}
