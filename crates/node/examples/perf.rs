//! Loopback performance of the node against raw tokio TCP, in one run:
//! request/response RTT, pipelined one-way messages, connect time.
//!
//! Run pinned to one core, in release mode:
//! `taskset -c 0 cargo run --release -p knotwork-node --example perf`
//! (append `rtt`, `pipelined` or `connect` to run one part only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use knotwork_core::{Keypair, PeerAddr};
use knotwork_node::{Node, Sessions};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

const SIZE: usize = 64;
const RTT_ROUNDS: usize = 10_000;
const PIPELINED: usize = 500_000;
const CONNECTS: usize = 300;

#[derive(Serialize, Deserialize)]
struct Blob(bytes::Bytes);
impl Message for Blob {
    const NAME: &'static str = "perf/blob/1";
    const MAX_BYTES: usize = 1 + SIZE; // length varint + bytes
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn raw_rtt() -> Duration {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; SIZE];
        while s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&buf).await.unwrap();
        }
    });
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = [7u8; SIZE];
    let mut times = Vec::with_capacity(RTT_ROUNDS);
    for _ in 0..RTT_ROUNDS {
        let t = Instant::now();
        c.write_all(&buf).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        times.push(t.elapsed());
    }
    p50(times)
}

async fn raw_pipelined() -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut r = BufReader::new(s);
        let mut buf = [0u8; SIZE];
        for _ in 0..PIPELINED {
            let len = r.read_u32().await.unwrap() as usize;
            r.read_exact(&mut buf[..len]).await.unwrap();
        }
        Instant::now()
    });
    let c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut w = BufWriter::new(c);
    let t = Instant::now();
    let msg = [1u8; SIZE];
    for _ in 0..PIPELINED {
        w.write_u32(SIZE as u32).await.unwrap();
        w.write_all(&msg).await.unwrap();
    }
    w.flush().await.unwrap();
    let done = server.await.unwrap();
    PIPELINED as f64 / (done - t).as_secs_f64()
}

async fn node_pair() -> (
    Node,
    Node,
    PeerAddr,
    tokio::sync::mpsc::Receiver<knotwork_node::Subscription<Blob>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let server = Node::builder(Keypair::generate().unwrap())
        .listen("tcp/127.0.0.1:0".parse().unwrap())
        .budget::<Blob>(knotwork_node::RateBudget::UNLIMITED)
        .protocol("perf", Sessions::ALL, move |ch| {
            let mut requests = ch.subscribe_requests::<Blob>();
            let sub = ch.subscribe::<Blob>();
            let tx = tx.clone();
            async move {
                let _ = tx.send(sub).await;
                while let Some((b, r)) = requests.recv().await {
                    let _ = r.respond(&b).await;
                }
            }
        })
        .start()
        .await
        .unwrap();
    let client = Node::builder(Keypair::generate().unwrap())
        .start()
        .await
        .unwrap();
    let addr = server.listen_addrs()[0].clone();
    (server, client, addr, rx)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let only = std::env::args().nth(1);
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let (server, client, addr, mut subs) = node_pair().await;

    let ch = client.connect(&addr).await.unwrap();
    let inbound = subs.recv().await.unwrap();
    if run("rtt") {
        rtt(&ch).await;
    }
    if run("pipelined") {
        pipelined(&ch, inbound).await;
    }
    if run("connect") {
        connect(&server, &addr).await;
    }
    client.shutdown().await;
    server.shutdown().await;
}

async fn rtt(ch: &knotwork_node::Channel) {
    let raw = raw_rtt().await;
    let req = Blob(bytes::Bytes::from_static(&[7u8; SIZE]));
    let mut times = Vec::with_capacity(RTT_ROUNDS);
    for _ in 0..RTT_ROUNDS {
        let t = Instant::now();
        let _: Blob = ch.request(&req).await.unwrap();
        times.push(t.elapsed());
    }
    let node = p50(times);
    println!(
        "request/response {SIZE} B RTT p50: node {:?}, raw tcp {:?}, ratio {:.2}x",
        node,
        raw,
        node.as_secs_f64() / raw.as_secs_f64()
    );
}

async fn pipelined(ch: &knotwork_node::Channel, mut inbound: knotwork_node::Subscription<Blob>) {
    let raw_rate = raw_pipelined().await;
    let counter = tokio::spawn(async move {
        for _ in 0..PIPELINED {
            inbound.recv().await.unwrap();
        }
        Instant::now()
    });
    let msg = Blob(bytes::Bytes::from_static(&[1u8; SIZE]));
    let t = Instant::now();
    for _ in 0..PIPELINED {
        ch.send(&msg).await.unwrap();
    }
    let done = counter.await.unwrap();
    let node_rate = PIPELINED as f64 / (done - t).as_secs_f64();
    println!(
        "pipelined {SIZE} B messages/s: node {:.0}, raw length-prefixed tcp {:.0}, ratio {:.2}x",
        node_rate,
        raw_rate,
        node_rate / raw_rate
    );
}

async fn connect(server: &Node, addr: &PeerAddr) {
    // First contact: a new identity each time, so the handshake is Noise XX.
    let mut times = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let fresh = Node::builder(Keypair::generate().unwrap())
            .start()
            .await
            .unwrap();
        let t = Instant::now();
        let c = fresh.connect(addr).await.unwrap();
        times.push(t.elapsed());
        fresh.shutdown().await;
        c.closed().await;
    }
    println!(
        "connect + handshake (XX) + version p50, first contact: {:?}",
        p50(times)
    );
    // Reconnect: the dialer knows the server's static key, so Noise IK.
    let again = Node::builder(Keypair::generate().unwrap())
        .start()
        .await
        .unwrap();
    let mut times = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let t = Instant::now();
        let c = again.connect(addr).await.unwrap();
        times.push(t.elapsed());
        c.close(knotwork_node::DisconnectReason::other("bench"))
            .await;
        c.closed().await;
        while server.channel(&again.peer_id()).is_some() {
            tokio::task::yield_now().await;
        }
    }
    println!(
        "connect + handshake (IK) + version p50, reconnect: {:?}",
        p50(times)
    );
    again.shutdown().await;
}
