//! Property tests of every decoder of peer bytes: the handshake responder,
//! the initiator reading replies, and the SecureStream frame reader.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use knotwork_core::Keypair;
use knotwork_crypto_handshake::{
    Handshake, HandshakeError, Pattern, SecureConfig, StaticIdentity, Suite,
};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn identity() -> StaticIdentity {
    StaticIdentity::generate(Keypair::generate().unwrap()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn suite_and_pattern_bytes_round_trip(b in any::<u8>()) {
        if let Ok(s) = Suite::from_byte(b) {
            prop_assert_eq!(s.to_byte(), b);
        }
        if let Ok(p) = Pattern::from_byte(b) {
            prop_assert_eq!(p.to_byte(), b);
        }
    }

    /// Arbitrary bytes fed to a responder, in arbitrary pieces: it takes
    /// them or names an error, and never finishes (no bytes can forge an
    /// initiator's message 3).
    #[test]
    fn responder_survives_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        split in any::<prop::sample::Index>(),
    ) {
        let mut r = Handshake::responder(&identity());
        let cut = split.index(bytes.len() + 1);
        let mut failed = false;
        for part in [&bytes[..cut], &bytes[cut..]] {
            match r.read_input(part) {
                Ok(n) => prop_assert!(n <= part.len()),
                Err(_) => { failed = true; break; }
            }
        }
        prop_assert!(!r.is_finished());
        if !failed {
            prop_assert!(matches!(r.handle_eof(), Err(HandshakeError::Truncated)));
        }
    }

    /// A genuine first flight with arbitrary tails, as a real prefix: the
    /// responder answers; junk after it never completes the handshake.
    #[test]
    fn initiator_survives_arbitrary_replies(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut i = Handshake::xx_initiator(&identity(), Suite::AesGcm, None).unwrap();
        let _ = i.take_output();
        let mut reply = b"KNTW\x01\x01\x02\x00".to_vec();
        reply.extend_from_slice(&bytes);
        let _ = i.read_input(&reply);
        prop_assert!(!i.is_finished());
    }

    /// Whatever the write sizes and flush points, the reader gets the same
    /// bytes in the same order.
    #[test]
    fn stream_round_trips_any_chunking(
        chunks in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..3000), any::<bool>()), 0..40),
        suite in prop::sample::select(Suite::ALL.to_vec()),
    ) {
        runtime().block_on(async {
            let (ca, cb) = (
                SecureConfig::new(Keypair::generate().unwrap()).unwrap().with_suite(suite),
                SecureConfig::new(Keypair::generate().unwrap()).unwrap(),
            );
            let (x, y) = tokio::io::duplex(4096);
            let (a, b) = tokio::join!(ca.upgrade_outbound(x, None), cb.upgrade_inbound(y));
            let (mut a, mut b) = (a.unwrap(), b.unwrap());
            let expected: Vec<u8> = chunks.iter().flat_map(|(c, _)| c.clone()).collect();
            let writer = async {
                for (c, flush) in &chunks {
                    a.write_all(c).await.unwrap();
                    if *flush { a.flush().await.unwrap(); }
                }
                a.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let reader = b.read_to_end(&mut got);
            let ((), n) = tokio::join!(writer, reader);
            assert_eq!(n.unwrap(), expected.len());
            assert_eq!(got, expected);
        });
    }

    /// Arbitrary bytes where ciphertext should be: the reader names an
    /// error (or sees a clean end), never panics, never yields plaintext.
    #[test]
    fn stream_reader_survives_arbitrary_ciphertext(
        junk in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        runtime().block_on(async {
            let (ca, cb) = (
                SecureConfig::new(Keypair::generate().unwrap()).unwrap(),
                SecureConfig::new(Keypair::generate().unwrap()).unwrap(),
            );
            let (x, y) = tokio::io::duplex(4096);
            let (a, b) = tokio::join!(ca.upgrade_outbound(x, None), cb.upgrade_inbound(y));
            let (a, mut b) = (a.unwrap(), b.unwrap());
            // Write raw junk under A's encryption layer.
            let mut raw = a.into_inner();
            raw.write_all(&junk).await.unwrap();
            raw.shutdown().await.unwrap();
            let mut got = Vec::new();
            match b.read_to_end(&mut got).await {
                Ok(_) => assert!(junk.is_empty() && got.is_empty()),
                Err(e) => {
                    assert!(got.is_empty());
                    let inner = HandshakeError::from_io(&e).unwrap();
                    assert!(matches!(
                        inner,
                        HandshakeError::Decrypt
                            | HandshakeError::FrameTooShort(_)
                            | HandshakeError::Truncated
                    ), "{inner:?}");
                }
            }
        });
    }
}
