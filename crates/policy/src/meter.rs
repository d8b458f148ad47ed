//! Metering: per-type rate budgets, a misbehaviour score per peer, a ban list.
//!
//! Every message type a channel accepts has a [`RateBudget`] (a token bucket:
//! a sustained rate and a burst). The channel's reader feeds each inbound
//! frame to its [`Meter`] with the time of arrival; the meter answers whether
//! the frame may be delivered and adds [`Offence`] points to the peer's
//! misbehaviour score for an unknown type, an oversized or malformed payload,
//! a frame over budget, or a framing error. Points decay linearly over time so
//! an honest peer's rare slip is forgotten. When the score reaches
//! [`MeterConfig::ban_threshold`] the channel closes and the node puts the
//! peer (and the host its inbound connection came from, or the address we
//! dialed it at) in its [`BanList`] for [`MeterConfig::ban_duration`]; the
//! ban list is consulted when accepting and when dialing.
//!
//! All of it is sans-IO: time is an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use knotwork_core::{IpPrefix, PeerAddr, PeerId};

/// How often a peer may send one message type: a token bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateBudget {
    /// Sustained messages per second.
    pub per_second: f64,
    /// Messages that may arrive at once after a quiet period.
    pub burst: u32,
}

impl RateBudget {
    /// `per_second` sustained, `burst` at once.
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// No limit.
    pub const UNLIMITED: Self = Self::new(f64::INFINITY, u32::MAX);

    /// Whether this budget counts nothing ([`RateBudget::UNLIMITED`] or any
    /// other infinite rate).
    pub fn is_unlimited(&self) -> bool {
        self.per_second == f64::INFINITY
    }
}

impl Default for RateBudget {
    /// 1000 messages per second with bursts of 2000.
    fn default() -> Self {
        Self::new(1000.0, 2000)
    }
}

/// What a peer did wrong; each kind costs [`Offence::points`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Offence {
    /// A frame with a message id nobody on this node subscribes to.
    UnknownMessage,
    /// A payload larger than its type's `MAX_BYTES`.
    Oversized,
    /// A payload that does not decode as its type.
    Malformed,
    /// More frames of a type than its budget allows.
    OverBudget,
    /// A response to no outstanding request, or of the wrong type.
    UnexpectedResponse,
    /// Bytes that are not a frame at all: always reaches the threshold.
    BadFraming,
    /// A frame on a stream that may not carry it (a transport with several
    /// streams per connection, see the channel docs): a request, response
    /// or control message on a message type's own stream, a second type
    /// there, or a second stream of one type. Always reaches the threshold.
    WrongStream,
    /// A compressed block that breaks the rules (see
    /// `knotwork-compress`): an unknown kind, bad lengths, a declared size
    /// over the limit, or packed bytes that do not expand to it. Always
    /// reaches the threshold.
    BadCompression,
}

impl Offence {
    /// The score points this offence adds.
    pub fn points(self, config: &MeterConfig) -> u32 {
        match self {
            Offence::UnknownMessage => 10,
            Offence::Oversized => 25,
            Offence::Malformed => 25,
            Offence::OverBudget => 2,
            Offence::UnexpectedResponse => 5,
            Offence::BadFraming | Offence::WrongStream | Offence::BadCompression => {
                config.ban_threshold
            }
        }
    }

    /// A short snake_case name (the `reason` label of a ban in the node's
    /// metrics).
    pub fn label(self) -> &'static str {
        match self {
            Offence::UnknownMessage => "unknown_message",
            Offence::Oversized => "oversized",
            Offence::Malformed => "malformed",
            Offence::OverBudget => "over_budget",
            Offence::UnexpectedResponse => "unexpected_response",
            Offence::BadFraming => "bad_framing",
            Offence::WrongStream => "wrong_stream",
            Offence::BadCompression => "bad_compression",
        }
    }
}

/// Thresholds of metering and banning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeterConfig {
    /// Score at which a peer is disconnected and banned.
    pub ban_threshold: u32,
    /// Points forgotten per second.
    pub decay_per_second: f64,
    /// How long a ban lasts.
    pub ban_duration: Duration,
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self {
            ban_threshold: 100,
            decay_per_second: 1.0,
            ban_duration: Duration::from_secs(3600),
        }
    }
}

/// A token bucket of one [`RateBudget`] (sans-IO: time is an argument).
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `budget` at `now`.
    pub fn new(budget: RateBudget, now: Instant) -> Self {
        Self {
            tokens: f64::from(budget.burst),
            at: now,
        }
    }

    /// How long from `now` until a token is there (zero if one is).
    pub fn wait(&mut self, budget: RateBudget, now: Instant) -> Duration {
        self.refill(budget, now);
        if self.tokens >= 1.0 || budget.per_second <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / budget.per_second)
    }

    fn refill(&mut self, budget: RateBudget, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * budget.per_second).min(f64::from(budget.burst));
        self.at = now;
    }

    /// Takes one token at `now` if there is one.
    pub fn take(&mut self, budget: RateBudget, now: Instant) -> bool {
        self.refill(budget, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the [`Meter`] says about one inbound frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Accept,
    /// Drop it; the peer's score rose but stays under the threshold.
    Drop,
    /// The score reached the threshold: disconnect and ban.
    Ban,
}

/// One peer's rate buckets and misbehaviour score; see the module docs.
#[derive(Debug)]
pub struct Meter {
    config: MeterConfig,
    score: u32,
    scored_at: Instant,
    buckets: HashMap<u32, TokenBucket>,
}

impl Meter {
    /// A clean meter at `now`.
    pub fn new(config: MeterConfig, now: Instant) -> Self {
        Self {
            config,
            score: 0,
            scored_at: now,
            buckets: HashMap::new(),
        }
    }

    /// The current score (after decay up to the last input).
    pub fn score(&self) -> u32 {
        self.score
    }

    /// Forgets whole points for the time since the last decay; the
    /// remainder of a point carries over, so scores stay whole numbers.
    fn decay(&mut self, now: Instant) {
        let rate = self.config.decay_per_second;
        if rate <= 0.0 || !rate.is_finite() {
            self.scored_at = now;
            return;
        }
        let dt = now.saturating_duration_since(self.scored_at).as_secs_f64();
        let forgotten = (dt * rate).floor();
        if forgotten >= 1.0 {
            // Saturating float-to-int conversion.
            let points = forgotten.min(f64::from(u32::MAX)) as u32;
            self.score = self.score.saturating_sub(points);
            self.scored_at += Duration::from_secs_f64(forgotten / rate);
        }
    }

    /// Adds an offence at `now`.
    pub fn offend(&mut self, offence: Offence, now: Instant) -> Verdict {
        self.decay(now);
        self.score = self.score.saturating_add(offence.points(&self.config));
        if self.score >= self.config.ban_threshold {
            Verdict::Ban
        } else {
            Verdict::Drop
        }
    }

    /// How long a request of type `msg_id` must wait from `now` for a token
    /// of `budget` (zero: take it with [`Meter::charge`] at once). Requests
    /// over budget are backpressured, not punished: an honest request loop
    /// just slows down.
    pub fn wait(&mut self, msg_id: u32, budget: RateBudget, now: Instant) -> Duration {
        if budget.is_unlimited() {
            return Duration::ZERO;
        }
        self.buckets
            .entry(msg_id)
            .or_insert_with(|| TokenBucket::new(budget, now))
            .wait(budget, now)
    }

    /// Charges one frame of type `msg_id` against `budget` at `now`.
    pub fn charge(&mut self, msg_id: u32, budget: RateBudget, now: Instant) -> Verdict {
        if budget.is_unlimited() {
            // Unlimited: nothing to count (and no bucket to look up per frame).
            return Verdict::Accept;
        }
        let bucket = self
            .buckets
            .entry(msg_id)
            .or_insert_with(|| TokenBucket::new(budget, now));
        if bucket.take(budget, now) {
            Verdict::Accept
        } else {
            self.offend(Offence::OverBudget, now)
        }
    }
}

/// Entries of each kind a [`BanList::default`] holds at most; past it, the
/// ban that ends soonest is dropped.
pub const DEFAULT_MAX_BANS: usize = 4096;

/// Banned peers, hosts and addresses, each until an instant; see the
/// module docs. Only what the node saw is banned: a peer's identity, the
/// host (IPv4 address, IPv6 /64) its inbound connection came from, an
/// address we dialed. Never addresses a peer merely claimed, so a peer
/// cannot get others banned by naming them. Each map holds at most
/// [`BanList::capacity`] entries.
#[derive(Debug)]
pub struct BanList {
    capacity: usize,
    peers: HashMap<PeerId, Instant>,
    hosts: HashMap<IpPrefix, Instant>,
    addrs: HashMap<PeerAddr, Instant>,
}

impl Default for BanList {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BANS)
    }
}

/// Inserts `key` until `until`, dropping the entry that ends soonest when
/// `map` holds `cap` entries.
fn insert_capped<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Instant>,
    cap: usize,
    key: K,
    until: Instant,
) {
    if !map.contains_key(&key) && map.len() >= cap.max(1) {
        let soonest = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
        if let Some(soonest) = soonest {
            map.remove(&soonest);
        }
    }
    let entry = map.entry(key).or_insert(until);
    *entry = (*entry).max(until);
}

impl BanList {
    /// An empty list holding at most `capacity` (at least one) entries of
    /// each kind.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            peers: HashMap::new(),
            hosts: HashMap::new(),
            addrs: HashMap::new(),
        }
    }

    /// Entries of each kind it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity.max(1)
    }

    /// Bans `peer` until `until`.
    pub fn ban_peer(&mut self, peer: PeerId, until: Instant) {
        insert_capped(&mut self.peers, self.capacity, peer, until);
    }

    /// Bans every connection from `host` until `until`.
    pub fn ban_host(&mut self, host: IpPrefix, until: Instant) {
        insert_capped(&mut self.hosts, self.capacity, host, until);
    }

    /// Bans dialing `addr` until `until`.
    pub fn ban_addr(&mut self, addr: PeerAddr, until: Instant) {
        insert_capped(&mut self.addrs, self.capacity, addr, until);
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_peer_banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers.get(peer).is_some_and(|until| *until > now)
    }

    /// Whether connections from `ip` are banned at `now`.
    pub fn is_host_banned(&self, ip: std::net::IpAddr, now: Instant) -> bool {
        self.hosts
            .get(&IpPrefix::host(ip))
            .is_some_and(|until| *until > now)
    }

    /// Whether dialing `addr` is banned at `now`.
    pub fn is_addr_banned(&self, addr: &PeerAddr, now: Instant) -> bool {
        self.addrs.get(addr).is_some_and(|until| *until > now)
    }

    /// Forgets bans that ended before `now`.
    pub fn expire(&mut self, now: Instant) {
        self.peers.retain(|_, until| *until > now);
        self.hosts.retain(|_, until| *until > now);
        self.addrs.retain(|_, until| *until > now);
    }

    /// Bans held now (peers, hosts, addresses).
    pub fn len(&self) -> usize {
        self.peers.len() + self.hosts.len() + self.addrs.len()
    }

    /// Whether nothing is banned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut m = Meter::new(MeterConfig::default(), t0);
        let budget = RateBudget::new(10.0, 5);
        for _ in 0..5 {
            assert_eq!(m.charge(1, budget, t0), Verdict::Accept);
        }
        assert_eq!(m.charge(1, budget, t0), Verdict::Drop, "burst spent");
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(m.charge(1, budget, t1), Verdict::Accept);
        assert_eq!(m.charge(1, budget, t1), Verdict::Drop);
        // Other types have their own bucket.
        assert_eq!(m.charge(2, budget, t1), Verdict::Accept);
    }

    #[test]
    fn an_unlimited_budget_takes_everything_and_keeps_no_bucket() {
        let t0 = Instant::now();
        let mut m = Meter::new(MeterConfig::default(), t0);
        for _ in 0..100_000 {
            assert_eq!(m.charge(1, RateBudget::UNLIMITED, t0), Verdict::Accept);
        }
        assert!(m.buckets.is_empty());
    }

    #[test]
    fn flooding_over_budget_ends_in_a_ban() {
        let t0 = Instant::now();
        let mut m = Meter::new(MeterConfig::default(), t0);
        let budget = RateBudget::new(1.0, 1);
        let verdicts: Vec<_> = (0..60).map(|_| m.charge(7, budget, t0)).collect();
        assert_eq!(verdicts.first(), Some(&Verdict::Accept));
        assert_eq!(verdicts.last(), Some(&Verdict::Ban));
    }

    #[test]
    fn unknown_messages_ban_after_threshold_and_score_decays() {
        let t0 = Instant::now();
        let cfg = MeterConfig::default();
        let mut m = Meter::new(cfg, t0);
        for _ in 0..9 {
            assert_eq!(m.offend(Offence::UnknownMessage, t0), Verdict::Drop);
        }
        assert_eq!(m.score(), 90);
        // 50 s of good behaviour forget 50 points.
        let t1 = t0 + Duration::from_secs(50);
        assert_eq!(m.offend(Offence::UnknownMessage, t1), Verdict::Drop);
        assert_eq!(m.score(), 50);
        for _ in 0..4 {
            m.offend(Offence::UnknownMessage, t1);
        }
        assert_eq!(m.offend(Offence::UnknownMessage, t1), Verdict::Ban);
    }

    #[test]
    fn bad_framing_bans_at_once() {
        let t0 = Instant::now();
        let mut m = Meter::new(MeterConfig::default(), t0);
        assert_eq!(m.offend(Offence::BadFraming, t0), Verdict::Ban);
    }

    #[test]
    fn m7_the_ban_list_is_capped_and_keeps_the_longest_bans() {
        let t0 = Instant::now();
        let mut bans = BanList::default();
        for i in 0..(DEFAULT_MAX_BANS as u32 + 1_000) {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(i));
            bans.ban_host(
                IpPrefix::host(ip),
                t0 + Duration::from_secs(u64::from(i) + 1),
            );
        }
        assert_eq!(bans.len(), DEFAULT_MAX_BANS);
        // The ones ending soonest went; the last one stays.
        assert!(!bans.is_host_banned(std::net::Ipv4Addr::from(0).into(), t0));
        assert!(bans.is_host_banned(
            std::net::Ipv4Addr::from(DEFAULT_MAX_BANS as u32 + 999).into(),
            t0
        ));
        // An IPv6 host is its /64.
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        bans.ban_host(IpPrefix::host(v6), t0 + Duration::from_secs(1_000_000));
        assert!(bans.is_host_banned("2001:db8::ffff".parse().unwrap(), t0));
        assert!(!bans.is_host_banned("2001:db8:0:1::1".parse().unwrap(), t0));
    }

    #[test]
    fn bans_expire() {
        let t0 = Instant::now();
        let peer = Keypair::generate().unwrap().peer_id();
        let addr: PeerAddr = "tcp/10.0.0.1:4000".parse().unwrap();
        let mut bans = BanList::default();
        bans.ban_peer(peer, t0 + Duration::from_secs(10));
        bans.ban_addr(addr.clone(), t0 + Duration::from_secs(10));
        assert!(bans.is_peer_banned(&peer, t0));
        assert!(bans.is_addr_banned(&addr, t0 + Duration::from_secs(9)));
        let later = t0 + Duration::from_secs(10);
        assert!(!bans.is_peer_banned(&peer, later));
        bans.expire(later);
        assert!(!bans.is_addr_banned(&addr, t0));
    }

    #[test]
    fn a_small_ban_list_keeps_its_capacity_per_kind() {
        let t0 = Instant::now();
        let mut bans = BanList::new(3);
        for i in 0..10u64 {
            let peer = Keypair::generate().unwrap().peer_id();
            bans.ban_peer(peer, t0 + Duration::from_secs(i + 1));
        }
        bans.ban_host(
            IpPrefix::host([10, 0, 0, 1].into()),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(bans.capacity(), 3);
        assert_eq!(bans.len(), 3 + 1);
    }
}
