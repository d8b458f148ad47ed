//! Health: periodic checks of the node's own parts; peers can ask.
//!
//! Every [`HealthConfig::interval`] the node gathers [`HealthInputs`] — how
//! many of its listeners still accept, how many peers it has, how many of its
//! tasks wait for a worker — and [`evaluate`] turns them into a
//! [`HealthStatus`]: `Failing` when none of its listeners is up, `Degraded` when some listener is down, the node has fewer
//! than [`HealthConfig::min_peers`] peers, or its task queue is longer than
//! [`HealthConfig::max_queued_tasks`]; `Ok` otherwise. Each finding is a
//! reason in the status. The latest status is kept; a peer asks for it with
//! a [`HealthQuery`] request and gets the [`HealthStatus`] back
//! ([`Health::query`]). A node without listeners (a pure client) is not
//! judged on them. Discovery is not part of the node yet and so not checked.
//!
//! [`evaluate`] is sans-IO; the driver gathers the inputs and owns the timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use knotwork_core::PeerId;
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

use crate::metrics::TaskMetrics as Metrics;
use knotwork_core::lock;
use knotwork_node::Channel;
use knotwork_node::NodeError;
use knotwork_node::RateBudget;
use knotwork_node::WeakNode;

use crate::task::Tasks;

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/health";
/// Reasons in one status, at most.
pub const MAX_REASONS: usize = 8;
/// Longest reason, in bytes.
pub const MAX_REASON_LEN: usize = 96;
/// The channel budget of health queries.
pub const BUDGET: RateBudget = RateBudget::new(2.0, 10);

/// How healthy a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HealthLevel {
    /// Everything works.
    Ok,
    /// Working, with a problem.
    Degraded,
    /// Not doing its job.
    Failing,
}

/// A health verdict with its reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// The verdict.
    pub level: HealthLevel,
    /// Why, one finding each (empty when ok).
    pub reasons: Vec<String>,
}

impl Message for HealthStatus {
    const NAME: &'static str = "knot/health/status/1";
    // level 1 + reasons (1 count byte + 8 × (1 length byte + 96)).
    const MAX_BYTES: usize = 1 + 1 + MAX_REASONS * (1 + MAX_REASON_LEN);
}

/// Asks a peer for its [`HealthStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthQuery;

impl Message for HealthQuery {
    const NAME: &'static str = "knot/health/query/1";
    // A unit struct encodes to nothing.
    const MAX_BYTES: usize = 0;
}

/// What the checks look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthInputs {
    /// Listeners the node was started with.
    pub listeners: usize,
    /// Listeners still accepting.
    pub listeners_up: usize,
    /// Connected peers.
    pub peers: usize,
    /// Tasks of this node waiting for a worker.
    pub queued_tasks: usize,
}

/// Settings of the health checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Time between checks.
    pub interval: Duration,
    /// Fewer peers than this is degraded.
    pub min_peers: usize,
    /// More queued tasks than this is degraded.
    pub max_queued_tasks: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            min_peers: 1,
            max_queued_tasks: 10_000,
        }
    }
}

/// The verdict on `inputs`; see the module docs.
pub fn evaluate(inputs: &HealthInputs, config: &HealthConfig) -> HealthStatus {
    let mut level = HealthLevel::Ok;
    let mut reasons = Vec::new();
    let mut find = |l: HealthLevel, reason: String| {
        level = level.max(l);
        reasons.push(reason);
    };
    if inputs.listeners > 0 && inputs.listeners_up == 0 {
        find(HealthLevel::Failing, "no listener is up".to_owned());
    } else if inputs.listeners_up < inputs.listeners {
        find(
            HealthLevel::Degraded,
            format!(
                "{} of {} listeners down",
                inputs.listeners - inputs.listeners_up,
                inputs.listeners
            ),
        );
    }
    if inputs.peers < config.min_peers {
        find(
            HealthLevel::Degraded,
            format!("{} peers, fewer than {}", inputs.peers, config.min_peers),
        );
    }
    if inputs.queued_tasks > config.max_queued_tasks {
        find(
            HealthLevel::Degraded,
            format!(
                "{} tasks queued, more than {}",
                inputs.queued_tasks, config.max_queued_tasks
            ),
        );
    }
    HealthStatus { level, reasons }
}

struct Inner {
    config: HealthConfig,
    latest: Mutex<Option<HealthStatus>>,
    channels: Mutex<HashMap<PeerId, Channel>>,
    node: OnceLock<WeakNode>,
    tasks: Tasks,
    metrics: Metrics,
}

/// The health checks of a node ([`crate::TasksService::health`]); cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Health {
    pub(crate) fn new(config: HealthConfig, tasks: Tasks, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                latest: Mutex::new(None),
                channels: Mutex::new(HashMap::new()),
                node: OnceLock::new(),
                tasks,
                metrics,
            }),
        }
    }

    /// The latest periodic verdict (a fresh check if none ran yet).
    pub fn status(&self) -> HealthStatus {
        let latest = lock(&self.inner.latest).clone();
        latest.unwrap_or_else(|| self.check_now())
    }

    /// Checks now, keeps and returns the verdict.
    pub fn check_now(&self) -> HealthStatus {
        let node = self.inner.node.get().and_then(WeakNode::upgrade);
        let inputs = match &node {
            Some(node) => HealthInputs {
                listeners: node.listen_addrs().len(),
                listeners_up: node.listeners_up(),
                peers: node.channels().len(),
                queued_tasks: self.inner.tasks.stats().0,
            },
            None => HealthInputs::default(),
        };
        let status = evaluate(&inputs, &self.inner.config);
        self.inner.metrics.health(match status.level {
            HealthLevel::Ok => 0,
            HealthLevel::Degraded => 1,
            HealthLevel::Failing => 2,
        });
        *lock(&self.inner.latest) = Some(status.clone());
        status
    }

    /// Asks connected peer `peer` for its health.
    pub async fn query(&self, peer: &PeerId) -> Result<HealthStatus, NodeError> {
        let channel = lock(&self.inner.channels).get(peer).cloned();
        let channel = channel.ok_or(NodeError::NotConnected(*peer))?;
        channel
            .request::<HealthQuery, HealthStatus>(&HealthQuery)
            .await
    }

    /// Checks every interval until the node stops.
    pub(crate) async fn drive(self, node: WeakNode) {
        let _ = self.inner.node.set(node);
        let mut ticker = tokio::time::interval(self.inner.config.interval);
        loop {
            ticker.tick().await;
            self.check_now();
        }
    }

    /// The protocol on one channel: subscribes, then returns the job.
    pub(crate) fn protocol(
        &self,
        channel: &Channel,
    ) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut queries = channel.subscribe_requests::<HealthQuery>();
        let this = self.clone();
        let channel = channel.clone();
        lock(&this.inner.channels).insert(channel.remote_peer_id(), channel.clone());
        async move {
            let _registered = Registered {
                health: this.clone(),
                channel,
            };
            while let Some((HealthQuery, responder)) = queries.recv().await {
                let mut status = this.status();
                status.reasons.truncate(MAX_REASONS);
                for r in &mut status.reasons {
                    let mut end = r.len().min(MAX_REASON_LEN);
                    while !r.is_char_boundary(end) {
                        end -= 1;
                    }
                    r.truncate(end);
                }
                let _ = responder.respond(&status).await;
            }
        }
    }
}

/// Forgets a peer's channel when its job ends or is aborted.
struct Registered {
    health: Health,
    channel: Channel,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let peer = self.channel.remote_peer_id();
        let mut map = lock(&self.health.inner.channels);
        if map.get(&peer).is_some_and(|c| c.same(&self.channel)) {
            map.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> HealthInputs {
        HealthInputs {
            listeners: 2,
            listeners_up: 2,
            peers: 3,
            queued_tasks: 0,
        }
    }

    #[test]
    fn all_up_is_ok() {
        let s = evaluate(&healthy(), &HealthConfig::default());
        assert_eq!(s.level, HealthLevel::Ok);
        assert!(s.reasons.is_empty());
    }

    #[test]
    fn one_listener_down_is_degraded_all_down_is_failing() {
        let c = HealthConfig::default();
        let one = evaluate(
            &HealthInputs {
                listeners_up: 1,
                ..healthy()
            },
            &c,
        );
        assert_eq!(one.level, HealthLevel::Degraded);
        assert_eq!(one.reasons, vec!["1 of 2 listeners down".to_owned()]);
        let none = evaluate(
            &HealthInputs {
                listeners_up: 0,
                peers: 0,
                ..healthy()
            },
            &c,
        );
        assert_eq!(none.level, HealthLevel::Failing);
        assert_eq!(none.reasons.len(), 2, "{none:?}");
    }

    #[test]
    fn few_peers_or_long_queue_is_degraded_client_without_listeners_is_fine() {
        let c = HealthConfig::default();
        let lonely = evaluate(
            &HealthInputs {
                peers: 0,
                ..healthy()
            },
            &c,
        );
        assert_eq!(lonely.level, HealthLevel::Degraded);
        let queue = evaluate(
            &HealthInputs {
                queued_tasks: 10_001,
                ..healthy()
            },
            &c,
        );
        assert_eq!(queue.level, HealthLevel::Degraded);
        let client = evaluate(
            &HealthInputs {
                listeners: 0,
                listeners_up: 0,
                ..healthy()
            },
            &c,
        );
        assert_eq!(client.level, HealthLevel::Ok);
    }

    #[test]
    fn status_fits_its_max_bytes() {
        let s = HealthStatus {
            level: HealthLevel::Failing,
            reasons: vec!["x".repeat(MAX_REASON_LEN); MAX_REASONS],
        };
        assert!(knotwork_wire::encode(&s).is_ok());
    }
}
