//! Multi-core (`--only multicore`): N channels between one server node and
//! N client nodes in one process (a node keeps one channel per peer, so each
//! channel has a client identity of its own), all on one runtime: a
//! multi-thread runtime of two workers placed by the OS (both vCPUs) against
//! the same workload on a current-thread runtime pinned to one CPU.
//!
//! Two workloads, each on every channel at once: pipelined 64 B typed sends
//! (aggregate msg/s) and bulk 16 KiB typed messages (aggregate payload B/s).
//! The two runtimes alternate in rounds; a row's ratio is the median of the
//! per-round ratios multi-thread / one core.

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
use crate::watchdog;

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

/// Per-round figures of one workload: one core, multi-thread, and their ratio.
#[derive(Default)]
struct Rounds {
    one: Vec<f64>,
    multi: Vec<f64>,
    ratios: Vec<f64>,
}

impl Rounds {
    fn push(&mut self, one: f64, multi: f64) {
        self.one.push(one);
        self.multi.push(multi);
        self.ratios.push(multi / one);
    }

    /// The two rows of this workload with `n` channels.
    fn rows(mut self, scenario: &'static str, unit: &'static str, n: usize) -> [Row; 2] {
        let one = crate::median(&mut self.one);
        let baseline = format!("1 core, {n} ch");
        let row = |layer: String, value, ratio, target| Row {
            placement: "multicore".into(),
            scenario,
            layer,
            value,
            unit,
            p99: None,
            baseline: baseline.clone(),
            ratio: Some(ratio),
            limit: None,
            target,
        };
        [
            row(baseline.clone(), one, 1.0, ""),
            row(
                format!("{WORKERS} workers, {n} ch"),
                crate::median(&mut self.multi),
                crate::median(&mut self.ratios),
                if n == 16 { ">= 1.8x" } else { "" },
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
            let a = meshes[0].pipelined(&one, per_pipe);
            let b = meshes[1].pipelined(&multi, per_pipe);
            pipe.push(a, b);
            watchdog::step(format_args!("multicore: {n} ch bulk 16K, round {round}"));
            let a = meshes[0].bulk(&one, per_bulk);
            let b = meshes[1].bulk(&multi, per_bulk);
            big.push(a, b);
        }
        watchdog::step(format_args!("multicore: {n} channels, shutdown"));
        let [m0, m1] = meshes;
        m0.shutdown(&one);
        m1.shutdown(&multi);
        rows.extend(pipe.rows("pipelined 64B", "msg/s", n));
        rows.extend(big.rows("bulk 16K node", "B/s", n));
    }
}
