//! NAT traversal on one machine: the relay (reservations, circuits, limits)
//! between three nodes over the memory transport on virtual time, and over
//! loopback TCP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use knotwork_core::{Keypair, MemoryTransport, PeerAddr};
use knotwork_dht_node::DhtHandle;
use knotwork_nat::dialback::{DialBack, DialBackResult};
use knotwork_nat::{
    DialBackError, DialBackLimits, NatConfig, NatEvent, Reachability, RelayError, RelayLimits,
};
use knotwork_node::{Node, NodeEvent};
use support::common::{self, fast_config, wait_event};
use support::{
    Echo, NatNode, counter, echo, mem_node, nat_config, refused, relay_config, reserved, start,
    tcp_node, wait_reachability,
};

#[tokio::test(start_paused = true)]
async fn a_dialer_reaches_a_reserved_peer_through_the_relay() {
    let net = MemoryTransport::new();
    let relay = start(mem_node(&net), relay_config(RelayLimits::default())).await;
    let (b, relayed) = reserved(mem_node(&net), &relay).await;
    assert_eq!(
        relayed.to_string(),
        format!(
            "relay/{}/{}/{}",
            relay.listen_addrs()[0],
            relay.peer_id(),
            b.peer_id()
        )
    );
    // The relayed address is advertised to peers in the version message.
    let a = start(mem_node(&net), nat_config()).await;
    let ch = a.connect(&relayed).await.unwrap();
    assert_eq!(ch.remote_peer_id(), b.peer_id());
    assert!(ch.remote_addr().is_relayed());
    let listed = &ch.info().version.listen_addrs;
    assert!(listed.contains(&relayed.to_string()), "{listed:?}");

    let Echo(back) = ch
        .request::<Echo, Echo>(&Echo(vec![7u8; 100_000]))
        .await
        .unwrap();
    assert_eq!(back, vec![7u8; 100_000]);
    // b sees an inbound relayed channel from a.
    let from_b = b.channel(&a.peer_id()).unwrap();
    assert!(from_b.remote_addr().is_relayed());
    assert!(
        a.peers()
            .iter()
            .any(|p| p.peer_id == b.peer_id() && p.addr.is_relayed())
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_are_named() {
    let net = MemoryTransport::new();
    let mut limits = RelayLimits::default();
    limits.max_circuits_per_peer = 1;
    let relay = start(mem_node(&net), relay_config(limits)).await;
    let plain = start(mem_node(&net), nat_config()).await;
    let (b, relayed) = reserved(mem_node(&net), &relay).await;
    let a = start(mem_node(&net), nat_config()).await;

    // No reservation: `plain` never reserved.
    let to_plain = PeerAddr::relayed(
        relay.listen_addrs()[0].clone(),
        relay.peer_id(),
        plain.peer_id(),
    )
    .unwrap();
    assert!(refused(
        a.connect(&to_plain).await,
        RelayError::NoReservation
    ));
    // Relay disabled: `plain` offers no relay service.
    let via_plain = PeerAddr::relayed(
        plain.listen_addrs()[0].clone(),
        plain.peer_id(),
        b.peer_id(),
    )
    .unwrap();
    assert!(refused(a.connect(&via_plain).await, RelayError::Disabled));
    // One circuit per peer: the first works, a second is refused.
    let ch = a.connect(&relayed).await.unwrap();
    let c = start(mem_node(&net), nat_config()).await;
    assert!(refused(
        c.connect(&relayed).await,
        RelayError::LimitCircuits
    ));
    // The relay is still up and the first circuit still works.
    let Echo(back) = ch.request::<Echo, Echo>(&Echo(vec![1; 10])).await.unwrap();
    assert_eq!(back, vec![1; 10]);
    // A reservation on a node without the service is refused (no event).
    let mut lone = nat_config();
    lone.relays.push(plain.listen_addrs()[0].clone().into());
    let lone = start(mem_node(&net), lone).await;
    let mut events = lone.nat_events();
    let waited = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(NatEvent::RelayReserved { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(waited.is_err(), "a disabled relay granted a reservation");
}

#[tokio::test(start_paused = true)]
async fn the_relay_cuts_a_circuit_over_its_byte_or_time_limit_and_stays_up() {
    let net = MemoryTransport::new();
    let mut limits = RelayLimits::default();
    limits.max_bytes = 64 * 1024;
    limits.max_duration = Duration::from_secs(30);
    let relay = start(mem_node(&net), relay_config(limits)).await;
    let (b, relayed) = reserved(mem_node(&net), &relay).await;
    let a = start(mem_node(&net), nat_config()).await;

    // Bytes: 100 KB cannot pass a 64 KiB circuit.
    let ch = a.connect(&relayed).await.unwrap();
    let result = ch.request::<Echo, Echo>(&Echo(vec![0; 100_000])).await;
    assert!(result.is_err());
    tokio::time::timeout(Duration::from_secs(5), ch.closed())
        .await
        .unwrap();
    assert!(relay.metrics().encode().contains("knot_relay_circuits 0"));

    // Time: a fresh circuit carries small messages until 30 s pass.
    let ch = a.connect(&relayed).await.unwrap();
    let Echo(back) = ch.request::<Echo, Echo>(&Echo(vec![2; 10])).await.unwrap();
    assert_eq!(back, vec![2; 10]);
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(60), ch.closed())
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(29));
    assert!(
        b.channel(&relay.peer_id()).is_some(),
        "b keeps its relay channel"
    );
}

#[tokio::test]
async fn relay_over_loopback_tcp() {
    let relay = start(tcp_node("127.0.0.1"), relay_config(RelayLimits::default())).await;
    let (b, relayed) = reserved(tcp_node("127.0.0.1"), &relay).await;
    let a = start(tcp_node("127.0.0.1"), nat_config()).await;
    let ch = a.connect(&relayed).await.unwrap();
    assert_eq!(ch.remote_peer_id(), b.peer_id());
    let Echo(back) = ch
        .request::<Echo, Echo>(&Echo(vec![9; 50_000]))
        .await
        .unwrap();
    assert_eq!(back.len(), 50_000);
}

/// 127.0.0.1 and 127.0.0.2 play two hosts; the relay runs on 127.0.0.1.
#[tokio::test]
async fn a_hole_punch_on_loopback_replaces_the_relayed_channel() {
    let relay = start(tcp_node("127.0.0.1"), relay_config(RelayLimits::default())).await;
    let (b, relayed) = reserved(tcp_node("127.0.0.2"), &relay).await;
    let a = start(tcp_node("127.0.0.1"), nat_config()).await;
    let mut events = a.events();
    let ch = a.connect(&relayed).await.unwrap();
    assert!(ch.remote_addr().is_relayed());
    // The direct channel arrives and the relayed one closes as a duplicate.
    let direct = wait_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, NodeEvent::Connected { peer, addr, .. } if *peer == b.peer_id() && !addr.is_relayed())
    })
    .await;
    let NodeEvent::Connected { addr, .. } = direct else {
        unreachable!()
    };
    assert!(
        addr == b.listen_addrs()[0] || addr.to_string().starts_with("tcp/127.0.0.2:"),
        "{addr}"
    );
    tokio::time::timeout(Duration::from_secs(5), ch.closed())
        .await
        .unwrap();
    let now = a.channel(&b.peer_id()).unwrap();
    assert!(!now.remote_addr().is_relayed());
    let Echo(back) = now
        .request::<Echo, Echo>(&Echo(vec![5; 1000]))
        .await
        .unwrap();
    assert_eq!(back, vec![5; 1000]);
    common::eventually(Duration::from_secs(5), "b sees a directly", || {
        b.channel(&a.peer_id())
            .is_some_and(|c| !c.remote_addr().is_relayed())
    })
    .await;
    common::eventually(Duration::from_secs(5), "a counts the success", || {
        counter(&a, "knot_holepunch_successes_total") == 1
    })
    .await;
    assert_eq!(counter(&a, "knot_holepunch_attempts_total"), 1);
    common::eventually(Duration::from_secs(5), "the circuit is released", || {
        relay.metrics().encode().contains("knot_relay_circuits 0")
    })
    .await;
}

/// The dialer has no TCP listener (nothing to punch from, nothing to dial
/// back to): the punch fails and the relayed channel stays and works.
#[tokio::test]
async fn a_failed_hole_punch_keeps_the_relayed_channel() {
    let relay = start(tcp_node("127.0.0.1"), relay_config(RelayLimits::default())).await;
    let (b, relayed) = reserved(tcp_node("127.0.0.2"), &relay).await;
    let a = start(
        echo(Node::builder(Keypair::generate().unwrap()).config(fast_config())),
        nat_config(),
    )
    .await;
    let ch = a.connect(&relayed).await.unwrap();
    common::eventually(Duration::from_secs(10), "both punches end", || {
        counter(&a, "knot_holepunch_attempts_total") == 1
            && counter(&b, "knot_holepunch_attempts_total") == 1
    })
    .await;
    // Failure is reported after the handshake timeout on each side.
    tokio::time::sleep(common::HANDSHAKE_TIMEOUT * 2).await;
    assert_eq!(counter(&a, "knot_holepunch_successes_total"), 0);
    assert_eq!(counter(&b, "knot_holepunch_successes_total"), 0);
    assert!(!ch.is_closed());
    assert!(a.channel(&b.peer_id()).unwrap().same(&ch));
    let Echo(back) = ch.request::<Echo, Echo>(&Echo(vec![3; 10])).await.unwrap();
    assert_eq!(back, vec![3; 10]);
}

// --- Reachability: peers dial us back -----------------------------------------

/// A listener on loopback asks the two peers it dialed (127.0.0.1 and
/// 127.0.0.2: loopback addresses are networks of their own); both dial it
/// back from fresh sockets and it reports Public at its listen address.
#[tokio::test]
async fn two_peers_dial_a_loopback_node_back_and_it_is_public() {
    let p = start(tcp_node("127.0.0.1"), nat_config()).await;
    let mut events = p.nat_events();
    assert_eq!(p.reachability(), Reachability::Unknown);
    let s1 = start(tcp_node("127.0.0.1"), nat_config()).await;
    let s2 = start(tcp_node("127.0.0.2"), nat_config()).await;
    p.connect(&s1.listen_addrs()[0]).await.unwrap();
    p.connect(&s2.listen_addrs()[0]).await.unwrap();
    let want = Reachability::Public(p.listen_addrs()[0].clone());
    wait_reachability(&mut events, &want).await;
    assert_eq!(p.reachability(), want);
    let metrics = p.metrics().encode();
    assert!(
        metrics.contains("knot_reachability{state=\"public\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("knot_reachability{state=\"unknown\"} 0"));
    // Each dial-back ends its connection as a probe, which the node counts
    // as one, not as a failed inbound handshake.
    let probes = "knot_handshakes_total{direction=\"inbound\",result=\"probe\"}";
    common::eventually(Duration::from_secs(10), "both probes counted", || {
        p.metrics()
            .encode()
            .lines()
            .any(|l| l.strip_prefix(probes).is_some_and(|v| v.trim() == "2"))
    })
    .await;
    let metrics = p.metrics().encode();
    assert!(
        !metrics.contains("direction=\"inbound\",result=\"io\""),
        "{metrics}"
    );
}

/// The node listens on 127.0.0.2 but its connections leave from 127.0.0.1:
/// the peers see 127.0.0.1, dial its port there, find nothing (as a NAT
/// would drop them) and it reports Private.
#[tokio::test]
async fn a_node_its_peers_cannot_dial_back_is_private() {
    let x = start(tcp_node("127.0.0.2"), nat_config()).await;
    let mut events = x.nat_events();
    let s1 = start(tcp_node("127.0.0.1"), nat_config()).await;
    let s2 = start(tcp_node("127.0.0.3"), nat_config()).await;
    x.connect(&s1.listen_addrs()[0]).await.unwrap();
    x.connect(&s2.listen_addrs()[0]).await.unwrap();
    wait_reachability(&mut events, &Reachability::Private).await;
    assert_eq!(x.reachability(), Reachability::Private);
}

/// Asks `ch`'s peer to dial back at `addrs`; returns its answer.
async fn dial_back(ch: &knotwork_node::Channel, addrs: &[&str]) -> Result<String, DialBackError> {
    let request = DialBack {
        addrs: addrs.iter().map(|a| (*a).to_owned()).collect(),
    };
    let DialBackResult(answer) = ch
        .request_timeout::<DialBack, DialBackResult>(&request, Duration::from_secs(10))
        .await
        .unwrap();
    answer
}

/// The answering side refuses by name: a third party's address, over its
/// rate, over a non-IP (or relayed) channel, or when switched off.
#[tokio::test]
async fn dial_back_refusals_are_named() {
    let mut config = nat_config();
    let mut limits = DialBackLimits::default();
    limits.per_peer = 1;
    config.dial_back = Some(limits);
    let s = start(tcp_node("127.0.0.1"), config).await;
    // No listener: this node never asks on its own.
    let a = start(
        Node::builder(Keypair::generate().unwrap()).config(fast_config()),
        nat_config(),
    )
    .await;
    let ch = a.connect(&s.listen_addrs()[0]).await.unwrap();
    assert_eq!(
        dial_back(&ch, &["tcp/192.0.2.1:4000"]).await,
        Err(DialBackError::ThirdParty)
    );
    assert_eq!(
        dial_back(&ch, &["junk", "tcp/0.0.0.0:4000"]).await,
        Err(DialBackError::NoCandidate)
    );
    // Port 1 on loopback: nobody listens.
    assert_eq!(
        dial_back(&ch, &["tcp/127.0.0.1:1"]).await,
        Err(DialBackError::Unreachable)
    );
    assert_eq!(
        dial_back(&ch, &["tcp/127.0.0.1:1"]).await,
        Err(DialBackError::PeerRateLimited)
    );

    let net = MemoryTransport::new();
    let m = start(mem_node(&net), nat_config()).await;
    let b = start(mem_node(&net), nat_config()).await;
    let ch = b.connect(&m.listen_addrs()[0]).await.unwrap();
    assert_eq!(
        dial_back(&ch, &["tcp/127.0.0.1:1"]).await,
        Err(DialBackError::NotDirect)
    );
    let mut off = nat_config();
    off.dial_back = None;
    let m = start(mem_node(&net), off).await;
    let ch = b.connect(&m.listen_addrs()[0]).await.unwrap();
    assert_eq!(
        dial_back(&ch, &["tcp/127.0.0.1:1"]).await,
        Err(DialBackError::Disabled)
    );
}

/// A DHT node with NAT traversal `nat` on loopback TCP (`ip`).
async fn dht_node(ip: &str, nat: NatConfig) -> (NatNode, DhtHandle) {
    let keypair = Keypair::generate().unwrap();
    let dht_config = knotwork_dht_node::Config {
        // Every node is on 127.0.0.x.
        subnet_limits: None,
        request_timeout: Duration::from_secs(1),
        query_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let dht = DhtHandle::new(keypair.clone(), dht_config);
    let builder = echo(
        Node::builder(keypair)
            .listen(format!("tcp/{ip}:0").parse().unwrap())
            .config(fast_config()),
    );
    (start(builder.service(dht.clone()), nat).await, dht)
}

/// A node with a relay reservation puts its relayed address in its DHT
/// peer record; a node that knows only its PeerId finds that address with
/// `find_peer` and connects through the relay.
#[tokio::test]
async fn the_relayed_address_is_found_by_peer_id_in_the_dht() {
    let (relay, _) = dht_node("127.0.0.1", relay_config(RelayLimits::default())).await;
    let at = relay.listen_addrs()[0].clone();
    let mut with_relay = nat_config();
    with_relay.relays.push(at.clone().into());
    let (b, _) = dht_node("127.0.0.2", with_relay).await;
    let relayed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(addr) = b.nat.external().into_iter().find(PeerAddr::is_relayed) {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let (a, a_dht) = dht_node("127.0.0.1", nat_config()).await;
    a.connect(&at).await.unwrap();
    let mut last = None;
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let found = a_dht.find_peer(b.peer_id()).await.unwrap();
            if found.as_ref().is_some_and(|p| p.addrs.contains(&relayed)) {
                return found;
            }
            last = found;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {relayed} for b in the DHT; last lookup: {last:?}"));
    assert_eq!(found.unwrap().peer_id, b.peer_id());
    let ch = a.connect(&relayed).await.unwrap();
    assert_eq!(ch.remote_peer_id(), b.peer_id());
    assert!(ch.remote_addr().is_relayed());
}

/// A node with a relay turns public (two peers dial it back on loopback):
/// it releases the reservation and stops advertising the relayed address.
#[tokio::test]
async fn a_node_that_turns_public_releases_its_relay_reservation() {
    let relay = start(tcp_node("127.0.0.1"), relay_config(RelayLimits::default())).await;
    let (b, relayed) = reserved(tcp_node("127.0.0.1"), &relay).await;
    let mut events = b.nat_events();
    // The relay (dialed as a seed) is one server; a second peer b dials, at
    // another address, makes the quorum.
    let s = start(tcp_node("127.0.0.2"), nat_config()).await;
    b.connect(&s.listen_addrs()[0]).await.unwrap();
    let want = Reachability::Public(b.listen_addrs()[0].clone());
    let event = wait_event(&mut events, Duration::from_secs(20), |e| {
        matches!(e, NatEvent::RelayReleased { .. })
    })
    .await;
    assert_eq!(
        event,
        NatEvent::RelayReleased {
            relay: relay.peer_id(),
            addr: relayed.clone()
        }
    );
    assert_eq!(b.reachability(), want);
    // Peers that connect now are told the direct address only.
    let c = start(tcp_node("127.0.0.1"), nat_config()).await;
    let ch = c.connect(&b.listen_addrs()[0]).await.unwrap();
    let told = ch.info().version.parsed_listen_addrs().unwrap();
    assert!(!told.contains(&relayed), "{told:?}");
}
