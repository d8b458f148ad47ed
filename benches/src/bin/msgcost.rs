//! `msgcost SCENARIO COUNT`: runs one small-message scenario `COUNT` times
//! on one current-thread runtime (both ends in one thread, as the perf
//! harness's pinned placement), for an instruction counter to run twice
//! with two counts: the difference of the totals over the difference of
//! the counts is the cost of one message (or round trip), setup excluded.
//! `cargo xtask bench --instructions` does that under callgrind.
//!
//! Scenarios: `raw-rtt`, `secure-rtt`, `node-rtt`, `node-rtt-inline` (64 B
//! round trips: raw TCP ping-pong, the same over `SecureStream`, a node's
//! typed request/response answered by a task, and answered inline by the
//! server's reader) and `raw-pipelined`, `secure-pipelined`,
//! `node-pipelined` (64 B one-way messages: length-prefixed over a
//! buffered stream, typed `Channel::send`), and `node-connect` (one client
//! node dialing one server node by address, then closing the channel and
//! waiting until the server saw it closed: Noise XX, the version exchange,
//! the channel's start and end on both sides; the same two identities each
//! time, so each side checks the other's identity signature once and then
//! finds it in its cache: a first contact's work less two Ed25519
//! verifications).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use knotwork_core::{Keypair, PeerAddr};
use knotwork_crypto_handshake::SecureConfig;
use knotwork_node::{DisconnectReason, Node, NodeConfig, NodeEvent, RateBudget, Sessions};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Payload bytes of each message.
const SMALL: usize = 64;

/// A typed message of 64 payload bytes (the perf harness's `Blob`).
#[derive(Serialize, Deserialize)]
struct Blob(bytes::Bytes);

impl Message for Blob {
    const NAME: &'static str = "msgcost/blob/1";
    const MAX_BYTES: usize = 1 + SMALL;
}

fn blob() -> Blob {
    Blob(bytes::Bytes::from_static(&[7u8; SMALL]))
}

/// A 64 B request the server answers inline (`Channel::serve`).
#[derive(Serialize, Deserialize)]
struct Echo(bytes::Bytes);

impl Message for Echo {
    const NAME: &'static str = "msgcost/echo/1";
    const MAX_BYTES: usize = 1 + SMALL;
}

/// What a node scenario does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeRun {
    /// Round trips answered by the server protocol's task.
    Rtt,
    /// Round trips answered by the server's reader (`Channel::serve`).
    RttInline,
    /// One-way messages.
    Pipelined,
}

const USAGE: &str = "usage: msgcost raw-rtt|secure-rtt|node-rtt|node-rtt-inline|raw-pipelined|secure-pipelined|node-pipelined|node-connect COUNT";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(scenario), Some(count)) = (args.first(), args.get(1)) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // In a spawned task, as the perf harness runs its ends: a `block_on`
    // future woken by another task costs the runtime an extra zero-timeout
    // `epoll_wait` before it is polled, which a task does not.
    let scenario = scenario.clone();
    let work = async move {
        match scenario.as_str() {
            "raw-rtt" => stream_pair(false, |c| ping(c, count), echo).await,
            "secure-rtt" => stream_pair(true, |c| ping(c, count), echo).await,
            "raw-pipelined" => {
                stream_pair(false, |c| send_many(c, count), move |c| recv_many(c, count)).await
            }
            "secure-pipelined" => {
                stream_pair(true, |c| send_many(c, count), move |c| recv_many(c, count)).await
            }
            "node-rtt" => node(NodeRun::Rtt, count).await,
            "node-rtt-inline" => node(NodeRun::RttInline, count).await,
            "node-pipelined" => node(NodeRun::Pipelined, count).await,
            "node-connect" => node_connect(count).await,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    };
    rt.block_on(async move { tokio::spawn(work).await.expect("scenario task") });
}

/// A connection of raw TCP or `SecureStream` over TCP.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// Runs `client` on a dialed connection and `server` on the accepted one.
async fn stream_pair<C, CF, S, SF>(secure: bool, client: C, server: S)
where
    C: FnOnce(Box<dyn Conn>) -> CF,
    CF: Future<Output = ()>,
    S: FnOnce(Box<dyn Conn>) -> SF + Send + 'static,
    SF: Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let config = || SecureConfig::new(Keypair::generate().expect("keypair")).expect("config");
    let (server_config, client_config) = (config(), config());
    let served = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        let c: Box<dyn Conn> = if secure {
            Box::new(server_config.upgrade_inbound(tcp).await.expect("inbound"))
        } else {
            Box::new(tcp)
        };
        server(c).await;
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let c: Box<dyn Conn> = if secure {
        Box::new(
            client_config
                .upgrade_outbound(tcp, None)
                .await
                .expect("outbound"),
        )
    } else {
        Box::new(tcp)
    };
    client(c).await;
    served.await.expect("server");
}

/// `count` 64 B round trips.
async fn ping(mut c: Box<dyn Conn>, count: usize) {
    let mut buf = [7u8; SMALL];
    for _ in 0..count {
        c.write_all(&buf).await.expect("ping");
        c.flush().await.expect("flush");
        c.read_exact(&mut buf).await.expect("pong");
    }
}

/// Echoes 64 B messages until EOF.
async fn echo(mut c: Box<dyn Conn>) {
    let mut buf = [0u8; SMALL];
    while c.read_exact(&mut buf).await.is_ok() {
        c.write_all(&buf).await.expect("echo");
        c.flush().await.expect("flush");
    }
}

/// `count` length-prefixed 64 B messages through a buffered stream, then
/// waits for the acknowledgement.
async fn send_many(c: Box<dyn Conn>, count: usize) {
    let mut c = BufStream::with_capacity(64 * 1024, 64 * 1024, c);
    let msg = [1u8; SMALL];
    for _ in 0..count {
        c.write_u32(SMALL as u32).await.expect("length");
        c.write_all(&msg).await.expect("body");
    }
    c.flush().await.expect("flush");
    let mut ack = [0u8; 1];
    c.read_exact(&mut ack).await.expect("ack");
}

/// Reads `count` length-prefixed messages, then acknowledges.
async fn recv_many(c: Box<dyn Conn>, count: usize) {
    let mut c = BufStream::with_capacity(64 * 1024, 64 * 1024, c);
    let mut buf = [0u8; SMALL];
    for _ in 0..count {
        let len = c.read_u32().await.expect("length") as usize;
        c.read_exact(buf.get_mut(..len).expect("length"))
            .await
            .expect("body");
    }
    c.write_all(&[1]).await.expect("ack");
    c.flush().await.expect("flush");
}

/// Two nodes on loopback TCP: `count` typed request/response round trips
/// (answered by a task or inline) or `count` one-way typed sends, as the
/// perf harness's node pair.
async fn node(run: NodeRun, count: usize) {
    let config = quiet_config();
    let (tx, mut subs) = mpsc::channel(1);
    let server = Node::builder(Keypair::generate().expect("keypair"))
        .config(config.clone())
        .listen("tcp/127.0.0.1:0".parse().expect("addr"))
        .budget::<Blob>(RateBudget::UNLIMITED)
        .budget::<Echo>(RateBudget::UNLIMITED)
        .protocol("msgcost", Sessions::ALL, move |ch| {
            ch.serve(|e: Echo| e);
            let mut requests = ch.subscribe_requests::<Blob>();
            let _ = tx.try_send(ch.subscribe::<Blob>());
            async move {
                while let Some((b, r)) = requests.recv().await {
                    let _ = r.respond(&b).await;
                }
            }
        })
        .start()
        .await
        .expect("server");
    let (client, addr) = client_for(&server, config).await;
    let ch = client.connect(&addr).await.expect("connect");
    let mut inbound = subs.recv().await.expect("subscription");
    let msg = blob();
    if run == NodeRun::Rtt {
        for _ in 0..count {
            let _: Blob = ch.request(&msg).await.expect("request");
        }
    } else if run == NodeRun::RttInline {
        let echo = Echo(bytes::Bytes::from_static(&[7u8; SMALL]));
        for _ in 0..count {
            let _: Echo = ch.request(&echo).await.expect("request");
        }
    } else {
        let sends = async {
            for _ in 0..count {
                ch.send(&msg).await.expect("send");
            }
        };
        let receives = async {
            for _ in 0..count {
                inbound.recv().await.expect("message");
            }
        };
        tokio::join!(sends, receives);
    }
    client.shutdown().await;
    server.shutdown().await;
}

/// `count` dials from one client node to one server node (by address, so
/// each is an XX handshake), each closed by the client and seen closed by
/// the server before the next.
async fn node_connect(count: usize) {
    let mut config = quiet_config();
    // One client dials as fast as it can: the cost is measured, not the
    // server's rate limit on handshake starts.
    config.handshake_starts = RateBudget::UNLIMITED;
    let server = Node::builder(Keypair::generate().expect("keypair"))
        .config(config.clone())
        .listen("tcp/127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("server");
    let mut events = server.events();
    let (client, addr) = client_for(&server, config).await;
    let server_id = server.peer_id();
    for _ in 0..count {
        let ch = client.connect(&addr).await.expect("connect");
        ch.close(DisconnectReason::Other("done".into())).await;
        loop {
            if let NodeEvent::Disconnected { .. } = events.recv().await.expect("server events") {
                break;
            }
        }
        // Both ends forget the channel before the next dial (else the
        // client's `connect` could find the closing one).
        while client.channel(&server_id).is_some() {
            tokio::task::yield_now().await;
        }
    }
    client.shutdown().await;
    server.shutdown().await;
}

/// A node configuration whose pings stay out of the count (an hour apart).
fn quiet_config() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.ping.interval = Duration::from_secs(3600);
    config.ping.timeout = Duration::from_secs(3600);
    config
}

/// A client node of `config` that dials only when told, and the address
/// it is to dial `server` at.
async fn client_for(server: &Node, mut config: NodeConfig) -> (Node, PeerAddr) {
    let addr = server.listen_addrs().first().cloned().expect("listen addr");
    config.outbound_slots = 0;
    let client = Node::builder(Keypair::generate().expect("keypair"))
        .config(config)
        .start()
        .await
        .expect("client");
    (client, addr)
}
