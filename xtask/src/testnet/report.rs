//! From what a run collected to the figures of its report, the targets it
//! is held to, and the report's text.
//!
//! # Definitions
//! - A node is *live* for a gossip message if it had been up for
//!   [`JOINED_US`] when the message was published and stayed up
//!   [`DELIVERY_US`] after; the delivery ratio is what those nodes
//!   received over their number (the publisher excluded), and the latency
//!   to the last receiver is the latest arrival among them.
//! - A get counts toward the DHT target if its record had been
//!   acknowledged at least one republish interval before the get.
//! - Lookup hops and latency are those of every `find` that reached its
//!   target, as the nodes' DHT cores log them (`query finished
//!   kind=find_node found=true`): the number of responses on the chain
//!   that led to the target, as `dht-sim` counts them.
//! - RSS growth compares each node that ran the whole measurement at a
//!   quarter into it (after warm-up: tables and caches filled) with its
//!   last sample.

use std::collections::HashMap;
use std::time::Duration;

use super::nodes::Slot;
use super::{Data, Plan};
use crate::json;
use crate::testnet::workload::{Detail, Kind, Op};

/// A node counts as live for a gossip message after this long up...
pub const JOINED_US: u64 = 20_000_000;
/// ...if it stays up this long after the publish.
pub const DELIVERY_US: u64 = 10_000_000;

/// What one node process left behind.
#[derive(Debug, Clone)]
pub struct NodeData {
    /// Its PeerId.
    pub peer_id: String,
    /// Up from, until (µs since the UNIX epoch).
    pub up: (u64, u64),
    /// Gossip received: (origin, seq) -> arrival (µs).
    pub received: HashMap<(String, u64), u64>,
    /// Why its channels closed, as printed.
    pub disconnects: Vec<String>,
    /// `banned` lines.
    pub bans: usize,
    /// Lookups of a peer that found it: (hops, ms), from its log.
    pub lookups: Vec<(u8, f64)>,
}

impl NodeData {
    /// Reads every node of `slots` (stopped by now).
    pub fn collect(slots: &[Slot]) -> Vec<Self> {
        slots
            .iter()
            .flat_map(Slot::nodes)
            .map(|n| {
                let mut data = Self {
                    peer_id: n.peer_id.clone(),
                    up: (n.started_us, n.stopped_us.unwrap_or(u64::MAX)),
                    received: HashMap::new(),
                    disconnects: Vec::new(),
                    bans: 0,
                    lookups: Vec::new(),
                };
                for line in n.proc.lines() {
                    let t = &line.text;
                    match line.event() {
                        "gossip" => {
                            let origin = json::field(t, "origin").unwrap_or_default();
                            let seq = json::uint(t, "seq").unwrap_or(0);
                            let at = json::uint(t, "at_us").unwrap_or(0);
                            data.received.insert((origin.to_owned(), seq), at);
                        }
                        "disconnected" => data
                            .disconnects
                            .push(json::text(t, "reason").unwrap_or_default()),
                        "banned" => data.bans += 1,
                        _ => {}
                    }
                }
                let log = std::fs::read_to_string(&n.proc.log).unwrap_or_default();
                data.lookups = log.lines().filter_map(found_lookup).collect();
                data
            })
            .collect()
    }
}

/// `field=value` of a log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!(" {key}=");
    let start = line.find(&pattern)? + pattern.len();
    let rest = line.get(start..)?;
    Some(rest.split(' ').next()?.trim_matches('"'))
}

/// (hops, ms) of a `query finished` log line of a lookup that found its
/// target peer.
fn found_lookup(line: &str) -> Option<(u8, f64)> {
    if !line.contains("query finished")
        || log_field(line, "kind")? != "find_node"
        || log_field(line, "found")? != "true"
    {
        return None;
    }
    Some((
        log_field(line, "hops")?.parse().ok()?,
        log_field(line, "ms")?.parse().ok()?,
    ))
}

/// The `p`-th percentile (0-100) of `values`, nearest rank; `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1).min(v.len().saturating_sub(1)))
        .copied()
}

/// "p50 / p95 / p99" of `values` with `unit`.
fn spread(values: &[f64], unit: &str) -> String {
    match (
        percentile(values, 50.0),
        percentile(values, 95.0),
        percentile(values, 99.0),
    ) {
        (Some(a), Some(b), Some(c)) => format!("{a:.1} / {b:.1} / {c:.1}{unit}"),
        _ => "-".to_owned(),
    }
}

/// `part/whole (x %)`.
fn ratio(part: usize, whole: usize) -> String {
    format!("{part}/{whole} ({})", percent(part, whole))
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.2} %", 100.0 * part as f64 / whole as f64)
    }
}

/// One gossip message as its receivers saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Seconds from the start when it was published.
    pub at: f64,
    /// Live nodes (the publisher excluded).
    pub live: usize,
    /// Live nodes that received it.
    pub reached: usize,
    /// Arrival at the last live receiver, ms after the publish.
    pub last_ms: Option<f64>,
}

/// `dht-sim`'s hop counts and percentiles.
#[derive(Debug, Clone, Default)]
pub struct Sim {
    /// Lookups that took each number of hops (index = hops).
    pub hops: Vec<usize>,
    /// Its `success` line.
    pub success: String,
}

impl Sim {
    /// Reads `dht-sim`'s report.
    pub fn parse(text: &str) -> Self {
        let line = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::trim)
                .unwrap_or_default()
        };
        let mut hops = Vec::new();
        for pair in line("hop counts").split_whitespace() {
            let Some((h, n)) = pair.split_once(':') else {
                continue;
            };
            let (Ok(h), Ok(n)) = (h.parse::<usize>(), n.parse::<usize>()) else {
                continue;
            };
            if hops.len() <= h {
                hops.resize(h + 1, 0);
            }
            if let Some(slot) = hops.get_mut(h) {
                *slot = n;
            }
        }
        Self {
            hops,
            success: line("success").to_owned(),
        }
    }

    /// Every lookup's hops, one value each.
    pub fn values(&self) -> Vec<f64> {
        self.hops
            .iter()
            .enumerate()
            .flat_map(|(h, &n)| std::iter::repeat_n(h as f64, n))
            .collect()
    }
}

/// (seconds, value) points.
pub type Series = Vec<(f64, f64)>;

/// What making the host namespaces cost.
#[derive(Debug, Clone, Copy)]
pub struct HostsCost {
    /// Seconds to make them.
    pub secs: f64,
    /// Kernel slab memory they took, KiB.
    pub slab_kib: u64,
}

/// A target and whether the run met it.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is held to what.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
}

/// Everything the report says.
#[derive(Debug)]
pub struct Figures {
    /// The report's rows: figure, value, target (or empty).
    pub rows: Vec<(String, String, String)>,
    /// The targets.
    pub checks: Vec<Check>,
    /// Hops of the testnet's and the simulator's lookups.
    pub hops: (Vec<f64>, Vec<f64>),
    /// Lookup latency (core), get and task round trips, ms.
    pub latency: Vec<(&'static str, Vec<f64>)>,
    /// Every gossip message.
    pub deliveries: Vec<Delivery>,
    /// RSS over time: (seconds, median, p95, max MiB).
    pub rss: Vec<(f64, f64, f64, f64)>,
    /// CPU busy over time, (seconds, % of all cores): the machine's, and
    /// the testnet nodes' own.
    pub cpu: (Series, Series),
    /// The measurement window (seconds from the start).
    pub window: (f64, f64),
    /// A title line: nodes, minutes, churn, seed.
    pub title: String,
}

impl Figures {
    /// Works out the figures of a run.
    pub fn new(
        plan: &Plan,
        data: &Data,
        nodes: &[NodeData],
        sim: &str,
        hosts: &HostsCost,
        built: Duration,
    ) -> Self {
        let sim = Sim::parse(sim);
        let mut f = Self {
            rows: Vec::new(),
            checks: Vec::new(),
            hops: (Vec::new(), sim.values()),
            latency: Vec::new(),
            deliveries: Vec::new(),
            rss: Vec::new(),
            cpu: (Vec::new(), Vec::new()),
            window: data.window,
            title: format!(
                "{} nodes, {} min, churn {}/min, seed {}, max_inbound {}{}",
                plan.nodes,
                plan.minutes,
                plan.churn,
                plan.seed,
                plan.max_inbound
                    .map_or("64 (default)".to_owned(), |n| n.to_string()),
                if plan.knot_args.is_empty() {
                    String::new()
                } else {
                    format!(", knot run {}", plan.knot_args.join(" "))
                }
            ),
        };
        f.row("build (knot)", format!("{:.0} s", built.as_secs_f64()), "");
        f.row(
            "start",
            format!(
                "{} host namespaces in {:.1} s (+{:.0} MiB kernel slab); nodes started in {:.1} s",
                plan.nodes,
                hosts.secs,
                hosts.slab_kib as f64 / 1024.0,
                data.start_secs
            ),
            "",
        );
        let stops = data.churn.len();
        let kills = data.churn.iter().filter(|c| c.2).count();
        let fresh = data.churn.iter().filter(|c| c.3).count();
        f.row(
            "churn",
            format!(
                "{stops} stops ({kills} SIGKILL, {} SIGTERM), {fresh} came back as fresh nodes, {} restarts failed",
                stops - kills,
                data.failed_restarts.len()
            ),
            "",
        );
        if let Some(why) = &data.stopped {
            f.row("stopped early", why.clone(), "");
        }
        f.check(
            data.stopped.is_none(),
            format!(
                "ran to the end ({})",
                data.stopped.as_deref().unwrap_or("ok")
            ),
        );
        f.check(
            data.failed_restarts.is_empty(),
            format!(
                "every node started ({})",
                data.failed_restarts.first().map_or("ok", String::as_str)
            ),
        );
        f.dht(plan, data, nodes, &sim);
        f.gossip(data, nodes);
        f.tasks(data);
        f.resources(data);
        f.faults(data, nodes);
        f
    }

    fn row(&mut self, name: &str, value: String, target: &str) {
        self.rows.push((name.to_owned(), value, target.to_owned()));
    }

    fn check(&mut self, ok: bool, name: String) {
        self.checks.push(Check { name, ok });
    }

    fn ops(data: &Data, kind: Kind) -> Vec<&Op> {
        data.ops.iter().filter(|o| o.kind == kind).collect()
    }

    fn dht(&mut self, plan: &Plan, data: &Data, nodes: &[NodeData], sim: &Sim) {
        let puts = Self::ops(data, Kind::Put);
        let ok = |ops: &[&Op]| ops.iter().filter(|o| o.ok).count();
        self.row("DHT puts acknowledged", ratio(ok(&puts), puts.len()), "");
        let republish = plan.republish().as_secs_f64();
        let gets = Self::ops(data, Kind::Get);
        let (aged, young): (Vec<&Op>, Vec<&Op>) = gets
            .iter()
            .partition(|o| matches!(o.detail, Detail::Record { age, .. } if age >= republish));
        let (aged_ok, aged_n) = (ok(&aged), aged.len());
        self.row(
            &format!("DHT gets, record put >= {republish:.0} s before"),
            ratio(aged_ok, aged_n),
            ">= 99 %",
        );
        self.check(
            aged_n > 0 && aged_ok as f64 >= 0.99 * aged_n as f64,
            format!("DHT get success {} >= 99 %", percent(aged_ok, aged_n)),
        );
        self.row(
            "DHT gets, younger records",
            ratio(ok(&young), young.len()),
            "",
        );
        let sweep: Vec<&Op> = gets
            .iter()
            .copied()
            .filter(|o| matches!(o.detail, Detail::Record { sweep: true, .. }))
            .collect();
        self.row(
            "records readable at the end (after the churn)",
            ratio(ok(&sweep), sweep.len()),
            "",
        );
        let get_ms: Vec<f64> = gets.iter().filter(|o| o.ok).map(|o| o.ms).collect();
        self.row("DHT get round trip p50/p95/p99", spread(&get_ms, " ms"), "");
        let finds = Self::ops(data, Kind::Find);
        self.row(
            "finds that reached the peer",
            ratio(ok(&finds), finds.len()),
            "",
        );
        let lookups: Vec<(u8, f64)> = nodes.iter().flat_map(|n| n.lookups.clone()).collect();
        let hops: Vec<f64> = lookups.iter().map(|l| f64::from(l.0)).collect();
        let lookup_ms: Vec<f64> = lookups.iter().map(|l| l.1).collect();
        let sim_hops = sim.values();
        self.row(
            "lookup hops p50/p95/p99 (testnet)",
            spread(&hops, ""),
            "p95 within 1 of dht-sim",
        );
        self.row(
            "lookup hops p50/p95/p99 (dht-sim)",
            spread(&sim_hops, ""),
            "",
        );
        let (p95, sim_p95) = (percentile(&hops, 95.0), percentile(&sim_hops, 95.0));
        let within = matches!((p95, sim_p95), (Some(a), Some(b)) if (a - b).abs() <= 1.0);
        self.check(
            within,
            format!(
                "lookup hops p95 {} within 1 of dht-sim's {}",
                p95.map_or("-".into(), |v| v.to_string()),
                sim_p95.map_or("-".into(), |v| v.to_string())
            ),
        );
        self.row("dht-sim success", sim.success.clone(), "");
        self.row("lookup latency p50/p95/p99", spread(&lookup_ms, " ms"), "");
        self.hops.0 = hops;
        self.latency.push(("DHT lookup (find)", lookup_ms));
        self.latency.push(("DHT get (round trip)", get_ms));
    }

    fn gossip(&mut self, data: &Data, nodes: &[NodeData]) {
        let publishes = Self::ops(data, Kind::Publish);
        let sent = publishes.iter().filter(|o| o.ok).count();
        self.row("gossip published", ratio(sent, publishes.len()), "");
        for op in publishes.iter().filter(|o| o.ok) {
            let Detail::Published {
                origin, seq, at_us, ..
            } = &op.detail
            else {
                continue;
            };
            let id = (origin.clone(), *seq);
            let live: Vec<&NodeData> = nodes
                .iter()
                .filter(|n| n.peer_id != *origin)
                .filter(|n| n.up.0 + JOINED_US <= *at_us && n.up.1 >= at_us + DELIVERY_US)
                .collect();
            let arrivals: Vec<f64> = live
                .iter()
                .filter_map(|n| n.received.get(&id))
                .map(|&t| t.saturating_sub(*at_us) as f64 / 1e3)
                .collect();
            self.deliveries.push(Delivery {
                at: op.at,
                live: live.len(),
                reached: arrivals.len(),
                last_ms: arrivals.iter().copied().reduce(f64::max),
            });
        }
        let live: usize = self.deliveries.iter().map(|d| d.live).sum();
        let reached: usize = self.deliveries.iter().map(|d| d.reached).sum();
        let complete = self
            .deliveries
            .iter()
            .filter(|d| d.reached == d.live)
            .count();
        self.row(
            "gossip delivered to live nodes",
            ratio(reached, live),
            ">= 99.9 %",
        );
        self.check(
            live > 0 && reached as f64 >= 0.999 * live as f64,
            format!("gossip delivery {} >= 99.9 %", percent(reached, live)),
        );
        self.row(
            "gossip messages that reached every live node",
            ratio(complete, self.deliveries.len()),
            "",
        );
        let last: Vec<f64> = self.deliveries.iter().filter_map(|d| d.last_ms).collect();
        self.row(
            "gossip latency to the last receiver p50/p95/p99",
            spread(&last, " ms"),
            "p99 reported",
        );
        self.latency.push(("gossip, last receiver", last));
    }

    fn tasks(&mut self, data: &Data) {
        let tasks = Self::ops(data, Kind::Task);
        let done: Vec<f64> = tasks.iter().filter(|o| o.ok).map(|o| o.ms).collect();
        self.row("tasks done right", ratio(done.len(), tasks.len()), "");
        self.row("task round trip p50/p95/p99", spread(&done, " ms"), "");
        self.latency.push(("task (round trip)", done));
    }

    fn resources(&mut self, data: &Data) {
        let (from, to) = data.window;
        let base_at = from + (to - from) / 4.0;
        // Per node process (slot, node): its samples in time order.
        let mut by_node: HashMap<(usize, usize), Vec<&super::Sample>> = HashMap::new();
        for s in &data.samples {
            by_node.entry((s.slot, s.node)).or_default().push(s);
        }
        let mut growth = Vec::new();
        let mut end_rss = Vec::new();
        let mut cpu = Vec::new();
        let mut fds = 0;
        for samples in by_node.values() {
            fds = fds.max(samples.iter().map(|s| s.fds).max().unwrap_or(0));
            let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
                continue;
            };
            let window: Vec<&&super::Sample> = samples
                .iter()
                .filter(|s| s.at >= from && s.at <= to)
                .collect();
            if let (Some(a), Some(b)) = (window.first(), window.last())
                && b.at > a.at
            {
                let ticks = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64;
                cpu.push(ticks / (b.at - a.at));
            }
            // Nodes that ran the whole measurement.
            if first.at > from || last.at < to - 30.0 {
                continue;
            }
            let base = samples.iter().find(|s| s.at >= base_at);
            if let Some(base) = base
                && base.rss_kib > 0
            {
                growth.push(100.0 * (last.rss_kib as f64 / base.rss_kib as f64 - 1.0));
                end_rss.push(last.rss_kib as f64 / 1024.0);
            }
        }
        self.row(
            "RSS per node at the end p50/p95/p99",
            spread(&end_rss, " MiB"),
            "",
        );
        let median_growth = percentile(&growth, 50.0);
        self.row(
            "RSS growth per node, quarter-way to end, p50/p95/p99",
            spread(&growth, " %"),
            "flat: p50 within 10 %",
        );
        self.check(
            median_growth.is_some_and(|g| g.abs() <= 10.0),
            format!(
                "RSS flat after warm-up: median growth {} within 10 %",
                median_growth.map_or("-".into(), |g| format!("{g:.1} %"))
            ),
        );
        self.row(
            "CPU per node p50/p95/p99 (% of a core)",
            spread(&cpu, " %"),
            "",
        );
        self.row("open files per node, max", fds.to_string(), "");
        // Time series: RSS across the nodes up at each sample.
        let mut times: Vec<f64> = data.samples.iter().map(|s| s.at).collect();
        times.sort_by(f64::total_cmp);
        times.dedup();
        for t in times {
            let rss: Vec<f64> = data
                .samples
                .iter()
                .filter(|s| s.at == t)
                .map(|s| s.rss_kib as f64 / 1024.0)
                .collect();
            if let (Some(a), Some(b), Some(c)) = (
                percentile(&rss, 50.0),
                percentile(&rss, 95.0),
                percentile(&rss, 100.0),
            ) {
                self.rss.push((t, a, b, c));
            }
        }
        for pair in data.machine.windows(2) {
            if let [a, b] = pair {
                let total = b.total_ticks.saturating_sub(a.total_ticks) as f64;
                let busy = b.busy_ticks.saturating_sub(a.busy_ticks) as f64;
                if total > 0.0 {
                    self.cpu.0.push((b.at, 100.0 * busy / total));
                }
            }
        }
        // The nodes' own: ticks per second are % of one core.
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let mut nodes_cpu: Vec<(f64, f64)> = Vec::new();
        for samples in by_node.values() {
            for pair in samples.windows(2) {
                if let [a, b] = pair
                    && b.at > a.at
                {
                    let rate = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / (b.at - a.at);
                    match nodes_cpu.iter_mut().find(|(t, _)| *t == b.at) {
                        Some((_, sum)) => *sum += rate / cores,
                        None => nodes_cpu.push((b.at, rate / cores)),
                    }
                }
            }
        }
        nodes_cpu.sort_by(|a, b| a.0.total_cmp(&b.0));
        let own: Vec<f64> = nodes_cpu
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|c| c.1)
            .collect();
        self.row(
            "the nodes' CPU together p50/p95/p99 (% of all cores)",
            spread(&own, " %"),
            "",
        );
        self.cpu.1 = nodes_cpu;
        let busy: Vec<f64> = self
            .cpu
            .0
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|c| c.1)
            .collect();
        let min_free = data
            .machine
            .iter()
            .map(|m| m.available_kib)
            .min()
            .map_or("-".into(), |k| format!("{:.1} GiB", k as f64 / 1048576.0));
        self.row(
            "machine CPU busy p50/p95/p99 (% of all cores)",
            spread(&busy, " %"),
            "",
        );
        self.row("machine memory available, lowest", min_free, "");
        let load: Vec<f64> = data
            .machine
            .iter()
            .filter(|m| m.at >= from && m.at <= to)
            .map(|m| m.load)
            .collect();
        self.row(
            "machine load average p50/p95/p99 (runnable threads, all users)",
            spread(&load, ""),
            "",
        );
        // Connections and traffic, from the scrapes in the window.
        let in_window = |s: &&super::Scrape| s.answered && s.at >= from && s.at <= to;
        let peers: Vec<f64> = data
            .scrapes
            .iter()
            .filter(in_window)
            .map(|s| s.peers)
            .collect();
        self.row("connections per node p50/p95/p99", spread(&peers, ""), "");
        let tables: Vec<f64> = data
            .scrapes
            .iter()
            .filter(in_window)
            .map(|s| s.table)
            .collect();
        self.row(
            "DHT routing table per node p50/p95/p99",
            spread(&tables, ""),
            "",
        );
        let mut scrapes: HashMap<(usize, usize), Vec<&super::Scrape>> = HashMap::new();
        for s in data.scrapes.iter().filter(in_window) {
            scrapes.entry((s.slot, s.node)).or_default().push(s);
        }
        let (mut msgs, mut bytes) = (Vec::new(), Vec::new());
        for list in scrapes.values() {
            if let (Some(a), Some(b)) = (list.first(), list.last())
                && b.at > a.at
            {
                msgs.push((b.messages - a.messages) / (b.at - a.at));
                bytes.push((b.bytes - a.bytes) / (b.at - a.at) / 1024.0);
            }
        }
        self.row("messages per node per s p50/p95/p99", spread(&msgs, ""), "");
        self.row("KiB per node per s p50/p95/p99", spread(&bytes, ""), "");
    }

    fn faults(&mut self, data: &Data, nodes: &[NodeData]) {
        // Counters are per process: the last scrape of each holds its total.
        let mut last: HashMap<(usize, usize), &super::Scrape> = HashMap::new();
        for s in data.scrapes.iter().filter(|s| s.answered) {
            last.insert((s.slot, s.node), s);
        }
        let sum = |pick: fn(&super::Scrape) -> &Vec<(String, f64)>| {
            let mut out: Vec<(String, f64)> = Vec::new();
            for s in last.values() {
                for (k, v) in pick(s) {
                    match out.iter_mut().find(|(key, _)| key == k) {
                        Some((_, total)) => *total += v,
                        None => out.push((k.clone(), *v)),
                    }
                }
            }
            out.sort_by(|a, b| b.1.total_cmp(&a.1));
            out.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let bans: usize = nodes.iter().map(|n| n.bans).sum();
        let by_reason = sum(|s| &s.bans);
        self.row(
            "bans (banned lines; by reason from metrics)",
            format!(
                "{bans}: {}",
                if by_reason.is_empty() {
                    "-"
                } else {
                    &by_reason
                }
            ),
            "none unexplained",
        );
        self.check(bans == 0, format!("no bans ({bans})"));
        self.row("handshakes by result", sum(|s| &s.handshakes), "");
        self.row(
            "DHT messages refused by reason",
            sum(|s| &s.dht_refused),
            "",
        );
        self.row("gossip messages by result", sum(|s| &s.gossip), "");
        let mut reasons: HashMap<&str, usize> = HashMap::new();
        for r in nodes.iter().flat_map(|n| &n.disconnects) {
            *reasons.entry(r.as_str()).or_default() += 1;
        }
        let mut reasons: Vec<(&str, usize)> = reasons.into_iter().collect();
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        let text: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        self.row("disconnections by reason", text.join(", "), "");
        for kind in [Kind::Put, Kind::Get, Kind::Find, Kind::Publish, Kind::Task] {
            let mut errors: HashMap<&str, usize> = HashMap::new();
            for e in Self::ops(data, kind)
                .iter()
                .filter_map(|o| o.error.as_deref())
            {
                *errors.entry(e).or_default() += 1;
            }
            let mut errors: Vec<(&str, usize)> = errors.into_iter().collect();
            errors.sort_by_key(|e| std::cmp::Reverse(e.1));
            if !errors.is_empty() {
                let text: Vec<String> = errors.iter().map(|(e, n)| format!("{e} ({n})")).collect();
                self.row(&format!("{kind:?} errors"), text.join("; "), "");
            }
        }
    }

    /// The targets missed.
    pub fn failed_checks(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.clone())
            .collect()
    }

    /// The report as Markdown: the table, then the targets.
    pub fn markdown(&self) -> String {
        let mut out = format!("# testnet: {}\n\n", self.title);
        out.push_str("| figure | value | target |\n|---|---|---|\n");
        for (name, value, target) in &self.rows {
            out.push_str(&format!("| {name} | {value} | {target} |\n"));
        }
        out.push_str("\n## Targets\n\n");
        for c in &self.checks {
            let mark = if c.ok { "met" } else { "MISSED" };
            out.push_str(&format!("- {mark}: {}\n", c.name));
        }
        out.push_str("\nPlots: hops.svg, latency.svg, gossip.svg, resources.svg\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_that_found_their_peer_are_read_from_the_log() {
        let found = "2025-06-01T10:00:00.123456Z DEBUG knotwork_discovery_dht::dht: query finished kind=find_node origin=App found=true hops=3 requests=12 responses=11 failures=1 ms=42 timed_out=false";
        assert_eq!(found_lookup(found), Some((3, 42.0)));
        let missed = found.replace("found=true", "found=false");
        assert_eq!(found_lookup(&missed), None);
        let get = found.replace("kind=find_node", "kind=get");
        assert_eq!(found_lookup(&get), None);
        assert_eq!(found_lookup("WARN something else"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_simulators_hop_counts_are_read() {
        let text = "success        99.00% (99/100)\nhops           mean 2.10  p50 2  p95 3  max 4\nhop counts     0:1 1:20 2:50 3:27 4:1\n";
        let sim = Sim::parse(text);
        assert_eq!(sim.hops, [1, 20, 50, 27, 1]);
        assert_eq!(sim.success, "99.00% (99/100)");
        assert_eq!(sim.values().len(), 99);
        assert_eq!(percentile(&sim.values(), 95.0), Some(3.0));
    }
}
