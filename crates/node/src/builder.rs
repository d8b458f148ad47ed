//! [`NodeBuilder`] and [`NodeConfig`]: how a node is put together and
//! started.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use knotwork_core::{DialAddr, Keypair, PeerAddr, Transport};
use knotwork_crypto_handshake::SecureConfig;
use knotwork_wire::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::addrs::AddrBook;
use crate::admission::{Pending, StartBudget};
use crate::backoff::BackoffConfig;
use crate::channel::{Channel, ChannelConfig};
use crate::dial::{DialCause, DialGate};
use crate::error::NodeError;
use crate::hosts::HostStore;
use crate::jobs::Jobs;
use crate::meter::{BanList, RateBudget};
use crate::metrics::Metrics;
use crate::node::{Node, NodeHandle, PendingSlots, Shared, ShutdownOnDrop};
use crate::protocol::{address, ping};
use crate::registry::{ProtocolRegistry, SessionKind, Sessions};
use crate::resolve::{Attempts, PeerResolver};
use crate::service::{Dialer, Service, Setup};
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
    /// [`DisconnectReason::TooManyPeers`](crate::DisconnectReason::TooManyPeers).
    pub max_inbound: usize,
    /// Inbound connections from one host (an IPv4 address, an IPv6 /64) at
    /// most; the excess is refused with
    /// [`DisconnectReason::TooManyFromIp`](crate::DisconnectReason::TooManyFromIp).
    pub max_per_ip: usize,
    /// Inbound connections from one subnet (an IPv4 /24, an IPv6 /48) at
    /// most; the excess is refused the same way.
    pub max_per_subnet: usize,
    /// Inbound connections in the handshake at once at most. When all slots
    /// are taken a new connection evicts the oldest silent one of the
    /// origin holding the most (see [`crate::admission`]).
    pub max_pending_handshakes: usize,
    /// Time an inbound connection has to send its first byte; a silent one
    /// is cut (a dialer starts the handshake at once).
    pub first_byte_timeout: Duration,
    /// Handshake starts each host (an IPv4 address, an IPv6 /64) may make;
    /// over budget, a connection is dropped before any crypto.
    pub handshake_starts: RateBudget,
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
    /// Entries of each kind (peers, hosts, addresses) the ban list holds;
    /// past it, the ban that ends soonest is dropped.
    pub max_bans: usize,
    /// Identities whose Noise static keys are remembered (to dial them
    /// with IK, and to skip re-verifying their identity signature).
    pub known_peers: usize,
    /// Reconnect schedule for manual and seed peers.
    pub backoff: BackoffConfig,
    /// Dials each budgeted [`DialCause`] (discovery, each service) may
    /// start: a token bucket per cause (see [`crate::dial`]).
    pub dial_budget: RateBudget,
    /// Address schemes in the order a peer's addresses are tried when the
    /// node knows several (a discovered peer): by default QUIC, then TCP,
    /// then WebSocket; schemes not listed come after, in the order heard.
    pub dial_preference: Vec<String>,
}

impl NodeConfig {
    /// Sorts `addrs` by [`NodeConfig::dial_preference`], keeping the order
    /// of addresses of one scheme.
    pub fn dial_order(&self, addrs: &mut [PeerAddr]) {
        addrs.sort_by_key(|a| self.scheme_rank(a));
    }

    /// Where `addr`'s scheme stands in
    /// [`dial_preference`](Self::dial_preference) (unlisted: after all).
    pub fn scheme_rank(&self, addr: &PeerAddr) -> usize {
        self.dial_preference
            .iter()
            .position(|s| s == addr.scheme())
            .unwrap_or(self.dial_preference.len())
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            channel: ChannelConfig::default(),
            ping: ping::PingConfig::default(),
            max_inbound: 64,
            max_per_ip: 8,
            max_per_subnet: 32,
            max_pending_handshakes: 256,
            first_byte_timeout: Duration::from_secs(2),
            handshake_starts: RateBudget::new(10.0, 50),
            handshake_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(10),
            outbound_slots: 8,
            maintenance_interval: Duration::from_secs(5),
            host_capacity: 1024,
            max_bans: crate::meter::DEFAULT_MAX_BANS,
            known_peers: knotwork_crypto_handshake::config::DEFAULT_KNOWN_PEERS,
            backoff: BackoffConfig::default(),
            dial_budget: RateBudget::new(10.0, 50),
            dial_preference: ["quic", "tcp", "ws"].map(String::from).to_vec(),
        }
    }
}

/// Builds a [`Node`]: `Node::builder(keypair).listen(addr).start().await`.
pub struct NodeBuilder {
    keypair: Keypair,
    listen: Vec<PeerAddr>,
    seeds: Vec<DialAddr>,
    manual: Vec<DialAddr>,
    config: NodeConfig,
    registry: ProtocolRegistry,
    budgets: HashMap<u32, RateBudget>,
    transports: Vec<Box<dyn AnyTransport>>,
    services: Vec<Arc<dyn Service>>,
    discovery: Vec<Arc<dyn knotwork_core::Discovery>>,
    discovery_config: crate::discovery::DiscoveryConfig,
}

impl Node {
    /// Starts building a node with identity `keypair`.
    pub fn builder(keypair: Keypair) -> NodeBuilder {
        NodeBuilder {
            keypair,
            listen: Vec::new(),
            seeds: Vec::new(),
            manual: Vec::new(),
            config: NodeConfig::default(),
            registry: ProtocolRegistry::default(),
            budgets: HashMap::new(),
            transports: Vec::new(),
            services: Vec::new(),
            discovery: Vec::new(),
            discovery_config: crate::discovery::DiscoveryConfig::default(),
        }
    }
}

impl NodeBuilder {
    /// Listens on `addr` (`tcp/0.0.0.0:0`, `mem/0`, …) when started.
    pub fn listen(mut self, addr: PeerAddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Keeps a connection to seed `addr`, reconnecting with backoff. With a
    /// pinned identity (`…/p2p/<PeerId>`, a [`DialAddr`]) only that peer is
    /// accepted there (review finding M13).
    pub fn seed(mut self, addr: impl Into<DialAddr>) -> Self {
        self.seeds.push(addr.into());
        self
    }

    /// Keeps a connection to peer `addr`, reconnecting with backoff; pinned
    /// like [`NodeBuilder::seed`].
    pub fn peer(mut self, addr: impl Into<DialAddr>) -> Self {
        self.manual.push(addr.into());
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
    /// [`ChannelConfig::default_budget`]); it wins over a service's.
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

    /// Adds a node-wide service (see [`Service`]): it is set up when the
    /// node is started, started once the listeners are bound, and stopped
    /// when the node shuts down.
    pub fn service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
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

    /// Sets up the services, binds the listeners and starts the node.
    pub async fn start(self) -> Result<Node, NodeError> {
        let Self {
            keypair,
            listen,
            seeds,
            manual,
            config,
            mut registry,
            budgets,
            mut transports,
            services,
            discovery,
            discovery_config,
        } = self;
        let metrics = Metrics::new();
        let mut defaults: HashMap<u32, RateBudget> = HashMap::new();
        defaults.insert(ping::Ping::ID, ping::BUDGET);
        defaults.insert(ping::Pong::ID, ping::BUDGET);
        defaults.insert(address::GetAddrs::ID, address::BUDGET);
        let mut dialers: Vec<Arc<dyn Dialer>> = Vec::new();
        let mut resolvers: Vec<Arc<dyn PeerResolver>> = Vec::new();
        let mut reuse_tcp_port = false;
        for service in &services {
            let mut setup = Setup {
                keypair: &keypair,
                config: &config,
                metrics: &metrics,
                registry: &mut registry,
                budgets: &mut defaults,
                transports: &mut transports,
                dialers: &mut dialers,
                resolvers: &mut resolvers,
                reuse_tcp_port: &mut reuse_tcp_port,
            };
            service.setup(&mut setup);
        }
        // No TCP keepalive: the ping protocol already probes every channel
        // (and keeps NAT mappings warm) far more often, so its three
        // setsockopt calls per connection would buy nothing.
        let tcp = knotwork_transport_tcp::TcpTransport::new(
            knotwork_transport_tcp::TcpConfig::default()
                .with_keepalive(None)
                .with_dial_timeout(config.dial_timeout)
                .with_port_reuse(reuse_tcp_port),
        );
        transports.push(Box::new(tcp.clone()));
        let mut channel_config = config.channel.clone();
        for (id, budget) in defaults {
            channel_config.budgets.entry(id).or_insert(budget);
        }
        channel_config.budgets.extend(budgets);
        channel_config.metrics = Some(metrics.clone());

        let hosts = Arc::new(Mutex::new(HostStore::new(config.host_capacity)));
        let addrs = AddrBook::new();
        let ping_config = config.ping;
        registry.register("knot/ping", Sessions::ALL, move |ch: &Channel| {
            ping::protocol(ch, ping_config)
        });
        let (h, book) = (hosts.clone(), addrs.clone());
        registry.register("knot/address", Sessions::ALL, move |ch: &Channel| {
            let own = Arc::new(book.listen().to_vec());
            let ask = ch.info().session != SessionKind::Inbound;
            address::protocol(ch, h.clone(), own, ask)
        });

        let discovery =
            crate::discovery::UnifiedDiscovery::new(keypair.peer_id(), discovery_config, discovery);
        let shared = Arc::new(Shared {
            discovery,
            peer_id: keypair.peer_id(),
            secure: SecureConfig::new(keypair)?
                .with_timeout(config.handshake_timeout)
                .with_known_capacity(config.known_peers),
            channel_config: Arc::new(channel_config),
            registry,
            transports,
            dialers,
            resolvers,
            attempts: Mutex::new(Attempts::default()),
            tcp,
            peers: Mutex::new(HashMap::new()),
            hosts,
            bans: Mutex::new(BanList::new(config.max_bans)),
            addrs,
            events: broadcast::channel(256).0,
            shutdown: CancellationToken::new(),
            pending: Mutex::new(PendingSlots {
                table: Pending::new(config.max_pending_handshakes),
                cuts: HashMap::new(),
            }),
            starts: Mutex::new(StartBudget::new(config.handshake_starts)),
            per_ip: Mutex::new(HashMap::new()),
            dials: Mutex::new(DialGate::new(config.dial_budget)),
            establishing: Mutex::new(HashSet::new()),
            established: tokio::sync::Notify::new(),
            jobs: Jobs::default(),
            services: Mutex::new(services.clone()),
            metrics,
            listeners_up: Arc::new(AtomicUsize::new(0)),
            config,
        });

        let mut bound = Vec::new();
        let mut listeners = Vec::new();
        for addr in &listen {
            let listener = crate::session::listen(&shared, addr).await?;
            bound.push(listener.local_addr());
            listeners.push(listener);
        }
        shared.addrs.set_listen(bound);
        for listener in listeners {
            shared.spawn_task(crate::session::accept_loop(shared.clone(), listener));
        }
        shared.spawn_task(crate::maintain::maintenance(shared.clone()));
        crate::discovery::start(&shared);
        let handle = NodeHandle {
            shared: shared.clone(),
        };
        for service in &services {
            service.start(&handle);
        }
        for (addrs, cause) in [(seeds, DialCause::Seed), (manual, DialCause::User)] {
            for addr in addrs {
                shared.spawn_task(crate::maintain::keep_connected(shared.clone(), addr, cause));
            }
        }
        Ok(Node {
            handle,
            _guard: Arc::new(ShutdownOnDrop(shared)),
        })
    }
}
