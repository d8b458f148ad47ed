//! knotwork-tasks: distributed tasks, resource reports and health checks
//! over node channels (the task-resource-health protocols), as one
//! [`Service`] of a knotwork node.
//!
//! - [`task`]: submit a task with a [`Placement`](task::Placement); the node
//!   places it on a peer (the least busy by its resource report, say),
//!   retries it elsewhere when the worker fails or its channel closes, and
//!   reports the result; peers run the kinds they [`Tasks::register`]ed.
//! - [`resource`]: every node samples its CPU, memory and load and shares
//!   them; task placement reads them.
//! - [`health`]: periodic checks of the node's own parts (listeners, peers,
//!   queued tasks); peers can ask, or subscribe and have changes pushed.
//!
//! [`TasksService`] holds the three handles; add a clone of it to the node
//! with [`NodeBuilder::service`](knotwork_node::NodeBuilder::service). It
//! is written against the node's public extension API only.
//!
//! # Example: a task on a peer
//! ```
//! use knotwork_core::{Keypair, MemoryTransport};
//! use knotwork_node::Node;
//! use knotwork_tasks::task::{Placement, Task, TaskOutcome};
//! use knotwork_tasks::{TasksConfig, TasksService};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = MemoryTransport::new();
//! let worker_tasks = TasksService::new(TasksConfig::default());
//! let worker = Node::builder(Keypair::generate()?)
//!     .transport(net.clone())
//!     .listen("mem/0".parse()?)
//!     .service(worker_tasks.clone())
//!     .start()
//!     .await?;
//! worker_tasks.tasks().register("upper", |input: Vec<u8>| async move {
//!     Ok(input.to_ascii_uppercase())
//! });
//!
//! let boss_tasks = TasksService::new(TasksConfig::default());
//! let boss = Node::builder(Keypair::generate()?)
//!     .transport(net)
//!     .service(boss_tasks.clone())
//!     .start()
//!     .await?;
//! boss.connect(&worker.listen_addrs()[0]).await?;
//! while boss_tasks.tasks().peers().is_empty() {
//!     tokio::task::yield_now().await;
//! }
//! let mut results = boss_tasks.tasks().results();
//! boss_tasks.tasks().submit(Task::new("upper", b"knot".to_vec()), Placement::BestByResources)?;
//! let result = results.recv().await.ok_or("no result")?;
//! assert_eq!(result.outcome, TaskOutcome::Done(b"KNOT".to_vec()));
//! assert_eq!(result.worker, Some(worker.peer_id()));
//! boss.shutdown().await;
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

pub mod health;
mod metrics;
pub mod resource;
pub mod task;

use knotwork_node::{Channel, NodeHandle, Service, Sessions, Setup};

pub use crate::health::{Health, HealthConfig, HealthQuery, HealthStatus, PeerHealth};
pub use crate::metrics::TaskEvent;
pub use crate::resource::{ResourceConfig, ResourceReport, Resources};
pub use crate::task::{TaskConfig, Tasks};

/// Settings of the three protocols.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct TasksConfig {
    /// Task distribution.
    pub tasks: TaskConfig,
    /// Resource reports.
    pub resources: ResourceConfig,
    /// Health checks.
    pub health: HealthConfig,
}

/// The task, resource and health protocols of a node; cheap to clone. See
/// the crate docs.
#[derive(Clone, Debug)]
pub struct TasksService {
    tasks: Tasks,
    resources: Resources,
    health: Health,
    metrics: metrics::TaskMetrics,
}

impl TasksService {
    /// The protocols with `config`; they run once the service is added to
    /// a node and the node started.
    pub fn new(config: TasksConfig) -> Self {
        let metrics = metrics::TaskMetrics::default();
        let resources = Resources::new(config.resources, metrics.clone());
        let tasks = Tasks::new(config.tasks, resources.clone(), metrics.clone());
        Self {
            health: Health::new(config.health, tasks.clone(), metrics.clone()),
            tasks,
            resources,
            metrics,
        }
    }

    /// Task distribution.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Resource reports.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// Health checks of this node's parts; peers' health.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

impl Service for TasksService {
    fn setup(&self, setup: &mut Setup<'_>) {
        self.metrics.register(setup.metrics());
        setup.default_budget::<resource::ResourceReport>(resource::BUDGET);
        setup.default_budget::<HealthQuery>(health::BUDGET);
        setup.default_budget::<health::HealthSubscribe>(health::PUSH_BUDGET);
        setup.default_budget::<health::HealthUpdate>(health::PUSH_BUDGET);
        let t = self.tasks.clone();
        setup.protocol(task::NAME, Sessions::ALL, move |ch: &Channel| {
            t.protocol(ch)
        });
        let r = self.resources.clone();
        setup.protocol(resource::NAME, Sessions::ALL, move |ch: &Channel| {
            r.protocol(ch)
        });
        let h = self.health.clone();
        setup.protocol(health::NAME, Sessions::ALL, move |ch: &Channel| {
            h.protocol(ch)
        });
    }

    fn start(&self, node: &NodeHandle) {
        node.spawn(self.health.clone().drive(node.downgrade()));
        node.spawn(self.tasks.clone().drive());
        node.spawn(self.resources.clone().drive());
    }
}

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
