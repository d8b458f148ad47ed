//! Connecting by PeerId alone (issue 19): addresses from resolvers, direct
//! before relayed, dead addresses skipped, every failed step named, and
//! concurrent calls for one peer sharing one attempt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::{mem_node, start};
use knotwork_core::{Keypair, MemoryTransport, PeerAddr, PeerId};
use knotwork_node::{NodeError, PeerResolver, Service, Setup};

/// A resolver with a fixed answer that counts how often it is asked.
#[derive(Clone)]
struct Fixed {
    addrs: Vec<PeerAddr>,
    asked: Arc<AtomicUsize>,
}

#[async_trait]
impl PeerResolver for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    async fn resolve(&self, _peer: PeerId) -> Vec<PeerAddr> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        // Slow enough that concurrent callers overlap.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        self.addrs.clone()
    }
}

#[async_trait]
impl Service for Fixed {
    fn setup(&self, setup: &mut Setup<'_>) {
        setup.resolver(self.clone());
    }
}

fn fixed(addrs: Vec<PeerAddr>) -> Fixed {
    Fixed {
        addrs,
        asked: Arc::new(AtomicUsize::new(0)),
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_first_address_is_skipped_and_concurrent_calls_share_one_attempt() {
    let net = MemoryTransport::new();
    let a = start(mem_node(&net).listen(PeerAddr::Mem(1))).await;
    let resolver = fixed(vec![PeerAddr::Mem(99), PeerAddr::Mem(1)]);
    let b = start(mem_node(&net).service(resolver.clone())).await;
    let (x, y, z) = tokio::join!(
        b.connect_peer(a.peer_id()),
        b.connect_peer(a.peer_id()),
        b.connect_peer(a.peer_id())
    );
    for ch in [x, y, z] {
        assert_eq!(ch.unwrap().remote_peer_id(), a.peer_id());
    }
    assert_eq!(
        resolver.asked.load(Ordering::SeqCst),
        1,
        "one shared attempt"
    );
    // Connected: a later call reuses the channel without asking again.
    b.connect_peer(a.peer_id()).await.unwrap();
    assert_eq!(resolver.asked.load(Ordering::SeqCst), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unknown_peer_and_an_unreachable_one_are_told_apart() {
    let net = MemoryTransport::new();
    let stranger = Keypair::generate().unwrap().peer_id();
    let b = start(mem_node(&net).service(fixed(Vec::new()))).await;
    assert!(matches!(
        b.connect_peer(stranger).await,
        Err(NodeError::UnknownPeer(p)) if p == stranger
    ));
    b.shutdown().await;

    let dead = vec![PeerAddr::Mem(97), PeerAddr::Mem(98)];
    let b = start(mem_node(&net).service(fixed(dead))).await;
    match b.connect_peer(stranger).await {
        Err(NodeError::Unreachable { peer, attempts }) => {
            assert_eq!(peer, stranger);
            let steps: Vec<_> = attempts.iter().map(|a| a.step.as_str()).collect();
            assert_eq!(steps, ["mem/97", "mem/98"], "each dial named, in order");
        }
        other => panic!(
            "expected Unreachable, got {:?}",
            other.map(|c| c.remote_peer_id())
        ),
    }
    b.shutdown().await;
}
