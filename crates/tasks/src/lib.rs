//! The application protocols a node can enable with
//! [`NodeBuilder::apps`](crate::NodeBuilder::apps): tasks, resources, health
//! and gossip (and the node's metrics, which every node keeps).
//!
//! Their handles always exist ([`crate::Node::tasks`], …) so code can hold
//! them unconditionally; without [`AppsConfig`] the protocols are not
//! registered, no peer runs them with us, and the handles have no peers.
//!
//! # Example: a task on a peer, then a gossip message
//! ```
//! use knotwork_core::{Keypair, MemoryTransport};
//! use knotwork_node::protocol::task::{Placement, Task, TaskOutcome};
//! use knotwork_node::{AppsConfig, Node};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = MemoryTransport::new();
//! let worker = Node::builder(Keypair::generate()?)
//!     .transport(net.clone())
//!     .listen("mem/0".parse()?)
//!     .apps(AppsConfig::default())
//!     .start()
//!     .await?;
//! worker.tasks().register("upper", |input: Vec<u8>| async move {
//!     Ok(input.to_ascii_uppercase())
//! });
//! let mut news = worker.gossip().subscribe("news");
//!
//! let boss = Node::builder(Keypair::generate()?)
//!     .transport(net)
//!     .apps(AppsConfig::default())
//!     .start()
//!     .await?;
//! boss.connect(&worker.listen_addrs()[0]).await?;
//! while boss.tasks().peers().is_empty() || boss.gossip().peers().is_empty() {
//!     tokio::task::yield_now().await;
//! }
//! let mut results = boss.tasks().results();
//! boss.tasks().submit(Task::new("upper", b"knot".to_vec()), Placement::BestByResources)?;
//! let result = results.recv().await.ok_or("no result")?;
//! assert_eq!(result.outcome, TaskOutcome::Done(b"KNOT".to_vec()));
//! assert_eq!(result.worker, Some(worker.peer_id()));
//!
//! boss.gossip().publish("news", b"hello".to_vec()).await?;
//! assert_eq!(news.recv().await.ok_or("no message")?.data, b"hello");
//! boss.shutdown().await;
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use knotwork_core::Keypair;
use knotwork_wire::Message;

use crate::channel::Channel;
use crate::meter::RateBudget;
use crate::metrics::Metrics;
use crate::node::Shared;
use crate::protocol::gossip::{self, Gossip, GossipConfig, GossipMessage};
use crate::protocol::health::{self, Health, HealthConfig, HealthQuery};
use crate::protocol::resource::{self, ResourceConfig, ResourceReport, Resources};
use crate::protocol::task::{TaskConfig, Tasks};
use crate::registry::{ProtocolRegistry, Sessions};

/// Settings of the application protocols; `AppsConfig::default()` enables
/// all of them with their defaults.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct AppsConfig {
    /// Task distribution.
    pub tasks: TaskConfig,
    /// Resource reports.
    pub resources: ResourceConfig,
    /// Health checks.
    pub health: HealthConfig,
    /// Gossip pub/sub.
    pub gossip: GossipConfig,
}

/// The handles of the application protocols, kept by the node.
#[derive(Clone, Debug)]
pub(crate) struct Apps {
    enabled: bool,
    pub(crate) tasks: Tasks,
    pub(crate) resources: Resources,
    pub(crate) health: Health,
    pub(crate) gossip: Gossip,
    pub(crate) metrics: Metrics,
}

impl Apps {
    /// Makes the handles and, if `config` is given, registers the protocols
    /// and their channel budgets (unless the user set one).
    pub(crate) fn new(
        keypair: &Keypair,
        config: Option<AppsConfig>,
        registry: &mut ProtocolRegistry,
        budgets: &mut HashMap<u32, RateBudget>,
    ) -> Self {
        let metrics = Metrics::new();
        let enabled = config.is_some();
        let config = config.unwrap_or_default();
        let resources = Resources::new(config.resources, metrics.clone());
        let apps = Self {
            enabled,
            tasks: Tasks::new(config.tasks, resources.clone(), metrics.clone()),
            resources,
            health: Health::new(config.health, metrics.clone()),
            gossip: Gossip::new(keypair.clone(), config.gossip, metrics.clone()),
            metrics,
        };
        if enabled {
            budgets.entry(GossipMessage::ID).or_insert(gossip::BUDGET);
            budgets
                .entry(ResourceReport::ID)
                .or_insert(resource::BUDGET);
            budgets.entry(HealthQuery::ID).or_insert(health::BUDGET);
            let t = apps.tasks.clone();
            registry.register("knot/task", Sessions::ALL, move |ch: &Channel| {
                t.protocol(ch)
            });
            let r = apps.resources.clone();
            registry.register("knot/resource", Sessions::ALL, move |ch: &Channel| {
                r.protocol(ch)
            });
            let h = apps.health.clone();
            registry.register("knot/health", Sessions::ALL, move |ch: &Channel| {
                h.protocol(ch)
            });
            let g = apps.gossip.clone();
            registry.register("knot/gossip", Sessions::ALL, move |ch: &Channel| {
                g.protocol(ch)
            });
        }
        apps
    }

    /// Starts the background tasks of the node's apps.
    pub(crate) fn start(shared: &Arc<Shared>) {
        shared.spawn_task(crate::metrics::collect(shared.clone()));
        let apps = &shared.apps;
        let health = apps.health.clone();
        let s = shared.clone();
        shared.spawn_task(async move { health.drive(&s).await });
        if apps.enabled {
            shared.spawn_task(apps.tasks.clone().drive());
            shared.spawn_task(apps.resources.clone().drive());
        }
    }
}
