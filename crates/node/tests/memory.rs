//! Node tests over the in-memory transport on virtual time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{eventually, fast_config};
use knotwork_core::{Keypair, MemoryTransport, PeerAddr};
use knotwork_node::{CloseReason, DisconnectReason, Node, SessionKind};

#[tokio::test(start_paused = true)]
async fn manual_peers_are_redialed_with_backoff_until_they_answer() {
    let net = MemoryTransport::new();
    let port = PeerAddr::Mem(4242);
    let b = Node::builder(Keypair::generate().unwrap())
        .transport(net.clone())
        .config(fast_config())
        .peer(port.clone())
        .start()
        .await
        .unwrap();
    // Nobody listens yet: b keeps failing and backing off (virtual time).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(b.peers().is_empty());

    let a = Node::builder(Keypair::generate().unwrap())
        .transport(net.clone())
        .config(fast_config())
        .listen(port.clone())
        .start()
        .await
        .unwrap();
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
        let started = Node::builder(Keypair::generate().unwrap())
            .transport(net.clone())
            .config(fast_config())
            .listen(port.clone())
            .start()
            .await;
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
