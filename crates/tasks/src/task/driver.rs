//! [`Tasks`]: the task protocol's driver: the dispatcher that places work
//! over node channels, and the worker side that runs handlers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use knotwork_core::PeerId;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    Dispatch, MAX_ERROR_LEN, MAX_PAYLOAD_LEN, Placement, Scheduler, Task, TaskCancel, TaskConfig,
    TaskError, TaskId, TaskOutcome, TaskReply, TaskRequest, TaskResult, check_sizes,
};
use crate::metrics::{TaskEvent, TaskMetrics as Metrics};
use crate::resource::Resources;
use knotwork_core::lock;
use knotwork_node::Channel;

/// The tasks a worker runs for one peer: task id -> (attempt, the token
/// that stops it).
pub(super) type Running = HashMap<u64, (u32, CancellationToken)>;

/// How a worker takes a request from a peer: a request over the limits
/// ([`TaskError::KindTooLong`], [`TaskError::PayloadTooLong`]: its frame
/// fits `MAX_BYTES`, which bounds only the sum) or with the id of a task
/// the worker still runs for that peer in the same or a later attempt
/// ([`TaskError::DuplicateId`]) is an error; a later attempt of a running
/// task stops the earlier one and takes its slot (the submitter timed it
/// out; its cancel may still be on the way); `Ok(None)` when all `limit`
/// slots are busy; else the token that cancels the task, now counted in
/// `running`.
pub(super) fn admit(
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
pub(super) fn cancel_running(running: &Running, cancel: &TaskCancel) {
    if let Some((attempt, token)) = running.get(&cancel.id)
        && *attempt == cancel.attempt
    {
        token.cancel();
    }
}

/// A worker's task `id` in `attempt` has ended: it leaves `running`,
/// unless a later attempt has replaced it there.
pub(super) fn finished(running: &mut Running, id: u64, attempt: u32) {
    if running.get(&id).is_some_and(|(a, _)| *a == attempt) {
        running.remove(&id);
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

/// The task protocol of a node ([`crate::TasksService::tasks`]); cheap to clone.
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
