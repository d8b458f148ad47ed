//! A deterministic simulated network of many [`Dht`] cores.
//!
//! Every node is the same sans-IO core the real driver runs. The network is a
//! priority queue of deliveries and timer firings on a virtual clock; one-way
//! latency is 10 ms plus an exponential tail, a fraction of messages is lost,
//! and with churn nodes crash and new ones join while lookups run. All
//! randomness comes from one seeded generator and all ordering from the
//! queue's (time, sequence) keys, so the same [`SimConfig`] gives the same
//! [`SimReport`].
//!
//! Addresses are `mem/<index>`: a message to an address whose node has left
//! (or whose index now holds another id) is silently dropped, like a packet
//! to a dead host.
//!
//! # Joining
//! [`JoinMode::Protocol`] starts nodes one after another, each bootstrapping
//! through a random earlier node with real lookups. [`JoinMode::Oracle`]
//! fills each routing table directly with up to k random peers per bucket
//! drawn from the true population, the steady state a long-running network
//! reaches; it is fast enough for 100,000 nodes. Nodes joining under churn
//! always use the protocol.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use knotwork_core::{Keypair, PeerAddr, PeerId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::dht::{Dht, Event, QueryId, QueryResult};
use crate::key::Key;
use crate::message::DhtMessage;
use crate::record::Record;
use crate::time::Time;

/// How the initial nodes enter the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinMode {
    /// Real bootstraps, one node after another.
    Protocol,
    /// Tables filled directly from the true population (see module docs).
    Oracle,
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Initial number of nodes.
    pub nodes: usize,
    /// FIND_NODE lookups of random live nodes' ids.
    pub lookups: usize,
    /// Signed records put and then fetched from another node.
    pub records: usize,
    /// Fraction of nodes that crash during the lookup phase (an equal
    /// number of new nodes joins meanwhile).
    pub churn: f64,
    /// Fraction of messages lost.
    pub loss: f64,
    /// Seed of the one random number generator.
    pub seed: u64,
    /// How the initial nodes join.
    pub join: JoinMode,
    /// Fixed part of the one-way latency.
    pub latency_base: Duration,
    /// Mean of the exponential part of the one-way latency.
    pub latency_tail: Duration,
    /// Virtual time between lookup starts.
    pub lookup_spacing: Duration,
    /// Settings of every node.
    pub dht: Config,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 1000,
            lookups: 100,
            records: 0,
            churn: 0.0,
            loss: 0.0,
            seed: 1,
            join: JoinMode::Oracle,
            latency_base: Duration::from_millis(10),
            latency_tail: Duration::from_millis(40),
            lookup_spacing: Duration::from_millis(50),
            dht: Config {
                request_timeout: Duration::from_secs(1),
                query_timeout: Duration::from_secs(30),
                subnet_limits: None,
                ..Config::default()
            },
        }
    }
}

/// What a simulation measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimReport {
    /// Nodes at the start.
    pub nodes: usize,
    /// Lookups run.
    pub lookups: usize,
    /// Lookups that learned the target's address.
    pub succeeded: usize,
    /// Hops of each successful lookup (see [`crate::QueryStats::hops`]).
    pub hops: Vec<u8>,
    /// Virtual duration of each lookup, in milliseconds.
    pub latency_ms: Vec<u64>,
    /// Requests plus responses of each lookup.
    pub messages: Vec<u32>,
    /// Records put.
    pub records: usize,
    /// Records fetched back with the value that was put.
    pub records_found: usize,
    /// Messages delivered in total.
    pub delivered: u64,
    /// Messages lost (to `loss` or to dead nodes).
    pub dropped: u64,
    /// Messages a core refused (with a [`crate::DhtError`]).
    pub refused: u64,
    /// Nodes that crashed.
    pub departed: usize,
    /// Nodes that joined during the run.
    pub joined: usize,
    /// Virtual time at the end.
    pub virtual_time: Duration,
    /// Mean routing-table size of live nodes at the end.
    pub mean_table_len: f64,
    /// Mean estimated bytes per live node at the end.
    pub memory_per_node: usize,
}

impl SimReport {
    /// Fraction of lookups that succeeded.
    pub fn success_rate(&self) -> f64 {
        if self.lookups == 0 {
            return 1.0;
        }
        self.succeeded as f64 / self.lookups as f64
    }
}

/// The `p`-th percentile (0–100) of `values`, nearest rank; 0 if empty.
pub fn percentile<T: Copy + Ord + Default>(values: &[T], p: f64) -> T {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1).min(v.len() - 1))
        .copied()
        .unwrap_or_default()
}

/// Simulation phases reported to the progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Initial nodes joining.
    Join,
    /// Lookups (and churn, and records) running.
    Lookups,
}

struct Node {
    id: PeerId,
    dht: Dht,
    alive: bool,
    /// Never churned out: lookup sources and targets come from these.
    stable: bool,
    timer: Option<Time>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Deliver { to: usize, from: usize },
    Timer { node: usize },
    Join { node: usize },
    Leave { node: usize },
    Lookup,
    Put { record: usize },
    Get { record: usize },
}

/// The simulated network.
pub struct Network {
    cfg: SimConfig,
    rng: SmallRng,
    now: Time,
    seq: u64,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Time, u64, Action)>>,
    /// Messages in flight, by the sequence number of their delivery.
    in_flight: std::collections::BTreeMap<u64, DhtMessage>,
    stable: Vec<usize>,
    /// (source node, query) → target id, for lookups in progress.
    lookups: std::collections::BTreeMap<(usize, QueryId), PeerId>,
    /// Records: the signed record and (node, query) of its get.
    records: Vec<Record>,
    gets: std::collections::BTreeMap<(usize, QueryId), usize>,
    pending_actions: usize,
    report: SimReport,
}

impl Network {
    /// Builds the initial population (and, for [`JoinMode::Oracle`], fills
    /// their tables).
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let mut nodes = Vec::with_capacity(cfg.nodes + (cfg.nodes as f64 * cfg.churn) as usize);
        for _ in 0..cfg.nodes {
            nodes.push(Self::make_node(&mut rng, &cfg.dht, true));
        }
        let report = SimReport {
            nodes: cfg.nodes,
            ..SimReport::default()
        };
        let mut net = Self {
            stable: Vec::new(),
            cfg,
            rng,
            now: Time::ZERO,
            seq: 0,
            nodes,
            queue: BinaryHeap::new(),
            in_flight: std::collections::BTreeMap::new(),
            lookups: std::collections::BTreeMap::new(),
            records: Vec::new(),
            gets: std::collections::BTreeMap::new(),
            pending_actions: 0,
            report,
        };
        if net.cfg.join == JoinMode::Oracle {
            net.oracle_fill();
        }
        net
    }

    fn make_node(rng: &mut SmallRng, cfg: &Config, stable: bool) -> Node {
        // 32 random bytes are a valid PeerId for routing; lookups need no
        // signatures. Records are signed by real key pairs.
        let mut bytes = [0u8; 32];
        let id = loop {
            rng.fill(&mut bytes);
            if let Ok(id) = PeerId::from_bytes(&bytes) {
                break id;
            }
        };
        Node {
            id,
            dht: Dht::new(id, cfg.clone()),
            alive: true,
            stable,
            timer: None,
        }
    }

    /// Up to k random peers per bucket, from the sorted key space.
    fn oracle_fill(&mut self) {
        let k = self.cfg.dht.k;
        let mut sorted: Vec<(Key, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (Key::from_peer_id(&n.id), i))
            .collect();
        sorted.sort_unstable();
        let keys: Vec<[u8; 32]> = sorted.iter().map(|(k, _)| *k.as_bytes()).collect();
        let range = |prefix: &[u8; 32], bits: usize| -> (usize, usize) {
            // Keys whose first `bits` bits equal those of `prefix`.
            let (lo, hi) = prefix_bounds(prefix, bits);
            (
                keys.partition_point(|k| *k < lo),
                keys.partition_point(|k| *k <= hi),
            )
        };
        for &(key, i) in &sorted {
            let mine = *key.as_bytes();
            for bit in 0..crate::key::KEY_BITS {
                // Peers sharing `bit` leading bits with us and differing at `bit`.
                let mut flipped = mine;
                if let Some(b) = flipped.get_mut(bit / 8) {
                    *b ^= 0x80 >> (bit % 8);
                }
                let (lo, hi) = range(&flipped, bit + 1);
                let count = hi - lo;
                let picks: Vec<usize> = if count <= k {
                    (lo..hi).collect()
                } else {
                    let mut chosen = std::collections::BTreeSet::new();
                    while chosen.len() < k {
                        chosen.insert(self.rng.random_range(lo..hi));
                    }
                    chosen.into_iter().collect()
                };
                for p in picks {
                    if let Some(&(_, j)) = sorted.get(p) {
                        let peer = self.nodes.get(j).map(|n| n.id);
                        if let (Some(peer), Some(node)) = (peer, self.nodes.get_mut(i)) {
                            let _ = node
                                .dht
                                .add_peer(Time::ZERO, peer, &[PeerAddr::Mem(j as u64)]);
                        }
                    }
                }
                // Stop once nobody else shares the next prefix.
                let (lo2, hi2) = range(&mine, bit + 1);
                if hi2 - lo2 <= 1 {
                    break;
                }
            }
            if let Some(node) = self.nodes.get_mut(i) {
                while node.dht.poll_event().is_some() {}
            }
        }
    }

    fn push(&mut self, at: Time, action: Action) -> u64 {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, action)));
        self.seq
    }

    fn latency(&mut self) -> Duration {
        let u: f64 = self.rng.random::<f64>();
        let tail = -(1.0 - u).ln() * self.cfg.latency_tail.as_secs_f64();
        self.cfg.latency_base + Duration::from_secs_f64(tail.min(2.0))
    }

    /// Sends what node `i` produced, handles its events, re-arms its timer.
    fn flush(&mut self, i: usize) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        while let Some(t) = node.dht.poll_transmit() {
            out.push(t);
        }
        while let Some(e) = node.dht.poll_event() {
            events.push(e);
        }
        let timer = node.dht.poll_timeout();
        let rearm = timer != node.timer;
        node.timer = timer;
        if rearm && let Some(t) = timer {
            let at = t.max(self.now);
            self.push(at, Action::Timer { node: i });
        }
        for t in out {
            let to = t.addrs.iter().find_map(|a| match a {
                PeerAddr::Mem(n) => usize::try_from(*n).ok(),
                _ => None,
            });
            let lost = self.cfg.loss > 0.0 && self.rng.random::<f64>() < self.cfg.loss;
            match to {
                Some(to) if !lost && self.nodes.get(to).is_some_and(|n| n.id == t.to) => {
                    let at = self.now + self.latency();
                    let seq = self.push(at, Action::Deliver { to, from: i });
                    self.in_flight.insert(seq, t.message);
                }
                _ => self.report.dropped += 1,
            }
        }
        for e in events {
            self.on_event(i, e);
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        let Event::QueryFinished { id, result, stats } = e else {
            return;
        };
        if let Some(target) = self.lookups.remove(&(i, id)) {
            self.pending_actions -= 1;
            // Found: the lookup learned the target's address (a response
            // listed it, or the local table had it), whether or not the
            // target itself then answered.
            let found = stats.hops.is_some()
                || matches!(&result, QueryResult::FindNode { closest, .. }
                    if closest.iter().any(|p| p.peer_id == target));
            if found {
                self.report.succeeded += 1;
                self.report.hops.push(stats.hops.unwrap_or(0));
            }
            self.report
                .latency_ms
                .push(stats.duration.as_millis() as u64);
            self.report.messages.push(stats.requests + stats.responses);
        } else if let Some(r) = self.gets.remove(&(i, id)) {
            self.pending_actions -= 1;
            let want = self.records.get(r).map(|r| &r.value);
            if let QueryResult::GetValue {
                record: Some(rec), ..
            } = result
                && Some(&rec.value) == want
            {
                self.report.records_found += 1;
            }
        }
    }

    fn random_stable(&mut self) -> Option<usize> {
        if self.stable.is_empty() {
            return None;
        }
        let pick = self.rng.random_range(0..self.stable.len());
        self.stable.get(pick).copied()
    }

    fn random_alive(&mut self, below: usize) -> Option<usize> {
        for _ in 0..64 {
            let j = self.rng.random_range(0..below.max(1));
            if self.nodes.get(j).is_some_and(|n| n.alive) {
                return Some(j);
            }
        }
        None
    }

    fn handle(&mut self, seq: u64, action: Action) {
        match action {
            Action::Deliver { to, from } => {
                let Some(msg) = self.in_flight.remove(&seq) else {
                    return;
                };
                let (Some(from_id), Some(node)) =
                    (self.nodes.get(from).map(|n| n.id), self.nodes.get_mut(to))
                else {
                    return;
                };
                if !node.alive {
                    self.report.dropped += 1;
                    return;
                }
                self.report.delivered += 1;
                if node
                    .dht
                    .handle_message(self.now, from_id, PeerAddr::Mem(from as u64), msg)
                    .is_err()
                {
                    self.report.refused += 1;
                }
                self.flush(to);
            }
            Action::Timer { node: i } => {
                let now = self.now;
                let Some(node) = self.nodes.get_mut(i) else {
                    return;
                };
                if !node.alive || node.timer.is_none_or(|t| t > now) {
                    return;
                }
                node.timer = None;
                node.dht.handle_timeout(now);
                self.flush(i);
            }
            Action::Join { node: i } => {
                self.pending_actions -= 1;
                let via = self.random_alive(i);
                let now = self.now;
                if let (Some(j), Some(peer)) =
                    (via, via.and_then(|j| self.nodes.get(j).map(|n| n.id)))
                    && let Some(node) = self.nodes.get_mut(i)
                {
                    node.alive = true;
                    let _ = node.dht.add_peer(now, peer, &[PeerAddr::Mem(j as u64)]);
                    node.dht.bootstrap(now);
                }
                self.flush(i);
            }
            Action::Leave { node: i } => {
                self.pending_actions -= 1;
                if let Some(n) = self.nodes.get_mut(i) {
                    n.alive = false;
                    self.report.departed += 1;
                }
            }
            Action::Lookup => {
                let (Some(src), Some(mut dst)) = (self.random_stable(), self.random_stable())
                else {
                    self.pending_actions -= 1;
                    return;
                };
                while dst == src && self.stable.len() > 1 {
                    dst = self.random_stable().unwrap_or(dst);
                }
                let now = self.now;
                let target = self.nodes.get(dst).map(|n| n.id);
                if let (Some(target), Some(node)) = (target, self.nodes.get_mut(src)) {
                    let q = node.dht.find_node(now, Key::from_peer_id(&target));
                    self.lookups.insert((src, q), target);
                    self.flush(src);
                } else {
                    self.pending_actions -= 1;
                }
            }
            Action::Put { record } => {
                self.pending_actions -= 1;
                let now = self.now;
                let rec = self.records.get(record).cloned();
                if let (Some(src), Some(rec)) = (self.random_stable(), rec)
                    && let Some(node) = self.nodes.get_mut(src)
                {
                    let _ = node.dht.put_record(now, rec);
                    self.flush(src);
                }
            }
            Action::Get { record } => {
                let now = self.now;
                let key = self.records.get(record).map(|r| r.key.clone());
                match (self.random_stable(), key) {
                    (Some(src), Some(key)) => {
                        if let Some(node) = self.nodes.get_mut(src)
                            && let Ok(q) = node.dht.get_record(now, &key)
                        {
                            self.gets.insert((src, q), record);
                            self.flush(src);
                            return;
                        }
                        self.pending_actions -= 1;
                    }
                    _ => self.pending_actions -= 1,
                }
            }
        }
    }

    /// Runs the queue until `pending_actions` reaches zero; `progress` gets
    /// the number of pending actions after each step that changed it.
    fn run_phase(
        &mut self,
        phase: Phase,
        total: usize,
        progress: &mut dyn FnMut(Phase, usize, usize),
    ) {
        let mut last = usize::MAX;
        while self.pending_actions > 0 {
            let Some(Reverse((at, seq, action))) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            self.handle(seq, action);
            if self.pending_actions != last {
                last = self.pending_actions;
                progress(phase, total.saturating_sub(last), total);
            }
        }
    }

    /// Runs the whole simulation: joins, then lookups with churn and records.
    pub fn run(mut self, progress: &mut dyn FnMut(Phase, usize, usize)) -> SimReport {
        let n = self.nodes.len();
        if self.cfg.join == JoinMode::Protocol {
            // Node 0 is alone; each next node bootstraps via an earlier one.
            let spacing = Duration::from_millis(20);
            for i in 1..n {
                self.pending_actions += 1;
                self.push(Time::ZERO + spacing * i as u32, Action::Join { node: i });
            }
            self.run_phase(Phase::Join, n.saturating_sub(1), progress);
            // Let bootstrap refreshes settle.
            let settle = self.now + Duration::from_secs(30);
            while let Some(Reverse((at, _, _))) = self.queue.peek() {
                if *at > settle {
                    break;
                }
                let Some(Reverse((at, seq, action))) = self.queue.pop() else {
                    break;
                };
                self.now = self.now.max(at);
                self.handle(seq, action);
            }
        }
        for i in 0..n {
            if let Some(node) = self.nodes.get_mut(i) {
                node.dht.handle_timeout(self.now);
            }
            self.flush(i);
        }
        // Churn: who leaves, and new nodes, at random times in the window.
        let start = self.now + Duration::from_millis(100);
        let window = self.cfg.lookup_spacing * self.cfg.lookups.max(1) as u32;
        let churned = ((n as f64) * self.cfg.churn).round() as usize;
        let mut leavers = std::collections::BTreeSet::new();
        while leavers.len() < churned.min(n.saturating_sub(2)) {
            leavers.insert(self.rng.random_range(0..n));
        }
        for &i in &leavers {
            if let Some(node) = self.nodes.get_mut(i) {
                node.stable = false;
            }
            let at = start + window.mul_f64(self.rng.random::<f64>());
            self.pending_actions += 1;
            self.push(at, Action::Leave { node: i });
        }
        self.stable = (0..n)
            .filter(|&i| self.nodes.get(i).is_some_and(|x| x.stable))
            .collect();
        for _ in 0..leavers.len() {
            let node = Self::make_node(&mut self.rng, &self.cfg.dht, false);
            let idx = self.nodes.len();
            let mut node = node;
            node.alive = false;
            self.nodes.push(node);
            let at = start + window.mul_f64(self.rng.random::<f64>());
            self.pending_actions += 1;
            self.push(at, Action::Join { node: idx });
            self.report.joined += 1;
        }
        for l in 0..self.cfg.lookups {
            self.pending_actions += 1;
            self.push(start + self.cfg.lookup_spacing * l as u32, Action::Lookup);
        }
        // Records: signed by real key pairs, fetched 5 s after being put.
        let expires = start + window + Duration::from_secs(3600);
        for r in 0..self.cfg.records {
            let Ok(kp) = Keypair::generate() else {
                continue;
            };
            let key = format!("record-{r}").into_bytes();
            let value = format!("value-{r}-{}", self.cfg.seed).into_bytes();
            let Ok(rec) = Record::sign(&kp, key, value, expires, &self.cfg.dht.record_limits)
            else {
                continue;
            };
            self.records.push(rec);
            let idx = self.records.len() - 1;
            let at = start + window.mul_f64(self.rng.random::<f64>());
            self.pending_actions += 2;
            self.push(at, Action::Put { record: idx });
            self.push(at + Duration::from_secs(5), Action::Get { record: idx });
        }
        self.report.records = self.records.len();
        self.report.lookups = self.cfg.lookups;
        let total = self.pending_actions;
        self.run_phase(Phase::Lookups, total, progress);
        self.finish_report()
    }

    fn finish_report(mut self) -> SimReport {
        let alive: Vec<&Node> = self.nodes.iter().filter(|n| n.alive).collect();
        let count = alive.len().max(1);
        self.report.mean_table_len =
            alive.iter().map(|n| n.dht.table().len()).sum::<usize>() as f64 / count as f64;
        self.report.memory_per_node =
            alive.iter().map(|n| n.dht.memory_estimate()).sum::<usize>() / count;
        self.report.virtual_time = Duration::from_millis(self.now.as_millis());
        self.report
    }
}

/// Lowest and highest 32-byte keys sharing the first `bits` bits of `prefix`.
fn prefix_bounds(prefix: &[u8; 32], bits: usize) -> ([u8; 32], [u8; 32]) {
    let mut lo = *prefix;
    let mut hi = *prefix;
    for (i, (l, h)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
        let start = i * 8;
        let keep = bits.saturating_sub(start).min(8);
        let mask: u8 = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        *l &= mask;
        *h |= !mask;
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SimConfig {
        SimConfig {
            nodes: 300,
            lookups: 60,
            records: 3,
            seed,
            ..SimConfig::default()
        }
    }

    #[test]
    fn same_seed_same_report() {
        let a = Network::new(small(7)).run(&mut |_, _, _| {});
        let b = Network::new(small(7)).run(&mut |_, _, _| {});
        assert_eq!(a.hops, b.hops);
        assert_eq!(a.latency_ms, b.latency_ms);
        assert_eq!(a.messages, b.messages);
        assert_eq!(a.delivered, b.delivered);
        let c = Network::new(small(8)).run(&mut |_, _, _| {});
        assert_ne!(a.latency_ms, c.latency_ms);
    }

    #[test]
    fn oracle_network_finds_every_target_and_records() {
        let r = Network::new(small(1)).run(&mut |_, _, _| {});
        assert_eq!(r.lookups, 60);
        assert_eq!(r.succeeded, 60);
        assert_eq!(r.records_found, 3);
        assert!(percentile(&r.hops, 95.0) <= 4, "{:?}", r.hops);
        assert!(r.mean_table_len > 50.0);
    }

    #[test]
    fn protocol_join_with_churn_and_loss_still_converges() {
        let cfg = SimConfig {
            nodes: 200,
            lookups: 50,
            churn: 0.2,
            loss: 0.02,
            join: JoinMode::Protocol,
            ..small(3)
        };
        let r = Network::new(cfg).run(&mut |_, _, _| {});
        assert_eq!(r.departed, 40);
        assert_eq!(r.joined, 40);
        assert!(r.dropped > 0);
        assert!(r.success_rate() >= 0.95, "{}", r.success_rate());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 95.0), 95);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile::<u64>(&[], 50.0), 0);
    }
}
