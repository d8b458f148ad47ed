//! The sans-IO gossip core: messages, limits, settings and [`GossipState`]
//! (time and the peer list are arguments). See the crate docs for the
//! algorithm.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use knotwork_core::{Keypair, PeerId};
use knotwork_node::meter::{Meter, MeterConfig, Offence, RateBudget, TokenBucket, Verdict};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 64;
/// Largest message body, in bytes.
pub const MAX_DATA_LEN: usize = 16 * 1024;
/// Length of an Ed25519 signature.
const SIG_LEN: usize = 64;

/// The channel budget of [`GossipMessage`] frames from one direct peer
/// (relayed traffic of many origins included).
pub const BUDGET: RateBudget = RateBudget::new(500.0, 1000);

/// One published message, as relayed between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipMessage {
    /// The publisher's public key (its [`PeerId`] bytes).
    pub origin: [u8; 32],
    /// The publisher's sequence number; with `origin`, the message id.
    pub seq: u64,
    /// The topic.
    pub topic: String,
    /// Hops left.
    pub ttl: u8,
    /// The body.
    pub data: Vec<u8>,
    /// The origin's signature of [`signed_bytes`].
    pub sig: Vec<u8>,
}

impl Message for GossipMessage {
    const NAME: &'static str = "knot/gossip/1";
    // origin 32 + seq varint 10 + topic (1 length byte + 64) + ttl 1
    // + data (3 length bytes + 16384) + sig (1 length byte + 64).
    const MAX_BYTES: usize = 32 + 10 + 1 + MAX_TOPIC_LEN + 1 + 3 + MAX_DATA_LEN + 1 + SIG_LEN;
}

/// The id of a gossip message: its origin and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The publisher.
    pub origin: PeerId,
    /// Its sequence number.
    pub seq: u64,
}

/// The bytes an origin signs: a domain tag, `seq`, the topic and the data
/// (not the TTL, which relays decrement).
pub fn signed_bytes(seq: u64, topic: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + topic.len() + data.len());
    out.extend_from_slice(GossipMessage::NAME.as_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(topic.len() as u64).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Why a gossip message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    // --- The message is malformed (the direct sender is charged) ----------
    /// The topic is longer than [`MAX_TOPIC_LEN`].
    #[error("topic too long")]
    TopicTooLong,
    /// The body is longer than [`MAX_DATA_LEN`].
    #[error("data too long")]
    DataTooLong,
    /// The signature does not verify against the origin key (an origin
    /// that is no Ed25519 key fails here too: the wire fixes its length, and
    /// only verifying tells a point that is no key).
    #[error("bad signature")]
    BadSignature,
    // --- The message is fine but unwanted ----------------------------------
    /// Already seen.
    #[error("duplicate message")]
    Duplicate,
    /// Older than the origin's replay window: a replay, or so late that
    /// it no longer matters.
    #[error("stale message")]
    Stale,
    /// The origin is over its rate budget; the message is dropped.
    #[error("origin throttled")]
    Throttled,
    /// The origin is banned (this message may have caused it).
    #[error("origin banned")]
    OriginBanned,
    // --- The direct sender misbehaves --------------------------------------
    /// The direct sender is over its budget of signature checks; the
    /// message is dropped unchecked.
    #[error("sender throttled")]
    SenderThrottled,
    /// The direct sender reached the misbehaviour threshold (bad
    /// signatures, malformed messages, signature checks over budget):
    /// close its channel.
    #[error("sender banned")]
    SenderBanned,
}

/// Settings of gossip.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct GossipConfig {
    /// Peers a message is sent or forwarded to, at most.
    pub fanout: usize,
    /// Hops a published message may travel; a received TTL is capped to it.
    pub ttl: u8,
    /// How long a message id is remembered.
    pub seen_ttl: Duration,
    /// Message ids remembered, at most.
    pub seen_capacity: usize,
    /// Messages per origin: sustained rate and burst.
    pub origin_budget: RateBudget,
    /// Misbehaviour threshold and ban length for origins that send over
    /// their budget themselves.
    pub origin_meter: MeterConfig,
    /// Origins tracked (rate, replay window, ban), at most; the oldest
    /// tracked is forgotten first.
    pub max_origins: usize,
    /// Signature checks spent on one direct peer: sustained rate and burst
    /// (duplicates cost none). An honest peer sends at most its
    /// [`GossipConfig::relay_budget`]; over this budget messages are
    /// dropped unchecked and the peer collects misbehaviour points.
    pub verify_budget: RateBudget,
    /// Misbehaviour threshold of direct peers (points per bad signature or
    /// malformed message: [`Offence::Malformed`]; per check over budget:
    /// [`Offence::OverBudget`]).
    pub sender_meter: MeterConfig,
    /// Messages queued for each local subscriber; a full subscriber misses
    /// messages rather than slowing the relay.
    pub subscriber_capacity: usize,
    /// Messages queued for each direct peer; when a slow peer's queue is
    /// full, messages for it are dropped (and counted), never waited for.
    pub peer_queue: usize,
    /// Messages sent (published or relayed) to one direct peer: sustained
    /// rate and burst. Below the receiver's [`BUDGET`], with room for
    /// frames that arrive bunched together.
    pub relay_budget: RateBudget,
}

impl Default for GossipConfig {
    fn default() -> Self {
        let relay_budget = RateBudget::new(BUDGET.per_second / 2.0, BUDGET.burst / 2);
        Self {
            fanout: 6,
            ttl: 6,
            seen_ttl: Duration::from_secs(120),
            seen_capacity: 65_536,
            origin_budget: RateBudget::new(50.0, 100),
            origin_meter: MeterConfig {
                ban_threshold: 100,
                decay_per_second: 1.0,
                ban_duration: Duration::from_secs(600),
            },
            max_origins: 4096,
            verify_budget: relay_budget,
            sender_meter: MeterConfig::default(),
            subscriber_capacity: 256,
            peer_queue: 64,
            relay_budget,
        }
    }
}

/// Sequence numbers of one origin's replay window.
pub const REPLAY_WINDOW: u64 = 128;

/// The seqs accepted from one origin near its highest (as IPsec's
/// anti-replay window, RFC 4303 section 3.4.3): a seq more than
/// [`REPLAY_WINDOW`] below the highest is stale, one inside it is taken
/// once.
#[derive(Clone, Copy, Debug)]
struct ReplayWindow {
    highest: u64,
    /// Bit `i`: seq `highest - i` was accepted.
    accepted: u128,
}

impl ReplayWindow {
    fn new(seq: u64) -> Self {
        Self {
            highest: seq,
            accepted: 1,
        }
    }

    fn check(&self, seq: u64) -> Result<(), GossipError> {
        let Some(back) = self.highest.checked_sub(seq) else {
            return Ok(());
        };
        if back >= REPLAY_WINDOW {
            Err(GossipError::Stale)
        } else if (self.accepted >> back) & 1 == 1 {
            Err(GossipError::Duplicate)
        } else {
            Ok(())
        }
    }

    fn insert(&mut self, seq: u64) {
        match seq.checked_sub(self.highest) {
            Some(ahead) => {
                self.accepted = if ahead >= REPLAY_WINDOW {
                    0
                } else {
                    self.accepted << ahead
                };
                self.accepted |= 1;
                self.highest = seq;
            }
            None => {
                let back = self.highest - seq;
                if back < REPLAY_WINDOW {
                    self.accepted |= 1 << back;
                }
            }
        }
    }
}

/// What is known of one origin.
#[derive(Debug)]
struct Origin {
    window: ReplayWindow,
    /// Its messages, all senders together.
    rate: TokenBucket,
    /// Points for messages over budget that it sent itself.
    score: Meter,
    banned_until: Option<Instant>,
}

/// What is known of one direct peer.
#[derive(Debug)]
struct Link {
    /// Messages we may send it.
    relay: TokenBucket,
    /// Its signature-check budget and misbehaviour score.
    sender: Meter,
}

/// The bucket id of signature checks in a sender's [`Meter`].
const VERIFY: u32 = 0;

/// A message that passed [`GossipState::check`]: verify it with
/// [`Checked::verify`] (no state needed, so no lock), then hand the
/// [`Verified`] to [`GossipState::accept`].
#[derive(Debug)]
#[must_use]
pub struct Checked {
    origin: PeerId,
}

impl Checked {
    /// Verifies the origin's signature of `msg` (the message given to
    /// [`GossipState::check`]): the expensive step.
    pub fn verify(self, msg: &GossipMessage) -> Verified {
        let valid = self
            .origin
            .public_key()
            .verify(&signed_bytes(msg.seq, &msg.topic, &msg.data), &msg.sig)
            .is_ok();
        Verified {
            origin: self.origin,
            valid,
        }
    }
}

/// The outcome of [`Checked::verify`], for [`GossipState::accept`].
#[derive(Debug)]
#[must_use]
pub struct Verified {
    origin: PeerId,
    valid: bool,
}

/// The sans-IO gossip core; see the crate docs.
///
/// A received message goes through three steps: [`GossipState::check`]
/// (cheap, on the state), [`Checked::verify`] (the signature, without the
/// state: a driver shared by many channels runs it outside its lock) and
/// [`GossipState::accept`] (on the state again).
/// [`GossipState::handle_message`] runs all three.
#[derive(Debug)]
pub struct GossipState {
    pub(crate) config: GossipConfig,
    next_seq: u64,
    seen: HashMap<MessageId, Instant>,
    order: VecDeque<(Instant, MessageId)>,
    origins: HashMap<PeerId, Origin>,
    origin_order: VecDeque<PeerId>,
    links: HashMap<PeerId, Link>,
}

impl GossipState {
    /// A fresh core. `first_seq` should grow across restarts of the
    /// publisher (the driver takes the wall clock in nanoseconds): a
    /// receiver refuses a seq more than [`REPLAY_WINDOW`] below the highest
    /// it accepted from the same origin.
    pub fn new(config: GossipConfig, first_seq: u64) -> Self {
        Self {
            config,
            next_seq: first_seq,
            seen: HashMap::new(),
            order: VecDeque::new(),
            origins: HashMap::new(),
            origin_order: VecDeque::new(),
            links: HashMap::new(),
        }
    }

    /// Builds, signs and records a message of ours; returns it with the
    /// peers (from `peers`) to send it to.
    pub fn publish(
        &mut self,
        keypair: &Keypair,
        topic: &str,
        data: Vec<u8>,
        now: Instant,
        peers: &[PeerId],
    ) -> Result<(GossipMessage, Vec<PeerId>), GossipError> {
        if topic.len() > MAX_TOPIC_LEN {
            return Err(GossipError::TopicTooLong);
        }
        if data.len() > MAX_DATA_LEN {
            return Err(GossipError::DataTooLong);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let origin = keypair.peer_id();
        let sig = keypair.sign(&signed_bytes(seq, topic, &data)).to_vec();
        self.remember(MessageId { origin, seq }, now);
        let msg = GossipMessage {
            origin: *origin.as_bytes(),
            seq,
            topic: topic.to_owned(),
            ttl: self.config.ttl,
            data,
            sig,
        };
        let targets = self.pick(peers, &[], now);
        Ok((msg, targets))
    }

    /// Handles `msg` from direct peer `from` at `now`: [`GossipState::check`],
    /// [`Checked::verify`] and [`GossipState::accept`] in one.
    pub fn handle_message(
        &mut self,
        from: PeerId,
        msg: &mut GossipMessage,
        now: Instant,
        peers: &[PeerId],
    ) -> Result<Vec<PeerId>, GossipError> {
        let verified = self.check(from, msg, now)?.verify(msg);
        self.accept(from, msg, verified, now, peers)
    }

    /// The cheap checks of `msg` from direct peer `from` at `now`, before
    /// its signature is verified: sizes, the origin key, origin bans,
    /// duplicates and replays, and `from`'s budget of signature checks. A
    /// malformed message costs `from` misbehaviour points.
    pub fn check(
        &mut self,
        from: PeerId,
        msg: &GossipMessage,
        now: Instant,
    ) -> Result<Checked, GossipError> {
        self.handle_timeout(now);
        if msg.topic.len() > MAX_TOPIC_LEN {
            return Err(self.offend(from, Offence::Malformed, GossipError::TopicTooLong, now));
        }
        if msg.data.len() > MAX_DATA_LEN {
            return Err(self.offend(from, Offence::Malformed, GossipError::DataTooLong, now));
        }
        let Ok(origin) = PeerId::from_bytes(&msg.origin) else {
            return Err(self.offend(from, Offence::Malformed, GossipError::BadSignature, now));
        };
        self.fresh(origin, msg.seq, now)?;
        let budget = self.config.verify_budget;
        match self.link(from, now).sender.charge(VERIFY, budget, now) {
            Verdict::Accept => Ok(Checked { origin }),
            Verdict::Drop => Err(GossipError::SenderThrottled),
            Verdict::Ban => Err(GossipError::SenderBanned),
        }
    }

    /// Takes a verified message from direct peer `from` at `now`: a bad
    /// signature costs `from` misbehaviour points; a good one is checked
    /// again for duplicates (another channel may have brought it
    /// meanwhile), remembered and charged to its origin. On success returns
    /// the peers (from `peers`) to forward it to, with its TTL capped to
    /// [`GossipConfig::ttl`] and decremented in `msg`.
    pub fn accept(
        &mut self,
        from: PeerId,
        msg: &mut GossipMessage,
        verified: Verified,
        now: Instant,
        peers: &[PeerId],
    ) -> Result<Vec<PeerId>, GossipError> {
        let origin = verified.origin;
        if !verified.valid {
            return Err(self.offend(from, Offence::Malformed, GossipError::BadSignature, now));
        }
        self.fresh(origin, msg.seq, now)?;
        self.remember(
            MessageId {
                origin,
                seq: msg.seq,
            },
            now,
        );
        let config = self.config;
        let entry = self.origin(origin, msg.seq, now);
        if !entry.rate.take(config.origin_budget, now) {
            // Only the origin itself earns points: a relay cannot know that
            // our bucket is fuller than its own, and a replay (refused
            // above anyway) must not get an honest origin banned.
            if from == origin && entry.score.offend(Offence::OverBudget, now) == Verdict::Ban {
                entry.banned_until = Some(now + config.origin_meter.ban_duration);
                entry.score = Meter::new(config.origin_meter, now);
                return Err(GossipError::OriginBanned);
            }
            return Err(GossipError::Throttled);
        }
        msg.ttl = msg.ttl.min(config.ttl).saturating_sub(1);
        if msg.ttl == 0 {
            return Ok(Vec::new());
        }
        Ok(self.pick(peers, &[from, origin], now))
    }

    /// Whether `origin` is banned at `now`.
    pub fn is_banned(&self, origin: &PeerId, now: Instant) -> bool {
        self.origins
            .get(origin)
            .and_then(|o| o.banned_until)
            .is_some_and(|until| until > now)
    }

    /// Forgets expired message ids.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(expiry, id)) = self.order.front() {
            if expiry > now {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&id) == Some(&expiry) {
                self.seen.remove(&id);
            }
        }
    }

    /// When [`GossipState::handle_timeout`] has something to forget.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.order.front().map(|(t, _)| *t)
    }

    /// Message ids remembered now.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Origins tracked now.
    pub fn origins_len(&self) -> usize {
        self.origins.len()
    }

    /// Whether message `seq` of `origin` is new: not banned, not in the
    /// seen-cache, inside the origin's replay window and not taken there.
    fn fresh(&self, origin: PeerId, seq: u64, now: Instant) -> Result<(), GossipError> {
        if self.is_banned(&origin, now) {
            return Err(GossipError::OriginBanned);
        }
        if self.seen.contains_key(&MessageId { origin, seq }) {
            return Err(GossipError::Duplicate);
        }
        match self.origins.get(&origin) {
            Some(o) => o.window.check(seq),
            None => Ok(()),
        }
    }

    /// Charges `offence` to direct peer `from`; returns `error`, or
    /// [`GossipError::SenderBanned`] if that reached the threshold.
    fn offend(
        &mut self,
        from: PeerId,
        offence: Offence,
        error: GossipError,
        now: Instant,
    ) -> GossipError {
        match self.link(from, now).sender.offend(offence, now) {
            Verdict::Ban => GossipError::SenderBanned,
            Verdict::Accept | Verdict::Drop => error,
        }
    }

    fn remember(&mut self, id: MessageId, now: Instant) {
        while self.seen.len() >= self.config.seen_capacity.max(1) {
            let Some((expiry, old)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&old) == Some(&expiry) {
                self.seen.remove(&old);
            }
        }
        let expiry = now + self.config.seen_ttl;
        self.seen.insert(id, expiry);
        self.order.push_back((expiry, id));
        self.origin(id.origin, id.seq, now).window.insert(id.seq);
    }

    /// The entry of `origin`, made at `now` for a first message `seq` if
    /// new (forgetting the oldest tracked origin when full).
    fn origin(&mut self, origin: PeerId, seq: u64, now: Instant) -> &mut Origin {
        if !self.origins.contains_key(&origin) {
            while self.origins.len() >= self.config.max_origins.max(1) {
                let Some(old) = self.origin_order.pop_front() else {
                    break;
                };
                self.origins.remove(&old);
            }
            self.origin_order.push_back(origin);
        }
        let config = self.config;
        self.origins.entry(origin).or_insert_with(|| Origin {
            window: ReplayWindow::new(seq),
            rate: TokenBucket::new(config.origin_budget, now),
            score: Meter::new(config.origin_meter, now),
            banned_until: None,
        })
    }

    /// The entry of direct peer `peer`, made at `now` if new.
    fn link(&mut self, peer: PeerId, now: Instant) -> &mut Link {
        let config = self.config;
        self.links.entry(peer).or_insert_with(|| Link {
            relay: TokenBucket::new(config.relay_budget, now),
            sender: Meter::new(config.sender_meter, now),
        })
    }

    /// Up to `fanout` random peers not in `except` that have a relay token
    /// at `now` (each one picked spends one).
    fn pick(&mut self, peers: &[PeerId], except: &[PeerId], now: Instant) -> Vec<PeerId> {
        let mut candidates: Vec<PeerId> = peers
            .iter()
            .filter(|p| !except.contains(p))
            .copied()
            .collect();
        fastrand::shuffle(&mut candidates);
        // Entries of peers that left go (the sender's stays, in `except`);
        // the map stays as small as `peers`.
        if self.links.len() > peers.len() {
            self.links
                .retain(|p, _| peers.contains(p) || except.contains(p));
        }
        let budget = self.config.relay_budget;
        let mut out = Vec::new();
        for peer in candidates {
            if out.len() >= self.config.fanout {
                break;
            }
            if self.link(peer, now).relay.take(budget, now) {
                out.push(peer);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|_| Keypair::generate().unwrap().peer_id())
            .collect()
    }

    fn one() -> PeerId {
        ids(1).remove(0)
    }

    /// `n` messages of one fresh origin, published at `now`.
    fn messages(n: usize, now: Instant) -> (PeerId, Vec<GossipMessage>) {
        let origin = Keypair::generate().unwrap();
        let mut p = GossipState::new(GossipConfig::default(), 1000);
        let msgs = (0..n)
            .map(|i| p.publish(&origin, "t", vec![i as u8], now, &[]).unwrap().0)
            .collect();
        (origin.peer_id(), msgs)
    }

    #[test]
    fn test_publish_then_receive_forwards_once_and_drops_duplicate() {
        let t0 = Instant::now();
        let origin = Keypair::generate().unwrap();
        let peers = ids(10);
        let mut publisher = GossipState::new(GossipConfig::default(), 7);
        let (msg, targets) = publisher
            .publish(&origin, "chat", b"hi".to_vec(), t0, &peers)
            .unwrap();
        assert_eq!(targets.len(), 6, "bounded fanout");
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        let from = *peers.first().unwrap();
        let mut copy = msg.clone();
        let fwd = relay.handle_message(from, &mut copy, t0, &peers).unwrap();
        assert_eq!(copy.ttl, msg.ttl - 1);
        assert!(!fwd.contains(&from) && fwd.len() == 6);
        let mut again = msg.clone();
        assert_eq!(
            relay.handle_message(from, &mut again, t0, &peers),
            Err(GossipError::Duplicate)
        );
    }

    #[test]
    fn m2_a_message_replayed_after_the_seen_cache_forgot_it_is_refused() {
        let t0 = Instant::now();
        let (_, msgs) = messages(1, t0);
        let msg = msgs[0].clone();
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        let from = one();
        relay
            .handle_message(from, &mut msg.clone(), t0, &[])
            .unwrap();
        assert_eq!(relay.seen_len(), 1);
        assert_eq!(relay.poll_timeout(), Some(t0 + Duration::from_secs(120)));
        relay.handle_timeout(t0 + Duration::from_secs(119));
        assert_eq!(relay.seen_len(), 1);
        relay.handle_timeout(t0 + Duration::from_secs(120));
        assert_eq!(relay.seen_len(), 0, "the seen-cache forgot it");
        let later = t0 + Duration::from_secs(121);
        assert_eq!(
            relay.handle_message(one(), &mut msg.clone(), later, &[]),
            Err(GossipError::Duplicate),
            "the origin's replay window still has it"
        );
    }

    #[test]
    fn m2_a_replay_below_the_origins_window_is_stale() {
        let t0 = Instant::now();
        let n = REPLAY_WINDOW as usize + 1;
        let (_, msgs) = messages(n, t0);
        let config = GossipConfig {
            origin_budget: RateBudget::UNLIMITED,
            ..GossipConfig::default()
        };
        let mut relay = GossipState::new(config, 0);
        let from = one();
        for m in &msgs {
            relay.handle_message(from, &mut m.clone(), t0, &[]).unwrap();
        }
        let later = t0 + Duration::from_secs(121);
        relay.handle_timeout(later);
        assert_eq!(
            relay.handle_message(from, &mut msgs[0].clone(), later, &[]),
            Err(GossipError::Stale)
        );
        assert_eq!(
            relay.handle_message(from, &mut msgs[n - 1].clone(), later, &[]),
            Err(GossipError::Duplicate)
        );
    }

    #[test]
    fn test_replay_window_takes_each_seq_once_in_any_order() {
        let mut w = ReplayWindow::new(1000);
        for seq in [1003, 1001, 1002, 999] {
            assert_eq!(w.check(seq), Ok(()), "{seq}");
            w.insert(seq);
            assert_eq!(w.check(seq), Err(GossipError::Duplicate), "{seq}");
        }
        assert_eq!(w.check(1000), Err(GossipError::Duplicate));
        assert_eq!(w.check(1003 - REPLAY_WINDOW + 1), Ok(()));
        assert_eq!(w.check(1003 - REPLAY_WINDOW), Err(GossipError::Stale));
        // A jump past the whole window forgets it.
        w.insert(5000);
        assert_eq!(w.check(4999), Ok(()));
        assert_eq!(w.check(5000 - REPLAY_WINDOW), Err(GossipError::Stale));
        let mut low = ReplayWindow::new(3);
        assert_eq!(low.check(0), Ok(()));
        low.insert(0);
        assert_eq!(low.check(0), Err(GossipError::Duplicate));
        assert_eq!(low.check(u64::MAX), Ok(()));
        low.insert(u64::MAX);
        assert_eq!(low.check(3), Err(GossipError::Stale));
    }

    #[test]
    fn m2_an_origin_whose_old_messages_are_replayed_by_another_peer_is_not_banned() {
        let t0 = Instant::now();
        let (origin, msgs) = messages(300, t0);
        let config = GossipConfig {
            max_origins: 1,
            ..GossipConfig::default()
        };
        let mut relay = GossipState::new(config, 0);
        let honest = one();
        for m in msgs.iter().take(50) {
            relay
                .handle_message(honest, &mut m.clone(), t0, &[])
                .unwrap();
        }
        // The replayer sends everything it recorded, once after the
        // seen-cache forgot, once more after pushing the origin out of the
        // origin table (capacity 1 here) with an origin of its own.
        let replayer = one();
        let later = t0 + Duration::from_secs(121);
        for m in msgs.iter().take(50) {
            assert!(matches!(
                relay.handle_message(replayer, &mut m.clone(), later, &[]),
                Err(GossipError::Duplicate | GossipError::Stale)
            ));
        }
        let (_, own) = messages(1, later);
        relay
            .handle_message(replayer, &mut own[0].clone(), later, &[])
            .unwrap();
        let mut results = Vec::new();
        for m in &msgs {
            results.push(relay.handle_message(replayer, &mut m.clone(), later, &[]));
        }
        assert!(results.contains(&Err(GossipError::Throttled)));
        assert!(!results.contains(&Err(GossipError::OriginBanned)));
        assert!(!relay.is_banned(&origin, later));
    }

    #[test]
    fn m2_a_received_ttl_is_capped_to_the_configured_ttl() {
        let t0 = Instant::now();
        let (_, msgs) = messages(1, t0);
        let mut m = msgs[0].clone();
        m.ttl = u8::MAX;
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        let peers = ids(2);
        let fwd = relay.handle_message(peers[0], &mut m, t0, &peers).unwrap();
        assert_eq!(fwd, vec![peers[1]]);
        assert_eq!(m.ttl, GossipConfig::default().ttl - 1);
    }

    #[test]
    fn test_ttl_one_is_delivered_not_forwarded() {
        let t0 = Instant::now();
        let (_, msgs) = messages(1, t0);
        let mut msg = msgs[0].clone();
        msg.ttl = 1;
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        let peers = ids(3);
        assert_eq!(
            relay.handle_message(peers[0], &mut msg, t0, &peers),
            Ok(vec![])
        );
    }

    #[test]
    fn test_malformed_messages_name_their_fault() {
        let t0 = Instant::now();
        let origin = Keypair::generate().unwrap();
        let mut p = GossipState::new(GossipConfig::default(), 0);
        let (msg, _) = p.publish(&origin, "t", vec![1, 2], t0, &[]).unwrap();
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        // A fresh sender for each: the fourth offence of one would ban it.
        let mut refuse = |m: &mut GossipMessage| relay.handle_message(one(), m, t0, &[]);
        let mut bad = msg.clone();
        bad.data.push(3);
        assert_eq!(refuse(&mut bad), Err(GossipError::BadSignature));
        let mut long = msg.clone();
        long.topic = "x".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(refuse(&mut long), Err(GossipError::TopicTooLong));
        let mut big = msg.clone();
        big.data = vec![0; MAX_DATA_LEN + 1];
        assert_eq!(refuse(&mut big), Err(GossipError::DataTooLong));
        let mut other_origin = msg.clone();
        other_origin.origin = *one().as_bytes();
        assert_eq!(refuse(&mut other_origin), Err(GossipError::BadSignature));
        let mut no_key = msg.clone();
        // Bytes nobody holds the key of (perhaps no curve point at all).
        no_key.origin = [0; 32];
        no_key.origin[0] = 2;
        assert_eq!(refuse(&mut no_key), Err(GossipError::BadSignature));
        let mut short_sig = msg.clone();
        short_sig.sig.truncate(10);
        assert_eq!(refuse(&mut short_sig), Err(GossipError::BadSignature));
        assert!(
            refuse(&mut msg.clone()).is_ok(),
            "a bad copy does not poison the seen-cache"
        );
        assert_eq!(
            p.publish(&origin, &"x".repeat(65), vec![], t0, &[]),
            Err(GossipError::TopicTooLong)
        );
    }

    #[test]
    fn m1_a_sender_of_bad_signatures_is_banned_and_others_are_not_affected() {
        let t0 = Instant::now();
        let (_, msgs) = messages(10, t0);
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        let attacker = one();
        let mut results = Vec::new();
        for m in &msgs {
            let mut forged = m.clone();
            forged.data.push(0);
            results.push(relay.handle_message(attacker, &mut forged, t0, &[]));
        }
        // Malformed costs 25 points; the threshold is 100.
        assert_eq!(results[..3], vec![Err(GossipError::BadSignature); 3]);
        assert_eq!(results[3], Err(GossipError::SenderBanned));
        // The forged copies did not poison the real messages.
        for m in &msgs {
            assert!(relay.handle_message(one(), &mut m.clone(), t0, &[]).is_ok());
        }
    }

    #[test]
    fn m1_signature_checks_of_one_sender_are_budgeted_and_duplicates_are_free() {
        let t0 = Instant::now();
        let config = GossipConfig {
            verify_budget: RateBudget::new(1.0, 3),
            ..GossipConfig::default()
        };
        let mut relay = GossipState::new(config, 0);
        let sender = one();
        let (_, msgs) = messages(5, t0);
        for m in &msgs[..3] {
            relay
                .handle_message(sender, &mut m.clone(), t0, &[])
                .unwrap();
        }
        assert_eq!(
            relay.handle_message(sender, &mut msgs[0].clone(), t0, &[]),
            Err(GossipError::Duplicate),
            "a duplicate needs no check"
        );
        assert_eq!(
            relay.check(sender, &msgs[3], t0).map(|_| ()),
            Err(GossipError::SenderThrottled)
        );
        // Another sender has its own budget; tokens come back with time.
        assert!(
            relay
                .handle_message(one(), &mut msgs[3].clone(), t0, &[])
                .is_ok()
        );
        let later = t0 + Duration::from_secs(1);
        assert!(
            relay
                .handle_message(sender, &mut msgs[4].clone(), later, &[])
                .is_ok()
        );
    }

    #[test]
    fn m1_a_message_checked_on_two_channels_at_once_is_accepted_once() {
        let t0 = Instant::now();
        let (_, msgs) = messages(1, t0);
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        let (a, b) = (one(), one());
        let mut m = msgs[0].clone();
        let first = relay.check(a, &m, t0).unwrap().verify(&m);
        let second = relay.check(b, &m, t0).unwrap().verify(&m);
        assert!(relay.accept(a, &mut m, first, t0, &[]).is_ok());
        assert_eq!(
            relay.accept(b, &mut m, second, t0, &[]),
            Err(GossipError::Duplicate)
        );
    }

    #[test]
    fn test_flooding_origin_is_throttled_then_banned_then_forgiven() {
        let t0 = Instant::now();
        let origin = Keypair::generate().unwrap();
        let config = GossipConfig::default();
        let mut p = GossipState::new(config, 0);
        let mut relay = GossipState::new(config, 0);
        let from = origin.peer_id();
        let mut results = Vec::new();
        for _ in 0..200 {
            let (mut m, _) = p.publish(&origin, "t", vec![], t0, &[]).unwrap();
            results.push(relay.handle_message(from, &mut m, t0, &[]));
        }
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(accepted, 100, "the burst");
        assert!(results.contains(&Err(GossipError::Throttled)));
        // 2 points per message over budget: the 50th reaches 100.
        assert_eq!(results.get(149), Some(&Err(GossipError::OriginBanned)));
        assert!(relay.is_banned(&from, t0));
        let later = t0 + Duration::from_secs(601);
        relay.handle_timeout(later);
        assert!(!relay.is_banned(&from, later));
        let (mut m, _) = p.publish(&origin, "t", vec![], later, &[]).unwrap();
        assert!(relay.handle_message(from, &mut m, later, &[]).is_ok());
    }

    #[test]
    fn test_relay_to_a_peer_stays_within_its_relay_budget() {
        let t0 = Instant::now();
        // (The sender's own budget of checks is tested above.)
        let config = GossipConfig {
            verify_budget: RateBudget::UNLIMITED,
            ..GossipConfig::default()
        };
        let mut relay = GossipState::new(config, 0);
        let from = one();
        let honest = ids(1);
        // A flood of many origins, each within its own budget.
        let mut forwarded = 0;
        for _ in 0..1000 {
            let origin = Keypair::generate().unwrap();
            let (mut m, _) = GossipState::new(config, 0)
                .publish(&origin, "t", vec![], t0, &[])
                .unwrap();
            let targets = relay.handle_message(from, &mut m, t0, &honest).unwrap();
            forwarded += targets.len();
        }
        assert_eq!(forwarded, config.relay_budget.burst as usize, "the burst");
        let default = GossipConfig::default();
        assert!(default.relay_budget.burst <= BUDGET.burst);
        assert!(default.relay_budget.per_second <= BUDGET.per_second);
        assert_eq!(
            default.verify_budget, default.relay_budget,
            "honest senders fit"
        );
        // Tokens come back with time.
        let later = t0 + Duration::from_secs(1);
        let origin = Keypair::generate().unwrap();
        let (mut m, _) = GossipState::new(config, 0)
            .publish(&origin, "t", vec![], later, &[])
            .unwrap();
        assert_eq!(
            relay.handle_message(from, &mut m, later, &honest),
            Ok(honest)
        );
    }

    #[test]
    fn test_seen_capacity_and_origin_table_evict_oldest() {
        let t0 = Instant::now();
        let origin = Keypair::generate().unwrap();
        let config = GossipConfig {
            seen_capacity: 3,
            max_origins: 2,
            ..GossipConfig::default()
        };
        let mut p = GossipState::new(config, 0);
        for _ in 0..5 {
            p.publish(&origin, "t", vec![], t0, &[]).unwrap();
        }
        assert_eq!(p.seen_len(), 3);
        for _ in 0..4 {
            let (_, msgs) = messages(1, t0);
            p.handle_message(one(), &mut msgs[0].clone(), t0, &[])
                .unwrap();
        }
        assert_eq!(p.origins_len(), 2);
    }
}
