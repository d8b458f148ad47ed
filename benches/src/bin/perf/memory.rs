//! Memory per idle connection. Each measurement is its own process (so no
//! earlier scenario's freed heap hides growth): the server end runs here,
//! the dialers in a child process of their own, and the server's resident
//! set grows by what its connections hold.
//!
//! `perf --memory-child <raw|node> <count>` prints `bytes_per_connection
//! <n>`; it starts `perf --dial-child <raw|node> <addr> <count>`, which
//! opens the connections, prints `ready` and holds them until its stdin
//! closes.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::node;
use crate::sides::{Placement, Sides};
use crate::sys;

/// Connections opened and closed before the baseline (see `server_main`).
const WARM_UP: usize = 4;

/// What holds the connections on the server end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A tokio task per accepted `TcpStream`, waiting to read.
    Raw,
    /// A knotwork node with a channel per inbound peer.
    Node,
}

impl Holder {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Holder::Raw => "raw",
            Holder::Node => "node",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Holder> {
        match s {
            "raw" => Some(Holder::Raw),
            "node" => Some(Holder::Node),
            _ => None,
        }
    }
}

/// Runs `perf --memory-child` for `holder` and `count` connections and
/// returns the bytes per idle connection it measured.
pub fn measure(holder: Holder, count: usize) -> f64 {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(["--memory-child", holder.name(), &count.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("memory child");
    assert!(out.status.success(), "memory child failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("bytes_per_connection "))
        .and_then(|v| v.trim().parse().ok())
        .expect("memory child printed no result")
}

/// The server end (`--memory-child`): prints `bytes_per_connection <n>`.
pub fn server_main(holder: Holder, count: usize) {
    sys::raise_nofile();
    let sides = Sides::new(Placement::Unpinned);
    let open = Arc::new(AtomicUsize::new(0));
    let (addr, node) = match holder {
        Holder::Raw => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.set_nonblocking(true).expect("nonblocking");
            let addr = l.local_addr().expect("addr");
            let open = open.clone();
            drop(sides.spawn_server(async move {
                let l = TcpListener::from_std(l).expect("listener");
                while let Ok((mut s, _)) = l.accept().await {
                    let open = open.clone();
                    open.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let mut b = [0u8; 1];
                        let _ = s.read(&mut b).await;
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }));
            (addr, None)
        }
        Holder::Node => {
            let (node, addr) = node::memory_server(&sides);
            (addr, Some(node))
        }
    };
    let connected = || match &node {
        // A count, not `peers()`: its list (a few hundred bytes per
        // connection, freed again) would be counted as the node's.
        Some(n) => n.peer_count(),
        None => open.load(Ordering::Relaxed),
    };
    // A few connections open and close before the baseline, so what the
    // process sets up once on first use (AWS-LC's tables and state, tokio's
    // I/O slab pages) is not counted per connection (it was ~0.4 KiB per
    // connection at 1,000 and nothing at 10,000).
    sides.client(async move {
        for _ in 0..WARM_UP {
            match holder {
                Holder::Node => drop(node::light_dial(addr).await),
                Holder::Raw => drop(TcpStream::connect(addr).await.expect("connect")),
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while connected() > 0 {
        assert!(Instant::now() < deadline, "warm-up connections still open");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = sys::rss_bytes();
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args([
            "--dial-child",
            holder.name(),
            &addr.to_string(),
            &count.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dial child");
    let stdout = child.stdout.take().expect("child stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "ready");
    assert!(ready, "dial child ended before it was ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected() < count {
        assert!(
            Instant::now() < deadline,
            "{} of {count} connections open",
            connected()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the last handshakes' temporaries go.
    std::thread::sleep(Duration::from_millis(300));
    let after = sys::rss_bytes();
    drop(child.stdin.take());
    let _ = child.wait();
    if let Some(node) = node {
        sides.server(async move { node.shutdown().await });
    }
    let per = after.saturating_sub(before) as f64 / count as f64;
    let mut out = std::io::stdout().lock();
    writeln!(out, "bytes_per_connection {per:.0}").expect("stdout");
}

/// The dialers (`--dial-child`): opens `count` connections to `addr`,
/// prints `ready`, holds them until stdin closes.
pub fn dialer_main(holder: Holder, addr: SocketAddr, count: usize) {
    sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut held = Vec::with_capacity(count);
        let mut raw = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            if tasks.len() >= 32
                && let Some(done) = tasks.join_next().await
            {
                held.push(done.expect("dial"));
            }
            match holder {
                Holder::Node => {
                    tasks.spawn(node::light_dial(addr));
                }
                Holder::Raw => {
                    let s = TcpStream::connect(addr).await.expect("connect");
                    raw.push(s);
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            held.push(done.expect("dial"));
        }
        println!("ready");
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
        drop((held, raw));
    });
}
