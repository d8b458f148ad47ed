//! In-memory references: the AEAD limit of each suite and the rate at
//! which snow's XX responder finishes handshakes, both on one core.

use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use knotwork_crypto_handshake::Suite;

/// Bytes/s of sealing and then opening `total` bytes in 64 KiB messages
/// with AWS-LC (as the secure stream does), the work a secure stream adds
/// per byte on one core.
pub fn aead_rate(suite: Suite, total: u64) -> f64 {
    let alg = match suite {
        Suite::AesGcm => &AES_256_GCM,
        _ => &CHACHA20_POLY1305,
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, &[9u8; 32]).expect("key"));
    let mut msg = vec![0x5au8; 64 * 1024 - 16];
    let start = Instant::now();
    let mut done = 0u64;
    let mut n = 0u64;
    while done < total {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut msg)
            .expect("seal");
        msg.extend_from_slice(tag.as_ref());
        key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut msg)
            .expect("open");
        msg.truncate(msg.len() - 16);
        done += msg.len() as u64;
        n += 1;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The snow protocol name of the XX handshake with `suite`.
fn xx_params(suite: Suite) -> snow::params::NoiseParams {
    let name = match suite {
        Suite::AesGcm => "Noise_XX_25519_AESGCM_SHA256",
        _ => "Noise_XX_25519_ChaChaPoly_SHA256",
    };
    name.parse().expect("noise params")
}

/// Handshakes/s of snow's XX responder alone: `count` handshakes in
/// memory, timing only the responder's calls.
pub fn snow_responder_rate(suite: Suite, count: usize) -> f64 {
    let params = xx_params(suite);
    let builder = || snow::Builder::new(params.clone());
    let ki = builder().generate_keypair().expect("keypair");
    let kr = builder().generate_keypair().expect("keypair");
    let (mut m, mut p) = ([0u8; 1024], [0u8; 1024]);
    let mut responder_time = Duration::ZERO;
    for _ in 0..count {
        let mut i = builder()
            .local_private_key(&ki.private)
            .expect("key")
            .build_initiator()
            .expect("initiator");
        let n1 = i.write_message(&[], &mut m).expect("msg 1");
        let t = Instant::now();
        let mut r = builder()
            .local_private_key(&kr.private)
            .expect("key")
            .build_responder()
            .expect("responder");
        r.read_message(&m[..n1], &mut p).expect("read 1");
        let n2 = r.write_message(&[], &mut m).expect("msg 2");
        responder_time += t.elapsed();
        i.read_message(&m[..n2], &mut p).expect("read 2");
        let n3 = i.write_message(&[], &mut m).expect("msg 3");
        let t = Instant::now();
        r.read_message(&m[..n3], &mut p).expect("read 3");
        let transport = r.into_transport_mode().expect("transport");
        responder_time += t.elapsed();
        std::hint::black_box(transport);
    }
    count as f64 / responder_time.as_secs_f64()
}
