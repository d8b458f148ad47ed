//! [`Dht`]: one node's Kademlia state machine.
//!
//! # Using it
//! The methods come in four kinds, as in quinn-proto's `Connection`:
//! - getters: [`Dht::local_peer_id`], [`Dht::table`], [`Dht::store`];
//! - inputs: [`Dht::handle_message`] for each message from a peer (with the
//!   sender's id from the authenticated channel) and [`Dht::handle_timeout`]
//!   when the time from [`Dht::poll_timeout`] has come;
//! - application calls: [`Dht::add_peer`], [`Dht::bootstrap`],
//!   [`Dht::find_node`], [`Dht::put_record`], [`Dht::get_record`],
//!   [`Dht::provide`], [`Dht::get_providers`];
//! - outputs: after any input or call, drain [`Dht::poll_transmit`] (send
//!   each message) and [`Dht::poll_event`] (query results), then re-arm the
//!   timer with [`Dht::poll_timeout`].
//!
//! # Layout
//! This file holds the types and the calls; [`serve`] answers requests (and
//! decides what to store), [`lookup`] runs queries (requests, responses,
//! timeouts), [`maintain`] does the periodic work (expiry, republishing,
//! replication, bucket refresh).
//!
//! # Safe on the open internet
//! - A response goes back to the peer that asked ([`Transmit::is_response`]):
//!   a driver sends it over the connection the request came on, never
//!   dialing for it.
//! - Peers enter the routing table only at the address the driver says it
//!   reaches them at (`from_addr`), never at addresses they claim; subnet
//!   limits apply to that address.
//! - Addresses listed in a response are dialed only on behalf of the peer
//!   that listed them ([`Transmit::heard_from`]), so the driver can hold
//!   them to that peer's scope.
//! - Records and provider announcements are taken only for keys this node
//!   is among the k closest to, within per-sender quotas
//!   ([`RecordStore`](crate::RecordStore)); a record identical to the one
//!   held is not verified again; re-replication runs a few records at a
//!   time ([`Config::max_replications`]).

mod lookup;
mod maintain;
mod serve;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use knotwork_core::{PeerAddr, PeerId};

use crate::DhtError;
use crate::config::{Config, Mode};
use crate::key::Key;
use crate::message::{DhtMessage, PeerInfo};
use crate::query::Query;
use crate::record::{Record, RecordStore};
use crate::table::{InsertOutcome, RoutingTable};
use crate::time::Time;

/// Output queue capacity kept once a queue has been drained.
const QUEUE_KEEP: usize = 16;

/// Identifies a query started by an application call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// A message for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The recipient.
    pub to: PeerId,
    /// A request: where the recipient was last known to be reachable (to
    /// dial if not connected). A response: the address the request came
    /// from, as given to [`Dht::handle_message`]; never dial it, send the
    /// response over the connection the request came on or drop it.
    pub addrs: Vec<PeerAddr>,
    /// For a request to a peer another peer told us about: the address of
    /// the peer that listed `addrs` (see [`QueryPeer::via`](crate::query::QueryPeer::via)).
    /// Dial `addrs` only within what that peer may make us dial. `None`
    /// when the addresses come from the routing table or the application.
    pub heard_from: Option<PeerAddr>,
    /// The message.
    pub message: DhtMessage,
}

impl Transmit {
    /// Whether this answers a request (see [`Transmit::addrs`]).
    pub fn is_response(&self) -> bool {
        matches!(self.message, DhtMessage::Response { .. })
    }
}

/// Counters of one finished query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Requests sent.
    pub requests: u32,
    /// Responses received.
    pub responses: u32,
    /// Requests that failed or timed out.
    pub failures: u32,
    /// For a lookup of a peer's key: the number of responses on the chain
    /// that led to it (0 if it was in the local table); `None` if not found.
    pub hops: Option<u8>,
    /// Time from start to finish.
    pub duration: Duration,
    /// Whether the query hit its deadline.
    pub timed_out: bool,
}

/// What a query found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryResult {
    /// The k closest live peers to the target.
    FindNode {
        /// The target.
        target: Key,
        /// Closest first.
        closest: Vec<PeerInfo>,
    },
    /// A record lookup.
    GetValue {
        /// The key asked for.
        key: Vec<u8>,
        /// The first valid record found.
        record: Option<Record>,
    },
    /// A record was stored at `stored` of the k closest peers.
    PutValue {
        /// The record key.
        key: Vec<u8>,
        /// Peers that acknowledged.
        stored: usize,
    },
    /// This node was announced as provider to `stored` peers.
    AddProvider {
        /// The key.
        key: Vec<u8>,
        /// Peers that acknowledged.
        stored: usize,
    },
    /// Providers found for a key.
    GetProviders {
        /// The key.
        key: Vec<u8>,
        /// The providers.
        providers: Vec<PeerInfo>,
    },
}

/// What the DHT reports to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A query started by an application call finished.
    QueryFinished {
        /// Which.
        id: QueryId,
        /// What it found.
        result: QueryResult,
        /// How it went.
        stats: QueryStats,
    },
    /// The self-lookup of [`Dht::bootstrap`] finished; bucket refreshes
    /// continue in the background.
    Bootstrapped {
        /// Entries in the routing table.
        peers: usize,
    },
    /// A peer entered the routing table.
    PeerAdded(PeerId),
    /// A peer left the routing table: it failed its liveness check, or
    /// turned out to be in client mode.
    PeerEvicted(PeerId),
}

#[derive(Clone, Debug)]
enum Goal {
    FindNode,
    /// A record, from the given publisher only if one is named.
    GetValue(Vec<u8>, Option<PeerId>),
    PutValue(Record),
    AddProvider(Vec<u8>),
    GetProviders(Vec<u8>),
}

impl Goal {
    /// The kind of query, as logged.
    fn name(&self) -> &'static str {
        match self {
            Goal::FindNode => "find_node",
            Goal::GetValue(..) => "get",
            Goal::PutValue(_) => "put",
            Goal::AddProvider(_) => "provide",
            Goal::GetProviders(_) => "providers",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    App,
    Bootstrap,
    Background,
    /// Re-replication of a record held for others (at most
    /// [`Config::max_replications`] at once).
    Replication,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Pong,
    Nodes,
    Value,
    Stored,
    Providers,
}

#[derive(Clone, Copy, Debug)]
enum Purpose {
    Ping,
    Lookup { query: QueryId, path: usize },
    Store { query: QueryId },
}

/// A validated lookup response: closer peers, a valid record, providers.
type Parsed = (Vec<PeerInfo>, Option<Record>, Vec<PeerInfo>);

#[derive(Clone, Debug)]
struct Outstanding {
    peer: PeerId,
    deadline: Time,
    expect: Expect,
    purpose: Purpose,
}

#[derive(Debug)]
struct Running {
    query: Query,
    goal: Goal,
    origin: Origin,
    started: Time,
    deadline: Time,
    stats: QueryStats,
    /// Store phase: (acks pending, acks received).
    store: Option<(usize, usize)>,
    record: Option<Record>,
    providers: Vec<PeerInfo>,
}

/// One node's Kademlia state machine (see the module docs for the polling
/// contract).
#[derive(Debug)]
pub struct Dht {
    local: PeerId,
    local_key: Key,
    config: Config,
    table: RoutingTable,
    store: RecordStore,
    queries: BTreeMap<QueryId, Running>,
    outstanding: BTreeMap<u64, Outstanding>,
    published: BTreeMap<Key, (Record, Time)>,
    provided: BTreeMap<Key, (Vec<u8>, Time)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_request: u64,
    next_query: u64,
    next_maintenance: Option<Time>,
    /// Replication queries running.
    replicating: usize,
    /// When to look for more due replications (a slot freed up).
    next_replication: Option<Time>,
}

impl Dht {
    /// A node with identity `local` and settings `config`.
    pub fn new(local: PeerId, config: Config) -> Self {
        let local_key = Key::from_peer_id(&local);
        let table = RoutingTable::new(
            local_key,
            config.k,
            config.replacement_cache,
            config.subnet_limits,
        )
        .with_ping_after(config.liveness_interval)
        .with_max_failures(config.max_failures);
        let store = RecordStore::new(config.store);
        Self {
            local,
            local_key,
            config,
            table,
            store,
            queries: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            published: BTreeMap::new(),
            provided: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_request: 0,
            next_query: 0,
            next_maintenance: None,
            replicating: 0,
            next_replication: None,
        }
    }

    // ---- getters ----

    /// Our id.
    pub fn local_peer_id(&self) -> &PeerId {
        &self.local
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Records and providers held for others.
    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Queries still running (application and background).
    pub fn running_queries(&self) -> usize {
        self.queries.len()
    }

    /// Bytes held by this node's state, estimated from data structure sizes.
    pub fn memory_estimate(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.table.memory_estimate()
            + self.store.memory_estimate()
            + self
                .queries
                .values()
                .map(|r| std::mem::size_of::<Running>() + 48 + r.query.memory_estimate())
                .sum::<usize>()
            + self.outstanding.len() * (std::mem::size_of::<Outstanding>() + 24)
            + self.transmits.capacity() * std::mem::size_of::<Transmit>()
            + self.events.capacity() * std::mem::size_of::<Event>()
    }

    // ---- outputs ----

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_none() && self.transmits.capacity() > QUEUE_KEEP {
            // A burst (bootstrap, say) should not pin memory for the node's life.
            self.transmits.shrink_to(QUEUE_KEEP);
        }
        t
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > QUEUE_KEEP {
            self.events.shrink_to(QUEUE_KEEP);
        }
        e
    }

    /// When [`Dht::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let a = self.outstanding.values().map(|o| o.deadline).min();
        let b = self.queries.values().map(|r| r.deadline).min();
        [a, b, self.next_maintenance, self.next_replication]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- application calls ----

    /// Adds a known peer (a bootstrap node, say) as if just heard from.
    pub fn add_peer(
        &mut self,
        now: Time,
        peer: PeerId,
        addrs: &[PeerAddr],
    ) -> Result<InsertOutcome, DhtError> {
        self.arm(now);
        let out = self.table.insert(now, peer, addrs)?;
        self.after_insert(now, peer, &out);
        Ok(out)
    }

    /// Looks up our own key to fill the table; when it finishes,
    /// [`Event::Bootstrapped`] is reported and every bucket is refreshed.
    pub fn bootstrap(&mut self, now: Time) {
        self.arm(now);
        let target = self.local_key;
        self.start(now, target, Goal::FindNode, Origin::Bootstrap);
    }

    /// Finds the k closest peers to `target`.
    pub fn find_node(&mut self, now: Time, target: Key) -> QueryId {
        self.arm(now);
        self.start(now, target, Goal::FindNode, Origin::App)
    }

    /// Stores a signed record at the k closest peers to its key, and keeps
    /// republishing it every `republish_interval` until it expires.
    pub fn put_record(&mut self, now: Time, record: Record) -> Result<QueryId, DhtError> {
        self.arm(now);
        record.validate(now, &self.config.record_limits)?;
        let key = record.dht_key();
        self.published
            .insert(key, (record.clone(), now + self.config.republish_interval));
        if self.config.mode == Mode::Server {
            let at = self.replicate_at(now);
            // Our own copy: a newer record of ours replaces it.
            let _ = self.store.put(record.clone(), at, now);
        }
        Ok(self.start(now, key, Goal::PutValue(record), Origin::App))
    }

    /// Finds a record by its key: the first valid one, whoever signed it
    /// (keys are first come, first served; see [`crate::record`]).
    pub fn get_record(&mut self, now: Time, key: &[u8]) -> Result<QueryId, DhtError> {
        self.get(now, key, None)
    }

    /// Finds the record `publisher` signed under `key`: records of other
    /// publishers found on the way are passed over.
    pub fn get_record_by(
        &mut self,
        now: Time,
        key: &[u8],
        publisher: PeerId,
    ) -> Result<QueryId, DhtError> {
        self.get(now, key, Some(publisher))
    }

    fn get(&mut self, now: Time, key: &[u8], by: Option<PeerId>) -> Result<QueryId, DhtError> {
        self.arm(now);
        self.check_key(key)?;
        let dht_key = Key::hash(key);
        Ok(self.start(now, dht_key, Goal::GetValue(key.to_vec(), by), Origin::App))
    }

    /// Announces this node as a provider of `key` to the k closest peers,
    /// and re-announces it every `provider_republish_interval`.
    pub fn provide(&mut self, now: Time, key: &[u8]) -> Result<QueryId, DhtError> {
        self.arm(now);
        self.check_key(key)?;
        let dht_key = Key::hash(key);
        self.provided.insert(
            dht_key,
            (key.to_vec(), now + self.config.provider_republish_interval),
        );
        self.provide_locally(now, dht_key);
        Ok(self.start(now, dht_key, Goal::AddProvider(key.to_vec()), Origin::App))
    }

    /// Stops re-announcing `key` (announcements already made lapse on their own).
    pub fn stop_providing(&mut self, key: &[u8]) {
        self.provided.remove(&Key::hash(key));
    }

    /// Finds providers of `key`.
    pub fn get_providers(&mut self, now: Time, key: &[u8]) -> Result<QueryId, DhtError> {
        self.arm(now);
        self.check_key(key)?;
        let dht_key = Key::hash(key);
        Ok(self.start(now, dht_key, Goal::GetProviders(key.to_vec()), Origin::App))
    }

    // ---- inputs ----

    /// Processes a message from `from` (authenticated by the channel) that
    /// arrived over `from_addr`: the address at which `from` can be reached,
    /// as the driver verified it (the address it dialed, or the IP the
    /// connection comes from), never one `from` only claimed. The routing
    /// table records `from` there.
    ///
    /// An `Err` names what was wrong with the message; the state stays
    /// consistent (a bad response counts as a failure of that request).
    pub fn handle_message(
        &mut self,
        now: Time,
        from: PeerId,
        from_addr: PeerAddr,
        msg: DhtMessage,
    ) -> Result<(), DhtError> {
        self.arm(now);
        if from == self.local {
            return Err(DhtError::SelfEntry);
        }
        match msg {
            DhtMessage::Request { id, client, body } => {
                self.on_request(now, from, from_addr, id, client, body)
            }
            DhtMessage::Response { id, body } => self.on_response(now, from, from_addr, id, body),
        }
    }

    /// Processes everything due at `now`: request timeouts (failed liveness
    /// checks evict), query deadlines, and periodic maintenance (expiry,
    /// republishing, replication, bucket refresh).
    pub fn handle_timeout(&mut self, now: Time) {
        self.arm(now);
        let expired: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(o) = self.outstanding.remove(&id) {
                self.request_failed(now, o);
            }
        }
        let late: Vec<QueryId> = self
            .queries
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(r) = self.queries.get_mut(&id) {
                r.stats.timed_out = true;
            }
            self.finish(now, id);
        }
        if self.next_maintenance.is_some_and(|t| t <= now) {
            self.maintain(now);
        }
        if self.next_replication.is_some_and(|t| t <= now) {
            self.next_replication = None;
            self.replicate(now);
        }
    }

    // ---- internals ----

    fn arm(&mut self, now: Time) {
        if self.next_maintenance.is_none() {
            self.next_maintenance = Some(now + self.config.maintenance_interval);
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), DhtError> {
        let max = self.config.record_limits.max_key_len;
        if key.len() > max {
            return Err(DhtError::KeyTooLarge {
                size: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn replicate_at(&self, now: Time) -> Time {
        match self.config.replicate_interval {
            Some(i) => now + i,
            None => Time(u64::MAX),
        }
    }

    fn subnet_max(&self) -> usize {
        self.config.subnet_limits.map_or(usize::MAX, |(b, _)| b)
    }

    /// Whether fewer than k peers of the routing table, `sender` aside,
    /// are closer to `key` than this node: then it is one of the k closest
    /// as far as it knows, and holds records and providers for that key.
    /// (The sender does not count: a publisher stores at the k closest
    /// other than itself.)
    fn among_closest(&self, key: &Key, sender: &PeerId) -> bool {
        let k = self.config.k;
        let ours = self.local_key.distance(key);
        let closer = self
            .table
            .closest(key, k + 1)
            .into_iter()
            .filter(|e| e.peer_id != *sender && e.key.distance(key) < ours)
            .count();
        closer < k
    }

    /// Holds this node as a provider of `key` (its own announcement: no
    /// subnet is charged, and a full quota only means it is not held here).
    fn provide_locally(&mut self, now: Time, key: Key) {
        let me = PeerInfo {
            peer_id: self.local,
            addrs: self.config.local_addrs.clone(),
        };
        let _ = self
            .store
            .add_provider(key, me, now + self.config.provider_ttl, None);
    }
}
