//! The sans-IO gossip core: messages, limits, settings and [`GossipState`]
//! (time and the peer list are arguments). See the crate docs for the
//! algorithm.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use knotwork_core::{Keypair, PeerId};
use knotwork_node::meter::{Meter, MeterConfig, RateBudget, Verdict};
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
    // --- The message is malformed -----------------------------------------
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
    /// The origin is over its rate budget; the message is dropped.
    #[error("origin throttled")]
    Throttled,
    /// The origin is banned (this message may have caused it).
    #[error("origin banned")]
    OriginBanned,
}

/// Settings of gossip.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct GossipConfig {
    /// Peers a message is sent or forwarded to, at most.
    pub fanout: usize,
    /// Hops a published message may travel.
    pub ttl: u8,
    /// How long a message id is remembered.
    pub seen_ttl: Duration,
    /// Message ids remembered, at most.
    pub seen_capacity: usize,
    /// Messages per origin: sustained rate and burst.
    pub origin_budget: RateBudget,
    /// Misbehaviour threshold and ban length for origins over budget.
    pub origin_meter: MeterConfig,
    /// Origins tracked for rate limiting, at most (the oldest is forgotten).
    pub max_origins: usize,
    /// Messages queued for each local subscriber; a full subscriber misses
    /// messages rather than slowing the relay.
    pub subscriber_capacity: usize,
    /// Messages sent (published or relayed) to one direct peer: sustained
    /// rate and burst. Below the receiver's [`BUDGET`], with room for
    /// frames that arrive bunched together.
    pub relay_budget: RateBudget,
}

impl Default for GossipConfig {
    fn default() -> Self {
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
            subscriber_capacity: 256,
            relay_budget: RateBudget::new(BUDGET.per_second / 2.0, BUDGET.burst / 2),
        }
    }
}

/// The sans-IO gossip core; see the module docs.
#[derive(Debug)]
pub struct GossipState {
    pub(crate) config: GossipConfig,
    next_seq: u64,
    seen: HashMap<MessageId, Instant>,
    order: VecDeque<(Instant, MessageId)>,
    origins: HashMap<PeerId, Meter>,
    origin_order: VecDeque<PeerId>,
    banned: HashMap<PeerId, Instant>,
    /// Token buckets of messages sent to each direct peer.
    relays: HashMap<PeerId, Meter>,
}

impl GossipState {
    /// A fresh core; `first_seq` should be random so a restarted publisher
    /// is not mistaken for its old messages.
    pub fn new(config: GossipConfig, first_seq: u64) -> Self {
        Self {
            config,
            next_seq: first_seq,
            seen: HashMap::new(),
            order: VecDeque::new(),
            origins: HashMap::new(),
            origin_order: VecDeque::new(),
            banned: HashMap::new(),
            relays: HashMap::new(),
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

    /// Handles `msg` from direct peer `from` at `now`; on success returns
    /// the peers (from `peers`) to forward it to, with its TTL already
    /// decremented in `msg`.
    pub fn handle_message(
        &mut self,
        from: PeerId,
        msg: &mut GossipMessage,
        now: Instant,
        peers: &[PeerId],
    ) -> Result<Vec<PeerId>, GossipError> {
        self.handle_timeout(now);
        if msg.topic.len() > MAX_TOPIC_LEN {
            return Err(GossipError::TopicTooLong);
        }
        if msg.data.len() > MAX_DATA_LEN {
            return Err(GossipError::DataTooLong);
        }
        let origin = PeerId::from_bytes(&msg.origin).map_err(|_| GossipError::BadSignature)?;
        if self.is_banned(&origin, now) {
            return Err(GossipError::OriginBanned);
        }
        let id = MessageId {
            origin,
            seq: msg.seq,
        };
        if self.seen.contains_key(&id) {
            return Err(GossipError::Duplicate);
        }
        origin
            .public_key()
            .verify(&signed_bytes(msg.seq, &msg.topic, &msg.data), &msg.sig)
            .map_err(|_| GossipError::BadSignature)?;
        self.remember(id, now);
        let budget = self.config.origin_budget;
        match self.meter(origin, now).charge(0, budget, now) {
            Verdict::Accept => {}
            Verdict::Drop => return Err(GossipError::Throttled),
            Verdict::Ban => {
                self.banned
                    .insert(origin, now + self.config.origin_meter.ban_duration);
                self.origins.remove(&origin);
                return Err(GossipError::OriginBanned);
            }
        }
        msg.ttl = msg.ttl.saturating_sub(1);
        if msg.ttl == 0 {
            return Ok(Vec::new());
        }
        Ok(self.pick(peers, &[from, origin], now))
    }

    /// Whether `origin` is banned at `now`.
    pub fn is_banned(&self, origin: &PeerId, now: Instant) -> bool {
        self.banned.get(origin).is_some_and(|until| *until > now)
    }

    /// Forgets expired message ids and bans.
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
        self.banned.retain(|_, until| *until > now);
    }

    /// When [`GossipState::handle_timeout`] has something to forget.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let seen = self.order.front().map(|(t, _)| *t);
        let ban = self.banned.values().min().copied();
        seen.into_iter().chain(ban).min()
    }

    /// Message ids remembered now.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
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
    }

    fn meter(&mut self, origin: PeerId, now: Instant) -> &mut Meter {
        if !self.origins.contains_key(&origin) {
            while self.origins.len() >= self.config.max_origins.max(1) {
                let Some(old) = self.origin_order.pop_front() else {
                    break;
                };
                self.origins.remove(&old);
            }
            self.origin_order.push_back(origin);
        }
        let config = self.config.origin_meter;
        self.origins
            .entry(origin)
            .or_insert_with(|| Meter::new(config, now))
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
        // Buckets of peers that left go; the map stays as small as `peers`.
        if self.relays.len() > peers.len() {
            self.relays.retain(|p, _| peers.contains(p));
        }
        let budget = self.config.relay_budget;
        // Never bans: an empty bucket only skips the peer.
        let config = MeterConfig {
            ban_threshold: u32::MAX,
            ..MeterConfig::default()
        };
        let mut out = Vec::new();
        for peer in candidates {
            if out.len() >= self.config.fanout {
                break;
            }
            let bucket = self
                .relays
                .entry(peer)
                .or_insert_with(|| Meter::new(config, now));
            if bucket.charge(0, budget, now) == Verdict::Accept {
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
    fn test_seen_entry_expires_after_seen_ttl() {
        let t0 = Instant::now();
        let origin = Keypair::generate().unwrap();
        let mut p = GossipState::new(GossipConfig::default(), 0);
        let (msg, _) = p.publish(&origin, "t", vec![1], t0, &[]).unwrap();
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        let from = ids(1).remove(0);
        relay
            .handle_message(from, &mut msg.clone(), t0, &[])
            .unwrap();
        assert_eq!(relay.seen_len(), 1);
        assert_eq!(relay.poll_timeout(), Some(t0 + Duration::from_secs(120)));
        relay.handle_timeout(t0 + Duration::from_secs(119));
        assert_eq!(relay.seen_len(), 1);
        relay.handle_timeout(t0 + Duration::from_secs(120));
        assert_eq!(relay.seen_len(), 0);
        assert!(
            relay
                .handle_message(from, &mut msg.clone(), t0 + Duration::from_secs(121), &[])
                .is_ok(),
            "forgotten, so accepted again"
        );
    }

    #[test]
    fn test_ttl_one_is_delivered_not_forwarded() {
        let t0 = Instant::now();
        let origin = Keypair::generate().unwrap();
        let mut p = GossipState::new(GossipConfig::default(), 0);
        let (mut msg, _) = p.publish(&origin, "t", vec![], t0, &[]).unwrap();
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
        let from = ids(1).remove(0);
        let mut relay = GossipState::new(GossipConfig::default(), 0);
        let mut bad = msg.clone();
        bad.data.push(3);
        assert_eq!(
            relay.handle_message(from, &mut bad, t0, &[]),
            Err(GossipError::BadSignature)
        );
        let mut long = msg.clone();
        long.topic = "x".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            relay.handle_message(from, &mut long, t0, &[]),
            Err(GossipError::TopicTooLong)
        );
        let mut big = msg.clone();
        big.data = vec![0; MAX_DATA_LEN + 1];
        assert_eq!(
            relay.handle_message(from, &mut big, t0, &[]),
            Err(GossipError::DataTooLong)
        );
        let mut other_origin = msg.clone();
        other_origin.origin = *from.as_bytes();
        assert_eq!(
            relay.handle_message(from, &mut other_origin, t0, &[]),
            Err(GossipError::BadSignature)
        );
        let mut no_key = msg.clone();
        // Bytes nobody holds the key of (perhaps no curve point at all).
        no_key.origin = [0; 32];
        no_key.origin[0] = 2;
        assert_eq!(
            relay.handle_message(from, &mut no_key, t0, &[]),
            Err(GossipError::BadSignature)
        );
        let mut short_sig = msg.clone();
        short_sig.sig.truncate(10);
        assert_eq!(
            relay.handle_message(from, &mut short_sig, t0, &[]),
            Err(GossipError::BadSignature)
        );
        assert!(
            relay
                .handle_message(from, &mut msg.clone(), t0, &[])
                .is_ok(),
            "a bad copy does not poison the seen-cache"
        );
        assert_eq!(
            p.publish(&origin, &"x".repeat(65), vec![], t0, &[]),
            Err(GossipError::TopicTooLong)
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
        let config = GossipConfig::default();
        let mut relay = GossipState::new(config, 0);
        let from = ids(1).remove(0);
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
        assert!(config.relay_budget.burst <= BUDGET.burst);
        assert!(config.relay_budget.per_second <= BUDGET.per_second);
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
    fn test_seen_capacity_evicts_oldest() {
        let t0 = Instant::now();
        let origin = Keypair::generate().unwrap();
        let config = GossipConfig {
            seen_capacity: 3,
            ..GossipConfig::default()
        };
        let mut p = GossipState::new(config, 0);
        for _ in 0..5 {
            p.publish(&origin, "t", vec![], t0, &[]).unwrap();
        }
        assert_eq!(p.seen_len(), 3);
    }
}
