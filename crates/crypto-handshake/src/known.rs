//! [`KnownPeers`]: what the handshake remembers about peers between
//! connections. Plain data behind a mutex, shared by the handshakes of one
//! node (no I/O, no runtime).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use knotwork_core::PeerId;

use crate::payload::STATIC_KEY_LEN;

/// A bounded cache of remote Noise static keys, filled after successful
/// handshakes (or from discovery records) so the next dial can use IK.
/// When full, the oldest peer goes.
///
/// It also remembers, for each peer, a digest of the last identity payload
/// whose signature checked out: when a peer reconnects with the very same
/// payload bytes, the handshake skips the Ed25519 check (same bytes, same
/// verdict) but still checks that the payload names the Noise static key
/// the handshake authenticated.
///
/// Both live in one entry per peer, with one insertion order: about 120
/// bytes per peer (a map of keys and a map of whole 128-byte payloads, each
/// with its own order, took about 300, which a server taking connections
/// from many fresh identities held for up to `capacity` of them).
#[derive(Debug)]
pub struct KnownPeers {
    capacity: usize,
    inner: Mutex<KnownInner>,
}

/// A digest of an identity payload: 128 bits of SHA-256, so a different
/// payload with the same digest would take a second preimage.
pub(crate) type PayloadDigest = [u8; 16];

/// The digest [`KnownPeers`] keeps of `payload`.
pub(crate) fn payload_digest(payload: &[u8]) -> PayloadDigest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, payload);
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(d.as_ref()) {
        *o = *b;
    }
    out
}

/// What is remembered about one peer.
#[derive(Debug, Default)]
struct Entry {
    /// Its Noise static key (for IK).
    key: Option<[u8; STATIC_KEY_LEN]>,
    /// The digest of its last identity payload whose signature checked out.
    payload: Option<PayloadDigest>,
}

/// The peers by id, and their ids oldest first (the oldest goes when over
/// capacity).
#[derive(Debug, Default)]
struct KnownInner {
    map: HashMap<PeerId, Entry>,
    order: VecDeque<PeerId>,
}

impl KnownInner {
    /// `peer`'s entry, made (and the oldest dropped if that makes too
    /// many) if it has none.
    fn entry(&mut self, peer: PeerId, capacity: usize) -> &mut Entry {
        if !self.map.contains_key(&peer) {
            self.order.push_back(peer);
            while self.order.len() > capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
        self.map.entry(peer).or_default()
    }
}

impl KnownPeers {
    /// An empty cache holding at most `capacity` peers.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(KnownInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, KnownInner> {
        // The map stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `peer`'s static key.
    pub fn insert(&self, peer: PeerId, static_key: [u8; STATIC_KEY_LEN]) {
        self.lock().entry(peer, self.capacity).key = Some(static_key);
    }

    /// `peer`'s static key, if known.
    pub fn get(&self, peer: &PeerId) -> Option<[u8; STATIC_KEY_LEN]> {
        self.lock().map.get(peer).and_then(|e| e.key)
    }

    /// Forgets `peer`.
    pub fn remove(&self, peer: &PeerId) {
        let mut g = self.lock();
        if g.map.remove(peer).is_some() {
            g.order.retain(|p| p != peer);
        }
    }

    /// Remembers that the payload of digest `digest` (naming `peer`)
    /// carries a valid signature.
    pub(crate) fn remember_payload(&self, peer: PeerId, digest: PayloadDigest) {
        self.lock().entry(peer, self.capacity).payload = Some(digest);
    }

    /// True if the payload of digest `digest` was checked for `peer` before.
    pub(crate) fn payload_checked(&self, peer: &PeerId, digest: &PayloadDigest) -> bool {
        self.lock()
            .map
            .get(peer)
            .is_some_and(|e| e.payload.as_ref() == Some(digest))
    }

    /// Number of peers whose static key is remembered.
    pub fn len(&self) -> usize {
        self.lock().map.values().filter(|e| e.key.is_some()).count()
    }

    /// True if no static key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    fn peer() -> PeerId {
        Keypair::generate().unwrap().peer_id()
    }

    #[test]
    fn a_peers_key_and_payload_share_one_entry_and_go_together() {
        let known = KnownPeers::new(2);
        let (a, b, c) = (peer(), peer(), peer());
        let digest = payload_digest(b"payload of a");
        known.insert(a, [1; STATIC_KEY_LEN]);
        known.remember_payload(a, digest);
        known.remember_payload(b, payload_digest(b"payload of b"));
        // One entry each: two peers fill a cache of two.
        assert_eq!(known.lock().map.len(), 2);
        assert_eq!(known.get(&a), Some([1; STATIC_KEY_LEN]));
        assert!(known.payload_checked(&a, &digest));
        assert!(!known.payload_checked(&a, &payload_digest(b"payload of b")));
        assert_eq!(known.len(), 1, "one static key");
        // A third peer pushes out the oldest, key and payload both.
        known.insert(c, [3; STATIC_KEY_LEN]);
        assert_eq!(known.get(&a), None);
        assert!(!known.payload_checked(&a, &digest));
        assert_eq!(known.lock().order.len(), 2);
        // Forgetting a peer forgets all of it.
        known.remove(&b);
        assert!(!known.payload_checked(&b, &payload_digest(b"payload of b")));
        assert_eq!(known.lock().order, [c]);
    }
}
