//! Loopback numbers for QUIC beside raw UDP, raw TCP and TCP + Noise
//! (AES-GCM) in the same run: bulk MB/s, 64-byte round trip, connect with
//! handshake. Both ends run on one current-thread runtime, so pinned to one
//! CPU the figures compare the work each stack does per byte and per
//! message:
//!
//! ```sh
//! cargo build --release -p knotwork-transport-quic --example perf
//! taskset -c 0 target/release/examples/perf [bulk MiB, default 256] [bulk|rtt|connect]
//! ```
//! The last argument runs one part only (for a profile).
//! Bulk alternates the stacks over three rounds and reports each stack's
//! median; ratios are to raw TCP (and to TCP + Noise) of the same run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use knotwork_core::{Keypair, Listener, Transport};
use knotwork_crypto_handshake::{SecureConfig, Suite};
use knotwork_transport_quic::{QuicConfig, QuicTransport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const ROUNDS: usize = 3;
const PINGS: usize = 5_000;
const CONNECTS: usize = 200;
const MSG: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stack {
    Tcp,
    TcpNoise,
    Quic,
}

impl Stack {
    fn label(self) -> &'static str {
        match self {
            Stack::Tcp => "raw tcp",
            Stack::TcpNoise => "tcp + noise aes-gcm",
            Stack::Quic => "quic",
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// One fresh connection of `stack`: (dialed, accepted).
async fn pair(stack: Stack) -> (Box<dyn Io>, Box<dyn Io>) {
    match stack {
        Stack::Tcp | Stack::TcpNoise => {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
            let (c, s) = (c.unwrap(), s.unwrap().0);
            c.set_nodelay(true).unwrap();
            s.set_nodelay(true).unwrap();
            if stack == Stack::Tcp {
                return (Box::new(c), Box::new(s));
            }
            let (cc, sc) = noise_configs();
            let (c, s) = tokio::join!(cc.upgrade_outbound(c, None), sc.upgrade_inbound(s));
            (Box::new(c.unwrap()), Box::new(s.unwrap()))
        }
        Stack::Quic => {
            let (client, server) = (quic(), quic());
            let mut l = server
                .listen(&"quic/127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let c = client.dial(&l.local_addr()).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            // The listener's socket lives on in the connection.
            (Box::new(c), Box::new(s))
        }
    }
}

fn quic() -> QuicTransport {
    QuicTransport::new(&Keypair::generate().unwrap(), QuicConfig::default()).unwrap()
}

fn noise_configs() -> (SecureConfig, SecureConfig) {
    let c = SecureConfig::new(Keypair::generate().unwrap())
        .unwrap()
        .with_suite(Suite::AesGcm);
    let s = SecureConfig::new(Keypair::generate().unwrap()).unwrap();
    (c, s)
}

/// Seconds to move `bytes` from the dialer to the acceptor (until its EOF).
async fn bulk(stack: Stack, bytes: usize) -> f64 {
    let (mut c, mut s) = pair(stack).await;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        loop {
            match s.read(&mut buf).await.unwrap() {
                0 => return got,
                n => got += n,
            }
        }
    });
    let chunk = vec![0x5au8; 256 * 1024];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        c.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    c.shutdown().await.unwrap();
    assert_eq!(reader.await.unwrap(), bytes);
    t.elapsed().as_secs_f64()
}

/// Median round trip of a 64-byte message echoed by the acceptor.
async fn rtt(stack: Stack) -> Duration {
    let (mut c, mut s) = pair(stack).await;
    tokio::spawn(async move {
        let mut buf = [0u8; MSG];
        while s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&buf).await.unwrap();
            s.flush().await.unwrap();
        }
    });
    let mut times = Vec::with_capacity(PINGS);
    let mut buf = [7u8; MSG];
    for _ in 0..PINGS {
        let t = Instant::now();
        c.write_all(&buf).await.unwrap();
        c.flush().await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        times.push(t.elapsed());
    }
    median(times)
}

async fn udp_rtt() -> Duration {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (aa, ba): (SocketAddr, SocketAddr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    tokio::spawn(async move {
        let mut buf = [0u8; MSG];
        for _ in 0..PINGS {
            let n = b.recv(&mut buf).await.unwrap();
            b.send_to(&buf[..n], aa).await.unwrap();
        }
    });
    let mut times = Vec::with_capacity(PINGS);
    let mut buf = [7u8; MSG];
    for _ in 0..PINGS {
        let t = Instant::now();
        a.send_to(&buf, ba).await.unwrap();
        a.recv(&mut buf).await.unwrap();
        times.push(t.elapsed());
    }
    median(times)
}

/// Median time from dial to the first byte echoed back (handshakes included).
async fn connect<F, Fut>(mut dial_once: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Box<dyn Io>, Box<dyn Io>)>,
{
    let mut times = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let t = Instant::now();
        let (mut c, mut s) = dial_once().await;
        c.write_all(b"x").await.unwrap();
        c.flush().await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        s.flush().await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        times.push(t.elapsed());
    }
    median(times)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("bulk MiB"))
        .unwrap_or(256);
    let bytes = mib << 20;
    let only = std::env::args().nth(2);
    let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let stacks = [Stack::Tcp, Stack::TcpNoise, Stack::Quic];
    if runs("bulk") {
        bulk_part(&stacks, mib, bytes).await;
    }
    if runs("rtt") {
        rtt_part(&stacks).await;
    }
    if runs("connect") {
        connect_part().await;
    }
}

async fn bulk_part(stacks: &[Stack], mib: usize, bytes: usize) {
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); stacks.len()];
    for _ in 0..ROUNDS {
        for (i, s) in stacks.iter().enumerate() {
            secs[i].push(bulk(*s, bytes).await);
        }
    }
    let mbs: Vec<f64> = secs
        .into_iter()
        .map(|v| bytes as f64 / median_f(v) / 1e6)
        .collect();
    println!("bulk, {mib} MiB, median of {ROUNDS} rounds:");
    for (s, m) in stacks.iter().zip(&mbs) {
        println!(
            "  {:<22} {:>8.0} MB/s  {:.3}x raw tcp  {:.3}x tcp+noise",
            s.label(),
            m,
            m / mbs[0],
            m / mbs[1]
        );
    }
}

async fn rtt_part(stacks: &[Stack]) {
    println!("64 B round trip, median of {PINGS}:");
    let udp = udp_rtt().await;
    println!("  {:<22} {:>8.1} us", "raw udp", us(udp));
    let mut rtts = Vec::new();
    for s in stacks {
        rtts.push(rtt(*s).await);
    }
    for (s, r) in stacks.iter().zip(&rtts) {
        println!(
            "  {:<22} {:>8.1} us  {:.2}x raw tcp  {:.2}x raw udp",
            s.label(),
            us(*r),
            us(*r) / us(rtts[0]),
            us(*r) / us(udp)
        );
    }
}

async fn connect_part() {
    println!("connect + handshake + 1-byte echo, median of {CONNECTS}:");
    let tcp_l = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let tcp_addr = tcp_l.local_addr().unwrap();
    let tcp = connect(|| {
        let l = tcp_l.clone();
        async move {
            let (c, s) = tokio::join!(TcpStream::connect(tcp_addr), l.accept());
            let (c, s) = (c.unwrap(), s.unwrap().0);
            c.set_nodelay(true).unwrap();
            s.set_nodelay(true).unwrap();
            (Box::new(c) as Box<dyn Io>, Box::new(s) as Box<dyn Io>)
        }
    })
    .await;
    let (cc, sc) = noise_configs();
    let (cc, sc) = (Arc::new(cc), Arc::new(sc));
    let noise = connect(|| {
        let (l, cc, sc) = (tcp_l.clone(), cc.clone(), sc.clone());
        async move {
            let (c, s) = tokio::join!(TcpStream::connect(tcp_addr), l.accept());
            let (c, s) = (c.unwrap(), s.unwrap().0);
            c.set_nodelay(true).unwrap();
            s.set_nodelay(true).unwrap();
            let (c, s) = tokio::join!(cc.upgrade_outbound(c, None), sc.upgrade_inbound(s));
            (
                Box::new(c.unwrap()) as Box<dyn Io>,
                Box::new(s.unwrap()) as Box<dyn Io>,
            )
        }
    })
    .await;

    let listener = quic()
        .listen(&"quic/127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let listener = Arc::new(tokio::sync::Mutex::new(listener));
    let quic_dial = |client: QuicTransport| {
        let (addr, listener) = (addr.clone(), listener.clone());
        async move {
            let c = client.dial(&addr).await.unwrap();
            let (s, _) = listener.lock().await.accept().await.unwrap();
            (Box::new(c) as Box<dyn Io>, Box::new(s) as Box<dyn Io>)
        }
    };
    // First contact: a new client identity and address each time, so each
    // dial is sent a Retry first. Each client listens before the clock
    // starts and dials from that socket, as a node does: a new UDP socket
    // costs more than the handshake here (setting UDP_GRO and closing the
    // socket flip kernel static keys, which interrupts every CPU).
    let mut fresh = Vec::with_capacity(CONNECTS);
    let mut sockets = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let t = quic();
        sockets.push(
            t.listen(&"quic/127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
        fresh.push(t);
    }
    let quic_first = connect(|| quic_dial(fresh.pop().unwrap())).await;
    drop(sockets);
    let before = listener.lock().await.stats().retries;
    // A returning client: its NEW_TOKEN tokens skip the Retry.
    let client = quic();
    let quic_again = connect(|| quic_dial(client.clone())).await;
    let retries = listener.lock().await.stats().retries - before;
    for (label, d) in [
        ("raw tcp", tcp),
        ("tcp + noise xx", noise),
        ("quic, first contact", quic_first),
        ("quic, returning", quic_again),
    ] {
        println!(
            "  {:<22} {:>8.1} us  {:.2}x tcp+noise",
            label,
            us(d),
            us(d) / us(noise)
        );
    }
    println!("  (returning client: {retries} Retry in {CONNECTS} dials)");
}
