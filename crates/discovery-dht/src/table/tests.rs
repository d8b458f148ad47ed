use super::*;
use std::net::{Ipv4Addr, SocketAddr};

fn id(n: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    PeerId::from_bytes(&b).unwrap()
}

fn mem(n: u64) -> Vec<PeerAddr> {
    vec![PeerAddr::Mem(n)]
}

fn tcp(a: u8, b: u8, c: u8, d: u8) -> Vec<PeerAddr> {
    vec![PeerAddr::Tcp(SocketAddr::from((
        Ipv4Addr::new(a, b, c, d),
        4000,
    )))]
}

/// Peers (by counter) whose key lands in bucket `idx` of `table`.
fn peers_in_bucket(table: &RoutingTable, idx: usize, n: usize) -> Vec<PeerId> {
    (1000..)
        .map(id)
        .filter(|p| table.local_key().bucket_index(&Key::from_peer_id(p)) == Some(idx))
        .take(n)
        .collect()
}

#[test]
fn entries_land_in_their_prefix_bucket_ordered_by_last_seen() {
    let me = id(0);
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 20, 4, None);
    assert_eq!(t.insert(Time(0), me, &mem(0)), Err(DhtError::SelfEntry));
    for n in 1..200 {
        t.insert(Time(n), id(n), &mem(n)).unwrap();
    }
    for (idx, b) in (0..t.bucket_count()).filter_map(|i| t.bucket(i).map(|b| (i, b))) {
        for e in b.entries() {
            assert_eq!(t.local_key().bucket_index(&e.key), Some(idx));
        }
        assert!(
            b.entries()
                .windows(2)
                .all(|w| w[0].last_seen <= w[1].last_seen)
        );
        assert!(b.entries().len() <= 20);
    }
    // Bucket 0 holds the far half: it filled up first.
    assert_eq!(t.bucket(0).unwrap().entries().len(), 20);
    // Hearing from the oldest entry again moves it to the back.
    let oldest = t.bucket(0).unwrap().entries()[0].peer_id;
    assert_eq!(
        t.insert(Time(500), oldest, &mem(1)),
        Ok(InsertOutcome::Updated)
    );
    assert_eq!(
        t.bucket(0).unwrap().entries().last().unwrap().peer_id,
        oldest
    );
}

#[test]
fn eviction_only_after_failed_liveness_check() {
    let me = id(0);
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 2, 2, None);
    let ps = peers_in_bucket(&t, 0, 5);
    t.insert(Time(1), ps[0], &mem(0)).unwrap();
    t.insert(Time(2), ps[1], &mem(1)).unwrap();
    // Full: the candidate is cached and the least recently seen is pinged.
    let out = t.insert(Time(3), ps[2], &mem(2)).unwrap();
    assert_eq!(
        out,
        InsertOutcome::Full {
            ping: Some(PeerInfo {
                peer_id: ps[0],
                addrs: mem(0)
            })
        }
    );
    // A second candidate does not start a second ping.
    assert_eq!(
        t.insert(Time(4), ps[3], &mem(3)).unwrap(),
        InsertOutcome::Full { ping: None }
    );
    assert_eq!(t.bucket(0).unwrap().replacements().len(), 2);
    // The ping succeeds: nobody is evicted, the old entry is now newest.
    assert_eq!(t.ping_result(Time(5), &ps[0], true), None);
    let ids: Vec<_> = t
        .bucket(0)
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.peer_id)
        .collect();
    assert_eq!(ids, vec![ps[1], ps[0]]);
    // Next candidate pings ps[1]; that ping fails: ps[1] goes, the newest
    // candidate comes in.
    let out = t.insert(Time(6), ps[4], &mem(4)).unwrap();
    assert!(matches!(out, InsertOutcome::Full { ping: Some(ref p) } if p.peer_id == ps[1]));
    let ev = t.ping_result(Time(7), &ps[1], false).unwrap();
    assert_eq!(
        ev,
        Eviction {
            evicted: ps[1],
            promoted: Some(ps[4])
        }
    );
    assert!(t.get(&ps[1]).is_none() && t.get(&ps[4]).is_some());
    assert_eq!(t.len(), 2);
}

#[test]
fn recently_seen_oldest_entry_is_not_pinged() {
    let me = id(0);
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 1, 2, None)
        .with_ping_after(Duration::from_secs(30));
    let ps = peers_in_bucket(&t, 0, 3);
    t.insert(Time(1_000), ps[0], &mem(0)).unwrap();
    let out = t.insert(Time(20_000), ps[1], &mem(1)).unwrap();
    assert_eq!(out, InsertOutcome::Full { ping: None });
    assert_eq!(t.bucket(0).unwrap().pinging(), None);
    let out = t.insert(Time(31_000), ps[2], &mem(2)).unwrap();
    assert!(matches!(out, InsertOutcome::Full { ping: Some(ref p) } if p.peer_id == ps[0]));
}

#[test]
fn failed_request_triggers_check_only_with_a_candidate() {
    let me = id(0);
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 2, 2, None);
    let ps = peers_in_bucket(&t, 0, 3);
    t.insert(Time(1), ps[0], &mem(0)).unwrap();
    t.insert(Time(2), ps[1], &mem(1)).unwrap();
    assert_eq!(t.request_failed(&ps[1]), Failed::Kept { ping: None });
    assert_eq!(t.bucket(0).unwrap().entries()[0].peer_id, ps[1]);
    // Bucket full: candidate pings the (failed) least recently seen ps[1].
    let out = t.insert(Time(3), ps[2], &mem(2)).unwrap();
    assert!(matches!(out, InsertOutcome::Full { ping: Some(ref p) } if p.peer_id == ps[1]));
    assert!(t.get(&ps[1]).is_some());
}

#[test]
fn an_entry_that_fails_requests_in_a_row_leaves_without_a_candidate() {
    let me = id(0);
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 20, 2, None).with_max_failures(2);
    let ps = peers_in_bucket(&t, 0, 2);
    t.insert(Time(1), ps[0], &mem(0)).unwrap();
    t.insert(Time(1), ps[1], &mem(1)).unwrap();
    assert_eq!(t.request_failed(&ps[0]), Failed::Kept { ping: None });
    // Heard from again: the count starts over.
    t.insert(Time(2), ps[0], &mem(0)).unwrap();
    assert_eq!(t.get(&ps[0]).unwrap().failures, 0);
    assert_eq!(t.request_failed(&ps[0]), Failed::Kept { ping: None });
    assert_eq!(
        t.request_failed(&ps[0]),
        Failed::Evicted(Eviction {
            evicted: ps[0],
            promoted: None
        })
    );
    assert!(t.get(&ps[0]).is_none());
    assert_eq!(t.len(), 1);
    assert_eq!(t.request_failed(&ps[0]), Failed::Absent);
}

#[test]
fn subnet_limits_per_bucket_and_per_table() {
    let me = id(0);
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 20, 4, Some((2, 10)));
    let b0 = peers_in_bucket(&t, 0, 3);
    t.insert(Time(1), b0[0], &tcp(10, 0, 0, 1)).unwrap();
    t.insert(Time(1), b0[1], &tcp(10, 0, 0, 2)).unwrap();
    assert_eq!(
        t.insert(Time(1), b0[2], &tcp(10, 0, 0, 3)),
        Err(DhtError::BucketSubnetLimit)
    );
    t.insert(Time(1), b0[2], &tcp(10, 0, 1, 3)).unwrap();
    // Table-wide: 10 in one /24 across buckets, the 11th is refused.
    let mut placed = 2;
    let mut refused = None;
    for idx in 1..12 {
        for p in peers_in_bucket(&t, idx, 2) {
            match t.insert(Time(2), p, &tcp(10, 0, 0, 100 + placed as u8)) {
                Ok(_) => placed += 1,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if refused.is_some() {
            break;
        }
    }
    assert_eq!(placed, 10);
    assert_eq!(refused, Some(DhtError::TableSubnetLimit));
    // Removing one frees a table slot.
    assert!(t.remove(&b0[0]));
    let p = peers_in_bucket(&t, 0, 10)[9];
    t.insert(Time(3), p, &tcp(10, 0, 0, 250)).unwrap();
}

#[test]
fn l2_m4_mapped_and_relayed_addresses_count_against_the_right_subnet() {
    let me = id(0);
    let a = |s: &str| vec![s.parse::<PeerAddr>().unwrap()];
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 20, 4, Some((2, 10)));
    let b0 = peers_in_bucket(&t, 0, 6);
    // An IPv4 peer seen by a dual-stack listener is in its IPv4 /24.
    t.insert(Time(1), b0[0], &a("tcp/[::ffff:10.0.0.1]:4000"))
        .unwrap();
    t.insert(Time(1), b0[1], &a("tcp/10.0.0.2:4000")).unwrap();
    assert_eq!(
        t.insert(Time(1), b0[2], &a("tcp/[::ffff:10.0.0.3]:4000")),
        Err(DhtError::BucketSubnetLimit)
    );
    // Peers behind one relay are in the relay's subnet.
    let relay: PeerAddr = "tcp/192.0.2.1:4000".parse().unwrap();
    let behind = |n: usize| vec![PeerAddr::relayed(relay.clone(), id(77), b0[n]).unwrap()];
    t.insert(Time(1), b0[3], &behind(3)).unwrap();
    t.insert(Time(1), b0[4], &a("tcp/192.0.2.200:4000"))
        .unwrap();
    assert_eq!(
        t.insert(Time(1), b0[5], &behind(5)),
        Err(DhtError::BucketSubnetLimit)
    );
}

#[test]
fn closest_matches_brute_force() {
    let me = id(0);
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 20, 0, None);
    for n in 1..600 {
        let _ = t.insert(Time(n), id(n), &mem(n));
    }
    for probe in 0..50u8 {
        let target = Key::hash(&[probe]);
        let got: Vec<_> = t.closest(&target, 20).iter().map(|e| e.peer_id).collect();
        let mut all: Vec<_> = t.iter().collect();
        all.sort_by_key(|e| e.key.distance(&target));
        let want: Vec<_> = all.iter().take(20).map(|e| e.peer_id).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn stale_buckets_follow_lookups() {
    let me = id(0);
    let mut t = RoutingTable::new(Key::from_peer_id(&me), 20, 0, None);
    for n in 1..100 {
        let _ = t.insert(Time(0), id(n), &mem(n));
    }
    let interval = std::time::Duration::from_secs(60);
    let all = t.stale_buckets(Time(60_000), interval);
    assert_eq!(all.len(), t.bucket_count());
    t.touch_bucket(0, Time(30_000));
    let some = t.stale_buckets(Time(60_000), interval);
    assert!(!some.contains(&0) && some.len() == all.len() - 1);
}
