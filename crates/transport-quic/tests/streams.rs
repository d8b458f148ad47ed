//! Further streams on one connection, and no head-of-line blocking between
//! them: a stream whose reader stalls does not hold up the others.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use knotwork_core::{Keypair, Listener, Transport};
use knotwork_transport_quic::{QuicConfig, QuicConnection, QuicTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pair(config: QuicConfig) -> (QuicConnection, QuicConnection) {
    let (ka, kb) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    let a = QuicTransport::new(&ka, config.clone()).unwrap();
    let b = QuicTransport::new(&kb, config).unwrap();
    let mut l = b
        .listen(&"quic/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dialed = a.dial(&l.local_addr()).await.unwrap();
    let (accepted, _) = l.accept().await.unwrap();
    (dialed, accepted)
}

#[tokio::test]
async fn a_stalled_stream_does_not_block_requests_or_the_first_stream() {
    let (mut a, mut b) = pair(QuicConfig::default()).await;

    // A subscription stream whose reader never reads: its sender fills the
    // stream's flow-control window and then waits.
    let mut stalled = a.handle().open_stream().await.unwrap();
    stalled.write_all(b"subscription").await.unwrap();
    let _unread = b.handle().accept_stream().await.unwrap();
    let flood = tokio::spawn(async move {
        stalled
            .write_all(&vec![7u8; 16 * 1024 * 1024])
            .await
            .unwrap();
        stalled
    });

    // Requests on their own stream, both ways, while the flood waits.
    let b_handle = b.handle().clone();
    let responder = tokio::spawn(async move {
        let mut s = b_handle.accept_stream().await.unwrap();
        for _ in 0..10 {
            let mut req = [0u8; 8];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(&u64::from_be_bytes(req).wrapping_mul(3).to_be_bytes())
                .await
                .unwrap();
        }
    });
    let mut requests = a.handle().open_stream().await.unwrap();
    for i in 0..10u64 {
        requests.write_all(&i.to_be_bytes()).await.unwrap();
        let mut resp = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), requests.read_exact(&mut resp));
        read.await
            .expect("request answered while a stream is stalled")
            .unwrap();
        assert_eq!(u64::from_be_bytes(resp), i * 3);
    }
    responder.await.unwrap();

    // And the first stream (control: ping, version) still flows.
    a.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    b.read_exact(&mut buf).await.unwrap();
    b.write_all(b"pong").await.unwrap();
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");

    assert!(
        !flood.is_finished(),
        "the stalled stream's writer still waits"
    );
    flood.abort();
}

#[tokio::test]
async fn streams_open_both_ways_and_are_limited() {
    let (a, b) = pair(QuicConfig::default().with_max_streams(3)).await;
    // The listener side opens too; the dialer accepts.
    let mut s = b.handle().open_stream().await.unwrap();
    s.write_all(b"from b").await.unwrap();
    let mut got = a.handle().accept_stream().await.unwrap();
    let mut buf = [0u8; 6];
    got.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"from b");

    // The first stream counts: the dialer may open two more, not three.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = a.handle().open_stream().await.unwrap();
        s.write_all(b"x").await.unwrap();
        open.push(s);
    }
    let third = tokio::time::timeout(Duration::from_millis(300), a.handle().open_stream()).await;
    assert!(
        third.is_err(),
        "a fourth concurrent stream waits for the peer's limit"
    );
}

/// A connection (a node's channel, say) may be dropped after its runtime's
/// work is done, on a thread without a runtime: no panic there.
#[test]
fn a_connection_dropped_outside_a_runtime_does_not_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (dialed, accepted) = rt.block_on(pair(QuicConfig::default()));
    let further = rt.block_on(dialed.handle().open_stream()).unwrap();
    drop(further);
    drop(dialed);
    drop(accepted);
}
