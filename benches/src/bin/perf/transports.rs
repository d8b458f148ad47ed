//! The other stream transports beside raw TCP (`--only transports`): Unix
//! domain sockets (raw and under SecureStream) and WebSocket, through their
//! `Transport` implementations, with the scenario code of [`stream`].
//!
//! Loopback speed moves between runs, so each transport alternates with
//! raw TCP in rounds and its ratio is the median of the per-round ratios
//! (bulk: rate / raw TCP rate; rtt: median time / raw TCP median time).

use std::time::Duration;

use knotwork_core::{Keypair, Listener, PeerAddr, Transport};
use knotwork_crypto_handshake::{SecureConfig, SecureStream, Suite};
use knotwork_transport_uds::UdsTransport;
use knotwork_transport_ws::WsTransport;
use tokio::sync::oneshot;
use tokio_util::either::Either;

use crate::Rows;
use crate::sides::{Sides, wait};
use crate::stream::{self, Layer};
use crate::watchdog;

/// A stack measured here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    /// Unix stream socket.
    Uds,
    /// Unix stream socket under SecureStream with this suite.
    SecureUds(Suite),
    /// WebSocket over TCP (binary messages).
    Ws,
}

impl Stack {
    fn label(self) -> String {
        match self {
            Stack::Uds => "raw uds".into(),
            Stack::SecureUds(suite) => format!("uds + {}", Layer::Secure(suite).label()),
            Stack::Ws => "raw ws".into(),
        }
    }
}

const STACKS: [Stack; 3] = [Stack::Uds, Stack::SecureUds(Suite::AesGcm), Stack::Ws];
const ROUNDS: usize = 5;

/// A connection, or the same under SecureStream.
type Secured<C> = Either<C, SecureStream<C>>;

/// Runs `serve` on an accepted connection (server end) and `measure` on a
/// dialed one (client end) of `transport`, listening on `addr`; with a
/// suite, both are upgraded to SecureStream first.
fn one_connection<T, S, SF, M, MF, R>(
    sides: &Sides,
    transport: T,
    addr: PeerAddr,
    suite: Option<Suite>,
    serve: S,
    measure: M,
) -> R
where
    T: Transport + Clone + 'static,
    T::Listener: 'static,
    S: FnOnce(Secured<T::Connection>) -> SF + Send + 'static,
    SF: Future<Output = ()> + Send,
    M: FnOnce(Secured<T::Connection>) -> MF + Send + 'static,
    MF: Future<Output = R> + Send,
    R: Send + 'static,
{
    let keys = suite.map(|suite| {
        let server = SecureConfig::new(Keypair::generate().expect("keypair")).expect("config");
        let client = SecureConfig::new(Keypair::generate().expect("keypair"))
            .expect("config")
            .with_suite(suite);
        (server, client)
    });
    let (server_keys, client_keys) = keys.map_or((None, None), |(s, c)| (Some(s), Some(c)));
    let (bound_tx, bound_rx) = oneshot::channel();
    let server_transport = transport.clone();
    // The listener is made on the server end's runtime, which drives it.
    let server = sides.spawn_server(async move {
        let mut listener = server_transport.listen(&addr).await.expect("listen");
        bound_tx.send(listener.local_addr()).expect("bound");
        let (conn, _) = listener.accept().await.expect("accept");
        let conn = match server_keys {
            None => Either::Left(conn),
            Some(k) => Either::Right(k.upgrade_inbound(conn).await.expect("inbound")),
        };
        serve(conn).await;
    });
    let out = sides.client(async move {
        let addr = bound_rx.await.expect("bound address");
        let conn = transport.dial(&addr).await.expect("dial");
        let conn = match client_keys {
            None => Either::Left(conn),
            Some(k) => Either::Right(k.upgrade_outbound(conn, None).await.expect("outbound")),
        };
        measure(conn).await
    });
    wait(server);
    out
}

/// Where each stack listens: a fresh socket path, or a free loopback port.
struct Places {
    dir: tempfile::TempDir,
    next: usize,
}

impl Places {
    fn addr(&mut self, stack: Stack) -> PeerAddr {
        self.next += 1;
        match stack {
            Stack::Uds | Stack::SecureUds(_) => {
                let path = self.dir.path().join(format!("perf{}.sock", self.next));
                PeerAddr::uds(path.to_str().expect("utf-8 temp path")).expect("uds path")
            }
            Stack::Ws => "ws/127.0.0.1:0/perf".parse().expect("ws address"),
        }
    }
}

/// One bulk transfer of `total` bytes over `stack`, in bytes/s.
fn bulk(sides: &Sides, places: &mut Places, stack: Stack, total: u64) -> f64 {
    fn on<T: Transport + Clone + 'static>(
        sides: &Sides,
        transport: T,
        addr: PeerAddr,
        suite: Option<Suite>,
        total: u64,
    ) -> f64
    where
        T::Listener: 'static,
    {
        let serve = move |c| stream::bulk_serve(c, total);
        let measure = move |c| stream::bulk_measure(c, total);
        one_connection(sides, transport, addr, suite, serve, measure)
    }
    let addr = places.addr(stack);
    match stack {
        Stack::Uds => on(sides, UdsTransport::default(), addr, None, total),
        Stack::SecureUds(suite) => on(sides, UdsTransport::default(), addr, Some(suite), total),
        Stack::Ws => on(sides, WsTransport::default(), addr, None, total),
    }
}

/// `rounds` timed 64 B round trips over `stack`.
fn ping_pong(sides: &Sides, places: &mut Places, stack: Stack, rounds: usize) -> Vec<Duration> {
    fn on<T: Transport + Clone + 'static>(
        sides: &Sides,
        transport: T,
        addr: PeerAddr,
        suite: Option<Suite>,
        rounds: usize,
    ) -> Vec<Duration>
    where
        T::Listener: 'static,
    {
        let measure = move |c| stream::ping_measure(c, rounds);
        one_connection(sides, transport, addr, suite, stream::echo_serve, measure)
    }
    let addr = places.addr(stack);
    match stack {
        Stack::Uds => on(sides, UdsTransport::default(), addr, None, rounds),
        Stack::SecureUds(suite) => on(sides, UdsTransport::default(), addr, Some(suite), rounds),
        Stack::Ws => on(sides, WsTransport::default(), addr, None, rounds),
    }
}

/// Bulk and 64 B rtt rows for every stack, each against raw TCP in the
/// same rounds.
pub fn measure(sides: &Sides, bulk_total: u64, rounds: usize, out: &mut Rows<'_>) {
    let mut places = Places {
        dir: tempfile::tempdir().expect("temp dir for sockets"),
        next: 0,
    };
    let per_round = (bulk_total / ROUNDS as u64).max(1);
    let rtt_rounds = (rounds / ROUNDS).max(10);
    for stack in STACKS {
        let (mut raw_rates, mut rates, mut ratios) = (vec![], vec![], vec![]);
        let (mut raw_rtts, mut rtts, mut rtt_ratios) = (vec![], vec![], vec![]);
        for round in 1..=ROUNDS {
            watchdog::step(format_args!("transports: bulk raw tcp, round {round}"));
            let raw = stream::bulk(sides, Layer::Raw, per_round);
            watchdog::step(format_args!(
                "transports: bulk {}, round {round}",
                stack.label()
            ));
            let rate = bulk(sides, &mut places, stack, per_round);
            raw_rates.push(raw);
            rates.push(rate);
            ratios.push(rate / raw);

            watchdog::step(format_args!("transports: rtt raw tcp, round {round}"));
            let mut raw = stream::ping_pong(sides, Layer::Raw, rtt_rounds);
            watchdog::step(format_args!(
                "transports: rtt {}, round {round}",
                stack.label()
            ));
            let mut ours = ping_pong(sides, &mut places, stack, rtt_rounds);
            let (raw, ours) = (crate::p50(&mut raw), crate::p50(&mut ours));
            raw_rtts.push(raw);
            rtts.push(ours);
            rtt_ratios.push(ours / raw);
        }
        let raw_bulk = crate::median(&mut raw_rates);
        out.push(
            "bulk",
            stack.label(),
            crate::median(&mut rates),
            "B/s",
            None,
            ("raw tcp", raw_bulk),
            None,
            "",
        );
        // The ratio of each round to its own raw TCP run, not of the medians.
        if let Some(row) = out.rows.last_mut() {
            row.ratio = Some(crate::median(&mut ratios));
        }
        let raw_rtt = crate::median(&mut raw_rtts);
        out.push(
            "rtt 64B",
            stack.label(),
            crate::median(&mut rtts),
            "s",
            None,
            ("raw tcp ping-pong", raw_rtt),
            None,
            "",
        );
        if let Some(row) = out.rows.last_mut() {
            row.ratio = Some(crate::median(&mut rtt_ratios));
        }
    }
}
