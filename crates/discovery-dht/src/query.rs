//! [`Query`]: the iterative Kademlia lookup, without I/O.
//!
//! A query keeps the peers it knows sorted by distance to the target. It
//! keeps up to α requests in flight, always to the closest peers not yet
//! asked, and adds the peers each response lists. It is done when the k
//! closest peers it knows have all answered (failed peers do not count and
//! make room for the next closest), or when nobody is left to ask.
//!
//! With `d` disjoint paths (S/Kademlia), the starting peers are dealt out to
//! `d` independent lookups and a peer is only ever used by the path that
//! found it first, so one path of colluding nodes cannot steer the others.
//! The query is done when every path is.

use knotwork_core::{PeerAddr, PeerId};

use crate::key::{Distance, Key};
use crate::message::PeerInfo;

/// Where a peer stands in a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Known, not asked yet.
    NotContacted,
    /// Asked, no answer yet.
    Waiting,
    /// Answered.
    Succeeded,
    /// Failed or timed out.
    Failed,
}

/// A peer known to a query.
#[derive(Clone, Debug)]
pub struct QueryPeer {
    /// The peer.
    pub info: PeerInfo,
    /// Its distance to the target.
    pub distance: Distance,
    /// Where it stands.
    pub state: PeerState,
    /// Number of responses between the local node and this peer: 0 for
    /// peers from the local table, d+1 for peers listed by a depth-d peer.
    pub depth: u8,
    /// The address of the peer whose response listed this one (`None` for
    /// peers from the local table): its addresses are as trustworthy as
    /// that peer, and are dialed only within that peer's scope.
    pub via: Option<PeerAddr>,
}

#[derive(Clone, Debug, Default)]
struct Path {
    peers: Vec<QueryPeer>,
}

/// The iterative lookup state of one query.
#[derive(Clone, Debug)]
pub struct Query {
    target: Key,
    k: usize,
    alpha: usize,
    max_peers: usize,
    paths: Vec<Path>,
}

/// A request the query wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// To whom.
    pub peer: PeerInfo,
    /// Which disjoint path it belongs to.
    pub path: usize,
    /// The peer's depth.
    pub depth: u8,
    /// Who listed it ([`QueryPeer::via`]).
    pub via: Option<PeerAddr>,
}

impl Query {
    /// A query for `target` with bucket size `k`, `alpha` requests in flight
    /// per path, `paths` disjoint paths, seeded with `seeds` (typically the
    /// local table's closest entries).
    pub fn new(
        target: Key,
        k: usize,
        alpha: usize,
        paths: usize,
        seeds: impl IntoIterator<Item = PeerInfo>,
    ) -> Self {
        let paths = paths.max(1);
        let mut q = Self {
            target,
            k,
            alpha: alpha.max(1),
            max_peers: 4 * k.max(1),
            paths: vec![Path::default(); paths],
        };
        let mut seeds: Vec<(Distance, PeerInfo)> = seeds
            .into_iter()
            .map(|p| (Key::from_peer_id(&p.peer_id).distance(&target), p))
            .collect();
        seeds.sort_by_key(|a| a.0);
        seeds.dedup_by(|a, b| a.1.peer_id == b.1.peer_id);
        for (i, (distance, info)) in seeds.into_iter().enumerate() {
            q.insert(i % paths, info, distance, 0, None);
        }
        q
    }

    /// The target key.
    pub fn target(&self) -> &Key {
        &self.target
    }

    fn knows(&self, peer: &PeerId) -> bool {
        self.paths
            .iter()
            .any(|p| p.peers.iter().any(|q| q.info.peer_id == *peer))
    }

    fn insert(
        &mut self,
        path: usize,
        info: PeerInfo,
        distance: Distance,
        depth: u8,
        via: Option<PeerAddr>,
    ) {
        let max = self.max_peers;
        let Some(p) = self.paths.get_mut(path) else {
            return;
        };
        let pos = p.peers.partition_point(|q| q.distance < distance);
        if pos >= max {
            return;
        }
        p.peers.insert(
            pos,
            QueryPeer {
                info,
                distance,
                state: PeerState::NotContacted,
                depth,
                via,
            },
        );
        // Drop the farthest peer nobody is waiting on once over the cap.
        if p.peers.len() > max
            && let Some(drop) = p.peers.iter().rposition(|q| q.state != PeerState::Waiting)
        {
            p.peers.remove(drop);
        }
    }

    fn find_mut(&mut self, path: usize, peer: &PeerId) -> Option<&mut QueryPeer> {
        self.paths
            .get_mut(path)?
            .peers
            .iter_mut()
            .find(|q| q.info.peer_id == *peer)
    }

    /// Peers to ask now (marked as waiting).
    pub fn next_contacts(&mut self) -> Vec<Contact> {
        let (k, alpha) = (self.k, self.alpha);
        let mut out = Vec::new();
        for (pi, path) in self.paths.iter_mut().enumerate() {
            let mut in_flight = path
                .peers
                .iter()
                .filter(|q| q.state == PeerState::Waiting)
                .count();
            let mut answered = 0;
            for q in path.peers.iter_mut() {
                if answered >= k || in_flight >= alpha {
                    break;
                }
                match q.state {
                    PeerState::Succeeded => answered += 1,
                    PeerState::NotContacted => {
                        q.state = PeerState::Waiting;
                        in_flight += 1;
                        out.push(Contact {
                            peer: q.info.clone(),
                            path: pi,
                            depth: q.depth,
                            via: q.via.clone(),
                        });
                    }
                    PeerState::Waiting | PeerState::Failed => {}
                }
            }
        }
        out
    }

    /// `peer` on `path`, reached at `via`, answered, listing `closer`. New
    /// peers join the same path at the responder's depth + 1, remembering
    /// `via`; `local` (ourselves) and peers without an address are skipped.
    pub fn on_success(
        &mut self,
        path: usize,
        peer: &PeerId,
        closer: Vec<PeerInfo>,
        local: &PeerId,
        via: &PeerAddr,
    ) {
        let Some(q) = self.find_mut(path, peer) else {
            return;
        };
        q.state = PeerState::Succeeded;
        let depth = q.depth.saturating_add(1);
        for info in closer {
            if info.peer_id == *local || info.addrs.is_empty() || self.knows(&info.peer_id) {
                continue;
            }
            let distance = Key::from_peer_id(&info.peer_id).distance(&self.target);
            self.insert(path, info, distance, depth, Some(via.clone()));
        }
    }

    /// `peer` on `path` failed or timed out.
    pub fn on_failure(&mut self, path: usize, peer: &PeerId) {
        if let Some(q) = self.find_mut(path, peer) {
            q.state = PeerState::Failed;
        }
    }

    /// Whether every path is done: its k closest non-failed peers have all
    /// answered, or nobody is left to ask and nobody is pending.
    pub fn is_finished(&self) -> bool {
        self.paths.iter().all(|p| {
            let mut answered = 0;
            for q in &p.peers {
                if answered >= self.k {
                    return true;
                }
                match q.state {
                    PeerState::Succeeded => answered += 1,
                    PeerState::Failed => {}
                    PeerState::NotContacted | PeerState::Waiting => return false,
                }
            }
            true
        })
    }

    /// Peers still waited on.
    pub fn waiting(&self) -> impl Iterator<Item = (usize, &QueryPeer)> {
        self.paths.iter().enumerate().flat_map(|(i, p)| {
            p.peers
                .iter()
                .filter(|q| q.state == PeerState::Waiting)
                .map(move |q| (i, q))
        })
    }

    /// The `k` closest peers that answered, over all paths, closest first.
    pub fn closest_succeeded(&self) -> Vec<&QueryPeer> {
        let mut all: Vec<&QueryPeer> = self
            .paths
            .iter()
            .flat_map(|p| p.peers.iter())
            .filter(|q| q.state == PeerState::Succeeded)
            .collect();
        all.sort_by_key(|a| a.distance);
        all.truncate(self.k);
        all
    }

    /// The depth at which the peer whose key is the target was found, if
    /// the query found it.
    pub fn target_depth(&self) -> Option<u8> {
        self.paths
            .iter()
            .flat_map(|p| p.peers.iter())
            .find(|q| q.distance.leading_zeros() == crate::key::KEY_BITS)
            .map(|q| q.depth)
    }

    /// Bytes held, estimated from vector capacities.
    pub fn memory_estimate(&self) -> usize {
        self.paths
            .iter()
            .map(|p| p.peers.capacity() * std::mem::size_of::<QueryPeer>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u64) -> PeerInfo {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        PeerInfo {
            peer_id: PeerId::from_bytes(&b).unwrap(),
            addrs: vec![PeerAddr::Mem(n)],
        }
    }

    const VIA: PeerAddr = PeerAddr::Mem(0);

    /// A toy network of 500 peers where everyone knows everyone: each
    /// response lists the k closest to the target. The query must converge
    /// on exactly the true k closest.
    #[test]
    fn query_converges_on_true_closest() {
        let all: Vec<PeerInfo> = (1..=500).map(peer).collect();
        let me = peer(0).peer_id;
        let target = Key::hash(b"target");
        let mut truth: Vec<_> = all.clone();
        truth.sort_by_key(|p| Key::from_peer_id(&p.peer_id).distance(&target));
        let fails = |p: &PeerInfo| p.peer_id.as_bytes()[7].is_multiple_of(5);
        // Tables hold live peers only: responses list the 20 closest of those.
        let closest_to = |t: &Key| -> Vec<PeerInfo> {
            let mut v: Vec<PeerInfo> = all.iter().filter(|p| !fails(p)).cloned().collect();
            v.sort_by_key(|p| Key::from_peer_id(&p.peer_id).distance(t));
            v.truncate(20);
            v
        };
        for paths in [1, 3] {
            // Seeds: far peers only.
            let seeds = truth.iter().rev().take(5).cloned();
            let mut q = Query::new(target, 20, 3, paths, seeds);
            let mut rounds = 0;
            while !q.is_finished() {
                let contacts = q.next_contacts();
                assert!(!contacts.is_empty(), "stalled");
                assert!(contacts.len() <= 3 * paths);
                for c in contacts {
                    // Every fifth peer fails.
                    if fails(&c.peer) {
                        q.on_failure(c.path, &c.peer.peer_id);
                    } else {
                        q.on_success(c.path, &c.peer.peer_id, closest_to(&target), &me, &VIA);
                    }
                }
                rounds += 1;
                assert!(rounds < 200);
            }
            let got: Vec<_> = q
                .closest_succeeded()
                .iter()
                .map(|p| p.info.peer_id)
                .collect();
            let want: Vec<_> = truth
                .iter()
                .filter(|p| !fails(p))
                .take(20)
                .map(|p| p.peer_id)
                .collect();
            assert_eq!(got, want, "paths = {paths}");
        }
    }

    #[test]
    fn at_most_alpha_in_flight_and_finished_when_nobody_left() {
        let me = peer(0).peer_id;
        let mut q = Query::new(Key::hash(b"t"), 20, 3, 1, (1..=10).map(peer));
        let first = q.next_contacts();
        assert_eq!(first.len(), 3);
        assert!(q.next_contacts().is_empty());
        for c in &first {
            q.on_failure(c.path, &c.peer.peer_id);
        }
        assert!(!q.is_finished());
        while !q.is_finished() {
            for c in q.next_contacts() {
                q.on_success(c.path, &c.peer.peer_id, vec![], &me, &VIA);
            }
        }
        assert_eq!(q.closest_succeeded().len(), 7);
        assert_eq!(q.waiting().count(), 0);
    }

    #[test]
    fn disjoint_paths_never_share_a_peer() {
        let me = peer(0).peer_id;
        let mut q = Query::new(Key::hash(b"t"), 20, 3, 2, (1..=4).map(peer));
        let c = q.next_contacts();
        let p0 = c.iter().find(|c| c.path == 0).unwrap().peer.peer_id;
        let p1 = c.iter().find(|c| c.path == 1).unwrap().peer.peer_id;
        // Path 0 learns of peer 50; path 1 then also hears of it: ignored.
        q.on_success(0, &p0, vec![peer(50)], &me, &VIA);
        q.on_success(1, &p1, vec![peer(50), peer(51)], &me, &PeerAddr::Mem(1));
        let ids_on = |path: usize| -> Vec<PeerId> {
            q.paths[path].peers.iter().map(|p| p.info.peer_id).collect()
        };
        assert!(ids_on(0).contains(&peer(50).peer_id));
        assert!(!ids_on(1).contains(&peer(50).peer_id));
        assert!(ids_on(1).contains(&peer(51).peer_id));
        // Each remembers who listed it; a listed peer without an address
        // cannot be asked and is not taken.
        let via = |path: usize, n: u64| {
            q.paths[path]
                .peers
                .iter()
                .find(|p| p.info.peer_id == peer(n).peer_id)
                .map(|p| p.via.clone())
        };
        assert_eq!(via(0, 50), Some(Some(VIA)));
        assert_eq!(via(1, 51), Some(Some(PeerAddr::Mem(1))));
        let mut mute = peer(52);
        mute.addrs.clear();
        q.on_success(1, &p1, vec![mute], &me, &VIA);
        assert!(!q.knows(&peer(52).peer_id));
    }
}
