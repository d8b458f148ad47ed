//! Signed records, providers, and the [`RecordStore`] a node keeps for others.
//!
//! A [`Record`] is signed by its publisher over a domain-separated encoding
//! of (key, value, publisher, expiry), so any node can check it without
//! trusting whoever forwarded it. The expiry is absolute and signed: only the
//! publisher can extend a record's life, by re-signing it.
//!
//! Store policy: the first valid publisher holds a key until its record
//! expires; the same publisher may replace its record with one that expires
//! no earlier. Keys are first come, first served: an application that
//! needs a key to be its own checks the publisher (or asks for it with
//! [`Dht::get_record_by`](crate::Dht::get_record_by)), or puts its
//! identity in the key. Providers are not signed: a provider is always the
//! authenticated sender of the `ADD_PROVIDER` request.

use std::collections::BTreeMap;
use std::time::Duration;

use knotwork_core::{Keypair, PeerAddr, PeerId};

use crate::DhtError;
use crate::key::Key;
use crate::message::{PeerInfo, Subnet};
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
    /// The operator subnet ([`Subnet::operator`]) of the connection the
    /// announcement came over, charged for it; `None` for our own and for
    /// connections without an IP.
    pub subnet: Option<Subnet>,
}

/// A record held for others, with its next re-replication time.
#[derive(Clone, Debug)]
struct Stored {
    record: Record,
    replicate_at: Time,
}

/// How much a [`RecordStore`] holds, in all and per sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Records held in all (4096).
    pub max_records: usize,
    /// Records of one publisher (64).
    pub max_records_per_publisher: usize,
    /// Providers remembered per key (20).
    pub max_providers_per_key: usize,
    /// Provider announcements held in all, over every key (8192).
    pub max_providers: usize,
    /// Announcements by one provider (256).
    pub max_providers_per_peer: usize,
    /// Announcements that came from one operator subnet, a /24 or an IPv6
    /// /48 (1024).
    pub max_providers_per_subnet: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_records: 4096,
            max_records_per_publisher: 64,
            max_providers_per_key: 20,
            max_providers: 8192,
            max_providers_per_peer: 256,
            max_providers_per_subnet: 1024,
        }
    }
}

/// Records and provider announcements this node holds for the network.
///
/// Everything a peer can grow here is capped, in all and per sender:
/// records per publisher ([`DhtError::PublisherQuota`]) and in all
/// ([`DhtError::StoreFull`]); provider announcements per key (the one
/// closest to lapsing makes room), per provider and per operator subnet of
/// the sender's connection ([`DhtError::ProviderQuota`]), and in all: when
/// full, the subnet holding the most announcements loses its one closest
/// to lapsing, so a flood from one network evicts its own first.
#[derive(Debug, Default)]
pub struct RecordStore {
    limits: StoreLimits,
    records: BTreeMap<Key, Stored>,
    per_publisher: BTreeMap<PeerId, usize>,
    providers: BTreeMap<Key, Vec<Provider>>,
    provider_count: usize,
    per_provider: BTreeMap<PeerId, usize>,
    per_subnet: BTreeMap<Option<Subnet>, usize>,
}

/// Adds one to `map[key]`.
fn count_up<K: Ord>(map: &mut BTreeMap<K, usize>, key: K) {
    *map.entry(key).or_insert(0) += 1;
}

/// Takes one from `map[key]`, forgetting keys that reach zero.
fn count_down<K: Ord>(map: &mut BTreeMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl RecordStore {
    /// An empty store within `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Whether the store's policy lets `record` in (its checks, not the
    /// record's own: call this before the costlier [`Record::validate`]).
    pub fn admits(&self, record: &Record, now: Time) -> Result<(), DhtError> {
        let old = self.records.get(&record.dht_key()).map(|s| &s.record);
        match old {
            Some(old) if old.expires > now => {
                if old.publisher != record.publisher {
                    return Err(DhtError::KeyTaken);
                }
                if old.expires > record.expires {
                    return Err(DhtError::StaleRecord);
                }
                Ok(())
            }
            _ => {
                if old.is_none() && self.records.len() >= self.limits.max_records {
                    return Err(DhtError::StoreFull);
                }
                let own = old.is_some_and(|o| o.publisher == record.publisher);
                let held = self.per_publisher.get(&record.publisher).copied();
                if held.unwrap_or(0) - usize::from(own) >= self.limits.max_records_per_publisher {
                    return Err(DhtError::PublisherQuota);
                }
                Ok(())
            }
        }
    }

    /// Stores a record already validated by the caller, if the store's
    /// policy admits it ([`RecordStore::admits`]); it is due for
    /// re-replication at `replicate_at`.
    pub fn put(&mut self, record: Record, replicate_at: Time, now: Time) -> Result<(), DhtError> {
        self.admits(&record, now)?;
        let stored = Stored {
            record,
            replicate_at,
        };
        let publisher = stored.record.publisher;
        match self.records.insert(stored.record.dht_key(), stored) {
            Some(old) if old.record.publisher == publisher => {}
            old => {
                if let Some(old) = old {
                    count_down(&mut self.per_publisher, &old.record.publisher);
                }
                count_up(&mut self.per_publisher, publisher);
            }
        }
        Ok(())
    }

    /// The unexpired record at `key`.
    pub fn get(&self, key: &Key, now: Time) -> Option<&Record> {
        self.records
            .get(key)
            .map(|s| &s.record)
            .filter(|r| r.expires > now)
    }

    /// Whether an unexpired copy of exactly `record` (same bytes, same
    /// signature) is held: then it was checked when it came first.
    pub fn holds(&self, record: &Record, now: Time) -> bool {
        self.get(&record.dht_key(), now) == Some(record)
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no records are held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Up to `max` records whose re-replication is due at `now`, earliest
    /// due first; their next time is set to `now + interval`. The others
    /// stay due.
    pub fn due_for_replication(
        &mut self,
        now: Time,
        interval: Duration,
        max: usize,
    ) -> Vec<Record> {
        let mut due: Vec<(Time, Key)> = self
            .records
            .iter()
            .filter(|(_, s)| s.replicate_at <= now && s.record.expires > now)
            .map(|(k, s)| (s.replicate_at, *k))
            .collect();
        due.sort_unstable();
        due.truncate(max);
        let mut out = Vec::with_capacity(due.len());
        for (_, k) in due {
            if let Some(s) = self.records.get_mut(&k) {
                s.replicate_at = now + interval;
                out.push(s.record.clone());
            }
        }
        out
    }

    /// Adds or refreshes `peer` as a provider of `key` until `expires`,
    /// charged to `subnet` (see [`Provider::subnet`]).
    pub fn add_provider(
        &mut self,
        key: Key,
        peer: PeerInfo,
        expires: Time,
        subnet: Option<Subnet>,
    ) -> Result<(), DhtError> {
        let id = peer.peer_id;
        if let Some(p) = self
            .providers
            .get_mut(&key)
            .and_then(|l| l.iter_mut().find(|p| p.peer.peer_id == id))
        {
            let was = std::mem::replace(&mut p.subnet, subnet);
            p.peer = peer;
            p.expires = expires;
            count_down(&mut self.per_subnet, &was);
            count_up(&mut self.per_subnet, subnet);
            return Ok(());
        }
        let l = &self.limits;
        if self.per_provider.get(&id).copied().unwrap_or(0) >= l.max_providers_per_peer
            || (subnet.is_some()
                && self.per_subnet.get(&subnet).copied().unwrap_or(0) >= l.max_providers_per_subnet)
        {
            return Err(DhtError::ProviderQuota);
        }
        let per_key = l.max_providers_per_key;
        let key_full = self.providers.get(&key).is_some_and(|l| l.len() >= per_key);
        if key_full {
            // Replace the announcement closest to lapsing.
            let oldest = self
                .providers
                .get(&key)
                .and_then(|l| l.iter().min_by_key(|p| p.expires))
                .map(|p| p.peer.peer_id);
            if let Some(oldest) = oldest {
                self.remove_provider(&key, &oldest);
            }
        } else if self.provider_count >= self.limits.max_providers {
            self.evict_provider();
        }
        // Most keys have one provider here: no room for four.
        let list = self
            .providers
            .entry(key)
            .or_insert_with(|| Vec::with_capacity(1));
        list.push(Provider {
            peer,
            expires,
            subnet,
        });
        self.provider_count += 1;
        count_up(&mut self.per_provider, id);
        count_up(&mut self.per_subnet, subnet);
        Ok(())
    }

    fn remove_provider(&mut self, key: &Key, peer: &PeerId) {
        let Some(list) = self.providers.get_mut(key) else {
            return;
        };
        let Some(pos) = list.iter().position(|p| p.peer.peer_id == *peer) else {
            return;
        };
        let gone = list.swap_remove(pos);
        if list.is_empty() {
            self.providers.remove(key);
        }
        self.provider_count = self.provider_count.saturating_sub(1);
        count_down(&mut self.per_provider, peer);
        count_down(&mut self.per_subnet, &gone.subnet);
    }

    /// Makes room for one announcement: the subnet holding the most loses
    /// its announcement closest to lapsing.
    fn evict_provider(&mut self) {
        let Some(crowded) = self
            .per_subnet
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(s, _)| *s)
        else {
            return;
        };
        let victim = self
            .providers
            .iter()
            .flat_map(|(k, l)| l.iter().map(move |p| (k, p)))
            .filter(|(_, p)| p.subnet == crowded)
            .min_by_key(|(_, p)| p.expires)
            .map(|(k, p)| (*k, p.peer.peer_id));
        if let Some((key, peer)) = victim {
            self.remove_provider(&key, &peer);
        }
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

    /// Provider announcements held, over every key.
    pub fn provider_count(&self) -> usize {
        self.provider_count
    }

    /// Drops expired records and provider announcements.
    pub fn expire(&mut self, now: Time) {
        let per_publisher = &mut self.per_publisher;
        self.records.retain(|_, s| {
            let keep = s.record.expires > now;
            if !keep {
                count_down(per_publisher, &s.record.publisher);
            }
            keep
        });
        let lapsed: Vec<(Key, PeerId)> = self
            .providers
            .iter()
            .flat_map(|(k, l)| l.iter().map(move |p| (k, p)))
            .filter(|(_, p)| p.expires <= now)
            .map(|(k, p)| (*k, p.peer.peer_id))
            .collect();
        for (key, peer) in lapsed {
            self.remove_provider(&key, &peer);
        }
    }

    /// Bytes held, estimated from the data structure sizes.
    pub fn memory_estimate(&self) -> usize {
        // A B-tree entry: key, value and about a pointer's worth of node.
        let entry = |k: usize, v: usize| k + v + 8;
        let recs: usize = self
            .records
            .values()
            .map(|s| {
                entry(std::mem::size_of::<Key>(), std::mem::size_of::<Stored>())
                    + s.record.key.len()
                    + s.record.value.len()
            })
            .sum();
        let provs: usize = self
            .providers
            .values()
            .map(|l| {
                entry(
                    std::mem::size_of::<Key>(),
                    std::mem::size_of::<Vec<Provider>>(),
                ) + l.capacity() * std::mem::size_of::<Provider>()
                    + l.iter()
                        .map(|p| p.peer.addrs.capacity() * std::mem::size_of::<PeerAddr>())
                        .sum::<usize>()
            })
            .sum();
        let counters = (self.per_publisher.len() + self.per_provider.len())
            * entry(std::mem::size_of::<PeerId>(), 8)
            + self.per_subnet.len() * entry(std::mem::size_of::<Option<Subnet>>(), 8);
        recs + provs + counters
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
        let mut store = RecordStore::new(StoreLimits {
            max_records: 2,
            max_providers_per_key: 2,
            ..StoreLimits::default()
        });
        let r1 = Record::sign(&a, b"x".to_vec(), b"1".to_vec(), Time(100), &l).unwrap();
        store.put(r1.clone(), Time(50), Time(0)).unwrap();
        assert!(store.holds(&r1, Time(0)));
        let rb = Record::sign(&b, b"x".to_vec(), b"2".to_vec(), Time(200), &l).unwrap();
        assert!(!store.holds(&rb, Time(0)));
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
        let interval = Duration::from_millis(100);
        assert_eq!(store.due_for_replication(Time(60), interval, 8).len(), 1);
        assert!(store.due_for_replication(Time(60), interval, 8).is_empty());
        store.expire(Time(100));
        assert_eq!(store.len(), 1);

        let pk = Key::hash(b"p");
        let info = |kp: &Keypair| PeerInfo {
            peer_id: kp.peer_id(),
            addrs: vec![],
        };
        store.add_provider(pk, info(&a), Time(10), None).unwrap();
        store.add_provider(pk, info(&b), Time(20), None).unwrap();
        assert_eq!(store.providers(&pk, Time(5)).len(), 2);
        assert_eq!(store.providers(&pk, Time(15)).len(), 1);
        let c = Keypair::generate().unwrap();
        store.add_provider(pk, info(&c), Time(30), None).unwrap();
        let now: Vec<_> = store
            .providers(&pk, Time(0))
            .into_iter()
            .map(|p| p.peer_id)
            .collect();
        assert!(now.contains(&c.peer_id()) && !now.contains(&a.peer_id()));
        assert_eq!(store.provider_count(), 2);
        store.expire(Time(30));
        assert!(store.providers(&pk, Time(0)).is_empty());
        assert_eq!(store.provider_count(), 0);
    }

    fn subnet(a: u8) -> Option<Subnet> {
        Some(Subnet::V4([192, 0, a]))
    }

    #[test]
    fn h4_provider_announcements_are_capped_per_provider_per_subnet_and_in_all() {
        let mut store = RecordStore::new(StoreLimits {
            max_providers: 100,
            max_providers_per_peer: 10,
            max_providers_per_subnet: 30,
            ..StoreLimits::default()
        });
        let peer = |n: u8| PeerInfo {
            peer_id: PeerId::from_bytes(&[n; 32]).unwrap(),
            addrs: vec![],
        };
        let key = |n: u32| Key::hash(&n.to_be_bytes());
        // One provider: its quota, then refused by name; a refresh of a
        // key it already provides is not a new announcement.
        for n in 0..10 {
            store
                .add_provider(key(n), peer(1), Time(100), subnet(1))
                .unwrap();
        }
        assert_eq!(
            store.add_provider(key(10), peer(1), Time(100), subnet(1)),
            Err(DhtError::ProviderQuota)
        );
        store
            .add_provider(key(3), peer(1), Time(200), subnet(1))
            .unwrap();
        // Its subnet: 30 announcements whoever sends them.
        for p in 2..4 {
            for n in 0..10 {
                store
                    .add_provider(key(n), peer(p), Time(100), subnet(1))
                    .unwrap();
            }
        }
        assert_eq!(
            store.add_provider(key(0), peer(4), Time(100), subnet(1)),
            Err(DhtError::ProviderQuota)
        );
        // In all: 100. Past it, the most crowded subnet (192.0.1) loses its
        // announcement closest to lapsing, never another subnet's.
        for p in 10..17 {
            let s = subnet(p);
            for n in 0..10 {
                store
                    .add_provider(key(1000 + n), peer(p), Time(500), s)
                    .unwrap();
            }
        }
        assert_eq!(store.provider_count(), 100);
        store
            .add_provider(key(7), peer(20), Time(500), subnet(20))
            .unwrap();
        assert_eq!(store.provider_count(), 100);
        assert_eq!(store.per_subnet.get(&subnet(1)), Some(&29));
        for p in 10..17 {
            assert_eq!(store.per_subnet.get(&subnet(p)), Some(&10));
        }
        assert!(store.memory_estimate() < 100 * 400);
    }

    #[test]
    fn m5_records_are_capped_per_publisher() {
        let (a, b) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let l = limits();
        let mut store = RecordStore::new(StoreLimits {
            max_records_per_publisher: 3,
            ..StoreLimits::default()
        });
        let rec = |kp: &Keypair, n: u8, exp: u64| {
            Record::sign(kp, vec![n], vec![n], Time(exp), &l).unwrap()
        };
        for n in 0..3 {
            store.put(rec(&a, n, 100), Time(50), Time(0)).unwrap();
        }
        assert_eq!(
            store.put(rec(&a, 3, 100), Time(50), Time(0)),
            Err(DhtError::PublisherQuota)
        );
        // Replacing one of its own is not one more; another publisher has
        // its own quota; expiry gives the quota back.
        store.put(rec(&a, 0, 200), Time(50), Time(0)).unwrap();
        store.put(rec(&b, 3, 100), Time(50), Time(0)).unwrap();
        store.expire(Time(100));
        store.put(rec(&a, 4, 300), Time(50), Time(150)).unwrap();
        store.put(rec(&a, 5, 300), Time(50), Time(150)).unwrap();
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn m5_due_replications_are_handed_out_a_few_at_a_time() {
        let kp = Keypair::generate().unwrap();
        let l = limits();
        let mut store = RecordStore::new(StoreLimits::default());
        for n in 0..20u8 {
            let r = Record::sign(&kp, vec![n], vec![n], Time(10_000), &l).unwrap();
            store.put(r, Time(100 + u64::from(n)), Time(0)).unwrap();
        }
        let interval = Duration::from_secs(1);
        let first = store.due_for_replication(Time(200), interval, 8);
        assert_eq!(
            first.iter().map(|r| r.key[0]).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        assert_eq!(store.due_for_replication(Time(200), interval, 8).len(), 8);
        assert_eq!(store.due_for_replication(Time(200), interval, 8).len(), 4);
        assert!(store.due_for_replication(Time(200), interval, 8).is_empty());
    }
}
