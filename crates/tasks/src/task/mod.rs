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
//!
//! # Layout
//! - this module: the task, its messages, outcomes and errors;
//! - `scheduler`: [`Scheduler`] and [`TaskConfig`];
//! - `driver`: [`Tasks`], the dispatcher and the worker side.

use std::time::Duration;

use knotwork_core::PeerId;
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/task";
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
    /// On any task peer, the least busy first (see [`Resources`](crate::resource::Resources)).
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

mod driver;
mod scheduler;

pub use driver::Tasks;
pub use scheduler::{Dispatch, Scheduler, TaskConfig};

#[cfg(test)]
mod tests;
