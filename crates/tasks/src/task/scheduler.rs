//! The sans-IO task [`Scheduler`] of a submitter; see the module docs of
//! [`crate::task`].

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use knotwork_core::PeerId;

use super::{Placement, Task, TaskError, TaskId, TaskOutcome, TaskReply, TaskResult, check_sizes};

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
