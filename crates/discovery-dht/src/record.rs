//! Signed records, providers, and the [`RecordStore`] a node keeps for others.
//!
//! A [`Record`] is signed by its publisher over a domain-separated encoding
//! of (key, value, publisher, expiry), so any node can check it without
//! trusting whoever forwarded it. The expiry is absolute and signed: only the
//! publisher can extend a record's life, by re-signing it.
//!
//! Store policy: the first valid publisher holds a key until its record
//! expires; the same publisher may replace its record with one that expires
//! no earlier. Providers are not signed: a provider is always the
//! authenticated sender of the `ADD_PROVIDER` request.

use std::collections::BTreeMap;
use std::time::Duration;

use knotwork_core::{Keypair, PeerId};

use crate::DhtError;
use crate::key::Key;
use crate::message::PeerInfo;
use crate::time::Time;

/// Domain separation prefix of the signed encoding.
const SIGNING_DOMAIN: &[u8] = b"knotwork-dht-record-v1\0";

/// Prefix of the key under which a peer publishes its own addresses; see
/// [`peer_record_key`].
pub const PEER_RECORD_PREFIX: &[u8] = b"knotwork/peer/";

/// The record key under which `peer` publishes its addresses. Only `peer`
/// may publish under it: [`Record::validate`] refuses a record there signed
/// by anyone else ([`DhtError::ForeignPeerRecord`]).
pub fn peer_record_key(peer: &PeerId) -> Vec<u8> {
    let mut key = PEER_RECORD_PREFIX.to_vec();
    key.extend_from_slice(peer.as_bytes());
    key
}

/// Size limits applied to records and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLimits {
    /// Longest record or provider key in bytes.
    pub max_key_len: usize,
    /// Longest record value in bytes.
    pub max_value_len: usize,
    /// Longest time ahead a record's expiry may lie.
    pub max_ttl: Duration,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_key_len: 128,
            max_value_len: 8 * 1024,
            max_ttl: Duration::from_secs(48 * 3600),
        }
    }
}

/// A value stored in the DHT under a key, signed by its publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The application's key bytes (the DHT position is their SHA-256).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Who signed it.
    pub publisher: PeerId,
    /// When it stops being valid.
    pub expires: Time,
    /// Ed25519 signature over [`Record::signing_bytes`].
    pub signature: [u8; 64],
}

impl Record {
    /// Builds and signs a record. Fails if the key or value exceed `limits`.
    pub fn sign(
        keypair: &Keypair,
        key: Vec<u8>,
        value: Vec<u8>,
        expires: Time,
        limits: &RecordLimits,
    ) -> Result<Self, DhtError> {
        check_sizes(&key, &value, limits)?;
        let publisher = keypair.peer_id();
        let signature = keypair.sign(&signing_bytes(&key, &value, &publisher, expires));
        Ok(Self {
            key,
            value,
            publisher,
            expires,
            signature,
        })
    }

    /// The bytes the publisher signs: a domain prefix, then each field with
    /// its length, so no two records share an encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(&self.key, &self.value, &self.publisher, self.expires)
    }

    /// The DHT position of this record.
    pub fn dht_key(&self) -> Key {
        Key::hash(&self.key)
    }

    /// Checks sizes, that a peer record is its own peer's, expiry (not
    /// passed, not beyond `now + max_ttl`) and the signature, cheapest first.
    pub fn validate(&self, now: Time, limits: &RecordLimits) -> Result<(), DhtError> {
        check_sizes(&self.key, &self.value, limits)?;
        if let Some(owner) = self.key.strip_prefix(PEER_RECORD_PREFIX)
            && owner != self.publisher.as_bytes()
        {
            return Err(DhtError::ForeignPeerRecord);
        }
        if self.expires <= now {
            return Err(DhtError::RecordExpired);
        }
        if self.expires > now + limits.max_ttl {
            return Err(DhtError::TtlTooLong);
        }
        self.publisher
            .public_key()
            .verify(&self.signing_bytes(), &self.signature)
            .map_err(|_| DhtError::BadSignature)
    }
}

fn check_sizes(key: &[u8], value: &[u8], limits: &RecordLimits) -> Result<(), DhtError> {
    if key.len() > limits.max_key_len {
        return Err(DhtError::KeyTooLarge {
            size: key.len(),
            max: limits.max_key_len,
        });
    }
    if value.len() > limits.max_value_len {
        return Err(DhtError::RecordTooLarge {
            size: value.len(),
            max: limits.max_value_len,
        });
    }
    Ok(())
}

fn signing_bytes(key: &[u8], value: &[u8], publisher: &PeerId, expires: Time) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + 8 + key.len() + value.len() + 40);
    out.extend_from_slice(SIGNING_DOMAIN);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(publisher.as_bytes());
    out.extend_from_slice(&expires.as_millis().to_be_bytes());
    out
}

/// A provider of a key and when the announcement lapses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// The provider and its addresses.
    pub peer: PeerInfo,
    /// When this announcement expires.
    pub expires: Time,
}

/// A record held for others, with its next re-replication time.
#[derive(Clone, Debug)]
struct Stored {
    record: Record,
    replicate_at: Time,
}

/// Records and provider announcements this node holds for the network.
#[derive(Debug, Default)]
pub struct RecordStore {
    records: BTreeMap<Key, Stored>,
    providers: BTreeMap<Key, Vec<Provider>>,
    max_records: usize,
    max_providers_per_key: usize,
}

impl RecordStore {
    /// An empty store holding at most `max_records` records and
    /// `max_providers_per_key` providers per key.
    pub fn new(max_records: usize, max_providers_per_key: usize) -> Self {
        Self {
            records: BTreeMap::new(),
            providers: BTreeMap::new(),
            max_records,
            max_providers_per_key,
        }
    }

    /// Stores a record already validated by the caller; it is due for
    /// re-replication at `replicate_at`.
    pub fn put(&mut self, record: Record, replicate_at: Time, now: Time) -> Result<(), DhtError> {
        let key = record.dht_key();
        if let Some(old) = self.records.get(&key)
            && old.record.expires > now
        {
            if old.record.publisher != record.publisher {
                return Err(DhtError::KeyTaken);
            }
            if old.record.expires > record.expires {
                return Err(DhtError::StaleRecord);
            }
        } else if self.records.len() >= self.max_records {
            return Err(DhtError::StoreFull);
        }
        self.records.insert(
            key,
            Stored {
                record,
                replicate_at,
            },
        );
        Ok(())
    }

    /// The unexpired record at `key`.
    pub fn get(&self, key: &Key, now: Time) -> Option<&Record> {
        self.records
            .get(key)
            .map(|s| &s.record)
            .filter(|r| r.expires > now)
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no records are held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records whose re-replication is due at `now`; their next time is set
    /// to `now + interval`.
    pub fn due_for_replication(&mut self, now: Time, interval: Duration) -> Vec<Record> {
        let mut out = Vec::new();
        for s in self.records.values_mut() {
            if s.replicate_at <= now && s.record.expires > now {
                s.replicate_at = now + interval;
                out.push(s.record.clone());
            }
        }
        out
    }

    /// Adds or refreshes `peer` as a provider of `key` until `expires`.
    pub fn add_provider(&mut self, key: Key, peer: PeerInfo, expires: Time) {
        let list = self.providers.entry(key).or_default();
        if let Some(p) = list.iter_mut().find(|p| p.peer.peer_id == peer.peer_id) {
            p.peer = peer;
            p.expires = expires;
            return;
        }
        if list.len() >= self.max_providers_per_key {
            // Replace the announcement closest to lapsing.
            if let Some(oldest) = list.iter_mut().min_by_key(|p| p.expires) {
                *oldest = Provider { peer, expires };
            }
            return;
        }
        list.push(Provider { peer, expires });
    }

    /// Unexpired providers of `key`.
    pub fn providers(&self, key: &Key, now: Time) -> Vec<PeerInfo> {
        self.providers
            .get(key)
            .map(|l| {
                l.iter()
                    .filter(|p| p.expires > now)
                    .map(|p| p.peer.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops expired records and provider announcements.
    pub fn expire(&mut self, now: Time) {
        self.records.retain(|_, s| s.record.expires > now);
        self.providers.retain(|_, l| {
            l.retain(|p| p.expires > now);
            !l.is_empty()
        });
    }

    /// Bytes held, estimated from the data structure sizes.
    pub fn memory_estimate(&self) -> usize {
        let recs: usize = self
            .records
            .values()
            .map(|s| std::mem::size_of::<Stored>() + 32 + s.record.key.len() + s.record.value.len())
            .sum();
        let provs: usize = self
            .providers
            .values()
            .map(|l| 32 + l.capacity() * std::mem::size_of::<Provider>())
            .sum();
        recs + provs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RecordLimits {
        RecordLimits::default()
    }

    #[test]
    fn signed_record_validates_and_tampering_is_caught() {
        let kp = Keypair::generate().unwrap();
        let now = Time(1_000);
        let rec = Record::sign(&kp, b"k".to_vec(), b"v".to_vec(), Time(10_000), &limits()).unwrap();
        rec.validate(now, &limits()).unwrap();
        let mut bad = rec.clone();
        bad.value = b"w".to_vec();
        assert_eq!(bad.validate(now, &limits()), Err(DhtError::BadSignature));
        let mut bad = rec.clone();
        bad.expires = Time(20_000);
        assert_eq!(bad.validate(now, &limits()), Err(DhtError::BadSignature));
        let other = Keypair::generate().unwrap();
        let mut bad = rec.clone();
        bad.publisher = other.peer_id();
        assert_eq!(bad.validate(now, &limits()), Err(DhtError::BadSignature));
    }

    #[test]
    fn only_a_peer_publishes_under_its_peer_key() {
        let (kp, other) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let l = limits();
        let own = Record::sign(&kp, peer_record_key(&kp.peer_id()), vec![1], Time(9), &l);
        own.unwrap().validate(Time(0), &l).unwrap();
        let foreign = Record::sign(&kp, peer_record_key(&other.peer_id()), vec![1], Time(9), &l);
        assert_eq!(
            foreign.unwrap().validate(Time(0), &l),
            Err(DhtError::ForeignPeerRecord)
        );
    }

    #[test]
    fn size_and_time_limits_are_named() {
        let kp = Keypair::generate().unwrap();
        let l = limits();
        assert!(matches!(
            Record::sign(&kp, vec![0; 129], vec![], Time(5), &l),
            Err(DhtError::KeyTooLarge {
                size: 129,
                max: 128
            })
        ));
        assert!(matches!(
            Record::sign(&kp, vec![], vec![0; 8193], Time(5), &l),
            Err(DhtError::RecordTooLarge { size: 8193, .. })
        ));
        let rec = Record::sign(&kp, vec![1], vec![2], Time(5), &l).unwrap();
        assert_eq!(rec.validate(Time(5), &l), Err(DhtError::RecordExpired));
        let far = Record::sign(
            &kp,
            vec![1],
            vec![2],
            Time(0) + l.max_ttl + Duration::from_millis(1),
            &l,
        )
        .unwrap();
        assert_eq!(far.validate(Time(0), &l), Err(DhtError::TtlTooLong));
        // A peer-supplied oversized record is refused before its signature is checked.
        let mut big = rec.clone();
        big.value = vec![0; 9000];
        assert!(matches!(
            big.validate(Time(0), &l),
            Err(DhtError::RecordTooLarge { .. })
        ));
    }

    #[test]
    fn store_policy_expiry_and_providers() {
        let a = Keypair::generate().unwrap();
        let b = Keypair::generate().unwrap();
        let l = limits();
        let mut store = RecordStore::new(2, 2);
        let r1 = Record::sign(&a, b"x".to_vec(), b"1".to_vec(), Time(100), &l).unwrap();
        store.put(r1.clone(), Time(50), Time(0)).unwrap();
        let rb = Record::sign(&b, b"x".to_vec(), b"2".to_vec(), Time(200), &l).unwrap();
        assert_eq!(
            store.put(rb.clone(), Time(50), Time(0)),
            Err(DhtError::KeyTaken)
        );
        let older = Record::sign(&a, b"x".to_vec(), b"0".to_vec(), Time(90), &l).unwrap();
        assert_eq!(
            store.put(older, Time(50), Time(0)),
            Err(DhtError::StaleRecord)
        );
        let key = r1.dht_key();
        assert_eq!(store.get(&key, Time(99)), Some(&r1));
        assert_eq!(store.get(&key, Time(100)), None);
        // Once expired, another publisher may take the key.
        store.put(rb.clone(), Time(150), Time(100)).unwrap();
        let r3 = Record::sign(&a, b"y".to_vec(), b"3".to_vec(), Time(100), &l).unwrap();
        store.put(r3, Time(50), Time(0)).unwrap();
        let r4 = Record::sign(&a, b"z".to_vec(), b"4".to_vec(), Time(100), &l).unwrap();
        assert_eq!(store.put(r4, Time(50), Time(0)), Err(DhtError::StoreFull));
        assert_eq!(
            store
                .due_for_replication(Time(60), Duration::from_millis(100))
                .len(),
            1
        );
        assert!(
            store
                .due_for_replication(Time(60), Duration::from_millis(100))
                .is_empty()
        );
        store.expire(Time(100));
        assert_eq!(store.len(), 1);

        let pk = Key::hash(b"p");
        let info = |kp: &Keypair| PeerInfo {
            peer_id: kp.peer_id(),
            addrs: vec![],
        };
        store.add_provider(pk, info(&a), Time(10));
        store.add_provider(pk, info(&b), Time(20));
        assert_eq!(store.providers(&pk, Time(5)).len(), 2);
        assert_eq!(store.providers(&pk, Time(15)).len(), 1);
        let c = Keypair::generate().unwrap();
        store.add_provider(pk, info(&c), Time(30));
        let now: Vec<_> = store
            .providers(&pk, Time(0))
            .into_iter()
            .map(|p| p.peer_id)
            .collect();
        assert!(now.contains(&c.peer_id()) && !now.contains(&a.peer_id()));
        store.expire(Time(30));
        assert!(store.providers(&pk, Time(0)).is_empty());
    }
}
