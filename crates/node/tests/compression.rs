//! Compression per channel (issue 19, part 4): agreed in the version
//! exchange, applied to every stream's batches (TCP and QUIC), and a
//! decompression bomb bans the peer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use knotwork_compress::{LZ4_NAME, MAX_BLOCK_LEN};
use knotwork_core::Keypair;
use knotwork_crypto_handshake::SecureConfig;
use knotwork_node::version::{Hello, secure_outbound};
use knotwork_node::{
    Channel, Compression, Node, NodeBuilder, NodeEvent, RateBudget, Sessions, Version,
};
use knotwork_transport_quic::{QuicConfig, QuicTransport};
use knotwork_wire::{Frame, Message};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const LONG: Duration = Duration::from_secs(10);

/// A one-way message with a large payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Text(String);

impl Message for Text {
    const NAME: &'static str = "test/text/1";
    const MAX_BYTES: usize = 1 << 20;
}

fn with(b: NodeBuilder, compression: Compression) -> NodeBuilder {
    let mut config = fast_config();
    config.channel.compression = compression;
    b.config(config)
}

/// `b` with a protocol that forwards every `Text` it receives to `tx`.
fn receiving(b: NodeBuilder, tx: mpsc::UnboundedSender<Text>) -> NodeBuilder {
    b.budget::<Text>(RateBudget::UNLIMITED)
        .protocol("text", Sessions::ALL, move |ch: &Channel| {
            let mut texts = ch.subscribe::<Text>();
            let tx = tx.clone();
            async move {
                while let Some(t) = texts.recv().await {
                    let _ = tx.send(t);
                }
            }
        })
}

fn quic_node() -> NodeBuilder {
    let kp = Keypair::generate().unwrap();
    let quic = QuicTransport::new(&kp, QuicConfig::default()).unwrap();
    Node::builder(kp)
        .transport(quic)
        .listen("quic/127.0.0.1:0".parse().unwrap())
}

/// Connects a node offering `ours` to one offering `theirs` (both made by
/// `make`), checks both channels agreed on `agreed`, and sends text both
/// compressible and not through it.
async fn agree_and_send(
    make: fn() -> NodeBuilder,
    ours: Compression,
    theirs: Compression,
    agreed: Compression,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b = start(receiving(with(make(), theirs), tx)).await;
    let a = start(with(make(), ours).budget::<Text>(RateBudget::UNLIMITED)).await;
    let ch = a.connect(&addr(&b)).await.unwrap();
    assert_eq!(ch.compression(), agreed, "{ours} to {theirs}");
    eventually(LONG, "b's channel", || b.channel(&a.peer_id()).is_some()).await;
    assert_eq!(b.channel(&a.peer_id()).unwrap().compression(), agreed);
    let mut rng = fastrand::Rng::with_seed(7);
    let noise: String = (0..200_000).map(|_| rng.alphanumeric()).collect();
    let sent = [
        Text("lorem ipsum dolor sit amet ".repeat(30_000)),
        Text("small".into()),
        Text(noise),
    ];
    for t in &sent {
        ch.send(t).await.unwrap();
    }
    for t in &sent {
        let got = tokio::time::timeout(LONG, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, t);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn tcp_nodes_agree_on_the_best_both_offer_and_messages_arrive() {
    use Compression::*;
    for (ours, theirs, agreed) in [(Lz4, Zstd, Lz4), (Zstd, Zstd, Zstd), (Zstd, None, None)] {
        agree_and_send(tcp_node, ours, theirs, agreed).await;
    }
}

/// Over QUIC a one-way type has a stream of its own: its writer packs
/// blocks too, and the reader of the stream the peer opened unpacks them.
#[tokio::test]
async fn over_quic_every_stream_is_compressed() {
    agree_and_send(
        quic_node,
        Compression::Lz4,
        Compression::Lz4,
        Compression::Lz4,
    )
    .await;
}

/// A hand-driven peer that offers lz4 and then writes `bytes` raw (below
/// the frame codec, as a compressed stream's blocks); the node must ban it.
async fn bad_blocks(bytes: &[u8]) -> String {
    let a = start(with(tcp_node(), Compression::Lz4)).await;
    let mut events = a.events();
    let kp = Keypair::generate().unwrap();
    let id = kp.peer_id();
    let knotwork_core::PeerAddr::Tcp(sa) = addr(&a) else {
        panic!("tcp")
    };
    let tcp = tokio::net::TcpStream::connect(sa).await.unwrap();
    let hello = Hello::Version(Version::new(&[LZ4_NAME], &[], &addr(&a)));
    let (mut secure, _) = secure_outbound(&SecureConfig::new(kp).unwrap(), tcp, None, &hello)
        .await
        .unwrap();
    // The node sends its version before it has ours, so its channel opens
    // a moment after our handshake ends.
    eventually(LONG, "the node's channel", || a.channel(&id).is_some()).await;
    let channel = a.channel(&id).unwrap();
    assert_eq!(channel.compression(), Compression::Lz4);
    secure.write_all(bytes).await.unwrap();
    secure.flush().await.unwrap();
    let e = wait_event(&mut events, LONG, |e| matches!(e, NodeEvent::Banned { .. })).await;
    assert_eq!(e, NodeEvent::Banned { peer: id });
    assert!(a.is_banned(&id));
    let metrics = a.metrics().encode();
    a.shutdown().await;
    metrics
}

fn lz4_header(packed: u32, raw: u32) -> Vec<u8> {
    let mut h = vec![1u8];
    h.extend_from_slice(&packed.to_be_bytes());
    h.extend_from_slice(&raw.to_be_bytes());
    h
}

#[tokio::test]
async fn a_block_declaring_more_than_the_limit_bans_the_peer() {
    // Ten bytes that claim to expand past the block limit.
    let mut bomb = lz4_header(10, (MAX_BLOCK_LEN + 1) as u32);
    bomb.extend_from_slice(&[0; 10]);
    let metrics = bad_blocks(&bomb).await;
    assert!(
        metrics.contains("knot_bans_total{reason=\"bad_compression\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_block_expanding_past_its_declared_size_bans_the_peer() {
    // 64 KiB of zeros packed by lz4 (a few hundred bytes), declared as 1 KiB.
    let packed = lz4_flex::block::compress(&vec![0u8; MAX_BLOCK_LEN]);
    let mut bomb = lz4_header(packed.len() as u32, 1024);
    bomb.extend_from_slice(&packed);
    let metrics = bad_blocks(&bomb).await;
    assert!(
        metrics.contains("knot_bans_total{reason=\"bad_compression\"} 1"),
        "{metrics}"
    );
}

/// Blocks unpack to frames, which still meet the frame limit: a frame
/// header inside a valid raw block that announces a payload over the
/// limit is bad framing.
#[tokio::test]
async fn the_frame_limit_holds_after_decompression() {
    let mut header = Frame::message(Text::ID, bytes::Bytes::new())
        .encode_header()
        .unwrap();
    header[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut block = vec![0u8];
    block.extend_from_slice(&(header.len() as u32).to_be_bytes());
    block.extend_from_slice(&header);
    let metrics = bad_blocks(&block).await;
    assert!(
        metrics.contains("knot_bans_total{reason=\"bad_framing\"} 1"),
        "{metrics}"
    );
}
