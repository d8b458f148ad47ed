//! What a peer can make the node store, send or dial (issue 18): each test
//! is named for the review finding it covers.

use std::time::Duration;

use knotwork_core::{Keypair, PeerAddr, PeerId};

use super::*;
use crate::message::{WireAddr, WirePeer, WireRecord};
use crate::*;

fn tcp(s: &str) -> PeerAddr {
    s.parse().unwrap()
}

fn request(rid: u64, body: Request) -> DhtMessage {
    DhtMessage::Request {
        id: rid,
        client: false,
        body,
    }
}

fn add_provider(rid: u64, key: &[u8]) -> DhtMessage {
    request(
        rid,
        Request::AddProvider {
            key: key.to_vec(),
            addrs: vec![],
        },
    )
}

fn put(rid: u64, record: WireRecord) -> DhtMessage {
    request(rid, Request::PutValue { record })
}

/// A key (of the form `name-n`) whose position has `peer` closer than
/// `me`, if `peer_closer`, else farther.
fn key_where(me: &PeerId, peer: &PeerId, peer_closer: bool) -> Vec<u8> {
    (0u32..)
        .map(|n| format!("key-{n}").into_bytes())
        .find(|k| {
            let at = Key::hash(k);
            let closer =
                Key::from_peer_id(peer).distance(&at) < Key::from_peer_id(me).distance(&at);
            closer == peer_closer
        })
        .unwrap()
}

#[test]
fn h3_a_response_goes_back_to_the_asker_and_names_nothing_to_dial() {
    let mut d = Dht::new(id(0), config());
    let seen = tcp("tcp/198.51.100.7:4000");
    d.handle_message(
        Time(0),
        id(1),
        seen.clone(),
        request(7, Request::FindNode { target: [1; 32] }),
    )
    .unwrap();
    let t = drain(&mut d).remove(0);
    assert!(t.is_response());
    assert_eq!((t.to, t.addrs, t.heard_from), (id(1), vec![seen], None));
}

#[test]
fn h3_peers_listed_in_a_response_are_dialed_on_behalf_of_the_lister() {
    let now = Time(0);
    let (mut d, rid) = with_lookup(now);
    let listed = WirePeer {
        id: *id(9).as_bytes(),
        addrs: vec![WireAddr::Tcp("10.0.0.1:22".parse().unwrap())],
    };
    let mute = WirePeer {
        id: *id(8).as_bytes(),
        addrs: vec![],
    };
    d.handle_message(now, id(1), PeerAddr::Mem(1), nodes(rid, vec![listed, mute]))
        .unwrap();
    let out = drain(&mut d);
    // Peer 9 is asked at what peer 1 said, on peer 1's word; peer 8, with
    // no address, is not asked at all.
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, id(9));
    assert_eq!(out[0].addrs, vec![tcp("tcp/10.0.0.1:22")]);
    assert_eq!(out[0].heard_from, Some(PeerAddr::Mem(1)));
    assert!(!out[0].is_response());
    // A table entry's address is our own knowledge.
    d.find_node(now, Key::hash(b"again"));
    let out = drain(&mut d);
    assert!(out.iter().all(|t| t.to != id(1) || t.heard_from.is_none()));
}

#[test]
fn m11_a_client_request_takes_the_sender_out_of_the_table_and_says_so() {
    let mut cfg = config();
    cfg.k = 1;
    let mut d = Dht::new(id(0), cfg);
    let me = Key::from_peer_id(&id(0));
    let ps: Vec<PeerId> = (100..)
        .map(id)
        .filter(|p| me.bucket_index(&Key::from_peer_id(p)) == Some(0))
        .take(2)
        .collect();
    d.add_peer(Time(0), ps[0], &[PeerAddr::Mem(1)]).unwrap();
    // ps[1] waits in the replacement cache.
    d.add_peer(Time(0), ps[1], &[PeerAddr::Mem(2)]).unwrap();
    assert_eq!(events(&mut d), vec![Event::PeerAdded(ps[0])]);
    let client = |rid| DhtMessage::Request {
        id: rid,
        client: true,
        body: Request::Ping,
    };
    d.handle_message(Time(1), ps[0], PeerAddr::Mem(1), client(1))
        .unwrap();
    assert!(d.table().get(&ps[0]).is_none());
    assert_eq!(events(&mut d), vec![Event::PeerEvicted(ps[0])]);
    // A cached candidate that turns out a client leaves the cache silently
    // (it was never reported added).
    d.handle_message(Time(2), ps[1], PeerAddr::Mem(2), client(2))
        .unwrap();
    assert!(d.table().bucket(0).unwrap().replacements().is_empty());
    assert!(events(&mut d).is_empty());
}

#[test]
fn h4_provider_announcements_are_capped_and_an_honest_provider_still_found() {
    let mut d = Dht::new(id(0), config());
    let flooder = (id(1), tcp("tcp/203.0.113.5:4000"));
    for n in 0..10_000u32 {
        let msg = add_provider(u64::from(n), format!("junk-{n}").as_bytes());
        let r = d.handle_message(Time(0), flooder.0, flooder.1.clone(), msg);
        assert!(r.is_ok() || r == Err(DhtError::ProviderQuota), "{n}: {r:?}");
    }
    let quota = d.config().store.max_providers_per_peer;
    assert_eq!(d.store().provider_count(), quota);
    assert!(
        d.store().memory_estimate() < quota * 400,
        "{}",
        d.store().memory_estimate()
    );
    let honest = (id(2), tcp("tcp/198.51.100.9:4000"));
    d.handle_message(
        Time(0),
        honest.0,
        honest.1.clone(),
        add_provider(1, b"file"),
    )
    .unwrap();
    d.handle_message(
        Time(0),
        id(3),
        PeerAddr::Mem(3),
        request(
            2,
            Request::GetProviders {
                key: b"file".to_vec(),
            },
        ),
    )
    .unwrap();
    let found = drain(&mut d).into_iter().find_map(|t| match t.message {
        DhtMessage::Response {
            id: 2,
            body: Response::Providers { providers, .. },
        } => Some(providers),
        _ => None,
    });
    assert_eq!(found.unwrap()[0].id, *honest.0.as_bytes());
}

#[test]
fn h4_m5_records_and_providers_only_for_keys_we_are_among_the_closest_to() {
    let mut cfg = config();
    cfg.k = 1;
    let mut d = Dht::new(id(0), cfg);
    d.add_peer(Time(0), id(1), &[PeerAddr::Mem(1)]).unwrap();
    let far = key_where(&id(0), &id(1), true);
    let near = key_where(&id(0), &id(1), false);
    let from = (id(2), PeerAddr::Mem(2));
    assert_eq!(
        d.handle_message(Time(0), from.0, from.1.clone(), add_provider(1, &far)),
        Err(DhtError::NotClosest)
    );
    d.handle_message(Time(0), from.0, from.1.clone(), add_provider(2, &near))
        .unwrap();
    let kp = Keypair::generate().unwrap();
    let limits = RecordLimits::default();
    let record = |key: &[u8]| {
        Record::sign(&kp, key.to_vec(), b"v".to_vec(), Time(60_000), &limits)
            .unwrap()
            .to_wire()
    };
    assert_eq!(
        d.handle_message(Time(0), from.0, from.1.clone(), put(3, record(&far))),
        Err(DhtError::NotClosest)
    );
    d.handle_message(Time(0), from.0, from.1.clone(), put(4, record(&near)))
        .unwrap();
    assert_eq!(d.store().len(), 1);
}

#[test]
fn m5_an_identical_record_is_taken_without_checking_it_again() {
    let mut cfg = config();
    cfg.k = 1;
    let mut d = Dht::new(id(0), cfg);
    let kp = Keypair::generate().unwrap();
    let limits = RecordLimits::default();
    let key = key_where(&id(0), &id(1), false);
    let sign = |v: &[u8]| {
        Record::sign(&kp, key.clone(), v.to_vec(), Time(60_000), &limits)
            .unwrap()
            .to_wire()
    };
    let from = (id(2), PeerAddr::Mem(2));
    d.handle_message(Time(0), from.0, from.1.clone(), put(1, sign(b"v")))
        .unwrap();
    // A closer peer appears: any other record for the key is refused
    // before its checks, but a copy of the one held is acknowledged as is.
    let closer = (100..)
        .map(id)
        .find(|p| {
            let at = Key::hash(&key);
            Key::from_peer_id(p).distance(&at) < Key::from_peer_id(&id(0)).distance(&at)
        })
        .unwrap();
    d.add_peer(Time(0), closer, &[PeerAddr::Mem(9)]).unwrap();
    assert_eq!(
        d.handle_message(Time(1), from.0, from.1.clone(), put(2, sign(b"w"))),
        Err(DhtError::NotClosest)
    );
    d.handle_message(Time(1), from.0, from.1.clone(), put(3, sign(b"v")))
        .unwrap();
}

#[test]
fn m5_records_of_one_publisher_are_capped_at_its_quota() {
    let mut d = Dht::new(id(0), config());
    let kp = Keypair::generate().unwrap();
    let limits = RecordLimits::default();
    let from = (id(1), tcp("tcp/203.0.113.5:4000"));
    let mut refused = 0;
    for n in 0..5_000u32 {
        let rec = Record::sign(
            &kp,
            n.to_be_bytes().to_vec(),
            vec![1],
            Time(60_000),
            &limits,
        );
        match d.handle_message(
            Time(0),
            from.0,
            from.1.clone(),
            put(u64::from(n), rec.unwrap().to_wire()),
        ) {
            Ok(()) => {}
            Err(DhtError::PublisherQuota) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let quota = d.config().store.max_records_per_publisher;
    assert_eq!((d.store().len(), refused), (quota, 5_000 - quota));
    // Past its quota, a record costs no signature check: a forged one is
    // refused for the quota, not for its signature.
    let mut forged = Record::sign(&kp, b"new".to_vec(), vec![1], Time(60_000), &limits)
        .unwrap()
        .to_wire();
    forged.value = b"forged".to_vec();
    assert_eq!(
        d.handle_message(Time(0), from.0, from.1.clone(), put(1, forged)),
        Err(DhtError::PublisherQuota)
    );
}

#[test]
fn m5_records_held_for_others_replicate_a_few_at_a_time() {
    let cfg = Config {
        max_replications: 2,
        replicate_interval: Some(Duration::from_secs(60)),
        maintenance_interval: Duration::from_secs(60),
        refresh_interval: Duration::from_secs(1_000_000),
        request_timeout: Duration::from_secs(1),
        query_timeout: Duration::from_secs(2),
        // The silent peers stay in the table, to be asked by every query.
        max_failures: u32::MAX,
        ..config()
    };
    let mut d = Dht::new(id(0), cfg);
    for n in 1..=3 {
        d.add_peer(Time(0), id(n), &[PeerAddr::Mem(n)]).unwrap();
    }
    let kp = Keypair::generate().unwrap();
    let limits = RecordLimits::default();
    for n in 0..10u8 {
        let rec = Record::sign(&kp, vec![n], vec![n], Time(3_600_000), &limits).unwrap();
        d.handle_message(
            Time(0),
            id(1),
            PeerAddr::Mem(1),
            put(u64::from(n), rec.to_wire()),
        )
        .unwrap();
    }
    drain(&mut d);
    // Nobody answers: each replication ends at its query timeout, and the
    // next ones start; never more than two at once, all ten in the end.
    let mut targets = std::collections::BTreeSet::new();
    let mut now = Time(60_000);
    while now < Time(100_000) {
        d.handle_timeout(now);
        assert!(
            d.running_queries() <= 2,
            "{} at {now:?}",
            d.running_queries()
        );
        for t in drain(&mut d) {
            if let DhtMessage::Request {
                body: Request::FindNode { target },
                ..
            } = t.message
            {
                targets.insert(target);
            }
        }
        now = d.poll_timeout().unwrap();
    }
    assert_eq!(targets.len(), 10);
}

#[test]
fn l12_a_lookup_for_one_publisher_passes_over_another_publishers_record() {
    let now = Time(0);
    let (owner, squatter) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    let limits = RecordLimits::default();
    let sign = |kp: &Keypair| {
        Record::sign(
            kp,
            b"app/name".to_vec(),
            b"v".to_vec(),
            Time(60_000),
            &limits,
        )
        .unwrap()
    };
    let value = |rid, record: &Record, closer| DhtMessage::Response {
        id: rid,
        body: Response::Value {
            record: Some(record.to_wire()),
            closer,
        },
    };
    let rid_of = |t: &Transmit| match t.message {
        DhtMessage::Request { id, .. } => id,
        DhtMessage::Response { .. } => panic!("a response"),
    };
    let mut d = Dht::new(id(0), config());
    d.add_peer(now, id(1), &[PeerAddr::Mem(1)]).unwrap();
    let q = d.get_record_by(now, b"app/name", owner.peer_id()).unwrap();
    let rid = rid_of(&drain(&mut d)[0]);
    // Peer 1 holds the squatter's record: valid, passed over; peer 2 next.
    d.handle_message(
        now,
        id(1),
        PeerAddr::Mem(1),
        value(rid, &sign(&squatter), vec![wire_peer(2)]),
    )
    .unwrap();
    let out = drain(&mut d);
    assert_eq!(out[0].to, id(2));
    d.handle_message(
        now,
        id(2),
        PeerAddr::Mem(2),
        value(rid_of(&out[0]), &sign(&owner), vec![]),
    )
    .unwrap();
    let found = events(&mut d).into_iter().find_map(|e| match e {
        Event::QueryFinished {
            id,
            result: QueryResult::GetValue { record, .. },
            ..
        } if id == q => Some(record),
        _ => None,
    });
    assert_eq!(found.unwrap().unwrap().publisher, owner.peer_id());
}
