//! Hostile input: one test per [`DhtError`] variant a peer can cause.

use std::net::{Ipv4Addr, SocketAddr};

use knotwork_core::{Keypair, PeerAddr};

use super::*;
use crate::message::{WireAddr, WirePeer, WireRecord};
use crate::*;

#[test]
fn response_with_more_than_k_peers_is_refused() {
    let now = Time(0);
    let (mut d, rid) = with_lookup(now);
    let msg = nodes(rid, (10..31).map(wire_peer).collect());
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), msg),
        Err(DhtError::TooManyPeers { got: 21, max: 20 })
    );
    // The request counts as failed: the query is over, with nobody found.
    let ev = events(&mut d);
    assert!(ev.iter().any(|e| matches!(e,
        Event::QueryFinished { result: QueryResult::FindNode { closest, .. }, stats, .. }
            if closest.is_empty() && stats.failures == 1)));
}

#[test]
fn unsolicited_responses_are_refused() {
    let now = Time(0);
    let (mut d, rid) = with_lookup(now);
    // No such request.
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), nodes(rid + 100, vec![])),
        Err(DhtError::Unsolicited)
    );
    // Right id, wrong peer: the real request stays outstanding.
    assert_eq!(
        d.handle_message(now, id(2), PeerAddr::Mem(2), nodes(rid, vec![])),
        Err(DhtError::Unsolicited)
    );
    d.handle_message(now, id(1), PeerAddr::Mem(1), nodes(rid, vec![]))
        .unwrap();
    // Answering twice is unsolicited too.
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), nodes(rid, vec![])),
        Err(DhtError::Unsolicited)
    );
    // The peer was never added by the rogue response.
    assert!(d.table().get(&id(2)).is_none());
}

#[test]
fn response_of_the_wrong_kind_is_refused() {
    let now = Time(0);
    let (mut d, rid) = with_lookup(now);
    let msg = DhtMessage::Response {
        id: rid,
        body: Response::Pong,
    };
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), msg),
        Err(DhtError::UnexpectedResponse)
    );
}

#[test]
fn peer_claiming_many_addresses_in_one_subnet_is_refused() {
    let now = Time(0);
    let (mut d, rid) = with_lookup(now);
    let tcp = |last: u8| WireAddr::Tcp(SocketAddr::from((Ipv4Addr::new(192, 0, 2, last), 4000)));
    let flood = WirePeer {
        id: *id(9).as_bytes(),
        addrs: vec![tcp(1), tcp(2), tcp(3)],
    };
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), nodes(rid, vec![flood])),
        Err(DhtError::SubnetFlood { got: 3, max: 2 })
    );
    let (mut d, rid) = with_lookup(now);
    let many = WirePeer {
        id: *id(9).as_bytes(),
        addrs: (0..9).map(WireAddr::Mem).collect(),
    };
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), nodes(rid, vec![many])),
        Err(DhtError::TooManyAddrs { got: 9, max: 8 })
    );
    let (mut d, rid) = with_lookup(now);
    let bad = WirePeer {
        id: *id(9).as_bytes(),
        addrs: vec![WireAddr::Ble("not a device!".into())],
    };
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), nodes(rid, vec![bad])),
        Err(DhtError::BadAddress)
    );
}

fn put_request(record: WireRecord) -> DhtMessage {
    DhtMessage::Request {
        id: 5,
        client: false,
        body: Request::PutValue { record },
    }
}

#[test]
fn bad_records_are_refused_by_name() {
    let now = Time(1_000);
    let kp = Keypair::generate().unwrap();
    let limits = RecordLimits::default();
    let good = Record::sign(&kp, b"k".to_vec(), b"v".to_vec(), Time(60_000), &limits).unwrap();
    let mut d = Dht::new(id(0), config());
    let from = (id(1), PeerAddr::Mem(1));

    let mut w = good.to_wire();
    w.value = b"forged".to_vec();
    assert_eq!(
        d.handle_message(now, from.0, from.1.clone(), put_request(w)),
        Err(DhtError::BadSignature)
    );
    let mut w = good.to_wire();
    w.signature.truncate(10);
    assert_eq!(
        d.handle_message(now, from.0, from.1.clone(), put_request(w)),
        Err(DhtError::BadSignature)
    );
    let mut w = good.to_wire();
    w.value = vec![0; 9_000];
    assert_eq!(
        d.handle_message(now, from.0, from.1.clone(), put_request(w)),
        Err(DhtError::RecordTooLarge {
            size: 9_000,
            max: 8_192
        })
    );
    let mut w = good.to_wire();
    w.key = vec![0; 200];
    assert_eq!(
        d.handle_message(now, from.0, from.1.clone(), put_request(w)),
        Err(DhtError::KeyTooLarge {
            size: 200,
            max: 128
        })
    );
    assert_eq!(
        d.handle_message(
            Time(60_000),
            from.0,
            from.1.clone(),
            put_request(good.to_wire())
        ),
        Err(DhtError::RecordExpired)
    );
    let far = Record::sign(
        &kp,
        b"k".to_vec(),
        b"v".to_vec(),
        Time(u64::MAX / 2),
        &limits,
    )
    .unwrap();
    assert_eq!(
        d.handle_message(now, from.0, from.1.clone(), put_request(far.to_wire())),
        Err(DhtError::TtlTooLong)
    );
    assert!(drain(&mut d).is_empty(), "nothing acknowledged");
    d.handle_message(now, from.0, from.1.clone(), put_request(good.to_wire()))
        .unwrap();
    assert!(matches!(
        drain(&mut d)[0].message,
        DhtMessage::Response {
            id: 5,
            body: Response::Stored
        }
    ));
    // Another publisher cannot take over the key.
    let other = Keypair::generate().unwrap();
    let rival = Record::sign(&other, b"k".to_vec(), b"x".to_vec(), Time(60_000), &limits).unwrap();
    assert_eq!(
        d.handle_message(now, from.0, from.1.clone(), put_request(rival.to_wire())),
        Err(DhtError::KeyTaken)
    );
    // A message claiming to come from ourselves.
    assert_eq!(
        d.handle_message(now, id(0), PeerAddr::Mem(0), put_request(good.to_wire())),
        Err(DhtError::SelfEntry)
    );
}

#[test]
fn get_value_response_with_bad_or_foreign_record_is_refused() {
    let now = Time(0);
    let kp = Keypair::generate().unwrap();
    let limits = RecordLimits::default();
    let start = |d: &mut Dht| -> u64 {
        d.add_peer(now, id(1), &[PeerAddr::Mem(1)]).unwrap();
        d.get_record(now, b"wanted").unwrap();
        match drain(d).remove(0).message {
            DhtMessage::Request { id, .. } => id,
            DhtMessage::Response { .. } => panic!("expected a request"),
        }
    };
    let value = |rid: u64, record: WireRecord| DhtMessage::Response {
        id: rid,
        body: Response::Value {
            record: Some(record),
            closer: vec![],
        },
    };
    let mut d = Dht::new(id(0), config());
    let rid = start(&mut d);
    let other = Record::sign(&kp, b"other".to_vec(), b"v".to_vec(), Time(9_000), &limits).unwrap();
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), value(rid, other.to_wire())),
        Err(DhtError::WrongKey)
    );
    let mut d = Dht::new(id(0), config());
    let rid = start(&mut d);
    let mut forged = Record::sign(&kp, b"wanted".to_vec(), b"v".to_vec(), Time(9_000), &limits)
        .unwrap()
        .to_wire();
    forged.value = b"evil".to_vec();
    assert_eq!(
        d.handle_message(now, id(1), PeerAddr::Mem(1), value(rid, forged)),
        Err(DhtError::BadSignature)
    );
    let ev = events(&mut d);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::QueryFinished {
            result: QueryResult::GetValue { record: None, .. },
            ..
        }
    )));
}

#[test]
fn oversized_and_garbage_bytes_are_refused() {
    let big = vec![0u8; 40 * 1024];
    assert_eq!(
        DhtMessage::decode(&big),
        Err(DhtError::MessageTooLarge {
            size: 40 * 1024,
            max: 32 * 1024
        })
    );
    assert_eq!(
        DhtMessage::decode(&[0xff, 0xff, 0xff]),
        Err(DhtError::Malformed)
    );
    // Valid message followed by junk.
    let mut bytes = DhtMessage::Response {
        id: 1,
        body: Response::Pong,
    }
    .encode()
    .unwrap()
    .to_vec();
    bytes.push(0);
    assert_eq!(DhtMessage::decode(&bytes), Err(DhtError::Malformed));
}
