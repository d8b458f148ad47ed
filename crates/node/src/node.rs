//! [`Node`]: the runtime that owns listeners, channels, the host store, the
//! ban list and the background tasks, and its [`NodeBuilder`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use knotwork_core::{Keypair, PeerAddr, PeerId, Transport};
use knotwork_crypto_handshake::SecureConfig;
use knotwork_wire::Message;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff::BackoffConfig;
use crate::channel::{Channel, ChannelConfig};
use crate::error::{CloseReason, DisconnectReason, NodeError};
use crate::hosts::HostStore;
use crate::meter::{BanList, RateBudget};
use crate::protocol::{address, ping, relay};
use crate::registry::{ProtocolRegistry, SessionKind, Sessions};
use crate::transport::AnyTransport;

/// Settings of a [`Node`]. The defaults suit a small public node; tests
/// shrink the timeouts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Settings of every channel (queues, request timeout, metering).
    pub channel: ChannelConfig,
    /// Ping interval and timeout.
    pub ping: ping::PingConfig,
    /// Inbound channels at most; the excess is refused with
    /// [`DisconnectReason::TooManyPeers`].
    pub max_inbound: usize,
    /// Inbound connections from one IP address at most; the excess is
    /// refused with [`DisconnectReason::TooManyFromIp`].
    pub max_per_ip: usize,
    /// Inbound connections in the handshake at once at most; the excess is
    /// dropped unanswered. A connection over [`NodeConfig::max_per_ip`]
    /// only gets a handshake slot while half of them are free.
    pub max_pending_handshakes: usize,
    /// Time for the handshake and version exchange, both directions; a
    /// silent or slow peer is cut after it.
    pub handshake_timeout: Duration,
    /// Time for a transport dial.
    pub dial_timeout: Duration,
    /// Outbound channels kept open to hosts from the white list.
    pub outbound_slots: usize,
    /// How often the refinery probes a grey host and outbound slots are refilled.
    pub maintenance_interval: Duration,
    /// Entries per host list (grey, white, black).
    pub host_capacity: usize,
    /// Reconnect schedule for manual and seed peers.
    pub backoff: BackoffConfig,
    /// NAT traversal: relay service, observed addresses, hole punching.
    pub nat: crate::nat::NatConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            channel: ChannelConfig::default(),
            ping: ping::PingConfig::default(),
            max_inbound: 64,
            max_per_ip: 8,
            max_pending_handshakes: 32,
            handshake_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(10),
            outbound_slots: 8,
            maintenance_interval: Duration::from_secs(5),
            host_capacity: 1024,
            backoff: BackoffConfig::default(),
            nat: crate::nat::NatConfig::default(),
        }
    }
}

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
    /// A relay granted this node a reservation; `addr` reaches us through it.
    RelayReserved {
        /// The relay.
        relay: PeerId,
        /// Our relayed address, now advertised.
        addr: PeerAddr,
    },
    /// The relayed address is no longer advertised: the relay channel
    /// closed, the relay refused a renewal, or the node turned public (see
    /// [`crate::nat`]); the reservation is no longer renewed.
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
    /// Peers' dial-backs changed the verdict on our reachability (see
    /// [`crate::protocol::reachability`]).
    ReachabilityChanged {
        /// The new verdict.
        reachability: crate::nat::Reachability,
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

pub(crate) struct Shared {
    pub(crate) peer_id: PeerId,
    pub(crate) secure: SecureConfig,
    pub(crate) config: NodeConfig,
    pub(crate) channel_config: Arc<ChannelConfig>,
    pub(crate) registry: ProtocolRegistry,
    pub(crate) transports: Vec<Box<dyn AnyTransport>>,
    pub(crate) peers: Mutex<HashMap<PeerId, Channel>>,
    pub(crate) hosts: Arc<Mutex<HostStore>>,
    pub(crate) bans: Mutex<BanList>,
    pub(crate) own_addrs: Arc<OnceLock<Vec<PeerAddr>>>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) pending_handshakes: Arc<Semaphore>,
    pub(crate) per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) dialing: Mutex<HashSet<PeerAddr>>,
    /// Peers an outbound pipeline has authenticated and not yet put in the
    /// peer table (see `session::Establishing`); `established` wakes those
    /// waiting for one to finish.
    pub(crate) establishing: Mutex<HashSet<PeerId>>,
    pub(crate) established: tokio::sync::Notify,
    pub(crate) tasks: Mutex<JoinSet<()>>,
    pub(crate) apps: crate::apps::Apps,
    pub(crate) discovery: crate::discovery::UnifiedDiscovery,
    pub(crate) nat: Arc<crate::nat::Nat>,
    #[cfg(feature = "upnp")]
    pub(crate) upnp: crate::upnp::Upnp,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn own_addrs(&self) -> &[PeerAddr] {
        self.own_addrs.get().map(Vec::as_slice).unwrap_or_default()
    }

    /// The addresses told to peers: the bound ones, then confirmed external
    /// and relayed ones, then the UPnP-mapped one.
    pub(crate) fn advertised_addrs(&self) -> Vec<PeerAddr> {
        let mut addrs = self.own_addrs().to_vec();
        addrs.extend(self.nat.external());
        #[cfg(feature = "upnp")]
        addrs.extend(self.upnp.external());
        addrs
    }

    pub(crate) fn emit(&self, event: NodeEvent) {
        // No receiver is fine; a lagging receiver sees `Lagged`.
        let _ = self.events.send(event);
    }

    pub(crate) fn spawn_task<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        lock(&self.tasks).spawn(task);
    }
}

/// Builds a [`Node`]: `Node::builder(keypair).listen(addr).start().await`.
pub struct NodeBuilder {
    keypair: Keypair,
    listen: Vec<PeerAddr>,
    seeds: Vec<PeerAddr>,
    manual: Vec<PeerAddr>,
    relays: Vec<PeerAddr>,
    config: NodeConfig,
    registry: ProtocolRegistry,
    budgets: HashMap<u32, RateBudget>,
    transports: Vec<Box<dyn AnyTransport>>,
    apps: Option<crate::apps::AppsConfig>,
    discovery: Vec<Arc<dyn knotwork_core::Discovery>>,
    discovery_config: crate::discovery::DiscoveryConfig,
    #[cfg(feature = "upnp")]
    upnp: Option<crate::upnp::UpnpConfig>,
}

impl NodeBuilder {
    /// Listens on `addr` (`tcp/0.0.0.0:0`, `mem/0`, …) when started.
    pub fn listen(mut self, addr: PeerAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Keeps a connection to seed `addr`, reconnecting with backoff.
    pub fn seed(mut self, addr: PeerAddr) -> Self {
        self.seeds.push(addr);
        self
    }

    /// Keeps a connection to peer `addr`, reconnecting with backoff.
    pub fn peer(mut self, addr: PeerAddr) -> Self {
        self.manual.push(addr);
        self
    }

    /// Keeps a connection to the relay at `addr` and a reservation on it,
    /// advertising the relayed address (see [`crate::nat`]).
    pub fn relay(mut self, addr: PeerAddr) -> Self {
        self.relays.push(addr);
        self
    }

    /// Replaces the settings.
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs protocol `name` on every channel of `sessions`; see
    /// [`ProtocolRegistry::register`].
    pub fn protocol<C, F>(mut self, name: &'static str, sessions: Sessions, constructor: C) -> Self
    where
        C: Fn(&Channel) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.registry.register(name, sessions, constructor);
        self
    }

    /// Sets the rate budget of message type `M` (the default is
    /// [`ChannelConfig::default_budget`]).
    pub fn budget<M: Message>(mut self, budget: RateBudget) -> Self {
        self.budgets.insert(M::ID, budget);
        self
    }

    /// Adds a transport; addresses it does not support go to the next one.
    /// TCP is always available after the ones added here.
    pub fn transport<T: Transport + 'static>(mut self, transport: T) -> Self {
        self.transports.push(Box::new(transport));
        self
    }

    /// Enables the application protocols (tasks, resources, health, gossip) with `apps`.
    pub fn apps(mut self, apps: crate::apps::AppsConfig) -> Self {
        self.apps = Some(apps);
        self
    }

    /// Runs discovery source `source` (mDNS, DHT, …) with the others; what
    /// they find is merged by peer, put in the host store and dialed. See
    /// [`crate::discovery`].
    pub fn discovery(mut self, source: impl knotwork_core::Discovery + 'static) -> Self {
        self.discovery.push(Arc::new(source));
        self
    }

    /// Replaces the discovery settings.
    pub fn discovery_config(mut self, config: crate::discovery::DiscoveryConfig) -> Self {
        self.discovery_config = config;
        self
    }

    /// Maps the first IPv4 TCP listen port on the LAN's UPnP gateway and
    /// advertises the external address (see [`crate::upnp`]).
    #[cfg(feature = "upnp")]
    pub fn upnp(mut self, config: crate::upnp::UpnpConfig) -> Self {
        self.upnp = Some(config);
        self
    }

    /// Binds the listeners and starts the node.
    pub async fn start(self) -> Result<Node, NodeError> {
        let Self {
            keypair,
            listen,
            seeds,
            manual,
            relays,
            config,
            mut registry,
            mut budgets,
            mut transports,
            apps,
            discovery,
            discovery_config,
            #[cfg(feature = "upnp")]
            upnp,
        } = self;
        let apps = crate::apps::Apps::new(&keypair, apps, &mut registry, &mut budgets);
        // No TCP keepalive: the ping protocol already probes every channel
        // (and keeps NAT mappings warm) far more often, so its three
        // setsockopt calls per connection would buy nothing.
        let tcp = knotwork_transport_tcp::TcpTransport::new(
            knotwork_transport_tcp::TcpConfig::default()
                .with_keepalive(None)
                .with_dial_timeout(config.dial_timeout)
                .with_port_reuse(config.nat.holepunch),
        );
        transports.push(Box::new(tcp.clone()));
        let mut channel_config = config.channel.clone();
        channel_config.budgets.insert(ping::Ping::ID, ping::BUDGET);
        channel_config.budgets.insert(ping::Pong::ID, ping::BUDGET);
        channel_config
            .budgets
            .insert(address::GetAddrs::ID, address::BUDGET);
        for id in [relay::ToRelay::ID, relay::FromRelay::ID] {
            channel_config.budgets.insert(id, relay::DATA_BUDGET);
        }
        for id in [relay::Reserve::ID, relay::Connect::ID, relay::Incoming::ID] {
            channel_config.budgets.insert(id, relay::CONTROL_BUDGET);
        }
        channel_config.budgets.extend(budgets);
        channel_config.metrics = Some(apps.metrics.clone());

        let hosts = Arc::new(Mutex::new(HostStore::new(config.host_capacity)));
        let own_addrs = Arc::new(OnceLock::new());
        let ping_config = config.ping;
        registry.register("knot/ping", Sessions::ALL, move |ch: &Channel| {
            ping::protocol(ch, ping_config)
        });
        let (h, own) = (hosts.clone(), own_addrs.clone());
        registry.register("knot/address", Sessions::ALL, move |ch: &Channel| {
            let own = Arc::new(own.get().cloned().unwrap_or_default());
            let ask = ch.info().session != SessionKind::Inbound;
            address::protocol(ch, h.clone(), own, ask)
        });

        let nat = crate::nat::Nat::new(config.nat.clone(), &apps.metrics, tcp);
        nat.register(&mut registry);
        let discovery =
            crate::discovery::UnifiedDiscovery::new(keypair.peer_id(), discovery_config, discovery);
        let shared = Arc::new(Shared {
            discovery,
            nat,
            #[cfg(feature = "upnp")]
            upnp: crate::upnp::Upnp::new(upnp),
            peer_id: keypair.peer_id(),
            secure: SecureConfig::new(keypair)?.with_timeout(config.handshake_timeout),
            channel_config: Arc::new(channel_config),
            registry,
            transports,
            peers: Mutex::new(HashMap::new()),
            hosts,
            bans: Mutex::new(BanList::default()),
            own_addrs,
            events: broadcast::channel(256).0,
            shutdown: CancellationToken::new(),
            pending_handshakes: Arc::new(Semaphore::new(config.max_pending_handshakes.max(1))),
            per_ip: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashSet::new()),
            establishing: Mutex::new(HashSet::new()),
            established: tokio::sync::Notify::new(),
            tasks: Mutex::new(JoinSet::new()),
            apps,
            config,
        });
        crate::nat::Nat::bind(&shared);

        let mut bound = Vec::new();
        let mut listeners = Vec::new();
        for addr in &listen {
            let listener = crate::session::listen(&shared, addr).await?;
            bound.push(listener.local_addr());
            listeners.push(listener);
        }
        let _ = shared.own_addrs.set(bound);
        for listener in listeners {
            shared.spawn_task(crate::session::accept_loop(shared.clone(), listener));
        }
        shared.spawn_task(crate::session::maintenance(shared.clone()));
        crate::apps::Apps::start(&shared);
        crate::discovery::start(&shared);
        crate::nat::Nat::start(&shared, relays);
        #[cfg(feature = "upnp")]
        crate::upnp::Upnp::start(&shared);
        for (addrs, kind) in [(seeds, SessionKind::Seed), (manual, SessionKind::Manual)] {
            for addr in addrs {
                shared.spawn_task(crate::session::keep_connected(shared.clone(), addr, kind));
            }
        }
        Ok(Node {
            _guard: Arc::new(ShutdownOnDrop(shared.clone())),
            shared,
        })
    }
}

/// A running node; cheap to clone. See the crate docs. When the last clone
/// is dropped the node shuts down as by [`Node::shutdown`] (in the
/// background, if a tokio runtime is still running).
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<Shared>,
    _guard: Arc<ShutdownOnDrop>,
}

/// Shuts the node down when the last [`Node`] handle goes away. The node's
/// own tasks hold `Shared`, never this guard.
struct ShutdownOnDrop(Arc<Shared>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.shutdown.cancel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(shutdown(self.0.clone()));
        }
    }
}

/// Stops accepting and dialing, closes every channel with
/// `Disconnect { Shutdown }` and waits for them to drain.
async fn shutdown(shared: Arc<Shared>) {
    shared.shutdown.cancel();
    let tasks = std::mem::take(&mut *lock(&shared.tasks));
    drop(tasks);
    #[cfg(feature = "upnp")]
    shared.upnp.release(&shared.apps.metrics).await;
    let channels: Vec<Channel> = lock(&shared.peers).values().cloned().collect();
    let drain = shared.channel_config.drain_timeout * 2;
    let closing = channels.iter().map(|c| async move {
        c.close(DisconnectReason::Shutdown).await;
        c.closed().await;
    });
    let _ = tokio::time::timeout(drain, futures::future::join_all(closing)).await;
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.shared.peer_id)
            .field("listen", &self.listen_addrs())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts building a node with identity `keypair`.
    pub fn builder(keypair: Keypair) -> NodeBuilder {
        NodeBuilder {
            keypair,
            listen: Vec::new(),
            seeds: Vec::new(),
            manual: Vec::new(),
            relays: Vec::new(),
            config: NodeConfig::default(),
            registry: ProtocolRegistry::default(),
            budgets: HashMap::new(),
            transports: Vec::new(),
            apps: None,
            discovery: Vec::new(),
            discovery_config: crate::discovery::DiscoveryConfig::default(),
            #[cfg(feature = "upnp")]
            upnp: None,
        }
    }

    /// Task distribution (running once enabled with [`NodeBuilder::apps`]).
    pub fn tasks(&self) -> &crate::protocol::task::Tasks {
        &self.shared.apps.tasks
    }

    /// Resource reports (running once enabled with [`NodeBuilder::apps`]).
    pub fn resources(&self) -> &crate::protocol::resource::Resources {
        &self.shared.apps.resources
    }

    /// Health checks of this node's parts; peers' health once enabled
    /// with [`NodeBuilder::apps`].
    pub fn health(&self) -> &crate::protocol::health::Health {
        &self.shared.apps.health
    }

    /// Gossip pub/sub (running once enabled with [`NodeBuilder::apps`]).
    pub fn gossip(&self) -> &crate::protocol::gossip::Gossip {
        &self.shared.apps.gossip
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.apps.metrics
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The addresses the node listens on (bound ports filled in).
    pub fn listen_addrs(&self) -> Vec<PeerAddr> {
        self.shared.own_addrs().to_vec()
    }

    /// The UPnP mapping held now (see [`NodeBuilder::upnp`]).
    #[cfg(feature = "upnp")]
    pub fn upnp_mapping(&self) -> Option<crate::upnp::UpnpMapping> {
        self.shared.upnp.mapping()
    }

    /// Whether peers can dial this node, as their dial-backs said last
    /// (see [`crate::protocol::reachability`]).
    pub fn reachability(&self) -> crate::nat::Reachability {
        self.shared.nat.reachability.borrow().clone()
    }

    /// The connected peers.
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

    /// The channel to `peer`, if connected.
    pub fn channel(&self, peer: &PeerId) -> Option<Channel> {
        lock(&self.shared.peers).get(peer).cloned()
    }

    /// Dials `addr` once (no reconnect) and returns the channel. If the peer
    /// there is already connected, or another dial of ours is opening a
    /// channel to it, returns that channel.
    pub async fn connect(&self, addr: &PeerAddr) -> Result<Channel, NodeError> {
        match crate::session::connect(&self.shared, addr, SessionKind::Manual).await {
            Err(NodeError::AlreadyConnected(peer)) => {
                crate::session::existing_channel(&self.shared, peer).await
            }
            other => other,
        }
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

    /// Shuts down gracefully: stops accepting and dialing, sends every peer
    /// `Disconnect { Shutdown }`, lets queued frames drain (at most the
    /// channel drain timeout) and closes.
    pub async fn shutdown(&self) {
        shutdown(self.shared.clone()).await;
    }
}
