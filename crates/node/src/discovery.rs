//! Unified discovery: every configured [`Discovery`] source run side by side,
//! merged by [`PeerId`], feeding the host store and the dialer.
//!
//! # Algorithm
//! [`DiscoveryMerge`] is the sans-IO core. It keeps, for each peer, the
//! addresses each source reported. A report from a source replaces that
//! source's addresses; the peer's addresses are the union over its sources.
//! The first report of a peer, and any report that adds an address to the
//! union, yields [`UnifiedEvent::PeerDiscovered`]; a second source repeating
//! known addresses only adds itself to the peer's sources. An expiry removes
//! one source; when the last one goes the peer is forgotten and
//! [`UnifiedEvent::PeerExpired`] is yielded, once. Reports of our own
//! [`PeerId`] are ignored.
//!
//! The driver runs one task per source. It subscribes to the source's event
//! stream first (so nothing between the announcement and the first poll is
//! missed), announces the node's [`LocalPeerInfo`], then calls
//! [`Discovery::discover`] every [`DiscoveryConfig::poll_interval`] while
//! handling events in between. A failed announce or discover is retried on
//! the node's [`Backoff`] schedule; a failing source never stops the others.
//! A stream that ends is subscribed to again at the next attempt. Each
//! [`UnifiedEvent::PeerDiscovered`] puts the new addresses on the host
//! store's grey list and, when the peer is not connected and an outbound slot
//! is free, dials it as an outbound session.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use knotwork_core::{
    DiscoveredPeer, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySource, LocalPeerInfo,
    PeerAddr, PeerId,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::backoff::{Backoff, BackoffConfig};
use crate::dial::{DialCause, DialOpts};
use crate::hosts::AddrScope;
use crate::node::{Shared, lock};
use crate::registry::SessionKind;

/// Settings of unified discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// How often each source's [`Discovery::discover`] is polled while it works.
    pub poll_interval: Duration,
    /// Retry schedule of a source whose announce or discover failed.
    pub backoff: BackoffConfig,
    /// Capacity of the [`UnifiedEvent`] broadcast; a receiver that falls
    /// further behind gets `RecvError::Lagged`.
    pub event_capacity: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
            event_capacity: 256,
        }
    }
}

/// What unified discovery reports to applications.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnifiedEvent {
    /// A peer appeared, or one of its sources reported a new address.
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
        /// Every address known for it (union over its sources).
        addrs: Vec<PeerAddr>,
        /// The sources that report it.
        sources: Vec<DiscoverySource>,
    },
    /// The last source that reported the peer expired it.
    PeerExpired {
        /// The peer.
        peer: PeerId,
    },
}

/// A snapshot of one discovered peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredInfo {
    /// The peer.
    pub peer: PeerId,
    /// Every address known for it (union over its sources).
    pub addrs: Vec<PeerAddr>,
    /// The sources that report it.
    pub sources: Vec<DiscoverySource>,
}

/// The sans-IO merge of discovery reports by [`PeerId`]; see the module docs.
#[derive(Debug)]
pub struct DiscoveryMerge {
    local: PeerId,
    peers: HashMap<PeerId, BTreeMap<DiscoverySource, Vec<PeerAddr>>>,
}

impl DiscoveryMerge {
    /// An empty merge for the node `local` (whose own reports are ignored).
    pub fn new(local: PeerId) -> Self {
        Self {
            local,
            peers: HashMap::new(),
        }
    }

    /// Handles one event of a source.
    pub fn handle_event(&mut self, event: DiscoveryEvent) -> Option<UnifiedEvent> {
        match event {
            DiscoveryEvent::Discovered(found) => self.handle_discovered(found),
            DiscoveryEvent::Expired { peer_id, source } => self.handle_expired(peer_id, source),
            _ => None,
        }
    }

    /// Handles a report that `found.source` sees `found.peer_id` at `found.addrs`.
    pub fn handle_discovered(&mut self, found: DiscoveredPeer) -> Option<UnifiedEvent> {
        if found.peer_id == self.local {
            return None;
        }
        let entry = self.peers.entry(found.peer_id).or_default();
        let first = entry.is_empty();
        let before = union(entry);
        let mut addrs = found.addrs;
        dedup_in_order(&mut addrs);
        entry.insert(found.source, addrs);
        let after = union(entry);
        let grew = after.iter().any(|a| !before.contains(a));
        (first || grew).then(|| UnifiedEvent::PeerDiscovered {
            peer: found.peer_id,
            addrs: after,
            sources: entry.keys().copied().collect(),
        })
    }

    /// Handles `source` expiring `peer`.
    pub fn handle_expired(
        &mut self,
        peer: PeerId,
        source: DiscoverySource,
    ) -> Option<UnifiedEvent> {
        let entry = self.peers.get_mut(&peer)?;
        entry.remove(&source)?;
        if !entry.is_empty() {
            return None;
        }
        self.peers.remove(&peer);
        Some(UnifiedEvent::PeerExpired { peer })
    }

    /// What is known of `peer`.
    pub fn peer(&self, peer: &PeerId) -> Option<DiscoveredInfo> {
        self.peers.get(peer).map(|entry| DiscoveredInfo {
            peer: *peer,
            addrs: union(entry),
            sources: entry.keys().copied().collect(),
        })
    }

    /// Every known peer, ordered by [`PeerId`].
    pub fn peers(&self) -> Vec<DiscoveredInfo> {
        let ids: BTreeSet<&PeerId> = self.peers.keys().collect();
        ids.into_iter().filter_map(|id| self.peer(id)).collect()
    }
}

/// The addresses of every source, first-seen order, without repeats.
fn union(entry: &BTreeMap<DiscoverySource, Vec<PeerAddr>>) -> Vec<PeerAddr> {
    let mut all: Vec<PeerAddr> = entry.values().flatten().cloned().collect();
    dedup_in_order(&mut all);
    all
}

fn dedup_in_order(addrs: &mut Vec<PeerAddr>) {
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(a.clone()));
}

/// The node's discovery state: the sources to start, the merge and the
/// event broadcast.
pub(crate) struct UnifiedDiscovery {
    config: DiscoveryConfig,
    sources: Mutex<Vec<Arc<dyn Discovery>>>,
    merge: Mutex<DiscoveryMerge>,
    events: broadcast::Sender<UnifiedEvent>,
}

impl UnifiedDiscovery {
    pub(crate) fn new(
        local: PeerId,
        config: DiscoveryConfig,
        sources: Vec<Arc<dyn Discovery>>,
    ) -> Self {
        Self {
            config,
            sources: Mutex::new(sources),
            merge: Mutex::new(DiscoveryMerge::new(local)),
            events: broadcast::channel(config.event_capacity.max(1)).0,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<UnifiedEvent> {
        self.events.subscribe()
    }

    pub(crate) fn peers(&self) -> Vec<DiscoveredInfo> {
        lock(&self.merge).peers()
    }
}

/// Starts one task per configured source (once; later calls find none).
pub(crate) fn start(shared: &Arc<Shared>) {
    let sources = std::mem::take(&mut *lock(&shared.discovery.sources));
    for source in sources {
        shared.spawn_task(run_source(shared.clone(), source));
    }
}

/// One source's loop; see the module docs.
async fn run_source(shared: Arc<Shared>, source: Arc<dyn Discovery>) {
    let config = shared.discovery.config;
    let info = LocalPeerInfo {
        peer_id: shared.peer_id,
        addrs: shared.own_addrs().to_vec(),
    };
    let mut backoff = Backoff::new(config.backoff);
    let mut announced = false;
    let mut events: Option<BoxStream<'static, DiscoveryEvent>> = None;
    loop {
        let stream = events.get_or_insert_with(|| source.events());
        let attempt = async {
            if !announced {
                source.announce(&info).await?;
                announced = true;
            }
            source.discover().await
        };
        let next = match attempt.await {
            Ok(found) => {
                backoff.on_success();
                for peer in found {
                    handle(&shared, DiscoveryEvent::Discovered(peer));
                }
                Instant::now() + config.poll_interval
            }
            Err(e) => {
                log_failure(source.source(), &e);
                let at = backoff.on_failure(Instant::now().into_std(), fastrand::u64(..));
                Instant::from_std(at)
            }
        };
        let mut ended = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => break,
                () = shared.shutdown.cancelled() => return,
                event = stream.next() => match event {
                    Some(event) => handle(&shared, event),
                    None => {
                        tracing::debug!(source = %source.source(), "discovery event stream ended");
                        ended = true;
                        break;
                    }
                },
            }
        }
        if ended {
            // Wait out the scheduled time, then subscribe again.
            events = None;
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = shared.shutdown.cancelled() => return,
            }
        }
    }
}

fn log_failure(source: DiscoverySource, e: &DiscoveryError) {
    tracing::debug!(%source, "discovery source failed: {e}");
}

/// How far the addresses a source reports may be from us: the LAN for
/// mDNS and BLE (a LAN peer never makes us dial loopback); any scope for
/// the DHT, which filters what peers tell it by their own scope, and for
/// seeds and manual entries, which the user gave.
fn source_scope(source: DiscoverySource) -> AddrScope {
    match source {
        DiscoverySource::Mdns | DiscoverySource::Ble => AddrScope::Private,
        _ => AddrScope::Loopback,
    }
}

/// Merges one event, broadcasts the result and feeds the node. Addresses
/// out of the source's scope are dropped first (review finding M3).
fn handle(shared: &Arc<Shared>, mut event: DiscoveryEvent) {
    if let DiscoveryEvent::Discovered(found) = &mut event {
        let scope = source_scope(found.source);
        found
            .addrs
            .retain(|a| AddrScope::of(a).shareable_with(scope));
    }
    let Some(unified) = lock(&shared.discovery.merge).handle_event(event) else {
        return;
    };
    if let UnifiedEvent::PeerDiscovered { peer, addrs, .. } = &unified {
        let now = Instant::now().into_std();
        lock(&shared.hosts).add_grey(addrs.iter().cloned(), AddrScope::Loopback, now);
        dial(shared, *peer, addrs);
    }
    // No receiver is fine; a lagging receiver sees `Lagged`.
    let _ = shared.discovery.events.send(unified);
}

/// Dials `peer` at the first of `addrs` that answers, in the order of
/// [`NodeConfig::dial_preference`](crate::NodeConfig::dial_preference), if
/// it is not connected, not being dialed, and an outbound slot is free.
fn dial(shared: &Arc<Shared>, peer: PeerId, addrs: &[PeerAddr]) {
    if shared.shutdown.is_cancelled() || lock(&shared.peers).contains_key(&peer) {
        return;
    }
    let outbound = lock(&shared.peers)
        .values()
        .filter(|c| c.info().session == SessionKind::Outbound)
        .count();
    let own = shared.own_addrs();
    let mut candidates: Vec<PeerAddr> =
        addrs.iter().filter(|a| !own.contains(a)).cloned().collect();
    shared.config.dial_order(&mut candidates);
    if candidates.is_empty() {
        return;
    }
    {
        let dials = lock(&shared.dials);
        let dialing = dials.in_flight(DialCause::Slots) + dials.in_flight(DialCause::Discovery);
        if candidates.iter().any(|a| dials.is_dialing(a))
            || outbound + dialing >= shared.config.outbound_slots
        {
            return;
        }
    }
    let node = shared.clone();
    shared.spawn_task(async move {
        for addr in &candidates {
            let opts = DialOpts::new(DialCause::Discovery).peer(peer);
            match crate::session::dial(&node, addr, opts).await {
                Ok(_) => break,
                Err(e) => tracing::debug!(%addr, peer = %peer.short(), "discovered peer: dial failed: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    fn id() -> PeerId {
        Keypair::generate().unwrap().peer_id()
    }

    fn found(peer: PeerId, addrs: &[&str], source: DiscoverySource) -> DiscoveredPeer {
        DiscoveredPeer {
            peer_id: peer,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            source,
        }
    }

    #[test]
    fn second_source_with_known_addrs_adds_itself_silently() {
        let (me, p) = (id(), id());
        let mut m = DiscoveryMerge::new(me);
        let first = m.handle_discovered(found(p, &["mem/1"], DiscoverySource::Mdns));
        assert_eq!(
            first,
            Some(UnifiedEvent::PeerDiscovered {
                peer: p,
                addrs: vec!["mem/1".parse().unwrap()],
                sources: vec![DiscoverySource::Mdns],
            })
        );
        assert_eq!(
            m.handle_discovered(found(p, &["mem/1"], DiscoverySource::Dht)),
            None
        );
        let info = m.peer(&p).unwrap();
        assert_eq!(
            info.sources,
            vec![DiscoverySource::Mdns, DiscoverySource::Dht]
        );
        assert_eq!(info.addrs.len(), 1);
    }

    #[test]
    fn a_new_address_is_reported_with_the_union() {
        let (me, p) = (id(), id());
        let mut m = DiscoveryMerge::new(me);
        m.handle_discovered(found(p, &["mem/1"], DiscoverySource::Mdns));
        let event = m.handle_discovered(found(p, &["mem/2", "mem/1"], DiscoverySource::Dht));
        assert_eq!(
            event,
            Some(UnifiedEvent::PeerDiscovered {
                peer: p,
                addrs: vec!["mem/1".parse().unwrap(), "mem/2".parse().unwrap()],
                sources: vec![DiscoverySource::Mdns, DiscoverySource::Dht],
            })
        );
    }

    #[test]
    fn expiry_is_reported_once_when_the_last_source_goes() {
        let (me, p) = (id(), id());
        let mut m = DiscoveryMerge::new(me);
        m.handle_discovered(found(p, &["mem/1"], DiscoverySource::Mdns));
        m.handle_discovered(found(p, &["mem/1"], DiscoverySource::Dht));
        assert_eq!(m.handle_expired(p, DiscoverySource::Mdns), None);
        assert_eq!(m.handle_expired(p, DiscoverySource::Mdns), None);
        assert_eq!(
            m.handle_expired(p, DiscoverySource::Dht),
            Some(UnifiedEvent::PeerExpired { peer: p })
        );
        assert_eq!(m.handle_expired(p, DiscoverySource::Dht), None);
        assert!(m.peers().is_empty());
    }

    #[test]
    fn own_peer_id_is_ignored() {
        let me = id();
        let mut m = DiscoveryMerge::new(me);
        assert_eq!(
            m.handle_discovered(found(me, &["mem/1"], DiscoverySource::Mdns)),
            None
        );
        assert!(m.peer(&me).is_none());
    }

    #[test]
    fn a_source_dropping_an_address_shrinks_the_union() {
        let (me, p) = (id(), id());
        let mut m = DiscoveryMerge::new(me);
        m.handle_discovered(found(p, &["mem/1", "mem/2"], DiscoverySource::Mdns));
        assert_eq!(
            m.handle_discovered(found(p, &["mem/2"], DiscoverySource::Mdns)),
            None
        );
        assert_eq!(
            m.peer(&p).unwrap().addrs,
            vec!["mem/2".parse::<PeerAddr>().unwrap()]
        );
    }
}
