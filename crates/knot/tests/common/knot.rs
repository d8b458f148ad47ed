//! Helpers for tests that run the `knot` binary: a clean environment, its
//! output as JSON, and `knot run` processes that are killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// `knot` with a clean environment: no `KNOT_*` from the caller, HOME in `home`.
pub fn knot(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knot"));
    for (key, _) in std::env::vars() {
        if key.starts_with("KNOT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HOME", home).env("RUST_LOG", "warn");
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("knot runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "knot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON value")
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A running `knot run`; killed (and reaped) when dropped, also on panic.
pub struct Node {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub dir: PathBuf,
    pub peer_id: String,
    pub addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    pub fn start(home: &Path, name: &str, extra: &[&str]) -> Node {
        Self::start_on(home, name, "tcp/127.0.0.1:0", extra)
    }

    /// A node listening on `listen` (its `addr`: the first bound address).
    pub fn start_on(home: &Path, name: &str, listen: &str, extra: &[&str]) -> Node {
        let dir = home.join(name);
        let mut child = knot(home)
            .args(["run", "--data-dir"])
            .arg(&dir)
            .args(["--listen", listen, "--no-mdns"])
            .args(extra)
            .env("KNOT_PING_INTERVAL_MS", "200")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = Node {
            child,
            lines,
            seen: Vec::new(),
            dir,
            peer_id: String::new(),
            addr: String::new(),
        };
        node.peer_id = node.wait_line("peer id ").to_owned();
        node.addr = node.wait_line("listening on ").to_owned();
        node.wait_line("control socket ");
        node
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest.
    pub fn wait_line(&mut self, prefix: &str) -> &str {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.seen.iter().position(|l| l.starts_with(prefix)) {
                return &self.seen[i][prefix.len()..];
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no line {prefix:?} within {DEADLINE:?}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    pub fn ctl(&self, home: &Path, command: &str) -> Value {
        json(&run(knot(home)
            .args([command, "--json", "--data-dir"])
            .arg(&self.dir)))
    }

    /// Polls `knot peers --json` until `peer` is listed; returns its entry.
    pub fn wait_peer(&self, home: &Path, peer: &str) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let peers = self.ctl(home, "peers");
            let found = peers["peers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["peer_id"] == peer)
                .cloned();
            match found {
                Some(entry) => return entry,
                None if Instant::now() > end => panic!("{peer} never listed: {peers}"),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "node did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `GET /metrics` from a `knot run --metrics` endpoint (`url` as printed on
/// its `metrics on` line); the whole HTTP response, checked to be a 200.
pub fn scrape(url: &str) -> String {
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: knot\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}
