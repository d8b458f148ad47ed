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
mod tests;
