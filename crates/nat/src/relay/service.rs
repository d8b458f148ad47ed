//! The relay side: the table, the channels of reserved peers and both legs
//! of every circuit (tokio glue around [`RelayTable`]).
//!
//! Forwarding never waits for a peer: a message for a circuit end goes into
//! that end's bounded queue, and a job of that end's channel (its pump)
//! writes the queue to the channel. A full queue means an end sent past its
//! window or stopped reading: the circuit is closed with
//! [`RelayError::LimitWindow`], and the channels of both ends carry on. When
//! a circuit ends, its queues close; each pump sends what is queued, then
//! [`FromRelay::Close`] with the reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use knotwork_core::{PeerAddr, PeerId, lock};
use knotwork_node::Channel;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{
    Accepted, FromRelay, Incoming, Opened, QUEUE_SLACK, RelayError, RelayLimits, RelayTable,
    WINDOW, seen_text,
};
use crate::metrics::NatMetrics;

/// The tokio clock (virtual in tests), as a std instant for the table.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn ip_of(addr: &PeerAddr) -> Option<IpAddr> {
    match addr {
        PeerAddr::Tcp(sa) => Some(sa.ip()),
        _ => None,
    }
}

/// One end of a circuit as the relay sees it: the channel and the queue of
/// messages for it.
struct Leg {
    channel: Channel,
    queue: mpsc::Sender<FromRelay>,
}

impl Leg {
    /// The leg to `channel`, with its pump (a job of `channel`).
    fn new(channel: &Channel, circuit: u64, reason: &Arc<OnceLock<RelayError>>) -> Self {
        let (queue, mut rx) = mpsc::channel::<FromRelay>(WINDOW + QUEUE_SLACK);
        let (ch, reason) = (channel.clone(), reason.clone());
        channel.spawn(async move {
            while let Some(msg) = rx.recv().await {
                if ch.send(&msg).await.is_err() {
                    return;
                }
            }
            let reason = reason.get().cloned();
            let _ = ch.send(&FromRelay::Close { circuit, reason }).await;
        });
        Self {
            channel: channel.clone(),
            queue,
        }
    }
}

/// Both legs of a circuit, dialer first, and why it ended (set once).
struct Legs {
    ends: [Leg; 2],
    reason: Arc<OnceLock<RelayError>>,
}

impl Legs {
    /// The leg opposite `from`'s, if `from` is a leg of the circuit.
    fn other(&self, from: &Channel) -> Option<&Leg> {
        let [a, b] = &self.ends;
        if a.channel.same(from) {
            Some(b)
        } else if b.channel.same(from) {
            Some(a)
        } else {
            None
        }
    }

    fn has(&self, channel: &Channel) -> bool {
        self.ends.iter().any(|leg| leg.channel.same(channel))
    }
}

/// A circuit opened in the table while its target is asked: closed again
/// unless [`Pending::commit`]ted (the dialer's channel may close, and its
/// job with this guard, before the answer).
struct Pending<'a> {
    service: &'a RelayService,
    id: u64,
    committed: bool,
}

impl Pending<'_> {
    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.committed {
            lock(&self.service.table).close(self.id);
            self.service.gauge();
        }
    }
}

/// The relay side: the table, the channels of reserved peers and the legs
/// of every circuit.
pub(crate) struct RelayService {
    table: Mutex<RelayTable>,
    reserved: Mutex<HashMap<PeerId, Channel>>,
    legs: Mutex<HashMap<u64, Legs>>,
    /// Wakes the expiry job when a circuit opens.
    opened: Notify,
    metrics: NatMetrics,
    /// Every byte forwarded, for the test that the relay sees no plaintext.
    #[cfg(test)]
    pub(crate) forwarded: Mutex<Vec<u8>>,
}

impl RelayService {
    pub(crate) fn new(limits: RelayLimits, metrics: NatMetrics) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(RelayTable::new(limits)),
            reserved: Mutex::new(HashMap::new()),
            legs: Mutex::new(HashMap::new()),
            opened: Notify::new(),
            metrics,
            #[cfg(test)]
            forwarded: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn reserve(&self, channel: &Channel) -> Result<u32, RelayError> {
        let peer = channel.remote_peer_id();
        let ttl = {
            let mut table = lock(&self.table);
            table.reserve(peer, ip_of(channel.remote_addr()), now())?;
            table.limits().reservation_ttl
        };
        lock(&self.reserved).insert(peer, channel.clone());
        Ok(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX))
    }

    /// Opens a circuit from the peer of `from` to `target` and asks the
    /// target. The circuit counts against the limits while the target is
    /// asked.
    pub(crate) async fn connect(
        &self,
        from: &Channel,
        target: PeerId,
    ) -> Result<Opened, RelayError> {
        let source = from.remote_peer_id();
        let Some(to) = lock(&self.reserved).get(&target).cloned() else {
            return Err(RelayError::NoReservation);
        };
        let id = lock(&self.table).open(source, ip_of(from.remote_addr()), target, now())?;
        let pending = Pending {
            service: self,
            id,
            committed: false,
        };
        self.gauge();
        let ask = Incoming {
            circuit: id,
            from: *source.as_bytes(),
            from_addr: seen_text(from.remote_addr()),
        };
        if !matches!(
            to.request::<Incoming, Accepted>(&ask).await,
            Ok(Accepted(Ok(())))
        ) {
            return Err(RelayError::TargetRefused);
        }
        {
            // The target's channel may have closed, or the circuit expired,
            // while it was asked.
            let table = lock(&self.table);
            if !table.is_open(id) || to.is_closed() {
                return Err(RelayError::TargetRefused);
            }
            let reason = Arc::new(OnceLock::new());
            let legs = Legs {
                ends: [Leg::new(from, id, &reason), Leg::new(&to, id, &reason)],
                reason,
            };
            lock(&self.legs).insert(id, legs);
        }
        pending.commit();
        self.opened.notify_one();
        Ok(Opened {
            circuit: id,
            target_addr: seen_text(to.remote_addr()),
        })
    }

    /// Closes circuits whose time is up, until the node stops (a job of the
    /// node).
    pub(crate) async fn expire(self: Arc<Self>) {
        loop {
            let next = lock(&self.table).poll_timeout();
            let timer = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = timer => {}
                () = self.opened.notified() => continue,
            }
            let expired = lock(&self.table).expire(now());
            for id in expired {
                self.end(id, Some(RelayError::LimitDuration));
            }
        }
    }

    /// Circuits open now.
    pub(crate) fn circuits(&self) -> usize {
        lock(&self.table).circuits()
    }

    fn gauge(&self) {
        let open = lock(&self.table).circuits();
        self.metrics.relay_circuits(open);
    }

    /// Ends circuit `id`: its queues close, and each leg's pump sends what
    /// is queued, then the close with `reason` (the limit, if any).
    fn end(&self, id: u64, reason: Option<RelayError>) {
        lock(&self.table).close(id);
        let legs = lock(&self.legs).remove(&id);
        if let (Some(legs), Some(reason)) = (legs, reason) {
            let _ = legs.reason.set(reason);
        }
        self.gauge();
    }

    /// Passes `msg` from `from` to the other leg of `circuit`, without
    /// waiting; a full queue closes the circuit.
    fn pass(&self, from: &Channel, circuit: u64, msg: FromRelay) {
        let full = {
            let legs = lock(&self.legs);
            let Some(leg) = legs.get(&circuit).and_then(|l| l.other(from)) else {
                return;
            };
            matches!(leg.queue.try_send(msg), Err(TrySendError::Full(_)))
        };
        if full {
            tracing::info!(
                circuit,
                peer = %from.remote_peer_id().short(),
                "a circuit end is a window behind; circuit closed"
            );
            self.end(circuit, Some(RelayError::LimitWindow));
        }
    }

    /// Circuit data from `from`: counted, then passed on.
    pub(crate) fn forward(&self, from: &Channel, circuit: u64, data: Bytes) {
        let verdict = lock(&self.table).forward(circuit, &from.remote_peer_id(), data.len(), now());
        match verdict {
            Ok(Some(_)) => {
                #[cfg(test)]
                lock(&self.forwarded).extend_from_slice(&data);
                self.pass(from, circuit, FromRelay::Data { circuit, data });
            }
            Ok(None) => {}
            Err(limit) => self.end(circuit, Some(limit)),
        }
    }

    /// Credit from `from` for the other end of `circuit`.
    pub(crate) fn credit(&self, from: &Channel, circuit: u64, chunks: u16) {
        self.pass(from, circuit, FromRelay::Credit { circuit, chunks });
    }

    /// `from` closed `circuit` (only an end of it can).
    pub(crate) fn close(&self, from: &Channel, circuit: u64) {
        let leg = lock(&self.legs).get(&circuit).is_some_and(|l| l.has(from));
        if leg {
            self.end(circuit, None);
        }
    }

    /// A channel closed: its reservation and every circuit it carried go.
    pub(crate) fn channel_gone(&self, channel: &Channel) {
        let peer = channel.remote_peer_id();
        {
            let mut reserved = lock(&self.reserved);
            if reserved.get(&peer).is_some_and(|c| c.same(channel)) {
                reserved.remove(&peer);
                lock(&self.table).unreserve(&peer);
            }
        }
        let ids: Vec<u64> = lock(&self.legs)
            .iter()
            .filter(|(_, legs)| legs.has(channel))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.end(id, None);
        }
    }
}
