//! Node integration tests over real TCP on loopback (issue 4, "Done when").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use futures::SinkExt;
use knotwork_core::Keypair;
use knotwork_node::{
    Channel, CloseReason, DisconnectReason, Node, NodeConfig, NodeError, NodeEvent, SessionKind,
    Sessions,
};
use knotwork_wire::{Frame, Message};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn three_nodes_c_learns_a_from_b_and_connects() {
    let a = start(tcp_node()).await;
    let b = start(tcp_node().peer(addr(&a))).await;
    eventually(LONG, "b connected to a", || {
        b.channel(&a.peer_id()).is_some()
    })
    .await;
    let c = start(tcp_node().seed(addr(&b))).await;
    eventually(LONG, "c connected to a", || {
        c.channel(&a.peer_id()).is_some()
    })
    .await;
    let ch = c.channel(&a.peer_id()).unwrap();
    assert_eq!(
        ch.info().session,
        SessionKind::Outbound,
        "a filled an outbound slot"
    );
    assert!(
        c.hosts().1.contains(&addr(&a)),
        "a's address is whitelisted at c"
    );
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn ping_rtts_are_reported_per_peer() {
    let a = start(tcp_node()).await;
    let b = start(tcp_node()).await;
    let ch = b.connect(&addr(&a)).await.unwrap();
    eventually(LONG, "rtt at b", || ch.rtt().is_some()).await;
    eventually(LONG, "rtt at a", || {
        a.peers()
            .first()
            .is_some_and(|p| p.rtt.is_some() && p.peer_id == b.peer_id())
    })
    .await;
    let rtt = ch.rtt().unwrap();
    assert!(rtt < Duration::from_millis(500), "loopback rtt {rtt:?}");
    assert!(a.peers()[0].protocols.iter().any(|p| p == "knot/ping"));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_is_dropped_after_the_ping_timeout() {
    let a = start(tcp_node()).await;
    let mut events = a.events();
    let kp = Keypair::generate().unwrap();
    let silent = kp.peer_id();
    let (_raw, _, _) = raw_peer(&addr(&a), kp).await;
    let t0 = tokio::time::Instant::now();
    // The raw peer never answers a ping.
    let e = wait_event(&mut events, LONG, |e| {
        matches!(e, NodeEvent::Disconnected { .. })
    })
    .await;
    let waited = t0.elapsed();
    assert_eq!(
        e,
        NodeEvent::Disconnected {
            peer: silent,
            reason: CloseReason::Local(DisconnectReason::PingTimeout)
        }
    );
    assert!(waited >= PING_TIMEOUT, "dropped too early: {waited:?}");
    assert!(waited < PING_TIMEOUT * 3, "dropped too late: {waited:?}");
    a.shutdown().await;
}

/// Starts node `a` with `config` and two nodes `b`, `c`; `b` connects to
/// `a`, then `c` is refused with `reason`. Returns the nodes and `b`'s channel.
async fn refuse_the_second(
    config: NodeConfig,
    reason: DisconnectReason,
) -> (Node, Node, Node, Channel) {
    let a = start(tcp_node().config(config)).await;
    let b = start(tcp_node()).await;
    let c = start(tcp_node()).await;
    let kept = b.connect(&addr(&a)).await.unwrap();
    match c.connect(&addr(&a)).await {
        Err(NodeError::Refused(r)) if r == reason => {}
        other => panic!("expected a {reason:?} refusal, got {other:?}"),
    }
    (a, b, c, kept)
}

#[tokio::test]
async fn the_connection_limit_refuses_the_excess_with_a_reason() {
    let mut config = fast_config();
    config.max_inbound = 1;
    let (a, b, c, kept) = refuse_the_second(config, DisconnectReason::TooManyPeers).await;
    // The existing peer keeps working: it outlives several ping timeouts
    // (it would be dropped without pong replies) and its requests succeed.
    tokio::time::sleep(PING_TIMEOUT * 2).await;
    assert!(!kept.is_closed());
    assert!(kept.rtt().is_some());
    assert_eq!(a.peers().len(), 1);
    assert_eq!(a.peer_count(), 1);
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn graceful_shutdown_delivers_the_disconnect_reason() {
    let a = start(tcp_node()).await;
    let b = start(tcp_node()).await;
    let mut events = b.events();
    let ch = b.connect(&addr(&a)).await.unwrap();
    a.shutdown().await;
    assert_eq!(
        ch.closed().await,
        CloseReason::Remote(DisconnectReason::Shutdown)
    );
    let e = wait_event(&mut events, LONG, |e| {
        matches!(e, NodeEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(
        e,
        NodeEvent::Disconnected {
            peer: a.peer_id(),
            reason: CloseReason::Remote(DisconnectReason::Shutdown)
        }
    );
    // A node that shut down accepts nobody.
    assert!(b.connect(&addr(&a)).await.is_err());
    b.shutdown().await;
}

/// Opens a raw TCP connection, runs `abuse` on it, and returns how long the
/// node took to close it.
async fn time_to_cut(to: &knotwork_core::PeerAddr, abuse: &[u8]) -> Duration {
    let knotwork_core::PeerAddr::Tcp(sa) = to else {
        unreachable!()
    };
    let mut s = tokio::net::TcpStream::connect(sa).await.unwrap();
    let t0 = tokio::time::Instant::now();
    if !abuse.is_empty() {
        s.write_all(abuse).await.unwrap();
    }
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(LONG, s.read(&mut buf))
            .await
            .expect("never cut")
        {
            Ok(0) | Err(_) => return t0.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn hostile_raw_clients_are_cut_within_the_handshake_timeout() {
    let a = start(tcp_node()).await;
    let w = start(tcp_node()).await;
    let good = w.connect(&addr(&a)).await.unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let huge_length = [0xffu8; 64];
    let cases: [(&str, &[u8]); 3] = [
        ("garbage", &garbage),
        ("huge length", &huge_length),
        ("silence", &[]),
    ];
    for (name, bytes) in cases {
        let took = time_to_cut(&addr(&a), bytes).await;
        assert!(
            took <= HANDSHAKE_TIMEOUT + Duration::from_millis(300),
            "{name}: cut after {took:?}"
        );
    }
    // Meanwhile the well-behaved peer kept getting ping replies: it is
    // still connected after more than a ping timeout of abuse.
    assert!(!good.is_closed());
    assert!(good.rtt().is_some());
    a.shutdown().await;
    w.shutdown().await;
}

#[derive(Serialize, Deserialize)]
struct Junk(u64);
impl Message for Junk {
    const NAME: &'static str = "test/junk/1";
    const MAX_BYTES: usize = 10; // u64 varint
}

#[tokio::test]
async fn an_unknown_message_flooder_is_banned_and_good_peers_keep_pinging() {
    let a = start(tcp_node()).await;
    let w = start(tcp_node()).await;
    let good = w.connect(&addr(&a)).await.unwrap();
    let mut events = a.events();
    // The flooder is a node whose protocol sends a type `a` never subscribed to.
    let flooder = start(tcp_node().protocol("junk", Sessions::ALL, |ch| {
        let ch = ch.clone();
        async move {
            for i in 0.. {
                if ch.send(&Junk(i)).await.is_err() {
                    return;
                }
            }
        }
    }))
    .await;
    let fch = flooder.connect(&addr(&a)).await.unwrap();
    let banned = wait_event(&mut events, LONG, |e| matches!(e, NodeEvent::Banned { .. })).await;
    assert_eq!(
        banned,
        NodeEvent::Banned {
            peer: flooder.peer_id()
        }
    );
    assert_eq!(
        fch.closed().await,
        CloseReason::Remote(DisconnectReason::Misbehaviour)
    );
    assert!(a.is_banned(&flooder.peer_id()));
    // The ban list is consulted when dialing too.
    match a.connect(&addr(&flooder)).await {
        Err(NodeError::Banned(_)) => {}
        other => panic!("expected Banned, got {other:?}"),
    }
    // Coming back is refused with the reason, once the handshake has told
    // the node who dials: the flooder's channel closes at once.
    let back = flooder.connect(&addr(&a)).await.unwrap();
    assert_eq!(
        back.closed().await,
        CloseReason::Remote(DisconnectReason::Banned)
    );
    tokio::time::sleep(PING_TIMEOUT).await;
    assert!(!good.is_closed(), "the good peer kept its channel");
    assert!(good.rtt().is_some());
    for n in [&a, &w, &flooder] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_frame_over_the_length_limit_bans_an_authenticated_peer() {
    let a = start(tcp_node()).await;
    let mut events = a.events();
    let kp = Keypair::generate().unwrap();
    let id = kp.peer_id();
    let (mut raw, _, _) = raw_peer(&addr(&a), kp).await;
    // A header announcing a 4 GiB payload.
    let mut header = Frame::message(Junk::ID, bytes::Bytes::new())
        .encode_header()
        .unwrap();
    header[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    raw.get_mut().write_all(&header).await.unwrap();
    raw.get_mut().flush().await.unwrap();
    let e = wait_event(&mut events, LONG, |e| matches!(e, NodeEvent::Banned { .. })).await;
    assert_eq!(e, NodeEvent::Banned { peer: id });
    let _ = raw.close().await;
    a.shutdown().await;
}

/// A few late answers are honest (their request timed out); a stream of
/// answers to nothing is charged and ends in a ban (review finding L3).
#[tokio::test]
async fn l3_a_stream_of_responses_to_no_request_is_charged() {
    let a = start(tcp_node()).await;
    let mut events = a.events();
    let kp = Keypair::generate().unwrap();
    let id = kp.peer_id();
    let (mut raw, _, _) = raw_peer(&addr(&a), kp).await;
    for request_id in 1..=50 {
        raw.send(Frame::response(Junk::ID, request_id, bytes::Bytes::new()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.channel(&id).is_some(), "a few late answers are free");
    for request_id in 51..=1_000 {
        if raw
            .send(Frame::response(Junk::ID, request_id, bytes::Bytes::new()))
            .await
            .is_err()
        {
            break;
        }
    }
    let e = wait_event(&mut events, LONG, |e| matches!(e, NodeEvent::Banned { .. })).await;
    assert_eq!(e, NodeEvent::Banned { peer: id });
    a.shutdown().await;
}

/// Handshakes that pass the early inbound check together cannot push the
/// node past its limit: the count is checked again when the channel is
/// put in the peer table (review finding L9).
/// A dial of an address that another dial is already making waits for
/// that one; refused, both learn why (a banned peer whose node was
/// redialing in the background got "dial failed" instead of "banned").
#[tokio::test]
async fn a_dial_that_follows_a_refused_one_gets_the_same_refusal() {
    let mut config = fast_config();
    config.max_inbound = 0;
    let a = start(tcp_node().config(config)).await;
    let b = start(tcp_node()).await;
    let target = addr(&a);
    let (first, second) = tokio::join!(b.connect(&target), b.connect(&target));
    for r in [first, second] {
        match r {
            Err(NodeError::Refused(DisconnectReason::TooManyPeers)) => {}
            other => panic!("expected a TooManyPeers refusal, got {other:?}"),
        }
    }
    for n in [&a, &b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn l9_concurrent_handshakes_cannot_exceed_max_inbound() {
    let mut config = fast_config();
    config.max_inbound = 2;
    config.max_per_ip = 64;
    let a = start(tcp_node().config(config)).await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(start(tcp_node()).await);
    }
    let target = addr(&a);
    let results = futures::future::join_all(clients.iter().map(|c| c.connect(&target))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.peers().len() <= 2, "{} inbound channels", a.peers().len());
    assert!(ok >= 1);
    for n in clients.iter().chain([&a]) {
        n.shutdown().await;
    }
}

/// `try_send` never waits: with the peer not reading, the queue fills and
/// the next `try_send` fails at once with `QueueFull`.
#[tokio::test]
async fn try_send_fails_at_once_when_the_queue_is_full() {
    let mut config = fast_config();
    config.channel.send_queue = 4;
    config.ping.timeout = Duration::from_secs(30);
    let a = start(tcp_node().config(config)).await;
    let kp = Keypair::generate().unwrap();
    let id = kp.peer_id();
    // The raw peer never reads.
    let (_raw, _, _) = raw_peer(&addr(&a), kp).await;
    eventually(LONG, "the channel", || a.channel(&id).is_some()).await;
    let ch = a.channel(&id).unwrap();
    let blob = Blob {
        seq: 0,
        data: vec![0u8; 65_536],
    };
    let full = tokio::time::timeout(LONG, async {
        loop {
            match ch.try_send(&blob) {
                Ok(()) => tokio::task::yield_now().await,
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the queue filled");
    assert!(matches!(full, NodeError::QueueFull), "{full:?}");
    a.shutdown().await;
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Blob {
    seq: u32,
    data: Vec<u8>,
}
impl Message for Blob {
    const NAME: &'static str = "test/blob/1";
    const MAX_BYTES: usize = 5 + 3 + 65_536; // seq varint + length varint + data
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_makes_send_wait_and_nothing_is_lost() {
    let mut config = fast_config();
    config.channel.send_queue = 4;
    config.channel.subscription_capacity = 4;
    // Pings stall with the reader; keep them from timing out during the test.
    config.ping.timeout = Duration::from_secs(30);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let a = start(
        tcp_node()
            .config(config.clone())
            .protocol("blob", Sessions::ALL, move |ch| {
                let sub = ch.subscribe::<Blob>();
                let tx = tx.clone();
                async move {
                    let _ = tx.send(sub).await;
                }
            }),
    )
    .await;
    let b = start(tcp_node().config(config)).await;
    let ch = b.connect(&addr(&a)).await.unwrap();
    let mut sub = rx.recv().await.unwrap();

    let mut sent = 0u32;
    loop {
        let blob = Blob {
            seq: sent,
            data: vec![sent as u8; 65_536],
        };
        match tokio::time::timeout(Duration::from_millis(500), ch.send(&blob)).await {
            Ok(r) => {
                r.unwrap();
                sent += 1;
            }
            Err(_) => break,
        }
        assert!(sent < 2_000, "send never waited: memory is unbounded");
    }
    assert!(sent > 4, "something went through before the wait");
    // Now read: every message sent arrives, in order.
    for seq in 0..sent {
        let blob = tokio::time::timeout(LONG, sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(blob.seq, seq);
        assert_eq!(blob.data.len(), 65_536);
    }
    // And sending works again.
    ch.send(&Blob {
        seq: sent,
        data: vec![],
    })
    .await
    .unwrap();
    assert_eq!(sub.recv().await.unwrap().seq, sent);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn simultaneous_dials_keep_exactly_one_connection() {
    for _ in 0..5 {
        let a = start(tcp_node()).await;
        let b = start(tcp_node()).await;
        let (addr_a, addr_b) = (addr(&a), addr(&b));
        let (ra, rb) = tokio::join!(a.connect(&addr_b), b.connect(&addr_a));
        assert!(ra.is_ok() || rb.is_ok());
        // Settle, then both sides hold the same single connection: the one
        // dialed by the smaller PeerId.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (ca, cb) = (
            a.channel(&b.peer_id()).unwrap(),
            b.channel(&a.peer_id()).unwrap(),
        );
        assert_eq!(a.peers().len(), 1);
        assert_eq!(b.peers().len(), 1);
        let a_dialed = a.peer_id() < b.peer_id();
        assert_eq!(ca.info().session == SessionKind::Manual, a_dialed);
        assert_eq!(cb.info().session == SessionKind::Manual, !a_dialed);
        assert!(!ca.is_closed() && !cb.is_closed());
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn requests_are_matched_refused_and_timed_out() {
    #[derive(Serialize, Deserialize)]
    struct Add(u32, u32);
    impl Message for Add {
        const NAME: &'static str = "test/add/1";
        const MAX_BYTES: usize = 10;
    }
    #[derive(Serialize, Deserialize)]
    struct Sum(u32);
    impl Message for Sum {
        const NAME: &'static str = "test/sum/1";
        const MAX_BYTES: usize = 5;
    }
    #[derive(Serialize, Deserialize)]
    struct Slow;
    impl Message for Slow {
        const NAME: &'static str = "test/slow/1";
        const MAX_BYTES: usize = 0;
    }
    let a = start(tcp_node().protocol("math", Sessions::ALL, |ch| {
        let mut adds = ch.subscribe_requests::<Add>();
        let mut slows = ch.subscribe_requests::<Slow>();
        async move {
            let mut parked = Vec::new();
            loop {
                tokio::select! {
                    Some((Add(x, y), r)) = adds.recv() => { let _ = r.respond(&Sum(x + y)).await; }
                    Some((Slow, r)) = slows.recv() => parked.push(r), // never answered
                    else => return,
                }
            }
        }
    }))
    .await;
    let b = start(tcp_node()).await;
    let ch = b.connect(&addr(&a)).await.unwrap();
    // Many concurrent requests, each matched to its own answer.
    let answers = futures::future::join_all((0..50u32).map(|i| {
        let ch = ch.clone();
        async move { ch.request::<Add, Sum>(&Add(i, 1000)).await }
    }))
    .await;
    for (i, r) in answers.into_iter().enumerate() {
        assert_eq!(r.unwrap().0, i as u32 + 1000);
    }
    assert!(matches!(
        ch.request_timeout::<Slow, Sum>(&Slow, Duration::from_millis(100))
            .await,
        Err(NodeError::RequestTimeout)
    ));
    assert!(matches!(
        ch.request::<Sum, Sum>(&Sum(1)).await,
        Err(NodeError::Unsupported(name)) if name == Sum::NAME
    ));
    assert!(matches!(
        ch.request::<Add, Add>(&Add(1, 2)).await,
        Err(NodeError::UnexpectedResponse { expected, got }) if expected == Add::ID && got == Sum::ID
    ));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_redial_by_the_same_peer_replaces_its_stale_connection() {
    let a = start(tcp_node()).await;
    let mut events = a.events();
    let kp = Keypair::generate().unwrap();
    let id = kp.peer_id();
    let (_old, _, _) = raw_peer(&addr(&a), kp.clone()).await;
    eventually(LONG, "first channel", || a.channel(&id).is_some()).await;
    let first = a.channel(&id).unwrap();
    // The peer restarts and dials again while the old connection lingers.
    let (_new, _, _) = raw_peer(&addr(&a), kp).await;
    assert_eq!(
        first.closed().await,
        CloseReason::Local(DisconnectReason::Duplicate)
    );
    let e = wait_event(&mut events, LONG, |e| {
        matches!(e, NodeEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(
        e,
        NodeEvent::Disconnected {
            peer: id,
            reason: CloseReason::Local(DisconnectReason::Duplicate)
        }
    );
    let second = a.channel(&id).unwrap();
    assert!(!second.same(&first) && !second.is_closed());
    a.shutdown().await;
}

#[tokio::test]
async fn the_per_ip_limit_refuses_the_excess_with_a_reason() {
    let mut config = fast_config();
    config.max_per_ip = 1;
    let (a, b, c, kept) = refuse_the_second(config, DisconnectReason::TooManyFromIp).await;
    // When b leaves, the slot frees up for c.
    kept.close(DisconnectReason::other("done")).await;
    eventually(LONG, "a forgot b", || a.peers().is_empty()).await;
    c.connect(&addr(&a)).await.unwrap();
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}

/// Slowloris: when every pending slot is taken, a new connection evicts
/// the oldest silent one instead of being refused, and a connection that
/// sends nothing is cut at the first-byte deadline (well before the
/// handshake timeout); both are counted.
#[tokio::test]
async fn a_full_pending_table_evicts_the_silent_and_silence_is_cut_early() {
    let mut config = fast_config();
    config.max_pending_handshakes = 1;
    config.first_byte_timeout = Duration::from_millis(300);
    let a = start(tcp_node().config(config)).await;
    let knotwork_core::PeerAddr::Tcp(sa) = addr(&a) else {
        unreachable!()
    };
    // A silent connection holds the only handshake slot...
    let mut slow = tokio::net::TcpStream::connect(sa).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...and a peer arriving now evicts it and completes its handshake.
    let b = start(tcp_node()).await;
    b.connect(&addr(&a)).await.unwrap();
    let mut buf = [0u8; 1];
    let cut = tokio::time::timeout(HANDSHAKE_TIMEOUT / 2, slow.read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(0) | Err(_))),
        "the silent one was cut: {cut:?}"
    );
    // Alone, a silent connection is cut at the first-byte deadline.
    let mut lone = tokio::net::TcpStream::connect(sa).await.unwrap();
    let began = tokio::time::Instant::now();
    let cut = tokio::time::timeout(HANDSHAKE_TIMEOUT, lone.read(&mut buf)).await;
    assert!(matches!(cut, Ok(Ok(0) | Err(_))), "cut: {cut:?}");
    assert!(
        began.elapsed() < HANDSHAKE_TIMEOUT / 2,
        "after {:?}",
        began.elapsed()
    );
    let text = a.metrics().encode();
    for line in [
        "knot_connections_dropped_total{reason=\"evicted\"} 1",
        "knot_connections_dropped_total{reason=\"first_byte\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn one_ip_over_its_limit_cannot_hold_every_handshake_slot() {
    let mut config = fast_config();
    config.max_pending_handshakes = 8;
    config.max_per_ip = 2;
    config.handshake_starts = knotwork_node::RateBudget::UNLIMITED;
    let a = start(tcp_node().config(config)).await;
    let knotwork_core::PeerAddr::Tcp(sa) = addr(&a) else {
        unreachable!()
    };
    // Slowloris from 127.0.0.1: twenty silent connections; however many
    // slots they hold, a newcomer evicts one of them.
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(tokio::net::TcpStream::connect(sa).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A peer from another address still completes its handshake.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(sa).await.unwrap();
    let keypair = Keypair::generate().unwrap();
    let secure = tokio::time::timeout(
        HANDSHAKE_TIMEOUT / 2,
        knotwork_crypto_handshake::upgrade_outbound(tcp, &keypair, None),
    )
    .await;
    assert!(
        matches!(secure, Ok(Ok(_))),
        "the other peer got no handshake slot"
    );
    drop(slow);
    a.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_and_its_socket_closed() {
    // `a` streams blobs to everyone; the raw peer never reads, so a's writer
    // blocks, its send queue fills, and pings can no longer be queued.
    let mut config = fast_config();
    config.channel.send_queue = 8;
    let a = start(
        tcp_node()
            .config(config)
            .protocol("stream", Sessions::ALL, |ch| {
                let ch = ch.clone();
                async move {
                    for seq in 0.. {
                        let blob = Blob {
                            seq,
                            data: vec![0u8; 65_536],
                        };
                        if ch.send(&blob).await.is_err() {
                            return;
                        }
                    }
                }
            }),
    )
    .await;
    let mut events = a.events();
    let kp = Keypair::generate().unwrap();
    let id = kp.peer_id();
    let (mut raw, _, _) = raw_peer(&addr(&a), kp).await;
    let e = wait_event(&mut events, LONG, |e| {
        matches!(e, NodeEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(
        e,
        NodeEvent::Disconnected {
            peer: id,
            reason: CloseReason::Local(DisconnectReason::PingTimeout)
        }
    );
    // The socket is released: reading what is buffered ends in EOF or reset.
    let drained = tokio::time::timeout(LONG, async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match raw.get_mut().read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the node kept the socket open");
    a.shutdown().await;
}

#[tokio::test]
async fn a_ping_sent_as_a_request_is_answered_with_a_pong() {
    use knotwork_node::protocol::ping::{Ping, Pong};
    let a = start(tcp_node()).await;
    let b = start(tcp_node()).await;
    let ch = b.connect(&addr(&a)).await.unwrap();
    for nonce in [1, 42, u64::MAX] {
        let pong: Pong = ch.request(&Ping { nonce }).await.unwrap();
        assert_eq!(pong, Pong { nonce });
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn dropping_the_last_node_handle_shuts_it_down() {
    let a = start(tcp_node()).await;
    let b = start(tcp_node()).await;
    let ch = b.connect(&addr(&a)).await.unwrap();
    let a_addr = addr(&a);
    let clone = a.clone();
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!ch.is_closed(), "a clone is still alive");
    drop(clone);
    let reason = tokio::time::timeout(LONG, ch.closed()).await.unwrap();
    assert_eq!(reason, CloseReason::Remote(DisconnectReason::Shutdown));
    // It stopped accepting too.
    assert!(b.connect(&a_addr).await.is_err());
    b.shutdown().await;
}
