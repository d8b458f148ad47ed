//! What the browse side knows, sans-IO: service instances → peers.
//!
//! The daemon reports instances (`<label>._knotwork._udp.local.`) resolved
//! and removed; one peer may have several instances (one per interface it
//! announces on, and we may hear it on several of ours). [`Browser`] keeps
//! the decoded record of each instance and reports per peer:
//! [`DiscoveryEvent::Discovered`] when a peer first appears or its merged
//! address list changes, [`DiscoveryEvent::Expired`] once, when its last
//! instance goes (goodbye or TTL expiry).
//!
//! Only addresses on the link the announcement came from are kept: each
//! must lie in a subnet of an interface it was heard on (so a packet from
//! off the link cannot make us dial the internet, or anything else). A
//! record left without address is refused ([`MdnsError::OffLink`]).
//!
//! A malformed record is returned as an error for the caller to log and
//! leaves the state as it was. Records carrying our own PeerId are ignored.

use std::collections::BTreeMap;

use knotwork_core::{DiscoveredPeer, DiscoveryEvent, DiscoverySource, PeerAddr, PeerId};

use crate::error::MdnsError;
use crate::plan::IpNet;
use crate::txt::{self, TxtLimits};

/// Most service instances a [`Browser`] keeps: a LAN that announces more
/// (a flood) gets the rest ignored, not our memory.
pub const MAX_INSTANCES: usize = 1024;

/// Instance records and the peers they add up to.
#[derive(Debug)]
pub struct Browser {
    limits: TxtLimits,
    local: Option<PeerId>,
    /// Lowercased instance full name → the peer its record announces.
    instances: BTreeMap<String, DiscoveredPeer>,
}

impl Browser {
    /// An empty browser that decodes records within `limits`.
    pub fn new(limits: TxtLimits) -> Self {
        Self {
            limits,
            local: None,
            instances: BTreeMap::new(),
        }
    }

    /// Sets our own PeerId: records carrying it are ignored from now on.
    pub fn set_local(&mut self, peer_id: PeerId) {
        self.local = Some(peer_id);
    }

    /// An instance was resolved (or its record changed) from packets heard
    /// on interfaces with subnets `heard_on`: decodes `entries`, keeps the
    /// addresses in those subnets, and returns the resulting events, or why
    /// the record was rejected.
    pub fn handle_resolved<'a>(
        &mut self,
        instance: &str,
        entries: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
        heard_on: &[IpNet],
    ) -> Result<Vec<DiscoveryEvent>, MdnsError> {
        let mut peer = txt::decode(entries, self.limits)?;
        let announced = peer.addrs.len();
        peer.addrs.retain(|a| match a {
            PeerAddr::Tcp(sa) => heard_on.iter().any(|n| n.contains(sa.ip())),
            _ => false,
        });
        if announced > 0 && peer.addrs.is_empty() {
            return Err(MdnsError::OffLink { announced });
        }
        let key = instance.to_ascii_lowercase();
        if Some(peer.peer_id) == self.local {
            return Ok(self.handle_removed(&key));
        }
        if self.instances.len() >= MAX_INSTANCES && !self.instances.contains_key(&key) {
            return Err(MdnsError::TooManyInstances { max: MAX_INSTANCES });
        }
        let mut affected = vec![peer.peer_id];
        match self.instances.get(&key) {
            Some(old) if old.peer_id != peer.peer_id => affected.push(old.peer_id),
            _ => {}
        }
        let before: Vec<_> = affected.iter().map(|p| self.merged(p)).collect();
        self.instances.insert(key, peer);
        Ok(self.changes(&affected, before))
    }

    /// An instance was removed (goodbye or TTL expiry).
    pub fn handle_removed(&mut self, instance: &str) -> Vec<DiscoveryEvent> {
        let key = instance.to_ascii_lowercase();
        let Some(peer_id) = self.instances.get(&key).map(|p| p.peer_id) else {
            return Vec::new();
        };
        let before = vec![self.merged(&peer_id)];
        self.instances.remove(&key);
        self.changes(&[peer_id], before)
    }

    /// Every peer known now, addresses merged over its instances.
    pub fn peers(&self) -> Vec<DiscoveredPeer> {
        let mut ids: Vec<PeerId> = self.instances.values().map(|p| p.peer_id).collect();
        ids.sort();
        ids.dedup();
        ids.iter().filter_map(|id| self.merged(id)).collect()
    }

    /// The peer `id` over all its instances (addresses in instance order,
    /// without repeats), or `None` if no instance announces it.
    fn merged(&self, id: &PeerId) -> Option<DiscoveredPeer> {
        let mut found = false;
        let mut addrs: Vec<PeerAddr> = Vec::new();
        for peer in self.instances.values().filter(|p| p.peer_id == *id) {
            found = true;
            for a in &peer.addrs {
                if !addrs.contains(a) {
                    addrs.push(a.clone());
                }
            }
        }
        found.then_some(DiscoveredPeer {
            peer_id: *id,
            addrs,
            source: DiscoverySource::Mdns,
        })
    }

    fn changes(&self, ids: &[PeerId], before: Vec<Option<DiscoveredPeer>>) -> Vec<DiscoveryEvent> {
        ids.iter()
            .zip(before)
            .filter_map(|(id, before)| {
                let after = self.merged(id);
                if after == before {
                    return None;
                }
                Some(match after {
                    Some(peer) => DiscoveryEvent::Discovered(peer),
                    None => DiscoveryEvent::Expired {
                        peer_id: *id,
                        source: DiscoverySource::Mdns,
                    },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txt::{TxtEntry, encode};
    use knotwork_core::{Keypair, LocalPeerInfo};

    fn id() -> PeerId {
        Keypair::generate().unwrap().peer_id()
    }

    fn record(peer_id: PeerId, addrs: &[&str]) -> Vec<TxtEntry> {
        let info = LocalPeerInfo {
            peer_id,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        encode(&info, TxtLimits::DEFAULT).unwrap()
    }

    /// The subnets the test records are heard on.
    fn lan() -> Vec<IpNet> {
        vec![
            IpNet::new("10.0.0.9".parse().unwrap(), 24),
            IpNet::new("192.168.0.9".parse().unwrap(), 24),
        ]
    }

    fn entries(rec: &[TxtEntry]) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        rec.iter().map(|e| (e.key.as_str(), e.value.as_deref()))
    }

    fn resolve(b: &mut Browser, instance: &str, rec: &[TxtEntry]) -> Vec<DiscoveryEvent> {
        b.handle_resolved(instance, entries(rec), &lan()).unwrap()
    }

    fn discovered(peer_id: PeerId, addrs: &[&str]) -> DiscoveryEvent {
        DiscoveryEvent::Discovered(DiscoveredPeer {
            peer_id,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            source: DiscoverySource::Mdns,
        })
    }

    fn expired(peer_id: PeerId) -> DiscoveryEvent {
        DiscoveryEvent::Expired {
            peer_id,
            source: DiscoverySource::Mdns,
        }
    }

    #[test]
    fn two_instances_of_one_peer_merge_and_expire_once() {
        let p = id();
        let mut b = Browser::new(TxtLimits::DEFAULT);
        let eth = record(p, &["tcp/10.0.0.1:1"]);
        let wlan = record(p, &["tcp/192.168.0.1:1"]);
        assert_eq!(
            resolve(&mut b, "x-2._k._udp.local.", &eth),
            [discovered(p, &["tcp/10.0.0.1:1"])]
        );
        // The same record again changes nothing.
        assert_eq!(resolve(&mut b, "X-2._k._udp.local.", &eth), []);
        assert_eq!(
            resolve(&mut b, "x-3._k._udp.local.", &wlan),
            [discovered(p, &["tcp/10.0.0.1:1", "tcp/192.168.0.1:1"])]
        );
        assert_eq!(b.peers().len(), 1);
        assert_eq!(
            b.handle_removed("x-2._k._udp.local."),
            [discovered(p, &["tcp/192.168.0.1:1"])]
        );
        assert_eq!(b.handle_removed("x-3._k._udp.local."), [expired(p)]);
        assert_eq!(b.handle_removed("x-3._k._udp.local."), []);
        assert!(b.peers().is_empty());
    }

    #[test]
    fn malformed_record_is_an_error_and_changes_nothing() {
        let p = id();
        let mut b = Browser::new(TxtLimits::DEFAULT);
        resolve(&mut b, "a._k._udp.local.", &record(p, &["tcp/10.0.0.1:1"]));
        let err = b
            .handle_resolved("a._k._udp.local.", [("v", Some(&b"1"[..]))], &lan())
            .unwrap_err();
        assert_eq!(err, MdnsError::MissingId);
        assert_eq!(b.peers().len(), 1);
    }

    #[test]
    fn instances_are_capped() {
        let mut b = Browser::new(TxtLimits::DEFAULT);
        let rec = record(id(), &[]);
        for i in 0..MAX_INSTANCES {
            resolve(&mut b, &format!("i{i}._k._udp.local."), &rec);
        }
        assert_eq!(
            b.handle_resolved("one-more._k._udp.local.", entries(&rec), &lan())
                .unwrap_err(),
            MdnsError::TooManyInstances { max: MAX_INSTANCES }
        );
        // A known instance may still change.
        resolve(&mut b, "i0._k._udp.local.", &record(id(), &[]));
    }

    #[test]
    fn own_records_are_ignored() {
        let me = id();
        let mut b = Browser::new(TxtLimits::DEFAULT);
        b.set_local(me);
        assert_eq!(resolve(&mut b, "me._k._udp.local.", &record(me, &[])), []);
        assert!(b.peers().is_empty());
    }

    #[test]
    fn instance_that_changes_peer_expires_the_old_one() {
        let (p, q) = (id(), id());
        let mut b = Browser::new(TxtLimits::DEFAULT);
        resolve(&mut b, "a._k._udp.local.", &record(p, &[]));
        assert_eq!(
            resolve(&mut b, "a._k._udp.local.", &record(q, &[])),
            [discovered(q, &[]), expired(p)]
        );
    }

    #[test]
    fn m10_addresses_off_the_receiving_interfaces_subnets_are_dropped() {
        let p = id();
        let mut b = Browser::new(TxtLimits::DEFAULT);
        let off_link = record(
            p,
            &[
                "tcp/203.0.113.9:1",
                "tcp/127.0.0.1:1",
                "tcp/169.254.169.254:80",
                "tcp/10.0.1.1:1",
            ],
        );
        assert_eq!(
            b.handle_resolved("a._k._udp.local.", entries(&off_link), &lan()),
            Err(MdnsError::OffLink { announced: 4 })
        );
        assert!(b.peers().is_empty(), "no Discovered, nothing kept");
        let mixed = record(p, &["tcp/203.0.113.9:1", "tcp/10.0.0.7:1"]);
        assert_eq!(
            resolve(&mut b, "a._k._udp.local.", &mixed),
            [discovered(p, &["tcp/10.0.0.7:1"])]
        );
        // Heard on no known interface: nothing is on-link.
        let q = id();
        assert!(
            b.handle_resolved(
                "b._k._udp.local.",
                entries(&record(q, &["tcp/10.0.0.8:1"])),
                &[]
            )
            .is_err()
        );
    }
}
