//! Two nodes over QUIC only (issue 20): they connect, ping, run tasks and
//! put and get DHT records, with the services `knot run` composes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use knotwork_core::{Keypair, PeerAddr};
use knotwork_dht_node::{Config, DhtHandle};
use knotwork_node::Node;
use knotwork_tasks::task::{Placement, Task, TaskId, TaskOutcome};
use knotwork_tasks::{TasksConfig, TasksService};
use knotwork_transport_quic::{QuicConfig, QuicTransport};

const LONG: Duration = Duration::from_secs(20);

struct QuicNode {
    node: Node,
    apps: TasksService,
    dht: DhtHandle,
}

/// A node listening on QUIC only, with tasks and the DHT.
async fn quic_node() -> QuicNode {
    let kp = Keypair::generate().unwrap();
    let quic = QuicTransport::new(&kp, QuicConfig::default()).unwrap();
    let apps = TasksService::new(TasksConfig::default());
    let dht = DhtHandle::new(
        kp.clone(),
        Config {
            // Both nodes are on 127.0.0.1.
            subnet_limits: None,
            ..Config::default()
        },
    );
    let node = Node::builder(kp)
        .transport(quic)
        .listen("quic/127.0.0.1:0".parse().unwrap())
        .config(fast_config())
        .service(apps.clone())
        .service(dht.clone())
        .start()
        .await
        .unwrap();
    QuicNode { node, apps, dht }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_ping_run_tasks_and_put_get_dht_records_over_quic() {
    let a = quic_node().await;
    let b = quic_node().await;
    let quic_addr = addr(&b.node);
    assert!(matches!(quic_addr, PeerAddr::Quic(_)), "{quic_addr}");
    let channel = a.node.connect(&quic_addr).await.unwrap();
    assert_eq!(channel.remote_peer_id(), b.node.peer_id());
    assert!(matches!(channel.remote_addr(), PeerAddr::Quic(_)));

    // Ping.
    eventually(LONG, "an rtt at a", || channel.rtt().is_some()).await;
    eventually(LONG, "an rtt at b", || {
        b.node
            .channel(&a.node.peer_id())
            .is_some_and(|c| c.rtt().is_some())
    })
    .await;

    // Tasks: a submits to b.
    b.apps
        .tasks()
        .register("echo", |input: Vec<u8>| async move { Ok(input) });
    eventually(LONG, "b is a task peer of a", || {
        a.apps.tasks().peers().len() == 1
    })
    .await;
    let mut results = a.apps.tasks().results();
    for i in 0..5u8 {
        let task = Task::new("echo", vec![i]).with_id(TaskId(u64::from(i)));
        a.apps
            .tasks()
            .submit(task, Placement::Peers(vec![b.node.peer_id()]))
            .unwrap();
    }
    for _ in 0..5 {
        let r = tokio::time::timeout(LONG, results.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(&r.outcome, TaskOutcome::Done(out) if out.len() == 1),
            "{r:?}"
        );
    }

    // The DHT: a puts, b gets.
    assert!(a.dht.bootstrap().await.unwrap() >= 1);
    assert!(b.dht.bootstrap().await.unwrap() >= 1);
    let stored = a
        .dht
        .put(b"over quic".to_vec(), b"hello".to_vec())
        .await
        .unwrap();
    assert!(stored >= 1, "put stored nowhere");
    let record = b.dht.get(b"over quic".to_vec()).await.unwrap().unwrap();
    assert_eq!(record.value, b"hello");
    assert_eq!(record.publisher, a.node.peer_id());

    // Still one QUIC channel each way, never a TCP one.
    assert_eq!(a.node.peers().len(), 1);
    assert!(matches!(
        b.node.channel(&a.node.peer_id()).unwrap().remote_addr(),
        PeerAddr::Quic(_)
    ));
    a.node.shutdown().await;
    b.node.shutdown().await;
}
