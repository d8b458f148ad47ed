//! The spec's frame test vectors, `docs/vectors/frames.json`, and the
//! message id table of `docs/protocol.md` (both described there).
//!
//! Each vector names a message type, its fields (as JSON) and the frame
//! kind and request id; the test encodes the typed message with this
//! crate (postcard, the 16-byte header) and checks the payload and frame
//! bytes, then decodes the frame back to the same message. The types below
//! are the layouts `docs/protocol.md` specifies for the node's version,
//! disconnect, ping and address messages, field for field. With
//! `KNOTWORK_BLESS_VECTORS=1` the test writes the bytes into the file
//! instead. The Python interop peer checks the same file with its own
//! encoder (`cargo xtask interop noise`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use bytes::BytesMut;
use knotwork_wire::{Frame, FrameCodec, FrameKind, Message, decode, encode, message_id};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Version {
    node_version: String,
    protocols: Vec<String>,
    listen_addrs: Vec<String>,
    observed_addr: String,
}

impl Message for Version {
    const NAME: &'static str = "knot/version/1";
    const MAX_BYTES: usize = 4 * 1024;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum DisconnectReason {
    Shutdown,
    Duplicate,
    TooManyPeers,
    TooManyFromIp,
    Banned,
    Misbehaviour,
    PingTimeout,
    Probe,
    Other(String),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Disconnect {
    reason: DisconnectReason,
}

impl Message for Disconnect {
    const NAME: &'static str = "knot/disconnect/1";
    const MAX_BYTES: usize = 3 + 128;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Ping {
    nonce: u64,
}

impl Message for Ping {
    const NAME: &'static str = "knot/ping/1";
    const MAX_BYTES: usize = 10;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Pong {
    nonce: u64,
}

impl Message for Pong {
    const NAME: &'static str = "knot/pong/1";
    const MAX_BYTES: usize = 10;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct GetAddrs {
    max: u32,
}

impl Message for GetAddrs {
    const NAME: &'static str = "knot/get-addrs/1";
    const MAX_BYTES: usize = 5;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Addrs {
    addrs: Vec<String>,
}

impl Message for Addrs {
    const NAME: &'static str = "knot/addrs/1";
    const MAX_BYTES: usize = 1 + 32 * (2 + 160);
}

/// The "refused" response: no payload, message id 0 (not its name's hash).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Refused;

impl Message for Refused {
    const NAME: &'static str = "knot/refused";
    const ID: u32 = 0;
    const MAX_BYTES: usize = 0;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct File {
    about: Vec<String>,
    frames: Vec<Vector>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vector {
    // Inputs.
    name: String,
    message: String,
    kind: String,
    request_id: u32,
    fields: serde_json::Value,
    // Outputs.
    msg_id: String,
    payload: String,
    frame: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// The frame of `v` built from its typed message `M`, checked to decode
/// back to the same message.
fn frame_of<M: Message + PartialEq + std::fmt::Debug>(v: &Vector) -> Frame {
    assert_eq!(v.message, M::NAME, "{}", v.name);
    let msg: M = serde_json::from_value(v.fields.clone()).unwrap();
    let payload = encode(&msg).unwrap();
    assert_eq!(decode::<M>(&payload).unwrap(), msg, "{}", v.name);
    let kind = match v.kind.as_str() {
        "message" => FrameKind::Message,
        "request" => FrameKind::Request,
        "response" => FrameKind::Response,
        other => panic!("{}: unknown kind {other}", v.name),
    };
    Frame {
        kind,
        msg_id: M::ID,
        request_id: v.request_id,
        payload,
    }
}

/// `v` with its outputs computed.
fn compute(v: &Vector) -> Vector {
    let frame = match v.message.as_str() {
        "knot/version/1" => frame_of::<Version>(v),
        "knot/disconnect/1" => frame_of::<Disconnect>(v),
        "knot/ping/1" => frame_of::<Ping>(v),
        "knot/pong/1" => frame_of::<Pong>(v),
        "knot/get-addrs/1" => frame_of::<GetAddrs>(v),
        "knot/addrs/1" => frame_of::<Addrs>(v),
        "knot/refused" => frame_of::<Refused>(v),
        other => panic!("{}: no type for {other}", v.name),
    };
    let mut wire = BytesMut::new();
    FrameCodec::new().encode(frame.clone(), &mut wire).unwrap();
    let again = FrameCodec::new()
        .decode(&mut wire.clone())
        .unwrap()
        .unwrap();
    assert_eq!(again, frame, "{}", v.name);
    Vector {
        name: v.name.clone(),
        message: v.message.clone(),
        kind: v.kind.clone(),
        request_id: v.request_id,
        fields: v.fields.clone(),
        msg_id: format!("{:#010x}", frame.msg_id),
        payload: hex(&frame.payload),
        frame: hex(&wire),
    }
}

#[test]
fn the_spec_frames_hold() {
    let path = docs().join("vectors/frames.json");
    let file: File = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let computed = File {
        about: file.about.clone(),
        frames: file.frames.iter().map(compute).collect(),
    };
    if std::env::var_os("KNOTWORK_BLESS_VECTORS").is_some() {
        let mut json = serde_json::to_string_pretty(&computed).unwrap();
        json.push('\n');
        std::fs::write(&path, json).unwrap();
        return;
    }
    for (want, got) in file.frames.iter().zip(&computed.frames) {
        assert_eq!(want, got, "frame {}", want.name);
    }
    assert_eq!(file, computed);
}

/// A payload that is not the type's encoding is refused by name, so the
/// vectors' layouts are not loose: a `Version` cut short, a `Disconnect`
/// with a reason index past the last one.
#[test]
fn the_spec_layouts_refuse_other_bytes() {
    fn refused<M: Message + DeserializeOwned>(payload: &[u8]) -> bool {
        matches!(
            decode::<M>(payload),
            Err(knotwork_wire::WireError::Malformed { .. })
        )
    }
    assert!(refused::<Version>(&[3, b'a', b'b']));
    assert!(refused::<Disconnect>(&[9]));
    assert!(!refused::<Disconnect>(&[7]));
}

/// Every row `` | `name` | `0x........` | `` of the message tables in
/// `docs/protocol.md` gives the id [`message_id`] derives from the name
/// (or 0 for `knot/refused`, whose id is fixed).
#[test]
fn the_spec_message_ids_are_fnv1a_of_their_names() {
    let spec = std::fs::read_to_string(docs().join("protocol.md")).unwrap();
    let mut rows = 0;
    for line in spec.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(name), Some(id)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let (Some(name), Some(id)) = (
            name.strip_prefix('`').and_then(|n| n.strip_suffix('`')),
            id.strip_prefix("`0x").and_then(|i| i.strip_suffix('`')),
        ) else {
            continue;
        };
        let id = u32::from_str_radix(id, 16).unwrap();
        let want = if name == Refused::NAME {
            Refused::ID
        } else {
            message_id(name)
        };
        assert_eq!(id, want, "{name}: the spec says {id:#010x}");
        rows += 1;
    }
    // The 27 message types of version 1 (section 7.1), at least.
    assert!(rows >= 27, "only {rows} message id rows found");
}
