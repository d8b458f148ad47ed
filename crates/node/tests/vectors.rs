//! The spec's frame vectors (docs/vectors/frames.json) against the node's
//! real message types: the wire crate checks the vectors with stand-in
//! types, this test checks that the node encodes exactly what the spec
//! says (a field added to `Version` without updating the spec fails here).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use knotwork_node::protocol::address::{Addrs, GetAddrs};
use knotwork_node::protocol::ping::{Ping, Pong};
use knotwork_node::{Disconnect, Version};
use knotwork_wire::{Message, decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks one vector with the node's type `M`: the fields build the
/// vector's payload and id, and the payload decodes to the same message.
fn check<M>(v: &serde_json::Value) -> &'static str
where
    M: Message + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let name = v["name"].as_str().unwrap();
    let msg: M = serde_json::from_value(v["fields"].clone())
        .unwrap_or_else(|e| panic!("{name}: the node's {} reads the fields: {e}", M::NAME));
    let payload = encode(&msg).unwrap();
    assert_eq!(hex(&payload), v["payload"].as_str().unwrap(), "{name}");
    assert_eq!(
        format!("{:#010x}", M::ID),
        v["msg_id"].as_str().unwrap(),
        "{name}"
    );
    assert_eq!(decode::<M>(&payload).unwrap(), msg, "{name}");
    M::NAME
}

#[test]
fn the_node_encodes_the_spec_frames_with_its_own_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/frames.json");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = Vec::new();
    for v in file["frames"].as_array().unwrap() {
        let name = match v["message"].as_str().unwrap() {
            "knot/version/1" => check::<Version>(v),
            "knot/disconnect/1" => check::<Disconnect>(v),
            "knot/ping/1" => check::<Ping>(v),
            "knot/pong/1" => check::<Pong>(v),
            "knot/get-addrs/1" => check::<GetAddrs>(v),
            "knot/addrs/1" => check::<Addrs>(v),
            // The refusal response has no payload type (the wire crate checks it).
            "knot/refused" => continue,
            other => panic!("no node type for {other}: add it here"),
        };
        checked.push(name);
    }
    for want in [
        Version::NAME,
        Disconnect::NAME,
        Ping::NAME,
        Pong::NAME,
        GetAddrs::NAME,
        Addrs::NAME,
    ] {
        assert!(checked.contains(&want), "no vector for {want}");
    }
}
