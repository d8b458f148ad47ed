//! The addresses a node advertises: its bound listen addresses first, then
//! what its services contribute (an external address peers confirmed, a
//! relayed address, a UPnP mapping), each service through its own
//! [`AddrContribution`].
//!
//! The advertised list goes to every peer in the version exchange, and
//! services that publish it (the DHT's peer record) follow its changes with
//! [`NodeHandle::watch_advertised`](crate::NodeHandle::watch_advertised).

use std::sync::{Arc, Mutex, OnceLock};

use knotwork_core::{PeerAddr, lock};
use tokio::sync::watch;

/// Contributed addresses per contribution, at most; more are cut.
pub const MAX_CONTRIBUTED: usize = 16;

struct Entry {
    id: u64,
    source: &'static str,
    addrs: Vec<PeerAddr>,
}

#[derive(Default)]
struct Contributions {
    next_id: u64,
    entries: Vec<Entry>,
}

/// The node's address book; see the module docs.
pub(crate) struct AddrBook {
    listen: OnceLock<Vec<PeerAddr>>,
    contributions: Mutex<Contributions>,
    advertised: watch::Sender<Vec<PeerAddr>>,
}

impl AddrBook {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            listen: OnceLock::new(),
            contributions: Mutex::new(Contributions::default()),
            advertised: watch::Sender::new(Vec::new()),
        })
    }

    /// The bound listen addresses (empty before the node started).
    pub(crate) fn listen(&self) -> &[PeerAddr] {
        self.listen.get().map(Vec::as_slice).unwrap_or_default()
    }

    /// Sets the bound listen addresses, once.
    pub(crate) fn set_listen(&self, addrs: Vec<PeerAddr>) {
        let _ = self.listen.set(addrs);
        self.publish(&lock(&self.contributions));
    }

    /// What the node advertises now.
    pub(crate) fn advertised(&self) -> Vec<PeerAddr> {
        self.advertised.borrow().clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Vec<PeerAddr>> {
        self.advertised.subscribe()
    }

    /// The contributions by source, in the order they were made.
    pub(crate) fn contributions(&self) -> Vec<(&'static str, Vec<PeerAddr>)> {
        lock(&self.contributions)
            .entries
            .iter()
            .map(|e| (e.source, e.addrs.clone()))
            .collect()
    }

    pub(crate) fn contribute(self: &Arc<Self>, source: &'static str) -> AddrContribution {
        let mut c = lock(&self.contributions);
        let id = c.next_id;
        c.next_id += 1;
        c.entries.push(Entry {
            id,
            source,
            addrs: Vec::new(),
        });
        AddrContribution {
            book: self.clone(),
            id,
        }
    }

    fn update(&self, id: u64, addrs: Option<Vec<PeerAddr>>) {
        let mut c = lock(&self.contributions);
        match addrs {
            Some(mut addrs) => {
                addrs.truncate(MAX_CONTRIBUTED);
                if let Some(e) = c.entries.iter_mut().find(|e| e.id == id) {
                    if e.addrs == addrs {
                        return;
                    }
                    e.addrs = addrs;
                }
            }
            None => c.entries.retain(|e| e.id != id),
        }
        self.publish(&c);
    }

    /// Recomputes the advertised list (listen, then contributions, without
    /// repeats) and tells the watchers if it changed.
    fn publish(&self, c: &Contributions) {
        let mut all: Vec<PeerAddr> = self.listen().to_vec();
        for addr in c.entries.iter().flat_map(|e| &e.addrs) {
            if !all.contains(addr) {
                all.push(addr.clone());
            }
        }
        self.advertised.send_if_modified(|current| {
            let changed = *current != all;
            if changed {
                *current = all;
            }
            changed
        });
    }
}

/// One service's share of the advertised addresses (see the module docs);
/// from [`NodeHandle::contribute_addrs`](crate::NodeHandle::contribute_addrs).
/// Dropping it withdraws its addresses.
pub struct AddrContribution {
    book: Arc<AddrBook>,
    id: u64,
}

impl std::fmt::Debug for AddrContribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddrContribution")
            .field("addrs", &self.get())
            .finish_non_exhaustive()
    }
}

impl AddrContribution {
    /// Replaces this contribution's addresses (at most [`MAX_CONTRIBUTED`]).
    pub fn set(&self, addrs: Vec<PeerAddr>) {
        self.book.update(self.id, Some(addrs));
    }

    /// Adds `addr` unless it is there already.
    pub fn add(&self, addr: PeerAddr) {
        let mut addrs = self.get();
        if !addrs.contains(&addr) {
            addrs.push(addr);
            self.set(addrs);
        }
    }

    /// Removes `addr`.
    pub fn remove(&self, addr: &PeerAddr) {
        let mut addrs = self.get();
        addrs.retain(|a| a != addr);
        self.set(addrs);
    }

    /// This contribution's addresses now.
    pub fn get(&self) -> Vec<PeerAddr> {
        lock(&self.book.contributions)
            .entries
            .iter()
            .find(|e| e.id == self.id)
            .map(|e| e.addrs.clone())
            .unwrap_or_default()
    }
}

impl Drop for AddrContribution {
    fn drop(&mut self) {
        self.book.update(self.id, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PeerAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listen_first_then_contributions_in_order_without_repeats() {
        let book = AddrBook::new();
        let observed = book.contribute("observed");
        let upnp = book.contribute("upnp");
        book.set_listen(vec![a("tcp/10.0.0.1:4000")]);
        upnp.set(vec![a("tcp/203.0.113.1:4000")]);
        observed.set(vec![a("tcp/198.51.100.1:4000"), a("tcp/203.0.113.1:4000")]);
        assert_eq!(
            book.advertised(),
            vec![
                a("tcp/10.0.0.1:4000"),
                a("tcp/198.51.100.1:4000"),
                a("tcp/203.0.113.1:4000"),
            ]
        );
        drop(observed);
        assert_eq!(
            book.advertised(),
            vec![a("tcp/10.0.0.1:4000"), a("tcp/203.0.113.1:4000")]
        );
        assert_eq!(book.contributions().len(), 1);
    }

    #[tokio::test]
    async fn watchers_see_changes_and_only_changes() {
        let book = AddrBook::new();
        let mut watch = book.watch();
        let relayed = book.contribute("relayed");
        relayed.add(a("mem/9"));
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), vec![a("mem/9")]);
        relayed.add(a("mem/9"));
        assert!(!watch.has_changed().unwrap());
        relayed.remove(&a("mem/9"));
        assert!(watch.has_changed().unwrap());
        assert!(watch.borrow_and_update().is_empty());
    }

    #[test]
    fn a_contribution_is_capped() {
        let book = AddrBook::new();
        let c = book.contribute("many");
        c.set((0..100).map(PeerAddr::Mem).collect());
        assert_eq!(c.get().len(), MAX_CONTRIBUTED);
    }
}
