//! `TcpConfig::local_ip`: dials leave from the configured source address.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::IpAddr;

use knotwork_core::{Listener, PeerAddr, Transport};
use knotwork_transport_tcp::{TcpConfig, TcpTransport};

#[tokio::test]
async fn dials_leave_from_the_configured_local_ip() {
    let mut listener = TcpTransport::default()
        .listen(&"tcp/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // All of 127.0.0.0/8 is local on Linux; elsewhere only 127.0.0.1 may be.
    let source: IpAddr = if cfg!(target_os = "linux") {
        "127.0.0.2".parse().unwrap()
    } else {
        "127.0.0.1".parse().unwrap()
    };
    let tcp = TcpTransport::new(TcpConfig::default().with_local_ip(source));
    let client = tcp.dial(&listener.local_addr()).await.unwrap();
    let (server, from) = listener.accept().await.unwrap();
    let PeerAddr::Tcp(from) = from else {
        panic!("not tcp: {from}")
    };
    assert_eq!(from.ip(), source, "the listener sees the configured source");
    assert_eq!(client.local_addr().unwrap().ip(), source);
    assert!(client.nodelay().unwrap() && server.nodelay().unwrap());
}

#[tokio::test]
async fn a_local_ip_of_the_other_family_fails_the_dial() {
    let listener = TcpTransport::default()
        .listen(&"tcp/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tcp = TcpTransport::new(TcpConfig::default().with_local_ip("::1".parse().unwrap()));
    assert!(tcp.dial(&listener.local_addr()).await.is_err());
}
