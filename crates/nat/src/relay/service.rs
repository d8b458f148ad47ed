//! The relay side: the table, the channels of reserved peers and of both
//! legs of every circuit (tokio glue around [`RelayTable`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use knotwork_core::{PeerId, lock};
use knotwork_node::Channel;

use super::{Accepted, FromRelay, Incoming, RelayError, RelayLimits, RelayTable};
use crate::metrics::NatMetrics;

/// The tokio clock (virtual in tests), as a std instant for the table.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The relay side: the table, the channels of reserved peers and of both
/// legs of every circuit.
pub(crate) struct RelayService {
    table: Mutex<RelayTable>,
    reserved: Mutex<HashMap<PeerId, Channel>>,
    legs: Mutex<HashMap<u64, [Channel; 2]>>,
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
            metrics,
            #[cfg(test)]
            forwarded: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn reserve(&self, channel: &Channel) -> Result<u32, RelayError> {
        let peer = channel.remote_peer_id();
        let mut table = lock(&self.table);
        table.reserve(peer, now())?;
        lock(&self.reserved).insert(peer, channel.clone());
        Ok(u32::try_from(table.limits().reservation_ttl.as_secs()).unwrap_or(u32::MAX))
    }

    /// Opens a circuit from the peer of `from` to `target` and asks the target.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        from: &Channel,
        target: PeerId,
    ) -> Result<u64, RelayError> {
        let source = from.remote_peer_id();
        let Some(to) = lock(&self.reserved).get(&target).cloned() else {
            return Err(RelayError::NoReservation);
        };
        let (id, deadline) = {
            let mut table = lock(&self.table);
            let id = table.open(source, target, now())?;
            (id, now() + table.limits().max_duration)
        };
        lock(&self.legs).insert(id, [from.clone(), to.clone()]);
        self.gauge();
        let ask = Incoming {
            circuit: id,
            from: *source.as_bytes(),
        };
        match to.request::<Incoming, Accepted>(&ask).await {
            Ok(Accepted(Ok(()))) => {}
            _ => {
                self.drop_circuit(id);
                return Err(RelayError::TargetRefused);
            }
        }
        let service = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
            let expired = lock(&service.table).expire(now());
            for id in expired {
                service.end(id, Some(RelayError::LimitDuration)).await;
            }
        });
        Ok(id)
    }

    /// Circuits open now.
    pub(crate) fn circuits(&self) -> usize {
        lock(&self.table).circuits()
    }

    fn gauge(&self) {
        let open = lock(&self.table).circuits();
        self.metrics.relay_circuits(open);
    }

    fn drop_circuit(&self, id: u64) -> Option<[Channel; 2]> {
        lock(&self.table).close(id);
        let legs = lock(&self.legs).remove(&id);
        self.gauge();
        legs
    }

    /// Ends circuit `id` and tells both ends (`reason`: the limit, if any).
    pub(crate) async fn end(&self, id: u64, reason: Option<RelayError>) {
        let Some(legs) = self.drop_circuit(id) else {
            return;
        };
        let close = FromRelay::Close {
            circuit: id,
            reason,
        };
        for leg in legs {
            let _ = leg.send(&close).await;
        }
    }

    pub(crate) async fn forward(&self, from: &Channel, circuit: u64, data: Bytes) {
        let verdict = lock(&self.table).forward(circuit, &from.remote_peer_id(), data.len(), now());
        match verdict {
            Ok(Some(to)) => {
                #[cfg(test)]
                lock(&self.forwarded).extend_from_slice(&data);
                let leg = lock(&self.legs)
                    .get(&circuit)
                    .and_then(|legs| legs.iter().find(|c| c.remote_peer_id() == to).cloned());
                if let Some(leg) = leg {
                    let _ = leg.send(&FromRelay::Data { circuit, data }).await;
                }
            }
            Ok(None) => {}
            Err(limit) => {
                // The table dropped the circuit already; tell both ends.
                let legs = lock(&self.legs).remove(&circuit);
                self.gauge();
                let close = FromRelay::Close {
                    circuit,
                    reason: Some(limit),
                };
                for leg in legs.into_iter().flatten() {
                    let _ = leg.send(&close).await;
                }
            }
        }
    }

    /// A channel closed: its reservation and every circuit it carried go.
    pub(crate) async fn channel_gone(&self, channel: &Channel) {
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
            .filter(|(_, legs)| legs.iter().any(|c| c.same(channel)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.end(id, None).await;
        }
    }
}
