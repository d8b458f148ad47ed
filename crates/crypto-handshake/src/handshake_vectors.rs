//! The spec's handshake test vectors, `docs/vectors/handshake.json`
//! (described in `docs/protocol.md`, "Test vectors").
//!
//! The file gives fixed inputs (Ed25519 seeds, X25519 static and ephemeral
//! private keys, transport plaintexts) and the exact bytes that follow from
//! them. This test runs our [`Handshake`] and [`SecureStream`] on the
//! inputs, with the ephemeral keys fixed (see [`Overrides`]; the one thing
//! a real handshake draws at random), and checks every output byte; the
//! transport messages are opened again with the receiving side's keys.
//! With `KNOTWORK_BLESS_VECTORS=1` it writes the outputs into the file
//! instead, for a deliberate change of the wire format. The Python interop
//! peer checks the same file with two independent Noise libraries
//! (`cargo xtask interop noise`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::*;
use crate::SecureStream;
use crate::config::DEFAULT_REKEY_INTERVAL;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct File {
    about: Vec<String>,
    rekey_interval: u64,
    cases: Vec<Case>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Case {
    name: String,
    pattern: String,
    suite: String,
    initiator: Side,
    responder: Side,
    /// What each side writes before it next reads, in order.
    handshake: Vec<Flight>,
    transport: Vec<TransportMessage>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Side {
    // Inputs.
    ed25519_seed: String,
    static_private: String,
    ephemeral_private: String,
    // Outputs.
    ed25519_public: String,
    peer_id: String,
    static_public: String,
    ephemeral_public: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Flight {
    from: String,
    bytes: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct TransportMessage {
    // Inputs.
    from: String,
    nonce: u64,
    plaintext: String,
    // Output.
    frame: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("a 32-byte key")
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/handshake.json")
}

/// The side's identity and keys, and its outputs filled in.
fn side(input: &Side) -> (StaticIdentity, Side) {
    let identity = Keypair::from_seed(key32(&input.ed25519_seed)).unwrap();
    let static_key = KeyPair::from_private(key32(&input.static_private)).unwrap();
    let ephemeral = KeyPair::from_private(key32(&input.ephemeral_private)).unwrap();
    let out = Side {
        ed25519_seed: input.ed25519_seed.clone(),
        static_private: input.static_private.clone(),
        ephemeral_private: input.ephemeral_private.clone(),
        ed25519_public: hex(identity.public().as_bytes()),
        peer_id: identity.peer_id().to_string(),
        static_public: hex(&static_key.public),
        ephemeral_public: hex(&ephemeral.public),
    };
    (StaticIdentity::with_static_key(identity, static_key), out)
}

/// Runs the handshake; returns the flights and both ends' keys.
fn run_handshake(
    case: &Case,
    i: &StaticIdentity,
    r: &StaticIdentity,
) -> (Vec<Flight>, [Established; 2]) {
    let suite = match case.suite.as_str() {
        "ChaChaPoly" => Suite::ChaChaPoly,
        "AESGCM" => Suite::AesGcm,
        other => panic!("unknown suite {other}"),
    };
    let overrides = Overrides {
        version: VERSION,
        ephemeral: Some(key32(&case.initiator.ephemeral_private)),
    };
    let (pattern, remote_static) = match case.pattern.as_str() {
        "XX" => (Pattern::Xx, None),
        "IK" => (Pattern::Ik, Some(r.static_public())),
        other => panic!("unknown pattern {other}"),
    };
    let mut ini = Handshake::initiator(
        i,
        pattern,
        suite,
        Some(r.peer_id()),
        remote_static,
        overrides,
    )
    .unwrap();
    let mut res = Handshake::responder(r);
    res.ephemeral = Some(key32(&case.responder.ephemeral_private));
    let mut flights = Vec::new();
    let mut pass = |from: &mut Handshake, to: &mut Handshake, name: &str| {
        let out = from.take_output();
        if !out.is_empty() {
            assert_eq!(to.read_input(&out).unwrap(), out.len());
            flights.push(Flight {
                from: name.into(),
                bytes: hex(&out),
            });
        }
    };
    for _ in 0..2 {
        pass(&mut ini, &mut res, "initiator");
        pass(&mut res, &mut ini, "responder");
    }
    assert!(ini.is_finished() && res.is_finished());
    (flights, [ini.finish().unwrap(), res.finish().unwrap()])
}

/// A cipher standing in for the direction a stream does not use.
fn unused(suite: Suite) -> CipherState {
    CipherState::new(suite, &[0; KEY_LEN], 0).unwrap()
}

/// Seals `case`'s transport messages from `from` with `est.send` through
/// [`SecureStream`] (one frame per flush, 1-byte messages filling the gaps
/// between nonces), fills in their frames, and opens every frame again with
/// `recv`, the other side's receiving cipher.
async fn transport(
    case: &mut Case,
    from: &str,
    est: Established,
    mut recv: CipherState,
    rekey: u64,
) {
    let suite = est.suite;
    let est = Established {
        recv: unused(suite),
        ..est
    };
    let mut next = est.send.nonce();
    let mut stream = SecureStream::new(Vec::new(), est, rekey);
    recv.set_rekey_interval(rekey);
    for m in case.transport.iter_mut().filter(|m| m.from == from) {
        assert!(m.nonce >= next, "{}: nonces go up per direction", case.name);
        while next < m.nonce {
            stream.write_all(&[0]).await.unwrap();
            stream.flush().await.unwrap();
            next += 1;
        }
        let start = stream.get_ref().len();
        let plaintext = unhex(&m.plaintext);
        stream.write_all(&plaintext).await.unwrap();
        stream.flush().await.unwrap();
        next += 1;
        m.frame = hex(&stream.get_ref()[start..]);
    }
    // The receiver opens every frame, the filling ones included.
    let wire = stream.into_inner();
    let mut at = 0;
    let mut sent = case.transport.iter().filter(|m| m.from == from);
    let mut expected = sent.next();
    while at < wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[at], wire[at + 1]]));
        let mut body = wire[at + 2..at + 2 + len].to_vec();
        let nonce = recv.nonce();
        let plain = recv.open_in_place(&mut body).unwrap().to_vec();
        match expected {
            Some(m) if m.nonce == nonce => {
                assert_eq!(hex(&plain), m.plaintext);
                expected = sent.next();
            }
            _ => assert_eq!(plain, [0]),
        }
        at += 2 + len;
    }
    assert!(expected.is_none());
}

/// `file` with every output computed from its inputs.
async fn compute(file: &File) -> File {
    let mut cases = Vec::new();
    for case in &file.cases {
        let (i, initiator) = side(&case.initiator);
        let (r, responder) = side(&case.responder);
        let (handshake, [ei, er]) = run_handshake(case, &i, &r);
        let mut out = Case {
            name: case.name.clone(),
            pattern: case.pattern.clone(),
            suite: case.suite.clone(),
            initiator,
            responder,
            handshake,
            transport: case
                .transport
                .iter()
                .map(|m| TransportMessage {
                    from: m.from.clone(),
                    nonce: m.nonce,
                    plaintext: m.plaintext.clone(),
                    frame: String::new(),
                })
                .collect(),
        };
        let Established { recv: i_recv, .. } = ei;
        let Established { recv: r_recv, .. } = er;
        // `finish` consumed each side whole: run the handshake again for
        // the second direction (the same inputs give the same keys).
        let (_, [ei, er]) = run_handshake(case, &i, &r);
        let rekey = file.rekey_interval;
        transport(&mut out, "initiator", ei, r_recv, rekey).await;
        transport(&mut out, "responder", er, i_recv, rekey).await;
        cases.push(out);
    }
    File {
        about: file.about.clone(),
        rekey_interval: file.rekey_interval,
        cases,
    }
}

#[tokio::test]
async fn the_spec_vectors_hold() {
    let text = std::fs::read_to_string(path()).unwrap();
    let file: File = serde_json::from_str(&text).unwrap();
    assert_eq!(file.rekey_interval, DEFAULT_REKEY_INTERVAL);
    let computed = compute(&file).await;
    if std::env::var_os("KNOTWORK_BLESS_VECTORS").is_some() {
        let mut json = serde_json::to_string_pretty(&computed).unwrap();
        json.push('\n');
        std::fs::write(path(), json).unwrap();
        return;
    }
    for (want, got) in file.cases.iter().zip(&computed.cases) {
        assert_eq!(want, got, "case {}", want.name);
    }
    assert_eq!(file, computed);
}
