//! Running queries: requests out, responses and timeouts in.
//!
//! A query ([`Query`]) says whom to ask next; this file sends the requests,
//! matches each response to its request (it must come from the peer asked,
//! and be of the kind asked for), checks what it lists, and moves the query
//! on. A lookup done, storing goals send their record or announcement to
//! the closest peers that answered.

use std::time::Duration;

use knotwork_core::{PeerAddr, PeerId};

use super::{
    Dht, Event, Expect, Goal, Origin, Outstanding, Parsed, Purpose, QueryId, QueryResult,
    QueryStats, Running, Transmit,
};
use crate::DhtError;
use crate::config::Mode;
use crate::key::Key;
use crate::message::{DhtMessage, PeerInfo, Request, Response, WireAddr, WirePeer};
use crate::query::Query;
use crate::record::Record;
use crate::table::{Entry, Failed};
use crate::time::Time;

impl Dht {
    /// Sends `body` to `to` (whose addresses `via` listed, if a peer did)
    /// and waits for a response of kind `expect`.
    pub(super) fn send_request(
        &mut self,
        now: Time,
        to: &PeerInfo,
        via: Option<PeerAddr>,
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
            heard_from: via,
            message: DhtMessage::Request {
                id,
                client: self.config.mode == Mode::Client,
                body,
            },
        });
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

    pub(super) fn on_response(
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
                            r.query
                                .on_success(path, &from, closer, &self.local, &from_addr);
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
                            Goal::GetValue(k, by) => Some((k, by)),
                            _ => None,
                        });
                        if wanted.is_some_and(|(k, _)| *k != rec.key) {
                            return Err(DhtError::WrongKey);
                        }
                        rec.validate(now, &self.config.record_limits)?;
                        // Another publisher's record is valid, just not
                        // the one asked for: the lookup goes on.
                        let by = wanted.and_then(|(_, by)| *by);
                        by.is_none_or(|p| p == rec.publisher).then_some(rec)
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

    pub(super) fn request_failed(&mut self, now: Time, o: Outstanding) {
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
                self.send_request(now, &lrs, None, Request::Ping, Expect::Pong, Purpose::Ping);
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

    pub(super) fn start(&mut self, now: Time, target: Key, goal: Goal, origin: Origin) -> QueryId {
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
            Goal::GetValue(_, by) => self
                .store
                .get(&target, now)
                .filter(|r| by.is_none_or(|p| p == r.publisher))
                .cloned(),
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
            Goal::GetValue(..) => r.record.is_some(),
            Goal::GetProviders(_) => r.providers.len() >= k,
            _ => false,
        };
        if !done_early && !r.query.is_finished() {
            let contacts = r.query.next_contacts();
            let body = match &r.goal {
                Goal::FindNode | Goal::PutValue(_) | Goal::AddProvider(_) => Request::FindNode {
                    target: *r.query.target().as_bytes(),
                },
                Goal::GetValue(key, _) => Request::GetValue { key: key.clone() },
                Goal::GetProviders(key) => Request::GetProviders { key: key.clone() },
            };
            let expect = match r.goal {
                Goal::GetValue(..) => Expect::Value,
                Goal::GetProviders(_) => Expect::Providers,
                _ => Expect::Nodes,
            };
            r.stats.requests += contacts.len() as u32;
            for c in contacts {
                let purpose = Purpose::Lookup {
                    query: id,
                    path: c.path,
                };
                self.send_request(now, &c.peer, c.via, body.clone(), expect, purpose);
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
        let targets: Vec<(PeerInfo, Option<PeerAddr>)> = r
            .query
            .closest_succeeded()
            .into_iter()
            .map(|q| (q.info.clone(), q.via.clone()))
            .collect();
        r.store = Some((targets.len(), 0));
        r.stats.requests += targets.len() as u32;
        if targets.is_empty() {
            self.finish(now, id);
            return;
        }
        for (t, via) in targets {
            self.send_request(
                now,
                &t,
                via,
                body.clone(),
                Expect::Stored,
                Purpose::Store { query: id },
            );
        }
    }

    pub(super) fn finish(&mut self, now: Time, id: QueryId) {
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
            Goal::GetValue(key, _) => QueryResult::GetValue {
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
            Origin::Replication => {
                // A slot is free: the next due record at the next timeout
                // (not from here, which may run inside `replicate`).
                self.replicating = self.replicating.saturating_sub(1);
                self.next_replication = Some(now);
            }
        }
    }
}
