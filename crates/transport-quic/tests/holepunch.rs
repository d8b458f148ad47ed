//! Hole punching over UDP: both peers dial each other at the same moment
//! from their listening sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use knotwork_core::{Keypair, Listener, Transport};
use knotwork_transport_quic::{QuicConfig, QuicConnection, QuicTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn says(from: &mut QuicConnection, to: &mut QuicConnection, msg: &[u8]) {
    from.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    to.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn simultaneous_dials_from_listen_sockets_meet() {
    let (ka, kb) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    let a = QuicTransport::new(&ka, QuicConfig::default()).unwrap();
    let b = QuicTransport::new(&kb, QuicConfig::default()).unwrap();
    let mut la = a
        .listen(&"quic/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut lb = b
        .listen(&"quic/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (a_sock, b_sock) = (la.local_socket_addr(), lb.local_socket_addr());
    let (a_addr, b_addr) = (la.local_addr(), lb.local_addr());

    let (a_out, b_out) = tokio::join!(
        a.dial_from(a_sock, &b_addr, Some(kb.peer_id())),
        b.dial_from(b_sock, &a_addr, Some(ka.peer_id())),
    );
    let (mut a_out, mut b_out) = (a_out.unwrap(), b_out.unwrap());
    let (mut a_in, from_b) = la.accept().await.unwrap();
    let (mut b_in, from_a) = lb.accept().await.unwrap();

    // Each side's packets left from its listen socket: what a NAT maps.
    assert_eq!(from_a.to_string(), format!("quic/{a_sock}"));
    assert_eq!(from_b.to_string(), format!("quic/{b_sock}"));
    assert_eq!(a_out.handle().remote_addr(), b_sock);
    for (conn, peer) in [(&a_out, &kb), (&a_in, &kb), (&b_out, &ka), (&b_in, &ka)] {
        assert_eq!(
            QuicTransport::authenticated_peer(conn),
            Some(peer.peer_id())
        );
    }

    // Two connections, one per direction; the node keeps one per PeerId:
    // the one dialed by the smaller PeerId, which both sides agree on.
    let (kept_a, kept_b) = if ka.peer_id() < kb.peer_id() {
        (&mut a_out, &mut b_in)
    } else {
        (&mut a_in, &mut b_out)
    };
    says(kept_a, kept_b, b"kept, a to b").await;
    says(kept_b, kept_a, b"kept, b to a").await;
    // The other one is the same kind of connection, the other way round.
    let (other_a, other_b) = if ka.peer_id() < kb.peer_id() {
        (&mut a_in, &mut b_out)
    } else {
        (&mut a_out, &mut b_in)
    };
    says(other_b, other_a, b"duplicate").await;
}

#[tokio::test]
async fn dial_from_a_socket_not_listening_is_named() {
    use knotwork_transport_quic::QuicError;
    let k = Keypair::generate().unwrap();
    let t = QuicTransport::new(&k, QuicConfig::default()).unwrap();
    let l = t
        .listen(&"quic/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let elsewhere = "127.0.0.1:9".parse().unwrap();
    let err = t
        .dial_from(elsewhere, &l.local_addr(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(QuicError::from_transport(&err), Some(QuicError::NotListening(a)) if *a == elsewhere),
        "{err:?}"
    );
}

#[tokio::test]
async fn dials_leave_from_a_listening_socket_of_the_same_family() {
    let (ka, kb) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    let a = QuicTransport::new(&ka, QuicConfig::default()).unwrap();
    let b = QuicTransport::new(&kb, QuicConfig::default()).unwrap();
    let mut lb = b
        .listen(&"quic/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    // Not listening: an ephemeral dial-only socket.
    let _first = a.dial(&lb.local_addr()).await.unwrap();
    let (_, from) = lb.accept().await.unwrap();
    let la = a
        .listen(&"quic/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_ne!(from, la.local_addr());

    // Listening: the dial leaves from the listen socket.
    let _second = a.dial(&lb.local_addr()).await.unwrap();
    let (_, from) = lb.accept().await.unwrap();
    assert_eq!(from, la.local_addr());
}
