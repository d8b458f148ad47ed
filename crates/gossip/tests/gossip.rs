//! Gossip over real nodes: five TCP nodes in a ring each receive every
//! message once, a flooding publisher is throttled then banned, a sender
//! of bad signatures is banned while an honest publisher goes on (M1),
//! peers that never read stall no other channel (M8), a node the flood
//! does not reach gets the message by repair (IHAVE/IWANT) and a peer
//! that does not speak repair never gets an IHAVE; and the
//! messages' property tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use knotwork_core::{Keypair, MemoryTransport, PeerAddr};
use knotwork_gossip::{
    Gossip, GossipConfig, GossipMessage, GossipState, IHave, IWant, MAX_DATA_LEN, MAX_IHAVE_IDS,
    MAX_TOPIC_LEN, NAME, REPAIR_NAME, WireId,
};
use knotwork_node::{Node, NodeBuilder, NodeEvent, RateBudget, Sessions};
use proptest::prelude::*;

const LONG: Duration = Duration::from_secs(20);

/// A started node with gossip, and its handle.
struct GossipNode {
    node: Node,
    gossip: Gossip,
}

impl std::ops::Deref for GossipNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl GossipNode {
    async fn start(config: GossipConfig) -> Self {
        let keypair = Keypair::generate().unwrap();
        let gossip = Gossip::new(keypair.clone(), config);
        let builder: NodeBuilder = Node::builder(keypair)
            .listen("tcp/127.0.0.1:0".parse().unwrap())
            .config(fast_config());
        let node = builder.service(gossip.clone()).start().await.unwrap();
        Self { node, gossip }
    }

    fn gossip(&self) -> &Gossip {
        &self.gossip
    }
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9/ ._-]{{0,{max}}}")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gossip_message_roundtrips(topic in text(MAX_TOPIC_LEN), len in 0..=MAX_DATA_LEN, seq in any::<u64>(), ttl in any::<u8>()) {
        let key = Keypair::generate().unwrap();
        let mut state = GossipState::new(GossipConfig::default(), seq);
        let (mut msg, _) = state.publish(&key, &topic, vec![7; len], Instant::now(), &[]).unwrap();
        msg.ttl = ttl;
        roundtrip(&msg);
    }

    #[test]
    fn ihave_and_iwant_roundtrip(ids in proptest::collection::vec((any::<[u8; 32]>(), any::<u64>()), 0..=MAX_IHAVE_IDS)) {
        let ids: Vec<WireId> = ids.into_iter().map(|(origin, seq)| WireId { origin, seq }).collect();
        roundtrip(&IHave { ids: ids.clone() });
        roundtrip(&IWant { ids });
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_repair_decoders_or_the_core(bytes in proptest::collection::vec(any::<u8>(), 0..=8192)) {
        let peer = Keypair::generate().unwrap().peer_id();
        let now = Instant::now();
        let mut state = GossipState::new(GossipConfig::default(), 0);
        if let Some(m) = never_panics::<IHave>(&bytes) {
            let _ = state.on_ihave(peer, &m, now);
        }
        if let Some(m) = never_panics::<IWant>(&bytes) {
            let _ = state.on_iwant(peer, &m, now);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_or_the_core(bytes in proptest::collection::vec(any::<u8>(), 0..=4096)) {
        let peer = Keypair::generate().unwrap().peer_id();
        if let Some(mut m) = never_panics::<GossipMessage>(&bytes) {
            let mut state = GossipState::new(GossipConfig::default(), 0);
            let _ = state.handle_message(peer, &mut m, Instant::now(), &[peer]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_all_five_tcp_nodes_once_each() {
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(GossipNode::start(GossipConfig::default()).await);
    }
    // A ring: most messages need relaying.
    for i in 0..5 {
        nodes[i].connect(&addr(&nodes[(i + 1) % 5])).await.unwrap();
    }
    for n in &nodes {
        eventually(LONG, "2 gossip peers", || n.gossip().peers().len() >= 2).await;
    }
    let mut subs: Vec<_> = nodes.iter().map(|n| n.gossip().subscribe("news")).collect();
    let mut ids = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (id, sent) = n
            .gossip()
            .publish("news", format!("from {i}").into_bytes())
            .await
            .unwrap();
        assert!(sent >= 2);
        ids.push(id);
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut seen = HashSet::new();
        for _ in 0..4 {
            let e = tokio::time::timeout(LONG, sub.recv())
                .await
                .unwrap()
                .unwrap();
            assert_ne!(
                e.id.origin,
                nodes[i].peer_id(),
                "own messages are not delivered"
            );
            let j = ids.iter().position(|id| *id == e.id).unwrap();
            assert_eq!(e.data, format!("from {j}").into_bytes());
            assert!(seen.insert(e.id), "node {i} got a message twice");
        }
        let extra = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
        assert!(extra.is_err(), "node {i}: nothing more");
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_publisher_is_throttled_then_banned() {
    let mut strict = GossipConfig::default();
    strict.origin_budget = knotwork_node::RateBudget::new(5.0, 10);
    let b = GossipNode::start(strict).await;
    let a = GossipNode::start(GossipConfig::default()).await;
    let mut events = b.events();
    a.connect(&addr(&b)).await.unwrap();
    eventually(LONG, "gossip peer", || a.gossip().peers().len() == 1).await;
    let mut sub = b.gossip().subscribe("spam");
    for i in 0..200u32 {
        if a.gossip()
            .publish("spam", i.to_le_bytes().to_vec())
            .await
            .is_err()
        {
            break;
        }
    }
    let banned = a.peer_id();
    wait_event(
        &mut events,
        LONG,
        |e| matches!(e, NodeEvent::Banned { peer } if *peer == banned),
    )
    .await;
    assert!(b.is_banned(&a.peer_id()));
    let mut delivered = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
        delivered += 1;
    }
    assert!(
        (10..40).contains(&delivered),
        "about the burst gets through: {delivered}"
    );
    let text = b.metrics().encode();
    assert!(text.contains("knot_gossip_messages_total{result=\"throttled\"}"));
    assert!(
        text.contains("knot_bans_total{reason=\"gossip_flood\"} 1"),
        "{text}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A node that announces gossip but never reads what it gets: its one
/// gossip subscription (capacity 1) fills, so its channel reader stops.
fn never_reading(builder: NodeBuilder) -> NodeBuilder {
    let mut config = fast_config();
    config.channel.subscription_capacity = 1;
    builder.config(config).protocol(NAME, Sessions::ALL, |ch| {
        let stuck = ch.subscribe::<GossipMessage>();
        async move {
            std::future::pending::<()>().await;
            drop(stuck);
        }
    })
}

/// A node that announces gossip and discards what it gets; the test sends
/// through the channel `connect` returns.
fn discarding(builder: NodeBuilder) -> NodeBuilder {
    builder.protocol(NAME, Sessions::ALL, |ch| {
        let mut sub = ch.subscribe::<GossipMessage>();
        async move { while sub.recv().await.is_some() {} }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_bad_signatures_get_their_sender_banned_while_an_honest_publisher_is_delivered() {
    let b = GossipNode::start(GossipConfig::default()).await;
    let h = GossipNode::start(GossipConfig::default()).await;
    let attacker = discarding(tcp_node()).start().await.unwrap();
    let mut events = b.events();
    h.connect(&addr(&b)).await.unwrap();
    let ch = attacker.connect(&addr(&b)).await.unwrap();
    eventually(LONG, "gossip peers", || b.gossip().peers().len() == 2).await;
    let mut sub = b.gossip().subscribe("news");
    // Ten messages of real origin keys, each with a zero signature,
    // between messages of the honest publisher.
    for i in 0..10u64 {
        let forged = GossipMessage {
            origin: *Keypair::generate().unwrap().peer_id().as_bytes(),
            seq: i,
            topic: "news".into(),
            ttl: 6,
            data: vec![0; 100],
            sig: vec![0; 64],
        };
        let _ = ch.send(&forged).await;
        let sent = tokio::time::Instant::now();
        let (id, _) = h.gossip().publish("news", vec![i as u8]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), sub.recv())
            .await
            .expect("the honest message came within 2 s")
            .unwrap();
        assert_eq!(got.id, id);
        assert!(sent.elapsed() < Duration::from_secs(2));
    }
    let banned = attacker.peer_id();
    wait_event(
        &mut events,
        LONG,
        |e| matches!(e, NodeEvent::Banned { peer } if *peer == banned),
    )
    .await;
    let text = b.metrics().encode();
    assert!(
        text.contains("knot_bans_total{reason=\"gossip_invalid\"} 1"),
        "{text}"
    );
    assert!(!b.is_banned(&h.peer_id()));
    for n in [&b.node, &h.node, &attacker] {
        n.shutdown().await;
    }
}

/// A gossip node on `net` listening at `port`, origin budgets off so that
/// the honest publisher's 1000 messages are not throttled.
async fn mem_gossip(net: &MemoryTransport, port: u64) -> GossipNode {
    let mut config = GossipConfig::default();
    config.origin_budget = RateBudget::UNLIMITED;
    mem_gossip_with(net, port, config).await
}

/// A gossip node on `net` listening at `port`, with `config`.
async fn mem_gossip_with(net: &MemoryTransport, port: u64, config: GossipConfig) -> GossipNode {
    let keypair = Keypair::generate().unwrap();
    let gossip = Gossip::new(keypair.clone(), config);
    let node = Node::builder(keypair)
        .transport(net.clone())
        .listen(PeerAddr::Mem(port))
        .config(fast_config())
        .service(gossip.clone())
        .start()
        .await
        .unwrap();
    GossipNode { node, gossip }
}

#[tokio::test(start_paused = true)]
async fn m8_peers_that_never_read_stall_no_other_gossip_channel() {
    let net = MemoryTransport::new();
    let a = mem_gossip(&net, 1).await;
    let h = mem_gossip(&net, 2).await;
    h.connect(&addr(&a)).await.unwrap();
    eventually(LONG, "gossip peer", || a.gossip().peers().len() == 1).await;
    let a_h = a.channel(&h.peer_id()).unwrap();
    let mut sub = a.gossip().subscribe("load");
    let delivered = Arc::new(AtomicUsize::new(0));
    let counter = delivered.clone();
    let reader = tokio::spawn(async move {
        while sub.recv().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    // A stuck peer is dropped for not answering pings after about a ping
    // timeout; a new one (a fresh identity) comes every 250 ms, so A always
    // has a stuck peer to relay to while H publishes. (Connected to A only:
    // before relaying used per-peer queues, a stuck peer also slowed H's
    // own publishing, which hid the stall of the channel a relayed message
    // came on.)
    let start = tokio::time::Instant::now();
    let stuck = tokio::spawn({
        let (net, a_addr) = (net.clone(), addr(&a));
        async move {
            let mut stuck = Vec::new();
            for _ in 0..8 {
                let x = never_reading(mem_node(&net)).start().await.unwrap();
                x.connect(&a_addr).await.unwrap();
                stuck.push(x);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            stuck
        }
    });
    let publisher = h.gossip().clone();
    let publishing = tokio::spawn(async move {
        for i in 0..1000u32 {
            let mut data = vec![0; 4096];
            data[..4].copy_from_slice(&i.to_le_bytes());
            publisher.publish("load", data).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let stuck = stuck.await.unwrap();
    publishing.await.unwrap();
    assert!(start.elapsed() >= 3 * PING_TIMEOUT);
    assert!(!a_h.is_closed(), "A-H closed: {:?}", a_h.close_reason());
    let text = a.metrics().encode();
    for n in stuck.iter().chain([&a.node, &h.node]) {
        n.shutdown().await;
    }
    reader.abort();
    let delivered = delivered.load(Ordering::Relaxed);
    // H's relay budget to A: a burst of 500, then 250 per second.
    assert!(delivered >= 500, "A got {delivered} of H's messages");
    assert!(
        text.contains("knot_gossip_messages_total{result=\"peer_queue_full\"}"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_the_flood_misses_gets_the_message_by_repair() {
    // A line A - B - C with a TTL of 1: A's message reaches B and stops
    // there, so C can only get it from B's IHAVE and its own IWANT.
    let net = MemoryTransport::new();
    let mut config = GossipConfig::default();
    config.ttl = 1;
    let a = mem_gossip_with(&net, 1, config).await;
    let b = mem_gossip_with(&net, 2, config).await;
    let c = mem_gossip_with(&net, 3, config).await;
    a.connect(&addr(&b)).await.unwrap();
    c.connect(&addr(&b)).await.unwrap();
    eventually(LONG, "B has 2 gossip peers", || {
        b.gossip().peers().len() == 2
    })
    .await;
    eventually(LONG, "C has B", || c.gossip().peers().len() == 1).await;
    let mut b_sub = b.gossip().subscribe("news");
    let mut c_sub = c.gossip().subscribe("news");
    let (id, sent) = a.gossip().publish("news", b"hello".to_vec()).await.unwrap();
    assert_eq!(sent, 1);
    let at_b = tokio::time::timeout(LONG, b_sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((at_b.id, at_b.from), (id, a.peer_id()));
    let start = tokio::time::Instant::now();
    let at_c = tokio::time::timeout(LONG, c_sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (at_c.id, at_c.from, at_c.data),
        (id, b.peer_id(), b"hello".to_vec())
    );
    assert!(
        start.elapsed() <= config.repair_interval + Duration::from_millis(500),
        "within one repair round: {:?}",
        start.elapsed()
    );
    let (b_text, c_text) = (b.metrics().encode(), c.metrics().encode());
    assert!(
        b_text.contains("knot_gossip_messages_total{result=\"ihave\"}"),
        "{b_text}"
    );
    assert!(
        c_text.contains("knot_gossip_messages_total{result=\"iwant\"} 1"),
        "{c_text}"
    );
    assert!(
        c_text.contains("knot_gossip_messages_total{result=\"repaired\"} 1"),
        "{c_text}"
    );
    // More rounds bring nothing twice.
    tokio::time::sleep(3 * config.repair_interval).await;
    assert!(c_sub.try_recv().is_err(), "delivered once");
    assert!(
        c.metrics()
            .encode()
            .contains("knot_gossip_messages_total{result=\"iwant\"} 1")
    );
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}

/// A node that announces gossip (and repair if `repair`), discards
/// messages and counts the IHAVEs it gets.
fn counting_ihaves(builder: NodeBuilder, repair: bool, ihaves: Arc<AtomicUsize>) -> NodeBuilder {
    let builder = builder.protocol(NAME, Sessions::ALL, move |ch| {
        let mut messages = ch.subscribe::<GossipMessage>();
        let mut got = ch.subscribe::<IHave>();
        let ihaves = ihaves.clone();
        async move {
            loop {
                tokio::select! {
                    Some(_) = messages.recv() => {}
                    Some(_) = got.recv() => {
                        ihaves.fetch_add(1, Ordering::Relaxed);
                    }
                    else => break,
                }
            }
        }
    });
    if repair {
        builder.protocol(REPAIR_NAME, Sessions::ALL, |_| async {})
    } else {
        builder
    }
}

#[tokio::test(start_paused = true)]
async fn ihaves_go_only_to_peers_that_speak_repair() {
    let net = MemoryTransport::new();
    let b = mem_gossip(&net, 1).await;
    let (old_count, new_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let old = counting_ihaves(mem_node(&net), false, old_count.clone())
        .start()
        .await
        .unwrap();
    let new = counting_ihaves(mem_node(&net), true, new_count.clone())
        .start()
        .await
        .unwrap();
    old.connect(&addr(&b)).await.unwrap();
    new.connect(&addr(&b)).await.unwrap();
    eventually(LONG, "2 gossip peers", || b.gossip().peers().len() == 2).await;
    b.gossip().publish("news", b"x".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        old_count.load(Ordering::Relaxed),
        0,
        "an older peer gets none"
    );
    assert!(new_count.load(Ordering::Relaxed) >= 2, "one per round");
    for n in [&old, &new, &b.node] {
        n.shutdown().await;
    }
}
