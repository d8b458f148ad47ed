//! Requests waiting for their responses, and their deadlines.
//!
//! A request's deadline is not a timer of its own: registering a timer
//! with tokio and clearing it again cost about 800 instructions of a
//! round trip that takes about 20,000 (`msgcost node-rtt` under
//! callgrind), more than any other single step of the node's. Instead a
//! channel has at most one **sweeper** task, sleeping until the earliest
//! deadline it knows of. When it wakes it drops the requests whose
//! deadline has passed (their requesters then see the time is up, see
//! [`Pending::expired`]) and sleeps until the next deadline, or ends when
//! none are left. A request whose deadline is earlier than the sweeper's
//! wakes it to sleep less; any other request, the common case on a busy
//! channel, only takes its table entry. The sweeper outlives the requests
//! it was started for by at most one timeout, and it holds the channel
//! weakly, so it never keeps a closed channel's memory.

use std::sync::{Mutex, Weak};
use std::task::Poll;

use futures::task::AtomicWaker;
use knotwork_core::lock;
use knotwork_wire::Frame;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A request waiting for its response.
pub(super) struct Pending {
    /// The message type of the response it wants.
    pub expected: u32,
    /// The largest response of that type.
    pub max_bytes: usize,
    /// Where the response goes.
    pub tx: oneshot::Sender<Frame>,
    /// When the requester stops waiting.
    pub deadline: Instant,
}

impl Pending {
    /// Whether a requester whose response channel closed at `now` was
    /// dropped by the sweeper (its time was up) rather than by the channel
    /// closing.
    pub fn expired(deadline: Instant, now: Instant) -> bool {
        now >= deadline
    }
}

/// The requests of one channel; see the module docs.
#[derive(Default)]
pub(super) struct Requests {
    table: Mutex<Table>,
    /// The sweeper while it sleeps: woken when a deadline earlier than the
    /// one it sleeps until comes in.
    sweeper: AtomicWaker,
}

#[derive(Default)]
struct Table {
    /// Keyed by the ids this side hands out (a peer's response ids only
    /// look up): a fast hash, not a keyed one.
    waiting: FxHashMap<u32, Pending>,
    /// The deadline the sweeper sleeps until; `None` while there is no
    /// sweeper.
    armed: Option<Instant>,
}

/// What the caller of [`Requests::insert`] must do.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub(super) enum Arm {
    /// Nothing: the sweeper will be awake by the request's deadline.
    Nothing,
    /// Start a sweeper ([`sweep`]): there is none.
    Start,
}

impl Requests {
    /// Records request `id`.
    pub fn insert(&self, id: u32, pending: Pending) -> Arm {
        let deadline = pending.deadline;
        let mut table = lock(&self.table);
        table.waiting.insert(id, pending);
        match table.armed {
            None => {
                table.armed = Some(deadline);
                Arm::Start
            }
            Some(armed) if deadline < armed => {
                table.armed = Some(deadline);
                drop(table);
                self.sweeper.wake();
                Arm::Nothing
            }
            Some(_) => Arm::Nothing,
        }
    }

    /// Takes request `id`'s entry (its response came, or its requester
    /// stopped waiting).
    pub fn remove(&self, id: u32) -> Option<Pending> {
        lock(&self.table).waiting.remove(&id)
    }

    /// Drops every request: their requesters see the channel closed.
    pub fn clear(&self) {
        lock(&self.table).waiting.clear();
    }

    /// The deadline the sweeper is to sleep until, if it is to go on.
    fn armed(&self) -> Option<Instant> {
        lock(&self.table).armed
    }

    /// Drops the requests due at `now`; returns the next deadline, `None`
    /// (the sweeper ends) when no request is left.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut table = lock(&self.table);
        table.waiting.retain(|_, p| p.deadline > now);
        let next = table.waiting.values().map(|p| p.deadline).min();
        table.armed = next;
        next
    }

    /// Requests waiting now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.table).waiting.len()
    }
}

/// The sweeper of the [`Requests`] that `requests` finds in `owner`; see
/// the module docs. Ends when no request is left or the owner is gone.
pub(super) async fn sweep<T: Send + Sync + 'static>(owner: Weak<T>, requests: fn(&T) -> &Requests) {
    let mut sleep = Box::pin(tokio::time::sleep_until(Instant::now()));
    loop {
        let Some(target) = owner.upgrade().and_then(|o| requests(&o).armed()) else {
            return;
        };
        sleep.as_mut().reset(target);
        let due = std::future::poll_fn(|cx| {
            let Some(o) = owner.upgrade() else {
                return Poll::Ready(false);
            };
            let requests = requests(&o);
            requests.sweeper.register(cx.waker());
            if requests.armed() != Some(target) {
                // An earlier deadline came in (or the table moved on):
                // sleep until that one.
                return Poll::Ready(false);
            }
            sleep.as_mut().poll(cx).map(|()| true)
        })
        .await;
        if !due {
            continue;
        }
        let Some(o) = owner.upgrade() else {
            return;
        };
        if requests(&o).expire(Instant::now()).is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn pending(deadline: Instant) -> (Pending, oneshot::Receiver<Frame>) {
        let (tx, rx) = oneshot::channel();
        let p = Pending {
            expected: 1,
            max_bytes: 8,
            tx,
            deadline,
        };
        (p, rx)
    }

    #[test]
    fn only_a_first_request_starts_a_sweeper_and_an_earlier_one_rearms_it() {
        let r = Requests::default();
        let t = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(r.insert(1, pending(t + 10 * s).0), Arm::Start);
        assert_eq!(r.armed(), Some(t + 10 * s));
        assert_eq!(r.insert(2, pending(t + 20 * s).0), Arm::Nothing);
        assert_eq!(r.armed(), Some(t + 10 * s));
        assert_eq!(r.insert(3, pending(t + 5 * s).0), Arm::Nothing);
        assert_eq!(r.armed(), Some(t + 5 * s), "an earlier deadline rearms");
        // The sweep at 5 s drops request 3 and sleeps on until request 1's.
        assert_eq!(r.expire(t + 5 * s), Some(t + 10 * s));
        assert!(r.remove(3).is_none());
        assert_eq!(r.len(), 2);
        // Both answered: the next sweep finds nothing and the sweeper ends.
        assert!(r.remove(1).is_some() && r.remove(2).is_some());
        assert_eq!(r.expire(t + 10 * s), None);
        assert_eq!(r.armed(), None);
        assert_eq!(r.insert(4, pending(t + 30 * s).0), Arm::Start);
    }

    #[test]
    fn a_request_due_exactly_now_expires_and_its_requester_can_tell() {
        let r = Requests::default();
        let t = Instant::now();
        let (p, mut rx) = pending(t);
        let _ = r.insert(1, p);
        assert_eq!(r.expire(t), None);
        assert!(rx.try_recv().is_err(), "the sender is gone");
        assert!(Pending::expired(t, t));
        assert!(!Pending::expired(t + Duration::from_millis(1), t));
    }

    struct Owner(Requests);

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_drops_each_request_at_its_deadline_then_ends() {
        let owner = Arc::new(Owner(Requests::default()));
        let t = Instant::now();
        let ms = Duration::from_millis(1);
        let (a, mut ra) = pending(t + 100 * ms);
        assert_eq!(owner.0.insert(1, a), Arm::Start);
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&owner), |o: &Owner| &o.0));
        tokio::task::yield_now().await;
        // An earlier deadline wakes the sleeping sweeper.
        let (b, rb) = pending(t + 30 * ms);
        assert_eq!(owner.0.insert(2, b), Arm::Nothing);
        assert!(rb.await.is_err());
        assert!(Pending::expired(t + 30 * ms, Instant::now()));
        assert!(
            Instant::now() < t + 100 * ms,
            "request 2 went at its own deadline"
        );
        assert!(
            ra.try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        assert!(ra.await.is_err());
        assert!(Instant::now() >= t + 100 * ms);
        // No request left: the sweeper has ended.
        sweeper.await.unwrap();
        assert_eq!(owner.0.armed(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_ends_when_its_owner_is_gone() {
        let owner = Arc::new(Owner(Requests::default()));
        let (a, _ra) = pending(Instant::now() + Duration::from_secs(10));
        let _ = owner.0.insert(1, a);
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&owner), |o: &Owner| &o.0));
        tokio::task::yield_now().await;
        drop(owner);
        sweeper.await.unwrap();
    }
}
