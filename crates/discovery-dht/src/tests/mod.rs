//! Tests of the whole core ([`Dht`]) on virtual time, by concern:
//! [`hostile`] (one test per [`DhtError`] variant a peer can cause),
//! [`limits`] (what a peer can make the node store, send or dial: the
//! issue 18 findings), [`liveness`] (liveness-checked eviction, client mode,
//! timeouts), [`network`] (records, providers and lookups in a small mesh)
//! and [`wire`] (the message encoding).

mod hostile;
mod limits;
mod liveness;
mod network;
mod wire;

use knotwork_core::{PeerAddr, PeerId};

use crate::message::{WireAddr, WirePeer};
use crate::*;

pub(super) fn id(n: u64) -> PeerId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[31] = 0xaa;
    PeerId::from_bytes(&b).unwrap()
}

pub(super) fn wire_peer(n: u64) -> WirePeer {
    WirePeer {
        id: *id(n).as_bytes(),
        addrs: vec![WireAddr::Mem(n)],
    }
}

pub(super) fn config() -> Config {
    Config {
        subnet_limits: Some((2, 10)),
        ..Config::default()
    }
}

pub(super) fn drain(d: &mut Dht) -> Vec<Transmit> {
    std::iter::from_fn(|| d.poll_transmit()).collect()
}

pub(super) fn events(d: &mut Dht) -> Vec<Event> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

/// A node that knows peer 1 and has one FIND_NODE outstanding to it;
/// returns the request id.
pub(super) fn with_lookup(now: Time) -> (Dht, u64) {
    let mut d = Dht::new(id(0), config());
    d.add_peer(now, id(1), &[PeerAddr::Mem(1)]).unwrap();
    d.find_node(now, Key::hash(b"target"));
    let t = drain(&mut d);
    assert_eq!(t.len(), 1);
    let DhtMessage::Request {
        id: rid,
        client,
        body,
    } = &t[0].message
    else {
        panic!("not a request");
    };
    assert!(!client);
    assert!(matches!(body, Request::FindNode { .. }));
    (d, *rid)
}

pub(super) fn nodes(id: u64, closer: Vec<WirePeer>) -> DhtMessage {
    DhtMessage::Response {
        id,
        body: Response::Nodes { closer },
    }
}

/// A little network of `n` cores in lock-step on virtual time, driven to
/// idle after each step; delivery is instant.
pub(super) struct Mesh {
    pub(super) nodes: Vec<Dht>,
    pub(super) now: Time,
}

impl Mesh {
    pub(super) fn new(n: u64, cfg: &Config) -> Self {
        let mut nodes: Vec<Dht> = (0..n).map(|i| Dht::new(id(i), cfg.clone())).collect();
        for (i, d) in nodes.iter_mut().enumerate() {
            for j in 0..n {
                if j as usize != i {
                    let _ = d.add_peer(Time(0), id(j), &[PeerAddr::Mem(j)]);
                }
            }
        }
        let mut m = Self {
            nodes,
            now: Time(0),
        };
        m.settle();
        m
    }

    pub(super) fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].poll_transmit() {
                    moved = true;
                    let PeerAddr::Mem(to) = t.addrs[0] else {
                        panic!()
                    };
                    let (now, from) = (self.now, id(i as u64));
                    let _ = self.nodes[to as usize].handle_message(
                        now,
                        from,
                        PeerAddr::Mem(i as u64),
                        t.message,
                    );
                }
            }
            if !moved {
                break;
            }
        }
    }

    pub(super) fn advance_to(&mut self, t: Time) {
        self.now = t;
        for d in &mut self.nodes {
            if d.poll_timeout().is_some_and(|w| w <= t) {
                d.handle_timeout(t);
            }
        }
        self.settle();
    }

    pub(super) fn holders(&self, key: &[u8]) -> usize {
        let k = Key::hash(key);
        self.nodes
            .iter()
            .filter(|d| d.store().get(&k, self.now).is_some())
            .count()
    }
}
