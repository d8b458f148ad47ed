//! knotwork-crypto-handshake benches, each next to its baseline in the
//! same run:
//! - `handshake/*`: complete XX handshakes in memory (sans-IO, no I/O), ours
//!   (Noise + identity payload signature checks + preamble + framing) vs
//!   bare snow XX with the same suite, on snow's own resolver (ring, and
//!   curve25519-dalek with its precomputed base-point tables; ours uses
//!   AWS-LC's X25519 and skips deriving the static public key per
//!   handshake). Goal: ours ≥
//!   0.9× snow. `ed25519_verify_x2` is the cost of the two signature checks
//!   alone (the bound: both are needed on a first contact).
//! - `primitives/*`: why the stack takes all its crypto from AWS-LC: each
//!   primitive it uses, with AWS-LC and with the alternative: X25519 with
//!   curve25519-dalek (snow's own), Ed25519 checks and signatures, SHA-256
//!   and both AEADs (seal + open of 64 KiB) with ring.
//! - `throughput_<suite>/*`: 1 MiB as 16 writes of 64 KiB through two
//!   `SecureStream`s over an in-memory pipe (write, seal, pipe, open, read)
//!   vs AWS-LC's seal + open of the same 16 × 64 KiB (the AEAD the stream
//!   uses). Goal: ≥ 0.85× the bare AEAD.
//!
//! After criterion's numbers it prints `ratio ...` lines: ours and the
//! baseline alternated in short rounds, median of per-round ratios (robust
//! to the load changes of a shared machine).
//!
//! Measure pinned to one core: `taskset -c 0 cargo bench -p knotwork-benches --bench handshake`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use knotwork_core::Keypair;
use knotwork_crypto_handshake::{Handshake, SecureConfig, SecureStream, StaticIdentity, Suite};
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WRITE: usize = 64 * 1024;
const WRITES: usize = 16;

fn snow_xx(params: &snow::params::NoiseParams, si: &[u8], sr: &[u8]) {
    let mut i = snow::Builder::new(params.clone())
        .local_private_key(si)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::new(params.clone())
        .local_private_key(sr)
        .unwrap()
        .build_responder()
        .unwrap();
    let (mut m, mut p) = ([0u8; 1024], [0u8; 1024]);
    let n = i.write_message(&[], &mut m).unwrap();
    r.read_message(&m[..n], &mut p).unwrap();
    let n = r.write_message(&[], &mut m).unwrap();
    i.read_message(&m[..n], &mut p).unwrap();
    let n = i.write_message(&[], &mut m).unwrap();
    r.read_message(&m[..n], &mut p).unwrap();
    let ti = i.into_transport_mode().unwrap();
    let tr = r.into_transport_mode().unwrap();
    std::hint::black_box((ti, tr));
}

fn ours_xx(a: &StaticIdentity, b: &StaticIdentity, suite: Suite) {
    let mut i = Handshake::xx_initiator(a, suite, Some(b.peer_id())).unwrap();
    let mut r = Handshake::responder(b);
    r.read_input(&i.take_output()).unwrap();
    i.read_input(&r.take_output()).unwrap();
    r.read_input(&i.take_output()).unwrap();
    std::hint::black_box((i.finish().unwrap(), r.finish().unwrap()));
}

fn ours_ik(a: &StaticIdentity, b: &StaticIdentity, suite: Suite) {
    let mut i = Handshake::ik_initiator(a, suite, b.peer_id(), b.static_public()).unwrap();
    let mut r = Handshake::responder(b);
    r.read_input(&i.take_output()).unwrap();
    i.read_input(&r.take_output()).unwrap();
    r.read_input(&i.take_output()).unwrap();
    std::hint::black_box((i.finish().unwrap(), r.finish().unwrap()));
}

fn handshakes(c: &mut Criterion) {
    let params: snow::params::NoiseParams = "Noise_XX_25519_ChaChaPoly_SHA256".parse().unwrap();
    let ki = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let kr = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let a = StaticIdentity::generate(Keypair::generate().unwrap()).unwrap();
    let b = StaticIdentity::generate(Keypair::generate().unwrap()).unwrap();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("snow_xx", |bch| {
        bch.iter(|| snow_xx(&params, &ki.private, &kr.private))
    });
    g.bench_function("knotwork_xx", |bch| {
        bch.iter(|| ours_xx(&a, &b, Suite::ChaChaPoly))
    });
    g.bench_function("knotwork_ik", |bch| {
        bch.iter(|| ours_ik(&a, &b, Suite::ChaChaPoly))
    });
    // What identity binding adds to a handshake: each side checks one
    // Ed25519 signature (signing is done once per config).
    let kp = Keypair::generate().unwrap();
    let msg = [1u8; 60];
    let sig = kp.sign(&msg);
    let pk = kp.public();
    g.bench_function("ed25519_verify_x2", |bch| {
        bch.iter(|| {
            pk.verify(&msg, &sig).unwrap();
            pk.verify(&msg, &sig).unwrap();
        })
    });
    g.finish();

    let mut g = c.benchmark_group("primitives");
    g.throughput(Throughput::Elements(1));
    let scalar = [0x42u8; 32];
    let peer = curve25519_dalek::MontgomeryPoint::mul_base_clamped([0x17; 32]).to_bytes();
    g.bench_function("x25519_dalek", |bch| {
        bch.iter(|| curve25519_dalek::MontgomeryPoint(peer).mul_clamped(scalar))
    });
    let key =
        aws_lc_rs::agreement::PrivateKey::from_private_key(&aws_lc_rs::agreement::X25519, &scalar)
            .unwrap();
    g.bench_function("x25519_aws_lc", |bch| {
        bch.iter(|| {
            let public =
                aws_lc_rs::agreement::UnparsedPublicKey::new(&aws_lc_rs::agreement::X25519, &peer);
            aws_lc_rs::agreement::agree(&key, public, (), |k| Ok(k[0])).unwrap()
        })
    });
    let pk_bytes = pk.as_bytes().to_vec();
    g.bench_function("ed25519_verify_ring", |bch| {
        bch.iter(|| pk.verify(&msg, &sig).unwrap())
    });
    g.bench_function("ed25519_verify_aws_lc", |bch| {
        bch.iter(|| {
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &pk_bytes)
                .verify(&msg, &sig)
                .unwrap()
        })
    });
    let (ring_signer, aws_lc_signer) = signers();
    g.bench_function("ed25519_sign_ring", |bch| {
        bch.iter(|| ring_signer.sign(&msg))
    });
    g.bench_function("ed25519_sign_aws_lc", |bch| {
        bch.iter(|| aws_lc_signer.sign(&msg))
    });
    let block = [0x33u8; 128];
    g.bench_function("sha256_128B_ring", |bch| {
        bch.iter(|| ring::digest::digest(&ring::digest::SHA256, &block))
    });
    g.bench_function("sha256_128B_aws_lc", |bch| {
        bch.iter(|| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &block))
    });
    for suite in Suite::ALL {
        let (ring, aws_lc) = (ring_key(suite), aws_lc_key(suite));
        let mut buf = vec![0x5Au8; WRITE];
        let mut n = 0u64;
        g.bench_function(format!("aead_{suite:?}_64KiB_ring"), |bch| {
            bch.iter(|| ring_seal_open(&ring, &mut buf, &mut n))
        });
        g.bench_function(format!("aead_{suite:?}_64KiB_aws_lc"), |bch| {
            bch.iter(|| aws_lc_seal_open(&aws_lc, &mut buf, &mut n))
        });
    }
    g.finish();
}

/// One Ed25519 key in both libraries.
fn signers() -> (
    ring::signature::Ed25519KeyPair,
    aws_lc_rs::signature::Ed25519KeyPair,
) {
    let pkcs8 = Keypair::generate().unwrap().to_pkcs8().to_vec();
    (
        ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap(),
        aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap(),
    )
}

fn aws_lc_key(suite: Suite) -> aws_lc_rs::aead::LessSafeKey {
    use aws_lc_rs::aead::{AES_256_GCM, CHACHA20_POLY1305, LessSafeKey, UnboundKey};
    let alg = match suite {
        Suite::ChaChaPoly => &CHACHA20_POLY1305,
        Suite::AesGcm => &AES_256_GCM,
    };
    LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).unwrap())
}

/// Seals and opens one 64 KiB message with ring, in place.
fn ring_seal_open(key: &LessSafeKey, buf: &mut Vec<u8>, n: &mut u64) {
    let tag = key
        .seal_in_place_separate_tag(nonce(*n), Aad::empty(), buf)
        .unwrap();
    buf.extend_from_slice(tag.as_ref());
    let len = key
        .open_in_place(nonce(*n), Aad::empty(), buf)
        .unwrap()
        .len();
    buf.truncate(len);
    *n += 1;
}

/// Seals and opens one 64 KiB message with AWS-LC, in place.
fn aws_lc_seal_open(key: &aws_lc_rs::aead::LessSafeKey, buf: &mut Vec<u8>, n: &mut u64) {
    use aws_lc_rs::aead::{Aad, Nonce};
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(b), Aad::empty(), buf)
        .unwrap();
    buf.extend_from_slice(tag.as_ref());
    let len = key
        .open_in_place(Nonce::assume_unique_for_key(b), Aad::empty(), buf)
        .unwrap()
        .len();
    buf.truncate(len);
    *n += 1;
}

fn ring_key(suite: Suite) -> LessSafeKey {
    let alg = match suite {
        Suite::ChaChaPoly => &CHACHA20_POLY1305,
        Suite::AesGcm => &AES_256_GCM,
    };
    LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).unwrap())
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

/// Seals and opens `WRITES` × 64 KiB with AWS-LC, in place.
fn aead_round(key: &aws_lc_rs::aead::LessSafeKey, buf: &mut Vec<u8>, n: &mut u64) {
    for _ in 0..WRITES {
        aws_lc_seal_open(key, buf, n);
    }
}

type Pipe = SecureStream<tokio::io::DuplexStream>;

/// A connected pair of secure streams over an in-memory pipe.
fn stream_pair(rt: &tokio::runtime::Runtime, suite: Suite) -> (Pipe, Pipe) {
    let ca = SecureConfig::new(Keypair::generate().unwrap())
        .unwrap()
        .with_suite(suite)
        .with_rekey_interval(0);
    let cb = SecureConfig::new(Keypair::generate().unwrap())
        .unwrap()
        .with_rekey_interval(0);
    let (x, y) = tokio::io::duplex(256 * 1024);
    rt.block_on(async {
        let (a, b) = tokio::join!(ca.upgrade_outbound(x, None), cb.upgrade_inbound(y));
        (a.unwrap(), b.unwrap())
    })
}

/// Writes `WRITES` × 64 KiB into `a` and reads them from `b`.
fn stream_round(
    rt: &tokio::runtime::Runtime,
    a: &mut Pipe,
    b: &mut Pipe,
    src: &[u8],
    dst: &mut [u8],
) {
    rt.block_on(async {
        let w = async {
            for _ in 0..WRITES {
                a.write_all(src).await.unwrap();
            }
            a.flush().await.unwrap();
        };
        let r = b.read_exact(dst);
        let ((), got) = tokio::join!(w, r);
        got.unwrap();
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    for suite in Suite::ALL {
        let mut g = c.benchmark_group(format!("throughput_{suite:?}"));
        g.throughput(Throughput::Bytes((WRITE * WRITES) as u64));
        let key = aws_lc_key(suite);
        let mut buf = vec![0x5Au8; WRITE];
        let mut n = 0u64;
        g.bench_function(BenchmarkId::new("aead_seal_open", "64KiB"), |bch| {
            bch.iter(|| aead_round(&key, &mut buf, &mut n))
        });
        let (mut a, mut b) = stream_pair(&rt, suite);
        let src = vec![0x5Au8; WRITE];
        let mut dst = vec![0u8; WRITE * WRITES];
        g.bench_function(BenchmarkId::new("secure_stream_memory", "64KiB"), |bch| {
            bch.iter(|| stream_round(&rt, &mut a, &mut b, &src, &mut dst))
        });
        g.finish();
    }
}

/// Times `iters` runs of `f`.
fn time(f: &mut dyn FnMut(), iters: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64()
}

/// This machine is shared and noisy, and criterion measures one function
/// after the other, so its numbers for ours and the baseline can come from
/// different load. Here both alternate in short rounds (order flipped each
/// round) and the ratio (baseline time / our time = our speed relative to
/// the baseline) is taken per round; prints the median and the range.
fn ratio(name: &str, iters: usize, base: &mut dyn FnMut(), ours: &mut dyn FnMut()) {
    const ROUNDS: usize = 21;
    base();
    ours();
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|r| {
            let (tb, to) = if r % 2 == 0 {
                let tb = time(base, iters);
                (tb, time(ours, iters))
            } else {
                let to = time(ours, iters);
                (time(base, iters), to)
            };
            tb / to
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio {name}: median {:.3} (min {:.3}, max {:.3}) over {ROUNDS} interleaved rounds",
        ratios[ROUNDS / 2],
        ratios[0],
        ratios[ROUNDS - 1]
    );
}

fn ratios() {
    let params: snow::params::NoiseParams = "Noise_XX_25519_ChaChaPoly_SHA256".parse().unwrap();
    let ki = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let kr = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let a = StaticIdentity::generate(Keypair::generate().unwrap()).unwrap();
    let b = StaticIdentity::generate(Keypair::generate().unwrap()).unwrap();
    ratio(
        "handshake knotwork_xx / snow_xx",
        60,
        &mut || snow_xx(&params, &ki.private, &kr.private),
        &mut || ours_xx(&a, &b, Suite::ChaChaPoly),
    );
    let scalar = [0x42u8; 32];
    let peer = curve25519_dalek::MontgomeryPoint::mul_base_clamped([0x17; 32]).to_bytes();
    let key =
        aws_lc_rs::agreement::PrivateKey::from_private_key(&aws_lc_rs::agreement::X25519, &scalar)
            .unwrap();
    ratio(
        "primitives x25519 aws_lc / dalek",
        200,
        &mut || {
            black_box(curve25519_dalek::MontgomeryPoint(peer).mul_clamped(scalar));
        },
        &mut || {
            let public =
                aws_lc_rs::agreement::UnparsedPublicKey::new(&aws_lc_rs::agreement::X25519, &peer);
            aws_lc_rs::agreement::agree(&key, public, (), |k| Ok(black_box(k[0]))).unwrap();
        },
    );
    let (ring_signer, aws_lc_signer) = signers();
    let msg = [1u8; 60];
    let sig = aws_lc_signer.sign(&msg);
    let pk = aws_lc_rs::signature::KeyPair::public_key(&aws_lc_signer)
        .as_ref()
        .to_vec();
    ratio(
        "primitives ed25519 verify aws_lc / ring",
        200,
        &mut || {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &pk)
                .verify(&msg, sig.as_ref())
                .unwrap();
        },
        &mut || {
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &pk)
                .verify(&msg, sig.as_ref())
                .unwrap();
        },
    );
    ratio(
        "primitives ed25519 sign aws_lc / ring",
        200,
        &mut || {
            black_box(ring_signer.sign(&msg));
        },
        &mut || {
            black_box(aws_lc_signer.sign(&msg));
        },
    );
    let block = [0x33u8; 128];
    ratio(
        "primitives sha256 128 B aws_lc / ring",
        20_000,
        &mut || {
            black_box(ring::digest::digest(&ring::digest::SHA256, &block));
        },
        &mut || {
            black_box(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                &block,
            ));
        },
    );
    for suite in Suite::ALL {
        let (ring, aws_lc) = (ring_key(suite), aws_lc_key(suite));
        let mut buf = vec![0x5Au8; WRITE];
        let mut n = 0u64;
        let mut m = 0u64;
        let mut other = vec![0x5Au8; WRITE];
        ratio(
            &format!("primitives aead {suite:?} 64 KiB aws_lc / ring"),
            64,
            &mut || ring_seal_open(&ring, &mut buf, &mut n),
            &mut || aws_lc_seal_open(&aws_lc, &mut other, &mut m),
        );
    }
    let rt = runtime();
    for suite in Suite::ALL {
        let key = aws_lc_key(suite);
        let mut buf = vec![0x5Au8; WRITE];
        let mut n = 0u64;
        let (mut sa, mut sb) = stream_pair(&rt, suite);
        let src = vec![0x5Au8; WRITE];
        let mut dst = vec![0u8; WRITE * WRITES];
        ratio(
            &format!("throughput_{suite:?} secure_stream_memory / aead_seal_open"),
            match suite {
                Suite::ChaChaPoly => 16,
                Suite::AesGcm => 64,
            },
            &mut || aead_round(&key, &mut buf, &mut n),
            &mut || stream_round(&rt, &mut sa, &mut sb, &src, &mut dst),
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

fn main() {
    let mut c = config().configure_from_args();
    handshakes(&mut c);
    throughput(&mut c);
    c.final_summary();
    // Only when benchmarking (`cargo bench`), not in `cargo test --benches`.
    if std::env::args().any(|a| a == "--bench") {
        ratios();
    }
}
