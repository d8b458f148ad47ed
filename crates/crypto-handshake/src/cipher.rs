//! [`CipherState`]: one direction of a Noise transport, encrypting in place
//! with AWS-LC.
//!
//! snow's `TransportState` encrypts from one buffer into another; for the
//! stream we want one AEAD call over the bytes where they already lie, so
//! the handshake hands the two split keys to this small Noise `CipherState`
//! (Noise spec section 5.1): a 256-bit key, a 64-bit counter nonce and the
//! `REKEY` function of section 4.2.
//!
//! Nonces: 32 zero bits then the counter, little-endian for ChaChaPoly and
//! big-endian for AESGCM, as the Noise spec defines them.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::{HandshakeError, Suite};

/// Length of the AEAD authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of a cipher key.
pub const KEY_LEN: usize = 32;

/// One direction of a Noise transport: key, nonce counter, rekey schedule.
pub struct CipherState {
    key: LessSafeKey,
    suite: Suite,
    nonce: u64,
    rekey_interval: u64,
}

impl std::fmt::Debug for CipherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CipherState")
            .field("suite", &self.suite)
            .field("nonce", &self.nonce)
            .field("rekey_interval", &self.rekey_interval)
            .finish_non_exhaustive()
    }
}

/// The AEAD key of `suite` (the handshake's snow cipher uses it too).
pub(crate) fn aead_key(suite: Suite, key: &[u8; KEY_LEN]) -> Result<LessSafeKey, HandshakeError> {
    let alg = match suite {
        Suite::ChaChaPoly => &aead::CHACHA20_POLY1305,
        Suite::AesGcm => &aead::AES_256_GCM,
    };
    UnboundKey::new(alg, key)
        .map(LessSafeKey::new)
        .map_err(|_| HandshakeError::Noise("invalid cipher key".into()))
}

/// Noise nonce `n` of `suite`: 32 zero bits, then the counter.
pub(crate) fn nonce(suite: Suite, n: u64) -> Nonce {
    let mut bytes = [0u8; aead::NONCE_LEN];
    let counter = match suite {
        Suite::ChaChaPoly => n.to_le_bytes(),
        Suite::AesGcm => n.to_be_bytes(),
    };
    for (dst, src) in bytes.iter_mut().skip(4).zip(counter) {
        *dst = src;
    }
    Nonce::assume_unique_for_key(bytes)
}

impl CipherState {
    /// A cipher state for `suite` with `key`, nonce 0, rekeying (Noise
    /// `REKEY`) after every `rekey_interval` messages; 0 never rekeys.
    pub fn new(
        suite: Suite,
        key: &[u8; KEY_LEN],
        rekey_interval: u64,
    ) -> Result<Self, HandshakeError> {
        Ok(Self {
            key: aead_key(suite, key)?,
            suite,
            nonce: 0,
            rekey_interval,
        })
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Rekeys after every `interval` messages from now on (counted from the
    /// first message of the session); 0 never rekeys.
    pub fn set_rekey_interval(&mut self, interval: u64) {
        self.rekey_interval = interval;
    }

    /// The nonce the next message will use (= messages processed so far).
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    fn next_nonce(&self) -> Result<Nonce, HandshakeError> {
        // 2^64 - 1 is reserved for REKEY.
        if self.nonce == u64::MAX {
            return Err(HandshakeError::NonceExhausted);
        }
        Ok(nonce(self.suite, self.nonce))
    }

    fn advance(&mut self) -> Result<(), HandshakeError> {
        self.nonce = self.nonce.saturating_add(1);
        if self.rekey_interval != 0 && self.nonce.is_multiple_of(self.rekey_interval) {
            self.rekey()?;
        }
        Ok(())
    }

    /// Noise `REKEY`: the new key is the first 32 bytes of encrypting 32
    /// zero bytes with nonce 2^64 - 1 and no associated data. Both sides
    /// call it after the same message, so it needs no signalling.
    pub fn rekey(&mut self) -> Result<(), HandshakeError> {
        let mut next = [0u8; KEY_LEN];
        // The tag is not part of the new key.
        let _tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.suite, u64::MAX), Aad::empty(), &mut next)
            .map_err(|_| HandshakeError::Noise("rekey failed".into()))?;
        self.key = aead_key(self.suite, &next)?;
        Ok(())
    }

    /// Encrypts `buf` in place and returns the tag to append after it.
    pub fn seal_in_place(&mut self, buf: &mut [u8]) -> Result<[u8; TAG_LEN], HandshakeError> {
        let nonce = self.next_nonce()?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), buf)
            .map_err(|_| HandshakeError::Noise("message too long".into()))?;
        self.advance()?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `msg` (ciphertext followed by the tag) in place and returns
    /// the plaintext part; [`HandshakeError::Decrypt`] if it does not
    /// authenticate, [`HandshakeError::FrameTooShort`] if it is shorter than
    /// a tag.
    pub fn open_in_place<'a>(&mut self, msg: &'a mut [u8]) -> Result<&'a mut [u8], HandshakeError> {
        if msg.len() < TAG_LEN {
            return Err(HandshakeError::FrameTooShort(msg.len()));
        }
        let nonce = self.next_nonce()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), msg)
            .map_err(|_| HandshakeError::Decrypt)?;
        self.advance()?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(suite: Suite, interval: u64) -> (CipherState, CipherState) {
        let k = [3u8; KEY_LEN];
        (
            CipherState::new(suite, &k, interval).unwrap(),
            CipherState::new(suite, &k, interval).unwrap(),
        )
    }

    #[test]
    fn seal_open_round_trip_across_rekeys() {
        for suite in Suite::ALL {
            let (mut tx, mut rx) = pair(suite, 3);
            for i in 0..10u8 {
                let mut msg = vec![i; 40];
                let tag = tx.seal_in_place(&mut msg).unwrap();
                assert_ne!(msg, vec![i; 40]);
                msg.extend_from_slice(&tag);
                assert_eq!(rx.open_in_place(&mut msg).unwrap(), &vec![i; 40][..]);
            }
            assert_eq!(rx.nonce(), 10);
        }
    }

    #[test]
    fn rekey_changes_the_key() {
        let (mut a, mut b) = pair(Suite::ChaChaPoly, 0);
        a.rekey().unwrap();
        let mut msg = b"hi".to_vec();
        let tag = a.seal_in_place(&mut msg).unwrap();
        msg.extend_from_slice(&tag);
        assert!(matches!(
            b.open_in_place(&mut msg),
            Err(HandshakeError::Decrypt)
        ));
    }

    #[test]
    fn short_frame_is_named() {
        let (_, mut rx) = pair(Suite::AesGcm, 0);
        assert!(matches!(
            rx.open_in_place(&mut [0u8; 5]),
            Err(HandshakeError::FrameTooShort(5))
        ));
    }
}
