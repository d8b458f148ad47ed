//! The tokio driver: IK and its fallback, timeouts, identity checks, and
//! the named errors of a SecureStream (tampering, truncation, rekey).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use knotwork_core::{Keypair, Listener, MemoryTransport, PeerAddr, Transport};
use knotwork_crypto_handshake::{
    HandshakeError, Pattern, SecureConfig, SecureStream, Suite, upgrade_inbound, upgrade_outbound,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

fn config() -> SecureConfig {
    SecureConfig::new(Keypair::generate().unwrap()).unwrap()
}

/// Wraps a connection; once armed, flips one received byte or cuts the
/// stream at a chosen offset (counted in bytes read so far).
struct Faulty<T> {
    io: T,
    sizes: Arc<std::sync::Mutex<Vec<usize>>>,
    read: Arc<AtomicU64>,
    flip_at: Arc<AtomicU64>,
    eof_at: Arc<AtomicU64>,
}

#[derive(Clone)]
struct FaultHandle {
    /// What each read of the connection returned, in bytes.
    sizes: Arc<std::sync::Mutex<Vec<usize>>>,
    read: Arc<AtomicU64>,
    flip_at: Arc<AtomicU64>,
    eof_at: Arc<AtomicU64>,
}

impl FaultHandle {
    fn flip_after(&self, n: u64) {
        self.flip_at
            .store(self.read.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }
    fn eof_after(&self, n: u64) {
        self.eof_at
            .store(self.read.load(Ordering::SeqCst) + n, Ordering::SeqCst);
    }
}

fn faulty<T>(io: T) -> (Faulty<T>, FaultHandle) {
    let h = FaultHandle {
        sizes: Arc::default(),
        read: Arc::new(AtomicU64::new(0)),
        flip_at: Arc::new(AtomicU64::new(u64::MAX)),
        eof_at: Arc::new(AtomicU64::new(u64::MAX)),
    };
    (
        Faulty {
            io,
            sizes: h.sizes.clone(),
            read: h.read.clone(),
            flip_at: h.flip_at.clone(),
            eof_at: h.eof_at.clone(),
        },
        h,
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Faulty<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let done = self.read.load(Ordering::SeqCst);
        let eof_at = self.eof_at.load(Ordering::SeqCst);
        if done >= eof_at {
            return Poll::Ready(Ok(()));
        }
        let limit = ((eof_at - done) as usize).min(buf.remaining());
        let mut inner = ReadBuf::new(buf.initialize_unfilled_to(limit));
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut inner))?;
        let n = inner.filled().len();
        let flip_at = self.flip_at.load(Ordering::SeqCst);
        let filled = buf.initialize_unfilled_to(n);
        if flip_at >= done && flip_at < done + n as u64 {
            filled[(flip_at - done) as usize] ^= 0x01;
        }
        buf.advance(n);
        self.read.fetch_add(n as u64, Ordering::SeqCst);
        self.sizes.lock().unwrap().push(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Faulty<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A secured pair over a duplex pipe; the responder's reads go through
/// `Faulty`.
async fn faulty_pair(
    ca: &SecureConfig,
    cb: &SecureConfig,
) -> (
    SecureStream<DuplexStream>,
    SecureStream<Faulty<DuplexStream>>,
    FaultHandle,
) {
    faulty_pair_with(ca, cb, 64 * 1024).await
}

/// As [`faulty_pair`], over an in-memory pipe holding `capacity` bytes.
async fn faulty_pair_with(
    ca: &SecureConfig,
    cb: &SecureConfig,
    capacity: usize,
) -> (
    SecureStream<DuplexStream>,
    SecureStream<Faulty<DuplexStream>>,
    FaultHandle,
) {
    let (x, y) = tokio::io::duplex(capacity);
    let (y, handle) = faulty(y);
    let (a, b) = tokio::join!(
        ca.upgrade_outbound(x, Some(cb.local().peer_id())),
        cb.upgrade_inbound(y)
    );
    (a.unwrap(), b.unwrap(), handle)
}

fn inner(e: &io::Error) -> &HandshakeError {
    HandshakeError::from_io(e).unwrap_or_else(|| panic!("not a handshake error: {e:?}"))
}

#[tokio::test]
async fn tampered_ciphertext_is_decrypt_and_sticky() {
    for suite in Suite::ALL {
        let (ca, cb) = (config().with_suite(suite), config());
        let (mut a, mut b, fault) = faulty_pair(&ca, &cb).await;
        fault.flip_after(10);
        a.write_all(b"the quick brown fox").await.unwrap();
        a.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let err = b.read(&mut buf).await.unwrap_err();
        assert!(matches!(inner(&err), HandshakeError::Decrypt), "{err:?}");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let again = b.read(&mut buf).await.unwrap_err();
        assert!(matches!(inner(&again), HandshakeError::Decrypt));
    }
}

#[tokio::test]
async fn cut_mid_frame_is_truncated() {
    let (ca, cb) = (config(), config());
    let (mut a, mut b, fault) = faulty_pair(&ca, &cb).await;
    fault.eof_after(10);
    a.write_all(&[7u8; 100]).await.unwrap();
    a.flush().await.unwrap();
    let mut buf = [0u8; 128];
    let err = b.read(&mut buf).await.unwrap_err();
    assert!(matches!(inner(&err), HandshakeError::Truncated), "{err:?}");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn clean_close_between_frames_is_eof() {
    let (ca, cb) = (config(), config());
    let (mut a, mut b, _) = faulty_pair(&ca, &cb).await;
    a.write_all(b"bye").await.unwrap();
    a.shutdown().await.unwrap();
    drop(a);
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
}

#[tokio::test]
async fn small_writes_share_one_message_until_flush() {
    let (ca, cb) = (config(), config());
    let (mut a, mut b, fault) = faulty_pair(&ca, &cb).await;
    let before = fault.read.load(Ordering::SeqCst);
    for i in 0..100u8 {
        a.write_all(&[i; 10]).await.unwrap();
    }
    a.flush().await.unwrap();
    let mut got = vec![0u8; 1000];
    b.read_exact(&mut got).await.unwrap();
    // One frame: 2-byte length + 1000 bytes + 16-byte tag.
    assert_eq!(fault.read.load(Ordering::SeqCst) - before, 1018);
    assert_eq!(&got[990..], &[99u8; 10]);
}

#[tokio::test]
async fn read_buffer_stays_bounded_under_a_stream_of_small_frames() {
    let (ca, cb) = (config(), config());
    let (mut a, mut b, _) = faulty_pair(&ca, &cb).await;
    let writer = async move {
        for i in 0..20_000u32 {
            a.write_all(&i.to_le_bytes().repeat(25)).await.unwrap();
            a.flush().await.unwrap();
        }
        a
    };
    let reader = async {
        let mut buf = [0u8; 100];
        for i in 0..20_000u32 {
            b.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf[..4], &i.to_le_bytes());
        }
    };
    let (_a, ()) = tokio::join!(writer, reader);
    // One maximal frame plus the lookahead, never more.
    assert!(
        b.buffer_capacity() <= 2 * (65537 + 16 * 1024),
        "{}",
        b.buffer_capacity()
    );
}

#[tokio::test]
async fn large_frames_into_large_reads_over_a_narrow_pipe() {
    // Frames of 64 KiB through an 8 KiB pipe into 200 KiB reads: bodies
    // read straight into the caller's buffer arrive in pieces.
    let (ca, cb) = (config(), config());
    let (x, y) = tokio::io::duplex(8 * 1024);
    let (a, b) = tokio::join!(ca.upgrade_outbound(x, None), cb.upgrade_inbound(y));
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let writer = async {
        for chunk in data.chunks(70_000) {
            a.write_all(chunk).await.unwrap();
            a.flush().await.unwrap();
        }
        a.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 200 * 1024];
        loop {
            let n = b.read(&mut buf).await.unwrap();
            if n == 0 {
                break got;
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    let ((), got) = tokio::join!(writer, reader);
    assert!(got == data, "bytes differ");
}

#[tokio::test]
async fn tampered_large_frame_read_directly_is_decrypt() {
    let (ca, cb) = (config(), config());
    let (mut a, mut b, fault) = faulty_pair(&ca, &cb).await;
    // First a large frame (steers reads to the direct path), then a
    // tampered large frame.
    let big = vec![3u8; 60_000];
    a.write_all(&big).await.unwrap();
    a.flush().await.unwrap();
    let mut buf = vec![0u8; 100_000];
    b.read_exact(&mut buf[..60_000]).await.unwrap();
    fault.flip_after(30_000);
    a.write_all(&big).await.unwrap();
    a.flush().await.unwrap();
    let err = b.read(&mut buf).await.unwrap_err();
    assert!(matches!(inner(&err), HandshakeError::Decrypt), "{err:?}");
}

#[tokio::test]
async fn back_to_back_large_frames_are_read_straight_into_the_callers_buffer() {
    let (ca, cb) = (config(), config());
    // A pipe with room for all of it, so the reader always finds more
    // than one frame waiting.
    let (mut a, mut b, fault) = faulty_pair_with(&ca, &cb, 4 << 20).await;
    let data: Vec<u8> = (0..8 * 65_519).map(|i| (i % 251) as u8).collect();
    a.write_all(&data).await.unwrap();
    a.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < data.len() {
        let n = b.read(&mut buf).await.unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data, "bytes differ");
    // After the first frame no read went past the frame it was in (a
    // look-ahead into the next frame sends that frame through the read
    // buffer and a copy): each header is read alone, then its body
    // straight into the caller's buffer.
    let sizes = fault.sizes.lock().unwrap().clone();
    let headers = sizes.iter().filter(|&&n| n == 2).count();
    assert!(headers >= 6, "reads: {sizes:?}");
}

#[tokio::test]
async fn idle_streams_give_buffers_back() {
    let (ca, cb) = (config(), config());
    let (mut a, mut b, _) = faulty_pair(&ca, &cb).await;
    let data = vec![5u8; 200_000];
    let mut got = vec![0u8; 200_000];
    let writer = async {
        a.write_all(&data).await.unwrap();
        a.flush().await.unwrap();
    };
    let ((), r) = tokio::join!(writer, b.read_exact(&mut got));
    r.unwrap();
    assert!(got == data);
    // The first frame went through the read buffer: it grew past 64 KiB.
    assert!(b.buffer_capacity() > 64 * 1024, "{}", b.buffer_capacity());
    // Now idle: a read that finds nothing frees the read buffer by itself
    // (b never wrote, so it holds nothing at all); the writer's buffer goes
    // when its owner asks.
    let mut one = [0u8; 1];
    let mut rb = ReadBuf::new(&mut one);
    let polled =
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut b).poll_read(cx, &mut rb))).await;
    assert!(polled.is_pending(), "nothing was sent");
    assert_eq!(b.buffer_capacity(), 0);
    a.release_idle_buffers();
    assert!(a.buffer_capacity() <= 20 * 1024, "{}", a.buffer_capacity());
    // And the stream still works afterwards.
    a.write_all(b"again").await.unwrap();
    a.flush().await.unwrap();
    // A small flush (a quiet stream's last write) keeps no write buffer.
    assert_eq!(a.buffer_capacity(), 0);
    let mut five = [0u8; 5];
    b.read_exact(&mut five).await.unwrap();
    assert_eq!(&five, b"again");
}

/// Polls one read of `b` that must find nothing.
async fn read_finds_nothing<S: AsyncRead + Unpin>(b: &mut S) {
    let mut one = [0u8; 1];
    let mut rb = ReadBuf::new(&mut one);
    let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *b).poll_read(cx, &mut rb)));
    assert!(polled.await.is_pending(), "nothing was sent");
}

#[tokio::test]
async fn a_busy_stream_keeps_its_read_buffer_until_a_quiet_exchange() {
    let (ca, cb) = (config(), config());
    let (mut a, mut b, _) = faulty_pair(&ca, &cb).await;
    // A burst of small frames, BUSY_BURST bytes and more, all through the
    // read buffer.
    let frames = knotwork_crypto_handshake::BUSY_BURST / 100 + 1;
    for i in 0..frames {
        a.write_all(&[i as u8; 100]).await.unwrap();
        a.flush().await.unwrap();
    }
    let mut got = vec![0u8; frames * 100];
    b.read_exact(&mut got).await.unwrap();
    read_finds_nothing(&mut b).await;
    assert!(b.buffer_capacity() > 0, "busy: kept for the next burst");
    // A ping-sized exchange: the next read that finds nothing frees it.
    a.write_all(b"ping").await.unwrap();
    a.flush().await.unwrap();
    let mut four = [0u8; 4];
    b.read_exact(&mut four).await.unwrap();
    read_finds_nothing(&mut b).await;
    assert_eq!(b.buffer_capacity(), 0, "quiet: freed");
}

#[tokio::test]
async fn both_sides_rekey_on_the_same_message() {
    let (ca, cb) = (
        config().with_rekey_interval(3),
        config().with_rekey_interval(3),
    );
    let (mut a, mut b, _) = faulty_pair(&ca, &cb).await;
    for i in 0..20u8 {
        a.write_all(&[i; 33]).await.unwrap();
        a.flush().await.unwrap();
        let mut got = [0u8; 33];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [i; 33]);
        b.write_all(&[i; 5]).await.unwrap();
        b.flush().await.unwrap();
        let mut got = [0u8; 5];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [i; 5]);
    }
}

#[tokio::test]
async fn rekey_really_changes_keys() {
    // Sender rekeys every 2 messages, receiver never: message 3 fails.
    let (ca, cb) = (
        config().with_rekey_interval(2),
        config().with_rekey_interval(0),
    );
    let (mut a, mut b, _) = faulty_pair(&ca, &cb).await;
    let mut got = [0u8; 4];
    for _ in 0..2 {
        a.write_all(b"ping").await.unwrap();
        a.flush().await.unwrap();
        b.read_exact(&mut got).await.unwrap();
    }
    a.write_all(b"ping").await.unwrap();
    a.flush().await.unwrap();
    let err = b.read_exact(&mut got).await.unwrap_err();
    assert!(matches!(inner(&err), HandshakeError::Decrypt));
}

#[tokio::test(start_paused = true)]
async fn silent_peer_times_out() {
    let (x, _y) = tokio::io::duplex(1024);
    let ca = config().with_timeout(Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let err = ca.upgrade_outbound(x, None).await.unwrap_err();
    assert!(matches!(err, HandshakeError::Timeout));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test]
async fn wrong_expected_peer_over_tcp_is_peer_id_mismatch() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server_key = Keypair::generate().unwrap();
    let server_id = server_key.peer_id();
    let server = tokio::spawn(async move {
        let (io, _) = l.accept().await.unwrap();
        upgrade_inbound(io, &server_key).await
    });
    let someone_else = Keypair::generate().unwrap().peer_id();
    let io = TcpStream::connect(addr).await.unwrap();
    let err = upgrade_outbound(io, &Keypair::generate().unwrap(), Some(someone_else))
        .await
        .unwrap_err();
    match err {
        HandshakeError::PeerIdMismatch { expected, got } => {
            assert_eq!(expected, someone_else);
            assert_eq!(got, server_id);
        }
        other => panic!("unexpected {other:?}"),
    }
    // The responder sees the dialer hang up before message 3.
    assert!(matches!(
        server.await.unwrap(),
        Err(HandshakeError::Truncated)
    ));
}

#[tokio::test]
async fn garbage_over_tcp_is_not_a_handshake() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (io, _) = l.accept().await.unwrap();
    let err = upgrade_inbound(io, &Keypair::generate().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, HandshakeError::NotAHandshake));
}

/// Serves `config` on a fresh memory listener; returns its address.
async fn serve(net: &MemoryTransport, config: SecureConfig) -> PeerAddr {
    let mut l = net.listen(&"mem/0".parse().unwrap()).await.unwrap();
    let addr = l.local_addr();
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = l.accept().await else {
                return;
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = config.upgrade_inbound(io).await {
                    // Echo one message tagged with the pattern used.
                    let mut buf = [0u8; 4];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let tag = match s.pattern() {
                            Pattern::Xx => b'X',
                            Pattern::Ik => b'I',
                        };
                        let _ = s.write_all(&[tag]).await;
                        let _ = s.flush().await;
                    }
                }
            });
        }
    });
    addr
}

async fn ping<T: AsyncRead + AsyncWrite + Unpin>(s: &mut SecureStream<T>) -> u8 {
    s.write_all(b"ping").await.unwrap();
    s.flush().await.unwrap();
    let mut tag = [0u8; 1];
    s.read_exact(&mut tag).await.unwrap();
    tag[0]
}

#[tokio::test]
async fn known_peer_is_dialed_with_ik_and_falls_back_to_xx_after_rotation() {
    let net = MemoryTransport::new();
    let (ca, cb) = (config(), config());
    let b_id = cb.local().peer_id();
    let addr = serve(&net, cb.clone()).await;
    let dialer = |net: &MemoryTransport, addr: &PeerAddr| {
        let (net, addr) = (net.clone(), addr.clone());
        move || {
            let (net, addr) = (net.clone(), addr.clone());
            async move { net.dial(&addr).await.map_err(io::Error::other) }
        }
    };
    let dial = dialer(&net, &addr);

    let mut s = ca.connect(b_id, dial.clone()).await.unwrap();
    assert_eq!(s.pattern(), Pattern::Xx);
    assert_eq!(ping(&mut s).await, b'X');
    assert_eq!(
        ca.known_peers().get(&b_id),
        Some(*cb.local().static_public())
    );

    let mut s = ca.connect(b_id, dial).await.unwrap();
    assert_eq!(s.pattern(), Pattern::Ik);
    assert_eq!(ping(&mut s).await, b'I');
    assert_eq!(ca.ik_fallbacks(), 0);

    // B restarts with the same identity but a new Noise static key.
    let cb2 = SecureConfig::new(cb.local().keypair().clone()).unwrap();
    let addr2 = serve(&net, cb2.clone()).await;
    let mut s = ca.connect(b_id, dialer(&net, &addr2)).await.unwrap();
    assert_eq!(s.pattern(), Pattern::Xx);
    assert_eq!(s.remote_peer_id(), b_id);
    assert_eq!(ping(&mut s).await, b'X');
    assert_eq!(ca.ik_fallbacks(), 1);
    assert_eq!(
        ca.known_peers().get(&b_id),
        Some(*cb2.local().static_public())
    );
}

#[tokio::test]
async fn plain_upgrade_reports_ik_rejected_and_forgets_the_key() {
    let (ca, cb) = (config(), config());
    let b_id = cb.local().peer_id();
    ca.known_peers().insert(b_id, [9u8; 32]);
    let (x, y) = tokio::io::duplex(4096);
    let (a, b) = tokio::join!(ca.upgrade_outbound(x, Some(b_id)), cb.upgrade_inbound(y));
    assert!(matches!(a.unwrap_err(), HandshakeError::IkRejected));
    assert!(matches!(b.unwrap_err(), HandshakeError::HandshakeDecrypt));
    assert_eq!(ca.ik_fallbacks(), 1);
    assert_eq!(ca.known_peers().get(&b_id), None);
}

#[test]
fn known_peers_is_bounded() {
    let known = knotwork_crypto_handshake::KnownPeers::new(2);
    let ids: Vec<_> = (0..3)
        .map(|_| Keypair::generate().unwrap().peer_id())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        known.insert(*id, [i as u8; 32]);
    }
    assert_eq!(known.len(), 2);
    assert_eq!(known.get(&ids[0]), None);
    assert_eq!(known.get(&ids[2]), Some([2u8; 32]));
    known.remove(&ids[2]);
    assert_eq!(known.len(), 1);
}

/// A dialer's first frames can reach the responder in the same read as
/// XX's third message (the responder reads what the connection holds, not
/// exactly one message): the stream hands them out first, whole and in
/// order. Both ends run on one thread, so the dialer writes its frames
/// before the responder reads again.
#[tokio::test]
async fn frames_read_with_the_last_handshake_message_come_first() {
    let (ca, cb) = (config(), config());
    let (x, y) = tokio::io::duplex(64 * 1024);
    let dialer = async {
        let mut a = ca.upgrade_outbound(x, None).await.unwrap();
        for i in 0..3u8 {
            a.write_all(&[i; 100]).await.unwrap();
            a.flush().await.unwrap();
        }
        a
    };
    let (_a, b) = tokio::join!(dialer, cb.upgrade_inbound(y));
    let mut b = b.unwrap();
    // The frames were buffered with the handshake's end.
    assert!(
        b.buffer_capacity() > 0,
        "nothing was read past the handshake"
    );
    let mut got = [0u8; 300];
    b.read_exact(&mut got).await.unwrap();
    for (i, chunk) in got.chunks(100).enumerate() {
        assert!(chunk.iter().all(|&v| usize::from(v) == i), "frame {i}");
    }
}
