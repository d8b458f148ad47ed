//! The loopback perf harness: every scenario for raw tokio TCP and for
//! knotwork at each layer (SecureStream with each suite, node `Channel`
//! with typed messages), in one process run, in both placements (pinned to
//! one CPU: the headline; unpinned), each figure as a ratio to its
//! baseline. Prints a table, writes `perf.json` and draws `perf.svg`.
//!
//! `cargo xtask bench [--quick] [--pin CPU]` runs it after the criterion
//! benches; by hand: `cargo run --release -p knotwork-benches --bin perf --
//! [--quick] [--cpu N] [--out DIR]` (default: CPU 0, `target/perf`).
//!
//! # Layout
//! - [`sides`]: the runtimes of the two ends and where they run.
//! - [`stream`]: raw TCP and SecureStream scenarios (one code path).
//! - [`node`]: node scenarios and a light dialer for many connections.
//! - [`quic`]: QUIC's stream, raw UDP and a node pair over QUIC (`--only quic`).
//! - [`crypto`]: in-memory references (AEAD limit, snow XX responder).
//! - [`memory`]: memory per idle connection (child processes).
//! - [`transports`]: Unix sockets and WebSocket beside raw TCP.
//! - [`multicore`]: N channels between nodes on a two-worker multi-thread
//!   runtime against one pinned core (`--only multicore`).
//! - [`compress`]: a node pair's bulk throughput with compression off,
//!   lz4 and zstd, of text and of random bytes (`--only compress`).
//! - `libp2p` (cargo feature `libp2p`): rust-libp2p 0.57 over TCP + Noise
//!   + yamux beside ours (`--only libp2p`; `cargo xtask bench --vs libp2p`).
//! - [`report`]: table, JSON, chart.
//! - [`sys`]: pinning, fd limit, RSS, thread CPU time.
//! - [`watchdog`]: a progress line per scenario and a time limit on each.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod compress;
mod crypto;
#[cfg(feature = "libp2p")]
mod libp2p;
mod memory;
mod multicore;
mod node;
mod quic;
mod report;
mod sides;
mod stream;
mod sys;
mod transports;
mod watchdog;

use std::path::PathBuf;
use std::time::Duration;

use knotwork_crypto_handshake::Suite;

use crate::memory::Holder;
use crate::report::{Report, Row};
use crate::sides::{Placement, Sides};
use crate::stream::Layer;

/// How much each scenario does.
struct Sizes {
    bulk: u64,
    rounds: usize,
    pipelined: usize,
    connects: usize,
    handshakes: usize,
    memory: &'static [usize],
}

const FULL: Sizes = Sizes {
    bulk: 1 << 30,
    rounds: 20_000,
    pipelined: 1_000_000,
    connects: 300,
    handshakes: 2_000,
    memory: &[1_000, 10_000],
};

const QUICK: Sizes = Sizes {
    bulk: 32 << 20,
    rounds: 2_000,
    pipelined: 50_000,
    connects: 30,
    handshakes: 100,
    memory: &[200],
};

/// Command-line options of a measuring run.
struct Options {
    quick: bool,
    cpu: usize,
    out: PathBuf,
    only: Only,
}

/// Which scenario groups a run measures (`--only a,b`; all by default).
/// The raw TCP baselines of rtt, pipelined and connect always run, so
/// every ratio has its baseline from the same run.
#[derive(Clone, Copy)]
struct Only {
    bulk: bool,
    stream: bool,
    node: bool,
    handshakes: bool,
    memory: bool,
    quic: bool,
    unpinned: bool,
    transports: bool,
    compress: bool,
    multicore: bool,
    /// rust-libp2p's rows; only in a build with the `libp2p` feature.
    libp2p: bool,
}

impl Only {
    const ALL: Only = Only {
        bulk: true,
        stream: true,
        node: true,
        handshakes: true,
        memory: true,
        quic: true,
        unpinned: true,
        transports: true,
        compress: true,
        multicore: true,
        libp2p: cfg!(feature = "libp2p"),
    };

    /// Parses `bulk,stream,node,handshakes,memory,quic,unpinned,transports,compress,multicore,libp2p`.
    fn parse(list: &str) -> Option<Only> {
        let mut only = Only {
            bulk: false,
            stream: false,
            node: false,
            handshakes: false,
            memory: false,
            quic: false,
            unpinned: false,
            transports: false,
            compress: false,
            multicore: false,
            libp2p: false,
        };
        for group in list.split(',') {
            let flag = match group {
                "bulk" => &mut only.bulk,
                "stream" => &mut only.stream,
                "node" => &mut only.node,
                "handshakes" => &mut only.handshakes,
                "memory" => &mut only.memory,
                "quic" => &mut only.quic,
                "unpinned" => &mut only.unpinned,
                "transports" => &mut only.transports,
                "compress" => &mut only.compress,
                "multicore" => &mut only.multicore,
                "libp2p" => &mut only.libp2p,
                _ => return None,
            };
            *flag = true;
        }
        Some(only)
    }
}

const USAGE: &str = "usage: perf [--quick] [--cpu N] [--out DIR] \
     [--only bulk,stream,node,handshakes,memory,quic,unpinned,transports,compress,multicore,libp2p]";

/// What `perf --help` prints.
const HELP: &str = "perf: knotwork's performance harness (`cargo xtask bench` runs it).

usage: perf [--quick] [--cpu N] [--out DIR] [--only GROUPS]

  --quick        small sizes, a 60 s watchdog (what `cargo xtask ci` runs)
  --cpu N        the CPU both ends are pinned to (default 0)
  --out DIR      where perf.json and perf.svg go (default target/perf)
  --only GROUPS  comma-separated groups to measure (default all):
                 bulk, stream, node, handshakes, memory, quic, unpinned, transports,
                 compress, multicore, libp2p (rust-libp2p beside ours: a build with the
                 `libp2p` feature only, as `cargo xtask bench --vs libp2p` makes)
  -h, --help     this text

Each row is a ratio to a raw baseline measured in the same run.";

impl Options {
    /// The options in `args`; `None` for `--help`.
    fn parse(args: Vec<String>) -> Result<Option<Self>, String> {
        let mut opts = Options {
            quick: false,
            cpu: 0,
            out: PathBuf::from("target/perf"),
            only: Only::ALL,
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let mut value = |what: &str| it.next().ok_or_else(|| format!("{arg} needs {what}"));
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--quick" => opts.quick = true,
                "--cpu" => {
                    let v = value("a CPU number")?;
                    opts.cpu = v
                        .parse()
                        .map_err(|_| format!("--cpu {v}: not a CPU number"))?;
                }
                "--out" => opts.out = PathBuf::from(value("a directory")?),
                "--only" => {
                    let v = value("a list of groups")?;
                    opts.only =
                        Only::parse(&v).ok_or_else(|| format!("--only {v}: unknown group"))?;
                    if opts.only.libp2p && !cfg!(feature = "libp2p") {
                        return Err(format!(
                            "--only {v}: this perf was built without the `libp2p` feature \
                             (cargo xtask bench --vs libp2p builds it)"
                        ));
                    }
                }
                _ => return Err(format!("unknown argument `{arg}`")),
            }
        }
        Ok(Some(opts))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--memory-child") => {
            let holder = args.get(1).and_then(|h| Holder::parse(h)).expect(USAGE);
            let count = args.get(2).and_then(|c| c.parse().ok()).expect(USAGE);
            return memory::server_main(holder, count);
        }
        Some("--dial-child") => {
            let holder = args.get(1).and_then(|h| Holder::parse(h)).expect(USAGE);
            let addr = args.get(2).and_then(|a| a.parse().ok()).expect(USAGE);
            let count = args.get(3).and_then(|c| c.parse().ok()).expect(USAGE);
            return memory::dialer_main(holder, addr, count);
        }
        _ => {}
    }
    let opts = match Options::parse(args) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("perf: {e}\n{USAGE}\n(perf --help says more)");
            std::process::exit(2);
        }
    };
    let sizes = if opts.quick { &QUICK } else { &FULL };
    sys::raise_nofile();
    watchdog::start(if opts.quick {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(600)
    });
    let mut rows = Vec::new();
    let placements = [Placement::Pinned(opts.cpu), Placement::Unpinned];
    let placements = placements.get(..if opts.only.unpinned { 2 } else { 1 });
    for &placement in placements.unwrap_or_default() {
        eprintln!("perf: measuring {}", placement.label());
        measure(placement, sizes, opts.only, &mut rows);
    }
    if opts.only.multicore {
        eprintln!("perf: multi-core, 2 workers against 1 pinned core");
        let rounds = if opts.quick { 3 } else { 5 };
        multicore::measure(opts.cpu, sizes.pipelined, sizes.bulk / 4, rounds, &mut rows);
    }
    eprintln!("perf: memory per idle connection");
    let memory = if opts.only.memory { sizes.memory } else { &[] };
    for &count in memory {
        watchdog::step(format_args!("idle memory, {count} connections"));
        memory_rows(count, &mut rows);
    }
    watchdog::idle();
    let report = Report {
        quick: opts.quick,
        cpu: opts.cpu,
        cpus: sys::cpus(),
        rows,
    };
    println!("{}", report.table());
    report.write(&opts.out).expect("write perf.json / perf.svg");
    println!(
        "perf: wrote {} and {}",
        opts.out.join("perf.json").display(),
        opts.out.join("perf.svg").display()
    );
}

/// How many rounds a figure alternates with its baseline.
const ROUNDS: usize = 5;

/// A latency measured in rounds, each beside its baseline's median.
#[derive(Default)]
struct Rounds {
    medians: Vec<f64>,
    tails: Vec<f64>,
    bases: Vec<f64>,
    ratios: Vec<f64>,
}

impl Rounds {
    /// One round's `times` and its baseline's median `base` (seconds).
    fn add(&mut self, mut times: Vec<Duration>, base: f64) {
        let m = p50(&mut times);
        self.tails.push(p99(&times));
        self.medians.push(m);
        self.bases.push(base);
        self.ratios.push(m / base);
    }

    /// A row: the median of the round medians, of their p99s and of their
    /// baselines, and the median of the per-round ratios.
    fn push_latency(
        mut self,
        out: &mut Rows<'_>,
        scenario: &'static str,
        layer: &str,
        baseline: &str,
        target: &'static str,
    ) {
        out.push(
            scenario,
            layer.to_string(),
            median(&mut self.medians),
            "s",
            Some(median(&mut self.tails)),
            (baseline, median(&mut self.bases)),
            None,
            target,
        );
        if let Some(row) = out.rows.last_mut() {
            row.ratio = Some(median(&mut self.ratios));
        }
    }
}

fn p50(times: &mut [Duration]) -> f64 {
    times.sort();
    times
        .get(times.len() / 2)
        .map_or(0.0, Duration::as_secs_f64)
}

fn p99(times: &[Duration]) -> f64 {
    times
        .get(times.len() * 99 / 100)
        .map_or(0.0, Duration::as_secs_f64)
}

/// Builds rows of one placement.
struct Rows<'a> {
    placement: Placement,
    rows: &'a mut Vec<Row>,
}

impl Rows<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        scenario: &'static str,
        layer: String,
        value: f64,
        unit: &'static str,
        p99: Option<f64>,
        baseline: (&str, f64),
        limit: Option<f64>,
        target: &'static str,
    ) {
        self.rows.push(Row {
            placement: self.placement.key().to_string(),
            scenario,
            layer,
            value,
            unit,
            p99,
            baseline: baseline.0.to_string(),
            ratio: (baseline.1 > 0.0).then(|| value / baseline.1),
            limit,
            target,
        });
    }

    fn latencies(
        &mut self,
        scenario: &'static str,
        layer: String,
        mut times: Vec<Duration>,
        baseline: (&str, f64),
        target: &'static str,
    ) -> f64 {
        let median = p50(&mut times);
        let tail = p99(&times);
        let base = if baseline.1 > 0.0 { baseline.1 } else { median };
        self.push(
            scenario,
            layer,
            median,
            "s",
            Some(tail),
            (baseline.0, base),
            None,
            target,
        );
        median
    }
}

fn measure(placement: Placement, sizes: &Sizes, only: Only, rows: &mut Vec<Row>) {
    let sides = Sides::new(placement);
    let mut out = Rows { placement, rows };
    if only.bulk {
        measure_bulk(&sides, sizes, &mut out);
    }
    if only.transports {
        transports::measure(&sides, sizes.bulk, sizes.rounds, &mut out);
    }
    if only.compress {
        measure_compress(&sides, sizes, &mut out);
    }
    let layers: &[Layer] = if only.stream {
        &[
            Layer::Raw,
            Layer::Secure(Suite::ChaChaPoly),
            Layer::Secure(Suite::AesGcm),
        ]
    } else {
        &[Layer::Raw]
    };

    let mut raw_rtt = 0.0;
    for &layer in layers {
        watchdog::step(format_args!("rtt 64B {}", layer.label()));
        let times = stream::ping_pong(&sides, layer, sizes.rounds);
        let m = out.latencies(
            "rtt 64B",
            layer.label(),
            times,
            ("raw tcp ping-pong", raw_rtt),
            "",
        );
        if layer == Layer::Raw {
            raw_rtt = m;
        }
    }
    let mut raw_pipe = 0.0;
    for &layer in layers {
        watchdog::step(format_args!("pipelined 64B {}", layer.label()));
        let rate = stream::pipelined(&sides, layer, sizes.pipelined);
        if layer == Layer::Raw {
            raw_pipe = rate;
        }
        out.push(
            "pipelined 64B",
            layer.label(),
            rate,
            "msg/s",
            None,
            ("raw tcp length-prefixed", raw_pipe),
            None,
            "",
        );
    }
    let mut raw_connect = 0.0;
    let connect_layers: &[Layer] = if only.stream {
        &[Layer::Raw, Layer::Secure(Suite::preferred())]
    } else {
        &[Layer::Raw]
    };
    for &layer in connect_layers {
        watchdog::step(format_args!("connect {}", layer.label()));
        let (times, _) = stream::connect(&sides, layer, sizes.connects);
        let label = match layer {
            Layer::Raw => "raw tcp connect".to_string(),
            other => format!("{} + XX", other.label()),
        };
        let m = out.latencies(
            "connect",
            label,
            times,
            ("raw tcp connect", raw_connect),
            "",
        );
        if layer == Layer::Raw {
            raw_connect = m;
        }
    }

    if only.node {
        measure_node(&sides, sizes, &mut out);
    }
    if only.quic {
        quic::measure(&sides, sizes, (raw_rtt, raw_pipe), &mut out);
    }
    #[cfg(feature = "libp2p")]
    if only.libp2p {
        libp2p::measure(&sides, sizes, (raw_rtt, raw_connect), &mut out);
    }
    drop(sides);
    if only.handshakes {
        measure_handshakes(placement, sizes, &mut out);
    }
}

/// Typed messages and connects through two nodes. Each figure with a target
/// alternates with its baseline in [`ROUNDS`] rounds, and its ratio is the
/// median of the per-round ratios (the baselines move between runs here:
/// raw TCP's RTT 4.3-7.3 us, its pipelined rate 12-21 M/s); the value shown
/// and the baseline are the medians over the rounds.
fn measure_node(sides: &Sides, sizes: &Sizes, out: &mut Rows<'_>) {
    watchdog::step("node pair");
    let mut pair = node::pair(sides, node::Carrier::Tcp);
    let per_round = |n: usize| (n / ROUNDS).max(1);
    // A request is answered by the server protocol's task (as any handler
    // that may wait), or inline by its channel's reader (`Channel::serve`).
    let (mut rtt, mut inline) = (Rounds::default(), Rounds::default());
    for round in 1..=ROUNDS {
        watchdog::step(format_args!("rtt 64B raw tcp, round {round}"));
        let raw = p50(&mut stream::ping_pong(
            sides,
            Layer::Raw,
            per_round(sizes.rounds),
        ));
        watchdog::step(format_args!("rtt 64B node request/response, round {round}"));
        let times = pair.request_response(sides, per_round(sizes.rounds));
        rtt.add(times, raw);
        watchdog::step(format_args!("rtt 64B node, inline handler, round {round}"));
        let times = pair.round_trips(sides, per_round(sizes.rounds), node::Handler::Inline);
        inline.add(times, raw);
    }
    rtt.push_latency(
        out,
        "rtt 64B",
        "node request/response",
        "raw tcp ping-pong",
        "<= 1.3x",
    );
    inline.push_latency(
        out,
        "rtt 64B",
        "node request/response, inline handler",
        "raw tcp ping-pong",
        "",
    );
    let (mut rates, mut raws, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        watchdog::step(format_args!("pipelined 64B raw tcp, round {round}"));
        let raw = stream::pipelined(sides, Layer::Raw, per_round(sizes.pipelined));
        watchdog::step(format_args!("pipelined 64B node typed send, round {round}"));
        let rate = pair.pipelined(sides, per_round(sizes.pipelined));
        rates.push(rate);
        raws.push(raw);
        ratios.push(rate / raw);
    }
    out.push(
        "pipelined 64B",
        "node typed send".into(),
        median(&mut rates),
        "msg/s",
        None,
        ("raw tcp length-prefixed", median(&mut raws)),
        None,
        ">= 0.35x",
    );
    // The ratio of each round to its own raw TCP run, not to the row above.
    if let Some(row) = out.rows.last_mut() {
        row.ratio = Some(median(&mut ratios));
    }
    // Against the bare SecureStream XX connect of a fresh identity (both
    // ends check an identity signature, as in a node's first contact): what
    // the node adds is its version exchange and channel start. The bare
    // dialer is done before the server has read XX's third message; a
    // node's dial waits for the server's version, so it waits for that step
    // too. The second row takes the bare connect with one byte echoed by
    // the server as its baseline: that step and a round trip included, it
    // leaves what is the node's own.
    let bare = Layer::Secure(Suite::preferred());
    let bare_label = format!("{} + XX", bare.label());
    let echo_label = format!("{bare_label} + 1 B echo");
    let (mut first, mut again, mut first_echo) =
        (Rounds::default(), Rounds::default(), Rounds::default());
    for round in 1..=ROUNDS {
        watchdog::step(format_args!("connect {bare_label}, round {round}"));
        let (mut hs, mut echoed) = stream::connect(sides, bare, per_round(sizes.connects));
        let (base, base_echo) = (p50(&mut hs), p50(&mut echoed));
        watchdog::step(format_args!(
            "connect node (first and reconnect), round {round}"
        ));
        let (f, a) = pair.connects(sides, per_round(sizes.connects));
        first_echo.add(f.clone(), base_echo);
        first.add(f, base);
        again.add(a, base);
    }
    first.push_latency(out, "connect", "node XX + version", &bare_label, "<= 1.1x");
    again.push_latency(out, "connect", "node reconnect + version", &bare_label, "");
    first_echo.push_latency(out, "connect", "node XX + version", &echo_label, "");
    watchdog::step("node pair shutdown");
    pair.shutdown(sides);
}

/// Inbound handshakes a node accepts per server CPU second, against the
/// in-memory snow XX responder.
fn measure_handshakes(placement: Placement, sizes: &Sizes, out: &mut Rows<'_>) {
    // The reference moves with the machine's load (3,100-6,500/s between
    // runs here), so the two alternate in rounds and the ratio is the
    // median of the per-round ratios.
    let suite = Suite::preferred();
    let count = (sizes.handshakes / ROUNDS).max(1);
    let (mut snow, mut cpu_rate, mut wall_rate, mut ratios) = (vec![], vec![], vec![], vec![]);
    for round in 1..=ROUNDS {
        let one = Sides::new(placement);
        watchdog::step(format_args!("snow XX responder in memory, round {round}"));
        let reference = one.server(async move { crypto::snow_responder_rate(suite, count) });
        drop(one);
        let split = Sides::split(placement);
        watchdog::step(format_args!("node inbound handshakes, round {round}"));
        let (wall, cpu) = node::inbound_handshakes(&split, count, 24);
        drop(split);
        let per_core = count as f64 / cpu;
        snow.push(reference);
        cpu_rate.push(per_core);
        wall_rate.push(count as f64 / wall);
        ratios.push(per_core / reference);
    }
    let snow = median(&mut snow);
    out.push(
        "handshakes",
        format!("snow XX responder {suite:?} in memory"),
        snow,
        "hs/s",
        None,
        ("snow responder", snow),
        None,
        "",
    );
    out.push(
        "handshakes",
        "node inbound / server cpu-s".into(),
        median(&mut cpu_rate),
        "hs/s",
        None,
        ("snow responder", snow),
        None,
        ">= 0.9x",
    );
    // The ratio of each round to its own reference, not of the medians.
    if let Some(row) = out.rows.last_mut() {
        row.ratio = Some(median(&mut ratios));
    }
    out.push(
        "handshakes",
        "node inbound / wall-s".into(),
        median(&mut wall_rate),
        "hs/s",
        None,
        ("snow responder", snow),
        None,
        "",
    );
}

/// Bulk throughput of a node pair with each compression setting, as
/// ratios to compression off with the same payload. Random bytes must not
/// get more than 5 % slower (issue 19).
fn measure_compress(sides: &Sides, sizes: &Sizes, out: &mut Rows<'_>) {
    // Compressing costs CPU per byte: a quarter of the bulk bytes.
    for m in compress::measure(sides, sizes.bulk / 4) {
        let target = match (m.payload, m.setting) {
            (_, knotwork_node::Compression::None) => "",
            ("random", _) => ">= 0.95x",
            _ => "",
        };
        out.push(
            "bulk 16K node",
            format!("{} {}", m.payload, m.setting),
            m.rate,
            "B/s",
            None,
            (&format!("{} none", m.payload), 0.0),
            None,
            target,
        );
        if let Some(row) = out.rows.last_mut() {
            row.ratio = Some(m.ratio);
        }
    }
}

/// The median of `values` (0 if empty).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Bulk throughput of raw TCP and SecureStream with each suite, and the
/// in-memory AEAD rate that bounds each suite. Loopback TCP's own speed
/// moves between runs here (2.1-5.7 GB/s pinned, the kernel path on this
/// VM), so each suite alternates with raw TCP in rounds, and its ratio and
/// limit are the medians of the per-round ones.
fn measure_bulk(sides: &Sides, sizes: &Sizes, out: &mut Rows<'_>) {
    let per_round = (sizes.bulk / ROUNDS as u64).max(1);
    let mut raws = Vec::new();
    let mut measured = Vec::new();
    for suite in [Suite::ChaChaPoly, Suite::AesGcm] {
        let layer = Layer::Secure(suite);
        let total = sizes.bulk;
        watchdog::step(format_args!("aead {suite:?} in memory"));
        let aead = sides.server(async move { crypto::aead_rate(suite, total) });
        let (mut rates, mut ratios, mut limits) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            watchdog::step(format_args!("bulk raw tcp, round {round}"));
            let raw = stream::bulk(sides, Layer::Raw, per_round);
            watchdog::step(format_args!("bulk {}, round {round}", layer.label()));
            let rate = stream::bulk(sides, layer, per_round);
            raws.push(raw);
            rates.push(rate);
            ratios.push(rate / raw);
            limits.push(1.0 / (1.0 + raw / aead));
        }
        let (rate, ratio, limit) = (median(&mut rates), median(&mut ratios), median(&mut limits));
        measured.push((suite, rate, ratio, limit, aead));
    }
    let raw_bulk = median(&mut raws);
    out.push(
        "bulk",
        Layer::Raw.label(),
        raw_bulk,
        "B/s",
        None,
        ("raw tcp", raw_bulk),
        None,
        "",
    );
    for (suite, rate, ratio, limit, aead) in measured {
        let target = match suite {
            Suite::AesGcm => ">= 0.5x",
            _ => ">= 0.26x",
        };
        out.push(
            "bulk",
            Layer::Secure(suite).label(),
            rate,
            "B/s",
            None,
            ("raw tcp", raw_bulk),
            Some(limit),
            target,
        );
        // The ratio of each round to its own raw TCP run, not to the row above.
        if let Some(row) = out.rows.last_mut() {
            row.ratio = Some(ratio);
        }
        out.push(
            "aead seal+open",
            format!("AWS-LC {suite:?} in memory"),
            aead,
            "B/s",
            None,
            ("raw tcp bulk", raw_bulk),
            None,
            "",
        );
    }
}

fn memory_rows(count: usize, rows: &mut Vec<Row>) {
    let raw = memory::measure(Holder::Raw, count);
    let node = memory::measure(Holder::Node, count);
    let mut out = Rows {
        placement: Placement::Unpinned,
        rows,
    };
    let scenario = match count {
        200 => "idle mem 200",
        1_000 => "idle mem 1k",
        10_000 => "idle mem 10k",
        _ => "idle memory",
    };
    out.push(
        scenario,
        "raw tcp task".into(),
        raw,
        "B",
        None,
        ("raw tcp task", raw),
        None,
        "",
    );
    out.push(
        scenario,
        "node channel".into(),
        node,
        "B",
        None,
        ("raw tcp task", raw),
        None,
        "<= 8 KiB",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(args.iter().map(|a| (*a).to_owned()).collect())
    }

    #[test]
    fn help_is_an_answer_and_bad_arguments_are_errors_not_panics() {
        assert!(matches!(parse(&["--help"]), Ok(None)));
        assert!(matches!(parse(&["--quick", "-h"]), Ok(None)));
        let opts = parse(&["--quick", "--cpu", "1", "--only", "node,quic"])
            .unwrap()
            .unwrap();
        assert!(opts.quick && opts.cpu == 1 && opts.only.node && !opts.only.bulk);
        let opts = parse(&["--only", "multicore"]).unwrap().unwrap();
        assert!(opts.only.multicore && !opts.only.node);
        assert_eq!(
            parse(&["--frobnicate"]).err().unwrap(),
            "unknown argument `--frobnicate`"
        );
        assert_eq!(parse(&["--cpu"]).err().unwrap(), "--cpu needs a CPU number");
        assert_eq!(
            parse(&["--cpu", "x"]).err().unwrap(),
            "--cpu x: not a CPU number"
        );
        assert_eq!(
            parse(&["--only", "nope"]).err().unwrap(),
            "--only nope: unknown group"
        );
        let libp2p = parse(&["--only", "node,libp2p"]);
        if cfg!(feature = "libp2p") {
            assert!(libp2p.unwrap().unwrap().only.libp2p);
        } else {
            assert!(
                libp2p
                    .err()
                    .unwrap()
                    .contains("without the `libp2p` feature")
            );
        }
    }
}
