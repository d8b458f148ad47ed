//! knotwork-node: the node runtime.
//!
//! A [`Node`] listens and dials over any [`knotwork_core::Transport`] (TCP and
//! the in-memory transport built in), secures every connection with the Noise
//! handshake of `knotwork-crypto-handshake`, exchanges a [`Version`] message,
//! and then gives each connection a [`Channel`]: typed one-way messages,
//! typed request/response with ids and timeouts, and bounded subscriptions.
//! Protocols are small functions registered once and started on every channel
//! of the chosen [`Sessions`]; they stop when their channel closes.
//!
//! ```text
//!  Transport ─► SecureStream ─► Version exchange ─► Channel ─┬─ writer task: queue ─► batch ─► one flush
//!  (TCP, mem)   (Noise XX/IK)    (de-dup by PeerId)          └─ reader task: frames ─► Meter ─► MessageSubsystem
//!                                                                                        └─► Subscription<M> (bounded)
//! ```
//!
//! The runtime knows no protocol beyond ping and address exchange. Gossip,
//! tasks, NAT traversal and the DHT are [`Service`]s in crates of their own,
//! written against the same public extension API an application uses
//! ([`service`]): per-channel protocols, node-wide jobs, the node's dial
//! policy ([`dial`]), advertised-address contributions ([`addrs`]), events
//! and metrics.
//!
//! # Layout
//! - [`node`]: [`Node`] and [`NodeHandle`] (what services see), [`NodeEvent`].
//! - [`builder`]: [`NodeBuilder`], [`NodeConfig`].
//! - [`service`]: the extension API: [`Service`], [`Setup`], [`Dialer`].
//! - [`dial`]: the dial policy (scope, budgets per cause, one dial per address).
//! - [`addrs`]: advertised addresses and [`AddrContribution`]s.
//! - [`resolve`]: connecting by PeerId alone; [`PeerResolver`]s.
//! - [`jobs`]: owned tasks, reaped when they finish.
//! - `session`: the connection pipeline, accept loop and limits, dialing,
//!   probes; `maintain`: refinery, outbound slots, reconnects.
//! - [`channel`]: [`Channel`], its reader and writer tasks, [`Responder`].
//! - `buffers`, `frames`, `outbox`, `queue`: a channel's stream halves and
//!   buffers, its frame decoder, its send buffer, a subscription's queue.
//! - [`subsystem`]: [`MessageSubsystem`], [`Subscription`], [`RequestSubscription`].
//! - [`registry`]: [`ProtocolRegistry`], [`SessionKind`], [`Sessions`].
//! - [`meter`]: rate budgets, misbehaviour score, ban list (sans-IO).
//! - [`hosts`]: [`HostStore`] (grey/white/black lists) and [`AddrScope`] (sans-IO).
//! - [`backoff`]: reconnect schedule with jitter (sans-IO).
//! - [`discovery`]: every [`knotwork_core::Discovery`] source run together,
//!   merged by peer ([`DiscoveryMerge`], sans-IO), feeding the host store and
//!   the dialer; [`UnifiedEvent`]s for applications.
//! - [`version`]: the [`Version`] and [`Disconnect`] messages.
//! - [`protocol`]: [`protocol::ping`] and [`protocol::address`].
//! - [`metrics`]: counters, gauges, histograms; services register their
//!   own; Prometheus text over HTTP.
//! - [`transport`]: transports behind one object-safe face; [`BoxStream`].
//!
//! # Errors
//! One enum, [`NodeError`], grouped by fault. A misbehaving peer never
//! produces an error for the node: it costs misbehaviour points and, over
//! the threshold, its connection and a ban ([`meter`]).
//!
//! # Example: a request/response protocol
//! ```
//! use knotwork_core::{Keypair, MemoryTransport};
//! use knotwork_node::{Node, Sessions};
//! use knotwork_wire::Message;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Hello(String);
//! impl Message for Hello {
//!     const NAME: &'static str = "example/hello/1";
//!     const MAX_BYTES: usize = 65; // 1 length byte + up to 64 bytes of text
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = MemoryTransport::new();
//! let server = Node::builder(Keypair::generate()?)
//!     .transport(net.clone())
//!     .listen("mem/0".parse()?)
//!     .protocol("hello", Sessions::ALL, |ch| {
//!         let mut requests = ch.subscribe_requests::<Hello>();
//!         async move {
//!             while let Some((Hello(name), responder)) = requests.recv().await {
//!                 let _ = responder.respond(&Hello(format!("hello, {name}"))).await;
//!             }
//!         }
//!     })
//!     .start()
//!     .await?;
//! let client = Node::builder(Keypair::generate()?).transport(net).start().await?;
//! let channel = client.connect(&server.listen_addrs()[0]).await?;
//! let Hello(answer) = channel.request::<Hello, Hello>(&Hello("knot".into())).await?;
//! assert_eq!(answer, "hello, knot");
//! client.shutdown().await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod addrs;
mod buffers;
pub mod builder;
pub mod channel;
mod deadline;
pub mod dial;
pub mod discovery;
pub mod error;
mod frames;
pub mod jobs;
mod maintain;
pub mod metrics;
pub mod node;
mod outbox;
pub mod protocol;
mod queue;
pub mod registry;
pub mod resolve;
pub mod service;
mod session;
pub mod subsystem;
pub mod transport;
pub mod version;

pub use addrs::AddrContribution;
pub use builder::{NodeBuilder, NodeConfig};
pub use channel::{Channel, ChannelConfig, ChannelInfo, Responder};
pub use dial::{DialCause, DialOpts};
pub use discovery::{DiscoveredInfo, DiscoveryConfig, DiscoveryMerge, UnifiedEvent};
pub use error::{CloseReason, DisconnectReason, NodeError};
pub use jobs::Jobs;
pub use knotwork_compress::Compression;
/// The connection rules the node applies, from `knotwork-policy`.
pub use knotwork_policy::{
    AddrScope, HostStore, MeterConfig, RateBudget, admission, backoff, hosts, meter,
};
pub use metrics::Metrics;
pub use node::{Node, NodeEvent, NodeHandle, PeerInfo, WeakNode};
pub use registry::{ProtocolRegistry, SessionKind, Sessions};
pub use resolve::{Attempt, PeerResolver};
pub use service::{Dialer, Service, Setup};
pub use subsystem::{MessageSubsystem, RequestSubscription, Subscription};
pub use transport::{BoxStream, RawConn};
pub use version::{Disconnect, Version};

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
