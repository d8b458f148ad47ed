//! Task: hand work to peers and collect exactly one result per task.
//!
//! A submitter queues a [`Task`] (an id, a kind, a payload, a timeout) with a
//! [`Placement`]: explicit peers, or the best peers by their latest resource
//! reports. The [`Scheduler`] places queued tasks in order on connected
//! workers with a free slot (at most [`TaskConfig::max_in_flight_per_peer`]
//! each: backpressure), preferring peers the task has not failed on yet and,
//! among those, the least busy (resource score plus the share of its slots in
//! use). A placed task is sent as a [`TaskRequest`]; the worker runs the
//! handler registered for the kind (at most
//! [`TaskConfig::worker_concurrency`] at once per channel, else it answers
//! [`TaskReply::Busy`]) and answers [`TaskReply::Done`] or
//! [`TaskReply::Failed`]. When the worker fails instead — it disconnects,
//! times out, is busy or has no handler — the task goes back to the front of
//! the queue and is placed again, on another peer if there is one, until
//! [`TaskConfig::max_attempts`]. A task that finds no worker within its
//! timeout fails with [`TaskOutcome::NoWorkers`]. Cancellation removes the
//! task and tells its worker with [`TaskCancel`]. Results are delivered at
//! most once per task id: the first answer from any worker the task was
//! placed on completes it and removes it; anything later about that id is
//! ignored (and a worker still running it is told to cancel).
//!
//! [`Scheduler`] is the sans-IO core: time and replies are inputs; dispatches,
//! cancellations and results are polled out. [`Tasks`] is the driver: a
//! dispatcher task that places work over node channels, and the worker side
//! that runs handlers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knotwork_core::PeerId;
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::channel::Channel;
use crate::metrics::{Metrics, TaskEvent};
use crate::node::lock;
use crate::protocol::resource::Resources;

/// Longest task kind, in bytes.
pub const MAX_KIND_LEN: usize = 64;
/// Largest task payload or result, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 256 * 1024;
/// Longest failure text a worker sends back, in bytes.
pub const MAX_ERROR_LEN: usize = 256;

/// A task's id, unique among the tasks of one submitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u64);

/// A unit of work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Which handler runs it.
    pub kind: String,
    /// Its input.
    pub payload: Vec<u8>,
    /// Time for one attempt on a worker, and for finding a worker.
    pub timeout: Duration,
}

impl Task {
    /// A task with a random id and a 30 s timeout.
    pub fn new(kind: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            id: TaskId(fastrand::u64(..)),
            kind: kind.into(),
            payload,
            timeout: Duration::from_secs(30),
        }
    }

    /// The same task with id `id`.
    pub fn with_id(mut self, id: TaskId) -> Self {
        self.id = id;
        self
    }

    /// The same task with timeout `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Where a task may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On one of these peers.
    Peers(Vec<PeerId>),
    /// On any task peer, the least busy first (see [`Resources`]).
    BestByResources,
}

/// Asks a worker to run a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// The task id.
    pub id: u64,
    /// Which placement of the task this is (1 for the first): a worker
    /// still running an earlier one for this submitter stops it and runs
    /// this one (the submitter gave the earlier one up).
    pub attempt: u32,
    /// The task kind.
    pub kind: String,
    /// The input.
    pub payload: Vec<u8>,
}

impl Message for TaskRequest {
    const NAME: &'static str = "knot/task/request/2";
    // id varint 10 + attempt varint 5 + kind (1 length byte + 64) + payload
    // (3 length bytes + 256 KiB).
    const MAX_BYTES: usize = 10 + 5 + 1 + MAX_KIND_LEN + 3 + MAX_PAYLOAD_LEN;
}

/// A worker's answer to a [`TaskRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskReply {
    /// The handler's output.
    Done(Vec<u8>),
    /// The handler's error.
    Failed(String),
    /// No handler for the kind.
    NoHandler,
    /// All worker slots are busy.
    Busy,
}

impl Message for TaskReply {
    const NAME: &'static str = "knot/task/reply/1";
    // variant 1 + the larger field: (3 length bytes + 256 KiB).
    const MAX_BYTES: usize = 1 + 3 + MAX_PAYLOAD_LEN;
}

/// Tells a worker to stop a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCancel {
    /// The task id.
    pub id: u64,
    /// The placement to stop ([`TaskRequest::attempt`]); a cancel of an
    /// earlier placement than the one running leaves it alone.
    pub attempt: u32,
}

impl Message for TaskCancel {
    const NAME: &'static str = "knot/task/cancel/2";
    // id varint 10 + attempt varint 5.
    const MAX_BYTES: usize = 10 + 5;
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The handler's output.
    Done(Vec<u8>),
    /// The handler's error.
    Failed(String),
    /// Every attempt failed (workers gone, timed out, busy, or without handler).
    Exhausted,
    /// No worker could take it within its timeout.
    NoWorkers,
    /// Cancelled by the submitter.
    Cancelled,
}

/// The one result of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResult {
    /// The task.
    pub id: TaskId,
    /// The worker that answered, if one did.
    pub worker: Option<PeerId>,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// How many times it was placed.
    pub attempts: u32,
}

/// Why a task was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// A task with this id is still pending (submitted here, or, from a
    /// peer, still running on this worker).
    #[error("duplicate task id")]
    DuplicateId,
    /// The kind is longer than [`MAX_KIND_LEN`].
    #[error("task kind too long")]
    KindTooLong,
    /// The payload is longer than [`MAX_PAYLOAD_LEN`].
    #[error("task payload too long")]
    PayloadTooLong,
    /// [`Placement::Peers`] with no peer.
    #[error("empty placement")]
    EmptyPlacement,
}

/// [`TaskError::KindTooLong`] or [`TaskError::PayloadTooLong`] if a task
/// of `kind` with `payload` is over the limits.
fn check_sizes(kind: &str, payload: &[u8]) -> Result<(), TaskError> {
    if kind.len() > MAX_KIND_LEN {
        return Err(TaskError::KindTooLong);
    }
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(TaskError::PayloadTooLong);
    }
    Ok(())
}

/// The tasks a worker runs for one peer: task id -> (attempt, the token
/// that stops it).
type Running = HashMap<u64, (u32, CancellationToken)>;

/// How a worker takes a request from a peer: a request over the limits
/// ([`TaskError::KindTooLong`], [`TaskError::PayloadTooLong`]: its frame
/// fits `MAX_BYTES`, which bounds only the sum) or with the id of a task
/// the worker still runs for that peer in the same or a later attempt
/// ([`TaskError::DuplicateId`]) is an error; a later attempt of a running
/// task stops the earlier one and takes its slot (the submitter timed it
/// out; its cancel may still be on the way); `Ok(None)` when all `limit`
/// slots are busy; else the token that cancels the task, now counted in
/// `running`.
fn admit(
    running: &mut Running,
    req: &TaskRequest,
    limit: usize,
) -> Result<Option<CancellationToken>, TaskError> {
    check_sizes(&req.kind, &req.payload)?;
    match running.get(&req.id) {
        Some((attempt, _)) if *attempt >= req.attempt => return Err(TaskError::DuplicateId),
        Some((_, earlier)) => earlier.cancel(),
        None if running.len() >= limit.max(1) => return Ok(None),
        None => {}
    }
    let token = CancellationToken::new();
    running.insert(req.id, (req.attempt, token.clone()));
    Ok(Some(token))
}

/// A worker's handling of `cancel`: stops the task if the attempt running
/// is the one named (an earlier attempt's late cancel must not stop a
/// later one).
fn cancel_running(running: &Running, cancel: &TaskCancel) {
    if let Some((attempt, token)) = running.get(&cancel.id)
        && *attempt == cancel.attempt
    {
        token.cancel();
    }
}

/// A worker's task `id` in `attempt` has ended: it leaves `running`,
/// unless a later attempt has replaced it there.
fn finished(running: &mut Running, id: u64, attempt: u32) {
    if running.get(&id).is_some_and(|(a, _)| *a == attempt) {
        running.remove(&id);
    }
}

/// Settings of the task protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskConfig {
    /// Tasks sent to one worker and not answered yet, at most.
    pub max_in_flight_per_peer: usize,
    /// Placements of one task, at most.
    pub max_attempts: u32,
    /// Tasks a worker runs at once for one peer, at most.
    pub worker_concurrency: usize,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            max_in_flight_per_peer: 8,
            max_attempts: 5,
            worker_concurrency: 8,
        }
    }
}

/// A task placed on a worker, to be sent by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The task.
    pub task: Task,
    /// The worker.
    pub peer: PeerId,
    /// Which placement of the task this is (1 for the first); a failure
    /// is reported with it, see [`Scheduler::handle_failure`].
    pub attempt: u32,
}

#[derive(Debug)]
enum State {
    Queued { since: Instant },
    Running { peer: PeerId, deadline: Instant },
}

#[derive(Debug)]
struct Entry {
    task: Task,
    placement: Placement,
    attempts: u32,
    tried: Vec<PeerId>,
    state: State,
}

/// The sans-IO task scheduler of a submitter; see the module docs.
///
/// Inputs: [`Scheduler::submit`], [`Scheduler::cancel`],
/// [`Scheduler::peer_up`]/[`Scheduler::peer_down`],
/// [`Scheduler::handle_reply`]/[`Scheduler::handle_failure`]/
/// [`Scheduler::handle_lost`],
/// [`Scheduler::handle_timeout`] at [`Scheduler::poll_timeout`]. Outputs, to
/// drain after any input: [`Scheduler::poll_dispatch`],
/// [`Scheduler::poll_cancel`], [`Scheduler::poll_result`].
#[derive(Debug)]
pub struct Scheduler {
    config: TaskConfig,
    entries: HashMap<TaskId, Entry>,
    queue: VecDeque<TaskId>,
    peers: HashMap<PeerId, usize>,
    results: VecDeque<TaskResult>,
    cancels: VecDeque<(PeerId, TaskId, u32)>,
    retries: u64,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(config: TaskConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            queue: VecDeque::new(),
            peers: HashMap::new(),
            results: VecDeque::new(),
            cancels: VecDeque::new(),
            retries: 0,
        }
    }

    /// Queues `task` at `now`.
    pub fn submit(
        &mut self,
        task: Task,
        placement: Placement,
        now: Instant,
    ) -> Result<(), TaskError> {
        check_sizes(&task.kind, &task.payload)?;
        if placement == Placement::Peers(Vec::new()) {
            return Err(TaskError::EmptyPlacement);
        }
        if self.entries.contains_key(&task.id) {
            return Err(TaskError::DuplicateId);
        }
        let id = task.id;
        self.entries.insert(
            id,
            Entry {
                task,
                placement,
                attempts: 0,
                tried: Vec::new(),
                state: State::Queued { since: now },
            },
        );
        self.queue.push_back(id);
        Ok(())
    }

    /// Cancels task `id`; returns whether it was pending.
    pub fn cancel(&mut self, id: TaskId) -> bool {
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        if let State::Running { peer, .. } = entry.state {
            self.release(&peer);
            self.cancels.push_back((peer, id, entry.attempts));
        }
        self.finish(id, None, TaskOutcome::Cancelled, entry.attempts);
        true
    }

    /// A worker became reachable.
    pub fn peer_up(&mut self, peer: PeerId) {
        self.peers.entry(peer).or_insert(0);
    }

    /// A worker went away at `now`: its running tasks are placed again.
    /// Returns how many.
    pub fn peer_down(&mut self, peer: &PeerId, now: Instant) -> usize {
        self.peers.remove(peer);
        let running: Vec<TaskId> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Running { peer: p, .. } if p == *peer))
            .map(|(id, _)| *id)
            .collect();
        for id in &running {
            self.requeue(*id, now);
        }
        running.len()
    }

    /// Tasks waiting for a worker.
    pub fn queued(&self) -> usize {
        self.entries.len() - self.in_flight()
    }

    /// Tasks sent to workers and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.peers.values().sum()
    }

    /// Tasks placed again after a worker failed, since the start.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Places the next task that has a worker; `busy` scores a peer's load
    /// (lower is better).
    pub fn poll_dispatch(
        &mut self,
        now: Instant,
        busy: &dyn Fn(&PeerId) -> f64,
    ) -> Option<Dispatch> {
        let max = self.config.max_in_flight_per_peer.max(1);
        let free: Vec<(PeerId, usize)> = self
            .peers
            .iter()
            .filter(|(_, n)| **n < max)
            .map(|(p, n)| (*p, *n))
            .collect();
        if free.is_empty() {
            return None;
        }
        let mut stale = 0;
        let mut chosen = None;
        for (pos, id) in self.queue.iter().enumerate() {
            let Some(entry) = self.entries.get(id) else {
                stale += usize::from(pos == stale);
                continue;
            };
            if !matches!(entry.state, State::Queued { .. }) {
                continue;
            }
            let eligible: Vec<&(PeerId, usize)> = free
                .iter()
                .filter(|(p, _)| match &entry.placement {
                    Placement::Peers(list) => list.contains(p),
                    Placement::BestByResources => true,
                })
                .collect();
            let untried: Vec<&(PeerId, usize)> = eligible
                .iter()
                .copied()
                .filter(|(p, _)| !entry.tried.contains(p))
                .collect();
            let pool = if untried.is_empty() {
                eligible
            } else {
                untried
            };
            let score = |(p, n): &(PeerId, usize)| busy(p) + *n as f64 / max as f64;
            let best = pool
                .into_iter()
                .min_by(|a, b| score(a).total_cmp(&score(b)));
            if let Some((peer, _)) = best {
                chosen = Some((pos, *id, *peer));
                break;
            }
        }
        let (pos, id, peer) = chosen?;
        self.queue.remove(pos);
        self.queue.drain(..stale.min(pos));
        let entry = self.entries.get_mut(&id)?;
        entry.attempts += 1;
        entry.tried.push(peer);
        entry.state = State::Running {
            peer,
            deadline: now + entry.task.timeout,
        };
        *self.peers.entry(peer).or_insert(0) += 1;
        Some(Dispatch {
            task: entry.task.clone(),
            peer,
            attempt: entry.attempts,
        })
    }

    /// Handles `reply` from worker `from` about task `id` at `now`.
    pub fn handle_reply(&mut self, from: PeerId, id: TaskId, reply: TaskReply, now: Instant) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        if !entry.tried.contains(&from) {
            return;
        }
        let outcome = match reply {
            TaskReply::Done(out) => TaskOutcome::Done(out),
            TaskReply::Failed(e) => TaskOutcome::Failed(e),
            TaskReply::NoHandler | TaskReply::Busy => {
                self.fail(from, id, None, now, false);
                return;
            }
        };
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        if let State::Running { peer, .. } = entry.state {
            self.release(&peer);
            if peer != from {
                self.cancels.push_back((peer, id, entry.attempts));
            }
        }
        self.finish(id, Some(from), outcome, entry.attempts);
    }

    /// Placement `attempt` ([`Dispatch::attempt`]) of task `id` on worker
    /// `from` failed at `now` (timed out, refused, the send failed, or its
    /// channel closed before an answer); the task is placed again. A
    /// report about an earlier attempt than the running one is ignored:
    /// the task may have been placed on the same worker again since.
    pub fn handle_failure(&mut self, from: PeerId, id: TaskId, attempt: u32, now: Instant) {
        // The worker may still be running it: tell it to stop, so it does
        // not answer a request we no longer wait for.
        self.fail(from, id, Some(attempt), now, true);
    }

    /// Placement `attempt` of task `id` on worker `from` ended with the
    /// connection to it at `now`: the task is placed again, and nothing is
    /// cancelled (the worker stopped the task with the connection; a cancel
    /// sent over a newer connection could only hit a newer placement).
    /// Reports about earlier attempts are ignored, as in
    /// [`Scheduler::handle_failure`].
    pub fn handle_lost(&mut self, from: PeerId, id: TaskId, attempt: u32, now: Instant) {
        self.fail(from, id, Some(attempt), now, false);
    }

    /// Places task `id` again if it runs on `from` (in placement
    /// `attempt`, when given).
    fn fail(&mut self, from: PeerId, id: TaskId, attempt: Option<u32>, now: Instant, cancel: bool) {
        let running_on_from = self.entries.get(&id).and_then(|e| {
            (matches!(e.state, State::Running { peer, .. } if peer == from)
                && attempt.is_none_or(|a| a == e.attempts))
            .then_some(e.attempts)
        });
        if let Some(attempt) = running_on_from {
            if cancel {
                self.cancels.push_back((from, id, attempt));
            }
            self.requeue(id, now);
        }
    }

    /// Handles the passage of time up to `now`: attempts past their
    /// deadline fail, tasks queued longer than their timeout give up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut late = Vec::new();
        let mut stuck = Vec::new();
        for (id, e) in &self.entries {
            match e.state {
                State::Running { peer, deadline } if now >= deadline => {
                    late.push((*id, peer, e.attempts));
                }
                State::Queued { since } if now >= since + e.task.timeout => stuck.push(*id),
                _ => {}
            }
        }
        for (id, peer, attempt) in late {
            self.cancels.push_back((peer, id, attempt));
            self.requeue(id, now);
        }
        for id in stuck {
            if let Some(e) = self.entries.remove(&id) {
                let outcome = if e.attempts == 0 {
                    TaskOutcome::NoWorkers
                } else {
                    TaskOutcome::Exhausted
                };
                self.finish(id, None, outcome, e.attempts);
            }
        }
    }

    /// When [`Scheduler::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .map(|e| match e.state {
                State::Running { deadline, .. } => deadline,
                State::Queued { since } => since + e.task.timeout,
            })
            .min()
    }

    /// The next finished task.
    pub fn poll_result(&mut self) -> Option<TaskResult> {
        self.results.pop_front()
    }

    /// The next cancellation to send: (worker, task, attempt).
    pub fn poll_cancel(&mut self) -> Option<(PeerId, TaskId, u32)> {
        self.cancels.pop_front()
    }

    fn release(&mut self, peer: &PeerId) {
        if let Some(n) = self.peers.get_mut(peer) {
            *n = n.saturating_sub(1);
        }
    }

    fn requeue(&mut self, id: TaskId, now: Instant) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let State::Running { peer, .. } = entry.state else {
            return;
        };
        let exhausted = entry.attempts >= self.config.max_attempts;
        entry.state = State::Queued { since: now };
        self.release(&peer);
        if exhausted {
            if let Some(e) = self.entries.remove(&id) {
                self.finish(id, None, TaskOutcome::Exhausted, e.attempts);
            }
        } else {
            self.retries += 1;
            self.queue.push_front(id);
        }
    }

    fn finish(&mut self, id: TaskId, worker: Option<PeerId>, outcome: TaskOutcome, attempts: u32) {
        self.results.push_back(TaskResult {
            id,
            worker,
            outcome,
            attempts,
        });
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;
type Handler = Arc<dyn Fn(Vec<u8>) -> BoxFuture + Send + Sync>;

struct Inner {
    config: TaskConfig,
    scheduler: Mutex<Scheduler>,
    channels: Mutex<HashMap<PeerId, Channel>>,
    handlers: Mutex<HashMap<String, Handler>>,
    results: Mutex<Option<mpsc::UnboundedSender<TaskResult>>>,
    wake: Notify,
    resources: Resources,
    metrics: Metrics,
}

/// The task protocol of a node ([`crate::Node::tasks`]); cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish_non_exhaustive()
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn truncated(mut text: String) -> String {
    let mut end = text.len().min(MAX_ERROR_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

impl Tasks {
    pub(crate) fn new(config: TaskConfig, resources: Resources, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                scheduler: Mutex::new(Scheduler::new(config)),
                channels: Mutex::new(HashMap::new()),
                handlers: Mutex::new(HashMap::new()),
                results: Mutex::new(None),
                wake: Notify::new(),
                resources,
                metrics,
            }),
        }
    }

    /// Runs tasks of `kind` sent by peers with `handler`.
    pub fn register<F, Fut>(&self, kind: &str, handler: F)
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |input| Box::pin(handler(input)));
        lock(&self.inner.handlers).insert(kind.to_owned(), handler);
    }

    /// Queues `task` for placement; its result arrives on [`Tasks::results`].
    pub fn submit(&self, task: Task, placement: Placement) -> Result<TaskId, TaskError> {
        let id = task.id;
        lock(&self.inner.scheduler).submit(task, placement, now())?;
        self.inner.metrics.task(TaskEvent::Submitted);
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Cancels task `id`; returns whether it was pending.
    pub fn cancel(&self, id: TaskId) -> bool {
        let cancelled = lock(&self.inner.scheduler).cancel(id);
        self.inner.wake.notify_one();
        cancelled
    }

    /// The stream of results from now on (replacing an earlier stream). It
    /// holds at most one result per task this node submitted.
    pub fn results(&self) -> mpsc::UnboundedReceiver<TaskResult> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.inner.results) = Some(tx);
        rx
    }

    /// Peers connected over channels that run the task protocol.
    pub fn peers(&self) -> Vec<PeerId> {
        lock(&self.inner.channels).keys().copied().collect()
    }

    /// (queued, in flight, retried so far) of this node's tasks.
    pub fn stats(&self) -> (usize, usize, u64) {
        let s = lock(&self.inner.scheduler);
        (s.queued(), s.in_flight(), s.retries())
    }

    /// Takes `channel` out of the workers if it is still the one
    /// registered for its peer; the peer's running tasks are placed again.
    fn unregister(&self, channel: &Channel) {
        let peer = channel.remote_peer_id();
        let removed = {
            let mut map = lock(&self.inner.channels);
            let same = map.get(&peer).is_some_and(|c| c.same(channel));
            if same {
                map.remove(&peer);
            }
            same
        };
        if removed {
            lock(&self.inner.scheduler).peer_down(&peer, now());
            self.inner.wake.notify_one();
        }
    }

    /// Sends out what the scheduler decided: dispatches, cancellations and
    /// results.
    fn flush(&self) {
        let busy = |p: &PeerId| self.inner.resources.busy_score(p);
        // A closed channel leaves the workers when its job ends; until
        // then nothing is placed on it (its jobs would be dropped at once).
        let closed: Vec<Channel> = lock(&self.inner.channels)
            .values()
            .filter(|c| c.is_closed())
            .cloned()
            .collect();
        for channel in &closed {
            self.unregister(channel);
        }
        loop {
            let next = lock(&self.inner.scheduler).poll_dispatch(now(), &busy);
            let Some(Dispatch {
                task,
                peer,
                attempt,
            }) = next
            else {
                break;
            };
            let channel = lock(&self.inner.channels).get(&peer).cloned();
            let Some(channel) = channel else {
                lock(&self.inner.scheduler).handle_failure(peer, task.id, attempt, now());
                continue;
            };
            if channel.is_closed() {
                // Closed since the check above: the task goes back too.
                self.unregister(&channel);
                continue;
            }
            self.inner.metrics.task(TaskEvent::Dispatched);
            self.inner.metrics.tasks_in_flight(1);
            let outcome = Attempt {
                tasks: self.clone(),
                channel: channel.clone(),
                id: task.id,
                attempt,
                reply: None,
            };
            // Moved into the job: if the job never runs or is aborted (its
            // channel closed, say replaced by a duplicate), dropping it
            // reports the failure.
            channel.spawn(async move {
                let req = TaskRequest {
                    id: task.id.0,
                    attempt,
                    kind: task.kind,
                    payload: task.payload,
                };
                let reply = outcome
                    .channel
                    .request_timeout::<TaskRequest, TaskReply>(&req, task.timeout)
                    .await;
                outcome.finish(reply.ok());
            });
        }
        loop {
            let next = lock(&self.inner.scheduler).poll_cancel();
            let Some((peer, id, attempt)) = next else {
                break;
            };
            if let Some(ch) = lock(&self.inner.channels).get(&peer).cloned() {
                let c = ch.clone();
                ch.spawn(async move {
                    let _ = c.send(&TaskCancel { id: id.0, attempt }).await;
                });
            }
        }
        loop {
            let next = lock(&self.inner.scheduler).poll_result();
            let Some(result) = next else { break };
            let event = match result.outcome {
                TaskOutcome::Done(_) => TaskEvent::Completed,
                _ => TaskEvent::Failed,
            };
            self.inner.metrics.task(event);
            if let Some(tx) = lock(&self.inner.results).as_ref() {
                let _ = tx.send(result);
            }
        }
    }

    /// The dispatcher: places tasks whenever something changed or a
    /// deadline passed. Runs until the node stops.
    pub(crate) async fn drive(self) {
        loop {
            let retries_before = lock(&self.inner.scheduler).retries();
            self.flush();
            let retries_after = lock(&self.inner.scheduler).retries();
            for _ in retries_before..retries_after {
                self.inner.metrics.task(TaskEvent::Retried);
            }
            let wake = lock(&self.inner.scheduler).poll_timeout();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = sleep => lock(&self.inner.scheduler).handle_timeout(now()),
            }
        }
    }

    /// The worker side on one channel, and its registration as a worker
    /// for the dispatcher: subscribes, then returns the job.
    pub(crate) fn protocol(&self, channel: &Channel) -> impl Future<Output = ()> + Send + use<> {
        let mut requests = channel.subscribe_requests::<TaskRequest>();
        let mut cancels = channel.subscribe::<TaskCancel>();
        let this = self.clone();
        let channel = channel.clone();
        let peer = channel.remote_peer_id();
        lock(&this.inner.channels).insert(peer, channel.clone());
        lock(&this.inner.scheduler).peer_up(peer);
        this.inner.wake.notify_one();
        async move {
            let _registered = Registered {
                tasks: this.clone(),
                channel: channel.clone(),
            };
            let running: Arc<Mutex<Running>> = Arc::default();
            loop {
                tokio::select! {
                    req = requests.recv() => {
                        let Some((req, responder)) = req else { return };
                        let handler = lock(&this.inner.handlers).get(&req.kind).cloned();
                        let Some(handler) = handler else {
                            let _ = responder.respond(&TaskReply::NoHandler).await;
                            continue;
                        };
                        let limit = this.inner.config.worker_concurrency;
                        let admitted = admit(&mut lock(&running), &req, limit);
                        let token = match admitted {
                            Ok(Some(token)) => token,
                            Ok(None) => {
                                let _ = responder.respond(&TaskReply::Busy).await;
                                continue;
                            }
                            Err(e) => {
                                tracing::debug!(peer = %peer.short(), "task request refused: {e}");
                                let _ = responder.respond(&TaskReply::Failed(e.to_string())).await;
                                continue;
                            }
                        };
                        this.inner.metrics.task(TaskEvent::Executed);
                        let running = running.clone();
                        channel.spawn(async move {
                            let reply = tokio::select! {
                                out = handler(req.payload) => Some(match out {
                                    Ok(out) if out.len() > MAX_PAYLOAD_LEN => {
                                        TaskReply::Failed("result too large".into())
                                    }
                                    Ok(out) => TaskReply::Done(out),
                                    Err(e) => TaskReply::Failed(truncated(e)),
                                }),
                                () = token.cancelled() => None,
                            };
                            finished(&mut lock(&running), req.id, req.attempt);
                            if let Some(reply) = reply {
                                let _ = responder.respond(&reply).await;
                            }
                        });
                    }
                    cancel = cancels.recv() => {
                        let Some(cancel) = cancel else { return };
                        cancel_running(&lock(&running), &cancel);
                    }
                }
            }
        }
    }
}

/// One placement of a task, sent by a request job over `channel`: when
/// the job ends it reports the reply, or a failure if there was none (the
/// request failed or timed out), or that the attempt was lost with its
/// channel (closed: that also aborts the channel's jobs, and dropping the
/// job reports). Without that last case a task sent over a channel
/// replaced by a duplicate would wait for its whole timeout before being
/// placed again.
struct Attempt {
    tasks: Tasks,
    channel: Channel,
    id: TaskId,
    attempt: u32,
    reply: Option<TaskReply>,
}

impl Attempt {
    /// Reports `reply` (`None`: the request failed or timed out).
    fn finish(mut self, reply: Option<TaskReply>) {
        self.reply = reply;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let inner = &self.tasks.inner;
        inner.metrics.tasks_in_flight(-1);
        {
            let peer = self.channel.remote_peer_id();
            let mut s = lock(&inner.scheduler);
            match self.reply.take() {
                Some(reply) => s.handle_reply(peer, self.id, reply, now()),
                None if self.channel.is_closed() => {
                    s.handle_lost(peer, self.id, self.attempt, now());
                }
                None => s.handle_failure(peer, self.id, self.attempt, now()),
            }
        }
        inner.wake.notify_one();
    }
}

/// Takes a channel out of the workers (its running tasks are placed again)
/// when its job ends or is aborted.
struct Registered {
    tasks: Tasks,
    channel: Channel,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.tasks.unregister(&self.channel);
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
