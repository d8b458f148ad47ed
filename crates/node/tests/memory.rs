//! Node tests over the in-memory transport on virtual time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{eventually, fast_config, mem_node};
use knotwork_core::{DialAddr, MemoryTransport, PeerAddr};
use knotwork_crypto_handshake::HandshakeError;
use knotwork_node::{
    Channel, CloseReason, DisconnectReason, Node, NodeError, NodeEvent, SessionKind,
};

#[tokio::test(start_paused = true)]
async fn manual_peers_are_redialed_with_backoff_until_they_answer() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4242);
    let b = mem_node(&net).peer(port.clone()).start().await.unwrap();
    // Nobody listens yet: b keeps failing and backing off (virtual time).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(b.peers().is_empty());

    let a = mem_node(&net).listen(port.clone()).start().await.unwrap();
    // The backoff is capped at 400 ms in the test config.
    eventually(Duration::from_secs(1), "b reaches a", || {
        b.channel(&a.peer_id()).is_some()
    })
    .await;
    let ch = b.channel(&a.peer_id()).unwrap();
    assert_eq!(ch.info().session, SessionKind::Manual);

    // a goes away gracefully; a new node takes its port; b finds it.
    a.shutdown().await;
    assert_eq!(
        ch.closed().await,
        CloseReason::Remote(DisconnectReason::Shutdown)
    );
    let a2 = loop {
        let started = mem_node(&net).listen(port.clone()).start().await;
        match started {
            Ok(n) => break n,
            // The old listener is dropped when its aborted task is.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    eventually(Duration::from_secs(2), "b reaches the new a", || {
        b.channel(&a2.peer_id()).is_some()
    })
    .await;
    // And pings run on virtual time too.
    eventually(Duration::from_secs(1), "rtt", || {
        b.channel(&a2.peer_id()).is_some_and(|c| c.rtt().is_some())
    })
    .await;
    b.shutdown().await;
    a2.shutdown().await;
}

/// A server listening at `port` and a client that dials only when told
/// (no outbound slots), both on `net`.
async fn server_and_dialer(net: &MemoryTransport, port: &PeerAddr) -> (Node, Node) {
    let server = mem_node(net).listen(port.clone()).start().await.unwrap();
    let mut config = fast_config();
    config.outbound_slots = 0;
    let client = mem_node(net).config(config).start().await.unwrap();
    (server, client)
}

/// Connects `client` to `server` at `port` by hand, closes the channel and
/// waits (bounded, virtual time) until the server has no channel to it.
async fn connect_and_close(client: &Node, server: &Node, port: &PeerAddr, round: usize) {
    let ch = tokio::time::timeout(Duration::from_secs(5), client.connect(port))
        .await
        .unwrap_or_else(|_| panic!("round {round}: connect made no progress"))
        .unwrap();
    ch.close(DisconnectReason::other("done")).await;
    ch.closed().await;
    let what = format!("round {round}: the server forgets the client");
    eventually(Duration::from_secs(5), &what, || {
        server.channel(&client.peer_id()).is_none()
    })
    .await;
}

/// Why the perf harness hung in "node connects" (issue 9): a manual
/// connection makes the address a verified host, so the dialing node's
/// outbound maintenance dials it again on its next round. The harness
/// waited for the server to forget the client while the client's own
/// maintenance had connected it again.
#[tokio::test(start_paused = true)]
async fn a_closed_manual_peer_comes_back_through_outbound_maintenance() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4343);
    let server = mem_node(&net).listen(port.clone()).start().await.unwrap();
    let client = mem_node(&net).start().await.unwrap();
    connect_and_close(&client, &server, &port, 0).await;
    // Maintenance runs every 100 ms in the test config.
    eventually(Duration::from_secs(2), "the outbound redial", || {
        client
            .channel(&server.peer_id())
            .is_some_and(|c| c.info().session == SessionKind::Outbound)
    })
    .await;
    client.shutdown().await;
    server.shutdown().await;
}

/// The harness's client nodes have no outbound slots: closed stays closed,
/// round after round, however the maintenance rounds fall.
#[tokio::test(start_paused = true)]
async fn without_outbound_slots_a_closed_peer_stays_closed() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4344);
    let (server, client) = server_and_dialer(&net, &port).await;
    for round in 0..20 {
        connect_and_close(&client, &server, &port, round).await;
        // Several maintenance rounds pass between connections.
        tokio::time::sleep(Duration::from_millis(35 * (round as u64 % 5))).await;
        assert!(
            server.channel(&client.peer_id()).is_none(),
            "round {round}: the client dialed the server again by itself"
        );
    }
    client.shutdown().await;
    server.shutdown().await;
}

/// Two dials of one peer at once (here two `connect` calls; in a node,
/// say, a manual connect while outbound maintenance dials the same host)
/// used to both pass the duplicate check before either channel was in the
/// peer table; the newer then closed the older as `Duplicate`, a channel
/// `connect` had already returned. Now the second waits for the first
/// and returns its channel.
#[tokio::test(start_paused = true)]
async fn concurrent_connects_to_one_peer_return_one_live_channel() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4343);
    let (server, client) = server_and_dialer(&net, &port).await;
    for round in 0..5 {
        let (a, b) = tokio::join!(client.connect(&port), client.connect(&port));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.same(&b), "round {round}: two channels to one peer");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !a.is_closed(),
            "round {round}: closed as {:?}",
            a.close_reason()
        );
        assert!(client.channel(&server.peer_id()).unwrap().same(&a));
        a.close(DisconnectReason::other("round over")).await;
        a.closed().await;
        eventually(Duration::from_secs(2), "both ends forget", || {
            client.channel(&server.peer_id()).is_none()
                && server.channel(&client.peer_id()).is_none()
        })
        .await;
    }
    client.shutdown().await;
    server.shutdown().await;
}

/// A second `connect` to a peer already connected returns the live channel
/// and leaves it open on both ends, whether it names the address again or
/// the peer's id.
#[tokio::test(start_paused = true)]
async fn connecting_again_to_a_connected_peer_keeps_its_channel() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4444);
    let (server, client) = server_and_dialer(&net, &port).await;
    let first = client.connect(&port).await.unwrap();
    eventually(Duration::from_secs(1), "the server's channel", || {
        server.channel(&client.peer_id()).is_some()
    })
    .await;
    let at_server = server.channel(&client.peer_id()).unwrap();
    let by_id = DialAddr::pinned(port.clone(), server.peer_id()).unwrap();
    for again in [client.connect(&port).await, client.connect(by_id).await] {
        assert!(again.unwrap().same(&first));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!first.is_closed(), "closed as {:?}", first.close_reason());
    assert!(
        !at_server.is_closed(),
        "closed as {:?}",
        at_server.close_reason()
    );
    client.shutdown().await;
    server.shutdown().await;
}

/// A peer reached at another of its addresses (not named: the dialer learns
/// who answers in the handshake) keeps its channel, and so do two dials of
/// one peer at two addresses at once: the dial that finds the peer taken
/// declines inside its handshake, so the listener never opens a second
/// channel that would replace the first (a newer channel from the same
/// dialer wins there).
#[tokio::test(start_paused = true)]
async fn a_peer_dialed_at_another_address_keeps_its_channel() {
    let net = MemoryTransport::new();
    let (one, two) = (PeerAddr::Mem(4450), PeerAddr::Mem(4451));
    let server = mem_node(&net)
        .listen(one.clone())
        .listen(two.clone())
        .start()
        .await
        .unwrap();
    let mut config = fast_config();
    config.outbound_slots = 0;
    for race in [false, true] {
        let client = mem_node(&net).config(config.clone()).start().await.unwrap();
        let mut opened = server.events();
        let (first, second) = if race {
            tokio::join!(client.connect(&one), client.connect(&two))
        } else {
            let first = client.connect(&one).await;
            (first, client.connect(&two).await)
        };
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(second.same(&first), "race {race}: two channels");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!first.is_closed(), "closed as {:?}", first.close_reason());
        let at_server = server.channel(&client.peer_id()).unwrap();
        assert!(!at_server.is_closed(), "race {race}");
        let mut connected = 0;
        while let Ok(e) = opened.try_recv() {
            if matches!(e, NodeEvent::Connected { peer, .. } if peer == client.peer_id()) {
                connected += 1;
            }
        }
        assert_eq!(
            connected, 1,
            "race {race}: the server opened a second channel"
        );
        client.shutdown().await;
    }
    server.shutdown().await;
}

/// An IK dial names the dialer in its first message, so a node that has
/// banned the dialer refuses it inside the handshake: `connect` fails with
/// the reason and no channel opens on either side (over XX the ban can
/// only come after the handshake, as a `Disconnect`).
#[tokio::test(start_paused = true)]
async fn a_banned_peer_dialing_with_ik_is_refused_in_the_handshake() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4452);
    let (a, b) = server_and_dialer(&net, &port).await;
    let ch = b.connect(&port).await.unwrap();
    flood_until_banned(&ch, &a, &b).await;
    eventually(Duration::from_secs(1), "the channel closes", || {
        b.channel(&a.peer_id()).is_none()
    })
    .await;
    let mut opened = a.events();
    let pinned = DialAddr::pinned(port, a.peer_id()).unwrap();
    match b.connect(pinned).await {
        Err(NodeError::Refused(DisconnectReason::Banned)) => {}
        other => panic!("expected Refused(Banned), got {other:?}"),
    }
    assert!(b.channel(&a.peer_id()).is_none());
    while let Ok(e) = opened.try_recv() {
        assert!(!matches!(e, NodeEvent::Connected { .. }), "{e:?}");
    }
    b.shutdown().await;
    a.shutdown().await;
}

/// A seed or peer pinned to a PeerId (`…/p2p/<id>`) is accepted only if
/// that peer answers; another peer at the address is refused by the
/// handshake and leaves nothing behind (review finding M13).
#[tokio::test(start_paused = true)]
async fn m13_a_pinned_seed_answered_by_another_peer_is_refused() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4545);
    let q = mem_node(&net).listen(port.clone()).start().await.unwrap();
    let p = knotwork_core::Keypair::generate().unwrap().peer_id();
    let pinned = DialAddr::pinned(port.clone(), p).unwrap();
    let b = mem_node(&net).seed(pinned.clone()).start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(b.peers().is_empty(), "the seed's impostor was accepted");
    let (grey, white) = b.hosts();
    assert!(grey.is_empty() && white.is_empty(), "{grey:?} {white:?}");
    match b.connect(pinned).await {
        Err(NodeError::Handshake(HandshakeError::PeerIdMismatch { expected, got })) => {
            assert_eq!((expected, got), (p, q.peer_id()));
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    // Pinned to the right peer, the same address works.
    let right = DialAddr::pinned(port, q.peer_id()).unwrap();
    let ch = b.connect(right).await.unwrap();
    assert_eq!(ch.remote_peer_id(), q.peer_id());
    b.shutdown().await;
    q.shutdown().await;
}

/// The count in a scrape at line `series` of `node`'s metrics (0 if absent).
fn scraped(node: &Node, series: &str) -> f64 {
    node.metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A connection is counted by the time anyone sees its event: a scrape
/// right after `Connected` or `Disconnected` includes it. (Counting in a
/// task of its own, the node let scrapes race the events and lost counts
/// whenever that task lagged behind the event channel.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_an_event_counts_it() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4343);
    let (server, client) = server_and_dialer(&net, &port).await;
    let mut events = server.events();
    let inbound = "knot_connections_total{direction=\"inbound\",transport=\"mem\"}";
    for round in 1..=20 {
        let ch = client.connect(&port).await.unwrap();
        common::wait_event(&mut events, Duration::from_secs(5), |e| {
            matches!(e, knotwork_node::NodeEvent::Connected { .. })
        })
        .await;
        assert_eq!(scraped(&server, inbound), f64::from(round), "round {round}");
        assert_eq!(scraped(&server, "knot_peers"), 1.0, "round {round}");
        ch.close(DisconnectReason::other("done")).await;
        common::wait_event(&mut events, Duration::from_secs(5), |e| {
            matches!(e, knotwork_node::NodeEvent::Disconnected { .. })
        })
        .await;
        assert_eq!(scraped(&server, "knot_peers"), 0.0, "round {round}");
        // The next connect must open a new channel, not find this one.
        eventually(Duration::from_secs(5), "the client forgets", || {
            client.channel(&server.peer_id()).is_none()
        })
        .await;
    }
    client.shutdown().await;
    server.shutdown().await;
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Junk(u64);
impl knotwork_wire::Message for Junk {
    const NAME: &'static str = "test/junk/1";
    const MAX_BYTES: usize = 10; // u64 varint
}

/// Sends junk on `ch`, `b`'s channel to `a`, until `a` bans `b`.
async fn flood_until_banned(ch: &Channel, a: &Node, b: &Node) {
    for i in 0.. {
        if ch.send(&Junk(i)).await.is_err() || ch.is_closed() {
            break;
        }
    }
    eventually(Duration::from_secs(1), "a bans b", || {
        a.is_banned(&b.peer_id())
    })
    .await;
}

/// A node banned by a peer it keeps connected to (a manual peer) backs off
/// as from failed dials: the handshake succeeds and the ban arrives as a
/// `Disconnect` right after it, which must not count as a connection
/// that worked (that would start the backoff over at each redial).
#[tokio::test(start_paused = true)]
async fn a_banned_peer_backs_off_though_its_handshakes_succeed() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4343);
    let a = mem_node(&net).listen(port.clone()).start().await.unwrap();
    let b = mem_node(&net).peer(port.clone()).start().await.unwrap();
    eventually(Duration::from_secs(1), "b reaches a", || {
        b.channel(&a.peer_id()).is_some()
    })
    .await;
    let ch = b.channel(&a.peer_id()).unwrap();
    flood_until_banned(&ch, &a, &b).await;
    // Ten virtual seconds of redials. From 50 ms, doubling to 400 ms (the
    // test config's backoff), about 25 refusals; started over each time, a
    // redial every 50-100 ms: 100 or more.
    let mut events = b.events();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    while let Ok(Ok(e)) = tokio::time::timeout_at(end, events.recv()).await {
        if e == (NodeEvent::Disconnected {
            peer: a.peer_id(),
            reason: CloseReason::Remote(DisconnectReason::Banned),
        }) {
            refused += 1;
        }
    }
    assert!((5..=40).contains(&refused), "{refused} refusals in 10 s");
    b.shutdown().await;
    a.shutdown().await;
}
