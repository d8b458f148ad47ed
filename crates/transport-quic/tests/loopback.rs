//! QuicTransport on real loopback UDP sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use knotwork_core::{Keypair, Listener, PeerAddr, Transport, TransportError};
use knotwork_transport_quic::{
    ALPN, QuicConfig, QuicConnection, QuicError, QuicListener, QuicTransport, identity,
};
use quinn::rustls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn transport() -> (Keypair, QuicTransport) {
    let key = Keypair::generate().unwrap();
    let t = QuicTransport::new(&key, QuicConfig::default()).unwrap();
    (key, t)
}

async fn listen(t: &QuicTransport, addr: &str) -> QuicListener {
    t.listen(&addr.parse().unwrap()).await.unwrap()
}

async fn roundtrip(listen_on: &str) {
    let (server_key, server) = transport();
    let (client_key, client) = transport();
    let mut listener = listen(&server, listen_on).await;
    let addr = listener.local_addr();
    let PeerAddr::Quic(sa) = addr else {
        panic!("not quic: {addr}")
    };
    assert_ne!(sa.port(), 0, "port 0 is replaced by the bound port");

    let mut conn = client
        .dial_peer(&addr, Some(server_key.peer_id()))
        .await
        .unwrap();
    let (mut inbound, from) = listener.accept().await.unwrap();
    let PeerAddr::Quic(from) = from else {
        panic!("not quic: {from}")
    };
    assert_eq!(from.ip(), sa.ip());
    assert_eq!(
        QuicTransport::authenticated_peer(&conn),
        Some(server_key.peer_id())
    );
    assert_eq!(
        QuicTransport::authenticated_peer(&inbound),
        Some(client_key.peer_id())
    );

    // The listener side speaks first: its stream is open on accept.
    inbound.write_all(b"pong").await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    conn.write_all(b"ping").await.unwrap();
    inbound.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // Shutdown finishes the stream: the peer reads EOF.
    conn.shutdown().await.unwrap();
    assert_eq!(inbound.read(&mut buf).await.unwrap(), 0);
}

#[tokio::test]
async fn ipv4_loopback_roundtrip_with_peer_ids() {
    roundtrip("quic/127.0.0.1:0").await;
}

#[tokio::test]
async fn ipv6_loopback_roundtrip_with_peer_ids() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    roundtrip("quic/[::1]:0").await;
}

/// Accepts `n` connections and echoes everything on their first streams.
fn spawn_echo(mut listener: QuicListener, n: usize) -> tokio::task::JoinHandle<QuicListener> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (conn, _) = listener.accept().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(conn);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        listener
    })
}

#[tokio::test]
async fn bulk_echo_is_byte_exact() {
    let (_, server) = transport();
    let (_, client) = transport();
    let listener = listen(&server, "quic/127.0.0.1:0").await;
    let addr = listener.local_addr();
    let echo = spawn_echo(listener, 1);

    let conn = client.dial(&addr).await.unwrap();
    let (mut r, mut w) = tokio::io::split(conn);
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 4093) as u8)
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::with_capacity(data.len());
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
    drop(r);
    echo.await.unwrap();
}

#[tokio::test]
async fn many_concurrent_connections() {
    const N: usize = 64;
    let (_, server) = transport();
    let listener = listen(&server, "quic/127.0.0.1:0").await;
    let addr = listener.local_addr();
    let echo = spawn_echo(listener, N);

    let mut dials = Vec::new();
    for i in 0..N {
        let addr = addr.clone();
        dials.push(tokio::spawn(async move {
            // Each dialer its own identity and socket.
            let (_, client) = transport();
            let mut conn = client.dial(&addr).await.unwrap();
            let msg = format!("connection {i}");
            conn.write_all(msg.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
            let mut back = String::new();
            conn.read_to_string(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }));
    }
    for d in dials {
        d.await.unwrap();
    }
    let stats = echo.await.unwrap().stats();
    assert_eq!(stats.handshakes, N as u64, "{stats:?}");
    assert_eq!(
        stats.retries, N as u64,
        "each new source is sent a Retry first"
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
}

#[tokio::test]
async fn expected_peer_id_mismatch_is_named() {
    let (_, server) = transport();
    let (_, client) = transport();
    let listener = listen(&server, "quic/127.0.0.1:0").await;
    let someone_else = Keypair::generate().unwrap().peer_id();
    let err = client
        .dial_peer(&listener.local_addr(), Some(someone_else))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Handshake(_)), "{err:?}");
    match QuicError::from_transport(&err) {
        Some(QuicError::PeerIdMismatch { expected, actual }) => {
            assert_eq!(*expected, someone_else);
            assert_ne!(*actual, someone_else);
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
}

/// A key pair whose raw public key is `claimed`'s but whose handshake
/// signature is `signer`'s: a peer claiming an identity it cannot prove.
fn forged_key(claimed: &Keypair, signer: &Keypair) -> Arc<rustls::sign::CertifiedKey> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signer.to_pkcs8().to_vec().into());
    let spki = identity::encode_spki(&claimed.public()).to_vec();
    Arc::new(rustls::sign::CertifiedKey::new(
        vec![spki.into()],
        provider().key_provider.load_private_key(key).unwrap(),
    ))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Mallory's verifier: accepts any raw public key and any signature.
#[derive(Debug)]
struct AnyPeer;

mod any_peer {
    use super::AnyPeer;
    use quinn::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use quinn::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use quinn::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
    use quinn::rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

    impl ServerCertVerifier for AnyPeer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    }

    impl ClientCertVerifier for AnyPeer {
        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            &[]
        }
        fn verify_client_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: UnixTime,
        ) -> Result<ClientCertVerified, Error> {
            Ok(ClientCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    }
}

#[tokio::test]
async fn server_claiming_a_key_it_cannot_sign_with_is_bad_signature() {
    let (victim, mallory) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(AnyPeer))
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(forged_key(&victim, &mallory)),
        ));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = PeerAddr::Quic(server.local_addr().unwrap());
    let accept = tokio::spawn(async move {
        // Let the handshake run to the client's verdict.
        let incoming = server.accept().await.unwrap();
        incoming.accept().unwrap().await
    });

    let (_, client) = transport();
    let err = client
        .dial_peer(&addr, Some(victim.peer_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Handshake(_)), "{err:?}");
    assert!(
        matches!(
            QuicError::from_transport(&err),
            Some(QuicError::BadSignature)
        ),
        "{err:?}"
    );
    assert!(accept.await.unwrap().is_err());
}

#[tokio::test]
async fn client_claiming_a_key_it_cannot_sign_with_is_refused() {
    let (victim, mallory) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    let (_, server) = transport();
    let mut listener = listen(&server, "quic/127.0.0.1:0").await;
    let PeerAddr::Quic(sa) = listener.local_addr() else {
        panic!("not quic")
    };

    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyPeer))
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(forged_key(&victim, &mallory)),
        ));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let attempt = endpoint
        .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), sa, "x")
        .unwrap()
        .await;
    // The client's handshake may complete before the server's verdict
    // arrives (its Finished is its last flight): then the close follows.
    let closed = match attempt {
        Ok(conn) => conn.closed().await,
        Err(e) => e,
    };
    assert!(
        matches!(closed, quinn::ConnectionError::ConnectionClosed(ref c)
            if (0x100..0x200).contains(&u64::from(c.error_code))),
        "the server closes with a TLS alert: {closed:?}"
    );
    let none = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(none.is_err(), "a forged identity is never accepted");
    let stats = listener.stats();
    assert_eq!((stats.handshakes, stats.failed), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn dial_to_non_quic_address_is_unsupported() {
    let (_, client) = transport();
    let addr: PeerAddr = "tcp/127.0.0.1:1".parse().unwrap();
    assert!(matches!(
        client.dial(&addr).await,
        Err(TransportError::UnsupportedAddr(a)) if a == addr
    ));
    assert!(matches!(
        client.listen(&addr).await,
        Err(TransportError::UnsupportedAddr(a)) if a == addr
    ));
}

// Virtual time: the runtime idles while nothing answers, so the clock
// jumps to the handshake timeout.
#[tokio::test(start_paused = true)]
async fn dial_to_silent_port_times_out() {
    let key = Keypair::generate().unwrap();
    let config = QuicConfig::default().with_handshake_timeout(Duration::from_secs(5));
    let client = QuicTransport::new(&key, config).unwrap();
    // A bound UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = PeerAddr::Quic(silent.local_addr().unwrap());
    match client.dial(&addr).await {
        Err(TransportError::Timeout(a)) => assert_eq!(a, addr),
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn second_listen_on_same_port_is_addr_in_use() {
    let (_, t) = transport();
    let first = listen(&t, "quic/127.0.0.1:0").await;
    let addr = first.local_addr();
    match t.listen(&addr).await {
        Err(TransportError::AddrInUse(a)) => assert_eq!(a, addr),
        other => panic!("expected AddrInUse, got {other:?}"),
    }
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let key = Keypair::generate().unwrap();
    let server =
        QuicTransport::new(&key, QuicConfig::default().with_max_connections(2, 8)).unwrap();
    let mut listener = listen(&server, "quic/127.0.0.1:0").await;
    let addr = listener.local_addr();
    let (_, client) = transport();
    let mut kept: Vec<QuicConnection> = Vec::new();
    for _ in 0..2 {
        kept.push(client.dial(&addr).await.unwrap());
        kept.push(listener.accept().await.unwrap().0);
    }
    match client.dial(&addr).await {
        Err(TransportError::ConnectionRefused(a)) => assert_eq!(a, addr),
        other => panic!("expected ConnectionRefused, got {other:?}"),
    }
    assert_eq!(listener.stats().refused, 1);
}

#[tokio::test]
async fn dropping_the_listener_stops_accepting_but_keeps_connections() {
    let (_, server) = transport();
    let key = Keypair::generate().unwrap();
    let config = QuicConfig::default().with_handshake_timeout(Duration::from_millis(300));
    let client = QuicTransport::new(&key, config).unwrap();
    let mut listener = listen(&server, "quic/127.0.0.1:0").await;
    let addr = listener.local_addr();
    let mut conn = client.dial(&addr).await.unwrap();
    let (mut inbound, _) = listener.accept().await.unwrap();
    drop(listener);

    conn.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    inbound.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still");
    // The socket stays open for the connection, but answers no new one:
    // a dial gets nothing back, as from a port nobody listens on.
    match client.dial(&addr).await {
        Err(TransportError::Timeout(a)) => assert_eq!(a, addr),
        other => panic!("expected Timeout, got {other:?}"),
    }
    inbound.write_all(b"alive").await.unwrap();
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"alive");
}

#[tokio::test]
async fn a_client_of_another_protocol_fails_the_handshake() {
    let (_, server) = transport();
    let mut listener = listen(&server, "quic/127.0.0.1:0").await;
    let PeerAddr::Quic(sa) = listener.local_addr() else {
        panic!("not quic")
    };
    // An HTTP/3 client with a valid key of its own.
    let me = Keypair::generate().unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyPeer))
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(forged_key(&me, &me)),
        ));
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = endpoint
        .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), sa, "x")
        .unwrap()
        .await
        .unwrap_err();
    // TLS alert no_application_protocol (120).
    assert!(
        matches!(err, quinn::ConnectionError::ConnectionClosed(ref c)
            if u64::from(c.error_code) == 0x100 + 120),
        "{err:?}"
    );
    let none = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(none.is_err());
    assert_eq!(listener.stats().failed, 1);
}
