//! One module per `knot` subcommand.

pub(crate) mod config;
pub(crate) mod connect;
pub(crate) mod demo;
pub(crate) mod dht;
pub(crate) mod gossip;
pub(crate) mod health;
pub(crate) mod id;
pub(crate) mod metrics;
pub(crate) mod peers;
pub(crate) mod ping;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod task;

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

/// `text` safe to print on a terminal: control characters (escape
/// sequences, newlines, carriage returns) and bidirectional-text overrides
/// become `\u{..}` escapes. Peers supply some of what `knot` prints
/// (disconnect and health reasons, DHT values); raw, it could rewrite the
/// screen or forge output lines.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn l6_peer_text_is_escaped_of_control_characters() {
        assert_eq!(printable("peer went away"), "peer went away");
        assert_eq!(printable("ünïcode ok ✓"), "ünïcode ok ✓");
        assert_eq!(
            printable("bye\x1b[2J\nconnected fake\r"),
            "bye\\u{1b}[2J\\u{a}connected fake\\u{d}"
        );
        assert_eq!(printable("a\u{202e}b\u{7f}"), "a\\u{202e}b\\u{7f}");
    }
}
