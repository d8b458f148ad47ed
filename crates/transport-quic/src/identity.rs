//! The identity binding: the node's Ed25519 key is the TLS key.
//!
//! Each side presents its identity public key as an RFC 7250 raw public key
//! (a DER SubjectPublicKeyInfo, [`encode_spki`]) and signs the TLS 1.3
//! handshake transcript with the identity key itself. The peer decodes the
//! key ([`decode_spki`], the only parser of peer bytes here), checks the
//! signature, and the key is the [`PeerId`]. Both sides must present a key
//! (client authentication is mandatory), and only Ed25519 is accepted.
//!
//! # Format (44 bytes)
//! ```text
//! 30 2a                 SEQUENCE, 42 bytes
//!    30 05              SEQUENCE (AlgorithmIdentifier), 5 bytes
//!       06 03 2b 65 70  OID 1.3.101.112 (id-Ed25519), no parameters
//!    03 21 00           BIT STRING, 33 bytes, 0 unused bits
//!       <32-byte Ed25519 public key>
//! ```
//! DER has exactly one encoding of this value, so decoding is a length check
//! and a comparison of the 12-byte header.
//!
//! A verifier that fails records the [`QuicError`] it failed with, so that a
//! dial returns the named error rather than rustls' alert.

use std::sync::{Arc, Mutex};

use knotwork_core::{Keypair, PeerId, PublicKey};
use quinn::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    sign::CertifiedKey,
};

use crate::QuicError;

/// Length of an Ed25519 SubjectPublicKeyInfo.
pub const SPKI_LEN: usize = SPKI_HEADER.len() + 32;

/// The DER header of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const SPKI_HEADER: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER SubjectPublicKeyInfo of an Ed25519 public key.
pub fn encode_spki(key: &PublicKey) -> [u8; SPKI_LEN] {
    let mut out = [0u8; SPKI_LEN];
    let (header, body) = out.split_at_mut(SPKI_HEADER.len());
    header.copy_from_slice(&SPKI_HEADER);
    body.copy_from_slice(key.as_bytes());
    out
}

/// Decodes a peer's raw public key: an Ed25519 SubjectPublicKeyInfo.
pub fn decode_spki(bytes: &[u8]) -> Result<PublicKey, QuicError> {
    if bytes.len() != SPKI_LEN {
        return Err(QuicError::SpkiLength(bytes.len()));
    }
    let (header, key) = bytes.split_at(SPKI_HEADER.len());
    if header != SPKI_HEADER {
        return Err(QuicError::NotEd25519);
    }
    PublicKey::from_bytes(key).map_err(|_| QuicError::SpkiLength(bytes.len()))
}

/// The peer's identity from the certificates it presented: exactly one
/// raw public key, which must be an Ed25519 key.
pub fn peer_of(certs: &[CertificateDer<'_>]) -> Result<PeerId, QuicError> {
    match certs {
        [key] => Ok(decode_spki(key.as_ref())?.to_peer_id()),
        other => Err(QuicError::CertificateCount(other.len())),
    }
}

/// The TLS crypto provider: AWS-LC, with X25519 as the only key exchange
/// (one key share that fits the first Initial packet), and AES-128-GCM
/// with SHA-256 first. AWS-LC's default puts AES-256-GCM with SHA-384
/// first: 14 AES rounds instead of 10 per block, and a key schedule of
/// HMAC-SHA-384, which has no SHA instructions (SHA-256 has them on x86
/// and ARM); QUIC's Initial packets use AES-128-GCM anyway.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider, kx_group};
    let mut p = default_provider();
    p.kx_groups = vec![kx_group::X25519];
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// Our identity as a rustls raw-public-key "certificate" and signing key.
pub(crate) fn certified_key(
    identity: &Keypair,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, QuicError> {
    let spki = encode_spki(&identity.public());
    let key = PrivateKeyDer::Pkcs8(identity.to_pkcs8().to_vec().into());
    let signer = provider.key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki.to_vec())],
        signer,
    )))
}

/// Checks a peer's identity binding, for either side of the handshake.
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    /// The PeerId the dialer asked for; `None` accepts any valid identity.
    expected: Option<PeerId>,
    algorithms: WebPkiSupportedAlgorithms,
    /// A dial's verifier: the first failure, to return by name. The
    /// listener's verifier, shared by all inbound handshakes, has none.
    failure: Option<Mutex<Option<QuicError>>>,
}

impl PeerVerifier {
    /// The verifier of one dial, expecting `expected` if given.
    pub(crate) fn dialer(expected: Option<PeerId>, provider: &CryptoProvider) -> Self {
        Self {
            expected,
            algorithms: provider.signature_verification_algorithms,
            failure: Some(Mutex::new(None)),
        }
    }

    /// The verifier of a listener: any valid identity.
    pub(crate) fn listener(provider: &CryptoProvider) -> Self {
        Self {
            expected: None,
            algorithms: provider.signature_verification_algorithms,
            failure: None,
        }
    }

    /// The failure recorded by a dial's check, if one failed.
    pub(crate) fn take_failure(&self) -> Option<QuicError> {
        self.failure.as_ref()?.lock().ok()?.take()
    }

    fn fail(&self, err: QuicError) -> rustls::Error {
        let alert = match err {
            QuicError::BadSignature => CertificateError::BadSignature,
            _ => CertificateError::ApplicationVerificationFailure,
        };
        if let Some(Ok(mut slot)) = self.failure.as_ref().map(Mutex::lock) {
            slot.get_or_insert(err);
        }
        rustls::Error::InvalidCertificate(alert)
    }

    fn check_key(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(self.fail(QuicError::CertificateCount(1 + intermediates.len())));
        }
        let actual = decode_spki(end_entity.as_ref())
            .map_err(|e| self.fail(e))?
            .to_peer_id();
        match self.expected {
            Some(expected) if expected != actual => {
                Err(self.fail(QuicError::PeerIdMismatch { expected, actual }))
            }
            _ => Ok(()),
        }
    }

    fn check_signature(
        &self,
        message: &[u8],
        key: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(self.fail(QuicError::SignatureScheme(u16::from(dss.scheme))));
        }
        let spki = SubjectPublicKeyInfoDer::from(key.as_ref());
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms)
            .map_err(|_| self.fail(QuicError::BadSignature))
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_key(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC is TLS 1.3 only (RFC 9001): never called.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_key(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spki_matches_the_der_of_rfc_8410() {
        // RFC 8410 section 10.1: the example public key's PEM body,
        // "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZh4=".
        let der: [u8; SPKI_LEN] = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x19, 0xbf,
            0x44, 0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc, 0x3b, 0x96,
            0xc8, 0x50, 0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad, 0x70, 0x31,
            0x66, 0x1e,
        ];
        let key = decode_spki(&der).unwrap();
        assert_eq!(key.as_bytes()[..], der[12..]);
        assert_eq!(encode_spki(&key), der);
    }

    #[test]
    fn each_bad_key_is_named() {
        let good = encode_spki(&Keypair::generate().unwrap().public());
        assert!(matches!(
            decode_spki(&good[..43]),
            Err(QuicError::SpkiLength(43))
        ));
        assert!(matches!(decode_spki(&[]), Err(QuicError::SpkiLength(0))));
        // An X25519 key (OID 1.3.101.110) of the same shape.
        let mut x25519 = good;
        x25519[8] = 0x6e;
        assert!(matches!(decode_spki(&x25519), Err(QuicError::NotEd25519)));
        let der = |b: &[u8; SPKI_LEN]| CertificateDer::from(b.to_vec());
        assert!(matches!(
            peer_of(&[der(&good), der(&good)]),
            Err(QuicError::CertificateCount(2))
        ));
        assert!(matches!(peer_of(&[]), Err(QuicError::CertificateCount(0))));
    }

    #[test]
    fn verifier_names_a_mismatched_peer() {
        let (a, b) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let v = PeerVerifier::dialer(Some(a.peer_id()), &provider());
        let key = CertificateDer::from(encode_spki(&b.public()).to_vec());
        assert!(v.check_key(&key, &[]).is_err());
        assert!(matches!(
            v.take_failure(),
            Some(QuicError::PeerIdMismatch { expected, actual })
                if expected == a.peer_id() && actual == b.peer_id()
        ));
    }

    proptest! {
        #[test]
        fn spki_round_trip(key in any::<[u8; 32]>()) {
            let key = PublicKey::from_bytes(&key).unwrap();
            let der = encode_spki(&key);
            prop_assert_eq!(decode_spki(&der).unwrap(), key);
            let cert = CertificateDer::from(der.to_vec());
            prop_assert_eq!(peer_of(&[cert]).unwrap(), key.to_peer_id());
        }

        #[test]
        fn decode_accepts_only_the_encoding(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(key) = decode_spki(&bytes) {
                prop_assert_eq!(&encode_spki(&key)[..], &bytes[..]);
            }
        }
    }
}
