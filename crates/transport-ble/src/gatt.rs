//! The knotwork GATT service: UUIDs and the advertisement's service data.

use knotwork_core::PeerId;
use uuid::Uuid;

use crate::BleError;

/// The knotwork GATT service, advertised by every knotwork peripheral.
pub const SERVICE_UUID: Uuid = Uuid::from_u128(0x15e05bca_7d27_4253_86a1_759d926a6961);
/// RX: the central writes here (write-without-response); the peripheral reads.
pub const RX_UUID: Uuid = Uuid::from_u128(0x15e05bcb_7d27_4253_86a1_759d926a6961);
/// TX: the peripheral notifies here; the central subscribes.
pub const TX_UUID: Uuid = Uuid::from_u128(0x15e05bcc_7d27_4253_86a1_759d926a6961);

/// Length of the service data: the 32-byte Ed25519 public key (= PeerId).
pub const SERVICE_DATA_LEN: usize = 32;

/// The service data a peripheral advertises under [`SERVICE_UUID`].
///
/// 32 bytes plus the 128-bit UUID do not fit a legacy 31-byte advertisement;
/// BlueZ sends them with extended advertising (Bluetooth 5).
pub fn service_data(peer: &PeerId) -> Vec<u8> {
    peer.as_bytes().to_vec()
}

/// Reads a PeerId from advertised service data.
pub fn peer_from_service_data(data: &[u8]) -> Result<PeerId, BleError> {
    if data.len() != SERVICE_DATA_LEN {
        return Err(BleError::BadServiceData);
    }
    PeerId::from_bytes(data).map_err(|_| BleError::BadServiceData)
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    #[test]
    fn service_data_round_trip() {
        let id = Keypair::generate().unwrap().peer_id();
        assert_eq!(peer_from_service_data(&service_data(&id)).unwrap(), id);
    }

    #[test]
    fn bad_service_data() {
        assert_eq!(
            peer_from_service_data(&[1, 2, 3]),
            Err(BleError::BadServiceData)
        );
    }
}
