//! The extension API: how a protocol crate (or an application) adds to the
//! node what the built-in protocols add: gossip, tasks, NAT traversal and
//! the DHT are written against exactly this.
//!
//! A [`Service`] is a node-wide part with a lifecycle. When the node is
//! built it gets a [`Setup`]: it registers its per-channel protocols
//! (constructors run on every new channel of the chosen sessions, see
//! [`ProtocolRegistry`]), hooks that see every new channel, the default
//! rate budgets of its message types, transports and [`Dialer`]s, and its
//! metrics. When the listeners are bound it is started with a
//! [`NodeHandle`]: from then on it may dial through the node's policy
//! ([`NodeHandle::dial`]), run the pipeline on streams it opened
//! ([`NodeHandle::establish`], [`NodeHandle::accept`]), spawn owned jobs
//! ([`NodeHandle::spawn`]: stopped with the node, reaped when done),
//! contribute advertised addresses ([`NodeHandle::contribute_addrs`]),
//! follow [`NodeEvent`](crate::NodeEvent)s and read peers and channels.
//! When the node shuts down its jobs are aborted and [`Service::stop`] is
//! awaited before the channels close.
//!
//! # Example: a small service
//! Counts the channels the node opened (a hook on every channel) and, while
//! the node runs, advertises one extra address (a node-wide job holding an
//! address contribution). A fuller service, which dials peers through the
//! node's policy, is `examples/presence.rs`.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use knotwork_core::{Keypair, MemoryTransport, PeerAddr};
//! use knotwork_node::{Node, NodeHandle, Service, Setup};
//!
//! #[derive(Clone, Default)]
//! struct Census(Arc<AtomicUsize>);
//!
//! impl Service for Census {
//!     fn setup(&self, setup: &mut Setup<'_>) {
//!         let seen = self.0.clone();
//!         setup.on_channel(move |_channel| {
//!             seen.fetch_add(1, Ordering::Relaxed);
//!         });
//!     }
//!
//!     fn start(&self, node: &NodeHandle) {
//!         let handle = node.clone();
//!         node.spawn(async move {
//!             let extra = handle.contribute_addrs("census");
//!             extra.add(PeerAddr::Mem(99));
//!             // Advertised until the node stops (which aborts this job).
//!             handle.stopping().await;
//!         });
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = MemoryTransport::new();
//! let census = Census::default();
//! let a = Node::builder(Keypair::generate()?)
//!     .transport(net.clone())
//!     .listen("mem/1".parse()?)
//!     .service(census.clone())
//!     .start()
//!     .await?;
//! let b = Node::builder(Keypair::generate()?).transport(net).start().await?;
//! let channel = b.connect(&PeerAddr::Mem(1)).await?;
//! tokio::task::yield_now().await;
//! assert_eq!(census.0.load(Ordering::Relaxed), 1);
//! // b was told a's listen address and the one the service contributes.
//! let told = channel.info().version.parsed_listen_addrs()?;
//! assert_eq!(told, vec![PeerAddr::Mem(1), PeerAddr::Mem(99)]);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use knotwork_core::{Keypair, PeerAddr, Transport};
use knotwork_wire::Message;

use crate::builder::NodeConfig;
use crate::channel::Channel;
use crate::error::NodeError;
use crate::meter::RateBudget;
use crate::metrics::Metrics;
use crate::node::NodeHandle;
use crate::registry::{ProtocolRegistry, Sessions};
use crate::resolve::PeerResolver;
use crate::transport::{AnyTransport, BoxStream};

/// A node-wide part with a lifecycle; see the module docs. Added with
/// [`NodeBuilder::service`](crate::NodeBuilder::service).
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// Called once while the node is built, before anything runs.
    fn setup(&self, setup: &mut Setup<'_>) {
        let _ = setup;
    }

    /// Called once after the listeners are bound: spawn jobs on `node`.
    /// Keep a [`WeakNode`](crate::WeakNode), not the handle, in state the
    /// node itself holds.
    fn start(&self, node: &NodeHandle) {
        let _ = node;
    }

    /// Awaited once when the node shuts down, after its jobs were aborted
    /// and before its channels close (delete a port mapping, say goodbye).
    async fn stop(&self) {}
}

/// Opens raw streams to addresses the node's transports do not handle (a
/// relayed address: a circuit through a channel to a relay). Registered
/// with [`Setup::dialer`]; [`NodeHandle::dial`] runs the pipeline on what
/// it returns.
#[async_trait]
pub trait Dialer: Send + Sync + 'static {
    /// Whether this dialer opens streams to `addr`.
    fn handles(&self, addr: &PeerAddr) -> bool;

    /// Opens a raw stream to `addr`.
    async fn dial(&self, node: &NodeHandle, addr: &PeerAddr) -> Result<BoxStream, NodeError>;
}

/// What a [`Service`] may register while the node is built.
pub struct Setup<'a> {
    pub(crate) keypair: &'a Keypair,
    pub(crate) config: &'a NodeConfig,
    pub(crate) metrics: &'a Metrics,
    pub(crate) registry: &'a mut ProtocolRegistry,
    pub(crate) budgets: &'a mut HashMap<u32, RateBudget>,
    pub(crate) transports: &'a mut Vec<Box<dyn AnyTransport>>,
    pub(crate) dialers: &'a mut Vec<Arc<dyn Dialer>>,
    pub(crate) resolvers: &'a mut Vec<Arc<dyn PeerResolver>>,
    pub(crate) reuse_tcp_port: &'a mut bool,
}

impl std::fmt::Debug for Setup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("peer_id", &self.keypair.peer_id())
            .finish_non_exhaustive()
    }
}

impl Setup<'_> {
    /// The node's identity (to sign what the service publishes).
    pub fn keypair(&self) -> &Keypair {
        self.keypair
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        self.config
    }

    /// The node's metrics: register the service's own families here.
    pub fn metrics(&self) -> &Metrics {
        self.metrics
    }

    /// Runs protocol `name` on every channel of `sessions`; see
    /// [`ProtocolRegistry::register`]. `name` is announced to peers in the
    /// version exchange.
    pub fn protocol<C, F>(&mut self, name: &'static str, sessions: Sessions, constructor: C)
    where
        C: Fn(&Channel) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.registry.register(name, sessions, constructor);
    }

    /// Calls `hook` with every new channel, before its protocols start
    /// (nothing is announced to peers).
    pub fn on_channel(&mut self, hook: impl Fn(&Channel) + Send + Sync + 'static) {
        self.registry.on_channel(hook);
    }

    /// The rate budget of message type `M` unless the user set one with
    /// [`NodeBuilder::budget`](crate::NodeBuilder::budget).
    pub fn default_budget<M: Message>(&mut self, budget: RateBudget) {
        self.budgets.insert(M::ID, budget);
    }

    /// Adds a transport, tried after the user's and before TCP.
    pub fn transport<T: Transport + 'static>(&mut self, transport: T) {
        self.transports.push(Box::new(transport));
    }

    /// Adds a dialer for addresses no transport handles.
    pub fn dialer(&mut self, dialer: impl Dialer) {
        self.dialers.push(Arc::new(dialer));
    }

    /// Adds a resolver of peers' addresses by identity, asked by
    /// [`NodeHandle::connect_peer`] after discovery.
    pub fn resolver(&mut self, resolver: impl PeerResolver) {
        self.resolvers.push(Arc::new(resolver));
    }

    /// Binds the TCP listeners with port reuse, so the service can dial
    /// from the listen port ([`NodeHandle::tcp`]; hole punching).
    pub fn reuse_tcp_port(&mut self) {
        *self.reuse_tcp_port = true;
    }
}
