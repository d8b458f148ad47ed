//! The central role through btleplug: scan, connect, and [`BleTransport`].

use std::time::Duration;

use async_trait::async_trait;
use btleplug::api::{BDAddr, Central as _, Manager as _, Peripheral as _, ScanFilter, WriteType};
use btleplug::platform::{Adapter, Manager, Peripheral};
use bytes::Bytes;
use futures::StreamExt;
use knotwork_core::{DiscoveredPeer, DiscoverySource, PeerAddr, PeerId, Transport, TransportError};

use crate::frame::{MAX_MTU, MIN_MTU};
use crate::gatt::{RX_UUID, SERVICE_UUID, TX_UUID, peer_from_service_data};
use crate::{BleError, BleStream, LinkConfig};

/// Settings of the BLE central and transport.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BleConfig {
    /// Link settings; the MTU is replaced by the one the stack negotiated.
    pub link: LinkConfig,
    /// How long a dial scans for the device before it fails.
    pub scan_timeout: Duration,
    /// Which adapter to use (BlueZ name such as `hci0`); the first one if
    /// none matches.
    pub adapter: String,
}

impl Default for BleConfig {
    fn default() -> Self {
        Self {
            link: LinkConfig::default(),
            scan_timeout: Duration::from_secs(10),
            adapter: "hci0".to_owned(),
        }
    }
}

pub(crate) fn central_err(e: btleplug::Error) -> BleError {
    BleError::Central(e.to_string())
}

/// The id used in `ble/<device-id>`: the MAC address where the platform
/// gives one (Linux, Windows), the platform's peripheral id otherwise (macOS).
pub fn device_id(p: &Peripheral) -> String {
    let addr = p.address();
    if addr == BDAddr::default() {
        p.id().to_string()
    } else {
        addr.to_string()
    }
}

/// A BLE central on one adapter: scans for knotwork peripherals and
/// connects to them.
#[derive(Clone, Debug)]
pub struct BleCentral {
    adapter: Adapter,
    config: BleConfig,
}

impl BleCentral {
    /// Opens the adapter named in `config` (or the first one).
    pub async fn new(config: BleConfig) -> Result<Self, BleError> {
        let manager = Manager::new().await.map_err(central_err)?;
        let adapters = manager.adapters().await.map_err(central_err)?;
        let mut chosen = None;
        for a in adapters {
            let info = a.adapter_info().await.map_err(central_err)?;
            let matches = info.split_whitespace().next() == Some(config.adapter.as_str());
            if matches || chosen.is_none() {
                chosen = Some(a);
            }
            if matches {
                break;
            }
        }
        let adapter = chosen.ok_or(BleError::NoAdapter)?;
        Ok(Self { adapter, config })
    }

    /// The btleplug adapter in use.
    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// Starts scanning for devices advertising the knotwork service.
    pub async fn start_scan(&self) -> Result<(), BleError> {
        let filter = ScanFilter {
            services: vec![SERVICE_UUID],
        };
        self.adapter.start_scan(filter).await.map_err(central_err)
    }

    /// The knotwork peers seen so far (devices whose advertisement carries a
    /// valid PeerId in the knotwork service data).
    pub async fn peers(&self) -> Result<Vec<DiscoveredPeer>, BleError> {
        let mut out = Vec::new();
        for p in self.adapter.peripherals().await.map_err(central_err)? {
            if let Ok(found) = knotwork_peer(&p).await {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// Scans for `device` (up to the scan timeout), connects, and returns the
    /// byte stream and the PeerId the device advertises.
    pub async fn connect(&self, device: &str) -> Result<(BleStream, PeerId), BleError> {
        let p = self.find(device).await?;
        let peer = knotwork_peer(&p).await?.peer_id;
        if !p.is_connected().await.map_err(central_err)? {
            p.connect().await.map_err(central_err)?;
        }
        p.discover_services().await.map_err(central_err)?;
        let chars = p.characteristics();
        let find = |uuid| {
            chars
                .iter()
                .find(|c| c.uuid == uuid && c.service_uuid == SERVICE_UUID)
                .cloned()
        };
        let rx = find(RX_UUID).ok_or(BleError::MissingCharacteristic("rx"))?;
        let tx = find(TX_UUID).ok_or(BleError::MissingCharacteristic("tx"))?;
        // Listen before subscribing so the peer's first notification (its
        // credit grant) cannot be missed.
        let notes = p.notifications().await.map_err(central_err)?;
        p.subscribe(&tx).await.map_err(central_err)?;
        let inbound = notes.filter_map(|n| {
            futures::future::ready((n.uuid == TX_UUID).then(|| Bytes::from(n.value)))
        });
        let mut link = self.config.link;
        link.mtu = p.mtu().clamp(MIN_MTU, MAX_MTU);
        let writer = p.clone();
        let write = move |fragment: Bytes| {
            let p = writer.clone();
            let rx = rx.clone();
            async move {
                p.write(&rx, &fragment, WriteType::WithoutResponse)
                    .await
                    .map_err(central_err)
            }
        };
        let (stream, driver) = BleStream::new(link, inbound, write)?;
        tokio::spawn(async move {
            driver.await;
            // The stream is gone; a failed disconnect leaves nothing to do.
            let _ = p.disconnect().await;
        });
        Ok((stream, peer))
    }

    async fn find(&self, device: &str) -> Result<Peripheral, BleError> {
        self.start_scan().await?;
        let mut events = self.adapter.events().await.map_err(central_err)?;
        let search = async {
            loop {
                for p in self.adapter.peripherals().await.map_err(central_err)? {
                    if device_id(&p) == device {
                        return Ok(p);
                    }
                }
                if events.next().await.is_none() {
                    return Err(BleError::DeviceNotFound(device.to_owned()));
                }
            }
        };
        tokio::time::timeout(self.config.scan_timeout, search)
            .await
            .map_err(|_| BleError::DeviceNotFound(device.to_owned()))?
    }
}

/// The knotwork peer behind a scanned device.
pub(crate) async fn knotwork_peer(p: &Peripheral) -> Result<DiscoveredPeer, BleError> {
    let props = p
        .properties()
        .await
        .map_err(central_err)?
        .ok_or(BleError::NotKnotwork)?;
    let data = props
        .service_data
        .get(&SERVICE_UUID)
        .ok_or(BleError::NotKnotwork)?;
    let peer_id = peer_from_service_data(data)?;
    let addr = PeerAddr::ble(device_id(p)).map_err(|_| BleError::NotKnotwork)?;
    Ok(DiscoveredPeer {
        peer_id,
        addrs: vec![addr],
        source: DiscoverySource::Ble,
        rssi: props.rssi,
    })
}

/// The BLE [`Transport`]: dials as a central (`ble/<device-id>`) and, with
/// the `peripheral` feature on Linux, listens as a peripheral (`ble/hci0`:
/// the adapter to advertise on).
#[derive(Clone, Debug)]
pub struct BleTransport {
    central: BleCentral,
    local: PeerId,
}

impl BleTransport {
    /// A transport for the node `local` (advertised when listening).
    pub async fn new(local: PeerId, config: BleConfig) -> Result<Self, BleError> {
        Ok(Self {
            central: BleCentral::new(config).await?,
            local,
        })
    }

    /// The central underneath (for scans).
    pub fn central(&self) -> &BleCentral {
        &self.central
    }
}

fn transport_err(e: BleError) -> TransportError {
    TransportError::Io(e.into())
}

#[async_trait]
impl Transport for BleTransport {
    type Connection = BleStream;
    type Listener = crate::BleListener;

    async fn listen(&self, addr: &PeerAddr) -> Result<Self::Listener, TransportError> {
        let PeerAddr::Ble(adapter) = addr else {
            return Err(TransportError::UnsupportedAddr(addr.clone()));
        };
        #[cfg(all(feature = "peripheral", target_os = "linux"))]
        {
            crate::BleListener::bind(self.local, adapter, self.central.config.link)
                .await
                .map_err(transport_err)
        }
        #[cfg(not(all(feature = "peripheral", target_os = "linux")))]
        {
            let _ = (adapter, &self.local);
            Err(TransportError::UnsupportedAddr(addr.clone()))
        }
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<Self::Connection, TransportError> {
        let PeerAddr::Ble(device) = addr else {
            return Err(TransportError::UnsupportedAddr(addr.clone()));
        };
        match self.central.connect(device).await {
            Ok((stream, _peer)) => Ok(stream),
            Err(BleError::DeviceNotFound(_)) => Err(TransportError::Timeout(addr.clone())),
            Err(e) => Err(transport_err(e)),
        }
    }
}
