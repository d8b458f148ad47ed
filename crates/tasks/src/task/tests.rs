//! Unit tests of the task [`Scheduler`](super::Scheduler) on explicit times.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use knotwork_core::Keypair;

use super::driver::{Running, admit, cancel_running, finished};
use super::*;

fn peer() -> PeerId {
    Keypair::generate().unwrap().peer_id()
}

fn idle(_: &PeerId) -> f64 {
    0.0
}

fn cfg() -> TaskConfig {
    TaskConfig {
        max_in_flight_per_peer: 2,
        max_attempts: 3,
        worker_concurrency: 2,
    }
}

/// A scheduler with one worker up and task 1 submitted at `t0`.
fn one_task_on(worker: PeerId, t0: Instant) -> Scheduler {
    let mut s = Scheduler::new(cfg());
    s.peer_up(worker);
    s.submit(task(1), Placement::BestByResources, t0).unwrap();
    s
}

fn task(id: u64) -> Task {
    Task::new("k", vec![id as u8])
        .with_id(TaskId(id))
        .with_timeout(Duration::from_secs(10))
}

#[test]
fn test_in_flight_bound_holds_until_replies_free_slots() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg());
    let w = peer();
    s.peer_up(w);
    for i in 0..5 {
        s.submit(task(i), Placement::BestByResources, t0).unwrap();
    }
    let d1 = s.poll_dispatch(t0, &idle).unwrap();
    let d2 = s.poll_dispatch(t0, &idle).unwrap();
    assert_eq!((d1.task.id, d2.task.id), (TaskId(0), TaskId(1)), "in order");
    assert!(
        s.poll_dispatch(t0, &idle).is_none(),
        "two in flight at most"
    );
    assert_eq!((s.queued(), s.in_flight()), (3, 2));
    s.handle_reply(w, TaskId(0), TaskReply::Done(vec![9]), t0);
    let r = s.poll_result().unwrap();
    assert_eq!(r.outcome, TaskOutcome::Done(vec![9]));
    assert_eq!((r.worker, r.attempts), (Some(w), 1));
    assert_eq!(s.poll_dispatch(t0, &idle).unwrap().task.id, TaskId(2));
}

#[test]
fn test_running_worker_down_requeues_on_other_peer_and_late_reply_is_ignored() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg());
    let (a, b) = (peer(), peer());
    s.peer_up(a);
    s.submit(task(1), Placement::BestByResources, t0).unwrap();
    assert_eq!(s.poll_dispatch(t0, &idle).unwrap().peer, a);
    s.peer_up(b);
    assert_eq!(s.peer_down(&a, t0), 1);
    assert_eq!(s.retries(), 1);
    let d = s.poll_dispatch(t0, &idle).unwrap();
    assert_eq!(d.peer, b);
    s.handle_reply(b, TaskId(1), TaskReply::Done(vec![1]), t0);
    s.handle_reply(a, TaskId(1), TaskReply::Done(vec![1]), t0);
    s.handle_reply(b, TaskId(1), TaskReply::Done(vec![1]), t0);
    assert!(s.poll_result().is_some());
    assert!(s.poll_result().is_none(), "at most once");
}

#[test]
fn test_running_attempt_ignores_a_failure_of_an_earlier_one() {
    let (t0, a) = (Instant::now(), peer());
    let mut s = one_task_on(a, t0);
    let first = s.poll_dispatch(t0, &idle).unwrap();
    // The scheduler times the first attempt out and places it on a again.
    let t1 = t0 + Duration::from_secs(10);
    s.handle_timeout(t1);
    let second = s.poll_dispatch(t1, &idle).unwrap();
    assert_eq!((second.peer, second.attempt), (a, 2));
    // The first attempt's request reports its own timeout after that.
    s.handle_failure(a, TaskId(1), first.attempt, t1);
    assert_eq!(s.in_flight(), 1, "the second attempt still runs");
    assert_eq!(s.retries(), 1);
    s.handle_failure(a, TaskId(1), second.attempt, t1);
    assert_eq!((s.in_flight(), s.queued(), s.retries()), (0, 1, 2));
}

#[test]
fn test_lost_attempt_is_placed_again_without_a_cancel() {
    let (t0, a) = (Instant::now(), peer());
    let mut s = one_task_on(a, t0);
    let first = s.poll_dispatch(t0, &idle).unwrap();
    s.handle_lost(a, TaskId(1), first.attempt, t0);
    assert_eq!(
        s.poll_cancel(),
        None,
        "the worker stopped it with the channel"
    );
    let second = s.poll_dispatch(t0, &idle).unwrap();
    assert_eq!((second.peer, second.attempt), (a, 2));
}

#[test]
fn test_first_answer_wins_and_other_worker_is_cancelled() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg());
    let (a, b) = (peer(), peer());
    s.peer_up(a);
    s.peer_up(b);
    s.submit(task(1), Placement::Peers(vec![a]), t0).unwrap();
    let first = s.poll_dispatch(t0, &idle).unwrap();
    assert_eq!(first.attempt, 1);
    s.handle_failure(a, TaskId(1), first.attempt, t0);
    assert_eq!(
        s.poll_cancel(),
        Some((a, TaskId(1), 1)),
        "the failed attempt is stopped"
    );
    s.submit(task(2), Placement::Peers(vec![b]), t0).unwrap();
    assert_eq!(
        s.poll_dispatch(t0, &idle).unwrap().peer,
        a,
        "only a is allowed for task 1, retried first"
    );
    // a answers the first attempt late, while the retry runs on a too.
    s.handle_reply(a, TaskId(1), TaskReply::Done(vec![]), t0);
    assert_eq!(s.poll_result().unwrap().attempts, 2);
    assert_eq!(
        s.poll_cancel(),
        None,
        "the answering worker is not told to cancel"
    );
}

#[test]
fn test_timeout_retries_then_exhausts() {
    let (t0, w) = (Instant::now(), peer());
    let mut s = one_task_on(w, t0);
    let mut t = t0;
    for attempt in 1..=3 {
        let d = s.poll_dispatch(t, &idle).unwrap();
        assert_eq!(d.task.id, TaskId(1), "attempt {attempt}");
        assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(10)));
        t += Duration::from_secs(10);
        s.handle_timeout(t);
        assert_eq!(s.poll_cancel(), Some((w, TaskId(1), attempt)));
    }
    let r = s.poll_result().unwrap();
    assert_eq!((r.outcome, r.attempts), (TaskOutcome::Exhausted, 3));
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn test_queued_without_workers_gives_up_after_timeout() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg());
    s.submit(task(1), Placement::BestByResources, t0).unwrap();
    assert!(s.poll_dispatch(t0, &idle).is_none());
    s.handle_timeout(t0 + Duration::from_secs(9));
    assert!(s.poll_result().is_none());
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(s.poll_result().unwrap().outcome, TaskOutcome::NoWorkers);
}

#[test]
fn test_best_by_resources_prefers_idle_peer_and_busy_reply_moves_on() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg());
    let (a, b) = (peer(), peer());
    s.peer_up(a);
    s.peer_up(b);
    let busy_a = move |p: &PeerId| if *p == a { 5.0 } else { 0.1 };
    s.submit(task(1), Placement::BestByResources, t0).unwrap();
    assert_eq!(s.poll_dispatch(t0, &busy_a).unwrap().peer, b);
    s.handle_reply(b, TaskId(1), TaskReply::Busy, t0);
    assert_eq!(s.poll_cancel(), None, "a busy worker is not running it");
    assert_eq!(
        s.poll_dispatch(t0, &busy_a).unwrap().peer,
        a,
        "untried peers first"
    );
}

#[test]
fn test_cancel_running_task_reports_once_and_tells_worker() {
    let (t0, w) = (Instant::now(), peer());
    let mut s = one_task_on(w, t0);
    s.poll_dispatch(t0, &idle).unwrap();
    assert!(s.cancel(TaskId(1)));
    assert!(!s.cancel(TaskId(1)));
    assert_eq!(s.poll_cancel(), Some((w, TaskId(1), 1)));
    assert_eq!(s.poll_result().unwrap().outcome, TaskOutcome::Cancelled);
    s.handle_reply(w, TaskId(1), TaskReply::Done(vec![]), t0);
    assert!(s.poll_result().is_none());
}

#[test]
fn test_bad_submissions_name_their_fault() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg());
    s.submit(task(1), Placement::BestByResources, t0).unwrap();
    assert_eq!(
        s.submit(task(1), Placement::BestByResources, t0),
        Err(TaskError::DuplicateId)
    );
    let long = Task::new("k".repeat(MAX_KIND_LEN + 1), vec![]);
    assert_eq!(
        s.submit(long, Placement::BestByResources, t0),
        Err(TaskError::KindTooLong)
    );
    let big = Task::new("k", vec![0; MAX_PAYLOAD_LEN + 1]);
    assert_eq!(
        s.submit(big, Placement::BestByResources, t0),
        Err(TaskError::PayloadTooLong)
    );
    assert_eq!(
        s.submit(task(2), Placement::Peers(vec![]), t0),
        Err(TaskError::EmptyPlacement)
    );
}

#[test]
fn test_worker_names_the_fault_of_a_bad_request() {
    let mut running = HashMap::new();
    let req = |id: u64, kind: &str, len: usize| TaskRequest {
        id,
        attempt: 1,
        kind: kind.into(),
        payload: vec![0; len],
    };
    let long_kind = "k".repeat(MAX_KIND_LEN + 1);
    assert!(matches!(
        admit(&mut running, &req(1, &long_kind, 0), 2),
        Err(TaskError::KindTooLong)
    ));
    assert!(matches!(
        admit(&mut running, &req(1, "k", MAX_PAYLOAD_LEN + 1), 2),
        Err(TaskError::PayloadTooLong)
    ));
    assert!(running.is_empty(), "refused requests take no slot");
    let first = admit(&mut running, &req(1, "k", 1), 2).unwrap();
    assert!(first.is_some());
    assert!(
        matches!(
            admit(&mut running, &req(1, "k", 1), 2),
            Err(TaskError::DuplicateId)
        ),
        "a second request of a running attempt must not replace its cancel token"
    );
    assert!(admit(&mut running, &req(2, "k", 1), 2).unwrap().is_some());
    assert!(
        matches!(admit(&mut running, &req(3, "k", 1), 2), Ok(None)),
        "busy"
    );
    assert_eq!(running.len(), 2);
}

#[test]
fn a_later_attempt_replaces_the_running_one_and_an_old_cancel_misses_it() {
    let mut running = Running::new();
    let req = |attempt: u32| TaskRequest {
        id: 7,
        attempt,
        kind: "k".into(),
        payload: vec![],
    };
    let first = admit(&mut running, &req(1), 1).unwrap().unwrap();
    // Attempt 1 timed out at the submitter; attempt 2 reaches the worker
    // before the cancel of attempt 1 does.
    let second = admit(&mut running, &req(2), 1).unwrap().unwrap();
    assert!(first.is_cancelled(), "the earlier attempt is stopped");
    assert!(!second.is_cancelled());
    assert_eq!(running.len(), 1, "it takes the earlier attempt's slot");
    // An older attempt arriving late is refused.
    assert!(matches!(
        admit(&mut running, &req(1), 1),
        Err(TaskError::DuplicateId)
    ));
    // The late cancel of attempt 1 leaves attempt 2 running.
    cancel_running(&running, &TaskCancel { id: 7, attempt: 1 });
    assert!(!second.is_cancelled());
    // Attempt 1's job ends: attempt 2 stays counted.
    finished(&mut running, 7, 1);
    assert_eq!(running.len(), 1);
    cancel_running(&running, &TaskCancel { id: 7, attempt: 2 });
    assert!(second.is_cancelled());
    finished(&mut running, 7, 2);
    assert!(running.is_empty());
}
