//! The [`RoutingTable`]: 256 [`KBucket`]s of up to k peers each.
//!
//! Bucket `i` holds peers whose key shares exactly `i` leading bits with the
//! local key (so bucket 0 covers half the space and fills first). Buckets are
//! indexed by shared-prefix length rather than split on demand: this is the
//! fully split Kademlia tree, and only buckets up to the deepest one used are
//! allocated.
//!
//! # Eviction
//! Within a bucket, entries are ordered least recently seen first. A new peer
//! that finds its bucket full goes to the bucket's replacement cache, and the
//! least recently seen entry is pinged ([`InsertOutcome::Full`] tells the
//! caller whom). Only if that ping fails does the entry leave; the newest
//! cached candidate then takes its place ([`RoutingTable::ping_result`]).
//! Long-lived peers are never pushed out by a flood of new ones. An entry
//! that fails `max_failures` requests in a row without being heard from in
//! between leaves at once, candidate or not
//! ([`RoutingTable::with_max_failures`]): a departed peer must not be asked
//! again by every lookup that comes near its key.
//!
//! # Subnet limits
//! As in discv5, a bucket holds at most `bucket_subnet_limit` (2) entries
//! and the whole table at most `table_subnet_limit` (10) entries with an
//! address in one IPv4 /24 or IPv6 /64, so one operator with a block of
//! addresses cannot fill a node's view of the network.

use std::collections::BTreeMap;
use std::time::Duration;

use knotwork_core::{PeerAddr, PeerId};

use crate::DhtError;
use crate::key::{Distance, KEY_BITS, Key};
use crate::message::{PeerInfo, Subnet, subnet_of};
use crate::time::Time;

/// One peer in a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The peer.
    pub peer_id: PeerId,
    /// Its key (SHA-256 of the id), kept to avoid rehashing.
    pub key: Key,
    /// Where it can be reached.
    pub addrs: Box<[PeerAddr]>,
    /// When we last heard from it.
    pub last_seen: Time,
    /// Requests to it that failed since we last heard from it.
    pub failures: u32,
}

impl Entry {
    /// The entry as a [`PeerInfo`].
    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            peer_id: self.peer_id,
            addrs: self.addrs.to_vec(),
        }
    }
}

/// A bucket: up to k entries, least recently seen first, and a replacement
/// cache of candidates, newest last.
#[derive(Clone, Debug, Default)]
pub struct KBucket {
    entries: Vec<Entry>,
    replacements: Vec<Entry>,
    pinging: Option<PeerId>,
    last_lookup: Time,
}

impl KBucket {
    /// Entries, least recently seen first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Replacement candidates, newest last.
    pub fn replacements(&self) -> &[Entry] {
        &self.replacements
    }

    /// The entry being liveness-checked, if any.
    pub fn pinging(&self) -> Option<&PeerId> {
        self.pinging.as_ref()
    }
}

/// What [`RoutingTable::insert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new entry.
    Inserted,
    /// An existing entry, moved to most recently seen.
    Updated,
    /// The bucket is full: the candidate waits in the replacement cache, and
    /// the caller should ping `ping` (the least recently seen entry). `None`
    /// when a ping of that bucket is already under way.
    Full {
        /// Whom to ping.
        ping: Option<PeerInfo>,
    },
}

/// What a failed request did to its peer's entry
/// ([`RoutingTable::request_failed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failed {
    /// It stays, first in line for the next liveness check; `ping` is the
    /// peer to check now when its bucket has a candidate waiting.
    Kept {
        /// Whom to ping.
        ping: Option<PeerInfo>,
    },
    /// It failed `max_failures` requests in a row and left.
    Evicted(Eviction),
    /// It is not in the table.
    Absent,
}

/// The result of a failed liveness check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// The entry removed.
    pub evicted: PeerId,
    /// The candidate that took its place, if any.
    pub promoted: Option<PeerId>,
}

/// The routing table of one node.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    local: Key,
    k: usize,
    replacement_cap: usize,
    subnet_limits: Option<(usize, usize)>,
    buckets: Vec<KBucket>,
    subnets: BTreeMap<Subnet, u16>,
    len: usize,
    ping_after: Duration,
    max_failures: u32,
}

impl RoutingTable {
    /// An empty table around `local` with bucket size `k`, at most
    /// `replacement_cap` cached candidates per bucket, and optional
    /// `(per bucket, per table)` subnet limits.
    pub fn new(
        local: Key,
        k: usize,
        replacement_cap: usize,
        subnet_limits: Option<(usize, usize)>,
    ) -> Self {
        Self {
            local,
            k,
            replacement_cap,
            subnet_limits,
            buckets: Vec::new(),
            subnets: BTreeMap::new(),
            len: 0,
            ping_after: Duration::ZERO,
            max_failures: u32::MAX,
        }
    }

    /// Evicts an entry once `n` requests to it failed in a row (its bucket's
    /// newest candidate takes its place, if any); by default never, only a
    /// failed liveness check evicts.
    pub fn with_max_failures(mut self, n: u32) -> Self {
        self.max_failures = n.max(1);
        self
    }

    /// Skips the liveness check of a full bucket while its least recently
    /// seen entry was heard from less than `idle` ago: it is known alive, so
    /// the candidate just waits in the replacement cache. Without this, a
    /// ping from a stranger makes the pinged node ping its own oldest entry,
    /// and so on down a chain.
    pub fn with_ping_after(mut self, idle: Duration) -> Self {
        self.ping_after = idle;
        self
    }

    /// The local key.
    pub fn local_key(&self) -> &Key {
        &self.local
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bucket `index`, if allocated.
    pub fn bucket(&self, index: usize) -> Option<&KBucket> {
        self.buckets.get(index)
    }

    /// Number of allocated buckets (one past the deepest used).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// All entries, by bucket.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// The entry for `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&Entry> {
        let key = Key::from_peer_id(peer);
        let idx = self.local.bucket_index(&key)?;
        self.buckets
            .get(idx)?
            .entries
            .iter()
            .find(|e| e.peer_id == *peer)
    }

    fn bucket_mut(&mut self, idx: usize) -> Option<&mut KBucket> {
        if idx >= KEY_BITS {
            return None;
        }
        if self.buckets.len() <= idx {
            self.buckets.resize_with(idx + 1, KBucket::default);
        }
        self.buckets.get_mut(idx)
    }

    /// Checks the subnet limits for `addrs` entering bucket `idx`.
    fn check_subnets(&self, idx: usize, addrs: &[PeerAddr]) -> Result<(), DhtError> {
        let Some((per_bucket, per_table)) = self.subnet_limits else {
            return Ok(());
        };
        let mut subnets: Vec<Subnet> = addrs.iter().filter_map(subnet_of).collect();
        subnets.sort_unstable();
        subnets.dedup();
        let bucket = self.buckets.get(idx);
        for s in subnets {
            let in_bucket = bucket.map_or(0, |b| {
                b.entries
                    .iter()
                    .filter(|e| e.addrs.iter().any(|a| subnet_of(a) == Some(s)))
                    .count()
            });
            if in_bucket >= per_bucket {
                return Err(DhtError::BucketSubnetLimit);
            }
            if usize::from(self.subnets.get(&s).copied().unwrap_or(0)) >= per_table {
                return Err(DhtError::TableSubnetLimit);
            }
        }
        Ok(())
    }

    fn count_subnets(&mut self, addrs: &[PeerAddr], add: bool) {
        if self.subnet_limits.is_none() {
            return;
        }
        let mut subnets: Vec<Subnet> = addrs.iter().filter_map(subnet_of).collect();
        subnets.sort_unstable();
        subnets.dedup();
        for s in subnets {
            if add {
                *self.subnets.entry(s).or_insert(0) += 1;
            } else if let Some(n) = self.subnets.get_mut(&s) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.subnets.remove(&s);
                }
            }
        }
    }

    /// Records that `peer` (reachable at `addrs`) was heard from at `now`:
    /// refreshes it if present, adds it if its bucket has room, or caches it
    /// as a replacement and asks for a liveness check of the bucket's least
    /// recently seen entry.
    pub fn insert(
        &mut self,
        now: Time,
        peer: PeerId,
        addrs: &[PeerAddr],
    ) -> Result<InsertOutcome, DhtError> {
        let key = Key::from_peer_id(&peer);
        let idx = self.local.bucket_index(&key).ok_or(DhtError::SelfEntry)?;
        let k = self.k;
        let cap = self.replacement_cap;
        let ping_after = self.ping_after;
        // Present: move to most recently seen, adopt new addresses if they
        // pass the limits.
        if let Some(pos) = self
            .buckets
            .get(idx)
            .and_then(|b| b.entries.iter().position(|e| e.peer_id == peer))
        {
            let old_addrs = self
                .buckets
                .get_mut(idx)
                .and_then(|b| b.entries.get_mut(pos))
                .map(|e| std::mem::take(&mut e.addrs))
                .unwrap_or_default();
            let new_ok = !addrs.is_empty() && *addrs != *old_addrs && {
                self.count_subnets(&old_addrs, false);
                let ok = self.check_subnets(idx, addrs).is_ok();
                self.count_subnets(if ok { addrs } else { &old_addrs }, true);
                ok
            };
            let Some(bucket) = self.buckets.get_mut(idx) else {
                return Ok(InsertOutcome::Updated);
            };
            let mut e = bucket.entries.remove(pos);
            e.addrs = if new_ok { addrs.into() } else { old_addrs };
            e.last_seen = now;
            e.failures = 0;
            bucket.entries.push(e);
            return Ok(InsertOutcome::Updated);
        }
        self.check_subnets(idx, addrs)?;
        let entry = Entry {
            peer_id: peer,
            key,
            addrs: addrs.into(),
            last_seen: now,
            failures: 0,
        };
        let Some(bucket) = self.bucket_mut(idx) else {
            return Err(DhtError::SelfEntry);
        };
        if bucket.entries.len() < k {
            if bucket.entries.len() == bucket.entries.capacity() {
                bucket
                    .entries
                    .reserve_exact(4.min(k - bucket.entries.len()));
            }
            bucket.entries.push(entry);
            self.len += 1;
            self.count_subnets(addrs, true);
            return Ok(InsertOutcome::Inserted);
        }
        bucket.replacements.retain(|e| e.peer_id != peer);
        if cap > 0 {
            if bucket.replacements.len() >= cap {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push(entry);
        }
        let fresh = bucket
            .entries
            .first()
            .is_some_and(|e| e.last_seen + ping_after > now);
        if bucket.pinging.is_some() || fresh {
            return Ok(InsertOutcome::Full { ping: None });
        }
        let lrs = bucket.entries.first().map(Entry::info);
        bucket.pinging = lrs.as_ref().map(|i| i.peer_id);
        Ok(InsertOutcome::Full { ping: lrs })
    }

    /// Reports the outcome of a liveness check of `peer`. Alive: it becomes
    /// most recently seen. Dead: it is evicted and the newest replacement
    /// candidate that fits the subnet limits takes its place.
    pub fn ping_result(&mut self, now: Time, peer: &PeerId, alive: bool) -> Option<Eviction> {
        let key = Key::from_peer_id(peer);
        let idx = self.local.bucket_index(&key)?;
        let bucket = self.buckets.get_mut(idx)?;
        if bucket.pinging.as_ref() == Some(peer) {
            bucket.pinging = None;
        }
        let pos = bucket.entries.iter().position(|e| e.peer_id == *peer)?;
        if alive {
            let mut e = bucket.entries.remove(pos);
            e.last_seen = now;
            e.failures = 0;
            bucket.entries.push(e);
            return None;
        }
        self.evict(idx, pos)
    }

    /// Removes entry `pos` of bucket `idx`; the newest replacement candidate
    /// that fits the subnet limits takes its place.
    fn evict(&mut self, idx: usize, pos: usize) -> Option<Eviction> {
        let bucket = self.buckets.get_mut(idx)?;
        if pos >= bucket.entries.len() {
            return None;
        }
        let gone = bucket.entries.remove(pos);
        if bucket.pinging == Some(gone.peer_id) {
            bucket.pinging = None;
        }
        self.len -= 1;
        self.count_subnets(&gone.addrs, false);
        let mut promoted = None;
        while let Some(cand) = self.buckets.get_mut(idx).and_then(|b| b.replacements.pop()) {
            if self.check_subnets(idx, &cand.addrs).is_ok() {
                self.count_subnets(&cand.addrs, true);
                promoted = Some(cand.peer_id);
                if let Some(b) = self.buckets.get_mut(idx) {
                    // Candidates were heard from when cached: they slot in
                    // by that time, before entries seen later.
                    let at = b
                        .entries
                        .iter()
                        .position(|e| e.last_seen > cand.last_seen)
                        .unwrap_or(b.entries.len());
                    b.entries.insert(at, cand);
                }
                self.len += 1;
                break;
            }
        }
        Some(Eviction {
            evicted: gone.peer_id,
            promoted,
        })
    }

    /// A request to `peer` failed. At its `max_failures`-th failure in a
    /// row it is evicted; else it moves to least recently seen, first in
    /// line for the next liveness check, and if its bucket has a candidate
    /// waiting and no check under way, it is the peer to ping now.
    pub fn request_failed(&mut self, peer: &PeerId) -> Failed {
        let key = Key::from_peer_id(peer);
        let Some(idx) = self.local.bucket_index(&key) else {
            return Failed::Absent;
        };
        let max_failures = self.max_failures;
        let Some(bucket) = self.buckets.get_mut(idx) else {
            return Failed::Absent;
        };
        let Some(pos) = bucket.entries.iter().position(|e| e.peer_id == *peer) else {
            return Failed::Absent;
        };
        let mut e = bucket.entries.remove(pos);
        e.failures = e.failures.saturating_add(1);
        let info = e.info();
        let failures = e.failures;
        bucket.entries.insert(0, e);
        if failures >= max_failures {
            return self.evict(idx, 0).map_or(Failed::Absent, Failed::Evicted);
        }
        let ping = (bucket.pinging.is_none() && !bucket.replacements.is_empty()).then(|| {
            bucket.pinging = Some(*peer);
            info
        });
        Failed::Kept { ping }
    }

    /// Removes `peer` outright (for example, when it turns out to be in
    /// client mode), from the entries and the replacement cache. Returns
    /// whether it was an entry.
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        let key = Key::from_peer_id(peer);
        let Some(idx) = self.local.bucket_index(&key) else {
            return false;
        };
        let Some(bucket) = self.buckets.get_mut(idx) else {
            return false;
        };
        bucket.replacements.retain(|e| e.peer_id != *peer);
        let Some(pos) = bucket.entries.iter().position(|e| e.peer_id == *peer) else {
            return false;
        };
        let gone = bucket.entries.remove(pos);
        self.len -= 1;
        self.count_subnets(&gone.addrs, false);
        true
    }

    /// Up to `count` entries closest to `target`, closest first.
    ///
    /// Uses the bucket structure: with `b` the bucket of `target`, entries
    /// of bucket `b` are closest, then those of every deeper bucket, then
    /// buckets `b-1`, `b-2`, …, 0 in that order; only groups are sorted.
    pub fn closest(&self, target: &Key, count: usize) -> Vec<&Entry> {
        let b = self.local.bucket_index(target).unwrap_or(KEY_BITS);
        let mut out: Vec<&Entry> = Vec::with_capacity(count);
        let mut group: Vec<(Distance, &Entry)> = Vec::new();
        if let Some(bucket) = self.buckets.get(b) {
            group.extend(bucket.entries.iter().map(|e| (e.key.distance(target), e)));
            take_group(&mut group, &mut out, count);
        }
        if out.len() < count {
            for bucket in self.buckets.iter().skip(b.saturating_add(1)) {
                group.extend(bucket.entries.iter().map(|e| (e.key.distance(target), e)));
            }
            take_group(&mut group, &mut out, count);
        }
        for idx in (0..b.min(self.buckets.len())).rev() {
            if out.len() >= count {
                break;
            }
            if let Some(bucket) = self.buckets.get(idx) {
                group.extend(bucket.entries.iter().map(|e| (e.key.distance(target), e)));
                take_group(&mut group, &mut out, count);
            }
        }
        out
    }

    /// Notes that a lookup towards a key in bucket `index` ran at `now`.
    pub fn touch_bucket(&mut self, index: usize, now: Time) {
        if let Some(b) = self.bucket_mut(index) {
            b.last_lookup = now;
        }
    }

    /// Buckets to refresh at `now`: every bucket up to the deepest non-empty
    /// one whose last lookup is older than `interval`.
    pub fn stale_buckets(&self, now: Time, interval: Duration) -> Vec<usize> {
        let deepest = self
            .buckets
            .iter()
            .rposition(|b| !b.entries.is_empty())
            .unwrap_or(0);
        (0..=deepest)
            .filter(|&i| {
                self.buckets
                    .get(i)
                    .is_none_or(|b| b.last_lookup + interval <= now)
            })
            .collect()
    }

    /// Bytes held, estimated from the data structure sizes (vector
    /// capacities, boxed addresses, subnet counters).
    pub fn memory_estimate(&self) -> usize {
        let entry = std::mem::size_of::<Entry>();
        let addr = std::mem::size_of::<PeerAddr>();
        let mut total = self.buckets.capacity() * std::mem::size_of::<KBucket>();
        for b in &self.buckets {
            total += (b.entries.capacity() + b.replacements.capacity()) * entry;
            total += b
                .entries
                .iter()
                .chain(b.replacements.iter())
                .map(|e| e.addrs.len() * addr)
                .sum::<usize>();
        }
        total + self.subnets.len() * (std::mem::size_of::<(Subnet, u16)>() + 16)
    }
}

/// Sorts `group` by distance and moves entries into `out` until it holds `count`.
fn take_group<'a>(group: &mut Vec<(Distance, &'a Entry)>, out: &mut Vec<&'a Entry>, count: usize) {
    group.sort_unstable_by_key(|x| x.0);
    for (_, e) in group.drain(..) {
        if out.len() >= count {
            break;
        }
        out.push(e);
    }
}

#[cfg(test)]
mod tests {
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
}
