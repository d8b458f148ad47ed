//! knotwork-core: the pieces every other knotwork crate shares.
//!
//! # Layout
//! - [`identity`]: the Ed25519 [`Keypair`], its [`PublicKey`] and the [`PeerId`]
//!   derived from it.
//! - [`addr`]: [`PeerAddr`], a typed address (`tcp/127.0.0.1:4000`,
//!   `tcp/[::1]:4000`, `ble/<device>`, `mem/7`).
//! - `transport` (feature `tokio`): the `Transport` and `Listener` traits
//!   every transport implements, and `TransportError`.
//! - `discovery` (feature `tokio`): the `Discovery` trait and
//!   `DiscoveredPeer`.
//! - `memory` (feature `tokio`): `MemoryTransport`, an in-process transport
//!   with bounded pipes that behaves like TCP, for tests and examples.
//!
//! # Features
//! - `tokio` (default): the async half above, on tokio's `AsyncRead` /
//!   `AsyncWrite`. Sans-IO crates (the DHT core, BLE's link layer, the
//!   handshake state machine) depend on this crate without it and pull in
//!   neither tokio nor futures.
//!
//! # Example
//! ```
//! use knotwork_core::{Keypair, MemoryTransport, PeerAddr, Transport, Listener};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let me = Keypair::generate()?;
//! println!("I am {}", me.peer_id());
//!
//! let net = MemoryTransport::new();
//! let mut listener = net.listen(&"mem/0".parse()?).await?;
//! let addr: PeerAddr = listener.local_addr();
//! let mut client = net.dial(&addr).await?;
//! let (mut server, _from) = listener.accept().await?;
//! client.write_all(b"hello").await?;
//! let mut buf = [0u8; 5];
//! server.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hello");
//! # Ok(()) }
//! ```

pub mod addr;
#[cfg(feature = "tokio")]
pub mod discovery;
pub mod identity;
#[cfg(feature = "tokio")]
pub mod memory;
#[cfg(feature = "tokio")]
pub mod transport;

pub use addr::{AddrParseError, MAX_ADDR_TEXT_LEN, PeerAddr, RelayAddr};
#[cfg(feature = "tokio")]
pub use discovery::{
    DiscoveredPeer, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySource, LocalPeerInfo,
};
pub use identity::{IdentityError, Keypair, PeerId, PublicKey, SIGNATURE_LEN};
#[cfg(feature = "tokio")]
pub use memory::MemoryTransport;
#[cfg(feature = "tokio")]
pub use transport::{Listener, RawConnection, Transport, TransportError};

/// The README's example, compiled as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
