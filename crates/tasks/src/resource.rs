//! Resource: each node samples its CPU, memory and load and shares them.
//!
//! Every [`ResourceConfig::interval`] (30 s by default) the node samples
//! itself: CPU use from the change of the busy and total jiffies in
//! `/proc/stat` since the previous sample (since boot for the first one),
//! memory in use as `MemTotal - MemAvailable` from `/proc/meminfo`, and the
//! one-minute load average from `/proc/loadavg`. Where `/proc` cannot be
//! read (not Linux, or a sandbox) the fields it would fill are reported as
//! zero, documented fallback rather than an error: such a node looks idle.
//! The sample is sent as a [`ResourceReport`] to every peer running the
//! protocol, and to each new peer as soon as its channel opens. A received
//! report is checked ([`ResourceReport::validate`]: finite, in range) and
//! kept with its arrival time in the [`ResourceTable`];
//! [`Resources::get_peer_resources`] answers from it with the report's age.
//! Task placement orders peers by [`ResourceReport::busy_score`].
//!
//! The parsers and the table are sans-IO (text and time in); the driver
//! reads the files and owns the timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knotwork_core::PeerId;
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

use crate::metrics::TaskMetrics as Metrics;
use knotwork_core::lock;
use knotwork_node::Channel;
use knotwork_node::RateBudget;

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/resource";
/// The channel budget of reports: one per interval is honest.
pub const BUDGET: RateBudget = RateBudget::new(1.0, 5);
/// The score of a peer without a report: as busy as a fully loaded one.
pub const UNKNOWN_BUSY_SCORE: f64 = 1.0;

/// One node's resource usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// CPU use over the last interval, 0–100 %.
    pub cpu_percent: f32,
    /// Memory in use, bytes.
    pub mem_used: u64,
    /// Memory installed, bytes (0 if unknown).
    pub mem_total: u64,
    /// One-minute load average.
    pub load1: f32,
    /// CPU cores.
    pub cores: u16,
}

impl Message for ResourceReport {
    const NAME: &'static str = "knot/resource/report/1";
    // cpu f32 4 + mem_used varint 10 + mem_total varint 10 + load1 f32 4 + cores varint 3.
    const MAX_BYTES: usize = 4 + 10 + 10 + 4 + 3;
}

/// Why a report or a `/proc` file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    // --- A peer's report is out of range ------------------------------------
    /// CPU use not within 0–100 or not finite.
    #[error("bad cpu percentage")]
    BadCpu,
    /// Memory in use above memory installed.
    #[error("bad memory figures")]
    BadMemory,
    /// Load average negative or not finite.
    #[error("bad load average")]
    BadLoad,
    // --- A /proc file does not parse ------------------------------------------
    /// The named `/proc` file lacks a field or has a non-number.
    #[error("unparsable {0}")]
    Proc(&'static str),
}

impl ResourceReport {
    /// Checks that every figure is finite and in range.
    pub fn validate(&self) -> Result<(), ResourceError> {
        if !self.cpu_percent.is_finite() || !(0.0..=100.0).contains(&self.cpu_percent) {
            return Err(ResourceError::BadCpu);
        }
        if self.mem_total > 0 && self.mem_used > self.mem_total {
            return Err(ResourceError::BadMemory);
        }
        if !self.load1.is_finite() || self.load1 < 0.0 {
            return Err(ResourceError::BadLoad);
        }
        Ok(())
    }

    /// How busy the node is, about 0 (idle) to 2+ (saturated): CPU share
    /// plus load per core, plus half the memory share.
    pub fn busy_score(&self) -> f64 {
        let cores = f64::from(self.cores.max(1));
        let mem = if self.mem_total == 0 {
            0.0
        } else {
            self.mem_used as f64 / self.mem_total as f64
        };
        f64::from(self.cpu_percent) / 100.0 + f64::from(self.load1) / cores + mem / 2.0
    }
}

/// Busy and total jiffies of all CPUs, from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Jiffies not idle.
    pub busy: u64,
    /// All jiffies.
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_cpu_times(stat: &str) -> Result<CpuTimes, ResourceError> {
    let err = ResourceError::Proc("/proc/stat");
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or(err.clone())?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| err.clone())?;
    // user nice system idle iowait irq softirq steal (guest fields are in user).
    let idle = fields.get(3).copied().ok_or(err.clone())? + fields.get(4).copied().unwrap_or(0);
    let total: u64 = fields.iter().take(8).sum();
    Ok(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// CPU use in % between two samples (from boot when `prev` is `None`).
pub fn cpu_percent(prev: Option<CpuTimes>, now: CpuTimes) -> f32 {
    let prev = prev.unwrap_or(CpuTimes { busy: 0, total: 0 });
    let total = now.total.saturating_sub(prev.total);
    let busy = now.busy.saturating_sub(prev.busy);
    if total == 0 {
        return 0.0;
    }
    (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0) as f32
}

/// Parses `/proc/meminfo` into (used, total) bytes.
pub fn parse_meminfo(meminfo: &str) -> Result<(u64, u64), ResourceError> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    };
    let err = ResourceError::Proc("/proc/meminfo");
    let total = field("MemTotal:").ok_or(err.clone())?;
    let available = field("MemAvailable:").ok_or(err)?;
    Ok((total.saturating_sub(available), total))
}

/// Parses the one-minute load average from `/proc/loadavg`.
pub fn parse_loadavg(loadavg: &str) -> Result<f32, ResourceError> {
    loadavg
        .split_whitespace()
        .next()
        .and_then(|f| f.parse::<f32>().ok())
        .filter(|l| l.is_finite() && *l >= 0.0)
        .ok_or(ResourceError::Proc("/proc/loadavg"))
}

/// Samples this machine; keeps the previous CPU times.
#[derive(Debug, Default)]
pub struct Sampler {
    prev: Option<CpuTimes>,
}

impl Sampler {
    /// Reads `/proc` now; fields it cannot read are zero (see module docs).
    pub fn sample(&mut self) -> ResourceReport {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_percent = match parse_cpu_times(&read("/proc/stat")) {
            Ok(now) => {
                let pct = cpu_percent(self.prev, now);
                self.prev = Some(now);
                pct
            }
            Err(_) => 0.0,
        };
        let (mem_used, mem_total) = parse_meminfo(&read("/proc/meminfo")).unwrap_or((0, 0));
        let cores = std::thread::available_parallelism()
            .map(|n| u16::try_from(n.get()).unwrap_or(u16::MAX))
            .unwrap_or(1);
        ResourceReport {
            cpu_percent,
            mem_used,
            mem_total,
            load1: parse_loadavg(&read("/proc/loadavg")).unwrap_or(0.0),
            cores,
        }
    }
}

/// A peer's latest report and how old it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerResources {
    /// The report.
    pub report: ResourceReport,
    /// Time since it arrived.
    pub age: Duration,
}

/// The latest report of each peer, with its arrival time (sans-IO).
#[derive(Debug, Default)]
pub struct ResourceTable {
    reports: HashMap<PeerId, (ResourceReport, Instant)>,
}

impl ResourceTable {
    /// Records `report` from `peer`, arrived at `now`, if it is valid.
    pub fn insert(
        &mut self,
        peer: PeerId,
        report: ResourceReport,
        now: Instant,
    ) -> Result<(), ResourceError> {
        report.validate()?;
        self.reports.insert(peer, (report, now));
        Ok(())
    }

    /// `peer`'s latest report and its age at `now`.
    pub fn get(&self, peer: &PeerId, now: Instant) -> Option<PeerResources> {
        self.reports.get(peer).map(|(report, at)| PeerResources {
            report: *report,
            age: now.saturating_duration_since(*at),
        })
    }

    /// Forgets `peer`.
    pub fn remove(&mut self, peer: &PeerId) {
        self.reports.remove(peer);
    }
}

/// Settings of the resource protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceConfig {
    /// Time between samples (and reports).
    pub interval: Duration,
}

impl Default for ResourceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
        }
    }
}

struct Inner {
    config: ResourceConfig,
    table: Mutex<ResourceTable>,
    local: Mutex<Option<ResourceReport>>,
    channels: Mutex<HashMap<PeerId, Channel>>,
    metrics: Metrics,
}

/// The resource protocol of a node ([`crate::TasksService::resources`]); cheap to clone.
#[derive(Clone)]
pub struct Resources {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources").finish_non_exhaustive()
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Resources {
    pub(crate) fn new(config: ResourceConfig, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                table: Mutex::new(ResourceTable::default()),
                local: Mutex::new(None),
                channels: Mutex::new(HashMap::new()),
                metrics,
            }),
        }
    }

    /// `peer`'s latest report with its age, if one arrived.
    pub fn get_peer_resources(&self, peer: &PeerId) -> Option<PeerResources> {
        lock(&self.inner.table).get(peer, now())
    }

    /// This node's latest sample.
    pub fn local(&self) -> Option<ResourceReport> {
        *lock(&self.inner.local)
    }

    /// `peer`'s [`ResourceReport::busy_score`], or [`UNKNOWN_BUSY_SCORE`].
    pub fn busy_score(&self, peer: &PeerId) -> f64 {
        self.get_peer_resources(peer)
            .map_or(UNKNOWN_BUSY_SCORE, |r| r.report.busy_score())
    }

    /// Samples every interval and reports to every peer. Runs until the
    /// node stops.
    pub(crate) async fn drive(self) {
        let mut sampler = Sampler::default();
        let mut ticker = tokio::time::interval(self.inner.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let report = sampler.sample();
            *lock(&self.inner.local) = Some(report);
            let channels: Vec<Channel> = lock(&self.inner.channels).values().cloned().collect();
            for ch in channels {
                // A peer whose queue stays full misses this report, not the others.
                let _ = tokio::time::timeout(self.inner.config.interval, ch.send(&report)).await;
            }
        }
    }

    /// The protocol on one channel: subscribes, then returns the job.
    pub(crate) fn protocol(
        &self,
        channel: &Channel,
    ) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut reports = channel.subscribe::<ResourceReport>();
        let this = self.clone();
        let channel = channel.clone();
        let peer = channel.remote_peer_id();
        lock(&this.inner.channels).insert(peer, channel.clone());
        async move {
            let _registered = Registered {
                resources: this.clone(),
                channel: channel.clone(),
            };
            let first = this.local();
            if let Some(report) = first {
                let _ = channel.send(&report).await;
            }
            while let Some(report) = reports.recv().await {
                match lock(&this.inner.table).insert(peer, report, now()) {
                    Ok(()) => this.inner.metrics.resource_report(),
                    Err(e) => tracing::debug!(peer = %peer.short(), "resource report refused: {e}"),
                }
            }
        }
    }
}

/// Forgets a peer's channel and report when its job ends or is aborted.
struct Registered {
    resources: Resources,
    channel: Channel,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let peer = self.channel.remote_peer_id();
        let mut map = lock(&self.resources.inner.channels);
        if map.get(&peer).is_some_and(|c| c.same(&self.channel)) {
            map.remove(&peer);
            lock(&self.resources.inner.table).remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    const STAT: &str = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 100 0 50 800 50 0 0 0 0 0\nintr 1\n";
    const STAT2: &str = "cpu  200 0 100 850 50 0 0 0 0 0\n";

    #[test]
    fn cpu_times_and_percentage() {
        let a = parse_cpu_times(STAT).unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 150,
                total: 1000
            }
        );
        let b = parse_cpu_times(STAT2).unwrap();
        assert_eq!(cpu_percent(Some(a), b), 75.0, "150 busy of 200");
        assert_eq!(cpu_percent(None, a), 15.0, "since boot");
        assert_eq!(cpu_percent(Some(b), b), 0.0, "no time passed");
        assert_eq!(
            parse_cpu_times("cpu  1 x 3\n"),
            Err(ResourceError::Proc("/proc/stat"))
        );
        assert_eq!(
            parse_cpu_times("intr 1\n"),
            Err(ResourceError::Proc("/proc/stat"))
        );
    }

    #[test]
    fn meminfo_and_loadavg() {
        let mem = "MemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:   4000 kB\n";
        assert_eq!(parse_meminfo(mem), Ok((12000 * 1024, 16000 * 1024)));
        assert_eq!(
            parse_meminfo("MemTotal: 1 kB\n"),
            Err(ResourceError::Proc("/proc/meminfo"))
        );
        assert_eq!(parse_loadavg("0.52 0.40 0.30 1/200 999\n"), Ok(0.52));
        assert_eq!(
            parse_loadavg("nan 1 1"),
            Err(ResourceError::Proc("/proc/loadavg"))
        );
    }

    #[test]
    fn sampler_reads_this_machine() {
        let r = Sampler::default().sample();
        assert!(r.validate().is_ok());
        assert!(r.cores >= 1);
        if cfg!(target_os = "linux") {
            assert!(r.mem_total > 0 && r.mem_used <= r.mem_total);
        }
    }

    #[test]
    fn bad_reports_name_their_fault() {
        let ok = ResourceReport {
            cpu_percent: 50.0,
            mem_used: 1,
            mem_total: 2,
            load1: 0.5,
            cores: 2,
        };
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut ResourceReport)| {
            let mut r = ok;
            f(&mut r);
            r.validate()
        };
        assert_eq!(bad(|r| r.cpu_percent = 101.0), Err(ResourceError::BadCpu));
        assert_eq!(
            bad(|r| r.cpu_percent = f32::NAN),
            Err(ResourceError::BadCpu)
        );
        assert_eq!(bad(|r| r.mem_used = 3), Err(ResourceError::BadMemory));
        assert_eq!(bad(|r| r.load1 = -1.0), Err(ResourceError::BadLoad));
        assert_eq!(
            bad(|r| r.load1 = f32::INFINITY),
            Err(ResourceError::BadLoad)
        );
    }

    #[test]
    fn table_ages_reports_and_refuses_bad_ones() {
        let t0 = Instant::now();
        let peer = Keypair::generate().unwrap().peer_id();
        let mut table = ResourceTable::default();
        let report = ResourceReport {
            cores: 4,
            load1: 2.0,
            ..ResourceReport::default()
        };
        table.insert(peer, report, t0).unwrap();
        let got = table.get(&peer, t0 + Duration::from_secs(7)).unwrap();
        assert_eq!((got.report, got.age), (report, Duration::from_secs(7)));
        assert_eq!(got.report.busy_score(), 0.5);
        let bad = ResourceReport {
            cpu_percent: -1.0,
            ..report
        };
        assert_eq!(table.insert(peer, bad, t0), Err(ResourceError::BadCpu));
        assert_eq!(
            table.get(&peer, t0).unwrap().report,
            report,
            "kept the good one"
        );
        table.remove(&peer);
        assert!(table.get(&peer, t0).is_none());
    }
}
