//! Gossip: topic-based publish/subscribe by bounded flooding.
//!
//! A publisher signs `(origin, seq, topic, data)` with its identity key and
//! sends the [`GossipMessage`] to at most [`GossipConfig::fanout`] gossip
//! peers chosen at random, with a hop budget of [`GossipConfig::ttl`]. A node
//! receiving a message checks, cheapest first: the topic length, the origin
//! key, whether the origin is banned, whether the message id `(origin, seq)`
//! is in its seen-cache (a duplicate is dropped), and the signature. A new
//! valid message enters the seen-cache (entries expire after
//! [`GossipConfig::seen_ttl`]; the cache holds at most
//! [`GossipConfig::seen_capacity`], oldest evicted first) and is charged to
//! its origin's token bucket ([`GossipConfig::origin_budget`], a
//! [`Meter`] per origin): over budget it is dropped (throttled) and the
//! origin collects misbehaviour points; at the threshold the origin is banned
//! for [`MeterConfig::ban_duration`] and, if it is a direct peer, its channel
//! is closed for misbehaviour (which puts it on the node's ban list). An
//! accepted message is delivered to the local subscribers of its topic and,
//! while hops remain, forwarded with `ttl - 1` to up to `fanout` random
//! gossip peers other than the sender and the origin. Every node relays every
//! topic; subscriptions only decide local delivery. Frames of direct peers are
//! also metered by the channel ([`BUDGET`]); so that a flood from many
//! origins, each within its own budget, is not relayed faster than a peer's
//! channel accepts (which would get this node banned by its honest peers),
//! messages to each direct peer are also limited by
//! [`GossipConfig::relay_budget`]: a peer without a token is skipped.
//!
//! [`GossipState`] is the sans-IO core (time and the peer list are
//! arguments, module `core`); [`Gossip`] is the driver over node channels
//! and the node [`Service`] that runs it.

mod core;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use knotwork_core::{Keypair, PeerId, lock};
use knotwork_node::metrics::Labels;
use knotwork_node::metrics::prometheus_client::metrics::counter::Counter;
use knotwork_node::metrics::prometheus_client::metrics::family::Family;
use knotwork_node::{Channel, Service, Sessions, Setup};
use tokio::sync::mpsc;

pub use crate::core::{
    BUDGET, GossipConfig, GossipError, GossipMessage, GossipState, MAX_DATA_LEN, MAX_TOPIC_LEN,
    MessageId, signed_bytes,
};

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/gossip";

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

struct Inner {
    keypair: Keypair,
    state: Mutex<GossipState>,
    channels: Mutex<HashMap<PeerId, Channel>>,
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

impl Gossip {
    /// Gossip signed with `keypair` (the node's identity: give the same one
    /// to [`Node::builder`](knotwork_node::Node::builder)).
    pub fn new(keypair: Keypair, config: GossipConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                keypair,
                state: Mutex::new(GossipState::new(config, fastrand::u64(..) >> 1)),
                channels: Mutex::new(HashMap::new()),
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
        lock(&self.inner.channels).keys().copied().collect()
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
    /// was sent to.
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
        Ok((id, self.send(&msg, &targets).await))
    }

    async fn send(&self, msg: &GossipMessage, targets: &[PeerId]) -> usize {
        let channels: Vec<Channel> = {
            let map = lock(&self.inner.channels);
            targets.iter().filter_map(|p| map.get(p).cloned()).collect()
        };
        let mut sent = 0;
        for ch in channels {
            if ch.send(msg).await.is_ok() {
                sent += 1;
            }
        }
        sent
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
        let peers = self.peers();
        let result = lock(&self.inner.state).handle_message(from, &mut msg, now(), &peers);
        match result {
            Ok(targets) => {
                self.count("delivered");
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
                self.send(&msg, &targets).await;
            }
            Err(GossipError::Duplicate) => self.count("duplicate"),
            Err(GossipError::Throttled) => self.count("throttled"),
            Err(GossipError::OriginBanned) => {
                self.count("banned");
                if msg.origin == *from.as_bytes() {
                    tracing::info!(peer = %from.short(), "gossip flood: closing");
                    channel.close_misbehaving("gossip_flood").await;
                }
            }
            Err(e) => {
                tracing::debug!(peer = %from.short(), "gossip message refused: {e}");
                self.count("invalid");
            }
        }
    }

    /// The protocol on one channel: subscribes, then returns the job.
    fn protocol(&self, channel: &Channel) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut messages = channel.subscribe::<GossipMessage>();
        let this = self.clone();
        let channel = channel.clone();
        lock(&this.inner.channels).insert(channel.remote_peer_id(), channel.clone());
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

/// Removes a channel from the gossip peers when its job ends or is aborted.
struct Registered {
    gossip: Gossip,
    channel: Channel,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut map = lock(&self.gossip.inner.channels);
        let peer = self.channel.remote_peer_id();
        if map.get(&peer).is_some_and(|c| c.same(&self.channel)) {
            map.remove(&peer);
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
        let gossip = self.clone();
        setup.protocol(NAME, Sessions::ALL, move |ch: &Channel| gossip.protocol(ch));
    }
}

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
