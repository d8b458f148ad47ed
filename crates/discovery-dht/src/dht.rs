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

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use knotwork_core::{PeerAddr, PeerId};

use crate::DhtError;
use crate::config::{Config, Mode};
use crate::key::Key;
use crate::message::{
    DhtMessage, PeerInfo, Request, Response, WireAddr, WirePeer, addrs_from_wire,
};
use crate::query::Query;
use crate::record::{Record, RecordStore};
use crate::table::{Entry, Failed, InsertOutcome, RoutingTable};
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
    /// Where it was last known to be reachable (to dial if not connected).
    pub addrs: Vec<PeerAddr>,
    /// The message.
    pub message: DhtMessage,
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
    /// [`Config::max_failures`] requests in a row.
    PeerEvicted(PeerId),
}

#[derive(Clone, Debug)]
enum Goal {
    FindNode,
    GetValue(Vec<u8>),
    PutValue(Record),
    AddProvider(Vec<u8>),
    GetProviders(Vec<u8>),
}

impl Goal {
    /// The kind of query, as logged.
    fn name(&self) -> &'static str {
        match self {
            Goal::FindNode => "find_node",
            Goal::GetValue(_) => "get",
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
        let store = RecordStore::new(config.max_records, config.max_providers_per_key);
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
        [a, b, self.next_maintenance].into_iter().flatten().min()
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

    /// Finds a record by its key.
    pub fn get_record(&mut self, now: Time, key: &[u8]) -> Result<QueryId, DhtError> {
        self.arm(now);
        self.check_key(key)?;
        let dht_key = Key::hash(key);
        Ok(self.start(now, dht_key, Goal::GetValue(key.to_vec()), Origin::App))
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
        let me = PeerInfo {
            peer_id: self.local,
            addrs: self.config.local_addrs.clone(),
        };
        self.store
            .add_provider(dht_key, me, now + self.config.provider_ttl);
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
    /// arrived over `from_addr` (the address at which `from` can be reached).
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

    fn send_request(
        &mut self,
        now: Time,
        to: &PeerInfo,
        body: Request,
        expect: Expect,
        purpose: Purpose,
    ) {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1);
        self.outstanding.insert(
            id,
            Outstanding {
                peer: to.peer_id,
                deadline: now + self.config.request_timeout,
                expect,
                purpose,
            },
        );
        self.transmits.push_back(Transmit {
            to: to.peer_id,
            addrs: to.addrs.clone(),
            message: DhtMessage::Request {
                id,
                client: self.config.mode == Mode::Client,
                body,
            },
        });
    }

    fn respond(&mut self, to: PeerId, addr: PeerAddr, id: u64, body: Response) {
        self.transmits.push_back(Transmit {
            to,
            addrs: vec![addr],
            message: DhtMessage::Response { id, body },
        });
    }

    /// Inserts a peer we heard from; starts a liveness check if its bucket
    /// is full. A refusal (subnet limit) is not the message's fault.
    fn heard_from(&mut self, now: Time, peer: PeerId, addr: &PeerAddr) {
        if let Ok(out) = self.table.insert(now, peer, std::slice::from_ref(addr)) {
            self.after_insert(now, peer, &out);
        }
    }

    fn after_insert(&mut self, now: Time, peer: PeerId, out: &InsertOutcome) {
        match out {
            InsertOutcome::Inserted => self.events.push_back(Event::PeerAdded(peer)),
            InsertOutcome::Full { ping: Some(lrs) } => {
                let lrs = lrs.clone();
                self.send_request(now, &lrs, Request::Ping, Expect::Pong, Purpose::Ping);
            }
            InsertOutcome::Full { ping: None } | InsertOutcome::Updated => {}
        }
    }

    fn closest_wire(&self, target: &Key, exclude: &PeerId) -> Vec<WirePeer> {
        self.table
            .closest(target, self.config.k + 1)
            .into_iter()
            .filter(|e| e.peer_id != *exclude)
            .take(self.config.k)
            .map(|e| e.info().to_wire())
            .collect()
    }

    fn on_request(
        &mut self,
        now: Time,
        from: PeerId,
        from_addr: PeerAddr,
        id: u64,
        client: bool,
        body: Request,
    ) -> Result<(), DhtError> {
        if self.config.mode == Mode::Client {
            // Clients serve nobody.
            return Ok(());
        }
        if client {
            self.table.remove(&from);
        } else if matches!(body, Request::Ping) {
            // A liveness check of us is no introduction: refresh the pinger
            // if known, but do not start a check of our own for it.
            if self.table.get(&from).is_some() {
                self.heard_from(now, from, &from_addr);
            }
        } else {
            self.heard_from(now, from, &from_addr);
        }
        let k = self.config.k;
        let response = match body {
            Request::Ping => Response::Pong,
            Request::FindNode { target } => Response::Nodes {
                closer: self.closest_wire(&Key::from_bytes(target), &from),
            },
            Request::GetValue { key } => {
                self.check_key(&key)?;
                let dht_key = Key::hash(&key);
                Response::Value {
                    record: self.store.get(&dht_key, now).map(Record::to_wire),
                    closer: self.closest_wire(&dht_key, &from),
                }
            }
            Request::PutValue { record } => {
                let record = Record::from_wire_unchecked(&record)?;
                record.validate(now, &self.config.record_limits)?;
                let at = self.replicate_at(now);
                self.store.put(record, at, now)?;
                Response::Stored
            }
            Request::AddProvider { key, addrs } => {
                self.check_key(&key)?;
                let mut addrs = addrs_from_wire(&addrs, self.subnet_max())?;
                if addrs.is_empty() {
                    addrs.push(from_addr.clone());
                }
                let info = PeerInfo {
                    peer_id: from,
                    addrs,
                };
                self.store
                    .add_provider(Key::hash(&key), info, now + self.config.provider_ttl);
                Response::Stored
            }
            Request::GetProviders { key } => {
                self.check_key(&key)?;
                let dht_key = Key::hash(&key);
                let mut providers: Vec<WirePeer> = self
                    .store
                    .providers(&dht_key, now)
                    .iter()
                    .map(PeerInfo::to_wire)
                    .collect();
                providers.truncate(k);
                Response::Providers {
                    providers,
                    closer: self.closest_wire(&dht_key, &from),
                }
            }
        };
        self.respond(from, from_addr, id, response);
        Ok(())
    }

    fn peers_from_wire(&self, peers: &[WirePeer]) -> Result<Vec<PeerInfo>, DhtError> {
        if peers.len() > self.config.k {
            return Err(DhtError::TooManyPeers {
                got: peers.len(),
                max: self.config.k,
            });
        }
        let subnet_max = self.subnet_max();
        peers
            .iter()
            .map(|p| PeerInfo::from_wire(p, subnet_max))
            .collect()
    }

    fn on_response(
        &mut self,
        now: Time,
        from: PeerId,
        from_addr: PeerAddr,
        id: u64,
        body: Response,
    ) -> Result<(), DhtError> {
        match self.outstanding.get(&id) {
            Some(o) if o.peer == from => {}
            _ => return Err(DhtError::Unsolicited),
        }
        let Some(out) = self.outstanding.remove(&id) else {
            return Err(DhtError::Unsolicited);
        };
        let kind = match &body {
            Response::Pong => Expect::Pong,
            Response::Nodes { .. } => Expect::Nodes,
            Response::Value { .. } => Expect::Value,
            Response::Stored => Expect::Stored,
            Response::Providers { .. } => Expect::Providers,
        };
        if kind != out.expect {
            self.request_failed(now, out);
            return Err(DhtError::UnexpectedResponse);
        }
        // It answered: it is alive and serving.
        if matches!(out.purpose, Purpose::Ping) {
            self.table.ping_result(now, &from, true);
        }
        self.heard_from(now, from, &from_addr);
        match out.purpose {
            Purpose::Ping => Ok(()),
            Purpose::Store { query } => {
                if let Some(r) = self.queries.get_mut(&query) {
                    r.stats.responses += 1;
                    if let Some((pending, acked)) = r.store.as_mut() {
                        *pending = pending.saturating_sub(1);
                        *acked += 1;
                    }
                }
                self.drive(now, query);
                Ok(())
            }
            Purpose::Lookup { query, path } => {
                let parsed = self.parse_lookup_response(now, query, body);
                match parsed {
                    Ok((closer, record, providers)) => {
                        if let Some(r) = self.queries.get_mut(&query) {
                            r.stats.responses += 1;
                            r.query.on_success(path, &from, closer, &self.local);
                            if r.record.is_none() {
                                r.record = record;
                            }
                            for p in providers {
                                if !r.providers.iter().any(|q| q.peer_id == p.peer_id) {
                                    r.providers.push(p);
                                }
                            }
                        }
                        self.drive(now, query);
                        Ok(())
                    }
                    Err(e) => {
                        self.request_failed(now, out);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Validates a lookup response: (closer peers, a valid record, providers).
    fn parse_lookup_response(
        &self,
        now: Time,
        query: QueryId,
        body: Response,
    ) -> Result<Parsed, DhtError> {
        match body {
            Response::Nodes { closer } => Ok((self.peers_from_wire(&closer)?, None, Vec::new())),
            Response::Value { record, closer } => {
                let closer = self.peers_from_wire(&closer)?;
                let record = match record {
                    None => None,
                    Some(w) => {
                        let rec = Record::from_wire_unchecked(&w)?;
                        let wanted = self.queries.get(&query).and_then(|r| match &r.goal {
                            Goal::GetValue(k) => Some(k),
                            _ => None,
                        });
                        if wanted.is_some_and(|k| *k != rec.key) {
                            return Err(DhtError::WrongKey);
                        }
                        rec.validate(now, &self.config.record_limits)?;
                        Some(rec)
                    }
                };
                Ok((closer, record, Vec::new()))
            }
            Response::Providers { providers, closer } => Ok((
                self.peers_from_wire(&closer)?,
                None,
                self.peers_from_wire(&providers)?,
            )),
            Response::Pong | Response::Stored => Err(DhtError::UnexpectedResponse),
        }
    }

    fn request_failed(&mut self, now: Time, o: Outstanding) {
        match o.purpose {
            Purpose::Ping => {
                if let Some(ev) = self.table.ping_result(now, &o.peer, false) {
                    self.events.push_back(Event::PeerEvicted(ev.evicted));
                    if let Some(p) = ev.promoted {
                        self.events.push_back(Event::PeerAdded(p));
                    }
                }
            }
            Purpose::Lookup { query, path } => {
                if let Some(r) = self.queries.get_mut(&query) {
                    r.stats.failures += 1;
                    r.query.on_failure(path, &o.peer);
                }
                self.peer_failed(now, &o.peer);
                self.drive(now, query);
            }
            Purpose::Store { query } => {
                if let Some(r) = self.queries.get_mut(&query) {
                    r.stats.failures += 1;
                    if let Some((pending, _)) = r.store.as_mut() {
                        *pending = pending.saturating_sub(1);
                    }
                }
                self.peer_failed(now, &o.peer);
                self.drive(now, query);
            }
        }
    }

    /// Tells the table that a request to `peer` failed, and acts on what it
    /// did: an eviction is reported, a liveness check is sent.
    fn peer_failed(&mut self, now: Time, peer: &PeerId) {
        match self.table.request_failed(peer) {
            Failed::Kept { ping: Some(lrs) } => {
                self.send_request(now, &lrs, Request::Ping, Expect::Pong, Purpose::Ping);
            }
            Failed::Evicted(ev) => {
                self.events.push_back(Event::PeerEvicted(ev.evicted));
                if let Some(p) = ev.promoted {
                    self.events.push_back(Event::PeerAdded(p));
                }
            }
            Failed::Kept { ping: None } | Failed::Absent => {}
        }
    }

    fn start(&mut self, now: Time, target: Key, goal: Goal, origin: Origin) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let seeds: Vec<PeerInfo> = self
            .table
            .closest(&target, self.config.k)
            .into_iter()
            .map(Entry::info)
            .collect();
        let query = Query::new(
            target,
            self.config.k,
            self.config.alpha,
            self.config.disjoint_paths,
            seeds,
        );
        if let Some(idx) = self.local_key.bucket_index(&target) {
            self.table.touch_bucket(idx, now);
        }
        // A record we hold answers at once.
        let record = match &goal {
            Goal::GetValue(_) => self.store.get(&target, now).cloned(),
            _ => None,
        };
        self.queries.insert(
            id,
            Running {
                query,
                goal,
                origin,
                started: now,
                deadline: now + self.config.query_timeout,
                stats: QueryStats::default(),
                store: None,
                record,
                providers: Vec::new(),
            },
        );
        self.drive(now, id);
        id
    }

    /// Moves a query along: sends its next requests, enters the store
    /// phase, or finishes it.
    fn drive(&mut self, now: Time, id: QueryId) {
        let k = self.config.k;
        let Some(r) = self.queries.get_mut(&id) else {
            return;
        };
        if let Some((pending, _)) = r.store {
            if pending == 0 {
                self.finish(now, id);
            }
            return;
        }
        let done_early = match r.goal {
            Goal::GetValue(_) => r.record.is_some(),
            Goal::GetProviders(_) => r.providers.len() >= k,
            _ => false,
        };
        if !done_early && !r.query.is_finished() {
            let contacts = r.query.next_contacts();
            let body = match &r.goal {
                Goal::FindNode | Goal::PutValue(_) | Goal::AddProvider(_) => Request::FindNode {
                    target: *r.query.target().as_bytes(),
                },
                Goal::GetValue(key) => Request::GetValue { key: key.clone() },
                Goal::GetProviders(key) => Request::GetProviders { key: key.clone() },
            };
            let expect = match r.goal {
                Goal::GetValue(_) => Expect::Value,
                Goal::GetProviders(_) => Expect::Providers,
                _ => Expect::Nodes,
            };
            r.stats.requests += contacts.len() as u32;
            for c in contacts {
                let purpose = Purpose::Lookup {
                    query: id,
                    path: c.path,
                };
                self.send_request(now, &c.peer, body.clone(), expect, purpose);
            }
            return;
        }
        // Lookup done: storing goals now send to the closest that answered.
        let store_body = match &r.goal {
            Goal::PutValue(rec) => Some(Request::PutValue {
                record: rec.to_wire(),
            }),
            Goal::AddProvider(key) => Some(Request::AddProvider {
                key: key.clone(),
                addrs: self
                    .config
                    .local_addrs
                    .iter()
                    .filter_map(WireAddr::from_peer_addr)
                    .collect(),
            }),
            _ => None,
        };
        let Some(body) = store_body else {
            self.finish(now, id);
            return;
        };
        let targets: Vec<PeerInfo> = r
            .query
            .closest_succeeded()
            .into_iter()
            .map(|q| q.info.clone())
            .collect();
        r.store = Some((targets.len(), 0));
        r.stats.requests += targets.len() as u32;
        if targets.is_empty() {
            self.finish(now, id);
            return;
        }
        for t in targets {
            self.send_request(
                now,
                &t,
                body.clone(),
                Expect::Stored,
                Purpose::Store { query: id },
            );
        }
    }

    fn finish(&mut self, now: Time, id: QueryId) {
        let Some(mut r) = self.queries.remove(&id) else {
            return;
        };
        r.stats.duration = now.saturating_since(r.started);
        r.stats.hops = r.query.target_depth();
        tracing::debug!(
            kind = %r.goal.name(),
            origin = ?r.origin,
            found = r.stats.hops.is_some(),
            hops = r.stats.hops.unwrap_or(0),
            requests = r.stats.requests,
            responses = r.stats.responses,
            failures = r.stats.failures,
            ms = u64::try_from(r.stats.duration.as_millis()).unwrap_or(u64::MAX),
            timed_out = r.stats.timed_out,
            "query finished"
        );
        let acked = r.store.map_or(0, |(_, a)| a);
        let result = match r.goal {
            Goal::FindNode => QueryResult::FindNode {
                target: *r.query.target(),
                closest: r
                    .query
                    .closest_succeeded()
                    .into_iter()
                    .map(|q| q.info.clone())
                    .collect(),
            },
            Goal::GetValue(key) => QueryResult::GetValue {
                key,
                record: r.record,
            },
            Goal::PutValue(rec) => QueryResult::PutValue {
                key: rec.key,
                stored: acked,
            },
            Goal::AddProvider(key) => QueryResult::AddProvider { key, stored: acked },
            Goal::GetProviders(key) => QueryResult::GetProviders {
                key,
                providers: r.providers,
            },
        };
        match r.origin {
            Origin::App => self.events.push_back(Event::QueryFinished {
                id,
                result,
                stats: r.stats,
            }),
            Origin::Bootstrap => {
                self.events.push_back(Event::Bootstrapped {
                    peers: self.table.len(),
                });
                self.refresh(now, Duration::ZERO);
            }
            Origin::Background => {}
        }
    }

    /// Looks up a made-up key in every bucket not looked into for `interval`.
    fn refresh(&mut self, now: Time, interval: Duration) {
        if self.table.is_empty() {
            return;
        }
        for idx in self.table.stale_buckets(now, interval) {
            let target = self
                .local_key
                .in_bucket(idx, &now.as_millis().to_be_bytes());
            self.start(now, target, Goal::FindNode, Origin::Background);
        }
    }

    fn maintain(&mut self, now: Time) {
        self.next_maintenance = Some(now + self.config.maintenance_interval);
        self.store.expire(now);
        // Our own records: re-put until they expire.
        self.published.retain(|_, (rec, _)| rec.expires > now);
        let due: Vec<Record> = self
            .published
            .values_mut()
            .filter(|(_, at)| *at <= now)
            .map(|(rec, at)| {
                *at = now + self.config.republish_interval;
                rec.clone()
            })
            .collect();
        for rec in due {
            let key = rec.dht_key();
            self.start(now, key, Goal::PutValue(rec), Origin::Background);
        }
        // Our provider announcements.
        let due: Vec<Vec<u8>> = self
            .provided
            .values_mut()
            .filter(|(_, at)| *at <= now)
            .map(|(key, at)| {
                *at = now + self.config.provider_republish_interval;
                key.clone()
            })
            .collect();
        for key in due {
            let dht_key = Key::hash(&key);
            let me = PeerInfo {
                peer_id: self.local,
                addrs: self.config.local_addrs.clone(),
            };
            self.store
                .add_provider(dht_key, me, now + self.config.provider_ttl);
            self.start(now, dht_key, Goal::AddProvider(key), Origin::Background);
        }
        // Records held for others that nobody re-sent lately.
        if let Some(interval) = self.config.replicate_interval {
            for rec in self.store.due_for_replication(now, interval) {
                let key = rec.dht_key();
                self.start(now, key, Goal::PutValue(rec), Origin::Background);
            }
        }
        let interval = self.config.refresh_interval;
        self.refresh(now, interval);
    }
}
