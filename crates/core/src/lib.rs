//! knotwork-core: the pieces every other knotwork crate shares.
//!
//! # Layout
//! - [`identity`]: the Ed25519 [`Keypair`], its [`PublicKey`] and the [`PeerId`]
//!   derived from it.
//! - [`addr`]: [`PeerAddr`], a typed address (`tcp/127.0.0.1:4000`,
//!   `tcp/[::1]:4000`, `tcp/seed.example.com:4000`, `uds//run/knot.sock`,
//!   `ws/example.com:80/knot`, `ble/<device>`, `mem/7`, relay addresses),
//!   and [`DialAddr`], an address with an optional `/p2p/<PeerId>` pin.
//! - `transport` (feature `tokio`): the `Transport` and `Listener` traits
//!   every transport implements, and `TransportError`.
//! - `discovery` (feature `tokio`): the `Discovery` trait and
//!   `DiscoveredPeer`.
//! - `memory` (feature `tokio`): `MemoryTransport`, an in-process transport
//!   with bounded pipes that behaves like TCP, for tests and examples.
//! - `serde_impls` (private): serde for the identity and address types.
//!
//! # Features
//! - `tokio` (default): the async half above, on tokio's `AsyncRead` /
//!   `AsyncWrite`. Sans-IO crates (the DHT core, BLE's link layer, the
//!   handshake state machine) depend on this crate without it and pull in
//!   neither tokio nor futures.
//! - `serde` (default): [`PeerId`] and [`PeerAddr`] serialize
//!   as their text forms in every format (`Display` out, `FromStr` in), so
//!   a JSON config and a postcard message both hold `tcp/127.0.0.1:4000`.
//!   In postcard each is its text's length (a varint: 1 byte below 128, else
//!   2) and the text: a `PeerId` takes at most 1 + [`MAX_PEER_ID_TEXT_LEN`]
//!   = 45 bytes; count that in a message's `MAX_BYTES`.
//! - `keypair-serde` (off by default): [`Keypair`] serializes as its
//!   PKCS#8 document ([`Keypair::to_pkcs8`], the bytes of a key file), as
//!   base58 text in human-readable formats (JSON, TOML) and as bytes in the
//!   others (postcard). It is a secret, hence the separate feature; a
//!   `Keypair`'s `Debug` output shows only its `PeerId`.
//!
//! Text that does not parse fails deserialization with the `FromStr` error
//! ([`IdentityError`], [`AddrParseError`]) as the serde error's message.
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
pub mod netgroup;
#[cfg(feature = "serde")]
mod serde_impls;
pub mod sync;
#[cfg(feature = "tokio")]
pub mod transport;

pub use addr::{
    AddrParseError, DialAddr, DnsName, Host, MAX_ADDR_TEXT_LEN, MAX_DIAL_ADDR_TEXT_LEN, PeerAddr,
    RelayAddr, UdsPath, WsAddr,
};
#[cfg(feature = "tokio")]
pub use discovery::{
    DiscoveredPeer, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySource, LocalPeerInfo,
};
pub use identity::{
    IdentityError, Keypair, MAX_PEER_ID_TEXT_LEN, PeerId, PublicKey, SEED_LEN, SIGNATURE_LEN,
};
#[cfg(feature = "tokio")]
pub use memory::MemoryTransport;
pub use netgroup::IpPrefix;
pub use sync::lock;
#[cfg(feature = "tokio")]
pub use transport::{
    BoxConnection, Listener, RawConnection, Substreams, Transport, TransportError,
};

/// The README's example, compiled as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
