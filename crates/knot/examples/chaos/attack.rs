//! The attacker role: what every attack shares (source addresses, hand-made
//! sessions, a node per identity, the tally) and the attacks on the node's
//! own defences. The attacks on the findings of the security review are in
//! `findings.rs`.
//!
//! Kinds here: `conn-flood` (handshakes from one address, held open, past
//! the limits), `slowloris` (1,000 TCP connections from 16 source addresses
//! in 16 /24s, held open: half send nothing, half a handshake byte a
//! second; each one the target closes is opened again a second later),
//! `oversized` (gossip frames past their `MAX_BYTES`), `garbage` (random
//! bytes after a valid handshake and version exchange), `unknown` (a message
//! id the target does not know), `dht-flood` (FIND_NODE requests as fast as
//! the channel takes them), `gossip-flood` (gossip messages from one origin
//! as fast as possible). The attacks that need a channel use a fresh
//! identity per connection, since the target bans each one, and the next
//! source address, since it bans the address too.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use knotwork_core::{Keypair, PeerAddr, PeerId};
use knotwork_crypto_handshake::{SecureConfig, SecureStream};
use knotwork_dht_node::DhtMessage;
use knotwork_gossip::GossipMessage;
use knotwork_node::version::{Hello, secure_outbound};
use knotwork_node::{Node, NodeBuilder, NodeError, Version};
use knotwork_transport_tcp::{TcpConfig, TcpTransport};
use knotwork_wire::{Frame, FrameCodec, Message};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;

use crate::{App, Args, Res, emit, findings, node_config};

/// What one attack did, for its `attack` line.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) attempts: u64,
    /// Connections or channels the target ended (closed, refused, banned).
    pub(crate) cut: u64,
    /// Why, as the attacker saw it.
    pub(crate) reasons: HashMap<String, u64>,
    /// Messages or bytes sent.
    pub(crate) sent: u64,
    /// Figures of one kind of attack.
    pub(crate) extra: serde_json::Map<String, Value>,
}

impl Tally {
    pub(crate) fn cut(&mut self, reason: impl Into<String>) {
        self.cut += 1;
        *self.reasons.entry(reason.into()).or_default() += 1;
    }

    pub(crate) fn extra(&mut self, key: &str, value: impl Into<Value>) {
        self.extra.insert(key.to_owned(), value.into());
    }

    /// Adds the counts of a tally kept by a task of the attack.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.attempts += other.attempts;
        self.cut += other.cut;
        self.sent += other.sent;
        for (reason, n) in other.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
    }
}

/// The source addresses of an attack: `count` addresses spread evenly over
/// an IPv4 network (`--sources 10.210.3.0/24 --source-count 32`: .1, .9,
/// .17, …; a /20 with 16: one in each /24), handed out in turn.
#[derive(Clone)]
pub(crate) struct Sources {
    base: u32,
    step: u32,
    count: u32,
    next: Arc<AtomicU64>,
}

impl Sources {
    fn parse(cidr: &str, count: u32) -> Res<Self> {
        let (net, len) = cidr.split_once('/').ok_or("--sources needs A.B.C.D/LEN")?;
        let net: Ipv4Addr = net.parse()?;
        let len: u32 = len.parse()?;
        if !(8..=30).contains(&len) {
            return Err("--sources: prefix length 8..=30".into());
        }
        let size = 1u32 << (32 - len);
        let count = count.clamp(1, size - 2);
        Ok(Self {
            base: u32::from(net) & !(size - 1),
            step: size / count,
            count,
            next: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Source `i` (modulo the count).
    pub(crate) fn nth(&self, i: u64) -> IpAddr {
        let i = u32::try_from(i % u64::from(self.count)).unwrap_or(0);
        IpAddr::V4(Ipv4Addr::from(self.base + i * self.step + 1))
    }

    /// The next source in turn.
    pub(crate) fn next(&self) -> IpAddr {
        self.nth(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// A TCP connection to `target` from `source` (any address if `None`).
pub(crate) async fn tcp_from(
    source: Option<IpAddr>,
    target: SocketAddr,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(target).await
}

/// A version message that announces no protocol and no listen address.
pub(crate) fn plain_version(target: SocketAddr) -> Version {
    Version::new(&[], &[], &PeerAddr::Tcp(target))
}

/// A framed, authenticated session made by hand.
pub(crate) type Session = Framed<SecureStream<TcpStream>, FrameCodec>;

/// Noise handshake with the version exchange in it, by hand, as a node would, with a
/// fresh identity from `source`, sending `version`; returns the framed
/// stream or why the target refused.
pub(crate) async fn raw_session(
    target: SocketAddr,
    source: Option<IpAddr>,
    version: Version,
) -> Result<Session, String> {
    let keypair = Keypair::generate().map_err(|e| e.to_string())?;
    raw_session_as(target, source, version, &keypair).await
}

/// [`raw_session`] with identity `keypair`.
pub(crate) async fn raw_session_as(
    target: SocketAddr,
    source: Option<IpAddr>,
    version: Version,
    keypair: &Keypair,
) -> Result<Session, String> {
    let tcp = tcp_from(source, target)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let config = SecureConfig::new(keypair.clone()).map_err(|e| format!("config: {e}"))?;
    match secure_outbound(&config, tcp, None, &Hello::Version(version)).await {
        Ok((secure, _)) => Ok(Framed::new(secure, FrameCodec::new())),
        Err(NodeError::Refused(reason)) => Err(format!("refused: {reason}")),
        Err(NodeError::Handshake(e)) => Err(format!("handshake: {e}")),
        Err(e) => Err(format!("version: {e}")),
    }
}

/// A frame carrying `msg` as a plain message.
pub(crate) fn frame<M: Message>(msg: &M) -> Frame {
    Frame::message(M::ID, knotwork_wire::encode(msg).unwrap_or_default())
}

/// A node without listeners, with the apps and gossip if `apps`, dialing
/// from `source` (the kernel's choice if `None`).
pub(crate) async fn plain_node(apps: bool, source: Option<IpAddr>) -> Res<App> {
    node_with(apps, source, |b| b).await
}

/// [`plain_node`] with more on its builder (`more`).
pub(crate) async fn node_with(
    apps: bool,
    source: Option<IpAddr>,
    more: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> Res<App> {
    let (config, app_config) = node_config();
    let keypair = Keypair::generate()?;
    let mut builder = Node::builder(keypair.clone()).config(config);
    if let Some(ip) = source {
        builder = builder.transport(TcpTransport::new(TcpConfig::default().with_local_ip(ip)));
    }
    let gossip = apps.then(knotwork_gossip::GossipConfig::default);
    App::start(more(builder), &keypair, app_config, gossip).await
}

/// One channel per fresh identity, each from the next source address;
/// `flood` sends on it until the target closes it or the time is up.
async fn per_identity<F, Fut>(
    target: &PeerAddr,
    apps: bool,
    sources: &Sources,
    until: Instant,
    tally: &mut Tally,
    flood: F,
) where
    F: Fn(App, knotwork_node::Channel) -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    while Instant::now() < until {
        tally.attempts += 1;
        let node = match plain_node(apps, Some(sources.next())).await {
            Ok(n) => n,
            Err(e) => {
                tally.cut(format!("node: {e}"));
                continue;
            }
        };
        match node.connect(target).await {
            Ok(channel) => {
                tally.sent += flood(node.clone(), channel.clone()).await;
                let closed = tokio::time::timeout(Duration::from_secs(3), channel.closed()).await;
                if let Ok(reason) = closed {
                    tally.cut(reason.to_string());
                }
            }
            Err(e) => {
                tally.cut(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        node.shutdown().await;
    }
}

/// Sends `make()` messages on `channel` until it closes or `until`.
pub(crate) async fn send_until<M: Message>(
    channel: &knotwork_node::Channel,
    until: Instant,
    mut make: impl FnMut() -> M,
) -> u64 {
    let mut sent = 0;
    while Instant::now() < until && !channel.is_closed() {
        if channel.send(&make()).await.is_err() {
            break;
        }
        sent += 1;
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    sent
}

/// Holds authenticated sessions open from one source, several at a time,
/// until the time is up.
async fn conn_flood(target: SocketAddr, source: IpAddr, until: Instant, tally: &mut Tally) {
    let mut held = Vec::new();
    while Instant::now() < until {
        let mut batch = Vec::new();
        for _ in 0..16 {
            batch.push(tokio::spawn(raw_session(
                target,
                Some(source),
                plain_version(target),
            )));
        }
        for job in batch {
            tally.attempts += 1;
            match job.await {
                Ok(Ok(framed)) => held.push(framed),
                Ok(Err(reason)) => tally.cut(reason),
                Err(e) => tally.cut(format!("join: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tally.sent = held.len() as u64;
}

/// Connections held by the slowloris at once.
const SLOWLORIS_CONNECTIONS: u64 = 1000;

/// [`SLOWLORIS_CONNECTIONS`] TCP connections spread over the sources, each
/// kept open until `until`: reopened a second after the target closes it.
/// Even ones send nothing, odd ones a handshake byte a second. Reports the
/// most held open at once.
async fn slowloris(target: SocketAddr, sources: &Sources, until: Instant, tally: &mut Tally) {
    let open = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let mut jobs = tokio::task::JoinSet::new();
    for i in 0..SLOWLORIS_CONNECTIONS {
        let source = sources.nth(i);
        let (open, most) = (open.clone(), most.clone());
        // Opened over the first second, not all in one instant.
        let start = Duration::from_millis(i % 1000);
        jobs.spawn(async move {
            let mut tally = Tally::default();
            tokio::time::sleep(start).await;
            while Instant::now() < until {
                tally.attempts += 1;
                let Ok(Ok(mut tcp)) =
                    tokio::time::timeout(Duration::from_secs(2), tcp_from(Some(source), target))
                        .await
                else {
                    tally.cut("connect failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
                most.fetch_max(now_open, Ordering::Relaxed);
                let opened = Instant::now();
                let mut buf = [0u8; 64];
                let mut ended = None;
                while Instant::now() < until {
                    if i % 2 == 1 && tcp.write_all(&[0]).await.is_err() {
                        ended = Some("write failed");
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            ended = Some("closed");
                            break;
                        }
                        _ => {}
                    }
                }
                open.fetch_sub(1, Ordering::Relaxed);
                if let Some(how) = ended {
                    let silent = if i % 2 == 0 { "silent" } else { "dribbling" };
                    let secs = opened.elapsed().as_secs();
                    tally.cut(format!("{silent} {how} after {secs} s"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tally
        });
    }
    while let Some(result) = jobs.join_next().await {
        if let Ok(t) = result {
            tally.merge(t);
        }
    }
    tally.extra("held_max", most.load(Ordering::Relaxed));
}

/// A session by hand from the next source, then random bytes through the
/// encrypted stream.
async fn garbage(target: SocketAddr, sources: &Sources, until: Instant, tally: &mut Tally) {
    while Instant::now() < until {
        tally.attempts += 1;
        let framed = match raw_session(target, Some(sources.next()), plain_version(target)).await {
            Ok(f) => f,
            Err(reason) => {
                tally.cut(reason);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut secure = framed.into_inner();
        let junk: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        let wrote = secure.write_all(&junk).await.and(secure.flush().await);
        tally.sent += junk.len() as u64;
        let mut buf = [0u8; 1024];
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match secure.read(&mut buf).await {
                    Ok(0) => return "closed".to_owned(),
                    Err(e) => return format!("closed: {}", e.kind()),
                    Ok(_) => {}
                }
            }
        })
        .await;
        match (wrote, end) {
            (_, Ok(reason)) => tally.cut(reason),
            (Err(e), Err(_)) => tally.cut(format!("write failed: {}", e.kind())),
            (Ok(()), Err(_)) => {}
        }
    }
}

/// A message id no knotwork node subscribes to.
#[derive(Serialize, Deserialize)]
struct Unknown(Vec<u8>);
impl Message for Unknown {
    const NAME: &'static str = "chaos/unknown/1";
    const MAX_BYTES: usize = 300; // length varint + up to 256 bytes
}

/// Gossip's message id with a payload far past `GossipMessage::MAX_BYTES`.
#[derive(Serialize, Deserialize)]
struct Oversized(Vec<u8>);
impl Message for Oversized {
    const NAME: &'static str = GossipMessage::NAME;
    const MAX_BYTES: usize = 1 << 20; // anything: the sender does not limit itself
}

/// What an attack needs from the command line.
pub(crate) struct Plan {
    pub(crate) target: PeerAddr,
    pub(crate) sock: SocketAddr,
    pub(crate) until: Instant,
    pub(crate) sources: Sources,
    pub(crate) args: Args,
}

pub(crate) async fn attacker(args: &Args) -> Res<()> {
    let target: PeerAddr = args.one("target")?.parse()?;
    let PeerAddr::Tcp(sock) = target.clone() else {
        return Err("--target must be a tcp address".into());
    };
    let kind = args.one("attack")?;
    let count = u32::try_from(args.num("source-count", 32)?)?;
    let plan = Plan {
        target: target.clone(),
        sock,
        until: Instant::now() + Duration::from_secs(args.num("secs", 10)?),
        sources: Sources::parse(&args.one("sources")?, count)?,
        args: Args(args.0.clone()),
    };
    let (until, sources) = (plan.until, &plan.sources);
    let mut tally = Tally::default();
    match kind.as_str() {
        "conn-flood" => conn_flood(sock, sources.nth(0), until, &mut tally).await,
        "slowloris" => slowloris(sock, sources, until, &mut tally).await,
        "garbage" => garbage(sock, sources, until, &mut tally).await,
        "unknown" => {
            per_identity(
                &target,
                false,
                sources,
                until,
                &mut tally,
                |_, ch| async move { send_until(&ch, until, || Unknown(vec![7; 256])).await },
            )
            .await
        }
        "oversized" => per_identity(
            &target,
            false,
            sources,
            until,
            &mut tally,
            |_, ch| async move { send_until(&ch, until, || Oversized(vec![7; 64 * 1024])).await },
        )
        .await,
        "dht-flood" => {
            per_identity(
                &target,
                false,
                sources,
                until,
                &mut tally,
                |_, ch| async move {
                    // Answers are read and dropped, so the attacker's own node
                    // does not count them as unknown messages.
                    let mut answers = ch.subscribe::<DhtMessage>();
                    tokio::spawn(async move { while answers.recv().await.is_some() {} });
                    let mut id = 0u64;
                    send_until(&ch, until, || {
                        id += 1;
                        let mut target = [0u8; 32];
                        fastrand::fill(&mut target);
                        DhtMessage::Request {
                            id,
                            client: true,
                            body: knotwork_dht_node::Request::FindNode { target },
                        }
                    })
                    .await
                },
            )
            .await
        }
        "gossip-flood" => {
            per_identity(
                &target,
                true,
                sources,
                until,
                &mut tally,
                |node, ch| async move {
                    let peer: PeerId = ch.remote_peer_id();
                    while !node.gossip().peers().contains(&peer) && !ch.is_closed() {
                        if Instant::now() >= until {
                            return 0;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let mut sent = 0;
                    while Instant::now() < until && !ch.is_closed() {
                        if node.gossip().publish("flood", vec![1; 64]).await.is_err() {
                            break;
                        }
                        sent += 1;
                        if sent % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    sent
                },
            )
            .await
        }
        other => findings::attack(other, &plan, &mut tally).await?,
    }
    emit(json!({
        "event": "attack",
        "kind": kind,
        "attempts": tally.attempts,
        "cut": tally.cut,
        "sent": tally.sent,
        "reasons": tally.reasons,
        "extra": tally.extra,
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_over_the_network() {
        let s = Sources::parse("10.210.3.0/24", 32).unwrap();
        assert_eq!(s.nth(0), "10.210.3.1".parse::<IpAddr>().unwrap());
        assert_eq!(s.nth(1), "10.210.3.9".parse::<IpAddr>().unwrap());
        assert_eq!(s.nth(32), s.nth(0));
        let s = Sources::parse("10.211.16.0/20", 16).unwrap();
        assert_eq!(s.nth(15), "10.211.31.1".parse::<IpAddr>().unwrap());
    }
}
