//! One module per `knot` subcommand.

pub(crate) mod config;
pub(crate) mod connect;
pub(crate) mod demo;
pub(crate) mod dht;
pub(crate) mod health;
pub(crate) mod id;
pub(crate) mod peers;
pub(crate) mod ping;
pub(crate) mod run;
pub(crate) mod status;

use knotwork_core::Keypair;
use knotwork_node::NodeBuilder;
use knotwork_transport_quic::{QuicConfig, QuicTransport};

/// The QUIC transport of a node of `keypair`.
pub(crate) fn quic_transport(keypair: &Keypair) -> crate::CliResult<QuicTransport> {
    Ok(QuicTransport::new(keypair, QuicConfig::default())
        .map_err(|e| format!("QUIC transport: {e}"))?)
}

/// A node of `keypair` that dials (and may listen on) QUIC beside TCP.
pub(crate) fn node_builder(keypair: Keypair) -> crate::CliResult<NodeBuilder> {
    let quic = quic_transport(&keypair)?;
    Ok(knotwork_node::Node::builder(keypair).transport(quic))
}
