//! The `knot run` processes of a testnet: the binary, one host namespace
//! per node slot, starting, stopping and restarting nodes.
//!
//! Slot `i` (1-based) is host `i` of the [`Hosts`], at [`host_ip`]: one
//! node per /24, so the DHT's per-subnet limits (2 per bucket, 10 per table
//! in one /24) never refuse an honest node, and every connection a node
//! makes comes from its own address, so the per-IP inbound limit counts
//! nodes, not the whole testnet. Slots 1-3 are the seeds every node is
//! given (and accept every node: see [`Testnet::new`]). A slot runs one node at a time; churn stops it and later starts
//! it again, with the same data directory (same identity) or a fresh one
//! (a new node). Every node listens on `tcp/<ip>:4000`, subscribes to the
//! gossip topic [`TOPIC`], runs the built-in tasks (`--worker`) and logs
//! its DHT queries (`knotwork_discovery_dht=debug`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::control;
use crate::error::{Error, Result};
use crate::json;
use crate::netns::Hosts;
use crate::proc::{Line, Proc};
use crate::project::Project;
use crate::shell;

/// The namespaces' prefix (`kwt<pid>-…`).
pub const PREFIX: &str = "kwt";
/// How many slots are seeds.
pub const SEEDS: usize = 3;
/// The gossip topic every node subscribes to.
pub const TOPIC: &str = "testnet";
/// The listen port of every node.
const PORT: u16 = 4000;
/// Nodes run this many nice levels below the xtask, which drives and
/// measures them: when they take all the CPU (1,000 nodes on 2 cores),
/// the driver still gets its share.
const NICE: &str = "5";
/// knot's `max_inbound` when not configured.
const DEFAULT_MAX_INBOUND: usize = 64;
/// The most hosts: their addresses are `10.100.0.1` to `10.103.255.1`.
pub const MAX_NODES: usize = 1024;
/// The node's log: warnings, and one line per DHT query.
const RUST_LOG: &str = "warn,knotwork_discovery_dht=debug";

/// Builds `knot` and returns its path. The one place that knows the
/// package and binary.
/// `release` picks the release profile, else the dev profile that the
/// test build shares (dependencies optimised, the workspace not).
pub fn knot_binary(project: &Project, release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "--package", "knotwork-knot", "--bin", "knot"];
    if release {
        args.push("--release");
    }
    args.push("--message-format=json");
    let out = shell::output(&mut project.cargo(args))?;
    out.lines()
        .filter_map(|l| json::field(l, "executable"))
        .find(|p| p.ends_with("/knot"))
        .map(PathBuf::from)
        .ok_or_else(|| Error::failed("cargo built no knot executable"))
}

/// The address of slot `i` (1-based): one /24 each.
pub fn host_ip(i: usize) -> String {
    let n = i.saturating_sub(1);
    format!("10.{}.{}.1", 100 + n / 256, n % 256)
}

/// Microseconds since the UNIX epoch now (the nodes stamp gossip with it).
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The stdout lines kept in memory: not the many `discovered`, `expired`
/// and `connected` lines (they stay in the `.out` copy).
fn keep(line: &str) -> bool {
    !["discovered", "expired", "connected"]
        .iter()
        .any(|e| line.starts_with(&format!("{{\"event\":\"{e}\"")))
}

/// One `knot run` process.
#[derive(Debug)]
pub struct Node {
    /// The process (its lines, log, memory).
    pub proc: Proc,
    /// Its PeerId.
    pub peer_id: String,
    /// Its data directory (identity, control socket).
    pub dir: PathBuf,
    /// When it printed `started`.
    pub started: Instant,
    /// The same, in microseconds since the UNIX epoch.
    pub started_us: u64,
    /// When it was told to stop, in microseconds since the UNIX epoch.
    pub stopped_us: Option<u64>,
}

impl Node {
    /// Its control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Whether it has been up for `time` (and not told to stop).
    pub fn up_for(&self, time: Duration) -> bool {
        self.stopped_us.is_none() && self.started.elapsed() >= time
    }
}

/// A node process launched, not yet adopted by its slot.
#[derive(Debug)]
pub struct Launched {
    /// The slot (0-based).
    pub index: usize,
    /// The process.
    pub proc: Proc,
    /// Its data directory.
    pub dir: PathBuf,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A host and the nodes it ran.
#[derive(Debug)]
pub struct Slot {
    /// The host (1-based).
    pub host: usize,
    /// The node running now.
    pub live: Option<Node>,
    /// The nodes it ran before, stopped.
    pub past: Vec<Node>,
    /// Data directories used so far (the next fresh node takes a new one).
    identities: usize,
    /// When to start it again after churn stopped it.
    pub restart_at: Option<Instant>,
}

impl Slot {
    /// Every node the slot ran, the live one last.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.past.iter().chain(self.live.as_ref())
    }
}

/// The hosts and their nodes; dropping it kills what runs and deletes the
/// namespaces.
#[derive(Debug)]
pub struct Testnet {
    pub slots: Vec<Slot>,
    bin: PathBuf,
    dir: PathBuf,
    republish: Duration,
    /// The `knot.toml` of the seeds, and of the other nodes.
    configs: [PathBuf; 2],
    /// More arguments for every `knot run`.
    extra: Vec<String>,
    // Last: the nodes' processes are dropped (killed) before their
    // namespaces go.
    hosts: Hosts,
}

impl Testnet {
    /// Makes `nodes` hosts and the nodes' `knot.toml` files: the seeds
    /// accept `nodes + 64` inbound channels, the others `max_inbound` (or
    /// knot's default); starts nothing. Every `knot run` gets `extra`.
    pub fn new(
        nodes: usize,
        bin: &Path,
        dir: &Path,
        republish: Duration,
        max_inbound: Option<usize>,
        extra: Vec<String>,
    ) -> Result<Self> {
        let others = max_inbound.unwrap_or(DEFAULT_MAX_INBOUND);
        let mut configs = [dir.join("seed.toml"), dir.join("node.toml")];
        for (path, n) in configs.iter_mut().zip([nodes + 64, others]) {
            std::fs::write(&*path, format!("max_inbound = {n}\n"))
                .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
        }
        let addrs: Vec<String> = (1..=nodes).map(host_ip).collect();
        let hosts = Hosts::new(PREFIX, &addrs)?;
        let slots = (1..=nodes)
            .map(|host| Slot {
                host,
                live: None,
                past: Vec::new(),
                identities: 0,
                restart_at: None,
            })
            .collect();
        Ok(Self {
            slots,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            republish,
            configs,
            extra,
            hosts,
        })
    }

    /// The seeds' addresses.
    fn seeds(&self) -> Vec<String> {
        (1..=SEEDS.min(self.slots.len()))
            .map(|i| format!("tcp/{}:{PORT}", host_ip(i)))
            .collect()
    }

    /// Launches the node of slot `index` (0-based) with its current data
    /// directory, or a new one if `fresh`; it is the slot's live node once
    /// it printed `started` ([`Testnet::adopt`]).
    pub fn launch(&mut self, index: usize, fresh: bool) -> Result<Launched> {
        let seeds = self.seeds();
        let ns = self.hosts.host_ns(index + 1);
        let slot = self
            .slots
            .get_mut(index)
            .ok_or_else(|| Error::failed(format!("no slot {index}")))?;
        if fresh || slot.identities == 0 {
            slot.identities += 1;
        }
        let name = format!("n{}-{}", slot.host, slot.identities);
        let dir = self.dir.join(&name);
        let listen = format!("tcp/{}:{PORT}", host_ip(slot.host));
        let mut args: Vec<String> = vec!["--data-dir".into(), dir.to_string_lossy().into_owned()];
        let [seed, other] = &self.configs;
        let config = if index < SEEDS { seed } else { other };
        args.extend(["--config".into(), config.to_string_lossy().into_owned()]);
        args.extend(
            [
                "--json",
                "run",
                "--listen",
                &listen,
                "--no-mdns",
                "--worker",
            ]
            .map(String::from),
        );
        args.extend(["--subscribe".into(), TOPIC.into()]);
        args.extend([
            "--dht-republish-ms".into(),
            self.republish.as_millis().to_string(),
        ]);
        for seed in seeds.iter().filter(|s| **s != listen) {
            args.extend(["--seed".into(), seed.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        // Each process of the slot has its own log and output files.
        let log_name = format!("{name}-{}", slot.past.len());
        // `nice` execs knot: the process id stays the node's.
        let mut niced = vec![
            "-n".to_owned(),
            NICE.to_owned(),
            self.bin.to_string_lossy().into_owned(),
        ];
        niced.extend(args);
        let proc = Proc::start_keeping(
            &log_name,
            &ns,
            Path::new("nice"),
            &niced,
            &self.dir,
            RUST_LOG,
            keep,
        )?;
        Ok(Launched { index, proc, dir })
    }

    /// Makes `launched`, whose `started` line is `line`, its slot's live
    /// node.
    pub fn adopt(&mut self, launched: Launched, line: &Line) {
        let Launched { index, proc, dir } = launched;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        slot.live = Some(Node {
            proc,
            peer_id: json::field(&line.text, "peer_id")
                .unwrap_or_default()
                .to_owned(),
            dir,
            started: line.at,
            started_us: unix_us().saturating_sub(micros(line.at.elapsed())),
            stopped_us: None,
        });
    }

    /// Waits for each launched process to print `started` and adopts it.
    pub fn wait_started(&mut self, launched: Vec<Launched>) -> Result<()> {
        for mut l in launched {
            let line = l
                .proc
                .wait_for("started", Duration::from_secs(60), |_| true)?;
            self.adopt(l, &line);
        }
        Ok(())
    }

    /// Stops the live node of slot `index` with SIGKILL (`kill`) or
    /// SIGTERM, and keeps it among the slot's past nodes.
    pub fn stop(&mut self, index: usize, kill: bool) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if let Some(mut node) = slot.live.take() {
            node.stopped_us = Some(unix_us());
            if kill {
                node.proc.kill();
            } else {
                node.proc.terminate();
            }
            slot.past.push(node);
        }
    }

    /// Writes each live node's metrics next to its log (`<name>.metrics`),
    /// for a person reading the run later: 16 at a time, for at most a
    /// minute (an overloaded node answers slowly).
    pub fn save_metrics(&self) {
        let nodes: Vec<&Node> = self.slots.iter().filter_map(|s| s.live.as_ref()).collect();
        let until = Instant::now() + Duration::from_secs(60);
        std::thread::scope(|scope| {
            for part in nodes.chunks(nodes.len().div_ceil(16).max(1)) {
                scope.spawn(move || {
                    for node in part.iter().take_while(|_| Instant::now() < until) {
                        let answer =
                            control::ask(&node.socket(), &control::request("metrics", &[]));
                        if let Some(text) = answer.line.ok().and_then(|l| json::text(&l, "text")) {
                            let _ = std::fs::write(node.proc.log.with_extension("metrics"), text);
                        }
                    }
                });
            }
        });
    }

    /// Stops every node with SIGTERM and waits up to `grace` for them to
    /// exit; what is left is killed when the testnet is dropped.
    pub fn stop_all(&mut self, grace: Duration) {
        for i in 0..self.slots.len() {
            self.stop(i, false);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until
            && !self
                .slots
                .iter_mut()
                .flat_map(|s| s.past.iter_mut())
                .all(|n| n.proc.exited())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_has_its_own_slash_24() {
        assert_eq!(host_ip(1), "10.100.0.1");
        assert_eq!(host_ip(256), "10.100.255.1");
        assert_eq!(host_ip(257), "10.101.0.1");
        assert_eq!(host_ip(MAX_NODES), "10.103.255.1");
        let subnets: std::collections::HashSet<String> = (1..=MAX_NODES)
            .map(|i| host_ip(i).rsplit_once('.').unwrap().0.to_owned())
            .collect();
        assert_eq!(subnets.len(), MAX_NODES);
    }

    #[test]
    fn the_many_peer_event_lines_are_not_kept() {
        assert!(keep(r#"{"event":"gossip","topic":"testnet"}"#));
        assert!(keep(
            r#"{"event":"disconnected","peer_id":"x","reason":"r"}"#
        ));
        assert!(!keep(r#"{"event":"discovered","peer_id":"x"}"#));
        assert!(!keep(r#"{"event":"connected","peer_id":"x"}"#));
    }
}
