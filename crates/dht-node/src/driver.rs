//! The task that owns the core: feeds it inputs and timeouts, sends what
//! it wants sent, answers finished queries; see the crate docs.

use super::*;

/// The task that owns the core.
pub(crate) struct Driver {
    pub(crate) core: Dht,
    pub(crate) node: NodeHandle,
    pub(crate) metrics: DhtMetrics,
    pub(crate) keypair: Keypair,
    pub(crate) clock: Arc<dyn Clock>,
    /// Misbehaviour settings of the node's channels.
    pub(crate) meter: MeterConfig,
    /// Misbehaviour scores of peers that sent refused messages.
    pub(crate) meters: HashMap<PeerId, Meter>,
    /// Calls waiting for their query, with the query's kind.
    pub(crate) waiting: HashMap<QueryId, (Waiting, &'static str)>,
    pub(crate) bootstraps: Vec<Reply<usize>>,
    pub(crate) events: broadcast::Sender<DiscoveryEvent>,
}

impl Driver {
    /// Feeds inputs and timeouts to the core and drains it, until the node
    /// shuts down.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        loop {
            self.drain();
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
                    Some(input) => self.input(input),
                    None => return,
                },
                () = timer => self.core.handle_timeout(self.clock.now()),
            }
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::Connected { peer, addrs } => {
                if let Err(e) = self.core.add_peer(now, peer, &addrs) {
                    tracing::debug!(%peer, "dht: not added: {e}");
                }
            }
            Input::Message { channel, addr, msg } => {
                let peer = channel.remote_peer_id();
                if let Err(e) = self.core.handle_message(now, peer, addr, msg) {
                    self.refused(&channel, &e);
                }
            }
            Input::Call(call) => self.call(now, call),
        }
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
            tokio::spawn(async move { channel.close_misbehaving(reason).await });
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
            Call::Get(key, tx) => (self.core.get_record(now, &key), Waiting::Record(tx), "get"),
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

    /// Adds every connected peer that runs the DHT (a bootstrap with an
    /// empty table, before their channels' own announcements arrived).
    fn add_connected(&mut self, now: Time) {
        for ch in self.node.channels() {
            let version = &ch.info().version;
            if !version.protocols.iter().any(|p| p == NAME) {
                continue;
            }
            let addrs = reachable_at(
                version.parsed_listen_addrs().unwrap_or_default(),
                ch.remote_addr(),
            );
            if !addrs.is_empty() {
                let _ = self.core.add_peer(now, ch.remote_peer_id(), &addrs);
            }
        }
    }

    /// Sends what the core wants sent and answers finished queries.
    fn drain(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            transmit(&self.node, t);
        }
        while let Some(event) = self.core.poll_event() {
            self.event(event);
        }
        let (records, table) = (self.core.store().len(), self.core.table().len());
        self.metrics.state(records, table);
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

/// Sends `t` over the channel to its peer, dialing the peer first if there
/// is none. Runs on its own task so a slow peer never stalls the driver; a
/// failure is left to the core's request timeout.
fn transmit(node: &NodeHandle, t: Transmit) {
    let channel = node.channel(&t.to);
    let node = node.clone();
    tokio::spawn(async move {
        let channel = match channel {
            Some(channel) => Some(channel),
            None => dial(&node, &t.to, &t.addrs).await,
        };
        if let Some(channel) = channel
            && let Err(e) = channel.send(&t.message).await
        {
            tracing::debug!(peer = %t.to, "dht: send failed: {e}");
        }
    });
}

/// A channel to `peer` through the first of `addrs` that reaches it.
async fn dial(node: &NodeHandle, peer: &PeerId, addrs: &[PeerAddr]) -> Option<Channel> {
    for addr in addrs {
        let opts = DialOpts::new(DialCause::Service(NAME)).peer(*peer);
        match node.dial(addr, opts).await {
            Ok(channel) if channel.remote_peer_id() == *peer => return Some(channel),
            Err(NodeError::ShuttingDown) => return None,
            Ok(_) | Err(_) => {}
        }
    }
    None
}
