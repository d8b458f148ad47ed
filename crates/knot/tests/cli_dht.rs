//! `knot dht …` end to end: three `knot run` processes on 127.0.0.1 with the
//! DHT on (the default); a record put through one is read through another,
//! a provider and a peer are found, the metrics endpoint counts it, and a
//! node run with `--no-dht` refuses.
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

/// `knot dht <args> --json` against `node`.
fn dht(home: &Path, node: &Node, args: &[&str]) -> Output {
    run(knot(home)
        .arg("dht")
        .args(args)
        .args(["--json", "--data-dir"])
        .arg(&node.dir))
}

/// Repeats `knot dht <args>` until it exits 0 (the tables fill as the
/// channels open); returns its JSON. Panics after [`DEADLINE`].
fn dht_until_found(home: &Path, node: &Node, args: &[&str]) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let out = dht(home, node, args);
        if out.status.success() {
            return json(&out);
        }
        assert!(
            Instant::now() < end,
            "knot dht {args:?} never succeeded: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn put_get_provide_find_across_three_knot_run_processes() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let a = Node::start(home, "a", &[]);
    let mut b = Node::start(
        home,
        "b",
        &["--seed", &a.addr.clone(), "--metrics", "127.0.0.1:0"],
    );
    let metrics = b.wait_line("metrics on ").to_owned();
    let mut c = Node::start(home, "c", &["--seed", &a.addr.clone()]);
    c.wait_line("dht server");

    let put = dht_until_found(home, &b, &["put", "greeting", "hello there"]);
    assert_eq!(put["response"], "dht_stored");
    assert!(put["stored"].as_u64().unwrap() >= 1, "{put}");

    let got = dht_until_found(home, &c, &["get", "greeting"]);
    assert_eq!(got["record"]["value"], "hello there");
    assert_eq!(got["record"]["publisher"], b.peer_id.as_str());
    // Text output: the value first.
    let text = run(knot(home)
        .args(["dht", "get", "greeting", "--data-dir"])
        .arg(&a.dir));
    assert!(text.status.success());
    assert_eq!(stdout(&text).lines().next(), Some("hello there"));

    // Nothing under a key nobody put: exit 1, `not found`.
    let absent = dht(home, &a, &["get", "nobody-put-this"]);
    assert!(!absent.status.success());
    assert!(json_any(&absent)["record"].is_null());

    dht_until_found(home, &b, &["provide", "file.iso"]);
    let providers = dht_until_found(home, &c, &["providers", "file.iso"]);
    let list = providers["providers"].as_array().unwrap();
    let entry = list
        .iter()
        .find(|p| p["peer_id"] == b.peer_id.as_str())
        .unwrap_or_else(|| panic!("b not among {providers}"));
    assert_eq!(entry["addrs"][0], b.addr.as_str());

    let found = dht_until_found(home, &c, &["find", &b.peer_id]);
    assert_eq!(found["peer"]["peer_id"], b.peer_id.as_str());
    assert_eq!(found["peer"]["addrs"][0], b.addr.as_str());

    // Connect by PeerId alone: the DHT finds b's record, c dials it.
    let connected = run(knot(home)
        .args(["connect", &b.peer_id, "--json", "--data-dir"])
        .arg(&c.dir));
    assert!(connected.status.success(), "{connected:?}");
    assert_eq!(json(&connected)["peer_id"], b.peer_id.as_str());
    // A PeerId nobody knows: refused, and said so.
    let stranger = "D7m5yA2giHEyBb75xC4E8JTTPZPg4hnTXj7cQGzbxe1i";
    let unknown = run(knot(home)
        .args(["connect", stranger, "--data-dir"])
        .arg(&c.dir));
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("no address known"), "{said}");

    // b's metrics endpoint counts its queries (its peer-record announce
    // is a put too) and what it holds.
    let text = scrape(&metrics);
    let value = |series: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(series));
        let value = line.and_then(|l| l.rsplit(' ').next());
        value
            .unwrap_or_else(|| panic!("{series} missing: {text}"))
            .parse()
            .unwrap()
    };
    assert!(value("knot_dht_queries_finished_total{kind=\"put\",outcome=\"ok\"}") >= 1);
    assert_eq!(value("knot_dht_queries_started_total{kind=\"provide\"}"), 1);
    assert!(value("knot_dht_records ") >= 1, "b holds its own record");
    assert!(value("knot_dht_routing_table_peers ") >= 1);

    let bad = dht(home, &c, &["find", "not-a-peer-id"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("bad peer id"),
        "{bad:?}"
    );
}

/// The JSON of a command that may have exited 1.
fn json_any(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("one JSON value")
}

#[test]
fn a_node_without_the_dht_says_so() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let off = Node::start(home, "off", &["--no-dht"]);
    let out = dht(home, &off, &["get", "greeting"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without the DHT"),
        "{out:?}"
    );
    // The same through knot.toml's [dht] section, by its variable.
    let mut cmd = knot(home);
    let off_env = cmd
        .args(["config", "check", "--json"])
        .env("KNOT_DHT_ENABLED", "false")
        .env("KNOT_DHT_MODE", "client");
    let config = json(&run(off_env));
    assert_eq!(config["dht"]["enabled"], false);
    assert_eq!(config["dht"]["mode"], "client");
}
