//! The ends of circuits: circuits as byte streams, the relay protocol on
//! every channel, and the [`Dialer`] of relayed addresses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use knotwork_core::{PeerAddr, PeerId, TransportError, lock};
use knotwork_node::{BoxStream, Channel, DialCause, DialOpts, Dialer, NodeError, NodeHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::{
    Accepted, CIRCUIT_QUEUE, Connect, Connected, FromRelay, Incoming, MAX_CHUNK, RelayError,
    RelayService, Reserve, Reserved, STREAM_BUFFER, ToRelay, peer_of,
};

/// A relayed byte stream: one end of a circuit, AsyncRead + AsyncWrite.
pub type CircuitStream = DuplexStream;

/// The circuits this node is an end of, by relay and circuit id.
#[derive(Default)]
pub(crate) struct RelayClient {
    circuits: Mutex<HashMap<(PeerId, u64), mpsc::Sender<Bytes>>>,
}

impl RelayClient {
    /// Turns circuit `circuit` on `relay` into a byte stream: bytes written
    /// to it go out as [`ToRelay::Data`], [`FromRelay::Data`] comes out of it.
    /// The pumps run as jobs of the relay channel.
    pub(crate) fn open(self: &Arc<Self>, relay: &Channel, circuit: u64) -> CircuitStream {
        let (user, inner) = tokio::io::duplex(STREAM_BUFFER);
        let (tx, mut rx) = mpsc::channel::<Bytes>(CIRCUIT_QUEUE);
        let key = (relay.remote_peer_id(), circuit);
        lock(&self.circuits).insert(key, tx);
        let (mut inner_r, mut inner_w) = tokio::io::split(inner);
        relay.spawn(async move {
            while let Some(data) = rx.recv().await {
                if inner_w.write_all(&data).await.is_err() {
                    break;
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

    async fn deliver(&self, relay: PeerId, circuit: u64, data: Bytes) {
        let tx = lock(&self.circuits).get(&(relay, circuit)).cloned();
        if let Some(tx) = tx
            && tx.send(data).await.is_err()
        {
            lock(&self.circuits).remove(&(relay, circuit));
        }
    }

    fn closed(&self, relay: PeerId, circuit: u64) {
        lock(&self.circuits).remove(&(relay, circuit));
    }

    fn relay_gone(&self, relay: PeerId) {
        lock(&self.circuits).retain(|(r, _), _| *r != relay);
    }
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
    let circuit = answer.map_err(|e| NodeError::protocol(super::NAME, e))?;
    Ok(client.open(relay, circuit))
}

/// Asks `relay` for a reservation; returns how long it holds.
pub(crate) async fn reserve(relay: &Channel) -> Result<Duration, NodeError> {
    let Reserved(answer) = relay.request::<Reserve, Reserved>(&Reserve).await?;
    let secs = answer.map_err(|e| NodeError::protocol(super::NAME, e))?;
    Ok(Duration::from_secs(u64::from(secs)))
}

/// A circuit a relay opened to this node: the stream and the dialer.
pub(crate) struct Inbound {
    /// The byte stream.
    pub(crate) stream: CircuitStream,
    /// The dialing peer.
    pub(crate) from: PeerId,
    /// The channel to the relay.
    pub(crate) relay: Channel,
}

/// The relay protocol on one channel: serves reservations and circuits if
/// `service` is set (refuses them with [`RelayError::Disabled`] otherwise)
/// and carries the circuits this node is an end of; accepted inbound
/// circuits go to `incoming`.
pub(crate) fn protocol(
    channel: &Channel,
    service: Option<Arc<RelayService>>,
    client: Arc<RelayClient>,
    incoming: mpsc::Sender<Inbound>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let mut reserves = channel.subscribe_requests::<Reserve>();
    let mut connects = channel.subscribe_requests::<Connect>();
    let mut incomings = channel.subscribe_requests::<Incoming>();
    let mut to_relay = channel.subscribe::<ToRelay>();
    let mut from_relay = channel.subscribe::<FromRelay>();
    let channel = channel.clone();
    async move {
        let peer = channel.remote_peer_id();
        // Runs when the channel closes and aborts this job.
        struct Cleanup(Channel, Option<Arc<RelayService>>, Arc<RelayClient>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                self.2.relay_gone(self.0.remote_peer_id());
                if let Some(service) = self.1.take() {
                    let channel = self.0.clone();
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move { service.channel_gone(&channel).await });
                    }
                }
            }
        }
        let _cleanup = Cleanup(channel.clone(), service.clone(), client.clone());
        loop {
            tokio::select! {
                Some((Reserve, responder)) = reserves.recv() => {
                    let answer = match &service {
                        Some(s) => s.reserve(&channel),
                        None => Err(RelayError::Disabled),
                    };
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
                        let _ = responder.respond(&Connected(answer)).await;
                    });
                }
                Some((Incoming { circuit, from }, responder)) = incomings.recv() => {
                    let answer = match peer_of(&from) {
                        Some(from) => {
                            let stream = client.open(&channel, circuit);
                            match incoming.try_send(Inbound { stream, from, relay: channel.clone() }) {
                                Ok(()) => Ok(()),
                                Err(_) => {
                                    client.closed(peer, circuit);
                                    Err(RelayError::TargetRefused)
                                }
                            }
                        }
                        None => Err(RelayError::TargetRefused),
                    };
                    let _ = responder.respond(&Accepted(answer)).await;
                }
                Some(msg) = to_relay.recv() => match (&service, msg) {
                    (Some(s), ToRelay::Data { circuit, data }) => s.forward(&channel, circuit, data).await,
                    (Some(s), ToRelay::Close { circuit }) => s.end(circuit, None).await,
                    (None, _) => {}
                },
                Some(msg) = from_relay.recv() => match msg {
                    FromRelay::Data { circuit, data } => client.deliver(peer, circuit, data).await,
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
