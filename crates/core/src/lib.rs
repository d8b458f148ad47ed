//! knotwork-core: the pieces every other knotwork crate shares.
//!
//! # Layout
//! - [`identity`]: the Ed25519 [`Keypair`], its [`PublicKey`] and the [`PeerId`]
//!   derived from it.
//! - [`addr`]: [`PeerAddr`], a typed address (`tcp/127.0.0.1:4000`,
//!   `tcp/[::1]:4000`, `tcp/seed.example.com:4000`, `uds//run/knot.sock`,
//!   `ws/example.com:80/knot`, `ble/<device>`, `mem/7`, relay addresses),
//!   and [`DialAddr`], an address with an optional `/p2p/<PeerId>` pin.
//! - [`transport`]: the [`Transport`] and [`Listener`] traits every transport
//!   implements, and [`TransportError`].
//! - [`discovery`]: the [`Discovery`] trait and [`DiscoveredPeer`].
//! - [`memory`]: [`MemoryTransport`], an in-process transport with bounded
//!   pipes that behaves like TCP, for tests and examples.
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
pub mod discovery;
pub mod identity;
pub mod memory;
pub mod transport;

pub use addr::{
    AddrParseError, DialAddr, DnsName, Host, MAX_ADDR_TEXT_LEN, MAX_DIAL_ADDR_TEXT_LEN, PeerAddr,
    RelayAddr, UdsPath, WsAddr,
};
pub use discovery::{
    DiscoveredPeer, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySource, LocalPeerInfo,
};
pub use identity::{IdentityError, Keypair, PeerId, PublicKey, SIGNATURE_LEN};
pub use memory::MemoryTransport;
pub use transport::{Listener, RawConnection, Transport, TransportError};
