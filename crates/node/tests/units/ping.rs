//! Moved from src: tests of `protocol::ping` through the public API.

use knotwork_node::protocol::ping::*;
use std::time::{Duration, Instant};

fn cfg() -> PingConfig {
    PingConfig {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn test_idle_ping_due_sends_then_pong_measures_rtt() {
    let t0 = Instant::now();
    let mut s = PingState::new(cfg(), t0);
    assert_eq!(s.poll_timeout(), t0);
    assert_eq!(s.handle_timeout(t0, 42), Some(PingAction::Send(42)));
    assert_eq!(
        s.poll_timeout(),
        t0 + Duration::from_secs(5),
        "waits for the pong"
    );
    assert_eq!(
        s.handle_pong(41, t0 + Duration::from_millis(30)),
        None,
        "wrong nonce"
    );
    assert_eq!(
        s.handle_pong(42, t0 + Duration::from_millis(30)),
        Some(Duration::from_millis(30))
    );
    assert_eq!(s.rtt(), Some(Duration::from_millis(30)));
    assert_eq!(
        s.handle_pong(42, t0 + Duration::from_millis(40)),
        None,
        "duplicate"
    );
    assert_eq!(
        s.poll_timeout(),
        t0 + Duration::from_secs(10),
        "next ping at interval"
    );
    assert_eq!(s.handle_timeout(t0 + Duration::from_secs(9), 7), None);
    assert_eq!(
        s.handle_timeout(t0 + Duration::from_secs(10), 7),
        Some(PingAction::Send(7))
    );
}

#[test]
fn test_outstanding_ping_times_out() {
    let t0 = Instant::now();
    let mut s = PingState::new(cfg(), t0);
    s.handle_timeout(t0, 1);
    assert_eq!(s.handle_timeout(t0 + Duration::from_millis(4999), 2), None);
    assert_eq!(
        s.handle_timeout(t0 + Duration::from_secs(5), 2),
        Some(PingAction::TimedOut)
    );
}

#[test]
fn test_late_wakeup_after_pong_sends_once() {
    let t0 = Instant::now();
    let mut s = PingState::new(cfg(), t0);
    s.handle_timeout(t0, 1);
    s.handle_pong(1, t0 + Duration::from_secs(1));
    let late = t0 + Duration::from_secs(30);
    assert_eq!(s.handle_timeout(late, 2), Some(PingAction::Send(2)));
    assert_eq!(
        s.handle_timeout(late, 3),
        None,
        "one ping outstanding at a time"
    );
}
