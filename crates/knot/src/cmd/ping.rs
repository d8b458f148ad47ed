//! `knot ping <addr>`: round-trip times to a node, like ping(8).
//!
//! A fresh node with an ephemeral identity dials the address (handshake and
//! version exchange included), then every interval sends the built-in
//! `Ping` message with a random nonce and waits for the `Pong` carrying the
//! same nonce; the time between is one round trip through the encrypted
//! channel. Pongs with other nonces (answers to the pings the node's own
//! ping protocol sends) are ignored. The run ends after `-c` pings or on
//! Ctrl-C with a summary; the exit code is 1 if no pong came back.
//!
//! # Format
//! `<n> bytes from <peer> (<addr>): seq=<n> time=<ms> ms` per pong, where
//! `<n> bytes` is the pong's frame (header and payload), then
//! `rtt min/avg/max/mdev = …/…/…/… ms`. With `--json`, one object per line:
//! `{"event":"pong",…}`, `{"event":"timeout",…}`, `{"event":"summary",…}`.

use std::process::ExitCode;
use std::time::Duration;

use knotwork_core::{Keypair, PeerAddr};
use knotwork_node::Subscription;
use knotwork_node::protocol::ping::{Ping, Pong};
use serde::Serialize;
use tokio::time::Instant;

use crate::CliResult;
use crate::settings::{Global, print_json};

/// Shortest `--interval`: the peer meters pings (20 per second).
const MIN_INTERVAL: f64 = 0.1;

/// Arguments of `knot ping`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The node to ping, e.g. tcp/127.0.0.1:4000.
    addr: PeerAddr,
    /// Stop after COUNT pings [default: until Ctrl-C].
    #[arg(short = 'c', long, value_name = "COUNT")]
    count: Option<u64>,
    /// Seconds between pings (at least 0.1).
    #[arg(short = 'i', long, value_name = "SECONDS", default_value_t = 1.0)]
    interval: f64,
    /// Seconds to wait for each pong.
    #[arg(short = 'W', long, value_name = "SECONDS", default_value_t = 5.0)]
    timeout: f64,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    Pong {
        peer_id: String,
        addr: String,
        seq: u64,
        bytes: usize,
        rtt_us: u64,
    },
    Timeout {
        seq: u64,
    },
    Summary(Summary),
}

/// Statistics of a run.
#[derive(Debug, Default, PartialEq, Serialize)]
struct Summary {
    sent: u64,
    received: u64,
    loss_percent: f64,
    time_ms: u64,
    min_ms: Option<f64>,
    avg_ms: Option<f64>,
    max_ms: Option<f64>,
    mdev_ms: Option<f64>,
}

impl Summary {
    /// ping(8)'s statistics: mdev is the standard deviation of the RTTs.
    fn new(sent: u64, rtts_ms: &[f64], elapsed: Duration) -> Self {
        let received = rtts_ms.len() as u64;
        let mut s = Summary {
            sent,
            received,
            loss_percent: if sent == 0 {
                0.0
            } else {
                (sent - received) as f64 * 100.0 / sent as f64
            },
            time_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            ..Summary::default()
        };
        if !rtts_ms.is_empty() {
            let n = rtts_ms.len() as f64;
            let avg = rtts_ms.iter().sum::<f64>() / n;
            let var = rtts_ms.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / n;
            s.min_ms = rtts_ms.iter().copied().reduce(f64::min);
            s.max_ms = rtts_ms.iter().copied().reduce(f64::max);
            s.avg_ms = Some(avg);
            s.mdev_ms = Some(var.sqrt());
        }
        s
    }
}

fn seconds(name: &str, value: f64, min: f64) -> CliResult<Duration> {
    if !value.is_finite() || value < min {
        return Err(format!("{name} must be at least {min} s (got {value})").into());
    }
    Ok(Duration::from_secs_f64(value))
}

/// Waits for the pong with `nonce`; `None` when `deadline` passes first.
async fn pong(pongs: &mut Subscription<Pong>, nonce: u64, deadline: Instant) -> Option<()> {
    loop {
        match tokio::time::timeout_at(deadline, pongs.recv()).await {
            Ok(Some(Pong { nonce: n })) if n == nonce => return Some(()),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult<ExitCode> {
    let interval = seconds("--interval", args.interval, MIN_INTERVAL)?;
    let timeout = seconds("--timeout", args.timeout, 0.001)?;
    let json = global.json;
    let node = super::node_builder(Keypair::generate()?)?.start().await?;
    let channel = match node.connect(&args.addr).await {
        Ok(channel) => channel,
        Err(e) => {
            node.shutdown().await;
            return Err(format!("cannot reach {}: {e}", args.addr).into());
        }
    };
    let peer = channel.remote_peer_id();
    let mut pongs = channel.subscribe::<Pong>();
    let bytes = knotwork_wire::HEADER_LEN + knotwork_wire::encode(&Pong { nonce: u64::MAX })?.len();
    if !json {
        println!("PING {} ({peer})", args.addr);
    }

    let start = Instant::now();
    let mut rtts_ms = Vec::new();
    let mut sent = 0;
    let mut ticks = tokio::time::interval(interval);
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    while args.count.is_none_or(|c| sent < c) {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut interrupt => break,
        }
        sent += 1;
        let nonce = fastrand::u64(..);
        let t0 = Instant::now();
        if let Err(e) = channel.send(&Ping { nonce }).await {
            // The reason may be the peer's own text.
            eprintln!("channel closed: {}", super::printable(&e.to_string()));
            break;
        }
        let answered = tokio::select! {
            answered = pong(&mut pongs, nonce, t0 + timeout) => answered,
            _ = &mut interrupt => break,
        };
        let line = match answered {
            Some(()) => {
                let rtt = t0.elapsed();
                rtts_ms.push(rtt.as_secs_f64() * 1e3);
                Line::Pong {
                    peer_id: peer.to_string(),
                    addr: args.addr.to_string(),
                    seq: sent,
                    bytes,
                    rtt_us: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
                }
            }
            None => Line::Timeout { seq: sent },
        };
        if json {
            print_json(&line)?;
        } else if let Line::Pong { rtt_us, .. } = line {
            let ms = rtt_us as f64 / 1e3;
            println!(
                "{bytes} bytes from {peer} ({}): seq={sent} time={ms:.3} ms",
                args.addr
            );
        } else {
            println!("no pong from {peer} ({}): seq={sent}", args.addr);
        }
        if channel.is_closed() {
            break;
        }
    }
    let summary = Summary::new(sent, &rtts_ms, start.elapsed());
    node.shutdown().await;
    if json {
        print_json(&Line::Summary(summary))?;
    } else {
        println!("--- {} ping statistics ---", args.addr);
        println!(
            "{} pings sent, {} pongs received, {:.0}% loss, time {} ms",
            summary.sent, summary.received, summary.loss_percent, summary.time_ms
        );
        if let (Some(min), Some(avg), Some(max), Some(mdev)) = (
            summary.min_ms,
            summary.avg_ms,
            summary.max_ms,
            summary.mdev_ms,
        ) {
            println!("rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms");
        }
    }
    Ok(if rtts_ms.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_ping8() {
        let s = Summary::new(4, &[1.0, 2.0, 3.0], Duration::from_millis(3004));
        assert_eq!(s.received, 3);
        assert_eq!(s.loss_percent, 25.0);
        assert_eq!(s.time_ms, 3004);
        assert_eq!(
            (s.min_ms, s.max_ms, s.avg_ms),
            (Some(1.0), Some(3.0), Some(2.0))
        );
        let mdev = s.mdev_ms.unwrap();
        assert!((mdev - (2.0f64 / 3.0).sqrt()).abs() < 1e-12, "{mdev}");
        assert_eq!(Summary::new(2, &[], Duration::ZERO).min_ms, None);
    }

    #[test]
    fn intervals_below_the_peer_budget_are_refused() {
        assert!(seconds("--interval", 0.05, MIN_INTERVAL).is_err());
        assert!(seconds("--interval", f64::NAN, MIN_INTERVAL).is_err());
        assert_eq!(
            seconds("--interval", 0.25, MIN_INTERVAL).unwrap(),
            Duration::from_millis(250)
        );
    }
}
