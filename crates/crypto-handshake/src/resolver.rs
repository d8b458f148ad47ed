//! The crypto snow runs the handshake with: ring for the hash, the
//! handshake cipher and the random numbers, and X25519 from
//! curve25519-dalek with its precomputed base-point tables.
//!
//! Two things make it cheaper than snow's own resolvers:
//! - a new key pair's public half comes from the precomputed tables (a
//!   fixed-base multiplication, about half the cost of the variable-base one
//!   without them);
//! - the node's static key pair is computed once per
//!   [`StaticIdentity`](crate::StaticIdentity), not once per handshake: snow derives the
//!   public half every time a private key is set, so the resolver hands it
//!   the public half it already knows.

use curve25519_dalek::montgomery::MontgomeryPoint;
use ring::rand::{SecureRandom, SystemRandom};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use crate::HandshakeError;
use crate::payload::STATIC_KEY_LEN;

/// An X25519 key pair: private scalar bytes and the public u-coordinate.
#[derive(Clone, Copy)]
pub(crate) struct KeyPair {
    pub(crate) private: [u8; STATIC_KEY_LEN],
    pub(crate) public: [u8; STATIC_KEY_LEN],
}

impl KeyPair {
    /// A fresh random key pair.
    pub(crate) fn generate() -> Result<Self, HandshakeError> {
        let mut private = [0u8; STATIC_KEY_LEN];
        SystemRandom::new()
            .fill(&mut private)
            .map_err(|_| HandshakeError::Noise("no random numbers".into()))?;
        Ok(Self::from_private(private))
    }

    /// The key pair of `private` (clamped as X25519 does).
    pub(crate) fn from_private(private: [u8; STATIC_KEY_LEN]) -> Self {
        Self {
            private,
            public: MontgomeryPoint::mul_base_clamped(private).to_bytes(),
        }
    }
}

/// Constant-time equality of two keys.
fn same_key(a: &[u8], b: &[u8; STATIC_KEY_LEN]) -> bool {
    a.len() == STATIC_KEY_LEN && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The snow resolver; `known` is the static key pair whose public half
/// need not be derived again.
pub(crate) struct Resolver {
    known: Option<KeyPair>,
}

impl Resolver {
    /// A resolver that knows the static key pair `known`.
    pub(crate) fn new(known: Option<KeyPair>) -> Self {
        Self { known }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        RingResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                pair: KeyPair {
                    private: [0; STATIC_KEY_LEN],
                    public: [0; STATIC_KEY_LEN],
                },
                known: self.known,
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        RingResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        RingResolver.resolve_cipher(choice)
    }
}

/// X25519 for snow.
struct X25519 {
    pair: KeyPair,
    known: Option<KeyPair>,
}

impl Drop for X25519 {
    fn drop(&mut self) {
        self.pair.private = [0; STATIC_KEY_LEN];
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        STATIC_KEY_LEN
    }

    fn priv_len(&self) -> usize {
        STATIC_KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        self.pair = match self.known {
            Some(known) if same_key(privkey, &known.private) => known,
            _ => {
                // snow hands over exactly `priv_len` bytes.
                let mut private = [0u8; STATIC_KEY_LEN];
                for (d, s) in private.iter_mut().zip(privkey) {
                    *d = *s;
                }
                KeyPair::from_private(private)
            }
        };
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = [0u8; STATIC_KEY_LEN];
        rng.try_fill_bytes(&mut private)?;
        self.pair = KeyPair::from_private(private);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.pair.public
    }

    fn privkey(&self) -> &[u8] {
        &self.pair.private
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let point: [u8; STATIC_KEY_LEN] = pubkey
            .get(..STATIC_KEY_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = MontgomeryPoint(point).mul_clamped(self.pair.private);
        let dst = out.get_mut(..STATIC_KEY_LEN).ok_or(snow::Error::Dh)?;
        dst.copy_from_slice(shared.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748 section 6.1: Alice's and Bob's keys and their shared secret.
    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    const ALICE_PRIV: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUB: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    const BOB_PRIV: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
    const BOB_PUB: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    const SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    fn dh_of(private: &str) -> Box<dyn Dh> {
        let mut dh = Resolver::new(None)
            .resolve_dh(&DHChoice::Curve25519)
            .unwrap();
        dh.set(&hex(private));
        dh
    }

    #[test]
    fn rfc7748_vectors() {
        let (a, b) = (dh_of(ALICE_PRIV), dh_of(BOB_PRIV));
        assert_eq!(a.pubkey(), hex(ALICE_PUB));
        assert_eq!(b.pubkey(), hex(BOB_PUB));
        let (mut ab, mut ba) = ([0u8; 32], [0u8; 32]);
        a.dh(&hex(BOB_PUB), &mut ab).unwrap();
        b.dh(&hex(ALICE_PUB), &mut ba).unwrap();
        assert_eq!(ab, hex(SHARED));
        assert_eq!(ba, hex(SHARED));
    }

    #[test]
    fn the_known_static_key_is_not_derived_again() {
        // A deliberately wrong public half shows that `set` took the memo.
        let known = KeyPair {
            private: hex(ALICE_PRIV),
            public: [1; 32],
        };
        let resolver = Resolver::new(Some(known));
        let mut dh = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        dh.set(&hex(ALICE_PRIV));
        assert_eq!(dh.pubkey(), [1; 32]);
        // Any other key is derived.
        dh.set(&hex(BOB_PRIV));
        assert_eq!(dh.pubkey(), hex(BOB_PUB));
    }

    #[test]
    fn generated_pairs_agree() {
        let (a, b) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        assert_eq!(a.public, KeyPair::from_private(a.private).public);
        let resolver = Resolver::new(None);
        let mut da = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        let mut db = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        da.set(&a.private);
        db.set(&b.private);
        let (mut ab, mut ba) = ([0u8; 32], [0u8; 32]);
        da.dh(&b.public, &mut ab).unwrap();
        db.dh(&a.public, &mut ba).unwrap();
        assert_eq!(ab, ba);
        assert!(matches!(da.dh(&[0u8; 31], &mut ab), Err(snow::Error::Dh)));
    }

    #[test]
    fn only_x25519_is_resolved() {
        assert!(
            Resolver::new(None)
                .resolve_dh(&DHChoice::Curve448)
                .is_none()
        );
    }
}
