//! Requests waiting for their responses, and their deadlines.
//!
//! A request's entry is also where its response lands: the reader puts the
//! frame in and wakes the requester, which takes it out. (A oneshot channel
//! per request cost an allocation and about 600 instructions of a round
//! trip.)
//!
//! A request's deadline is not a timer of its own: registering a timer
//! with tokio and clearing it again cost about 800 instructions of a
//! round trip that takes about 20,000 (`msgcost node-rtt` under
//! callgrind), more than any other single step of the node's. Instead a
//! channel has at most one **sweeper** task, sleeping until the earliest
//! deadline it knows of. When it wakes it drops the requests whose
//! deadline has passed (their requesters find no entry and see the time
//! is up, see [`expired`]) and sleeps until the next deadline, or ends when
//! none are left. A request whose deadline is earlier than the sweeper's
//! wakes it to sleep less; any other request, the common case on a busy
//! channel, only takes its table entry. The sweeper outlives the requests
//! it was started for by at most one timeout, and it holds the channel
//! weakly, so it never keeps a closed channel's memory.

use std::collections::hash_map::Entry;
use std::sync::{Mutex, Weak};
use std::task::{Context, Poll, Waker};

use futures::task::AtomicWaker;
use knotwork_core::lock;
use knotwork_wire::Frame;
use rustc_hash::FxHashMap;
use tokio::time::Instant;

/// A request waiting for its response.
pub(super) struct Pending {
    /// The message type of the response it wants.
    pub expected: u32,
    /// The largest response of that type.
    pub max_bytes: usize,
    /// When the requester stops waiting.
    pub deadline: Instant,
    answer: Answer,
}

impl Pending {
    /// The requester's waker, if it waits.
    fn waker(&mut self) -> Option<Waker> {
        match &mut self.answer {
            Answer::Waiting(w) => w.take(),
            Answer::Came(_) => None,
        }
    }

    /// A request for a response of type `expected`, at most `max_bytes`,
    /// until `deadline`.
    pub fn new(expected: u32, max_bytes: usize, deadline: Instant) -> Self {
        Self {
            expected,
            max_bytes,
            deadline,
            answer: Answer::Waiting(None),
        }
    }
}

/// Where a request's response is.
enum Answer {
    /// Not come yet; the requester's waker once it has waited.
    Waiting(Option<Waker>),
    /// Here, for the requester to take.
    Came(Frame),
}

/// Whether a requester that found its entry gone at `now` was dropped by
/// the sweeper (its time was up) rather than by the channel closing.
pub(super) fn expired(deadline: Instant, now: Instant) -> bool {
    now >= deadline
}

/// Wakes the requesters of `gone` (their entries were dropped).
fn wake_all(gone: Vec<Waker>) {
    gone.into_iter().for_each(Waker::wake);
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

    /// Forgets request `id` (its requester stopped waiting).
    pub fn remove(&self, id: u32) {
        lock(&self.table).waiting.remove(&id);
    }

    /// Hands `frame` to request `id` if it waits for one, and says whether
    /// the frame is what the request asked for (`fits` decides); `None`
    /// for a response to no waiting request (the frame is dropped).
    pub fn answer(
        &self,
        id: u32,
        frame: Frame,
        fits: impl FnOnce(&Pending, &Frame) -> bool,
    ) -> Option<bool> {
        let mut table = lock(&self.table);
        let pending = table.waiting.get_mut(&id)?;
        let Answer::Waiting(waker) = &mut pending.answer else {
            // A second response to one request.
            return None;
        };
        let waker = waker.take();
        let fit = fits(pending, &frame);
        pending.answer = Answer::Came(frame);
        drop(table);
        if let Some(waker) = waker {
            waker.wake();
        }
        Some(fit)
    }

    /// The response of request `id` if it came (`Some`); `None` if the
    /// request is gone (its time was up, or the channel closed); else
    /// waits for either.
    pub fn poll_answer(&self, id: u32, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut table = lock(&self.table);
        // (One probe of the table: the entry, then removed through it.)
        let Entry::Occupied(mut entry) = table.waiting.entry(id) else {
            return Poll::Ready(None);
        };
        if let Answer::Waiting(waker) = &mut entry.get_mut().answer {
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        match entry.remove().answer {
            Answer::Came(frame) => Poll::Ready(Some(frame)),
            Answer::Waiting(_) => Poll::Ready(None),
        }
    }

    /// Drops every request still waiting: their requesters see the channel
    /// closed (an answer that came stays for its requester), and ends the
    /// sweeper at once, so a closed channel's memory is not held until
    /// the last deadline.
    pub fn clear(&self) {
        let mut gone = Vec::new();
        {
            let mut table = lock(&self.table);
            table.waiting.retain(|_, p| {
                gone.extend(p.waker());
                matches!(p.answer, Answer::Came(_))
            });
            table.armed = None;
        }
        self.sweeper.wake();
        wake_all(gone);
    }

    /// The deadline the sweeper is to sleep until, if it is to go on.
    fn armed(&self) -> Option<Instant> {
        lock(&self.table).armed
    }

    /// Drops the requests due at `now`; returns the next deadline, `None`
    /// (the sweeper ends) when no request is left.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut gone = Vec::new();
        let next = {
            let mut table = lock(&self.table);
            // (An answer that came in time stays for its requester.)
            table.waiting.retain(|_, p| {
                let keep = p.deadline > now || matches!(p.answer, Answer::Came(_));
                if !keep {
                    gone.extend(p.waker());
                }
                keep
            });
            let next = table
                .waiting
                .values()
                .filter(|p| matches!(p.answer, Answer::Waiting(_)))
                .map(|p| p.deadline)
                .min();
            table.armed = next;
            next
        };
        wake_all(gone);
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

    use bytes::Bytes;
    use futures::FutureExt;

    use super::*;

    fn pending(deadline: Instant) -> Pending {
        Pending::new(1, 8, deadline)
    }

    fn frame() -> Frame {
        Frame::response(1, 7, Bytes::from_static(b"answer"))
    }

    /// Waits for request `id`'s answer.
    async fn answer_of(r: &Requests, id: u32) -> Option<Frame> {
        std::future::poll_fn(|cx| r.poll_answer(id, cx)).await
    }

    #[test]
    fn only_a_first_request_starts_a_sweeper_and_an_earlier_one_rearms_it() {
        let r = Requests::default();
        let t = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(r.insert(1, pending(t + 10 * s)), Arm::Start);
        assert_eq!(r.armed(), Some(t + 10 * s));
        assert_eq!(r.insert(2, pending(t + 20 * s)), Arm::Nothing);
        assert_eq!(r.armed(), Some(t + 10 * s));
        assert_eq!(r.insert(3, pending(t + 5 * s)), Arm::Nothing);
        assert_eq!(r.armed(), Some(t + 5 * s), "an earlier deadline rearms");
        // The sweep at 5 s drops request 3 and sleeps on until request 1's.
        assert_eq!(r.expire(t + 5 * s), Some(t + 10 * s));
        assert_eq!(r.len(), 2);
        // Both answered: the next sweep has nothing to wait for and the
        // sweeper ends; the answers stay for their requesters.
        assert_eq!(r.answer(1, frame(), |_, _| true), Some(true));
        assert_eq!(r.answer(2, frame(), |_, _| false), Some(false));
        assert_eq!(r.expire(t + 30 * s), None);
        assert_eq!(r.armed(), None);
        assert_eq!(r.len(), 2);
        assert_eq!(r.insert(4, pending(t + 30 * s)), Arm::Start);
    }

    #[test]
    fn an_answer_reaches_its_requester_once_and_only_while_it_waits() {
        let r = Requests::default();
        let t = Instant::now() + Duration::from_secs(10);
        let _ = r.insert(1, pending(t));
        let mut wait = Box::pin(answer_of(&r, 1));
        assert!((&mut wait).now_or_never().is_none(), "no answer yet");
        let fits = |p: &Pending, f: &Frame| f.msg_id == p.expected;
        assert_eq!(r.answer(1, frame(), fits), Some(true));
        assert_eq!(
            r.answer(1, frame(), fits),
            None,
            "a second answer is unsolicited"
        );
        assert_eq!(r.answer(9, frame(), fits), None, "no such request");
        assert_eq!(wait.now_or_never(), Some(Some(frame())));
        assert_eq!(r.len(), 0, "taken with its entry");
    }

    #[test]
    fn closing_drops_the_waiting_but_keeps_an_answer_that_came() {
        let r = Requests::default();
        let t = Instant::now() + Duration::from_secs(10);
        let _ = r.insert(1, pending(t));
        let _ = r.insert(2, pending(t));
        let _ = r.answer(2, frame(), |_, _| true);
        r.clear();
        assert_eq!(answer_of(&r, 1).now_or_never(), Some(None));
        assert_eq!(answer_of(&r, 2).now_or_never(), Some(Some(frame())));
    }

    #[test]
    fn a_request_due_exactly_now_expires_and_its_requester_can_tell() {
        let r = Requests::default();
        let t = Instant::now();
        let _ = r.insert(1, pending(t));
        assert_eq!(r.expire(t), None);
        assert_eq!(answer_of(&r, 1).now_or_never(), Some(None));
        assert!(expired(t, t));
        assert!(!expired(t + Duration::from_millis(1), t));
    }

    struct Owner(Requests);

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_drops_each_request_at_its_deadline_then_ends() {
        let owner = Arc::new(Owner(Requests::default()));
        let t = Instant::now();
        let ms = Duration::from_millis(1);
        assert_eq!(owner.0.insert(1, pending(t + 100 * ms)), Arm::Start);
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&owner), |o: &Owner| &o.0));
        tokio::task::yield_now().await;
        // An earlier deadline wakes the sleeping sweeper.
        assert_eq!(owner.0.insert(2, pending(t + 30 * ms)), Arm::Nothing);
        assert_eq!(answer_of(&owner.0, 2).await, None);
        assert!(expired(t + 30 * ms, Instant::now()));
        assert!(
            Instant::now() < t + 100 * ms,
            "request 2 went at its own deadline"
        );
        assert_eq!(owner.0.len(), 1, "request 1 still waits");
        assert_eq!(answer_of(&owner.0, 1).await, None);
        assert!(Instant::now() >= t + 100 * ms);
        // No request left: the sweeper has ended.
        sweeper.await.unwrap();
        assert_eq!(owner.0.armed(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_the_sweeper_at_once() {
        let owner = Arc::new(Owner(Requests::default()));
        let t = Instant::now();
        let _ = owner.0.insert(1, pending(t + Duration::from_secs(10)));
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&owner), |o: &Owner| &o.0));
        tokio::task::yield_now().await;
        owner.0.clear();
        sweeper.await.unwrap();
        assert_eq!(Instant::now(), t, "not at the deadline: at once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_ends_when_its_owner_is_gone() {
        let owner = Arc::new(Owner(Requests::default()));
        let t = Instant::now();
        let _ = owner.0.insert(1, pending(t + Duration::from_secs(10)));
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&owner), |o: &Owner| &o.0));
        tokio::task::yield_now().await;
        // The owner goes without clearing (its last reference dropped): the
        // sweeper's next look finds it gone. Paused time would otherwise
        // run on to the deadline, where an emptied table ends it anyway.
        let waker = Arc::clone(&owner);
        drop(owner);
        waker.0.sweeper.wake();
        drop(waker);
        sweeper.await.unwrap();
        assert_eq!(Instant::now(), t, "not at the deadline: at once");
    }
}
