//! `knot gossip publish`, `knot run --subscribe`, `knot task submit` with
//! `knot run --worker`, and `knot metrics`, end to end over two `knot run`
//! processes on 127.0.0.1: what `cargo xtask testnet` drives.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::knot::*;
use serde_json::Value;

/// `knot <args> --json --data-dir <node>`.
fn ask(home: &Path, node: &Node, args: &[&str]) -> Output {
    run(knot(home)
        .args(args)
        .args(["--json", "--data-dir"])
        .arg(&node.dir))
}

/// Repeats `knot <args>` until it exits 0 (the channels open meanwhile).
fn until_ok(home: &Path, node: &Node, args: &[&str]) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let out = ask(home, node, args);
        if out.status.success() {
            return json(&out);
        }
        assert!(
            Instant::now() < end,
            "knot {args:?} never succeeded: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn gossip_reaches_a_subscriber_and_a_task_runs_on_a_worker() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut a = Node::start(home, "a", &["--worker", "--subscribe", "news"]);
    let b = Node::start(home, "b", &["--seed", &a.addr.clone()]);

    let sent = until_ok(home, &b, &["gossip", "publish", "news", "hello there"]);
    assert_eq!(sent["response"], "gossip_published");
    assert_eq!(sent["origin"], b.peer_id.as_str());
    assert!(sent["sent"].as_u64().unwrap() >= 1, "{sent}");
    assert!(sent["at_us"].as_u64().unwrap() > 0);
    let seq = sent["seq"].as_u64().unwrap();
    assert_eq!(
        a.wait_line("gossip news "),
        format!("{}/{seq} via {}: hello there", b.peer_id, b.peer_id)
    );

    // b runs no handler, a does: the task lands on a.
    let done = until_ok(home, &b, &["task", "submit", "fnv", "hello"]);
    assert_eq!(done["outcome"], "done", "{done}");
    assert_eq!(done["worker"], a.peer_id.as_str());
    // FNV-1a 64 of "hello" is 0xa430d84680aabd0b, little-endian.
    assert_eq!(done["output"], "0bbdaa8046d830a4");

    let metrics = run(knot(home).arg("metrics").arg("--data-dir").arg(&a.dir));
    assert!(metrics.status.success());
    let text = stdout(&metrics);
    assert!(text.contains("knot_peers 1"), "{text}");
    assert!(text.contains("knot_gossip_messages_total{result=\"delivered\"} 1"));
}

#[test]
fn a_task_without_workers_and_a_short_republish_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let alone = Node::start(home, "alone", &[]);
    let out = ask(home, &alone, &["task", "submit", "fnv", "x"]);
    assert!(!out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["outcome"], "no_workers", "{answer}");
    assert!(answer["worker"].is_null());

    let out = ask(home, &alone, &["gossip", "publish", "news", "x"]);
    assert!(!out.status.success(), "sent to nobody");

    let out = run(knot(home).args(["run", "--dht-republish-ms", "999"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dht-republish-ms"));
}
