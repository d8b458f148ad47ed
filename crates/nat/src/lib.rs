//! NAT traversal: the node's external addresses, the relay (service and
//! client) and hole punching.
//!
//! - [`ObservedAddrs`] (sans-IO) collects the addresses peers see us at, from
//!   their version messages, and confirms one when enough independent peers
//!   agree; confirmed addresses are advertised as listen addresses.
//! - [`crate::protocol::relay`]: with [`NatConfig::relay_service`] set the node
//!   lets peers reserve a slot and forwards circuits between a dialer and a
//!   reserved peer. With [`NodeBuilder::relay`](crate::NodeBuilder::relay) the
//!   node keeps a channel to a relay, holds a reservation there and
//!   advertises its relayed address (`relay/<relay-addr>/<relay-id>/<own-id>`,
//!   [`crate::NodeEvent::RelayReserved`]). Dialing a relay address opens a
//!   circuit and runs the normal handshake over it.
//! - [`crate::protocol::holepunch`]: over a relayed channel both ends try a
//!   simultaneous TCP open from their listen ports and keep the direct
//!   connection when it works ([`NatConfig::holepunch`]).
//! - [`ReachabilityCheck`] and [`DialBackLimiter`] (sans-IO), run by
//!   [`crate::protocol::reachability`]: peers dial the node back from fresh
//!   sockets and it learns whether it is [`Reachability::Public`] (and at
//!   which address) or [`Reachability::Private`]; it serves the same to
//!   peers within [`NatConfig::dial_back`]. A node with a relay holds a
//!   reservation while it is not known to be public: from the start (the
//!   verdict is unknown then), released (no longer renewed nor advertised,
//!   [`crate::NodeEvent::RelayReleased`]) when it turns public, taken again
//!   when it turns private or unknown.

mod observed;
mod reachability;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use knotwork_core::{PeerAddr, PeerId};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use observed::ObservedAddrs;
pub use reachability::{
    DialBackError, DialBackLimiter, DialBackLimits, Question, Reachability, ReachabilityCheck,
    ReachabilityConfig,
};

use crate::channel::Channel;
use crate::error::NodeError;
use crate::node::{NodeEvent, Shared, lock};
use crate::protocol::relay::{self, Inbound, RelayClient, RelayLimits, RelayService};
use crate::registry::{ProtocolRegistry, SessionKind, Sessions};

/// Inbound circuits waiting for their handshake, at most.
const INBOUND_QUEUE: usize = 16;

/// NAT traversal settings of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatConfig {
    /// Offer the relay service with these limits; `None`: refuse with
    /// [`relay::RelayError::Disabled`].
    pub relay_service: Option<RelayLimits>,
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
    /// back ([`crate::protocol::reachability`]).
    pub reachability: ReachabilityConfig,
    /// Dial peers back when they ask, within these limits; `None`: refuse
    /// with [`DialBackError::Disabled`].
    pub dial_back: Option<DialBackLimits>,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            relay_service: None,
            observed_quorum: 3,
            observed_ttl: Duration::from_secs(30 * 60),
            holepunch: true,
            reservation_retry: Duration::from_secs(5),
            reachability: ReachabilityConfig::default(),
            dial_back: Some(DialBackLimits::default()),
        }
    }
}

/// The node's NAT state; one per node, in `Shared`.
pub(crate) struct Nat {
    pub(crate) config: NatConfig,
    pub(crate) client: Arc<RelayClient>,
    service: Option<Arc<RelayService>>,
    incoming: mpsc::Sender<Inbound>,
    incoming_rx: Mutex<Option<mpsc::Receiver<Inbound>>>,
    observed: Mutex<ObservedAddrs>,
    relayed: Mutex<Vec<PeerAddr>>,
    shared: OnceLock<Weak<Shared>>,
    pub(crate) tcp: knotwork_transport_tcp::TcpTransport,
    /// The last reachability verdict; the reservation keepers watch it.
    pub(crate) reachability: tokio::sync::watch::Sender<Reachability>,
    /// Admission of dial-back requests; `None` when the node refuses them.
    pub(crate) dial_backs: Option<Mutex<DialBackLimiter>>,
}

impl Nat {
    /// `tcp`: the node's TCP transport, for dials from the listen port.
    pub(crate) fn new(
        config: NatConfig,
        metrics: &crate::metrics::Metrics,
        tcp: knotwork_transport_tcp::TcpTransport,
    ) -> Arc<Self> {
        let (incoming, rx) = mpsc::channel(INBOUND_QUEUE);
        let dial_backs = config
            .dial_back
            .map(|limits| Mutex::new(DialBackLimiter::new(limits)));
        Arc::new(Self {
            service: config
                .relay_service
                .clone()
                .map(|limits| RelayService::new(limits, metrics.clone())),
            observed: Mutex::new(ObservedAddrs::new(
                config.observed_quorum,
                config.observed_ttl,
            )),
            config,
            client: Arc::new(RelayClient::default()),
            incoming,
            incoming_rx: Mutex::new(Some(rx)),
            relayed: Mutex::new(Vec::new()),
            shared: OnceLock::new(),
            tcp,
            reachability: tokio::sync::watch::Sender::new(Reachability::Unknown),
            dial_backs,
        })
    }

    /// Registers the relay protocol (and hole punching) in `registry`.
    pub(crate) fn register(self: &Arc<Self>, registry: &mut ProtocolRegistry) {
        let nat = self.clone();
        registry.register("knot/relay", Sessions::ALL, move |ch: &Channel| {
            relay::protocol(
                ch,
                nat.service.clone(),
                nat.client.clone(),
                nat.incoming.clone(),
            )
        });
        let nat = self.clone();
        registry.register(
            crate::protocol::reachability::NAME,
            Sessions::ALL,
            move |ch: &Channel| {
                crate::protocol::reachability::protocol(ch, nat.shared.get().cloned())
            },
        );
        if self.config.holepunch {
            let nat = self.clone();
            registry.register("knot/holepunch", Sessions::ALL, move |ch: &Channel| {
                crate::protocol::holepunch::protocol(ch, nat.shared.get().cloned(), nat.tcp.clone())
            });
        }
    }

    /// The external addresses peers confirmed, lapsed votes dropped first
    /// (so a lost address changes the reachability check's candidates).
    pub(crate) fn confirmed(&self) -> Vec<PeerAddr> {
        let mut observed = lock(&self.observed);
        observed.expire(Instant::now().into_std());
        observed.confirmed()
    }

    /// Addresses to advertise besides the bound ones: confirmed external
    /// addresses and relayed addresses.
    pub(crate) fn external(&self) -> Vec<PeerAddr> {
        let mut out = lock(&self.observed).confirmed();
        out.extend(lock(&self.relayed).iter().cloned());
        out
    }

    /// Records the address peer `voter` (at `voter_addr`) sees us at.
    pub(crate) fn observe(
        &self,
        voter: PeerId,
        voter_addr: &PeerAddr,
        observed: &str,
        listen: &[PeerAddr],
    ) -> Option<PeerAddr> {
        let observed: PeerAddr = observed.parse().ok()?;
        let port = listen.iter().find_map(|a| match a {
            PeerAddr::Tcp(sa) => Some(sa.port()),
            _ => None,
        })?;
        lock(&self.observed).observe(
            voter,
            voter_addr,
            &observed,
            port,
            Instant::now().into_std(),
        )
    }

    /// Lets the protocols reach the node; call it as soon as `shared` exists.
    pub(crate) fn bind(shared: &Arc<Shared>) {
        let _ = shared.nat.shared.set(Arc::downgrade(shared));
    }

    /// Starts the tasks: the handshake of inbound circuits and one
    /// reservation keeper per relay.
    pub(crate) fn start(shared: &Arc<Shared>, relays: Vec<PeerAddr>) {
        let nat = &shared.nat;
        if let Some(rx) = lock(&nat.incoming_rx).take() {
            shared.spawn_task(accept_circuits(shared.clone(), rx));
        }
        for addr in relays {
            shared.spawn_task(keep_reservation(shared.clone(), addr));
        }
        // Only a TCP listener can be dialed back.
        if shared
            .own_addrs()
            .iter()
            .any(|a| matches!(a, PeerAddr::Tcp(_)))
        {
            shared.spawn_task(crate::protocol::reachability::run(shared.clone()));
        }
    }
}

/// Runs the pipeline (as inbound) on every circuit a relay opened to us.
async fn accept_circuits(shared: Arc<Shared>, mut rx: mpsc::Receiver<Inbound>) {
    loop {
        let Inbound {
            stream,
            from,
            relay,
        } = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            next = rx.recv() => match next {
                Some(inbound) => inbound,
                None => return,
            },
        };
        let Ok(permit) = shared.pending_handshakes.clone().try_acquire_owned() else {
            tracing::debug!(from = %from.short(), "too many pending handshakes; circuit dropped");
            continue;
        };
        let addr =
            match PeerAddr::relayed(relay.remote_addr().clone(), relay.remote_peer_id(), from) {
                Ok(addr) => addr,
                Err(e) => {
                    tracing::debug!("circuit from a relayed relay: {e}");
                    continue;
                }
            };
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(
                shared.config.handshake_timeout,
                crate::session::establish(
                    &shared,
                    Box::new(stream),
                    addr.clone(),
                    SessionKind::Inbound,
                    None,
                ),
            )
            .await
            .unwrap_or(Err(NodeError::HandshakeTimeout));
            drop(permit);
            shared
                .apps
                .metrics
                .handshake("inbound", result.as_ref().err());
            if let Err(e) = result {
                tracing::debug!(%addr, "relayed inbound failed: {e}");
            }
        });
    }
}

fn is_public(r: &Reachability) -> bool {
    matches!(r, Reachability::Public(_))
}

/// Keeps a channel to the relay at `addr` and a reservation on it while the
/// node is not public; while the reservation holds, the relayed address is
/// advertised.
async fn keep_reservation(shared: Arc<Shared>, addr: PeerAddr) {
    let mut reachability = shared.nat.reachability.subscribe();
    loop {
        tokio::select! {
            waited = reachability.wait_for(|r| !is_public(r)) => if waited.is_err() {
                return;
            },
            () = shared.shutdown.cancelled() => return,
        }
        let channel = match crate::session::connect(&shared, &addr, SessionKind::Seed).await {
            Ok(channel) => Some(channel),
            Err(NodeError::AlreadyConnected(peer)) => lock(&shared.peers).get(&peer).cloned(),
            Err(NodeError::ShuttingDown) => return,
            Err(e) => {
                tracing::debug!(%addr, "relay connect failed: {e}");
                None
            }
        };
        if let Some(channel) = channel {
            hold_reservation(&shared, &addr, &channel).await;
        }
        tokio::select! {
            () = tokio::time::sleep(shared.nat.config.reservation_retry) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Reserves on `channel` and renews at half the lifetime until the channel
/// closes or the relay refuses.
async fn hold_reservation(shared: &Arc<Shared>, addr: &PeerAddr, channel: &Channel) {
    let relayed = match PeerAddr::relayed(addr.clone(), channel.remote_peer_id(), shared.peer_id) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%addr, "cannot reserve on a relay address: {e}");
            return;
        }
    };
    let mut announced = false;
    let mut reachability = shared.nat.reachability.subscribe();
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
            lock(&shared.nat.relayed).push(relayed.clone());
            tracing::info!(%relayed, "relay reservation held");
            shared.emit(NodeEvent::RelayReserved {
                relay: channel.remote_peer_id(),
                addr: relayed.clone(),
            });
        }
        tokio::select! {
            () = tokio::time::sleep((ttl / 2).max(Duration::from_secs(1))) => {}
            _ = channel.closed() => break,
            () = shared.shutdown.cancelled() => break,
            _ = reachability.wait_for(is_public) => {
                tracing::info!(%relayed, "reachable directly: relay reservation released");
                break;
            }
        }
    }
    lock(&shared.nat.relayed).retain(|a| *a != relayed);
    if announced {
        shared.emit(NodeEvent::RelayReleased {
            relay: channel.remote_peer_id(),
            addr: relayed,
        });
    }
}

#[cfg(test)]
mod tests;
