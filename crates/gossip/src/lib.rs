//! Gossip: topic-based publish/subscribe by bounded flooding.
//!
//! A publisher signs `(origin, seq, topic, data)` with its identity key and
//! sends the [`GossipMessage`] to at most [`GossipConfig::fanout`] gossip
//! peers chosen at random, with a hop budget of [`GossipConfig::ttl`]. Its
//! seqs start at the wall clock in nanoseconds and grow by one, so they
//! keep growing across restarts.
//!
//! A node receiving a message checks, cheapest first and under its state
//! lock: the sizes, the origin key, whether the origin is banned, whether
//! the message id `(origin, seq)` is in its seen-cache (entries expire after
//! [`GossipConfig::seen_ttl`]; at most [`GossipConfig::seen_capacity`],
//! oldest evicted first) or taken or left behind in the origin's replay
//! window ([`REPLAY_WINDOW`] seqs below the highest it accepted: a replay
//! after the seen-cache forgot is [`GossipError::Duplicate`] or
//! [`GossipError::Stale`]), and the direct sender's budget of signature
//! checks ([`GossipConfig::verify_budget`]). Then, without the lock, it
//! verifies the signature; a bad signature or malformed message costs the
//! direct sender misbehaviour points (an honest relay forwards only what it
//! verified, so it never sends one), and at the threshold its channel is
//! closed for misbehaviour (which puts it on the node's ban list).
//!
//! A new valid message enters the seen-cache and its origin's window and is
//! charged to the origin's token bucket ([`GossipConfig::origin_budget`]):
//! over budget it is dropped (throttled). Only an origin that sends over
//! budget itself, as a direct peer, collects misbehaviour points, and at the
//! threshold it is banned for [`MeterConfig::ban_duration`] and its channel
//! closed; a relayed flood is only throttled, so a peer replaying someone
//! else's messages cannot get that origin banned. An accepted message is
//! delivered to the local subscribers of its topic and, while hops remain,
//! forwarded with its TTL capped to [`GossipConfig::ttl`] and decremented,
//! to up to `fanout` random gossip peers other than the sender and the
//! origin. Every node relays every topic; subscriptions only decide local
//! delivery.
//!
//! Frames of direct peers are also metered by the channel ([`BUDGET`]); so
//! that a flood from many origins, each within its own budget, is not
//! relayed faster than a peer's channel accepts (which would get this node
//! banned by its honest peers), messages to each direct peer are also
//! limited by [`GossipConfig::relay_budget`]: a peer without a token is
//! skipped. Messages for a peer go through a queue of its own
//! ([`GossipConfig::peer_queue`]) that one job per channel writes out; a
//! full queue (a slow peer) drops the message and counts it, so relaying
//! never waits for another peer's outbox and one slow peer cannot stall the
//! channel a message came on.
//!
//! Losses are repaired by lazy pull, as gossipsub's IHAVE/IWANT: a node
//! keeps the messages it accepted or published in the last
//! [`GossipConfig::repair_window`], and every
//! [`GossipConfig::repair_interval`] sends [`GossipConfig::repair_fanout`]
//! random peers that speak [`REPAIR_NAME`] an [`IHave`] of their ids
//! (newest first, at most [`MAX_IHAVE_IDS`]). A peer asks for the ids it
//! has not seen (and that are not stale or banned) with an [`IWant`], and
//! gets them as ordinary messages, checked, delivered and forwarded like
//! any other; an id asked of one peer is not asked of another within
//! [`GossipConfig::want_timeout`]. So a node that missed a message (its
//! relay died mid-forward, a queue was full, a peer was skipped for want of
//! a relay token) gets it within a repair round or two while it stays
//! connected to a node that has it. The IHAVE also pulls: its receiver
//! sends back the settled messages it keeps that a complete IHAVE does not
//! list (see [`GossipState::on_ihave`]), so a node with few channels, which
//! busier peers' fanouts seldom pick, gets what it missed from the peers it
//! tells.
//!
//! Everything a peer can grow is bounded: the seen-cache, the origin table
//! ([`GossipConfig::max_origins`], oldest first out; rate, replay window and
//! ban of each origin), the per-peer state (as many as gossip peers), the
//! per-peer queues, the repair cache ([`GossipConfig::repair_cache_messages`]
//! and [`GossipConfig::repair_cache_bytes`], oldest first out), the ids
//! asked by IWANT ([`GossipConfig::max_wants`]), the ids of one IHAVE or
//! IWANT ([`GossipError::TooManyIds`] beyond) and what one peer's IWANTs
//! can make us send ([`GossipConfig::serve_budget`]: at most about 502
//! response bytes per request byte, and by default 32 messages, about
//! 530 KB, a second). Subscribers are local.
//!
//! [`GossipState`] is the sans-IO core (time and the peer list are
//! arguments, module `core`); [`Gossip`] is the driver over node channels
//! and the node [`Service`] that runs it.
//!
//! [`MeterConfig::ban_duration`]: knotwork_node::MeterConfig::ban_duration

mod core;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knotwork_core::{Keypair, PeerId, lock};
use knotwork_node::metrics::Labels;
use knotwork_node::metrics::prometheus_client::metrics::counter::Counter;
use knotwork_node::metrics::prometheus_client::metrics::family::Family;
use knotwork_node::{Channel, NodeHandle, RateBudget, Service, Sessions, Setup};
use tokio::sync::mpsc;

pub use crate::core::{
    BUDGET, Checked, GossipConfig, GossipError, GossipMessage, GossipState, IHave, IHaveAnswer,
    IWant, MAX_DATA_LEN, MAX_IHAVE_IDS, MAX_TOPIC_LEN, MessageId, REPLAY_WINDOW, Verified, WireId,
    signed_bytes,
};

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/gossip";

/// The name of loss repair ([`IHave`] and [`IWant`]) in the version
/// exchange: IHAVEs go only to peers that announce it, so a node of an
/// older version never gets a message type it does not know.
pub const REPAIR_NAME: &str = "knot/gossip/repair/1";

/// The channel budget of [`IHave`] and of [`IWant`] frames from one direct
/// peer: a peer sends each of its peers at most one IHAVE per
/// [`GossipConfig::repair_interval`] (and one IWANT per IHAVE it got).
pub const REPAIR_BUDGET: RateBudget = RateBudget::new(5.0, 20);

/// A message delivered to a local subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipEvent {
    /// Its id (publisher and sequence number).
    pub id: MessageId,
    /// The direct peer it came from.
    pub from: PeerId,
    /// The topic.
    pub topic: String,
    /// The body.
    pub data: Vec<u8>,
}

/// A frame queued for a peer.
enum Out {
    Message(Arc<GossipMessage>),
    IHave(IHave),
    IWant(IWant),
}

/// A gossip peer: its channel, the queue of frames for it, and whether it
/// speaks [`REPAIR_NAME`].
struct Peer {
    channel: Channel,
    queue: mpsc::Sender<Out>,
    repair: bool,
}

struct Inner {
    keypair: Keypair,
    state: Mutex<GossipState>,
    peers: Mutex<HashMap<PeerId, Peer>>,
    subscribers: Mutex<HashMap<String, Vec<mpsc::Sender<GossipEvent>>>>,
    /// `knot_gossip_messages_total{result}`.
    metrics: Family<Labels, Counter>,
}

/// Gossip on a node: the driver over its channels and the [`Service`] that
/// runs it (add a clone with
/// [`NodeBuilder::service`](knotwork_node::NodeBuilder::service)); cheap to
/// clone.
///
/// ```
/// use knotwork_core::{Keypair, MemoryTransport};
/// use knotwork_gossip::{Gossip, GossipConfig};
/// use knotwork_node::Node;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = MemoryTransport::new();
/// let (a_key, b_key) = (Keypair::generate()?, Keypair::generate()?);
/// let a_gossip = Gossip::new(a_key.clone(), GossipConfig::default());
/// let b_gossip = Gossip::new(b_key.clone(), GossipConfig::default());
/// let a = Node::builder(a_key).transport(net.clone()).listen("mem/0".parse()?)
///     .service(a_gossip.clone()).start().await?;
/// let b = Node::builder(b_key).transport(net).service(b_gossip.clone()).start().await?;
/// let mut news = a_gossip.subscribe("news");
/// b.connect(&a.listen_addrs()[0]).await?;
/// while b_gossip.peers().is_empty() {
///     tokio::task::yield_now().await;
/// }
/// b_gossip.publish("news", b"hello".to_vec()).await?;
/// assert_eq!(news.recv().await.ok_or("no message")?.data, b"hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Gossip {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("peers", &self.peers().len())
            .finish_non_exhaustive()
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The first seq of a publisher: the wall clock in nanoseconds, so a
/// restarted publisher continues above its old seqs (receivers refuse seqs
/// below their replay window).
fn first_seq() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Gossip {
    /// Gossip signed with `keypair` (the node's identity: give the same one
    /// to [`Node::builder`](knotwork_node::Node::builder)).
    pub fn new(keypair: Keypair, config: GossipConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                keypair,
                state: Mutex::new(GossipState::new(config, first_seq())),
                peers: Mutex::new(HashMap::new()),
                subscribers: Mutex::new(HashMap::new()),
                metrics: Family::default(),
            }),
        }
    }

    fn count(&self, result: &'static str) {
        self.inner
            .metrics
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    /// Peers connected over channels that run gossip.
    pub fn peers(&self) -> Vec<PeerId> {
        lock(&self.inner.peers).keys().copied().collect()
    }

    /// Receives the messages of `topic` published by others from now on.
    pub fn subscribe(&self, topic: &str) -> mpsc::Receiver<GossipEvent> {
        let capacity = lock(&self.inner.state).config.subscriber_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        lock(&self.inner.subscribers)
            .entry(topic.to_owned())
            .or_default()
            .push(tx);
        rx
    }

    /// Publishes `data` on `topic`; returns its id and how many peers it
    /// was queued for (never waits for a slow peer: see [`GossipConfig::peer_queue`]).
    pub async fn publish(
        &self,
        topic: &str,
        data: Vec<u8>,
    ) -> Result<(MessageId, usize), GossipError> {
        let peers = self.peers();
        let (msg, targets) =
            lock(&self.inner.state).publish(&self.inner.keypair, topic, data, now(), &peers)?;
        let id = MessageId {
            origin: self.inner.keypair.peer_id(),
            seq: msg.seq,
        };
        self.count("published");
        let sent = self.send(msg, &targets);
        // Let the peers' writers run before a tight publish loop goes on.
        tokio::task::yield_now().await;
        Ok((id, sent))
    }

    /// Queues `msg` for each of `targets`; a peer whose queue is full
    /// misses it (counted as `peer_queue_full`). Returns how many got it.
    fn send(&self, msg: GossipMessage, targets: &[PeerId]) -> usize {
        let msg = Arc::new(msg);
        targets
            .iter()
            .filter(|p| self.queue(p, Out::Message(msg.clone())))
            .count()
    }

    /// Queues `out` for `peer`; whether it was queued (a full queue counts
    /// as `peer_queue_full`).
    fn queue(&self, peer: &PeerId, out: Out) -> bool {
        let peers = lock(&self.inner.peers);
        let Some(peer) = peers.get(peer) else {
            return false;
        };
        match peer.queue.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.count("peer_queue_full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn deliver(&self, event: GossipEvent) {
        let mut subs = lock(&self.inner.subscribers);
        if let Some(list) = subs.get_mut(&event.topic) {
            list.retain(|tx| !tx.is_closed());
            for tx in list.iter() {
                if tx.try_send(event.clone()).is_err() {
                    self.count("subscriber_full");
                }
            }
        }
    }

    async fn handle(&self, channel: &Channel, mut msg: GossipMessage) {
        let from = channel.remote_peer_id();
        // The signature is verified outside the state lock, which every
        // channel shares.
        let checked = lock(&self.inner.state).check(from, &msg, now());
        let mut repaired = false;
        let result = match checked {
            Ok(checked) => {
                let verified = checked.verify(&msg);
                let peers = self.peers();
                let mut state = lock(&self.inner.state);
                let result = state.accept(from, &mut msg, verified, now(), &peers);
                if result.is_ok()
                    && let Ok(origin) = PeerId::from_bytes(&msg.origin)
                {
                    let id = MessageId {
                        origin,
                        seq: msg.seq,
                    };
                    repaired = state.answers_want(from, &id);
                }
                result
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(targets) => {
                self.count("delivered");
                if repaired {
                    self.count("repaired");
                }
                if let Ok(origin) = PeerId::from_bytes(&msg.origin) {
                    self.deliver(GossipEvent {
                        id: MessageId {
                            origin,
                            seq: msg.seq,
                        },
                        from,
                        topic: msg.topic.clone(),
                        data: msg.data.clone(),
                    });
                }
                self.send(msg, &targets);
            }
            Err(GossipError::Duplicate) => self.count("duplicate"),
            Err(GossipError::Stale) => self.count("stale"),
            Err(GossipError::Throttled) => self.count("throttled"),
            Err(GossipError::SenderThrottled) => self.count("sender_throttled"),
            Err(GossipError::OriginBanned) => {
                self.count("banned");
                if msg.origin == *from.as_bytes() {
                    tracing::info!(peer = %from.short(), addr = %channel.remote_addr(), "gossip flood: closing");
                    channel.close_misbehaving("gossip_flood").await;
                }
            }
            Err(GossipError::SenderBanned) => close_invalid(self, channel).await,
            Err(e) => {
                tracing::debug!(peer = %from.short(), "gossip message refused: {e}");
                self.count("invalid");
            }
        }
    }

    /// The protocol on one channel: subscribes, starts the writer of the
    /// peer's queue, then returns the job.
    fn protocol(&self, channel: &Channel) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut messages = channel.subscribe::<GossipMessage>();
        let this = self.clone();
        let channel = channel.clone();
        let capacity = lock(&this.inner.state).config.peer_queue.max(1);
        let (queue, mut queued) = mpsc::channel::<Out>(capacity);
        let writer = channel.clone();
        channel.spawn(async move {
            while let Some(out) = queued.recv().await {
                let sent = match out {
                    Out::Message(msg) => writer.send(&*msg).await,
                    Out::IHave(ihave) => writer.send(&ihave).await,
                    Out::IWant(iwant) => writer.send(&iwant).await,
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        lock(&this.inner.peers).insert(
            channel.remote_peer_id(),
            Peer {
                channel: channel.clone(),
                queue,
                repair: channel.speaks(REPAIR_NAME),
            },
        );
        async move {
            let _registered = Registered {
                gossip: this.clone(),
                channel: channel.clone(),
            };
            while let Some(msg) = messages.recv().await {
                this.handle(&channel, msg).await;
            }
        }
    }
}

impl Gossip {
    /// Loss repair on one channel: answers the peer's IHAVEs with IWANTs
    /// and the kept messages it lacks, and its IWANTs with kept messages,
    /// through its queue.
    fn repair(&self, channel: &Channel) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut ihaves = channel.subscribe::<IHave>();
        let mut iwants = channel.subscribe::<IWant>();
        let this = self.clone();
        let channel = channel.clone();
        async move {
            loop {
                let from = channel.remote_peer_id();
                let result = tokio::select! {
                    Some(ihave) = ihaves.recv() => {
                        let result = lock(&this.inner.state).on_ihave(from, &ihave, now());
                        result.map(|answer| {
                            if let Some(iwant) = answer.want
                                && this.queue(&from, Out::IWant(iwant))
                            {
                                this.count("iwant");
                            }
                            for msg in answer.push {
                                if this.queue(&from, Out::Message(Arc::new(msg))) {
                                    this.count("pushed");
                                }
                            }
                        })
                    }
                    Some(iwant) = iwants.recv() => {
                        let result = lock(&this.inner.state).on_iwant(from, &iwant, now());
                        result.map(|answers| {
                            for msg in answers {
                                this.queue(&from, Out::Message(Arc::new(msg)));
                            }
                        })
                    }
                    else => break,
                };
                match result {
                    Ok(()) => {}
                    Err(GossipError::SenderBanned) => {
                        close_invalid(&this, &channel).await;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %from.short(), "gossip repair refused: {e}");
                        this.count("invalid");
                    }
                }
            }
        }
    }

    /// One repair round: IHAVEs to a few peers that speak repair.
    fn repair_tick(&self) {
        let peers: Vec<PeerId> = lock(&self.inner.peers)
            .iter()
            .filter(|(_, p)| p.repair)
            .map(|(id, _)| *id)
            .collect();
        let rounds = lock(&self.inner.state).repair_tick(now(), &peers);
        for (peer, ihave) in rounds {
            if self.queue(&peer, Out::IHave(ihave)) {
                self.count("ihave");
            }
        }
    }
}

/// Closes `channel` for bad signatures, malformed messages or too many
/// signature checks (counted as `invalid`).
async fn close_invalid(gossip: &Gossip, channel: &Channel) {
    gossip.count("invalid");
    let from = channel.remote_peer_id();
    tracing::info!(peer = %from.short(), addr = %channel.remote_addr(), "gossip: bad signatures, malformed messages or too many checks: closing");
    channel.close_misbehaving("gossip_invalid").await;
}

/// Removes a channel from the gossip peers when its job ends or is aborted.
struct Registered {
    gossip: Gossip,
    channel: Channel,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let peer = self.channel.remote_peer_id();
        let removed = {
            let mut map = lock(&self.gossip.inner.peers);
            let ours = map
                .get(&peer)
                .is_some_and(|p| p.channel.same(&self.channel));
            if ours {
                map.remove(&peer);
            }
            ours
        };
        if removed {
            lock(&self.gossip.inner.state).forget(&peer);
        }
    }
}

impl Service for Gossip {
    fn setup(&self, setup: &mut Setup<'_>) {
        setup.metrics().register(
            "gossip_messages",
            "Gossip messages, by what became of them",
            self.inner.metrics.clone(),
        );
        setup.default_budget::<GossipMessage>(BUDGET);
        setup.default_budget::<IHave>(REPAIR_BUDGET);
        setup.default_budget::<IWant>(REPAIR_BUDGET);
        let gossip = self.clone();
        setup.protocol(NAME, Sessions::ALL, move |ch: &Channel| gossip.protocol(ch));
        let gossip = self.clone();
        setup.protocol(REPAIR_NAME, Sessions::ALL, move |ch: &Channel| {
            gossip.repair(ch)
        });
    }

    /// Starts the repair rounds, one per [`GossipConfig::repair_interval`],
    /// stopped with the node.
    fn start(&self, node: &NodeHandle) {
        let this = self.clone();
        let period = lock(&self.inner.state).config.repair_interval;
        node.spawn(async move {
            let mut ticks = tokio::time::interval(period.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                this.repair_tick();
            }
        });
    }
}

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
