//! knotwork-nat: NAT traversal for a knotwork node, as one [`Service`]
//! written against the node's public extension API.
//!
//! - [`ObservedAddrs`] (sans-IO) collects the addresses peers see us at, from
//!   their version messages, and confirms one when enough independent peers
//!   agree; confirmed addresses are advertised (an address contribution).
//! - [`relay`]: with [`NatConfig::relay_service`] set the node lets peers
//!   reserve a slot and forwards circuits between a dialer and a reserved
//!   peer. With [`NatConfig::relays`] the node keeps a channel to each relay,
//!   holds a reservation there and advertises its relayed address
//!   (`relay/<relay-addr>/<relay-id>/<own-id>`, [`NatEvent::RelayReserved`]).
//!   Dialing a relayed address opens a circuit (the service registers a
//!   [`Dialer`](knotwork_node::Dialer) for them) and runs the normal
//!   handshake over it.
//! - [`holepunch`]: over a relayed channel both ends try a simultaneous TCP
//!   open from their listen ports, and with [`Nat::quic`] QUIC dials from
//!   their UDP listen sockets at the same moment (`holepunch_quic`), and
//!   keep the direct connection when one works ([`NatConfig::holepunch`]).
//! - [`ReachabilityCheck`] and [`DialBackLimiter`] (sans-IO), run by
//!   [`dialback`]: peers dial the node back from fresh sockets and it learns
//!   whether it is [`Reachability::Public`] (and at which address) or
//!   [`Reachability::Private`]; it serves the same to peers within
//!   [`NatConfig::dial_back`]. A node with a relay holds a reservation while
//!   it is not known to be public: from the start (the verdict is unknown
//!   then), released (no longer renewed nor advertised,
//!   [`NatEvent::RelayReleased`]) when it turns public, taken again when it
//!   turns private or unknown.
//! - [`upnp`] (feature `upnp`, default; off unless [`NatConfig::upnp`] is
//!   set): UPnP IGD mapping of the listen port, its lease schedule (sans-IO)
//!   and renewal.
//!
//! # Safe on the open internet
//! Every peer is a stranger that may lie. So:
//! - a node takes relayed circuits only from a relay it holds a reservation
//!   with, runs a few relayed handshakes at once on limits of their own
//!   (none of the node's pending-handshake slots) and checks that the peer
//!   at the other end is the one the relay named ([`relay`]);
//! - a relay limits reservations and circuits per PeerId and per IP
//!   address, and never waits for one end to forward to the other: each
//!   circuit has a flow-control window and bounded buffers ([`relay`]);
//! - hole punching dials only the peer's own IP as the relay sees it, a
//!   bounded number of times, and stops when the relayed channel closes
//!   ([`holepunch`]);
//! - reachability asks only peers the node dialed, one per network, and
//!   serves dial-backs within per-peer, per-network and global budgets
//!   ([`dialback`]);
//! - an observed address is confirmed only by voters of distinct networks,
//!   and only a public one ([`ObservedAddrs`]).
//!
//! ```
//! use knotwork_core::{Keypair, MemoryTransport};
//! use knotwork_nat::{Nat, NatConfig, NatEvent, RelayLimits};
//! use knotwork_node::Node;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = MemoryTransport::new();
//! let mut relay_config = NatConfig::default();
//! relay_config.relay_service = Some(RelayLimits::default());
//! let relay = Node::builder(Keypair::generate()?)
//!     .transport(net.clone())
//!     .listen("mem/0".parse()?)
//!     .service(Nat::new(relay_config))
//!     .start()
//!     .await?;
//! let mut config = NatConfig::default();
//! config.relays.push(relay.listen_addrs()[0].clone().into());
//! let nat = Nat::new(config);
//! let mut events = nat.events();
//! let _private = Node::builder(Keypair::generate()?)
//!     .transport(net)
//!     .service(nat.clone())
//!     .start()
//!     .await?;
//! let NatEvent::RelayReserved { addr, .. } = events.recv().await? else {
//!     return Err("expected a reservation".into());
//! };
//! assert!(addr.is_relayed());
//! # Ok(()) }
//! ```

pub mod dialback;
pub mod holepunch;
mod holepunch_quic;
mod metrics;
mod netgroup;
mod observed;
mod reachability;
pub mod relay;
#[cfg(feature = "upnp")]
pub mod upnp;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use knotwork_core::{DialAddr, PeerAddr, PeerId, lock};
use knotwork_node::{
    AddrContribution, Channel, DialCause, DialOpts, NodeError, NodeHandle, Service, Sessions,
    Setup, WeakNode,
};
use knotwork_transport_quic::QuicTransport;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::time::Instant;

pub use observed::ObservedAddrs;
pub use reachability::{
    DialBackError, DialBackLimiter, DialBackLimits, Question, Reachability, ReachabilityCheck,
    ReachabilityConfig,
};
pub use relay::{RelayError, RelayLimits};

use crate::metrics::NatMetrics;
use crate::relay::{RelayClient, RelayService};

/// NAT traversal settings of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatConfig {
    /// Offer the relay service with these limits; `None`: refuse with
    /// [`RelayError::Disabled`].
    pub relay_service: Option<RelayLimits>,
    /// Relays to keep a reservation on while the node is not public, each
    /// optionally pinned to its PeerId (`…/p2p/<id>`).
    pub relays: Vec<DialAddr>,
    /// Independent peers that must report an external address before the
    /// node advertises it.
    pub observed_quorum: usize,
    /// How long a peer's report of our address counts.
    pub observed_ttl: Duration,
    /// Try a direct connection over every relayed one (hole punching); the
    /// TCP listeners then bind with port reuse.
    pub holepunch: bool,
    /// Wait before asking a relay again after a failed reservation.
    pub reservation_retry: Duration,
    /// How the node checks its own reachability by asking peers to dial it
    /// back ([`dialback`]).
    pub reachability: ReachabilityConfig,
    /// Dial peers back when they ask, within these limits; `None`: refuse
    /// with [`DialBackError::Disabled`].
    pub dial_back: Option<DialBackLimits>,
    /// Map the first IPv4 TCP listen port on the LAN's UPnP gateway and
    /// advertise the external address; `None`: off.
    #[cfg(feature = "upnp")]
    pub upnp: Option<upnp::UpnpConfig>,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            relay_service: None,
            relays: Vec::new(),
            observed_quorum: 3,
            observed_ttl: Duration::from_secs(30 * 60),
            holepunch: true,
            reservation_retry: Duration::from_secs(5),
            reachability: ReachabilityConfig::default(),
            dial_back: Some(DialBackLimits::default()),
            #[cfg(feature = "upnp")]
            upnp: None,
        }
    }
}

/// What NAT traversal did; from [`Nat::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatEvent {
    /// A relay granted this node a reservation; `addr` reaches us through it.
    RelayReserved {
        /// The relay.
        relay: PeerId,
        /// Our relayed address, now advertised.
        addr: PeerAddr,
    },
    /// The relayed address is no longer advertised: the relay channel
    /// closed, the relay refused a renewal, or the node turned public; the
    /// reservation is no longer renewed.
    RelayReleased {
        /// The relay.
        relay: PeerId,
        /// The relayed address that was advertised.
        addr: PeerAddr,
    },
    /// The UPnP gateway maps `external` to our listen port; it is advertised
    /// from now on.
    UpnpMapped {
        /// Our address on the gateway's public side.
        external: PeerAddr,
        /// The lease asked for (renewed at half of it).
        lease: Duration,
    },
    /// The UPnP mapping lapsed (renewals failed); no longer advertised.
    UpnpLost {
        /// The address that was mapped.
        external: PeerAddr,
    },
    /// Peers' dial-backs changed the verdict on our reachability.
    ReachabilityChanged {
        /// The new verdict.
        reachability: Reachability,
    },
}

/// The advertised-address contributions of the service, made at start.
struct Contributions {
    observed: AddrContribution,
    relayed: AddrContribution,
}

/// The service's state, shared by its protocols and jobs.
pub(crate) struct Inner {
    pub(crate) config: NatConfig,
    pub(crate) client: Arc<RelayClient>,
    pub(crate) service: Option<Arc<RelayService>>,
    /// Hole punches running now ([`holepunch::MAX_PUNCHES`]).
    pub(crate) punches: Arc<Semaphore>,
    observed: Mutex<ObservedAddrs>,
    node: OnceLock<WeakNode>,
    contributions: OnceLock<Contributions>,
    /// The last reachability verdict; the reservation keepers watch it.
    pub(crate) reachability: watch::Sender<Reachability>,
    /// Admission of dial-back requests; `None` when the node refuses them.
    pub(crate) dial_backs: Option<Mutex<DialBackLimiter>>,
    events: broadcast::Sender<NatEvent>,
    pub(crate) metrics: NatMetrics,
    /// The node's QUIC transport, for hole punching over UDP.
    pub(crate) quic: OnceLock<QuicTransport>,
    #[cfg(feature = "upnp")]
    pub(crate) upnp: upnp::Upnp,
}

/// NAT traversal on a node: add a clone with
/// [`NodeBuilder::service`](knotwork_node::NodeBuilder::service); cheap to
/// clone. See the crate docs.
#[derive(Clone)]
pub struct Nat {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Nat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nat")
            .field("reachability", &self.reachability())
            .finish_non_exhaustive()
    }
}

impl Nat {
    /// NAT traversal with `config`; it runs once added to a node.
    pub fn new(config: NatConfig) -> Self {
        let metrics = NatMetrics::default();
        let dial_backs = config
            .dial_back
            .map(|limits| Mutex::new(DialBackLimiter::new(limits)));
        Self {
            inner: Arc::new(Inner {
                service: config
                    .relay_service
                    .clone()
                    .map(|limits| RelayService::new(limits, metrics.clone())),
                observed: Mutex::new(ObservedAddrs::new(
                    config.observed_quorum,
                    config.observed_ttl,
                )),
                #[cfg(feature = "upnp")]
                upnp: upnp::Upnp::new(config.upnp.clone()),
                config,
                client: Arc::new(RelayClient::default()),
                punches: Arc::new(Semaphore::new(holepunch::MAX_PUNCHES)),
                node: OnceLock::new(),
                contributions: OnceLock::new(),
                reachability: watch::Sender::new(Reachability::Unknown),
                dial_backs,
                events: broadcast::channel(64).0,
                metrics,
                quic: OnceLock::new(),
            }),
        }
    }

    /// Punches holes over UDP too (see [`holepunch`]), with the node's
    /// QUIC transport: the one given to the node builder (clones share its
    /// sockets), so dials leave from the node's QUIC listen socket.
    pub fn quic(self, quic: QuicTransport) -> Self {
        let _ = self.inner.quic.set(quic);
        self
    }

    /// NAT events from now on; a receiver more than 64 behind gets `Lagged`.
    pub fn events(&self) -> broadcast::Receiver<NatEvent> {
        self.inner.events.subscribe()
    }

    /// Whether peers can dial this node, as their dial-backs said last.
    pub fn reachability(&self) -> Reachability {
        self.inner.reachability.borrow().clone()
    }

    /// The external addresses advertised: confirmed by peers, then relayed.
    pub fn external(&self) -> Vec<PeerAddr> {
        self.inner.external()
    }

    /// The UPnP mapping held now.
    #[cfg(feature = "upnp")]
    pub fn upnp_mapping(&self) -> Option<upnp::UpnpMapping> {
        self.inner.upnp.mapping()
    }

    /// Circuits this node relays now (0 without the relay service).
    pub fn relayed_circuits(&self) -> usize {
        self.inner.service.as_ref().map_or(0, |s| s.circuits())
    }

    /// Every byte the relay service forwarded (for the test that a relay
    /// sees only ciphertext).
    #[cfg(test)]
    pub(crate) fn forwarded(&self) -> Vec<u8> {
        self.inner
            .service
            .as_ref()
            .map(|s| lock(&s.forwarded).clone())
            .unwrap_or_default()
    }
}

impl Inner {
    /// The node, while it runs.
    pub(crate) fn node(&self) -> Option<NodeHandle> {
        self.node.get().and_then(WeakNode::upgrade)
    }

    pub(crate) fn emit(&self, event: NatEvent) {
        // No receiver is fine; a lagging receiver sees `Lagged`.
        let _ = self.events.send(event);
    }

    /// The external addresses peers confirmed, lapsed votes dropped first
    /// (so a lost address changes the reachability check's candidates).
    pub(crate) fn confirmed(&self) -> Vec<PeerAddr> {
        let confirmed = {
            let mut observed = lock(&self.observed);
            observed.expire(Instant::now().into_std());
            observed.confirmed()
        };
        if let Some(c) = self.contributions.get() {
            c.observed.set(confirmed.clone());
        }
        confirmed
    }

    /// Confirmed external addresses, then relayed ones.
    pub(crate) fn external(&self) -> Vec<PeerAddr> {
        let mut out = lock(&self.observed).confirmed();
        if let Some(c) = self.contributions.get() {
            out.extend(c.relayed.get());
        }
        out
    }

    /// Records the address the peer of `channel` sees us at (its version
    /// message), if the channel is direct.
    fn observe(&self, channel: &Channel) {
        let addr = channel.remote_addr();
        let Some(node) = self.node() else {
            return;
        };
        if addr.is_relayed() {
            return;
        }
        let Ok(observed) = channel.info().version.observed_addr.parse::<PeerAddr>() else {
            return;
        };
        let Some(port) = node.listen_addrs().iter().find_map(|a| match a {
            PeerAddr::Tcp(sa) => Some(sa.port()),
            _ => None,
        }) else {
            return;
        };
        let now = Instant::now().into_std();
        let (confirmed, all) = {
            let mut votes = lock(&self.observed);
            let confirmed = votes.observe(channel.remote_peer_id(), addr, &observed, port, now);
            (confirmed, votes.confirmed())
        };
        if let Some(external) = confirmed {
            tracing::info!(%external, "external address confirmed by peers");
        }
        if let Some(c) = self.contributions.get() {
            c.observed.set(all);
        }
    }

    /// Stores, logs, counts and emits a new reachability verdict.
    pub(crate) fn publish(&self, reachability: Reachability) {
        tracing::info!("reachability {reachability}");
        self.metrics.reachability(reachability.state());
        self.reachability.send_replace(reachability.clone());
        self.emit(NatEvent::ReachabilityChanged { reachability });
    }
}

#[async_trait]
impl Service for Nat {
    fn setup(&self, setup: &mut Setup<'_>) {
        let inner = &self.inner;
        inner.metrics.register(setup.metrics());
        setup.default_budget::<relay::ToRelay>(relay::DATA_BUDGET);
        setup.default_budget::<relay::FromRelay>(relay::DATA_BUDGET);
        setup.default_budget::<relay::Reserve>(relay::CONTROL_BUDGET);
        setup.default_budget::<relay::Connect>(relay::CONTROL_BUDGET);
        setup.default_budget::<relay::Incoming>(relay::CONTROL_BUDGET);
        let nat = inner.clone();
        setup.on_channel(move |ch: &Channel| nat.observe(ch));
        let nat = inner.clone();
        setup.protocol(relay::NAME, Sessions::ALL, move |ch: &Channel| {
            relay::protocol(ch, nat.clone())
        });
        let nat = inner.clone();
        setup.protocol(dialback::NAME, Sessions::ALL, move |ch: &Channel| {
            dialback::protocol(ch, nat.clone())
        });
        if inner.config.holepunch {
            setup.reuse_tcp_port();
            let nat = inner.clone();
            setup.protocol(holepunch::NAME, Sessions::ALL, move |ch: &Channel| {
                holepunch::protocol(ch, nat.clone())
            });
        }
        setup.dialer(relay::RelayDialer(inner.client.clone()));
    }

    fn start(&self, node: &NodeHandle) {
        let inner = &self.inner;
        let _ = inner.node.set(node.downgrade());
        let _ = inner.contributions.set(Contributions {
            observed: node.contribute_addrs("observed"),
            relayed: node.contribute_addrs("relayed"),
        });
        if let Some(service) = &inner.service {
            node.spawn(service.clone().expire());
        }
        for addr in inner.config.relays.clone() {
            node.spawn(keep_reservation(node.clone(), inner.clone(), addr));
        }
        // Only a TCP listener can be dialed back.
        if node
            .listen_addrs()
            .iter()
            .any(|a| matches!(a, PeerAddr::Tcp(_)))
        {
            node.spawn(dialback::run(node.clone(), inner.clone()));
        }
        #[cfg(feature = "upnp")]
        upnp::start(node, inner);
    }

    async fn stop(&self) {
        #[cfg(feature = "upnp")]
        self.inner.upnp.release(&self.inner.metrics).await;
    }
}

fn is_public(r: &Reachability) -> bool {
    matches!(r, Reachability::Public(_))
}

/// Keeps a channel to the relay at `addr` and a reservation on it while the
/// node is not public; while the reservation holds, the relayed address is
/// advertised.
async fn keep_reservation(node: NodeHandle, nat: Arc<Inner>, relay: DialAddr) {
    let mut reachability = nat.reachability.subscribe();
    let addr = relay.addr;
    let mut opts = DialOpts::new(DialCause::Seed);
    opts.peer = relay.peer;
    loop {
        if reachability.wait_for(|r| !is_public(r)).await.is_err() {
            return;
        }
        let channel = match node.dial(&addr, opts).await {
            Ok(channel) => Some(channel),
            Err(NodeError::ShuttingDown) => return,
            Err(e) => {
                tracing::debug!(%addr, "relay connect failed: {e}");
                None
            }
        };
        if let Some(channel) = channel {
            hold_reservation(&node, &nat, &addr, &channel).await;
        }
        tokio::time::sleep(nat.config.reservation_retry).await;
    }
}

/// Reserves on `channel` and renews at half the lifetime until the channel
/// closes or the relay refuses.
async fn hold_reservation(node: &NodeHandle, nat: &Inner, addr: &PeerAddr, channel: &Channel) {
    let relayed = match PeerAddr::relayed(addr.clone(), channel.remote_peer_id(), node.peer_id()) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%addr, "cannot reserve on a relay address: {e}");
            return;
        }
    };
    let Some(contributions) = nat.contributions.get() else {
        return;
    };
    // The relay may bring us circuits from now until we give up on it.
    let _ours = nat.client.our_relay(channel);
    let mut announced = false;
    let mut reachability = nat.reachability.subscribe();
    loop {
        let ttl = match relay::reserve(channel).await {
            Ok(ttl) => ttl,
            Err(e) => {
                tracing::info!(%addr, "relay reservation failed: {e}");
                break;
            }
        };
        if !announced {
            announced = true;
            contributions.relayed.add(relayed.clone());
            tracing::info!(%relayed, "relay reservation held");
            nat.emit(NatEvent::RelayReserved {
                relay: channel.remote_peer_id(),
                addr: relayed.clone(),
            });
        }
        tokio::select! {
            () = tokio::time::sleep((ttl / 2).max(Duration::from_secs(1))) => {}
            _ = channel.closed() => break,
            _ = reachability.wait_for(is_public) => {
                tracing::info!(%relayed, "reachable directly: relay reservation released");
                break;
            }
        }
    }
    contributions.relayed.remove(&relayed);
    if announced {
        nat.emit(NatEvent::RelayReleased {
            relay: channel.remote_peer_id(),
            addr: relayed,
        });
    }
}

#[cfg(test)]
mod tests;

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
