//! The control endpoint of a running node: a Unix socket in
//! the node's data directory through which `knot peers`, `knot status` and
//! later commands talk to the node.
//!
//! # Format
//! One connection carries one exchange: the client writes one [`Request`] as
//! a JSON line, the node answers with one [`Response`] as a JSON line and
//! closes. Lines are at most [`MAX_LINE`] bytes. A new command is a new
//! [`Request`] variant, a new [`Response`] variant and one arm in
//! `NodeControl::answer` (`server`). Readers ignore response fields they do not know,
//! so a node may add fields without breaking older clients.
//!
//! ```text
//! → {"request":"status"}
//! ← {"response":"status","peer_id":"6Mk…","listen":["tcp/127.0.0.1:4000"],…}
//! ```
//!
//! # Access
//! Only the node's owner may talk to it: the data directory is made `0700`
//! and the socket `0600` (see `ControlServer::bind`).
//!
//! # Bookkeeping
//! The node itself keeps no start times; `NodeControl` follows the node's
//! events from the moment it is created to know how long each peer
//! has been connected and which peers were banned. A peer connected before
//! that (or during a lag of the event stream) counts from when it was first
//! seen.

use crate::error::KnotError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use knotwork_node::SessionKind;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

mod server;
pub(crate) use server::{ControlServer, NodeControl, create_private_dir, unix_micros};

/// The socket's file name inside the data directory.
pub(crate) const SOCKET_NAME: &str = "control.sock";

/// Longest request or response line, in bytes (newline included).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// How long one exchange may take before the other side is cut.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Exchanges served at once at most; more wait for a turn.
const MAX_CLIENTS: usize = 8;

/// The path of the control socket of the node whose data directory is `data_dir`.
pub(crate) fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// What a client asks the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
#[non_exhaustive]
pub(crate) enum Request {
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
pub(crate) enum Direction {
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
pub(crate) fn session_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Inbound => "inbound",
        SessionKind::Outbound => "outbound",
        SessionKind::Manual => "manual",
        SessionKind::Seed => "seed",
    }
}

/// One connected peer, as reported by [`Request::Peers`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PeerEntry {
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
pub(crate) struct StatusReport {
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
    /// `unknown` (see `knotwork_nat::dialback`).
    #[serde(default)]
    pub reachability: String,
}

/// A peer found through the DHT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DhtPeerEntry {
    /// The peer's id (base58).
    pub peer_id: String,
    /// The addresses it is reachable at.
    pub addrs: Vec<String>,
}

/// A DHT record, as reported by [`Request::DhtGet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DhtRecordEntry {
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
pub(crate) enum Response {
    /// The answer to [`Request::Peers`].
    Peers {
        /// The peers, by id.
        peers: Vec<PeerEntry>,
    },
    /// The answer to [`Request::Status`].
    Status(StatusReport),
    /// The answer to [`Request::Health`].
    Health(knotwork_tasks::HealthStatus),
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

/// Reads one JSON line of at most [`MAX_LINE`] bytes and decodes it.
async fn read_message<T, R>(reader: R) -> Result<T, KnotError>
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
            KnotError::LineTooLong
        } else {
            KnotError::Truncated
        });
    }
    decode(&line)
}

/// Decodes one message from a JSON line (trailing newline optional).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, KnotError> {
    serde_json::from_slice(line).map_err(|e| KnotError::Malformed(e.to_string()))
}

/// Encodes one message as a JSON line.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, KnotError> {
    let mut line = serde_json::to_vec(msg).map_err(|e| KnotError::Malformed(e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

/// Sends `request` to the node whose data directory is `data_dir` and
/// returns its answer. A [`Response::Error`] comes back as
/// [`KnotError::Refused`].
pub(crate) async fn request(data_dir: &Path, request: &Request) -> Result<Response, KnotError> {
    let path = socket_path(data_dir);
    let exchange = async {
        let mut stream =
            UnixStream::connect(&path)
                .await
                .map_err(|source| KnotError::NotRunning {
                    path: path.display().to_string(),
                    source,
                })?;
        stream.write_all(&encode(request)?).await?;
        read_message::<Response, _>(&mut stream).await
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
        Ok(Ok(Response::Error { message })) => Err(KnotError::Refused(message)),
        Ok(other) => other,
        Err(_) => Err(KnotError::Timeout),
    }
}

#[cfg(test)]
mod tests;
