//! The `knot` binary end to end: identity, two nodes over loopback TCP, the
//! control socket, ping, graceful shutdown on SIGTERM, configuration.
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

#[test]
fn id_is_created_once_and_kept_private() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("data");
    let first = run(knot(home.path()).arg("id").arg("--data-dir").arg(&dir));
    assert!(first.status.success());
    let second = run(knot(home.path()).arg("id").arg("--data-dir").arg(&dir));
    assert_eq!(stdout(&first), stdout(&second));
    let id = stdout(&first).trim().to_owned();
    assert!(id.len() > 40, "{id}");
    assert_eq!(mode(&dir.join("identity.key")), 0o600);
    assert_eq!(mode(&dir), 0o700);

    let out = json(&run(knot(home.path())
        .args(["id", "--json"])
        .env("KNOT_DATA_DIR", &dir)));
    assert_eq!(
        out["peer_id"],
        id.as_str(),
        "KNOT_DATA_DIR finds the same identity"
    );
    assert_eq!(out["created"], false);

    // The default data directory is under $HOME.
    let out = json(&run(knot(home.path()).args(["id", "--json"])));
    assert!(home.path().join(".local/share/knot/identity.key").exists());
    assert_ne!(out["peer_id"], id.as_str());
}

#[test]
fn two_nodes_peers_status_ping_and_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut a = Node::start(home, "a", &[]);
    let mut b = Node::start(home, "b", &["--peer", &a.addr.clone()]);
    assert!(a.addr.starts_with("tcp/127.0.0.1:"), "{}", a.addr);
    assert_ne!(a.addr, "tcp/127.0.0.1:0", "the bound port is printed");

    // Each lists the other; B dialed A.
    let b_at_a = a.wait_peer(home, &b.peer_id);
    assert_eq!(b_at_a["direction"], "inbound");
    let a_at_b = b.wait_peer(home, &a.peer_id);
    assert_eq!(a_at_b["direction"], "outbound");
    assert_eq!(a_at_b["session"], "manual");
    // Configured by hand; the DHT may have reported it too by now.
    let sources = |entry: &Value| -> Vec<String> {
        serde_json::from_value(entry["sources"].clone()).unwrap()
    };
    assert!(sources(&a_at_b).contains(&"manual".into()), "{a_at_b}");
    assert!(!sources(&b_at_a).contains(&"manual".into()), "{b_at_a}");
    assert_eq!(a_at_b["addr"], a.addr.as_str());
    a.wait_line(&format!("connected {}", b.peer_id));

    // Pings every 200 ms: an RTT shows up.
    let end = Instant::now() + DEADLINE;
    while b.wait_peer(home, &a.peer_id)["rtt_us"].is_null() {
        assert!(Instant::now() < end, "no rtt");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The control socket is owner-only, the data directory too.
    assert_eq!(mode(&a.dir.join("control.sock")), 0o600);
    assert_eq!(mode(&a.dir), 0o700);

    let status = a.ctl(home, "status");
    assert_eq!(status["peer_id"], a.peer_id.as_str());
    assert_eq!(status["listen"][0], a.addr.as_str());
    assert_eq!(status["inbound"], 1);
    assert_eq!(status["outbound"], 0);
    assert_eq!(status["banned"], 0);
    let human = stdout(&run(knot(home).arg("status").arg("--data-dir").arg(&b.dir)));
    assert!(human.contains("1 outbound"), "{human}");

    // knot ping: one line per pong, a summary, exit 0.
    let out = run(knot(home).args(["ping", &a.addr, "-c", "3", "-i", "0.1"]));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let pongs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .collect();
    assert_eq!(pongs.len(), 3, "{text}");
    assert!(
        pongs[0].contains(&format!("from {} ({})", a.peer_id, a.addr)),
        "{text}"
    );
    assert!(pongs[2].contains("seq=3 time="), "{text}");
    assert!(
        text.contains("3 pings sent, 3 pongs received, 0% loss"),
        "{text}"
    );
    assert!(text.contains("rtt min/avg/max/mdev = "), "{text}");

    // SIGTERM: B says goodbye, A sees the reason, B exits cleanly and
    // removes its socket.
    b.terminate();
    a.wait_line(&format!(
        "disconnected {}: closed by peer: shutdown",
        b.peer_id
    ));
    assert!(b.wait_exit().success());
    assert!(!b.dir.join("control.sock").exists());
    let gone = run(knot(home).arg("peers").arg("--data-dir").arg(&b.dir));
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no node running"),
        "{gone:?}"
    );
}

/// `knot run --listen quic/…`: a node on QUIC and TCP advertises both,
/// a QUIC-only node reaches it over QUIC, `knot ping` works over QUIC.
#[test]
fn two_nodes_over_quic_and_knot_ping_a_quic_address() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let a = Node::start_on(
        home,
        "a",
        "quic/127.0.0.1:0",
        &["--listen", "tcp/127.0.0.1:0"],
    );
    assert!(a.addr.starts_with("quic/127.0.0.1:"), "{}", a.addr);
    let status = a.ctl(home, "status");
    let listen: Vec<String> = serde_json::from_value(status["listen"].clone()).unwrap();
    assert_eq!(listen.len(), 2, "{status}");
    assert!(listen[1].starts_with("tcp/127.0.0.1:"), "{status}");
    let b = Node::start_on(home, "b", "quic/127.0.0.1:0", &["--peer", &a.addr.clone()]);
    let a_at_b = b.wait_peer(home, &a.peer_id);
    assert_eq!(a_at_b["addr"], a.addr.as_str());
    let b_at_a = a.wait_peer(home, &b.peer_id);
    assert!(
        b_at_a["addr"]
            .as_str()
            .unwrap()
            .starts_with("quic/127.0.0.1:"),
        "{b_at_a}"
    );
    let out = run(knot(home).args(["ping", &a.addr, "-c", "2", "-i", "0.1"]));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2 pings sent, 2 pongs received, 0% loss"),
        "{text}"
    );
}

#[test]
fn ping_without_an_answer_fails() {
    let home = tempfile::tempdir().unwrap();
    // A port nobody listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(knot(home.path()).args(["ping", &format!("tcp/127.0.0.1:{port}"), "-c", "1"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "{out:?}"
    );
}

#[test]
fn config_example_parses_bad_fields_are_named_env_wins() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let example = run(knot(home).args(["config", "example"]));
    assert!(example.status.success());
    let file = home.join("knot.toml");
    std::fs::write(&file, &example.stdout).unwrap();
    let checked = json(&run(knot(home)
        .args(["config", "check", "--json", "--config"])
        .arg(&file)));
    assert_eq!(checked["max_inbound"], 64);
    assert_eq!(checked["ping"]["interval_ms"], 15000);
    assert_eq!(
        checked["data_dir"],
        home.join(".local/share/knot").display().to_string()
    );

    // An environment override wins over the file.
    let checked = json(&run(knot(home)
        .args(["config", "check", "--json", "--config"])
        .arg(&file)
        .env("KNOT_MAX_INBOUND", "10")
        .env("KNOT_PING_TIMEOUT_MS", "900")));
    assert_eq!(checked["max_inbound"], 10);
    assert_eq!(checked["ping"]["timeout_ms"], 900);

    // Bad values and unknown keys are named.
    for (text, env, named) in [
        ("max_inbound = 0", None, "max_inbound"),
        ("[ping]\ntimeout_ms = 0", None, "ping.timeout_ms"),
        ("listen = [\"udp/1.2.3.4:5\"]", None, "listen[0]"),
        ("max_inboud = 3", None, "max_inboud"),
        ("", Some(("KNOT_MAX_INBOUND", "lots")), "KNOT_MAX_INBOUND"),
        ("", Some(("KNOT_NO_SUCH_FIELD", "1")), "KNOT_NO_SUCH_FIELD"),
    ] {
        let bad = home.join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let mut cmd = knot(home);
        cmd.args(["config", "check", "--config"]).arg(&bad);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} passed");
        assert!(err.contains(named), "{text}: {err}");
    }

    // `knot run` refuses a bad configuration before starting.
    let out = run(knot(home)
        .args(["run", "--data-dir"])
        .arg(home.join("r"))
        .env("KNOT_MAX_PER_IP", "0"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_per_ip"));
}

#[test]
fn a_data_dir_serves_one_node_and_a_stale_socket_is_replaced() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut first = Node::start(home, "a", &[]);
    let id = first.peer_id.clone();

    // A second node on the same data directory is refused by name.
    let out = run(knot(home)
        .args([
            "run",
            "--no-mdns",
            "--listen",
            "tcp/127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&first.dir));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already runs"),
        "{out:?}"
    );

    // SIGKILL leaves the socket file behind; the next start replaces it
    // and keeps the identity.
    first.child.kill().unwrap();
    first.wait_exit();
    assert!(first.dir.join("control.sock").exists());
    let second = Node::start(home, "a", &[]);
    assert_eq!(second.peer_id, id);
    assert_eq!(second.ctl(home, "status")["peer_id"], id.as_str());
}

/// `knot health` output (`--json`) parsed, whatever the exit code says.
fn health(home: &Path, dir: &Path, peer: Option<&str>) -> (Output, Value) {
    let out = run(knot(home)
        .args(["health", "--json", "--data-dir"])
        .arg(dir)
        .args(peer));
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, value)
}

#[test]
fn health_of_self_and_peer_and_metrics_over_http() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut a = Node::start(home, "a", &["--metrics", "127.0.0.1:0"]);
    let b = Node::start(home, "b", &["--peer", &a.addr.clone()]);
    let url = a.wait_line("metrics on ").to_owned();
    b.wait_peer(home, &a.peer_id);
    a.wait_peer(home, &b.peer_id);

    // Our own verdict, then B's, asked over the health protocol.
    let levels = ["Ok", "Degraded", "Failing"];
    let (out, own) = health(home, &a.dir, None);
    assert!(levels.contains(&own["level"].as_str().unwrap()), "{own}");
    assert_eq!(
        out.status.success(),
        own["level"] == "Ok",
        "exit code follows the level"
    );
    let (_, remote) = health(home, &a.dir, Some(&b.peer_id));
    assert!(
        levels.contains(&remote["level"].as_str().unwrap()),
        "{remote}"
    );
    assert!(remote["reasons"].is_array(), "{remote}");
    // A peer we are not connected to is a named error, not a verdict.
    let stranger = knotwork_core::Keypair::generate()
        .unwrap()
        .peer_id()
        .to_string();
    let (out, _) = health(home, &a.dir, Some(&stranger));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not connected"),
        "{out:?}"
    );

    // The metrics endpoint answers GET /metrics with the Prometheus text.
    let text = scrape(&url);
    assert!(text.contains("# TYPE knot_peers gauge"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("knot_connections_total{")),
        "a connection was counted: {text}"
    );
}

/// `knot run` listens and dials over Unix domain sockets and WebSocket too,
/// with the same handshake and version exchange as over TCP.
#[test]
fn nodes_meet_over_unix_sockets_and_websocket() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let uds = format!("uds/{}", home.join("a.sock").display());
    let mut a = Node::start(
        home,
        "a",
        &["--listen", &uds, "--listen", "ws/127.0.0.1:0/knot"],
    );
    let ws = format!("ws/{}", a.wait_line("listening on ws/"));
    assert!(ws.ends_with("/knot"), "{ws}");
    let b = Node::start(home, "b", &["--peer", &uds]);
    let c = Node::start(home, "c", &["--peer", &ws]);
    assert_eq!(b.wait_peer(home, &a.peer_id)["addr"], uds.as_str());
    assert_eq!(c.wait_peer(home, &a.peer_id)["addr"], ws.as_str());
    a.wait_peer(home, &b.peer_id);
    a.wait_peer(home, &c.peer_id);
    // The socket file is owner-only.
    assert_eq!(mode(&home.join("a.sock")), 0o600);
}
