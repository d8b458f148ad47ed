//! `knot health --watch` over `knot run` processes on 127.0.0.1: a peer's
//! health changes are pushed and printed as they happen; and the `[log]`
//! section's JSON log file carries the channel span.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::knot::*;
use serde_json::Value;

/// A `knot health --watch` process; killed when dropped.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watch {
    /// The next status printed, within [`DEADLINE`].
    fn next(&self) -> Value {
        let line = self.lines.recv_timeout(DEADLINE).expect("a pushed status");
        serde_json::from_str(&line).unwrap()
    }
}

#[test]
fn health_changes_are_pushed_to_a_watcher_and_logged_as_json() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let log = home.join("b.log");
    let config = home.join("b.toml");
    std::fs::write(
        &config,
        format!(
            "[health]\ninterval_ms = 300\nmin_peers = 2\n\n\
             [log]\nlevel = \"knotwork_node=debug,warn\"\nformat = \"json\"\nfile = {:?}\n",
            log.display().to_string()
        ),
    )
    .unwrap();
    let b = Node::start(home, "b", &["--config", config.to_str().unwrap()]);
    let a = Node::start(home, "a", &["--seed", &b.addr.clone()]);
    a.wait_peer(home, &b.peer_id);

    let mut child = knot(home)
        .args(["health", "--watch", &b.peer_id, "--json", "--data-dir"])
        .arg(&a.dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let watch = Watch { child, lines };
    let first = watch.next();
    assert_eq!(first["level"], "Degraded", "{first}");
    assert_eq!(first["reasons"][0], "1 peers, fewer than 2");

    // A second peer of b: pushed at b's next check.
    let c = Node::start(home, "c", &["--seed", &b.addr.clone()]);
    let started = Instant::now();
    let ok = watch.next();
    assert_eq!(ok["level"], "Ok", "{ok}");
    eprintln!("change seen after {:?}", started.elapsed());
    drop(c);
    let again = watch.next();
    assert_eq!(again["level"], "Degraded", "{again}");
    drop(watch);

    // b's log: JSON lines; what its channels' tasks logged names the channel.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let closed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "channel closed")
        .unwrap_or_else(|| panic!("no channel closed line in {text}"));
    let span = &closed["span"];
    assert_eq!(span["name"], "channel", "{closed}");
    assert_eq!(span["direction"], "inbound", "{closed}");
    assert!(span["channel"].as_u64().is_some(), "{closed}");
    assert!(
        span["peer"].as_str().is_some_and(|p| p.len() > 40),
        "{closed}"
    );
}
