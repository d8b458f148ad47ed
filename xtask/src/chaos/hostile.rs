//! The hostile scenario and the soak: a target composed as `knot run`
//! composes a node (host 1, holding a relay reservation at the relay on
//! host 9), a good peer measuring it (host 6), a sink host that counts what
//! reaches it (host 8, a non-consenting third party) and attackers (host
//! 7, from addresses of [`net::ATTACK_NET`](super::net::ATTACK_NET): each
//! attack from its own /24, the slowloris from 16 /24s, since the target
//! bans the address of a peer it bans).
//!
//! **hostile** runs the attacks of [`ATTACKS`] one after the other. Per
//! attack it measures, in its window: the good peer's ping RTT, DHT ping
//! RTT, tasks per second, fresh sessions that got in, and the share of its
//! gossip messages the target delivered; the target's RSS (before, after,
//! most), its jobs and live tasks; the amplification (packets and
//! connections that reach the sink, and connections the target opens to the
//! attacker, per attacker packet); and the attack's own counts. Checks
//! common to every attack: the attacker reported; the good peer's pings
//! were answered, its tasks got done, at least [`JOIN_SHARE`] of its fresh
//! sessions got in and of its gossip messages were delivered; nothing
//! reached the sink or the target's loopback (the amplification towards a
//! non-consenting third party is 0). Each attack adds its own ([`Check`]).
//!
//! **soak** (`--only soak`, not part of `ci`) keeps the target under the
//! same attacks, two at a time in turn, for `--soak-minutes` (default 30):
//! its RSS (`VmRSS`) after the first five minutes stays within
//! [`SOAK_RSS_GROWTH`] of its peak in the fifth minute, the good peer never
//! loses its channel and nothing reaches the sink. The report shows the
//! anonymous part (`RssAnon`: heap and stacks) beside it; the rest is the
//! executable's pages (about 14 MiB of the debug target, flat). So that the baseline is a steady state and
//! the rule catches leaks, not bounded stores still filling, every pair of
//! attacks runs once in the first four minutes ([`SOAK_WINDOW`]) and the
//! target's stores that fresh identities, keys and records fill are given
//! small caps ([`SOAK_CAPS`]: DHT records, which a slow-reader session grows
//! by one 8 KiB record of a fresh identity; provider announcements; the ban
//! list; the cache of known static keys; gossip's state per origin). The
//! target's own gossip counter keeps ids for one to two minutes only, so
//! what grows is the node's (a heaptrack of the soak found the counter's id
//! set of the whole run to be a third of the target's heap at minute 20).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::counters::{self, Counters, Counts};
use super::net::host_ip;
use super::{ATTACKER, CLIENT, Ctx, Outcome, RSS_BOUND_MIB};
use crate::error::{Error, Result};
use crate::json;
use crate::proc::{Line, Proc};

mod report;
use report::{HEADER, MIB, judge, seen};

/// The sink host: counts what reaches it.
const SINK: usize = 8;
/// The relay host.
const RELAY: usize = 9;
/// The target's host.
const TARGET: usize = 1;
/// The share of the good peer's fresh sessions that must get in, and of its
/// gossip messages the target must deliver, during every attack.
const JOIN_SHARE: f64 = 0.9;
/// The target's gossip seen-cache in these scenarios (the default is 120 s;
/// the replay attack waits this long plus a second).
const SEEN_MS: u64 = 3000;
/// How long the target's counters and logs get after an attack ends before
/// they are read (a reflection comes after the attacker left).
const SETTLE: Duration = Duration::from_secs(2);
/// Growth of the soak target's RSS allowed after the first five minutes,
/// over its peak in the fifth minute.
pub const SOAK_RSS_GROWTH: f64 = 0.10;

/// What an attack must achieve beyond the common checks.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// The target cut the attacker, naming each of these in its log.
    Cut(&'static [&'static str]),
    /// H1: the target accepted no circuit from a peer that is no relay of ours.
    NoCircuit,
    /// H2: the target opened at most this many connections to the attacker
    /// per punch (its documented redial schedule: every 100 ms for the 5 s
    /// handshake timeout).
    PunchBound(u64),
    /// H3: the common checks (nothing at the sink) say it all.
    Reflection,
    /// H4: the target holds at most this many of the attacker's provider
    /// keys, and its RSS grew by at most `mib` from before to after.
    Providers { keys: u64, mib: u64 },
    /// H5: the target's RSS grew by at most this many MiB from before to
    /// after, and its jobs went back to where they were.
    Jobs(u64),
    /// H6, M8: the target's live tasks rose by at most `tasks` and its RSS
    /// by at most `mib` (most during the attack, over before).
    SlowReader { tasks: u64, mib: u64 },
    /// M1: the target closed the forger's channels (a bad signature costs
    /// the sender).
    Charged,
    /// M2: the target delivered no message twice.
    NoReplay,
}

/// How many source addresses an attack uses, and from how many /24s.
#[derive(Clone, Copy, Debug)]
enum Spread {
    /// 32 addresses of one /24.
    One24,
    /// 16 addresses, one in each of 16 /24s.
    Sixteen24s,
}

/// One attack of the scenario.
#[derive(Clone, Copy, Debug)]
pub struct Attack {
    kind: &'static str,
    /// The review's finding, or the defence it probes.
    finding: &'static str,
    spread: Spread,
    check: Check,
    /// Seconds in the quick run (the full run adds half).
    secs: u64,
}

/// The attacks of the hostile scenario, in order: the slow reader late (on
/// code without the H6 fix the target's memory stays high after it), the
/// replay last (on code without the M2 fix it gets the good peer's address
/// banned).
const ATTACKS: &[Attack] = &[
    Attack {
        kind: "conn-flood",
        finding: "limits",
        spread: Spread::One24,
        check: Check::Cut(&[
            "too many connections from this ip",
            "over its handshake start budget",
        ]),
        secs: 6,
    },
    Attack {
        kind: "slowloris",
        finding: "idle",
        spread: Spread::Sixteen24s,
        check: Check::Cut(&[
            "over its handshake start budget",
            "evicted from its pending handshake slot",
        ]),
        secs: 8,
    },
    Attack {
        kind: "oversized",
        finding: "meter",
        spread: Spread::One24,
        check: Check::Cut(&["offence=Oversized", "banned for misbehaviour"]),
        secs: 5,
    },
    Attack {
        kind: "garbage",
        finding: "framing",
        spread: Spread::One24,
        check: Check::Cut(&["bad framing"]),
        secs: 5,
    },
    Attack {
        kind: "unknown",
        finding: "meter",
        spread: Spread::One24,
        check: Check::Cut(&["offence=UnknownMessage"]),
        secs: 5,
    },
    Attack {
        kind: "dht-flood",
        finding: "budget",
        spread: Spread::One24,
        check: Check::Cut(&["offence=OverBudget"]),
        secs: 5,
    },
    Attack {
        kind: "gossip-flood",
        finding: "origin",
        spread: Spread::One24,
        check: Check::Cut(&["gossip flood: closing"]),
        secs: 5,
    },
    Attack {
        kind: "relay-incoming",
        finding: "H1",
        spread: Spread::One24,
        check: Check::NoCircuit,
        secs: 6,
    },
    Attack {
        kind: "punch",
        finding: "H2",
        spread: Spread::One24,
        check: Check::PunchBound(50),
        secs: 6,
    },
    Attack {
        kind: "dht-reflect",
        finding: "H3",
        spread: Spread::One24,
        check: Check::Reflection,
        secs: 5,
    },
    Attack {
        kind: "provider-flood",
        finding: "H4",
        spread: Spread::One24,
        check: Check::Providers {
            keys: 4096,
            mib: 16,
        },
        secs: 6,
    },
    Attack {
        kind: "job-leak",
        finding: "H5",
        spread: Spread::One24,
        check: Check::Jobs(8),
        secs: 6,
    },
    Attack {
        kind: "gossip-badsig",
        finding: "M1",
        spread: Spread::One24,
        check: Check::Charged,
        secs: 5,
    },
    Attack {
        kind: "dht-slow",
        finding: "H6 M8",
        spread: Spread::One24,
        check: Check::SlowReader {
            tasks: 500,
            mib: 32,
        },
        secs: 6,
    },
    Attack {
        kind: "gossip-replay",
        finding: "M2",
        spread: Spread::One24,
        check: Check::NoReplay,
        secs: 9,
    },
];

/// UNIX seconds now (the good peer and the target stamp gossip with them).
fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Hands out /24 blocks of the attack network, 512 of them, round robin.
#[derive(Debug, Default)]
struct Blocks(u32);

impl Blocks {
    /// `n` (a power of two up to 256) aligned /24s as a CIDR.
    fn take(&mut self, n: u32) -> String {
        let mut first = self.0.div_ceil(n) * n;
        if first + n > 512 {
            first = 0;
        }
        self.0 = first + n;
        let len = 24 - n.trailing_zeros();
        format!("10.{}.{}.0/{len}", 210 + first / 256, first % 256)
    }
}

/// The processes and counters both scenarios run on.
struct Bed<'a> {
    ctx: &'a Ctx<'a>,
    target: Proc,
    good: Proc,
    // Kept running for the target's reservation.
    _relay: Proc,
    target_addr: String,
    relayed: String,
    counters: Counters<'a>,
    blocks: Blocks,
    /// The target's RSS samples (KiB) and when.
    rss: Vec<(Instant, u64)>,
    /// The target's anonymous resident memory (KiB), sampled with `rss`.
    anon: Vec<(Instant, u64)>,
}

impl<'a> Bed<'a> {
    /// The bed, its target started with `target_extra` arguments too.
    fn new(ctx: &'a Ctx<'a>, port: u16, good_secs: u64, target_extra: &[String]) -> Result<Self> {
        ctx.net.attack_routes(ATTACKER)?;
        let relay_addr = ctx.addr(RELAY, port + 9);
        let mut relay = ctx.start(
            "relay",
            RELAY,
            "relay",
            &["--listen".to_owned(), relay_addr.clone()],
            "info",
        )?;
        relay.wait_for("started", Duration::from_secs(30), |_| true)?;
        let target_addr = ctx.addr(TARGET, port);
        let args = [
            "--listen",
            &target_addr,
            "--relay",
            &relay_addr,
            "--gossip-seen-ms",
            &SEEN_MS.to_string(),
        ]
        .map(str::to_owned);
        let args = [&args[..], target_extra].concat();
        let mut target = ctx.start(
            "target",
            TARGET,
            "target",
            &args,
            "info,knotwork_node=debug",
        )?;
        target.wait_for("started", Duration::from_secs(30), |_| true)?;
        let relayed = target.wait_for("relayed", Duration::from_secs(30), |_| true)?;
        let relayed = json::field(&relayed.text, "addr")
            .ok_or_else(|| Error::failed("the target's relayed line has no address"))?
            .to_owned();
        let good_args =
            ["--target", &target_addr, "--secs", &good_secs.to_string()].map(str::to_owned);
        let mut good = ctx.start(
            "good",
            CLIENT,
            "good",
            &good_args,
            "info,knotwork_node=debug",
        )?;
        good.wait_for("ready", Duration::from_secs(30), |_| true)?;
        let counters = Counters::install(ctx.net, TARGET, ATTACKER, SINK)?;
        Ok(Self {
            ctx,
            target,
            good,
            _relay: relay,
            target_addr,
            relayed,
            counters,
            blocks: Blocks::default(),
            rss: Vec::new(),
            anon: Vec::new(),
        })
    }

    fn sample_rss(&mut self) -> Option<u64> {
        let kib = self.target.rss_kib()?;
        let now = Instant::now();
        self.rss.push((now, kib));
        if let Some(anon) = self.target.anon_kib() {
            self.anon.push((now, anon));
        }
        Some(kib)
    }

    /// Whether the good peer reported its channel to the target closed.
    fn good_lost_channel(&self) -> bool {
        self.good
            .events("sample")
            .iter()
            .any(|l| json::field(&l.text, "open") == Some("false"))
            || !self.good.events("disconnected").is_empty()
    }

    /// Samples the target's RSS every 200 ms for `d`.
    fn watch(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.sample_rss();
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts `attack` for `secs` from its own block of addresses.
    fn launch(&mut self, attack: &Attack, secs: u64, name: &str) -> Result<Proc> {
        let (blocks, count) = match attack.spread {
            Spread::One24 => (1, 32),
            Spread::Sixteen24s => (16, 16),
        };
        let sources = self.blocks.take(blocks);
        let args = [
            "--target",
            &self.target_addr,
            "--attack",
            attack.kind,
            "--secs",
            &secs.to_string(),
            "--sources",
            &sources,
            "--source-count",
            &count.to_string(),
            "--sink",
            &host_ip(SINK),
            "--relayed",
            &self.relayed,
            "--replay-after-ms",
            &(SEEN_MS + 1000).to_string(),
        ]
        .map(str::to_owned);
        self.ctx.start(name, ATTACKER, "attacker", &args, "warn")
    }
}

/// One attack's window and what was read around it.
struct Run {
    attack: Attack,
    attacker: Proc,
    from: Instant,
    to: Instant,
    /// Whole UNIX seconds inside the window.
    secs: (u64, u64),
    counts: Counts,
    rss_before: u64,
    rss_after: u64,
}

/// Runs `attack` for `secs` and waits [`SETTLE`] after it.
fn run(bed: &mut Bed<'_>, attack: &Attack, secs: u64) -> Result<Run> {
    let rss_before = bed.sample_rss().unwrap_or(0);
    let before = bed.counters.read()?;
    let (from, unix_from) = (Instant::now(), unix_secs());
    let mut attacker = bed.launch(attack, secs, &format!("attacker-{}", attack.kind))?;
    let limit = Duration::from_secs(secs + 30);
    while !attacker.exited() && from.elapsed() < limit {
        bed.sample_rss();
        std::thread::sleep(Duration::from_millis(200));
    }
    let (to, unix_to) = (Instant::now(), unix_secs());
    bed.watch(SETTLE);
    let rss_after = bed.sample_rss().unwrap_or(0);
    let counts = bed.counters.read()?.since(&before);
    Ok(Run {
        attack: *attack,
        attacker,
        from,
        to,
        secs: (unix_from + 1, unix_to),
        counts,
        rss_before,
        rss_after,
    })
}

pub(super) fn hostile(ctx: &Ctx<'_>, outcome: &mut Outcome) -> Result<()> {
    let mut bed = Bed::new(ctx, 4140, 3600, &[])?;
    let quick = ctx.sizes.quick;
    let baseline_from = Instant::now();
    let baseline_secs = unix_secs() + 1;
    bed.watch(Duration::from_secs(4));
    let baseline = seen(
        &bed,
        baseline_from,
        Instant::now(),
        (baseline_secs, unix_secs()),
    );
    let rss_idle = bed.sample_rss().unwrap_or(0);
    outcome.figure(format!(
        "baseline: RTT p50 {} ms, DHT {} ms, {:.0} tasks/s, new sessions {}/{}",
        baseline.rtt_p50.map_or("-".into(), |v| format!("{v:.1}")),
        baseline.dht_p50.map_or("-".into(), |v| format!("{v:.1}")),
        baseline.tasks_per_sec,
        baseline.joined,
        baseline.joined + baseline.refused
    ));
    outcome.header(HEADER);
    let mut runs = Vec::new();
    for attack in ATTACKS {
        let secs = if quick {
            attack.secs
        } else {
            attack.secs * 3 / 2
        };
        runs.push(run(&mut bed, attack, secs)?);
    }
    // The target reports a second of gossip 3 s after it.
    bed.watch(Duration::from_secs(4));
    let log = std::fs::read_to_string(&bed.target.log).unwrap_or_default();
    for r in &runs {
        judge(&bed, r, &log, outcome);
    }
    outcome.check(
        !bed.good_lost_channel(),
        "the good peer's channel to the target closed",
    );
    let rss_max = bed.rss.iter().map(|(_, k)| *k).max().unwrap_or(0);
    outcome.figure(format!(
        "target RSS idle {} MiB, max {} MiB (bound {RSS_BOUND_MIB} MiB)",
        rss_idle / 1024,
        rss_max / 1024
    ));
    outcome.check(rss_max > 0, "the target's RSS was never read");
    outcome.check(
        rss_max < RSS_BOUND_MIB * 1024,
        format!("the target's RSS reached {} MiB", rss_max / 1024),
    );
    Ok(())
}

/// Attack windows of the soak, two attacks at a time: with the time to
/// start and stop them, the pairs of all attacks run within four minutes.
const SOAK_WINDOW: u64 = 12;
/// The soak target's caps (see the module docs), as arguments of the
/// chaos target. Measured in earlier soaks: ~1,000 bans (so as many fresh
/// identities) by minute 6, ~9,000 provider keys per provider-flood run,
/// the 32 records within the first rotation; how fast fresh gossip origins
/// reach 256 was not measured.
const SOAK_CAPS: [(&str, usize); 5] = [
    ("--dht-max-records", 32),
    ("--dht-max-providers", 256),
    ("--max-bans", 256),
    ("--known-peers", 128),
    ("--gossip-max-origins", 256),
];

/// A memory series of the soak: its first sample, its peak in the fifth
/// minute, its peak after that and its last sample (KiB).
struct Growth {
    first: u64,
    peak5: u64,
    later_max: u64,
    last: u64,
}

impl Growth {
    fn of(samples: &[(Instant, u64)], began: Instant) -> Self {
        let five = began + Duration::from_secs(5 * 60);
        let four = began + Duration::from_secs(4 * 60);
        let max = |keep: &dyn Fn(Instant) -> bool| {
            samples
                .iter()
                .filter(|(t, _)| keep(*t))
                .map(|(_, k)| *k)
                .max()
                .unwrap_or(0)
        };
        Self {
            first: samples.first().map_or(0, |(_, k)| *k),
            peak5: max(&|t| t >= four && t < five),
            later_max: max(&|t| t >= five),
            last: samples.last().map_or(0, |(_, k)| *k),
        }
    }

    /// Whether the peak after minute 5 is within `share` of minute 5's.
    fn within(&self, share: f64) -> bool {
        self.peak5 > 0 && self.later_max as f64 <= self.peak5 as f64 * (1.0 + share)
    }

    fn describe(&self) -> String {
        format!(
            "start {:.1} MiB, peak in minute 5 {:.1} MiB, peak after {:.1} MiB ({:+.1} %), end {:.1} MiB",
            self.first as f64 / MIB,
            self.peak5 as f64 / MIB,
            self.later_max as f64 / MIB,
            100.0 * (self.later_max as f64 / self.peak5.max(1) as f64 - 1.0),
            self.last as f64 / MIB
        )
    }
}

pub(super) fn soak(ctx: &Ctx<'_>, outcome: &mut Outcome) -> Result<()> {
    let minutes = ctx.sizes.soak_minutes;
    let total = Duration::from_secs(minutes * 60);
    let caps: Vec<String> = SOAK_CAPS
        .iter()
        .flat_map(|(arg, cap)| [(*arg).to_owned(), cap.to_string()])
        .collect();
    let mut bed = Bed::new(ctx, 4150, minutes * 60 + 600, &caps)?;
    let began = Instant::now();
    let mut per_kind: HashMap<&str, (u64, f64, f64, f64)> = HashMap::new();
    let mut round = 0usize;
    let mut attackers: Vec<Proc> = Vec::new();
    println!("chaos: soak for {minutes} min, two attacks at a time, {SOAK_WINDOW} s each");
    while began.elapsed() < total {
        let half = ATTACKS.len() / 2;
        let pair: Vec<&Attack> = [round, round + half]
            .iter()
            .filter_map(|i| ATTACKS.get(i % ATTACKS.len()))
            .collect();
        round += 1;
        let mut running = Vec::new();
        for (i, attack) in pair.iter().enumerate() {
            running.push((
                attack.kind,
                bed.launch(
                    attack,
                    SOAK_WINDOW,
                    &format!("soak-{round}-{i}-{}", attack.kind),
                )?,
            ));
        }
        let from = Instant::now();
        while running.iter_mut().any(|(_, p)| !p.exited())
            && from.elapsed() < Duration::from_secs(SOAK_WINDOW + 30)
        {
            bed.watch(Duration::from_secs(1));
        }
        for (kind, p) in running {
            let entry = per_kind.entry(kind).or_default();
            if let Some(l) = p.last("attack") {
                entry.0 += 1;
                entry.1 += json::num(&l.text, "attempts");
                entry.2 += json::num(&l.text, "cut");
                entry.3 += json::num(&l.text, "sent");
            }
            // Keep only the latest: each holds its output in memory.
            attackers.push(p);
            if attackers.len() > 4 {
                attackers.remove(0);
            }
        }
        let mins = began.elapsed().as_secs() / 60;
        let kib = bed.sample_rss().unwrap_or(0);
        println!(
            "chaos: soak {mins} min, round {round}, target RSS {} MiB",
            kib / 1024
        );
    }
    let counts = bed.counters.read()?;
    let rss = Growth::of(&bed.rss, began);
    let anon = Growth::of(&bed.anon, began);
    let s = seen(
        &bed,
        began,
        Instant::now(),
        (
            unix_secs().saturating_sub(minutes * 60),
            unix_secs().saturating_sub(4),
        ),
    );
    outcome.figure(format!(
        "{minutes} min, {round} rounds; target RSS {}; of it anonymous (heap, stacks) {}",
        rss.describe(),
        anon.describe()
    ));
    outcome.figure(format!(
        "good peer: RTT p50 {} ms, DHT {} ms, {:.1} tasks/s, joins {}/{}, gossip {}/{}",
        s.rtt_p50.map_or("-".into(), |v| format!("{v:.1}")),
        s.dht_p50.map_or("-".into(), |v| format!("{v:.1}")),
        s.tasks_per_sec,
        s.joined,
        s.joined + s.refused,
        s.delivered,
        s.published
    ));
    outcome.figure(format!(
        "sink got {} packets ({} SYNs), target loopback {} SYNs, of {} attacker packets",
        counts.packets(counters::TO_SINK),
        counts.packets(counters::SYN_TO_SINK),
        counts.packets(counters::LOOPBACK_SYN),
        counts.packets(counters::ATTACKER_OUT)
    ));
    outcome.header(&["attack", "runs", "attempts", "cut", "sent"]);
    let mut kinds: Vec<_> = per_kind.into_iter().collect();
    kinds.sort_by_key(|(k, _)| ATTACKS.iter().position(|a| a.kind == *k));
    for (kind, (runs, attempts, cut, sent)) in kinds {
        outcome.row(vec![
            kind.to_owned(),
            runs.to_string(),
            attempts.to_string(),
            cut.to_string(),
            sent.to_string(),
        ]);
    }
    if minutes >= 6 {
        outcome.check(
            rss.within(SOAK_RSS_GROWTH),
            format!(
                "the target's RSS after 5 min peaked at {:.1} MiB, over {:.0} % above its minute-5 peak {:.1} MiB",
                rss.later_max as f64 / MIB,
                SOAK_RSS_GROWTH * 100.0,
                rss.peak5 as f64 / MIB
            ),
        );
    } else {
        outcome.figure("shorter than 6 min: the RSS rule is not checked");
    }
    outcome.check(
        !bed.good_lost_channel(),
        "the good peer lost its channel to the target",
    );
    outcome.check(
        counts.packets(counters::TO_SINK) == 0 && counts.packets(counters::LOOPBACK_SYN) == 0,
        "packets reached the sink or the target's loopback",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_and_wrap() {
        let mut b = Blocks::default();
        assert_eq!(b.take(1), "10.210.0.0/24");
        assert_eq!(b.take(16), "10.210.16.0/20");
        assert_eq!(b.take(1), "10.210.32.0/24");
        let mut b = Blocks(510);
        assert_eq!(b.take(1), "10.211.254.0/24");
        assert_eq!(b.take(16), "10.210.0.0/20");
    }
}
