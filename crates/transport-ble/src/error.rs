//! [`BleError`]: every way the BLE transport fails, grouped by fault.

/// Errors of the BLE transport.
///
/// Grouped by fault: the remote peer broke the link protocol (its connection
/// is closed), the local caller misused the API, or the Bluetooth stack
/// (btleplug, BlueZ over D-Bus) failed. Once a [`Link`](crate::Link) has
/// failed with a peer error it keeps returning that error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BleError {
    // ---- the peer misbehaved ----
    /// A data record announced a message longer than the receiver accepts.
    #[error("peer message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Announced length.
        len: u64,
        /// Our limit.
        max: u32,
    },
    /// A data record is longer than the credit we granted.
    #[error("peer sent {len} bytes with only {available} credits granted")]
    CreditViolation {
        /// Announced length.
        len: u32,
        /// Credit the peer still had.
        available: u32,
    },
    /// A credit grant pushed the peer's total credit past `u32::MAX`.
    #[error("peer credit grant overflows")]
    CreditOverflow,
    /// A data record of zero bytes.
    #[error("peer sent an empty message")]
    EmptyMessage,
    /// A record tag this version does not know.
    #[error("unknown record tag {0:#04x}")]
    UnknownRecord(u8),
    /// A length or credit varint longer than five bytes or above `u32::MAX`.
    #[error("malformed varint")]
    BadVarint,
    /// A record after the peer closed its side.
    #[error("peer sent data after closing")]
    DataAfterClose,

    // ---- the peer is not a knotwork node ----
    /// The device's advertisement has no knotwork service data.
    #[error("device does not advertise the knotwork service")]
    NotKnotwork,
    /// The service data is not a 32-byte Ed25519 public key.
    #[error("bad knotwork service data")]
    BadServiceData,
    /// The device lacks the knotwork RX or TX characteristic.
    #[error("missing gatt characteristic {0}")]
    MissingCharacteristic(&'static str),

    // ---- the local caller ----
    /// An ATT MTU outside 23..=517.
    #[error("att mtu {0} outside 23..=517")]
    InvalidMtu(u16),
    /// A configuration value out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
    /// A message longer than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    SendTooLarge {
        /// Length given.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// A message longer than the credit the peer granted.
    #[error("message of {len} bytes exceeds the {available} bytes of credit")]
    NoCredit {
        /// Length given.
        len: usize,
        /// Credit left.
        available: u32,
    },
    /// A send after [`Link::close`](crate::Link::close).
    #[error("link closed")]
    Closed,

    // ---- the bluetooth stack ----
    /// No Bluetooth adapter was found.
    #[error("no bluetooth adapter")]
    NoAdapter,
    /// No knotwork device with that id was seen in the scan.
    #[error("device {0} not found")]
    DeviceNotFound(String),
    /// The BLE central (btleplug) failed.
    #[error("central: {0}")]
    Central(String),
    /// BlueZ over D-Bus failed (peripheral role).
    #[error("d-bus: {0}")]
    DBus(String),
}

impl BleError {
    /// Whether the remote peer caused this error (its connection is closed).
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            BleError::MessageTooLarge { .. }
                | BleError::CreditViolation { .. }
                | BleError::CreditOverflow
                | BleError::EmptyMessage
                | BleError::UnknownRecord(_)
                | BleError::BadVarint
                | BleError::DataAfterClose
                | BleError::NotKnotwork
                | BleError::BadServiceData
                | BleError::MissingCharacteristic(_)
        )
    }
}

impl From<BleError> for std::io::Error {
    fn from(e: BleError) -> Self {
        let kind = if e.is_peer_fault() {
            std::io::ErrorKind::InvalidData
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, e)
    }
}
