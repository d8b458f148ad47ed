//! The reachability check and the dial-back limiter on explicit times.

use super::*;
use knotwork_core::Keypair;

fn peer() -> PeerId {
    Keypair::generate().unwrap().peer_id()
}

fn a(s: &str) -> PeerAddr {
    s.parse().unwrap()
}

fn config() -> ReachabilityConfig {
    ReachabilityConfig {
        quorum: 2,
        servers: 3,
        answer_timeout: Duration::from_secs(10),
        recheck: Duration::from_secs(600),
        retry: Duration::from_secs(30),
    }
}

/// An address in network (/24) number `n`.
fn net(n: usize) -> PeerAddr {
    a(&format!("tcp/198.51.{n}.7:4000"))
}

/// A check with `n` servers, each in a network of its own, and the peers
/// it asked at `now`.
fn asked(n: usize, now: Instant) -> (ReachabilityCheck, Vec<Question>) {
    let mut c = ReachabilityCheck::new(config(), now);
    for i in 0..n {
        c.add_server(peer(), &net(i));
    }
    let mut asked = Vec::new();
    while let Some(p) = c.poll_ask(now) {
        asked.push(p);
    }
    (c, asked)
}

#[test]
fn test_public_when_quorum_reached_the_same_address() {
    let t0 = Instant::now();
    let (mut c, asked) = asked(3, t0);
    assert_eq!(asked.len(), 3);
    let addr = a("tcp/203.0.113.5:4000");
    c.handle_answer(asked[0], Ok(addr.clone()), t0);
    assert_eq!(c.reachability(), &Reachability::Unknown);
    assert_eq!(c.poll_event(), None);
    c.handle_answer(asked[1], Ok(addr.clone()), t0);
    assert_eq!(c.reachability(), &Reachability::Public(addr.clone()));
    assert_eq!(c.poll_event(), Some(Reachability::Public(addr)));
    // The round ended: the third answer is ignored, the next round is due
    // after the recheck time.
    c.handle_answer(asked[2], Err(DialBackError::Unreachable), t0);
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(600)));
}

#[test]
fn test_private_when_quorum_failed() {
    let t0 = Instant::now();
    let (mut c, asked) = asked(3, t0);
    c.handle_answer(asked[0], Err(DialBackError::Unreachable), t0);
    c.handle_answer(asked[1], Ok(a("tcp/203.0.113.5:4000")), t0);
    assert_eq!(
        c.reachability(),
        &Reachability::Unknown,
        "one failure against one success"
    );
    c.handle_answer(asked[2], Err(DialBackError::HandshakeFailed), t0);
    assert_eq!(
        c.poll_event(),
        Some(Reachability::Private),
        "two against one"
    );
    let (mut c, asked) = self::asked(2, t0);
    c.handle_answer(asked[0], Err(DialBackError::WrongPeer), t0);
    c.handle_answer(asked[1], Err(DialBackError::Unreachable), t0);
    assert_eq!(c.poll_event(), Some(Reachability::Private));
}

#[test]
fn test_refusals_and_strangers_do_not_count() {
    let t0 = Instant::now();
    let (mut c, asked) = asked(3, t0);
    for (p, e) in asked.iter().zip([
        DialBackError::Busy,
        DialBackError::PeerRateLimited,
        DialBackError::ThirdParty,
    ]) {
        assert!(e.is_refusal());
        c.handle_answer(*p, Err(e), t0);
    }
    let stranger = Question {
        peer: peer(),
        id: 1,
    };
    c.handle_answer(stranger, Err(DialBackError::Unreachable), t0);
    c.handle_answer(stranger, Err(DialBackError::Unreachable), t0);
    assert_eq!(c.reachability(), &Reachability::Unknown);
    // The same peer answering twice counts once.
    let (mut c, asked) = self::asked(3, t0);
    c.handle_answer(asked[0], Err(DialBackError::Unreachable), t0);
    c.handle_answer(asked[0], Err(DialBackError::Unreachable), t0);
    assert_eq!(c.reachability(), &Reachability::Unknown);
}

#[test]
fn test_asks_at_most_servers_and_new_peers_as_they_come() {
    let t0 = Instant::now();
    let (mut c, asked) = asked(5, t0);
    assert_eq!(asked.len(), 3, "config.servers");
    let (mut c2, none) = self::asked(0, t0);
    assert!(none.is_empty());
    let late = peer();
    c2.add_server(late, &net(9));
    assert_eq!(
        c2.poll_ask(t0 + Duration::from_secs(1)).map(|q| q.peer),
        Some(late)
    );
    assert_eq!(c2.poll_ask(t0 + Duration::from_secs(1)), None);
    // A server that leaves drops out of the pending set.
    c.remove_server(&asked[0].peer, t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
}

#[test]
fn test_unanswered_round_retries_and_keeps_the_verdict() {
    let t0 = Instant::now();
    let (mut c, asked) = asked(2, t0);
    let addr = a("tcp/203.0.113.5:4000");
    c.handle_answer(asked[0], Ok(addr.clone()), t0);
    c.handle_answer(asked[1], Ok(addr.clone()), t0);
    assert_eq!(c.poll_event(), Some(Reachability::Public(addr.clone())));
    // Recheck: both asked again; nobody answers.
    let t1 = t0 + Duration::from_secs(600);
    assert_eq!(c.poll_timeout(), Some(t1));
    c.handle_timeout(t1);
    let again: Vec<Question> = std::iter::from_fn(|| c.poll_ask(t1)).collect();
    assert_eq!(again.len(), 2);
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(10)));
    c.handle_timeout(t1 + Duration::from_secs(10));
    // An answer after its deadline is ignored.
    c.handle_answer(again[0], Err(DialBackError::Unreachable), t1);
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(30)));
    assert_eq!(c.poll_ask(t1 + Duration::from_secs(11)), None);
    c.handle_timeout(t1 + Duration::from_secs(30));
    assert_eq!(c.reachability(), &Reachability::Public(addr));
    assert_eq!(c.poll_event(), None);
    // The retry round asks both again.
    let t2 = t1 + Duration::from_secs(30);
    assert_eq!(std::iter::from_fn(|| c.poll_ask(t2)).count(), 2);
}

#[test]
fn test_candidate_change_starts_a_round_now() {
    let t0 = Instant::now();
    let (mut c, asked) = asked(2, t0);
    for p in &asked {
        c.handle_answer(*p, Err(DialBackError::Unreachable), t0);
    }
    assert_eq!(c.poll_event(), Some(Reachability::Private));
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(c.poll_ask(t1), None, "next round after the recheck time");
    let upnp = a("tcp/203.0.113.5:4000");
    c.set_candidates(vec![upnp.clone()], t1);
    assert_eq!(c.poll_timeout(), Some(t1));
    let again: Vec<Question> = std::iter::from_fn(|| c.poll_ask(t1)).collect();
    assert_eq!(again.len(), 2);
    // The same set again (another order) changes nothing.
    c.set_candidates(vec![upnp.clone(), upnp.clone()], t1);
    assert_eq!(c.poll_ask(t1), None);
    for p in &again {
        c.handle_answer(*p, Ok(upnp.clone()), t1);
    }
    assert_eq!(c.poll_event(), Some(Reachability::Public(upnp)));
    // The mapping is lost: re-checked at once.
    c.set_candidates(Vec::new(), t1 + Duration::from_secs(1));
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(1)));
}

/// A round restarted by a candidate change asks the same peers again; the
/// late answers to the old questions do not count in the new round.
#[test]
fn test_answers_to_an_earlier_round_are_ignored() {
    let t0 = Instant::now();
    let (mut c, old) = asked(2, t0);
    let upnp = a("tcp/203.0.113.5:4000");
    c.set_candidates(vec![upnp.clone()], t0);
    let new: Vec<Question> = std::iter::from_fn(|| c.poll_ask(t0)).collect();
    assert_eq!(new.len(), 2);
    assert_eq!(new[0].peer, old[0].peer);
    for q in &old {
        c.handle_answer(*q, Err(DialBackError::Unreachable), t0);
    }
    assert_eq!(c.poll_event(), None, "stale failures");
    for q in &new {
        c.handle_answer(*q, Ok(upnp.clone()), t0);
    }
    assert_eq!(c.poll_event(), Some(Reachability::Public(upnp)));
}

/// M9: servers of one network (an IPv4 /24, an IPv6 /48) are one vote: a
/// round asks one of them, so they cannot make a quorum alone.
#[test]
fn m9_servers_of_one_network_count_once() {
    let t0 = Instant::now();
    let mut c = ReachabilityCheck::new(config(), t0);
    for host in 1..=5 {
        c.add_server(peer(), &a(&format!("tcp/198.51.100.{host}:4000")));
    }
    for host in 1..=5 {
        c.add_server(peer(), &a(&format!("tcp/[2001:db8:1:{host}::1]:4000")));
    }
    let round: Vec<Question> = std::iter::from_fn(|| c.poll_ask(t0)).collect();
    assert_eq!(round.len(), 2, "one per network");
    for q in &round {
        c.handle_answer(*q, Err(DialBackError::Unreachable), t0);
    }
    assert_eq!(c.poll_event(), Some(Reachability::Private), "two networks");
    // Two servers of one /24 alone never reach the quorum of 2.
    let mut c = ReachabilityCheck::new(config(), t0);
    c.add_server(peer(), &a("tcp/203.0.113.1:4000"));
    c.add_server(peer(), &a("tcp/203.0.113.2:4000"));
    let round: Vec<Question> = std::iter::from_fn(|| c.poll_ask(t0)).collect();
    assert_eq!(round.len(), 1);
    c.handle_answer(round[0], Err(DialBackError::Unreachable), t0);
    assert_eq!(c.reachability(), &Reachability::Unknown);
    // IPv4-mapped addresses are their IPv4 network.
    c.add_server(peer(), &a("tcp/[::ffff:203.0.113.3]:4000"));
    assert_eq!(c.poll_ask(t0), None);
}

#[test]
fn test_reachability_text() {
    assert_eq!(
        Reachability::Public(a("tcp/1.2.3.4:5")).to_string(),
        "public tcp/1.2.3.4:5"
    );
    assert_eq!(Reachability::Private.to_string(), "private");
    assert_eq!(Reachability::Unknown.to_string(), "unknown");
}

fn limits() -> DialBackLimits {
    DialBackLimits {
        per_peer: 2,
        per_net: 4,
        global: 3,
        window: Duration::from_secs(60),
        concurrent: 2,
    }
}

#[test]
fn test_dial_back_only_to_the_askers_ip() {
    let mut l = DialBackLimiter::new(limits());
    let t0 = Instant::now();
    let p = peer();
    let conn = a("tcp/198.51.100.7:50123");
    let third = a("tcp/192.0.2.1:4000");
    let own = a("tcp/198.51.100.7:4000");
    assert_eq!(
        l.admit(p, &conn, std::slice::from_ref(&third), t0),
        Err(DialBackError::ThirdParty)
    );
    assert_eq!(
        l.admit(p, &conn, &[third, own], t0),
        Ok("198.51.100.7:4000".parse().unwrap())
    );
    assert_eq!(l.running(), 1);
}

#[test]
fn test_dial_back_refuses_bad_requests_by_name() {
    let mut l = DialBackLimiter::new(limits());
    let t0 = Instant::now();
    let p = peer();
    let conn = a("tcp/198.51.100.7:50123");
    assert_eq!(
        l.admit(p, &a("mem/3"), &[a("tcp/198.51.100.7:4000")], t0),
        Err(DialBackError::NotDirect)
    );
    assert_eq!(l.admit(p, &conn, &[], t0), Err(DialBackError::NoCandidate));
    assert_eq!(
        l.admit(
            p,
            &conn,
            &[a("tcp/0.0.0.0:4000"), a("tcp/198.51.100.7:0"), a("mem/1")],
            t0
        ),
        Err(DialBackError::NoCandidate)
    );
    assert_eq!(l.running(), 0, "nothing admitted");
}

#[test]
fn test_dial_back_rate_limits_per_peer_global_and_concurrency() {
    let mut l = DialBackLimiter::new(limits());
    let t0 = Instant::now();
    let (p, q, r) = (peer(), peer(), peer());
    let conn = a("tcp/198.51.100.7:50123");
    let own = [a("tcp/198.51.100.7:4000")];
    l.admit(p, &conn, &own, t0).unwrap();
    l.admit(p, &conn, &own, t0).unwrap();
    // Two running: the concurrency bound comes after the rate bounds.
    assert_eq!(
        l.admit(p, &conn, &own, t0),
        Err(DialBackError::PeerRateLimited)
    );
    assert_eq!(l.admit(q, &conn, &own, t0), Err(DialBackError::Busy));
    l.finish();
    l.admit(q, &conn, &own, t0).unwrap();
    l.finish();
    assert_eq!(
        l.admit(r, &conn, &own, t0),
        Err(DialBackError::GlobalRateLimited)
    );
    // The window passes: admitted again.
    let later = t0 + Duration::from_secs(60);
    l.finish();
    assert_eq!(l.running(), 0);
    assert!(l.admit(r, &conn, &own, later).is_ok());
    assert!(l.admit(p, &conn, &own, later).is_ok());
}

/// L5: one network (a /24 here) spends its own budget, not the global one:
/// fresh identities from it are refused by name, askers elsewhere are not.
#[test]
fn l5_dial_back_budget_per_network_before_the_global_one() {
    let t0 = Instant::now();
    let mut l = DialBackLimiter::new(DialBackLimits {
        per_peer: 4,
        per_net: 2,
        global: 4,
        window: Duration::from_secs(60),
        concurrent: 8,
    });
    let ask = |l: &mut DialBackLimiter, ip: &str| {
        let conn = a(&format!("tcp/{ip}:50000"));
        l.admit(peer(), &conn, &[a(&format!("tcp/{ip}:4000"))], t0)
    };
    assert!(ask(&mut l, "198.51.100.1").is_ok());
    assert!(ask(&mut l, "198.51.100.2").is_ok());
    for host in 3..20 {
        assert_eq!(
            ask(&mut l, &format!("198.51.100.{host}")),
            Err(DialBackError::NetRateLimited)
        );
    }
    assert!(ask(&mut l, "203.0.113.1").is_ok(), "another network");
    assert!(ask(&mut l, "[2001:db8:7:1::1]").is_ok());
    assert_eq!(
        ask(&mut l, "[2001:db8:7:2::1]"),
        Err(DialBackError::GlobalRateLimited),
        "the global budget still holds"
    );
    assert!(DialBackError::NetRateLimited.is_refusal());
}
