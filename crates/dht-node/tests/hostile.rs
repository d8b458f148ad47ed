//! Hostile peers against the DHT driver over real TCP on loopback (issue
//! 18): each test is named for the security review finding it covers. The
//! peers are hand-driven (`DhtPeer`): a Noise handshake and a version that
//! declares the DHT and whatever listen addresses the attack needs, then
//! frames written by the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use common::*;
use futures::{SinkExt, StreamExt};
use knotwork_core::memory::MemoryListener;
use knotwork_core::{Keypair, PeerAddr, PeerId, Transport, TransportError};
use knotwork_crypto_handshake::SecureConfig;
use knotwork_dht_node::{Config, DhtHandle, DhtMessage, NAME, Record, Request, Response, Time};
use knotwork_discovery_dht::RecordLimits;
use knotwork_discovery_dht::message::{WireAddr, WirePeer};
use knotwork_node::protocol::ping::PingConfig;
use knotwork_node::version::{Hello, secure_outbound};
use knotwork_node::{Node, NodeBuilder, NodeConfig, NodeEvent, RateBudget, Version};
use knotwork_wire::{Frame, FrameCodec, Message, decode, encode};
use tokio::io::DuplexStream;
use tokio::net::TcpSocket;
use tokio_util::codec::Framed;

/// Node settings for these tests: every peer comes from 127.0.0.1, and
/// hand-driven peers never answer pings, so the ping timeout is long.
fn config() -> NodeConfig {
    let mut c = fast_config();
    c.max_per_ip = 256;
    c.max_per_subnet = 256;
    c.handshake_starts = RateBudget::UNLIMITED;
    c.max_inbound = 256;
    c.max_pending_handshakes = 256;
    c.ping = PingConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    };
    c
}

/// A node on `tcp/127.0.0.1:0` running the DHT with `dht_config`.
fn dht_node(dht_config: Config) -> (NodeBuilder, DhtHandle) {
    let keypair = Keypair::generate().unwrap();
    let dht = DhtHandle::new(keypair.clone(), dht_config);
    let builder = Node::builder(keypair)
        .listen("tcp/127.0.0.1:0".parse().unwrap())
        .config(config())
        .service(dht.clone());
    (builder, dht)
}

/// A hand-driven peer that declares the DHT and `listen`.
struct DhtPeer {
    framed: Framed<knotwork_crypto_handshake::SecureStream<tokio::net::TcpStream>, FrameCodec>,
    keypair: Keypair,
}

impl DhtPeer {
    /// Connects to `to`; a receive buffer of `rcvbuf` bytes if given (a peer
    /// that reads nothing then stops the node's writes early).
    async fn connect(to: &PeerAddr, listen: &[PeerAddr], rcvbuf: Option<u32>) -> Self {
        let PeerAddr::Tcp(sa) = to else {
            panic!("tcp only")
        };
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let tcp = socket.connect(*sa).await.unwrap();
        let keypair = Keypair::generate().unwrap();
        let hello = Hello::Version(Version::new(&[NAME], listen, to));
        let config = SecureConfig::new(keypair.clone()).unwrap();
        let (secure, _) = secure_outbound(&config, tcp, None, &hello).await.unwrap();
        let framed = Framed::new(secure, FrameCodec::new());
        Self { framed, keypair }
    }

    fn id(&self) -> PeerId {
        self.keypair.peer_id()
    }

    /// Queues `msg` without flushing.
    async fn feed(&mut self, msg: &DhtMessage) {
        let frame = Frame::message(DhtMessage::ID, encode(msg).unwrap());
        self.framed.feed(frame).await.unwrap();
    }

    async fn send(&mut self, msg: &DhtMessage) {
        self.feed(msg).await;
        self.framed.flush().await.unwrap();
    }

    /// The next DHT message from the node (other frames skipped).
    async fn recv(&mut self) -> DhtMessage {
        loop {
            let frame = self.framed.next().await.unwrap().unwrap();
            if frame.msg_id == DhtMessage::ID {
                return decode(&frame.payload).unwrap();
            }
        }
    }
}

fn request(id: u64, client: bool, body: Request) -> DhtMessage {
    DhtMessage::Request { id, client, body }
}

/// A time the system clock (the driver's) has not reached: in an hour.
fn in_an_hour() -> Time {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(3600);
    Time(u64::try_from(t.as_millis()).unwrap())
}

/// The value of the metric line `name` (no labels, or the labels in
/// `name`), 0 if absent.
fn metric(node: &Node, name: &str) -> i64 {
    let text = node.metrics().encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// A transport that records the addresses the node dials and refuses them
/// all, so nothing leaves the process; it listens nowhere (TCP does).
#[derive(Clone, Default)]
struct CountingDials(Arc<Mutex<Vec<PeerAddr>>>);

#[async_trait]
impl Transport for CountingDials {
    type Connection = DuplexStream;
    type Listener = MemoryListener;

    async fn listen(&self, addr: &PeerAddr) -> Result<MemoryListener, TransportError> {
        Err(TransportError::UnsupportedAddr(addr.clone()))
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<DuplexStream, TransportError> {
        self.0.lock().unwrap().push(addr.clone());
        Err(TransportError::ConnectionRefused(addr.clone()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_a_peer_claiming_a_third_partys_address_never_gets_it_dialed() {
    let dials = CountingDials::default();
    let (builder, dht) = dht_node(Config {
        request_timeout: Duration::from_secs(1),
        ..Config::default()
    });
    // No maintenance tick: the node's refinery would probe the claimed
    // listen address (the host store's business, not the DHT's).
    let mut quiet = config();
    quiet.maintenance_interval = Duration::from_secs(3600);
    let node = builder
        .config(quiet)
        .transport(dials.clone())
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    let victim: PeerAddr = "tcp/192.0.2.1:9".parse().unwrap();
    let mut peer = DhtPeer::connect(&addr(&node), &[victim], None).await;
    for n in 0..100u8 {
        let body = if n % 2 == 0 {
            Request::Ping
        } else {
            Request::FindNode { target: [n; 32] }
        };
        peer.feed(&request(u64::from(n), false, body)).await;
    }
    peer.framed.flush().await.unwrap();
    let id = peer.id();
    drop(peer);
    wait_event(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, NodeEvent::Disconnected { peer, .. } if *peer == id),
    )
    .await;
    // Every request is answered or dropped by now (answers to a gone channel
    // are dropped, never dialed); give stragglers a moment. Then a lookup,
    // which asks the peer where the table has it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    dht.find_node(knotwork_dht_node::Key::from_peer_id(&id))
        .await
        .unwrap();
    // Only the peer's own IP was dialed, at the port it gave: that is
    // where the table has it.
    let seen: PeerAddr = "tcp/127.0.0.1:9".parse().unwrap();
    let dialed = dials.0.lock().unwrap().clone();
    assert_eq!(dialed, vec![seen.clone()]);
    let table = dht.table().await.unwrap();
    let entry = table
        .iter()
        .find(|p| p.peer_id == id)
        .expect("in the table");
    assert_eq!(entry.addrs, vec![seen]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h4_a_peer_far_over_the_dht_budget_is_banned() {
    let (builder, _dht) = dht_node(Config::default());
    let node = builder.start().await.unwrap();
    let mut events = node.events();
    let listen = ["tcp/127.0.0.1:1".parse().unwrap()];
    let mut peer = DhtPeer::connect(&addr(&node), &listen, None).await;
    // 1000 announcements at once: within the node-wide default budget
    // (bursts of 2000), five times the DHT's. The node may ban and close
    // before the last of them is written (a broken pipe here), so the
    // flood stops at the first write error.
    for n in 0..1000u32 {
        let body = Request::AddProvider {
            key: n.to_be_bytes().to_vec(),
            addrs: vec![],
        };
        let frame = Frame::message(
            DhtMessage::ID,
            encode(&request(u64::from(n), false, body)).unwrap(),
        );
        if peer.framed.feed(frame).await.is_err() {
            break;
        }
    }
    let _ = peer.framed.flush().await;
    let id = peer.id();
    wait_event(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, NodeEvent::Banned { peer } if *peer == id),
    )
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_inbound_peers_count_against_the_subnet_they_connect_from() {
    let (builder, dht) = dht_node(Config::default());
    let node = builder.start().await.unwrap();
    let mut peers = Vec::new();
    for n in 0..20u8 {
        // Each claims a /24 of its own; all connect from 127.0.0.1.
        let claimed: PeerAddr = format!("tcp/10.{n}.0.1:4000").parse().unwrap();
        let mut peer = DhtPeer::connect(&addr(&node), &[claimed], None).await;
        peer.send(&request(1, false, Request::FindNode { target: [n; 32] }))
            .await;
        let _ = peer.recv().await;
        peers.push(peer);
    }
    let table = dht.table().await.unwrap();
    let (per_bucket, per_table) = Config::default().subnet_limits.unwrap();
    assert!(
        !table.is_empty() && table.len() <= per_table,
        "{}",
        table.len()
    );
    assert!(per_bucket < per_table);
    let seen: PeerAddr = "tcp/127.0.0.1:4000".parse().unwrap();
    assert!(
        table.iter().all(|p| p.addrs == vec![seen.clone()]),
        "{table:?}"
    );
    drop(peers);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_a_dht_dial_that_reaches_another_peer_leaves_no_channel() {
    let dht_config = Config {
        request_timeout: Duration::from_secs(1),
        query_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    let (builder, dht) = dht_node(dht_config);
    let node = builder.start().await.unwrap();
    let other = start(tcp_node()).await;
    let mut lister =
        DhtPeer::connect(&addr(&node), &["tcp/127.0.0.1:1".parse().unwrap()], None).await;
    // The lookup asks the table's peers: wait until the lister is one (the
    // DHT adds it when its channel opens, a moment after the handshake).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !dht
        .table()
        .await
        .unwrap()
        .iter()
        .any(|p| p.peer_id == lister.id())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lister never joined the table"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lookup = tokio::spawn({
        let dht = dht.clone();
        async move { dht.find_node(knotwork_dht_node::Key::hash(b"x")).await }
    });
    // The lister answers: a made-up peer, at the other node's address.
    let DhtMessage::Request { id, .. } = lister.recv().await else {
        panic!("expected a request");
    };
    let made_up = WirePeer {
        id: *Keypair::generate().unwrap().peer_id().as_bytes(),
        addrs: vec![WireAddr::from_peer_addr(&addr(&other)).unwrap()],
    };
    let nodes = DhtMessage::Response {
        id,
        body: Response::Nodes {
            closer: vec![made_up],
        },
    };
    lister.send(&nodes).await;
    lookup.await.unwrap().unwrap();
    // The dial reached the other node, which is not the peer asked for:
    // no channel is left between them, and no outbound slot is taken.
    eventually(
        Duration::from_secs(3),
        "no channel to the other node",
        || node.channel(&other.peer_id()).is_none() && other.channel(&node.peer_id()).is_none(),
    )
    .await;
    assert!(
        node.peers().iter().all(|p| p.peer_id == lister.id()),
        "{:?}",
        node.peers()
    );
    node.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h6_a_peer_that_never_reads_costs_a_bounded_queue_not_a_task_per_message() {
    let (builder, _dht) = dht_node(Config::default());
    // The budget stands in for the many channels an attacker could open.
    let node = builder
        .budget::<DhtMessage>(RateBudget::UNLIMITED)
        .start()
        .await
        .unwrap();
    let runtime = tokio::runtime::Handle::current().metrics();
    let listen = ["tcp/127.0.0.1:1".parse().unwrap()];
    let mut peer = DhtPeer::connect(&addr(&node), &listen, Some(4096)).await;
    let before = runtime.num_alive_tasks();
    // One 8 KiB record, then 2000 requests for it, each answered with it.
    let limits = RecordLimits::default();
    let record = Record::sign(
        &peer.keypair,
        b"big".to_vec(),
        vec![7; 8 * 1024],
        in_an_hour(),
        &limits,
    )
    .unwrap();
    peer.feed(&request(
        0,
        false,
        Request::PutValue {
            record: record.to_wire(),
        },
    ))
    .await;
    for n in 1..=2000 {
        peer.feed(&request(
            n,
            false,
            Request::GetValue {
                key: b"big".to_vec(),
            },
        ))
        .await;
    }
    peer.framed.flush().await.unwrap();
    // Until the node gives up on the peer (it answers no ping either).
    let (mut tasks, mut queued) = (0, 0);
    let start = tokio::time::Instant::now();
    while node.channel(&peer.id()).is_some() {
        assert!(start.elapsed() < Duration::from_secs(15), "never closed");
        tasks = tasks.max(runtime.num_alive_tasks());
        queued = queued.max(metric(&node, "knot_dht_queued_messages"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(tasks < before + 20, "{tasks} tasks alive, {before} before");
    assert!(queued <= 16, "{queued} queued");
    let dropped = metric(
        &node,
        "knot_dht_dropped_messages_total{reason=\"queue_full\"}",
    );
    assert!(dropped > 0, "nothing dropped");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m8_flooding_channels_do_not_hold_up_another() {
    let (builder, _dht) = dht_node(Config::default());
    let node = builder
        .budget::<DhtMessage>(RateBudget::UNLIMITED)
        .start()
        .await
        .unwrap();
    let listen = ["tcp/127.0.0.1:1".parse().unwrap()];
    let mut honest = DhtPeer::connect(&addr(&node), &listen, None).await;
    // Four channels send 1000 records each, by as many publishers: a
    // signature check each, more than the driver keeps up with.
    let limits = RecordLimits::default();
    let expires = in_an_hour();
    let mut floods = Vec::new();
    for f in 0..4u64 {
        let mut flooder = DhtPeer::connect(&addr(&node), &listen, None).await;
        let puts: Vec<DhtMessage> = (0..1000u64)
            .map(|n| {
                let kp = Keypair::generate().unwrap();
                let key = (f * 1000 + n).to_be_bytes().to_vec();
                let r = Record::sign(&kp, key, vec![1], expires, &limits);
                request(
                    n,
                    false,
                    Request::PutValue {
                        record: r.unwrap().to_wire(),
                    },
                )
            })
            .collect();
        floods.push(async move {
            for m in &puts {
                flooder.feed(m).await;
            }
            flooder.framed.flush().await.unwrap();
            flooder
        });
    }
    let floods = tokio::spawn(futures::future::join_all(
        floods.into_iter().map(tokio::spawn),
    ));
    // Once the node is busy with the floods, the honest peer asks.
    eventually(Duration::from_secs(10), "the floods under way", || {
        metric(&node, "knot_dht_records") >= 200
    })
    .await;
    let asked = metric(&node, "knot_dht_records");
    honest.send(&request(1, false, Request::Ping)).await;
    let pong = honest.recv().await;
    let answered = metric(&node, "knot_dht_records");
    assert!(matches!(
        pong,
        DhtMessage::Response {
            id: 1,
            body: Response::Pong
        }
    ));
    // A shared queue answers only after the floods' backlog; a fair one
    // after a few messages of each.
    assert!(
        answered - asked < 300,
        "{} records stored in between",
        answered - asked
    );
    drop(floods.await.unwrap());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m11_peers_that_leave_the_table_as_clients_leave_discovery_too() {
    let dht_config = Config {
        // Every peer connects from 127.0.0.1.
        subnet_limits: None,
        ..Config::default()
    };
    let (builder, dht) = dht_node(dht_config);
    let node = builder.discovery(dht.clone()).start().await.unwrap();
    let mut added = node.discovery_events();
    for n in 0..200u16 {
        let listen = [format!("tcp/127.0.0.1:{}", 20_000 + n).parse().unwrap()];
        let mut peer = DhtPeer::connect(&addr(&node), &listen, None).await;
        // In the table (and so in discovery) once its channel is up; then
        // a request as a client takes it out.
        let id = peer.id();
        wait_event(&mut added, Duration::from_secs(5), |e| {
            matches!(e, knotwork_node::UnifiedEvent::PeerDiscovered { peer, .. } if *peer == id)
        })
        .await;
        peer.send(&request(1, true, Request::Ping)).await;
        let _ = peer.recv().await;
    }
    eventually(Duration::from_secs(5), "discovery forgets them", || {
        node.discovered_peers().is_empty()
    })
    .await;
    assert!(dht.table().await.unwrap().is_empty());
    node.shutdown().await;
}
