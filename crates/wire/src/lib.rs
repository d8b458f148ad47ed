//! knotwork-wire: the knotwork frame format, its tokio-util codec, and typed
//! postcard messages.
//!
//! Every knotwork connection (after the handshake) is a stream of frames: a
//! fixed 16-byte header followed by a payload. The header says what the frame
//! is for (a one-way message, a request or a response), which message type the
//! payload holds, which request it answers, and how long the payload is. The
//! crate is sans-IO: [`FrameCodec`] only turns bytes into frames and back, and
//! `tokio_util::codec::Framed` connects it to a stream.
//!
//! ```text
//!  stream bytes ──► FrameCodec::decode ──► Frame { kind, msg_id, request_id, payload }
//!                                                                     │
//!                                            decode::<M>(&payload) ◄──┘  typed message M
//!  typed message M ──► encode(&m) ──► Frame::message(M::ID, bytes) ──► FrameCodec::encode ──► stream
//! ```
//!
//! # Frame format
//!
//! | bytes    | field        | value                                                        |
//! |----------|--------------|--------------------------------------------------------------|
//! | 0..2     | magic        | [`MAGIC`], `b"kw"`                                           |
//! | 2        | version      | [`VERSION`], 1                                               |
//! | 3        | flags · kind | high nibble: flags, reserved, must be 0; low nibble: [`FrameKind`] (0 message, 1 request, 2 response) |
//! | 4..8     | msg_id       | u32 big-endian, the payload's [`Message::ID`]                |
//! | 8..12    | request_id   | u32 big-endian; pairs a response with its request; 0 for a message |
//! | 12..16   | length       | u32 big-endian payload length, at most the codec's limit ([`DEFAULT_MAX_FRAME_LEN`] = 1 MiB by default) |
//! | 16..     | payload      | `length` bytes, usually a postcard-encoded [`Message`]       |
//!
//! [`HEADER_LEN`] is 16. A header that breaks any rule is refused with its own
//! [`WireError`] variant before anything is allocated for the payload.
//!
//! # Layout
//! The public API is the `pub use` list at the root; the files split it by
//! concern:
//! - `frame.rs`: the constants, [`FrameKind`], [`Frame`] and header parsing.
//! - `codec.rs`: [`FrameCodec`], the `Decoder`/`Encoder` (check, parse,
//!   advance; zero-copy payloads).
//! - `message.rs`: the [`Message`] trait, [`message_id`], [`encode`], [`decode`].
//! - `error.rs`: [`WireError`], one enum for the crate, grouped by fault.
//!
//! # Features
//! - `tokio` (default): [`FrameCodec`] implements tokio-util's `Decoder` and
//!   `Encoder`, for `Framed`. Without it the crate pulls in no tokio and the
//!   codec is driven by hand: [`FrameCodec::decode_ref`] then `advance` to
//!   read, [`FrameCodec::encode_message`] or [`Frame::encode_header`] plus
//!   the payload to write.
//!
//! # Errors
//! Every malformed input maps to a named [`WireError`] variant; nothing in this
//! crate panics on peer bytes. A framing error is final for the connection
//! (the codec does not try to resynchronise); a message-level error
//! ([`WireError::Malformed`], [`WireError::MessageTooLarge`],
//! [`WireError::TrailingBytes`]) concerns one payload and leaves the frame
//! stream intact.
//!
//! # Example
//! A receive loop over any byte stream:
//! ```
//! use futures::{SinkExt, StreamExt};
//! use knotwork_wire::{Frame, FrameCodec, Message, WireError, decode, encode};
//! use serde::{Deserialize, Serialize};
//! use tokio_util::codec::Framed;
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Ping {
//!     nonce: u64,
//! }
//! impl Message for Ping {
//!     const NAME: &'static str = "knot/ping/1";
//!     const MAX_BYTES: usize = 10; // nonce: u64 varint, at most 10 bytes
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), WireError> {
//! let (a, b) = tokio::io::duplex(4096);
//! let mut tx = Framed::new(a, FrameCodec::new());
//! let mut rx = Framed::new(b, FrameCodec::new());
//!
//! tx.send(Frame::message(Ping::ID, encode(&Ping { nonce: 7 })?)).await?;
//! drop(tx);
//!
//! while let Some(frame) = rx.next().await {
//!     let frame = frame?;
//!     if frame.msg_id == Ping::ID {
//!         let ping: Ping = decode(&frame.payload)?;
//!         assert_eq!(ping.nonce, 7);
//!     }
//! }
//! # Ok(()) }
//! ```

mod codec;
mod error;
mod frame;
mod message;

pub use codec::FrameCodec;
pub use error::WireError;
pub use frame::{DEFAULT_MAX_FRAME_LEN, Frame, FrameKind, FrameRef, HEADER_LEN, MAGIC, VERSION};
pub use message::{MaxSize, Message, Request, decode, encode, message_id};

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
