//! The crypto snow runs the handshake with, all from AWS-LC: SHA-256 for
//! the hash, HMAC and HKDF, the handshake's AEAD, random numbers, and
//! X25519. snow is built without any crypto of its own.
//!
//! Three things make it cheaper than snow's own resolvers:
//! - X25519 is AWS-LC's (assembly on x86_64 and aarch64), 2.4× the speed of
//!   curve25519-dalek's ladder here (23.6 vs 57.2 µs per DH in `cargo bench
//!   -p knotwork-benches --bench handshake -- primitives`, on CPU 1); ring
//!   has one as well, but only for single-use ephemeral
//!   keys, and Noise uses each key in two DHs and the static key in every
//!   handshake;
//! - the node's static key pair, AWS-LC key object included, is computed
//!   once per [`StaticIdentity`](crate::StaticIdentity), not once per
//!   handshake: snow sets the private key on every handshake, so the
//!   resolver hands it the pair it already has;
//! - a DH whose result is all zeros (the peer sent a low-order point) fails
//!   instead of feeding a known secret to the key schedule.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::aead::{Aad, LessSafeKey};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};

use crate::cipher::{KEY_LEN, TAG_LEN, aead_key, nonce};
use crate::payload::STATIC_KEY_LEN;
use crate::{HandshakeError, Suite};

/// An X25519 key pair: private scalar bytes, the public u-coordinate and
/// AWS-LC's key object for the DH.
#[derive(Clone)]
pub(crate) struct KeyPair {
    pub(crate) private: [u8; STATIC_KEY_LEN],
    pub(crate) public: [u8; STATIC_KEY_LEN],
    key: Arc<PrivateKey>,
}

impl KeyPair {
    /// A fresh random key pair.
    pub(crate) fn generate() -> Result<Self, HandshakeError> {
        let mut private = [0u8; STATIC_KEY_LEN];
        SystemRandom::new()
            .fill(&mut private)
            .map_err(|_| HandshakeError::Noise("no random numbers".into()))?;
        Self::from_private(private)
    }

    /// The key pair of `private` (clamped as X25519 does).
    pub(crate) fn from_private(private: [u8; STATIC_KEY_LEN]) -> Result<Self, HandshakeError> {
        let failed = |what: &str| HandshakeError::Noise(format!("x25519 {what}"));
        let key = PrivateKey::from_private_key(&agreement::X25519, &private)
            .map_err(|_| failed("private key refused"))?;
        let public = key
            .compute_public_key()
            .map_err(|_| failed("public key"))?
            .as_ref()
            .try_into()
            .map_err(|_| failed("public key length"))?;
        Ok(Self {
            private,
            public,
            key: Arc::new(key),
        })
    }
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        self.private = [0; STATIC_KEY_LEN];
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
        Some(Box::new(Rng(SystemRandom::new())))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                pair: None,
                known: self.known.clone(),
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        match choice {
            HashChoice::SHA256 => Some(Box::new(Sha256(sha256()))),
            _ => None,
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        let suite = match choice {
            CipherChoice::ChaChaPoly => Suite::ChaChaPoly,
            CipherChoice::AESGCM => Suite::AesGcm,
        };
        Some(Box::new(HandshakeCipher::new(suite)))
    }
}

/// The system's random numbers, for snow's ephemeral keys.
struct Rng(SystemRandom);

impl Random for Rng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest).map_err(|_| snow::Error::Rng)
    }
}

fn sha256() -> digest::Context {
    digest::Context::new(&digest::SHA256)
}

/// SHA-256 for snow; its HMAC and HKDF are built on these four calls.
struct Sha256(digest::Context);

impl Hash for Sha256 {
    fn name(&self) -> &'static str {
        "SHA256"
    }

    fn block_len(&self) -> usize {
        64
    }

    fn hash_len(&self) -> usize {
        32
    }

    fn reset(&mut self) {
        self.0 = sha256();
    }

    fn input(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn result(&mut self, out: &mut [u8]) {
        let digest = std::mem::replace(&mut self.0, sha256()).finish();
        for (d, s) in out.iter_mut().zip(digest.as_ref()) {
            *d = *s;
        }
    }
}

/// The AEAD of the handshake messages, for snow (the transport messages
/// go through [`CipherState`](crate::CipherState)). Without a key (none
/// set yet, which snow never encrypts with) nothing seals or opens.
///
/// The AEAD key is made from the key snow set when it is first used: snow
/// sets keys it never uses here (its own transport keys at the end of the
/// handshake, which we derive again for our cipher states), and making one
/// costs AWS-LC an allocation, a key schedule and, for AES-GCM, the GHASH
/// tables.
struct HandshakeCipher {
    suite: Suite,
    key: Option<[u8; KEY_LEN]>,
    /// `key` made into an AEAD key, on first use (`None` inside: refused).
    aead: OnceLock<Option<LessSafeKey>>,
}

impl HandshakeCipher {
    fn new(suite: Suite) -> Self {
        Self {
            suite,
            key: None,
            aead: OnceLock::new(),
        }
    }

    /// The AEAD key of the key set last, if one is set.
    fn aead(&self) -> Option<&LessSafeKey> {
        let key = self.key.as_ref()?;
        self.aead
            .get_or_init(|| aead_key(self.suite, key).ok())
            .as_ref()
    }
}

impl Drop for HandshakeCipher {
    fn drop(&mut self) {
        // The key bytes wait here for their first use: clear them, as
        // `KeyPair` clears its private key (AWS-LC cleanses its own copy).
        if let Some(key) = &mut self.key {
            *key = [0; KEY_LEN];
        }
    }
}

impl Cipher for HandshakeCipher {
    fn name(&self) -> &'static str {
        match self.suite {
            Suite::ChaChaPoly => "ChaChaPoly",
            Suite::AesGcm => "AESGCM",
        }
    }

    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.key = Some(*key);
        self.aead = OnceLock::new();
    }

    /// `out` holds the ciphertext and the tag; returns their length (0 if
    /// `out` is too short, which snow never passes).
    fn encrypt(&self, n: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let len = plaintext.len();
        let (Some(key), Some(out)) = (self.aead(), out.get_mut(..len + TAG_LEN)) else {
            return 0;
        };
        let (text, tag_out) = out.split_at_mut(len);
        text.copy_from_slice(plaintext);
        match key.seal_in_place_separate_tag(nonce(self.suite, n), Aad::from(authtext), text) {
            Ok(tag) => {
                tag_out.copy_from_slice(tag.as_ref());
                len + TAG_LEN
            }
            Err(_) => 0,
        }
    }

    fn decrypt(
        &self,
        n: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let key = self.aead().ok_or(snow::Error::Decrypt)?;
        let len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let (text, tag) = ciphertext.split_at(len);
        let out = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        out.copy_from_slice(text);
        key.open_in_place_separate_tag(nonce(self.suite, n), Aad::from(authtext), tag, out)
            .map_err(|_| snow::Error::Decrypt)?;
        Ok(len)
    }
}

/// X25519 for snow; `pair` is `None` until a key is set or generated.
struct X25519 {
    pair: Option<KeyPair>,
    known: Option<KeyPair>,
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
        self.pair = match &self.known {
            Some(known) if same_key(privkey, &known.private) => Some(known.clone()),
            _ => {
                // snow hands over exactly `priv_len` bytes.
                let mut private = [0u8; STATIC_KEY_LEN];
                for (d, s) in private.iter_mut().zip(privkey) {
                    *d = *s;
                }
                // AWS-LC takes any 32 bytes; on a failure no key is set and
                // every DH with it fails.
                KeyPair::from_private(private).ok()
            }
        };
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = [0u8; STATIC_KEY_LEN];
        rng.try_fill_bytes(&mut private)?;
        self.pair = Some(KeyPair::from_private(private).map_err(|_| snow::Error::Dh)?);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        self.pair.as_ref().map_or(&[], |p| &p.public)
    }

    fn privkey(&self) -> &[u8] {
        self.pair.as_ref().map_or(&[], |p| &p.private)
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let pair = self.pair.as_ref().ok_or(snow::Error::Dh)?;
        let peer = pubkey.get(..STATIC_KEY_LEN).ok_or(snow::Error::Dh)?;
        let dst = out.get_mut(..STATIC_KEY_LEN).ok_or(snow::Error::Dh)?;
        agreement::agree(
            &pair.key,
            UnparsedPublicKey::new(&agreement::X25519, peer),
            snow::Error::Dh,
            |shared| {
                if shared.len() != STATIC_KEY_LEN {
                    return Err(snow::Error::Dh);
                }
                dst.copy_from_slice(shared);
                Ok(())
            },
        )
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
        let mut known = KeyPair::from_private(hex(ALICE_PRIV)).unwrap();
        known.public = [1; 32];
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
        assert_eq!(a.public, KeyPair::from_private(a.private).unwrap().public);
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
    fn a_low_order_point_fails_the_dh() {
        let dh = dh_of(ALICE_PRIV);
        let mut out = [0u8; 32];
        // u = 0 and u = 1 are of small order: the shared secret is all zeros.
        let mut one = [0u8; 32];
        one[0] = 1;
        for point in [[0u8; 32], one] {
            assert!(matches!(dh.dh(&point, &mut out), Err(snow::Error::Dh)));
        }
    }

    #[test]
    fn no_key_set_means_no_dh() {
        let dh = Resolver::new(None)
            .resolve_dh(&DHChoice::Curve25519)
            .unwrap();
        assert!(dh.pubkey().is_empty());
        let mut out = [0u8; 32];
        assert!(matches!(
            dh.dh(&hex(BOB_PUB), &mut out),
            Err(snow::Error::Dh)
        ));
    }

    #[test]
    fn only_x25519_is_resolved() {
        assert!(
            Resolver::new(None)
                .resolve_dh(&DHChoice::Curve448)
                .is_none()
        );
    }

    fn cipher(suite: Suite) -> Box<dyn Cipher> {
        let choice = match suite {
            Suite::ChaChaPoly => CipherChoice::ChaChaPoly,
            Suite::AesGcm => CipherChoice::AESGCM,
        };
        Resolver::new(None).resolve_cipher(&choice).unwrap()
    }

    /// snow's handshake cipher and the transport's `CipherState` are the
    /// same AEAD with the same Noise nonces: equal bytes for equal inputs.
    #[test]
    fn the_handshake_cipher_seals_as_the_transport_does() {
        const TEXT: &[u8; 20] = b"twenty bytes of text";
        for suite in Suite::ALL {
            let mut hs = cipher(suite);
            hs.set(&[5; KEY_LEN]);
            let mut sealed = [0u8; 20 + TAG_LEN];
            assert_eq!(hs.encrypt(3, &[], TEXT, &mut sealed), sealed.len());
            let mut transport = crate::CipherState::new(suite, &[5; KEY_LEN], 0).unwrap();
            let mut buf = TEXT.to_vec();
            for _ in 0..3 {
                transport.seal_in_place(&mut [0u8; 1]).unwrap();
            }
            let tag = transport.seal_in_place(&mut buf).unwrap();
            assert_eq!(&sealed[..20], &buf[..]);
            assert_eq!(&sealed[20..], &tag);
            let mut plain = [0u8; 20];
            assert_eq!(hs.decrypt(3, &[], &sealed, &mut plain), Ok(20));
            assert_eq!(&plain, TEXT);
        }
    }

    #[test]
    fn altered_short_or_unkeyed_messages_do_not_open() {
        let mut hs = cipher(Suite::AesGcm);
        let mut sealed = [0u8; 4 + TAG_LEN];
        let mut plain = [0u8; 4];
        // No key yet: nothing is sealed or opened.
        assert_eq!(hs.encrypt(0, &[], b"abcd", &mut sealed), 0);
        assert_eq!(
            hs.decrypt(0, &[], &sealed, &mut plain),
            Err(snow::Error::Decrypt)
        );
        hs.set(&[1; KEY_LEN]);
        assert_eq!(hs.encrypt(0, b"ad", b"abcd", &mut sealed), sealed.len());
        for bad in [&sealed[..TAG_LEN - 1], &sealed[..]] {
            assert_eq!(
                hs.decrypt(0, &[], bad, &mut plain),
                Err(snow::Error::Decrypt)
            );
        }
        assert_eq!(hs.decrypt(0, b"ad", &sealed, &mut plain), Ok(4));
    }

    /// FIPS 180-2 appendix B.1, fed in two pieces, then again after a reset.
    #[test]
    fn sha256_gives_the_standard_digest() {
        let mut h = Resolver::new(None)
            .resolve_hash(&HashChoice::SHA256)
            .unwrap();
        let expected = hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        for _ in 0..2 {
            h.reset();
            h.input(b"a");
            h.input(b"bc");
            let mut out = [0u8; 32];
            h.result(&mut out);
            assert_eq!(out, expected);
        }
        assert!(
            Resolver::new(None)
                .resolve_hash(&HashChoice::Blake2s)
                .is_none()
        );
    }
}
