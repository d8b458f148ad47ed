//! The sans-IO gossip core: messages, limits, settings and [`GossipState`]
//! (time and the peer list are arguments). See the crate docs for the
//! algorithm; loss repair (IHAVE/IWANT) is in module `repair`.

mod repair;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use knotwork_core::{Keypair, PeerId};
use knotwork_node::meter::{Meter, MeterConfig, Offence, RateBudget, TokenBucket, Verdict};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

pub use repair::{IHave, IHaveAnswer, IWant, MAX_IHAVE_IDS, WireId};
use repair::{MessageCache, Wants};

/// Tables with room for fewer entries than this are left as they are.
const SHRINK_FLOOR: usize = 1024;

/// Gives a table's memory back after a burst (a table never shrinks by
/// itself, so a flood's peak would stay for the life of the node): one that
/// uses less than a quarter of its room shrinks to twice its length. The gap
/// keeps steady traffic from shrinking and regrowing it; each shrink at
/// least halves the room, so the rehashing costs O(1) per entry removed.
pub(crate) fn shrink_map<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > SHRINK_FLOOR && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// [`shrink_map`] for a queue.
pub(crate) fn shrink_deque<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > SHRINK_FLOOR && queue.len() * 4 < queue.capacity() {
        queue.shrink_to(queue.len() * 2);
    }
}

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
    /// An [`IHave`] or [`IWant`] lists more than [`MAX_IHAVE_IDS`] ids.
    #[error("too many message ids")]
    TooManyIds,
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
    /// How long an accepted (or published) message is kept whole for
    /// repair: advertised in IHAVEs and sent on IWANT.
    pub repair_window: Duration,
    /// Messages kept for repair, at most (oldest out first).
    pub repair_cache_messages: usize,
    /// Bytes of messages kept for repair (topic, data, signature and the
    /// fixed fields), at most (oldest out first).
    pub repair_cache_bytes: usize,
    /// How often the driver calls [`GossipState::repair_tick`].
    pub repair_interval: Duration,
    /// Peers sent an IHAVE per [`GossipConfig::repair_interval`], at most.
    pub repair_fanout: usize,
    /// Message ids asked of one peer by IWANT: sustained rate and burst.
    pub want_budget: RateBudget,
    /// How long an id asked by IWANT is not asked again (of any peer).
    pub want_timeout: Duration,
    /// Ids asked by IWANT and not yet answered that are remembered, at
    /// most (oldest forgotten first).
    pub max_wants: usize,
    /// Messages sent to one peer in answer to its IWANTs: sustained rate
    /// and burst (each answer also takes a token of
    /// [`GossipConfig::relay_budget`]).
    pub serve_budget: RateBudget,
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
            repair_window: Duration::from_secs(10),
            repair_cache_messages: 1024,
            repair_cache_bytes: 4 * 1024 * 1024,
            repair_interval: Duration::from_secs(1),
            repair_fanout: 3,
            want_budget: RateBudget::new(64.0, 128),
            want_timeout: Duration::from_secs(2),
            max_wants: 4096,
            serve_budget: RateBudget::new(32.0, 64),
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
    /// Message ids we may ask it for.
    want: TokenBucket,
    /// Messages we may send it in answer to its IWANTs.
    serve: TokenBucket,
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
    /// Accepted and published messages, for repair.
    cache: MessageCache,
    /// Ids asked by IWANT and not yet received.
    wants: Wants,
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
            cache: MessageCache::default(),
            wants: Wants::default(),
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
        self.cache
            .insert(&self.config, MessageId { origin, seq }, msg.clone(), now);
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
        let id = MessageId {
            origin,
            seq: msg.seq,
        };
        self.cache.insert(&config, id, msg.clone(), now);
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

    /// Forgets expired message ids, and gives back the memory a flood of
    /// them took (tables shrink once under a quarter used).
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
        shrink_map(&mut self.seen);
        shrink_deque(&mut self.order);
    }

    /// Room the seen-set holds: (ids, queue entries).
    #[cfg(test)]
    pub(crate) fn seen_room(&self) -> (usize, usize) {
        (self.seen.capacity(), self.order.capacity())
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
            want: TokenBucket::new(config.want_budget, now),
            serve: TokenBucket::new(config.serve_budget, now),
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
mod tests;
