//! The relay protocol on one channel: the relay side (reservations,
//! circuits, forwarding) when the service is on, and this node's circuit
//! ends through the peer. Nothing in the loop waits for another peer: the
//! relay hands data to a circuit's bounded queues, an end to its circuit's
//! bounded stream buffer, and circuits are opened by jobs of their own.

use std::sync::Arc;

use knotwork_node::Channel;

use super::{
    Accepted, Connect, Connected, FromRelay, Incoming, RelayError, RelayService, Reserve, Reserved,
    ToRelay, peer_of,
};
use crate::Inner;
use crate::relay::RelayClient;

/// Runs when the channel closes (and aborts the protocol's job): the
/// channel's reservation and circuits go, at the relay and at our end.
struct Cleanup(Channel, Option<Arc<RelayService>>, Arc<RelayClient>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.2.relay_gone(self.0.remote_peer_id());
        if let Some(service) = &self.1 {
            service.channel_gone(&self.0);
        }
    }
}

/// Logs the refusal of the peer of `channel`'s `what`, with why.
fn refused(channel: &Channel, what: &str, why: &RelayError) {
    tracing::info!(
        peer = %channel.remote_peer_id().short(),
        addr = %channel.remote_addr(),
        "{what} refused: {why}"
    );
}

/// The relay protocol on `channel`: serves reservations and circuits if the
/// service is on (refuses them with [`RelayError::Disabled`] otherwise) and
/// carries the circuits this node is an end of.
pub(crate) fn protocol(
    channel: &Channel,
    nat: Arc<Inner>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let mut reserves = channel.subscribe_requests::<Reserve>();
    let mut connects = channel.subscribe_requests::<Connect>();
    let mut incomings = channel.subscribe_requests::<Incoming>();
    let mut to_relay = channel.subscribe::<ToRelay>();
    let mut from_relay = channel.subscribe::<FromRelay>();
    let channel = channel.clone();
    async move {
        let peer = channel.remote_peer_id();
        let (service, client) = (nat.service.clone(), nat.client.clone());
        let _cleanup = Cleanup(channel.clone(), service.clone(), client.clone());
        loop {
            tokio::select! {
                Some((Reserve, responder)) = reserves.recv() => {
                    let answer = match &service {
                        Some(s) => s.reserve(&channel),
                        None => Err(RelayError::Disabled),
                    };
                    if let Err(e) = &answer {
                        refused(&channel, "reservation", e);
                    }
                    let _ = responder.respond(&Reserved(answer)).await;
                }
                Some((Connect { target }, responder)) = connects.recv() => {
                    let (service, from) = (service.clone(), channel.clone());
                    channel.spawn(async move {
                        let answer = match (service, peer_of(&target)) {
                            (None, _) => Err(RelayError::Disabled),
                            (Some(_), None) => Err(RelayError::NoReservation),
                            (Some(s), Some(target)) => s.connect(&from, target).await,
                        };
                        if let Err(e) = &answer {
                            refused(&from, "circuit", e);
                        }
                        let _ = responder.respond(&Connected(answer)).await;
                    });
                }
                Some((Incoming { circuit, from, from_addr }, responder)) = incomings.recv() => {
                    let answer = match nat.node() {
                        Some(node) => client.incoming(&node, &channel, circuit, &from, &from_addr),
                        None => Err(RelayError::TargetRefused),
                    };
                    if let Err(e) = &answer {
                        refused(&channel, "incoming circuit", e);
                    }
                    let _ = responder.respond(&Accepted(answer)).await;
                }
                Some(msg) = to_relay.recv() => if let Some(s) = &service {
                    match msg {
                        ToRelay::Data { circuit, data } => s.forward(&channel, circuit, data),
                        ToRelay::Credit { circuit, chunks } => s.credit(&channel, circuit, chunks),
                        ToRelay::Close { circuit } => s.close(&channel, circuit),
                    }
                },
                Some(msg) = from_relay.recv() => match msg {
                    FromRelay::Data { circuit, data } => client.deliver(peer, circuit, data),
                    FromRelay::Credit { circuit, chunks } => client.credit(peer, circuit, chunks),
                    FromRelay::Close { circuit, reason } => {
                        if let Some(reason) = reason {
                            tracing::debug!(relay = %peer.short(), circuit, %reason, "circuit closed by relay");
                        }
                        client.closed(peer, circuit);
                    }
                },
                else => return,
            }
        }
    }
}
