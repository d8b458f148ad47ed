//! knotwork-transport-ble: the Bluetooth LE transport and BLE discovery.
//!
//! Two knotwork nodes talk over BLE through one GATT service
//! ([`SERVICE_UUID`]) with two characteristics: RX, which the central writes
//! without response, and TX, which the peripheral notifies. Each direction
//! is a byte stream cut into ATT-sized fragments; on top of it the same Noise
//! handshake and protocols run as over TCP.
//!
//! # Layout
//! - [`frame`]: the record format and its halves, [`Fragmenter`] and
//!   [`Reassembler`] (sans-IO).
//! - [`link`]: [`Link`], one end of a connection: messages, fragments and
//!   credit-based flow control (sans-IO).
//! - `stream` (feature `tokio`): `BleStream`, a link driven by a tokio task
//!   as an `AsyncRead + AsyncWrite` byte stream.
//! - [`gatt`]: UUIDs and the advertised service data (the PeerId).
//! - `central` (feature `central`, btleplug): [`BleTransport`] dials
//!   `ble/<device-id>`, [`BleDiscovery`] reports scanned peers.
//! - `peripheral` (feature `peripheral`, Linux, BlueZ over D-Bus):
//!   [`BleListener`] advertises and serves the GATT service.
//!
//! # Features
//! `central` and `peripheral` (both default) turn on `tokio`. With
//! `default-features = false` the crate is the sans-IO core alone
//! ([`frame`], [`link`], [`gatt`]): no tokio, no btleplug, no libdbus.
//! `vendored-dbus` (default) builds libdbus from source on Linux; without
//! it the roles link the system's (`libdbus-1-dev` and `pkg-config`).
//!
//! # Data flow
//! ```text
//!  app bytes ─▶ BleStream::poll_write ─▶ Link::send ─▶ Fragmenter ─▶ poll_fragment
//!                                                                      │ write / notify
//!  app bytes ◀─ BleStream::poll_read ◀─ Link::poll_message ◀─ Reassembler ◀─ handle_fragment
//! ```
//!
//! # Example: the sans-IO core
//! ```
//! use bytes::Bytes;
//! use knotwork_transport_ble::{Link, LinkConfig};
//!
//! # fn main() -> Result<(), knotwork_transport_ble::BleError> {
//! let mut a = Link::new(LinkConfig::with_mtu(185))?;
//! let mut b = Link::new(LinkConfig::with_mtu(185))?;
//! // Exchange the initial credit grants, then send a message.
//! while let Some(f) = b.poll_fragment() { a.handle_fragment(&f)?; }
//! a.send(Bytes::from_static(b"hello over ble"))?;
//! while let Some(f) = a.poll_fragment() {
//!     assert!(f.len() <= 182); // one write-without-response each
//!     b.handle_fragment(&f)?;
//! }
//! assert_eq!(b.poll_message().as_deref(), Some(&b"hello over ble"[..]));
//! # Ok(()) }
//! ```

#[cfg(feature = "central")]
mod central;
#[cfg(feature = "central")]
mod discovery;
mod error;
pub mod frame;
pub mod gatt;
pub mod link;
#[cfg(all(feature = "peripheral", target_os = "linux"))]
mod peripheral;
#[cfg(feature = "tokio")]
pub mod stream;

#[cfg(feature = "central")]
pub use central::{BleCentral, BleConfig, BleTransport, device_id};
#[cfg(feature = "central")]
pub use discovery::BleDiscovery;
#[cfg(all(
    feature = "central",
    not(all(feature = "peripheral", target_os = "linux"))
))]
pub use no_listener::BleListener;
#[cfg(all(feature = "peripheral", target_os = "linux"))]
pub use peripheral::BleListener;

pub use error::BleError;
pub use frame::{Fragmenter, Reassembler, Record};
pub use gatt::{RX_UUID, SERVICE_UUID, TX_UUID};
pub use link::{Link, LinkConfig};
#[cfg(feature = "tokio")]
pub use stream::BleStream;

#[cfg(all(
    feature = "central",
    not(all(feature = "peripheral", target_os = "linux"))
))]
mod no_listener {
    //! Without the peripheral role there is nothing to listen with.

    use async_trait::async_trait;
    use knotwork_core::{Listener, PeerAddr, TransportError};

    use crate::BleStream;

    /// Stands in for the peripheral listener on builds without it
    /// (feature `peripheral` off, or not Linux); it cannot be constructed,
    /// [`BleTransport::listen`](crate::BleTransport) returns
    /// `UnsupportedAddr` instead.
    #[derive(Debug)]
    pub enum BleListener {}

    #[async_trait]
    impl Listener for BleListener {
        type Connection = BleStream;

        fn local_addr(&self) -> PeerAddr {
            match *self {}
        }

        async fn accept(&mut self) -> Result<(BleStream, PeerAddr), TransportError> {
            match *self {}
        }
    }
}
