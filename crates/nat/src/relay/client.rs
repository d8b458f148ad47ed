//! The ends of circuits: circuits as byte streams with their flow control,
//! the circuits a relay brings us (only from our own relays, within their
//! own limits), and the [`Dialer`] of relayed addresses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use knotwork_core::{PeerAddr, PeerId, TransportError, lock};
use knotwork_node::{
    BoxStream, Channel, DialCause, DialOpts, Dialer, DisconnectReason, NodeError, NodeHandle,
    SessionKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc};

use super::{
    CREDIT_BATCH, Connect, Connected, MAX_CHUNK, Opened, RelayError, Reserve, Reserved,
    STREAM_BUFFER, ToRelay, WINDOW, peer_of, seen_addr,
};

/// A relayed byte stream: one end of a circuit, AsyncRead + AsyncWrite.
pub type CircuitStream = DuplexStream;

/// Relayed inbound handshakes running at once, through all relays together.
/// They have this limit of their own and take none of the node's
/// pending-handshake slots, so a relay cannot lock out direct connections.
pub const MAX_RELAYED_HANDSHAKES: usize = 8;

/// Relayed inbound handshakes running at once through one relay.
pub const MAX_RELAYED_HANDSHAKES_PER_RELAY: usize = 4;

/// This node's end of one circuit. Dropping it (the circuit is gone) ends
/// both pumps of its stream.
struct End {
    /// The peer at the other end.
    peer: PeerId,
    /// Where the relay sees that peer's connection come from.
    peer_addr: Option<SocketAddr>,
    /// Chunks from the relay for the stream: at most a window.
    tx: mpsc::Sender<Bytes>,
    /// Chunks we may still send: the other end's credit.
    credit: Arc<Semaphore>,
}

impl Drop for End {
    fn drop(&mut self) {
        self.credit.close();
    }
}

/// Relayed inbound connections through one relay: handshakes running and
/// channels open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Through {
    handshakes: usize,
    channels: usize,
}

/// The admission of relayed inbound connections (sans-IO): at most
/// [`MAX_RELAYED_HANDSHAKES`] handshakes in total and
/// [`MAX_RELAYED_HANDSHAKES_PER_RELAY`] through one relay, and per relay
/// at most `max_per_relay` connections (handshakes and channels together),
/// as the node allows per IP address.
#[derive(Debug, Default)]
struct InboundCount {
    handshakes: usize,
    relays: HashMap<PeerId, Through>,
}

impl InboundCount {
    fn admit(&mut self, relay: PeerId, max_per_relay: usize) -> Result<(), RelayError> {
        let through = self.relays.get(&relay).copied().unwrap_or_default();
        if self.handshakes >= MAX_RELAYED_HANDSHAKES
            || through.handshakes >= MAX_RELAYED_HANDSHAKES_PER_RELAY
            || through.handshakes + through.channels >= max_per_relay
        {
            return Err(RelayError::LimitInbound);
        }
        self.handshakes += 1;
        self.relays.entry(relay).or_default().handshakes += 1;
        Ok(())
    }

    /// A handshake through `relay` ended: with a channel (`open`) or not.
    fn handshake_done(&mut self, relay: PeerId, open: bool) {
        self.handshakes = self.handshakes.saturating_sub(1);
        if let Some(t) = self.relays.get_mut(&relay) {
            t.handshakes = t.handshakes.saturating_sub(1);
            if open {
                t.channels += 1;
            }
        }
        self.forget_idle(relay);
    }

    fn channel_closed(&mut self, relay: PeerId) {
        if let Some(t) = self.relays.get_mut(&relay) {
            t.channels = t.channels.saturating_sub(1);
        }
        self.forget_idle(relay);
    }

    fn forget_idle(&mut self, relay: PeerId) {
        if self.relays.get(&relay) == Some(&Through::default()) {
            self.relays.remove(&relay);
        }
    }
}

/// One admitted relayed inbound connection, counted until dropped.
struct InboundSlot {
    client: Arc<RelayClient>,
    relay: PeerId,
    open: bool,
}

impl InboundSlot {
    /// The handshake gave a channel: counted as open until dropped.
    fn opened(&mut self) {
        lock(&self.client.inbound).handshake_done(self.relay, true);
        self.open = true;
    }
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut inbound = lock(&self.client.inbound);
        if self.open {
            inbound.channel_closed(self.relay);
        } else {
            inbound.handshake_done(self.relay, false);
        }
    }
}

/// Marks a relay as ours (we hold or are taking a reservation on its
/// channel) until dropped; see [`RelayClient::our_relay`].
pub(crate) struct OurRelay {
    client: Arc<RelayClient>,
    channel: Channel,
}

impl Drop for OurRelay {
    fn drop(&mut self) {
        let peer = self.channel.remote_peer_id();
        let mut relays = lock(&self.client.relays);
        if relays.get(&peer).is_some_and(|c| c.same(&self.channel)) {
            relays.remove(&peer);
        }
    }
}

/// The circuits this node is an end of, by relay and circuit id; the relays
/// it holds reservations with; its relayed inbound connections.
#[derive(Default)]
pub(crate) struct RelayClient {
    circuits: Mutex<HashMap<(PeerId, u64), End>>,
    relays: Mutex<HashMap<PeerId, Channel>>,
    inbound: Mutex<InboundCount>,
}

impl RelayClient {
    /// Turns circuit `circuit` on `relay` to `peer` (seen by the relay at
    /// `peer_addr`) into a byte stream: bytes written to it go out as
    /// [`ToRelay::Data`] within the other end's credit, data from the relay
    /// comes out of it and is credited back as it is read. The pumps run as
    /// jobs of the relay channel.
    pub(crate) fn open(
        self: &Arc<Self>,
        relay: &Channel,
        circuit: u64,
        peer: PeerId,
        peer_addr: Option<SocketAddr>,
    ) -> CircuitStream {
        let (user, inner) = tokio::io::duplex(STREAM_BUFFER);
        let (tx, mut rx) = mpsc::channel::<Bytes>(WINDOW);
        let credit = Arc::new(Semaphore::new(WINDOW));
        let key = (relay.remote_peer_id(), circuit);
        let end = End {
            peer,
            peer_addr,
            tx,
            credit: credit.clone(),
        };
        lock(&self.circuits).insert(key, end);
        let (mut inner_r, mut inner_w) = tokio::io::split(inner);
        let channel = relay.clone();
        relay.spawn(async move {
            let mut consumed = 0u16;
            while let Some(data) = rx.recv().await {
                if inner_w.write_all(&data).await.is_err() {
                    break;
                }
                consumed = consumed.saturating_add(1);
                if usize::from(consumed) >= CREDIT_BATCH {
                    let credit = ToRelay::Credit {
                        circuit,
                        chunks: consumed,
                    };
                    if channel.send(&credit).await.is_err() {
                        break;
                    }
                    consumed = 0;
                }
            }
            let _ = inner_w.shutdown().await;
        });
        let (channel, client) = (relay.clone(), self.clone());
        relay.spawn(async move {
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                let n = match inner_r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Closed when the circuit is gone.
                let Ok(permit) = credit.acquire().await else {
                    break;
                };
                permit.forget();
                let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                if channel
                    .send(&ToRelay::Data { circuit, data })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            lock(&client.circuits).remove(&key);
            let _ = channel.send(&ToRelay::Close { circuit }).await;
        });
        user
    }

    /// Data from the relay for circuit `circuit`, without waiting: a circuit
    /// whose stream is a window behind broke the flow control and is closed.
    pub(crate) fn deliver(&self, relay: PeerId, circuit: u64, data: Bytes) {
        let mut circuits = lock(&self.circuits);
        let Some(end) = circuits.get(&(relay, circuit)) else {
            return;
        };
        match end.tx.try_send(data) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::info!(relay = %relay.short(), circuit, "circuit over its window; closed");
                circuits.remove(&(relay, circuit));
            }
            Err(TrySendError::Closed(_)) => {
                circuits.remove(&(relay, circuit));
            }
        }
    }

    /// The other end of `circuit` consumed `chunks`: we may send as many
    /// more, up to a window.
    pub(crate) fn credit(&self, relay: PeerId, circuit: u64, chunks: u16) {
        if let Some(end) = lock(&self.circuits).get(&(relay, circuit)) {
            let room = WINDOW.saturating_sub(end.credit.available_permits());
            end.credit.add_permits(usize::from(chunks).min(room));
        }
    }

    pub(crate) fn closed(&self, relay: PeerId, circuit: u64) {
        lock(&self.circuits).remove(&(relay, circuit));
    }

    pub(crate) fn relay_gone(&self, relay: PeerId) {
        lock(&self.circuits).retain(|(r, _), _| *r != relay);
    }

    /// Where `relay` sees `peer`, the other end of a circuit we hold
    /// through it, connect from.
    pub(crate) fn peer_addr(&self, relay: PeerId, peer: PeerId) -> Option<SocketAddr> {
        lock(&self.circuits)
            .iter()
            .find(|((r, _), end)| *r == relay && end.peer == peer)
            .and_then(|(_, end)| end.peer_addr)
    }

    /// Takes circuits from the relay of `channel` until the guard drops:
    /// we hold (or are asking for) a reservation there.
    pub(crate) fn our_relay(self: &Arc<Self>, channel: &Channel) -> OurRelay {
        lock(&self.relays).insert(channel.remote_peer_id(), channel.clone());
        OurRelay {
            client: self.clone(),
            channel: channel.clone(),
        }
    }

    /// The relay of `channel` offers circuit `circuit` from `from` (seen by
    /// it at `from_addr`): taken only from our own relay and within the
    /// relayed inbound limits, then the inbound pipeline runs over it as a
    /// job of the relay channel. Nothing is opened when it is refused.
    pub(crate) fn incoming(
        self: &Arc<Self>,
        node: &NodeHandle,
        relay: &Channel,
        circuit: u64,
        from: &[u8; 32],
        from_addr: &str,
    ) -> Result<(), RelayError> {
        let relay_peer = relay.remote_peer_id();
        let ours = lock(&self.relays)
            .get(&relay_peer)
            .is_some_and(|c| c.same(relay));
        if !ours {
            return Err(RelayError::NotOurRelay);
        }
        let from = peer_of(from).ok_or(RelayError::TargetRefused)?;
        let addr = PeerAddr::relayed(relay.remote_addr().clone(), relay_peer, from)
            .map_err(|_| RelayError::TargetRefused)?;
        if lock(&self.circuits).contains_key(&(relay_peer, circuit)) {
            return Err(RelayError::TargetRefused);
        }
        lock(&self.inbound).admit(relay_peer, node.config().max_per_ip)?;
        let slot = InboundSlot {
            client: self.clone(),
            relay: relay_peer,
            open: false,
        };
        let stream = self.open(relay, circuit, from, seen_addr(from_addr));
        relay.spawn(accept(node.clone(), stream, addr, from, slot));
        Ok(())
    }
}

/// Runs the inbound pipeline on a relayed circuit from `from`, counted in
/// `slot` until its channel closes. The handshake must authenticate `from`,
/// the peer the relay named.
async fn accept(
    node: NodeHandle,
    stream: CircuitStream,
    addr: PeerAddr,
    from: PeerId,
    mut slot: InboundSlot,
) {
    let channel = match node
        .establish(Box::new(stream), addr.clone(), SessionKind::Inbound)
        .await
    {
        Ok(channel) => channel,
        Err(e) => {
            tracing::debug!(%addr, "relayed inbound connection failed: {e}");
            return;
        }
    };
    if channel.remote_peer_id() != from {
        tracing::info!(
            %addr,
            peer = %channel.remote_peer_id().short(),
            "relayed connection refused: not the peer the relay named"
        );
        channel
            .close(DisconnectReason::other("not the peer the relay named"))
            .await;
        return;
    }
    slot.opened();
    channel.closed().await;
}

/// Asks `relay` for a circuit to `target` and returns it as a byte stream.
async fn dial(
    client: &Arc<RelayClient>,
    relay: &Channel,
    target: PeerId,
) -> Result<CircuitStream, NodeError> {
    let Connected(answer) = relay
        .request::<Connect, Connected>(&Connect {
            target: *target.as_bytes(),
        })
        .await?;
    let Opened {
        circuit,
        target_addr,
    } = answer.map_err(|e| NodeError::protocol(super::NAME, e))?;
    Ok(client.open(relay, circuit, target, seen_addr(&target_addr)))
}

/// Asks `relay` for a reservation; returns how long it holds.
pub(crate) async fn reserve(relay: &Channel) -> Result<Duration, NodeError> {
    let Reserved(answer) = relay.request::<Reserve, Reserved>(&Reserve).await?;
    let secs = answer.map_err(|e| NodeError::protocol(super::NAME, e))?;
    Ok(Duration::from_secs(u64::from(secs)))
}

/// Opens circuits to relayed addresses (`relay/<addr>/<relay>/<target>`):
/// through the channel to the relay, dialing it first if needed.
pub(crate) struct RelayDialer(pub(crate) Arc<RelayClient>);

#[async_trait]
impl Dialer for RelayDialer {
    fn handles(&self, addr: &PeerAddr) -> bool {
        addr.is_relayed()
    }

    async fn dial(&self, node: &NodeHandle, addr: &PeerAddr) -> Result<BoxStream, NodeError> {
        let PeerAddr::Relay(r) = addr else {
            return Err(TransportError::UnsupportedAddr(addr.clone()).into());
        };
        let relay = match node.channel(&r.relay_peer) {
            Some(channel) => channel,
            None => {
                let opts = DialOpts::new(DialCause::Service(super::NAME)).peer(r.relay_peer);
                Box::pin(node.dial(&r.relay, opts)).await?
            }
        };
        if relay.remote_peer_id() != r.relay_peer {
            return Err(NodeError::WrongPeer {
                expected: r.relay_peer,
                got: relay.remote_peer_id(),
            });
        }
        Ok(Box::new(dial(&self.0, &relay, r.target).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    #[test]
    fn h1_relayed_handshakes_have_their_own_limits_per_relay_and_in_total() {
        let relays: Vec<PeerId> = (0..3)
            .map(|_| Keypair::generate().unwrap().peer_id())
            .collect();
        let mut count = InboundCount::default();
        for _ in 0..MAX_RELAYED_HANDSHAKES_PER_RELAY {
            count.admit(relays[0], 8).unwrap();
        }
        assert_eq!(count.admit(relays[0], 8), Err(RelayError::LimitInbound));
        for _ in 0..MAX_RELAYED_HANDSHAKES - MAX_RELAYED_HANDSHAKES_PER_RELAY {
            count.admit(relays[1], 8).unwrap();
        }
        assert_eq!(count.admit(relays[2], 8), Err(RelayError::LimitInbound));
        // A handshake that ends frees its slot; one that gave a channel
        // still counts against its relay's connections.
        count.handshake_done(relays[0], true);
        count.handshake_done(relays[0], false);
        count.admit(relays[2], 8).unwrap();
        assert_eq!(
            count.relays[&relays[0]],
            Through {
                handshakes: 2,
                channels: 1
            }
        );
        // Handshakes and channels together stay within the per-relay cap.
        let mut count = InboundCount::default();
        for _ in 0..3 {
            count.admit(relays[0], 3).unwrap();
            count.handshake_done(relays[0], true);
        }
        assert_eq!(count.admit(relays[0], 3), Err(RelayError::LimitInbound));
        for _ in 0..3 {
            count.channel_closed(relays[0]);
        }
        assert!(count.relays.is_empty(), "an idle relay is forgotten");
    }
}
