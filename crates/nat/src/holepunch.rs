//! Hole punching over a relayed channel (DCUtR-like): both peers open a TCP
//! connection to each other at the same moment from their listen ports, and
//! the direct channel replaces the relayed one.
//!
//! The side that dialed through the relay starts: it sends its candidate
//! addresses in a [`Punch`] request (its TCP listen addresses, its confirmed
//! external addresses, and the IP the relay sees it at with its listen
//! port) and times the answer, the other side's candidates: one round trip.
//! It then sends [`Sync`] and waits half that round trip; the other side
//! dials as soon as [`Sync`] arrives, so both dials leave at about the same
//! time. Each side dials the other's candidates from its own listen port
//! (port reuse, see `knotwork_transport_tcp::TcpConfig::port_reuse`), so
//! each NAT maps the listen port outward and lets the other side's SYN in;
//! a refused dial is repeated every [`REDIAL_INTERVAL`], since the first
//! SYNs may arrive before the other NAT has a mapping.
//!
//! # What is dialed
//! A peer's candidates are its own word, so a node dials only those at the
//! IP the relay sees the peer's connection come from (the relay tells each
//! end in [`Opened`](crate::relay::Opened) /
//! [`Incoming`](crate::relay::Incoming)): the peer's own address, never a
//! third party, the node's loopback or its LAN, and only when that IP's
//! scope is one the relay may tell us about (a public relay cannot point us
//! at a private range). At most [`MAX_PUNCH_TARGETS`] candidates, each at
//! most [`MAX_PUNCH_DIALS`] times within the handshake timeout, at most
//! [`MAX_PUNCHES`] punches at once on a node, one per relayed channel, and
//! the dials stop when the relayed channel closes. Dials are counted in
//! `knot_holepunch_dials_total`.
//!
//! Three things can happen to the TCP connection, and the Noise roles follow:
//! one side's SYN reaches the other's listener (the listener side runs the
//! normal inbound pipeline, the dialing side must be the Noise initiator);
//! or both SYNs cross (a simultaneous open: both dials succeed and nobody
//! accepted). A dialed connection is therefore the initiator if this node
//! has the smaller PeerId; the larger waits [`PEEK_WAIT`] for the first
//! bytes: if the peer starts the handshake it answers as responder (the
//! simultaneous open), otherwise the peer is a listener and it initiates
//! ([`role`]). The node's de-duplication keeps a direct channel over a
//! relayed one to the same PeerId; when no dial works the relayed channel
//! simply stays. Attempts and successes are counted in
//! `knot_holepunch_attempts_total` / `knot_holepunch_successes_total`.
//!
//! Candidates include QUIC listen addresses; at the same moment as the TCP
//! dials, both sides dial those over UDP from their QUIC listen socket
//! (see [`crate::holepunch_quic`]), which gets through NATs that answer an
//! early SYN with a reset. The same rules pick the QUIC targets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use knotwork_core::{MAX_ADDR_TEXT_LEN, PeerAddr, PeerId};
use knotwork_node::{AddrScope, Channel, DisconnectReason, NodeError, NodeHandle, SessionKind};
use knotwork_transport_tcp::TcpTransport;
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::Inner;

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/holepunch";

/// Most candidate addresses in one [`Punch`].
pub const MAX_PUNCH_ADDRS: usize = 8;

/// How long the larger PeerId waits for the peer's first handshake bytes on
/// a punched connection before it starts the handshake itself.
pub const PEEK_WAIT: Duration = Duration::from_millis(500);

/// Pause between two dials of one candidate while punching.
pub const REDIAL_INTERVAL: Duration = Duration::from_millis(100);

/// Most candidates of the other side dialed in one punch, per transport.
pub const MAX_PUNCH_TARGETS: usize = 2;

/// Most dials of one candidate in one punch.
pub const MAX_PUNCH_DIALS: u32 = 10;

/// Most punches running at once on a node.
pub const MAX_PUNCHES: usize = 4;

/// Candidate addresses of one side; the request and its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Punch {
    /// Text forms of TCP and QUIC [`PeerAddr`]s.
    pub addrs: Vec<String>,
}

impl Message for Punch {
    const NAME: &'static str = "knot/holepunch/addrs/1";
    // addrs: 1 (count) + 8 × (2 (length) + 160).
    const MAX_BYTES: usize = 1 + MAX_PUNCH_ADDRS * (2 + MAX_ADDR_TEXT_LEN);
}

/// "Dial now": sent by the starting side half a round trip before it dials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync;

impl Message for Sync {
    const NAME: &'static str = "knot/holepunch/sync/1";
    // A unit struct: no bytes.
    const MAX_BYTES: usize = 0;
}

/// The Noise role on a connection this node dialed while punching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Start the handshake at once.
    Initiator,
    /// Wait up to [`PEEK_WAIT`]: answer if the peer starts, else start.
    Wait,
}

/// The role of `local` on a connection it dialed to `remote`; see the
/// module docs.
pub fn role(local: PeerId, remote: PeerId) -> Role {
    if local < remote {
        Role::Initiator
    } else {
        Role::Wait
    }
}

/// Our candidate addresses: TCP and QUIC listen addresses with a concrete
/// IP, the confirmed external ones, and `observed_ip` (as a relay sees us)
/// with each listen port; without duplicates, at most [`MAX_PUNCH_ADDRS`].
pub fn candidates(
    listen: &[PeerAddr],
    external: &[PeerAddr],
    observed_ip: Option<std::net::IpAddr>,
) -> Vec<PeerAddr> {
    let mut out: Vec<PeerAddr> = Vec::new();
    let mut push = |a: PeerAddr| {
        let fit = ip_port(&a).is_some_and(|sa| !sa.ip().is_unspecified() && sa.port() != 0);
        if fit && !out.contains(&a) {
            out.push(a);
        }
    };
    for a in listen.iter().chain(external) {
        push(a.clone());
    }
    if let Some(observed) = observed_ip {
        for a in listen {
            if let Some(sa) = ip_port(a) {
                push(with_socket(a, SocketAddr::new(observed, sa.port())));
            }
        }
    }
    out.truncate(MAX_PUNCH_ADDRS);
    out
}

/// The socket address of a TCP or QUIC address.
fn ip_port(a: &PeerAddr) -> Option<SocketAddr> {
    match a {
        PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) => Some(*sa),
        _ => None,
    }
}

/// `a`'s kind (TCP or QUIC) at `sa`.
fn with_socket(a: &PeerAddr, sa: SocketAddr) -> PeerAddr {
    match a {
        PeerAddr::Quic(_) => PeerAddr::Quic(sa),
        _ => PeerAddr::Tcp(sa),
    }
}

/// The other side's candidates this node dials: the TCP and QUIC ones at
/// `seen`, the IP the relay sees that side's connection come from, if that
/// IP's scope may be told by a relay of scope `relay_scope`; at most
/// [`MAX_PUNCH_TARGETS`] of each transport, without duplicates. See the
/// module docs.
pub fn targets(theirs: &[String], seen: Option<IpAddr>, relay_scope: AddrScope) -> Vec<PeerAddr> {
    let Some(seen) = seen.map(|ip| ip.to_canonical()) else {
        return Vec::new();
    };
    if !AddrScope::of_ip(seen).shareable_with(relay_scope) {
        return Vec::new();
    }
    let mut out: Vec<PeerAddr> = Vec::new();
    for text in theirs.iter().take(MAX_PUNCH_ADDRS) {
        let Ok(a) = text.parse::<PeerAddr>() else {
            continue;
        };
        let Some(sa) = ip_port(&a) else {
            continue;
        };
        let same_kind = out
            .iter()
            .filter(|o| std::mem::discriminant(*o) == std::mem::discriminant(&a))
            .count();
        if sa.ip().to_canonical() == seen
            && sa.port() != 0
            && !out.contains(&a)
            && same_kind < MAX_PUNCH_TARGETS
        {
            out.push(a);
        }
    }
    out
}

/// Our candidates for the peer at the other end of relayed `channel`.
fn own_candidates(node: &NodeHandle, nat: &Inner, channel: &Channel) -> Vec<String> {
    let observed_ip = match channel.remote_addr() {
        PeerAddr::Relay(r) => node.channel(&r.relay_peer).and_then(|relay| {
            match relay.info().version.observed_addr.parse::<PeerAddr>() {
                Ok(PeerAddr::Tcp(sa) | PeerAddr::Quic(sa)) => Some(sa.ip()),
                _ => None,
            }
        }),
        _ => None,
    };
    candidates(&node.listen_addrs(), &nat.external(), observed_ip)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Hole punching on one channel; does nothing unless the channel is relayed.
pub(crate) fn protocol(
    channel: &Channel,
    nat: Arc<Inner>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let relayed = channel.remote_addr().is_relayed();
    let starts = channel.info().session != SessionKind::Inbound;
    let mut requests = (relayed && !starts).then(|| channel.subscribe_requests::<Punch>());
    let mut syncs = (relayed && !starts).then(|| channel.subscribe::<Sync>());
    let channel = channel.clone();
    async move {
        if !relayed {
            return;
        }
        let Some(node) = nat.node() else {
            return;
        };
        let (theirs, wait) = if starts {
            let ours = own_candidates(&node, &nat, &channel);
            let sent = Instant::now();
            let Ok(Punch { addrs }) = channel
                .request::<Punch, Punch>(&Punch { addrs: ours })
                .await
            else {
                return;
            };
            let rtt = sent.elapsed();
            if channel.send(&Sync).await.is_err() {
                return;
            }
            (addrs, rtt / 2)
        } else {
            let (Some(requests), Some(syncs)) = (requests.as_mut(), syncs.as_mut()) else {
                return;
            };
            let Some((Punch { addrs }, responder)) = requests.recv().await else {
                return;
            };
            let ours = own_candidates(&node, &nat, &channel);
            if responder.respond(&Punch { addrs: ours }).await.is_err() {
                return;
            }
            if syncs.recv().await.is_none() {
                return;
            }
            (addrs, Duration::ZERO)
        };
        let peer = channel.remote_peer_id();
        let PeerAddr::Relay(r) = channel.remote_addr() else {
            return;
        };
        let seen = nat.client.peer_addr(r.relay_peer, peer).map(|sa| sa.ip());
        let mut targets = targets(&theirs, seen, AddrScope::of(&r.relay));
        let running = if targets.is_empty() {
            None
        } else {
            nat.punches.clone().try_acquire_owned().ok()
        };
        if running.is_none() && !targets.is_empty() {
            tracing::debug!(peer = %peer.short(), "as many hole punches as allowed run; not dialing");
            targets.clear();
        }
        // A job of the node, not of this channel: a success closes this
        // relayed channel and its jobs, and the handshake on the punched
        // connection must go on. The dials stop when the channel closes.
        node.clone().spawn(async move {
            punch(&node, &nat, &channel, targets, wait, running).await;
        });
    }
}

/// The shortest time a punch waits for the direct channel after its own
/// dials ended, before it counts as failed.
const MIN_SUCCESS_WINDOW: Duration = Duration::from_secs(5);

/// After `wait`, dials `targets` from our listen ports (TCP here, QUIC in
/// [`crate::holepunch_quic`], both at once) until the relayed channel
/// `relayed` closes, and runs the pipeline on the first connection of each
/// (`running` counts the punch among [`MAX_PUNCHES`] until then); counts
/// the attempt and, if the peer ends up on a direct channel, the success.
async fn punch(
    node: &NodeHandle,
    nat: &Inner,
    relayed: &Channel,
    targets: Vec<PeerAddr>,
    wait: Duration,
    running: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let (metrics, peer) = (&nat.metrics, relayed.remote_peer_id());
    metrics.holepunch_attempt();
    let mut events = node.events();
    let quic = crate::holepunch_quic::punch(node, nat, peer, &targets);
    let local = node.listen_addrs().iter().find_map(|a| match a {
        PeerAddr::Tcp(sa) => Some(*sa),
        _ => None,
    });
    let tcp_targets: Vec<&PeerAddr> = targets
        .iter()
        .filter(|a| matches!(a, PeerAddr::Tcp(_)))
        .collect();
    let tcp = async {
        let Some(local) = local.filter(|_| !tcp_targets.is_empty()) else {
            return;
        };
        let until = Instant::now() + node.config().handshake_timeout;
        let dials = tcp_targets
            .iter()
            .map(|a| Box::pin(dial_until(node.tcp(), local, (*a).clone(), until, nat)));
        match futures::future::select_ok(dials).await {
            Ok((stream, _)) => {
                if let Err(e) = handshake(node, peer, stream).await {
                    tracing::debug!(peer = %peer.short(), "punched connection failed: {e}");
                }
            }
            Err(e) => tracing::debug!(peer = %peer.short(), "hole punch dials failed: {e}"),
        }
    };
    if !targets.is_empty() {
        let dials = async {
            tokio::time::sleep(wait).await;
            tokio::join!(tcp, quic);
        };
        tokio::select! {
            () = dials => {}
            _ = relayed.closed() => {
                tracing::debug!(peer = %peer.short(), "relayed channel closed; hole punch stopped");
            }
        }
    }
    drop(running);
    // The direct channel may also arrive through our listener.
    let direct = |node: &NodeHandle| {
        node.channel(&peer)
            .is_some_and(|c| !c.remote_addr().is_relayed())
    };
    // The other side's dial has its own handshake timeout and may land
    // after ours gave up (more so on a loaded host): give it a wider window.
    let window = (node.config().handshake_timeout * 3).max(MIN_SUCCESS_WINDOW);
    let waited = tokio::time::timeout(window, async {
        while !direct(node) {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                return;
            }
        }
    })
    .await;
    if waited.is_ok() && direct(node) {
        metrics.holepunch_success();
        tracing::info!(peer = %peer.short(), "hole punch succeeded");
    } else {
        tracing::info!(peer = %peer.short(), "hole punch failed; the relayed channel stays");
    }
}

/// Dials `target` from `local`, again every [`REDIAL_INTERVAL`] while the
/// dial fails, at most [`MAX_PUNCH_DIALS`] times and until `until`: a SYN
/// that reaches the other NAT before the other side's own SYN opened it is
/// refused or dropped, and the next one may cross.
async fn dial_until(
    tcp: &TcpTransport,
    local: SocketAddr,
    target: PeerAddr,
    until: Instant,
    nat: &Inner,
) -> Result<tokio::net::TcpStream, knotwork_core::TransportError> {
    let mut dials = 0;
    loop {
        dials += 1;
        nat.metrics.holepunch_dial();
        let attempt = tokio::time::timeout_at(until, tcp.dial_from(local, &target)).await;
        match attempt {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if dials >= MAX_PUNCH_DIALS || Instant::now() + REDIAL_INTERVAL >= until => {
                return Err(e);
            }
            Ok(Err(_)) => tokio::time::sleep(REDIAL_INTERVAL).await,
            Err(_) => return Err(knotwork_core::TransportError::Timeout(target)),
        }
    }
}

/// Runs the pipeline on a punched connection in the role [`role`] picks.
async fn handshake(
    node: &NodeHandle,
    peer: PeerId,
    stream: tokio::net::TcpStream,
) -> Result<(), NodeError> {
    let addr = PeerAddr::Tcp(stream.peer_addr()?);
    let session = match role(node.peer_id(), peer) {
        Role::Initiator => SessionKind::Manual,
        Role::Wait => {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(PEEK_WAIT, stream.peek(&mut byte)).await {
                Ok(Ok(n)) if n > 0 => SessionKind::Inbound,
                _ => SessionKind::Manual,
            }
        }
    };
    let channel = node.establish(Box::new(stream), addr, session).await?;
    if channel.remote_peer_id() != peer {
        channel
            .close(DisconnectReason::other("hole punch reached another peer"))
            .await;
        return Err(NodeError::WrongPeer {
            expected: peer,
            got: channel.remote_peer_id(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;
    use knotwork_wire::{decode, encode};
    use proptest::prelude::*;

    fn a(s: &str) -> PeerAddr {
        s.parse().unwrap()
    }

    #[test]
    fn test_roles_are_opposite() {
        let (x, y) = (
            Keypair::generate().unwrap().peer_id(),
            Keypair::generate().unwrap().peer_id(),
        );
        let (rx, ry) = (role(x, y), role(y, x));
        assert_ne!(rx, ry);
        assert!(rx == Role::Initiator || ry == Role::Initiator);
    }

    #[test]
    fn test_candidates_fill_in_the_observed_ip() {
        let listen = [a("tcp/0.0.0.0:4000"), a("tcp/10.0.0.5:4001"), a("mem/1")];
        let external = [a("tcp/203.0.113.9:4000")];
        let got = candidates(&listen, &external, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(
            got,
            vec![
                a("tcp/10.0.0.5:4001"),
                a("tcp/203.0.113.9:4000"),
                a("tcp/203.0.113.9:4001"),
            ]
        );
        let many: Vec<PeerAddr> = (1..40).map(|p| a(&format!("tcp/10.0.0.1:{p}"))).collect();
        assert_eq!(candidates(&many, &[], None).len(), MAX_PUNCH_ADDRS);
    }

    fn texts(addrs: &[&str]) -> Vec<String> {
        addrs.iter().map(|a| (*a).to_owned()).collect()
    }

    /// H2: only the peer's own IP, as the relay sees it, is dialed.
    #[test]
    fn h2_only_candidates_at_the_ip_the_relay_sees_are_dialed() {
        let theirs = texts(&[
            "tcp/127.0.0.1:1",
            "tcp/10.0.0.1:1",
            "tcp/192.0.2.1:9",
            "tcp/203.0.113.7:4000",
            "mem/3",
            "tcp/203.0.113.7:0",
            "tcp/[::ffff:203.0.113.7]:4001",
            "tcp/203.0.113.7:4000",
        ]);
        let seen = Some("203.0.113.7".parse().unwrap());
        assert_eq!(
            targets(&theirs, seen, AddrScope::Public),
            vec![
                a("tcp/203.0.113.7:4000"),
                a("tcp/[::ffff:203.0.113.7]:4001")
            ]
        );
        // No observation from the relay (not an IP connection): nothing.
        assert!(targets(&theirs, None, AddrScope::Public).is_empty());
        // A public relay cannot point us at a loopback or private IP.
        for ip in ["127.0.0.1", "10.0.0.1"] {
            assert!(targets(&theirs, Some(ip.parse().unwrap()), AddrScope::Public).is_empty());
        }
        // A relay on our LAN can, for its LAN.
        assert_eq!(
            targets(
                &theirs,
                Some("10.0.0.1".parse().unwrap()),
                AddrScope::Private
            ),
            vec![a("tcp/10.0.0.1:1")]
        );
        let many: Vec<String> = (1..9).map(|p| format!("tcp/203.0.113.7:{p}")).collect();
        assert_eq!(
            targets(&many, seen, AddrScope::Public).len(),
            MAX_PUNCH_TARGETS
        );
        // QUIC candidates follow the same rules, with their own share.
        let mixed = texts(&[
            "tcp/203.0.113.7:1",
            "tcp/203.0.113.7:2",
            "tcp/203.0.113.7:3",
            "quic/203.0.113.7:4",
            "quic/10.0.0.1:4",
        ]);
        assert_eq!(
            targets(&mixed, seen, AddrScope::Public),
            vec![
                a("tcp/203.0.113.7:1"),
                a("tcp/203.0.113.7:2"),
                a("quic/203.0.113.7:4")
            ]
        );
    }

    #[test]
    fn test_quic_listen_addresses_are_candidates_of_their_kind() {
        let listen = [a("tcp/0.0.0.0:4000"), a("quic/0.0.0.0:4000")];
        let got = candidates(&listen, &[], Some("203.0.113.9".parse().unwrap()));
        assert_eq!(
            got,
            vec![a("tcp/203.0.113.9:4000"), a("quic/203.0.113.9:4000")]
        );
    }

    proptest! {
        #[test]
        fn punch_round_trips(addrs in proptest::collection::vec("[ -~]{0,160}", 0..=MAX_PUNCH_ADDRS)) {
            let p = Punch { addrs };
            prop_assert_eq!(decode::<Punch>(&encode(&p).unwrap()).unwrap(), p);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Punch>(&bytes);
            let _ = decode::<Sync>(&bytes);
        }
    }
}
