//! rust-libp2p 0.57 beside knotwork (`--only libp2p`, cargo feature
//! `libp2p`; `cargo xtask bench --vs libp2p` builds and runs it): two
//! swarms over loopback TCP + Noise XX + yamux, libp2p's defaults (its TCP
//! sets `TCP_NODELAY`), placed on the same runtimes as our scenarios.
//!
//! - bulk and 64 B ping-pong on one yamux stream (`libp2p-stream`), with
//!   the same reading and writing ends as raw TCP and `SecureStream`
//!   ([`stream::bulk_serve`], [`stream::ping_measure`], ...);
//! - request/response round trips of the request-response behaviour (its
//!   CBOR codec, a new yamux stream per request, as libp2p does);
//! - dial: a fresh identity's dial until the connection is established
//!   (TCP, Noise XX, yamux), as our node's first-contact connect.
//!
//! Every row's ratio is to raw TCP measured in the same run and placement.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use libp2p_stream::{Control, IncomingStreams};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::sides::{Sides, wait};
use crate::stream::{self, Layer, SMALL};
use crate::{Rows, Sizes, median, watchdog};

/// The yamux stream protocol of the bulk scenario.
const BULK: StreamProtocol = StreamProtocol::new("/knotwork-perf/bulk/1");
/// The yamux stream protocol of the ping-pong scenario.
const ECHO: StreamProtocol = StreamProtocol::new("/knotwork-perf/echo/1");
/// The request-response protocol.
const RR: StreamProtocol = StreamProtocol::new("/knotwork-perf/rr/1");

/// Both ends' behaviour: raw streams and request-response.
#[derive(NetworkBehaviour)]
struct Behaviour {
    stream: libp2p_stream::Behaviour,
    rr: request_response::cbor::Behaviour<Bytes, Bytes>,
}

/// A swarm of a fresh identity, to be polled on the current runtime (its
/// connection tasks are spawned there). Connections stay open while idle.
fn swarm() -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp + noise + yamux")
        .with_behaviour(|_| Behaviour {
            stream: libp2p_stream::Behaviour::new(),
            rr: request_response::cbor::Behaviour::new(
                [(RR, ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build()
}

/// Polls `swarm` while `f` runs; `f`'s output.
async fn drive<F: Future>(swarm: &mut Swarm<Behaviour>, f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    loop {
        tokio::select! {
            out = &mut f => return out,
            _ = swarm.select_next_some() => {}
        }
    }
}

/// Polls `swarm` until the connection it dials is established (`what`
/// number `i` names a failure).
async fn established(swarm: &mut Swarm<Behaviour>, what: &str, i: usize) -> ConnectionId {
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { connection_id, .. } => return connection_id,
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("{what} {i}: {error}"),
            _ => {}
        }
    }
}

/// The server end: echoes requests and counts its open connections.
async fn serve(mut swarm: Swarm<Behaviour>, open: Arc<AtomicUsize>) {
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => {
                open.fetch_add(1, Ordering::Relaxed);
            }
            SwarmEvent::ConnectionClosed { .. } => {
                open.fetch_sub(1, Ordering::Relaxed);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let _ = swarm.behaviour_mut().rr.send_response(channel, request);
            }
            _ => {}
        }
    }
}

/// A server swarm on the server end and a client swarm connected to it.
struct Pair {
    server: tokio::task::JoinHandle<()>,
    addr: Multiaddr,
    peer: PeerId,
    /// The server's open connections.
    open: Arc<AtomicUsize>,
    client: Option<Swarm<Behaviour>>,
    bulk: Option<IncomingStreams>,
    echo: Option<IncomingStreams>,
}

impl Pair {
    fn start(sides: &Sides) -> Pair {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let open = Arc::new(AtomicUsize::new(0));
        let count = open.clone();
        let server = sides.spawn_server(async move {
            let mut swarm = swarm();
            let mut control = swarm.behaviour().stream.new_control();
            let bulk = control.accept(BULK).expect("bulk protocol");
            let echo = control.accept(ECHO).expect("echo protocol");
            swarm
                .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
                .expect("listen");
            let addr = loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            };
            let peer = *swarm.local_peer_id();
            let _ = ready_tx.send((addr, peer, bulk, echo));
            serve(swarm, count).await;
        });
        let (addr, peer, bulk, echo) =
            futures::executor::block_on(ready_rx).expect("server swarm ready");
        let dial = addr.clone();
        let client = sides.client(async move {
            let mut client = swarm();
            client.dial(dial).expect("dial");
            while !matches!(
                client.select_next_some().await,
                SwarmEvent::ConnectionEstablished { .. }
            ) {}
            client
        });
        Pair {
            server,
            addr,
            peer,
            open,
            client: Some(client),
            bulk: Some(bulk),
            echo: Some(echo),
        }
    }

    /// Runs `serve` on the next inbound stream of `incoming` on the server
    /// end, and `measure` on a new outbound stream of `protocol` from the
    /// client while its swarm is polled.
    fn one_stream<S, SF, M, MF, T>(
        &mut self,
        sides: &Sides,
        protocol: StreamProtocol,
        serve: S,
        measure: M,
    ) -> T
    where
        S: FnOnce(Conn) -> SF + Send + 'static,
        SF: Future<Output = ()> + Send,
        M: FnOnce(Conn) -> MF + Send + 'static,
        MF: Future<Output = T> + Send,
        T: Send + 'static,
    {
        let mut incoming = self.incoming(&protocol).take().expect("incoming streams");
        let server = sides.spawn_server(async move {
            let (_, s) = incoming.next().await.expect("inbound stream");
            serve(s.compat()).await;
            incoming
        });
        let mut client = self.client.take().expect("client swarm");
        let peer = self.peer;
        let mut control: Control = client.behaviour().stream.new_control();
        let opened = protocol.clone();
        let (client, out) = sides.client(async move {
            let out = drive(&mut client, async move {
                let s = control
                    .open_stream(peer, opened)
                    .await
                    .expect("open stream");
                measure(s.compat()).await
            })
            .await;
            (client, out)
        });
        self.client = Some(client);
        *self.incoming(&protocol) = Some(wait(server));
        out
    }

    /// The server's inbound streams of `protocol` (BULK or ECHO).
    fn incoming(&mut self, protocol: &StreamProtocol) -> &mut Option<IncomingStreams> {
        if *protocol == BULK {
            &mut self.bulk
        } else {
            &mut self.echo
        }
    }

    /// Bulk throughput on one yamux stream, bytes/s.
    fn bulk(&mut self, sides: &Sides, total: u64) -> f64 {
        let serve = move |c: Conn| stream::bulk_serve(c, total);
        let measure = move |c: Conn| stream::bulk_measure(c, total);
        self.one_stream(sides, BULK, serve, measure)
    }

    /// 64 B ping-pong on one yamux stream, each round trip timed.
    fn ping_pong(&mut self, sides: &Sides, rounds: usize) -> Vec<Duration> {
        let measure = move |c: Conn| stream::ping_measure(c, rounds);
        self.one_stream(sides, ECHO, stream::echo_serve, measure)
    }

    /// 64 B request-response round trips, each timed.
    fn request_response(&mut self, sides: &Sides, rounds: usize) -> Vec<Duration> {
        let mut client = self.client.take().expect("client swarm");
        let peer = self.peer;
        let (client, times) = sides.client(async move {
            let request = Bytes::from_static(&[7u8; SMALL]);
            let mut times = Vec::with_capacity(rounds);
            for i in 0..rounds + rounds / 10 {
                let t = Instant::now();
                let id = client
                    .behaviour_mut()
                    .rr
                    .send_request(&peer, request.clone());
                loop {
                    match client.select_next_some().await {
                        SwarmEvent::Behaviour(BehaviourEvent::Rr(
                            request_response::Event::Message {
                                message: request_response::Message::Response { request_id, .. },
                                ..
                            },
                        )) if request_id == id => break,
                        SwarmEvent::Behaviour(BehaviourEvent::Rr(
                            request_response::Event::OutboundFailure { error, .. },
                        )) => panic!("request {i}: {error}"),
                        _ => {}
                    }
                }
                if i >= rounds / 10 {
                    times.push(t.elapsed());
                }
            }
            (client, times)
        });
        self.client = Some(client);
        times
    }

    /// `count` dials, each from a fresh identity, timed until the
    /// connection is established; each is closed and gone from the server
    /// before the next. Each fresh swarm has dialed another server once
    /// before, untimed, as our node's first contacts are made by nodes
    /// that connected once (see `node::Pair::connects`).
    fn dials(&self, sides: &Sides, count: usize) -> Vec<Duration> {
        let (addr, open) = (self.addr.clone(), self.open.clone());
        let (warm_tx, warm_rx) = tokio::sync::oneshot::channel();
        let warm_server = sides.spawn_server(async move {
            let mut swarm = swarm();
            swarm
                .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
                .expect("listen");
            let addr = loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            };
            let _ = warm_tx.send(addr);
            serve(swarm, Arc::new(AtomicUsize::new(0))).await;
        });
        let warm = futures::executor::block_on(warm_rx).expect("warm-up server ready");
        let times = sides.client(async move {
            let mut times = Vec::with_capacity(count);
            for i in 0..count {
                let mut fresh = swarm();
                fresh.dial(warm.clone()).expect("warm-up dial");
                let id = established(&mut fresh, "warm-up dial", i).await;
                fresh.close_connection(id);
                while !matches!(
                    fresh.select_next_some().await,
                    SwarmEvent::ConnectionClosed { .. }
                ) {}
                let t = Instant::now();
                fresh.dial(addr.clone()).expect("dial");
                let id = established(&mut fresh, "dial", i).await;
                times.push(t.elapsed());
                // The server has the connection too, then both ends close
                // it and only the pair's own connection stays.
                let settle = async {
                    while open.load(Ordering::Relaxed) < 2 {
                        tokio::task::yield_now().await;
                    }
                    fresh.close_connection(id);
                    while !matches!(
                        fresh.select_next_some().await,
                        SwarmEvent::ConnectionClosed { .. }
                    ) {}
                    while open.load(Ordering::Relaxed) > 1 {
                        tokio::task::yield_now().await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(20), settle)
                    .await
                    .unwrap_or_else(|_| panic!("dial {i}: the connection did not close"));
            }
            times
        });
        warm_server.abort();
        let _ = futures::executor::block_on(warm_server);
        times
    }

    fn shutdown(mut self, sides: &Sides) {
        self.server.abort();
        let client = self.client.take();
        sides.client(async move { drop(client) });
        let _ = futures::executor::block_on(self.server);
    }
}

/// A libp2p stream as the byte-stream scenarios take it.
type Conn = tokio_util::compat::Compat<libp2p::Stream>;

/// The libp2p rows of one placement, beside raw TCP's `(rtt, connect)`
/// of the same run; bulk alternates with raw TCP bulk in rounds.
pub fn measure(sides: &Sides, sizes: &Sizes, raw: (f64, f64), out: &mut Rows<'_>) {
    let (raw_rtt, raw_connect) = raw;
    watchdog::step("libp2p pair");
    let mut pair = Pair::start(sides);

    const ROUNDS: u64 = 5;
    let per_round = (sizes.bulk / ROUNDS).max(1);
    let (mut raws, mut rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        watchdog::step(format_args!("bulk raw tcp, round {round}"));
        let raw = stream::bulk(sides, Layer::Raw, per_round);
        watchdog::step(format_args!("bulk libp2p yamux stream, round {round}"));
        let rate = pair.bulk(sides, per_round);
        raws.push(raw);
        rates.push(rate);
        ratios.push(rate / raw);
    }
    out.push(
        "bulk",
        "libp2p tcp+noise+yamux stream".into(),
        median(&mut rates),
        "B/s",
        None,
        ("raw tcp", median(&mut raws)),
        None,
        "",
    );
    // The ratio of each round to its own raw TCP run.
    if let Some(row) = out.rows.last_mut() {
        row.ratio = Some(median(&mut ratios));
    }

    watchdog::step("rtt 64B libp2p yamux stream");
    let times = pair.ping_pong(sides, sizes.rounds);
    out.latencies(
        "rtt 64B",
        "libp2p yamux stream ping-pong".into(),
        times,
        ("raw tcp ping-pong", raw_rtt),
        "",
    );
    watchdog::step("rtt 64B libp2p request-response");
    let times = pair.request_response(sides, sizes.rounds);
    out.latencies(
        "rtt 64B",
        "libp2p request-response (cbor)".into(),
        times,
        ("raw tcp ping-pong", raw_rtt),
        "",
    );
    watchdog::step("connect libp2p dial");
    let times = pair.dials(sides, sizes.connects);
    out.latencies(
        "connect",
        "libp2p dial tcp+noise+yamux".into(),
        times,
        ("raw tcp connect", raw_connect),
        "",
    );
    watchdog::step("libp2p pair shutdown");
    pair.shutdown(sides);
}
