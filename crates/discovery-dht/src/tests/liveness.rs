//! Liveness-checked eviction, client mode and timeouts.

use std::time::Duration;

use knotwork_core::{PeerAddr, PeerId};

use super::*;
use crate::*;

#[test]
fn full_bucket_evicts_only_after_ping_times_out() {
    let mut cfg = config();
    cfg.k = 2;
    cfg.subnet_limits = None;
    cfg.liveness_interval = Duration::ZERO;
    let mut d = Dht::new(id(0), cfg);
    let me = Key::from_peer_id(&id(0));
    // Three peers of bucket 0.
    let ps: Vec<PeerId> = (100..)
        .map(id)
        .filter(|p| me.bucket_index(&Key::from_peer_id(p)) == Some(0))
        .take(3)
        .collect();
    let find_req = |from: PeerId, n: u64| -> (PeerId, PeerAddr, DhtMessage) {
        (
            from,
            PeerAddr::Mem(n),
            DhtMessage::Request {
                id: n,
                client: false,
                body: Request::FindNode { target: [0; 32] },
            },
        )
    };
    for (n, p) in ps.iter().take(2).enumerate() {
        let (f, a, m) = find_req(*p, n as u64);
        d.handle_message(Time(n as u64), f, a, m).unwrap();
    }
    drain(&mut d);
    events(&mut d);
    // The third peer finds the bucket full: the oldest entry is pinged.
    let (f, a, m) = find_req(ps[2], 2);
    d.handle_message(Time(10), f, a, m).unwrap();
    let out = drain(&mut d);
    let ping = out
        .iter()
        .find(|t| {
            matches!(
                t.message,
                DhtMessage::Request {
                    body: Request::Ping,
                    ..
                }
            )
        })
        .expect("a liveness ping");
    assert_eq!(ping.to, ps[0]);
    assert!(d.table().get(&ps[2]).is_none());
    // Nothing happens before the timeout…
    let deadline = d.poll_timeout().unwrap();
    assert_eq!(deadline, Time(10) + Duration::from_secs(5));
    d.handle_timeout(Time(10) + Duration::from_secs(4));
    assert!(d.table().get(&ps[0]).is_some());
    // …then the silent entry is replaced by the candidate.
    d.handle_timeout(deadline);
    assert!(d.table().get(&ps[0]).is_none());
    assert!(d.table().get(&ps[2]).is_some());
    let ev = events(&mut d);
    assert!(ev.contains(&Event::PeerEvicted(ps[0])));
    assert!(ev.contains(&Event::PeerAdded(ps[2])));
}

#[test]
fn a_ping_from_a_stranger_is_answered_but_no_introduction() {
    let mut d = Dht::new(id(0), config());
    let ping = DhtMessage::Request {
        id: 3,
        client: false,
        body: Request::Ping,
    };
    d.handle_message(Time(0), id(1), PeerAddr::Mem(1), ping.clone())
        .unwrap();
    assert!(d.table().get(&id(1)).is_none());
    assert!(matches!(
        drain(&mut d)[0].message,
        DhtMessage::Response {
            id: 3,
            body: Response::Pong
        }
    ));
    d.add_peer(Time(0), id(1), &[PeerAddr::Mem(1)]).unwrap();
    d.handle_message(Time(7), id(1), PeerAddr::Mem(1), ping)
        .unwrap();
    assert_eq!(d.table().get(&id(1)).unwrap().last_seen, Time(7));
}

#[test]
fn full_bucket_keeps_entry_that_answers_the_ping() {
    let mut cfg = config();
    cfg.k = 1;
    cfg.liveness_interval = Duration::ZERO;
    let mut d = Dht::new(id(0), cfg);
    let me = Key::from_peer_id(&id(0));
    let ps: Vec<PeerId> = (100..)
        .map(id)
        .filter(|p| me.bucket_index(&Key::from_peer_id(p)) == Some(0))
        .take(2)
        .collect();
    d.add_peer(Time(0), ps[0], &[PeerAddr::Mem(1)]).unwrap();
    let out = d.add_peer(Time(1), ps[1], &[PeerAddr::Mem(2)]).unwrap();
    assert!(matches!(out, InsertOutcome::Full { ping: Some(_) }));
    let t = drain(&mut d).remove(0);
    let DhtMessage::Request { id: rid, .. } = t.message else {
        panic!("expected ping");
    };
    let pong = DhtMessage::Response {
        id: rid,
        body: Response::Pong,
    };
    d.handle_message(Time(2), ps[0], PeerAddr::Mem(1), pong)
        .unwrap();
    d.handle_timeout(Time(100_000));
    assert!(d.table().get(&ps[0]).is_some());
    assert!(d.table().get(&ps[1]).is_none());
    assert!(
        !events(&mut d)
            .iter()
            .any(|e| matches!(e, Event::PeerEvicted(_)))
    );
}

#[test]
fn client_requests_do_not_enter_the_table_and_clients_serve_nobody() {
    let now = Time(0);
    let mut server = Dht::new(id(0), config());
    let mut client = Dht::new(
        id(1),
        Config {
            mode: Mode::Client,
            ..config()
        },
    );
    client.add_peer(now, id(0), &[PeerAddr::Mem(0)]).unwrap();
    client.find_node(now, Key::hash(b"x"));
    let t = drain(&mut client).remove(0);
    assert!(matches!(
        t.message,
        DhtMessage::Request { client: true, .. }
    ));
    server
        .handle_message(now, id(1), PeerAddr::Mem(1), t.message)
        .unwrap();
    assert!(server.table().get(&id(1)).is_none());
    assert_eq!(drain(&mut server).len(), 1, "the server still answers");
    let ping = DhtMessage::Request {
        id: 1,
        client: false,
        body: Request::Ping,
    };
    client
        .handle_message(now, id(0), PeerAddr::Mem(0), ping)
        .unwrap();
    assert!(drain(&mut client).is_empty());
}

#[test]
fn silent_peers_fail_per_request_and_queries_end_at_their_deadline() {
    let cfg = Config {
        request_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(3),
        alpha: 1,
        subnet_limits: None,
        ..Config::default()
    };
    let mut d = Dht::new(id(0), cfg);
    for n in 1..=3 {
        d.add_peer(Time(0), id(n), &[PeerAddr::Mem(n)]).unwrap();
    }
    let q = d.find_node(Time(0), Key::hash(b"t"));
    assert_eq!(drain(&mut d).len(), 1, "alpha = 1");
    // Per-request timeout: the silent peer fails and the next one is asked.
    assert_eq!(d.poll_timeout(), Some(Time(2_000)));
    d.handle_timeout(Time(2_000));
    assert_eq!(drain(&mut d).len(), 1);
    // Per-query timeout: at 3 s the query ends, though a request is pending.
    assert_eq!(d.poll_timeout(), Some(Time(3_000)));
    d.handle_timeout(Time(3_000));
    let ev = events(&mut d);
    assert!(ev.iter().any(|e| matches!(e,
        Event::QueryFinished { id, stats, .. }
            if *id == q && stats.timed_out && stats.failures == 1 && stats.requests == 2)));
    assert_eq!(d.running_queries(), 0);
}

#[test]
fn a_peer_that_fails_two_lookups_in_a_row_leaves_the_table() {
    // Found by `cargo xtask testnet`: a departed peer in a bucket with room
    // stayed forever, and every lookup near its key waited a request
    // timeout on it (routing tables held more entries than live nodes).
    let cfg = Config {
        request_timeout: Duration::from_secs(1),
        subnet_limits: None,
        ..Config::default()
    };
    let mut d = Dht::new(id(0), cfg);
    d.add_peer(Time(0), id(1), &[PeerAddr::Mem(1)]).unwrap();
    events(&mut d);
    for round in 0..2 {
        let t = Time(round * 10_000);
        d.find_node(t, Key::hash(b"t"));
        assert_eq!(drain(&mut d).len(), 1, "asks the one peer it knows");
        assert!(
            d.table().get(&id(1)).is_some(),
            "still there in round {round}"
        );
        d.handle_timeout(t + Duration::from_secs(1));
    }
    assert!(d.table().get(&id(1)).is_none(), "gone after two failures");
    assert!(
        events(&mut d)
            .iter()
            .any(|e| matches!(e, Event::PeerEvicted(p) if *p == id(1)))
    );
}
