//! Keeping connections: reconnecting to seeds and manual peers with backoff,
//! and the maintenance loop (ban expiry, the refinery that verifies grey
//! hosts, filling outbound slots from the white list).

use std::sync::Arc;

use knotwork_core::{DialAddr, PeerAddr};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::dial::{DialCause, DialOpts};
use crate::error::NodeError;
use crate::hosts::netgroup;
use crate::node::{Shared, lock};
use crate::registry::SessionKind;
use crate::session::{dial, probe};

/// Keeps a channel to `addr` open, reconnecting with backoff, until shutdown.
pub(crate) async fn keep_connected(shared: Arc<Shared>, target: DialAddr, cause: DialCause) {
    let mut backoff = Backoff::new(shared.config.backoff);
    let addr = target.addr;
    let mut opts = DialOpts::new(cause);
    opts.peer = target.peer;
    loop {
        let channel = match dial(&shared, &addr, opts).await {
            Ok(channel) => Some(channel),
            Err(NodeError::ShuttingDown) => return,
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}");
                None
            }
        };
        if let Some(channel) = channel {
            let reason = tokio::select! {
                reason = channel.closed() => reason,
                () = shared.shutdown.cancelled() => return,
            };
            // A refusal that needs our identity (a ban) comes as a
            // `Disconnect` right after the handshake: a failed dial, not a
            // channel that worked and starts the backoff over.
            if !reason.refused_after_handshake() {
                backoff.on_success();
            }
        }
        let at = backoff.on_failure(Instant::now().into_std(), fastrand::u64(..));
        tokio::select! {
            () = tokio::time::sleep_until(Instant::from_std(at)) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Every [`NodeConfig::maintenance_interval`](crate::NodeConfig::maintenance_interval):
/// expire bans, let the refinery verify one grey host, fill outbound slots.
pub(crate) async fn maintenance(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.shutdown.cancelled() => return,
        }
        lock(&shared.bans).expire(Instant::now().into_std());
        refine(&shared).await;
        fill_outbound(&shared);
    }
}

/// Addresses the node is connected to or dialing, and its own.
fn busy_addrs(shared: &Shared) -> Vec<PeerAddr> {
    let mut busy: Vec<PeerAddr> = shared.own_addrs().to_vec();
    for c in lock(&shared.peers).values() {
        busy.push(c.remote_addr().clone());
        busy.extend(c.info().version.parsed_listen_addrs().unwrap_or_default());
    }
    busy.extend(lock(&shared.dials).addrs().cloned());
    busy
}

/// The refinery: probes the oldest grey host with a handshake (no channel)
/// and whitelists it if a knotwork node answers, forgets it otherwise.
async fn refine(shared: &Arc<Shared>) {
    let Some(addr) = lock(&shared.hosts).next_grey() else {
        return;
    };
    let now = Instant::now().into_std();
    if busy_addrs(shared).contains(&addr) {
        // Already connected to it: verified.
        lock(&shared.hosts).promote(&addr, now);
        return;
    }
    let result = probe(shared, &addr, None).await;
    let mut hosts = lock(&shared.hosts);
    match result {
        Ok(peer) if peer != shared.peer_id => {
            tracing::debug!(%addr, peer = %peer.short(), "refinery: whitelisted");
            hosts.promote(&addr, now);
        }
        _ => {
            tracing::debug!(%addr, "refinery: unreachable, forgotten");
            hosts.forget(&addr);
        }
    }
}

/// Dials white hosts until the outbound slots are full.
fn fill_outbound(shared: &Arc<Shared>) {
    let outbound = lock(&shared.peers)
        .values()
        .filter(|c| c.info().session == SessionKind::Outbound)
        .count();
    let dialing = lock(&shared.dials).in_flight(DialCause::Slots);
    let free = shared
        .config
        .outbound_slots
        .saturating_sub(outbound + dialing);
    if free == 0 {
        return;
    }
    let busy = busy_addrs(shared);
    let now = Instant::now().into_std();
    // One outbound peer per netgroup, the groups we have excluded.
    let used: Vec<_> = lock(&shared.peers)
        .values()
        .filter(|c| c.info().session == SessionKind::Outbound)
        .map(|c| netgroup(c.remote_addr()))
        .collect();
    let candidates = {
        let bans = lock(&shared.bans);
        lock(&shared.hosts).outbound_candidates(free, &used, fastrand::u64(..), |a| {
            busy.contains(a) || bans.is_addr_banned(a, now)
        })
    };
    for addr in candidates {
        let node = shared.clone();
        // The dial registers itself in the gate before its first await, so
        // the next tick counts it as in flight.
        shared.spawn_task(async move {
            if let Err(e) = dial(&node, &addr, DialOpts::new(DialCause::Slots)).await {
                tracing::debug!(%addr, "outbound dial failed: {e}");
                if !matches!(e, NodeError::AlreadyConnected(_)) {
                    lock(&node.hosts).forget(&addr);
                }
            }
        });
    }
}
