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
//! # Layout
//! - [`node`]: [`Node`], [`NodeBuilder`], [`NodeConfig`], [`NodeEvent`].
//! - `session`: the connection pipeline, accept loop and limits, dialing,
//!   refinery, outbound slots, reconnect.
//! - [`channel`]: [`Channel`], its reader and writer tasks, [`Responder`].
//! - `buffers`: the halves of a channel's stream and the count of its
//!   buffered bytes.
//! - `frames`: the reader's frame decoder, which frees its buffer when idle.
//! - `queue`: the bounded queue of a subscription, empty of memory when idle.
//! - [`subsystem`]: [`MessageSubsystem`], [`Subscription`], [`RequestSubscription`].
//! - [`registry`]: [`ProtocolRegistry`], [`SessionKind`], [`Sessions`].
//! - [`meter`]: rate budgets, misbehaviour score, ban list (sans-IO).
//! - [`hosts`]: [`HostStore`] (grey/white/black lists) and [`AddrScope`] (sans-IO).
//! - [`backoff`]: reconnect schedule with jitter (sans-IO).
//! - [`discovery`]: every [`knotwork_core::Discovery`] source run together,
//!   merged by peer ([`DiscoveryMerge`], sans-IO), feeding the host store and
//!   the dialer; [`UnifiedEvent`]s for applications. mDNS is the `mdns` feature
//!   (re-exported as `mdns`).
//! - [`version`]: the [`Version`] and [`Disconnect`] messages.
//! - [`protocol`]: the built-in protocols, [`protocol::ping`] and [`protocol::address`];
//!   the application protocols ([`apps`]): [`protocol::task`], [`protocol::resource`],
//!   [`protocol::health`], [`protocol::gossip`].
//!   The Kademlia DHT driver, `protocol::dht` (feature `dht`, default): a task
//!   running the `knotwork-discovery-dht` core over channels, with `DhtHandle`.
//! - `config` and `control` (feature `cli`): `knot.toml` with `KNOT_*`
//!   overrides; the control socket of a running node (`src/bin/knot`: the `knot` command).
//! - [`nat`]: observed external addresses, the relay service and client
//!   ([`protocol::relay`]), relayed addresses ([`knotwork_core::RelayAddr`]),
//!   reachability by peers' dial-backs ([`protocol::reachability`]: public at
//!   an address, or private).
//! - [`metrics`]: counters, gauges, histograms; Prometheus text over HTTP.
//! - `upnp` (feature `upnp`, default; off unless enabled on the builder): UPnP
//!   IGD mapping of the listen port, its lease schedule (sans-IO) and renewal.
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

pub mod apps;
pub mod backoff;
mod buffers;
pub mod channel;
#[cfg(feature = "cli")]
pub mod config;
#[cfg(feature = "cli")]
pub mod control;
pub mod discovery;
pub mod error;
mod frames;
pub mod hosts;
pub mod meter;
pub mod metrics;
pub mod nat;
pub mod node;
mod outbox;
pub mod protocol;
mod queue;
pub mod registry;
mod session;
pub mod subsystem;
mod transport;
#[cfg(feature = "upnp")]
pub mod upnp;
pub mod version;

pub use apps::AppsConfig;
pub use channel::{Channel, ChannelConfig, ChannelInfo, Responder};
pub use discovery::{DiscoveredInfo, DiscoveryConfig, DiscoveryMerge, UnifiedEvent};
pub use error::{CloseReason, DisconnectReason, NodeError};
pub use hosts::{AddrScope, HostStore};
#[cfg(feature = "mdns")]
pub use knotwork_discovery_mdns as mdns;
pub use meter::{MeterConfig, RateBudget};
pub use node::{Node, NodeBuilder, NodeConfig, NodeEvent, PeerInfo};
pub use registry::{ProtocolRegistry, SessionKind, Sessions};
pub use subsystem::{MessageSubsystem, RequestSubscription, Subscription};
pub use version::{Disconnect, Version};
