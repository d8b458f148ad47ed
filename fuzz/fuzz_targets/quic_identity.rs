//! Arbitrary bytes as the certificates a QUIC peer presents (RFC 7250 raw
//! public keys): the first byte picks how many (0-3), the rest is split
//! evenly between them, and each goes through the identity decoder.
//!
//! Checks: nothing panics; an accepted key is exactly the encoding of the
//! key it yields, and a list is accepted only as one such key.
#![no_main]

use knotwork_transport_quic::identity::{decode_spki, encode_spki, peer_of};
use libfuzzer_sys::fuzz_target;
use quinn::rustls::pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    if let Ok(key) = decode_spki(rest) {
        assert_eq!(&encode_spki(&key)[..], rest);
    }
    let n = usize::from(n % 4);
    let certs: Vec<CertificateDer<'_>> = match n {
        0 => Vec::new(),
        _ => rest
            .chunks(rest.len().div_ceil(n).max(1))
            .map(CertificateDer::from)
            .collect(),
    };
    if let Ok(peer) = peer_of(&certs) {
        assert_eq!(certs.len(), 1);
        assert_eq!(&encode_spki(peer.public_key())[..], certs[0].as_ref());
    }
});
