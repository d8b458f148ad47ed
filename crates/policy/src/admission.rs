//! Admission of inbound connections before any crypto (sans-IO: time is an
//! argument): who may start a handshake, and who keeps a pending slot.
//!
//! - [`StartBudget`]: a token bucket of handshake starts per host (an IPv4
//!   address, an IPv6 /64): a handshake costs the node three X25519
//!   operations and the peer nothing, so one host may start only so many per
//!   second. Over budget, the connection is dropped before the handshake.
//! - [`Pending`]: the handshakes under way. Slots are plentiful and cheap (a
//!   socket and a small task each); when they run out, the node evicts
//!   instead of refusing, as nginx and HAProxy do: among the origins (an IPv4
//!   /24, an IPv6 /48, one relay) holding the most pending handshakes, the
//!   oldest one that has sent nothing yet, else the oldest one of that origin.
//!   A slowloris from a handful of addresses, or a whole subnet, then only
//!   ever evicts its own connections, and a new connection from elsewhere
//!   always gets a slot. A connection that sends nothing within the
//!   first-byte deadline is cut (the session layer enforces it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use knotwork_core::{IpPrefix, PeerAddr, PeerId};

use crate::meter::{RateBudget, TokenBucket};

/// Hosts whose start budget is tracked at once, at most; past it, the one
/// touched longest ago is forgotten (it starts again with a full bucket).
pub const MAX_TRACKED_HOSTS: usize = 4096;

/// Where an inbound connection comes from, for grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// An IP subnet (IPv4 /24, IPv6 /48).
    Subnet(IpPrefix),
    /// A circuit through this relay.
    Relay(PeerId),
    /// Anything else (the in-memory transport, BLE): one group.
    Other,
}

impl Origin {
    /// The origin of a connection from `addr`.
    pub fn of(addr: &PeerAddr) -> Self {
        match addr {
            PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) => Self::Subnet(IpPrefix::subnet(sa.ip())),
            PeerAddr::Relay(r) => Self::Relay(r.relay_peer),
            _ => Self::Other,
        }
    }
}

/// The host an IP belongs to for per-host limits: the address itself for
/// IPv4, its /64 for IPv6.
pub fn host_of(addr: &PeerAddr) -> Option<IpPrefix> {
    match addr {
        PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) => Some(IpPrefix::host(sa.ip())),
        _ => None,
    }
}

/// Handshake starts per host: see the module docs.
#[derive(Debug)]
pub struct StartBudget {
    budget: RateBudget,
    hosts: HashMap<IpPrefix, (TokenBucket, Instant)>,
}

impl StartBudget {
    /// Each host may start `budget` handshakes.
    pub fn new(budget: RateBudget) -> Self {
        Self {
            budget,
            hosts: HashMap::new(),
        }
    }

    /// Whether the host of `ip` may start a handshake at `now` (and counts it).
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.budget.per_second == f64::INFINITY {
            return true;
        }
        let host = IpPrefix::host(ip);
        if !self.hosts.contains_key(&host) && self.hosts.len() == self.hosts.capacity() {
            self.forget_refilled(now);
        }
        if !self.hosts.contains_key(&host) && self.hosts.len() >= MAX_TRACKED_HOSTS {
            let stale = self
                .hosts
                .iter()
                .min_by_key(|(_, (_, touched))| *touched)
                .map(|(h, _)| *h);
            if let Some(stale) = stale {
                self.hosts.remove(&stale);
            }
        }
        let budget = self.budget;
        let (bucket, touched) = self
            .hosts
            .entry(host)
            .or_insert_with(|| (TokenBucket::new(budget, now), now));
        *touched = now;
        bucket.take(budget, now)
    }

    /// Forgets the hosts whose bucket has refilled since their last start
    /// (a full bucket is what a new host gets, so nothing is lost) and gives
    /// their room back. Called before the table would grow, so it holds the
    /// hosts of the last refill period rather than every host ever seen.
    fn forget_refilled(&mut self, now: Instant) {
        let Ok(refill) =
            Duration::try_from_secs_f64(f64::from(self.budget.burst) / self.budget.per_second)
        else {
            return;
        };
        self.hosts
            .retain(|_, (_, touched)| now.saturating_duration_since(*touched) < refill);
        self.hosts.shrink_to(self.hosts.len() * 2);
    }

    /// Hosts tracked now.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host is tracked.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[derive(Debug)]
struct Entry {
    origin: Origin,
    since: Instant,
    /// The peer sent at least one byte.
    started: bool,
}

/// What [`Pending::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// A free slot: the new connection's id.
    Slot(u64),
    /// No free slot: connection `evict` must be cut to make room for the new
    /// connection `id`.
    Evict {
        /// The new connection.
        id: u64,
        /// The one to cut.
        evict: u64,
    },
}

/// The pending handshakes: see the module docs.
#[derive(Debug)]
pub struct Pending {
    capacity: usize,
    next_id: u64,
    entries: HashMap<u64, Entry>,
}

impl Pending {
    /// At most `capacity` handshakes pending at once (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            next_id: 0,
            entries: HashMap::new(),
        }
    }

    /// Admits a new connection from `origin` at `now`, evicting another
    /// when full (the victim is removed here; its owner must cut it).
    pub fn admit(&mut self, origin: Origin, now: Instant) -> Admit {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let evict = (self.entries.len() >= self.capacity)
            .then(|| self.victim(origin))
            .flatten();
        if let Some(victim) = evict {
            self.entries.remove(&victim);
        }
        self.entries.insert(
            id,
            Entry {
                origin,
                since: now,
                started: false,
            },
        );
        match evict {
            Some(evict) => Admit::Evict { id, evict },
            None => Admit::Slot(id),
        }
    }

    /// The entry to evict for a newcomer from `origin`: in the origin with
    /// the most entries (the newcomer counted), the oldest silent entry,
    /// else the oldest.
    fn victim(&self, origin: Origin) -> Option<u64> {
        let mut counts: HashMap<Origin, usize> = HashMap::new();
        for e in self.entries.values() {
            *counts.entry(e.origin).or_default() += 1;
        }
        *counts.entry(origin).or_default() += 1;
        let crowded = counts
            .into_iter()
            .filter(|(o, _)| self.entries.values().any(|e| e.origin == *o))
            .max_by_key(|(_, n)| *n)
            .map(|(o, _)| o)?;
        self.entries
            .iter()
            .filter(|(_, e)| e.origin == crowded)
            .min_by_key(|(id, e)| (e.started, e.since, **id))
            .map(|(id, _)| *id)
    }

    /// Connection `id` sent its first byte.
    pub fn started(&mut self, id: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.started = true;
        }
    }

    /// Connection `id` finished its handshake, or failed.
    pub fn remove(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// Handshakes pending now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn from(s: &str) -> Origin {
        Origin::of(&format!("tcp/{s}:1").parse().unwrap())
    }

    #[test]
    fn a_host_over_its_start_budget_is_refused_and_others_are_not() {
        let t0 = Instant::now();
        let mut b = StartBudget::new(RateBudget::new(2.0, 3));
        let attacker: IpAddr = "203.0.113.5".parse().unwrap();
        assert!((0..3).all(|_| b.take(attacker, t0)));
        assert!(!b.take(attacker, t0), "burst spent");
        // An IPv6 /64 is one host: another address in it shares the bucket.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v6_other: IpAddr = "2001:db8::2".parse().unwrap();
        assert!((0..3).all(|_| b.take(v6, t0)));
        assert!(!b.take(v6_other, t0));
        assert!(
            b.take("2001:db8:0:1::1".parse().unwrap(), t0),
            "another /64"
        );
        assert!(b.take("203.0.113.6".parse().unwrap(), t0), "another host");
        assert!(
            b.take(attacker, t0 + Duration::from_millis(500)),
            "refilled"
        );
    }

    #[test]
    fn the_start_budget_tracks_a_bounded_number_of_hosts() {
        let t0 = Instant::now();
        let mut b = StartBudget::new(RateBudget::new(1.0, 1));
        for i in 0..(MAX_TRACKED_HOSTS as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            b.take(ip, t0 + Duration::from_micros(u64::from(i)));
        }
        assert_eq!(b.len(), MAX_TRACKED_HOSTS);
    }

    #[test]
    fn hosts_whose_bucket_refilled_are_forgotten_before_the_table_grows() {
        let t0 = Instant::now();
        // A bucket of 2 refills in a second.
        let mut b = StartBudget::new(RateBudget::new(2.0, 2));
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..1_000 {
            b.take(ip(i), t0);
        }
        assert_eq!(b.len(), 1_000);
        // Two seconds on, a new round of hosts: the first ones' buckets are
        // full again, so they go before the table would grow for the new.
        for i in 1_000..2_000 {
            b.take(ip(i), t0 + Duration::from_secs(2));
        }
        assert!(b.len() <= 1_000, "{} hosts tracked", b.len());
        // A host still in its refill period keeps its spent bucket.
        let busy = ip(5_000);
        let later = t0 + Duration::from_secs(10);
        assert!(b.take(busy, later) && b.take(busy, later) && !b.take(busy, later));
        for i in 2_000..4_000 {
            b.take(ip(i), later);
        }
        assert!(!b.take(busy, later), "its bucket was kept");
    }

    #[test]
    fn a_full_table_evicts_the_crowded_origins_oldest_silent_entry() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut p = Pending::new(4);
        // The attacker's subnet holds three slots, an honest peer one.
        let Admit::Slot(a1) = p.admit(from("10.0.0.1"), at(0)) else {
            panic!()
        };
        let Admit::Slot(a2) = p.admit(from("10.0.0.2"), at(1)) else {
            panic!()
        };
        let Admit::Slot(_) = p.admit(from("192.0.2.1"), at(2)) else {
            panic!()
        };
        let Admit::Slot(a3) = p.admit(from("10.0.0.3"), at(3)) else {
            panic!()
        };
        p.started(a1);
        // A newcomer from elsewhere evicts the attacker's oldest silent one.
        let Admit::Evict { evict, .. } = p.admit(from("198.51.100.1"), at(4)) else {
            panic!()
        };
        assert_eq!(evict, a2);
        assert_eq!(p.len(), 4);
        // The attacker's own newcomers evict its own entries, never others'.
        let Admit::Evict { evict, .. } = p.admit(from("10.0.0.4"), at(5)) else {
            panic!()
        };
        assert_eq!(evict, a3, "silent before started");
        let Admit::Evict { evict, .. } = p.admit(from("10.0.0.5"), at(6)) else {
            panic!()
        };
        assert_ne!(
            evict, a1,
            "the newest silent entry goes before a started one"
        );
    }

    #[test]
    fn slowloris_from_sixteen_addresses_never_takes_a_newcomers_slot() {
        let t0 = Instant::now();
        let mut p = Pending::new(64);
        let mut attacker = Vec::new();
        for i in 0..1_000u64 {
            let origin = from(&format!("10.9.{}.{}", i % 16, 1 + i % 200));
            match p.admit(origin, t0 + Duration::from_millis(i)) {
                Admit::Slot(id) | Admit::Evict { id, .. } => attacker.push(id),
            }
        }
        assert_eq!(p.len(), 64);
        // An honest newcomer gets a slot and keeps it through more attack.
        let honest = match p.admit(from("192.0.2.9"), t0 + Duration::from_secs(2)) {
            Admit::Slot(id) | Admit::Evict { id, .. } => id,
        };
        for i in 0..1_000u64 {
            let origin = from(&format!("10.9.{}.{}", i % 16, 1 + i % 200));
            if let Admit::Evict { evict, .. } = p.admit(origin, t0 + Duration::from_secs(3)) {
                assert_ne!(evict, honest);
            }
        }
        p.remove(honest);
        assert_eq!(p.len(), 63);
    }

    #[test]
    fn relayed_connections_are_grouped_by_relay() {
        let relay = knotwork_core::Keypair::generate().unwrap().peer_id();
        let target = knotwork_core::Keypair::generate().unwrap().peer_id();
        let addr =
            PeerAddr::relayed("tcp/198.51.100.1:4000".parse().unwrap(), relay, target).unwrap();
        assert_eq!(Origin::of(&addr), Origin::Relay(relay));
        assert_eq!(Origin::of(&PeerAddr::Mem(1)), Origin::Other);
        assert_eq!(host_of(&PeerAddr::Mem(1)), None);
    }
}
