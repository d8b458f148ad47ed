//! The node over QUIC (issue 20): no Noise inside QUIC, one-way message
//! types on streams of their own, the node's limits on QUIC connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use futures::{SinkExt, StreamExt};
use knotwork_core::{Keypair, Listener, PeerAddr, PeerId, Substreams, Transport, TransportError};
use knotwork_crypto_handshake::preamble::MAGIC;
use knotwork_node::{
    Channel, CloseReason, DisconnectReason, Node, NodeBuilder, NodeConfig, NodeError, NodeEvent,
    RateBudget, Sessions, Version,
};
use knotwork_transport_quic::{QuicConfig, QuicTransport};
use knotwork_wire::{Frame, FrameCodec, FrameKind, Message, encode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::codec::{Framed, FramedWrite};

const LONG: Duration = Duration::from_secs(10);

/// A node with QUIC (listening on loopback) beside its TCP.
fn quic_node() -> NodeBuilder {
    let kp = Keypair::generate().unwrap();
    let quic = QuicTransport::new(&kp, QuicConfig::default()).unwrap();
    Node::builder(kp)
        .transport(quic)
        .listen("quic/127.0.0.1:0".parse().unwrap())
        .config(fast_config())
}

// ---- No Noise inside QUIC -------------------------------------------------

/// A transport that records the first bytes the node writes on each
/// connection it dials, and says of them what the transport inside says.
struct Tap<T> {
    inner: T,
    seen: Arc<Mutex<Vec<u8>>>,
}

struct Tapped<C> {
    inner: C,
    seen: Arc<Mutex<Vec<u8>>>,
}

const TAPPED: usize = 1024;

impl<C: AsyncRead + Unpin> AsyncRead for Tapped<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Tapped<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            let mut seen = self.seen.lock().unwrap();
            let room = TAPPED.saturating_sub(seen.len()).min(n);
            seen.extend_from_slice(&buf[..room]);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct TapListener<L>(L);

#[async_trait]
impl<L: Listener> Listener for TapListener<L> {
    type Connection = Tapped<L::Connection>;

    fn local_addr(&self) -> PeerAddr {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> Result<(Self::Connection, PeerAddr), TransportError> {
        let (inner, from) = self.0.accept().await?;
        let seen = Arc::default();
        Ok((Tapped { inner, seen }, from))
    }
}

#[async_trait]
impl<T: Transport> Transport for Tap<T>
where
    T::Listener: 'static,
{
    type Connection = Tapped<T::Connection>;
    type Listener = TapListener<T::Listener>;

    async fn listen(&self, addr: &PeerAddr) -> Result<Self::Listener, TransportError> {
        Ok(TapListener(self.inner.listen(addr).await?))
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<Self::Connection, TransportError> {
        let inner = self.inner.dial(addr).await?;
        Ok(Tapped {
            inner,
            seen: self.seen.clone(),
        })
    }

    fn authenticated_peer(conn: &Self::Connection) -> Option<PeerId> {
        T::authenticated_peer(&conn.inner)
    }

    fn substreams(conn: &Self::Connection) -> Option<Arc<dyn Substreams>> {
        T::substreams(&conn.inner)
    }
}

/// The first bytes a dialer with `transport` (tapped) writes on a
/// connection to `to`.
async fn first_bytes<T: Transport + 'static>(kp: Keypair, transport: T, to: &Node) -> Vec<u8>
where
    T::Listener: 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tap = Tap {
        inner: transport,
        seen: seen.clone(),
    };
    let dialer = start(Node::builder(kp).transport(tap).config(fast_config())).await;
    let channel = dialer.connect(&addr(to)).await.unwrap();
    assert_eq!(channel.remote_peer_id(), to.peer_id());
    dialer.shutdown().await;
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn a_quic_connection_starts_with_the_version_not_a_noise_preamble() {
    let server = start(quic_node().listen("tcp/127.0.0.1:0".parse().unwrap())).await;
    let tcp_addr = server.listen_addrs()[1].clone();
    assert!(matches!(tcp_addr, PeerAddr::Tcp(_)), "{tcp_addr}");

    let kp = Keypair::generate().unwrap();
    let quic = QuicTransport::new(&kp, QuicConfig::default()).unwrap();
    let bytes = first_bytes(kp, quic, &server).await;
    assert!(
        !bytes.windows(MAGIC.len()).any(|w| w == MAGIC),
        "no Noise preamble anywhere: {bytes:02x?}"
    );
    // The very first frame is our version message.
    let mut codec = FrameCodec::new();
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let frame = tokio_util::codec::Decoder::decode(&mut codec, &mut buf);
    let frame = frame.ok().flatten();
    assert!(
        frame.is_some_and(|f| f.kind == FrameKind::Message && f.msg_id == Version::ID),
        "the first frame is a version: {bytes:02x?}"
    );

    // Over TCP the same node's connections open with the Noise preamble.
    let kp = Keypair::generate().unwrap();
    let tcp = knotwork_transport_tcp::TcpTransport::default();
    let tcp_server = start(tcp_node()).await;
    let bytes = first_bytes(kp, tcp, &tcp_server).await;
    assert_eq!(bytes.get(..MAGIC.len()), Some(&MAGIC[..]), "{bytes:02x?}");
    server.shutdown().await;
    tcp_server.shutdown().await;
}

// ---- Streams: a stalled subscription blocks only its own type -------------

#[derive(Debug, Serialize, Deserialize)]
struct Bulk(u32);
impl Message for Bulk {
    const NAME: &'static str = "test/bulk/1";
    const MAX_BYTES: usize = 5;
}

#[derive(Debug, Serialize, Deserialize)]
struct Echo(u32);
impl Message for Echo {
    const NAME: &'static str = "test/echo/1";
    const MAX_BYTES: usize = 5;
}

#[derive(Debug, Serialize, Deserialize)]
struct Note(u32);
impl Message for Note {
    const NAME: &'static str = "test/note/1";
    const MAX_BYTES: usize = 5;
}

/// A server whose subscriber of `Bulk` never reads, while it answers
/// `Echo` requests and forwards `Note`s to the test.
fn stalling(b: NodeBuilder, notes: tokio::sync::mpsc::UnboundedSender<u32>) -> NodeBuilder {
    b.budget::<Bulk>(RateBudget::UNLIMITED)
        .protocol("stall", Sessions::ALL, move |ch: &Channel| {
            let stalled = ch.subscribe::<Bulk>();
            let mut requests = ch.subscribe_requests::<Echo>();
            let mut others = ch.subscribe::<Note>();
            let notes = notes.clone();
            async move {
                let _stalled = stalled;
                loop {
                    tokio::select! {
                        Some((Echo(n), r)) = requests.recv() => { let _ = r.respond(&Echo(n)).await; }
                        Some(Note(n)) = others.recv() => { let _ = notes.send(n); }
                        else => break,
                    }
                }
            }
        })
}

/// Floods `Bulk` at a server that stalls on it, then checks that requests,
/// another one-way type and ping still get through. `Err` says what was
/// blocked.
async fn stalled_subscription_scenario(
    server: NodeBuilder,
    client: NodeBuilder,
    listen: usize,
) -> Result<(), String> {
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let server = start(stalling(server, notes_tx)).await;
    let client = start(client).await;
    let ch = client
        .connect(&server.listen_addrs()[listen])
        .await
        .unwrap();
    let flood = ch.clone();
    let flooding = tokio::spawn(async move {
        for i in 0..5000 {
            if flood.send(&Bulk(i)).await.is_err() {
                break;
            }
        }
    });
    // Let the flood fill the subscription and whatever is below it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let result = async {
        for i in 0..5 {
            match ch
                .request_timeout::<Echo, Echo>(&Echo(i), Duration::from_millis(500))
                .await
            {
                Ok(Echo(n)) if n == i => {}
                other => return Err(format!("request {i}: {other:?}")),
            }
        }
        tokio::time::timeout(Duration::from_millis(500), ch.send(&Note(7)))
            .await
            .map_err(|_| "a note could not be queued".to_string())?
            .map_err(|e| format!("note: {e}"))?;
        match tokio::time::timeout(Duration::from_millis(500), notes.recv()).await {
            Ok(Some(7)) => {}
            other => return Err(format!("note: {other:?}")),
        }
        // Pings go on: the channel outlives two ping timeouts.
        tokio::time::sleep(PING_TIMEOUT * 2).await;
        if let Some(reason) = ch.close_reason() {
            return Err(format!("the channel closed: {reason:?}"));
        }
        Ok(())
    }
    .await;
    flooding.abort();
    client.shutdown().await;
    server.shutdown().await;
    result
}

#[tokio::test]
async fn over_quic_a_stalled_subscription_delays_neither_requests_nor_ping_nor_other_types() {
    stalled_subscription_scenario(quic_node(), quic_node(), 0)
        .await
        .unwrap();
}

/// The same scenario over TCP fails: one stream, head-of-line blocking.
#[tokio::test]
async fn over_tcp_the_same_stall_blocks_the_whole_channel() {
    let blocked = stalled_subscription_scenario(tcp_node(), tcp_node(), 0).await;
    assert!(
        blocked
            .as_ref()
            .is_err_and(|e| e.starts_with("request 0: Err(")),
        "over TCP the first request waits behind the stall (until it times out or ping \
         closes the channel): {blocked:?}"
    );
}

// ---- Limits ---------------------------------------------------------------

#[tokio::test]
async fn the_node_limits_apply_to_quic_connections() {
    for (limit, reason) in [
        ("max_inbound", DisconnectReason::TooManyPeers),
        ("max_per_ip", DisconnectReason::TooManyFromIp),
    ] {
        let mut config = fast_config();
        match limit {
            "max_inbound" => config.max_inbound = 1,
            _ => config.max_per_ip = 1,
        }
        let a = start(quic_node().config(config)).await;
        let b = start(quic_node()).await;
        let c = start(quic_node()).await;
        let kept = b.connect(&addr(&a)).await.unwrap();
        match c.connect(&addr(&a)).await {
            Err(NodeError::Refused(r)) if r == reason => {}
            other => panic!("{limit}: expected a {reason:?} refusal, got {other:?}"),
        }
        assert!(!kept.is_closed());
        for n in [&a, &b, &c] {
            n.shutdown().await;
        }
    }
}

#[tokio::test]
async fn the_handshake_start_budget_applies_to_quic_hosts() {
    let mut config: NodeConfig = fast_config();
    config.handshake_starts = RateBudget::new(0.001, 1);
    let a = start(quic_node().config(config)).await;
    let b = start(quic_node()).await;
    b.connect(&addr(&a)).await.unwrap();
    let c = start(quic_node()).await;
    // A second start from 127.0.0.1 is over the budget: dropped before the
    // version exchange, so the dial times out.
    assert!(c.connect(&addr(&a)).await.is_err());
    let text = a.metrics().encode();
    assert!(
        text.contains("knot_connections_dropped_total{reason=\"rate\"} 1"),
        "{text}"
    );
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}

// ---- A peer that breaks the stream mapping --------------------------------

/// A hand-written peer: QUIC, the version exchange on the first stream,
/// then `frames` on a stream of its own.
async fn stream_misuse(frames: Vec<Frame>) -> (CloseReason, String) {
    let a = start(quic_node().budget::<Bulk>(RateBudget::UNLIMITED).protocol(
        "bulk",
        Sessions::ALL,
        |ch: &Channel| {
            let mut bulk = ch.subscribe::<Bulk>();
            let _requests = ch.subscribe_requests::<Echo>();
            async move { while bulk.recv().await.is_some() {} }
        },
    ))
    .await;
    let mut events = a.events();
    let kp = Keypair::generate().unwrap();
    let me = kp.peer_id();
    let quic = QuicTransport::new(&kp, QuicConfig::default()).unwrap();
    let conn = quic.dial_peer(&addr(&a), Some(a.peer_id())).await.unwrap();
    let handle = conn.handle().clone();
    let mut main = Framed::new(conn, FrameCodec::new());
    let ours = Version::new(&[], &[], &addr(&a));
    main.send(Frame::message(Version::ID, encode(&ours).unwrap()))
        .await
        .unwrap();
    let theirs = main.next().await.unwrap().unwrap();
    assert_eq!(theirs.msg_id, Version::ID);
    let mut side = FramedWrite::new(handle.open_stream().await.unwrap(), FrameCodec::new());
    for frame in frames {
        side.send(frame).await.unwrap();
    }
    let e = wait_event(&mut events, LONG, |e| {
        matches!(e, NodeEvent::Disconnected { .. })
    })
    .await;
    let NodeEvent::Disconnected { peer, reason } = e else {
        unreachable!()
    };
    assert_eq!(peer, me);
    side.get_mut().shutdown().await.ok();
    let text = a.metrics().encode();
    a.shutdown().await;
    (reason, text)
}

#[tokio::test]
async fn a_request_on_a_message_stream_is_wrong_stream_misbehaviour() {
    let request = Frame::request(Echo::ID, 1, encode(&Echo(1)).unwrap());
    let (reason, metrics) = stream_misuse(vec![request]).await;
    assert_eq!(reason, CloseReason::Local(DisconnectReason::Misbehaviour));
    assert!(
        metrics.contains("knot_bans_total{reason=\"wrong_stream\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_ping_on_a_message_stream_is_wrong_stream_misbehaviour() {
    let ping = knotwork_node::protocol::ping::Ping { nonce: 1 };
    let ping = Frame::message(
        knotwork_node::protocol::ping::Ping::ID,
        encode(&ping).unwrap(),
    );
    let (reason, metrics) = stream_misuse(vec![ping]).await;
    assert_eq!(reason, CloseReason::Local(DisconnectReason::Misbehaviour));
    assert!(
        metrics.contains("knot_bans_total{reason=\"wrong_stream\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_second_type_on_a_message_stream_is_wrong_stream_misbehaviour() {
    let frames = vec![
        Frame::message(Bulk::ID, encode(&Bulk(1)).unwrap()),
        Frame::message(Note::ID, encode(&Note(1)).unwrap()),
    ];
    let (reason, metrics) = stream_misuse(frames).await;
    assert_eq!(reason, CloseReason::Local(DisconnectReason::Misbehaviour));
    assert!(
        metrics.contains("knot_bans_total{reason=\"wrong_stream\"} 1"),
        "{metrics}"
    );
}
