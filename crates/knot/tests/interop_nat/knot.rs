//! `knot run` processes in the bed, and their control socket.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bed::{Bed, DEADLINE, Site};

/// The TCP port every node listens on (each namespace has its own ports).
pub const PORT: u16 = 4000;

/// A `knot run` started in the bed (the bed owns the process).
pub struct Knot {
    /// Its name in the bed (log file `<name>.log`).
    pub name: String,
    /// Where it runs.
    pub site: Site,
    /// Its data directory (identity, control socket).
    pub dir: PathBuf,
    /// Its PeerId as `knot run` printed it.
    pub peer_id: String,
}

impl Bed {
    /// Starts `knot run` in `site` listening on `tcp/0.0.0.0:4000` without
    /// mDNS, plus `extra` arguments; waits until it prints its control socket.
    pub fn knot(&mut self, site: Site, name: &str, extra: &[&str]) -> Knot {
        self.knot_env(site, name, extra, &[])
    }

    /// [`Bed::knot`] with extra environment variables (`KNOT_*` settings).
    pub fn knot_env(
        &mut self,
        site: Site,
        name: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Knot {
        self.knot_on(site, name, PORT, extra, vars)
    }

    /// [`Bed::knot_env`] listening on `port` (several nodes in one place).
    pub fn knot_on(
        &mut self,
        site: Site,
        name: &str,
        port: u16,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Knot {
        let dir = self.dir.join(name);
        let home = self.dir.display().to_string();
        let data = dir.display().to_string();
        let listen = format!("tcp/0.0.0.0:{port}");
        let mut args = vec![
            env!("CARGO_BIN_EXE_knot"),
            "run",
            "--data-dir",
            &data,
            "--listen",
            &listen,
            // Only the peers a test names: no LAN discovery across the bridge.
            "--no-mdns",
        ];
        args.extend(extra);
        let mut env = vec![
            ("HOME", home.as_str()),
            ("RUST_LOG", "info"),
            ("KNOT_PING_INTERVAL_MS", "200"),
        ];
        env.extend(vars);
        self.spawn_env(site, name, &args, &env);
        let log = self.wait_log(name, "control socket ");
        let peer_id = log
            .lines()
            .find_map(|l| l.strip_prefix("peer id "))
            .unwrap_or_else(|| panic!("{name} printed no peer id:\n{log}"))
            .to_owned();
        Knot {
            name: name.to_owned(),
            site,
            dir,
            peer_id,
        }
    }

    /// `knot <args…> --json` against `node`'s control socket.
    pub fn ctl(&self, node: &Knot, args: &[&str]) -> Value {
        let data = node.dir.display().to_string();
        let mut all = vec![env!("CARGO_BIN_EXE_knot")];
        all.extend(args);
        all.extend(["--json", "--data-dir", &data]);
        let out = self
            .exec(node.site, &all)
            .unwrap_or_else(|e| panic!("knot {args:?} for {}: {e}", node.name));
        serde_json::from_slice(&out.stdout).expect("knot prints one JSON value")
    }

    /// `node`'s entry for `peer` in `knot peers --json`, if listed.
    pub fn peer_entry(&self, node: &Knot, peer: &Knot) -> Option<Value> {
        let peers = self.ctl(node, &["peers"]);
        peers["peers"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["peer_id"] == peer.peer_id.as_str()))
            .cloned()
    }

    /// Polls `knot peers --json` of `node` until `peer` is listed; returns its
    /// entry and how long that took.
    pub fn wait_peer(&self, node: &Knot, peer: &Knot) -> (Value, Duration) {
        let start = Instant::now();
        loop {
            if let Some(entry) = self.peer_entry(node, peer) {
                return (entry, start.elapsed());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} never listed {} within {DEADLINE:?}",
                node.name,
                peer.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -TERM` for a node and a bounded wait for its exit.
    pub fn stop(&mut self, node: &Knot) {
        let status = self.terminate(&node.name);
        assert!(status.success(), "{} exited with {status}", node.name);
    }
}

/// The IPv4 address part of a `tcp/ip:port`, `quic/ip:port` (or `ip:port`)
/// address string.
pub fn ip_of(addr: &str) -> String {
    let socket = addr.trim_start_matches("tcp/").trim_start_matches("quic/");
    match socket.rsplit_once(':') {
        Some((ip, _)) => ip.to_owned(),
        None => panic!("not an ip:port address: {addr}"),
    }
}
