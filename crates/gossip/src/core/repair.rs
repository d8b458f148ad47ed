//! Loss repair by lazy pull, as gossipsub's IHAVE/IWANT and Plumtree's
//! lazy push: every accepted or published message is kept whole for
//! [`GossipConfig::repair_window`] (bounded in count and bytes); every
//! [`GossipConfig::repair_interval`] a node tells
//! [`GossipConfig::repair_fanout`] random gossip peers the ids it keeps
//! ([`IHave`]); a peer that has not seen some of them asks for them
//! ([`IWant`]) and gets them as ordinary [`GossipMessage`]s, checked like
//! any other.
//!
//! Push-pull. An IHAVE that lists fewer than [`MAX_IHAVE_IDS`] ids lists
//! everything its sender keeps, so its receiver also learns what the
//! sender lacks: the messages it keeps that are not listed and that it has
//! kept for at least one [`GossipConfig::repair_interval`] (younger ones
//! may still be on their way by the flood) go back at once, within the
//! same budgets as answers to IWANT. A node sends its IHAVEs even when it
//! keeps nothing, so a node that joined with few channels, which the
//! random fanouts of busier peers seldom pick, pulls what it missed from
//! its own peers every round (found by `cargo xtask testnet`: at 200
//! nodes, fresh nodes with 5 to 15 channels among peers with 130 missed
//! whole messages).
//!
//! Bounds. An IHAVE or IWANT lists at most [`MAX_IHAVE_IDS`] ids (more is
//! [`GossipError::TooManyIds`], charged as malformed). A node asks one peer
//! for at most [`GossipConfig::want_budget`] ids and never asks for an id
//! already asked (of any peer) within [`GossipConfig::want_timeout`]
//! ([`GossipConfig::max_wants`] remembered). It answers one peer with at
//! most [`GossipConfig::serve_budget`] messages, each also taking a token
//! of [`GossipConfig::relay_budget`]; unknown ids cost nothing and get
//! nothing. Amplification: an id costs the asker at least 33 request bytes
//! (32 origin bytes and a one-byte seq) and brings at most one message of
//! [`GossipMessage::MAX_BYTES`] (16,560) bytes, so at most about 502
//! response bytes per request byte; per peer, at most `serve_budget`
//! messages a second (by default 32, about 530 KB/s, after a burst of 64).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use knotwork_core::PeerId;
use knotwork_node::meter::Offence;
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

use super::{
    GossipConfig, GossipError, GossipMessage, GossipState, MessageId, shrink_deque, shrink_map,
};

/// Most message ids in one [`IHave`] or [`IWant`].
pub const MAX_IHAVE_IDS: usize = 128;

/// A message id on the wire: the origin's key bytes and its seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireId {
    /// The publisher's public key (its [`PeerId`] bytes).
    pub origin: [u8; 32],
    /// Its sequence number.
    pub seq: u64,
}

impl From<MessageId> for WireId {
    fn from(id: MessageId) -> Self {
        Self {
            origin: *id.origin.as_bytes(),
            seq: id.seq,
        }
    }
}

impl WireId {
    /// The id, if `origin` is a public key.
    fn id(&self) -> Option<MessageId> {
        let origin = PeerId::from_bytes(&self.origin).ok()?;
        Some(MessageId {
            origin,
            seq: self.seq,
        })
    }
}

/// The ids of [`WireId`]s in one message: a length varint (2 bytes up to
/// 16,383) and, per id, origin 32 + seq varint 10.
const IDS_MAX_BYTES: usize = 2 + MAX_IHAVE_IDS * (32 + 10);

/// "I have these messages": the ids a peer keeps for repair, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IHave {
    /// At most [`MAX_IHAVE_IDS`].
    pub ids: Vec<WireId>,
}

impl Message for IHave {
    const NAME: &'static str = "knot/gossip/ihave/1";
    const MAX_BYTES: usize = IDS_MAX_BYTES;
}

/// "Send me these messages": the ids of an [`IHave`] not seen yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IWant {
    /// At most [`MAX_IHAVE_IDS`].
    pub ids: Vec<WireId>,
}

impl Message for IWant {
    const NAME: &'static str = "knot/gossip/iwant/1";
    const MAX_BYTES: usize = IDS_MAX_BYTES;
}

/// What to send back for an [`IHave`] ([`GossipState::on_ihave`]).
#[derive(Debug, Default, PartialEq)]
pub struct IHaveAnswer {
    /// The listed ids to ask for.
    pub want: Option<IWant>,
    /// Kept messages the sender of a complete IHAVE lacks.
    pub push: Vec<GossipMessage>,
}

/// The bytes a message takes in the cache: its fixed fields (origin 32,
/// seq 8, TTL 1), topic, data and signature.
fn cost(msg: &GossipMessage) -> usize {
    41 + msg.topic.len() + msg.data.len() + msg.sig.len()
}

/// Messages kept for repair, oldest first out.
#[derive(Debug, Default)]
pub(super) struct MessageCache {
    messages: HashMap<MessageId, GossipMessage>,
    /// When each was kept, its id and cost, oldest first.
    order: VecDeque<(Instant, MessageId, usize)>,
    bytes: usize,
}

impl MessageCache {
    /// Keeps `msg` (id `id`) from `now`, evicting the oldest as needed.
    pub(super) fn insert(
        &mut self,
        config: &GossipConfig,
        id: MessageId,
        msg: GossipMessage,
        now: Instant,
    ) {
        let size = cost(&msg);
        if self.messages.contains_key(&id)
            || config.repair_cache_messages == 0
            || size > config.repair_cache_bytes
        {
            return;
        }
        self.expire(config, now);
        while self.messages.len() >= config.repair_cache_messages
            || self.bytes + size > config.repair_cache_bytes
        {
            if !self.pop() {
                break;
            }
        }
        self.messages.insert(id, msg);
        self.order.push_back((now, id, size));
        self.bytes += size;
    }

    /// Forgets messages kept longer than [`GossipConfig::repair_window`].
    pub(super) fn expire(&mut self, config: &GossipConfig, now: Instant) {
        while let Some(&(at, _, _)) = self.order.front() {
            if at + config.repair_window > now {
                break;
            }
            self.pop();
        }
        shrink_map(&mut self.messages);
        shrink_deque(&mut self.order);
    }

    /// Forgets the oldest message; false if there was none.
    fn pop(&mut self) -> bool {
        let Some((_, id, size)) = self.order.pop_front() else {
            return false;
        };
        self.messages.remove(&id);
        self.bytes = self.bytes.saturating_sub(size);
        true
    }

    /// The messages kept since `before` or earlier whose ids are not in
    /// `listed`, oldest first.
    fn unlisted(&self, listed: &[WireId], before: Instant) -> Vec<MessageId> {
        let listed: std::collections::HashSet<&WireId> = listed.iter().collect();
        self.order
            .iter()
            .take_while(|(at, _, _)| *at <= before)
            .filter(|(_, id, _)| !listed.contains(&WireId::from(*id)))
            .map(|(_, id, _)| *id)
            .collect()
    }

    /// Up to `n` ids, newest first.
    fn newest(&self, n: usize) -> Vec<WireId> {
        self.order
            .iter()
            .rev()
            .take(n)
            .map(|(_, id, _)| WireId::from(*id))
            .collect()
    }
}

/// Ids asked by IWANT: of whom, and until when no other peer is asked.
#[derive(Debug, Default)]
pub(super) struct Wants {
    asked: HashMap<MessageId, (PeerId, Instant)>,
    /// Expiry and id, oldest first.
    order: VecDeque<(Instant, MessageId)>,
}

impl Wants {
    fn expire(&mut self, now: Instant) {
        while let Some(&(expiry, _)) = self.order.front() {
            if expiry > now {
                break;
            }
            self.pop();
        }
        shrink_map(&mut self.asked);
        shrink_deque(&mut self.order);
    }

    fn pop(&mut self) {
        if let Some((expiry, id)) = self.order.pop_front()
            && self.asked.get(&id).is_some_and(|(_, e)| *e == expiry)
        {
            self.asked.remove(&id);
        }
    }

    fn insert(&mut self, config: &GossipConfig, id: MessageId, peer: PeerId, now: Instant) {
        while self.asked.len() >= config.max_wants.max(1) && !self.order.is_empty() {
            self.pop();
        }
        let expiry = now + config.want_timeout;
        self.asked.insert(id, (peer, expiry));
        self.order.push_back((expiry, id));
    }
}

impl GossipState {
    /// One repair round at `now` (the driver calls it every
    /// [`GossipConfig::repair_interval`]): an [`IHave`] of the newest kept
    /// ids (at most [`MAX_IHAVE_IDS`]) for each of up to
    /// [`GossipConfig::repair_fanout`] random peers of `peers`, empty if
    /// nothing is kept (a pull: see the module docs). `peers` may be a
    /// subset of the gossip peers.
    pub fn repair_tick(&mut self, now: Instant, peers: &[PeerId]) -> Vec<(PeerId, IHave)> {
        self.cache.expire(&self.config, now);
        let ids = self.cache.newest(MAX_IHAVE_IDS);
        // No link is made or forgotten here: `peers` may be only some of
        // the gossip peers (those that speak repair).
        let mut targets = peers.to_vec();
        fastrand::shuffle(&mut targets);
        targets
            .into_iter()
            .take(self.config.repair_fanout)
            .map(|peer| (peer, IHave { ids: ids.clone() }))
            .collect()
    }

    /// Handles `ihave` from direct peer `from` at `now`. The answer's
    /// [`IWant`] lists its ids that are new (not seen, not banned, inside
    /// their origin's replay window) and not asked of any peer within
    /// [`GossipConfig::want_timeout`], within `from`'s
    /// [`GossipConfig::want_budget`]; `None` if there are none. If the IHAVE
    /// lists all its sender keeps, the answer's `push` holds the kept
    /// messages it lacks (see the module docs), within the budgets of
    /// [`GossipState::on_iwant`]. Too many ids are malformed and cost
    /// `from` misbehaviour points.
    pub fn on_ihave(
        &mut self,
        from: PeerId,
        ihave: &IHave,
        now: Instant,
    ) -> Result<IHaveAnswer, GossipError> {
        if ihave.ids.len() > MAX_IHAVE_IDS {
            return Err(self.offend(from, Offence::Malformed, GossipError::TooManyIds, now));
        }
        self.handle_timeout(now);
        self.wants.expire(now);
        let config = self.config;
        let mut ids = Vec::new();
        for wire in &ihave.ids {
            let Some(id) = wire.id() else {
                continue;
            };
            if self.fresh(id.origin, id.seq, now).is_err() || self.wants.asked.contains_key(&id) {
                continue;
            }
            if !self.link(from, now).want.take(config.want_budget, now) {
                break;
            }
            self.wants.insert(&config, id, from, now);
            ids.push(*wire);
        }
        let mut push = Vec::new();
        if ihave.ids.len() < MAX_IHAVE_IDS {
            self.cache.expire(&config, now);
            let settled = now.checked_sub(config.repair_interval).unwrap_or(now);
            let lacking = self.cache.unlisted(&ihave.ids, settled);
            push = self.serve(from, lacking, now);
        }
        Ok(IHaveAnswer {
            want: (!ids.is_empty()).then_some(IWant { ids }),
            push,
        })
    }

    /// Handles `iwant` from direct peer `from` at `now`: the kept messages
    /// it asks for, in its order, while `from` has tokens of
    /// [`GossipConfig::serve_budget`] and [`GossipConfig::relay_budget`];
    /// unknown ids are skipped. Too many ids are malformed and cost `from`
    /// misbehaviour points.
    pub fn on_iwant(
        &mut self,
        from: PeerId,
        iwant: &IWant,
        now: Instant,
    ) -> Result<Vec<GossipMessage>, GossipError> {
        if iwant.ids.len() > MAX_IHAVE_IDS {
            return Err(self.offend(from, Offence::Malformed, GossipError::TooManyIds, now));
        }
        self.cache.expire(&self.config, now);
        let ids = iwant.ids.iter().filter_map(WireId::id).collect();
        Ok(self.serve(from, ids, now))
    }

    /// The kept messages of `ids`, in order, while `from` has tokens of
    /// [`GossipConfig::serve_budget`] and [`GossipConfig::relay_budget`];
    /// ids not kept are skipped.
    fn serve(&mut self, from: PeerId, ids: Vec<MessageId>, now: Instant) -> Vec<GossipMessage> {
        let config = self.config;
        let mut out = Vec::new();
        for id in ids {
            let Some(msg) = self.cache.messages.get(&id) else {
                continue;
            };
            let msg = msg.clone();
            let link = self.link(from, now);
            if !(link.serve.take(config.serve_budget, now)
                && link.relay.take(config.relay_budget, now))
            {
                break;
            }
            out.push(msg);
        }
        out
    }

    /// Forgets direct peer `peer`'s budgets (the driver calls it when its
    /// channel closes), so peers that send IHAVE or IWANT and leave do not
    /// grow the per-peer state while no message is relayed.
    pub fn forget(&mut self, peer: &PeerId) {
        self.links.remove(peer);
    }

    /// Whether message `id`, just accepted from `from`, is the answer to
    /// an IWANT of ours to `from` (a repair); forgets that want.
    pub fn answers_want(&mut self, from: PeerId, id: &MessageId) -> bool {
        let asked = self.wants.asked.get(id).is_some_and(|(p, _)| *p == from);
        if asked {
            self.wants.asked.remove(id);
        }
        asked
    }

    /// Messages kept for repair now.
    pub fn cache_len(&self) -> usize {
        self.cache.messages.len()
    }

    /// Bytes of the messages kept for repair now.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes
    }
}

#[cfg(test)]
mod tests;
