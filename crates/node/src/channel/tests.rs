use super::*;
use crate::protocol::ping::{Ping, Pong};
use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use knotwork_core::Keypair;
use knotwork_wire::encode;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use tokio::io::{DuplexStream, ReadBuf};
use tokio_util::codec::Framed;

/// A stream that counts flushes and can make each write wait first.
struct Counted {
    io: DuplexStream,
    flushes: Arc<AtomicUsize>,
    /// How long each write waits before it starts.
    write_delay: Duration,
    /// The wait of the write in progress.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if !this.write_delay.is_zero() {
            let delay = this.write_delay;
            let wait = this
                .waiting
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            std::task::ready!(wait.as_mut().poll(cx));
            this.waiting = None;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.flushes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut this.io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl BufferedBytes for Counted {
    fn buffer_capacity(&self) -> usize {
        0
    }
}

type Peer = Framed<DuplexStream, FrameCodec>;

fn channel(config: ChannelConfig) -> (Channel, Unstarted<Counted>, Peer, Arc<AtomicUsize>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let flushes = Arc::new(AtomicUsize::new(0));
    let io = Counted {
        io: a,
        flushes: flushes.clone(),
        write_delay: Duration::ZERO,
        waiting: None,
    };
    let parts = FramedParts::new::<Frame>(io, FrameCodec::new());
    let info = ChannelInfo {
        peer_id: Keypair::generate().unwrap().peer_id(),
        remote_addr: PeerAddr::Mem(1),
        session: SessionKind::Inbound,
        version: Version::new(&[], &[], &PeerAddr::Mem(1)),
    };
    let (ch, io) = Channel::new(parts, info, Arc::new(config), None);
    (ch, io, Framed::new(b, FrameCodec::new()), flushes)
}

/// Sends `frame` from the peer `n` times; returns how the channel closed.
async fn abuse(config: ChannelConfig, n: usize, frame: Frame) -> (Channel, Peer) {
    let (ch, io, mut peer, _) = channel(config);
    let _pings = ch.subscribe::<Ping>();
    io.start(&ch);
    for _ in 0..n {
        if peer.send(frame.clone()).await.is_err() {
            break;
        }
    }
    (ch, peer)
}

async fn assert_banned(ch: &Channel, peer: &mut Peer) {
    let reason = tokio::time::timeout(Duration::from_secs(5), ch.closed())
        .await
        .unwrap();
    assert_eq!(reason, CloseReason::Local(DisconnectReason::Misbehaviour));
    // The peer is told why.
    loop {
        let f = peer.next().await.unwrap().unwrap();
        if f.msg_id == Disconnect::ID {
            let d: Disconnect = decode(&f.payload).unwrap();
            assert_eq!(d.reason, DisconnectReason::Misbehaviour);
            break;
        }
    }
}

#[tokio::test]
async fn oversized_payloads_get_the_peer_banned() {
    let frame = Frame::message(Ping::ID, Bytes::from(vec![0u8; Ping::MAX_BYTES + 1]));
    let (ch, mut peer) = abuse(ChannelConfig::default(), 4, frame).await;
    assert_banned(&ch, &mut peer).await;
}

#[tokio::test]
async fn malformed_payloads_get_the_peer_banned() {
    // Ten 0xff bytes are a varint that never ends: not a u64.
    let frame = Frame::message(Ping::ID, Bytes::from(vec![0xffu8; 10]));
    let (ch, mut peer) = abuse(ChannelConfig::default(), 4, frame).await;
    assert_banned(&ch, &mut peer).await;
}

#[tokio::test]
async fn unknown_types_are_free_within_their_budget_then_banned_at_the_threshold() {
    let frame = Frame::message(12345, Bytes::new());
    // 20 free (the burst of unknown types), then 9 offences: 90 points.
    let (ch, _peer) = abuse(ChannelConfig::default(), 29, frame.clone()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!ch.is_closed(), "90 points stay under the threshold of 100");
    let (ch, mut peer) = abuse(ChannelConfig::default(), 30, frame).await;
    assert_banned(&ch, &mut peer).await;
}

#[tokio::test]
async fn a_request_of_an_unknown_type_is_answered_unsupported_for_free() {
    let (ch, io, mut peer, _) = channel(ChannelConfig::default());
    io.start(&ch);
    for id in 1..=5 {
        peer.send(Frame::request(12345, id, Bytes::new()))
            .await
            .unwrap();
        let answer = peer.next().await.unwrap().unwrap();
        assert_eq!(answer.kind, knotwork_wire::FrameKind::Response);
        assert_eq!(answer.request_id, id);
        assert_eq!(answer.msg_id, Unsupported::ID);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!ch.is_closed());
}

#[tokio::test]
async fn a_flood_over_budget_gets_the_peer_banned() {
    let mut config = ChannelConfig::default();
    config.budgets.insert(Ping::ID, RateBudget::new(1.0, 1));
    let frame = Frame::message(Ping::ID, encode(&Ping { nonce: 1 }).unwrap());
    let (ch, mut peer) = abuse(config, 60, frame).await;
    assert_banned(&ch, &mut peer).await;
}

/// A message large enough to grow the secure stream's read buffer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Bulk(Vec<u8>);
impl Message for Bulk {
    const NAME: &'static str = "test/bulk/1";
    // length varint 3 + 200 KB.
    const MAX_BYTES: usize = 3 + 200_000;
}

type SecurePeer = Framed<knotwork_crypto_handshake::SecureStream<DuplexStream>, FrameCodec>;

/// A channel over a secure stream (whose buffers `buffered_bytes` counts),
/// subscribed to `Bulk` and started, and the peer's end.
async fn secure_channel() -> (Channel, Subscription<Bulk>, SecurePeer) {
    use knotwork_crypto_handshake::SecureConfig;
    let (a, b) = tokio::io::duplex(1 << 20);
    let (ka, kb) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
    let (ca, cb) = (
        SecureConfig::new(ka).unwrap(),
        SecureConfig::new(kb).unwrap(),
    );
    let (ours, theirs) = tokio::join!(ca.upgrade_inbound(a), cb.upgrade_outbound(b, None));
    let (ours, theirs) = (ours.unwrap(), theirs.unwrap());
    let info = ChannelInfo {
        peer_id: ours.remote_peer_id(),
        remote_addr: PeerAddr::Mem(1),
        session: SessionKind::Inbound,
        version: Version::new(&[], &[], &PeerAddr::Mem(1)),
    };
    let parts = FramedParts::new::<Frame>(ours, FrameCodec::new());
    let (ch, io) = Channel::new(parts, info, Arc::new(ChannelConfig::default()), None);
    let bulk = ch.subscribe::<Bulk>();
    io.start(&ch);
    (ch, bulk, Framed::new(theirs, FrameCodec::new()))
}

#[tokio::test(start_paused = true)]
async fn an_idle_channel_gives_its_write_buffers_back() {
    let (ch, _bulk, mut peer) = secure_channel().await;
    // A large message, then a small one (as a ping would be): after the
    // small one is written, the stream below holds no write buffer (and
    // no read buffer: nothing came in).
    for len in [200_000, 10] {
        ch.send(&Bulk(vec![7; len])).await.unwrap();
        let f = peer.next().await.unwrap().unwrap();
        assert_eq!(decode::<Bulk>(&f.payload).unwrap().0.len(), len);
    }
    assert_eq!(ch.buffered_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_channel_gives_its_read_buffer_back() {
    let (ch, mut bulk, mut peer) = secure_channel().await;
    let payload = encode(&Bulk(vec![7; 200_000])).unwrap();
    peer.send(Frame::message(Bulk::ID, payload)).await.unwrap();
    assert_eq!(bulk.recv().await.unwrap().0.len(), 200_000);
    // A busy stream may keep its read buffer after a large burst; the
    // next small exchange (as a ping would be) lets it go as soon as
    // the reader's next read finds the connection empty: nothing stays
    // behind, without any timer.
    let small = encode(&Bulk(vec![1; 10])).unwrap();
    peer.send(Frame::message(Bulk::ID, small)).await.unwrap();
    assert_eq!(bulk.recv().await.unwrap().0.len(), 10);
    let freed = async {
        while ch.buffered_bytes() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(1), freed)
        .await
        .is_err()
    {
        panic!(
            "still buffered after the burst: {} bytes",
            ch.buffered_bytes()
        );
    }
    // The channel still reads afterwards.
    let payload = encode(&Bulk(vec![1; 10])).unwrap();
    peer.send(Frame::message(Bulk::ID, payload)).await.unwrap();
    assert_eq!(bulk.recv().await.unwrap().0, vec![1; 10]);
}

#[tokio::test]
async fn queued_frames_leave_in_one_flush() {
    let (ch, io, mut peer, flushes) = channel(ChannelConfig::default());
    for nonce in 0..50 {
        ch.send(&Pong { nonce }).await.unwrap();
    }
    io.start(&ch);
    for nonce in 0..50 {
        let f = peer.next().await.unwrap().unwrap();
        assert_eq!(decode::<Pong>(&f.payload).unwrap(), Pong { nonce });
    }
    assert_eq!(flushes.load(Ordering::SeqCst), 1, "50 frames, one flush");
}

/// A frame sent on a quiet channel is written by its sender (on the wire
/// when `send` returns, before the writer task ran); the sends after it,
/// with no read in between, wait for the writer and leave in one flush.
#[tokio::test]
async fn a_quiet_channels_send_is_written_at_once_and_a_stream_of_sends_is_batched() {
    let (ch, io, mut peer, flushes) = channel(ChannelConfig::default());
    io.start(&ch);
    ch.send(&Pong { nonce: 0 }).await.unwrap();
    let first = peer.next().now_or_never().expect("on the wire").unwrap();
    assert_eq!(
        decode::<Pong>(&first.unwrap().payload).unwrap(),
        Pong { nonce: 0 }
    );
    assert_eq!(flushes.load(Ordering::SeqCst), 1);
    for nonce in 1..=20 {
        ch.send(&Pong { nonce }).await.unwrap();
    }
    assert!(
        peer.next().now_or_never().is_none(),
        "queued for the writer"
    );
    for nonce in 1..=20 {
        let f = peer.next().await.unwrap().unwrap();
        assert_eq!(decode::<Pong>(&f.payload).unwrap(), Pong { nonce });
    }
    assert_eq!(flushes.load(Ordering::SeqCst), 2, "20 frames, one flush");
}

/// A sender's write that cannot go out at once (here each write waits
/// first) is handed to the writer: nothing lost, nothing reordered.
#[tokio::test(start_paused = true)]
async fn a_senders_write_that_would_wait_goes_to_the_writer_in_order() {
    let (ch, mut io, mut peer, _) = channel(ChannelConfig::default());
    io.parts.io.write_delay = Duration::from_millis(10);
    io.start(&ch);
    ch.send(&Pong { nonce: 0 }).await.unwrap();
    ch.send(&Pong { nonce: 1 }).await.unwrap();
    for nonce in 0..2 {
        let f = peer.next().await.unwrap().unwrap();
        assert_eq!(decode::<Pong>(&f.payload).unwrap(), Pong { nonce });
    }
}

/// Regression: `closed` used to fire as soon as the reader stopped, while
/// the writer still held the Disconnect; a process exiting right after
/// `Node::shutdown` then cut it off and the peer saw a bare EOF.
#[tokio::test(start_paused = true)]
async fn closed_means_the_disconnect_was_written() {
    let (ch, mut io, mut peer, _) = channel(ChannelConfig::default());
    io.parts.io.write_delay = Duration::from_millis(100);
    io.start(&ch);
    ch.close(DisconnectReason::Shutdown).await;
    ch.closed().await;
    let f = peer
        .next()
        .now_or_never()
        .expect("the Disconnect is already written")
        .unwrap()
        .unwrap();
    assert_eq!(f.msg_id, Disconnect::ID);
    let d: Disconnect = decode(&f.payload).unwrap();
    assert_eq!(d.reason, DisconnectReason::Shutdown);
    assert!(
        peer.next().await.is_none(),
        "then the write side shuts down"
    );
}

#[tokio::test]
async fn a_dropped_responder_refuses_the_request() {
    let (ch, io, mut peer, _) = channel(ChannelConfig::default());
    let mut requests = ch.subscribe_requests::<Ping>();
    io.start(&ch);
    let payload = encode(&Ping { nonce: 9 }).unwrap();
    peer.send(Frame::request(Ping::ID, 77, payload))
        .await
        .unwrap();
    let (ping, responder) = requests.recv().await.unwrap();
    assert_eq!(ping, Ping { nonce: 9 });
    drop(responder);
    let f = peer.next().await.unwrap().unwrap();
    assert_eq!(
        (f.kind, f.msg_id, f.request_id),
        (FrameKind::Response, REFUSED_RESPONSE_ID, 77)
    );
}

#[tokio::test]
async fn a_served_request_is_answered_by_the_reader_with_no_task() {
    let (ch, io, mut peer, _) = channel(ChannelConfig::default());
    ch.serve(|Ping { nonce }| Pong { nonce: nonce + 1 });
    io.start(&ch);
    for id in [5, 6] {
        let payload = encode(&Ping { nonce: id.into() }).unwrap();
        peer.send(Frame::request(Ping::ID, id, payload))
            .await
            .unwrap();
        let f = peer.next().await.unwrap().unwrap();
        assert_eq!(
            (f.kind, f.msg_id, f.request_id),
            (FrameKind::Response, Pong::ID, id)
        );
        let pong: Pong = decode(&f.payload).unwrap();
        assert_eq!(pong.nonce, u64::from(id) + 1);
    }
    assert_eq!(ch.jobs(), 0, "no task answers");
}

/// A response larger than its type allows.
#[derive(Serialize, Deserialize)]
struct Tiny(String);

impl Message for Tiny {
    const NAME: &'static str = "test/tiny/1";
    const MAX_BYTES: usize = 4;
}

#[tokio::test]
async fn a_served_response_that_does_not_encode_refuses_the_request() {
    let (ch, io, mut peer, _) = channel(ChannelConfig::default());
    ch.serve(|Ping { .. }| Tiny("far more than four bytes".into()));
    io.start(&ch);
    let payload = encode(&Ping { nonce: 1 }).unwrap();
    peer.send(Frame::request(Ping::ID, 8, payload))
        .await
        .unwrap();
    let f = peer.next().await.unwrap().unwrap();
    assert_eq!(
        (f.kind, f.msg_id, f.request_id),
        (FrameKind::Response, REFUSED_RESPONSE_ID, 8)
    );
    assert!(!ch.is_closed(), "the channel goes on");
}

#[tokio::test]
async fn a_panicking_served_handler_refuses_the_request_and_the_channel_goes_on() {
    let (ch, io, mut peer, _) = channel(ChannelConfig::default());
    ch.serve(|Ping { nonce }| {
        assert!(nonce != 13, "unlucky");
        Pong { nonce }
    });
    io.start(&ch);
    for (id, nonce, answer) in [(1, 13, REFUSED_RESPONSE_ID), (2, 14, Pong::ID)] {
        let payload = encode(&Ping { nonce }).unwrap();
        peer.send(Frame::request(Ping::ID, id, payload))
            .await
            .unwrap();
        let f = peer.next().await.unwrap().unwrap();
        assert_eq!((f.msg_id, f.request_id), (answer, id));
    }
    assert!(!ch.is_closed());
}

#[tokio::test]
async fn a_served_malformed_request_is_an_offence_like_any_other() {
    let frame = Frame::request(Ping::ID, 3, Bytes::from_static(&[0xff; 10]));
    let (ch, io, mut peer, _) = channel(ChannelConfig::default());
    ch.serve(|Ping { nonce }| Pong { nonce });
    io.start(&ch);
    for _ in 0..200 {
        if peer.send(frame.clone()).await.is_err() {
            break;
        }
    }
    assert_banned(&ch, &mut peer).await;
}

#[tokio::test]
async fn closing_ends_subscriptions_and_pending_requests() {
    let (ch, io, mut peer, _) = channel(ChannelConfig::default());
    let mut pongs = ch.subscribe::<Pong>();
    io.start(&ch);
    let requester = ch.clone();
    let pending =
        tokio::spawn(async move { requester.request::<Ping, Pong>(&Ping { nonce: 1 }).await });
    let f = peer.next().await.unwrap().unwrap();
    assert_eq!(f.kind, FrameKind::Request);
    let bye = encode(&Disconnect {
        reason: DisconnectReason::other("bye"),
    })
    .unwrap();
    peer.send(Frame::message(Disconnect::ID, bye))
        .await
        .unwrap();
    assert_eq!(
        ch.closed().await,
        CloseReason::Remote(DisconnectReason::Other("bye".into()))
    );
    assert!(pongs.recv().await.is_none());
    assert!(matches!(
        pending.await.unwrap(),
        Err(NodeError::Closed(CloseReason::Remote(_)))
    ));
    assert!(matches!(
        ch.send(&Pong { nonce: 2 }).await,
        Err(NodeError::Closed(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn requests_time_out_at_their_own_deadlines_and_a_late_answer_is_dropped() {
    let (ch, io, mut peer, _) = channel(ChannelConfig::default());
    io.start(&ch);
    let start = Instant::now();
    let long = ch.clone();
    let long = tokio::spawn(async move {
        let r = long
            .request_timeout::<Ping, Pong>(&Ping { nonce: 1 }, Duration::from_secs(10))
            .await;
        (r, Instant::now())
    });
    let first = peer.next().await.unwrap().unwrap();
    // A shorter timeout after a longer one still ends first, at its own
    // deadline (the sweeper is woken to sleep less).
    let short = ch
        .request_timeout::<Ping, Pong>(&Ping { nonce: 2 }, Duration::from_millis(50))
        .await;
    assert!(matches!(short, Err(NodeError::RequestTimeout)));
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(50) && waited < Duration::from_millis(60));
    let (r, at) = long.await.unwrap();
    assert!(matches!(r, Err(NodeError::RequestTimeout)));
    assert!(at - start >= Duration::from_secs(10) && at - start < Duration::from_millis(10_010));
    // The answer to the first comes too late: dropped, and the channel
    // stays open (one such answer is free).
    let pong = encode(&Pong { nonce: 1 }).unwrap();
    peer.send(Frame::response(Pong::ID, first.request_id, pong))
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert!(!ch.is_closed());
    assert_eq!(ch.inner.requests.len(), 0);
}

/// An idle channel's memory is mostly its tasks' futures: the reader's,
/// the writer's and each protocol's, sized by their largest waiting state
/// (the perf harness's memory rows measure the whole; issue 23 asks for at
/// most 8 KiB). Bounds with a little room, so a change that makes one of
/// them wait inline again (a select over a `Notified`, a send's slow path,
/// an `async fn` that keeps its arguments twice) fails here rather than in
/// a benchmark.
#[tokio::test]
async fn an_idle_channels_futures_stay_small() {
    let (ch, io, _peer, _) = channel(ChannelConfig::default());
    let FramedParts {
        io: s, read_buf, ..
    } = io.parts;
    let (r, w, _) = crate::buffers::split(s);
    let codec = FrameCodec::with_max_frame_len(1 << 20);
    let reader = io::read_loop_for_test(ch.clone(), r, codec, &read_buf);
    let writer = io::write_loop_for_test(ch.clone(), w);
    let (mut pings, _) = crate::subsystem::RequestSubscription::<Ping>::new(4);
    let responder = Responder::new(ch.clone(), 1);
    let ping = crate::protocol::ping::protocol(&ch, Default::default());
    let sizes = [
        // Tight: tokio aligns a task's cell to 128 bytes, and with its
        // tracing span and the cell's own fields a reader of 368 bytes
        // takes 512; 376 took 640 (`perf --memory-child node`: 128 bytes
        // more per connection).
        ("reader", std::mem::size_of_val(&reader), 368),
        ("writer", std::mem::size_of_val(&writer), 400),
        ("recv", std::mem::size_of_val(&pings.recv()), 16),
        (
            "send",
            std::mem::size_of_val(&ch.send(&Ping { nonce: 1 })),
            128,
        ),
        (
            "respond",
            std::mem::size_of_val(&responder.respond(&Pong { nonce: 1 })),
            152,
        ),
        ("ping protocol", std::mem::size_of_val(&ping), 400),
    ];
    for (what, size, bound) in sizes {
        assert!(
            size <= bound,
            "{what}'s future is {size} bytes (at most {bound})"
        );
    }
}
