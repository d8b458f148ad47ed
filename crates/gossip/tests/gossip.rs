//! Gossip over real nodes: five TCP nodes in a ring each receive every
//! message once, a flooding publisher is throttled then banned; and the
//! message's property tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use knotwork_core::Keypair;
use knotwork_gossip::{
    Gossip, GossipConfig, GossipMessage, GossipState, MAX_DATA_LEN, MAX_TOPIC_LEN,
};
use knotwork_node::{Node, NodeBuilder, NodeEvent};
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
