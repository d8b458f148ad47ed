//! Byte-stream scenarios, the same code for raw tokio TCP and for
//! `SecureStream` over TCP with each suite: bulk throughput, 64 B
//! ping-pong, pipelined length-prefixed 64 B messages, connect(+handshake).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use knotwork_core::Keypair;
use knotwork_crypto_handshake::{SecureConfig, SecureStream, Suite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::either::Either;

use crate::sides::{Sides, wait};

/// Payload size of the small-message scenarios.
pub const SMALL: usize = 64;
/// Chunk the bulk writer writes and the bulk reader reads.
pub const CHUNK: usize = 64 * 1024;

/// Which stack carries the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Plain tokio `TcpStream` with TCP_NODELAY.
    Raw,
    /// `SecureStream<TcpStream>` with this suite.
    Secure(Suite),
}

impl Layer {
    /// The label in tables.
    pub fn label(self) -> String {
        match self {
            Layer::Raw => "raw tcp".into(),
            Layer::Secure(Suite::ChaChaPoly) => "SecureStream chacha".into(),
            Layer::Secure(Suite::AesGcm) => "SecureStream aes-gcm".into(),
        }
    }
}

/// A connection of either layer.
pub type Conn = Either<TcpStream, SecureStream<TcpStream>>;
/// A connection as a user would buffer it for small messages: raw TCP in a
/// `BufStream`; a `SecureStream` already batches writes and reads whole frames.
type Buffered = Either<BufStream<TcpStream>, SecureStream<TcpStream>>;

fn buffered(c: Conn) -> Buffered {
    match c {
        Either::Left(tcp) => Either::Left(BufStream::with_capacity(CHUNK, CHUNK, tcp)),
        Either::Right(s) => Either::Right(s),
    }
}

/// The keys of both ends of a secure layer.
#[derive(Clone)]
struct Keys {
    server: SecureConfig,
    client: SecureConfig,
    suite: Suite,
}

impl Keys {
    fn new(layer: Layer) -> Option<Keys> {
        let Layer::Secure(suite) = layer else {
            return None;
        };
        Some(Keys {
            server: SecureConfig::new(Keypair::generate().expect("keypair")).expect("config"),
            client: client_config(suite),
            suite,
        })
    }

    /// The same keys with a fresh client identity.
    fn fresh_client(&self) -> Keys {
        Keys {
            server: self.server.clone(),
            client: client_config(self.suite),
            suite: self.suite,
        }
    }
}

/// A client config of a fresh identity that offers `suite`.
fn client_config(suite: Suite) -> SecureConfig {
    SecureConfig::new(Keypair::generate().expect("keypair"))
        .expect("config")
        .with_suite(suite)
}

async fn accept(l: &TcpListener, keys: Option<&Keys>) -> Conn {
    let (tcp, _) = l.accept().await.expect("accept");
    tcp.set_nodelay(true).expect("nodelay");
    match keys {
        None => Either::Left(tcp),
        Some(k) => Either::Right(k.server.upgrade_inbound(tcp).await.expect("inbound")),
    }
}

async fn dial(addr: SocketAddr, keys: Option<&Keys>) -> Conn {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    match keys {
        None => Either::Left(tcp),
        Some(k) => Either::Right(
            k.client
                .upgrade_outbound(tcp, None)
                .await
                .expect("outbound"),
        ),
    }
}

fn listener() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("local addr");
    (l, addr)
}

/// Runs `serve` on one accepted connection on the server end and `measure`
/// on one dialed connection on the client end.
fn one_connection<S, SF, M, MF, T>(sides: &Sides, layer: Layer, serve: S, measure: M) -> T
where
    S: FnOnce(Conn) -> SF + Send + 'static,
    SF: Future<Output = ()> + Send,
    M: FnOnce(Conn) -> MF + Send + 'static,
    MF: Future<Output = T> + Send,
    T: Send + 'static,
{
    let (l, addr) = listener();
    let keys = Keys::new(layer);
    let server_keys = keys.clone();
    let server = sides.spawn_server(async move {
        let l = TcpListener::from_std(l).expect("listener");
        serve(accept(&l, server_keys.as_ref()).await).await;
    });
    let out = sides.client(async move { measure(dial(addr, keys.as_ref()).await).await });
    wait(server);
    out
}

/// Bulk throughput: `total` bytes one way, in bytes/s (until the reader
/// has them all and acknowledged).
pub fn bulk(sides: &Sides, layer: Layer, total: u64) -> f64 {
    let serve = move |c: Conn| bulk_serve(c, total);
    let measure = move |c: Conn| bulk_measure(c, total);
    one_connection(sides, layer, serve, measure)
}

/// The reading end of [`bulk`]: reads `total` bytes, then acknowledges.
pub async fn bulk_serve<C: AsyncRead + AsyncWrite + Unpin>(mut c: C, total: u64) {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < total {
        let n = c.read(&mut buf).await.expect("read");
        assert!(n > 0, "eof after {got} of {total} bytes");
        got += n as u64;
    }
    c.write_all(&[1]).await.expect("ack");
    c.flush().await.expect("flush");
}

/// The writing end of [`bulk`]: bytes/s until the acknowledgement.
pub async fn bulk_measure<C: AsyncRead + AsyncWrite + Unpin>(mut c: C, total: u64) -> f64 {
    let chunk = vec![0xa5u8; CHUNK];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(CHUNK as u64) as usize;
        c.write_all(&chunk[..n]).await.expect("write");
        sent += n as u64;
    }
    c.flush().await.expect("flush");
    let mut ack = [0u8; 1];
    c.read_exact(&mut ack).await.expect("ack");
    total as f64 / start.elapsed().as_secs_f64()
}

/// 64 B ping-pong: `rounds` round trips (after a warm-up), each timed.
pub fn ping_pong(sides: &Sides, layer: Layer, rounds: usize) -> Vec<Duration> {
    let measure = move |c: Conn| ping_measure(c, rounds);
    one_connection(sides, layer, echo_serve, measure)
}

/// The echoing end of [`ping_pong`]: echoes 64 B messages until EOF.
pub async fn echo_serve<C: AsyncRead + AsyncWrite + Unpin>(mut c: C) {
    let mut buf = [0u8; SMALL];
    while c.read_exact(&mut buf).await.is_ok() {
        c.write_all(&buf).await.expect("echo");
        c.flush().await.expect("flush");
    }
}

/// The timing end of [`ping_pong`].
pub async fn ping_measure<C: AsyncRead + AsyncWrite + Unpin>(
    mut c: C,
    rounds: usize,
) -> Vec<Duration> {
    let mut buf = [7u8; SMALL];
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let t = Instant::now();
        c.write_all(&buf).await.expect("ping");
        c.flush().await.expect("flush");
        c.read_exact(&mut buf).await.expect("pong");
        if i >= rounds / 10 {
            times.push(t.elapsed());
        }
    }
    times
}

/// Pipelined messages: `count` length-prefixed 64 B messages one way, in
/// messages/s (until the reader has them all and acknowledged).
pub fn pipelined(sides: &Sides, layer: Layer, count: usize) -> f64 {
    let serve = move |c: Conn| async move {
        let mut c = buffered(c);
        let mut buf = [0u8; SMALL];
        for _ in 0..count {
            let len = c.read_u32().await.expect("length") as usize;
            c.read_exact(&mut buf[..len]).await.expect("body");
        }
        c.write_all(&[1]).await.expect("ack");
        c.flush().await.expect("flush");
    };
    let measure = move |c: Conn| async move {
        let mut c = buffered(c);
        let msg = [1u8; SMALL];
        let start = Instant::now();
        for _ in 0..count {
            c.write_u32(SMALL as u32).await.expect("length");
            c.write_all(&msg).await.expect("body");
        }
        c.flush().await.expect("flush");
        let mut ack = [0u8; 1];
        c.read_exact(&mut ack).await.expect("ack");
        count as f64 / start.elapsed().as_secs_f64()
    };
    one_connection(sides, layer, serve, measure)
}

/// Connect (+ Noise XX handshake for a secure layer) times, `count` dials,
/// and the times until one byte has gone to the server and back.
///
/// The first end when the dialer's side of the handshake is done, with the
/// server's last step (reading XX's third message: an X25519 and the
/// client's identity check) still to come; the second include that step
/// and one round trip, as any exchange the server must answer (a node's
/// version exchange) does. A secure layer dials each time with a fresh
/// client identity (made before the clock starts), as a node's first
/// contact does: both ends check the other's identity signature (a
/// repeated identity would skip that check, see `KnownPeers`).
pub fn connect(sides: &Sides, layer: Layer, count: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (l, addr) = listener();
    let keys = Keys::new(layer);
    let server_keys = keys.clone();
    let server = sides.spawn_server(async move {
        let l = TcpListener::from_std(l).expect("listener");
        for _ in 0..count {
            let mut c = accept(&l, server_keys.as_ref()).await;
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.expect("byte");
            c.write_all(&b).await.expect("byte");
            c.flush().await.expect("flush");
        }
    });
    let times = sides.client(async move {
        let mut times = Vec::with_capacity(count);
        let mut echoed = Vec::with_capacity(count);
        for _ in 0..count {
            let keys = keys.as_ref().map(Keys::fresh_client);
            let t = Instant::now();
            let mut c = dial(addr, keys.as_ref()).await;
            times.push(t.elapsed());
            let mut b = [1u8; 1];
            c.write_all(&b).await.expect("byte");
            c.flush().await.expect("flush");
            c.read_exact(&mut b).await.expect("byte");
            echoed.push(t.elapsed());
        }
        (times, echoed)
    });
    wait(server);
    times
}
