//! `cargo xtask bench --instructions`: instructions per small message, by
//! layer, and per node connect. Each scenario of `benches/src/bin/msgcost.rs` runs twice under
//! callgrind with two counts; the difference of the two totals over the
//! difference of the counts is the cost of one message (or round trip),
//! with setup, handshakes and shutdown cancelled out. Instruction counts do
//! not move with the machine's load the way times do, so they show where a
//! time target's bound lies.

use std::process::Command;

use crate::error::{Error, Result};
use crate::project::Project;
use crate::shell;
use crate::system::{self, Need};

/// A scenario of `msgcost`, its two counts and the scenario it is compared with.
struct Scenario {
    name: &'static str,
    counts: (u64, u64),
    unit: &'static str,
    baseline: &'static str,
}

impl Scenario {
    /// A 64 B round-trip scenario, against raw TCP's.
    const fn rtt(name: &'static str) -> Self {
        Self {
            name,
            counts: (2_000, 12_000),
            unit: "round trip",
            baseline: "raw-rtt",
        }
    }

    /// A one-way 64 B message scenario, against raw TCP's.
    const fn pipelined(name: &'static str) -> Self {
        Self {
            name,
            counts: (20_000, 120_000),
            unit: "message",
            baseline: "raw-pipelined",
        }
    }
}

const SCENARIOS: &[Scenario] = &[
    Scenario::rtt("raw-rtt"),
    Scenario::rtt("secure-rtt"),
    Scenario::rtt("node-rtt"),
    Scenario::rtt("node-rtt-inline"),
    Scenario::pipelined("raw-pipelined"),
    Scenario::pipelined("secure-pipelined"),
    Scenario::pipelined("node-pipelined"),
    // A dial, its version exchange, the channel on both ends and its close
    // (see `msgcost`); compared with itself: what matters is its share of
    // cryptography, which callgrind's own annotation shows.
    Scenario {
        name: "node-connect",
        counts: (20, 220),
        unit: "connect and close",
        baseline: "node-connect",
    },
];

/// Builds `msgcost` (release), measures every scenario and prints the table.
pub fn run(project: &Project) -> Result<()> {
    system::ensure(
        &[Need::Program("valgrind", "valgrind")],
        "callgrind counts instructions",
    )?;
    shell::run(&mut project.cargo([
        "build",
        "--release",
        "-p",
        "knotwork-benches",
        "--bin",
        "msgcost",
    ]))?;
    let bin = project.target_dir().join("release").join("msgcost");
    let mut costs: Vec<(&Scenario, f64)> = Vec::new();
    for s in SCENARIOS {
        let (a, b) = s.counts;
        let (low, high) = (collected(&bin, s.name, a)?, collected(&bin, s.name, b)?);
        let per = high.saturating_sub(low) as f64 / (b - a) as f64;
        println!("xtask: {}: {per:.0} instructions per {}", s.name, s.unit);
        costs.push((s, per));
    }
    println!();
    println!("| scenario | per | instructions | vs |");
    println!("| --- | --- | --- | --- |");
    for (s, per) in &costs {
        let base = costs
            .iter()
            .find(|(b, _)| b.name == s.baseline)
            .map_or(*per, |(_, p)| *p);
        println!(
            "| {} | {} | {per:.0} | {:.2}x {} |",
            s.name,
            s.unit,
            per / base.max(1.0),
            s.baseline
        );
    }
    Ok(())
}

/// The instructions callgrind counts for `msgcost scenario count`.
fn collected(bin: &std::path::Path, scenario: &str, count: u64) -> Result<u64> {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(bin)
        .arg(scenario)
        .arg(count.to_string())
        .output()
        .map_err(|e| Error::failed(format!("valgrind: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(Error::failed(format!(
            "msgcost {scenario} {count} under callgrind failed:\n{stderr}"
        )));
    }
    parse_collected(&stderr).ok_or_else(|| {
        Error::failed(format!(
            "no `Collected :` line in callgrind's output:\n{stderr}"
        ))
    })
}

/// The count of callgrind's `==PID== Collected : N` line.
fn parse_collected(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.split_once("Collected :"))
        .and_then(|(_, n)| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrinds_total() {
        let stderr = "==12== Events    : Ir\n==12== Collected : 123456789\n==12==\n==12== I   refs:      123,456,789\n";
        assert_eq!(parse_collected(stderr), Some(123_456_789));
        assert_eq!(parse_collected("==12== no total\n"), None);
    }
}
