//! Answering requests: who enters the routing table, what is stored, what
//! goes back.
//!
//! A server answers every request it can decode, and a response only ever
//! goes back to the peer that asked (see [`Transmit::is_response`]). The
//! sender enters the routing table at `from_addr` unless it is a client or
//! the request is a liveness check of us (no introduction). A client's
//! request removes it from the table and reports [`Event::PeerEvicted`], so
//! whoever learned of it from [`Event::PeerAdded`] forgets it too.
//!
//! Storing requests cost this node memory and, for records, a signature
//! check, so they are taken only for keys this node is among the k closest
//! to ([`DhtError::NotClosest`]), within the store's quotas; a record
//! identical to the one held is acknowledged without checking it again.

use knotwork_core::{PeerAddr, PeerId};

use super::{Dht, Event, Expect, Purpose, Transmit};
use crate::DhtError;
use crate::config::Mode;
use crate::key::Key;
use crate::message::{
    DhtMessage, PeerInfo, Request, Response, WirePeer, addrs_from_wire, subnet_of,
};
use crate::record::Record;
use crate::table::InsertOutcome;
use crate::time::Time;

impl Dht {
    /// Inserts a peer we heard from; starts a liveness check if its bucket
    /// is full. A refusal (subnet limit) is not the message's fault.
    pub(super) fn heard_from(&mut self, now: Time, peer: PeerId, addr: &PeerAddr) {
        if let Ok(out) = self.table.insert(now, peer, std::slice::from_ref(addr)) {
            self.after_insert(now, peer, &out);
        }
    }

    pub(super) fn after_insert(&mut self, now: Time, peer: PeerId, out: &InsertOutcome) {
        match out {
            InsertOutcome::Inserted => self.events.push_back(Event::PeerAdded(peer)),
            InsertOutcome::Full { ping: Some(lrs) } => {
                let lrs = lrs.clone();
                self.send_request(now, &lrs, None, Request::Ping, Expect::Pong, Purpose::Ping);
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

    pub(super) fn on_request(
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
            if self.table.remove(&from) {
                self.events.push_back(Event::PeerEvicted(from));
            }
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
                self.store_record(now, &from, record)?;
                Response::Stored
            }
            Request::AddProvider { key, addrs } => {
                self.check_key(&key)?;
                let dht_key = Key::hash(&key);
                if !self.among_closest(&dht_key, &from) {
                    return Err(DhtError::NotClosest);
                }
                let mut addrs = addrs_from_wire(&addrs, self.subnet_max())?;
                if addrs.is_empty() {
                    addrs.push(from_addr.clone());
                }
                let info = PeerInfo {
                    peer_id: from,
                    addrs,
                };
                let subnet = subnet_of(&from_addr).map(|s| s.operator());
                let expires = now + self.config.provider_ttl;
                self.store.add_provider(dht_key, info, expires, subnet)?;
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
        self.transmits.push_back(Transmit {
            to: from,
            addrs: vec![from_addr],
            heard_from: None,
            message: DhtMessage::Response { id, body: response },
        });
        Ok(())
    }

    /// Stores a record a peer sent, cheapest checks first: a copy of what
    /// is held is taken as is (it was checked when it first came, and being
    /// sent again postpones its replication); then closeness, the store's
    /// policy, and last the record's own checks (the signature last of all).
    fn store_record(&mut self, now: Time, from: &PeerId, record: Record) -> Result<(), DhtError> {
        let at = self.replicate_at(now);
        if self.store.holds(&record, now) {
            return self.store.put(record, at, now);
        }
        if !self.among_closest(&record.dht_key(), from) {
            return Err(DhtError::NotClosest);
        }
        self.store.admits(&record, now)?;
        record.validate(now, &self.config.record_limits)?;
        self.store.put(record, at, now)
    }
}
