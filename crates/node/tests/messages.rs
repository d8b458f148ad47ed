//! Property tests of the node's own messages: every value within the
//! limits round-trips through the wire encoding, and arbitrary peer bytes
//! never panic the decoders.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use knotwork_node::protocol::address::{Addrs, GetAddrs, MAX_ADDRS};
use knotwork_node::protocol::ping::{Ping, Pong};
use knotwork_node::version::{Hello, MAX_LISTEN_ADDRS, MAX_NAME_LEN, MAX_PROTOCOLS};
use knotwork_node::{Disconnect, DisconnectReason, NodeError, Version};
use knotwork_wire::{Frame, FrameCodec};
use proptest::prelude::*;
use tokio_util::codec::Encoder;

mod common;
use common::{never_panics, roundtrip};

fn name() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9/:._\\[\\]-]{{0,{MAX_NAME_LEN}}}")).unwrap()
}

fn version() -> impl Strategy<Value = Version> {
    (
        name(),
        proptest::collection::vec(name(), 0..=MAX_PROTOCOLS),
        proptest::collection::vec(name(), 0..=MAX_LISTEN_ADDRS),
        name(),
    )
        .prop_map(
            |(node_version, protocols, listen_addrs, observed_addr)| Version {
                node_version,
                protocols,
                listen_addrs,
                observed_addr,
            },
        )
}

fn reason() -> impl Strategy<Value = DisconnectReason> {
    prop_oneof![
        Just(DisconnectReason::Shutdown),
        Just(DisconnectReason::Duplicate),
        Just(DisconnectReason::TooManyPeers),
        Just(DisconnectReason::TooManyFromIp),
        Just(DisconnectReason::Banned),
        Just(DisconnectReason::Misbehaviour),
        Just(DisconnectReason::PingTimeout),
        Just(DisconnectReason::Probe),
        any::<String>().prop_map(|s| DisconnectReason::other(&s)),
    ]
}

proptest! {
    #[test]
    fn version_roundtrips(v in version()) {
        roundtrip(&v);
    }

    #[test]
    fn a_hello_carries_its_version_or_its_refusal(v in version(), reason in reason()) {
        let bytes = Hello::Version(v.clone()).to_bytes().unwrap();
        prop_assert_eq!(Hello::version_in(&bytes).unwrap(), v);
        let bytes = Hello::Refuse(reason.clone()).to_bytes().unwrap();
        match Hello::version_in(&bytes) {
            Err(NodeError::Refused(r)) => prop_assert_eq!(r, reason),
            other => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn arbitrary_early_data_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Hello::version_in(&bytes);
    }

    #[test]
    fn disconnect_roundtrips(reason in reason()) {
        roundtrip(&Disconnect { reason });
    }

    #[test]
    fn ping_pong_get_addrs_roundtrip(nonce in any::<u64>(), max in any::<u32>()) {
        roundtrip(&Ping { nonce });
        roundtrip(&Pong { nonce });
        roundtrip(&GetAddrs { max });
    }

    #[test]
    fn addrs_roundtrip(addrs in proptest::collection::vec(name(), 0..=MAX_ADDRS)) {
        roundtrip(&Addrs { addrs });
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        never_panics::<Version>(&bytes);
        never_panics::<Disconnect>(&bytes);
        never_panics::<Ping>(&bytes);
        never_panics::<Pong>(&bytes);
        never_panics::<GetAddrs>(&bytes);
        never_panics::<Addrs>(&bytes);
    }
}

/// Each malformed hello has its error.
#[test]
fn malformed_hellos_are_named() {
    assert!(matches!(Hello::version_in(&[]), Err(NodeError::NoVersion)));
    let v = Version::new(&[], &[], &"mem/1".parse().unwrap());
    let mut bytes = Hello::Version(v).to_bytes().unwrap();
    bytes.push(0);
    assert!(matches!(
        Hello::version_in(&bytes),
        Err(NodeError::TrailingHello(1))
    ));
    assert!(matches!(
        Hello::version_in(&bytes[..bytes.len() - 3]),
        Err(NodeError::Wire(knotwork_wire::WireError::Truncated { .. }))
    ));
    let mut other = bytes::BytesMut::new();
    FrameCodec::new()
        .encode(Frame::message(77, bytes::Bytes::new()), &mut other)
        .unwrap();
    assert!(matches!(
        Hello::version_in(&other),
        Err(NodeError::UnexpectedFirstFrame(77))
    ));
}
