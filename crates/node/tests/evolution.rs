//! Protocols that evolve without bans (issue 22): a request of a type the
//! peer does not know comes back `Unsupported` and costs nothing; a node
//! asks `Channel::speaks` before using a newer version; requests over a
//! type's budget are backpressured (or answered `RateLimited`), never
//! dropped into a timeout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{eventually, mem_node};
use knotwork_core::{MemoryTransport, PeerAddr};
use knotwork_node::{Channel, Node, NodeBuilder, NodeError, NodeEvent, RateBudget, Sessions};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

/// Version 1 of an echo protocol.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct EchoV1(u32);
impl Message for EchoV1 {
    const NAME: &'static str = "example/echo/request/1";
    const MAX_BYTES: usize = 5;
}

/// Version 2: the same, with a tag.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct EchoV2(u32, String);
impl Message for EchoV2 {
    const NAME: &'static str = "example/echo/request/2";
    const MAX_BYTES: usize = 5 + 1 + 16;
}

fn serve<M: Message + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>(
    ch: &Channel,
) -> impl Future<Output = ()> + Send + use<M> {
    let mut requests = ch.subscribe_requests::<M>();
    async move {
        while let Some((m, responder)) = requests.recv().await {
            let _ = responder.respond(&m).await;
        }
    }
}

/// A node speaking echo v1, and v2 too if `v2`.
fn echo_node(net: &MemoryTransport, port: u64, v2: bool) -> NodeBuilder {
    let b = mem_node(net).listen(PeerAddr::Mem(port)).protocol(
        "example/echo/1",
        Sessions::ALL,
        serve::<EchoV1>,
    );
    if v2 {
        b.protocol("example/echo/2", Sessions::ALL, serve::<EchoV2>)
    } else {
        b
    }
}

/// Asks with the newest version the peer speaks.
async fn echo(ch: &Channel, n: u32) -> u32 {
    if ch.speaks("example/echo/2") {
        let EchoV2(m, _) = ch
            .request::<EchoV2, EchoV2>(&EchoV2(n, "v2".into()))
            .await
            .unwrap();
        m
    } else {
        let EchoV1(m) = ch.request::<EchoV1, EchoV1>(&EchoV1(n)).await.unwrap();
        m
    }
}

#[tokio::test(start_paused = true)]
async fn a_mixed_v1_v2_network_runs_without_bans() {
    let net = MemoryTransport::new();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..6u64 {
        nodes.push(echo_node(&net, 100 + i, i % 2 == 0).start().await.unwrap());
    }
    let mut events: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    for (i, a) in nodes.iter().enumerate() {
        for j in (i + 1)..nodes.len() {
            a.connect(&PeerAddr::Mem(100 + j as u64)).await.unwrap();
        }
    }
    eventually(Duration::from_secs(5), "a full mesh", || {
        nodes.iter().all(|n| n.peers().len() == 5)
    })
    .await;
    for a in &nodes {
        for p in a.peers() {
            let ch = a.channel(&p.peer_id).unwrap();
            // A v2 node that asks a v1 peer in v2 anyway hears Unsupported,
            // named, and falls back; it costs it nothing.
            if !ch.speaks("example/echo/2") {
                let r = ch.request::<EchoV2, EchoV2>(&EchoV2(0, "x".into())).await;
                assert!(
                    matches!(r, Err(NodeError::Unsupported(EchoV2::NAME))),
                    "{r:?}"
                );
            }
            for n in 0..50 {
                assert_eq!(echo(&ch, n).await, n);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (n, events) in nodes.iter().zip(&mut events) {
        assert_eq!(n.peers().len(), 5, "a channel closed");
        while let Ok(e) = events.try_recv() {
            assert!(!matches!(e, NodeEvent::Banned { .. }), "{e:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_loop_over_budget_is_backpressured_never_timed_out() {
    let net = MemoryTransport::new();
    let server = echo_node(&net, 200, false)
        .budget::<EchoV1>(RateBudget::new(100.0, 10))
        .start()
        .await
        .unwrap();
    let client = mem_node(&net).start().await.unwrap();
    let ch = client.connect(&PeerAddr::Mem(200)).await.unwrap();
    let began = tokio::time::Instant::now();
    for n in 0..10_000 {
        let EchoV1(m) = ch.request::<EchoV1, EchoV1>(&EchoV1(n)).await.unwrap();
        assert_eq!(m, n);
    }
    // 10,000 at 100 a second: the loop was slowed to the budget, on
    // virtual time, and every request was answered.
    assert!(
        began.elapsed() >= Duration::from_secs(99),
        "{:?}",
        began.elapsed()
    );
    assert!(!client.is_banned(&server.peer_id()) && !server.is_banned(&client.peer_id()));
    assert!(!ch.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_request_over_a_budget_under_one_a_second_is_rate_limited_by_name() {
    let net = MemoryTransport::new();
    let _server = echo_node(&net, 300, false)
        .budget::<EchoV1>(RateBudget::new(0.5, 1))
        .start()
        .await
        .unwrap();
    let client = mem_node(&net).start().await.unwrap();
    let ch = client.connect(&PeerAddr::Mem(300)).await.unwrap();
    assert_eq!(
        ch.request::<EchoV1, EchoV1>(&EchoV1(1)).await.unwrap(),
        EchoV1(1)
    );
    let began = tokio::time::Instant::now();
    let r = ch.request::<EchoV1, EchoV1>(&EchoV1(2)).await;
    assert!(
        matches!(r, Err(NodeError::RateLimited(EchoV1::NAME))),
        "{r:?}"
    );
    assert!(
        began.elapsed() < Duration::from_millis(100),
        "answered at once"
    );
    assert!(!ch.is_closed());
}
