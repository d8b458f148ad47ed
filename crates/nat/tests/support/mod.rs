//! Helpers shared by the NAT integration tests: nodes with NAT traversal,
//! an echo protocol, relay reservations, metrics.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../../node/tests/common/mod.rs"]
pub mod common;

use std::time::Duration;

use common::{fast_config, wait_event};
use knotwork_core::{Keypair, MemoryTransport, PeerAddr};
use knotwork_nat::{Nat, NatConfig, NatEvent, Reachability, RelayError, RelayLimits};
use knotwork_node::{Node, NodeBuilder, NodeError, Sessions};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// An echo request carrying bytes, to push data through a circuit.
#[derive(Serialize, Deserialize)]
pub struct Echo(pub Vec<u8>);

impl Message for Echo {
    const NAME: &'static str = "test/nat-echo/1";
    const MAX_BYTES: usize = 256 * 1024;
}

pub fn echo(b: NodeBuilder) -> NodeBuilder {
    b.protocol("test/nat-echo", Sessions::ALL, |ch| {
        let mut requests = ch.subscribe_requests::<Echo>();
        async move {
            while let Some((msg, responder)) = requests.recv().await {
                let _ = responder.respond(&msg).await;
            }
        }
    })
}

/// A started node with NAT traversal, and its handle.
pub struct NatNode {
    pub node: Node,
    pub nat: Nat,
}

impl std::ops::Deref for NatNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl NatNode {
    pub fn reachability(&self) -> Reachability {
        self.nat.reachability()
    }

    pub fn nat_events(&self) -> broadcast::Receiver<NatEvent> {
        self.nat.events()
    }
}

/// NAT settings with a short reservation retry.
pub fn nat_config() -> NatConfig {
    let mut c = NatConfig::default();
    c.reservation_retry = Duration::from_millis(200);
    c
}

pub fn relay_config(limits: RelayLimits) -> NatConfig {
    let mut c = nat_config();
    c.relay_service = Some(limits);
    c
}

pub async fn start(builder: NodeBuilder, config: NatConfig) -> NatNode {
    let nat = Nat::new(config);
    let node = builder.service(nat.clone()).start().await.unwrap();
    NatNode { node, nat }
}

pub fn mem_node(net: &MemoryTransport) -> NodeBuilder {
    echo(
        Node::builder(Keypair::generate().unwrap())
            .transport(net.clone())
            .listen("mem/0".parse().unwrap())
            .config(fast_config()),
    )
}

/// Starts `b` with a reservation on `relay`; returns it and its relayed address.
pub async fn reserved(b: NodeBuilder, relay: &Node) -> (NatNode, PeerAddr) {
    let mut config = nat_config();
    config.relays.push(relay.listen_addrs()[0].clone().into());
    let nat = Nat::new(config);
    let mut events = nat.events();
    let node = b.service(nat.clone()).start().await.unwrap();
    let event = wait_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, NatEvent::RelayReserved { .. })
    })
    .await;
    let NatEvent::RelayReserved { relay: r, addr } = event else {
        unreachable!()
    };
    assert_eq!(r, relay.peer_id());
    (NatNode { node, nat }, addr)
}

/// Whether `result` is the relay's refusal `want`.
pub fn refused(result: Result<knotwork_node::Channel, NodeError>, want: RelayError) -> bool {
    match result {
        Err(e) => e.protocol_error::<RelayError>() == Some(&want),
        Ok(_) => false,
    }
}

pub fn tcp_node(ip: &str) -> NodeBuilder {
    echo(
        Node::builder(Keypair::generate().unwrap())
            .listen(format!("tcp/{ip}:0").parse().unwrap())
            .config(fast_config()),
    )
}

pub fn counter(node: &Node, name: &str) -> u64 {
    let text = node.metrics().encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

/// Waits for `node`'s verdict `want` (the exact event), at most 20 s.
pub async fn wait_reachability(events: &mut broadcast::Receiver<NatEvent>, want: &Reachability) {
    let event = wait_event(
        events,
        Duration::from_secs(20),
        |e| matches!(e, NatEvent::ReachabilityChanged { reachability } if reachability == want),
    )
    .await;
    assert!(matches!(event, NatEvent::ReachabilityChanged { .. }));
}
