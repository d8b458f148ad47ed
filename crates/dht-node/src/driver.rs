//! The task that owns the core: feeds it messages, calls and timeouts,
//! sends what it wants sent, answers finished queries; see the crate docs.
//!
//! It never waits on a peer. Messages come from every channel's
//! subscription, read round robin ([`SelectAll`]); responses go back over
//! the channel their request came on, or are dropped; requests go into the
//! peer's queue ([`Link::try_send`]), or to a dial job when the peer is not
//! connected: one job per peer being dialed, at most [`MAX_DIALS`] at once,
//! each holding at most [`DIAL_QUEUE`] messages for the new channel.

use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use knotwork_core::{DiscoveredPeer, DiscoveryEvent, DiscoverySource, Keypair, PeerAddr, PeerId};
use knotwork_discovery_dht::{Event, QueryId, Transmit};
use knotwork_node::meter::{Meter, MeterConfig, Verdict};
use knotwork_node::{AddrScope, DialCause, DialOpts, NodeError, NodeHandle, Subscription};
use tokio::sync::mpsc::error::TrySendError;

use super::*;
use crate::link::{Link, hold_to_scope, inbound, reachable, serves};

/// Peers being dialed at once, at most; a request to one more is dropped
/// (the core's request timeout notices).
pub(crate) const MAX_DIALS: usize = 16;
/// Messages waiting for one dial, at most.
pub(crate) const DIAL_QUEUE: usize = 4;

/// A channel's messages as the driver reads them; `None` once it closed.
type Incoming = BoxStream<'static, (Arc<Link>, Option<DhtMessage>)>;

/// The task that owns the core.
pub(crate) struct Driver {
    core: Dht,
    node: NodeHandle,
    metrics: DhtMetrics,
    keypair: Keypair,
    clock: Arc<dyn Clock>,
    /// Misbehaviour settings of the node's channels.
    meter: MeterConfig,
    /// Misbehaviour scores of peers that sent refused messages.
    meters: HashMap<PeerId, Meter>,
    /// Calls waiting for their query, with the query's kind.
    waiting: HashMap<QueryId, (Waiting, &'static str)>,
    bootstraps: Vec<Reply<usize>>,
    events: broadcast::Sender<DiscoveryEvent>,
    /// The newest open channel to each peer.
    links: HashMap<PeerId, Arc<Link>>,
    /// Every open channel's messages.
    incoming: SelectAll<Incoming>,
    /// Peers being dialed, and the queue of their dial job.
    dials: HashMap<PeerId, mpsc::Sender<DhtMessage>>,
}

impl Driver {
    pub(crate) fn new(
        core: Dht,
        node: NodeHandle,
        keypair: Keypair,
        clock: Arc<dyn Clock>,
        events: broadcast::Sender<DiscoveryEvent>,
        metrics: DhtMetrics,
    ) -> Self {
        Self {
            core,
            meter: node.config().channel.meter,
            node,
            metrics,
            keypair,
            clock,
            meters: HashMap::new(),
            waiting: HashMap::new(),
            bootstraps: Vec::new(),
            events,
            links: HashMap::new(),
            incoming: SelectAll::new(),
            dials: HashMap::new(),
        }
    }

    /// Feeds inputs and timeouts to the core and drains it, until the node
    /// shuts down.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        loop {
            self.drain(None);
            let wake = self
                .core
                .poll_timeout()
                .map(|t| t.saturating_since(self.clock.now()));
            let timer = async {
                match wake {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Link(link, messages)) => self.link(link, messages),
                    Some(Input::Call(call)) => self.call(self.clock.now(), call),
                    None => return,
                },
                Some((link, msg)) = self.incoming.next(), if !self.incoming.is_empty() => match msg {
                    Some(msg) => self.message(&link, msg),
                    None => self.unlink(&link),
                },
                () = timer => self.core.handle_timeout(self.clock.now()),
            }
        }
    }

    /// A channel opened: read its messages, send to the peer through it,
    /// and put the peer in the table where it is reached.
    fn link(&mut self, link: Arc<Link>, messages: Subscription<DhtMessage>) {
        let peer = link.peer();
        let end = futures::stream::once(std::future::ready((link.clone(), None)));
        let stream =
            futures::stream::unfold((messages, link.clone()), |(mut sub, link)| async move {
                let msg = sub.recv().await?;
                Some(((link.clone(), Some(msg)), (sub, link)))
            });
        self.incoming.push(Box::pin(stream.chain(end)));
        if link.serves
            && !link.addrs.is_empty()
            && let Err(e) = self.core.add_peer(self.clock.now(), peer, &link.addrs)
        {
            tracing::debug!(%peer, "dht: not added: {e}");
        }
        self.links.insert(peer, link);
    }

    /// A channel closed: forget it, unless a newer one replaced it.
    fn unlink(&mut self, link: &Arc<Link>) {
        let peer = link.peer();
        if self.links.get(&peer).is_some_and(|l| Arc::ptr_eq(l, link)) {
            self.links.remove(&peer);
        }
    }

    /// A message from `link`'s peer.
    fn message(&mut self, link: &Arc<Link>, msg: DhtMessage) {
        let now = self.clock.now();
        let msg = inbound(link, msg);
        if let Err(e) = self.core.handle_message(now, link.peer(), link.addr(), msg) {
            self.refused(&link.channel, &e);
        }
        self.drain(Some(link));
    }

    /// Counts a refused message; if it was the sender's fault, charges the
    /// sender and closes its channel at the ban threshold.
    fn refused(&mut self, channel: &Channel, e: &DhtError) {
        let peer = channel.remote_peer_id();
        let (reason, offence) = offence(e);
        self.metrics.refused(reason);
        let Some(offence) = offence else {
            tracing::debug!(peer = %peer.short(), reason, "dht: message refused: {e}");
            return;
        };
        tracing::info!(peer = %peer.short(), reason, "dht: misbehaviour: {e}");
        let now = tokio::time::Instant::now().into_std();
        if self.meters.len() >= MAX_METERS {
            let node = &self.node;
            self.meters.retain(|p, _| node.channel(p).is_some());
        }
        let config = self.meter;
        let verdict = self
            .meters
            .entry(peer)
            .or_insert_with(|| Meter::new(config, now))
            .offend(offence, now);
        if verdict == Verdict::Ban {
            self.meters.remove(&peer);
            tracing::info!(peer = %peer.short(), "dht: misbehaviour threshold reached: closing");
            let channel = channel.clone();
            self.node
                .spawn(async move { channel.close_misbehaving(reason).await });
        }
    }

    fn call(&mut self, now: Time, call: Call) {
        // (the query, who waits for it, its kind for the metrics)
        let started = match call {
            Call::Put(key, value, tx) => {
                let ttl = RECORD_TTL.min(self.core.config().record_limits.max_ttl);
                let limits = &self.core.config().record_limits;
                let query = Record::sign(&self.keypair, key, value, now + ttl, limits)
                    .and_then(|r| self.core.put_record(now, r));
                (query, Waiting::Stored(tx), "put")
            }
            Call::Get(key, by, tx) => {
                let query = match by {
                    Some(publisher) => self.core.get_record_by(now, &key, publisher),
                    None => self.core.get_record(now, &key),
                };
                (query, Waiting::Record(tx), "get")
            }
            Call::Provide(key, tx) => {
                (self.core.provide(now, &key), Waiting::Stored(tx), "provide")
            }
            Call::Providers(key, tx) => (
                self.core.get_providers(now, &key),
                Waiting::Peers(tx),
                "providers",
            ),
            Call::FindNode(target, tx) => (
                Ok(self.core.find_node(now, target)),
                Waiting::Peers(tx),
                "find_node",
            ),
            Call::Bootstrap(tx) => {
                if self.core.table().is_empty() {
                    self.add_connected(now);
                }
                self.core.bootstrap(now);
                self.bootstraps.push(tx);
                return;
            }
            Call::Table(tx) => {
                let _ = tx.send(Ok(self.core.table().iter().map(|e| e.info()).collect()));
                return;
            }
            Call::Held(key, tx) => {
                let record = self.core.store().get(&Key::hash(&key), now).cloned();
                let _ = tx.send(Ok(record));
                return;
            }
        };
        let (query, waiting, kind) = started;
        self.metrics.query_started(kind);
        match query {
            Ok(id) => {
                self.waiting.insert(id, (waiting, kind));
            }
            Err(e) => {
                self.metrics.query_finished(kind, "error", Duration::ZERO);
                waiting.fail(e);
            }
        }
    }

    /// Adds every connected peer that runs the DHT, where it is reached (a
    /// bootstrap with an empty table, before the channels' own links
    /// arrived).
    fn add_connected(&mut self, now: Time) {
        for ch in self.node.channels() {
            let addrs = reachable(ch.info());
            if serves(ch.info()) && !addrs.is_empty() {
                let _ = self.core.add_peer(now, ch.remote_peer_id(), &addrs);
            }
        }
    }

    /// Sends what the core wants sent (responses only over `origin`, the
    /// channel whose message the core just handled) and answers finished
    /// queries.
    fn drain(&mut self, origin: Option<&Arc<Link>>) {
        while let Some(t) = self.core.poll_transmit() {
            if t.is_response() {
                match origin {
                    Some(link) if link.peer() == t.to => self.respond(link, t.message),
                    _ => self.metrics.dropped("no_channel"),
                }
            } else {
                self.request(t);
            }
        }
        while let Some(event) = self.core.poll_event() {
            self.event(event);
        }
        let (records, table) = (self.core.store().len(), self.core.table().len());
        self.metrics.state(records, table);
    }

    /// Queues a response for the peer that asked, the peers it lists held
    /// to what that peer may be told.
    fn respond(&self, link: &Link, mut msg: DhtMessage) {
        hold_to_scope(&mut msg, link.scope);
        if !link.try_send(msg) {
            self.metrics.dropped("queue_full");
        }
    }

    /// Sends a request over the peer's channel, or has the peer dialed.
    fn request(&mut self, t: Transmit) {
        let mut msg = t.message;
        // (A closing channel's link is left for a dial.)
        if let Some(link) = self.links.get(&t.to).filter(|l| !l.is_closed()) {
            if !link.try_send(msg) {
                self.metrics.dropped("queue_full");
            }
            return;
        }
        if let Some(queue) = self.dials.get(&t.to) {
            match queue.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => return self.metrics.dropped("dial_queue_full"),
                // That dial is over.
                Err(TrySendError::Closed(m)) => msg = m,
            }
        }
        if self.dials.len() >= MAX_DIALS {
            self.dials.retain(|_, q| !q.is_closed());
            if self.dials.len() >= MAX_DIALS {
                return self.metrics.dropped("dial_limit");
            }
        }
        let (queue, rx) = mpsc::channel(DIAL_QUEUE);
        let _ = queue.try_send(msg);
        self.dials.insert(t.to, queue);
        let scope = t.heard_from.as_ref().map(AddrScope::of);
        self.node
            .spawn(dial(self.node.clone(), t.to, t.addrs, scope, rx));
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::QueryFinished { id, result, stats } => {
                if let Some((waiting, kind)) = self.waiting.remove(&id) {
                    let outcome = outcome(&result, &stats);
                    self.metrics.query_finished(kind, outcome, stats.duration);
                    waiting.answer(result);
                }
            }
            Event::Bootstrapped { peers } => {
                for tx in self.bootstraps.drain(..) {
                    let _ = tx.send(Ok(peers));
                }
            }
            Event::PeerAdded(peer) => {
                let addrs = self
                    .core
                    .table()
                    .get(&peer)
                    .map(|e| e.addrs.to_vec())
                    .unwrap_or_default();
                let _ = self.events.send(DiscoveryEvent::Discovered(DiscoveredPeer {
                    peer_id: peer,
                    addrs,
                    source: DiscoverySource::Dht,
                }));
            }
            Event::PeerEvicted(peer) => {
                let _ = self.events.send(DiscoveryEvent::Expired {
                    peer_id: peer,
                    source: DiscoverySource::Dht,
                });
            }
            _ => {}
        }
    }
}

impl Waiting {
    fn fail(self, e: DhtError) {
        let _ = match self {
            Self::Stored(tx) => tx.send(Err(e)).is_ok(),
            Self::Record(tx) => tx.send(Err(e)).is_ok(),
            Self::Peers(tx) => tx.send(Err(e)).is_ok(),
        };
    }

    /// Answers the call with what its query found. A result of another
    /// kind than the call's cannot happen; the call would see the driver gone.
    fn answer(self, result: QueryResult) {
        let _ = match (self, result) {
            (
                Self::Stored(tx),
                QueryResult::PutValue { stored, .. } | QueryResult::AddProvider { stored, .. },
            ) => tx.send(Ok(stored)).is_ok(),
            (Self::Record(tx), QueryResult::GetValue { record, .. }) => tx.send(Ok(record)).is_ok(),
            (
                Self::Peers(tx),
                QueryResult::FindNode { closest: peers, .. }
                | QueryResult::GetProviders {
                    providers: peers, ..
                },
            ) => tx.send(Ok(peers)).is_ok(),
            _ => false,
        };
    }
}

/// A dial job: a channel to `peer` through the first of `addrs` that
/// reaches it, by the node's dial policy (the DHT's budget, one dial per
/// address, and, for addresses a peer listed, that peer's `scope`); then
/// the queued messages go over it. Once the channel is up the driver sends
/// through its link; a failed dial drops the queue (the core's request
/// timeouts notice).
async fn dial(
    node: NodeHandle,
    peer: PeerId,
    addrs: Vec<PeerAddr>,
    scope: Option<AddrScope>,
    mut queue: mpsc::Receiver<DhtMessage>,
) {
    let mut channel = None;
    for addr in &addrs {
        let mut opts = DialOpts::new(DialCause::Service(NAME)).peer(peer);
        if let Some(scope) = scope {
            opts = opts.heard_from(scope);
        }
        match node.dial(addr, opts).await {
            Ok(ch) => {
                channel = Some(ch);
                break;
            }
            Err(NodeError::ShuttingDown) => break,
            Err(e) => tracing::debug!(%addr, peer = %peer.short(), "dht: dial failed: {e}"),
        }
    }
    queue.close();
    while let Some(msg) = queue.recv().await {
        if let Some(ch) = &channel
            && ch.send(&msg).await.is_err()
        {
            break;
        }
    }
}
