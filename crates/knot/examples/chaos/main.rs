//! The node processes of `cargo xtask chaos`: one binary, six roles, each
//! printing one JSON object per line on stdout for the xtask to parse (logs
//! go to stderr, filtered by `RUST_LOG`).
//!
//! ```text
//! chaos worker    --listen ADDR [--seed ADDR].. [--identity FILE] [--keys K] [--work-ms MS]
//! chaos target    --listen ADDR --relay ADDR [--gossip-seen-ms MS] [--dht-max-records N]
//! chaos relay     --listen ADDR
//! chaos submitter --seed ADDR.. --workers W --tasks N [--rate R] [--keys K] [--min-secs S]
//! chaos good      --target ADDR --secs S [--gossip-rate R]
//! chaos attacker  --target ADDR --attack KIND --secs S --sources CIDR [--source-count N]
//!                 [--sink IP] [--relayed ADDR] [--replay-after-ms MS]
//! ```
//!
//! - **worker**: a node with the DHT (as its discovery source), the apps and
//!   the `chaos` task (FNV-1a of the payload after `--work-ms`, default 20,
//!   of simulated work).
//!   Prints `started`, then `status` every second (peers, DHT table size,
//!   how many of the submitter's `chaos/key/<i>` records it holds, the
//!   node's and its channels' jobs, the runtime's live tasks and a few of
//!   the node's counters) and one line per `connected`/`disconnected`/
//!   `banned` event. Runs until killed.
//! - **target**: a worker composed as `knot run` composes a node (NAT
//!   traversal too, holding a reservation at `--relay`; the default ping
//!   settings), for the hostile scenario. Prints `relayed` with its relayed
//!   address once the relay granted the reservation, and subscribes to the
//!   `chaos` gossip topic: one `gossip` line per second of publish time
//!   (3 s after it ended) with the messages delivered from it and the
//!   slowest delivery; `status` also counts re-deliveries (a message
//!   delivered twice: a replay that got through).
//! - **relay**: a node that offers the relay service (and nothing else).
//! - **submitter**: waits for W task peers, puts K DHT records, submits N
//!   tasks (all at once, or R per second), and counts every result by task
//!   id and checks it. Prints `ready`, `put`, `progress` every 500 ms (done,
//!   retried, peers, DHT table size) and events; once every task has a
//!   result and at least S seconds have passed, reads the K records back
//!   and prints `summary` (unique, duplicates, wrong, failed, retried, ping
//!   RTT p50/max, DHT puts/gets that succeeded).
//! - **good**: a well-behaved peer of the target: every 200 ms a ping
//!   request (its RTT), every 500 ms a DHT ping through the target's DHT
//!   driver (its RTT), tasks placed on the target, 8 in flight, R gossip
//!   messages a second (default 25) on topic `chaos` carrying their publish
//!   time, and every 250 ms a fresh session from its own address (can a
//!   new peer join?); prints `sample` every 500 ms (RTTs, tasks done, joins,
//!   whether the channel is open) and `gossip` once per second published in.
//!   A lost channel is dialed again (`reconnected`), so measuring goes on.
//! - **attacker**: one attack for S seconds from source addresses of CIDR
//!   (N of them, spread evenly; see `attack.rs`), then `attack` with its
//!   counts; the kinds are listed in `attack.rs` and `findings.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod attack;
mod findings;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knotwork_core::{Keypair, PeerAddr};
use knotwork_dht_node::{self as dht, DhtHandle, DhtMessage};
use knotwork_gossip::{Gossip, GossipConfig};
use knotwork_nat::{Nat, NatConfig, NatEvent, RelayLimits};
use knotwork_node::protocol::ping::{Ping, PingConfig};
use knotwork_node::{DiscoveryConfig, Node, NodeBuilder, NodeConfig, NodeEvent};
use knotwork_tasks::resource::ResourceConfig;
use knotwork_tasks::task::{Placement, Task, TaskId, TaskOutcome};
use knotwork_tasks::{Tasks, TasksConfig, TasksService};
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The task kind every worker runs.
const KIND: &str = "chaos";
/// Payload bytes of one task.
const PAYLOAD: usize = 4096;
/// The gossip topic the good peer publishes on and the target counts.
const TOPIC: &str = "chaos";
/// How long after a second of publish time the target reports it (later
/// deliveries count as lost).
const GOSSIP_GRACE: u64 = 3;
/// How long one generation of the gossip counter's ids lasts.
const SEEN_GENERATION: Duration = Duration::from_secs(60);

/// Prints one JSON line (stdout is line-buffered only on a terminal).
fn emit(value: Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Milliseconds since the UNIX epoch: processes in different namespaces
/// share this clock, so a publish time is comparable across them.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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
    /// `knot run` node has them) if `gossip` is set.
    async fn start(
        builder: NodeBuilder,
        keypair: &Keypair,
        config: TasksConfig,
        gossip: Option<GossipConfig>,
    ) -> Res<Self> {
        let apps = TasksService::new(config);
        let with = gossip.is_some();
        let gossip = Gossip::new(keypair.clone(), gossip.unwrap_or_default());
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

/// How the hostile scenario's nodes differ from the other workers: they are
/// composed as `knot run` composes a node (NAT traversal, its ping
/// settings), the target with a short gossip seen-cache.
struct KnotRun {
    nat: NatConfig,
    /// The gossip seen-cache lifetime.
    seen: Duration,
    /// Caps of the stores fresh identities fill (the soak lowers them so
    /// they are full before its RSS baseline is taken).
    caps: Caps,
}

/// Caps of the stores an attacker with fresh identities, keys and records
/// fills: the DHT's records and provider announcements, the ban list, the
/// cache of known static keys, gossip's per-origin state. Each defaults to
/// the node's own default.
struct Caps {
    max_records: usize,
    max_providers: usize,
    max_bans: usize,
    known_peers: usize,
    max_origins: usize,
}

impl Caps {
    fn from_args(args: &Args) -> Res<Self> {
        let store = dht::Config::default().store;
        let node = NodeConfig::default();
        let num = |name: &str, default: usize| -> Res<usize> {
            Ok(args.num(name, default as u64)? as usize)
        };
        Ok(Self {
            max_records: num("dht-max-records", store.max_records)?,
            max_providers: num("dht-max-providers", store.max_providers)?,
            max_bans: num("max-bans", node.max_bans)?,
            known_peers: num("known-peers", node.known_peers)?,
            max_origins: num("gossip-max-origins", GossipConfig::default().max_origins)?,
        })
    }
}

/// A node with the DHT as discovery source and the apps; `listen` may be
/// empty. With `knot`, NAT traversal and `knot run`'s ping settings too.
async fn dht_node(
    keypair: Keypair,
    listen: Vec<PeerAddr>,
    seeds: Vec<PeerAddr>,
    knot: Option<KnotRun>,
) -> Res<(App, DhtHandle, Option<Nat>)> {
    let (mut config, app_config) = node_config();
    // Every chaos host sits in one /24.
    let mut dht_config = dht::Config {
        subnet_limits: None,
        ..Default::default()
    };
    if let Some(k) = &knot {
        dht_config.store.max_records = k.caps.max_records;
        dht_config.store.max_providers = k.caps.max_providers;
        config.max_bans = k.caps.max_bans;
        config.known_peers = k.caps.known_peers;
    }
    let dht = DhtHandle::new(keypair.clone(), dht_config);
    let mut discovery = DiscoveryConfig::default();
    discovery.poll_interval = Duration::from_millis(500);
    let mut gossip = GossipConfig::default();
    let nat = knot.map(|k| {
        config.ping = PingConfig::default();
        gossip.seen_ttl = k.seen;
        gossip.max_origins = k.caps.max_origins;
        Nat::new(k.nat)
    });
    let mut builder = Node::builder(keypair.clone())
        .config(config)
        .service(dht.clone())
        .discovery(dht.clone())
        .discovery_config(discovery);
    if let Some(nat) = &nat {
        builder = builder.service(nat.clone());
    }
    for addr in listen {
        builder = builder.listen(addr);
    }
    for addr in seeds {
        builder = builder.seed(addr);
    }
    let app = App::start(builder, &keypair, app_config, Some(gossip)).await?;
    Ok((app, dht, nat))
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

/// Prints `relayed` each time the relay grants the reservation (and for
/// one granted before this subscribed).
fn print_nat_events(nat: &Nat) {
    let mut events = nat.events();
    for addr in nat.external().iter().filter(|a| a.is_relayed()) {
        emit(json!({"event": "relayed", "addr": addr.to_string()}));
    }
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let NatEvent::RelayReserved { addr, .. } = event {
                emit(json!({"event": "relayed", "addr": addr.to_string()}));
            }
        }
    });
}

async fn table_len(dht: &DhtHandle) -> usize {
    dht.table().await.map(|t| t.len()).unwrap_or(0)
}

/// The counter families of the node's metrics that `status` carries.
const COUNTERS: &[&str] = &[
    "knot_connections_dropped",
    "knot_handshakes",
    "knot_bans",
    "knot_gossip_messages",
    "knot_holepunch_attempts",
    "knot_dht_refused_messages",
    "knot_dht_records",
];

/// The samples of [`COUNTERS`] in the node's metrics, keyed by family
/// (without `knot_` and `_total`) and label values joined by dots:
/// `connections_dropped.rate`, `handshakes.inbound.timeout`.
fn counters(node: &Node) -> BTreeMap<String, f64> {
    let text = node.metrics().encode();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let name = name.strip_suffix("_total").unwrap_or(name);
        if !COUNTERS.contains(&name) {
            continue;
        }
        let mut key = name.strip_prefix("knot_").unwrap_or(name).to_owned();
        for pair in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            if let Some((_, v)) = pair.split_once('=') {
                key.push('.');
                key.push_str(v.trim_matches('"'));
            }
        }
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(key).or_default() += v;
        }
    }
    out
}

/// Counts what the target's subscriber gets on [`TOPIC`]: per second of
/// publish time (the first 8 bytes of the good peer's messages), the
/// deliveries and the slowest; and re-deliveries of an id seen in the last
/// one to two minutes (a replay comes seconds after its original). The ids
/// are kept in two generations of [`SEEN_GENERATION`] each, so what the
/// counter holds does not grow with the run: the soak measures the node's
/// memory, not this counter's (an id set of the whole run grew the target's
/// heap by 2.6 MiB in 20 minutes, a third of it).
fn count_gossip(gossip: &Gossip) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let redelivered = std::sync::Arc::new(AtomicU64::new(0));
    let again = redelivered.clone();
    let mut rx = gossip.subscribe(TOPIC);
    tokio::spawn(async move {
        let (mut seen, mut older) = (HashSet::new(), HashSet::new());
        let mut generation = tokio::time::interval(SEEN_GENERATION);
        // publish second -> (delivered, slowest in ms)
        let mut secs: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut reported = unix_ms() / 1000;
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    if older.contains(&event.id) || !seen.insert(event.id) {
                        again.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let sent = event.data.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                    if let Some(sent) = sent {
                        let late = unix_ms().saturating_sub(sent);
                        let entry = secs.entry(sent / 1000).or_default();
                        entry.0 += 1;
                        entry.1 = entry.1.max(late);
                    }
                }
                _ = generation.tick() => older = std::mem::take(&mut seen),
                _ = tick.tick() => {
                    let done = (unix_ms() / 1000).saturating_sub(GOSSIP_GRACE);
                    while reported < done {
                        let (n, late) = secs.remove(&reported).unwrap_or_default();
                        emit(json!({"event": "gossip", "sec": reported, "delivered": n, "late_ms_max": late}));
                        reported += 1;
                    }
                    secs.retain(|s, _| *s >= reported);
                }
            }
        }
    });
    redelivered
}

async fn worker(args: &Args, target: bool) -> Res<()> {
    let keypair = match args.all("identity").pop() {
        Some(path) => Keypair::load_or_generate(path)?,
        None => Keypair::generate()?,
    };
    let knot = if target {
        let mut nat = NatConfig::default();
        nat.relays = vec![args.one("relay")?.parse()?];
        Some(KnotRun {
            nat,
            seen: Duration::from_millis(args.num("gossip-seen-ms", 120_000)?),
            caps: Caps::from_args(args)?,
        })
    } else {
        None
    };
    let (node, dht, nat) =
        dht_node(keypair, args.addrs("listen")?, args.addrs("seed")?, knot).await?;
    let work = Duration::from_millis(args.num("work-ms", 20)?);
    node.tasks()
        .register(KIND, move |input: Vec<u8>| async move {
            tokio::time::sleep(work).await;
            Ok(fnv(&input))
        });
    print_events(&node);
    if let Some(nat) = &nat {
        print_nat_events(nat);
    }
    let redelivered = target.then(|| count_gossip(node.gossip()));
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
        let channels = node.channels();
        let jobs = node.jobs() + channels.iter().map(|c| c.jobs()).sum::<usize>();
        emit(json!({
            "event": "status",
            "peers": node.peers().len(),
            "task_peers": node.tasks().peers().len(),
            "dht_table": table_len(&dht).await,
            "held": held,
            "jobs": jobs,
            "tasks_alive": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            "redelivered": redelivered.as_ref().map(|r| r.load(std::sync::atomic::Ordering::Relaxed)),
            "counters": counters(&node),
        }));
    }
}

/// A node offering the relay service (composed as `knot run
/// --relay-service` composes one); reports its circuits every second.
async fn relay(args: &Args) -> Res<()> {
    let mut nat = NatConfig::default();
    nat.relay_service = Some(RelayLimits::default());
    // Nobody in the bed needs it, and it would tell the target it is public.
    nat.dial_back = None;
    let knot = KnotRun {
        nat,
        seen: GossipConfig::default().seen_ttl,
        caps: Caps::from_args(args)?,
    };
    let (node, _, nat) = dht_node(
        Keypair::generate()?,
        args.addrs("listen")?,
        Vec::new(),
        Some(knot),
    )
    .await?;
    emit(json!({
        "event": "started",
        "peer": node.peer_id().to_string(),
        "listen": node.listen_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
    }));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let circuits = nat.as_ref().map_or(0, Nat::relayed_circuits);
        emit(json!({"event": "status", "peers": node.peers().len(), "circuits": circuits}));
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
    let (node, dht, _) =
        dht_node(Keypair::generate()?, Vec::new(), args.addrs("seed")?, None).await?;
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

/// A gossip body: its publish time `ms` (UNIX ms, little endian), padded.
fn stamped(ms: u64) -> Vec<u8> {
    let mut data = ms.to_le_bytes().to_vec();
    data.resize(64, 0);
    data
}

async fn good(args: &Args) -> Res<()> {
    let target: PeerAddr = args.one("target")?.parse()?;
    let secs = Duration::from_secs(args.num("secs", 30)?);
    let gossip_rate = args.num("gossip-rate", 25)?.max(1);
    let node = attack::plain_node(true, None).await?;
    print_events(&node);
    let mut channel = node.connect(&target).await?;
    let target_id = channel.remote_peer_id();
    let mut dht_answers = channel.subscribe::<DhtMessage>();
    while !node.tasks().peers().contains(&target_id) || !node.gossip().peers().contains(&target_id)
    {
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
    let mut dht_ping = tokio::time::interval(Duration::from_millis(500));
    let mut publish = tokio::time::interval(Duration::from_secs(1) / u32::try_from(gossip_rate)?);
    let mut report = tokio::time::interval(Duration::from_millis(500));
    let (mut done, mut bad) = (0u64, 0u64);
    let (mut rtts, mut dht_rtts): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    let mut dht_sent: HashMap<u64, Instant> = HashMap::new();
    let mut ping_failures = 0u64;
    // publish second -> messages sent in it
    let mut published: BTreeMap<u64, u64> = BTreeMap::new();
    let PeerAddr::Tcp(sock) = target.clone() else {
        return Err("--target must be a tcp address".into());
    };
    // Four times a second, a fresh session by hand (handshake and version
    // exchange, then closed): can a new peer still get in?
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::channel::<bool>(64);
    let prober = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let tx = probe_tx.clone();
            tokio::spawn(async move {
                let ok = tokio::time::timeout(
                    Duration::from_secs(5),
                    attack::raw_session(sock, None, attack::plain_version(sock)),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                let _ = tx.send(ok).await;
            });
        }
    });
    let (mut joins_ok, mut joins_failed) = (0u64, 0u64);
    // Pings run beside the loop, so a slow answer delays nothing else.
    let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<Option<f64>>(64);
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
                let (channel, tx) = (channel.clone(), ping_tx.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let pong = channel.call(&Ping { nonce: fastrand::u64(..) }).await;
                    let _ = tx.send(pong.ok().map(|_| t.elapsed().as_secs_f64() * 1e3)).await;
                });
            }
            Some(rtt) = ping_rx.recv() => match rtt {
                Some(ms) => rtts.push(ms),
                None => ping_failures += 1,
            },
            _ = dht_ping.tick() => {
                let id = fastrand::u64(..);
                let ping = DhtMessage::Request { id, client: true, body: dht::Request::Ping };
                if channel.try_send(&ping).is_ok() {
                    dht_sent.insert(id, Instant::now());
                }
                // Unanswered for 10 s: lost.
                dht_sent.retain(|_, t| t.elapsed() < Duration::from_secs(10));
            }
            Some(answer) = dht_answers.recv() => {
                if let DhtMessage::Response { id, .. } = answer
                    && let Some(t) = dht_sent.remove(&id)
                {
                    dht_rtts.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            _ = publish.tick() => {
                let ms = unix_ms();
                if matches!(node.gossip().publish(TOPIC, stamped(ms)).await, Ok((_, n)) if n > 0) {
                    *published.entry(ms / 1000).or_default() += 1;
                }
            }
            Some(ok) = probe_rx.recv() => {
                if ok { joins_ok += 1 } else { joins_failed += 1 }
            }
            _ = report.tick() => {
                let now = unix_ms() / 1000;
                while let Some(entry) = published.first_entry() {
                    if *entry.key() >= now {
                        break;
                    }
                    let (sec, sent) = entry.remove_entry();
                    emit(json!({"event": "gossip", "sec": sec, "sent": sent}));
                }
                emit(json!({
                    "joins_ok": std::mem::take(&mut joins_ok),
                    "joins_failed": std::mem::take(&mut joins_failed),
                    "event": "sample",
                    "secs": began.elapsed().as_secs_f64(),
                    "rtts_ms": std::mem::take(&mut rtts),
                    "dht_rtts_ms": std::mem::take(&mut dht_rtts),
                    "tasks_done": std::mem::take(&mut done),
                    "tasks_bad": std::mem::take(&mut bad),
                    "ping_failures": std::mem::take(&mut ping_failures),
                    "open": !channel.is_closed(),
                }));
                // Measuring goes on after a loss (the scenario fails on it).
                if channel.is_closed()
                    && let Ok(Ok(again)) =
                        tokio::time::timeout(Duration::from_secs(2), node.connect(&target)).await
                {
                    channel = again;
                    dht_answers = channel.subscribe::<DhtMessage>();
                    emit(json!({"event": "reconnected"}));
                }
            }
        }
    }
    prober.abort();
    node.shutdown().await;
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
            "worker" => worker(&args, false).await,
            "target" => worker(&args, true).await,
            "relay" => relay(&args).await,
            "submitter" => submitter(&args).await,
            "good" => good(&args).await,
            "attacker" => attack::attacker(&args).await,
            other => Err(format!(
                "unknown role `{other}` (worker, target, relay, submitter, good, attacker)"
            )
            .into()),
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
