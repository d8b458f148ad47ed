//! Interop with independent Noise implementations: PyPI `noiseprotocol`
//! 0.3.1 and `dissononce` 0.34.3, driven by `tests/interop/noise_peer.py`
//! over real TCP on 127.0.0.1.
//!
//! The Python peer implements knotwork's whole handshake on top of its
//! library: preamble + prologue, 2-byte framing, and the identity payload
//! (Ed25519 via `cryptography`) that it signs and checks. So each case checks
//! that our Noise messages, prologue binding, split keys, nonce encoding,
//! REKEY and transport framing agree with another implementation, and that
//! identities are authenticated both ways (the Python peer reports the id it
//! verified; we check the one we verified).
//!
//! The Python peer also recomputes the spec's test vectors
//! (`docs/vectors`) with each library and its own frame encoder.
//!
//! Ignored by default (they need Python): run `cargo xtask interop noise`,
//! which creates the virtualenv and sets `KNOTWORK_PYTHON`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use knotwork_core::{Keypair, PeerId};
use knotwork_crypto_handshake::{HandshakeError, Pattern, SecureConfig, SecureStream, Suite};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};

const LIBS: [&str; 2] = ["noiseprotocol", "dissononce"];
const REKEY: u64 = 3;
const ECHO_LEN: usize = 100_000;

fn python() -> PathBuf {
    match std::env::var_os("KNOTWORK_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "KNOTWORK_PYTHON is not set: run `cargo xtask interop noise` \
             (it installs noiseprotocol and dissononce into .venv and sets it)"
        ),
    }
}

fn suite_name(suite: Suite) -> &'static str {
    match suite {
        Suite::ChaChaPoly => "ChaChaPoly",
        Suite::AesGcm => "AESGCM",
    }
}

struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn spawn(args: &[String]) -> Peer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/noise_peer.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the python peer");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Peer { child, lines }
    }

    /// The value of the next output line starting with `key`.
    async fn expect(&mut self, key: &str) -> String {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("python peer too slow")
            .unwrap()
            .unwrap_or_else(|| panic!("python peer ended before {key:?}"));
        let (k, v) = line.split_once(' ').unwrap_or((&line, ""));
        assert_eq!(k, key, "python peer said {line:?}");
        v.to_string()
    }

    async fn finish(mut self) {
        assert_eq!(self.expect("ok").await, "");
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "python peer exited with {status}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// What the Python peer sends after the handshake (see the script).
fn python_messages() -> Vec<u8> {
    let mut v = b"hello from python".to_vec();
    v.extend((0..65519u32).map(|i| (i % 251) as u8));
    v.extend_from_slice(b"bye");
    v
}

/// What we send as early data (see `Handshake::with_early_data`).
const RUST_EARLY: &[u8] = b"early data from rust";
/// What the Python peer sends as early data.
const PYTHON_EARLY: &[u8] = b"early data from python";

/// Reads the Python peer's messages, sends `ECHO_LEN` bytes, checks the echo.
async fn exchange(s: &mut SecureStream<TcpStream>) {
    let expected = python_messages();
    let mut got = vec![0u8; expected.len()];
    s.read_exact(&mut got).await.unwrap();
    assert!(got == expected, "python messages differ");
    let ours: Vec<u8> = (0..ECHO_LEN).map(|i| (i * 7 % 256) as u8).collect();
    for chunk in ours.chunks(64 * 1024) {
        s.write_all(chunk).await.unwrap();
    }
    s.flush().await.unwrap();
    let mut echo = vec![0u8; ECHO_LEN];
    s.read_exact(&mut echo).await.unwrap();
    assert!(echo == ours, "echo differs");
}

fn config(suite: Suite) -> SecureConfig {
    SecureConfig::new(Keypair::generate().unwrap())
        .unwrap()
        .with_suite(suite)
        .with_rekey_interval(REKEY)
}

/// We dial a Python responder. For IK we learn its static key first.
async fn we_initiate(lib: &str, suite: Suite, pattern: Pattern, tamper: bool) {
    let cfg = config(suite);
    let mut args = vec![
        "--lib".into(),
        lib.into(),
        "--role".into(),
        "responder".into(),
        "--suite".into(),
        suite_name(suite).into(),
        "--pattern".into(),
        format!("{pattern:?}").to_uppercase(),
        "--rekey".into(),
        REKEY.to_string(),
    ];
    if tamper {
        args.push("--tamper".into());
    }
    let mut peer = Peer::spawn(&args);
    let static_key: [u8; 32] = unhex(&peer.expect("static").await).try_into().unwrap();
    let id = PeerId::from_bytes(&unhex(&peer.expect("identity").await)).unwrap();
    let port: u16 = peer.expect("listening").await.parse().unwrap();
    if pattern == Pattern::Ik {
        cfg.known_peers().insert(id, static_key);
    }
    let io = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut s, early) = cfg
        .upgrade_outbound_with(io, Some(id), RUST_EARLY.to_vec())
        .await
        .unwrap();
    assert_eq!(early, PYTHON_EARLY);
    assert_eq!(s.pattern(), pattern);
    assert_eq!(s.suite(), suite);
    assert_eq!(s.remote_peer_id(), id);
    assert_eq!(s.remote_static(), &static_key);
    assert_eq!(
        peer.expect("remote").await,
        hex(cfg.local().peer_id().as_bytes())
    );
    assert_eq!(peer.expect("early").await, hex(RUST_EARLY));
    if tamper {
        expect_tamper_rejected(&mut s).await;
        return;
    }
    exchange(&mut s).await;
    peer.finish().await;
}

/// A Python initiator dials us. For IK it gets our static key.
async fn they_initiate(lib: &str, suite: Suite, pattern: Pattern) {
    let cfg = config(Suite::ChaChaPoly); // the initiator picks; ours is unused
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut args = vec![
        "--lib".into(),
        lib.into(),
        "--role".into(),
        "initiator".into(),
        "--suite".into(),
        suite_name(suite).into(),
        "--pattern".into(),
        format!("{pattern:?}").to_uppercase(),
        "--rekey".into(),
        REKEY.to_string(),
        "--port".into(),
        port.to_string(),
    ];
    if pattern == Pattern::Ik {
        args.push("--remote-static".into());
        args.push(hex(cfg.local().static_public()));
    }
    let mut peer = Peer::spawn(&args);
    let static_key = unhex(&peer.expect("static").await);
    let id = PeerId::from_bytes(&unhex(&peer.expect("identity").await)).unwrap();
    let (io, _) = l.accept().await.unwrap();
    let (mut s, early) = cfg
        .upgrade_inbound_with(io, RUST_EARLY.to_vec())
        .await
        .unwrap();
    assert_eq!(early, PYTHON_EARLY);
    assert_eq!(s.pattern(), pattern);
    assert_eq!(s.suite(), suite);
    assert_eq!(s.remote_peer_id(), id);
    assert_eq!(&s.remote_static()[..], &static_key[..]);
    assert_eq!(
        peer.expect("remote").await,
        hex(cfg.local().peer_id().as_bytes())
    );
    assert_eq!(peer.expect("early").await, hex(RUST_EARLY));
    exchange(&mut s).await;
    peer.finish().await;
}

async fn expect_tamper_rejected(s: &mut SecureStream<TcpStream>) {
    let mut buf = vec![0u8; 70_000];
    // The first frame is empty (skipped), the second is the tampered one.
    let err = match s.read(&mut buf).await {
        Ok(0) => panic!("eof instead of an error"),
        Ok(_) => panic!("tampered data accepted"),
        Err(e) => e,
    };
    assert!(
        matches!(HandshakeError::from_io(&err), Some(HandshakeError::Decrypt)),
        "{err:?}"
    );
}

#[tokio::test]
#[ignore = "needs Python peers: run `cargo xtask interop noise`"]
async fn we_initiate_xx_against_python() {
    for lib in LIBS {
        for suite in Suite::ALL {
            we_initiate(lib, suite, Pattern::Xx, false).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs Python peers: run `cargo xtask interop noise`"]
async fn python_initiates_xx() {
    for lib in LIBS {
        for suite in Suite::ALL {
            they_initiate(lib, suite, Pattern::Xx).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs Python peers: run `cargo xtask interop noise`"]
async fn we_initiate_ik_against_python() {
    for lib in LIBS {
        for suite in Suite::ALL {
            we_initiate(lib, suite, Pattern::Ik, false).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs Python peers: run `cargo xtask interop noise`"]
async fn python_initiates_ik() {
    for lib in LIBS {
        for suite in Suite::ALL {
            they_initiate(lib, suite, Pattern::Ik).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs Python peers: run `cargo xtask interop noise`"]
async fn python_tampered_byte_is_decrypt() {
    for lib in LIBS {
        for suite in Suite::ALL {
            we_initiate(lib, suite, Pattern::Xx, true).await;
        }
    }
}

/// The number of handshake cases and frames in the spec's vector files.
fn vector_counts(dir: &std::path::Path) -> String {
    let count = |file: &str, list: &str| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json[list].as_array().unwrap().len()
    };
    format!(
        "{} {}",
        count("handshake.json", "cases"),
        count("frames.json", "frames")
    )
}

#[tokio::test]
#[ignore = "needs Python peers: run `cargo xtask interop noise`"]
async fn python_checks_the_spec_vectors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors");
    for lib in LIBS {
        let args = ["--lib", lib, "--vectors", &dir.display().to_string()].map(String::from);
        let mut peer = Peer::spawn(&args);
        assert_eq!(peer.expect("vectors").await, vector_counts(&dir), "{lib}");
        peer.finish().await;
    }
}
