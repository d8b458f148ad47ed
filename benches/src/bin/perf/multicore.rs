//! Multi-core (`--only multicore`): N channels between one server node and
//! N client nodes in one process (a node keeps one channel per peer, so each
//! channel has a client identity of its own), all on one runtime: a
//! multi-thread runtime of two workers placed by the OS (both vCPUs) against
//! the same workload on a current-thread runtime pinned to one CPU.
//!
//! Two workloads, each on every channel at once: pipelined 64 B typed sends
//! (aggregate msg/s) and bulk 16 KiB typed messages (aggregate payload B/s).
//! The two runtimes alternate in rounds; a row's ratio is the median of the
//! per-round ratios multi-thread / one core. For each, stderr shows how many
//! CPUs the runtime's threads ran on and how many more they waited for
//! (runnable, not running: the host's other load), as medians.

use std::time::Instant;

use bytes::Bytes;
use knotwork_core::{Keypair, PeerAddr};
use knotwork_node::{Channel, Node, RateBudget, Sessions, Subscription};
use knotwork_wire::Message;
use tokio::sync::mpsc;

use crate::compress::{CHUNK, Chunk};
use crate::node::{Blob, Carrier, blob, client_node, server_config};
use crate::report::Row;
use crate::sides::{Placement, Sides};
use crate::{sys, watchdog};

/// Channel counts measured.
pub const CHANNELS: [usize; 3] = [2, 16, 256];
/// Worker threads of the multi-thread runtime (this machine's vCPUs).
const WORKERS: usize = 2;

/// One server node and `n` client nodes, each client with one channel to it.
struct Mesh {
    server: Node,
    clients: Vec<Node>,
    channels: Vec<Channel>,
    blobs: Vec<Subscription<Blob>>,
    chunks: Vec<Subscription<Chunk>>,
}

fn mesh(sides: &Sides, n: usize) -> Mesh {
    sides.server(async move {
        let (tx, mut subs) = mpsc::channel(n);
        let server = Node::builder(Keypair::generate().expect("keypair"))
            .config(server_config())
            .listen("tcp/127.0.0.1:0".parse().expect("addr"))
            .budget::<Blob>(RateBudget::UNLIMITED)
            .budget::<Chunk>(RateBudget::UNLIMITED)
            .protocol("perf-multicore", Sessions::ALL, move |ch| {
                let _ = tx.try_send((ch.subscribe::<Blob>(), ch.subscribe::<Chunk>()));
                async {}
            })
            .start()
            .await
            .expect("server node");
        let addr: PeerAddr = server.listen_addrs().first().cloned().expect("listen addr");
        let (mut clients, mut channels) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let client = client_node(Carrier::Tcp).await;
            channels.push(client.connect(&addr).await.expect("connect"));
            clients.push(client);
        }
        let (mut blobs, mut chunks) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (b, c) = subs.recv().await.expect("inbound subscriptions");
            blobs.push(b);
            chunks.push(c);
        }
        Mesh {
            server,
            clients,
            channels,
            blobs,
            chunks,
        }
    })
}

/// Sends `per_channel` messages `make()` on every channel at once and
/// receives them from every subscription; returns the seconds until the
/// last subscription had all of its own, and the subscriptions.
async fn all_at_once<M: Message + Send + Sync + 'static>(
    channels: Vec<Channel>,
    subs: Vec<Subscription<M>>,
    per_channel: usize,
    make: fn() -> M,
) -> (f64, Vec<Subscription<M>>) {
    let start = Instant::now();
    let receivers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                for _ in 0..per_channel {
                    sub.recv().await.expect("message");
                }
                sub
            })
        })
        .collect();
    for ch in channels {
        tokio::spawn(async move {
            let msg = make();
            for _ in 0..per_channel {
                ch.send(&msg).await.expect("send");
            }
        });
    }
    let mut back = Vec::with_capacity(receivers.len());
    for r in receivers {
        back.push(r.await.expect("receiver"));
    }
    (start.elapsed().as_secs_f64(), back)
}

fn chunk() -> Chunk {
    static BYTES: [u8; CHUNK] = [0xa5; CHUNK];
    Chunk(Bytes::from_static(&BYTES))
}

impl Mesh {
    /// Aggregate msg/s of `per_channel` 64 B messages on every channel.
    fn pipelined(&mut self, sides: &Sides, per_channel: usize) -> f64 {
        let (channels, subs) = (self.channels.clone(), std::mem::take(&mut self.blobs));
        let (secs, subs) = sides.server(all_at_once(channels, subs, per_channel, blob));
        self.blobs = subs;
        (per_channel * self.channels.len()) as f64 / secs
    }

    /// Aggregate payload B/s of `per_channel` 16 KiB messages on every channel.
    fn bulk(&mut self, sides: &Sides, per_channel: usize) -> f64 {
        let (channels, subs) = (self.channels.clone(), std::mem::take(&mut self.chunks));
        let (secs, subs) = sides.server(all_at_once(channels, subs, per_channel, chunk));
        self.chunks = subs;
        (per_channel * CHUNK * self.channels.len()) as f64 / secs
    }

    fn shutdown(self, sides: &Sides) {
        let Mesh {
            server, clients, ..
        } = self;
        sides.server(async move {
            for c in clients {
                c.shutdown().await;
            }
            server.shutdown().await;
        });
    }
}

/// Thread-name prefixes of the two runtimes (see `Sides`).
const ONE_THREADS: &str = "perf-pinned";
const MULTI_THREADS: &str = "perf-multi";

/// Runs `f`; returns its result and, over its wall time, the CPUs the
/// threads named `threads`* ran on and the CPUs they waited for.
fn loaded<T>(threads: &str, f: impl FnOnce() -> T) -> (T, [f64; 2]) {
    let (run, wait) = sys::sched_times(threads);
    let start = Instant::now();
    let out = f();
    let wall = start.elapsed().as_secs_f64();
    let (run2, wait2) = sys::sched_times(threads);
    let cpus =
        |a: std::time::Duration, b: std::time::Duration| a.saturating_sub(b).as_secs_f64() / wall;
    (out, [cpus(run2, run), cpus(wait2, wait)])
}

/// One round of one workload: each runtime's rate and the CPUs its
/// threads ran on and waited for.
struct Round {
    one: (f64, [f64; 2]),
    multi: (f64, [f64; 2]),
}

/// The rounds of one workload.
#[derive(Default)]
struct Rounds(Vec<Round>);

impl Rounds {
    fn push(&mut self, one: (f64, [f64; 2]), multi: (f64, [f64; 2])) {
        self.0.push(Round { one, multi });
    }

    /// The median over the rounds of `f`.
    fn median(&self, f: impl Fn(&Round) -> f64) -> f64 {
        crate::median(&mut self.0.iter().map(f).collect::<Vec<_>>())
    }

    /// The medians of the CPUs run and waited for, one core then multi.
    fn loads(&self) -> String {
        format!(
            "1 core ran {:.2} CPUs (waited {:.2}), {WORKERS} workers ran {:.2} CPUs (waited {:.2})",
            self.median(|r| r.one.1[0]),
            self.median(|r| r.one.1[1]),
            self.median(|r| r.multi.1[0]),
            self.median(|r| r.multi.1[1]),
        )
    }

    /// The rows of this workload with `n` channels: one core, multi-thread
    /// (ratio: the median per-round ratio), and multi-thread per CPU it ran
    /// on (ratio: to one core per CPU it ran on; how much each CPU's work
    /// costs more across threads, whatever share of the host it got).
    fn rows(&self, scenario: &'static str, unit: &'static str, n: usize) -> [Row; 3] {
        let baseline = format!("1 core, {n} ch");
        let row = |layer: String, value, baseline: &str, ratio, target| Row {
            placement: "multicore".into(),
            scenario,
            layer,
            value,
            unit,
            p99: None,
            baseline: baseline.to_string(),
            ratio: Some(ratio),
            limit: None,
            target,
        };
        let per_cpu = |(rate, load): (f64, [f64; 2])| rate / load[0].max(f64::MIN_POSITIVE);
        [
            row(
                baseline.clone(),
                self.median(|r| r.one.0),
                &baseline,
                1.0,
                "",
            ),
            row(
                format!("{WORKERS} workers, {n} ch"),
                self.median(|r| r.multi.0),
                &baseline,
                self.median(|r| r.multi.0 / r.one.0),
                if n == 16 { ">= 1.8x" } else { "" },
            ),
            row(
                format!("{WORKERS} workers, {n} ch, per CPU"),
                self.median(|r| per_cpu(r.multi)),
                "1 core per CPU",
                self.median(|r| per_cpu(r.multi) / per_cpu(r.one)),
                "",
            ),
        ]
    }
}

/// Measures every channel count: `pipelined` 64 B messages and `bulk`
/// payload bytes in all per run (split among the channels), `rounds`
/// rounds alternating one core (pinned to `cpu`) and the multi-thread
/// runtime.
pub fn measure(cpu: usize, pipelined: usize, bulk: u64, rounds: usize, rows: &mut Vec<Row>) {
    let one = Sides::new(Placement::Pinned(cpu));
    let multi = Sides::multi_thread(WORKERS);
    for n in CHANNELS {
        watchdog::step(format_args!("multicore: {n} channels, two meshes"));
        let mut meshes = [mesh(&one, n), mesh(&multi, n)];
        let per_pipe = (pipelined / n).max(1);
        let per_bulk = (bulk as usize / CHUNK / n).max(1);
        let (mut pipe, mut big) = (Rounds::default(), Rounds::default());
        for round in 1..=rounds {
            watchdog::step(format_args!(
                "multicore: {n} ch pipelined 64B, round {round}"
            ));
            let a = loaded(ONE_THREADS, || meshes[0].pipelined(&one, per_pipe));
            let b = loaded(MULTI_THREADS, || meshes[1].pipelined(&multi, per_pipe));
            pipe.push(a, b);
            watchdog::step(format_args!("multicore: {n} ch bulk 16K, round {round}"));
            let a = loaded(ONE_THREADS, || meshes[0].bulk(&one, per_bulk));
            let b = loaded(MULTI_THREADS, || meshes[1].bulk(&multi, per_bulk));
            big.push(a, b);
        }
        watchdog::step(format_args!("multicore: {n} channels, shutdown"));
        let [m0, m1] = meshes;
        m0.shutdown(&one);
        m1.shutdown(&multi);
        eprintln!("perf:   {n} ch pipelined 64B: {}", pipe.loads());
        eprintln!("perf:   {n} ch bulk 16K: {}", big.loads());
        rows.extend(pipe.rows("pipelined 64B", "msg/s", n));
        rows.extend(big.rows("bulk 16K node", "B/s", n));
    }
}
