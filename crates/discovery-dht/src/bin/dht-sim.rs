//! `dht-sim`: runs the DHT simulator and prints its measurements.
//!
//! ```text
//! dht-sim --nodes N --lookups M [--churn P] [--loss P] [--seed S]
//!         [--records R] [--join oracle|protocol] [--out FILE.svg]
//! ```
//! `cargo xtask sim …` builds it in release mode and passes the arguments on.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use knotwork_discovery_dht::sim::{JoinMode, Network, Phase, SimConfig, SimReport, percentile};
use plotters::prelude::*;

const USAGE: &str = "usage: dht-sim --nodes N --lookups M [--churn P] [--loss P] [--seed S] \
[--records R] [--join oracle|protocol] [--out FILE.svg]";

struct Args {
    sim: SimConfig,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut sim = SimConfig::default();
    let mut out = PathBuf::from("dht-sim.svg");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_string());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag}: {what}, got {value:?}");
        match flag.as_str() {
            "--nodes" => sim.nodes = value.parse().map_err(|_| bad("a count"))?,
            "--lookups" => sim.lookups = value.parse().map_err(|_| bad("a count"))?,
            "--records" => sim.records = value.parse().map_err(|_| bad("a count"))?,
            "--seed" => sim.seed = value.parse().map_err(|_| bad("an integer"))?,
            "--churn" => sim.churn = fraction(&value).ok_or_else(|| bad("a fraction 0..1"))?,
            "--loss" => sim.loss = fraction(&value).ok_or_else(|| bad("a fraction 0..1"))?,
            "--join" => {
                sim.join = match value.as_str() {
                    "oracle" => JoinMode::Oracle,
                    "protocol" => JoinMode::Protocol,
                    _ => return Err(bad("oracle or protocol")),
                }
            }
            "--out" => out = PathBuf::from(&value),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if sim.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    Ok(Args { sim, out })
}

/// A fraction from `0.2` or `20%`.
fn fraction(s: &str) -> Option<f64> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&v).then_some(v)
}

/// Resident set size of this process in bytes (Linux), if known.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cfg = args.sim.clone();
    println!(
        "dht-sim: {} nodes, {} lookups, {} records, churn {:.0}%, loss {:.1}%, seed {}, join {:?}, k = {}, alpha = {}",
        cfg.nodes,
        cfg.lookups,
        cfg.records,
        cfg.churn * 100.0,
        cfg.loss * 100.0,
        cfg.seed,
        cfg.join,
        cfg.dht.k,
        cfg.dht.alpha
    );
    let wall = Instant::now();
    let rss_before = rss_bytes();
    let net = Network::new(cfg.clone());
    let rss_built = rss_bytes();
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut phase_seen = None;
    let report = net.run(&mut |phase, done, total| {
        if phase_seen != Some(phase) {
            phase_seen = Some(phase);
            bar.set_prefix(match phase {
                Phase::Join => "join",
                Phase::Lookups => "lookups",
            });
            bar.set_length(total as u64);
        }
        bar.set_position(done as u64);
    });
    bar.finish();
    let elapsed = wall.elapsed();
    let rss_end = rss_bytes();
    print_report(&report, elapsed, rss_before, [rss_built, rss_end]);
    match write_histograms(&report, &args.out) {
        Ok(()) => println!("histograms     {}", args.out.display()),
        Err(e) => {
            eprintln!("writing {}: {e}", args.out.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `rss` is measured after building the network and at the end.
fn print_report(
    r: &SimReport,
    elapsed: std::time::Duration,
    before: Option<u64>,
    rss: [Option<u64>; 2],
) {
    let mean = |v: &[u64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64
        }
    };
    let hops: Vec<u64> = r.hops.iter().map(|&h| u64::from(h)).collect();
    let msgs: Vec<u64> = r.messages.iter().map(|&m| u64::from(m)).collect();
    println!(
        "success        {:.2}% ({}/{})",
        r.success_rate() * 100.0,
        r.succeeded,
        r.lookups
    );
    println!(
        "hops           mean {:.2}  p50 {}  p95 {}  max {}",
        mean(&hops),
        percentile(&hops, 50.0),
        percentile(&hops, 95.0),
        hops.iter().max().copied().unwrap_or(0)
    );
    let max_hop = r.hops.iter().max().copied().unwrap_or(0);
    let counts: Vec<String> = (0..=max_hop)
        .map(|h| format!("{h}:{}", r.hops.iter().filter(|&&x| x == h).count()))
        .collect();
    println!("hop counts     {}", counts.join(" "));
    println!(
        "messages       per lookup mean {:.1}  p50 {}  p95 {}",
        mean(&msgs),
        percentile(&msgs, 50.0),
        percentile(&msgs, 95.0)
    );
    println!(
        "latency        virtual p50 {} ms  p95 {} ms  max {} ms",
        percentile(&r.latency_ms, 50.0),
        percentile(&r.latency_ms, 95.0),
        r.latency_ms.iter().max().copied().unwrap_or(0)
    );
    if r.records > 0 {
        println!(
            "records        {}/{} fetched back",
            r.records_found, r.records
        );
    }
    println!(
        "network        {} delivered, {} dropped, {} refused; {} left, {} joined; virtual {:.1} s",
        r.delivered,
        r.dropped,
        r.refused,
        r.departed,
        r.joined,
        r.virtual_time.as_secs_f64()
    );
    print!(
        "memory/node    {:.1} KiB estimated (mean table {:.1} entries)",
        r.memory_per_node as f64 / 1024.0,
        r.mean_table_len
    );
    let nodes = (r.nodes + r.joined).max(1) as f64;
    if let (Some(a), [Some(built), Some(end)]) = (before, rss) {
        print!(
            "; RSS growth {:.1} KiB/node after build, {:.1} KiB/node at end",
            built.saturating_sub(a) as f64 / 1024.0 / nodes,
            end.saturating_sub(a) as f64 / 1024.0 / nodes
        );
    }
    println!();
    println!("wall time      {:.1} s", elapsed.as_secs_f64());
}

/// Two bar charts side by side: hops per successful lookup, and virtual
/// lookup latency in 50 ms bins.
fn write_histograms(
    r: &SimReport,
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);

    let max_hop = r.hops.iter().max().copied().unwrap_or(0) as usize;
    let mut hop_counts = vec![0u32; max_hop + 1];
    for &h in &r.hops {
        if let Some(c) = hop_counts.get_mut(usize::from(h)) {
            *c += 1;
        }
    }
    draw_bars(&left, "hops per lookup", "hops", &hop_counts, 1)?;

    let bin = 50u64;
    let max_lat = r.latency_ms.iter().max().copied().unwrap_or(0);
    let mut lat_counts = vec![0u32; (max_lat / bin) as usize + 1];
    for &l in &r.latency_ms {
        if let Some(c) = lat_counts.get_mut((l / bin) as usize) {
            *c += 1;
        }
    }
    draw_bars(&right, "virtual lookup latency", "ms", &lat_counts, bin)?;
    root.present()?;
    Ok(())
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    counts: &[u32],
    bin: u64,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let top = counts.iter().max().copied().unwrap_or(1).max(1);
    let width = counts.len() as u64 * bin;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..width.max(1), 0u32..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .y_desc("lookups")
        .disable_x_mesh()
        .draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
        let x0 = i as u64 * bin;
        Rectangle::new([(x0, 0), (x0 + bin, c)], BLUE.mix(0.6).filled())
    }))?;
    Ok(())
}
