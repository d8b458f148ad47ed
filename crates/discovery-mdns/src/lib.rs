//! knotwork-discovery-mdns: find knotwork peers on the local network with
//! mDNS / DNS-SD (RFC 6762 / RFC 6763), through the `mdns-sd` daemon.
//!
//! Every node announces a service instance of type `_knotwork._udp.local.`
//! (configurable) with a random 16-hex-digit label, and browses for the
//! others. The TXT record carries the PeerId, the protocol version and one key
//! per reachable address (see [`txt`]). Each interface gets its own instance
//! with only the addresses that make sense on it: loopback addresses stay on
//! loopback, `0.0.0.0`/`[::]` expand to the interface's own addresses (see
//! [`plan`]). Peers announce goodbye on shutdown; a peer whose records expire
//! (TTL) or say goodbye is reported [`Expired`](knotwork_core::DiscoveryEvent::Expired) once.
//! Malformed announcements are logged (`tracing::warn!`) and ignored.
//!
//! # Layout
//! - [`txt`]: TXT record encode/decode, sans-IO, with [`TxtLimits`].
//! - [`plan`]: which addresses go on which interface, sans-IO.
//! - [`browser`]: instances → peers, the events to report, sans-IO.
//! - [`MdnsDiscovery`]: the tokio driver over `mdns-sd`; implements
//!   [`Discovery`](knotwork_core::Discovery).
//! - [`MdnsError`]: every refusal and rejection, one variant each.
//!
//! # Data flow
//! ```text
//!  announce(info) ─► plan(listen addrs, interfaces) ─► txt::encode ─► daemon.register (per interface)
//!  daemon browse events ─► txt::decode ─► Browser ─► Discovered / Expired ─► events(), discover()
//! ```
//!
//! # Limits
//! - The `mdns-sd` daemon uses the RFC 6762 default TTLs (75 minutes for the
//!   PTR and TXT records), so a peer of ours that vanishes without a goodbye is
//!   expired when its records do; peers publishing shorter TTLs expire sooner.
//! - The daemon checks the host's addresses every 5 seconds; a new or removed
//!   address is re-announced after that check.
//! - A browser keeps at most [`MAX_INSTANCES`] instances; more are ignored
//!   with a warning.
//! - mDNS stays on the LAN: with [`MdnsConfig::lan_only`] (the default) the
//!   daemon runs only where [`plan::lan_only`] allows, and a peer's
//!   addresses are kept only inside the subnets of the interface its
//!   announcement was heard on ([`MdnsError::OffLink`] when none is).
//!   `mdns-sd` offers no filter by packet source, so a host whose private
//!   interface takes internet traffic (1:1 NAT) needs UDP 5353 blocked from
//!   outside.
//!
//! # Example
//! ```no_run
//! use futures::StreamExt;
//! use knotwork_core::{Discovery, Keypair, LocalPeerInfo};
//! use knotwork_discovery_mdns::{MdnsConfig, MdnsDiscovery};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let me = Keypair::generate()?;
//! let mdns = MdnsDiscovery::new(MdnsConfig::default())?;
//! let mut events = mdns.events();
//! mdns.announce(&LocalPeerInfo {
//!     peer_id: me.peer_id(),
//!     addrs: vec!["tcp/0.0.0.0:4000".parse()?],
//! })
//! .await?;
//! if let Some(event) = events.next().await {
//!     println!("{event:?}");
//! }
//! mdns.shutdown().await?; // goodbye
//! # Ok(()) }
//! ```

pub mod browser;
mod discovery;
mod error;
pub mod plan;
pub mod txt;

pub use browser::{Browser, MAX_INSTANCES};
pub use discovery::{DEFAULT_SERVICE_TYPE, EVENT_BUFFER, MdnsConfig, MdnsDiscovery};
pub use error::MdnsError;
pub use txt::{PROTOCOL_VERSION, TxtEntry, TxtLimits};
