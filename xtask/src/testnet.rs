//! `cargo xtask testnet --nodes N --minutes M [--churn R] [--seed S]
//! [--max-inbound K] [--quick] [-- knot run args]`: N real `knot run` processes, each on a host of its own,
//! driven as a user drives them, measured, and held against the DHT
//! simulator (root).
//!
//! # The network
//! Every node runs in a network namespace of its own, joined to one router
//! namespace ([`crate::netns`]), at an address in a /24 of its own
//! ([`nodes`]); slots 1-3 are the seeds everyone is given. Namespaces and
//! not loopback addresses: on loopback every connection a node dials comes
//! from 127.0.0.1 whatever address it listens on, so the per-IP inbound
//! limit (8) refuses all but a few nodes; namespaces cost ~0.3 MiB of
//! kernel memory and a few ms each. A router and not a bridge: on a bridge
//! every pair of nodes that talk needs an ARP entry, and the kernel's
//! neighbour table (1,024 entries for all namespaces together) overflowed
//! at 200 nodes.
//!
//! # The run
//! The seeds start, then everyone else in batches; after a warm-up the
//! measurement runs for M minutes. Through the nodes' control sockets
//! ([`control`]) it puts DHT records and gets them back at every age, finds
//! random live peers, publishes gossip from random nodes (every node prints
//! what it receives) and submits `fnv` tasks from three nodes
//! ([`workload`]); it samples every node's memory, CPU and files from
//! `/proc` ([`sample`]) and scrapes its metrics ([`prom`]). With churn, a
//! fraction R of the nodes per minute (not the seeds or the task
//! submitters) is stopped — `SIGKILL` and `SIGTERM` in turn — and started
//! again 5 s later, with the same identity and as a fresh node in turn.
//! At the end every record is read once more, the nodes stop, and the
//! report ([`report`], [`plot`]) compares the lookups' hops with
//! `dht-sim`'s at the same N and seed and checks the targets.
//!
//! # Bounds
//! A guard process (`xtask testnet-guard`, in its own process group, so
//! Ctrl-C in the terminal does not reach it) watches the xtask: when the
//! xtask ends — done, failed, interrupted — or a hard deadline passes
//! (then it kills the xtask first), it kills every process left in the
//! run's namespaces and deletes them. Traffic stays among the run's
//! namespaces.
//!
//! Every node runs with knot's defaults, except: the seeds accept N + 64
//! inbound channels (every node keeps a session to each seed: with the
//! default 64, nodes that start later are refused by all three and stay
//! alone); `--max-inbound K` sets every other node's `max_inbound`, to
//! look past the inbound limit; what follows `--` is added to every `knot
//! run` (`-- --gossip-ttl 10`). `--quick` is `--nodes 30 --minutes 2 --churn 0.1` unless
//! given, built in
//! the dev profile that the tests have built already: what `cargo xtask
//! ci` runs, with the same checks.

mod control;
mod nodes;
mod plot;
mod prom;
mod report;
mod sample;
mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::netns;
use crate::project::Project;
use crate::system::{self, Need};
use nodes::{SEEDS, TOPIC, Testnet};
use prom::Scrape;
use sample::{Machine, Sample};
use workload::{Detail, Done, Kind, Op, Pool, Rng};

/// Nodes that submit tasks: slots 4-6 (0-based 3..6), never churned.
const SUBMITTERS: std::ops::Range<usize> = 3..6;
/// How long a stopped node stays down before it starts again.
const DOWN: Duration = Duration::from_secs(5);
/// A node takes part (source or target of operations) once up this long.
const JOINED: Duration = Duration::from_secs(20);
/// Nodes started at once at the start.
const BATCH: usize = 25;
/// Threads running control exchanges.
const THREADS: usize = 16;
/// The run stops early when the machine's available memory falls below
/// this (KiB): the machine is shared, and that is a limit worth reporting.
const MEMORY_FLOOR_KIB: u64 = 2 << 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Nodes (slots).
    pub nodes: usize,
    /// Minutes of measurement.
    pub minutes: f64,
    /// Fraction of the nodes stopped and started again per minute.
    pub churn: f64,
    /// Seed of every random choice (and of the simulator).
    pub seed: u64,
    /// The quick variant: dev-profile binaries.
    pub quick: bool,
    /// `max_inbound` of every node instead of knot's default (64).
    pub max_inbound: Option<usize>,
    /// More arguments for every `knot run` (after `--`).
    pub knot_args: Vec<String>,
}

impl Plan {
    fn from_flags(mut flags: Flags) -> Result<Self> {
        let quick = flags.flag("--quick");
        let nodes = flags
            .value("--nodes")?
            .unwrap_or(if quick { 30 } else { 200 });
        let minutes = flags
            .value("--minutes")?
            .unwrap_or(if quick { 2.0 } else { 10.0 });
        let churn = flags
            .value("--churn")?
            .unwrap_or(if quick { 0.1 } else { 0.0 });
        let seed = flags.value("--seed")?.unwrap_or(1);
        let max_inbound = flags.value("--max-inbound")?;
        let knot_args = flags.finish()?;
        let plan = Self {
            nodes,
            minutes,
            churn,
            seed,
            quick,
            max_inbound,
            knot_args,
        };
        plan.check()?;
        Ok(plan)
    }

    /// The quick variant `cargo xtask ci` runs.
    pub fn quick() -> Self {
        Self {
            nodes: 30,
            minutes: 2.0,
            churn: 0.1,
            seed: 1,
            quick: true,
            max_inbound: None,
            knot_args: Vec::new(),
        }
    }

    /// The run's name: its parameters.
    fn name(&self) -> String {
        let inbound = self.max_inbound.map_or(String::new(), |n| format!("-i{n}"));
        let extra: String = self
            .knot_args
            .iter()
            .map(|a| format!("-{}", a.trim_start_matches('-')))
            .collect();
        format!(
            "n{}-m{}-c{}-s{}{inbound}{extra}",
            self.nodes, self.minutes, self.churn, self.seed
        )
    }

    fn check(&self) -> Result<()> {
        let min = SUBMITTERS.end + 2;
        if !(min..=nodes::MAX_NODES).contains(&self.nodes) {
            return Err(Error::failed(format!(
                "--nodes must be {min} to {}",
                nodes::MAX_NODES
            )));
        }
        if !(self.minutes > 0.0 && self.minutes <= 120.0) {
            return Err(Error::failed("--minutes must be more than 0, at most 120"));
        }
        if !(0.0..=1.0).contains(&self.churn) {
            return Err(Error::failed("--churn must be a fraction 0..1 per minute"));
        }
        Ok(())
    }

    /// The measurement's length.
    fn measure(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    /// The DHT's republish and replication interval: a fifth of the
    /// measurement, 20 s to 2 min, so records exist that were put at least
    /// one interval before they are read.
    fn republish(&self) -> Duration {
        (self.measure() / 5).clamp(Duration::from_secs(20), Duration::from_secs(120))
    }

    /// Time between the last node's start and the measurement.
    fn warmup(&self) -> Duration {
        Duration::from_secs(if self.quick { 20 } else { 60 })
    }

    /// How often each node's metrics are scraped.
    fn scrape_every(&self) -> Duration {
        Duration::from_secs(if self.quick { 10 } else { 30 })
    }

    /// A generous bound on the whole run, after which the guard kills it:
    /// starting (0.5 s per node at worst), warm-up, measurement, sweep
    /// and shutdown (2 min), doubled.
    fn deadline(&self) -> Duration {
        let start = Duration::from_millis(500) * u32::try_from(self.nodes).unwrap_or(u32::MAX);
        (start + self.warmup() + self.measure() + Duration::from_secs(120)) * 2
    }
}

/// The command.
pub fn run(project: &Project, flags: Flags) -> Result<()> {
    run_plan(project, &Plan::from_flags(flags)?)
}

/// Seconds since the UNIX epoch.
fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `plan` and checks its targets.
pub fn run_plan(project: &Project, plan: &Plan) -> Result<()> {
    if !system::is_root() {
        return Err(
            Error::unavailable("the testnet needs root (a network namespace per node)")
                .with_fix("run it as root: sudo -E cargo xtask testnet …"),
        );
    }
    system::ensure(
        &[Need::Program("ip", "iproute2")],
        "the testnet puts every node in a network namespace",
    )?;
    let began = Instant::now();
    let bin = nodes::knot_binary(project, !plan.quick)?;
    let built = began.elapsed();
    println!(
        "testnet: built {} in {:.1} s",
        bin.display(),
        built.as_secs_f64()
    );
    let dir = std::env::temp_dir().join(format!("{}-run-{}", nodes::PREFIX, std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
    let _guard = spawn_guard(&dir, unix_secs() + plan.deadline().as_secs())?;
    println!(
        "testnet: {} nodes, {} min, churn {}/min, seed {}; logs in {}",
        plan.nodes,
        plan.minutes,
        plan.churn,
        plan.seed,
        dir.display()
    );
    let (made, slab) = (Instant::now(), sample::slab_kib());
    let mut net = Testnet::new(
        plan.nodes,
        &bin,
        &dir,
        plan.republish(),
        plan.max_inbound,
        plan.knot_args.clone(),
    )?;
    let hosts = report::HostsCost {
        secs: made.elapsed().as_secs_f64(),
        slab_kib: sample::slab_kib()
            .zip(slab)
            .map_or(0, |(after, before)| after.saturating_sub(before)),
    };
    println!(
        "testnet: {} host namespaces around a router in {:.1} s, +{} MiB kernel slab",
        plan.nodes,
        hosts.secs,
        hosts.slab_kib / 1024
    );
    let mut run = Run::new(plan, &mut net);
    let result = run.drive();
    let data = run.finish();
    println!("testnet: stopping the nodes");
    net.save_metrics();
    net.stop_all(Duration::from_secs(15));
    let nodes = report::NodeData::collect(&net.slots);
    drop(net);
    result?;
    let sim = run_sim(project, plan, &data.ops)?;
    let out = project.target_dir().join("testnet").join(plan.name());
    std::fs::create_dir_all(&out).map_err(|e| Error::failed(format!("{}: {e}", out.display())))?;
    let figures = report::Figures::new(plan, &data, &nodes, &sim, &hosts, built);
    plot::all(&figures, &out)?;
    let text = figures.markdown();
    let path = out.join("report.md");
    std::fs::write(&path, &text).map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    println!("\n{text}");
    println!(
        "testnet: report and plots in {}; node logs in {}; {:.1} min in all",
        out.display(),
        dir.display(),
        began.elapsed().as_secs_f64() / 60.0
    );
    let failed = figures.failed_checks();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(
            Error::failed(format!("testnet targets missed: {}", failed.join("; ")))
                .with_fix(format!("the report is {}", path.display())),
        )
    }
}

/// The simulator at the same N and seed, with as many lookups as the
/// testnet found peers (at least 100).
fn run_sim(project: &Project, plan: &Plan, ops: &[Op]) -> Result<String> {
    let finds = ops.iter().filter(|o| o.kind == Kind::Find && o.ok).count();
    let args: Vec<String> = [
        "--nodes".to_owned(),
        plan.nodes.to_string(),
        "--lookups".to_owned(),
        finds.max(100).to_string(),
        "--seed".to_owned(),
        plan.seed.to_string(),
        "--join".to_owned(),
        "protocol".to_owned(),
        "--out".to_owned(),
        std::env::temp_dir()
            .join(format!("{}-sim-{}.svg", nodes::PREFIX, std::process::id()))
            .to_string_lossy()
            .into_owned(),
    ]
    .to_vec();
    println!("testnet: dht-sim {}", args.join(" "));
    crate::sim::report(project, &args, !plan.quick)
}

/// Starts the guard (see the module docs); it ends by itself.
fn spawn_guard(dir: &Path, deadline: u64) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| Error::failed(format!("xtask's path: {e}")))?;
    let log = std::fs::File::create(dir.join("guard.log"))
        .map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
    Command::new(exe)
        .args([
            "testnet-guard".to_owned(),
            std::process::id().to_string(),
            deadline.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start the guard: {e}")))
}

/// `xtask testnet-guard <pid> <deadline>`: waits for xtask `pid` to end, or
/// kills it at `deadline` (seconds since the UNIX epoch); then kills what
/// is left in its namespaces and deletes them.
pub fn guard(args: &[String]) -> Result<()> {
    let number = |i: usize| -> Result<u64> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| Error::failed("usage: xtask testnet-guard <pid> <deadline>"))
    };
    let (pid, deadline) = (number(0)?, number(1)?);
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    while alive() {
        if unix_secs() >= deadline {
            println!("guard: the hard deadline passed: killing xtask {pid}");
            crate::shell::succeeds(Command::new("kill").args(["-9", &pid.to_string()]));
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let ours = format!("{}{pid}-", nodes::PREFIX);
    let left: Vec<String> = netns::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&ours))
        .collect();
    println!(
        "guard: xtask {pid} ended; removing {} namespaces",
        left.len()
    );
    netns::delete(&left);
    Ok(())
}

/// What a run collected.
#[derive(Debug, Default)]
pub struct Data {
    /// Every finished operation.
    pub ops: Vec<Op>,
    /// Every metrics scrape.
    pub scrapes: Vec<Scrape>,
    /// Every node sample.
    pub samples: Vec<Sample>,
    /// Every machine sample.
    pub machine: Vec<Machine>,
    /// (seconds, slot, SIGKILL, fresh identity) of each churn stop.
    pub churn: Vec<(f64, usize, bool, bool)>,
    /// Seconds from the first node's start to the last's.
    pub start_secs: f64,
    /// Where the measurement starts and ends (seconds from the start).
    pub window: (f64, f64),
    /// Node restarts that never printed `started`.
    pub failed_restarts: Vec<String>,
    /// Why the run stopped before its end, if it did.
    pub stopped: Option<String>,
}

/// A run in progress.
struct Run<'a> {
    plan: &'a Plan,
    net: &'a mut Testnet,
    pool: Pool,
    rng: Rng,
    /// Time 0: all nodes started.
    start: Instant,
    data: Data,
    /// Records whose put was acknowledged: (number, seconds).
    records: Vec<(usize, f64)>,
    next_record: usize,
    next_message: usize,
    next_task: usize,
    /// Restarts waiting for their `started` line.
    starting: Vec<nodes::Launched>,
    /// When each kind of operation is next due (seconds).
    due: Due,
}

/// When things are next due, in seconds from the start.
#[derive(Debug, Default)]
struct Due {
    put: f64,
    get: f64,
    find: f64,
    publish: f64,
    task: f64,
    churn: f64,
    sample: f64,
    /// Per slot.
    scrape: Vec<f64>,
}

impl<'a> Run<'a> {
    fn new(plan: &'a Plan, net: &'a mut Testnet) -> Self {
        Self {
            plan,
            net,
            pool: Pool::new(THREADS),
            rng: Rng::new(plan.seed),
            start: Instant::now(),
            data: Data::default(),
            records: Vec::new(),
            next_record: 0,
            next_message: 0,
            next_task: 0,
            starting: Vec::new(),
            due: Due::default(),
        }
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Starts every node, warms up, measures, sweeps the records.
    fn drive(&mut self) -> Result<()> {
        let started = Instant::now();
        let seeds: Vec<_> = (0..SEEDS)
            .map(|i| self.net.launch(i, true))
            .collect::<Result<_>>()?;
        self.net.wait_started(seeds)?;
        let mut next = SEEDS;
        while next < self.plan.nodes {
            let end = (next + BATCH).min(self.plan.nodes);
            let batch: Vec<_> = (next..end)
                .map(|i| self.net.launch(i, true))
                .collect::<Result<_>>()?;
            self.net.wait_started(batch)?;
            next = end;
            self.check_memory(0.0);
            if self.data.stopped.is_some() {
                break;
            }
        }
        self.start = Instant::now();
        self.data.start_secs = started.elapsed().as_secs_f64();
        println!(
            "testnet: {} nodes started in {:.1} s; warming up for {} s",
            self.plan.nodes,
            self.data.start_secs,
            self.plan.warmup().as_secs()
        );
        let from = self.plan.warmup().as_secs_f64();
        let to = from + self.plan.measure().as_secs_f64();
        self.data.window = (from, to);
        let scrape = self.plan.scrape_every().as_secs_f64();
        let nodes = self.plan.nodes as f64;
        self.due.scrape = (0..self.plan.nodes)
            .map(|i| scrape * i as f64 / nodes)
            .collect();
        self.due.put = from;
        self.due.get = from;
        self.due.find = from;
        self.due.publish = from;
        self.due.task = from;
        self.due.churn = from + self.churn_gap();
        let mut shown = from;
        while self.now() < to && self.data.stopped.is_none() {
            self.tick(true);
            if self.now() >= shown {
                self.progress();
                shown += 30.0;
            }
        }
        println!(
            "testnet: measured; reading all {} records once more",
            self.records.len()
        );
        for (key, put_at) in self.records.clone() {
            if let Some(socket) = self.random_live(None) {
                let start = self.start;
                self.pool
                    .submit(workload::get(socket, key, put_at, true, start));
            }
        }
        let until = Instant::now() + Duration::from_secs(60);
        while self.pool.pending() > 0 && Instant::now() < until {
            self.tick(false);
        }
        Ok(())
    }

    /// Seconds between churn stops (infinite without churn).
    fn churn_gap(&self) -> f64 {
        60.0 / (self.plan.churn * self.plan.nodes as f64)
    }

    fn progress(&self) {
        let count = |kind: Kind| {
            let ops: Vec<&Op> = self.data.ops.iter().filter(|o| o.kind == kind).collect();
            format!("{}/{}", ops.iter().filter(|o| o.ok).count(), ops.len())
        };
        let live = self.net.slots.iter().filter(|s| s.live.is_some()).count();
        println!(
            "testnet: t={:.0} s, {live} nodes up, ok/done: put {} get {} find {} publish {} task {}",
            self.now(),
            count(Kind::Put),
            count(Kind::Get),
            count(Kind::Find),
            count(Kind::Publish),
            count(Kind::Task)
        );
    }

    /// One turn of the loop: results in, restarts, churn and operations
    /// due (while `measuring`), samples and scrapes due.
    fn tick(&mut self, measuring: bool) {
        for done in self.pool.collect() {
            match done {
                Done::Op(op) => {
                    if let (Kind::Put, true, Detail::Record { key, .. }) =
                        (op.kind, op.ok, &op.detail)
                    {
                        self.records.push((*key, op.at + op.ms / 1e3));
                    }
                    self.data.ops.push(op);
                }
                Done::Scrape(s) => self.data.scrapes.push(s),
            }
        }
        self.restarts();
        let now = self.now();
        if measuring {
            self.churn(now);
            self.operations(now);
        }
        if now >= self.due.sample {
            self.due.sample = now + if self.plan.quick { 5.0 } else { 10.0 };
            self.data
                .samples
                .extend(sample::nodes(&self.net.slots, now));
            self.check_memory(now);
        }
        let every = self.plan.scrape_every().as_secs_f64();
        for i in 0..self.net.slots.len() {
            let due = self.due.scrape.get(i).copied().unwrap_or(f64::MAX);
            let Some(slot) = self.net.slots.get(i) else {
                continue;
            };
            if now < due {
                continue;
            }
            if let Some(d) = self.due.scrape.get_mut(i) {
                *d = due + every;
            }
            if let Some(node) = &slot.live {
                let job = workload::scrape(node.socket(), i, slot.past.len(), self.start);
                self.pool.submit(job);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Samples the machine; stops the run if memory runs short.
    fn check_memory(&mut self, now: f64) {
        let Some(m) = sample::machine(now) else {
            return;
        };
        if m.available_kib < MEMORY_FLOOR_KIB && self.data.stopped.is_none() {
            let live = self.net.slots.iter().filter(|s| s.live.is_some()).count();
            self.data.stopped = Some(format!(
                "at t={now:.0} s with {live} nodes up, available memory fell to {} MiB (floor {} MiB)",
                m.available_kib / 1024,
                MEMORY_FLOOR_KIB / 1024
            ));
            println!("testnet: {}", self.data.stopped.as_deref().unwrap_or(""));
        }
        self.data.machine.push(m);
    }

    /// Starts the nodes due back, adopts those that printed `started`.
    fn restarts(&mut self) {
        let now = Instant::now();
        for i in 0..self.net.slots.len() {
            let due = self
                .net
                .slots
                .get(i)
                .and_then(|s| s.restart_at)
                .is_some_and(|at| at <= now);
            if !due {
                continue;
            }
            if let Some(slot) = self.net.slots.get_mut(i) {
                slot.restart_at = None;
            }
            // Every other churned node comes back as a fresh one.
            let fresh = self
                .data
                .churn
                .iter()
                .rev()
                .find(|c| c.1 == i)
                .is_some_and(|c| c.3);
            match self.net.launch(i, fresh) {
                Ok(launched) => self.starting.push(launched),
                Err(e) => self.data.failed_restarts.push(e.to_string()),
            }
        }
        let waiting = std::mem::take(&mut self.starting);
        for mut launched in waiting {
            if let Some(line) = launched.proc.last("started") {
                self.net.adopt(launched, &line);
            } else if launched.proc.exited() {
                self.data
                    .failed_restarts
                    .push(format!("{} exited before `started`", launched.proc.name));
            } else {
                self.starting.push(launched);
            }
        }
    }

    /// Stops the next churn victim if one is due.
    fn churn(&mut self, now: f64) {
        if self.plan.churn <= 0.0 || now < self.due.churn {
            return;
        }
        self.due.churn += self.churn_gap();
        let candidates: Vec<usize> = (SUBMITTERS.end..self.net.slots.len())
            .filter(|&i| self.net.slots.get(i).is_some_and(|s| s.live.is_some()))
            .collect();
        let Some(&victim) = self.rng.pick(&candidates) else {
            return;
        };
        let k = self.data.churn.len();
        let (kill, fresh) = (k.is_multiple_of(2), (k / 2) % 2 == 1);
        self.net.stop(victim, kill);
        if let Some(slot) = self.net.slots.get_mut(victim) {
            slot.restart_at = Some(Instant::now() + DOWN);
        }
        self.data.churn.push((now, victim, kill, fresh));
    }

    /// The control socket of a random node up for [`JOINED`], other than
    /// slot `except`.
    fn random_live(&mut self, except: Option<usize>) -> Option<PathBuf> {
        let i = self.random_joined(except)?;
        self.net
            .slots
            .get(i)?
            .live
            .as_ref()
            .map(nodes::Node::socket)
    }

    fn random_joined(&mut self, except: Option<usize>) -> Option<usize> {
        let joined: Vec<usize> = (0..self.net.slots.len())
            .filter(|&i| Some(i) != except)
            .filter(|&i| {
                self.net
                    .slots
                    .get(i)
                    .and_then(|s| s.live.as_ref())
                    .is_some_and(|n| n.up_for(JOINED))
            })
            .collect();
        self.rng.pick(&joined).copied()
    }

    /// Submits the operations due at `now`.
    fn operations(&mut self, now: f64) {
        let start = self.start;
        if now >= self.due.put {
            self.due.put += 4.0;
            let key = self.next_record;
            self.next_record += 1;
            if let Some(socket) = self.random_live(None) {
                self.pool.submit(workload::put(socket, key, start));
            }
        }
        if now >= self.due.get {
            self.due.get += 1.0;
            let record = self.rng.pick(&self.records).copied();
            if let (Some((key, put_at)), Some(socket)) = (record, self.random_live(None)) {
                self.pool
                    .submit(workload::get(socket, key, put_at, false, start));
            }
        }
        if now >= self.due.find {
            self.due.find += 1.0;
            if let Some(from) = self.random_joined(None)
                && let Some(to) = self.random_joined(Some(from))
            {
                let socket = self.net.slots.get(from).and_then(|s| s.live.as_ref());
                let peer = self.net.slots.get(to).and_then(|s| s.live.as_ref());
                if let (Some(socket), Some(peer)) = (socket, peer) {
                    let job = workload::find(socket.socket(), peer.peer_id.clone(), start);
                    self.pool.submit(job);
                }
            }
        }
        if now >= self.due.publish {
            self.due.publish += 2.0;
            let n = self.next_message;
            self.next_message += 1;
            if let Some(socket) = self.random_live(None) {
                self.pool.submit(workload::publish(socket, TOPIC, n, start));
            }
        }
        if now >= self.due.task {
            self.due.task += 1.0;
            // The submitters take turns: one task every 3 s each.
            let n = self.next_task;
            self.next_task += 1;
            let slot = SUBMITTERS.start + n % SUBMITTERS.len();
            let socket = self
                .net
                .slots
                .get(slot)
                .and_then(|s| s.live.as_ref())
                .map(nodes::Node::socket);
            if let Some(socket) = socket {
                let input = format!("task {n} of the testnet");
                self.pool.submit(workload::task(socket, input, start));
            }
        }
    }

    /// The data, once the pool is done.
    fn finish(self) -> Data {
        let Self {
            mut data, mut pool, ..
        } = self;
        let until = Instant::now() + Duration::from_secs(10);
        while pool.pending() > 0 && Instant::now() < until {
            for done in pool.collect() {
                match done {
                    Done::Op(op) => data.ops.push(op),
                    Done::Scrape(s) => data.scrapes.push(s),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        data
    }
}
