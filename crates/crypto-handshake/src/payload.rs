//! The identity payload that binds a Noise static key to an Ed25519 identity.
//!
//! # Format (128 bytes)
//! ```text
//! identity public key (32) | Noise static public key (32) | signature (64)
//! signature = Ed25519(identity, DOMAIN || Noise static public key)
//! ```
//! The receiver checks the signature, then that the signed static key is the
//! one the Noise handshake authenticated, and derives the [`PeerId`] from the
//! identity key.
//!
//! The signature is checked by `knotwork_core::PublicKey::verify` (AWS-LC's
//! Ed25519: cofactorless, canonical `S` only); it is on the path of every
//! first contact, on both sides.

use knotwork_core::{Keypair, PeerId, PublicKey, SIGNATURE_LEN};

use crate::known::payload_digest;
use crate::{HandshakeError, KnownPeers};

/// Domain-separation string prefixed to the signed static key.
pub const DOMAIN: &[u8] = b"knotwork-noise-static-key-v1";
/// Length of a Noise (X25519) static public key.
pub const STATIC_KEY_LEN: usize = 32;
/// Length of the identity payload.
pub const PAYLOAD_LEN: usize = 32 + STATIC_KEY_LEN + SIGNATURE_LEN;

/// Builds the payload for `identity` and the Noise static key `static_pub`.
pub(crate) fn make(identity: &Keypair, static_pub: &[u8; STATIC_KEY_LEN]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(DOMAIN.len() + STATIC_KEY_LEN);
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(static_pub);
    let sig = identity.sign(&msg);
    let mut out = Vec::with_capacity(PAYLOAD_LEN);
    out.extend_from_slice(identity.public().as_bytes());
    out.extend_from_slice(static_pub);
    out.extend_from_slice(&sig);
    out
}

/// Checks `payload` against the static key `remote_static` that the
/// handshake authenticated; returns the peer's id. With `checked`, a
/// payload found there byte for byte skips the signature check, and one
/// whose signature checks out is added to it.
pub(crate) fn verify(
    payload: &[u8],
    remote_static: &[u8],
    checked: Option<&KnownPeers>,
) -> Result<PeerId, HandshakeError> {
    if payload.len() != PAYLOAD_LEN {
        return Err(HandshakeError::BadPayload(payload.len()));
    }
    let (identity, rest) = payload.split_at(32);
    let (signed_static, sig) = rest.split_at(STATIC_KEY_LEN);
    let key =
        PublicKey::from_bytes(identity).map_err(|_| HandshakeError::BadPayload(payload.len()))?;
    let peer = key.to_peer_id();
    // (Only with a cache: a digest costs a SHA-256 of the payload.)
    let digest = checked.map(|_| payload_digest(payload));
    let seen = checked.zip(digest.as_ref());
    if !seen.is_some_and(|(c, d)| c.payload_checked(&peer, d)) {
        let mut msg = Vec::with_capacity(DOMAIN.len() + STATIC_KEY_LEN);
        msg.extend_from_slice(DOMAIN);
        msg.extend_from_slice(signed_static);
        key.verify(&msg, sig)
            .map_err(|_| HandshakeError::BadSignature)?;
        if let Some((c, d)) = seen {
            c.remember_payload(peer, *d);
        }
    }
    if signed_static != remote_static {
        return Err(HandshakeError::StaticKeyMismatch);
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_payload_gives_the_peer_id() {
        let kp = Keypair::generate().unwrap();
        let s = [7u8; 32];
        let p = make(&kp, &s);
        assert_eq!(p.len(), PAYLOAD_LEN);
        assert_eq!(verify(&p, &s, None).unwrap(), kp.peer_id());
    }

    #[test]
    fn flipped_signature_is_bad_signature() {
        let kp = Keypair::generate().unwrap();
        let s = [7u8; 32];
        let mut p = make(&kp, &s);
        p[100] ^= 1;
        assert!(matches!(
            verify(&p, &s, None),
            Err(HandshakeError::BadSignature)
        ));
    }

    /// Any flipped bit of the signature, and a signature whose `S` is not
    /// reduced (S + ℓ: the same point, a malleated encoding), is refused.
    #[test]
    fn mutated_and_non_reduced_signatures_are_refused() {
        let kp = Keypair::generate().unwrap();
        let s = [9u8; 32];
        let good = make(&kp, &s);
        assert_eq!(verify(&good, &s, None).unwrap(), kp.peer_id());
        let mut cases = Vec::new();
        for i in 64..PAYLOAD_LEN {
            let mut p = good.clone();
            p[i] ^= 0x80;
            cases.push(p);
        }
        // S + ℓ (little-endian), ℓ = 2^252 + 27742317777372353535851937790883648493.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut p = good.clone();
        let mut carry = 0u16;
        for (b, l) in p[96..].iter_mut().zip(L) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        cases.push(p);
        for p in &cases {
            assert!(matches!(
                verify(p, &s, None),
                Err(HandshakeError::BadSignature)
            ));
        }
    }

    #[test]
    fn other_static_is_mismatch() {
        let kp = Keypair::generate().unwrap();
        let p = make(&kp, &[7u8; 32]);
        assert!(matches!(
            verify(&p, &[8u8; 32], None),
            Err(HandshakeError::StaticKeyMismatch)
        ));
    }

    #[test]
    fn a_checked_payload_skips_only_the_signature_check() {
        let kp = Keypair::generate().unwrap();
        let s = [7u8; 32];
        let p = make(&kp, &s);
        let known = KnownPeers::new(4);
        assert_eq!(verify(&p, &s, Some(&known)).unwrap(), kp.peer_id());
        assert!(known.payload_checked(&kp.peer_id(), &payload_digest(&p)));
        // The same bytes again: still bound to the handshake's static key.
        assert!(matches!(
            verify(&p, &[8u8; 32], Some(&known)),
            Err(HandshakeError::StaticKeyMismatch)
        ));
        // Any other bytes for that peer are checked in full.
        let mut forged = p.clone();
        forged[100] ^= 1;
        assert!(matches!(
            verify(&forged, &s, Some(&known)),
            Err(HandshakeError::BadSignature)
        ));
        assert!(!known.payload_checked(&kp.peer_id(), &payload_digest(&forged)));
    }

    #[test]
    fn checked_payloads_are_bounded() {
        let known = KnownPeers::new(2);
        let s = [7u8; 32];
        let peers: Vec<Keypair> = (0..3).map(|_| Keypair::generate().unwrap()).collect();
        for kp in &peers {
            verify(&make(kp, &s), &s, Some(&known)).unwrap();
        }
        let checked =
            |kp: &Keypair| known.payload_checked(&kp.peer_id(), &payload_digest(&make(kp, &s)));
        assert!(!checked(&peers[0]));
        assert!(checked(&peers[2]));
    }

    #[test]
    fn short_payload_is_named() {
        assert!(matches!(
            verify(&[0u8; 5], &[0u8; 32], None),
            Err(HandshakeError::BadPayload(5))
        ));
    }
}
