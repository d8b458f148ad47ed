//! The [`Discovery`] trait: how a node learns which peers exist and where.
//!
//! mDNS, the DHT and BLE scanning each implement it; the node runs them side
//! by side and merges what they find by [`PeerId`].

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::{PeerAddr, PeerId};

/// Where a discovered peer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DiscoverySource {
    /// Multicast DNS on the local network.
    Mdns,
    /// The Kademlia DHT.
    Dht,
    /// A Bluetooth LE scan.
    Ble,
    /// A configured seed node.
    Seed,
    /// An address given by hand or learned from another peer.
    Manual,
}

impl fmt::Display for DiscoverySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiscoverySource::Mdns => "mdns",
            DiscoverySource::Dht => "dht",
            DiscoverySource::Ble => "ble",
            DiscoverySource::Seed => "seed",
            DiscoverySource::Manual => "manual",
        })
    }
}

/// A peer some discovery source found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredPeer {
    /// Who.
    pub peer_id: PeerId,
    /// Where it says it can be reached.
    pub addrs: Vec<PeerAddr>,
    /// Which source found it.
    pub source: DiscoverySource,
    /// Received signal strength in dBm, where the source measures one (BLE).
    pub rssi: Option<i16>,
}

/// What a discovery source reports over time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A peer was found, or its addresses changed.
    Discovered(DiscoveredPeer),
    /// A peer's record expired or it said goodbye.
    Expired {
        /// Who.
        peer_id: PeerId,
        /// Which source expired it.
        source: DiscoverySource,
    },
}

/// What this node announces about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPeerInfo {
    /// Our identity.
    pub peer_id: PeerId,
    /// Addresses we listen on.
    pub addrs: Vec<PeerAddr>,
}

/// Errors of a discovery source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The source is not running (stopped, or never started).
    #[error("discovery source is not running")]
    NotRunning,
    /// The source failed; the text says how.
    #[error("discovery failed: {0}")]
    Failed(String),
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A source of peers: announce ourselves, list what is known, watch changes.
#[async_trait]
pub trait Discovery: Send + Sync {
    /// Which source this is; every peer it reports carries it.
    fn source(&self) -> DiscoverySource;

    /// Makes this node findable with `info` (replacing an earlier announcement).
    async fn announce(&self, info: &LocalPeerInfo) -> Result<(), DiscoveryError>;

    /// The peers currently known to this source.
    async fn discover(&self) -> Result<Vec<DiscoveredPeer>, DiscoveryError>;

    /// A stream of changes from now on.
    fn events(&self) -> BoxStream<'static, DiscoveryEvent>;
}

/// A shared source is a source: the node runs it while its owner keeps a
/// handle (to say goodbye on shutdown, or to query it directly).
#[async_trait]
impl<T: Discovery + ?Sized> Discovery for std::sync::Arc<T> {
    fn source(&self) -> DiscoverySource {
        (**self).source()
    }

    async fn announce(&self, info: &LocalPeerInfo) -> Result<(), DiscoveryError> {
        (**self).announce(info).await
    }

    async fn discover(&self) -> Result<Vec<DiscoveredPeer>, DiscoveryError> {
        (**self).discover().await
    }

    fn events(&self) -> BoxStream<'static, DiscoveryEvent> {
        (**self).events()
    }
}
