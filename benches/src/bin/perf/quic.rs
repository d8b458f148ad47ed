//! QUIC scenarios (`--only quic`): the QUIC transport's first stream
//! (bulk, 64 B ping-pong), raw UDP's 64 B ping-pong, and a node pair over
//! QUIC (request/response, pipelined typed send, connect with handshake
//! and version), each as a ratio to its TCP counterpart measured in the
//! same run: bulk to `SecureStream` AES-GCM over TCP (in alternating
//! rounds), connects to the node's own TCP + Noise XX + version.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use knotwork_core::{Keypair, Listener, PeerAddr, PeerId, Transport};
use knotwork_crypto_handshake::Suite;
use knotwork_transport_quic::{QuicConfig, QuicConnection, QuicListener, QuicTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use crate::node::{self, Carrier};
use crate::sides::{Sides, wait};
use crate::stream::{self, CHUNK, Layer, SMALL};
use crate::{Rows, Sizes, median, watchdog};

/// A QUIC listener on loopback (made on the server end, where its
/// endpoint's driver runs) and the identity it proves.
fn listen(sides: &Sides) -> (QuicListener, PeerAddr, PeerId) {
    sides.server(async {
        let keypair = Keypair::generate().expect("keypair");
        let quic = QuicTransport::new(&keypair, QuicConfig::default()).expect("quic");
        let listener = quic
            .listen(&"quic/127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("listen");
        let addr = listener.local_addr();
        (listener, addr, keypair.peer_id())
    })
}

/// Runs `serve` on one accepted QUIC connection on the server end and
/// `measure` on one dialed connection on the client end.
fn one_connection<S, SF, M, MF, T>(sides: &Sides, serve: S, measure: M) -> T
where
    S: FnOnce(QuicConnection) -> SF + Send + 'static,
    SF: Future<Output = ()> + Send,
    M: FnOnce(QuicConnection) -> MF + Send + 'static,
    MF: Future<Output = T> + Send,
    T: Send + 'static,
{
    let (mut listener, addr, id) = listen(sides);
    let server = sides.spawn_server(async move {
        let (conn, _) = listener.accept().await.expect("accept");
        serve(conn).await;
    });
    let out = sides.client(async move {
        let keypair = Keypair::generate().expect("keypair");
        let quic = QuicTransport::new(&keypair, QuicConfig::default()).expect("quic");
        let conn = quic.dial_peer(&addr, Some(id)).await.expect("dial");
        measure(conn).await
    });
    wait(server);
    out
}

/// Bulk throughput on the first stream: `total` bytes one way, in bytes/s
/// (until the reader has them all and acknowledged).
pub fn bulk(sides: &Sides, total: u64) -> f64 {
    let serve = move |mut c: QuicConnection| async move {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < total {
            let n = c.read(&mut buf).await.expect("read");
            assert!(n > 0, "eof after {got} of {total} bytes");
            got += n as u64;
        }
        c.write_all(&[1]).await.expect("ack");
        c.flush().await.expect("flush");
    };
    let measure = move |mut c: QuicConnection| async move {
        let chunk = vec![0xa5u8; CHUNK];
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(CHUNK as u64) as usize;
            c.write_all(&chunk[..n]).await.expect("write");
            sent += n as u64;
        }
        c.flush().await.expect("flush");
        let mut ack = [0u8; 1];
        c.read_exact(&mut ack).await.expect("ack");
        total as f64 / start.elapsed().as_secs_f64()
    };
    one_connection(sides, serve, measure)
}

/// 64 B ping-pong on the first stream: `rounds` round trips (after a
/// warm-up), each timed.
pub fn ping_pong(sides: &Sides, rounds: usize) -> Vec<Duration> {
    let serve = |mut c: QuicConnection| async move {
        let mut buf = [0u8; SMALL];
        while c.read_exact(&mut buf).await.is_ok() {
            c.write_all(&buf).await.expect("echo");
            c.flush().await.expect("flush");
        }
    };
    let measure = move |mut c: QuicConnection| async move {
        let mut buf = [7u8; SMALL];
        let mut times = Vec::with_capacity(rounds);
        for i in 0..rounds + rounds / 10 {
            let t = Instant::now();
            c.write_all(&buf).await.expect("ping");
            c.flush().await.expect("flush");
            c.read_exact(&mut buf).await.expect("pong");
            if i >= rounds / 10 {
                times.push(t.elapsed());
            }
        }
        times
    };
    one_connection(sides, serve, measure)
}

/// 64 B ping-pong over bare UDP datagrams (the floor under QUIC).
pub fn udp_ping_pong(sides: &Sides, rounds: usize) -> Vec<Duration> {
    let total = rounds + rounds / 10;
    let (server, addr): (_, SocketAddr) = sides.server(async {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = s.local_addr().expect("addr");
        (s, addr)
    });
    let echo = sides.spawn_server(async move {
        let mut buf = [0u8; SMALL];
        for _ in 0..total {
            let (n, from) = server.recv_from(&mut buf).await.expect("recv");
            server.send_to(&buf[..n], from).await.expect("send");
        }
    });
    let times = sides.client(async move {
        let c = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        c.connect(addr).await.expect("connect");
        let mut buf = [7u8; SMALL];
        let mut times = Vec::with_capacity(rounds);
        for i in 0..total {
            let t = Instant::now();
            c.send(&buf).await.expect("ping");
            c.recv(&mut buf).await.expect("pong");
            if i >= rounds / 10 {
                times.push(t.elapsed());
            }
        }
        times
    });
    wait(echo);
    times
}

/// The `quic` group; `raw` are the raw TCP baselines (rtt, pipelined) of
/// the same run.
pub fn measure(sides: &Sides, sizes: &Sizes, raw: (f64, f64), out: &mut Rows<'_>) {
    let (raw_rtt, raw_pipe) = raw;
    measure_bulk(sides, sizes, out);

    watchdog::step("rtt 64B raw udp");
    let times = udp_ping_pong(sides, sizes.rounds);
    out.latencies(
        "rtt 64B",
        "raw udp datagrams".into(),
        times,
        ("raw tcp ping-pong", raw_rtt),
        "",
    );
    watchdog::step("rtt 64B quic stream");
    let times = ping_pong(sides, sizes.rounds);
    out.latencies(
        "rtt 64B",
        "quic stream".into(),
        times,
        ("raw tcp ping-pong", raw_rtt),
        "",
    );

    let mut connect_tcp = 0.0;
    for carrier in [Carrier::Tcp, Carrier::Quic] {
        let name = match carrier {
            Carrier::Tcp => "tcp",
            Carrier::Quic => "quic",
        };
        watchdog::step(format_args!("node pair over {name}"));
        let mut pair = node::pair(sides, carrier);
        watchdog::step(format_args!("rtt 64B node request/response over {name}"));
        let times = pair.request_response(sides, sizes.rounds);
        out.latencies(
            "rtt 64B",
            format!("node request/response, {name}"),
            times,
            ("raw tcp ping-pong", raw_rtt),
            "",
        );
        watchdog::step(format_args!("pipelined 64B node typed send over {name}"));
        let rate = pair.pipelined(sides, sizes.pipelined);
        out.push(
            "pipelined 64B",
            format!("node typed send, {name}"),
            rate,
            "msg/s",
            None,
            ("raw tcp length-prefixed", raw_pipe),
            None,
            "",
        );
        watchdog::step(format_args!("connect node over {name}"));
        let (first, again) = pair.connects(sides, sizes.connects);
        let (first_label, again_label, target) = match carrier {
            Carrier::Tcp => (
                "node tcp + XX + version",
                "node tcp reconnect + version",
                "",
            ),
            Carrier::Quic => (
                "node quic first contact + version",
                "node quic returning + version",
                "<= 1.2x",
            ),
        };
        let m = out.latencies(
            "connect",
            first_label.into(),
            first,
            ("node tcp + XX + version", connect_tcp),
            target,
        );
        out.latencies(
            "connect",
            again_label.into(),
            again,
            ("node tcp + XX + version", connect_tcp),
            target,
        );
        if carrier == Carrier::Tcp {
            connect_tcp = m;
        }
        watchdog::step(format_args!("node pair over {name}: shutdown"));
        pair.shutdown(sides);
    }
}

/// QUIC bulk against `SecureStream` AES-GCM over TCP, alternating in
/// rounds (loopback's speed moves between runs); the ratio is the median
/// of the per-round ratios.
fn measure_bulk(sides: &Sides, sizes: &Sizes, out: &mut Rows<'_>) {
    const ROUNDS: u64 = 5;
    let per_round = (sizes.bulk / ROUNDS).max(1);
    let noise = Layer::Secure(Suite::AesGcm);
    let (mut quic, mut tcp, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        watchdog::step(format_args!("bulk {}, round {round}", noise.label()));
        let base = stream::bulk(sides, noise, per_round);
        watchdog::step(format_args!("bulk quic stream, round {round}"));
        let rate = bulk(sides, per_round);
        tcp.push(base);
        quic.push(rate);
        ratios.push(rate / base);
    }
    let base = median(&mut tcp);
    let label = format!("{}, quic rounds", noise.label());
    out.push(
        "bulk",
        label.clone(),
        base,
        "B/s",
        None,
        (&label, base),
        None,
        "",
    );
    out.push(
        "bulk",
        "quic stream".into(),
        median(&mut quic),
        "B/s",
        None,
        (&label, base),
        None,
        ">= 0.5x",
    );
    if let Some(row) = out.rows.last_mut() {
        row.ratio = Some(median(&mut ratios));
    }
}
