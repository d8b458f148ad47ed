//! Health: periodic checks of the node's own parts; peers can ask, or
//! subscribe and have changes pushed.
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
//! # Push
//! A peer that wants to follow the node's health sends a [`HealthSubscribe`]
//! on its channel ([`Health::watch`]); the node checks itself and answers
//! with a [`HealthUpdate`] carrying that status, then sends one after each
//! check whose verdict differs from the last one pushed. A flapping node
//! pushes at most [`HealthConfig::push_burst`] updates per
//! [`HealthConfig::push_window`]; a change held back is pushed at the first
//! check after the window allows it, if it still stands. A node keeps at most
//! [`MAX_SUBSCRIBERS`] subscribers; a subscription lasts as long as the
//! channel. A subscriber whose send queue is full misses that update, not
//! the others ([`HealthPush`] has the bookkeeping).
//!
//! [`evaluate`] and [`HealthPush`] are sans-IO; the driver gathers the
//! inputs and owns the timer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use knotwork_core::PeerId;
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

use crate::metrics::TaskMetrics as Metrics;
use knotwork_core::lock;
use knotwork_node::Channel;
use knotwork_node::NodeError;
use knotwork_node::RateBudget;
use knotwork_node::WeakNode;
use tokio::sync::watch;

use crate::task::Tasks;

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/health";
/// Reasons in one status, at most.
pub const MAX_REASONS: usize = 8;
/// Longest reason, in bytes.
pub const MAX_REASON_LEN: usize = 96;
/// The channel budget of health queries.
pub const BUDGET: RateBudget = RateBudget::new(2.0, 10);
/// The channel budget of subscriptions and of pushed updates (each type).
pub const PUSH_BUDGET: RateBudget = RateBudget::new(1.0, 5);
/// Subscribers a node keeps at most; more are refused.
pub const MAX_SUBSCRIBERS: usize = 64;

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

/// Asks a peer to push its health changes on this channel
/// ([`HealthUpdate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSubscribe;

impl Message for HealthSubscribe {
    const NAME: &'static str = "knot/health/subscribe/1";
    // A unit struct encodes to nothing.
    const MAX_BYTES: usize = 0;
}

/// A node's health, pushed to a subscriber when it changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthUpdate {
    /// The new status.
    pub status: HealthStatus,
}

impl Message for HealthUpdate {
    const NAME: &'static str = "knot/health/update/1";
    // A one-field struct encodes as its field.
    const MAX_BYTES: usize = HealthStatus::MAX_BYTES;
}

/// Why a subscription or a pushed status was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    // --- A peer's status breaks the limits ------------------------------------
    /// More than [`MAX_REASONS`] reasons.
    #[error("too many reasons")]
    TooManyReasons,
    /// A reason longer than [`MAX_REASON_LEN`] bytes.
    #[error("reason too long")]
    ReasonTooLong,
    // --- This node's limits -------------------------------------------------------
    /// [`MAX_SUBSCRIBERS`] peers subscribed already.
    #[error("too many health subscribers")]
    TooManySubscribers,
}

impl HealthStatus {
    /// Checks a peer's status against [`MAX_REASONS`] and [`MAX_REASON_LEN`].
    pub fn validate(&self) -> Result<(), HealthError> {
        if self.reasons.len() > MAX_REASONS {
            return Err(HealthError::TooManyReasons);
        }
        if self.reasons.iter().any(|r| r.len() > MAX_REASON_LEN) {
            return Err(HealthError::ReasonTooLong);
        }
        Ok(())
    }

    /// This status cut to the limits (for sending).
    fn bounded(mut self) -> Self {
        self.reasons.truncate(MAX_REASONS);
        for r in &mut self.reasons {
            let mut end = r.len().min(MAX_REASON_LEN);
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            r.truncate(end);
        }
        self
    }
}

/// The push side of the health protocol (sans-IO): who subscribed, what
/// was pushed last, and the rate limit; see the module docs.
#[derive(Debug)]
pub struct HealthPush {
    subscribers: HashSet<PeerId>,
    last_pushed: Option<HealthStatus>,
    pushes: VecDeque<Instant>,
    burst: usize,
    window: Duration,
}

impl HealthPush {
    /// No subscribers yet, limited as `config` says.
    pub fn new(config: &HealthConfig) -> Self {
        Self {
            subscribers: HashSet::new(),
            last_pushed: None,
            pushes: VecDeque::new(),
            burst: config.push_burst.max(1),
            window: config.push_window,
        }
    }

    /// Adds `peer`; `Ok(false)` if it was subscribed already.
    pub fn subscribe(&mut self, peer: PeerId) -> Result<bool, HealthError> {
        if self.subscribers.contains(&peer) {
            return Ok(false);
        }
        if self.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(HealthError::TooManySubscribers);
        }
        Ok(self.subscribers.insert(peer))
    }

    /// Removes `peer`.
    pub fn unsubscribe(&mut self, peer: &PeerId) {
        self.subscribers.remove(peer);
    }

    /// The subscribed peers.
    pub fn subscribers(&self) -> impl Iterator<Item = &PeerId> {
        self.subscribers.iter()
    }

    /// After a check at `now` found `status`: the update to push to every
    /// subscriber, if the status differs from the last one pushed and the
    /// rate limit allows a push now.
    pub fn on_check(&mut self, status: &HealthStatus, now: Instant) -> Option<HealthUpdate> {
        if self.last_pushed.as_ref() == Some(status) {
            return None;
        }
        if self.subscribers.is_empty() {
            // Nobody to tell: new subscribers get the current status anyway.
            self.last_pushed = Some(status.clone());
            return None;
        }
        while self
            .pushes
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.window)
        {
            self.pushes.pop_front();
        }
        if self.pushes.len() >= self.burst {
            return None;
        }
        self.pushes.push_back(now);
        self.last_pushed = Some(status.clone());
        Some(HealthUpdate {
            status: status.clone().bounded(),
        })
    }
}

/// A watched peer's health, as last pushed ([`Health::watch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHealth {
    /// The peer's latest pushed status.
    pub status: HealthStatus,
    /// Updates received from the peer on this channel, this one included.
    pub updates: u64,
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
    /// Pushed updates per [`HealthConfig::push_window`], at most.
    pub push_burst: usize,
    /// The window of [`HealthConfig::push_burst`].
    pub push_window: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            min_peers: 1,
            max_queued_tasks: 10_000,
            push_burst: 3,
            push_window: Duration::from_secs(60),
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
    push: Mutex<HealthPush>,
    watched: Mutex<HashMap<PeerId, watch::Sender<Option<PeerHealth>>>>,
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
                push: Mutex::new(HealthPush::new(&config)),
                watched: Mutex::new(HashMap::new()),
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

    /// Follows connected peer `peer`'s health: subscribes on its channel
    /// (once; later calls share the subscription) and returns the latest
    /// pushed status, `None` until the first arrives. The sender side
    /// closes when the channel does.
    pub async fn watch(
        &self,
        peer: &PeerId,
    ) -> Result<watch::Receiver<Option<PeerHealth>>, NodeError> {
        let channel = lock(&self.inner.channels).get(peer).cloned();
        let channel = channel.ok_or(NodeError::NotConnected(*peer))?;
        let receiver = {
            let mut watched = lock(&self.inner.watched);
            if let Some(sender) = watched.get(peer) {
                return Ok(sender.subscribe());
            }
            let (sender, receiver) = watch::channel(None);
            watched.insert(*peer, sender);
            receiver
        };
        if let Err(e) = channel.send(&HealthSubscribe).await {
            lock(&self.inner.watched).remove(peer);
            return Err(e);
        }
        Ok(receiver)
    }

    /// Checks every interval until the node stops; pushes changes.
    pub(crate) async fn drive(self, node: WeakNode) {
        let _ = self.inner.node.set(node);
        let mut ticker = tokio::time::interval(self.inner.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let status = self.check_now();
            let now = tokio::time::Instant::now().into_std();
            let (update, subscribers) = {
                let mut push = lock(&self.inner.push);
                let Some(update) = push.on_check(&status, now) else {
                    continue;
                };
                (update, push.subscribers().copied().collect::<Vec<_>>())
            };
            let channels: Vec<Channel> = {
                let map = lock(&self.inner.channels);
                subscribers
                    .iter()
                    .filter_map(|p| map.get(p).cloned())
                    .collect()
            };
            for ch in channels {
                if let Err(e) = ch.try_send(&update) {
                    // A full queue misses this update; the next change supersedes it.
                    let peer = ch.remote_peer_id();
                    tracing::debug!(peer = %peer.short(), "health update not sent: {e}");
                }
            }
        }
    }

    /// A peer subscribed on `channel`: adds it, sends the current status.
    async fn subscribed(&self, channel: &Channel) {
        let peer = channel.remote_peer_id();
        match lock(&self.inner.push).subscribe(peer) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(peer = %peer.short(), "health subscription refused: {e}");
                return;
            }
        }
        // Fresh: the latest check may predate the subscriber's own channel.
        let status = self.check_now().bounded();
        let _ = channel.send(&HealthUpdate { status }).await;
    }

    /// `channel`'s peer pushed `update`: keeps it if this node watches the peer.
    fn updated(&self, channel: &Channel, update: HealthUpdate) {
        let peer = channel.remote_peer_id();
        if let Err(e) = update.status.validate() {
            tracing::debug!(peer = %peer.short(), "health update refused: {e}");
            return;
        }
        if let Some(sender) = lock(&self.inner.watched).get(&peer) {
            sender.send_modify(|latest| {
                let updates = latest.as_ref().map_or(0, |l| l.updates) + 1;
                *latest = Some(PeerHealth {
                    status: update.status,
                    updates,
                });
            });
        }
    }

    /// The protocol on one channel: subscribes, then returns the job.
    pub(crate) fn protocol(
        &self,
        channel: &Channel,
    ) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut queries = channel.subscribe_requests::<HealthQuery>();
        let mut subscriptions = channel.subscribe::<HealthSubscribe>();
        let mut updates = channel.subscribe::<HealthUpdate>();
        let this = self.clone();
        let channel = channel.clone();
        lock(&this.inner.channels).insert(channel.remote_peer_id(), channel.clone());
        async move {
            let _registered = Registered {
                health: this.clone(),
                channel: channel.clone(),
            };
            loop {
                tokio::select! {
                    query = queries.recv() => {
                        let Some((HealthQuery, responder)) = query else { return };
                        let _ = responder.respond(&this.status().bounded()).await;
                    }
                    sub = subscriptions.recv() => {
                        let Some(HealthSubscribe) = sub else { return };
                        this.subscribed(&channel).await;
                    }
                    update = updates.recv() => {
                        let Some(update) = update else { return };
                        this.updated(&channel, update);
                    }
                }
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
            lock(&self.health.inner.push).unsubscribe(&peer);
            lock(&self.health.inner.watched).remove(&peer);
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

    fn status(level: HealthLevel) -> HealthStatus {
        HealthStatus {
            level,
            reasons: Vec::new(),
        }
    }

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes(&[n; 32]).unwrap()
    }

    #[test]
    fn a_change_is_pushed_at_the_check_that_finds_it() {
        let t0 = Instant::now();
        let mut push = HealthPush::new(&HealthConfig::default());
        assert_eq!(
            push.on_check(&status(HealthLevel::Ok), t0),
            None,
            "nobody subscribed"
        );
        assert_eq!(push.subscribe(peer(1)), Ok(true));
        assert_eq!(push.subscribe(peer(1)), Ok(false), "once");
        let same = push.on_check(&status(HealthLevel::Ok), t0 + Duration::from_secs(10));
        assert_eq!(same, None, "no change, no push");
        let changed = push.on_check(&status(HealthLevel::Degraded), t0 + Duration::from_secs(20));
        assert_eq!(changed.map(|u| u.status.level), Some(HealthLevel::Degraded));
        push.unsubscribe(&peer(1));
        assert_eq!(push.subscribers().count(), 0);
    }

    #[test]
    fn a_flapping_node_pushes_at_most_a_burst_per_window_then_the_standing_status() {
        let config = HealthConfig::default();
        let interval = config.interval;
        let t0 = Instant::now();
        let mut push = HealthPush::new(&config);
        push.subscribe(peer(1)).unwrap();
        // Flapping at every check for two windows: 12 checks, each a change.
        let levels = [HealthLevel::Degraded, HealthLevel::Ok];
        let pushed: Vec<u32> = (0..12u32)
            .filter(|&i| {
                let level = levels[i as usize % 2];
                push.on_check(&status(level), t0 + interval * i).is_some()
            })
            .collect();
        // Checks 0–2 push; 3–5 are held (3 in the window); at 6 the status
        // equals the last pushed; 7–9 push as 0–2 leave the window.
        assert_eq!(pushed, vec![0, 1, 2, 7, 8, 9], "3 per 60 s window");
        // It settles on Degraded (the last pushed was Ok, check 9): held
        // back until check 7's push leaves the window, then pushed once.
        let settled = status(HealthLevel::Degraded);
        let held: Vec<u32> = (12..20u32)
            .filter(|&i| push.on_check(&settled, t0 + interval * i).is_some())
            .collect();
        assert_eq!(held, vec![13], "pushed at 130 s, once");
    }

    #[test]
    fn subscribers_are_bounded_and_bad_statuses_are_named() {
        let mut push = HealthPush::new(&HealthConfig::default());
        for n in 0..MAX_SUBSCRIBERS {
            push.subscribe(peer(n as u8)).unwrap();
        }
        assert_eq!(
            push.subscribe(peer(200)),
            Err(HealthError::TooManySubscribers)
        );
        let many = HealthStatus {
            level: HealthLevel::Ok,
            reasons: vec![String::new(); MAX_REASONS + 1],
        };
        assert_eq!(many.validate(), Err(HealthError::TooManyReasons));
        let long = HealthStatus {
            level: HealthLevel::Ok,
            reasons: vec!["é".repeat(MAX_REASON_LEN)],
        };
        assert_eq!(long.validate(), Err(HealthError::ReasonTooLong));
        let cut = long.bounded();
        assert_eq!(cut.validate(), Ok(()));
        assert_eq!(cut.reasons[0].len(), MAX_REASON_LEN);
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
