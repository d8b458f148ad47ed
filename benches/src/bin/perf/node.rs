//! Node scenarios: typed messages over a `Channel` between two nodes on
//! loopback TCP or QUIC ([`Carrier`]), and a light dialer that speaks just enough of the node
//! protocol (Noise XX, then a `Version` each way) to open many inbound
//! connections cheaply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use knotwork_core::{Keypair, PeerAddr};
use knotwork_crypto_handshake::{SecureConfig, SecureStream};
use knotwork_node::version::{Hello, secure_outbound};
use knotwork_node::{
    Channel, Node, NodeBuilder, NodeConfig, NodeEvent, RateBudget, Sessions, Subscription, Version,
};
use knotwork_transport_quic::{QuicConfig, QuicTransport};
use knotwork_wire::{FrameCodec, Message};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::sides::{Sides, wait};
use crate::stream::SMALL;

/// A typed message of 64 payload bytes.
#[derive(Serialize, Deserialize)]
pub struct Blob(bytes::Bytes);

impl Message for Blob {
    const NAME: &'static str = "perf/blob/1";
    // length varint (1) + 64 bytes.
    const MAX_BYTES: usize = 1 + SMALL;
}

pub fn blob() -> Blob {
    Blob(bytes::Bytes::from_static(&[7u8; SMALL]))
}

/// A typed request of 64 payload bytes that the server answers inline
/// (`Channel::serve`: its reader answers, no handler task).
#[derive(Serialize, Deserialize)]
pub struct Echo(bytes::Bytes);

impl Message for Echo {
    const NAME: &'static str = "perf/echo/1";
    const MAX_BYTES: usize = 1 + SMALL;
}

/// How the server answers a pair's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// A task of the protocol's, from `subscribe_requests` (`Blob`).
    Task,
    /// The channel's reader, from `Channel::serve` (`Echo`).
    Inline,
}

/// A config for a server taking many connections from one IP, without
/// pings during a measurement.
pub fn server_config() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.max_inbound = 1 << 20;
    config.max_per_ip = 1 << 20;
    config.max_per_subnet = 1 << 20;
    // Every connection comes from 127.0.0.1 as fast as it can: the node's
    // cost per handshake is what is measured, not its rate limit.
    config.handshake_starts = knotwork_node::RateBudget::UNLIMITED;
    config.max_pending_handshakes = 256;
    config.ping.interval = Duration::from_secs(3600);
    config.ping.timeout = Duration::from_secs(3600);
    config
}

/// What carries a node pair's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// TCP, secured by the node's Noise handshake.
    Tcp,
    /// QUIC (TLS 1.3 with the node's identity), no Noise.
    Quic,
}

/// A node builder of a fresh identity that can dial (and listen on) `carrier`.
fn builder(carrier: Carrier) -> NodeBuilder {
    let keypair = Keypair::generate().expect("keypair");
    match carrier {
        Carrier::Tcp => Node::builder(keypair),
        Carrier::Quic => {
            let quic = QuicTransport::new(&keypair, QuicConfig::default()).expect("quic");
            Node::builder(keypair).transport(quic)
        }
    }
}

/// The server node: echoes `Blob` requests, and hands out each inbound
/// channel's `Blob` subscription.
pub struct Server {
    node: Node,
    addr: PeerAddr,
    subs: mpsc::Receiver<Subscription<Blob>>,
}

impl Server {
    async fn start(carrier: Carrier) -> Server {
        let (tx, subs) = mpsc::channel(16);
        let listen = match carrier {
            Carrier::Tcp => "tcp/127.0.0.1:0",
            Carrier::Quic => "quic/127.0.0.1:0",
        };
        let node = builder(carrier)
            .config(server_config())
            .listen(listen.parse().expect("addr"))
            .budget::<Blob>(RateBudget::UNLIMITED)
            .budget::<Echo>(RateBudget::UNLIMITED)
            .protocol("perf", Sessions::ALL, move |ch| {
                ch.serve(|e: Echo| e);
                let mut requests = ch.subscribe_requests::<Blob>();
                let sub = ch.subscribe::<Blob>();
                let tx = tx.clone();
                async move {
                    let _ = tx.try_send(sub);
                    while let Some((b, r)) = requests.recv().await {
                        let _ = r.respond(&b).await;
                    }
                }
            })
            .start()
            .await
            .expect("server node");
        let addr = node.listen_addrs().first().cloned().expect("listen addr");
        Server { node, addr, subs }
    }

    fn socket_addr(&self) -> SocketAddr {
        match &self.addr {
            PeerAddr::Tcp(sa) => *sa,
            other => panic!("not a tcp address: {other}"),
        }
    }
}

/// A client node that dials only when told: no outbound slots, so its
/// maintenance never dials the server again by itself (a manual connect
/// makes the server's address a verified host; with slots, the next
/// maintenance round redialed it and the server never forgot the client).
///
/// Over QUIC it listens too, as a QUIC node does: its dials leave from its
/// listen socket (no new UDP socket per dial).
pub async fn client_node(carrier: Carrier) -> Node {
    let mut config = NodeConfig::default();
    config.outbound_slots = 0;
    let mut builder = builder(carrier).config(config);
    if carrier == Carrier::Quic {
        builder = builder.listen("quic/127.0.0.1:0".parse().expect("addr"));
    }
    builder.start().await.expect("client node")
}

/// A connected pair: the client's channel and the server side's `Blob`
/// subscription of that channel.
pub struct Pair {
    carrier: Carrier,
    server: Server,
    client: Node,
    channel: Channel,
    inbound: Option<Subscription<Blob>>,
}

/// Starts a server and a client node on `carrier` and connects them.
pub fn pair(sides: &Sides, carrier: Carrier) -> Pair {
    let mut server = sides.server(Server::start(carrier));
    let addr = server.addr.clone();
    let (client, channel) = sides.client(async move {
        let client = client_node(carrier).await;
        let channel = client.connect(&addr).await.expect("connect");
        (client, channel)
    });
    let (server, inbound) = sides.server(async move {
        let sub = server.subs.recv().await.expect("inbound subscription");
        (server, sub)
    });
    Pair {
        carrier,
        server,
        client,
        channel,
        inbound: Some(inbound),
    }
}

impl Pair {
    /// Typed 64 B request/response round trips answered by the server's
    /// task, each timed.
    pub fn request_response(&self, sides: &Sides, rounds: usize) -> Vec<Duration> {
        self.round_trips(sides, rounds, Handler::Task)
    }

    /// Typed 64 B request/response round trips answered by `handler` on
    /// the server, each timed.
    pub fn round_trips(&self, sides: &Sides, rounds: usize, handler: Handler) -> Vec<Duration> {
        let ch = self.channel.clone();
        sides.client(async move {
            let (blob, echo) = (blob(), Echo(bytes::Bytes::from_static(&[7u8; SMALL])));
            let mut times = Vec::with_capacity(rounds);
            for i in 0..rounds + rounds / 10 {
                let t = Instant::now();
                match handler {
                    Handler::Task => drop(ch.request::<_, Blob>(&blob).await.expect("request")),
                    Handler::Inline => drop(ch.request::<_, Echo>(&echo).await.expect("request")),
                }
                if i >= rounds / 10 {
                    times.push(t.elapsed());
                }
            }
            times
        })
    }

    /// Typed 64 B one-way messages, `count` of them, in messages/s until
    /// the server's subscription has them all.
    pub fn pipelined(&mut self, sides: &Sides, count: usize) -> f64 {
        let mut inbound = self.inbound.take().expect("subscription");
        let counter = sides.spawn_server(async move {
            for _ in 0..count {
                inbound.recv().await.expect("message");
            }
            (Instant::now(), inbound)
        });
        let ch = self.channel.clone();
        let start = sides.client(async move {
            let msg = blob();
            let start = Instant::now();
            for _ in 0..count {
                ch.send(&msg).await.expect("send");
            }
            start
        });
        let (done, inbound) = wait(counter);
        self.inbound = Some(inbound);
        count as f64 / (done - start).as_secs_f64()
    }

    /// Connect + handshake + version exchange, `count` times with a fresh
    /// client identity each (first contact: Noise XX over TCP; over QUIC a
    /// Retry round trip and the TLS handshake), then `count` times from one
    /// client that dialed before (over TCP its node knows the server's key;
    /// over QUIC its token skips the Retry).
    ///
    /// Each fresh client node has connected once before, untimed, to
    /// another server: a node's first channel also does what a node does
    /// once (its message types' metrics series, first use of its tables):
    /// 47 and 98 µs in two quick runs here, not a cost of first contact
    /// with a peer.
    pub fn connects(&self, sides: &Sides, count: usize) -> (Vec<Duration>, Vec<Duration>) {
        let addr = self.server.addr.clone();
        let server = self.server.node.clone();
        let carrier = self.carrier;
        let warm = sides.server(Server::start(carrier));
        let warm_addr = warm.addr.clone();
        let warm_node = warm.node.clone();
        let times = sides.client(async move {
            let mut first = Vec::with_capacity(count);
            for i in 0..count {
                let fresh = client_node(carrier).await;
                let mut warm_events = warm_node.events();
                let c = step(i, "first contact: warm-up", fresh.connect(&warm_addr))
                    .await
                    .expect("warm-up connect");
                c.close(knotwork_node::DisconnectReason::other("warm-up"))
                    .await;
                step(i, "first contact: warm-up closed", c.closed()).await;
                // A dialer's channel opens as its handshake ends, before the
                // server has read the last message: wait until the warm-up
                // server is done with it too, or its work would be timed.
                let warm_done = async {
                    while let Ok(e) = warm_events.recv().await {
                        if matches!(e, NodeEvent::Disconnected { peer, .. } if peer == fresh.peer_id())
                        {
                            return;
                        }
                    }
                };
                step(i, "first contact: warm-up server done", warm_done).await;
                settle().await;
                let t = Instant::now();
                let c = step(i, "first contact: connect", fresh.connect(&addr))
                    .await
                    .expect("connect");
                first.push(t.elapsed());
                step(i, "first contact: shutdown", fresh.shutdown()).await;
                step(i, "first contact: closed", c.closed()).await;
            }
            let again = client_node(carrier).await;
            let mut repeat = Vec::with_capacity(count);
            for i in 0..count {
                settle().await;
                let t = Instant::now();
                let c = step(i, "reconnect: connect", again.connect(&addr))
                    .await
                    .expect("reconnect");
                repeat.push(t.elapsed());
                let bench = knotwork_node::DisconnectReason::other("bench");
                step(i, "reconnect: close", c.close(bench)).await;
                step(i, "reconnect: closed", c.closed()).await;
                // Both ends drop the channel from their peer tables before
                // the next round (else `connect` finds the old one).
                let forget = async {
                    while server.channel(&again.peer_id()).is_some()
                        || again.channel(&server.peer_id()).is_some()
                    {
                        tokio::task::yield_now().await;
                    }
                };
                step(i, "reconnect: both ends forget", forget).await;
            }
            again.shutdown().await;
            (first, repeat)
        });
        sides.server(async move { warm.node.shutdown().await });
        times
    }

    /// Shuts both nodes down.
    pub fn shutdown(self, sides: &Sides) {
        let Pair { server, client, .. } = self;
        sides.client(async move { client.shutdown().await });
        sides.server(async move { server.node.shutdown().await });
    }
}

/// A dialed node connection, held open: the secure stream after the
/// handshake and the version exchange in it.
pub type Light = Framed<SecureStream<TcpStream>, FrameCodec>;

/// Awaits `f`, one step of round `i` of a scenario; panics naming the
/// step when it takes longer than [`STEP_LIMIT`].
async fn step<F: Future>(i: usize, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(STEP_LIMIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("round {i}, {what}: no progress in {STEP_LIMIT:?}"),
    }
}

/// Lets the runtime finish what earlier steps left to do before a timed
/// connect starts: a fresh node's start-up tasks, a closed channel's
/// teardown on both ends (about 75 µs here, which a connect would
/// otherwise pay for when it first waits for the network; the bare
/// connects it is compared with start on a runtime with nothing else to
/// do). Yields rather than sleeps: a sleeping thread lets the CPU go idle,
/// and a connect that starts from idle runs slower.
async fn settle() {
    for _ in 0..SETTLE_YIELDS {
        tokio::task::yield_now().await;
    }
}

/// How many times [`settle`] yields: each lets every ready task run and
/// polls the network once.
const SETTLE_YIELDS: usize = 64;

/// How long one step of a node scenario may take.
const STEP_LIMIT: Duration = Duration::from_secs(20);

/// Dials `addr` as a node would, with a fresh identity: Noise XX with our
/// `Version` in it and the server's out of it.
pub async fn light_dial(addr: SocketAddr) -> Light {
    let secure = SecureConfig::new(Keypair::generate().expect("keypair")).expect("config");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let hello = Hello::Version(Version::new(&[], &[], &PeerAddr::Tcp(addr)));
    let (stream, _) = secure_outbound(&secure, tcp, None, &hello)
        .await
        .expect("handshake, version");
    Framed::new(stream, FrameCodec::new())
}

/// Inbound connections a node accepts: `count` light dials from
/// `dialers` concurrent tasks on the client end, each dropped once open.
/// Returns (wall seconds, server-thread CPU seconds) for them all.
pub fn inbound_handshakes(sides: &Sides, count: usize, dialers: usize) -> (f64, f64) {
    let server = sides.server(Server::start(Carrier::Tcp));
    let addr = server.socket_addr();
    let node = server.node.clone();
    let cpu0 = sides.server(async { crate::sys::thread_cpu() });
    let start = Instant::now();
    let left = Arc::new(AtomicUsize::new(count));
    sides.client(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..dialers {
            let left = left.clone();
            tasks.spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    drop(light_dial(addr).await);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = sides.server(async { crate::sys::thread_cpu() }) - cpu0;
    sides.server(async move { node.shutdown().await });
    drop(server);
    (wall, cpu.as_secs_f64())
}

/// Starts a server node for the memory scenario; returns its node and
/// TCP address.
pub fn memory_server(sides: &Sides) -> (Node, SocketAddr) {
    let server = sides.server(Server::start(Carrier::Tcp));
    let addr = server.socket_addr();
    (server.node, addr)
}
