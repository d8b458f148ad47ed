//! Reachability (sans-IO): is this node dialable from outside, and at which
//! address? Two state machines, time always an argument.
//!
//! [`ReachabilityCheck`] is the asking side. A check runs in rounds. A round
//! asks up to [`ReachabilityConfig::servers`] connected peers to dial us
//! back on our candidate addresses, one peer per network (an IPv4 /24, an
//! IPv6 /48: [`SERVER_GROUP_V4`], [`SERVER_GROUP_V6`]); each peer answers
//! with the address it reached us at, or why it could not. Servers are
//! peers the node chose (channels it dialed, see
//! [`crate::dialback`]), so neither inbound sybils nor many peers of one
//! network decide the verdict. An address that
//! [`ReachabilityConfig::quorum`] networks reached makes us
//! [`Reachability::Public`]; `quorum` failed dials, more than the successes,
//! make us [`Reachability::Private`]. A refusal (the peer's limits, a
//! relayed channel) says nothing about us and does not count; a peer that
//! does not answer within [`ReachabilityConfig::answer_timeout`] neither.
//! A round that ends without a verdict keeps the previous one and starts
//! again after [`ReachabilityConfig::retry`] (new peers are asked as they
//! connect); a round with a verdict is repeated after
//! [`ReachabilityConfig::recheck`]. A change of the candidate set (a
//! confirmed observed address gained or lost, a UPnP mapping, a listen
//! address) starts a new round at once.
//!
//! Polling contract (as quinn's): feed `add_server`/`remove_server`,
//! `set_candidates`, `handle_answer`; call [`ReachabilityCheck::poll_ask`]
//! until `None` and send each [`Question`]'s peer a request, answering
//! with the question (an answer to a question of an earlier round, or to
//! an earlier question to the same peer, is ignored); take verdict changes from
//! [`ReachabilityCheck::poll_event`]; call
//! [`ReachabilityCheck::handle_timeout`] at
//! [`ReachabilityCheck::poll_timeout`].
//!
//! [`DialBackLimiter`] is the answering side's admission. A peer may only be
//! dialed at the IP its connection comes from (never a third party: no
//! amplification), on a direct connection, within a per-peer rate, a rate
//! per network (an IPv4 /24, an IPv6 /48, so fresh identities from one
//! network cannot spend the global budget), a global rate and a bound on
//! concurrent dial-backs. Every refusal is a named [`DialBackError`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use knotwork_core::{PeerAddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::netgroup::NetGroup;

/// The IPv4 prefix length of a network of reachability servers and
/// dial-back askers.
pub const SERVER_GROUP_V4: u8 = 24;

/// The IPv6 prefix length of a network of reachability servers and
/// dial-back askers.
pub const SERVER_GROUP_V6: u8 = 48;

fn group_of(peer: PeerId, addr: &PeerAddr) -> NetGroup {
    NetGroup::of(addr, peer, SERVER_GROUP_V4, SERVER_GROUP_V6)
}

/// Whether the node can be dialed from outside.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reachability {
    /// Not known yet (too few answers).
    #[default]
    Unknown,
    /// Peers dialed us from outside at this address.
    Public(PeerAddr),
    /// Peers could not dial us: behind a NAT or firewall.
    Private,
}

impl Reachability {
    /// `public`, `private` or `unknown` (the metric label).
    pub fn state(&self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public(_) => "public",
            Reachability::Private => "private",
        }
    }
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reachability::Public(addr) => write!(f, "public {addr}"),
            other => f.write_str(other.state()),
        }
    }
}

/// Why a peer did not dial us back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum DialBackError {
    // --- Refused: says nothing about the asker's reachability --------------
    /// The peer does not serve dial-backs.
    #[error("dial-back refused: disabled")]
    Disabled,
    /// The request came over a relayed (or non-IP) channel: no IP to dial.
    #[error("dial-back refused: channel not direct")]
    NotDirect,
    /// The request named no usable TCP address.
    #[error("dial-back refused: no candidate address")]
    NoCandidate,
    /// Every candidate is at another IP than the asker's connection.
    #[error("dial-back refused: third-party address")]
    ThirdParty,
    /// The asker asked too often.
    #[error("dial-back refused: rate limit for this peer")]
    PeerRateLimited,
    /// The peer dials back for too many askers at the moment.
    #[error("dial-back refused: global rate limit")]
    GlobalRateLimited,
    /// As many dial-backs are running as the peer allows.
    #[error("dial-back refused: busy")]
    Busy,

    // --- Failed: the asker is not reachable there ---------------------------
    /// No TCP connection (refused, or timed out).
    #[error("dial-back failed: unreachable")]
    Unreachable,
    /// Connected, but the handshake did not complete.
    #[error("dial-back failed: handshake")]
    HandshakeFailed,
    /// The handshake reached another peer than the asker.
    #[error("dial-back failed: another peer answered")]
    WrongPeer,

    // --- Refused (added later, so numbered after the failures) -------------
    /// Askers from the asker's network (an IPv4 /24, an IPv6 /48) asked too
    /// often.
    #[error("dial-back refused: rate limit for this network")]
    NetRateLimited,
}

impl DialBackError {
    /// Whether the peer refused to try (the answer says nothing about us).
    pub fn is_refusal(self) -> bool {
        !matches!(
            self,
            DialBackError::Unreachable | DialBackError::HandshakeFailed | DialBackError::WrongPeer
        )
    }
}

/// Settings of the reachability check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReachabilityConfig {
    /// Agreeing answers needed for a verdict (at least 1).
    pub quorum: usize,
    /// Peers asked per round at most (one per network).
    pub servers: usize,
    /// How long a peer has to answer.
    pub answer_timeout: Duration,
    /// Time between two rounds after a verdict.
    pub recheck: Duration,
    /// Time before a round without a verdict starts again.
    pub retry: Duration,
}

impl Default for ReachabilityConfig {
    fn default() -> Self {
        Self {
            quorum: 2,
            servers: 4,
            answer_timeout: Duration::from_secs(20),
            recheck: Duration::from_secs(15 * 60),
            retry: Duration::from_secs(30),
        }
    }
}

/// One request of the check: ask `peer`; its answer goes back to
/// [`ReachabilityCheck::handle_answer`] with this question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question {
    /// The peer to ask.
    pub peer: PeerId,
    /// Tells this question from earlier ones to the same peer.
    pub id: u64,
}

#[derive(Clone, Debug)]
struct Round {
    started: Instant,
    asked: Vec<PeerId>,
    /// The networks asked: one question per network and round.
    groups: Vec<NetGroup>,
    /// Peers asked and not answered yet: the question's id and deadline.
    pending: HashMap<PeerId, (u64, Instant)>,
    reached: Vec<(PeerId, PeerAddr)>,
    failed: Vec<PeerId>,
}

/// The asking side; see the module docs.
#[derive(Clone, Debug)]
pub struct ReachabilityCheck {
    config: ReachabilityConfig,
    state: Reachability,
    candidates: Vec<PeerAddr>,
    servers: Vec<(PeerId, NetGroup)>,
    round: Option<Round>,
    next_round: Option<Instant>,
    next_question: u64,
    events: VecDeque<Reachability>,
}

impl ReachabilityCheck {
    /// A check whose first round starts at `now`.
    pub fn new(config: ReachabilityConfig, now: Instant) -> Self {
        Self {
            config: ReachabilityConfig {
                quorum: config.quorum.max(1),
                servers: config.servers.max(1),
                ..config
            },
            state: Reachability::Unknown,
            candidates: Vec::new(),
            servers: Vec::new(),
            round: None,
            next_round: Some(now),
            next_question: 0,
            events: VecDeque::new(),
        }
    }

    /// The verdict now.
    pub fn reachability(&self) -> &Reachability {
        &self.state
    }

    /// Our candidate addresses changed (or not): a new set starts a new
    /// round at `now`.
    pub fn set_candidates(&mut self, mut candidates: Vec<PeerAddr>, now: Instant) {
        candidates.sort_by_key(ToString::to_string);
        candidates.dedup();
        if candidates != self.candidates {
            self.candidates = candidates;
            self.round = None;
            self.next_round = Some(now);
        }
    }

    /// `peer`, connected at `addr`, can be asked (a channel the node
    /// dialed, direct, that runs the protocol).
    pub fn add_server(&mut self, peer: PeerId, addr: &PeerAddr) {
        let group = group_of(peer, addr);
        match self.servers.iter_mut().find(|(p, _)| *p == peer) {
            Some(server) => server.1 = group,
            None => self.servers.push((peer, group)),
        }
    }

    /// `peer` is gone; its pending question is dropped.
    pub fn remove_server(&mut self, peer: &PeerId, now: Instant) {
        self.servers.retain(|(p, _)| p != peer);
        if let Some(round) = &mut self.round {
            round.pending.remove(peer);
        }
        self.conclude(now);
    }

    /// The next peer to ask, if the round wants one more; the caller sends
    /// it the request now.
    pub fn poll_ask(&mut self, now: Instant) -> Option<Question> {
        self.start_due(now);
        let round = self.round.as_mut()?;
        if round.asked.len() >= self.config.servers {
            return None;
        }
        let (peer, group) = *self
            .servers
            .iter()
            .find(|(p, g)| !round.asked.contains(p) && !round.groups.contains(g))?;
        round.asked.push(peer);
        round.groups.push(group);
        self.next_question += 1;
        let id = self.next_question;
        round
            .pending
            .insert(peer, (id, now + self.config.answer_timeout));
        Some(Question { peer, id })
    }

    /// The answer to `question`: `Ok(addr)` the peer reached us at `addr`,
    /// or why not. Only the pending question of this round counts.
    pub fn handle_answer(
        &mut self,
        question: Question,
        answer: Result<PeerAddr, DialBackError>,
        now: Instant,
    ) {
        let Some(round) = &mut self.round else {
            return;
        };
        let peer = question.peer;
        if round.pending.get(&peer).map(|(id, _)| *id) != Some(question.id) {
            return;
        }
        round.pending.remove(&peer);
        match answer {
            Ok(addr) => round.reached.push((peer, addr)),
            Err(e) if e.is_refusal() => {}
            Err(_) => round.failed.push(peer),
        }
        self.conclude(now);
    }

    /// Expires unanswered questions, restarts a round without a verdict
    /// after the retry time and starts a due round.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(round) = &mut self.round {
            round.pending.retain(|_, (_, deadline)| *deadline > now);
            if now >= round.started + self.config.retry && round.pending.is_empty() {
                self.round = None;
                self.next_round = Some(now);
            }
        }
        self.start_due(now);
        self.conclude(now);
    }

    /// When to call [`ReachabilityCheck::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.round {
            // A round restarts only once nobody is pending.
            Some(round) if round.pending.is_empty() => Some(round.started + self.config.retry),
            Some(round) => round.pending.values().map(|(_, at)| *at).min(),
            None => self.next_round,
        }
    }

    /// The next change of the verdict.
    pub fn poll_event(&mut self) -> Option<Reachability> {
        self.events.pop_front()
    }

    fn start_due(&mut self, now: Instant) {
        if self.round.is_none() && self.next_round.is_some_and(|at| at <= now) {
            self.next_round = None;
            self.round = Some(Round {
                started: now,
                asked: Vec::new(),
                groups: Vec::new(),
                pending: HashMap::new(),
                reached: Vec::new(),
                failed: Vec::new(),
            });
        }
    }

    /// Ends the round if its answers make a verdict.
    fn conclude(&mut self, now: Instant) {
        let Some(round) = &self.round else {
            return;
        };
        let quorum = self.config.quorum;
        let mut counts: Vec<(&PeerAddr, usize)> = Vec::new();
        for (_, addr) in &round.reached {
            match counts.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, n)) => *n += 1,
                None => counts.push((addr, 1)),
            }
        }
        let public = counts
            .iter()
            .filter(|(_, n)| *n >= quorum)
            .max_by_key(|(_, n)| *n)
            .map(|(a, _)| (*a).clone());
        let verdict = match public {
            Some(addr) => Reachability::Public(addr),
            None if round.failed.len() >= quorum && round.failed.len() > round.reached.len() => {
                Reachability::Private
            }
            None => return,
        };
        self.round = None;
        self.next_round = Some(now + self.config.recheck);
        self.set_state(verdict);
    }

    /// The one place the verdict changes.
    fn set_state(&mut self, state: Reachability) {
        if state != self.state {
            self.state = state.clone();
            self.events.push_back(state);
        }
    }
}

/// Limits of the answering side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DialBackLimits {
    /// Dial-backs for one peer per window.
    pub per_peer: usize,
    /// Dial-backs for peers of one network (an IPv4 /24, an IPv6 /48) per
    /// window.
    pub per_net: usize,
    /// Dial-backs for all peers per window.
    pub global: usize,
    /// The rate window.
    pub window: Duration,
    /// Dial-backs running at once.
    pub concurrent: usize,
}

impl Default for DialBackLimits {
    fn default() -> Self {
        Self {
            per_peer: 4,
            per_net: 8,
            global: 64,
            window: Duration::from_secs(60),
            concurrent: 4,
        }
    }
}

/// The answering side's admission; see the module docs.
#[derive(Clone, Debug)]
pub struct DialBackLimiter {
    limits: DialBackLimits,
    /// Admitted dial-backs within the window, oldest first (at most
    /// `limits.global` entries), with the asker and its network.
    recent: VecDeque<(Instant, PeerId, NetGroup)>,
    running: usize,
}

impl DialBackLimiter {
    /// A limiter with nothing admitted.
    pub fn new(limits: DialBackLimits) -> Self {
        Self {
            limits,
            recent: VecDeque::new(),
            running: 0,
        }
    }

    /// Peer `peer`, connected from `conn`, asks to be dialed at one of
    /// `candidates`. Returns the address to dial (the first candidate at
    /// the connection's IP) and counts it as running until
    /// [`DialBackLimiter::finish`], or why not.
    pub fn admit(
        &mut self,
        peer: PeerId,
        conn: &PeerAddr,
        candidates: &[PeerAddr],
        now: Instant,
    ) -> Result<SocketAddr, DialBackError> {
        let PeerAddr::Tcp(from) = conn else {
            return Err(DialBackError::NotDirect);
        };
        let usable: Vec<SocketAddr> = candidates
            .iter()
            .filter_map(|a| match a {
                PeerAddr::Tcp(sa) if !sa.ip().is_unspecified() && sa.port() != 0 => Some(*sa),
                _ => None,
            })
            .collect();
        if usable.is_empty() {
            return Err(DialBackError::NoCandidate);
        }
        let target = usable
            .into_iter()
            .find(|sa| sa.ip() == from.ip())
            .ok_or(DialBackError::ThirdParty)?;
        let window = self.limits.window;
        while self
            .recent
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) >= window)
        {
            self.recent.pop_front();
        }
        if self.recent.iter().filter(|(_, p, _)| *p == peer).count() >= self.limits.per_peer {
            return Err(DialBackError::PeerRateLimited);
        }
        let group = group_of(peer, conn);
        if self.recent.iter().filter(|(.., g)| *g == group).count() >= self.limits.per_net {
            return Err(DialBackError::NetRateLimited);
        }
        if self.recent.len() >= self.limits.global {
            return Err(DialBackError::GlobalRateLimited);
        }
        if self.running >= self.limits.concurrent {
            return Err(DialBackError::Busy);
        }
        self.recent.push_back((now, peer, group));
        self.running += 1;
        Ok(target)
    }

    /// An admitted dial-back ended.
    pub fn finish(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// Dial-backs running now.
    pub fn running(&self) -> usize {
        self.running
    }
}

#[cfg(test)]
#[path = "reachability_tests.rs"]
mod tests;
