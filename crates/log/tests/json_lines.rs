//! JSON lines: each parses, and what a node channel's reader logs carries
//! the channel span's fields (peer, channel, direction).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use knotwork_core::{Keypair, MemoryTransport, PeerAddr};
use knotwork_log::{LogConfig, LogFormat, subscriber};
use knotwork_node::{Node, NodeBuilder};
use serde_json::Value;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A node on the in-memory network `net`.
fn mem_node(net: &MemoryTransport) -> NodeBuilder {
    Node::builder(Keypair::generate().unwrap()).transport(net.clone())
}

#[tokio::test]
async fn json_lines_parse_and_carry_the_channel_span() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let config = LogConfig {
        level: "knotwork_node=debug".into(),
        format: LogFormat::Json,
        ..LogConfig::default()
    };
    let subscriber = subscriber(&config, BoxMakeWriter::new(move || writer.clone())).unwrap();
    // This test's runtime runs every task on this thread.
    let _default = tracing::subscriber::set_default(subscriber);

    let net = MemoryTransport::new();
    let a = mem_node(&net)
        .listen(PeerAddr::Mem(9301))
        .start()
        .await
        .unwrap();
    let b = mem_node(&net).start().await.unwrap();
    let channel = b.connect(&a.listen_addrs()[0]).await.unwrap();
    b.shutdown().await;
    channel.closed().await;
    a.shutdown().await;

    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let closed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "channel closed")
        .collect();
    assert_eq!(closed.len(), 2, "one per side: {text}");
    let mut directions = Vec::new();
    for line in closed {
        let span = &line["span"];
        assert_eq!(span["name"], "channel", "{line}");
        assert!(span["channel"].as_u64().is_some(), "{line}");
        let peer = span["peer"].as_str().unwrap();
        let expected = if span["direction"] == "inbound" {
            b.peer_id()
        } else {
            a.peer_id()
        };
        assert_eq!(peer, expected.to_string(), "{line}");
        directions.push(span["direction"].as_str().unwrap().to_owned());
    }
    directions.sort();
    assert_eq!(directions, ["inbound", "outbound"]);
}
