//! The task, resource and health protocols over real nodes: tasks across 5
//! TCP nodes with a worker stopped mid-run, a task on a channel replaced by
//! a duplicate, resource reports and their age, health when a listener
//! closes, metrics scraped over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use futures::SinkExt;
use knotwork_core::{Keypair, Listener, MemoryTransport, PeerAddr, Transport, TransportError};
use knotwork_node::{CloseReason, DisconnectReason, Node, NodeBuilder, NodeEvent};
use knotwork_tasks::health::HealthLevel;
use knotwork_tasks::task::{Placement, Task, TaskId, TaskOutcome};
use knotwork_tasks::{HealthConfig, ResourceConfig, TasksConfig, TasksService};
use knotwork_wire::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

const LONG: Duration = Duration::from_secs(20);

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A started node with the task protocols, and their handles.
struct AppNode {
    node: Node,
    apps: TasksService,
}

impl std::ops::Deref for AppNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl AppNode {
    async fn start(builder: NodeBuilder, config: TasksConfig) -> Self {
        let apps = TasksService::new(config);
        let node = builder.service(apps.clone()).start().await.unwrap();
        Self { node, apps }
    }

    fn tasks(&self) -> &knotwork_tasks::Tasks {
        self.apps.tasks()
    }

    fn resources(&self) -> &knotwork_tasks::Resources {
        self.apps.resources()
    }

    fn health(&self) -> &knotwork_tasks::Health {
        self.apps.health()
    }
}

async fn apps_node() -> AppNode {
    AppNode::start(tcp_node(), TasksConfig::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tasks_on_five_tcp_nodes_survive_a_stopped_worker() {
    let submitter = apps_node().await;
    let mut workers = Vec::new();
    for i in 0..4 {
        let w = apps_node().await;
        if i == 0 {
            // The victim takes tasks and never finishes them: whatever it
            // holds when stopped must be placed again.
            w.tasks().register("hash", |_| {
                std::future::pending::<Result<Vec<u8>, String>>()
            });
        } else {
            w.tasks().register("hash", |input: Vec<u8>| async move {
                Ok(fnv(&input).to_le_bytes().to_vec())
            });
        }
        submitter.connect(&addr(&w)).await.unwrap();
        workers.push(w);
    }
    let victim = workers[0].peer_id();
    eventually(LONG, "4 task peers", || {
        submitter.tasks().peers().len() == 4
    })
    .await;

    let mut results = submitter.tasks().results();
    let mut expected = HashMap::new();
    for i in 0..1000u64 {
        let payload: Vec<u8> = i.to_le_bytes().repeat(16);
        expected.insert(TaskId(i), fnv(&payload).to_le_bytes().to_vec());
        let task = Task::new("hash", payload).with_id(TaskId(i));
        submitter
            .tasks()
            .submit(task, Placement::BestByResources)
            .unwrap();
    }

    let mut got = HashMap::new();
    let mut workers_seen = HashSet::new();
    let mut stopped = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < 1000 {
        let r = tokio::time::timeout_at(deadline, results.recv())
            .await
            .expect("all results within 60 s")
            .unwrap();
        assert_eq!(
            r.outcome,
            TaskOutcome::Done(expected[&r.id].clone()),
            "task {:?}",
            r.id
        );
        let worker = r.worker.unwrap();
        assert_ne!(worker, victim);
        workers_seen.insert(worker);
        assert!(got.insert(r.id, r).is_none(), "a result delivered twice");
        if got.len() == 300 && !stopped {
            let (_, in_flight, _) = submitter.tasks().stats();
            assert!(in_flight >= 8, "the victim holds its share");
            workers[0].shutdown().await;
            stopped = true;
        }
    }
    let (queued, in_flight, retried) = submitter.tasks().stats();
    assert_eq!((queued, in_flight), (0, 0));
    assert!(
        retried >= 8,
        "the victim's tasks were placed again: {retried}"
    );
    assert_eq!(workers_seen.len(), 3);
    // Nothing more arrives: exactly one result per task.
    let extra = tokio::time::timeout(Duration::from_millis(300), results.recv()).await;
    assert!(extra.is_err(), "no result after the last: {extra:?}");
    for n in workers.iter().chain([&submitter]) {
        n.node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn resource_reports_arrive_and_age() {
    let net = MemoryTransport::new();
    let apps = {
        let mut c = TasksConfig::default();
        let mut r = ResourceConfig::default();
        r.interval = Duration::from_secs(30);
        c.resources = r;
        c
    };
    let a = AppNode::start(
        Node::builder(Keypair::generate().unwrap())
            .transport(net.clone())
            .listen("mem/0".parse().unwrap()),
        apps,
    )
    .await;
    let b = AppNode::start(
        Node::builder(Keypair::generate().unwrap()).transport(net),
        apps,
    )
    .await;
    b.connect(&a.listen_addrs()[0]).await.unwrap();
    eventually(LONG, "a's report at b", || {
        b.resources().get_peer_resources(&a.peer_id()).is_some()
    })
    .await;
    let first = b.resources().get_peer_resources(&a.peer_id()).unwrap();
    assert!(first.age < Duration::from_secs(1), "{:?}", first.age);
    assert_eq!(Some(first.report), a.resources().local());
    assert!(first.report.cores >= 1);

    tokio::time::sleep(Duration::from_secs(10)).await;
    let older = b.resources().get_peer_resources(&a.peer_id()).unwrap();
    assert!(
        older.age >= Duration::from_secs(10) && older.age < Duration::from_secs(11),
        "{:?}",
        older.age
    );
    // The next report (30 s after a started) replaces it.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let fresh = b.resources().get_peer_resources(&a.peer_id()).unwrap();
    assert!(fresh.age < Duration::from_secs(6), "{:?}", fresh.age);
    assert!(a.resources().get_peer_resources(&b.peer_id()).is_some());
    a.shutdown().await;
    b.shutdown().await;
}

/// A memory transport whose listeners the test can close.
#[derive(Clone)]
struct ClosableTransport {
    inner: MemoryTransport,
    close: watch::Sender<bool>,
}

struct ClosableListener {
    inner: <MemoryTransport as Transport>::Listener,
    closed: watch::Receiver<bool>,
    closable: bool,
}

#[async_trait]
impl Listener for ClosableListener {
    type Connection = DuplexStream;

    fn local_addr(&self) -> PeerAddr {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> Result<(DuplexStream, PeerAddr), TransportError> {
        if !self.closable {
            return self.inner.accept().await;
        }
        tokio::select! {
            r = self.inner.accept() => r,
            _ = self.closed.wait_for(|c| *c) => Err(TransportError::ListenerClosed),
        }
    }
}

#[async_trait]
impl Transport for ClosableTransport {
    type Connection = DuplexStream;
    type Listener = ClosableListener;

    async fn listen(&self, addr: &PeerAddr) -> Result<ClosableListener, TransportError> {
        Ok(ClosableListener {
            inner: self.inner.listen(addr).await?,
            closed: self.close.subscribe(),
            // Only the listener on mem/1 can be closed.
            closable: *addr == PeerAddr::Mem(1),
        })
    }

    async fn dial(&self, addr: &PeerAddr) -> Result<DuplexStream, TransportError> {
        self.inner.dial(addr).await
    }
}

#[tokio::test(start_paused = true)]
async fn health_turns_degraded_when_a_listener_closes_and_peers_can_ask() {
    let net = MemoryTransport::new();
    let (close, _) = watch::channel(false);
    let mut apps = TasksConfig::default();
    let mut health = HealthConfig::default();
    health.interval = Duration::from_secs(1);
    apps.health = health;
    let a = AppNode::start(
        Node::builder(Keypair::generate().unwrap())
            .transport(ClosableTransport {
                inner: net.clone(),
                close: close.clone(),
            })
            .listen(PeerAddr::Mem(1))
            .listen(PeerAddr::Mem(2)),
        apps,
    )
    .await;
    eventually(LONG, "a degraded for lack of peers only", || {
        a.health().check_now().reasons == vec!["0 peers, fewer than 1".to_owned()]
    })
    .await;
    let b = AppNode::start(
        Node::builder(Keypair::generate().unwrap()).transport(net),
        apps,
    )
    .await;
    b.connect(&PeerAddr::Mem(2)).await.unwrap();
    eventually(LONG, "a healthy", || {
        a.health().status().level == HealthLevel::Ok
    })
    .await;
    let remote = b.health().query(&a.peer_id()).await.unwrap();
    assert_eq!(remote.level, HealthLevel::Ok);

    close.send_replace(true);
    eventually(LONG, "a degraded", || {
        a.health().status().level == HealthLevel::Degraded
    })
    .await;
    let status = a.health().status();
    assert_eq!(status.reasons, vec!["1 of 2 listeners down".to_owned()]);
    let remote = b.health().query(&a.peer_id()).await.unwrap();
    assert_eq!(remote, status, "b sees the same verdict");
    a.shutdown().await;
    b.shutdown().await;
}

/// A subscriber learns a node's health change within one check interval,
/// pushed, without asking again.
#[tokio::test(start_paused = true)]
async fn a_health_change_reaches_subscribers_within_one_interval() {
    let net = MemoryTransport::new();
    let interval = Duration::from_secs(5);
    let mut apps = TasksConfig::default();
    let mut health = HealthConfig::default();
    health.interval = interval;
    health.min_peers = 2;
    apps.health = health;
    let b = AppNode::start(mem_node(&net).listen(PeerAddr::Mem(7201)), apps).await;
    let a = AppNode::start(mem_node(&net), apps).await;
    a.connect(&b.listen_addrs()[0]).await.unwrap();
    // The protocols attach together: the task peer means the health channel too.
    eventually(LONG, "the protocols on the channel", || {
        a.tasks().peers() == vec![b.peer_id()]
    })
    .await;
    let mut watch = a.health().watch(&b.peer_id()).await.unwrap();
    let first = tokio::time::timeout(LONG, watch.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(first.status.level, HealthLevel::Degraded, "{first:?}");
    assert_eq!(
        first.status.reasons,
        vec!["1 peers, fewer than 2".to_owned()]
    );

    // Past b's next check (which may push the same verdict again: it differs
    // from the last one pushed, found before a subscribed).
    // (Off the tick: b checks at 0, 5, 10 s.)
    tokio::time::sleep(interval + Duration::from_secs(1)).await;
    let before = watch.borrow().clone().unwrap();
    assert_eq!(before.status, first.status);

    // A second peer makes b healthy at its next check.
    let c = AppNode::start(mem_node(&net), apps).await;
    c.connect(&b.listen_addrs()[0]).await.unwrap();
    let changed = tokio::time::Instant::now();
    let update = tokio::time::timeout(
        interval * 2,
        watch.wait_for(|h| {
            h.as_ref()
                .is_some_and(|h| h.status.level == HealthLevel::Ok)
        }),
    )
    .await
    .expect("pushed")
    .unwrap()
    .clone()
    .unwrap();
    assert!(changed.elapsed() <= interval, "{:?}", changed.elapsed());
    assert_eq!(
        update.updates,
        before.updates + 1,
        "one push for the change"
    );
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_over_http() {
    let a = apps_node().await;
    let b = apps_node().await;
    b.tasks()
        .register("echo", |input: Vec<u8>| async move { Ok(input) });
    a.connect(&addr(&b)).await.unwrap();
    eventually(LONG, "task peer", || a.tasks().peers().len() == 1).await;
    let mut results = a.tasks().results();
    for i in 0..5 {
        let t = Task::new("echo", vec![i]).with_id(TaskId(u64::from(i)));
        a.tasks()
            .submit(t, Placement::Peers(vec![b.peer_id()]))
            .unwrap();
    }
    for _ in 0..5 {
        let r = tokio::time::timeout(LONG, results.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r.outcome, TaskOutcome::Done(_)));
    }
    // A ping round trip (every 100 ms here) lands in the RTT histogram.
    eventually(LONG, "an rtt", || a.peers().iter().any(|p| p.rtt.is_some())).await;
    // Bytes that are no handshake: an inbound handshake failure.
    let PeerAddr::Tcp(a_tcp) = addr(&a) else {
        panic!("tcp")
    };
    let mut junk = tokio::net::TcpStream::connect(a_tcp).await.unwrap();
    junk.write_all(&[0xff; 64]).await.unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest).await;
    // A peer sending types nobody registered: counted as `unknown`, free
    // within a budget (20 at once, for protocol upgrades), then banned.
    let mut events = a.events();
    let (mut rogue, _, _) = raw_peer(&addr(&a), Keypair::generate().unwrap()).await;
    for _ in 0..60 {
        if rogue
            .send(Frame::message(0xdead_beef, bytes::Bytes::new()))
            .await
            .is_err()
        {
            break;
        }
    }
    wait_event(&mut events, LONG, |e| matches!(e, NodeEvent::Banned { .. })).await;
    let response = a.metrics().encode();
    let value = |series: &str| -> f64 {
        response
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing in\n{response}"))
    };
    assert!(value("knot_connections_total{direction=\"outbound\",transport=\"tcp\"}") >= 1.0);
    assert!(value("knot_peers") >= 1.0);
    assert!(value("knot_handshakes_total{direction=\"outbound\",result=\"ok\"}") >= 1.0);
    assert!(value("knot_received_bytes_total") > 0.0);
    assert!(value("knot_sent_bytes_total") > 0.0);
    assert!(value("knot_received_frames_total") >= 5.0);
    assert_eq!(value("knot_tasks_total{event=\"submitted\"}"), 5.0);
    assert_eq!(value("knot_tasks_total{event=\"completed\"}"), 5.0);
    assert_eq!(value("knot_tasks_in_flight"), 0.0);
    // Per-type message rates, by the NAME of each registered type.
    let tasks_out = "knot_messages_total{direction=\"out\",type=\"knot/task/request/2\"}";
    assert_eq!(value(tasks_out), 5.0);
    let tasks_out_bytes =
        "knot_message_bytes_total{direction=\"out\",type=\"knot/task/request/2\"}";
    assert!(value(tasks_out_bytes) > 0.0);
    assert_eq!(
        value("knot_messages_total{direction=\"in\",type=\"knot/task/reply/1\"}"),
        5.0
    );
    assert!(value("knot_messages_total{direction=\"in\",type=\"knot/pong/1\"}") >= 1.0);
    assert!(value("knot_messages_total{direction=\"out\",type=\"knot/ping/1\"}") >= 1.0);
    assert!(value("knot_messages_total{direction=\"in\",type=\"unknown\"}") >= 10.0);
    assert!(
        value("knot_message_bytes_total{direction=\"in\",type=\"knot/resource/report/1\"}") > 0.0
    );
    assert!(value("knot_rtt_seconds_count") >= 1.0);
    assert!(value("knot_rtt_seconds_sum") > 0.0);
    assert!(value("knot_connections_total{direction=\"inbound\",transport=\"tcp\"}") >= 1.0);
    assert_eq!(
        value("knot_handshakes_total{direction=\"inbound\",result=\"noise\"}"),
        1.0
    );
    assert_eq!(value("knot_bans_total{reason=\"unknown_message\"}"), 1.0);
    a.shutdown().await;
    b.shutdown().await;
}

/// A task in flight on a channel that a duplicate replaces is placed again
/// at once, not after its 30 s timeout: the replaced channel's request job
/// is aborted when it closes and reports the attempt as failed.
#[tokio::test(start_paused = true)]
async fn a_task_on_a_channel_replaced_by_a_duplicate_is_placed_again_at_once() {
    let net = MemoryTransport::new();
    let node = |port| {
        AppNode::start(
            mem_node(&net).listen(PeerAddr::Mem(port)),
            TasksConfig::default(),
        )
    };
    let (x, y) = (node(7101).await, node(7102).await);
    // Both keep the channel dialed by the smaller PeerId: the larger dials
    // first, the smaller's dial then replaces that channel on both sides.
    let (small, large) = if x.peer_id() < y.peer_id() {
        (x, y)
    } else {
        (y, x)
    };
    // The worker's first run never answers; later ones do.
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    small.tasks().register("k", move |input: Vec<u8>| {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                std::future::pending::<()>().await;
            }
            Ok(input)
        }
    });
    let first = large.connect(&small.listen_addrs()[0]).await.unwrap();
    eventually(Duration::from_secs(2), "a task peer", || {
        large.tasks().peers() == vec![small.peer_id()]
    })
    .await;
    let mut results = large.tasks().results();
    let task = Task::new("k", b"in".to_vec()).with_id(TaskId(1));
    large
        .tasks()
        .submit(task, Placement::BestByResources)
        .unwrap();
    eventually(Duration::from_secs(2), "the task running on small", || {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;

    let second = small.connect(&large.listen_addrs()[0]).await.unwrap();
    // Closed here or by small first (then small's Disconnect says why).
    let closed = first.closed().await;
    assert!(
        matches!(
            closed,
            CloseReason::Local(DisconnectReason::Duplicate)
                | CloseReason::Remote(DisconnectReason::Duplicate)
        ),
        "{closed:?}"
    );
    let result = tokio::time::timeout(Duration::from_secs(5), results.recv())
        .await
        .expect("placed again before the task's 30 s timeout")
        .unwrap();
    assert_eq!(result.outcome, TaskOutcome::Done(b"in".to_vec()));
    assert_eq!(result.attempts, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(!second.is_closed());
    small.shutdown().await;
    large.shutdown().await;
}
