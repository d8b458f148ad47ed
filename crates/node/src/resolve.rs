//! Connecting to a peer by its [`PeerId`] alone
//! ([`NodeHandle::connect_peer`](crate::NodeHandle::connect_peer)): the
//! addresses come from unified discovery (mDNS, BLE, the DHT's table, seeds)
//! and from [`PeerResolver`]s services register (the DHT's peer records);
//! direct addresses are tried first, in order, then relayed ones (a relayed
//! channel is then upgraded by hole punching where the NAT service runs).
//! Every step's outcome is kept, and a failure names them all
//! ([`NodeError::Unreachable`]). Concurrent calls for one peer share one
//! attempt.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use knotwork_core::{PeerAddr, PeerId, lock};
use tokio::sync::watch;

use crate::channel::Channel;
use crate::dial::{DialCause, DialOpts};
use crate::error::NodeError;
use crate::node::Shared;

/// Finds addresses of a peer by its identity (the DHT's peer records).
/// Registered with [`Setup::resolver`](crate::Setup::resolver).
#[async_trait]
pub trait PeerResolver: Send + Sync + 'static {
    /// A short name for the outcome of its step (`dht`).
    fn name(&self) -> &'static str;

    /// Addresses `peer` may be reached at, best first; empty if unknown.
    async fn resolve(&self, peer: PeerId) -> Vec<PeerAddr>;
}

/// One step of a [`NodeError::Unreachable`]: where, and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The address dialed, or the resolver asked (`resolve dht`).
    pub step: String,
    /// What happened.
    pub outcome: String,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.outcome)
    }
}

/// How an attempt ended: connected, or the failed steps.
type Outcome = Result<(), Vec<Attempt>>;

/// The connect-by-PeerId attempts under way, by peer: followers wait for
/// the leader's outcome (`None` while running).
#[derive(Default)]
pub(crate) struct Attempts {
    running: HashMap<PeerId, watch::Receiver<Option<Outcome>>>,
}

/// Direct addresses first (in the order given), then relayed ones.
pub(crate) fn order(mut addrs: Vec<PeerAddr>) -> Vec<PeerAddr> {
    let mut seen = Vec::new();
    addrs.retain(|a| {
        let fresh = !seen.contains(a);
        seen.push(a.clone());
        fresh
    });
    addrs.sort_by_key(PeerAddr::is_relayed);
    addrs
}

/// Ends a leading attempt for its followers however its future ends.
struct Leading<'a> {
    shared: &'a Shared,
    peer: PeerId,
    tx: watch::Sender<Option<Outcome>>,
    outcome: Outcome,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        lock(&self.shared.attempts).running.remove(&self.peer);
        let outcome = std::mem::replace(&mut self.outcome, Ok(()));
        self.tx.send_replace(Some(outcome));
    }
}

/// [`NodeHandle::connect_peer`](crate::NodeHandle::connect_peer).
pub(crate) async fn connect_peer(shared: &Arc<Shared>, peer: PeerId) -> Result<Channel, NodeError> {
    if let Some(channel) = lock(&shared.peers).get(&peer) {
        return Ok(channel.clone());
    }
    let follow = {
        let mut attempts = lock(&shared.attempts);
        match attempts.running.get(&peer) {
            Some(rx) => Err(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                attempts.running.insert(peer, rx);
                Ok(tx)
            }
        }
    };
    let tx = match follow {
        Ok(tx) => tx,
        Err(mut rx) => {
            let outcome = rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|o| o.clone());
            return match outcome {
                Some(Ok(())) => crate::session::existing_channel(shared, peer).await,
                Some(Err(attempts)) if attempts.iter().all(|a| a.step.starts_with("resolve ")) => {
                    Err(NodeError::UnknownPeer(peer))
                }
                Some(Err(attempts)) => Err(unreachable_error(peer, attempts)),
                None => Err(NodeError::ShuttingDown),
            };
        }
    };
    let mut leading = Leading {
        shared,
        peer,
        tx,
        outcome: Err(Vec::new()),
    };
    let mut steps = Vec::new();
    let mut addrs: Vec<PeerAddr> = shared
        .discovery
        .peers()
        .into_iter()
        .filter(|p| p.peer == peer)
        .flat_map(|p| p.addrs)
        .collect();
    for resolver in &shared.resolvers {
        let found = resolver.resolve(peer).await;
        if found.is_empty() {
            steps.push(Attempt {
                step: format!("resolve {}", resolver.name()),
                outcome: "not found".to_owned(),
            });
        }
        addrs.extend(found);
    }
    let addrs = order(addrs);
    if addrs.is_empty() {
        leading.outcome = Err(steps);
        return Err(NodeError::UnknownPeer(peer));
    }
    for addr in addrs {
        let opts = DialOpts::new(DialCause::User).peer(peer);
        match crate::session::dial(shared, &addr, opts).await {
            Ok(channel) => {
                leading.outcome = Ok(());
                return Ok(channel);
            }
            Err(e) => steps.push(Attempt {
                step: addr.to_string(),
                outcome: e.to_string(),
            }),
        }
    }
    leading.outcome = Err(steps.clone());
    Err(unreachable_error(peer, steps))
}

/// The error of a failed attempt: nobody knew an address, or every one failed.
fn unreachable_error(peer: PeerId, attempts: Vec<Attempt>) -> NodeError {
    NodeError::Unreachable { peer, attempts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_addresses_come_before_relayed_ones_without_repeats() {
        let relay = knotwork_core::Keypair::generate().unwrap().peer_id();
        let target = knotwork_core::Keypair::generate().unwrap().peer_id();
        let relayed =
            PeerAddr::relayed("tcp/203.0.113.1:4000".parse().unwrap(), relay, target).unwrap();
        let a: PeerAddr = "tcp/198.51.100.1:4000".parse().unwrap();
        let b = PeerAddr::Mem(3);
        let ordered = order(vec![relayed.clone(), a.clone(), b.clone(), a.clone()]);
        assert_eq!(ordered, vec![a, b, relayed]);
    }
}
