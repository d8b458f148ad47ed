//! knotwork-crypto-handshake: an authenticated, encrypted byte stream over
//! any transport, from a Noise handshake bound to the Ed25519 identity.
//!
//! # Layout
//! - [`preamble`]: the clear-text preamble (magic, version, pattern, suite)
//!   that is also the Noise prologue, and [`Suite`] / [`Pattern`].
//! - [`payload`]: the identity payload: Ed25519 key + signature over the
//!   Noise static key.
//! - [`handshake`]: [`Handshake`], the sans-IO state machine (XX, and IK for
//!   known peers), built on snow.
//! - `resolver` (private): the crypto snow runs on, from AWS-LC (aws-lc-rs),
//!   with the static key computed once.
//! - [`known`]: [`KnownPeers`], the peers' static keys (for IK) and checked
//!   identity payloads remembered between handshakes.
//! - [`cipher`]: [`CipherState`], one transport direction, in-place AEAD with
//!   AWS-LC, Noise rekey.
//! - `stream` (feature `tokio`): `SecureStream`, tokio `AsyncRead +
//!   AsyncWrite` over the transport keys, batching small writes into one
//!   Noise message.
//! - `config` (feature `tokio`): the tokio driver: `SecureConfig`,
//!   `upgrade_outbound`, `upgrade_inbound`.
//!
//! # Features
//! - `tokio` (default): `SecureStream` and the driver above. Without it the
//!   crate is the sans-IO handshake only ([`Handshake`] in, [`Established`]
//!   with its two [`CipherState`]s out) and pulls in no tokio.
//!
//! # Data flow
//! ```text
//!  raw connection ──bytes──> Handshake::read_input ──> take_output ──bytes──> raw connection
//!                                 │ finish()
//!                                 v
//!            Established { remote PeerId, suite, send/recv CipherState }
//!                                 │
//!  app bytes ─write─> SecureStream ─seal (one AEAD per ≤64 KiB batch)─> len|ciphertext|tag ─> raw
//!  app bytes <─read── SecureStream <─open in place───────────────────── len|ciphertext|tag <─ raw
//! ```
//!
//! # Errors
//! One enum, [`HandshakeError`], grouped by fault. Every malformed input has
//! its own variant; nothing a peer sends can panic.
//!
//! # Example
//! ```
//! use knotwork_core::Keypair;
//! use knotwork_crypto_handshake::SecureConfig;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (alice, bob) = (Keypair::generate()?, Keypair::generate()?);
//! let bob_id = bob.peer_id();
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let server = tokio::spawn(async move {
//!     let mut s = SecureConfig::new(bob)?.upgrade_inbound(b).await?;
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).await?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(buf)
//! });
//! let mut s = SecureConfig::new(alice)?.upgrade_outbound(a, Some(bob_id)).await?;
//! s.write_all(b"hello").await?;
//! s.flush().await?;
//! assert_eq!(&server.await?.map_err(|e| e.to_string())?, b"hello");
//! # Ok(()) }
//! ```

pub mod cipher;
#[cfg(feature = "tokio")]
pub mod config;
mod error;
pub mod handshake;
pub mod known;
pub mod payload;
pub mod preamble;
mod resolver;
#[cfg(feature = "tokio")]
pub mod stream;

pub use cipher::CipherState;
#[cfg(feature = "tokio")]
pub use config::{SecureConfig, upgrade_inbound, upgrade_outbound};
pub use error::HandshakeError;
pub use handshake::{EarlyData, Established, Handshake, StaticIdentity};
pub use known::KnownPeers;
pub use preamble::{Pattern, Suite};
#[cfg(feature = "tokio")]
pub use stream::{BUSY_BURST, SecureStream};

/// The README's example, compiled as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
