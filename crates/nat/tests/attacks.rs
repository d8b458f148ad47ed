//! Attacks on NAT traversal from the security review (issue 18), each
//! against real nodes: unsolicited relayed circuits (H1), hole-punch
//! reflection (H2), a circuit end that stops reading at a relay (M8) and
//! reachability sybils (M9). Each test is named for its finding.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use knotwork_core::{Keypair, MemoryTransport, PeerAddr, PeerId, Transport};
use knotwork_crypto_handshake::SecureConfig;
use knotwork_nat::dialback::{self, DialBack, DialBackResult};
use knotwork_nat::holepunch::{MAX_PUNCH_DIALS, Punch, Sync};
use knotwork_nat::relay::{
    Accepted, Connect, Connected, Incoming, MAX_RELAYED_HANDSHAKES_PER_RELAY, Opened, Reserve,
    Reserved, ToRelay,
};
use knotwork_nat::{DialBackError, NatEvent, Reachability, RelayError, RelayLimits};
use knotwork_node::version::{Hello, secure_outbound};
use knotwork_node::{Channel, DisconnectReason, Node, NodeBuilder, Sessions, Version};
use knotwork_wire::{Frame, FrameCodec, FrameKind, Message, decode, encode};
use support::common::{HANDSHAKE_TIMEOUT, fast_config, wait_event};
use support::{
    Echo, NatNode, counter, echo, mem_node, nat_config, relay_config, reserved, start, tcp_node,
};
use tokio_util::codec::Framed;

/// Asks the peer of `ch` to take circuit `circuit` from a fresh identity.
async fn incoming(ch: &Channel, circuit: u64) -> Result<(), RelayError> {
    let from = Keypair::generate().unwrap().peer_id();
    let ask = Incoming {
        circuit,
        from: *from.as_bytes(),
        from_addr: String::new(),
    };
    let Accepted(answer) = ch.request::<Incoming, Accepted>(&ask).await.unwrap();
    answer
}

/// 20 fresh peers on `net` dial `addr` at once; how many get a channel.
async fn honest_connects(net: &MemoryTransport, addr: &PeerAddr) -> usize {
    let dials = (0..20).map(|_| async {
        let node = mem_node(net).start().await.unwrap();
        node.connect(addr).await.map(|_| node)
    });
    join_all(dials)
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count()
}

/// H1: a node that holds no reservation with the sender gets 40 `Incoming`
/// from one channel: each is refused `NotOurRelay` and nothing is opened
/// (no circuit job, no handshake), and 20 fresh honest peers dialing right
/// after all connect. A node with a reservation at relay R refuses
/// `Incoming` from another peer just the same.
#[tokio::test(start_paused = true)]
async fn h1_incoming_from_a_peer_that_is_not_our_relay_opens_nothing() {
    let net = MemoryTransport::new();
    let v = start(mem_node(&net), nat_config()).await;
    let x = start(mem_node(&net), nat_config()).await;
    let ch = x.connect(&v.listen_addrs()[0]).await.unwrap();
    // The dialer's channel opens first (as its handshake ends).
    support::common::eventually(Duration::from_secs(5), "v's channel", || {
        v.channel(&x.peer_id()).is_some()
    })
    .await;
    let at_v = v.channel(&x.peer_id()).unwrap();
    let jobs = at_v.jobs();
    let answers = join_all((0..40).map(|i| incoming(&ch, i))).await;
    assert!(
        answers.iter().all(|a| *a == Err(RelayError::NotOurRelay)),
        "{answers:?}"
    );
    assert_eq!(at_v.jobs(), jobs, "a circuit was opened");
    assert_eq!(honest_connects(&net, &v.listen_addrs()[0]).await, 20);

    let relay = start(mem_node(&net), relay_config(RelayLimits::default())).await;
    let (w, _) = reserved(mem_node(&net), &relay).await;
    let ch = x.connect(&w.listen_addrs()[0]).await.unwrap();
    assert_eq!(incoming(&ch, 1).await, Err(RelayError::NotOurRelay));
    // The relay itself is heard.
    let from_relay = relay.channel(&w.peer_id()).unwrap();
    assert_eq!(incoming(&from_relay, 1).await, Ok(()));
}

/// H1: even a relay we hold a reservation with gets at most
/// `MAX_RELAYED_HANDSHAKES_PER_RELAY` relayed handshakes at once: of 40
/// `Incoming` the rest are refused `LimitInbound`. Relayed handshakes take
/// none of the node's pending-handshake slots, so 20 honest peers dialing
/// meanwhile all connect; once the silent circuits time out the relay gets
/// its slots back.
#[tokio::test(start_paused = true)]
async fn h1_our_relay_gets_a_few_relayed_handshakes_and_honest_peers_still_connect() {
    let net = MemoryTransport::new();
    let relay = start(mem_node(&net), relay_config(RelayLimits::default())).await;
    let (v, _) = reserved(mem_node(&net), &relay).await;
    let ch = relay.channel(&v.peer_id()).unwrap();
    let answers = join_all((0..40).map(|i| incoming(&ch, 1000 + i))).await;
    let taken = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(taken, MAX_RELAYED_HANDSHAKES_PER_RELAY, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.is_ok() || *a == Err(RelayError::LimitInbound))
    );
    assert_eq!(honest_connects(&net, &v.listen_addrs()[0]).await, 20);
    tokio::time::sleep(HANDSHAKE_TIMEOUT * 2).await;
    assert_eq!(incoming(&ch, 2000).await, Ok(()));
}

/// A node on loopback at `ip` with the handshake timeout `handshake`.
fn punch_node(ip: &str, handshake: Duration) -> NodeBuilder {
    let mut config = fast_config();
    config.handshake_timeout = handshake;
    echo(
        Node::builder(Keypair::generate().unwrap())
            .listen(format!("tcp/{ip}:0").parse().unwrap())
            .config(config),
    )
}

/// Sends the peer of relayed channel `ch` a punch naming `addrs`, then
/// `Sync`, as the dialing side of a hole punch does.
async fn punch(ch: &Channel, addrs: &[String]) {
    let ours = Punch {
        addrs: addrs.to_vec(),
    };
    ch.request::<Punch, Punch>(&ours).await.unwrap();
    ch.send(&Sync).await.unwrap();
}

/// A relay on 127.0.0.1, a victim on 127.0.0.2 reserved there (its
/// handshake timeout 5 s, so only the punch's own bound limits its dials),
/// and an attacker on 127.0.0.1 that does not punch by itself; the
/// attacker's relayed channel to the victim.
async fn punch_bed() -> (NatNode, NatNode, NatNode, PeerAddr) {
    let relay = start(tcp_node("127.0.0.1"), relay_config(RelayLimits::default())).await;
    let (b, relayed) = reserved(punch_node("127.0.0.2", Duration::from_secs(5)), &relay).await;
    let mut quiet = nat_config();
    quiet.holepunch = false;
    let a = start(tcp_node("127.0.0.1"), quiet).await;
    (relay, b, a, relayed)
}

/// H2: a relayed peer (at 127.0.0.1, as the relay sees it) names other
/// hosts in its `Punch`: the victim's own address on another port, a
/// private host and a third party. The victim dials none of them: the
/// listener gets no connection and no punch dial is counted.
#[tokio::test]
async fn h2_a_relayed_peer_cannot_make_us_punch_other_hosts() {
    let (_relay, b, a, relayed) = punch_bed().await;
    let probe = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let ch = a.connect(&relayed).await.unwrap();
    let targets = [
        format!("tcp/{}", probe.local_addr().unwrap()),
        "tcp/10.0.0.1:1".to_owned(),
        "tcp/192.0.2.1:9".to_owned(),
    ];
    punch(&ch, &targets).await;
    support::common::eventually(Duration::from_secs(5), "the punch ran", || {
        counter(&b, "knot_holepunch_attempts_total") == 1
    })
    .await;
    let accepted = tokio::time::timeout(Duration::from_secs(2), probe.accept()).await;
    assert!(accepted.is_err(), "the victim dialed the probe");
    assert_eq!(counter(&b, "knot_holepunch_dials_total"), 0);
}

/// H2, the review's probe: `Punch{["tcp/127.0.0.1:1", "tcp/10.0.0.1:1",
/// "tcp/192.0.2.1:9"]}` over a relay that saw the puncher over a connection
/// without an IP (the memory transport here): with no address of the peer
/// from the relay, nothing it names is dialed, though the victim listens
/// on TCP and punches.
#[tokio::test(start_paused = true)]
async fn h2_without_the_relays_observation_nothing_is_dialed() {
    let net = MemoryTransport::new();
    let relay = start(mem_node(&net), relay_config(RelayLimits::default())).await;
    let victim = mem_node(&net).listen("tcp/127.0.0.2:0".parse().unwrap());
    let (b, relayed) = reserved(victim, &relay).await;
    let mut quiet = nat_config();
    quiet.holepunch = false;
    let a = start(mem_node(&net), quiet).await;
    let ch = a.connect(&relayed).await.unwrap();
    let probe = ["tcp/127.0.0.1:1", "tcp/10.0.0.1:1", "tcp/192.0.2.1:9"].map(String::from);
    punch(&ch, &probe).await;
    support::common::eventually(Duration::from_secs(5), "the punch ran", || {
        counter(&b, "knot_holepunch_attempts_total") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(counter(&b, "knot_holepunch_dials_total"), 0);
}

/// H2: the peer's own address (its IP as the relay sees it) is dialed at
/// most `MAX_PUNCH_DIALS` times in a punch, however long the handshake
/// timeout, and the dials stop when the relayed channel closes.
#[tokio::test]
async fn h2_punch_dials_are_bounded_and_stop_when_the_relayed_channel_closes() {
    let (_relay, b, a, relayed) = punch_bed().await;
    // A port on the attacker's IP where nothing listens: every dial fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let target = [format!("tcp/{closed}")];
    let dials = || counter(&b, "knot_holepunch_dials_total");

    let ch = a.connect(&relayed).await.unwrap();
    punch(&ch, &target).await;
    support::common::eventually(Duration::from_secs(5), "the dials", || {
        dials() == u64::from(MAX_PUNCH_DIALS)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dials(), u64::from(MAX_PUNCH_DIALS));

    // A second relayed channel, closed as soon as its punch starts.
    ch.close(DisconnectReason::other("done")).await;
    support::common::eventually(Duration::from_secs(5), "b sees a gone", || {
        b.channel(&a.peer_id()).is_none()
    })
    .await;
    let ch = a.connect(&relayed).await.unwrap();
    punch(&ch, &target).await;
    support::common::eventually(Duration::from_secs(5), "the second punch", || {
        counter(&b, "knot_holepunch_attempts_total") == 2
    })
    .await;
    ch.close(DisconnectReason::other("gone")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = dials() - u64::from(MAX_PUNCH_DIALS);
    assert!(second <= 3, "{second} dials after the channel closed");
}

/// A peer driven by hand over the memory transport: handshake and version
/// exchange, then only the frames the test reads and writes.
type RawPeer = Framed<knotwork_crypto_handshake::SecureStream<tokio::io::DuplexStream>, FrameCodec>;

async fn raw_mem_peer(net: &MemoryTransport, to: &PeerAddr, keypair: Keypair) -> RawPeer {
    let conn = net.dial(to).await.unwrap();
    let hello = Hello::Version(Version::new(&[], &[], to));
    let config = SecureConfig::new(keypair).unwrap();
    let (secure, _) = secure_outbound(&config, conn, None, &hello).await.unwrap();
    Framed::new(secure, FrameCodec::new())
}

/// Reads frames until a request of type `M`; returns it and its request id.
async fn next_request<M: Message>(peer: &mut RawPeer) -> (M, u32) {
    loop {
        let frame = peer.next().await.unwrap().unwrap();
        if frame.kind == FrameKind::Request && frame.msg_id == M::ID {
            return (decode::<M>(&frame.payload).unwrap(), frame.request_id);
        }
    }
}

/// M8: at a relay, circuit end B stops reading its channel while the other
/// end floods the circuit. The relay never waits for B inside the other
/// end's protocol loop: the circuit closes (its queue to B is full) and the
/// flooding end's relay channel stays open and answered; B's channel too.
#[tokio::test(start_paused = true)]
async fn m8_a_circuit_end_that_stops_reading_does_not_stall_the_other_ends_relay_channel() {
    let net = MemoryTransport::new();
    // The relay waits long for pongs: B's silence must not close B first.
    let mut patient = fast_config();
    patient.ping.timeout = Duration::from_secs(600);
    let relay = start(
        echo(
            Node::builder(Keypair::generate().unwrap())
                .transport(net.clone())
                .listen("mem/0".parse().unwrap())
                .config(patient),
        ),
        relay_config(RelayLimits::default()),
    )
    .await;
    let at = relay.listen_addrs()[0].clone();
    let b_key = Keypair::generate().unwrap();
    let b_id: PeerId = b_key.peer_id();
    let mut b = raw_mem_peer(&net, &at, b_key).await;
    b.send(Frame::request(Reserve::ID, 1, encode(&Reserve).unwrap()))
        .await
        .unwrap();
    let reserved_b = loop {
        let frame = b.next().await.unwrap().unwrap();
        if frame.kind == FrameKind::Response && frame.request_id == 1 {
            break decode::<Reserved>(&frame.payload).unwrap();
        }
    };
    assert!(reserved_b.0.is_ok());

    let a = start(mem_node(&net), nat_config()).await;
    let ch = a.connect(&at).await.unwrap();
    let connect = Connect {
        target: *b_id.as_bytes(),
    };
    let ask = ch.request::<Connect, Connected>(&connect);
    let accept = async {
        let (_, id) = next_request::<Incoming>(&mut b).await;
        let ok = encode(&Accepted(Ok(()))).unwrap();
        b.send(Frame::response(Accepted::ID, id, ok)).await.unwrap();
    };
    let (Connected(answer), ()) = tokio::join!(async { ask.await.unwrap() }, accept);
    let Opened { circuit, .. } = answer.unwrap();
    assert_eq!(relay.nat.relayed_circuits(), 1);
    // B reads nothing from now on; A sends 10 MiB without waiting for
    // credit.
    let chunk = Bytes::from(vec![0u8; 16 * 1024]);
    for _ in 0..640 {
        let data = ToRelay::Data {
            circuit,
            data: chunk.clone(),
        };
        ch.send(&data).await.unwrap();
    }
    support::common::eventually(Duration::from_secs(5), "the circuit closed", || {
        relay.nat.relayed_circuits() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!ch.is_closed(), "A lost its relay channel");
    let Reserved(again) = ch.request::<Reserve, Reserved>(&Reserve).await.unwrap();
    assert!(again.is_ok());
    assert!(relay.channel(&b_id).is_some(), "B is still connected");
}

/// Flow control: a relayed channel carries many windows each way (credits
/// come back as chunks are consumed) and the circuit stays the same.
#[tokio::test(start_paused = true)]
async fn m8_a_circuit_carries_many_windows_under_flow_control() {
    let net = MemoryTransport::new();
    let relay = start(mem_node(&net), relay_config(RelayLimits::default())).await;
    let (b, relayed) = reserved(mem_node(&net), &relay).await;
    let a = start(mem_node(&net), nat_config()).await;
    let ch = a.connect(&relayed).await.unwrap();
    let sent: Vec<u8> = (0..250_000u32).map(|i| i as u8).collect();
    for _ in 0..6 {
        let Echo(back) = ch.request::<Echo, Echo>(&Echo(sent.clone())).await.unwrap();
        assert_eq!(back, sent);
    }
    assert!(!ch.is_closed());
    assert!(b.channel(&a.peer_id()).unwrap().remote_addr().is_relayed());
    assert_eq!(relay.nat.relayed_circuits(), 1);
}

/// A node that serves `knot/reachability` by answering every dial-back
/// with `Unreachable`, counting the requests in `asked`.
async fn sybil(ip: &str, asked: Arc<AtomicUsize>) -> Node {
    Node::builder(Keypair::generate().unwrap())
        .listen(format!("tcp/{ip}:0").parse().unwrap())
        .config(fast_config())
        .protocol(dialback::NAME, Sessions::ALL, move |ch| {
            let mut requests = ch.subscribe_requests::<DialBack>();
            let asked = asked.clone();
            async move {
                while let Some((_, responder)) = requests.recv().await {
                    asked.fetch_add(1, Ordering::SeqCst);
                    let lie = DialBackResult(Err(DialBackError::Unreachable));
                    let _ = responder.respond(&lie).await;
                }
            }
        })
        .start()
        .await
        .unwrap()
}

/// M9: peers that connected to us are never asked: two inbound sybils
/// answering every dial-back with `Unreachable` are not asked and do not
/// make the node private; the two peers it dialed (two networks) decide.
#[tokio::test]
async fn m9_inbound_sybils_answering_unreachable_do_not_change_the_verdict() {
    let p = start(tcp_node("127.0.0.1"), nat_config()).await;
    let mut events = p.nat_events();
    let asked = Arc::new(AtomicUsize::new(0));
    let mut sybils = Vec::new();
    for ip in ["127.0.0.3", "127.0.0.4"] {
        let y = sybil(ip, asked.clone()).await;
        y.connect(&p.listen_addrs()[0]).await.unwrap();
        sybils.push(y);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(asked.load(Ordering::SeqCst), 0, "a sybil was asked");
    assert_eq!(p.reachability(), Reachability::Unknown);

    let s1 = start(tcp_node("127.0.0.1"), nat_config()).await;
    let s2 = start(tcp_node("127.0.0.2"), nat_config()).await;
    p.connect(&s1.listen_addrs()[0]).await.unwrap();
    p.connect(&s2.listen_addrs()[0]).await.unwrap();
    let first = wait_event(&mut events, Duration::from_secs(20), |e| {
        matches!(e, NatEvent::ReachabilityChanged { .. })
    })
    .await;
    let want = Reachability::Public(p.listen_addrs()[0].clone());
    assert_eq!(
        first,
        NatEvent::ReachabilityChanged {
            reachability: want.clone()
        }
    );
    assert_eq!(asked.load(Ordering::SeqCst), 0);
    drop(sybils);
}
