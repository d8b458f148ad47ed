//! Address validation: a flood of QUIC Initials from a source that never
//! answers (as a spoofed one cannot) gets stateless Retry packets, not
//! handshakes, and fewer bytes than it sent (no amplification).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::time::Duration;

use knotwork_core::{Keypair, PeerAddr, Transport};
use knotwork_transport_quic::{QuicConfig, QuicTransport};
use tokio::net::UdpSocket;

const N: usize = 32;

/// The Destination Connection ID of a long-header packet, if `p` is one.
fn long_header_dcid(p: &[u8]) -> Option<&[u8]> {
    if p.first()? & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*p.get(5)?);
    p.get(6..6 + len)
}

/// Captures the first Initial of `n` real dials: `n` different connection
/// attempts, as a flood would send them.
async fn capture_initials(n: usize) -> Vec<Vec<u8>> {
    let trap = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = PeerAddr::Quic(trap.local_addr().unwrap());
    let key = Keypair::generate().unwrap();
    let config = QuicConfig::default().with_handshake_timeout(Duration::from_secs(2));
    let client = QuicTransport::new(&key, config).unwrap();
    let dials: Vec<_> = (0..n)
        .map(|_| {
            let (client, addr) = (client.clone(), addr.clone());
            tokio::spawn(async move { client.dial(&addr).await })
        })
        .collect();
    let mut firsts: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    while firsts.len() < n {
        let len = trap.recv(&mut buf).await.unwrap();
        let packet = &buf[..len];
        // A client's first packet: long header, type Initial (0b00).
        assert_eq!(packet[0] & 0xb0, 0x80, "not an Initial");
        let dcid = long_header_dcid(packet).unwrap().to_vec();
        firsts.entry(dcid).or_insert_with(|| packet.to_vec());
    }
    for d in dials {
        d.abort();
    }
    firsts.into_values().collect()
}

#[tokio::test]
async fn initials_from_an_unvalidated_source_get_retries_not_handshakes() {
    let initials = capture_initials(N).await;

    let key = Keypair::generate().unwrap();
    let server = QuicTransport::new(&key, QuicConfig::default()).unwrap();
    let listener = server
        .listen(&"quic/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let target = listener.local_socket_addr();

    // The flooding source sends and never answers.
    let source = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent = 0;
    for p in &initials {
        sent += source.send_to(p, target).await.unwrap();
    }

    let (mut retries, mut received) = (0, 0);
    let mut buf = vec![0u8; 2048];
    // Wait for one answer per Initial, then for anything more (there must
    // be nothing: a Retry keeps no state, so nothing is retransmitted).
    loop {
        let wait = if retries < N {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(500)
        };
        let Ok(len) = tokio::time::timeout(wait, source.recv(&mut buf)).await else {
            break;
        };
        let packet = &buf[..len.unwrap()];
        received += packet.len();
        // Long header, fixed bit, type Retry (0b11).
        assert_eq!(packet[0] & 0xf0, 0xf0, "not a Retry: {:#04x}", packet[0]);
        retries += 1;
    }
    assert_eq!(retries, N, "one Retry per Initial");
    assert!(
        received * 3 < sent,
        "answers must be far smaller than the flood: {received} B for {sent} B"
    );
    let stats = listener.stats();
    assert_eq!(stats.retries, N as u64, "{stats:?}");
    assert_eq!(
        stats.handshakes, 0,
        "no handshake for an unvalidated source"
    );
    println!("{N} Initials, {sent} B in; {retries} Retry packets, {received} B out");
}
