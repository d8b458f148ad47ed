//! The DHT driver over real TCP on loopback (issue 5, "real network test"):
//! 20 nodes in one process, bootstrapped from one seed; record republishing
//! and expiry on virtual time; a peer sending forged records gets banned.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures::SinkExt;
use knotwork_core::{Discovery, Keypair, LocalPeerInfo, MemoryTransport, PeerAddr};
use knotwork_dht_node::{
    Config, DhtError, DhtHandle, DhtMessage, DhtNodeError, Record, Time, TokioClock,
};
use knotwork_discovery_dht::{RecordLimits, Request, Response};
use knotwork_node::protocol::ping::PingConfig;
use knotwork_node::{Node, NodeEvent};
use knotwork_wire::{Frame, Message, encode};

const NODES: usize = 20;
/// Replicas per record: small, so that k − 1 holders can be shut down.
const K: usize = 4;

fn dht_config() -> Config {
    Config {
        k: K,
        // Every node is on 127.0.0.1.
        subnet_limits: None,
        request_timeout: Duration::from_secs(1),
        query_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

async fn dht_node() -> (Node, DhtHandle) {
    let keypair = Keypair::generate().unwrap();
    let dht = DhtHandle::new(keypair.clone(), dht_config());
    let mut config = fast_config();
    // Everyone connects from 127.0.0.1; pings slower to spare the 2 cores.
    config.max_per_ip = 64;
    config.max_inbound = 64;
    config.ping = PingConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(3),
    };
    let builder = Node::builder(keypair)
        .listen("tcp/127.0.0.1:0".parse().unwrap())
        .config(config);
    let node = builder.service(dht.clone()).start().await.unwrap();
    (node, dht)
}

/// Starts 20 nodes; each connects to the first and bootstraps through it.
async fn network() -> Vec<(Node, DhtHandle)> {
    let mut nodes = vec![dht_node().await];
    let seed = addr(&nodes[0].0);
    for _ in 1..NODES {
        let (node, dht) = dht_node().await;
        node.connect(&seed).await.unwrap();
        let peers = dht.bootstrap().await.unwrap();
        assert!(peers >= 1, "bootstrap found no peer");
        nodes.push((node, dht));
    }
    // A second round, now that everyone is in: fills the early nodes' tables.
    for (_, dht) in &nodes {
        dht.bootstrap().await.unwrap();
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_put_get_provide_find_and_survive_k_minus_1_holders() {
    let nodes = network().await;

    // put on one node, get on another.
    let stored = nodes[3]
        .1
        .put(b"alpha".to_vec(), b"one".to_vec())
        .await
        .unwrap();
    assert!(stored >= 1, "put stored nowhere");
    let record = nodes[17].1.get(b"alpha".to_vec()).await.unwrap().unwrap();
    assert_eq!(record.value, b"one");
    assert_eq!(record.publisher, nodes[3].0.peer_id());
    assert_eq!(nodes[9].1.get(b"absent".to_vec()).await.unwrap(), None);

    // provide on one node, find it from another.
    assert!(nodes[5].1.provide(b"file".to_vec()).await.unwrap() >= 1);
    let providers = nodes[12].1.providers(b"file".to_vec()).await.unwrap();
    let provider = providers
        .iter()
        .find(|p| p.peer_id == nodes[5].0.peer_id())
        .expect("provider found");
    assert_eq!(provider.addrs, nodes[5].0.listen_addrs());

    // find a peer by id.
    let target = nodes[19].0.peer_id();
    let found = nodes[8].1.find_peer(target).await.unwrap().unwrap();
    assert_eq!(found.addrs, nodes[19].0.listen_addrs());

    // The Discovery source: announce a signed peer record, look it up.
    let me = LocalPeerInfo {
        peer_id: nodes[7].0.peer_id(),
        addrs: nodes[7].0.listen_addrs(),
    };
    nodes[7].1.announce(&me).await.unwrap();
    let addrs = nodes[11].1.peer_record(me.peer_id).await.unwrap();
    assert_eq!(addrs, Some(me.addrs.clone()));
    assert!(!nodes[11].1.discover().await.unwrap().is_empty());

    // A record survives the shutdown of k − 1 of the nodes holding it.
    let key = b"survivor".to_vec();
    nodes[2]
        .1
        .put(key.clone(), b"still here".to_vec())
        .await
        .unwrap();
    let mut holders = Vec::new();
    for (i, (_, dht)) in nodes.iter().enumerate() {
        if dht.held_record(key.clone()).await.unwrap().is_some() {
            holders.push(i);
        }
    }
    assert!(holders.len() >= K, "only {} holders", holders.len());
    for &i in holders.iter().take(K - 1) {
        nodes[i].0.shutdown().await;
    }
    let getter = (0..NODES)
        .find(|i| !holders.iter().take(K - 1).any(|h| h == i))
        .unwrap();
    let record = nodes[getter].1.get(key.clone()).await.unwrap().unwrap();
    assert_eq!(record.value, b"still here");
    // A shut-down node's DHT no longer answers calls.
    let stopped = nodes[holders[0]].1.get(key).await;
    assert!(
        matches!(stopped, Err(DhtNodeError::NotRunning)),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn an_oversized_value_is_refused_with_the_core_error() {
    let (_node, dht) = dht_node().await;
    let err = dht
        .put(b"k".to_vec(), vec![0; 64 * 1024])
        .await
        .unwrap_err();
    assert!(
        matches!(err, DhtNodeError::Dht(DhtError::RecordTooLarge { .. })),
        "{err:?}"
    );
}

/// Settings for the virtual-time test: records live 10 minutes and are
/// re-put every 2; only the publisher re-puts (holders do not replicate).
fn short_lived() -> Config {
    Config {
        record_limits: RecordLimits {
            max_ttl: Duration::from_secs(600),
            ..RecordLimits::default()
        },
        republish_interval: Duration::from_secs(120),
        maintenance_interval: Duration::from_secs(30),
        replicate_interval: None,
        ..dht_config()
    }
}

/// A node on the in-memory transport at `mem/<port>` whose DHT reads `clock`.
async fn virtual_node(
    net: &MemoryTransport,
    port: u64,
    clock: &Arc<TokioClock>,
) -> (Node, DhtHandle) {
    let keypair = Keypair::generate().unwrap();
    let dht = DhtHandle::with_clock(keypair.clone(), short_lived(), clock.clone());
    let mut config = fast_config();
    // Ten virtual minutes pass: keep the number of timer wake-ups small.
    config.ping = PingConfig {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    };
    config.maintenance_interval = Duration::from_secs(1);
    let builder = Node::builder(keypair)
        .transport(net.clone())
        .listen(PeerAddr::Mem(port))
        .config(config);
    let node = builder.service(dht.clone()).start().await.unwrap();
    (node, dht)
}

#[tokio::test(start_paused = true)]
async fn records_are_republished_and_expire_on_virtual_time() {
    let net = MemoryTransport::new();
    let clock = Arc::new(TokioClock::new(Time(1_700_000_000_000)));
    let (a, dht_a) = virtual_node(&net, 1, &clock).await;
    let (b, dht_b) = virtual_node(&net, 2, &clock).await;
    let (c, dht_c) = virtual_node(&net, 3, &clock).await;
    b.connect(&PeerAddr::Mem(1)).await.unwrap();
    assert!(dht_b.bootstrap().await.unwrap() >= 1);

    let key = b"short-lived".to_vec();
    let put_at = tokio::time::Instant::now();
    assert!(dht_a.put(key.clone(), b"v".to_vec()).await.unwrap() >= 1);
    assert!(dht_b.held_record(key.clone()).await.unwrap().is_some());

    // c joins after the put: it holds nothing until a re-puts.
    c.connect(&PeerAddr::Mem(2)).await.unwrap();
    assert!(dht_c.bootstrap().await.unwrap() >= 2);
    assert_eq!(dht_c.held_record(key.clone()).await.unwrap(), None);
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert_eq!(
        dht_c.held_record(key.clone()).await.unwrap(),
        None,
        "not republished before the interval"
    );
    // The republish interval (2 min) and one maintenance tick (30 s) later.
    tokio::time::sleep_until(put_at + Duration::from_secs(150)).await;
    let republished = dht_c.held_record(key.clone()).await.unwrap().unwrap();
    assert_eq!(republished.publisher, a.peer_id());

    // Still held just before the 10-minute expiry, gone one tick after it.
    tokio::time::sleep_until(put_at + Duration::from_secs(590)).await;
    assert!(dht_b.held_record(key.clone()).await.unwrap().is_some());
    tokio::time::sleep_until(put_at + Duration::from_secs(640)).await;
    for dht in [&dht_a, &dht_b, &dht_c] {
        assert_eq!(dht.held_record(key.clone()).await.unwrap(), None);
    }
    assert_eq!(dht_b.get(key).await.unwrap(), None);

    // The metrics saw it: one put by a, found on b; b's table and store.
    let text = a.metrics().encode();
    assert!(
        text.contains("knot_dht_queries_started_total{kind=\"put\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("knot_dht_queries_finished_total{kind=\"put\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE knot_dht_query_duration_seconds histogram"));
    let text = b.metrics().encode();
    assert!(
        text.contains("knot_dht_queries_finished_total{kind=\"get\",outcome=\"empty\"} 1"),
        "{text}"
    );
    assert!(text.contains("knot_dht_routing_table_peers 2"), "{text}");
    assert!(text.contains("knot_dht_records 0"), "{text}");
}

/// A signed record with its value changed afterwards: the signature fails.
fn forged_put(id: u64) -> Frame {
    let keypair = Keypair::generate().unwrap();
    let in_an_hour =
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(3600);
    let expires = Time(u64::try_from(in_an_hour.as_millis()).unwrap());
    let limits = RecordLimits::default();
    let mut record =
        Record::sign(&keypair, b"k".to_vec(), b"v".to_vec(), expires, &limits).unwrap();
    record.value = b"forged".to_vec();
    let msg = DhtMessage::Request {
        id,
        client: false,
        body: Request::PutValue {
            record: record.to_wire(),
        },
    };
    Frame::message(DhtMessage::ID, encode(&msg).unwrap())
}

#[tokio::test]
async fn a_peer_that_keeps_sending_bad_records_is_banned() {
    let (node, _dht) = dht_node().await;
    let mut events = node.events();
    let (mut raw, _, _) = raw_peer(&addr(&node), Keypair::generate().unwrap()).await;
    let raw_id = match wait_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, NodeEvent::Connected { .. })
    })
    .await
    {
        NodeEvent::Connected { peer, .. } => peer,
        other => panic!("{other:?}"),
    };
    // An unsolicited response (5 points), then forged records (25 each):
    // the fourth reaches the threshold of 100.
    let unsolicited = DhtMessage::Response {
        id: 77,
        body: Response::Pong,
    };
    raw.send(Frame::message(
        DhtMessage::ID,
        encode(&unsolicited).unwrap(),
    ))
    .await
    .unwrap();
    for id in 0..4 {
        raw.send(forged_put(id)).await.unwrap();
    }
    wait_event(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, NodeEvent::Banned { peer } if *peer == raw_id),
    )
    .await;
    assert!(node.is_banned(&raw_id));
    let text = node.metrics().encode();
    assert!(
        text.contains("knot_dht_refused_messages_total{reason=\"bad_signature\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("knot_dht_refused_messages_total{reason=\"unsolicited\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("knot_bans_total{reason=\"bad_signature\"} 1"),
        "{text}"
    );
}
