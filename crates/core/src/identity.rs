//! Ed25519 identity: [`Keypair`], [`PublicKey`] and [`PeerId`].
//!
//! A [`PeerId`] is the peer's Ed25519 public key itself (32 bytes), so any
//! signature made by a peer can be checked from its id alone. Its text form is
//! base58 (Bitcoin alphabet), at most 44 characters (43 or 44 for all but a
//! few keys), easy to copy and paste.
//!
//! A [`Keypair`] comes from the system's random numbers
//! ([`Keypair::generate`]), from a key file or its PKCS#8 bytes
//! ([`Keypair::load`], [`Keypair::from_pkcs8`]), or from a 32-byte Ed25519
//! seed ([`Keypair::from_seed`]) where identities must be reproducible.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _};

/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an Ed25519 seed (the secret key of RFC 8032) in bytes.
pub const SEED_LEN: usize = 32;
/// Longest text form of a [`PeerId`]: 32 bytes in base58 take at most 44
/// characters (in postcard, a `PeerId` therefore takes at most 45 bytes).
pub const MAX_PEER_ID_TEXT_LEN: usize = 44;

/// The PKCS#8 v2 document (RFC 5958, RFC 8410) of an Ed25519 key pair is
/// this prefix, the 32-byte seed, [`PKCS8_MIDDLE`] and the 32-byte public
/// key: 83 bytes, the layout `ring` generates and reads.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x51, // SEQUENCE, 81 bytes
    0x02, 0x01, 0x01, // INTEGER 1: version 2 (with the public key)
    0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, // AlgorithmIdentifier: OID 1.3.101.112, Ed25519
    0x04, 0x22, 0x04, 0x20, // OCTET STRING { OCTET STRING, 32 bytes: the seed }
];
/// See [`PKCS8_PREFIX`].
const PKCS8_MIDDLE: [u8; 3] = [
    0x81, 0x21, 0x00, // [1] IMPLICIT BIT STRING, 0 unused bits: the public key
];

/// Errors of identity handling: key files, signatures and `PeerId` text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The bytes are not a valid PKCS#8 Ed25519 private key.
    #[error("invalid private key encoding")]
    InvalidPrivateKey,
    /// The bytes are not a 32-byte Ed25519 public key.
    #[error("invalid public key: expected {PUBLIC_KEY_LEN} bytes, got {0}")]
    InvalidPublicKeyLength(usize),
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// A `PeerId` text is not base58.
    #[error("peer id is not valid base58")]
    PeerIdNotBase58,
    /// A `PeerId` text decodes to the wrong number of bytes.
    #[error("peer id has {0} bytes, expected {PUBLIC_KEY_LEN}")]
    PeerIdLength(usize),
    /// A key file has permissions wider than owner-only.
    #[error("key file {path} is readable by others (mode {mode:o}); expected 0600")]
    InsecureKeyFile {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing a key file failed.
    #[error("key file i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// An Ed25519 key pair: the node's long-term identity. Cloning is cheap.
#[derive(Clone)]
pub struct Keypair {
    pkcs8: Arc<[u8]>,
    inner: Arc<Ed25519KeyPair>,
}

impl Keypair {
    /// Generates a new random key pair.
    pub fn generate() -> Result<Self, IdentityError> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| IdentityError::Rng)?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// The key pair of an Ed25519 seed (the 32-byte secret key of RFC
    /// 8032): the same seed always gives the same identity, for
    /// simulations and tests that need reproducible peers. Keep a real
    /// node's seed as secret as its key file.
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Result<Self, IdentityError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| IdentityError::InvalidPrivateKey)?;
        let mut pkcs8 = Vec::with_capacity(PKCS8_PREFIX.len() + 2 * SEED_LEN + PKCS8_MIDDLE.len());
        pkcs8.extend_from_slice(&PKCS8_PREFIX);
        pkcs8.extend_from_slice(&seed);
        pkcs8.extend_from_slice(&PKCS8_MIDDLE);
        pkcs8.extend_from_slice(pair.public_key().as_ref());
        Self::from_pkcs8(&pkcs8)
    }

    /// Loads a key pair from its PKCS#8 encoding (v2, as [`Keypair::generate`]
    /// writes it, or v1 without the public key).
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self, IdentityError> {
        let inner =
            Ed25519KeyPair::from_pkcs8(bytes).map_err(|_| IdentityError::InvalidPrivateKey)?;
        Ok(Self {
            pkcs8: bytes.into(),
            inner: Arc::new(inner),
        })
    }

    /// The PKCS#8 encoding of this key pair (secret: store it owner-only).
    pub fn to_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Writes the key pair to `path` with owner-only permissions (0600 on
    /// Unix), creating or replacing the file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        let path = path.as_ref();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            opts.mode(0o600);
            // An existing file keeps its mode on open: tighten it first.
            if path.exists() {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        let mut file = opts.open(path)?;
        std::io::Write::write_all(&mut file, &self.pkcs8)?;
        file.sync_all()?;
        Ok(())
    }

    /// Reads a key pair saved by [`Keypair::save`]. On Unix, refuses a file
    /// that group or others can access ([`IdentityError::InsecureKeyFile`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::InsecureKeyFile {
                    path: path.display().to_string(),
                    mode,
                });
            }
        }
        Self::from_pkcs8(&std::fs::read(path)?)
    }

    /// Loads the key pair at `path`, or generates and saves a new one if the
    /// file does not exist.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        if path.exists() {
            Self::load(path)
        } else {
            let kp = Self::generate()?;
            kp.save(path)?;
            Ok(kp)
        }
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let sig = self.inner.sign(msg);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(sig.as_ref());
        out
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(self.inner.public_key().as_ref());
        PublicKey(bytes)
    }

    /// The [`PeerId`] of this identity.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.public())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Builds a public key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let arr: [u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| IdentityError::InvalidPublicKeyLength(bytes.len()))?;
        Ok(Self(arr))
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Checks `sig` over `msg`; [`IdentityError::BadSignature`] if it fails.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), IdentityError> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| IdentityError::BadSignature)
    }

    /// The [`PeerId`] of this key.
    pub fn to_peer_id(self) -> PeerId {
        PeerId(self)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", bs58::encode(&self.0).into_string())
    }
}

/// The identity of a peer: its Ed25519 public key, shown as base58.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(PublicKey);

impl PeerId {
    /// The public key this id stands for.
    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.0.as_bytes()
    }

    /// Builds a `PeerId` from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        PublicKey::from_bytes(bytes).map(PeerId)
    }

    /// The first 8 characters of the text form, for logs.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.as_bytes()).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Refuse text longer than any PeerId before decoding it.
        if s.len() > MAX_PEER_ID_TEXT_LEN {
            return Err(IdentityError::PeerIdLength(s.len() * 3 / 4));
        }
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| IdentityError::PeerIdNotBase58)?;
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(IdentityError::PeerIdLength(bytes.len()));
        }
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sign_and_verify() {
        let kp = Keypair::generate().unwrap();
        let sig = kp.sign(b"hello");
        kp.public().verify(b"hello", &sig).unwrap();
        assert!(matches!(
            kp.public().verify(b"hellO", &sig),
            Err(IdentityError::BadSignature)
        ));
        let other = Keypair::generate().unwrap();
        assert!(matches!(
            other.public().verify(b"hello", &sig),
            Err(IdentityError::BadSignature)
        ));
    }

    #[test]
    fn save_load_round_trip_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let kp = Keypair::load_or_generate(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = Keypair::load_or_generate(&path).unwrap();
        assert_eq!(kp.peer_id(), again.peer_id());
        assert_eq!(kp.clone().peer_id(), kp.peer_id());
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_world_readable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        Keypair::generate().unwrap().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Keypair::load(&path),
            Err(IdentityError::InsecureKeyFile { mode: 0o644, .. })
        ));
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8032 section 7.1, TEST 1: secret key (seed), public key and the
    /// signature of the empty message.
    #[test]
    fn from_seed_matches_rfc8032() {
        let seed = unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let kp = Keypair::from_seed(seed.try_into().unwrap()).unwrap();
        assert_eq!(
            kp.public().as_bytes().to_vec(),
            unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        assert_eq!(
            kp.sign(b"").to_vec(),
            unhex(concat!(
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555",
                "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
            ))
        );
    }

    /// A generated key pair's PKCS#8 document has the layout `from_seed`
    /// builds: the seed taken out of it gives back the same document.
    #[test]
    fn from_seed_builds_the_pkcs8_layout_ring_generates() {
        let kp = Keypair::generate().unwrap();
        let doc = kp.to_pkcs8();
        assert_eq!(doc.len(), 83);
        assert_eq!(doc[..16], PKCS8_PREFIX);
        assert_eq!(doc[48..51], PKCS8_MIDDLE);
        assert_eq!(&doc[51..], kp.public().as_bytes());
        let again = Keypair::from_seed(doc[16..48].try_into().unwrap()).unwrap();
        assert_eq!(again.to_pkcs8(), doc);
        assert_eq!(again.peer_id(), kp.peer_id());
        assert_ne!(
            Keypair::from_seed([1; SEED_LEN]).unwrap().peer_id(),
            Keypair::from_seed([2; SEED_LEN]).unwrap().peer_id()
        );
    }

    #[test]
    fn load_refuses_garbage() {
        assert!(matches!(
            Keypair::from_pkcs8(b"not a key"),
            Err(IdentityError::InvalidPrivateKey)
        ));
    }

    #[test]
    fn peer_id_parse_errors() {
        assert!(matches!(
            "0OIl".parse::<PeerId>(),
            Err(IdentityError::PeerIdNotBase58)
        ));
        assert!(matches!(
            "abc".parse::<PeerId>(),
            Err(IdentityError::PeerIdLength(_))
        ));
        // The longest and the shortest text: all bytes 0xff, all zero.
        assert_eq!(
            PeerId::from_bytes(&[0xff; 32]).unwrap().to_string().len(),
            MAX_PEER_ID_TEXT_LEN
        );
        assert_eq!(PeerId::from_bytes(&[0; 32]).unwrap().to_string().len(), 32);
        assert!(matches!(
            "1".repeat(45).parse::<PeerId>(),
            Err(IdentityError::PeerIdLength(_))
        ));
        assert!(matches!(
            PublicKey::from_bytes(&[0; 31]),
            Err(IdentityError::InvalidPublicKeyLength(31))
        ));
    }

    proptest! {
        #[test]
        fn peer_id_text_round_trip(bytes in any::<[u8; 32]>()) {
            let id = PeerId::from_bytes(&bytes).unwrap();
            let text = id.to_string();
            prop_assert!(text.len() <= 44);
            prop_assert_eq!(text.parse::<PeerId>().unwrap(), id);
        }

        #[test]
        fn peer_id_parse_never_panics(s in "\\PC{0,60}") {
            let _ = s.parse::<PeerId>();
        }
    }
}
