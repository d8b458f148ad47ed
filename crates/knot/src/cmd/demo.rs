//! `knot demo [--nodes N] [--tasks T]`: N nodes (default 5) on loopback in
//! this process hash T chunks (default 1,000) for the first of them.
//!
//! Node 0 listens and is everyone's seed; every node runs the DHT as a
//! discovery source, so each later node finds the others through lookups
//! via the seed and dials them, until the nodes form a full mesh. (mDNS is
//! left out on purpose: on a LAN it would pull in other people's nodes.)
//! Every node runs the application protocols. Node 0 submits one task per
//! 16 KiB chunk, placed by the workers' resource reports; each worker hashes
//! its chunk (FNV-1a, with a little simulated work time) and answers. When
//! half the tasks are done the last worker is stopped: its tasks in flight
//! are placed again on the others. Node 0 checks every result against its
//! own hash of the chunk.
//!
//! # Format
//! A live line twice a second: progress bar, tasks done / in flight /
//! retried, peers per node, the mean ping RTT; then a summary (per worker
//! counts, time). With `--json` only the summary, as one object. Exit code 0
//! when every task has exactly one verified result within a minute.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use knotwork_core::{Keypair, PeerAddr, PeerId};
use knotwork_dht_node::{self as dht, DhtHandle};
use knotwork_node::{DiscoveryConfig, Node, NodeConfig};
use knotwork_tasks::resource::ResourceConfig;
use knotwork_tasks::task::{Placement, Task, TaskId, TaskOutcome};
use knotwork_tasks::{Tasks, TasksConfig, TasksService};
use serde::Serialize;

use super::task::fnv;
use crate::CliResult;
use crate::settings::{Global, print_json};

/// Arguments of `knot demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Nodes to start (at least 3: a submitter and two workers).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Chunks to hash.
    #[arg(long, default_value_t = 1000)]
    tasks: u64,
}

const CHUNK: usize = 16 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize)]
struct Summary {
    nodes: usize,
    tasks: u64,
    verified: u64,
    wrong: u64,
    duplicates: u64,
    retried: u64,
    stopped_worker: String,
    per_worker: HashMap<String, u64>,
    elapsed_ms: u128,
}

/// Chunk `i`: 8-byte words that differ per chunk and per position.
fn chunk(i: u64) -> Vec<u8> {
    (0..(CHUNK / 8) as u64)
        .flat_map(|w| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w).to_le_bytes())
        .collect()
}

/// A demo node and its task protocols.
#[derive(Clone)]
struct DemoNode {
    node: Node,
    apps: TasksService,
}

impl std::ops::Deref for DemoNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl DemoNode {
    fn tasks(&self) -> &Tasks {
        self.apps.tasks()
    }
}

async fn start(seed: Option<&PeerAddr>) -> CliResult<DemoNode> {
    let mut config = NodeConfig::default();
    config.ping.interval = Duration::from_millis(500);
    // Fill outbound slots from what address exchange taught quickly.
    config.maintenance_interval = Duration::from_millis(200);
    let mut resources = ResourceConfig::default();
    resources.interval = Duration::from_secs(1);
    let mut apps = TasksConfig::default();
    apps.resources = resources;
    let apps = TasksService::new(apps);
    let keypair = Keypair::generate()?;
    // Every demo node shares 127.0.0.1: no per-subnet limits.
    let dht_config = dht::Config {
        subnet_limits: None,
        ..Default::default()
    };
    let dht = DhtHandle::new(keypair.clone(), dht_config);
    let mut discovery = DiscoveryConfig::default();
    discovery.poll_interval = Duration::from_millis(300);
    let mut builder = Node::builder(keypair)
        .listen("tcp/127.0.0.1:0".parse()?)
        .config(config)
        .service(apps.clone())
        .service(dht.clone())
        .discovery(dht.clone())
        .discovery_config(discovery);
    if let Some(seed) = seed {
        builder = builder.seed(seed.clone());
    }
    let node = builder.start().await?;
    apps.tasks().register("fnv", |input: Vec<u8>| async move {
        // Simulated work: a real job would take a while.
        tokio::time::sleep(Duration::from_millis(40 + fastrand::u64(..80))).await;
        Ok(fnv(&input).to_le_bytes().to_vec())
    });
    Ok(DemoNode { node, apps })
}

fn live_line(nodes: &[DemoNode], done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    let (_, in_flight, retried) = nodes.first().map_or((0, 0, 0), |n| n.tasks().stats());
    let peers: Vec<String> = nodes.iter().map(|n| n.peers().len().to_string()).collect();
    let rtts: Vec<Duration> = nodes
        .iter()
        .flat_map(|n| n.peers())
        .filter_map(|p| p.rtt)
        .collect();
    let rtt = match u32::try_from(rtts.len()) {
        Ok(n) if n > 0 => format!(
            "{:.2} ms",
            (rtts.iter().sum::<Duration>() / n).as_secs_f64() * 1e3
        ),
        _ => "-".to_owned(),
    };
    format!(
        "[{bar}] {done:>5}/{total} done  {in_flight:>3} in flight  {retried:>3} retried  peers {}  rtt {rtt}",
        peers.join("/")
    )
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult<ExitCode> {
    if args.nodes < 3 {
        return Err("--nodes must be at least 3".into());
    }
    let began = Instant::now();
    let mut nodes = vec![start(None).await?];
    let seed = nodes
        .first()
        .and_then(|n| n.listen_addrs().first().cloned())
        .ok_or("the seed node has no address")?;
    for _ in 1..args.nodes {
        nodes.push(start(Some(&seed)).await?);
    }
    let submitter = nodes.first().ok_or("no nodes")?.clone();
    let workers: Vec<PeerId> = nodes.iter().skip(1).map(|n| n.peer_id()).collect();
    let victim = nodes.last().ok_or("no nodes")?.clone();
    if !global.json {
        println!(
            "knot demo: {} nodes on loopback, {} chunks of {} KiB; seed {}",
            args.nodes,
            args.tasks,
            CHUNK / 1024,
            seed
        );
    }
    let meshed = |nodes: &[DemoNode]| nodes.iter().all(|n| n.peers().len() + 1 >= nodes.len());
    while submitter.tasks().peers().len() < workers.len() || !meshed(&nodes) {
        if began.elapsed() > LIMIT {
            return Err("the nodes did not connect within a minute".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !global.json {
        println!(
            "mesh formed in {} ms (peers per node {}); stopping worker {} at half-time",
            began.elapsed().as_millis(),
            nodes
                .iter()
                .map(|n| n.peers().len().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            victim.peer_id().short()
        );
    }

    let mut results = submitter.tasks().results();
    let mut expected = HashMap::new();
    for i in 0..args.tasks {
        let data = chunk(i);
        expected.insert(TaskId(i), fnv(&data).to_le_bytes().to_vec());
        let task = Task::new("fnv", data).with_id(TaskId(i));
        submitter.tasks().submit(task, Placement::BestByResources)?;
    }

    let mut summary = Summary {
        nodes: args.nodes,
        tasks: args.tasks,
        verified: 0,
        wrong: 0,
        duplicates: 0,
        retried: 0,
        stopped_worker: victim.peer_id().to_string(),
        per_worker: HashMap::new(),
        elapsed_ms: 0,
    };
    let mut seen = HashMap::new();
    let mut stopped = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + LIMIT;
    while (seen.len() as u64) < args.tasks {
        tokio::select! {
            r = results.recv() => {
                let Some(r) = r else { break };
                if seen.insert(r.id, ()).is_some() {
                    summary.duplicates += 1;
                    continue;
                }
                match (&r.outcome, expected.get(&r.id)) {
                    (TaskOutcome::Done(out), Some(want)) if out == want => summary.verified += 1,
                    _ => summary.wrong += 1,
                }
                if let Some(w) = r.worker {
                    *summary.per_worker.entry(w.short()).or_default() += 1;
                }
                if !stopped && seen.len() as u64 >= args.tasks / 2 {
                    stopped = true;
                    victim.shutdown().await;
                    if !global.json {
                        println!("{}", live_line(&nodes, seen.len() as u64, args.tasks));
                        println!("stopped worker {}", victim.peer_id().short());
                    }
                }
            }
            _ = ticker.tick() => {
                if !global.json {
                    println!("{}", live_line(&nodes, seen.len() as u64, args.tasks));
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    // Anything after the last result would be a second delivery.
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), results.recv()).await {
        if seen.contains_key(&r.id) {
            summary.duplicates += 1;
        }
    }
    summary.retried = submitter.tasks().stats().2;
    summary.elapsed_ms = began.elapsed().as_millis();
    if !global.json {
        println!("{}", live_line(&nodes, seen.len() as u64, args.tasks));
    }
    for n in &nodes {
        n.shutdown().await;
    }
    let ok = summary.verified == args.tasks && summary.wrong == 0 && summary.duplicates == 0;
    if global.json {
        print_json(&summary)?;
    } else {
        println!("summary:");
        let mut per: Vec<_> = summary.per_worker.iter().collect();
        per.sort();
        for (w, n) in per {
            println!("  worker {w}: {n} tasks");
        }
        println!(
            "  {}/{} verified, {} wrong, {} duplicates, {} retried after worker {} stopped, {:.1} s",
            summary.verified,
            args.tasks,
            summary.wrong,
            summary.duplicates,
            summary.retried,
            victim.peer_id().short(),
            summary.elapsed_ms as f64 / 1000.0
        );
        println!("{}", if ok { "ok" } else { "FAILED" });
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
