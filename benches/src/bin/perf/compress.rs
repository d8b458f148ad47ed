//! Compression per channel (`--only compress`): bulk throughput of typed
//! 16 KiB messages between two nodes on loopback TCP, with compressible
//! text and with incompressible random bytes, compression off, lz4 and
//! zstd. Each setting alternates with "off" in rounds; a row's ratio is
//! the median of its per-round ratios to "off" with the same payload.

use std::time::Instant;

use bytes::Bytes;
use knotwork_core::{Keypair, PeerAddr};
use knotwork_node::{Channel, Compression, Node, NodeConfig, RateBudget, Sessions, Subscription};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::sides::{Sides, wait};

/// Payload bytes per message.
pub const CHUNK: usize = 16 * 1024;

/// A typed message of [`CHUNK`] bytes.
#[derive(Serialize, Deserialize)]
pub struct Chunk(pub Bytes);

impl Message for Chunk {
    const NAME: &'static str = "perf/chunk/1";
    // length varint (3) + the bytes.
    const MAX_BYTES: usize = 3 + CHUNK;
}

/// What the messages carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// JSON-like log lines (about 6x smaller with lz4).
    Text,
    /// Random bytes.
    Random,
}

impl Payload {
    fn label(self) -> &'static str {
        match self {
            Payload::Text => "text",
            Payload::Random => "random",
        }
    }

    /// 64 different chunks of this payload.
    fn chunks(self) -> Vec<Chunk> {
        let mut rng = fastrand::Rng::with_seed(19);
        (0..64)
            .map(|i| {
                let bytes: Vec<u8> = match self {
                    Payload::Random => (0..CHUNK).map(|_| rng.u8(..)).collect(),
                    Payload::Text => {
                        let mut text = String::with_capacity(CHUNK + 200);
                        let mut seq = i * 1000;
                        while text.len() < CHUNK {
                            seq += 1;
                            text.push_str(&format!(
                                "{{\"seq\":{seq},\"peer\":\"12D3KooW{:08x}\",\"event\":\"{}\",\"rtt_us\":{}}}\n",
                                rng.u32(..1 << 16),
                                ["connected", "ping", "gossip", "task done"][rng.usize(..4)],
                                rng.u32(100..5000),
                            ));
                        }
                        text.truncate(CHUNK);
                        text.into_bytes()
                    }
                };
                Chunk(Bytes::from(bytes))
            })
            .collect()
    }
}

/// Two connected nodes with compression `setting` on both.
struct Pair {
    server: Node,
    client: Node,
    channel: Channel,
    inbound: Option<Subscription<Chunk>>,
}

fn config(setting: Compression) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.channel.compression = setting;
    config.outbound_slots = 0;
    config.ping.interval = std::time::Duration::from_secs(3600);
    config.ping.timeout = std::time::Duration::from_secs(3600);
    config
}

fn pair(sides: &Sides, setting: Compression) -> Pair {
    let (tx, mut subs) = mpsc::channel(1);
    let server = sides.server(async move {
        Node::builder(Keypair::generate().expect("keypair"))
            .config(config(setting))
            .listen("tcp/127.0.0.1:0".parse().expect("addr"))
            .budget::<Chunk>(RateBudget::UNLIMITED)
            .protocol("perf-compress", Sessions::ALL, move |ch| {
                let _ = tx.try_send(ch.subscribe::<Chunk>());
                async {}
            })
            .start()
            .await
            .expect("server node")
    });
    let addr: PeerAddr = server.listen_addrs().first().cloned().expect("listen addr");
    let (client, channel) = sides.client(async move {
        let client = Node::builder(Keypair::generate().expect("keypair"))
            .config(config(setting))
            .budget::<Chunk>(RateBudget::UNLIMITED)
            .start()
            .await
            .expect("client node");
        let channel = client.connect(&addr).await.expect("connect");
        (client, channel)
    });
    assert_eq!(channel.compression(), setting, "both sides offer it");
    let inbound = sides.server(async move { subs.recv().await.expect("subscription") });
    Pair {
        server,
        client,
        channel,
        inbound: Some(inbound),
    }
}

impl Pair {
    /// Sends `count` messages cycling through `chunks`; payload bytes/s
    /// until the server has them all.
    fn bulk(&mut self, sides: &Sides, chunks: &[Chunk], count: usize) -> f64 {
        let mut inbound = self.inbound.take().expect("subscription");
        let counter = sides.spawn_server(async move {
            for _ in 0..count {
                inbound.recv().await.expect("message");
            }
            (Instant::now(), inbound)
        });
        let ch = self.channel.clone();
        let chunks: Vec<Chunk> = chunks.iter().map(|c| Chunk(c.0.clone())).collect();
        let start = sides.client(async move {
            let start = Instant::now();
            for c in chunks.iter().cycle().take(count) {
                ch.send(c).await.expect("send");
            }
            start
        });
        let (done, inbound) = wait(counter);
        self.inbound = Some(inbound);
        (count * CHUNK) as f64 / (done - start).as_secs_f64()
    }

    fn shutdown(self, sides: &Sides) {
        let Pair { server, client, .. } = self;
        sides.client(async move { client.shutdown().await });
        sides.server(async move { server.shutdown().await });
    }
}

/// One measured setting: its payload, compression, rate and ratio to off.
pub struct Measured {
    /// What the messages carried.
    pub payload: &'static str,
    /// The compression both nodes used.
    pub setting: Compression,
    /// Median payload bytes/s.
    pub rate: f64,
    /// Median per-round ratio to compression off (1.0 for off itself).
    pub ratio: f64,
}

/// Measures every payload and setting, `bytes` of payload per setting.
pub fn measure(sides: &Sides, bytes: u64) -> Vec<Measured> {
    const ROUNDS: usize = 5;
    let count = ((bytes as usize / CHUNK) / ROUNDS).max(1);
    let settings = [Compression::None, Compression::Lz4, Compression::Zstd];
    let mut pairs: Vec<Pair> = settings.iter().map(|&s| pair(sides, s)).collect();
    let mut out = Vec::new();
    for payload in [Payload::Text, Payload::Random] {
        let chunks = payload.chunks();
        let mut rates = vec![Vec::new(); settings.len()];
        let mut ratios = vec![Vec::new(); settings.len()];
        for round in 1..=ROUNDS {
            crate::watchdog::step(format_args!("compress {} round {round}", payload.label()));
            let off = pairs[0].bulk(sides, &chunks, count);
            for (i, pair) in pairs.iter_mut().enumerate() {
                let rate = if i == 0 {
                    off
                } else {
                    pair.bulk(sides, &chunks, count)
                };
                rates[i].push(rate);
                ratios[i].push(rate / off);
            }
        }
        for (i, &setting) in settings.iter().enumerate() {
            out.push(Measured {
                payload: payload.label(),
                setting,
                rate: crate::median(&mut rates[i]),
                ratio: crate::median(&mut ratios[i]),
            });
        }
    }
    for pair in pairs {
        pair.shutdown(sides);
    }
    out
}
