//! [`Node`], the running node, and [`NodeHandle`], the same node as its
//! services see it: everything a protocol crate may use of the runtime.
//!
//! A [`NodeHandle`] is what a [`Service`] gets when the node
//! starts: peers and channels, the dial entry point with the node's policy
//! ([`crate::dial`]), the pipeline for streams a service opened itself (a
//! relayed circuit, a punched hole), owned jobs that stop with the node,
//! the advertised addresses and contributions to them, events and metrics.
//! A [`Node`] is a handle that also owns the node's life: when the last
//! [`Node`] is dropped the node shuts down. Handles do not keep it running.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub(crate) use knotwork_core::lock;
use knotwork_core::{DialAddr, IpPrefix, PeerAddr, PeerId};
use knotwork_crypto_handshake::SecureConfig;
use knotwork_transport_tcp::TcpTransport;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::addrs::{AddrBook, AddrContribution};
use crate::admission::{Pending, StartBudget};
use crate::builder::NodeConfig;
use crate::channel::{Channel, ChannelConfig};
use crate::dial::{DialCause, DialGate, DialOpts};
use crate::error::{CloseReason, DisconnectReason, NodeError};
use crate::hosts::HostStore;
use crate::jobs::Jobs;
use crate::meter::BanList;
use crate::metrics::Metrics;
use crate::registry::{ProtocolRegistry, SessionKind};
use crate::service::{Dialer, Service};
use crate::transport::{AnyTransport, RawConn};

/// Something that happened to the node's peers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A channel opened.
    Connected {
        /// The peer.
        peer: PeerId,
        /// Its address on this connection.
        addr: PeerAddr,
        /// How the connection was made.
        session: SessionKind,
    },
    /// A channel closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: CloseReason,
    },
    /// A peer was banned for misbehaviour.
    Banned {
        /// The peer.
        peer: PeerId,
    },
}

/// A snapshot of one connected peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer.
    pub peer_id: PeerId,
    /// Its address on this connection.
    pub addr: PeerAddr,
    /// How the connection was made.
    pub session: SessionKind,
    /// The last ping round-trip time.
    pub rtt: Option<Duration>,
    /// The protocols the peer announced.
    pub protocols: Vec<String>,
}

/// The node's state, shared by its handles, tasks and channels.
pub(crate) struct Shared {
    pub(crate) peer_id: PeerId,
    pub(crate) secure: SecureConfig,
    pub(crate) config: NodeConfig,
    pub(crate) channel_config: Arc<ChannelConfig>,
    pub(crate) registry: ProtocolRegistry,
    pub(crate) transports: Vec<Box<dyn AnyTransport>>,
    pub(crate) dialers: Vec<Arc<dyn Dialer>>,
    pub(crate) resolvers: Vec<Arc<dyn crate::resolve::PeerResolver>>,
    pub(crate) attempts: Mutex<crate::resolve::Attempts>,
    pub(crate) tcp: TcpTransport,
    pub(crate) peers: Mutex<HashMap<PeerId, Channel>>,
    pub(crate) hosts: Arc<Mutex<HostStore>>,
    pub(crate) bans: Mutex<BanList>,
    pub(crate) addrs: Arc<AddrBook>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) shutdown: CancellationToken,
    /// Pending inbound handshakes and how to cut each (see `crate::admission`).
    pub(crate) pending: Mutex<PendingSlots>,
    /// Handshake starts per host.
    pub(crate) starts: Mutex<StartBudget>,
    /// Inbound connections per host and per subnet.
    pub(crate) per_ip: Mutex<HashMap<IpPrefix, usize>>,
    pub(crate) dials: Mutex<DialGate>,
    /// Peers an outbound pipeline has authenticated and not yet put in the
    /// peer table (see `session::Establishing`); `established` wakes those
    /// waiting for one to finish.
    pub(crate) establishing: Mutex<HashSet<PeerId>>,
    pub(crate) established: tokio::sync::Notify,
    pub(crate) jobs: Jobs,
    pub(crate) services: Mutex<Vec<Arc<dyn Service>>>,
    pub(crate) discovery: crate::discovery::UnifiedDiscovery,
    pub(crate) metrics: Metrics,
    pub(crate) listeners_up: Arc<AtomicUsize>,
}

/// The pending handshakes and the token that cuts each.
pub(crate) struct PendingSlots {
    pub(crate) table: Pending,
    pub(crate) cuts: HashMap<u64, CancellationToken>,
}

impl Shared {
    pub(crate) fn own_addrs(&self) -> &[PeerAddr] {
        self.addrs.listen()
    }

    pub(crate) fn emit(&self, event: NodeEvent) {
        // Counted here, in order and before anyone can see the event: a
        // scrape after an event includes it, and a lagging subscriber
        // cannot lose a count.
        self.metrics.event(&event);
        // No receiver is fine; a lagging receiver sees `Lagged`.
        let _ = self.events.send(event);
    }

    pub(crate) fn spawn_task<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.jobs.spawn(task);
    }
}

/// The node as its services see it; cheap to clone. See the module docs.
///
/// Holding a handle does not keep the node running: after the last
/// [`Node`] is dropped or [`NodeHandle::shutdown`] is called, the node stops
/// accepting and dialing and the handle's calls fail with
/// [`NodeError::ShuttingDown`]. A service that stores a handle inside the
/// node's own state keeps the memory alive; store a [`WeakNode`] there.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) shared: Arc<Shared>,
}

/// A [`NodeHandle`] that does not keep the node's memory alive.
#[derive(Clone, Debug, Default)]
pub struct WeakNode(Weak<Shared>);

impl WeakNode {
    /// The handle, while the node's state exists.
    pub fn upgrade(&self) -> Option<NodeHandle> {
        self.0.upgrade().map(|shared| NodeHandle { shared })
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .field("listen", &self.own_addrs())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

/// A running node; cheap to clone, and a [`NodeHandle`] through `Deref`.
/// See the crate docs. When the last clone is dropped the node shuts down as
/// by [`NodeHandle::shutdown`] (in the background, if a tokio runtime is
/// still running).
#[derive(Clone)]
pub struct Node {
    pub(crate) handle: NodeHandle,
    pub(crate) _guard: Arc<ShutdownOnDrop>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle.fmt(f)
    }
}

impl Deref for Node {
    type Target = NodeHandle;
    fn deref(&self) -> &NodeHandle {
        &self.handle
    }
}

impl Node {
    /// A handle that does not keep the node running.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }
}

/// Shuts the node down when the last [`Node`] goes away. The node's own
/// tasks and its services' handles hold `Shared`, never this guard.
pub(crate) struct ShutdownOnDrop(pub(crate) Arc<Shared>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.shutdown.cancel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(shutdown(self.0.clone()));
        }
    }
}

/// Stops accepting and dialing and every job, stops the services, closes
/// every channel with `Disconnect { Shutdown }` and waits for them to drain.
async fn shutdown(shared: Arc<Shared>) {
    shared.shutdown.cancel();
    shared.jobs.close();
    let services = std::mem::take(&mut *lock(&shared.services));
    for service in services {
        service.stop().await;
    }
    let channels: Vec<Channel> = lock(&shared.peers).values().cloned().collect();
    let drain = shared.channel_config.drain_timeout * 2;
    let closing = channels.iter().map(|c| async move {
        c.close(DisconnectReason::Shutdown).await;
        c.closed().await;
    });
    let _ = tokio::time::timeout(drain, futures::future::join_all(closing)).await;
}

impl NodeHandle {
    /// A handle that does not keep the node's memory alive.
    pub fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.shared))
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The node's TCP transport (for a service that dials from the listen
    /// port: hole punching).
    pub fn tcp(&self) -> &TcpTransport {
        &self.shared.tcp
    }

    /// The addresses the node listens on (bound ports filled in).
    pub fn listen_addrs(&self) -> Vec<PeerAddr> {
        self.shared.own_addrs().to_vec()
    }

    /// Listeners still accepting connections.
    pub fn listeners_up(&self) -> usize {
        self.shared.listeners_up.load(Ordering::Acquire)
    }

    /// The addresses told to peers: the listen addresses, then what the
    /// services contributed (see [`crate::addrs`]).
    pub fn advertised_addrs(&self) -> Vec<PeerAddr> {
        self.shared.addrs.advertised()
    }

    /// Follows [`NodeHandle::advertised_addrs`] as it changes.
    pub fn watch_advertised(&self) -> watch::Receiver<Vec<PeerAddr>> {
        self.shared.addrs.watch()
    }

    /// The advertised addresses each service contributed now, by source.
    pub fn contributed_addrs(&self) -> Vec<(&'static str, Vec<PeerAddr>)> {
        self.shared.addrs.contributions()
    }

    /// A new contribution to the advertised addresses, named `source`
    /// (empty until set); dropping it withdraws its addresses.
    pub fn contribute_addrs(&self, source: &'static str) -> AddrContribution {
        self.shared.addrs.contribute(source)
    }

    /// The connected peers, sorted by PeerId.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = lock(&self.shared.peers)
            .values()
            .map(|c| PeerInfo {
                peer_id: c.remote_peer_id(),
                addr: c.remote_addr().clone(),
                session: c.info().session,
                rtt: c.rtt(),
                protocols: c.info().version.protocols.clone(),
            })
            .collect();
        v.sort_by_key(|p| p.peer_id);
        v
    }

    /// How many peers are connected (what `peers().len()` says, without
    /// building the list).
    pub fn peer_count(&self) -> usize {
        lock(&self.shared.peers).len()
    }

    /// The channel to `peer`, if connected.
    pub fn channel(&self, peer: &PeerId) -> Option<Channel> {
        lock(&self.shared.peers).get(peer).cloned()
    }

    /// Every open channel.
    pub fn channels(&self) -> Vec<Channel> {
        lock(&self.shared.peers).values().cloned().collect()
    }

    /// Dials `addr` with the node's policy ([`crate::dial`]) and returns the
    /// channel. If the peer there is already connected, or another dial is
    /// opening a channel to it, returns that channel.
    pub async fn dial(&self, addr: &PeerAddr, opts: DialOpts) -> Result<Channel, NodeError> {
        crate::session::dial(&self.shared, addr, opts).await
    }

    /// Dials `addr` once for the application ([`DialCause::User`]); see
    /// [`NodeHandle::dial`]. A [`DialAddr`] with a pinned identity
    /// (`tcp/192.0.2.1:4000/p2p/<PeerId>`) fails with
    /// [`HandshakeError::PeerIdMismatch`](knotwork_crypto_handshake::HandshakeError::PeerIdMismatch)
    /// unless that peer answers.
    pub async fn connect(&self, addr: impl Into<DialAddr>) -> Result<Channel, NodeError> {
        let DialAddr { addr, peer } = addr.into();
        let mut opts = DialOpts::new(DialCause::User);
        opts.peer = peer;
        self.dial(&addr, opts).await
    }

    /// Connects to `peer` knowing only its identity: its addresses come
    /// from discovery and from the services' resolvers (the DHT's peer
    /// records); direct ones are tried in order, then relayed ones (which the
    /// NAT service upgrades by hole punching). Concurrent calls for one peer
    /// share one attempt. Fails with [`NodeError::UnknownPeer`] when nobody
    /// knows an address, or [`NodeError::Unreachable`] naming each step.
    pub async fn connect_peer(&self, peer: PeerId) -> Result<Channel, NodeError> {
        crate::resolve::connect_peer(&self.shared, peer).await
    }

    /// Dials `addr` on a fresh connection, runs the handshake far enough to
    /// learn who answers (`expected` must, if given), tells it the
    /// connection was only a probe and closes: no channel. Used to verify
    /// an address (the refinery, dial-backs).
    pub async fn probe(
        &self,
        addr: &PeerAddr,
        expected: Option<PeerId>,
    ) -> Result<PeerId, NodeError> {
        crate::session::probe(&self.shared, addr, expected).await
    }

    /// Runs the pipeline (handshake, version exchange, channel) on a stream
    /// a service opened itself, as a channel of `session`: `Inbound` answers
    /// the handshake, any other kind starts it. A connection of a transport
    /// that authenticates ([`RawConn::of`], e.g. a punched QUIC connection)
    /// skips the Noise handshake. Within the handshake
    /// timeout; no pending-handshake slot is taken (see
    /// [`NodeHandle::accept`] for streams a peer opened).
    pub async fn establish(
        &self,
        stream: impl Into<RawConn>,
        addr: PeerAddr,
        session: SessionKind,
    ) -> Result<Channel, NodeError> {
        crate::session::establish_within(&self.shared, stream.into(), addr, session).await
    }

    /// Accepts a stream a peer opened through a service (a relayed circuit)
    /// as an inbound connection: it takes a pending-handshake slot like a
    /// connection from a listener (evicting the crowded origin's oldest
    /// when all are taken, see [`crate::admission`]), with the first-byte
    /// deadline; the pipeline runs as a task of its own.
    pub fn accept(&self, stream: impl Into<RawConn>, addr: PeerAddr) {
        crate::session::accept(&self.shared, stream.into(), addr);
    }

    /// Runs `job` until it ends or the node shuts down; finished jobs are
    /// reaped. Returns `false` (and drops `job`) once the node is shutting down.
    pub fn spawn<F>(&self, job: F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.shared.jobs.spawn(job)
    }

    /// Node-wide jobs running now.
    pub fn jobs(&self) -> usize {
        self.shared.jobs.len()
    }

    /// Completes when the node starts shutting down.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.shared.shutdown.cancelled()
    }

    /// Whether the node is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// Node events from now on. A receiver that falls more than 256 events
    /// behind gets `RecvError::Lagged`.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// Unified discovery events from now on (see [`crate::discovery`]).
    pub fn discovery_events(&self) -> broadcast::Receiver<crate::discovery::UnifiedEvent> {
        self.shared.discovery.subscribe()
    }

    /// The peers discovery knows now, with their addresses and sources.
    pub fn discovered_peers(&self) -> Vec<crate::discovery::DiscoveredInfo> {
        self.shared.discovery.peers()
    }

    /// The grey and white lists of the host store, most recent first.
    pub fn hosts(&self) -> (Vec<PeerAddr>, Vec<PeerAddr>) {
        let hosts = lock(&self.shared.hosts);
        (hosts.grey(), hosts.white())
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        lock(&self.shared.bans).is_peer_banned(peer, tokio::time::Instant::now().into_std())
    }

    /// Shuts down gracefully: stops accepting and dialing, stops the
    /// services, sends every peer `Disconnect { Shutdown }`, lets queued
    /// frames drain (at most the channel drain timeout) and closes.
    pub async fn shutdown(&self) {
        shutdown(self.shared.clone()).await;
    }
}
