//! [`BleStream`] over an in-memory fragment carrier: bytes arrive in order,
//! a slow reader holds the writer back, a hostile peer ends the stream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::ErrorKind;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use knotwork_transport_ble::{BleError, BleStream, LinkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Carrier = (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>);

fn writer(
    tx: mpsc::Sender<Bytes>,
) -> impl FnMut(Bytes) -> futures::future::BoxFuture<'static, Result<(), BleError>> {
    move |f| {
        let mut tx = tx.clone();
        Box::pin(async move {
            tx.send(f)
                .await
                .map_err(|e| BleError::Central(e.to_string()))
        })
    }
}

fn stream(config: LinkConfig, (tx, rx): Carrier) -> BleStream {
    BleStream::spawn(config, rx, writer(tx)).unwrap()
}

fn pair(config: LinkConfig) -> (BleStream, BleStream) {
    let (a_tx, b_rx) = mpsc::channel(8);
    let (b_tx, a_rx) = mpsc::channel(8);
    (stream(config, (a_tx, a_rx)), stream(config, (b_tx, b_rx)))
}

#[tokio::test]
async fn bytes_arrive_in_order() {
    let (mut a, mut b) = pair(LinkConfig::with_mtu(185));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let send = data.clone();
    let w = tokio::spawn(async move {
        a.write_all(&send).await.unwrap();
        a.shutdown().await.unwrap();
        a
    });
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, data);
    drop(w.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn slow_reader_blocks_writer_at_window() {
    let mut config = LinkConfig::with_mtu(23);
    config.max_message = 1024;
    config.window = 4096;
    let (mut a, mut b) = pair(config);
    let mut written = 0usize;
    let chunk = [7u8; 512];
    // Nobody reads b: writes stop once the window is used up.
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), a.write(&chunk)).await {
        written += n;
        assert!(written <= 4096, "writer exceeded the receive window");
    }
    assert_eq!(written, 4096);
    // Reading frees credit and the writer resumes.
    let mut buf = vec![0u8; 4096];
    b.read_exact(&mut buf).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(1), a.write(&chunk))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 512);
}

#[tokio::test]
async fn hostile_peer_ends_stream_with_named_error() {
    let (mut to_victim, victim_rx) = mpsc::channel(8);
    let (victim_tx, _from_victim) = mpsc::channel(8);
    let mut victim = stream(LinkConfig::default(), (victim_tx, victim_rx));
    // A data record claiming a 2 GiB message.
    to_victim
        .send(Bytes::from_static(&[0x00, 0x80, 0x80, 0x80, 0x80, 0x08]))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let err = victim.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    let inner = err.into_inner().unwrap().downcast::<BleError>().unwrap();
    assert_eq!(
        *inner,
        BleError::MessageTooLarge {
            len: 1 << 31,
            max: knotwork_transport_ble::link::DEFAULT_MAX_MESSAGE
        }
    );
}

#[tokio::test]
async fn carrier_end_is_end_of_stream() {
    let (peer_tx, rx) = mpsc::channel(8);
    let (tx, mut peer_rx) = mpsc::channel(8);
    let mut s = stream(LinkConfig::default(), (tx, rx));
    // The initial credit grant goes out first.
    assert_eq!(peer_rx.next().await.unwrap()[0], 0x01);
    drop(peer_tx);
    let mut buf = [0u8; 4];
    assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    assert_eq!(
        s.write(b"x").await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
}
