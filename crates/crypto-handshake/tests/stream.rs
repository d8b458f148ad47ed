//! SecureStream and the tokio driver over the memory transport and real TCP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use knotwork_core::{Keypair, Listener, MemoryTransport, Transport};
use knotwork_crypto_handshake::{SecureConfig, SecureStream, Suite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A small deterministic generator for data and write sizes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn config() -> SecureConfig {
    SecureConfig::new(Keypair::generate().unwrap()).unwrap()
}

const TOTAL: usize = 100 * 1024 * 1024;

/// Writes `total` pseudo-random bytes in random-size writes (1 B to 100 KiB),
/// flushing at random; the stream of bytes is the generator's output in
/// 8-byte steps, so the reader can regenerate it.
async fn send_random<W: AsyncWrite + Unpin>(w: &mut W, seed: u64, total: usize) {
    let mut sizes = XorShift(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut data = XorShift(seed);
    let mut block = vec![0u8; 8 * 16 * 1024];
    let mut block_pos = block.len();
    let mut sent = 0;
    while sent < total {
        let r = sizes.next();
        let want = ((r % 100_000) as usize + 1).min(total - sent);
        let mut written = 0;
        while written < want {
            if block_pos == block.len() {
                data.fill(&mut block);
                block_pos = 0;
            }
            let n = (want - written).min(block.len() - block_pos);
            w.write_all(&block[block_pos..block_pos + n]).await.unwrap();
            block_pos += n;
            written += n;
        }
        sent += want;
        if r.is_multiple_of(7) {
            w.flush().await.unwrap();
        }
    }
    w.flush().await.unwrap();
}

/// Reads exactly `total` bytes in random-size reads and checks them.
async fn recv_check<R: AsyncRead + Unpin>(r: &mut R, seed: u64, total: usize) {
    let mut data = XorShift(seed);
    let mut expect = vec![0u8; 8 * 16 * 1024];
    let mut expect_pos = expect.len();
    let mut sizes = XorShift(seed ^ 0x1234_5678);
    let mut buf = vec![0u8; 100_000];
    let mut got = 0;
    while got < total {
        let want = ((sizes.next() % 100_000) as usize + 1).min(total - got);
        let n = r.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "eof after {got} bytes");
        let mut checked = 0;
        while checked < n {
            if expect_pos == expect.len() {
                data.fill(&mut expect);
                expect_pos = 0;
            }
            let m = (n - checked).min(expect.len() - expect_pos);
            assert!(
                buf[checked..checked + m] == expect[expect_pos..expect_pos + m],
                "mismatch at byte {}",
                got + checked
            );
            expect_pos += m;
            checked += m;
        }
        got += n;
    }
}

/// Both directions at once: each side sends `TOTAL` bytes and checks what
/// it receives.
async fn exchange<T>(a: SecureStream<T>, b: SecureStream<T>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let t1 = tokio::spawn(async move { send_random(&mut aw, 1, TOTAL).await });
    let t2 = tokio::spawn(async move { send_random(&mut bw, 2, TOTAL).await });
    let t3 = tokio::spawn(async move { recv_check(&mut br, 1, TOTAL).await });
    let t4 = tokio::spawn(async move { recv_check(&mut ar, 2, TOTAL).await });
    for t in [t1, t2, t3, t4] {
        t.await.unwrap();
    }
}

async fn memory_pair(
    ca: &SecureConfig,
    cb: &SecureConfig,
) -> (
    SecureStream<tokio::io::DuplexStream>,
    SecureStream<tokio::io::DuplexStream>,
) {
    let id = cb.local().peer_id();
    let net = MemoryTransport::new();
    let mut l = net.listen(&"mem/0".parse().unwrap()).await.unwrap();
    let addr = l.local_addr();
    let cb = cb.clone();
    let server = tokio::spawn(async move {
        let (io, _) = l.accept().await.unwrap();
        cb.upgrade_inbound(io).await
    });
    let io = net.dial(&addr).await.unwrap();
    let a = ca.upgrade_outbound(io, Some(id)).await.unwrap();
    let b = server.await.unwrap().unwrap();
    (a, b)
}

async fn tcp_pair(
    ca: &SecureConfig,
    cb: &SecureConfig,
) -> (SecureStream<TcpStream>, SecureStream<TcpStream>) {
    let id = cb.local().peer_id();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cb = cb.clone();
    let server = tokio::spawn(async move {
        let (io, _) = l.accept().await.unwrap();
        cb.upgrade_inbound(io).await
    });
    let io = TcpStream::connect(addr).await.unwrap();
    let a = ca.upgrade_outbound(io, Some(id)).await.unwrap();
    let b = server.await.unwrap().unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mb_each_way_over_memory_transport() {
    for suite in Suite::ALL {
        let (ca, cb) = (config().with_suite(suite), config());
        let (a, b) = memory_pair(&ca, &cb).await;
        assert_eq!(a.suite(), suite);
        assert_eq!(b.suite(), suite);
        assert_eq!(a.remote_peer_id(), cb.local().peer_id());
        assert_eq!(b.remote_peer_id(), ca.local().peer_id());
        exchange(a, b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mb_each_way_over_tcp() {
    let (ca, cb) = (config(), config());
    let (a, b) = tcp_pair(&ca, &cb).await;
    exchange(a, b).await;
}
