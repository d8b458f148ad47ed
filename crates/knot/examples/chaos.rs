//! The node processes of `cargo xtask chaos`: one binary, four roles, each
//! printing one JSON object per line on stdout for the xtask to parse (logs
//! go to stderr, filtered by `RUST_LOG`).
//!
//! ```text
//! chaos worker    --listen ADDR [--seed ADDR].. [--identity FILE] [--keys K] [--work-ms MS]
//! chaos submitter --seed ADDR.. --workers W --tasks N [--rate R] [--keys K] [--min-secs S]
//! chaos good      --target ADDR --secs S
//! chaos attacker  --target ADDR --attack KIND --secs S
//! ```
//!
//! - **worker**: a node with the DHT (as its discovery source), the apps and
//!   the `chaos` task (FNV-1a of the payload after `--work-ms`, default 20,
//!   of simulated work).
//!   Prints `started`, then `status` every second (peers, DHT table size,
//!   how many of the submitter's `chaos/key/<i>` records it holds) and one
//!   line per `connected`/`disconnected`/`banned` event. Runs until killed.
//! - **submitter**: waits for W task peers, puts K DHT records, submits N
//!   tasks (all at once, or R per second), and counts every result by task
//!   id and checks it. Prints `ready`, `put`, `progress` every 500 ms (done,
//!   retried, peers, DHT table size) and events; once every task has a
//!   result and at least S seconds have passed, reads the K records back
//!   and prints `summary` (unique, duplicates, wrong, failed, retried, ping
//!   RTT p50/max, DHT puts/gets that succeeded).
//! - **good**: a well-behaved peer of the target: every 200 ms a ping
//!   request (its RTT), tasks placed on the target, 8 in flight, and every
//!   second a fresh session (can a new peer join?); prints `sample` every
//!   500 ms (RTTs, tasks done, joins, whether the channel is open).
//! - **attacker**: one attack for S seconds, then `attack` with its counts.
//!   Kinds: `conn-flood` (handshakes from one IP, held open, past the
//!   limits), `slowloris` (TCP connections that send a handshake byte a
//!   second), `oversized` (gossip frames past their `MAX_BYTES`), `garbage`
//!   (random bytes after a valid handshake and version exchange),
//!   `unknown` (a message id the target does not know), `dht-flood`
//!   (FIND_NODE requests as fast as the channel takes them), `gossip-flood`
//!   (gossip messages from one origin as fast as possible). The attacks
//!   that need a channel use a fresh identity per connection, since the
//!   target bans each one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use knotwork_core::{Keypair, PeerAddr, PeerId};
use knotwork_dht_node::{self as dht, DhtHandle, DhtMessage};
use knotwork_gossip::{Gossip, GossipConfig, GossipMessage};
use knotwork_node::protocol::ping::Ping;
use knotwork_node::{
    Disconnect, DiscoveryConfig, Node, NodeBuilder, NodeConfig, NodeEvent, Version,
};
use knotwork_tasks::resource::ResourceConfig;
use knotwork_tasks::task::{Placement, Task, TaskId, TaskOutcome};
use knotwork_tasks::{Tasks, TasksConfig, TasksService};
use knotwork_wire::{Frame, FrameCodec, Message};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The task kind every worker runs.
const KIND: &str = "chaos";
/// Payload bytes of one task.
const PAYLOAD: usize = 4096;

/// Prints one JSON line (stdout is line-buffered only on a terminal).
fn emit(value: Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// `--name value` pairs; repeated names keep every value.
struct Args(HashMap<String, Vec<String>>);

impl Args {
    fn parse(words: impl Iterator<Item = String>) -> Res<Self> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        let mut words = words.peekable();
        while let Some(name) = words.next() {
            let name = name
                .strip_prefix("--")
                .ok_or(format!("expected --option, got `{name}`"))?
                .to_owned();
            let value = words.next().ok_or(format!("--{name} needs a value"))?;
            map.entry(name).or_default().push(value);
        }
        Ok(Self(map))
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.get(name).cloned().unwrap_or_default()
    }

    fn one(&self, name: &str) -> Res<String> {
        self.all(name)
            .pop()
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn num(&self, name: &str, default: u64) -> Res<u64> {
        match self.all(name).pop() {
            Some(text) => Ok(text.parse()?),
            None => Ok(default),
        }
    }

    fn addrs(&self, name: &str) -> Res<Vec<PeerAddr>> {
        Ok(self
            .all(name)
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?)
    }
}

fn fnv(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
        .to_le_bytes()
        .to_vec()
}

fn payload(i: u64) -> Vec<u8> {
    (0..(PAYLOAD / 8) as u64)
        .flat_map(|w| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w).to_le_bytes())
        .collect()
}

fn record_key(i: u64) -> Vec<u8> {
    format!("chaos/key/{i}").into_bytes()
}

fn record_value(i: u64) -> Vec<u8> {
    format!("chaos value {i}").into_bytes()
}

/// Settings shared by workers and submitters: fast pings (a dead link is
/// noticed in ~4 s), fast maintenance, resource reports every second.
fn node_config() -> (NodeConfig, TasksConfig) {
    let mut config = NodeConfig::default();
    config.ping.interval = Duration::from_secs(1);
    config.ping.timeout = Duration::from_secs(4);
    config.maintenance_interval = Duration::from_millis(500);
    config.backoff.max = Duration::from_secs(4);
    let mut resources = ResourceConfig::default();
    resources.interval = Duration::from_secs(1);
    let mut apps = TasksConfig::default();
    apps.resources = resources;
    (config, apps)
}

/// A running node, its task protocols and gossip.
#[derive(Clone)]
struct App {
    node: Node,
    apps: TasksService,
    gossip: Gossip,
}

impl std::ops::Deref for App {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl App {
    fn tasks(&self) -> &Tasks {
        self.apps.tasks()
    }

    fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// Starts `builder`, with the task protocols and gossip (as every
    /// `knot run` node has them) if `with`.
    async fn start(
        builder: NodeBuilder,
        keypair: &Keypair,
        config: TasksConfig,
        with: bool,
    ) -> Res<Self> {
        let apps = TasksService::new(config);
        let gossip = Gossip::new(keypair.clone(), GossipConfig::default());
        let builder = if with {
            builder.service(apps.clone()).service(gossip.clone())
        } else {
            builder
        };
        Ok(Self {
            node: builder.start().await?,
            apps,
            gossip,
        })
    }
}

/// A node with the DHT as discovery source and the apps; `listen` may be empty.
async fn dht_node(
    keypair: Keypair,
    listen: Vec<PeerAddr>,
    seeds: Vec<PeerAddr>,
) -> Res<(App, DhtHandle)> {
    let (config, app_config) = node_config();
    // Every chaos host sits in one /24.
    let dht = DhtHandle::new(
        keypair.clone(),
        dht::Config {
            subnet_limits: None,
            ..Default::default()
        },
    );
    let mut discovery = DiscoveryConfig::default();
    discovery.poll_interval = Duration::from_millis(500);
    let mut builder = Node::builder(keypair.clone())
        .config(config)
        .service(dht.clone())
        .discovery(dht.clone())
        .discovery_config(discovery);
    for addr in listen {
        builder = builder.listen(addr);
    }
    for addr in seeds {
        builder = builder.seed(addr);
    }
    Ok((App::start(builder, &keypair, app_config, true).await?, dht))
}

/// Prints the node's peer events as they happen.
fn print_events(node: &Node) {
    let mut events = node.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let line = match event {
                NodeEvent::Connected { peer, addr, .. } => {
                    json!({"event": "connected", "peer": peer.to_string(), "addr": addr.to_string()})
                }
                NodeEvent::Disconnected { peer, reason } => {
                    json!({"event": "disconnected", "peer": peer.to_string(), "reason": reason.to_string()})
                }
                NodeEvent::Banned { peer } => json!({"event": "banned", "peer": peer.to_string()}),
                _ => continue,
            };
            emit(line);
        }
    });
}

async fn table_len(dht: &DhtHandle) -> usize {
    dht.table().await.map(|t| t.len()).unwrap_or(0)
}

async fn worker(args: &Args) -> Res<()> {
    let keypair = match args.all("identity").pop() {
        Some(path) => Keypair::load_or_generate(path)?,
        None => Keypair::generate()?,
    };
    let (node, dht) = dht_node(keypair, args.addrs("listen")?, args.addrs("seed")?).await?;
    let work = Duration::from_millis(args.num("work-ms", 20)?);
    node.tasks()
        .register(KIND, move |input: Vec<u8>| async move {
            tokio::time::sleep(work).await;
            Ok(fnv(&input))
        });
    print_events(&node);
    emit(json!({
        "event": "started",
        "peer": node.peer_id().to_string(),
        "listen": node.listen_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
    }));
    let keys = args.num("keys", 0)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut held = 0;
        for i in 0..keys {
            if matches!(dht.held_record(record_key(i)).await, Ok(Some(_))) {
                held += 1;
            }
        }
        emit(json!({
            "event": "status",
            "peers": node.peers().len(),
            "task_peers": node.tasks().peers().len(),
            "dht_table": table_len(&dht).await,
            "held": held,
        }));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn submitter(args: &Args) -> Res<()> {
    let began = Instant::now();
    let (node, dht) = dht_node(Keypair::generate()?, Vec::new(), args.addrs("seed")?).await?;
    print_events(&node);
    let want = usize::try_from(args.num("workers", 1)?)?;
    let tasks = args.num("tasks", 100)?;
    let rate = args.num("rate", 0)?;
    let keys = args.num("keys", 0)?;
    let min = Duration::from_secs(args.num("min-secs", 0)?);
    while node.tasks().peers().len() < want {
        if began.elapsed() > Duration::from_secs(90) {
            return Err(format!(
                "only {} of {want} task peers after 90 s",
                node.tasks().peers().len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    emit(json!({"event": "ready", "ms": began.elapsed().as_millis(), "peers": node.peers().len()}));
    let _ = dht.bootstrap().await;
    let mut put_ok = 0;
    let mut acks = Vec::new();
    for i in 0..keys {
        match dht.put(record_key(i), record_value(i)).await {
            Ok(n) if n > 0 => {
                put_ok += 1;
                acks.push(n);
            }
            Ok(_) => {}
            Err(e) => emit(json!({"event": "put_failed", "key": i, "error": e.to_string()})),
        }
    }
    emit(json!({"event": "put", "ok": put_ok, "keys": keys, "min_acks": acks.iter().min()}));

    let mut results = node.tasks().results();
    let submit = {
        let node = node.clone();
        tokio::spawn(async move {
            for i in 0..tasks {
                let task = Task::new(KIND, payload(i))
                    .with_id(TaskId(i))
                    .with_timeout(Duration::from_secs(60));
                if let Err(e) = node.tasks().submit(task, Placement::BestByResources) {
                    emit(json!({"event": "submit_failed", "task": i, "error": e.to_string()}));
                }
                if rate > 0 {
                    tokio::time::sleep(Duration::from_secs(1) / u32::try_from(rate).unwrap_or(1))
                        .await;
                }
            }
        })
    };
    let tasks_began = Instant::now();
    let mut count: HashMap<u64, u32> = HashMap::new();
    let (mut wrong, mut failed, mut attempts_max) = (0u64, 0u64, 0u32);
    let mut rtts = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        tokio::select! {
            r = results.recv() => {
                let Some(r) = r else { break };
                *count.entry(r.id.0).or_default() += 1;
                attempts_max = attempts_max.max(r.attempts);
                match r.outcome {
                    TaskOutcome::Done(out) if out == fnv(&payload(r.id.0)) => {}
                    TaskOutcome::Done(_) => wrong += 1,
                    other => {
                        failed += 1;
                        emit(json!({"event": "task_failed", "task": r.id.0, "outcome": format!("{other:?}")}));
                    }
                }
            }
            _ = tick.tick() => {
                let peers = node.peers();
                rtts.extend(peers.iter().filter_map(|p| p.rtt).map(|d| d.as_secs_f64() * 1e3));
                let (queued, in_flight, retried) = node.tasks().stats();
                emit(json!({
                    "event": "progress",
                    "secs": tasks_began.elapsed().as_secs_f64(),
                    "done": count.len(),
                    "queued": queued,
                    "in_flight": in_flight,
                    "retried": retried,
                    "peers": peers.len(),
                    "dht_table": table_len(&dht).await,
                }));
                if count.len() as u64 >= tasks && tasks_began.elapsed() >= min {
                    break;
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    submit.abort();
    // Anything arriving now would be a second delivery.
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(1), results.recv()).await {
        *count.entry(r.id.0).or_default() += 1;
    }
    let mut get_ok = 0;
    for i in 0..keys {
        if let Ok(Some(record)) = dht.get(record_key(i)).await
            && record.value == record_value(i)
        {
            get_ok += 1;
        }
    }
    rtts.sort_by(f64::total_cmp);
    let duplicates: u64 = count.values().map(|n| u64::from(n.saturating_sub(1))).sum();
    emit(json!({
        "event": "summary",
        "tasks": tasks,
        "unique": count.len(),
        "duplicates": duplicates,
        "wrong": wrong,
        "failed": failed,
        "retried": node.tasks().stats().2,
        "attempts_max": attempts_max,
        "rtt_ms_p50": percentile(&rtts, 0.5),
        "rtt_ms_max": rtts.last().copied().unwrap_or(0.0),
        "dht_put_ok": put_ok,
        "dht_get_ok": get_ok,
        "keys": keys,
        "task_secs": tasks_began.elapsed().as_secs_f64(),
    }));
    node.shutdown().await;
    Ok(())
}

/// A node without listeners or apps beyond what `apps` says.
async fn plain_node(with: bool) -> Res<App> {
    let (config, app_config) = node_config();
    let keypair = Keypair::generate()?;
    let builder = Node::builder(keypair.clone()).config(config);
    App::start(builder, &keypair, app_config, with).await
}

async fn good(args: &Args) -> Res<()> {
    let target: PeerAddr = args.one("target")?.parse()?;
    let secs = Duration::from_secs(args.num("secs", 30)?);
    let node = plain_node(true).await?;
    print_events(&node);
    let channel = node.connect(&target).await?;
    let target_id = channel.remote_peer_id();
    while !node.tasks().peers().contains(&target_id) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    emit(json!({"event": "ready", "target": target_id.to_string()}));
    let mut results = node.tasks().results();
    let mut next_id = 0u64;
    let submit = |id: u64| {
        let task = Task::new(KIND, payload(id))
            .with_id(TaskId(id))
            .with_timeout(Duration::from_secs(30));
        node.tasks().submit(task, Placement::Peers(vec![target_id]))
    };
    for _ in 0..8 {
        submit(next_id)?;
        next_id += 1;
    }
    let began = Instant::now();
    let mut ping = tokio::time::interval(Duration::from_millis(200));
    let mut report = tokio::time::interval(Duration::from_millis(500));
    let (mut done, mut bad) = (0u64, 0u64);
    let mut rtts: Vec<f64> = Vec::new();
    let mut ping_failures = 0u64;
    // Once a second, a fresh session by hand (handshake and version
    // exchange, then closed): can a new peer still get in?
    let PeerAddr::Tcp(sock) = target.clone() else {
        return Err("--target must be a tcp address".into());
    };
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::channel::<bool>(8);
    let prober = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let ok = tokio::time::timeout(Duration::from_secs(5), raw_session(sock))
                .await
                .is_ok_and(|r| r.is_ok());
            if probe_tx.send(ok).await.is_err() {
                return;
            }
        }
    });
    let (mut joins_ok, mut joins_failed) = (0u64, 0u64);
    while began.elapsed() < secs {
        tokio::select! {
            r = results.recv() => {
                let Some(r) = r else { break };
                match r.outcome {
                    TaskOutcome::Done(out) if out == fnv(&payload(r.id.0)) => done += 1,
                    _ => bad += 1,
                }
                submit(next_id)?;
                next_id += 1;
            }
            _ = ping.tick() => {
                let t = Instant::now();
                match channel.call(&Ping { nonce: fastrand::u64(..) }).await {
                    Ok(_) => rtts.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(_) => ping_failures += 1,
                }
            }
            Some(ok) = probe_rx.recv() => {
                if ok { joins_ok += 1 } else { joins_failed += 1 }
            }
            _ = report.tick() => {
                emit(json!({
                    "joins_ok": std::mem::take(&mut joins_ok),
                    "joins_failed": std::mem::take(&mut joins_failed),
                    "event": "sample",
                    "secs": began.elapsed().as_secs_f64(),
                    "rtts_ms": std::mem::take(&mut rtts),
                    "tasks_done": std::mem::take(&mut done),
                    "tasks_bad": std::mem::take(&mut bad),
                    "ping_failures": std::mem::take(&mut ping_failures),
                    "open": !channel.is_closed(),
                }));
            }
        }
    }
    prober.abort();
    node.shutdown().await;
    Ok(())
}

/// What one attack did, for its `attack` line.
#[derive(Default)]
struct Tally {
    attempts: u64,
    /// Connections or channels the target ended (closed, refused, banned).
    cut: u64,
    /// Why, as the attacker saw it.
    reasons: HashMap<String, u64>,
    /// Messages or bytes sent.
    sent: u64,
}

impl Tally {
    fn cut(&mut self, reason: impl Into<String>) {
        self.cut += 1;
        *self.reasons.entry(reason.into()).or_default() += 1;
    }
}

/// Noise handshake and version exchange by hand, as a node would, with a
/// fresh identity; returns the framed stream or why the target refused.
async fn raw_session(
    target: SocketAddr,
) -> Result<Framed<knotwork_crypto_handshake::SecureStream<TcpStream>, FrameCodec>, String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let keypair = Keypair::generate().map_err(|e| e.to_string())?;
    let secure = knotwork_crypto_handshake::upgrade_outbound(tcp, &keypair, None)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut framed = Framed::new(secure, FrameCodec::new());
    let observed = PeerAddr::Tcp(target);
    let version = Version::new(&[], &[], &observed);
    let payload = knotwork_wire::encode(&version).map_err(|e| e.to_string())?;
    framed
        .send(Frame::message(Version::ID, payload))
        .await
        .map_err(|e| format!("send version: {e}"))?;
    match framed.next().await {
        Some(Ok(f)) if f.msg_id == Version::ID => Ok(framed),
        Some(Ok(f)) if f.msg_id == Disconnect::ID => {
            let reason = knotwork_wire::decode::<Disconnect>(&f.payload)
                .map(|d| d.reason.to_string())
                .unwrap_or_else(|_| "malformed disconnect".into());
            Err(format!("refused: {reason}"))
        }
        Some(Ok(f)) => Err(format!("unexpected frame {:#x}", f.msg_id)),
        Some(Err(e)) => Err(format!("version: {e}")),
        None => Err("closed during version exchange".into()),
    }
}

/// Holds authenticated sessions open from one IP, several at a time, until
/// the time is up.
async fn conn_flood(target: SocketAddr, until: Instant, tally: &mut Tally) {
    let mut held = Vec::new();
    while Instant::now() < until {
        let mut batch = Vec::new();
        for _ in 0..16 {
            batch.push(tokio::spawn(raw_session(target)));
        }
        for job in batch {
            tally.attempts += 1;
            match job.await {
                Ok(Ok(framed)) => held.push(framed),
                Ok(Err(reason)) => tally.cut(reason),
                Err(e) => tally.cut(format!("join: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tally.sent = held.len() as u64;
}

/// TCP connections that dribble one handshake byte a second; each is
/// counted as cut when the target closes it.
async fn slowloris(target: SocketAddr, until: Instant, tally: &mut Tally) {
    let mut jobs = tokio::task::JoinSet::new();
    while Instant::now() < until {
        for _ in 0..20 {
            tally.attempts += 1;
            jobs.spawn(async move {
                let Ok(mut tcp) = TcpStream::connect(target).await else {
                    return Some("connect failed".to_owned());
                };
                let opened = Instant::now();
                let mut buf = [0u8; 64];
                while Instant::now() < until {
                    if tcp.write_all(&[0]).await.is_err() {
                        return Some(format!(
                            "write failed after {:.0} s",
                            opened.elapsed().as_secs_f64()
                        ));
                    }
                    match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            return Some(format!(
                                "closed after {:.0} s",
                                opened.elapsed().as_secs_f64()
                            ));
                        }
                        _ => {}
                    }
                }
                None
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    while let Some(result) = jobs.join_next().await {
        if let Ok(Some(reason)) = result {
            tally.cut(reason);
        }
    }
}

/// A session by hand, then random bytes through the encrypted stream.
async fn garbage(target: SocketAddr, until: Instant, tally: &mut Tally) {
    while Instant::now() < until {
        tally.attempts += 1;
        let framed = match raw_session(target).await {
            Ok(f) => f,
            Err(reason) => {
                tally.cut(reason);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut secure = framed.into_inner();
        let junk: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        let wrote = secure.write_all(&junk).await.and(secure.flush().await);
        tally.sent += junk.len() as u64;
        let mut buf = [0u8; 1024];
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match secure.read(&mut buf).await {
                    Ok(0) => return "closed".to_owned(),
                    Err(e) => return format!("closed: {}", e.kind()),
                    Ok(_) => {}
                }
            }
        })
        .await;
        match (wrote, end) {
            (_, Ok(reason)) => tally.cut(reason),
            (Err(e), Err(_)) => tally.cut(format!("write failed: {}", e.kind())),
            (Ok(()), Err(_)) => {}
        }
    }
}

/// A message id no knotwork node subscribes to.
#[derive(Serialize, Deserialize)]
struct Unknown(Vec<u8>);
impl Message for Unknown {
    const NAME: &'static str = "chaos/unknown/1";
    const MAX_BYTES: usize = 300; // length varint + up to 256 bytes
}

/// Gossip's message id with a payload far past `GossipMessage::MAX_BYTES`.
#[derive(Serialize, Deserialize)]
struct Oversized(Vec<u8>);
impl Message for Oversized {
    const NAME: &'static str = GossipMessage::NAME;
    const MAX_BYTES: usize = 1 << 20; // anything: the sender does not limit itself
}

/// One channel per fresh identity; `flood` sends on it until the target
/// closes it or the time is up.
async fn per_identity<F, Fut>(
    target: &PeerAddr,
    apps: bool,
    until: Instant,
    tally: &mut Tally,
    flood: F,
) where
    F: Fn(App, knotwork_node::Channel) -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    while Instant::now() < until {
        tally.attempts += 1;
        let node = match plain_node(apps).await {
            Ok(n) => n,
            Err(e) => {
                tally.cut(format!("node: {e}"));
                continue;
            }
        };
        match node.connect(target).await {
            Ok(channel) => {
                tally.sent += flood(node.clone(), channel.clone()).await;
                let closed = tokio::time::timeout(Duration::from_secs(3), channel.closed()).await;
                if let Ok(reason) = closed {
                    tally.cut(reason.to_string());
                }
            }
            Err(e) => {
                tally.cut(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        node.shutdown().await;
    }
}

/// Sends `make()` messages on `channel` until it closes or `until`.
async fn send_until<M: Message>(
    channel: &knotwork_node::Channel,
    until: Instant,
    mut make: impl FnMut() -> M,
) -> u64 {
    let mut sent = 0;
    while Instant::now() < until && !channel.is_closed() {
        if channel.send(&make()).await.is_err() {
            break;
        }
        sent += 1;
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    sent
}

async fn attacker(args: &Args) -> Res<()> {
    let target: PeerAddr = args.one("target")?.parse()?;
    let PeerAddr::Tcp(sock) = target.clone() else {
        return Err("--target must be a tcp address".into());
    };
    let kind = args.one("attack")?;
    let until = Instant::now() + Duration::from_secs(args.num("secs", 10)?);
    let mut tally = Tally::default();
    match kind.as_str() {
        "conn-flood" => conn_flood(sock, until, &mut tally).await,
        "slowloris" => slowloris(sock, until, &mut tally).await,
        "garbage" => garbage(sock, until, &mut tally).await,
        "unknown" => {
            per_identity(&target, false, until, &mut tally, |_, ch| async move {
                send_until(&ch, until, || Unknown(vec![7; 256])).await
            })
            .await
        }
        "oversized" => {
            per_identity(&target, false, until, &mut tally, |_, ch| async move {
                send_until(&ch, until, || Oversized(vec![7; 64 * 1024])).await
            })
            .await
        }
        "dht-flood" => {
            per_identity(&target, false, until, &mut tally, |_, ch| async move {
                // Answers are read and dropped, so the attacker's own node
                // does not count them as unknown messages.
                let mut answers = ch.subscribe::<DhtMessage>();
                tokio::spawn(async move { while answers.recv().await.is_some() {} });
                let mut id = 0u64;
                send_until(&ch, until, || {
                    id += 1;
                    let mut target = [0u8; 32];
                    fastrand::fill(&mut target);
                    DhtMessage::Request {
                        id,
                        client: true,
                        body: knotwork_dht_node::Request::FindNode { target },
                    }
                })
                .await
            })
            .await
        }
        "gossip-flood" => {
            per_identity(&target, true, until, &mut tally, |node, ch| async move {
                let peer: PeerId = ch.remote_peer_id();
                while !node.gossip().peers().contains(&peer) && !ch.is_closed() {
                    if Instant::now() >= until {
                        return 0;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut sent = 0;
                while Instant::now() < until && !ch.is_closed() {
                    if node.gossip().publish("flood", vec![1; 64]).await.is_err() {
                        break;
                    }
                    sent += 1;
                    if sent % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                sent
            })
            .await
        }
        other => return Err(format!("unknown attack `{other}`").into()),
    }
    emit(json!({
        "event": "attack",
        "kind": kind,
        "attempts": tally.attempts,
        "cut": tally.cut,
        "sent": tally.sent,
        "reasons": tally.reasons,
    }));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut words = std::env::args().skip(1);
    let role = words.next().unwrap_or_default();
    let result = match Args::parse(words) {
        Err(e) => Err(e),
        Ok(args) => match role.as_str() {
            "worker" => worker(&args).await,
            "submitter" => submitter(&args).await,
            "good" => good(&args).await,
            "attacker" => attacker(&args).await,
            other => {
                Err(format!("unknown role `{other}` (worker, submitter, good, attacker)").into())
            }
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            emit(json!({"event": "error", "error": e.to_string()}));
            std::process::ExitCode::FAILURE
        }
    }
}
