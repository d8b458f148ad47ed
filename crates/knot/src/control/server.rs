//! The node side of the control socket: [`NodeControl`] answers requests
//! about one node, [`ControlServer`] serves it on the socket.

use crate::error::KnotError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use knotwork_core::{DiscoverySource, PeerId, lock};
use knotwork_dht_node::DhtHandle;
use knotwork_gossip::Gossip;
use knotwork_nat::Nat;
use knotwork_node::{Node, NodeEvent, SessionKind};
use knotwork_tasks::TasksService;
use knotwork_tasks::task::{Placement, Task, TaskId, TaskOutcome, TaskResult};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, oneshot};
use tokio::task::JoinHandle;

use super::{
    DhtPeerEntry, DhtRecordEntry, EXCHANGE_TIMEOUT, MAX_CLIENTS, PeerEntry, Request, Response,
    StatusReport, encode, read_message, session_name, socket_path,
};

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
            NodeEvent::Banned { peer } if !self.banned.contains(&peer) => {
                self.banned.push(peer);
            }
            _ => {}
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
    apps: TasksService,
    gossip: Gossip,
    nat: Nat,
    dht: Option<DhtHandle>,
    started: Instant,
    book: Arc<Mutex<Book>>,
    follower: JoinHandle<()>,
    /// Made by the first task request, which takes the node's result
    /// stream ([`knotwork_tasks::Tasks::results`]) and hands each
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
    /// Starts following `node`'s events; call it right after the node
    /// starts. `apps`, `gossip` and `nat` are the node's services.
    pub fn new(node: Node, apps: TasksService, gossip: Gossip, nat: Nat) -> Self {
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
            apps,
            gossip,
            nat,
            dht: None,
            started: Instant::now(),
            book,
            follower,
            tasks: OnceLock::new(),
        }
    }

    /// Answers the DHT requests from `dht` (without it they are refused
    /// with [`NO_DHT`]).
    pub fn with_dht(mut self, dht: DhtHandle) -> Self {
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
            Request::Health { peer: None } => Response::Health(self.apps.health().status()),
            Request::Health { peer: Some(peer) } => match peer.parse() {
                Ok(peer) => match self.apps.health().query(&peer).await {
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
                match self.gossip.publish(topic, data.clone().into()).await {
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
        if let Err(e) = self.apps.tasks().submit(task, Placement::BestByResources) {
            lock(&waiters).remove(&id);
            return Response::Error {
                message: format!("task: {e}"),
            };
        }
        let Ok(Ok(result)) = tokio::time::timeout(limit, rx).await else {
            lock(&waiters).remove(&id);
            self.apps.tasks().cancel(id);
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
            let mut results = self.apps.tasks().results();
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

    /// Dials `target` (an address, or a PeerId to find and reach by its
    /// addresses), answering before the client's exchange timeout.
    async fn connect(&self, target: &str) -> Response {
        let limit = EXCHANGE_TIMEOUT.saturating_sub(Duration::from_millis(500));
        let connect = match (
            target.parse::<PeerId>(),
            target.parse::<knotwork_core::DialAddr>(),
        ) {
            (Ok(peer), _) => self.node.connect_peer(peer).boxed(),
            (_, Ok(addr)) => self.node.connect(addr).boxed(),
            (Err(_), Err(e)) => {
                return Response::Error {
                    message: format!("neither a PeerId nor an address: {target:?}: {e}"),
                };
            }
        };
        let addr = target;
        match tokio::time::timeout(limit, connect).await {
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

    /// Answers a DHT request; a query that outlasts the exchange is an error.
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
            reachability: self.nat.reachability().to_string(),
        }
    }
}

fn dht_peer(p: knotwork_dht_node::PeerInfo) -> DhtPeerEntry {
    DhtPeerEntry {
        peer_id: p.peer_id.to_string(),
        addrs: p.addrs.iter().map(ToString::to_string).collect(),
    }
}

/// Runs one DHT request on `dht`; `Err` is the error response's text.
async fn dht_answer(dht: &DhtHandle, request: &Request) -> Result<Response, String> {
    let failed = |e: knotwork_dht_node::DhtNodeError| format!("dht: {e}");
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
pub(crate) fn unix_micros() -> u64 {
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
    /// [`KnotError::InUse`].
    pub async fn bind(data_dir: &Path, control: NodeControl) -> Result<Self, KnotError> {
        create_private_dir(data_dir)?;
        let path = socket_path(data_dir);
        if path.exists() {
            if UnixStream::connect(&path).await.is_ok() {
                return Err(KnotError::InUse(path.display().to_string()));
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

async fn exchange(mut stream: UnixStream, control: &NodeControl) -> Result<(), KnotError> {
    let response = match read_message::<Request, _>(&mut stream).await {
        Ok(request) => control.answer(&request).await,
        Err(e @ (KnotError::Io(_) | KnotError::Truncated)) => return Err(e),
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    };
    stream.write_all(&encode(&response)?).await?;
    stream.shutdown().await?;
    Ok(())
}
