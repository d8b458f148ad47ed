//! [`ObservedAddrs`]: which external address the node has, by vote (sans-IO).
//!
//! Every peer tells us in its version message the address it sees our
//! connection come from. One peer may lie or sit on our side of a NAT, so an
//! address counts as confirmed only when at least `quorum` independent peers
//! report it: distinct PeerIds from distinct networks (an IPv4 /24 or an
//! IPv6 /32 counts once, so one operator with many nodes in one subnet, or
//! a few IPv6 /48s, has one vote; an IPv4-mapped address is its IPv4
//! address). A peer's newer report replaces its older one; votes older than
//! the time to live lapse.
//!
//! Only a public address is a candidate, and only a voter connected from a
//! public address votes: a peer that reaches us over the internet sees a
//! public address, and a loopback, private or unroutable one would be
//! advertised to the world as ours.
//!
//! Voters are free to make (a fresh identity per connection), so the state is
//! bounded: one vote per network per candidate (the newest; so a candidate's
//! vote count is its number of independent networks), at most
//! [`MAX_VOTES_PER_ADDR`] networks per candidate and [`MAX_CANDIDATES`]
//! candidates. A new candidate only displaces one that has a single vote
//! itself, so a flood of made-up addresses cannot push out one that several
//! networks agree on. Each report costs at most `MAX_CANDIDATES ×
//! MAX_VOTES_PER_ADDR` steps, however many peers came before.
//!
//! The candidate is the observed IP with our listen port: the port a peer
//! sees belongs to the outgoing connection, while a NAT that keeps ports
//! (nftables masquerade does when it can) maps our listen port to the same
//! port outside, which is what a dial from outside needs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use knotwork_core::{PeerAddr, PeerId};
use knotwork_node::AddrScope;

use crate::netgroup::NetGroup;

/// Most candidate addresses voted for at once.
pub const MAX_CANDIDATES: usize = 16;

/// Most networks whose votes are kept for one candidate (a quorum above this
/// cannot be reached).
pub const MAX_VOTES_PER_ADDR: usize = 32;

/// The IPv4 prefix length of a voter's network.
const VOTER_GROUP_V4: u8 = 24;

/// The IPv6 prefix length of a voter's network: a /32, since /48s are
/// cheap to come by.
const VOTER_GROUP_V6: u8 = 32;

#[derive(Clone, Debug)]
struct Vote {
    peer: PeerId,
    group: NetGroup,
    at: Instant,
}

/// Votes for external addresses; see the module docs.
#[derive(Clone, Debug)]
pub struct ObservedAddrs {
    quorum: usize,
    ttl: Duration,
    votes: HashMap<SocketAddr, Vec<Vote>>,
}

impl ObservedAddrs {
    /// Confirms an address once `quorum` (at least 1) independent peers
    /// report it; a vote lapses after `ttl`.
    pub fn new(quorum: usize, ttl: Duration) -> Self {
        Self {
            quorum: quorum.max(1),
            ttl,
            votes: HashMap::new(),
        }
    }

    /// Peer `voter`, connected from `voter_addr`, says it sees us at
    /// `observed`; `listen_port` is our listen port. Returns the candidate
    /// if this vote confirmed it (it was not confirmed before).
    pub fn observe(
        &mut self,
        voter: PeerId,
        voter_addr: &PeerAddr,
        observed: &PeerAddr,
        listen_port: u16,
        now: Instant,
    ) -> Option<PeerAddr> {
        let PeerAddr::Tcp(seen) = observed else {
            return None;
        };
        let ip = seen.ip().to_canonical();
        if AddrScope::of_ip(ip) != AddrScope::Public
            || AddrScope::of(voter_addr) != AddrScope::Public
        {
            return None;
        }
        self.expire(now);
        let candidate = SocketAddr::new(ip, listen_port);
        for votes in self.votes.values_mut() {
            votes.retain(|v| v.peer != voter);
        }
        self.votes.retain(|_, v| !v.is_empty());
        if !self.votes.contains_key(&candidate) && !self.make_room() {
            return None;
        }
        let before = self.confirmed_at(&candidate);
        let group = NetGroup::of(voter_addr, voter, VOTER_GROUP_V4, VOTER_GROUP_V6);
        let votes = self.votes.entry(candidate).or_default();
        votes.retain(|v| v.group != group);
        if votes.len() >= MAX_VOTES_PER_ADDR {
            // Votes are pushed in time order: the first is the oldest.
            votes.remove(0);
        }
        votes.push(Vote {
            peer: voter,
            group,
            at: now,
        });
        (!before && self.confirmed_at(&candidate)).then_some(PeerAddr::Tcp(candidate))
    }

    /// Makes room for one more candidate: below the limit there is; at it,
    /// the oldest candidate with a single vote goes. `false`: every
    /// candidate has more support than a newcomer, the new vote is dropped.
    fn make_room(&mut self) -> bool {
        if self.votes.len() < MAX_CANDIDATES {
            return true;
        }
        let weakest = self
            .votes
            .iter()
            .filter(|(_, v)| v.len() <= 1)
            .min_by_key(|(_, v)| v.iter().map(|vote| vote.at).max())
            .map(|(addr, _)| *addr);
        weakest.is_some_and(|addr| self.votes.remove(&addr).is_some())
    }

    fn confirmed_at(&self, candidate: &SocketAddr) -> bool {
        self.votes
            .get(candidate)
            .is_some_and(|v| v.len() >= self.quorum)
    }

    /// Drops votes older than the time to live.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        for votes in self.votes.values_mut() {
            votes.retain(|v| now.saturating_duration_since(v.at) < ttl);
        }
        self.votes.retain(|_, v| !v.is_empty());
    }

    /// The confirmed addresses, most votes first.
    pub fn confirmed(&self) -> Vec<PeerAddr> {
        let mut out: Vec<(usize, SocketAddr)> = self
            .votes
            .iter()
            .map(|(a, v)| (v.len(), *a))
            .filter(|(n, _)| *n >= self.quorum)
            .collect();
        out.sort_by(|a, b| b.cmp(a));
        out.into_iter().map(|(_, a)| PeerAddr::Tcp(a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    fn peer() -> PeerId {
        Keypair::generate().unwrap().peer_id()
    }

    fn a(s: &str) -> PeerAddr {
        s.parse().unwrap()
    }

    #[test]
    fn test_three_independent_peers_confirm() {
        let mut o = ObservedAddrs::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let seen = a("tcp/203.0.113.5:41000");
        assert_eq!(
            o.observe(peer(), &a("tcp/198.51.100.1:1"), &seen, 4000, now),
            None
        );
        assert_eq!(
            o.observe(peer(), &a("tcp/192.0.2.1:1"), &seen, 4000, now),
            None
        );
        assert!(o.confirmed().is_empty());
        let third = o.observe(peer(), &a("tcp/100.1.2.3:1"), &seen, 4000, now);
        assert_eq!(third, Some(a("tcp/203.0.113.5:4000")));
        assert_eq!(o.confirmed(), vec![a("tcp/203.0.113.5:4000")]);
        // A fourth vote does not confirm it again.
        assert_eq!(
            o.observe(peer(), &a("tcp/100.9.2.3:1"), &seen, 4000, now),
            None
        );
    }

    #[test]
    fn test_one_subnet_or_one_peer_is_one_vote() {
        let mut o = ObservedAddrs::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let seen = a("tcp/203.0.113.5:41000");
        for host in 1..=5 {
            o.observe(
                peer(),
                &a(&format!("tcp/198.51.100.{host}:1")),
                &seen,
                4000,
                now,
            );
        }
        let liar = peer();
        for net in 1..=5 {
            o.observe(liar, &a(&format!("tcp/100.{net}.0.1:1")), &seen, 4000, now);
        }
        assert!(o.confirmed().is_empty(), "two independent voters only");
    }

    #[test]
    fn test_votes_expire() {
        let mut o = ObservedAddrs::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let seen = a("tcp/203.0.113.5:41000");
        o.observe(peer(), &a("tcp/198.51.100.1:1"), &seen, 4000, now);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            o.observe(peer(), &a("tcp/192.0.2.1:1"), &seen, 4000, later),
            None
        );
        o.observe(peer(), &a("tcp/100.1.2.3:1"), &seen, 4000, later);
        assert_eq!(o.confirmed().len(), 1);
        o.expire(later + Duration::from_secs(61));
        assert!(o.confirmed().is_empty());
    }

    #[test]
    fn test_a_flood_of_voters_and_made_up_addresses_stays_bounded() {
        let mut o = ObservedAddrs::new(3, Duration::from_secs(600));
        let now = Instant::now();
        let real = a("tcp/203.0.113.5:41000");
        for net in 1..=3 {
            o.observe(
                peer(),
                &a(&format!("tcp/100.{net}.0.1:1")),
                &real,
                4000,
                now,
            );
        }
        assert_eq!(o.confirmed(), vec![a("tcp/203.0.113.5:4000")]);
        // 5,000 fresh identities from 5,000 networks, each naming its own
        // address for us, then all of them voting for one more.
        for i in 0..5_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            let voter = a(&format!("tcp/{}.{c}.{d}.1:1", 20 + b));
            let made_up = a(&format!("tcp/198.{b}.{c}.{d}:1"));
            o.observe(peer(), &voter, &made_up, 4000, now);
        }
        for i in 0..5_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            let voter = a(&format!("tcp/{}.{c}.{d}.1:1", 40 + b));
            o.observe(peer(), &voter, &a("tcp/192.0.2.9:1"), 4000, now);
        }
        assert!(o.votes.len() <= MAX_CANDIDATES);
        assert!(o.votes.values().all(|v| v.len() <= MAX_VOTES_PER_ADDR));
        // The address three networks agreed on is still confirmed, and so
        // is the one thousands voted for.
        assert!(o.confirmed().contains(&a("tcp/203.0.113.5:4000")));
        assert_eq!(o.confirmed().first(), Some(&a("tcp/192.0.2.9:4000")));
    }

    /// L2: IPv6 voters are grouped by /32 (three /48s, or a /40, are one
    /// network), IPv4-mapped voters by their IPv4 /24, and a mapped
    /// candidate is its IPv4 address.
    #[test]
    fn l2_three_voters_from_one_ipv6_slash_40_do_not_confirm() {
        let mut o = ObservedAddrs::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let seen = a("tcp/203.0.113.5:41000");
        for net in ["2001:db8:100", "2001:db8:101", "2001:db8:1ff"] {
            let voter = a(&format!("tcp/[{net}::1]:1"));
            assert_eq!(o.observe(peer(), &voter, &seen, 4000, now), None);
        }
        assert!(o.confirmed().is_empty(), "one /32");
        let mut o = ObservedAddrs::new(3, Duration::from_secs(60));
        let mapped = a("tcp/[::ffff:203.0.113.5]:41000");
        for (i, voter) in [
            "tcp/[::ffff:198.51.100.1]:1",
            "tcp/198.51.100.2:1",
            "tcp/[::ffff:100.1.2.3]:1",
            "tcp/[2001:db9::1]:1",
        ]
        .into_iter()
        .enumerate()
        {
            let got = o.observe(peer(), &a(voter), &mapped, 4000, now);
            assert_eq!(got.is_some(), i == 3, "{voter}");
        }
        assert_eq!(o.confirmed(), vec![a("tcp/203.0.113.5:4000")]);
    }

    /// L2: a candidate that is not public (loopback, private, link-local,
    /// unspecified), or a voter that is not on a public address, is refused
    /// however many vote.
    #[test]
    fn l2_non_public_candidates_and_voters_are_refused() {
        let mut o = ObservedAddrs::new(1, Duration::from_secs(60));
        let now = Instant::now();
        let public_voter = a("tcp/198.51.100.1:1");
        for seen in [
            "tcp/127.0.0.1:1",
            "tcp/10.0.0.1:1",
            "tcp/169.254.169.254:80",
            "tcp/0.0.0.0:1",
            "tcp/[::1]:1",
            "tcp/[::ffff:192.168.1.1]:1",
            "tcp/[fe80::1]:1",
        ] {
            assert_eq!(
                o.observe(peer(), &public_voter, &a(seen), 4000, now),
                None,
                "{seen}"
            );
        }
        for voter in ["tcp/127.0.0.1:1", "tcp/192.168.1.9:1", "mem/1"] {
            let seen = a("tcp/203.0.113.5:1");
            assert_eq!(
                o.observe(peer(), &a(voter), &seen, 4000, now),
                None,
                "{voter}"
            );
        }
        assert!(o.confirmed().is_empty());
        assert!(o.votes.is_empty(), "nothing stored");
    }

    #[test]
    fn test_a_changed_report_moves_the_vote() {
        let mut o = ObservedAddrs::new(1, Duration::from_secs(60));
        let now = Instant::now();
        let p = peer();
        o.observe(
            p,
            &a("tcp/198.51.100.1:1"),
            &a("tcp/203.0.113.5:1"),
            4000,
            now,
        );
        o.observe(
            p,
            &a("tcp/198.51.100.1:1"),
            &a("tcp/203.0.113.6:1"),
            4000,
            now,
        );
        assert_eq!(o.confirmed(), vec![a("tcp/203.0.113.6:4000")]);
        assert_eq!(o.observe(p, &a("mem/1"), &a("mem/2"), 4000, now), None);
    }
}
