//! [`HostStore`]: the addresses a node knows, in three capped lists.
//!
//! - **grey**: heard of (from a peer's `addrs` or version message), never
//!   verified. Every new address lands here.
//! - **white**: verified: we completed a handshake and version exchange with
//!   it (the refinery probes grey hosts; a successful outbound connection
//!   counts too). Outbound slots are filled from here.
//! - **black**: refused (banned peers' addresses, hosts that failed too
//!   often); never dialed or shared.
//!
//! Each list holds at most [`HostStore::capacity`] entries; when full, the
//! entry seen longest ago is evicted. [`AddrScope`] decides which addresses
//! may be shared with which peer: a loopback address only with a peer that
//! is itself on loopback, a private (RFC 1918, link-local, ULA) one only with
//! a loopback or private peer, public ones with everyone.
//!
//! Sans-IO: every call that records time takes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use knotwork_core::{IpPrefix, PeerAddr};

/// The host of a direct IP address (`tcp/`, `quic/`), IPv4-mapped IPv6
/// as IPv4.
fn ip_of(addr: &PeerAddr) -> Option<IpAddr> {
    match addr {
        PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) => Some(knotwork_core::netgroup::canonical(sa.ip())),
        _ => None,
    }
}

/// How far an address is reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrScope {
    /// This machine only (127/8, ::1) or an in-process memory port.
    Loopback,
    /// A private network (10/8, 172.16/12, 192.168/16, 169.254/16,
    /// 100.64/10, fc00::/7, fe80::/10).
    Private,
    /// The internet.
    Public,
    /// Not a dialable address (unspecified, multicast, broadcast).
    Unroutable,
}

impl AddrScope {
    /// The scope of `addr`.
    pub fn of(addr: &PeerAddr) -> Self {
        match addr {
            PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) => Self::of_ip(sa.ip()),
            PeerAddr::Mem(_) => Self::Loopback,
            // A relayed peer is as far away as its relay: a public relay's
            // peers are public peers (review finding M3).
            PeerAddr::Relay(r) => Self::of(&r.relay),
            _ => Self::Private,
        }
    }

    /// The scope of an IP address.
    pub fn of_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                if v4.is_loopback() {
                    Self::Loopback
                } else if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() {
                    Self::Unroutable
                } else if v4.is_private() || v4.is_link_local() || (a == 100 && (b & 0xc0) == 64) {
                    Self::Private
                } else {
                    Self::Public
                }
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Self::of_ip(IpAddr::V4(v4));
                }
                let first = v6.segments().first().copied().unwrap_or(0);
                if v6.is_loopback() {
                    Self::Loopback
                } else if v6.is_unspecified() || v6.is_multicast() {
                    Self::Unroutable
                } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
                    Self::Private
                } else {
                    Self::Public
                }
            }
        }
    }

    /// Whether an address of this scope may be shared with a peer whose
    /// connection comes from `peer` scope.
    pub fn shareable_with(self, peer: AddrScope) -> bool {
        match self {
            Self::Unroutable => false,
            Self::Public => true,
            Self::Private => matches!(peer, Self::Private | Self::Loopback),
            Self::Loopback => peer == Self::Loopback,
        }
    }
}

/// Which list an address is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostList {
    /// Heard of, unverified.
    Grey,
    /// Verified by a handshake.
    White,
    /// Refused.
    Black,
}

/// The netgroup of an address for diversity (review finding M12): an IPv4
/// /16 or IPv6 /32 ([`IpPrefix::group`]); addresses without an IP (memory,
/// BLE) form one group, relayed ones their relay's.
pub fn netgroup(addr: &PeerAddr) -> Option<IpPrefix> {
    match addr {
        PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) => Some(IpPrefix::group(sa.ip())),
        PeerAddr::Relay(r) => netgroup(&r.relay),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct List {
    seen: HashMap<PeerAddr, Instant>,
}

impl List {
    /// Inserts `addr`; when full, evicts the oldest entry of the netgroup
    /// with the most entries, so that one group (an attacker's /16 full of
    /// addresses) can only ever push out its own.
    fn insert(&mut self, addr: PeerAddr, now: Instant, cap: usize) {
        if !self.seen.contains_key(&addr) && self.seen.len() >= cap {
            let mut sizes: HashMap<Option<IpPrefix>, usize> = HashMap::new();
            for a in self.seen.keys() {
                *sizes.entry(netgroup(a)).or_default() += 1;
            }
            *sizes.entry(netgroup(&addr)).or_default() += 1;
            let crowded = sizes
                .into_iter()
                .filter(|(g, _)| self.seen.keys().any(|a| netgroup(a) == *g))
                .max_by_key(|(_, n)| *n)
                .map(|(g, _)| g);
            let oldest = self
                .seen
                .iter()
                .filter(|(a, _)| crowded.is_none_or(|g| netgroup(a) == g))
                .min_by_key(|(_, t)| **t)
                .map(|(a, _)| a.clone());
            if let Some(oldest) = oldest {
                self.seen.remove(&oldest);
            }
        }
        if cap > 0 {
            self.seen.insert(addr, now);
        }
    }

    /// Entries, most recently seen first.
    fn newest_first(&self) -> Vec<PeerAddr> {
        let mut v: Vec<_> = self.seen.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        v.into_iter().map(|(a, _)| a.clone()).collect()
    }
}

/// Known addresses in grey, white and black lists; see the module docs.
#[derive(Debug)]
pub struct HostStore {
    capacity: usize,
    grey: List,
    white: List,
    black: List,
}

impl HostStore {
    /// An empty store holding at most `capacity` addresses per list.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            grey: List::default(),
            white: List::default(),
            black: List::default(),
        }
    }

    /// The cap of each list.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Which list `addr` is on, if any.
    pub fn list_of(&self, addr: &PeerAddr) -> Option<HostList> {
        if self.black.seen.contains_key(addr) {
            Some(HostList::Black)
        } else if self.white.seen.contains_key(addr) {
            Some(HostList::White)
        } else if self.grey.seen.contains_key(addr) {
            Some(HostList::Grey)
        } else {
            None
        }
    }

    /// Records addresses heard from a peer whose connection has scope
    /// `heard_from`: unknown ones in that scope go grey (a public peer never
    /// puts loopback or private addresses in our store, review finding M3);
    /// addresses already white or black keep their place.
    pub fn add_grey(
        &mut self,
        addrs: impl IntoIterator<Item = PeerAddr>,
        heard_from: AddrScope,
        now: Instant,
    ) {
        for addr in addrs {
            if !AddrScope::of(&addr).shareable_with(heard_from) || self.list_of(&addr).is_some() {
                continue;
            }
            self.grey.insert(addr, now, self.capacity);
        }
    }

    /// Records the listen addresses an inbound peer declared, its connection
    /// coming from `from`: only those on the host it connects from go grey
    /// (and, for a peer without an IP address, those without one either).
    /// An address on another host never sent us anything, so the refinery
    /// must not probe it: a peer that names a third party's address makes
    /// us send that party nothing (issue 18, no reflection).
    pub fn add_declared(
        &mut self,
        declared: impl IntoIterator<Item = PeerAddr>,
        from: &PeerAddr,
        now: Instant,
    ) {
        let host = ip_of(from);
        let own = declared.into_iter().filter(|a| ip_of(a) == host);
        self.add_grey(own, AddrScope::of(from), now);
    }

    /// A handshake with `addr` succeeded: it moves to white.
    pub fn promote(&mut self, addr: &PeerAddr, now: Instant) {
        if self.black.seen.contains_key(addr) {
            return;
        }
        self.grey.seen.remove(addr);
        self.white.insert(addr.clone(), now, self.capacity);
    }

    /// A probe of a grey address failed: it is forgotten.
    pub fn forget(&mut self, addr: &PeerAddr) {
        self.grey.seen.remove(addr);
        self.white.seen.remove(addr);
    }

    /// `addr` must never be dialed or shared: it moves to black.
    pub fn blacklist(&mut self, addr: &PeerAddr, now: Instant) {
        self.grey.seen.remove(addr);
        self.white.seen.remove(addr);
        self.black.insert(addr.clone(), now, self.capacity);
    }

    /// The grey address heard of longest ago, for the refinery to probe.
    pub fn next_grey(&self) -> Option<PeerAddr> {
        self.grey.newest_first().pop()
    }

    /// White addresses, most recently verified first.
    pub fn white(&self) -> Vec<PeerAddr> {
        self.white.newest_first()
    }

    /// Up to `n` white addresses to dial for outbound slots, in random order
    /// (`seed` picks it), at most one per netgroup and none in `used` (the
    /// groups of the outbound peers we have) or accepted by `skip`: an
    /// attacker owning many addresses in one /16 gets one slot at most
    /// (review finding M12).
    pub fn outbound_candidates(
        &self,
        n: usize,
        used: &[Option<IpPrefix>],
        seed: u64,
        skip: impl Fn(&PeerAddr) -> bool,
    ) -> Vec<PeerAddr> {
        let mut all = self.white.newest_first();
        let mut rng = fastrand::Rng::with_seed(seed);
        rng.shuffle(&mut all);
        let mut groups: Vec<Option<IpPrefix>> = used.to_vec();
        let mut out = Vec::new();
        for addr in all {
            if out.len() >= n {
                break;
            }
            let group = netgroup(&addr);
            // Addresses without an IP (memory, BLE) are not grouped.
            if (group.is_some() && groups.contains(&group)) || skip(&addr) {
                continue;
            }
            groups.push(group);
            out.push(addr);
        }
        out
    }

    /// Grey addresses, most recently heard first.
    pub fn grey(&self) -> Vec<PeerAddr> {
        self.grey.newest_first()
    }

    /// Up to `max` white addresses that may be shared with a peer connected
    /// from `peer_addr` (see [`AddrScope::shareable_with`]).
    pub fn shareable(&self, peer_addr: &PeerAddr, max: usize) -> Vec<PeerAddr> {
        let peer_scope = AddrScope::of(peer_addr);
        self.white
            .newest_first()
            .into_iter()
            .filter(|a| same_family(a, peer_addr) && AddrScope::of(a).shareable_with(peer_scope))
            .take(max)
            .collect()
    }
}

/// Memory addresses are only meaningful to memory peers and vice versa;
/// IP addresses (TCP, QUIC) to peers on IP, whichever transport they came on.
fn same_family(a: &PeerAddr, b: &PeerAddr) -> bool {
    matches!(
        (a, b),
        (
            PeerAddr::Tcp(_) | PeerAddr::Quic(_),
            PeerAddr::Tcp(_) | PeerAddr::Quic(_)
        ) | (PeerAddr::Mem(_), PeerAddr::Mem(_))
            | (PeerAddr::Ble(_), PeerAddr::Ble(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn a(s: &str) -> PeerAddr {
        s.parse().unwrap()
    }

    #[test]
    fn scopes() {
        assert_eq!(AddrScope::of(&a("tcp/127.0.0.1:1")), AddrScope::Loopback);
        assert_eq!(AddrScope::of(&a("tcp/[::1]:1")), AddrScope::Loopback);
        assert_eq!(AddrScope::of(&a("tcp/10.1.2.3:1")), AddrScope::Private);
        assert_eq!(AddrScope::of(&a("tcp/192.168.1.1:1")), AddrScope::Private);
        assert_eq!(AddrScope::of(&a("tcp/100.100.1.1:1")), AddrScope::Private);
        assert_eq!(AddrScope::of(&a("tcp/[fd00::1]:1")), AddrScope::Private);
        assert_eq!(AddrScope::of(&a("tcp/[fe80::1]:1")), AddrScope::Private);
        assert_eq!(
            AddrScope::of(&a("tcp/[::ffff:10.0.0.1]:1")),
            AddrScope::Private
        );
        assert_eq!(AddrScope::of(&a("tcp/8.8.8.8:1")), AddrScope::Public);
        assert_eq!(AddrScope::of(&a("tcp/[2001:db8::1]:1")), AddrScope::Public);
        assert_eq!(AddrScope::of(&a("tcp/0.0.0.0:1")), AddrScope::Unroutable);
        assert_eq!(AddrScope::of(&a("mem/4")), AddrScope::Loopback);
    }

    #[test]
    fn new_addresses_go_grey_then_white_when_promoted() {
        let now = Instant::now();
        let mut h = HostStore::new(10);
        h.add_grey(
            [a("tcp/8.8.8.8:1"), a("tcp/0.0.0.0:5")],
            AddrScope::Loopback,
            now,
        );
        assert_eq!(h.list_of(&a("tcp/8.8.8.8:1")), Some(HostList::Grey));
        assert_eq!(h.list_of(&a("tcp/0.0.0.0:5")), None, "unroutable refused");
        h.promote(&a("tcp/8.8.8.8:1"), now);
        assert_eq!(h.list_of(&a("tcp/8.8.8.8:1")), Some(HostList::White));
        h.add_grey([a("tcp/8.8.8.8:1")], AddrScope::Loopback, now);
        assert_eq!(
            h.list_of(&a("tcp/8.8.8.8:1")),
            Some(HostList::White),
            "stays white"
        );
        h.blacklist(&a("tcp/8.8.8.8:1"), now);
        h.promote(&a("tcp/8.8.8.8:1"), now);
        assert_eq!(
            h.list_of(&a("tcp/8.8.8.8:1")),
            Some(HostList::Black),
            "black is sticky"
        );
    }

    #[test]
    fn lists_are_capped_evicting_the_oldest() {
        let t0 = Instant::now();
        let mut h = HostStore::new(3);
        for i in 0..5u16 {
            let t = t0 + Duration::from_secs(u64::from(i));
            h.add_grey(
                [a(&format!("tcp/8.8.8.8:{}", 100 + i))],
                AddrScope::Public,
                t,
            );
        }
        let grey = h.grey();
        assert_eq!(grey.len(), 3);
        assert_eq!(grey.first(), Some(&a("tcp/8.8.8.8:104")));
        assert_eq!(h.next_grey(), Some(a("tcp/8.8.8.8:102")), "oldest first");
    }

    #[test]
    fn loopback_and_private_addresses_stay_in_scope() {
        let now = Instant::now();
        let mut h = HostStore::new(10);
        for s in [
            "tcp/127.0.0.1:1",
            "tcp/10.0.0.1:1",
            "tcp/8.8.8.8:1",
            "mem/3",
        ] {
            h.promote(&a(s), now);
        }
        let public_peer = h.shareable(&a("tcp/1.2.3.4:9"), 10);
        assert_eq!(public_peer, vec![a("tcp/8.8.8.8:1")]);
        let mut private_peer = h.shareable(&a("tcp/192.168.0.9:9"), 10);
        private_peer.sort();
        assert_eq!(private_peer, vec![a("tcp/8.8.8.8:1"), a("tcp/10.0.0.1:1")]);
        assert_eq!(h.shareable(&a("tcp/127.0.0.1:9"), 10).len(), 3);
        assert_eq!(h.shareable(&a("mem/9"), 10), vec![a("mem/3")]);
        assert_eq!(
            h.shareable(&a("tcp/127.0.0.1:9"), 1).len(),
            1,
            "max respected"
        );
    }

    #[test]
    fn m3_a_public_or_relayed_peer_cannot_fill_the_store_with_local_addresses() {
        let now = Instant::now();
        let mut h = HostStore::new(10);
        let claimed = [
            a("tcp/127.0.0.1:6379"),
            a("tcp/10.0.0.1:22"),
            a("tcp/169.254.169.254:80"),
            a("tcp/198.51.100.7:4000"),
        ];
        h.add_grey(claimed.clone(), AddrScope::Public, now);
        assert_eq!(h.grey(), vec![a("tcp/198.51.100.7:4000")]);
        // A peer relayed through a public relay is a public peer.
        let relay = knotwork_core::Keypair::generate().unwrap().peer_id();
        let target = knotwork_core::Keypair::generate().unwrap().peer_id();
        let relayed = PeerAddr::relayed(a("tcp/203.0.113.1:4000"), relay, target).unwrap();
        assert_eq!(AddrScope::of(&relayed), AddrScope::Public);
        // A LAN peer may tell us LAN addresses, never loopback ones.
        let mut lan = HostStore::new(10);
        lan.add_grey(claimed, AddrScope::Private, now);
        assert_eq!(lan.grey().len(), 3);
        assert_eq!(lan.list_of(&a("tcp/127.0.0.1:6379")), None);
    }

    #[test]
    fn an_inbound_peer_cannot_make_us_probe_another_host() {
        let now = Instant::now();
        let mut h = HostStore::new(10);
        let from = a("tcp/10.0.0.5:51000");
        let declared = [
            a("tcp/10.0.0.5:4000"),
            a("quic/[::ffff:10.0.0.5]:4001"),
            a("tcp/10.0.0.8:9"),
            a("tcp/10.0.0.6:4000"),
            a("mem/7"),
        ];
        h.add_declared(declared, &from, now);
        let mut grey = h.grey();
        grey.sort_by_key(|g| g.to_string());
        assert_eq!(
            grey,
            vec![a("quic/[::ffff:10.0.0.5]:4001"), a("tcp/10.0.0.5:4000")]
        );
        let mut mem = HostStore::new(10);
        mem.add_declared([a("mem/7"), a("tcp/10.0.0.8:9")], &a("mem/3"), now);
        assert_eq!(mem.grey(), vec![a("mem/7")]);
    }

    #[test]
    fn m12_one_crowded_netgroup_cannot_take_the_outbound_slots_or_flush_the_lists() {
        let t0 = Instant::now();
        let mut h = HostStore::new(64);
        // 1,000 attacker addresses in one /16 ...
        for i in 0..1_000u32 {
            let t = t0 + Duration::from_millis(u64::from(i));
            h.promote(
                &a(&format!("tcp/203.0.{}.{}:4000", i / 250, 1 + i % 250)),
                t,
            );
        }
        // ... then 8 honest peers in distinct /16s, verified earlier.
        let honest: Vec<PeerAddr> = (0..8)
            .map(|i| a(&format!("tcp/198.{}.0.1:4000", 10 + i)))
            .collect();
        for addr in &honest {
            h.promote(addr, t0);
        }
        // The crowded group evicted its own entries, not the honest ones.
        for addr in &honest {
            assert_eq!(h.list_of(addr), Some(HostList::White), "{addr}");
        }
        for seed in 0..20 {
            let picked = h.outbound_candidates(8, &[], seed, |_| false);
            assert_eq!(picked.len(), 8);
            let crowded = picked
                .iter()
                .filter(|p| p.to_string().starts_with("tcp/203.0."))
                .count();
            assert!(crowded <= 1, "seed {seed}: {picked:?}");
        }
        // A group we already have an outbound peer in is skipped.
        let used = [netgroup(&a("tcp/203.0.9.9:1"))];
        let picked = h.outbound_candidates(8, &used, 1, |_| false);
        assert!(
            picked
                .iter()
                .all(|p| !p.to_string().starts_with("tcp/203.0."))
        );
    }
}
