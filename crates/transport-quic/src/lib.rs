//! knotwork-transport-quic: the [`Transport`](knotwork_core::Transport)
//! trait over QUIC (quinn), with the node's identity in the handshake.
//!
//! # Layout
//! - [`identity`]: the identity binding. The TLS 1.3 key *is* the node's
//!   Ed25519 identity key, presented as an RFC 7250 raw public key; the
//!   verifiers decode it, check the handshake signature and (when the dialer
//!   names one) the expected [`PeerId`](knotwork_core::PeerId).
//! - [`QuicTransport`] / [`QuicListener`]: listen on and dial `quic/<ip>:<port>`
//!   addresses; one UDP socket both listens and dials
//!   ([`QuicTransport::dial_from`], for hole punching); Retry for every
//!   unvalidated source.
//! - [`QuicConnection`]: what is dialed and accepted, one authenticated
//!   connection as a byte stream (its first bidirectional stream), with
//!   [`QuicHandle`] for further streams ([`QuicStream`]).
//! - [`QuicConfig`]: timeouts and limits; [`QuicError`]: every failure.
//!
//! # Data flow
//! ```text
//!  dial_peer(addr, expected) ──Initial──▶ listener: unvalidated? ──▶ Retry (stateless)
//!            ◀──────────── Retry + token ─┘
//!            ──Initial+token──▶ validated: handshake (limits: pending, connections)
//!  TLS 1.3: both present raw Ed25519 keys, sign the transcript, check the other
//!  dialer opens stream 0, writes MAIN_STREAM_TAG ──▶ listener accepts it
//!  QuicConnection (stream 0, AsyncRead + AsyncWrite) + QuicHandle (more streams)
//! ```
//! [`Transport::authenticated_peer`](knotwork_core::Transport::authenticated_peer)
//! returns the proven PeerId, so the node skips its Noise handshake on
//! these connections (QUIC already encrypts) and runs only the version
//! exchange.
//!
//! # Example
//! ```
//! use knotwork_core::{Keypair, Listener, Transport};
//! use knotwork_transport_quic::{QuicConfig, QuicTransport};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (alice, bob) = (Keypair::generate()?, Keypair::generate()?);
//! let server = QuicTransport::new(&alice, QuicConfig::default())?;
//! let mut listener = server.listen(&"quic/127.0.0.1:0".parse()?).await?;
//!
//! let client = QuicTransport::new(&bob, QuicConfig::default())?;
//! let addr = listener.local_addr();
//! let mut conn = client.dial_peer(&addr, Some(alice.peer_id())).await?;
//! let (mut inbound, _from) = listener.accept().await?;
//! assert_eq!(QuicTransport::authenticated_peer(&inbound), Some(bob.peer_id()));
//!
//! conn.write_all(b"hi").await?;
//! let mut buf = [0u8; 2];
//! inbound.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hi");
//! # Ok(()) }
//! ```

mod config;
mod error;
pub mod identity;
mod stream;
mod transport;

pub use config::{ALPN, QuicConfig};
pub use error::QuicError;
pub use stream::{MAIN_STREAM_TAG, QuicConnection, QuicHandle, QuicStream};
pub use transport::{ListenerStats, QuicListener, QuicTransport};

/// Compiles the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
