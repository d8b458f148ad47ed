//! The DHT driver over real TCP on loopback (issue 5, "real network test"):
//! 20 nodes in one process, bootstrapped from one seed.
#![cfg(feature = "dht")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use knotwork_core::{Discovery, Keypair, LocalPeerInfo};
use knotwork_node::protocol::dht::{Config, DhtHandle};
use knotwork_node::protocol::ping::PingConfig;
use knotwork_node::{Node, NodeError};

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
    let node = dht.register(builder).start().await.unwrap();
    dht.start(&node);
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
        matches!(stopped, Err(NodeError::ShuttingDown)),
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
        matches!(
            err,
            NodeError::Dht(knotwork_node::protocol::dht::DhtError::RecordTooLarge { .. })
        ),
        "{err:?}"
    );
}
