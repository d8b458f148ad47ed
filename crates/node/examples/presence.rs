//! A service outside the built-ins, on the same extension API the NAT
//! traversal crate uses: a presence service. Every node tells its peers
//! where the peers it sees listen; a node that hears of one it does not know
//! dials it through the node's dial policy (the address must be in the
//! scope of the peer that told us, and the service's dials have a budget of
//! their own). A node may announce an extra address (a port forwarded by
//! hand, say), which it then advertises to every peer, as a contribution to
//! its advertised addresses. The announcing runs as a node-wide job.
//!
//! Three nodes on the in-memory network: A knows B, B knows C; A learns of C
//! from B and connects to it, and sees the address C announces.
//! Run with `cargo run -p knotwork-node --example presence`.
#![allow(clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use knotwork_core::{Keypair, MemoryTransport, PeerAddr};
use knotwork_node::{
    AddrScope, Channel, DialCause, DialOpts, Node, NodeHandle, RateBudget, Service, Sessions,
    Setup, WeakNode,
};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

/// Where the sender's peers listen, as address texts.
#[derive(Serialize, Deserialize)]
struct Presence(Vec<String>);

/// Addresses in one [`Presence`], at most.
const MAX_ADDRS: usize = 16;

impl Message for Presence {
    const NAME: &'static str = "example/presence/1";
    const MAX_BYTES: usize = 1 + MAX_ADDRS * (2 + knotwork_core::MAX_ADDR_TEXT_LEN);
}

/// The presence service; cheap to clone.
#[derive(Clone)]
struct PresenceService {
    /// Set when the node starts; weak, as the node holds the service.
    node: Arc<Mutex<Option<WeakNode>>>,
    /// How often peers are told.
    interval: Duration,
    /// An extra address to advertise.
    announce: Option<PeerAddr>,
}

impl PresenceService {
    fn new(interval: Duration, announce: Option<PeerAddr>) -> Self {
        Self {
            node: Arc::default(),
            interval,
            announce,
        }
    }

    fn node(&self) -> Option<NodeHandle> {
        let weak = self.node.lock().ok()?.clone()?;
        weak.upgrade()
    }

    /// On one channel: dial what the peer tells us about.
    fn protocol(&self, channel: &Channel) -> impl Future<Output = ()> + Send + use<> {
        let mut heard = channel.subscribe::<Presence>();
        // What the peer tells us must fit the scope it is in itself.
        let scope = AddrScope::of(channel.remote_addr());
        let this = self.clone();
        async move {
            while let Some(Presence(addrs)) = heard.recv().await {
                let Some(node) = this.node() else { return };
                for addr in addrs.iter().take(MAX_ADDRS) {
                    let Ok(addr) = addr.parse::<PeerAddr>() else {
                        continue;
                    };
                    let known = node.peers().iter().any(|p| p.addr == addr)
                        || node.listen_addrs().contains(&addr);
                    if known {
                        continue;
                    }
                    let opts = DialOpts::new(DialCause::Service("presence")).heard_from(scope);
                    match node.dial(&addr, opts).await {
                        Ok(ch) => println!(
                            "{}: met {} at {addr}",
                            node.peer_id().short(),
                            ch.remote_peer_id().short()
                        ),
                        Err(e) => println!("{}: {addr}: {e}", node.peer_id().short()),
                    }
                }
            }
        }
    }

    /// The node-wide job: advertise the announced address and tell every
    /// peer where the others listen, every interval.
    async fn announce(self, node: NodeHandle) {
        let contribution = node.contribute_addrs("presence");
        if let Some(addr) = &self.announce {
            contribution.add(addr.clone());
        }
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tick.tick().await;
            let channels = node.channels();
            let seen: Vec<String> = channels
                .iter()
                .filter_map(|c| c.info().version.listen_addrs.first().cloned())
                .take(MAX_ADDRS)
                .collect();
            for channel in channels {
                // A slow peer misses this round, not the others.
                let _ = tokio::time::timeout(self.interval, channel.send(&Presence(seen.clone())))
                    .await;
            }
        }
    }
}

impl Service for PresenceService {
    fn setup(&self, setup: &mut Setup<'_>) {
        setup.default_budget::<Presence>(RateBudget::new(1.0, 4));
        let this = self.clone();
        setup.protocol("example/presence", Sessions::ALL, move |ch| {
            this.protocol(ch)
        });
    }

    fn start(&self, node: &NodeHandle) {
        if let Ok(mut slot) = self.node.lock() {
            *slot = Some(node.downgrade());
        }
        node.spawn(self.clone().announce(node.clone()));
    }
}

async fn start(
    net: &MemoryTransport,
    port: u64,
    announce: Option<PeerAddr>,
) -> Result<Node, Box<dyn std::error::Error>> {
    let presence = PresenceService::new(Duration::from_millis(200), announce);
    Ok(Node::builder(Keypair::generate()?)
        .transport(net.clone())
        .listen(PeerAddr::Mem(port))
        .service(presence)
        .start()
        .await?)
}

#[tokio::main(flavor = "current_thread")]
pub(crate) async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = MemoryTransport::new();
    let announced = PeerAddr::Mem(99);
    let a = start(&net, 1, None).await?;
    let b = start(&net, 2, None).await?;
    let c = start(&net, 3, Some(announced.clone())).await?;
    a.connect(&PeerAddr::Mem(2)).await?;
    b.connect(&PeerAddr::Mem(3)).await?;
    assert_eq!(
        c.advertised_addrs(),
        vec![PeerAddr::Mem(3), announced.clone()]
    );
    let met = tokio::time::timeout(Duration::from_secs(5), async {
        while a.channel(&c.peer_id()).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(met.is_ok(), "a never met c");
    let to_c = a.channel(&c.peer_id()).ok_or("no channel to c")?;
    let told = to_c.info().version.parsed_listen_addrs()?;
    assert!(told.contains(&announced), "{told:?}");
    println!(
        "a reaches c at {} and was told {told:?}",
        to_c.remote_addr()
    );
    for node in [a, b, c] {
        node.shutdown().await;
    }
    Ok(())
}
