//! TcpTransport on real loopback sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use knotwork_core::{Listener, PeerAddr, Transport, TransportError};
use knotwork_transport_tcp::{TcpConfig, TcpTransport};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn roundtrip(listen: &str) {
    let tcp = TcpTransport::default();
    let mut listener = tcp.listen(&listen.parse().unwrap()).await.unwrap();
    let addr = listener.local_addr();
    let PeerAddr::Tcp(sa) = addr else {
        panic!("not tcp: {addr}")
    };
    assert_ne!(sa.port(), 0, "port 0 is replaced by the bound port");

    let mut client = tcp.dial(&addr).await.unwrap();
    let (mut server, from) = listener.accept().await.unwrap();
    assert_eq!(from, PeerAddr::Tcp(client.local_addr().unwrap()));

    for s in [&client, &server] {
        assert!(s.nodelay().unwrap(), "TCP_NODELAY must be on both sides");
        assert!(
            SockRef::from(s).keepalive().unwrap(),
            "keepalive must be on"
        );
    }

    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn ipv4_loopback_roundtrip() {
    roundtrip("tcp/127.0.0.1:0").await;
}

#[tokio::test]
async fn ipv6_loopback_roundtrip() {
    // Some containers have no ::1; skip the test there rather than fail.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    roundtrip("tcp/[::1]:0").await;
}

#[tokio::test]
async fn second_listen_on_same_port_is_addr_in_use() {
    let tcp = TcpTransport::default();
    let first = tcp
        .listen(&"tcp/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = first.local_addr();
    match tcp.listen(&addr).await {
        Err(TransportError::AddrInUse(a)) => assert_eq!(a, addr),
        other => panic!("expected AddrInUse, got {other:?}"),
    }
}

#[tokio::test]
async fn dial_to_closed_port_is_connection_refused() {
    let tcp = TcpTransport::default();
    let addr = {
        let l = tcp
            .listen(&"tcp/127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        l.local_addr()
    };
    match tcp.dial(&addr).await {
        Err(TransportError::ConnectionRefused(a)) => assert_eq!(a, addr),
        other => panic!("expected ConnectionRefused, got {other:?}"),
    }
}

#[tokio::test]
async fn dial_that_never_completes_times_out() {
    // A listener with a full backlog that never accepts: further SYNs get no
    // answer on Linux, so the dial hangs until the timeout.
    let std_listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    std_listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    std_listener.listen(0).unwrap();
    let sa = std_listener.local_addr().unwrap().as_socket().unwrap();
    let addr = PeerAddr::Tcp(sa);
    let tcp = TcpTransport::new(TcpConfig::default().with_dial_timeout(Duration::from_millis(200)));
    // Fill the backlog with connections nobody accepts.
    let mut held = Vec::new();
    let outcome = loop {
        match tcp.dial(&addr).await {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(held.len() < 64, "backlog never filled");
    };
    assert!(
        matches!(outcome, TransportError::Timeout(ref a) if *a == addr),
        "got {outcome:?}"
    );
}

#[tokio::test]
async fn non_tcp_addresses_are_unsupported() {
    let tcp = TcpTransport::default();
    for text in ["mem/3", "ble/AA:BB:CC:DD:EE:FF"] {
        let addr: PeerAddr = text.parse().unwrap();
        assert!(
            matches!(tcp.dial(&addr).await, Err(TransportError::UnsupportedAddr(ref a)) if *a == addr)
        );
        assert!(
            matches!(tcp.listen(&addr).await, Err(TransportError::UnsupportedAddr(ref a)) if *a == addr)
        );
    }
}

#[tokio::test]
async fn keepalive_can_be_turned_off() {
    let tcp = TcpTransport::new(TcpConfig::default().with_keepalive(None));
    let mut listener = tcp
        .listen(&"tcp/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = tcp.dial(&listener.local_addr()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    assert!(!SockRef::from(&client).keepalive().unwrap());
    assert!(!SockRef::from(&server).keepalive().unwrap());
    assert!(client.nodelay().unwrap() && server.nodelay().unwrap());
}

#[tokio::test]
async fn dial_from_the_listen_port_shows_that_port_to_the_peer() {
    let tcp = TcpTransport::new(TcpConfig::default().with_port_reuse(true));
    let mut a = tcp
        .listen(&"tcp/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut b = tcp
        .listen(&"tcp/127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    let PeerAddr::Tcp(a_local) = a.local_addr() else {
        panic!("tcp listener")
    };
    let mut out = tcp.dial_from(a_local, &b.local_addr()).await.unwrap();
    let (mut inbound, from) = b.accept().await.unwrap();
    assert_eq!(from, a.local_addr(), "the dial leaves from a's listen port");
    out.write_all(b"punch").await.unwrap();
    let mut buf = [0u8; 5];
    inbound.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"punch");
    // a's listener still accepts while the reused port carries the dial.
    let _c = tcp.dial(&a.local_addr()).await.unwrap();
    a.accept().await.unwrap();
    // Without port reuse the listen port cannot be dialed from.
    let plain = TcpTransport::default();
    let l = plain
        .listen(&"tcp/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let PeerAddr::Tcp(l_local) = l.local_addr() else {
        panic!("tcp listener")
    };
    assert!(plain.dial_from(l_local, &b.local_addr()).await.is_err());
}

#[tokio::test]
async fn a_dns_name_is_resolved_when_dialing() {
    // `localhost` comes from /etc/hosts: no query leaves the machine.
    let tcp = TcpTransport::default();
    let mut listener = tcp
        .listen(&"tcp/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let PeerAddr::Tcp(sa) = listener.local_addr() else {
        panic!("tcp listener")
    };
    let named: PeerAddr = format!("tcp/localhost:{}", sa.port()).parse().unwrap();
    assert!(matches!(named, PeerAddr::TcpDns(..)));
    let mut client = tcp.dial(&named).await.unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    assert!(client.nodelay().unwrap(), "a named dial is tuned like any");
    client.write_all(b"name").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"name");
    // Names are for dialing; a listener needs an IP address.
    assert!(matches!(
        tcp.listen(&named).await,
        Err(TransportError::UnsupportedAddr(ref a)) if *a == named
    ));
}
