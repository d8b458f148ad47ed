//! knotwork-dht-node: the Kademlia DHT over node channels, a driver around
//! the sans-IO [`knotwork_discovery_dht::Dht`] core, as a knotwork-node
//! [`Service`] written against the node's public extension API. (Its own
//! crate, so the core crate stays free of tokio and of the node.)
//!
//! One tokio task, the driver, owns the core. Every channel runs the
//! `knotwork/dht` protocol, which registers the channel with the driver:
//! the driver reads the channel's DHT messages itself, round robin over all
//! channels (each channel's subscription is its bounded share: one that
//! floods waits on its own), and feeds them to the core with the sender's
//! [`PeerId`] from the authenticated channel and the address it is reached
//! at, as the node saw it: the address we dialed, or for an inbound
//! connection its IP with the ports it declares (never an address it only
//! claims). A channel to a peer that runs the DHT also puts the peer in the
//! routing table there. The driver then drains the core: a response goes
//! back over the channel its request came on, or nowhere (never by a
//! dial); a request goes into the peer's small queue, which the channel's
//! writer job empties (full: dropped, and the core's request timeout notices),
//! or, to a peer not connected, through the node's dial policy
//! ([`NodeHandle::dial`] with [`knotwork_node::DialCause::Service`] and the scope of the peer
//! that listed the address), at most a few dials at a time, each a reaped
//! node job. The driver never waits on a peer. Addresses a peer lists are
//! held to the scope of its connection (see `link`). Each finished query
//! answers the [`DhtHandle`] call that started it; the timer is armed from
//! `poll_timeout`. Time comes from the handle's
//! [`Clock`]: [`SystemClock`] (milliseconds since the UNIX epoch, as record
//! expiry is signed and compared across nodes) unless built with
//! [`DhtHandle::with_clock`]; a test passes a [`TokioClock`] and runs on
//! `tokio::time::pause`, so expiry and republishing happen on virtual time.
//!
//! A message the core refuses for the sender's fault (a bad signature, an
//! oversized record, more than k peers in a response, an unsolicited
//! response, a peer record signed by another peer, a peer entry flooding one
//! subnet, …) is logged with its reason, counted in
//! `knot_dht_refused_messages_total{reason}` and costs the sender
//! misbehaviour points on a [`knotwork_node::meter::Meter`] per peer (the node's meter settings);
//! at the ban threshold its channel is closed for misbehaviour, which bans
//! it (`knot_bans_total{reason}` names the refusal that tipped it). Refusals an honest peer can cause (an expired record, a key taken by
//! another publisher, a full store) cost nothing. Query counts, outcomes and
//! durations, records held and the routing table's size go to the node's
//! [`Metrics`](knotwork_node::Metrics).
//!
//! [`DhtHandle`] is the application's side: `put`/`get` signed records,
//! `provide`/`providers`, `find_peer`, `bootstrap`, and the
//! [`knotwork_core::Discovery`] source (announce publishes our signed peer
//! record — listen addresses under our peer key; discover looks up a random
//! key and lists the routing table; a peer that leaves the table is
//! reported expired, so the node's discovery forgets it).
//!
//! Keys are first come, first served: a record key another publisher
//! holds unexpired is refused ([`DhtError::KeyTaken`]), and [`DhtHandle::get`]
//! returns the first valid record found, whoever signed it.
//! [`DhtHandle::get_signed_by`] asks for one publisher's record only; an
//! application that must not be squatted puts its identity in the key.
//!
//! Peers pay for what they make the node hold: `DhtMessage` has its own
//! rate budget ([`BUDGET`]); records and provider announcements are taken
//! only for keys this node is among the k closest to, within per-publisher,
//! per-provider and per-subnet quotas (see `knotwork_discovery_dht::RecordStore`).
//!
//! The peer record follows the node: when the addresses it advertises change
//! (a relay reservation, a UPnP mapping, a confirmed external address:
//! [`NodeHandle::watch_advertised`]) the record is put again with every
//! dialable address, the relayed one included, so a
//! peer that knows only our PeerId finds a way in ([`DhtHandle::find_peer`]
//! merges the record's addresses into what the lookup found).
//!
//! # Errors
//! Calls return [`DhtNodeError`]: the core refused the call, or the driver
//! is not running.
//!
//! ```no_run
//! # async fn run(keypair: knotwork_core::Keypair) -> Result<(), Box<dyn std::error::Error>> {
//! use knotwork_dht_node::{Config, DhtHandle};
//! use knotwork_node::Node;
//!
//! let dht = DhtHandle::new(keypair.clone(), Config::default());
//! let node = Node::builder(keypair)
//!     .listen("tcp/127.0.0.1:0".parse()?)
//!     .service(dht.clone())
//!     .discovery(dht.clone())
//!     .start()
//!     .await?;
//! dht.bootstrap().await?;
//! dht.put(b"greeting".to_vec(), b"hello".to_vec()).await?;
//! # node.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::BoxStream;
use knotwork_core::{
    DiscoveredPeer, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySource, Keypair,
    LocalPeerInfo, PeerAddr, PeerId,
};
pub use knotwork_discovery_dht::{
    Config, DhtError, DhtMessage, Key, Mode, PeerInfo, Record, Request, Response, Time,
    peer_record_key,
};
use knotwork_discovery_dht::{Dht, QueryResult, QueryStats};
use knotwork_node::meter::Offence;
use knotwork_node::{
    Channel, NodeHandle, PeerResolver, RateBudget, Service, Sessions, Setup, Subscription,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use knotwork_core::lock;

mod driver;
mod link;
mod metrics;
mod peer_record;
use driver::Driver;
use link::Link;
use metrics::DhtMetrics;
use peer_record::{encode_addrs, keep_peer_record, merge_peer, parse_addrs, publishable};

/// Why a DHT call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhtNodeError {
    /// The core refused the call (a key or value too large, say).
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// The driver is not running: the node was not started with this
    /// service, or it shut down.
    #[error("the DHT is not running")]
    NotRunning,
}

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knotwork/dht";
/// How many DHT messages a peer may send: 100 a second, bursts of 200. A
/// lookup asks a peer α = 3 things at a time, a bootstrap a few dozen; the
/// node-wide default (1000/s) would let one peer keep the driver busy.
pub const BUDGET: RateBudget = RateBudget::new(100.0, 200);
/// Calls and channel registrations queued for the driver at most (a
/// channel's messages wait in its own subscription instead).
const INBOX: usize = 256;
/// Longest lifetime given to records this node publishes.
const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Misbehaviour meters kept at most; past it, those of peers no longer
/// connected are dropped.
const MAX_METERS: usize = 1024;

type Reply<T> = oneshot::Sender<Result<T, DhtError>>;

/// An application call, answered through its `Reply`.
enum Call {
    Put(Vec<u8>, Vec<u8>, Reply<usize>),
    Get(Vec<u8>, Option<PeerId>, Reply<Option<Record>>),
    Provide(Vec<u8>, Reply<usize>),
    Providers(Vec<u8>, Reply<Vec<PeerInfo>>),
    FindNode(Key, Reply<Vec<PeerInfo>>),
    Bootstrap(Reply<usize>),
    Table(Reply<Vec<PeerInfo>>),
    Held(Vec<u8>, Reply<Option<Record>>),
}

/// What the driver task receives besides messages.
enum Input {
    /// A channel opened: its link and its DHT messages.
    Link(Arc<Link>, Subscription<DhtMessage>),
    Call(Call),
}

/// A query waiting to answer its call.
enum Waiting {
    Stored(Reply<usize>),
    Record(Reply<Option<Record>>),
    Peers(Reply<Vec<PeerInfo>>),
}

/// Where the driver reads the time: milliseconds since an epoch the clock
/// chooses. Every node of one network must share the epoch (record expiry
/// is signed), so real nodes use [`SystemClock`].
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> Time;
}

/// Wall-clock milliseconds since the UNIX epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Time(ms)
    }
}

/// Milliseconds from `epoch`, advancing with tokio's clock: under
/// `tokio::time::pause` the DHT runs on virtual time (the driver's timers
/// and this clock move together).
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    epoch: Time,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `epoch` now.
    pub fn new(epoch: Time) -> Self {
        Self {
            epoch,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Time {
        self.epoch + self.start.elapsed()
    }
}

/// How a query went, as the `outcome` label: `ok` (something found or
/// stored), `empty`, or `timeout` (it hit its deadline).
fn outcome(result: &QueryResult, stats: &QueryStats) -> &'static str {
    let found = match result {
        QueryResult::FindNode { closest, .. } => !closest.is_empty(),
        QueryResult::GetValue { record, .. } => record.is_some(),
        QueryResult::PutValue { stored, .. } | QueryResult::AddProvider { stored, .. } => {
            *stored > 0
        }
        QueryResult::GetProviders { providers, .. } => !providers.is_empty(),
    };
    match (found, stats.timed_out) {
        (true, _) => "ok",
        (false, true) => "timeout",
        (false, false) => "empty",
    }
}

/// The misbehaviour a refused message costs its sender (with the reason's
/// metric label), or `None` when an honest peer can cause the refusal.
fn offence(e: &DhtError) -> (&'static str, Option<Offence>) {
    let bad = Some(Offence::Malformed);
    match e {
        DhtError::TooManyPeers { .. } => ("too_many_peers", bad),
        DhtError::TooManyAddrs { .. } => ("too_many_addrs", bad),
        DhtError::SubnetFlood { .. } => ("subnet_flood", bad),
        DhtError::Unsolicited => ("unsolicited", Some(Offence::UnexpectedResponse)),
        DhtError::UnexpectedResponse => ("unexpected_response", Some(Offence::UnexpectedResponse)),
        DhtError::BadSignature => ("bad_signature", bad),
        DhtError::RecordTooLarge { .. } => ("record_too_large", bad),
        DhtError::KeyTooLarge { .. } => ("key_too_large", bad),
        DhtError::TtlTooLong => ("ttl_too_long", bad),
        DhtError::WrongKey => ("wrong_key", bad),
        DhtError::ForeignPeerRecord => ("foreign_peer_record", bad),
        DhtError::MessageTooLarge { .. } => ("message_too_large", bad),
        DhtError::Malformed => ("malformed", bad),
        DhtError::BadAddress => ("bad_address", bad),
        DhtError::RecordExpired => ("record_expired", None),
        DhtError::KeyTaken => ("key_taken", None),
        DhtError::StaleRecord => ("stale_record", None),
        DhtError::StoreFull => ("store_full", None),
        DhtError::PublisherQuota => ("publisher_quota", None),
        DhtError::ProviderQuota => ("provider_quota", None),
        DhtError::NotClosest => ("not_closest", None),
        DhtError::BucketSubnetLimit | DhtError::TableSubnetLimit => ("subnet_limit", None),
        DhtError::SelfEntry => ("self_entry", None),
        _ => ("other", None),
    }
}

/// The application's handle on the DHT driver; cheap to clone. See the
/// module docs.
#[derive(Clone)]
pub struct DhtHandle {
    inner: Arc<Inner>,
}

struct Inner {
    keypair: Keypair,
    config: Config,
    clock: Arc<dyn Clock>,
    inbox: mpsc::Sender<Input>,
    /// Taken when the service starts.
    unstarted: Mutex<Option<mpsc::Receiver<Input>>>,
    events: broadcast::Sender<DiscoveryEvent>,
    metrics: DhtMetrics,
}

impl std::fmt::Debug for DhtHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtHandle")
            .field("peer_id", &self.inner.keypair.peer_id())
            .finish_non_exhaustive()
    }
}

impl DhtHandle {
    /// A DHT for the node with identity `keypair` (records it publishes are
    /// signed with it), with core settings `config`. Add a clone to the
    /// node's builder as a service (and as a discovery source, to find peers
    /// with it). Time is the [`SystemClock`].
    pub fn new(keypair: Keypair, config: Config) -> Self {
        Self::with_clock(keypair, config, Arc::new(SystemClock))
    }

    /// [`DhtHandle::new`] with time read from `clock`.
    pub fn with_clock(keypair: Keypair, config: Config, clock: Arc<dyn Clock>) -> Self {
        let (inbox, rx) = mpsc::channel(INBOX);
        let (events, _) = broadcast::channel(256);
        Self {
            inner: Arc::new(Inner {
                keypair,
                config,
                clock,
                inbox,
                unstarted: Mutex::new(Some(rx)),
                events,
                metrics: DhtMetrics::default(),
            }),
        }
    }

    /// The per-channel half: registers the channel with the driver (which
    /// reads its DHT messages), then writes what the driver queues for the
    /// peer (see `link`).
    fn protocol(&self, channel: &Channel) -> impl Future<Output = ()> + Send + use<> {
        let messages = channel.subscribe::<DhtMessage>();
        let inbox = self.inner.inbox.clone();
        let metrics = self.inner.metrics.clone();
        let (link, queue) = Link::new(channel.clone(), metrics.clone());
        let channel = channel.clone();
        async move {
            if inbox.send(Input::Link(link, messages)).await.is_ok() {
                Link::write(channel, queue, metrics).await;
            }
        }
    }

    /// Starts the driver task on `node` (it ends when the node shuts down).
    /// The core announces the node's listen addresses when it provides a
    /// key. A second call does nothing.
    fn run(&self, node: &NodeHandle) {
        let Some(rx) = lock(&self.inner.unstarted).take() else {
            return;
        };
        let mut config = self.inner.config.clone();
        config.local_addrs = node.listen_addrs();
        let core = Dht::new(self.inner.keypair.peer_id(), config);
        let driver = Driver::new(
            core,
            node.clone(),
            self.inner.keypair.clone(),
            self.inner.clock.clone(),
            self.inner.events.clone(),
            self.inner.metrics.clone(),
        );
        node.spawn(driver.run(rx));
        node.spawn(keep_peer_record(self.clone(), node.clone()));
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Call) -> Result<T, DhtNodeError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .inbox
            .send(Input::Call(make(tx)))
            .await
            .map_err(|_| DhtNodeError::NotRunning)?;
        Ok(rx.await.map_err(|_| DhtNodeError::NotRunning)??)
    }

    /// Signs `value` under `key` (valid for a day, or the core's longest
    /// record lifetime if shorter) and stores it at the k closest peers;
    /// returns how many acknowledged. The node republishes it until it expires.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<usize, DhtNodeError> {
        self.call(|tx| Call::Put(key, value, tx)).await
    }

    /// Looks up the record under `key`: the first valid one found, whoever
    /// signed it (keys are first come, first served; see the crate docs);
    /// `None` if no peer has a valid one.
    pub async fn get(&self, key: Vec<u8>) -> Result<Option<Record>, DhtNodeError> {
        self.call(|tx| Call::Get(key, None, tx)).await
    }

    /// Looks up the record `publisher` signed under `key`, passing over
    /// records other publishers put there; `None` if none is found.
    pub async fn get_signed_by(
        &self,
        key: Vec<u8>,
        publisher: PeerId,
    ) -> Result<Option<Record>, DhtNodeError> {
        self.call(|tx| Call::Get(key, Some(publisher), tx)).await
    }

    /// Announces this node as a provider of `key` to the k closest peers;
    /// returns how many acknowledged.
    pub async fn provide(&self, key: Vec<u8>) -> Result<usize, DhtNodeError> {
        self.call(|tx| Call::Provide(key, tx)).await
    }

    /// Finds providers of `key`.
    pub async fn providers(&self, key: Vec<u8>) -> Result<Vec<PeerInfo>, DhtNodeError> {
        self.call(|tx| Call::Providers(key, tx)).await
    }

    /// Finds the k closest peers to `target`, closest first.
    pub async fn find_node(&self, target: Key) -> Result<Vec<PeerInfo>, DhtNodeError> {
        self.call(|tx| Call::FindNode(target, tx)).await
    }

    /// Looks `peer` up by id: its routing entry from a lookup, with the
    /// addresses of its own peer record added (a relayed address, say);
    /// `None` if neither was found.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Option<PeerInfo>, DhtNodeError> {
        let closest = self.find_node(Key::from_peer_id(&peer)).await?;
        let found = closest.into_iter().find(|p| p.peer_id == peer);
        let published = self.peer_record(peer).await?.unwrap_or_default();
        Ok(merge_peer(peer, found, published))
    }

    /// Finds the addresses `peer` published with [`Discovery::announce`]
    /// (the record must be signed by `peer` itself).
    pub async fn peer_record(&self, peer: PeerId) -> Result<Option<Vec<PeerAddr>>, DhtNodeError> {
        let record = self.get_signed_by(peer_record_key(&peer), peer).await?;
        Ok(record.map(|r| parse_addrs(&r.value)))
    }

    /// Fills the routing table: adds the connected DHT peers if it is empty,
    /// then looks up our own key. Returns the table's size afterwards.
    pub async fn bootstrap(&self) -> Result<usize, DhtNodeError> {
        self.call(Call::Bootstrap).await
    }

    /// The routing table's entries.
    pub async fn table(&self) -> Result<Vec<PeerInfo>, DhtNodeError> {
        self.call(Call::Table).await
    }

    /// The record this node holds under `key` for the network, if any.
    pub async fn held_record(&self, key: Vec<u8>) -> Result<Option<Record>, DhtNodeError> {
        self.call(|tx| Call::Held(key, tx)).await
    }
}

#[async_trait]
impl Discovery for DhtHandle {
    fn source(&self) -> DiscoverySource {
        DiscoverySource::Dht
    }

    async fn announce(&self, info: &LocalPeerInfo) -> Result<(), DiscoveryError> {
        let addrs = publishable(&info.addrs);
        if addrs.is_empty() {
            return Ok(());
        }
        self.put(peer_record_key(&info.peer_id), encode_addrs(&addrs))
            .await
            .map(drop)
            .map_err(|e| DiscoveryError::Failed(e.to_string()))
    }

    async fn discover(&self) -> Result<Vec<DiscoveredPeer>, DiscoveryError> {
        let fail = |e: DhtNodeError| DiscoveryError::Failed(e.to_string());
        let mut random = [0u8; 32];
        fastrand::fill(&mut random);
        self.find_node(Key::hash(&random)).await.map_err(fail)?;
        let table = self.table().await.map_err(fail)?;
        Ok(table
            .into_iter()
            .map(|p| DiscoveredPeer {
                peer_id: p.peer_id,
                addrs: p.addrs,
                source: DiscoverySource::Dht,
            })
            .collect())
    }

    fn events(&self) -> BoxStream<'static, DiscoveryEvent> {
        let rx = self.inner.events.subscribe();
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

/// Finds a peer's addresses for `NodeHandle::connect_peer`: a lookup of its
/// id, merged with its signed peer record (a relayed address included).
struct Resolver(DhtHandle);

#[async_trait]
impl PeerResolver for Resolver {
    fn name(&self) -> &'static str {
        "dht"
    }

    async fn resolve(&self, peer: PeerId) -> Vec<PeerAddr> {
        match self.0.find_peer(peer).await {
            Ok(Some(found)) => found.addrs,
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::debug!(peer = %peer.short(), "dht: resolving failed: {e}");
                Vec::new()
            }
        }
    }
}

impl Service for DhtHandle {
    fn setup(&self, setup: &mut Setup<'_>) {
        self.inner.metrics.register(setup.metrics());
        setup.resolver(Resolver(self.clone()));
        setup.default_budget::<DhtMessage>(BUDGET);
        let this = self.clone();
        setup.protocol(NAME, Sessions::ALL, move |ch: &Channel| this.protocol(ch));
    }

    fn start(&self, node: &NodeHandle) {
        self.run(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_the_sender_caused_cost_points_and_honest_ones_do_not() {
        let senders_fault = [
            (DhtError::BadSignature, "bad_signature"),
            (
                DhtError::RecordTooLarge { size: 9, max: 8 },
                "record_too_large",
            ),
            (
                DhtError::TooManyPeers { got: 21, max: 20 },
                "too_many_peers",
            ),
            (DhtError::Unsolicited, "unsolicited"),
            (DhtError::ForeignPeerRecord, "foreign_peer_record"),
            (DhtError::SubnetFlood { got: 3, max: 2 }, "subnet_flood"),
        ];
        for (e, reason) in senders_fault {
            let (label, offence) = offence(&e);
            assert_eq!(label, reason);
            assert!(offence.is_some(), "{e}");
        }
        for e in [
            DhtError::RecordExpired,
            DhtError::KeyTaken,
            DhtError::StaleRecord,
            DhtError::StoreFull,
            DhtError::TableSubnetLimit,
        ] {
            assert_eq!(offence(&e).1, None, "{e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_virtual_time() {
        let clock = TokioClock::new(Time(1_000));
        assert_eq!(clock.now(), Time(1_000));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), Time(91_000));
    }
}

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
