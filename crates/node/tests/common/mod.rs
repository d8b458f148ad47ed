//! Helpers shared by the node integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use knotwork_core::{Keypair, MemoryTransport, PeerAddr, PeerId};
use knotwork_crypto_handshake::{SecureConfig, SecureStream};
use knotwork_node::protocol::ping::PingConfig;
use knotwork_node::version::{Hello, secure_outbound};
use knotwork_node::{Node, NodeBuilder, NodeConfig, Version};
use knotwork_wire::{FrameCodec, Message, WireError, decode, encode};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub const PING_INTERVAL: Duration = Duration::from_millis(100);
pub const PING_TIMEOUT: Duration = Duration::from_millis(600);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(700);

/// Short timeouts so tests run in well under a second each.
pub fn fast_config() -> NodeConfig {
    let mut c = NodeConfig::default();
    c.ping = PingConfig {
        interval: PING_INTERVAL,
        timeout: PING_TIMEOUT,
    };
    c.handshake_timeout = HANDSHAKE_TIMEOUT;
    c.dial_timeout = Duration::from_secs(2);
    c.maintenance_interval = Duration::from_millis(100);
    c.backoff.initial = Duration::from_millis(50);
    c.backoff.max = Duration::from_millis(400);
    c.channel.drain_timeout = Duration::from_millis(500);
    c.channel.request_timeout = Duration::from_secs(2);
    c
}

/// A node on the in-memory network `net`, with [`fast_config`].
pub fn mem_node(net: &MemoryTransport) -> NodeBuilder {
    Node::builder(Keypair::generate().unwrap())
        .transport(net.clone())
        .config(fast_config())
}

pub fn tcp_node() -> NodeBuilder {
    Node::builder(Keypair::generate().unwrap())
        .listen("tcp/127.0.0.1:0".parse().unwrap())
        .config(fast_config())
}

pub async fn start(b: NodeBuilder) -> Node {
    b.start().await.unwrap()
}

pub fn addr(node: &Node) -> PeerAddr {
    node.listen_addrs()[0].clone()
}

/// Polls `cond` every 20 ms until it holds, for at most `limit`.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the first event matching `pred` (node events, NAT events, …).
pub async fn wait_event<E: Clone>(
    events: &mut tokio::sync::broadcast::Receiver<E>,
    limit: Duration,
    mut pred: impl FnMut(&E) -> bool,
) -> E {
    tokio::time::timeout(limit, async {
        loop {
            let e = events.recv().await.unwrap();
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event did not come")
}

pub type RawPeer = Framed<SecureStream<TcpStream>, FrameCodec>;

/// A hand-driven peer: TCP, Noise handshake with the version exchange in
/// it, then nothing unless the test writes frames itself. Returns the
/// stream, the node's id and its version (panics if it refused).
pub async fn raw_peer(to: &PeerAddr, keypair: Keypair) -> (RawPeer, PeerId, Version) {
    let PeerAddr::Tcp(sa) = to else {
        panic!("tcp only")
    };
    let tcp = TcpStream::connect(sa).await.unwrap();
    let hello = Hello::Version(Version::new(&[], &[], to));
    let (secure, theirs) = secure_outbound(&SecureConfig::new(keypair).unwrap(), tcp, None, &hello)
        .await
        .unwrap();
    let remote = secure.remote_peer_id();
    (Framed::new(secure, FrameCodec::new()), remote, theirs)
}

/// Encodes `m`, checks it fits its `MAX_BYTES` and decodes back equal.
pub fn roundtrip<M: Message + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = encode(m).unwrap();
    assert!(
        bytes.len() <= M::MAX_BYTES,
        "{} > {}",
        bytes.len(),
        M::MAX_BYTES
    );
    assert_eq!(&decode::<M>(&bytes).unwrap(), m);
}

/// Decoding arbitrary bytes returns a value or a named error, never panics.
pub fn never_panics<M: Message>(bytes: &[u8]) -> Option<M> {
    match decode::<M>(bytes) {
        Ok(m) => Some(m),
        Err(WireError::MessageTooLarge { len, max, .. }) => {
            assert!(len > max);
            None
        }
        Err(WireError::Malformed { .. } | WireError::TrailingBytes { .. }) => None,
        Err(e) => panic!("unexpected error {e}"),
    }
}
