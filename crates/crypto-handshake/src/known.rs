//! [`KnownPeers`]: what the handshake remembers about peers between
//! connections. Plain data behind a mutex, shared by the handshakes of one
//! node (no I/O, no runtime).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use knotwork_core::PeerId;

use crate::payload::{PAYLOAD_LEN, STATIC_KEY_LEN};

/// A bounded cache of remote Noise static keys, filled after successful
/// handshakes (or from discovery records) so the next dial can use IK.
/// When full, the oldest entry goes.
///
/// It also remembers the last identity payload whose signature checked out
/// for each peer (as many peers, oldest out first): when a peer reconnects
/// with the very same payload bytes, the handshake skips the Ed25519 check
/// (same bytes, same verdict) but still checks that the payload names the
/// Noise static key the handshake authenticated.
#[derive(Debug)]
pub struct KnownPeers {
    capacity: usize,
    inner: Mutex<KnownInner>,
}

#[derive(Debug, Default)]
struct KnownInner {
    keys: Bounded<[u8; STATIC_KEY_LEN]>,
    /// Identity payloads whose signature was checked, by the peer they name.
    payloads: Bounded<[u8; PAYLOAD_LEN]>,
}

/// A map by peer that drops its oldest entry when over capacity.
#[derive(Debug)]
struct Bounded<V> {
    map: HashMap<PeerId, V>,
    order: VecDeque<PeerId>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Bounded<V> {
    fn insert(&mut self, peer: PeerId, value: V, capacity: usize) {
        if self.map.insert(peer, value).is_none() {
            self.order.push_back(peer);
            while self.order.len() > capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn remove(&mut self, peer: &PeerId) {
        if self.map.remove(peer).is_some() {
            self.order.retain(|p| p != peer);
        }
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
        self.lock().keys.insert(peer, static_key, self.capacity);
    }

    /// `peer`'s static key, if known.
    pub fn get(&self, peer: &PeerId) -> Option<[u8; STATIC_KEY_LEN]> {
        self.lock().keys.map.get(peer).copied()
    }

    /// Forgets `peer`.
    pub fn remove(&self, peer: &PeerId) {
        let mut g = self.lock();
        g.keys.remove(peer);
        g.payloads.remove(peer);
    }

    /// Remembers that `payload` (whose first 32 bytes name `peer`) carries
    /// a valid signature.
    pub(crate) fn remember_payload(&self, peer: PeerId, payload: &[u8]) {
        let Ok(bytes) = <[u8; PAYLOAD_LEN]>::try_from(payload) else {
            return;
        };
        self.lock().payloads.insert(peer, bytes, self.capacity);
    }

    /// True if exactly these payload bytes were checked for `peer` before.
    pub(crate) fn payload_checked(&self, peer: &PeerId, payload: &[u8]) -> bool {
        self.lock()
            .payloads
            .map
            .get(peer)
            .is_some_and(|p| p.as_slice() == payload)
    }

    /// Number of peers remembered.
    pub fn len(&self) -> usize {
        self.lock().keys.map.len()
    }

    /// True if no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
