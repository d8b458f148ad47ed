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
//! [`PeerId`] are ignored. Each source's last report time and signal strength
//! (BLE's RSSI) are kept: [`DiscoveredInfo::last_seen`] is the newest over the
//! sources, [`DiscoveredInfo::rssi`] the newest measured.
//!
//! Sources can be preferred ([`DiscoveryConfig::prefer`]): a peer's addresses
//! are listed source by source in that order (unlisted sources last, as
//! equals), and the dialer tries them in that order, ranking by
//! [`NodeConfig::dial_preference`](crate::NodeConfig::dial_preference) only
//! among addresses of equally preferred sources.
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
use std::time::{Duration, Instant as StdInstant};

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
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// How often each source's [`Discovery::discover`] is polled while it works.
    pub poll_interval: Duration,
    /// Retry schedule of a source whose announce or discover failed.
    pub backoff: BackoffConfig,
    /// Capacity of the [`UnifiedEvent`] broadcast; a receiver that falls
    /// further behind gets `RecvError::Lagged`.
    pub event_capacity: usize,
    /// Sources whose addresses are dialed first, most preferred first (for
    /// example BLE and mDNS before the DHT); unlisted sources come after,
    /// as equals. Empty (the default): every source is equal.
    pub prefer: Vec<DiscoverySource>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
            event_capacity: 256,
            prefer: Vec::new(),
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
    /// Every address known for it (union over its sources), in the order of
    /// [`DiscoveryConfig::prefer`].
    pub addrs: Vec<PeerAddr>,
    /// The sources that report it.
    pub sources: Vec<DiscoverySource>,
    /// When a source last reported it.
    pub last_seen: StdInstant,
    /// The signal strength (dBm) of the newest report that measured one.
    pub rssi: Option<i16>,
}

/// What one source last reported about a peer.
#[derive(Clone, Debug)]
struct Report {
    addrs: Vec<PeerAddr>,
    at: StdInstant,
    rssi: Option<i16>,
}

/// The sans-IO merge of discovery reports by [`PeerId`]; see the module docs.
#[derive(Debug)]
pub struct DiscoveryMerge {
    local: PeerId,
    prefer: Vec<DiscoverySource>,
    peers: HashMap<PeerId, BTreeMap<DiscoverySource, Report>>,
}

impl DiscoveryMerge {
    /// An empty merge for the node `local` (whose own reports are ignored)
    /// that lists addresses in the order of `prefer` (see
    /// [`DiscoveryConfig::prefer`]).
    pub fn new(local: PeerId, prefer: Vec<DiscoverySource>) -> Self {
        Self {
            local,
            prefer,
            peers: HashMap::new(),
        }
    }

    /// Handles one event of a source, received at `now`.
    pub fn handle_event(&mut self, event: DiscoveryEvent, now: StdInstant) -> Option<UnifiedEvent> {
        match event {
            DiscoveryEvent::Discovered(found) => self.handle_discovered(found, now),
            DiscoveryEvent::Expired { peer_id, source } => self.handle_expired(peer_id, source),
            _ => None,
        }
    }

    /// Handles a report, received at `now`, that `found.source` sees
    /// `found.peer_id` at `found.addrs`.
    pub fn handle_discovered(
        &mut self,
        found: DiscoveredPeer,
        now: StdInstant,
    ) -> Option<UnifiedEvent> {
        if found.peer_id == self.local {
            return None;
        }
        let entry = self.peers.entry(found.peer_id).or_default();
        let first = entry.is_empty();
        let before = union(entry, &self.prefer);
        let mut addrs = found.addrs;
        addrs.retain(|a| reportable(found.source, a));
        dedup_in_order(&mut addrs);
        let report = Report {
            addrs,
            at: now,
            rssi: found.rssi,
        };
        entry.insert(found.source, report);
        let after = union(entry, &self.prefer);
        let grew = after.iter().any(|a| !before.contains(a));
        (first || grew).then(|| UnifiedEvent::PeerDiscovered {
            peer: found.peer_id,
            addrs: after,
            sources: entry.keys().copied().collect(),
        })
    }

    /// How preferred `source` is: its place in the preference list, or
    /// after all of them.
    fn rank(&self, source: DiscoverySource) -> usize {
        rank(&self.prefer, source)
    }

    /// The addresses to dial `peer` at, in order: by source preference, then
    /// by `scheme_rank` among equally preferred sources; no repeats.
    pub fn dial_order(
        &self,
        peer: &PeerId,
        scheme_rank: impl Fn(&PeerAddr) -> usize,
    ) -> Vec<PeerAddr> {
        let Some(entry) = self.peers.get(peer) else {
            return Vec::new();
        };
        let mut ranked: Vec<(usize, usize, PeerAddr)> = entry
            .iter()
            .flat_map(|(source, report)| report.addrs.iter().map(|a| (self.rank(*source), a)))
            .map(|(rank, a)| (rank, scheme_rank(a), a.clone()))
            .collect();
        ranked.sort_by_key(|(rank, scheme, _)| (*rank, *scheme));
        let mut addrs: Vec<PeerAddr> = ranked.into_iter().map(|(_, _, a)| a).collect();
        dedup_in_order(&mut addrs);
        addrs
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
        let entry = self.peers.get(peer)?;
        let newest = entry.values().max_by_key(|r| r.at)?;
        Some(DiscoveredInfo {
            peer: *peer,
            addrs: union(entry, &self.prefer),
            sources: entry.keys().copied().collect(),
            last_seen: newest.at,
            rssi: entry
                .values()
                .filter(|r| r.rssi.is_some())
                .max_by_key(|r| r.at)
                .and_then(|r| r.rssi),
        })
    }

    /// Every known peer, ordered by [`PeerId`].
    pub fn peers(&self) -> Vec<DiscoveredInfo> {
        let ids: BTreeSet<&PeerId> = self.peers.keys().collect();
        ids.into_iter().filter_map(|id| self.peer(id)).collect()
    }
}

/// `source`'s place in `prefer`, or after all of them.
fn rank(prefer: &[DiscoverySource], source: DiscoverySource) -> usize {
    prefer
        .iter()
        .position(|s| *s == source)
        .unwrap_or(prefer.len())
}

/// The addresses of every source, the preferred sources' first, without
/// repeats.
fn union(entry: &BTreeMap<DiscoverySource, Report>, prefer: &[DiscoverySource]) -> Vec<PeerAddr> {
    let mut sources: Vec<(&DiscoverySource, &Report)> = entry.iter().collect();
    sources.sort_by_key(|(s, _)| rank(prefer, **s));
    let mut all: Vec<PeerAddr> = sources
        .into_iter()
        .flat_map(|(_, r)| r.addrs.iter().cloned())
        .collect();
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
            sources: Mutex::new(sources),
            merge: Mutex::new(DiscoveryMerge::new(local, config.prefer.clone())),
            events: broadcast::channel(config.event_capacity.max(1)).0,
            config,
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
    let config = shared.discovery.config.clone();
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

/// Whether `source` may report `addr`: within the source's scope (review
/// finding M3), and a BLE address only from a BLE scan (a device address is
/// what our radio saw; what a peer announces as `ble/…` is its own adapter).
fn reportable(source: DiscoverySource, addr: &PeerAddr) -> bool {
    let ble = matches!(addr, PeerAddr::Ble(_));
    AddrScope::of(addr).shareable_with(source_scope(source))
        && (!ble || source == DiscoverySource::Ble)
}

/// Merges one event, broadcasts the result and feeds the node.
fn handle(shared: &Arc<Shared>, event: DiscoveryEvent) {
    let now = Instant::now().into_std();
    let (unified, order) = {
        let mut merge = lock(&shared.discovery.merge);
        let Some(unified) = merge.handle_event(event, now) else {
            return;
        };
        let order = match &unified {
            UnifiedEvent::PeerDiscovered { peer, .. } => {
                merge.dial_order(peer, |a| shared.config.scheme_rank(a))
            }
            _ => Vec::new(),
        };
        (unified, order)
    };
    if let UnifiedEvent::PeerDiscovered { peer, addrs, .. } = &unified {
        lock(&shared.hosts).add_grey(addrs.iter().cloned(), AddrScope::Loopback, now);
        dial(shared, *peer, order);
    }
    // No receiver is fine; a lagging receiver sees `Lagged`.
    let _ = shared.discovery.events.send(unified);
}

/// Dials `peer` at the first of `addrs` (in [`DiscoveryMerge::dial_order`])
/// that answers, if it is not connected, not being dialed, and an outbound
/// slot is free.
fn dial(shared: &Arc<Shared>, peer: PeerId, addrs: Vec<PeerAddr>) {
    if shared.shutdown.is_cancelled() || lock(&shared.peers).contains_key(&peer) {
        return;
    }
    let outbound = lock(&shared.peers)
        .values()
        .filter(|c| c.info().session == SessionKind::Outbound)
        .count();
    let own = shared.own_addrs();
    let candidates: Vec<PeerAddr> = addrs.into_iter().filter(|a| !own.contains(a)).collect();
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
