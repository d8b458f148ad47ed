//! The control endpoint of a running node (feature `cli`): a Unix socket in
//! the node's data directory through which `knot peers`, `knot status` and
//! later commands talk to the node.
//!
//! # Format
//! One connection carries one exchange: the client writes one [`Request`] as
//! a JSON line, the node answers with one [`Response`] as a JSON line and
//! closes. Lines are at most [`MAX_LINE`] bytes. A new command is a new
//! [`Request`] variant, a new [`Response`] variant and one arm in
//! [`NodeControl::answer`]. Readers ignore response fields they do not know,
//! so a node may add fields without breaking older clients.
//!
//! ```text
//! → {"request":"status"}
//! ← {"response":"status","peer_id":"6Mk…","listen":["tcp/127.0.0.1:4000"],…}
//! ```
//!
//! # Access
//! Only the node's owner may talk to it: the data directory is made `0700`
//! and the socket `0600` (see [`ControlServer::bind`]).
//!
//! # Bookkeeping
//! The node itself keeps no start times; [`NodeControl`] follows
//! [`Node::events`] from the moment it is created to know how long each peer
//! has been connected and which peers were banned. A peer connected before
//! that (or during a lag of the event stream) counts from when it was first
//! seen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use knotwork_core::{DiscoverySource, PeerId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::node::{Node, NodeEvent};
use crate::protocol::task::{Placement, Task, TaskId, TaskOutcome, TaskResult};
use crate::registry::SessionKind;

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Longest request or response line, in bytes (newline included).
pub const MAX_LINE: usize = 1 << 20;

/// How long one exchange may take before the other side is cut.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Exchanges served at once at most; more wait for a turn.
const MAX_CLIENTS: usize = 8;

/// The path of the control socket of the node whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// What a client asks the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// The connected peers.
    Peers,
    /// The node's identity, addresses and counters.
    Status,
    /// The health of this node, or of a connected peer (its PeerId, base58).
    Health {
        /// The peer to ask; `None` for this node.
        peer: Option<String>,
    },
    /// Store `value` under `key` in the DHT (signed by this node).
    DhtPut {
        /// The record key (UTF-8 text).
        key: String,
        /// The value (UTF-8 text).
        value: String,
    },
    /// Look up the record under `key` in the DHT.
    DhtGet {
        /// The record key.
        key: String,
    },
    /// Announce this node as a provider of `key`.
    DhtProvide {
        /// The key.
        key: String,
    },
    /// Find the providers of `key`.
    DhtProviders {
        /// The key.
        key: String,
    },
    /// Find a peer by id through the DHT.
    DhtFind {
        /// The peer's id (base58).
        peer: String,
    },
    /// Dial an address (a relay address too) once and report the channel.
    Connect {
        /// The address, text form of a `PeerAddr`.
        addr: String,
    },
    /// Publish `data` on gossip `topic`.
    GossipPublish {
        /// The topic.
        topic: String,
        /// The body (UTF-8 text).
        data: String,
    },
    /// Run a task of `kind` on the least busy task peer and wait for its
    /// result (within one exchange).
    TaskSubmit {
        /// Which handler runs it (`fnv` on `knot run --worker` nodes).
        kind: String,
        /// Its input (UTF-8 text).
        input: String,
    },
    /// The node's metrics in the Prometheus text format (what `knot run
    /// --metrics` serves over HTTP).
    Metrics,
}

/// How a connection was made, reduced to who dialed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The peer dialed us.
    Inbound,
    /// We dialed the peer.
    Outbound,
}

impl From<SessionKind> for Direction {
    fn from(kind: SessionKind) -> Self {
        match kind {
            SessionKind::Inbound => Self::Inbound,
            SessionKind::Outbound | SessionKind::Manual | SessionKind::Seed => Self::Outbound,
        }
    }
}

/// The lowercase name of a session kind (`inbound`, `outbound`, `manual`, `seed`).
pub fn session_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Inbound => "inbound",
        SessionKind::Outbound => "outbound",
        SessionKind::Manual => "manual",
        SessionKind::Seed => "seed",
    }
}

/// One connected peer, as reported by [`Request::Peers`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The peer's id (base58).
    pub peer_id: String,
    /// Its address on this connection.
    pub addr: String,
    /// Who dialed.
    pub direction: Direction,
    /// The session kind (`inbound`, `outbound`, `manual`, `seed`).
    pub session: String,
    /// The last ping round-trip time in microseconds, once measured.
    pub rtt_us: Option<u64>,
    /// How long the channel has been open, in milliseconds.
    pub connected_ms: u64,
    /// Whether the channel runs through a relay.
    pub relayed: bool,
    /// How this node learned of the peer: the discovery sources that
    /// report it (`mdns`, `dht`, …), and `seed` or `manual` for configured
    /// addresses; empty for a peer that only dialed in.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// The node's state, as reported by [`Request::Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node's id (base58).
    pub peer_id: String,
    /// The bound listen addresses.
    pub listen: Vec<String>,
    /// Inbound channels.
    pub inbound: usize,
    /// Outbound channels (outbound, manual and seed sessions).
    pub outbound: usize,
    /// Time since the control endpoint started with the node, in milliseconds.
    pub uptime_ms: u64,
    /// Peers banned now.
    pub banned: usize,
    /// Whether peers can dial the node: `public <addr>`, `private` or
    /// `unknown` (see [`crate::protocol::reachability`]).
    #[serde(default)]
    pub reachability: String,
}

/// A peer found through the DHT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtPeerEntry {
    /// The peer's id (base58).
    pub peer_id: String,
    /// The addresses it is reachable at.
    pub addrs: Vec<String>,
}

/// A DHT record, as reported by [`Request::DhtGet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtRecordEntry {
    /// The value, as UTF-8 text (invalid sequences replaced by U+FFFD).
    pub value: String,
    /// Who signed it (base58).
    pub publisher: String,
    /// When it expires, in milliseconds since the UNIX epoch.
    pub expires_ms: u64,
}

/// The node's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// The answer to [`Request::Peers`].
    Peers {
        /// The peers, by id.
        peers: Vec<PeerEntry>,
    },
    /// The answer to [`Request::Status`].
    Status(StatusReport),
    /// The answer to [`Request::Health`].
    Health(crate::protocol::health::HealthStatus),
    /// The answer to [`Request::DhtPut`] and [`Request::DhtProvide`]: how
    /// many of the closest peers acknowledged.
    DhtStored {
        /// Peers that acknowledged.
        stored: usize,
    },
    /// The answer to [`Request::DhtGet`].
    DhtRecord {
        /// The record; `None` if no peer has a valid one.
        record: Option<DhtRecordEntry>,
    },
    /// The answer to [`Request::DhtProviders`].
    DhtProviders {
        /// The providers found.
        providers: Vec<DhtPeerEntry>,
    },
    /// The answer to [`Request::DhtFind`].
    DhtPeer {
        /// The peer; `None` if the lookup did not reach it.
        peer: Option<DhtPeerEntry>,
    },
    /// The answer to [`Request::Connect`]: the channel now open.
    Connected {
        /// The peer's id (base58).
        peer_id: String,
        /// The channel's remote address.
        addr: String,
        /// Whether the channel runs through a relay.
        relayed: bool,
    },
    /// The answer to [`Request::GossipPublish`].
    GossipPublished {
        /// The message id: the publisher (base58) ...
        origin: String,
        /// ... and its sequence number.
        seq: u64,
        /// Peers it was sent to.
        sent: usize,
        /// When it was published, in microseconds since the UNIX epoch
        /// (receivers print theirs on `knot run --subscribe` lines).
        at_us: u64,
    },
    /// The answer to [`Request::TaskSubmit`].
    TaskResult {
        /// The task's id.
        id: u64,
        /// The worker that answered (base58), if one did.
        worker: Option<String>,
        /// `done`, `failed`, `exhausted`, `no_workers` or `cancelled`.
        outcome: String,
        /// The handler's output (`done`: hex) or error (`failed`).
        output: Option<String>,
        /// How many times it was placed.
        attempts: u32,
        /// From submission to result, in milliseconds.
        ms: u64,
    },
    /// The answer to [`Request::Metrics`].
    Metrics {
        /// The Prometheus text.
        text: String,
    },
    /// The request could not be read; the text says why.
    Error {
        /// What was wrong.
        message: String,
    },
}

/// Errors of the control endpoint, grouped by side: the local socket, the
/// bytes on it, the node's answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    // --- The socket ---------------------------------------------------------
    /// No node answers at the socket (none running with this data directory).
    #[error("no node running: cannot reach {path}: {source}")]
    NotRunning {
        /// The socket path.
        path: String,
        /// Why connecting failed.
        source: std::io::Error,
    },
    /// A node already serves the socket.
    #[error("a node already runs with control socket {0}")]
    InUse(String),
    /// Creating the directory or socket, reading or writing failed.
    #[error("control socket i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The exchange took longer than [`EXCHANGE_TIMEOUT`].
    #[error("control exchange timed out")]
    Timeout,

    // --- The bytes ----------------------------------------------------------
    /// A line longer than [`MAX_LINE`].
    #[error("control line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// The other side closed before sending a whole line.
    #[error("control connection closed before a whole line")]
    Truncated,
    /// A line that is not a valid message.
    #[error("malformed control message: {0}")]
    Malformed(String),

    // --- The answer ---------------------------------------------------------
    /// The node answered with an error.
    #[error("node refused the request: {0}")]
    Refused(String),
}

/// Reads one JSON line of at most [`MAX_LINE`] bytes and decodes it.
async fn read_message<T, R>(reader: R) -> Result<T, ControlError>
where
    T: serde::de::DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
    BufReader::new(reader.take(limit))
        .read_until(b'\n', &mut line)
        .await?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() >= MAX_LINE {
            ControlError::LineTooLong
        } else {
            ControlError::Truncated
        });
    }
    decode(&line)
}

/// Decodes one message from a JSON line (trailing newline optional).
pub fn decode<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(line).map_err(|e| ControlError::Malformed(e.to_string()))
}

/// Encodes one message as a JSON line.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ControlError> {
    let mut line = serde_json::to_vec(msg).map_err(|e| ControlError::Malformed(e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

/// Sends `request` to the node whose data directory is `data_dir` and
/// returns its answer. A [`Response::Error`] comes back as
/// [`ControlError::Refused`].
pub async fn request(data_dir: &Path, request: &Request) -> Result<Response, ControlError> {
    let path = socket_path(data_dir);
    let exchange = async {
        let mut stream =
            UnixStream::connect(&path)
                .await
                .map_err(|source| ControlError::NotRunning {
                    path: path.display().to_string(),
                    source,
                })?;
        stream.write_all(&encode(request)?).await?;
        read_message::<Response, _>(&mut stream).await
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
        Ok(Ok(Response::Error { message })) => Err(ControlError::Refused(message)),
        Ok(other) => other,
        Err(_) => Err(ControlError::Timeout),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Book {
    /// When each connected peer connected (or was first seen).
    since: HashMap<PeerId, Instant>,
    /// Peers banned since the start; whether a ban still holds is the node's call.
    banned: Vec<PeerId>,
}

impl Book {
    fn record(&mut self, event: NodeEvent, now: Instant) {
        match event {
            NodeEvent::Connected { peer, .. } => {
                self.since.insert(peer, now);
            }
            NodeEvent::Disconnected { peer, .. } => {
                self.since.remove(&peer);
            }
            NodeEvent::Banned { peer } => {
                if !self.banned.contains(&peer) {
                    self.banned.push(peer);
                }
            }
            NodeEvent::RelayReserved { .. } | NodeEvent::RelayReleased { .. } => {}
            NodeEvent::UpnpMapped { .. }
            | NodeEvent::UpnpLost { .. }
            | NodeEvent::ReachabilityChanged { .. } => {}
        }
    }
}

/// The answer to every DHT request of a node that runs without the DHT.
pub const NO_DHT: &str = "this node runs without the DHT (knot run --no-dht, [dht] enabled = false, or built without the dht feature)";

/// Task requests waiting for their result, by task id.
type TaskWaiters = Arc<Mutex<HashMap<TaskId, oneshot::Sender<TaskResult>>>>;

/// Answers control requests about one node; see the module docs.
pub struct NodeControl {
    node: Node,
    #[cfg(feature = "dht")]
    dht: Option<crate::protocol::dht::DhtHandle>,
    started: Instant,
    book: Arc<Mutex<Book>>,
    follower: JoinHandle<()>,
    /// Made by the first task request, which takes the node's result
    /// stream ([`crate::protocol::task::Tasks::results`]) and hands each
    /// result to the request waiting for it.
    tasks: OnceLock<(TaskWaiters, JoinHandle<()>)>,
}

impl std::fmt::Debug for NodeControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeControl")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Drop for NodeControl {
    fn drop(&mut self) {
        self.follower.abort();
        if let Some((_, router)) = self.tasks.get() {
            router.abort();
        }
    }
}

impl NodeControl {
    /// Starts following `node`'s events; call it right after the node starts.
    pub fn new(node: Node) -> Self {
        let book = Arc::new(Mutex::new(Book::default()));
        let mut events = node.events();
        let follower = tokio::spawn({
            let book = book.clone();
            async move {
                loop {
                    match events.recv().await {
                        Ok(event) => lock(&book).record(event, Instant::now()),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        Self {
            node,
            #[cfg(feature = "dht")]
            dht: None,
            started: Instant::now(),
            book,
            follower,
            tasks: OnceLock::new(),
        }
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Answers the DHT requests from `dht` (without it they are refused
    /// with [`NO_DHT`]).
    #[cfg(feature = "dht")]
    pub fn with_dht(mut self, dht: crate::protocol::dht::DhtHandle) -> Self {
        self.dht = Some(dht);
        self
    }

    /// The answer to `request` (async, so that requests served by other
    /// parts of the node, such as DHT queries, can wait for them).
    pub async fn answer(&self, request: &Request) -> Response {
        match request {
            Request::Peers => Response::Peers {
                peers: self.peers(),
            },
            Request::Status => Response::Status(self.status()),
            Request::Health { peer: None } => Response::Health(self.node.health().status()),
            Request::Health { peer: Some(peer) } => match peer.parse() {
                Ok(peer) => match self.node.health().query(&peer).await {
                    Ok(status) => Response::Health(status),
                    Err(e) => Response::Error {
                        message: format!("health of {peer}: {e}"),
                    },
                },
                Err(e) => Response::Error {
                    message: format!("bad peer id {peer:?}: {e}"),
                },
            },
            Request::DhtPut { .. }
            | Request::DhtGet { .. }
            | Request::DhtProvide { .. }
            | Request::DhtProviders { .. }
            | Request::DhtFind { .. } => self.dht(request).await,
            Request::Connect { addr } => self.connect(addr).await,
            Request::GossipPublish { topic, data } => {
                let at_us = unix_micros();
                match self.node.gossip().publish(topic, data.clone().into()).await {
                    Ok((id, sent)) => Response::GossipPublished {
                        origin: id.origin.to_string(),
                        seq: id.seq,
                        sent,
                        at_us,
                    },
                    Err(e) => Response::Error {
                        message: format!("gossip: {e}"),
                    },
                }
            }
            Request::TaskSubmit { kind, input } => self.task(kind, input).await,
            Request::Metrics => Response::Metrics {
                text: self.node.metrics().encode(),
            },
        }
    }

    /// Submits a task and waits for its result, answering before the
    /// client's exchange timeout (a task still pending then is cancelled).
    async fn task(&self, kind: &str, input: &str) -> Response {
        let limit = EXCHANGE_TIMEOUT.saturating_sub(Duration::from_millis(500));
        let waiters = self.task_waiters();
        // Half the time for one attempt leaves room for a second.
        let task = Task::new(kind, input.into()).with_timeout(limit / 2);
        let id = task.id;
        let (tx, rx) = oneshot::channel();
        lock(&waiters).insert(id, tx);
        let submitted = Instant::now();
        if let Err(e) = self.node.tasks().submit(task, Placement::BestByResources) {
            lock(&waiters).remove(&id);
            return Response::Error {
                message: format!("task: {e}"),
            };
        }
        let Ok(Ok(result)) = tokio::time::timeout(limit, rx).await else {
            lock(&waiters).remove(&id);
            self.node.tasks().cancel(id);
            return Response::Error {
                message: format!("task took longer than {} ms", millis(limit)),
            };
        };
        let (outcome, output) = match result.outcome {
            TaskOutcome::Done(out) => (
                "done",
                Some(out.iter().map(|b| format!("{b:02x}")).collect()),
            ),
            TaskOutcome::Failed(error) => ("failed", Some(error)),
            TaskOutcome::Exhausted => ("exhausted", None),
            TaskOutcome::NoWorkers => ("no_workers", None),
            TaskOutcome::Cancelled => ("cancelled", None),
        };
        Response::TaskResult {
            id: id.0,
            worker: result.worker.map(|w| w.to_string()),
            outcome: outcome.to_owned(),
            output,
            attempts: result.attempts,
            ms: millis(submitted.elapsed()),
        }
    }

    fn task_waiters(&self) -> TaskWaiters {
        let (waiters, _) = self.tasks.get_or_init(|| {
            let waiters = TaskWaiters::default();
            let mut results = self.node.tasks().results();
            let routed = waiters.clone();
            let router = tokio::spawn(async move {
                while let Some(result) = results.recv().await {
                    if let Some(tx) = lock(&routed).remove(&result.id) {
                        let _ = tx.send(result);
                    }
                }
            });
            (waiters, router)
        });
        waiters.clone()
    }

    /// Dials `addr`, answering before the client's exchange timeout.
    async fn connect(&self, addr: &str) -> Response {
        let addr: knotwork_core::PeerAddr = match addr.parse() {
            Ok(addr) => addr,
            Err(e) => {
                return Response::Error {
                    message: format!("bad address {addr:?}: {e}"),
                };
            }
        };
        let limit = EXCHANGE_TIMEOUT.saturating_sub(Duration::from_millis(500));
        match tokio::time::timeout(limit, self.node.connect(&addr)).await {
            Ok(Ok(channel)) => Response::Connected {
                peer_id: channel.remote_peer_id().to_string(),
                addr: channel.remote_addr().to_string(),
                relayed: channel.remote_addr().is_relayed(),
            },
            Ok(Err(e)) => Response::Error {
                message: format!("connect {addr}: {e}"),
            },
            Err(_) => Response::Error {
                message: format!("connect {addr}: timed out after {} ms", millis(limit)),
            },
        }
    }

    #[cfg(not(feature = "dht"))]
    async fn dht(&self, _request: &Request) -> Response {
        Response::Error {
            message: NO_DHT.to_owned(),
        }
    }

    /// Answers a DHT request; a query that outlasts the exchange is an error.
    #[cfg(feature = "dht")]
    async fn dht(&self, request: &Request) -> Response {
        let Some(dht) = &self.dht else {
            return Response::Error {
                message: NO_DHT.to_owned(),
            };
        };
        let limit = EXCHANGE_TIMEOUT.saturating_sub(Duration::from_millis(500));
        match tokio::time::timeout(limit, dht_answer(dht, request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(message)) => Response::Error { message },
            Err(_) => Response::Error {
                message: format!("dht query took longer than {} ms", millis(limit)),
            },
        }
    }

    fn peers(&self) -> Vec<PeerEntry> {
        let now = Instant::now();
        let peers = self.node.peers();
        let discovered: HashMap<PeerId, Vec<DiscoverySource>> = self
            .node
            .discovered_peers()
            .into_iter()
            .map(|d| (d.peer, d.sources))
            .collect();
        let mut book = lock(&self.book);
        peers
            .into_iter()
            .map(|p| {
                let since = *book.since.entry(p.peer_id).or_insert(now);
                let mut sources: Vec<String> = discovered
                    .get(&p.peer_id)
                    .into_iter()
                    .flatten()
                    .map(ToString::to_string)
                    .collect();
                let configured = match p.session {
                    SessionKind::Seed => Some(DiscoverySource::Seed),
                    SessionKind::Manual => Some(DiscoverySource::Manual),
                    _ => None,
                };
                sources.extend(configured.map(|s| s.to_string()));
                PeerEntry {
                    peer_id: p.peer_id.to_string(),
                    addr: p.addr.to_string(),
                    direction: p.session.into(),
                    session: session_name(p.session).to_owned(),
                    rtt_us: p
                        .rtt
                        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                    connected_ms: millis(now.saturating_duration_since(since)),
                    relayed: p.addr.is_relayed(),
                    sources,
                }
            })
            .collect()
    }

    fn status(&self) -> StatusReport {
        let peers = self.node.peers();
        let inbound = peers
            .iter()
            .filter(|p| p.session == SessionKind::Inbound)
            .count();
        let mut book = lock(&self.book);
        book.banned.retain(|p| self.node.is_banned(p));
        StatusReport {
            peer_id: self.node.peer_id().to_string(),
            listen: self
                .node
                .listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect(),
            inbound,
            outbound: peers.len() - inbound,
            uptime_ms: millis(self.started.elapsed()),
            banned: book.banned.len(),
            reachability: self.node.reachability().to_string(),
        }
    }
}

#[cfg(feature = "dht")]
fn dht_peer(p: crate::protocol::dht::PeerInfo) -> DhtPeerEntry {
    DhtPeerEntry {
        peer_id: p.peer_id.to_string(),
        addrs: p.addrs.iter().map(ToString::to_string).collect(),
    }
}

/// Runs one DHT request on `dht`; `Err` is the error response's text.
#[cfg(feature = "dht")]
async fn dht_answer(
    dht: &crate::protocol::dht::DhtHandle,
    request: &Request,
) -> Result<Response, String> {
    let failed = |e: crate::error::NodeError| format!("dht: {e}");
    Ok(match request {
        Request::DhtPut { key, value } => Response::DhtStored {
            stored: dht
                .put(key.as_bytes().to_vec(), value.as_bytes().to_vec())
                .await
                .map_err(failed)?,
        },
        Request::DhtProvide { key } => Response::DhtStored {
            stored: dht.provide(key.as_bytes().to_vec()).await.map_err(failed)?,
        },
        Request::DhtGet { key } => Response::DhtRecord {
            record: dht
                .get(key.as_bytes().to_vec())
                .await
                .map_err(failed)?
                .map(|r| DhtRecordEntry {
                    value: String::from_utf8_lossy(&r.value).into_owned(),
                    publisher: r.publisher.to_string(),
                    expires_ms: r.expires.as_millis(),
                }),
        },
        Request::DhtProviders { key } => Response::DhtProviders {
            providers: dht
                .providers(key.as_bytes().to_vec())
                .await
                .map_err(failed)?
                .into_iter()
                .map(dht_peer)
                .collect(),
        },
        Request::DhtFind { peer } => {
            let id: PeerId = peer
                .parse()
                .map_err(|e| format!("bad peer id {peer:?}: {e}"))?;
            Response::DhtPeer {
                peer: dht.find_peer(id).await.map_err(failed)?.map(dht_peer),
            }
        }
        _ => return Err("not a dht request".to_owned()),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds since the UNIX epoch now (0 if the clock is before it): the
/// time stamps of gossip messages published and received, comparable
/// between the processes of one machine.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The serving control socket; removes the socket file when dropped.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates `dir` (and its parents) if missing and makes it owner-only (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl ControlServer {
    /// Serves `control` on `<data_dir>/control.sock`. Creates the data
    /// directory if needed and makes it `0700`, the socket `0600`. A stale
    /// socket file (left by a node that died) is replaced; a live one is
    /// [`ControlError::InUse`].
    pub async fn bind(data_dir: &Path, control: NodeControl) -> Result<Self, ControlError> {
        create_private_dir(data_dir)?;
        let path = socket_path(data_dir);
        if path.exists() {
            if UnixStream::connect(&path).await.is_ok() {
                return Err(ControlError::InUse(path.display().to_string()));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let task = tokio::spawn(serve(listener, Arc::new(control)));
        Ok(Self { path, task })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

async fn serve(listener: UnixListener, control: Arc<NodeControl>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                continue;
            }
        };
        let control = control.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, &control)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "control exchange failed"),
                Err(_) => tracing::debug!("control exchange timed out"),
            }
        });
    }
}

async fn exchange(mut stream: UnixStream, control: &NodeControl) -> Result<(), ControlError> {
    let response = match read_message::<Request, _>(&mut stream).await {
        Ok(request) => control.answer(&request).await,
        Err(e @ (ControlError::Io(_) | ControlError::Truncated)) => return Err(e),
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    };
    stream.write_all(&encode(&response)?).await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        assert_eq!(
            encode(&Request::Peers).unwrap(),
            b"{\"request\":\"peers\"}\n"
        );
        assert_eq!(
            decode::<Request>(b"{\"request\":\"status\"}\n").unwrap(),
            Request::Status
        );
        assert_eq!(
            decode::<Request>(b"{\"request\":\"connect\",\"addr\":\"mem/1\"}\n").unwrap(),
            Request::Connect {
                addr: "mem/1".into()
            }
        );
    }

    #[test]
    fn dht_requests_and_answers_are_tagged_json_lines() {
        let put = Request::DhtPut {
            key: "k".into(),
            value: "v".into(),
        };
        assert_eq!(
            encode(&put).unwrap(),
            b"{\"request\":\"dht_put\",\"key\":\"k\",\"value\":\"v\"}\n"
        );
        assert_eq!(
            decode::<Request>(b"{\"request\":\"dht_find\",\"peer\":\"x\"}").unwrap(),
            Request::DhtFind { peer: "x".into() }
        );
        let found = Response::DhtPeer {
            peer: Some(DhtPeerEntry {
                peer_id: "p".into(),
                addrs: vec!["tcp/127.0.0.1:1".into()],
            }),
        };
        assert_eq!(decode::<Response>(&encode(&found).unwrap()).unwrap(), found);
        assert_eq!(
            encode(&Response::DhtRecord { record: None }).unwrap(),
            b"{\"response\":\"dht_record\",\"record\":null}\n"
        );
    }

    #[test]
    fn gossip_task_and_metrics_requests_are_tagged_json_lines() {
        let publish = Request::GossipPublish {
            topic: "news".into(),
            data: "hi".into(),
        };
        assert_eq!(
            encode(&publish).unwrap(),
            b"{\"request\":\"gossip_publish\",\"topic\":\"news\",\"data\":\"hi\"}\n"
        );
        assert_eq!(
            decode::<Request>(b"{\"request\":\"task_submit\",\"kind\":\"fnv\",\"input\":\"x\"}")
                .unwrap(),
            Request::TaskSubmit {
                kind: "fnv".into(),
                input: "x".into()
            }
        );
        assert_eq!(
            decode::<Request>(b"{\"request\":\"metrics\"}").unwrap(),
            Request::Metrics
        );
    }

    #[test]
    fn a_peer_entry_without_sources_reads_as_none() {
        let line = br#"{"peer_id":"x","addr":"tcp/1.2.3.4:5","direction":"inbound","session":"inbound","rtt_us":null,"connected_ms":7,"relayed":false}"#;
        let entry: PeerEntry = decode(line).unwrap();
        assert!(entry.sources.is_empty());
    }

    #[test]
    fn unknown_requests_and_fields_are_malformed() {
        for bad in [
            &b"{\"request\":\"reboot\"}"[..],
            b"{}",
            b"peers",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(decode::<Request>(bad), Err(ControlError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn long_and_truncated_lines_are_named() {
        let long = vec![b' '; MAX_LINE + 10];
        assert!(matches!(
            read_message::<Request, _>(&long[..]).await,
            Err(ControlError::LineTooLong)
        ));
        assert!(matches!(
            read_message::<Request, _>(&b"{\"request\":"[..]).await,
            Err(ControlError::Truncated)
        ));
    }

    fn entry() -> impl Strategy<Value = PeerEntry> {
        (
            "[1-9A-Za-z]{1,44}",
            "tcp/[0-9.:]{1,21}",
            any::<bool>(),
            prop::option::of(any::<u64>()),
            any::<u64>(),
            prop::collection::vec("mdns|dht|seed|manual", 0..3),
        )
            .prop_map(|(peer_id, addr, inbound, rtt_us, connected_ms, sources)| {
                PeerEntry {
                    peer_id,
                    direction: if inbound {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    },
                    session: if inbound { "inbound" } else { "seed" }.to_owned(),
                    rtt_us,
                    connected_ms,
                    relayed: addr_is_relay(&addr),
                    sources,
                    addr,
                }
            })
    }

    fn addr_is_relay(addr: &str) -> bool {
        addr.starts_with("relay/")
    }

    fn response() -> impl Strategy<Value = Response> {
        prop_oneof![
            prop::collection::vec(entry(), 0..4).prop_map(|peers| Response::Peers { peers }),
            (
                "[1-9A-Za-z]{1,44}",
                prop::collection::vec("tcp/[0-9.:]{1,21}", 0..3),
                any::<usize>(),
                any::<usize>(),
                any::<u64>(),
                any::<usize>(),
                "(unknown|private|public tcp/[0-9.:]{1,21})"
            )
                .prop_map(
                    |(peer_id, listen, inbound, outbound, uptime_ms, banned, reachability)| {
                        Response::Status(StatusReport {
                            peer_id,
                            listen,
                            inbound,
                            outbound,
                            uptime_ms,
                            banned,
                            reachability,
                        })
                    },
                ),
            ".*".prop_map(|message| Response::Error { message }),
            (
                "[1-9A-Za-z]{1,44}",
                "relay/mem/[0-9]{1,3}/[1-9A-Za-z]{44}/[1-9A-Za-z]{44}",
                any::<bool>()
            )
                .prop_map(|(peer_id, addr, relayed)| Response::Connected {
                    peer_id,
                    addr,
                    relayed
                }),
            (
                "[1-9A-Za-z]{1,44}",
                any::<u64>(),
                any::<usize>(),
                any::<u64>()
            )
                .prop_map(|(origin, seq, sent, at_us)| Response::GossipPublished {
                    origin,
                    seq,
                    sent,
                    at_us
                }),
            (
                any::<u64>(),
                prop::option::of("[1-9A-Za-z]{1,44}"),
                "done|failed|exhausted|no_workers|cancelled",
                prop::option::of(".*"),
                any::<u32>(),
                any::<u64>()
            )
                .prop_map(|(id, worker, outcome, output, attempts, ms)| {
                    Response::TaskResult {
                        id,
                        worker,
                        outcome,
                        output,
                        attempts,
                        ms,
                    }
                }),
            ".*".prop_map(|text| Response::Metrics { text }),
        ]
    }

    proptest! {
        #[test]
        fn responses_round_trip(resp in response()) {
            let line = encode(&resp).unwrap();
            prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
            prop_assert_eq!(decode::<Response>(&line).unwrap(), resp);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }
}
