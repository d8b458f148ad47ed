//! knotwork: a peer-to-peer networking stack in small crates, re-exported by
//! feature, with a [`prelude`]. See the README (below) for the features and
//! a hello world.
//!
//! Each module is one crate: [`core`] (identity, addresses, the `Transport`
//! and `Discovery` traits), [`wire`] (frames, typed messages), and by
//! feature `node`, `handshake`, `tcp`, `dht`, `dht_node`, `mdns`, `ble`,
//! `quic`, `gossip`, `tasks`, `nat`, and `logging` (the logging setup,
//! `knotwork-log`); those appear here when their feature is on (`full` for all).
#![doc = include_str!("../README.md")]

pub use knotwork_core as core;
pub use knotwork_wire as wire;

#[cfg(feature = "node")]
pub use knotwork_crypto_handshake as handshake;
#[cfg(feature = "node")]
pub use knotwork_node as node;
#[cfg(feature = "node")]
pub use knotwork_transport_tcp as tcp;

/// Logging setup: [`logging::init_logging`] from a [`logging::LogConfig`].
#[cfg(feature = "logging")]
pub use knotwork_log as logging;

#[cfg(feature = "dht")]
pub use knotwork_dht_node as dht_node;
#[cfg(feature = "dht")]
pub use knotwork_discovery_dht as dht;

#[cfg(feature = "mdns")]
pub use knotwork_discovery_mdns as mdns;

#[cfg(feature = "ble")]
pub use knotwork_transport_ble as ble;

#[cfg(feature = "quic")]
pub use knotwork_transport_quic as quic;

#[cfg(feature = "gossip")]
pub use knotwork_gossip as gossip;

#[cfg(feature = "tasks")]
pub use knotwork_tasks as tasks;

#[cfg(feature = "nat")]
pub use knotwork_nat as nat;

/// What most programs use: `use knotwork::prelude::*;`.
pub mod prelude {
    pub use knotwork_core::{Keypair, MemoryTransport, PeerAddr, PeerId, Transport};
    pub use knotwork_wire::Message;

    #[cfg(feature = "node")]
    pub use knotwork_node::{
        Channel, DialCause, DialOpts, Node, NodeBuilder, NodeConfig, NodeError, NodeEvent,
        NodeHandle, RateBudget, Service, Sessions, Setup,
    };
}
