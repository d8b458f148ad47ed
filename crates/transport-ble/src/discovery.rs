//! [`BleDiscovery`]: knotwork peers found by BLE scanning.

use async_trait::async_trait;
use btleplug::api::{Central as _, CentralEvent};
use futures::StreamExt;
use futures::stream::BoxStream;
use knotwork_core::{
    DiscoveredPeer, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySource, LocalPeerInfo,
};

use crate::central::knotwork_peer;
use crate::{BleCentral, BleError};

fn discovery_err(e: BleError) -> DiscoveryError {
    DiscoveryError::Failed(e.to_string())
}

/// [`Discovery`] from BLE scan results: every device advertising the
/// knotwork service with a valid PeerId is reported with source `ble` and
/// its `ble/<device-id>` address.
///
/// Announcing is the peripheral's job: a node is findable over BLE while a
/// [`BleListener`](crate::BleListener) advertises, so
/// [`announce`](Discovery::announce) only checks that scanning runs.
#[derive(Clone, Debug)]
pub struct BleDiscovery {
    central: BleCentral,
}

impl BleDiscovery {
    /// Discovery on `central`'s adapter; starts scanning.
    pub async fn new(central: BleCentral) -> Result<Self, BleError> {
        central.start_scan().await?;
        Ok(Self { central })
    }
}

#[async_trait]
impl Discovery for BleDiscovery {
    fn source(&self) -> DiscoverySource {
        DiscoverySource::Ble
    }

    async fn announce(&self, _info: &LocalPeerInfo) -> Result<(), DiscoveryError> {
        self.central.start_scan().await.map_err(discovery_err)
    }

    async fn discover(&self) -> Result<Vec<DiscoveredPeer>, DiscoveryError> {
        self.central.peers().await.map_err(discovery_err)
    }

    fn events(&self) -> BoxStream<'static, DiscoveryEvent> {
        let adapter = self.central.adapter().clone();
        futures::stream::once(async move {
            let events = match adapter.events().await {
                Ok(events) => events,
                Err(_) => return futures::stream::empty().boxed(),
            };
            events
                .filter_map(move |event| {
                    let adapter = adapter.clone();
                    async move {
                        let id = match event {
                            CentralEvent::DeviceDiscovered(id)
                            | CentralEvent::DeviceUpdated(id)
                            | CentralEvent::ServiceDataAdvertisement { id, .. } => id,
                            _ => return None,
                        };
                        let p = adapter.peripheral(&id).await.ok()?;
                        knotwork_peer(&p).await.ok().map(DiscoveryEvent::Discovered)
                    }
                })
                .boxed()
        })
        .flatten()
        .boxed()
    }
}
