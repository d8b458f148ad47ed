//! The 256-bit key space: [`Key`], XOR [`Distance`] and bucket indices.
//!
//! Peers and records live in the same space. A peer's key is the SHA-256 of
//! its [`PeerId`] bytes; a record's key is the SHA-256 of the record key bytes
//! the application chose. Hashing spreads ids evenly, so an attacker who picks
//! a key pair cannot pick where it lands without grinding SHA-256.

use std::fmt;

use aws_lc_rs::digest;
use knotwork_core::PeerId;

/// Number of bits in a [`Key`], and so the number of buckets.
pub const KEY_BITS: usize = 256;

/// A point in the 256-bit key space.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

/// The XOR distance between two keys; compares as a big-endian 256-bit number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance([u8; 32]);

impl Key {
    /// The key of a peer: SHA-256 of its id bytes.
    pub fn from_peer_id(peer: &PeerId) -> Self {
        Self::hash(peer.as_bytes())
    }

    /// The key of a record or provider key: SHA-256 of `bytes`.
    pub fn hash(bytes: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// A key from its raw 32 bytes (already a hash).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut out = [0u8; 32];
        for ((o, a), b) in out.iter_mut().zip(self.0.iter()).zip(other.0.iter()) {
            *o = a ^ b;
        }
        Distance(out)
    }

    /// The bucket `other` falls in, seen from `self`: the number of leading
    /// bits the two keys share (0 = the far half of the space, 255 = the
    /// closest possible). `None` when the keys are equal.
    pub fn bucket_index(&self, other: &Key) -> Option<usize> {
        let lz = self.distance(other).leading_zeros();
        (lz < KEY_BITS).then_some(lz)
    }

    /// A key in bucket `index` of `self` (shares exactly `index` leading
    /// bits), with the lower bits taken from `seed`. Used to pick refresh
    /// targets without a random number generator in the core.
    pub fn in_bucket(&self, index: usize, seed: &[u8]) -> Key {
        let index = index.min(KEY_BITS - 1);
        let mut buf = Vec::with_capacity(32 + 8 + seed.len());
        buf.extend_from_slice(&self.0);
        buf.extend_from_slice(&(index as u64).to_be_bytes());
        buf.extend_from_slice(seed);
        let noise = Key::hash(&buf);
        let mut out = [0u8; 32];
        for (bit_byte, (o, (mine, n))) in out
            .iter_mut()
            .zip(self.0.iter().zip(noise.0.iter()))
            .enumerate()
        {
            let first_bit = bit_byte * 8;
            let mut byte = 0u8;
            for bit in 0..8 {
                let pos = first_bit + bit;
                let mask = 0x80u8 >> bit;
                let value = if pos < index {
                    mine & mask
                } else if pos == index {
                    !mine & mask
                } else {
                    n & mask
                };
                byte |= value;
            }
            *o = byte;
        }
        Key(out)
    }
}

impl Distance {
    /// Number of leading zero bits (256 for distance zero).
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros() as usize;
            }
        }
        n
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(")?;
        for b in self.0.iter().take(6) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_index_is_shared_prefix_length() {
        let a = Key::from_bytes([0; 32]);
        let mut b = [0u8; 32];
        b[0] = 0x80;
        assert_eq!(a.bucket_index(&Key::from_bytes(b)), Some(0));
        b[0] = 0x01;
        assert_eq!(a.bucket_index(&Key::from_bytes(b)), Some(7));
        let mut c = [0u8; 32];
        c[31] = 1;
        assert_eq!(a.bucket_index(&Key::from_bytes(c)), Some(255));
        assert_eq!(a.bucket_index(&a), None);
    }

    proptest! {
        #[test]
        fn in_bucket_lands_in_that_bucket(me in any::<[u8; 32]>(), idx in 0usize..256, seed in any::<u64>()) {
            let me = Key::from_bytes(me);
            let k = me.in_bucket(idx, &seed.to_be_bytes());
            prop_assert_eq!(me.bucket_index(&k), Some(idx));
        }

        #[test]
        fn distance_is_symmetric_and_zero_to_self(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (a, b) = (Key::from_bytes(a), Key::from_bytes(b));
            prop_assert_eq!(a.distance(&b), b.distance(&a));
            prop_assert_eq!(a.distance(&a).leading_zeros(), KEY_BITS);
        }
    }
}
