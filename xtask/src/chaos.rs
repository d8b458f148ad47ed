//! `cargo xtask chaos [--quick] [--allow-skip] [--only SCENARIO]
//! [--soak-minutes N]`: faults and hostile load against real node processes
//! in network namespaces (root).
//!
//! Nine host namespaces hang off one router ([`net`]); each scenario starts
//! fresh processes of the `chaos` example of `knotwork-knot` (roles worker,
//! target, relay, submitter, good, attacker; [`crate::proc`]) and checks its
//! own outcome:
//!
//! 1. **lossy**: every host on a slow, lossy switch (5 % loss, 100 ms ± 20 ms
//!    one-way delay per frame, so frames overtake each other; user space,
//!    as this kernel has no `netem`); five workers, one submitter: every
//!    task exactly once and correct, every DHT record put and read back.
//! 2. **partition**: the router drops traffic between hosts {1,2,3} and
//!    {4,5,6} (the submitter's side) for a while, then heals: the
//!    submitter's channels to the far side time out, it reconnects to all
//!    five workers by itself, its DHT table regains its size, and every task
//!    completes exactly once.
//! 3. **crash**: `kill -9` of a worker that holds DHT records and has tasks
//!    in flight: the records stay readable, its tasks are placed again
//!    (retries > 0), every task completes once; restarted with the same
//!    identity file, it comes back with the same PeerId and rejoins.
//! 4. **hostile**: a good peer measures a target while an attacker
//!    namespace runs, one after the other, attacks on the node's defences
//!    and one attack per finding of the security review, with a sink host
//!    counting any reflection; a table row per attack ([`hostile`]).
//! 5. **soak** (only with `--only soak`; not part of `ci`): the target
//!    under the same attacks, two at a time, for `--soak-minutes` (30).
//!
//! A summary table closes the run; any failed check fails the command.
//!
//! To profile the target, set `KNOTWORK_CHAOS_TARGET_WRAP` to a command it
//! then runs under, e.g. `heaptrack -o /tmp/target` (the target's RSS
//! figures are then the wrapper's).

mod counters;
mod hostile;
mod net;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::json;
use crate::proc::{Line, Proc};
use crate::project::Project;
use crate::shell;
use crate::system::{self, Need};
use net::{Net, host_ip, wan_ip};

/// A command to run the target under (see the module docs).
const TARGET_WRAP: &str = "KNOTWORK_CHAOS_TARGET_WRAP";

/// The bound on the hostile scenario's target RSS, in MiB (a debug build
/// idles at ~15 MiB).
pub const RSS_BOUND_MIB: u64 = 256;
/// Host namespaces: workers 1-5 (1 is the hostile target), the submitter or
/// good peer on 6, the attacker on 7, the sink on 8, the relay on 9.
const HOSTS: usize = 9;
const WORKERS: usize = 5;
const CLIENT: usize = 6;
const ATTACKER: usize = 7;

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    quick: bool,
    tasks: u64,
    keys: u64,
    partition: Duration,
    soak_minutes: u64,
}

impl Sizes {
    fn new(quick: bool, soak_minutes: u64) -> Self {
        if quick {
            Self {
                quick,
                tasks: 200,
                keys: 10,
                partition: Duration::from_secs(10),
                soak_minutes,
            }
        } else {
            Self {
                quick,
                tasks: 1000,
                keys: 20,
                partition: Duration::from_secs(30),
                soak_minutes,
            }
        }
    }
}

/// How one scenario ended.
#[derive(Debug, Default)]
struct Outcome {
    figures: Vec<String>,
    failures: Vec<String>,
    /// A table of its own (the hostile scenario's row per attack).
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Outcome {
    fn figure(&mut self, text: impl Into<String>) {
        self.figures.push(text.into());
    }

    /// Records a failure unless `ok`.
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    fn header(&mut self, header: &[&'static str]) {
        self.header = header.to_vec();
    }

    fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Prints the table, columns as wide as their widest cell.
    fn print_table(&self) {
        if self.rows.is_empty() {
            return;
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("  | {} |", padded.join(" | "));
        };
        line(self.header.clone());
        line(widths.iter().map(|_| "---").collect());
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect());
        }
    }
}

/// The command.
pub fn run(project: &Project, mut flags: Flags) -> Result<()> {
    let quick = flags.flag("--quick");
    let allow_skip = flags.flag("--allow-skip");
    let only: Option<String> = flags.value("--only")?;
    let soak_minutes: Option<u64> = flags.value("--soak-minutes")?;
    flags.finish()?;
    suite(
        project,
        quick,
        allow_skip,
        only.as_deref(),
        soak_minutes.unwrap_or(30),
    )
}

type Scenario = fn(&Ctx<'_>, &mut Outcome) -> Result<()>;

/// The scenarios a plain run goes through, in order.
const SCENARIOS: [(&str, Scenario); 4] = [
    ("lossy", lossy),
    ("partition", partition),
    ("crash", crash),
    ("hostile", hostile::hostile),
];

/// Runs the suite, or only scenario `only` (`cargo xtask ci` runs all of
/// it with `quick`).
pub fn run_suite(
    project: &Project,
    quick: bool,
    allow_skip: bool,
    only: Option<&str>,
) -> Result<()> {
    suite(project, quick, allow_skip, only, 30)
}

/// [`run_suite`]; the soak runs only when named, for `soak_minutes`.
fn suite(
    project: &Project,
    quick: bool,
    allow_skip: bool,
    only: Option<&str>,
    soak_minutes: u64,
) -> Result<()> {
    let scenarios: Vec<(&str, Scenario)> = match only {
        None => SCENARIOS.to_vec(),
        Some("soak") => vec![("soak", hostile::soak as Scenario)],
        Some(name) => SCENARIOS
            .iter()
            .filter(|(n, _)| *n == name)
            .copied()
            .collect(),
    };
    if scenarios.is_empty() {
        return Err(Error::failed(format!(
            "no scenario `{}` (lossy, partition, crash, hostile, soak)",
            only.unwrap_or_default()
        )));
    }
    if !system::is_root() {
        let e =
            Error::unavailable("the chaos suite needs root (network namespaces, TAP devices, nft)")
                .with_fix("run it as root: sudo -E cargo xtask chaos");
        if allow_skip {
            println!("chaos: SKIPPED (--allow-skip): {e}");
            return Ok(());
        }
        return Err(e);
    }
    system::ensure(
        &[
            Need::Program("ip", "iproute2"),
            Need::Program("nft", "nftables"),
        ],
        "the chaos suite builds namespaces, a lossy switch and partitions",
    )?;
    let began = Instant::now();
    let bin = build(project)?;
    println!(
        "chaos: built {} in {:.1} s",
        bin.display(),
        began.elapsed().as_secs_f64()
    );
    let dir = std::env::temp_dir().join(format!("{}-run-{}", net::PREFIX, std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
    let sizes = Sizes::new(quick, soak_minutes);
    let net = Net::new(HOSTS)?;
    let ctx = Ctx {
        bin: &bin,
        dir: &dir,
        net: &net,
        sizes,
        wan: std::cell::Cell::new(false),
    };
    let mut table = Vec::new();
    for (name, scenario) in scenarios {
        println!("\n==> chaos {name}");
        let start = Instant::now();
        let mut outcome = Outcome::default();
        if let Err(e) = scenario(&ctx, &mut outcome) {
            outcome.failures.push(e.to_string());
        }
        net.heal_if_split();
        for f in &outcome.failures {
            println!("chaos {name}: FAILED: {f}");
        }
        table.push((name, start.elapsed(), outcome));
    }
    drop(net);
    println!(
        "\n==> chaos summary ({} run, logs in {})",
        if quick { "quick" } else { "full" },
        dir.display()
    );
    println!(
        "  {:<10} {:<6} {:>7}  figures",
        "scenario", "result", "time"
    );
    for (name, took, outcome) in &table {
        let result = if outcome.failures.is_empty() {
            "pass"
        } else {
            "FAIL"
        };
        println!(
            "  {name:<10} {result:<6} {:>6.1}s  {}",
            took.as_secs_f64(),
            outcome.figures.join("; ")
        );
    }
    for (name, _, outcome) in &table {
        if !outcome.rows.is_empty() {
            println!("\n  {name}:");
            outcome.print_table();
        }
    }
    println!(
        "\n  total {:.1} s (with the build)",
        began.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = table
        .iter()
        .filter(|(_, _, o)| !o.failures.is_empty())
        .map(|(n, _, _)| *n)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(
            Error::failed(format!("chaos scenarios failed: {}", failed.join(", "))).with_fix(
                format!(
                    "the failed checks are printed above; logs in {}",
                    dir.display()
                ),
            ),
        )
    }
}

/// Builds the chaos example (debug: it shares the test build's artifacts)
/// and returns its path.
fn build(project: &Project) -> Result<PathBuf> {
    let out = shell::output(&mut project.cargo([
        "build",
        "--package",
        "knotwork-knot",
        "--example",
        "chaos",
        "--message-format=json",
    ]))?;
    out.lines()
        .filter_map(|l| json::field(l, "executable"))
        .find(|p| p.contains("examples/chaos"))
        .map(PathBuf::from)
        .ok_or_else(|| Error::failed("cargo built no chaos example executable"))
}

/// What every scenario needs.
struct Ctx<'a> {
    bin: &'a Path,
    dir: &'a Path,
    net: &'a Net,
    sizes: Sizes,
    /// Whether nodes use the slow, lossy switch instead of the router.
    wan: std::cell::Cell<bool>,
}

impl Ctx<'_> {
    fn addr(&self, host: usize, port: u16) -> String {
        let ip = if self.wan.get() {
            wan_ip(host)
        } else {
            host_ip(host)
        };
        format!("tcp/{ip}:{port}")
    }

    fn start(
        &self,
        name: &str,
        host: usize,
        role: &str,
        args: &[String],
        log: &str,
    ) -> Result<Proc> {
        let mut all = vec![role.to_owned()];
        all.extend(args.iter().cloned());
        let wrap = std::env::var(TARGET_WRAP).unwrap_or_default();
        let mut words = wrap.split_whitespace().map(str::to_owned);
        match words.next() {
            Some(program) if role == "target" => {
                let mut wrapped: Vec<String> = words.collect();
                wrapped.push(self.bin.display().to_string());
                wrapped.extend(all);
                let ns = self.net.host_ns(host);
                Proc::start(name, &ns, Path::new(&program), &wrapped, self.dir, log)
            }
            _ => Proc::start(name, &self.net.host_ns(host), self.bin, &all, self.dir, log),
        }
    }

    /// Workers on hosts 1..=5 listening on `port`; 1 is everyone's seed.
    /// `extra(i)` adds arguments for worker `i`.
    fn workers(&self, port: u16, extra: impl Fn(usize) -> Vec<String>) -> Result<Vec<Proc>> {
        let seed = self.addr(1, port);
        (1..=WORKERS)
            .map(|i| {
                let mut args = vec!["--listen".to_owned(), self.addr(i, port)];
                if i != 1 {
                    args.extend(["--seed".to_owned(), seed.clone()]);
                }
                args.extend(["--keys".to_owned(), self.sizes.keys.to_string()]);
                args.extend(extra(i));
                self.start(&format!("worker{i}"), i, "worker", &args, "warn")
            })
            .collect()
    }

    fn submitter(&self, port: u16, extra: &[String]) -> Result<Proc> {
        let mut args: Vec<String> = [
            "--seed",
            &self.addr(1, port),
            "--workers",
            &WORKERS.to_string(),
            "--tasks",
            &self.sizes.tasks.to_string(),
            "--keys",
            &self.sizes.keys.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().cloned());
        self.start("submitter", CLIENT, "submitter", &args, "warn")
    }
}

/// Checks a submitter's summary: every task exactly once and correct,
/// every record put and read back; adds the figures.
fn check_summary(summary: &Line, sizes: Sizes, outcome: &mut Outcome) {
    let s = &summary.text;
    let n = |k: &str| json::num(s, k);
    let tasks = sizes.tasks as f64;
    outcome.figure(format!(
        "{}/{} tasks once, {} dup, {} lost",
        n("unique"),
        tasks,
        n("duplicates"),
        tasks - n("unique") + n("failed")
    ));
    outcome.figure(format!(
        "{} retried (max {} attempts)",
        n("retried"),
        n("attempts_max")
    ));
    outcome.figure(format!("tasks took {:.1} s", n("task_secs")));
    outcome.figure(format!(
        "ping RTT p50 {:.1} ms max {:.1} ms",
        n("rtt_ms_p50"),
        n("rtt_ms_max")
    ));
    outcome.figure(format!(
        "DHT put {}/{} get {}/{}",
        n("dht_put_ok"),
        n("keys"),
        n("dht_get_ok"),
        n("keys")
    ));
    outcome.check(
        n("unique") == tasks,
        format!("{} of {tasks} tasks have a result", n("unique")),
    );
    outcome.check(
        n("duplicates") == 0.0,
        format!("{} results delivered twice", n("duplicates")),
    );
    outcome.check(n("wrong") == 0.0, format!("{} wrong results", n("wrong")));
    outcome.check(n("failed") == 0.0, format!("{} tasks failed", n("failed")));
    outcome.check(
        n("dht_put_ok") == sizes.keys as f64,
        format!(
            "{} of {} DHT puts acknowledged",
            n("dht_put_ok"),
            sizes.keys
        ),
    );
    outcome.check(
        n("dht_get_ok") == sizes.keys as f64,
        format!(
            "{} of {} DHT records read back",
            n("dht_get_ok"),
            sizes.keys
        ),
    );
}

fn lossy(ctx: &Ctx<'_>, outcome: &mut Outcome) -> Result<()> {
    let mut wan = ctx.net.wan(ctx.dir, 100, 20, 0.05)?;
    ctx.wan.set(true);
    let result = lossy_run(ctx, outcome);
    ctx.wan.set(false);
    wan.kill();
    if let Some(stats) = wan.last("stats") {
        let n = |k: &str| json::num(&stats.text, k);
        outcome.figure(format!(
            "switch: 100 +/- 20 ms, {} frames, {} dropped ({:.1} %), {} reordered",
            n("frames"),
            n("dropped"),
            100.0 * n("dropped") / n("frames").max(1.0),
            n("reordered")
        ));
        outcome.check(
            n("dropped") > 0.0 && n("reordered") > 0.0,
            "the switch dropped or reordered nothing",
        );
    } else {
        outcome.check(false, "the switch reported no counts");
    }
    result
}

fn lossy_run(ctx: &Ctx<'_>, outcome: &mut Outcome) -> Result<()> {
    let _workers = ctx.workers(4110, |_| Vec::new())?;
    let mut submitter = ctx.submitter(4110, &[])?;
    let ready = submitter.wait_for("ready", Duration::from_secs(90), |_| true)?;
    outcome.figure(format!("mesh in {} ms", json::num(&ready.text, "ms")));
    let summary = submitter.wait_for("summary", Duration::from_secs(240), |_| true)?;
    check_summary(&summary, ctx.sizes, outcome);
    Ok(())
}

fn partition(ctx: &Ctx<'_>, outcome: &mut Outcome) -> Result<()> {
    let sizes = ctx.sizes;
    let hold = sizes.partition;
    // Tasks spread over the partition and ten seconds either side.
    let span = hold.as_secs() + 13;
    let rate = sizes.tasks.div_ceil(span);
    let min_secs = hold.as_secs() + 25;
    let _workers = ctx.workers(4120, |_| Vec::new())?;
    let mut submitter = ctx.submitter(
        4120,
        &[
            "--rate".into(),
            rate.to_string(),
            "--min-secs".into(),
            min_secs.to_string(),
        ],
    )?;
    submitter.wait_for("put", Duration::from_secs(120), |_| true)?;
    let before = submitter.wait_for("progress", Duration::from_secs(10), |l| {
        json::num(&l.text, "secs") >= 3.0
    })?;
    let table_before = json::num(&before.text, "dht_table");
    let (a, b) = ([1, 2, 3], [4, 5, CLIENT]);
    ctx.net.partition(&a, &b)?;
    let cut_at = Instant::now();
    println!("chaos: partitioned {a:?} | {b:?} for {} s", hold.as_secs());
    std::thread::sleep(hold);
    ctx.net.heal()?;
    let healed_at = Instant::now();
    println!("chaos: healed");
    let during: Vec<Line> = submitter
        .events("progress")
        .into_iter()
        .filter(|l| l.at > cut_at && l.at <= healed_at)
        .collect();
    let min_peers = during
        .iter()
        .map(|l| json::num(&l.text, "peers"))
        .fold(f64::MAX, f64::min);
    let timeouts = submitter
        .events("disconnected")
        .iter()
        .filter(|l| l.at > cut_at && l.at <= healed_at)
        .count();
    outcome.figure(format!(
        "peers during split min {min_peers}, {timeouts} channels closed"
    ));
    outcome.check(
        min_peers < WORKERS as f64 && timeouts > 0,
        "the submitter's channels across the split did not time out",
    );
    let back = submitter.wait_for("progress", Duration::from_secs(35), |l| {
        l.at > healed_at
            && json::num(&l.text, "peers") >= WORKERS as f64
            && json::num(&l.text, "dht_table") >= table_before
    });
    match back {
        Ok(line) => outcome.figure(format!(
            "reconnected to all {WORKERS} and DHT table {} (was {table_before}) {:.1} s after heal",
            json::num(&line.text, "dht_table"),
            (line.at - healed_at).as_secs_f64()
        )),
        Err(e) => outcome.check(false, format!("no recovery after the heal: {e}")),
    }
    let summary = submitter.wait_for("summary", Duration::from_secs(240), |_| true)?;
    check_summary(&summary, sizes, outcome);
    Ok(())
}

fn crash(ctx: &Ctx<'_>, outcome: &mut Outcome) -> Result<()> {
    let sizes = ctx.sizes;
    let port = 4130;
    let identity = ctx.dir.join("victim.key").to_string_lossy().into_owned();
    let victim_args = |i: usize| {
        let mut args = vec!["--work-ms".to_owned(), "500".to_owned()];
        if i == WORKERS {
            args.extend(["--identity".to_owned(), identity.clone()]);
        }
        args
    };
    let mut workers = ctx.workers(port, victim_args)?;
    // ~20 tasks a second on five workers that take 0.5 s each: every
    // worker has tasks in flight at any time.
    let rate = 20;
    let mut submitter = ctx.submitter(port, &["--rate".into(), rate.to_string()])?;
    submitter.wait_for("put", Duration::from_secs(120), |_| true)?;
    submitter.wait_for("progress", Duration::from_secs(120), |l| {
        json::num(&l.text, "done") >= (sizes.tasks / 3) as f64
    })?;
    let victim = workers
        .last_mut()
        .ok_or_else(|| Error::failed("no workers"))?;
    let victim_id = victim
        .last("started")
        .and_then(|l| json::field(&l.text, "peer").map(str::to_owned))
        .ok_or_else(|| Error::failed("the victim never started"))?;
    let held = victim
        .last("status")
        .map_or(0.0, |l| json::num(&l.text, "held"));
    outcome.figure(format!("victim held {held}/{} records", sizes.keys));
    outcome.check(held > 0.0, "the victim held no DHT record before the crash");
    victim.kill();
    let killed_at = Instant::now();
    println!("chaos: kill -9 worker{WORKERS} ({victim_id})");
    let summary = submitter.wait_for("summary", Duration::from_secs(240), |_| true)?;
    check_summary(&summary, sizes, outcome);
    outcome.check(
        json::num(&summary.text, "retried") > 0.0,
        "no task was placed again after the crash",
    );
    drop(submitter);
    // Restart with the same identity file and address.
    let restarted_at = Instant::now();
    let mut args = vec!["--listen".to_owned(), ctx.addr(WORKERS, port)];
    args.extend(["--seed".to_owned(), ctx.addr(1, port)]);
    args.extend(victim_args(WORKERS));
    let mut again = ctx.start("worker5-restarted", WORKERS, "worker", &args, "warn")?;
    let started = again.wait_for("started", Duration::from_secs(30), |_| true)?;
    let same = json::field(&started.text, "peer") == Some(victim_id.as_str());
    outcome.check(same, "the restarted worker has another PeerId");
    match again.wait_for("status", Duration::from_secs(30), |l| {
        json::num(&l.text, "peers") >= (WORKERS - 1) as f64 && json::num(&l.text, "dht_table") >= 1.0
    }) {
        Ok(line) => outcome.figure(format!(
            "restarted (same PeerId: {same}) and rejoined {} peers in {:.1} s ({:.1} s after the kill)",
            json::num(&line.text, "peers"),
            (line.at - restarted_at).as_secs_f64(),
            (line.at - killed_at).as_secs_f64()
        )),
        Err(e) => outcome.check(false, format!("the restarted worker did not rejoin: {e}")),
    }
    Ok(())
}
